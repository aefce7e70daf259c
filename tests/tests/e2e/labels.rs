//! Tags on runs, models and model versions; aliases, free and governed. Each change audited,
//! each refusal leaves the database as it was.

use custody_tests::fixtures::*;
use custody_tests::governance::{audit_of, verify_audit};
use custody_tests::TestEnv;
use serde_json::{json, Value};

const SET_RUN_TAG: &str =
    "mutation($r: ID!, $k: String!, $v: String!) { setRunTag(runId: $r, key: $k, value: $v) { id tags } }";
const DELETE_RUN_TAG: &str =
    "mutation($r: ID!, $k: String!) { deleteRunTag(runId: $r, key: $k) { id tags } }";
const SET_MODEL_TAG: &str =
    "mutation($m: ID!, $k: String!, $v: String!) { setModelTag(modelId: $m, key: $k, value: $v) { id tags } }";
const SET_VERSION_TAG: &str = "mutation($m: ID!, $k: String!, $v: String!) {
    setModelVersionTag(modelVersionId: $m, key: $k, value: $v) { id tags } }";
const SET_ALIAS: &str = "mutation($m: ID!, $a: String!) {
    setModelAlias(modelVersionId: $m, alias: $a) { alias moved promotion { id status stage } } }";
const DELETE_ALIAS: &str = "mutation($a: String!) {
    deleteModelAlias(project: \"labels\", model: \"churn\", alias: $a) }";
const GOVERN: &str = "mutation($a: String!, $s: String) {
    setGovernedAlias(project: \"labels\", alias: $a, stage: $s) }";
const BY_ALIAS: &str = "query($a: String!) {
    modelVersion(project: \"labels\", model: \"churn\", alias: $a) { id version aliases } }";
const MODEL_ALIASES: &str = "{ model(project: \"labels\", name: \"churn\") {
    tags aliases { alias modelVersion { version } } } }";
const SEARCH_VERSIONS: &str = "query($f: String) {
    searchModelVersions(projects: [\"labels\"], filter: $f, orderBy: [{ key: \"attributes.version_number\" }]) {
      edges { node { version } } } }";

/// Project `labels` with a run and model `churn` with versions 1 and 2 of that run.
async fn setup(env: &TestEnv) -> (String, String, String, String) {
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "labels").await;
    let run = id(&start_run(s, a, "labels", "train", None, &[]).await);
    let model = id(&create_model(s, a, "labels", "churn").await);
    let v1 = id(&register_model_version(s, a, "labels", "churn", &run).await);
    let v2 = id(&register_model_version(s, a, "labels", "churn", &run).await);
    (run, model, v1, v2)
}

fn versions(d: &Value) -> Vec<i64> {
    d["searchModelVersions"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["version"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_set_searched_deleted_and_audited() {
    let env = TestEnv::start().await;
    let (run, model, v1, _v2) = setup(&env).await;
    let a = &env.admin;

    let d = env
        .gql_ok(
            a,
            SET_RUN_TAG,
            json!({ "r": run, "k": "team", "v": "risk" }),
        )
        .await;
    assert_eq!(d["setRunTag"]["tags"], json!({ "team": "risk" }));
    let d = env
        .gql_ok(
            a,
            SET_MODEL_TAG,
            json!({ "m": model, "k": "owner", "v": "ml-platform" }),
        )
        .await;
    assert_eq!(d["setModelTag"]["tags"], json!({ "owner": "ml-platform" }));
    let d = env
        .gql_ok(
            a,
            SET_VERSION_TAG,
            json!({ "m": v1, "k": "validated by", "v": "qa/2026-12" }),
        )
        .await;
    assert_eq!(
        d["setModelVersionTag"]["tags"],
        json!({ "validated by": "qa/2026-12" })
    );

    // Searchable at once.
    let d = env
        .gql_ok(
            a,
            SEARCH_VERSIONS,
            json!({ "f": "tags.`validated by` LIKE 'qa/%'" }),
        )
        .await;
    assert_eq!(versions(&d), vec![1]);
    let d = env
        .gql_ok(
            a,
            "{ searchRuns(filter: \"tags.team = 'risk'\") { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["searchRuns"]["edges"][0]["node"]["id"], run);
    let d = env
        .gql_ok(
            a,
            "{ searchModels(filter: \"tags.owner = 'ml-platform' and name LIKE 'ch%'\") { edges { node { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["searchModels"]["edges"][0]["node"]["name"], "churn");

    let d = env
        .gql_ok(a, DELETE_RUN_TAG, json!({ "r": run, "k": "team" }))
        .await;
    assert_eq!(d["deleteRunTag"]["tags"], json!({}));

    let entries = verify_audit(&env).await;
    assert_eq!(audit_of(&entries, "run.tag.set", &run).len(), 1);
    assert_eq!(audit_of(&entries, "run.tag.delete", &run).len(), 1);
    assert_eq!(audit_of(&entries, "model.tag.set", &model).len(), 1);
    assert_eq!(audit_of(&entries, "model_version.tag.set", &v1).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_refusals_change_nothing() {
    let env = TestEnv::start().await;
    let (run, _model, v1, _v2) = setup(&env).await;
    let viewer = member_token(
        &env.server,
        &env.admin,
        "labels",
        "viewer@example.com",
        "VIEWER",
    )
    .await;
    let outsider = env.issue_token("outsider@example.com", false).await;
    let a = env.admin.clone();
    let cases = [
        (
            &a,
            "INVALID_INPUT",
            SET_RUN_TAG,
            json!({ "r": run, "k": "", "v": "x" }),
        ),
        (
            &a,
            "INVALID_INPUT",
            SET_RUN_TAG,
            json!({ "r": run, "k": "a\u{0}b", "v": "x" }),
        ),
        (
            &a,
            "INVALID_INPUT",
            SET_RUN_TAG,
            json!({ "r": run, "k": "k", "v": "x".repeat(5001) }),
        ),
        (
            &a,
            "NOT_FOUND",
            DELETE_RUN_TAG,
            json!({ "r": run, "k": "never-set" }),
        ),
        (
            &viewer,
            "FORBIDDEN",
            SET_RUN_TAG,
            json!({ "r": run, "k": "k", "v": "v" }),
        ),
        (
            &viewer,
            "FORBIDDEN",
            SET_VERSION_TAG,
            json!({ "m": v1, "k": "k", "v": "v" }),
        ),
        (
            &outsider,
            "NOT_FOUND",
            SET_RUN_TAG,
            json!({ "r": run, "k": "k", "v": "v" }),
        ),
        (
            &outsider,
            "NOT_FOUND",
            SET_VERSION_TAG,
            json!({ "m": v1, "k": "k", "v": "v" }),
        ),
        (
            &a,
            "NOT_FOUND",
            SET_RUN_TAG,
            json!({ "r": "00000000-0000-7000-8000-000000000000", "k": "k", "v": "v" }),
        ),
    ];
    for (token, code, query, vars) in cases {
        env.assert_refused(token, code, query, vars).await;
    }
    // The 101st tag is refused.
    for i in 0..100 {
        env.gql_ok(
            &a,
            SET_RUN_TAG,
            json!({ "r": run, "k": format!("k{i}"), "v": "v" }),
        )
        .await;
    }
    env.assert_refused(
        &a,
        "INVALID_INPUT",
        SET_RUN_TAG,
        json!({ "r": run, "k": "one-more", "v": "v" }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_aliases_move_and_resolve() {
    let env = TestEnv::start().await;
    let (_run, model, v1, v2) = setup(&env).await;
    let a = &env.admin;

    let d = env
        .gql_ok(a, SET_ALIAS, json!({ "m": v1, "a": "candidate" }))
        .await;
    assert_eq!(
        d["setModelAlias"],
        json!({ "alias": "candidate", "moved": true, "promotion": null })
    );
    let d = env.gql_ok(a, BY_ALIAS, json!({ "a": "candidate" })).await;
    assert_eq!(d["modelVersion"]["version"], 1);
    assert_eq!(d["modelVersion"]["aliases"], json!(["candidate"]));

    env.gql_ok(a, SET_ALIAS, json!({ "m": v2, "a": "candidate" }))
        .await;
    let d = env.gql_ok(a, BY_ALIAS, json!({ "a": "candidate" })).await;
    assert_eq!(d["modelVersion"]["version"], 2);
    let d = env
        .gql_ok(a, SEARCH_VERSIONS, json!({ "f": "alias = 'candidate'" }))
        .await;
    assert_eq!(versions(&d), vec![2]);
    let d = env.gql_ok(a, MODEL_ALIASES, json!({})).await;
    assert_eq!(
        d["model"]["aliases"],
        json!([{ "alias": "candidate", "modelVersion": { "version": 2 } }])
    );

    env.gql_ok(a, DELETE_ALIAS, json!({ "a": "candidate" }))
        .await;
    let d = env.gql_ok(a, BY_ALIAS, json!({ "a": "candidate" })).await;
    assert_eq!(d["modelVersion"], Value::Null);

    let entries = verify_audit(&env).await;
    let moves = audit_of(&entries, "model.alias.set", &model);
    assert_eq!(moves.len(), 2);
    assert_eq!(moves[1]["before"]["model_version_id"], v1);
    assert_eq!(moves[1]["after"]["model_version_id"], v2);
    assert_eq!(audit_of(&entries, "model.alias.delete", &model).len(), 1);

    // Refusals.
    let viewer = member_token(&env.server, a, "labels", "viewer@example.com", "VIEWER").await;
    let outsider = env.issue_token("outsider@example.com", false).await;
    env.assert_refused(
        a,
        "INVALID_INPUT",
        SET_ALIAS,
        json!({ "m": v1, "a": "Champion!" }),
    )
    .await;
    env.assert_refused(
        &viewer,
        "FORBIDDEN",
        SET_ALIAS,
        json!({ "m": v1, "a": "x" }),
    )
    .await;
    env.assert_refused(
        &outsider,
        "NOT_FOUND",
        SET_ALIAS,
        json!({ "m": v1, "a": "x" }),
    )
    .await;
    env.assert_refused(a, "NOT_FOUND", DELETE_ALIAS, json!({ "a": "nothing" }))
        .await;
    let d = env
        .gql_ok(&outsider, BY_ALIAS, json!({ "a": "candidate" }))
        .await;
    assert_eq!(d["modelVersion"], Value::Null, "an outsider sees nothing");
    env.assert_refused(
        a,
        "INVALID_INPUT",
        "{ modelVersion(project: \"labels\", model: \"churn\", version: 1, alias: \"x\") { id } }",
        json!({}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governed_aliases_move_only_by_promotion() {
    let env = TestEnv::start().await;
    let (_run, _model, v1, v2) = setup(&env).await;
    let a = &env.admin;
    env.gql_ok(a, SET_ALIAS, json!({ "m": v1, "a": "live" }))
        .await;

    // Only an admin governs; governing removes the free alias of that name.
    let contributor =
        member_token(&env.server, a, "labels", "dev@example.com", "CONTRIBUTOR").await;
    env.assert_refused(
        &contributor,
        "FORBIDDEN",
        GOVERN,
        json!({ "a": "live", "s": "development" }),
    )
    .await;
    env.assert_refused(
        a,
        "INVALID_INPUT",
        GOVERN,
        json!({ "a": "live", "s": "no-such-stage" }),
    )
    .await;
    env.gql_ok(a, GOVERN, json!({ "a": "live", "s": "development" }))
        .await;
    let d = env.gql_ok(a, BY_ALIAS, json!({ "a": "live" })).await;
    assert_eq!(
        d["modelVersion"],
        Value::Null,
        "no version holds development yet"
    );

    // Moving it is a promotion into development (no approval needed there): applied at once.
    let d = env
        .gql_ok(&contributor, SET_ALIAS, json!({ "m": v2, "a": "live" }))
        .await;
    let change = &d["setModelAlias"];
    assert_eq!(change["moved"], false);
    assert_eq!(change["promotion"]["stage"], "development");
    assert_eq!(change["promotion"]["status"], "APPLIED", "{d}");
    let d = env.gql_ok(a, BY_ALIAS, json!({ "a": "live" })).await;
    assert_eq!(d["modelVersion"]["version"], 2);
    assert_eq!(d["modelVersion"]["aliases"], json!(["live"]));

    // Into a stage that needs approval, the alias waits for the decision.
    env.gql_ok(a, GOVERN, json!({ "a": "staged", "s": "staging" }))
        .await;
    let d = env
        .gql_ok(&contributor, SET_ALIAS, json!({ "m": v1, "a": "staged" }))
        .await;
    assert_eq!(d["setModelAlias"]["promotion"]["status"], "PENDING", "{d}");
    let d = env.gql_ok(a, BY_ALIAS, json!({ "a": "staged" })).await;
    assert_eq!(d["modelVersion"], Value::Null);
    // A governed alias is not deleted by hand.
    env.assert_refused(a, "CONFLICT", DELETE_ALIAS, json!({ "a": "live" }))
        .await;
}
