use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::auth::UserNode;
use super::loaders::{
    ConsumersOfDatasetVersion, DatasetById, ParentsOfDatasetVersion, ProjectById,
    RecallsOfDatasetVersion, UserById, VersionsOfDataset,
};
use super::projects::ProjectNode;
use super::runs::RunNode;
use super::scalars::Sha256;
use super::{
    actor, gql_error, list_cost, load, loaders, parse_id, parse_ids, read, readable,
    readable_child, transaction, version_range, GqlResult, DEFAULT_LIST_SIZE,
};
use crate::access::Readable;
use crate::datasets::{self, Dataset, DatasetVersion, NewVersion};
use crate::error::Error;
use crate::ids::DatasetVersionId;
use crate::projects::Role;
use crate::recalls::{self, Recall};

/// A dataset the caller may read.
pub struct DatasetNode(pub Readable<Dataset>);

#[Object(name = "Dataset")]
impl DatasetNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The project the dataset belongs to (readable, as the dataset is).
    async fn project(&self, ctx: &Context<'_>) -> GqlResult<ProjectNode> {
        let found = load(ctx, ProjectById(self.0.project_id), "project").await?;
        Ok(ProjectNode(readable(ctx, found).await?))
    }

    /// Versions, oldest first: `first` (default 100, at most 1000) numbered after `after`.
    #[graphql(complexity = "list_cost(first, DEFAULT_LIST_SIZE, child_complexity)")]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        #[graphql(desc = "a version number: the page starts after it")] after: Option<i32>,
    ) -> GqlResult<Vec<DatasetVersionNode>> {
        let range = version_range(first, after)?;
        let rows = loaders(ctx)
            .load_one(VersionsOfDataset(self.0.id, range))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        let rows = self.0.children(rows).map_err(gql_error)?;
        Ok(rows.into_iter().map(DatasetVersionNode).collect())
    }
}

/// A version of a dataset the caller may read.
pub struct DatasetVersionNode(pub Readable<DatasetVersion>);

#[Object(name = "DatasetVersion")]
impl DatasetVersionNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn version(&self) -> i32 {
        self.0.version
    }

    async fn uri(&self) -> &str {
        &self.0.uri
    }

    async fn sha256(&self) -> Sha256 {
        Sha256(self.0.sha256.clone())
    }

    async fn size_bytes(&self) -> Option<i64> {
        self.0.size_bytes
    }

    async fn tags(&self) -> &[String] {
        &self.0.tags
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn dataset(&self, ctx: &Context<'_>) -> GqlResult<DatasetNode> {
        let found = load(ctx, DatasetById(self.0.dataset_id), "dataset").await?;
        Ok(DatasetNode(readable(ctx, found).await?))
    }

    /// The versions this one was derived from that the caller may read (they may belong to
    /// other projects; versions of projects the caller cannot read are left out).
    async fn derived_from(&self, ctx: &Context<'_>) -> GqlResult<Vec<DatasetVersionNode>> {
        let rows = loaders(ctx)
            .load_one(ParentsOfDatasetVersion(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        let rows = readable_versions(ctx, rows).await?;
        Ok(rows.into_iter().map(DatasetVersionNode).collect())
    }

    /// The recall in force on this version, if any: its data may not be used.
    async fn recall(&self, ctx: &Context<'_>) -> GqlResult<Option<DatasetRecall>> {
        let recalls = recalls_of(ctx, self.0.id).await?;
        Ok(recalls
            .into_iter()
            .find(Recall::in_force)
            .map(DatasetRecall))
    }

    /// Every recall of this version, in force or lifted, oldest first.
    async fn recalls(&self, ctx: &Context<'_>) -> GqlResult<Vec<DatasetRecall>> {
        let recalls = recalls_of(ctx, self.0.id).await?;
        Ok(recalls.into_iter().map(DatasetRecall).collect())
    }

    /// The runs that consumed this version that the caller may read (runs of other projects
    /// may consume it; those of projects the caller cannot read are left out).
    async fn consumed_by(&self, ctx: &Context<'_>) -> GqlResult<Vec<RunNode>> {
        let rows = loaders(ctx)
            .load_one(ConsumersOfDatasetVersion(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        let rows = super::readable_only(ctx, rows).await?;
        Ok(rows.into_iter().map(RunNode).collect())
    }
}

/// A version's recalls, batched across the versions of one answer (a dataset page lists many).
async fn recalls_of(ctx: &Context<'_>, id: DatasetVersionId) -> GqlResult<Vec<Recall>> {
    Ok(loaders(ctx)
        .load_one(RecallsOfDatasetVersion(id))
        .await
        .map_err(|e| (*e).clone())?
        .unwrap_or_default())
}

/// A recall of a dataset version (readable with the version), and its lifting.
pub struct DatasetRecall(Recall);

#[Object]
impl DatasetRecall {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn reason(&self) -> &str {
        &self.0.reason
    }

    async fn recalled_by(&self, ctx: &Context<'_>) -> GqlResult<Option<UserNode>> {
        let user = loaders(ctx)
            .load_one(UserById(self.0.recalled_by))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(user.map(UserNode))
    }

    async fn recalled_at(&self) -> DateTime<Utc> {
        self.0.recalled_at
    }

    /// Whether the recall still holds (not lifted).
    async fn in_force(&self) -> bool {
        self.0.in_force()
    }

    async fn lifted_by(&self, ctx: &Context<'_>) -> GqlResult<Option<UserNode>> {
        let Some(id) = self.0.lifted_by else {
            return Ok(None);
        };
        let user = loaders(ctx)
            .load_one(UserById(id))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(user.map(UserNode))
    }

    async fn lifted_at(&self) -> Option<DateTime<Utc>> {
        self.0.lifted_at
    }

    /// Why the data may be used again.
    async fn lift_reason(&self) -> Option<&str> {
        self.0.lift_reason.as_deref()
    }
}

#[derive(Default)]
pub struct DatasetQuery;

#[Object]
impl DatasetQuery {
    async fn dataset(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: String,
    ) -> GqlResult<Option<DatasetNode>> {
        let actor = actor(ctx)?;
        let found = read(ctx, |c| {
            async move {
                match datasets::find(c, actor, &project, &name, Role::Viewer).await {
                    Ok(d) => Ok(Some(d)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .scope_boxed()
        })
        .await?;
        match found {
            Some(dataset) => Ok(Some(DatasetNode(readable(ctx, dataset).await?))),
            None => Ok(None),
        }
    }

    /// The dataset that stands for an OpenLineage dataset (by its namespace and name, as
    /// pipelines report it), if the caller may read it.
    async fn open_lineage_dataset(
        &self,
        ctx: &Context<'_>,
        namespace: String,
        name: String,
    ) -> GqlResult<Option<DatasetNode>> {
        let found = read(ctx, |c| {
            async move { crate::openlineage::dataset_named(c, &namespace, &name).await }
                .scope_boxed()
        })
        .await?;
        let readable = super::readable_only(ctx, found.into_iter().collect()).await?;
        Ok(readable.into_iter().next().map(DatasetNode))
    }
}

#[derive(Default)]
pub struct DatasetMutation;

#[Object]
impl DatasetMutation {
    async fn create_dataset(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: String,
        description: Option<String>,
    ) -> GqlResult<DatasetNode> {
        let actor = actor(ctx)?;
        let dataset = transaction(ctx, |c| {
            async move { datasets::create(c, actor, &project, &name, description.as_deref()).await }
                .scope_boxed()
        })
        .await?;
        Ok(DatasetNode(readable(ctx, dataset).await?))
    }

    /// Registers the next version of a dataset; `derivedFrom` names the versions it was made from.
    // The arguments are the mutation's GraphQL arguments; async-graphql names them by these.
    #[allow(clippy::too_many_arguments)]
    async fn register_dataset_version(
        &self,
        ctx: &Context<'_>,
        project: String,
        dataset: String,
        uri: String,
        sha256: Sha256,
        size_bytes: Option<i64>,
        tags: Option<Vec<String>>,
        derived_from: Option<Vec<ID>>,
    ) -> GqlResult<DatasetVersionNode> {
        let actor = actor(ctx)?;
        let derived_from = parse_ids::<DatasetVersionId>(&derived_from.unwrap_or_default())?;
        let version = transaction(ctx, |c| {
            async move {
                let new = NewVersion {
                    uri: &uri,
                    sha256: &sha256.0,
                    size_bytes,
                    tags: tags.unwrap_or_default(),
                    derived_from,
                };
                datasets::register_version(c, actor, &project, &dataset, new).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(DatasetVersionNode(readable_child(ctx, version).await?))
    }
}

#[derive(Default)]
pub struct RecallMutation;

#[Object]
impl RecallMutation {
    /// Recalls a dataset version (APPROVER or ADMIN of its project): its data may no longer be
    /// used. Promotions of versions built on it are denied by the default policy, and the
    /// projects downstream are notified. CONFLICT while a recall of it is in force.
    async fn recall_dataset_version(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> GqlResult<DatasetVersionNode> {
        let actor = actor(ctx)?;
        let version_id = parse_id::<DatasetVersionId>(&id)?;
        transaction(ctx, |c| {
            async move { recalls::recall(c, actor, version_id, &reason).await }.scope_boxed()
        })
        .await?;
        recalled_version(ctx, version_id).await
    }

    /// Lifts the recall in force on a dataset version (APPROVER or ADMIN of its project), saying
    /// why its data may be used again. The recall stays in the version's history.
    async fn lift_dataset_recall(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> GqlResult<DatasetVersionNode> {
        let actor = actor(ctx)?;
        let version_id = parse_id::<DatasetVersionId>(&id)?;
        transaction(ctx, |c| {
            async move { recalls::lift(c, actor, version_id, &reason).await }.scope_boxed()
        })
        .await?;
        recalled_version(ctx, version_id).await
    }
}

async fn recalled_version(
    ctx: &Context<'_>,
    id: DatasetVersionId,
) -> GqlResult<DatasetVersionNode> {
    let version = read(ctx, |c| {
        async move { datasets::versions_by_id(c, &[id]).await }.scope_boxed()
    })
    .await?
    .pop()
    .ok_or_else(|| gql_error(Error::not_found(format!("no dataset version with id {id}"))))?;
    Ok(DatasetVersionNode(readable_child(ctx, version).await?))
}

/// The versions the caller may read, in order; versions of unreadable projects are left out.
pub(crate) async fn readable_versions(
    ctx: &Context<'_>,
    versions: Vec<DatasetVersion>,
) -> GqlResult<Vec<Readable<DatasetVersion>>> {
    let ids: Vec<DatasetById> = versions.iter().map(|v| DatasetById(v.dataset_id)).collect();
    let datasets = loaders(ctx)
        .load_many(ids)
        .await
        .map_err(|e| (*e).clone())?;
    let readable_datasets = super::readable_only(ctx, datasets.into_values().collect()).await?;
    let by_id: std::collections::HashMap<_, _> =
        readable_datasets.into_iter().map(|d| (d.id, d)).collect();
    versions
        .into_iter()
        .filter_map(|v| by_id.get(&v.dataset_id).map(|d| d.child(v)))
        .collect::<crate::error::Result<_>>()
        .map_err(gql_error)
}
