//! Load benchmark (not a timed test; ignored by default): `modelVersion` reads against a registry
//! of 2,000 model versions, driven by `wrk` (Debian package `wrk`) with 8 keep-alive connections
//! for 15 s. Reports req/s, p50/p99 latency and the server's RSS.
//!
//! ```text
//! cargo test -p custody-tests --release --test e2e bench_model_version_reads -- --ignored --nocapture
//! ```
//! (`--release` runs the release build of the server: the harness takes the binary of the test's
//! own profile.) Issue 2's targets on the 2-core machine: ≥ 3,000 req/s, p99 < 10 ms, RSS < 100 MB.

use std::sync::Arc;
use std::time::Instant;

use custody_tests::fixtures::*;
use custody_tests::server::server_bin;
use custody_tests::TestEnv;
use serde_json::json;

const MODELS: usize = 20;
const VERSIONS: usize = 100;
const CONNECTIONS: usize = 8;
const SECONDS: u64 = 15;

const LUA: &str = r#"
local token = "__TOKEN__"
local models, versions = __MODELS__, __VERSIONS__
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
local query = "query($p: String!, $m: String!, $v: Int!) { modelVersion(project: $p, model: $m, version: $v) { id version stage } }"

local threads = {}
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  counter = tid * 7919
  errors = 0
  misses = 0
end

function request()
  counter = counter + 1
  local m = counter % models
  local v = (math.floor(counter / models) % versions) + 1
  local body = string.format('{"query":"%s","variables":{"p":"bench","m":"model-%02d","v":%d}}', query, m, v)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    errors = errors + 1
  elseif not string.find(body, '"version":', 1, true) then
    misses = misses + 1
  end
end

function done(summary, latency, requests)
  local e, m = 0, 0
  for _, t in ipairs(threads) do
    e = e + t:get("errors")
    m = m + t:get("misses")
  end
  io.write(string.format("CUSTODY_BENCH errors=%d misses=%d requests=%d p50_us=%d p99_us=%d max_us=%d\n",
    e, m, summary.requests, latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// (VmRSS, VmHWM) in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

async fn wrk(url: &str, script: &std::path::Path, seconds: u64) -> String {
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .await
        .expect("running wrk");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "wrk failed ({}):\n{text}", out.status);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load benchmark: run with --ignored --nocapture (and --release)"]
async fn bench_model_version_reads() {
    if which("wrk").is_none() {
        panic!("this benchmark needs `wrk` on PATH: install it with `apt-get install -y wrk` (Debian package `wrk`)");
    }
    let bin = custody_tests::blocking(server_bin).await;
    println!(
        "server binary: {} ({})",
        bin.display(),
        custody_tests::server_build(&bin)
    );

    let env = Arc::new(TestEnv::start().await);
    let a = env.admin.clone();
    create_project(&env.server, &a, "bench").await;

    // The registry: 20 models × 100 versions, one (finished) run per model; 4 models at a time.
    let t0 = Instant::now();
    let mut lanes = Vec::new();
    for lane in 0..4 {
        let env = env.clone();
        let a = a.clone();
        lanes.push(tokio::spawn(async move {
            for m in (lane..MODELS).step_by(4) {
                let name = format!("model-{m:02}");
                create_model(&env.server, &a, "bench", &name).await;
                let run = id(&start_run(
                    &env.server,
                    &a,
                    "bench",
                    &format!("train-{m:02}"),
                    None,
                    &[],
                )
                .await);
                finish_run(&env.server, &a, &run, "FINISHED").await;
                for v in 1..=VERSIONS {
                    let mv = register_model_version(&env.server, &a, "bench", &name, &run).await;
                    assert_eq!(mv["version"], v);
                }
            }
        }));
    }
    for l in lanes {
        l.await.expect("building the registry failed");
    }
    let sql = env.sql().await;
    let n = custody_tests::db::count(&sql, "model_versions").await;
    assert_eq!(n as usize, MODELS * VERSIONS);
    println!(
        "registry: {n} model versions in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // A spot check of the exact request the benchmark sends.
    let d = env
        .gql_ok(
            &a,
            "query($p: String!, $m: String!, $v: Int!) { modelVersion(project: $p, model: $m, version: $v) { id version stage } }",
            json!({ "p": "bench", "m": "model-07", "v": 42 }),
        )
        .await;
    assert_eq!(d["modelVersion"]["version"], 42);

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("model_version.lua");
    std::fs::write(
        &script,
        LUA.replace("__TOKEN__", &a)
            .replace("__MODELS__", &MODELS.to_string())
            .replace("__VERSIONS__", &VERSIONS.to_string()),
    )
    .unwrap();
    let url = env.server.url("/graphql");
    let pid = env.server.pid().unwrap();

    let (rss0, hwm0) = rss_kb(pid);
    let _warmup = wrk(&url, &script, 2).await;
    let (rss_w, _) = rss_kb(pid);
    let out = wrk(&url, &script, SECONDS).await;
    let (rss1, hwm1) = rss_kb(pid);

    println!("----- wrk -t2 -c{CONNECTIONS} -d{SECONDS}s --latency -----\n{out}");
    let rps: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Requests/sec in wrk's output");
    let errors: u64 = field(&out, "errors")
        .and_then(|v| v.parse().ok())
        .expect("errors=");
    let misses: u64 = field(&out, "misses")
        .and_then(|v| v.parse().ok())
        .expect("misses=");
    let requests: u64 = field(&out, "requests")
        .and_then(|v| v.parse().ok())
        .expect("requests=");
    let p50 = field(&out, "p50_us")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap()
        / 1000.0;
    let p99 = field(&out, "p99_us")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap()
        / 1000.0;
    let mb = |kb: u64| kb as f64 / 1024.0;

    let verdict = |ok: bool| if ok { "meets target" } else { "MISSES target" };
    println!("================ modelVersion reads: {} versions, {CONNECTIONS} keep-alive connections, {SECONDS} s ================", MODELS * VERSIONS);
    println!("requests       : {requests} ({errors} errors, {misses} answers without a version)");
    println!(
        "throughput     : {rps:.0} req/s   (target >= 3000: {})",
        verdict(rps >= 3000.0)
    );
    println!("latency p50    : {p50:.2} ms");
    println!(
        "latency p99    : {p99:.2} ms   (target < 10 ms: {})",
        verdict(p99 < 10.0)
    );
    println!(
        "server RSS     : {:.1} MB before, {:.1} MB after warm-up, {:.1} MB after; peak (VmHWM) {:.1} MB -> {:.1} MB   (target < 100 MB: {})",
        mb(rss0),
        mb(rss_w),
        mb(rss1),
        mb(hwm0),
        mb(hwm1),
        verdict(hwm1 < 100 * 1024)
    );
    println!("client         : wrk 2 threads on the same 2-core machine (the server shares the CPU with it and PostgreSQL)");
    println!("===========================================================================================");

    assert!(requests > 0, "wrk sent no requests");
    assert_eq!(errors, 0, "some modelVersion reads failed");
    assert_eq!(misses, 0, "some modelVersion reads returned no version");
}
