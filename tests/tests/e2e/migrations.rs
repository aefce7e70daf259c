//! The database schema: the migrations go up, down and up again to the same schema, and the
//! hand-written diesel schema (`server/src/db/schema.rs`) matches the migrated database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use custody_tests::db::db_error_text;
use custody_tests::pg::PgCluster;
use custody_tests::TestDb;

/// diesel's own table (and its primary key index): the only objects left after every down.sql.
const DIESEL_BOOKKEEPING: [&str; 2] = [
    "relation __diesel_schema_migrations",
    "relation __diesel_schema_migrations_pkey",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The migration directories, oldest first, with diesel's version of each (the digits of the
/// name before its first `_`, e.g. `2026-11-26-000001_foundation` → `20261126000001`).
fn migration_dirs() -> Vec<(String, PathBuf)> {
    let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(repo_root().join("migrations"))
        .expect("reading migrations/")
        .flatten()
        .filter(|e| e.path().join("up.sql").is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let prefix = name.split('_').next().unwrap_or_default();
            let version: String = prefix.chars().filter(char::is_ascii_digit).collect();
            (version, e.path())
        })
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no migrations found");
    dirs
}

/// `pg_dump --schema-only` of the database, without what differs between two dumps of the same
/// schema (comments with versions, the random key of `\restrict`).
fn schema_dump(cluster: &PgCluster, db: &str) -> String {
    let out = std::process::Command::new(cluster.bin_dir.join("pg_dump"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string()])
        .args(["-U", custody_tests::pg::SUPERUSER, "-d", db])
        .args(["--schema-only", "--no-owner", "--no-privileges"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("pg_dump output is UTF-8")
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with("\\restrict")
                || l.starts_with("\\unrestrict"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every object of the database outside PostgreSQL's own schemas: relations (tables, indexes,
/// sequences, views, composite types), functions, types, extensions and schemas.
async fn objects(sql: &tokio_postgres::Client) -> Vec<String> {
    sql.query(
        "SELECT 'relation ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
         UNION ALL
         SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
         UNION ALL
         SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
             AND t.typtype <> 'c' AND t.typcategory <> 'A'
         UNION ALL
         SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'
         UNION ALL
         SELECT 'schema ' || nspname FROM pg_namespace
           WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
         ORDER BY 1",
        &[],
    )
    .await
    .expect("listing the database's objects")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Lines of `a` missing from `b` and lines of `b` missing from `a` (for a readable failure).
fn line_diff(a: &str, b: &str) -> String {
    let (la, lb): (BTreeSet<&str>, BTreeSet<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for l in la.difference(&lb) {
        out += &format!("- {l}\n");
    }
    for l in lb.difference(&la) {
        out += &format!("+ {l}\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_up_down_and_up_again_to_the_same_schema() {
    let db = TestDb::create_empty().await;
    let cluster = custody_tests::blocking(PgCluster::get).await;
    let migrations = migration_dirs();
    let sql = db.connect().await;
    assert_eq!(
        objects(&sql).await,
        Vec::<String>::new(),
        "a database from template0 is empty"
    );

    // Up, with the real binary.
    let name = db.name.clone();
    let log = custody_tests::blocking(move || cluster.migrate(&name))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        log.contains(&format!("{} migration(s) applied", migrations.len())),
        "`custody-server migrate` on an empty database:\n{log}"
    );
    let name = db.name.clone();
    let first = custody_tests::blocking(move || schema_dump(cluster, &name)).await;
    assert!(
        first.contains("CREATE TABLE public.audit_log"),
        "the dump lacks the audit log:\n{first}"
    );
    let applied: Vec<String> = sql
        .query(
            "SELECT version::text FROM __diesel_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let on_disk: Vec<String> = migrations.iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(
        applied, on_disk,
        "diesel's record of the applied migrations"
    );

    // Down: every down.sql, newest first, each in a transaction with diesel's bookkeeping (as
    // `diesel migration revert` does).
    let mut sql = sql;
    for (version, dir) in migrations.iter().rev() {
        let down = std::fs::read_to_string(dir.join("down.sql"))
            .unwrap_or_else(|e| panic!("{}/down.sql: {e}", dir.display()));
        let tx = sql.transaction().await.unwrap();
        tx.batch_execute(&down)
            .await
            .unwrap_or_else(|e| panic!("{}/down.sql failed: {}", dir.display(), db_error_text(&e)));
        let removed = tx
            .execute(
                "DELETE FROM __diesel_schema_migrations WHERE version = $1",
                &[version],
            )
            .await
            .unwrap();
        assert_eq!(removed, 1, "diesel's row of migration {version}");
        tx.commit().await.unwrap();
    }
    assert_eq!(
        objects(&sql).await,
        DIESEL_BOOKKEEPING.map(String::from).to_vec(),
        "after every down.sql the database holds only diesel's bookkeeping"
    );

    // Up again: the same schema, byte for byte in pg_dump's rendering.
    let name = db.name.clone();
    let log = custody_tests::blocking(move || cluster.migrate(&name))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        log.contains(&format!("{} migration(s) applied", migrations.len())),
        "`custody-server migrate` after every down.sql:\n{log}"
    );
    let name = db.name.clone();
    let second = custody_tests::blocking(move || schema_dump(cluster, &name)).await;
    assert!(
        first == second,
        "the schema after up, down, up differs from the first:\n{}",
        line_diff(&first, &second)
    );
}

/// A table as `server/src/db/schema.rs` declares it.
#[derive(Debug, PartialEq)]
struct Table {
    primary_key: Vec<String>,
    /// column → (PostgreSQL type name as in `pg_type.typname`, nullable)
    columns: BTreeMap<String, (String, bool)>,
}

/// PostgreSQL's name (`pg_type.typname`) of a diesel SQL type of `diesel::sql_types`.
fn pg_type(diesel: &str) -> String {
    if let Some(inner) = diesel
        .strip_prefix("Array<")
        .and_then(|r| r.strip_suffix('>'))
    {
        return format!("_{}", pg_type(inner.trim()));
    }
    match diesel {
        "Uuid" => "uuid",
        "Text" => "text",
        "Varchar" | "VarChar" => "varchar",
        "Bool" => "bool",
        "Int2" | "SmallInt" => "int2",
        "Int4" | "Integer" => "int4",
        "Int8" | "BigInt" => "int8",
        "Float4" | "Float" => "float4",
        "Float8" | "Double" => "float8",
        "Numeric" => "numeric",
        "Jsonb" => "jsonb",
        "Json" => "json",
        "Timestamptz" => "timestamptz",
        "Timestamp" => "timestamp",
        "Date" => "date",
        "Time" => "time",
        "Interval" => "interval",
        "Bytea" | "Binary" => "bytea",
        other => panic!("schema.rs uses the SQL type `{other}`: add it to pg_type() in this test"),
    }
    .to_string()
}

/// Parses the `diesel::table!` blocks of schema.rs (the shape `diesel print-schema` writes:
/// `name (key, …) { column -> Type, … }`, with optional `#[sql_name = "…"]` on columns).
fn parse_schema_rs(text: &str) -> BTreeMap<String, Table> {
    let mut tables = BTreeMap::new();
    let mut rest = text;
    while let Some(at) = rest.find("table! {") {
        rest = &rest[at + "table! {".len()..];
        // The block ends at the brace that closes `table! {`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("an unclosed table! block");
        let block = &rest[..end];
        rest = &rest[end..];
        let lines: Vec<&str> = block
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty() && !l.starts_with("use "))
            .collect();
        let head = lines.first().expect("an empty table! block");
        let (name, key) = head
            .trim_end_matches('{')
            .trim()
            .split_once('(')
            .unwrap_or_else(|| panic!("table! head without a primary key: {head}"));
        let primary_key = key
            .trim_end_matches(')')
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        let mut columns = BTreeMap::new();
        let mut sql_name: Option<String> = None;
        for line in &lines[1..] {
            if let Some(attr) = line.strip_prefix("#[sql_name = \"") {
                sql_name = Some(attr.trim_end_matches("\"]").to_string());
                continue;
            }
            if *line == "}" || line.starts_with("#[") {
                continue;
            }
            let (column, ty) = line
                .trim_end_matches(',')
                .split_once("->")
                .unwrap_or_else(|| panic!("not a column in table {name}: {line}"));
            let ty = ty.trim();
            let (ty, nullable) = match ty
                .strip_prefix("Nullable<")
                .and_then(|t| t.strip_suffix('>'))
            {
                Some(inner) => (inner.trim(), true),
                None => (ty, false),
            };
            let column = sql_name.take().unwrap_or_else(|| column.trim().to_string());
            columns.insert(column, (pg_type(ty), nullable));
        }
        tables.insert(
            name.trim().to_string(),
            Table {
                primary_key,
                columns,
            },
        );
    }
    tables
}

/// The tables of the migrated database in the same shape (diesel's bookkeeping left out).
async fn live_tables(sql: &tokio_postgres::Client) -> BTreeMap<String, Table> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let columns = sql
        .query(
            "SELECT c.relname::text, a.attname::text, t.typname::text, NOT a.attnotnull
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_type t ON t.oid = a.atttypid
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0
                AND NOT a.attisdropped AND c.relname <> '__diesel_schema_migrations'
              ORDER BY 1, a.attnum",
            &[],
        )
        .await
        .expect("listing columns");
    for r in columns {
        tables
            .entry(r.get(0))
            .or_insert_with(|| Table {
                primary_key: Vec::new(),
                columns: BTreeMap::new(),
            })
            .columns
            .insert(r.get(1), (r.get(2), r.get(3)));
    }
    let keys = sql
        .query(
            "SELECT c.relname::text, a.attname::text
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) ON true
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
              WHERE n.nspname = 'public' AND i.indisprimary
              ORDER BY 1, k.pos",
            &[],
        )
        .await
        .expect("listing primary keys");
    for r in keys {
        let table: String = r.get(0);
        if let Some(t) = tables.get_mut(&table) {
            t.primary_key.push(r.get(1));
        }
    }
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_rs_matches_the_migrated_database() {
    let path = repo_root().join("server/src/db/schema.rs");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let declared = parse_schema_rs(&text);
    assert!(
        declared.len() >= 20 && declared.contains_key("audit_log"),
        "schema.rs was not parsed: {declared:?}"
    );
    let db = TestDb::create().await;
    let live = live_tables(&db.connect().await).await;

    let mut problems = Vec::new();
    for name in live.keys().filter(|t| !declared.contains_key(*t)) {
        problems.push(format!("table {name} is in the database, not in schema.rs"));
    }
    for name in declared.keys().filter(|t| !live.contains_key(*t)) {
        problems.push(format!("table {name} is in schema.rs, not in the database"));
    }
    for (name, d) in &declared {
        let Some(l) = live.get(name) else { continue };
        if l.primary_key.is_empty() {
            // diesel's table! needs a key even for a table that has none (run_metrics, an
            // append-only log): then it must at least name NOT NULL columns of the table.
            let bad: Vec<&String> = d
                .primary_key
                .iter()
                .filter(|k| l.columns.get(*k).is_none_or(|(_, nullable)| *nullable))
                .collect();
            if !bad.is_empty() {
                problems.push(format!(
                    "{name}: the key of schema.rs names {bad:?}, not NOT NULL columns of the table"
                ));
            }
        } else if d.primary_key != l.primary_key {
            problems.push(format!(
                "{name}: primary key ({}) in schema.rs, ({}) in the database",
                d.primary_key.join(", "),
                l.primary_key.join(", ")
            ));
        }
        for (column, (ty, nullable)) in &l.columns {
            match d.columns.get(column) {
                None => problems.push(format!(
                    "{name}.{column} is in the database, not in schema.rs"
                )),
                Some((dty, dnull)) if (dty, dnull) != (ty, nullable) => problems.push(format!(
                    "{name}.{column}: {dty}{} in schema.rs, {ty}{} in the database",
                    if *dnull { " NULL" } else { " NOT NULL" },
                    if *nullable { " NULL" } else { " NOT NULL" },
                )),
                Some(_) => {}
            }
        }
        for column in d.columns.keys().filter(|c| !l.columns.contains_key(*c)) {
            problems.push(format!(
                "{name}.{column} is in schema.rs, not in the database"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "server/src/db/schema.rs does not match the migrations:\n  {}",
        problems.join("\n  ")
    );
}

/// The comparison can fail: a parsed schema.rs with a wrong type, a wrong nullability and a
/// missing column differs from the original.
#[test]
fn schema_rs_parser_sees_types_nullability_and_keys() {
    let t = parse_schema_rs(
        "diesel::table! {\n    things (a, b) {\n        a -> Uuid,\n        // a comment\n        b -> Nullable<Int8>,\n        #[sql_name = \"type\"]\n        kind -> Array<Text>,\n    }\n}\n",
    );
    let things = &t["things"];
    assert_eq!(things.primary_key, ["a", "b"]);
    assert_eq!(things.columns["a"], ("uuid".to_string(), false));
    assert_eq!(things.columns["b"], ("int8".to_string(), true));
    assert_eq!(things.columns["type"], ("_text".to_string(), false));
    assert_eq!(things.columns.len(), 3);
}

/// Every column that holds one of a fixed set of values (a Rust enum on the server) has a CHECK
/// constraint: an unknown value written directly in SQL is refused, naming the constraint, and
/// a known value in the very same statement is not refused by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_columns_refuse_unknown_values() {
    let db = TestDb::create().await;
    let sql = db.connect().await;
    let u = "gen_random_uuid()";
    // (table, column, a known value, the INSERT with `$V` where the value goes; every NOT NULL
    // column without a default is given, so only the value (or a foreign key) can fail it).
    let cases: Vec<(&str, &str, &str, String)> = vec![
        ("memberships", "role", "viewer",
         format!("INSERT INTO memberships (project_id, user_id, role) VALUES ({u}, {u}, $V)")),
        ("runs", "status", "finished",
         format!("INSERT INTO runs (id, project_id, status, created_by, ended_at) VALUES ({u}, {u}, $V, {u}, now())")),
        ("promotions", "status", "pending",
         format!("INSERT INTO promotions (id, project_id, model_version_id, stage, status, requested_by, expires_at, \
                  manifest_sha256, policy_digest, policy_input, policy_result, required_approvals) \
                  VALUES ({u}, {u}, {u}, 'production', $V, {u}, now(), 'm', 'd', '{{}}', '{{}}', 0)")),
        ("approvals", "decision", "approve",
         format!("INSERT INTO approvals (id, promotion_id, approver_id, decision, via, auth_method) VALUES ({u}, {u}, {u}, $V, 'web', 'email_link')")),
        ("approvals", "via", "email",
         format!("INSERT INTO approvals (id, promotion_id, approver_id, decision, via, auth_method) VALUES ({u}, {u}, {u}, 'approve', $V, 'email_link')")),
        ("approvals", "auth_method", "api_token",
         format!("INSERT INTO approvals (id, promotion_id, approver_id, decision, via, auth_method) VALUES ({u}, {u}, {u}, 'approve', 'api', $V)")),
        ("approvals", "auth_method", "session_oidc",
         format!("INSERT INTO approvals (id, promotion_id, approver_id, decision, via, auth_method) VALUES ({u}, {u}, {u}, 'approve', 'web', $V)")),
        ("sessions", "method", "email",
         format!("INSERT INTO sessions (id, secret_sha256, user_id, method, csrf_token, signed_in_at, last_seen_at, expires_at) \
                  VALUES ({u}, sha256('s'), {u}, $V, 'c', now(), now(), now())")),
        ("projects", "approval_sign_in", "session",
         "INSERT INTO projects (id, name, approval_sign_in) VALUES (gen_random_uuid(), 'p', $V)".to_string()),
        ("lineage_edges", "from_kind", "run",
         format!("INSERT INTO lineage_edges (id, from_kind, from_id, to_kind, to_id, relation) VALUES ({u}, $V, {u}, 'dataset_version', {u}, 'consumed')")),
        ("lineage_edges", "to_kind", "deployment",
         format!("INSERT INTO lineage_edges (id, from_kind, from_id, to_kind, to_id, relation) VALUES ({u}, 'model_version', {u}, $V, {u}, 'deployed_as')")),
        ("outbox", "kind", "webhook",
         "INSERT INTO outbox (id, kind, payload) VALUES (gen_random_uuid(), $V, '{}')".to_string()),
        ("audit_checkpoints", "reason", "export",
         format!("INSERT INTO audit_checkpoints (id, seq, hash, signed_at, reason, actor, key_id, jws) \
                  VALUES ({u}, 0, repeat('0', 64), now(), $V, 'a', 'k', 'j')")),
    ];
    let mut problems = Vec::new();
    for (table, column, known, insert) in &cases {
        let constraint = format!("{table}_{column}_check");
        for bad in ["PENDING", "bogus", ""] {
            let statement = insert.replace("$V", &format!("'{bad}'"));
            match sql.batch_execute(&statement).await {
                Ok(()) => problems.push(format!("{table}.{column} accepted `{bad}`")),
                Err(e) => {
                    let refused_by = e
                        .as_db_error()
                        .filter(|d| d.code() == &tokio_postgres::error::SqlState::CHECK_VIOLATION)
                        .and_then(|d| d.constraint().map(str::to_owned));
                    if refused_by.as_deref() != Some(constraint.as_str()) {
                        problems.push(format!(
                            "{table}.{column} = `{bad}`: expected a violation of {constraint}, got {}",
                            db_error_text(&e)
                        ));
                    }
                }
            }
        }
        // The control: the known value passes the CHECK (the row may still fail a foreign key).
        let statement = insert.replace("$V", &format!("'{known}'"));
        if let Err(e) = sql.batch_execute(&statement).await {
            if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
                problems.push(format!(
                    "{table}.{column} refused the known value `{known}`: {}",
                    db_error_text(&e)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
