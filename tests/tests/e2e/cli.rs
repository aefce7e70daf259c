//! The `custody` command line (sdk/rust), driven as a subprocess against the real server: login,
//! `--json` output, artifacts pushed in parts and pulled back, promotions, lineage trees, the
//! audit export, and the exit codes scripts rely on (0 ok, 2 usage, 3 not found,
//! 4 unauthenticated/forbidden, 5 refused, 1 other).
//!
//! ```text
//! cargo test -p custody-tests --test e2e cli::
//! ```

use std::path::{Path, PathBuf};

use custody_tests::cli::{Cli, Run};
use custody_tests::{fixtures, random_id, TestEnv};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// `len` pseudo-random bytes (splitmix64 of `seed`) written to `dir/name`; answers path and digest.
fn data_file(dir: &Path, name: &str, seed: u64, len: u64) -> (PathBuf, String) {
    use std::io::Write;
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut hasher = Sha256::new();
    let mut left = len;
    let mut buf = Vec::with_capacity(MIB as usize);
    while left > 0 {
        buf.clear();
        let n = left.min(MIB);
        while (buf.len() as u64) < n {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            buf.extend_from_slice(&z.to_le_bytes());
        }
        buf.truncate(n as usize);
        hasher.update(&buf);
        out.write_all(&buf).unwrap();
        left -= n;
    }
    out.flush().unwrap();
    (path, hex::encode(hasher.finalize()))
}

fn file_sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The documented directory digest, computed independently: SHA-256 of the canonical JSON array
/// `[{"path","sha256","size"}]` of the files, sorted by relative path.
fn dir_digest(dir: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String, u64)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                let bytes = std::fs::read(&p).unwrap();
                out.push((rel, hex::encode(Sha256::digest(&bytes)), bytes.len() as u64));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    let doc: Vec<Value> = files
        .iter()
        .map(|(path, sha, size)| serde_json::json!({"path": path, "sha256": sha, "size": size}))
        .collect();
    hex::encode(Sha256::digest(
        serde_json::to_string(&doc).unwrap().as_bytes(),
    ))
}

/// A CLI user logged in to `env`'s server with `token`, through `custody login`.
async fn login(env: &TestEnv, token: &str) -> Cli {
    let cli = Cli::new();
    let url = env.server.url("");
    let out = cli.json(&["login", "--url", &url, "--token", token]).await;
    assert_eq!(out["url"], Value::String(url), "{out}");
    cli
}

/// A CLI user acting through `CUSTODY_URL` / `CUSTODY_TOKEN` only (no stored login).
fn env_user(env: &TestEnv, token: &str) -> Cli {
    Cli::new()
        .with_env("CUSTODY_URL", &env.server.url(""))
        .with_env("CUSTODY_TOKEN", token)
}

/// Asserts a failed `--json` call: its exit code and the error code on stderr.
fn assert_fails(run: &Run, exit: i32, code: &str) {
    assert_eq!(
        run.code, exit,
        "custody {:?}: wrong exit code\n{run}",
        run.args
    );
    let err = run.error_json();
    assert_eq!(
        err["error"]["code"], code,
        "custody {:?}: wrong error code\n{run}",
        run.args
    );
    assert_eq!(err["error"]["exitCode"], exit, "{run}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_credentials_privately_and_the_environment_overrides_them() {
    let env = TestEnv::start().await;
    let url = env.server.url("");
    let cli = Cli::new();

    // Not logged in: exit 4, and the error says what to do.
    let r = cli.run(&["projects", "list"]).await;
    assert_eq!(r.code, 4, "{r}");
    assert!(
        r.stderr.contains("custody login --url"),
        "the error must say how to log in:\n{r}"
    );

    // A refused token stores nothing.
    let r = cli
        .run(&["login", "--url", &url, "--token", "not-a-token", "--json"])
        .await;
    assert_fails(&r, 4, "UNAUTHENTICATED");
    assert!(
        !cli.config_file().exists(),
        "a refused login must not be stored"
    );

    // An unreachable server: exit 1, with a hint naming the URL.
    let r = cli
        .run(&[
            "login",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            &env.admin,
            "--json",
        ])
        .await;
    assert_fails(&r, 1, "UNREACHABLE");

    let out = cli
        .json(&["login", "--url", &url, "--token", &env.admin])
        .await;
    assert_eq!(out["email"], "admin@localhost", "{out}");
    let config = cli.config_file();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the stored token must be readable by its owner only"
    );
    let stored: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(stored["url"], Value::String(url.clone()));
    assert_eq!(stored["token"], Value::String(env.admin.clone()));

    let created = cli
        .json(&["projects", "create", "alpha", "--description", "first"])
        .await;
    assert_eq!(created["project"]["name"], "alpha", "{created}");
    let listed = cli.json(&["projects", "list"]).await;
    let projects = listed["projects"].as_array().unwrap();
    assert!(
        projects
            .iter()
            .any(|p| p["name"] == "alpha" && p["role"] == "ADMIN"),
        "projects list lacks alpha as ADMIN: {listed}"
    );
    // `projects` alone lists too, as text.
    let r = cli.run(&["projects"]).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains("alpha") && r.stdout.contains("ADMIN"),
        "{r}"
    );
    let me = cli.json(&["whoami"]).await;
    assert_eq!(me["me"]["email"], "admin@localhost");

    // The environment overrides the stored login.
    let bad = cli.with_env("CUSTODY_TOKEN", "garbage");
    let r = bad.run(&["projects", "list", "--json"]).await;
    assert_fails(&r, 4, "UNAUTHENTICATED");

    // Usage errors: exit 2.
    let r = bad.run(&["runs", "log"]).await;
    assert_eq!(r.code, 2, "{r}");
    let r = bad
        .run(&["runs", "log", &random_id(), "--metric", "loss=abc"])
        .await;
    assert_eq!(r.code, 2, "{r}");
    let r = bad.run(&["lineage", "show", "planet", &random_id()]).await;
    assert_eq!(r.code, 2, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_run_from_dataset_to_promotion() {
    let env = TestEnv::start().await;
    let work = tempfile::tempdir().unwrap();
    let cli = login(&env, &env.admin).await;
    cli.json(&["projects", "create", "vision"]).await;

    // Datasets: a file (its SHA-256) and a directory (the documented directory digest).
    let (train, train_sha) = data_file(work.path(), "train.csv", 1, 300_000);
    let out = cli
        .json(&[
            "datasets",
            "register",
            "--project",
            "vision",
            "--dataset",
            "images",
            train.to_str().unwrap(),
            "--tag",
            "training",
        ])
        .await;
    let dv1 = out["datasetVersion"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        out["datasetVersion"]["sha256"],
        Value::String(train_sha),
        "{out}"
    );
    assert_eq!(out["datasetVersion"]["version"], 1);
    assert_eq!(
        out["datasetVersion"]["tags"],
        serde_json::json!(["training"])
    );
    let tree = work.path().join("shards");
    data_file(&tree, "a/part-0.bin", 2, 1000);
    data_file(&tree, "a/part-1.bin", 3, 2000);
    data_file(&tree, "z.txt", 4, 10);
    let out = cli
        .json(&[
            "datasets",
            "register",
            "--project",
            "vision",
            "--dataset",
            "images",
            tree.to_str().unwrap(),
            "--derived-from",
            &dv1,
        ])
        .await;
    assert_eq!(
        out["datasetVersion"]["sha256"],
        Value::String(dir_digest(&tree)),
        "directory digest: {out}"
    );
    assert_eq!(out["datasetVersion"]["version"], 2);
    assert_eq!(out["digest"]["files"], 3);

    // A run: plain output is its id alone.
    let commit = custody_tests::commit_sha("cli-run");
    let r = cli
        .run(&[
            "runs",
            "start",
            "--project",
            "vision",
            "--name",
            "train-1",
            "--input",
            &dv1,
            "--commit",
            &commit,
            "--repository",
            "git@example.com:vision.git",
        ])
        .await;
    assert_eq!(r.code, 0, "{r}");
    let run = r.stdout.trim().to_owned();
    assert!(
        !run.is_empty() && !run.contains(char::is_whitespace),
        "`runs start` must print the run id alone:\n{r}"
    );

    let out = cli
        .json(&[
            "runs",
            "log",
            &run,
            "--param",
            "lr=0.1",
            "--param",
            "epochs=3",
            "--metric",
            "loss=0.5@1",
            "--metric",
            "loss=0.25@2",
            "--metric",
            "acc=0.9",
        ])
        .await;
    assert_eq!(out["metrics"], 3, "{out}");
    assert_eq!(out["params"], 2, "{out}");

    // Artifacts: a multi-MiB file in parts (threshold lowered), a small one in one PUT.
    let (weights, weights_sha) = data_file(work.path(), "weights.bin", 5, 20 * MIB + 12_345);
    let out = cli
        .json(&[
            "artifacts",
            "push",
            &run,
            weights.to_str().unwrap(),
            "--path",
            "model/weights.bin",
            "--multipart-threshold",
            "8MiB",
        ])
        .await;
    assert_eq!(
        out["artifact"]["sha256"],
        Value::String(weights_sha.clone()),
        "{out}"
    );
    assert_eq!(out["artifact"]["size"], 20 * MIB + 12_345);
    let config = work.path().join("config.json");
    std::fs::write(&config, br#"{"layers": 50}"#).unwrap();
    let out = cli
        .json(&[
            "artifacts",
            "push",
            &run,
            config.to_str().unwrap(),
            "--path",
            "model/config.json",
        ])
        .await;
    assert_eq!(out["artifact"]["path"], "model/config.json", "{out}");
    // Resumable-upload state is removed once an upload completes.
    let uploads = cli.config_home().join("custody").join("uploads");
    let leftovers: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "upload state left behind: {leftovers:?}"
    );

    let back = work.path().join("back.bin");
    let out = cli
        .json(&[
            "artifacts",
            "pull",
            "run",
            &run,
            "model/weights.bin",
            "-o",
            back.to_str().unwrap(),
        ])
        .await;
    assert_eq!(
        out["artifact"]["sha256"],
        Value::String(weights_sha.clone()),
        "{out}"
    );
    assert_eq!(
        file_sha256(&back),
        weights_sha,
        "the pulled file differs from the pushed one"
    );

    let shown = cli.json(&["runs", "show", &run]).await;
    assert_eq!(shown["run"]["status"], "RUNNING");
    assert_eq!(
        shown["run"]["params"].as_array().unwrap().len(),
        2,
        "{shown}"
    );
    assert_eq!(shown["metrics"].as_array().unwrap().len(), 3, "{shown}");
    assert_eq!(
        shown["run"]["codeCommit"]["commit"],
        Value::String(commit.clone())
    );
    assert_eq!(shown["run"]["artifacts"].as_array().unwrap().len(), 2);
    let out = cli.json(&["runs", "finish", &run]).await;
    assert_eq!(out["run"]["status"], "FINISHED", "{out}");

    // A model version from the run's files under model/.
    let out = cli
        .json(&[
            "models",
            "register",
            "--project",
            "vision",
            "--model",
            "classifier",
            "--run",
            &run,
            "--artifact-path",
            "model",
        ])
        .await;
    let mv = out["modelVersion"]["id"].as_str().unwrap().to_owned();
    assert_eq!(out["modelVersion"]["version"], 1, "{out}");
    assert_eq!(
        out["modelVersion"]["artifacts"].as_array().unwrap().len(),
        2,
        "{out}"
    );
    let cfg_back = work.path().join("cfg.json");
    // The version's paths are relative to the artifact path it was registered from.
    cli.json(&[
        "artifacts",
        "pull",
        "model-version",
        &mv,
        "config.json",
        "-o",
        cfg_back.to_str().unwrap(),
    ])
    .await;
    assert_eq!(
        std::fs::read(&cfg_back).unwrap(),
        std::fs::read(&config).unwrap()
    );

    // Promotions: development applies at once; staging waits for an approver.
    let out = cli
        .json(&["promote", "request", &mv, "--stage", "development"])
        .await;
    assert_eq!(out["promotion"]["status"], "APPLIED", "{out}");
    assert_eq!(out["promotion"]["stage"], "development");
    let out = cli
        .json(&[
            "promote",
            "request",
            &mv,
            "--stage",
            "staging",
            "--comment",
            "ready for QA",
        ])
        .await;
    assert_eq!(out["promotion"]["status"], "PENDING", "{out}");
    let promotion = out["promotion"]["id"].as_str().unwrap().to_owned();
    let status = cli.json(&["promote", "status", &promotion]).await;
    assert_eq!(status["promotion"]["status"], "PENDING", "{status}");
    assert_eq!(status["promotion"]["requiredApprovals"], 1);
    let r = cli.run(&["promote", "status", &promotion]).await;
    assert!(
        r.code == 0 && r.stdout.contains("waiting for approvals"),
        "{r}"
    );

    // The approver is appointed by another project admin: one appointed by the requester would
    // not count (separation of duties).
    let lead = env.issue_token("lead@example.com", false).await;
    fixtures::add_member(
        &env.server,
        &env.admin,
        "vision",
        "lead@example.com",
        "ADMIN",
    )
    .await;
    fixtures::add_member(
        &env.server,
        &lead,
        "vision",
        "approver@example.com",
        "APPROVER",
    )
    .await;
    let approver = env_user(&env, &env.issue_token("approver@example.com", false).await);
    let out = approver
        .json(&["promote", "approve", &promotion, "--comment", "lgtm"])
        .await;
    assert_eq!(out["promotion"]["status"], "APPLIED", "{out}");
    let status = cli.json(&["promote", "status", &promotion]).await;
    let approvals = status["promotion"]["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{status}");
    assert_eq!(approvals[0]["approver"]["email"], "approver@example.com");
    assert_eq!(approvals[0]["via"], "API");
    let data = env
        .gql_ok(&env.admin, "query { modelVersion(project: \"vision\", model: \"classifier\", version: 1) { stage } }", serde_json::json!({}))
        .await;
    assert_eq!(data["modelVersion"]["stage"], "staging");

    // Production without an evaluation dataset: the default policy denies it (exit 5).
    let r = cli
        .run(&["promote", "request", &mv, "--stage", "production", "--json"])
        .await;
    assert_eq!(r.code, 5, "{r}");
    assert_eq!(r.json()["promotion"]["status"], "DENIED", "{r}");
    assert_eq!(r.error_json()["error"]["code"], "POLICY_DENIED", "{r}");
    assert!(
        r.error_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("evaluation dataset"),
        "{r}"
    );

    // Lineage as a tree, both ways.
    let r = cli
        .run(&["lineage", "show", "model-version", &mv, "--depth", "5"])
        .await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.starts_with(&format!("model version {mv}\n")),
        "{r}"
    );
    for needle in [
        format!("produced_by → run {run}"),
        format!("consumed → dataset version {dv1}"),
        "ran → code commit ".to_string(),
    ] {
        assert!(
            r.stdout.contains(&needle),
            "the upstream tree lacks `{needle}`:\n{}",
            r.stdout
        );
    }
    let r = cli
        .run(&[
            "lineage",
            "show",
            "dataset-version",
            &dv1,
            "--direction",
            "down",
            "--depth",
            "5",
        ])
        .await;
    assert_eq!(r.code, 0, "{r}");
    for needle in [
        format!("consumed ← run {run}"),
        format!("produced_by ← model version {mv}"),
        "derived_from ← dataset version".into(),
    ] {
        assert!(
            r.stdout.contains(&needle),
            "the downstream tree lacks `{needle}`:\n{}",
            r.stdout
        );
    }
    let graph = cli
        .json(&["lineage", "show", "run", &run, "--depth", "1"])
        .await;
    let edges = graph["lineage"]["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e["relation"] == "consumed" && e["to"]["id"] == Value::String(dv1.clone())),
        "{graph}"
    );
    assert_eq!(
        graph["lineage"]["nodes"][0]["id"],
        Value::String(run.clone()),
        "the start node comes first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_scripts_can_trust() {
    let env = TestEnv::start().await;
    let work = tempfile::tempdir().unwrap();
    let admin = login(&env, &env.admin).await;
    admin.json(&["projects", "create", "p"]).await;
    let run = admin.json(&["runs", "start", "--project", "p"]).await["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let small = work.path().join("small.txt");
    std::fs::write(&small, b"hello").unwrap();

    // 3: not found.
    let nobody = random_id();
    assert_fails(
        &admin.run(&["runs", "finish", &nobody, "--json"]).await,
        3,
        "NOT_FOUND",
    );
    assert_fails(
        &admin.run(&["runs", "show", &nobody, "--json"]).await,
        3,
        "NOT_FOUND",
    );
    assert_fails(
        &admin.run(&["promote", "status", &nobody, "--json"]).await,
        3,
        "NOT_FOUND",
    );
    assert_fails(
        &admin
            .run(&[
                "promote", "request", &nobody, "--stage", "staging", "--json",
            ])
            .await,
        3,
        "NOT_FOUND",
    );
    let out = work.path().join("nothing.bin");
    assert_fails(
        &admin
            .run(&[
                "artifacts",
                "pull",
                "run",
                &run,
                "no/such/file",
                "-o",
                out.to_str().unwrap(),
                "--json",
            ])
            .await,
        3,
        "NOT_FOUND",
    );
    assert!(!out.exists(), "a failed pull must leave no file");
    assert_fails(
        &admin
            .run(&[
                "models",
                "register",
                "--project",
                "no-such-project",
                "--model",
                "m",
                "--run",
                &run,
                "--json",
            ])
            .await,
        3,
        "NOT_FOUND",
    );

    // 4: forbidden (a viewer writes) and unauthenticated.
    fixtures::add_member(&env.server, &env.admin, "p", "viewer@example.com", "VIEWER").await;
    let viewer = env_user(&env, &env.issue_token("viewer@example.com", false).await);
    assert_fails(
        &viewer
            .run(&["runs", "log", &run, "--metric", "loss=1", "--json"])
            .await,
        4,
        "FORBIDDEN",
    );
    assert_fails(
        &viewer
            .run(&["artifacts", "push", &run, small.to_str().unwrap(), "--json"])
            .await,
        4,
        "FORBIDDEN",
    );
    assert_fails(
        &viewer
            .run(&["runs", "finish", &run, "--status", "killed", "--json"])
            .await,
        4,
        "FORBIDDEN",
    );
    let outsider = env_user(&env, &env.issue_token("outsider@example.com", false).await);
    let r = outsider
        .run(&["runs", "log", &run, "--param", "a=b", "--json"])
        .await;
    assert!(
        r.code == 4 || r.code == 3,
        "an outsider must be refused (forbidden or not found):\n{r}"
    );
    assert_fails(
        &env_user(&env, "bad-token")
            .run(&["projects", "list", "--json"])
            .await,
        4,
        "UNAUTHENTICATED",
    );
    // Text mode says what to do.
    let r = viewer
        .run(&["runs", "log", &run, "--metric", "loss=1"])
        .await;
    assert!(
        r.stderr.contains("error:") && r.stderr.contains("hint:"),
        "{r}"
    );

    // 5: conflicts and invalid input.
    admin
        .json(&["runs", "log", &run, "--param", "lr=0.1"])
        .await;
    admin
        .json(&["runs", "log", &run, "--param", "lr=0.1"])
        .await; // the same value again: a no-op
    assert_fails(
        &admin
            .run(&["runs", "log", &run, "--param", "lr=0.2", "--json"])
            .await,
        5,
        "CONFLICT",
    );
    assert_fails(
        &admin.run(&["projects", "create", "p", "--json"]).await,
        5,
        "CONFLICT",
    );
    admin
        .json(&[
            "artifacts",
            "push",
            &run,
            small.to_str().unwrap(),
            "--path",
            "f.txt",
        ])
        .await;
    std::fs::write(&small, b"other bytes").unwrap();
    assert_fails(
        &admin
            .run(&[
                "artifacts",
                "push",
                &run,
                small.to_str().unwrap(),
                "--path",
                "f.txt",
                "--json",
            ])
            .await,
        5,
        "CONFLICT",
    );
    assert_fails(
        &admin
            .run(&[
                "artifacts",
                "push",
                &run,
                small.to_str().unwrap(),
                "--path",
                "../up",
                "--json",
            ])
            .await,
        5,
        "INVALID_INPUT",
    );
    admin
        .json(&["runs", "finish", &run, "--status", "failed"])
        .await;
    assert_fails(
        &admin
            .run(&["runs", "log", &run, "--metric", "late=1", "--json"])
            .await,
        5,
        "CONFLICT",
    );

    // 2: usage (a missing local file is a usage error, not a server error).
    let r = admin
        .run(&["artifacts", "push", &run, "/no/such/file", "--json"])
        .await;
    assert_fails(&r, 2, "USAGE");

    // 1: the server is unreachable.
    let r = Cli::new()
        .with_env("CUSTODY_URL", "http://127.0.0.1:9")
        .with_env("CUSTODY_TOKEN", &env.admin)
        .run(&["projects", "list", "--json"])
        .await;
    assert_fails(&r, 1, "UNREACHABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_streams_to_a_file() {
    let env = TestEnv::start().await;
    let work = tempfile::tempdir().unwrap();
    let cli = login(&env, &env.admin).await;
    cli.json(&["projects", "create", "audited"]).await;
    cli.json(&["runs", "start", "--project", "audited", "--name", "r"])
        .await;

    let file = work.path().join("audit.jsonl");
    let out = cli
        .json(&["audit", "export", "-o", file.to_str().unwrap()])
        .await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(out["export"]["bytes"], text.len() as u64, "{out}");
    assert_eq!(
        out["export"]["sha256"],
        Value::String(hex::encode(Sha256::digest(text.as_bytes())))
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.len() >= 2,
        "the export holds the project's creation and the run's start:\n{text}"
    );
    assert!(text.contains("audited"), "{text}");

    let csv = work.path().join("audit.csv");
    let out = cli
        .json(&[
            "audit",
            "export",
            "--format",
            "csv",
            "--project",
            "audited",
            "-o",
            csv.to_str().unwrap(),
        ])
        .await;
    assert!(out["export"]["bytes"].as_u64().unwrap() > 0, "{out}");
    assert!(std::fs::read_to_string(&csv).unwrap().lines().count() >= 2);

    // A bad period is the server's INVALID_INPUT: exit 5, and no file is left.
    let bad = work.path().join("bad.jsonl");
    let r = cli
        .run(&[
            "audit",
            "export",
            "--from",
            "yesterday-ish",
            "-o",
            bad.to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_fails(&r, 5, "INVALID_INPUT");
    assert!(!bad.exists());
    // Members who are not admins or auditors may not export the whole log.
    let member = env_user(&env, &env.issue_token("someone@example.com", false).await);
    let r = member
        .run(&["audit", "export", "-o", bad.to_str().unwrap(), "--json"])
        .await;
    assert_fails(&r, 4, "FORBIDDEN");
}

/// An auditor with the client tools alone: the export and the public key come from the server
/// (the key without a token), `custody audit verify` checks the file offline with no login, gives
/// the same verdict as `custody-server audit verify`, and names the seq of an altered or removed
/// entry with exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verifies_an_export_offline_and_names_the_tampered_seq() {
    use custody_tests::export_helpers::{line_of_seq, lines, save_public_key, verify, write};

    let env = TestEnv::start().await;
    let s = &env.server;
    let work = tempfile::tempdir().unwrap();
    fixtures::create_project(s, &env.admin, "verified").await;
    for name in ["a", "b", "c", "d"] {
        fixtures::create_dataset(s, &env.admin, "verified", name).await;
    }
    let admin = env_user(&env, &env.admin);
    let file = work.path().join("audit.jsonl");
    admin
        .json(&["audit", "export", "-o", file.to_str().unwrap()])
        .await;
    let key = save_public_key(s, work.path(), "jwk").await;
    let body = std::fs::read(&file).unwrap();
    let all = lines(&body);
    let entries = all.len() as i64 - 1;
    assert!(entries >= 5, "{}", String::from_utf8_lossy(&body));

    // No login, no server URL: the file and the key are all it needs.
    let auditor = Cli::new();
    let verify_cli = |path: PathBuf, json: bool| {
        let auditor = &auditor;
        let key = key.clone();
        async move {
            let mut args = vec![
                "audit".to_owned(),
                "verify".to_owned(),
                path.to_str().unwrap().to_owned(),
                "--public-key".to_owned(),
                key.to_str().unwrap().to_owned(),
            ];
            if json {
                args.push("--json".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            auditor.run(&args).await
        }
    };
    let ok = verify_cli(file.clone(), false).await;
    assert_eq!(ok.code, 0, "{ok}");
    assert!(
        ok.stdout.starts_with(&format!(
            "OK {}: {entries} entries, seq 1..{entries}",
            file.display()
        )),
        "{ok}"
    );
    assert!(ok.stderr.is_empty(), "{ok}");
    // The very verdict of the server's own command.
    let server_verdict = verify(&file, &key, &[]).await;
    server_verdict.assert_ok();
    assert_eq!(ok.stdout, server_verdict.output);

    // One byte of a middle entry changed (a letter of its action: still valid JSON).
    let seq = entries / 2;
    let i = line_of_seq(&all, seq);
    let mut altered = all.clone();
    let field = b"\"action\":\"";
    let at = altered[i]
        .windows(field.len())
        .position(|w| w == field)
        .unwrap()
        + field.len();
    altered[i][at] ^= 0x01;
    let altered_file = write(work.path(), "altered.jsonl", &altered.concat());
    let failed = verify_cli(altered_file.clone(), false).await;
    assert_eq!(failed.code, 1, "{failed}");
    assert!(
        failed.stdout.starts_with(&format!(
            "FAILED {}: altered content at seq {seq} (line {})",
            altered_file.display(),
            i + 1
        )),
        "{failed}"
    );
    assert!(
        failed.stderr.is_empty(),
        "the verdict is the only message: {failed}"
    );
    assert_eq!(
        failed.stdout,
        verify(&altered_file, &key, &[]).await.output,
        "the same verdict as custody-server's"
    );

    // One entry removed: exit 1 naming the missing seq, also as JSON.
    let mut removed = all.clone();
    removed.remove(i);
    let removed_file = write(work.path(), "removed.jsonl", &removed.concat());
    let failed = verify_cli(removed_file.clone(), false).await;
    assert_eq!(failed.code, 1, "{failed}");
    assert!(
        failed.stdout.starts_with(&format!(
            "FAILED {}: missing entry at seq {seq}",
            removed_file.display()
        )),
        "{failed}"
    );
    let failed = verify_cli(removed_file, true).await;
    assert_eq!(failed.code, 1, "{failed}");
    let verdict = failed.json();
    assert_eq!(verdict["verdict"]["ok"], false, "{failed}");
    assert_eq!(verdict["verdict"]["problems"][0]["kind"], "missing entry");
    assert_eq!(verdict["verdict"]["problems"][0]["seq"], seq);
    assert!(failed.stderr.is_empty(), "{failed}");

    // A key that is not the server's: the signature does not verify.
    let other = write(
        work.path(),
        "other.pem",
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n",
    );
    let r = auditor
        .run(&[
            "audit",
            "verify",
            file.to_str().unwrap(),
            "--public-key",
            other.to_str().unwrap(),
        ])
        .await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("bad signature"), "{r}");
    // A missing key file is a usage error, a file that holds no key an error: neither a verdict.
    let r = auditor
        .run(&[
            "audit",
            "verify",
            file.to_str().unwrap(),
            "--public-key",
            work.path().join("absent.jwk").to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_fails(&r, 2, "USAGE");
    let r = auditor
        .run(&[
            "audit",
            "verify",
            file.to_str().unwrap(),
            "--public-key",
            file.to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_fails(&r, 1, "ERROR");
    assert!(r.stdout.is_empty(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_search_filters_orders_and_refuses_bad_filters() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    fixtures::create_project(s, a, "found").await;
    for (name, auc) in [("low", 0.2), ("mid", 0.6), ("high", 0.9)] {
        let run = fixtures::id(&fixtures::start_run(s, a, "found", name, None, &[]).await);
        fixtures::log_metrics(
            s,
            a,
            &run,
            serde_json::json!([{ "key": "auc", "value": auc }]),
        )
        .await;
    }
    let cli = env_user(&env, a);
    let out = cli
        .json(&[
            "runs",
            "search",
            "--project",
            "found",
            "--filter",
            "metrics.auc > 0.5",
            "--order-by",
            "metrics.auc DESC",
        ])
        .await;
    let names: Vec<&str> = out["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["high", "mid"], "{out}");
    let out = cli
        .json(&[
            "runs",
            "search",
            "--limit",
            "1",
            "--order-by",
            "attributes.run_name",
        ])
        .await;
    assert_eq!(out["runs"][0]["name"], "high", "{out}");
    assert_eq!(out["runs"].as_array().unwrap().len(), 1);

    let failed = cli
        .run(&["runs", "search", "--filter", "metrics.auc >> 1", "--json"])
        .await;
    let error = failed.error_json();
    assert_eq!(error["error"]["code"], "INVALID_INPUT", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("column 14"),
        "{error}"
    );
}
