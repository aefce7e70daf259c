//! Sign-in by mailed link, the default when no identity provider is configured: a person types
//! their address, the server mails a single-use link (through the outbox, like approval mails),
//! and the link signs in only the browser that asked for it — it carries a random value in a
//! cookie whose hash the link's record keeps. A link opened anywhere else (a mail scanner, a
//! forwarded mail, another device) signs nobody in and stays unused.
//!
//! Asking answers the same whatever the address, so the form does not tell who has an account.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use super::{Proof, SignIn};
use crate::auth::{self, User};
use crate::db::schema::sign_in_links;
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::SignInLinkId;
use crate::notify;
use crate::secrets::{digest, random_secret};

/// The cookie of the browser that asked for a link.
pub const BROWSER_COOKIE: &str = "custody_sign_in";
/// How long a link works.
pub const LIFETIME: Duration = Duration::minutes(15);
/// Links one address may be sent within `LIFETIME`: a form anyone can post must not become a
/// way to flood someone's mailbox.
const MAX_RECENT_LINKS: i64 = 5;

/// Asks for a link to `email`. Returns the value for the asking browser's cookie, whether or not
/// a mail went out (unknown addresses, addresses over their rate, and malformed ones alike).
pub async fn request(
    conn: &mut Conn,
    sign_in: &SignIn,
    public_url: &str,
    email: &str,
    next: &str,
) -> Result<String> {
    if !sign_in.email_links {
        return Err(Error::forbidden("sign-in by email is not enabled here"));
    }
    let browser = random_secret();
    let Ok(email) = auth::normalize_email(email) else {
        return Ok(browser);
    };
    let known = auth::find_user_by_email(conn, &email).await?.is_some();
    if !known
        && !sign_in.may_join(&email, &Proof::EmailLink)
        && !crate::invitations::is_invited(conn, &email).await?
    {
        return Ok(browser);
    }
    let now = Utc::now();
    let recent: i64 = sign_in_links::table
        .filter(sign_in_links::email.eq(&email))
        .filter(sign_in_links::created_at.gt(now - LIFETIME))
        .count()
        .get_result(conn)
        .await?;
    if recent >= MAX_RECENT_LINKS {
        tracing::warn!(email, "sign-in link refused: too many asked for recently");
        return Ok(browser);
    }
    let id = SignInLinkId::generate();
    let secret = random_secret();
    diesel::insert_into(sign_in_links::table)
        .values((
            sign_in_links::id.eq(id),
            sign_in_links::secret_sha256.eq(digest(&secret)),
            sign_in_links::email.eq(&email),
            sign_in_links::browser_sha256.eq(digest(&browser)),
            sign_in_links::next_path.eq(next),
            sign_in_links::created_at.eq(now),
            sign_in_links::expires_at.eq(now + LIFETIME),
        ))
        .execute(conn)
        .await?;
    let context = json!({
        "link": format!("{public_url}/sign-in/email/{secret}"),
        "email": email,
        "minutes": LIFETIME.num_minutes(),
    });
    notify::enqueue_email(
        conn,
        &email,
        "Your Custody sign-in link",
        "sign_in",
        &context,
        id,
    )
    .await?;
    Ok(browser)
}

/// Redeems a link in the browser that holds `browser` (its cookie): the person it was mailed to,
/// and where they were going. A link opened in another browser is refused and stays usable.
pub async fn redeem(
    conn: &mut Conn,
    sign_in: &SignIn,
    secret: &str,
    browser: Option<&str>,
) -> Result<(User, String)> {
    /// id, email, browser hash, next, expires_at, used_at
    type Row = (
        SignInLinkId,
        String,
        Vec<u8>,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let found: Option<Row> = sign_in_links::table
        .filter(sign_in_links::secret_sha256.eq(digest(secret)))
        .select((
            sign_in_links::id,
            sign_in_links::email,
            sign_in_links::browser_sha256,
            sign_in_links::next_path,
            sign_in_links::expires_at,
            sign_in_links::used_at,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((id, email, browser_sha256, next, expires_at, used_at)) = found else {
        return Err(Error::Unauthenticated(
            "this sign-in link is not one the server sent".into(),
        ));
    };
    if used_at.is_some() {
        return Err(Error::conflict(
            "this sign-in link has already been used; ask for a new one",
        ));
    }
    if expires_at <= Utc::now() {
        return Err(Error::Unauthenticated(
            "this sign-in link has expired; ask for a new one".into(),
        ));
    }
    if browser.is_none_or(|b| digest(b) != browser_sha256) {
        return Err(Error::forbidden(
            "open this link in the browser where you asked for it (it signs in that browser only)",
        ));
    }
    diesel::update(sign_in_links::table.find(id))
        .set(sign_in_links::used_at.eq(Utc::now()))
        .execute(conn)
        .await?;
    let user = sign_in.admit(conn, &email, Proof::EmailLink).await?;
    Ok((user, next))
}
