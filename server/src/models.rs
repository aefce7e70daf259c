//! Models and their auto-numbered versions, each produced by a run.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::Actor;
use crate::artifacts;
use crate::audit::{self, Change};
use crate::db::schema::{model_versions, models, projects as projects_table, runs};
use crate::db::{Conn, Prepared, Slice, VersionRange};
use crate::error::{Error, Result};
use crate::ids::{ModelId, ModelVersionId, ProjectId, RunId, UserId};
use crate::lineage::{self, NodeRef};
use crate::projects::{self, Role};
use crate::validate;

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = models)]
pub struct Model {
    pub id: ModelId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The metric that ranks versions (policies compare it with the version in production).
    pub primary_metric: Option<String>,
    pub higher_is_better: bool,
    /// Key/value labels (`labels::set_tag`).
    pub tags: serde_json::Value,
}

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = model_versions)]
pub struct ModelVersion {
    pub id: ModelVersionId,
    pub model_id: ModelId,
    pub version: i32,
    pub run_id: RunId,
    pub artifact_path: Option<String>,
    pub description: Option<String>,
    pub stage: Option<String>,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    /// SHA-256 of the canonical manifest of the version's files (see `artifacts::Manifest`).
    pub manifest_sha256: String,
    /// Key/value labels (`labels::set_tag`).
    pub tags: serde_json::Value,
}

/// Which metric ranks a model's versions, and in which direction.
pub struct Ranking {
    pub metric: String,
    pub higher_is_better: bool,
}

pub async fn create(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    name: &str,
    description: Option<&str>,
    ranking: Option<Ranking>,
) -> Result<Model> {
    let project = projects::find_authorized(conn, actor, project_name, Role::Contributor).await?;
    validate::name("model name", name)?;
    if let Some(r) = &ranking {
        validate::text("primaryMetric", &r.metric, 250)?;
    }
    let description = validate::optional_text("description", description, 10_000)?;
    if find_in_project(conn, project.id, name).await?.is_some() {
        return Err(Error::conflict(format!(
            "project `{project_name}` already has a model named `{name}`"
        )));
    }
    let model: Model = diesel::insert_into(models::table)
        .values((
            models::id.eq(ModelId::generate()),
            models::project_id.eq(project.id),
            models::name.eq(name),
            models::description.eq(description),
            models::primary_metric.eq(ranking.as_ref().map(|r| r.metric.as_str())),
            models::higher_is_better.eq(ranking.as_ref().is_none_or(|r| r.higher_is_better)),
        ))
        .returning(Model::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "model.create",
            project_id: Some(project.id),
            subject_kind: "model",
            subject_id: model.id.to_string(),
            before: None,
            after: Some(json!({
                "name": model.name,
                "description": model.description,
                "primary_metric": model.primary_metric,
                "higher_is_better": model.higher_is_better,
            })),
        },
    )
    .await?;
    Ok(model)
}

async fn find_in_project(
    conn: &mut Conn,
    project_id: ProjectId,
    name: &str,
) -> Result<Option<Model>> {
    Ok(models::table
        .filter(models::project_id.eq(project_id))
        .filter(models::name.eq(name))
        .select(Model::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn find(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    name: &str,
    needed: Role,
) -> Result<Model> {
    let project = projects::find_authorized(conn, actor, project_name, needed).await?;
    find_in_project(conn, project.id, name)
        .await?
        .ok_or_else(|| {
            Error::not_found(format!(
                "project `{project_name}` has no model named `{name}`"
            ))
        })
}

pub async fn register_version(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    model_name: &str,
    run_id: RunId,
    artifact_path: Option<&str>,
    description: Option<&str>,
) -> Result<ModelVersion> {
    let model = find(conn, actor, project_name, model_name, Role::Contributor).await?;
    register_version_of(conn, actor, &model, run_id, artifact_path, description).await
}

/// [`register_version`] of a model the caller already found, holding at least
/// [`Role::Contributor`] in its project (the caller checked it).
///
/// Two round trips before the audit entry: the run's project, the model's lock (so concurrent
/// registrations number their versions one after the other), the model's last number and the
/// run's files; then the version, its files and its edge. Statements run in the order sent, so
/// the number is read under the lock.
pub async fn register_version_of(
    conn: &mut Conn,
    actor: &Actor,
    model: &Model,
    run_id: RunId,
    artifact_path: Option<&str>,
    description: Option<&str>,
) -> Result<ModelVersion> {
    let description = validate::optional_text("description", description, 10_000)?;
    let artifact_path = validate::optional_text("artifactPath", artifact_path, 1024)?;
    let created_by = actor.user_id()?;
    let run_project = runs::table
        .find(run_id)
        .select(runs::project_id)
        .first::<ProjectId>(conn);
    let lock = Prepared(
        diesel::sql_query("SELECT 1 FROM models WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::Uuid, _>(model.id),
    )
    .execute(conn);
    let last = model_versions::table
        .filter(model_versions::model_id.eq(model.id))
        .select(diesel::dsl::max(model_versions::version))
        .first::<Option<i32>>(conn);
    let files = artifact_path.map(|path| artifacts::files_for_version(conn, run_id, path));
    let (run_project, _, last, files) = futures_util::future::try_join4(
        async { Ok(run_project.await.optional()?) },
        async { Ok::<_, Error>(lock.await?) },
        async { Ok::<_, Error>(last.await?) },
        async {
            match files {
                Some(files) => Ok(Some(files.await)),
                None => Ok(None),
            }
        },
    )
    .await?;
    // The run's refusal comes first: its files are read whatever the run's project.
    match run_project {
        None => return Err(Error::not_found(format!("no run with id {run_id}"))),
        Some(p) if p != model.project_id => {
            return Err(Error::invalid(format!(
                "run {run_id} belongs to another project"
            )));
        }
        Some(_) => {}
    }
    let files = files.transpose()?.unwrap_or_default();
    let manifest_sha256 = artifacts::manifest_digest(&files);
    let id = ModelVersionId::generate();
    let version = diesel::insert_into(model_versions::table)
        .values((
            model_versions::id.eq(id),
            model_versions::model_id.eq(model.id),
            model_versions::version.eq(last.unwrap_or(0) + 1),
            model_versions::run_id.eq(run_id),
            model_versions::artifact_path.eq(artifact_path),
            model_versions::description.eq(description),
            model_versions::created_by.eq(created_by),
            model_versions::manifest_sha256.eq(&manifest_sha256),
        ))
        .returning(ModelVersion::as_returning())
        .get_result::<ModelVersion>(conn);
    let attached = artifacts::attach_to_version(conn, id, &files);
    let edge = lineage::record_new_node_edges(
        conn,
        NodeRef::ModelVersion(id),
        &[(NodeRef::Run(run_id), "produced_by")],
    );
    let (version, _, _) =
        futures_util::future::try_join3(async { Ok::<_, Error>(version.await?) }, attached, edge)
            .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "model_version.register",
            project_id: Some(model.project_id),
            subject_kind: "model_version",
            subject_id: version.id.to_string(),
            before: None,
            after: Some(json!({
                "model": model.name,
                "version": version.version,
                "run_id": run_id,
                "artifact_path": version.artifact_path,
                "description": version.description,
                "manifest_sha256": version.manifest_sha256,
                "files": files,
            })),
        },
    )
    .await?;
    if crate::openlineage::emit::target().is_some() {
        let run = crate::runs::by_ids(conn, &[run_id]).await?.pop();
        if let Some(run) = run {
            crate::openlineage::emit::model_version_registered(
                conn,
                &run,
                &model.name,
                version.version,
            )
            .await?;
        }
    }
    Ok(version)
}

/// A model version with its model, by id.
pub async fn version_and_model(
    conn: &mut Conn,
    id: ModelVersionId,
) -> Result<(ModelVersion, Model)> {
    model_versions::table
        .inner_join(models::table)
        .filter(model_versions::id.eq(id))
        .select((ModelVersion::as_select(), Model::as_select()))
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| missing_version(id))
}

/// A model version with its model, the caller holding at least `needed` in its project; a
/// caller who is not a member gets the NOT_FOUND of a version that does not exist.
pub async fn version_and_model_for(
    conn: &mut Conn,
    actor: &Actor,
    id: ModelVersionId,
    needed: Role,
) -> Result<(ModelVersion, Model)> {
    let (version, model) = version_and_model(conn, id).await?;
    projects::authorize(conn, actor, model.project_id, needed)
        .await
        .map_err(projects::hiding(|| missing_version(id)))?;
    Ok((version, model))
}

fn missing_version(id: ModelVersionId) -> Error {
    Error::not_found(format!("no model version with id {id}"))
}

/// One version by project name, model name and number, in one query; then the role check.
pub async fn find_version(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    model_name: &str,
    version: i32,
) -> Result<ModelVersion> {
    let found: Option<(ModelVersion, ProjectId)> = model_versions::table
        .inner_join(models::table.inner_join(projects_table::table))
        .filter(projects_table::name.eq(project_name))
        .filter(models::name.eq(model_name))
        .filter(model_versions::version.eq(version))
        .select((ModelVersion::as_select(), models::project_id))
        .first(conn)
        .await
        .optional()?;
    let (found, project_id) = found.ok_or_else(|| {
        Error::not_found(format!(
            "no version {version} of model `{model_name}` in project `{project_name}`"
        ))
    })?;
    projects::authorize(conn, actor, project_id, Role::Viewer)
        .await
        .map_err(projects::hiding(|| {
            Error::not_found(format!(
                "no version {version} of model `{model_name}` in project `{project_name}`"
            ))
        }))?;
    Ok(found)
}

/// A project's models by name, one slice.
pub async fn list_in_project(
    conn: &mut Conn,
    project_id: ProjectId,
    slice: Slice,
) -> Result<Vec<Model>> {
    Ok(models::table
        .filter(models::project_id.eq(project_id))
        .order(models::name.asc())
        .limit(slice.limit)
        .offset(slice.offset)
        .select(Model::as_select())
        .load(conn)
        .await?)
}

/// The versions of many models, ascending, numbered in `versions` (numbered without gaps).
pub async fn versions_of(
    conn: &mut Conn,
    model_ids: &[ModelId],
    versions: VersionRange,
) -> Result<Vec<ModelVersion>> {
    Ok(model_versions::table
        .filter(model_versions::model_id.eq_any(model_ids))
        .filter(model_versions::version.gt(versions.after))
        .filter(model_versions::version.le(versions.last()))
        .order((model_versions::model_id, model_versions::version.asc()))
        .select(ModelVersion::as_select())
        .load(conn)
        .await?)
}

pub async fn by_ids(conn: &mut Conn, ids: &[ModelId]) -> Result<Vec<Model>> {
    Ok(models::table
        .filter(models::id.eq_any(ids))
        .select(Model::as_select())
        .load(conn)
        .await?)
}

pub async fn versions_by_id(conn: &mut Conn, ids: &[ModelVersionId]) -> Result<Vec<ModelVersion>> {
    Ok(model_versions::table
        .filter(model_versions::id.eq_any(ids))
        .select(ModelVersion::as_select())
        .load(conn)
        .await?)
}

/// Sets a model's description (`None` clears it); CONTRIBUTOR. The text it already has changes
/// nothing and records nothing.
pub async fn set_description(
    conn: &mut Conn,
    actor: &Actor,
    model_id: ModelId,
    description: Option<&str>,
) -> Result<Model> {
    let description = validate::optional_text("description", description, 10_000)?;
    let missing = || Error::not_found(format!("no model with id {model_id}"));
    let model: Model = models::table
        .find(model_id)
        .select(Model::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(missing)?;
    projects::authorize(conn, actor, model.project_id, Role::Contributor)
        .await
        .map_err(projects::hiding(missing))?;
    if model.description.as_deref() == description {
        return Ok(model);
    }
    let updated: Model = diesel::update(models::table.find(model_id))
        .set(models::description.eq(description))
        .returning(Model::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "model.describe",
            project_id: Some(model.project_id),
            subject_kind: "model",
            subject_id: model.id.to_string(),
            before: Some(json!({ "description": model.description })),
            after: Some(json!({ "description": updated.description })),
        },
    )
    .await?;
    Ok(updated)
}

/// Sets a model version's description (`None` clears it); CONTRIBUTOR. The description is
/// commentary: the version's files, manifest and source run never change. The text it already
/// has changes nothing and records nothing.
pub async fn set_version_description(
    conn: &mut Conn,
    actor: &Actor,
    version_id: ModelVersionId,
    description: Option<&str>,
) -> Result<ModelVersion> {
    let description = validate::optional_text("description", description, 10_000)?;
    let (_, model) = version_and_model_for(conn, actor, version_id, Role::Contributor).await?;
    let version: ModelVersion = model_versions::table
        .find(version_id)
        .select(ModelVersion::as_select())
        .for_update()
        .first(conn)
        .await?;
    if version.description.as_deref() == description {
        return Ok(version);
    }
    let updated: ModelVersion = diesel::update(model_versions::table.find(version_id))
        .set(model_versions::description.eq(description))
        .returning(ModelVersion::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "model_version.describe",
            project_id: Some(model.project_id),
            subject_kind: "model_version",
            subject_id: version.id.to_string(),
            before: Some(json!({ "description": version.description })),
            after: Some(json!({ "description": updated.description })),
        },
    )
    .await?;
    Ok(updated)
}
