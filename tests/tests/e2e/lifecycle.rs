//! Server lifecycle: a restart keeps all data; the embedded default (no DATABASE_URL) starts from
//! an empty data dir with a private PostgreSQL cluster, stops it on SIGTERM and reuses it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use custody_tests::audit::{fetch_all, verify_chain};
use custody_tests::fixtures::*;
use custody_tests::server::{tail, tmp_dir};
use custody_tests::{commit_sha, eventually, sha256_hex, Server, TestEnv};
use serde_json::{json, Value};

const EVERYTHING: &str = "query($run: ID!) {
  me { email isAdmin }
  project(name: \"p\") { id name description members { role groups user { email } } datasets { id name } models { id name } }
  dataset(project: \"p\", name: \"ds\") { id versions { id version uri sha256 sizeBytes tags } }
  run(id: $run) { id name status codeCommit { id commit } params { key value } metrics(key: \"loss\") { key value step } inputs { id version } startedAt endedAt }
  model(project: \"p\", name: \"m\") { id versions { id version stage } }
  modelVersion(project: \"p\", model: \"m\", version: 1) { id version stage run { id } }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_all_data() {
    let mut env = TestEnv::start().await;
    let a = env.admin.clone();
    let s = &env.server;
    create_project(s, &a, "p").await;
    add_member(s, &a, "p", "bob@example.com", "APPROVER").await;
    create_dataset(s, &a, "p", "ds").await;
    let v1 = id(&register_dataset_version(s, &a, "p", "ds", &sha256_hex("1"), &[]).await);
    let c = id(&register_commit(s, &a, "https://git.example.com/x.git", &commit_sha("x")).await);
    let run = id(&start_run(s, &a, "p", "r", Some(&c), &[&v1]).await);
    log_params(s, &a, &run, &[("lr", "0.1")]).await;
    log_metrics(s, &a, &run, json!([{ "key": "loss", "value": 0.5, "step": 1 }, { "key": "loss", "value": 0.25, "step": 2 }])).await;
    finish_run(s, &a, &run, "FINISHED").await;
    create_model(s, &a, "p", "m").await;
    register_model_version(s, &a, "p", "m", &run).await;
    let user = env.issue_token("bob@example.com", false).await;

    let before = env.gql_ok(&a, EVERYTHING, json!({ "run": run })).await;
    let audit_before = fetch_all(&env.server, &a, "").await;

    env.server.restart().await;

    // The tokens issued before the restart still work (same key, same token records).
    let after = env.gql_ok(&a, EVERYTHING, json!({ "run": run })).await;
    assert_eq!(after, before, "data differs after a restart");
    let me = env.gql_ok(&user, "{ me { email } }", json!({})).await;
    assert_eq!(me["me"]["email"], "bob@example.com");
    let audit_after = fetch_all(&env.server, &a, "").await;
    assert_eq!(
        audit_after, audit_before,
        "the audit log differs after a restart"
    );

    // And the chain goes on from where it was.
    create_dataset(&env.server, &a, "p", "after-restart").await;
    let audit = fetch_all(&env.server, &a, "").await;
    assert_eq!(audit.len(), audit_before.len() + 1);
    verify_chain(&audit).unwrap_or_else(|e| panic!("audit chain broken across a restart: {e}"));
}

/// `<pg root>/…/postmaster.pid`, wherever the server keeps PGDATA under `<data-dir>/pg`.
fn find_postmaster_pid(pg: &Path) -> Option<PathBuf> {
    let mut dirs = vec![(pg.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let f = d.join("postmaster.pid");
        if f.is_file() {
            return Some(f);
        }
        if depth < 3 {
            if let Ok(rd) = std::fs::read_dir(&d) {
                dirs.extend(
                    rd.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| (e.path(), depth + 1)),
                );
            }
        }
    }
    None
}

/// Is the process alive (not gone, not a zombie)?
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && alive(pid) {
                out.push(format!("{pid}: {cmd}"));
            }
        }
    }
    out
}

async fn stop_and_check_cluster_gone(server: &mut Server, data_dir: &Path, postmaster_pid: i32) {
    let st = server.stop().await;
    assert!(
        st.success(),
        "custody-server exited with {st} on SIGTERM\n{}",
        tail(&server.log(), 80)
    );
    // The private cluster is stopped with the server.
    let stopped = eventually(Duration::from_secs(5), || async { !alive(postmaster_pid) }).await;
    assert!(
        stopped,
        "the private postmaster (pid {postmaster_pid}) outlived the server"
    );
    let pidfile = find_postmaster_pid(&data_dir.join("pg"));
    assert!(
        pidfile.is_none(),
        "{} remains after the server stopped",
        pidfile.unwrap().display()
    );
    let left = processes_mentioning(data_dir.to_str().unwrap());
    assert!(
        left.is_empty(),
        "processes for the data dir remain: {left:?}"
    );
}

/// Reads `postmaster.pid`: (pid, listen address line).
fn postmaster_info(data_dir: &Path) -> (i32, String) {
    let f = find_postmaster_pid(&data_dir.join("pg"))
        .unwrap_or_else(|| panic!("no postmaster.pid under {}/pg", data_dir.display()));
    let text = std::fs::read_to_string(&f).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    (
        lines[0].trim().parse().unwrap(),
        lines
            .get(5)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_from_an_empty_data_dir() {
    let work = tmp_dir("custody-test-embedded-");
    let data_dir = work.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    // First start: initdb, start the private cluster, migrate, create the admin.
    let mut server = Server::start_with_dir(&data_dir, None, Duration::from_secs(60)).await;
    assert!(
        !server.admin_token.is_empty(),
        "no admin.token after the first start"
    );
    let a = server.admin_token.clone();
    let (pg_pid, listen) = postmaster_info(&data_dir);
    assert!(
        listen.is_empty(),
        "the private cluster must listen on a Unix socket only, it listens on {listen:?}"
    );
    create_project(&server, &a, "embedded").await;
    create_dataset(&server, &a, "embedded", "ds").await;
    register_dataset_version(&server, &a, "embedded", "ds", &sha256_hex("e"), &[]).await;

    // The CLI reaches the same private cluster while the server runs.
    let t = server.issue_token("cli@example.com", false).await;
    let me = server.gql_ok(&t, "{ me { email } }", json!({})).await;
    assert_eq!(me["me"]["email"], "cli@example.com");

    stop_and_check_cluster_gone(&mut server, &data_dir, pg_pid).await;
    drop(server);

    // Second start reuses the cluster: the data is there.
    let mut server = Server::start_with_dir(&data_dir, None, Duration::from_secs(60)).await;
    let a2 = if server.admin_token.is_empty() {
        a.clone()
    } else {
        server.admin_token.clone()
    };
    let (pg_pid, _) = postmaster_info(&data_dir);
    let p = server
        .gql_ok(
            &a2,
            "{ project(name: \"embedded\") { name datasets { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        p["project"],
        json!({ "name": "embedded", "datasets": [{ "name": "ds" }] })
    );
    // The first start's token is still good.
    server.gql_ok(&a, "{ me { email } }", json!({})).await;
    let me: Value = server.gql_ok(&t, "{ me { email } }", json!({})).await;
    assert_eq!(me["me"]["email"], "cli@example.com");
    verify_chain(&fetch_all(&server, &a, "").await).unwrap();
    stop_and_check_cluster_gone(&mut server, &data_dir, pg_pid).await;
}

/// The log written to a file (the harness captures the server's stderr in one) is plain text: no
/// ANSI colour codes, which only a terminal would render.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_holds_no_colour_codes() {
    let env = TestEnv::start().await;
    // Some requests, an error among them, so that the log has more than start-up lines.
    env.gql_ok(&env.admin, "{ me { email } }", json!({})).await;
    env.gql(&env.admin, "{ noSuchField }", json!({})).await;
    let log = env.server.log();
    assert!(
        log.contains("custody-server listening"),
        "the log file lacks the start-up lines:\n{log}"
    );
    let escapes: Vec<&str> = log.lines().filter(|l| l.contains('\x1b')).collect();
    assert!(
        escapes.is_empty(),
        "{} log line(s) with escape sequences, e.g. {:?}",
        escapes.len(),
        escapes.first()
    );
}
