use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::loaders::{DatasetById, VersionsOfDataset};
use super::scalars::Sha256;
use super::{actor, gql_error, loaders, parse_ids, read, transaction, GqlResult};
use crate::datasets::{self, Dataset, DatasetVersion, NewVersion};
use crate::error::Error;
use crate::projects::Role;

pub struct DatasetNode(pub Dataset);

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

    /// Every version, oldest first.
    async fn versions(&self, ctx: &Context<'_>) -> GqlResult<Vec<DatasetVersionNode>> {
        let rows = loaders(ctx)
            .load_one(VersionsOfDataset(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        Ok(rows.into_iter().map(DatasetVersionNode).collect())
    }
}

pub struct DatasetVersionNode(pub DatasetVersion);

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
        let found = loaders(ctx)
            .load_one(DatasetById(self.0.dataset_id))
            .await
            .map_err(|e| (*e).clone())?
            .ok_or_else(|| gql_error(Error::not_found("dataset is gone")))?;
        Ok(DatasetNode(found))
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
        Ok(found.map(DatasetNode))
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
        Ok(DatasetNode(dataset))
    }

    /// Registers the next version of a dataset; `derivedFrom` names the versions it was made from.
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
        let derived_from = parse_ids(&derived_from.unwrap_or_default(), "dataset version")?;
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
        Ok(DatasetVersionNode(version))
    }
}
