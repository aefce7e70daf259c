//! One fresh database per test, cloned from the migrated template, and a direct SQL handle.

use std::collections::BTreeMap;

use tokio_postgres::{Client, NoTls};

use crate::pg::{PgCluster, TEMPLATE_DB};

pub struct TestDb {
    pub name: String,
    /// `postgres://custody@127.0.0.1:PORT/test_N`: what the server gets as `DATABASE_URL`.
    pub url: String,
}

impl TestDb {
    /// Starts the process-wide cluster if needed, and clones a new database from the template.
    pub async fn create() -> TestDb {
        let cluster = crate::blocking(PgCluster::get).await;
        let name = cluster.next_db_name();
        let admin = connect(&cluster.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}: {}",
                    db_error_text(&e)
                )
            });
        TestDb {
            url: cluster.url(&name),
            name,
        }
    }

    /// A new, empty database (from `template0`: no migration applied), for tests of the
    /// migrations themselves.
    pub async fn create_empty() -> TestDb {
        let cluster = crate::blocking(PgCluster::get).await;
        let name = cluster.next_db_name();
        let admin = connect(&cluster.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CREATE DATABASE {name} TEMPLATE template0: {}",
                    db_error_text(&e)
                )
            });
        TestDb {
            url: cluster.url(&name),
            name,
        }
    }

    /// A new direct connection to this test's database (superuser).
    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }
}

/// Connects with tokio-postgres; the connection task runs on the current runtime.
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {}", db_error_text(&e)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The server's message of a database error (tokio-postgres' Display hides it).
pub fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {} ({})", d.severity(), d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// `SELECT count(*)` of a table (or any `FROM` expression).
pub async fn count(sql: &Client, from: &str) -> i64 {
    let row = sql
        .query_one(&format!("SELECT count(*)::bigint FROM {from}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count(*) FROM {from}: {}", db_error_text(&e)));
    row.get(0)
}

/// The state of every table of the public schema: row count and a digest of all row contents.
/// Two equal snapshots mean nothing was inserted, updated or deleted in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, (i64, String)>);

impl Snapshot {
    pub async fn take(sql: &Client) -> Snapshot {
        let tables = sql
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                 AND tablename NOT LIKE '\\_\\_diesel%' ORDER BY 1",
                &[],
            )
            .await
            .expect("listing tables");
        let mut map = BTreeMap::new();
        for t in tables {
            let name: String = t.get(0);
            let row = sql
                .query_one(
                    &format!(
                        "SELECT count(*)::bigint, coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM \"{name}\" t"
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("snapshot of {name}: {}", db_error_text(&e)));
            map.insert(name, (row.get(0), row.get(1)));
        }
        Snapshot(map)
    }

    /// Panics, naming the tables that changed, unless `after` equals `self`.
    pub fn assert_unchanged(&self, after: &Snapshot, what: &str) {
        if self == after {
            return;
        }
        let mut diffs = Vec::new();
        for (t, b) in &self.0 {
            match after.0.get(t) {
                Some(a) if a == b => {}
                Some(a) => diffs.push(format!(
                    "{t}: {} rows -> {} rows (contents changed)",
                    b.0, a.0
                )),
                None => diffs.push(format!("{t}: disappeared")),
            }
        }
        for t in after.0.keys().filter(|t| !self.0.contains_key(*t)) {
            diffs.push(format!("{t}: appeared"));
        }
        panic!(
            "{what}: the database changed although the request was refused:\n  {}",
            diffs.join("\n  ")
        );
    }

    pub fn rows(&self, table: &str) -> i64 {
        self.0
            .get(table)
            .map(|x| x.0)
            .unwrap_or_else(|| panic!("no table {table} in the snapshot"))
    }
}
