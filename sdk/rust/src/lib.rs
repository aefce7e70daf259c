//! # custody
//!
//! The Rust SDK of Custody, a model registry and MLOps governance server.
//!
//! - [`Client`]: every operation of the GraphQL API as a typed method (the queries live in
//!   `graphql/*.graphql` and are checked against `sdk/schema.graphql` at compile time; see
//!   [`ops`] for the raw operations).
//! - Artifacts: [`Client::upload_artifact`] streams a file (SHA-256 computed first, sent as
//!   `X-Custody-Sha256`; large files go through the direct multipart upload, resumable from a
//!   state file) and [`Client::download_artifact`] streams one back, verifying its SHA-256.
//! - [`RunLogger`]: metrics batched by a background thread (flush at 1,000 metrics, on an
//!   interval, and on `finish()` or drop), so a training loop never waits on the network.
//!
//! ```no_run
//! # async fn demo() -> custody::Result<()> {
//! use custody::{Client, NewRun, RunStatus};
//! let client = Client::new("http://127.0.0.1:8080", Some("TOKEN"))?;
//! let run = client.start_run("vision", &NewRun { name: Some("resnet".into()), ..Default::default() }).await?;
//! let logger = client.run_logger(&run.id);
//! for step in 0..100 {
//!     logger.log_metric("loss", 1.0 / (step + 1) as f64, Some(step));
//! }
//! logger.finish(Some(RunStatus::Finished))?;
//! # Ok(()) }
//! ```

mod client;
pub mod digest;
mod error;
mod logger;
pub mod ops;
mod transfer;
pub mod types;

pub use client::{
    AuditFilter, Client, MetricPoint, NewCodeCommit, NewDatasetVersion, NewModel, NewRun, NodeRef,
    PromotionFilter, MAX_METRICS_PER_CALL,
};
pub use error::{Error, ErrorCode, Result};
pub use logger::{LoggerOptions, LoggerStats, RunLogger};
pub use ops::{
    ApprovalDecision, ApprovalVia, ArtifactOwnerKind, LineageDirection, NodeKind, PromotionStatus,
    Role, RunStatus,
};
pub use transfer::{
    check_path, encode_path, Artifact, AuditExport, NoProgress, Owner, Phase, Progress,
    TransferOptions, DEFAULT_MULTIPART_THRESHOLD,
};
pub use types::*;
