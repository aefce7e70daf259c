//! The plans of the hot search statements, EXPLAINed on 20,000 seeded runs: a filter or a sort
//! on a metric reads latest values, never the metric history, and no search scans a whole
//! metrics or params table. A dropped index or a statement that stops using one fails here
//! loudly, long before a dashboard slows down.

use custody_server::ids::{ProjectId, TypedId};
use custody_server::search::runs::{explainable, RUNS};
use custody_server::search::sql::{Bind, Search};
use custody_tests::fixtures::create_project;
use custody_tests::seed::{seed_runs, RunSeed};
use custody_tests::TestEnv;
use serde_json::Value;
use tokio_postgres::types::ToSql;

/// Every (node type, relation) of a JSON plan, depth first.
fn nodes(plan: &Value, out: &mut Vec<(String, String)>) {
    let node_type = plan["Node Type"].as_str().unwrap_or_default().to_owned();
    let relation = plan["Relation Name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    out.push((node_type, relation));
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

fn as_sql(bind: &Bind) -> Box<dyn ToSql + Sync + Send> {
    match bind.clone() {
        Bind::Text(v) => Box::new(v),
        Bind::Texts(v) => Box::new(v),
        Bind::Float(v) => Box::new(v),
        Bind::Int(v) => Box::new(v),
        Bind::Time(v) => Box::new(v),
        Bind::Uuid(v) => Box::new(v),
        Bind::Uuids(v) => Box::new(v),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_read_latest_values_through_indexes() {
    let env = TestEnv::start().await;
    create_project(&env.server, &env.admin, "plans").await;
    let sql = env.sql().await;
    let project = seed_runs(
        &sql,
        "plans",
        &RunSeed {
            runs: 20_000,
            metrics: 20,
            params: 10,
        },
    )
    .await;

    let searches: [(&str, &[&str]); 4] = [
        // The benchmark's shape: a metric and a param, ordered by another metric.
        (
            "metrics.m0 > 0.5 and params.p0 = 'v3'",
            &["metrics.m1 DESC"],
        ),
        ("metrics.m0 > 0.99", &[]),
        (
            "params.p1 IN ('v1', 'v2') and tags.team = 't3'",
            &["params.p2"],
        ),
        ("", &["metrics.m3"]),
    ];
    for (filter, order) in searches {
        let order: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        let search = Search::new(&RUNS, Some(filter), &order, None, 50).unwrap();
        let (statement, binds) = explainable(&search, &[ProjectId::from_uuid(project)]);
        let binds: Vec<Box<dyn ToSql + Sync + Send>> = binds.iter().map(as_sql).collect();
        let params: Vec<&(dyn ToSql + Sync)> = binds
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let row = sql
            .query_one(&format!("EXPLAIN (FORMAT JSON) {statement}"), &params)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {statement}: {e}"));
        let plan: Value = row.get(0);
        let mut found = Vec::new();
        nodes(&plan[0]["Plan"], &mut found);
        let what = format!("{filter:?} ordered by {order:?}:\n{plan:#}");
        assert!(
            found.iter().any(|(_, relation)| relation == "runs"),
            "the plan was not read (no node reads runs): {what}"
        );
        assert!(
            !found.iter().any(|(_, relation)| relation == "run_metrics"),
            "a search read the metric history: {what}"
        );
        for table in ["run_latest_metrics", "run_params"] {
            assert!(
                !found
                    .iter()
                    .any(|(node, relation)| node == "Seq Scan" && relation == table),
                "a search scanned all of {table}: {what}"
            );
        }
    }
}
