//! Load benchmark (not a timed test; ignored by default): the web UI's pages on a project with
//! 100,000 runs (× 20 metrics × 10 params, seeded in SQL as the server writes them), requested
//! one at a time by a signed-in browser session (a cookie client over a keep-alive connection),
//! so each figure is the server's time to authenticate the session, run the page's GraphQL
//! document in-process and render it (loopback adds microseconds).
//!
//! ```text
//! cargo test -p custody-tests --release --test e2e bench_ui_pages -- --ignored --nocapture
//! ```
//! Issue 13's target on the 2-core machine: under 100 ms for every page.

use std::time::Instant;

use custody_tests::bench::{percentile, requests};
use custody_tests::fixtures::*;
use custody_tests::governance::start_env_with_smtp;
use custody_tests::seed::{seed_runs, RunSeed};
use custody_tests::sign_in::sign_in_by_email;
use serde_json::json;

const ANA: &str = "ana@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load benchmark: run with --ignored --nocapture"]
async fn bench_ui_pages() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let ana = s.issue_token(ANA, false).await;
    create_project(s, &ana, "bench").await;
    let sql = env.sql().await;
    let started = Instant::now();
    seed_runs(
        &sql,
        "bench",
        &RunSeed {
            runs: 100_000,
            metrics: 20,
            params: 10,
        },
    )
    .await;
    println!(
        "seeded 100,000 runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Two runs logged through the API, with 1,000-point histories, to open and compare.
    create_dataset(s, &ana, "bench", "features").await;
    let features =
        id(&register_dataset_version(s, &ana, "bench", "features", &"ab".repeat(32), &[]).await);
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let run = id(&start_run(s, &ana, "bench", name, None, &[features.as_str()]).await);
        log_params(s, &ana, &run, &[("p0", "v1"), ("depth", name)]).await;
        let points: Vec<_> = (0..1000)
            .map(|step| json!({"key": "m0", "value": 1.0 / f64::from(step + 1), "step": step}))
            .collect();
        log_metrics(s, &ana, &run, json!(points)).await;
        ids.push(run);
    }
    // A model version of the first run, for the model, version and lineage pages.
    finish_run(s, &ana, &ids[0], "FINISHED").await;
    create_model(s, &ana, "bench", "churn").await;
    register_model_version(s, &ana, "bench", "churn", &ids[0]).await;
    sql.batch_execute("VACUUM ANALYZE").await.unwrap();
    let browser = sign_in_by_email(s, &smtp, ANA).await;

    let pages = [
        ("home", "/".to_owned()),
        ("runs table", "/projects/bench".to_owned()),
        (
            "runs table, filtered and sorted by a metric",
            "/projects/bench?filter=metrics.m0+%3E+0.5+and+params.p0+%3D+%27v3%27&order=metrics.m1&desc=1&columns=metrics.m1,metrics.m2,params.p3,tags.team".to_owned(),
        ),
        ("run", format!("/runs/{}", ids[0])),
        ("compare", format!("/compare?runs={}&runs={}", ids[0], ids[1])),
        ("lineage of a run", format!("/lineage/run/{}", ids[0])),
        ("models", "/projects/bench/models".to_owned()),
        ("model", "/projects/bench/models/churn".to_owned()),
        ("model version", "/projects/bench/models/churn/versions/1".to_owned()),
        ("datasets", "/projects/bench/datasets".to_owned()),
        ("dataset", "/projects/bench/datasets/features".to_owned()),
        ("project admin", "/projects/bench/admin".to_owned()),
        ("own tokens", "/account/tokens".to_owned()),
        ("approvals inbox", "/approvals".to_owned()),
        ("audit", "/audit?project=bench".to_owned()),
    ];
    for (what, path) in pages {
        let get = || async {
            let response = browser.get(s.url(&path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let body = response.text().await.unwrap();
            assert!(body.contains("</main>"), "{path}: {body}");
        };
        for _ in 0..10 {
            get().await;
        }
        let requests = requests(100);
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            get().await;
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "CUSTODY_BENCH page {what}: requests={requests} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
        );
    }
}
