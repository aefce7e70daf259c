//! `custody login` by the OAuth device flow: the real command line shows a code, a signed-in
//! browser session approves it, and the command stores a short-lived token and a refresh token
//! (mode 0600) that renews itself; refresh tokens rotate, and a reused one ends the login.
//! Approving needs the session and its CSRF value; a denied login gets nothing.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use custody_tests::cli::Cli;
use custody_tests::governance::start_env_with_smtp;
use custody_tests::sign_in::{cookie_client, hidden_value, sign_in_by_email};
use custody_tests::Snapshot;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const ANA: &str = "ana@example.com";

/// Starts `custody login --url URL` and answers (the process, the link and the code it shows).
async fn start_login(cli: &Cli, url: &str) -> (tokio::process::Child, String, String) {
    let mut child = cli.spawn(&["login", "--url", url, "--json"]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut link = None;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(l) = line.strip_prefix("To log in, open ") {
                link = Some(l.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("and approve the code ") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    // Keep reading, so the command's later messages (and errors) have somewhere to go.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let code = found.expect("custody login shows a code");
    (child, link.expect("custody login shows a link"), code)
}

async fn finish(child: tokio::process::Child) -> (i32, Value) {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("custody login ends once the code is decided")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
    )
}

/// Posts a decision on a login's code from `browser`'s session, with `csrf` as its form value.
async fn decide(
    browser: &reqwest::Client,
    s: &custody_tests::Server,
    code: &str,
    decision: &str,
    csrf: &str,
) -> reqwest::Response {
    browser
        .post(s.url("/device"))
        .form(&[("code", code), ("decision", decision), ("csrf", csrf)])
        .send()
        .await
        .unwrap()
}

async fn token_endpoint(s: &custody_tests::Server, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url("/api/device/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_logs_in_by_device_flow_and_its_login_renews_and_ends() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    s.issue_token(ANA, false).await;
    let browser = sign_in_by_email(s, &smtp, ANA).await;
    let cli = Cli::new();
    let (child, link, code) = start_login(&cli, &s.url("")).await;
    assert!(link.starts_with(&s.url("/device?code=")), "{link}");

    // Without a session the page sends to sign-in; a forged decision changes nothing.
    let r = cookie_client().get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("/sign-in?next="), "{location}");
    let sql = env.sql().await;
    let before = Snapshot::take(&sql).await;
    let forged = decide(&browser, s, &code, "approve", "guess").await;
    assert_eq!(forged.status(), 403);
    let anonymous = decide(&cookie_client(), s, &code, "approve", "").await;
    assert_eq!(anonymous.status(), 303);
    Snapshot::take(&sql)
        .await
        .assert_unchanged(&before, "forged approvals of a login");

    // Ana approves the code she sees in her terminal, from her signed-in browser.
    let page = browser
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&code), "{page}");
    let csrf = hidden_value(&page, "csrf");
    let done = decide(&browser, s, &code, "approve", &csrf).await;
    assert_eq!(done.status(), 200);
    let (status, out) = finish(child).await;
    assert_eq!(status, 0, "{out}");
    assert_eq!(out["email"], ANA);

    // The login is stored privately: a short-lived access token and a refresh token.
    let path = cli.config_file();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let first_token = stored["token"].as_str().unwrap().to_owned();
    let first_refresh = stored["refresh_token"].as_str().unwrap().to_owned();
    assert!(first_token.starts_with("cst_") && first_refresh.starts_with("csr_"));
    assert_eq!(cli.json(&["whoami"]).await["me"]["email"], ANA);
    // The code is used: the same approval cannot be had twice.
    let again = decide(&browser, s, &code, "approve", &csrf).await;
    assert_eq!(again.status(), 404);

    // When the token runs out the command line renews it (and the refresh token rotates).
    let mut expired = stored.clone();
    expired["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(&path, expired.to_string()).unwrap();
    assert_eq!(cli.json(&["whoami"]).await["me"]["email"], ANA);
    let renewed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_ne!(renewed["token"], first_token);
    assert_ne!(renewed["refresh_token"], first_refresh);
    let old = s.gql(&first_token, "{ me { email } }", json!({})).await;
    assert_eq!(
        old["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{old}"
    );

    // A used refresh token presented again (a stolen copy): refused, and the login ends.
    let (status, reused) = token_endpoint(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first_refresh),
        ],
    )
    .await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let current = renewed["token"].as_str().unwrap();
    let ended = s.gql(current, "{ me { email } }", json!({})).await;
    assert_eq!(
        ended["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{ended}"
    );
    let (_, after) = token_endpoint(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", renewed["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(after["error"], "invalid_grant");

    // Protocol refusals: unknown codes, unsupported grants, polling too fast.
    let (status, unknown) = token_endpoint(
        s,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", "nope"),
        ],
    )
    .await;
    assert_eq!(
        (status, unknown["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (_, unsupported) = token_endpoint(s, &[("grant_type", "password")]).await;
    assert_eq!(unsupported["error"], "unsupported_grant_type");
    let started: Value = reqwest::Client::new()
        .post(s.url("/api/device/code"))
        .form(&[("client_name", "test")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = started["device_code"].as_str().unwrap();
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
    ];
    assert_eq!(
        token_endpoint(s, &poll).await.1["error"],
        "authorization_pending"
    );
    assert_eq!(token_endpoint(s, &poll).await.1["error"], "slow_down");

    // A denied login gets nothing, and the command says so.
    let other = Cli::new();
    let (child, _, code) = start_login(&other, &s.url("")).await;
    let page = browser
        .get(s.url(&format!("/device?code={code}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_value(&page, "csrf");
    decide(&browser, s, &code, "deny", &csrf).await;
    let (status, _) = finish(child).await;
    assert_eq!(status, 4, "a denied login exits as unauthenticated");
    assert!(!other.config_file().exists());
}
