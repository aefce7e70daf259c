//! Signed checkpoints of the chain head.
//!
//! A checkpoint is the head `(seq, hash)` signed with the audit key at a time. Entries are only
//! ever appended, so every later state of the log must still hold entry `seq` with that `hash`:
//! a log whose head fell behind a checkpoint, or whose entry differs from it, lost or rewrote
//! entries. Checkpoints are signed on every export and every `interval` (when the head moved);
//! auditors keep them (`GET /api/audit/checkpoints`, and every export manifest carries the head
//! too) and hand them to `custody-server audit verify --checkpoints`.

use chrono::{DateTime, Utc};
use custody_audit_format::claims::{CheckpointClaims, ISSUER, TYP_CHECKPOINT};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::{rfc3339, AuditKeys};
use crate::db::schema::{audit_checkpoints, audit_head};
use crate::db::{text_enum, Conn, DbPool};
use crate::error::Result;
use crate::ids::AuditCheckpointId;

text_enum! {
    // Why a checkpoint was signed (`audit_checkpoints.reason`).
    pub enum Reason as "checkpoint reason" {
        Periodic = "periodic",
        Export = "export",
        Archive = "archive",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_checkpoints)]
pub struct Checkpoint {
    pub id: AuditCheckpointId,
    pub seq: i64,
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    pub reason: Reason,
    pub actor: String,
    pub key_id: String,
    pub jws: String,
}

/// Signs the head (read now, or the one given) and stores the checkpoint.
pub async fn sign_head(
    conn: &mut Conn,
    keys: &AuditKeys,
    actor: &str,
    reason: Reason,
    head: Option<(i64, String)>,
) -> Result<Checkpoint> {
    let (seq, hash) = match head {
        Some(head) => head,
        None => {
            audit_head::table
                .select((audit_head::seq, audit_head::hash))
                .first(conn)
                .await?
        }
    };
    let now = Utc::now();
    let now = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let claims = CheckpointClaims {
        iss: ISSUER.to_owned(),
        typ: TYP_CHECKPOINT.to_owned(),
        seq,
        hash: hash.clone(),
        signed_at: rfc3339(now),
        iat: now.timestamp(),
    };
    let checkpoint = Checkpoint {
        id: AuditCheckpointId::generate(),
        seq,
        hash,
        signed_at: now,
        reason,
        actor: actor.to_owned(),
        key_id: keys.public.key_id(),
        jws: keys.sign(&claims)?,
    };
    diesel::insert_into(audit_checkpoints::table)
        .values((
            audit_checkpoints::id.eq(checkpoint.id),
            audit_checkpoints::seq.eq(checkpoint.seq),
            audit_checkpoints::hash.eq(&checkpoint.hash),
            audit_checkpoints::signed_at.eq(checkpoint.signed_at),
            audit_checkpoints::reason.eq(checkpoint.reason),
            audit_checkpoints::actor.eq(&checkpoint.actor),
            audit_checkpoints::key_id.eq(&checkpoint.key_id),
            audit_checkpoints::jws.eq(&checkpoint.jws),
        ))
        .execute(conn)
        .await?;
    Ok(checkpoint)
}

/// Checkpoints in ascending seq after `after_seq`, at most `limit`.
pub async fn list(conn: &mut Conn, after_seq: Option<i64>, limit: i64) -> Result<Vec<Checkpoint>> {
    let mut query = audit_checkpoints::table
        .select(Checkpoint::as_select())
        .order((
            audit_checkpoints::seq.asc(),
            audit_checkpoints::signed_at.asc(),
        ))
        .limit(limit)
        .into_boxed();
    if let Some(after) = after_seq {
        query = query.filter(audit_checkpoints::seq.gt(after));
    }
    Ok(query.load(conn).await?)
}

/// One periodic round: signs the head if it moved since the last checkpoint. Replicas take turns
/// through an advisory lock, so N replicas do not sign N checkpoints of the same head.
pub async fn periodic(pool: &DbPool, keys: &AuditKeys) -> Result<Option<Checkpoint>> {
    let mut conn = pool.get().await?;
    let conn: &mut Conn = &mut conn;
    super::transaction(conn, |c| {
        async move {
            #[derive(QueryableByName)]
            struct Locked {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                locked: bool,
            }
            let lock: Locked =
                diesel::sql_query("SELECT pg_try_advisory_xact_lock(hashtextextended('custody.audit.checkpoint', 0)) AS locked")
                    .get_result(c)
                    .await?;
            if !lock.locked {
                return Ok(None);
            }
            let head: (i64, String) = audit_head::table.select((audit_head::seq, audit_head::hash)).first(c).await?;
            let latest: Option<i64> = audit_checkpoints::table
                .select(diesel::dsl::max(audit_checkpoints::seq))
                .first(c)
                .await?;
            if head.0 == 0 || latest.is_some_and(|s| s >= head.0) {
                return Ok(None);
            }
            sign_head(c, keys, "system:checkpoint", Reason::Periodic, Some(head)).await.map(Some)
        }
        .scope_boxed()
    })
    .await
}

/// Runs `periodic` every `every`, on every replica.
pub fn spawn_checkpointer(pool: DbPool, keys: AuditKeys, every: std::time::Duration) {
    tokio::spawn(async move {
        // The first checkpoint comes one period after start, not at start: a restart is no reason
        // to sign, and exports sign their own.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            match periodic(&pool, &keys).await {
                Ok(Some(cp)) => tracing::info!(seq = cp.seq, "signed an audit checkpoint"),
                Ok(None) => {}
                Err(e) => tracing::error!(error = ?e, "audit checkpoint failed"),
            }
        }
    });
}
