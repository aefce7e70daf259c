use async_graphql::{Context, InputObject, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::code::CodeCommitNode;
use super::datasets::DatasetVersionNode;
use super::loaders::{
    CodeCommitById, InputsOfRun, LatestMetricsOfRun, ParamsOfRun, ProjectById, RunById,
};
use super::projects::ProjectNode;
use super::{
    actor, gql_error, list_cost, load, loaders, parse_id, parse_ids, read, readable, readable_only,
    slice, transaction, GqlResult, DEFAULT_METRIC_POINTS, MAX_METRIC_POINTS,
};
use crate::access::Readable;
use crate::error::Error;
use crate::ids::{CodeCommitId, DatasetVersionId, RunId};
use crate::metric_history;
use crate::projects::Role;
use crate::runs::{self, NewMetric, NewRun, Run, RunStatus};

#[derive(InputObject)]
pub struct ParamInput {
    pub key: String,
    pub value: String,
}

#[derive(InputObject)]
pub struct MetricInput {
    pub key: String,
    pub value: f64,
    pub step: Option<i64>,
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(SimpleObject)]
pub struct Param {
    key: String,
    value: String,
}

#[derive(SimpleObject)]
pub struct Metric {
    pub(crate) key: String,
    pub(crate) value: f64,
    pub(crate) step: i64,
    pub(crate) timestamp: DateTime<Utc>,
}

/// Runs side by side (`compareRuns`).
#[derive(SimpleObject)]
pub struct RunComparison {
    /// The compared runs; `values` below are in this order.
    runs: Vec<RunNode>,
    params: Vec<ParamAcross>,
    /// Latest values.
    metrics: Vec<MetricAcross>,
}

/// One param key across the compared runs (null where a run lacks it).
#[derive(SimpleObject)]
pub struct ParamAcross {
    key: String,
    values: Vec<Option<String>>,
    differs: bool,
}

/// One metric key's latest value across the compared runs (null where a run lacks it).
#[derive(SimpleObject)]
pub struct MetricAcross {
    key: String,
    values: Vec<Option<f64>>,
    differs: bool,
}

/// A run the caller may read.
pub struct RunNode(pub Readable<Run>);

#[Object(name = "Run")]
impl RunNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    async fn status(&self) -> RunStatus {
        self.0.status
    }

    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }

    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }

    /// When the run was deleted through MLflow's API (hidden from MLflow's searches; the
    /// record stays and can be restored), if it is.
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.0.deleted_at
    }

    async fn tags(&self) -> Json<serde_json::Value> {
        Json(self.0.tags.clone())
    }

    async fn project(&self, ctx: &Context<'_>) -> GqlResult<ProjectNode> {
        let found = load(ctx, ProjectById(self.0.project_id), "project").await?;
        Ok(ProjectNode(readable(ctx, found).await?))
    }

    async fn code_commit(&self, ctx: &Context<'_>) -> GqlResult<Option<CodeCommitNode>> {
        let Some(id) = self.0.code_commit_id else {
            return Ok(None);
        };
        let found = loaders(ctx)
            .load_one(CodeCommitById(id))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(found.map(CodeCommitNode))
    }

    /// Params, sorted by key.
    async fn params(&self, ctx: &Context<'_>) -> GqlResult<Vec<Param>> {
        let rows = loaders(ctx)
            .load_one(ParamsOfRun(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|p| Param {
                key: p.key,
                value: p.value,
            })
            .collect())
    }

    /// Each metric's latest value (highest step, then time), by key: of the given `keys` only,
    /// or all. What the runs table shows in its metric columns.
    async fn latest_metrics(
        &self,
        ctx: &Context<'_>,
        keys: Option<Vec<String>>,
    ) -> GqlResult<Vec<Metric>> {
        let rows = loaders(ctx)
            .load_one(LatestMetricsOfRun(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .filter(|m| keys.as_ref().is_none_or(|keys| keys.contains(&m.key)))
            .map(|m| Metric {
                key: m.key,
                value: m.value,
                step: m.step,
                timestamp: m.at,
            })
            .collect())
    }

    /// Metric history (all keys, or one), ordered by key, step and time: `first` points
    /// (default 1000, at most 10000) after skipping `offset`.
    #[graphql(complexity = "list_cost(first, DEFAULT_METRIC_POINTS, child_complexity)")]
    async fn metrics(
        &self,
        ctx: &Context<'_>,
        key: Option<String>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> GqlResult<Vec<Metric>> {
        let slice = slice(first, offset, DEFAULT_METRIC_POINTS, MAX_METRIC_POINTS)?;
        let id = self.0.id;
        let rows = read(ctx, |c| {
            async move { runs::metrics_of(c, id, key.as_deref(), slice).await }.scope_boxed()
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(|m| Metric {
                key: m.key,
                value: m.value,
                step: m.step,
                timestamp: m.at,
            })
            .collect())
    }

    /// The run's files, sorted by path.
    async fn artifacts(&self, ctx: &Context<'_>) -> GqlResult<Vec<super::artifacts::Artifact>> {
        let rows = loaders(ctx)
            .load_one(super::loaders::ArtifactsOfRun(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The dataset versions this run consumed that the caller may read (a run may consume
    /// versions of other projects; those of projects the caller cannot read are left out).
    async fn inputs(&self, ctx: &Context<'_>) -> GqlResult<Vec<DatasetVersionNode>> {
        let rows = loaders(ctx)
            .load_one(InputsOfRun(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        let rows = super::datasets::readable_versions(ctx, rows).await?;
        Ok(rows.into_iter().map(DatasetVersionNode).collect())
    }
}

/// One point of a chart series.
#[derive(SimpleObject)]
pub struct MetricPoint {
    step: i64,
    value: f64,
    timestamp: DateTime<Utc>,
}

/// The history of one metric of one run, as a chart needs it.
#[derive(SimpleObject)]
pub struct MetricSeries {
    run_id: ID,
    key: String,
    /// How many points the whole history has.
    total_points: i64,
    /// Whether `points` is a downsampled selection (lowest and highest per bucket, first, last).
    downsampled: bool,
    points: Vec<MetricPoint>,
}

/// A history request costs a quarter of the points it may answer: four of the largest fit in
/// one query, more aliases do not.
fn history_cost(run_ids: &[ID], keys: &[String], max_points: Option<i32>) -> usize {
    let points = max_points
        .unwrap_or(metric_history::DEFAULT_HISTORY_POINTS)
        .max(1) as usize;
    (run_ids.len() * keys.len()).saturating_mul(points) / 4
}

#[derive(Default)]
pub struct RunQuery;

#[Object]
impl RunQuery {
    /// Metric histories for charts: for each readable run and key, at most `maxPoints` points
    /// (default 1,000, 4 to 10,000). A longer history is downsampled so spikes survive: the lowest
    /// and highest point of each bucket, plus the first and last point. Runs the caller cannot
    /// read, and series without points, are left out. At most 50 runs, 50 keys, and
    /// runs × keys × maxPoints ≤ 50,000. The full history stays available, page by page, through
    /// `Run.metrics`.
    #[graphql(complexity = "history_cost(&run_ids, &keys, max_points) + child_complexity")]
    async fn metric_history(
        &self,
        ctx: &Context<'_>,
        run_ids: Vec<ID>,
        keys: Vec<String>,
        max_points: Option<i32>,
    ) -> GqlResult<Vec<MetricSeries>> {
        let request = metric_history::HistoryRequest::new(run_ids.len(), keys, max_points)
            .map_err(gql_error)?;
        let ids = parse_ids::<RunId>(&run_ids)?;
        let found = loaders(ctx)
            .load_many(ids.into_iter().map(RunById))
            .await
            .map_err(|e| (*e).clone())?;
        let readable: Vec<RunId> = readable_only(ctx, found.into_values().collect())
            .await?
            .iter()
            .map(|run| run.id)
            .collect();
        let series = read(ctx, |c| {
            async move { metric_history::metric_history(c, &readable, &request).await }
                .scope_boxed()
        })
        .await?;
        Ok(series
            .into_iter()
            .map(|s| MetricSeries {
                run_id: ID(s.run_id.to_string()),
                key: s.key,
                total_points: s.total_points,
                downsampled: s.downsampled,
                points: s
                    .points
                    .into_iter()
                    .map(|p| MetricPoint {
                        step: p.step,
                        value: p.value,
                        timestamp: p.at,
                    })
                    .collect(),
            })
            .collect())
    }

    /// Runs side by side for a compare view: the readable ones among `ids` (at most 50, in the
    /// order given; others are left out as if they did not exist), every param and latest metric
    /// any of them has, with each run's value and whether they differ. Each run's inputs and code
    /// commit are fields of `runs`.
    #[graphql(complexity = "ids.len().saturating_mul(child_complexity.max(1))")]
    async fn compare_runs(&self, ctx: &Context<'_>, ids: Vec<ID>) -> GqlResult<RunComparison> {
        if ids.len() > runs::MAX_COMPARED_RUNS {
            return Err(gql_error(Error::invalid(format!(
                "compareRuns takes at most {} runs",
                runs::MAX_COMPARED_RUNS
            ))));
        }
        let ids = parse_ids::<RunId>(&ids)?;
        let found = loaders(ctx)
            .load_many(ids.iter().copied().map(RunById))
            .await
            .map_err(|e| (*e).clone())?;
        let ordered: Vec<Run> = ids
            .iter()
            .filter_map(|id| found.get(&RunById(*id)).cloned())
            .collect();
        let readable = readable_only(ctx, ordered).await?;
        let mut seen = std::collections::HashSet::new();
        let readable: Vec<Readable<Run>> =
            readable.into_iter().filter(|r| seen.insert(r.id)).collect();
        let run_ids: Vec<RunId> = readable.iter().map(|r| r.id).collect();
        let lined_up = read(ctx, |c| {
            async move { runs::side_by_side(c, &run_ids).await }.scope_boxed()
        })
        .await?;
        Ok(RunComparison {
            runs: readable.into_iter().map(RunNode).collect(),
            params: lined_up
                .params
                .into_iter()
                .map(|p| ParamAcross {
                    key: p.key,
                    values: p.values,
                    differs: p.differs,
                })
                .collect(),
            metrics: lined_up
                .metrics
                .into_iter()
                .map(|m| MetricAcross {
                    key: m.key,
                    values: m.values,
                    differs: m.differs,
                })
                .collect(),
        })
    }

    async fn run(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Option<RunNode>> {
        let actor = actor(ctx)?;
        let id = parse_id::<RunId>(&id)?;
        let found = read(ctx, |c| {
            async move {
                match runs::get(c, actor, id, Role::Viewer).await {
                    Ok(r) => Ok(Some(r)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .scope_boxed()
        })
        .await?;
        match found {
            Some(run) => Ok(Some(RunNode(readable(ctx, run).await?))),
            None => Ok(None),
        }
    }
}

#[derive(Default)]
pub struct RunMutation;

#[Object]
impl RunMutation {
    /// Starts a run. `inputs` are dataset version ids; `tags` an object of strings.
    async fn start_run(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: Option<String>,
        code_commit_id: Option<ID>,
        inputs: Option<Vec<ID>>,
        tags: Option<Json<serde_json::Value>>,
    ) -> GqlResult<RunNode> {
        let actor = actor(ctx)?;
        let code_commit_id = code_commit_id
            .map(|id| parse_id::<CodeCommitId>(&id))
            .transpose()?;
        let inputs = parse_ids::<DatasetVersionId>(&inputs.unwrap_or_default())?;
        let run = transaction(ctx, |c| {
            async move {
                let new = NewRun {
                    name: name.as_deref(),
                    code_commit_id,
                    inputs,
                    tags: tags.map(|t| t.0),
                };
                runs::start(c, actor, &project, new).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(RunNode(readable(ctx, run).await?))
    }

    /// Sets params; a param never changes once set.
    async fn log_params(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        params: Vec<ParamInput>,
    ) -> GqlResult<RunNode> {
        let actor = actor(ctx)?;
        let run_id = parse_id::<RunId>(&run_id)?;
        let params = params.into_iter().map(|p| (p.key, p.value)).collect();
        let run = transaction(ctx, |c| {
            async move { runs::log_params(c, actor, run_id, params).await }.scope_boxed()
        })
        .await?;
        Ok(RunNode(readable(ctx, run).await?))
    }

    /// Appends up to 1000 metrics in one call; answers how many were stored.
    async fn log_metrics(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        metrics: Vec<MetricInput>,
    ) -> GqlResult<i32> {
        let actor = actor(ctx)?;
        let run_id = parse_id::<RunId>(&run_id)?;
        let metrics = metrics
            .into_iter()
            .map(|m| NewMetric {
                key: m.key,
                value: m.value,
                step: m.step,
                at: m.timestamp,
            })
            .collect();
        let stored = transaction(ctx, |c| {
            async move { runs::log_metrics(c, actor, run_id, metrics).await }.scope_boxed()
        })
        .await?;
        Ok(stored as i32)
    }

    async fn finish_run(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        status: RunStatus,
    ) -> GqlResult<RunNode> {
        let actor = actor(ctx)?;
        let run_id = parse_id::<RunId>(&run_id)?;
        let run = transaction(ctx, |c| {
            async move { runs::finish(c, actor, run_id, status).await }.scope_boxed()
        })
        .await?;
        Ok(RunNode(readable(ctx, run).await?))
    }
}
