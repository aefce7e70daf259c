//! The administration pages, the audit filters, the home page's recent lists and the inbox's
//! evidence, in real headless Chromium where they are page flows: a project admin manages
//! members, invitations (the mail arrives), webhooks and service accounts (a new secret is shown
//! once and works), and their own access tokens; non-admins and outsiders are refused as the API
//! refuses them; every form without the session's CSRF value changes nothing; the audit log
//! filters by actor and time and its export carries the same selection; home shows the person's
//! runs and their projects' activity; the inbox shows metrics against the stage's holder and the
//! lineage. Screenshots go to `target/ui-screenshots/`.

use std::time::Duration;

use custody_tests::browser::{rows, screenshot, text_of, wait_for_url, Browser};
use custody_tests::fixtures::*;
use custody_tests::governance::{outbox_settled, start_env_with_smtp};
use custody_tests::sign_in::{hidden_value, session_csrf, sign_in_by_email, sign_in_in_browser};
use custody_tests::Snapshot;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const ANA: &str = "ana@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const VIC: &str = "vic@example.com";
const OLGA: &str = "olga@example.com";

async fn click(c: &Client, id: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"))
        .click()
        .await
        .unwrap();
}

async fn type_into(c: &Client, id: &str, text: &str) {
    let field = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn choose(c: &Client, select: &str, value: &str) {
    c.find(Locator::Id(select))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// The outcome page's heading and message after a form.
async fn outcome(c: &Client) -> (String, String) {
    (
        text_of(c, "outcome").await,
        text_of(c, "outcome-message").await,
    )
}

async fn value_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

const MEMBERS: &str = "query($p: String!) { project(name: $p) {
  members { role groups user { email } } invitations { email } webhooks { id url } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_admin_manages_the_project_and_their_tokens_in_the_browser() {
    let (env, smtp) = start_env_with_smtp(&["--webhook-allow-networks", "127.0.0.1/32"]).await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    create_project(s, &ana, "churn").await;
    s.issue_token(BOB, false).await;

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, ANA, "/projects/churn/admin").await;
    assert_eq!(text_of(c, "admin-title").await, "Administration of churn");
    let labelled = c
        .execute(
            "return ['new-member-email','invite-email','webhook-url','sa-name','approval-sign-in-rule']
                .every(id => document.querySelector('label[for=\"' + id + '\"]') !== null)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(labelled, json!(true), "every control has its label");

    // Add Bob with a group, then make him an approver: the API's answer is what the page says.
    type_into(c, "new-member-email", BOB).await;
    choose(c, "new-member-role", "CONTRIBUTOR").await;
    type_into(c, "new-member-groups", "model-risk").await;
    click(c, "add-member-submit").await;
    let (title, message) = outcome(c).await;
    assert_eq!(title, "Done", "{message}");
    assert!(
        message.contains(BOB) && message.contains("CONTRIBUTOR") && message.contains("model-risk"),
        "{message}"
    );
    click(c, "back").await;
    let members = rows(c, "member-list").await;
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members[1].contains(BOB), "{members:?}");
    choose(c, "member-role-2", "APPROVER").await;
    type_into(c, "member-groups-2", "model-risk, privacy").await;
    click(c, "member-save-2").await;
    assert!(outcome(c).await.1.contains("APPROVER"));
    let project = s.gql_ok(&ana, MEMBERS, json!({"p": "churn"})).await;
    let bob = project["project"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["email"] == BOB)
        .cloned()
        .unwrap();
    assert_eq!(bob["role"], "APPROVER");
    assert_eq!(bob["groups"], json!(["model-risk", "privacy"]));

    // The last admin cannot be removed: the page says why, and she stays.
    c.goto(&s.url("/projects/churn/admin")).await.unwrap();
    click(c, "member-remove-1").await;
    let (title, message) = outcome(c).await;
    assert_eq!(title, "Not done");
    assert!(message.contains("last admin"), "{message}");
    let project = s.gql_ok(&ana, MEMBERS, json!({"p": "churn"})).await;
    assert_eq!(project["project"]["members"].as_array().unwrap().len(), 2);

    // Invite an address without an account: the mail arrives; then revoke it.
    c.goto(&s.url("/projects/churn/admin")).await.unwrap();
    type_into(c, "invite-email", CAROL).await;
    choose(c, "invite-role", "VIEWER").await;
    click(c, "invite-submit").await;
    let (title, message) = outcome(c).await;
    assert_eq!(title, "Done", "{message}");
    let mail = smtp.wait_for_one_to(CAROL, Duration::from_secs(30)).await;
    assert!(mail.text().contains("churn"), "{}", mail.text());
    click(c, "back").await;
    assert!(text_of(c, "invitation-list").await.contains(CAROL));
    click(c, "revoke-invitation-1").await;
    assert!(outcome(c).await.1.contains("revoked"));
    let project = s.gql_ok(&ana, MEMBERS, json!({"p": "churn"})).await;
    assert_eq!(project["project"]["invitations"], json!([]));

    // A webhook: its secret shown once, then listed without it, then removed.
    c.goto(&s.url("/projects/churn/admin")).await.unwrap();
    type_into(c, "webhook-url", "http://127.0.0.1:9/deploy").await;
    click(c, "add-webhook-submit").await;
    assert_eq!(outcome(c).await.0, "Done");
    let hook_secret = value_of(c, "secret").await;
    assert_eq!(hook_secret.len(), 64, "{hook_secret}");
    click(c, "back").await;
    assert!(text_of(c, "webhook-list")
        .await
        .contains("http://127.0.0.1:9/deploy"));
    assert!(!c.source().await.unwrap().contains(&hook_secret));

    // A service account and a token for it: the secret works as a bearer token, once shown.
    type_into(c, "sa-name", "ci").await;
    click(c, "create-service-account-submit").await;
    assert!(outcome(c).await.1.contains("service:churn/ci"));
    click(c, "back").await;
    type_into(c, "sa-token-name-1", "deploy").await;
    click(c, "sa-token-submit-1").await;
    assert!(outcome(c).await.1.contains("deploy"));
    let sa_secret = value_of(c, "secret").await;
    let seen = s
        .gql_ok(
            &sa_secret,
            "{ project(name: \"churn\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(seen["project"]["name"], "churn");
    click(c, "back").await;
    text_of(c, "admin-title").await;
    let page = c.source().await.unwrap();
    assert!(!page.contains(&sa_secret), "a secret is shown once only");
    assert!(text_of(c, "service-account-1").await.contains("deploy"));
    screenshot(c, "admin").await;

    c.set_window_size(390, 844).await.unwrap();
    c.goto(&s.url("/projects/churn/admin")).await.unwrap();
    text_of(c, "admin-title").await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(true), "the page fits a phone's width");
    screenshot(c, "admin-phone").await;
    c.set_window_size(1280, 900).await.unwrap();

    click(c, "remove-webhook-1").await;
    assert!(outcome(c).await.1.contains("removed"));
    let project = s.gql_ok(&ana, MEMBERS, json!({"p": "churn"})).await;
    assert_eq!(project["project"]["webhooks"], json!([]));

    // Her own token: read-only, limited to churn; shown once; works for reading only; revoked.
    c.goto(&s.url("/account/tokens")).await.unwrap();
    text_of(c, "no-tokens").await;
    type_into(c, "token-name", "laptop").await;
    type_into(c, "token-expiry", "12h").await;
    choose(c, "token-project", "churn").await;
    click(c, "token-read-only").await;
    click(c, "create-token-submit").await;
    let (title, message) = outcome(c).await;
    assert_eq!(title, "Done", "{message}");
    assert!(message.contains("read-only"), "{message}");
    let own = value_of(c, "secret").await;
    let seen = s
        .gql_ok(&own, "{ project(name: \"churn\") { name } }", json!({}))
        .await;
    assert_eq!(seen["project"]["name"], "churn");
    let code = s
        .gql_err_code(
            &own,
            "mutation { createProject(name: \"other\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
    click(c, "back").await;
    let tokens = rows(c, "token-list").await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(
        tokens[0].contains("laptop") && tokens[0].contains("churn"),
        "{tokens:?}"
    );
    assert!(!c.source().await.unwrap().contains(&own));
    screenshot(c, "account-tokens").await;
    click(c, "revoke-token-1").await;
    assert!(outcome(c).await.1.contains("revoked"));
    let code = s
        .gql_err_code(&own, "{ project(name: \"churn\") { name } }", json!({}))
        .await;
    assert_eq!(code, "UNAUTHENTICATED");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_refuse_non_admins_outsiders_and_forged_forms() {
    let (env, smtp) = start_env_with_smtp(&["--webhook-allow-networks", "127.0.0.1/32"]).await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    create_project(s, &ana, "churn").await;
    let vic = member_token(s, &ana, "churn", VIC, "VIEWER").await;
    let olga = s.issue_token(OLGA, false).await;
    s.issue_token(BOB, false).await;
    let hook = s
        .gql_ok(
            &ana,
            "mutation { addWebhook(project: \"churn\", url: \"http://127.0.0.1:9/h\") { id } }",
            json!({}),
        )
        .await["addWebhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.gql_ok(
        &ana,
        "mutation { createServiceAccount(project: \"churn\", name: \"ci\") { name } }",
        json!({}),
    )
    .await;
    let invitation = s
        .gql_ok(
            &ana,
            "mutation { inviteMember(project: \"churn\", email: \"carol@example.com\", role: VIEWER) { id } }",
            json!({}),
        )
        .await["inviteMember"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = s
        .gql_ok(
            &ana,
            "mutation { createAccessToken(name: \"kept\") { token { id } } }",
            json!({}),
        )
        .await["createAccessToken"]["token"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The API refuses the new fields as it refuses the rest: viewers FORBIDDEN, outsiders
    // see no project; someone else's runs are theirs.
    let webhooks = "{ project(name: \"churn\") { webhooks { id url } } }";
    assert_eq!(s.gql_err_code(&vic, webhooks, json!({})).await, "FORBIDDEN");
    assert_eq!(
        s.gql_ok(&olga, webhooks, json!({})).await["project"],
        Value::Null
    );
    let remove = "mutation($id: ID!) { removeWebhook(project: \"churn\", id: $id) }";
    assert_eq!(
        s.gql_err_code(&vic, remove, json!({"id": hook})).await,
        "FORBIDDEN"
    );
    assert_eq!(
        s.gql_err_code(&olga, remove, json!({"id": hook})).await,
        "NOT_FOUND"
    );
    // Each member's runs are theirs: the viewer gets only their own, the others refused.
    let others_runs = "{ project(name: \"churn\") { members { user { recentRuns { id } } } } }";
    let answer = s.gql(&vic, others_runs, json!({})).await;
    let errors = answer["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 2, "{answer}");
    assert!(
        errors
            .iter()
            .all(|e| e["extensions"]["code"] == "FORBIDDEN"),
        "{answer}"
    );
    let shown: Vec<&Value> = answer["data"]["project"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["user"].is_null())
        .collect();
    assert_eq!(shown.len(), 1, "{answer}");
    assert_eq!(
        s.gql_ok(&olga, "{ recentActivity { seq } }", json!({}))
            .await["recentActivity"],
        json!([]),
        "an outsider sees nothing of churn's activity"
    );
    let filtered =
        "{ auditLog(project: \"churn\", actor: \"ana@example.com\") { edges { node { seq } } } }";
    assert_eq!(
        s.gql_err_code(&olga, filtered, json!({})).await,
        "NOT_FOUND"
    );

    // A viewer is told they cannot see the page; an outsider that there is no such project.
    let vic_browser = sign_in_by_email(s, &smtp, VIC).await;
    let r = vic_browser
        .get(s.url("/projects/churn/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("You cannot see this"));
    let olga_browser = sign_in_by_email(s, &smtp, OLGA).await;
    let r = olga_browser
        .get(s.url("/projects/churn/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let ana_browser = sign_in_by_email(s, &smtp, ANA).await;
    let csrf = session_csrf(&ana_browser, s).await;
    let vic_csrf = session_csrf(&vic_browser, s).await;
    let page = ana_browser
        .get(s.url("/account/tokens"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(hidden_value(&page, "csrf"), csrf);
    let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/projects/churn/admin/members",
            vec![("email", BOB), ("role", "ADMIN"), ("groups", "x")],
        ),
        ("/projects/churn/admin/members/remove", vec![("email", VIC)]),
        (
            "/projects/churn/admin/invitations",
            vec![("email", "dan@example.com"), ("role", "VIEWER")],
        ),
        (
            "/projects/churn/admin/webhooks",
            vec![("url", "http://127.0.0.1:9/x")],
        ),
        (
            "/projects/churn/admin/webhooks/remove",
            vec![("id", hook.as_str())],
        ),
        (
            "/projects/churn/admin/invitations/revoke",
            vec![("id", invitation.as_str())],
        ),
        (
            "/projects/churn/admin/tokens/revoke",
            vec![("id", token.as_str())],
        ),
        ("/account/tokens/revoke", vec![("id", token.as_str())]),
        (
            "/projects/churn/admin/service-accounts",
            vec![("name", "ci2"), ("role", "VIEWER")],
        ),
        (
            "/projects/churn/admin/service-accounts/token",
            vec![("account", "ci"), ("name", "t")],
        ),
        (
            "/projects/churn/admin/service-accounts/remove",
            vec![("name", "ci")],
        ),
        (
            "/projects/churn/admin/approval-sign-in",
            vec![("rule", "SESSION")],
        ),
        ("/account/tokens/create", vec![("name", "forged")]),
    ];
    outbox_settled(&env).await;
    let sql = env.sql().await;
    let before = Snapshot::take(&sql).await;
    for (path, fields) in &forms {
        for forged in [None, Some("guess")] {
            let mut form = fields.clone();
            if let Some(value) = forged {
                form.push(("csrf", value));
            }
            let r = ana_browser
                .post(s.url(path))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path} with csrf {forged:?}");
            let body = r.text().await.unwrap();
            assert!(body.contains("security check"), "{path}: {body}");
        }
        // A viewer's own session, with its CSRF value: the API refuses the admin forms.
        if path.starts_with("/projects/") {
            let mut form = fields.clone();
            form.push(("csrf", vic_csrf.as_str()));
            let r = vic_browser
                .post(s.url(path))
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                [403, 404].contains(&status) && body.contains("Not done"),
                "{path} by a viewer: {status} {body}"
            );
        }
    }
    Snapshot::take(&sql)
        .await
        .assert_unchanged(&before, "forged and unauthorized admin forms");

    // The same form with the session's CSRF value is done (so the refusals above were the
    // check's, not a broken form's).
    let r = ana_browser
        .post(s.url("/projects/churn/admin/members"))
        .form(&[("email", BOB), ("role", "ADMIN"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let members = s.gql_ok(&ana, MEMBERS, json!({"p": "churn"})).await;
    assert!(members["project"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["user"]["email"] == BOB && m["role"] == "ADMIN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_filters_by_actor_and_time_and_exports_the_same_selection() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    create_project(s, &ana, "churn").await;
    let bob = member_token(s, &ana, "churn", BOB, "CONTRIBUTOR").await;
    for name in ["b1", "b2"] {
        start_run(s, &bob, "churn", name, None, &[]).await;
    }
    // The boundary: the time of Bob's last entry plus a moment; Ana acts after it.
    let last_of_bob = custody_tests::audit::fetch_all(s, &ana, "project: \"churn\"").await;
    let boundary = last_of_bob.last().unwrap()["at"]
        .as_str()
        .unwrap()
        .to_owned();
    let boundary = chrono::DateTime::parse_from_rfc3339(&boundary).unwrap()
        + chrono::Duration::milliseconds(1);
    let boundary = boundary.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    custody_tests::wait_until(
        "the clock to pass the boundary",
        Duration::from_secs(5),
        || async {
            (chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true) > boundary)
                .then_some(())
        },
    )
    .await;
    let run = id(&start_run(s, &ana, "churn", "a1", None, &[]).await);
    finish_run(s, &ana, &run, "FINISHED").await;
    create_model(s, &ana, "churn", "churn").await;
    register_model_version(s, &ana, "churn", "churn", &run).await;

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, ANA, "/audit?project=churn").await;
    text_of(c, "audit").await;

    // Bob's entries only.
    type_into(c, "audit-actor", BOB).await;
    click(c, "apply-audit-filter").await;
    wait_for_url(c, "actor=bob").await;
    let bobs = rows(c, "audit").await;
    assert!(bobs.len() >= 2, "{bobs:?}");
    assert!(bobs.iter().all(|r| r.contains(BOB)), "{bobs:?}");

    // Ana's since the boundary: her run, model and version, not her project or Bob's runs.
    type_into(c, "audit-actor", ANA).await;
    type_into(c, "audit-since", &boundary).await;
    click(c, "apply-audit-filter").await;
    wait_for_url(c, "since=").await;
    let anas = rows(c, "audit").await;
    assert!(anas.iter().all(|r| r.contains(ANA)), "{anas:?}");
    assert!(anas.iter().any(|r| r.contains("run.start")), "{anas:?}");
    assert!(
        !anas.iter().any(|r| r.contains("project.create")),
        "{anas:?}"
    );
    screenshot(c, "audit-filtered").await;

    // The export link carries the same selection: the same entries, signed as filtered.
    let export = c
        .find(Locator::Id("export-jsonl"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(
        export.contains("actor=ana%40example.com") && export.contains("from="),
        "{export}"
    );
    let cookie = c
        .get_named_cookie("custody_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    let exported = reqwest::Client::new()
        .get(s.url(&export))
        .header("cookie", format!("custody_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), 200, "{export}");
    let body = exported.text().await.unwrap();
    let seqs: Vec<String> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("entry").is_some())
        .map(|v| v["seq"].to_string())
        .collect();
    let shown: Vec<String> = anas
        .iter()
        .map(|r| r.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(seqs, shown, "{body}");
    // The export verifies offline with the actor filter recorded in its signed manifest.
    let dir = tempfile::tempdir().unwrap();
    let file = custody_tests::export_helpers::write(dir.path(), "a.jsonl", body.as_bytes());
    let key = custody_tests::export_helpers::save_public_key(s, dir.path(), "pem").await;
    custody_tests::export_helpers::verify(&file, &key, &[])
        .await
        .assert_ok();

    // Until the boundary: Bob's runs and the project's start, nothing of Ana's later work.
    c.goto(&s.url(&format!(
        "/audit?project=churn&until={}",
        urlencode(&boundary)
    )))
    .await
    .unwrap();
    let early = rows(c, "audit").await;
    assert!(
        early.iter().any(|r| r.contains("project.create")),
        "{early:?}"
    );
    assert!(
        !early.iter().any(|r| r.contains("model_version.register")),
        "{early:?}"
    );
    assert_eq!(
        early.iter().filter(|r| r.contains("run.start")).count(),
        2,
        "{early:?}"
    );

    // The compliance report of a version opens from the audit page with the same session.
    click(c, "compliance-toggle").await;
    type_into(c, "report-model", "churn").await;
    type_into(c, "report-version", "1").await;
    click(c, "open-report").await;
    wait_for_url(c, "/api/compliance/").await;
    text_of(c, "identity").await;
    let heading = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "Compliance report: churn version 1");
    browser.close().await;
}

fn urlencode(text: &str) -> String {
    url_encode_pairs(&[("v", text)])
        .trim_start_matches("v=")
        .to_owned()
}

fn url_encode_pairs(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", pairs)
        .unwrap()
        .query()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_shows_recent_runs_and_activity_and_the_inbox_the_evidence() {
    use custody_tests::governance::{approve, promotion, request, Fixture, REQUESTER};
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let v1 = f.version(s, &[("auc", 0.81)]).await;
    let p1 = id(&request(s, &f.requester, &v1, "staging", None).await);
    approve(s, f.approver(BOB), &p1, None).await;
    assert_eq!(promotion(s, &env.admin, &p1).await["status"], "APPLIED");
    let v2 = f.version(s, &[("auc", 0.93)]).await;
    let p2 = id(&request(s, &f.requester, &v2, "staging", Some("better")).await);
    for i in 0..10 {
        start_run(s, &f.requester, &f.project, &format!("mine-{i}"), None, &[]).await;
    }
    // Someone else's run is not among the requester's (but it is the project's activity).
    start_run(s, &env.admin, &f.project, "admins-run", None, &[]).await;

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, REQUESTER, "/").await;
    let runs = text_of(c, "recent-runs").await;
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 10, "{runs}");
    assert!(lines[0].starts_with("mine-9"), "newest first: {runs}");
    assert!(!runs.contains("admins-run"), "{runs}");
    let activity = text_of(c, "activity").await;
    let entries: Vec<&str> = activity.lines().collect();
    assert_eq!(entries.len(), 10, "{activity}");
    assert!(activity.contains("run.start"), "{activity}");
    assert!(
        entries.iter().any(|e| e.contains("admin@localhost")),
        "{activity}"
    );
    screenshot(c, "home-activity").await;
    browser.close().await;

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, BOB, "/approvals").await;
    let metrics = rows(c, &format!("metrics-{p2}")).await;
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert!(
        metrics[0].contains("auc")
            && metrics[0].contains("0.93")
            && metrics[0].contains("0.81")
            && metrics[0].contains("better"),
        "{metrics:?}"
    );
    let section = text_of(c, &format!("promotion-{p2}")).await;
    assert!(section.contains("against v1"), "{section}");
    let lineage = text_of(c, &format!("lineage-{p2}")).await;
    assert!(
        lineage.contains("dataset transactions v1")
            && lineage.contains("git.example.com/churn.git"),
        "{lineage}"
    );
    screenshot(c, "inbox").await;
    browser.close().await;
}

/// Sequential scans of `audit_log`, index scans on it, and rows fetched through its indexes so
/// far, as the statistics collector has them (a fresh snapshot each time).
async fn audit_log_scans(sql: &tokio_postgres::Client) -> (i64, i64, i64) {
    sql.execute("SELECT pg_stat_clear_snapshot()", &[])
        .await
        .unwrap();
    let row = sql
        .query_one(
            "SELECT seq_scan, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0)
             FROM pg_stat_user_tables WHERE relname = 'audit_log'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The new audit filters and the home page's activity on a log of 200,000 entries across 100
/// projects, through the real server: each request is answered from indexes (its index scans
/// reach the statistics), and none reads the whole log (no sequential scan of `audit_log`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_and_activity_read_indexes_on_a_large_log() {
    let env = custody_tests::TestEnv::start().await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    let project = id(&create_project(s, &ana, "churn").await);
    let sql = env.sql().await;
    // 200,000 entries after the real ones, a tenth of them churn's, by 50 actors, a minute
    // apart; the chain head moves past them (their hashes are not a chain: nothing verifies
    // here, only the plans matter).
    sql.batch_execute(&format!(
        "CREATE TEMP TABLE seed_projects AS SELECT gen_random_uuid() AS id FROM generate_series(1, 99);
         INSERT INTO audit_log (seq, at, actor, action, project_id, subject_kind, subject_id, prev_hash, hash)
         SELECT h.seq + i, timestamptz '2025-01-01' + i * interval '1 minute',
                'user' || (i % 50) || '@example.com', 'run.start',
                CASE WHEN i % 10 = 0 THEN '{project}'::uuid
                     ELSE (SELECT array_agg(id) FROM seed_projects)[1 + i % 99] END,
                'run', 'r' || i, repeat('0', 64), encode(sha256(('seed' || i)::bytea), 'hex')
         FROM audit_head h, generate_series(1, 200000) AS i;
         UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_log),
                               hash = (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1);
         ANALYZE audit_log;"
    ))
    .await
    .unwrap();

    let requests: [(&str, &str); 5] = [
        (
            "an actor in a project",
            "{ auditLog(project: \"churn\", actor: \"user10@example.com\", first: 50) { edges { node { seq } } } }",
        ),
        (
            "a day of a project",
            "{ auditLog(project: \"churn\", since: \"2025-03-01T00:00:00Z\", until: \"2025-03-02T00:00:00Z\", first: 50) { edges { node { seq } } } }",
        ),
        (
            "an actor in a period of the whole log (server admins)",
            "{ auditLog(actor: \"user7@example.com\", since: \"2025-02-01T00:00:00Z\", first: 50) { edges { node { seq actor } } } }",
        ),
        ("the home page's activity", "{ recentActivity(first: 10) { seq } }"),
        (
            "the home page's runs",
            "{ me { recentRuns(first: 10) { id } } }",
        ),
    ];
    for (what, query) in requests {
        let token = if what.contains("server admins") {
            &env.admin
        } else {
            &ana
        };
        let before = audit_log_scans(&sql).await;
        let answer = s.gql_ok(token, query, json!({})).await;
        if what.contains("period") {
            let edges = answer["auditLog"]["edges"].as_array().unwrap();
            assert_eq!(edges.len(), 50, "{what}: {answer}");
            assert!(edges
                .iter()
                .all(|e| e["node"]["actor"] == "user7@example.com"));
        }
        if what.contains("activity") {
            assert_eq!(answer["recentActivity"].as_array().unwrap().len(), 10);
        }
        if what.contains("runs") {
            // Reads runs, not the log: nothing to wait for; only no scan of the log.
            let after = audit_log_scans(&sql).await;
            assert_eq!(after.0, before.0, "{what} scanned the audit log");
            continue;
        }
        // The server's connection reports its counts within a few seconds of the request.
        let after = custody_tests::wait_until(
            &format!("{what}: the index scans to reach the statistics"),
            Duration::from_secs(30),
            || async {
                let now = audit_log_scans(&sql).await;
                (now.1 > before.1).then_some(now)
            },
        )
        .await;
        assert_eq!(
            after.0, before.0,
            "{what} read the whole audit log (a sequential scan)"
        );
        // A page is at most 51 rows, found among one actor's or one project's entries at
        // worst (4,000 and 20,000 here, read on the smaller side); an index walked across the
        // log (a period's bound found by reading the period) fetches far more.
        assert!(
            after.2 - before.2 < 10_000,
            "{what} fetched {} rows of the audit log through its indexes",
            after.2 - before.2
        );
    }
}
