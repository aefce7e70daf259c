//! Audit exports, the audit public key, checkpoints, and compliance reports.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tracing_actix_web::RequestId;
use uuid::Uuid;

use super::error::ApiError;
use crate::error::Error;
use crate::export::{self, checkpoints, report, ExportRequest, Exporter, Format};
use crate::graphql::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(export_log)
        .service(public_key)
        .service(list_checkpoints)
        .service(compliance_report);
}

#[derive(Deserialize)]
struct ExportQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    project: Option<String>,
    subject: Option<String>,
    action: Option<String>,
}

/// `GET /api/audit/export`: the log of a period as JSON Lines or CSV with the signed manifest
/// last. Validation and authorization answer errors as JSON before any byte of the export; the
/// entries then stream from a task that pages through the table, a bounded channel between them
/// (so a slow client holds the producer back instead of filling memory).
#[get("/api/audit/export")]
async fn export_log(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
    let q = query.into_inner();
    let format = Format::parse(q.format.as_deref().unwrap_or("jsonl"))?;
    let request = ExportRequest::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        q.project.as_deref(),
        q.subject.as_deref(),
        q.action.as_deref(),
    )?;
    let mut conn = state.pool.get().await.map_err(Error::from)?;
    let project = export::authorize_export(&mut conn, &actor, request.project.as_deref()).await?;
    let mut exporter = Exporter::begin(
        &mut conn,
        &state.audit,
        &actor,
        format,
        request,
        project.as_ref(),
        checkpoints::Reason::Export,
    )
    .await?;
    let (head_seq, _) = exporter.head();
    exporter.start(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
    tokio::spawn(async move {
        loop {
            let next = exporter.next_chunk().await;
            let item = match next {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = ?e, "audit export failed mid-stream; the file ends without its manifest");
                    Err(std::io::Error::other("the export failed"))
                }
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                // The client went away (or the export failed): stop reading the table.
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(export::file_name(format))],
        })
        .insert_header(("x-custody-audit-head-seq", head_seq.to_string()))
        .streaming(body))
}

#[derive(Deserialize)]
struct KeyQuery {
    format: Option<String>,
}

/// `GET /api/audit/public-key`: the key that verifies exports, manifests, checkpoints and
/// reports. JWK (JSON) by default; PEM with `?format=pem` or `Accept: application/x-pem-file`.
/// Public by nature, so served without a token: verifiers need no account.
#[get("/api/audit/public-key")]
async fn public_key(
    state: web::Data<AppState>,
    http: HttpRequest,
    query: web::Query<KeyQuery>,
) -> Result<HttpResponse, ApiError> {
    let accept = http
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pem = match query.format.as_deref() {
        Some("pem") => true,
        Some("jwk") => false,
        Some(other) => {
            return Err(
                Error::invalid(format!("format must be `jwk` or `pem`, not `{other}`")).into(),
            )
        }
        None => accept.contains("application/x-pem-file"),
    };
    let key = &state.audit.public;
    Ok(if pem {
        HttpResponse::Ok()
            .content_type("application/x-pem-file")
            .body(key.to_pem())
    } else {
        HttpResponse::Ok()
            .content_type("application/jwk+json")
            .body(key.to_jwk().to_string())
    })
}

#[derive(Deserialize)]
struct CheckpointQuery {
    after_seq: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/audit/checkpoints`: signed checkpoints in ascending seq, as JSON Lines
/// `{"checkpoint":"<JWS>","seq":…,"hash":…,"signed_at":…,"reason":…}` (the form
/// `audit verify --checkpoints` reads). Admins and auditors.
#[get("/api/audit/checkpoints")]
async fn list_checkpoints(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    query: web::Query<CheckpointQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
    let limit = query.limit.unwrap_or(1_000);
    if !(1..=10_000).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 10000").into());
    }
    let mut conn = state.pool.get().await.map_err(Error::from)?;
    if !actor.is_admin && !export::is_auditor(&mut conn, &actor).await? {
        return Err(Error::forbidden("checkpoints are for auditors and server admins").into());
    }
    let rows = checkpoints::list(&mut conn, query.after_seq, limit).await?;
    let mut body = String::new();
    for cp in rows {
        body.push_str(&serde_json::json!({
            "checkpoint": cp.jws, "seq": cp.seq, "hash": cp.hash,
            "signed_at": export::rfc3339(cp.signed_at), "reason": cp.reason, "key_id": cp.key_id,
        }).to_string());
        body.push('\n');
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .body(body))
}

#[derive(Deserialize)]
struct ReportQuery {
    format: Option<String>,
}

/// `GET /api/compliance/{modelVersionId}`: the signed report as JSON (`{"report", "signature"}`),
/// or the printable page with `?format=html` or a browser's `Accept: text/html`.
#[get("/api/compliance/{model_version_id}")]
async fn compliance_report(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    path: web::Path<String>,
    query: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
    let id: Uuid = path
        .parse()
        .map_err(|_| Error::invalid(format!("`{path}` is not a model version id")))?;
    let accept = http
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let html = match query.format.as_deref() {
        Some("html") => true,
        Some("json") => false,
        Some(other) => {
            return Err(
                Error::invalid(format!("format must be `json` or `html`, not `{other}`")).into(),
            )
        }
        None => accept.contains("text/html"),
    };
    let mut conn = state.pool.get().await.map_err(Error::from)?;
    let signed = report::build(&mut conn, &state.audit, &actor, id).await?;
    drop(conn);
    Ok(if html {
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(report::render_html(&signed)?)
    } else {
        HttpResponse::Ok().json(signed.to_json())
    })
}
