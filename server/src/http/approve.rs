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

use super::pages::page;
use crate::db::Conn;
use crate::error::Error;
use crate::promotions::approvals::{self, Verdict};
use crate::promotions::Status;
use crate::state::AppState;

const CSRF_COOKIE: &str = "custody_csrf";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(show).service(decide);
}

fn refused(err: &Error) -> HttpResponse {
    refused_with(err, None)
}

fn refused_with(err: &Error, sign_in_url: Option<&str>) -> HttpResponse {
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
        json!({"title": title, "message": err.to_string(), "sign_in_url": sign_in_url}),
    )
}

/// Where an approver signs in to come back to this link's page.
fn sign_in_url(token: &str) -> String {
    super::pages::with_query("/sign-in", "next", &format!("/approve/{token}"))
}

#[get("/approve/{token}")]
async fn show(
    state: web::Data<AppState>,
    http: HttpRequest,
    token: web::Path<String>,
) -> HttpResponse {
    let session = match super::current_session(&state, &http).await {
        Ok(session) => session.map(|s| s.actor),
        Err(e) => return refused(&e),
    };
    let mut pooled = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return refused(&e.into()),
    };
    let conn: &mut Conn = &mut pooled;
    let gate = state.gate();
    let view = async {
        let target = approvals::open_link(conn, &state.keys, &token).await?;
        let (promotion, view) = approvals::page_view(conn, &target).await?;
        // The approver's own session, if this browser holds one: the page says what a decision
        // from here would record, or that signing in must come first.
        let own = session.filter(|s| s.user_id == Some(target.approver.id));
        let rule = approvals::sign_in_rule(conn, &gate, promotion.project_id).await?;
        let as_link = approvals::link_actor(&target);
        let sign_in_needed =
            approvals::sign_in_refusal(rule, gate.approval_rules, own.as_ref().unwrap_or(&as_link));
        Ok::<_, Error>((promotion, view, own.is_some(), sign_in_needed))
    }
    .await;
    let (promotion, mut view, signed_in, sign_in_needed) = match view {
        Ok(v) => v,
        Err(e) => return refused(&e),
    };
    view["signed_in"] = json!(signed_in);
    view["sign_in_needed"] = json!(sign_in_needed);
    view["sign_in_url"] = json!(sign_in_url(&token));
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
    let session = match super::current_session(&state, &http).await {
        Ok(session) => session.map(|s| s.actor),
        Err(e) => return refused(&e),
    };
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
    let back = sign_in_url(&token);
    let request_id = Some(request_id.to_string());
    let session = session.as_ref();
    let outcome = crate::audit::transaction(conn, |c| {
        async move {
            approvals::decide_by_link(
                c,
                &gate,
                &token,
                verdict,
                comment.as_deref(),
                session,
                request_id,
            )
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
        // Most often a missing or stale sign-in: the refusal offers the way back.
        Err(e @ Error::Forbidden(_)) => refused_with(&e, Some(&back)),
        Err(e) => refused(&e),
    }
}
