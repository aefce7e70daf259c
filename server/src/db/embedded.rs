//! The embedded default: a private PostgreSQL cluster from the machine's own binaries, in
//! `<data-dir>/pg`, reachable only through a Unix socket in that directory.
//!
//! `initdb` and `postgres` refuse to run as root; when we are root they run as the `postgres`
//! user, which then owns the cluster directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _};
use tokio::process::Command;

const SUPERUSER: &str = "custody";
const DATABASE: &str = "custody";

pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    run_as_postgres: bool,
    /// Only the process that started the cluster stops it: a `token issue` run next to a
    /// running server reuses the server's cluster and leaves it running.
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Initialises the cluster if needed and starts it unless it is already running.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let bin_dir = find_binaries()?;
        let root = data_dir.join("pg");
        let data = root.join("data");
        let socket_dir = root.join("run");
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let run_as_postgres = unsafe { libc::geteuid() } == 0;

        std::fs::create_dir_all(&socket_dir)
            .with_context(|| format!("creating {}", socket_dir.display()))?;
        let mut pg = EmbeddedPostgres {
            bin_dir,
            data,
            socket_dir,
            run_as_postgres,
            started_here: false,
        };
        if run_as_postgres {
            pg.hand_to_postgres_user(&root).await?;
        }
        let fresh = !pg.data.join("PG_VERSION").exists();
        if fresh {
            tracing::info!(pg.data = %pg.data.display(), "initialising the private PostgreSQL cluster");
            pg.run(
                "initdb",
                &[
                    "-D".as_ref(),
                    pg.data.as_os_str(),
                    "-U".as_ref(),
                    SUPERUSER.as_ref(),
                    "--auth-local=trust".as_ref(),
                    "--auth-host=reject".as_ref(),
                    "--encoding=UTF8".as_ref(),
                    "--no-locale".as_ref(),
                ],
            )
            .await?;
        }
        if pg.is_running().await {
            tracing::info!(pg.data = %pg.data.display(), "reusing the running private PostgreSQL cluster");
        } else {
            let options = format!(
                "-c listen_addresses='' -k '{}' -c unix_socket_permissions=0700",
                pg.socket_dir.display()
            );
            let log = root.join("postgres.log");
            pg.run(
                "pg_ctl",
                &[
                    "start".as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "120".as_ref(),
                    "-D".as_ref(),
                    pg.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                ],
            )
            .await
            .with_context(|| format!("starting PostgreSQL (its log: {})", log.display()))?;
            pg.started_here = true;
            tracing::info!(pg.socket = %pg.socket_dir.display(), "private PostgreSQL cluster started");
        }
        if fresh {
            let host = pg.socket_dir.clone();
            pg.run(
                "createdb",
                &[
                    "-h".as_ref(),
                    host.as_os_str(),
                    "-U".as_ref(),
                    SUPERUSER.as_ref(),
                    DATABASE.as_ref(),
                ],
            )
            .await?;
        }
        Ok(pg)
    }

    /// A libpq-style connection string for the socket (tokio-postgres understands it).
    pub fn database_url(&self) -> String {
        format!(
            "host={} user={SUPERUSER} dbname={DATABASE}",
            self.socket_dir.display()
        )
    }

    /// Stops the cluster if this process started it.
    pub async fn stop(self) -> anyhow::Result<()> {
        if !self.started_here {
            return Ok(());
        }
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
            ],
        )
        .await?;
        tracing::info!("private PostgreSQL cluster stopped");
        Ok(())
    }

    async fn is_running(&self) -> bool {
        self.command(
            "pg_ctl",
            &["status".as_ref(), "-D".as_ref(), self.data.as_os_str()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
    }

    async fn hand_to_postgres_user(&self, root: &Path) -> anyhow::Result<()> {
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(root)
            .status()
            .await
            .context("running chown")?;
        if !status.success() {
            bail!(
                "running as root, the private PostgreSQL cluster must belong to the `postgres` user, \
                 but `chown -R postgres: {}` failed (is there a `postgres` user? install the \
                 `postgresql` package, or set DATABASE_URL)",
                root.display()
            );
        }
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(root)
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        if !reachable {
            bail!(
                "running as root, PostgreSQL runs as the `postgres` user, which cannot reach {}; \
                 choose a --data-dir whose parent directories it can enter (not under /root), \
                 or set DATABASE_URL",
                root.display()
            );
        }
        Ok(())
    }

    fn command(&self, program: &str, args: &[&std::ffi::OsStr]) -> Command {
        let binary = self.bin_dir.join(program);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(binary);
            c
        } else {
            Command::new(binary)
        };
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    async fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let output = self
            .command(program, args)
            .output()
            .await
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// Finds the directory holding `initdb` and `pg_ctl`: on PATH, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_binaries() -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d)) {
            // PATH often holds symlinks (e.g. /usr/local/bin/initdb); the sibling tools
            // (createdb, postgres) live next to the real binary.
            let real = dir.join("initdb").canonicalize()?;
            return Ok(real.parent().map(Path::to_path_buf).unwrap_or(dir));
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((major, bin))
        })
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some((_, dir)) => Ok(dir),
        None => bail!(
            "no PostgreSQL server binaries found (initdb, pg_ctl on PATH or under \
             /usr/lib/postgresql/*/bin). Install them (Debian/Ubuntu: `apt-get install postgresql`) \
             or point DATABASE_URL at an existing PostgreSQL database."
        ),
    }
}
