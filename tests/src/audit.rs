//! Reading the audit log through the API and re-computing its hash chain independently.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::server::Server;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub const AUDIT_FIELDS: &str =
    "seq at actor action projectId subjectKind subjectId before after requestId prevHash hash entry";

/// Every entry of `auditLog` (with the optional filters given as GraphQL arguments, e.g.
/// `project: "p"`), fetched 100 at a time through the Relay cursor, in the order served.
pub async fn fetch_all(server: &Server, token: &str, filter_args: &str) -> Vec<Value> {
    let sep = if filter_args.is_empty() { "" } else { ", " };
    let q = format!(
        "query($after: String) {{ auditLog({filter_args}{sep}first: 100, after: $after) {{
            edges {{ cursor node {{ {AUDIT_FIELDS} }} }}
            pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let mut out = Vec::new();
    let mut after = Value::Null;
    for _page in 0..10_000 {
        let d = server.gql_ok(token, &q, json!({ "after": after })).await;
        let conn = &d["auditLog"];
        let edges = conn["edges"].as_array().expect("auditLog.edges");
        assert!(
            edges.len() <= 100,
            "auditLog served {} edges for first: 100",
            edges.len()
        );
        out.extend(edges.iter().map(|e| e["node"].clone()));
        if !conn["pageInfo"]["hasNextPage"]
            .as_bool()
            .expect("pageInfo.hasNextPage")
        {
            return out;
        }
        assert!(!edges.is_empty(), "hasNextPage is true on an empty page");
        after = conn["pageInfo"]["endCursor"].clone();
        assert!(
            after.is_string(),
            "hasNextPage without an endCursor: {conn}"
        );
    }
    panic!("auditLog pagination did not end");
}

/// JSON with object keys sorted (recursively), no whitespace; strings and numbers as serde_json
/// writes them. Independent of serde_json's `preserve_order` feature.
pub fn canonical_json(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    s
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

/// `hex(sha256(prev_hash_hex_ascii ++ canonical_json(entry)))`
pub fn entry_hash(prev_hash: &str, entry: &Value) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical_json(entry).as_bytes());
    hex::encode(h.finalize())
}

/// Checks a complete, unfiltered log (as from [`fetch_all`] with no filter): seq 1, 2, 3, … without
/// gaps, each `prevHash` the previous `hash` (the first: 64 zeros), each `hash` re-computed from the
/// `entry` document, and the `entry` document agreeing with the entry's own fields.
pub fn verify_chain(entries: &[Value]) -> Result<(), String> {
    let mut prev = GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        let seq = e["seq"]
            .as_i64()
            .or_else(|| e["seq"].as_str().and_then(|s| s.parse().ok()));
        let want_seq = i as i64 + 1;
        if seq != Some(want_seq) {
            return Err(format!(
                "entry #{i}: seq {} where {want_seq} was expected (gap or disorder)",
                e["seq"]
            ));
        }
        check_entry_document(e).map_err(|m| format!("seq {want_seq}: {m}"))?;
        let prev_hash = e["prevHash"].as_str().unwrap_or_default();
        if prev_hash != prev {
            return Err(format!(
                "seq {want_seq}: prevHash {prev_hash} but the previous hash is {prev}"
            ));
        }
        let want = entry_hash(&prev, &e["entry"]);
        let got = e["hash"].as_str().unwrap_or_default();
        if got != want {
            return Err(format!(
                "seq {want_seq}: stored hash {got} but sha256(prevHash || {}) = {want}",
                canonical_json(&e["entry"])
            ));
        }
        prev = want;
    }
    Ok(())
}

/// The `entry` document must carry the entry's fields (it is what the hash covers).
pub fn check_entry_document(e: &Value) -> Result<(), String> {
    let doc = &e["entry"];
    if !doc.is_object() {
        return Err(format!("`entry` is not a JSON object: {doc}"));
    }
    let mut keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let want = [
        "action",
        "actor",
        "after",
        "at",
        "before",
        "project_id",
        "request_id",
        "seq",
        "subject_id",
        "subject_kind",
    ];
    if keys != want {
        return Err(format!("`entry` has keys {keys:?}, expected {want:?}"));
    }
    let same = |a: &Value, b: &Value| {
        a == b || (a.as_i64().is_some() && a.as_i64() == b.as_str().and_then(|s| s.parse().ok()))
    };
    for (field, key) in [
        ("seq", "seq"),
        ("actor", "actor"),
        ("action", "action"),
        ("subjectId", "subject_id"),
        ("subjectKind", "subject_kind"),
        ("projectId", "project_id"),
        ("requestId", "request_id"),
        ("before", "before"),
        ("after", "after"),
    ] {
        if !same(&doc[key], &e[field]) {
            return Err(format!(
                "entry.{key} = {} but {field} = {}",
                doc[key], e[field]
            ));
        }
    }
    Ok(())
}
