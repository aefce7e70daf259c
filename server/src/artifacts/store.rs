//! Where artifact bytes live: one interface, two stores (a local directory, the embedded default,
//! and any S3-compatible service). Objects are content addressed: `sha256/ab/cd/<hex digest>`.
//!
//! Every upload first lands under a staging key while its SHA-256 is computed on the fly; once the
//! digest is known and checked, `place` moves it to its content address (or drops it when those
//! bytes are already stored). Nothing is ever held whole in memory: the local store writes
//! through a buffer, the S3 store sends parts of `part_size` bytes (multipart upload).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::error::{Error, Result};

pub type ByteStreamBox = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// An upload whose bytes are durable under a staging key, with what was measured.
#[derive(Debug, Clone)]
pub struct Staged {
    pub upload_id: Uuid,
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

fn staging_key(upload_id: Uuid) -> String {
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
        upload_id: Uuid,
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
    pub async fn discard(&self, upload_id: Uuid) {
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
    pub async fn abort_direct(&self, upload_id: Uuid, store_upload_id: &str) {
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
        upload_id: Uuid,
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
        upload_id: Uuid,
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
        upload_id: Uuid,
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
fn check_size(size: u64, max_size: u64) -> Result<()> {
    if size > max_size {
        Err(Error::TooLarge(format!(
            "the artifact is larger than the maximum of {max_size} bytes"
        )))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Local directory

#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
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

    fn staging_path(&self, upload_id: Uuid) -> PathBuf {
        self.root.join(staging_key(upload_id))
    }

    fn parts_dir(&self, upload_id: Uuid) -> PathBuf {
        self.root.join("uploads").join(upload_id.to_string())
    }

    async fn stage<S>(&self, upload_id: Uuid, body: S, max_size: u64) -> Result<Staged>
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

    async fn place(&self, staged: &Staged) -> Result<()> {
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

    async fn discard(&self, upload_id: Uuid) -> anyhow::Result<()> {
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

    async fn open(&self, sha256: &str, range: Option<ByteRange>) -> Result<ByteStreamBox> {
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

    async fn write_part<S>(
        &self,
        upload_id: Uuid,
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

    async fn complete_parts(&self, upload_id: Uuid, parts: u32) -> Result<Staged> {
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

/// Writes a stream to `path` through SHA-256 and fsyncs it; answers (hex digest, size).
async fn write_hashed<S>(path: &Path, mut body: S, max_size: u64) -> Result<(String, u64)>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let file = tokio::fs::File::create(path)
        .await
        .map_err(Error::internal)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::invalid(format!("reading the upload failed: {e}")))?;
        size += chunk.len() as u64;
        check_size(size, max_size)?;
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(Error::internal)?;
    }
    out.flush().await.map_err(Error::internal)?;
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

// ---------------------------------------------------------------------------------------------
// S3-compatible object storage

#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    part_size: usize,
}

pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub path_style: bool,
    pub part_size: usize,
}

impl S3Store {
    pub fn new(settings: S3Settings) -> Self {
        use aws_sdk_s3::config::{
            Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new(settings.region))
            .http_client(http)
            .force_path_style(settings.path_style)
            // Our own SHA-256 is sent where it matters; default CRC checksums upset some
            // S3-compatible stores and presigned uploads.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let (Some(id), Some(secret)) = (settings.access_key_id, settings.secret_access_key) {
            config =
                config.credentials_provider(Credentials::new(id, secret, None, None, "custody"));
        }
        if let Some(endpoint) = settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        S3Store {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: settings.bucket,
            prefix: settings.prefix.trim_matches('/').to_owned(),
            part_size: settings.part_size,
        }
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    async fn stage<S>(&self, upload_id: Uuid, mut body: S, max_size: u64) -> Result<Staged>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let key = self.key(&staging_key(upload_id));
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buffer = BytesMut::with_capacity(self.part_size);
        let mut multipart: Option<(String, Vec<CompletedPart>)> = None;
        let result: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| Error::invalid(format!("reading the upload failed: {e}")))?;
                size += chunk.len() as u64;
                check_size(size, max_size)?;
                hasher.update(&chunk);
                buffer.extend_from_slice(&chunk);
                while buffer.len() >= self.part_size {
                    let part = buffer.split_to(self.part_size).freeze();
                    if multipart.is_none() {
                        multipart = Some((self.create_multipart(&key, true).await?, Vec::new()));
                    }
                    let (id, parts) = multipart.as_mut().expect("just created");
                    let n = parts.len() as i32 + 1;
                    parts.push(self.upload_part(&key, id, n, part).await?);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            if let Some((id, _)) = &multipart {
                self.abort(&key, id).await;
            }
            return Err(e);
        }
        match multipart {
            None => {
                let part = buffer.freeze();
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .checksum_sha256(b64_sha256(&part))
                    .body(ByteStream::from(part))
                    .send()
                    .await
                    .context("S3 PutObject")
                    .map_err(Error::internal)?;
            }
            Some((id, mut parts)) => {
                if !buffer.is_empty() {
                    let n = parts.len() as i32 + 1;
                    match self.upload_part(&key, &id, n, buffer.freeze()).await {
                        Ok(p) => parts.push(p),
                        Err(e) => {
                            self.abort(&key, &id).await;
                            return Err(e);
                        }
                    }
                }
                if let Err(e) = self.complete(&key, &id, parts).await {
                    self.abort(&key, &id).await;
                    return Err(e);
                }
            }
        }
        Ok(Staged {
            upload_id,
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    /// Starts a multipart upload; `with_checksums` makes every part carry its SHA-256 (parts the
    /// server sends), presigned parts sent by clients carry none.
    async fn create_multipart(&self, key: &str, with_checksums: bool) -> Result<String> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        if with_checksums {
            request = request.checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        let out = request
            .send()
            .await
            .context("S3 CreateMultipartUpload")
            .map_err(Error::internal)?;
        out.upload_id
            .ok_or_else(|| Error::internal(anyhow::anyhow!("S3 answered no upload id")))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        n: i32,
        part: Bytes,
    ) -> Result<CompletedPart> {
        let checksum = b64_sha256(&part);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(n)
            .checksum_sha256(&checksum)
            .body(ByteStream::from(part))
            .send()
            .await
            .context("S3 UploadPart")
            .map_err(Error::internal)?;
        Ok(CompletedPart::builder()
            .part_number(n)
            .set_e_tag(out.e_tag)
            .checksum_sha256(checksum)
            .build())
    }

    async fn complete(&self, key: &str, upload_id: &str, parts: Vec<CompletedPart>) -> Result<()> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .context("S3 CompleteMultipartUpload")
            .map_err(Error::internal)?;
        Ok(())
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(s3.key = key, error = ?e, "could not abort a multipart upload");
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(Error::internal(
                anyhow::Error::new(e).context("S3 HeadObject"),
            )),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .context("S3 DeleteObject")
            .map_err(Error::internal)?;
        Ok(())
    }

    async fn place(&self, staged: &Staged) -> Result<()> {
        let staging = self.key(&staging_key(staged.upload_id));
        let target = self.key(&object_key(&staged.sha256));
        if !self.exists(&target).await? {
            self.copy(&staging, &target, staged.size).await?;
        }
        self.delete(&staging).await
    }

    /// Server-side copy: one CopyObject up to 5 GiB, UploadPartCopy ranges beyond.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        const SINGLE_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
        let source = format!("{}/{}", self.bucket, from);
        if size <= SINGLE_COPY_LIMIT {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source)
                .send()
                .await
                .context("S3 CopyObject")
                .map_err(Error::internal)?;
            return Ok(());
        }
        let id = self.create_multipart(to, true).await?;
        let chunk = 1024 * 1024 * 1024u64;
        let mut parts = Vec::new();
        let mut start = 0u64;
        while start < size {
            let end = (start + chunk).min(size) - 1;
            let n = parts.len() as i32 + 1;
            let out = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&id)
                .part_number(n)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await;
            match out {
                Ok(out) => {
                    let result = out.copy_part_result;
                    parts.push(
                        CompletedPart::builder()
                            .part_number(n)
                            .set_e_tag(result.as_ref().and_then(|r| r.e_tag.clone()))
                            .set_checksum_sha256(result.and_then(|r| r.checksum_sha256))
                            .build(),
                    );
                }
                Err(e) => {
                    self.abort(to, &id).await;
                    return Err(Error::internal(
                        anyhow::Error::new(e).context("S3 UploadPartCopy"),
                    ));
                }
            }
            start = end + 1;
        }
        if let Err(e) = self.complete(to, &id, parts).await {
            self.abort(to, &id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn discard(&self, upload_id: Uuid) -> anyhow::Result<()> {
        let key = self.key(&staging_key(upload_id));
        // Unfinished multipart uploads of this key hold parts that are not objects yet.
        let uploads = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&key)
            .send()
            .await;
        if let Ok(list) = uploads {
            for upload in list.uploads() {
                if let (Some(k), Some(id)) = (upload.key(), upload.upload_id()) {
                    self.abort(k, id).await;
                }
            }
        }
        self.delete(&key)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    }

    async fn open(&self, sha256: &str, range: Option<ByteRange>) -> Result<ByteStreamBox> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(&object_key(sha256)));
        if let Some(r) = range {
            request = request.range(format!("bytes={}-{}", r.start, r.end));
        }
        let out = request
            .send()
            .await
            .context("S3 GetObject")
            .map_err(Error::internal)?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            out.body.into_async_read(),
            256 * 1024,
        )))
    }

    async fn presign_parts(
        &self,
        upload_id: Uuid,
        parts: u32,
        ttl: Duration,
    ) -> Result<(String, Vec<String>)> {
        let key = self.key(&staging_key(upload_id));
        // Presigned parts carry no checksum: the server reads the object back at completion.
        let s3_id = self.create_multipart(&key, false).await?;
        let presigning = PresigningConfig::expires_in(ttl).map_err(Error::internal)?;
        let mut urls = Vec::with_capacity(parts as usize);
        for n in 1..=parts {
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&s3_id)
                .part_number(n as i32)
                .presigned(presigning.clone())
                .await
                .map_err(Error::internal)?;
            urls.push(request.uri().to_owned());
        }
        Ok((s3_id, urls))
    }

    async fn complete_parts(
        &self,
        upload_id: Uuid,
        s3_upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<Staged> {
        let key = self.key(&staging_key(upload_id));
        let completed = parts
            .iter()
            .map(|(n, etag)| {
                CompletedPart::builder()
                    .part_number(*n as i32)
                    .e_tag(etag)
                    .build()
            })
            .collect();
        self.complete(&key, s3_upload_id, completed)
            .await
            .map_err(|_| {
                Error::invalid(
                    "the store refused to complete the upload: check the parts and their ETags",
                )
            })?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .context("S3 GetObject")
            .map_err(Error::internal)?;
        let mut stream =
            tokio_util::io::ReaderStream::with_capacity(out.body.into_async_read(), 1 << 20);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::internal)?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Staged {
            upload_id,
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    async fn presign_download(&self, sha256: &str, ttl: Duration) -> Result<String> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(Error::internal)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(&object_key(sha256)))
            .presigned(presigning)
            .await
            .map_err(Error::internal)?;
        Ok(request.uri().to_owned())
    }
}

fn b64_sha256(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(Sha256::digest(bytes))
}
