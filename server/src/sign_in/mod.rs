//! Signing in from a browser: through an OpenID Connect provider when one is configured
//! (`oidc`), by a mailed single-use link otherwise (`email_link`), ending in a server-side
//! session (`sessions`). This module holds what both ways share: who may come in, and the
//! just-in-time creation of people the provider (or an allowed domain) vouches for.

pub mod email_link;
pub mod oidc;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::auth::{self, User};
use crate::db::schema::users;
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::promotions::ApprovalRules;
use crate::sessions::SessionLimits;

/// The server's sign-in settings.
pub struct SignIn {
    /// Single sign-on, when configured.
    pub oidc: Option<oidc::Provider>,
    /// Whether mailed sign-in links are offered.
    pub email_links: bool,
    /// Domains whose people become users by signing in (lowercase, without `@`).
    pub allowed_domains: Vec<String>,
    pub sessions: SessionLimits,
    /// What deciding on a promotion demands by default.
    pub approvals: ApprovalRules,
}

/// How a person has just proved their address.
pub enum Proof {
    /// The identity provider vouched for it, with the groups it lists.
    Oidc { groups: Vec<String> },
    /// They opened a link mailed to it, in the browser that asked for it.
    EmailLink,
}

impl SignIn {
    /// Whether a person unknown to Custody becomes a user by this sign-in: an allowed domain,
    /// or (without a domain list) anyone the identity provider vouches for. A mailed link alone
    /// never lets a stranger in without a domain list: anyone can type any address.
    pub fn may_join(&self, email: &str, proof: &Proof) -> bool {
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        if self.allowed_domains.is_empty() {
            matches!(proof, Proof::Oidc { .. })
        } else {
            self.allowed_domains.iter().any(|allowed| allowed == domain)
        }
    }

    /// The user behind a proven address: found, or created when `may_join` lets them in or an
    /// open invitation awaits them (the new user then joins the inviting projects). A
    /// provider's groups replace the ones it gave last time (audited: they decide who may
    /// approve).
    pub async fn admit(&self, conn: &mut Conn, email: &str, proof: Proof) -> Result<User> {
        let email = auth::normalize_email(email)?;
        let system = Actor::system("sign-in");
        let user = match auth::find_user_by_email(conn, &email).await? {
            Some(user) => user,
            None if self.may_join(&email, &proof)
                || crate::invitations::is_invited(conn, &email).await? =>
            {
                auth::ensure_user(conn, &system, &email).await?
            }
            None => {
                return Err(Error::forbidden(format!(
                    "{email} has no account here; ask a project administrator to invite you"
                )))
            }
        };
        if let Proof::Oidc { mut groups } = proof {
            groups.sort();
            groups.dedup();
            let before: Vec<String> = users::table
                .find(user.id)
                .select(users::idp_groups)
                .for_update()
                .first(conn)
                .await?;
            if before != groups {
                diesel::update(users::table.find(user.id))
                    .set(users::idp_groups.eq(&groups))
                    .execute(conn)
                    .await?;
                audit::record(
                    conn,
                    &system,
                    Change {
                        action: "user.idp_groups",
                        project_id: None,
                        subject_kind: "user",
                        subject_id: user.id.to_string(),
                        before: Some(json!({"email": user.email, "groups": before})),
                        after: Some(json!({"email": user.email, "groups": groups})),
                    },
                )
                .await?;
            }
        }
        Ok(user)
    }
}

/// Where to go after signing in: a path of this server only (never `//host` or a full URL, which
/// would make the sign-in page an open redirect); anything else goes home.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 2000
                && !path.chars().any(|c| c.is_control()) =>
        {
            path.to_owned()
        }
        _ => "/account".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next(Some("/approve/x?y=1")), "/approve/x?y=1");
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/account", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/account");
    }
}
