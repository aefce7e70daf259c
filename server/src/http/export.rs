//! Audit exports, the audit public key, checkpoints, and compliance reports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{get, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing_actix_web::RequestId;

use super::error::ApiError;
use crate::audit::export::{self, ExportRequest, Exporter, Format};
use crate::audit::{checkpoints, report, rfc3339};
use crate::config::ExportLimitOptions;
use crate::db::SharedPool;
use crate::error::Error;
use crate::ids::ModelVersionId;
use crate::state::AppState;

/// Largest piece of an export handed to the connection at once: how far a client gets ahead of
/// the idle check (a client that takes no piece for the idle timeout is cut off).
const PIECE: usize = 64 << 10;

/// An export streams for as long as its client reads, holding a database connection all along.
/// So exports take connections from a pool of their own (one per running export, so the main
/// pool always serves health checks and the API), each user runs a bounded number at once, and a
/// client that stops reading is cut off after the idle timeout, giving its connection back.
#[derive(Clone)]
pub struct ExportLimits {
    pool: SharedPool,
    running: Arc<Semaphore>,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
    per_user_max: usize,
    idle_timeout: Duration,
}

impl ExportLimits {
    pub fn new(pool: SharedPool, options: &ExportLimitOptions) -> Self {
        ExportLimits {
            pool,
            running: Arc::new(Semaphore::new(options.export_pool_size)),
            per_user: Arc::default(),
            per_user_max: options.exports_per_user,
            idle_timeout: options.export_idle_timeout,
        }
    }

    /// A place for one more export of `user`, or why there is none.
    fn admit(&self, user: &str) -> Result<ExportPermit, ExportRefusal> {
        let global = self
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| ExportRefusal::ServerBusy)?;
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let mine = per_user.entry(user.to_owned()).or_default();
        if *mine >= self.per_user_max {
            return Err(ExportRefusal::UserBusy(self.per_user_max));
        }
        *mine += 1;
        Ok(ExportPermit {
            _global: global,
            user: user.to_owned(),
            per_user: self.per_user.clone(),
        })
    }
}

/// Why an export was not started.
enum ExportRefusal {
    /// Every export connection of this server is in use.
    ServerBusy,
    /// The user already runs this many.
    UserBusy(usize),
}

impl ExportRefusal {
    fn response(&self) -> HttpResponse {
        use actix_web::http::StatusCode;
        let (status, message) = match self {
            ExportRefusal::ServerBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many audit exports are running on this server; retry later".to_owned(),
            ),
            ExportRefusal::UserBusy(n) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("you already run {n} audit exports; wait until one ends"),
            ),
        };
        HttpResponse::build(status)
            .insert_header((header::RETRY_AFTER, "30"))
            .json(serde_json::json!({"error": {"code": "UNAVAILABLE", "message": message}}))
    }
}

/// One running export's place; given back when the export ends, however it ends.
struct ExportPermit {
    _global: OwnedSemaphorePermit,
    user: String,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for ExportPermit {
    fn drop(&mut self) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

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
    actor: Option<String>,
}

/// `GET /api/audit/export`: the log of a period as JSON Lines or CSV with the signed manifest
/// last. Validation and authorization answer errors as JSON before any byte of the export; the
/// entries then stream from a task that pages through the table, a bounded channel between them
/// (so a slow client holds the producer back instead of filling memory).
#[get("/api/audit/export")]
async fn export_log(
    state: web::Data<AppState>,
    limits: web::Data<ExportLimits>,
    http: HttpRequest,
    request_id: RequestId,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
    let permit = match limits.admit(&actor.email) {
        Ok(permit) => permit,
        Err(refusal) => return Ok(refusal.response()),
    };
    let q = query.into_inner();
    let format = Format::parse(q.format.as_deref().unwrap_or("jsonl")).map_err(Error::from)?;
    let request = ExportRequest::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        q.project.as_deref(),
        q.subject.as_deref(),
        q.action.as_deref(),
    )?
    .with_actor(q.actor.as_deref())?;
    let mut conn = limits.pool.get().await.map_err(Error::from)?;
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
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    let completed = Arc::new(AtomicBool::new(false));
    let finished = completed.clone();
    let idle_timeout = limits.idle_timeout;
    tokio::spawn(async move {
        // Held until the export ends: the connection (inside `exporter`) and the permit go back
        // together.
        let _permit = permit;
        loop {
            let mut chunk = match exporter.next_chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    finished.store(true, Ordering::Release);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = ?e, "audit export failed mid-stream; the file ends without its manifest");
                    let _ = tx
                        .send(Err(std::io::Error::other("the export failed")))
                        .await;
                    return;
                }
            };
            while !chunk.is_empty() {
                let piece = chunk.split_to(chunk.len().min(PIECE));
                match tokio::time::timeout(idle_timeout, tx.send(Ok(piece))).await {
                    Ok(Ok(())) => {}
                    // The client went away: stop reading the table.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!(
                            idle_timeout = ?idle_timeout,
                            "audit export cut off: its client read nothing for the idle timeout"
                        );
                        return;
                    }
                }
            }
        }
    });
    // An export that stops before its manifest ends with an error, so the connection is cut
    // rather than closed like a complete file.
    let body = futures_util::stream::unfold(Some(rx), move |rx| {
        let completed = completed.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(item) => Some((item, Some(rx))),
                None if completed.load(Ordering::Acquire) => None,
                None => Some((Err(std::io::Error::other("the export was cut off")), None)),
            }
        }
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
        body.push_str(
            &serde_json::json!({
                "checkpoint": cp.jws, "seq": cp.seq, "hash": cp.hash,
                "signed_at": rfc3339(cp.signed_at), "reason": cp.reason, "key_id": cp.key_id,
            })
            .to_string(),
        );
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
    let id: ModelVersionId = path
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
