//! The keys a project's runs have used, in the search syntax (`metrics.auc`, `params.depth`,
//! `tags.team`): the columns the runs table offers and what the filter box completes.
//!
//! Recorded by the statements that give a run a key it did not have (its first point of a
//! metric, a new param, a tag), so the steady state of logging — more points of known keys —
//! writes nothing here; listing reads one small index range instead of every run's metrics.

use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;

use crate::db::schema::run_keys;
use crate::db::{Conn, Prepared};
use crate::error::Result;
use crate::ids::ProjectId;

/// Default and largest number of keys one listing answers.
pub const DEFAULT_KEYS: i64 = 100;
pub const MAX_KEYS: i64 = 1_000;

/// What kind of value a key names, as the search syntax prefixes it.
#[derive(Clone, Copy)]
pub enum KeyKind {
    Metric,
    Param,
    Tag,
}

impl KeyKind {
    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Metric => "metrics.",
            KeyKind::Param => "params.",
            KeyKind::Tag => "tags.",
        }
    }
}

/// Notes that a run of the project used these keys (already known ones are left as they are).
///
/// The future borrows nothing of the connection, so a caller may build its next statements
/// before awaiting them together: one round trip for all, run in the order first polled.
pub fn record<'k>(
    conn: &mut Conn,
    project_id: ProjectId,
    kind: KeyKind,
    keys: impl IntoIterator<Item = &'k str>,
) -> BoxFuture<'static, Result<()>> {
    let qualified: Vec<String> = keys
        .into_iter()
        .map(|k| format!("{}{k}", kind.prefix()))
        .collect();
    if qualified.is_empty() {
        return Box::pin(std::future::ready(Ok(())));
    }
    let insert = Prepared(
        diesel::sql_query(
            "INSERT INTO run_keys (project_id, key) SELECT $1, unnest($2::text[])
         ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(project_id)
        .bind::<Array<Text>, _>(qualified),
    )
    .execute(conn);
    Box::pin(async move {
        insert.await?;
        Ok(())
    })
}

/// The project's keys starting with `prefix` (any, when empty), in byte order, at most `first`.
pub async fn list(
    conn: &mut Conn,
    project_id: ProjectId,
    prefix: &str,
    first: i64,
) -> Result<Vec<String>> {
    // The longest key is a 250-character metric, param or tag key behind its kind.
    crate::validate::text("prefix", prefix, 260)?;
    // `key >= prefix` walks the primary key from the prefix on; the LIKE (its wildcards
    // escaped) stops at the first key past it.
    let pattern = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    Ok(run_keys::table
        .filter(run_keys::project_id.eq(project_id))
        .filter(run_keys::key.ge(prefix))
        .filter(run_keys::key.like(pattern).escape('\\'))
        .order(run_keys::key)
        .limit(first.clamp(1, MAX_KEYS))
        .select(run_keys::key)
        .load(conn)
        .await?)
}
