//! The web UI, served by the server itself: pages rendered with tera whose data comes through
//! the public GraphQL API (run in-process as the signed-in person, so a page shows exactly what
//! their own dashboard could), and the static files they link. Nothing here is readable without
//! a session: every page sends an anonymous visitor to sign in and back.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::pages::{page, refusal, see_other, with_query};
use crate::error::Error;
use crate::graphql::{execute_as, CustodySchema};
use crate::sessions::Authenticated;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(home)
        .service(inbox)
        .service(decide)
        .service(project)
        .service(run)
        .service(audit)
        .service(asset);
}

/// Runs of a project per page of its table.
const RUNS_PER_PAGE: i64 = 50;

/// The session behind a page, or the redirect that signs the visitor in and brings them back.
async fn signed_in(state: &AppState, http: &HttpRequest) -> Result<Authenticated, HttpResponse> {
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

fn refused(e: &Error) -> HttpResponse {
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
        Error::Conflict(_) | Error::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
        }
    };
    refusal(status, title, &e.to_string())
}

/// A page's data: the GraphQL answer's `data`, or its first error as the domain error it was.
async fn query(
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
            _ => Error::Internal(anyhow::anyhow!("a page's query failed: {message}")),
        });
    }
    response.data.into_json().map_err(Error::internal)
}

/// A page: the session (or the sign-in redirect), the page's query run as the person, then
/// `view` shapes the answer into the template's context.
async fn show(
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
fn layout(session: &Authenticated, mut context: Value) -> Value {
    context["signed_in_as"] = json!(session.actor.email);
    context["csrf"] = json!(session.csrf_token);
    context
}

const HOME: &str = "query($first: Int!) {
  me { email memberships(first: 200) { role project { name description } } }
  promotions(status: PENDING, first: $first) { edges { node {
    id stage createdAt requestedBy { email }
    modelVersion { version model { name } run { project { name } } } } } }
}";

#[get("/")]
async fn home(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
) -> HttpResponse {
    let request = (HOME, json!({"first": 20}));
    show(&state, &schema, &http, "ui/home.html", request, Ok).await
}

const INBOX: &str = "query($first: Int!) {
  promotions(status: PENDING, first: $first) { edges { node {
    id stage comment createdAt expiresAt requiredApprovals approverGroup policyResult
    viewerCanDecide decisionBlockedBy requestedBy { email }
    approvals { approver { email } decision comment }
    modelVersion { id version model { name } run { id name project { name } } } } } }
}";

/// Pending promotions of the person's projects, those they may decide first, each with its
/// decision form.
#[get("/approvals")]
async fn inbox(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
) -> HttpResponse {
    let request = (INBOX, json!({"first": 100}));
    show(
        &state,
        &schema,
        &http,
        "ui/approvals.html",
        request,
        |data| {
            let pending = data["promotions"]["edges"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let (mine, others): (Vec<Value>, Vec<Value>) = pending
                .into_iter()
                .map(|e| e["node"].clone())
                .partition(|p| p["viewerCanDecide"] == json!(true));
            Ok(json!({"decide": mine, "others": others}))
        },
    )
    .await
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    decision: String,
    comment: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// A decision from the inbox: the session's own (its CSRF value), through the API's mutation.
#[post("/approvals/{id}")]
async fn decide(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    id: web::Path<String>,
    form: web::Form<DecisionForm>,
) -> HttpResponse {
    let session = match signed_in(&state, &http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    if form.csrf != session.csrf_token {
        return refused(&Error::forbidden(
            "the form's security check failed: decide from the inbox page of this server",
        ));
    }
    let comment = form
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let document = match form.decision.as_str() {
        "approve" => "mutation($id: ID!, $c: String) { decided: approvePromotion(id: $id, comment: $c) { status stage } }",
        "reject" => "mutation($id: ID!, $c: String!) { decided: rejectPromotion(id: $id, comment: $c) { status stage } }",
        other => return refused(&Error::invalid(format!("unknown decision `{other}`"))),
    };
    let variables = json!({"id": id.as_str(), "c": comment});
    match query(&schema, &state, &session, document, variables).await {
        Ok(data) => page(
            StatusCode::OK,
            "ui/decided.html",
            layout(
                &session,
                json!({"decision": form.decision, "promotion": data["decided"]}),
            ),
        ),
        Err(e) => refused(&e),
    }
}

const PROJECT: &str = "query($p: String!, $filter: String, $first: Int!, $after: String) {
  project(name: $p) { name description }
  searchRuns(projects: [$p], filter: $filter, first: $first, after: $after) {
    edges { node { id name status startedAt endedAt } }
    pageInfo { hasNextPage endCursor } }
}";

#[derive(Deserialize)]
struct RunsQuery {
    filter: Option<String>,
    after: Option<String>,
}

#[get("/projects/{name}")]
async fn project(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    name: web::Path<String>,
    params: web::Query<RunsQuery>,
) -> HttpResponse {
    let session = match signed_in(&state, &http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    let filter = params
        .filter
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    let variables = json!({"p": name.as_str(), "filter": filter, "first": RUNS_PER_PAGE, "after": params.after});
    let mut context = match query(&schema, &state, &session, PROJECT, variables).await {
        Ok(data) if data["project"].is_null() => {
            return refused(&Error::not_found(format!("no project named `{name}`")))
        }
        Ok(data) => data,
        // A filter that does not parse: the page says why, with the filter to fix.
        Err(Error::InvalidInput(why)) if filter.is_some() => {
            json!({"project": {"name": name.as_str()}, "filter_error": why})
        }
        Err(e) => return refused(&e),
    };
    context["filter"] = json!(filter.unwrap_or(""));
    if let Some(cursor) = context["searchRuns"]["pageInfo"]["endCursor"].as_str() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        if let Some(filter) = filter {
            next.append_pair("filter", filter);
        }
        next.append_pair("after", cursor);
        context["next_page"] = json!(format!("/projects/{}?{}", name.as_str(), next.finish()));
    }
    page(StatusCode::OK, "ui/project.html", layout(&session, context))
}

const RUN: &str = "query($id: ID!) {
  run(id: $id) { id name status startedAt endedAt tags project { name }
    params { key value } artifacts { path size }
    inputs { version dataset { name } }
    codeCommit { repository commit } }
  compareRuns(ids: [$id]) { metrics { key values } }
}";

#[get("/runs/{id}")]
async fn run(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let request = (RUN, json!({"id": id.as_str()}));
    show(&state, &schema, &http, "ui/run.html", request, |data| {
        if data["run"].is_null() {
            Err(Error::not_found("no such run"))
        } else {
            Ok(data)
        }
    })
    .await
}

const AUDIT: &str = "query($p: String, $action: String, $first: Int!, $after: String) {
  me { memberships(first: 200) { project { name } } }
  auditLog(project: $p, action: $action, first: $first, after: $after) {
    edges { node { seq at actor action subjectKind subjectId } }
    pageInfo { hasNextPage endCursor } }
}";

/// Audit entries shown per page.
const AUDIT_PER_PAGE: i64 = 100;

#[derive(Deserialize)]
struct AuditQuery {
    project: Option<String>,
    action: Option<String>,
    after: Option<String>,
}

/// The audit log of one project (its members) or of everything (server admins), filtered by
/// action, a page at a time, with the export links of the same selection.
#[get("/audit")]
async fn audit(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    params: web::Query<AuditQuery>,
) -> HttpResponse {
    let blank = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (chosen, action) = (blank(&params.project), blank(&params.action));
    if chosen.is_none() {
        // Only server admins read the whole log: anyone else starts with their first project.
        if let Some(first) = first_project_unless_admin(&state, &schema, &http).await {
            return see_other(&with_query("/audit", "project", &first));
        }
    }
    let variables =
        json!({"p": chosen, "action": action, "first": AUDIT_PER_PAGE, "after": params.after});
    show(
        &state,
        &schema,
        &http,
        "ui/audit.html",
        (AUDIT, variables),
        |mut data| {
            let selection = |extra: &[(&str, &str)]| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if let Some(p) = &chosen {
                    query.append_pair("project", p);
                }
                for (k, v) in extra {
                    query.append_pair(k, v);
                }
                query.finish()
            };
            if let Some(cursor) = data["auditLog"]["pageInfo"]["endCursor"].as_str() {
                let mut extra = vec![("after", cursor)];
                if let Some(a) = &action {
                    extra.push(("action", a));
                }
                data["next_page"] = json!(format!("/audit?{}", selection(&extra)));
            }
            data["export_jsonl"] = json!(format!(
                "/api/audit/export?{}",
                selection(&[("format", "jsonl")])
            ));
            data["export_csv"] = json!(format!(
                "/api/audit/export?{}",
                selection(&[("format", "csv")])
            ));
            data["project"] = json!(chosen);
            data["action"] = json!(action.as_deref().unwrap_or(""));
            Ok(data)
        },
    )
    .await
}

/// The first project of a signed-in person who is not a server admin.
async fn first_project_unless_admin(
    state: &AppState,
    schema: &CustodySchema,
    http: &HttpRequest,
) -> Option<String> {
    let session = signed_in(state, http).await.ok()?;
    let document = "{ me { isAdmin memberships(first: 1) { project { name } } } }";
    let me = query(schema, state, &session, document, json!({}))
        .await
        .ok()?;
    if me["me"]["isAdmin"] == json!(true) {
        return None;
    }
    me["me"]["memberships"][0]["project"]["name"]
        .as_str()
        .map(str::to_owned)
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
