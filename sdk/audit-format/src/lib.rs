//! Custody's audit log on the wire, and its offline verification.
//!
//! Everything an auditor needs to check what the server handed out, without a database or the
//! server: the server writes with this crate, and `custody-server audit verify` and
//! `custody audit verify` read with it, so both sides share one definition of every byte.
//!
//! - [`canonical`]: canonical JSON (object keys sorted at every level, no whitespace), the one
//!   writer behind every hashed or signed document.
//! - [`entry`]: the audit entry document and the chain,
//!   `hash = sha256(prev_hash || canonical_json(entry))`, [`GENESIS_HASH`] before the first entry.
//! - [`format`]: the two export formats (JSON Lines and CSV), written and read byte for byte.
//! - [`claims`]: what the audit key signs: export manifests, checkpoints, compliance reports.
//! - [`keys`]: the Ed25519 public key (PEM, JWK, key id, JWS verification) and the signing key.
//! - [`verify`]: the whole offline verification of exports and compliance reports.

pub mod canonical;
pub mod claims;
pub mod entry;
pub mod format;
pub mod keys;
pub mod verify;

pub use claims::{CheckpointClaims, ExportManifest, Filters, ReportClaims};
pub use entry::{chain_hash, Entry, GENESIS_HASH};
pub use format::Format;
pub use keys::{PublicKey, SigningKey};
pub use verify::{verify_file, Kind, Options, Problem, Verdict};

/// What went wrong reading or signing; verification *results* are a [`Verdict`], not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read; `what` names it.
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    /// Input that is not what it must be: a key that is not Ed25519, a file that is neither an
    /// export nor a report, an unknown format name.
    #[error("{0}")]
    Invalid(String),
    /// Signing failed (the key does not fit the algorithm).
    #[error("signing failed: {0}")]
    Signing(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, error: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            error,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
