//! One error type for the domain services. Each variant maps to a stable code that the edges
//! (GraphQL `extensions.code`, HTTP status) expose; internal causes are logged, never shown.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Conflict(String),
    /// Input over a size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// The server cannot take this request now (no database connection within the wait
    /// timeout, too many exports running): retry later (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable code clients branch on (API.md).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::NotFound(_) => "NOT_FOUND",
            Error::InvalidInput(_) | Error::TooLarge(_) => "INVALID_INPUT",
            Error::Conflict(_) => "CONFLICT",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::Conflict(msg.into())
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Error::Internal(cause.into())
    }
}

impl From<DieselError> for Error {
    fn from(err: DieselError) -> Self {
        match &err {
            DieselError::NotFound => Error::NotFound("not found".into()),
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                Error::Conflict("already exists".into())
            }
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                Error::Conflict("a concurrent change got there first; retry".into())
            }
            DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info) => {
                Error::InvalidInput(format!("value refused by the database: {}", info.message()))
            }
            _ => Error::Internal(err.into()),
        }
    }
}

impl From<custody_audit_format::Error> for Error {
    fn from(err: custody_audit_format::Error) -> Self {
        match err {
            custody_audit_format::Error::Invalid(message) => Error::InvalidInput(message),
            other => Error::Internal(other.into()),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for Error {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        use diesel_async::pooled_connection::deadpool::PoolError;
        match err {
            // Every connection stayed busy for the pool's wait timeout: a clear refusal instead
            // of a request that hangs.
            PoolError::Timeout(_) => {
                tracing::warn!("no database connection became free within the pool's wait timeout");
                Error::Unavailable(
                    "the server is busy (no database connection is free); retry later".into(),
                )
            }
            err => Error::Internal(anyhow::anyhow!("database pool: {err}")),
        }
    }
}
