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

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;
use crate::entry::Entry;
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    /// `jsonl` (or `ndjson`) or `csv`.
    pub fn parse(text: &str) -> Result<Format, Error> {
        match text {
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            other => Err(Error::invalid(format!(
                "format must be `jsonl` or `csv`, not `{other}`"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

pub const CSV_HEADER: &str =
    "seq,at,actor,action,project_id,subject_kind,subject_id,before,after,request_id,prev_hash,hash,entry";
pub const CSV_COLUMNS: usize = 13;
pub const CSV_MANIFEST_CELL: &str = "#manifest";

/// One line of a JSON Lines export, fields in this order.
#[derive(Serialize)]
struct JsonlLine<'a> {
    seq: i64,
    prev_hash: &'a str,
    hash: &'a str,
    entry: &'a Entry<'a>,
}

/// One JSON Lines entry line, newline included:
/// `{"seq":N,"prev_hash":"…","hash":"…","entry":{…canonical entry…}}`.
pub fn write_jsonl_line(out: &mut Vec<u8>, entry: &Entry<'_>, prev_hash: &str, hash: &str) {
    let line = JsonlLine {
        seq: entry.seq,
        prev_hash,
        hash,
        entry,
    };
    serde_json::to_writer(&mut *out, &line).expect("writing JSON to a Vec cannot fail");
    out.push(b'\n');
}

/// The last line of a JSON Lines export.
pub fn jsonl_manifest_line(jws: &str) -> String {
    format!(
        "{{\"manifest\":{}}}\n",
        serde_json::to_string(jws).expect("strings serialise")
    )
}

/// The first row of a CSV export.
pub fn csv_header_line() -> String {
    format!("{CSV_HEADER}\r\n")
}

/// The last row of a CSV export.
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
        other => neutralise(&canonical::to_string(other)),
    };
    let json = |key: &str| match &doc[key] {
        Value::Null => String::new(),
        other => neutralise(&canonical::to_string(other)),
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
pub fn write_csv_row(out: &mut Vec<u8>, entry: &Entry<'_>, prev_hash: &str, hash: &str) {
    for cell in csv_plain_cells(&entry.to_value()) {
        csv_cell(out, &cell);
        out.push(b',');
    }
    csv_cell(out, prev_hash);
    out.push(b',');
    csv_cell(out, hash);
    out.push(b',');
    csv_cell(out, &entry.canonical_json());
    out.extend_from_slice(b"\r\n");
}

/// The JWS of a manifest line (`{"manifest":"<JWS>"}` or `#manifest,<JWS>`), if it is one.
pub fn parse_manifest_line(format: Format, line: &str) -> Option<String> {
    match format {
        Format::Jsonl => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct ManifestLine {
                manifest: String,
            }
            serde_json::from_str::<ManifestLine>(line)
                .ok()
                .map(|m| m.manifest)
        }
        Format::Csv => line
            .strip_prefix(CSV_MANIFEST_CELL)
            .and_then(|rest| rest.strip_prefix(','))
            .map(str::to_owned),
    }
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

    fn entry<'a>(after: Option<&'a Value>, request_id: Option<&'a str>) -> Entry<'a> {
        Entry {
            action: "=cmd|' /C calc'!A0",
            actor: "ana\"quote@example.com",
            after,
            at: DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap(),
            before: None,
            project_id: Some(uuid::Uuid::from_u128(
                0x0190a4c2_5d1e_7a3b_9c4d_2e1f0a9b8c7d,
            )),
            request_id,
            seq: 42,
            subject_id: "line\nbreak, comma",
            subject_kind: "dataset",
        }
    }

    #[test]
    fn jsonl_line_is_the_fixed_shape_around_the_canonical_entry() {
        let after = json!({"k": [1, "v"], "a": null});
        let e = entry(Some(&after), Some("r"));
        let mut out = Vec::new();
        write_jsonl_line(&mut out, &e, &"a".repeat(64), &"b".repeat(64));
        let expected = format!(
            "{{\"seq\":42,\"prev_hash\":\"{}\",\"hash\":\"{}\",\"entry\":{}}}\n",
            "a".repeat(64),
            "b".repeat(64),
            r#"{"action":"=cmd|' /C calc'!A0","actor":"ana\"quote@example.com","after":{"a":null,"k":[1,"v"]},"at":"2023-11-14T22:13:20.000001Z","before":null,"project_id":"0190a4c2-5d1e-7a3b-9c4d-2e1f0a9b8c7d","request_id":"r","seq":42,"subject_id":"line\nbreak, comma","subject_kind":"dataset"}"#
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(
            jsonl_manifest_line("h.p.s"),
            "{\"manifest\":\"h.p.s\"}\n".to_owned()
        );
        assert_eq!(
            parse_manifest_line(Format::Jsonl, "{\"manifest\":\"h.p.s\"}"),
            Some("h.p.s".into())
        );
        assert_eq!(
            parse_manifest_line(Format::Jsonl, "{\"manifest\":\"h.p.s\",\"x\":1}"),
            None
        );
        assert_eq!(
            parse_manifest_line(Format::Csv, "#manifest,h.p.s"),
            Some("h.p.s".into())
        );
    }

    #[test]
    fn csv_row_quotes_and_neutralises_its_cells() {
        let after = json!({"k": "v"});
        let e = entry(Some(&after), Some("-r"));
        let mut out = Vec::new();
        write_csv_row(&mut out, &e, &"a".repeat(64), &"b".repeat(64));
        let canonical = e.canonical_json().replace('"', "\"\"");
        let expected = format!(
            "42,2023-11-14T22:13:20.000001Z,\"ana\"\"quote@example.com\",'=cmd|' /C calc'!A0,\
             0190a4c2-5d1e-7a3b-9c4d-2e1f0a9b8c7d,dataset,\"line\nbreak, comma\",,\"{{\"\"k\"\":\"\"v\"\"}}\",'-r,\
             {},{},\"{canonical}\"\r\n",
            "a".repeat(64),
            "b".repeat(64)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(csv_header_line(), format!("{CSV_HEADER}\r\n"));
        assert_eq!(csv_manifest_line("h.p.s"), "#manifest,h.p.s\r\n");
    }

    #[test]
    fn csv_rows_round_trip_through_the_reader() {
        let after = json!({"k": "v,\"w\"\r\n"});
        let e = entry(Some(&after), Some("-r"));
        let mut out = Vec::new();
        write_csv_row(&mut out, &e, &"a".repeat(64), &"b".repeat(64));
        out.extend_from_slice(b"next,row\r\n");
        let mut reader = std::io::Cursor::new(out.clone());
        let (raw, cells) = read_csv_record(&mut reader).unwrap().unwrap();
        assert_eq!(cells.len(), CSV_COLUMNS);
        assert_eq!(raw.len(), out.len() - b"next,row\r\n".len());
        let doc: Value = serde_json::from_str(&cells[12]).unwrap();
        assert_eq!(doc, e.to_value());
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

    #[test]
    fn format_names() {
        assert_eq!(Format::parse("csv").unwrap(), Format::Csv);
        assert_eq!(Format::parse("ndjson").unwrap(), Format::Jsonl);
        let err = Format::parse("xml").unwrap_err().to_string();
        assert_eq!(err, "format must be `jsonl` or `csv`, not `xml`");
    }
}
