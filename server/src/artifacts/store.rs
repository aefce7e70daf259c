//! Where artifact bytes live: one interface, two stores (a local directory, the embedded default,
//! and any S3-compatible service). Objects are content addressed: `sha256/ab/cd/<hex digest>`.
//!
//! Every upload first lands under a staging key while its SHA-256 is computed on the fly; once the
//! digest is known and checked, `place` moves it to its content address (or drops it when those
//! bytes are already stored). Nothing is ever held whole in memory: the local store's writer
//! holds a bounded amount received and not yet written (`local::BYTES_IN_FLIGHT`), the S3 store
//! sends parts of `part_size` bytes (multipart upload).

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::error::{Error, Result};
use crate::ids::UploadId;

pub use super::local::LocalStore;
pub use super::s3::{S3Settings, S3Store};

pub type ByteStreamBox = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// An upload whose bytes are durable under a staging key, with what was measured.
#[derive(Debug, Clone)]
pub struct Staged {
    pub upload_id: UploadId,
    pub sha256: String,
    pub size: u64,
}

/// A byte range of an object, inclusive, already checked against its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

pub fn object_key(sha256: &str) -> String {
    format!("sha256/{}/{}/{}", &sha256[0..2], &sha256[2..4], sha256)
}

pub(super) fn staging_key(upload_id: UploadId) -> String {
    format!("staging/{upload_id}")
}

#[derive(Clone)]
pub enum ArtifactStore {
    Local(LocalStore),
    S3(S3Store),
}

impl ArtifactStore {
    pub fn describe(&self) -> String {
        match self {
            ArtifactStore::Local(s) => format!("local directory {}", s.root.display()),
            ArtifactStore::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix),
        }
    }

    /// Streams `body` to the staging key of `upload_id`, hashing as it goes. Refuses bodies over
    /// `max_size` (the partial object is removed) and, with `claimed`, a digest that differs.
    pub async fn stage<S>(
        &self,
        upload_id: UploadId,
        body: S,
        max_size: u64,
        claimed: Option<&str>,
    ) -> Result<Staged>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let staged = match self {
            ArtifactStore::Local(s) => s.stage(upload_id, body, max_size).await,
            ArtifactStore::S3(s) => s.stage(upload_id, body, max_size).await,
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                self.discard(upload_id).await;
                return Err(e);
            }
        };
        if let Some(claimed) = claimed {
            if claimed != staged.sha256 {
                self.discard(upload_id).await;
                return Err(Error::invalid(format!(
                    "the body's SHA-256 is {} but X-Custody-Sha256 claimed {claimed}; nothing was stored",
                    staged.sha256
                )));
            }
        }
        Ok(staged)
    }

    /// Moves a staged upload to its content address; when the object already exists the staged
    /// copy is dropped (deduplication). Afterwards the object is durable at `object_key`.
    pub async fn place(&self, staged: &Staged) -> Result<()> {
        match self {
            ArtifactStore::Local(s) => s.place(staged).await,
            ArtifactStore::S3(s) => s.place(staged).await,
        }
    }

    /// Removes whatever an unfinished upload left under its staging key (and local parts).
    pub async fn discard(&self, upload_id: UploadId) {
        let result = match self {
            ArtifactStore::Local(s) => s.discard(upload_id).await,
            ArtifactStore::S3(s) => s.discard(upload_id).await,
        };
        if let Err(e) = result {
            tracing::warn!(upload.id = %upload_id, error = ?e, "could not remove a staged upload");
        }
    }

    /// Aborts the multipart upload that a direct upload began in the store (S3), dropping the parts
    /// it holds. `discard` finds such uploads by listing, which not every S3-compatible store
    /// implements; the sweeper knows the id.
    pub async fn abort_direct(&self, upload_id: UploadId, store_upload_id: &str) {
        if let ArtifactStore::S3(s) = self {
            s.abort(&s.key(&staging_key(upload_id)), store_upload_id)
                .await;
        }
    }

    pub async fn exists(&self, sha256: &str) -> Result<bool> {
        match self {
            ArtifactStore::Local(s) => Ok(tokio::fs::try_exists(s.object_path(sha256))
                .await
                .map_err(Error::internal)?),
            ArtifactStore::S3(s) => s.exists(&s.key(&object_key(sha256))).await,
        }
    }

    /// Deletes an object no row refers to (the sweeper's job, under the digest's lock).
    pub async fn delete_object(&self, sha256: &str) -> Result<()> {
        match self {
            ArtifactStore::Local(s) => match tokio::fs::remove_file(s.object_path(sha256)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::internal(e)),
            },
            ArtifactStore::S3(s) => s.delete(&s.key(&object_key(sha256))).await,
        }
    }

    /// Streams an object, or one range of it.
    pub async fn open(&self, sha256: &str, range: Option<ByteRange>) -> Result<ByteStreamBox> {
        match self {
            ArtifactStore::Local(s) => s.open(sha256, range).await,
            ArtifactStore::S3(s) => s.open(sha256, range).await,
        }
    }

    /// Presigned URLs for the parts of a direct upload, when the store serves them itself
    /// (S3). `None` means the server must hand out URLs on itself (local store).
    pub async fn presign_parts(
        &self,
        upload_id: UploadId,
        parts: u32,
        ttl: Duration,
    ) -> Result<Option<(String, Vec<String>)>> {
        match self {
            ArtifactStore::Local(_) => Ok(None),
            ArtifactStore::S3(s) => s.presign_parts(upload_id, parts, ttl).await.map(Some),
        }
    }

    /// Writes one part of a direct upload to the local store.
    pub async fn write_local_part<S>(
        &self,
        upload_id: UploadId,
        part: u32,
        body: S,
        max_size: u64,
    ) -> Result<String>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        match self {
            ArtifactStore::Local(s) => s.write_part(upload_id, part, body, max_size).await,
            ArtifactStore::S3(_) => Err(Error::invalid(
                "this store takes parts directly through presigned URLs",
            )),
        }
    }

    /// Finishes a direct upload: joins the parts under the staging key, then reads the result
    /// back through SHA-256 so the server itself vouches for the digest.
    pub async fn complete_parts(
        &self,
        upload_id: UploadId,
        s3_upload_id: Option<&str>,
        parts: &[(u32, String)],
    ) -> Result<Staged> {
        match self {
            ArtifactStore::Local(s) => s.complete_parts(upload_id, parts.len() as u32).await,
            ArtifactStore::S3(s) => {
                let s3_upload_id =
                    s3_upload_id.ok_or_else(|| Error::invalid("unknown multipart upload"))?;
                s.complete_parts(upload_id, s3_upload_id, parts).await
            }
        }
    }

    /// A presigned download URL when the store serves one itself (S3).
    pub async fn presign_download(&self, sha256: &str, ttl: Duration) -> Result<Option<String>> {
        match self {
            ArtifactStore::Local(_) => Ok(None),
            ArtifactStore::S3(s) => s.presign_download(sha256, ttl).await.map(Some),
        }
    }
}

/// Reads a stream into `hasher`, counting bytes and refusing more than `max_size`.
pub(super) fn check_size(size: u64, max_size: u64) -> Result<()> {
    if size > max_size {
        Err(Error::TooLarge(format!(
            "the artifact is larger than the maximum of {max_size} bytes"
        )))
    } else {
        Ok(())
    }
}
