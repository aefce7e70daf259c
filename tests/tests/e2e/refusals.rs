//! Every "Bad input" of issue 2: the request is refused with its `extensions.code`, and the
//! database — every table, the audit log included — is exactly as before (see
//! `TestEnv::assert_refused`, which compares a digest of every table's rows).

use custody_tests::db::count;
use custody_tests::fixtures::*;
use custody_tests::{commit_sha, random_id, sha256_hex, TestEnv};
use serde_json::{json, Value};

/// A project `p` with a dataset `ds` (version 1), a code commit, a running run using both, and a
/// model `m`; everything by the global admin.
struct World {
    env: TestEnv,
    v1: String,
    commit: String,
    run: String,
}

async fn world() -> World {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    create_dataset(s, a, "p", "ds").await;
    let v1 = id(&register_dataset_version(s, a, "p", "ds", &sha256_hex("v1"), &[]).await);
    let commit =
        id(&register_commit(s, a, "https://git.example.com/r.git", &commit_sha("c1")).await);
    let run = id(&start_run(s, a, "p", "run", Some(&commit), &[&v1]).await);
    create_model(s, a, "p", "m").await;
    World {
        env,
        v1,
        commit,
        run,
    }
}

const REGISTER_COMMIT: &str = "mutation($c: String!) { registerCodeCommit(repository: \"https://git.example.com/r.git\", commit: $c) { id commit } }";
const REGISTER_DSV: &str = "mutation($s: Sha256!) { registerDatasetVersion(project: \"p\", dataset: \"ds\", uri: \"s3://b/x\", sha256: $s) { id } }";
const LOG_METRICS: &str =
    "mutation($r: ID!, $m: [MetricInput!]!) { logMetrics(runId: $r, metrics: $m) }";
const LOG_PARAMS: &str =
    "mutation($r: ID!, $p: [ParamInput!]!) { logParams(runId: $r, params: $p) { id } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commit_sha_is_invalid_input() {
    let w = world().await;
    let good = commit_sha("other");
    for bad in [
        good[..39].to_string(),      // 39 characters
        format!("{good}0"),          // 41 characters
        format!("{}g", &good[..39]), // a non-hex character
        format!("{} ", &good[..39]), // a space
        String::new(),               // empty
        sha256_hex("x"),             // a sha256 is not a commit SHA
    ] {
        w.env
            .assert_refused(
                &w.env.admin,
                "INVALID_INPUT",
                REGISTER_COMMIT,
                json!({ "c": bad }),
            )
            .await;
    }
    // The same request with a well-formed SHA passes (the refusals above are about the SHA).
    w.env
        .gql_ok(&w.env.admin, REGISTER_COMMIT, json!({ "c": good }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_sha_in_uppercase_is_stored_lowercase() {
    let w = world().await;
    let sha = commit_sha("upper");
    let c = w
        .env
        .gql_ok(
            &w.env.admin,
            REGISTER_COMMIT,
            json!({ "c": sha.to_uppercase() }),
        )
        .await;
    assert_eq!(
        c["registerCodeCommit"]["commit"],
        sha.as_str(),
        "commit SHAs are stored in lowercase"
    );
    let again = w
        .env
        .gql_ok(&w.env.admin, REGISTER_COMMIT, json!({ "c": sha }))
        .await;
    assert_eq!(
        again["registerCodeCommit"]["id"], c["registerCodeCommit"]["id"],
        "same commit in another case is the same commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sha256_is_rejected() {
    let w = world().await;
    let good = sha256_hex("v2");
    for bad in [
        good[..63].to_string(),
        format!("{good}0"),
        format!("{}z", &good[..63]),
        String::new(),
        commit_sha("c"),
    ] {
        // As a variable (how clients send it) ...
        w.env
            .assert_rejected_any(&w.env.admin, REGISTER_DSV, json!({ "s": bad }))
            .await;
        // ... and as a literal in the document.
        let q = format!("mutation {{ registerDatasetVersion(project: \"p\", dataset: \"ds\", uri: \"s3://b/x\", sha256: \"{bad}\") {{ id }} }}");
        w.env.assert_rejected_any(&w.env.admin, &q, json!({})).await;
    }
    w.env
        .gql_ok(&w.env.admin, REGISTER_DSV, json!({ "s": good }))
        .await;
}

/// API.md: `scalar Sha256 # 64 lowercase hex characters`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_sha256_is_rejected() {
    let w = world().await;
    w.env
        .assert_rejected_any(
            &w.env.admin,
            REGISTER_DSV,
            json!({ "s": sha256_hex("v2").to_uppercase() }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_project_dataset_run_are_not_found() {
    let w = world().await;
    let (env, a) = (&w.env, &w.env.admin);
    let nowhere = random_id();
    let sha = sha256_hex("x");
    let cases: Vec<(&str, Value)> = vec![
        ("mutation { createDataset(project: \"nope\", name: \"d\") { id } }", json!({})),
        ("mutation { createModel(project: \"nope\", name: \"m2\") { id } }", json!({})),
        ("mutation { addMember(project: \"nope\", email: \"x@example.com\", role: VIEWER) { role } }", json!({})),
        ("mutation { startRun(project: \"nope\", name: \"r\") { id } }", json!({})),
        (
            "mutation($s: Sha256!) { registerDatasetVersion(project: \"nope\", dataset: \"ds\", uri: \"u\", sha256: $s) { id } }",
            json!({ "s": sha }),
        ),
        (
            "mutation($s: Sha256!) { registerDatasetVersion(project: \"p\", dataset: \"nope\", uri: \"u\", sha256: $s) { id } }",
            json!({ "s": sha }),
        ),
        (
            "mutation($s: Sha256!, $f: [ID!]) { registerDatasetVersion(project: \"p\", dataset: \"ds\", uri: \"u\", sha256: $s, derivedFrom: $f) { id } }",
            json!({ "s": sha, "f": [nowhere] }),
        ),
        ("mutation($i: [ID!]) { startRun(project: \"p\", inputs: $i) { id } }", json!({ "i": [nowhere] })),
        ("mutation($c: ID) { startRun(project: \"p\", codeCommitId: $c) { id } }", json!({ "c": nowhere })),
        (LOG_PARAMS, json!({ "r": nowhere, "p": [{ "key": "a", "value": "1" }] })),
        (LOG_METRICS, json!({ "r": nowhere, "m": [{ "key": "a", "value": 1.0 }] })),
        ("mutation($r: ID!) { finishRun(runId: $r, status: FINISHED) { id } }", json!({ "r": nowhere })),
        ("mutation($r: ID!) { registerModelVersion(project: \"p\", model: \"m\", runId: $r) { id } }", json!({ "r": nowhere })),
        ("mutation($r: ID!) { registerModelVersion(project: \"p\", model: \"nope\", runId: $r) { id } }", json!({ "r": w.run })),
        ("mutation($r: ID!) { registerModelVersion(project: \"nope\", model: \"m\", runId: $r) { id } }", json!({ "r": w.run })),
        (LINK_LINEAGE, json!({ "f": node("RUN", &w.run), "t": node("DATASET_VERSION", &nowhere), "rel": "consumed_extra" })),
        (LINK_LINEAGE, json!({ "f": node("RUN", &nowhere), "t": node("DATASET_VERSION", &w.v1), "rel": "consumed_extra" })),
        // The id exists, but not as a node of that kind.
        (LINK_LINEAGE, json!({ "f": node("MODEL_VERSION", &w.run), "t": node("DATASET_VERSION", &w.v1), "rel": "x" })),
    ];
    for (q, vars) in cases {
        env.assert_refused(a, "NOT_FOUND", q, vars).await;
    }
    // Queries for what does not exist answer null.
    for (q, vars) in [
        ("{ project(name: \"nope\") { id } }", json!({})),
        (
            "{ dataset(project: \"p\", name: \"nope\") { id } }",
            json!({}),
        ),
        (
            "{ model(project: \"p\", name: \"nope\") { id } }",
            json!({}),
        ),
        (
            "query($r: ID!) { run(id: $r) { id } }",
            json!({ "r": nowhere }),
        ),
    ] {
        let r = env.gql(a, q, vars).await;
        let data = r["data"]
            .as_object()
            .and_then(|o| o.values().next().cloned())
            .unwrap_or(Value::Null);
        assert!(data.is_null(), "{q} returned data: {r}");
        if let Some(errs) = r["errors"].as_array() {
            assert_eq!(errs[0]["extensions"]["code"], "NOT_FOUND", "{q}: {r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_are_refused() {
    let w = world().await;
    for (q, vars) in [
        (
            LOG_PARAMS,
            json!({ "r": "not-a-uuid", "p": [{ "key": "a", "value": "1" }] }),
        ),
        (
            "query($r: ID!) { run(id: $r) { id } }",
            json!({ "r": "42" }),
        ),
        (
            LINK_LINEAGE,
            json!({ "f": node("RUN", "zzz"), "t": node("DATASET_VERSION", &w.v1), "rel": "x" }),
        ),
    ] {
        let sql = w.env.sql().await;
        let before = custody_tests::Snapshot::take(&sql).await;
        let r = w.env.gql(&w.env.admin, q, vars.clone()).await;
        let code = r["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            code == "INVALID_INPUT" || code == "NOT_FOUND",
            "a malformed id must give INVALID_INPUT or NOT_FOUND, got {r}\nfor {q} {vars}"
        );
        before.assert_unchanged(&custody_tests::Snapshot::take(&sql).await, q);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_another_project_cannot_make_a_model_version() {
    let w = world().await;
    let (s, a) = (&w.env.server, &w.env.admin);
    create_project(s, a, "other").await;
    let foreign = id(&start_run(s, a, "other", "r", None, &[]).await);
    let sql = w.env.sql().await;
    let before = custody_tests::Snapshot::take(&sql).await;
    let r = w
        .env
        .gql(a, "mutation($r: ID!) { registerModelVersion(project: \"p\", model: \"m\", runId: $r) { id } }", json!({ "r": foreign }))
        .await;
    let code = r["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default();
    assert!(
        ["INVALID_INPUT", "NOT_FOUND", "CONFLICT"].contains(&code),
        "registerModelVersion with another project's run must be refused: {r}"
    );
    before.assert_unchanged(
        &custody_tests::Snapshot::take(&sql).await,
        "registerModelVersion with a foreign run",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_conflict() {
    let w = world().await;
    let (env, a) = (&w.env, &w.env.admin);
    env.assert_refused(
        a,
        "CONFLICT",
        "mutation { createProject(name: \"p\") { id } }",
        json!({}),
    )
    .await;
    env.assert_refused(
        a,
        "CONFLICT",
        "mutation { createDataset(project: \"p\", name: \"ds\") { id } }",
        json!({}),
    )
    .await;
    env.assert_refused(
        a,
        "CONFLICT",
        "mutation { createModel(project: \"p\", name: \"m\") { id } }",
        json!({}),
    )
    .await;
    // Names are per project: the same names elsewhere are fine.
    create_project(&env.server, a, "q").await;
    create_dataset(&env.server, a, "q", "ds").await;
    create_model(&env.server, a, "q", "m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_are_immutable() {
    let w = world().await;
    let (env, a) = (&w.env, &w.env.admin);
    log_params(&env.server, a, &w.run, &[("lr", "0.1"), ("depth", "6")]).await;
    let sql = env.sql().await;

    // The same value again: accepted, nothing stored twice.
    let before = count(&sql, "run_params").await;
    log_params(&env.server, a, &w.run, &[("lr", "0.1")]).await;
    assert_eq!(
        count(&sql, "run_params").await,
        before,
        "re-setting a param to its value stores nothing"
    );

    // Another value: refused.
    env.assert_refused(
        a,
        "CONFLICT",
        LOG_PARAMS,
        json!({ "r": w.run, "p": [{ "key": "lr", "value": "0.2" }] }),
    )
    .await;
    // A batch with a new key and a conflicting one: refused whole, the new key is not stored.
    env.assert_refused(
        a,
        "CONFLICT",
        LOG_PARAMS,
        json!({ "r": w.run, "p": [{ "key": "epochs", "value": "3" }, { "key": "depth", "value": "7" }] }),
    )
    .await;

    let r = env
        .gql_ok(
            a,
            "query($r: ID!) { run(id: $r) { params { key value } } }",
            json!({ "r": w.run }),
        )
        .await;
    let mut params: Vec<(String, String)> = r["run"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().into(),
                p["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    params.sort();
    assert_eq!(
        params,
        vec![("depth".into(), "6".into()), ("lr".into(), "0.1".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_take_no_metrics() {
    let w = world().await;
    let (env, a) = (&w.env, &w.env.admin);
    assert_eq!(
        log_metrics(
            &env.server,
            a,
            &w.run,
            json!([{ "key": "loss", "value": 1.0, "step": 0 }])
        )
        .await,
        1
    );
    finish_run(&env.server, a, &w.run, "FINISHED").await;
    env.assert_refused(
        a,
        "CONFLICT",
        LOG_METRICS,
        json!({ "r": w.run, "m": [{ "key": "loss", "value": 0.5, "step": 1 }] }),
    )
    .await;
    // Finishing again is a state change that no longer applies.
    env.assert_refused(
        a,
        "CONFLICT",
        "mutation($r: ID!) { finishRun(runId: $r, status: FAILED) { id } }",
        json!({ "r": w.run }),
    )
    .await;
    // Same for FAILED and KILLED runs.
    for status in ["FAILED", "KILLED"] {
        let r = id(&start_run(&env.server, a, "p", status, None, &[]).await);
        finish_run(&env.server, a, &r, status).await;
        env.assert_refused(
            a,
            "CONFLICT",
            LOG_METRICS,
            json!({ "r": r, "m": [{ "key": "loss", "value": 0.5 }] }),
        )
        .await;
    }
}

/// Metric points name their run without a foreign key (the writer checks the run under a lock),
/// so the database itself keeps every run: none is deleted or renumbered, even a run that has
/// nothing but metrics, even by a superuser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_never_deleted_and_keep_their_id() {
    let w = world().await;
    let (env, a) = (&w.env, &w.env.admin);
    let only_metrics = id(&start_run(&env.server, a, "p", "only-metrics", None, &[]).await);
    let metrics = json!([{ "key": "loss", "value": 1.0, "step": 0 }]);
    assert_eq!(log_metrics(&env.server, a, &only_metrics, metrics).await, 1);
    let sql = env.sql().await;
    let before = env.snapshot().await;
    for run in [&only_metrics, &w.run] {
        for statement in [
            format!("DELETE FROM runs WHERE id = '{run}'"),
            format!("UPDATE runs SET id = gen_random_uuid() WHERE id = '{run}'"),
        ] {
            let err = sql.batch_execute(&statement).await.expect_err(&statement);
            let text = custody_tests::db::db_error_text(&err);
            assert!(text.contains("runs is immutable"), "{statement}: {text}");
        }
    }
    before.assert_unchanged(
        &env.snapshot().await,
        "the refused deletes and renumberings",
    );
    // The control: other columns still change (a run is renamed), and an id set to
    // itself is no change.
    sql.batch_execute(&format!(
        "UPDATE runs SET id = id, name = 'renamed' WHERE id = '{only_metrics}'"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", custody_tests::db::db_error_text(&e)));
    assert_eq!(
        count(
            &sql,
            &format!("runs WHERE id = '{only_metrics}' AND name = 'renamed'")
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_batches_over_1000_are_refused() {
    let w = world().await;
    let (env, a) = (&w.env, &w.env.admin);
    let batch = |n: usize| -> Value {
        Value::Array(
            (0..n)
                .map(|i| json!({ "key": "loss", "value": 1.0 / (i as f64 + 1.0), "step": i }))
                .collect(),
        )
    };
    env.assert_refused(
        a,
        "INVALID_INPUT",
        LOG_METRICS,
        json!({ "r": w.run, "m": batch(1001) }),
    )
    .await;
    env.assert_refused(
        a,
        "INVALID_INPUT",
        LOG_METRICS,
        json!({ "r": w.run, "m": batch(5000) }),
    )
    .await;
    let sql = env.sql().await;
    assert_eq!(count(&sql, "run_metrics").await, 0);
    // The maximum itself is fine.
    assert_eq!(log_metrics(&env.server, a, &w.run, batch(1000)).await, 1000);
    assert_eq!(count(&sql, "run_metrics").await, 1000);
    // An empty batch stores nothing.
    let n = env
        .gql(a, LOG_METRICS, json!({ "r": w.run, "m": [] }))
        .await;
    if n["errors"].is_null() {
        assert_eq!(n["data"]["logMetrics"], 0);
    }
    assert_eq!(count(&sql, "run_metrics").await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_cycles_are_refused() {
    let w = world().await;
    let (env, a, s) = (&w.env, &w.env.admin, &w.env.server);
    // v2 —derived_from→ v1 (automatic), run —consumed→ v2, run —ran→ commit.
    let v2 = id(&register_dataset_version(s, a, "p", "ds", &sha256_hex("v2"), &[&w.v1]).await);
    let run2 = id(&start_run(s, a, "p", "run2", Some(&w.commit), &[&v2]).await);

    // Two-node cycle: v1 → v2 while v2 → v1.
    env.assert_refused(a, "CONFLICT", LINK_LINEAGE, json!({ "f": node("DATASET_VERSION", &w.v1), "t": node("DATASET_VERSION", &v2), "rel": "derived_from" })).await;
    // Longer cycle: v1 → run2 closes v1 → run2 → v2 → v1 (any relation name).
    env.assert_refused(
        a,
        "CONFLICT",
        LINK_LINEAGE,
        json!({ "f": node("DATASET_VERSION", &w.v1), "t": node("RUN", &run2), "rel": "feeds" }),
    )
    .await;
    // commit → run2 closes run2 → commit → run2.
    env.assert_refused(
        a,
        "CONFLICT",
        LINK_LINEAGE,
        json!({ "f": node("CODE_COMMIT", &w.commit), "t": node("RUN", &run2), "rel": "x" }),
    )
    .await;

    // A self-loop is refused too (CONFLICT as a cycle, or INVALID_INPUT).
    let sql = env.sql().await;
    let before = custody_tests::Snapshot::take(&sql).await;
    let code = env
        .gql_err_code(
            a,
            LINK_LINEAGE,
            json!({ "f": node("RUN", &run2), "t": node("RUN", &run2), "rel": "x" }),
        )
        .await;
    assert!(
        code == "CONFLICT" || code == "INVALID_INPUT",
        "self-loop: {code}"
    );
    before.assert_unchanged(&custody_tests::Snapshot::take(&sql).await, "self-loop");

    // Not a cycle: run2 —evaluated→ v1 (run2 already reaches v1 through v2; still a DAG).
    link_lineage(
        s,
        a,
        node("RUN", &run2),
        node("DATASET_VERSION", &w.v1),
        "evaluated",
    )
    .await;
}

/// A value the server does not know in an enum column (written behind its back, with the CHECK
/// constraint dropped) makes the read fail; it never reads as some default (an unknown lineage
/// kind used to read as RUN, an unknown run or promotion status as RUNNING or PENDING).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_enum_values_in_the_database_are_errors_not_defaults() {
    let w = world().await;
    let (env, a) = (&w.env, &w.env.admin);
    let lineage = "query($id: ID!) { lineage(node: {kind: RUN, id: $id}, direction: UPSTREAM, depth: 1) { nodes { kind id } } }";
    let run = "query($id: ID!) { run(id: $id) { status } }";
    let vars = json!({ "id": w.run });
    // Before: both read.
    let before = env.gql_ok(a, lineage, vars.clone()).await;
    let kinds: Vec<&str> = before["lineage"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"DATASET_VERSION"), "{before}");
    assert_eq!(
        env.gql_ok(a, run, vars.clone()).await["run"]["status"],
        "RUNNING"
    );

    let sql = env.sql().await;
    sql.batch_execute(&format!(
        "ALTER TABLE lineage_edges DROP CONSTRAINT lineage_edges_to_kind_check;
         UPDATE lineage_edges SET to_kind = 'dataset' WHERE from_id = '{run}' AND to_kind = 'dataset_version';
         ALTER TABLE runs DROP CONSTRAINT runs_status_check, DROP CONSTRAINT runs_check;
         UPDATE runs SET status = 'paused' WHERE id = '{run}';",
        run = w.run
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", custody_tests::db::db_error_text(&e)));

    assert_eq!(env.gql_err_code(a, lineage, vars.clone()).await, "INTERNAL");
    assert_eq!(env.gql_err_code(a, run, vars).await, "INTERNAL");
}
