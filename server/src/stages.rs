//! Stages: per project, ordered; each says whether promotions into it wait for approval. This
//! module owns the table; the admin commands that change stages are authorized by `projects`
//! (`projects::add_stage`, `projects::set_stage_approval`), which calls in here with the
//! project it checked, so the two modules do not import each other.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::project_stages;
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::ProjectId;
use crate::projects::Project;

/// Where superseded versions go; always present, never holds a "current" version.
pub const ARCHIVED: &str = "archived";

/// New projects get these: (name, position, requires approval).
const DEFAULTS: [(&str, i32, bool); 4] = [
    ("development", 10, false),
    ("staging", 20, true),
    ("production", 30, true),
    (ARCHIVED, 1000, false),
];

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = project_stages)]
pub struct Stage {
    pub project_id: ProjectId,
    pub name: String,
    pub position: i32,
    pub requires_approval: bool,
}

pub async fn create_defaults(conn: &mut Conn, project_id: ProjectId) -> Result<()> {
    let rows: Vec<_> = DEFAULTS
        .iter()
        .map(|(name, position, approval)| {
            (
                project_stages::project_id.eq(project_id),
                project_stages::name.eq(*name),
                project_stages::position.eq(*position),
                project_stages::requires_approval.eq(*approval),
            )
        })
        .collect();
    diesel::insert_into(project_stages::table)
        .values(&rows)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn list(conn: &mut Conn, project_id: ProjectId) -> Result<Vec<Stage>> {
    Ok(project_stages::table
        .filter(project_stages::project_id.eq(project_id))
        .order(project_stages::position)
        .select(Stage::as_select())
        .load(conn)
        .await?)
}

pub async fn find(conn: &mut Conn, project_id: ProjectId, name: &str) -> Result<Stage> {
    project_stages::table
        .find((project_id, name))
        .select(Stage::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::invalid(format!("unknown stage `{name}`")))
}

/// Adds a stage at `position` to a project the caller administers. Positions order the stages;
/// two stages cannot share one.
pub async fn add(
    conn: &mut Conn,
    actor: &Actor,
    project: &Project,
    name: &str,
    position: i32,
    requires_approval: bool,
) -> Result<Stage> {
    let project_name = &project.name;
    crate::validate::slug("stage name", name)?;
    let existing = list(conn, project.id).await?;
    if existing.iter().any(|s| s.name == name) {
        return Err(Error::conflict(format!(
            "project `{project_name}` already has a stage `{name}`"
        )));
    }
    if let Some(other) = existing.iter().find(|s| s.position == position) {
        return Err(Error::conflict(format!(
            "stage `{}` already has position {position}",
            other.name
        )));
    }
    let stage: Stage = diesel::insert_into(project_stages::table)
        .values((
            project_stages::project_id.eq(project.id),
            project_stages::name.eq(name),
            project_stages::position.eq(position),
            project_stages::requires_approval.eq(requires_approval),
        ))
        .returning(Stage::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "stage.add",
            project_id: Some(project.id),
            subject_kind: "stage",
            subject_id: format!("{}/{name}", project.id),
            before: None,
            after: Some(
                json!({"name": name, "position": position, "requires_approval": requires_approval}),
            ),
        },
    )
    .await?;
    Ok(stage)
}

/// Sets whether promotions into a stage of a project the caller administers wait for approval.
pub async fn set_requires_approval(
    conn: &mut Conn,
    actor: &Actor,
    project: &Project,
    name: &str,
    requires_approval: bool,
) -> Result<Stage> {
    let before = find(conn, project.id, name).await?;
    if name == ARCHIVED && requires_approval {
        return Err(Error::invalid("archiving never waits for approval"));
    }
    if before.requires_approval == requires_approval {
        return Ok(before);
    }
    let stage: Stage = diesel::update(project_stages::table.find((project.id, name)))
        .set(project_stages::requires_approval.eq(requires_approval))
        .returning(Stage::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "stage.set_approval",
            project_id: Some(project.id),
            subject_kind: "stage",
            subject_id: format!("{}/{name}", project.id),
            before: Some(json!({"requires_approval": before.requires_approval})),
            after: Some(json!({"requires_approval": requires_approval})),
        },
    )
    .await?;
    Ok(stage)
}
