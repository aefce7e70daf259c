//! Artifacts: the files of runs and model versions, stored content addressed in an
//! `ArtifactStore`, recorded in PostgreSQL only once durable.
//!
//! An upload goes: a `pending_uploads` row (committed) → bytes staged while hashed → digest
//! recorded on the pending row → in one transaction, under a per-digest advisory lock: the object
//! placed at its content address, the rows written, the pending row deleted, the audit entry.
//! Whatever fails on the way leaves a pending row, which the sweeper claims after a grace period
//! and uses to delete the staged bytes, and the placed object if no row refers to its digest. The
//! sweeper takes the same per-digest lock, so it never deletes an object a concurrent upload is
//! about to record.
//!
//! Files: `store` (the interface) with `local` and `s3` behind it; `upload` (through the server),
//! `direct` (presigned transfers), `sweep` (what failed uploads left); here, the queries.

mod direct;
mod local;
mod s3;
pub mod store;
mod sweep;
mod upload;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::actor::Actor;
use crate::db::schema::{model_version_files, model_versions, models, run_artifacts};
use crate::db::{execute_rows, Conn};
use crate::error::{Error, Result};
use crate::ids::{ModelVersionId, ProjectId, RunId};
use crate::projects::{self, Role};
use crate::runs;
pub use direct::*;
pub use store::{ArtifactStore, ByteRange, ByteStreamBox, Staged};
pub use sweep::{spawn_sweeper, sweep};
pub use upload::upload;

/// What the server needs to handle artifacts.
#[derive(Clone)]
pub struct Artifacts {
    pub store: ArtifactStore,
    pub max_size: u64,
    pub part_size: u64,
    /// Base of the URLs the server hands out for direct uploads and downloads.
    pub public_url: String,
}

/// Whose files: a run's (writable) or a model version's (fixed at registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Run(RunId),
    ModelVersion(ModelVersionId),
}

impl Owner {
    pub fn parse(kind: &str, id: &str) -> Result<Owner> {
        let invalid_id = |_| Error::invalid(format!("`{id}` is not a valid id"));
        match kind {
            "run" => id.parse().map(Owner::Run).map_err(invalid_id),
            "model-version" => id.parse().map(Owner::ModelVersion).map_err(invalid_id),
            other => Err(Error::invalid(format!(
                "owner kind must be `run` or `model-version`, not `{other}`"
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Queryable)]
pub struct ArtifactFile {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// Path rules: relative, `/`-separated, UTF-8, at most 1024 bytes, no control characters, no
/// empty, `.` or `..` segments, no backslashes.
pub fn validate_path(path: &str) -> Result<()> {
    let problem = if path.is_empty() {
        Some("is empty")
    } else if path.len() > 1024 {
        Some("is longer than 1024 bytes")
    } else if path.starts_with('/') {
        Some("is absolute; give a path relative to the owner")
    } else if path.chars().any(|c| c.is_control()) {
        Some("contains control characters")
    } else if path.contains('\\') {
        Some("contains a backslash; separate directories with `/`")
    } else if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        Some("has an empty, `.` or `..` segment")
    } else {
        None
    };
    match problem {
        Some(why) => Err(Error::invalid(format!(
            "artifact path `{}` {why}",
            path.chars().take(100).collect::<String>().escape_debug()
        ))),
        None => Ok(()),
    }
}

/// The manifest of a model version: its files sorted by path; the digest is the SHA-256 of the
/// canonical JSON array `[{"path":…,"sha256":…,"size":…},…]` (sorted keys, no whitespace).
pub fn manifest_digest(files: &[ArtifactFile]) -> String {
    let mut sorted: Vec<&ArtifactFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let document: Vec<serde_json::Value> = sorted
        .iter()
        .map(|f| json!({"path": f.path, "sha256": f.sha256, "size": f.size}))
        .collect();
    custody_audit_format::canonical::sha256_hex(&serde_json::Value::Array(document))
}

/// The file at `path` of an owner the caller may read.
pub async fn find(
    conn: &mut Conn,
    actor: &Actor,
    owner: Owner,
    path: &str,
) -> Result<ArtifactFile> {
    validate_path(path)?;
    let found: Option<ArtifactFile> = match owner {
        Owner::Run(id) => {
            runs::get(conn, actor, id, Role::Viewer).await?;
            run_artifacts::table
                .find((id, path))
                .select((
                    run_artifacts::path,
                    run_artifacts::sha256,
                    run_artifacts::size_bytes,
                ))
                .first(conn)
                .await
                .optional()?
        }
        Owner::ModelVersion(id) => {
            let project: Option<ProjectId> = model_versions::table
                .inner_join(models::table)
                .filter(model_versions::id.eq(id))
                .select(models::project_id)
                .first(conn)
                .await
                .optional()?;
            let project = project
                .ok_or_else(|| Error::not_found(format!("no model version with id {id}")))?;
            projects::authorize(conn, actor, project, Role::Viewer)
                .await
                .map_err(projects::hiding(|| {
                    Error::not_found(format!("no model version with id {id}"))
                }))?;
            model_version_files::table
                .find((id, path))
                .select((
                    model_version_files::path,
                    model_version_files::sha256,
                    model_version_files::size_bytes,
                ))
                .first(conn)
                .await
                .optional()?
        }
    };
    found.ok_or_else(|| Error::not_found(format!("no artifact at `{path}`")))
}

/// The files of many runs, sorted by path.
pub async fn of_runs(conn: &mut Conn, run_ids: &[RunId]) -> Result<Vec<(RunId, ArtifactFile)>> {
    let rows: Vec<(RunId, String, String, i64)> = run_artifacts::table
        .filter(run_artifacts::run_id.eq_any(run_ids))
        .order((run_artifacts::run_id, run_artifacts::path))
        .select((
            run_artifacts::run_id,
            run_artifacts::path,
            run_artifacts::sha256,
            run_artifacts::size_bytes,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(run, path, sha256, size)| (run, ArtifactFile { path, sha256, size }))
        .collect())
}

/// The files of many model versions, sorted by path.
pub async fn of_model_versions(
    conn: &mut Conn,
    ids: &[ModelVersionId],
) -> Result<Vec<(ModelVersionId, ArtifactFile)>> {
    let rows: Vec<(ModelVersionId, String, String, i64)> = model_version_files::table
        .filter(model_version_files::model_version_id.eq_any(ids))
        .order((
            model_version_files::model_version_id,
            model_version_files::path,
        ))
        .select((
            model_version_files::model_version_id,
            model_version_files::path,
            model_version_files::sha256,
            model_version_files::size_bytes,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(mv, path, sha256, size)| (mv, ArtifactFile { path, sha256, size }))
        .collect())
}

/// The run's files under `artifact_path` (a file or a directory), named relative to it: what a
/// model version registered from that path contains. The future borrows nothing of the
/// connection, so it can go out with other statements (see `models::register_version_of`).
pub fn files_for_version(
    conn: &mut Conn,
    run_id: RunId,
    artifact_path: &str,
) -> BoxFuture<'static, Result<Vec<ArtifactFile>>> {
    let base = artifact_path.trim_end_matches('/').to_owned();
    if let Err(e) = validate_path(&base) {
        return Box::pin(std::future::ready(Err(e)));
    }
    let rows = run_artifacts::table
        .filter(run_artifacts::run_id.eq(run_id))
        .order(run_artifacts::path)
        .select((
            run_artifacts::path,
            run_artifacts::sha256,
            run_artifacts::size_bytes,
        ))
        .load::<(String, String, i64)>(conn);
    Box::pin(async move {
        let prefix = format!("{base}/");
        let picked: Vec<ArtifactFile> = rows
            .await?
            .into_iter()
            .filter_map(|(path, sha256, size)| {
                let path = if path == base {
                    base.rsplit('/').next().unwrap_or(&base).to_owned()
                } else {
                    path.strip_prefix(&prefix)?.to_owned()
                };
                Some(ArtifactFile { path, sha256, size })
            })
            .collect();
        if picked.is_empty() {
            return Err(Error::invalid(format!(
                "run {run_id} has no artifact at or under `{base}`; upload the files to the run first"
            )));
        }
        Ok(picked)
    })
}

/// Records a new model version's files. The future borrows nothing of the connection, so it can
/// go out with the version's other rows.
pub fn attach_to_version(
    conn: &mut Conn,
    model_version_id: ModelVersionId,
    files: &[ArtifactFile],
) -> BoxFuture<'static, Result<()>> {
    if files.is_empty() {
        return Box::pin(std::future::ready(Ok(())));
    }
    let rows: Vec<_> = files
        .iter()
        .map(|f| {
            (
                model_version_files::model_version_id.eq(model_version_id),
                model_version_files::path.eq(f.path.clone()),
                model_version_files::sha256.eq(f.sha256.clone()),
                model_version_files::size_bytes.eq(f.size),
            )
        })
        .collect();
    let count = rows.len();
    let insert = execute_rows(
        conn,
        diesel::insert_into(model_version_files::table).values(rows),
        count,
    );
    Box::pin(async move {
        insert.await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in [
            "model.pt",
            "weights/part-1.bin",
            "ünïcode/файл.txt",
            &"a".repeat(1024),
        ] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a\\b",
            "tab\there",
            "nul\0",
            &"a".repeat(1025),
            "dir/",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn manifest_digest_is_order_independent_and_content_sensitive() {
        let a = ArtifactFile {
            path: "a".into(),
            sha256: "1".repeat(64),
            size: 1,
        };
        let b = ArtifactFile {
            path: "b".into(),
            sha256: "2".repeat(64),
            size: 2,
        };
        assert_eq!(
            manifest_digest(&[a.clone(), b.clone()]),
            manifest_digest(&[b.clone(), a.clone()])
        );
        let b2 = ArtifactFile { size: 3, ..b };
        assert_ne!(
            manifest_digest(&[a.clone(), b2]),
            manifest_digest(&[
                a,
                ArtifactFile {
                    path: "b".into(),
                    sha256: "2".repeat(64),
                    size: 2
                }
            ])
        );
        assert_eq!(
            manifest_digest(&[]),
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }
}
