//! Database access: the connection pool, the embedded migrations and the private cluster.

pub mod embedded;
pub mod schema;

use anyhow::Context as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub type Conn = AsyncPgConnection;
pub type DbPool = Pool<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Applies every pending migration; safe to run from several replicas (diesel takes a lock).
pub async fn migrate(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        use diesel::Connection as _;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .context("connecting to PostgreSQL to apply migrations")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    })
    .await?
}

pub fn pool(database_url: &str, max_size: usize) -> anyhow::Result<DbPool> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .context("building the database pool")
}

/// Checks a user-supplied `DATABASE_URL` before anything connects with it.
pub fn validate_database_url(raw: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(raw).map_err(|e| {
        anyhow::anyhow!("DATABASE_URL is not a valid URL ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE")
    })?;
    match parsed.scheme() {
        "postgres" | "postgresql" => {}
        other => anyhow::bail!(
            "DATABASE_URL has scheme `{other}`; expected postgres:// or postgresql://"
        ),
    }
    if parsed.path().trim_start_matches('/').is_empty() {
        anyhow::bail!(
            "DATABASE_URL names no database; expected postgres://USER@HOST:PORT/DATABASE"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_database_url;

    #[test]
    fn database_urls_are_checked() {
        assert!(validate_database_url("postgres://u:p@localhost:5432/custody").is_ok());
        assert!(validate_database_url("postgresql://u@h/custody?sslmode=disable").is_ok());
        assert!(validate_database_url("mysql://u@h/custody").is_err());
        assert!(validate_database_url("not a url").is_err());
        assert!(validate_database_url("postgres://u@h").is_err());
    }
}
