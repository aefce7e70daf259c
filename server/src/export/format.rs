//! The two export formats, byte for byte.
//!
//! **JSON Lines** (`application/x-ndjson`): one entry per line,
//! `{"seq":N,"prev_hash":"…","hash":"…","entry":{…canonical entry…}}`, where `entry` is exactly
//! the canonical JSON the hash covers; the last line is `{"manifest":"<JWS>"}`.
//!
//! **CSV** (RFC 4180, `text/csv`): a header row, then one row per entry with the entry's fields
//! as plain columns for spreadsheets, then `prev_hash`, `hash` and `entry` (the canonical JSON,
//! which is what verification hashes; the plain columns must agree with it). The last row is
//! `#manifest,<JWS>`: an ordinary two-cell row that spreadsheets show and ignore. Text cells that
//! a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) get a leading `'`.
//!
//! In both, the manifest's `body_sha256` covers every byte before the manifest line.

use std::io::BufRead;

use chrono::SecondsFormat;
use serde_json::Value;

use crate::audit::AuditEntry;

pub const CSV_HEADER: &str =
    "seq,at,actor,action,project_id,subject_kind,subject_id,before,after,request_id,prev_hash,hash,entry";
pub const CSV_COLUMNS: usize = 13;
pub const CSV_MANIFEST_CELL: &str = "#manifest";

/// Appends `e`'s canonical document: the same bytes as
/// `serde_json::to_string(&e.canonical_document())` (keys sorted, no whitespace), written
/// directly because the export spends most of its time here.
pub fn write_canonical_entry(out: &mut Vec<u8>, e: &AuditEntry) {
    out.extend_from_slice(b"{\"action\":");
    json_str(out, &e.action);
    out.extend_from_slice(b",\"actor\":");
    json_str(out, &e.actor);
    out.extend_from_slice(b",\"after\":");
    json_opt_value(out, e.after.as_ref());
    out.extend_from_slice(b",\"at\":\"");
    out.extend_from_slice(e.at.to_rfc3339_opts(SecondsFormat::Micros, true).as_bytes());
    out.extend_from_slice(b"\",\"before\":");
    json_opt_value(out, e.before.as_ref());
    out.extend_from_slice(b",\"project_id\":");
    match e.project_id {
        Some(p) => {
            out.push(b'"');
            out.extend_from_slice(
                p.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    .as_bytes(),
            );
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"request_id\":");
    match &e.request_id {
        Some(r) => json_str(out, r),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(e.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"subject_id\":");
    json_str(out, &e.subject_id);
    out.extend_from_slice(b",\"subject_kind\":");
    json_str(out, &e.subject_kind);
    out.push(b'}');
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn json_opt_value(out: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        // serde_json's default map is a BTreeMap: its own output is already canonical, and
        // much cheaper than re-sorting. Checked once, in case a dependency turned on
        // `preserve_order` for the whole build.
        Some(v) if maps_are_sorted() => {
            serde_json::to_writer(&mut *out, v).expect("writing to a Vec cannot fail")
        }
        Some(v) => out.extend_from_slice(canonical_json(v).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

fn maps_are_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        serde_json::json!({"b": 1, "a": 2}).to_string().as_str() == r#"{"a":2,"b":1}"#
    })
}

/// JSON with object keys sorted at every level and no whitespace, whatever map type
/// serde_json was built with (a crate enabling `preserve_order` must not change hashes).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("strings serialise"));
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).expect("JSON scalars serialise")),
    }
}

/// One JSON Lines entry line, newline included.
pub fn write_jsonl_line(out: &mut Vec<u8>, e: &AuditEntry) {
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(e.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"prev_hash\":");
    json_str(out, &e.prev_hash);
    out.extend_from_slice(b",\"hash\":");
    json_str(out, &e.hash);
    out.extend_from_slice(b",\"entry\":");
    write_canonical_entry(out, e);
    out.extend_from_slice(b"}\n");
}

pub fn jsonl_manifest_line(jws: &str) -> String {
    format!(
        "{{\"manifest\":{}}}\n",
        serde_json::to_string(jws).expect("strings serialise")
    )
}

pub fn csv_header_line() -> String {
    format!("{CSV_HEADER}\r\n")
}

pub fn csv_manifest_line(jws: &str) -> String {
    format!("{CSV_MANIFEST_CELL},{jws}\r\n")
}

/// The plain (spreadsheet) cells of an entry, rendered from its canonical document. The writer
/// and the verifier both go through here, so "the columns agree with the hashed entry" is a
/// string comparison.
pub fn csv_plain_cells(doc: &Value) -> [String; 10] {
    let text = |key: &str| match &doc[key] {
        Value::Null => String::new(),
        Value::String(s) => neutralise(s),
        other => neutralise(&canonical_json(other)),
    };
    let json = |key: &str| match &doc[key] {
        Value::Null => String::new(),
        other => neutralise(&canonical_json(other)),
    };
    [
        doc["seq"].to_string(),
        text("at"),
        text("actor"),
        text("action"),
        text("project_id"),
        text("subject_kind"),
        text("subject_id"),
        json("before"),
        json("after"),
        text("request_id"),
    ]
}

/// One CSV row, CRLF included.
pub fn write_csv_row(out: &mut Vec<u8>, e: &AuditEntry) {
    let mut canonical = Vec::with_capacity(512);
    write_canonical_entry(&mut canonical, e);
    let doc = e.canonical_document();
    for cell in csv_plain_cells(&doc) {
        csv_cell(out, &cell);
        out.push(b',');
    }
    csv_cell(out, &e.prev_hash);
    out.push(b',');
    csv_cell(out, &e.hash);
    out.push(b',');
    csv_cell(
        out,
        std::str::from_utf8(&canonical).expect("canonical JSON is UTF-8"),
    );
    out.extend_from_slice(b"\r\n");
}

/// A text cell a spreadsheet would evaluate (`=1+1`, `@SUM(…)`, …) is prefixed with `'`.
fn neutralise(s: &str) -> String {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

fn csv_cell(out: &mut Vec<u8>, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(cell.as_bytes());
    }
}

/// Reads one CSV record (RFC 4180: quoted cells may hold commas, doubled quotes and line
/// breaks). Answers the record's raw bytes (line break included) and its cells; `None` at the end.
pub fn read_csv_record<R: BufRead>(
    reader: &mut R,
) -> std::io::Result<Option<(Vec<u8>, Vec<String>)>> {
    let mut raw = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut raw)?;
        if n == 0 {
            break;
        }
        // Inside a quoted cell while the count of quotes so far is odd: the record goes on.
        if raw.iter().filter(|&&b| b == b'"').count() % 2 == 0 {
            break;
        }
    }
    if raw.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&raw);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let body = body.strip_suffix('\r').unwrap_or(body);
    let mut cells = Vec::with_capacity(CSV_COLUMNS);
    let mut cell = String::new();
    let mut chars = body.chars().peekable();
    let mut quoted = false;
    let mut at_cell_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_cell_start => quoted = true,
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (false, ',') => {
                cells.push(std::mem::take(&mut cell));
                at_cell_start = true;
                continue;
            }
            (_, c) => cell.push(c),
        }
        at_cell_start = false;
    }
    cells.push(cell);
    Ok(Some((raw, cells)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::json;

    fn entry(after: Option<Value>, request_id: Option<&str>, project: bool) -> AuditEntry {
        AuditEntry {
            seq: 42,
            at: DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap(),
            actor: "ana\"quote@example.com".into(),
            action: "=cmd|' /C calc'!A0".into(),
            project_id: project.then(uuid::Uuid::now_v7),
            subject_kind: "dataset".into(),
            subject_id: "line\nbreak, comma".into(),
            before: None,
            after,
            request_id: request_id.map(str::to_owned),
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
        }
    }

    #[test]
    fn direct_writer_matches_the_hashed_document() {
        for e in [
            entry(
                Some(json!({"z": [1, 2.5, {"y": null, "b": "ü\u{1}"}], "a": -0.0, "m": 1e300})),
                Some("r"),
                true,
            ),
            entry(None, None, false),
            entry(Some(json!("just a string")), Some("\u{2028}"), true),
        ] {
            let mut out = Vec::new();
            write_canonical_entry(&mut out, &e);
            let direct = String::from_utf8(out).unwrap();
            assert_eq!(direct, canonical_json(&e.canonical_document()));
            assert_eq!(
                crate::audit::chain_hash(&e.prev_hash, &e.canonical_document()),
                {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(format!("{}{}", e.prev_hash, direct)))
                }
            );
        }
    }

    #[test]
    fn csv_rows_round_trip_through_the_reader() {
        let e = entry(Some(json!({"k": "v,\"w\"\r\n"})), Some("-r"), true);
        let mut out = Vec::new();
        write_csv_row(&mut out, &e);
        out.extend_from_slice(b"next,row\r\n");
        let mut reader = std::io::Cursor::new(out.clone());
        let (raw, cells) = read_csv_record(&mut reader).unwrap().unwrap();
        assert_eq!(cells.len(), CSV_COLUMNS);
        assert_eq!(raw.len(), out.len() - b"next,row\r\n".len());
        let doc: Value = serde_json::from_str(&cells[12]).unwrap();
        assert_eq!(doc, e.canonical_document());
        assert_eq!(cells[..10], csv_plain_cells(&doc));
        assert!(
            cells[3].starts_with("'="),
            "formula cells are neutralised: {}",
            cells[3]
        );
        assert_eq!(cells[9], "'-r");
        let (_, rest) = read_csv_record(&mut reader).unwrap().unwrap();
        assert_eq!(rest, ["next", "row"]);
        assert!(read_csv_record(&mut reader).unwrap().is_none());
    }
}
