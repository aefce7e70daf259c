//! A project's models: the models list, a model with its versions and stage history, a model
//! version (files, digest, policy dry-run per stage, the promotion request form, its lineage as
//! `lineage` draws it).
//!
//! Like every page, each reads through the public GraphQL API as the signed-in person. A
//! project, model or node the person may not read answers "not found" whether it exists or not.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::lineage::{
    graph_fragment, LineageView, NodeKey, Side, VERSION_PAGE_DOWN, VERSION_PAGE_UP,
};
use super::{
    encode, form_session, found, layout, next_versions_page, query, read_hiding, refused,
    show_hiding, signed_in, VersionsPage, VERSIONS_PER_PAGE,
};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::page;
use crate::sessions::Authenticated;
use crate::state::AppState;

/// Latest versions shown beside each model in the models list.
const LATEST_PER_MODEL: usize = 3;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(models)
        .service(model)
        .service(model_version)
        .service(request_promotion);
}

// ---------------------------------------------------------------------------------------------
// Models of a project

const MODELS: &str = "query($p: String!) {
  project(name: $p) { name description
    models(first: 200) { name description tags createdAt aliases { alias modelVersion { version } } } }
  searchModelVersions(projects: [$p], first: 100) {
    nodes { version stage createdAt model { name } } }
}";

#[get("/projects/{p}/models")]
async fn models(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    p: web::Path<String>,
) -> HttpResponse {
    let request = (MODELS, json!({"p": p.as_str()}));
    show_hiding(&state, &schema, &http, "ui/models.html", request, |data| {
        found(&data["project"], "project")?;
        // The project's newest versions (one page, newest first), a few beside each model.
        let mut latest: HashMap<String, Vec<Value>> = HashMap::new();
        for v in data["searchModelVersions"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = v["model"]["name"].as_str().unwrap_or_default().to_owned();
            let list = latest.entry(name).or_default();
            if list.len() < LATEST_PER_MODEL {
                list.push(v.clone());
            }
        }
        let models: Vec<Value> = data["project"]["models"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let mut m = m.clone();
                let name = m["name"].as_str().unwrap_or_default().to_owned();
                m["latest"] = json!(latest.remove(&name).unwrap_or_default());
                m["tag_list"] = tag_list(&m["tags"]);
                m
            })
            .collect();
        Ok(json!({"project": data["project"], "models": models}))
    })
    .await
}

/// Key/value tags as `key=value` strings, sorted by key, for display.
fn tag_list(tags: &Value) -> Value {
    let mut list: Vec<String> = tags
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| match v.as_str() {
            Some(s) if !s.is_empty() => format!("{k}={s}"),
            _ => k.clone(),
        })
        .collect();
    list.sort();
    json!(list)
}

// ---------------------------------------------------------------------------------------------
// A model

const MODEL: &str = "query($p: String!, $m: String!, $first: Int!, $after: Int) {
  project(name: $p) { name stages { name requiresApproval } }
  model(project: $p, name: $m) { id name description tags createdAt primaryMetric higherIsBetter
    aliases { alias modelVersion { version } }
    versions(first: $first, after: $after) { id version stage aliases tags createdAt
      run { id name } } }
  promotions(project: $p, model: $m, first: 100) { edges { node {
    id status stage comment createdAt decidedAt requiredApprovals requestedBy { email }
    approvals { approver { email } decision at }
    modelVersion { version } } }
    pageInfo { hasNextPage } }
}";

#[get("/projects/{p}/models/{m}")]
async fn model(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    path: web::Path<(String, String)>,
    params: web::Query<VersionsPage>,
) -> HttpResponse {
    let (p, m) = path.into_inner();
    let variables = json!({"p": p, "m": m, "first": VERSIONS_PER_PAGE, "after": params.after});
    show_hiding(
        &state,
        &schema,
        &http,
        "ui/model.html",
        (MODEL, variables),
        |data| {
            found(&data["project"], "project")?;
            found(&data["model"], "model")?;
            let mut model = data["model"].clone();
            model["tag_list"] = tag_list(&model["tags"]);
            let versions: Vec<Value> = model["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let mut v = v.clone();
                    v["tag_list"] = tag_list(&v["tags"]);
                    v
                })
                .collect();
            let next = next_versions_page(&versions);
            let history: Vec<Value> = data["promotions"]["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["node"].clone())
                .collect();
            Ok(json!({
                "project": data["project"],
                "model": model,
                "versions": versions,
                "next_after": next,
                "history": history,
                "history_truncated": data["promotions"]["pageInfo"]["hasNextPage"],
            }))
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// A model version

const VERSION: &str = "query($p: String!, $m: String!, $v: Int!) {
  project(name: $p) { name stages { name position requiresApproval } }
  modelVersion(project: $p, model: $m, version: $v) {
    id version stage aliases tags description artifactPath createdAt manifestSha256
    artifacts { path size sha256 }
    model { name aliases { alias modelVersion { version } } }
    run { id name status project { name } codeCommit { repository commit dirty } }
    recalledUpstream { id version uri dataset { name project { name } }
      recall { reason recalledAt recalledBy { email } } } }
}";

#[get("/projects/{p}/models/{m}/versions/{n}")]
async fn model_version(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    path: web::Path<(String, String, i32)>,
) -> HttpResponse {
    let (p, m, n) = path.into_inner();
    let session = match signed_in(&state, &http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    match version_context(&schema, &state, &session, &p, &m, n).await {
        Ok(context) => page(
            StatusCode::OK,
            "ui/model_version.html",
            layout(&session, context),
        ),
        Err(e) => refused(&e),
    }
}

/// The version page's data. Two documents: the dry-runs, the lineage and the promotions need the
/// version's id and the project's stages, which the first one finds from the page's URL.
async fn version_context(
    schema: &CustodySchema,
    state: &AppState,
    session: &Authenticated,
    p: &str,
    m: &str,
    n: i32,
) -> Result<Value, Error> {
    let data = read_hiding(
        schema,
        state,
        session,
        VERSION,
        json!({"p": p, "m": m, "v": n}),
    )
    .await?;
    found(&data["project"], "project")?;
    found(&data["modelVersion"], "model version")?;
    let version = &data["modelVersion"];
    let id = version["id"].as_str().unwrap_or_default().to_owned();
    let stages: Vec<Value> = data["project"]["stages"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    // One dry-run per stage (aliased `d0`, `d1`, … with the stage names as variables), the
    // version's lineage both ways, and its promotions.
    let focus = json!({"kind": "MODEL_VERSION", "id": id});
    let mut variables = json!({
        "p": p, "id": id, "focus": focus, "up": VERSION_PAGE_UP, "down": VERSION_PAGE_DOWN,
    });
    let mut params = vec![
        "$p: String!".to_owned(),
        "$id: ID!".into(),
        "$focus: NodeRef!".into(),
        "$up: Int!".into(),
        "$down: Int!".into(),
    ];
    let mut fields = vec![
        "up: lineage(node: $focus, direction: UPSTREAM, depth: $up) { ...G }".to_owned(),
        "down: lineage(node: $focus, direction: DOWNSTREAM, depth: $down) { ...G }".into(),
        "promotions(project: $p, modelVersionId: $id, first: 100) { edges { node {
           id status stage createdAt decidedAt requestedBy { email } } } }"
            .into(),
    ];
    for (i, stage) in stages.iter().enumerate() {
        params.push(format!("$s{i}: String!"));
        variables[format!("s{i}")] = stage["name"].clone();
        fields.push(format!(
            "d{i}: promotionDryRun(modelVersionId: $id, stage: $s{i}) {{ deny requiredApprovals approverGroup expiresIn }}"
        ));
    }
    let document = format!(
        "query({}) {{ {} }} {}",
        params.join(", "),
        fields.join(" "),
        graph_fragment()
    );
    let more = read_hiding(schema, state, session, &document, variables).await?;

    let dry_runs: Vec<Value> = stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            json!({
                "stage": stage["name"],
                "requires_approval": stage["requiresApproval"],
                "current": version["stage"] == stage["name"],
                "decision": more[format!("d{i}")],
            })
        })
        .collect();
    let promotions: Vec<Value> = more["promotions"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["node"].clone())
        .collect();
    let view = LineageView {
        focus: NodeKey::new("MODEL_VERSION", &id),
        up: VERSION_PAGE_UP,
        down: VERSION_PAGE_DOWN,
        expanded: Vec::new(),
    };
    let graph = view.draw(&[
        (
            Side::Up,
            view.focus.clone(),
            VERSION_PAGE_UP,
            more["up"].clone(),
        ),
        (
            Side::Down,
            view.focus.clone(),
            VERSION_PAGE_DOWN,
            more["down"].clone(),
        ),
    ]);
    let mut version = version.clone();
    version["tag_list"] = tag_list(&version["tags"]);
    Ok(json!({
        "project": data["project"],
        "version": version,
        "model_url": format!("/projects/{}/models/{}", encode(p), encode(m)),
        "version_url": format!("/projects/{}/models/{}/versions/{n}", encode(p), encode(m)),
        "dry_runs": dry_runs,
        "promotions": promotions,
        "graph": graph,
        "lineage_url": view.url(),
    }))
}

#[derive(Deserialize)]
struct PromotionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version_id: String,
    #[serde(default)]
    stage: String,
    comment: Option<String>,
}

const REQUEST: &str = "mutation($v: ID!, $s: String!, $c: String) {
  requested: requestPromotion(modelVersionId: $v, stage: $s, comment: $c) {
    id status stage requiredApprovals approverGroup expiresAt policyResult
    modelVersion { version stage model { name } run { project { name } } } }
}";

/// A promotion request from the version page: the session's own (its CSRF value), through the
/// API's mutation. The outcome page says what happened: applied, waiting for approval, or the
/// policy's reasons for refusing it.
#[post("/projects/{p}/models/{m}/versions/{n}/promotions")]
async fn request_promotion(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    _path: web::Path<(String, String, i32)>,
    form: web::Form<PromotionForm>,
) -> HttpResponse {
    let session = match form_session(&state, &http, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let comment = form
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let variables = json!({"v": form.version_id, "s": form.stage, "c": comment});
    // A refusal (a request already waiting for that stage, a role that may not ask) is the
    // API's message on its own status, as on every page.
    let data = match query(&schema, &state, &session, REQUEST, variables).await {
        Ok(data) => data,
        Err(e) => return refused(&e),
    };
    // Back to the version the promotion is of, as the API names it (the form's id decides which
    // version is asked for; the URL it was posted to only groups the route).
    let version = &data["requested"]["modelVersion"];
    let back = format!(
        "/projects/{}/models/{}/versions/{}",
        encode(
            version["run"]["project"]["name"]
                .as_str()
                .unwrap_or_default()
        ),
        encode(version["model"]["name"].as_str().unwrap_or_default()),
        version["version"]
    );
    page(
        StatusCode::OK,
        "ui/promotion_requested.html",
        layout(
            &session,
            json!({"promotion": data["requested"], "back": back}),
        ),
    )
}
