//! The audit key: Ed25519, signing compact JWS (`alg: EdDSA`, through jsonwebtoken) with a
//! `kid` header, the first 16 hex digits of sha256 of the raw public key.
//!
//! [`PublicKey`] is what verifiers hold: read from SPKI PEM (as OpenSSL prints it) or a JWK
//! (RFC 8037), written in both. [`SigningKey`] is the private half, from PKCS#8 (PEM or DER, as
//! `openssl genpkey -algorithm ed25519` writes it); where it is stored is the server's business.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::claims::ISSUER;
use crate::{Error, Result};

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

    /// Reads a public key given as SPKI PEM or a JWK (JSON).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.starts_with('{') {
            let jwk: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                Error::invalid(format!("the public key is not valid JSON (JWK): {e}"))
            })?;
            if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
                return Err(Error::invalid(
                    "the JWK is not an Ed25519 key (kty OKP, crv Ed25519)",
                ));
            }
            let x = jwk["x"]
                .as_str()
                .ok_or_else(|| Error::invalid("the JWK has no `x`"))?;
            let raw = URL_SAFE_NO_PAD
                .decode(x.trim_end_matches('='))
                .map_err(|e| Error::invalid(format!("the JWK's `x` is not base64url: {e}")))?;
            return Self::from_slice(&raw);
        }
        let der = pem_body(text, "PUBLIC KEY")?;
        if der.len() != SPKI_PREFIX.len() + 32 || der[..SPKI_PREFIX.len()] != SPKI_PREFIX {
            return Err(Error::invalid("the PEM public key is not an Ed25519 key"));
        }
        Self::from_slice(&der[SPKI_PREFIX.len()..])
    }

    /// Reads a file holding a PEM or JWK public key.
    pub fn read_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the public key {}", path.display()), e))?;
        Self::parse(&text).map_err(|e| {
            Error::invalid(format!(
                "{} is not an Ed25519 public key (PEM or JWK): {e}",
                path.display()
            ))
        })
    }

    fn from_slice(raw: &[u8]) -> Result<Self> {
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::invalid("an Ed25519 public key has 32 bytes"))?;
        Ok(Self::from_raw(raw))
    }

    /// Checks an EdDSA JWS made by this key and returns its claims. `typ` must be the purpose
    /// the token was signed for, so that a checkpoint cannot pass as an export manifest. The
    /// error is the sentence a verdict shows.
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
        validation.set_issuer(&[ISSUER]);
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

/// The claims of a JWS, read without checking its signature (a verdict judges the signature
/// separately, so that it can report both a bad signature and what the claims say).
pub fn unverified_claims<T: DeserializeOwned>(jws: &str) -> Option<T> {
    let payload = jws.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The private key, with its public half.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public.key_id())
    }
}

impl SigningKey {
    /// An Ed25519 key in PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| Error::invalid(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let raw: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| Error::invalid("Ed25519 public keys have 32 bytes"))?;
        Ok(SigningKey {
            encoding: EncodingKey::from_ed_der(der),
            public: PublicKey::from_raw(raw),
        })
    }

    /// An Ed25519 key in PKCS#8, PEM (`-----BEGIN PRIVATE KEY-----`) or DER.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self> {
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            Self::from_pkcs8_der(&pem_body(&String::from_utf8_lossy(bytes), "PRIVATE KEY")?)
        } else {
            Self::from_pkcs8_der(bytes)
        }
    }

    /// A fresh key, and its PKCS#8 DER to store.
    pub fn generate() -> Result<(Self, Vec<u8>)> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| Error::Signing("generating an Ed25519 key failed".into()))?;
        let der = pkcs8.as_ref().to_vec();
        Ok((Self::from_pkcs8_der(&der)?, der))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `claims` (which must carry `iss` and `typ`) as a compact JWS.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.public.key_id());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| Error::Signing(e.to_string()))
    }
}

/// The DER bytes inside `-----BEGIN {label}-----` … `-----END {label}-----`.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| Error::invalid(format!("expected a PEM block `{begin}`")))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| Error::invalid(format!("the PEM block has no `{end}`")))?
        + start;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| Error::invalid(format!("the PEM block is not base64: {e}")))
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
        let (key, _) = SigningKey::generate().unwrap();
        let claims = Claims {
            iss: ISSUER.into(),
            typ: "t".into(),
            n: 7,
        };
        let jws = key.sign(&claims).unwrap();
        let from_pem = PublicKey::parse(&key.public().to_pem()).unwrap();
        let from_jwk = PublicKey::parse(&key.public().to_jwk().to_string()).unwrap();
        assert_eq!(from_pem.verify::<Claims>(&jws, "t").unwrap(), claims);
        assert_eq!(from_jwk.verify::<Claims>(&jws, "t").unwrap(), claims);
        assert_eq!(unverified_claims::<Claims>(&jws).unwrap(), claims);
        assert!(from_pem
            .verify::<Claims>(&jws, "other")
            .unwrap_err()
            .contains("not a other"));
        let (other, _) = SigningKey::generate().unwrap();
        let err = other.public().verify::<Claims>(&jws, "t").unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        assert!(
            err.contains(&key.public().key_id()),
            "names the signer's kid: {err}"
        );
    }

    #[test]
    fn another_issuer_is_refused() {
        let (key, _) = SigningKey::generate().unwrap();
        let jws = key
            .sign(&Claims {
                iss: "someone-else".into(),
                typ: "t".into(),
                n: 1,
            })
            .unwrap();
        let err = key.public().verify::<Claims>(&jws, "t").unwrap_err();
        assert!(err.contains("invalid"), "{err}");
    }

    #[test]
    fn pkcs8_pem_and_der_and_refusals() {
        let (key, der) = SigningKey::generate().unwrap();
        let pem = format!(
            "\n-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(&der)
        );
        let again = SigningKey::from_pkcs8(pem.as_bytes()).unwrap();
        assert_eq!(again.public().key_id(), key.public().key_id());
        assert_eq!(
            SigningKey::from_pkcs8(&der).unwrap().public().key_id(),
            key.public().key_id()
        );
        assert!(SigningKey::from_pkcs8(b"nonsense").is_err());
        assert!(
            PublicKey::parse("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
        assert!(PublicKey::parse(r#"{"kty":"RSA"}"#).is_err());
    }

    #[test]
    fn the_pem_is_what_openssl_prints() {
        // RFC 8032 test vector 1's public key, and OpenSSL's SPKI PEM of it.
        let raw: [u8; 32] =
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap()
                .try_into()
                .unwrap();
        let key = PublicKey::from_raw(raw);
        assert_eq!(
            key.to_pem(),
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n"
        );
        assert_eq!(
            key.to_jwk()["x"],
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
    }
}
