//! Thin wrappers over the GraphQL mutations, for building test data. Each panics on an error and
//! returns the mutation's object.

use serde_json::{json, Value};

use crate::server::Server;

pub async fn create_project(s: &Server, token: &str, name: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($n: String!, $d: String) { createProject(name: $n, description: $d) { id name } }",
            json!({ "n": name, "d": format!("project {name}") }),
        )
        .await;
    d["createProject"].clone()
}

/// Makes sure `email` has an account, the way a server admin does (`token issue` creates it):
/// people in tests exist before they are added (inviting people without an account is
/// `invitations.rs`'s subject).
pub async fn ensure_account(s: &Server, email: &str) {
    s.issue_token(email, false).await;
}

/// Adds `email` (given an account first) to `project` with `role`, as `token`.
pub async fn add_member(s: &Server, token: &str, project: &str, email: &str, role: &str) -> Value {
    ensure_account(s, email).await;
    add_account(s, token, project, email, role).await
}

/// Adds `email`, who has an account, to `project` with `role`, as `token`.
pub async fn add_account(s: &Server, token: &str, project: &str, email: &str, role: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $e: String!, $r: Role!) { addMember(project: $p, email: $e, role: $r) { role groups user { email } } }",
            json!({ "p": project, "e": email, "r": role }),
        )
        .await;
    d["addMember"].clone()
}

pub async fn create_dataset(s: &Server, token: &str, project: &str, name: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $n: String!) { createDataset(project: $p, name: $n, description: \"d\") { id name } }",
            json!({ "p": project, "n": name }),
        )
        .await;
    d["createDataset"].clone()
}

pub async fn register_dataset_version(
    s: &Server,
    token: &str,
    project: &str,
    dataset: &str,
    sha256: &str,
    derived_from: &[&str],
) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $d: String!, $u: String!, $s: Sha256!, $f: [ID!]) {
               registerDatasetVersion(project: $p, dataset: $d, uri: $u, sha256: $s, sizeBytes: 1024, tags: [\"t\"], derivedFrom: $f) {
                 id version uri sha256 sizeBytes tags } }",
            json!({ "p": project, "d": dataset, "u": format!("s3://bucket/{dataset}/{sha256}"), "s": sha256, "f": derived_from }),
        )
        .await;
    d["registerDatasetVersion"].clone()
}

pub async fn register_commit(s: &Server, token: &str, repository: &str, commit: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($r: String!, $c: String!) { registerCodeCommit(repository: $r, commit: $c, branch: \"main\", dirty: false) { id repository commit branch dirty } }",
            json!({ "r": repository, "c": commit }),
        )
        .await;
    d["registerCodeCommit"].clone()
}

pub async fn start_run(
    s: &Server,
    token: &str,
    project: &str,
    name: &str,
    commit: Option<&str>,
    inputs: &[&str],
) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $n: String, $c: ID, $i: [ID!]) { startRun(project: $p, name: $n, codeCommitId: $c, inputs: $i) { id name status } }",
            json!({ "p": project, "n": name, "c": commit, "i": inputs }),
        )
        .await;
    d["startRun"].clone()
}

pub async fn log_params(s: &Server, token: &str, run: &str, params: &[(&str, &str)]) -> Value {
    let params: Vec<Value> = params
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect();
    let d = s
        .gql_ok(
            token,
            "mutation($r: ID!, $p: [ParamInput!]!) { logParams(runId: $r, params: $p) { id params { key value } } }",
            json!({ "r": run, "p": params }),
        )
        .await;
    d["logParams"].clone()
}

pub async fn log_metrics(s: &Server, token: &str, run: &str, metrics: Value) -> i64 {
    let d = s
        .gql_ok(
            token,
            "mutation($r: ID!, $m: [MetricInput!]!) { logMetrics(runId: $r, metrics: $m) }",
            json!({ "r": run, "m": metrics }),
        )
        .await;
    d["logMetrics"].as_i64().expect("logMetrics returns an Int")
}

pub async fn finish_run(s: &Server, token: &str, run: &str, status: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($r: ID!, $s: RunStatus!) { finishRun(runId: $r, status: $s) { id status endedAt } }",
            json!({ "r": run, "s": status }),
        )
        .await;
    d["finishRun"].clone()
}

pub async fn create_model(s: &Server, token: &str, project: &str, name: &str) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $n: String!) { createModel(project: $p, name: $n, description: \"m\") { id name } }",
            json!({ "p": project, "n": name }),
        )
        .await;
    d["createModel"].clone()
}

pub async fn register_model_version(
    s: &Server,
    token: &str,
    project: &str,
    model: &str,
    run: &str,
) -> Value {
    let d = s
        .gql_ok(
            token,
            "mutation($p: String!, $m: String!, $r: ID!) { registerModelVersion(project: $p, model: $m, runId: $r, description: \"v\") { id version stage run { id } model { name } } }",
            json!({ "p": project, "m": model, "r": run }),
        )
        .await;
    d["registerModelVersion"].clone()
}

pub const LINK_LINEAGE: &str = "mutation($f: NodeRef!, $t: NodeRef!, $rel: String!) {
    linkLineage(from: $f, to: $t, relation: $rel) { from { kind id } to { kind id } relation } }";

pub fn node(kind: &str, id: &str) -> Value {
    json!({ "kind": kind, "id": id })
}

pub async fn link_lineage(
    s: &Server,
    token: &str,
    from: Value,
    to: Value,
    relation: &str,
) -> Value {
    let d = s
        .gql_ok(
            token,
            LINK_LINEAGE,
            json!({ "f": from, "t": to, "rel": relation }),
        )
        .await;
    d["linkLineage"].clone()
}

/// The number of entries in the audit log as the API reports it (all pages).
pub async fn audit_count(s: &Server, token: &str) -> usize {
    crate::audit::fetch_all(s, token, "").await.len()
}

/// A user with a token who is a member of `project` with `role` (added by `admin_token`).
pub async fn member_token(
    s: &Server,
    admin_token: &str,
    project: &str,
    email: &str,
    role: &str,
) -> String {
    let t = s.issue_token(email, false).await;
    add_account(s, admin_token, project, email, role).await;
    t
}

/// `id` of a JSON object as a String.
pub fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id in {v}"))
        .to_string()
}
