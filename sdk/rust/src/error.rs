//! Errors of the SDK, with the server's `extensions.code` kept as a typed [`ErrorCode`].

use std::path::PathBuf;

/// The server's error codes (`extensions.code` in GraphQL, `error.code` on the HTTP routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    InvalidInput,
    Conflict,
    PolicyDenied,
    Internal,
    /// A code this SDK does not know.
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
            "FORBIDDEN" => ErrorCode::Forbidden,
            "NOT_FOUND" => ErrorCode::NotFound,
            "INVALID_INPUT" => ErrorCode::InvalidInput,
            "CONFLICT" => ErrorCode::Conflict,
            "POLICY_DENIED" => ErrorCode::PolicyDenied,
            "INTERNAL" => ErrorCode::Internal,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// The code for an HTTP status, for answers that carry no code of their own.
    pub fn from_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            400 | 413 | 416 | 422 => ErrorCode::InvalidInput,
            409 => ErrorCode::Conflict,
            _ => ErrorCode::Internal,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PolicyDenied => "POLICY_DENIED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Other(code) => code,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request (a GraphQL error or an HTTP error answer).
    #[error("{code}: {message}")]
    Api {
        code: ErrorCode,
        message: String,
        status: Option<u16>,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something that is not what the protocol says.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Bytes whose SHA-256 is not the one expected (a download, a resumed upload).
    #[error("integrity check failed for {what}: expected SHA-256 {expected}, got {actual}")]
    Integrity {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad arguments or configuration on the client side (nothing was sent).
    #[error("{0}")]
    Invalid(String),
    /// A query answered null for the thing asked for.
    #[error("{0}")]
    NotFound(String),
    /// The run logger could not deliver some metrics.
    #[error("the run logger lost {lost} metric(s): {message}")]
    Logger { lost: usize, message: String },
}

impl Error {
    /// The server's code for this error; client-side errors map to the nearest code
    /// (`NotFound` → `NOT_FOUND`, `Invalid` → `INVALID_INPUT`).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(code.clone()),
            Error::NotFound(_) => Some(ErrorCode::NotFound),
            Error::Invalid(_) => Some(ErrorCode::InvalidInput),
            _ => None,
        }
    }

    pub fn is(&self, code: ErrorCode) -> bool {
        self.code().as_ref() == Some(&code)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Worth retrying: the connection broke, or the server (or a proxy) failed transiently.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api {
                status: Some(s), ..
            } => matches!(s, 500 | 502 | 503 | 504 | 429 | 408),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
