//! Bulk data for plan tests and load benchmarks, written straight into the test's database: the
//! API would take minutes to log 100,000 runs, and these tests measure reading, not writing.
//! The rows are shaped exactly as the server writes them (history and latest values alike).

use tokio_postgres::Client;
use uuid::Uuid;

/// The shape of a seeded project: `runs` runs, each with `metrics` metric keys `m0…` (one point
/// per key, uniform in [0, 1), also its latest value), `params` param keys `p0…` (values `v0` to
/// `v9`) and a tag `team` (`t0` to `t9`). Run names are `run<n>`.
pub struct RunSeed {
    pub runs: i64,
    pub metrics: i64,
    pub params: i64,
}

/// Seeds the runs into the project named `project` (which must exist), created by its first
/// admin, then ANALYZEs so the planner sees the real sizes. Returns the project's id.
pub async fn seed_runs(sql: &Client, project: &str, seed: &RunSeed) -> Uuid {
    let row = sql
        .query_one(
            "SELECT p.id, m.user_id FROM projects p JOIN memberships m ON m.project_id = p.id
             WHERE p.name = $1 ORDER BY m.granted_at LIMIT 1",
            &[&project],
        )
        .await
        .expect("the project to seed exists and has a member");
    let (project_id, user_id): (Uuid, Uuid) = (row.get(0), row.get(1));
    sql.execute(
        "INSERT INTO runs (id, project_id, name, status, tags, created_by, started_at)
         SELECT gen_random_uuid(), $1, 'run' || g, 'running',
                jsonb_build_object('team', 't' || (g % 10)), $2,
                now() - (g || ' seconds')::interval
         FROM generate_series(1, $3::bigint) g",
        &[&project_id, &user_id, &seed.runs],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO run_metrics (run_id, key, value, step, at)
         SELECT r.id, 'm' || k, random(), 0, r.started_at
         FROM runs r, generate_series(0, $2::bigint - 1) k WHERE r.project_id = $1",
        &[&project_id, &seed.metrics],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO run_latest_metrics
             (run_id, key, value, step, at, points, earliest_value, earliest_step, earliest_at)
         SELECT run_id, key, value, step, at, 1, value, step, at FROM run_metrics m
         JOIN runs r ON r.id = m.run_id WHERE r.project_id = $1",
        &[&project_id],
    )
    .await
    .unwrap();
    // Each one-point series is chunk 0 at both chunk levels (`run_metric_chunks`).
    sql.execute(
        "INSERT INTO run_metric_chunks
         SELECT run_id, key, level, 0, 1, value, step, at, value, step, at
         FROM run_metrics m JOIN runs r ON r.id = m.run_id,
              (VALUES (5::int2), (10::int2)) AS levels (level)
         WHERE r.project_id = $1",
        &[&project_id],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO run_params (run_id, key, value)
         SELECT r.id, 'p' || k, 'v' || floor(random() * 10)::int
         FROM runs r, generate_series(0, $2::bigint - 1) k WHERE r.project_id = $1",
        &[&project_id, &seed.params],
    )
    .await
    .unwrap();
    // The keys the runs used, as the statements that log them record them (`run_keys`).
    sql.execute(
        "INSERT INTO run_keys (project_id, key)
         SELECT $1::uuid, 'metrics.m' || k FROM generate_series(0, $2::bigint - 1) k
         UNION ALL SELECT $1::uuid, 'params.p' || k FROM generate_series(0, $3::bigint - 1) k
         UNION ALL SELECT $1::uuid, 'tags.team'
         ON CONFLICT DO NOTHING",
        &[&project_id, &seed.metrics, &seed.params],
    )
    .await
    .unwrap();
    sql.batch_execute("ANALYZE").await.unwrap();
    project_id
}
