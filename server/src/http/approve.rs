//! The approval page behind the link in an approver's mail. GET shows what is being approved and
//! never changes anything (mail scanners fetch links); POST decides, guarded by a CSRF check
//! (a random value in both a SameSite=Strict cookie and the form).

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use diesel_async::scoped_futures::ScopedFutureExt;
use serde::Deserialize;
use serde_json::json;
use tracing_actix_web::RequestId;

use crate::db::Conn;
use crate::error::Error;
use crate::promotions::approvals::{self, Verdict};
use crate::promotions::Status;
use crate::state::AppState;
use crate::templates;

const CSRF_COOKIE: &str = "custody_csrf";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(show).service(decide);
}

fn page(status: StatusCode, template: &str, context: serde_json::Value) -> HttpResponse {
    match templates::render(template, &context) {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .body(html),
        Err(e) => {
            tracing::error!(error = ?e, "rendering {template}");
            HttpResponse::InternalServerError().body("internal error")
        }
    }
}

fn refused(err: &Error) -> HttpResponse {
    if let Error::Internal(cause) = err {
        tracing::error!(error = ?cause, "internal error on an approval page");
    }
    let (status, title) = match err {
        Error::Unauthenticated(_) => (StatusCode::FORBIDDEN, "This approval link is not valid"),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, "You cannot decide on this promotion"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "This decision no longer applies"),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        Error::InvalidInput(_) | Error::TooLarge(_) => {
            (StatusCode::BAD_REQUEST, "The decision is incomplete")
        }
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Please try again shortly"),
        Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
    };
    page(
        status,
        "approve_refused.html",
        json!({"title": title, "message": err.to_string()}),
    )
}

#[get("/approve/{token}")]
async fn show(state: web::Data<AppState>, token: web::Path<String>) -> HttpResponse {
    let mut pooled = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return refused(&e.into()),
    };
    let conn: &mut Conn = &mut pooled;
    let view = async {
        let target = approvals::open_link(conn, &state.keys, &token).await?;
        approvals::page_view(conn, &target).await
    }
    .await;
    let (promotion, mut view) = match view {
        Ok(v) => v,
        Err(e) => return refused(&e),
    };
    if promotion.status != Status::Pending {
        return refused(&Error::conflict(format!(
            "This promotion is {}; it no longer waits for decisions.",
            promotion.status
        )));
    }
    let csrf = hex::encode(rand::random::<[u8; 16]>());
    view["csrf"] = json!(csrf);
    view["action"] = json!(format!("/approve/{}", token.as_str()));
    let mut response = page(StatusCode::OK, "approve.html", view);
    let cookie = Cookie::build(CSRF_COOKIE, csrf)
        .path("/approve")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    response.add_cookie(&cookie).ok();
    response
}

/// Missing fields default to empty, so that an incomplete form gets the refusal page (CSRF check
/// or unknown decision) rather than the extractor's bare 400.
#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    decision: String,
    comment: Option<String>,
    #[serde(default)]
    csrf: String,
}

#[post("/approve/{token}")]
async fn decide(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    token: web::Path<String>,
    form: web::Form<DecisionForm>,
) -> HttpResponse {
    let cookie = http.cookie(CSRF_COOKIE).map(|c| c.value().to_owned());
    if form.csrf.is_empty() || cookie.as_deref() != Some(form.csrf.as_str()) {
        return refused(&Error::forbidden(
            "The form's security check failed (open the link again and decide from that page).",
        ));
    }
    let Ok(verdict) = form.decision.parse::<Verdict>() else {
        return refused(&Error::invalid(format!(
            "unknown decision `{}`",
            form.decision
        )));
    };
    let comment = form
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let mut pooled = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return refused(&e.into()),
    };
    let conn: &mut Conn = &mut pooled;
    let gate = state.gate();
    let token = token.into_inner();
    let request_id = Some(request_id.to_string());
    let outcome = crate::audit::transaction(conn, |c| {
        async move {
            approvals::decide_by_link(c, &gate, &token, verdict, comment.as_deref(), request_id)
                .await
        }
        .scope_boxed()
    })
    .await;
    match outcome {
        Ok(promotion) => {
            let title = match verdict {
                Verdict::Approve => "Approved",
                Verdict::Reject => "Rejected",
            };
            let message = match promotion.status {
                Status::Applied => format!(
                    "The quorum is reached: the version is now in {}.",
                    promotion.stage
                ),
                Status::Rejected => "The promotion is rejected.".to_owned(),
                _ => "Your approval is recorded; the promotion waits for further approvals."
                    .to_owned(),
            };
            page(
                StatusCode::OK,
                "approve_done.html",
                json!({"title": title, "message": message, "status": promotion.status.as_str().to_uppercase()}),
            )
        }
        Err(e) => refused(&e),
    }
}
