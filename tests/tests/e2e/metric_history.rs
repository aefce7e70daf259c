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

/// 40,000 points of `loss` logged in batches of 1,000 whose steps do not arrive in order (the
/// batch holding step 0 comes second), two of them at once, with a spike and a dip.
async fn long_run(env: &TestEnv) -> String {
    create_project(&env.server, &env.admin, "long").await;
    let run = id(&start_run(&env.server, &env.admin, "long", "r", None, &[]).await);
    let batch = |b: i64| -> Value {
        let points: Vec<Value> = (b * 1000..(b + 1) * 1000)
            .map(|step| {
                let value = match step {
                    23_456 => 1000.0,
                    31_000 => -1000.0,
                    _ => (step as f64 / 100.0).sin(),
                };
                json!({ "key": "loss", "value": value, "step": step })
            })
            .collect();
        json!(points)
    };
    let order: Vec<i64> = std::iter::once(5)
        .chain((0..40).filter(|&b| b != 5))
        .collect();
    for pair in order.chunks(2) {
        let counts = tokio::join!(
            log_metrics(&env.server, &env.admin, &run, batch(pair[0])),
            log_metrics(&env.server, &env.admin, &run, batch(pair[1])),
        );
        assert_eq!(counts, (1000, 1000));
    }
    run
}

/// Long histories are answered from chunk summaries kept on write: the same promises as a
/// short one (first and last point, every spike, at most maxPoints, ordered by step), whatever
/// order and concurrency the points were logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_histories_keep_first_last_and_spikes() {
    let env = TestEnv::start().await;
    let run = long_run(&env).await;

    // The summaries account for every point exactly once at both chunk sizes.
    let sql = env.sql().await;
    let rows = sql
        .query(
            "SELECT level, count(*), sum(points)::int8 FROM run_metric_chunks
             WHERE run_id = $1::text::uuid GROUP BY level ORDER BY level",
            &[&run],
        )
        .await
        .unwrap();
    let levels: Vec<(i16, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(levels, vec![(5, 1250, 40_000), (10, 40, 40_000)]);

    for max_points in [1000, 10] {
        let d = env
            .gql_ok(
                &env.admin,
                HISTORY,
                json!({ "r": [run], "k": ["loss"], "m": max_points }),
            )
            .await;
        let series = &d["metricHistory"][0];
        assert_eq!(series["totalPoints"], 40_000, "{max_points}");
        assert_eq!(series["downsampled"], true);
        let points = series["points"].as_array().unwrap();
        assert!(
            points.len() <= max_points && points.len() >= max_points / 3,
            "{max_points}: {} points",
            points.len()
        );
        let steps: Vec<i64> = points.iter().map(|p| p["step"].as_i64().unwrap()).collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        assert_eq!(steps.first(), Some(&0), "the first point");
        assert_eq!(steps.last(), Some(&39_999), "the last point");
        let at = |step: i64| {
            points
                .iter()
                .find(|p| p["step"] == step)
                .map(|p| p["value"].as_f64().unwrap())
        };
        assert_eq!(
            at(23_456),
            Some(1000.0),
            "the spike survives ({max_points})"
        );
        assert_eq!(at(31_000), Some(-1000.0), "the dip survives ({max_points})");
    }

    // The latest value searches see is still the highest step's, not the last batch's.
    let latest = sql
        .query_one(
            "SELECT step, points FROM run_latest_metrics WHERE run_id = $1::text::uuid",
            &[&run],
        )
        .await
        .unwrap();
    assert_eq!(
        (latest.get::<_, i64>(0), latest.get::<_, i64>(1)),
        (39_999, 40_000)
    );
}
