//! Identities and API tokens.
//!
//! Bearer tokens are HS256 JWTs issued by this server. Validation pins the algorithm, requires
//! `exp`, `iss`, `aud` and `sub` (jsonwebtoken would otherwise accept a token without `aud`), and
//! looks the `jti` up so that revoked or foreign tokens are refused.

use std::path::Path;

use crate::actor::{Actor, AuthMethod};
use crate::audit::{self, Change};
use crate::db::schema::{api_tokens, users};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{TokenId, UserId};
use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const ISSUER: &str = "custody";
pub const API_AUDIENCE: &str = "custody-api";
pub const BOOTSTRAP_ADMIN: &str = "admin@localhost";

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = users)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    email: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// The signing key for API tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[API_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The secret from configuration, or the one kept in `<data-dir>/jwt.key` (created on first use).
    /// Replicas sharing one database must share the secret (`CUSTODY_JWT_SECRET`).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(secret) = configured {
            anyhow::ensure!(
                secret.len() >= 32,
                "CUSTODY_JWT_SECRET must be at least 32 characters"
            );
            return Ok(Self::from_secret(secret.as_bytes()));
        }
        let path = data_dir.join("jwt.key");
        if !path.exists() {
            let secret = hex::encode(rand::random::<[u8; 32]>());
            write_private_file(&path, secret.as_bytes())?;
        }
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the token signing key {}", path.display()))?;
        Ok(Self::from_secret(secret.trim().as_bytes()))
    }
}

impl TokenKeys {
    /// Signs claims for one purpose (its own audience), e.g. a presigned artifact URL. Such
    /// tokens are never accepted as API tokens: those need the API audience and a stored jti.
    pub fn sign_for<T: Serialize>(&self, claims: &T) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(Error::internal)
    }

    /// Checks a purpose token: algorithm, signature, `exp`, and that `aud` is `audience`.
    pub fn verify_for<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<T> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| Error::Unauthenticated(format!("invalid or expired link: {e}")))
    }
}

/// Writes a file readable only by its owner (mode 0600), replacing any previous content.
pub fn write_private_file(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content)?;
    Ok(())
}

/// Parses a token lifetime such as `30d`, `12h`, `15m` or `90s`.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let text = text.trim();
    // The unit is the last character, which may be any character (split on a char boundary,
    // not on a byte: `30€` must be refused, not panic).
    let split = text.char_indices().last().map_or(0, |(i, _)| i);
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| {
        Error::invalid(format!(
            "`{text}` is not a lifetime like 30d, 12h, 15m or 90s"
        ))
    })?;
    let ttl = match unit {
        "d" => Duration::try_days(n),
        "h" => Duration::try_hours(n),
        "m" => Duration::try_minutes(n),
        "s" => Duration::try_seconds(n),
        _ => None,
    };
    match ttl {
        Some(ttl) if n > 0 && ttl <= Duration::days(3650) => Ok(ttl),
        _ => Err(Error::invalid(format!(
            "`{text}` is not a lifetime between 1s and 3650d (like 30d, 12h, 15m or 90s)"
        ))),
    }
}

pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(email)
    } else {
        Err(Error::invalid(format!("`{email}` is not an email address")))
    }
}

pub async fn users_by_ids(conn: &mut Conn, ids: &[UserId]) -> Result<Vec<User>> {
    Ok(users::table
        .filter(users::id.eq_any(ids))
        .select(User::as_select())
        .load(conn)
        .await?)
}

pub async fn find_user_by_email(conn: &mut Conn, email: &str) -> Result<Option<User>> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The user with this (normalised) email, or NOT_FOUND.
pub async fn existing_user(conn: &mut Conn, email: &str) -> Result<User> {
    let email = normalize_email(email)?;
    find_user_by_email(conn, &email)
        .await?
        .ok_or_else(|| Error::not_found(format!("no user with email {email}")))
}

/// The groups the identity provider last gave a user (none for others).
pub async fn idp_groups(conn: &mut Conn, user_id: Option<UserId>) -> Result<Vec<String>> {
    let Some(user_id) = user_id else {
        return Ok(Vec::new());
    };
    Ok(users::table
        .find(user_id)
        .select(users::idp_groups)
        .first(conn)
        .await?)
}

/// Returns the user with this email, creating it (and its audit entry) if missing; a new user
/// takes up the open invitations of its address.
pub async fn ensure_user(conn: &mut Conn, actor: &Actor, email: &str) -> Result<User> {
    let email = normalize_email(email)?;
    if let Some(user) = find_user_by_email(conn, &email).await? {
        return Ok(user);
    }
    let user: User = diesel::insert_into(users::table)
        .values((users::id.eq(UserId::generate()), users::email.eq(&email)))
        .returning(User::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "user.create",
            project_id: None,
            subject_kind: "user",
            subject_id: user.id.to_string(),
            before: None,
            after: Some(json!({"email": user.email, "is_admin": user.is_admin})),
        },
    )
    .await?;
    crate::invitations::accept_open(conn, actor, &user).await?;
    Ok(user)
}

/// Issues a bearer token for `email` (creating the user if needed). `make_admin` grants the
/// server-wide admin role. Call inside a transaction.
pub async fn issue_token(
    conn: &mut Conn,
    keys: &TokenKeys,
    actor: &Actor,
    email: &str,
    make_admin: bool,
    ttl: Duration,
) -> Result<String> {
    actor.require_admin()?;
    let mut user = ensure_user(conn, actor, email).await?;
    if make_admin && !user.is_admin {
        user = diesel::update(users::table.find(user.id))
            .set(users::is_admin.eq(true))
            .returning(User::as_returning())
            .get_result(conn)
            .await?;
        audit::record(
            conn,
            actor,
            Change {
                action: "user.grant_admin",
                project_id: None,
                subject_kind: "user",
                subject_id: user.id.to_string(),
                before: Some(json!({"is_admin": false})),
                after: Some(json!({"is_admin": true})),
            },
        )
        .await?;
    }
    let now = Utc::now();
    let expires = now + ttl;
    let jti = TokenId::generate();
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::jti.eq(jti),
            api_tokens::user_id.eq(user.id),
            api_tokens::issued_at.eq(now),
            api_tokens::expires_at.eq(expires),
        ))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "token.issue",
            project_id: None,
            subject_kind: "token",
            subject_id: jti.to_string(),
            before: None,
            after: Some(json!({"user": user.email, "expires_at": expires.to_rfc3339()})),
        },
    )
    .await?;
    let claims = Claims {
        sub: user.id.to_string(),
        email: user.email,
        iss: ISSUER.into(),
        aud: API_AUDIENCE.into(),
        iat: now.timestamp(),
        exp: expires.timestamp(),
        jti: jti.to_string(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
        .map_err(Error::internal)
}

/// Checks a bearer token (an access token `cst_…`, or a JWT this server issued) and returns the
/// actor it stands for, and when the token expires.
pub async fn authenticate(
    conn: &mut Conn,
    keys: &TokenKeys,
    token: &str,
) -> Result<(Actor, DateTime<Utc>)> {
    if token.starts_with(crate::access_tokens::SECRET_PREFIX) {
        return crate::access_tokens::authenticate(conn, token).await;
    }
    let claims = jsonwebtoken::decode::<Claims>(token, &keys.decoding, &keys.validation)
        .map_err(|e| Error::Unauthenticated(format!("invalid bearer token: {e}")))?
        .claims;
    let jti: TokenId = claims
        .jti
        .parse()
        .map_err(|_| Error::Unauthenticated("invalid bearer token: bad jti".into()))?;
    /// id, email, is_admin, is_auditor, revoked_at
    type TokenRow = (UserId, String, bool, bool, Option<DateTime<Utc>>);
    let found: Option<TokenRow> = api_tokens::table
        .inner_join(users::table)
        .filter(api_tokens::jti.eq(jti))
        .select((
            users::id,
            users::email,
            users::is_admin,
            users::is_auditor,
            api_tokens::revoked_at,
        ))
        .first(conn)
        .await
        .optional()?;
    match found {
        Some((user_id, email, is_admin, is_auditor, None)) if user_id.to_string() == claims.sub => {
            let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or_default();
            let actor = Actor {
                user_id: Some(user_id),
                email,
                is_admin,
                is_auditor,
                read_only: false,
                project_scope: None,
                auth: Some(AuthMethod::ApiToken),
                signed_in_at: None,
                request_id: None,
            };
            Ok((actor, expires_at))
        }
        Some((_, _, _, _, Some(_))) => {
            Err(Error::Unauthenticated("this token has been revoked".into()))
        }
        _ => Err(Error::Unauthenticated("unknown bearer token".into())),
    }
}

/// Revokes a token by its `jti` (admins only). Revoking twice is a conflict.
pub async fn revoke_token(conn: &mut Conn, actor: &Actor, jti: TokenId) -> Result<()> {
    actor.require_admin()?;
    let revoked_at: Option<Option<DateTime<Utc>>> = api_tokens::table
        .find(jti)
        .select(api_tokens::revoked_at)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    match revoked_at {
        None => return Err(Error::not_found(format!("no token with id {jti}"))),
        Some(Some(_)) => return Err(Error::conflict("this token is already revoked")),
        Some(None) => {}
    }
    diesel::update(api_tokens::table.find(jti))
        .set(api_tokens::revoked_at.eq(Utc::now()))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "token.revoke",
            project_id: None,
            subject_kind: "token",
            subject_id: jti.to_string(),
            before: Some(json!({"revoked": false})),
            after: Some(json!({"revoked": true})),
        },
    )
    .await?;
    Ok(())
}

/// Revokes every token of a user at once — server-issued JWTs and access tokens alike (server
/// admins; offboarding, or a leaked laptop). Answers how many were still valid.
pub async fn revoke_all_tokens_of(conn: &mut Conn, actor: &Actor, email: &str) -> Result<usize> {
    actor.require_admin()?;
    let user = existing_user(conn, email).await?;
    let now = Utc::now();
    let jwts = diesel::update(
        api_tokens::table
            .filter(api_tokens::user_id.eq(user.id))
            .filter(api_tokens::revoked_at.is_null())
            .filter(api_tokens::expires_at.gt(now)),
    )
    .set(api_tokens::revoked_at.eq(now))
    .execute(conn)
    .await?;
    let access = crate::access_tokens::revoke_all_of(conn, user.id, now).await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "user.revoke_tokens",
            project_id: None,
            subject_kind: "user",
            subject_id: user.id.to_string(),
            before: None,
            after: Some(
                json!({"email": user.email, "jwts_revoked": jwts, "access_tokens_revoked": access}),
            ),
        },
    )
    .await?;
    Ok(jwts + access)
}

/// On a fresh installation: creates `admin@localhost` with the admin role and returns a token for
/// it. Returns `None` when the user already exists (its token was written at first start).
pub async fn bootstrap_admin(conn: &mut Conn, keys: &TokenKeys) -> Result<Option<String>> {
    if find_user_by_email(conn, BOOTSTRAP_ADMIN).await?.is_some() {
        return Ok(None);
    }
    let token = issue_token(
        conn,
        keys,
        &Actor::system("bootstrap"),
        BOOTSTRAP_ADMIN,
        true,
        Duration::days(3650),
    )
    .await?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse() {
        assert_eq!(parse_ttl("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_ttl("1s").unwrap(), Duration::seconds(1));
        assert!(parse_ttl("0d").is_err());
        assert!(parse_ttl("30").is_err());
        assert!(parse_ttl("-3h").is_err());
        assert!(parse_ttl("9999d").is_err());
        assert!(parse_ttl("").is_err());
        for odd in [
            "30€",
            "€",
            "1é",
            "7d\u{301}",
            "👩‍👩‍👧",
            "\u{10FFFF}",
            "1\u{FFFF}",
        ] {
            assert!(parse_ttl(odd).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalize_email(" Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
        assert!(normalize_email("nobody").is_err());
        assert!(normalize_email("a b@c").is_err());
        assert!(normalize_email("@c").is_err());
    }
}
