//! Personal access tokens and service accounts: secrets shown once and stored hashed, last-used
//! times, revocation and expiry, read-only and project-limited tokens held to their bounds, and
//! service accounts that act in their project only — with the attacker's attempts refused and
//! nothing changed.

use std::time::Duration;

use custody_tests::fixtures::*;
use custody_tests::{sha256_hex, TestEnv};
use serde_json::{json, Value};

const CREATE: &str = "mutation($n: String!, $e: String, $r: Boolean, $p: String) {
    createAccessToken(name: $n, expiresIn: $e, readOnly: $r, project: $p) {
      secret token { id name readOnly expiresAt lastUsedAt revokedAt project { name } } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeAccessToken(id: $id) { id revokedAt } }";
const LIST: &str = "{ accessTokens { id name readOnly lastUsedAt revokedAt project { name } } }";
const ME: &str = "{ me { email } }";

async fn create_token(env: &TestEnv, token: &str, vars: Value) -> (String, String) {
    let d = env.gql_ok(token, CREATE, vars).await;
    let created = &d["createAccessToken"];
    (
        created["secret"].as_str().unwrap().to_owned(),
        created["token"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn audit_actions(env: &TestEnv) -> Vec<String> {
    let sql = env.sql().await;
    sql.query("SELECT action FROM audit_log ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_tokens_act_as_their_owner_until_revoked_or_expired() {
    let env = TestEnv::start().await;
    let ana = env.issue_token("ana@example.com", false).await;
    create_project(&env.server, &ana, "p").await;

    let (secret, id) = create_token(&env, &ana, json!({ "n": "laptop" })).await;
    assert!(secret.starts_with("cst_") && secret.len() == 47, "{secret}");
    let d = env.gql_ok(&secret, ME, json!({})).await;
    assert_eq!(d["me"]["email"], "ana@example.com");
    create_dataset(&env.server, &secret, "p", "through-a-pat").await;

    // Listed without its secret, with when it was last used; only the hash is stored.
    let listed = env.gql_ok(&ana, LIST, json!({})).await;
    assert_eq!(listed["accessTokens"][0]["name"], "laptop");
    assert!(
        listed["accessTokens"][0]["lastUsedAt"].is_string(),
        "{listed}"
    );
    assert!(!listed.to_string().contains(&secret[4..]));
    let sql = env.sql().await;
    let rows = sql
        .query(
            "SELECT encode(secret_sha256, 'hex'), row_to_json(t)::text FROM access_tokens t",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), sha256_hex(&secret));
    assert!(!rows[0].get::<_, String>(1).contains(&secret[4..]));
    assert!(audit_actions(&env)
        .await
        .contains(&"access_token.create".to_owned()));

    // Somebody else's token cannot be revoked, nor learned about.
    let bob = env.issue_token("bob@example.com", false).await;
    env.assert_refused(&bob, "NOT_FOUND", REVOKE, json!({ "id": id }))
        .await;
    let d = env.gql_ok(&bob, LIST, json!({})).await;
    assert_eq!(d["accessTokens"], json!([]));

    // Bad requests change nothing.
    for (vars, code) in [
        (json!({ "n": " " }), "INVALID_INPUT"),
        (json!({ "n": "x", "e": "forever" }), "INVALID_INPUT"),
        (json!({ "n": "x", "e": "0d" }), "INVALID_INPUT"),
        (json!({ "n": "x", "p": "nope" }), "NOT_FOUND"),
        (json!({ "n": "x".repeat(101) }), "INVALID_INPUT"),
    ] {
        env.assert_refused(&ana, code, CREATE, vars).await;
    }
    // A token may not be limited to a project its owner cannot read.
    create_project(&env.server, &bob, "bobs").await;
    env.assert_refused(&ana, "NOT_FOUND", CREATE, json!({ "n": "x", "p": "bobs" }))
        .await;

    // A fellow member cannot list ana's tokens; a server admin can, and revoke them.
    add_member(&env.server, &ana, "p", "bob@example.com", "VIEWER").await;
    let theirs = "{ project(name: \"p\") { members { user { email accessTokens { id name } } } } }";
    let r = env.gql(&bob, theirs, json!({})).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");
    let d = env.gql_ok(&env.admin, theirs, json!({})).await;
    let members = d["project"]["members"].as_array().unwrap();
    let ana_row = members
        .iter()
        .find(|m| m["user"]["email"] == "ana@example.com")
        .unwrap();
    assert_eq!(ana_row["user"]["accessTokens"][0]["id"], id.as_str(), "{d}");

    // Revoked: refused from then on; revoking again is a conflict.
    let d = env.gql_ok(&ana, REVOKE, json!({ "id": id })).await;
    assert!(d["revokeAccessToken"]["revokedAt"].is_string());
    let r = env.gql(&secret, ME, json!({})).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{r}"
    );
    assert!(r["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    env.assert_refused(&ana, "CONFLICT", REVOKE, json!({ "id": id }))
        .await;

    // Expired: refused, saying so.
    let (short, _) = create_token(&env, &ana, json!({ "n": "short", "e": "1s" })).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = env.gql(&short, ME, json!({})).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{r}"
    );
    assert!(r["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));

    // Guessing: an unknown secret of the right shape is refused like any bad token.
    let guess = format!("cst_{}", "A".repeat(43));
    let r = env.gql(&guess, ME, json!({})).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_project_limited_tokens_stay_in_their_bounds() {
    let env = TestEnv::start().await;
    create_project(&env.server, &env.admin, "a").await;
    create_project(&env.server, &env.admin, "b").await;
    let ana = member_token(
        &env.server,
        &env.admin,
        "a",
        "ana@example.com",
        "CONTRIBUTOR",
    )
    .await;
    add_member(
        &env.server,
        &env.admin,
        "b",
        "ana@example.com",
        "CONTRIBUTOR",
    )
    .await;
    start_run(&env.server, &ana, "a", "in-a", None, &[]).await;
    start_run(&env.server, &ana, "b", "in-b", None, &[]).await;
    let runs = "{ searchRuns { edges { node { name } } } }";
    let names = |d: &Value| -> Vec<String> {
        let mut names: Vec<String> = d["searchRuns"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };

    // Read-only: reads everything its owner reads, changes nothing.
    let (reader, _) = create_token(&env, &ana, json!({ "n": "dashboard", "r": true })).await;
    assert_eq!(
        names(&env.gql_ok(&reader, runs, json!({})).await),
        ["in-a", "in-b"]
    );
    let create_dataset = "mutation { createDataset(project: \"a\", name: \"d\") { id } }";
    env.assert_refused(&reader, "FORBIDDEN", create_dataset, json!({}))
        .await;
    let r = env.gql(&reader, create_dataset, json!({})).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{r}"
    );
    env.assert_refused(&reader, "FORBIDDEN", CREATE, json!({ "n": "wider" }))
        .await;
    // Nor through the OpenLineage endpoint: the event is refused and recorded nothing, so its
    // owner's token then applies it for the first time (201, not a replay's 200).
    let event = json!({
        "eventType": "START",
        "eventTime": "2026-12-05T04:00:00Z",
        "producer": "https://github.com/example/pipelines",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": "01938f7e-0000-7000-8000-000000000001"},
        "job": {"namespace": "airflow", "name": "nightly"},
        "outputs": [{"namespace": "postgres://warehouse", "name": "public.scores"}],
    });
    let post_event = |token: &str| {
        env.server
            .http
            .post(env.server.url("/api/v1/lineage?project=b"))
            .bearer_auth(token)
            .json(&event)
            .send()
    };
    let refused = post_event(&reader).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("read-only"));
    assert_eq!(post_event(&ana).await.unwrap().status(), 201);

    // Limited to project a: b is out of reach, even where its owner is a member.
    let (limited, _) = create_token(&env, &ana, json!({ "n": "ci", "p": "a" })).await;
    assert_eq!(
        names(&env.gql_ok(&limited, runs, json!({})).await),
        ["in-a"]
    );
    let d = env
        .gql_ok(
            &limited,
            "{ a: project(name: \"a\") { name } b: project(name: \"b\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(d, json!({ "a": { "name": "a" }, "b": null }));
    create_dataset_ok(&env, &limited, "a").await;
    for (query, code) in [
        (
            "mutation { createDataset(project: \"b\", name: \"d\") { id } }",
            "NOT_FOUND",
        ),
        ("mutation { startRun(project: \"b\") { id } }", "NOT_FOUND"),
        (
            "mutation { createProject(name: \"c\") { id } }",
            "FORBIDDEN",
        ),
        (
            "mutation { createAccessToken(name: \"wider\") { secret } }",
            "FORBIDDEN",
        ),
    ] {
        env.assert_refused(&limited, code, query, json!({})).await;
    }

    // A server admin's token limited to a project holds no server-wide power.
    let (admin_limited, _) = create_token(&env, &env.admin, json!({ "n": "ops", "p": "a" })).await;
    // (Used once first: a use records its time, which would count as a change below.)
    assert_eq!(
        names(&env.gql_ok(&admin_limited, runs, json!({})).await),
        ["in-a"]
    );
    for (query, code) in [
        (
            "mutation { issueToken(email: \"eve@example.com\") }",
            "FORBIDDEN",
        ),
        (
            "mutation { createDataset(project: \"b\", name: \"d\") { id } }",
            "NOT_FOUND",
        ),
    ] {
        env.assert_refused(&admin_limited, code, query, json!({}))
            .await;
    }
    assert_eq!(
        names(&env.gql_ok(&admin_limited, runs, json!({})).await),
        ["in-a"]
    );
}

async fn create_dataset_ok(env: &TestEnv, token: &str, project: &str) {
    create_dataset(&env.server, token, project, "made-by-limited").await;
}

const CREATE_ACCOUNT: &str = "mutation($p: String!, $n: String!, $r: Role) {
    createServiceAccount(project: $p, name: $n, role: $r) { name identity role } }";
const ACCOUNT_TOKEN: &str = "mutation($p: String!, $a: String!, $n: String!) {
    createServiceAccountToken(project: $p, account: $a, name: $n) { secret token { id project { name } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_act_in_their_project_only() {
    let env = TestEnv::start().await;
    let ana = env.issue_token("ana@example.com", false).await;
    create_project(&env.server, &ana, "ml").await;
    create_project(&env.server, &env.admin, "other").await;
    let bob = member_token(&env.server, &ana, "ml", "bob@example.com", "VIEWER").await;

    // Only the project's admins create service accounts, and only as VIEWER or CONTRIBUTOR.
    let ci = json!({ "p": "ml", "n": "ci" });
    env.assert_refused(&bob, "FORBIDDEN", CREATE_ACCOUNT, ci.clone())
        .await;
    for (vars, code) in [
        (
            json!({ "p": "ml", "n": "ci", "r": "APPROVER" }),
            "INVALID_INPUT",
        ),
        (
            json!({ "p": "ml", "n": "ci", "r": "ADMIN" }),
            "INVALID_INPUT",
        ),
        (json!({ "p": "ml", "n": "CI Bot" }), "INVALID_INPUT"),
        (json!({ "p": "other", "n": "ci" }), "NOT_FOUND"),
    ] {
        env.assert_refused(&ana, code, CREATE_ACCOUNT, vars).await;
    }
    let d = env.gql_ok(&ana, CREATE_ACCOUNT, ci.clone()).await;
    assert_eq!(
        d["createServiceAccount"],
        json!({ "name": "ci", "identity": "service:ml/ci", "role": "CONTRIBUTOR" })
    );
    env.assert_refused(&ana, "CONFLICT", CREATE_ACCOUNT, ci.clone())
        .await;

    // Members see the account; only admins see or make its tokens.
    let accounts = "{ serviceAccounts(project: \"ml\") { name } }";
    let d = env.gql_ok(&bob, accounts, json!({})).await;
    assert_eq!(d["serviceAccounts"], json!([{ "name": "ci" }]));
    let tokens = "{ serviceAccounts(project: \"ml\") { tokens { id } } }";
    let r = env.gql(&bob, tokens, json!({})).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");
    assert_eq!(r["data"]["serviceAccounts"], json!([null]), "{r}");
    let tok = json!({ "p": "ml", "a": "ci", "n": "github-actions" });
    env.assert_refused(&bob, "FORBIDDEN", ACCOUNT_TOKEN, tok.clone())
        .await;
    env.assert_refused(
        &ana,
        "NOT_FOUND",
        ACCOUNT_TOKEN,
        json!({ "p": "ml", "a": "nobody", "n": "x" }),
    )
    .await;
    let d = env.gql_ok(&ana, ACCOUNT_TOKEN, tok).await;
    let secret = d["createServiceAccountToken"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        d["createServiceAccountToken"]["token"]["project"]["name"],
        "ml"
    );

    // The account works in its project as itself...
    let d = env.gql_ok(&secret, ME, json!({})).await;
    assert_eq!(d["me"]["email"], "service:ml/ci");
    let run = start_run(&env.server, &secret, "ml", "nightly", None, &[]).await;
    assert!(run["id"].is_string());
    // ...and nowhere else, and cannot widen itself or be added elsewhere.
    for (query, code) in [
        ("mutation { startRun(project: \"other\") { id } }", "NOT_FOUND"),
        ("mutation { createProject(name: \"mine\") { id } }", "FORBIDDEN"),
        ("mutation { createAccessToken(name: \"wider\") { secret } }", "FORBIDDEN"),
        ("mutation { addMember(project: \"ml\", email: \"eve@example.com\", role: VIEWER) { role } }", "FORBIDDEN"),
    ] {
        env.assert_refused(&secret, code, query, json!({})).await;
    }
    env.assert_refused(
        &env.admin,
        "INVALID_INPUT",
        "mutation { addMember(project: \"other\", email: \"service:ml/ci\", role: ADMIN) { role } }",
        json!({}),
    )
    .await;

    // Removing the account revokes its tokens; what it did still names it.
    env.gql_ok(
        &ana,
        "mutation { removeServiceAccount(project: \"ml\", name: \"ci\") }",
        json!({}),
    )
    .await;
    let r = env.gql(&secret, ME, json!({})).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{r}"
    );
    let d = env.gql_ok(&ana, accounts, json!({})).await;
    assert_eq!(d["serviceAccounts"], json!([]));
    let actions = audit_actions(&env).await;
    for action in [
        "service_account.create",
        "access_token.create",
        "service_account.remove",
    ] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action}: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_admins_revoke_every_token_of_a_user_at_once() {
    let env = TestEnv::start().await;
    let jwt = env.issue_token("ana@example.com", false).await;
    let (pat, _) = create_token(&env, &jwt, json!({ "n": "laptop" })).await;
    let bob = env.issue_token("bob@example.com", false).await;
    let revoke = "mutation($e: String!) { revokeUserTokens(email: $e) }";
    let ana = json!({ "e": "ana@example.com" });

    // Not an admin, not a user, not an address: refused, nothing changed.
    env.assert_refused(&bob, "FORBIDDEN", revoke, ana.clone())
        .await;
    env.assert_refused(
        &env.admin,
        "NOT_FOUND",
        revoke,
        json!({ "e": "nobody@example.com" }),
    )
    .await;
    env.assert_refused(
        &env.admin,
        "INVALID_INPUT",
        revoke,
        json!({ "e": "nobody" }),
    )
    .await;
    for token in [&jwt, &pat] {
        env.gql_ok(token, ME, json!({})).await;
    }

    let d = env.gql_ok(&env.admin, revoke, ana.clone()).await;
    assert_eq!(d["revokeUserTokens"], 2);
    for token in [&jwt, &pat] {
        let r = env.gql(token, ME, json!({})).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{r}"
        );
    }
    // Bob's token is untouched; a second sweep finds nothing left.
    env.gql_ok(&bob, ME, json!({})).await;
    let d = env.gql_ok(&env.admin, revoke, ana).await;
    assert_eq!(d["revokeUserTokens"], 0);
    assert!(audit_actions(&env)
        .await
        .contains(&"user.revoke_tokens".to_owned()));
}
