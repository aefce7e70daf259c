//! Runs: executions with immutable params, high-volume metrics, a status and their inputs.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Float8, Int8, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::{memberships, run_metrics, run_params, runs};
use crate::db::{execute_rows, text_enum, Conn, Prepared, Slice};
use crate::error::{Error, Result};
use crate::events;
use crate::ids::{CodeCommitId, DatasetVersionId, ProjectId, RunId, UserId};
use crate::lineage::{self, NodeRef};
use crate::metric_history;
use crate::projects::{self, Role};
use crate::run_keys::{self, KeyKind};
use crate::validate;

/// Largest `logMetrics` batch; bigger batches are refused whole.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_PER_BATCH: usize = 1000;

text_enum! {
    #[derive(async_graphql::Enum)]
    #[graphql(name = "RunStatus")]
    pub enum RunStatus as "run status" {
        Running = "running",
        Finished = "finished",
        Failed = "failed",
        Killed = "killed",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = runs)]
pub struct Run {
    pub id: RunId,
    pub project_id: ProjectId,
    pub name: Option<String>,
    pub status: RunStatus,
    pub code_commit_id: Option<CodeCommitId>,
    pub tags: Value,
    pub created_by: UserId,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// When MLflow's `delete_run` hid it (the record stays; `restore_run` clears it).
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = run_params)]
pub struct Param {
    pub run_id: RunId,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = run_metrics)]
pub struct Metric {
    pub run_id: RunId,
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub at: DateTime<Utc>,
}

pub struct NewMetric {
    pub key: String,
    pub value: f64,
    pub step: Option<i64>,
    pub at: Option<DateTime<Utc>>,
}

pub struct NewRun<'a> {
    pub name: Option<&'a str>,
    pub code_commit_id: Option<CodeCommitId>,
    pub inputs: Vec<DatasetVersionId>,
    pub tags: Option<Value>,
}

pub async fn start(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    new: NewRun<'_>,
) -> Result<Run> {
    let project = projects::find_authorized(conn, actor, project_name, Role::Contributor).await?;
    validate::optional_text("run name", new.name, 256)?;
    let tags = new.tags.unwrap_or_else(|| json!({}));
    match &tags {
        Value::Object(map) if map.values().all(Value::is_string) && map.len() <= 100 => {}
        _ => {
            return Err(Error::invalid(
                "tags must be an object of at most 100 string values",
            ))
        }
    }
    let commit = new.code_commit_id.map(NodeRef::CodeCommit);
    if let Some(commit) = commit {
        lineage::node_project(conn, commit).await?;
    }
    let mut inputs = new.inputs;
    inputs.sort();
    inputs.dedup();
    lineage::authorize_dataset_versions(conn, actor, &inputs, Role::Viewer).await?;
    // The run, its keys and its edges in one round trip: every id is known before the insert.
    let run_id = RunId::generate();
    let insert = diesel::insert_into(runs::table)
        .values((
            runs::id.eq(run_id),
            runs::project_id.eq(project.id),
            runs::name.eq(new.name),
            runs::status.eq(RunStatus::Running),
            runs::code_commit_id.eq(new.code_commit_id),
            runs::tags.eq(&tags),
            runs::created_by.eq(actor.user_id()?),
        ))
        .returning(Run::as_returning())
        .get_result::<Run>(conn);
    let tag_keys = tags.as_object().into_iter().flat_map(|t| t.keys());
    let keys = run_keys::record(conn, project.id, KeyKind::Tag, tag_keys.map(String::as_str));
    let edges: Vec<(NodeRef, &str)> = commit
        .map(|commit| (commit, "ran"))
        .into_iter()
        .chain(
            inputs
                .iter()
                .map(|i| (NodeRef::DatasetVersion(*i), "consumed")),
        )
        .collect();
    let edges = lineage::record_new_node_edges(conn, NodeRef::Run(run_id), &edges);
    let (run, (), ()) =
        futures_util::future::try_join3(async { Ok::<_, Error>(insert.await?) }, keys, edges)
            .await?;
    audit::record(
        conn,
        actor,
        started(
            run.id,
            project.id,
            run.name.as_deref(),
            run.code_commit_id,
            &inputs,
            &run.tags,
        ),
    )
    .await?;
    crate::openlineage::emit::run_started(conn, &run, &inputs).await?;
    Ok(run)
}

/// The audit entry of a run's start.
fn started(
    id: RunId,
    project_id: ProjectId,
    name: Option<&str>,
    code_commit_id: Option<CodeCommitId>,
    inputs: &[DatasetVersionId],
    tags: &Value,
) -> Change<'static> {
    Change {
        action: "run.start",
        project_id: Some(project_id),
        subject_kind: "run",
        subject_id: id.to_string(),
        before: None,
        after: Some(json!({
            "name": name,
            "code_commit_id": code_commit_id,
            "inputs": inputs,
            "tags": tags,
        })),
    }
}

/// The audit entry of a run's end.
fn ended(
    id: RunId,
    project_id: ProjectId,
    status: RunStatus,
    ended_at: Option<DateTime<Utc>>,
) -> Change<'static> {
    Change {
        action: "run.finish",
        project_id: Some(project_id),
        subject_kind: "run",
        subject_id: id.to_string(),
        before: Some(json!({"status": RunStatus::Running})),
        after: Some(json!({"status": status, "ended_at": ended_at})),
    }
}

/// A run a pipeline reported (OpenLineage), recorded with others by [`record_reported`]: what
/// [`start`] (and, for a run reported as already ended, [`finish`]) would record, checked by the
/// caller instead (its project and inputs authorized; no code commit).
#[derive(Clone)]
pub struct Reported {
    pub id: RunId,
    pub project_id: ProjectId,
    pub name: String,
    /// Tags as [`start`] takes them: at most 100 string values.
    pub tags: Value,
    /// Sorted, without repeats.
    pub inputs: Vec<DatasetVersionId>,
    pub created_by: UserId,
    /// How and when the run ended, when the report that started it also ended it.
    pub ended: Option<(RunStatus, DateTime<Utc>)>,
}

impl Reported {
    /// The audit entries [`start`] and [`finish`] would have recorded, in that order.
    pub fn changes(&self) -> Vec<Change<'static>> {
        let start = started(
            self.id,
            self.project_id,
            Some(&self.name),
            None,
            &self.inputs,
            &self.tags,
        );
        let end = self
            .ended
            .map(|(status, at)| ended(self.id, self.project_id, status, Some(at)));
        std::iter::once(start).chain(end).collect()
    }
}

/// Records reported runs, their tag keys and their `consumed` edges: one statement each (and one
/// per project for the keys). Authorization and the audit entries ([`Reported::changes`]) are
/// the caller's. The future borrows nothing of the connection (see `run_keys::record`).
pub fn record_reported(
    conn: &mut Conn,
    reported: &[Reported],
) -> futures_util::future::BoxFuture<'static, Result<()>> {
    let rows: Vec<_> = reported
        .iter()
        .map(|r| {
            let status = r.ended.map_or(RunStatus::Running, |(status, _)| status);
            (
                runs::id.eq(r.id),
                runs::project_id.eq(r.project_id),
                runs::name.eq(r.name.clone()),
                runs::status.eq(status),
                runs::tags.eq(r.tags.clone()),
                runs::created_by.eq(r.created_by),
                runs::ended_at.eq(r.ended.map(|(_, at)| at)),
            )
        })
        .collect();
    let count = rows.len();
    let insert = (count > 0)
        .then(|| execute_rows(conn, diesel::insert_into(runs::table).values(rows), count));
    let mut keys: BTreeMap<ProjectId, Vec<&str>> = BTreeMap::new();
    for r in reported {
        let project = keys.entry(r.project_id).or_default();
        project.extend(
            r.tags
                .as_object()
                .into_iter()
                .flat_map(|t| t.keys())
                .map(String::as_str),
        );
        project.sort_unstable();
        project.dedup();
    }
    let keys: Vec<_> = keys
        .into_iter()
        .map(|(project, keys)| run_keys::record(conn, project, KeyKind::Tag, keys))
        .collect();
    let consumed: Vec<(NodeRef, NodeRef, &'static str)> = reported
        .iter()
        .flat_map(|r| {
            r.inputs
                .iter()
                .map(|i| (NodeRef::Run(r.id), NodeRef::DatasetVersion(*i), "consumed"))
        })
        .collect();
    let edges = lineage::record_new_edges(conn, &consumed);
    let insert = async {
        if let Some(insert) = insert {
            insert.await?;
        }
        Ok(())
    };
    // Polled together, in this order: one round trip.
    Box::pin(async move {
        futures_util::future::try_join3(insert, futures_util::future::try_join_all(keys), edges)
            .await?;
        Ok(())
    })
}

/// A reported run's end (OpenLineage), recorded with others by [`record_endings`]: what
/// [`finish`] would record, authorized by the caller.
#[derive(Clone)]
pub struct Ending {
    pub id: RunId,
    pub project_id: ProjectId,
    pub status: RunStatus,
    pub at: DateTime<Utc>,
}

impl Ending {
    /// The audit entry [`finish`] would have recorded.
    pub fn change(&self) -> Change<'static> {
        ended(self.id, self.project_id, self.status, Some(self.at))
    }
}

/// Ends the runs still running among `endings`, in one statement; answers the ones it ended (a
/// run that has ended keeps its first ending). The audit entries ([`Ending::change`]) are the
/// caller's. The future borrows nothing of the connection.
pub fn record_endings(
    conn: &mut Conn,
    endings: &[Ending],
) -> futures_util::future::BoxFuture<'static, Result<Vec<RunId>>> {
    if endings.is_empty() {
        return Box::pin(std::future::ready(Ok(Vec::new())));
    }
    #[derive(QueryableByName)]
    struct Ended {
        #[diesel(sql_type = SqlUuid)]
        id: RunId,
    }
    let ended = Prepared(
        diesel::sql_query(
            "UPDATE runs SET status = w.status, ended_at = w.at
             FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS w(id, status, at)
             WHERE runs.id = w.id AND runs.status = 'running'
             RETURNING runs.id",
        )
        .bind::<Array<SqlUuid>, _>(endings.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            endings
                .iter()
                .map(|e| e.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(endings.iter().map(|e| e.at).collect::<Vec<_>>()),
    )
    .load::<Ended>(conn);
    Box::pin(async move { Ok(ended.await?.into_iter().map(|e| e.id).collect()) })
}

/// A run the caller may read (or write, with `needed` ≥ contributor).
pub async fn get(conn: &mut Conn, actor: &Actor, run_id: RunId, needed: Role) -> Result<Run> {
    let run = runs::table
        .find(run_id)
        .select(Run::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no run with id {run_id}")))?;
    projects::authorize(conn, actor, run.project_id, needed)
        .await
        .map_err(projects::hiding(|| {
            Error::not_found(format!("no run with id {run_id}"))
        }))?;
    Ok(run)
}

/// Locks the run row the caller may write: `FOR UPDATE` for status changes, `FOR SHARE` for
/// appends that must not race a finish. Two statements, on every append: the run's project with
/// the caller's membership there (unlocked, so an outsider never holds a lock on a run), then
/// the run under its lock (its status as of the lock, whatever changed since the first read).
async fn lock(conn: &mut Conn, actor: &Actor, run_id: RunId, exclusive: bool) -> Result<Run> {
    let found: Option<(ProjectId, Option<Role>)> = runs::table
        .left_join(
            memberships::table.on(memberships::project_id
                .eq(runs::project_id)
                .and(memberships::user_id.nullable().eq(actor.user_id))),
        )
        .filter(runs::id.eq(run_id))
        .select((runs::project_id, memberships::role.nullable()))
        .first(conn)
        .await
        .optional()?;
    let missing = || Error::not_found(format!("no run with id {run_id}"));
    let (project_id, membership) = found.ok_or_else(missing)?;
    projects::require(
        projects::role_given(actor, project_id, membership),
        Role::Contributor,
    )
    .map_err(projects::hiding(missing))?;
    let run = runs::table.find(run_id).select(Run::as_select());
    Ok(if exclusive {
        run.for_update().first(conn).await?
    } else {
        run.for_share().first(conn).await?
    })
}

/// Sets params. A param is immutable: setting the same value again is a no-op, a different value
/// is a conflict and the whole batch is refused.
pub async fn log_params(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    params: Vec<(String, String)>,
) -> Result<Run> {
    if params.len() > MAX_PARAMS_PER_BATCH {
        return Err(Error::invalid(format!(
            "at most {MAX_PARAMS_PER_BATCH} params per call"
        )));
    }
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in params {
        validate::text("param key", &key, 250)?;
        if key.is_empty() {
            return Err(Error::invalid("param keys must not be empty"));
        }
        validate::text("param value", &value, 8000)?;
        if let Some(previous) = wanted.insert(key.clone(), value.clone()) {
            if previous != value {
                return Err(Error::invalid(format!(
                    "param `{key}` is given twice with different values"
                )));
            }
        }
    }
    let run = lock(conn, actor, run_id, true).await?;
    if run.status != RunStatus::Running {
        return Err(Error::conflict(format!(
            "run {run_id} is {} and takes no more params",
            run.status
        )));
    }
    let keys: Vec<&String> = wanted.keys().collect();
    let existing: Vec<Param> = run_params::table
        .filter(run_params::run_id.eq(run_id))
        .filter(run_params::key.eq_any(keys))
        .select(Param::as_select())
        .load(conn)
        .await?;
    for param in &existing {
        if wanted[&param.key] != param.value {
            return Err(Error::conflict(format!(
                "param `{}` is already `{}`; params are immutable",
                param.key, param.value
            )));
        }
        wanted.remove(&param.key);
    }
    if wanted.is_empty() {
        return Ok(run);
    }
    let rows: Vec<_> = wanted
        .iter()
        .map(|(k, v)| {
            (
                run_params::run_id.eq(run_id),
                run_params::key.eq(k),
                run_params::value.eq(v),
            )
        })
        .collect();
    execute_rows(
        conn,
        diesel::insert_into(run_params::table).values(&rows),
        rows.len(),
    )
    .await?;
    run_keys::record(
        conn,
        run.project_id,
        KeyKind::Param,
        wanted.keys().map(String::as_str),
    )
    .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "run.log_params",
            project_id: Some(run.project_id),
            subject_kind: "run",
            subject_id: run.id.to_string(),
            before: None,
            after: Some(json!({"params": wanted})),
        },
    )
    .await?;
    Ok(run)
}

/// A series' point count after a batch.
#[derive(QueryableByName)]
struct SeriesCount {
    #[diesel(sql_type = SqlUuid)]
    run_id: RunId,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Int8)]
    points: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    new_key: bool,
}

/// Refuses a metric no run takes: an empty or over-long key, a non-finite value.
fn check_metric(metric: &NewMetric) -> Result<()> {
    if metric.key.is_empty() {
        return Err(Error::invalid("metric keys must not be empty"));
    }
    validate::text("metric key", &metric.key, 250)?;
    if !metric.value.is_finite() {
        return Err(Error::invalid(format!(
            "metric `{}` has a non-finite value",
            metric.key
        )));
    }
    Ok(())
}

/// Appends a batch of metrics. Metrics are observations, not governance acts:
/// no audit entry, so logging never queues on the audit chain. Values must be finite.
pub async fn log_metrics(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    metrics: Vec<NewMetric>,
) -> Result<usize> {
    if metrics.len() > MAX_METRICS_PER_BATCH {
        return Err(Error::invalid(format!(
            "a batch holds at most {MAX_METRICS_PER_BATCH} metrics; got {}",
            metrics.len()
        )));
    }
    metrics.iter().try_for_each(check_metric)?;
    let run = lock(conn, actor, run_id, false).await?;
    if run.status != RunStatus::Running {
        return Err(not_running(&run));
    }
    if metrics.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let mut points = metric_history::Points::with_capacity(metrics.len());
    for metric in metrics {
        let at = metric.at.unwrap_or(now);
        points.push(
            run_id,
            metric.key,
            metric.value,
            metric.step.unwrap_or(0),
            at,
        );
    }
    let logged = points.len();
    append_points(conn, &points, &HashMap::from([(run_id, run.project_id)])).await?;
    Ok(logged)
}

fn not_running(run: &Run) -> Error {
    Error::conflict(format!(
        "run {} is {} and takes no more metrics",
        run.id, run.status
    ))
}

/// One metric one caller logs to one run: what concurrent single-metric requests are gathered
/// into (`metric_queue`).
pub struct MetricCall {
    pub actor: Actor,
    pub run_id: RunId,
    pub metric: NewMetric,
}

/// Logs many callers' metrics in one go: each call is checked and authorized on its own (a
/// finite value under a valid key, a caller who may write the run, a running run) and answered
/// on its own; the accepted ones are written together, in the statements one batch takes. A
/// refused call writes nothing. The outer error (the database failed) means none was written.
pub async fn log_metric_calls(conn: &mut Conn, calls: &[MetricCall]) -> Result<Vec<Result<()>>> {
    let mut run_ids: Vec<RunId> = calls.iter().map(|c| c.run_id).collect();
    run_ids.sort();
    run_ids.dedup();
    let mut user_ids: Vec<UserId> = calls.iter().filter_map(|c| c.actor.user_id).collect();
    user_ids.sort();
    user_ids.dedup();
    // Authorize first, from an unlocked read: no caller locks a run it may not write. The runs'
    // projects and the callers' memberships there in one statement.
    let found: Vec<(RunId, ProjectId, Option<UserId>, Option<Role>)> = runs::table
        .left_join(
            memberships::table.on(memberships::project_id
                .eq(runs::project_id)
                .and(memberships::user_id.eq_any(&user_ids))),
        )
        .filter(runs::id.eq_any(&run_ids))
        .select((
            runs::id,
            runs::project_id,
            memberships::user_id.nullable(),
            memberships::role.nullable(),
        ))
        .load(conn)
        .await?;
    let mut projects_of: HashMap<RunId, ProjectId> = HashMap::new();
    let mut roles: HashMap<(ProjectId, UserId), Role> = HashMap::new();
    for (run, project, user, role) in found {
        projects_of.insert(run, project);
        if let (Some(user), Some(role)) = (user, role) {
            roles.insert((project, user), role);
        }
    }
    let mut outcomes: Vec<Result<()>> = calls
        .iter()
        .map(|call| {
            call.actor.require_writer()?;
            check_metric(&call.metric)?;
            let missing = || Error::not_found(format!("no run with id {}", call.run_id));
            let project = *projects_of.get(&call.run_id).ok_or_else(missing)?;
            let membership = call
                .actor
                .user_id
                .and_then(|user| roles.get(&(project, user)).copied());
            projects::require(
                projects::role_given(&call.actor, project, membership),
                Role::Contributor,
            )
            .map_err(projects::hiding(missing))
        })
        .collect();
    // Then the runs some call may write, under a share lock (a finish waits for these points).
    let mut writable: Vec<RunId> = calls
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(call, _)| call.run_id)
        .collect();
    writable.sort();
    writable.dedup();
    let locked: HashMap<RunId, Run> = runs::table
        .filter(runs::id.eq_any(&writable))
        .order(runs::id)
        .select(Run::as_select())
        .for_share()
        .load::<Run>(conn)
        .await?
        .into_iter()
        .map(|run| (run.id, run))
        .collect();
    let now = Utc::now();
    let mut points = metric_history::Points::with_capacity(calls.len());
    for (call, outcome) in calls.iter().zip(outcomes.iter_mut()) {
        if outcome.is_err() {
            continue;
        }
        match locked.get(&call.run_id) {
            Some(run) if run.status == RunStatus::Running => {
                let m = &call.metric;
                let at = m.at.unwrap_or(now);
                points.push(run.id, m.key.clone(), m.value, m.step.unwrap_or(0), at);
            }
            Some(run) => *outcome = Err(not_running(run)),
            None => *outcome = Err(Error::not_found(format!("no run with id {}", call.run_id))),
        }
    }
    if !points.is_empty() {
        append_points(conn, &points, &projects_of).await?;
    }
    Ok(outcomes)
}

/// Writes points to runs already authorized and share-locked. Two prepared statements whatever
/// the batch size and however many runs it spans. The first appends the points to the history
/// (the arrays unnested server-side), upserts each series' (run and key) latest value (highest
/// step, then time, then value; an older point logged late leaves it as it is), first point and
/// point count into `run_latest_metrics`, which searches filter and sort on, and announces the
/// points to each run's watchers. It answers each series' new count, which numbers the batch's
/// points for the chunk summaries charts read (`metric_history::record_chunks`). A concurrent
/// batch of the same series waits on that row until this transaction commits, so numbers never
/// collide; series are upserted in one order, so two batches never deadlock.
async fn append_points(
    conn: &mut Conn,
    points: &metric_history::Points,
    projects_of: &HashMap<RunId, ProjectId>,
) -> Result<()> {
    // Subscribers of a run hear of its points when they commit (`events`); the payloads are
    // built here and sent only for runs some replica watches.
    let mut by_run: BTreeMap<RunId, Vec<usize>> = BTreeMap::new();
    for (i, run) in points.runs.iter().enumerate() {
        by_run.entry(*run).or_default().push(i);
    }
    let (mut topics, mut announcements) = (Vec::new(), Vec::new());
    for (run, at) in &by_run {
        let keys: Vec<String> = at.iter().map(|i| points.keys[*i].clone()).collect();
        let values: Vec<f64> = at.iter().map(|i| points.values[*i]).collect();
        let steps: Vec<i64> = at.iter().map(|i| points.steps[*i]).collect();
        let ats: Vec<DateTime<Utc>> = at.iter().map(|i| points.ats[*i]).collect();
        let (topic, announcement) = events::metrics_payload(*run, &keys, &values, &steps, &ats);
        topics.push(topic);
        announcements.push(announcement);
    }
    let series = metric_history::BatchSeries::of(points);
    let counts: Vec<SeriesCount> = Prepared(
        diesel::sql_query(
            "WITH history AS (
             INSERT INTO run_metrics (run_id, key, value, step, at)
             SELECT unnest($1::uuid[]), unnest($2::text[]), unnest($3::float8[]),
                 unnest($4::int8[]), unnest($5::timestamptz[])
         ), latest AS (
             INSERT INTO run_latest_metrics AS latest
                 (run_id, key, points, value, step, at, earliest_value, earliest_step, earliest_at)
             SELECT * FROM unnest($6::uuid[], $7::text[], $8::int8[], $9::float8[], $10::int8[],
                 $11::timestamptz[], $12::float8[], $13::int8[], $14::timestamptz[])
             ON CONFLICT (run_id, key) DO UPDATE
             SET points = latest.points + EXCLUDED.points,
                 value = CASE WHEN (EXCLUDED.step, EXCLUDED.at, EXCLUDED.value)
                     > (latest.step, latest.at, latest.value)
                     THEN EXCLUDED.value ELSE latest.value END,
                 at = CASE WHEN (EXCLUDED.step, EXCLUDED.at, EXCLUDED.value)
                     > (latest.step, latest.at, latest.value)
                     THEN EXCLUDED.at ELSE latest.at END,
                 step = GREATEST(EXCLUDED.step, latest.step),
                 earliest_value = CASE
                     WHEN (EXCLUDED.earliest_step, EXCLUDED.earliest_at, EXCLUDED.earliest_value)
                     < (latest.earliest_step, latest.earliest_at, latest.earliest_value)
                     THEN EXCLUDED.earliest_value ELSE latest.earliest_value END,
                 earliest_at = CASE
                     WHEN (EXCLUDED.earliest_step, EXCLUDED.earliest_at, EXCLUDED.earliest_value)
                     < (latest.earliest_step, latest.earliest_at, latest.earliest_value)
                     THEN EXCLUDED.earliest_at ELSE latest.earliest_at END,
                 earliest_step = LEAST(EXCLUDED.earliest_step, latest.earliest_step)
             -- A row just inserted (xmax 0) is the run's first point of that key.
             RETURNING run_id, key, points, xmax = 0 AS new_key
         ), announced AS (
             SELECT pg_notify('custody_events', a.payload)
             FROM unnest($15::text[], $16::text[]) AS a (topic, payload)
             WHERE EXISTS (SELECT 1 FROM event_watches w
                           WHERE w.topic = a.topic AND w.expires_at > now())
         )
         -- The batch is never empty, so `latest` answers rows and the announcements run.
         SELECT run_id, key, points, new_key, (SELECT count(*) FROM announced) AS announced
         FROM latest",
        )
        .bind::<Array<SqlUuid>, _>(&points.runs)
        .bind::<Array<Text>, _>(&points.keys)
        .bind::<Array<Float8>, _>(&points.values)
        .bind::<Array<Int8>, _>(&points.steps)
        .bind::<Array<Timestamptz>, _>(&points.ats)
        .bind::<Array<SqlUuid>, _>(&series.runs)
        .bind::<Array<Text>, _>(&series.keys)
        .bind::<Array<Int8>, _>(&series.points)
        .bind::<Array<Float8>, _>(&series.latest_values)
        .bind::<Array<Int8>, _>(&series.latest_steps)
        .bind::<Array<Timestamptz>, _>(&series.latest_ats)
        .bind::<Array<Float8>, _>(&series.earliest_values)
        .bind::<Array<Int8>, _>(&series.earliest_steps)
        .bind::<Array<Timestamptz>, _>(&series.earliest_ats)
        .bind::<Array<Text>, _>(&topics)
        .bind::<Array<Text>, _>(&announcements),
    )
    .load(conn)
    .await?;
    // Keys new to a run may be new to its project: the steady state (known keys) skips this.
    let mut new_keys: BTreeMap<ProjectId, Vec<&str>> = BTreeMap::new();
    for count in counts.iter().filter(|c| c.new_key) {
        if let Some(project) = projects_of.get(&count.run_id) {
            new_keys.entry(*project).or_default().push(&count.key);
        }
    }
    for (project, keys) in new_keys {
        run_keys::record(conn, project, KeyKind::Metric, keys).await?;
    }
    let counts: HashMap<(RunId, String), i64> = counts
        .into_iter()
        .map(|c| ((c.run_id, c.key), c.points))
        .collect();
    metric_history::record_chunks(conn, points, &counts).await?;
    Ok(())
}

pub async fn finish(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    status: RunStatus,
) -> Result<Run> {
    if status == RunStatus::Running {
        return Err(Error::invalid(
            "a run finishes as FINISHED, FAILED or KILLED",
        ));
    }
    let run = lock(conn, actor, run_id, true).await?;
    if run.status != RunStatus::Running {
        return Err(Error::conflict(format!(
            "run {run_id} has already ended as {}",
            run.status
        )));
    }
    let finished: Run = diesel::update(runs::table.find(run_id))
        .set((runs::status.eq(status), runs::ended_at.eq(Utc::now())))
        .returning(Run::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        ended(run.id, run.project_id, finished.status, finished.ended_at),
    )
    .await?;
    crate::openlineage::emit::run_ended(conn, &finished).await?;
    Ok(finished)
}

/// Renames a run (CONTRIBUTOR); the name is a label, so an ended run may be renamed too.
pub async fn rename(conn: &mut Conn, actor: &Actor, run_id: RunId, name: &str) -> Result<Run> {
    validate::text("run name", name, 256)?;
    let run = lock(conn, actor, run_id, true).await?;
    if run.name.as_deref() == Some(name) {
        return Ok(run);
    }
    let renamed: Run = diesel::update(runs::table.find(run_id))
        .set(runs::name.eq(name))
        .returning(Run::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "run.rename",
            project_id: Some(run.project_id),
            subject_kind: "run",
            subject_id: run.id.to_string(),
            before: Some(json!({"name": run.name})),
            after: Some(json!({"name": renamed.name})),
        },
    )
    .await?;
    Ok(renamed)
}

/// Hides a run from MLflow's searches (`deleted`) or brings it back; CONTRIBUTOR. The run and
/// everything it logged stay: a governance record is never erased, and a model version
/// registered from a run keeps its lineage whatever happens to the run's visibility.
pub async fn set_deleted(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    deleted: bool,
) -> Result<Run> {
    let run = lock(conn, actor, run_id, true).await?;
    if run.deleted_at.is_some() == deleted {
        return Ok(run);
    }
    let changed: Run = diesel::update(runs::table.find(run_id))
        .set(runs::deleted_at.eq(deleted.then(Utc::now)))
        .returning(Run::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: if deleted { "run.delete" } else { "run.restore" },
            project_id: Some(run.project_id),
            subject_kind: "run",
            subject_id: run.id.to_string(),
            before: Some(json!({"deleted_at": run.deleted_at})),
            after: Some(json!({"deleted_at": changed.deleted_at})),
        },
    )
    .await?;
    Ok(changed)
}

pub async fn by_ids(conn: &mut Conn, ids: &[RunId]) -> Result<Vec<Run>> {
    // One primary-key probe per id, however many: with thousands of ids (an impact report) the
    // planner costs probes above a scan of the whole table, for `id = ANY($1)` and for a plain
    // join to `unnest` alike (a hash join over 200,000 runs: 63 ms where the probes take 29).
    // A lateral subquery kept from flattening (`OFFSET 0`) can only be probed.
    Ok(Prepared(
        diesel::sql_query(
            "SELECT r.* FROM unnest($1::uuid[]) AS wanted(id) \
             CROSS JOIN LATERAL (SELECT * FROM runs WHERE runs.id = wanted.id OFFSET 0) r",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids),
    )
    .load(conn)
    .await?)
}

/// The runs of a project, newest first, after the cursor `before_id` (ids are time-ordered).
pub async fn list_in_project(
    conn: &mut Conn,
    project_id: ProjectId,
    before_id: Option<RunId>,
    limit: i64,
) -> Result<Vec<Run>> {
    let mut query = runs::table
        .filter(runs::project_id.eq(project_id))
        .order(runs::id.desc())
        .limit(limit + 1)
        .select(Run::as_select())
        .into_boxed();
    if let Some(before) = before_id {
        query = query.filter(runs::id.lt(before));
    }
    Ok(query.load(conn).await?)
}

/// The runs `user_id` started, newest first, in the projects the caller may read (at most
/// `limit`); only the user themself asks (FORBIDDEN for anyone else: what a colleague works on
/// is theirs to show). Read on `(created_by, id)`.
pub async fn started_by(
    conn: &mut Conn,
    actor: &Actor,
    user_id: UserId,
    limit: i64,
) -> Result<Vec<Run>> {
    if actor.user_id != Some(user_id) {
        return Err(Error::forbidden(
            "only the person themself sees the runs they started",
        ));
    }
    let readable = projects::readable_ids(conn, actor, None).await?;
    Ok(runs::table
        .filter(runs::created_by.eq(user_id))
        .filter(runs::project_id.eq_any(readable))
        .order(runs::id.desc())
        .limit(limit)
        .select(Run::as_select())
        .load(conn)
        .await?)
}

pub async fn params_of(conn: &mut Conn, run_ids: &[RunId]) -> Result<Vec<Param>> {
    Ok(run_params::table
        .filter(run_params::run_id.eq_any(run_ids))
        .order((run_params::run_id, run_params::key))
        .select(Param::as_select())
        .load(conn)
        .await?)
}

/// A run's metric history, optionally for one key, ordered by key, step and time.
pub async fn metrics_of(
    conn: &mut Conn,
    run_id: RunId,
    key: Option<&str>,
    slice: Slice,
) -> Result<Vec<Metric>> {
    let mut query = run_metrics::table
        .filter(run_metrics::run_id.eq(run_id))
        .order((run_metrics::key, run_metrics::step, run_metrics::at))
        .limit(slice.limit)
        .offset(slice.offset)
        .select(Metric::as_select())
        .into_boxed();
    if let Some(key) = key {
        query = query.filter(run_metrics::key.eq(key.to_owned()));
    }
    Ok(query.load(conn).await?)
}

/// Where a read of a whole history stopped: the last point given (the history's order).
pub type HistoryCursor = (String, i64, DateTime<Utc>);

/// The next `limit` points of a run's history (all keys, or one) after `after`, ordered by key,
/// step and time: a keyset read along the history's primary key, so reading a million points
/// page by page costs the same per page (an offset would re-read everything before it).
pub async fn metrics_after(
    conn: &mut Conn,
    run_id: RunId,
    key: Option<&str>,
    after: Option<&HistoryCursor>,
    limit: i64,
) -> Result<Vec<Metric>> {
    let mut query = run_metrics::table
        .filter(run_metrics::run_id.eq(run_id))
        .order((run_metrics::key, run_metrics::step, run_metrics::at))
        .limit(limit)
        .select(Metric::as_select())
        .into_boxed();
    if let Some(key) = key {
        query = query.filter(run_metrics::key.eq(key.to_owned()));
    }
    if let Some((key, step, at)) = after {
        query = query.filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("(key, step, at) > (")
                .bind::<Text, _>(key.clone())
                .sql(", ")
                .bind::<Int8, _>(*step)
                .sql(", ")
                .bind::<Timestamptz, _>(*at)
                .sql(")"),
        );
    }
    Ok(query.load(conn).await?)
}

/// The last logged value of each metric of these runs (highest step, then latest time): one row
/// per run and key however many points were logged, kept on write in `run_latest_metrics`.
/// Policies, compliance reports and run pages read it.
pub async fn last_metrics(conn: &mut Conn, run_ids: &[RunId]) -> Result<Vec<Metric>> {
    use crate::db::schema::run_latest_metrics as latest;
    let rows: Vec<(RunId, String, f64, i64, DateTime<Utc>)> = latest::table
        .filter(latest::run_id.eq_any(run_ids))
        .order((latest::run_id, latest::key))
        .select((
            latest::run_id,
            latest::key,
            latest::value,
            latest::step,
            latest::at,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, key, value, step, at)| Metric {
            run_id,
            key,
            value,
            step,
            at,
        })
        .collect())
}

/// The most runs one comparison takes.
pub const MAX_COMPARED_RUNS: usize = 50;

/// One key across compared runs: its value in each run (in the order the runs were given;
/// `None` where a run lacks it) and whether the values differ.
pub struct KeyAcross<T> {
    pub key: String,
    pub values: Vec<Option<T>>,
    pub differs: bool,
}

/// Params and latest metrics of runs side by side, every key any of them has, by key.
pub struct SideBySide {
    pub params: Vec<KeyAcross<String>>,
    pub metrics: Vec<KeyAcross<f64>>,
}

/// Lines up the params and latest metric values of `run_ids` (already authorized) by key.
pub async fn side_by_side(conn: &mut Conn, run_ids: &[RunId]) -> Result<SideBySide> {
    let column = |id: &RunId| run_ids.iter().position(|r| r == id);
    let mut params: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for param in params_of(conn, run_ids).await? {
        if let Some(i) = column(&param.run_id) {
            params
                .entry(param.key)
                .or_insert_with(|| vec![None; run_ids.len()])[i] = Some(param.value);
        }
    }
    let mut metrics: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for metric in last_metrics(conn, run_ids).await? {
        if let Some(i) = column(&metric.run_id) {
            metrics
                .entry(metric.key)
                .or_insert_with(|| vec![None; run_ids.len()])[i] = Some(metric.value);
        }
    }
    fn across<T: PartialEq>(rows: BTreeMap<String, Vec<Option<T>>>) -> Vec<KeyAcross<T>> {
        rows.into_iter()
            .map(|(key, values)| KeyAcross {
                differs: values.windows(2).any(|w| w[0] != w[1]),
                key,
                values,
            })
            .collect()
    }
    Ok(SideBySide {
        params: across(params),
        metrics: across(metrics),
    })
}
