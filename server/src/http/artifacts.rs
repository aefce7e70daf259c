//! Artifact streaming: upload (PUT), download (GET, with Range), and the server's own URLs for
//! direct uploads and downloads when the store is a local directory.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, put, web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;
use tracing_actix_web::RequestId;

use super::error::ApiError;
use crate::artifacts::{self, ArtifactFile, ByteRange, Owner};
use crate::error::Error;
use crate::ids::UploadId;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(download_by_link)
        .service(upload_part)
        .service(upload)
        .service(download);
}

const SHA256_HEADER: &str = "x-custody-sha256";

/// The `{path...}` of `/api/artifacts/{owner_kind}/{owner_id}/{path...}`, percent-decoded from the
/// raw request target. The router's own decoding is lossy (bytes that are not UTF-8 become U+FFFD),
/// which would store a name other than the one sent instead of refusing it.
fn artifact_path(http: &HttpRequest) -> Result<String, Error> {
    let raw = http.uri().path().splitn(6, '/').nth(5).unwrap_or_default();
    percent_decode(raw)
}

/// Percent-decodes a raw path strictly: an escape becomes its byte, a `%` that does not start
/// one stays as it is, and the result must be UTF-8 (refused otherwise, never replaced).
pub(crate) fn percent_decode(raw: &str) -> Result<String, Error> {
    let raw = raw.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = raw[i] == b'%'
            && raw.len() > i + 2
            && raw[i + 1].is_ascii_hexdigit()
            && raw[i + 2].is_ascii_hexdigit();
        if escaped {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3]).expect("ASCII hex digits");
            bytes.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).map_err(|_| Error::invalid("the artifact path is not UTF-8"))
}

fn io_stream(
    payload: web::Payload,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin {
    payload.map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())))
}

#[put("/api/artifacts/{owner_kind}/{owner_id}/{path:.+}")]
async fn upload(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    target: web::Path<(String, String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
    actor.require_writer()?;
    let (kind, id, _) = target.into_inner();
    let owner = Owner::parse(&kind, &id)?;
    let path = artifact_path(&http)?;
    let claimed = match http.headers().get(SHA256_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Error::invalid("X-Custody-Sha256 must be 64 hex characters"))?
                .to_owned(),
        ),
        None => None,
    };
    let file = artifacts::upload(
        &state.pool,
        &state.artifacts,
        &actor,
        owner,
        &path,
        io_stream(payload),
        claimed.as_deref(),
    )
    .await?;
    Ok(HttpResponse::Created().json(file))
}

#[get("/api/artifacts/{owner_kind}/{owner_id}/{path:.+}")]
async fn download(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    target: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
    let (kind, id, _) = target.into_inner();
    let owner = Owner::parse(&kind, &id)?;
    let path = artifact_path(&http)?;
    let mut conn = state.pool.get().await.map_err(Error::from)?;
    let file = artifacts::find(&mut conn, &actor, owner, &path).await?;
    drop(conn);
    stream_file(&state, &http, &file, None).await
}

#[derive(Deserialize)]
struct PartQuery {
    token: String,
}

/// One part of a direct upload to the local store; the link's token authorises it.
#[put("/api/uploads/{upload_id}/parts/{part}")]
async fn upload_part(
    state: web::Data<AppState>,
    target: web::Path<(UploadId, u32)>,
    query: web::Query<PartQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (upload_id, part) = target.into_inner();
    let mut conn = state.pool.get().await.map_err(Error::from)?;
    artifacts::check_part_token(&mut conn, &state.keys, upload_id, part, &query.token).await?;
    drop(conn);
    let etag = state
        .artifacts
        .store
        .write_local_part(
            upload_id,
            part,
            io_stream(payload),
            state.artifacts.part_size,
        )
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{etag}\"")))
        .finish())
}

/// A download link handed out by `artifactDownloadUrl` for the local store.
#[get("/api/artifacts/download/{token}")]
async fn download_by_link(
    state: web::Data<AppState>,
    http: HttpRequest,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let claims = artifacts::check_download_token(&state.keys, &token)?;
    let file = ArtifactFile {
        path: claims.name.clone(),
        sha256: claims.sha256,
        size: claims.size,
    };
    stream_file(&state, &http, &file, Some(&claims.name)).await
}

/// Streams a stored file as the answer, honouring `Range` (206 with `Content-Range`).
pub(crate) async fn stream_file(
    state: &AppState,
    http: &HttpRequest,
    file: &ArtifactFile,
    attachment_name: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let size = file.size as u64;
    let range = match http.headers().get(header::RANGE) {
        Some(value) => match parse_range(value, size) {
            Ok(range) => range,
            Err(()) => {
                return Ok(HttpResponse::RangeNotSatisfiable()
                    .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                    .finish());
            }
        },
        None => None,
    };
    let body = state.artifacts.store.open(&file.sha256, range).await?;
    let mut response = match range {
        Some(r) => {
            let mut builder = HttpResponse::PartialContent();
            builder.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end),
            ));
            builder
        }
        None => HttpResponse::Ok(),
    };
    response
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, format!("\"{}\"", file.sha256)))
        .insert_header((SHA256_HEADER, file.sha256.as_str()));
    if let Some(name) = attachment_name {
        if let Ok(value) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            name.replace('"', "")
        )) {
            response.insert_header((header::CONTENT_DISPOSITION, value));
        }
    }
    let length = range.map(|r| r.end - r.start + 1).unwrap_or(size);
    Ok(response.no_chunking(length).streaming(body))
}

/// Parses one `bytes=` range (`a-b`, `a-`, `-n`) against the object size. `Ok(None)` means
/// "send it whole" (a header we do not serve, such as several ranges), `Err` is unsatisfiable.
fn parse_range(value: &HeaderValue, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = match (start.is_empty(), end.is_empty()) {
        (true, false) => {
            let n: u64 = end.parse().map_err(|_| ())?;
            if n == 0 || size == 0 {
                return Err(());
            }
            ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }
        }
        (false, _) => {
            let start: u64 = start.parse().map_err(|_| ())?;
            let end: u64 = if end.is_empty() {
                size.saturating_sub(1)
            } else {
                end.parse().map_err(|_| ())?
            };
            if start >= size || end < start {
                return Err(());
            }
            ByteRange {
                start,
                end: end.min(size - 1),
            }
        }
        (true, true) => return Ok(None),
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(spec: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        parse_range(&HeaderValue::from_str(spec).unwrap(), size)
            .map(|r| r.map(|r| (r.start, r.end)))
    }

    #[test]
    fn paths_are_decoded_strictly() {
        let path = |uri: &str| {
            artifact_path(&actix_web::test::TestRequest::with_uri(uri).to_http_request())
        };
        assert_eq!(
            path("/api/artifacts/run/id/a/b%2Fc%2e%25+%C3%A9").unwrap(),
            "a/b/c.%+é"
        );
        assert_eq!(
            path("/api/artifacts/run/id//etc/passwd").unwrap(),
            "/etc/passwd"
        );
        assert_eq!(path("/api/artifacts/run/id/50%").unwrap(), "50%");
        assert!(path("/api/artifacts/run/id/a%FFb").is_err());
        assert!(path("/api/artifacts/run/id/%C0%AE%C0%AE/x").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=5-1", 100), Err(()));
        assert_eq!(range("bytes=0-1,4-5", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
        assert_eq!(range("bytes=0-0", 0), Err(()));
    }
}
