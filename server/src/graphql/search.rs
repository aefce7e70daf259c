//! Search across readable projects: runs, model versions and models, with MLflow's filter
//! syntax, sorted, a page at a time. The domain (`crate::search`) parses and builds the SQL and
//! `projects::readable_ids` picks the projects; every hit becomes a node through the caller's
//! access like any other.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Object, OutputType};
use diesel::pg::Pg;
use diesel::QueryableByName;
use diesel_async::scoped_futures::ScopedFutureExt;

use super::models::{ModelNode, ModelVersionNode};
use super::runs::RunNode;
use super::{
    actor, gql_error, list_cost, page_size, read, readable, readable_child, GqlResult,
    DEFAULT_PAGE_SIZE,
};
use crate::projects::{readable_ids, Readable};
use crate::search::sql::{self, Page, Search, Subject};
use crate::search::{model_versions::MODEL_VERSIONS, models::MODELS, runs::RUNS};

/// One key of a run search's order: `metrics.auc`, `params.depth`, `tags.team`,
/// `attributes.start_time` (MLflow's key syntax; a metric sorts by its latest value). Rows
/// without the key come last.
#[derive(InputObject)]
pub struct RunOrder {
    pub key: String,
    #[graphql(default)]
    pub descending: bool,
}

/// One key of a model or model version search's order: `attributes.version_number`,
/// `attributes.creation_timestamp`, `tags.team`, `metrics.auc` (of the version's source run).
#[derive(InputObject)]
pub struct SearchOrder {
    pub key: String,
    #[graphql(default)]
    pub descending: bool,
}

/// The arguments every search takes.
struct Request {
    projects: Option<Vec<String>>,
    filter: Option<String>,
    /// Order keys as the search language writes them (`metrics.auc DESC`).
    order: Vec<String>,
    first: Option<i32>,
    after: Option<String>,
}

impl Request {
    fn new(
        projects: Option<Vec<String>>,
        filter: Option<String>,
        order: impl IntoIterator<Item = (String, bool)>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Self {
        let order = order
            .into_iter()
            .map(|(key, descending)| {
                if descending {
                    format!("{key} DESC")
                } else {
                    key
                }
            })
            .collect();
        Request {
            projects,
            filter,
            order,
            first,
            after,
        }
    }
}

/// Checks the request, then runs it over the caller's readable projects; each hit becomes a
/// node through `node` (which proves the caller may read it).
async fn search<'a, T, N, F, Fut>(
    ctx: &Context<'a>,
    subject: &'static Subject,
    request: Request,
    node: F,
) -> GqlResult<Connection<String, N>>
where
    T: QueryableByName<Pg> + Send + 'static,
    N: OutputType,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = GqlResult<N>>,
{
    let actor = actor(ctx)?;
    let limit = page_size(request.first)?;
    let search = Search::new(
        subject,
        request.filter.as_deref(),
        &request.order,
        request.after.as_deref(),
        limit,
    )
    .map_err(gql_error)?;
    let projects = request.projects;
    let found: Page<T> = read(ctx, |c| {
        async move {
            let readable = match projects.as_deref() {
                Some(named) => Readable::Ids(readable_ids(c, actor, Some(named)).await?),
                None => crate::projects::readable(c, actor).await?,
            };
            sql::page::<T>(c, subject, &readable, &search).await
        }
        .scope_boxed()
    })
    .await?;
    let mut page = Connection::new(request.after.is_some(), found.has_next);
    for (row, cursor) in found.with_cursors() {
        page.edges.push(Edge::new(cursor, node(row).await?));
    }
    Ok(page)
}

#[derive(Default)]
pub struct SearchQuery;

#[Object]
impl SearchQuery {
    /// Runs matching a filter in MLflow's search syntax (`metrics.auc > 0.9 and params.depth =
    /// '6' and tags.team = 'risk' and attributes.status = 'FINISHED'`; a metric means its latest
    /// value), across the named projects or every project the caller may read, in the order
    /// given (then newest first), a page at a time (`first`, default 50, at most 100; `after` a
    /// cursor of the previous page). Attributes: run_id, run_name, status, start_time, end_time.
    #[graphql(complexity = "list_cost(first, DEFAULT_PAGE_SIZE, child_complexity)")]
    async fn search_runs(
        &self,
        ctx: &Context<'_>,
        projects: Option<Vec<String>>,
        filter: Option<String>,
        order_by: Option<Vec<RunOrder>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Connection<String, RunNode>> {
        let order = order_by
            .unwrap_or_default()
            .into_iter()
            .map(|o| (o.key, o.descending));
        let request = Request::new(projects, filter, order, first, after);
        search(ctx, &RUNS, request, |run| async move {
            Ok(RunNode(readable(ctx, run).await?))
        })
        .await
    }

    /// Model versions matching a filter: `name = 'churn'` (the model), `version_number > 3`,
    /// `current_stage = 'production'`, `alias = 'champion'` (free or governed), `run_id`,
    /// `creation_timestamp`, `tags.<key>`, and `metrics.<key>` / `params.<key>` of the run that
    /// produced the version. Newest first unless ordered; paged like `searchRuns`.
    #[graphql(complexity = "list_cost(first, DEFAULT_PAGE_SIZE, child_complexity)")]
    async fn search_model_versions(
        &self,
        ctx: &Context<'_>,
        projects: Option<Vec<String>>,
        filter: Option<String>,
        order_by: Option<Vec<SearchOrder>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Connection<String, ModelVersionNode>> {
        let order = order_by
            .unwrap_or_default()
            .into_iter()
            .map(|o| (o.key, o.descending));
        let request = Request::new(projects, filter, order, first, after);
        search(ctx, &MODEL_VERSIONS, request, |version| async move {
            Ok(ModelVersionNode(readable_child(ctx, version).await?))
        })
        .await
    }

    /// Models matching a filter: `name LIKE 'churn%'`, `creation_timestamp`, `tags.<key>`;
    /// newest first unless ordered; paged like `searchRuns`.
    #[graphql(complexity = "list_cost(first, DEFAULT_PAGE_SIZE, child_complexity)")]
    async fn search_models(
        &self,
        ctx: &Context<'_>,
        projects: Option<Vec<String>>,
        filter: Option<String>,
        order_by: Option<Vec<SearchOrder>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Connection<String, ModelNode>> {
        let order = order_by
            .unwrap_or_default()
            .into_iter()
            .map(|o| (o.key, o.descending));
        let request = Request::new(projects, filter, order, first, after);
        search(ctx, &MODELS, request, |model| async move {
            Ok(ModelNode(readable(ctx, model).await?))
        })
        .await
    }
}
