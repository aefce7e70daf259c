//! The device flow's endpoints (RFC 8628) for `custody login`: `POST /api/device/code` and
//! `POST /api/device/token` (form-encoded, JSON answers in OAuth's shape, also used to refresh),
//! and the page a signed-in person approves the code on, `GET`/`POST /device`.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use diesel_async::scoped_futures::ScopedFutureExt;
use serde::Deserialize;
use serde_json::json;

use super::pages::{page, refusal, see_other};
use crate::device_login::{self, display_user_code, Answer};
use crate::error::Error;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(device_code)
        .service(token)
        .service(approval_page)
        .service(decide);
}

/// An OAuth error answer.
fn oauth_error(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("cache-control", "no-store"))
        .json(json!({"error": code, "error_description": description}))
}

fn server_error(e: &Error) -> HttpResponse {
    if let Error::Internal(cause) = e {
        tracing::error!(error = ?cause, "internal error in the device flow");
    }
    let status = match e {
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::InvalidInput(_) | Error::TooLarge(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    oauth_error(status, "server_error", &e.to_string())
}

#[derive(Deserialize)]
struct CodeRequest {
    /// Shown to the person on the approval page (e.g. `custody on laptop-7`).
    client_name: Option<String>,
}

#[post("/api/device/code")]
async fn device_code(state: web::Data<AppState>, form: web::Form<CodeRequest>) -> HttpResponse {
    let (public_url, name) = (&state.public_url, form.client_name.as_deref());
    let started = super::transaction(&state, |c| {
        async move { device_login::start(c, public_url, name).await }.scope_boxed()
    })
    .await;
    match started {
        Ok(start) => HttpResponse::Ok()
            .insert_header(("cache-control", "no-store"))
            .json(start),
        Err(e) => server_error(&e),
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    device_code: Option<String>,
    refresh_token: Option<String>,
}

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[post("/api/device/token")]
async fn token(state: web::Data<AppState>, form: web::Form<TokenRequest>) -> HttpResponse {
    let form = form.into_inner();
    let grant = match (
        form.grant_type.as_str(),
        form.device_code,
        form.refresh_token,
    ) {
        (DEVICE_GRANT, Some(code), _) => Ok(code),
        ("refresh_token", _, Some(refresh)) => Err(refresh),
        (DEVICE_GRANT | "refresh_token", _, _) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the grant's code or refresh_token is missing",
            )
        }
        (other, _, _) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type `{other}` is not supported here"),
            )
        }
    };
    let answer: Answer = super::transaction(&state, |c| {
        async move {
            match grant {
                Ok(code) => device_login::poll(c, &code).await,
                Err(refresh) => device_login::refresh(c, &refresh).await,
            }
        }
        .scope_boxed()
    })
    .await;
    match answer {
        Ok(Ok(grant)) => HttpResponse::Ok()
            .insert_header(("cache-control", "no-store"))
            .json(grant),
        Ok(Err(refused)) => oauth_error(
            StatusCode::BAD_REQUEST,
            refused.code(),
            &refused.description(),
        ),
        Err(e) => server_error(&e),
    }
}

fn refused(e: &Error) -> HttpResponse {
    if let Error::Internal(cause) = e {
        tracing::error!(error = ?cause, "internal error on the device page");
    }
    let (status, title) = match e {
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "No login waits for this code"),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, "You cannot approve this login"),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Please try again shortly"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
    };
    refusal(status, title, &e.to_string())
}

#[derive(Deserialize)]
struct CodeQuery {
    code: Option<String>,
}

#[get("/device")]
async fn approval_page(
    state: web::Data<AppState>,
    http: HttpRequest,
    query: web::Query<CodeQuery>,
) -> HttpResponse {
    let code = query.code.clone().unwrap_or_default();
    let session = match super::current_session(&state, &http).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            let back = super::pages::with_query("/device", "code", &code);
            let to = super::pages::with_query("/sign-in", "next", &back);
            return see_other(&to);
        }
        Err(e) => return refused(&e),
    };
    let mut context = json!({"email": session.actor.email, "csrf": session.csrf_token});
    if !code.trim().is_empty() {
        let mut pooled = match state.pool.get().await {
            Ok(c) => c,
            Err(e) => return refused(&e.into()),
        };
        match device_login::waiting(&mut pooled, &code).await {
            Ok(login) => {
                context["code"] = json!(display_user_code(&login.user_code));
                context["client"] = json!(login.client_name);
                context["expires_at"] = json!(login.expires_at.to_rfc3339());
            }
            Err(e) => return refused(&e),
        }
    }
    page(StatusCode::OK, "device.html", context)
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    csrf: String,
}

#[post("/device")]
async fn decide(
    state: web::Data<AppState>,
    http: HttpRequest,
    form: web::Form<DecisionForm>,
) -> HttpResponse {
    let session = match super::current_session(&state, &http).await {
        Ok(Some(session)) => session,
        Ok(None) => return see_other("/sign-in?next=%2Fdevice"),
        Err(e) => return refused(&e),
    };
    if form.csrf != session.csrf_token {
        return refused(&Error::forbidden(
            "the form's security check failed: approve from the page of this server",
        ));
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return refused(&Error::forbidden("unknown decision")),
    };
    let (actor, code) = (&session.actor, form.code.as_str());
    let decided = super::transaction(&state, |c| {
        async move { device_login::decide(c, actor, code, approve).await }.scope_boxed()
    })
    .await;
    match decided {
        Ok(()) => page(
            StatusCode::OK,
            "device_done.html",
            json!({"approved": approve, "email": session.actor.email}),
        ),
        Err(e) => refused(&e),
    }
}
