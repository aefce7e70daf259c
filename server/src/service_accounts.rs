//! Project service accounts: identities for CI and automation that belong to a project, not a
//! person. One is a `users` row marked with its project (so `created_by` columns and the audit
//! log name it like anyone else) and a membership there. It never signs in, acts only through
//! its project-limited tokens (`access_tokens`), and holds at most CONTRIBUTOR: approving and
//! administering stay with people.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::access_tokens;
use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::{memberships, users};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{ProjectId, UserId};
use crate::projects::{self, Project, Role};
use crate::validate;

pub struct ServiceAccount {
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub name: String,
    /// How the account appears wherever a user is named (`service:<project>/<name>`).
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// The identity a service account acts under: not an email address, so it can never be
/// invited, mailed, or added to another project by `addMember`.
fn identity(project: &str, name: &str) -> String {
    format!("service:{project}/{name}")
}

/// Creates a service account in a project (project admins) with the VIEWER or CONTRIBUTOR role
/// (default CONTRIBUTOR: what CI needs to log runs and register models).
pub async fn create(
    conn: &mut Conn,
    actor: &Actor,
    project: &str,
    name: &str,
    role: Option<Role>,
) -> Result<ServiceAccount> {
    let role = role.unwrap_or(Role::Contributor);
    let project = projects::find_authorized(conn, actor, project, Role::Admin).await?;
    validate::slug("service account name", name)?;
    if role > Role::Contributor {
        return Err(Error::invalid(format!(
            "a service account holds VIEWER or CONTRIBUTOR, not {}: approving and administering need a person",
            role.as_str().to_uppercase()
        )));
    }
    let email = identity(&project.name, name);
    let created: Option<(UserId, DateTime<Utc>)> = diesel::insert_into(users::table)
        .values((
            users::id.eq(UserId::generate()),
            users::email.eq(&email),
            users::service_project_id.eq(project.id),
        ))
        .on_conflict_do_nothing()
        .returning((users::id, users::created_at))
        .get_result(conn)
        .await
        .optional()?;
    let Some((user_id, created_at)) = created else {
        return Err(Error::conflict(format!(
            "project `{}` already has (or had) a service account named `{name}`: names of removed accounts stay taken, so their past acts stay unambiguous",
            project.name
        )));
    };
    diesel::insert_into(memberships::table)
        .values((
            memberships::project_id.eq(project.id),
            memberships::user_id.eq(user_id),
            memberships::role.eq(role),
            memberships::groups.eq(Vec::<String>::new()),
            memberships::granted_by.eq(actor.user_id),
            memberships::granted_at.eq(created_at),
        ))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "service_account.create",
            project_id: Some(project.id),
            subject_kind: "user",
            subject_id: user_id.to_string(),
            before: None,
            after: Some(json!({"name": name, "email": email, "role": role})),
        },
    )
    .await?;
    Ok(ServiceAccount {
        user_id,
        project_id: project.id,
        name: name.to_owned(),
        email,
        role,
        created_at,
    })
}

/// The project's service accounts (any member may see who automation acts as), by name.
pub async fn list(conn: &mut Conn, actor: &Actor, project: &str) -> Result<Vec<ServiceAccount>> {
    let project = projects::find_authorized(conn, actor, project, Role::Viewer).await?;
    accounts_in(conn, &project).await
}

/// The service accounts of a project that still have their membership, by name. A removed
/// account keeps its user row (its past acts name it) but no membership.
async fn accounts_in(conn: &mut Conn, project: &Project) -> Result<Vec<ServiceAccount>> {
    let rows: Vec<(UserId, String, DateTime<Utc>, Role)> = users::table
        .inner_join(
            memberships::table.on(memberships::user_id
                .eq(users::id)
                .and(memberships::project_id.eq(project.id))),
        )
        .filter(users::service_project_id.eq(project.id))
        .order(users::email)
        .select((
            users::id,
            users::email,
            users::created_at,
            memberships::role,
        ))
        .load(conn)
        .await?;
    let prefix = identity(&project.name, "");
    Ok(rows
        .into_iter()
        .map(|(user_id, email, created_at, role)| ServiceAccount {
            user_id,
            project_id: project.id,
            name: email.strip_prefix(&prefix).unwrap_or(&email).to_owned(),
            email,
            role,
            created_at,
        })
        .collect())
}

/// The project and one of its (not removed) service accounts, for its admins.
pub async fn find_administered(
    conn: &mut Conn,
    actor: &Actor,
    project: &str,
    name: &str,
) -> Result<(Project, ServiceAccount)> {
    let project = projects::find_authorized(conn, actor, project, Role::Admin).await?;
    let account = accounts_in(conn, &project)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| {
            Error::not_found(format!(
                "project `{}` has no service account named `{name}`",
                project.name
            ))
        })?;
    Ok((project, account))
}

/// Removes a service account (project admins): its membership ends and every token it has is
/// revoked; its user row stays so that what it did keeps naming it.
pub async fn remove(conn: &mut Conn, actor: &Actor, project: &str, name: &str) -> Result<()> {
    let (project, account) = find_administered(conn, actor, project, name).await?;
    diesel::delete(memberships::table.find((project.id, account.user_id)))
        .execute(conn)
        .await?;
    let revoked = access_tokens::revoke_all_of(conn, account.user_id, Utc::now()).await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "service_account.remove",
            project_id: Some(project.id),
            subject_kind: "user",
            subject_id: account.user_id.to_string(),
            before: Some(json!({"name": account.name, "role": account.role})),
            after: Some(json!({"tokens_revoked": revoked})),
        },
    )
    .await?;
    Ok(())
}
