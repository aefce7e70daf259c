//! Reading and forging bearer tokens (HS256 JWTs) for the authentication tests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

fn part(token: &str, i: usize) -> Value {
    let p = token
        .split('.')
        .nth(i)
        .unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("JWT part {i} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT part {i} is not JSON: {e}"))
}

/// The decoded header of a JWT.
pub fn header(token: &str) -> Value {
    part(token, 0)
}

/// The decoded claims of a JWT (no signature check).
pub fn claims(token: &str) -> Value {
    part(token, 1)
}

/// The `jti` claim.
pub fn jti(token: &str) -> String {
    claims(token)["jti"]
        .as_str()
        .unwrap_or_else(|| panic!("token has no string jti: {}", claims(token)))
        .to_string()
}

/// Signs `claims` with `key` (HMAC secret bytes) and algorithm `alg`.
pub fn sign(alg: Algorithm, claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key))
        .expect("encoding a JWT")
}

pub fn sign_hs256(claims: &Value, key: &[u8]) -> String {
    sign(Algorithm::HS256, claims, key)
}

/// An unsigned token: header `{"alg":"none","typ":"JWT"}`, the claims, and an empty signature.
pub fn alg_none(claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{h}.{c}.")
}

/// The server's HMAC key: the contents of `<data-dir>/jwt.key` as written (surrounding whitespace
/// trimmed).
pub fn server_key(data_dir: &std::path::Path) -> Vec<u8> {
    let p = data_dir.join("jwt.key");
    let raw = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    String::from_utf8_lossy(&raw).trim().as_bytes().to_vec()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
