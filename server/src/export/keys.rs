//! The server's Ed25519 audit key: it signs export manifests, checkpoints and compliance reports
//! (JWS compact, `alg: EdDSA`, through jsonwebtoken), and its public half is what auditors verify
//! with, offline.
//!
//! The private key is PKCS#8 (as `openssl genpkey -algorithm ed25519` writes it, PEM or DER).
//! Unless configured (`CUSTODY_AUDIT_SIGNING_KEY`), it lives in `<data-dir>/audit-signing.pk8`,
//! created on first use. Replicas sharing a database must share the key, or each replica signs
//! with its own and verifiers would need every public key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// File name of the generated key inside the data directory.
pub const KEY_FILE: &str = "audit-signing.pk8";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A public key as verifiers hold it.
#[derive(Clone)]
pub struct PublicKey {
    raw: [u8; 32],
    decoding: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    pub fn from_raw(raw: [u8; 32]) -> Self {
        PublicKey {
            raw,
            decoding: DecodingKey::from_ed_der(&raw),
        }
    }

    /// A short, stable name of the key: the first 16 hex digits of sha256 of the raw key. It is
    /// written in every JWS header (`kid`) so a verifier holding several keys can tell which.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.raw))[..16].to_owned()
    }

    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), as OpenSSL prints it.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }

    /// The key as a JWK (RFC 8037): `{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"alg":"EdDSA","use":"sig"}`.
    pub fn to_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.raw),
            "kid": self.key_id(),
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// Reads a public key given as SPKI PEM, a JWK (JSON), or a file holding either.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.starts_with('{') {
            let jwk: serde_json::Value =
                serde_json::from_str(text).context("the public key is not valid JSON (JWK)")?;
            anyhow::ensure!(
                jwk["kty"] == "OKP" && jwk["crv"] == "Ed25519",
                "the JWK is not an Ed25519 key (kty OKP, crv Ed25519)"
            );
            let x = jwk["x"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the JWK has no `x`"))?;
            let raw = URL_SAFE_NO_PAD
                .decode(x.trim_end_matches('='))
                .context("the JWK's `x` is not base64url")?;
            return Self::from_slice(&raw);
        }
        let der = pem_body(text, "PUBLIC KEY")?;
        anyhow::ensure!(
            der.len() == SPKI_PREFIX.len() + 32 && der[..SPKI_PREFIX.len()] == SPKI_PREFIX,
            "the PEM public key is not an Ed25519 key"
        );
        Self::from_slice(&der[SPKI_PREFIX.len()..])
    }

    pub fn read_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the public key {}", path.display()))?;
        Self::parse(&text).with_context(|| {
            format!(
                "{} is not an Ed25519 public key (PEM or JWK)",
                path.display()
            )
        })
    }

    fn from_slice(raw: &[u8]) -> anyhow::Result<Self> {
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| anyhow::anyhow!("an Ed25519 public key has 32 bytes"))?;
        Ok(Self::from_raw(raw))
    }

    /// Checks an EdDSA JWS made by this key and returns its claims. `typ` must be the purpose
    /// the token was signed for, so that a checkpoint cannot pass as an export manifest.
    pub fn verify<T: DeserializeOwned>(&self, jws: &str, typ: &str) -> Result<T, String> {
        let header = jsonwebtoken::decode_header(jws)
            .map_err(|e| format!("the signature is not a JWS: {e}"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(format!("the signature uses {:?}, not EdDSA", header.alg));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Manifests and checkpoints are statements about the past: they do not expire.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[crate::auth::ISSUER]);
        let data = jsonwebtoken::decode::<serde_json::Value>(jws, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => format!(
                    "the signature does not verify with public key {}{}",
                    self.key_id(),
                    match header.kid {
                        Some(kid) if kid != self.key_id() => format!(" (it names key {kid})"),
                        _ => String::new(),
                    }
                ),
                _ => format!("the signature is invalid: {e}"),
            })?;
        if data.claims["typ"] != typ {
            return Err(format!(
                "the signed document is a {}, not a {typ}",
                data.claims["typ"]
            ));
        }
        serde_json::from_value(data.claims)
            .map_err(|e| format!("the signed claims are malformed: {e}"))
    }
}

/// The signing key (private), with its public half.
#[derive(Clone)]
pub struct AuditKeys {
    encoding: EncodingKey,
    pub public: PublicKey,
}

impl AuditKeys {
    /// Loads the configured key (a file path, or PEM text), or `<data-dir>/audit-signing.pk8`,
    /// generating the latter on first use.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        match configured {
            Some(value) if value.trim_start().starts_with("-----BEGIN") => {
                Self::from_pkcs8(&pem_body(value, "PRIVATE KEY")?)
                    .context("CUSTODY_AUDIT_SIGNING_KEY")
            }
            Some(path) => Self::read_file(Path::new(path)).context("CUSTODY_AUDIT_SIGNING_KEY"),
            None => {
                let path = data_dir.join(KEY_FILE);
                if !path.exists() {
                    generate_into(&path)?;
                }
                Self::read_file(&path)
            }
        }
    }

    /// A key file in PKCS#8, PEM or DER.
    pub fn read_file(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the audit signing key {}", path.display()))?;
        let der = if bytes.starts_with(b"-----BEGIN") {
            pem_body(&String::from_utf8_lossy(&bytes), "PRIVATE KEY")?
        } else {
            bytes
        };
        Self::from_pkcs8(&der)
            .with_context(|| format!("{} is not an Ed25519 private key in PKCS#8", path.display()))
    }

    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {e}"))?;
        let raw: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .context("Ed25519 public keys have 32 bytes")?;
        Ok(AuditKeys {
            encoding: EncodingKey::from_ed_der(der),
            public: PublicKey::from_raw(raw),
        })
    }

    /// A fresh key (tests, key rotation).
    pub fn generate() -> anyhow::Result<(Self, Vec<u8>)> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("generating an Ed25519 key failed"))?;
        let der = pkcs8.as_ref().to_vec();
        Ok((Self::from_pkcs8(&der)?, der))
    }

    /// Signs `claims` (which must carry `iss` and `typ`) as a compact JWS.
    pub fn sign<T: Serialize>(&self, claims: &T) -> crate::error::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.public.key_id());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(crate::error::Error::internal)
    }
}

/// Writes a new PKCS#8 key to `path` (mode 0600) without ever replacing one: two processes
/// starting at once on a fresh data dir must end up with the same key.
fn generate_into(path: &Path) -> anyhow::Result<()> {
    let (_, der) = AuditKeys::generate()?;
    let tmp: PathBuf = path.with_extension(format!("tmp-{}", std::process::id()));
    crate::auth::write_private_file(&tmp, &der)?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp).ok();
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated the audit signing key");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("writing the audit signing key {}", path.display()))
        }
    }
}

/// The DER bytes inside `-----BEGIN {label}-----` … `-----END {label}-----`.
fn pem_body(text: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| anyhow::anyhow!("expected a PEM block `{begin}`"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| anyhow::anyhow!("the PEM block has no `{end}`"))?
        + start;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).context("the PEM block is not base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Claims {
        iss: String,
        typ: String,
        n: i64,
    }

    #[test]
    fn sign_and_verify_with_pem_and_jwk() {
        let (keys, _) = AuditKeys::generate().unwrap();
        let claims = Claims {
            iss: "custody".into(),
            typ: "t".into(),
            n: 7,
        };
        let jws = keys.sign(&claims).unwrap();
        let from_pem = PublicKey::parse(&keys.public.to_pem()).unwrap();
        let from_jwk = PublicKey::parse(&keys.public.to_jwk().to_string()).unwrap();
        assert_eq!(from_pem.verify::<Claims>(&jws, "t").unwrap(), claims);
        assert_eq!(from_jwk.verify::<Claims>(&jws, "t").unwrap(), claims);
        assert!(from_pem
            .verify::<Claims>(&jws, "other")
            .unwrap_err()
            .contains("not a other"));
        let (other, _) = AuditKeys::generate().unwrap();
        let err = other.public.verify::<Claims>(&jws, "t").unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn pkcs8_pem_round_trip_and_refusals() {
        let (keys, der) = AuditKeys::generate().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(&der)
        );
        let again = AuditKeys::from_pkcs8(&pem_body(&pem, "PRIVATE KEY").unwrap()).unwrap();
        assert_eq!(again.public.key_id(), keys.public.key_id());
        assert!(AuditKeys::from_pkcs8(b"nonsense").is_err());
        assert!(
            PublicKey::parse("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
        assert!(PublicKey::parse(r#"{"kty":"RSA"}"#).is_err());
    }

    #[test]
    fn generated_key_file_is_kept() {
        let dir = std::env::temp_dir().join(format!("custody-keys-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = AuditKeys::load(None, &dir).unwrap();
        let b = AuditKeys::load(None, &dir).unwrap();
        assert_eq!(a.public.key_id(), b.public.key_id());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
