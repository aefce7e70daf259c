//! End-to-end test harness for Custody: the real `custody-server` binary against a real,
//! private PostgreSQL.
//!
//! - [`pg::PgCluster`]: one PostgreSQL cluster per test process (template DB migrated once by
//!   `custody-server migrate`), stopped and removed when the process exits.
//! - [`db::TestDb`]: a fresh database per test, cloned from the template; direct SQL handles and
//!   [`db::Snapshot`] to prove that a refused request changed nothing.
//! - [`server::Server`]: `custody-server serve` on a free port, `restart`, `token issue`, and the
//!   GraphQL client (`gql`, `gql_ok`, `gql_err_code`).
//! - [`TestEnv`]: all of it for one test: `TestEnv::start().await`.
//! - [`wait_until`] and [`eventually`]: tests wait for what they expect by polling it, never by
//!   sleeping a fixed time.

pub mod audit;
pub mod bench;
pub mod browser;
pub mod cli;
pub mod db;
pub mod export_helpers;
pub mod fixtures;
pub mod governance;
pub mod jwt;
pub mod oidc;
pub mod pg;
pub mod s3;
pub mod seed;
pub mod server;
pub mod sign_in;
pub mod smtp;
pub mod wait;
pub mod webhook;

use serde_json::Value;

pub use db::{Snapshot, TestDb};
pub use server::Server;
pub use wait::{eventually, wait_until};

/// One test's world: its own database and a server on it, plus the admin token.
pub struct TestEnv {
    // Field order is drop order: the server stops before anything else goes.
    pub server: Server,
    pub db: TestDb,
    /// Bearer token of `admin@localhost` (global admin), from `<data-dir>/admin.token`.
    pub admin: String,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        let db = TestDb::create().await;
        let server = Server::start(Some(&db.url)).await;
        let admin = server.admin_token.clone();
        TestEnv { server, db, admin }
    }

    /// A direct SQL connection to this test's database (superuser).
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.connect().await
    }

    pub async fn snapshot(&self) -> Snapshot {
        Snapshot::take(&self.sql().await).await
    }

    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        self.server.gql(token, query, variables).await
    }

    pub async fn gql_ok(&self, token: &str, query: &str, variables: Value) -> Value {
        self.server.gql_ok(token, query, variables).await
    }

    pub async fn gql_err_code(&self, token: &str, query: &str, variables: Value) -> String {
        self.server.gql_err_code(token, query, variables).await
    }

    /// `custody-server token issue` for this server (creates the user if missing).
    pub async fn issue_token(&self, email: &str, admin: bool) -> String {
        self.server.issue_token(email, admin).await
    }

    /// Asserts that `query` is refused with `code` and that the database (every table, the audit
    /// log included) is exactly as before.
    pub async fn assert_refused(&self, token: &str, code: &str, query: &str, variables: Value) {
        let sql = self.sql().await;
        let before = Snapshot::take(&sql).await;
        let got = self.gql_err_code(token, query, variables.clone()).await;
        assert_eq!(
            got, code,
            "wrong error code for\n{query}\nvariables: {variables}"
        );
        let after = Snapshot::take(&sql).await;
        before.assert_unchanged(&after, &format!("{query} with {variables}"));
    }

    /// Like [`assert_refused`](Self::assert_refused) for any error (e.g. GraphQL scalar validation,
    /// whose code is not ours to fix): `errors` non-empty, no data, nothing changed. Returns the
    /// whole response.
    pub async fn assert_rejected_any(&self, token: &str, query: &str, variables: Value) -> Value {
        let sql = self.sql().await;
        let before = Snapshot::take(&sql).await;
        let r = self.gql(token, query, variables.clone()).await;
        let errors = r["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            !errors.is_empty(),
            "expected an error for\n{query}\nvariables: {variables}\ngot: {r}"
        );
        let data_empty = r["data"].is_null()
            || r["data"]
                .as_object()
                .is_some_and(|o| o.values().all(Value::is_null));
        assert!(data_empty, "a rejected request returned data: {r}");
        let after = Snapshot::take(&sql).await;
        before.assert_unchanged(&after, &format!("{query} with {variables}"));
        r
    }
}

impl AsRef<Server> for TestEnv {
    fn as_ref(&self) -> &Server {
        &self.server
    }
}

/// Runs blocking `f` on tokio's blocking pool; a panic in it is re-raised here with its own
/// message (not wrapped in a JoinError).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task failed: {e}"),
    }
}

/// A sha256 hex digest (64 lowercase hex characters) derived from `seed`.
pub fn sha256_hex(seed: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(seed.as_bytes()))
}

/// A 40-hex commit SHA derived from `seed`.
pub fn commit_sha(seed: &str) -> String {
    sha256_hex(seed)[..40].to_string()
}

/// A random UUID (for ids that exist nowhere).
pub fn random_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Makes the child of `cmd` get `signal` should this test process die without stopping it (a
/// panicking test, a killed `cargo test`): no server, driver or cluster outlives its test.
pub fn die_with_parent(cmd: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
}

/// What a benchmark says of the server binary it measures: its build, from its `--version` (a
/// debug build says so). Not the test's own profile: a debug harness may drive a release server
/// (`CUSTODY_SERVER_BIN`), and a copied binary's path tells nothing.
pub fn server_build(bin: &std::path::Path) -> &'static str {
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.is_empty() {
        "unknown build: `--version` answered nothing"
    } else if version.contains("debug build") {
        "DEBUG build: figures are not representative, use --release"
    } else {
        "release"
    }
}

/// The machine's load averages (1, 5 and 15 minutes), as benchmarks print them next to figures.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
