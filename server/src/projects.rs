//! Projects, their members and roles; the authorization rules every project-scoped operation uses.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use serde_json::json;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::auth;
use crate::db::schema::{memberships, projects, users};
use crate::db::{text_enum, Conn, Slice};
use crate::error::{Error, Result};
use crate::ids::{ProjectId, UserId};
use crate::stages::{self, Stage};
use crate::validate;

text_enum! {
    // Project roles, in increasing order of rights: each role can do what the ones before it can.
    // (A plain comment: a doc comment would become the GraphQL enum's description.)
    #[derive(PartialOrd, Ord, async_graphql::Enum)]
    #[graphql(name = "Role")]
    pub enum Role as "role" {
        Viewer = "viewer",
        Contributor = "contributor",
        Approver = "approver",
        Admin = "admin",
    }
}

text_enum! {
    // What deciding on a project's promotions needs of an approver: `LINK`, the mailed
    // single-use link (or a token); `SESSION`, a browser session of the approver signed in
    // recently (the link only opens the page).
    #[derive(async_graphql::Enum)]
    #[graphql(name = "ApprovalSignIn")]
    pub enum ApprovalSignIn as "approval sign-in rule" {
        Link = "link",
        Session = "session",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = projects)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The project's own approval sign-in rule (`None`: the server's).
    pub approval_sign_in: Option<ApprovalSignIn>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = memberships)]
pub struct Membership {
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub role: Role,
    pub groups: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// Who granted the role and groups as they are (NULL: granted before this was recorded).
    pub granted_by: Option<UserId>,
    /// When the role and groups were granted or last changed.
    pub granted_at: DateTime<Utc>,
}

/// The caller's role in a project: server admins act as project admins everywhere.
pub async fn role_of(
    conn: &mut Conn,
    actor: &Actor,
    project_id: ProjectId,
) -> Result<Option<Role>> {
    if !actor.reaches(project_id) || actor.is_admin {
        return Ok(role_given(actor, project_id, None));
    }
    let Some(user_id) = actor.user_id else {
        return Ok(None);
    };
    let membership: Option<Role> = memberships::table
        .find((project_id, user_id))
        .select(memberships::role)
        .first(conn)
        .await
        .optional()?;
    Ok(role_given(actor, project_id, membership))
}

/// The caller's role in a project, given its membership row there (read by the caller, often
/// joined to the object it is after): none outside its token's project, admin for server admins.
pub fn role_given(actor: &Actor, project_id: ProjectId, membership: Option<Role>) -> Option<Role> {
    if !actor.reaches(project_id) {
        None
    } else if actor.is_admin {
        Some(Role::Admin)
    } else {
        membership
    }
}

/// Refuses unless the caller holds at least `needed` in the project. A caller who is not a
/// member gets NOT_FOUND, as if the project did not exist (no existence oracle); callers that
/// looked an object up by id or name turn it into their own "no such …" with [`hiding`].
pub async fn authorize(
    conn: &mut Conn,
    actor: &Actor,
    project_id: ProjectId,
    needed: Role,
) -> Result<()> {
    require(role_of(conn, actor, project_id).await?, needed)
}

/// [`authorize`] for a role already read.
pub fn require(role: Option<Role>, needed: Role) -> Result<()> {
    match role {
        Some(role) if role >= needed => Ok(()),
        Some(role) => Err(Error::forbidden(format!(
            "this needs the {} role in the project; you are {}",
            needed.as_str(),
            role.as_str()
        ))),
        None => Err(Error::not_found("not found")),
    }
}

/// Maps the NOT_FOUND of [`authorize`] to the error of a missing object, so that an object in a
/// project the caller cannot read answers exactly like one that does not exist.
pub fn hiding(missing: impl FnOnce() -> Error) -> impl FnOnce(Error) -> Error {
    move |err| match err {
        Error::NotFound(_) => missing(),
        other => other,
    }
}

/// The caller's role in each of `project_ids` where it holds one (server admins: admin in all).
pub async fn roles_in(
    conn: &mut Conn,
    actor: &Actor,
    project_ids: &[ProjectId],
) -> Result<std::collections::HashMap<ProjectId, Role>> {
    let project_ids: Vec<ProjectId> = project_ids
        .iter()
        .copied()
        .filter(|id| actor.reaches(*id))
        .collect();
    if actor.is_admin {
        return Ok(project_ids.iter().map(|id| (*id, Role::Admin)).collect());
    }
    let Some(user_id) = actor.user_id else {
        return Ok(Default::default());
    };
    let rows: Vec<(ProjectId, Role)> = memberships::table
        .filter(memberships::user_id.eq(user_id))
        .filter(memberships::project_id.eq_any(&project_ids))
        .select((memberships::project_id, memberships::role))
        .load(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// A project's name and the caller's role there (none: it may not see the project), in one
/// statement; `None` when there is no such project.
pub async fn name_and_role(
    conn: &mut Conn,
    actor: &Actor,
    project_id: ProjectId,
) -> Result<Option<(String, Option<Role>)>> {
    let found = name_and_membership(conn, actor.user_id, project_id).await?;
    Ok(found.map(|(name, membership)| (name, role_given(actor, project_id, membership))))
}

/// A project's name and the user's membership there, if the project exists: what
/// [`role_given`] turns into a caller's role.
pub async fn name_and_membership(
    conn: &mut Conn,
    user_id: Option<UserId>,
    project_id: ProjectId,
) -> Result<Option<(String, Option<Role>)>> {
    Ok(projects::table
        .left_join(
            memberships::table.on(memberships::project_id
                .eq(projects::id)
                .and(memberships::user_id.nullable().eq(user_id))),
        )
        .filter(projects::id.eq(project_id))
        .select((projects::name, memberships::role.nullable()))
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_by_name(conn: &mut Conn, name: &str) -> Result<Project> {
    projects::table
        .filter(projects::name.eq(name))
        .select(Project::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no project named `{name}`")))
}

/// Looks a project up by name and checks the caller's role in it.
pub async fn find_authorized(
    conn: &mut Conn,
    actor: &Actor,
    name: &str,
    needed: Role,
) -> Result<Project> {
    let project = find_by_name(conn, name).await?;
    authorize(conn, actor, project.id, needed)
        .await
        .map_err(hiding(|| {
            Error::not_found(format!("no project named `{name}`"))
        }))?;
    Ok(project)
}

/// The projects a caller may read, as a statement filters by them: a rule PostgreSQL applies in
/// the statement itself where there is one, so a search does not first fetch the list (a round
/// trip and a statement on every search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    /// Every project (a server admin without a project-limited token).
    Every,
    /// The projects this user is a member of.
    MemberOf(UserId),
    /// Exactly these.
    Ids(Vec<ProjectId>),
}

/// Every project the caller may read: server admins all, members their projects, a
/// project-limited token at most its project. Only the last needs a statement.
pub async fn readable(conn: &mut Conn, actor: &Actor) -> Result<Readable> {
    if let Some(scope) = actor.project_scope {
        return Ok(Readable::Ids(match role_of(conn, actor, scope).await? {
            Some(_) => vec![scope],
            None => Vec::new(),
        }));
    }
    if actor.is_admin {
        return Ok(Readable::Every);
    }
    Ok(match actor.user_id {
        Some(user_id) => Readable::MemberOf(user_id),
        None => Readable::Ids(Vec::new()),
    })
}

/// The most projects one search may name.
pub const MAX_NAMED_PROJECTS: usize = 100;

/// The projects a search covers: those named (at most 100; each must exist and be readable, else
/// NOT_FOUND as for any project lookup), or, when none are named, every project the caller may
/// read (server admins: all).
pub async fn readable_ids(
    conn: &mut Conn,
    actor: &Actor,
    names: Option<&[String]>,
) -> Result<Vec<ProjectId>> {
    let Some(names) = names else {
        return Ok(match readable(conn, actor).await? {
            Readable::Every => projects::table.select(projects::id).load(conn).await?,
            Readable::MemberOf(user_id) => {
                memberships::table
                    .filter(memberships::user_id.eq(user_id))
                    .select(memberships::project_id)
                    .load(conn)
                    .await?
            }
            Readable::Ids(ids) => ids,
        });
    };
    if names.len() > MAX_NAMED_PROJECTS {
        return Err(Error::invalid(format!(
            "projects names at most {MAX_NAMED_PROJECTS} projects"
        )));
    }
    let found: Vec<(ProjectId, String)> = projects::table
        .filter(projects::name.eq_any(names))
        .select((projects::id, projects::name))
        .load(conn)
        .await?;
    let ids: Vec<ProjectId> = found.iter().map(|(id, _)| *id).collect();
    let roles = roles_in(conn, actor, &ids).await?;
    for name in names {
        let readable = found
            .iter()
            .any(|(id, found)| found == name && roles.contains_key(id));
        if !readable {
            return Err(Error::not_found(format!("no project named `{name}`")));
        }
    }
    Ok(ids)
}

/// The projects the caller is a member of (server admins too: their own memberships, not every
/// project), within a project-limited token's project.
pub async fn member_ids(conn: &mut Conn, actor: &Actor) -> Result<Vec<ProjectId>> {
    let Some(user_id) = actor.user_id else {
        return Ok(Vec::new());
    };
    let ids: Vec<ProjectId> = memberships::table
        .filter(memberships::user_id.eq(user_id))
        .select(memberships::project_id)
        .load(conn)
        .await?;
    Ok(ids.into_iter().filter(|id| actor.reaches(*id)).collect())
}

pub async fn by_ids(conn: &mut Conn, ids: &[ProjectId]) -> Result<Vec<Project>> {
    Ok(projects::table
        .filter(projects::id.eq_any(ids))
        .select(Project::as_select())
        .load(conn)
        .await?)
}

/// Any signed-in user may create a project and becomes its admin.
pub async fn create(
    conn: &mut Conn,
    actor: &Actor,
    name: &str,
    description: Option<&str>,
) -> Result<Project> {
    if actor.project_scope.is_some() {
        return Err(Error::forbidden(
            "a project-limited token cannot create projects",
        ));
    }
    validate::name("project name", name)?;
    let description = validate::optional_text("description", description, 10_000)?;
    let exists: bool = diesel::select(diesel::dsl::exists(
        projects::table.filter(projects::name.eq(name)),
    ))
    .get_result(conn)
    .await?;
    if exists {
        return Err(Error::conflict(format!(
            "a project named `{name}` already exists"
        )));
    }
    let project: Project = diesel::insert_into(projects::table)
        .values((
            projects::id.eq(ProjectId::generate()),
            projects::name.eq(name),
            projects::description.eq(description),
        ))
        .returning(Project::as_returning())
        .get_result(conn)
        .await?;
    stages::create_defaults(conn, project.id).await?;
    if let Some(user_id) = actor.user_id {
        diesel::insert_into(memberships::table)
            .values((
                memberships::project_id.eq(project.id),
                memberships::user_id.eq(user_id),
                memberships::role.eq(Role::Admin),
                // The creator appoints themselves.
                memberships::granted_by.eq(user_id),
            ))
            .execute(conn)
            .await?;
    }
    audit::record(
        conn,
        actor,
        Change {
            action: "project.create",
            project_id: Some(project.id),
            subject_kind: "project",
            subject_id: project.id.to_string(),
            before: None,
            after: Some(json!({"name": project.name, "description": project.description, "admin": actor.email})),
        },
    )
    .await?;
    Ok(project)
}

/// Adds a member or changes an existing member's role and groups (project admins only).
pub async fn add_member(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    email: &str,
    role: Role,
    groups: Vec<String>,
) -> Result<(Membership, auth::User)> {
    let project = find_authorized(conn, actor, project_name, Role::Admin).await?;
    let mut groups = groups;
    for group in &groups {
        validate::name("group name", group)?;
    }
    groups.sort();
    groups.dedup();
    let email = auth::normalize_email(email)?;
    // Adding a member never creates an account: an unknown address is invited instead.
    let user = auth::find_user_by_email(conn, &email).await?.ok_or_else(|| {
        Error::not_found(format!(
            "{email} has no account yet: invite them with inviteMember (they join when they first sign in)"
        ))
    })?;
    let before: Option<Membership> = memberships::table
        .find((project.id, user.id))
        .select(Membership::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    if let Some(existing) = &before {
        if existing.role == role && existing.groups == groups {
            return Ok((existing.clone(), user));
        }
    }
    // The granter is the caller, except when members change their own membership: that keeps
    // its granter, so nobody launders a role the requester granted them by re-granting it to
    // themselves (separation of duties, `approvals::ineligibility`).
    let granted_by = match &before {
        Some(existing) if actor.user_id == Some(user.id) => existing.granted_by,
        _ => actor.user_id,
    };
    let now = Utc::now();
    let membership: Membership = diesel::insert_into(memberships::table)
        .values((
            memberships::project_id.eq(project.id),
            memberships::user_id.eq(user.id),
            memberships::role.eq(role),
            memberships::groups.eq(&groups),
            memberships::granted_by.eq(granted_by),
            memberships::granted_at.eq(now),
        ))
        .on_conflict((memberships::project_id, memberships::user_id))
        .do_update()
        .set((
            memberships::role.eq(role),
            memberships::groups.eq(&groups),
            memberships::granted_by.eq(granted_by),
            memberships::granted_at.eq(now),
        ))
        .returning(Membership::as_returning())
        .get_result(conn)
        .await?;
    let mut granters: Vec<UserId> = before.iter().filter_map(|m| m.granted_by).collect();
    granters.extend(granted_by);
    let emails = emails_of(conn, &granters).await?;
    let email_of = |id: Option<UserId>| id.and_then(|id| emails.get(&id).cloned());
    audit::record(
        conn,
        actor,
        Change {
            action: "member.add",
            project_id: Some(project.id),
            subject_kind: "user",
            subject_id: user.id.to_string(),
            before: before.map(|m| {
                json!({"role": m.role, "groups": m.groups, "granted_by": email_of(m.granted_by), "granted_at": m.granted_at})
            }),
            after: Some(json!({
                "email": user.email,
                "role": membership.role,
                "groups": membership.groups,
                "granted_by": email_of(membership.granted_by),
                "granted_at": membership.granted_at,
            })),
        },
    )
    .await?;
    Ok((membership, user))
}

/// Sets what deciding on the project's promotions needs (project admins); `None` follows the
/// server's setting.
pub async fn set_approval_sign_in(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    rule: Option<ApprovalSignIn>,
) -> Result<Project> {
    let project = find_authorized(conn, actor, project_name, Role::Admin).await?;
    if project.approval_sign_in == rule {
        return Ok(project);
    }
    let updated: Project = diesel::update(projects::table.find(project.id))
        .set(projects::approval_sign_in.eq(rule))
        .returning(Project::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "project.approval_sign_in",
            project_id: Some(project.id),
            subject_kind: "project",
            subject_id: project.id.to_string(),
            before: Some(json!({"approval_sign_in": project.approval_sign_in})),
            after: Some(json!({"approval_sign_in": rule})),
        },
    )
    .await?;
    Ok(updated)
}

/// Removes a member from a project (project admins). The project's last admin stays: a project
/// without one could never be administered again. Subscriptions of the removed member to the
/// project end when this commits (they re-check on membership changes).
pub async fn remove_member(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    email: &str,
) -> Result<()> {
    let project = find_authorized(conn, actor, project_name, Role::Admin).await?;
    let email = auth::normalize_email(email)?;
    let missing = || Error::not_found(format!("{email} is not a member of {project_name}"));
    let user = auth::find_user_by_email(conn, &email)
        .await?
        .ok_or_else(missing)?;
    // The project's admins are locked first, so two admins cannot remove each other at once.
    let admins: Vec<UserId> = memberships::table
        .filter(memberships::project_id.eq(project.id))
        .filter(memberships::role.eq(Role::Admin))
        .select(memberships::user_id)
        .for_update()
        .load(conn)
        .await?;
    let before: Membership = memberships::table
        .find((project.id, user.id))
        .select(Membership::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(missing)?;
    if before.role == Role::Admin && admins.len() <= 1 {
        return Err(Error::conflict(format!(
            "{email} is the last admin of {project_name}; make another member admin first"
        )));
    }
    diesel::delete(memberships::table.find((project.id, user.id)))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "member.remove",
            project_id: Some(project.id),
            subject_kind: "user",
            subject_id: user.id.to_string(),
            before: Some(json!({"email": email, "role": before.role, "groups": before.groups})),
            after: None,
        },
    )
    .await
}

/// The email of each of these users.
pub async fn emails_of(
    conn: &mut Conn,
    ids: &[UserId],
) -> Result<std::collections::HashMap<UserId, String>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(UserId, String)> = users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::email))
        .load(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// A project's members by email, one slice.
pub async fn members(
    conn: &mut Conn,
    project_id: ProjectId,
    slice: Slice,
) -> Result<Vec<(Membership, auth::User)>> {
    Ok(memberships::table
        .inner_join(users::table)
        .filter(memberships::project_id.eq(project_id))
        .order(users::email.asc())
        .limit(slice.limit)
        .offset(slice.offset)
        .select((Membership::as_select(), auth::User::as_select()))
        .load(conn)
        .await?)
}

/// The memberships of `user_id` in projects `viewer` may read (server admins: all), by project
/// name, one slice. Filtering in the query keeps pages full and hides how many were left out.
pub async fn memberships_visible_to(
    conn: &mut Conn,
    user_id: UserId,
    viewer: &Actor,
    slice: Slice,
) -> Result<Vec<(Membership, Project)>> {
    let mut query = memberships::table
        .inner_join(projects::table)
        .filter(memberships::user_id.eq(user_id))
        .order(projects::name.asc())
        .limit(slice.limit)
        .offset(slice.offset)
        .select((Membership::as_select(), Project::as_select()))
        .into_boxed();
    if let Some(scope) = viewer.project_scope {
        query = query.filter(memberships::project_id.eq(scope));
    }
    if !viewer.is_admin {
        let Some(viewer_id) = viewer.user_id else {
            return Ok(Vec::new());
        };
        let viewer_memberships = diesel::alias!(memberships as viewer_memberships);
        query = query.filter(
            memberships::project_id.eq_any(
                viewer_memberships
                    .filter(viewer_memberships.field(memberships::user_id).eq(viewer_id))
                    .select(viewer_memberships.field(memberships::project_id)),
            ),
        );
    }
    Ok(query.load(conn).await?)
}

/// Adds a stage to a project (project admins); see [`stages::add`].
pub async fn add_stage(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    name: &str,
    position: i32,
    requires_approval: bool,
) -> Result<Stage> {
    let project = find_authorized(conn, actor, project_name, Role::Admin).await?;
    stages::add(conn, actor, &project, name, position, requires_approval).await
}

/// Sets whether promotions into a stage wait for approval (project admins).
pub async fn set_stage_approval(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    name: &str,
    requires_approval: bool,
) -> Result<Stage> {
    let project = find_authorized(conn, actor, project_name, Role::Admin).await?;
    stages::set_requires_approval(conn, actor, &project, name, requires_approval).await
}
