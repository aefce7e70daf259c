//! Artifact transfers and the audit export: streaming uploads (the SHA-256 computed first and sent
//! as `X-Custody-Sha256`), resumable direct multipart uploads for large files, and streaming
//! downloads that verify the digest (resuming with `Range` when a connection breaks).

use std::collections::BTreeMap;
use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::client::{http_error, Client};
use crate::error::{Error, ErrorCode, Result};
use crate::ops::ArtifactOwnerKind;

const SHA256_HEADER: &str = "x-custody-sha256";
const CHUNK: usize = 1 << 20;
/// Files at least this large go through the direct multipart upload.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;

/// Who an artifact belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Run(String),
    ModelVersion(String),
}

impl Owner {
    pub fn kind(&self) -> ArtifactOwnerKind {
        match self {
            Owner::Run(_) => ArtifactOwnerKind::Run,
            Owner::ModelVersion(_) => ArtifactOwnerKind::ModelVersion,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Owner::Run(id) | Owner::ModelVersion(id) => id,
        }
    }

    /// The `{owner_kind}` of `/api/artifacts/{owner_kind}/{owner_id}/{path}`.
    pub fn segment(&self) -> &'static str {
        match self {
            Owner::Run(_) => "run",
            Owner::ModelVersion(_) => "model-version",
        }
    }
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// What a transfer is doing, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Hashing,
    Uploading,
    Downloading,
    Exporting,
}

/// Receives progress of a transfer (bytes). Implementations must be cheap: `advance` is called
/// once per chunk.
pub trait Progress: Send + Sync {
    /// A phase begins; `total` bytes if known.
    fn start(&self, phase: Phase, total: Option<u64>);
    fn advance(&self, bytes: u64);
    /// Bytes counted by `advance` that will be sent again (a retried part).
    fn retreat(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _phase: Phase, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
}

/// Settings of uploads and downloads.
#[derive(Clone)]
pub struct TransferOptions {
    pub progress: Arc<dyn Progress>,
    /// Files at least this large use the direct multipart upload (default 64 MiB).
    pub multipart_threshold: u64,
    /// Where multipart uploads keep their state so that an interrupted upload resumes (skipping
    /// the parts already sent). `None`: no resuming across processes (failed parts are still
    /// retried).
    pub state_dir: Option<PathBuf>,
    /// Retries of a failed request (a part, a whole upload, a download) on transient errors.
    pub retries: u32,
    /// Parts in flight at once.
    pub concurrency: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            progress: Arc::new(NoProgress),
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            state_dir: None,
            retries: 4,
            concurrency: 4,
        }
    }
}

impl std::fmt::Debug for TransferOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferOptions")
            .field("multipart_threshold", &self.multipart_threshold)
            .field("state_dir", &self.state_dir)
            .field("retries", &self.retries)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// What `audit_export` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditExport {
    pub file: PathBuf,
    pub bytes: u64,
    /// SHA-256 of the file as written.
    pub sha256: String,
    /// The last audit `seq` the export covers (`X-Custody-Audit-Head-Seq`), when the server says.
    pub head_seq: Option<i64>,
    pub content_type: Option<String>,
}

/// Percent-encodes an artifact path for a URL: every byte but unreserved characters and `/`.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks an artifact path as the server does (relative, UTF-8, at most 1,024 bytes, no `.`,
/// `..` or empty segments, no backslashes or control characters), before anything is sent: URL
/// normalisation would otherwise turn `a/../b` into another path silently.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("the artifact path `{path}` {why}")));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > 1024 {
        return bad("is longer than 1,024 bytes");
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return bad("holds a backslash or a control character");
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad(
            "must be relative, without `.`, `..` or empty segments (like model/weights.bin)",
        );
    }
    Ok(())
}

/// SHA-256 (hex) and size of a file, read 1 MiB at a time on a blocking thread.
pub(crate) async fn hash_file(file: &Path, progress: Arc<dyn Progress>) -> Result<(String, u64)> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        let total = f.metadata().map_err(|e| Error::io(&file, e))?.len();
        progress.start(Phase::Hashing, Some(total));
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&file, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            progress.advance(n as u64);
        }
        progress.finish();
        Ok((hex::encode(hasher.finalize()), size))
    })
    .await
    .map_err(|e| Error::Protocol(format!("the hashing thread failed: {e}")))?
}

/// A request body of `len` bytes of `file` from `offset`, counted into `progress` and `sent`.
async fn file_body(
    file: &Path,
    offset: u64,
    len: u64,
    progress: Arc<dyn Progress>,
    sent: Arc<AtomicU64>,
) -> Result<reqwest::Body> {
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Error::io(file, e))?;
    if offset > 0 {
        f.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| Error::io(file, e))?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 << 10).inspect_ok(
        move |chunk| {
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            progress.advance(chunk.len() as u64);
        },
    );
    Ok(reqwest::Body::wrap_stream(stream))
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(6))
}

#[derive(Serialize, Deserialize, Clone)]
struct UploadState {
    owner_kind: String,
    owner_id: String,
    path: String,
    sha256: String,
    size: u64,
    upload_id: String,
    part_size: u64,
    expires_at: String,
    /// Part number → URL.
    urls: BTreeMap<i64, String>,
    /// Part number → ETag of the parts already stored.
    done: BTreeMap<i64, String>,
}

fn state_file(dir: &Path, owner: &Owner, path: &str, sha256: &str, size: u64) -> PathBuf {
    let key = Sha256::digest(
        format!(
            "{}\n{}\n{path}\n{sha256}\n{size}",
            owner.segment(),
            owner.id()
        )
        .as_bytes(),
    );
    dir.join(format!("upload-{}.json", &hex::encode(key)[..32]))
}

fn save_state(file: &Path, state: &UploadState) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).expect("JSON"))
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| Error::io(file, e))
}

fn load_state(file: &Path) -> Option<UploadState> {
    let text = std::fs::read(file).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Still usable for at least ten minutes?
fn fresh(expires_at: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(expires_at)
        .map(|t| t.with_timezone(&chrono::Utc) > chrono::Utc::now() + chrono::Duration::minutes(10))
        .unwrap_or(false)
}

impl Client {
    fn artifact_url(&self, owner: &Owner, path: &str) -> Result<String> {
        check_path(path)?;
        if owner.id().is_empty() || owner.id().contains(['/', '.']) {
            return Err(Error::Invalid(format!(
                "`{}` is not a {} id",
                owner.id(),
                owner.segment()
            )));
        }
        Ok(self.endpoint(&format!(
            "/api/artifacts/{}/{}/{}",
            owner.segment(),
            encode_path(owner.id()),
            encode_path(path)
        )))
    }

    /// Uploads `file` as `path` of `owner` (model versions are immutable: upload to the run).
    /// The SHA-256 is computed first and sent, so the server refuses corrupted bytes; files of
    /// `multipart_threshold` bytes or more go through `createArtifactUpload` → part PUTs →
    /// `completeArtifactUpload`, resuming from `state_dir` if an earlier attempt was interrupted.
    pub async fn upload_artifact(
        &self,
        owner: &Owner,
        path: &str,
        file: &Path,
        options: &TransferOptions,
    ) -> Result<Artifact> {
        check_path(path)?;
        let meta = std::fs::metadata(file).map_err(|e| Error::io(file, e))?;
        if !meta.is_file() {
            return Err(Error::Invalid(format!("{} is not a file", file.display())));
        }
        let (sha256, size) = hash_file(file, options.progress.clone()).await?;
        if size >= options.multipart_threshold && size > 0 {
            self.upload_multipart(owner, path, file, &sha256, size, options)
                .await
        } else {
            self.upload_whole(owner, path, file, &sha256, size, options)
                .await
        }
    }

    async fn upload_whole(
        &self,
        owner: &Owner,
        path: &str,
        file: &Path,
        sha256: &str,
        size: u64,
        options: &TransferOptions,
    ) -> Result<Artifact> {
        let url = self.artifact_url(owner, path)?;
        let mut attempt = 0;
        loop {
            options.progress.start(Phase::Uploading, Some(size));
            let sent = Arc::new(AtomicU64::new(0));
            let body = file_body(file, 0, size, options.progress.clone(), sent).await?;
            let request = self
                .authorized(self.http.put(&url))
                .header(SHA256_HEADER, sha256)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body);
            let err = match request.send().await {
                Err(e) => self.transport(e),
                Ok(response) if response.status().is_success() => {
                    let text = response.text().await.map_err(|e| self.transport(e))?;
                    let artifact: Artifact = serde_json::from_str(&text).map_err(|e| {
                        Error::Protocol(format!(
                            "the upload answer is not {{path, sha256, size}}: {e}"
                        ))
                    })?;
                    options.progress.finish();
                    return Ok(artifact);
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    http_error(status, &response.text().await.unwrap_or_default())
                }
            };
            if !err.is_transient() || attempt >= options.retries {
                options.progress.finish();
                return Err(err);
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn upload_multipart(
        &self,
        owner: &Owner,
        path: &str,
        file: &Path,
        sha256: &str,
        size: u64,
        options: &TransferOptions,
    ) -> Result<Artifact> {
        let state_path = options
            .state_dir
            .as_deref()
            .map(|d| state_file(d, owner, path, sha256, size));
        // One restart from scratch is allowed when a resumed upload turns out to be gone.
        for fresh_start in [false, true] {
            let resumed = match (&state_path, fresh_start) {
                (Some(p), false) => load_state(p).filter(|s| {
                    s.sha256 == sha256
                        && s.size == size
                        && s.path == path
                        && s.owner_id == owner.id()
                        && s.owner_kind == owner.segment()
                        && fresh(&s.expires_at)
                }),
                _ => None,
            };
            let was_resumed = resumed.is_some();
            let state = match resumed {
                Some(s) => s,
                None => {
                    let upload = self
                        .create_artifact_upload(owner, path, sha256, size)
                        .await?;
                    let state = UploadState {
                        owner_kind: owner.segment().into(),
                        owner_id: owner.id().into(),
                        path: path.into(),
                        sha256: sha256.into(),
                        size,
                        upload_id: upload.id,
                        part_size: u64::try_from(upload.part_size)
                            .map_err(|_| Error::Protocol("a negative part size".into()))?,
                        expires_at: upload.expires_at,
                        urls: upload
                            .parts
                            .into_iter()
                            .map(|p| (p.part_number, p.url))
                            .collect(),
                        done: BTreeMap::new(),
                    };
                    if let Some(p) = &state_path {
                        save_state(p, &state)?;
                    }
                    state
                }
            };
            match self
                .send_parts(file, state, state_path.as_deref(), options)
                .await
            {
                Ok(artifact) => {
                    if let Some(p) = &state_path {
                        let _ = std::fs::remove_file(p);
                    }
                    return Ok(artifact);
                }
                Err(e) => {
                    let gone = e.is(ErrorCode::NotFound) || e.is(ErrorCode::Forbidden);
                    let changed = e.is(ErrorCode::InvalidInput);
                    if let Some(p) = &state_path {
                        if gone || changed {
                            let _ = std::fs::remove_file(p);
                        }
                    }
                    if was_resumed && gone && !fresh_start {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        unreachable!("the loop returns")
    }

    async fn send_parts(
        &self,
        file: &Path,
        state: UploadState,
        state_path: Option<&Path>,
        options: &TransferOptions,
    ) -> Result<Artifact> {
        let size = state.size;
        let part_size = state.part_size.max(1);
        let progress = options.progress.clone();
        progress.start(Phase::Uploading, Some(size));
        let part_len = |n: i64| {
            let offset = (n as u64 - 1) * part_size;
            (offset, part_size.min(size.saturating_sub(offset)))
        };
        let already: u64 = state.done.keys().map(|n| part_len(*n).1).sum();
        progress.advance(already);
        let todo: Vec<(i64, String)> = state
            .urls
            .iter()
            .filter(|(n, _)| !state.done.contains_key(n))
            .map(|(n, u)| (*n, u.clone()))
            .collect();
        let shared = Arc::new(Mutex::new(state));
        let results = futures_util::stream::iter(todo)
            .map(|(n, url)| {
                let shared = shared.clone();
                let progress = progress.clone();
                async move {
                    let (offset, len) = part_len(n);
                    let etag = self
                        .put_part(file, &url, offset, len, progress, options.retries)
                        .await?;
                    let snapshot = {
                        let mut s = shared.lock().expect("upload state");
                        s.done.insert(n, etag);
                        s.clone()
                    };
                    if let Some(p) = state_path {
                        save_state(p, &snapshot)?;
                    }
                    Ok::<_, Error>(())
                }
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        progress.finish();
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let state = shared.lock().expect("upload state").clone();
        let parts: Vec<(i64, String)> = state.done.into_iter().collect();
        self.complete_artifact_upload(&state.upload_id, &parts)
            .await
    }

    /// PUTs one part (no bearer token: the URL is signed), retrying transient failures.
    async fn put_part(
        &self,
        file: &Path,
        url: &str,
        offset: u64,
        len: u64,
        progress: Arc<dyn Progress>,
        retries: u32,
    ) -> Result<String> {
        let mut attempt = 0;
        loop {
            let sent = Arc::new(AtomicU64::new(0));
            let body = file_body(file, offset, len, progress.clone(), sent.clone()).await?;
            let result = self
                .http
                .put(url)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await;
            let err = match result {
                Ok(response) if response.status().is_success() => {
                    return response
                        .headers()
                        .get(reqwest::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .ok_or_else(|| Error::Protocol("a part upload answered no ETag".into()));
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    http_error(status, &response.text().await.unwrap_or_default())
                }
                Err(e) => self.transport(e),
            };
            progress.retreat(sent.load(Ordering::Relaxed));
            if !err.is_transient() || attempt >= retries {
                return Err(err);
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Downloads `path` of `owner` into `dest` (through `<dest>.part`, renamed when complete),
    /// verifying the SHA-256 the server announces; a broken connection resumes with `Range`.
    pub async fn download_artifact(
        &self,
        owner: &Owner,
        path: &str,
        dest: &Path,
        options: &TransferOptions,
    ) -> Result<Artifact> {
        let url = self.artifact_url(owner, path)?;
        let response = self.get_ok(&url, None).await?;
        let expected = response
            .headers()
            .get(SHA256_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol("the download answered no X-Custody-Sha256".into()))?;
        let total = response.content_length();
        let tmp = partial_path(dest);
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io(&tmp, e))?;
        options.progress.start(Phase::Downloading, total);
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut response = response;
        let mut attempt = 0;
        let outcome: Result<()> = async {
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        hasher.update(&chunk);
                        out.write_all(&chunk)
                            .await
                            .map_err(|e| Error::io(&tmp, e))?;
                        written += chunk.len() as u64;
                        options.progress.advance(chunk.len() as u64);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if attempt >= options.retries || total.is_some_and(|t| written >= t) {
                            return Err(self.transport(e));
                        }
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        response = self.get_ok(&url, Some(written)).await?;
                        let same = response
                            .headers()
                            .get(SHA256_HEADER)
                            .and_then(|v| v.to_str().ok())
                            == Some(&expected);
                        if response.status().as_u16() != 206 || !same {
                            return Err(Error::Protocol(
                                "the server could not resume the download".into(),
                            ));
                        }
                    }
                }
            }
            out.flush().await.map_err(|e| Error::io(&tmp, e))?;
            out.sync_all().await.map_err(|e| Error::io(&tmp, e))?;
            Ok(())
        }
        .await;
        options.progress.finish();
        if let Err(e) = outcome {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Error::Integrity {
                what: format!("{} of {} {}", path, owner.segment(), owner.id()),
                expected,
                actual,
            });
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| Error::io(dest, e))?;
        Ok(Artifact {
            path: path.into(),
            sha256: actual,
            size: written as i64,
        })
    }

    async fn get_ok(&self, url: &str, from: Option<u64>) -> Result<reqwest::Response> {
        let mut request = self.authorized(self.http.get(url));
        if let Some(from) = from {
            request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status().as_u16();
            Err(http_error(
                status,
                &response.text().await.unwrap_or_default(),
            ))
        }
    }

    /// `GET /api/audit/export`: streams the signed audit export of a period into `dest`.
    /// `query` holds the route's parameters (`from`, `to`, `format`, `project`, …).
    pub async fn audit_export(
        &self,
        query: &[(&str, String)],
        dest: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<AuditExport> {
        let response = self
            .authorized(self.http.get(self.endpoint("/api/audit/export")))
            .query(query)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(http_error(
                status,
                &response.text().await.unwrap_or_default(),
            ));
        }
        let head_seq = response
            .headers()
            .get("x-custody-audit-head-seq")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let tmp = partial_path(dest);
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io(&tmp, e))?;
        progress.start(Phase::Exporting, response.content_length());
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut stream = response.bytes_stream();
        let outcome: Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.transport(e))?;
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io(&tmp, e))?;
                bytes += chunk.len() as u64;
                progress.advance(chunk.len() as u64);
            }
            out.flush().await.map_err(|e| Error::io(&tmp, e))?;
            Ok(())
        }
        .await;
        progress.finish();
        if let Err(e) = outcome {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| Error::io(dest, e))?;
        Ok(AuditExport {
            file: dest.to_path_buf(),
            bytes,
            sha256: hex::encode(hasher.finalize()),
            head_seq,
            content_type,
        })
    }
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "download".into());
    name.push(".part");
    dest.with_file_name(name)
}
