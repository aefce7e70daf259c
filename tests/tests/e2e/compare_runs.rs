//! `compareRuns`: params and latest metrics side by side, differing keys marked, only readable
//! runs, bounded.

use custody_tests::fixtures::*;
use custody_tests::TestEnv;
use serde_json::json;

const COMPARE: &str = "query($ids: [ID!]!) { compareRuns(ids: $ids) {
    runs { id name codeCommit { id } inputs { id } }
    params { key values differs } metrics { key values differs } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_up_params_and_latest_metrics() {
    let env = TestEnv::start().await;
    let (s, a) = (&env.server, &env.admin);
    create_project(s, a, "cmp").await;
    let one = id(&start_run(s, a, "cmp", "one", None, &[]).await);
    let two = id(&start_run(s, a, "cmp", "two", None, &[]).await);
    log_params(s, a, &one, &[("depth", "6"), ("lr", "0.1")]).await;
    log_params(s, a, &two, &[("depth", "8"), ("lr", "0.1"), ("seed", "7")]).await;
    log_metrics(s, a, &one, json!([{ "key": "auc", "value": 0.5, "step": 1 }, { "key": "auc", "value": 0.8, "step": 2 }])).await;
    log_metrics(
        s,
        a,
        &two,
        json!([{ "key": "auc", "value": 0.8, "step": 5 }]),
    )
    .await;

    let victim = env.issue_token("victim@example.com", false).await;
    create_project(s, &victim, "secret").await;
    let hidden = id(&start_run(s, &victim, "secret", "hidden", None, &[]).await);
    log_params(s, &victim, &hidden, &[("depth", "99")]).await;

    let outsider_view = env
        .gql_ok(&victim, COMPARE, json!({ "ids": [one, hidden] }))
        .await;
    assert_eq!(
        outsider_view["compareRuns"]["runs"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the victim's own run: {outsider_view}"
    );

    let d = env
        .gql_ok(a, COMPARE, json!({ "ids": [two, one, two] }))
        .await;
    let c = &d["compareRuns"];
    let names: Vec<&str> = c["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["two", "one"], "in the order asked, once each");
    assert_eq!(
        c["params"],
        json!([
            { "key": "depth", "values": ["8", "6"], "differs": true },
            { "key": "lr", "values": ["0.1", "0.1"], "differs": false },
            { "key": "seed", "values": ["7", null], "differs": true },
        ])
    );
    assert_eq!(
        c["metrics"],
        json!([{ "key": "auc", "values": [0.8, 0.8], "differs": false }])
    );

    let many: Vec<String> = vec![one.clone(); 51];
    env.assert_refused(a, "INVALID_INPUT", COMPARE, json!({ "ids": many }))
        .await;
    env.assert_refused(a, "INVALID_INPUT", COMPARE, json!({ "ids": ["not-an-id"] }))
        .await;
}
