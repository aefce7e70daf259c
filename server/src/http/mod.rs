//! The HTTP edge: the server, its middleware (request ids, masked logs, CORS, metrics) and the
//! routes: GraphQL (and its subscriptions over WebSocket), health, metrics, artifact streams,
//! approval pages and audit exports.

mod approve;
mod artifacts;
mod device;
mod error;
mod export;
mod graphql;
mod health;
mod history;
mod logging;
mod metrics;
mod pages;
mod sign_in;
mod subscriptions;
mod ui;

pub(crate) use artifacts::{percent_decode, stream_file};
pub use error::ApiError;
pub use export::ExportLimits;

use std::net::TcpListener;

use actix_cors::Cors;
use actix_web::dev::Service as _;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, App, HttpMessage as _, HttpResponse, HttpServer};
use actix_web_prom::PrometheusMetricsBuilder;
use anyhow::Context as _;
use futures_util::StreamExt as _;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::actor::Actor;
use crate::auth;
use crate::error::Error;
use crate::graphql::build_schema;
use crate::state::AppState;

pub struct HttpConfig {
    pub listener: TcpListener,
    pub cors_origins: Vec<String>,
    pub workers: Option<usize>,
    /// Largest GraphQL body of an authenticated caller.
    pub graphql_max_body: usize,
    /// The dedicated scrape token of /metrics, if any.
    pub metrics_token: Option<String>,
    pub exports: ExportLimits,
}

/// The methods the API answers; anything else is refused before routing and metrics (a
/// made-up method must not become a label value of its own).
const KNOWN_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

/// Serves until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn run(state: AppState, config: HttpConfig) -> anyhow::Result<()> {
    let schema = build_schema(state.clone());
    let prometheus = PrometheusMetricsBuilder::new("custody")
        .exclude("/healthz")
        .exclude("/metrics")
        .mask_unmatched_patterns(metrics::UNMATCHED)
        .build()
        .map_err(|e| anyhow::anyhow!("building metrics: {e}"))?;
    pool_metrics(&prometheus.registry, state.pool.clone())?;
    crate::group_commit::register_metrics(&prometheus.registry)?;
    crate::openlineage::register_metrics(&prometheus.registry)?;
    let scrape = metrics::Scrape {
        registry: prometheus.registry.clone(),
        token: config.metrics_token.clone(),
    };
    let graphql_limits = graphql::GraphqlLimits {
        max_body: config.graphql_max_body,
    };
    let exports = config.exports.clone();

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
            .app_data(web::Data::new(scrape.clone()))
            .app_data(web::Data::new(graphql_limits))
            .app_data(web::Data::new(exports.clone()))
            .wrap(cors)
            .wrap(prometheus.clone())
            .wrap(actix_web::middleware::from_fn(known_methods_only))
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
            .wrap(TracingLogger::<logging::MaskedRootSpan>::new())
            .configure(health::routes)
            .configure(metrics::routes)
            .configure(subscriptions::routes)
            .configure(graphql::routes)
            .configure(artifacts::routes)
            .configure(crate::mlflow::routes)
            .configure(crate::openlineage::routes)
            .configure(approve::routes)
            .configure(sign_in::routes)
            .configure(device::routes)
            .configure(ui::routes)
            .configure(export::routes)
            .configure(history::routes)
    })
    .listen(config.listener)
    .context("serving on the listener")?;
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    server.run().await.context("HTTP server")
}

async fn known_methods_only<B: actix_web::body::MessageBody + 'static>(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if KNOWN_METHODS.contains(req.method()) {
        Ok(next.call(req).await?.map_into_left_body())
    } else {
        Ok(req
            .into_response(HttpResponse::MethodNotAllowed().finish())
            .map_into_right_body())
    }
}

/// Why a request body was not read whole.
pub(crate) enum BodyRefusal {
    /// Over the limit (by its Content-Length, or while reading).
    TooLarge,
    /// The client sent something that is not a body (broken chunking, disconnect).
    Broken(String),
}

/// Reads a request body of at most `limit` bytes: a larger `Content-Length` is refused before
/// reading anything, a chunked body as soon as it passes the limit. Never buffers more.
pub(crate) async fn read_body(
    http: &actix_web::HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, BodyRefusal> {
    let declared = http
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyRefusal::TooLarge);
    }
    let mut body = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyRefusal::Broken(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyRefusal::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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

/// The actor behind `Authorization: Bearer <token>`, or else behind the browser's session
/// cookie. A session's request that may change something (anything but GET and HEAD) must echo
/// the session's CSRF value in `X-CSRF-Token`: the cookie alone, which a browser attaches to
/// requests any page makes, never suffices.
pub(crate) async fn authenticate(
    state: &AppState,
    http: &actix_web::HttpRequest,
    request_id: String,
) -> Result<Actor, Error> {
    let Some(header) = http.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return match http.cookie(crate::sessions::COOKIE) {
            Some(cookie) => authenticate_session(state, http, cookie.value(), request_id).await,
            None => Err(Error::Unauthenticated(
                "a bearer token is required (Authorization: Bearer …), or sign in".into(),
            )),
        };
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
        })?;
    authenticate_token(state, token, request_id).await
}

/// The header a session's state-changing API requests carry (its value: `session_csrf`).
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

async fn authenticate_session(
    state: &AppState,
    http: &actix_web::HttpRequest,
    secret: &str,
    request_id: String,
) -> Result<Actor, Error> {
    let mut conn = state.pool.get().await?;
    let session = crate::sessions::authenticate(&mut conn, state.sign_in.sessions, secret).await?;
    let safe = matches!(*http.method(), Method::GET | Method::HEAD);
    let echoed = http
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    if !safe && echoed != Some(session.csrf_token.as_str()) {
        return Err(Error::Unauthenticated(
            "a signed-in browser's request must carry its X-CSRF-Token header (cross-site request refused)".into(),
        ));
    }
    let mut actor = session.actor;
    actor.request_id = Some(request_id);
    Ok(actor)
}

/// Runs one command in one transaction (with its audit entries) on a connection of the pool:
/// what the pages' handlers do after reading their form.
pub(crate) async fn transaction<'a, T, F>(state: &AppState, command: F) -> Result<T, Error>
where
    T: Send + 'a,
    F: for<'r> FnOnce(
            &'r mut crate::db::Conn,
        )
            -> diesel_async::scoped_futures::ScopedBoxFuture<'a, 'r, Result<T, Error>>
        + Send
        + 'a,
{
    let mut conn = state.pool.get().await?;
    crate::audit::transaction(&mut conn, command).await
}

/// The browser's session, if it has a valid one (pages that work signed in or not).
pub(crate) async fn current_session(
    state: &AppState,
    http: &actix_web::HttpRequest,
) -> Result<Option<crate::sessions::Authenticated>, Error> {
    let Some(cookie) = http.cookie(crate::sessions::COOKIE) else {
        return Ok(None);
    };
    let mut conn = state.pool.get().await?;
    match crate::sessions::authenticate(&mut conn, state.sign_in.sessions, cookie.value()).await {
        Ok(session) => Ok(Some(session)),
        Err(Error::Unauthenticated(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The actor a bearer token (without its `Bearer ` prefix) stands for, for this request.
pub(crate) async fn authenticate_token(
    state: &AppState,
    token: &str,
    request_id: String,
) -> Result<Actor, Error> {
    let token = token.trim();
    let mut actor = match crate::token_cache::get(token) {
        Some(actor) => actor,
        None => {
            let lookup = crate::token_cache::Lookup::start();
            let mut conn = state.pool.get().await?;
            let (actor, expires_at) = auth::authenticate(&mut conn, &state.keys, token).await?;
            lookup.remember(token, &actor, expires_at);
            actor
        }
    };
    actor.request_id = Some(request_id);
    Ok(actor)
}
