//! Attacks through the server's outbound calls, its files and its database role, played against
//! the real binary (issue #9, section 4): webhooks aimed at loopback, private and metadata
//! addresses (literal, through a name, through a redirect), the data directory and mailed
//! approval links readable by other local users, a runtime database role that could disable the
//! audit triggers, and secrets of URLs written to the log.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use custody_tests::db::{connect, count, db_error_text};
use custody_tests::fixtures::{self, id};
use custody_tests::governance::{
    decide_via_link, page_client, request, start_env, wait_until, Fixture, FAST_OUTBOX,
};
use custody_tests::server::tail;
use custody_tests::smtp::ReceivedMail;
use custody_tests::webhook::{WebhookReceiver, ALLOW_RECEIVER};
use custody_tests::{pg::PgCluster, Server, TestDb, TestEnv};

const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const ADD_WEBHOOK: &str =
    "mutation($p: String!, $u: String!) { addWebhook(project: $p, url: $u) { id url } }";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A promotion to production of a fresh version: PENDING, so it queues mails to the approvers
/// and a `promotion.requested` call to every webhook of the project.
async fn pending_promotion(env: &TestEnv, f: &Fixture) -> String {
    let mv = f.evaluated_version(&env.server, &[("auc", 0.9)]).await;
    let p = request(&env.server, &f.requester, &mv, "production", None).await;
    assert_eq!(p["status"], "PENDING", "{p}");
    id(&p)
}

/// The webhook calls of the outbox: (attempts, last_error, failed).
async fn webhook_rows(env: &TestEnv) -> Vec<(i32, String, bool)> {
    env.sql()
        .await
        .query(
            "SELECT attempts, coalesce(last_error, ''), failed_at IS NOT NULL FROM outbox \
             WHERE kind = 'webhook' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Waits until every webhook call of the outbox is marked failed, and answers them.
async fn all_webhooks_failed(env: &TestEnv, n: usize) -> Vec<(i32, String, bool)> {
    wait_until(
        "every webhook call to be marked failed",
        Duration::from_secs(40),
        || async {
            let rows = webhook_rows(env).await;
            (rows.len() == n && rows.iter().all(|r| r.2)).then_some(rows)
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// 5. Webhooks never reach loopback, private, link-local or metadata addresses

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_registration_refuses_private_addresses_and_other_schemes() {
    let env = TestEnv::start().await;
    let s = &env.server;
    fixtures::create_project(s, &env.admin, "hooks").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://127.1/hook",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://10.1.2.3/hook",
        "http://172.16.5.4/hook",
        "http://192.168.0.10/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://0.0.0.0:8080/",
        "http://224.0.0.1/",
        "http://[::1]:8080/hook",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "not a url",
    ] {
        env.assert_refused(
            &env.admin,
            "INVALID_INPUT",
            ADD_WEBHOOK,
            json!({"p": "hooks", "u": url}),
        )
        .await;
    }
    // Host names pass registration: they are checked when called, once resolved.
    let hook = env
        .gql_ok(
            &env.admin,
            ADD_WEBHOOK,
            json!({"p": "hooks", "u": "https://hooks.example.com/custody"}),
        )
        .await;
    assert_eq!(
        hook["addWebhook"]["url"],
        "https://hooks.example.com/custody"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_named_localhost_is_never_called_and_fails_for_good() {
    let receiver = WebhookReceiver::start().await;
    let mut args: Vec<&str> = FAST_OUTBOX.to_vec();
    args.extend(["--webhook-max-attempts", "2"]);
    let env = start_env(&args, &[]).await;
    let f = Fixture::build(&env, &[BOB]).await;
    // `localhost` resolves to 127.0.0.1 (and ::1): accepted as a name, refused when called.
    let url = format!("http://localhost:{}/hook", receiver.port);
    env.gql_ok(&env.admin, ADD_WEBHOOK, json!({"p": f.project, "u": url}))
        .await;
    pending_promotion(&env, &f).await;

    let rows = all_webhooks_failed(&env, 1).await;
    let (attempts, error, _) = &rows[0];
    assert_eq!(*attempts, 2, "{rows:?}");
    assert!(
        error.contains("localhost resolves to") && error.contains("loopback"),
        "{error}"
    );
    assert!(receiver.calls().is_empty(), "the receiver was called");
    // Failed calls are not retried any more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(webhook_rows(&env).await, rows);
    assert!(receiver.calls().is_empty());
    let log = env.server.log();
    assert!(
        log.contains("delivery failed for good"),
        "{}",
        tail(&log, 40)
    );
    // The mails of the same event were delivered all the same.
    assert_eq!(
        count(
            &env.sql().await,
            "outbox WHERE kind = 'email' AND delivered_at IS NULL"
        )
        .await,
        0
    );
}

/// A small HTTP server that answers every request with a redirect to `location(path)`, and
/// records the paths it was asked for.
struct Redirector {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Redirector {
    async fn start(bind: &str, location: fn(&str) -> Option<String>) -> Redirector {
        let listener = TcpListener::bind((bind, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    // The request head and its (small) body.
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).into_owned();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().to_string())
                                })
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            if body.len() >= length {
                                break;
                            }
                        }
                    }
                    let text = String::from_utf8_lossy(&got).into_owned();
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push(path.clone());
                    let answer = match location(&path) {
                        Some(to) => format!(
                            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                        None => "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into(),
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Redirector { port, hits, task }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

static METADATA_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
static SELF_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_follow_no_redirect_and_recheck_literal_addresses_when_called() {
    // A stand-in for a metadata service on 127.0.0.2 (outside the allow-list), and a
    // receiver on 127.0.0.1 (allowed) that redirects `/to-metadata` there and `/to-self` to
    // its own `/followed`.
    let metadata = Redirector::start("127.0.0.2", |_| None).await;
    METADATA_PORT.set(metadata.port).unwrap();
    let receiver = Redirector::start("127.0.0.1", |path| match path {
        "/to-metadata" => Some(format!(
            "http://127.0.0.2:{}/latest/meta-data/",
            METADATA_PORT.get().unwrap()
        )),
        "/to-self" => Some(format!(
            "http://127.0.0.1:{}/followed",
            SELF_PORT.get().unwrap()
        )),
        _ => None,
    })
    .await;
    SELF_PORT.set(receiver.port).unwrap();

    let mut args: Vec<&str> = FAST_OUTBOX.to_vec();
    args.extend(["--webhook-max-attempts", "2"]);
    let mut env = start_env(&args, &[ALLOW_RECEIVER]).await;
    let f = Fixture::build(&env, &[BOB, CAROL]).await;
    for path in ["/to-metadata", "/to-self"] {
        let url = format!("http://127.0.0.1:{}{path}", receiver.port);
        env.gql_ok(&env.admin, ADD_WEBHOOK, json!({"p": f.project, "u": url}))
            .await;
    }
    pending_promotion(&env, &f).await;
    let rows = all_webhooks_failed(&env, 2).await;
    for (attempts, error, _) in &rows {
        assert_eq!(*attempts, 2, "{rows:?}");
        assert!(error.contains("302"), "{error}");
    }
    let mut hits = receiver.hits();
    hits.sort();
    assert_eq!(
        hits,
        ["/to-metadata", "/to-metadata", "/to-self", "/to-self"],
        "a redirect was followed"
    );
    assert!(
        metadata.hits().is_empty(),
        "the metadata stand-in was called"
    );

    // The same (literal) addresses, once the allow-list is gone, are refused when called:
    // the check is made at every delivery, not only at registration.
    env.server.extra_env.clear();
    env.server.restart().await;
    pending_promotion(&env, &f).await;
    let rows = all_webhooks_failed(&env, 4).await;
    for (_, error, _) in &rows[2..] {
        assert!(error.contains("loopback"), "{error}");
    }
    assert_eq!(receiver.hits().len(), 4, "called without the allow-list");
    assert!(metadata.hits().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. The data directory and mailed approval links are private

/// The `.eml` files of `<data-dir>/outbox`, once `n` were written.
async fn mails(data_dir: &Path, n: usize) -> Vec<std::path::PathBuf> {
    let outbox = data_dir.join("outbox");
    wait_until("the approval mails", Duration::from_secs(30), || async {
        let files: Vec<_> = std::fs::read_dir(&outbox)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        (files.len() >= n).then_some(files)
    })
    .await
}

fn approval_link(eml: &Path) -> String {
    ReceivedMail {
        from: String::new(),
        to: Vec::new(),
        raw: std::fs::read(eml).unwrap(),
    }
    .approval_link()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_mailed_links_are_private() {
    let mut env = start_env(&FAST_OUTBOX, &[]).await;
    let data_dir = env.server.data_dir.clone();
    // The harness created it 0755; the server made it private.
    assert_eq!(mode(&data_dir), 0o700, "the data directory");
    for file in ["admin.token", "jwt.key"] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
    }
    let f = Fixture::build(&env, &[BOB]).await;
    pending_promotion(&env, &f).await;
    let files = mails(&data_dir, 1).await;
    assert_eq!(
        mode(&data_dir.join("outbox")),
        0o700,
        "the outbox directory"
    );
    for eml in &files {
        assert_eq!(mode(eml), 0o600, "{}", eml.display());
        assert!(approval_link(eml).contains("/approve/"));
    }
    // Loosened by hand, tightened again at the next start.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.server.restart().await;
    assert_eq!(mode(&data_dir), 0o700, "the data directory after a restart");
}

// ---------------------------------------------------------------------------------------------
// 7. The server's database role cannot disable, drop or bypass the audit triggers

/// Statements the runtime role must be refused, each with "permission denied" or "must be
/// owner" (SQLSTATE 42501).
const TAMPERING: &[&str] = &[
    "ALTER TABLE audit_log DISABLE TRIGGER ALL",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
    "DROP TRIGGER audit_log_no_update_delete ON audit_log",
    "DROP TRIGGER audit_log_no_truncate ON audit_log",
    "DROP FUNCTION audit_log_refuse_change() CASCADE",
    "TRUNCATE audit_log",
    "UPDATE audit_log SET actor = 'nobody'",
    "DELETE FROM audit_log",
    "DROP TABLE audit_log",
    "ALTER TABLE audit_log OWNER TO CURRENT_USER",
    "TRUNCATE outbox",
    "UPDATE audit_checkpoints SET hash = hash",
];

async fn assert_cannot_tamper(sql: &tokio_postgres::Client, role: &str) {
    let before = custody_tests::Snapshot::take(sql).await;
    for statement in TAMPERING {
        let err = sql
            .batch_execute(statement)
            .await
            .expect_err(&format!("{role} may run `{statement}`"));
        let code = err.as_db_error().map(|e| e.code().code().to_string());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "`{statement}` as {role}: {}",
            db_error_text(&err)
        );
    }
    // Its ordinary rights are intact: it reads the log and writes rows.
    let n: i64 = sql
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    before.assert_unchanged(&custody_tests::Snapshot::take(sql).await, "the tampering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_runtime_role_cannot_touch_the_audit_triggers() {
    let mut server = Server::start(None).await;
    let data_dir = server.data_dir.clone();
    let socket = data_dir.join("pg").join("run");
    fixtures::create_project(&server, &server.admin_token, "roles").await;

    // The server's own connections are the runtime role's.
    let superuser = connect(&format!(
        "host={} user=custody dbname=custody",
        socket.display()
    ))
    .await;
    let roles: Vec<String> = superuser
        .query(
            "SELECT DISTINCT usename::text FROM pg_stat_activity \
             WHERE datname = 'custody' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(roles, ["custody_app"], "roles connected to the database");
    let owners: Vec<String> = superuser
        .query(
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, ["custody_owner"]);
    let superuser_flags: bool = superuser
        .query_one(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls FROM pg_roles \
             WHERE rolname = 'custody_app'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser_flags, "custody_app has special rights");

    let app = connect(&format!(
        "host={} user=custody_app dbname=custody",
        socket.display()
    ))
    .await;
    assert_cannot_tamper(&app, "custody_app").await;
    let err = app
        .batch_execute("SET ROLE custody_owner")
        .await
        .expect_err("custody_app may become the owner");
    assert!(
        db_error_text(&err).contains("permission denied"),
        "{}",
        db_error_text(&err)
    );

    // Running as root, the `postgres` user runs the cluster and may only traverse the data
    // directory; otherwise the directory is the server user's alone.
    let meta = std::fs::metadata(&data_dir).unwrap();
    if custody_tests::pg::is_root() {
        let (_, postgres_gid) = custody_tests::pg::postgres_ids().unwrap();
        assert_eq!(mode(&data_dir), 0o710, "the data directory");
        assert_eq!(meta.gid(), postgres_gid, "the data directory's group");
    } else {
        assert_eq!(mode(&data_dir), 0o700, "the data directory");
    }
    let st = server.stop().await;
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_of_the_tests_serve_as_a_runtime_role() {
    // The harness runs every server against its database as `custody_runtime`, migrated by
    // the superuser: the whole suite then proves the runtime grants suffice.
    let env = TestEnv::start().await;
    fixtures::create_project(&env.server, &env.admin, "harness").await;
    let roles: Vec<String> = env
        .sql()
        .await
        .query(
            "SELECT DISTINCT usename::text FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(roles, [custody_tests::pg::RUNTIME_ROLE]);
    let app = connect(&PgCluster::server_urls(&env.db.url).unwrap().0).await;
    assert_cannot_tamper(&app, custody_tests::pg::RUNTIME_ROLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_database_with_a_separate_migration_role() {
    let db = TestDb::create().await;
    let cluster = custody_tests::blocking(PgCluster::get).await;
    let role = format!("runtime_{}", db.name);
    cluster
        .psql(&format!("CREATE ROLE {role} LOGIN"))
        .expect("creating the runtime role");
    let runtime_url = cluster
        .url(&db.name)
        .replace("://custody@", &format!("://{role}@"));
    // DATABASE_URL is the runtime role; the superuser owns the schema and migrates.
    let server = Server::start_with(
        Some(&runtime_url),
        &[],
        &[("CUSTODY_MIGRATION_DATABASE_URL", &db.url)],
    )
    .await;
    let admin = server.admin_token.clone();
    let env = TestEnv { server, db, admin };
    fixtures::create_project(&env.server, &env.admin, "external").await;
    env.gql_ok(
        &env.admin,
        "{ project(name: \"external\") { name } }",
        json!({}),
    )
    .await;
    let app = connect(&runtime_url).await;
    assert_cannot_tamper(&app, &role).await;
}

// ---------------------------------------------------------------------------------------------
// 8. Secrets in URLs never reach the log

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_urls_never_reach_the_log() {
    // Debug logging: every event inside a request carries the request span, target included.
    let env = start_env(&FAST_OUTBOX, &[("RUST_LOG", "debug")]).await;
    let s = &env.server;
    let mut secrets = Vec::new();

    // A mailed approval link, opened and decided through its page.
    let f = Fixture::build(&env, &[BOB]).await;
    pending_promotion(&env, &f).await;
    let files = mails(&s.data_dir, 1).await;
    let link = approval_link(&files[0]);
    let (status, body) = decide_via_link(&page_client(), &link, "approve", "ok").await;
    assert_eq!(status, 200, "{body}");
    secrets.push(link.rsplit('/').next().unwrap().to_string());

    // A direct upload (part URL with ?token=) and a direct download link.
    let run = id(&fixtures::start_run(s, &env.admin, &f.project, "direct", None, &[]).await);
    let bytes = b"model weights".to_vec();
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let upload = env
        .gql_ok(
            &env.admin,
            "mutation($o: ID!, $s: Sha256!, $n: Int!) { createArtifactUpload(ownerKind: RUN, ownerId: $o,
               path: \"m.bin\", sha256: $s, sizeBytes: $n) { id parts { partNumber url } } }",
            json!({"o": run, "s": digest, "n": bytes.len()}),
        )
        .await["createArtifactUpload"]
        .clone();
    let part_url = upload["parts"][0]["url"].as_str().unwrap().to_string();
    let r = s
        .http
        .put(&part_url)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    secrets.push(part_url.split("token=").nth(1).unwrap().to_string());
    env.gql_ok(
        &env.admin,
        "mutation($u: ID!, $p: [CompletedPartInput!]!) { completeArtifactUpload(uploadId: $u, parts: $p) { sha256 } }",
        json!({"u": upload["id"], "p": [{"partNumber": 1, "etag": etag}]}),
    )
    .await;
    let download = env
        .gql_ok(
            &env.admin,
            "query($o: ID!) { artifactDownloadUrl(ownerKind: RUN, ownerId: $o, path: \"m.bin\") }",
            json!({"o": run}),
        )
        .await["artifactDownloadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.http.get(&download).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    secrets.push(download.rsplit('/').next().unwrap().to_string());

    let log = s.log();
    for secret in &secrets {
        assert!(secret.len() > 20, "not a token: {secret}");
        assert!(
            !log.contains(secret.as_str()),
            "the log holds a token of a URL:\n{}",
            log.lines()
                .filter(|l| l.contains(secret.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The requests were logged, with their targets masked (so the check above is not vacuous).
    for masked in ["/approve/***", "/api/artifacts/download/***", "token=***"] {
        assert!(log.contains(masked), "no `{masked}` in the log");
    }
}
