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

/// A server with the project `pipelines` and a CONTRIBUTOR's token there (the pipeline's).
async fn pipelines() -> (Arc<TestEnv>, String) {
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
    (env, etl)
}

/// The version numbers of the OpenLineage dataset `name`, in order.
async fn version_numbers(sql: &tokio_postgres::Client, name: &str) -> Vec<i32> {
    sql.query(
        "SELECT v.version FROM dataset_versions v JOIN openlineage_datasets o
         ON o.dataset_id = v.dataset_id WHERE o.name = $1 ORDER BY 1",
        &[&name],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
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
    let (env, etl) = pipelines().await;
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

const PLANNED: &str = "custody_openlineage_events_planned_total";

/// A run of the job `nightly`, reading `public.source` and writing `public.scores`.
fn nightly(run_id: &str, event_type: &str) -> Value {
    json!({
        "eventType": event_type,
        "eventTime": "2026-12-05T04:00:00Z",
        "producer": "https://github.com/example/pipelines",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id},
        "job": {"namespace": "airflow", "name": "nightly"},
        "inputs": [{"namespace": "postgres://warehouse", "name": "public.source"}],
        "outputs": [{"namespace": "postgres://warehouse", "name": "public.scores"}],
    })
}

/// A run's edges as `relation → kind` (from the run) and `relation ← kind` (to it), sorted.
async fn edges_of(sql: &tokio_postgres::Client, run: &str) -> Vec<String> {
    sql.query(
        "SELECT relation || CASE WHEN from_id = $1::text::uuid THEN ' → ' || to_kind
                                 ELSE ' ← ' || from_kind END
         FROM lineage_edges WHERE from_id = $1::text::uuid OR to_id = $1::text::uuid ORDER BY 1",
        &[&run],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The actions of a shape's audit entries (each entry is `[action, subject kind, actor, after]`).
fn actions(shape: &Value) -> Vec<&Value> {
    shape["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e[0])
        .collect()
}

/// Posts an event; answers the status and the body.
async fn post(env: &TestEnv, token: &str, event: &Value) -> (u16, Value) {
    let answer = env
        .server
        .http
        .post(env.server.url("/api/v1/lineage?project=pipelines"))
        .bearer_auth(token)
        .json(event)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// A run's first event with nothing to look up (job and tables known) is planned and recorded
/// set-wise with its batch's others. What it records must be what the same event records one by
/// one: the run, its edges, its output's version, and its audit entries in their order. Then the
/// START and COMPLETE of many runs at once (a COMPLETE may share a batch with its run's START and
/// must find what the START planned), with an outsider's events naming the same job: all land
/// once, the outsider's not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_first_event_recorded_set_wise_records_what_one_by_one_does() {
    let (env, etl) = pipelines().await;
    let outsider = env.server.issue_token("outsider@example.com", false).await;

    // One by one: the job and both tables are new. Then the same shape again, planned.
    let (a, b) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    let (status, one_by_one) = post(&env, &etl, &nightly(&a, "COMPLETE")).await;
    assert_eq!(status, 201, "{one_by_one}");
    let planned_before = env.server.metric(&env.admin, PLANNED).await;
    let (status, planned) = post(&env, &etl, &nightly(&b, "COMPLETE")).await;
    assert_eq!(status, 201, "{planned}");
    assert_eq!(
        env.server.metric(&env.admin, PLANNED).await - planned_before,
        1.0,
        "the second event was planned"
    );
    assert_eq!(
        planned["inputs"], one_by_one["inputs"],
        "the same source version"
    );

    let sql = env.sql().await;
    let entries = verify_audit(&env).await;
    // Each event's rows and entries with its own ids and digests replaced by placeholders.
    let mut shapes = Vec::new();
    for (openlineage_run, body) in [(&a, &one_by_one), (&b, &planned)] {
        let run = body["runId"].as_str().unwrap();
        let output = body["outputs"][0].as_str().unwrap();
        let run_uuid: uuid::Uuid = run.parse().unwrap();
        let output_uuid: uuid::Uuid = output.parse().unwrap();
        let version = sql
            .query_one(
                "SELECT sha256, version, uri, tags, created_by::text FROM dataset_versions
                 WHERE id = $1",
                &[&output_uuid],
            )
            .await
            .unwrap();
        let sha256: String = version.get(0);
        let number: i32 = version.get(1);
        let row = sql
            .query_one(
                "SELECT name, status, tags::text, created_by::text, ended_at IS NOT NULL,
                        code_commit_id IS NULL
                 FROM runs WHERE id = $1",
                &[&run_uuid],
            )
            .await
            .unwrap();
        let edges = edges_of(&sql, run).await;
        let start = entries
            .iter()
            .position(|e| e["action"] == "run.start" && e["subjectId"] == run)
            .unwrap();
        // From the run's start to the event's own entry (one by one, the new output table's
        // `dataset.create` comes in between: not part of the run).
        let end = start
            + entries[start..]
                .iter()
                .position(|e| e["action"] == "openlineage.event")
                .unwrap();
        let event_entries: Vec<Value> = entries[start..=end]
            .iter()
            .filter(|e| e["action"] != "dataset.create")
            .map(|e| json!([e["action"], e["subjectKind"], e["actor"], e["after"]]))
            .collect();
        let text = json!({
            "run": [row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, String>(2),
                    row.get::<_, String>(3), row.get::<_, bool>(4), row.get::<_, bool>(5)],
            "edges": edges,
            "version": [version.get::<_, String>(2), version.get::<_, Vec<String>>(3),
                        version.get::<_, String>(4)],
            "entries": event_entries,
        })
        .to_string()
        .replace(run, "RUN")
        .replace(openlineage_run.as_str(), "OPENLINEAGE-RUN")
        .replace(output, "OUTPUT")
        .replace(&sha256, "SHA256")
        .replace(&format!("\"version\":{number}"), "\"version\":\"N\"");
        let mut shape: Value = serde_json::from_str(&text).unwrap();
        for entry in shape["entries"].as_array_mut().unwrap() {
            entry[3]
                .as_object_mut()
                .map(|after| after.remove("ended_at"));
            entry[3]
                .as_object_mut()
                .map(|after| after.remove("subject_id"));
        }
        shapes.push(shape);
    }
    assert_eq!(
        actions(&shapes[0]),
        [
            "run.start",
            "dataset_version.register",
            "run.finish",
            "openlineage.event"
        ]
    );
    assert_eq!(shapes[0], shapes[1], "one by one, then planned");

    // Many runs' START and COMPLETE at once, and an outsider naming the same job and tables.
    let runs: Vec<String> = (0..12).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let senders: Vec<_> = runs
        .iter()
        .map(|run| {
            let (env, etl, run) = (env.clone(), etl.clone(), run.clone());
            tokio::spawn(async move {
                let start = nightly(&run, "START");
                let complete = nightly(&run, "COMPLETE");
                let (started, completed) =
                    tokio::join!(post(&env, &etl, &start), post(&env, &etl, &complete));
                [started, completed]
            })
        })
        .collect();
    let intruders: Vec<_> = (0..4)
        .map(|_| {
            let (env, outsider) = (env.clone(), outsider.clone());
            tokio::spawn(async move {
                let run = uuid::Uuid::now_v7().to_string();
                post(&env, &outsider, &nightly(&run, "COMPLETE")).await
            })
        })
        .collect();
    let mut custody_runs = std::collections::HashSet::new();
    for sender in senders {
        for (status, body) in sender.await.unwrap() {
            assert_eq!(status, 201, "{body}");
            custody_runs.insert(body["runId"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(custody_runs.len(), 12, "START and COMPLETE name one run");
    for intruder in intruders {
        let (status, body) = intruder.await.unwrap();
        assert_eq!(status, 404, "{body}");
    }
    assert!(
        env.server.metric(&env.admin, PLANNED).await - planned_before > 1.0,
        "none of the runs' first events was planned"
    );
    let finished: i64 = sql
        .query_one(
            "SELECT count(*) FROM runs WHERE status = 'finished' AND ended_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        finished,
        2 + 12,
        "every run ended once, whichever event came first"
    );
    // Each run wrote one version of the scores, numbered in turn.
    assert_eq!(
        version_numbers(&sql, "public.scores").await,
        (1..=14).collect::<Vec<_>>()
    );
    let produced: i64 = sql
        .query_one(
            "SELECT count(DISTINCT to_id) FROM lineage_edges WHERE relation = 'produced_by'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(produced, 14, "each version produced by its own run");
    let entries = verify_audit(&env).await;
    for run in &custody_runs {
        for action in ["run.start", "run.finish"] {
            assert_eq!(
                audit_of(&entries, action, run).len(),
                1,
                "{action} of {run}"
            );
        }
    }
    let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("openlineage.event"), 2 + 24);
    assert_eq!(
        count("dataset_version.register"),
        1 + 14,
        "the source, and 14 outputs"
    );
    assert!(entries.iter().all(|e| e["actor"] != "outsider@example.com"));
}

/// A run's later event names the tables it reads again, without a version: that is the version it
/// read when it started, not one another run wrote in between (a recall of the newer version
/// must not reach this run). A run that starts afterwards reads the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_later_event_means_the_version_it_started_reading() {
    let env = TestEnv::start().await;
    create_project(&env.server, &env.admin, "pipelines").await;
    let event = |run_id: &str, job: &str, event_type: &str, inputs: Value, outputs: Value| {
        json!({
            "eventType": event_type,
            "eventTime": "2026-12-05T04:00:00Z",
            "producer": "https://github.com/example/pipelines",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": run_id},
            "job": {"namespace": "airflow", "name": job},
            "inputs": inputs,
            "outputs": outputs,
        })
    };
    let source = json!([{"namespace": "postgres://warehouse", "name": "public.source"}]);
    let scores = json!([{"namespace": "postgres://warehouse", "name": "public.scores"}]);
    let loads = |run_id: &str| event(run_id, "loader", "COMPLETE", json!([]), source.clone());
    let (reader, newer_reader) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let reader = reader.to_string();

    let (status, _) = post(&env, &env.admin, &loads(&uuid::Uuid::now_v7().to_string())).await;
    assert_eq!(status, 201);
    let (status, started) = post(
        &env,
        &env.admin,
        &event(&reader, "nightly", "START", source.clone(), json!([])),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let read = started["inputs"].clone();
    assert_eq!(read.as_array().map(Vec::len), Some(1), "{started}");
    // Another run writes the table while the first one runs.
    let (status, _) = post(&env, &env.admin, &loads(&uuid::Uuid::now_v7().to_string())).await;
    assert_eq!(status, 201);
    let (status, completed) = post(
        &env,
        &env.admin,
        &event(
            &reader,
            "nightly",
            "COMPLETE",
            source.clone(),
            scores.clone(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{completed}");
    assert_eq!(completed["inputs"], read, "{completed}");
    assert_eq!(completed["runId"], started["runId"]);

    let sql = env.sql().await;
    let consumed = |run_id: String| {
        let sql = &sql;
        async move {
            let rows = sql
                .query(
                    "SELECT v.version FROM lineage_edges e JOIN dataset_versions v ON v.id = e.to_id
                     WHERE e.from_id = $1::text::uuid AND e.relation = 'consumed' ORDER BY 1",
                    &[&run_id],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get(0)).collect::<Vec<i32>>()
        }
    };
    let run = |answer: &Value| answer["runId"].as_str().unwrap().to_owned();
    assert_eq!(consumed(run(&completed)).await, vec![1]);
    let (status, newer) = post(
        &env,
        &env.admin,
        &event(
            &newer_reader.to_string(),
            "nightly",
            "START",
            source,
            json!([]),
        ),
    )
    .await;
    assert_eq!(status, 201, "{newer}");
    assert_eq!(consumed(run(&newer)).await, vec![2]);
    verify_audit(&env).await;
}

/// A run of `nightly` reading `public.source`; its COMPLETE writes `output`.
fn reported(run_id: &str, event_type: &str, output: Option<&str>) -> Value {
    let outputs: Vec<Value> = output
        .map(|name| json!({"namespace": "postgres://warehouse", "name": name}))
        .into_iter()
        .collect();
    json!({
        "eventType": event_type,
        "eventTime": format!("2026-12-05T04:00:0{}Z", event_type.len() % 10),
        "producer": "https://github.com/example/pipelines",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id},
        "job": {"namespace": "airflow", "name": "nightly"},
        "inputs": [{"namespace": "postgres://warehouse", "name": "public.source"}],
        "outputs": outputs,
    })
}

/// A known run's later event with nothing to look up (the COMPLETE of a recorded START, reading
/// what it read and writing a known table it has not written yet) is planned too. What it
/// records must be what one by one records: the run's end, its output's version and edge, the
/// audit entries in their order. A late event of an ended run changes nothing of the run (its
/// first ending stays); a replay changes nothing at all. Then many pipelines' START-then-COMPLETE
/// at once: every run ends once, with one version each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_later_event_recorded_set_wise_records_what_one_by_one_does() {
    let (env, etl) = pipelines().await;
    let planned = || env.server.metric(&env.admin, PLANNED);
    let new_run = || uuid::Uuid::now_v7().to_string();
    // Known from here: the job, the source, the scores.
    let (status, _) = post(
        &env,
        &etl,
        &reported(&new_run(), "COMPLETE", Some("public.scores")),
    )
    .await;
    assert_eq!(status, 201);

    // Run a's COMPLETE writes a new table: one by one. Run b's writes the scores: planned.
    let (a, b) = (new_run(), new_run());
    for run in [&a, &b] {
        let (status, body) = post(&env, &etl, &reported(run, "START", None)).await;
        assert_eq!(status, 201, "{body}");
    }
    let mut shapes = Vec::new();
    for (run, table, planned_now) in [(&a, "public.fresh", 0.0), (&b, "public.scores", 1.0)] {
        let before = verify_audit(&env).await.len();
        let planned_before = planned().await;
        let (status, body) = post(&env, &etl, &reported(run, "COMPLETE", Some(table))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(planned().await - planned_before, planned_now, "{table}");
        let entries = verify_audit(&env).await;
        let custody_run = body["runId"].as_str().unwrap();
        let output = body["outputs"][0].as_str().unwrap();
        let sql = env.sql().await;
        let version = sql
            .query_one(
                "SELECT sha256, version::text, dataset_id::text FROM dataset_versions
                 WHERE id = $1::text::uuid",
                &[&output],
            )
            .await
            .unwrap();
        let row = sql
            .query_one(
                "SELECT status, ended_at IS NOT NULL FROM runs WHERE id = $1::text::uuid",
                &[&custody_run],
            )
            .await
            .unwrap();
        let edges = edges_of(&sql, custody_run).await;
        let event_entries: Vec<Value> = entries[before..]
            .iter()
            .filter(|e| e["action"] != "dataset.create")
            .map(|e| {
                let mut after = e["after"].clone();
                after.as_object_mut().map(|a| a.remove("ended_at"));
                json!([e["action"], e["subjectKind"], e["actor"], after])
            })
            .collect();
        let text = json!({
            "run": [row.get::<_, String>(0), row.get::<_, bool>(1)],
            "edges": edges,
            "entries": event_entries,
        })
        .to_string()
        .replace(custody_run, "RUN")
        .replace(run.as_str(), "OPENLINEAGE-RUN")
        .replace(output, "OUTPUT")
        .replace(&version.get::<_, String>(0), "SHA256")
        .replace(&version.get::<_, String>(2), "DATASET")
        .replace(
            &format!("\"version\":{}", version.get::<_, String>(1)),
            "\"version\":\"N\"",
        )
        .replace(table, "TABLE");
        shapes.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    assert_eq!(
        actions(&shapes[0]),
        [
            "dataset_version.register",
            "run.finish",
            "openlineage.event"
        ]
    );
    assert_eq!(shapes[1]["run"], json!(["finished", true]));
    assert_eq!(shapes[0], shapes[1], "one by one, then planned");

    // A late FAIL of the ended run b: planned, the run keeps its first ending. Its replay: 200.
    let fail = reported(&b, "FAIL", None);
    let planned_before = planned().await;
    let (status, body) = post(&env, &etl, &fail).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(planned().await - planned_before, 1.0);
    let (status, body) = post(&env, &etl, &fail).await;
    assert_eq!((status, &body["applied"]), (200, &json!(false)), "{body}");
    let sql = env.sql().await;
    let status_of_b: String = sql
        .query_one(
            "SELECT r.status FROM runs r JOIN openlineage_runs o ON o.run_id = r.id
             WHERE o.openlineage_run_id = $1::text::uuid",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status_of_b, "finished");

    // Pipelines reporting at once, each run its START then its COMPLETE.
    let planned_before = planned().await;
    let senders: Vec<_> = (0..12)
        .map(|_| {
            let (env, etl) = (env.clone(), etl.clone());
            tokio::spawn(async move {
                let run = uuid::Uuid::now_v7().to_string();
                let (started, start) = post(&env, &etl, &reported(&run, "START", None)).await;
                let complete = reported(&run, "COMPLETE", Some("public.scores"));
                let (completed, end) = post(&env, &etl, &complete).await;
                assert_eq!((started, completed), (201, 201), "{start} {end}");
                assert_eq!(start["runId"], end["runId"]);
                end["runId"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut custody_runs = Vec::new();
    for sender in senders {
        custody_runs.push(sender.await.unwrap());
    }
    assert!(
        planned().await - planned_before >= 12.0,
        "the pipelines' events were planned"
    );
    let entries = verify_audit(&env).await;
    for run in &custody_runs {
        let finished = entries
            .iter()
            .filter(|e| e["action"] == "run.finish" && e["subjectId"] == run.as_str())
            .count();
        assert_eq!(finished, 1, "run {run} ended once");
        let status: String = sql
            .query_one("SELECT status FROM runs WHERE id = $1::text::uuid", &[run])
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "finished");
    }
    // The scores: one version per run that wrote them, numbered in turn.
    assert_eq!(
        version_numbers(&sql, "public.scores").await,
        (1..=14).collect::<Vec<_>>()
    );
}
