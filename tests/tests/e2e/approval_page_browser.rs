//! The approval page in a real browser: headless Chromium (through chromedriver) opens the link an
//! approver received by mail (through a real SMTP server), reads the page, types a comment and
//! clicks Approve — the form works without JavaScript, with its CSRF cookie and field.

use std::time::Duration;

use custody_tests::browser::Browser;
use custody_tests::commit_sha;
use custody_tests::fixtures::id;
use custody_tests::governance::*;
use fantoccini::Locator;
use serde_json::json;

const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_reviews_and_approves_in_a_real_browser() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;

    // Version 1 in production (auc 0.90, loss 0.30).
    let v1 = f
        .evaluated_version(s, &[("auc", 0.90), ("loss", 0.30)])
        .await;
    let p1 = id(&request(s, &f.requester, &v1, "production", None).await);
    approve(s, f.approver(BOB), &p1, None).await;
    approve(s, f.approver(CAROL), &p1, None).await;
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("production"));

    // The candidate, version 2: better on both metrics.
    let v2 = f
        .evaluated_version(s, &[("auc", 0.93), ("loss", 0.25)])
        .await;
    let p = request(
        s,
        &f.requester,
        &v2,
        "production",
        Some("retrained on November data"),
    )
    .await;
    assert_eq!(p["status"], "PENDING");
    let pid = id(&p);
    let subject = "Approval requested: churn v2 to production";
    let link_for = |who: &'static str| {
        let smtp = &smtp;
        async move {
            wait_until(
                &format!("the mail about v2 to {who}"),
                Duration::from_secs(30),
                || async {
                    smtp.messages_to(who)
                        .into_iter()
                        .find(|m| m.subject() == subject)
                },
            )
            .await
            .approval_link()
        }
    };
    let bob_link = link_for(BOB).await;
    let carol_link = link_for(CAROL).await;

    let browser = Browser::start().await;
    let c = browser.client();
    c.goto(&bob_link).await.expect("opening the link");
    let text = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // What is being approved, by whom, and against what.
    for needle in [
        "churn",
        "version 2",
        "production",
        REQUESTER,
        "retrained on November data",
        BOB,
    ] {
        assert!(
            text.contains(needle),
            "the page does not show {needle:?}:\n{text}"
        );
    }
    // Metrics side by side with version 1, now in production.
    let metrics = c
        .find(Locator::Id("metrics"))
        .await
        .expect("a metrics table")
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("version 1"),
        "the metrics are not compared with version 1:\n{metrics}"
    );
    let rows: Vec<String> = {
        let mut out = Vec::new();
        for row in c.find_all(Locator::Css("#metrics tr")).await.unwrap() {
            out.push(row.text().await.unwrap());
        }
        out
    };
    let row = |key: &str| {
        rows.iter()
            .find(|r| r.starts_with(key))
            .cloned()
            .unwrap_or_else(|| panic!("no {key} row: {rows:?}"))
    };
    let auc = row("auc");
    assert!(
        auc.contains("0.93") && auc.contains("0.9"),
        "auc row: {auc}"
    );
    assert!(
        auc.find("0.93").unwrap() < auc.rfind("0.9").unwrap(),
        "candidate first, then the current version: {auc}"
    );
    let loss = row("loss");
    assert!(
        loss.contains("0.25") && loss.contains("0.3"),
        "loss row: {loss}"
    );
    // Lineage: the training dataset and the commit.
    let lineage = c
        .find(Locator::Id("lineage"))
        .await
        .expect("a lineage list")
        .text()
        .await
        .unwrap();
    assert!(lineage.contains("transactions"), "lineage: {lineage}");
    assert!(
        lineage.contains(&commit_sha("clean-1")),
        "lineage: {lineage}"
    );
    // The policy's verdict and requirements.
    let policy = c
        .find(Locator::Id("policy"))
        .await
        .expect("the policy result")
        .text()
        .await
        .unwrap();
    assert!(
        policy.contains("Allowed") && policy.contains("2 approval"),
        "policy: {policy}"
    );
    let status = c
        .find(Locator::Id("status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(status, "PENDING");

    // For a person to look at: CUSTODY_TEST_SCREENSHOTS=DIR keeps a picture of the page.
    if let Some(dir) = std::env::var_os("CUSTODY_TEST_SCREENSHOTS") {
        let png = c.screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&dir).join("approval-page.png"), png).unwrap();
    }

    // Bob comments and approves.
    c.find(Locator::Id("comment"))
        .await
        .unwrap()
        .send_keys("Holdout AUC is up; ship it.")
        .await
        .unwrap();
    c.find(Locator::Id("approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let outcome = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("outcome"))
        .await
        .expect("an outcome page");
    assert_eq!(outcome.text().await.unwrap(), "Approved");
    let body = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("PENDING"), "{body}");

    let now = promotion(s, &env.admin, &pid).await;
    assert_eq!(now["status"], "PENDING");
    assert_eq!(now["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(now["approvals"][0]["approver"]["email"], BOB);
    assert_eq!(now["approvals"][0]["via"], "EMAIL");
    assert_eq!(now["approvals"][0]["decision"], "APPROVE");
    assert_eq!(
        now["approvals"][0]["comment"],
        "Holdout AUC is up; ship it."
    );

    // Back to Bob's link: it has been used; the page offers no form any more.
    c.goto(&bob_link).await.unwrap();
    assert!(
        c.find(Locator::Id("approve")).await.is_err(),
        "a used link still offers the Approve button"
    );

    // Carol approves from her link: the quorum, the version is in production.
    c.goto(&carol_link).await.unwrap();
    c.find(Locator::Id("approve"))
        .await
        .expect("Carol's page has the form")
        .click()
        .await
        .unwrap();
    let outcome = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("outcome"))
        .await
        .expect("an outcome page");
    assert_eq!(outcome.text().await.unwrap(), "Approved");
    let body = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("now in production") && body.contains("APPLIED"),
        "{body}"
    );
    browser.close().await;

    let done = promotion(s, &env.admin, &pid).await;
    assert_eq!(done["status"], "APPLIED");
    assert!(
        done["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["via"] == "EMAIL"),
        "{}",
        done["approvals"]
    );
    assert_eq!(stage_of(&env, &v2).await.as_deref(), Some("production"));
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("archived"));
    let d = s
        .gql_ok(
            &env.admin,
            "query($id: ID!) { promotion(id: $id) { policyDigest } }",
            json!({ "id": pid }),
        )
        .await;
    assert_eq!(
        d["promotion"]["policyDigest"],
        bundle_digest(&policies_dir()).as_str()
    );
    verify_audit(&env).await;
}
