//! Command line and environment: every setting can come from a flag or its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "custody-server", version, about = "Custody: model registry and MLOps governance server")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalOptions {
    /// Where the server keeps its state (private PostgreSQL cluster, keys, admin token).
    #[arg(long, env = "CUSTODY_DATA_DIR", default_value = "./custody-data", global = true)]
    pub data_dir: PathBuf,
    /// PostgreSQL to use; unset runs a private cluster in <data-dir>/pg.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Secret that signs API tokens (at least 32 characters); unset uses <data-dir>/jwt.key.
    /// Replicas sharing one database must share it.
    #[arg(long, env = "CUSTODY_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeOptions),
    /// Apply pending database migrations and exit.
    Migrate,
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
}

#[derive(Args, Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    #[arg(long, env = "CUSTODY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Browser origins (dashboards) allowed to call the API, comma-separated.
    #[arg(long, env = "CUSTODY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Database connections per server process.
    #[arg(long, env = "CUSTODY_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "CUSTODY_WORKERS")]
    pub workers: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a bearer token (creates the user if needed) and print it.
    Issue {
        #[arg(long)]
        email: String,
        /// Grant the server-wide admin role.
        #[arg(long)]
        admin: bool,
        /// Lifetime such as 30d, 12h, 15m or 90s.
        #[arg(long, default_value = "30d")]
        ttl: String,
    },
}

impl ServeOptions {
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen
            .parse()
            .with_context(|| format!("--listen `{}` is not an address like 127.0.0.1:8080", self.listen))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for origin in &self.cors_origins {
            let url = url::Url::parse(origin)
                .with_context(|| format!("CORS origin `{origin}` is not a URL like https://dash.example.com"))?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https") && url.path() == "/" && url.query().is_none(),
                "CORS origin `{origin}` must be a scheme and host only, like https://dash.example.com"
            );
        }
        anyhow::ensure!(
            (1..=1000).contains(&self.db_pool_size),
            "--db-pool-size must be between 1 and 1000"
        );
        Ok(())
    }
}

/// Creates the data directory and proves it is writable, so a bad path fails at start, clearly.
pub fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the data directory {} is not writable", dir.display()))?;
    std::fs::remove_file(&probe).ok();
    dir.canonicalize()
        .with_context(|| format!("resolving the data directory {}", dir.display()))
}
