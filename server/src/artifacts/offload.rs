//! Work on an upload's bytes done on blocking threads while the next bytes are received.
//!
//! Received, hashed and written in turn on the request's own thread, a 256 MiB upload went at
//! about a third of what the SHA-256 alone can do: the socket waited while a chunk was hashed and
//! the hash waited while it was written. Each [`Offload`] owns one job (the hash, the file) on a
//! blocking thread and takes the chunks through a short queue, so receiving, hashing and writing
//! overlap. The chunks are shared (`Bytes`), never copied between them; the queue's bound keeps
//! memory flat when the disk or the hash is slower than the network.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Chunks waiting for one job (the HTTP layer's chunks are at most a few tens of KiB).
const QUEUE: usize = 32;

/// A job over a stream of chunks, run on a blocking thread; `finish` answers its result.
pub struct Offload<T> {
    chunks: Option<mpsc::Sender<Bytes>>,
    done: JoinHandle<std::io::Result<T>>,
}

impl<T: Send + 'static> Offload<T> {
    /// Runs `each` on every chunk in order, then `end` on the state, on a blocking thread.
    pub fn start<S: Send + 'static>(
        mut state: S,
        mut each: impl FnMut(&mut S, &[u8]) -> std::io::Result<()> + Send + 'static,
        end: impl FnOnce(S) -> std::io::Result<T> + Send + 'static,
    ) -> Self {
        let (chunks, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = queue.blocking_recv() {
                each(&mut state, &chunk)?;
            }
            end(state)
        });
        Offload {
            chunks: Some(chunks),
            done,
        }
    }

    /// Hands over the next chunk, waiting while the queue is full. A job that failed answers its
    /// error here.
    pub async fn feed(&mut self, chunk: Bytes) -> Result<()> {
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The job stopped early, which only an error does.
        self.chunks = None;
        match (&mut self.done).await.map_err(Error::internal)? {
            Err(e) => Err(Error::internal(e)),
            Ok(_) => Err(Error::internal(anyhow::anyhow!(
                "an upload's background job ended before its last chunk"
            ))),
        }
    }

    /// Waits for the job to take every chunk and answers its result.
    pub async fn finish(mut self) -> Result<T> {
        self.chunks = None;
        self.done
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }
}

/// The SHA-256 of the chunks fed, as lowercase hex.
pub fn sha256() -> Offload<String> {
    Offload::start(
        Sha256::new(),
        |hasher, chunk| {
            hasher.update(chunk);
            Ok(())
        },
        |hasher| Ok(hex::encode(hasher.finalize())),
    )
}

/// The chunks fed written to `file` in order, then fsynced.
pub fn write_to(file: std::fs::File) -> Offload<()> {
    use std::io::Write as _;
    Offload::start(
        file,
        |file, chunk| file.write_all(chunk),
        |file| file.sync_all(),
    )
}
