//! Command-line login by the OAuth 2.0 device authorization grant (RFC 8628), with Custody as
//! the authorization server: `custody login` asks for a device code, shows the person a short
//! user code and a URL, and polls; the person approves the code in a signed-in browser session
//! (so the command line gets in however the browser signed in: the identity provider or a
//! mailed link); the poll then receives a short-lived access token and a refresh token.
//!
//! Refresh tokens rotate: each works once and comes back with a successor (and a new access
//! token, the previous one revoked). A used refresh token presented again means a copy is in
//! other hands: its whole family is revoked, and so is the access token it last minted.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use serde_json::json;

use crate::access_tokens;
use crate::actor::{Actor, AuthMethod};
use crate::audit::{self, Change};
use crate::db::schema::{device_logins, refresh_tokens, users};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{AccessTokenId, DeviceLoginId, RefreshTokenId, UserId};
use crate::secrets::{digest, random_secret};

/// How long a device code waits for the person.
pub const CODE_LIFETIME: Duration = Duration::minutes(10);
/// The polling interval the command line is told to keep (RFC 8628 §3.5: `slow_down` below it).
pub const POLL_INTERVAL: Duration = Duration::seconds(5);
/// Lifetime of the access token a login holds.
pub const ACCESS_LIFETIME: Duration = Duration::hours(1);
/// Lifetime of a refresh token (each rotation starts it again).
pub const REFRESH_LIFETIME: Duration = Duration::days(30);
/// Device codes waiting at once: anyone may ask for one, so the table must not grow unbounded.
const MAX_PENDING: i64 = 1000;
/// The prefix of refresh-token secrets (told apart from access tokens `cst_`).
const REFRESH_PREFIX: &str = "csr_";
/// Letters of user codes: no vowels (no words) and none that read alike.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn user_code() -> String {
    (0..8)
        .map(|_| {
            let i = rand::random::<usize>() % USER_CODE_ALPHABET.len();
            USER_CODE_ALPHABET[i] as char
        })
        .collect()
}

/// `ABCD-EFGH`, `abcdefgh`, ` abcd efgh ` all name the same code.
pub fn normalize_user_code(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `ABCDEFGH` as people read it.
pub fn display_user_code(code: &str) -> String {
    match code.split_at_checked(4) {
        Some((a, b)) => format!("{a}-{b}"),
        None => code.to_owned(),
    }
}

/// The answer to a device authorization request (RFC 8628 §3.2).
#[derive(Debug, Serialize)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// Asks for a device code (anyone: the code is worth nothing until a signed-in person approves).
pub async fn start(
    conn: &mut Conn,
    public_url: &str,
    client_name: Option<&str>,
) -> Result<DeviceStart> {
    let now = Utc::now();
    let pending: i64 = device_logins::table
        .filter(device_logins::expires_at.gt(now))
        .filter(device_logins::decided_at.is_null())
        .count()
        .get_result(conn)
        .await?;
    if pending >= MAX_PENDING {
        return Err(Error::Unavailable(
            "too many logins are waiting for approval; try again in a few minutes".into(),
        ));
    }
    let client_name: String = client_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("custody command line")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let device_code = random_secret();
    let code = user_code();
    diesel::insert_into(device_logins::table)
        .values((
            device_logins::id.eq(DeviceLoginId::generate()),
            device_logins::device_code_sha256.eq(digest(&device_code)),
            device_logins::user_code.eq(&code),
            device_logins::client_name.eq(&client_name),
            device_logins::created_at.eq(now),
            device_logins::expires_at.eq(now + CODE_LIFETIME),
        ))
        .execute(conn)
        .await?;
    let shown = display_user_code(&code);
    Ok(DeviceStart {
        device_code,
        verification_uri: format!("{public_url}/device"),
        verification_uri_complete: format!("{public_url}/device?code={shown}"),
        user_code: shown,
        expires_in: CODE_LIFETIME.num_seconds(),
        interval: POLL_INTERVAL.num_seconds(),
    })
}

/// A login waiting for the person, as its approval page shows it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = device_logins)]
pub struct DeviceLogin {
    pub id: DeviceLoginId,
    pub user_code: String,
    pub client_name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// The waiting login a user code names (NOT_FOUND once decided or expired).
pub async fn waiting(conn: &mut Conn, user_code: &str) -> Result<DeviceLogin> {
    let code = normalize_user_code(user_code);
    device_logins::table
        .filter(device_logins::user_code.eq(&code))
        .filter(device_logins::decided_at.is_null())
        .filter(device_logins::expires_at.gt(Utc::now()))
        .select(DeviceLogin::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            Error::not_found(format!(
                "no login waits for the code {}: it may have expired (start `custody login` again)",
                display_user_code(&code)
            ))
        })
}

/// The person in a browser session approves (or denies) the login a user code names.
pub async fn decide(conn: &mut Conn, actor: &Actor, user_code: &str, approve: bool) -> Result<()> {
    if !matches!(
        actor.auth,
        Some(AuthMethod::SessionOidc | AuthMethod::SessionEmail)
    ) {
        return Err(Error::forbidden(
            "a command-line login is approved from a signed-in browser",
        ));
    }
    let login = waiting(conn, user_code).await?;
    diesel::update(device_logins::table.find(login.id))
        .set((
            device_logins::decided_by.eq(actor.user_id()?),
            device_logins::decided_at.eq(Utc::now()),
            device_logins::approved.eq(approve),
        ))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: if approve {
                "device_login.approve"
            } else {
                "device_login.deny"
            },
            project_id: None,
            subject_kind: "device_login",
            subject_id: login.id.to_string(),
            before: None,
            after: Some(json!({"client": login.client_name, "user_code": login.user_code})),
        },
    )
    .await
}

/// Tokens for the command line (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct Grant {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
}

/// Why a token request got no tokens (RFC 6749 §5.2, RFC 8628 §3.5).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    AuthorizationPending,
    SlowDown,
    AccessDenied,
    ExpiredToken,
    InvalidGrant(String),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::AuthorizationPending => "authorization_pending",
            Refusal::SlowDown => "slow_down",
            Refusal::AccessDenied => "access_denied",
            Refusal::ExpiredToken => "expired_token",
            Refusal::InvalidGrant(_) => "invalid_grant",
        }
    }

    pub fn description(&self) -> String {
        match self {
            Refusal::AuthorizationPending => "waiting for the person to approve the code".into(),
            Refusal::SlowDown => "polling too fast".into(),
            Refusal::AccessDenied => "the login was denied in the browser".into(),
            Refusal::ExpiredToken => "the code expired; start the login again".into(),
            Refusal::InvalidGrant(why) => why.clone(),
        }
    }
}

/// A token request either grants, is refused in the protocol's terms, or fails.
pub type Answer = Result<std::result::Result<Grant, Refusal>>;

/// The command line polls with its device code.
pub async fn poll(conn: &mut Conn, device_code: &str) -> Answer {
    /// id, client, expires, last poll, decided by, approved, redeemed
    type Row = (
        DeviceLoginId,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<UserId>,
        Option<bool>,
        Option<DateTime<Utc>>,
    );
    let found: Option<Row> = device_logins::table
        .filter(device_logins::device_code_sha256.eq(digest(device_code)))
        .select((
            device_logins::id,
            device_logins::client_name,
            device_logins::expires_at,
            device_logins::last_polled_at,
            device_logins::decided_by,
            device_logins::approved,
            device_logins::redeemed_at,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((id, client, expires_at, last_polled, decided_by, approved, redeemed)) = found else {
        return Ok(Err(Refusal::InvalidGrant("unknown device code".into())));
    };
    let now = Utc::now();
    if redeemed.is_some() {
        return Ok(Err(Refusal::InvalidGrant(
            "this device code has already been exchanged".into(),
        )));
    }
    if expires_at <= now {
        return Ok(Err(Refusal::ExpiredToken));
    }
    match (approved, decided_by) {
        (Some(false), _) => Ok(Err(Refusal::AccessDenied)),
        (Some(true), Some(user_id)) => {
            diesel::update(device_logins::table.find(id))
                .set(device_logins::redeemed_at.eq(now))
                .execute(conn)
                .await?;
            let actor = user_actor(conn, user_id).await?;
            let grant = mint(conn, &actor, &client, RefreshTokenId::generate()).await?;
            Ok(Ok(grant))
        }
        _ => {
            diesel::update(device_logins::table.find(id))
                .set(device_logins::last_polled_at.eq(now))
                .execute(conn)
                .await?;
            // Polling faster than told slows the client down (§3.5); the poll still counts.
            let too_soon = last_polled
                .is_some_and(|at| now - at < POLL_INTERVAL - Duration::milliseconds(500));
            Ok(Err(if too_soon {
                Refusal::SlowDown
            } else {
                Refusal::AuthorizationPending
            }))
        }
    }
}

/// Renews a login's tokens with its refresh token (which is used up).
pub async fn refresh(conn: &mut Conn, refresh_token: &str) -> Answer {
    /// id, family, user, access token, client, expires, used, revoked
    type Row = (
        RefreshTokenId,
        RefreshTokenId,
        UserId,
        AccessTokenId,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let found: Option<Row> = refresh_tokens::table
        .filter(refresh_tokens::secret_sha256.eq(digest(refresh_token)))
        .select((
            refresh_tokens::id,
            refresh_tokens::family_id,
            refresh_tokens::user_id,
            refresh_tokens::access_token_id,
            refresh_tokens::client_name,
            refresh_tokens::expires_at,
            refresh_tokens::used_at,
            refresh_tokens::revoked_at,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((id, family, user_id, access_token, client, expires_at, used_at, revoked_at)) = found
    else {
        return Ok(Err(Refusal::InvalidGrant("unknown refresh token".into())));
    };
    let now = Utc::now();
    if revoked_at.is_some() {
        return Ok(Err(Refusal::InvalidGrant(
            "this login has been revoked; run `custody login` again".into(),
        )));
    }
    if used_at.is_some() {
        // A second use: one of the two holders is not the person. End the whole login.
        revoke_family(conn, family, user_id).await?;
        return Ok(Err(Refusal::InvalidGrant(
            "this refresh token was already used; the login is revoked, run `custody login` again"
                .into(),
        )));
    }
    if expires_at <= now {
        return Ok(Err(Refusal::InvalidGrant(
            "the login expired; run `custody login` again".into(),
        )));
    }
    diesel::update(refresh_tokens::table.find(id))
        .set(refresh_tokens::used_at.eq(now))
        .execute(conn)
        .await?;
    access_tokens::retire(conn, access_token).await?;
    let actor = user_actor(conn, user_id).await?;
    Ok(Ok(mint(conn, &actor, &client, family).await?))
}

/// A login acts as its person, with their rights (the approving session's).
async fn user_actor(conn: &mut Conn, user_id: UserId) -> Result<Actor> {
    let (email, is_admin, is_auditor): (String, bool, bool) = users::table
        .find(user_id)
        .select((users::email, users::is_admin, users::is_auditor))
        .first(conn)
        .await?;
    Ok(Actor {
        user_id: Some(user_id),
        email,
        is_admin,
        is_auditor,
        read_only: false,
        project_scope: None,
        auth: Some(AuthMethod::ApiToken),
        signed_in_at: None,
        request_id: None,
    })
}

/// A new access token and a refresh token of `family` for it.
async fn mint(
    conn: &mut Conn,
    actor: &Actor,
    client: &str,
    family: RefreshTokenId,
) -> Result<Grant> {
    let name = format!("custody login: {client}");
    let access = access_tokens::create_for_login(conn, actor, &name, ACCESS_LIFETIME).await?;
    let refresh = format!("{REFRESH_PREFIX}{}", random_secret());
    let now = Utc::now();
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(RefreshTokenId::generate()),
            refresh_tokens::family_id.eq(family),
            refresh_tokens::secret_sha256.eq(digest(&refresh)),
            refresh_tokens::user_id.eq(actor.user_id()?),
            refresh_tokens::access_token_id.eq(access.token.id),
            refresh_tokens::client_name.eq(client),
            refresh_tokens::created_at.eq(now),
            refresh_tokens::expires_at.eq(now + REFRESH_LIFETIME),
        ))
        .execute(conn)
        .await?;
    Ok(Grant {
        access_token: access.secret,
        token_type: "Bearer",
        expires_in: ACCESS_LIFETIME.num_seconds(),
        refresh_token: refresh,
    })
}

async fn revoke_family(conn: &mut Conn, family: RefreshTokenId, user_id: UserId) -> Result<()> {
    let now = Utc::now();
    let access: Vec<AccessTokenId> = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .returning(refresh_tokens::access_token_id)
    .get_results(conn)
    .await?;
    for id in &access {
        access_tokens::retire(conn, *id).await?;
    }
    audit::record(
        conn,
        &Actor::system("device-login"),
        Change {
            action: "device_login.revoke_reused",
            project_id: None,
            subject_kind: "user",
            subject_id: user_id.to_string(),
            before: None,
            after: Some(json!({"family": family, "refresh_tokens_revoked": access.len()})),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_read_well_and_normalise() {
        let code = user_code();
        assert_eq!(code.len(), 8);
        assert!(code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)));
        assert_eq!(normalize_user_code(" bcdf-ghjk "), "BCDFGHJK");
        assert_eq!(display_user_code("BCDFGHJK"), "BCDF-GHJK");
    }
}
