//! Invalid settings stop `custody-server serve` at once with a message that names the setting
//! (and nothing starts): bad listen address, port in use, unwritable data dir, bad DATABASE_URL,
//! bad artifact store, bad part size, bad public URL.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use custody_tests::server::{server_bin, tmp_dir};

/// Runs `serve` with extra args/env, expecting it to exit on its own within 20 s.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Output {
    let data = tmp_dir("custody-config");
    let mut cmd = Command::new(server_bin());
    cmd.arg("serve")
        .args(["--data-dir", data.path().join("data").to_str().unwrap()])
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CUSTODY_ARTIFACTS")
        // A well-formed URL of a database that is never reached: every case must fail earlier.
        .env("DATABASE_URL", "postgres://custody@127.0.0.1:9/never")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn custody-server");
    let started = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve {args:?} did not exit on its own; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(needle),
        "stderr lacks `{needle}`:\n{stderr}"
    );
}

#[test]
fn a_port_in_use_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = serve(&["--listen", &addr], &[]);
    assert_refused(
        &out,
        &format!("cannot listen on {addr}: the address is already in use"),
    );
}

#[test]
fn a_bad_listen_address_is_named() {
    let out = serve(&["--listen", "localhost-8080"], &[]);
    assert_refused(&out, "--listen `localhost-8080` is not an address");
}

#[test]
fn an_unwritable_data_dir_is_named() {
    let mut cmd = Command::new(server_bin());
    let out = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/proc/custody-cannot-be-here",
        ])
        .env("DATABASE_URL", "postgres://custody@127.0.0.1:9/never")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_refused(
        &out,
        "cannot create the data directory /proc/custody-cannot-be-here",
    );
}

#[test]
fn a_bad_database_url_is_named() {
    let out = serve(
        &["--listen", "127.0.0.1:0"],
        &[("DATABASE_URL", "mysql://u@h/custody")],
    );
    assert_refused(&out, "DATABASE_URL has scheme `mysql`");
    let out = serve(
        &["--listen", "127.0.0.1:0"],
        &[("DATABASE_URL", "not a url")],
    );
    assert_refused(&out, "DATABASE_URL is not a valid URL");
}

#[test]
fn a_bad_artifact_store_is_named() {
    let out = serve(
        &["--listen", "127.0.0.1:0"],
        &[("CUSTODY_ARTIFACTS", "ftp://host/x")],
    );
    assert_refused(
        &out,
        "CUSTODY_ARTIFACTS `ftp://host/x` is neither a directory nor s3://bucket/prefix",
    );
    let out = serve(
        &["--listen", "127.0.0.1:0"],
        &[("CUSTODY_ARTIFACTS", "s3:///no-bucket")],
    );
    assert_refused(&out, "names no bucket");
    let out = serve(&["--listen", "127.0.0.1:0", "--part-size", "1MiB"], &[]);
    assert_refused(
        &out,
        "CUSTODY_ARTIFACT_PART_SIZE must be between 8MiB and 64MiB",
    );
}

#[test]
fn bad_urls_and_origins_are_named() {
    let out = serve(&["--listen", "127.0.0.1:0", "--public-url", "ftp://x"], &[]);
    assert_refused(&out, "CUSTODY_PUBLIC_URL must be an http or https URL");
    let out = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--cors-origins",
            "https://dash.example.com/path",
        ],
        &[],
    );
    assert_refused(&out, "must be a scheme and host only");
}
