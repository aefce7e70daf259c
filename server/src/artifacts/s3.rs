//! Any S3-compatible service: multipart uploads of `part_size` parts with a SHA-256 per part,
//! presigned URLs for direct transfers.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::store::{check_size, object_key, staging_key, ByteRange, ByteStreamBox, Staged};
use crate::error::{Error, Result};
use crate::ids::UploadId;

#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    pub(super) bucket: String,
    pub(super) prefix: String,
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

    pub(super) fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub(super) async fn stage<S>(
        &self,
        upload_id: UploadId,
        mut body: S,
        max_size: u64,
    ) -> Result<Staged>
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
    pub(super) async fn create_multipart(&self, key: &str, with_checksums: bool) -> Result<String> {
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

    pub(super) async fn upload_part(
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

    pub(super) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<()> {
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

    pub(super) async fn abort(&self, key: &str, upload_id: &str) {
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

    pub(super) async fn exists(&self, key: &str) -> Result<bool> {
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

    pub(super) async fn delete(&self, key: &str) -> Result<()> {
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

    pub(super) async fn place(&self, staged: &Staged) -> Result<()> {
        let staging = self.key(&staging_key(staged.upload_id));
        let target = self.key(&object_key(&staged.sha256));
        if !self.exists(&target).await? {
            self.copy(&staging, &target, staged.size).await?;
        }
        self.delete(&staging).await
    }

    /// Server-side copy: one CopyObject up to 5 GiB, UploadPartCopy ranges beyond.
    pub(super) async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
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

    pub(super) async fn discard(&self, upload_id: UploadId) -> anyhow::Result<()> {
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

    pub(super) async fn open(
        &self,
        sha256: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStreamBox> {
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

    pub(super) async fn presign_parts(
        &self,
        upload_id: UploadId,
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

    pub(super) async fn complete_parts(
        &self,
        upload_id: UploadId,
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

    pub(super) async fn presign_download(&self, sha256: &str, ttl: Duration) -> Result<String> {
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
