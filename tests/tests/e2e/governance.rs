//! Governance (issue 4), end to end against the real binary: promotion policies as code (each
//! default rule both ways, broken bundles, a bundle changed while a request is pending,
//! `policy test`), the approval gate (segregation of duties, quorum under 20 concurrent approvals,
//! reject, cancel, expiry), approve-by-email links read from a real SMTP server (scanner GETs,
//! CSRF, reuse, tampering, foreign and stale links), the outbox retrying while SMTP is down, signed
//! webhooks to a real HTTP receiver, and the audit chain re-computed after all of it.
//!
//! Every refusal is checked to have changed nothing: a snapshot of every table before and after.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use custody_tests::db::count;
use custody_tests::fixtures::{self, id};
use custody_tests::governance::*;
use custody_tests::pg::free_port;
use custody_tests::server::{server_bin, tmp_dir};
use custody_tests::smtp::SmtpServer;
use custody_tests::webhook::{verify_signature, WebhookReceiver, ALLOW_RECEIVER};
use custody_tests::{TestDb, TestEnv};
use serde_json::{json, Value};

const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";
const PRIYA: &str = "priya@example.com";
const PAT: &str = "pat@example.com";

const MAIL_WAIT: Duration = Duration::from_secs(30);

fn emails(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Recipients of the approval mails queued for a promotion (from the outbox rows).
async fn mail_recipients(env: &TestEnv, promotion: &str) -> BTreeSet<String> {
    let sql = env.sql().await;
    sql.query(
        "SELECT payload->>'to' FROM outbox WHERE kind = 'email' AND payload->>'about' = $1::text",
        &[&promotion],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

async fn deployments_of(env: &TestEnv, mv: &str) -> i64 {
    count(
        &env.sql().await,
        &format!("deployments WHERE model_version_id = '{mv}'"),
    )
    .await
}

/// A CSRF refusal case: (what, form fields, cookie).
type CsrfCase = (&'static str, Vec<(&'static str, String)>, Option<String>);

fn assert_status(p: &Value, status: &str) {
    assert_eq!(
        p["status"],
        status,
        "promotion: {}",
        serde_json::to_string_pretty(p).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// The issue's "done when", with the evaluation-dataset rule both ways

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_needs_an_evaluation_dataset_then_two_approvers_approve_from_their_mails() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let digest = bundle_digest(&policies_dir());
    let mv = f.version(s, &[("auc", 0.91), ("loss", 0.2)]).await;

    // Without an evaluation run: the dry run says why, and writes nothing.
    let dr = assert_db_unchanged(
        &env,
        "promotionDryRun",
        dry_run(s, &f.requester, &mv, "production"),
    )
    .await;
    let deny: Vec<String> = serde_json::from_value(dr["deny"].clone()).unwrap();
    assert!(
        deny.iter().any(|d| d.contains("evaluation dataset")),
        "dry run: {dr}"
    );
    assert_eq!(dr["policyDigest"], digest.as_str());

    let denied = request(s, &f.requester, &mv, "production", Some("ship it")).await;
    assert_status(&denied, "DENIED");
    assert!(
        deny_of(&denied)
            .iter()
            .any(|d| d.contains("production needs an evaluation dataset")),
        "deny messages: {:?}",
        deny_of(&denied)
    );
    assert_eq!(denied["approvals"], json!([]));
    assert_eq!(
        denied["policyDigest"],
        digest.as_str(),
        "the digest of policies/ decided"
    );
    assert_eq!(denied["policyResult"]["policy_digest"], digest.as_str());
    assert_eq!(stage_of(&env, &mv).await, None, "a denied version moved");
    assert!(
        mail_recipients(&env, &id(&denied)).await.is_empty(),
        "a denied request mailed approvers"
    );
    let sql = env.sql().await;
    assert_eq!(
        count(
            &sql,
            &format!("approval_links WHERE promotion_id = '{}'", id(&denied))
        )
        .await,
        0
    );

    // With an evaluation run that consumed a dataset version: PENDING, two approvals.
    add_evaluation(
        s,
        &f.requester,
        &f.project,
        &mv,
        &[&f.eval_ds],
        &[("auc", 0.90)],
    )
    .await;
    let dr = dry_run(s, &f.requester, &mv, "production").await;
    assert_eq!(dr["deny"], json!([]), "dry run: {dr}");
    assert_eq!(dr["requiredApprovals"], 2);
    let p = request(s, &f.requester, &mv, "production", Some("ship it")).await;
    assert_status(&p, "PENDING");
    assert_eq!(p["requiredApprovals"], 2);
    assert_eq!(p["approverGroup"], Value::Null);
    assert_eq!(deny_of(&p), Vec::<String>::new());
    assert_eq!(p["policyDigest"], digest.as_str());
    assert_eq!(p["requestedBy"]["email"], REQUESTER);
    let pid = id(&p);

    // Every eligible approver gets one mail (the project's admin too), the requester none.
    let want = emails(&[BOB, CAROL, PROJECT_ADMIN]);
    smtp.wait_for(want.len(), MAIL_WAIT).await;
    outbox_settled(&env).await;
    let mails = smtp.messages();
    let got: BTreeSet<String> = mails.iter().map(|m| m.recipient()).collect();
    assert_eq!(got, want, "mail recipients");
    assert_eq!(mails.len(), want.len(), "one mail per approver");
    assert!(smtp.messages_to(REQUESTER).is_empty());
    let mut links = BTreeMap::new();
    for m in &mails {
        assert!(
            m.is_multipart_alternative(),
            "not multipart/alternative:\n{}",
            String::from_utf8_lossy(&m.raw)
        );
        assert_eq!(m.header_to(), m.recipient());
        assert_eq!(m.subject(), "Approval requested: churn v1 to production");
        let text = m.text();
        assert!(
            text.contains(REQUESTER) && text.contains("ship it"),
            "mail text:\n{text}"
        );
        let link = m.approval_link();
        assert!(
            link.starts_with(&s.url("/approve/")),
            "link {link} is not on this server"
        );
        links.insert(m.recipient(), link);
    }
    assert_eq!(
        links.values().collect::<BTreeSet<_>>().len(),
        links.len(),
        "approvers share a link"
    );

    // Bob opens his link twice, as a mail scanner would: nothing changes. Then he approves.
    let http = page_client();
    let bob_link = &links[BOB];
    let first =
        assert_db_unchanged(&env, "GET of an approval link", get_link(&http, bob_link)).await;
    let page = assert_db_unchanged(
        &env,
        "second GET of an approval link",
        get_link(&http, bob_link),
    )
    .await;
    for pg in [&first, &page] {
        assert_eq!(pg.status, 200, "{}", pg.body);
        assert!(pg.has_form(), "no decision form:\n{}", pg.body);
        for needle in ["churn", "production", REQUESTER, BOB, "auc", "transactions"] {
            assert!(
                pg.body.contains(needle),
                "the page does not show {needle}:\n{}",
                pg.body
            );
        }
    }
    let set_cookie = page
        .set_cookie
        .clone()
        .expect("the page sets the CSRF cookie");
    for attr in ["Path=/approve", "SameSite=Strict", "HttpOnly"] {
        assert!(
            set_cookie.contains(attr),
            "cookie {set_cookie} lacks {attr}"
        );
    }
    let (status, body) = post_link(
        &http,
        bob_link,
        &[
            ("decision", "approve"),
            ("comment", "looks good"),
            ("csrf", page.csrf.as_deref().unwrap()),
        ],
        page.cookie.as_deref(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<h1 id=\"outcome\">") && body.contains("PENDING"),
        "{body}"
    );
    let now = promotion(s, &env.admin, &pid).await;
    assert_status(&now, "PENDING");
    assert_eq!(now["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(now["approvals"][0]["approver"]["email"], BOB);
    assert_eq!(now["approvals"][0]["via"], "EMAIL");
    assert_eq!(now["approvals"][0]["authMethod"], "EMAIL_LINK");
    assert_eq!(now["approvals"][0]["decision"], "APPROVE");
    assert_eq!(now["approvals"][0]["comment"], "looks good");
    assert_eq!(stage_of(&env, &mv).await, None, "applied before the quorum");

    // Carol approves from her page: quorum, applied.
    let (status, body) = decide_via_link(&http, &links[CAROL], "approve", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("now in production") && body.contains("APPLIED"),
        "{body}"
    );
    let done = promotion(s, &f.requester, &pid).await;
    assert_status(&done, "APPLIED");
    assert_eq!(done["modelVersion"]["stage"], "production");
    assert_eq!(done["policyDigest"], digest.as_str());
    let by: BTreeSet<String> = done["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approver"]["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(by, emails(&[BOB, CAROL]));
    assert!(done["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["via"] == "EMAIL"));
    assert_eq!(stage_of(&env, &mv).await.as_deref(), Some("production"));
    assert_eq!(
        count(&sql, &format!("deployments WHERE model_version_id = '{mv}' AND stage = 'production' AND promotion_id = '{pid}'")).await,
        1
    );
    // The deployment is a lineage node downstream of the version.
    let d = s
        .gql_ok(
            &f.requester,
            "query($id: ID!) { lineage(node: {kind: MODEL_VERSION, id: $id}, direction: DOWNSTREAM, depth: 1) { nodes { kind id } } }",
            json!({ "id": mv }),
        )
        .await;
    let kinds: Vec<&str> = d["lineage"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"DEPLOYMENT"),
        "no DEPLOYMENT node downstream of the version: {d}"
    );

    // The audit trail, through GraphQL, and the whole chain re-computed.
    let trail = s
        .gql_ok(
            &env.admin,
            "query($id: ID!) { auditLog(subjectId: $id, first: 100) { edges { node { action actor after } } } }",
            json!({ "id": pid }),
        )
        .await;
    let actions: Vec<&str> = trail["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap())
        .collect();
    for a in ["promotion.request", "promotion.approve", "promotion.apply"] {
        assert!(
            actions.contains(&a),
            "no {a} in the promotion's audit trail: {actions:?}"
        );
    }
    let entries = verify_audit(&env).await;
    let applies = audit_of(&entries, "promotion.apply", &pid);
    assert_eq!(applies.len(), 1);
    assert_eq!(applies[0]["after"]["policy_digest"], digest.as_str());
    assert_eq!(audit_of(&entries, "promotion.approve", &pid).len(), 2);
    assert!(audit_of(&entries, "promotion.approve", &pid)
        .iter()
        .all(|e| e["after"]["via"] == "email"));
    assert_eq!(audit_of(&entries, "promotion.deny", &id(&denied)).len(), 1);
    assert_eq!(audit_of(&entries, "model_version.stage", &mv).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Default policies, each both ways

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_commit_goes_into_staging_but_no_further() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let dirty = code_commit(
        s,
        &env.admin,
        "https://git.example.com/churn.git",
        "dirty-1",
        true,
    )
    .await;
    let mv = trained_version(
        s,
        &f.requester,
        &f.project,
        &f.model,
        Some(&dirty),
        &[&f.train_ds],
        &[("auc", 0.9)],
    )
    .await;
    add_evaluation(
        s,
        &f.requester,
        &f.project,
        &mv,
        &[&f.eval_ds],
        &[("auc", 0.9)],
    )
    .await;
    // The same, clean: production is fine as far as commits go.
    let clean = f.evaluated_version(s, &[("auc", 0.9)]).await;
    assert_eq!(
        dry_run(s, &f.requester, &clean, "production").await["deny"],
        json!([])
    );

    let dr = dry_run(s, &f.requester, &mv, "production").await;
    assert!(
        dr["deny"].to_string().contains("uncommitted changes"),
        "{dr}"
    );
    let p = request(s, &f.requester, &mv, "production", None).await;
    assert_status(&p, "DENIED");
    let deny = deny_of(&p);
    assert!(
        deny.iter().any(|d| d.contains("uncommitted changes")
            && d.contains(&custody_tests::commit_sha("dirty-1"))),
        "{deny:?}"
    );

    // Staging is allowed.
    let st = request(s, &f.requester, &mv, "staging", None).await;
    assert_status(&st, "PENDING");
    assert_eq!(st["requiredApprovals"], 1);
    assert_eq!(deny_of(&st), Vec::<String>::new());
    let applied = approve(s, f.approver(BOB), &id(&st), None).await;
    assert_status(&applied, "APPLIED");
    assert_eq!(stage_of(&env, &mv).await.as_deref(), Some("staging"));

    // Any stage after staging counts as beyond it, e.g. a canary an admin adds.
    let d = s
        .gql_ok(
            &env.admin,
            "mutation { addStage(project: \"p\", name: \"canary\", position: 25, requiresApproval: true) { name position requiresApproval } }",
            json!({}),
        )
        .await;
    assert_eq!(d["addStage"]["position"], 25);
    let c = request(s, &f.requester, &mv, "canary", None).await;
    assert_status(&c, "DENIED");
    assert!(deny_of(&c)
        .iter()
        .any(|d| d.contains("uncommitted changes")));
    let p2 = request(s, &f.requester, &mv, "production", None).await;
    assert_status(&p2, "DENIED");
    assert_eq!(
        stage_of(&env, &mv).await.as_deref(),
        Some("staging"),
        "a denied promotion moved the version"
    );
    assert_eq!(deployments_of(&env, &mv).await, 1);
    verify_audit(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_training_data_needs_an_approver_from_the_privacy_group() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let _priya = s.issue_token(PRIYA, false).await;
    add_member_with_groups(s, &env.admin, &f.project, PRIYA, "APPROVER", &["privacy"]).await;
    let pii = dataset_version(
        s,
        &env.admin,
        &f.project,
        "transactions",
        "pii-1",
        &["training", "pii"],
    )
    .await;
    let mv = trained_version(
        s,
        &f.requester,
        &f.project,
        &f.model,
        Some(&f.clean_commit),
        &[&pii],
        &[("auc", 0.9)],
    )
    .await;
    let plain = f.version(s, &[("auc", 0.9)]).await;

    // Without pii: any approver.
    let dr = dry_run(s, &f.requester, &plain, "staging").await;
    assert_eq!(dr["approverGroup"], Value::Null, "{dr}");
    assert_eq!(dr["requiredApprovals"], 1);

    let p = request(s, &f.requester, &mv, "staging", None).await;
    assert_status(&p, "PENDING");
    assert_eq!(p["approverGroup"], "privacy");
    assert_eq!(p["requiredApprovals"], 1);
    let pid = id(&p);
    // Only the privacy approver is mailed: not Bob, not the project admin.
    let mail = smtp.wait_for_one_to(PRIYA, MAIL_WAIT).await;
    outbox_settled(&env).await;
    assert_eq!(mail_recipients(&env, &pid).await, emails(&[PRIYA]));
    assert_eq!(
        smtp.messages().len(),
        1,
        "approvers outside the group were mailed"
    );
    assert!(mail.text().contains("privacy"), "{}", mail.text());

    // Approvers outside the group are refused, the project admin included.
    let q = approve_mutation();
    env.assert_refused(
        f.approver(BOB),
        "FORBIDDEN",
        &q,
        json!({ "id": pid, "c": "ok" }),
    )
    .await;
    env.assert_refused(&env.admin, "FORBIDDEN", &q, json!({ "id": pid }))
        .await;
    assert_eq!(stage_of(&env, &mv).await, None);

    // Priya approves from her mail.
    let (status, body) = decide_via_link(
        &page_client(),
        &mail.approval_link(),
        "approve",
        "privacy review done",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let done = promotion(s, &env.admin, &pid).await;
    assert_status(&done, "APPLIED");
    assert_eq!(done["approvals"][0]["approver"]["email"], PRIYA);
    assert_eq!(done["approvals"][0]["via"], "EMAIL");
    assert_eq!(stage_of(&env, &mv).await.as_deref(), Some("staging"));

    // The version without pii: Bob may approve; it replaces the pii one in staging.
    let p2 = request(s, &f.requester, &plain, "staging", None).await;
    assert_eq!(p2["approverGroup"], Value::Null);
    assert_eq!(
        mail_recipients(&env, &id(&p2)).await,
        emails(&[BOB, PRIYA, PROJECT_ADMIN])
    );
    assert_status(
        &approve(s, f.approver(BOB), &id(&p2), None).await,
        "APPLIED",
    );
    assert_eq!(stage_of(&env, &plain).await.as_deref(), Some("staging"));
    assert_eq!(stage_of(&env, &mv).await.as_deref(), Some("archived"));
    verify_audit(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_worse_than_production_needs_one_more_approval() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL, DAVE]).await;
    let (bob, carol, dave) = (f.approver(BOB), f.approver(CAROL), f.approver(DAVE));

    let v1 = f.evaluated_version(s, &[("auc", 0.90)]).await;
    // Nothing in production yet: nothing to compare with.
    let p1 = request(s, &f.requester, &v1, "production", None).await;
    assert_eq!(p1["requiredApprovals"], 2);
    approve(s, bob, &id(&p1), None).await;
    assert_status(&approve(s, carol, &id(&p1), None).await, "APPLIED");

    let worse = f.evaluated_version(s, &[("auc", 0.85)]).await;
    let equal = f.evaluated_version(s, &[("auc", 0.90)]).await;
    let better = f.evaluated_version(s, &[("auc", 0.95)]).await;
    let dr = dry_run(s, &f.requester, &worse, "production").await;
    assert_eq!(dr["requiredApprovals"], 3, "{dr}");
    assert_eq!(dr["input"]["current"]["metrics"]["auc"], 0.90);
    assert_eq!(dr["input"]["current"]["id"], v1.as_str());
    assert_eq!(
        dry_run(s, &f.requester, &equal, "production").await["requiredApprovals"],
        2
    );

    let pw = request(s, &f.requester, &worse, "production", None).await;
    assert_status(&pw, "PENDING");
    assert_eq!(pw["requiredApprovals"], 3);
    let pb = request(s, &f.requester, &better, "production", None).await;
    assert_eq!(pb["requiredApprovals"], 2);

    approve(s, bob, &id(&pw), None).await;
    let two = approve(s, carol, &id(&pw), None).await;
    assert_status(&two, "PENDING");
    assert_eq!(
        stage_of(&env, &worse).await,
        None,
        "applied with 2 of 3 approvals"
    );
    assert_status(&approve(s, dave, &id(&pw), None).await, "APPLIED");
    assert_eq!(stage_of(&env, &worse).await.as_deref(), Some("production"));
    assert_eq!(
        stage_of(&env, &v1).await.as_deref(),
        Some("archived"),
        "the previous holder is archived"
    );
    let sql = env.sql().await;
    let replaced: Option<String> = sql
        .query_one(
            &format!(
                "SELECT replaced_version_id::text FROM deployments WHERE promotion_id = '{}'",
                id(&pw)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(replaced.as_deref(), Some(v1.as_str()));

    // The better candidate was asked under the old production version; it still applies with 2.
    approve(s, bob, &id(&pb), None).await;
    assert_status(&approve(s, carol, &id(&pb), None).await, "APPLIED");
    assert_eq!(stage_of(&env, &better).await.as_deref(), Some("production"));
    assert_eq!(stage_of(&env, &worse).await.as_deref(), Some("archived"));
    assert_eq!(
        count(&sql, "model_versions WHERE stage = 'production'").await,
        1
    );

    // Lower is better: a larger error is worse.
    create_model(s, &env.admin, &f.project, "eta", "rmse", false).await;
    let mk = |m: f64| {
        let f = &f;
        async move {
            let mv = trained_version(
                s,
                &f.requester,
                &f.project,
                "eta",
                Some(&f.clean_commit),
                &[&f.train_ds],
                &[("rmse", m)],
            )
            .await;
            add_evaluation(
                s,
                &f.requester,
                &f.project,
                &mv,
                &[&f.eval_ds],
                &[("rmse", m)],
            )
            .await;
            mv
        }
    };
    let e1 = mk(0.30).await;
    let pe = request(s, &f.requester, &e1, "production", None).await;
    approve(s, bob, &id(&pe), None).await;
    assert_status(&approve(s, carol, &id(&pe), None).await, "APPLIED");
    let e_worse = mk(0.40).await;
    let e_better = mk(0.20).await;
    assert_eq!(
        dry_run(s, &f.requester, &e_worse, "production").await["requiredApprovals"],
        3
    );
    assert_eq!(
        dry_run(s, &f.requester, &e_better, "production").await["requiredApprovals"],
        2
    );
    verify_audit(&env).await;
}

// ---------------------------------------------------------------------------------------------
// The gate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requester_never_approves_their_own_promotion_even_as_admin() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let pat = fixtures::member_token(s, &env.admin, &f.project, PAT, "ADMIN").await;
    let viewer =
        fixtures::member_token(s, &env.admin, &f.project, "vic@example.com", "VIEWER").await;
    let outsider = s.issue_token("oscar@example.com", false).await;
    let (q, r) = (approve_mutation(), reject_mutation());

    // Bob's approver role is (re)granted by Pat, so that it was not granted by the server admin:
    // an approver appointed by the requester never counts (separation of duties).
    add_member_with_groups(s, &pat, &f.project, BOB, "APPROVER", &["reviewers"]).await;

    // The server admin (and project admin) requests: they cannot approve nor reject it.
    let v1 = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p1 = request(s, &env.admin, &v1, "staging", None).await;
    assert_status(&p1, "PENDING");
    let p1id = id(&p1);
    outbox_settled(&env).await;
    assert_eq!(
        mail_recipients(&env, &p1id).await,
        emails(&[BOB]),
        "the requester, or Pat whom the requester appointed, was mailed"
    );
    env.assert_refused(&env.admin, "FORBIDDEN", &q, json!({ "id": p1id }))
        .await;
    env.assert_refused(
        &env.admin,
        "FORBIDDEN",
        &r,
        json!({ "id": p1id, "c": "no" }),
    )
    .await;
    env.assert_refused(&pat, "FORBIDDEN", &q, json!({ "id": p1id }))
        .await;
    // Nor can members without the approver role, nor outsiders.
    env.assert_refused(&f.requester, "FORBIDDEN", &q, json!({ "id": p1id }))
        .await;
    env.assert_refused(&viewer, "FORBIDDEN", &q, json!({ "id": p1id }))
        .await;
    env.assert_refused(&outsider, "FORBIDDEN", &q, json!({ "id": p1id }))
        .await;
    assert_eq!(stage_of(&env, &v1).await, None);
    assert_status(&approve(s, f.approver(BOB), &p1id, None).await, "APPLIED");

    // A project admin (not a server admin) requests: the same.
    let v2 = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p2 = request(s, &pat, &v2, "staging", None).await;
    let p2id = id(&p2);
    outbox_settled(&env).await;
    assert_eq!(
        mail_recipients(&env, &p2id).await,
        emails(&[PROJECT_ADMIN]),
        "Bob's role was last granted by Pat, the requester"
    );
    env.assert_refused(&pat, "FORBIDDEN", &q, json!({ "id": p2id }))
        .await;
    env.assert_refused(f.approver(BOB), "FORBIDDEN", &q, json!({ "id": p2id }))
        .await;
    assert_status(
        &approve(s, &env.admin, &p2id, Some("four eyes")).await,
        "APPLIED",
    );
    verify_audit(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_approvals_with_a_quorum_of_two_apply_exactly_once() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let names: Vec<String> = (1..=20)
        .map(|i| format!("approver{i:02}@example.com"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = Fixture::build(&env, &refs).await;
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p = request(s, &f.requester, &mv, "production", None).await;
    assert_eq!(p["requiredApprovals"], 2);
    let pid = id(&p);
    outbox_settled(&env).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(f.approvers.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (email, token) in f.approvers.clone() {
        let (http, url, barrier, pid) = (
            s.http.clone(),
            s.url("/graphql"),
            barrier.clone(),
            pid.clone(),
        );
        tasks.spawn(async move {
            barrier.wait().await;
            let r: Value = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "query": approve_mutation(), "variables": { "id": pid, "c": "parallel" } }))
                .send()
                .await
                .expect("POST /graphql")
                .json()
                .await
                .expect("a JSON answer");
            (email, r)
        });
    }
    let mut ok = Vec::new();
    let mut codes = BTreeMap::new();
    while let Some(res) = tasks.join_next().await {
        let (email, r) = res.unwrap();
        if r["data"]["approvePromotion"].is_object() {
            ok.push((
                email,
                r["data"]["approvePromotion"]["status"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ));
        } else {
            let code = r["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            *codes.entry(code).or_insert(0) += 1;
        }
    }
    let statuses: BTreeSet<&str> = ok.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        ok.len(),
        2,
        "successful approvals: {ok:?}, refusals: {codes:?}"
    );
    assert_eq!(
        statuses,
        ["APPLIED", "PENDING"].into_iter().collect(),
        "{ok:?}"
    );
    assert_eq!(
        codes,
        [("CONFLICT".to_string(), 18)].into_iter().collect(),
        "the late approvals"
    );

    let sql = env.sql().await;
    assert_eq!(deployments_of(&env, &mv).await, 1, "deployments");
    assert_eq!(
        count(&sql, &format!("approvals WHERE promotion_id = '{pid}'")).await,
        2
    );
    assert_eq!(stage_of(&env, &mv).await.as_deref(), Some("production"));
    let done = promotion(s, &env.admin, &pid).await;
    assert_status(&done, "APPLIED");
    let approvers: BTreeSet<String> = done["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approver"]["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(approvers, ok.iter().map(|(e, _)| e.clone()).collect());
    let entries = verify_audit(&env).await;
    assert_eq!(audit_of(&entries, "promotion.apply", &pid).len(), 1);
    assert_eq!(audit_of(&entries, "promotion.approve", &pid).len(), 2);
    assert_eq!(
        audit_of(&entries, "model_version.stage", &mv).len(),
        1,
        "the stage was set more than once"
    );

    // Later approvals: conflict, nothing changes.
    outbox_settled(&env).await;
    let late = f
        .approvers
        .iter()
        .find(|(e, _)| !approvers.contains(e))
        .unwrap();
    env.assert_refused(
        &late.1,
        "CONFLICT",
        &approve_mutation(),
        json!({ "id": pid }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_versions_racing_for_production_never_share_it() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let a = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let b = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let pa = id(&request(s, &f.requester, &a, "production", None).await);
    let pb = id(&request(s, &f.requester, &b, "production", None).await);
    approve(s, f.approver(BOB), &pa, None).await;
    approve(s, f.approver(BOB), &pb, None).await;
    let carol = f.approver(CAROL);
    let (ra, rb) = tokio::join!(approve(s, carol, &pa, None), approve(s, carol, &pb, None));
    assert_status(&ra, "APPLIED");
    assert_status(&rb, "APPLIED");
    let sql = env.sql().await;
    assert_eq!(
        count(&sql, "model_versions WHERE stage = 'production'").await,
        1,
        "two versions in production"
    );
    let stages = (stage_of(&env, &a).await, stage_of(&env, &b).await);
    assert!(
        stages == (Some("production".into()), Some("archived".into()))
            || stages == (Some("archived".into()), Some("production".into())),
        "{stages:?}"
    );
    // The later deployment replaced the earlier version.
    let rows = sql
        .query("SELECT model_version_id::text, replaced_version_id::text FROM deployments ORDER BY created_at, id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (first, second): (String, Option<String>) = (rows[0].get(0), rows[1].get(1));
    assert_eq!(
        second.as_deref(),
        Some(first.as_str()),
        "the second deployment must replace the first version"
    );
    verify_audit(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rejection_rejects_and_a_rejection_needs_a_reason() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL, DAVE]).await;
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p = request(s, &f.requester, &mv, "production", None).await;
    let pid = id(&p);
    outbox_settled(&env).await;
    let r = reject_mutation();
    for blank in ["", "   "] {
        env.assert_refused(
            f.approver(CAROL),
            "INVALID_INPUT",
            &r,
            json!({ "id": pid, "c": blank }),
        )
        .await;
    }
    approve(s, f.approver(BOB), &pid, None).await;
    let rejected = reject(s, f.approver(CAROL), &pid, "the holdout AUC is too low").await;
    assert_status(&rejected, "REJECTED");
    let decisions: Vec<(String, String)> = rejected["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["approver"]["email"].as_str().unwrap().into(),
                a["decision"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            (BOB.to_string(), "APPROVE".to_string()),
            (CAROL.to_string(), "REJECT".to_string())
        ]
    );
    assert_eq!(
        rejected["approvals"][1]["comment"],
        "the holdout AUC is too low"
    );
    assert_eq!(rejected["approvals"][1]["via"], "API");
    assert_eq!(rejected["approvals"][1]["authMethod"], "API_TOKEN");
    assert_eq!(stage_of(&env, &mv).await, None);
    assert_eq!(deployments_of(&env, &mv).await, 0);

    // It stays rejected: later decisions and cancellation conflict, and change nothing.
    outbox_settled(&env).await;
    env.assert_refused(
        f.approver(DAVE),
        "CONFLICT",
        &approve_mutation(),
        json!({ "id": pid }),
    )
    .await;
    env.assert_refused(
        f.approver(DAVE),
        "CONFLICT",
        &r,
        json!({ "id": pid, "c": "me too" }),
    )
    .await;
    env.assert_refused(
        &f.requester,
        "CONFLICT",
        &cancel_mutation(),
        json!({ "id": pid }),
    )
    .await;
    // A new request for the same version may follow.
    assert_status(
        &request(s, &f.requester, &mv, "production", Some("fixed")).await,
        "PENDING",
    );
    let entries = verify_audit(&env).await;
    assert_eq!(audit_of(&entries, "promotion.reject", &pid).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requester_or_an_admin_can_cancel_others_cannot() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let pat = fixtures::member_token(s, &env.admin, &f.project, PAT, "ADMIN").await;
    let other =
        fixtures::member_token(s, &env.admin, &f.project, "carl@example.com", "CONTRIBUTOR").await;
    let outsider = s.issue_token("oscar@example.com", false).await;
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let c = cancel_mutation();

    let p1 = id(&request(s, &f.requester, &mv, "staging", None).await);
    outbox_settled(&env).await;
    env.assert_refused(f.approver(BOB), "FORBIDDEN", &c, json!({ "id": p1 }))
        .await;
    env.assert_refused(&other, "FORBIDDEN", &c, json!({ "id": p1 }))
        .await;
    // An outsider cannot tell the promotion exists.
    env.assert_refused(&outsider, "NOT_FOUND", &c, json!({ "id": p1 }))
        .await;
    let cancelled = cancel(s, &f.requester, &p1).await;
    assert_status(&cancelled, "CANCELLED");
    outbox_settled(&env).await;
    env.assert_refused(
        f.approver(BOB),
        "CONFLICT",
        &approve_mutation(),
        json!({ "id": p1 }),
    )
    .await;
    env.assert_refused(&f.requester, "CONFLICT", &c, json!({ "id": p1 }))
        .await;
    assert_eq!(stage_of(&env, &mv).await, None);

    // A project admin cancels someone else's request; so does the server admin.
    let p2 = id(&request(s, &f.requester, &mv, "staging", None).await);
    assert_status(&cancel(s, &pat, &p2).await, "CANCELLED");
    let p3 = id(&request(s, &f.requester, &mv, "staging", None).await);
    assert_status(&cancel(s, &env.admin, &p3).await, "CANCELLED");
    assert_eq!(stage_of(&env, &mv).await, None);
    let entries = verify_audit(&env).await;
    let by: Vec<&str> = [&p1, &p2, &p3]
        .iter()
        .map(|p| {
            audit_of(&entries, "promotion.cancel", p)[0]["actor"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(by, vec![REQUESTER, PAT, PROJECT_ADMIN]);
}

/// The default bundle with requests expiring after `expiry`.
fn short_expiry_bundle(expiry: &str) -> tempfile::TempDir {
    let rego = default_policy();
    assert!(
        rego.contains("expires_in := \"168h\""),
        "policies/promotion.rego no longer says expires_in := \"168h\""
    );
    policy_dir(&[(
        "promotion.rego",
        &rego.replace(
            "expires_in := \"168h\"",
            &format!("expires_in := \"{expiry}\""),
        ),
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_promotion_never_applies_and_its_links_expire_with_it() {
    let dir = short_expiry_bundle("2s");
    let (env, smtp) = start_env_with_smtp(&["--policies", dir.path().to_str().unwrap()]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p = request(s, &f.requester, &mv, "production", None).await;
    assert_status(&p, "PENDING");
    assert_eq!(p["policyResult"]["expires_in"], "2s");
    assert_eq!(p["policyDigest"], bundle_digest(dir.path()).as_str());
    let pid = id(&p);

    // The expiry worker marks it EXPIRED.
    wait_until(
        "the promotion to expire",
        Duration::from_secs(30),
        || async { (promotion(s, &env.admin, &pid).await["status"] == "EXPIRED").then_some(()) },
    )
    .await;
    let link = smtp.wait_for_one_to(BOB, MAIL_WAIT).await.approval_link();
    outbox_settled(&env).await;

    env.assert_refused(
        f.approver(BOB),
        "CONFLICT",
        &approve_mutation(),
        json!({ "id": pid }),
    )
    .await;
    env.assert_refused(
        f.approver(CAROL),
        "CONFLICT",
        &reject_mutation(),
        json!({ "id": pid, "c": "late" }),
    )
    .await;
    env.assert_refused(
        &f.requester,
        "CONFLICT",
        &cancel_mutation(),
        json!({ "id": pid }),
    )
    .await;

    // The link expired with the request: a refusal page, nothing changed.
    let http = page_client();
    let page = assert_db_unchanged(&env, "GET of an expired link", get_link(&http, &link)).await;
    assert!(
        page.refused() && matches!(page.status, 403 | 409),
        "{} {}",
        page.status,
        page.body
    );
    assert!(!page.has_form());
    let fields = [
        ("decision", "approve"),
        ("comment", ""),
        ("csrf", "0123456789abcdef"),
    ];
    let (status, body) = assert_db_unchanged(
        &env,
        "POST to an expired link",
        post_link(&http, &link, &fields, Some("custody_csrf=0123456789abcdef")),
    )
    .await;
    assert!(
        body.contains("<h1 id=\"refused\">") && matches!(status, 403 | 409),
        "{status} {body}"
    );

    assert_eq!(stage_of(&env, &mv).await, None);
    assert_eq!(deployments_of(&env, &mv).await, 0);
    let entries = verify_audit(&env).await;
    let expired = audit_of(&entries, "promotion.expire", &pid);
    assert_eq!(expired.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_promotion_fails_closed_before_the_expiry_worker_runs() {
    // The worker (outbox and expiry) runs at start only: the request is overdue but still PENDING
    // in the database when decisions arrive.
    let dir = short_expiry_bundle("2s");
    let env = start_env(
        &[
            "--policies",
            dir.path().to_str().unwrap(),
            "--outbox-interval",
            "1h",
        ],
        &[],
    )
    .await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p = request(s, &f.requester, &mv, "staging", None).await;
    assert_status(&p, "PENDING");
    let pid = id(&p);
    // The link, from the queued mail.
    let sql = env.sql().await;
    let text: String = sql
        .query_one(
            "SELECT payload->>'text' FROM outbox WHERE kind = 'email' AND payload->>'to' = $1::text AND payload->>'about' = $2::text",
            &[&BOB, &pid],
        )
        .await
        .unwrap()
        .get(0);
    let link = custody_tests::smtp::find_approval_link(&text).expect("a link in the queued mail");
    let link = format!("{}{}", s.url(""), path_of(&link));
    let expires_at = chrono_like_parse(p["expiresAt"].as_str().unwrap());
    wait_until(
        "the request's expiry time to pass",
        Duration::from_secs(30),
        || async { (now_millis() > expires_at + 1000).then_some(()) },
    )
    .await;
    env.assert_refused(
        f.approver(BOB),
        "CONFLICT",
        &approve_mutation(),
        json!({ "id": pid }),
    )
    .await;
    let http = page_client();
    let page = assert_db_unchanged(&env, "GET of an overdue link", get_link(&http, &link)).await;
    assert!(
        page.refused() && !page.has_form(),
        "{} {}",
        page.status,
        page.body
    );
    assert_eq!(stage_of(&env, &mv).await, None);
    assert_eq!(deployments_of(&env, &mv).await, 0);
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp like `2026-11-26T20:13:01.123456Z`
/// or with a `+00:00` offset.
fn chrono_like_parse(ts: &str) -> i64 {
    let ts = ts.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = ts
        .split_once('T')
        .unwrap_or_else(|| panic!("not RFC 3339: {ts}"));
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)])
        .parse()
        .unwrap();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms
}

// ---------------------------------------------------------------------------------------------
// Approve-by-email links

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_links_are_single_use_bound_to_their_approver_and_tamper_proof() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL, DAVE]).await;
    // A production version to beat, so that a worse candidate needs three approvals.
    let v0 = f.evaluated_version(s, &[("auc", 0.95)]).await;
    let p0 = id(&request(s, &f.requester, &v0, "production", None).await);
    approve(s, f.approver(BOB), &p0, None).await;
    assert_status(&approve(s, f.approver(CAROL), &p0, None).await, "APPLIED");
    let mv = f.evaluated_version(s, &[("auc", 0.90)]).await;
    let p = request(s, &f.requester, &mv, "production", None).await;
    assert_eq!(p["requiredApprovals"], 3);
    let pid = id(&p);
    // Four mails for each request (Bob, Carol, Dave, the project admin).
    smtp.wait_for(8, MAIL_WAIT).await;
    outbox_settled(&env).await;
    let link_of = |who: &str| -> String {
        let mails = smtp.messages_to(who);
        assert_eq!(mails.len(), 2, "mails to {who}");
        let mine: Vec<String> = mails
            .iter()
            .filter(|m| m.subject() == "Approval requested: churn v2 to production")
            .map(|m| m.approval_link())
            .collect();
        assert_eq!(mine.len(), 1, "mails to {who} about version 2");
        mine[0].clone()
    };
    let (bob, carol, dave, admin) = (
        link_of(BOB),
        link_of(CAROL),
        link_of(DAVE),
        link_of(PROJECT_ADMIN),
    );
    let http = page_client();

    // GET twice (a scanner, then the person): shows the page, changes nothing.
    let scanned = assert_db_unchanged(&env, "scanner GET", get_link(&http, &bob)).await;
    let page = assert_db_unchanged(&env, "second GET", get_link(&http, &bob)).await;
    assert_eq!((scanned.status, page.status), (200, 200));
    assert!(
        page.has_form() && page.body.contains("needs 3 approval"),
        "{}",
        page.body
    );
    let csrf = page.csrf.clone().expect("csrf field");
    let cookie = page.cookie.clone().expect("csrf cookie");
    assert_eq!(cookie, format!("custody_csrf={csrf}"));

    // CSRF: no cookie, a wrong value, an empty value, no field: refused, nothing changed.
    let with_csrf = |v: &str| {
        vec![
            ("decision", "approve".to_string()),
            ("comment", "ok".into()),
            ("csrf", v.into()),
        ]
    };
    let cases: Vec<CsrfCase> = vec![
        ("no cookie", with_csrf(&csrf), None),
        (
            "wrong csrf",
            with_csrf("00000000000000000000000000000000"),
            Some(cookie.clone()),
        ),
        ("empty csrf", with_csrf(""), Some(cookie.clone())),
        (
            "no csrf field",
            vec![("decision", "approve".into()), ("comment", "ok".into())],
            Some(cookie.clone()),
        ),
    ];
    for (what, fields, cookie) in &cases {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = assert_db_unchanged(
            &env,
            what,
            post_link(&http, &bob, &fields, cookie.as_deref()),
        )
        .await;
        assert_eq!(status, 403, "{what}: {body}");
        assert!(
            body.contains("<h1 id=\"refused\">"),
            "{what}: no refusal page:\n{body}"
        );
    }
    // An unknown decision.
    let (status, body) = assert_db_unchanged(
        &env,
        "unknown decision",
        post_link(
            &http,
            &bob,
            &[("decision", "maybe"), ("csrf", &csrf)],
            Some(&cookie),
        ),
    )
    .await;
    assert!(
        status == 400 && body.contains("<h1 id=\"refused\">"),
        "{status} {body}"
    );

    // Tampered links: refused, GET and POST alike.
    let tampered = tamper_signature(&bob);
    assert_ne!(tampered, bob);
    for bad in [
        tampered.clone(),
        s.url("/approve/not-a-token"),
        format!("{bob}x"),
    ] {
        let pg = assert_db_unchanged(&env, "GET of a tampered link", get_link(&http, &bad)).await;
        assert!(
            pg.refused() && pg.status == 403 && !pg.has_form(),
            "{bad}: {} {}",
            pg.status,
            pg.body
        );
        let fields = [
            ("decision", "approve"),
            ("comment", "x"),
            ("csrf", csrf.as_str()),
        ];
        let (status, body) = assert_db_unchanged(
            &env,
            "POST to a tampered link",
            post_link(&http, &bad, &fields, Some(&cookie)),
        )
        .await;
        assert!(
            status == 403 && body.contains("<h1 id=\"refused\">"),
            "{bad}: {status} {body}"
        );
    }

    // Bob decides from his page (1 of 3).
    let fields = [
        ("decision", "approve"),
        ("comment", "fine by me"),
        ("csrf", csrf.as_str()),
    ];
    let (status, body) = post_link(&http, &bob, &fields, Some(&cookie)).await;
    assert!(
        status == 200 && body.contains("<h1 id=\"outcome\">"),
        "{status} {body}"
    );
    // Reusing his link: refused, nothing changed; the page no longer offers the form.
    let (status, body) = assert_db_unchanged(
        &env,
        "reused link",
        post_link(&http, &bob, &fields, Some(&cookie)),
    )
    .await;
    assert!(
        status == 409 && body.contains("<h1 id=\"refused\">"),
        "{status} {body}"
    );
    let again = assert_db_unchanged(&env, "GET of a used link", get_link(&http, &bob)).await;
    assert!(
        !again.has_form(),
        "a used link still offers the form:\n{}",
        again.body
    );

    // Carol decides through the API; her link, always deciding as Carol, is then refused.
    approve(s, f.approver(CAROL), &pid, Some("via the API")).await;
    outbox_settled(&env).await;
    let carol_page = get_link(&http, &carol).await;
    assert!(
        !carol_page.has_form() && carol_page.body.contains("id=\"decided\""),
        "a link whose approver already decided still offers the form:\n{}",
        carol_page.body
    );
    // The page offers no form; a hand-made POST that passes the CSRF check (the page's own
    // cookie value as the field) must still be refused.
    let carol_cookie = carol_page
        .cookie
        .clone()
        .expect("the page sets its CSRF cookie");
    let carol_csrf = carol_cookie
        .split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap();
    let fields = [
        ("decision", "approve"),
        ("comment", "twice?"),
        ("csrf", carol_csrf.as_str()),
    ];
    let (status, body) = assert_db_unchanged(
        &env,
        "Carol's link after her API decision",
        post_link(&http, &carol, &fields, Some(&carol_cookie)),
    )
    .await;
    assert!(
        status == 409 && body.contains("<h1 id=\"refused\">"),
        "{status} {body}"
    );
    let now = promotion(s, &env.admin, &pid).await;
    assert_status(&now, "PENDING");
    let decided: Vec<(String, String)> = now["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["approver"]["email"].as_str().unwrap().into(),
                a["via"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        vec![
            (BOB.to_string(), "EMAIL".to_string()),
            (CAROL.to_string(), "API".to_string())
        ]
    );
    assert_eq!(now["approvals"][0]["comment"], "fine by me");

    // Dave's link decides as Dave: the quorum.
    let (status, body) = decide_via_link(&http, &dave, "approve", "").await;
    assert!(status == 200 && body.contains("APPLIED"), "{status} {body}");
    assert_eq!(stage_of(&env, &mv).await.as_deref(), Some("production"));
    assert_eq!(stage_of(&env, &v0).await.as_deref(), Some("archived"));
    outbox_settled(&env).await;

    // The admin's link: the promotion no longer waits. Refused, nothing changed.
    let pg = assert_db_unchanged(&env, "GET of a stale link", get_link(&http, &admin)).await;
    assert!(
        pg.refused() && pg.status == 409 && !pg.has_form(),
        "{} {}",
        pg.status,
        pg.body
    );
    let fields = [
        ("decision", "reject"),
        ("comment", "too late"),
        ("csrf", csrf.as_str()),
    ];
    let (status, body) = assert_db_unchanged(
        &env,
        "POST to a stale link",
        post_link(&http, &admin, &fields, Some(&cookie)),
    )
    .await;
    assert!(
        status == 409 && body.contains("<h1 id=\"refused\">"),
        "{status} {body}"
    );
    let done = promotion(s, &env.admin, &pid).await;
    assert_status(&done, "APPLIED");
    assert_eq!(done["approvals"].as_array().unwrap().len(), 3);
    verify_audit(&env).await;
}

// ---------------------------------------------------------------------------------------------
// Outbox and webhooks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_retries_until_the_smtp_server_is_up_and_delivers_once() {
    let port = free_port().unwrap();
    let url = format!("smtp://127.0.0.1:{port}");
    let env = start_env(&FAST_OUTBOX, &[("CUSTODY_SMTP_URL", url.as_str())]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let pid = id(&request(s, &f.requester, &mv, "production", None).await);
    let want = emails(&[BOB, CAROL, PROJECT_ADMIN]);
    assert_eq!(mail_recipients(&env, &pid).await, want);

    // Nobody listens: every mail fails, is kept with its error and retried later.
    let sql = env.sql().await;
    wait_until("every mail to have failed once", Duration::from_secs(30), || async {
        let failed = count(&sql, "outbox WHERE kind = 'email' AND attempts > 0 AND last_error IS NOT NULL AND delivered_at IS NULL").await;
        (failed == 3).then_some(())
    })
    .await;
    assert_eq!(
        count(
            &sql,
            "outbox WHERE kind = 'email' AND delivered_at IS NOT NULL"
        )
        .await,
        0
    );
    let errors: Vec<String> = sql
        .query("SELECT last_error FROM outbox WHERE kind = 'email'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(errors.iter().all(|e| !e.is_empty()), "{errors:?}");

    // The SMTP server comes up on that port: the mails arrive (backoff 2 s, 4 s, 8 s, …).
    let smtp = SmtpServer::start_on(port)
        .await
        .unwrap_or_else(|e| panic!("binding the SMTP server to port {port}: {e}"));
    smtp.wait_for(3, Duration::from_secs(60)).await;
    wait_until(
        "every mail row to be marked delivered",
        Duration::from_secs(30),
        || async {
            (count(&sql, "outbox WHERE kind = 'email' AND delivered_at IS NULL").await == 0)
                .then_some(())
        },
    )
    .await;
    // Several more worker rounds (one a second): nothing is sent twice. Waiting is the behaviour
    // under test here, an absence that no condition could signal earlier.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mails {
        *per.entry(m.recipient()).or_default() += 1;
    }
    assert_eq!(
        per,
        want.iter().map(|e| (e.clone(), 1)).collect(),
        "mails per recipient"
    );
    assert_eq!(
        count(&sql, "outbox WHERE kind = 'email' AND attempts >= 2").await,
        3,
        "delivered without a retry?"
    );
    let ids: BTreeSet<String> = mails.iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), 3, "Message-IDs are not distinct: {ids:?}");
    for m in &mails {
        assert!(m.approval_link().contains("/approve/"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_with_the_secret_and_sent_in_order() {
    let receiver = WebhookReceiver::start().await;
    let env = start_env(&FAST_OUTBOX, &[ALLOW_RECEIVER]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let hook_url = receiver.url("/hooks/custody");
    let add =
        "mutation($p: String!, $u: String!) { addWebhook(project: $p, url: $u) { id url secret } }";
    env.assert_refused(
        f.approver(BOB),
        "FORBIDDEN",
        add,
        json!({ "p": f.project, "u": hook_url }),
    )
    .await;
    env.assert_refused(
        &env.admin,
        "INVALID_INPUT",
        add,
        json!({ "p": f.project, "u": "ftp://example.com/x" }),
    )
    .await;
    let hook = s
        .gql_ok(&env.admin, add, json!({ "p": f.project, "u": hook_url }))
        .await["addWebhook"]
        .clone();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "a short secret: {secret}");
    assert_eq!(hook["url"], hook_url.as_str());
    let digest = bundle_digest(&policies_dir());

    let v1 = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p1 = id(&request(s, &f.requester, &v1, "production", None).await);
    approve(s, f.approver(BOB), &p1, None).await;
    assert_status(&approve(s, f.approver(CAROL), &p1, None).await, "APPLIED");
    let v2 = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p2 = id(&request(s, &f.requester, &v2, "staging", None).await);
    assert_status(
        &reject(s, f.approver(CAROL), &p2, "not now").await,
        "REJECTED",
    );

    let expected = [
        ("promotion.requested", &p1),
        ("promotion.approved", &p1),
        ("promotion.applied", &p1),
        ("promotion.requested", &p2),
        ("promotion.rejected", &p2),
    ];
    let calls = receiver
        .wait_for_accepted(expected.len(), Duration::from_secs(30))
        .await;
    outbox_settled(&env).await;
    let calls_now = receiver.calls();
    assert_eq!(
        calls_now.len(),
        expected.len(),
        "unexpected calls: {:?}",
        calls_now.iter().map(|c| c.event()).collect::<Vec<_>>()
    );
    let got: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            (
                c.event(),
                c.json()["data"]["promotion_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(e, p)| (e.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, want, "webhook events in order");
    let mut deliveries = BTreeSet::new();
    for c in &calls {
        assert_eq!(c.method, "POST");
        assert_eq!(c.path, "/hooks/custody");
        assert!(
            c.header("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "{:?}",
            c.headers
        );
        assert!(
            c.signature_valid(&secret),
            "bad signature on {}: {:?}",
            c.event(),
            c.header("x-custody-signature")
        );
        assert!(
            !c.signature_valid(&"0".repeat(64)),
            "a signature that any secret verifies"
        );
        let mut forged = c.body.clone();
        forged.push(b' ');
        assert!(!verify_signature(
            &secret,
            &forged,
            c.header("x-custody-signature").unwrap()
        ));
        let body = c.json();
        assert_eq!(
            body["event"],
            c.event().as_str(),
            "x-custody-event differs from the body's event"
        );
        assert_eq!(body["data"]["policy_digest"], digest.as_str());
        let delivery = c
            .header("x-custody-delivery")
            .expect("x-custody-delivery")
            .to_string();
        assert!(
            uuid::Uuid::parse_str(&delivery).is_ok(),
            "delivery id {delivery}"
        );
        assert!(deliveries.insert(delivery), "a delivery id repeats");
    }
    assert_eq!(calls[2].json()["data"]["status"], "applied");
    assert_eq!(calls[2].json()["data"]["model_version_id"], v1.as_str());
    assert_eq!(calls[4].json()["data"]["status"], "rejected");
    verify_audit(&env).await;
}

// ---------------------------------------------------------------------------------------------
// Policy bundles

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_does_not_load_stops_start_up_with_the_rego_error() {
    let dir = policy_dir(&[(
        "broken.rego",
        "package custody.promotion\n\nimport rego.v1\n\ndeny contains msg if {\n\tmsg := \"unterminated\"\n",
    )]);
    let db = TestDb::create().await;
    let work = tmp_dir("custody-test-broken-");
    let port = free_port().unwrap();
    let bin = tokio::task::spawn_blocking(server_bin).await.unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(work.path())
        .arg("--policies")
        .arg(dir.path())
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .env_remove("CUSTODY_POLICIES")
        .env_remove("CUSTODY_SMTP_URL")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("`serve` with a broken bundle did not exit within 60 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "`serve` started with a broken bundle; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("broken.rego"),
        "stderr does not name the file:\n{stderr}"
    );
    assert!(
        stderr.contains("does not load"),
        "stderr does not give the Rego error:\n{stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "the server listened before failing:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_fails_at_evaluation_denies_with_the_error() {
    let dir = policy_dir(&[(
        "promotion.rego",
        "package custody.promotion\n\nimport rego.v1\n\nrequired_approvals := \"two\"\n",
    )]);
    let env = start_env(&["--policies", dir.path().to_str().unwrap()], &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let dr = dry_run(s, &f.requester, &mv, "staging").await;
    assert!(
        !dr["deny"].as_array().unwrap().is_empty(),
        "the dry run allows: {dr}"
    );
    for stage in ["development", "staging", "production"] {
        let p = request(s, &f.requester, &mv, stage, None).await;
        assert_status(&p, "DENIED");
        let err = p["policyResult"]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no policyResult.error: {p}"));
        assert!(
            err.contains("required_approvals"),
            "the error does not say what failed: {err}"
        );
        assert!(!deny_of(&p).is_empty());
        assert_eq!(p["policyDigest"], bundle_digest(dir.path()).as_str());
    }
    assert_eq!(
        stage_of(&env, &mv).await,
        None,
        "a failing policy let a version move"
    );
    let sql = env.sql().await;
    assert_eq!(
        count(&sql, "outbox").await,
        0,
        "a denied request notified someone"
    );
    assert_eq!(count(&sql, "approval_links").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_changed_while_pending_is_evaluated_again_and_its_deny_rejects() {
    let mut env = start_env(&FAST_OUTBOX, &[]).await;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let mv = f.evaluated_version(&env.server, &[("auc", 0.9)]).await;
    let p = request(&env.server, &f.requester, &mv, "production", None).await;
    assert_status(&p, "PENDING");
    assert_eq!(p["policyDigest"], bundle_digest(&policies_dir()).as_str());
    let pid = id(&p);
    approve(&env.server, f.approver(BOB), &pid, None).await;

    let frozen = policy_dir(&[
        ("promotion.rego", &default_policy()),
        (
            "freeze.rego",
            "package custody.promotion\n\nimport rego.v1\n\ndeny contains \"frozen\" if true\n",
        ),
    ]);
    env.server.extra_args.extend([
        "--policies".to_string(),
        frozen.path().to_str().unwrap().to_string(),
    ]);
    env.server.restart().await;
    let s = &env.server;

    let after = approve(s, f.approver(CAROL), &pid, None).await;
    assert_status(&after, "REJECTED");
    assert_eq!(
        after["policyDigest"],
        bundle_digest(frozen.path()).as_str(),
        "the new decision is not recorded"
    );
    assert_eq!(deny_of(&after), vec!["frozen".to_string()]);
    assert_eq!(after["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(
        stage_of(&env, &mv).await,
        None,
        "applied under a bundle that denies"
    );
    assert_eq!(deployments_of(&env, &mv).await, 0);
    let entries = verify_audit(&env).await;
    assert!(audit_of(&entries, "promotion.apply", &pid).is_empty());
    let rejects = audit_of(&entries, "promotion.reject", &pid);
    assert!(
        rejects.iter().any(|e| e["after"]["status"] == "rejected"),
        "{rejects:?}"
    );
    // New requests are denied outright.
    let again = request(s, &f.requester, &mv, "production", None).await;
    assert_status(&again, "DENIED");
    assert_eq!(deny_of(&again), vec!["frozen".to_string()]);
}

async fn policy_test(dir: Option<&std::path::Path>) -> std::process::Output {
    let bin = tokio::task::spawn_blocking(server_bin).await.unwrap();
    let cwd = tmp_dir("custody-test-policy-cli-");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["policy", "test"])
        .current_dir(cwd.path())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    if let Some(d) = dir {
        cmd.arg(d);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("`policy test` hung")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_test_passes_on_the_default_bundle_and_names_a_failing_test() {
    for dir in [Some(policies_dir()), None] {
        let out = policy_test(dir.as_deref()).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "policy test {dir:?}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("PASS data.custody.promotion_test.test_"),
            "{stdout}"
        );
        assert!(stdout.contains(" 0 failed"), "{stdout}");
    }
    let failing = policy_dir(&[
        ("promotion.rego", &default_policy()),
        (
            "extra_test.rego",
            "package custody.extra_test\n\nimport rego.v1\n\nimport data.custody.promotion\n\n\
             test_staging_is_free if {\n\tpromotion.required_approvals == 0 with input as {\"target_stage\": \"staging\", \"target_stage_requires_approval\": true}\n}\n\n\
             test_arithmetic if {\n\t1 + 1 == 2\n}\n",
        ),
    ]);
    let out = policy_test(Some(failing.path())).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FAIL data.custody.extra_test.test_staging_is_free"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS data.custody.extra_test.test_arithmetic"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("FAIL data.custody.extra_test.test_arithmetic"),
        "{stdout}"
    );
}

/// A bundle that changes while a request waits and now names an approver group: approvals given
/// by members outside that group stop counting, and the newly eligible approvers are mailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_bundle_naming_a_group_counts_only_that_groups_approvals() {
    let mut env = start_env(&FAST_OUTBOX, &[]).await;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let priya = env.server.issue_token(PRIYA, false).await;
    add_member_with_groups(
        &env.server,
        &env.admin,
        &f.project,
        PRIYA,
        "APPROVER",
        &["privacy"],
    )
    .await;
    let mv = f.evaluated_version(&env.server, &[("auc", 0.9)]).await;
    let p = request(&env.server, &f.requester, &mv, "production", None).await;
    assert_status(&p, "PENDING");
    assert_eq!(p["approverGroup"], Value::Null);
    let pid = id(&p);
    approve(&env.server, f.approver(BOB), &pid, None).await;
    outbox_settled(&env).await;
    assert!(!mail_recipients(&env, &pid).await.is_empty());

    let _dir = restart_requiring_the_privacy_group(&mut env.server).await;
    let s = &env.server;

    // Carol's approval would have been the second; under the new rules neither counts.
    let after = approve(s, f.approver(CAROL), &pid, None).await;
    assert_status(&after, "PENDING");
    assert_eq!(after["approverGroup"], "privacy");
    assert_eq!(after["requiredApprovals"], 2);
    assert_eq!(stage_of(&env, &mv).await, None);
    outbox_settled(&env).await;
    assert!(
        mail_recipients(&env, &pid).await.contains(PRIYA),
        "the newly eligible approver got no link"
    );

    // Priya's approval is the first that counts: still one short.
    let after = approve(s, &priya, &pid, None).await;
    assert_status(&after, "PENDING");
    assert_eq!(stage_of(&env, &mv).await, None);
    assert_eq!(deployments_of(&env, &mv).await, 0);
}
