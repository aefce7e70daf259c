//! Authentication (expired, forged, revoked, `alg: none`, audience-less tokens …) and authorization
//! (roles in the project). Every refusal also checks that nothing changed.

use custody_tests::fixtures::*;
use custody_tests::jwt::{self, now};
use custody_tests::{random_id, wait_until, TestEnv};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

const ME: &str = "{ me { email } }";
const CREATE_PROJECT: &str = "mutation { createProject(name: \"sneaky\") { id } }";

/// The token is refused for a read (`me`) and a write, and the write changed nothing.
async fn assert_unauthenticated(env: &TestEnv, token: &str, what: &str) {
    let code = env.gql_err_code(token, ME, json!({})).await;
    assert_eq!(code, "UNAUTHENTICATED", "{what}: `me` answered {code}");
    env.assert_refused(token, "UNAUTHENTICATED", CREATE_PROJECT, json!({}))
        .await;
}

/// A token for `user@example.com`, its claims, and the server's signing key.
async fn user_token(env: &TestEnv) -> (String, Value, Vec<u8>) {
    let t = env.issue_token("user@example.com", false).await;
    let claims = jwt::claims(&t);
    let key = jwt::server_key(&env.server.data_dir);
    (t, claims, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_garbage_token_is_unauthenticated() {
    let env = TestEnv::start().await;
    assert_unauthenticated(&env, "", "no Authorization header").await;
    assert_unauthenticated(&env, "garbage", "not a JWT").await;
    assert_unauthenticated(&env, "a.b.c", "three garbage parts").await;
    // A Basic header is not a bearer token.
    let r = env
        .server
        .http
        .post(env.server.url("/graphql"))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .json(&json!({ "query": ME }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
}

/// Our forging is faithful: the claims of a real token, re-signed with the server's key, pass.
/// (So the refusals below are about what each of them changes, not about a wrong key.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resigned_token_control_is_accepted() {
    let env = TestEnv::start().await;
    let (_, claims, key) = user_token(&env).await;
    let t = jwt::sign_hs256(&claims, &key);
    let me = env.gql_ok(&t, ME, json!({})).await;
    assert_eq!(me["me"]["email"], "user@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_unauthenticated() {
    let env = TestEnv::start().await;
    let t = env
        .server
        .issue_token_ttl("short@example.com", false, Some("1s"))
        .await;
    // Letting the token expire is the behaviour under test: wait (polling the clock) until its
    // `exp` has passed. The server allows no leeway.
    let exp = jwt::claims(&t)["exp"].as_i64().expect("exp claim");
    wait_until(
        "the token's exp to pass",
        std::time::Duration::from_secs(5),
        || async { (now() > exp).then_some(()) },
    )
    .await;
    assert_unauthenticated(&env, &t, "token issued with --ttl 1s, now past its exp").await;

    // Validly signed, registered jti, but expired an hour ago.
    let (_, mut claims, key) = user_token(&env).await;
    claims["exp"] = json!(now() - 3600);
    claims["iat"] = json!(now() - 7200);
    assert_unauthenticated(&env, &jwt::sign_hs256(&claims, &key), "exp an hour ago").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_token_is_unauthenticated() {
    let env = TestEnv::start().await;
    let (t, claims, _) = user_token(&env).await;
    // Signed with another key.
    let other = b"0000000000000000000000000000000000000000000000000000000000000000";
    assert_unauthenticated(
        &env,
        &jwt::sign_hs256(&claims, other),
        "signed with another key",
    )
    .await;
    let admin_claims = jwt::claims(&env.admin);
    assert_unauthenticated(
        &env,
        &jwt::sign_hs256(&admin_claims, other),
        "admin claims signed with another key",
    )
    .await;

    // Claims changed under the original signature (a user makes itself the admin).
    let parts: Vec<&str> = t.split('.').collect();
    let admin_payload = env.admin.split('.').nth(1).unwrap();
    assert_unauthenticated(
        &env,
        &format!("{}.{}.{}", parts[0], admin_payload, parts[2]),
        "payload swapped",
    )
    .await;
    // Signature removed.
    assert_unauthenticated(&env, &format!("{}.{}.", parts[0], parts[1]), "no signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_and_other_algorithms_are_unauthenticated() {
    let env = TestEnv::start().await;
    let (_, claims, key) = user_token(&env).await;
    assert_unauthenticated(&env, &jwt::alg_none(&claims), "alg none").await;
    assert_unauthenticated(
        &env,
        &jwt::alg_none(&jwt::claims(&env.admin)),
        "alg none with the admin's claims",
    )
    .await;
    // The right key but another HMAC algorithm: the algorithm is fixed.
    assert_unauthenticated(&env, &jwt::sign(Algorithm::HS384, &claims, &key), "HS384").await;
    assert_unauthenticated(&env, &jwt::sign(Algorithm::HS512, &claims, &key), "HS512").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_all_required_and_checked() {
    let env = TestEnv::start().await;
    let (_, claims, key) = user_token(&env).await;
    let without = |c: &str| {
        let mut x = claims.clone();
        x.as_object_mut().unwrap().remove(c);
        x
    };
    let with = |c: &str, v: Value| {
        let mut x = claims.clone();
        x[c] = v;
        x
    };
    assert_unauthenticated(&env, &jwt::sign_hs256(&without("aud"), &key), "no aud").await;
    assert_unauthenticated(
        &env,
        &jwt::sign_hs256(&with("aud", json!("someone-else")), &key),
        "wrong aud",
    )
    .await;
    assert_unauthenticated(&env, &jwt::sign_hs256(&without("iss"), &key), "no iss").await;
    assert_unauthenticated(
        &env,
        &jwt::sign_hs256(&with("iss", json!("https://evil.example.com")), &key),
        "wrong iss",
    )
    .await;
    assert_unauthenticated(&env, &jwt::sign_hs256(&without("exp"), &key), "no exp").await;
    assert_unauthenticated(&env, &jwt::sign_hs256(&without("jti"), &key), "no jti").await;
    // A jti the server never issued: tokens are only valid while their jti is on record.
    assert_unauthenticated(
        &env,
        &jwt::sign_hs256(&with("jti", json!(random_id())), &key),
        "unknown jti",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_unauthenticated() {
    let env = TestEnv::start().await;
    let t1 = env.issue_token("rev@example.com", false).await;
    let t2 = env.issue_token("rev@example.com", false).await;
    env.gql_ok(&t1, ME, json!({})).await;
    let jti = jwt::jti(&t1);
    assert_ne!(jti, jwt::jti(&t2), "every token has its own jti");

    // Only admins revoke.
    env.assert_refused(
        &t2,
        "FORBIDDEN",
        "mutation($j: ID!) { revokeToken(jti: $j) }",
        json!({ "j": jti }),
    )
    .await;
    env.gql_ok(&t1, ME, json!({})).await;

    let r = env
        .gql_ok(
            &env.admin,
            "mutation($j: ID!) { revokeToken(jti: $j) }",
            json!({ "j": jti }),
        )
        .await;
    assert_eq!(r["revokeToken"], true);
    assert_unauthenticated(&env, &t1, "revoked token").await;
    // The user's other token is unaffected.
    let me = env.gql_ok(&t2, ME, json!({})).await;
    assert_eq!(me["me"]["email"], "rev@example.com");
    let rows = audit_count(&env.server, &env.admin).await;
    let revokes =
        custody_tests::audit::fetch_all(&env.server, &env.admin, "action: \"token.revoke\"").await;
    assert_eq!(
        revokes.len(),
        1,
        "revokeToken writes one audit entry (of {rows}): {revokes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_token_mutation_is_for_admins() {
    let env = TestEnv::start().await;
    let user = env.issue_token("user@example.com", false).await;
    env.assert_refused(
        &user,
        "FORBIDDEN",
        "mutation { issueToken(email: \"x@example.com\") }",
        json!({}),
    )
    .await;
    let t = env
        .gql_ok(
            &env.admin,
            "mutation { issueToken(email: \"new@example.com\", ttl: \"1h\") }",
            json!({}),
        )
        .await;
    let t = t["issueToken"].as_str().unwrap().to_string();
    let me = env.gql_ok(&t, "{ me { email isAdmin } }", json!({})).await;
    assert_eq!(
        me["me"],
        json!({ "email": "new@example.com", "isAdmin": false })
    );
    let c = jwt::claims(&t);
    assert!(
        (c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() - 3600).abs() <= 5,
        "ttl 1h: {c}"
    );
}

/// Roles: VIEWER < CONTRIBUTOR < APPROVER < ADMIN; outsiders see nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_too_low_are_forbidden() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "p").await;
    create_dataset(s, a, "p", "ds").await;
    create_model(s, a, "p", "m").await;
    let run = id(&start_run(s, a, "p", "r", None, &[]).await);
    let viewer = member_token(s, a, "p", "viewer@example.com", "VIEWER").await;
    let contributor = member_token(s, a, "p", "contrib@example.com", "CONTRIBUTOR").await;
    let approver = member_token(s, a, "p", "approver@example.com", "APPROVER").await;
    let outsider = env.issue_token("outsider@example.com", false).await;

    // Viewers read ...
    let p = env
        .gql_ok(
            &viewer,
            "{ project(name: \"p\") { name datasets { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(p["project"]["name"], "p");
    env.gql_ok(
        &viewer,
        "query($r: ID!) { run(id: $r) { id status } }",
        json!({ "r": run }),
    )
    .await;
    // ... and write nothing.
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        "mutation { startRun(project: \"p\", name: \"v\") { id } }",
        json!({}),
    )
    .await;
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        "mutation { createDataset(project: \"p\", name: \"v\") { id } }",
        json!({}),
    )
    .await;
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        "mutation { createModel(project: \"p\", name: \"v\") { id } }",
        json!({}),
    )
    .await;
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        "mutation($r: ID!) { logParams(runId: $r, params: [{key: \"a\", value: \"1\"}]) { id } }",
        json!({ "r": run }),
    )
    .await;
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        "mutation($r: ID!) { logMetrics(runId: $r, metrics: [{key: \"a\", value: 1.0}]) }",
        json!({ "r": run }),
    )
    .await;
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        "mutation($r: ID!) { finishRun(runId: $r, status: KILLED) { id } }",
        json!({ "r": run }),
    )
    .await;
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        "mutation($r: ID!) { registerModelVersion(project: \"p\", model: \"m\", runId: $r) { id } }",
        json!({ "r": run }),
    )
    .await;

    // Contributors write runs, datasets and models, but do not manage members.
    env.assert_refused(
        &contributor,
        "FORBIDDEN",
        "mutation { addMember(project: \"p\", email: \"friend@example.com\", role: VIEWER) { role } }",
        json!({}),
    )
    .await;
    env.assert_refused(
        &contributor,
        "FORBIDDEN",
        "mutation { addMember(project: \"p\", email: \"contrib@example.com\", role: ADMIN) { role } }",
        json!({}),
    )
    .await;
    let crun = id(&start_run(s, &contributor, "p", "c", None, &[]).await);
    log_params(s, &contributor, &crun, &[("a", "1")]).await;
    create_dataset(s, &contributor, "p", "cds").await;
    // Approvers rank above contributors.
    start_run(s, &approver, "p", "ap", None, &[]).await;
    env.assert_refused(
        &approver,
        "FORBIDDEN",
        "mutation { addMember(project: \"p\", email: \"friend@example.com\", role: VIEWER) { role } }",
        json!({}),
    )
    .await;

    // Outsiders neither read nor write the project, and cannot tell it exists: reads answer
    // null without an error, writes NOT_FOUND (as for a project that does not exist).
    for read in [
        "{ project(name: \"p\") { id name } }",
        "{ dataset(project: \"p\", name: \"ds\") { id } }",
        "{ model(project: \"p\", name: \"m\") { id } }",
    ] {
        let r = env.gql(&outsider, read, json!({})).await;
        assert!(r.get("errors").is_none(), "{read}: {r}");
        assert!(
            r["data"].as_object().unwrap().values().all(Value::is_null),
            "an outsider read {read}: {r}"
        );
    }
    let r = env
        .gql(
            &outsider,
            "query($r: ID!) { run(id: $r) { id status } }",
            json!({ "r": run }),
        )
        .await;
    assert!(
        r.get("errors").is_none() && r["data"]["run"].is_null(),
        "an outsider read a run: {r}"
    );
    for write in [
        "mutation { createDataset(project: \"p\", name: \"o\") { id } }",
        "mutation { startRun(project: \"p\") { id } }",
        "{ auditLog(project: \"p\", first: 10) { edges { node { seq } } } }",
    ] {
        env.assert_refused(&outsider, "NOT_FOUND", write, json!({}))
            .await;
    }

    // A project ADMIN (not a global admin) manages members; the creator of a project is its ADMIN.
    let alice = env.issue_token("alice@example.com", false).await;
    create_project(s, &alice, "alices").await;
    let p = env
        .gql_ok(
            &alice,
            "{ project(name: \"alices\") { members { role user { email } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        p["project"]["members"],
        json!([{ "role": "ADMIN", "user": { "email": "alice@example.com" } }])
    );
    add_member(s, &alice, "alices", "bob@example.com", "VIEWER").await;
    // ... but not in other projects (which, not being a member, she cannot even see).
    env.assert_refused(
        &alice,
        "NOT_FOUND",
        "mutation { addMember(project: \"p\", email: \"alice@example.com\", role: ADMIN) { role } }",
        json!({}),
    )
    .await;
}
