//! Search across readable projects: runs, model versions and models, with MLflow's filter
//! syntax, sorted, a page at a time. The domain (`crate::search`) parses and builds the SQL; the
//! resolvers pick the projects, and every hit becomes a node through the caller's access like
//! any other.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Object};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::models::{ModelNode, ModelVersionNode};
use super::runs::RunNode;
use super::{
    actor, gql_error, list_cost, page_size, read, readable, readable_child, GqlResult,
    DEFAULT_PAGE_SIZE,
};
use crate::error::Error;
use crate::search;

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

/// Order keys as the search language writes them (`metrics.auc DESC`).
fn order_keys(keys: impl IntoIterator<Item = (String, bool)>) -> Vec<String> {
    keys.into_iter()
        .map(|(key, descending)| match descending {
            true => format!("{key} DESC"),
            false => key,
        })
        .collect()
}

fn check_projects(projects: &Option<Vec<String>>) -> GqlResult<()> {
    match projects {
        Some(p) if p.len() > search::runs::MAX_PROJECTS => Err(gql_error(Error::invalid(format!(
            "projects names at most {} projects",
            search::runs::MAX_PROJECTS
        )))),
        _ => Ok(()),
    }
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
        let actor = actor(ctx)?;
        check_projects(&projects)?;
        let order = order_keys(
            order_by
                .unwrap_or_default()
                .into_iter()
                .map(|o| (o.key, o.descending)),
        );
        let limit = page_size(first)?;
        let search = search::runs::checked(filter.as_deref(), &order, after.as_deref(), limit)
            .map_err(gql_error)?;
        let hits = read(ctx, |c| {
            async move {
                let project_ids =
                    crate::projects::readable_ids(c, actor, projects.as_deref()).await?;
                search::runs::search(c, &project_ids, &search).await
            }
            .scope_boxed()
        })
        .await?;
        let mut page = Connection::new(after.is_some(), hits.has_next);
        for (run, cursor) in hits.runs {
            page.edges
                .push(Edge::new(cursor, RunNode(readable(ctx, run).await?)));
        }
        Ok(page)
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
        let actor = actor(ctx)?;
        check_projects(&projects)?;
        let order = order_keys(
            order_by
                .unwrap_or_default()
                .into_iter()
                .map(|o| (o.key, o.descending)),
        );
        let limit = page_size(first)?;
        let search =
            search::model_versions::checked(filter.as_deref(), &order, after.as_deref(), limit)
                .map_err(gql_error)?;
        let (hits, has_next) = read(ctx, |c| {
            async move {
                let project_ids =
                    crate::projects::readable_ids(c, actor, projects.as_deref()).await?;
                search::model_versions::search(c, &project_ids, &search).await
            }
            .scope_boxed()
        })
        .await?;
        let mut page = Connection::new(after.is_some(), has_next);
        for (version, cursor) in hits {
            page.edges.push(Edge::new(
                cursor,
                ModelVersionNode(readable_child(ctx, version).await?),
            ));
        }
        Ok(page)
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
        let actor = actor(ctx)?;
        check_projects(&projects)?;
        let order = order_keys(
            order_by
                .unwrap_or_default()
                .into_iter()
                .map(|o| (o.key, o.descending)),
        );
        let limit = page_size(first)?;
        let search = search::models::checked(filter.as_deref(), &order, after.as_deref(), limit)
            .map_err(gql_error)?;
        let (hits, has_next) = read(ctx, |c| {
            async move {
                let project_ids =
                    crate::projects::readable_ids(c, actor, projects.as_deref()).await?;
                search::models::search(c, &project_ids, &search).await
            }
            .scope_boxed()
        })
        .await?;
        let mut page = Connection::new(after.is_some(), has_next);
        for (model, cursor) in hits {
            page.edges
                .push(Edge::new(cursor, ModelNode(readable(ctx, model).await?)));
        }
        Ok(page)
    }
}
