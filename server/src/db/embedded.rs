//! The embedded default: a private PostgreSQL cluster from the machine's own binaries, in
//! `<data-dir>/pg`, reachable only through a Unix socket in that directory.
//!
//! `initdb` and `postgres` refuse to run as root; when we are root they run as the `postgres`
//! user, which then owns the cluster directory and may traverse (not list) the data directory.
//!
//! Roles: the bootstrap superuser (`custody`) only sets the cluster up. `custody_owner` owns the
//! database and its tables and applies migrations; the server's requests run as `custody_app`,
//! which may read and write rows but owns nothing, so it can neither drop nor disable the audit
//! triggers, nor TRUNCATE, nor rewrite the append-only tables (see `db::migrate`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _};
use tokio::process::Command;

const SUPERUSER: &str = "custody";
const DATABASE: &str = "custody";
/// Owns the schema; migrations run as this role.
pub const OWNER_ROLE: &str = "custody_owner";
/// The server's requests run as this role.
pub const RUNTIME_ROLE: &str = "custody_app";

/// Creates the two roles (idempotent) and gives the owner role the database and every object of
/// the schema (clusters created before the roles existed had the superuser own them).
const SETUP_ROLES: &str = r#"
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'custody_owner') THEN
        CREATE ROLE custody_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'custody_app') THEN
        CREATE ROLE custody_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
END $$;
ALTER DATABASE custody OWNER TO custody_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT c.oid::regclass AS name FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
               AND pg_get_userbyid(c.relowner) <> 'custody_owner'
               -- sequences of a column follow their table
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO custody_owner', r.name);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> 'custody_owner'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO custody_owner', r.name);
    END LOOP;
END $$;
"#;

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
            pg.hand_to_postgres_user(data_dir, &root).await?;
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
        pg.setup_roles().await?;
        Ok(pg)
    }

    /// A libpq-style connection string for the socket as `user` (tokio-postgres understands it).
    fn url_as(&self, user: &str) -> String {
        format!(
            "host={} user={user} dbname={DATABASE}",
            self.socket_dir.display()
        )
    }

    /// Migrations run as the owner role, requests as the runtime role.
    pub fn urls(&self) -> crate::db::DatabaseUrls {
        crate::db::DatabaseUrls {
            runtime: self.url_as(RUNTIME_ROLE),
            migrate: self.url_as(OWNER_ROLE),
        }
    }

    async fn setup_roles(&self) -> anyhow::Result<()> {
        use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
        let mut conn = diesel_async::AsyncPgConnection::establish(&self.url_as(SUPERUSER))
            .await
            .context("connecting to the private PostgreSQL cluster as its superuser")?;
        conn.batch_execute(SETUP_ROLES)
            .await
            .context("creating the owner and runtime roles of the private cluster")?;
        Ok(())
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

    /// The `postgres` user gets the cluster directory, and may traverse the (otherwise private)
    /// data directory to reach it: group `postgres`, mode 0710 (enter, not list).
    async fn hand_to_postgres_user(&self, data_dir: &Path, root: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let group = postgres_group().ok_or_else(|| {
            anyhow::anyhow!(
                "running as root, the private PostgreSQL cluster runs as the `postgres` user, but \
                 there is none (install the `postgresql` package, or set DATABASE_URL)"
            )
        })?;
        std::os::unix::fs::chown(data_dir, None, Some(group))
            .with_context(|| format!("giving {} the group of `postgres`", data_dir.display()))?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o710))
            .with_context(|| format!("setting the mode of {}", data_dir.display()))?;
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

/// The primary group of the `postgres` user.
fn postgres_group() -> Option<u32> {
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns null or a pointer to a static record, read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null, so it points at getpwnam's record; no other passwd call ran since.
    Some(unsafe { (*entry).pw_gid })
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
