//! Artifacts: the files of runs and model versions, stored content addressed in an
//! `ArtifactStore`, recorded in PostgreSQL only once durable.
//!
//! An upload goes: a `pending_uploads` row (committed) → bytes staged while hashed → digest
//! recorded on the pending row → in one transaction, under a per-digest advisory lock: the object
//! placed at its content address, the rows written, the pending row deleted, the audit entry.
//! Whatever fails on the way leaves a pending row, which the sweeper claims after a grace period
//! and uses to delete the staged bytes, and the placed object if no row refers to its digest. The
//! sweeper takes the same per-digest lock, so it never deletes an object a concurrent upload is
//! about to record.

pub mod store;

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, Change};
use crate::auth::{Actor, TokenKeys, ISSUER};
use crate::db::schema::{
    artifact_objects, model_version_files, model_versions, models, pending_uploads, run_artifacts,
};
use crate::db::{Conn, DbPool};
use crate::error::{Error, Result};
use crate::projects::{self, Role};
use crate::runs;
pub use store::{ArtifactStore, ByteRange, ByteStreamBox, Staged};

/// What the server needs to handle artifacts.
#[derive(Clone)]
pub struct Artifacts {
    pub store: ArtifactStore,
    pub max_size: u64,
    pub part_size: u64,
    /// Base of the URLs the server hands out for direct uploads and downloads.
    pub public_url: String,
}

/// Whose files: a run's (writable) or a model version's (fixed at registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Run(Uuid),
    ModelVersion(Uuid),
}

impl Owner {
    pub fn parse(kind: &str, id: &str) -> Result<Owner> {
        let id: Uuid = id
            .parse()
            .map_err(|_| Error::invalid(format!("`{id}` is not a valid id")))?;
        match kind {
            "run" => Ok(Owner::Run(id)),
            "model-version" => Ok(Owner::ModelVersion(id)),
            other => Err(Error::invalid(format!(
                "owner kind must be `run` or `model-version`, not `{other}`"
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Queryable)]
pub struct ArtifactFile {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// Path rules: relative, `/`-separated, UTF-8, at most 1024 bytes, no control characters, no
/// empty, `.` or `..` segments, no backslashes.
pub fn validate_path(path: &str) -> Result<()> {
    let problem = if path.is_empty() {
        Some("is empty")
    } else if path.len() > 1024 {
        Some("is longer than 1024 bytes")
    } else if path.starts_with('/') {
        Some("is absolute; give a path relative to the owner")
    } else if path.chars().any(|c| c.is_control()) {
        Some("contains control characters")
    } else if path.contains('\\') {
        Some("contains a backslash; separate directories with `/`")
    } else if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        Some("has an empty, `.` or `..` segment")
    } else {
        None
    };
    match problem {
        Some(why) => Err(Error::invalid(format!(
            "artifact path `{}` {why}",
            path.chars().take(100).collect::<String>().escape_debug()
        ))),
        None => Ok(()),
    }
}

/// The manifest of a model version: its files sorted by path; the digest is the SHA-256 of the
/// canonical JSON array `[{"path":…,"sha256":…,"size":…},…]` (sorted keys, no whitespace).
pub fn manifest_digest(files: &[ArtifactFile]) -> String {
    let mut sorted: Vec<&ArtifactFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let document: Vec<serde_json::Value> = sorted
        .iter()
        .map(|f| json!({"path": f.path, "sha256": f.sha256, "size": f.size}))
        .collect();
    custody_audit_format::canonical::sha256_hex(&serde_json::Value::Array(document))
}

/// Checks that the caller may write artifacts of this owner, answering the run.
async fn writable_run(conn: &mut Conn, actor: &Actor, owner: Owner) -> Result<runs::Run> {
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
async fn check_path_free(
    conn: &mut Conn,
    run_id: Uuid,
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

async fn insert_pending(conn: &mut Conn, actor: &Actor, run_id: Uuid, path: &str) -> Result<Uuid> {
    let id = Uuid::now_v7();
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

async fn delete_pending(conn: &mut Conn, upload_id: Uuid) -> Result<()> {
    diesel::delete(pending_uploads::table.find(upload_id))
        .execute(conn)
        .await?;
    Ok(())
}

/// Places a staged object and records the artifact in one transaction.
async fn record(
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
async fn lock_digest(conn: &mut Conn, sha256: &str) -> Result<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('custody.object.' || $1, 0))")
        .bind::<Text, _>(sha256)
        .execute(conn)
        .await?;
    Ok(())
}

/// The file at `path` of an owner the caller may read.
pub async fn find(
    conn: &mut Conn,
    actor: &Actor,
    owner: Owner,
    path: &str,
) -> Result<ArtifactFile> {
    validate_path(path)?;
    let found: Option<ArtifactFile> = match owner {
        Owner::Run(id) => {
            runs::get(conn, actor, id, Role::Viewer).await?;
            run_artifacts::table
                .find((id, path))
                .select((
                    run_artifacts::path,
                    run_artifacts::sha256,
                    run_artifacts::size_bytes,
                ))
                .first(conn)
                .await
                .optional()?
        }
        Owner::ModelVersion(id) => {
            let project: Option<Uuid> = model_versions::table
                .inner_join(models::table)
                .filter(model_versions::id.eq(id))
                .select(models::project_id)
                .first(conn)
                .await
                .optional()?;
            let project = project
                .ok_or_else(|| Error::not_found(format!("no model version with id {id}")))?;
            projects::authorize(conn, actor, project, Role::Viewer)
                .await
                .map_err(projects::hiding(|| {
                    Error::not_found(format!("no model version with id {id}"))
                }))?;
            model_version_files::table
                .find((id, path))
                .select((
                    model_version_files::path,
                    model_version_files::sha256,
                    model_version_files::size_bytes,
                ))
                .first(conn)
                .await
                .optional()?
        }
    };
    found.ok_or_else(|| Error::not_found(format!("no artifact at `{path}`")))
}

/// The files of many runs, sorted by path.
pub async fn of_runs(conn: &mut Conn, run_ids: &[Uuid]) -> Result<Vec<(Uuid, ArtifactFile)>> {
    let rows: Vec<(Uuid, String, String, i64)> = run_artifacts::table
        .filter(run_artifacts::run_id.eq_any(run_ids))
        .order((run_artifacts::run_id, run_artifacts::path))
        .select((
            run_artifacts::run_id,
            run_artifacts::path,
            run_artifacts::sha256,
            run_artifacts::size_bytes,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(run, path, sha256, size)| (run, ArtifactFile { path, sha256, size }))
        .collect())
}

/// The files of many model versions, sorted by path.
pub async fn of_model_versions(conn: &mut Conn, ids: &[Uuid]) -> Result<Vec<(Uuid, ArtifactFile)>> {
    let rows: Vec<(Uuid, String, String, i64)> = model_version_files::table
        .filter(model_version_files::model_version_id.eq_any(ids))
        .order((
            model_version_files::model_version_id,
            model_version_files::path,
        ))
        .select((
            model_version_files::model_version_id,
            model_version_files::path,
            model_version_files::sha256,
            model_version_files::size_bytes,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(mv, path, sha256, size)| (mv, ArtifactFile { path, sha256, size }))
        .collect())
}

/// The run's files under `artifact_path` (a file or a directory), named relative to it: what a
/// model version registered from that path contains.
pub async fn files_for_version(
    conn: &mut Conn,
    run_id: Uuid,
    artifact_path: &str,
) -> Result<Vec<ArtifactFile>> {
    let base = artifact_path.trim_end_matches('/');
    validate_path(base)?;
    let files = of_runs(conn, &[run_id]).await?;
    let prefix = format!("{base}/");
    let picked: Vec<ArtifactFile> = files
        .into_iter()
        .filter_map(|(_, f)| {
            if f.path == base {
                let name = base.rsplit('/').next().unwrap_or(base).to_owned();
                Some(ArtifactFile { path: name, ..f })
            } else {
                f.path.strip_prefix(&prefix).map(|rest| ArtifactFile {
                    path: rest.to_owned(),
                    ..f.clone()
                })
            }
        })
        .collect();
    if picked.is_empty() {
        return Err(Error::invalid(format!(
            "run {run_id} has no artifact at or under `{base}`; upload the files to the run first"
        )));
    }
    Ok(picked)
}

/// Writes a new model version's files (inside its registration transaction).
pub async fn attach_to_version(
    conn: &mut Conn,
    model_version_id: Uuid,
    files: &[ArtifactFile],
) -> Result<()> {
    let rows: Vec<_> = files
        .iter()
        .map(|f| {
            (
                model_version_files::model_version_id.eq(model_version_id),
                model_version_files::path.eq(&f.path),
                model_version_files::sha256.eq(&f.sha256),
                model_version_files::size_bytes.eq(f.size),
            )
        })
        .collect();
    diesel::insert_into(model_version_files::table)
        .values(&rows)
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Direct uploads and downloads through presigned URLs

pub const DIRECT_URL_TTL: Duration = Duration::from_secs(3600);
const UPLOAD_AUDIENCE: &str = "custody-artifact-upload";
const DOWNLOAD_AUDIENCE: &str = "custody-artifact-download";

#[derive(Serialize, Deserialize)]
pub struct UploadClaims {
    iss: String,
    aud: String,
    exp: i64,
    pub upload_id: Uuid,
}

#[derive(Serialize, Deserialize)]
pub struct DownloadClaims {
    iss: String,
    aud: String,
    exp: i64,
    pub sha256: String,
    pub size: i64,
    pub name: String,
}

pub struct DirectUpload {
    pub id: Uuid,
    pub part_size: u64,
    pub urls: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// Starts a direct upload of `size` bytes whose digest the client announces: answers one URL per
/// part (presigned by S3, or on this server for the local store).
#[allow(clippy::too_many_arguments)]
pub async fn begin_direct_upload(
    conn: &mut Conn,
    artifacts: &Artifacts,
    keys: &TokenKeys,
    actor: &Actor,
    owner: Owner,
    path: &str,
    sha256: &str,
    size: u64,
) -> Result<DirectUpload> {
    validate_path(path)?;
    let sha256 = crate::validate::sha256(sha256)?;
    if size > artifacts.max_size {
        return Err(Error::TooLarge(format!(
            "the artifact is larger than the maximum of {} bytes",
            artifacts.max_size
        )));
    }
    let run = writable_run(conn, actor, owner).await?;
    check_path_free(conn, run.id, path, Some(&sha256)).await?;
    let parts = size.div_ceil(artifacts.part_size).max(1);
    if parts > 10_000 {
        return Err(Error::TooLarge(
            "more than 10,000 parts; raise the part size".into(),
        ));
    }
    let upload_id = insert_pending(conn, actor, run.id, path).await?;
    let expires_at = Utc::now() + chrono::Duration::from_std(DIRECT_URL_TTL).expect("small");
    let (store_upload_id, urls) = match artifacts
        .store
        .presign_parts(upload_id, parts as u32, DIRECT_URL_TTL)
        .await?
    {
        Some((id, urls)) => (Some(id), urls),
        None => {
            let token = keys.sign_for(&UploadClaims {
                iss: ISSUER.into(),
                aud: UPLOAD_AUDIENCE.into(),
                exp: expires_at.timestamp(),
                upload_id,
            })?;
            let urls = (1..=parts)
                .map(|n| {
                    format!(
                        "{}/api/uploads/{upload_id}/parts/{n}?token={token}",
                        artifacts.public_url
                    )
                })
                .collect();
            (None, urls)
        }
    };
    diesel::update(pending_uploads::table.find(upload_id))
        .set((
            pending_uploads::expected_sha256.eq(&sha256),
            pending_uploads::expected_size.eq(size as i64),
            pending_uploads::part_count.eq(parts as i32),
            pending_uploads::store_upload_id.eq(store_upload_id),
        ))
        .execute(conn)
        .await?;
    Ok(DirectUpload {
        id: upload_id,
        part_size: artifacts.part_size,
        urls,
        expires_at,
    })
}

/// Checks a local part URL's token and answers the upload and its part count.
pub async fn check_part_token(
    conn: &mut Conn,
    keys: &TokenKeys,
    upload_id: Uuid,
    part: u32,
    token: &str,
) -> Result<()> {
    let claims: UploadClaims = keys.verify_for(token, UPLOAD_AUDIENCE)?;
    if claims.upload_id != upload_id {
        return Err(Error::forbidden("this link is for another upload"));
    }
    let parts: Option<Option<i32>> = pending_uploads::table
        .find(upload_id)
        .select(pending_uploads::part_count)
        .first(conn)
        .await
        .optional()?;
    match parts {
        Some(Some(n)) if part >= 1 && part as i32 <= n => Ok(()),
        Some(_) => Err(Error::invalid(format!(
            "part {part} is outside this upload"
        ))),
        None => Err(Error::not_found("this upload is finished or unknown")),
    }
}

/// Completes a direct upload: the store joins the parts, the server reads them back through
/// SHA-256 and refuses a size or digest other than announced (nothing is recorded then).
pub async fn complete_direct_upload(
    pool: &DbPool,
    artifacts: &Artifacts,
    actor: &Actor,
    upload_id: Uuid,
    parts: Vec<(u32, String)>,
) -> Result<ArtifactFile> {
    let mut conn = pool.get().await?;
    #[allow(clippy::type_complexity)]
    let pending: Option<(
        Uuid,
        String,
        Uuid,
        Option<String>,
        Option<i64>,
        Option<i32>,
        Option<String>,
    )> = pending_uploads::table
        .find(upload_id)
        .select((
            pending_uploads::run_id,
            pending_uploads::path,
            pending_uploads::created_by,
            pending_uploads::expected_sha256,
            pending_uploads::expected_size,
            pending_uploads::part_count,
            pending_uploads::store_upload_id,
        ))
        .first(&mut conn)
        .await
        .optional()?;
    let Some((
        run_id,
        path,
        created_by,
        Some(expected_sha),
        Some(expected_size),
        Some(part_count),
        store_id,
    )) = pending
    else {
        return Err(Error::not_found(format!(
            "no direct upload {upload_id} in progress"
        )));
    };
    if Some(created_by) != actor.user_id {
        return Err(Error::forbidden(
            "only the user who started this upload can complete it",
        ));
    }
    let run = runs::get(&mut conn, actor, run_id, Role::Contributor).await?;
    let mut parts = parts;
    parts.sort_by_key(|(n, _)| *n);
    let numbers: Vec<u32> = parts.iter().map(|(n, _)| *n).collect();
    if numbers != (1..=part_count as u32).collect::<Vec<_>>() {
        return Err(Error::invalid(format!(
            "give every part from 1 to {part_count} exactly once"
        )));
    }
    drop(conn);
    let staged = artifacts
        .store
        .complete_parts(upload_id, store_id.as_deref(), &parts)
        .await;
    let mut conn = pool.get().await?;
    let staged = match staged {
        Ok(s) if s.sha256 == expected_sha && s.size == expected_size as u64 => s,
        Ok(s) => {
            artifacts.store.discard(upload_id).await;
            delete_pending(&mut conn, upload_id).await?;
            return Err(Error::invalid(format!(
                "the uploaded parts hold {} bytes with SHA-256 {}, not the announced {expected_size} bytes with {expected_sha}; nothing was stored",
                s.size, s.sha256
            )));
        }
        Err(e) => return Err(e),
    };
    record(&mut conn, artifacts, actor, run, &path, &staged).await
}

/// A URL that downloads the file without a bearer token, valid for an hour.
pub async fn download_url(
    artifacts: &Artifacts,
    keys: &TokenKeys,
    file: &ArtifactFile,
) -> Result<String> {
    if let Some(url) = artifacts
        .store
        .presign_download(&file.sha256, DIRECT_URL_TTL)
        .await?
    {
        return Ok(url);
    }
    let token = keys.sign_for(&DownloadClaims {
        iss: ISSUER.into(),
        aud: DOWNLOAD_AUDIENCE.into(),
        exp: (Utc::now() + chrono::Duration::from_std(DIRECT_URL_TTL).expect("small")).timestamp(),
        sha256: file.sha256.clone(),
        size: file.size,
        name: file
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&file.path)
            .to_owned(),
    })?;
    Ok(format!(
        "{}/api/artifacts/download/{token}",
        artifacts.public_url
    ))
}

pub fn check_download_token(keys: &TokenKeys, token: &str) -> Result<DownloadClaims> {
    keys.verify_for(token, DOWNLOAD_AUDIENCE)
}

// ---------------------------------------------------------------------------------------------
// Sweeping what failed uploads left behind

/// Claims pending uploads older than `grace` (skipping rows another replica holds), removes their
/// staged bytes, and deletes their placed object unless a row refers to its digest.
pub async fn sweep(pool: &DbPool, store: &ArtifactStore, grace: Duration) -> Result<usize> {
    let mut conn = pool.get().await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).map_err(Error::internal)?;
    let conn: &mut Conn = &mut conn;
    audit::transaction(conn, |conn| {
        async move {
            let stale: Vec<(Uuid, Option<String>, Option<String>)> = pending_uploads::table
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in [
            "model.pt",
            "weights/part-1.bin",
            "ünïcode/файл.txt",
            &"a".repeat(1024),
        ] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a\\b",
            "tab\there",
            "nul\0",
            &"a".repeat(1025),
            "dir/",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn manifest_digest_is_order_independent_and_content_sensitive() {
        let a = ArtifactFile {
            path: "a".into(),
            sha256: "1".repeat(64),
            size: 1,
        };
        let b = ArtifactFile {
            path: "b".into(),
            sha256: "2".repeat(64),
            size: 2,
        };
        assert_eq!(
            manifest_digest(&[a.clone(), b.clone()]),
            manifest_digest(&[b.clone(), a.clone()])
        );
        let b2 = ArtifactFile { size: 3, ..b };
        assert_ne!(
            manifest_digest(&[a.clone(), b2]),
            manifest_digest(&[
                a,
                ArtifactFile {
                    path: "b".into(),
                    sha256: "2".repeat(64),
                    size: 2
                }
            ])
        );
        assert_eq!(
            manifest_digest(&[]),
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }
}
