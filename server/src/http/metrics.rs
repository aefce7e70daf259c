//! `GET /metrics`: the Prometheus scrape, for authorised scrapers only.
//!
//! The request counters and latencies tell anyone who reads them which routes are used and how
//! much: a scraper presents `Authorization: Bearer <token>`, either `CUSTODY_METRICS_TOKEN` (a
//! secret for Prometheus' `authorization` / `bearer_token_file` setting) or the API token of a
//! server admin. Paths that match no route count under one label value, so a flood of random
//! URLs cannot grow the scrape (and the server's memory) series by series.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use tracing_actix_web::RequestId;

use super::error::ApiError;
use crate::error::Error;
use crate::state::AppState;

/// The `endpoint` label of requests that matched no route.
pub const UNMATCHED: &str = "UNMATCHED";

/// What the scrape reads, and the dedicated scrape token if one is configured.
#[derive(Clone)]
pub struct Scrape {
    pub registry: prometheus::Registry,
    pub token: Option<String>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(metrics);
}

#[get("/metrics")]
async fn metrics(
    state: web::Data<AppState>,
    scrape: web::Data<Scrape>,
    http: HttpRequest,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let presented = http
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Ok(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"custody metrics\""))
            .json(serde_json::json!({"error": {"code": "UNAUTHENTICATED",
                "message": "scraping needs a bearer token (CUSTODY_METRICS_TOKEN or a server admin's API token)"}})));
    };
    let scrape_token = scrape
        .token
        .as_deref()
        .is_some_and(|expected| same_secret(expected, presented));
    if !scrape_token {
        let actor = super::authenticate(&state, &http, request_id.to_string()).await?;
        if !actor.is_admin {
            return Err(Error::forbidden(
                "metrics are for server admins and the scrape token (CUSTODY_METRICS_TOKEN)",
            )
            .into());
        }
    }
    let body = prometheus::TextEncoder::new()
        .encode_to_string(&scrape.registry.gather())
        .map_err(Error::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}

/// Compares two secrets in time independent of where they differ (their digests are compared).
fn same_secret(expected: &str, presented: &str) -> bool {
    Sha256::digest(expected.as_bytes()) == Sha256::digest(presented.as_bytes())
}
