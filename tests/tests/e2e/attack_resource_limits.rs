//! Attacks on the server's resources, played over HTTP against the real binary (issue #9,
//! section 3): huge request bodies (with and without a token, declared or chunked), a flood of
//! random URLs against the metrics, an exhausted connection pool, slow readers of audit exports,
//! and every string argument of the API fuzzed with odd Unicode. Each attack must be refused
//! cleanly, change nothing, and leave the server answering.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use custody_tests::fixtures::{create_dataset, create_model, create_project, id, start_run};
use custody_tests::{random_id, Server, Snapshot, TestDb, TestEnv};

// ---------------------------------------------------------------------------------------------
// Helpers

async fn start_env(args: &[&str], env: &[(&str, &str)]) -> TestEnv {
    let db = TestDb::create().await;
    let server = Server::start_with(Some(&db.url), args, env).await;
    let admin = server.admin_token.clone();
    TestEnv { server, db, admin }
}

/// The server's peak resident memory so far (`VmHWM` of /proc/<pid>/status), in bytes.
fn peak_rss(server: &Server) -> u64 {
    let pid = server.pid().expect("the server runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

async fn assert_healthy(server: &Server, after: &str) {
    let r = server
        .http
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /healthz after {after}: {e}"));
    assert_eq!(r.status(), 200, "GET /healthz after {after}");
    let log = server.log();
    assert!(
        !log.contains("panicked at"),
        "the server panicked ({after}):\n{}",
        custody_tests::server::tail(&log, 80)
    );
}

/// What a raw HTTP client saw while pushing a body at the server.
struct Pushed {
    status: u16,
    /// Body bytes the server's socket accepted before it answered (or closed).
    sent: u64,
    response: String,
}

/// Sends a request with a body of `body_len` bytes (declared by Content-Length, or chunked),
/// writing as fast as the server takes it and stopping as soon as an answer arrives: so `sent`
/// shows how much the server read (plus kernel buffers) before refusing.
async fn push_body(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: u64,
    chunked: bool,
) -> Pushed {
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes()).await.unwrap();
    let (flag, mut answered) = tokio::sync::watch::channel(false);
    let read = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match tokio::time::timeout(Duration::from_secs(60), reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    got.extend_from_slice(&buf[..n]);
                    let _ = flag.send(true);
                    // Headers and a short body are enough.
                    if let Some(end) = find(&got, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok());
                        if length.is_some_and(|n| got.len() >= end + 4 + n) {
                            break;
                        }
                    }
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    let piece = vec![b'a'; 64 << 10];
    let mut sent = 0u64;
    while sent < body_len && !*answered.borrow() {
        let n = piece.len().min((body_len - sent) as usize);
        let bytes = if chunked {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&piece[..n]);
            framed.extend_from_slice(b"\r\n");
            framed
        } else {
            piece[..n].to_vec()
        };
        // Stop writing as soon as the answer arrives (the server may stop reading then).
        tokio::select! {
            written = writer.write_all(&bytes) => if written.is_err() { break },
            _ = answered.changed() => break,
        }
        sent += n as u64;
    }
    if chunked && sent == body_len {
        let _ = writer.write_all(b"0\r\n\r\n").await;
    }
    let response = read.await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Pushed {
        status,
        sent,
        response,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The JSON body of a raw response.
fn body_json(response: &str) -> Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {response:?}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Request bodies are capped before they are buffered

const HUGE: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bodies_are_refused_before_they_are_buffered() {
    let env = start_env(&[], &[]).await;
    let s = &env.server;
    create_project(s, &env.admin, "bodies").await;
    let run = id(&start_run(s, &env.admin, "bodies", "r", None, &[]).await);
    let sql = env.sql().await;
    let before = Snapshot::take(&sql).await;
    let peak_before = peak_rss(s);
    let bearer = format!("Bearer {}", env.admin);
    let json = ("Content-Type", "application/json");

    // 256 MiB to /graphql: without a token, with an admin's; declared and chunked. Each is
    // answered 413 while the client is still sending: the server read (nearly) nothing.
    for (who, headers) in [
        ("anonymous", vec![json]),
        ("admin", vec![json, ("Authorization", bearer.as_str())]),
    ] {
        for chunked in [false, true] {
            let what = format!(
                "{who} {} POST /graphql of 256 MiB",
                if chunked { "chunked" } else { "declared" }
            );
            let started = Instant::now();
            let pushed = push_body(s, "POST", "/graphql", &headers, HUGE, chunked).await;
            assert_eq!(pushed.status, 413, "{what}: {}", pushed.response);
            assert!(
                pushed.sent < 32 << 20,
                "{what}: the server took {} bytes before refusing",
                pushed.sent
            );
            let error = &body_json(&pushed.response)["errors"][0];
            assert_eq!(
                error["extensions"]["code"], "INVALID_INPUT",
                "{what}: {error}"
            );
            println!(
                "{what}: 413 after {} KiB sent, in {:?}",
                pushed.sent >> 10,
                started.elapsed()
            );
            assert_healthy(s, &what).await;
        }
    }

    // The other routes that take bodies: the approval form (its own small limit), an artifact
    // upload and a direct-upload part without valid credentials (refused before reading).
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    // (method, path, headers, the status that refuses it)
    type Attack<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16);
    let attacks: Vec<Attack> = vec![
        ("POST", "/approve/not-a-token".into(), vec![form], 413),
        (
            "PUT",
            format!("/api/artifacts/run/{run}/x.bin"),
            vec![],
            401,
        ),
        (
            "PUT",
            format!("/api/uploads/{}/parts/1?token=forged", random_id()),
            vec![],
            401,
        ),
        // OpenLineage events: an anonymous caller is refused before any byte is read, a token
        // holder past the event limit (4 MiB).
        ("POST", "/api/v1/lineage".into(), vec![json], 401),
        (
            "POST",
            "/api/v1/lineage?project=bodies".into(),
            vec![json, ("Authorization", bearer.as_str())],
            413,
        ),
    ];
    for (method, path, headers, status) in attacks {
        for chunked in [false, true] {
            let what = format!("{method} {path} of 256 MiB (chunked: {chunked})");
            let pushed = push_body(s, method, &path, &headers, HUGE, chunked).await;
            println!(
                "{what}: {} after {} KiB sent",
                pushed.status,
                pushed.sent >> 10
            );
            assert_eq!(pushed.status, status, "{what}: {}", pushed.response);
            assert!(
                pushed.sent < 32 << 20,
                "{what}: the server took {} bytes before refusing",
                pushed.sent
            );
            assert_healthy(s, &what).await;
        }
    }

    let peak_after = peak_rss(s);
    println!(
        "peak RSS (VmHWM) of the server: {} MiB before the attacks, {} MiB after",
        peak_before >> 20,
        peak_after >> 20
    );
    assert!(
        peak_after < peak_before + (64 << 20),
        "the server's peak memory grew from {peak_before} to {peak_after} bytes"
    );
    before.assert_unchanged(&Snapshot::take(&sql).await, "the body attacks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_depend_on_the_token_and_the_setting() {
    // A 1 MiB limit for authenticated callers, so the test stays small.
    let env = start_env(&["--graphql-max-body", "1MiB"], &[]).await;
    let s = &env.server;
    let sql = env.sql().await;
    // A valid request padded with a GraphQL comment to a given size.
    let padded = |size: usize| {
        let query = format!("{{ me {{ email }} }}\n#{}", "x".repeat(size));
        serde_json::to_vec(&json!({ "query": query })).unwrap()
    };
    let post = |token: &str, body: Vec<u8>| {
        let mut req = s
            .http
            .post(s.url("/graphql"))
            .header("content-type", "application/json")
            .body(body);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let before = Snapshot::take(&sql).await;

    // Without a token: 64 KiB at most.
    let r = post("", padded(60 << 10)).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{v}"
    );
    let r = post("", padded(100 << 10)).await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("without a valid bearer token"),
        "{v}"
    );
    // A forged token counts as none.
    let r = post("forged.token.here", padded(100 << 10)).await.unwrap();
    assert_eq!(r.status(), 413);

    // With a token: up to the setting, and 413 beyond (declared or streamed).
    let r = post(&env.admin, padded(900 << 10)).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["me"]["email"], "admin@localhost", "{v}");
    let r = post(&env.admin, padded(1100 << 10)).await.unwrap();
    assert_eq!(r.status(), 413);
    let bearer = format!("Bearer {}", env.admin);
    let pushed = push_body(
        s,
        "POST",
        "/graphql",
        &[("Authorization", &bearer)],
        2 << 20,
        true,
    )
    .await;
    assert_eq!(pushed.status, 413, "{}", pushed.response);

    // A body that is not a GraphQL request: a clean 400 with a code.
    let r = post(&env.admin, b"{\"query\": ".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{v}");

    before.assert_unchanged(&Snapshot::take(&sql).await, "the limited bodies");
    assert_healthy(s, "the limited bodies").await;
}

// ---------------------------------------------------------------------------------------------
// 2. /metrics: bounded labels, and only for authorised scrapers

const SCRAPE_TOKEN: &str = "scrape-token-0123456789abcdef0123456789";

/// The series of a scrape: every sample line without its value.
fn series(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.rsplit_once(' ').map(|(k, _)| k).unwrap_or(l).to_string())
        .collect()
}

async fn scrape(s: &Server, token: &str) -> (u16, String) {
    let mut req = s.http.get(s.url("/metrics"));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the request counter of unmatched paths for `GET … 404`.
fn unmatched_404s(scrape: &str) -> u64 {
    scrape
        .lines()
        .find(|l| {
            l.starts_with("custody_http_requests_total{")
                && l.contains("endpoint=\"UNMATCHED\"")
                && l.contains("method=\"GET\"")
                && l.contains("status=\"404\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_scraper_token_and_random_paths_do_not_grow_them() {
    let env = start_env(&[], &[("CUSTODY_METRICS_TOKEN", SCRAPE_TOKEN)]).await;
    let s = &env.server;
    create_project(s, &env.admin, "metrics").await;
    let viewer = custody_tests::fixtures::member_token(
        s,
        &env.admin,
        "metrics",
        "vera@example.com",
        "VIEWER",
    )
    .await;

    // Who may scrape.
    let (status, _) = scrape(s, "").await;
    assert_eq!(status, 401, "an anonymous scrape");
    let (status, _) = scrape(s, "not-the-scrape-token-0123456789abcdef").await;
    assert_eq!(status, 401, "a wrong token");
    let (status, _) = scrape(s, &viewer).await;
    assert_eq!(status, 403, "a project member's token");
    let (status, _) = scrape(s, &env.admin).await;
    assert_eq!(status, 200, "a server admin's token");
    let (status, text) = scrape(s, SCRAPE_TOKEN).await;
    assert_eq!(status, 200, "the scrape token");
    assert!(text.contains("custody_db_pool_max"), "{text}");

    // One unmatched path and one made-up method first, so their series exist.
    let warm = s
        .http
        .get(s.url(&format!("/{}", random_id())))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 404);
    let odd = reqwest::Method::from_bytes(b"FROB").unwrap();
    let r = s.http.request(odd, s.url("/graphql")).send().await.unwrap();
    assert_eq!(r.status(), 405, "a made-up method");
    let (_, first) = scrape(s, SCRAPE_TOKEN).await;
    let before = series(&first);
    let count_before = unmatched_404s(&first);

    // 2,000 random URLs, 16 at a time, some with made-up methods.
    let mut paths = Vec::new();
    for i in 0..2_000 {
        let path = format!("/{}/{}?q={i}", random_id(), random_id());
        paths.push(path);
    }
    let client = s.http.clone();
    let base = s.url("");
    let mut sent = 0u64;
    for batch in paths.chunks(16) {
        let calls: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let client = client.clone();
                let url = format!("{base}{path}");
                async move {
                    let method = if i % 4 == 0 {
                        reqwest::Method::from_bytes(
                            format!("M{}", random_id().replace('-', "")).as_bytes(),
                        )
                        .unwrap()
                    } else {
                        reqwest::Method::GET
                    };
                    let get = method == reqwest::Method::GET;
                    let r = client.request(method, url).send().await.unwrap();
                    assert_eq!(r.status(), if get { 404 } else { 405 });
                    get
                }
            })
            .collect();
        for get in futures_join(calls).await {
            sent += get as u64;
        }
    }

    let (_, last) = scrape(s, SCRAPE_TOKEN).await;
    let after = series(&last);
    let grown: Vec<&String> = after.difference(&before).collect();
    assert!(
        grown.is_empty(),
        "random URLs created {} new series, e.g. {:?}",
        grown.len(),
        grown.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        unmatched_404s(&last) - count_before,
        sent,
        "every unmatched GET is counted, under one label value"
    );
    for path in paths.iter().take(50) {
        let segment = path.split('/').nth(1).unwrap();
        assert!(!last.contains(segment), "a random path reached the metrics");
    }
    assert!(
        last.len() < first.len() + 1024,
        "the scrape grew from {} to {} bytes",
        first.len(),
        last.len()
    );
    assert_healthy(s, "2,000 random URLs").await;
}

/// Awaits futures concurrently (a tiny join_all: the harness has no futures crate).
async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 3. The connection pool: a wait timeout, and exports that cannot take it

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_gets_no_connection_is_refused_not_left_hanging() {
    // One worker: the pool is shared out among the workers, and this test holds all of one's.
    let env = start_env(
        &[
            "--workers",
            "1",
            "--db-pool-size",
            "2",
            "--db-pool-timeout",
            "1s",
        ],
        &[],
    )
    .await;
    let s = &env.server;
    // Hold every pooled connection: a lock on `users` blocks the token check of each request,
    // each holding its connection while it waits.
    let mut locker = env.sql().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let http = s.http.clone();
            let url = s.url("/graphql");
            let token = env.admin.clone();
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(token)
                    .json(&json!({"query": "{ me { email } }"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The pool is empty: the next request waits one second, then is refused with a clear answer.
    let started = Instant::now();
    let r = s
        .http
        .post(s.url("/graphql"))
        .bearer_auth(&env.admin)
        .json(&json!({"query": "{ me { email } }"}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the request must be answered, not left hanging");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{v}");
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains("busy"),
        "{v}"
    );
    println!("refused after {:?}", started.elapsed());
    let r = s
        .http
        .get(s.url("/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("/healthz must answer");
    assert_eq!(
        r.status(),
        503,
        "healthz says the database is not available"
    );

    // The lock goes: the waiting requests finish and the server serves again.
    tx.rollback().await.unwrap();
    for b in blocked {
        assert_eq!(b.await.unwrap().unwrap(), 200);
    }
    assert_healthy(s, "the exhausted pool").await;
    env.gql_ok(&env.admin, "{ me { email } }", json!({})).await;
}

/// An export reader on its own TCP connection with a tiny receive window.
struct SlowReader {
    stream: TcpStream,
    status: u16,
    /// Bytes after the response head, read so far.
    body: Vec<u8>,
}

impl SlowReader {
    async fn open(server: &Server, token: &str) -> SlowReader {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket
            .connect(format!("127.0.0.1:{}", server.port).parse().unwrap())
            .await
            .unwrap();
        let request = format!(
            "GET /api/audit/export?format=jsonl HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let head_end = loop {
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                .await
                .expect("the export answers at once")
                .unwrap();
            assert!(n > 0, "closed before the response head");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&got, b"\r\n\r\n") {
                break end;
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        SlowReader {
            stream,
            status,
            body: got[head_end + 4..].to_vec(),
        }
    }

    /// Reads at most `n` bytes (waits for at least one).
    async fn read_some(&mut self, n: usize) -> usize {
        let mut buf = vec![0u8; n];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await {
            Ok(Ok(got)) => {
                self.body.extend_from_slice(&buf[..got]);
                got
            }
            _ => 0,
        }
    }

    /// Reads everything that is left, until the server closes or goes quiet.
    async fn drain(&mut self) {
        while self.read_some(256 << 10).await > 0 {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_export_readers_cannot_hold_the_server() {
    let env = start_env(
        &[
            "--db-pool-size",
            "4",
            "--export-pool-size",
            "3",
            "--exports-per-user",
            "2",
            "--export-idle-timeout",
            "3s",
        ],
        &[],
    )
    .await;
    let s = &env.server;
    // A large audit log: four batches of 400 params of 8,000 bytes (each audited whole),
    // about 13 MB of export, far more than socket buffers hold.
    create_project(s, &env.admin, "big").await;
    let run = id(&start_run(s, &env.admin, "big", "r", None, &[]).await);
    for batch in 0..4 {
        let params: Vec<Value> = (0..400)
            .map(|i| json!({"key": format!("k{batch}-{i}"), "value": "v".repeat(8000)}))
            .collect();
        env.gql_ok(
            &env.admin,
            "mutation($r: ID!, $p: [ParamInput!]!) { logParams(runId: $r, params: $p) { id } }",
            json!({"r": run, "p": params}),
        )
        .await;
    }
    let mut users = vec![env.admin.clone()];
    for email in ["aud1@example.com", "aud2@example.com"] {
        let out = s
            .cli(&["token", "issue", "--email", email, "--auditor"])
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        users.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }

    // 17 slow readers from three users: three run (the export pool), the others are refused
    // at once (429 over a user's limit, 503 over the server's).
    let mut readers = Vec::new();
    for i in 0..17 {
        readers.push(SlowReader::open(s, &users[i % 3]).await);
    }
    let statuses: Vec<u16> = readers.iter().map(|r| r.status).collect();
    let running = statuses.iter().filter(|&&st| st == 200).count();
    assert_eq!(running, 3, "exports admitted: {statuses:?}");
    assert!(
        statuses.iter().all(|st| [200, 429, 503].contains(st)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429) || statuses.contains(&503));
    readers.retain(|r| r.status == 200);

    // While they trickle (1 KiB every 100 ms), the server answers everything else.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for reader in readers.iter_mut() {
            reader.read_some(1024).await;
        }
        let r = s
            .http
            .get(s.url("/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("/healthz answers during slow exports");
        assert_eq!(r.status(), 200);
        env.gql_ok(&env.admin, "{ me { email } }", json!({})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // They stop reading: after the idle timeout the server cuts them off and their
    // connections return; three complete exports then run at once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        s.log().contains("audit export cut off"),
        "no cut-off logged"
    );
    for reader in readers.iter_mut() {
        reader.drain().await;
        let text = String::from_utf8_lossy(&reader.body);
        assert!(
            !text.contains("{\"manifest\":"),
            "a cut-off export must not end like a complete one"
        );
    }
    let exports: Vec<_> = users
        .iter()
        .map(|token| {
            let http = s.http.clone();
            let url = s.url("/api/audit/export?format=jsonl");
            let token = token.clone();
            tokio::spawn(async move {
                let r = http.get(url).bearer_auth(token).send().await.unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap())
            })
        })
        .collect();
    for export in exports {
        let (status, body) = export.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.len() > 12 << 20,
            "a short export: {} bytes",
            body.len()
        );
        let last = String::from_utf8_lossy(
            body.trim_ascii_end()
                .rsplit(|&b| b == b'\n')
                .next()
                .unwrap(),
        )
        .into_owned();
        assert!(
            last.starts_with("{\"manifest\":"),
            "no manifest: {last:.200}"
        );
    }
    assert_healthy(s, "slow export readers").await;
}

// ---------------------------------------------------------------------------------------------
// 4. No input panics a request: every string argument, found by introspection, fuzzed

const INTROSPECTION: &str = r#"
query {
  __schema {
    queryType { name }
    mutationType { name }
    types {
      kind name
      fields { name args { name type { ...T } } type { ...T } }
      inputFields { name type { ...T } }
      enumValues { name }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }
"#;

/// Values no argument should ever panic or fail internally on.
fn odd_strings() -> Vec<(String, String)> {
    let mut v: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("space", " ".into()),
        ("two-byte", "é".into()),
        ("three-byte", "€".into()),
        ("four-byte", "𝄞".into()),
        ("number then multi-byte", "30€".into()),
        ("unit then combining mark", "7d\u{301}".into()),
        ("128 bytes ending mid-char", format!("{}é", "a".repeat(127))),
        ("256 bytes ending mid-char", format!("{}€", "a".repeat(254))),
        (
            "1024 bytes ending mid-char",
            format!("{}𝄞", "a".repeat(1021)),
        ),
        ("RTL override", "\u{202E}gnp.exe\u{202C}".into()),
        ("Arabic", "مرحبا بالعالم".into()),
        (
            "combining marks",
            "Z\u{351}\u{34F}\u{361}a\u{300}\u{301}\u{302}l\u{336}".into(),
        ),
        ("emoji ZWJ", "👩\u{200D}👩\u{200D}👧\u{200D}👦".into()),
        ("U+FFFF", "\u{FFFF}".into()),
        ("U+10FFFF", "\u{10FFFF}".into()),
        ("BOM", "\u{FEFF}x".into()),
        ("NUL", "\u{0}".into()),
        ("NUL inside", "a\u{0}b".into()),
        ("escape sequence", "\u{7}\u{1B}[31mred\u{1B}[0m".into()),
        ("line breaks", "a\r\nb\u{85}c\u{2028}d\u{2029}".into()),
        ("SQL", "'; DROP TABLE users; --".into()),
        ("LIKE and regex", "%_\\.*(".into()),
        ("path traversal", "../../../etc/passwd".into()),
        ("huge number", "99999999999999999999999".into()),
        ("negative", "-1".into()),
        ("float words", "NaN".into()),
        ("JSON text", "{\"a\":[1,{}]}".into()),
        ("1 MiB", "a".repeat(1 << 20)),
        ("1 MiB of two-byte", "é".repeat(1 << 19)),
    ];
    v.drain(..).map(|(k, s)| (k.to_string(), s)).collect()
}

/// The named type under NON_NULL and LIST wrappers.
fn named(t: &Value) -> (&str, &str) {
    let mut t = t;
    while t["name"].is_null() {
        t = &t["ofType"];
    }
    (t["kind"].as_str().unwrap(), t["name"].as_str().unwrap())
}

/// A type reference as written in a variable declaration, e.g. `[String!]!`.
fn type_string(t: &Value) -> String {
    match t["kind"].as_str().unwrap() {
        "NON_NULL" => format!("{}!", type_string(&t["ofType"])),
        "LIST" => format!("[{}]", type_string(&t["ofType"])),
        _ => t["name"].as_str().unwrap().to_string(),
    }
}

struct Schema {
    types: Map<String, Value>,
}

/// A step from an argument to a string inside it.
#[derive(Clone, Debug)]
enum Step {
    Field(String),
    Item,
}

impl Schema {
    fn ty(&self, name: &str) -> &Value {
        &self.types[name]
    }

    fn string_ish(&self, kind: &str, name: &str) -> bool {
        kind == "SCALAR" && !matches!(name, "Int" | "Float" | "Boolean")
    }

    /// Every path from a value of type `t` to a string-ish position in it.
    fn string_paths(&self, t: &Value, depth: usize) -> Vec<Vec<Step>> {
        if depth > 4 {
            return Vec::new();
        }
        match t["kind"].as_str().unwrap() {
            "NON_NULL" => self.string_paths(&t["ofType"], depth),
            "LIST" => self
                .string_paths(&t["ofType"], depth + 1)
                .into_iter()
                .map(|mut p| {
                    p.insert(0, Step::Item);
                    p
                })
                .collect(),
            "INPUT_OBJECT" => {
                let ty = self.ty(t["name"].as_str().unwrap());
                let mut out = Vec::new();
                for f in ty["inputFields"].as_array().unwrap() {
                    for mut p in self.string_paths(&f["type"], depth + 1) {
                        p.insert(0, Step::Field(f["name"].as_str().unwrap().into()));
                        out.push(p);
                    }
                }
                out
            }
            kind if self.string_ish(kind, t["name"].as_str().unwrap()) => vec![Vec::new()],
            _ => Vec::new(),
        }
    }

    /// A plausible value of type `t` for an argument or field called `name`.
    fn plausible(&self, t: &Value, name: &str, fx: &Fixture, depth: usize) -> Value {
        match t["kind"].as_str().unwrap() {
            "NON_NULL" => self.plausible(&t["ofType"], name, fx, depth),
            "LIST" => json!([self.plausible(&t["ofType"], name, fx, depth + 1)]),
            "INPUT_OBJECT" => {
                let ty = self.ty(t["name"].as_str().unwrap());
                let mut obj = Map::new();
                for f in ty["inputFields"].as_array().unwrap() {
                    if f["type"]["kind"] == "NON_NULL" && depth < 4 {
                        let fname = f["name"].as_str().unwrap();
                        obj.insert(
                            fname.into(),
                            self.plausible(&f["type"], fname, fx, depth + 1),
                        );
                    }
                }
                Value::Object(obj)
            }
            "ENUM" => {
                let ty = self.ty(t["name"].as_str().unwrap());
                ty["enumValues"][0]["name"].clone()
            }
            _ => match t["name"].as_str().unwrap() {
                "Int" => json!(1),
                "Float" => json!(1.0),
                "Boolean" => json!(false),
                "ID" => json!(fx.id_for(name)),
                "DateTime" => json!("2026-01-01T00:00:00Z"),
                "Sha256" => json!("0".repeat(64)),
                "JSON" => json!({}),
                "String" => json!(fx.string_for(name)),
                _ => json!("x"),
            },
        }
    }

    /// Puts `odd` at `path` inside `value` (of type `t`), creating what is missing.
    fn inject(&self, value: &mut Value, t: &Value, path: &[Step], odd: &Value, fx: &Fixture) {
        let t = if t["kind"] == "NON_NULL" {
            &t["ofType"]
        } else {
            t
        };
        let Some((step, rest)) = path.split_first() else {
            *value = odd.clone();
            return;
        };
        match step {
            Step::Item => {
                if !value.is_array() || value.as_array().unwrap().is_empty() {
                    *value = json!([self.plausible(&t["ofType"], "", fx, 1)]);
                }
                self.inject(&mut value[0], &t["ofType"], rest, odd, fx);
            }
            Step::Field(name) => {
                if !value.is_object() {
                    *value = self.plausible(t, "", fx, 1);
                }
                let ty = self.ty(t["name"].as_str().unwrap());
                let field = ty["inputFields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["name"] == name.as_str())
                    .unwrap();
                let slot = value
                    .as_object_mut()
                    .unwrap()
                    .entry(name.clone())
                    .or_insert(Value::Null);
                if slot.is_null() {
                    *slot = self.plausible(&field["type"], name, fx, 1);
                }
                self.inject(slot, &field["type"], rest, odd, fx);
            }
        }
    }
}

/// Real objects the fuzzed operations can reach, so that they get past "not found".
struct Fixture {
    run: String,
}

impl Fixture {
    fn id_for(&self, name: &str) -> String {
        match name {
            "runId" => self.run.clone(),
            _ => random_id(),
        }
    }

    fn string_for(&self, name: &str) -> String {
        match name {
            "project" => "fz".into(),
            "dataset" => "ds".into(),
            "model" => "m".into(),
            "name" => format!("n{}", &random_id()[24..]),
            "stage" => "staging".into(),
            "email" => "fuzz@example.com".into(),
            "url" | "uri" => "https://example.com/x".into(),
            "commit" => "0".repeat(40),
            "repository" => "https://git.example.com/r.git".into(),
            _ => "fuzz".into(),
        }
    }
}

fn describe(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Field(f) => format!(".{f}"),
            Step::Item => "[0]".into(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_string_argument_of_any_operation_panics_or_fails_internally() {
    let env = TestEnv::start().await;
    let s = &env.server;
    create_project(s, &env.admin, "fz").await;
    create_dataset(s, &env.admin, "fz", "ds").await;
    create_model(s, &env.admin, "fz", "m").await;
    let run = id(&start_run(s, &env.admin, "fz", "r", None, &[]).await);
    let fx = Fixture { run };

    let intro = env.gql_ok(&env.admin, INTROSPECTION, json!({})).await;
    let mut types = Map::new();
    for t in intro["__schema"]["types"].as_array().unwrap() {
        types.insert(t["name"].as_str().unwrap().into(), t.clone());
    }
    let schema = Schema { types };
    let roots = [
        (
            "query",
            intro["__schema"]["queryType"]["name"].as_str().unwrap(),
        ),
        (
            "mutation",
            intro["__schema"]["mutationType"]["name"].as_str().unwrap(),
        ),
    ];
    let odd = odd_strings();
    let mut failures = Vec::new();
    let (mut operations, mut positions, mut requests) = (0, 0, 0);
    for (keyword, root) in roots {
        let fields = schema.ty(root)["fields"].as_array().unwrap().clone();
        for field in fields {
            let op = field["name"].as_str().unwrap().to_string();
            let args = field["args"].as_array().unwrap();
            let (kind, _) = named(&field["type"]);
            let selection = if matches!(kind, "OBJECT" | "INTERFACE" | "UNION") {
                " { __typename }"
            } else {
                ""
            };
            let decls: Vec<String> = args
                .iter()
                .map(|a| {
                    format!(
                        "$v_{}: {}",
                        a["name"].as_str().unwrap(),
                        type_string(&a["type"])
                    )
                })
                .collect();
            let uses: Vec<String> = args
                .iter()
                .map(|a| format!("{0}: $v_{0}", a["name"].as_str().unwrap()))
                .collect();
            let query = if args.is_empty() {
                format!("{keyword} {{ {op}{selection} }}")
            } else {
                format!(
                    "{keyword} Fuzz({}) {{ {op}({}){selection} }}",
                    decls.join(", "),
                    uses.join(", ")
                )
            };
            operations += 1;
            for arg in args {
                let arg_name = arg["name"].as_str().unwrap();
                for path in schema.string_paths(&arg["type"], 0) {
                    positions += 1;
                    for (label, value) in &odd {
                        // Required arguments plausible, the fuzzed one odd.
                        let mut vars = Map::new();
                        for a in args {
                            let name = a["name"].as_str().unwrap();
                            if a["type"]["kind"] == "NON_NULL" || name == arg_name {
                                vars.insert(
                                    format!("v_{name}"),
                                    schema.plausible(&a["type"], name, &fx, 0),
                                );
                            }
                        }
                        let slot = vars.get_mut(&format!("v_{arg_name}")).unwrap();
                        schema.inject(slot, &arg["type"], &path, &json!(value), &fx);
                        requests += 1;
                        let what = format!("{op}({arg_name}{}) = {label}", describe(&path));
                        let r = s
                            .http
                            .post(s.url("/graphql"))
                            .bearer_auth(&env.admin)
                            .json(&json!({"query": query, "variables": vars}))
                            .send()
                            .await;
                        let r = match r {
                            Ok(r) => r,
                            Err(e) => {
                                failures.push(format!("{what}: no answer ({e})"));
                                continue;
                            }
                        };
                        let status = r.status().as_u16();
                        let text = r.text().await.unwrap_or_default();
                        let Ok(body) = serde_json::from_str::<Value>(&text) else {
                            failures.push(format!(
                                "{what}: {status} with a body that is not JSON: {text:.300}"
                            ));
                            continue;
                        };
                        // 200, or 400 for a request refused before execution (NUL characters).
                        if status != 200 && status != 400 {
                            failures.push(format!("{what}: HTTP {status}: {text:.300}"));
                        }
                        for error in body["errors"].as_array().into_iter().flatten() {
                            match error["extensions"]["code"].as_str() {
                                None => failures
                                    .push(format!("{what}: an error without a code: {error}")),
                                Some("INTERNAL") => {
                                    failures.push(format!("{what}: INTERNAL: {error}"))
                                }
                                Some(_) => {}
                            }
                        }
                        if body["errors"].is_null() && body["data"].is_null() {
                            failures.push(format!("{what}: neither data nor errors: {text:.300}"));
                        }
                    }
                }
            }
            assert_healthy(s, &format!("fuzzing {op}")).await;
        }
    }
    println!("fuzzed {operations} operations, {positions} string positions, {requests} requests");
    assert!(
        operations > 30 && positions > 50,
        "introspection found too little"
    );
    assert!(
        failures.is_empty(),
        "{} bad answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
