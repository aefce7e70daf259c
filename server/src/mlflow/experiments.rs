//! Experiments: Custody projects seen through MLflow. An experiment's id is its project's id; its
//! name is the MLflow name it was created under (`/Shared/churn`, kept in `projects.mlflow_name`)
//! or else the project's name. Creating an experiment creates a project (the caller becomes its
//! admin, as with `createProject`); MLflow's experiment tags are the project's `mlflow_tags`.
//! Renaming an experiment changes only the name MLflow shows (ADMIN); experiments are never
//! deleted here: a project, its runs, models and audit trail outlive one client's bookkeeping.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::request::{args, lenient, ok, required, Call, MlflowError, Reply};
use super::wire::{self, KeyValue};
use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::projects;
use crate::db::{Conn, Prepared};
use crate::error::{Error, Result};
use crate::ids::ProjectId;
use crate::labels;
use crate::projects::{self as custody_projects, Role};
use crate::search::filter::ValueType;
use crate::search::sql::{self, AttributeSpec, Rule, Search, Subject};
use crate::validate;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/experiments/create", web::post().to(create))
        .route("/experiments/get", web::get().to(get))
        .route("/experiments/get-by-name", web::get().to(get_by_name))
        .route("/experiments/search", web::post().to(search))
        .route("/experiments/search", web::get().to(search))
        .route("/experiments/set-experiment-tag", web::post().to(set_tag))
        .route(
            "/experiments/delete-experiment-tag",
            web::post().to(delete_tag),
        )
        .route("/experiments/delete", web::post().to(not_deletable))
        .route("/experiments/restore", web::post().to(not_deletable))
        .route("/experiments/update", web::post().to(rename));
}

/// MLflow's default experiment (`"0"`, where a run goes when no experiment is set) is the
/// project named `default`, when there is one the caller may use.
const DEFAULT_EXPERIMENT_ID: &str = "0";
const DEFAULT_PROJECT: &str = "default";
/// The longest experiment name (MLflow's own column is 256 characters; Databricks paths are
/// longer).
const MAX_NAME_BYTES: usize = 500;

/// A project as an experiment.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = projects)]
pub struct Experiment {
    pub id: ProjectId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub mlflow_name: Option<String>,
    pub mlflow_tags: Value,
}

impl Experiment {
    /// The name MLflow users know it by.
    pub fn experiment_name(&self) -> &str {
        self.mlflow_name.as_deref().unwrap_or(&self.name)
    }

    fn to_wire(&self) -> Value {
        json!({
            "experiment_id": self.id.to_string(),
            "name": self.experiment_name(),
            "artifact_location": wire::artifact_uri("experiments", &self.id.to_string()),
            "lifecycle_stage": "active",
            "creation_time": wire::millis(self.created_at),
            "last_update_time": wire::millis(self.created_at),
            "tags": wire::key_values(&self.mlflow_tags),
        })
    }
}

fn missing_id(id: &str) -> Error {
    if id == DEFAULT_EXPERIMENT_ID {
        Error::not_found(format!(
            "No Experiment with id={id}: MLflow's default experiment is the Custody project \
             `{DEFAULT_PROJECT}`, which does not exist or which you are not a member of; call \
             mlflow.set_experiment(\"<name>\") (or set MLFLOW_EXPERIMENT_NAME) first"
        ))
    } else {
        Error::not_found(format!("No Experiment with id={id} exists"))
    }
}

/// The experiment with this id, the caller holding at least `needed` in its project (else the
/// NOT_FOUND of a missing one).
pub async fn find(conn: &mut Conn, actor: &Actor, id: &str, needed: Role) -> Result<Experiment> {
    let query = projects::table.select(Experiment::as_select()).into_boxed();
    let query = if id == DEFAULT_EXPERIMENT_ID {
        query.filter(projects::name.eq(DEFAULT_PROJECT))
    } else {
        let Ok(project_id) = id.parse::<ProjectId>() else {
            return Err(missing_id(id));
        };
        query.filter(projects::id.eq(project_id))
    };
    let experiment = query
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| missing_id(id))?;
    custody_projects::authorize(conn, actor, experiment.id, needed)
        .await
        .map_err(custody_projects::hiding(|| missing_id(id)))?;
    Ok(experiment)
}

/// The experiment of a project the caller already may read.
pub async fn of_project(conn: &mut Conn, project_id: ProjectId) -> Result<Experiment> {
    Ok(projects::table
        .find(project_id)
        .select(Experiment::as_select())
        .first(conn)
        .await?)
}

async fn lookup_name(conn: &mut Conn, name: &str) -> Result<Option<Experiment>> {
    Ok(projects::table
        .filter(
            projects::mlflow_name
                .eq(name)
                .or(projects::name.eq(name).and(projects::mlflow_name.is_null())),
        )
        .select(Experiment::as_select())
        .first(conn)
        .await
        .optional()?)
}

async fn find_by_name(conn: &mut Conn, actor: &Actor, name: &str) -> Result<Experiment> {
    let missing = || Error::not_found(format!("Could not find experiment with name '{name}'"));
    let experiment = lookup_name(conn, name).await?.ok_or_else(missing)?;
    custody_projects::authorize(conn, actor, experiment.id, Role::Viewer)
        .await
        .map_err(custody_projects::hiding(missing))?;
    Ok(experiment)
}

/// A free project name for an experiment name: its slug, then the slug with `-2`, `-3`, ….
async fn free_project_name(conn: &mut Conn, experiment_name: &str) -> Result<String> {
    let base = crate::validate::name_for(experiment_name, "experiment");
    for n in 1..=100 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let taken: bool = diesel::select(diesel::dsl::exists(
            projects::table.filter(
                projects::name
                    .eq(&candidate)
                    .or(projects::mlflow_name.eq(&candidate)),
            ),
        ))
        .get_result(conn)
        .await?;
        if !taken {
            return Ok(candidate);
        }
    }
    Err(Error::conflict(format!(
        "no free project name for experiment `{experiment_name}`"
    )))
}

/// Creates the experiment's project; the experiment name is kept when it is not the project's.
async fn create_experiment(
    conn: &mut Conn,
    actor: &Actor,
    name: &str,
    tags: &[KeyValue],
) -> Result<Result<Experiment, MlflowError>> {
    if name.trim().is_empty() {
        return Ok(Err(MlflowError::invalid(
            "Invalid experiment name: an experiment name must be a non-empty string",
        )));
    }
    validate::text("experiment name", name, MAX_NAME_BYTES)?;
    let tags = wire::checked_tags(tags, "an experiment")?;
    if lookup_name(conn, name).await?.is_some() {
        return Ok(Err(MlflowError::already_exists(format!(
            "Experiment '{name}' already exists."
        ))));
    }
    let project_name = free_project_name(conn, name).await?;
    let project = custody_projects::create(conn, actor, &project_name, None).await?;
    let mlflow_name = (project_name != name).then_some(name);
    diesel::update(projects::table.find(project.id))
        .set((
            projects::mlflow_name.eq(mlflow_name),
            projects::mlflow_tags.eq(json!(tags)),
        ))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "experiment.create",
            project_id: Some(project.id),
            subject_kind: "project",
            subject_id: project.id.to_string(),
            before: None,
            after: Some(json!({"experiment_name": name, "project": project.name, "tags": tags})),
        },
    )
    .await?;
    Ok(Ok(of_project(conn, project.id).await?))
}

/// Gives the experiment another MLflow name; the project keeps its own name (tokens, policies
/// and links refer to it). ADMIN.
async fn rename_experiment(
    conn: &mut Conn,
    actor: &Actor,
    experiment_id: &str,
    new_name: &str,
) -> Result<Result<(), MlflowError>> {
    if new_name.trim().is_empty() {
        return Ok(Err(MlflowError::invalid(
            "Invalid experiment name: an experiment name must be a non-empty string",
        )));
    }
    validate::text("experiment name", new_name, MAX_NAME_BYTES)?;
    let experiment = find(conn, actor, experiment_id, Role::Admin).await?;
    if experiment.experiment_name() == new_name {
        return Ok(Ok(()));
    }
    if lookup_name(conn, new_name).await?.is_some() {
        return Ok(Err(MlflowError::already_exists(format!(
            "Experiment '{new_name}' already exists."
        ))));
    }
    let mlflow_name = (new_name != experiment.name).then_some(new_name);
    diesel::update(projects::table.find(experiment.id))
        .set(projects::mlflow_name.eq(mlflow_name))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "experiment.rename",
            project_id: Some(experiment.id),
            subject_kind: "project",
            subject_id: experiment.id.to_string(),
            before: Some(json!({"experiment_name": experiment.experiment_name()})),
            after: Some(json!({"experiment_name": new_name})),
        },
    )
    .await?;
    Ok(Ok(()))
}

/// Sets (`Some`) or deletes (`None`) one experiment tag. CONTRIBUTOR or more.
async fn change_tag(
    conn: &mut Conn,
    actor: &Actor,
    experiment_id: &str,
    key: &str,
    value: Option<&str>,
) -> Result<()> {
    labels::check_key(key)?;
    if let Some(value) = value {
        validate::text("tag value", value, 5_000)?;
    }
    let experiment = find(conn, actor, experiment_id, Role::Contributor).await?;
    Prepared(
        diesel::sql_query("SELECT 1 FROM projects WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::Uuid, _>(experiment.id),
    )
    .execute(conn)
    .await?;
    let mut tags: BTreeMap<String, String> =
        serde_json::from_value(of_project(conn, experiment.id).await?.mlflow_tags)
            .map_err(|e| Error::internal(anyhow::anyhow!("experiment tags: {e}")))?;
    let before = tags.get(key).cloned();
    if before.as_deref() == value {
        return Ok(());
    }
    match value {
        Some(value) => {
            if before.is_none() && tags.len() >= labels::MAX_TAGS {
                return Err(Error::invalid(format!(
                    "an experiment holds at most {} tags",
                    labels::MAX_TAGS
                )));
            }
            tags.insert(key.to_owned(), value.to_owned());
        }
        None => {
            tags.remove(key);
        }
    }
    diesel::update(projects::table.find(experiment.id))
        .set(projects::mlflow_tags.eq(json!(tags)))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: if value.is_some() {
                "experiment.tag.set"
            } else {
                "experiment.tag.delete"
            },
            project_id: Some(experiment.id),
            subject_kind: "project",
            subject_id: experiment.id.to_string(),
            before: Some(json!({"key": key, "value": before})),
            after: Some(json!({"key": key, "value": value})),
        },
    )
    .await?;
    Ok(())
}

/// Experiments as the search language sees them.
static EXPERIMENTS: Subject = Subject {
    from: "projects p",
    row: "p.*",
    id: "p.id",
    project: "p.id",
    tags: "p.mlflow_tags",
    run: None,
    attributes: &[
        AttributeSpec {
            names: &["name"],
            column: "coalesce(p.mlflow_name, p.name)",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["experiment_id", "id"],
            column: "p.id",
            value_type: ValueType::Id,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["creation_time", "last_update_time"],
            column: "p.created_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
    ],
};

/// The most rows one MLflow search answers (MLflow's own default page of experiments and runs).
pub const MAX_RESULTS: i64 = 1000;

/// The most experiments one run or logged-model search names.
pub const MAX_SEARCHED: usize = 1000;

/// MLflow's `view_type`/`run_view_type`: which lifecycle stages a search returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ViewType {
    #[default]
    #[serde(rename = "ACTIVE_ONLY")]
    ActiveOnly,
    #[serde(rename = "DELETED_ONLY")]
    DeletedOnly,
    #[serde(rename = "ALL")]
    All,
}

impl ViewType {
    /// From MLflow's name or its protobuf number (1, 2, 3).
    pub fn parse(value: Option<&Value>) -> Result<ViewType> {
        match value {
            None | Some(Value::Null) => Ok(ViewType::ActiveOnly),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(ViewType::ActiveOnly),
            Some(Value::Number(n)) if n.as_i64() == Some(2) => Ok(ViewType::DeletedOnly),
            Some(Value::Number(n)) if n.as_i64() == Some(3) => Ok(ViewType::All),
            Some(Value::String(s)) if s == "1" => Ok(ViewType::ActiveOnly),
            Some(Value::String(s)) if s == "2" => Ok(ViewType::DeletedOnly),
            Some(Value::String(s)) if s == "3" => Ok(ViewType::All),
            Some(other) => serde_json::from_value(other.clone()).map_err(|_| {
                Error::invalid(format!(
                    "view type {other} is not one of ACTIVE_ONLY, DELETED_ONLY, ALL"
                ))
            }),
        }
    }
}

/// A page size MLflow asked for, checked.
pub fn page_size(max_results: Option<i64>, default: i64, max: i64) -> Result<i64> {
    match max_results {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied: it must be between 1 and {max}"
        ))),
    }
}

// ---- handlers ----

#[derive(Deserialize)]
struct CreateArgs {
    name: Option<String>,
    artifact_location: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: CreateArgs = args(&http, &body)?;
    let name = required(a.name, "name")?;
    if a.artifact_location
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(MlflowError::invalid(
            "artifact_location is not supported: Custody stores every artifact in its own \
             content-addressed store",
        ));
    }
    let actor = &call.actor;
    let created = call
        .write(|c| create_experiment(c, actor, &name, &a.tags).scope_boxed())
        .await?;
    ok(json!({"experiment_id": created?.id.to_string()}))
}

#[derive(Deserialize)]
struct GetArgs {
    experiment_id: Option<String>,
}

async fn get(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: GetArgs = args(&http, &body)?;
    let id = required(a.experiment_id, "experiment_id")?;
    let mut conn = call.conn().await?;
    let experiment = find(&mut conn, &call.actor, &id, Role::Viewer).await?;
    ok(json!({"experiment": experiment.to_wire()}))
}

#[derive(Deserialize)]
struct GetByNameArgs {
    experiment_name: Option<String>,
}

async fn get_by_name(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: GetByNameArgs = args(&http, &body)?;
    let name = required(a.experiment_name, "experiment_name")?;
    let mut conn = call.conn().await?;
    let experiment = find_by_name(&mut conn, &call.actor, &name).await?;
    ok(json!({"experiment": experiment.to_wire()}))
}

#[derive(Deserialize)]
struct SearchArgs {
    #[serde(default, deserialize_with = "lenient::int")]
    max_results: Option<i64>,
    page_token: Option<String>,
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<String>,
    view_type: Option<Value>,
}

#[derive(Serialize)]
struct SearchAnswer {
    experiments: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: SearchArgs = args(&http, &body)?;
    let limit = page_size(a.max_results, MAX_RESULTS, MAX_RESULTS)?;
    let view = ViewType::parse(a.view_type.as_ref())?;
    let search = Search::new(
        &EXPERIMENTS,
        a.filter.as_deref(),
        &a.order_by,
        a.page_token.as_deref().filter(|t| !t.is_empty()),
        limit,
    )?;
    if view == ViewType::DeletedOnly {
        // Projects are never deleted.
        return ok(SearchAnswer {
            experiments: Vec::new(),
            next_page_token: None,
        });
    }
    let mut conn = call.conn().await?;
    let readable = custody_projects::readable(&mut conn, &call.actor).await?;
    let page = sql::page::<Experiment>(&mut conn, &EXPERIMENTS, &readable, &search).await?;
    ok(SearchAnswer {
        experiments: page.rows.iter().map(Experiment::to_wire).collect(),
        next_page_token: page.next_cursor(),
    })
}

#[derive(Deserialize)]
struct TagArgs {
    experiment_id: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

async fn set_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: TagArgs = args(&http, &body)?;
    let id = required(a.experiment_id, "experiment_id")?;
    let key = required(a.key, "key")?;
    let value = a.value.unwrap_or_default();
    let actor = &call.actor;
    call.write(|c| change_tag(c, actor, &id, &key, Some(&value)).scope_boxed())
        .await?;
    ok(json!({}))
}

async fn delete_tag(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: TagArgs = args(&http, &body)?;
    let id = required(a.experiment_id, "experiment_id")?;
    let key = required(a.key, "key")?;
    let actor = &call.actor;
    call.write(|c| change_tag(c, actor, &id, &key, None).scope_boxed())
        .await?;
    ok(json!({}))
}

async fn not_deletable(_call: Call) -> Reply {
    Err(MlflowError::invalid(
        "Custody does not delete experiments: an experiment is a Custody project, whose runs, \
         models and audit trail are kept; delete or archive the runs instead",
    ))
}

#[derive(Deserialize)]
struct RenameArgs {
    experiment_id: Option<String>,
    new_name: Option<String>,
}

async fn rename(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: RenameArgs = args(&http, &body)?;
    let id = required(a.experiment_id, "experiment_id")?;
    let new_name = required(a.new_name, "new_name")?;
    let actor = &call.actor;
    call.write(|c| rename_experiment(c, actor, &id, &new_name).scope_boxed())
        .await??;
    ok(json!({}))
}
