//! Sweeping what failed uploads left behind.

use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;

use super::upload::{delete_pending, lock_digest};
use super::ArtifactStore;
use crate::audit;
use crate::db::schema::{artifact_objects, pending_uploads};
use crate::db::{Conn, DbPool};
use crate::error::{Error, Result};
use crate::ids::UploadId;

/// Claims pending uploads older than `grace` (skipping rows another replica holds), removes their
/// staged bytes, and deletes their placed object unless a row refers to its digest.
pub async fn sweep(pool: &DbPool, store: &ArtifactStore, grace: Duration) -> Result<usize> {
    let mut conn = pool.get().await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).map_err(Error::internal)?;
    let conn: &mut Conn = &mut conn;
    audit::transaction(conn, |conn| {
        async move {
            let stale: Vec<(UploadId, Option<String>, Option<String>)> = pending_uploads::table
                .filter(pending_uploads::started_at.lt(cutoff))
                .order(pending_uploads::started_at)
                .limit(100)
                .select((
                    pending_uploads::id,
                    pending_uploads::sha256,
                    pending_uploads::store_upload_id,
                ))
                .for_update()
                .skip_locked()
                .load(conn)
                .await?;
            for (id, sha256, store_upload_id) in &stale {
                store.discard(*id).await;
                if let Some(store_upload_id) = store_upload_id {
                    store.abort_direct(*id, store_upload_id).await;
                }
                if let Some(sha256) = sha256 {
                    lock_digest(conn, sha256).await?;
                    let referenced: bool =
                        diesel::select(diesel::dsl::exists(artifact_objects::table.find(sha256)))
                            .get_result(conn)
                            .await?;
                    if !referenced {
                        store.delete_object(sha256).await?;
                        tracing::info!(object.sha256 = %sha256, "swept an object no row refers to");
                    }
                }
                delete_pending(conn, *id).await?;
            }
            Ok(stale.len())
        }
        .scope_boxed()
    })
    .await
}

/// Runs `sweep` every `every`, on every replica.
pub fn spawn_sweeper(pool: DbPool, store: ArtifactStore, grace: Duration, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&pool, &store, grace).await {
                tracing::error!(error = ?e, "artifact sweep failed");
            }
        }
    });
}
