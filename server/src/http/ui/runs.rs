//! A project's runs table and a run's page.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{layout, query, refused, show, signed_in};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::page;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(project).service(run);
}

/// Runs of a project per page of its table.
const RUNS_PER_PAGE: i64 = 50;

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
