//! Artifacts (issue 3): one conformance suite, run through the real binary against both artifact
//! stores — the local directory (the embedded default, `<data-dir>/artifacts`) and S3 (an s3s-fs
//! server in this process, see `custody_tests::s3`). Every case is an `async fn case(Store)`;
//! `both_stores!` makes a `local::case` and an `s3::case` test of it.
//!
//! ```text
//! cargo test -p custody-tests --test e2e artifacts::          # both stores
//! cargo test -p custody-tests --test e2e artifacts::s3::      # one store
//! ```
//!
//! What a store holds is read from the disk, not through the server: the local store's files under
//! `<data-dir>/artifacts/{sha256,staging,uploads}`, the S3 bucket's objects as s3s-fs keeps them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use custody_tests::db::{count, db_error_text};
use custody_tests::fixtures::{self, id};
use custody_tests::s3::{walk_files, S3Server};
use custody_tests::server::{tail, Server};
use custody_tests::{eventually, Snapshot, TestDb, TestEnv};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// The server's default multipart part size (`--part-size`, `CUSTODY_ARTIFACT_PART_SIZE`).
const PART_SIZE: u64 = 16 * MIB;
const BUCKET: &str = "custody-artifacts";
const PREFIX: &str = "team/registry";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Local,
    S3,
}

macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Store::Local).await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Store::S3).await
                }
            )*
        }
    };
}

both_stores!(
    round_trip_small_files,
    round_trip_200_mib,
    ranges,
    deduplication,
    wrong_claimed_digest_leaves_nothing,
    path_attacks_are_refused,
    artifacts_are_immutable,
    access_rules,
    direct_upload_through_part_urls,
    direct_upload_with_other_bytes_is_refused,
    crash_between_object_and_row_is_swept,
    abandoned_direct_upload_is_swept,
    interrupted_upload_leaves_nothing,
    model_version_manifest_is_immutable,
    size_limit,
    size_limit_beyond_one_part,
);

// ---------------------------------------------------------------------------------------------
// Test data: deterministic pseudo-random bytes (splitmix64), hashed as they are made.

struct Gen(u64);

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn data(seed: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    Gen::new(seed).fill(&mut v);
    v
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `len` bytes of seed `seed` to `dir/name` (1 MiB at a time); answers the path and digest.
fn data_file(dir: &Path, name: &str, seed: u64, len: u64) -> (PathBuf, String) {
    use std::io::Write;
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut g = Gen::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        g.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    (path, hex::encode(hasher.finalize()))
}

/// A streaming request body reading `file` 1 MiB at a time (chunked unless a length is sent).
async fn file_body(file: &Path) -> reqwest::Body {
    let f = tokio::fs::File::open(file).await.unwrap();
    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, MIB as usize))
}

/// SHA-256 and length of a response body, streamed.
async fn digest_of(mut resp: reqwest::Response) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.expect("reading a download") {
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (hex::encode(hasher.finalize()), n)
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One test's world: a database, a server on one store, a project and a running run.

struct World {
    // Field order is drop order: the server stops before the S3 server.
    env: TestEnv,
    s3: Option<S3Server>,
    store: Store,
    project: String,
    run: String,
    /// A client with no default headers and a long timeout (big bodies on a debug build).
    http: reqwest::Client,
    work: tempfile::TempDir,
}

impl World {
    async fn start(store: Store, args: &[&str]) -> World {
        let db = TestDb::create().await;
        let s3 = match store {
            Store::Local => None,
            Store::S3 => Some(S3Server::start(BUCKET)),
        };
        let env_vars: Vec<(String, String)> = s3
            .as_ref()
            .map(|s| s.server_env(PREFIX))
            .unwrap_or_default();
        let env_refs: Vec<(&str, &str)> = env_vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let server = Server::start_with(Some(&db.url), args, &env_refs).await;
        let admin = server.admin_token.clone();
        let env = TestEnv { server, db, admin };
        let expected = match store {
            Store::Local => format!(
                "local directory {}",
                env.server.data_dir.join("artifacts").display()
            ),
            Store::S3 => format!("s3://{BUCKET}/{PREFIX}"),
        };
        assert!(
            env.server.log().contains(&expected),
            "the server does not say it uses {expected}:\n{}",
            tail(&env.server.log(), 40)
        );
        let project = fixtures::create_project(&env.server, &env.admin, "artifacts").await["name"]
            .as_str()
            .unwrap()
            .to_string();
        let run =
            id(&fixtures::start_run(&env.server, &env.admin, &project, "train", None, &[]).await);
        let work = custody_tests::server::tmp_dir("custody-test-art-");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(900))
            .build()
            .unwrap();
        World {
            env,
            s3,
            store,
            project,
            run,
            http,
            work,
        }
    }

    fn url(&self, owner: &str, path: &str) -> String {
        self.env
            .server
            .url(&format!("/api/artifacts/{owner}/{}", encode_path(path)))
    }

    fn run_url(&self, path: &str) -> String {
        self.url(&format!("run/{}", self.run), path)
    }

    fn log(&self) -> String {
        tail(&self.env.server.log(), 60)
    }

    /// PUT with the admin's token; answers the status and the JSON body.
    async fn put_to(
        &self,
        url: &str,
        body: reqwest::Body,
        length: Option<u64>,
        claimed: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.put(url).bearer_auth(&self.env.admin).body(body);
        if let Some(n) = length {
            req = req.header("content-length", n);
        }
        if let Some(c) = claimed {
            req = req.header("x-custody-sha256", c);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e:?}\n{}", self.log()));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put(&self, path: &str, bytes: &[u8], claimed: Option<&str>) -> (u16, Value) {
        self.put_to(&self.run_url(path), bytes.to_vec().into(), None, claimed)
            .await
    }

    /// PUT of a file, with its Content-Length (`sized`, as `curl -T` does) or chunked.
    async fn put_file(
        &self,
        path: &str,
        file: &Path,
        sized: bool,
        claimed: Option<&str>,
    ) -> (u16, Value) {
        let len = std::fs::metadata(file).unwrap().len();
        self.put_to(
            &self.run_url(path),
            file_body(file).await,
            sized.then_some(len),
            claimed,
        )
        .await
    }

    /// A PUT that must succeed: checks 201 and the answer `{path, sha256, size}`.
    async fn put_ok(&self, path: &str, bytes: &[u8]) -> Value {
        let (status, body) = self.put(path, bytes, None).await;
        assert_eq!(status, 201, "PUT {path}: {body}\n{}", self.log());
        assert_eq!(
            body,
            json!({"path": path, "sha256": sha(bytes), "size": bytes.len()})
        );
        body
    }

    async fn get(&self, url: &str, range: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(url).bearer_auth(&self.env.admin);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}\n{}", self.log()))
    }

    /// GETs a run's file and checks status, headers and the whole body against `bytes`' digest.
    async fn get_checked(&self, url: &str, digest: &str, size: u64) {
        let resp = self.get(url, None).await;
        assert_eq!(resp.status().as_u16(), 200, "GET {url}\n{}", self.log());
        assert_eq!(
            header(&resp, "x-custody-sha256").as_deref(),
            Some(digest),
            "X-Custody-Sha256 of {url}"
        );
        assert_eq!(
            header(&resp, "accept-ranges").as_deref(),
            Some("bytes"),
            "Accept-Ranges of {url}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            Some(size.to_string()),
            "Content-Length of {url}"
        );
        assert_eq!(
            digest_of(resp).await,
            (digest.to_string(), size),
            "the bytes of {url}"
        );
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        self.env.gql_ok(&self.env.admin, query, variables).await
    }

    /// `run { artifacts { path sha256 size } }`
    async fn run_artifacts(&self) -> Value {
        let d = self
            .gql(
                "query($id: ID!) { run(id: $id) { artifacts { path sha256 size } } }",
                json!({ "id": self.run }),
            )
            .await;
        d["run"]["artifacts"].clone()
    }

    /// The digests of the objects in the store (checking that each sits at `sha256/ab/cd/<hex>`).
    fn objects(&self) -> BTreeSet<String> {
        let keys: Vec<String> = match self.store {
            Store::Local => {
                let root = self.env.server.data_dir.join("artifacts").join("sha256");
                let mut keys = Vec::new();
                walk_files(&root, &mut |p| {
                    keys.push(
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    )
                });
                keys
            }
            Store::S3 => {
                // Nothing may land in the local default when S3 is configured.
                let mut local = Vec::new();
                walk_files(&self.env.server.data_dir.join("artifacts"), &mut |p| {
                    local.push(p.display().to_string())
                });
                assert!(
                    local.is_empty(),
                    "files in the local store although S3 is configured: {local:?}"
                );
                let prefix = format!("{PREFIX}/sha256/");
                self.s3()
                    .keys(&prefix)
                    .into_iter()
                    .map(|k| k[prefix.len()..].to_string())
                    .collect()
            }
        };
        keys.into_iter()
            .map(|k| {
                let parts: Vec<&str> = k.split('/').collect();
                assert!(
                    parts.len() == 3
                        && parts[2].len() == 64
                        && parts[0] == &parts[2][..2]
                        && parts[1] == &parts[2][2..4],
                    "an object that is not at sha256/ab/cd/<hex>: {k}"
                );
                parts[2].to_string()
            })
            .collect()
    }

    /// The file (on disk) holding the object of `digest`.
    fn object_file(&self, digest: &str) -> PathBuf {
        let key = format!("sha256/{}/{}/{digest}", &digest[..2], &digest[2..4]);
        match self.store {
            Store::Local => self.env.server.data_dir.join("artifacts").join(key),
            Store::S3 => self.s3().object_file(&format!("{PREFIX}/{key}")),
        }
    }

    /// What unfinished uploads left: staged bytes, local parts, open S3 multipart uploads.
    fn leftovers(&self) -> Vec<String> {
        match self.store {
            Store::Local => {
                let mut left = Vec::new();
                for sub in ["staging", "uploads"] {
                    let dir = self.env.server.data_dir.join("artifacts").join(sub);
                    for e in std::fs::read_dir(&dir)
                        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                        .flatten()
                    {
                        left.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                    }
                }
                left
            }
            Store::S3 => {
                let mut left = self.s3().keys(&format!("{PREFIX}/staging/"));
                left.extend(self.s3().open_multipart_uploads());
                // Anything outside the prefix's sha256/ and staging/ is a stray too.
                left.extend(self.s3().keys("").into_iter().filter(|k| {
                    !k.starts_with(&format!("{PREFIX}/sha256/"))
                        && !k.starts_with(&format!("{PREFIX}/staging/"))
                }));
                left
            }
        }
    }

    fn s3(&self) -> &S3Server {
        self.s3.as_ref().expect("an S3 world")
    }

    /// The store holds exactly these objects and nothing staged.
    fn assert_store(&self, objects: &[&str], what: &str) {
        let want: BTreeSet<String> = objects.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            self.objects(),
            want,
            "{what}: the store's objects\n{}",
            self.log()
        );
        assert_eq!(
            self.leftovers(),
            Vec::<String>::new(),
            "{what}: leftovers in the store\n{}",
            self.log()
        );
    }

    async fn sql_count(&self, from: &str) -> i64 {
        count(&self.env.sql().await, from).await
    }
}

/// A snapshot of every table but `audit_checkpoints`, which the server's background checkpointer
/// may write at any moment (its first tick, at start, can land after a test's first mutations).
async fn snapshot(sql: &tokio_postgres::Client) -> Snapshot {
    let mut s = Snapshot::take(sql).await;
    s.0.remove("audit_checkpoints");
    s
}

impl World {
    /// Like `TestEnv::assert_refused` (the admin's request is refused with `code`, nothing
    /// changed), with [`snapshot`].
    async fn assert_refused(&self, code: &str, query: &str, variables: Value) {
        let sql = self.env.sql().await;
        let before = snapshot(&sql).await;
        let got = self
            .env
            .gql_err_code(&self.env.admin, query, variables.clone())
            .await;
        assert_eq!(
            got, code,
            "wrong error code for\n{query}\nvariables: {variables}"
        );
        before.assert_unchanged(&snapshot(&sql).await, &format!("{query} with {variables}"));
    }
}

fn err_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// One raw HTTP/1.1 request (the target sent exactly as given: no client-side normalisation of
/// `..` or percent-escapes). Answers the status and the body.
async fn raw_http(
    port: u16,
    method: &str,
    target: &str,
    token: &str,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before reading the body: a failed write is no error here.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in the answer to {method} {target}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// Round trips

async fn round_trip_small_files(store: Store) {
    let w = World::start(store, &[]).await;
    let mut expected = Vec::new();
    for (i, (len, path, sized)) in [
        (0u64, "empty.bin", true),
        (1, "one.bin", true),
        (5 * MIB, "dir/five-mib.bin", false),
    ]
    .into_iter()
    .enumerate()
    {
        let (file, digest) = data_file(w.work.path(), &format!("f{i}"), 100 + i as u64, len);
        // 5 MiB goes chunked (no Content-Length), the others sized.
        let (status, body) = w.put_file(path, &file, sized, None).await;
        assert_eq!(status, 201, "PUT {path} ({len} bytes): {body}\n{}", w.log());
        assert_eq!(
            body,
            json!({"path": path, "sha256": digest, "size": len}),
            "answer to PUT {path}"
        );
        w.get_checked(&w.run_url(path), &digest, len).await;
        assert_eq!(
            std::fs::metadata(w.object_file(&digest)).unwrap().len(),
            len,
            "the stored object of {path}"
        );
        expected.push(json!({"path": path, "sha256": digest, "size": len}));
    }
    expected.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    assert_eq!(
        w.run_artifacts().await,
        Value::Array(expected.clone()),
        "run.artifacts, sorted by path"
    );
    let digests: Vec<&str> = expected
        .iter()
        .map(|f| f["sha256"].as_str().unwrap())
        .collect();
    w.assert_store(&digests, "after three uploads");
    assert_eq!(w.sql_count("run_artifacts").await, 3);
    assert_eq!(w.sql_count("pending_uploads").await, 0);
    // A digest claim that matches is accepted (1 B, claimed).
    let (status, body) = w.put("claimed/one.bin", b"\x2a", Some(&sha(b"\x2a"))).await;
    assert_eq!(status, 201, "{body}");
}

async fn round_trip_200_mib(store: Store) {
    let w = World::start(store, &[]).await;
    let len = 200 * MIB;
    let (file, digest) = data_file(w.work.path(), "big.bin", 200, len);
    let started = Instant::now();
    let (status, body) = w
        .put_file("weights/big.bin", &file, true, Some(&digest))
        .await;
    let up = started.elapsed();
    assert_eq!(status, 201, "PUT of 200 MiB: {body}\n{}", w.log());
    assert_eq!(
        body,
        json!({"path": "weights/big.bin", "sha256": digest, "size": len})
    );
    std::fs::remove_file(&file).unwrap();
    let started = Instant::now();
    w.get_checked(&w.run_url("weights/big.bin"), &digest, len)
        .await;
    eprintln!(
        "{store:?}: 200 MiB up in {up:?}, down (and hashed) in {:?}",
        started.elapsed()
    );
    // The last bytes, by range, from deep inside the object.
    let expected_tail = {
        let mut g = Gen::new(200);
        let mut buf = vec![0u8; MIB as usize];
        for _ in 0..200 {
            g.fill(&mut buf);
        }
        buf[buf.len() - 1000..].to_vec()
    };
    let resp = w
        .get(&w.run_url("weights/big.bin"), Some("bytes=-1000"))
        .await;
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        header(&resp, "content-range"),
        Some(format!("bytes {}-{}/{len}", len - 1000, len - 1))
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &expected_tail[..]);
    w.assert_store(&[&digest], "after the 200 MiB upload");
}

async fn ranges(store: Store) {
    let w = World::start(store, &[]).await;
    let bytes = data(7, 3 * MIB + 17);
    let size = bytes.len() as u64;
    w.put_ok("r.bin", &bytes).await;
    let url = w.run_url("r.bin");
    let cases: &[(&str, u64, u64)] = &[
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=1048570-2097160", 1_048_570, 2_097_160),
        ("bytes=3145700-", 3_145_700, size - 1),
        ("bytes=-7", size - 7, size - 1),
        ("bytes=3145000-99999999", 3_145_000, size - 1),
    ];
    for &(spec, a, b) in cases {
        let resp = w.get(&url, Some(spec)).await;
        assert_eq!(resp.status().as_u16(), 206, "Range: {spec}");
        assert_eq!(
            header(&resp, "content-range"),
            Some(format!("bytes {a}-{b}/{size}")),
            "Range: {spec}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            Some((b - a + 1).to_string()),
            "Range: {spec}"
        );
        assert_eq!(
            header(&resp, "x-custody-sha256"),
            Some(sha(&bytes)),
            "Range: {spec}"
        );
        let got = resp.bytes().await.unwrap();
        assert!(
            got.as_ref() == &bytes[a as usize..=b as usize],
            "Range: {spec}: other bytes ({} received)",
            got.len()
        );
    }
    for spec in ["bytes=3145745-", "bytes=99999999-", "bytes=5-1", "bytes=-0"] {
        let resp = w.get(&url, Some(spec)).await;
        assert_eq!(resp.status().as_u16(), 416, "Range: {spec} (size {size})");
        assert_eq!(
            header(&resp, "content-range"),
            Some(format!("bytes */{size}")),
            "Range: {spec}"
        );
    }
    // Several ranges are not served: the whole file comes back.
    let resp = w.get(&url, Some("bytes=0-1,4-5")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(digest_of(resp).await, (sha(&bytes), size));
    // An empty file has no satisfiable range.
    w.put_ok("empty", b"").await;
    let resp = w.get(&w.run_url("empty"), Some("bytes=0-0")).await;
    assert_eq!(resp.status().as_u16(), 416);
    assert_eq!(header(&resp, "content-range").as_deref(), Some("bytes */0"));
}

async fn deduplication(store: Store) {
    let w = World::start(store, &[]).await;
    let a = data(11, 2 * MIB + 3);
    let b = data(12, 1000);
    w.put_ok("a/x.bin", &a).await;
    let (status, body) = w.put("b/y.bin", &a, Some(&sha(&a))).await;
    assert_eq!(status, 201, "{body}");
    w.assert_store(&[&sha(&a)], "the same bytes at two paths");
    w.put_ok("c/z.bin", &b).await;
    // Another run of the project, same bytes again.
    let other =
        id(&fixtures::start_run(&w.env.server, &w.env.admin, &w.project, "eval", None, &[]).await);
    let url = w.url(&format!("run/{other}"), "copy.bin");
    let (status, body) = w.put_to(&url, a.clone().into(), None, None).await;
    assert_eq!(status, 201, "{body}");
    w.get_checked(&url, &sha(&a), a.len() as u64).await;
    w.get_checked(&w.run_url("b/y.bin"), &sha(&a), a.len() as u64)
        .await;
    w.assert_store(&[&sha(&a), &sha(&b)], "four uploads of two contents");
    assert_eq!(w.sql_count("artifact_objects").await, 2);
    assert_eq!(w.sql_count("run_artifacts").await, 4);
}

async fn wrong_claimed_digest_leaves_nothing(store: Store) {
    let w = World::start(store, &[]).await;
    let sql = w.env.sql().await;
    let lie = sha(b"something else entirely");
    let small = data(21, 5000);
    let (big_file, big_digest) = data_file(w.work.path(), "big", 22, PART_SIZE + 4 * MIB);
    let before = snapshot(&sql).await;
    let (status, body) = w.put("claims/small.bin", &small, Some(&lie)).await;
    assert_eq!((status, err_code(&body)), (400, "INVALID_INPUT"), "{body}");
    // Beyond one part: the S3 store has completed a multipart upload before it can compare.
    let (status, body) = w
        .put_file("claims/big.bin", &big_file, true, Some(&lie))
        .await;
    assert_eq!((status, err_code(&body)), (400, "INVALID_INPUT"), "{body}");
    for bad in ["not-a-digest", &lie[..63], &lie.to_uppercase()[..]] {
        let (status, body) = w.put("claims/bad.bin", &small, Some(bad)).await;
        assert_eq!(
            (status, err_code(&body)),
            (400, "INVALID_INPUT"),
            "X-Custody-Sha256: {bad}: {body}"
        );
    }
    before.assert_unchanged(&snapshot(&sql).await, "uploads with a wrong digest claim");
    assert_eq!(w.run_artifacts().await, json!([]));
    assert_eq!(w.sql_count("pending_uploads").await, 0);
    assert_eq!(w.sql_count("run_artifacts").await, 0);
    w.assert_store(&[], "after the refused uploads");
    // The true digest passes.
    let (status, body) = w
        .put_file("claims/big.bin", &big_file, true, Some(&big_digest))
        .await;
    assert_eq!(status, 201, "{body}");
    w.assert_store(&[&big_digest], "after the honest upload");
}

// ---------------------------------------------------------------------------------------------
// Paths

async fn path_attacks_are_refused(store: Store) {
    let w = World::start(store, &[]).await;
    let sql = w.env.sql().await;
    let port = w.env.server.port;
    let body = data(31, 1000);
    let long_ascii = "a".repeat(1025);
    let long_utf8 = "%C3%A9".repeat(513); // 1026 bytes once decoded
    let attacks: Vec<(&str, &str)> = vec![
        ("a/%2e%2e/b", "a `..` segment, percent-encoded"),
        ("%2E%2E/%2E%2E/etc/passwd", "leading `..` segments"),
        ("a/../b", "a literal `..` segment"),
        ("..%2F..%2Fetc%2Fpasswd", "`..` with encoded slashes"),
        ("%2Fetc/passwd", "an absolute path (encoded slash)"),
        ("/etc/passwd", "an absolute path (double slash)"),
        ("a/%2e/b", "a `.` segment"),
        ("a//b", "an empty segment"),
        ("dir/", "a trailing slash"),
        ("a/%01b", "a control character"),
        ("a%00b", "NUL"),
        ("a%0Ab", "a newline"),
        ("a%7Fb", "DEL"),
        ("a%5Cb", "a backslash"),
        ("..%5C..%5Cwindows%5Cwin.ini", "backslash traversal"),
        (&long_ascii, "1025 bytes"),
        (&long_utf8, "1026 bytes of UTF-8 (513 characters)"),
        ("a%FFb", "bytes that are not UTF-8"),
        ("%C0%AE%C0%AE/x", "overlong UTF-8 for `..`"),
    ];
    let files_before = all_files(&w);
    let snap = snapshot(&sql).await;
    for (path, what) in &attacks {
        let target = format!("/api/artifacts/run/{}/{path}", w.run);
        let (status, answer) = raw_http(port, "PUT", &target, &w.env.admin, &body).await;
        assert_eq!(
            status,
            400,
            "PUT of {what} ({path}) answered {status}: {answer}\n{}",
            w.log()
        );
        assert!(answer.contains("INVALID_INPUT"), "PUT of {what}: {answer}");
        let (status, answer) = raw_http(port, "GET", &target, &w.env.admin, b"").await;
        assert_eq!(
            status, 400,
            "GET of {what} ({path}) answered {status}: {answer}"
        );
    }
    snap.assert_unchanged(&snapshot(&sql).await, "path attacks");
    assert_eq!(all_files(&w), files_before, "path attacks wrote files");
    w.assert_store(&[], "after the path attacks");
    // Nothing escaped the store: no file named like the targets anywhere under the test's dirs.
    for dir in [w.env.server.data_dir.parent().unwrap(), w.work.path()] {
        walk_files(dir, &mut |p| {
            let name = p.file_name().unwrap().to_string_lossy();
            assert!(
                !["b", "passwd", "win.ini", "x"].contains(&name.as_ref()),
                "a path attack wrote {}",
                p.display()
            );
        });
    }

    // The rules' edges are allowed: exactly 1024 bytes, non-ASCII UTF-8, dots inside names.
    let at_limit = format!("{}/{}", "d".repeat(500), "f".repeat(523));
    assert_eq!(at_limit.len(), 1024);
    for path in [
        at_limit.as_str(),
        "ünïcode/файл.txt",
        "..hidden/a..b/.c",
        "with space/and+plus%sign",
    ] {
        let bytes = format!("content of {path}").into_bytes();
        w.put_ok(path, &bytes).await;
        w.get_checked(&w.run_url(path), &sha(&bytes), bytes.len() as u64)
            .await;
    }
    let listed: Vec<String> = w
        .run_artifacts()
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        listed.contains(&"ünïcode/файл.txt".to_string()) && listed.contains(&at_limit),
        "{listed:?}"
    );
}

/// Every file under the server's data dir and the S3 root, but PostgreSQL's and logs.
fn all_files(w: &World) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    walk_files(&w.env.server.data_dir, &mut |p| {
        files.insert(p.display().to_string());
    });
    if let Some(s3) = &w.s3 {
        walk_files(&s3.root, &mut |p| {
            files.insert(p.display().to_string());
        });
    }
    files
}

// ---------------------------------------------------------------------------------------------
// Immutability and access

async fn artifacts_are_immutable(store: Store) {
    let w = World::start(store, &[]).await;
    let sql = w.env.sql().await;
    let a = data(41, 3000);
    let b = data(42, 3000);
    let first = w.put_ok("weights.bin", &a).await;
    let snap = snapshot(&sql).await;
    for claimed in [None, Some(sha(&b))] {
        let (status, body) = w.put("weights.bin", &b, claimed.as_deref()).await;
        assert_eq!(
            (status, err_code(&body)),
            (409, "CONFLICT"),
            "other bytes at a taken path (claim {claimed:?}): {body}"
        );
    }
    snap.assert_unchanged(&snapshot(&sql).await, "refused overwrites");
    w.assert_store(&[&sha(&a)], "after the refused overwrites");
    // The same bytes again: 201, the same answer, nothing new (idempotent retries, `curl -T` twice).
    for claimed in [Some(sha(&a)), None] {
        let (status, body) = w.put("weights.bin", &a, claimed.as_deref()).await;
        assert_eq!(
            status,
            201,
            "the same bytes again (claim {claimed:?}): {body}\n{}",
            w.log()
        );
        assert_eq!(body, first);
    }
    snap.assert_unchanged(&snapshot(&sql).await, "idempotent re-uploads");
    w.assert_store(&[&sha(&a)], "after the idempotent re-uploads");
    w.get_checked(&w.run_url("weights.bin"), &sha(&a), a.len() as u64)
        .await;
    assert_eq!(
        count(&sql, "audit_log WHERE action = 'artifact.upload'").await,
        1
    );
    // The database refuses changes to a run's files too.
    for stmt in [
        "UPDATE run_artifacts SET size_bytes = 1",
        "DELETE FROM run_artifacts",
    ] {
        let err = sql.batch_execute(stmt).await.expect_err(stmt);
        assert!(
            db_error_text(&err).contains("immutable"),
            "{stmt}: {}",
            db_error_text(&err)
        );
    }
}

async fn access_rules(store: Store) {
    let w = World::start(store, &[]).await;
    let bytes = data(51, 100);
    w.put_ok("shared.bin", &bytes).await;
    let viewer = fixtures::member_token(
        &w.env.server,
        &w.env.admin,
        &w.project,
        "viewer@example.com",
        "VIEWER",
    )
    .await;
    let outsider = w.env.issue_token("outsider@example.com", false).await;
    let url = w.run_url("v.bin");
    let send = |token: Option<&str>, url: &str| {
        let mut req = w.http.put(url).body(bytes.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(
        send(None, &url).await.unwrap().status().as_u16(),
        401,
        "PUT without a token"
    );
    assert_eq!(
        send(Some("not-a-token"), &url)
            .await
            .unwrap()
            .status()
            .as_u16(),
        401,
        "PUT with a bad token"
    );
    assert_eq!(
        send(Some(&viewer), &url).await.unwrap().status().as_u16(),
        403,
        "PUT as a viewer"
    );
    let r = send(Some(&outsider), &url).await.unwrap().status().as_u16();
    assert!(r == 403 || r == 404, "PUT by a non-member answered {r}");
    let missing = w.url(&format!("run/{}", custody_tests::random_id()), "x.bin");
    let (status, body) = w.put_to(&missing, bytes.clone().into(), None, None).await;
    assert_eq!((status, err_code(&body)), (404, "NOT_FOUND"), "{body}");
    let (status, body) = w
        .put_to(
            &w.url(&format!("dataset/{}", w.run), "x.bin"),
            bytes.clone().into(),
            None,
            None,
        )
        .await;
    assert_eq!((status, err_code(&body)), (400, "INVALID_INPUT"), "{body}");
    // Reading needs a token and the viewer role.
    let read = |token: Option<&str>| {
        let mut req = w.http.get(w.run_url("shared.bin"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(read(None).await.unwrap().status().as_u16(), 401);
    let r = read(Some(&outsider)).await.unwrap().status().as_u16();
    assert!(r == 403 || r == 404, "GET by a non-member answered {r}");
    let resp = read(Some(&viewer)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(digest_of(resp).await, (sha(&bytes), 100));
    assert_eq!(
        w.get(&w.run_url("nothing-here.bin"), None)
            .await
            .status()
            .as_u16(),
        404
    );
    w.assert_store(&[&sha(&bytes)], "after the refused uploads");
    assert_eq!(w.sql_count("pending_uploads").await, 0);
}

// ---------------------------------------------------------------------------------------------
// Direct uploads and downloads (presigned by S3, or signed by the server for the local store)

const CREATE_UPLOAD: &str =
    "mutation($k: ArtifactOwnerKind!, $o: ID!, $p: String!, $s: Sha256!, $n: Int!) {
    createArtifactUpload(ownerKind: $k, ownerId: $o, path: $p, sha256: $s, sizeBytes: $n) {
      id partSize parts { partNumber url } expiresAt } }";
const COMPLETE_UPLOAD: &str = "mutation($u: ID!, $parts: [CompletedPartInput!]!) {
    completeArtifactUpload(uploadId: $u, parts: $parts) { path sha256 size } }";
const DOWNLOAD_URL: &str = "query($k: ArtifactOwnerKind!, $o: ID!, $p: String!) {
    artifactDownloadUrl(ownerKind: $k, ownerId: $o, path: $p) }";

/// Starts a direct upload announcing `digest` and `size`, PUTs `file`'s parts without a bearer
/// token, and answers the upload id and the parts' `{partNumber, etag}`.
async fn send_parts(
    w: &World,
    path: &str,
    file: &Path,
    digest: &str,
    size: u64,
) -> (String, Value) {
    let d = w
        .gql(
            CREATE_UPLOAD,
            json!({"k": "RUN", "o": w.run, "p": path, "s": digest, "n": size}),
        )
        .await;
    let upload = &d["createArtifactUpload"];
    assert_eq!(upload["partSize"].as_u64(), Some(PART_SIZE), "{upload}");
    let parts = upload["parts"].as_array().unwrap();
    assert_eq!(
        parts.len() as u64,
        size.div_ceil(PART_SIZE).max(1),
        "one URL per part: {upload}"
    );
    let expires = upload["expiresAt"].as_str().unwrap();
    assert!(
        expires > chrono_now().as_str(),
        "expiresAt {expires} is not in the future"
    );
    let expected_host = match w.store {
        Store::Local => w.env.server.url("/"),
        Store::S3 => format!("{}/", w.s3().endpoint()),
    };
    let all = std::fs::read(file).unwrap();
    let mut completed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part["partNumber"].as_u64(), Some(i as u64 + 1));
        let url = part["url"].as_str().unwrap();
        assert!(
            url.starts_with(&expected_host),
            "part URL {url} is not on {expected_host}"
        );
        let start = i * PART_SIZE as usize;
        let end = (start + PART_SIZE as usize).min(all.len());
        let resp = w
            .http
            .put(url)
            .body(all[start..end].to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let etag = header(&resp, "etag");
        assert_eq!(
            status,
            200,
            "PUT of part {} to {url}: {}",
            i + 1,
            resp.text().await.unwrap_or_default()
        );
        completed.push(
            json!({"partNumber": i + 1, "etag": etag.expect("a part's answer carries an ETag")}),
        );
    }
    (
        upload["id"].as_str().unwrap().to_string(),
        Value::Array(completed),
    )
}

fn chrono_now() -> String {
    // RFC 3339 UTC without a chrono dependency: good enough to compare with `expiresAt` as text.
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The same URL with one character of its signature (or token) changed.
fn tampered(url: &str) -> String {
    let mut chars: Vec<char> = url.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

async fn direct_upload_through_part_urls(store: Store) {
    let w = World::start(store, &[]).await;
    let size = 20 * MIB + 4321;
    let (file, digest) = data_file(w.work.path(), "direct.bin", 61, size);
    let path = "direct/model.bin";
    // A part URL whose signature (or token) was changed is refused; the real one works.
    let ten = data(60, 10);
    {
        let d = w
            .gql(
                CREATE_UPLOAD,
                json!({"k": "RUN", "o": w.run, "p": "ten.bin", "s": sha(&ten), "n": 10}),
            )
            .await;
        let upload_id = d["createArtifactUpload"]["id"].clone();
        let url = d["createArtifactUpload"]["parts"][0]["url"]
            .as_str()
            .unwrap()
            .to_string();
        let status = w
            .http
            .put(tampered(&url))
            .body(ten.clone())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(
            (400..500).contains(&status),
            "a PUT to a tampered part URL answered {status}"
        );
        let resp = w.http.put(&url).body(ten.clone()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let etag = header(&resp, "etag").unwrap();
        let d = w
            .gql(
                COMPLETE_UPLOAD,
                json!({"u": upload_id, "parts": [{"partNumber": 1, "etag": etag}]}),
            )
            .await;
        assert_eq!(d["completeArtifactUpload"]["sha256"], json!(sha(&ten)));
    }
    let (upload_id, parts) = send_parts(&w, path, &file, &digest, size).await;
    let d = w
        .gql(COMPLETE_UPLOAD, json!({"u": upload_id, "parts": parts}))
        .await;
    assert_eq!(
        d["completeArtifactUpload"],
        json!({"path": path, "sha256": digest, "size": size})
    );
    assert_eq!(
        w.run_artifacts().await,
        json!([{"path": path, "sha256": digest, "size": size}, {"path": "ten.bin", "sha256": sha(&ten), "size": 10}])
    );
    assert_eq!(w.sql_count("pending_uploads").await, 0);
    w.assert_store(&[&digest, &sha(&ten)], "after the direct uploads");
    w.get_checked(&w.run_url(path), &digest, size).await;
    // Completing twice is refused.
    let code = w
        .env
        .gql_err_code(
            &w.env.admin,
            COMPLETE_UPLOAD,
            json!({"u": upload_id, "parts": parts}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");

    // The download link works with a plain client, no token.
    let d = w
        .gql(DOWNLOAD_URL, json!({"k": "RUN", "o": w.run, "p": path}))
        .await;
    let link = d["artifactDownloadUrl"].as_str().unwrap().to_string();
    match store {
        Store::Local => assert!(link.starts_with(&w.env.server.url("/api/")), "{link}"),
        Store::S3 => assert!(link.starts_with(&w.s3().endpoint()), "{link}"),
    }
    let resp = reqwest::Client::new().get(&link).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {link}");
    assert_eq!(
        digest_of(resp).await,
        (digest.clone(), size),
        "the bytes behind the download link"
    );
    let status = reqwest::Client::new()
        .get(tampered(&link))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert!(
        (400..500).contains(&status),
        "a tampered download link answered {status}"
    );
    // An empty file goes in one (empty) part.
    let (empty, empty_digest) = data_file(w.work.path(), "empty", 0, 0);
    let (upload_id, parts) = send_parts(&w, "direct/empty", &empty, &empty_digest, 0).await;
    let d = w
        .gql(COMPLETE_UPLOAD, json!({"u": upload_id, "parts": parts}))
        .await;
    assert_eq!(
        d["completeArtifactUpload"],
        json!({"path": "direct/empty", "sha256": empty_digest, "size": 0})
    );
    w.assert_store(
        &[&digest, &sha(&ten), &empty_digest],
        "after the direct uploads",
    );
}

async fn direct_upload_with_other_bytes_is_refused(store: Store) {
    let w = World::start(store, &[]).await;
    let size = 20 * MIB + 99;
    let (_, announced) = data_file(w.work.path(), "announced.bin", 71, size);
    let (sent, sent_digest) = data_file(w.work.path(), "sent.bin", 72, size);
    let (upload_id, parts) = send_parts(&w, "direct/liar.bin", &sent, &announced, size).await;
    let code = w
        .env
        .gql_err_code(
            &w.env.admin,
            COMPLETE_UPLOAD,
            json!({"u": upload_id, "parts": parts}),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    assert_eq!(w.run_artifacts().await, json!([]));
    assert_eq!(
        w.sql_count("pending_uploads").await,
        0,
        "the refused upload's pending row stays"
    );
    assert_eq!(w.sql_count("run_artifacts").await, 0);
    assert_eq!(w.sql_count("artifact_objects").await, 0);
    assert!(!w.object_file(&sent_digest).exists() && !w.object_file(&announced).exists());
    w.assert_store(&[], "after the refused completion");
    // Fewer bytes than announced: refused as well.
    let small = data(73, 1000);
    let short_path = w.work.path().join("short");
    std::fs::write(&short_path, &small[..999]).unwrap();
    let (upload_id, parts) =
        send_parts(&w, "direct/short.bin", &short_path, &sha(&small), 1000).await;
    let code = w
        .env
        .gql_err_code(
            &w.env.admin,
            COMPLETE_UPLOAD,
            json!({"u": upload_id, "parts": parts}),
        )
        .await;
    assert_eq!(
        code, "INVALID_INPUT",
        "completion of 999 bytes announced as 1000"
    );
    w.assert_store(&[], "after the short upload");
    assert_eq!(w.sql_count("pending_uploads").await, 0);
    // A completion must name every part; then the good one is recorded.
    let small_path = w.work.path().join("small");
    std::fs::write(&small_path, &small).unwrap();
    let (upload_id, parts) =
        send_parts(&w, "direct/small.bin", &small_path, &sha(&small), 1000).await;
    let code = w
        .env
        .gql_err_code(
            &w.env.admin,
            COMPLETE_UPLOAD,
            json!({"u": upload_id, "parts": []}),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT", "completion without its parts");
    let d = w
        .gql(COMPLETE_UPLOAD, json!({"u": upload_id, "parts": parts}))
        .await;
    assert_eq!(d["completeArtifactUpload"]["sha256"], json!(sha(&small)));
    w.assert_store(&[&sha(&small)], "after the good completion");
}

// ---------------------------------------------------------------------------------------------
// Consistency: an object whose row failed to commit is swept; a referenced one never is.

/// The recording transaction fails after the object was placed (a real database fault injected with
/// a trigger): 500, the object stays with a pending row, and the sweeper removes it once the grace
/// period is over, unless a row refers to its digest, whether that row was written before the
/// failed upload (y) or after it (z). The grace period is made to pass by moving the pending rows'
/// start back in time, so that no step depends on timing.
async fn crash_between_object_and_row_is_swept(store: Store) {
    let w = World::start(store, &["--sweep-grace", "1h", "--sweep-interval", "1s"]).await;
    let sql = w.env.sql().await;
    let kept = data(81, 100_000);
    let lost = data(82, 200_000);
    let late = data(83, 50_000);
    w.put_ok("kept/y.bin", &kept).await;

    sql.batch_execute(
        "CREATE FUNCTION custody_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected fault: no space left on device'; END $$;
         CREATE TRIGGER custody_test_fail BEFORE INSERT ON run_artifacts
             FOR EACH ROW EXECUTE FUNCTION custody_test_fail();",
    )
    .await
    .unwrap();
    for (path, bytes) in [
        ("lost/x.bin", &lost),
        ("dup/y.bin", &kept),
        ("z/first.bin", &late),
    ] {
        let (status, body) = w.put(path, bytes, None).await;
        assert_eq!(
            (status, err_code(&body)),
            (500, "INTERNAL"),
            "PUT {path} with the fault: {body}"
        );
        assert!(
            !body.to_string().contains("injected"),
            "the error shows internal detail: {body}"
        );
    }
    sql.batch_execute(
        "DROP TRIGGER custody_test_fail ON run_artifacts; DROP FUNCTION custody_test_fail();",
    )
    .await
    .unwrap();
    // z's bytes get a row after their failed upload, before the sweep.
    w.put_ok("z/second.bin", &late).await;

    // The objects were placed before the failed commits; pending rows remember them.
    for bytes in [&lost, &late] {
        assert!(
            w.object_file(&sha(bytes)).is_file(),
            "the object of a failed upload is not in the store"
        );
    }
    let pending: Vec<String> = sql
        .query("SELECT sha256 FROM pending_uploads ORDER BY path", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    assert_eq!(
        pending,
        vec![sha(&kept), sha(&lost), sha(&late)],
        "pending rows of dup/y.bin, lost/x.bin, z/first.bin"
    );
    assert_eq!(count(&sql, "artifact_objects").await, 2);
    assert_eq!(
        w.run_artifacts().await,
        json!([
            {"path": "kept/y.bin", "sha256": sha(&kept), "size": 100_000},
            {"path": "z/second.bin", "sha256": sha(&late), "size": 50_000},
        ])
    );
    assert_eq!(w.objects().len(), 3);
    assert_eq!(
        w.leftovers(),
        Vec::<String>::new(),
        "staged bytes of the failed uploads"
    );

    // The grace period passes.
    sql.batch_execute("UPDATE pending_uploads SET started_at = started_at - interval '2 hours'")
        .await
        .unwrap();
    let swept = eventually(Duration::from_secs(30), || {
        let sql = &sql;
        async move { count(sql, "pending_uploads").await == 0 }
    })
    .await;
    assert!(
        swept,
        "the pending rows were not swept within 30 s\n{}",
        w.log()
    );
    assert!(
        !w.object_file(&sha(&lost)).exists(),
        "the unreferenced object was not swept\n{}",
        w.log()
    );
    w.assert_store(&[&sha(&kept), &sha(&late)], "after the sweep");
    assert!(w
        .env
        .server
        .log()
        .contains("swept an object no row refers to"));
    w.get_checked(&w.run_url("kept/y.bin"), &sha(&kept), kept.len() as u64)
        .await;
    w.get_checked(&w.run_url("z/second.bin"), &sha(&late), late.len() as u64)
        .await;
    // With the fault gone, the failed path can be written.
    w.put_ok("lost/x.bin", &lost).await;
    w.assert_store(&[&sha(&kept), &sha(&lost), &sha(&late)], "after the retry");
}

/// A direct upload that never completes is swept after the grace period (here real time: 5 s),
/// with its parts (local files, or the S3 multipart upload).
async fn abandoned_direct_upload_is_swept(store: Store) {
    let w = World::start(store, &["--sweep-grace", "5s", "--sweep-interval", "1s"]).await;
    let sql = w.env.sql().await;
    let size = PART_SIZE + 1000;
    let bytes = data(85, size);
    let d = w
        .gql(
            CREATE_UPLOAD,
            json!({"k": "RUN", "o": w.run, "p": "half.bin", "s": sha(&bytes), "n": size}),
        )
        .await;
    let upload = d["createArtifactUpload"].clone();
    let url = upload["parts"][0]["url"].as_str().unwrap();
    let resp = w
        .http
        .put(url)
        .body(bytes[..PART_SIZE as usize].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let etag = header(&resp, "etag").unwrap();
    // Part 2 never comes: the first part waits in the store, outside the objects.
    assert!(
        !w.leftovers().is_empty(),
        "the uploaded part is nowhere to be seen"
    );
    let swept = eventually(Duration::from_secs(30), || {
        let sql = &sql;
        async move { count(sql, "pending_uploads").await == 0 }
    })
    .await;
    assert!(
        swept,
        "the abandoned upload was not swept within 30 s\n{}",
        w.log()
    );
    w.assert_store(&[], "after sweeping the abandoned upload");
    let code = w
        .env
        .gql_err_code(
            &w.env.admin,
            COMPLETE_UPLOAD,
            json!({"u": upload["id"], "parts": [{"partNumber": 1, "etag": etag}]}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND", "completing a swept upload");
}

/// The client goes away in the middle of the body: the staged bytes (and, on S3, the multipart
/// upload holding the parts sent so far) are removed, no row stays.
async fn interrupted_upload_leaves_nothing(store: Store) {
    use tokio::io::AsyncWriteExt;
    let w = World::start(store, &[]).await;
    let sql = w.env.sql().await;
    let snap = snapshot(&sql).await;
    let sent = data(86, PART_SIZE + 4 * MIB);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", w.env.server.port))
        .await
        .unwrap();
    let head = format!(
        "PUT /api/artifacts/run/{}/cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        w.run,
        w.env.admin,
        2 * sent.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&sent).await.unwrap();
    s.flush().await.unwrap();
    // Wait until the server holds bytes (a staged file; on S3 a first part of a multipart upload),
    // then hang up.
    let holding = eventually(Duration::from_secs(30), || async {
        match w.store {
            Store::Local => w.leftovers().iter().any(|l| l.starts_with("staging/")),
            Store::S3 => w
                .s3()
                .open_multipart_uploads()
                .iter()
                .any(|f| f.starts_with(".upload_id-")),
        }
    })
    .await;
    assert!(
        holding,
        "the server never staged the body: {:?}\n{}",
        w.leftovers(),
        w.log()
    );
    assert_eq!(count(&sql, "pending_uploads").await, 1);
    drop(s);
    let cleaned = eventually(Duration::from_secs(30), || {
        let sql = &sql;
        async move { count(sql, "pending_uploads").await == 0 }
    })
    .await;
    assert!(
        cleaned,
        "the interrupted upload's pending row stays\n{}",
        w.log()
    );
    let empty = eventually(Duration::from_secs(10), || async {
        w.leftovers().is_empty()
    })
    .await;
    assert!(
        empty,
        "leftovers of the interrupted upload: {:?}\n{}",
        w.leftovers(),
        w.log()
    );
    w.assert_store(&[], "after the interrupted upload");
    snap.assert_unchanged(&snapshot(&sql).await, "an interrupted upload");
}

// ---------------------------------------------------------------------------------------------
// Model version manifests

const REGISTER: &str = "mutation($p: String!, $m: String!, $r: ID!, $a: String) {
    registerModelVersion(project: $p, model: $m, runId: $r, artifactPath: $a) {
      id version artifactPath manifestSha256 artifacts { path sha256 size } } }";

/// The canonical manifest digest, computed here independently of the server: SHA-256 of the JSON
/// array of `{"path","sha256","size"}` sorted by path, keys sorted, no whitespace.
fn manifest_digest(files: &[(&str, &[u8])]) -> String {
    let mut sorted: Vec<&(&str, &[u8])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let items: Vec<String> = sorted
        .iter()
        .map(|(p, b)| {
            format!(
                r#"{{"path":{},"sha256":"{}","size":{}}}"#,
                serde_json::to_string(p).unwrap(),
                sha(b),
                b.len()
            )
        })
        .collect();
    sha(format!("[{}]", items.join(",")).as_bytes())
}

async fn model_version_manifest_is_immutable(store: Store) {
    let w = World::start(store, &[]).await;
    let sql = w.env.sql().await;
    let weights = data(91, 3 * MIB);
    let config = br#"{"layers": 12, "name": "caf\u00e9"}"#.to_vec();
    let vocab = "a\nb\nc\nnaïve\n".as_bytes().to_vec();
    let sibling = b"not part of the version".to_vec();
    for (path, bytes) in [
        ("model/weights.bin", &weights),
        ("model/config.json", &config),
        ("model/tokenizer/vocab.txt", &vocab),
        ("model.txt", &sibling),
        ("notes/readme.md", &sibling),
    ] {
        w.put_ok(path, bytes).await;
    }
    fixtures::create_model(&w.env.server, &w.env.admin, &w.project, "classifier").await;
    let d = w
        .gql(
            REGISTER,
            json!({"p": w.project, "m": "classifier", "r": w.run, "a": "model"}),
        )
        .await;
    let version = d["registerModelVersion"].clone();
    let files: [(&str, &[u8]); 3] = [
        ("weights.bin", &weights),
        ("config.json", &config),
        ("tokenizer/vocab.txt", &vocab),
    ];
    let mut expected: Vec<Value> = files
        .iter()
        .map(|(p, b)| json!({"path": p, "sha256": sha(b), "size": b.len()}))
        .collect();
    expected.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    assert_eq!(
        version["artifacts"],
        Value::Array(expected.clone()),
        "the version's files, relative to model/"
    );
    let manifest = manifest_digest(&files);
    assert_eq!(
        version["manifestSha256"].as_str(),
        Some(manifest.as_str()),
        "manifestSha256"
    );
    let mv = version["id"].as_str().unwrap().to_string();
    let owner = format!("model-version/{mv}");
    for (path, bytes) in &files {
        w.get_checked(&w.url(&owner, path), &sha(bytes), bytes.len() as u64)
            .await;
    }
    assert_eq!(
        w.get(&w.url(&owner, "model/weights.bin"), None)
            .await
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        w.get(&w.url(&owner, "model.txt"), None)
            .await
            .status()
            .as_u16(),
        404
    );

    // Immutable through the API...
    let snap = snapshot(&sql).await;
    for path in ["x", "weights.bin", "config.json"] {
        let (status, body) = w
            .put_to(&w.url(&owner, path), b"new".to_vec().into(), None, None)
            .await;
        assert_eq!(
            (status, err_code(&body)),
            (409, "CONFLICT"),
            "PUT to the model version's {path}: {body}"
        );
    }
    snap.assert_unchanged(&snapshot(&sql).await, "PUTs to a model version");
    // ... later files of the run under model/ do not join the version ...
    w.put_ok("model/late.bin", b"late").await;
    let d = w
        .gql(
            "query($p: String!, $m: String!) { modelVersion(project: $p, model: $m, version: 1) { manifestSha256 artifacts { path sha256 size } } }",
            json!({"p": w.project, "m": "classifier"}),
        )
        .await;
    assert_eq!(d["modelVersion"]["artifacts"], Value::Array(expected));
    assert_eq!(
        d["modelVersion"]["manifestSha256"].as_str(),
        Some(manifest.as_str())
    );
    // ... and in the database.
    let mv_id: uuid::Uuid = mv.parse().unwrap();
    for stmt in [
        "UPDATE model_version_files SET size_bytes = size_bytes + 1 WHERE model_version_id = '{id}'",
        "UPDATE model_version_files SET sha256 = (SELECT sha256 FROM artifact_objects LIMIT 1) WHERE model_version_id = '{id}'",
        "DELETE FROM model_version_files WHERE model_version_id = '{id}'",
    ] {
        let stmt = stmt.replace("{id}", &mv_id.to_string());
        let stmt = stmt.as_str();
        let err = sql.batch_execute(stmt).await.expect_err(stmt);
        assert!(db_error_text(&err).contains("immutable"), "{stmt}: {}", db_error_text(&err));
    }
    assert_eq!(count(&sql, "model_version_files").await, 3);

    // A single file as artifactPath: the version holds it under its own name.
    let d = w
        .gql(
            REGISTER,
            json!({"p": w.project, "m": "classifier", "r": w.run, "a": "model/weights.bin"}),
        )
        .await;
    let single: [(&str, &[u8]); 1] = [("weights.bin", &weights)];
    assert_eq!(
        d["registerModelVersion"]["artifacts"],
        json!([{"path": "weights.bin", "sha256": sha(&weights), "size": weights.len()}])
    );
    assert_eq!(
        d["registerModelVersion"]["manifestSha256"].as_str(),
        Some(manifest_digest(&single).as_str())
    );
    // No files there, or a bad path: refused, nothing changed.
    for bad in ["nothing/here", "mode", "../model", "/model"] {
        w.assert_refused(
            "INVALID_INPUT",
            REGISTER,
            json!({"p": w.project, "m": "classifier", "r": w.run, "a": bad}),
        )
        .await;
    }
    // Without artifactPath: the canonical empty manifest.
    let d = w
        .gql(
            REGISTER,
            json!({"p": w.project, "m": "classifier", "r": w.run}),
        )
        .await;
    assert_eq!(d["registerModelVersion"]["artifacts"], json!([]));
    assert_eq!(
        d["registerModelVersion"]["manifestSha256"].as_str(),
        Some(sha(b"[]").as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Size limits

async fn size_limit(store: Store) {
    let w = World::start(store, &["--max-artifact-size", "1MiB"]).await;
    let sql = w.env.sql().await;
    let (over, over_digest) = data_file(w.work.path(), "over", 101, 2 * MIB);
    let snap = snapshot(&sql).await;
    for sized in [true, false] {
        let (status, body) = w.put_file("big.bin", &over, sized, None).await;
        assert_eq!(
            status,
            413,
            "2 MiB over a 1 MiB limit (sized: {sized}): {body}\n{}",
            w.log()
        );
        assert_eq!(err_code(&body), "INVALID_INPUT");
    }
    w.assert_refused(
        "INVALID_INPUT",
        CREATE_UPLOAD,
        json!({"k": "RUN", "o": w.run, "p": "big.bin", "s": over_digest, "n": 2 * MIB}),
    )
    .await;
    snap.assert_unchanged(&snapshot(&sql).await, "uploads over the limit");
    w.assert_store(&[], "after the refused uploads");
    let at_limit = data(102, MIB);
    w.put_ok("limit.bin", &at_limit).await;
    w.assert_store(&[&sha(&at_limit)], "after an upload at the limit");
}

/// Over the limit after a first multipart part went to S3: that multipart upload is aborted.
async fn size_limit_beyond_one_part(store: Store) {
    let w = World::start(store, &["--max-artifact-size", "20MiB"]).await;
    let sql = w.env.sql().await;
    let (over, _) = data_file(w.work.path(), "over", 111, 40 * MIB);
    let snap = snapshot(&sql).await;
    let (status, body) = w.put_file("big.bin", &over, true, None).await;
    assert_eq!(
        status,
        413,
        "40 MiB over a 20 MiB limit: {body}\n{}",
        w.log()
    );
    snap.assert_unchanged(&snapshot(&sql).await, "an upload over the limit");
    w.assert_store(&[], "after the refused upload");
}
