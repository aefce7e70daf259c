//! The sign-in pages: `/sign-in` (the identity provider's button and/or the email form),
//! `/sign-in/email` (ask for a link) and `/sign-in/email/{secret}` (open it), `/sign-in/oidc`
//! and its callback, `/sign-out`, and `/account` (who is signed in). Each turns a domain call
//! (`sign_in`, `sessions`) into a page, a redirect and cookies.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use diesel_async::scoped_futures::ScopedFutureExt;
use serde::Deserialize;
use serde_json::json;

use super::pages::{page, private_cookie, refusal, see_other};
use crate::error::Error;
use crate::sessions::{self, SignInMethod, Started};
use crate::sign_in::{email_link, oidc, safe_next, Proof};
use crate::state::AppState;

/// The double-submit cookie of the sign-in form (there is no session yet to hold its value).
const FORM_CSRF_COOKIE: &str = "custody_form";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(sign_in_page)
        .service(ask_for_link)
        .service(open_link)
        .service(oidc_start)
        .service(oidc_callback)
        .service(sign_out)
        .service(account);
}

fn secure(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

fn random_value() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A removal of `name` (set at `path`).
fn removal(name: &str, path: &str) -> Cookie<'static> {
    let mut cookie = Cookie::new(name.to_owned(), "");
    cookie.set_path(path.to_owned());
    cookie
}

/// Why signing in did not work, as a page.
fn refused(err: &Error) -> HttpResponse {
    if let Error::Internal(cause) = err {
        tracing::error!(error = ?cause, "internal error while signing in");
    }
    let (status, title) = match err {
        Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Sign-in failed"),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, "You cannot sign in this way"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "This link was already used"),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        Error::InvalidInput(_) | Error::TooLarge(_) => {
            (StatusCode::BAD_REQUEST, "The request is incomplete")
        }
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Please try again shortly"),
        Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
    };
    refusal(status, title, &err.to_string())
}

/// Redirects into the new session: its cookie (`SameSite=Lax`, so following a link into the
/// server keeps it; `HttpOnly`; `Secure` behind https), expiring with the session.
fn into_session(state: &AppState, started: Started, next: &str, done_with: Cookie) -> HttpResponse {
    let mut response = see_other(next);
    let mut cookie = private_cookie(
        sessions::COOKIE,
        started.secret,
        "/",
        SameSite::Lax,
        secure(state),
    );
    if let Ok(expires) =
        actix_web::cookie::time::OffsetDateTime::from_unix_timestamp(started.expires_at.timestamp())
    {
        cookie.set_expires(expires);
    }
    response.add_cookie(&cookie).ok();
    response.add_removal_cookie(&done_with).ok();
    response
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

#[get("/sign-in")]
async fn sign_in_page(state: web::Data<AppState>, query: web::Query<NextQuery>) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    let csrf = random_value();
    let oidc_url = super::pages::with_query("/sign-in/oidc", "next", &next);
    let context = json!({
        "next": next,
        "csrf": csrf,
        "oidc_label": state.sign_in.oidc.as_ref().map(|p| p.label()),
        "oidc_url": oidc_url,
        "email_links": state.sign_in.email_links,
    });
    let mut response = page(StatusCode::OK, "sign_in.html", context);
    let cookie = private_cookie(
        FORM_CSRF_COOKIE,
        csrf,
        "/sign-in",
        SameSite::Strict,
        secure(&state),
    );
    response.add_cookie(&cookie).ok();
    response
}

/// Missing fields default to empty, so that an incomplete form gets a refusal page rather than
/// the extractor's bare 400.
#[derive(Deserialize)]
struct LinkForm {
    #[serde(default)]
    email: String,
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

#[post("/sign-in/email")]
async fn ask_for_link(
    state: web::Data<AppState>,
    http: HttpRequest,
    form: web::Form<LinkForm>,
) -> HttpResponse {
    let cookie = http.cookie(FORM_CSRF_COOKIE).map(|c| c.value().to_owned());
    if form.csrf.is_empty() || cookie.as_deref() != Some(form.csrf.as_str()) {
        return refused(&Error::forbidden(
            "The form's security check failed: open the sign-in page again and send the form from there.",
        ));
    }
    let next = safe_next(form.next.as_deref());
    let (sign_in, public_url, email) = (&state.sign_in, &state.public_url, form.email.trim());
    let asked = super::transaction(&state, |c| {
        async move { email_link::request(c, sign_in, public_url, email, &next).await }.scope_boxed()
    })
    .await;
    match asked {
        Ok(browser) => {
            let mut response = page(
                StatusCode::OK,
                "sign_in_sent.html",
                json!({"email": email, "minutes": email_link::LIFETIME.num_minutes()}),
            );
            // Lax: the link is opened from a mail, a navigation from another site.
            let cookie = private_cookie(
                email_link::BROWSER_COOKIE,
                browser,
                "/sign-in/email",
                SameSite::Lax,
                secure(&state),
            );
            response.add_cookie(&cookie).ok();
            response
        }
        Err(e) => refused(&e),
    }
}

#[get("/sign-in/email/{secret}")]
async fn open_link(
    state: web::Data<AppState>,
    http: HttpRequest,
    secret: web::Path<String>,
) -> HttpResponse {
    let browser = http
        .cookie(email_link::BROWSER_COOKIE)
        .map(|c| c.value().to_owned());
    let user_agent = user_agent(&http);
    let sign_in = &state.sign_in;
    let secret = secret.into_inner();
    let opened = super::transaction(&state, |c| {
        async move {
            let (user, next) = email_link::redeem(c, sign_in, &secret, browser.as_deref()).await?;
            let started = sessions::start(
                c,
                &user,
                SignInMethod::Email,
                sign_in.sessions,
                user_agent.as_deref(),
            )
            .await?;
            Ok((started, next))
        }
        .scope_boxed()
    })
    .await;
    match opened {
        Ok((started, next)) => into_session(
            &state,
            started,
            &next,
            removal(email_link::BROWSER_COOKIE, "/sign-in/email"),
        ),
        Err(e) => refused(&e),
    }
}

fn user_agent(http: &HttpRequest) -> Option<String> {
    http.headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[get("/sign-in/oidc")]
async fn oidc_start(state: web::Data<AppState>, query: web::Query<NextQuery>) -> HttpResponse {
    let Some(provider) = &state.sign_in.oidc else {
        return refused(&Error::not_found("single sign-on is not configured here"));
    };
    let next = safe_next(query.next.as_deref());
    match provider.start(&state.keys, &next).await {
        Ok(start) => {
            let mut response = see_other(&start.authorization_url);
            // Lax: the provider sends the browser back with a top-level navigation.
            let cookie = private_cookie(
                oidc::LOGIN_COOKIE,
                start.cookie,
                "/sign-in/oidc",
                SameSite::Lax,
                secure(&state),
            );
            response.add_cookie(&cookie).ok();
            response
        }
        Err(e) => refused(&e),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// The issuer of the answer (RFC 9207), when the provider names it.
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[get("/sign-in/oidc/callback")]
async fn oidc_callback(
    state: web::Data<AppState>,
    http: HttpRequest,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let Some(provider) = &state.sign_in.oidc else {
        return refused(&Error::not_found("single sign-on is not configured here"));
    };
    if let Some(error) = &query.error {
        return refused(&Error::Unauthenticated(format!(
            "the identity provider did not sign you in: {error} {}",
            query.error_description.as_deref().unwrap_or("")
        )));
    }
    let (Some(code), Some(answer_state)) = (&query.code, &query.state) else {
        return refused(&Error::invalid(
            "the identity provider's answer has no code or state",
        ));
    };
    let cookie = http
        .cookie(oidc::LOGIN_COOKIE)
        .map(|c| c.value().to_owned());
    let (identity, next) = match provider
        .finish(
            &state.keys,
            cookie.as_deref(),
            answer_state,
            code,
            query.iss.as_deref(),
        )
        .await
    {
        Ok(found) => found,
        Err(e) => return refused(&e),
    };
    let user_agent = user_agent(&http);
    let sign_in = &state.sign_in;
    let started = super::transaction(&state, |c| {
        async move {
            let proof = Proof::Oidc {
                groups: identity.groups,
            };
            let user = sign_in.admit(c, &identity.email, proof).await?;
            sessions::start(
                c,
                &user,
                SignInMethod::Oidc,
                sign_in.sessions,
                user_agent.as_deref(),
            )
            .await
        }
        .scope_boxed()
    })
    .await;
    match started {
        Ok(started) => into_session(
            &state,
            started,
            &next,
            removal(oidc::LOGIN_COOKIE, "/sign-in/oidc"),
        ),
        Err(e) => refused(&e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[post("/sign-out")]
async fn sign_out(
    state: web::Data<AppState>,
    http: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let session = match super::current_session(&state, &http).await {
        Ok(Some(session)) => session,
        Ok(None) => return see_other("/sign-in"),
        Err(e) => return refused(&e),
    };
    if form.csrf != session.csrf_token {
        return refused(&Error::forbidden(
            "The form's security check failed: sign out from a page of this server.",
        ));
    }
    let (actor, id) = (&session.actor, session.id);
    let ended = super::transaction(&state, |c| {
        async move { sessions::end(c, actor, id).await }.scope_boxed()
    })
    .await;
    match ended {
        Ok(()) => {
            let mut response = see_other("/sign-in");
            response
                .add_removal_cookie(&removal(sessions::COOKIE, "/"))
                .ok();
            response
        }
        Err(e) => refused(&e),
    }
}

#[get("/account")]
async fn account(state: web::Data<AppState>, http: HttpRequest) -> HttpResponse {
    let session = match super::current_session(&state, &http).await {
        Ok(Some(session)) => session,
        Ok(None) => return see_other("/sign-in?next=%2Faccount"),
        Err(e) => return refused(&e),
    };
    let mut pooled = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => return refused(&e.into()),
    };
    let groups = match crate::auth::idp_groups(&mut pooled, session.actor.user_id).await {
        Ok(groups) => groups,
        Err(e) => return refused(&e),
    };
    let actor = &session.actor;
    page(
        StatusCode::OK,
        "account.html",
        json!({
            "email": actor.email,
            "method": actor.auth.map(|m| m.as_str()),
            "signed_in_at": actor.signed_in_at.map(|at| at.to_rfc3339()),
            "groups": groups,
            "is_admin": actor.is_admin,
            "csrf": session.csrf_token,
        }),
    )
}
