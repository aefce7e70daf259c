//! Personal access tokens and the tokens of project service accounts: opaque bearer secrets for
//! scripts and CI, named, expiring, optionally read-only or limited to one project, listed and
//! revoked by their owner.
//!
//! A secret is `cst_` and 256 random bits (base64url); it is shown once, and only its SHA-256 is
//! stored (with that much entropy a fast hash is as strong as a slow one, and authentication
//! stays one indexed lookup). The `cst_` prefix tells it from the server's JWTs
//! (`auth::issue_token`) and lets secret scanners recognise it.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::{Actor, AuthMethod};
use crate::audit::{self, Change};
use crate::db::schema::{access_tokens, users};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{AccessTokenId, ProjectId, UserId};
use crate::projects::{self, Role};
use crate::secrets::{digest, random_secret};
use crate::service_accounts;
use crate::validate;

/// What every access-token secret starts with.
pub const SECRET_PREFIX: &str = "cst_";
/// Lifetime of a token created without one.
pub const DEFAULT_LIFETIME: &str = "90d";
/// `last_used_at` is written when it is older than this: a busy CI token would otherwise turn
/// every read into a write.
const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = access_tokens)]
pub struct AccessToken {
    pub id: AccessTokenId,
    pub name: String,
    /// The person, or the service account, the token acts as.
    pub user_id: UserId,
    /// The one project the token may reach (always set for a service account's token).
    pub project_id: Option<ProjectId>,
    pub read_only: bool,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a new token may do.
pub struct TokenRequest {
    pub name: String,
    pub lifetime: Duration,
    pub read_only: bool,
}

impl TokenRequest {
    /// `expires_in` like `30d` or `12h` (default 90 days); not read-only unless asked.
    pub fn new(name: String, expires_in: Option<&str>, read_only: Option<bool>) -> Result<Self> {
        Ok(TokenRequest {
            name,
            lifetime: crate::auth::parse_ttl(expires_in.unwrap_or(DEFAULT_LIFETIME))?,
            read_only: read_only.unwrap_or(false),
        })
    }
}

/// A token just created, with the secret that is never shown again.
pub struct Created {
    pub secret: String,
    pub token: AccessToken,
}

/// A person's own token, acting as them; limited to `project` (by name) when given, which the
/// caller must be able to read. Only a full-powered caller (not itself a limited token) creates
/// tokens, so a leaked limited token cannot mint a broader one.
pub async fn create_personal(
    conn: &mut Conn,
    actor: &Actor,
    request: TokenRequest,
    project: Option<&str>,
) -> Result<Created> {
    refuse_limited(actor)?;
    let user_id = actor.user_id()?;
    let project_id = match project {
        Some(name) => Some(
            projects::find_authorized(conn, actor, name, Role::Viewer)
                .await?
                .id,
        ),
        None => None,
    };
    insert(conn, actor, user_id, project_id, request).await
}

/// A token of a project's service account (project admins): always limited to that project.
pub async fn create_for_service_account(
    conn: &mut Conn,
    actor: &Actor,
    project: &str,
    account: &str,
    request: TokenRequest,
) -> Result<Created> {
    refuse_limited(actor)?;
    let (project, account) =
        service_accounts::find_administered(conn, actor, project, account).await?;
    insert(conn, actor, account.user_id, Some(project.id), request).await
}

/// The short-lived token a command-line login holds (`device_login`), acting as `actor`'s user
/// with their full rights, like the browser session that approved the login.
pub async fn create_for_login(
    conn: &mut Conn,
    actor: &Actor,
    name: &str,
    lifetime: Duration,
) -> Result<Created> {
    let request = TokenRequest {
        name: name.to_owned(),
        lifetime,
        read_only: false,
    };
    insert(conn, actor, actor.user_id()?, None, request).await
}

/// Revokes one token without the owner's request (a rotated login's previous token).
pub async fn retire(conn: &mut Conn, id: AccessTokenId) -> Result<()> {
    diesel::update(
        access_tokens::table
            .find(id)
            .filter(access_tokens::revoked_at.is_null()),
    )
    .set(access_tokens::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await?;
    Ok(())
}

fn refuse_limited(actor: &Actor) -> Result<()> {
    if actor.read_only || actor.project_scope.is_some() {
        return Err(Error::forbidden(
            "tokens are created with a full-powered sign-in or token, not a read-only or project-limited one",
        ));
    }
    Ok(())
}

async fn insert(
    conn: &mut Conn,
    actor: &Actor,
    user_id: UserId,
    project_id: Option<ProjectId>,
    request: TokenRequest,
) -> Result<Created> {
    let name = request.name.trim();
    if name.is_empty() {
        return Err(Error::invalid("a token needs a name"));
    }
    validate::text("token name", name, 100)?;
    let secret = format!("{SECRET_PREFIX}{}", random_secret());
    let now = Utc::now();
    let token: AccessToken = diesel::insert_into(access_tokens::table)
        .values((
            access_tokens::id.eq(AccessTokenId::generate()),
            access_tokens::name.eq(name),
            access_tokens::secret_sha256.eq(digest(&secret)),
            access_tokens::user_id.eq(user_id),
            access_tokens::project_id.eq(project_id),
            access_tokens::read_only.eq(request.read_only),
            access_tokens::created_by.eq(actor.user_id()?),
            access_tokens::created_at.eq(now),
            access_tokens::expires_at.eq(now + request.lifetime),
        ))
        .returning(AccessToken::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "access_token.create",
            project_id,
            subject_kind: "access_token",
            subject_id: token.id.to_string(),
            before: None,
            after: Some(json!({
                "name": token.name,
                "user_id": token.user_id,
                "read_only": token.read_only,
                "expires_at": token.expires_at,
            })),
        },
    )
    .await?;
    Ok(Created { secret, token })
}

/// The caller's own tokens, newest first, revoked and expired ones included (they say so).
pub async fn list_own(conn: &mut Conn, actor: &Actor) -> Result<Vec<AccessToken>> {
    list_of(conn, actor.user_id()?).await
}

/// A user's tokens, for that user or a server admin (acting with full powers); anyone else is
/// refused: the list shows where a person has scripts running.
pub async fn list_for(conn: &mut Conn, actor: &Actor, user_id: UserId) -> Result<Vec<AccessToken>> {
    if actor.user_id != Some(user_id) && !actor.is_admin {
        return Err(Error::forbidden(
            "only the user and server admins see a user's access tokens",
        ));
    }
    list_of(conn, user_id).await
}

/// The tokens acting as `user_id`, newest first.
pub async fn list_of(conn: &mut Conn, user_id: UserId) -> Result<Vec<AccessToken>> {
    Ok(access_tokens::table
        .filter(access_tokens::user_id.eq(user_id))
        .order(access_tokens::created_at.desc())
        .select(AccessToken::as_select())
        .limit(1000)
        .load(conn)
        .await?)
}

/// Revokes a token: its owner, a server admin, or (for a service account's token) an admin of
/// the account's project. Anyone else is told it does not exist. Revoking twice is a conflict.
pub async fn revoke(conn: &mut Conn, actor: &Actor, id: AccessTokenId) -> Result<AccessToken> {
    let missing = || Error::not_found(format!("no access token with id {id}"));
    let token: AccessToken = access_tokens::table
        .find(id)
        .select(AccessToken::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(missing)?;
    let owner_project: Option<Option<ProjectId>> = users::table
        .find(token.user_id)
        .select(users::service_project_id)
        .first(conn)
        .await
        .optional()?;
    let allowed = actor.user_id == Some(token.user_id)
        || actor.is_admin
        || match owner_project.flatten() {
            Some(project_id) => {
                projects::role_of(conn, actor, project_id).await? == Some(Role::Admin)
            }
            None => false,
        };
    if !allowed {
        return Err(missing());
    }
    if token.revoked_at.is_some() {
        return Err(Error::conflict("this access token is already revoked"));
    }
    let token: AccessToken = diesel::update(access_tokens::table.find(id))
        .set(access_tokens::revoked_at.eq(Utc::now()))
        .returning(AccessToken::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "access_token.revoke",
            project_id: token.project_id,
            subject_kind: "access_token",
            subject_id: token.id.to_string(),
            before: Some(json!({"revoked": false})),
            after: Some(json!({"revoked": true, "name": token.name})),
        },
    )
    .await?;
    Ok(token)
}

/// Revokes every still-valid access token acting as `user_id` (the caller authorized and audits
/// it); answers how many.
pub async fn revoke_all_of(conn: &mut Conn, user_id: UserId, now: DateTime<Utc>) -> Result<usize> {
    Ok(diesel::update(
        access_tokens::table
            .filter(access_tokens::user_id.eq(user_id))
            .filter(access_tokens::revoked_at.is_null())
            .filter(access_tokens::expires_at.gt(now)),
    )
    .set(access_tokens::revoked_at.eq(now))
    .execute(conn)
    .await?)
}

/// A service account's tokens, for admins of its project.
pub async fn list_for_service_account(
    conn: &mut Conn,
    actor: &Actor,
    account: &service_accounts::ServiceAccount,
) -> Result<Vec<AccessToken>> {
    projects::authorize(conn, actor, account.project_id, Role::Admin).await?;
    list_of(conn, account.user_id).await
}

/// The actor an access-token secret stands for: refused when unknown, revoked or expired. A
/// project-limited token holds no server-wide role (admin, auditor): it reaches its project
/// with its owner's role there and nothing else.
/// The actor an access token stands for, and when it expires.
pub async fn authenticate(conn: &mut Conn, secret: &str) -> Result<(Actor, DateTime<Utc>)> {
    /// id, expires_at, revoked_at, last_used_at, project_id, read_only, user: id, email, is_admin, is_auditor
    type Row = (
        AccessTokenId,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<ProjectId>,
        bool,
        (UserId, String, bool, bool),
    );
    let found: Option<Row> = access_tokens::table
        .inner_join(users::table.on(users::id.eq(access_tokens::user_id)))
        .filter(access_tokens::secret_sha256.eq(digest(secret)))
        .select((
            access_tokens::id,
            access_tokens::expires_at,
            access_tokens::revoked_at,
            access_tokens::last_used_at,
            access_tokens::project_id,
            access_tokens::read_only,
            (users::id, users::email, users::is_admin, users::is_auditor),
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((id, expires_at, revoked_at, last_used_at, project_id, read_only, user)) = found
    else {
        return Err(Error::Unauthenticated("unknown access token".into()));
    };
    let now = Utc::now();
    if revoked_at.is_some() {
        return Err(Error::Unauthenticated(
            "this access token has been revoked".into(),
        ));
    }
    if expires_at <= now {
        return Err(Error::Unauthenticated(format!(
            "this access token expired at {}",
            expires_at.to_rfc3339()
        )));
    }
    if last_used_at.is_none_or(|at| now - at >= LAST_USED_RESOLUTION) {
        diesel::update(access_tokens::table.find(id))
            .set(access_tokens::last_used_at.eq(now))
            .execute(conn)
            .await?;
    }
    let (user_id, email, is_admin, is_auditor) = user;
    let full = project_id.is_none();
    let actor = Actor {
        user_id: Some(user_id),
        email,
        is_admin: is_admin && full,
        is_auditor: is_auditor && full,
        read_only,
        project_scope: project_id,
        auth: Some(AuthMethod::ApiToken),
        signed_in_at: None,
        request_id: None,
    };
    Ok((actor, expires_at))
}
