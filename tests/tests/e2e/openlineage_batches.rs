//! OpenLineage events sent at once share a transaction (group commit): the server gathers the
//! events queued while it applies a batch. These tests send them concurrently against the real
//! server and check what a batch must never do: lose or double an event, let a refused event
//! take its neighbours down with it, or let one land half-applied. (The mapping itself is
//! driven by the real `openlineage-python` client in `tests/python/test_openlineage.py`.)

use std::sync::Arc;

use custody_tests::fixtures::{create_project, member_token};
use custody_tests::governance::{audit_of, verify_audit};
use custody_tests::TestEnv;
use serde_json::{json, Value};

/// A RunEvent: a new run of `job` reading `public.source` and writing `public.out-{n}`.
fn run_event(run_id: &str, job: &str, n: usize) -> Value {
    json!({
        "eventType": "COMPLETE",
        "eventTime": "2026-12-05T04:00:00Z",
        "producer": "https://github.com/example/pipelines",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id},
        "job": {"namespace": "airflow", "name": job},
        "inputs": [{"namespace": "postgres://warehouse", "name": "public.source"}],
        "outputs": [{"namespace": "postgres://warehouse", "name": format!("public.out-{n}")}],
    })
}

const BATCHES: &str = "custody_group_commit_batches_total{queue=\"openlineage\"}";
const EVENTS: &str = "custody_group_commit_calls_total{queue=\"openlineage\"}";
const REAPPLIED: &str = "custody_openlineage_batches_reapplied_total";

/// 160 events from 16 senders at once, every fifth one refused: half sent by an outsider to the
/// project (404: events of two callers share a transaction, and the outsider's must neither land
/// nor see the pipeline's), half reusing a run id another job holds (409). Every accepted event
/// is applied exactly once with its one audit entry, every refused one changes nothing, and the
/// batches that held a refused event were applied again one by one, so their other events still
/// landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_share_commits_and_a_refused_one_sinks_no_neighbour() {
    let env = Arc::new(TestEnv::start().await);
    create_project(&env.server, &env.admin, "pipelines").await;
    let etl = member_token(
        &env.server,
        &env.admin,
        "pipelines",
        "etl@example.com",
        "CONTRIBUTOR",
    )
    .await;
    let outsider = env.server.issue_token("outsider@example.com", false).await;
    let url = env.server.url("/api/v1/lineage?project=pipelines");
    // The run id the refused events reuse, taken by the job `owner`.
    let taken = uuid::Uuid::now_v7().to_string();
    let answer = env
        .server
        .http
        .post(&url)
        .bearer_auth(&etl)
        .json(&run_event(&taken, "owner", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    let sql = env.sql().await;
    let runs_before: i64 = sql
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    let batches_before = env.server.metric(&env.admin, BATCHES).await;
    let events_before = env.server.metric(&env.admin, EVENTS).await;

    let senders: Vec<_> = (0..16)
        .map(|sender| {
            let (env, url, etl, taken) = (env.clone(), url.clone(), etl.clone(), taken.clone());
            let outsider = outsider.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..10 {
                    let n = sender * 10 + i + 1;
                    let refused = n % 5 == 0;
                    let (token, run_id) = match n % 10 {
                        0 => (&outsider, uuid::Uuid::now_v7().to_string()),
                        5 => (&etl, taken.clone()),
                        _ => (&etl, uuid::Uuid::now_v7().to_string()),
                    };
                    let answer = env
                        .server
                        .http
                        .post(&url)
                        .bearer_auth(token)
                        .json(&run_event(&run_id, &format!("job-{n}"), n))
                        .send()
                        .await
                        .unwrap();
                    let status = answer.status().as_u16();
                    let body: Value = answer.json().await.unwrap();
                    answers.push((n, refused, status, body));
                }
                answers
            })
        })
        .collect();
    let mut applied = Vec::new();
    for sender in senders {
        for (n, refused, status, body) in sender.await.unwrap() {
            if refused && n % 10 == 0 {
                assert_eq!(status, 404, "the outsider's event {n}: {body}");
            } else if refused {
                assert_eq!(status, 409, "event {n}: {body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("another job")),
                    "event {n}: {body}"
                );
            } else {
                assert_eq!(status, 201, "event {n}: {body}");
                applied.push((n, body));
            }
        }
    }
    assert_eq!(applied.len(), 128);

    // Each accepted event: its own run, output version and audit entry; nothing of the refused.
    let runs_after: i64 = sql
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs_after - runs_before, 128, "one run per accepted event");
    let jobs: Vec<String> = sql
        .query("SELECT name FROM jobs ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        jobs.len(),
        1 + 128,
        "a refused event records no job: {jobs:?}"
    );
    assert!(jobs.iter().all(|job| {
        job == "owner"
            || job
                .strip_prefix("job-")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n % 5 != 0)
    }));
    let outputs: Vec<String> = sql
        .query(
            "SELECT name FROM openlineage_datasets WHERE name LIKE 'public.out-%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(outputs.len(), 1 + 128, "a refused event records no dataset");
    assert!(outputs.iter().all(|name| {
        name.strip_prefix("public.out-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n == 0 || n % 5 != 0) // out-0: the owner's
    }));
    let entries = verify_audit(&env).await;
    assert!(
        entries.iter().all(|e| e["actor"] != "outsider@example.com"),
        "the outsider's events left an audit entry"
    );
    for (n, body) in &applied {
        let run = body["runId"].as_str().unwrap();
        let outputs = body["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1, "event {n}: {body}");
        assert_eq!(
            audit_of(&entries, "run.start", run).len(),
            1,
            "event {n}: one run.start entry"
        );
    }
    let ingested = entries
        .iter()
        .filter(|e| e["action"] == "openlineage.event")
        .count();
    assert_eq!(
        ingested,
        1 + 128,
        "one openlineage.event entry per applied event"
    );

    // The events were in fact gathered into shared transactions, and the batches a refused
    // event was in were applied again one by one.
    let batches = env.server.metric(&env.admin, BATCHES).await - batches_before;
    let events = env.server.metric(&env.admin, EVENTS).await - events_before;
    assert_eq!(events, 160.0, "every event went through the queue");
    assert!(batches < events, "{events} events in {batches} batches");
    let reapplied = env.server.metric(&env.admin, REAPPLIED).await;
    assert!(
        reapplied >= 1.0,
        "no batch held a refused event ({batches} batches)"
    );
}

/// An event replayed many times at once is applied once: the copies may share a batch, and the
/// first one applied makes the others replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_sent_many_times_at_once_is_applied_once() {
    let env = Arc::new(TestEnv::start().await);
    create_project(&env.server, &env.admin, "pipelines").await;
    let url = env.server.url("/api/v1/lineage?project=pipelines");
    let event = run_event(&uuid::Uuid::now_v7().to_string(), "load", 1);
    let copies: Vec<_> = (0..24)
        .map(|_| {
            let (env, url, event) = (env.clone(), url.clone(), event.clone());
            tokio::spawn(async move {
                let answer = env
                    .server
                    .http
                    .post(&url)
                    .bearer_auth(&env.admin)
                    .json(&event)
                    .send()
                    .await
                    .unwrap();
                answer.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for copy in copies {
        statuses.push(copy.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses[0], 200);
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
    let sql = env.sql().await;
    let runs: i64 = sql
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    let entries = verify_audit(&env).await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["action"] == "openlineage.event")
            .count(),
        1
    );
}

/// Pipelines reporting the same new table and job at once: every event is applied (the ones
/// that lost the race to record them find them recorded), and the table and job exist once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_naming_one_new_table_at_once_all_land_on_one_dataset() {
    let env = Arc::new(TestEnv::start().await);
    create_project(&env.server, &env.admin, "pipelines").await;
    let url = env.server.url("/api/v1/lineage?project=pipelines");
    let senders: Vec<_> = (0..24)
        .map(|_| {
            let (env, url) = (env.clone(), url.clone());
            tokio::spawn(async move {
                let run_id = uuid::Uuid::now_v7().to_string();
                let answer = env
                    .server
                    .http
                    .post(&url)
                    .bearer_auth(&env.admin)
                    .json(&run_event(&run_id, "shared-job", 7))
                    .send()
                    .await
                    .unwrap();
                (answer.status().as_u16(), answer.text().await.unwrap())
            })
        })
        .collect();
    for sender in senders {
        let (status, body) = sender.await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let sql = env.sql().await;
    for (table, expected) in [("runs", 24), ("jobs", 1), ("openlineage_datasets", 2)] {
        let n: i64 = sql
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, expected, "{table}");
    }
    // Each run wrote its own version of the shared output.
    let versions: i64 = sql
        .query_one(
            "SELECT count(*) FROM dataset_versions v JOIN openlineage_datasets o
             ON o.dataset_id = v.dataset_id WHERE o.name = 'public.out-7'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 24);
    verify_audit(&env).await;
}
