//! Sign-in without an identity provider (the embedded default): a mailed single-use link bound
//! to the browser that asked, in real headless Chromium; sessions that end when idle, signed out
//! (with the page's CSRF value only) or revoked by an admin; and projects that demand a recent
//! sign-in before anyone decides on their promotions.

use std::time::Duration;

use custody_tests::browser::{text_of, Browser};
use custody_tests::fixtures::id;
use custody_tests::governance::*;
use custody_tests::sign_in::{
    self, ask_for_link, cookie_client, session_csrf, session_gql, sign_in_by_email, sign_in_link,
};
use custody_tests::Snapshot;
use fantoccini::{Client, Locator};
use serde_json::json;

const BEN: &str = "ben@example.com";
const NOBODY: &str = "nobody@example.com";

/// Asks for a link from the sign-in page, which offers no single sign-on without a provider.
async fn ask_in_browser(c: &Client, s: &custody_tests::Server, email: &str) {
    c.goto(&s.url("/sign-in")).await.unwrap();
    assert!(
        c.find(Locator::Id("sign-in-oidc")).await.is_err(),
        "no single sign-on without a provider"
    );
    sign_in::ask_in_browser(c, s, email, "/account").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_link_signs_in_only_the_browser_that_asked_and_only_once() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    s.issue_token(BEN, false).await;
    let sql = env.sql().await;

    let asking = Browser::start().await;
    let elsewhere = Browser::start().await;
    let (a, b) = (asking.client(), elsewhere.client());
    ask_in_browser(a, s, BEN).await;
    let link = sign_in_link(&smtp.wait_for_one_to(BEN, Duration::from_secs(30)).await);

    // Opened in another browser (a forwarded mail, a mail scanner): refused, and not used up.
    b.goto(&link).await.unwrap();
    assert_eq!(text_of(b, "refused").await, "You cannot sign in this way");
    let body = b
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("browser where you asked"), "{body}");
    let unused: i64 = sql
        .query_one(
            "SELECT count(*) FROM sign_in_links WHERE used_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unused, 1);

    // In the browser that asked: signed in, by email link.
    a.goto(&link).await.unwrap();
    assert_eq!(text_of(a, "signed-in-as").await, BEN);
    assert!(text_of(a, "method").await.contains("email link"));
    // Once only.
    a.goto(&link).await.unwrap();
    assert_eq!(text_of(a, "refused").await, "This link was already used");

    // An address without an account gets the very same answer, and no mail, no link.
    ask_in_browser(b, s, NOBODY).await;
    outbox_settled(&env).await;
    assert!(smtp.messages_to(NOBODY).is_empty());
    let links: i64 = sql
        .query_one(
            "SELECT count(*) FROM sign_in_links WHERE email = $1",
            &[&NOBODY],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(links, 0);

    // Signing out takes the page's CSRF value: a cross-site post (without it) is refused and the
    // session stays; the page's own button ends it.
    let cookie = a
        .get_named_cookie("custody_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    let forged = reqwest::Client::new()
        .post(s.url("/sign-out"))
        .header("cookie", format!("custody_session={cookie}"))
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    a.goto(&s.url("/account")).await.unwrap();
    assert_eq!(text_of(a, "signed-in-as").await, BEN);
    a.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(a, "email").await;
    a.goto(&s.url("/account")).await.unwrap();
    assert!(a
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/sign-in"));
    let ended: i64 = sql
        .query_one(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 1);
    asking.close().await;
    elsewhere.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_or_revoked_and_allowed_domains_let_newcomers_in() {
    let (env, smtp) = start_env_with_smtp(&[
        "--session-idle-timeout",
        "3s",
        "--allowed-domains",
        "example.com",
    ])
    .await;
    let s = &env.server;
    // A newcomer of an allowed domain becomes a user by signing in.
    let ben = sign_in_by_email(s, &smtp, BEN).await;
    let csrf = session_csrf(&ben, s).await;
    let me = session_gql(&ben, s, Some(&csrf), "{ me { email } }", json!({})).await;
    assert_eq!(me["data"]["me"]["email"], BEN);
    // Another domain: the same answer, but no mail.
    ask_for_link(&cookie_client(), s, "eve@elsewhere.example", "/account").await;

    // Only server admins revoke sessions; a user cannot end another's.
    let ben_token = s.issue_token(BEN, false).await;
    env.assert_refused(
        &ben_token,
        "FORBIDDEN",
        "mutation($e: String!) { revokeUserSessions(email: $e) }",
        json!({"e": "admin@localhost"}),
    )
    .await;
    let revoked = env
        .gql_ok(
            &env.admin,
            "mutation($e: String!) { revokeUserSessions(email: $e) }",
            json!({"e": BEN}),
        )
        .await;
    assert_eq!(revoked["revokeUserSessions"], 1);
    let me = session_gql(&ben, s, None, "{ me { email } }", json!({})).await;
    assert_eq!(
        me["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{me}"
    );
    let r = ben.get(s.url("/account")).send().await.unwrap();
    assert_eq!(r.status(), 303);

    // Requests keep a session alive past its idle timeout (3 s here)...
    let ben = sign_in_by_email(s, &smtp, BEN).await;
    for _ in 0..6 {
        let r = ben.get(s.url("/account")).send().await.unwrap();
        assert_eq!(r.status(), 200, "an active session ended");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // ... and one left alone longer than that ends (any request would count as activity, so
    // the test waits the timeout out without asking).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = ben.get(s.url("/account")).send().await.unwrap();
    assert_eq!(r.status(), 303, "an idle session still answers");
    outbox_settled(&env).await;
    assert!(smtp.messages_to("eve@elsewhere.example").is_empty());

    // Cookies are HttpOnly everywhere, and Secure once the server is reached over https.
    let cookie_of = |r: &reqwest::Response| r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let plain = cookie_client().get(s.url("/sign-in")).send().await.unwrap();
    let plain = cookie_of(&plain);
    assert!(
        plain.contains("HttpOnly") && !plain.contains("Secure"),
        "{plain}"
    );
    let mut https = s.start_replica().await;
    https.extra_env.push((
        "CUSTODY_PUBLIC_URL".into(),
        "https://custody.example".into(),
    ));
    https.restart().await;
    let behind_tls = cookie_client()
        .get(https.url("/sign-in"))
        .send()
        .await
        .unwrap();
    let behind_tls = cookie_of(&behind_tls);
    assert!(
        behind_tls.contains("HttpOnly") && behind_tls.contains("Secure"),
        "{behind_tls}"
    );
}

const SET_RULE: &str = "mutation($p: String!, $r: ApprovalSignIn) {
    setApprovalSignIn(project: $p, rule: $r) { name approvalSignIn approvalSignInIsDefault } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_that_demands_a_session_takes_decisions_only_from_a_recent_sign_in() {
    let (env, smtp) = start_env_with_smtp(&["--approval-recent-sign-in", "5s"]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let bob = f.approver(BOB).to_owned();
    // Without a provider the server's rule is the link; the project's admin demands a session.
    env.assert_refused(
        &bob,
        "FORBIDDEN",
        SET_RULE,
        json!({"p": f.project, "r": "SESSION"}),
    )
    .await;
    let set = env
        .gql_ok(
            &env.admin,
            SET_RULE,
            json!({"p": f.project, "r": "SESSION"}),
        )
        .await;
    assert_eq!(
        set["setApprovalSignIn"],
        json!({"name": f.project, "approvalSignIn": "SESSION", "approvalSignInIsDefault": false})
    );

    let v1 = f.version(s, &[("auc", 0.90)]).await;
    let p1 = id(&request(s, &f.requester, &v1, "staging", None).await);
    let link = smtp
        .wait_for_one_to(BOB, Duration::from_secs(30))
        .await
        .approval_link();
    outbox_settled(&env).await;
    // A bearer token no longer decides, nor does the link alone.
    env.assert_refused(
        &bob,
        "FORBIDDEN",
        &approve_mutation(),
        json!({"id": p1, "c": null}),
    )
    .await;
    let stranger = cookie_client();
    let page = stranger
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"sign-in-needed\"") && !page.contains("id=\"approve\""));
    let sql = env.sql().await;
    let before = Snapshot::take(&sql).await;
    let posted = reqwest::Client::new()
        .post(&link)
        .form(&[("decision", "approve"), ("csrf", "x")])
        .header("cookie", "custody_csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 403);
    assert!(posted.text().await.unwrap().contains("signed in"));
    Snapshot::take(&sql)
        .await
        .assert_unchanged(&before, "a decision by link alone");

    // Bob signs in by mail and decides from the link's page: recorded as a session by email.
    let session = sign_in_by_email(s, &smtp, BOB).await;
    let page = session
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"signed-in\""), "{page}");
    let form_csrf = custody_tests::sign_in::hidden_value(&page, "csrf");
    let done = session
        .post(&link)
        .form(&[("decision", "approve"), ("csrf", form_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    let p = promotion(s, &env.admin, &p1).await;
    assert_eq!(p["status"], "APPLIED");
    assert_eq!(p["approvals"][0]["authMethod"], "SESSION_EMAIL");

    // Once the sign-in is older than the window, the same session must sign in again.
    let v2 = f.version(s, &[("auc", 0.91)]).await;
    let p2 = id(&request(s, &f.requester, &v2, "staging", None).await);
    let csrf = session_csrf(&session, s).await;
    outbox_settled(&env).await;
    // The window under test is time itself: wait it out.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = Snapshot::take(&sql).await;
    let stale = session_gql(
        &session,
        s,
        Some(&csrf),
        &approve_mutation(),
        json!({"id": p2, "c": null}),
    )
    .await;
    assert_eq!(
        stale["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{stale}"
    );
    assert!(stale["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("sign in again"));
    Snapshot::take(&sql)
        .await
        .assert_unchanged(&before, "a decision from a stale sign-in");

    // Back to the server's rule (the link): the link alone decides again.
    let reset = env
        .gql_ok(&env.admin, SET_RULE, json!({"p": f.project, "r": null}))
        .await;
    assert_eq!(reset["setApprovalSignIn"]["approvalSignIn"], "LINK");
    approve(s, &bob, &p2, None).await;
    let p = promotion(s, &env.admin, &p2).await;
    assert_eq!(p["approvals"][0]["authMethod"], "API_TOKEN");
}

const BOB: &str = "bob@example.com";
