//! The GraphQL edge: one file per domain, merged into one schema. Resolvers parse, authorize
//! through the domain services, and map errors; the rules live in the domain modules.

pub(crate) mod access_tokens;
mod artifacts;
mod audit;
mod auth;
mod code;
mod datasets;
mod invitations;
mod labels;
mod lineage;
mod loaders;
mod models;
mod projects;
mod promotions;
mod readonly;
mod runs;
mod scalars;
mod search;
mod subscriptions;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ErrorExtensions, MergedObject, Schema, ID};
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::scoped_futures::ScopedBoxFuture;
use diesel_async::AsyncPgConnection;

use crate::access::{Access, BelongsTo, InProject, Readable};
use crate::actor::Actor;
use crate::db::{Conn, DbPool, Slice, VersionRange};
use crate::error::Error;
use crate::ids::TypedId;
use crate::state::AppState;

pub use loaders::DbLoader;
pub use subscriptions::SubscriptionSlots;

/// The most a query may cost: every field costs 1 and a list field its page size times the cost
/// of one element, so one page of 10,000 metric points fits, and aliases cannot multiply it.
pub const MAX_COMPLEXITY: usize = 50_000;

/// Largest page a connection field returns.
pub const MAX_PAGE_SIZE: i32 = 100;
pub(crate) const DEFAULT_PAGE_SIZE: i32 = 50;

#[derive(MergedObject, Default)]
pub struct Query(
    auth::AuthQuery,
    access_tokens::AccessTokenQuery,
    projects::ProjectQuery,
    datasets::DatasetQuery,
    runs::RunQuery,
    models::ModelQuery,
    lineage::LineageQuery,
    lineage::ImpactQuery,
    audit::AuditQuery,
    artifacts::ArtifactQuery,
    promotions::PromotionQuery,
    search::SearchQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    auth::AuthMutation,
    access_tokens::AccessTokenMutation,
    projects::ProjectMutation,
    datasets::DatasetMutation,
    datasets::RecallMutation,
    code::CodeMutation,
    runs::RunMutation,
    models::ModelMutation,
    lineage::LineageMutation,
    artifacts::ArtifactMutation,
    promotions::PromotionMutation,
    labels::LabelMutation,
    invitations::InvitationMutation,
);

pub type CustodySchema = Schema<Query, Mutation, subscriptions::Subscription>;

/// The caller of one request: an authenticated actor, or why there is none.
pub struct Caller(pub Result<Actor, Error>);

pub fn build_schema(state: AppState) -> CustodySchema {
    Schema::build(
        Query::default(),
        Mutation::default(),
        subscriptions::Subscription,
    )
    .data(state)
    .extension(readonly::AuditorsReadOnly)
    .limit_depth(12)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_recursive_depth(32)
    .finish()
}

/// The caller, for edges outside GraphQL that already authenticated.
pub fn caller_actor(caller: &Caller) -> Result<&Actor, Error> {
    caller
        .0
        .as_ref()
        .map_err(|e| Error::Unauthenticated(e.to_string()))
}

/// The schema without state, for printing the SDL.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        subscriptions::Subscription,
    )
    .finish()
    .sdl()
}

/// Runs a GraphQL document as `actor`, in-process, exactly as `/graphql` would answer them: the
/// web UI's pages read through the public API, with its authorization and limits.
pub async fn execute_as(
    schema: &CustodySchema,
    pool: &DbPool,
    actor: Actor,
    query: &str,
    variables: serde_json::Value,
) -> async_graphql::Response {
    let request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(variables))
        .data(loader(pool.clone()))
        .data(crate::access::Access::new(actor.clone(), pool.clone()))
        .data(Caller(Ok(actor)));
    let mut response = schema.execute(request).await;
    add_missing_codes(&mut response);
    response
}

pub fn loader(pool: DbPool) -> DataLoader<DbLoader> {
    DataLoader::new(DbLoader { pool }, tokio::spawn)
}

/// Maps a domain error to a GraphQL error with `extensions.code`; internal causes are logged here,
/// once, and never sent to the caller.
pub fn gql_error(err: Error) -> async_graphql::Error {
    if let Error::Internal(cause) = &err {
        tracing::error!(error = ?cause, "internal error");
    }
    let code = err.code();
    async_graphql::Error::new(err.to_string()).extend_with(|_, e| e.set("code", code))
}

pub type GqlResult<T> = async_graphql::Result<T>;

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

pub(crate) fn actor<'a>(ctx: &Context<'a>) -> GqlResult<&'a Actor> {
    match ctx.data_opt::<Caller>() {
        Some(Caller(Ok(actor))) => Ok(actor),
        Some(Caller(Err(err))) => Err(gql_error(Error::Unauthenticated(err.to_string()))),
        None => Err(gql_error(Error::Unauthenticated(
            "a bearer token is required".into(),
        ))),
    }
}

/// What the caller may read; every node of a project is built through it.
pub(crate) fn access<'a>(ctx: &Context<'a>) -> GqlResult<&'a Access> {
    actor(ctx)?;
    ctx.data::<Access>()
        .map_err(|_| gql_error(Error::Unauthenticated("a bearer token is required".into())))
}

/// The value if the caller may read its project, else NOT_FOUND (as if it did not exist).
pub(crate) async fn readable<T: InProject>(ctx: &Context<'_>, value: T) -> GqlResult<Readable<T>> {
    access(ctx)?.readable(value).await.map_err(gql_error)
}

/// The values the caller may read; the others are left out.
pub(crate) async fn readable_only<T: InProject>(
    ctx: &Context<'_>,
    values: Vec<T>,
) -> GqlResult<Vec<Readable<T>>> {
    access(ctx)?.filter(values).await.map_err(gql_error)
}

/// Loads one row through the request's DataLoader; a missing row is NOT_FOUND with `what`.
pub(crate) async fn load<K>(
    ctx: &Context<'_>,
    key: K,
    what: &str,
) -> GqlResult<<DbLoader as async_graphql::dataloader::Loader<K>>::Value>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    DbLoader: async_graphql::dataloader::Loader<K, Error = std::sync::Arc<async_graphql::Error>>,
{
    loaders(ctx)
        .load_one(key)
        .await
        .map_err(|e| (*e).clone())?
        .ok_or_else(|| gql_error(Error::not_found(format!("{what} not found"))))
}

/// A row that belongs to a parent row (a version to its dataset or model, a stage to its
/// project) names the loader key of that parent.
pub(crate) trait Parented {
    type ParentKey: Send + Sync + std::hash::Hash + Eq + Clone + 'static;
    fn parent_key(&self) -> Self::ParentKey;
}

/// A row as a readable value, through its parent: loads the parent, checks the caller may read
/// it, and derives the proof for the child (which must belong to it).
pub(crate) async fn readable_child<C>(ctx: &Context<'_>, child: C) -> GqlResult<Readable<C>>
where
    C: Parented,
    DbLoader: async_graphql::dataloader::Loader<
        C::ParentKey,
        Error = std::sync::Arc<async_graphql::Error>,
    >,
    <DbLoader as async_graphql::dataloader::Loader<C::ParentKey>>::Value: InProject,
    C: BelongsTo<<DbLoader as async_graphql::dataloader::Loader<C::ParentKey>>::Value>,
{
    let parent = load(ctx, child.parent_key(), "parent").await?;
    readable(ctx, parent).await?.child(child).map_err(gql_error)
}

pub(crate) async fn conn(ctx: &Context<'_>) -> GqlResult<Object<AsyncPgConnection>> {
    state(ctx).pool.get().await.map_err(|e| gql_error(e.into()))
}

pub(crate) fn loaders<'a>(ctx: &Context<'a>) -> &'a DataLoader<DbLoader> {
    ctx.data_unchecked::<DataLoader<DbLoader>>()
}

/// Runs one command in one transaction ([`crate::audit::transaction`]): the change and its audit
/// entries commit together, the entries appended last.
pub(crate) async fn transaction<'a, T, F>(ctx: &Context<'_>, command: F) -> GqlResult<T>
where
    T: Send + 'a,
    F: for<'r> FnOnce(&'r mut Conn) -> ScopedBoxFuture<'a, 'r, Result<T, Error>> + Send + 'a,
{
    let mut pooled = conn(ctx).await?;
    crate::audit::transaction(&mut pooled, command)
        .await
        .map_err(gql_error)
}

/// Runs a read with a pooled connection.
pub(crate) async fn read<'a, T, F>(ctx: &Context<'_>, query: F) -> GqlResult<T>
where
    F: for<'r> FnOnce(&'r mut Conn) -> ScopedBoxFuture<'a, 'r, Result<T, Error>> + Send + 'a,
{
    let mut conn = conn(ctx).await?;
    query(&mut conn).await.map_err(gql_error)
}

/// Parses an id argument as the id it must be (`parse_id::<RunId>(&id)`); a malformed one is
/// INVALID_INPUT naming what was expected.
pub(crate) fn parse_id<T: TypedId>(id: &ID) -> GqlResult<T> {
    parse_as(id.as_str(), T::WHAT)
}

pub(crate) fn parse_ids<T: TypedId>(ids: &[ID]) -> GqlResult<Vec<T>> {
    ids.iter().map(parse_id).collect()
}

/// Parses a page cursor: the id of the last row of the previous page.
pub(crate) fn parse_cursor<T: TypedId>(cursor: &str) -> GqlResult<T> {
    parse_as(cursor, "cursor")
}

fn parse_as<T: TypedId>(text: &str, what: &str) -> GqlResult<T> {
    text.parse::<T>()
        .map_err(|_| gql_error(Error::invalid(format!("`{text}` is not a valid {what} id"))))
}

/// Checks a page size: absent gives the default, more than the cap is refused.
pub(crate) fn page_size(first: Option<i32>) -> GqlResult<i64> {
    match first {
        None => Ok(DEFAULT_PAGE_SIZE as i64),
        Some(n) if (0..=MAX_PAGE_SIZE).contains(&n) => Ok(n as i64),
        Some(n) => Err(gql_error(Error::invalid(format!(
            "first must be between 0 and {MAX_PAGE_SIZE}, got {n}"
        )))),
    }
}

/// Rows a bounded list field answers when `first` is not given, and at most.
pub const DEFAULT_LIST_SIZE: i32 = 100;
pub const MAX_LIST_SIZE: i32 = 1_000;
/// Metric points per page of `Run.metrics`.
pub const DEFAULT_METRIC_POINTS: i32 = 1_000;
pub const MAX_METRIC_POINTS: i32 = 10_000;

/// The slice of a bounded list field: `first` rows (default `default`, at most `max`) after
/// skipping `offset`.
pub(crate) fn slice(
    first: Option<i32>,
    offset: Option<i32>,
    default: i32,
    max: i32,
) -> GqlResult<Slice> {
    let limit = first.unwrap_or(default);
    if !(0..=max).contains(&limit) {
        return Err(gql_error(Error::invalid(format!(
            "first must be between 0 and {max}, got {limit}"
        ))));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(gql_error(Error::invalid(format!(
            "offset must not be negative, got {offset}"
        ))));
    }
    Ok(Slice {
        limit: limit.into(),
        offset: offset.into(),
    })
}

/// A page of versions: `first` (default and cap as for lists) after version number `after`.
pub(crate) fn version_range(first: Option<i32>, after: Option<i32>) -> GqlResult<VersionRange> {
    let slice = slice(first, after, DEFAULT_LIST_SIZE, MAX_LIST_SIZE)?;
    Ok(VersionRange {
        after: slice.offset as i32,
        limit: slice.limit as i32,
    })
}

/// The complexity of a list field: its page size times the cost of one element, so aliases and
/// nesting cannot multiply a heavy field past the schema's limit.
pub(crate) fn list_cost(first: Option<i32>, default: i32, child_complexity: usize) -> usize {
    let rows = first.unwrap_or(default).max(1) as usize;
    rows.saturating_mul(child_complexity.max(1))
}

/// One page of a Relay connection from rows fetched with `limit + 1` (the extra row only says
/// that another page follows).
pub(crate) fn page<T, N: async_graphql::OutputType>(
    mut rows: Vec<T>,
    limit: i64,
    has_previous: bool,
    cursor: impl Fn(&T) -> String,
    node: impl Fn(T) -> N,
) -> async_graphql::connection::Connection<String, N> {
    let has_next = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut connection = async_graphql::connection::Connection::new(has_previous, has_next);
    connection.edges.extend(
        rows.into_iter()
            .map(|row| async_graphql::connection::Edge::new(cursor(&row), node(row))),
    );
    connection
}

/// Gives every error in a response a `code`: errors raised before any resolver ran (syntax,
/// validation, limits) carry none from async-graphql.
pub fn add_missing_codes(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "INVALID_INPUT");
        }
    }
}

#[cfg(test)]
mod tests {
    /// The SDL is the contract with the SDKs and dashboards: the names of API.md must stay.
    #[test]
    fn schema_keeps_the_public_names() {
        let sdl = super::sdl();
        for needle in [
            "me: User!",
            "project(name: String!): Project",
            "dataset(project: String!, name: String!): Dataset",
            "run(id: ID!): Run",
            "model(project: String!, name: String!): Model",
            "modelVersion(project: String!, model: String!, version: Int, alias: String): ModelVersion",
            "lineage(node: NodeRef!, direction: LineageDirection!, depth: Int = 3): LineageGraph!",
            "createProject(name: String!, description: String): Project!",
            "logMetrics(runId: ID!, metrics: [MetricInput!]!): Int!",
            "linkLineage(from: NodeRef!, to: NodeRef!, relation: String!): LineageEdge!",
            "enum NodeKind",
            "DATASET_VERSION",
            "scalar Sha256",
            "scalar DateTime",
            "scalar JSON",
        ] {
            assert!(sdl.contains(needle), "SDL lacks `{needle}`:\n{sdl}");
        }
    }
}
