//! Compliance exports of the audit log, and who may make them.
//!
//! - **Export** (`Exporter`): the log of a period, optionally filtered by project, subject and
//!   action, as JSON Lines or CSV (`custody_audit_format::format`), streamed in `BATCH` entries
//!   at a time by keyset pagination on `seq`, so memory stays flat however long the range.
//! - **Signed manifest**: the export's last line, a JWS (EdDSA, the server's audit key) over the
//!   range, filters, first/last seq, count, the chain head and the SHA-256 of every byte before
//!   it (`custody_audit_format::ExportManifest`). Verification needs the file and the public key
//!   alone (`custody_audit_format::verify`).
//!
//! Who may export: server admins and auditors (a server-wide, read-only flag on users), the whole
//! log; a project's admins, their project's entries (`project=` filter).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use custody_audit_format::claims::{ISSUER, TYP_EXPORT};
use custody_audit_format::{format, ExportManifest, Filters};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;
use sha2::{Digest, Sha256};

pub use custody_audit_format::Format;

use super::checkpoints;
use super::{rfc3339, AuditEntry, AuditKeys, Change};
use crate::actor::Actor;
use crate::auth;
use crate::db::schema::{audit_head, audit_log, users};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::ProjectId;
use crate::projects::{self, Project, Role};

/// Entries fetched (and rendered) per round trip: large enough that the per-query cost vanishes,
/// small enough that a batch is a few MB.
pub const BATCH: i64 = 5_000;

/// What to export. `from` is inclusive, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub project: Option<String>,
    pub subject: Option<String>,
    pub action: Option<String>,
    /// Who acted (the entry's `actor` exactly).
    pub actor: Option<String>,
}

impl ExportRequest {
    /// Parses the query parameters of `GET /api/audit/export`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        project: Option<&str>,
        subject: Option<&str>,
        action: Option<&str>,
    ) -> Result<Self> {
        let time = |name: &str, v: Option<&str>| -> Result<Option<DateTime<Utc>>> {
            v.filter(|s| !s.is_empty())
                .map(|s| parse_time(s).map_err(|e| Error::invalid(format!("`{name}`: {e}"))))
                .transpose()
        };
        let text = |name: &str, v: Option<&str>| -> Result<Option<String>> {
            match v.filter(|s| !s.is_empty()) {
                Some(s) => {
                    crate::validate::text(name, s, 1_000)?;
                    Ok(Some(s.to_owned()))
                }
                None => Ok(None),
            }
        };
        let request = ExportRequest {
            from: time("from", from)?,
            to: time("to", to)?,
            project: text("project", project)?,
            subject: text("subject", subject)?,
            action: text("action", action)?,
            actor: None,
        };
        if let (Some(from), Some(to)) = (request.from, request.to) {
            if from >= to {
                return Err(Error::invalid(
                    "`from` must be before `to` (from is inclusive, to exclusive)",
                ));
            }
        }
        Ok(request)
    }

    /// Whether entries inside the seq window are left out (then the export is a set of chain
    /// links rather than one contiguous piece of the chain).
    pub fn filtered(&self) -> bool {
        self.project.is_some()
            || self.subject.is_some()
            || self.action.is_some()
            || self.actor.is_some()
    }

    /// Keeps only the entries of this actor (`actor=` of `GET /api/audit/export`).
    pub fn with_actor(mut self, actor: Option<&str>) -> Result<Self> {
        self.actor = match actor.filter(|s| !s.is_empty()) {
            Some(a) => {
                crate::validate::text("actor", a, 1_000)?;
                Some(a.to_owned())
            }
            None => None,
        };
        Ok(self)
    }
}

/// RFC 3339 (`2026-11-01T00:00:00Z`), or a plain date meaning its midnight UTC.
pub fn parse_time(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "`{text}` is not an RFC 3339 time like 2026-11-01T00:00:00Z (or a date like 2026-11-01)"
    ))
}

/// Whether the user behind `actor` holds the auditor role (never through a project-limited
/// token: it reaches one project only).
pub async fn is_auditor(conn: &mut Conn, actor: &Actor) -> Result<bool> {
    let Some(user_id) = actor.user_id else {
        return Ok(false);
    };
    if actor.project_scope.is_some() {
        return Ok(false);
    }
    Ok(users::table
        .find(user_id)
        .select(users::is_auditor)
        .first::<bool>(conn)
        .await
        .optional()?
        .unwrap_or(false))
}

/// Grants the auditor role (server admins only), with its audit entry; a no-op if held.
pub async fn grant_auditor(conn: &mut Conn, actor: &Actor, email: &str) -> Result<()> {
    actor.require_admin()?;
    let email = auth::normalize_email(email)?;
    let user = auth::find_user_by_email(conn, &email)
        .await?
        .ok_or_else(|| Error::not_found(format!("no user {email}")))?;
    let updated = diesel::update(
        users::table
            .find(user.id)
            .filter(users::is_auditor.eq(false)),
    )
    .set(users::is_auditor.eq(true))
    .execute(conn)
    .await?;
    if updated == 1 {
        super::record(
            conn,
            actor,
            Change {
                action: "user.grant_auditor",
                project_id: None,
                subject_kind: "user",
                subject_id: user.id.to_string(),
                before: Some(json!({"is_auditor": false})),
                after: Some(json!({"is_auditor": true})),
            },
        )
        .await?;
    }
    Ok(())
}

/// Who may export what: admins and auditors everything; a project's admins that project.
/// Answers the project named by the filter.
pub async fn authorize_export(
    conn: &mut Conn,
    actor: &Actor,
    project: Option<&str>,
) -> Result<Option<Project>> {
    if actor.is_admin || is_auditor(conn, actor).await? {
        return match project {
            Some(name) => Ok(Some(projects::find_by_name(conn, name).await?)),
            None => Ok(None),
        };
    }
    match project {
        Some(name) => {
            let project = projects::find_by_name(conn, name).await?;
            projects::authorize(conn, actor, project.id, Role::Admin).await.map_err(|_| {
                Error::forbidden(format!(
                    "exporting the audit log of `{name}` needs the project's admin role, the auditor role or server admin"
                ))
            })?;
            Ok(Some(project))
        }
        None => Err(Error::forbidden(
            "exporting the whole audit log needs the auditor role or server admin; \
             a project's admins may export its entries with project=NAME",
        )),
    }
}

/// Streams one export: `next_chunk` answers the header (CSV), then one chunk per batch of
/// entries, then the manifest line, then `None`. Reading and writing overlap: a task of its own
/// reads the next batch from PostgreSQL (and decodes it) while the current one is rendered and
/// hashed on the blocking pool; a one-batch channel between them keeps memory to a few batches.
pub struct Exporter {
    format: Format,
    request: ExportRequest,
    project_id: Option<ProjectId>,
    window: Option<(i64, i64)>,
    head: (i64, String),
    rows: Option<tokio::sync::mpsc::Receiver<Result<Vec<AuditEntry>>>>,
    started: bool,
    done: bool,
    hasher: Option<Sha256>,
    body_bytes: u64,
    count: u64,
    first_seq: Option<i64>,
    last: Option<(i64, String)>,
    keys: AuditKeys,
    actor_email: String,
}

/// What the reading task selects.
#[derive(Clone)]
struct Selection {
    project_id: Option<ProjectId>,
    subject: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    after_seq: i64,
    last_seq: i64,
}

impl Selection {
    async fn next_batch(&mut self, conn: &mut Conn) -> Result<Vec<AuditEntry>> {
        let mut query = audit_log::table
            .select(AuditEntry::as_select())
            .filter(audit_log::seq.gt(self.after_seq))
            .filter(audit_log::seq.le(self.last_seq))
            .order(audit_log::seq.asc())
            .limit(BATCH)
            .into_boxed();
        if let Some(project) = self.project_id {
            query = query.filter(audit_log::project_id.eq(project));
        }
        if let Some(subject) = &self.subject {
            query = query.filter(audit_log::subject_id.eq(subject.clone()));
        }
        if let Some(action) = &self.action {
            query = query.filter(audit_log::action.eq(action.clone()));
        }
        if let Some(actor) = &self.actor {
            query = query.filter(audit_log::actor.eq(actor.clone()));
        }
        let rows: Vec<AuditEntry> = query.load(conn).await?;
        self.after_seq = rows.last().map_or(self.last_seq, |e| e.seq);
        Ok(rows)
    }
}

impl Exporter {
    /// Fixes what the export holds: the chain head now (entries up to it are committed and
    /// immutable, so the export is a consistent snapshot without a long transaction), and the
    /// seq window of the period. Signs a checkpoint of the head.
    pub async fn begin(
        conn: &mut Conn,
        keys: &AuditKeys,
        actor: &Actor,
        format: Format,
        request: ExportRequest,
        project: Option<&Project>,
        reason: checkpoints::Reason,
    ) -> Result<Exporter> {
        let head: (i64, String) = audit_head::table
            .select((audit_head::seq, audit_head::hash))
            .first(conn)
            .await?;
        let window = seq_window(conn, head.0, request.from, request.to).await?;
        checkpoints::sign_head(conn, keys, &actor.email, reason, Some(head.clone())).await?;
        Ok(Exporter {
            format,
            project_id: project.map(|p| p.id),
            window,
            head,
            request,
            rows: None,
            started: false,
            done: false,
            hasher: Some(Sha256::new()),
            body_bytes: 0,
            count: 0,
            first_seq: None,
            last: None,
            keys: keys.clone(),
            actor_email: actor.email.clone(),
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn head(&self) -> (i64, &str) {
        (self.head.0, &self.head.1)
    }

    pub fn window(&self) -> Option<(i64, i64)> {
        self.window
    }

    /// Starts reading the entries on `conn`, in a task of its own. Call once, before `next_chunk`.
    pub fn start<C>(&mut self, mut conn: C)
    where
        C: std::ops::DerefMut<Target = Conn> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        self.rows = Some(rx);
        let Some((lo, hi)) = self.window else {
            return;
        };
        let mut selection = Selection {
            project_id: self.project_id,
            subject: self.request.subject.clone(),
            action: self.request.action.clone(),
            actor: self.request.actor.clone(),
            after_seq: lo - 1,
            last_seq: hi,
        };
        tokio::spawn(async move {
            while selection.after_seq < selection.last_seq {
                let batch = selection.next_batch(&mut conn).await;
                let failed = batch.is_err();
                // A closed channel means the writer stopped (client gone, error): stop reading.
                if tx.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });
    }

    /// The next piece of the file, or `None` once the manifest was given.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        if !self.started {
            self.started = true;
            if self.format == Format::Csv {
                return Ok(Some(self.hashed(format::csv_header_line().into_bytes())));
            }
        }
        let rows = self
            .rows
            .as_mut()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("Exporter::start was not called")))?;
        while let Some(batch) = rows.recv().await {
            let batch = batch?;
            let Some(last) = batch.last() else { continue };
            self.count += batch.len() as u64;
            self.first_seq.get_or_insert(batch[0].seq);
            self.last = Some((last.seq, last.hash.clone()));
            // Rendering and hashing a batch is ~10 ms of CPU: off the async worker thread, so the
            // reading task (and other requests) keep going meanwhile.
            let (format, mut hasher) = (self.format, self.hasher.take().unwrap_or_default());
            let (out, hasher) = tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(batch.len() * 640);
                for e in &batch {
                    let (entry, prev_hash, hash) = (e.document(), &e.prev_hash, &e.hash);
                    match format {
                        Format::Jsonl => {
                            format::write_jsonl_line(&mut out, &entry, prev_hash, hash)
                        }
                        Format::Csv => format::write_csv_row(&mut out, &entry, prev_hash, hash),
                    }
                }
                hasher.update(&out);
                (out, hasher)
            })
            .await
            .map_err(Error::internal)?;
            self.hasher = Some(hasher);
            self.body_bytes += out.len() as u64;
            return Ok(Some(Bytes::from(out)));
        }
        self.done = true;
        let manifest = self.manifest();
        let jws = self.keys.sign(&manifest)?;
        let line = match self.format {
            Format::Jsonl => format::jsonl_manifest_line(&jws),
            Format::Csv => format::csv_manifest_line(&jws),
        };
        Ok(Some(Bytes::from(line)))
    }

    fn hashed(&mut self, bytes: Vec<u8>) -> Bytes {
        self.hasher.get_or_insert_with(Sha256::new).update(&bytes);
        self.body_bytes += bytes.len() as u64;
        Bytes::from(bytes)
    }

    fn manifest(&mut self) -> ExportManifest {
        let now = Utc::now();
        ExportManifest {
            iss: ISSUER.to_owned(),
            typ: TYP_EXPORT.to_owned(),
            version: 1,
            format: self.format,
            from: self.request.from.map(rfc3339),
            to: self.request.to.map(rfc3339),
            filters: Filters {
                project: self.request.project.clone(),
                project_id: self.project_id.map(|p| p.to_string()),
                subject: self.request.subject.clone(),
                action: self.request.action.clone(),
                actor: self.request.actor.clone(),
            },
            filtered: self.request.filtered(),
            window_first_seq: self.window.map(|w| w.0),
            window_last_seq: self.window.map(|w| w.1),
            first_seq: self.first_seq,
            last_seq: self.last.as_ref().map(|l| l.0),
            count: self.count,
            last_hash: self.last.as_ref().map(|l| l.1.clone()),
            head_seq: self.head.0,
            head_hash: self.head.1.clone(),
            body_sha256: hex::encode(self.hasher.clone().unwrap_or_default().finalize()),
            body_bytes: self.body_bytes,
            exported_at: rfc3339(now),
            exported_by: self.actor_email.clone(),
            key_id: self.keys.public.key_id(),
            iat: now.timestamp(),
        }
    }
}

/// The seq window of a period, up to `head_seq`: from the first entry at or after `from` to
/// the last entry before `to`. Entries are stamped under the chain lock, so time rises with seq
/// and the window is the period's entries (a replica's clock stepping back could shift an entry
/// across the boundary; the window stays one contiguous piece of the chain either way).
async fn seq_window(
    conn: &mut Conn,
    head_seq: i64,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Option<(i64, i64)>> {
    let lo: Option<i64> = match from {
        None if head_seq >= 1 => Some(1),
        None => None,
        Some(from) => super::first_seq_from(conn, from, Some(head_seq)).await?,
    };
    let hi: Option<i64> = match to {
        None if head_seq >= 1 => Some(head_seq),
        None => None,
        Some(to) => super::last_seq_before(conn, to, Some(head_seq)).await?,
    };
    Ok(match (lo, hi) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        _ => None,
    })
}

/// A file name for an export served now.
pub fn file_name(format: Format) -> String {
    format!(
        "custody-audit-{}.{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parsing() {
        let r = ExportRequest::parse(
            Some("2026-11-01T00:00:00Z"),
            Some("2026-12-01"),
            Some("p"),
            None,
            Some(""),
        )
        .unwrap();
        assert_eq!(rfc3339(r.from.unwrap()), "2026-11-01T00:00:00.000000Z");
        assert_eq!(rfc3339(r.to.unwrap()), "2026-12-01T00:00:00.000000Z");
        assert!(r.filtered());
        assert!(r.action.is_none());
        assert!(!ExportRequest::parse(None, None, None, None, None)
            .unwrap()
            .filtered());
        let err = ExportRequest::parse(Some("yesterday"), None, None, None, None).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        let err = ExportRequest::parse(Some("2026-12-01"), Some("2026-11-01"), None, None, None)
            .unwrap_err();
        assert!(err.to_string().contains("before"), "{err}");
    }
}
