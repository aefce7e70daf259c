//! A project's datasets and a dataset's versions (URI, digest, derived-from, the runs that
//! consumed each).

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{found, next_versions_page, show_hiding, VersionsPage, VERSIONS_PER_PAGE};
use crate::graphql::CustodySchema;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(datasets).service(dataset);
}

const DATASETS: &str = "query($p: String!) {
  project(name: $p) { name description datasets(first: 200) { name description createdAt } }
}";

#[get("/projects/{p}/datasets")]
async fn datasets(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    p: web::Path<String>,
) -> HttpResponse {
    let request = (DATASETS, json!({"p": p.as_str()}));
    show_hiding(
        &state,
        &schema,
        &http,
        "ui/datasets.html",
        request,
        |data| {
            found(&data["project"], "project")?;
            Ok(data)
        },
    )
    .await
}

const DATASET: &str = "query($p: String!, $d: String!, $first: Int!, $after: Int) {
  dataset(project: $p, name: $d) { id name description createdAt project { name }
    versions(first: $first, after: $after) { id version uri sha256 sizeBytes tags createdAt
      recall { reason recalledAt recalledBy { email } }
      derivedFrom { id version dataset { name project { name } } }
      consumedBy { id name status project { name } } } }
}";

#[get("/projects/{p}/datasets/{d}")]
async fn dataset(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    path: web::Path<(String, String)>,
    params: web::Query<VersionsPage>,
) -> HttpResponse {
    let (p, d) = path.into_inner();
    let variables = json!({"p": p, "d": d, "first": VERSIONS_PER_PAGE, "after": params.after});
    show_hiding(
        &state,
        &schema,
        &http,
        "ui/dataset.html",
        (DATASET, variables),
        |data| {
            found(&data["dataset"], "dataset")?;
            let versions = data["dataset"]["versions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let next = next_versions_page(&versions);
            Ok(json!({"dataset": data["dataset"], "next_after": next}))
        },
    )
    .await
}
