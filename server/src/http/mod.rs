//! The HTTP edge: routes for GraphQL, health and metrics.

mod approve;
mod artifacts;
mod error;
mod export;
mod graphql;
mod health;

use std::net::TcpListener;

use actix_cors::Cors;
use actix_web::dev::Service as _;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage as _, HttpServer};
use actix_web_prom::PrometheusMetricsBuilder;
use anyhow::Context as _;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::auth::{self, Actor};
use crate::error::Error;
use crate::graphql::{build_schema, AppState};

pub struct HttpConfig {
    pub listener: TcpListener,
    pub cors_origins: Vec<String>,
    pub workers: Option<usize>,
}

/// Serves until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn run(state: AppState, config: HttpConfig) -> anyhow::Result<()> {
    let schema = build_schema(state.clone());
    let prometheus = PrometheusMetricsBuilder::new("custody")
        .endpoint("/metrics")
        .exclude("/healthz")
        .build()
        .map_err(|e| anyhow::anyhow!("building metrics: {e}"))?;
    pool_metrics(&prometheus.registry, state.pool.clone())?;

    let cors_origins = config.cors_origins.clone();
    let mut server = HttpServer::new(move || {
        let cors = cors_origins.iter().fold(
            Cors::default()
                .allowed_methods(["GET", "POST", "PUT", "OPTIONS"])
                .allowed_headers(["authorization", "content-type", "x-custody-sha256"])
                .max_age(3600),
            |cors, origin| cors.allowed_origin(origin),
        );
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::Data::new(schema.clone()))
            .wrap(cors)
            .wrap(prometheus.clone())
            .wrap_fn(|req, srv| {
                let request_id = req.extensions().get::<RequestId>().map(|id| id.to_string());
                let response = srv.call(req);
                async move {
                    let mut response = response.await?;
                    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                        response
                            .headers_mut()
                            .insert(HeaderName::from_static("x-request-id"), id);
                    }
                    Ok(response)
                }
            })
            .wrap(TracingLogger::default())
            .configure(health::routes)
            .configure(graphql::routes)
            .configure(artifacts::routes)
            .configure(approve::routes)
            .configure(export::routes)
    })
    .listen(config.listener)
    .context("serving on the listener")?;
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    server.run().await.context("HTTP server")
}

/// Exposes the pool's size and idle connections next to the request metrics.
fn pool_metrics(registry: &prometheus::Registry, pool: crate::db::DbPool) -> anyhow::Result<()> {
    let size =
        prometheus::IntGauge::new("custody_db_pool_connections", "open database connections")?;
    let idle = prometheus::IntGauge::new("custody_db_pool_idle", "idle database connections")?;
    let waiting = prometheus::IntGauge::new(
        "custody_db_pool_waiting",
        "requests waiting for a connection",
    )?;
    let max = prometheus::IntGauge::new("custody_db_pool_max", "the pool's maximum size")?;
    for gauge in [&size, &idle, &waiting, &max] {
        registry.register(Box::new(gauge.clone()))?;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            let status = pool.status();
            size.set(status.size as i64);
            idle.set(status.available as i64);
            waiting.set(status.waiting as i64);
            max.set(status.max_size as i64);
        }
    });
    Ok(())
}

/// The actor behind `Authorization: Bearer <token>`.
pub(crate) async fn authenticate(
    state: &AppState,
    http: &actix_web::HttpRequest,
    request_id: String,
) -> Result<Actor, Error> {
    let header = http
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            Error::Unauthenticated("a bearer token is required (Authorization: Bearer …)".into())
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
        })?;
    let mut conn = state.pool.get().await?;
    let mut actor = auth::authenticate(&mut conn, &state.keys, token.trim()).await?;
    actor.request_id = Some(request_id);
    Ok(actor)
}
