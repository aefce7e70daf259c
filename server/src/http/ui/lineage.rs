//! The lineage explorer (`/lineage/{kind}/{id}`) and the graph the version page draws: laid out
//! here in columns by distance from the focus (upstream left, downstream right), drawn as an SVG
//! of real links with a table saying the same in words. Expand and collapse are URL parameters,
//! so every view can be bookmarked and works without scripts; each loads only what it draws.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{encode, layout, read_hiding, refused, signed_in};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::page;
use crate::state::AppState;

/// Depths the lineage explorer draws at most on each side, and how many nodes may be expanded
/// beyond them: every view loads only what it draws.
pub(super) const MAX_LINEAGE_DEPTH: i32 = 4;
const MAX_EXPANDED: usize = 10;
/// The version page's own drawing: what the version came from (its run, that run's datasets
/// and commit) and what came from it.
pub(super) const VERSION_PAGE_UP: i32 = 2;
pub(super) const VERSION_PAGE_DOWN: i32 = 1;

/// What every lineage node answers, for drawing and linking it.
pub(super) const NODE_FIELDS: &str = "kind id
  run { id name status project { name } }
  datasetVersion { id version tags dataset { name project { name } } }
  modelVersion { id version stage model { name } run { project { name } } }
  codeCommit { id repository commit dirty }
  job { namespace name }";

pub(super) fn graph_fragment() -> String {
    format!(
        "fragment G on LineageGraph {{ nodes {{ {NODE_FIELDS} }} edges {{ from {{ kind id }} to {{ kind id }} relation }} }}"
    )
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(lineage);
}

/// A node by kind (GraphQL's `NodeKind`) and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct NodeKey {
    kind: String,
    id: String,
}

impl NodeKey {
    pub(super) fn new(kind: &str, id: &str) -> Self {
        NodeKey {
            kind: kind.to_owned(),
            id: id.to_owned(),
        }
    }

    pub(super) fn of(value: &Value) -> Self {
        NodeKey::new(
            value["kind"].as_str().unwrap_or_default(),
            value["id"].as_str().unwrap_or_default(),
        )
    }

    /// The kind as it appears in URLs: `model_version`, `run`, …
    pub(super) fn slug(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    pub(super) fn parse_kind(slug: &str) -> Option<&'static str> {
        Some(match slug {
            "dataset_version" => "DATASET_VERSION",
            "code_commit" => "CODE_COMMIT",
            "run" => "RUN",
            "model_version" => "MODEL_VERSION",
            "deployment" => "DEPLOYMENT",
            "job" => "JOB",
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Side {
    Up,
    Down,
}

impl Side {
    pub(super) fn word(self) -> &'static str {
        match self {
            Side::Up => "up",
            Side::Down => "down",
        }
    }

    pub(super) fn direction(self) -> &'static str {
        match self {
            Side::Up => "UPSTREAM",
            Side::Down => "DOWNSTREAM",
        }
    }
}

/// One view of the lineage explorer, as its URL says: the focus, how far to draw each side,
/// and the nodes opened one step further.
#[derive(Clone, Debug)]
pub(super) struct LineageView {
    pub(super) focus: NodeKey,
    pub(super) up: i32,
    pub(super) down: i32,
    pub(super) expanded: Vec<(Side, NodeKey)>,
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
    pub(super) fn url(&self) -> String {
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

    pub(super) fn with(&self, change: impl FnOnce(&mut LineageView)) -> String {
        let mut view = self.clone();
        change(&mut view);
        view.url()
    }

    /// Lays the loaded graphs out in layers by distance from the focus (upstream to the left,
    /// downstream to the right) and gives every node its links: its page, re-centring on it,
    /// and expanding or collapsing it.
    ///
    /// `loaded` holds each traversal: the side, where it started, its depth, and its answer.
    pub(super) fn draw(&self, loaded: &[(Side, NodeKey, i32, Value)]) -> Value {
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
    pub(super) fn node(
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
pub(super) fn distances(
    start: &NodeKey,
    edges: &[(NodeKey, NodeKey)],
    side: Side,
) -> HashMap<NodeKey, usize> {
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

/// A node's name, kind in words, and the page it links to (none for code commits, deployments
/// and jobs, which have no page).
pub(super) fn label(node: &Value) -> (String, &'static str, Option<String>) {
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
    if let Some(job) = node["job"].as_object() {
        let name = job["name"].as_str().unwrap_or_default();
        let namespace = job["namespace"].as_str().unwrap_or_default();
        return (format!("job {namespace}/{name}"), "job", None);
    }
    let kind = match node["kind"].as_str() {
        Some("DEPLOYMENT") => "deployment",
        Some("JOB") => "job",
        Some("RUN") => "run",
        Some("DATASET_VERSION") => "dataset version",
        Some("MODEL_VERSION") => "model version",
        _ => "node",
    };
    (format!("{kind} {short_id}"), kind, None)
}

#[derive(Deserialize)]
pub(super) struct LineageParams {
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
    let data = match read_hiding(&schema, &state, &session, &document, variables).await {
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
pub(super) fn parse_view(
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
