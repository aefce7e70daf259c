//! Database access: the connection pool, the embedded migrations and the private cluster.

pub mod embedded;
pub mod schema;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub type Conn = AsyncPgConnection;
/// One pool shared by every thread (see [`DbPool`] for the request path's).
pub type SharedPool = Pool<AsyncPgConnection>;
/// A connection checked out of the pool.
pub type PooledConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// One slice of an ordered list: at most `limit` rows after skipping `offset`. Every list a
/// client can ask for is read in slices, so no answer grows with the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slice {
    pub limit: i64,
    pub offset: i64,
}

/// A page of versions by number: those after `after`, at most `limit` of them. Versions are
/// numbered 1, 2, 3… without gaps, so the range is exact and batches across parents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    pub after: i32,
    pub limit: i32,
}

impl VersionRange {
    /// The highest version number in the range.
    pub fn last(self) -> i32 {
        self.after.saturating_add(self.limit)
    }
}

/// A text column value that is not one of its enum's values: a read fails with it instead of
/// guessing (the CHECK constraints keep such rows out; this is the second line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What the value was meant to be, e.g. "promotion status".
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown {} `{}` (expected one of: {})",
            self.what,
            self.value,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownValue {}

/// What [`text_enum!`]'s `FromSql` does with a column's bytes: the enum value they name, or an
/// error ([`UnknownValue`] for text that names none). A function of its own so that tests can
/// feed it bytes (diesel's `PgValue` cannot be built outside diesel).
pub(crate) fn from_column<T>(bytes: &[u8]) -> diesel::deserialize::Result<T>
where
    T: std::str::FromStr<Err = UnknownValue>,
{
    Ok(std::str::from_utf8(bytes)?.parse::<T>()?)
}

/// Declares an enum stored in a `text` column: the enum, `as_str`, `ALL`, `Display`, `FromStr`
/// (unknown text is an [`UnknownValue`]), `Serialize` (as its text) and diesel's
/// `ToSql`/`FromSql<Text, Pg>`, so a row struct holds the enum itself and an unknown value in
/// the database is a read error, never a default. Extra attributes (derives, `#[graphql]`)
/// follow the enum's own derives; keep them free of doc comments where the enum is a GraphQL
/// enum, as those would become SDL descriptions.
///
/// ```ignore
/// text_enum! {
///     pub enum RunStatus as "run status" {
///         Running = "running",
///         Finished = "finished",
///     }
/// }
/// ```
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $what:literal {
            $( $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        $(#[$meta])*
        $vis enum $name {
            $( $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$( $name::$variant ),+];

            /// The text stored in the column.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::db::UnknownValue;

            fn from_str(text: &str) -> ::std::result::Result<Self, Self::Err> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    _ => Err($crate::db::UnknownValue {
                        what: $what,
                        value: text.to_owned(),
                        expected: &[$( $text ),+],
                    }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                $crate::db::from_column(bytes.as_bytes())
            }
        }
    };
}
pub(crate) use text_enum;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// The connection strings of one installation. `runtime` serves requests: ideally a role that
/// may read and write the tables but owns none of them, so it can neither drop nor disable the
/// audit triggers. `migrate` owns the schema and applies migrations (the same string when no
/// separate migration role is configured: the less safe setup).
#[derive(Clone, Debug)]
pub struct DatabaseUrls {
    pub runtime: String,
    pub migrate: String,
}

impl DatabaseUrls {
    /// One role for both (an external database without `CUSTODY_MIGRATION_DATABASE_URL`).
    pub fn single(url: &str) -> Self {
        DatabaseUrls {
            runtime: url.to_owned(),
            migrate: url.to_owned(),
        }
    }

    /// The runtime role, when it is another role than the migration role: after migrating, the
    /// migration role grants it what the server needs (and nothing more).
    fn separate_runtime_role(&self) -> Option<String> {
        let runtime = url_user(&self.runtime)?;
        (Some(&runtime) != url_user(&self.migrate).as_ref()).then_some(runtime)
    }
}

/// The user named by a `postgres://user@…` URL or a `host=… user=…` connection string.
fn url_user(url: &str) -> Option<String> {
    if url.contains("://") {
        let parsed = url::Url::parse(url).ok()?;
        let user = parsed.username();
        return (!user.is_empty()).then(|| {
            percent_encoding::percent_decode_str(user)
                .decode_utf8_lossy()
                .into_owned()
        });
    }
    url.split_whitespace()
        .find_map(|pair| pair.strip_prefix("user="))
        .map(str::to_owned)
}

/// Tables that only ever grow (their triggers refuse UPDATE, DELETE and TRUNCATE): the runtime
/// role gets SELECT and INSERT on them, so even without the triggers it could not rewrite them.
const APPEND_ONLY_TABLES: &[&str] = &["audit_log", "audit_checkpoints", "audit_archives"];

/// What the runtime role may do: read and write rows, never TRUNCATE, never own (so never
/// ALTER, DROP or disable a trigger), never touch the migration bookkeeping.
fn runtime_grants(role: &str) -> String {
    let role = quote_ident(role);
    let append_only = APPEND_ONLY_TABLES.join(", ");
    format!(
        "GRANT USAGE ON SCHEMA public TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
         REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {role};
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role};
         REVOKE UPDATE, DELETE ON {append_only} FROM {role};
         REVOKE ALL ON __diesel_schema_migrations FROM {role};"
    )
}

/// `"name"`, with inner quotes doubled: a role name as an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies every pending migration with the migration role (safe to run from several replicas:
/// diesel takes a lock), then grants the runtime role, if it is another role, its rights on
/// every table, the new ones included.
pub async fn migrate(urls: &DatabaseUrls) -> anyhow::Result<Vec<String>> {
    let url = urls.migrate.clone();
    let grants = urls
        .separate_runtime_role()
        .map(|role| runtime_grants(&role));
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        use diesel::connection::SimpleConnection as _;
        use diesel::Connection as _;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .context("connecting to PostgreSQL to apply migrations")?;
        let applied: Vec<String> = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?
            .iter()
            .map(|v| v.to_string())
            .collect();
        if let Some(grants) = grants {
            conn.batch_execute(&grants)
                .context("granting the runtime role its rights on the tables")?;
        }
        Ok(applied)
    })
    .await?
}

/// A raw SQL statement whose text is a constant of the code (every value bound), prepared once
/// per connection and reused, as diesel's typed queries are. diesel never caches `sql_query`
/// (it cannot know the text is not built from input), so each execution paid PostgreSQL's
/// parse and plan and an extra round trip to prepare. Never wrap SQL built per request: each
/// distinct text would stay in every connection's statement cache (searches, whose text is
/// built, admit a bounded set of texts: `search::sql::MAX_PREPARED_SHAPES`).
#[derive(Debug, Clone, Copy)]
pub struct Prepared<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    // No static id: the cache keys the statement by its text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

/// How many rows a multi-row INSERT may hold and still be prepared once per connection.
///
/// diesel never caches an INSERT of a `Vec` of rows (its text depends on how many), so each one
/// cost PostgreSQL a parse and a plan, and the connection a round trip of its own to prepare it
/// before anything sent after it could run: in every audited write, under the audit head's lock
/// (the entry's insert), and in a registration three times (entry, edge, files). Up to this many
/// rows a connection keeps one statement per count; more (bulk writes) are parsed each time.
/// The rows must bind every value: a struct whose `None` diesel writes as `DEFAULT` would vary
/// the text with its missing values (`treat_none_as_default_value = false` binds NULL instead).
pub const PREPARED_ROWS: usize = 4;

/// Executes an INSERT of `rows` rows, prepared once per connection when it holds at most
/// [`PREPARED_ROWS`] (see there).
pub fn execute_rows<'a, Q>(
    conn: &mut Conn,
    insert: Q,
    rows: usize,
) -> futures_util::future::BoxFuture<'a, QueryResult<usize>>
where
    Q: QueryFragment<Pg> + QueryId + Send + 'a,
{
    use diesel_async::RunQueryDsl;
    if rows <= PREPARED_ROWS {
        Prepared(insert).execute(conn)
    } else {
        insert.execute(conn)
    }
}

/// The request path's connections: a pool of its own for each thread that uses the database,
/// each of at most `max_size / threads` (rounded up) connections.
///
/// A connection is driven by a task on the thread that opened it (tokio-postgres reads the
/// socket and hands each answer to the waiting query over a channel). With one pool for all,
/// an HTTP worker mostly used connections another thread had opened, so every answer crossed
/// threads twice: a wake-up through the kernel and a context switch each way, a fifth of the
/// server's CPU time in a search of 100 versions. Per thread, the driver and the query that
/// waits on it run on the same worker and hand over without the kernel.
#[derive(Clone)]
pub struct DbPool(std::sync::Arc<PerThread>);

struct PerThread {
    database_url: String,
    max_size: usize,
    per_thread: usize,
    wait: Duration,
    pools: std::sync::Mutex<HashMap<std::thread::ThreadId, SharedPool>>,
}

/// The connections of a [`DbPool`] summed over its threads (`max_size` is the whole budget).
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

impl DbPool {
    /// A connection of this thread's pool (opened on first use): waits at most the pool's
    /// `wait` for one, then fails (`PoolError::Timeout`, a 503 for a request).
    pub async fn get(
        &self,
    ) -> Result<PooledConn, diesel_async::pooled_connection::deadpool::PoolError> {
        self.this_threads().get().await
    }

    fn this_threads(&self) -> SharedPool {
        let mut pools = self.0.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(std::thread::current().id())
            .or_insert_with(|| {
                shared_pool(&self.0.database_url, self.0.per_thread, self.0.wait)
                    .expect("the same settings built a pool at startup")
            })
            .clone()
    }

    pub fn status(&self) -> PoolStatus {
        let pools = self.0.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.values().map(|p| p.status()).fold(
            PoolStatus {
                max_size: self.0.max_size,
                ..PoolStatus::default()
            },
            |sum, s| PoolStatus {
                size: sum.size + s.size,
                available: sum.available + s.available,
                waiting: sum.waiting + s.waiting,
                ..sum
            },
        )
    }
}

/// The request path's pool: `max_size` connections shared out among `threads` (the HTTP
/// workers), see [`DbPool`]. Background tasks on other threads draw a share of their own.
pub fn pool(
    database_url: &str,
    max_size: usize,
    threads: usize,
    wait: Duration,
) -> anyhow::Result<DbPool> {
    let per_thread = max_size.div_ceil(threads.max(1)).max(1);
    // Build one now so that a bad configuration fails at startup, not at the first request.
    shared_pool(database_url, per_thread, wait)?;
    Ok(DbPool(std::sync::Arc::new(PerThread {
        database_url: database_url.to_owned(),
        max_size,
        per_thread,
        wait,
        pools: std::sync::Mutex::default(),
    })))
}

/// A pool of at most `max_size` connections for every thread; a request waits at most `wait`
/// for one, then is refused (`Error::Unavailable`) instead of hanging.
pub fn shared_pool(
    database_url: &str,
    max_size: usize,
    wait: Duration,
) -> anyhow::Result<SharedPool> {
    // A checkout does not ping the server (`SELECT 1`, diesel-async's default): that was a
    // round trip on every checkout, up to a third of a small request's statements. A closed
    // connection is still dropped at checkout (`is_broken`); one that died unseen (the server
    // restarted) fails the request that uses it, and is then dropped.
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    // No JIT compilation of statements: PostgreSQL compiles any statement its planner costs above
    // `jit_above_cost`, which a statement binding thousands of ids (an impact report) can cross,
    // and compiling costs tens of milliseconds that short statements never win back. Set on each
    // new connection, so it holds whatever the database server's configuration.
    config.custom_setup = Box::new(|url| {
        Box::pin(async move {
            use diesel_async::{AsyncConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.batch_execute("SET jit = off")
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
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
    use super::*;

    #[test]
    fn the_runtime_role_is_named_when_it_differs() {
        let urls = DatabaseUrls {
            runtime: "postgres://app:secret@db/custody".into(),
            migrate: "postgres://owner:secret@db/custody".into(),
        };
        assert_eq!(urls.separate_runtime_role().as_deref(), Some("app"));
        assert_eq!(
            DatabaseUrls::single("postgres://app@db/custody").separate_runtime_role(),
            None
        );
        let sockets = DatabaseUrls {
            runtime: "host=/run/pg user=custody_app dbname=custody".into(),
            migrate: "host=/run/pg user=custody_owner dbname=custody".into(),
        };
        assert_eq!(
            sockets.separate_runtime_role().as_deref(),
            Some("custody_app")
        );
        assert_eq!(url_user("postgres://a%40b@h/d").as_deref(), Some("a@b"));
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn an_unknown_column_value_is_an_error_not_a_default() {
        use crate::lineage::NodeKind;
        use crate::projects::Role;
        use crate::promotions::Status;
        use crate::runs::RunStatus;

        assert_eq!(from_column::<Status>(b"applied").unwrap(), Status::Applied);
        assert_eq!(
            from_column::<NodeKind>(b"code_commit").unwrap(),
            NodeKind::CodeCommit
        );
        let err = from_column::<Status>(b"PENDING").unwrap_err().to_string();
        assert!(
            err.contains("promotion status `PENDING`") && err.contains("pending, approved"),
            "{err}"
        );
        let err = from_column::<NodeKind>(b"dataset").unwrap_err().to_string();
        assert!(err.contains("lineage node kind `dataset`"), "{err}");
        assert!(from_column::<Role>(b"owner").is_err());
        assert!(from_column::<RunStatus>(b"").is_err());
        assert!(from_column::<RunStatus>(b"\xff").is_err());
        // Every value reads back as itself.
        for status in Status::ALL {
            assert_eq!(
                from_column::<Status>(status.as_str().as_bytes()).unwrap(),
                *status
            );
        }
    }

    #[test]
    fn database_urls_are_checked() {
        assert!(validate_database_url("postgres://u:p@localhost:5432/custody").is_ok());
        assert!(validate_database_url("postgresql://u@h/custody?sslmode=disable").is_ok());
        assert!(validate_database_url("mysql://u@h/custody").is_err());
        assert!(validate_database_url("not a url").is_err());
        assert!(validate_database_url("postgres://u@h").is_err());
    }
}
