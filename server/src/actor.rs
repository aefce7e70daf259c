//! Who is acting: a user behind a request, or the server itself. Every domain command takes
//! one; it is its own module so that `audit` (which records actors) and `auth` (which makes them
//! from tokens, and audits token changes) do not import each other.

use chrono::{DateTime, Utc};

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{ProjectId, UserId};

text_enum! {
    // How the person behind a request proved who they are. Recorded with every approval and
    // given to promotion policies (`input.approvals[*].auth_method`), so a policy can demand a
    // stronger proof for a stage. `email_link`: the single-use link mailed to an approver, alone;
    // `api_token`: a bearer token (a server-issued JWT or an access token); `session_oidc` /
    // `session_email`: a browser session signed in through the identity provider / through a
    // mailed sign-in link.
    #[derive(async_graphql::Enum)]
    #[graphql(name = "AuthMethod")]
    pub enum AuthMethod as "authentication method" {
        EmailLink = "email_link",
        ApiToken = "api_token",
        SessionOidc = "session_oidc",
        SessionEmail = "session_email",
    }
}

/// Who is acting, and under which request.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<UserId>,
    pub email: String,
    pub is_admin: bool,
    /// Holds the server-wide auditor role: reads everything, changes nothing (unless also admin).
    pub is_auditor: bool,
    /// Acting through a read-only token: every change is refused.
    pub read_only: bool,
    /// Acting through a token limited to this project: no other project is reachable, and no
    /// server-wide role applies.
    pub project_scope: Option<ProjectId>,
    /// How the caller authenticated (`None`: the server itself).
    pub auth: Option<AuthMethod>,
    /// When the person behind a browser session last proved who they are (`None` outside
    /// sessions): decisions that need a recent sign-in check it.
    pub signed_in_at: Option<DateTime<Utc>>,
    pub request_id: Option<String>,
}

/// The refusal every change by a (non-admin) auditor gets.
pub const AUDITORS_READ_ONLY: &str = "auditors are read-only";
/// The refusal every change through a read-only token gets.
pub const READ_ONLY_TOKEN: &str = "this token is read-only";

impl Actor {
    /// The server itself or its command line acting outside any API request.
    pub fn system(name: &str) -> Self {
        Actor {
            user_id: None,
            email: format!("system:{name}"),
            is_admin: true,
            is_auditor: false,
            read_only: false,
            project_scope: None,
            auth: None,
            signed_in_at: None,
            request_id: None,
        }
    }

    pub fn require_admin(&self) -> Result<()> {
        if self.is_admin {
            Ok(())
        } else {
            Err(Error::forbidden(
                "this operation needs a server administrator",
            ))
        }
    }

    /// Refuses every change to an auditor who is not also a server admin. The GraphQL schema
    /// calls it for every root mutation field (`graphql::readonly`), the other write edges
    /// (uploads, approval links) call it themselves.
    pub fn require_writer(&self) -> Result<()> {
        if self.read_only {
            Err(Error::forbidden(READ_ONLY_TOKEN))
        } else if self.is_auditor && !self.is_admin {
            Err(Error::forbidden(AUDITORS_READ_ONLY))
        } else {
            Ok(())
        }
    }

    /// Whether the caller may reach this project at all (a project-limited token reaches one).
    pub fn reaches(&self, project_id: ProjectId) -> bool {
        self.project_scope.is_none_or(|scope| scope == project_id)
    }

    pub fn user_id(&self) -> Result<UserId> {
        self.user_id
            .ok_or_else(|| Error::forbidden("this operation needs a user, not a system actor"))
    }
}
