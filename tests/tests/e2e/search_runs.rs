//! `searchRuns`: MLflow's filter syntax over readable runs, sorted by latest metric values,
//! params and attributes, paged by cursors; bad filters are refused with their column.

use std::collections::BTreeSet;

use custody_tests::fixtures::*;
use custody_tests::TestEnv;
use serde_json::{json, Value};

const SEARCH: &str = "query($p: [String!], $f: String, $o: [RunOrder!], $n: Int, $a: String) {
    searchRuns(projects: $p, filter: $f, orderBy: $o, first: $n, after: $a) {
      edges { cursor node { id name status } }
      pageInfo { hasNextPage hasPreviousPage } } }";

/// Runs of the `search` project: run `r<i>` (i in 0..12) has param depth = i % 3, tag team =
/// risk (even i) or growth (odd i), metric auc = i / 10 at step 10 (with an older, higher point
/// logged after it), and no auc at all for r11. r0..r3 are finished.
async fn seed(env: &TestEnv, token: &str) -> Vec<String> {
    create_project(&env.server, token, "search").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let team = if i % 2 == 0 { "risk" } else { "growth" };
        let d = env
            .gql_ok(
                token,
                "mutation($n: String, $t: JSON) { startRun(project: \"search\", name: $n, tags: $t) { id } }",
                json!({ "n": format!("r{i}"), "t": { "team": team } }),
            )
            .await;
        let run = id(&d["startRun"]);
        log_params(&env.server, token, &run, &[("depth", &(i % 3).to_string())]).await;
        if i != 11 {
            let auc = i as f64 / 10.0;
            log_metrics(
                &env.server,
                token,
                &run,
                json!([{ "key": "auc", "value": auc, "step": 10 }, { "key": "loss", "value": 1.0 - auc, "step": 10 }]),
            )
            .await;
            // A point of an earlier step logged late does not become the latest value.
            log_metrics(
                &env.server,
                token,
                &run,
                json!([{ "key": "auc", "value": 99.0, "step": 3 }]),
            )
            .await;
        }
        if i < 4 {
            finish_run(&env.server, token, &run, "FINISHED").await;
        }
        ids.push(run);
    }
    ids
}

fn names(d: &Value) -> Vec<String> {
    d["searchRuns"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn search(env: &TestEnv, token: &str, vars: Value) -> Value {
    env.gql_ok(token, SEARCH, vars).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_sorts_like_mlflow() {
    let env = TestEnv::start().await;
    seed(&env, &env.admin).await;
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "metrics.auc > 0.5 and params.depth = '1'",
            json!([{ "key": "metrics.auc", "descending": true }]),
            vec!["r10", "r7"],
        ),
        (
            // The latest value (step 10), not the late point of step 3 (99).
            "metrics.auc >= 0.8",
            json!([{ "key": "metrics.auc" }]),
            vec!["r8", "r9", "r10"],
        ),
        (
            "tags.team = 'risk' and attributes.status = 'FINISHED'",
            json!([{ "key": "attributes.run_name" }]),
            vec!["r0", "r2"],
        ),
        (
            "params.depth IN ('0', '2') and tags.team != 'risk' and metrics.loss < 0.5",
            json!([{ "key": "metrics.loss", "descending": true }]),
            vec!["r9"],
        ),
        (
            "attributes.run_name LIKE 'r1%' and status != 'FINISHED'",
            json!([{ "key": "attributes.run_name", "descending": true }]),
            vec!["r11", "r10"],
        ),
        (
            "tags.team ILIKE 'GROW%' and metrics.auc IS NULL",
            json!([]),
            vec!["r11"],
        ),
        (
            "attributes.start_time > 0 and attributes.end_time IS NULL and params.depth = '2'",
            json!([{ "key": "params.depth" }, { "key": "attributes.run_name" }]),
            vec!["r11", "r5", "r8"],
        ),
    ];
    for (filter, order, expected) in cases {
        let d = search(
            &env,
            &env.admin,
            json!({ "p": ["search"], "f": filter, "o": order }),
        )
        .await;
        assert_eq!(names(&d), expected, "{filter} ordered by {order}");
    }

    // Without an order: newest first. Runs without the sort key come last, either direction.
    let d = search(&env, &env.admin, json!({ "f": "params.depth = '2'" })).await;
    assert_eq!(names(&d), vec!["r11", "r8", "r5", "r2"]);
    for descending in [true, false] {
        let d = search(
            &env,
            &env.admin,
            json!({ "o": [{ "key": "metrics.auc", "descending": descending }] }),
        )
        .await;
        let order = names(&d);
        assert_eq!(order.len(), 12);
        assert_eq!(order.last().unwrap(), "r11", "{order:?}");
        let first = if descending { "r10" } else { "r0" };
        assert_eq!(order[0], first, "{order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_through_every_match_once() {
    let env = TestEnv::start().await;
    seed(&env, &env.admin).await;
    for order in [
        json!([{ "key": "metrics.auc", "descending": true }]),
        json!([{ "key": "params.depth" }, { "key": "metrics.loss", "descending": true }]),
        json!([{ "key": "tags.team", "descending": true }, { "key": "attributes.start_time" }]),
        // No run has it: every page's cursor is in the NULLs, after all rows with the key.
        json!([{ "key": "metrics.nope" }]),
        json!([]),
    ] {
        let whole = names(&search(&env, &env.admin, json!({ "o": order, "n": 100 })).await);
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let d = search(&env, &env.admin, json!({ "o": order, "n": 5, "a": after })).await;
            paged.extend(names(&d));
            pages += 1;
            let info = &d["searchRuns"]["pageInfo"];
            assert_eq!(info["hasPreviousPage"], after.is_some());
            if info["hasNextPage"] == false {
                break;
            }
            let edges = d["searchRuns"]["edges"].as_array().unwrap();
            after = Some(edges.last().unwrap()["cursor"].as_str().unwrap().to_owned());
        }
        assert_eq!(pages, 3, "{order}");
        assert_eq!(
            paged, whole,
            "pages in {order} are the whole list, in order"
        );
        let distinct: BTreeSet<&String> = paged.iter().collect();
        assert_eq!(distinct.len(), 12);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_readable_projects_are_searched() {
    let env = TestEnv::start().await;
    let victim = env.issue_token("victim@example.com", false).await;
    seed(&env, &victim).await;
    let outsider = env.issue_token("outsider@example.com", false).await;
    create_project(&env.server, &outsider, "own").await;
    start_run(&env.server, &outsider, "own", "mine", None, &[]).await;

    // Every readable project by default: the outsider's own run only.
    let d = search(&env, &outsider, json!({})).await;
    assert_eq!(names(&d), vec!["mine"]);
    // Naming the victim's project answers exactly like a project that does not exist.
    for project in ["search", "nope"] {
        let r = env
            .gql(&outsider, SEARCH, json!({ "p": ["own", project] }))
            .await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "NOT_FOUND", "{r}");
        assert_eq!(
            r["errors"][0]["message"],
            format!("no project named `{project}`")
        );
    }
    // A viewer of the project reads its runs.
    add_member(
        &env.server,
        &victim,
        "search",
        "outsider@example.com",
        "VIEWER",
    )
    .await;
    let d = search(
        &env,
        &outsider,
        json!({ "p": ["search"], "f": "params.depth = '0'" }),
    )
    .await;
    assert_eq!(names(&d).len(), 4);
    // Anonymous: refused.
    let r = env.gql("", SEARCH, json!({})).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_searches_are_refused_with_their_column_and_change_nothing() {
    let env = TestEnv::start().await;
    seed(&env, &env.admin).await;
    let cases = [
        (json!({ "f": "metrics.auc >> 0.9" }), "filter: at column 14"),
        (json!({ "f": "params.depth = 6" }), "filter: at column 16"),
        (
            json!({ "f": "metrics.auc > 0.9 or params.depth = '1'" }),
            "filter: at column 19",
        ),
        (
            json!({ "f": "attributes.status = 'DONE'" }),
            "unknown run status `DONE`",
        ),
        (
            json!({ "f": "metrics.auc > 1; drop table runs" }),
            "filter: at column 16",
        ),
        (
            json!({ "o": [{ "key": "metrics.auc up" }] }),
            "orderBy[0]: at column 13",
        ),
        (
            json!({ "o": [{ "key": "attributes.colour" }] }),
            "unknown attribute `colour`",
        ),
        (
            json!({ "a": "not-a-cursor" }),
            "not a cursor of this search",
        ),
        (json!({ "n": 101 }), "first must be between 0 and 100"),
    ];
    for (vars, message) in cases {
        env.assert_refused(&env.admin, "INVALID_INPUT", SEARCH, vars.clone())
            .await;
        let r = env.gql(&env.admin, SEARCH, vars.clone()).await;
        let got = r["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(got.contains(message), "{vars}: {got}");
    }
    // A cursor of one order does not page another.
    let d = search(
        &env,
        &env.admin,
        json!({ "o": [{ "key": "metrics.auc" }], "n": 1 }),
    )
    .await;
    let cursor = d["searchRuns"]["edges"][0]["cursor"].clone();
    env.assert_refused(
        &env.admin,
        "INVALID_INPUT",
        SEARCH,
        json!({ "o": [{ "key": "params.depth" }, { "key": "metrics.auc" }], "a": cursor }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_searches_answer_only_readable_projects() {
    let env = TestEnv::start().await;
    let victim = env.issue_token("victim@example.com", false).await;
    let run = seed(&env, &victim).await[0].clone();
    create_model(&env.server, &victim, "search", "secret-model").await;
    register_model_version(&env.server, &victim, "search", "secret-model", &run).await;
    let outsider = env.issue_token("outsider@example.com", false).await;
    create_project(&env.server, &outsider, "own").await;
    create_model(&env.server, &outsider, "own", "mine").await;

    let models = "query($p: [String!]) { searchModels(projects: $p) { edges { node { name } } } }";
    let versions =
        "query($p: [String!]) { searchModelVersions(projects: $p) { edges { node { id } } } }";
    let d = env.gql_ok(&outsider, models, json!({})).await;
    assert_eq!(
        d["searchModels"]["edges"],
        json!([{ "node": { "name": "mine" } }])
    );
    let d = env.gql_ok(&outsider, versions, json!({})).await;
    assert_eq!(d["searchModelVersions"]["edges"], json!([]));
    for query in [models, versions] {
        env.assert_refused(&outsider, "NOT_FOUND", query, json!({ "p": ["search"] }))
            .await;
        let many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
        env.assert_refused(&outsider, "INVALID_INPUT", query, json!({ "p": many }))
            .await;
    }
    // The victim sees its own.
    let d = env
        .gql_ok(&victim, versions, json!({ "p": ["search"] }))
        .await;
    assert_eq!(
        d["searchModelVersions"]["edges"].as_array().unwrap().len(),
        1
    );
}
