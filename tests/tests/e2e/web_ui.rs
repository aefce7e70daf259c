//! The web UI in real headless Chromium: nothing without signing in; home lists the person's
//! projects and pending promotions; a project's runs table filters with the search syntax and
//! pages; a run shows its params, latest metrics and artifacts; the audit log filters and exports;
//! approvers decide from the inbox; every page carries the strict
//! Content-Security-Policy; outsiders get "not found". Screenshots of each page (1280 px wide)
//! go to `target/ui-screenshots/` for review.

use custody_tests::browser::{rows, screenshot, text_of, wait_for_url, Browser};
use custody_tests::fixtures::*;
use custody_tests::governance::start_env_with_smtp;
use custody_tests::sign_in::{cookie_client, sign_in_in_browser};
use fantoccini::Locator;
use serde_json::json;

const ANA: &str = "ana@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_person_finds_a_run_by_filter_and_opens_it() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    create_project(s, &ana, "churn").await;
    create_project(s, &env.admin, "secret").await;
    for (name, auc) in [("baseline", 0.71), ("tuned", 0.83), ("best", 0.91)] {
        let run = id(&start_run(s, &ana, "churn", name, None, &[]).await);
        log_params(s, &ana, &run, &[("model", name)]).await;
        log_metrics(s, &ana, &run, json!([{"key": "auc", "value": auc}])).await;
    }

    // Nothing is readable without a session: the visitor is sent to sign in, and back.
    let anonymous = cookie_client()
        .get(s.url("/projects/churn"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        anonymous.headers()["location"],
        "/sign-in?next=%2Fprojects%2Fchurn"
    );

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, ANA, "/").await;
    assert_eq!(text_of(c, "nav-account").await, ANA);
    let projects = rows(c, "projects").await;
    assert_eq!(projects.len(), 1, "{projects:?}");
    assert!(projects[0].starts_with("churn"));
    text_of(c, "no-pending").await;
    screenshot(c, "home").await;

    c.find(Locator::LinkText("churn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "project-name").await, "churn");
    assert_eq!(rows(c, "runs").await.len(), 3);
    // The filter is a labelled control, reached from the keyboard before the table.
    let labelled = c
        .execute(
            "return document.querySelector('label[for=filter]') !== null",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(labelled, json!(true));
    screenshot(c, "project").await;
    let filter = c.find(Locator::Id("filter")).await.unwrap();
    filter
        .send_keys("metrics.auc > 0.8 and params.model = 'best'")
        .await
        .unwrap();
    c.find(Locator::Id("apply-filter"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(c, "filter=").await;
    let found = rows(c, "runs").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("best"));
    // A filter that does not parse says why.
    c.goto(&s.url("/projects/churn?filter=metrics.auc+%3E%3E+1"))
        .await
        .unwrap();
    assert!(!text_of(c, "filter-error").await.is_empty());

    c.goto(&s.url("/projects/churn?filter=params.model+%3D+%27best%27"))
        .await
        .unwrap();
    c.find(Locator::LinkText("best"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "run-name").await, "best");
    let metrics = text_of(c, "metrics").await;
    assert!(
        metrics.contains("auc") && metrics.contains("0.91"),
        "{metrics}"
    );
    assert!(text_of(c, "params").await.contains("model"));
    screenshot(c, "run").await;

    // The project's audit log, filtered by action, and its export with the same session.
    c.find(Locator::Id("nav-audit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text_of(c, "audit").await.contains("project.create"));
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .ends_with("/audit?project=churn"));
    let entries = rows(c, "audit").await;
    assert!(
        entries.iter().any(|r| r.contains("project.create")),
        "{entries:?}"
    );
    screenshot(c, "audit").await;
    c.goto(&s.url("/audit?project=churn&action=project.create"))
        .await
        .unwrap();
    assert_eq!(rows(c, "audit").await.len(), 1);
    let export = c
        .find(Locator::Id("export-jsonl"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
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
    assert!(exported.text().await.unwrap().contains("project.create"));

    // Another project answers like a missing one.
    c.goto(&s.url("/projects/secret")).await.unwrap();
    assert_eq!(text_of(c, "refused").await, "Not found");
    browser.close().await;

    // Every page carries the strict policy: no inline scripts or styles, no framing.
    for path in ["/sign-in", "/projects/churn"] {
        let r = reqwest::Client::new()
            .get(s.url(path))
            .send()
            .await
            .unwrap();
        let csp = r
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        let csp = csp.unwrap_or_else(|| panic!("{path} has no Content-Security-Policy"));
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
    // The stylesheet is versioned by its content and cached for good under that version.
    let page = reqwest::Client::new()
        .get(s.url("/sign-in"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let css = page
        .split("href=\"/static/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let r = reqwest::Client::new()
        .get(s.url(&format!("/static/{css}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_decides_from_the_inbox_and_the_requester_cannot() {
    use custody_tests::governance::{promotion, request, Fixture, REQUESTER};
    use custody_tests::sign_in::{hidden_value, sign_in_by_email};
    const BOB: &str = "bob@example.com";
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let v1 = f.version(s, &[("auc", 0.9)]).await;
    let p1 = id(&request(s, &f.requester, &v1, "staging", Some("first cut")).await);

    // The requester sees it among the others, with the reason she cannot decide.
    let alice = sign_in_by_email(s, &smtp, REQUESTER).await;
    let page = alice
        .get(s.url("/approvals"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"nothing-to-decide\""), "{page}");
    assert!(
        page.contains("cannot decide on their own promotion"),
        "{page}"
    );
    // A decision posted without the page's CSRF value changes nothing.
    let sql = env.sql().await;
    let before = custody_tests::Snapshot::take(&sql).await;
    let forged = alice
        .post(s.url(&format!("/approvals/{p1}")))
        .form(&[("decision", "approve"), ("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // ... nor does her own, with it: she requested it.
    let csrf = hidden_value(&page, "csrf");
    let own = alice
        .post(s.url(&format!("/approvals/{p1}")))
        .form(&[("decision", "approve"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 403);
    custody_tests::Snapshot::take(&sql)
        .await
        .assert_unchanged(&before, "refused inbox decisions");

    // Bob decides in the browser, signed in: recorded as a session signed in by email.
    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, BOB, "/approvals").await;
    let section = text_of(c, &format!("promotion-{p1}")).await;
    assert!(
        section.contains("churn v1 to staging") && section.contains("first cut"),
        "{section}"
    );
    screenshot(c, "approvals").await;
    c.find(Locator::Id(&format!("comment-{p1}")))
        .await
        .unwrap()
        .send_keys("Looks right.")
        .await
        .unwrap();
    c.find(Locator::Id(&format!("approve-{p1}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "outcome").await, "Approved");
    assert_eq!(text_of(c, "status").await, "APPLIED");
    browser.close().await;
    let p = promotion(s, &env.admin, &p1).await;
    assert_eq!(p["status"], "APPLIED");
    assert_eq!(p["approvals"][0]["authMethod"], "SESSION_EMAIL");
    assert_eq!(p["approvals"][0]["comment"], "Looks right.");
}
