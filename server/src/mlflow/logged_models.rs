//! MLflow 3 logged models: a named folder of a run's files with a status, params and tags.
//!
//! A logged model belongs to one run of its experiment's project (its "source run"); its files
//! are files of that run under `mlflow-models/<model id>/`, uploaded through
//! `mlflow-artifacts:/logged-models/<model id>/…` (see `artifacts`). When the client names no
//! source run, one is started for the model and finished at once, so that every model version
//! registered from it still comes from a run (the lineage edge `produced_by` needs one).
//!
//! The life of one: created PENDING, its files uploaded, then finalized READY (its files are then
//! fixed: further uploads are refused) or FAILED. Params are immutable like a run's; tags change
//! freely. Every change is audited (`logged_model.*`). Logged models are never deleted: versions
//! may have been registered from their files, and their run keeps them either way.
//!
//! Search takes MLflow's filter language over `name`, `model_id`, `status`, `model_type`,
//! `source_run_id`, the times and `tags.<key>`, and `metrics.<key>`/`params.<key>` of the source
//! run (where MLflow would read metrics logged against the model: a model's metrics here are its
//! source run's latest values). Dataset-scoped metric filters are refused.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::experiments::{self, page_size, Experiment};
use super::request::{args, lenient, ok, required, Call, MlflowError, Reply};
use super::wire::{self, KeyValue};
use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::mlflow_logged_models;
use crate::db::{text_enum, Conn};
use crate::error::{Error, Result};
use crate::ids::{ProjectId, RunId};
use crate::labels;
use crate::projects::{self, Role};
use crate::runs::{self, Metric, RunStatus};
use crate::search::filter::ValueType;
use crate::search::sql::{self, AttributeSpec, Rule, Search, Subject};
use crate::validate;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/logged-models", web::post().to(create))
        .route("/logged-models/search", web::post().to(search))
        .route("/logged-models/{model_id}", web::get().to(get))
        .route("/logged-models/{model_id}", web::patch().to(finalize))
        .route("/logged-models/{model_id}", web::delete().to(not_deletable))
        .route("/logged-models/{model_id}/tags", web::patch().to(set_tags))
        .route(
            "/logged-models/{model_id}/tags/{key:.+}",
            web::delete().to(delete_tag),
        )
        .route(
            "/logged-models/{model_id}/params",
            web::post().to(log_params),
        );
}

/// Where a logged model's files live among its run's files.
pub const FOLDER: &str = "mlflow-models";

/// The run-relative folder of a logged model's files (`mlflow-models/m-…`).
pub fn folder_of(model_id: &str) -> String {
    format!("{FOLDER}/{model_id}")
}

/// The logged model whose folder a run-relative path names, if it is one (`mlflow-models/m-…`,
/// exactly: a version registered from it took that whole folder).
pub fn model_of_folder(path: &str) -> Option<&str> {
    path.strip_prefix(FOLDER)?
        .strip_prefix('/')
        .filter(|id| is_model_id(id))
}

/// MLflow's logged model ids: `m-` and 32 lowercase hex digits.
pub fn is_model_id(id: &str) -> bool {
    id.len() == 34
        && id.starts_with("m-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_model_id() -> String {
    format!("m-{}", uuid::Uuid::now_v7().simple())
}

text_enum! {
    pub enum Status as "logged model status" {
        Pending = "pending",
        Ready = "ready",
        Failed = "failed",
    }
}

impl Status {
    /// MLflow's name of the status.
    fn wire(self) -> &'static str {
        match self {
            Status::Pending => "LOGGED_MODEL_PENDING",
            Status::Ready => "LOGGED_MODEL_READY",
            Status::Failed => "LOGGED_MODEL_UPLOAD_FAILED",
        }
    }

    /// A final status as MLflow sends it: its proto name, the short name, or the proto number.
    fn parse_final(value: &Value) -> std::result::Result<Status, MlflowError> {
        let text = match value {
            Value::String(s) => s.to_ascii_uppercase(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        match text.as_str() {
            "LOGGED_MODEL_READY" | "READY" | "2" => Ok(Status::Ready),
            "LOGGED_MODEL_UPLOAD_FAILED" | "FAILED" | "UPLOAD_FAILED" | "3" => Ok(Status::Failed),
            _ => Err(MlflowError::invalid(format!(
                "Invalid status {value}: a logged model is finalized as LOGGED_MODEL_READY or \
                 LOGGED_MODEL_UPLOAD_FAILED"
            ))),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = mlflow_logged_models)]
pub struct LoggedModel {
    pub id: String,
    pub project_id: ProjectId,
    pub run_id: RunId,
    pub name: String,
    pub model_type: Option<String>,
    pub status: Status,
    pub params: Value,
    pub tags: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LoggedModel {
    /// Where the client uploads and downloads its files.
    pub fn artifact_uri(&self) -> String {
        wire::artifact_uri("logged-models", &self.id)
    }

    /// Its files' folder among its run's files.
    pub fn folder(&self) -> String {
        folder_of(&self.id)
    }

    /// MLflow's `LoggedModel` object, without metrics (see [`metrics_of`]).
    pub(super) fn to_wire(&self) -> Value {
        json!({
            "info": {
                "model_id": self.id,
                "experiment_id": self.project_id.to_string(),
                "name": self.name,
                "creation_timestamp_ms": wire::millis(self.created_at),
                "last_updated_timestamp_ms": wire::millis(self.updated_at),
                "artifact_uri": self.artifact_uri(),
                "status": self.status.wire(),
                "model_type": self.model_type.as_deref().unwrap_or_default(),
                "source_run_id": self.run_id.to_string(),
                "tags": wire::key_values(&self.tags),
            },
            "data": {
                "params": wire::key_values(&self.params),
            },
        })
    }

    /// The object with the metrics of its source run (their latest values).
    fn to_wire_with(&self, metrics: &[Metric]) -> Value {
        let mut value = self.to_wire();
        value["data"]["metrics"] = metrics
            .iter()
            .filter(|m| m.run_id == self.run_id)
            .map(|m| {
                json!({
                    "key": m.key,
                    "value": m.value,
                    "timestamp": wire::millis(m.at),
                    "step": m.step,
                    "model_id": self.id,
                    "run_id": m.run_id.to_string(),
                })
            })
            .collect();
        value
    }
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("Logged model with ID '{id}' not found."))
}

/// The logged model with this id, the caller holding at least `needed` in its project (else the
/// NOT_FOUND of a missing one).
pub(super) async fn find(
    conn: &mut Conn,
    actor: &Actor,
    id: &str,
    needed: Role,
) -> Result<LoggedModel> {
    if !is_model_id(id) {
        return Err(missing(id));
    }
    let model = mlflow_logged_models::table
        .find(id)
        .select(LoggedModel::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| missing(id))?;
    projects::authorize(conn, actor, model.project_id, needed)
        .await
        .map_err(projects::hiding(|| missing(id)))?;
    Ok(model)
}

/// As [`find`], the row locked for a change (CONTRIBUTOR).
async fn lock(conn: &mut Conn, actor: &Actor, id: &str) -> Result<LoggedModel> {
    find(conn, actor, id, Role::Contributor).await?;
    Ok(mlflow_logged_models::table
        .find(id)
        .select(LoggedModel::as_select())
        .for_update()
        .first(conn)
        .await?)
}

/// The latest metric values of the models' source runs.
async fn metrics_of(conn: &mut Conn, models: &[LoggedModel]) -> Result<Vec<Metric>> {
    let mut run_ids: Vec<RunId> = models.iter().map(|m| m.run_id).collect();
    run_ids.sort();
    run_ids.dedup();
    runs::last_metrics(conn, &run_ids).await
}

/// Params as given: keys 1–250 characters, values up to 8,000; one key given twice must carry
/// one value (as a run's params).
fn check_params(params: &[KeyValue]) -> Result<BTreeMap<String, String>> {
    if params.len() > runs::MAX_PARAMS_PER_BATCH {
        return Err(Error::invalid(format!(
            "at most {} params per call",
            runs::MAX_PARAMS_PER_BATCH
        )));
    }
    let mut wanted = BTreeMap::new();
    for param in params {
        if param.key.is_empty() {
            return Err(Error::invalid("param keys must not be empty"));
        }
        validate::text("param key", &param.key, 250)?;
        validate::text("param value", &param.value, 8000)?;
        if let Some(previous) = wanted.insert(param.key.clone(), param.value.clone()) {
            if previous != param.value {
                return Err(Error::invalid(format!(
                    "param `{}` is given twice with different values",
                    param.key
                )));
            }
        }
    }
    Ok(wanted)
}

fn as_map(value: &Value) -> Result<BTreeMap<String, String>> {
    serde_json::from_value(value.clone())
        .map_err(|e| Error::internal(anyhow::anyhow!("logged model labels: {e}")))
}

/// What `create` takes.
struct NewLoggedModel<'a> {
    experiment_id: &'a str,
    name: Option<&'a str>,
    model_type: Option<&'a str>,
    source_run_id: Option<&'a str>,
    params: &'a [KeyValue],
    tags: &'a [KeyValue],
}

/// The run a new logged model belongs to: the one named (a run of the experiment's project the
/// caller may write), or a run started for it and finished at once.
async fn source_run(
    conn: &mut Conn,
    actor: &Actor,
    experiment: &Experiment,
    source_run_id: Option<&str>,
    model_name: &str,
) -> Result<RunId> {
    if let Some(id) = source_run_id.filter(|id| !id.is_empty()) {
        let run_id: RunId = id
            .parse()
            .map_err(|_| Error::not_found(format!("Run with id={id} not found")))?;
        let run = runs::get(conn, actor, run_id, Role::Contributor).await?;
        if run.project_id != experiment.id {
            return Err(Error::invalid(format!(
                "run {id} belongs to another experiment than {}",
                experiment.experiment_name()
            )));
        }
        return Ok(run.id);
    }
    let run = runs::start(
        conn,
        actor,
        &experiment.name,
        runs::NewRun {
            name: Some(model_name),
            code_commit_id: None,
            inputs: Vec::new(),
            tags: None,
        },
    )
    .await?;
    runs::finish(conn, actor, run.id, RunStatus::Finished).await?;
    Ok(run.id)
}

async fn create_model(
    conn: &mut Conn,
    actor: &Actor,
    new: NewLoggedModel<'_>,
) -> Result<LoggedModel> {
    let experiment = experiments::find(conn, actor, new.experiment_id, Role::Contributor).await?;
    let id = new_model_id();
    // MLflow names an unnamed model at random; the id's tail is as good and says which it is.
    let name = match new.name.filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => format!("model-{}", &id[id.len() - 8..]),
    };
    validate::text("logged model name", &name, 500)?;
    let model_type =
        validate::optional_text("model_type", new.model_type, 500)?.filter(|t| !t.is_empty());
    let params = check_params(new.params)?;
    let tags = wire::checked_tags(new.tags, "a logged model")?;
    let run_id = source_run(conn, actor, &experiment, new.source_run_id, &name).await?;
    let model: LoggedModel = diesel::insert_into(mlflow_logged_models::table)
        .values((
            mlflow_logged_models::id.eq(&id),
            mlflow_logged_models::project_id.eq(experiment.id),
            mlflow_logged_models::run_id.eq(run_id),
            mlflow_logged_models::name.eq(&name),
            mlflow_logged_models::model_type.eq(model_type),
            mlflow_logged_models::status.eq(Status::Pending),
            mlflow_logged_models::params.eq(json!(params)),
            mlflow_logged_models::tags.eq(json!(tags)),
            mlflow_logged_models::created_by.eq(actor.user_id()?),
        ))
        .returning(LoggedModel::as_returning())
        .get_result(conn)
        .await?;
    record(
        conn,
        actor,
        &model,
        "logged_model.create",
        None,
        json!({
            "name": model.name,
            "run_id": model.run_id,
            "model_type": model.model_type,
            "params": params,
            "tags": tags,
        }),
    )
    .await?;
    Ok(model)
}

async fn record(
    conn: &mut Conn,
    actor: &Actor,
    model: &LoggedModel,
    action: &str,
    before: Option<Value>,
    after: Value,
) -> Result<()> {
    audit::record(
        conn,
        actor,
        Change {
            action,
            project_id: Some(model.project_id),
            subject_kind: "logged_model",
            subject_id: model.id.clone(),
            before,
            after: Some(after),
        },
    )
    .await
}

/// Finalizes a PENDING logged model as READY (its files are fixed from now on) or FAILED. The
/// status it already has again changes nothing; any other change of a final status is refused.
async fn finalize_model(
    conn: &mut Conn,
    actor: &Actor,
    id: &str,
    status: Status,
) -> Result<LoggedModel> {
    let model = lock(conn, actor, id).await?;
    if model.status == status {
        return Ok(model);
    }
    if model.status != Status::Pending {
        return Err(Error::conflict(format!(
            "logged model {id} is already {}: a finalized model does not change status",
            model.status.wire()
        )));
    }
    let updated: LoggedModel = diesel::update(mlflow_logged_models::table.find(id))
        .set((
            mlflow_logged_models::status.eq(status),
            mlflow_logged_models::updated_at.eq(diesel::dsl::now),
        ))
        .returning(LoggedModel::as_returning())
        .get_result(conn)
        .await?;
    record(
        conn,
        actor,
        &updated,
        "logged_model.finalize",
        Some(json!({"status": model.status})),
        json!({"status": updated.status}),
    )
    .await?;
    Ok(updated)
}

/// Sets tags (`Some`) or deletes one (`None` values); CONTRIBUTOR. Deleting a tag that is not
/// there is NOT_FOUND; setting tags to the values they have records nothing.
async fn change_tags(
    conn: &mut Conn,
    actor: &Actor,
    id: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<()> {
    let model = lock(conn, actor, id).await?;
    let mut tags = as_map(&model.tags)?;
    let mut before = BTreeMap::new();
    for (key, value) in changes {
        let previous = tags.get(key).cloned();
        match value {
            Some(value) if previous.as_deref() == Some(value.as_str()) => continue,
            Some(value) => {
                tags.insert(key.clone(), value.clone());
            }
            None if previous.is_none() => {
                return Err(Error::not_found(format!(
                    "logged model {id} has no tag `{key}`"
                )))
            }
            None => {
                tags.remove(key);
            }
        }
        before.insert(key.clone(), previous);
    }
    if before.is_empty() {
        return Ok(());
    }
    if tags.len() > labels::MAX_TAGS {
        return Err(Error::invalid(format!(
            "a logged model holds at most {} tags",
            labels::MAX_TAGS
        )));
    }
    diesel::update(mlflow_logged_models::table.find(id))
        .set((
            mlflow_logged_models::tags.eq(json!(tags)),
            mlflow_logged_models::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    let after: BTreeMap<&String, Option<&String>> =
        before.keys().map(|k| (k, tags.get(k))).collect();
    let action = if changes.values().all(Option::is_some) {
        "logged_model.tag.set"
    } else {
        "logged_model.tag.delete"
    };
    record(
        conn,
        actor,
        &model,
        action,
        Some(json!({"tags": before})),
        json!({"tags": after}),
    )
    .await
}

/// Adds params; CONTRIBUTOR. A param is immutable: the same value again is a no-op, another
/// value refuses the whole batch.
async fn add_params(conn: &mut Conn, actor: &Actor, id: &str, params: &[KeyValue]) -> Result<()> {
    let wanted = check_params(params)?;
    let model = lock(conn, actor, id).await?;
    let mut all = as_map(&model.params)?;
    let mut added = BTreeMap::new();
    for (key, value) in wanted {
        match all.get(&key) {
            Some(existing) if *existing == value => {}
            Some(existing) => {
                return Err(Error::conflict(format!(
                    "param `{key}` is already `{existing}`; params are immutable"
                )))
            }
            None => {
                added.insert(key, value);
            }
        }
    }
    if added.is_empty() {
        return Ok(());
    }
    all.extend(added.clone());
    diesel::update(mlflow_logged_models::table.find(id))
        .set((
            mlflow_logged_models::params.eq(json!(all)),
            mlflow_logged_models::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    record(
        conn,
        actor,
        &model,
        "logged_model.log_params",
        None,
        json!({"params": added}),
    )
    .await
}

/// Logged models as the search language sees them. The id is the model id's hex tail read as a
/// UUID, which the cursors of the search machinery take.
static LOGGED_MODELS: Subject = Subject {
    from: "mlflow_logged_models l",
    row: "l.*",
    id: "substring(l.id from 3)::uuid",
    project: "l.project_id",
    tags: "l.tags",
    run: Some("l.run_id"),
    attributes: &[
        AttributeSpec {
            names: &["name"],
            column: "l.name",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["model_id"],
            column: "l.id",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["status"],
            // MLflow's short names: PENDING, READY, FAILED.
            column: "upper(l.status)",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["model_type"],
            column: "l.model_type",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["source_run_id", "run_id"],
            column: "l.run_id",
            value_type: ValueType::Id,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["creation_timestamp", "creation_time", "created"],
            column: "l.created_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["last_updated_timestamp", "last_update_time"],
            column: "l.updated_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
    ],
};

/// MLflow's default and largest page of logged models.
const DEFAULT_RESULTS: i64 = 100;
const MAX_RESULTS: i64 = 1000;

/// One order key as MLflow sends it.
#[derive(Deserialize)]
struct OrderBy {
    field_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    ascending: Option<bool>,
    dataset_name: Option<String>,
}

/// MLflow's order objects as the search machinery's order keys (`metrics.acc DESC`).
fn order_keys(order_by: &[OrderBy]) -> std::result::Result<Vec<String>, MlflowError> {
    order_by
        .iter()
        .map(|o| {
            if o.dataset_name.as_deref().is_some_and(|d| !d.is_empty()) {
                return Err(MlflowError::invalid(
                    "ordering by a metric of one dataset is not supported: a logged model's \
                     metrics here are its source run's",
                ));
            }
            let field = required(o.field_name.as_deref(), "order_by.field_name")?;
            let direction = if o.ascending.unwrap_or(true) {
                "ASC"
            } else {
                "DESC"
            };
            Ok(format!("{field} {direction}"))
        })
        .collect()
}

// ---- handlers ----

#[derive(Deserialize)]
struct CreateArgs {
    experiment_id: Option<String>,
    name: Option<String>,
    model_type: Option<String>,
    source_run_id: Option<String>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: CreateArgs = args(&http, &body)?;
    let experiment_id = required(a.experiment_id, "experiment_id")?;
    let actor = &call.actor;
    let new = NewLoggedModel {
        experiment_id: &experiment_id,
        name: a.name.as_deref(),
        model_type: a.model_type.as_deref(),
        source_run_id: a.source_run_id.as_deref(),
        params: &a.params,
        tags: &a.tags,
    };
    let model = call
        .write(|c| create_model(c, actor, new).scope_boxed())
        .await?;
    ok(json!({"model": model.to_wire_with(&[])}))
}

async fn get(call: Call, id: web::Path<String>) -> Reply {
    let mut conn = call.conn().await?;
    let model = find(&mut conn, &call.actor, &id, Role::Viewer).await?;
    let metrics = metrics_of(&mut conn, std::slice::from_ref(&model)).await?;
    ok(json!({"model": model.to_wire_with(&metrics)}))
}

#[derive(Deserialize)]
struct FinalizeArgs {
    status: Option<Value>,
}

async fn finalize(call: Call, id: web::Path<String>, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: FinalizeArgs = args(&http, &body)?;
    let status = Status::parse_final(&required(a.status, "status")?)?;
    let actor = &call.actor;
    let model = call
        .write(|c| finalize_model(c, actor, &id, status).scope_boxed())
        .await?;
    let mut conn = call.conn().await?;
    let metrics = metrics_of(&mut conn, std::slice::from_ref(&model)).await?;
    ok(json!({"model": model.to_wire_with(&metrics)}))
}

#[derive(Deserialize)]
struct TagsArgs {
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn set_tags(call: Call, id: web::Path<String>, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: TagsArgs = args(&http, &body)?;
    let changes: BTreeMap<String, Option<String>> = wire::checked_tags(&a.tags, "a logged model")?
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let actor = &call.actor;
    call.write(|c| change_tags(c, actor, &id, &changes).scope_boxed())
        .await?;
    ok(json!({}))
}

async fn delete_tag(call: Call, target: web::Path<(String, String)>) -> Reply {
    let (id, key) = target.into_inner();
    let changes = BTreeMap::from([(key, None)]);
    let actor = &call.actor;
    call.write(|c| change_tags(c, actor, &id, &changes).scope_boxed())
        .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct ParamsArgs {
    #[serde(default)]
    params: Vec<KeyValue>,
}

async fn log_params(
    call: Call,
    id: web::Path<String>,
    http: HttpRequest,
    body: web::Bytes,
) -> Reply {
    let a: ParamsArgs = args(&http, &body)?;
    let actor = &call.actor;
    call.write(|c| add_params(c, actor, &id, &a.params).scope_boxed())
        .await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct SearchArgs {
    #[serde(default, deserialize_with = "lenient::list")]
    experiment_ids: Vec<String>,
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    datasets: Vec<Value>,
    #[serde(default, deserialize_with = "lenient::int")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<OrderBy>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct SearchAnswer {
    models: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: SearchArgs = args(&http, &body)?;
    if a.experiment_ids.is_empty() {
        return Err(MlflowError::invalid(
            "Missing value for required parameter 'experiment_ids'",
        ));
    }
    if a.experiment_ids.len() > experiments::MAX_SEARCHED {
        return Err(MlflowError::invalid(format!(
            "a search names at most {} experiments",
            experiments::MAX_SEARCHED
        )));
    }
    if !a.datasets.is_empty() {
        return Err(MlflowError::invalid(
            "filtering logged models by dataset is not supported: a logged model's metrics \
             here are its source run's",
        ));
    }
    let limit = page_size(a.max_results, DEFAULT_RESULTS, MAX_RESULTS)?;
    let search = Search::new(
        &LOGGED_MODELS,
        a.filter.as_deref(),
        &order_keys(&a.order_by)?,
        a.page_token.as_deref().filter(|t| !t.is_empty()),
        limit,
    )?;
    let mut conn = call.conn().await?;
    let mut project_ids = Vec::with_capacity(a.experiment_ids.len());
    for id in &a.experiment_ids {
        project_ids.push(
            experiments::find(&mut conn, &call.actor, id, Role::Viewer)
                .await?
                .id,
        );
    }
    let readable = projects::Readable::Ids(project_ids);
    let page = sql::page::<LoggedModel>(&mut conn, &LOGGED_MODELS, &readable, &search).await?;
    let models = &page.rows;
    let metrics = metrics_of(&mut conn, models).await?;
    let next_page_token = page.next_cursor();
    ok(SearchAnswer {
        models: models.iter().map(|m| m.to_wire_with(&metrics)).collect(),
        next_page_token,
    })
}

async fn not_deletable(_call: Call) -> Reply {
    Err(MlflowError::permission_denied(
        "Custody does not delete logged models: their files are files of their run, and model \
         versions may have been registered from them; tag it instead",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids() {
        let id = new_model_id();
        assert!(is_model_id(&id), "{id}");
        assert!(is_model_id("m-4a0bbc85ef18413cb372b1a79c19539e"));
        for bad in [
            "m-4A0BBC85EF18413CB372B1A79C19539E",
            "m-4a0bbc85ef18413cb372b1a79c19539",
            "4a0bbc85ef18413cb372b1a79c19539eff",
            "m-4a0bbc85-f18413cb372b1a79c19539e",
            "m-../../../../etc/passwd/aaaaaaaaa",
        ] {
            assert!(!is_model_id(bad), "{bad}");
        }
    }

    #[test]
    fn folders() {
        let id = "m-4a0bbc85ef18413cb372b1a79c19539e";
        assert_eq!(folder_of(id), format!("mlflow-models/{id}"));
        assert_eq!(model_of_folder(&folder_of(id)), Some(id));
        assert_eq!(model_of_folder(&format!("{}/MLmodel", folder_of(id))), None);
        assert_eq!(model_of_folder("model"), None);
        assert_eq!(model_of_folder("mlflow-models/m-x"), None);
    }

    #[test]
    fn final_statuses() {
        for (value, status) in [
            (json!("LOGGED_MODEL_READY"), Status::Ready),
            (json!("READY"), Status::Ready),
            (json!(2), Status::Ready),
            (json!("LOGGED_MODEL_UPLOAD_FAILED"), Status::Failed),
            (json!("failed"), Status::Failed),
            (json!(3), Status::Failed),
        ] {
            assert_eq!(Status::parse_final(&value).unwrap(), status, "{value}");
        }
        for bad in [json!("LOGGED_MODEL_PENDING"), json!(1), json!(null)] {
            assert!(Status::parse_final(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn order_objects_become_order_keys() {
        let order: Vec<OrderBy> = serde_json::from_value(json!([
            {"field_name": "metrics.acc", "ascending": false},
            {"field_name": "creation_timestamp"},
        ]))
        .unwrap();
        assert_eq!(
            order_keys(&order).unwrap(),
            ["metrics.acc DESC", "creation_timestamp ASC"]
        );
        let scoped: Vec<OrderBy> =
            serde_json::from_value(json!([{"field_name": "metrics.acc", "dataset_name": "d"}]))
                .unwrap();
        assert!(order_keys(&scoped).is_err());
        assert!(Search::new(
            &LOGGED_MODELS,
            Some("name = 'model' and status = 'READY' and tags.team = 'x'"),
            &order_keys(&order).unwrap(),
            None,
            10
        )
        .is_ok());
    }
}
