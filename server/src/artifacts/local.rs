//! The local directory store (the embedded default): objects under `sha256/ab/cd/<hex>`, written
//! through a buffer while hashed, fsynced before they count.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::store::{check_size, object_key, staging_key, ByteRange, ByteStreamBox, Staged};
use crate::error::{Error, Result};
use crate::ids::UploadId;

#[derive(Clone)]
pub struct LocalStore {
    pub(super) root: PathBuf,
}

impl LocalStore {
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        for sub in ["sha256", "staging", "uploads"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| {
                format!(
                    "creating the artifact directory {}",
                    root.join(sub).display()
                )
            })?;
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.root.join(object_key(sha256))
    }

    pub(super) fn staging_path(&self, upload_id: UploadId) -> PathBuf {
        self.root.join(staging_key(upload_id))
    }

    pub(super) fn parts_dir(&self, upload_id: UploadId) -> PathBuf {
        self.root.join("uploads").join(upload_id.to_string())
    }

    pub(super) async fn stage<S>(
        &self,
        upload_id: UploadId,
        body: S,
        max_size: u64,
    ) -> Result<Staged>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let (sha256, size) = write_hashed(&self.staging_path(upload_id), body, max_size).await?;
        Ok(Staged {
            upload_id,
            sha256,
            size,
        })
    }

    pub(super) async fn place(&self, staged: &Staged) -> Result<()> {
        let target = self.object_path(&staged.sha256);
        let staging = self.staging_path(staged.upload_id);
        if tokio::fs::try_exists(&target)
            .await
            .map_err(Error::internal)?
        {
            tokio::fs::remove_file(&staging).await.ok();
            return Ok(());
        }
        let dir = target.parent().expect("object keys have a directory");
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(Error::internal)?;
        // rename is atomic: a reader sees either no object or the whole object.
        tokio::fs::rename(&staging, &target)
            .await
            .map_err(Error::internal)?;
        sync_dir(dir).await
    }

    pub(super) async fn discard(&self, upload_id: UploadId) -> anyhow::Result<()> {
        match tokio::fs::remove_file(self.staging_path(upload_id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        match tokio::fs::remove_dir_all(self.parts_dir(upload_id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn open(
        &self,
        sha256: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStreamBox> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::open(self.object_path(sha256))
            .await
            .with_context(|| format!("object {sha256} is missing from the local store"))
            .map_err(Error::internal)?;
        let reader: Pin<Box<dyn tokio::io::AsyncRead + Send>> = match range {
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start))
                    .await
                    .map_err(Error::internal)?;
                Box::pin(file.take(r.end - r.start + 1))
            }
            None => Box::pin(file),
        };
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 * 1024,
        )))
    }

    pub(super) async fn write_part<S>(
        &self,
        upload_id: UploadId,
        part: u32,
        body: S,
        max_size: u64,
    ) -> Result<String>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let dir = self.parts_dir(upload_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Error::internal)?;
        let (sha256, _) = write_hashed(&dir.join(format!("{part:05}")), body, max_size).await?;
        Ok(sha256)
    }

    pub(super) async fn complete_parts(&self, upload_id: UploadId, parts: u32) -> Result<Staged> {
        let dir = self.parts_dir(upload_id);
        let mut files = Vec::new();
        for n in 1..=parts {
            let path = dir.join(format!("{n:05}"));
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|_| Error::invalid(format!("part {n} was never uploaded")))?;
            files.push(tokio_util::io::ReaderStream::with_capacity(
                file,
                256 * 1024,
            ));
        }
        let joined = futures_util::stream::iter(files).flatten();
        let (sha256, size) =
            write_hashed(&self.staging_path(upload_id), Box::pin(joined), u64::MAX).await?;
        tokio::fs::remove_dir_all(&dir).await.ok();
        Ok(Staged {
            upload_id,
            sha256,
            size,
        })
    }
}

/// How much an upload writes between two requests that the kernel write it to disk.
const WRITE_BACK_EVERY: u64 = 32 << 20;

/// Writes a stream to `path` through SHA-256 and fsyncs it; answers (hex digest, size).
///
/// While the body arrives, every [`WRITE_BACK_EVERY`] bytes a blocking task fdatasyncs what has
/// been written so far (one at a time, through a second handle of the same file), so the disk
/// writes along with the upload and the final fsync is left only the tail: synced once at the
/// end, a 256 MiB upload waited ~0.1 s for the disk after its last byte.
async fn write_hashed<S>(path: &Path, mut body: S, max_size: u64) -> Result<(String, u64)>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let file = tokio::fs::File::create(path)
        .await
        .map_err(Error::internal)?;
    let syncer = std::sync::Arc::new(
        file.try_clone()
            .await
            .map_err(Error::internal)?
            .into_std()
            .await,
    );
    let mut writing_back: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
    let mut unsynced = 0u64;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::invalid(format!("reading the upload failed: {e}")))?;
        size += chunk.len() as u64;
        check_size(size, max_size)?;
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(Error::internal)?;
        unsynced += chunk.len() as u64;
        if unsynced >= WRITE_BACK_EVERY && writing_back.as_ref().is_none_or(|w| w.is_finished()) {
            if let Some(done) = writing_back.take() {
                done.await
                    .map_err(Error::internal)?
                    .map_err(Error::internal)?;
            }
            let syncer = syncer.clone();
            writing_back = Some(tokio::task::spawn_blocking(move || syncer.sync_data()));
            unsynced = 0;
        }
    }
    out.flush().await.map_err(Error::internal)?;
    if let Some(running) = writing_back {
        running
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)?;
    }
    out.into_inner().sync_all().await.map_err(Error::internal)?;
    Ok((hex::encode(hasher.finalize()), size))
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)
}
