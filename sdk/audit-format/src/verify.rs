//! Offline verification of exports (and of signed compliance reports): the file and the public
//! key are all it needs — no database, no server.
//!
//! For every entry the hash is recomputed from the entry's own content and its recorded
//! `prev_hash`. An **unfiltered** export is one contiguous piece of the chain: seqs follow one
//! another without gaps, each `prev_hash` is the previous entry's hash (64 zeros before seq 1),
//! and it runs from the manifest's first to its last seq. A **filtered** export (project, subject
//! or action) is a set of chain links: gaps are expected; seqs must rise, each entry must match
//! the filter, and neighbours whose seqs touch must link. Then the manifest: its signature, the
//! SHA-256 of the body, the count and the first and last seq. Checkpoints given with
//! `--checkpoints` must agree with the entries they name and must not be ahead of the export's head.
//!
//! The verdict names the first problem by position in the file (`seq`, line) and its kind:
//! altered content, missing entry, reordered, truncated, bad signature, …

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::claims::{
    CheckpointClaims, ExportManifest, Filters, ReportClaims, TYP_CHECKPOINT, TYP_EXPORT, TYP_REPORT,
};
use crate::entry::{chain_hash, GENESIS_HASH};
use crate::format::{self, Format};
use crate::keys::{unverified_claims, PublicKey};
use crate::{canonical, Error, Result};

/// Problems kept in full; past this only the count goes on (memory stays flat on a ruined file).
const MAX_PROBLEMS: usize = 50;
const MAX_GAPS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AlteredContent,
    MissingEntry,
    Reordered,
    Duplicate,
    BrokenLink,
    OutsideFilter,
    Truncated,
    CountMismatch,
    DigestMismatch,
    BadSignature,
    NoManifest,
    CheckpointConflict,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::AlteredContent => "altered content",
            Kind::MissingEntry => "missing entry",
            Kind::Reordered => "reordered",
            Kind::Duplicate => "duplicate entry",
            Kind::BrokenLink => "broken chain link",
            Kind::OutsideFilter => "entry outside the export's filter",
            Kind::Truncated => "truncated",
            Kind::CountMismatch => "entry count differs",
            Kind::DigestMismatch => "altered file",
            Kind::BadSignature => "bad signature",
            Kind::NoManifest => "truncated (no manifest)",
            Kind::CheckpointConflict => "contradicts a checkpoint",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: Kind,
    pub seq: Option<i64>,
    pub line: Option<u64>,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.label())?;
        match (self.seq, self.line) {
            (Some(seq), Some(line)) => write!(f, " at seq {seq} (line {line})")?,
            (Some(seq), None) => write!(f, " at seq {seq}")?,
            (None, Some(line)) => write!(f, " at line {line}")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a verification found.
#[derive(Debug)]
pub struct Verdict {
    pub what: &'static str,
    pub manifest: Option<ExportManifest>,
    pub entries: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub problems: Vec<Problem>,
    pub more_problems: u64,
    pub signature_ok: bool,
    pub key_id: String,
    pub checkpoints_checked: usize,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The human verdict: one `OK` line, or `FAILED` with the first problem, then the others.
    pub fn render(&self, file: &str) -> String {
        if self.ok() {
            let range = match (self.first_seq, self.last_seq) {
                (Some(a), Some(b)) => format!("seq {a}..{b}"),
                _ => "no entries".into(),
            };
            let mut s = format!("OK {file}: {} {}, {range}", self.entries, self.what);
            if let Some(m) = &self.manifest {
                s.push_str(if m.filtered {
                    ", filtered export: every entry's hash recomputed, links checked where seqs touch"
                } else {
                    ", one unbroken piece of the chain"
                });
                s.push_str(&format!(
                    "; body sha256 {} matches; manifest signed by key {} (exported {} by {}); chain head at export: seq {} hash {}",
                    m.body_sha256, self.key_id, m.exported_at, m.exported_by, m.head_seq, m.head_hash
                ));
            } else {
                s.push_str(&format!("; signed by key {}", self.key_id));
            }
            if self.checkpoints_checked > 0 {
                s.push_str(&format!(
                    "; consistent with {} checkpoint(s)",
                    self.checkpoints_checked
                ));
            }
            s.push('\n');
            s
        } else {
            let mut s = format!("FAILED {file}: {}\n", self.problems[0]);
            for p in &self.problems[1..] {
                s.push_str(&format!("  also: {p}\n"));
            }
            if self.more_problems > 0 {
                s.push_str(&format!("  … and {} more problem(s)\n", self.more_problems));
            }
            s
        }
    }
}

/// What a verification checks against.
pub struct Options {
    pub public_key: PublicKey,
    /// Checkpoints the caller holds (already read with `read_checkpoints`).
    pub checkpoints: Vec<CheckpointClaims>,
}

/// Reads checkpoints: one per line, as `{"checkpoint":"<JWS>"}` (`GET /api/audit/checkpoints`),
/// `{"manifest":"<JWS>"}` (an earlier export's last line: its head), or a bare JWS. Each must be
/// signed by `key`.
pub fn read_checkpoints(path: &Path, key: &PublicKey) -> Result<Vec<CheckpointClaims>> {
    let what = || format!("reading the checkpoints {}", path.display());
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening the checkpoints {}", path.display()), e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(what(), e))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let where_ = || format!("{} line {}", path.display(), i + 1);
        let (jws, is_manifest) = if line.starts_with('{') {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| Error::invalid(format!("{} is not JSON: {e}", where_())))?;
            match (v["checkpoint"].as_str(), v["manifest"].as_str()) {
                (Some(jws), _) => (jws.to_owned(), false),
                (None, Some(jws)) => (jws.to_owned(), true),
                _ => {
                    return Err(Error::invalid(format!(
                        "{} holds neither `checkpoint` nor `manifest`",
                        where_()
                    )))
                }
            }
        } else if let Some(jws) = line
            .strip_prefix(format::CSV_MANIFEST_CELL)
            .and_then(|l| l.strip_prefix(','))
        {
            (jws.to_owned(), true)
        } else {
            (line.to_owned(), false)
        };
        let claims = if is_manifest {
            let m: ExportManifest = key
                .verify(&jws, TYP_EXPORT)
                .map_err(|e| Error::invalid(format!("{}: {e}", where_())))?;
            CheckpointClaims::of_manifest(m)
        } else {
            key.verify(&jws, TYP_CHECKPOINT)
                .map_err(|e| Error::invalid(format!("{}: {e}", where_())))?
        };
        out.push(claims);
    }
    Ok(out)
}

/// What `custody-server audit verify` and `custody audit verify` run: verifies `file` with
/// `public_key`, held against the checkpoints in the file `checkpoints` when given.
pub fn check(file: &Path, public_key: PublicKey, checkpoints: Option<&Path>) -> Result<Verdict> {
    let checkpoints = match checkpoints {
        Some(path) => read_checkpoints(path, &public_key)?,
        None => Vec::new(),
    };
    verify_file(
        file,
        &Options {
            public_key,
            checkpoints,
        },
    )
}

/// Verifies a file: a JSON Lines or CSV export, or a signed compliance report.
pub fn verify_file(path: &Path, options: &Options) -> Result<Verdict> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut head = [0u8; 64];
    let n = read_up_to(&mut file, &mut head)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let start = std::str::from_utf8(&head[..n]).unwrap_or("").trim_start();
    if start.starts_with("seq,") {
        verify_export(path, Format::Csv, options)
    } else if start.starts_with("{\"seq\"") || start.starts_with("{\"manifest\"") {
        verify_export(path, Format::Jsonl, options)
    } else if start.starts_with('{') {
        verify_report(path, options)
    } else {
        Err(Error::invalid(format!(
            "{} is neither an audit export (JSON Lines or CSV) nor a compliance report",
            path.display()
        )))
    }
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Finds the last line of the file: answers (offset where it starts, its text).
fn last_line(file: &mut std::fs::File) -> std::io::Result<(u64, String)> {
    let len = file.seek(SeekFrom::End(0))?;
    // A manifest is a few KB; 1 MiB is far more than any last line of an export.
    let tail_len = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail)?;
    let mut end = tail.len();
    while end > 0 && matches!(tail[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let begin = tail[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let offset = len - tail_len + begin as u64;
    Ok((
        offset,
        String::from_utf8_lossy(&tail[begin..end]).into_owned(),
    ))
}

/// The fields of an entry document the checks need (borrowed where the JSON allows).
#[derive(Deserialize)]
struct EntryView<'a> {
    seq: i64,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    project_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject_id: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
}

#[derive(Deserialize)]
struct JsonlLine<'a> {
    seq: i64,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    #[serde(borrow)]
    entry: &'a RawValue,
}

fn verify_export(path: &Path, format: Format, options: &Options) -> Result<Verdict> {
    let reading = |e| Error::io(format!("reading {}", path.display()), e);
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let (manifest_offset, last) = last_line(&mut file).map_err(reading)?;
    let jws = format::parse_manifest_line(format, &last);
    let mut checker = Checker::new(options);
    let (body_len, manifest) = match &jws {
        Some(jws) => {
            let claims = unverified_claims::<ExportManifest>(jws);
            match options.public_key.verify::<ExportManifest>(jws, TYP_EXPORT) {
                Ok(_) => checker.signature_ok = true,
                Err(e) => checker.late(
                    Kind::BadSignature,
                    None,
                    None,
                    format!("the manifest is not authentic: {e}"),
                ),
            }
            if claims.is_none() {
                checker.late(
                    Kind::BadSignature,
                    None,
                    None,
                    "the manifest's claims are unreadable".into(),
                );
            }
            (manifest_offset, claims)
        }
        None => {
            checker.late(
                Kind::NoManifest,
                None,
                None,
                "the file does not end with the signed manifest line: the export is incomplete or its end was cut off".into(),
            );
            (file.seek(SeekFrom::End(0)).map_err(reading)?, None)
        }
    };
    checker.manifest = manifest.clone();
    if let Some(m) = &manifest {
        if m.format != format {
            checker.late(
                Kind::BadSignature,
                None,
                None,
                format!(
                    "the manifest is for a {:?} export, the file is {format:?}",
                    m.format
                ),
            );
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(reading)?;
    let reader = BufReader::with_capacity(1 << 20, HashingReader::new(file.take(body_len)));
    let filters = manifest
        .as_ref()
        .map(|m| (m.filters.clone(), m.window_first_seq, m.window_last_seq));
    let (hashing, mut checker) = scan(reader, format, filters, checker).map_err(reading)?;
    let body_sha256 = hex::encode(hashing.hasher.finalize());
    checker.finish(&body_sha256, hashing.bytes);
    Ok(checker.verdict("entries"))
}

/// One line (JSON Lines) or record (CSV) of the body, with its line number.
enum Unit {
    Line(u64, Vec<u8>),
    Row(u64, Vec<String>),
    Bad(u64, String),
}

/// What one entry says about itself: its links, and the problems visible from the entry alone.
struct Examined {
    line: u64,
    seq: i64,
    prev_hash: String,
    hash: String,
    problems: Vec<(Kind, String)>,
    /// Why the line is not an entry at all (then only its position is known).
    unreadable: Option<String>,
}

type ManifestFilters = (Filters, Option<i64>, Option<i64>);

/// Entries per batch handed to a worker.
const SCAN_BATCH: usize = 2_048;

/// Reads the body (hashing every byte) on this thread, checks each entry on its own on worker
/// threads (parsing and hashing are most of the cost), and feeds the results in file order to
/// the checker, which judges what needs neighbours: order, gaps, links, checkpoints. Channels
/// are bounded, so memory stays a few batches whatever the file's size.
fn scan<'o>(
    mut reader: BufReader<HashingReader<std::io::Take<std::fs::File>>>,
    format: Format,
    filters: Option<ManifestFilters>,
    checker: Checker<'o>,
) -> std::io::Result<(HashingReader<std::io::Take<std::fs::File>>, Checker<'o>)> {
    use std::sync::mpsc::sync_channel;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = sync_channel::<(u64, Vec<Examined>)>(workers * 2);
        let mut job_txs = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = sync_channel::<(u64, Vec<Unit>)>(2);
            job_txs.push(tx);
            let (done_tx, filters) = (done_tx.clone(), filters.clone());
            scope.spawn(move || {
                for (index, units) in rx {
                    let examined = units
                        .into_iter()
                        .map(|u| examine(u, filters.as_ref()))
                        .collect();
                    if done_tx.send((index, examined)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let collector = scope.spawn(move || {
            let mut checker = checker;
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            for (index, batch) in done_rx {
                pending.insert(index, batch);
                while let Some(batch) = pending.remove(&next) {
                    for e in batch {
                        checker.accept(e);
                    }
                    next += 1;
                }
            }
            checker
        });
        let read = read_units(&mut reader, format, |index, units| {
            job_txs[index as usize % workers]
                .send((index, units))
                .is_ok()
        });
        drop(job_txs);
        let checker = collector
            .join()
            .map_err(|_| std::io::Error::other("the verification thread panicked"))?;
        read?;
        Ok((reader.into_inner(), checker))
    })
}

/// Splits the body into units, handing them on in batches (`send` answers false to stop).
fn read_units<R: BufRead>(
    reader: &mut R,
    format: Format,
    mut send: impl FnMut(u64, Vec<Unit>) -> bool,
) -> std::io::Result<()> {
    let mut batch = Vec::with_capacity(SCAN_BATCH);
    let mut index = 0u64;
    let mut line_no = 0u64;
    let mut flush = |batch: &mut Vec<Unit>, force: bool| -> bool {
        if batch.len() >= SCAN_BATCH || (force && !batch.is_empty()) {
            let ok = send(
                index,
                std::mem::replace(batch, Vec::with_capacity(SCAN_BATCH)),
            );
            index += 1;
            ok
        } else {
            true
        }
    };
    match format {
        Format::Jsonl => loop {
            let mut line = Vec::with_capacity(640);
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            line_no += 1;
            batch.push(Unit::Line(line_no, line));
            if !flush(&mut batch, false) {
                return Ok(());
            }
        },
        Format::Csv => {
            line_no += 1;
            match format::read_csv_record(reader)? {
                Some((_, cells)) if cells.join(",") == format::CSV_HEADER => {}
                _ => batch.push(Unit::Bad(
                    1,
                    format!("the first row is not the header `{}`", format::CSV_HEADER),
                )),
            }
            while let Some((raw, cells)) = format::read_csv_record(reader)? {
                line_no += 1;
                let record_line = line_no;
                line_no += raw
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    .saturating_sub(1) as u64;
                batch.push(if cells.len() == format::CSV_COLUMNS {
                    Unit::Row(record_line, cells)
                } else {
                    Unit::Bad(
                        record_line,
                        format!(
                            "the row has {} cells, not {}",
                            cells.len(),
                            format::CSV_COLUMNS
                        ),
                    )
                });
                if !flush(&mut batch, false) {
                    return Ok(());
                }
            }
        }
    }
    flush(&mut batch, true);
    Ok(())
}

/// The exact line our writer produces: `{"seq":N,"prev_hash":"…","hash":"…","entry":{…}}`.
/// Recognising it saves parsing the line around the entry; any other shape takes the general path.
fn split_own_line(line: &str) -> Option<(i64, &str, &str, &str)> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let seq = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(",\"prev_hash\":\"")?;
    let (prev_hash, rest) = (rest.get(..64)?, rest.get(64..)?);
    let rest = rest.strip_prefix("\",\"hash\":\"")?;
    let (hash, rest) = (rest.get(..64)?, rest.get(64..)?);
    let entry = rest.strip_prefix("\",\"entry\":")?.strip_suffix('}')?;
    Some((seq, prev_hash, hash, entry))
}

fn examine(unit: Unit, filters: Option<&ManifestFilters>) -> Examined {
    let unreadable = |line: u64, why: String| Examined {
        line,
        seq: 0,
        prev_hash: String::new(),
        hash: String::new(),
        problems: Vec::new(),
        unreadable: Some(why),
    };
    match unit {
        Unit::Bad(line, why) => unreadable(line, why),
        Unit::Line(line, bytes) => {
            let mut text = bytes.as_slice();
            while let [rest @ .., b'\n' | b'\r'] = text {
                text = rest;
            }
            let Ok(text) = std::str::from_utf8(text) else {
                return unreadable(line, "the line is not UTF-8".into());
            };
            if let Some((seq, prev_hash, hash, entry)) = split_own_line(text) {
                if serde_json::from_str::<&RawValue>(entry).is_ok() {
                    return examine_entry(line, seq, prev_hash, hash, entry, None, filters);
                }
            }
            match serde_json::from_str::<JsonlLine>(text) {
                Ok(l) => examine_entry(
                    line,
                    l.seq,
                    &l.prev_hash,
                    &l.hash,
                    l.entry.get(),
                    None,
                    filters,
                ),
                Err(e) => unreadable(line, e.to_string()),
            }
        }
        Unit::Row(line, cells) => match cells[0].parse::<i64>() {
            Ok(seq) => examine_entry(
                line,
                seq,
                &cells[10],
                &cells[11],
                &cells[12],
                Some(&cells[..10]),
                filters,
            ),
            Err(_) => unreadable(line, format!("`{}` is not a seq", cells[0])),
        },
    }
}

/// The checks one entry allows on its own: readable, its seq is the hashed one, its hash is
/// the hash of its content and prev_hash, its CSV columns agree with it, it matches the filter.
fn examine_entry(
    line: u64,
    seq: i64,
    prev_hash: &str,
    hash: &str,
    entry: &str,
    plain: Option<&[String]>,
    filters: Option<&ManifestFilters>,
) -> Examined {
    let mut problems = Vec::new();
    let mut seq = seq;
    match serde_json::from_str::<EntryView>(entry) {
        Err(e) => problems.push((
            Kind::AlteredContent,
            format!("the entry document is unreadable ({e})"),
        )),
        Ok(view) => {
            if view.seq != seq {
                problems.push((
                    Kind::AlteredContent,
                    format!(
                        "the line says seq {seq} but its hashed entry says seq {}",
                        view.seq
                    ),
                ));
                seq = view.seq;
            }
            if let Some(f) = filters {
                if let Some(why) = outside_filter(&view, f) {
                    problems.push((Kind::OutsideFilter, why));
                }
            }
        }
    }
    if !is_hex64(hash) || !is_hex64(prev_hash) {
        problems.push((
            Kind::AlteredContent,
            "hash and prev_hash must be 64 lowercase hex characters".into(),
        ));
    } else if chain_hash(prev_hash, entry.as_bytes()) != hash {
        // The file may hold the entry reformatted (same content, other bytes); the body
        // digest flags such a file, the entry itself is judged on its canonical form.
        let canonical = serde_json::from_str::<Value>(entry).map(|v| canonical::to_string(&v));
        if canonical.map_or(true, |c| chain_hash(prev_hash, c.as_bytes()) != hash) {
            problems.push((
                Kind::AlteredContent,
                "the entry's hash does not match its content and prev_hash: the entry was changed after it was written".into(),
            ));
        }
    }
    if let Some(cells) = plain {
        if let Ok(doc) = serde_json::from_str::<Value>(entry) {
            let want = format::csv_plain_cells(&doc);
            let names: Vec<&str> = format::CSV_HEADER.split(',').collect();
            if let Some(i) = (0..want.len()).find(|&i| cells[i] != want[i]) {
                problems.push((
                    Kind::AlteredContent,
                    format!(
                        "column `{}` says {:?} but the hashed entry says {:?}",
                        names[i], cells[i], want[i]
                    ),
                ));
            }
        }
    }
    Examined {
        line,
        seq,
        prev_hash: prev_hash.to_owned(),
        hash: hash.to_owned(),
        problems,
        unreadable: None,
    }
}

fn outside_filter(view: &EntryView<'_>, (filters, lo, hi): &ManifestFilters) -> Option<String> {
    let mut wrong = Vec::new();
    if let Some(p) = &filters.project_id {
        if view.project_id.as_deref() != Some(p.as_str()) {
            wrong.push(format!(
                "project {}",
                view.project_id.as_deref().unwrap_or("none")
            ));
        }
    }
    if let Some(s) = &filters.subject {
        if view.subject_id != s.as_str() {
            wrong.push(format!("subject {}", view.subject_id));
        }
    }
    if let Some(a) = &filters.action {
        if view.action != a.as_str() {
            wrong.push(format!("action {}", view.action));
        }
    }
    if let Some(a) = &filters.actor {
        if view.actor != a.as_str() {
            wrong.push(format!("actor {}", view.actor));
        }
    }
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if view.seq < *lo || view.seq > *hi {
            wrong.push(format!("seq outside the window {lo}..{hi}"));
        }
    }
    (!wrong.is_empty()).then(|| format!("the entry has {}", wrong.join(", ")))
}

/// Hashes everything read through it: the body digest costs no second pass.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The checks, fed one entry at a time in file order.
struct Checker<'o> {
    options: &'o Options,
    manifest: Option<ExportManifest>,
    signature_ok: bool,
    problems: Vec<Problem>,
    more_problems: u64,
    /// Problems about the file as a whole, reported after those of entries.
    late_problems: Vec<Problem>,
    count: u64,
    first_seq: Option<i64>,
    last_seq: Option<i64>,
    /// The highest seq so far and its hash: the next entry in the chain links to it.
    max: Option<(i64, String)>,
    /// Seqs skipped so far (unfiltered exports): (first, last, index of the problem reporting it).
    gaps: Vec<(i64, i64, Option<usize>)>,
    checkpoints: BTreeMap<i64, Vec<CheckpointClaims>>,
    checkpoints_checked: usize,
}

impl<'o> Checker<'o> {
    fn new(options: &'o Options) -> Self {
        let mut checkpoints: BTreeMap<i64, Vec<CheckpointClaims>> = BTreeMap::new();
        for cp in &options.checkpoints {
            checkpoints.entry(cp.seq).or_default().push(cp.clone());
        }
        Checker {
            options,
            manifest: None,
            signature_ok: false,
            problems: Vec::new(),
            more_problems: 0,
            late_problems: Vec::new(),
            count: 0,
            first_seq: None,
            last_seq: None,
            max: None,
            gaps: Vec::new(),
            checkpoints,
            checkpoints_checked: 0,
        }
    }

    fn filtered(&self) -> bool {
        self.manifest.as_ref().is_some_and(|m| m.filtered)
    }

    fn problem(
        &mut self,
        kind: Kind,
        seq: Option<i64>,
        line: Option<u64>,
        detail: String,
    ) -> Option<usize> {
        if self.problems.len() >= MAX_PROBLEMS {
            self.more_problems += 1;
            return None;
        }
        self.problems.push(Problem {
            kind,
            seq,
            line,
            detail,
        });
        Some(self.problems.len() - 1)
    }

    fn late(&mut self, kind: Kind, seq: Option<i64>, line: Option<u64>, detail: String) {
        self.late_problems.push(Problem {
            kind,
            seq,
            line,
            detail,
        });
    }

    fn unreadable(&mut self, line: u64, why: &str) {
        let after = match &self.max {
            Some((seq, _)) => format!("the entry after seq {seq}"),
            None => "the first entry".into(),
        };
        self.problem(
            Kind::AlteredContent,
            self.max.as_ref().map(|m| m.0 + 1),
            Some(line),
            format!("{after} is not a readable export entry ({why})"),
        );
    }

    /// One examined entry, in file order: its own problems, then what needs its neighbours.
    fn accept(&mut self, e: Examined) {
        if let Some(why) = &e.unreadable {
            self.unreadable(e.line, why);
            return;
        }
        self.count += 1;
        for (kind, detail) in e.problems {
            self.problem(kind, Some(e.seq), Some(e.line), detail);
        }
        self.check_order(e.seq, &e.prev_hash, &e.hash, e.line);
        if let Some(cps) = self.checkpoints.get(&e.seq) {
            let conflicting = cps
                .iter()
                .find(|cp| cp.hash != e.hash)
                .map(|cp| cp.signed_at.clone());
            if let Some(signed_at) = conflicting {
                self.problem(
                    Kind::CheckpointConflict,
                    Some(e.seq),
                    Some(e.line),
                    format!("the checkpoint signed at {signed_at} holds another hash for this seq: the chain was rewritten"),
                );
            }
        }
        self.first_seq.get_or_insert(e.seq);
        self.last_seq = Some(e.seq);
    }

    fn check_order(&mut self, seq: i64, prev_hash: &str, hash: &str, line: u64) {
        let filtered = self.filtered();
        match self.max.clone() {
            None => {
                if !filtered {
                    if let Some(first) = self.manifest.as_ref().and_then(|m| m.first_seq) {
                        if seq > first {
                            let idx = self.problem(
                                Kind::MissingEntry,
                                Some(first),
                                Some(line),
                                format!("the export should start at seq {first} but its first entry is seq {seq}"),
                            );
                            self.gaps.push((first, seq - 1, idx));
                        }
                    }
                }
                if seq == 1 && prev_hash != GENESIS_HASH {
                    self.problem(
                        Kind::BrokenLink,
                        Some(1),
                        Some(line),
                        "the first entry's prev_hash must be 64 zeros".into(),
                    );
                }
                self.max = Some((seq, hash.to_owned()));
            }
            Some((max, max_hash)) if seq == max + 1 => {
                if prev_hash != max_hash {
                    self.problem(
                        Kind::BrokenLink,
                        Some(seq),
                        Some(line),
                        format!("prev_hash is not the hash of seq {max}: an entry was altered or replaced"),
                    );
                }
                self.max = Some((seq, hash.to_owned()));
            }
            Some((max, _)) if seq > max + 1 => {
                if !filtered {
                    let missing = if seq - max == 2 {
                        format!(
                            "seq {} is missing: seq {max} is followed by seq {seq}",
                            max + 1
                        )
                    } else {
                        format!(
                            "seqs {} to {} are missing: seq {max} is followed by seq {seq}",
                            max + 1,
                            seq - 1
                        )
                    };
                    let idx = self.problem(Kind::MissingEntry, Some(max + 1), Some(line), missing);
                    if self.gaps.len() < MAX_GAPS {
                        self.gaps.push((max + 1, seq - 1, idx));
                    }
                }
                self.max = Some((seq, hash.to_owned()));
            }
            Some((max, _)) => {
                // Behind the highest seq: an entry that was "missing" turning up later was
                // moved, not removed; anything else is a repeat.
                if let Some(g) = self
                    .gaps
                    .iter()
                    .position(|&(lo, hi, _)| (lo..=hi).contains(&seq))
                {
                    let (lo, hi, idx) = self.gaps.remove(g);
                    let detail =
                        format!("seq {seq} comes after seq {max}: entries are out of order");
                    match idx {
                        Some(i) => {
                            self.problems[i] = Problem {
                                kind: Kind::Reordered,
                                seq: Some(seq),
                                line: Some(line),
                                detail,
                            };
                        }
                        None => {
                            self.problem(Kind::Reordered, Some(seq), Some(line), detail);
                        }
                    }
                    for (a, b) in [(lo, seq - 1), (seq + 1, hi)] {
                        if a <= b {
                            let idx = self.problem(
                                Kind::MissingEntry,
                                Some(a),
                                None,
                                format!("seqs {a} to {b} are missing"),
                            );
                            self.gaps.push((a, b, idx));
                        }
                    }
                } else if filtered {
                    self.problem(
                        Kind::Reordered,
                        Some(seq),
                        Some(line),
                        format!("seq {seq} comes after seq {max}: entries are out of order"),
                    );
                } else {
                    self.problem(
                        Kind::Duplicate,
                        Some(seq),
                        Some(line),
                        format!("seq {seq} appears again after seq {max}"),
                    );
                }
            }
        }
    }

    fn finish(&mut self, body_sha256: &str, body_bytes: u64) {
        if let Some(m) = self.manifest.clone() {
            match (self.last_seq, m.last_seq) {
                (Some(have), Some(want)) if have < want => {
                    let missing = if m.filtered {
                        String::new()
                    } else {
                        format!(" ({} entries missing at the end)", want - have)
                    };
                    self.late(
                        Kind::Truncated,
                        Some(if m.filtered { want } else { have + 1 }),
                        None,
                        format!("the file ends at seq {have} but the manifest says the export ends at seq {want}{missing}"),
                    );
                }
                (None, Some(want)) => self.late(
                    Kind::Truncated,
                    m.first_seq,
                    None,
                    format!(
                        "the file holds no entries but the manifest says it ends at seq {want}"
                    ),
                ),
                (Some(have), Some(want)) if have > want => self.late(
                    Kind::CountMismatch,
                    Some(want + 1),
                    None,
                    format!("the file goes on past the manifest's last seq {want} (to seq {have})"),
                ),
                (Some(have), None) => self.late(
                    Kind::CountMismatch,
                    Some(have),
                    None,
                    "the manifest says the export is empty".into(),
                ),
                _ => {}
            }
            if self.count != m.count
                && self.problems.is_empty()
                && self.late_problems.iter().all(|p| p.kind != Kind::Truncated)
            {
                self.late(
                    Kind::CountMismatch,
                    None,
                    None,
                    format!(
                        "the file holds {} entries, the manifest says {}",
                        self.count, m.count
                    ),
                );
            }
            if body_sha256 != m.body_sha256 || body_bytes != m.body_bytes {
                self.late(
                    Kind::DigestMismatch,
                    None,
                    None,
                    format!(
                        "the export body ({body_bytes} bytes, sha256 {body_sha256}) is not the one the manifest signed ({} bytes, sha256 {})",
                        m.body_bytes, m.body_sha256
                    ),
                );
            }
            for cp in self
                .options
                .checkpoints
                .iter()
                .filter(|cp| cp.signed_at <= m.exported_at)
            {
                if cp.seq > m.head_seq {
                    self.late_problems.push(Problem {
                        kind: Kind::Truncated,
                        seq: Some(m.head_seq + 1),
                        line: None,
                        detail: format!(
                            "the log's head at export was seq {}, but a checkpoint signed earlier ({}) reached seq {}: entries were removed from the end of the log",
                            m.head_seq, cp.signed_at, cp.seq
                        ),
                    });
                } else if cp.seq == m.head_seq && cp.hash != m.head_hash {
                    self.late(
                        Kind::CheckpointConflict,
                        Some(cp.seq),
                        None,
                        format!("the head hash at export differs from the checkpoint signed at {}: the chain was rewritten", cp.signed_at),
                    );
                }
            }
            // Each checkpoint was held against the entry it names (when in the file) and against
            // the head at export (when signed before it).
            self.checkpoints_checked = self.options.checkpoints.len();
        }
        let late = std::mem::take(&mut self.late_problems);
        // Whole-file problems come after those of entries; a bad signature last among equals,
        // since the entries' own problems name what was changed.
        let (signature, rest): (Vec<Problem>, Vec<Problem>) =
            late.into_iter().partition(|p| p.kind == Kind::BadSignature);
        for p in rest.into_iter().chain(signature) {
            self.problem(p.kind, p.seq, p.line, p.detail);
        }
    }

    fn verdict(self, what: &'static str) -> Verdict {
        Verdict {
            what,
            manifest: self.manifest,
            entries: self.count,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            problems: self.problems,
            more_problems: self.more_problems,
            signature_ok: self.signature_ok,
            key_id: self.options.public_key.key_id(),
            checkpoints_checked: self.checkpoints_checked,
        }
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A compliance report: `{"report": {…}, "signature": "<JWS>"}`. The signature covers the
/// SHA-256 of the report's canonical JSON; the report's audit entries are re-hashed as links.
fn verify_report(path: &Path, options: &Options) -> Result<Verdict> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(format!("{} is not JSON: {e}", path.display())))?;
    let mut checker = Checker::new(options);
    let (Some(report), Some(jws)) = (doc.get("report"), doc["signature"].as_str()) else {
        return Err(Error::invalid(format!(
            "{} is not a signed compliance report (`report` and `signature`)",
            path.display()
        )));
    };
    let digest = canonical::sha256_hex(report);
    match options.public_key.verify::<ReportClaims>(jws, TYP_REPORT) {
        Ok(claims) => {
            checker.signature_ok = true;
            if claims.report_sha256 != digest {
                checker.late(
                    Kind::AlteredContent,
                    None,
                    None,
                    format!(
                        "the report's content (sha256 {digest}) is not what was signed (sha256 {})",
                        claims.report_sha256
                    ),
                );
            }
        }
        Err(e) => checker.late(
            Kind::BadSignature,
            None,
            None,
            format!("the report's signature is not authentic: {e}"),
        ),
    }
    if let Some(entries) = report["audit"]["entries"].as_array() {
        for (i, e) in entries.iter().enumerate() {
            let (Some(seq), Some(prev), Some(hash)) = (
                e["seq"].as_i64(),
                e["prev_hash"].as_str(),
                e["hash"].as_str(),
            ) else {
                checker.problem(
                    Kind::AlteredContent,
                    None,
                    None,
                    format!("audit entry #{} lacks seq, prev_hash or hash", i + 1),
                );
                continue;
            };
            checker.count += 1;
            if chain_hash(prev, canonical::to_string(&e["entry"]).as_bytes()) != hash {
                checker.problem(
                    Kind::AlteredContent,
                    Some(seq),
                    None,
                    "the audit entry's hash does not match its content".into(),
                );
            }
            checker.first_seq.get_or_insert(seq);
            checker.last_seq = Some(seq);
        }
    }
    let late = std::mem::take(&mut checker.late_problems);
    for p in late {
        checker.problem(p.kind, p.seq, p.line, p.detail);
    }
    Ok(checker.verdict("audit entries in a compliance report"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::ISSUER;
    use crate::entry::Entry;
    use crate::keys::SigningKey;
    use serde_json::json;

    /// An export of `n` chained entries written with this crate's writers and signed, as the
    /// server writes one; answers the entry lines, the manifest line and the key.
    fn export(format: Format, n: i64) -> (Vec<Vec<u8>>, Vec<u8>, SigningKey) {
        let (key, _) = SigningKey::generate().unwrap();
        let mut lines = Vec::new();
        if format == Format::Csv {
            lines.push(format::csv_header_line().into_bytes());
        }
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=n {
            let after = json!({"name": format!("ds-{seq}"), "tags": ["a", "b"]});
            let e = Entry {
                action: "dataset.create",
                actor: "a@example.com",
                after: Some(&after),
                at: chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000 + seq).unwrap(),
                before: None,
                project_id: None,
                request_id: None,
                seq,
                subject_id: "s",
                subject_kind: "dataset",
            };
            let hash = e.chain_hash(&prev);
            let mut line = Vec::new();
            match format {
                Format::Jsonl => format::write_jsonl_line(&mut line, &e, &prev, &hash),
                Format::Csv => format::write_csv_row(&mut line, &e, &prev, &hash),
            }
            lines.push(line);
            prev = hash;
        }
        let body = lines.concat();
        let manifest = ExportManifest {
            iss: ISSUER.into(),
            typ: TYP_EXPORT.into(),
            version: 1,
            format,
            from: None,
            to: None,
            filters: Filters::default(),
            filtered: false,
            window_first_seq: Some(1),
            window_last_seq: Some(n),
            first_seq: Some(1),
            last_seq: Some(n),
            count: n as u64,
            last_hash: Some(prev.clone()),
            head_seq: n,
            head_hash: prev,
            body_sha256: hex::encode(Sha256::digest(&body)),
            body_bytes: body.len() as u64,
            exported_at: "2026-01-01T00:00:00.000000Z".into(),
            exported_by: "a@example.com".into(),
            key_id: key.public().key_id(),
            iat: 0,
        };
        let jws = key.sign(&manifest).unwrap();
        let last = match format {
            Format::Jsonl => format::jsonl_manifest_line(&jws),
            Format::Csv => format::csv_manifest_line(&jws),
        };
        (lines, last.into_bytes(), key)
    }

    fn verdict(dir: &tempfile::TempDir, bytes: &[u8], key: &SigningKey) -> Verdict {
        let path = dir.path().join("export");
        std::fs::write(&path, bytes).unwrap();
        check(&path, key.public().clone(), None).unwrap()
    }

    fn first_line(v: &Verdict) -> String {
        v.render("f").lines().next().unwrap().to_owned()
    }

    #[test]
    fn an_intact_export_verifies_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Jsonl, Format::Csv] {
            let (lines, manifest, key) = export(format, 20);
            let v = verdict(&dir, &[lines.concat(), manifest].concat(), &key);
            assert!(v.ok(), "{}", v.render("f"));
            assert_eq!(
                (v.entries, v.first_seq, v.last_seq),
                (20, Some(1), Some(20))
            );
            assert!(
                v.render("f")
                    .starts_with("OK f: 20 entries, seq 1..20, one unbroken piece"),
                "{}",
                v.render("f")
            );
        }
    }

    #[test]
    fn tampering_is_named_with_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, manifest, key) = export(Format::Jsonl, 20);

        let mut flipped = lines.clone();
        let at = flipped[9].windows(7).position(|w| w == b"dataset").unwrap();
        flipped[9][at] ^= 0x01;
        let v = verdict(&dir, &[flipped.concat(), manifest.clone()].concat(), &key);
        assert!(
            first_line(&v).starts_with("FAILED f: altered content at seq 10 (line 10)"),
            "{}",
            v.render("f")
        );

        let mut removed = lines.clone();
        removed.remove(9);
        let v = verdict(&dir, &[removed.concat(), manifest.clone()].concat(), &key);
        assert!(
            first_line(&v).starts_with(
                "FAILED f: missing entry at seq 10 (line 10): seq 10 is missing: seq 9 is followed by seq 11"
            ),
            "{}",
            v.render("f")
        );

        let mut swapped = lines.clone();
        swapped.swap(9, 10);
        let v = verdict(&dir, &[swapped.concat(), manifest.clone()].concat(), &key);
        assert!(
            first_line(&v).starts_with("FAILED f: reordered at seq 10"),
            "{}",
            v.render("f")
        );

        let v = verdict(&dir, &lines[..15].concat(), &key);
        assert!(
            first_line(&v).starts_with("FAILED f: truncated (no manifest)"),
            "{}",
            v.render("f")
        );

        let (other, _) = SigningKey::generate().unwrap();
        let v = verdict(&dir, &[lines.concat(), manifest].concat(), &other);
        assert!(
            first_line(&v).starts_with("FAILED f: bad signature"),
            "{}",
            v.render("f")
        );
    }

    #[test]
    fn an_edited_csv_column_disagrees_with_the_hashed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut lines, manifest, key) = export(Format::Csv, 5);
        let row = String::from_utf8(lines[3].clone()).unwrap();
        lines[3] = row
            .replacen("a@example.com", "b@example.com", 1)
            .into_bytes();
        let v = verdict(&dir, &[lines.concat(), manifest].concat(), &key);
        assert!(
            first_line(&v)
                .starts_with("FAILED f: altered content at seq 3 (line 4): column `actor`"),
            "{}",
            v.render("f")
        );
    }

    #[test]
    fn checkpoints_expose_a_lost_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, manifest, key) = export(Format::Jsonl, 5);
        let export_path = dir.path().join("export.jsonl");
        std::fs::write(&export_path, [lines.concat(), manifest].concat()).unwrap();
        let ahead = CheckpointClaims {
            iss: ISSUER.into(),
            typ: TYP_CHECKPOINT.into(),
            seq: 7,
            hash: "c".repeat(64),
            signed_at: "2025-12-31T00:00:00.000000Z".into(),
            iat: 0,
        };
        let cps = dir.path().join("checkpoints.jsonl");
        std::fs::write(
            &cps,
            format!("{}\n", json!({"checkpoint": key.sign(&ahead).unwrap()})),
        )
        .unwrap();
        let v = check(&export_path, key.public().clone(), Some(&cps)).unwrap();
        assert!(
            first_line(&v).starts_with("FAILED export.jsonl: truncated at seq 6")
                || v.render("f").contains("truncated at seq 6"),
            "{}",
            v.render("f")
        );
        // A checkpoint signed by another key is refused outright.
        let (other, _) = SigningKey::generate().unwrap();
        let err = check(&export_path, other.public().clone(), Some(&cps)).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn a_signed_report_verifies_and_an_edit_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let entry = json!({"seq": 1, "action": "model_version.register"});
        let hash = chain_hash(GENESIS_HASH, canonical::to_string(&entry).as_bytes());
        let report = json!({"kind": TYP_REPORT, "audit": {"entries": [
            {"seq": 1, "prev_hash": GENESIS_HASH, "hash": hash, "entry": entry}
        ]}});
        let claims = ReportClaims {
            iss: ISSUER.into(),
            typ: TYP_REPORT.into(),
            model_version_id: "mv".into(),
            report_sha256: canonical::sha256_hex(&report),
            generated_at: "t".into(),
            iat: 0,
        };
        let signed = json!({"report": report, "signature": key.sign(&claims).unwrap()});
        let v = verdict(&dir, signed.to_string().as_bytes(), &key);
        assert!(v.ok(), "{}", v.render("f"));
        assert_eq!(v.entries, 1);
        let edited = signed
            .to_string()
            .replace("model_version.register", "model_version.delete");
        let v = verdict(&dir, edited.as_bytes(), &key);
        assert!(
            first_line(&v).starts_with("FAILED f: altered content at seq 1"),
            "{}",
            v.render("f")
        );
    }

    #[test]
    fn a_file_that_is_no_export_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello").unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let err = check(&path, key.public().clone(), None).unwrap_err();
        assert!(err.to_string().contains("neither an audit export"), "{err}");
        let err = check(&dir.path().join("absent"), key.public().clone(), None).unwrap_err();
        assert!(err.to_string().starts_with("opening "), "{err}");
    }
}
