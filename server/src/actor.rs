//! Who is acting: a user behind a request, or the server itself. Every domain command takes
//! one; it is its own module so that `audit` (which records actors) and `auth` (which makes them
//! from tokens, and audits token changes) do not import each other.

use crate::error::{Error, Result};
use crate::ids::UserId;

/// Who is acting, and under which request.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<UserId>,
    pub email: String,
    pub is_admin: bool,
    /// Holds the server-wide auditor role: reads everything, changes nothing (unless also admin).
    pub is_auditor: bool,
    pub request_id: Option<String>,
}

/// The refusal every change by a (non-admin) auditor gets.
pub const AUDITORS_READ_ONLY: &str = "auditors are read-only";

impl Actor {
    /// The server itself or its command line acting outside any API request.
    pub fn system(name: &str) -> Self {
        Actor {
            user_id: None,
            email: format!("system:{name}"),
            is_admin: true,
            is_auditor: false,
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
        if self.is_auditor && !self.is_admin {
            Err(Error::forbidden(AUDITORS_READ_ONLY))
        } else {
            Ok(())
        }
    }

    pub fn user_id(&self) -> Result<UserId> {
        self.user_id
            .ok_or_else(|| Error::forbidden("this operation needs a user, not a system actor"))
    }
}
