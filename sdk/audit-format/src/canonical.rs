//! Canonical JSON: object keys sorted (by their UTF-8 bytes) at every level, no whitespace,
//! strings and numbers as serde_json writes them. Every document that is hashed or signed
//! (audit entries, artifact manifests, compliance reports) is written through here, so "the
//! same document" always means the same bytes.
//!
//! The one mechanism is [`Canonical`], a view of a JSON value whose serialisation sorts object
//! keys, fed to serde_json's compact writer. Types with fixed fields (an [`crate::Entry`]) get
//! the same bytes by declaring their fields in key order and writing their JSON values through
//! `Canonical`; their tests compare against `to_string` of the equivalent value.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A JSON value that serialises canonically. serde_json's own map is ordered by key unless some
/// crate in the build turns on `preserve_order`; either way the keys come out sorted.
#[derive(Debug, Clone, Copy)]
pub struct Canonical<'a>(pub &'a Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                if map.keys().is_sorted() {
                    for (key, value) in map {
                        out.serialize_entry(key, &Canonical(value))?;
                    }
                } else {
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_unstable_by_key(|(key, _)| *key);
                    for (key, value) in entries {
                        out.serialize_entry(key, &Canonical(value))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(Canonical)),
            scalar => scalar.serialize(serializer),
        }
    }
}

/// Appends the canonical JSON of `value` to `out`.
pub fn write(out: &mut Vec<u8>, value: &Value) {
    serde_json::to_writer(out, &Canonical(value)).expect("writing JSON to a Vec cannot fail");
}

/// The canonical JSON of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// SHA-256 (hex) of the canonical JSON of `value`: the digest of an artifact manifest or of a
/// compliance report.
pub fn sha256_hex(value: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    write(&mut out, value);
    hex::encode(Sha256::digest(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_level_without_whitespace() {
        let v = json!({"b": [1, {"z": null, "a": "ü\u{1}\"\\"}], "a": -0.0, "c": 1e300, "B": true});
        assert_eq!(
            to_string(&v),
            r#"{"B":true,"a":-0.0,"b":[1,{"a":"ü\u0001\"\\","z":null}],"c":1e+300}"#
        );
        assert_eq!(to_string(&json!("x")), r#""x""#);
        assert_eq!(to_string(&json!([])), "[]");
    }

    #[test]
    fn an_unsorted_map_is_sorted() {
        // Whatever map type serde_json was built with: a map given out of order comes out sorted.
        let mut map = serde_json::Map::new();
        map.insert("size".into(), json!(3));
        map.insert("path".into(), json!("a"));
        map.insert("sha256".into(), json!({"y": 1, "x": 2}));
        assert_eq!(
            to_string(&Value::Object(map)),
            r#"{"path":"a","sha256":{"x":2,"y":1},"size":3}"#
        );
    }

    #[test]
    fn digest_is_of_the_canonical_text() {
        let v = json!([{"size": 1, "path": "p", "sha256": "00"}]);
        assert_eq!(
            sha256_hex(&v),
            hex::encode(Sha256::digest(br#"[{"path":"p","sha256":"00","size":1}]"#))
        );
    }
}
