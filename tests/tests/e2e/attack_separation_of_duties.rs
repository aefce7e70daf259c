//! Issue 9 §2, played as the attacker over HTTP with real tokens: separation of duties that holds
//! against a project admin (an approver the requester appointed never counts, through the API, the
//! mailed link or a self re-grant), nobody empties a gated stage alone, the audited and mailed
//! emergency path, audited rechecks, and the read-only auditor. Every refusal is checked to have
//! changed nothing (a snapshot of every table).

use std::collections::BTreeSet;
use std::time::Duration;

use custody_tests::db::count;
use custody_tests::fixtures::{self, id};
use custody_tests::governance::*;
use custody_tests::server::Server;
use custody_tests::TestEnv;
use serde_json::{json, Value};

const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const PRIYA: &str = "priya@example.com";
const MALLORY: &str = "mallory@example.com";
/// A second address Mallory controls.
const MALLORY2: &str = "mallory.alt@example.net";
const MALLORY3: &str = "mallory.third@example.net";

const MAIL_WAIT: Duration = Duration::from_secs(30);

const EMERGENCY: &str = "mutation($v: ID!, $r: String!) {
    emergencyArchive(modelVersionId: $v, reason: $r) { id version stage } }";

fn emails(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Recipients of the mails queued about `about` (a promotion or a model version).
async fn mail_recipients(env: &TestEnv, about: &str) -> BTreeSet<String> {
    env.sql()
        .await
        .query(
            "SELECT payload->>'to' FROM outbox WHERE kind = 'email' AND payload->>'about' = $1::text",
            &[&about],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Adds (or changes) a member as `token`; answers the user's id.
async fn grant(
    s: &Server,
    token: &str,
    project: &str,
    email: &str,
    role: &str,
    groups: &[&str],
) -> String {
    custody_tests::fixtures::ensure_account(s, email).await;
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $e: String!, $r: Role!, $g: [String!]) {
               addMember(project: $p, email: $e, role: $r, groups: $g) { role user { id email } } }",
            json!({ "p": project, "e": email, "r": role, "g": groups }),
        )
        .await;
    id(&d["addMember"]["user"])
}

/// The refusal of `query` as (code, message); asserts that the database did not change.
async fn refusal(env: &TestEnv, token: &str, query: &str, variables: Value) -> (String, String) {
    let r = assert_db_unchanged(env, query, env.server.gql(token, query, variables.clone())).await;
    let error = &r["errors"][0];
    assert!(
        error.is_object()
            && (r["data"].is_null()
                || r["data"]
                    .as_object()
                    .is_some_and(|d| d.values().all(Value::is_null))),
        "expected a refusal of {query} with {variables}, got {r}"
    );
    (
        error["extensions"]["code"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        error["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn assert_status(p: &Value, status: &str) {
    assert_eq!(
        p["status"],
        status,
        "promotion: {}",
        serde_json::to_string_pretty(p).unwrap()
    );
}

async fn approvals_of(env: &TestEnv, promotion: &str) -> i64 {
    count(
        &env.sql().await,
        &format!("approvals WHERE promotion_id = '{promotion}'"),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// An approver the requester appointed never counts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_admin_cannot_approve_their_own_promotion_through_an_approver_they_appointed() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    // Bob and Carol are approvers granted by the server admin; Mallory is a project admin.
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let mallory = fixtures::member_token(s, &env.admin, &f.project, MALLORY, "ADMIN").await;

    // Mallory adds a second address she controls as APPROVER: the grant is recorded and audited.
    let m2 = s.issue_token(MALLORY2, false).await;
    let m2_id = grant(s, &mallory, &f.project, MALLORY2, "APPROVER", &[]).await;
    let sql = env.sql().await;
    let row = sql
        .query_one(
            "SELECT u.email FROM memberships m JOIN users u ON u.id = m.granted_by
              WHERE m.user_id = $1::text::uuid",
            &[&m2_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), MALLORY);
    let entries = verify_audit(&env).await;
    let adds = audit_of(&entries, "member.add", &m2_id);
    assert_eq!(adds.len(), 1);
    assert_eq!(adds[0]["after"]["granted_by"], MALLORY, "{}", adds[0]);
    assert_eq!(adds[0]["after"]["role"], "approver");

    // Mallory requests staging for a version: the second address gets no approval mail.
    let mv = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p = request(s, &mallory, &mv, "staging", Some("trust me")).await;
    assert_status(&p, "PENDING");
    assert_eq!(p["requiredApprovals"], 1);
    let pid = id(&p);
    outbox_settled(&env).await;
    assert_eq!(
        mail_recipients(&env, &pid).await,
        emails(&[BOB, CAROL, PROJECT_ADMIN]),
        "only approvers Mallory did not appoint are mailed"
    );
    let bob_mail = smtp.wait_for_one_to(BOB, MAIL_WAIT).await;
    smtp.wait_for_one_to(CAROL, MAIL_WAIT).await;
    assert!(
        smtp.messages_to(MALLORY2).is_empty(),
        "the appointee was mailed"
    );
    assert!(
        smtp.messages_to(MALLORY).is_empty(),
        "the requester was mailed"
    );
    // Its policy saw who could approve and who appointed them.
    let input = &dry_run(s, &mallory, &mv, "production").await["input"];
    let approvers: Vec<&str> = input["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(approvers, [PROJECT_ADMIN, BOB, CAROL], "{input}");
    assert_eq!(input["approvers"][1]["granted_by"], PROJECT_ADMIN);
    assert_eq!(input["approvers"][1]["role"], "approver");
    assert_eq!(input["approvals"], json!([]));

    // The appointee approves through the API: FORBIDDEN, saying why; nothing changed.
    for mutation in [approve_mutation(), reject_mutation()] {
        let (code, message) =
            refusal(&env, &m2, &mutation, json!({ "id": pid, "c": "lgtm" })).await;
        assert_eq!(code, "FORBIDDEN", "{message}");
        assert!(
            message.contains("granted by the requester (mallory@example.com)")
                && message.contains("separation of duties"),
            "{message}"
        );
    }

    // A third address Mallory appoints as ADMIN re-grants itself: the granter stays Mallory.
    let m3 = s.issue_token(MALLORY3, false).await;
    grant(s, &mallory, &f.project, MALLORY3, "ADMIN", &[]).await;
    let m3_id = grant(s, &m3, &f.project, MALLORY3, "ADMIN", &["privacy"]).await;
    let entries = verify_audit(&env).await;
    let regrant = audit_of(&entries, "member.add", &m3_id);
    assert_eq!(regrant.len(), 2);
    assert_eq!(regrant[1]["before"]["granted_by"], MALLORY);
    assert_eq!(regrant[1]["after"]["granted_by"], MALLORY, "{}", regrant[1]);
    let (code, message) = refusal(&env, &m3, &approve_mutation(), json!({ "id": pid })).await;
    assert_eq!(code, "FORBIDDEN", "{message}");
    assert!(message.contains("granted by the requester"), "{message}");

    // Mallory changes Bob's groups after his link was mailed: his role is now "last changed by
    // the requester", and the mailed link refuses too (page and POST), changing nothing.
    grant(s, &mallory, &f.project, BOB, "APPROVER", &["reviewers"]).await;
    let link = bob_mail.approval_link();
    let http = page_client();
    let page = get_link(&http, &link).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.refused() && !page.has_form(), "{}", page.body);
    assert!(
        page.body.contains("granted by the requester"),
        "{}",
        page.body
    );
    let (status, body) = assert_db_unchanged(
        &env,
        "POST of the link",
        post_link(
            &http,
            &link,
            &[("decision", "approve"), ("comment", "ok"), ("csrf", "x")],
            Some("custody_csrf=x"),
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("granted by the requester"), "{body}");
    let (code, _) = refusal(
        &env,
        f.approver(BOB),
        &approve_mutation(),
        json!({ "id": pid }),
    )
    .await;
    assert_eq!(code, "FORBIDDEN");

    // Still pending, no approval recorded, the version did not move.
    assert_status(&promotion(s, &env.admin, &pid).await, "PENDING");
    assert_eq!(approvals_of(&env, &pid).await, 0);
    assert_eq!(stage_of(&env, &mv).await, None);

    // An approver granted by someone else still counts: Carol's approval applies it.
    let done = approve(s, f.approver(CAROL), &pid, Some("reviewed")).await;
    assert_status(&done, "APPLIED");
    assert_eq!(stage_of(&env, &mv).await.as_deref(), Some("staging"));
    verify_audit(&env).await;
}

// ---------------------------------------------------------------------------------------------
// Nobody empties a gated stage alone

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contributor_cannot_empty_production_or_staging_alone() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let (bob, carol) = (f.approver(BOB), f.approver(CAROL));

    let v1 = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p1 = request(s, &f.requester, &v1, "production", None).await;
    approve(s, bob, &id(&p1), None).await;
    assert_status(&approve(s, carol, &id(&p1), None).await, "APPLIED");
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("production"));

    // The policy sees where the version is now.
    let dr = dry_run(s, &f.requester, &v1, "archived").await;
    assert_eq!(dr["input"]["current_stage"], "production", "{dr}");
    assert_eq!(dr["requiredApprovals"], 2, "{dr}");
    assert_eq!(
        dry_run(s, &f.requester, &v1, "development").await["requiredApprovals"],
        2
    );

    // The contributor asks to archive the production version: pending, 2 approvals, not applied.
    let out = request(s, &f.requester, &v1, "archived", Some("cleanup")).await;
    assert_status(&out, "PENDING");
    assert_eq!(out["requiredApprovals"], 2);
    let out_id = id(&out);
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("production"));
    outbox_settled(&env).await;
    assert_eq!(
        mail_recipients(&env, &out_id).await,
        emails(&[BOB, CAROL, PROJECT_ADMIN])
    );

    // Replacing the holder is gated as moving in: v2 to production needs 2 approvals too.
    let v2 = f.evaluated_version(s, &[("auc", 0.95)]).await;
    let replace = request(s, &f.requester, &v2, "production", None).await;
    assert_status(&replace, "PENDING");
    assert_eq!(replace["requiredApprovals"], 2);
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("production"));

    // One approval is not enough to leave production; the second applies the archive.
    assert_status(&approve(s, bob, &out_id, None).await, "PENDING");
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("production"));
    assert_status(&approve(s, carol, &out_id, None).await, "APPLIED");
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("archived"));

    // Staging: in with one approval, out (even to development) with one.
    let v3 = f.evaluated_version(s, &[("auc", 0.8)]).await;
    let p3 = request(s, &f.requester, &v3, "staging", None).await;
    assert_status(&approve(s, bob, &id(&p3), None).await, "APPLIED");
    let back = request(s, &f.requester, &v3, "development", None).await;
    assert_status(&back, "PENDING");
    assert_eq!(back["requiredApprovals"], 1);
    assert_eq!(stage_of(&env, &v3).await.as_deref(), Some("staging"));

    // A version in development (not gated) still archives at once.
    let v4 = f.version(s, &[("auc", 0.7)]).await;
    assert_status(
        &request(s, &f.requester, &v4, "development", None).await,
        "APPLIED",
    );
    assert_status(
        &request(s, &f.requester, &v4, "archived", None).await,
        "APPLIED",
    );
    verify_audit(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_floor_gates_leaving_a_stage_whatever_the_policy_says() {
    // A bundle that never asks for approvals: only the server's floors remain.
    let dir = policy_dir(&[(
        "promotion.rego",
        "package custody.promotion\n\nimport rego.v1\n\nrequired_approvals := 0\n",
    )]);
    let env = start_env(
        &[
            FAST_OUTBOX[0],
            FAST_OUTBOX[1],
            "--policies",
            dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let v1 = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p1 = request(s, &f.requester, &v1, "production", None).await;
    assert_eq!(p1["requiredApprovals"], 1, "the stage's floor");
    assert_status(
        &approve(s, f.approver(BOB), &id(&p1), None).await,
        "APPLIED",
    );
    let out = request(s, &f.requester, &v1, "archived", None).await;
    assert_status(&out, "PENDING");
    assert_eq!(out["requiredApprovals"], 1, "leaving production is gated");
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("production"));
}

// ---------------------------------------------------------------------------------------------
// The emergency path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_archive_is_for_project_admins_immediate_audited_and_mailed() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    let mallory = fixtures::member_token(s, &env.admin, &f.project, MALLORY, "ADMIN").await;
    grant(s, &mallory, &f.project, MALLORY2, "APPROVER", &[]).await;

    let v1 = f.evaluated_version(s, &[("auc", 0.9)]).await;
    let p1 = request(s, &f.requester, &v1, "production", None).await;
    approve(s, f.approver(BOB), &id(&p1), None).await;
    assert_status(
        &approve(s, f.approver(CAROL), &id(&p1), None).await,
        "APPLIED",
    );
    // A pending request about the version, which the emergency path cancels.
    let pending = request(s, &f.requester, &v1, "archived", None).await;
    assert_status(&pending, "PENDING");
    outbox_settled(&env).await;

    // Refusals change nothing: a contributor, an approver (FORBIDDEN), an outsider (NOT_FOUND:
    // the version is not there for them); no reason.
    let outsider = s.issue_token("oscar@example.com", false).await;
    for (token, expected) in [
        (f.requester.as_str(), "FORBIDDEN"),
        (f.approver(BOB), "FORBIDDEN"),
        (outsider.as_str(), "NOT_FOUND"),
    ] {
        let (code, message) =
            refusal(&env, token, EMERGENCY, json!({ "v": v1, "r": "leak" })).await;
        assert_eq!(code, expected, "{message}");
    }
    for reason in ["", "   "] {
        let (code, message) =
            refusal(&env, &mallory, EMERGENCY, json!({ "v": v1, "r": reason })).await;
        assert_eq!(code, "INVALID_INPUT", "{message}");
    }
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("production"));

    // The project admin archives at once.
    let d = s
        .gql_ok(
            &mallory,
            EMERGENCY,
            json!({ "v": v1, "r": "credentials leaked into the model artifact" }),
        )
        .await;
    assert_eq!(d["emergencyArchive"]["stage"], "archived", "{d}");
    assert_eq!(stage_of(&env, &v1).await.as_deref(), Some("archived"));
    assert_status(&promotion(s, &env.admin, &id(&pending)).await, "CANCELLED");

    // One audit entry with the reason.
    let entries = verify_audit(&env).await;
    let audited = audit_of(&entries, "model_version.emergency_archive", &v1);
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["actor"], MALLORY);
    assert_eq!(
        audited[0]["after"]["reason"],
        "credentials leaked into the model artifact"
    );
    assert_eq!(audited[0]["before"]["stage"], "production");
    assert_eq!(
        audited[0]["after"]["cancelled_promotions"],
        json!([id(&pending)])
    );

    // Every approver Mallory did not appoint is mailed; her appointee and the contributor are not.
    outbox_settled(&env).await;
    assert_eq!(
        mail_recipients(&env, &v1).await,
        emails(&[BOB, CAROL, PROJECT_ADMIN])
    );
    let mail = wait_until("the emergency mail to Carol", MAIL_WAIT, || async {
        smtp.messages_to(CAROL)
            .into_iter()
            .find(|m| m.subject().contains("Emergency archive"))
    })
    .await;
    assert!(
        mail.text()
            .contains("credentials leaked into the model artifact")
            && mail.text().contains(MALLORY),
        "{}",
        mail.text()
    );
    for who in [MALLORY, MALLORY2, REQUESTER] {
        assert!(
            !smtp
                .messages_to(who)
                .iter()
                .any(|m| m.subject().contains("Emergency archive")),
            "{who} got the emergency mail"
        );
    }

    // Again: CONFLICT, nothing changed.
    let (code, message) =
        refusal(&env, &mallory, EMERGENCY, json!({ "v": v1, "r": "again" })).await;
    assert_eq!(code, "CONFLICT", "{message}");
}

// ---------------------------------------------------------------------------------------------
// Rechecks are audited

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_that_changes_a_pending_promotion_is_audited_and_sees_the_approvals() {
    let mut env = start_env(&FAST_OUTBOX, &[]).await;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
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
    let pid = id(&p);
    approve(&env.server, f.approver(BOB), &pid, None).await;

    let _dir = restart_requiring_the_privacy_group(&mut env.server).await;
    let s = &env.server;
    assert_status(&approve(s, f.approver(CAROL), &pid, None).await, "PENDING");

    let entries = verify_audit(&env).await;
    let rechecks = audit_of(&entries, "promotion.recheck", &pid);
    assert_eq!(rechecks.len(), 1, "{rechecks:?}");
    assert_eq!(rechecks[0]["before"]["approver_group"], Value::Null);
    assert_eq!(rechecks[0]["after"]["approver_group"], "privacy");
    assert_eq!(rechecks[0]["before"]["required_approvals"], 2);
    assert_eq!(rechecks[0]["after"]["required_approvals"], 2);

    // The policy evaluated again saw the decisions and who granted the deciders.
    let input: String = env
        .sql()
        .await
        .query_one(
            "SELECT policy_input::text FROM promotions WHERE id = $1::text::uuid",
            &[&pid],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    let input: Value = serde_json::from_str(&input).unwrap();
    let seen: Vec<(String, String, String)> = input["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["email"].as_str().unwrap().to_string(),
                a["decision"].as_str().unwrap().to_string(),
                a["granted_by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                BOB.to_string(),
                "approve".to_string(),
                PROJECT_ADMIN.to_string()
            ),
            (
                CAROL.to_string(),
                "approve".to_string(),
                PROJECT_ADMIN.to_string()
            ),
        ]
    );
    // ...and how each decider proved who they were (both decided with their API token).
    for approval in input["approvals"].as_array().unwrap() {
        assert_eq!(approval["auth_method"], "api_token", "{approval}");
    }
    assert_eq!(input["current_stage"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// The auditor is read-only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_changes_nothing() {
    let env = start_env(&FAST_OUTBOX, &[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let out = s
        .cli(&[
            "token",
            "issue",
            "--email",
            "audrey@example.com",
            "--auditor",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auditor = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // Reads work.
    let me = s.gql_ok(&auditor, "{ me { email } }", json!({})).await;
    assert_eq!(me["me"]["email"], "audrey@example.com");

    let mv = f.version(s, &[("auc", 0.9)]).await;
    let refused: [(&str, Value); 5] = [
        (
            "mutation($n: String!) { createProject(name: $n) { id } }",
            json!({ "n": "audrey-project" }),
        ),
        (
            "mutation($p: String!, $e: String!) { addMember(project: $p, email: $e, role: ADMIN) { role } }",
            json!({ "p": f.project, "e": "audrey@example.com" }),
        ),
        (
            "mutation($p: String!, $u: String!) { addWebhook(project: $p, url: $u) { id } }",
            json!({ "p": f.project, "u": "https://hooks.example.com/x" }),
        ),
        (
            "mutation($v: ID!, $s: String!) { requestPromotion(modelVersionId: $v, stage: $s) { id } }",
            json!({ "v": mv, "s": "development" }),
        ),
        (EMERGENCY, json!({ "v": mv, "r": "audit" })),
    ];
    for (query, variables) in refused {
        let (code, message) = refusal(&env, &auditor, query, variables).await;
        assert_eq!(code, "FORBIDDEN", "{query}: {message}");
        assert_eq!(message, "auditors are read-only", "{query}");
    }
    // Nor through the OpenLineage endpoint: an event would record a job, a run and datasets.
    let event = json!({
        "eventType": "COMPLETE",
        "eventTime": "2026-12-05T04:00:00Z",
        "producer": "https://github.com/example/pipelines",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": "01938f7e-0000-7000-8000-000000000002"},
        "job": {"namespace": "airflow", "name": "nightly"},
        "outputs": [{"namespace": "postgres://warehouse", "name": "public.scores"}],
    });
    let answer = s
        .http
        .post(s.url(&format!("/api/v1/lineage?project={}", f.project)))
        .bearer_auth(&auditor)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("auditors are read-only"));
    let jobs: i64 = env
        .sql()
        .await
        .query_one("SELECT count(*) FROM jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 0, "the auditor's event recorded nothing");
}
