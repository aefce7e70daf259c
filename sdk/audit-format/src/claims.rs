//! What the server's audit key signs, as JWS claims: the manifest that ends every export, the
//! checkpoints of the chain head, and the digest of a compliance report. Each carries `iss`
//! ([`ISSUER`]) and `typ`, and a verifier asks for the `typ` it expects, so a checkpoint cannot
//! pass as an export manifest.

use serde::{Deserialize, Serialize};

use crate::format::Format;

/// `iss` of every signed document.
pub const ISSUER: &str = "custody";

/// `typ` of the JWS kinds the audit key signs.
pub const TYP_EXPORT: &str = "custody.audit-export";
pub const TYP_CHECKPOINT: &str = "custody.audit-checkpoint";
pub const TYP_REPORT: &str = "custody.compliance-report";

/// The filters as the manifest records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub project: Option<String>,
    pub project_id: Option<String>,
    pub subject: Option<String>,
    pub action: Option<String>,
    /// Who acted (absent in manifests of exports without this filter, and before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// The claims of an export's signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportManifest {
    pub iss: String,
    pub typ: String,
    pub version: u32,
    pub format: Format,
    /// The requested period (`from` inclusive, `to` exclusive), RFC 3339, or null (open).
    pub from: Option<String>,
    pub to: Option<String>,
    pub filters: Filters,
    pub filtered: bool,
    /// The seq window the period selects: every entry from `window_first_seq` to
    /// `window_last_seq`. An unfiltered export holds all of them, a filtered one a subset.
    pub window_first_seq: Option<i64>,
    pub window_last_seq: Option<i64>,
    /// What the file holds.
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub count: u64,
    pub last_hash: Option<String>,
    /// The chain head when the export started (also recorded as a checkpoint).
    pub head_seq: i64,
    pub head_hash: String,
    /// SHA-256 (hex) and length of every byte before the manifest line.
    pub body_sha256: String,
    pub body_bytes: u64,
    pub exported_at: String,
    pub exported_by: String,
    pub key_id: String,
    pub iat: i64,
}

/// The signed claims of a checkpoint: the chain held entry `seq` with `hash` at `signed_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    pub iss: String,
    pub typ: String,
    pub seq: i64,
    pub hash: String,
    pub signed_at: String,
    pub iat: i64,
}

impl CheckpointClaims {
    /// The head an export manifest records, as a checkpoint (every export signs its head).
    pub fn of_manifest(m: ExportManifest) -> CheckpointClaims {
        CheckpointClaims {
            iss: m.iss,
            typ: TYP_CHECKPOINT.to_owned(),
            seq: m.head_seq,
            hash: m.head_hash,
            signed_at: m.exported_at,
            iat: m.iat,
        }
    }
}

/// Claims of a signed compliance report: the SHA-256 of the report's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportClaims {
    pub iss: String,
    pub typ: String,
    pub model_version_id: String,
    pub report_sha256: String,
    pub generated_at: String,
    pub iat: i64,
}
