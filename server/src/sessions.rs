//! Browser sessions: what a person holds after signing in (through the identity provider or a
//! mailed link), as an opaque random secret in an `HttpOnly` cookie. Only the secret's SHA-256
//! is stored, like access tokens. A session ends at sign-out, by an admin's revocation, after
//! an idle time without requests, or at its absolute age, whichever comes first.
//!
//! Every state-changing request of a session must echo its CSRF value (a form field or the
//! `X-CSRF-Token` header): the cookie alone, which the browser sends by itself, never changes
//! anything.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::{Actor, AuthMethod};
use crate::audit::{self, Change};
use crate::auth::User;
use crate::db::schema::{sessions, users};
use crate::db::{text_enum, Conn};
use crate::error::{Error, Result};
use crate::ids::{SessionId, UserId};
use crate::secrets::{digest, random_secret};

/// The cookie that carries a session's secret.
pub const COOKIE: &str = "custody_session";
/// `last_seen_at` is written when older than this: each request of a busy page is not a write.
const LAST_SEEN_RESOLUTION: Duration = Duration::seconds(60);

text_enum! {
    /// How the person behind a session signed in.
    pub enum SignInMethod as "sign-in method" {
        Oidc = "oidc",
        Email = "email",
    }
}

impl SignInMethod {
    /// What approvals and policies see of a decision made in such a session.
    pub fn auth_method(self) -> AuthMethod {
        match self {
            SignInMethod::Oidc => AuthMethod::SessionOidc,
            SignInMethod::Email => AuthMethod::SessionEmail,
        }
    }
}

/// When sessions end without a sign-out.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Without a request for this long.
    pub idle: Duration,
    /// This long after the sign-in, however active.
    pub max_age: Duration,
}

/// A session just started, with the secret for its cookie (never stored).
pub struct Started {
    pub id: SessionId,
    pub secret: String,
    pub expires_at: DateTime<Utc>,
}

/// Starts a session for a person who has just proved who they are.
pub async fn start(
    conn: &mut Conn,
    user: &User,
    method: SignInMethod,
    limits: SessionLimits,
    user_agent: Option<&str>,
) -> Result<Started> {
    let now = Utc::now();
    let id = SessionId::generate();
    let secret = random_secret();
    let expires_at = now + limits.max_age;
    // A user agent is the client's to choose: keep a readable prefix, not whatever it sent.
    let user_agent: Option<String> = user_agent.map(|ua| ua.chars().take(200).collect());
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(id),
            sessions::secret_sha256.eq(digest(&secret)),
            sessions::user_id.eq(user.id),
            sessions::method.eq(method),
            sessions::csrf_token.eq(random_secret()),
            sessions::signed_in_at.eq(now),
            sessions::last_seen_at.eq(now),
            sessions::expires_at.eq(expires_at),
            sessions::user_agent.eq(&user_agent),
        ))
        .execute(conn)
        .await?;
    let actor = Actor {
        user_id: Some(user.id),
        email: user.email.clone(),
        is_admin: user.is_admin,
        is_auditor: false,
        read_only: false,
        project_scope: None,
        auth: Some(method.auth_method()),
        signed_in_at: Some(now),
        request_id: None,
    };
    audit::record(
        conn,
        &actor,
        Change {
            action: "session.start",
            project_id: None,
            subject_kind: "session",
            subject_id: id.to_string(),
            before: None,
            after: Some(json!({"email": user.email, "method": method, "expires_at": expires_at, "user_agent": user_agent})),
        },
    )
    .await?;
    Ok(Started {
        id,
        secret,
        expires_at,
    })
}

/// A session found valid for a request.
pub struct Authenticated {
    pub id: SessionId,
    pub actor: Actor,
    /// The value state-changing requests of this session must echo.
    pub csrf_token: String,
}

/// The session a cookie's secret stands for: refused when unknown, signed out, revoked, idle
/// for too long or past its age.
pub async fn authenticate(
    conn: &mut Conn,
    limits: SessionLimits,
    secret: &str,
) -> Result<Authenticated> {
    /// id, method, csrf, signed_in_at, last_seen_at, expires_at, revoked_at, user: id, email, is_admin, is_auditor
    type Row = (
        SessionId,
        SignInMethod,
        String,
        DateTime<Utc>,
        DateTime<Utc>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        (UserId, String, bool, bool),
    );
    let found: Option<Row> = sessions::table
        .inner_join(users::table)
        .filter(sessions::secret_sha256.eq(digest(secret)))
        .select((
            sessions::id,
            sessions::method,
            sessions::csrf_token,
            sessions::signed_in_at,
            sessions::last_seen_at,
            sessions::expires_at,
            sessions::revoked_at,
            (users::id, users::email, users::is_admin, users::is_auditor),
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((id, method, csrf_token, signed_in_at, last_seen_at, expires_at, revoked_at, user)) =
        found
    else {
        return Err(Error::Unauthenticated(
            "not signed in (unknown session)".into(),
        ));
    };
    let now = Utc::now();
    if revoked_at.is_some() {
        return Err(Error::Unauthenticated("this session has ended".into()));
    }
    if expires_at <= now || last_seen_at + limits.idle <= now {
        return Err(Error::Unauthenticated(
            "this session has expired; sign in again".into(),
        ));
    }
    // Written at most once a minute, but often enough that activity always keeps a session
    // with a short idle timeout alive.
    if now - last_seen_at >= LAST_SEEN_RESOLUTION.min(limits.idle / 2) {
        diesel::update(sessions::table.find(id))
            .set(sessions::last_seen_at.eq(now))
            .execute(conn)
            .await?;
    }
    let (user_id, email, is_admin, is_auditor) = user;
    Ok(Authenticated {
        id,
        actor: Actor {
            user_id: Some(user_id),
            email,
            is_admin,
            is_auditor,
            read_only: false,
            project_scope: None,
            auth: Some(method.auth_method()),
            signed_in_at: Some(signed_in_at),
            request_id: None,
        },
        csrf_token,
    })
}

/// Signs a session out (its own holder). Ending an ended session changes nothing.
pub async fn end(conn: &mut Conn, actor: &Actor, id: SessionId) -> Result<()> {
    let ended = diesel::update(
        sessions::table
            .find(id)
            .filter(sessions::user_id.nullable().eq(actor.user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await?;
    if ended == 1 {
        audit::record(
            conn,
            actor,
            Change {
                action: "session.end",
                project_id: None,
                subject_kind: "session",
                subject_id: id.to_string(),
                before: None,
                after: Some(json!({"email": actor.email})),
            },
        )
        .await?;
    }
    Ok(())
}

/// Ends every open session of a user (server admins): offboarding, or a stolen laptop.
/// Answers how many were open.
pub async fn revoke_all_of(conn: &mut Conn, actor: &Actor, email: &str) -> Result<usize> {
    actor.require_admin()?;
    let user = crate::auth::existing_user(conn, email).await?;
    let now = Utc::now();
    let revoked = diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user.id))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(now)),
    )
    .set(sessions::revoked_at.eq(now))
    .execute(conn)
    .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "user.revoke_sessions",
            project_id: None,
            subject_kind: "user",
            subject_id: user.id.to_string(),
            before: None,
            after: Some(json!({"email": user.email, "sessions_revoked": revoked})),
        },
    )
    .await?;
    Ok(revoked)
}
