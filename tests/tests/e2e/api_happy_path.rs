//! The happy path of every operation of API.md that issue 2 covers, the HTTP routes, error shape
//! and page-size caps.

use custody_tests::db::count;
use custody_tests::fixtures::*;
use custody_tests::{commit_sha, sha256_hex, TestEnv};
use serde_json::{json, Value};

async fn audit(sql: &tokio_postgres::Client) -> i64 {
    count(sql, "audit_log").await
}

fn set_of(v: &Value, f: impl Fn(&Value) -> String) -> std::collections::BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(f)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_healthz_graphiql_metrics() {
    let env = TestEnv::start().await;
    let http = &env.server.http;

    let r = http.get(env.server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET /healthz");

    let r = http
        .get(env.server.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET /graphql");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    assert!(
        ct.starts_with("text/html"),
        "GET /graphql content-type {ct:?}"
    );
    assert!(
        body.to_lowercase().contains("graphiql"),
        "GET /graphql does not serve GraphiQL:\n{}",
        &body[..body.len().min(500)]
    );

    // One API request so that request metrics exist.
    env.gql_ok(&env.admin, "{ me { id } }", json!({})).await;
    // Scrapers need a bearer token (here a server admin's; SECURITY.md).
    let r = http
        .get(env.server.url("/metrics"))
        .bearer_auth(&env.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET /metrics");
    let body = r.text().await.unwrap();
    assert!(
        body.lines().any(|l| l.starts_with("# TYPE "))
            && body
                .lines()
                .any(|l| !l.starts_with('#') && !l.trim().is_empty()),
        "GET /metrics is not Prometheus text:\n{}",
        &body[..body.len().min(1000)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_file_and_me() {
    let env = TestEnv::start().await;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(env.server.data_dir.join("admin.token")).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "admin.token must have mode 0600"
    );

    let me = env
        .gql_ok(&env.admin, "{ me { id email isAdmin } }", json!({}))
        .await;
    assert_eq!(me["me"]["email"], "admin@localhost");
    assert_eq!(me["me"]["isAdmin"], true);
    assert!(me["me"]["id"].is_string());

    let claims = custody_tests::jwt::claims(&env.admin);
    for c in ["sub", "email", "iss", "aud", "exp", "iat", "jti"] {
        assert!(
            !claims[c].is_null(),
            "admin token lacks claim {c}: {claims}"
        );
    }
    assert_eq!(custody_tests::jwt::header(&env.admin)["alg"], "HS256");

    // A CLI-issued token for a new user: the user is created, not an admin.
    let t = env.issue_token("carol@example.com", false).await;
    let me = env.gql_ok(&t, "{ me { email isAdmin } }", json!({})).await;
    assert_eq!(
        me["me"],
        json!({ "email": "carol@example.com", "isAdmin": false })
    );
    let c = custody_tests::jwt::claims(&t);
    let ttl = c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
    assert!(
        (ttl - 30 * 86400).abs() <= 5,
        "default --ttl is 30d, token lives {ttl} s"
    );
    let t = env
        .server
        .issue_token_ttl("carol@example.com", false, Some("1h"))
        .await;
    let c = custody_tests::jwt::claims(&t);
    let ttl = c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
    assert!(
        (ttl - 3600).abs() <= 5,
        "--ttl 1h gave a token living {ttl} s"
    );

    let t = env.issue_token("root2@example.com", true).await;
    let me = env.gql_ok(&t, "{ me { email isAdmin } }", json!({})).await;
    assert_eq!(
        me["me"],
        json!({ "email": "root2@example.com", "isAdmin": true })
    );
}

/// Every operation of issue 2, in the order a user would do them, checking what each returns,
/// that each writes an audit entry, and what the queries then show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_happy_path() {
    let env = TestEnv::start().await;
    let s = &env.server;
    let sql = env.sql().await;

    // A regular user creates a project and becomes its ADMIN.
    let alice = env.issue_token("alice@example.com", false).await;
    let me = env
        .gql_ok(&alice, "{ me { id email isAdmin } }", json!({}))
        .await;
    assert_eq!(me["me"]["email"], "alice@example.com");
    assert_eq!(me["me"]["isAdmin"], false);
    let alice_id = me["me"]["id"].as_str().unwrap().to_string();

    let n = audit(&sql).await;
    let p = env
        .gql_ok(
            &alice,
            "mutation { createProject(name: \"fraud\", description: \"fraud detection\") { id name } }",
            json!({}),
        )
        .await["createProject"]
        .clone();
    assert_eq!(p["name"], "fraud");
    let project_id = id(&p);
    assert!(audit(&sql).await > n, "createProject wrote no audit entry");

    // addMember adds people who have an account (an unknown address is invited instead).
    env.assert_refused(
        &alice,
        "NOT_FOUND",
        "mutation { addMember(project: \"fraud\", email: \"bob@example.com\", role: CONTRIBUTOR) { role } }",
        json!({}),
    )
    .await;
    let bob = env.issue_token("bob@example.com", false).await;
    let n = audit(&sql).await;
    let m = env
        .gql_ok(
            &alice,
            "mutation { addMember(project: \"fraud\", email: \"bob@example.com\", role: CONTRIBUTOR, groups: [\"model-risk\"]) { role groups user { email } } }",
            json!({}),
        )
        .await["addMember"]
        .clone();
    assert_eq!(
        m,
        json!({ "role": "CONTRIBUTOR", "groups": ["model-risk"], "user": { "email": "bob@example.com" } })
    );
    assert!(audit(&sql).await > n, "addMember wrote no audit entry");

    // Datasets and versions (auto-numbered from 1), one derived from the other.
    let n = audit(&sql).await;
    let ds = env
        .gql_ok(
            &bob,
            "mutation { createDataset(project: \"fraud\", name: \"transactions\", description: \"card transactions\") { id name } }",
            json!({}),
        )
        .await["createDataset"]
        .clone();
    assert_eq!(ds["name"], "transactions");
    assert!(audit(&sql).await > n, "createDataset wrote no audit entry");

    let sha1 = sha256_hex("transactions-v1");
    let sha2 = sha256_hex("transactions-v2");
    let n = audit(&sql).await;
    let v1 = env
        .gql_ok(
            &bob,
            "mutation($s: Sha256!) { registerDatasetVersion(project: \"fraud\", dataset: \"transactions\", uri: \"s3://data/tx/v1.parquet\", sha256: $s, sizeBytes: 123456, tags: [\"pii\", \"raw\"]) { id version uri sha256 sizeBytes tags } }",
            json!({ "s": sha1 }),
        )
        .await["registerDatasetVersion"]
        .clone();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["uri"], "s3://data/tx/v1.parquet");
    assert_eq!(v1["sha256"], sha1.as_str());
    assert_eq!(v1["sizeBytes"], 123456);
    assert_eq!(v1["tags"], json!(["pii", "raw"]));
    assert!(
        audit(&sql).await > n,
        "registerDatasetVersion wrote no audit entry"
    );
    let v2 = env
        .gql_ok(
            &bob,
            "mutation($s: Sha256!, $f: [ID!]) { registerDatasetVersion(project: \"fraud\", dataset: \"transactions\", uri: \"s3://data/tx/v2.parquet\", sha256: $s, derivedFrom: $f) { id version sha256 tags } }",
            json!({ "s": sha2, "f": [id(&v1)] }),
        )
        .await["registerDatasetVersion"]
        .clone();
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["sha256"], sha2.as_str());

    // Code commit, idempotent on repository + commit.
    let sha = commit_sha("train.py");
    let n = audit(&sql).await;
    let c = register_commit(s, &bob, "https://git.example.com/fraud.git", &sha).await;
    assert_eq!(c["commit"], sha.as_str());
    assert_eq!(c["repository"], "https://git.example.com/fraud.git");
    assert_eq!(c["branch"], "main");
    assert_eq!(c["dirty"], false);
    assert!(
        audit(&sql).await > n,
        "registerCodeCommit wrote no audit entry"
    );
    let c_again = register_commit(s, &bob, "https://git.example.com/fraud.git", &sha).await;
    assert_eq!(
        c_again["id"], c["id"],
        "registering the same commit again must return the existing one"
    );

    // A run: start with its commit and inputs, params, metrics, finish.
    let n = audit(&sql).await;
    let run = env
        .gql_ok(
            &bob,
            "mutation($c: ID, $i: [ID!]) { startRun(project: \"fraud\", name: \"train-1\", codeCommitId: $c, inputs: $i) { id name status project { name } codeCommit { id commit } inputs { id version } startedAt endedAt } }",
            json!({ "c": id(&c), "i": [id(&v2)] }),
        )
        .await["startRun"]
        .clone();
    assert_eq!(run["status"], "RUNNING");
    assert_eq!(run["name"], "train-1");
    assert_eq!(run["project"]["name"], "fraud");
    assert_eq!(run["codeCommit"], json!({ "id": id(&c), "commit": sha }));
    assert_eq!(run["inputs"], json!([{ "id": id(&v2), "version": 2 }]));
    assert!(run["startedAt"].is_string());
    assert!(run["endedAt"].is_null());
    assert!(audit(&sql).await > n, "startRun wrote no audit entry");
    let run_id = id(&run);

    let n = audit(&sql).await;
    let r = log_params(s, &bob, &run_id, &[("lr", "0.01"), ("epochs", "10")]).await;
    assert_eq!(
        set_of(&r["params"], |p| format!(
            "{}={}",
            p["key"].as_str().unwrap(),
            p["value"].as_str().unwrap()
        )),
        ["epochs=10", "lr=0.01"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(audit(&sql).await > n, "logParams wrote no audit entry");

    let n = audit(&sql).await;
    let stored = log_metrics(
        s,
        &bob,
        &run_id,
        json!([
            { "key": "loss", "value": 0.5, "step": 0 },
            { "key": "loss", "value": 0.25, "step": 1 },
            { "key": "loss", "value": 0.125, "step": 2 },
            { "key": "auc", "value": 0.91, "step": 2, "timestamp": "2024-05-01T12:00:00Z" },
        ]),
    )
    .await;
    assert_eq!(stored, 4, "logMetrics returns how many were stored");
    assert_eq!(
        audit(&sql).await,
        n,
        "logMetrics must not write audit entries"
    );
    assert_eq!(count(&sql, "run_metrics").await, 4);

    let n = audit(&sql).await;
    let f = finish_run(s, &bob, &run_id, "FINISHED").await;
    assert_eq!(f["status"], "FINISHED");
    assert!(f["endedAt"].is_string(), "a finished run has endedAt: {f}");
    assert!(audit(&sql).await > n, "finishRun wrote no audit entry");

    // Model and versions (auto-numbered from 1).
    let n = audit(&sql).await;
    let model = create_model(s, &bob, "fraud", "scorer").await;
    assert_eq!(model["name"], "scorer");
    assert!(audit(&sql).await > n, "createModel wrote no audit entry");
    let n = audit(&sql).await;
    let mv1 = register_model_version(s, &bob, "fraud", "scorer", &run_id).await;
    assert_eq!(mv1["version"], 1);
    assert_eq!(mv1["run"]["id"], run_id.as_str());
    assert_eq!(mv1["model"]["name"], "scorer");
    assert!(
        audit(&sql).await > n,
        "registerModelVersion wrote no audit entry"
    );
    let mv2 = register_model_version(s, &bob, "fraud", "scorer", &run_id).await;
    assert_eq!(mv2["version"], 2);

    // An explicit lineage edge.
    let n = audit(&sql).await;
    let e = link_lineage(
        s,
        &bob,
        node("MODEL_VERSION", &id(&mv2)),
        node("DATASET_VERSION", &id(&v1)),
        "evaluated_on",
    )
    .await;
    assert_eq!(
        e,
        json!({ "from": { "kind": "MODEL_VERSION", "id": id(&mv2) }, "to": { "kind": "DATASET_VERSION", "id": id(&v1) }, "relation": "evaluated_on" })
    );
    assert!(audit(&sql).await > n, "linkLineage wrote no audit entry");

    // ---- Queries, as a viewer sees them.
    let viewer = member_token(s, &alice, "fraud", "vera@example.com", "VIEWER").await;
    let pq = env
        .gql_ok(
            &viewer,
            "{ project(name: \"fraud\") { id name description members { user { id email } role groups } datasets { id name } models { id name } } }",
            json!({}),
        )
        .await["project"]
        .clone();
    assert_eq!(pq["id"], project_id.as_str());
    assert_eq!(pq["name"], "fraud");
    assert_eq!(pq["description"], "fraud detection");
    assert_eq!(
        set_of(&pq["members"], |m| format!(
            "{} {} {}",
            m["user"]["email"].as_str().unwrap(),
            m["role"].as_str().unwrap(),
            m["groups"]
        )),
        [
            "alice@example.com ADMIN []".to_string(),
            "bob@example.com CONTRIBUTOR [\"model-risk\"]".to_string(),
            "vera@example.com VIEWER []".to_string()
        ]
        .into_iter()
        .collect()
    );
    let alice_member = pq["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["email"] == "alice@example.com")
        .unwrap();
    assert_eq!(alice_member["user"]["id"], alice_id.as_str());
    assert_eq!(
        pq["datasets"],
        json!([{ "id": id(&ds), "name": "transactions" }])
    );
    assert_eq!(
        pq["models"],
        json!([{ "id": id(&model), "name": "scorer" }])
    );

    let dq = env
        .gql_ok(
            &viewer,
            "{ dataset(project: \"fraud\", name: \"transactions\") { id name description versions { id version uri sha256 sizeBytes tags } } }",
            json!({}),
        )
        .await["dataset"]
        .clone();
    assert_eq!(dq["id"], id(&ds).as_str());
    assert_eq!(dq["description"], "card transactions");
    let mut versions = dq["versions"].as_array().unwrap().clone();
    versions.sort_by_key(|v| v["version"].as_i64());
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0], v1);
    assert_eq!(versions[1]["id"], v2["id"]);
    assert_eq!(versions[1]["sha256"], sha2.as_str());

    let rq = env
        .gql_ok(
            &viewer,
            "query($id: ID!) { run(id: $id) { id name status project { name } codeCommit { id commit } params { key value }
               loss: metrics(key: \"loss\") { key value step timestamp } all: metrics { key value step }
               inputs { id version } startedAt endedAt } }",
            json!({ "id": run_id }),
        )
        .await["run"]
        .clone();
    assert_eq!(rq["status"], "FINISHED");
    assert_eq!(rq["project"]["name"], "fraud");
    assert_eq!(rq["codeCommit"]["commit"], sha.as_str());
    assert_eq!(rq["inputs"], json!([{ "id": id(&v2), "version": 2 }]));
    assert!(rq["endedAt"].is_string());
    assert_eq!(
        set_of(&rq["params"], |p| format!(
            "{}={}",
            p["key"].as_str().unwrap(),
            p["value"].as_str().unwrap()
        )),
        ["epochs=10", "lr=0.01"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let mut loss: Vec<(i64, f64)> = rq["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
        .collect();
    loss.sort_by_key(|x| x.0);
    assert_eq!(
        loss,
        vec![(0, 0.5), (1, 0.25), (2, 0.125)],
        "metrics(key: \"loss\")"
    );
    assert!(rq["loss"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["key"] == "loss" && m["timestamp"].is_string()));
    assert_eq!(
        rq["all"].as_array().unwrap().len(),
        4,
        "metrics without key: all of them"
    );
    let auc = rq["all"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "auc")
        .expect("auc metric");
    assert_eq!(auc["value"].as_f64(), Some(0.91));

    let mq = env
        .gql_ok(&viewer, "{ model(project: \"fraud\", name: \"scorer\") { id name description versions { id version stage } } }", json!({}))
        .await["model"]
        .clone();
    assert_eq!(mq["id"], id(&model).as_str());
    assert_eq!(mq["description"], "m");
    let vs: Vec<i64> = {
        let mut v: Vec<i64> = mq["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(vs, vec![1, 2]);

    let mvq = env
        .gql_ok(
            &viewer,
            "{ modelVersion(project: \"fraud\", model: \"scorer\", version: 1) { id version stage description run { id } model { name } } }",
            json!({}),
        )
        .await["modelVersion"]
        .clone();
    assert_eq!(mvq["id"], mv1["id"]);
    assert_eq!(mvq["version"], 1);
    assert_eq!(mvq["description"], "v");
    assert_eq!(mvq["run"]["id"], run_id.as_str());
    assert_eq!(mvq["model"]["name"], "scorer");
    let none = env
        .gql_ok(
            &viewer,
            "{ modelVersion(project: \"fraud\", model: \"scorer\", version: 99) { id } }",
            json!({}),
        )
        .await;
    assert!(
        none["modelVersion"].is_null(),
        "an absent version is null: {none}"
    );

    // Upstream lineage of model version 2: its run (depth 1), then the run's commit and input and
    // the explicit evaluated_on edge's dataset version.
    let lq = env
        .gql_ok(
            &viewer,
            "query($n: NodeRef!) { lineage(node: $n, direction: UPSTREAM, depth: 2) { nodes { kind id } edges { from { kind id } to { kind id } relation } } }",
            json!({ "n": node("MODEL_VERSION", &id(&mv2)) }),
        )
        .await["lineage"]
        .clone();
    let nodes = set_of(&lq["nodes"], |n| {
        format!(
            "{}:{}",
            n["kind"].as_str().unwrap(),
            n["id"].as_str().unwrap()
        )
    });
    let want: std::collections::BTreeSet<String> = [
        format!("MODEL_VERSION:{}", id(&mv2)),
        format!("RUN:{run_id}"),
        format!("DATASET_VERSION:{}", id(&v1)),
        format!("CODE_COMMIT:{}", id(&c)),
        format!("DATASET_VERSION:{}", id(&v2)),
    ]
    .into_iter()
    .collect();
    assert_eq!(nodes, want, "upstream of model version 2 at depth 2");
    let relations = set_of(&lq["edges"], |e| {
        e["relation"].as_str().unwrap().to_string()
    });
    assert_eq!(
        relations,
        ["consumed", "evaluated_on", "produced_by", "ran"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "edge relations"
    );

    // The audit log: filtered by project, by subject, by action.
    let entries = custody_tests::audit::fetch_all(s, &env.admin, "project: \"fraud\"").await;
    let actions = set_of(&json!(entries), |e| {
        e["action"].as_str().unwrap().to_string()
    });
    for a in [
        "project.create",
        "member.add",
        "dataset.create",
        "run.start",
        "run.finish",
        "model_version.register",
    ] {
        assert!(
            actions.contains(a),
            "auditLog(project: fraud) has no {a} entry; actions: {actions:?}"
        );
    }
    assert!(
        entries
            .iter()
            .all(|e| e["projectId"] == project_id.as_str()),
        "project filter leaked other entries"
    );
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "auditLog is not in ascending seq order: {seqs:?}"
    );

    let by_subject =
        custody_tests::audit::fetch_all(s, &env.admin, &format!("subjectId: \"{run_id}\"")).await;
    assert!(
        !by_subject.is_empty(),
        "no audit entry has the run as subject"
    );
    assert!(by_subject.iter().all(|e| e["subjectId"] == run_id.as_str()));
    let by_action = custody_tests::audit::fetch_all(s, &env.admin, "action: \"run.start\"").await;
    assert_eq!(
        by_action.len(),
        1,
        "exactly one run.start entry: {by_action:?}"
    );
    assert_eq!(by_action[0]["subjectId"], run_id.as_str());
    let created = entries
        .iter()
        .find(|e| e["action"] == "project.create")
        .unwrap();
    assert!(
        created["actor"] == "alice@example.com" || created["actor"] == alice_id.as_str(),
        "project.create actor should be alice: {created}"
    );
    assert_eq!(created["subjectId"], project_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_extensions_code() {
    let env = TestEnv::start().await;
    for q in [
        "{ me { id ",
        "{ me { noSuchField } }",
        "{ noSuchQuery }",
        "mutation { createProject }",
    ] {
        let r = env.gql(&env.admin, q, json!({})).await;
        let errors = r["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors for {q}: {r}"));
        assert!(!errors.is_empty(), "no errors for {q}");
        for e in errors {
            assert!(
                e["extensions"]["code"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty()),
                "GraphQL error without extensions.code for {q:?}: {e}"
            );
        }
    }
    let code = env
        .gql_err_code(
            &env.admin,
            "mutation { createDataset(project: \"nope\", name: \"x\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_is_capped_at_100() {
    let env = TestEnv::start().await;
    create_project(&env.server, &env.admin, "p").await;
    env.assert_refused(
        &env.admin,
        "INVALID_INPUT",
        "{ auditLog(first: 101) { edges { node { seq } } } }",
        json!({}),
    )
    .await;
    env.assert_refused(
        &env.admin,
        "INVALID_INPUT",
        "{ auditLog(first: -1) { edges { node { seq } } } }",
        json!({}),
    )
    .await;
    let d = env
        .gql_ok(
            &env.admin,
            "{ auditLog(first: 100) { edges { node { seq } } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert!(!d["auditLog"]["edges"].as_array().unwrap().is_empty());

    // Pages of 2 walk the whole log in order, without overlaps.
    let all = custody_tests::audit::fetch_all(&env.server, &env.admin, "").await;
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let d = env
            .gql_ok(
                &env.admin,
                "query($a: String) { auditLog(first: 2, after: $a) { edges { cursor node { seq } } pageInfo { hasNextPage endCursor } } }",
                json!({ "a": after }),
            )
            .await;
        let c = &d["auditLog"];
        let edges = c["edges"].as_array().unwrap();
        assert!(edges.len() <= 2);
        seen.extend(edges.iter().map(|e| e["node"]["seq"].as_i64().unwrap()));
        if !c["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = c["pageInfo"]["endCursor"].clone();
    }
    let want: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seen, want, "paging by 2 differs from paging by 100");
}

/// Depth limits: a query nesting the Run → Project → Model → ModelVersion → Run cycle far enough
/// is refused, while one turn of it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_depth_is_limited() {
    let env = TestEnv::start().await;
    let s = &env.server;
    create_project(s, &env.admin, "p").await;
    create_model(s, &env.admin, "p", "m").await;
    let run = start_run(s, &env.admin, "p", "r", None, &[]).await;
    register_model_version(s, &env.admin, "p", "m", &id(&run)).await;

    let turn =
        |inner: String| format!("project {{ models {{ versions {{ run {{ id {inner} }} }} }} }}");
    let shallow = format!(
        "query($id: ID!) {{ run(id: $id) {{ {} }} }}",
        turn(String::new())
    );
    env.gql_ok(&env.admin, &shallow, json!({ "id": id(&run) }))
        .await;

    let mut inner = String::new();
    for _ in 0..12 {
        inner = turn(inner);
    }
    let deep = format!("query($id: ID!) {{ run(id: $id) {{ {inner} }} }}");
    let r = env.gql(&env.admin, &deep, json!({ "id": id(&run) })).await;
    let errors = r["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        !errors.is_empty(),
        "a query nested 49 levels deep was served"
    );
    assert!(
        r["data"].is_null() || r["data"]["run"].is_null(),
        "deep query returned data"
    );
    assert!(
        errors[0]["extensions"]["code"].is_string(),
        "depth-limit error without extensions.code: {r}"
    );
}
