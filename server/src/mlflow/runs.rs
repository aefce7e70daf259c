//! Tracking: runs, their params, metrics and tags, searches and metric histories, through
//! Custody's run functions. What MLflow's client sends that Custody governs differently:
//! - params are immutable in both; changing one is MLflow's INVALID_PARAMETER_VALUE;
//! - an ended run is sealed: no more metrics or params, and it is not reopened (MLflow would
//!   let `start_run(run_id=…)` resume it) — INVALID_STATE says so;
//! - times are the server's: `start_time`/`end_time` sent by the client are not trusted for a
//!   record auditors read (metric timestamps, which are observations, are kept as sent);
//! - the git commit MLflow's client reports (`mlflow.source.git.commit`, with `…repoURL`,
//!   `…branch`, `…dirty`) becomes the run's code commit node, linked in the lineage graph;
//! - `delete_run` hides the run from MLflow's searches; the record stays (see
//!   `crate::runs::set_deleted`).

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpRequest};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use serde_json::{json, Value};

use super::experiments::{self, page_size, ViewType};
use super::request::{args, lenient, ok, required, Call, MlflowError, Reply};
use super::wire::{self, KeyValue};
use crate::actor::Actor;
use crate::auth;
use crate::code::{self, NewCommit};
use crate::db::schema::{mlflow_logged_models, mlflow_run_outputs};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::RunId;
use crate::labels::{self, Tagged};
use crate::metric_history::{self, HistoryRequest};
use crate::projects::{self, Role};
use crate::runs::{self as custody_runs, NewMetric, NewRun, Run, RunStatus};
use crate::search::runs::RUNS;
use crate::search::sql::{self, Search};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/runs/create", web::post().to(create))
        .route("/runs/get", web::get().to(get))
        .route("/runs/update", web::post().to(update))
        .route("/runs/delete", web::post().to(delete))
        .route("/runs/restore", web::post().to(restore))
        .route("/runs/search", web::post().to(search))
        .route("/runs/log-metric", web::post().to(log_metric))
        .route("/runs/log-parameter", web::post().to(log_parameter))
        .route("/runs/set-tag", web::post().to(set_tag))
        .route("/runs/delete-tag", web::post().to(delete_tag))
        .route("/runs/log-batch", web::post().to(log_batch))
        .route("/runs/outputs", web::post().to(log_outputs))
        .route("/metrics/get-history", web::get().to(metric_history))
        .route(
            "/metrics/get-history-bulk-interval",
            web::get().to(metric_history_bulk),
        );
}

/// MLflow's tag that names the run (the client sends it with `run_name`; setting it renames).
const RUN_NAME_TAG: &str = "mlflow.runName";
const GIT_COMMIT_TAG: &str = "mlflow.source.git.commit";
const GIT_REPO_TAG: &str = "mlflow.source.git.repoURL";
const GIT_BRANCH_TAG: &str = "mlflow.source.git.branch";
const GIT_DIRTY_TAG: &str = "mlflow.source.git.dirty";
const SOURCE_NAME_TAG: &str = "mlflow.source.name";
/// MLflow's own limits of one `log-batch`.
const MAX_BATCH_PARAMS: usize = 100;
const MAX_BATCH_TAGS: usize = 100;
const MAX_BATCH_ENTRIES: usize = 1000;
/// The most runs one MLflow search answers (MLflow's own threshold; its pandas helper asks for
/// pages of 10,000).
const MAX_SEARCH_RESULTS: i64 = 50_000;
/// `get-history`'s page when the client names none.
const HISTORY_PAGE: i64 = 25_000;

fn parse_run_id(id: &str) -> Result<RunId> {
    id.parse()
        .map_err(|_| Error::not_found(format!("Run with id={id} not found")))
}

/// The run id a request names (`run_id`, or the older `run_uuid`).
fn run_id_of(run_id: Option<String>, run_uuid: Option<String>) -> Result<RunId, MlflowError> {
    let id = required(run_id.or(run_uuid), "run_id")?;
    Ok(parse_run_id(&id)?)
}

fn status_name(status: RunStatus) -> String {
    status.as_str().to_ascii_uppercase()
}

fn parse_status(text: &str) -> Result<RunStatus> {
    match text {
        "RUNNING" | "SCHEDULED" => Ok(RunStatus::Running),
        "FINISHED" => Ok(RunStatus::Finished),
        "FAILED" => Ok(RunStatus::Failed),
        "KILLED" => Ok(RunStatus::Killed),
        other => Err(Error::invalid(format!(
            "run status `{other}` is not one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED"
        ))),
    }
}

/// A run as MLflow's `RunInfo`.
fn run_info(run: &Run, user: &str) -> Value {
    let mut info = json!({
        "run_id": run.id.to_string(),
        "run_uuid": run.id.to_string(),
        "run_name": run.name.clone().unwrap_or_default(),
        "experiment_id": run.project_id.to_string(),
        "user_id": user,
        "status": status_name(run.status),
        "start_time": wire::millis(run.started_at),
        "artifact_uri": wire::artifact_uri("runs", &run.id.to_string()),
        "lifecycle_stage": if run.deleted_at.is_some() { "deleted" } else { "active" },
    });
    if let Some(ended) = run.ended_at {
        info["end_time"] = json!(wire::millis(ended));
    }
    info
}

/// Runs as MLflow's `Run` objects (info, latest metrics, params, tags, inputs, outputs), read in
/// one query per kind of data whatever the number of runs.
pub async fn to_wire(conn: &mut Conn, runs: &[Run]) -> Result<Vec<Value>> {
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    let mut creators: Vec<_> = runs.iter().map(|r| r.created_by).collect();
    creators.sort();
    creators.dedup();
    let emails: HashMap<_, String> = auth::users_by_ids(conn, &creators)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect();
    let mut params: HashMap<RunId, Vec<Value>> = HashMap::new();
    for p in custody_runs::params_of(conn, &ids).await? {
        params
            .entry(p.run_id)
            .or_default()
            .push(json!({"key": p.key, "value": p.value}));
    }
    let mut metrics: HashMap<RunId, Vec<Value>> = HashMap::new();
    for m in custody_runs::last_metrics(conn, &ids).await? {
        metrics.entry(m.run_id).or_default().push(json!({
            "key": m.key, "value": m.value, "timestamp": wire::millis(m.at), "step": m.step,
        }));
    }
    let mut inputs = super::datasets::inputs_of(conn, &ids).await?;
    let mut outputs: HashMap<RunId, Vec<Value>> = HashMap::new();
    let rows: Vec<(RunId, String, i64)> = mlflow_run_outputs::table
        .filter(mlflow_run_outputs::run_id.eq_any(&ids))
        .select((
            mlflow_run_outputs::run_id,
            mlflow_run_outputs::logged_model_id,
            mlflow_run_outputs::step,
        ))
        .load(conn)
        .await?;
    for (run_id, model_id, step) in rows {
        outputs
            .entry(run_id)
            .or_default()
            .push(json!({"model_id": model_id, "step": step}));
    }
    Ok(runs
        .iter()
        .map(|run| {
            let user = emails
                .get(&run.created_by)
                .map(String::as_str)
                .unwrap_or("");
            json!({
                "info": run_info(run, user),
                "data": {
                    "metrics": metrics.remove(&run.id).unwrap_or_default(),
                    "params": params.remove(&run.id).unwrap_or_default(),
                    "tags": wire::key_values(&run.tags),
                },
                "inputs": {"dataset_inputs": inputs.remove(&run.id).unwrap_or_default()},
                "outputs": {"model_outputs": outputs.remove(&run.id).unwrap_or_default()},
            })
        })
        .collect())
}

async fn one_to_wire(conn: &mut Conn, run: Run) -> Result<Value> {
    Ok(to_wire(conn, &[run])
        .await?
        .pop()
        .expect("one run in, one out"))
}

/// The code commit MLflow's client reported in the run's tags, registered (or found).
async fn reported_commit(
    conn: &mut Conn,
    actor: &Actor,
    tags: &BTreeMap<String, String>,
) -> Result<Option<crate::ids::CodeCommitId>> {
    let Some(commit) = tags.get(GIT_COMMIT_TAG) else {
        return Ok(None);
    };
    // Without a remote the client knows only the script's path: the checkout's folder names
    // the repository then.
    let repository = match (tags.get(GIT_REPO_TAG), tags.get(SOURCE_NAME_TAG)) {
        (Some(url), _) if !url.trim().is_empty() => url.clone(),
        (_, Some(source)) if source.starts_with('/') => {
            let folder = source.rsplit_once('/').map_or("/", |(dir, _)| dir);
            format!("file://{}", if folder.is_empty() { "/" } else { folder })
        }
        _ => "unknown (no git remote reported)".to_owned(),
    };
    let dirty = tags
        .get(GIT_DIRTY_TAG)
        .is_some_and(|d| d.eq_ignore_ascii_case("true"));
    let registered = code::register(
        conn,
        actor,
        NewCommit {
            repository: &repository,
            commit,
            branch: tags.get(GIT_BRANCH_TAG).map(String::as_str),
            author: None,
            message: None,
            dirty,
        },
    )
    .await?;
    Ok(Some(registered.id))
}

async fn create_run(
    conn: &mut Conn,
    actor: &Actor,
    experiment_id: &str,
    run_name: Option<&str>,
    tags: BTreeMap<String, String>,
) -> Result<Value> {
    let experiment = experiments::find(conn, actor, experiment_id, Role::Contributor).await?;
    let name = run_name
        .filter(|n| !n.is_empty())
        .or(tags.get(RUN_NAME_TAG).map(String::as_str))
        .map(str::to_owned);
    let code_commit_id = reported_commit(conn, actor, &tags).await?;
    let mut tags = tags;
    if let Some(name) = &name {
        tags.insert(RUN_NAME_TAG.to_owned(), name.clone());
    }
    let run = custody_runs::start(
        conn,
        actor,
        &experiment.name,
        NewRun {
            name: name.as_deref(),
            code_commit_id,
            inputs: Vec::new(),
            tags: Some(json!(tags)),
        },
    )
    .await?;
    one_to_wire(conn, run).await
}

/// `runs/update`: a new name, and or an end (FINISHED, FAILED, KILLED). Ending a run that already
/// ended the same way changes nothing (the client may say it twice); Custody does not reopen an
/// ended run.
async fn update_run(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    status: Option<RunStatus>,
    name: Option<&str>,
) -> Result<Run> {
    let mut run = custody_runs::get(conn, actor, run_id, Role::Contributor).await?;
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        run = custody_runs::rename(conn, actor, run_id, name).await?;
        if labels_of(&run).get(RUN_NAME_TAG).map(String::as_str) != Some(name) {
            labels::set_tag(conn, actor, Tagged::Run(run_id), RUN_NAME_TAG, Some(name)).await?;
        }
    }
    match status {
        None => {}
        Some(status) if status == run.status => {}
        Some(RunStatus::Running) => {
            return Err(Error::conflict(format!(
                "run {run_id} has ended as {}; Custody does not reopen an ended run",
                run.status
            )))
        }
        Some(status) => {
            custody_runs::finish(conn, actor, run_id, status).await?;
        }
    }
    custody_runs::get(conn, actor, run_id, Role::Viewer).await
}

fn labels_of(run: &Run) -> BTreeMap<String, String> {
    serde_json::from_value(run.tags.clone()).unwrap_or_default()
}

/// Sets a run tag; `mlflow.runName` also renames the run, as in MLflow.
async fn set_run_tag(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    key: &str,
    value: &str,
) -> Result<()> {
    labels::set_tag(conn, actor, Tagged::Run(run_id), key, Some(value)).await?;
    if key == RUN_NAME_TAG && !value.is_empty() {
        custody_runs::rename(conn, actor, run_id, value).await?;
    }
    Ok(())
}

/// A param change refused as MLflow words it (INVALID_PARAMETER_VALUE), not as a state error.
fn param_refusal(err: Error) -> Error {
    match err {
        Error::Conflict(message) if message.contains("immutable") => {
            Error::invalid(format!("Changing param values is not allowed. {message}"))
        }
        other => other,
    }
}

#[derive(Deserialize)]
struct MetricArg {
    key: Option<String>,
    #[serde(deserialize_with = "lenient::float")]
    value: f64,
    #[serde(default, deserialize_with = "lenient::int")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    step: Option<i64>,
}

impl MetricArg {
    fn into_new(self) -> Result<NewMetric, MlflowError> {
        Ok(NewMetric {
            key: required(self.key, "key")?,
            value: self.value,
            step: Some(self.step.unwrap_or(0)),
            at: self.timestamp.and_then(wire::from_millis),
        })
    }
}

/// `log-batch`: params, then metrics, then tags, in one transaction: all or nothing.
async fn log_batch_of(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    metrics: Vec<NewMetric>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
) -> Result<()> {
    if params.len() > MAX_BATCH_PARAMS
        || tags.len() > MAX_BATCH_TAGS
        || metrics.len() + params.len() + tags.len() > MAX_BATCH_ENTRIES
    {
        return Err(Error::invalid(format!(
            "A batch logging request can contain at most {} metrics, {MAX_BATCH_PARAMS} params \
             and {MAX_BATCH_TAGS} tags, {MAX_BATCH_ENTRIES} entries in all; got {} metrics, {} \
             params and {} tags",
            custody_runs::MAX_METRICS_PER_BATCH,
            metrics.len(),
            params.len(),
            tags.len()
        )));
    }
    if metrics.is_empty() && params.is_empty() && tags.is_empty() {
        // Nothing to log: still an error for a run the caller may not write, as MLflow answers.
        custody_runs::get(conn, actor, run_id, Role::Contributor).await?;
        return Ok(());
    }
    // Each function below authorizes the run itself.
    if !params.is_empty() {
        let params = params.into_iter().map(|p| (p.key, p.value)).collect();
        custody_runs::log_params(conn, actor, run_id, params)
            .await
            .map_err(param_refusal)?;
    }
    if !metrics.is_empty() {
        custody_runs::log_metrics(conn, actor, run_id, metrics).await?;
    }
    for tag in tags {
        set_run_tag(conn, actor, run_id, &tag.key, &tag.value).await?;
    }
    Ok(())
}

/// `log-outputs`: the logged models a run produced. Each must be a logged model of the run's
/// experiment; recording one twice keeps the first step.
async fn record_outputs(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    outputs: Vec<(String, i64)>,
) -> Result<()> {
    let run = custody_runs::get(conn, actor, run_id, Role::Contributor).await?;
    for (model_id, step) in &outputs {
        let project: Option<crate::ids::ProjectId> = mlflow_logged_models::table
            .find(model_id)
            .select(mlflow_logged_models::project_id)
            .first(conn)
            .await
            .optional()?;
        if project != Some(run.project_id) {
            return Err(Error::not_found(format!(
                "Logged model with ID '{model_id}' not found in the run's experiment"
            )));
        }
        diesel::insert_into(mlflow_run_outputs::table)
            .values((
                mlflow_run_outputs::run_id.eq(run_id),
                mlflow_run_outputs::logged_model_id.eq(model_id),
                mlflow_run_outputs::step.eq(step),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
    }
    crate::audit::record(
        conn,
        actor,
        crate::audit::Change {
            action: "run.log_outputs",
            project_id: Some(run.project_id),
            subject_kind: "run",
            subject_id: run_id.to_string(),
            before: None,
            after: Some(json!({"models": outputs
                .iter()
                .map(|(id, step)| json!({"model_id": id, "step": step}))
                .collect::<Vec<_>>()})),
        },
    )
    .await?;
    Ok(())
}

/// Where a page of a metric's history stopped: the last point's step and time (microseconds).
fn history_token(step: i64, at: DateTime<Utc>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!([step, at.timestamp_micros()]).to_string())
}

fn parse_history_token(token: &str) -> Result<(i64, DateTime<Utc>)> {
    let bad = || Error::invalid("Invalid page token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let (step, micros): (i64, i64) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        step,
        DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
    ))
}

// ---- handlers ----

#[derive(Deserialize)]
struct CreateArgs {
    experiment_id: Option<String>,
    run_name: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: CreateArgs = args(&http, &body)?;
    let experiment_id = required(a.experiment_id, "experiment_id")?;
    let tags = wire::checked_tags(&a.tags, "a run")?;
    let actor = &call.actor;
    let run = call
        .write(|c| create_run(c, actor, &experiment_id, a.run_name.as_deref(), tags).scope_boxed())
        .await?;
    ok(json!({"run": run}))
}

#[derive(Deserialize)]
struct RunArgs {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

async fn get(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: RunArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let mut conn = call.conn().await?;
    let run = custody_runs::get(&mut conn, &call.actor, run_id, Role::Viewer).await?;
    ok(json!({"run": one_to_wire(&mut conn, run).await?}))
}

#[derive(Deserialize)]
struct UpdateArgs {
    run_id: Option<String>,
    run_uuid: Option<String>,
    status: Option<String>,
    run_name: Option<String>,
}

async fn update(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: UpdateArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let status = a.status.as_deref().map(parse_status).transpose()?;
    let actor = &call.actor;
    let name = a.run_name;
    let info = call
        .write(|c| {
            async move {
                let run = update_run(c, actor, run_id, status, name.as_deref()).await?;
                let email = actor.email.clone();
                let creator = auth::users_by_ids(c, &[run.created_by])
                    .await?
                    .pop()
                    .map_or(email, |u| u.email);
                Ok(run_info(&run, &creator))
            }
            .scope_boxed()
        })
        .await?;
    ok(json!({"run_info": info}))
}

async fn delete(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    set_deleted(call, http, body, true).await
}

async fn restore(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    set_deleted(call, http, body, false).await
}

async fn set_deleted(call: Call, http: HttpRequest, body: web::Bytes, deleted: bool) -> Reply {
    let a: RunArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let actor = &call.actor;
    call.write(|c| custody_runs::set_deleted(c, actor, run_id, deleted).scope_boxed())
        .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct SearchArgs {
    #[serde(default, deserialize_with = "lenient::list")]
    experiment_ids: Vec<String>,
    filter: Option<String>,
    run_view_type: Option<Value>,
    #[serde(default, deserialize_with = "lenient::int")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<String>,
    page_token: Option<String>,
}

/// The filter with the view type's condition after the caller's clauses (so the columns an
/// error names are the caller's own).
fn with_view(filter: Option<&str>, view: ViewType) -> Option<String> {
    let user = filter.map(str::trim).filter(|f| !f.is_empty());
    let stage = match view {
        ViewType::ActiveOnly => Some("attributes.lifecycle_stage = 'active'"),
        ViewType::DeletedOnly => Some("attributes.lifecycle_stage = 'deleted'"),
        ViewType::All => None,
    };
    match (user, stage) {
        (Some(user), Some(stage)) => Some(format!("{user} and {stage}")),
        (Some(user), None) => Some(user.to_owned()),
        (None, stage) => stage.map(str::to_owned),
    }
}

async fn search(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: SearchArgs = args(&http, &body)?;
    let limit = page_size(a.max_results, 1000, MAX_SEARCH_RESULTS)?;
    let view = experiments::ViewType::parse(a.run_view_type.as_ref())?;
    let filter = with_view(a.filter.as_deref(), view);
    let search = Search::new(
        &RUNS,
        filter.as_deref(),
        &a.order_by,
        a.page_token.as_deref().filter(|t| !t.is_empty()),
        limit,
    )?;
    if a.experiment_ids.len() > experiments::MAX_SEARCHED {
        return Err(MlflowError::invalid(format!(
            "a search names at most {} experiments",
            experiments::MAX_SEARCHED
        )));
    }
    let mut conn = call.conn().await?;
    // The experiments asked for that the caller may read; others (missing or not theirs) add
    // nothing, exactly alike.
    let asked: std::collections::HashSet<&str> =
        a.experiment_ids.iter().map(String::as_str).collect();
    let readable = projects::readable_ids(&mut conn, &call.actor, None).await?;
    let project_ids: Vec<_> = readable
        .into_iter()
        .filter(|p| asked.contains(p.to_string().as_str()))
        .collect();
    let readable = projects::Readable::Ids(project_ids);
    let page = sql::page::<Run>(&mut conn, &RUNS, &readable, &search).await?;
    let mut answer = json!({"runs": to_wire(&mut conn, &page.rows).await?});
    if let Some(token) = page.next_cursor() {
        answer["next_page_token"] = json!(token);
    }
    ok(answer)
}

#[derive(Deserialize)]
struct LogMetricArgs {
    run_id: Option<String>,
    run_uuid: Option<String>,
    #[serde(flatten)]
    metric: MetricArg,
}

async fn log_metric(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: LogMetricArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let metric = a.metric.into_new()?;
    // Checked, authorized and written together with the single metrics other requests log
    // meanwhile (group commit); answered once committed, or with this call's own refusal.
    let call_to_log = custody_runs::MetricCall {
        actor: call.actor.clone(),
        run_id,
        metric,
    };
    call.state.metrics.log(call_to_log).await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct ParamArgs {
    run_id: Option<String>,
    run_uuid: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

async fn log_parameter(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: ParamArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let param = (required(a.key, "key")?, a.value.unwrap_or_default());
    let actor = &call.actor;
    call.write(|c| {
        async move {
            custody_runs::log_params(c, actor, run_id, vec![param])
                .await
                .map_err(param_refusal)
        }
        .scope_boxed()
    })
    .await?;
    ok(json!({}))
}

async fn set_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: ParamArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let key = required(a.key, "key")?;
    let value = a.value.unwrap_or_default();
    let actor = &call.actor;
    call.write(|c| set_run_tag(c, actor, run_id, &key, &value).scope_boxed())
        .await?;
    ok(json!({}))
}

async fn delete_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: ParamArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let key = required(a.key, "key")?;
    let actor = &call.actor;
    call.write(|c| {
        async move {
            labels::set_tag(c, actor, Tagged::Run(run_id), &key, None).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct BatchArgs {
    run_id: Option<String>,
    run_uuid: Option<String>,
    #[serde(default)]
    metrics: Vec<MetricArg>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn log_batch(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: BatchArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let metrics = a
        .metrics
        .into_iter()
        .map(MetricArg::into_new)
        .collect::<Result<Vec<_>, _>>()?;
    let actor = &call.actor;
    call.write(|c| log_batch_of(c, actor, run_id, metrics, a.params, a.tags).scope_boxed())
        .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct OutputArg {
    model_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    step: Option<i64>,
}

#[derive(Deserialize)]
struct OutputsArgs {
    run_id: Option<String>,
    #[serde(default)]
    models: Vec<OutputArg>,
}

async fn log_outputs(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: OutputsArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, None)?;
    if a.models.len() > 100 {
        return Err(MlflowError::invalid(
            "at most 100 model outputs per request",
        ));
    }
    let outputs = a
        .models
        .into_iter()
        .map(|m| Ok((required(m.model_id, "model_id")?, m.step.unwrap_or(0))))
        .collect::<Result<Vec<_>, MlflowError>>()?;
    let actor = &call.actor;
    call.write(|c| record_outputs(c, actor, run_id, outputs).scope_boxed())
        .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct HistoryArgs {
    run_id: Option<String>,
    run_uuid: Option<String>,
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    max_results: Option<i64>,
    page_token: Option<String>,
}

async fn metric_history(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: HistoryArgs = args(&http, &body)?;
    let run_id = run_id_of(a.run_id, a.run_uuid)?;
    let key = required(a.metric_key, "metric_key")?;
    let limit = page_size(a.max_results, HISTORY_PAGE, HISTORY_PAGE)?;
    let after = a
        .page_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(parse_history_token)
        .transpose()?
        .map(|(step, at)| (key.clone(), step, at));
    let mut conn = call.conn().await?;
    custody_runs::get(&mut conn, &call.actor, run_id, Role::Viewer).await?;
    let points =
        custody_runs::metrics_after(&mut conn, run_id, Some(&key), after.as_ref(), limit + 1)
            .await?;
    let more = points.len() as i64 > limit;
    let points = &points[..points.len().min(limit as usize)];
    let mut answer = json!({"metrics": points
        .iter()
        .map(|m| json!({"key": m.key, "value": m.value, "timestamp": wire::millis(m.at), "step": m.step}))
        .collect::<Vec<_>>()});
    if let (true, Some(last)) = (more, points.last()) {
        answer["next_page_token"] = json!(history_token(last.step, last.at));
    }
    ok(answer)
}

#[derive(Deserialize)]
struct BulkArgs {
    #[serde(default, deserialize_with = "lenient::list")]
    run_ids: Vec<String>,
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::int")]
    start_step: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    end_step: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int")]
    max_results: Option<i64>,
}

/// The points of one metric across runs for a chart: each series downsampled to at most
/// `max_results` points with its spikes kept (Custody's `metricHistory`), then cut to the step
/// range asked for.
async fn metric_history_bulk(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: BulkArgs = args(&http, &body)?;
    let key = required(a.metric_key, "metric_key")?;
    if a.run_ids.is_empty() {
        return Err(MlflowError::invalid(
            "Missing value for required parameter 'run_ids'",
        ));
    }
    let run_ids = a
        .run_ids
        .iter()
        .map(|id| parse_run_id(id))
        .collect::<Result<Vec<_>>>()?;
    let max_points = page_size(a.max_results, 320, 10_000)?.max(4) as i32;
    let request = HistoryRequest::new(run_ids.len(), vec![key], Some(max_points))?;
    let mut conn = call.conn().await?;
    for run_id in &run_ids {
        custody_runs::get(&mut conn, &call.actor, *run_id, Role::Viewer).await?;
    }
    let series = metric_history::metric_history(&mut conn, &run_ids, &request).await?;
    let start = a.start_step.unwrap_or(i64::MIN);
    let end = a.end_step.unwrap_or(i64::MAX);
    let metrics: Vec<Value> = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .filter(|p| (start..=end).contains(&p.step))
                .map(|p| {
                    json!({"key": s.key, "value": p.value, "timestamp": wire::millis(p.at),
                           "step": p.step, "run_id": s.run_id.to_string()})
                })
        })
        .collect();
    ok(json!({"metrics": metrics}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_type_joins_the_callers_filter() {
        assert_eq!(
            with_view(Some("metrics.acc > 0.5"), ViewType::ActiveOnly).as_deref(),
            Some("metrics.acc > 0.5 and attributes.lifecycle_stage = 'active'")
        );
        assert_eq!(with_view(Some("  "), ViewType::All), None);
        assert_eq!(
            with_view(None, ViewType::DeletedOnly).as_deref(),
            Some("attributes.lifecycle_stage = 'deleted'")
        );
    }

    #[test]
    fn history_tokens_round_trip_and_bad_ones_are_refused() {
        let at = DateTime::from_timestamp_micros(1_796_290_556_887_123).unwrap();
        let token = history_token(42, at);
        assert_eq!(parse_history_token(&token).unwrap(), (42, at));
        assert!(parse_history_token("not a token").is_err());
    }

    #[test]
    fn statuses_read_as_mlflow_writes_them() {
        assert_eq!(parse_status("FINISHED").unwrap(), RunStatus::Finished);
        assert_eq!(status_name(RunStatus::Killed), "KILLED");
        assert!(parse_status("finished").is_err());
    }
}
