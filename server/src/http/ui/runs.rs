//! A project's runs table and a run's page.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{layout, query, refused, show, signed_in};
use crate::error::Error;
use crate::graphql::CustodySchema;
use crate::http::pages::page;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(project).service(run).service(compare);
}

/// Runs of a project per page of its table.
const RUNS_PER_PAGE: i64 = 50;

/// Most columns the table shows, and how many it starts with when none are chosen.
const MAX_COLUMNS: usize = 12;
const DEFAULT_METRIC_COLUMNS: usize = 3;
const DEFAULT_PARAM_COLUMNS: usize = 2;

/// Keys offered as columns and completed in the filter box.
const OFFERED_KEYS: i64 = 1000;

const PROJECT: &str = "query($p: String!, $filter: String, $order: [RunOrder!], $first: Int!,
    $after: String, $metricKeys: [String!], $offered: Int!) {
  project(name: $p) { name description runKeys(first: $offered) }
  searchRuns(projects: [$p], filter: $filter, orderBy: $order, first: $first, after: $after) {
    edges { node { id name status startedAt endedAt tags params { key value }
      latestMetrics(keys: $metricKeys) { key value } } }
    pageInfo { hasNextPage endCursor } }
}";

#[derive(Deserialize)]
struct RunsQuery {
    filter: Option<String>,
    after: Option<String>,
    /// Chosen columns, comma-separated keys in the search syntax (`metrics.auc,params.lr`).
    columns: Option<String>,
    /// A column to add (the column chooser's field).
    add: Option<String>,
    /// The key the table is sorted by, and whether descending.
    order: Option<String>,
    desc: Option<String>,
}

/// The table's state as the page's URL carries it, so every view can be bookmarked and shared.
struct TableView {
    filter: Option<String>,
    columns: Vec<String>,
    order: Option<(String, bool)>,
}

impl TableView {
    /// The URL of this view of the project's table with `change` applied.
    fn url(
        &self,
        project_name: &str,
        change: impl FnOnce(&mut Vec<(&'static str, String)>),
    ) -> String {
        let mut pairs: Vec<(&'static str, String)> = Vec::new();
        if let Some(f) = &self.filter {
            pairs.push(("filter", f.clone()));
        }
        if !self.columns.is_empty() {
            pairs.push(("columns", self.columns.join(",")));
        }
        if let Some((key, desc)) = &self.order {
            pairs.push(("order", key.clone()));
            if *desc {
                pairs.push(("desc", "1".into()));
            }
        }
        change(&mut pairs);
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        let base = format!("/projects/{}", urlencoding(project_name));
        match query.finish() {
            q if q.is_empty() => base,
            q => format!("{base}?{q}"),
        }
    }

    fn without(pairs: &mut Vec<(&'static str, String)>, key: &str) {
        pairs.retain(|(k, _)| *k != key);
    }
}

fn urlencoding(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn blank_to_none(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
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
    let mut columns: Vec<String> = params
        .columns
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(added) = blank_to_none(&params.add) {
        if !columns.contains(&added) {
            columns.push(added);
        }
    }
    columns.truncate(MAX_COLUMNS);
    let view = TableView {
        filter: blank_to_none(&params.filter),
        order: blank_to_none(&params.order).map(|k| (k, params.desc.as_deref() == Some("1"))),
        columns,
    };
    // A column names a metric, param or tag in the search syntax; anything else is refused
    // here with the page still usable (the API would refuse an unknown sort key the same way).
    if let Some(bad) = view.columns.iter().find(|c| column_kind(c).is_none()) {
        return refused(&Error::invalid(format!(
            "column `{bad}` is not a key such as metrics.auc, params.depth or tags.team"
        )));
    }
    let metric_keys: Vec<&str> = view
        .columns
        .iter()
        .filter_map(|c| c.strip_prefix("metrics."))
        .collect();
    let order = view
        .order
        .as_ref()
        .map(|(key, desc)| json!([{"key": key, "descending": desc}]));
    let variables = json!({
        "p": name.as_str(), "filter": view.filter, "order": order, "first": RUNS_PER_PAGE,
        "after": params.after, "metricKeys": metric_keys, "offered": OFFERED_KEYS,
    });
    let data = match query(&schema, &state, &session, PROJECT, variables).await {
        Ok(data) if data["project"].is_null() => {
            return refused(&Error::not_found(format!("no project named `{name}`")))
        }
        Ok(data) => Ok(data),
        // A filter or sort that does not parse: the page says why, with the filter to fix.
        Err(Error::InvalidInput(why)) if view.filter.is_some() || view.order.is_some() => Err(why),
        Err(e) => return refused(&e),
    };
    let mut context = runs_table(&name, view, data);
    context["after"] = json!(params.after.is_some());
    page(StatusCode::OK, "ui/project.html", layout(&session, context))
}

/// `metrics`, `params` or `tags`: what a column key names.
fn column_kind(column: &str) -> Option<(&'static str, &str)> {
    ["metrics", "params", "tags"].into_iter().find_map(|kind| {
        column
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|key| !key.is_empty())
            .map(|key| (kind, key))
    })
}

/// The runs table's context: each run's cell per column, the header's sort and remove links,
/// the keys on offer, the next page.
fn runs_table(project_name: &str, mut view: TableView, data: Result<Value, String>) -> Value {
    let (data, filter_error) = match data {
        Ok(data) => (data, None),
        Err(why) => (json!({"project": {"name": project_name}}), Some(why)),
    };
    let offered: Vec<String> = data["project"]["runKeys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    if view.columns.is_empty() {
        // Nothing chosen yet: the first few metrics and params the project's runs have.
        let first_of = |prefix: &str, n: usize| {
            offered
                .iter()
                .filter(|k| k.starts_with(prefix))
                .take(n)
                .cloned()
                .collect::<Vec<_>>()
        };
        view.columns = first_of("metrics.", DEFAULT_METRIC_COLUMNS);
        view.columns
            .extend(first_of("params.", DEFAULT_PARAM_COLUMNS));
    }
    let runs: Vec<Value> = data["searchRuns"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|edge| {
            let node = &edge["node"];
            let cells: Vec<Value> = view.columns.iter().map(|c| cell(node, c)).collect();
            json!({"id": node["id"], "name": node["name"], "status": node["status"],
                   "startedAt": node["startedAt"], "cells": cells})
        })
        .collect();
    let headers: Vec<Value> = view
        .columns
        .iter()
        .map(|column| {
            let sorted = view.order.as_ref().filter(|(k, _)| k == column);
            let descending_next = matches!(sorted, Some((_, false)));
            json!({
                "key": column,
                "sorted": sorted.map(|(_, desc)| if *desc { "descending" } else { "ascending" }),
                "sort_url": view.url(project_name, |p| {
                    TableView::without(p, "order");
                    TableView::without(p, "desc");
                    p.push(("order", column.clone()));
                    if descending_next {
                        p.push(("desc", "1".into()));
                    }
                }),
                "remove_url": view.url(project_name, |p| {
                    TableView::without(p, "columns");
                    let rest: Vec<&str> = view.columns.iter().filter(|c| *c != column)
                        .map(String::as_str).collect();
                    // Removing the last chosen column brings the defaults back.
                    if !rest.is_empty() {
                        p.push(("columns", rest.join(",")));
                    }
                }),
            })
        })
        .collect();
    let next_page = data["searchRuns"]["pageInfo"]["endCursor"]
        .as_str()
        .filter(|_| data["searchRuns"]["pageInfo"]["hasNextPage"] == json!(true))
        .map(|cursor| view.url(project_name, |p| p.push(("after", cursor.to_owned()))));
    let first_page = view.url(project_name, |_| {});
    json!({
        "project": data["project"],
        "filter": view.filter.as_deref().unwrap_or(""),
        "filter_error": filter_error,
        "columns": view.columns.join(","),
        "order": view.order.as_ref().map(|(k, _)| k),
        "desc": view.order.as_ref().is_some_and(|(_, d)| *d),
        "headers": headers,
        "runs": runs,
        "offered": offered,
        "next_page": next_page,
        "first_page": first_page,
    })
}

/// A run's value in a column: a metric's latest value, a param, a tag; empty when it has none.
fn cell(node: &Value, column: &str) -> Value {
    let Some((kind, key)) = column_kind(column) else {
        return Value::Null;
    };
    let find = |list: &str| {
        node[list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|item| item["key"] == json!(key))
            .map(|item| item["value"].clone())
    };
    match kind {
        "metrics" => find("latestMetrics"),
        "params" => find("params"),
        _ => node["tags"].get(key).cloned(),
    }
    .unwrap_or(Value::Null)
}

/// Metric charts a run or compare page draws at most (one per key).
const MAX_CHARTS: usize = 24;

const RUN: &str = "query($id: ID!) {
  run(id: $id) { id name status startedAt endedAt tags project { name }
    params { key value } artifacts { path size sha256 }
    inputs { id version sha256 dataset { name project { name } } }
    codeCommit { repository commit branch dirty }
    latestMetrics { key value step } }
}";

#[get("/runs/{id}")]
async fn run(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let request = (RUN, json!({"id": id.as_str()}));
    show(
        &state,
        &schema,
        &http,
        "ui/run.html",
        request,
        |mut data| {
            if data["run"].is_null() {
                return Err(Error::not_found("no such run"));
            }
            let keys: Vec<Value> = data["run"]["latestMetrics"]
                .as_array()
                .into_iter()
                .flatten()
                .take(MAX_CHARTS)
                .map(|m| m["key"].clone())
                .collect();
            data["chart_keys"] = json!(keys);
            data["tags"] = json!(labels(&data["run"]["tags"]));
            Ok(data)
        },
    )
    .await
}

/// Tags as `[{key, value}]` in key order, for a template to list.
fn labels(tags: &Value) -> Vec<Value> {
    let mut pairs: Vec<Value> = tags
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    pairs.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    pairs
}

const COMPARE: &str = "query($ids: [ID!]!) {
  compareRuns(ids: $ids) {
    runs { id name status startedAt project { name }
      codeCommit { repository commit } inputs { version dataset { name } } }
    params { key values differs }
    metrics { key values differs } }
}";

/// Runs side by side: params (differences first, or only them), latest metrics, and one chart
/// per metric with every run's history overlaid. `runs` repeats (a form's ticked boxes).
#[get("/compare")]
async fn compare(
    state: web::Data<AppState>,
    schema: web::Data<CustodySchema>,
    http: HttpRequest,
) -> HttpResponse {
    let mut ids: Vec<String> = Vec::new();
    let mut only_differences = false;
    for (key, value) in url::form_urlencoded::parse(http.query_string().as_bytes()) {
        match &*key {
            "runs" if !ids.contains(&value.to_string()) => ids.push(value.into_owned()),
            "diff" => only_differences = value == "1",
            _ => {}
        }
    }
    if ids.len() < 2 {
        return match signed_in(&state, &http).await {
            Ok(_) => refused(&Error::invalid(
                "pick at least two runs to compare: tick them in a project's runs table",
            )),
            Err(redirect) => redirect,
        };
    }
    let here = |diff: bool| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for id in &ids {
            q.append_pair("runs", id);
        }
        if diff {
            q.append_pair("diff", "1");
        }
        format!("/compare?{}", q.finish())
    };
    let (all_url, diff_url) = (here(false), here(true));
    let request = (COMPARE, json!({"ids": ids}));
    show(&state, &schema, &http, "ui/compare.html", request, |data| {
        let compared = &data["compareRuns"];
        let runs = compared["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() < 2 {
            // Runs the person cannot read are left out as if they did not exist.
            return Err(Error::not_found(
                "fewer than two of these runs exist or are readable to you",
            ));
        }
        let rows = |list: &str| -> Vec<Value> {
            let mut rows: Vec<Value> = compared[list]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|row| !only_differences || row["differs"] == json!(true))
                .cloned()
                .collect();
            // Differences first: they are what a comparison is for.
            rows.sort_by_key(|row| row["differs"] != json!(true));
            rows
        };
        let metrics = rows("metrics");
        let chart_keys: Vec<Value> = compared["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .take(MAX_CHARTS)
            .map(|m| m["key"].clone())
            .collect();
        let run_ids: Vec<&str> = runs.iter().filter_map(|r| r["id"].as_str()).collect();
        let run_names: Vec<String> = runs
            .iter()
            .map(|r| {
                r["name"]
                    .as_str()
                    .or(r["id"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        Ok(json!({
            "runs": runs,
            "params": rows("params"),
            "metrics": metrics,
            "chart_keys": chart_keys,
            "run_ids": run_ids,
            "run_names": run_names,
            "only_differences": only_differences,
            "all_url": all_url,
            "diff_url": diff_url,
        }))
    })
    .await
}
