//! A project's models and datasets: the models list, a model with its versions and stage
//! history, a model version (files, digest, policy dry-run per stage, the promotion request
//! form, its lineage), the lineage explorer for any node, and a project's datasets.
//!
//! Like every page, each reads through the public GraphQL API as the signed-in person. A
//! project, model or node the person may not read answers "not found" whether it exists or not.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{layout, query, refused, signed_in};
use crate::error::Error;
use crate::graphql::{execute_as, CustodySchema};
use crate::http::pages::{page, refusal};
use crate::sessions::Authenticated;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(models)
        .service(model)
        .service(model_version)
        .service(request_promotion)
        .service(lineage)
        .service(datasets)
        .service(dataset);
}

/// Versions of a model, and of a dataset, per page of their tables.
const VERSIONS_PER_PAGE: i32 = 100;
/// Latest versions shown beside each model in the models list.
const LATEST_PER_MODEL: usize = 3;
/// Depths the lineage explorer draws at most on each side, and how many nodes may be expanded
/// beyond them: every view loads only what it draws.
const MAX_LINEAGE_DEPTH: i32 = 4;
const MAX_EXPANDED: usize = 10;
/// The version page's own drawing: what the version came from (its run, that run's datasets
/// and commit) and what came from it.
const VERSION_PAGE_UP: i32 = 2;
const VERSION_PAGE_DOWN: i32 = 1;

/// Runs a page's query; a project (or anything in it) the person may not read is "not found",
/// never "forbidden", so a page tells an outsider nothing about what exists.
async fn read(
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

fn found(value: &Value, what: &str) -> Result<(), Error> {
    if value.is_null() {
        Err(Error::not_found(format!("no such {what}")))
    } else {
        Ok(())
    }
}

/// A page whose context is `context` once the person is known: the session (or the sign-in
/// redirect), the query, the view, the template.
async fn render<F>(
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
    match read(schema, state, &session, document, variables)
        .await
        .and_then(view)
    {
        Ok(context) => page(StatusCode::OK, template, layout(&session, context)),
        Err(e) => refused(&e),
    }
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
    render(&state, &schema, &http, "ui/models.html", request, |data| {
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

#[derive(Deserialize)]
struct VersionsPage {
    after: Option<i32>,
}

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
    render(
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
            // A full page means another may follow: versions are numbered, so it starts after
            // the last one shown.
            let next = (versions.len() as i32 == VERSIONS_PER_PAGE)
                .then(|| versions.last().map(|v| v["version"].clone()))
                .flatten();
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
    run { id name status project { name } codeCommit { repository commit dirty } } }
}";

/// What every lineage node answers, for drawing and linking it.
const NODE_FIELDS: &str = "kind id
  run { id name status project { name } }
  datasetVersion { id version tags dataset { name project { name } } }
  modelVersion { id version stage model { name } run { project { name } } }
  codeCommit { id repository commit dirty }";

fn graph_fragment() -> String {
    format!(
        "fragment G on LineageGraph {{ nodes {{ {NODE_FIELDS} }} edges {{ from {{ kind id }} to {{ kind id }} relation }} }}"
    )
}

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
    let data = read(
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
    let more = read(schema, state, session, &document, variables).await?;

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
    let session = match signed_in(&state, &http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    if form.csrf.is_empty() || form.csrf != session.csrf_token {
        return refused(&Error::forbidden(
            "the form's security check failed: request promotions from the version page of this server",
        ));
    }
    let comment = form
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let variables = json!({"v": form.version_id, "s": form.stage, "c": comment});
    // The mutation's error code decides the page: a conflict (say, a request already waiting
    // for that stage) is the person's to resolve, not a server failure.
    let response = execute_as(
        &schema,
        &state.pool,
        session.actor.clone(),
        REQUEST,
        variables,
    )
    .await;
    if let Some(error) = response.errors.first() {
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .map(|c| c.to_string().trim_matches('"').to_owned());
        let (status, title) = match code.as_deref() {
            Some("CONFLICT") => (StatusCode::CONFLICT, "Not requested"),
            Some("INVALID_INPUT") => (StatusCode::BAD_REQUEST, "Not requested"),
            Some("FORBIDDEN") => (StatusCode::FORBIDDEN, "You cannot request this"),
            Some("NOT_FOUND") => (StatusCode::NOT_FOUND, "Not found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
        };
        return refusal(status, title, &error.message);
    }
    let data = match response.data.into_json() {
        Ok(data) => data,
        Err(e) => return refused(&Error::internal(e)),
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

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

// ---------------------------------------------------------------------------------------------
// Lineage

/// A node by kind (GraphQL's `NodeKind`) and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct NodeKey {
    kind: String,
    id: String,
}

impl NodeKey {
    fn new(kind: &str, id: &str) -> Self {
        NodeKey {
            kind: kind.to_owned(),
            id: id.to_owned(),
        }
    }

    fn of(value: &Value) -> Self {
        NodeKey::new(
            value["kind"].as_str().unwrap_or_default(),
            value["id"].as_str().unwrap_or_default(),
        )
    }

    /// The kind as it appears in URLs: `model_version`, `run`, …
    fn slug(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    fn parse_kind(slug: &str) -> Option<&'static str> {
        Some(match slug {
            "dataset_version" => "DATASET_VERSION",
            "code_commit" => "CODE_COMMIT",
            "run" => "RUN",
            "model_version" => "MODEL_VERSION",
            "deployment" => "DEPLOYMENT",
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Up,
    Down,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Up => "up",
            Side::Down => "down",
        }
    }

    fn direction(self) -> &'static str {
        match self {
            Side::Up => "UPSTREAM",
            Side::Down => "DOWNSTREAM",
        }
    }
}

/// One view of the lineage explorer, as its URL says: the focus, how far to draw each side,
/// and the nodes opened one step further.
#[derive(Clone, Debug)]
struct LineageView {
    focus: NodeKey,
    up: i32,
    down: i32,
    expanded: Vec<(Side, NodeKey)>,
}

/// Geometry of the drawing (SVG user units).
const NODE_W: i64 = 200;
const NODE_H: i64 = 56;
const COL_GAP: i64 = 64;
const ROW_GAP: i64 = 18;
const MARGIN: i64 = 12;
/// Room beside the outer columns for their expand and collapse controls.
const MARGIN_X: i64 = 30;
/// Characters of a name that fit in a node's box.
const LABEL_CHARS: usize = 24;

impl LineageView {
    /// The URL of this view.
    fn url(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("up", &self.up.to_string());
        q.append_pair("down", &self.down.to_string());
        for (side, node) in &self.expanded {
            q.append_pair(
                "expand",
                &format!("{}:{}:{}", side.word(), node.slug(), node.id),
            );
        }
        format!(
            "/lineage/{}/{}?{}",
            self.focus.slug(),
            self.focus.id,
            q.finish()
        )
    }

    fn with(&self, change: impl FnOnce(&mut LineageView)) -> String {
        let mut view = self.clone();
        change(&mut view);
        view.url()
    }

    /// Lays the loaded graphs out in layers by distance from the focus (upstream to the left,
    /// downstream to the right) and gives every node its links: its page, re-centring on it,
    /// and expanding or collapsing it.
    ///
    /// `loaded` holds each traversal: the side, where it started, its depth, and its answer.
    fn draw(&self, loaded: &[(Side, NodeKey, i32, Value)]) -> Value {
        let mut nodes: BTreeMap<NodeKey, Value> = BTreeMap::new();
        let mut edges: Vec<(NodeKey, NodeKey, String)> = Vec::new();
        let mut seen_edges: HashSet<(NodeKey, NodeKey, String)> = HashSet::new();
        // Nodes whose neighbours on their side are all drawn: inside a traversal's depth.
        let mut explored: HashSet<NodeKey> = HashSet::new();
        for (side, start, depth, graph) in loaded {
            for n in graph["nodes"].as_array().into_iter().flatten() {
                nodes.entry(NodeKey::of(n)).or_insert_with(|| n.clone());
            }
            let mut local: Vec<(NodeKey, NodeKey)> = Vec::new();
            for e in graph["edges"].as_array().into_iter().flatten() {
                let edge = (
                    NodeKey::of(&e["from"]),
                    NodeKey::of(&e["to"]),
                    e["relation"].as_str().unwrap_or_default().to_owned(),
                );
                local.push((edge.0.clone(), edge.1.clone()));
                if seen_edges.insert(edge.clone()) {
                    edges.push(edge);
                }
            }
            for (node, d) in distances(start, &local, *side) {
                if (d as i64) < i64::from(*depth) {
                    explored.insert(node);
                }
            }
        }
        let all: Vec<(NodeKey, NodeKey)> = edges
            .iter()
            .map(|(f, t, _)| (f.clone(), t.clone()))
            .collect();
        let up = distances(&self.focus, &all, Side::Up);
        let down = distances(&self.focus, &all, Side::Down);
        // Layer of each node: negative upstream, positive downstream.
        let mut layers: BTreeMap<i64, Vec<NodeKey>> = BTreeMap::new();
        let mut layer_of: HashMap<NodeKey, i64> = HashMap::new();
        for key in nodes.keys() {
            let layer = if *key == self.focus {
                0
            } else if let Some(d) = up.get(key) {
                -(*d as i64)
            } else if let Some(d) = down.get(key) {
                *d as i64
            } else {
                continue;
            };
            layers.entry(layer).or_default().push(key.clone());
            layer_of.insert(key.clone(), layer);
        }
        let first = layers.keys().next().copied().unwrap_or(0);
        let mut placed: HashMap<NodeKey, (i64, i64)> = HashMap::new();
        let mut columns = Vec::new();
        let mut drawn_nodes = Vec::new();
        let mut tallest = 0;
        for (layer, keys) in &mut layers {
            keys.sort_by_key(|k| (k.kind.clone(), label(&nodes[k]).0));
            let x = MARGIN_X + (layer - first) * (NODE_W + COL_GAP);
            let mut column = Vec::new();
            for (row, key) in keys.iter().enumerate() {
                let y = MARGIN + row as i64 * (NODE_H + ROW_GAP);
                placed.insert(key.clone(), (x, y));
                let node = self.node(key, &nodes[key], *layer, x, y, &explored, &all);
                column.push(node.clone());
                drawn_nodes.push(node);
            }
            tallest = tallest.max(keys.len() as i64);
            columns.push(json!({
                "layer": layer,
                "heading": match layer.cmp(&0) {
                    std::cmp::Ordering::Less => format!("{} step{} upstream", -layer, if *layer == -1 { "" } else { "s" }),
                    std::cmp::Ordering::Equal => "focus".to_owned(),
                    std::cmp::Ordering::Greater => format!("{layer} step{} downstream", if *layer == 1 { "" } else { "s" }),
                },
                "nodes": column,
            }));
        }
        let lines: Vec<Value> = edges
            .iter()
            .filter_map(|(from, to, relation)| {
                let (&(fx, fy), &(tx, ty)) = (placed.get(from)?, placed.get(to)?);
                // `from` depends on `to`: `to` sits to the left unless they share a layer.
                let (x1, y1, x2, y2) = if tx < fx {
                    (tx + NODE_W, ty + NODE_H / 2, fx, fy + NODE_H / 2)
                } else if tx > fx {
                    (tx, ty + NODE_H / 2, fx + NODE_W, fy + NODE_H / 2)
                } else {
                    (fx + NODE_W / 2, fy + NODE_H, tx + NODE_W / 2, ty)
                };
                let bend = (x2 - x1) / 2;
                Some(json!({
                    "path": format!("M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}", x1 + bend, x2 - bend),
                    "relation": relation,
                    "from": label(&nodes[from]).0,
                    "to": label(&nodes[to]).0,
                }))
            })
            .collect();
        let width = MARGIN_X * 2 + (layers.len() as i64).max(1) * (NODE_W + COL_GAP) - COL_GAP;
        let height = MARGIN * 2 + tallest.max(1) * (NODE_H + ROW_GAP) - ROW_GAP;
        json!({
            "width": width,
            "height": height,
            "columns": columns,
            "nodes": drawn_nodes,
            "edges": lines,
            "node_w": NODE_W,
            "node_h": NODE_H,
        })
    }

    /// One node as the template draws it.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &self,
        key: &NodeKey,
        value: &Value,
        layer: i64,
        x: i64,
        y: i64,
        explored: &HashSet<NodeKey>,
        edges: &[(NodeKey, NodeKey)],
    ) -> Value {
        let (name, kind, href) = label(value);
        let side = match layer.cmp(&0) {
            std::cmp::Ordering::Less => Some(Side::Up),
            std::cmp::Ordering::Greater => Some(Side::Down),
            std::cmp::Ordering::Equal => None,
        };
        let expanded_here = side.is_some_and(|s| self.expanded.contains(&(s, key.clone())));
        let can_expand = side.is_some()
            && !explored.contains(key)
            && !expanded_here
            && self.expanded.len() < MAX_EXPANDED;
        let expand = can_expand.then(|| {
            let side = side.unwrap_or(Side::Up);
            self.with(|v| v.expanded.push((side, key.clone())))
        });
        // Collapsing a node also closes what was opened beyond it.
        let collapse = expanded_here.then(|| {
            let side = side.unwrap_or(Side::Up);
            let beyond = distances(key, edges, side);
            self.with(|v| v.expanded.retain(|(_, n)| !beyond.contains_key(n)))
        });
        let short: String = if name.chars().count() > LABEL_CHARS {
            name.chars().take(LABEL_CHARS - 1).chain(['…']).collect()
        } else {
            name.clone()
        };
        let focus_url = LineageView {
            focus: key.clone(),
            up: self.up,
            down: self.down,
            expanded: Vec::new(),
        }
        .url();
        json!({
            "dom_id": format!("node-{}", key.id),
            "kind": kind,
            "kind_slug": key.slug(),
            "name": name,
            "short": short,
            "href": href,
            "focus": *key == self.focus,
            "focus_url": focus_url,
            "expand_url": expand,
            "collapse_url": collapse,
            "x": x,
            "y": y,
            "text_x": x + 10,
            "kind_y": y + 20,
            "name_y": y + 40,
            "control_x": match side { Some(Side::Up) => x - 14, _ => x + NODE_W + 14 },
            "control_y": y + NODE_H / 2,
        })
    }
}

/// Shortest distances from `start` along edges on one side: upstream follows `from → to`
/// (what a node came from), downstream the reverse.
fn distances(start: &NodeKey, edges: &[(NodeKey, NodeKey)], side: Side) -> HashMap<NodeKey, usize> {
    let mut next: HashMap<&NodeKey, Vec<&NodeKey>> = HashMap::new();
    for (from, to) in edges {
        match side {
            Side::Up => next.entry(from).or_default().push(to),
            Side::Down => next.entry(to).or_default().push(from),
        }
    }
    let mut dist = HashMap::from([(start.clone(), 0)]);
    let mut queue = VecDeque::from([start.clone()]);
    while let Some(node) = queue.pop_front() {
        let d = dist[&node];
        for n in next.get(&node).into_iter().flatten() {
            if !dist.contains_key(*n) {
                dist.insert((*n).clone(), d + 1);
                queue.push_back((*n).clone());
            }
        }
    }
    dist
}

/// A node's name, kind in words, and the page it links to (none for code commits and
/// deployments, which have no page).
fn label(node: &Value) -> (String, &'static str, Option<String>) {
    let short_id = node["id"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(8)
        .collect::<String>();
    if let Some(run) = node["run"].as_object() {
        let name = run
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("run {short_id}"));
        return (
            "run ".to_owned() + &name,
            "run",
            Some(format!("/runs/{}", node["id"].as_str().unwrap_or_default())),
        );
    }
    if let Some(dv) = node["datasetVersion"].as_object() {
        let name = dv["dataset"]["name"].as_str().unwrap_or_default();
        let project = dv["dataset"]["project"]["name"]
            .as_str()
            .unwrap_or_default();
        let version = &dv["version"];
        return (
            format!("{name} v{version}"),
            "dataset version",
            Some(format!(
                "/projects/{}/datasets/{}#v{version}",
                encode(project),
                encode(name)
            )),
        );
    }
    if let Some(mv) = node["modelVersion"].as_object() {
        let name = mv["model"]["name"].as_str().unwrap_or_default();
        let project = mv["run"]["project"]["name"].as_str().unwrap_or_default();
        let version = &mv["version"];
        return (
            format!("{name} v{version}"),
            "model version",
            Some(format!(
                "/projects/{}/models/{}/versions/{version}",
                encode(project),
                encode(name)
            )),
        );
    }
    if let Some(commit) = node["codeCommit"].as_object() {
        let sha = commit["commit"].as_str().unwrap_or_default();
        let repo = commit["repository"].as_str().unwrap_or_default();
        let repo = repo.rsplit('/').next().unwrap_or(repo);
        let dirty = if commit["dirty"] == json!(true) {
            " (dirty)"
        } else {
            ""
        };
        return (
            format!("{repo}@{}{dirty}", &sha[..sha.len().min(10)]),
            "code commit",
            None,
        );
    }
    let kind = match node["kind"].as_str() {
        Some("DEPLOYMENT") => "deployment",
        Some("RUN") => "run",
        Some("DATASET_VERSION") => "dataset version",
        Some("MODEL_VERSION") => "model version",
        _ => "node",
    };
    (format!("{kind} {short_id}"), kind, None)
}

#[derive(Deserialize)]
struct LineageParams {
    up: Option<i32>,
    down: Option<i32>,
}

/// The lineage explorer, centred on any node the person may read:
/// `/lineage/{kind}/{id}?up=2&down=1&expand=up:run:<id>`. Every view is its URL, so it can be
/// bookmarked and shared, and works without JavaScript.
#[get("/lineage/{kind}/{id}")]
async fn lineage(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    path: web::Path<(String, String)>,
    params: web::Query<LineageParams>,
) -> HttpResponse {
    let session = match signed_in(&state, &http).await {
        Ok(s) => s,
        Err(redirect) => return redirect,
    };
    let view = match parse_view(&path.0, &path.1, &params, http.query_string()) {
        Ok(view) => view,
        Err(e) => return refused(&e),
    };
    // One document: each side of the focus to its depth, and each expanded node one step.
    let mut variables = json!({
        "focus": {"kind": view.focus.kind, "id": view.focus.id},
        "up": view.up,
        "down": view.down,
    });
    let mut params = vec![
        "$focus: NodeRef!".to_owned(),
        "$up: Int!".into(),
        "$down: Int!".into(),
    ];
    let mut fields = vec![
        "focus: lineage(node: $focus, direction: UPSTREAM, depth: 0) { ...G }".to_owned(),
        "up: lineage(node: $focus, direction: UPSTREAM, depth: $up) { ...G }".into(),
        "down: lineage(node: $focus, direction: DOWNSTREAM, depth: $down) { ...G }".into(),
    ];
    for (i, (side, node)) in view.expanded.iter().enumerate() {
        params.push(format!("$x{i}: NodeRef!"));
        variables[format!("x{i}")] = json!({"kind": node.kind, "id": node.id});
        fields.push(format!(
            "x{i}: lineage(node: $x{i}, direction: {}, depth: 1) {{ ...G }}",
            side.direction()
        ));
    }
    let document = format!(
        "query({}) {{ {} }} {}",
        params.join(", "),
        fields.join(" "),
        graph_fragment()
    );
    let data = match read(&schema, &state, &session, &document, variables).await {
        Ok(data) => data,
        Err(e) => return refused(&e),
    };
    let mut loaded = vec![
        (Side::Up, view.focus.clone(), view.up, data["up"].clone()),
        (
            Side::Down,
            view.focus.clone(),
            view.down,
            data["down"].clone(),
        ),
    ];
    for (i, (side, node)) in view.expanded.iter().enumerate() {
        loaded.push((*side, node.clone(), 1, data[format!("x{i}")].clone()));
    }
    let graph = view.draw(&loaded);
    let focus = data["focus"]["nodes"][0].clone();
    let (name, kind, href) = label(&focus);
    let depth = |side: Side, d: i32| {
        let shallower = (d > 0).then(|| {
            view.with(|v| match side {
                Side::Up => v.up = d - 1,
                Side::Down => v.down = d - 1,
            })
        });
        let deeper = (d < MAX_LINEAGE_DEPTH).then(|| {
            view.with(|v| match side {
                Side::Up => v.up = d + 1,
                Side::Down => v.down = d + 1,
            })
        });
        json!({"depth": d, "fewer": shallower, "more": deeper})
    };
    let context = json!({
        "focus": {"name": name, "kind": kind, "href": href},
        "graph": graph,
        "up": depth(Side::Up, view.up),
        "down": depth(Side::Down, view.down),
        "expanded": view.expanded.len(),
        "max_expanded": MAX_EXPANDED,
        "reset": LineageView { expanded: Vec::new(), ..view.clone() }.url(),
    });
    page(StatusCode::OK, "ui/lineage.html", layout(&session, context))
}

/// The view a lineage URL names; anything malformed is refused with what to fix.
fn parse_view(
    kind: &str,
    id: &str,
    params: &LineageParams,
    query_string: &str,
) -> Result<LineageView, Error> {
    let uuid = |id: &str| -> Result<String, Error> {
        uuid::Uuid::parse_str(id)
            .map(|u| u.to_string())
            .map_err(|_| Error::not_found("no such node"))
    };
    let kind = NodeKey::parse_kind(kind).ok_or_else(|| Error::not_found("no such node"))?;
    let focus = NodeKey::new(kind, &uuid(id)?);
    let depth = |d: Option<i32>, default: i32| match d.unwrap_or(default) {
        d if (0..=MAX_LINEAGE_DEPTH).contains(&d) => Ok(d),
        d => Err(Error::invalid(format!(
            "a lineage depth is between 0 and {MAX_LINEAGE_DEPTH}, not {d}"
        ))),
    };
    let up = depth(params.up, VERSION_PAGE_UP)?;
    let down = depth(params.down, VERSION_PAGE_DOWN)?;
    // `expand` repeats, which a struct of the query cannot hold: read it from the raw query.
    let mut expanded = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query_string.as_bytes()) {
        if name != "expand" {
            continue;
        }
        let bad = || {
            Error::invalid(format!(
                "`{value}` is not a node to expand (up|down:kind:id)"
            ))
        };
        let mut parts = value.splitn(3, ':');
        let side = match parts.next() {
            Some("up") => Side::Up,
            Some("down") => Side::Down,
            _ => return Err(bad()),
        };
        let kind = parts.next().and_then(NodeKey::parse_kind).ok_or_else(bad)?;
        let id = parts.next().ok_or_else(bad)?;
        let node = NodeKey::new(kind, &uuid(id).map_err(|_| bad())?);
        if !expanded.contains(&(side, node.clone())) {
            expanded.push((side, node));
        }
    }
    if expanded.len() > MAX_EXPANDED {
        return Err(Error::invalid(format!(
            "at most {MAX_EXPANDED} nodes can be expanded at once"
        )));
    }
    Ok(LineageView {
        focus,
        up,
        down,
        expanded,
    })
}

// ---------------------------------------------------------------------------------------------
// Datasets

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
    render(
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
    render(
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
            let next = (versions.len() as i32 == VERSIONS_PER_PAGE)
                .then(|| versions.last().map(|v| v["version"].clone()))
                .flatten();
            Ok(json!({"dataset": data["dataset"], "next_after": next}))
        },
    )
    .await
}
