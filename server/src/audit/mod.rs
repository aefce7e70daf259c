//! The tamper-evident audit log.
//!
//! Each entry's `hash = sha256(prev_hash || canonical_json(entry))`, where `prev_hash` is the
//! previous entry's hash as 64 lowercase hex characters (64 zeros before the first entry) and the
//! canonical JSON is the entry document with keys sorted and no whitespace; the document, the
//! chain and every export format are defined once, in `custody_audit_format`, which auditors'
//! tools verify with. Appenders lock the single `audit_head` row, so concurrent transactions
//! queue up and the chain never forks; the lock is taken last in a transaction and held only to
//! commit.
//!
//! Around the chain writer (`record`, `list`):
//! - `export`: compliance exports of a period (JSON Lines, CSV) with their signed manifest,
//!   streamed by keyset pagination, and who may export what;
//! - `keys`: where the Ed25519 audit key is kept;
//! - `checkpoints`: the chain head, signed periodically and on every export;
//! - `report`: the signed compliance report of one model version;
//! - `archive`: verified copies of old entries in the artifact store. The server never deletes
//!   audit rows.

pub mod archive;
pub mod checkpoints;
pub mod export;
pub mod keys;
pub mod report;

use chrono::{DateTime, Utc};
use custody_audit_format::Entry;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::Value;
use uuid::Uuid;

use crate::actor::Actor;
use crate::db::schema::{audit_head, audit_log};
use crate::db::Conn;
use crate::error::Result;

pub use custody_audit_format::entry::rfc3339;
pub use custody_audit_format::GENESIS_HASH;
pub use keys::AuditKeys;

/// What a service records about one change.
pub struct Change<'a> {
    pub action: &'a str,
    pub project_id: Option<Uuid>,
    pub subject_kind: &'a str,
    pub subject_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub project_id: Option<Uuid>,
    pub subject_kind: String,
    pub subject_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The document the hash covers.
    pub fn document(&self) -> Entry<'_> {
        Entry {
            action: &self.action,
            actor: &self.actor,
            after: self.after.as_ref(),
            at: self.at,
            before: self.before.as_ref(),
            project_id: self.project_id,
            request_id: self.request_id.as_deref(),
            seq: self.seq,
            subject_id: &self.subject_id,
            subject_kind: &self.subject_kind,
        }
    }

    /// The document the hash covers, as a JSON value.
    pub fn canonical_document(&self) -> Value {
        self.document().to_value()
    }

    pub fn compute_hash(&self) -> String {
        self.document().chain_hash(&self.prev_hash)
    }
}

/// Appends one entry inside the caller's transaction.
pub async fn record(conn: &mut Conn, actor: &Actor, change: Change<'_>) -> Result<AuditEntry> {
    let (head_seq, head_hash): (i64, String) = audit_head::table
        .select((audit_head::seq, audit_head::hash))
        .for_update()
        .first(conn)
        .await?;
    // PostgreSQL keeps microseconds; truncate so the hashed text equals what is read back.
    let now = Utc::now();
    let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let mut entry = AuditEntry {
        seq: head_seq + 1,
        at,
        actor: actor.email.clone(),
        action: change.action.to_owned(),
        project_id: change.project_id,
        subject_kind: change.subject_kind.to_owned(),
        subject_id: change.subject_id,
        before: change.before,
        after: change.after,
        request_id: actor.request_id.clone(),
        prev_hash: head_hash,
        hash: String::new(),
    };
    entry.hash = entry.compute_hash();
    diesel::insert_into(audit_log::table)
        .values(&entry)
        .execute(conn)
        .await?;
    diesel::update(audit_head::table)
        .set((
            audit_head::seq.eq(entry.seq),
            audit_head::hash.eq(&entry.hash),
        ))
        .execute(conn)
        .await?;
    Ok(entry)
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub project_id: Option<Uuid>,
    pub subject_id: Option<String>,
    pub action: Option<String>,
}

/// One page of entries in ascending `seq`, after `after_seq`; fetches `limit + 1` so the caller
/// knows whether another page follows.
pub async fn list(
    conn: &mut Conn,
    filter: &AuditFilter,
    after_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    let mut query = audit_log::table
        .select(AuditEntry::as_select())
        .order(audit_log::seq.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(project) = filter.project_id {
        query = query.filter(audit_log::project_id.eq(project));
    }
    if let Some(subject) = &filter.subject_id {
        query = query.filter(audit_log::subject_id.eq(subject.clone()));
    }
    if let Some(action) = &filter.action {
        query = query.filter(audit_log::action.eq(action.clone()));
    }
    if let Some(after) = after_seq {
        query = query.filter(audit_log::seq.gt(after));
    }
    Ok(query.load(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_row_is_hashed_as_its_document() {
        let entry = AuditEntry {
            seq: 1,
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            actor: "a@example.com".into(),
            action: "project.create".into(),
            project_id: Some(Uuid::from_u128(7)),
            subject_kind: "project".into(),
            subject_id: "x".into(),
            before: None,
            after: Some(json!({"name": "demo", "b": 1.5})),
            request_id: Some("r1".into()),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let text = r#"{"action":"project.create","actor":"a@example.com","after":{"b":1.5,"name":"demo"},"at":"2023-11-14T22:13:20.123456Z","before":null,"project_id":"00000000-0000-0000-0000-000000000007","request_id":"r1","seq":1,"subject_id":"x","subject_kind":"project"}"#;
        assert_eq!(entry.document().canonical_json(), text);
        assert_eq!(
            entry.canonical_document(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(
            entry.compute_hash(),
            custody_audit_format::chain_hash(GENESIS_HASH, text.as_bytes())
        );
    }
}
