//! `GET /api/runs/{run_id}/metrics[?key=K]`: a run's whole metric history (all keys, or one),
//! streamed as JSON lines `{"key","value","step","timestamp"}` in key, step and time order.
//!
//! The bulk read the SDKs use (`Client.run_metrics`): charts take the downsampled
//! `metricHistory`, a page of points `Run.metrics`, and a copy of everything this. It reads the
//! history in keyset pages of [`PAGE`] points, taking a pooled connection per page (never
//! holding one while the client reads), so a million-point history streams in constant memory.
//! Reads are not audited (the audit log records changes).

use actix_web::{get, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use tracing_actix_web::RequestId;

use super::error::ApiError;
use crate::db::DbPool;
use crate::error::Error;
use crate::ids::RunId;
use crate::projects::Role;
use crate::runs::{self, HistoryCursor};
use crate::state::AppState;

/// Points read per query.
const PAGE: i64 = 10_000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(metric_history);
}

#[derive(Deserialize)]
struct HistoryQuery {
    key: Option<String>,
}

#[get("/api/runs/{run_id}/metrics")]
async fn metric_history(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    run_id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
    let run_id: RunId = run_id
        .parse()
        .map_err(|_| Error::invalid(format!("`{run_id}` is not a run id")))?;
    let mut conn = state.pool.get().await.map_err(Error::from)?;
    // Viewers of the run's project only; anyone else gets NOT_FOUND, as for a missing run.
    runs::get(&mut conn, &actor, run_id, Role::Viewer).await?;
    drop(conn);
    let pages = Pages {
        pool: state.pool.clone(),
        run_id,
        key: query.into_inner().key,
        after: None,
        done: false,
    };
    let body = futures_util::stream::unfold(Some(pages), |pages| async move {
        let mut pages = pages?;
        match pages.next().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(pages))),
            Ok(None) => None,
            // Cut the connection rather than end the body: a truncated copy must not look whole.
            Err(e) => {
                tracing::error!(error = %e, "streaming a metric history");
                Some((Err(std::io::Error::other("the history was cut off")), None))
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body))
}

/// The history, page by page.
struct Pages {
    pool: DbPool,
    run_id: RunId,
    key: Option<String>,
    after: Option<HistoryCursor>,
    /// The last page was short: nothing follows.
    done: bool,
}

impl Pages {
    async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut conn = self.pool.get().await?;
        let points = runs::metrics_after(
            &mut conn,
            self.run_id,
            self.key.as_deref(),
            self.after.as_ref(),
            PAGE,
        )
        .await?;
        drop(conn);
        self.done = (points.len() as i64) < PAGE;
        let Some(last) = points.last() else {
            return Ok(None);
        };
        self.after = Some((last.key.clone(), last.step, last.at));
        let mut lines = Vec::with_capacity(points.len() * 80);
        for point in &points {
            serde_json::to_writer(
                &mut lines,
                &serde_json::json!({
                    "key": point.key,
                    "value": point.value,
                    "step": point.step,
                    // As GraphQL writes it, so both reads give the same text.
                    "timestamp": point.at.to_rfc3339(),
                }),
            )
            .map_err(|e| Error::Internal(e.into()))?;
            lines.push(b'\n');
        }
        Ok(Some(Bytes::from(lines)))
    }
}
