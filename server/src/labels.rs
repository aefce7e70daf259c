//! Labels: key/value tags on runs, models and model versions, and aliases — named pointers from
//! a model to one of its versions (`champion`, `candidate`).
//!
//! Tags and free aliases are bookkeeping: a contributor sets and moves them, each change audited.
//! A governed alias is declared by a project admin and bound to a stage: it always names the
//! version holding that stage, so moving it *is* a promotion (policies, approvals, audit) and it
//! never has a row of its own in `model_aliases`.

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::{governed_aliases, model_aliases, model_versions, models};
use crate::db::{Conn, Prepared};
use crate::error::{Error, Result};
use crate::ids::{ModelId, ModelVersionId, ProjectId, RunId, TypedId};
use crate::models::{Model, ModelVersion};
use crate::projects::{self, Role};
use crate::promotions::{self, Gate, Promotion};
use crate::run_keys::{self, KeyKind};

/// Most tags one object holds, longest key and value.
pub const MAX_TAGS: usize = 100;
const MAX_KEY_CHARS: usize = 250;
const MAX_VALUE_BYTES: usize = 5_000;

/// What a tag is on.
#[derive(Debug, Clone, Copy)]
pub enum Tagged {
    Run(RunId),
    Model(ModelId),
    ModelVersion(ModelVersionId),
}

impl Tagged {
    fn kind(self) -> &'static str {
        match self {
            Tagged::Run(_) => "run",
            Tagged::Model(_) => "model",
            Tagged::ModelVersion(_) => "model_version",
        }
    }

    fn id(self) -> uuid::Uuid {
        match self {
            Tagged::Run(id) => id.uuid(),
            Tagged::Model(id) => id.uuid(),
            Tagged::ModelVersion(id) => id.uuid(),
        }
    }

    fn missing(self) -> Error {
        let what = match self {
            Tagged::Run(_) => "run",
            Tagged::Model(_) => "model",
            Tagged::ModelVersion(_) => "model version",
        };
        Error::not_found(format!("no {what} with id {}", self.id()))
    }

    /// The statement that locks the object's row and reads its project and tags (the table
    /// names are fixed text, the id a bind).
    fn lock_sql(self) -> &'static str {
        match self {
            Tagged::Run(_) => "SELECT project_id, tags FROM runs WHERE id = $1 FOR UPDATE",
            Tagged::Model(_) => "SELECT project_id, tags FROM models WHERE id = $1 FOR UPDATE",
            Tagged::ModelVersion(_) => {
                "SELECT m.project_id, v.tags FROM model_versions v JOIN models m ON m.id = v.model_id
                 WHERE v.id = $1 FOR UPDATE OF v"
            }
        }
    }

    fn update_sql(self) -> &'static str {
        match self {
            Tagged::Run(_) => "UPDATE runs SET tags = $2 WHERE id = $1",
            Tagged::Model(_) => "UPDATE models SET tags = $2 WHERE id = $1",
            Tagged::ModelVersion(_) => "UPDATE model_versions SET tags = $2 WHERE id = $1",
        }
    }
}

/// A tag key: 1 to 250 characters of letters, digits, `_`, `-`, `.`, `/`, `:` and spaces (the
/// characters MLflow allows), not starting or ending with a space.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.chars().count() <= MAX_KEY_CHARS
        && key.trim() == key
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | ' '));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "tag key `{key}` is not valid: use 1 to {MAX_KEY_CHARS} letters, digits, spaces, `_`, `-`, `.`, `/` or `:`"
        )))
    }
}

#[derive(QueryableByName)]
struct TagRow {
    #[diesel(sql_type = SqlUuid)]
    project_id: ProjectId,
    #[diesel(sql_type = Jsonb)]
    tags: Value,
}

/// Sets (`Some`) or deletes (`None`) one tag; CONTRIBUTOR or more. Returns all the object's tags
/// after the change. Deleting a tag that is not there is NOT_FOUND; setting a tag to the value it
/// has changes nothing and records nothing.
pub async fn set_tag(
    conn: &mut Conn,
    actor: &Actor,
    target: Tagged,
    key: &str,
    value: Option<&str>,
) -> Result<BTreeMap<String, String>> {
    check_key(key)?;
    if let Some(value) = value {
        crate::validate::text("tag value", value, MAX_VALUE_BYTES)?;
    }
    let row: TagRow =
        Prepared(diesel::sql_query(target.lock_sql()).bind::<SqlUuid, _>(target.id()))
            .get_result(conn)
            .await
            .optional()?
            .ok_or_else(|| target.missing())?;
    projects::authorize(conn, actor, row.project_id, Role::Contributor)
        .await
        .map_err(projects::hiding(|| target.missing()))?;
    let mut tags: BTreeMap<String, String> = serde_json::from_value(row.tags)
        .map_err(|e| Error::internal(anyhow::anyhow!("tags of a {}: {e}", target.kind())))?;
    let before = tags.get(key).cloned();
    match value {
        Some(value) if before.as_deref() == Some(value) => return Ok(tags),
        Some(value) => {
            if before.is_none() && tags.len() >= MAX_TAGS {
                return Err(Error::invalid(format!(
                    "a {} holds at most {MAX_TAGS} tags",
                    target.kind()
                )));
            }
            tags.insert(key.to_owned(), value.to_owned());
        }
        None => {
            if tags.remove(key).is_none() {
                return Err(Error::not_found(format!(
                    "the {} has no tag `{key}`",
                    target.kind()
                )));
            }
        }
    }
    Prepared(
        diesel::sql_query(target.update_sql())
            .bind::<SqlUuid, _>(target.id())
            .bind::<Jsonb, _>(json!(tags)),
    )
    .execute(conn)
    .await?;
    if let (Tagged::Run(_), Some(_), None) = (target, value, &before) {
        run_keys::record(conn, row.project_id, KeyKind::Tag, [key]).await?;
    }
    let action = match (target, value.is_some()) {
        (Tagged::Run(_), true) => "run.tag.set",
        (Tagged::Run(_), false) => "run.tag.delete",
        (Tagged::Model(_), true) => "model.tag.set",
        (Tagged::Model(_), false) => "model.tag.delete",
        (Tagged::ModelVersion(_), true) => "model_version.tag.set",
        (Tagged::ModelVersion(_), false) => "model_version.tag.delete",
    };
    audit::record(
        conn,
        actor,
        Change {
            action,
            project_id: Some(row.project_id),
            subject_kind: target.kind(),
            subject_id: target.id().to_string(),
            before: Some(json!({ "key": key, "value": before })),
            after: Some(json!({ "key": key, "value": value })),
        },
    )
    .await?;
    Ok(tags)
}

/// An alias name: as stage names (see [`crate::validate::slug`]).
pub fn check_alias(alias: &str) -> Result<()> {
    crate::validate::slug("alias", alias)
}

/// The stage a governed alias of the project follows, if the alias is governed.
pub async fn governed_stage(
    conn: &mut Conn,
    project_id: ProjectId,
    alias: &str,
) -> Result<Option<String>> {
    Ok(governed_aliases::table
        .find((project_id, alias))
        .select(governed_aliases::stage)
        .first(conn)
        .await
        .optional()?)
}

/// What moving an alias did: moved it at once (free alias), or asked for a promotion (governed
/// alias: it moves when the promotion applies).
pub enum AliasMove {
    Moved,
    Requested(Box<Promotion>),
}

/// Points `alias` of the version's model at the version. CONTRIBUTOR or more. A governed alias
/// becomes a promotion request into its stage; `comment` goes with it.
pub async fn set_alias(
    conn: &mut Conn,
    actor: &Actor,
    gate: &Gate<'_>,
    version_id: ModelVersionId,
    alias: &str,
    comment: Option<&str>,
) -> Result<AliasMove> {
    check_alias(alias)?;
    let (version, model) =
        crate::models::version_and_model_for(conn, actor, version_id, Role::Contributor).await?;
    if let Some(stage) = governed_stage(conn, model.project_id, alias).await? {
        let promotion = promotions::request(conn, actor, gate, version_id, &stage, comment).await?;
        return Ok(AliasMove::Requested(Box::new(promotion)));
    }
    let previous: Option<ModelVersionId> = model_aliases::table
        .find((model.id, alias))
        .select(model_aliases::model_version_id)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    if previous == Some(version.id) {
        return Ok(AliasMove::Moved);
    }
    diesel::insert_into(model_aliases::table)
        .values((
            model_aliases::model_id.eq(model.id),
            model_aliases::alias.eq(alias),
            model_aliases::model_version_id.eq(version.id),
            model_aliases::set_by.eq(actor.user_id()?),
        ))
        .on_conflict((model_aliases::model_id, model_aliases::alias))
        .do_update()
        .set((
            model_aliases::model_version_id.eq(version.id),
            model_aliases::set_by.eq(actor.user_id()?),
            model_aliases::set_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "model.alias.set",
            project_id: Some(model.project_id),
            subject_kind: "model",
            subject_id: model.id.to_string(),
            before: Some(json!({ "alias": alias, "model_version_id": previous })),
            after: Some(json!({ "alias": alias, "model_version_id": version.id, "version": version.version })),
        },
    )
    .await?;
    Ok(AliasMove::Moved)
}

/// Removes a free alias of a model. CONTRIBUTOR or more; a governed alias is removed by demoting
/// (or archiving) the version that holds its stage, not here.
pub async fn delete_alias(
    conn: &mut Conn,
    actor: &Actor,
    project: &str,
    model_name: &str,
    alias: &str,
) -> Result<()> {
    let model = crate::models::find(conn, actor, project, model_name, Role::Contributor).await?;
    if governed_stage(conn, model.project_id, alias)
        .await?
        .is_some()
    {
        return Err(Error::conflict(format!(
            "`{alias}` is governed: it names the version in its stage and moves only by promotion"
        )));
    }
    let removed: Option<ModelVersionId> =
        diesel::delete(model_aliases::table.find((model.id, alias)))
            .returning(model_aliases::model_version_id)
            .get_result(conn)
            .await
            .optional()?;
    let Some(removed) = removed else {
        return Err(Error::not_found(format!(
            "model `{model_name}` has no alias `{alias}`"
        )));
    };
    audit::record(
        conn,
        actor,
        Change {
            action: "model.alias.delete",
            project_id: Some(model.project_id),
            subject_kind: "model",
            subject_id: model.id.to_string(),
            before: Some(json!({ "alias": alias, "model_version_id": removed })),
            after: None,
        },
    )
    .await?;
    Ok(())
}

/// Declares `alias` governed in the project, following `stage` (`Some`), or makes it free again
/// (`None`). ADMIN. Free aliases of that name on the project's models are removed when it becomes
/// governed (each removal audited with the declaration).
pub async fn set_governed(
    conn: &mut Conn,
    actor: &Actor,
    project: &str,
    alias: &str,
    stage: Option<&str>,
) -> Result<()> {
    check_alias(alias)?;
    let project = projects::find_authorized(conn, actor, project, Role::Admin).await?;
    let before = governed_stage(conn, project.id, alias).await?;
    if before.as_deref() == stage {
        return Ok(());
    }
    let mut removed = Vec::new();
    match stage {
        Some(stage) => {
            crate::stages::find(conn, project.id, stage).await?;
            diesel::insert_into(governed_aliases::table)
                .values((
                    governed_aliases::project_id.eq(project.id),
                    governed_aliases::alias.eq(alias),
                    governed_aliases::stage.eq(stage),
                ))
                .on_conflict((governed_aliases::project_id, governed_aliases::alias))
                .do_update()
                .set(governed_aliases::stage.eq(stage))
                .execute(conn)
                .await?;
            let models_of_project = models::table
                .filter(models::project_id.eq(project.id))
                .select(models::id);
            removed = diesel::delete(
                model_aliases::table
                    .filter(model_aliases::alias.eq(alias))
                    .filter(model_aliases::model_id.eq_any(models_of_project)),
            )
            .returning((model_aliases::model_id, model_aliases::model_version_id))
            .get_results::<(ModelId, ModelVersionId)>(conn)
            .await?;
        }
        None => {
            diesel::delete(governed_aliases::table.find((project.id, alias)))
                .execute(conn)
                .await?;
        }
    }
    audit::record(
        conn,
        actor,
        Change {
            action: "project.alias.govern",
            project_id: Some(project.id),
            subject_kind: "project",
            subject_id: project.id.to_string(),
            before: Some(json!({ "alias": alias, "stage": before })),
            after: Some(json!({
                "alias": alias,
                "stage": stage,
                "removed_free_aliases": removed
                    .iter()
                    .map(|(model, version)| json!({ "model_id": model, "model_version_id": version }))
                    .collect::<Vec<_>>(),
            })),
        },
    )
    .await?;
    Ok(())
}

/// The version `alias` names in model `model_name` of `project` (VIEWER). NOT_FOUND for a
/// project or model the caller cannot see, and for an alias that names nothing (yet).
pub async fn find_by_alias(
    conn: &mut Conn,
    actor: &Actor,
    project: &str,
    model_name: &str,
    alias: &str,
) -> Result<ModelVersion> {
    let model = crate::models::find(conn, actor, project, model_name, Role::Viewer).await?;
    resolve(conn, &model, alias).await?.ok_or_else(|| {
        Error::not_found(format!(
            "model `{model_name}` has no version with alias `{alias}`"
        ))
    })
}

/// The version an alias of a model names: a governed alias the version in its stage, a free
/// alias its row. `None` when it names nothing (yet). The caller has authorized the model.
pub async fn resolve(conn: &mut Conn, model: &Model, alias: &str) -> Result<Option<ModelVersion>> {
    if let Some(stage) = governed_stage(conn, model.project_id, alias).await? {
        return Ok(model_versions::table
            .filter(model_versions::model_id.eq(model.id))
            .filter(model_versions::stage.eq(stage))
            .select(ModelVersion::as_select())
            .first(conn)
            .await
            .optional()?);
    }
    Ok(model_aliases::table
        .inner_join(model_versions::table)
        .filter(model_aliases::model_id.eq(model.id))
        .filter(model_aliases::alias.eq(alias))
        .select(ModelVersion::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// [`aliases_of`] as a subquery of a statement that reads a version's `model_versions` and
/// `models` rows: its aliases, free and governed, sorted bytewise as `aliases_of` sorts them
/// (NULL when it has none). The MLflow by-name lookup answers a version in one statement with it.
pub(crate) const ALIASES_OF_VERSION_ROW: &str =
    "(SELECT array_agg(a.alias ORDER BY a.alias COLLATE \"C\") FROM (\
     SELECT alias FROM model_aliases WHERE model_version_id = model_versions.id \
     UNION ALL SELECT alias FROM governed_aliases \
     WHERE project_id = models.project_id AND stage = model_versions.stage) a)";

/// The aliases naming each of these versions, free ones and governed ones (through the stage
/// the version holds), sorted by name: one statement whatever the number of versions.
///
/// The statement is sent when the answer is first polled and the answer does not hold `conn`:
/// a caller may await it together with other statements on the same connection, which then go
/// to PostgreSQL in one pipeline (one round trip instead of one each).
pub fn aliases_of(
    conn: &mut Conn,
    version_ids: Vec<ModelVersionId>,
) -> impl std::future::Future<Output = Result<HashMap<ModelVersionId, Vec<String>>>> + Send + 'static
{
    // Free aliases and governed ones (those of the version's stage), in one statement.
    let governed = model_versions::table
        .inner_join(models::table)
        .inner_join(
            governed_aliases::table.on(governed_aliases::project_id
                .eq(models::project_id)
                .and(model_versions::stage.eq(governed_aliases::stage.nullable()))),
        )
        .filter(model_versions::id.eq_any(version_ids.clone()))
        .select((model_versions::id, governed_aliases::alias));
    let found = model_aliases::table
        .filter(model_aliases::model_version_id.eq_any(version_ids))
        .select((model_aliases::model_version_id, model_aliases::alias))
        .union_all(governed)
        .load::<(ModelVersionId, String)>(conn);
    async move {
        let mut found = found.await?;
        found.sort();
        let mut by_version: HashMap<ModelVersionId, Vec<String>> = HashMap::new();
        for (id, alias) in found {
            by_version.entry(id).or_default().push(alias);
        }
        Ok(by_version)
    }
}

/// Every alias of a model with the version it names (governed aliases whose stage no version
/// holds are left out), by alias.
pub async fn aliases_of_model(
    conn: &mut Conn,
    model: &Model,
) -> Result<Vec<(String, ModelVersion)>> {
    let mut found: Vec<(String, ModelVersion)> = model_aliases::table
        .inner_join(model_versions::table)
        .filter(model_aliases::model_id.eq(model.id))
        .select((model_aliases::alias, ModelVersion::as_select()))
        .load(conn)
        .await?;
    let governed: Vec<(String, ModelVersion)> = governed_aliases::table
        .inner_join(
            model_versions::table.on(model_versions::stage
                .eq(governed_aliases::stage.nullable())
                .and(model_versions::model_id.eq(model.id))),
        )
        .filter(governed_aliases::project_id.eq(model.project_id))
        .select((governed_aliases::alias, ModelVersion::as_select()))
        .load(conn)
        .await?;
    found.extend(governed);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Every alias of each of these models with the number of the version it names (governed
/// aliases whose stage no version holds are left out), sorted by alias: two queries whatever the
/// number of models. The caller has authorized the models.
pub async fn aliases_of_models(
    conn: &mut Conn,
    model_ids: &[ModelId],
) -> Result<HashMap<ModelId, Vec<(String, i32)>>> {
    let mut found: Vec<(ModelId, String, i32)> = model_aliases::table
        .inner_join(model_versions::table)
        .filter(model_aliases::model_id.eq_any(model_ids))
        .select((
            model_aliases::model_id,
            model_aliases::alias,
            model_versions::version,
        ))
        .load(conn)
        .await?;
    let governed: Vec<(ModelId, String, i32)> = model_versions::table
        .inner_join(models::table)
        .inner_join(
            governed_aliases::table.on(governed_aliases::project_id
                .eq(models::project_id)
                .and(model_versions::stage.eq(governed_aliases::stage.nullable()))),
        )
        .filter(model_versions::model_id.eq_any(model_ids))
        .select((
            model_versions::model_id,
            governed_aliases::alias,
            model_versions::version,
        ))
        .load(conn)
        .await?;
    found.extend(governed);
    found.sort();
    let mut by_model: HashMap<ModelId, Vec<(String, i32)>> = HashMap::new();
    for (model, alias, version) in found {
        by_model.entry(model).or_default().push((alias, version));
    }
    Ok(by_model)
}
