//! The local directory store (the embedded default): objects under `sha256/ab/cd/<hex>`, hashed
//! and written by a blocking thread while the body arrives, fsynced before they count.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// How much an upload writes between two requests that the kernel write it to disk: the
/// upload's answer waits for what is left after the last one. bench_mlflow's 256 MiB upload
/// (2 cores, same run alternating): 32 MiB 1,073-1,080 MB/s, 16 MiB 1,042-1,246, 8 MiB
/// 1,159-1,190 MB/s.
const WRITE_BACK_EVERY: u64 = 8 << 20;

/// How much the writer gathers before one (vectored) write.
const WRITE_SIZE: usize = 1 << 20;

/// How much the receiving task hands the writer at once, of what the connection already holds
/// (it never waits to fill one): each hand-off to a sleeping writer wakes it, and on a 2-core VM
/// a wake-up across CPUs costs ~45 µs, while a socket read brings tens of KiB. bench_mlflow's
/// upload, binaries alternating in one session: 678-779 -> 792-886 MB/s (new bytes), 257-293 ->
/// 319-429 (the same bytes again). A batch is received before it asks for its permits, so up to
/// one hand-off more than [`BYTES_IN_FLIGHT`] is held.
const HAND_OFF: usize = 256 << 10;

/// How many received bytes may wait for the writer (bounds the memory of a fast client: the
/// chunks a connection reads are as large as what its socket holds).
const BYTES_IN_FLIGHT: usize = 2 << 20;

/// Writes a stream to `path` through SHA-256 and fsyncs it; answers (hex digest, size).
///
/// The request's task only receives: each chunk goes, uncopied, to a blocking thread that hashes
/// it and writes it (gathered into one vectored write per [`WRITE_SIZE`]), so receiving overlaps
/// hashing and writing on two cores: bench_mlflow's 256 MiB upload went from 676-744 MB/s
/// (hashed in the receiving task, copied through two buffers) to 865-883 MB/s, one run each
/// (2 cores). See [`hash_and_write`] for the disk.
async fn write_hashed<S>(path: &Path, body: S, max_size: u64) -> Result<(String, u64)>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    // Bounded by bytes (the permits travel with the chunks); the channel only queues.
    let budget = Arc::new(Semaphore::new(BYTES_IN_FLIGHT));
    let (chunks, received) = tokio::sync::mpsc::unbounded_channel();
    let path = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || hash_and_write(&path, received));
    let mut size = 0u64;
    let mut body = body.fuse();
    let receiving = async {
        while let Some(chunk) = body.next().await {
            let mut batch = Vec::new();
            let mut batch_len = 0usize;
            let mut next = Some(chunk);
            // What the connection already holds goes along: one hand-off (and one wake-up of the
            // writer) per batch instead of one per socket read.
            while let Some(chunk) = next.take() {
                let chunk =
                    chunk.map_err(|e| Error::invalid(format!("reading the upload failed: {e}")))?;
                size += chunk.len() as u64;
                check_size(size, max_size)?;
                batch_len += chunk.len();
                batch.push(chunk);
                if batch_len < HAND_OFF {
                    next = body.next().now_or_never().flatten();
                }
            }
            // At most what is left beside a write being gathered (under WRITE_SIZE), so a
            // large batch never waits for permits the waiting writer holds.
            let bytes = batch_len.clamp(1, BYTES_IN_FLIGHT - WRITE_SIZE) as u32;
            let permit = budget
                .clone()
                .acquire_many_owned(bytes)
                .await
                .map_err(Error::internal)?;
            if chunks.send(Piece::Chunks(batch, permit)).is_err() {
                // The writer failed: its error is the answer.
                return Ok(());
            }
        }
        // The writer stops at its first error, so this may find it gone: the same answer.
        let _ = chunks.send(Piece::End);
        Ok::<_, Error>(())
    }
    .await;
    // Without `End` (receiving failed) the writer leaves the partial file unsynced.
    drop(chunks);
    let written = writer.await.map_err(Error::internal)?;
    receiving?;
    let sha256 = written.map_err(Error::internal)?;
    Ok((sha256, size))
}

/// What the receiving task hands the writer.
enum Piece {
    /// Received bytes, in order, holding their share of [`BYTES_IN_FLIGHT`] until written.
    Chunks(Vec<Bytes>, OwnedSemaphorePermit),
    /// The whole body was received: sync it.
    End,
}

/// The writer of [`write_hashed`]: hashes and writes each chunk as it comes, then fsyncs the file;
/// answers the hex digest.
///
/// Every [`WRITE_BACK_EVERY`] bytes it asks a second thread to fdatasync what has been written so
/// far (through a second handle of the same file, one sync at a time), so the disk writes along
/// with the upload and the final fsync is left only the tail: synced once at the end, a 256 MiB
/// upload waited ~0.1 s for the disk after its last byte.
fn hash_and_write(
    path: &Path,
    mut pieces: tokio::sync::mpsc::UnboundedReceiver<Piece>,
) -> std::io::Result<String> {
    let mut file = std::fs::File::create(path)?;
    let syncer = file.try_clone()?;
    std::thread::scope(|scope| {
        // Capacity one: a request made while a sync runs is kept, further ones add nothing.
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let syncing = scope.spawn(move || asked.iter().try_for_each(|()| syncer.sync_data()));
        let mut hasher = Sha256::new();
        // Chunks written together, with their permits (released once written).
        let mut gathered: Vec<Bytes> = Vec::new();
        let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
        let mut gathered_len = 0usize;
        let mut unsynced = 0u64;
        let written = (|| {
            loop {
                let batch = match pieces.blocking_recv() {
                    Some(Piece::Chunks(batch, permit)) => {
                        permits.push(permit);
                        batch
                    }
                    Some(Piece::End) => break,
                    None => return Err(std::io::Error::other("the upload was abandoned")),
                };
                for chunk in batch {
                    hasher.update(&chunk);
                    gathered_len += chunk.len();
                    gathered.push(chunk);
                }
                if gathered_len >= WRITE_SIZE {
                    write_gathered(&mut file, &gathered)?;
                    unsynced += gathered_len as u64;
                    gathered.clear();
                    permits.clear();
                    gathered_len = 0;
                }
                if unsynced >= WRITE_BACK_EVERY {
                    let _ = ask.try_send(());
                    unsynced = 0;
                }
            }
            write_gathered(&mut file, &gathered)
        })();
        drop(ask);
        let synced = syncing
            .join()
            .map_err(|_| std::io::Error::other("the syncer panicked"))?;
        written?;
        synced?;
        file.sync_all()?;
        Ok(hex::encode(hasher.finalize()))
    })
}

/// Writes the chunks in order, in as few system calls as the kernel takes.
fn write_gathered(file: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        match file.write_vectored(remaining) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut remaining, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)
}
