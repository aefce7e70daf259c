//! `metricHistory`: chart series downsampled so spikes survive, only of readable runs, bounded.

use custody_tests::fixtures::*;
use custody_tests::TestEnv;
use serde_json::{json, Value};

const HISTORY: &str = "query($r: [ID!]!, $k: [String!]!, $m: Int) {
    metricHistory(runIds: $r, keys: $k, maxPoints: $m) {
      runId key totalPoints downsampled points { step value timestamp } } }";

/// A run with 5,000 points of `loss` (smooth, one spike up and one dip down) and 10 of `acc`.
async fn run_with_history(env: &TestEnv, token: &str, project: &str) -> String {
    create_project(&env.server, token, project).await;
    let run = id(&start_run(&env.server, token, project, "r", None, &[]).await);
    for batch in 0..5 {
        let points: Vec<Value> = (0..1000)
            .map(|i| {
                let step = batch * 1000 + i;
                let value = match step {
                    2345 => 100.0,
                    3000 => -50.0,
                    _ => 1.0 / (step as f64 + 1.0),
                };
                json!({ "key": "loss", "value": value, "step": step })
            })
            .collect();
        log_metrics(&env.server, token, &run, json!(points)).await;
    }
    let acc: Vec<Value> = (0..10)
        .map(|step| json!({ "key": "acc", "value": step as f64 / 10.0, "step": step }))
        .collect();
    log_metrics(&env.server, token, &run, json!(acc)).await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_are_downsampled_and_keep_their_spikes() {
    let env = TestEnv::start().await;
    let run = run_with_history(&env, &env.admin, "charts").await;
    let d = env
        .gql_ok(
            &env.admin,
            HISTORY,
            json!({ "r": [run], "k": ["loss", "acc", "nothing"], "m": 100 }),
        )
        .await;
    let series = d["metricHistory"].as_array().unwrap();
    assert_eq!(series.len(), 2, "a key without points has no series: {d}");
    let by_key = |k: &str| series.iter().find(|s| s["key"] == k).unwrap();

    let loss = by_key("loss");
    assert_eq!(loss["totalPoints"], 5000);
    assert_eq!(loss["downsampled"], true);
    let points = loss["points"].as_array().unwrap();
    assert!(
        points.len() <= 100 && points.len() >= 50,
        "{}",
        points.len()
    );
    let steps: Vec<i64> = points.iter().map(|p| p["step"].as_i64().unwrap()).collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "ascending steps: {steps:?}"
    );
    assert_eq!(steps.first(), Some(&0));
    assert_eq!(steps.last(), Some(&4999));
    let values: Vec<f64> = points
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert!(values.contains(&100.0), "the spike survives");
    assert!(values.contains(&-50.0), "the dip survives");

    let acc = by_key("acc");
    assert_eq!(acc["downsampled"], false);
    assert_eq!(acc["totalPoints"], 10);
    assert_eq!(
        acc["points"].as_array().unwrap().len(),
        10,
        "a short history comes whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_readable_runs_answer_and_requests_are_bounded() {
    let env = TestEnv::start().await;
    let victim = env.issue_token("victim@example.com", false).await;
    let secret = run_with_history(&env, &victim, "secret").await;
    let outsider = env.issue_token("outsider@example.com", false).await;
    let own = run_with_history(&env, &outsider, "mine").await;

    // The victim's run answers like a run that does not exist: no series, no error.
    let missing = "00000000-0000-7000-8000-000000000000";
    for runs in [json!([secret]), json!([missing])] {
        let d = env
            .gql_ok(&outsider, HISTORY, json!({ "r": runs, "k": ["loss"] }))
            .await;
        assert_eq!(d["metricHistory"], json!([]), "{runs}");
    }
    let d = env
        .gql_ok(
            &outsider,
            HISTORY,
            json!({ "r": [secret, own], "k": ["loss"] }),
        )
        .await;
    let ids: Vec<&str> = d["metricHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["runId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![own.as_str()]);

    // Out-of-range requests: INVALID_INPUT.
    let many_runs: Vec<&str> = vec![own.as_str(); 51];
    let many_keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for (vars, what) in [
        (json!({ "r": [own], "k": ["loss"], "m": 3 }), "maxPoints 3"),
        (
            json!({ "r": [own], "k": ["loss"], "m": 10001 }),
            "maxPoints 10001",
        ),
        (json!({ "r": [], "k": ["loss"] }), "no runs"),
        (json!({ "r": many_runs, "k": ["loss"], "m": 4 }), "51 runs"),
        (
            json!({ "r": [own], "k": many_keys, "m": 10000 }),
            "100,000 points",
        ),
    ] {
        let r = env.gql(&outsider, HISTORY, vars).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "INVALID_INPUT",
            "{what}: {r}"
        );
    }
    // Aliases cannot multiply the largest request.
    let alias: String = (0..5)
        .map(|i| {
            format!(
                "a{i}: metricHistory(runIds: [\"{own}\"], keys: [\"a\", \"b\", \"c\", \"d\", \"e\"], maxPoints: 10000) {{ key }} "
            )
        })
        .collect();
    let r = env
        .gql(&outsider, &format!("{{ {alias} }}"), json!({}))
        .await;
    assert!(r["data"].is_null(), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("omplex"),
        "{r}"
    );
}
