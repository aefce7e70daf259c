//! The web UI, served by the server itself: pages rendered with tera whose data comes through
//! the public GraphQL API (run in-process as the signed-in person, so a page shows exactly what
//! their own dashboard could), and the static files they link. Nothing here is readable without
//! a session: every page sends an anonymous visitor to sign in and back.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::pages::{page, refusal, see_other, with_query};
use crate::error::Error;
use crate::graphql::{execute_as, CustodySchema};
use crate::sessions::Authenticated;
use crate::state::AppState;

mod admin;
mod approvals;
mod audit;
mod datasets;
mod lineage;
mod models;
mod runs;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(home).service(asset);
    approvals::routes(cfg);
    runs::routes(cfg);
    audit::routes(cfg);
    models::routes(cfg);
    lineage::routes(cfg);
    datasets::routes(cfg);
    admin::routes(cfg);
}

/// The session behind a page, or the redirect that signs the visitor in and brings them back.
pub(super) async fn signed_in(
    state: &AppState,
    http: &HttpRequest,
) -> Result<Authenticated, HttpResponse> {
    match super::current_session(state, http).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => {
            let here = match http.uri().path_and_query() {
                Some(pq) => pq.as_str().to_owned(),
                None => "/".to_owned(),
            };
            Err(see_other(&with_query("/sign-in", "next", &here)))
        }
        Err(e) => Err(refused(&e)),
    }
}

/// The session behind a posted form, or the answer that refuses it: the sign-in redirect, or
/// 403 when the form does not carry the session's CSRF value (a form of another site).
pub(super) async fn form_session(
    state: &AppState,
    http: &HttpRequest,
    csrf: Option<&str>,
) -> Result<Authenticated, HttpResponse> {
    let session = signed_in(state, http).await?;
    if csrf != Some(session.csrf_token.as_str()) {
        return Err(refused(&Error::forbidden(
            "the form's security check failed: nothing was changed; use the forms of this server's pages",
        )));
    }
    Ok(session)
}

pub(super) fn refused(e: &Error) -> HttpResponse {
    if let Error::Internal(cause) = e {
        tracing::error!(error = ?cause, "internal error on a page");
    }
    let (status, title) = match e {
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        Error::Forbidden(_) | Error::Unauthenticated(_) => {
            (StatusCode::FORBIDDEN, "You cannot see this")
        }
        Error::InvalidInput(_) | Error::TooLarge(_) => (StatusCode::BAD_REQUEST, "Bad request"),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Please try again shortly"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "This could not be done"),
        Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
    };
    refusal(status, title, &e.to_string())
}

/// A page's data: the GraphQL answer's `data`, or its first error as the domain error it was.
pub(super) async fn query(
    schema: &CustodySchema,
    state: &AppState,
    session: &Authenticated,
    document: &str,
    variables: Value,
) -> Result<Value, Error> {
    let response = execute_as(
        schema,
        &state.pool,
        session.actor.clone(),
        document,
        variables,
    )
    .await;
    if let Some(error) = response.errors.first() {
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .map(|c| c.to_string().trim_matches('"').to_owned());
        let message = error.message.clone();
        return Err(match code.as_deref() {
            Some("NOT_FOUND") => Error::NotFound(message),
            Some("FORBIDDEN") => Error::Forbidden(message),
            Some("UNAUTHENTICATED") => Error::Unauthenticated(message),
            Some("INVALID_INPUT") => Error::InvalidInput(message),
            Some("UNAVAILABLE") => Error::Unavailable(message),
            // The API's refusal of a change that no longer applies (the last admin, a
            // duplicate, a denied promotion): the person reads its reason.
            Some("CONFLICT") | Some("POLICY_DENIED") => Error::Conflict(message),
            _ => Error::Internal(anyhow::anyhow!("a page's query failed: {message}")),
        });
    }
    response.data.into_json().map_err(Error::internal)
}

/// A page: the session (or the sign-in redirect), the page's query run as the person, then
/// `view` shapes the answer into the template's context.
pub(super) async fn show(
    state: &AppState,
    schema: &CustodySchema,
    http: &HttpRequest,
    template: &str,
    (document, variables): (&str, Value),
    view: impl FnOnce(Value) -> Result<Value, Error>,
) -> HttpResponse {
    let session = match signed_in(state, http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    match query(schema, state, &session, document, variables)
        .await
        .and_then(view)
    {
        Ok(context) => page(StatusCode::OK, template, layout(&session, context)),
        Err(e) => refused(&e),
    }
}

/// What every page's layout shows: who is signed in, and the sign-out form's CSRF value.
pub(super) fn layout(session: &Authenticated, mut context: Value) -> Value {
    context["signed_in_as"] = json!(session.actor.email);
    context["csrf"] = json!(session.csrf_token);
    context
}

const HOME: &str = "query($first: Int!, $recent: Int!) {
  me { email memberships(first: 200) { role project { id name description } }
       recentRuns(first: $recent) { id name status startedAt project { name } } }
  recentActivity(first: $recent) { seq at actor action subjectKind subjectId projectId }
  promotions(status: PENDING, first: $first) { edges { node {
    id stage createdAt requestedBy { email }
    modelVersion { version model { name } run { project { name } } } } } }
}";

/// How many of the person's runs and of their projects' audit entries the home page shows.
const HOME_RECENT: i64 = 10;

#[get("/")]
async fn home(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
) -> HttpResponse {
    let request = (HOME, json!({"first": 20, "recent": HOME_RECENT}));
    show(
        &state,
        &schema,
        &http,
        "ui/home.html",
        request,
        |mut data| {
            // Entries name their project by id; the person's memberships name them.
            let names: std::collections::HashMap<String, Value> = data["me"]["memberships"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let p = &m["project"];
                    Some((p["id"].as_str()?.to_owned(), p["name"].clone()))
                })
                .collect();
            if let Some(entries) = data["recentActivity"].as_array_mut() {
                for e in entries {
                    let name = e["projectId"].as_str().and_then(|id| names.get(id));
                    e["project"] = name.cloned().unwrap_or(Value::Null);
                }
            }
            Ok(data)
        },
    )
    .await
}

#[derive(Deserialize)]
struct Version {
    v: Option<String>,
}

/// A static file; immutable for a year when asked for by its current version.
#[get("/static/{name}")]
async fn asset(name: web::Path<String>, version: web::Query<Version>) -> HttpResponse {
    let Some((asset, current)) = crate::assets::find(&name) else {
        return HttpResponse::NotFound().finish();
    };
    let cache = if version.v.as_deref() == Some(current) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header(("cache-control", cache))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(asset.bytes)
}

/// Runs a page's query; a project (or anything in it) the person may not read is "not found",
/// never "forbidden", so a page tells an outsider nothing about what exists.
pub(super) async fn read_hiding(
    schema: &CustodySchema,
    state: &AppState,
    session: &Authenticated,
    document: &str,
    variables: Value,
) -> Result<Value, Error> {
    query(schema, state, session, document, variables)
        .await
        .map_err(|e| match e {
            Error::Forbidden(_) => Error::not_found("not found"),
            other => other,
        })
}

pub(super) fn found(value: &Value, what: &str) -> Result<(), Error> {
    if value.is_null() {
        Err(Error::not_found(format!("no such {what}")))
    } else {
        Ok(())
    }
}

/// `show` for pages of a project's things: what the person may not read is "not found".
pub(super) async fn show_hiding<F>(
    state: &AppState,
    schema: &CustodySchema,
    http: &HttpRequest,
    template: &str,
    (document, variables): (&str, Value),
    view: F,
) -> HttpResponse
where
    F: FnOnce(Value) -> Result<Value, Error>,
{
    let session = match signed_in(state, http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    match read_hiding(schema, state, &session, document, variables)
        .await
        .and_then(view)
    {
        Ok(context) => page(StatusCode::OK, template, layout(&session, context)),
        Err(e) => refused(&e),
    }
}

/// Versions of a model, and of a dataset, per page of their tables.
pub(super) const VERSIONS_PER_PAGE: i32 = 100;

/// Where the next page of a versions table starts: a full page means another may follow, and
/// versions are numbered, so it starts after the last one shown.
pub(super) fn next_versions_page(versions: &[Value]) -> Option<Value> {
    (versions.len() as i32 == VERSIONS_PER_PAGE)
        .then(|| versions.last().map(|v| v["version"].clone()))
        .flatten()
}

#[derive(Deserialize)]
pub(super) struct VersionsPage {
    pub(super) after: Option<i32>,
}

/// A path segment, percent-encoded.
pub(super) fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
