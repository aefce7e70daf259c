//! Invitations: how a project admin brings in someone who has no account yet. Users are made by
//! the identity provider, by signing in from an allowed domain, or by server admins — never as a
//! side effect of adding a member — so an unknown address is invited instead: the invitee gets
//! a mail, and joins the project (with the invitation's role and groups, granted by the inviter,
//! which keeps separation of duties intact) when their account comes to be. An open invitation
//! also lets its address sign in by mailed link where no domain rule would.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::auth::{self, User};
use crate::db::schema::{invitations, memberships};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{InvitationId, ProjectId, UserId};
use crate::notify;
use crate::projects::{self, Role};
use crate::validate;

/// How long an invitation stays open.
pub const LIFETIME: Duration = Duration::days(14);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invitations)]
pub struct Invitation {
    pub id: InvitationId,
    pub project_id: ProjectId,
    pub email: String,
    pub role: Role,
    pub groups: Vec<String>,
    pub invited_by: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Invites `email` to a project (its admins), or updates the open invitation's role and groups.
/// An address that already has an account is added with `addMember` instead.
pub async fn invite(
    conn: &mut Conn,
    actor: &Actor,
    public_url: &str,
    project_name: &str,
    email: &str,
    role: Role,
    mut groups: Vec<String>,
) -> Result<Invitation> {
    let project = projects::find_authorized(conn, actor, project_name, Role::Admin).await?;
    let inviter = actor.user_id()?;
    for group in &groups {
        validate::name("group name", group)?;
    }
    groups.sort();
    groups.dedup();
    let email = auth::normalize_email(email)?;
    if auth::find_user_by_email(conn, &email).await?.is_some() {
        return Err(Error::conflict(format!(
            "{email} already has an account: add them with addMember"
        )));
    }
    let now = Utc::now();
    let open = invitations::table
        .filter(invitations::email.eq(&email))
        .filter(invitations::accepted_at.is_null())
        .filter(invitations::revoked_at.is_null())
        .filter(invitations::expires_at.gt(Utc::now()))
        .filter(invitations::project_id.eq(project.id))
        .select(Invitation::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let invitation: Invitation = match &open {
        Some(open) => {
            diesel::update(invitations::table.find(open.id))
                .set((
                    invitations::role.eq(role),
                    invitations::groups.eq(&groups),
                    invitations::invited_by.eq(inviter),
                    invitations::expires_at.eq(now + LIFETIME),
                ))
                .returning(Invitation::as_returning())
                .get_result(conn)
                .await?
        }
        None => {
            diesel::insert_into(invitations::table)
                .values((
                    invitations::id.eq(InvitationId::generate()),
                    invitations::project_id.eq(project.id),
                    invitations::email.eq(&email),
                    invitations::role.eq(role),
                    invitations::groups.eq(&groups),
                    invitations::invited_by.eq(inviter),
                    invitations::created_at.eq(now),
                    invitations::expires_at.eq(now + LIFETIME),
                ))
                .returning(Invitation::as_returning())
                .get_result(conn)
                .await?
        }
    };
    audit::record(
        conn,
        actor,
        Change {
            action: "invitation.create",
            project_id: Some(project.id),
            subject_kind: "invitation",
            subject_id: invitation.id.to_string(),
            before: open.map(|o| json!({"role": o.role, "groups": o.groups})),
            after: Some(json!({"email": email, "role": role, "groups": groups, "expires_at": invitation.expires_at})),
        },
    )
    .await?;
    let context = json!({
        "project": project.name,
        "role": role,
        "inviter": actor.email,
        "email": email,
        "link": format!("{public_url}/sign-in?next=%2Faccount"),
        "expires_at": invitation.expires_at.to_rfc3339(),
    });
    notify::enqueue_email(
        conn,
        &email,
        &format!("You are invited to the Custody project {}", project.name),
        "invitation",
        &context,
        invitation.id,
    )
    .await?;
    Ok(invitation)
}

/// Whether `email` has an open invitation (it may then sign in by mailed link).
pub async fn is_invited(conn: &mut Conn, email: &str) -> Result<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        invitations::table
            .filter(invitations::email.eq(email))
            .filter(invitations::accepted_at.is_null())
            .filter(invitations::revoked_at.is_null())
            .filter(invitations::expires_at.gt(Utc::now())),
    ))
    .get_result(conn)
    .await?)
}

/// A project's open invitations (its admins).
pub async fn open_for_project(
    conn: &mut Conn,
    actor: &Actor,
    project_id: ProjectId,
) -> Result<Vec<Invitation>> {
    projects::authorize(conn, actor, project_id, Role::Admin).await?;
    Ok(invitations::table
        .filter(invitations::project_id.eq(project_id))
        .filter(invitations::accepted_at.is_null())
        .filter(invitations::revoked_at.is_null())
        .filter(invitations::expires_at.gt(Utc::now()))
        .order(invitations::email)
        .select(Invitation::as_select())
        .load(conn)
        .await?)
}

/// Withdraws an open invitation (its project's admins; NOT_FOUND for anyone else).
pub async fn revoke(conn: &mut Conn, actor: &Actor, id: InvitationId) -> Result<Invitation> {
    let missing = || Error::not_found(format!("no open invitation with id {id}"));
    let found: Invitation = invitations::table
        .find(id)
        .select(Invitation::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(missing)?;
    projects::authorize(conn, actor, found.project_id, Role::Admin)
        .await
        .map_err(|_| missing())?;
    if found.accepted_at.is_some() || found.revoked_at.is_some() {
        return Err(Error::conflict("this invitation is no longer open"));
    }
    let revoked: Invitation = diesel::update(invitations::table.find(id))
        .set(invitations::revoked_at.eq(Utc::now()))
        .returning(Invitation::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "invitation.revoke",
            project_id: Some(found.project_id),
            subject_kind: "invitation",
            subject_id: id.to_string(),
            before: Some(json!({"email": found.email, "role": found.role})),
            after: None,
        },
    )
    .await?;
    Ok(revoked)
}

/// A new account takes up its address's open invitations: it joins each project with the
/// invitation's role and groups, granted by the inviter. `actor` is whoever created the account.
pub async fn accept_open(conn: &mut Conn, actor: &Actor, user: &User) -> Result<()> {
    let email = &user.email;
    let open: Vec<Invitation> = invitations::table
        .filter(invitations::email.eq(email))
        .filter(invitations::accepted_at.is_null())
        .filter(invitations::revoked_at.is_null())
        .filter(invitations::expires_at.gt(Utc::now()))
        .select(Invitation::as_select())
        .for_update()
        .load(conn)
        .await?;
    let now = Utc::now();
    for invitation in open {
        diesel::insert_into(memberships::table)
            .values((
                memberships::project_id.eq(invitation.project_id),
                memberships::user_id.eq(user.id),
                memberships::role.eq(invitation.role),
                memberships::groups.eq(&invitation.groups),
                memberships::granted_by.eq(invitation.invited_by),
                memberships::granted_at.eq(now),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        diesel::update(invitations::table.find(invitation.id))
            .set(invitations::accepted_at.eq(now))
            .execute(conn)
            .await?;
        let inviter = projects::emails_of(conn, &[invitation.invited_by]).await?;
        audit::record(
            conn,
            actor,
            Change {
                action: "invitation.accept",
                project_id: Some(invitation.project_id),
                subject_kind: "user",
                subject_id: user.id.to_string(),
                before: None,
                after: Some(json!({
                    "email": user.email,
                    "invitation": invitation.id,
                    "role": invitation.role,
                    "groups": invitation.groups,
                    "granted_by": inviter.get(&invitation.invited_by),
                })),
            },
        )
        .await?;
    }
    Ok(())
}
