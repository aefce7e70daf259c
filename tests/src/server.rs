//! The real `custody-server` binary: locating (and building) it, running `serve` on a free port,
//! stopping and restarting it, and running its CLI subcommands (`token issue`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pg::free_port;

/// Environment variables of the server that the tests' own environment must not leak into it.
const SCRUBBED_ENV: &[&str] = &[
    "DATABASE_URL",
    "CUSTODY_ARTIFACTS",
    "CUSTODY_S3_ENDPOINT",
    "CUSTODY_SMTP_URL",
    "CUSTODY_PUBLIC_URL",
    "CUSTODY_POLICIES",
    "CUSTODY_DATA_DIR",
    "CUSTODY_LISTEN",
    "CUSTODY_JWT_KEY",
    "CUSTODY_MIGRATION_DATABASE_URL",
    "CUSTODY_METRICS_TOKEN",
    "CUSTODY_WEBHOOK_ALLOW_NETWORKS",
    "CUSTODY_GRAPHQL_MAX_BODY",
    "CUSTODY_DB_POOL_TIMEOUT",
    "CUSTODY_EXPORT_POOL_SIZE",
    "CUSTODY_EXPORTS_PER_USER",
    "CUSTODY_EXPORT_IDLE_TIMEOUT",
    "CUSTODY_WEBHOOK_MAX_ATTEMPTS",
];

static SERVER_BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The path of the `custody-server` binary matching this test build.
///
/// `CUSTODY_SERVER_BIN` overrides. Otherwise it is `<target>/<profile>/custody-server`, derived from
/// this test executable (`<target>/<profile>/deps/<test>-<hash>`), and it is brought up to date once
/// per process with `cargo build --workspace --bin custody-server` in the same profile, so that
/// `cargo test -p custody-tests [--release]` never runs a stale or missing server
/// (`CUSTODY_TESTS_NO_BUILD=1` skips that step).
pub fn server_bin() -> PathBuf {
    let found = SERVER_BIN.get_or_init(|| {
        locate_and_build(&["--workspace"], "custody-server", "CUSTODY_SERVER_BIN")
            .map_err(|e| format!("{e:#}"))
    });
    match found {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A workspace binary of this test build's profile: `override_var` if set, else
/// `<target>/<profile>/<bin>`, rebuilt once with `cargo build <selector> --bin <bin>` unless
/// `CUSTODY_TESTS_NO_BUILD` is set.
pub fn locate_and_build(
    selector: &[&str],
    bin_name: &str,
    override_var: &str,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(override_var) {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "{override_var}={} is not a file", p.display());
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("test executable has no parent"))?;
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap()
    } else {
        deps
    };
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no target dir above {}", profile_dir.display()))?;
    let bin = profile_dir.join(bin_name);
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => "dev".to_string(),
    };
    if std::env::var_os("CUSTODY_TESTS_NO_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("Cargo.toml");
        let mut build = Command::new(&cargo);
        // `cargo test` gives this process the variables of the *test* package
        // (CARGO_MANIFEST_DIR=…/tests, CARGO_PKG_NAME=custody-tests, …). Build scripts that
        // watch them (`rerun-if-env-changed`, e.g. ring's) would see them change between this
        // build and the developer's own `cargo build`/`cargo test`, and each would rebuild ring
        // and everything above it, the server included, every time: they are not passed on.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(is_test_package_var) {
                build.env_remove(&name);
            }
        }
        let out = build
            .args(["build", "--quiet"])
            .args(selector)
            .args(["--bin", bin_name, "--profile", &profile])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow::anyhow!("running {cargo:?} build for {bin_name}: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let shown: String = err.chars().take(6000).collect();
            anyhow::bail!(
                "building {bin_name} failed ({}); the first compiler messages:\n{shown}{}",
                out.status,
                if err.len() > shown.len() {
                    "\n[…]"
                } else {
                    ""
                }
            );
        }
    }
    anyhow::ensure!(
        bin.is_file(),
        "the {bin_name} binary is missing at {} (build it with `cargo build {}`, or set {override_var})",
        bin.display(),
        selector.join(" ")
    );
    Ok(bin)
}

/// Is `name` one of the variables that cargo sets for the test package it runs
/// (`CARGO_PKG_*`, `CARGO_MANIFEST_*`, `CARGO_CRATE_NAME`, …)?
fn is_test_package_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || name.starts_with("CARGO_BIN_")
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
        )
}

/// A fresh directory under /tmp with mode 0755 (the embedded cluster's `postgres` user must be
/// able to traverse it when the tests run as root). Removed on drop.
pub fn tmp_dir(prefix: &str) -> tempfile::TempDir {
    crate::pg::sweep_stale_dirs();
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("creating a temp dir under /tmp");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    crate::pg::write_owner(d.path());
    d
}

static SERVER_SEQ: AtomicU64 = AtomicU64::new(1);

/// A running `custody-server serve`.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// The admin bearer token from `<data-dir>/admin.token`.
    pub admin_token: String,
    pub http: reqwest::Client,
    log_path: PathBuf,
    healthz_timeout: Duration,
    /// Extra arguments after `serve` (e.g. `--policies DIR`, `--outbox-interval 1s`) and extra
    /// environment variables, applied at every (re)start; change them before `restart()` to
    /// restart with other settings.
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// Keeps the per-server directories (data dir, logs) alive; None when the caller owns them.
    _work: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data dir against `database_url` (None: the embedded default).
    pub async fn start(database_url: Option<&str>) -> Server {
        let work = tmp_dir("custody-test-srv-");
        let data_dir = work.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let timeout = if database_url.is_some() { 30 } else { 60 };
        Self::start_in(
            &data_dir,
            database_url,
            Duration::from_secs(timeout),
            Some(work),
        )
        .await
    }

    /// Like [`start`](Self::start), with extra `serve` arguments and environment variables.
    pub async fn start_with(
        database_url: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let work = tmp_dir("custody-test-srv-");
        let data_dir = work.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let timeout = if database_url.is_some() { 30 } else { 60 };
        let extra_args = args.iter().map(|a| a.to_string()).collect();
        let extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_in_with(
            &data_dir,
            database_url,
            Duration::from_secs(timeout),
            Some(work),
            extra_args,
            extra_env,
        )
        .await
    }

    /// Another replica on the same database: a new data dir holding copies of this server's
    /// `jwt.key` and `admin.token`, so that tokens are valid on both (as replicas are configured).
    pub async fn start_replica(&self) -> Server {
        let work = tmp_dir("custody-test-srv-");
        let data_dir = work.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in ["jwt.key", "admin.token"] {
            std::fs::copy(self.data_dir.join(f), data_dir.join(f))
                .unwrap_or_else(|e| panic!("copying {f}: {e}"));
        }
        Self::start_in(
            &data_dir,
            self.database_url.as_deref(),
            self.healthz_timeout,
            Some(work),
        )
        .await
    }

    /// Starts a server on the given data dir (which the caller keeps alive).
    pub async fn start_with_dir(
        data_dir: &Path,
        database_url: Option<&str>,
        healthz_timeout: Duration,
    ) -> Server {
        Self::start_in(data_dir, database_url, healthz_timeout, None).await
    }

    async fn start_in(
        data_dir: &Path,
        database_url: Option<&str>,
        healthz_timeout: Duration,
        work: Option<tempfile::TempDir>,
    ) -> Server {
        Self::start_in_with(
            data_dir,
            database_url,
            healthz_timeout,
            work,
            Vec::new(),
            Vec::new(),
        )
        .await
    }

    async fn start_in_with(
        data_dir: &Path,
        database_url: Option<&str>,
        healthz_timeout: Duration,
        work: Option<tempfile::TempDir>,
        extra_args: Vec<String>,
        extra_env: Vec<(String, String)>,
    ) -> Server {
        let n = SERVER_SEQ.fetch_add(1, Ordering::Relaxed);
        let log_dir = match &work {
            Some(w) => w.path().to_path_buf(),
            None => data_dir.parent().unwrap_or(data_dir).to_path_buf(),
        };
        let mut s = Server {
            child: None,
            port: 0,
            data_dir: data_dir.to_path_buf(),
            database_url: database_url.map(str::to_string),
            admin_token: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            log_path: log_dir.join(format!("server-{}-{n}.log", std::process::id())),
            healthz_timeout,
            extra_args,
            extra_env,
            _work: work,
        };
        s.launch().await;
        s
    }

    /// Spawns `serve` and waits for `/healthz`; retries on another port if the port was taken.
    async fn launch(&mut self) {
        let bin = crate::blocking(server_bin).await;
        for attempt in 1..=3 {
            self.port = free_port().unwrap();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .unwrap();
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("--data-dir")
                .arg(&self.data_dir)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            for v in SCRUBBED_ENV {
                cmd.env_remove(v);
            }
            if let Some(url) = &self.database_url {
                set_database_env(&mut cmd, url);
            }
            cmd.args(&self.extra_args);
            cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
            crate::die_with_parent(&mut cmd, libc::SIGTERM);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
            self.child = Some(child);
            match self.wait_healthy().await {
                Ok(()) => {
                    self.admin_token = self.read_admin_token();
                    return;
                }
                Err(e) => {
                    let log = self.log();
                    let port_taken = log.contains("in use") || log.contains("AddrInUse");
                    self.kill_now();
                    if port_taken && attempt < 3 {
                        continue;
                    }
                    panic!(
                        "custody-server did not become healthy: {e}\n----- server log -----\n{}",
                        tail(&log, 200)
                    );
                }
            }
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.healthz_timeout;
        let url = self.url("/healthz");
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("the process exited early ({st})"));
            }
            if let Ok(r) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "GET {url} did not answer 200 within {:?}",
                    self.healthz_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn read_admin_token(&self) -> String {
        let p = self.data_dir.join("admin.token");
        let t = std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e}\n----- server log -----\n{}",
                p.display(),
                tail(&self.log(), 100)
            )
        });
        t.trim().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the server has logged so far (all its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to 60 s, then SIGKILL). Returns the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        // SAFETY: kill(2) takes plain integers and touches no memory of this process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let st = child.wait().unwrap();
                panic!(
                    "custody-server did not exit within 60 s of SIGTERM (killed: {st})\n{}",
                    tail(&self.log(), 100)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (asserting a clean exit) and starts it again on the same data dir and DB.
    pub async fn restart(&mut self) {
        let st = self.stop().await;
        assert!(
            st.success(),
            "custody-server exited with {st} on SIGTERM\n{}",
            tail(&self.log(), 100)
        );
        self.launch().await;
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) takes plain integers and touches no memory of this process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a CLI subcommand of the binary against this server's data dir and database.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let bin = crate::blocking(server_bin).await;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        for v in SCRUBBED_ENV {
            cmd.env_remove(v);
        }
        if let Some(url) = &self.database_url {
            set_database_env(cmd.as_std_mut(), url);
        }
        cmd.output()
            .await
            .unwrap_or_else(|e| panic!("running custody-server {args:?}: {e}"))
    }

    /// `custody-server token issue --email EMAIL [--admin] [--ttl TTL]`: the bearer token it prints.
    pub async fn issue_token_ttl(&self, email: &str, admin: bool, ttl: Option<&str>) -> String {
        let mut args = vec!["token", "issue", "--email", email];
        if admin {
            args.push("--admin");
        }
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        let out = self.cli(&args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "custody-server {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let token = stdout.trim().to_string();
        assert!(
            !token.contains(char::is_whitespace) && token.split('.').count() == 3,
            "`token issue` must print only the bearer token (a JWT), printed: {stdout:?}"
        );
        token
    }

    pub async fn issue_token(&self, email: &str, admin: bool) -> String {
        self.issue_token_ttl(email, admin, None).await
    }

    /// POST /graphql: the whole response body (`{data, errors}`). `token` "" sends no header.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        let mut req = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql: {e}\n{}", tail(&self.log(), 50)));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("POST /graphql answered {status} with a body that is not JSON: {text:?}\nquery: {query}"))
    }

    /// The `data` of a response that must have no errors.
    pub async fn gql_ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let r = self.gql(token, query, variables.clone()).await;
        if r.get("errors")
            .is_some_and(|e| !e.is_null() && e.as_array().is_none_or(|a| !a.is_empty()))
            || r["data"].is_null()
        {
            panic!(
                "GraphQL request failed:\nquery: {query}\nvariables: {variables}\nresponse: {}",
                serde_json::to_string_pretty(&r).unwrap()
            );
        }
        r["data"].clone()
    }

    /// The value of one series of the server's Prometheus scrape (`GET /metrics`, with a server
    /// admin's `token`): `series` is the name with its labels, e.g. `x_total{queue="q"}`; a
    /// series not yet in the scrape reads 0.
    pub async fn metric(&self, token: &str, series: &str) -> f64 {
        let scrape = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("{series} ");
        scrape
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |value| value.trim().parse().expect("a metric value"))
    }

    /// The `extensions.code` of the first error of a request that must fail; also checks that the
    /// request produced no data (`data` null, or every top-level field null).
    pub async fn gql_err_code(&self, token: &str, query: &str, variables: Value) -> String {
        let r = self.gql(token, query, variables.clone()).await;
        let errors = r["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            !errors.is_empty(),
            "expected an error, got success:\nquery: {query}\nvariables: {variables}\nresponse: {r}"
        );
        let data_empty = r["data"].is_null()
            || r["data"]
                .as_object()
                .is_some_and(|o| o.values().all(Value::is_null));
        assert!(
            data_empty,
            "a refused request still returned data:\nquery: {query}\nresponse: {r}"
        );
        match errors[0]["extensions"]["code"].as_str() {
            Some(code) => code.to_string(),
            None => panic!("error without extensions.code:\nquery: {query}\nvariables: {variables}\nresponse: {r}"),
        }
    }
}

impl AsRef<Server> for Server {
    fn as_ref(&self) -> &Server {
        self
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Points a server command at `url`. A database of the tests' cluster is served as the
/// non-superuser runtime role, migrated by the superuser (as SECURITY.md advises), so every
/// test also checks that the runtime role's grants suffice.
fn set_database_env(cmd: &mut Command, url: &str) {
    match crate::pg::PgCluster::server_urls(url) {
        Some((runtime, migrate)) => {
            cmd.env("DATABASE_URL", runtime)
                .env("CUSTODY_MIGRATION_DATABASE_URL", migrate);
        }
        None => {
            cmd.env("DATABASE_URL", url);
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Did the process end by this signal?
pub fn killed_by(st: &ExitStatus, sig: i32) -> bool {
    st.signal() == Some(sig)
}
