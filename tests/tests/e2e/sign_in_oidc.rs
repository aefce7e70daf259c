//! Single sign-on through a real OpenID provider (the certified `oidc-provider` for Node, started
//! by the harness): the first sign-in creates the person with the provider's groups, in real
//! headless Chromium; the provider's groups decide who may approve (and a change at the provider
//! changes it at the next sign-in); a signed-in browser's API calls need their CSRF header; and
//! forged, injected, replayed or foreign answers are refused without changing anything.

use std::time::Duration;

use custody_tests::browser::{text_of, Browser};
use custody_tests::fixtures::{self, id};
use custody_tests::governance::*;
use custody_tests::oidc::{answer_for, OidcProvider};
use custody_tests::sign_in::{cookie_client, session_csrf, session_gql};
use custody_tests::smtp::SmtpServer;
use custody_tests::{Server, Snapshot, TestEnv};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const ANA: &str = "ana@corp.example";
const BEN: &str = "ben@corp.example";

/// A server configured for the provider (and an SMTP server for its mails); the provider is
/// started once the server's callback URL is known.
async fn oidc_env(args: &[&str]) -> (TestEnv, SmtpServer, OidcProvider) {
    let smtp = SmtpServer::start().await;
    let reserved = OidcProvider::reserve();
    let mut vars = reserved.custody_env();
    vars.push(("CUSTODY_SMTP_URL".into(), smtp.url()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut all: Vec<&str> = FAST_OUTBOX.to_vec();
    all.extend_from_slice(args);
    let env = start_env(&all, &vars).await;
    let idp = OidcProvider::start(reserved, &env.server.url("")).await;
    (env, smtp, idp)
}

/// Signs `login` in from Custody's sign-in page, through the provider's login form, and waits
/// for the account page.
async fn sign_in_with_the_provider(c: &Client, s: &Server, login: &str) {
    c.goto(&s.url("/sign-in?next=/account")).await.unwrap();
    c.find(Locator::Id("sign-in-oidc"))
        .await
        .expect("the single sign-on button")
        .click()
        .await
        .unwrap();
    let form = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("input[name=login]"))
        .await
        .expect("the provider's login form");
    form.send_keys(login).await.unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("any password")
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "signed-in-as").await, login);
}

async fn groups_shown(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for li in c.find_all(Locator::Css("#groups li")).await.unwrap() {
        out.push(li.text().await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sign_in_creates_the_person_and_the_providers_groups_decide_who_approves() {
    // Every promotion needs an approver of the `model-risk` group.
    let policy = default_policy().replace(
        "approver_group := \"privacy\" if trained_on_pii",
        "approver_group := \"model-risk\"",
    );
    let dir = policy_dir(&[("promotion.rego", &policy)]);
    let (env, smtp, idp) = oidc_env(&["--policies", dir.path().to_str().unwrap()]).await;
    let s = &env.server;
    idp.set_account(ANA, &["model-risk", "ml"], true);

    let browser = Browser::start().await;
    let c = browser.client();
    sign_in_with_the_provider(c, s, ANA).await;
    assert!(text_of(c, "method").await.contains("single sign-on"));
    assert_eq!(groups_shown(c).await, ["ml", "model-risk"]);
    let sql = env.sql().await;
    let groups: Vec<String> = sql
        .query_one("SELECT idp_groups FROM users WHERE email = $1", &[&ANA])
        .await
        .expect("the first sign-in created the user")
        .get(0);
    assert_eq!(groups, ["ml", "model-risk"]);
    let actions: Vec<String> = sql
        .query("SELECT action FROM audit_log ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for action in ["user.create", "user.idp_groups", "session.start"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }

    // Ana approves a promotion that needs `model-risk`, from her mail, signed in just now.
    let f = Fixture::build(&env, &[]).await;
    fixtures::add_member(s, &env.admin, &f.project, ANA, "APPROVER").await;
    let v1 = f.version(s, &[("auc", 0.90)]).await;
    let p1 = id(&request(s, &f.requester, &v1, "staging", None).await);
    let link = smtp
        .wait_for_one_to(ANA, Duration::from_secs(30))
        .await
        .approval_link();
    c.goto(&link).await.unwrap();
    assert!(text_of(c, "signed-in").await.contains(ANA));
    c.find(Locator::Id("approve"))
        .await
        .expect("the decision form")
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "outcome").await, "Approved");
    let p = promotion(s, &env.admin, &p1).await;
    assert_eq!(p["status"], "APPLIED");
    assert_eq!(p["approvals"][0]["authMethod"], "SESSION_OIDC");

    // The provider takes her out of `model-risk`: from her next sign-in she approves no more.
    idp.set_account(ANA, &["ml"], true);
    sign_in_with_the_provider(c, s, ANA).await;
    assert_eq!(groups_shown(c).await, ["ml"]);
    let v2 = f.version(s, &[("auc", 0.91)]).await;
    let p2 = id(&request(s, &f.requester, &v2, "staging", None).await);
    outbox_settled(&env).await;
    assert_eq!(
        smtp.messages_to(ANA).len(),
        1,
        "no approval mail for a promotion she may no longer decide"
    );

    // Her browser session through the API: with its CSRF header it is her, but no longer an
    // approver of the group; without the header nothing is even tried.
    let cookie = c
        .get_named_cookie("custody_session")
        .await
        .expect("the session cookie")
        .value()
        .to_owned();
    let csrf = c
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    browser.close().await;
    let http = reqwest::Client::new();
    let call = |csrf: Option<String>, query: String, variables: Value| {
        let mut r = http
            .post(s.url("/graphql"))
            .header("cookie", format!("custody_session={cookie}"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(csrf) = csrf {
            r = r.header("x-csrf-token", csrf);
        }
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let me = call(Some(csrf.clone()), "{ me { email } }".into(), json!({})).await;
    assert_eq!(me["data"]["me"]["email"], ANA, "{me}");
    let sql = env.sql().await;
    let before = Snapshot::take(&sql).await;
    let vars = json!({"id": p2, "c": null});
    let forged = call(None, approve_mutation(), vars.clone()).await;
    assert_eq!(
        forged["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{forged}"
    );
    assert!(forged["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("X-CSRF-Token"));
    let refused = call(Some(csrf), approve_mutation(), vars).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("model-risk"),
        "{refused}"
    );
    Snapshot::take(&sql)
        .await
        .assert_unchanged(&before, "refused session calls");
}

/// The provider's address `authorization_url` sends the browser to, from Custody's start.
async fn start_sign_in(client: &reqwest::Client, s: &Server) -> String {
    let r = client
        .get(s.url("/sign-in/oidc?next=/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    r.headers()["location"].to_str().unwrap().to_owned()
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

fn param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

async fn refused(client: &reqwest::Client, url: &str, needle: &str) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 401, "{url}: {body}");
    assert!(body.contains(needle), "{needle:?} not in:\n{body}");
    assert!(body.contains("Nothing was changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_injected_replayed_or_foreign_answers_are_refused_and_change_nothing() {
    let (env, _smtp, idp) = oidc_env(&[]).await;
    let s = &env.server;
    idp.set_account(BEN, &["ml"], true);
    idp.set_account(ANA, &[], false);
    let (victim, attacker) = (cookie_client(), cookie_client());
    let victims_start = start_sign_in(&victim, s).await;
    let attackers_start = start_sign_in(&attacker, s).await;
    assert_eq!(param(&victims_start, "code_challenge_method"), "S256");
    let attackers_answer = answer_for(&attacker, &attackers_start, BEN).await;

    let sql = env.sql().await;
    let before = Snapshot::take(&sql).await;
    // Code injection: the attacker's code in the victim's browser, even with the victim's
    // state, fails the PKCE check at the provider (the victim's verifier is not the attacker's).
    let injected = with_param(&attackers_answer, "state", &param(&victims_start, "state"));
    refused(&victim, &injected, "identity provider refused the sign-in").await;
    // A state this browser did not start.
    let attackers_answer = answer_for(&attacker, &attackers_start, BEN).await;
    refused(
        &attacker,
        &with_param(&attackers_answer, "state", "forged"),
        "state mismatch",
    )
    .await;
    // The answer opened in another browser (no sign-in started there).
    refused(
        &cookie_client(),
        &attackers_answer,
        "not started in this browser",
    )
    .await;
    // An answer naming another issuer (RFC 9207 mix-up).
    refused(
        &attacker,
        &with_param(&attackers_answer, "iss", "http://evil.example"),
        "another issuer",
    )
    .await;
    // The provider's own refusal.
    refused(
        &attacker,
        &s.url("/sign-in/oidc/callback?error=access_denied&error_description=no&state=x"),
        "did not sign you in",
    )
    .await;
    // An address the provider has not verified.
    let victims_start = start_sign_in(&victim, s).await;
    let unverified = answer_for(&victim, &victims_start, ANA).await;
    refused(&victim, &unverified, "has not verified").await;
    Snapshot::take(&sql)
        .await
        .assert_unchanged(&before, "refused sign-ins");

    // The genuine answer signs in, once: its cookie is gone, so a replay is refused.
    let r = attacker.get(&attackers_answer).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["location"], "/account");
    let csrf = session_csrf(&attacker, s).await;
    let me = session_gql(&attacker, s, Some(&csrf), "{ me { email } }", json!({})).await;
    assert_eq!(me["data"]["me"]["email"], BEN, "{me}");
    refused(&attacker, &attackers_answer, "not started in this browser").await;

    // A provider whose discovery document names another issuer than configured is not trusted.
    let mut foreign = s.start_replica().await;
    foreign.extra_env.extend([
        (
            "CUSTODY_OIDC_ISSUER".into(),
            idp.issuer.replace("127.0.0.1", "localhost"),
        ),
        (
            "CUSTODY_OIDC_CLIENT_ID".into(),
            custody_tests::oidc::CLIENT_ID.into(),
        ),
        (
            "CUSTODY_OIDC_CLIENT_SECRET".into(),
            custody_tests::oidc::CLIENT_SECRET.into(),
        ),
    ]);
    foreign.restart().await;
    let r = cookie_client()
        .get(foreign.url("/sign-in/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("says its issuer is"));
}
