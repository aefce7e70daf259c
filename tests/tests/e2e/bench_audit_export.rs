//! Load benchmark (not a timed test; ignored by default): export and verify 1,000,000 audit
//! entries. Reports entries/s for the export (over HTTP from the real server) and for the offline
//! verification (the real `custody-server audit verify`), and the peak memory of both, at
//! 100,000 and at 1,000,000 entries to show it stays flat.
//!
//! ```text
//! cargo test -p custody-tests --release --test e2e bench_audit_export -- --ignored --nocapture
//! ```
//! Issue 6's targets: export ≥ 200,000 entries/s, verification ≥ 500,000 entries/s, memory flat.
//!
//! Writing a million entries through the API would take most of an hour, so the chain is
//! generated here — hashed with the test harness's own canonical JSON and SHA-256 (not the
//! server's code), so a mismatch would fail verification — and bulk-loaded with `COPY` into a
//! fresh database before the server starts; the server then appends its own first entries to
//! that chain. Everything after the load is the real server and the real verifier.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use custody_tests::audit::{canonical_json, entry_hash, GENESIS};
use custody_tests::pg::{PgCluster, SUPERUSER};
use custody_tests::server::{server_bin, tmp_dir, Server};
use custody_tests::TestDb;
use serde_json::{json, Value};

const ENTRIES: u64 = 1_000_000;
const SMALL: u64 = 100_000;

/// `2025-01-01T00:00:00Z` plus `micros`, as the server writes `at`.
fn at(micros: u64) -> String {
    let (secs, us) = (micros / 1_000_000, micros % 1_000_000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    assert!(days < 31, "the generated log stays within January 2025");
    format!(
        "2025-01-{:02}T{:02}:{:02}:{:02}.{us:06}Z",
        days + 1,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// COPY text format: backslash, tab, newline and CR escaped.
fn copy_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// Generates entries 1..=n (one per millisecond, shaped like `dataset.create`) and streams them
/// into `audit_log` with psql's `\copy`; returns the head (seq, hash).
fn load_chain(db: &TestDb, n: u64) -> (u64, String) {
    let cluster = PgCluster::get();
    let mut psql = Command::new(cluster.bin_dir.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", SUPERUSER, "-d", &db.name, "-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg("-c")
        .arg("\\copy audit_log (seq, at, actor, action, project_id, subject_kind, subject_id, before, after, request_id, prev_hash, hash) FROM STDIN")
        .stdin(Stdio::piped())
        .spawn()
        .expect("running psql");
    let project = "0190a4c2-5d1e-7a3b-9c4d-2e1f0a9b8c7d";
    let mut out = std::io::BufWriter::with_capacity(1 << 20, psql.stdin.take().unwrap());
    let mut prev = GENESIS.to_string();
    for seq in 1..=n {
        let subject = format!("0190a4c2-{:04x}-7000-8000-{seq:012x}", seq % 0x10000);
        let after = json!({"name": format!("dataset-{seq}"), "description": "benchmark dataset", "project": "bench"});
        let request_id = format!("{seq:08x}-0000-4000-8000-000000000000");
        let entry = json!({
            "seq": seq, "at": at(seq * 1_000), "actor": "bench@example.com", "action": "dataset.create",
            "project_id": project, "subject_kind": "dataset", "subject_id": subject,
            "before": Value::Null, "after": after, "request_id": request_id,
        });
        let hash = entry_hash(&prev, &entry);
        writeln!(
            out,
            "{seq}\t{}\tbench@example.com\tdataset.create\t{project}\tdataset\t{subject}\t\\N\t{}\t{request_id}\t{prev}\t{hash}",
            at(seq * 1_000),
            copy_text(&canonical_json(&entry["after"]))
        )
        .unwrap();
        prev = hash;
    }
    drop(out);
    let st = psql.wait().unwrap();
    assert!(st.success(), "psql \\copy failed ({st})");
    (n, prev)
}

/// VmRSS of a process in kB (0 once it is gone).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples the RSS of `pid` every 20 ms until `stop` is set; answers the peak.
fn sample_peak(
    pid: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_kb(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

struct Run {
    entries: u64,
    bytes: u64,
    seconds: f64,
    peak_rss_kb: u64,
}

/// Streams `GET /api/audit/export?query` to `path`, measuring time and the server's peak RSS.
async fn export_to(server: &Server, token: &str, query: &str, path: &std::path::Path) -> Run {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(server.pid().unwrap(), stop.clone());
    let t = Instant::now();
    let mut resp = server
        .http
        .get(server.url(&format!("/api/audit/export?{query}")))
        .bearer_auth(token)
        .timeout(Duration::from_secs(1800))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let (mut bytes, mut newlines) = (0u64, 0u64);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    let seconds = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    Run {
        entries: newlines - 1,
        bytes,
        seconds,
        peak_rss_kb: sampler.join().unwrap(),
    }
}

/// Runs the real `custody-server audit verify`, measuring time and its peak RSS.
fn verify(file: &std::path::Path, key: &std::path::Path, entries: u64) -> Run {
    let t = Instant::now();
    let child = Command::new(server_bin())
        .args(["audit", "verify"])
        .arg(file)
        .arg("--public-key")
        .arg(key)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(child.id(), stop.clone());
    let out = child.wait_with_output().unwrap();
    let seconds = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verification failed:\n{text}");
    assert!(text.contains(&format!("{entries} entries")), "{text}");
    Run {
        entries,
        bytes: std::fs::metadata(file).unwrap().len(),
        seconds,
        peak_rss_kb: sampler.join().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load benchmark: run with --ignored --nocapture (and --release)"]
async fn bench_audit_export_and_verify() {
    let bin = tokio::task::spawn_blocking(server_bin).await.unwrap();
    println!(
        "server binary: {} ({})",
        bin.display(),
        custody_tests::server_build(&bin)
    );

    let db = TestDb::create().await;
    let t = Instant::now();
    let name = db.name.clone();
    let db = tokio::task::spawn_blocking(move || {
        let (head_seq, head_hash) = load_chain(&db, ENTRIES);
        (db, head_seq, head_hash, name)
    })
    .await
    .unwrap();
    let (db, head_seq, head_hash, _) = db;
    let sql = db.connect().await;
    sql.execute(
        "UPDATE audit_head SET seq = $1, hash = $2",
        &[&(head_seq as i64), &head_hash],
    )
    .await
    .unwrap();
    // Rows an export reads in production were written long ago and have their visibility hints
    // set; freshly copied ones would make the first export pay for writing them all.
    sql.batch_execute("VACUUM (FREEZE, ANALYZE) audit_log")
        .await
        .unwrap();
    println!(
        "generated and loaded {ENTRIES} chained entries in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The server starts on that log and appends its own first entries (the admin) to the chain.
    let server = Server::start(Some(&db.url)).await;
    let total: i64 = sql
        .query_one("SELECT seq FROM audit_head", &[])
        .await
        .unwrap()
        .get(0);
    let dir = tmp_dir("custody-bench-export-");
    let key = dir.path().join("key.pem");
    let pem = server
        .http
        .get(server.url("/api/audit/public-key?format=pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(&key, pem).unwrap();
    let idle_rss = rss_kb(server.pid().unwrap());

    // 100,000 entries (the period up to the 100,001st entry's time), then everything.
    let small_file = dir.path().join("small.jsonl");
    let small = export_to(
        &server,
        &server.admin_token,
        &format!("to={}", at((SMALL + 1) * 1_000)),
        &small_file,
    )
    .await;
    assert_eq!(small.entries, SMALL);
    let full_file = dir.path().join("full.jsonl");
    let full = export_to(&server, &server.admin_token, "", &full_file).await;
    assert_eq!(full.entries as i64, total);
    let v_small = tokio::task::spawn_blocking({
        let (f, k) = (small_file.clone(), key.clone());
        move || verify(&f, &k, SMALL)
    })
    .await
    .unwrap();
    let v_full = tokio::task::spawn_blocking({
        let (f, k) = (full_file.clone(), key.clone());
        move || verify(&f, &k, total as u64)
    })
    .await
    .unwrap();

    let rate = |r: &Run| r.entries as f64 / r.seconds;
    let mb = |kb: u64| kb as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "meets target" } else { "MISSES target" };
    println!("================ audit export and verification ================");
    println!(
        "log            : {total} entries ({:.0} MB as JSON Lines)",
        full.bytes as f64 / 1e6
    );
    println!(
        "export  100k   : {:.2} s, {:.0} entries/s, server peak RSS {:.1} MB (idle {:.1} MB)",
        small.seconds,
        rate(&small),
        mb(small.peak_rss_kb),
        mb(idle_rss)
    );
    println!(
        "export  1M     : {:.2} s, {:.0} entries/s (target >= 200000: {}), server peak RSS {:.1} MB",
        full.seconds,
        rate(&full),
        verdict(rate(&full) >= 200_000.0),
        mb(full.peak_rss_kb)
    );
    println!(
        "verify  100k   : {:.2} s, {:.0} entries/s, peak RSS {:.1} MB",
        v_small.seconds,
        rate(&v_small),
        mb(v_small.peak_rss_kb)
    );
    println!(
        "verify  1M     : {:.2} s, {:.0} entries/s (target >= 500000: {}), peak RSS {:.1} MB",
        v_full.seconds,
        rate(&v_full),
        verdict(rate(&v_full) >= 500_000.0),
        mb(v_full.peak_rss_kb)
    );
    let flat = |a: u64, b: u64| b <= a + 32 * 1024;
    println!(
        "memory flat    : export {} ({:.1} -> {:.1} MB for 10x the entries), verify {} ({:.1} -> {:.1} MB)",
        verdict(flat(small.peak_rss_kb, full.peak_rss_kb)),
        mb(small.peak_rss_kb),
        mb(full.peak_rss_kb),
        verdict(flat(v_small.peak_rss_kb, v_full.peak_rss_kb)),
        mb(v_small.peak_rss_kb),
        mb(v_full.peak_rss_kb)
    );
    println!("machine        : 2 cores shared by PostgreSQL, the server and the client");
    println!("===============================================================");
    drop(server);
}
