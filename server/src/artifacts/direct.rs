//! Direct uploads and downloads through presigned URLs (S3) or server-signed links (local store):
//! the bytes bypass the server; completing an upload re-hashes what arrived.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use super::upload::{check_path_free, delete_pending, insert_pending, record, writable_run};
use super::{validate_path, ArtifactFile, Artifacts, Owner};
use crate::actor::Actor;
use crate::auth::{TokenKeys, ISSUER};
use crate::db::schema::pending_uploads;
use crate::db::{Conn, DbPool};
use crate::error::{Error, Result};
use crate::ids::{RunId, UploadId, UserId};
use crate::projects::Role;
use crate::runs;

pub const DIRECT_URL_TTL: Duration = Duration::from_secs(3600);
const UPLOAD_AUDIENCE: &str = "custody-artifact-upload";
const DOWNLOAD_AUDIENCE: &str = "custody-artifact-download";

#[derive(Serialize, Deserialize)]
pub struct UploadClaims {
    iss: String,
    aud: String,
    exp: i64,
    pub upload_id: UploadId,
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
    pub id: UploadId,
    pub part_size: u64,
    pub urls: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// The file a client announces before uploading it directly: where it goes and what it holds.
pub struct AnnouncedFile<'a> {
    pub owner: Owner,
    pub path: &'a str,
    pub sha256: &'a str,
    pub size: u64,
}

/// Starts a direct upload of `size` bytes whose digest the client announces: answers one URL per
/// part (presigned by S3, or on this server for the local store).
pub async fn begin_direct_upload(
    conn: &mut Conn,
    artifacts: &Artifacts,
    keys: &TokenKeys,
    actor: &Actor,
    file: AnnouncedFile<'_>,
) -> Result<DirectUpload> {
    let AnnouncedFile {
        owner,
        path,
        sha256,
        size,
    } = file;
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
    upload_id: UploadId,
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
    upload_id: UploadId,
    parts: Vec<(u32, String)>,
) -> Result<ArtifactFile> {
    let mut conn = pool.get().await?;
    #[allow(clippy::type_complexity)]
    let pending: Option<(
        RunId,
        String,
        UserId,
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
