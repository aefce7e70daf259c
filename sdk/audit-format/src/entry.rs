//! The audit entry document and the hash chain.
//!
//! Each entry's `hash = sha256(prev_hash || canonical_json(entry))`, where `prev_hash` is the
//! previous entry's hash as 64 lowercase hex characters ([`GENESIS_HASH`] before the first entry)
//! and the canonical JSON is the document `{action, actor, after, at, before, project_id,
//! request_id, seq, subject_id, subject_kind}` with keys sorted and no whitespace, `at` in
//! RFC 3339 with microseconds, UTC, `Z`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::canonical::Canonical;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry's document, borrowed from wherever the entry lives (a database row).
///
/// Serialising it with serde_json gives its canonical JSON: the fields are declared in key
/// order, `after`/`before` go through [`Canonical`], `at` and `project_id` are written in their
/// fixed forms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Entry<'a> {
    pub action: &'a str,
    pub actor: &'a str,
    #[serde(serialize_with = "canonical_or_null")]
    pub after: Option<&'a Value>,
    #[serde(serialize_with = "rfc3339_micros")]
    pub at: DateTime<Utc>,
    #[serde(serialize_with = "canonical_or_null")]
    pub before: Option<&'a Value>,
    /// Written lowercase and hyphenated.
    pub project_id: Option<Uuid>,
    pub request_id: Option<&'a str>,
    pub seq: i64,
    pub subject_id: &'a str,
    pub subject_kind: &'a str,
}

impl Entry<'_> {
    /// Appends the canonical JSON of the document: the bytes the hash covers.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("writing JSON to a Vec cannot fail");
    }

    pub fn canonical_json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        self.write_canonical(&mut out);
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// The document as a JSON value (GraphQL's `entry`, compliance reports, CSV cells).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an entry is valid JSON")
    }

    /// This entry's hash, chained to the previous entry's.
    pub fn chain_hash(&self, prev_hash: &str) -> String {
        let mut out = Vec::with_capacity(512);
        self.write_canonical(&mut out);
        chain_hash(prev_hash, &out)
    }
}

/// `sha256(prev_hash || canonical_entry)` as lowercase hex.
pub fn chain_hash(prev_hash: &str, canonical_entry: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical_entry);
    hex::encode(hasher.finalize())
}

/// `at` as the chain has always written it: RFC 3339, microseconds, UTC as `Z`.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn rfc3339_micros<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*at))
}

fn canonical_or_null<S: Serializer>(
    value: &Option<&Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => Canonical(v).serialize(serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap()
    }

    fn entry<'a>(after: Option<&'a Value>, project_id: Option<Uuid>) -> Entry<'a> {
        Entry {
            action: "=cmd|' /C calc'!A0",
            actor: "ana\"quote@example.com",
            after,
            at: at(),
            before: None,
            project_id,
            request_id: Some("\u{2028}"),
            seq: 42,
            subject_id: "line\nbreak, comma",
            subject_kind: "dataset",
        }
    }

    #[test]
    fn the_document_is_canonical() {
        let after = json!({"name": "demo", "b": 1.5});
        let e = Entry {
            action: "project.create",
            actor: "a@example.com",
            after: Some(&after),
            at: at(),
            before: None,
            project_id: None,
            request_id: Some("r1"),
            seq: 1,
            subject_id: "x",
            subject_kind: "project",
        };
        assert_eq!(
            e.canonical_json(),
            r#"{"action":"project.create","actor":"a@example.com","after":{"b":1.5,"name":"demo"},"at":"2023-11-14T22:13:20.123456Z","before":null,"project_id":null,"request_id":"r1","seq":1,"subject_id":"x","subject_kind":"project"}"#
        );
    }

    #[test]
    fn writing_the_entry_equals_writing_its_value_canonically() {
        let values = [
            json!({"z": [1, 2.5, {"y": null, "b": "ü\u{1}"}], "a": -0.0, "m": 1e300}),
            json!("just a string"),
        ];
        let project = Uuid::from_u128(0x0190a4c2_5d1e_7a3b_9c4d_2e1f0a9b8c7d);
        for e in [
            entry(Some(&values[0]), Some(project)),
            entry(None, None),
            entry(Some(&values[1]), Some(project)),
        ] {
            let direct = e.canonical_json();
            assert_eq!(direct, canonical::to_string(&e.to_value()));
            assert_eq!(
                e.chain_hash(GENESIS_HASH),
                hex::encode(Sha256::digest(format!("{GENESIS_HASH}{direct}")))
            );
        }
        assert!(entry(None, Some(project))
            .canonical_json()
            .contains(r#""project_id":"0190a4c2-5d1e-7a3b-9c4d-2e1f0a9b8c7d""#));
    }

    #[test]
    fn hash_depends_on_previous_hash_and_content() {
        let first = entry(None, None);
        let h1 = first.chain_hash(GENESIS_HASH);
        let altered = Entry {
            actor: "b@example.com",
            ..first
        };
        assert_ne!(h1, altered.chain_hash(GENESIS_HASH));
        assert_ne!(h1, first.chain_hash(&"1".repeat(64)));
        assert_eq!(h1.len(), 64);
    }
}
