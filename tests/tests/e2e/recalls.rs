//! Dataset recalls reach every project built on the data: a webhook event per affected project
//! (each hearing of its own model versions only), a mail to each affected project's admins over
//! real SMTP, a promotion the default policy denies; lifting is announced too. Refusals change
//! nothing; a project with nothing downstream hears nothing.

use std::time::Duration;

use custody_tests::fixtures::*;
use custody_tests::governance::{outbox_settled, start_env, FAST_OUTBOX};
use custody_tests::smtp::SmtpServer;
use custody_tests::webhook::{WebhookReceiver, ALLOW_RECEIVER};
use serde_json::json;

const ADD_HOOK: &str =
    "mutation($p: String!, $u: String!) { addWebhook(project: $p, url: $u) { id } }";
const RECALL: &str = "mutation($id: ID!, $r: String!) { recallDatasetVersion(id: $id, reason: $r) {
    recall { reason inForce } } }";
const LIFT: &str = "mutation($id: ID!, $r: String!) { liftDatasetRecall(id: $id, reason: $r) {
    recall { reason } recalls { inForce liftReason } } }";
const PROMOTE: &str =
    "mutation($v: ID!) { requestPromotion(modelVersionId: $v, stage: \"staging\") {
    status policyResult } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_notifies_every_affected_project_and_blocks_promotion() {
    let receiver = WebhookReceiver::start().await;
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let env = start_env(
        &FAST_OUTBOX,
        &[("CUSTODY_SMTP_URL", smtp_url.as_str()), ALLOW_RECEIVER],
    )
    .await;
    let s = &env.server;
    for project in ["data", "ml", "elsewhere"] {
        create_project(s, &env.admin, project).await;
        let hook = receiver.url(&format!("/hooks/{project}"));
        s.gql_ok(&env.admin, ADD_HOOK, json!({"p": project, "u": hook}))
            .await;
    }
    let steward = member_token(s, &env.admin, "data", "steward@example.com", "APPROVER").await;
    let scientist = member_token(s, &env.admin, "data", "sci@example.com", "CONTRIBUTOR").await;
    member_token(s, &env.admin, "ml", "mladmin@example.com", "ADMIN").await;
    member_token(s, &env.admin, "elsewhere", "other@example.com", "ADMIN").await;

    create_dataset(s, &env.admin, "data", "customers").await;
    let version =
        id(
            &register_dataset_version(s, &env.admin, "data", "customers", &"ab".repeat(32), &[])
                .await,
        );
    let run = id(&start_run(s, &env.admin, "ml", "train", None, &[version.as_str()]).await);
    finish_run(s, &env.admin, &run, "FINISHED").await;
    create_model(s, &env.admin, "ml", "churn").await;
    let model_version = id(&register_model_version(s, &env.admin, "ml", "churn", &run).await);
    outbox_settled(&env).await;
    let before = receiver.calls().len();

    // Who may not recall: a contributor of the project, an admin of another one; nothing changes.
    let vars = json!({"id": version, "r": "consent withdrawn"});
    env.assert_refused(&scientist, "FORBIDDEN", RECALL, vars.clone())
        .await;
    let ml_admin = s.issue_token("mladmin@example.com", false).await;
    env.assert_refused(&ml_admin, "NOT_FOUND", RECALL, vars.clone())
        .await;

    let recalled = s.gql_ok(&steward, RECALL, vars.clone()).await;
    assert_eq!(recalled["recallDatasetVersion"]["recall"]["inForce"], true);

    // One webhook event per affected project: the data's own and the model's project.
    let calls = receiver
        .wait_for_accepted(before + 2, Duration::from_secs(30))
        .await;
    outbox_settled(&env).await;
    let recall_calls: Vec<_> = receiver.calls()[before..]
        .iter()
        .filter(|c| c.event() == "dataset_version.recalled")
        .cloned()
        .collect();
    assert_eq!(recall_calls.len(), 2, "{calls:?}");
    for call in &recall_calls {
        let data = &call.json()["data"];
        assert_eq!(data["reason"], "consent withdrawn");
        assert_eq!(data["dataset_version_id"], version.as_str());
        let affected = data["affected_model_versions"].as_array().unwrap();
        match call.path.as_str() {
            "/hooks/ml" => assert_eq!(affected, &vec![json!(model_version)]),
            "/hooks/data" => assert!(affected.is_empty(), "{data}"),
            other => panic!("a project with nothing downstream was told: {other}"),
        }
    }
    // The admins of both affected projects are mailed; the unaffected project's admin is not.
    let mail = smtp
        .wait_for_one_to("mladmin@example.com", Duration::from_secs(30))
        .await;
    assert!(
        mail.subject().contains("Recalled: customers version 1"),
        "{}",
        mail.subject()
    );
    assert!(mail.text().contains("consent withdrawn"));
    assert!(smtp.messages_to("other@example.com").is_empty());
    assert_eq!(
        smtp.messages_to("admin@localhost")
            .iter()
            .filter(|m| m.subject().starts_with("Recalled:"))
            .count(),
        2,
        "the server admin administers both affected projects"
    );

    // The model version built on it cannot be promoted; after the lift it can ask again.
    let denied = s
        .gql_ok(&env.admin, PROMOTE, json!({"v": model_version}))
        .await;
    assert_eq!(denied["requestPromotion"]["status"], "DENIED");
    let reasons = denied["requestPromotion"]["policyResult"]["deny"].to_string();
    assert!(
        reasons.contains("customers version 1 was recalled (consent withdrawn)"),
        "{reasons}"
    );

    let lift = json!({"id": version, "r": "consent re-obtained"});
    env.assert_refused(&scientist, "FORBIDDEN", LIFT, lift.clone())
        .await;
    let lifted = s.gql_ok(&steward, LIFT, lift.clone()).await;
    assert_eq!(lifted["liftDatasetRecall"]["recall"], json!(null));
    assert_eq!(
        lifted["liftDatasetRecall"]["recalls"],
        json!([{"inForce": false, "liftReason": "consent re-obtained"}])
    );
    env.assert_refused(&steward, "CONFLICT", LIFT, lift).await;
    let allowed = s
        .gql_ok(&env.admin, PROMOTE, json!({"v": model_version}))
        .await;
    assert_ne!(allowed["requestPromotion"]["status"], "DENIED", "{allowed}");
    receiver
        .wait_for_accepted(
            receiver.calls().len().max(before + 3),
            Duration::from_secs(30),
        )
        .await;
    outbox_settled(&env).await;
    assert!(receiver
        .calls()
        .iter()
        .any(|c| c.event() == "dataset_version.recall_lifted" && c.path == "/hooks/data"));
}
