use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::scalars::Sha256;
use super::{actor, gql_error, parse_id, read, state, GqlResult};
use crate::artifacts::{self, ArtifactFile, Owner};
use crate::error::Error;
use crate::ids::{ModelVersionId, RunId, UploadId};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ArtifactOwnerKind {
    Run,
    ModelVersion,
}

fn owner(kind: ArtifactOwnerKind, id: &ID) -> GqlResult<Owner> {
    Ok(match kind {
        ArtifactOwnerKind::Run => Owner::Run(parse_id::<RunId>(id)?),
        ArtifactOwnerKind::ModelVersion => Owner::ModelVersion(parse_id::<ModelVersionId>(id)?),
    })
}

#[derive(SimpleObject)]
pub struct Artifact {
    path: String,
    sha256: Sha256,
    /// Size in bytes.
    size: i64,
}

impl From<ArtifactFile> for Artifact {
    fn from(file: ArtifactFile) -> Self {
        Artifact {
            path: file.path,
            sha256: Sha256(file.sha256),
            size: file.size,
        }
    }
}

#[derive(SimpleObject)]
pub struct UploadPart {
    part_number: i32,
    /// PUT this part's bytes here (no bearer token needed); keep the answer's ETag header.
    url: String,
}

#[derive(SimpleObject)]
pub struct ArtifactUpload {
    id: ID,
    /// Every part but the last holds exactly this many bytes.
    part_size: i64,
    parts: Vec<UploadPart>,
    expires_at: DateTime<Utc>,
}

#[derive(InputObject)]
pub struct CompletedPartInput {
    part_number: i32,
    etag: String,
}

#[derive(Default)]
pub struct ArtifactQuery;

#[Object]
impl ArtifactQuery {
    /// A URL that downloads one file without a bearer token, for an hour (presigned by S3, or
    /// signed by this server for the local store).
    async fn artifact_download_url(
        &self,
        ctx: &Context<'_>,
        owner_kind: ArtifactOwnerKind,
        owner_id: ID,
        path: String,
    ) -> GqlResult<String> {
        let actor = actor(ctx)?;
        let owner = owner(owner_kind, &owner_id)?;
        let state = state(ctx);
        let file = read(ctx, |c| {
            async move { artifacts::find(c, actor, owner, &path).await }.scope_boxed()
        })
        .await?;
        artifacts::download_url(&state.artifacts, &state.keys, &file)
            .await
            .map_err(gql_error)
    }
}

#[derive(Default)]
pub struct ArtifactMutation;

#[Object]
impl ArtifactMutation {
    /// Starts a direct upload of a run's file whose size and SHA-256 the client knows: answers one
    /// URL per part. PUT each part, then call `completeArtifactUpload`.
    async fn create_artifact_upload(
        &self,
        ctx: &Context<'_>,
        owner_kind: ArtifactOwnerKind,
        owner_id: ID,
        path: String,
        sha256: Sha256,
        size_bytes: i64,
    ) -> GqlResult<ArtifactUpload> {
        let actor = actor(ctx)?;
        let owner = owner(owner_kind, &owner_id)?;
        if size_bytes < 0 {
            return Err(gql_error(Error::invalid("sizeBytes must not be negative")));
        }
        let state = state(ctx);
        let upload = read(ctx, |c| {
            async move {
                artifacts::begin_direct_upload(
                    c,
                    &state.artifacts,
                    &state.keys,
                    actor,
                    artifacts::AnnouncedFile {
                        owner,
                        path: &path,
                        sha256: &sha256.0,
                        size: size_bytes as u64,
                    },
                )
                .await
            }
            .scope_boxed()
        })
        .await?;
        Ok(ArtifactUpload {
            id: ID(upload.id.to_string()),
            part_size: upload.part_size as i64,
            parts: upload
                .urls
                .into_iter()
                .enumerate()
                .map(|(i, url)| UploadPart {
                    part_number: i as i32 + 1,
                    url,
                })
                .collect(),
            expires_at: upload.expires_at,
        })
    }

    /// Completes a direct upload: the server reads the joined parts back through SHA-256 and
    /// records the artifact only if size and digest are those announced.
    async fn complete_artifact_upload(
        &self,
        ctx: &Context<'_>,
        upload_id: ID,
        parts: Vec<CompletedPartInput>,
    ) -> GqlResult<Artifact> {
        let actor = actor(ctx)?;
        let upload_id = parse_id::<UploadId>(&upload_id)?;
        let mut numbered = Vec::with_capacity(parts.len());
        for part in parts {
            if part.part_number < 1 {
                return Err(gql_error(Error::invalid("part numbers start at 1")));
            }
            numbered.push((part.part_number as u32, part.etag));
        }
        let state = state(ctx);
        let file = artifacts::complete_direct_upload(
            &state.pool,
            &state.artifacts,
            actor,
            upload_id,
            numbered,
        )
        .await
        .map_err(gql_error)?;
        Ok(file.into())
    }
}
