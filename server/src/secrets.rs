//! The server's bearer secrets (access and refresh tokens, session cookies, sign-in links,
//! device codes, OIDC state): 256 random bits, base64url, stored only as SHA-256. With that much
//! entropy a fast hash is as strong as a slow one, and each check stays one indexed lookup.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A fresh secret: 256 random bits, base64url without padding (43 characters).
pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What is stored of a secret.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}
