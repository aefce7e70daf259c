//! GraphQL subscriptions over WebSocket on `/graphql` (a GET with `Upgrade: websocket`).
//!
//! The protocol (graphql-transport-ws, which Apollo, urql and Python's `gql` speak) is
//! async-graphql's own implementation; this module only carries frames between it and the
//! socket (actix-ws), within limits: one message at most [`MAX_MESSAGE`] bytes, at most
//! [`INBOX`] unread messages (a client that floods is disconnected), the `connection_init`
//! within [`INIT_TIMEOUT`] (else close 4408, as the protocol says), and sends that wait for the
//! client to read, so a slow reader holds back its own subscriptions (which end when they fall
//! too far behind) instead of growing a buffer.
//!
//! The caller authenticates with a bearer token in the upgrade request's `Authorization`
//! header or in the `connection_init` payload (`{"Authorization": "Bearer …"}`, what browser
//! clients can send). The web UI's pages use the browser's session instead: its cookie on the
//! upgrade request of a page of this server (same `Origin`), and the session's CSRF value in the
//! payload (`{"csrf": "…"}`), which only a page of this server can read — so another site's
//! page cannot subscribe with a visitor's session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderValue, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{guard, web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use async_graphql::http::{WebSocket, WsMessage};
use async_graphql::Data;
use futures_util::StreamExt as _;
use tracing_actix_web::RequestId;

use crate::access::Access;
use crate::graphql::{loader, Caller, CustodySchema, SubscriptionSlots};
use crate::sessions::Authenticated;
use crate::state::AppState;

/// The one subprotocol served.
const PROTOCOL: &str = "graphql-transport-ws";

/// Largest message a client may send (a subscribe with its document and variables).
const MAX_MESSAGE: usize = 256 << 10;

/// Messages received and not yet taken by the protocol.
const INBOX: usize = 64;

/// How long a client may take to send `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay silent (the protocol's pings count) before it is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(120);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/graphql")
            .guard(guard::Get())
            .guard(guard::fn_guard(|ctx| {
                ctx.head()
                    .headers()
                    .get("upgrade")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            }))
            .to(upgrade),
    );
}

async fn upgrade(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    request_id: RequestId,
    body: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let offered = http
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| list.split(',').any(|p| p.trim() == PROTOCOL));
    if !offered {
        return Ok(HttpResponse::BadRequest()
            .body("GraphQL subscriptions speak the graphql-transport-ws subprotocol: offer it in Sec-WebSocket-Protocol"));
    }
    // A token in the upgrade request is checked now, so a bad one is a plain 401.
    let header_actor = match http.headers().get(AUTHORIZATION) {
        Some(_) => match super::authenticate(&state, &http, request_id.to_string()).await {
            Ok(actor) => Some(actor),
            Err(e) => return Ok(HttpResponse::Unauthorized().body(e.to_string())),
        },
        None => None,
    };
    // A browser session counts only for a page of this server (cross-site WebSocket hijacking).
    let cookie_session = match header_actor {
        None if same_origin(&http) => super::current_session(&state, &http).await.ok().flatten(),
        _ => None,
    };
    let (mut response, session, messages) = actix_ws::handle(&http, body)?;
    response
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(PROTOCOL));
    let messages = messages
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    let state = state.into_inner();
    let schema = schema.get_ref().clone();
    actix_web::rt::spawn(serve(
        state,
        schema,
        header_actor,
        cookie_session,
        request_id.to_string(),
        session,
        messages,
    ));
    Ok(response)
}

async fn serve(
    state: Arc<AppState>,
    schema: CustodySchema,
    header_actor: Option<crate::actor::Actor>,
    cookie_session: Option<Authenticated>,
    request_id: String,
    mut session: actix_ws::Session,
    mut messages: actix_ws::AggregatedMessageStream,
) {
    let (inbox, received) = tokio::sync::mpsc::channel::<Vec<u8>>(INBOX);
    let mut received = received;
    let initialised = Arc::new(AtomicBool::new(false));
    let on_init = {
        let initialised = initialised.clone();
        move |payload: serde_json::Value| async move {
            let data =
                connection_data(&state, header_actor, cookie_session, &payload, request_id).await?;
            initialised.store(true, Ordering::SeqCst);
            Ok(data)
        }
    };
    let protocol = WebSocket::new(
        schema,
        futures_util::stream::poll_fn(move |cx| received.poll_recv(cx)),
        async_graphql::http::WebSocketProtocols::GraphQLWS,
    )
    .on_connection_init(on_init)
    .keepalive_timeout(KEEPALIVE_TIMEOUT);
    let mut protocol = std::pin::pin!(protocol);
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    let mut init_deadline = std::pin::pin!(init_deadline);
    let close = loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    if inbox.try_send(text.as_bytes().to_vec()).is_err() {
                        break Some(close(4429, "too many messages in flight"));
                    }
                }
                Some(Ok(AggregatedMessage::Binary(bytes))) => {
                    if inbox.try_send(bytes.to_vec()).is_err() {
                        break Some(close(4429, "too many messages in flight"));
                    }
                }
                Some(Ok(AggregatedMessage::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                Some(Err(e)) => break Some(close(CloseCode::Protocol.into(), &e.to_string())),
            },
            outgoing = protocol.next() => match outgoing {
                Some(WsMessage::Text(text)) => {
                    if session.text(text).await.is_err() {
                        break None;
                    }
                }
                Some(WsMessage::Close(code, reason)) => break Some(close(code, &reason)),
                None => break None,
            },
            _ = &mut init_deadline, if !initialised.load(Ordering::SeqCst) => {
                break Some(close(4408, "connection initialisation timeout"));
            }
        }
    };
    let _ = session.close(close).await;
}

fn close(code: u16, reason: &str) -> CloseReason {
    CloseReason {
        code: code.into(),
        description: Some(reason.to_owned()),
    }
}

/// Whether the upgrade comes from a page of this server: its `Origin` names the host it was
/// sent to. (Browsers always send `Origin` on WebSocket upgrades; other clients authenticate
/// with tokens, not cookies.)
fn same_origin(http: &HttpRequest) -> bool {
    let origin = http.headers().get("origin").and_then(|v| v.to_str().ok());
    let host = http.headers().get("host").and_then(|v| v.to_str().ok());
    match (origin.and_then(|o| url::Url::parse(o).ok()), host) {
        (Some(origin), Some(host)) => {
            let authority = match origin.port() {
                Some(port) => format!("{}:{port}", origin.host_str().unwrap_or_default()),
                None => origin.host_str().unwrap_or_default().to_owned(),
            };
            authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

/// What every operation of the connection sees: the caller (from the upgrade header, else the
/// init payload's token, else the page's session with its CSRF value), its access, a loader,
/// and the connection's subscription and user limits.
async fn connection_data(
    state: &AppState,
    header_actor: Option<crate::actor::Actor>,
    cookie_session: Option<Authenticated>,
    payload: &serde_json::Value,
    request_id: String,
) -> async_graphql::Result<Data> {
    let page_csrf = payload.get("csrf").and_then(|v| v.as_str());
    let actor = match (header_actor, cookie_session) {
        (Some(actor), _) => actor,
        (None, Some(session)) if page_csrf.is_some() => {
            if page_csrf != Some(session.csrf_token.as_str()) {
                return Err(async_graphql::Error::new(
                    "the page's security check failed: reload the page",
                ));
            }
            session.actor
        }
        (None, _) => {
            let token = ["Authorization", "authorization"]
                .iter()
                .find_map(|key| payload.get(key).and_then(|v| v.as_str()))
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    async_graphql::Error::new(
                        "a bearer token is required: send {\"Authorization\": \"Bearer …\"} in connection_init",
                    )
                })?;
            super::authenticate_token(state, token, request_id)
                .await
                .map_err(|e| async_graphql::Error::new(e.to_string()))?
        }
    };
    let slot = state
        .events
        .connection_slot(actor.user_id)
        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
    let mut data = Data::default();
    data.insert(loader(state.pool.clone()));
    data.insert(Access::new(actor.clone(), state.pool.clone()));
    data.insert(Caller(Ok(actor)));
    data.insert(SubscriptionSlots::default());
    data.insert(slot);
    Ok(data)
}
