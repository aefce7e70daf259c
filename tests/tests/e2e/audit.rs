//! The hash-chained audit log: re-computed by the test from `auditLog`, refused changes through
//! direct SQL, concurrent writers, no entries for metrics, and audit last (a command's entries
//! are appended together at its end, and not at all if it fails).

use std::collections::BTreeMap;
use std::sync::Arc;

use custody_tests::audit::{canonical_json, entry_hash, fetch_all, verify_chain, GENESIS};
use custody_tests::db::{count, db_error_text};
use custody_tests::fixtures::*;
use custody_tests::{sha256_hex, Server, TestEnv};
use serde_json::json;

/// The log read through the API must match the table row for row.
async fn assert_api_matches_table(env: &TestEnv, entries: &[serde_json::Value]) {
    let sql = env.sql().await;
    let rows = sql
        .query(
            "SELECT seq, prev_hash, hash FROM audit_log ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        entries.len(),
        "auditLog serves {} entries, the table holds {}",
        entries.len(),
        rows.len()
    );
    for (row, e) in rows.iter().zip(entries) {
        let seq: i64 = row.get(0);
        assert_eq!(e["seq"].as_i64(), Some(seq));
        assert_eq!(
            e["prevHash"].as_str(),
            Some(row.get::<_, String>(1).as_str()),
            "prevHash of seq {seq}"
        );
        assert_eq!(
            e["hash"].as_str(),
            Some(row.get::<_, String>(2).as_str()),
            "hash of seq {seq}"
        );
    }
}

#[test]
fn canonical_json_sorts_keys_recursively() {
    let v: serde_json::Value =
        serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":"é\n"}],"c":null},"seq":3}"#).unwrap();
    assert_eq!(
        canonical_json(&v),
        r#"{"a":{"c":null,"d":[{"y":"é\n","z":1}]},"b":1,"seq":3}"#
    );
    // The chain check can fail: a wrong hash is reported.
    let e = json!({"seq": 1, "prevHash": GENESIS, "hash": "00", "actor": "a", "action": "x", "subjectId": "s",
        "subjectKind": "k", "projectId": null, "requestId": null, "before": null, "after": null,
        "entry": {"seq": 1, "at": "t", "actor": "a", "action": "x", "project_id": null, "subject_kind": "k",
                  "subject_id": "s", "before": null, "after": null, "request_id": null}});
    assert!(verify_chain(std::slice::from_ref(&e)).is_err());
    let mut ok = e.clone();
    ok["hash"] = json!(entry_hash(GENESIS, &e["entry"]));
    verify_chain(&[ok.clone()]).unwrap();
    let mut forked = ok.clone();
    forked["entry"]["actor"] = json!("b");
    forked["actor"] = json!("b");
    assert!(
        verify_chain(&[forked]).is_err(),
        "an edited entry must break the chain"
    );
}

/// More than one page of entries; the chain re-computed from the API equals the stored hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_recomputes_from_the_api() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    let alice = env.issue_token("alice@example.com", false).await;
    let p = create_project(s, &alice, "p").await;
    add_member(s, &alice, "p", "bob@example.com", "CONTRIBUTOR").await;
    create_dataset(s, &alice, "p", "ds").await;
    let v = id(&register_dataset_version(s, &alice, "p", "ds", &sha256_hex("1"), &[]).await);
    let run = id(&start_run(s, &alice, "p", "r", None, &[&v]).await);
    log_params(s, &alice, &run, &[("k", "v"), ("n", "1.5")]).await;
    finish_run(s, &alice, &run, "FINISHED").await;
    create_model(s, &alice, "p", "m").await;
    register_model_version(s, &alice, "p", "m", &run).await;
    // Enough entries for three pages of 100.
    for i in 0..230 {
        create_dataset(s, a, "p", &format!("bulk-{i:03}")).await;
    }

    let entries = fetch_all(s, a, "").await;
    assert!(entries.len() >= 239, "only {} audit entries", entries.len());
    if let Err(e) = verify_chain(&entries) {
        panic!("audit chain broken: {e}");
    }
    assert_eq!(entries[0]["prevHash"], GENESIS);
    assert_api_matches_table(&env, &entries).await;

    // Entries carry who, what, on which subject, with before/after and a request id.
    let created = entries
        .iter()
        .find(|e| e["action"] == "project.create")
        .expect("a project.create entry");
    let alice_id = env.gql_ok(&alice, "{ me { id } }", json!({})).await["me"]["id"].clone();
    assert!(
        created["actor"] == "alice@example.com" || created["actor"] == alice_id,
        "actor of project.create: {created}"
    );
    assert_eq!(created["subjectId"], p["id"]);
    assert_eq!(created["projectId"], p["id"]);
    assert!(
        created["after"].is_object(),
        "project.create has an `after` document: {created}"
    );
    assert!(
        created["at"]
            .as_str()
            .is_some_and(|t| t.len() >= 20 && t.as_bytes()[10] == b'T'),
        "`at` is RFC 3339: {created}"
    );
    assert!(
        created["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "entries carry the request id: {created}"
    );
    let bulk = entries
        .iter()
        .filter(|e| e["action"] == "dataset.create")
        .count();
    assert_eq!(bulk, 231, "one dataset.create entry per createDataset");

    // Filtered reads are subsets in seq order, carrying the same hashes.
    let by_seq: BTreeMap<i64, &serde_json::Value> = entries
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e))
        .collect();
    for filter in [
        "project: \"p\"",
        &format!("subjectId: \"{run}\""),
        "action: \"dataset.create\"",
    ] {
        let sub = fetch_all(s, a, filter).await;
        assert!(!sub.is_empty(), "auditLog({filter}) is empty");
        let seqs: Vec<i64> = sub.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "auditLog({filter}) not ascending"
        );
        for e in &sub {
            assert_eq!(
                &e,
                by_seq.get(&e["seq"].as_i64().unwrap()).unwrap(),
                "auditLog({filter}) differs from the full log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_refuses_update_delete_truncate() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    create_dataset(s, a, "p", "ds").await;
    let sql = env.sql().await;
    let n = count(&sql, "audit_log").await;
    assert!(n >= 2, "expected audit entries, found {n}");
    let before = custody_tests::Snapshot::take(&sql).await;

    for stmt in [
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET hash = prev_hash WHERE seq = (SELECT max(seq) FROM audit_log)",
        "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "TRUNCATE audit_log CASCADE",
    ] {
        match sql.batch_execute(stmt).await {
            Ok(()) => panic!("the database accepted `{stmt}` on audit_log"),
            Err(e) => assert!(
                e.as_db_error().is_some(),
                "`{stmt}` failed without a database error: {e}"
            ),
        }
    }
    // Also inside a transaction (and the refusal is not a mere warning).
    let err = sql
        .batch_execute("BEGIN; DELETE FROM audit_log; COMMIT;")
        .await
        .expect_err("DELETE in a transaction");
    let _ = sql.batch_execute("ROLLBACK").await;
    eprintln!("refused as expected: {}", db_error_text(&err));

    before.assert_unchanged(
        &custody_tests::Snapshot::take(&sql).await,
        "UPDATE/DELETE/TRUNCATE on audit_log",
    );
    verify_chain(&fetch_all(s, a, "").await).unwrap();
}

async fn concurrent_creates<S: AsRef<Server> + Send + Sync + 'static>(
    servers: Vec<Arc<S>>,
    token: &str,
    total: usize,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..total {
        let server = servers[i % servers.len()].clone();
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let s = (*server).as_ref();
            if i % 2 == 0 {
                id(&create_dataset(s, &token, "p", &format!("c-{i:02}")).await)
            } else {
                id(&create_model(s, &token, "p", &format!("c-{i:02}")).await)
            }
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("a concurrent mutation failed"));
    }
    ids
}

fn assert_one_entry_per_subject(entries: &[serde_json::Value], ids: &[String]) {
    for id in ids {
        let n = entries
            .iter()
            .filter(|e| e["subjectId"] == id.as_str())
            .count();
        assert_eq!(n, 1, "subject {id} has {n} audit entries");
    }
}

/// 20 mutations at once leave one unbroken, gapless chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_mutations_one_chain() {
    let env = TestEnv::start().await;
    create_project(&env.server, &env.admin, "p").await;
    let before = fetch_all(&env.server, &env.admin, "").await.len();
    let env = Arc::new(env);
    let ids = concurrent_creates(vec![env.clone()], &env.admin, 20).await;

    let entries = fetch_all(&env.server, &env.admin, "").await;
    if let Err(e) = verify_chain(&entries) {
        panic!("audit chain broken after 20 concurrent mutations: {e}");
    }
    assert_eq!(entries.len(), before + 20, "20 mutations, 20 new entries");
    assert_one_entry_per_subject(&entries, &ids);
    assert_api_matches_table(&env, &entries).await;
}

/// Twelve versions of one model registered at once: each is numbered under the model's lock
/// (`models::register_version` reads the last number in the same round trip as the lock), so
/// none is refused and the numbers are 1 to 12 without a gap or a repeat, each with its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_model_number_its_versions_in_turn() {
    let env = Arc::new(TestEnv::start().await);
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    create_model(s, a, "p", "m").await;
    let run = id(&start_run(s, a, "p", "train", None, &[]).await);
    finish_run(s, a, &run, "FINISHED").await;
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (env, run) = (env.clone(), run.clone());
            tokio::spawn(async move {
                register_model_version(&env.server, &env.admin, "p", "m", &run).await
            })
        })
        .collect();
    assert_numbered_in_turn(&env, tasks).await;
}

/// The dataset's lock and the insert numbered after its last version go out together; twelve
/// versions of one dataset registered at once are still numbered 1 to 12, each with its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_dataset_number_its_versions_in_turn() {
    let env = Arc::new(TestEnv::start().await);
    create_project(&env.server, &env.admin, "p").await;
    create_dataset(&env.server, &env.admin, "p", "d").await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let env = env.clone();
            tokio::spawn(async move {
                let sha = sha256_hex(&format!("content {i}"));
                register_dataset_version(&env.server, &env.admin, "p", "d", &sha, &[]).await
            })
        })
        .collect();
    assert_numbered_in_turn(&env, tasks).await;
}

/// Concurrent registrations of versions of one thing: all accepted, numbered 1, 2, … without gap
/// or repeat, each with one audit entry, on an unbroken chain.
async fn assert_numbered_in_turn(
    env: &TestEnv,
    tasks: Vec<tokio::task::JoinHandle<serde_json::Value>>,
) {
    let (mut numbers, mut ids) = (Vec::new(), Vec::new());
    let registered = tasks.len() as i64;
    for task in tasks {
        let version = task.await.expect("a concurrent registration failed");
        numbers.push(version["version"].as_i64().expect("a version number"));
        ids.push(id(&version));
    }
    numbers.sort();
    assert_eq!(numbers, (1..=registered).collect::<Vec<i64>>());
    let entries = fetch_all(&env.server, &env.admin, "").await;
    verify_chain(&entries).unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    assert_one_entry_per_subject(&entries, &ids);
}

/// Two server processes (replicas) on one database, 40 concurrent mutations: still one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_concurrent_mutations_one_chain() {
    let env = TestEnv::start().await;
    create_project(&env.server, &env.admin, "p").await;
    let before = fetch_all(&env.server, &env.admin, "").await.len();
    let r1 = Arc::new(env.server.start_replica().await);
    let r2 = Arc::new(env.server.start_replica().await);
    let ids = concurrent_creates(vec![r1.clone(), r2.clone()], &env.admin, 40).await;
    drop((r1, r2));

    let entries = fetch_all(&env.server, &env.admin, "").await;
    if let Err(e) = verify_chain(&entries) {
        panic!("audit chain broken after concurrent mutations on two replicas: {e}");
    }
    let new = entries.len() - before;
    assert_eq!(new, 40, "40 mutations, {new} new entries");
    assert_one_entry_per_subject(&entries, &ids);
    assert_api_matches_table(&env, &entries).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_metrics_writes_no_audit_entry() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    let sql = env.sql().await;

    let n0 = count(&sql, "audit_log").await;
    let run = id(&start_run(s, a, "p", "r", None, &[]).await);
    let n1 = count(&sql, "audit_log").await;
    assert!(n1 > n0, "startRun writes an audit entry");

    for step in 0..5 {
        let metrics: Vec<_> = (0..200)
            .map(|i| json!({ "key": format!("m{i}"), "value": i as f64, "step": step }))
            .collect();
        assert_eq!(log_metrics(s, a, &run, json!(metrics)).await, 200);
    }
    assert_eq!(count(&sql, "run_metrics").await, 1000);
    assert_eq!(
        count(&sql, "audit_log").await,
        n1,
        "logMetrics wrote audit entries"
    );
    assert_eq!(fetch_all(s, a, "").await.len() as i64, n1);

    log_params(s, a, &run, &[("p", "1")]).await;
    let n2 = count(&sql, "audit_log").await;
    assert!(n2 > n1, "logParams writes an audit entry");
    finish_run(s, a, &run, "FINISHED").await;
    assert!(
        count(&sql, "audit_log").await > n2,
        "finishRun writes an audit entry"
    );

    let entries = fetch_all(s, a, &format!("subjectId: \"{run}\"")).await;
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["run.start", "run.log_params", "run.finish"],
        "the run's audit entries"
    );
    verify_chain(&fetch_all(s, a, "").await).unwrap();
}

/// The check above is not vacuous against the real server: an entry edited behind the database's
/// back (triggers disabled by a superuser) makes the re-computed chain fail at that entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_breaks_the_recomputed_chain() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    for i in 0..3 {
        create_dataset(s, a, "p", &format!("d{i}")).await;
    }
    let entries = fetch_all(s, a, "").await;
    verify_chain(&entries).unwrap();
    let target = entries[entries.len() - 2]["seq"].as_i64().unwrap();

    let sql = env.sql().await;
    sql.batch_execute(&format!(
        "ALTER TABLE audit_log DISABLE TRIGGER USER;
         UPDATE audit_log SET actor = 'mallory@example.com' WHERE seq = {target};
         ALTER TABLE audit_log ENABLE TRIGGER USER;"
    ))
    .await
    .unwrap_or_else(|e| panic!("tampering as superuser: {}", db_error_text(&e)));

    let tampered = fetch_all(s, a, "").await;
    assert_eq!(
        tampered[(target - 1) as usize]["actor"],
        "mallory@example.com"
    );
    let err = verify_chain(&tampered).expect_err("an edited entry went unnoticed");
    assert!(
        err.starts_with(&format!("seq {target}:")),
        "the first bad entry is seq {target}, the check says: {err}"
    );
}

const REQUEST_DEVELOPMENT: &str = "mutation($v: ID!) {
  requestPromotion(modelVersionId: $v, stage: \"development\", comment: \"audit last\") { id status } }";

/// A model with one version ready to be promoted: (model id, version id).
async fn model_version(s: &Server, token: &str, project: &str, name: &str) -> (String, String) {
    let model = id(&create_model(s, token, project, name).await);
    let run = id(&start_run(s, token, project, &format!("train-{name}"), None, &[]).await);
    finish_run(s, token, &run, "FINISHED").await;
    let version = id(&register_model_version(s, token, project, name, &run).await);
    (model, version)
}

/// The seqs of the entries a request wrote, and their actions, in chain order.
fn entries_of_request(entries: &[serde_json::Value], request_id: &str) -> Vec<(i64, String)> {
    entries
        .iter()
        .filter(|e| e["requestId"] == request_id)
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A promotion that applies at once records three changes (request, stage, apply): they are
/// written consecutively, in the order recorded.
fn assert_promotion_entries_consecutive(entries: &[serde_json::Value], promotion: &str) {
    let request_id = entries
        .iter()
        .find(|e| e["action"] == "promotion.request" && e["subjectId"] == promotion)
        .and_then(|e| e["requestId"].as_str())
        .unwrap_or_else(|| panic!("no promotion.request entry with a request id for {promotion}"));
    let written = entries_of_request(entries, request_id);
    let actions: Vec<&str> = written.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "promotion.request",
            "model_version.stage",
            "promotion.apply"
        ],
        "the entries of promotion {promotion}, in chain order"
    );
    assert!(
        written.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "the entries of one command are consecutive in the chain: {written:?}"
    );
}

/// Audit last: a command holds the chain's head only to append, just before commit. While one
/// promotion is stopped in the middle of its command (after it recorded its request, waiting
/// for the stage lock a test session holds), another writer's mutation commits with its entry;
/// when the promotion goes on, its three entries follow, consecutive. (When entries were
/// appended as recorded, the second writer waited for the first: this test timed out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_holds_the_chain_only_to_append() {
    let env = Arc::new(TestEnv::start().await);
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    let (model, version) = model_version(s, a, "p", "m").await;

    // The stage lock promotions::apply takes, held by a session of the test.
    let holder = env.sql().await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('custody.stage.' || $1::text || '/' || $2::text, 0))",
            &[&model, &"development"],
        )
        .await
        .unwrap();
    let promotion = {
        let env = env.clone();
        tokio::spawn(async move {
            env.gql_ok(&env.admin, REQUEST_DEVELOPMENT, json!({ "v": version }))
                .await["requestPromotion"]
                .clone()
        })
    };
    let sql = env.sql().await;
    custody_tests::wait_until(
        "the promotion to wait for the stage lock",
        std::time::Duration::from_secs(30),
        || async {
            let waiting: i64 = sql
                .query_one(
                    "SELECT count(*)::bigint FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (waiting > 0).then_some(())
        },
    )
    .await;
    let entries_before = count(&sql, "audit_log").await;

    // Another writer is not held up by the waiting command.
    let created = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        create_dataset(s, a, "p", "meanwhile"),
    )
    .await
    .expect("createDataset waited for another command to finish: the chain's head is held across the command");
    assert_eq!(
        count(&sql, "audit_log").await,
        entries_before + 1,
        "only the dataset's entry is written while the promotion waits"
    );

    holder.batch_execute("ROLLBACK").await.unwrap();
    let promotion = promotion.await.expect("requestPromotion failed");
    assert_eq!(promotion["status"], "APPLIED", "{promotion}");

    let entries = fetch_all(s, a, "").await;
    verify_chain(&entries).unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    assert_api_matches_table(&env, &entries).await;
    let dataset_seq = entries
        .iter()
        .find(|e| e["action"] == "dataset.create" && e["subjectId"] == id(&created))
        .and_then(|e| e["seq"].as_i64())
        .expect("the dataset.create entry");
    let promotion_id = promotion["id"].as_str().unwrap();
    assert_promotion_entries_consecutive(&entries, promotion_id);
    let first = entries
        .iter()
        .find(|e| e["action"] == "promotion.request" && e["subjectId"] == promotion_id)
        .and_then(|e| e["seq"].as_i64())
        .unwrap();
    assert!(
        first > dataset_seq,
        "the promotion's entries are appended when it commits, after the dataset's"
    );
}

/// Commands with several entries and commands with one, all at once: every command's entries
/// are consecutive and in order, and the chain is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_write_their_entries_together() {
    let env = Arc::new(TestEnv::start().await);
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    let mut versions = Vec::new();
    for i in 0..6 {
        versions.push(model_version(s, a, "p", &format!("m{i}")).await.1);
    }
    let mut promotions = Vec::new();
    let mut datasets = Vec::new();
    for (i, version) in versions.into_iter().enumerate() {
        let env2 = env.clone();
        promotions.push(tokio::spawn(async move {
            env2.gql_ok(&env2.admin, REQUEST_DEVELOPMENT, json!({ "v": version }))
                .await["requestPromotion"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
        let env2 = env.clone();
        datasets.push(tokio::spawn(async move {
            id(&create_dataset(&env2.server, &env2.admin, "p", &format!("d{i}")).await)
        }));
    }
    let mut promotion_ids = Vec::new();
    for p in promotions {
        promotion_ids.push(p.await.expect("requestPromotion failed"));
    }
    let mut dataset_ids = Vec::new();
    for d in datasets {
        dataset_ids.push(d.await.expect("createDataset failed"));
    }

    let entries = fetch_all(s, a, "").await;
    verify_chain(&entries).unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    assert_api_matches_table(&env, &entries).await;
    for p in &promotion_ids {
        assert_promotion_entries_consecutive(&entries, p);
    }
    assert_one_entry_per_subject(&entries, &dataset_ids);
}

/// A command that fails after it recorded changes writes none of them: the mutation below
/// records the request and the version's new stage, then the database refuses its deployment
/// (a trigger of the test); every table, audit log and chain head included, is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_failing_after_record_writes_no_entry() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    let (_, version) = model_version(s, a, "p", "m").await;
    let sql = env.sql().await;
    sql.batch_execute(
        "CREATE FUNCTION test_refuse_deployment() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'deployments refused by the test'; END $$;
         CREATE TRIGGER test_refuse_deployment BEFORE INSERT ON deployments
           FOR EACH ROW EXECUTE FUNCTION test_refuse_deployment();",
    )
    .await
    .unwrap();
    env.assert_refused(a, "INTERNAL", REQUEST_DEVELOPMENT, json!({ "v": version }))
        .await;

    sql.batch_execute(
        "DROP TRIGGER test_refuse_deployment ON deployments; DROP FUNCTION test_refuse_deployment();",
    )
    .await
    .unwrap();
    let promotion = env
        .gql_ok(a, REQUEST_DEVELOPMENT, json!({ "v": version }))
        .await["requestPromotion"]
        .clone();
    assert_eq!(promotion["status"], "APPLIED", "{promotion}");
    let entries = fetch_all(s, a, "").await;
    verify_chain(&entries).unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    assert_promotion_entries_consecutive(&entries, promotion["id"].as_str().unwrap());
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["action"] == "promotion.request")
            .count(),
        1,
        "the failed request left no entry"
    );
}
