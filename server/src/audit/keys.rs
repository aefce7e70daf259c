//! Where the server's audit key lives. The key signs export manifests, checkpoints and
//! compliance reports; its formats (PKCS#8, PEM, JWK, JWS) are `custody_audit_format::keys`.
//!
//! Unless configured (`CUSTODY_AUDIT_SIGNING_KEY`: a path to, or the PEM of, an Ed25519 PKCS#8
//! key), it lives in `<data-dir>/audit-signing.pk8`, created on first use. Replicas sharing a
//! database must share the key, or each replica signs with its own and verifiers would need
//! every public key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use custody_audit_format::{PublicKey, SigningKey};
use serde::Serialize;

/// File name of the generated key inside the data directory.
pub const KEY_FILE: &str = "audit-signing.pk8";

/// The signing key, with its public half. (`Debug` shows the key id only.)
#[derive(Clone, Debug)]
pub struct AuditKeys {
    signing: SigningKey,
    pub public: PublicKey,
}

impl AuditKeys {
    /// Loads the configured key (a file path, or PEM text), or `<data-dir>/audit-signing.pk8`,
    /// generating the latter on first use.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        match configured {
            Some(value) if value.trim_start().starts_with("-----BEGIN") => {
                Self::from_pkcs8(value.as_bytes()).context("CUSTODY_AUDIT_SIGNING_KEY")
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

    /// The public half of the configured key or of `<data-dir>/audit-signing.pk8`, for
    /// verifying offline: never creates a key (nor the data directory).
    pub fn local_public_key(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> anyhow::Result<PublicKey> {
        let path = data_dir.join(KEY_FILE);
        if configured.is_none() && !path.exists() {
            anyhow::bail!(
                "no public key to verify with: pass --public-key FILE (from GET /api/audit/public-key or \
                 `custody-server audit public-key` on the server), or run where {} exists",
                path.display()
            );
        }
        Ok(Self::load(configured, data_dir)?.public)
    }

    /// A key file in PKCS#8, PEM or DER.
    pub fn read_file(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the audit signing key {}", path.display()))?;
        Self::from_pkcs8(&bytes)
            .with_context(|| format!("{} is not an Ed25519 private key in PKCS#8", path.display()))
    }

    /// A key in PKCS#8, PEM or DER.
    pub fn from_pkcs8(bytes: &[u8]) -> anyhow::Result<Self> {
        Ok(SigningKey::from_pkcs8(bytes)?.into())
    }

    /// A fresh key (tests, key rotation), and its PKCS#8 DER.
    pub fn generate() -> anyhow::Result<(Self, Vec<u8>)> {
        let (signing, der) = SigningKey::generate()?;
        Ok((signing.into(), der))
    }

    /// Signs `claims` (which must carry `iss` and `typ`) as a compact JWS.
    pub fn sign<T: Serialize>(&self, claims: &T) -> crate::error::Result<String> {
        self.signing
            .sign(claims)
            .map_err(crate::error::Error::internal)
    }
}

impl From<SigningKey> for AuditKeys {
    fn from(signing: SigningKey) -> Self {
        AuditKeys {
            public: signing.public().clone(),
            signing,
        }
    }
}

/// Writes a new PKCS#8 key to `path` (mode 0600) without ever replacing one: two processes
/// starting at once on a fresh data dir must end up with the same key.
fn generate_into(path: &Path) -> anyhow::Result<()> {
    let (_, der) = SigningKey::generate()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_file_is_kept_and_found_offline() {
        let dir = std::env::temp_dir().join(format!("custody-keys-{:016x}", rand::random::<u64>()));
        let err = AuditKeys::local_public_key(None, &dir).unwrap_err();
        assert!(err.to_string().contains("--public-key"), "{err}");
        assert!(!dir.exists(), "looking for the local key creates nothing");
        std::fs::create_dir_all(&dir).unwrap();
        let a = AuditKeys::load(None, &dir).unwrap();
        let b = AuditKeys::load(None, &dir).unwrap();
        assert_eq!(a.public.key_id(), b.public.key_id());
        assert_eq!(
            AuditKeys::local_public_key(None, &dir).unwrap().key_id(),
            a.public.key_id()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_configured_pem_or_path_is_used() {
        let dir = std::env::temp_dir().join(format!("custody-keys-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, der) = AuditKeys::generate().unwrap();
        let path = dir.join("configured.der");
        std::fs::write(&path, &der).unwrap();
        let loaded = AuditKeys::load(path.to_str(), &dir).unwrap();
        assert_eq!(loaded.public.key_id(), key.public.key_id());
        assert!(
            !dir.join(KEY_FILE).exists(),
            "a configured key generates none"
        );
        let err = AuditKeys::load(Some("/nonexistent/key.pem"), &dir).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("CUSTODY_AUDIT_SIGNING_KEY"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
