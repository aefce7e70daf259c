//! Input rules shared by the domain modules.

use crate::error::{Error, Result};

/// Names of projects, datasets, models and groups: 1..=128 characters, starting with a letter or
/// digit, then letters, digits, `.`, `_` or `-`, so they are safe in URLs and file names.
pub fn name(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} `{value}` is not valid: use 1 to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        )))
    }
}

/// Stage names and aliases: a lowercase letter, then up to 63 lowercase letters, digits, `_` or
/// `-` (the tables' CHECK constraints say the same).
pub fn slug(what: &str, value: &str) -> Result<()> {
    let mut chars = value.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && value.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} `{value}` is not valid: lowercase letters, digits, `_` or `-`, starting with a letter (at most 64)"
        )))
    }
}

/// Free text: bounded, no NUL (PostgreSQL refuses it) and no control characters but newlines and tabs.
pub fn text(what: &str, value: &str, max_len: usize) -> Result<()> {
    if value.len() > max_len {
        return Err(Error::invalid(format!(
            "{what} is longer than {max_len} bytes"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

pub fn optional_text<'a>(
    what: &str,
    value: Option<&'a str>,
    max_len: usize,
) -> Result<Option<&'a str>> {
    if let Some(v) = value {
        text(what, v, max_len)?;
    }
    Ok(value)
}

/// A SHA-256 digest: exactly 64 lowercase hex characters (the `Sha256` scalar of API.md), so a
/// digest has one spelling everywhere it is compared.
pub fn sha256(value: &str) -> Result<String> {
    hex_digest("sha256", value, 64, false)
}

/// A git commit id as 40 hex characters (git accepts either case); returned lowercase.
pub fn commit_sha(value: &str) -> Result<String> {
    hex_digest("commit", value, 40, true)
}

fn hex_digest(what: &str, value: &str, len: usize, any_case: bool) -> Result<String> {
    let digit = |c: char| {
        c.is_ascii_digit() || matches!(c, 'a'..='f') || (any_case && matches!(c, 'A'..='F'))
    };
    if value.len() == len && value.chars().all(digit) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(Error::invalid(format!(
            "{what} must be {len} {}hexadecimal characters, got `{}`",
            if any_case { "" } else { "lowercase " },
            value.chars().take(80).collect::<String>()
        )))
    }
}

/// A Custody name (project, dataset: letters, digits, `.`, `_`, `-`) for a name another tool
/// uses (an MLflow experiment, an OpenLineage dataset): itself when it is one, else a slug of it (`/Shared/churn v2` → `shared-churn-v2`;
/// `fallback` when nothing is left).
pub fn name_for(foreign_name: &str, fallback: &str) -> String {
    if name("name", foreign_name).is_ok() {
        return foreign_name.to_owned();
    }
    let mut slug = String::new();
    for c in foreign_name.chars() {
        if c.is_ascii_alphanumeric() || (!slug.is_empty() && matches!(c, '.' | '_')) {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.chars().take(120).collect();
    let slug = slug.trim_end_matches(['-', '.', '_']);
    if slug.is_empty() {
        fallback.to_owned()
    } else {
        slug.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("x", "fraud-detector_v2.1").is_ok());
        for bad in ["", "-lead", "has space", "slash/", "ünï", &"a".repeat(129)] {
            assert!(name("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        assert_eq!(commit_sha(&"A".repeat(40)).unwrap(), "a".repeat(40));
        assert!(commit_sha(&"a".repeat(39)).is_err());
        assert!(commit_sha(&"g".repeat(40)).is_err());
        assert!(sha256(&"0".repeat(64)).is_ok());
        assert!(sha256(&"A".repeat(64)).is_err());
        assert!(sha256(&"0".repeat(65)).is_err());
    }

    #[test]
    fn free_text() {
        assert!(text("d", "line\nline\ttab", 100).is_ok());
        assert!(text("d", "nul\0", 100).is_err());
        assert!(text("d", "long", 3).is_err());
    }

    #[test]
    fn foreign_names_become_custody_names() {
        assert_eq!(name_for("churn", "x"), "churn");
        assert_eq!(name_for("Churn_v2.1", "x"), "Churn_v2.1");
        assert_eq!(name_for("/Shared/churn", "x"), "shared-churn");
        assert_eq!(
            name_for("/Users/ada@example.com/churn v2", "x"),
            "users-ada-example.com-churn-v2"
        );
        assert_eq!(name_for("///", "experiment"), "experiment");
        assert!(name("p", &name_for("/Ünïcode/名前/x", "x")).is_ok());
        assert!(name_for(&"/a".repeat(400), "x").len() <= 120);
    }
}
