use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::{actor, parse_id, read, transaction, GqlResult};
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
pub struct LineageNode {
    kind: NodeKind,
    id: ID,
}

impl From<NodeRef> for LineageNode {
    fn from(node: NodeRef) -> Self {
        LineageNode {
            kind: node.kind(),
            id: ID(node.uuid().to_string()),
        }
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
