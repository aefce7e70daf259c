//! The model, model version, lineage and dataset pages in real headless Chromium: a requester
//! walks from the project's models to a version (files, digest, policy dry-run per stage),
//! explores its lineage (expand, collapse, click through to the dataset it was trained on),
//! asks for promotions (one the policy denies, one that waits for an approver), and an approver
//! approves it from the inbox in another browser, after which the version page shows the stage.
//! Refusals: forms without the session's CSRF value, outsiders ("not found" for every page and
//! nothing in the API about what they may not read), anonymous visitors (sent to sign in).
//! Screenshots (1280 px and one at phone width) go to `target/ui-screenshots/`.

use custody_tests::browser::{rows, screenshot, text_of, Browser};
use custody_tests::fixtures::{self, id};
use custody_tests::governance::*;
use custody_tests::server::Server;
use custody_tests::sha256_hex;
use custody_tests::sign_in::{cookie_client, sign_in_by_email, sign_in_in_browser};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const BOB: &str = "bob@example.com";
const OLGA: &str = "olga@example.com";
const WEIGHTS: &[u8] = b"the model's weights, version one";

/// The version under test: project `p`, model `churn` v1, trained by the requester from the
/// clean commit on `features` v1 (itself derived from `raw` v1), with one file `weights.bin`.
struct Trained {
    version: String,
    run: String,
    raw: String,
    features: String,
}

async fn dataset_version(s: &Server, token: &str, dataset: &str, derived_from: &[&str]) -> String {
    fixtures::create_dataset(s, token, "p", dataset).await;
    let d = s
        .gql_ok(
            token,
            "mutation($d: String!, $u: String!, $s: Sha256!, $f: [ID!]) {
               registerDatasetVersion(project: \"p\", dataset: $d, uri: $u, sha256: $s, sizeBytes: 4096,
                 tags: [\"training\"], derivedFrom: $f) { id } }",
            json!({"d": dataset, "u": format!("s3://data/{dataset}/1"), "s": sha256_hex(dataset), "f": derived_from}),
        )
        .await;
    id(&d["registerDatasetVersion"])
}

async fn trained_version(env: &custody_tests::TestEnv, f: &Fixture) -> Trained {
    let s = &env.server;
    let raw = dataset_version(s, &env.admin, "raw", &[]).await;
    let features = dataset_version(s, &env.admin, "features", &[&raw]).await;
    let run = id(&fixtures::start_run(
        s,
        &f.requester,
        "p",
        "train",
        Some(&f.clean_commit),
        &[&features],
    )
    .await);
    let put = reqwest::Client::new()
        .put(s.url(&format!("/api/artifacts/run/{run}/model/weights.bin")))
        .bearer_auth(&f.requester)
        .body(WEIGHTS)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    fixtures::log_metrics(
        s,
        &f.requester,
        &run,
        json!([{"key": "auc", "value": 0.91}]),
    )
    .await;
    fixtures::finish_run(s, &f.requester, &run, "FINISHED").await;
    let d = s
        .gql_ok(
            &f.requester,
            "mutation($r: ID!) { registerModelVersion(project: \"p\", model: \"churn\", runId: $r,
               artifactPath: \"model\", description: \"first\") { id version } }",
            json!({"r": run}),
        )
        .await;
    assert_eq!(d["registerModelVersion"]["version"], 1);
    Trained {
        version: id(&d["registerModelVersion"]),
        run,
        raw,
        features,
    }
}

const VERSION_STATE: &str = "query {
  modelVersion(project: \"p\", model: \"churn\", version: 1) { id stage manifestSha256 aliases }
  promotions(project: \"p\", first: 100) { edges { node { id status stage modelVersion { id } } } }
}";

/// The version's stage and its promotions as `(stage, status)`, through the API.
async fn version_state(s: &Server, token: &str, version: &str) -> (Value, Vec<(String, String)>) {
    let d = s.gql_ok(token, VERSION_STATE, json!({})).await;
    let promotions = d["promotions"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .filter(|n| n["modelVersion"]["id"] == version)
        .map(|n| {
            (
                n["stage"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (d["modelVersion"]["stage"].clone(), promotions)
}

async fn click(c: &Client, locator: Locator<'_>) {
    c.wait()
        .for_element(locator)
        .await
        .unwrap_or_else(|e| panic!("no {locator:?}: {e}"))
        .click()
        .await
        .unwrap();
}

fn row<'a>(rows: &'a [String], start: &str) -> &'a str {
    rows.iter()
        .find(|r| r.starts_with(start))
        .unwrap_or_else(|| panic!("no row starting with {start:?}: {rows:?}"))
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_models_from_models_to_lineage_dataset_and_an_approved_promotion() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let t = trained_version(&env, &f).await;
    let (_, manifest) = {
        let d = s.gql_ok(&f.requester, VERSION_STATE, json!({})).await;
        (
            (),
            d["modelVersion"]["manifestSha256"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(c, s, &smtp, REQUESTER, "/projects/p/models").await;

    // The project's models: churn with its latest version.
    let models = rows(c, "models").await;
    assert_eq!(models.len(), 1, "{models:?}");
    assert!(
        models[0].starts_with("churn") && models[0].contains("v1"),
        "{models:?}"
    );
    screenshot(c, "models").await;

    // The model: one version, from the run `train`, no stage yet.
    click(c, Locator::LinkText("churn")).await;
    assert_eq!(text_of(c, "model-name").await, "churn");
    let versions = rows(c, "versions").await;
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert!(
        versions[0].starts_with("v1") && versions[0].contains("train"),
        "{versions:?}"
    );
    text_of(c, "no-history").await;
    screenshot(c, "model").await;

    // The version: its file, its manifest digest, and the policies' answer for every stage.
    click(c, Locator::LinkText("v1")).await;
    assert_eq!(text_of(c, "version-title").await, "churn v1");
    assert_eq!(text_of(c, "manifest-digest").await, manifest);
    assert!(text_of(c, "version-stage").await.contains("none"));
    let files = rows(c, "files").await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].contains("weights.bin")
            && files[0].contains(&WEIGHTS.len().to_string())
            && files[0].contains(&sha256_of(WEIGHTS)),
        "{files:?}"
    );
    let dry = rows(c, "dry-runs").await;
    assert_eq!(dry.len(), 4, "one row per stage: {dry:?}");
    let development = row(&dry, "development");
    assert!(
        development.contains("allowed") && development.contains("applies at once"),
        "{development}"
    );
    let staging = row(&dry, "staging");
    assert!(
        staging.contains("allowed") && staging.contains('1') && !staging.contains("denied"),
        "{staging}"
    );
    let production = row(&dry, "production");
    assert!(
        production.contains("denied") && production.contains("evaluation dataset"),
        "{production}"
    );
    // The version's upstream is drawn on its page: its run, the dataset and the commit.
    let drawn = rows(c, "lineage-nodes").await;
    assert!(
        drawn.iter().any(|r| r.contains("run train"))
            && drawn.iter().any(|r| r.contains("features v1"))
            && drawn.iter().any(|r| r.contains("churn.git@")),
        "{drawn:?}"
    );
    screenshot(c, "model-version").await;

    // The file downloads, and the compliance report opens, with the browser's own session.
    let cookie = c
        .get_named_cookie("custody_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    let with_session = |path: String| {
        let cookie = cookie.clone();
        async move {
            reqwest::Client::new()
                .get(s.url(&path))
                .header("cookie", format!("custody_session={cookie}"))
                .send()
                .await
                .unwrap()
        }
    };
    let file_href = c
        .find(Locator::Css("#files a"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let download = with_session(file_href).await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), WEIGHTS);
    let report_href = c
        .find(Locator::Id("compliance-report"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let report = with_session(report_href).await;
    assert_eq!(report.status(), 200);
    assert!(report.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(report.text().await.unwrap().contains(&manifest));

    // The lineage explorer: expand `features` to see `raw`, collapse it again, then click
    // through to the dataset page.
    click(c, Locator::Id("explore-lineage")).await;
    assert!(text_of(c, "lineage-title").await.contains("churn v1"));
    let features_node = format!("node-{}", t.features);
    let raw_node = format!("node-{}", t.raw);
    text_of(c, &features_node).await;
    assert!(!exists(c, &format!("#{raw_node}")).await);
    screenshot(c, "lineage").await;
    click(c, Locator::Id(&format!("expand-{features_node}"))).await;
    text_of(c, &raw_node).await;
    assert!(c.current_url().await.unwrap().as_str().contains("expand="));
    let expanded = rows(c, "lineage-nodes").await;
    assert!(
        expanded
            .iter()
            .any(|r| r.contains("3 steps upstream") && r.contains("raw v1")),
        "{expanded:?}"
    );
    screenshot(c, "lineage-expanded").await;
    click(c, Locator::Id(&format!("collapse-{features_node}"))).await;
    text_of(c, &features_node).await;
    assert!(!exists(c, &format!("#{raw_node}")).await);
    assert!(!c.current_url().await.unwrap().as_str().contains("expand="));
    // The same view is its URL: reloading it draws the same graph.
    let here = c.current_url().await.unwrap();
    c.goto(here.as_str()).await.unwrap();
    text_of(c, &features_node).await;
    click(c, Locator::Id(&features_node)).await;
    assert_eq!(text_of(c, "dataset-name").await, "features");
    let dv = rows(c, "dataset-versions").await;
    assert_eq!(dv.len(), 1, "{dv:?}");
    assert!(
        dv[0].starts_with("v1")
            && dv[0].contains("s3://data/features/1")
            && dv[0].contains(&sha256_hex("features"))
            && dv[0].contains("raw v1")
            && dv[0].contains("train"),
        "{dv:?}"
    );
    screenshot(c, "dataset").await;
    // The same explorer centres on a dataset version: downstream, its run and the model version.
    click(c, Locator::Css("#v1 a[href^='/lineage/']")).await;
    assert!(text_of(c, "lineage-title").await.contains("features v1"));
    let around = rows(c, "lineage-nodes").await;
    for (place, name) in [
        ("1 step upstream", "raw v1"),
        ("1 step downstream", "run train"),
        ("2 steps downstream", "churn v1"),
    ] {
        assert!(
            around
                .iter()
                .any(|r| r.starts_with(place) && r.contains(name)),
            "{name} is not {place}: {around:?}"
        );
    }
    c.goto(&s.url("/projects/p/datasets")).await.unwrap();
    let datasets = rows(c, "datasets").await;
    assert!(
        datasets.iter().any(|r| r.starts_with("features"))
            && datasets.iter().any(|r| r.starts_with("raw")),
        "{datasets:?}"
    );

    // A request the policy denies: the reason is shown and nothing moves.
    let version_url = s.url("/projects/p/models/churn/versions/1");
    c.goto(&version_url).await.unwrap();
    click(c, Locator::Id("request-production")).await;
    assert_eq!(text_of(c, "outcome").await, "Denied by policy");
    assert!(text_of(c, "deny-reasons")
        .await
        .contains("evaluation dataset"));
    let (stage, promotions) = version_state(s, &f.requester, &t.version).await;
    assert_eq!(stage, Value::Null);
    assert_eq!(
        promotions,
        vec![("production".to_owned(), "DENIED".to_owned())]
    );

    // A request for staging waits for one approver.
    click(c, Locator::Id("back-to-version")).await;
    c.find(Locator::Id("comment-staging"))
        .await
        .unwrap()
        .send_keys("ready for the shadow test")
        .await
        .unwrap();
    click(c, Locator::Id("request-staging")).await;
    assert_eq!(text_of(c, "outcome").await, "Waiting for approval");
    assert_eq!(text_of(c, "status").await, "PENDING");
    let (stage, _) = version_state(s, &f.requester, &t.version).await;
    assert_eq!(stage, Value::Null, "nothing moves before the approval");
    let pending = s
        .gql_ok(
            &f.requester,
            "{ promotions(project: \"p\", status: PENDING) { edges { node { id stage comment } } } }",
            json!({}),
        )
        .await;
    let pending = &pending["promotions"]["edges"][0]["node"];
    assert_eq!(pending["stage"], "staging");
    assert_eq!(pending["comment"], "ready for the shadow test");
    let pid = id(pending);

    // The approver, in another browser, approves from the inbox.
    let approver = Browser::start().await;
    let b = approver.client();
    b.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(b, s, &smtp, BOB, "/approvals").await;
    click(b, Locator::Id(&format!("approve-{pid}"))).await;
    assert_eq!(text_of(b, "outcome").await, "Approved");
    assert_eq!(text_of(b, "status").await, "APPLIED");
    approver.close().await;

    // The version page shows the stage applied, and the model page its history.
    c.goto(&version_url).await.unwrap();
    assert_eq!(text_of(c, "version-stage").await, "staging");
    let history = rows(c, "version-promotions").await;
    assert!(
        history
            .iter()
            .any(|r| r.starts_with("staging") && r.contains("APPLIED")),
        "{history:?}"
    );
    assert!(text_of(c, "dry-run-staging").await.contains("already here"));
    c.goto(&s.url("/projects/p/models/churn")).await.unwrap();
    let history = rows(c, "stage-history").await;
    assert!(
        history.iter().any(|r| r.contains("staging")
            && r.contains("APPLIED")
            && r.contains(REQUESTER)
            && r.contains(BOB)),
        "{history:?}"
    );

    // At phone width the version page fits: nothing but the graph and tables scrolls sideways.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&version_url).await.unwrap();
    text_of(c, "version-title").await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is wider than the phone by {overflow} px"
    );
    screenshot(c, "model-version-phone").await;
    browser.close().await;
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_models_refuse_forged_forms_outsiders_and_anonymous_visitors() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let t = trained_version(&env, &f).await;

    // An empty project shows how to register a first model and dataset.
    let alice = sign_in_by_email(s, &smtp, REQUESTER).await;
    s.gql_ok(
        &f.requester,
        "mutation { createProject(name: \"fresh\") { id } }",
        json!({}),
    )
    .await;
    let empty = alice
        .get(s.url("/projects/fresh/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 200);
    let empty = empty.text().await.unwrap();
    assert!(
        empty.contains("id=\"no-models\"") && empty.contains("register_model"),
        "{empty}"
    );
    let empty = alice
        .get(s.url("/projects/fresh/datasets"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(empty.contains("id=\"no-datasets\""), "{empty}");

    // The request form without the session's CSRF value, or with another one, is refused and
    // changes nothing.
    let page = alice
        .get(s.url("/projects/p/models/churn/versions/1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = custody_tests::sign_in::hidden_value(&page, "csrf");
    assert!(!csrf.is_empty());
    let action = s.url("/projects/p/models/churn/versions/1/promotions");
    for forged in [None, Some("not-the-session-value")] {
        let mut form = vec![("version_id", t.version.as_str()), ("stage", "development")];
        if let Some(value) = forged {
            form.push(("csrf", value));
        }
        let r = assert_db_unchanged(&env, "a forged promotion request", async {
            alice.post(&action).form(&form).send().await.unwrap()
        })
        .await;
        assert_eq!(r.status(), 403, "forged csrf {forged:?}");
        assert!(r.text().await.unwrap().contains("Nothing was changed"));
    }
    let (stage, promotions) = version_state(s, &f.requester, &t.version).await;
    assert_eq!(stage, Value::Null);
    assert!(promotions.is_empty(), "{promotions:?}");
    // With the session's value, the same form applies at once (development needs no approval).
    let r = alice
        .post(&action)
        .form(&[
            ("version_id", t.version.as_str()),
            ("stage", "development"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Promoted"));
    let (stage, _) = version_state(s, &f.requester, &t.version).await;
    assert_eq!(stage, "development");

    // Every new page, for an outsider: "not found", and nothing of what is there.
    s.issue_token(OLGA, false).await;
    let olga = sign_in_by_email(s, &smtp, OLGA).await;
    let pages = [
        "/projects/p/models".to_owned(),
        "/projects/p/models/churn".into(),
        "/projects/p/models/churn/versions/1".into(),
        format!("/lineage/model_version/{}", t.version),
        format!("/lineage/dataset_version/{}?up=1&down=3", t.features),
        format!("/lineage/run/{}", t.run),
        "/projects/p/datasets".into(),
        "/projects/p/datasets/features".into(),
        // Unknown things, for a member: the same page.
        "/projects/nowhere/models".into(),
    ];
    for path in &pages {
        let r = olga.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} for an outsider");
        let body = r.text().await.unwrap();
        assert!(body.contains("Not found"), "{path}: {body}");
        for secret in ["churn", "features", "weights", "train"] {
            assert!(
                !body.contains(&format!("{secret} ")) && !body.contains(&format!(">{secret}<")),
                "{path} shows {secret}: {body}"
            );
        }
    }
    for path in [
        "/projects/p/models/nothing",
        "/projects/p/models/churn/versions/9",
        "/projects/p/datasets/nothing",
        "/lineage/run/0190a000-0000-7000-8000-000000000000",
        "/lineage/table/whatever",
    ] {
        let r = alice.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} for a member");
    }
    // An outsider's forged request for someone else's version changes nothing either.
    let olga_csrf = custody_tests::sign_in::session_csrf(&olga, s).await;
    let r = assert_db_unchanged(&env, "an outsider's promotion request", async {
        olga.post(&action)
            .form(&[
                ("version_id", t.version.as_str()),
                ("stage", "staging"),
                ("csrf", olga_csrf.as_str()),
            ])
            .send()
            .await
            .unwrap()
    })
    .await;
    assert_eq!(r.status(), 404);

    // Anonymous visitors are sent to sign in, and back.
    let anonymous = cookie_client()
        .get(s.url("/projects/p/models/churn/versions/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        anonymous.headers()["location"],
        "/sign-in?next=%2Fprojects%2Fp%2Fmodels%2Fchurn%2Fversions%2F1"
    );
}

/// The API fields the pages added answer only what the caller may read: a run of another
/// project that consumed a dataset version is left out of `consumedBy` for members of the
/// dataset's project alone, lineage nodes of other projects are never built, and an outsider
/// gets NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_models_api_fields_cross_projects_only_where_readable() {
    let env = custody_tests::TestEnv::start().await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let t = trained_version(&env, &f).await;
    // The server admin, a member of both, trains in project `other` on `p`'s features.
    fixtures::create_project(s, &env.admin, "other").await;
    let olga = fixtures::member_token(s, &env.admin, "other", OLGA, "CONTRIBUTOR").await;
    let foreign =
        id(&fixtures::start_run(s, &env.admin, "other", "foreign", None, &[&t.features]).await);

    let consumers = "query { dataset(project: \"p\", name: \"features\") { project { name }
      versions { version derivedFrom { version dataset { name } } consumedBy { name project { name } } } } }";
    let seen_by_alice = s.gql_ok(&f.requester, consumers, json!({})).await;
    let v1 = &seen_by_alice["dataset"]["versions"][0];
    assert_eq!(seen_by_alice["dataset"]["project"]["name"], "p");
    assert_eq!(
        v1["derivedFrom"],
        json!([{"version": 1, "dataset": {"name": "raw"}}])
    );
    assert_eq!(
        v1["consumedBy"],
        json!([{"name": "train", "project": {"name": "p"}}]),
        "a member of p alone sees p's runs only"
    );
    let seen_by_admin = s.gql_ok(&env.admin, consumers, json!({})).await;
    let names: Vec<&str> = seen_by_admin["dataset"]["versions"][0]["consumedBy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["train", "foreign"]);

    // Lineage nodes answer their entity only when readable: Olga, in `other` only, sees her
    // run and none of `p`'s nodes; Alice sees nothing of `other`.
    let lineage = "query($n: NodeRef!, $d: LineageDirection!) { lineage(node: $n, direction: $d, depth: 3) {
      nodes { kind id run { name } datasetVersion { version dataset { name } } modelVersion { version } codeCommit { commit } } } }";
    let olgas = s
        .gql_ok(
            &olga,
            lineage,
            json!({"n": {"kind": "RUN", "id": foreign}, "d": "UPSTREAM"}),
        )
        .await;
    assert_eq!(
        olgas["lineage"]["nodes"],
        json!([{"kind": "RUN", "id": foreign, "run": {"name": "foreign"}, "datasetVersion": null, "modelVersion": null, "codeCommit": null}])
    );
    let alices = s
        .gql_ok(
            &f.requester,
            lineage,
            json!({"n": {"kind": "DATASET_VERSION", "id": t.features}, "d": "DOWNSTREAM"}),
        )
        .await;
    let nodes = alices["lineage"]["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| n["id"] != foreign), "{nodes:?}");
    assert!(
        nodes
            .iter()
            .any(|n| n["modelVersion"]["version"] == 1 && n["kind"] == "MODEL_VERSION"),
        "{nodes:?}"
    );
    // An outsider asking about p's nodes learns nothing.
    for (kind, node) in [
        ("DATASET_VERSION", &t.features),
        ("MODEL_VERSION", &t.version),
    ] {
        let code = s
            .gql_err_code(
                &olga,
                lineage,
                json!({"n": {"kind": kind, "id": node}, "d": "UPSTREAM"}),
            )
            .await;
        assert_eq!(code, "NOT_FOUND");
    }
    // Promotions narrowed to a model or a version, within what the caller may read.
    request(s, &f.requester, &t.version, "development", None).await;
    let of = "query($p: String, $m: String, $v: ID) { promotions(project: $p, model: $m, modelVersionId: $v) {
      edges { node { stage status modelVersion { id } } } } }";
    let of_churn = s
        .gql_ok(&f.requester, of, json!({"p": "p", "m": "churn"}))
        .await;
    assert_eq!(
        of_churn["promotions"]["edges"],
        json!([{"node": {"stage": "development", "status": "APPLIED", "modelVersion": {"id": t.version}}}])
    );
    let of_other = s
        .gql_ok(&f.requester, of, json!({"p": "p", "m": "no-such-model"}))
        .await;
    assert_eq!(of_other["promotions"]["edges"], json!([]));
    let of_version = s.gql_ok(&f.requester, of, json!({"v": t.version})).await;
    assert_eq!(
        of_version["promotions"]["edges"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        s.gql_err_code(&f.requester, of, json!({"m": "churn"}))
            .await,
        "INVALID_INPUT"
    );
    // Olga names p's version: she learns nothing, with or without naming the project.
    let olgas = s.gql_ok(&olga, of, json!({"v": t.version})).await;
    assert_eq!(olgas["promotions"]["edges"], json!([]));
    let code = s
        .gql_err_code(&olga, of, json!({"p": "p", "v": t.version}))
        .await;
    assert!(code == "NOT_FOUND" || code == "FORBIDDEN", "{code}");

    let hidden = s.gql(&olga, consumers, json!({})).await;
    assert!(
        hidden["data"]["dataset"].is_null(),
        "an outsider reads p's dataset: {hidden}"
    );
}

/// A version built on recalled data says so at the top of its page (which dataset, who recalled
/// it and why), the policy's answer for its next stage is the denial, and the dataset's page marks
/// the recalled version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_a_version_built_on_recalled_data_shows_the_recall() {
    let (env, smtp) = start_env_with_smtp(&[]).await;
    let s = &env.server;
    let f = Fixture::build(&env, &[BOB]).await;
    let t = trained_version(&env, &f).await;
    // `raw` is two steps upstream of the version (features was derived from it).
    s.gql_ok(
        &env.admin,
        "mutation($id: ID!) { recallDatasetVersion(id: $id, reason: \"consent withdrawn\") { id } }",
        json!({"id": t.raw}),
    )
    .await;

    let browser = Browser::start().await;
    let c = browser.client();
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_in_browser(
        c,
        s,
        &smtp,
        REQUESTER,
        "/projects/p/models/churn/versions/1",
    )
    .await;
    let panel = text_of(c, "recalled-upstream").await;
    assert!(
        panel.contains("Built on recalled data")
            && panel.contains("raw version 1")
            && panel.contains("admin@localhost")
            && panel.contains("consent withdrawn"),
        "{panel}"
    );
    let staging = text_of(c, "dry-run-staging").await;
    assert!(
        staging.contains("raw version 1 was recalled (consent withdrawn)"),
        "{staging}"
    );
    screenshot(c, "model_version_recalled").await;

    c.goto(&s.url("/projects/p/datasets/raw")).await.unwrap();
    let versions = rows(c, "dataset-versions").await;
    assert!(
        versions[0].contains("recalled: consent withdrawn"),
        "{versions:?}"
    );
}
