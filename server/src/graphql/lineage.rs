use async_graphql::{ComplexObject, Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::code::CodeCommitNode;
use super::datasets::{readable_versions, DatasetVersionNode};
use super::loaders::{CodeCommitById, DatasetVersionById, ModelById, ModelVersionById, RunById};
use super::models::ModelVersionNode;
use super::runs::RunNode;
use super::{actor, gql_error, loaders, parse_id, read, readable_only, transaction, GqlResult};
use crate::ids::{CodeCommitId, DatasetVersionId, DeploymentId, ModelVersionId, RunId};
use crate::lineage::{self, Direction, Edge, NodeKind, NodeRef};

#[derive(InputObject)]
#[graphql(name = "NodeRef")]
pub struct NodeRefInput {
    pub kind: NodeKind,
    pub id: ID,
}

impl NodeRefInput {
    fn parse(&self) -> GqlResult<NodeRef> {
        let id = &self.id;
        Ok(match self.kind {
            NodeKind::DatasetVersion => NodeRef::DatasetVersion(parse_id::<DatasetVersionId>(id)?),
            NodeKind::CodeCommit => NodeRef::CodeCommit(parse_id::<CodeCommitId>(id)?),
            NodeKind::Run => NodeRef::Run(parse_id::<RunId>(id)?),
            NodeKind::ModelVersion => NodeRef::ModelVersion(parse_id::<ModelVersionId>(id)?),
            NodeKind::Deployment => NodeRef::Deployment(parse_id::<DeploymentId>(id)?),
        })
    }
}

#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct LineageNode {
    kind: NodeKind,
    id: ID,
    #[graphql(skip)]
    node: NodeRef,
}

impl From<NodeRef> for LineageNode {
    fn from(node: NodeRef) -> Self {
        LineageNode {
            kind: node.kind(),
            id: ID(node.uuid().to_string()),
            node,
        }
    }
}

/// What a node is, for drawing it (names, versions, links): each field answers the entity when
/// the node is of its kind and the caller may read it, else null. Every one is authorized here,
/// where it is resolved, not trusted from the traversal that found the node.
#[ComplexObject]
impl LineageNode {
    async fn run(&self, ctx: &Context<'_>) -> GqlResult<Option<RunNode>> {
        let NodeRef::Run(id) = self.node else {
            return Ok(None);
        };
        let found = loaders(ctx)
            .load_one(RunById(id))
            .await
            .map_err(|e| (*e).clone())?;
        let readable = readable_only(ctx, found.into_iter().collect()).await?;
        Ok(readable.into_iter().next().map(RunNode))
    }

    async fn dataset_version(&self, ctx: &Context<'_>) -> GqlResult<Option<DatasetVersionNode>> {
        let NodeRef::DatasetVersion(id) = self.node else {
            return Ok(None);
        };
        let found = loaders(ctx)
            .load_one(DatasetVersionById(id))
            .await
            .map_err(|e| (*e).clone())?;
        let readable = readable_versions(ctx, found.into_iter().collect()).await?;
        Ok(readable.into_iter().next().map(DatasetVersionNode))
    }

    async fn model_version(&self, ctx: &Context<'_>) -> GqlResult<Option<ModelVersionNode>> {
        let NodeRef::ModelVersion(id) = self.node else {
            return Ok(None);
        };
        let Some(version) = loaders(ctx)
            .load_one(ModelVersionById(id))
            .await
            .map_err(|e| (*e).clone())?
        else {
            return Ok(None);
        };
        let model = loaders(ctx)
            .load_one(ModelById(version.model_id))
            .await
            .map_err(|e| (*e).clone())?;
        match readable_only(ctx, model.into_iter().collect()).await?.pop() {
            Some(model) => Ok(Some(ModelVersionNode(
                model.child(version).map_err(gql_error)?,
            ))),
            None => Ok(None),
        }
    }

    /// Code commits are shared between projects: any caller who reached one may read it.
    async fn code_commit(&self, ctx: &Context<'_>) -> GqlResult<Option<CodeCommitNode>> {
        let NodeRef::CodeCommit(id) = self.node else {
            return Ok(None);
        };
        let found = loaders(ctx)
            .load_one(CodeCommitById(id))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(found.map(CodeCommitNode))
    }
}

#[derive(SimpleObject)]
pub struct LineageEdge {
    id: ID,
    from: LineageNode,
    to: LineageNode,
    relation: String,
    created_at: DateTime<Utc>,
}

impl From<Edge> for LineageEdge {
    fn from(edge: Edge) -> Self {
        LineageEdge {
            id: ID(edge.id.to_string()),
            from: edge.from().into(),
            to: edge.to().into(),
            relation: edge.relation,
            created_at: edge.created_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct LineageGraph {
    /// The start node first, then every node reached.
    nodes: Vec<LineageNode>,
    edges: Vec<LineageEdge>,
}

#[derive(Default)]
pub struct LineageQuery;

#[Object]
impl LineageQuery {
    /// Nodes and edges within `depth` steps upstream (what a node came from) or downstream (what
    /// came from it). Depth 0..=50.
    async fn lineage(
        &self,
        ctx: &Context<'_>,
        node: NodeRefInput,
        direction: Direction,
        #[graphql(default = 3)] depth: Option<i32>,
    ) -> GqlResult<LineageGraph> {
        let actor = actor(ctx)?;
        let start = node.parse()?;
        let depth = depth.unwrap_or(3);
        let graph = read(ctx, |c| {
            lineage::traverse(c, actor, start, direction, depth).scope_boxed()
        })
        .await?;
        Ok(LineageGraph {
            nodes: graph.nodes.into_iter().map(Into::into).collect(),
            edges: graph.edges.into_iter().map(Into::into).collect(),
        })
    }
}

#[derive(Default)]
pub struct LineageMutation;

#[Object]
impl LineageMutation {
    /// Records that `from` depends on `to` (e.g. a run `evaluated_on` a dataset version).
    /// Refused with CONFLICT when it would close a cycle.
    async fn link_lineage(
        &self,
        ctx: &Context<'_>,
        from: NodeRefInput,
        to: NodeRefInput,
        relation: String,
    ) -> GqlResult<LineageEdge> {
        let actor = actor(ctx)?;
        let (from, to) = (from.parse()?, to.parse()?);
        let edge = transaction(ctx, |c| {
            async move { lineage::link(c, actor, from, to, &relation).await }.scope_boxed()
        })
        .await?;
        Ok(edge.into())
    }
}
