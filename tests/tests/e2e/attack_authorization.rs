//! Attacks on read authorization, played over HTTP: an outsider walking the graph from a project
//! they made into a victim's, a member of one project reading another project's data through a
//! run that consumed it, existence probes, and list fields asked for more than they may answer.

use custody_tests::fixtures::*;
use custody_tests::{sha256_hex, TestEnv};
use serde_json::{json, Value};

/// The victim's project with a dataset version, a run with a secret param, and a model version.
struct Victim {
    token: String,
    run: String,
    dataset_version: String,
    model_version: String,
}

async fn victim(env: &TestEnv) -> Victim {
    let token = env.issue_token("victim@example.com", false).await;
    create_project(&env.server, &token, "victim").await;
    create_dataset(&env.server, &token, "victim", "patients").await;
    let dv = register_dataset_version(
        &env.server,
        &token,
        "victim",
        "patients",
        &sha256_hex("patients"),
        &[],
    )
    .await;
    let run = start_run(
        &env.server,
        &token,
        "victim",
        "secret-run",
        None,
        &[&id(&dv)],
    )
    .await;
    log_params(&env.server, &token, &id(&run), &[("api_key", "hunter2")]).await;
    create_model(&env.server, &token, "victim", "scorer").await;
    let mv = register_model_version(&env.server, &token, "victim", "scorer", &id(&run)).await;
    Victim {
        token,
        run: id(&run),
        dataset_version: id(&dv),
        model_version: id(&mv),
    }
}

/// Every project name reachable in a response (walks the whole JSON).
fn project_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let (Some(Value::String(name)), true) = (map.get("name"), map.contains_key("runs")) {
                out.push(name.clone());
            }
            map.values().for_each(|v| project_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| project_names(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_who_adds_the_victim_to_a_project_learns_nothing_about_theirs() {
    let env = TestEnv::start().await;
    let v = victim(&env).await;
    let outsider = env.issue_token("outsider@example.com", false).await;
    create_project(&env.server, &outsider, "trap").await;
    add_member(
        &env.server,
        &outsider,
        "trap",
        "victim@example.com",
        "VIEWER",
    )
    .await;

    // The walk of the report: members → user → memberships → project → runs → params.
    let walk = "{ project(name: \"trap\") { members(first: 10) { user { email memberships(first: 10) {
        role project { name runs(first: 10) { edges { node { id params { key value } } } } } } } } } }";
    let d = env.gql_ok(&outsider, walk, json!({})).await;
    let mut names = Vec::new();
    project_names(&d, &mut names);
    names.sort();
    names.dedup();
    assert_eq!(names, vec!["trap".to_owned()], "{d}");
    assert!(!d.to_string().contains("hunter2"), "{d}");

    // The victim, asking the same, sees both of their own projects.
    let d = env
        .gql_ok(
            &v.token,
            "{ me { memberships { project { name } } } }",
            json!({}),
        )
        .await;
    let mine: Vec<&str> = d["me"]["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["project"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(mine, vec!["trap", "victim"], "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_the_caller_cannot_read_answers_like_one_that_does_not_exist() {
    let env = TestEnv::start().await;
    let v = victim(&env).await;
    let outsider = env.issue_token("outsider@example.com", false).await;

    // Reads: null, no error, for the real and the made-up alike.
    for (name, dataset, model) in [("victim", "patients", "scorer"), ("nope", "x", "y")] {
        let d = env
            .gql(
                &outsider,
                "query($p: String!, $d: String!, $m: String!) { project(name: $p) { id }
                   dataset(project: $p, name: $d) { id } model(project: $p, name: $m) { id }
                   modelVersion(project: $p, model: $m, version: 1) { id } }",
                json!({ "p": name, "d": dataset, "m": model }),
            )
            .await;
        assert!(d.get("errors").is_none(), "{name}: {d}");
        for field in ["project", "dataset", "model", "modelVersion"] {
            assert!(d["data"][field].is_null(), "{name}.{field}: {d}");
        }
    }
    let missing = "00000000-0000-7000-8000-000000000000";
    for (query, real) in [
        ("query($id: ID!) { run(id: $id) { id } }", &v.run),
        (
            "query($id: ID!) { promotionDryRun(modelVersionId: $id, stage: \"staging\") { deny } }",
            &v.model_version,
        ),
    ] {
        let real_answer = env.gql(&outsider, query, json!({ "id": real })).await;
        let missing_answer = env.gql(&outsider, query, json!({ "id": missing })).await;
        let shape = |r: &Value| {
            (
                r["data"].to_string(),
                r["errors"][0]["extensions"]["code"].clone(),
                r["errors"][0]["message"]
                    .as_str()
                    .map(|m| m.replace(real.as_str(), "ID").replace(missing, "ID")),
            )
        };
        assert_eq!(shape(&real_answer), shape(&missing_answer), "{query}");
    }

    // Writes: the same NOT_FOUND, with the same message, for the real and the made-up project;
    // nothing changes.
    let create = "mutation($p: String!) { createDataset(project: $p, name: \"stolen\") { id } }";
    env.assert_refused(&outsider, "NOT_FOUND", create, json!({ "p": "victim" }))
        .await;
    let real = env.gql(&outsider, create, json!({ "p": "victim" })).await;
    let made_up = env.gql(&outsider, create, json!({ "p": "nope" })).await;
    assert_eq!(
        real["errors"][0]["message"]
            .as_str()
            .unwrap()
            .replace("victim", "P"),
        made_up["errors"][0]["message"]
            .as_str()
            .unwrap()
            .replace("nope", "P"),
    );
    env.assert_refused(
        &outsider,
        "NOT_FOUND",
        "mutation($r: ID!) { logParams(runId: $r, params: [{key: \"x\", value: \"y\"}]) { id } }",
        json!({ "r": v.run }),
    )
    .await;
    env.assert_refused(
        &outsider,
        "NOT_FOUND",
        LINK_LINEAGE,
        json!({ "f": node("RUN", &v.run), "t": node("DATASET_VERSION", &v.dataset_version), "rel": "x" }),
    )
    .await;

    // A member with too weak a role is told so (they can see the project anyway).
    let viewer = member_token(
        &env.server,
        &v.token,
        "victim",
        "viewer@example.com",
        "VIEWER",
    )
    .await;
    env.assert_refused(&viewer, "FORBIDDEN", create, json!({ "p": "victim" }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_projects_datasets_stay_hidden_behind_a_run_that_consumed_them() {
    let env = TestEnv::start().await;
    // Alice belongs to both projects and trains in `shared` on a dataset of `private`.
    let alice = env.issue_token("alice@example.com", false).await;
    create_project(&env.server, &alice, "private").await;
    create_dataset(&env.server, &alice, "private", "secret-data").await;
    let secret_sha = sha256_hex("secret-data");
    let secret = register_dataset_version(
        &env.server,
        &alice,
        "private",
        "secret-data",
        &secret_sha,
        &[],
    )
    .await;
    create_project(&env.server, &alice, "shared").await;
    create_dataset(&env.server, &alice, "shared", "public-data").await;
    let public = register_dataset_version(
        &env.server,
        &alice,
        "shared",
        "public-data",
        &sha256_hex("public-data"),
        &[],
    )
    .await;
    let run = start_run(
        &env.server,
        &alice,
        "shared",
        "train",
        None,
        &[&id(&secret), &id(&public)],
    )
    .await;
    create_model(&env.server, &alice, "shared", "m").await;
    let mv = register_model_version(&env.server, &alice, "shared", "m", &id(&run)).await;
    let promotion = env
        .gql_ok(
            &alice,
            "mutation($id: ID!) { requestPromotion(modelVersionId: $id, stage: \"staging\") { id } }",
            json!({ "id": id(&mv) }),
        )
        .await["requestPromotion"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob reads `shared` only.
    let bob = member_token(&env.server, &alice, "shared", "bob@example.com", "APPROVER").await;
    let reads = "query($run: ID!, $p: ID!, $mv: ID!) {
        run(id: $run) { inputs { id sha256 uri dataset { name } } }
        promotion(id: $p) { policyInput }
        promotionDryRun(modelVersionId: $mv, stage: \"production\") { input } }";
    let vars = json!({ "run": id(&run), "p": promotion, "mv": id(&mv) });

    let d = env.gql_ok(&bob, reads, vars.clone()).await;
    let inputs: Vec<&str> = d["run"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["dataset"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, vec!["public-data"], "{d}");
    for input in [
        &d["promotion"]["policyInput"],
        &d["promotionDryRun"]["input"],
    ] {
        assert_eq!(input["lineage"]["hidden_datasets"], 1, "{input}");
        assert_eq!(
            input["lineage"]["datasets"].as_array().unwrap().len(),
            1,
            "{input}"
        );
    }
    assert!(
        !d.to_string().contains(&secret_sha),
        "bob saw the secret dataset: {d}"
    );

    // Alice, who reads both, sees both.
    let d = env.gql_ok(&alice, reads, vars).await;
    assert_eq!(d["run"]["inputs"].as_array().unwrap().len(), 2, "{d}");
    assert_eq!(
        d["promotion"]["policyInput"]["lineage"]["hidden_datasets"],
        0
    );
    assert!(d.to_string().contains(&secret_sha));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_fields_answer_bounded_pages_and_aliases_cannot_multiply_them() {
    let env = TestEnv::start().await;
    let t = env.admin.clone();
    create_project(&env.server, &t, "p").await;
    create_dataset(&env.server, &t, "p", "d").await;
    for i in 0..3 {
        register_dataset_version(
            &env.server,
            &t,
            "p",
            "d",
            &sha256_hex(&format!("v{i}")),
            &[],
        )
        .await;
    }
    let run = start_run(&env.server, &t, "p", "r", None, &[]).await;
    for batch in 0..3 {
        let points: Vec<Value> = (0..500)
            .map(|i| json!({ "key": "loss", "value": 1.0, "step": batch * 500 + i }))
            .collect();
        log_metrics(&env.server, &t, &id(&run), json!(points)).await;
    }

    let d = env
        .gql_ok(
            &t,
            "query($r: ID!) { dataset(project: \"p\", name: \"d\") {
                 first: versions(first: 2) { version } rest: versions(first: 2, after: 2) { version } }
               run(id: $r) { all: metrics { step } tail: metrics(first: 1000, offset: 1000) { step } } }",
            json!({ "r": id(&run) }),
        )
        .await;
    let versions = |k: &str| -> Vec<i64> {
        d["dataset"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(versions("first"), vec![1, 2]);
    assert_eq!(versions("rest"), vec![3]);
    assert_eq!(
        d["run"]["all"].as_array().unwrap().len(),
        1000,
        "default page"
    );
    let tail = d["run"]["tail"].as_array().unwrap();
    assert_eq!(tail.len(), 500);
    assert_eq!(tail[0]["step"], 1000);

    // Pages larger than the cap, negative offsets: INVALID_INPUT.
    for query in [
        "query($r: ID!) { run(id: $r) { metrics(first: 10001) { step } } }",
        "query($r: ID!) { run(id: $r) { metrics(offset: -1) { step } } }",
        "query($r: ID!) { run(id: $r) { project { members(first: 1001) { role } } } }",
    ] {
        let r = env.gql(&t, query, json!({ "r": id(&run) })).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "INVALID_INPUT",
            "{query}: {r}"
        );
    }
    // One full page is fine; twenty aliased pages of it cost too much and are refused before
    // anything runs.
    let one = "query($r: ID!) { run(id: $r) { metrics(first: 10000) { key value step } } }";
    env.gql_ok(&t, one, json!({ "r": id(&run) })).await;
    let aliases: String = (0..20)
        .map(|i| format!("a{i}: metrics(first: 10000) {{ key value step }} "))
        .collect();
    let many = format!("query($r: ID!) {{ run(id: $r) {{ {aliases} }} }}");
    let r = env.gql(&t, &many, json!({ "r": id(&run) })).await;
    assert!(
        r["data"].is_null(),
        "{}",
        &r.to_string()[..200.min(r.to_string().len())]
    );
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("omplex"), "{message}");
    // Nesting multiplies too: members × memberships × runs.
    let nested = "{ project(name: \"p\") { members(first: 1000) { user { memberships(first: 1000) {
        project { runs(first: 100) { edges { node { id } } } } } } } } }";
    let r = env.gql(&t, nested, json!({})).await;
    assert!(r["data"].is_null(), "{r}");
}

/// An outsider names the victim's dataset version among the inputs of a run, or as the parent of
/// a version of their own (one check for all of them, see `lineage::authorize_dataset_versions`):
/// refused exactly like a version that does not exist, wherever it sits in the list, and nothing
/// is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_consume_or_derive_from_anothers_dataset_version() {
    let env = TestEnv::start().await;
    let victim = victim(&env).await;
    let outsider = env.issue_token("mallory@example.com", false).await;
    create_project(&env.server, &outsider, "mine").await;
    create_dataset(&env.server, &outsider, "mine", "own").await;
    let own = id(&register_dataset_version(
        &env.server,
        &outsider,
        "mine",
        "own",
        &sha256_hex("own"),
        &[],
    )
    .await);
    let missing = uuid::Uuid::now_v7().to_string();
    let start =
        "mutation($i: [ID!]) { startRun(project: \"mine\", name: \"r\", inputs: $i) { id } }";
    let derive = "mutation($s: Sha256!, $f: [ID!]) { registerDatasetVersion(project: \"mine\", \
        dataset: \"own\", uri: \"s3://x\", sha256: $s, derivedFrom: $f) { id } }";
    let refusal = |d: &Value| {
        d["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for (hidden, unknown) in [
        (
            vec![own.clone(), victim.dataset_version.clone()],
            vec![own.clone(), missing.clone()],
        ),
        (
            vec![victim.dataset_version.clone(), own.clone()],
            vec![missing.clone(), own.clone()],
        ),
    ] {
        // The same version list as a run's inputs and as a new version's parents.
        for (query, list, base) in [
            (start, "i", json!({})),
            (derive, "f", json!({ "s": sha256_hex("d") })),
        ] {
            let with = |ids: &Vec<String>| {
                let mut vars = base.clone();
                vars[list] = json!(ids);
                vars
            };
            let seen = env.gql(&outsider, query, with(&hidden)).await;
            let blind = env.gql(&outsider, query, with(&unknown)).await;
            assert!(refusal(&seen).contains("no dataset version"), "{seen}");
            assert_eq!(
                refusal(&seen),
                refusal(&blind).replace(&missing, &victim.dataset_version),
                "{seen} / {blind}"
            );
        }
    }
    let sql = env.sql().await;
    let created: i64 = sql
        .query_one(
            "SELECT (SELECT count(*) FROM runs r JOIN projects p ON p.id = r.project_id WHERE p.name = 'mine') \
                  + (SELECT count(*) FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id \
                     JOIN projects p ON p.id = d.project_id WHERE p.name = 'mine')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 1, "only the outsider's own first version exists");
    // The victim still consumes its own version.
    let own_victim = env
        .gql_ok(
            &victim.token,
            start.replace("mine", "victim").as_str(),
            json!({ "i": [victim.dataset_version] }),
        )
        .await;
    assert!(own_victim["startRun"]["id"].is_string(), "{own_victim}");
}
