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

/// Where the URL and token come from: `CUSTODY_URL` / `CUSTODY_TOKEN` override the stored login.
pub fn credentials() -> Result<(String, String), CliError> {
    let path = config_path()?;
    let stored = load(&path)?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let url = env("CUSTODY_URL").or(stored.url);
    let token = env("CUSTODY_TOKEN").or(stored.token);
    match (url, token) {
        (Some(url), Some(token)) => Ok((url, token)),
        _ => Err(CliError::unauthenticated("not logged in").hint(
            "run `custody login --url URL --token TOKEN` (get a token with `custody-server token issue --email EMAIL`), or set CUSTODY_URL and CUSTODY_TOKEN",
        )),
    }
}
