//! A real headless Chromium, driven through chromedriver with `fantoccini`.
//!
//! [`Browser::start`] runs `chromedriver` on a free port of 127.0.0.1 (in its own process group,
//! with PDEATHSIG so it dies with the test process) and opens a WebDriver session on a fresh
//! Chromium profile. [`Browser::close`] ends the session (chromedriver quits Chromium) and stops
//! chromedriver; [`Drop`] does the same without the session's courtesy: it signals chromedriver's
//! process group and every process whose command line names this browser's private profile
//! directory, each by PID.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`CUSTODY_CHROMIUM` and
//! `CUSTODY_CHROMEDRIVER` override the binaries).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use crate::pg::free_port;

pub struct Browser {
    pub client: Option<Client>,
    chromedriver: Option<Child>,
    profile: tempfile::TempDir,
    log_path: PathBuf,
}

fn find_binary(env: &str, candidates: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    for c in candidates {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    panic!(
        "none of {candidates:?} exists: install Chromium and its WebDriver \
         (`apt-get install -y chromium chromium-driver`) or set {env}"
    );
}

impl Browser {
    pub async fn start() -> Browser {
        // The Debian `/usr/bin/chromium` is a shell wrapper; the real binary sits beside its libraries.
        let chromium = find_binary(
            "CUSTODY_CHROMIUM",
            &[
                "/usr/lib/chromium/chromium",
                "/usr/bin/chromium",
                "/usr/bin/chromium-browser",
            ],
        );
        let chromedriver = find_binary(
            "CUSTODY_CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        );
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let profile = tempfile::Builder::new()
                .prefix("custody-test-chromium-")
                .tempdir_in("/tmp")
                .unwrap();
            let log_path = profile.path().with_extension("chromedriver.log");
            let port = free_port().unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut cmd = Command::new(&chromedriver);
            cmd.arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0);
            crate::die_with_parent(&mut cmd, libc::SIGTERM);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", chromedriver.display()));
            let mut b = Browser {
                client: None,
                chromedriver: Some(child),
                profile,
                log_path,
            };
            match b.connect(port, &chromium).await {
                Ok(()) => return b,
                Err(e) => last_err = format!("{e}\n----- chromedriver log -----\n{}", b.log()),
            }
        }
        panic!("could not start headless Chromium through chromedriver: {last_err}");
    }

    async fn connect(&mut self, port: u16, chromium: &Path) -> Result<(), String> {
        let status = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.chromedriver.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("chromedriver exited early ({st})"));
            }
            if let Ok(r) = http
                .get(&status)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v["value"]["ready"] == json!(true) {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("chromedriver did not become ready on port {port}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .map_err(|_| "opening a WebDriver session timed out".to_string())?
        .map_err(|e| format!("opening a WebDriver session: {e}"))?;
        self.client = Some(client);
        Ok(())
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser session is closed")
    }

    /// Everything chromedriver logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
        }
        self.kill_everything();
    }

    /// PIDs of the processes whose command line names this browser's profile directory.
    fn profile_pids(&self) -> Vec<i32> {
        let marker = self.profile.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn kill_everything(&mut self) {
        if let Some(mut child) = self.chromedriver.take() {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) takes plain integers and touches no memory of this process.
            unsafe { libc::killpg(pgid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: kill(2) takes plain integers and touches no memory of this process.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            let _ = child.wait();
        }
        // Chromium processes that left chromedriver's group: by PID, found by their own profile dir.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.profile_pids();
            if pids.is_empty() {
                break;
            }
            let sig = if Instant::now() + Duration::from_secs(5) > deadline {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            for pid in pids {
                // SAFETY: kill(2) takes plain integers and touches no memory of this process.
                unsafe { libc::kill(pid, sig) };
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The WebDriver client's connection task needs the runtime; dropping it is enough here.
        self.client.take();
        self.kill_everything();
    }
}

/// The text of the element `#id` once it is on the page (waiting up to 20 s), panicking with
/// what is missing otherwise. An element that goes stale between finding and reading it (the page
/// was replaced: a form's answer, a redirect) is looked up again on the new page.
pub async fn text_of(c: &Client, id: &str) -> String {
    crate::wait_until(
        &format!("#{id} on the page"),
        Duration::from_secs(20),
        || async {
            let element = c.find(fantoccini::Locator::Id(id)).await.ok()?;
            element.text().await.ok()
        },
    )
    .await
}

/// A screenshot of the page as it is, for review: `target/ui-screenshots/<name>.png`.
pub async fn screenshot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Waits until the browser is on a page whose URL contains `fragment` (after a form's submit or
/// a click on a link), so that nothing is read from the page being left.
pub async fn wait_for_url(c: &Client, fragment: &str) {
    crate::wait_until(
        &format!("a page at a URL with {fragment}"),
        Duration::from_secs(20),
        || async {
            let url = c.current_url().await.ok()?;
            url.as_str().contains(fragment).then_some(())
        },
    )
    .await;
}

/// The text of each body row of the table with this id, once the table is on the page.
pub async fn rows(c: &Client, table: &str) -> Vec<String> {
    crate::wait_until(
        &format!("the rows of #{table}"),
        Duration::from_secs(20),
        || async {
            c.find(fantoccini::Locator::Id(table)).await.ok()?;
            let selector = format!("#{table} tbody tr");
            let mut out = Vec::new();
            // A row gone stale (the page was replaced while reading) reads the new page again.
            for row in c.find_all(fantoccini::Locator::Css(&selector)).await.ok()? {
                out.push(row.text().await.ok()?);
            }
            Some(out)
        },
    )
    .await
}
