//! Content digests of local datasets: a file's SHA-256, and a deterministic digest of a directory.
//!
//! **Directory digest.** Every regular file under the directory (recursively; symbolic links are
//! followed, other special files skipped) is listed with its path relative to the directory
//! (UTF-8, `/` as separator), its SHA-256 and its size. The list is sorted by path (byte order)
//! and written as the canonical JSON array
//! `[{"path":"a/b.csv","sha256":"<64 hex>","size":123},…]` (keys in this order, no whitespace,
//! JSON string escaping); the directory's digest is the SHA-256 of that text. It is the same rule
//! by which the server computes a model version's `manifestSha256`, so a directory uploaded as a
//! run's files under one path and registered as a model version gets the same digest. Renaming,
//! adding, removing or changing any file changes the digest; timestamps and permissions do not.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One file of a directory's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// The digest of a file or directory, and what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalDigest {
    pub sha256: String,
    /// Total bytes (of all files, for a directory).
    pub size: u64,
    pub is_dir: bool,
    /// The files of a directory, sorted by path (empty for a file).
    pub files: Vec<ManifestEntry>,
}

/// SHA-256 (hex) and size of one file.
pub fn file_sha256(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The canonical manifest text of sorted entries (see the module documentation), written by the
/// same canonical-JSON writer as the server's.
pub fn manifest_json(entries: &[ManifestEntry]) -> String {
    let document = serde_json::to_value(entries).expect("manifest entries are JSON");
    custody_audit_format::canonical::to_string(&document)
}

/// The digest of a directory (see the module documentation).
pub fn dir_digest(dir: &Path) -> Result<LocalDigest> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files, 0)?;
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let sha256 = hex::encode(Sha256::digest(manifest_json(&files).as_bytes()));
    let size = files.iter().map(|f| f.size).sum();
    Ok(LocalDigest {
        sha256,
        size,
        is_dir: true,
        files,
    })
}

/// The digest of a file or a directory.
pub fn local_digest(path: &Path) -> Result<LocalDigest> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        dir_digest(path)
    } else if meta.is_file() {
        let (sha256, size) = file_sha256(path)?;
        Ok(LocalDigest {
            sha256,
            size,
            is_dir: false,
            files: Vec::new(),
        })
    } else {
        Err(Error::Invalid(format!(
            "{} is neither a file nor a directory",
            path.display()
        )))
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ManifestEntry>, depth: usize) -> Result<()> {
    if depth > 64 {
        return Err(Error::Invalid(format!(
            "{} nests deeper than 64 directories (a symlink loop?)",
            dir.display()
        )));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path: PathBuf = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            walk(root, &path, out, depth + 1)?;
        } else if meta.is_file() {
            let relative = path.strip_prefix(root).expect("under the root");
            let mut parts = Vec::new();
            for part in relative.components() {
                let s = part.as_os_str().to_str().ok_or_else(|| {
                    Error::Invalid(format!(
                        "{} is not a UTF-8 path; rename it to digest the directory",
                        path.display()
                    ))
                })?;
                parts.push(s.to_owned());
            }
            let (sha256, size) = file_sha256(&path)?;
            out.push(ManifestEntry {
                path: parts.join("/"),
                sha256,
                size,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_text_is_canonical() {
        let entries = vec![
            ManifestEntry {
                path: "a \"b\".csv".into(),
                sha256: "0".repeat(64),
                size: 3,
            },
            ManifestEntry {
                path: "z/é".into(),
                sha256: "f".repeat(64),
                size: 0,
            },
        ];
        assert_eq!(
            manifest_json(&entries),
            format!(
                r#"[{{"path":"a \"b\".csv","sha256":"{}","size":3}},{{"path":"z/é","sha256":"{}","size":0}}]"#,
                "0".repeat(64),
                "f".repeat(64)
            )
        );
        assert_eq!(manifest_json(&[]), "[]");
    }

    #[test]
    fn directory_digest_is_deterministic_and_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("b.txt"), b"bee").unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), b"a").unwrap();
        std::fs::write(dir.path().join("sub/deeper/c.bin"), [0u8, 1, 2]).unwrap();
        let first = dir_digest(dir.path()).unwrap();
        assert_eq!(
            first
                .files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["b.txt", "sub/a.txt", "sub/deeper/c.bin"]
        );
        assert_eq!(first.size, 7);
        // The documented rule, recomputed by hand.
        let expected = hex::encode(Sha256::digest(manifest_json(&first.files).as_bytes()));
        assert_eq!(first.sha256, expected);
        assert_eq!(
            dir_digest(dir.path()).unwrap(),
            first,
            "same tree, same digest"
        );
        std::fs::rename(dir.path().join("b.txt"), dir.path().join("b2.txt")).unwrap();
        let renamed = dir_digest(dir.path()).unwrap();
        assert_ne!(renamed.sha256, first.sha256, "a rename changes the digest");
        std::fs::write(dir.path().join("b2.txt"), b"bee!").unwrap();
        assert_ne!(
            dir_digest(dir.path()).unwrap().sha256,
            renamed.sha256,
            "new content changes the digest"
        );
    }
}
