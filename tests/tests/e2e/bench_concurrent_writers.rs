//! Load benchmark (not a timed test; ignored by default): 16 concurrent writers for 20 s, each
//! issuing a realistic mix of audited mutations through GraphQL over HTTP against the real server
//! (release build) on the harness's PostgreSQL. Every mutation appends its audit entries in its own
//! transaction, just before commit, and all writers serialise on the audit chain's head row for
//! that append: this measures that write path. Reports mutations/s, p50/p99/max latency (overall
//! and per mutation) and the machine's load.
//!
//! ```text
//! cargo test -p custody-tests --release --test e2e bench_concurrent_writers -- --ignored --nocapture
//! ```
//!
//! One writer's round (its own dataset and model, a fresh one every 5 rounds):
//! `registerDatasetVersion` (derived from its previous version) → `startRun` (on a shared code
//! commit, consuming that version) → `logParams` → `finishRun` → `registerModelVersion` →
//! `requestPromotion` to `development` (no approval: it applies at once, archiving the previous
//! holder and recording a deployment) → `linkLineage` (the model version `evaluated_on` the
//! dataset version); plus `createDataset` and `createModel` when it starts a new pair.
//!
//! The harness's cluster runs with `fsync=off` and `synchronous_commit=off` (test settings): commits
//! cost no disk flush here, so the figures are an upper bound for a production database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_tests::audit::{fetch_all, verify_chain};
use custody_tests::db::count;
use custody_tests::fixtures::{create_project, id, member_token, register_commit};
use custody_tests::pg::PgCluster;
use custody_tests::server::server_bin;
use custody_tests::{commit_sha, sha256_hex, TestEnv};
use serde_json::{json, Value};

const WRITERS: usize = 16;
/// Contributors of the project; writer `w` acts as member `w % MEMBERS`.
const MEMBERS: usize = 8;
const SECONDS: u64 = 20;
/// A writer creates a new dataset and model every this many rounds.
const ROUNDS_PER_PAIR: usize = 5;

const CREATE_DATASET: &str =
    "mutation($p: String!, $n: String!) { createDataset(project: $p, name: $n, description: \"bench\") { id } }";
const REGISTER_DATASET_VERSION: &str = "mutation($p: String!, $d: String!, $u: String!, $s: Sha256!, $f: [ID!]) {
  registerDatasetVersion(project: $p, dataset: $d, uri: $u, sha256: $s, sizeBytes: 1048576, tags: [\"bench\"], derivedFrom: $f) { id version } }";
const START_RUN: &str = "mutation($p: String!, $n: String, $c: ID, $i: [ID!], $t: JSON) {
  startRun(project: $p, name: $n, codeCommitId: $c, inputs: $i, tags: $t) { id } }";
const LOG_PARAMS: &str =
    "mutation($r: ID!, $p: [ParamInput!]!) { logParams(runId: $r, params: $p) { id } }";
const FINISH_RUN: &str =
    "mutation($r: ID!) { finishRun(runId: $r, status: FINISHED) { id status } }";
const CREATE_MODEL: &str = "mutation($p: String!, $n: String!) {
  createModel(project: $p, name: $n, description: \"bench\", primaryMetric: \"auc\") { id } }";
const REGISTER_MODEL_VERSION: &str = "mutation($p: String!, $m: String!, $r: ID!) {
  registerModelVersion(project: $p, model: $m, runId: $r, description: \"bench\") { id version } }";
const REQUEST_PROMOTION: &str = "mutation($v: ID!) {
  requestPromotion(modelVersionId: $v, stage: \"development\", comment: \"bench\") { id status } }";
const LINK_LINEAGE: &str = "mutation($f: NodeRef!, $t: NodeRef!) {
  linkLineage(from: $f, to: $t, relation: \"evaluated_on\") { id } }";

/// One writer: its own HTTP client (keep-alive connection), token and latency record.
struct Writer {
    n: usize,
    http: reqwest::Client,
    url: String,
    token: String,
    commit: String,
    /// (mutation, latency) of every call in the measured period.
    samples: Vec<(&'static str, Duration)>,
    recording: bool,
}

impl Writer {
    /// POSTs one mutation; panics on any error (a benchmark of failures measures nothing).
    async fn call(&mut self, name: &'static str, query: &str, variables: Value) -> Value {
        let started = Instant::now();
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("writer {}: {name}: {e}", self.n));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_else(|e| {
            panic!(
                "writer {}: {name}: answer is not JSON ({status}): {e}",
                self.n
            )
        });
        let elapsed = started.elapsed();
        if body["errors"].as_array().is_some_and(|e| !e.is_empty()) || !status.is_success() {
            panic!("writer {}: {name} failed ({status}): {body}", self.n);
        }
        if self.recording {
            self.samples.push((name, elapsed));
        }
        body["data"].clone()
    }

    /// Writes rounds, numbered from `first_round`, until `until` or `max_rounds`; answers the
    /// number of rounds.
    async fn run(&mut self, until: Instant, first_round: usize, max_rounds: usize) -> usize {
        let w = self.n;
        let mut round = first_round;
        let mut dataset = String::new();
        let mut model = String::new();
        let mut previous_version: Option<String> = None;
        while Instant::now() < until && round - first_round < max_rounds {
            if round.is_multiple_of(ROUNDS_PER_PAIR) || dataset.is_empty() {
                dataset = format!("ds-{w:02}-{round:05}");
                model = format!("model-{w:02}-{round:05}");
                self.call(
                    "createDataset",
                    CREATE_DATASET,
                    json!({ "p": "bench", "n": dataset }),
                )
                .await;
                self.call(
                    "createModel",
                    CREATE_MODEL,
                    json!({ "p": "bench", "n": model }),
                )
                .await;
                previous_version = None;
            }
            let seed = format!("{w}-{round}");
            let derived: Vec<&str> = previous_version.iter().map(String::as_str).collect();
            let d = self
                .call(
                    "registerDatasetVersion",
                    REGISTER_DATASET_VERSION,
                    json!({
                        "p": "bench", "d": dataset, "s": sha256_hex(&seed), "f": derived,
                        "u": format!("s3://bench-data/{dataset}/{seed}.parquet"),
                    }),
                )
                .await;
            let dv = id(&d["registerDatasetVersion"]);
            let d = self
                .call(
                    "startRun",
                    START_RUN,
                    json!({
                        "p": "bench", "n": format!("train-{seed}"), "c": self.commit, "i": [dv],
                        "t": { "writer": w.to_string(), "round": round.to_string() },
                    }),
                )
                .await;
            let run = id(&d["startRun"]);
            self.call(
                "logParams",
                LOG_PARAMS,
                json!({ "r": run, "p": [
                    { "key": "lr", "value": "0.01" },
                    { "key": "epochs", "value": "20" },
                    { "key": "seed", "value": seed },
                ]}),
            )
            .await;
            self.call("finishRun", FINISH_RUN, json!({ "r": run }))
                .await;
            let d = self
                .call(
                    "registerModelVersion",
                    REGISTER_MODEL_VERSION,
                    json!({ "p": "bench", "m": model, "r": run }),
                )
                .await;
            let mv = id(&d["registerModelVersion"]);
            let d = self
                .call("requestPromotion", REQUEST_PROMOTION, json!({ "v": mv }))
                .await;
            assert_eq!(
                d["requestPromotion"]["status"], "APPLIED",
                "a promotion to development applies at once: {d}"
            );
            self.call(
                "linkLineage",
                LINK_LINEAGE,
                json!({
                    "f": { "kind": "MODEL_VERSION", "id": mv },
                    "t": { "kind": "DATASET_VERSION", "id": dv },
                }),
            )
            .await;
            previous_version = Some(dv);
            round += 1;
        }
        round - first_round
    }
}

/// Busy and total jiffies of all CPUs (first line of /proc/stat).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// (parent pid, utime + stime in jiffies) of a process.
fn process_stat(pid: u32) -> (u32, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // ppid, utime and stime are fields 4, 14 and 15 of the whole line: 1, 11 and 12 after ')'.
    (get(1) as u32, get(11) + get(12))
}

fn process_jiffies(pid: u32) -> u64 {
    process_stat(pid).1
}

/// CPU time of the harness's PostgreSQL: the postmaster and its children (the backends).
fn postgres_jiffies() -> u64 {
    let cluster = PgCluster::get();
    let Some(postmaster) = std::fs::read_to_string(cluster.root.join("data/postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0;
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .map(|pid| (pid, process_stat(pid)))
        .filter(|(pid, (ppid, _))| *pid == postmaster || *ppid == postmaster)
        .map(|(_, (_, jiffies))| jiffies)
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load benchmark: run with --ignored --nocapture (and --release)"]
async fn bench_concurrent_writers() {
    let bin = custody_tests::blocking(server_bin).await;
    println!(
        "server binary: {} ({})",
        bin.display(),
        custody_tests::server_build(&bin)
    );

    let env = Arc::new(TestEnv::start().await);
    let s = &env.server;
    let admin = env.admin.clone();
    create_project(s, &admin, "bench").await;
    let mut tokens = Vec::new();
    for m in 0..MEMBERS {
        let email = format!("writer{m}@example.com");
        tokens.push(member_token(s, &admin, "bench", &email, "CONTRIBUTOR").await);
    }
    let commit = id(&register_commit(
        s,
        &admin,
        "https://git.example.com/bench/train.git",
        &commit_sha("bench"),
    )
    .await);

    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|n| Writer {
            n,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: s.url("/graphql"),
            token: tokens[n % MEMBERS].clone(),
            commit: commit.clone(),
            samples: Vec::new(),
            recording: false,
        })
        .collect();

    // Warm-up: one round each, all at once (connections open, caches and plans warm).
    let warm: Vec<_> = writers
        .drain(..)
        .map(|mut w| {
            tokio::spawn(async move {
                w.run(Instant::now() + Duration::from_secs(600), 0, 1).await;
                w
            })
        })
        .collect();
    for h in warm {
        writers.push(h.await.expect("warm-up failed"));
    }

    let sql = env.sql().await;
    let audit_before = count(&sql, "audit_log").await;
    let pid = s.pid().unwrap();
    let (busy0, total0) = cpu_jiffies();
    let server0 = process_jiffies(pid);
    let postgres0 = custody_tests::blocking(postgres_jiffies).await;
    let load_before = custody_tests::loadavg();
    let started = Instant::now();
    let until = started + Duration::from_secs(SECONDS);
    let handles: Vec<_> = writers
        .drain(..)
        .map(|mut w| {
            tokio::spawn(async move {
                w.recording = true;
                let rounds = w.run(until, 1_000, usize::MAX).await;
                (w, rounds)
            })
        })
        .collect();
    let mut samples: Vec<(&'static str, Duration)> = Vec::new();
    let mut rounds = 0;
    for h in handles {
        let (w, r) = h.await.expect("a writer failed");
        samples.extend(w.samples);
        rounds += r;
    }
    let elapsed = started.elapsed();
    let (busy1, total1) = cpu_jiffies();
    let server1 = process_jiffies(pid);
    let postgres1 = custody_tests::blocking(postgres_jiffies).await;
    let load_after = custody_tests::loadavg();
    let audit_after = count(&sql, "audit_log").await;

    let mutations = samples.len();
    let mut all: Vec<Duration> = samples.iter().map(|(_, d)| *d).collect();
    all.sort();
    let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for (k, d) in &samples {
        by_kind.entry(k).or_default().push(*d);
    }
    let hz = 100.0; // USER_HZ on Linux
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine_busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * 100.0;
    let server_cpu = (server1 - server0) as f64 / hz / elapsed.as_secs_f64();
    let postgres_cpu = (postgres1 - postgres0) as f64 / hz / elapsed.as_secs_f64();

    println!("================ concurrent writers: {WRITERS} writers ({MEMBERS} contributors), {SECONDS} s ================");
    println!(
        "mutations      : {mutations} in {:.1} s ({rounds} rounds) = {:.0} mutations/s",
        elapsed.as_secs_f64(),
        mutations as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency        : p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(all[all.len() - 1])
    );
    println!("audit entries  : {} written", audit_after - audit_before);
    for (k, v) in &mut by_kind {
        v.sort();
        println!(
            "  {k:<24} {:>6} calls   p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
            v.len(),
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(v[v.len() - 1])
        );
    }
    println!(
        "machine        : {cpus} CPUs {machine_busy:.0}% busy while measuring; load average {load_before} before, {load_after} after"
    );
    println!(
        "CPU used       : custody-server {server_cpu:.2} CPUs, PostgreSQL {postgres_cpu:.2} CPUs on average (the {WRITERS} clients and other work share the rest)"
    );
    println!("database       : the harness cluster (fsync=off, synchronous_commit=off), pool of 16 connections");
    println!("===========================================================================================");

    assert!(mutations > 0, "no mutation was measured");
    assert!(
        audit_after - audit_before >= mutations as i64,
        "every mutation writes at least one audit entry: {mutations} mutations, {} entries",
        audit_after - audit_before
    );
    // The chain held under the concurrency: no fork, no gap, every hash recomputes.
    let entries = fetch_all(s, &admin, "").await;
    verify_chain(&entries).unwrap_or_else(|e| panic!("audit chain after the benchmark: {e}"));
}
