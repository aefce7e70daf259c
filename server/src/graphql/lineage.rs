use async_graphql::{ComplexObject, Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::code::CodeCommitNode;
use super::datasets::{readable_versions, DatasetVersionNode};
use super::loaders::{
    CodeCommitById, DatasetVersionById, ModelById, ModelVersionById, ProjectById, RunById,
};
use super::models::ModelVersionNode;
use super::projects::ProjectNode;
use super::runs::RunNode;
use super::{
    actor, gql_error, load, loaders, parse_id, read, readable, readable_only, transaction,
    GqlResult,
};
use crate::access::Readable;
use crate::ids::{
    CodeCommitId, DatasetVersionId, DeploymentId, JobId, ModelVersionId, RunId, TypedId as _,
};
use crate::jobs::{self, Job};
use crate::lineage::{self, Direction, Edge, NodeKind, NodeRef};
use crate::promotions::{self, Deployment};

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
            NodeKind::Job => NodeRef::Job(parse_id::<JobId>(id)?),
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

    async fn job(&self, ctx: &Context<'_>) -> GqlResult<Option<JobNode>> {
        let NodeRef::Job(id) = self.node else {
            return Ok(None);
        };
        let found = read(ctx, |c| {
            async move { jobs::by_ids(c, &[id]).await }.scope_boxed()
        })
        .await?;
        let readable = readable_only(ctx, found).await?;
        Ok(readable.into_iter().next().map(JobNode))
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

/// A pipeline step OpenLineage reported (an Airflow task, a Spark job, a dbt model), readable by
/// the caller.
pub struct JobNode(pub Readable<Job>);

#[Object(name = "Job")]
impl JobNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The OpenLineage namespace the job was reported in.
    async fn namespace(&self) -> &str {
        &self.0.namespace
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn project(&self, ctx: &Context<'_>) -> GqlResult<ProjectNode> {
        let found = load(ctx, ProjectById(self.0.project_id), "project").await?;
        Ok(ProjectNode(readable(ctx, found).await?))
    }
}

/// A model version placed in a stage by an applied promotion.
pub struct DeploymentNode {
    deployment: Deployment,
    model_version: ModelVersionNode,
}

#[Object(name = "Deployment")]
impl DeploymentNode {
    async fn id(&self) -> ID {
        ID(self.deployment.id.to_string())
    }

    /// The stage the promotion placed the version in.
    async fn stage(&self) -> &str {
        &self.deployment.stage
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.deployment.created_at
    }

    async fn model_version(&self) -> &ModelVersionNode {
        &self.model_version
    }
}

/// Everything downstream of a node that the caller may read, by kind, nearest first: the answer
/// to "which models, in which stages, are built on this?". Nodes of projects the caller cannot
/// read are left out.
#[derive(SimpleObject)]
pub struct Impact {
    node: LineageNode,
    depth: i32,
    dataset_versions: Vec<DatasetVersionNode>,
    runs: Vec<RunNode>,
    /// The jobs of the runs above: the pipelines affected.
    jobs: Vec<JobNode>,
    /// Each with its current `stage`; where it is deployed is in `deployments`.
    model_versions: Vec<ModelVersionNode>,
    /// Deployments of the model versions above (a deployment descends from its version).
    deployments: Vec<DeploymentNode>,
}

/// The model versions (by id, in this order) whose model the caller may read.
async fn readable_model_versions(
    ctx: &Context<'_>,
    ids: &[ModelVersionId],
) -> GqlResult<Vec<ModelVersionNode>> {
    let keys: Vec<ModelVersionById> = ids.iter().map(|id| ModelVersionById(*id)).collect();
    let versions = loaders(ctx)
        .load_many(keys)
        .await
        .map_err(|e| (*e).clone())?;
    let model_keys: Vec<ModelById> = versions.values().map(|v| ModelById(v.model_id)).collect();
    let models = loaders(ctx)
        .load_many(model_keys)
        .await
        .map_err(|e| (*e).clone())?;
    let models = readable_only(ctx, models.into_values().collect()).await?;
    let models: std::collections::HashMap<_, _> = models.into_iter().map(|m| (m.id, m)).collect();
    let mut nodes = Vec::new();
    for id in ids {
        let Some(version) = versions.get(&ModelVersionById(*id)) else {
            continue;
        };
        if let Some(model) = models.get(&version.model_id) {
            nodes.push(ModelVersionNode(
                model.child(version.clone()).map_err(gql_error)?,
            ));
        }
    }
    Ok(nodes)
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
pub struct ImpactQuery;

#[Object]
impl ImpactQuery {
    /// Everything downstream of a node within `depth` steps (default and most: 50), grouped by
    /// kind, with each model version's stage and deployments: "which production models descend
    /// from this table?".
    async fn impact(
        &self,
        ctx: &Context<'_>,
        node: NodeRefInput,
        depth: Option<i32>,
    ) -> GqlResult<Impact> {
        let actor = actor(ctx)?;
        let start = node.parse()?;
        let depth = depth.unwrap_or(lineage::MAX_DEPTH);
        let nodes = read(ctx, |c| {
            async move { lineage::impact(c, actor, start, depth).await }.scope_boxed()
        })
        .await?;
        // The rows of each kind on connections of their own, at once: thousands of runs and of
        // versions are tens of milliseconds each that PostgreSQL can spend side by side.
        let version_ids = &lineage::ids_of::<DatasetVersionId>(&nodes);
        let run_ids = &lineage::ids_of::<RunId>(&nodes);
        let deployment_ids = &lineage::ids_of::<DeploymentId>(&nodes);
        let (dataset_versions, runs, (job_ids, jobs, deployments)) =
            futures_util::future::try_join3(
                read(ctx, |c| {
                    async move { crate::datasets::versions_by_id(c, version_ids).await }
                        .scope_boxed()
                }),
                read(ctx, |c| {
                    async move { crate::runs::by_ids(c, run_ids).await }.scope_boxed()
                }),
                read(ctx, |c| {
                    let nodes = &nodes;
                    async move {
                        let job_ids = lineage::affected_jobs(c, nodes).await?;
                        let jobs = jobs::by_ids(c, &job_ids).await?;
                        let deployments = promotions::deployments_by_ids(c, deployment_ids).await?;
                        Ok((job_ids, jobs, deployments))
                    }
                    .scope_boxed()
                }),
            )
            .await?;
        let rows = ImpactRows {
            dataset_versions,
            runs,
            jobs,
            deployments,
        };
        // Nodes in the walk's order; jobs in `affected_jobs`' order (which keeps the walk's).
        let position: std::collections::HashMap<uuid::Uuid, usize> = nodes
            .iter()
            .map(|n| n.uuid())
            .chain(job_ids.iter().map(|j| j.uuid()))
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let in_order = |id: uuid::Uuid| position.get(&id).copied();
        let mut dataset_versions = readable_versions(ctx, rows.dataset_versions).await?;
        dataset_versions.sort_by_key(|v| in_order(v.id.uuid()));
        let mut runs = readable_only(ctx, rows.runs).await?;
        runs.sort_by_key(|r| in_order(r.id.uuid()));
        let mut jobs = readable_only(ctx, rows.jobs).await?;
        jobs.sort_by_key(|j| in_order(j.id.uuid()));
        let model_versions =
            readable_model_versions(ctx, &lineage::ids_of::<ModelVersionId>(&nodes)).await?;
        let deployed: Vec<ModelVersionId> = rows
            .deployments
            .iter()
            .map(|d| d.model_version_id)
            .collect();
        let deployed_versions = readable_model_versions(ctx, &deployed).await?;
        let mut deployments = Vec::new();
        for deployment in rows.deployments {
            let version = deployed_versions
                .iter()
                .find(|v| v.0.id == deployment.model_version_id);
            if let Some(version) = version {
                deployments.push(DeploymentNode {
                    model_version: ModelVersionNode(version.0.clone()),
                    deployment,
                });
            }
        }
        Ok(Impact {
            node: start.into(),
            depth,
            dataset_versions: dataset_versions
                .into_iter()
                .map(DatasetVersionNode)
                .collect(),
            runs: runs.into_iter().map(RunNode).collect(),
            jobs: jobs.into_iter().map(JobNode).collect(),
            model_versions,
            deployments,
        })
    }
}

/// The rows of an impact's nodes, kind by kind, before authorization.
struct ImpactRows {
    dataset_versions: Vec<crate::datasets::DatasetVersion>,
    runs: Vec<crate::runs::Run>,
    jobs: Vec<Job>,
    deployments: Vec<Deployment>,
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
