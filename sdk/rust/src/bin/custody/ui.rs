//! Exit codes, errors that say what to do, `--json` output, and progress bars.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use custody::{Error, ErrorCode, Phase, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Exit codes scripts can rely on (documented in sdk/rust/README.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const OTHER: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const DENIED: i32 = 4;
    pub const REFUSED: i32 = 5;
}

#[derive(Debug)]
pub struct CliError {
    pub exit: i32,
    /// The server's code, or the nearest one for client-side errors.
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
    /// The command already printed why it failed (a verdict): exit without a message.
    pub reported: bool,
}

impl CliError {
    fn new(exit: i32, code: &str, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            code: code.into(),
            message: message.into(),
            hint: None,
            reported: false,
        }
    }

    /// Exit with `exit` after the command printed its own outcome.
    pub fn reported(exit: i32, code: &str) -> CliError {
        CliError {
            reported: true,
            ..CliError::new(exit, code, "")
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(exit::USAGE, "USAGE", message)
            .hint("see `custody --help` or `custody COMMAND --help`")
    }

    pub fn not_found(message: impl Into<String>) -> CliError {
        CliError::new(exit::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> CliError {
        CliError::new(exit::DENIED, "UNAUTHENTICATED", message)
    }

    pub fn refused(code: &str, message: impl Into<String>) -> CliError {
        CliError::new(exit::REFUSED, code, message)
    }

    pub fn other(message: impl Into<String>) -> CliError {
        CliError::new(exit::OTHER, "ERROR", message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint unless one is set.
    pub fn or_hint(self, hint: impl Into<String>) -> CliError {
        if self.hint.is_some() {
            self
        } else {
            self.hint(hint)
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "hint": self.hint, "exitCode": self.exit}})
    }
}

impl From<Error> for CliError {
    fn from(err: Error) -> CliError {
        let message = err.to_string();
        match &err {
            Error::Api { code, message, .. } => {
                let (exit, hint) = match code {
                    ErrorCode::NotFound => (exit::NOT_FOUND, Some("check the id or name: `custody projects list`, `custody runs show RUN`, `custody promote status ID`")),
                    ErrorCode::Unauthenticated => (
                        exit::DENIED,
                        Some("the token was refused (expired or revoked?): get a new one (`custody-server token issue --email EMAIL`) and run `custody login --url URL --token TOKEN`"),
                    ),
                    ErrorCode::Forbidden => (exit::DENIED, Some("your account lacks the role for this: ask a project admin to add you with a higher role (addMember)")),
                    ErrorCode::InvalidInput => (exit::REFUSED, None),
                    ErrorCode::Conflict => (exit::REFUSED, None),
                    ErrorCode::PolicyDenied => (exit::REFUSED, Some("the promotion policies refuse this; `custody promote status ID` shows the reasons")),
                    ErrorCode::Internal => (exit::OTHER, Some("the server failed; its log has the details (look for this request's x-request-id)")),
                    ErrorCode::Other(_) => (exit::OTHER, None),
                };
                CliError { exit, code: code.as_str().into(), message: message.clone(), hint: hint.map(Into::into), reported: false }
            }
            Error::Transport { url, .. } => CliError::new(exit::OTHER, "UNREACHABLE", message.clone()).hint(format!(
                "is the server running at {url}? Check the URL (`custody login --url URL --token TOKEN` or CUSTODY_URL)"
            )),
            Error::NotFound(m) => CliError::not_found(m.clone()),
            Error::Invalid(m) => CliError::refused("INVALID_INPUT", m.clone()),
            Error::Integrity { .. } => CliError::new(exit::OTHER, "INTEGRITY", message)
                .hint("the bytes were corrupted in transit or at rest; nothing was kept: try again"),
            Error::Io { .. } => CliError::new(exit::OTHER, "IO", message),
            Error::Protocol(_) => CliError::new(exit::OTHER, "PROTOCOL", message)
                .hint("is the URL that of a Custody server, and are server and CLI of matching versions?"),
            Error::Logger { .. } => CliError::new(exit::OTHER, "LOGGER", message),
        }
    }
}

/// How results are shown: text for people, one JSON document for scripts.
#[derive(Clone, Copy)]
pub struct Ui {
    pub json: bool,
}

impl Ui {
    /// Prints a command's result: `value` with `--json`, else `text`.
    pub fn print(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
        } else {
            let text = text();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }

    pub fn print_error(&self, err: &CliError) {
        if err.reported {
            return;
        }
        if self.json {
            eprintln!("{}", err.to_json());
        } else {
            eprintln!("error: {}", err.message);
            if let Some(hint) = &err.hint {
                eprintln!("hint: {hint}");
            }
        }
    }

    /// Progress bars go to stderr, and only when stdout is a terminal and `--json` is off.
    pub fn progress(&self) -> Arc<dyn Progress> {
        let visible =
            !self.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        if visible {
            Arc::new(Bar::new())
        } else {
            Arc::new(custody::NoProgress)
        }
    }
}

/// An indicatif bar per phase (hashing, uploading, downloading, exporting).
struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        Bar { bar }
    }
}

impl Progress for Bar {
    fn start(&self, phase: Phase, total: Option<u64>) {
        let label = match phase {
            Phase::Hashing => "hashing",
            Phase::Uploading => "uploading",
            Phase::Downloading => "downloading",
            Phase::Exporting => "exporting",
        };
        self.bar.reset();
        match total {
            Some(total) => {
                self.bar.set_length(total);
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>11} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
            }
            None => {
                self.bar.unset_length();
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>11} {spinner} {bytes} {binary_bytes_per_sec}",
                    )
                    .expect("a valid template"),
                );
                self.bar.enable_steady_tick(Duration::from_millis(120));
            }
        }
        self.bar.set_message(label);
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn retreat(&self, bytes: u64) {
        self.bar
            .set_position(self.bar.position().saturating_sub(bytes));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses `123`, `64MiB`, `8M`, `1GiB`, `512KiB`, `10kB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn exit_codes_follow_error_codes() {
        let api = |code: &str| {
            CliError::from(Error::Api {
                code: ErrorCode::parse(code),
                message: "m".into(),
                status: None,
            })
            .exit
        };
        assert_eq!(api("NOT_FOUND"), exit::NOT_FOUND);
        assert_eq!(api("FORBIDDEN"), exit::DENIED);
        assert_eq!(api("UNAUTHENTICATED"), exit::DENIED);
        assert_eq!(api("CONFLICT"), exit::REFUSED);
        assert_eq!(api("INVALID_INPUT"), exit::REFUSED);
        assert_eq!(api("POLICY_DENIED"), exit::REFUSED);
        assert_eq!(api("INTERNAL"), exit::OTHER);
    }
}
