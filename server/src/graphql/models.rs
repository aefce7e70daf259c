use async_graphql::{Context, Json, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::datasets::DatasetVersionNode;
use super::loaders::{AliasesOfVersion, ModelById, RunById, VersionsOfModel};
use super::runs::RunNode;
use super::{
    actor, gql_error, list_cost, load, loaders, parse_id, read, readable, readable_child,
    transaction, version_range, GqlResult, DEFAULT_LIST_SIZE,
};
use crate::access::Readable;
use crate::error::Error;
use crate::ids::RunId;
use crate::models::{self, Model, ModelVersion};
use crate::projects::Role;

/// A model the caller may read.
pub struct ModelNode(pub Readable<Model>);

#[Object(name = "Model")]
impl ModelNode {
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

    /// Key/value labels: an object of strings.
    async fn tags(&self) -> Json<serde_json::Value> {
        Json(self.0.tags.clone())
    }

    /// The model's aliases and the version each names (governed ones through their stage).
    async fn aliases(&self, ctx: &Context<'_>) -> GqlResult<Vec<super::labels::ModelAlias>> {
        let model = self.0.clone().into_inner();
        let found = read(ctx, |c| {
            async move { crate::labels::aliases_of_model(c, &model).await }.scope_boxed()
        })
        .await?;
        let mut aliases = Vec::with_capacity(found.len());
        for (alias, version) in found {
            let version = self.0.child(version).map_err(gql_error)?;
            aliases.push(super::labels::ModelAlias {
                alias,
                model_version: ModelVersionNode(version),
            });
        }
        Ok(aliases)
    }

    async fn primary_metric(&self) -> Option<&str> {
        self.0.primary_metric.as_deref()
    }

    async fn higher_is_better(&self) -> bool {
        self.0.higher_is_better
    }

    /// Versions, oldest first: `first` (default 100, at most 1000) numbered after `after`.
    #[graphql(complexity = "list_cost(first, DEFAULT_LIST_SIZE, child_complexity)")]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        #[graphql(desc = "a version number: the page starts after it")] after: Option<i32>,
    ) -> GqlResult<Vec<ModelVersionNode>> {
        let range = version_range(first, after)?;
        let rows = loaders(ctx)
            .load_one(VersionsOfModel(self.0.id, range))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        let rows = self.0.children(rows).map_err(gql_error)?;
        Ok(rows.into_iter().map(ModelVersionNode).collect())
    }
}

/// A model version the caller may read.
pub struct ModelVersionNode(pub Readable<ModelVersion>);

#[Object(name = "ModelVersion")]
impl ModelVersionNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn version(&self) -> i32 {
        self.0.version
    }

    /// The stage this version is in; null until it is first promoted.
    async fn stage(&self) -> Option<&str> {
        self.0.stage.as_deref()
    }

    /// Key/value labels: an object of strings.
    async fn tags(&self) -> Json<serde_json::Value> {
        Json(self.0.tags.clone())
    }

    /// The aliases naming this version, free and governed (a governed alias names the version
    /// holding its stage), by name.
    async fn aliases(&self, ctx: &Context<'_>) -> GqlResult<Vec<String>> {
        Ok(loaders(ctx)
            .load_one(AliasesOfVersion(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default())
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// The dataset versions upstream of this version (any depth) under a recall in force, that
    /// the caller may read: data this version was built on that may no longer be used.
    async fn recalled_upstream(&self, ctx: &Context<'_>) -> GqlResult<Vec<DatasetVersionNode>> {
        let node = crate::lineage::NodeRef::ModelVersion(self.0.id);
        let versions = read(ctx, |c| {
            crate::recalls::recalled_upstream(c, node).scope_boxed()
        })
        .await?;
        let readable = super::datasets::readable_versions(ctx, versions).await?;
        Ok(readable.into_iter().map(DatasetVersionNode).collect())
    }

    /// The path, among the source run's artifacts, this version was registered from.
    async fn artifact_path(&self) -> Option<&str> {
        self.0.artifact_path.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// SHA-256 of the version's manifest: the canonical JSON array of its files
    /// `[{"path","sha256","size"}]` sorted by path. Promotions and audit refer to it.
    async fn manifest_sha256(&self) -> super::scalars::Sha256 {
        super::scalars::Sha256(self.0.manifest_sha256.clone())
    }

    /// The version's files, fixed at registration, sorted by path.
    async fn artifacts(&self, ctx: &Context<'_>) -> GqlResult<Vec<super::artifacts::Artifact>> {
        let rows = loaders(ctx)
            .load_one(super::loaders::FilesOfModelVersion(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn model(&self, ctx: &Context<'_>) -> GqlResult<ModelNode> {
        let found = load(ctx, ModelById(self.0.model_id), "model").await?;
        Ok(ModelNode(readable(ctx, found).await?))
    }

    /// The run that produced this version.
    async fn run(&self, ctx: &Context<'_>) -> GqlResult<RunNode> {
        let found = load(ctx, RunById(self.0.run_id), "run").await?;
        Ok(RunNode(readable(ctx, found).await?))
    }
}

#[derive(Default)]
pub struct ModelQuery;

#[Object]
impl ModelQuery {
    async fn model(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: String,
    ) -> GqlResult<Option<ModelNode>> {
        let actor = actor(ctx)?;
        let found = read(ctx, |c| {
            async move {
                match models::find(c, actor, &project, &name, Role::Viewer).await {
                    Ok(m) => Ok(Some(m)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .scope_boxed()
        })
        .await?;
        match found {
            Some(model) => Ok(Some(ModelNode(readable(ctx, model).await?))),
            None => Ok(None),
        }
    }

    /// One version of a model, by number (`version`) or by alias (`alias`: free, or governed
    /// and naming the version that holds its stage); exactly one of the two.
    async fn model_version(
        &self,
        ctx: &Context<'_>,
        project: String,
        model: String,
        version: Option<i32>,
        alias: Option<String>,
    ) -> GqlResult<Option<ModelVersionNode>> {
        let actor = actor(ctx)?;
        let found = read(ctx, |c| {
            async move {
                let found = match (version, alias) {
                    (Some(version), None) => {
                        models::find_version(c, actor, &project, &model, version).await
                    }
                    (None, Some(alias)) => {
                        crate::labels::find_by_alias(c, actor, &project, &model, &alias).await
                    }
                    _ => return Err(Error::invalid("give exactly one of version and alias")),
                };
                match found {
                    Ok(v) => Ok(Some(v)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .scope_boxed()
        })
        .await?;
        match found {
            Some(version) => Ok(Some(ModelVersionNode(readable_child(ctx, version).await?))),
            None => Ok(None),
        }
    }
}

#[derive(Default)]
pub struct ModelMutation;

#[Object]
impl ModelMutation {
    async fn create_model(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: String,
        description: Option<String>,
        #[graphql(desc = "the metric that ranks versions (promotion policies compare it)")]
        primary_metric: Option<String>,
        #[graphql(desc = "whether a larger primary metric is better (default true)")]
        higher_is_better: Option<bool>,
    ) -> GqlResult<ModelNode> {
        let actor = actor(ctx)?;
        let ranking = primary_metric.map(|metric| models::Ranking {
            metric,
            higher_is_better: higher_is_better.unwrap_or(true),
        });
        let model = transaction(ctx, |c| {
            async move {
                models::create(c, actor, &project, &name, description.as_deref(), ranking).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(ModelNode(readable(ctx, model).await?))
    }

    /// Registers the next version of a model, produced by a run of the same project.
    async fn register_model_version(
        &self,
        ctx: &Context<'_>,
        project: String,
        model: String,
        run_id: ID,
        artifact_path: Option<String>,
        description: Option<String>,
    ) -> GqlResult<ModelVersionNode> {
        let actor = actor(ctx)?;
        let run_id = parse_id::<RunId>(&run_id)?;
        let version = transaction(ctx, |c| {
            async move {
                models::register_version(
                    c,
                    actor,
                    &project,
                    &model,
                    run_id,
                    artifact_path.as_deref(),
                    description.as_deref(),
                )
                .await
            }
            .scope_boxed()
        })
        .await?;
        Ok(ModelVersionNode(readable_child(ctx, version).await?))
    }
}
