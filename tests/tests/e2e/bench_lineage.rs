//! Load benchmark (not a timed test; ignored by default): lineage at a million edges.
//!
//! The graph (seeded in SQL, shaped as the server writes it): 2,000 jobs and ten layers of
//! pipeline runs, 20,000 runs a layer. Each run is `run_of` its job, `consumed` three dataset
//! versions of the layer before (its neighbours' outputs, so fan-in and fan-out are three) and
//! `produced_by` one version; the first layer reads 20,000 source tables. 200,000 runs × 5
//! edges = 1,000,000 edges. One more source, a reference table, is read by 500 runs of the
//! first layer: about 10,000 nodes descend from it.
//!
//! Measured, one request at a time over HTTP (p50 / p99 / max):
//! - `lineage` to depth 10, upstream from a random last-layer version and downstream from a
//!   random source (a random start per request);
//! - `impact` of the reference table (every descendant, grouped by kind);
//! - OpenLineage ingest: `BENCH_CLIENTS` (default 8) clients posting RunEvents (a new run of one
//!   of 100 jobs reading two tables and writing one) for `BENCH_SECONDS` (default 10): events/s.
//!   Each run reports once, COMPLETE with its inputs and outputs; with `BENCH_PAIRS=1` twice, as
//!   most integrations do: START with its inputs, then COMPLETE with inputs and outputs.
//!
//! `BENCH_EXPLAIN=1` also prints the plans of the impact's fetches by id.
//!
//! ```text
//! cargo build --release -p custody-server
//! CUSTODY_SERVER_BIN=…/release/custody-server \
//!   cargo test -p custody-tests --release --test e2e bench_lineage -- --ignored --nocapture
//! ```
//! Issue 15's targets on the 2-core machine: traversal p99 < 20 ms, impact < 200 ms, ingest
//! ≥ 2,000 events/s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_tests::bench::{percentile, requests};
use custody_tests::fixtures::*;
use custody_tests::TestEnv;
use serde_json::{json, Value};

const LAYERS: i32 = 10;
const WIDTH: i32 = 20_000;
const HUB_READERS: i32 = 500;

const LINEAGE: &str = "query($n: NodeRef!, $d: LineageDirection!) {
    lineage(node: $n, direction: $d, depth: 10) { nodes { kind id } edges { relation from { id } to { id } } } }";
const IMPACT: &str = "query($n: NodeRef!) { impact(node: $n) {
    datasetVersions { id } runs { id } jobs { id } modelVersions { id stage } deployments { stage } } }";

fn report(what: &str, mut times: Vec<Duration>, extra: &str) {
    times.sort();
    println!(
        "CUSTODY_BENCH {what}: requests={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} {extra}",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

/// A small deterministic generator for start nodes (no dependency for so little).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: i32) -> i32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as i32
    }
}

/// The id the seed gives a node: `md5(<label>)` as a uuid, so edges name their ends without
/// joins.
async fn seeded_id(sql: &tokio_postgres::Client, label: &str) -> String {
    sql.query_one("SELECT md5($1)::uuid::text", &[&label])
        .await
        .unwrap()
        .get(0)
}

async fn seed(sql: &tokio_postgres::Client) {
    let project: uuid::Uuid = sql
        .query_one("SELECT id FROM projects WHERE name = 'bench'", &[])
        .await
        .unwrap()
        .get(0);
    let admin: uuid::Uuid = sql
        .query_one("SELECT id FROM users WHERE email = 'admin@localhost'", &[])
        .await
        .unwrap()
        .get(0);
    sql.execute(
        "INSERT INTO jobs (id, project_id, namespace, name)
         SELECT md5('job-' || k)::uuid, $1::uuid, 'bench', 'job-' || k FROM generate_series(0, 1999) k",
        &[&project],
    )
    .await
    .unwrap();
    // Layer -1 holds the sources; `hub` is the reference table.
    sql.execute(
        "INSERT INTO datasets (id, project_id, name)
         SELECT md5('ds-' || l)::uuid, $1::uuid, 'layer' || l FROM generate_series(-1, 9) l
         UNION ALL SELECT md5('ds-hub')::uuid, $1::uuid, 'hub'",
        &[&project],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO dataset_versions (id, dataset_id, version, uri, sha256, created_by)
         SELECT md5('dv-' || l || '-' || j)::uuid, md5('ds-' || l)::uuid, j + 1,
                's3://bench/' || l || '/' || j, encode(sha256(('dv-' || l || '-' || j)::bytea), 'hex'), $1::uuid
         FROM generate_series(-1, 9) l, generate_series(0, 19999) j
         UNION ALL SELECT md5('dv-hub')::uuid, md5('ds-hub')::uuid, 1, 's3://bench/hub',
                encode(sha256('hub'::bytea), 'hex'), $1::uuid",
        &[&admin],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO runs (id, project_id, name, status, created_by, started_at, ended_at)
         SELECT md5('run-' || l || '-' || j)::uuid, $1::uuid, 'job-' || (j % 2000), 'finished', $2::uuid, now(), now()
         FROM generate_series(0, 9) l, generate_series(0, 19999) j",
        &[&project, &admin],
    )
    .await
    .unwrap();
    sql.batch_execute(
        "INSERT INTO lineage_edges (id, from_kind, from_id, to_kind, to_id, relation)
         SELECT gen_random_uuid(), 'run', md5('run-' || l || '-' || j)::uuid, 'dataset_version',
                md5('dv-' || (l - 1) || '-' || ((j - d + 20000) % 20000))::uuid, 'consumed'
         FROM generate_series(0, 9) l, generate_series(0, 19999) j, generate_series(0, 2) d;
         INSERT INTO lineage_edges (id, from_kind, from_id, to_kind, to_id, relation)
         SELECT gen_random_uuid(), 'dataset_version', md5('dv-' || l || '-' || j)::uuid, 'run',
                md5('run-' || l || '-' || j)::uuid, 'produced_by'
         FROM generate_series(0, 9) l, generate_series(0, 19999) j;
         INSERT INTO lineage_edges (id, from_kind, from_id, to_kind, to_id, relation)
         SELECT gen_random_uuid(), 'run', md5('run-' || l || '-' || j)::uuid, 'job',
                md5('job-' || (j % 2000))::uuid, 'run_of'
         FROM generate_series(0, 9) l, generate_series(0, 19999) j;
         INSERT INTO lineage_edges (id, from_kind, from_id, to_kind, to_id, relation)
         SELECT gen_random_uuid(), 'run', md5('run-0-' || j)::uuid, 'dataset_version',
                md5('dv-hub')::uuid, 'consumed'
         FROM generate_series(0, 499) j;",
    )
    .await
    .unwrap();
    // Measured at rest: autovacuum of the fresh tables would compete for the 2 cores.
    sql.batch_execute("VACUUM ANALYZE").await.unwrap();
}

/// One OpenLineage RunEvent of run `run_id`, the `n`th run: one of 100 jobs, reading two tables,
/// writing one (a START names only its inputs).
fn ingest_event(n: usize, run_id: uuid::Uuid, event_type: &str) -> Value {
    let table = |k: usize| json!({"namespace": "postgres://bench:5432", "name": format!("public.t{}", k % 1000)});
    let outputs = if event_type == "START" {
        json!([])
    } else {
        json!([table(n * 13 + 1)])
    };
    json!({
        "eventType": event_type,
        "eventTime": chrono::Utc::now().to_rfc3339(),
        "producer": "https://github.com/example/bench",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id.to_string()},
        "job": {"namespace": "bench-pipelines", "name": format!("ingest-{}", n % 100)},
        "inputs": [table(n * 7), table(n * 7 + 3)],
        "outputs": outputs,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load benchmark: run with --release --ignored --nocapture"]
async fn bench_lineage() {
    let env = TestEnv::start().await;
    create_project(&env.server, &env.admin, "bench").await;
    let sql = env.sql().await;
    let started = Instant::now();
    seed(&sql).await;
    let edges: i64 = sql
        .query_one("SELECT count(*) FROM lineage_edges", &[])
        .await
        .unwrap()
        .get(0);
    assert!(edges >= 1_000_000, "{edges} edges");
    println!(
        "seeded {edges} edges in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Traversals to depth 10 from random starts, both directions.
    let mut lcg = Lcg(42);
    let mut ids = Vec::new();
    for _ in 0..64 {
        ids.push((
            seeded_id(&sql, &format!("dv-9-{}", lcg.below(WIDTH))).await,
            seeded_id(&sql, &format!("dv--1-{}", lcg.below(WIDTH))).await,
        ));
    }
    for (direction, pick) in [("UPSTREAM", 0), ("DOWNSTREAM", 1)] {
        let mut times = Vec::new();
        let mut nodes = 0;
        for i in 0..requests(300) + 20 {
            let (last, source) = &ids[i % ids.len()];
            let start = if pick == 0 { last } else { source };
            let vars = json!({"n": {"kind": "DATASET_VERSION", "id": start}, "d": direction});
            let began = Instant::now();
            let d = env.gql_ok(&env.admin, LINEAGE, vars).await;
            let took = began.elapsed();
            nodes = d["lineage"]["nodes"].as_array().unwrap().len();
            assert!(nodes > 20, "{direction}: {nodes} nodes");
            if i >= 20 {
                times.push(took);
            }
        }
        report(
            &format!("lineage {direction} depth 10"),
            times,
            &format!("nodes={nodes}"),
        );
    }

    // Impact of the reference table.
    let hub = seeded_id(&sql, "dv-hub").await;
    let vars = json!({"n": {"kind": "DATASET_VERSION", "id": hub}});
    reset_statements(&sql).await;
    let mut times = Vec::new();
    let mut descendants = 0;
    let body = json!({"query": IMPACT, "variables": vars});
    for i in 0..(requests(300) / 10).max(10) + 3 {
        // Timed to the last byte of the answer; the load generator's parsing of ~10,000 nodes
        // (a debug build) is not the server's latency.
        let began = Instant::now();
        let answer = env
            .server
            .http
            .post(env.server.url("/graphql"))
            .bearer_auth(&env.admin)
            .json(&body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let took = began.elapsed();
        let d: Value = serde_json::from_slice(&answer).unwrap();
        assert!(d.get("errors").is_none(), "{d}");
        let impact = &d["data"]["impact"];
        descendants = impact["runs"].as_array().unwrap().len()
            + impact["datasetVersions"].as_array().unwrap().len();
        if i >= 3 {
            times.push(took);
        }
    }
    let expected_runs: i32 = (0..LAYERS).map(|l| HUB_READERS + 2 * l).sum();
    assert_eq!(
        descendants as i32,
        2 * expected_runs,
        "descendants of the hub"
    );
    let impacts = times.len() + 3;
    report(
        "impact of the reference table",
        times,
        &format!("descendants={descendants}"),
    );
    statement_profile(&sql, "impact", impacts).await;
    if std::env::var_os("BENCH_EXPLAIN").is_some() {
        explain_fetches(&sql).await;
    }

    // OpenLineage ingest: BENCH_CLIENTS (default 8) clients for BENCH_SECONDS.
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let url = env.server.url("/api/v1/lineage?project=bench");
    // First sight of every table and job outside the measurement.
    for n in 0..1000 {
        let answer = env
            .server
            .http
            .post(&url)
            .bearer_auth(&env.admin)
            .json(&ingest_event(n, uuid::Uuid::now_v7(), "COMPLETE"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    }
    reset_statements(&sql).await;
    let sent = Arc::new(AtomicUsize::new(1000));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let began = Instant::now();
    let mut clients = Vec::new();
    let clients_count: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let pairs = std::env::var_os("BENCH_PAIRS").is_some();
    let planned_before = env
        .server
        .metric(&env.admin, "custody_openlineage_events_planned_total")
        .await;
    for _ in 0..clients_count {
        let (http, url, token, sent) = (
            env.server.http.clone(),
            url.clone(),
            env.admin.clone(),
            sent.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                let run_id = uuid::Uuid::now_v7();
                let reports: &[&str] = if pairs {
                    &["START", "COMPLETE"]
                } else {
                    &["COMPLETE"]
                };
                for event_type in reports {
                    let event = ingest_event(n, run_id, event_type);
                    let t = Instant::now();
                    let answer = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&event)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
                    times.push(t.elapsed());
                }
            }
            times
        }));
    }
    let mut times = Vec::new();
    for client in clients {
        times.extend(client.await.unwrap());
    }
    let elapsed = began.elapsed().as_secs_f64();
    let events = times.len();
    report(
        &format!(
            "OpenLineage ingest, {clients_count} clients, {}",
            if pairs {
                "START then COMPLETE per run"
            } else {
                "COMPLETE per run"
            }
        ),
        times,
        &format!(
            "events={events} events_per_s={:.0}",
            events as f64 / elapsed
        ),
    );
    statement_profile(&sql, "event", events).await;
    // How the concurrent events shared their transactions (the server's group commit).
    let metric = |series: &'static str| env.server.metric(&env.admin, series);
    let batches = metric("custody_group_commit_batches_total{queue=\"openlineage\"}").await;
    let applied = metric("custody_group_commit_calls_total{queue=\"openlineage\"}").await;
    let reapplied = metric("custody_openlineage_batches_reapplied_total").await;
    let planned = metric("custody_openlineage_events_planned_total").await - planned_before;
    println!(
        "group commit: {applied} events in {batches} transactions ({:.1} a transaction), {reapplied} batches applied again one by one; {planned} of the measured events recorded set-wise",
        applied / batches.max(1.0),
    );
}

async fn reset_statements(sql: &tokio_postgres::Client) {
    sql.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
    )
    .await
    .unwrap();
}

/// Where each request's database time went since the last reset (pg_stat_statements, preloaded
/// by the test cluster).
async fn statement_profile(sql: &tokio_postgres::Client, per: &str, events: usize) {
    let this_db = "dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let total = sql
        .query_one(
            &format!("SELECT sum(calls)::bigint, sum(total_exec_time) FROM pg_stat_statements WHERE {this_db}"),
            &[],
        )
        .await
        .unwrap();
    let (calls, ms): (i64, f64) = (total.get(0), total.get(1));
    let events = events.max(1) as f64;
    println!(
        "PostgreSQL per {per}: {:.1} statements, {:.3} ms of execution; the top statements:",
        calls as f64 / events,
        ms / events
    );
    // `BENCH_STATEMENTS=40` lists every statement of an event, not only the top 15.
    let shown: u32 = std::env::var("BENCH_STATEMENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(15);
    let rows = sql
        .query(
            &format!(
                "SELECT calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g')
                 FROM pg_stat_statements WHERE {this_db} ORDER BY 2 DESC LIMIT {shown}"
            ),
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let (calls, ms, query): (i64, f64, String) = (row.get(0), row.get(1), row.get(2));
        println!(
            "  {:>7.3} ms/{per} {:>6.2} calls/{per} {:>7.1} µs/call  {}",
            ms / events,
            calls as f64 / events,
            ms * 1e3 / calls.max(1) as f64,
            query.chars().take(120).collect::<String>()
        );
    }
}

/// `BENCH_EXPLAIN=1`: the plans PostgreSQL picks for the set-at-a-time fetches of an impact
/// answer (5,000 random runs), as the server's connections plan them.
async fn explain_fetches(sql: &tokio_postgres::Client) {
    let ids: Vec<uuid::Uuid> = sql
        .query("SELECT id FROM runs ORDER BY random() LIMIT 5000", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    sql.batch_execute("SET jit = off").await.unwrap();
    for statement in [
        "SELECT DISTINCT e.to_id FROM unnest($1::uuid[]) AS run(id) \
         JOIN lineage_edges e ON e.from_id = run.id WHERE e.relation = 'run_of'",
        "SELECT runs.* FROM unnest($1::uuid[]) AS wanted(id) JOIN runs ON runs.id = wanted.id",
        "SELECT DISTINCT j.to_id FROM unnest($1::uuid[]) AS run(id) CROSS JOIN LATERAL \
         (SELECT e.to_id FROM lineage_edges e WHERE e.from_id = run.id AND e.relation = 'run_of' OFFSET 0) j",
        "SELECT r.* FROM unnest($1::uuid[]) AS wanted(id) CROSS JOIN LATERAL \
         (SELECT * FROM runs WHERE runs.id = wanted.id OFFSET 0) r",
    ] {
        let plan = sql
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {statement}"), &[&ids])
            .await
            .unwrap();
        println!("{statement}");
        for line in plan {
            println!("    {}", line.get::<_, String>(0));
        }
    }
}
