//! Archives: a verified JSON Lines export of every entry older than a date, written to the
//! artifact store (content addressed, like any artifact) and recorded in `audit_archives` with
//! its own audit entry. Nothing is deleted: the server never prunes the audit table, an archive
//! is a copy that can leave the database's backups and retention with the artifacts.

use std::path::Path;

use chrono::{DateTime, Utc};
use custody_audit_format::{format, verify, Format};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::checkpoints::Reason;
use super::export::{parse_time, ExportRequest, Exporter};
use super::{rfc3339, AuditKeys, Change};
use crate::actor::Actor;
use crate::artifacts::store::object_key;
use crate::artifacts::ArtifactStore;
use crate::db::schema::{artifact_objects, audit_archives};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{AuditArchiveId, UploadId};

#[derive(Debug, Serialize)]
pub struct Archived {
    pub id: AuditArchiveId,
    pub before: String,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub count: u64,
    pub sha256: String,
    pub size_bytes: u64,
    pub object: String,
    pub store: String,
}

/// Exports entries before `before` to a temporary file in `work_dir`, verifies that file with the
/// public key (as an auditor would), then stores and records it. `reader` streams the entries;
/// `conn` records the archive.
pub async fn archive(
    conn: &mut Conn,
    reader: Conn,
    keys: &AuditKeys,
    store: &ArtifactStore,
    actor: &Actor,
    before: DateTime<Utc>,
    work_dir: &Path,
) -> anyhow::Result<Archived> {
    let request = ExportRequest {
        to: Some(before),
        ..Default::default()
    };
    let mut exporter = Exporter::begin(
        conn,
        keys,
        actor,
        Format::Jsonl,
        request,
        None,
        Reason::Archive,
    )
    .await?;
    exporter.start(Box::new(reader));
    let id = AuditArchiveId::generate();
    let tmp = work_dir.join(format!("audit-archive-{id}.jsonl.partial"));
    let run = ArchiveRun {
        keys,
        store,
        actor,
        before,
    };
    let result = write_and_store(conn, run, &mut exporter, id, &tmp).await;
    tokio::fs::remove_file(&tmp).await.ok();
    result
}

/// One archive run: the key that signs and verifies, the store that keeps the file, who asks,
/// and the time before which entries are archived.
#[derive(Clone, Copy)]
struct ArchiveRun<'a> {
    keys: &'a AuditKeys,
    store: &'a ArtifactStore,
    actor: &'a Actor,
    before: DateTime<Utc>,
}

/// Writes the export to `tmp`, verifies it, then stores the file and records the archive `id`.
async fn write_and_store(
    conn: &mut Conn,
    run: ArchiveRun<'_>,
    exporter: &mut Exporter,
    id: AuditArchiveId,
    tmp: &Path,
) -> anyhow::Result<Archived> {
    let ArchiveRun {
        keys,
        store,
        actor,
        before,
    } = run;
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(tmp).await?);
    let mut manifest_line = String::new();
    while let Some(chunk) = exporter.next_chunk().await? {
        file.write_all(&chunk).await?;
        manifest_line = String::from_utf8_lossy(&chunk).into_owned();
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;

    let public = keys.public.clone();
    let path = tmp.to_path_buf();
    let verdict = tokio::task::spawn_blocking(move || verify::check(&path, public, None)).await??;
    anyhow::ensure!(
        verdict.ok(),
        "the archive failed its own verification, nothing was stored: {}",
        verdict.render(&tmp.display().to_string())
    );
    let manifest = verdict
        .manifest
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the archive has no manifest"))?;
    let jws = format::parse_manifest_line(Format::Jsonl, manifest_line.trim())
        .ok_or_else(|| anyhow::anyhow!("the archive's last line is not its manifest"))?;

    let upload_id = UploadId::generate();
    let body =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::open(tmp).await?, 256 * 1024);
    let staged = store.stage(upload_id, body, u64::MAX, None).await?;
    let archived = Archived {
        id,
        before: rfc3339(before),
        first_seq: manifest.first_seq,
        last_seq: manifest.last_seq,
        count: manifest.count,
        sha256: staged.sha256.clone(),
        size_bytes: staged.size,
        object: object_key(&staged.sha256),
        store: store.describe(),
    };
    let recorded = super::transaction(conn, |c| {
        let (staged, archived, actor, jws) = (&staged, &archived, actor, &jws);
        async move {
            // Same lock as artifact uploads and the sweeper take for a digest.
            diesel::sql_query(
                "SELECT pg_advisory_xact_lock(hashtextextended('custody.object.' || $1, 0))",
            )
            .bind::<Text, _>(&staged.sha256)
            .execute(c)
            .await?;
            store.place(staged).await?;
            diesel::insert_into(artifact_objects::table)
                .values((
                    artifact_objects::sha256.eq(&staged.sha256),
                    artifact_objects::size_bytes.eq(staged.size as i64),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            diesel::insert_into(audit_archives::table)
                .values((
                    audit_archives::id.eq(archived.id),
                    audit_archives::before.eq(before),
                    audit_archives::first_seq.eq(archived.first_seq),
                    audit_archives::last_seq.eq(archived.last_seq),
                    audit_archives::entry_count.eq(archived.count as i64),
                    audit_archives::sha256.eq(&archived.sha256),
                    audit_archives::size_bytes.eq(archived.size_bytes as i64),
                    audit_archives::manifest.eq(jws),
                    audit_archives::created_by.eq(&actor.email),
                ))
                .execute(c)
                .await?;
            super::record(
                c,
                actor,
                Change {
                    action: "audit.archive",
                    project_id: None,
                    subject_kind: "audit_archive",
                    subject_id: archived.id.to_string(),
                    before: None,
                    after: Some(json!({
                        "before": archived.before,
                        "first_seq": archived.first_seq,
                        "last_seq": archived.last_seq,
                        "count": archived.count,
                        "sha256": archived.sha256,
                        "size_bytes": archived.size_bytes,
                    })),
                },
            )
            .await?;
            Ok::<_, Error>(())
        }
        .scope_boxed()
    })
    .await;
    if let Err(e) = recorded {
        store.discard(upload_id).await;
        return Err(anyhow::anyhow!("recording the archive: {e}"));
    }
    Ok(archived)
}

/// `--before` of `custody-server audit archive`.
pub fn parse_before(text: &str) -> Result<DateTime<Utc>> {
    parse_time(text).map_err(|e| Error::invalid(format!("--before: {e}")))
}

/// `custody-server audit archive`: archives on connections of its own to `database_url`.
pub async fn archive_command(
    database_url: &str,
    keys: &AuditKeys,
    store: &ArtifactStore,
    before: DateTime<Utc>,
    work_dir: &Path,
) -> anyhow::Result<Archived> {
    use diesel_async::AsyncPgConnection;
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    let reader = AsyncPgConnection::establish(database_url).await?;
    archive(
        &mut conn,
        reader,
        keys,
        store,
        &Actor::system("archive"),
        before,
        work_dir,
    )
    .await
}
