//! Load benchmark (not a timed test; ignored by default): a 1 GiB file uploaded and downloaded
//! through the server to each artifact store (the local directory, and S3 through the in-process
//! s3s-fs server of `custody_tests::s3`), next to `sha256sum` and `openssl dgst -sha256` on the
//! same file in the same run. Reports MB/s (10^6 bytes per second, wall time) and the server's
//! peak RSS growth (VmHWM), with a fresh server per store.
//!
//! ```text
//! cargo test -p custody-tests --release --test e2e bench_artifacts -- --ignored --nocapture
//! ```
//! (`--release` runs the release build of the server: the harness takes the binary of the test's
//! own profile.) `CUSTODY_BENCH_MIB` changes the file size (default 1024). Issue 3's targets:
//! upload to the local store at least as fast as `sha256sum`; server RSS growth under 64 MiB.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use custody_tests::fixtures::{create_project, id, start_run};
use custody_tests::s3::S3Server;
use custody_tests::server::{tmp_dir, Server};
use custody_tests::TestDb;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes (splitmix64).
struct Gen(u64);

impl Gen {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let v = (z ^ (z >> 31)).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `len` deterministic pseudo-random bytes to `path` (synced); answers their SHA-256 (hex).
pub(crate) fn make_file(path: &Path, len: u64, seed: u64) -> String {
    use std::io::Write;
    let mut out = std::fs::File::create(path).unwrap();
    let mut g = Gen(0x0C05_70D1 ^ seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.sync_all().unwrap();
    hex::encode(hasher.finalize())
}

/// Runs a hashing command on `file`: its wall time and the digest it printed (the 64-hex word).
fn time_tool(program: &str, args: &[&str], file: &Path) -> (Duration, String) {
    let started = Instant::now();
    let out = std::process::Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let digest = text
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .unwrap_or_else(|| panic!("no digest in {program}'s output: {text}"))
        .to_lowercase();
    (took, digest)
}

/// (VmRSS, VmHWM) in KiB, and user+system CPU seconds of a process.
fn proc_stats(pid: u32) -> (u64, u64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf(3) takes an integer and touches no memory of this process.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field("VmRSS:"), field("VmHWM:"), cpu / ticks)
}

struct Row {
    store: &'static str,
    up: Duration,
    down: Duration,
    up_cpu: f64,
    down_cpu: f64,
    rss_start: u64,
    hwm_start: u64,
    hwm_after_up: u64,
    hwm_end: u64,
}

async fn through_server(store: &'static str, file: &Path, digest: &str, len: u64) -> Row {
    let db = TestDb::create().await;
    let s3 = (store == "S3 (s3s-fs)").then(|| S3Server::start("bench"));
    let env: Vec<(String, String)> = s3
        .as_ref()
        .map(|s| s.server_env("artifacts"))
        .unwrap_or_default();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with(Some(&db.url), &[], &env).await;
    let token = server.admin_token.clone();
    create_project(&server, &token, "bench").await;
    let run = id(&start_run(&server, &token, "bench", "train", None, &[]).await);
    let url = server.url(&format!("/api/artifacts/run/{run}/model/weights.bin"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let pid = server.pid().unwrap();
    let (rss_start, hwm_start, cpu0) = proc_stats(pid);

    let body = tokio::fs::File::open(file).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        body,
        MIB as usize,
    ));
    let started = Instant::now();
    let resp = http
        .put(&url)
        .bearer_auth(&token)
        .header("content-length", len)
        .header("x-custody-sha256", digest)
        .body(body)
        .send()
        .await
        .expect("uploading");
    let status = resp.status().as_u16();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    let up = started.elapsed();
    assert_eq!(
        status,
        201,
        "upload to {store}: {answer}\n{}",
        custody_tests::server::tail(&server.log(), 40)
    );
    assert_eq!(answer["sha256"].as_str(), Some(digest));
    let (_, hwm_after_up, cpu1) = proc_stats(pid);

    let started = Instant::now();
    let mut resp = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("downloading");
    assert_eq!(resp.status().as_u16(), 200);
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.expect("reading the download") {
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let down = started.elapsed();
    assert_eq!(
        (hex::encode(hasher.finalize()), n),
        (digest.to_string(), len),
        "the download from {store}"
    );
    let (_, hwm_end, cpu2) = proc_stats(pid);
    drop(server);
    drop(s3);
    Row {
        store,
        up,
        down,
        up_cpu: cpu1 - cpu0,
        down_cpu: cpu2 - cpu1,
        rss_start,
        hwm_start,
        hwm_after_up,
        hwm_end,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load benchmark: run with --release --ignored --nocapture"]
async fn bench_artifacts_1gib() {
    let mib: u64 = std::env::var("CUSTODY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let len = mib * MIB;
    let bin = tokio::task::spawn_blocking(custody_tests::server::server_bin)
        .await
        .unwrap();
    println!(
        "server binary: {} ({})",
        bin.display(),
        custody_tests::server_build(&bin)
    );
    let work = tmp_dir("custody-test-bench-");
    let file: PathBuf = work.path().join("weights.bin");
    let started = Instant::now();
    let digest = make_file(&file, len, 0);
    println!(
        "made {} ({mib} MiB, sha256 {digest}) in {:.1} s",
        file.display(),
        started.elapsed().as_secs_f64()
    );

    let (sha256sum, d1) = time_tool("sha256sum", &[], &file);
    let (openssl, d2) = time_tool("openssl", &["dgst", "-sha256"], &file);
    assert_eq!(d1, digest, "sha256sum disagrees");
    assert_eq!(d2, digest, "openssl disagrees");

    let mut rows = Vec::new();
    for store in ["local directory", "S3 (s3s-fs)"] {
        rows.push(through_server(store, &file, &digest, len).await);
    }

    let mbps = |d: Duration| len as f64 / 1e6 / d.as_secs_f64();
    let mib_of = |kib: u64| kib as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "meets target" } else { "MISSES target" };
    println!();
    println!("=============== artifacts: {mib} MiB through custody-server, 2-core machine ===============");
    println!(
        "{:<34} {:>9} {:>9} {:>11}",
        "", "wall s", "MB/s", "server CPU s"
    );
    println!(
        "{:<34} {:>9.2} {:>9.0} {:>11}",
        "sha256sum",
        sha256sum.as_secs_f64(),
        mbps(sha256sum),
        "-"
    );
    println!(
        "{:<34} {:>9.2} {:>9.0} {:>11}",
        "openssl dgst -sha256",
        openssl.as_secs_f64(),
        mbps(openssl),
        "-"
    );
    for r in &rows {
        println!(
            "{:<34} {:>9.2} {:>9.0} {:>11.2}",
            format!("upload   -> {}", r.store),
            r.up.as_secs_f64(),
            mbps(r.up),
            r.up_cpu
        );
        println!(
            "{:<34} {:>9.2} {:>9.0} {:>11.2}",
            format!("download <- {}", r.store),
            r.down.as_secs_f64(),
            mbps(r.down),
            r.down_cpu
        );
    }
    println!();
    println!(
        "{:<18} {:>12} {:>14} {:>16} {:>14} {:>14}",
        "server RSS (MiB)",
        "RSS at start",
        "VmHWM at start",
        "VmHWM after up",
        "VmHWM at end",
        "peak growth"
    );
    for r in &rows {
        println!(
            "{:<18} {:>12.1} {:>14.1} {:>16.1} {:>14.1} {:>14.1}",
            r.store,
            mib_of(r.rss_start),
            mib_of(r.hwm_start),
            mib_of(r.hwm_after_up),
            mib_of(r.hwm_end),
            mib_of(r.hwm_end - r.hwm_start)
        );
    }
    println!();
    let local = &rows[0];
    println!(
        "target: upload to the local store >= sha256sum: {:.0} vs {:.0} MB/s: {}",
        mbps(local.up),
        mbps(sha256sum),
        verdict(local.up <= sha256sum)
    );
    for r in &rows {
        let growth = mib_of(r.hwm_end - r.hwm_start);
        println!(
            "target: server RSS growth < 64 MiB ({}): {growth:.1} MiB: {}",
            r.store,
            verdict(growth < 64.0)
        );
    }
    println!("(MB = 10^6 bytes; wall times include the server's fsync and, for S3, s3s-fs writing, joining");
    println!(
        " and copying the parts in this process; the client hashes the download as it reads it.)"
    );
    println!("==========================================================================================");
}
