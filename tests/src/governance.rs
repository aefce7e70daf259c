//! Helpers for the governance tests (issue 4): servers with extra settings (policy bundles, SMTP,
//! a fast outbox), a standard project with a requester and approvers, model versions with their
//! lineage and evaluation runs, promotion mutations, the approval page over plain HTTP, policy
//! bundle directories and polling.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::db::{count, Snapshot};
use crate::fixtures::{self, id};
use crate::server::Server;
use crate::smtp::SmtpServer;
use crate::{commit_sha, sha256_hex, TestDb, TestEnv};
// The governance tests poll through this module's glob import.
pub use crate::wait::wait_until;

/// Everything the tests read of a promotion.
pub const PROMOTION_FIELDS: &str =
    "id status stage comment requiredApprovals approverGroup policyResult policyDigest
    manifestSha256 expiresAt decidedAt requestedBy { email }
    approvals { approver { email } decision comment via authMethod at }
    modelVersion { id version stage }";

/// The outbox worker (and promotion expiry) runs every second in these tests.
pub const FAST_OUTBOX: [&str; 2] = ["--outbox-interval", "1s"];

/// A test's database and a server with extra `serve` arguments and environment.
pub async fn start_env(args: &[&str], env: &[(&str, &str)]) -> TestEnv {
    let db = TestDb::create().await;
    let server = Server::start_with(Some(&db.url), args, env).await;
    let admin = server.admin_token.clone();
    TestEnv { server, db, admin }
}

/// An SMTP server, and a Custody server delivering its mails there (outbox every second), with
/// `args` added (e.g. `--policies DIR`).
pub async fn start_env_with_smtp(args: &[&str]) -> (TestEnv, SmtpServer) {
    let smtp = SmtpServer::start().await;
    let mut all: Vec<&str> = FAST_OUTBOX.to_vec();
    all.extend_from_slice(args);
    let url = smtp.url();
    let env = start_env(&all, &[("CUSTODY_SMTP_URL", url.as_str())]).await;
    (env, smtp)
}

/// Waits until the outbox has delivered every row (so that background delivery cannot change the
/// database while a test compares snapshots).
pub async fn outbox_settled(env: &TestEnv) {
    let sql = env.sql().await;
    wait_until(
        "the outbox to deliver every row",
        Duration::from_secs(30),
        || async { (count(&sql, "outbox WHERE delivered_at IS NULL").await == 0).then_some(()) },
    )
    .await;
}

/// Runs `f` and asserts that the database (every table) is the same afterwards.
pub async fn assert_db_unchanged<T, Fut: Future<Output = T>>(
    env: &TestEnv,
    what: &str,
    f: Fut,
) -> T {
    let sql = env.sql().await;
    let before = Snapshot::take(&sql).await;
    let out = f.await;
    let after = Snapshot::take(&sql).await;
    before.assert_unchanged(&after, what);
    out
}

/// The audit log through the API, its hash chain re-computed from the first entry.
pub async fn verify_audit(env: &TestEnv) -> Vec<Value> {
    let entries = crate::audit::fetch_all(&env.server, &env.admin, "").await;
    crate::audit::verify_chain(&entries)
        .unwrap_or_else(|e| panic!("the audit chain is broken: {e}"));
    entries
}

/// The audit entries with `action` about `subject_id`.
pub fn audit_of<'a>(entries: &'a [Value], action: &str, subject_id: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["action"] == action && e["subjectId"] == subject_id)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A standard project

pub const REQUESTER: &str = "alice@example.com";
pub const PROJECT_ADMIN: &str = "admin@localhost";

/// A project `p` (created by the server admin, so `admin@localhost` is its ADMIN member) with a
/// requester (CONTRIBUTOR), approvers (APPROVER), a training and an evaluation dataset, a clean
/// commit and a model `churn` ranked by `auc` (higher is better).
pub struct Fixture {
    pub project: String,
    pub model: String,
    /// Token of [`REQUESTER`].
    pub requester: String,
    /// (email, token) of each approver, in the order given.
    pub approvers: Vec<(String, String)>,
    pub train_ds: String,
    pub eval_ds: String,
    pub clean_commit: String,
}

impl Fixture {
    pub async fn build(env: &TestEnv, approvers: &[&str]) -> Fixture {
        let s = &env.server;
        let a = &env.admin;
        let project = "p".to_string();
        fixtures::create_project(s, a, &project).await;
        let requester = fixtures::member_token(s, a, &project, REQUESTER, "CONTRIBUTOR").await;
        let mut list = Vec::new();
        for email in approvers {
            let t = fixtures::member_token(s, a, &project, email, "APPROVER").await;
            list.push((email.to_string(), t));
        }
        fixtures::create_dataset(s, a, &project, "transactions").await;
        fixtures::create_dataset(s, a, &project, "holdout").await;
        let train_ds =
            dataset_version(s, a, &project, "transactions", "train-1", &["training"]).await;
        let eval_ds =
            dataset_version(s, a, &project, "holdout", "holdout-1", &["evaluation"]).await;
        let clean_commit =
            code_commit(s, a, "https://git.example.com/churn.git", "clean-1", false).await;
        create_model(s, a, &project, "churn", "auc", true).await;
        Fixture {
            project,
            model: "churn".into(),
            requester,
            approvers: list,
            train_ds,
            eval_ds,
            clean_commit,
        }
    }

    pub fn approver(&self, email: &str) -> &str {
        &self
            .approvers
            .iter()
            .find(|(e, _)| e == email)
            .unwrap_or_else(|| panic!("no approver {email}"))
            .1
    }

    /// A version trained (by the requester) on the training dataset from the clean commit, with
    /// the source run's metrics.
    pub async fn version(&self, s: &Server, metrics: &[(&str, f64)]) -> String {
        trained_version(
            s,
            &self.requester,
            &self.project,
            &self.model,
            Some(&self.clean_commit),
            &[&self.train_ds],
            metrics,
        )
        .await
    }

    /// A version with an evaluation run on the holdout dataset: ready for production.
    pub async fn evaluated_version(&self, s: &Server, metrics: &[(&str, f64)]) -> String {
        let mv = self.version(s, metrics).await;
        add_evaluation(
            s,
            &self.requester,
            &self.project,
            &mv,
            &[&self.eval_ds],
            metrics,
        )
        .await;
        mv
    }
}

pub async fn add_member_with_groups(
    s: &Server,
    token: &str,
    project: &str,
    email: &str,
    role: &str,
    groups: &[&str],
) -> Value {
    fixtures::ensure_account(s, email).await;
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $e: String!, $r: Role!, $g: [String!]) {
               addMember(project: $p, email: $e, role: $r, groups: $g) { role groups user { email } } }",
            json!({ "p": project, "e": email, "r": role, "g": groups }),
        )
        .await;
    d["addMember"].clone()
}

pub async fn create_model(
    s: &Server,
    token: &str,
    project: &str,
    name: &str,
    metric: &str,
    higher_is_better: bool,
) -> String {
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $n: String!, $m: String, $h: Boolean) {
               createModel(project: $p, name: $n, primaryMetric: $m, higherIsBetter: $h) { id name primaryMetric higherIsBetter } }",
            json!({ "p": project, "n": name, "m": metric, "h": higher_is_better }),
        )
        .await;
    assert_eq!(d["createModel"]["primaryMetric"], metric);
    id(&d["createModel"])
}

pub async fn dataset_version(
    s: &Server,
    token: &str,
    project: &str,
    dataset: &str,
    seed: &str,
    tags: &[&str],
) -> String {
    let sha = sha256_hex(seed);
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $d: String!, $u: String!, $s: Sha256!, $t: [String!]) {
               registerDatasetVersion(project: $p, dataset: $d, uri: $u, sha256: $s, sizeBytes: 2048, tags: $t) { id tags } }",
            json!({ "p": project, "d": dataset, "u": format!("s3://data/{dataset}/{seed}"), "s": sha, "t": tags }),
        )
        .await;
    id(&d["registerDatasetVersion"])
}

pub async fn code_commit(
    s: &Server,
    token: &str,
    repository: &str,
    seed: &str,
    dirty: bool,
) -> String {
    let d = s
        .gql_ok(
            token,
            "mutation($r: String!, $c: String!, $d: Boolean) {
               registerCodeCommit(repository: $r, commit: $c, branch: \"main\", dirty: $d) { id dirty } }",
            json!({ "r": repository, "c": commit_sha(seed), "d": dirty }),
        )
        .await;
    assert_eq!(d["registerCodeCommit"]["dirty"], dirty);
    id(&d["registerCodeCommit"])
}

fn metric_inputs(metrics: &[(&str, f64)]) -> Value {
    Value::Array(
        metrics
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v, "step": 1 }))
            .collect(),
    )
}

/// A finished run (from `commit`, consuming `inputs`, logging `metrics`) and the model version it
/// produced; answers the version's id.
pub async fn trained_version(
    s: &Server,
    token: &str,
    project: &str,
    model: &str,
    commit: Option<&str>,
    inputs: &[&str],
    metrics: &[(&str, f64)],
) -> String {
    let run = id(&fixtures::start_run(s, token, project, "train", commit, inputs).await);
    if !metrics.is_empty() {
        fixtures::log_metrics(s, token, &run, metric_inputs(metrics)).await;
    }
    fixtures::finish_run(s, token, &run, "FINISHED").await;
    id(&fixtures::register_model_version(s, token, project, model, &run).await)
}

/// An evaluation run of `mv` (consuming `datasets`, logging `metrics`), linked
/// run —evaluated→ model version; answers the run's id.
pub async fn add_evaluation(
    s: &Server,
    token: &str,
    project: &str,
    mv: &str,
    datasets: &[&str],
    metrics: &[(&str, f64)],
) -> String {
    let run = id(&fixtures::start_run(s, token, project, "evaluate", None, datasets).await);
    if !metrics.is_empty() {
        fixtures::log_metrics(s, token, &run, metric_inputs(metrics)).await;
    }
    fixtures::finish_run(s, token, &run, "FINISHED").await;
    fixtures::link_lineage(
        s,
        token,
        fixtures::node("RUN", &run),
        fixtures::node("MODEL_VERSION", mv),
        "evaluated",
    )
    .await;
    run
}

// ---------------------------------------------------------------------------------------------
// Promotions through GraphQL

pub fn request_mutation() -> String {
    format!(
        "mutation($v: ID!, $s: String!, $c: String) {{ requestPromotion(modelVersionId: $v, stage: $s, comment: $c) {{ {PROMOTION_FIELDS} }} }}"
    )
}

pub fn approve_mutation() -> String {
    format!("mutation($id: ID!, $c: String) {{ approvePromotion(id: $id, comment: $c) {{ {PROMOTION_FIELDS} }} }}")
}

pub fn reject_mutation() -> String {
    format!("mutation($id: ID!, $c: String!) {{ rejectPromotion(id: $id, comment: $c) {{ {PROMOTION_FIELDS} }} }}")
}

pub fn cancel_mutation() -> String {
    format!("mutation($id: ID!) {{ cancelPromotion(id: $id) {{ {PROMOTION_FIELDS} }} }}")
}

pub async fn request(
    s: &Server,
    token: &str,
    mv: &str,
    stage: &str,
    comment: Option<&str>,
) -> Value {
    let d = s
        .gql_ok(
            token,
            &request_mutation(),
            json!({ "v": mv, "s": stage, "c": comment }),
        )
        .await;
    d["requestPromotion"].clone()
}

pub async fn approve(s: &Server, token: &str, promotion: &str, comment: Option<&str>) -> Value {
    let d = s
        .gql_ok(
            token,
            &approve_mutation(),
            json!({ "id": promotion, "c": comment }),
        )
        .await;
    d["approvePromotion"].clone()
}

pub async fn reject(s: &Server, token: &str, promotion: &str, comment: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            &reject_mutation(),
            json!({ "id": promotion, "c": comment }),
        )
        .await;
    d["rejectPromotion"].clone()
}

pub async fn cancel(s: &Server, token: &str, promotion: &str) -> Value {
    let d = s
        .gql_ok(token, &cancel_mutation(), json!({ "id": promotion }))
        .await;
    d["cancelPromotion"].clone()
}

pub async fn promotion(s: &Server, token: &str, promotion: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            &format!("query($id: ID!) {{ promotion(id: $id) {{ {PROMOTION_FIELDS} }} }}"),
            json!({ "id": promotion }),
        )
        .await;
    d["promotion"].clone()
}

pub async fn dry_run(s: &Server, token: &str, mv: &str, stage: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            "query($v: ID!, $s: String!) { promotionDryRun(modelVersionId: $v, stage: $s) {
               deny requiredApprovals approverGroup expiresIn policyDigest input } }",
            json!({ "v": mv, "s": stage }),
        )
        .await;
    d["promotionDryRun"].clone()
}

/// The version's stage, read directly from the database.
pub async fn stage_of(env: &TestEnv, mv: &str) -> Option<String> {
    let sql = env.sql().await;
    let row = sql
        .query_one(
            "SELECT stage FROM model_versions WHERE id = $1::text::uuid",
            &[&mv],
        )
        .await
        .expect("reading model_versions.stage");
    row.get(0)
}

/// The `deny` messages of a promotion's `policyResult`.
pub fn deny_of(p: &Value) -> Vec<String> {
    p["policyResult"]["deny"]
        .as_array()
        .unwrap_or_else(|| panic!("policyResult.deny is not an array: {p}"))
        .iter()
        .map(|d| d.as_str().expect("deny messages are strings").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Policy bundles

/// The repository's `policies/` directory.
pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("policies")
}

/// The default `promotion.rego`.
pub fn default_policy() -> String {
    std::fs::read_to_string(policies_dir().join("promotion.rego"))
        .expect("reading policies/promotion.rego")
}

/// A fresh directory holding these files.
pub fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = crate::server::tmp_dir("custody-test-policies-");
    for (name, content) in files {
        std::fs::write(d.path().join(name), content).unwrap();
    }
    d
}

/// Restarts the server with the default policy changed so that every promotion needs the
/// `privacy` group (not only those trained on PII): a bundle that changes while promotions wait.
/// The returned directory holds the bundle; keep it while the server runs.
pub async fn restart_requiring_the_privacy_group(server: &mut Server) -> tempfile::TempDir {
    let original = default_policy();
    let grouped = original.replace(
        "approver_group := \"privacy\" if trained_on_pii",
        "approver_group := \"privacy\"",
    );
    assert_ne!(
        grouped, original,
        "the default policy no longer has the line this helper rewrites"
    );
    let dir = policy_dir(&[("promotion.rego", &grouped)]);
    server.extra_args.extend([
        "--policies".to_string(),
        dir.path().to_str().unwrap().to_string(),
    ]);
    server.restart().await;
    dir
}

/// The digest the server documents for a bundle: SHA-256 over the sorted `(file name, NUL,
/// content, NUL)` of its `.rego` files, tests (`*_test.rego`) excluded.
pub fn bundle_digest(dir: &Path) -> String {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.ends_with(".rego") && !name.ends_with("_test.rego"))
                .then(|| (name, std::fs::read_to_string(e.path()).unwrap()))
        })
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for (name, content) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(content.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

// ---------------------------------------------------------------------------------------------
// The approval page over plain HTTP (as a mail client, a scanner or a browser without JS would)

/// A GET of an approval link.
#[derive(Debug)]
pub struct LinkPage {
    pub status: u16,
    pub body: String,
    /// `name=value` of the `custody_csrf` cookie set, if any.
    pub cookie: Option<String>,
    /// The whole `Set-Cookie` header of that cookie.
    pub set_cookie: Option<String>,
    /// The hidden `csrf` form field, if any.
    pub csrf: Option<String>,
}

impl LinkPage {
    pub fn refused(&self) -> bool {
        self.body.contains("<h1 id=\"refused\">")
    }

    pub fn has_form(&self) -> bool {
        self.body.contains("id=\"approve\"") && self.body.contains("<form")
    }
}

/// A client that follows no redirects and keeps no cookies: the tests handle cookies themselves.
pub fn page_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn get_link(http: &reqwest::Client, url: &str) -> LinkPage {
    let r = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let set_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("custody_csrf="))
        .map(str::to_string);
    let cookie = set_cookie
        .as_ref()
        .map(|c| c.split(';').next().unwrap().trim().to_string());
    let body = r.text().await.unwrap_or_default();
    let csrf = hidden_field(&body, "csrf");
    LinkPage {
        status,
        body,
        cookie,
        set_cookie,
        csrf,
    }
}

/// The `value` of `<input … name="NAME" value="…">`.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let end = tag[v..].find('"')?;
    Some(tag[v..v + end].to_string())
}

/// `application/x-www-form-urlencoded` of the pairs.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// POSTs a decision form to an approval link: `fields` as given (so tests can leave some out),
/// with `cookie` (`name=value`) if any. Answers (status, body).
pub async fn post_link(
    http: &reqwest::Client,
    url: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
) -> (u16, String) {
    let mut req = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(fields));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Opens the link and posts a decision from the page, as a person would. Answers (status, body).
pub async fn decide_via_link(
    http: &reqwest::Client,
    url: &str,
    decision: &str,
    comment: &str,
) -> (u16, String) {
    let page = get_link(http, url).await;
    assert_eq!(
        page.status, 200,
        "GET {url} answered {}:\n{}",
        page.status, page.body
    );
    let csrf = page
        .csrf
        .clone()
        .unwrap_or_else(|| panic!("no csrf field on the page:\n{}", page.body));
    let cookie = page
        .cookie
        .clone()
        .expect("no custody_csrf cookie set by the page");
    post_link(
        http,
        url,
        &[
            ("decision", decision),
            ("comment", comment),
            ("csrf", &csrf),
        ],
        Some(&cookie),
    )
    .await
}

/// Changes one character in the middle of the token's signature (the third JWT part).
pub fn tamper_signature(link: &str) -> String {
    let (base, token) = link.rsplit_once('/').expect("a link ends with /<token>");
    let sig_start = token.rfind('.').expect("the token is a JWT") + 1;
    let mut chars: Vec<char> = token.chars().collect();
    let i = sig_start + (chars.len() - sig_start) / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    format!("{base}/{}", chars.into_iter().collect::<String>())
}

/// The path of `url` (`/approve/…`), for comparing links across hosts.
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map(|x| x.1).unwrap_or(url);
    after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("/")
}
