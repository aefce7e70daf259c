//! A real OpenID Connect provider for the sign-in tests: the certified `oidc-provider` package
//! for Node (`tests/oidc/provider.mjs`, installed by `.ci/run` with `npm ci`), with one
//! confidential client for Custody, PKCE required, its development login form (any login, any
//! password), and each person's groups read from a file the test rewrites.
//!
//! Its port is chosen before Custody starts (Custody needs the issuer URL at start, the provider
//! needs Custody's callback URL): [`OidcProvider::reserve`], then [`OidcProvider::start`].

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub const CLIENT_ID: &str = "custody";
pub const CLIENT_SECRET: &str = "custody-test-client-secret";

/// A provider whose port is chosen, not yet started.
pub struct Reserved {
    pub port: u16,
}

impl Reserved {
    /// The issuer URL the provider will have.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Custody's settings for this provider (environment of `serve`), asking for the groups.
    pub fn custody_env(&self) -> Vec<(String, String)> {
        vec![
            ("CUSTODY_OIDC_ISSUER".into(), self.issuer()),
            ("CUSTODY_OIDC_CLIENT_ID".into(), CLIENT_ID.into()),
            ("CUSTODY_OIDC_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
            (
                "CUSTODY_OIDC_SCOPES".into(),
                "openid email profile groups".into(),
            ),
            ("CUSTODY_OIDC_LABEL".into(), "Test IdP".into()),
        ]
    }
}

pub struct OidcProvider {
    child: Child,
    pub issuer: String,
    accounts: PathBuf,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    pub fn reserve() -> Reserved {
        Reserved {
            port: crate::pg::free_port().expect("a free port"),
        }
    }

    /// Starts the provider on the reserved port, with Custody (at `custody_url`) as its client.
    pub async fn start(reserved: Reserved, custody_url: &str) -> OidcProvider {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc/provider.mjs");
        let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc/node_modules/oidc-provider");
        assert!(
            modules.exists(),
            "the test OpenID provider is not installed: run `npm ci --prefix tests/oidc` (.ci/run does)"
        );
        let dir = crate::server::tmp_dir("custody-test-oidc-");
        let accounts = dir.path().join("accounts.json");
        std::fs::write(&accounts, "{}").unwrap();
        let config = dir.path().join("config.json");
        let body = json!({
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [format!("{custody_url}/sign-in/oidc/callback")],
            }],
            "accounts_file": accounts,
            "host": "127.0.0.1",
            "port": reserved.port,
        });
        std::fs::write(&config, body.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("provider.log")).unwrap();
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning node (is Node.js installed?)");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await;
        let line = match line {
            Ok(Ok(Ok(line))) => line,
            _ => String::new(),
        };
        let Some(issuer) = line.trim().strip_prefix("LISTENING ").map(str::to_owned) else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("provider.log")).unwrap_or_default();
            panic!("the OpenID provider did not start (stdout: {line:?}):\n{log}");
        };
        assert_eq!(issuer, reserved.issuer());
        OidcProvider {
            child,
            issuer,
            accounts,
            _dir: dir,
        }
    }

    /// What the provider will say about `login` from now on: its groups and whether its email
    /// is verified (written atomically: the provider reads the file at every sign-in).
    pub fn set_account(&self, login: &str, groups: &[&str], email_verified: bool) {
        let mut all: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.accounts).unwrap()).unwrap();
        all[login] = json!({"groups": groups, "email_verified": email_verified});
        let tmp = self.accounts.with_extension("tmp");
        std::fs::write(&tmp, all.to_string()).unwrap();
        std::fs::rename(&tmp, &self.accounts).unwrap();
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes plain integers and touches no memory of this process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs in at the provider over plain HTTP, the way a browser would without scripts: follows
/// `authorization_url` to the login form, posts it as `login`, and returns the provider's
/// answer — the URL of Custody's callback with `code`, `state` and `iss` — without opening it.
/// `client` must keep cookies and not follow redirects.
pub async fn answer_for(client: &reqwest::Client, authorization_url: &str, login: &str) -> String {
    let mut url = reqwest::Url::parse(authorization_url).unwrap();
    for _ in 0..10 {
        let r = client.get(url.clone()).send().await.unwrap();
        let status = r.status();
        if status.is_redirection() {
            let next = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
            if next.path() == "/sign-in/oidc/callback" {
                return next.to_string();
            }
            url = next;
            continue;
        }
        let html = r.text().await.unwrap();
        assert!(status.is_success(), "{status} at {url}:\n{html}");
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no login form at {url}:\n{html}"));
        let r = client
            .post(url.join(action).unwrap())
            .form(&[("prompt", "login"), ("login", login), ("password", "any")])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_redirection(),
            "login form post: {}",
            r.status()
        );
        url = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
    }
    panic!("the provider never answered to the callback");
}
