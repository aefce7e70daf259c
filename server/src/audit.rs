//! The tamper-evident audit log.
//!
//! Each entry's `hash = sha256(prev_hash || canonical_json(entry))`, where `prev_hash` is the
//! previous entry's hash as 64 lowercase hex characters (64 zeros before the first entry) and the
//! canonical JSON is the entry document with keys sorted and no whitespace (serde_json's default
//! map is ordered). Appenders lock the single `audit_head` row, so concurrent transactions queue
//! up and the chain never forks; the lock is taken last in a transaction and held only to commit.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Actor;
use crate::db::schema::{audit_head, audit_log};
use crate::db::Conn;
use crate::error::Result;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
    pub fn canonical_document(&self) -> Value {
        json!({
            "seq": self.seq,
            "at": self.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "actor": self.actor,
            "action": self.action,
            "project_id": self.project_id.map(|p| p.to_string()),
            "subject_kind": self.subject_kind,
            "subject_id": self.subject_id,
            "before": self.before,
            "after": self.after,
            "request_id": self.request_id,
        })
    }

    pub fn compute_hash(&self) -> String {
        chain_hash(&self.prev_hash, &self.canonical_document())
    }
}

pub fn chain_hash(prev_hash: &str, document: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(
        serde_json::to_string(document)
            .expect("JSON values serialise")
            .as_bytes(),
    );
    hex::encode(hasher.finalize())
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

    fn entry(seq: i64, prev: &str) -> AuditEntry {
        AuditEntry {
            seq,
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            actor: "a@example.com".into(),
            action: "project.create".into(),
            project_id: None,
            subject_kind: "project".into(),
            subject_id: "x".into(),
            before: None,
            after: Some(json!({"name": "demo", "b": 1.5})),
            request_id: Some("r1".into()),
            prev_hash: prev.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn canonical_json_is_sorted_and_compact() {
        let doc = entry(1, GENESIS_HASH).canonical_document();
        let text = serde_json::to_string(&doc).unwrap();
        assert!(text.starts_with(r#"{"action":"project.create","actor":"a@example.com","after":{"b":1.5,"name":"demo"},"at":"2023-11-14T22:13:20.123456Z""#), "{text}");
    }

    #[test]
    fn hash_depends_on_previous_hash_and_content() {
        let first = entry(1, GENESIS_HASH);
        let h1 = first.compute_hash();
        let mut altered = first.clone();
        altered.actor = "b@example.com".into();
        assert_ne!(h1, altered.compute_hash());
        assert_ne!(h1, entry(1, &"1".repeat(64)).compute_hash());
        assert_eq!(h1.len(), 64);
    }
}
