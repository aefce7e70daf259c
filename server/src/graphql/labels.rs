//! Tags on runs, models and model versions; aliases of model versions. Thin: the rules live in
//! `crate::labels`.

use async_graphql::{Context, Object, SimpleObject, ID};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::models::{ModelNode, ModelVersionNode};
use super::promotions::PromotionNode;
use super::runs::RunNode;
use super::{actor, parse_id, readable, readable_child, state, transaction, GqlResult};
use crate::ids::{ModelId, ModelVersionId, RunId};
use crate::labels::{self, AliasMove, Tagged};

/// An alias of a model and the version it names.
#[derive(SimpleObject)]
pub struct ModelAlias {
    pub alias: String,
    pub model_version: ModelVersionNode,
}

/// What `setModelAlias` did: a free alias moved at once (`promotion` null); a governed alias
/// asked for a promotion into its stage and moves when that promotion applies.
#[derive(SimpleObject)]
pub struct AliasChange {
    pub alias: String,
    pub moved: bool,
    pub promotion: Option<PromotionNode>,
}

/// Sets or deletes one tag in its own transaction with its audit entry.
async fn change_tag(
    ctx: &Context<'_>,
    target: Tagged,
    key: String,
    value: Option<String>,
) -> GqlResult<()> {
    let actor = actor(ctx)?;
    transaction(ctx, |c| {
        async move { labels::set_tag(c, actor, target, &key, value.as_deref()).await }.scope_boxed()
    })
    .await?;
    Ok(())
}

async fn run_node(ctx: &Context<'_>, id: RunId) -> GqlResult<RunNode> {
    let run = super::load(ctx, super::loaders::RunById(id), "run").await?;
    Ok(RunNode(readable(ctx, run).await?))
}

async fn model_node(ctx: &Context<'_>, id: ModelId) -> GqlResult<ModelNode> {
    let model = super::load(ctx, super::loaders::ModelById(id), "model").await?;
    Ok(ModelNode(readable(ctx, model).await?))
}

async fn version_node(ctx: &Context<'_>, id: ModelVersionId) -> GqlResult<ModelVersionNode> {
    let version = super::load(ctx, super::loaders::ModelVersionById(id), "model version").await?;
    Ok(ModelVersionNode(readable_child(ctx, version).await?))
}

#[derive(Default)]
pub struct LabelMutation;

#[Object]
impl LabelMutation {
    /// Sets a tag of a run (CONTRIBUTOR). Keys: 1 to 250 letters, digits, spaces, `_ - . / :`;
    /// values up to 5,000 bytes; at most 100 tags.
    async fn set_run_tag(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        key: String,
        value: String,
    ) -> GqlResult<RunNode> {
        let id = parse_id::<RunId>(&run_id)?;
        change_tag(ctx, Tagged::Run(id), key, Some(value)).await?;
        run_node(ctx, id).await
    }

    async fn delete_run_tag(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        key: String,
    ) -> GqlResult<RunNode> {
        let id = parse_id::<RunId>(&run_id)?;
        change_tag(ctx, Tagged::Run(id), key, None).await?;
        run_node(ctx, id).await
    }

    async fn set_model_tag(
        &self,
        ctx: &Context<'_>,
        model_id: ID,
        key: String,
        value: String,
    ) -> GqlResult<ModelNode> {
        let id = parse_id::<ModelId>(&model_id)?;
        change_tag(ctx, Tagged::Model(id), key, Some(value)).await?;
        model_node(ctx, id).await
    }

    async fn delete_model_tag(
        &self,
        ctx: &Context<'_>,
        model_id: ID,
        key: String,
    ) -> GqlResult<ModelNode> {
        let id = parse_id::<ModelId>(&model_id)?;
        change_tag(ctx, Tagged::Model(id), key, None).await?;
        model_node(ctx, id).await
    }

    async fn set_model_version_tag(
        &self,
        ctx: &Context<'_>,
        model_version_id: ID,
        key: String,
        value: String,
    ) -> GqlResult<ModelVersionNode> {
        let id = parse_id::<ModelVersionId>(&model_version_id)?;
        change_tag(ctx, Tagged::ModelVersion(id), key, Some(value)).await?;
        version_node(ctx, id).await
    }

    async fn delete_model_version_tag(
        &self,
        ctx: &Context<'_>,
        model_version_id: ID,
        key: String,
    ) -> GqlResult<ModelVersionNode> {
        let id = parse_id::<ModelVersionId>(&model_version_id)?;
        change_tag(ctx, Tagged::ModelVersion(id), key, None).await?;
        version_node(ctx, id).await
    }

    /// Points an alias of the version's model at the version (CONTRIBUTOR). A governed alias
    /// (see `setGovernedAlias`) is moved by promotion: this requests one into its stage, with
    /// `comment`, and the alias follows when it applies.
    async fn set_model_alias(
        &self,
        ctx: &Context<'_>,
        model_version_id: ID,
        alias: String,
        comment: Option<String>,
    ) -> GqlResult<AliasChange> {
        let actor = actor(ctx)?;
        let id = parse_id::<ModelVersionId>(&model_version_id)?;
        let state = state(ctx);
        let name = alias.clone();
        let change = transaction(ctx, |c| {
            async move {
                let gate = state.gate();
                labels::set_alias(c, actor, &gate, id, &name, comment.as_deref()).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(match change {
            AliasMove::Moved => AliasChange {
                alias,
                moved: true,
                promotion: None,
            },
            AliasMove::Requested(promotion) => AliasChange {
                alias,
                moved: false,
                promotion: Some(PromotionNode(readable(ctx, *promotion).await?)),
            },
        })
    }

    /// Removes a free alias of a model (CONTRIBUTOR).
    async fn delete_model_alias(
        &self,
        ctx: &Context<'_>,
        project: String,
        model: String,
        alias: String,
    ) -> GqlResult<bool> {
        let actor = actor(ctx)?;
        transaction(ctx, |c| {
            async move { labels::delete_alias(c, actor, &project, &model, &alias).await }
                .scope_boxed()
        })
        .await?;
        Ok(true)
    }

    /// Declares an alias of the project governed, following `stage` (ADMIN): from then on it names
    /// the version holding that stage and moves only by promotion. A null `stage` makes it free
    /// again. Free aliases of that name are removed when it becomes governed.
    async fn set_governed_alias(
        &self,
        ctx: &Context<'_>,
        project: String,
        alias: String,
        stage: Option<String>,
    ) -> GqlResult<bool> {
        let actor = actor(ctx)?;
        transaction(ctx, |c| {
            async move { labels::set_governed(c, actor, &project, &alias, stage.as_deref()).await }
                .scope_boxed()
        })
        .await?;
        Ok(true)
    }
}
