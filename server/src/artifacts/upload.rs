//! Uploads through the server: a pending row, bytes staged while hashed, then the object placed
//! and the rows and audit entry written in one transaction (see the module documentation).

use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use futures_util::Stream;
use serde_json::json;

use super::{validate_path, ArtifactFile, Artifacts, Owner, Staged};
use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::{artifact_objects, pending_uploads, run_artifacts};
use crate::db::{Conn, DbPool, Prepared};
use crate::error::{Error, Result};
use crate::ids::{RunId, UploadId};
use crate::projects::Role;
use crate::runs;

/// Checks that the caller may write artifacts of this owner, answering the run.
pub(super) async fn writable_run(
    conn: &mut Conn,
    actor: &Actor,
    owner: Owner,
) -> Result<runs::Run> {
    match owner {
        Owner::Run(id) => runs::get(conn, actor, id, Role::Contributor).await,
        Owner::ModelVersion(_) => Err(Error::conflict(
            "model versions are immutable: upload to the source run, then register a version from it",
        )),
    }
}

/// Refuses early (before any byte moves) a path that already holds content other than the claimed
/// digest. Without a claim only the bytes can tell: `record` accepts the same content again
/// (idempotent retries) and refuses other content before placing anything.
pub(super) async fn check_path_free(
    conn: &mut Conn,
    run_id: RunId,
    path: &str,
    sha256: Option<&str>,
) -> Result<()> {
    let existing: Option<String> = run_artifacts::table
        .find((run_id, path))
        .select(run_artifacts::sha256)
        .first(conn)
        .await
        .optional()?;
    match (existing, sha256) {
        (Some(old), Some(new)) if old != new => Err(Error::conflict(format!(
            "`{path}` of run {run_id} already holds {old}; artifacts are immutable"
        ))),
        _ => Ok(()),
    }
}

pub(super) async fn insert_pending(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    path: &str,
) -> Result<UploadId> {
    let id = UploadId::generate();
    diesel::insert_into(pending_uploads::table)
        .values((
            pending_uploads::id.eq(id),
            pending_uploads::run_id.eq(run_id),
            pending_uploads::path.eq(path),
            pending_uploads::created_by.eq(actor.user_id()?),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

/// Streams an upload to the store and records it (see the module docs for the steps).
pub async fn upload<S>(
    pool: &DbPool,
    artifacts: &Artifacts,
    actor: &Actor,
    owner: Owner,
    path: &str,
    body: S,
    claimed: Option<&str>,
) -> Result<ArtifactFile>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    validate_path(path)?;
    let claimed = claimed.map(crate::validate::sha256).transpose()?;
    let mut conn = pool.get().await?;
    let run = writable_run(&mut conn, actor, owner).await?;
    check_path_free(&mut conn, run.id, path, claimed.as_deref()).await?;
    let upload_id = insert_pending(&mut conn, actor, run.id, path).await?;
    drop(conn);

    let staged = artifacts
        .store
        .stage(upload_id, body, artifacts.max_size, claimed.as_deref())
        .await;
    let mut conn = pool.get().await?;
    let staged = match staged {
        Ok(staged) => staged,
        Err(e) => {
            // The store removed what it had staged; nothing is left to sweep.
            delete_pending(&mut conn, upload_id).await?;
            return Err(e);
        }
    };
    record(&mut conn, artifacts, actor, run, path, &staged).await
}

pub(super) async fn delete_pending(conn: &mut Conn, upload_id: UploadId) -> Result<()> {
    diesel::delete(pending_uploads::table.find(upload_id))
        .execute(conn)
        .await?;
    Ok(())
}

/// Places a staged object and records the artifact in one transaction.
pub(super) async fn record(
    conn: &mut Conn,
    artifacts: &Artifacts,
    actor: &Actor,
    run: runs::Run,
    path: &str,
    staged: &Staged,
) -> Result<ArtifactFile> {
    // Remember the digest first: if anything below fails, the sweeper knows which object to check.
    diesel::update(pending_uploads::table.find(staged.upload_id))
        .set((
            pending_uploads::sha256.eq(&staged.sha256),
            pending_uploads::size_bytes.eq(staged.size as i64),
        ))
        .execute(conn)
        .await?;
    let file = ArtifactFile {
        path: path.to_owned(),
        sha256: staged.sha256.clone(),
        size: staged.size as i64,
    };
    let path = path.to_owned();
    let run_id = run.id;
    let upload_id = staged.upload_id;
    let staged = staged.clone();
    // Some(digest) when the path already holds content: then nothing was placed or written.
    let taken = audit::transaction(conn, |conn| {
        async move {
            lock_digest(conn, &staged.sha256).await?;
            // The path first: content already there decides before anything is placed.
            let existing: Option<String> = run_artifacts::table
                .find((run.id, &path))
                .select(run_artifacts::sha256)
                .for_update()
                .first(conn)
                .await
                .optional()?;
            if existing.is_some() {
                return Ok::<_, Error>(existing);
            }
            artifacts.store.place(&staged).await?;
            diesel::insert_into(artifact_objects::table)
                .values((
                    artifact_objects::sha256.eq(&staged.sha256),
                    artifact_objects::size_bytes.eq(staged.size as i64),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            diesel::insert_into(run_artifacts::table)
                .values((
                    run_artifacts::run_id.eq(run.id),
                    run_artifacts::path.eq(&path),
                    run_artifacts::sha256.eq(&staged.sha256),
                    run_artifacts::size_bytes.eq(staged.size as i64),
                    run_artifacts::created_by.eq(actor.user_id()?),
                ))
                .execute(conn)
                .await?;
            delete_pending(conn, staged.upload_id).await?;
            audit::record(
                conn,
                actor,
                Change {
                    action: "artifact.upload",
                    project_id: Some(run.project_id),
                    subject_kind: "run",
                    subject_id: run.id.to_string(),
                    before: None,
                    after: Some(
                        json!({"path": path, "sha256": staged.sha256, "size": staged.size}),
                    ),
                },
            )
            .await?;
            Ok(None)
        }
        .scope_boxed()
    })
    .await?;
    let Some(old) = taken else { return Ok(file) };
    // Nothing was placed: drop the staged bytes, then the pending row (a crash in between leaves
    // the row, and the sweeper finishes the job).
    artifacts.store.discard(upload_id).await;
    delete_pending(conn, upload_id).await?;
    if old == file.sha256 {
        // The same bytes again: nothing new to record.
        Ok(file)
    } else {
        Err(Error::conflict(format!(
            "`{}` of run {run_id} already holds {old}; artifacts are immutable",
            file.path
        )))
    }
}

/// Serialises everything that places, records or deletes the object of one digest.
pub(super) async fn lock_digest(conn: &mut Conn, sha256: &str) -> Result<()> {
    Prepared(
        diesel::sql_query(
            "SELECT pg_advisory_xact_lock(hashtextextended('custody.object.' || $1, 0))",
        )
        .bind::<Text, _>(sha256),
    )
    .execute(conn)
    .await?;
    Ok(())
}
