//! The stored login: `$CUSTODY_CONFIG`, else `$XDG_CONFIG_HOME/custody/config.json`, else
//! `~/.config/custody/config.json`; written with mode 0600 (its directory 0700).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ui::CliError;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    pub url: Option<String>,
    pub token: Option<String>,
    /// A device-flow login's refresh token: renews `token` when it runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When `token` runs out (device-flow logins; a token given by hand has none here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn config_path() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("CUSTODY_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(dir).join("custody").join("config.json"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(home)
            .join(".config")
            .join("custody")
            .join("config.json"));
    }
    Err(CliError::usage(
        "cannot tell where to keep the login: set HOME, XDG_CONFIG_HOME or CUSTODY_CONFIG",
    ))
}

/// The directory beside the config that keeps resumable upload state.
pub fn state_dir() -> Option<PathBuf> {
    config_path()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("uploads")))
}

pub fn load(path: &Path) -> Result<Config, CliError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            CliError::other(format!(
                "{} is not a valid custody config: {e}",
                path.display()
            ))
            .hint("run `custody login --url URL --token TOKEN` to write it again")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(CliError::other(format!("reading {}: {e}", path.display()))),
    }
}

pub fn save(path: &Path, config: &Config) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::other(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(fail)?;
            set_mode(dir, 0o700).map_err(fail)?;
        }
    }
    let tmp = path.with_extension("json.tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(fail)?;
        set_mode(&tmp, 0o600).map_err(fail)?;
        f.write_all(&serde_json::to_vec_pretty(config).expect("JSON"))
            .map_err(fail)?;
        f.write_all(b"\n").map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Whether a stored login's token runs out within a minute.
fn expiring(config: &Config) -> bool {
    config
        .expires_at
        .is_some_and(|at| at <= chrono::Utc::now() + chrono::Duration::seconds(60))
}

/// An exclusive lock on `<config>.lock`, held until dropped.
fn lock(path: &Path) -> Result<std::fs::File, CliError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let fail = |e: std::io::Error| CliError::other(format!("locking {}: {e}", lock_path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&lock_path).map_err(fail)?;
    file.lock().map_err(fail)?;
    Ok(file)
}

/// Where the URL and token come from: `CUSTODY_URL` / `CUSTODY_TOKEN` override the stored login.
/// A stored device-flow login whose token runs out within a minute is renewed first (and the
/// renewed tokens are stored).
pub async fn credentials() -> Result<(String, String), CliError> {
    let path = config_path()?;
    let mut stored = load(&path)?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let url = env("CUSTODY_URL").or(stored.url.clone());
    if let (Some(token), Some(url)) = (env("CUSTODY_TOKEN"), &url) {
        return Ok((url.clone(), token));
    }
    if expiring(&stored) && stored.refresh_token.is_some() {
        // Refresh tokens work once: a second process (the Python SDK, a parallel job) renewing
        // from the same file at the same moment would end the login. One renews at a time,
        // under `<config>.lock` (the SDK takes the same lock), and re-reads what the other wrote.
        let _lock = lock(&path)?;
        stored = load(&path)?;
        if let (true, Some(refresh), Some(stored_url)) = (
            expiring(&stored),
            stored.refresh_token.clone(),
            stored.url.clone(),
        ) {
            let renewed = crate::device::refresh(&stored_url, &refresh).await?;
            stored.token = Some(renewed.token);
            stored.refresh_token = Some(renewed.refresh_token);
            stored.expires_at = Some(renewed.expires_at);
            save(&path, &stored)?;
        }
    }
    match (url, stored.token) {
        (Some(url), Some(token)) => Ok((url, token)),
        _ => Err(CliError::unauthenticated("not logged in").hint(
            "run `custody login --url URL` (or `--token TOKEN` with a token from `custody-server token issue --email EMAIL`), or set CUSTODY_URL and CUSTODY_TOKEN",
        )),
    }
}
