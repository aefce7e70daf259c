//! Helpers for the audit export tests: fetching exports over HTTP, running the real
//! `custody-server audit verify` offline, building a large audit log through the API, tampering
//! with export files, and an RFC 4180 reader written independently of the server's.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};

use crate::server::{server_bin, Server};

/// `GET path` with a bearer token ("" for none): status, content type and body.
pub async fn get(server: &Server, token: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut req = server.http.get(server.url(path));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("reading GET {path}: {e}"))
        .to_vec();
    (status, content_type, body)
}

/// An export that must succeed (200).
pub async fn export(server: &Server, token: &str, query: &str) -> Vec<u8> {
    let path = format!("/api/audit/export?{query}");
    let (status, _, body) = get(server, token, &path).await;
    assert_eq!(
        status,
        200,
        "GET {path} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// The `error.code` of a refused request, checking the status too.
pub async fn refused(server: &Server, token: &str, path: &str, status: u16) -> String {
    let (got, _, body) = get(server, token, path).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        got, status,
        "GET {path}: expected {status}, got {got}: {text}"
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("GET {path}: error body is not JSON: {text}"));
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty(),
        "GET {path}: the error has no message: {text}"
    );
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// The outcome of one `custody-server audit verify` run.
#[derive(Debug)]
pub struct Verified {
    pub code: Option<i32>,
    pub output: String,
}

impl Verified {
    pub fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "verification failed:\n{}", self.output);
        assert!(self.output.starts_with("OK "), "{}", self.output);
    }

    /// Exit 1 and a first line naming `kind` (and `seq`, when given).
    pub fn assert_failed(&self, kind: &str, seq: Option<i64>) {
        assert_eq!(
            self.code,
            Some(1),
            "verification should have failed with {kind}:\n{}",
            self.output
        );
        let first = self.output.lines().next().unwrap_or_default();
        assert!(first.starts_with("FAILED "), "{}", self.output);
        assert!(
            first.contains(kind),
            "the first problem should be `{kind}`:\n{}",
            self.output
        );
        if let Some(seq) = seq {
            let named = first.contains(&format!("at seq {seq} ("))
                || first.contains(&format!("at seq {seq}:"));
            assert!(
                named,
                "the first problem should name seq {seq}:\n{}",
                self.output
            );
        }
    }
}

/// Runs the real binary's `audit verify FILE --public-key KEY [extra…]` with no database and a
/// data directory that does not exist (and must still not exist afterwards): offline.
pub async fn verify(file: &Path, public_key: &Path, extra: &[&str]) -> Verified {
    let bin = tokio::task::spawn_blocking(server_bin).await.unwrap();
    let nowhere = std::env::temp_dir().join(format!("custody-no-data-{}", uuid::Uuid::now_v7()));
    let out = tokio::process::Command::new(&bin)
        .arg("audit")
        .arg("verify")
        .arg(file)
        .arg("--public-key")
        .arg(public_key)
        .args(extra)
        .arg("--data-dir")
        .arg(&nowhere)
        .env_remove("DATABASE_URL")
        .env_remove("CUSTODY_DATA_DIR")
        .env_remove("CUSTODY_AUDIT_SIGNING_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running custody-server audit verify");
    assert!(
        !nowhere.exists(),
        "`audit verify` created a data directory: it must work offline"
    );
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Verified {
        code: out.status.code(),
        output,
    }
}

/// Writes `bytes` to `dir/name` and answers the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The public key from `GET /api/audit/public-key` (PEM or JWK), saved to a file.
pub async fn save_public_key(server: &Server, dir: &Path, format: &str) -> PathBuf {
    let (status, _, body) = get(
        server,
        "",
        &format!("/api/audit/public-key?format={format}"),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    write(dir, &format!("audit-key.{format}"), &body)
}

/// The head of the chain (seq) read from the table.
pub async fn head_seq(sql: &tokio_postgres::Client) -> i64 {
    sql.query_one("SELECT seq FROM audit_head", &[])
        .await
        .unwrap()
        .get(0)
}

/// Grows the audit log by `n` entries through the API: `createDataset` mutations, 100 per
/// request as aliases (each one its own transaction and audit entry), four requests at a time.
/// Dataset names are `{prefix}-{i}`.
pub async fn create_datasets(server: &Server, token: &str, project: &str, prefix: &str, n: usize) {
    let batches: Vec<(usize, usize)> = (0..n)
        .step_by(100)
        .map(|start| (start, (start + 100).min(n)))
        .collect();
    let queue = std::sync::Mutex::new(batches.into_iter());
    let worker = || async {
        loop {
            let next = queue.lock().unwrap().next();
            let Some((start, end)) = next else { return };
            let fields: String = (start..end)
                .map(|i| {
                    format!("d{i}: createDataset(project: $p, name: \"{prefix}-{i}\") {{ id }}\n")
                })
                .collect();
            let q = format!("mutation($p: String!) {{ {fields} }}");
            let d = server.gql_ok(token, &q, json!({ "p": project })).await;
            assert_eq!(
                d.as_object().map(|o| o.len()),
                Some(end - start),
                "every alias answers"
            );
        }
    };
    tokio::join!(worker(), worker(), worker(), worker());
}

/// The lines of a JSON Lines export, each with its newline.
pub fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// The index of the line whose `seq` is `seq`.
pub fn line_of_seq(lines: &[Vec<u8>], seq: i64) -> usize {
    lines
        .iter()
        .position(|l| {
            serde_json::from_slice::<Value>(l)
                .ok()
                .and_then(|v| v["seq"].as_i64())
                == Some(seq)
        })
        .unwrap_or_else(|| panic!("no line with seq {seq}"))
}

/// The export's manifest claims (from its last line), decoded without checking the signature.
pub fn manifest_claims(manifest_jws: &str) -> Value {
    use base64::Engine as _;
    let payload = manifest_jws
        .split('.')
        .nth(1)
        .expect("a JWS has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The JWS of a JSON Lines export's last line.
pub fn jsonl_manifest(bytes: &[u8]) -> String {
    let all = lines(bytes);
    let last: Value = serde_json::from_slice(all.last().expect("an export has lines"))
        .expect("the last line is JSON");
    last["manifest"]
        .as_str()
        .expect("the last line is the manifest")
        .to_string()
}

/// Re-signs a JWS's claims, unchanged, with another Ed25519 key (PKCS#8 DER).
pub fn resign(jws: &str, other_pkcs8: &[u8]) -> String {
    let claims = manifest_claims(jws);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("attacker".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(other_pkcs8),
    )
    .expect("signing")
}

/// RFC 4180 records (quoted cells may hold commas, `""` and line breaks).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                c => cell.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => record.push(std::mem::take(&mut cell)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            c => cell.push(c),
        }
    }
    if !cell.is_empty() || !record.is_empty() {
        record.push(cell);
        records.push(record);
    }
    records
}
