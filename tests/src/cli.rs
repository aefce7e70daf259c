//! The `custody` command line (crate `custody`, sdk/rust) as a subprocess: locating (and
//! building) the binary, and running it with a private config directory and environment.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::Value;

static CLI_BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The path of the `custody` binary matching this test build: `CUSTODY_CLI_BIN` if set, else
/// `<target>/<profile>/custody`, brought up to date once per process with
/// `cargo build -p custody --bin custody` in the same profile (`CUSTODY_TESTS_NO_BUILD=1` skips it).
pub fn cli_bin() -> PathBuf {
    let found = CLI_BIN.get_or_init(|| {
        crate::server::locate_and_build(&["-p", "custody"], "custody", "CUSTODY_CLI_BIN")
            .map_err(|e| format!("{e:#}"))
    });
    match found {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// One user's command line: its own config directory (so `login` is private to it).
pub struct Cli {
    home: tempfile::TempDir,
    /// Extra environment for every call (e.g. `CUSTODY_TOKEN` to act as someone else).
    pub env: Vec<(String, String)>,
}

/// What one call did.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (the command ran with `--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout of {:?} is not JSON ({e}):\n{self}", self.args))
    }

    /// stderr as JSON (`{"error": …}` of a failed `--json` call).
    pub fn error_json(&self) -> Value {
        serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr of {:?} is not JSON ({e}):\n{self}", self.args))
    }

    /// Asserts exit code 0 and answers the JSON on stdout.
    pub fn ok_json(&self) -> Value {
        assert_eq!(self.code, 0, "custody {:?} failed:\n{self}", self.args);
        self.json()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Cli {
    pub fn new() -> Cli {
        let home = tempfile::Builder::new()
            .prefix("custody-cli-home-")
            .tempdir()
            .expect("a temp dir");
        Cli {
            home,
            env: Vec::new(),
        }
    }

    /// `$XDG_CONFIG_HOME` of this user.
    pub fn config_home(&self) -> PathBuf {
        self.home.path().join("config")
    }

    /// Where `custody login` stores the URL and token.
    pub fn config_file(&self) -> PathBuf {
        self.config_home().join("custody").join("config.json")
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Cli {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs `custody ARGS…` (no stdin, not a terminal: no progress bars) and waits for it.
    pub async fn run(&self, args: &[&str]) -> Run {
        let bin = tokio::task::spawn_blocking(cli_bin).await.unwrap();
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env_remove("CUSTODY_URL")
            .env_remove("CUSTODY_TOKEN")
            .env_remove("CUSTODY_CONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = cmd
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", bin.display()));
        Run {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `custody ARGS…` with stdout and stderr piped, for a command that waits on
    /// something the test does meanwhile (`login`'s device flow).
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new(cli_bin());
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env_remove("CUSTODY_URL")
            .env_remove("CUSTODY_TOKEN")
            .env_remove("CUSTODY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.spawn()
            .unwrap_or_else(|e| panic!("running custody {args:?}: {e}"))
    }

    /// `custody ARGS… --json`, asserting success; answers the JSON on stdout.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        self.run(&all).await.ok_json()
    }
}

impl Default for Cli {
    fn default() -> Self {
        Cli::new()
    }
}
