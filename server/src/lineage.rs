//! Lineage: typed, directed edges between registry nodes, pointing upstream (from a node to what
//! it came from: run —consumed→ dataset version, model version —produced_by→ run, …). The graph
//! is kept acyclic; traversals are single recursive queries in PostgreSQL.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use serde_json::json;
// Untyped ids only where the graph is polymorphic: an edge's ends and the recursive walks point
// into six tables. `NodeRef` gives each end its typed id.
use uuid::Uuid;

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::db::schema::{
    code_commits, dataset_versions, datasets, deployments, jobs, lineage_edges, model_versions,
    models, runs,
};
use crate::db::{execute_rows, text_enum, Conn, Prepared};
use crate::error::{Error, Result};
use crate::ids::{
    CodeCommitId, DatasetId, DatasetVersionId, DeploymentId, JobId, LineageEdgeId, ModelVersionId,
    ProjectId, RunId, TypedId,
};
use crate::projects::{self, Role};

/// Deepest traversal a query may ask for.
pub const MAX_DEPTH: i32 = 50;

text_enum! {
    #[derive(PartialOrd, Ord, async_graphql::Enum)]
    #[graphql(name = "NodeKind")]
    pub enum NodeKind as "lineage node kind" {
        DatasetVersion = "dataset_version",
        CodeCommit = "code_commit",
        Run = "run",
        ModelVersion = "model_version",
        Deployment = "deployment",
        Job = "job",
    }
}

/// A node of the graph: a row of one of six tables, by its typed id. (The variants are in the
/// order of `NodeKind`, so nodes sort by kind, then id.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRef {
    DatasetVersion(DatasetVersionId),
    CodeCommit(CodeCommitId),
    Run(RunId),
    ModelVersion(ModelVersionId),
    Deployment(DeploymentId),
    Job(JobId),
}

impl NodeRef {
    /// The node an edge's columns (or a GraphQL `NodeRef`) name by kind and untyped id.
    pub fn new(kind: NodeKind, id: Uuid) -> Self {
        match kind {
            NodeKind::DatasetVersion => Self::DatasetVersion(DatasetVersionId::from_uuid(id)),
            NodeKind::CodeCommit => Self::CodeCommit(CodeCommitId::from_uuid(id)),
            NodeKind::Run => Self::Run(RunId::from_uuid(id)),
            NodeKind::ModelVersion => Self::ModelVersion(ModelVersionId::from_uuid(id)),
            NodeKind::Deployment => Self::Deployment(DeploymentId::from_uuid(id)),
            NodeKind::Job => Self::Job(JobId::from_uuid(id)),
        }
    }

    pub fn kind(self) -> NodeKind {
        match self {
            Self::DatasetVersion(_) => NodeKind::DatasetVersion,
            Self::CodeCommit(_) => NodeKind::CodeCommit,
            Self::Run(_) => NodeKind::Run,
            Self::ModelVersion(_) => NodeKind::ModelVersion,
            Self::Deployment(_) => NodeKind::Deployment,
            Self::Job(_) => NodeKind::Job,
        }
    }

    /// The row's id, untyped: what the edge columns and the recursive walks hold.
    pub fn uuid(self) -> Uuid {
        match self {
            Self::DatasetVersion(id) => id.uuid(),
            Self::CodeCommit(id) => id.uuid(),
            Self::Run(id) => id.uuid(),
            Self::ModelVersion(id) => id.uuid(),
            Self::Deployment(id) => id.uuid(),
            Self::Job(id) => id.uuid(),
        }
    }
}

/// The typed id of each kind of node.
pub trait NodeId: TypedId {
    const KIND: NodeKind;
}

impl NodeId for DatasetVersionId {
    const KIND: NodeKind = NodeKind::DatasetVersion;
}

impl NodeId for CodeCommitId {
    const KIND: NodeKind = NodeKind::CodeCommit;
}

impl NodeId for RunId {
    const KIND: NodeKind = NodeKind::Run;
}

impl NodeId for ModelVersionId {
    const KIND: NodeKind = NodeKind::ModelVersion;
}

impl NodeId for DeploymentId {
    const KIND: NodeKind = NodeKind::Deployment;
}

impl NodeId for JobId {
    const KIND: NodeKind = NodeKind::Job;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
#[graphql(name = "LineageDirection")]
pub enum Direction {
    Upstream,
    Downstream,
}

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = lineage_edges)]
pub struct Edge {
    pub id: LineageEdgeId,
    pub from_kind: NodeKind,
    // Untyped: an edge's ends are rows of any of the six node tables; `from()` and `to()` give
    // them their type.
    pub from_id: Uuid,
    pub to_kind: NodeKind,
    pub to_id: Uuid,
    pub relation: String,
    pub created_at: DateTime<Utc>,
}

impl Edge {
    pub fn from(&self) -> NodeRef {
        NodeRef::new(self.from_kind, self.from_id)
    }

    pub fn to(&self) -> NodeRef {
        NodeRef::new(self.to_kind, self.to_id)
    }
}

#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<NodeRef>,
    pub edges: Vec<Edge>,
}

impl Graph {
    /// The ids of the graph's nodes of one kind, e.g. `graph.ids::<RunId>()`, in node order.
    pub fn ids<T: NodeId>(&self) -> Vec<T> {
        ids_of(&self.nodes)
    }
}

/// The ids of the nodes of one kind, e.g. `ids_of::<RunId>(&nodes)`, in order.
pub fn ids_of<T: NodeId>(nodes: &[NodeRef]) -> Vec<T> {
    nodes
        .iter()
        .filter(|n| n.kind() == T::KIND)
        .map(|n| T::from_uuid(n.uuid()))
        .collect()
}

/// The project a node belongs to (`None` for code commits, which are shared), or NOT_FOUND.
pub async fn node_project(conn: &mut Conn, node: NodeRef) -> Result<Option<ProjectId>> {
    let project: Option<ProjectId> = match node {
        NodeRef::CodeCommit(id) => {
            let exists: bool = diesel::select(diesel::dsl::exists(code_commits::table.find(id)))
                .get_result(conn)
                .await?;
            return if exists {
                Ok(None)
            } else {
                Err(Error::not_found(format!("no code commit with id {id}")))
            };
        }
        NodeRef::DatasetVersion(id) => dataset_versions::table
            .inner_join(datasets::table)
            .filter(dataset_versions::id.eq(id))
            .select(datasets::project_id)
            .first(conn)
            .await
            .optional()?,
        NodeRef::Run(id) => runs::table
            .find(id)
            .select(runs::project_id)
            .first(conn)
            .await
            .optional()?,
        NodeRef::ModelVersion(id) => model_versions::table
            .inner_join(models::table)
            .filter(model_versions::id.eq(id))
            .select(models::project_id)
            .first(conn)
            .await
            .optional()?,
        NodeRef::Deployment(id) => deployments::table
            .inner_join(model_versions::table.inner_join(models::table))
            .filter(deployments::id.eq(id))
            .select(models::project_id)
            .first(conn)
            .await
            .optional()?,
        NodeRef::Job(id) => jobs::table
            .find(id)
            .select(jobs::project_id)
            .first(conn)
            .await
            .optional()?,
    };
    match project {
        Some(p) => Ok(Some(p)),
        None => Err(missing_node(node)),
    }
}

fn missing_node(node: NodeRef) -> Error {
    Error::not_found(format!(
        "no {} with id {}",
        node.kind().as_str().replace('_', " "),
        node.uuid()
    ))
}

/// Checks the caller's role in the node's project; a node of a project the caller cannot read
/// answers like a missing node.
async fn authorize_in(
    conn: &mut Conn,
    actor: &Actor,
    node: NodeRef,
    project: ProjectId,
    needed: Role,
) -> Result<()> {
    projects::authorize(conn, actor, project, needed)
        .await
        .map_err(projects::hiding(|| missing_node(node)))
}

/// Checks that the node exists and the caller holds `needed` in its project.
pub async fn authorize_node(
    conn: &mut Conn,
    actor: &Actor,
    node: NodeRef,
    needed: Role,
) -> Result<()> {
    match node_project(conn, node).await? {
        Some(project) => authorize_in(conn, actor, node, project, needed).await,
        None => Ok(()),
    }
}

/// [`authorize_node`] for many dataset versions at once: two statements however many there are
/// (one per version was most of a run start's statements). The first version, in the order
/// given, that is missing or in a project the caller cannot read is the one refused, answered
/// like a missing version.
pub async fn authorize_dataset_versions(
    conn: &mut Conn,
    actor: &Actor,
    ids: &[DatasetVersionId],
    needed: Role,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let found: std::collections::HashMap<DatasetVersionId, ProjectId> = dataset_versions::table
        .inner_join(datasets::table)
        .filter(dataset_versions::id.eq_any(ids))
        .select((dataset_versions::id, datasets::project_id))
        .load::<(DatasetVersionId, ProjectId)>(conn)
        .await?
        .into_iter()
        .collect();
    let mut homes: Vec<ProjectId> = found.values().copied().collect();
    homes.sort();
    homes.dedup();
    let roles = projects::roles_in(conn, actor, &homes).await?;
    for id in ids {
        let node = NodeRef::DatasetVersion(*id);
        let project = found.get(id).ok_or_else(|| missing_node(node))?;
        projects::require(roles.get(project).copied(), needed)
            .map_err(projects::hiding(|| missing_node(node)))?;
    }
    Ok(())
}

/// Records edges from a node created in this same transaction to each of `to`, in one statement.
/// Such a node has no incoming edges yet, so no edge can close a cycle. The future borrows
/// nothing of the connection, so it can go out with other statements (see `run_keys::record`).
pub fn record_new_node_edges(
    conn: &mut Conn,
    from: NodeRef,
    to: &[(NodeRef, &'static str)],
) -> BoxFuture<'static, Result<()>> {
    let edges: Vec<(NodeRef, NodeRef, &'static str)> = to
        .iter()
        .map(|(to, relation)| (from, *to, *relation))
        .collect();
    record_new_edges(conn, &edges)
}

/// [`record_new_node_edges`] for many new nodes at once: each edge `(from, to, relation)` leaves
/// a node created in this same transaction. One statement.
pub fn record_new_edges(
    conn: &mut Conn,
    edges: &[(NodeRef, NodeRef, &'static str)],
) -> BoxFuture<'static, Result<()>> {
    if edges.is_empty() {
        return Box::pin(std::future::ready(Ok(())));
    }
    let rows: Vec<NewEdge<'static>> = edges
        .iter()
        .map(|(from, to, relation)| new_edge(*from, *to, relation))
        .collect();
    let count = rows.len();
    let insert = execute_rows(
        conn,
        diesel::insert_into(lineage_edges::table).values(rows),
        count,
    );
    Box::pin(async move {
        insert.await?;
        Ok(())
    })
}

/// Records an edge whose `from` node was created in this same transaction: such a node has no
/// incoming edges yet, so the edge cannot close a cycle.
pub async fn record_new_node_edge(
    conn: &mut Conn,
    from: NodeRef,
    to: NodeRef,
    relation: &str,
) -> Result<Edge> {
    insert_edge(conn, from, to, relation).await
}

/// The row of a new edge `from —relation→ to`.
type NewEdge<'a> = (
    diesel::dsl::Eq<lineage_edges::id, LineageEdgeId>,
    diesel::dsl::Eq<lineage_edges::from_kind, NodeKind>,
    diesel::dsl::Eq<lineage_edges::from_id, Uuid>,
    diesel::dsl::Eq<lineage_edges::to_kind, NodeKind>,
    diesel::dsl::Eq<lineage_edges::to_id, Uuid>,
    diesel::dsl::Eq<lineage_edges::relation, &'a str>,
);

fn new_edge(from: NodeRef, to: NodeRef, relation: &str) -> NewEdge<'_> {
    (
        lineage_edges::id.eq(LineageEdgeId::generate()),
        lineage_edges::from_kind.eq(from.kind()),
        lineage_edges::from_id.eq(from.uuid()),
        lineage_edges::to_kind.eq(to.kind()),
        lineage_edges::to_id.eq(to.uuid()),
        lineage_edges::relation.eq(relation),
    )
}

async fn insert_edge(conn: &mut Conn, from: NodeRef, to: NodeRef, relation: &str) -> Result<Edge> {
    Ok(diesel::insert_into(lineage_edges::table)
        .values(new_edge(from, to, relation))
        .returning(Edge::as_returning())
        .get_result(conn)
        .await?)
}

/// Records `from —relation→ to` between nodes that may already have edges (lineage reported by
/// a pipeline, where a run's later events add to it): nothing happens when the edge exists, and
/// an edge that would close a cycle is refused with CONFLICT. Authorization and the audit entry
/// are the caller's. Answers whether an edge was added.
pub async fn connect(conn: &mut Conn, from: NodeRef, to: NodeRef, relation: &str) -> Result<bool> {
    if edge_exists(conn, from, to, relation).await? {
        return Ok(false);
    }
    if from.uuid() == to.uuid() {
        return Err(Error::conflict(
            "a node cannot depend on itself (that is a cycle)",
        ));
    }
    refuse_cycle(conn, from, to, relation).await?;
    insert_edge(conn, from, to, relation).await?;
    Ok(true)
}

/// The dataset versions a run consumed, by dataset (the newest where it read several of one).
pub async fn consumed_versions(
    conn: &mut Conn,
    run: RunId,
) -> Result<std::collections::HashMap<DatasetId, DatasetVersionId>> {
    let read: Vec<(DatasetId, DatasetVersionId)> = lineage_edges::table
        .inner_join(dataset_versions::table.on(dataset_versions::id.eq(lineage_edges::to_id)))
        .filter(lineage_edges::from_id.eq(run.uuid()))
        .filter(lineage_edges::relation.eq("consumed"))
        .order(dataset_versions::version)
        .select((dataset_versions::dataset_id, dataset_versions::id))
        .load(conn)
        .await?;
    Ok(read.into_iter().collect())
}

/// Whether the edge `from —relation→ to` is recorded.
pub async fn edge_exists(
    conn: &mut Conn,
    from: NodeRef,
    to: NodeRef,
    relation: &str,
) -> Result<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        lineage_edges::table
            .filter(lineage_edges::from_id.eq(from.uuid()))
            .filter(lineage_edges::to_id.eq(to.uuid()))
            .filter(lineage_edges::relation.eq(relation)),
    ))
    .get_result(conn)
    .await?)
}

/// Takes the lineage lock, so two concurrent edges cannot together close a cycle that neither
/// sees alone, then refuses `from —relation→ to` with CONFLICT if `from` is upstream of `to`.
async fn refuse_cycle(conn: &mut Conn, from: NodeRef, to: NodeRef, relation: &str) -> Result<()> {
    Prepared(diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtext('custody.lineage'))",
    ))
    .execute(conn)
    .await?;
    if descends_from(conn, to.uuid(), from.uuid()).await? {
        return Err(Error::conflict(format!(
            "{} {} —{relation}→ {} {} would close a cycle in the lineage graph",
            from.kind().as_str(),
            from.uuid(),
            to.kind().as_str(),
            to.uuid()
        )));
    }
    Ok(())
}

/// An explicit edge `from —relation→ to` (from depends on to). Refuses an edge that would close a
/// cycle. Explicit links serialise on an advisory lock so two concurrent links cannot together
/// form a cycle that neither sees alone.
pub async fn link(
    conn: &mut Conn,
    actor: &Actor,
    from: NodeRef,
    to: NodeRef,
    relation: &str,
) -> Result<Edge> {
    if !is_relation_name(relation) {
        return Err(Error::invalid(format!(
            "relation `{relation}` is not valid: use lowercase letters, digits and `_`, starting with a letter (at most 64)"
        )));
    }
    if from.uuid() == to.uuid() {
        return Err(Error::conflict(
            "a node cannot be linked to itself (that is a cycle)",
        ));
    }
    let from_project = node_project(conn, from).await?;
    let to_project = node_project(conn, to).await?;
    match (from_project, to_project) {
        (Some(p), _) => authorize_in(conn, actor, from, p, Role::Contributor).await?,
        (None, Some(p)) => authorize_in(conn, actor, to, p, Role::Contributor).await?,
        (None, None) => {
            return Err(Error::invalid(
                "an edge needs at least one node that belongs to a project",
            ));
        }
    }
    if let (Some(_), Some(p)) = (from_project, to_project) {
        authorize_in(conn, actor, to, p, Role::Viewer).await?;
    }
    refuse_cycle(conn, from, to, relation).await?;
    let exists = edge_exists(conn, from, to, relation).await?;
    if exists {
        return Err(Error::conflict("this lineage edge already exists"));
    }
    let edge = insert_edge(conn, from, to, relation).await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "lineage.link",
            project_id: from_project.or(to_project),
            subject_kind: "lineage_edge",
            subject_id: edge.id.to_string(),
            before: None,
            after: Some(json!({
                "from": {"kind": from.kind().as_str(), "id": from.uuid()},
                "to": {"kind": to.kind().as_str(), "id": to.uuid()},
                "relation": relation,
            })),
        },
    )
    .await?;
    Ok(edge)
}

fn is_relation_name(relation: &str) -> bool {
    let mut chars = relation.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && relation.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[derive(QueryableByName)]
struct Reached {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    reached: bool,
}

/// Whether `node` is downstream of `ancestor` (or is `ancestor`). Untyped ids: the walk crosses
/// kinds. It walks down from `ancestor`: an edge being added starts at the newer node (a run
/// reading a table, a version produced by a run), whose descendants are few, where the other
/// end's ancestry can be the whole history of a pipeline (walked up, 20 ms at a million edges,
/// under the lineage lock that every new edge waits for).
async fn descends_from(conn: &mut Conn, node: Uuid, ancestor: Uuid) -> Result<bool> {
    let row: Reached = Prepared(
        diesel::sql_query(
            "WITH RECURSIVE down(id) AS (
             SELECT $1::uuid
             UNION
             SELECT e.from_id FROM lineage_edges e JOIN down ON e.to_id = down.id
         )
         SELECT EXISTS (SELECT 1 FROM down WHERE id = $2) AS reached",
        )
        .bind::<SqlUuid, _>(ancestor)
        .bind::<SqlUuid, _>(node),
    )
    .get_result(conn)
    .await?;
    Ok(row.reached)
}

/// Everything downstream of `start` within `depth` edges, nearest first, for a caller who may
/// read `start` ("which models are built on this table?"). Readers filter the nodes by project,
/// and add the jobs of the runs found ([`affected_jobs`]: the pipelines affected; a job is
/// upstream of its runs, so no walk down reaches it).
pub async fn impact(
    conn: &mut Conn,
    actor: &Actor,
    start: NodeRef,
    depth: i32,
) -> Result<Vec<NodeRef>> {
    check_depth(depth)?;
    authorize_node(conn, actor, start, Role::Viewer).await?;
    descendants(conn, start, depth).await
}

/// The pipelines an impact affects: the jobs among `impacted` (in their order), then the jobs
/// of its runs (`run —run_of→ job`), each once.
pub async fn affected_jobs(conn: &mut Conn, impacted: &[NodeRef]) -> Result<Vec<JobId>> {
    let mut jobs: Vec<JobId> = ids_of(impacted);
    let mut listed: HashSet<JobId> = jobs.iter().copied().collect();
    let runs: Vec<RunId> = ids_of(impacted);
    for of_run in targets_of::<RunId, JobId>(conn, &runs, "run_of")
        .await?
        .into_values()
    {
        jobs.extend(of_run.into_iter().filter(|job| listed.insert(*job)));
    }
    Ok(jobs)
}

fn check_depth(depth: i32) -> Result<()> {
    if (0..=MAX_DEPTH).contains(&depth) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "depth must be between 0 and {MAX_DEPTH}"
        )))
    }
}

/// Every node within `depth` edges of `start` in one direction, and the edges walked.
pub async fn traverse(
    conn: &mut Conn,
    actor: &Actor,
    start: NodeRef,
    direction: Direction,
    depth: i32,
) -> Result<Graph> {
    check_depth(depth)?;
    authorize_node(conn, actor, start, Role::Viewer).await?;
    let graph = walk(conn, start, direction, depth).await?;
    visible_to(conn, actor, graph).await
}

/// Keeps the nodes the caller may read (lineage crosses projects: a dataset of one project feeds
/// runs of another) and the edges between them, so a traversal never reveals what a project's
/// members cannot see. Code commits are shared and always visible.
async fn visible_to(conn: &mut Conn, actor: &Actor, graph: Graph) -> Result<Graph> {
    if actor.is_admin && actor.project_scope.is_none() {
        return Ok(graph);
    }
    let readable: HashSet<ProjectId> = projects::readable_ids(conn, actor, None)
        .await?
        .into_iter()
        .collect();
    let owner = owners(conn, &graph.nodes).await?;
    let hidden: HashSet<NodeRef> = owner
        .into_iter()
        .filter(|(_, project)| !readable.contains(project))
        .map(|(node, _)| node)
        .collect();
    Ok(Graph {
        nodes: graph
            .nodes
            .into_iter()
            .filter(|n| !hidden.contains(n))
            .collect(),
        edges: graph
            .edges
            .into_iter()
            .filter(|e| !hidden.contains(&e.from()) && !hidden.contains(&e.to()))
            .collect(),
    })
}

/// The project of each of `nodes` that has one (code commits are shared and have none), kind by
/// kind in one statement each; nodes that do not exist are left out.
pub async fn owners(conn: &mut Conn, nodes: &[NodeRef]) -> Result<Vec<(NodeRef, ProjectId)>> {
    let mut owner: Vec<(NodeRef, ProjectId)> = Vec::with_capacity(nodes.len());
    owner.extend(
        dataset_versions::table
            .inner_join(datasets::table)
            .filter(dataset_versions::id.eq_any(ids_of::<DatasetVersionId>(nodes)))
            .select((dataset_versions::id, datasets::project_id))
            .load::<(DatasetVersionId, ProjectId)>(conn)
            .await?
            .into_iter()
            .map(|(id, project)| (NodeRef::DatasetVersion(id), project)),
    );
    owner.extend(
        runs::table
            .filter(runs::id.eq_any(ids_of::<RunId>(nodes)))
            .select((runs::id, runs::project_id))
            .load::<(RunId, ProjectId)>(conn)
            .await?
            .into_iter()
            .map(|(id, project)| (NodeRef::Run(id), project)),
    );
    owner.extend(
        model_versions::table
            .inner_join(models::table)
            .filter(model_versions::id.eq_any(ids_of::<ModelVersionId>(nodes)))
            .select((model_versions::id, models::project_id))
            .load::<(ModelVersionId, ProjectId)>(conn)
            .await?
            .into_iter()
            .map(|(id, project)| (NodeRef::ModelVersion(id), project)),
    );
    owner.extend(
        deployments::table
            .inner_join(model_versions::table.inner_join(models::table))
            .filter(deployments::id.eq_any(ids_of::<DeploymentId>(nodes)))
            .select((deployments::id, models::project_id))
            .load::<(DeploymentId, ProjectId)>(conn)
            .await?
            .into_iter()
            .map(|(id, project)| (NodeRef::Deployment(id), project)),
    );
    owner.extend(
        jobs::table
            .filter(jobs::id.eq_any(ids_of::<JobId>(nodes)))
            .select((jobs::id, jobs::project_id))
            .load::<(JobId, ProjectId)>(conn)
            .await?
            .into_iter()
            .map(|(id, project)| (NodeRef::Job(id), project)),
    );
    Ok(owner)
}

/// The traversal itself, without authorization (for server-side documents such as policy input).
///
/// Breadth first, one statement per level: each node is expanded once, at its shortest distance,
/// however many paths reach it (a recursive CTE expands a node once per distinct depth it is
/// reached at, which on a graph with fan-in and fan-out multiplies the work). Every edge leaving
/// a node closer than `depth` is returned; those edges all end inside the walked set.
pub async fn walk(
    conn: &mut Conn,
    start: NodeRef,
    direction: Direction,
    depth: i32,
) -> Result<Graph> {
    let mut graph = Graph {
        nodes: vec![start],
        edges: Vec::new(),
    };
    let mut seen = HashSet::from([start]);
    let mut frontier = vec![start.uuid()];
    for _ in 0..depth {
        if frontier.is_empty() {
            break;
        }
        let level = edges_leaving(conn, &frontier, direction).await?;
        frontier.clear();
        for edge in level {
            let far = match direction {
                Direction::Upstream => edge.to(),
                Direction::Downstream => edge.from(),
            };
            if seen.insert(far) {
                graph.nodes.push(far);
                frontier.push(far.uuid());
            }
            graph.edges.push(edge);
        }
    }
    graph.edges.sort_by_key(|e| e.id);
    Ok(graph)
}

/// The edges leaving any of `nodes` in one direction (upstream: the edges they point along;
/// downstream: the edges pointing at them).
async fn edges_leaving(conn: &mut Conn, nodes: &[Uuid], direction: Direction) -> Result<Vec<Edge>> {
    const UPSTREAM: &str = "SELECT id, from_kind, from_id, to_kind, to_id, relation, created_at
         FROM lineage_edges WHERE from_id = ANY($1)";
    const DOWNSTREAM: &str = "SELECT id, from_kind, from_id, to_kind, to_id, relation, created_at
         FROM lineage_edges WHERE to_id = ANY($1)";
    let sql = match direction {
        Direction::Upstream => UPSTREAM,
        Direction::Downstream => DOWNSTREAM,
    };
    Ok(
        Prepared(diesel::sql_query(sql).bind::<Array<SqlUuid>, _>(nodes))
            .load(conn)
            .await?,
    )
}

/// Everything downstream of `start` within `depth` edges (not `start` itself), each node once,
/// nearest first. Nodes only: an impact report lists what descends, not every path to it.
pub async fn descendants(conn: &mut Conn, start: NodeRef, depth: i32) -> Result<Vec<NodeRef>> {
    #[derive(QueryableByName)]
    struct Source {
        #[diesel(sql_type = diesel::sql_types::Text)]
        from_kind: NodeKind,
        #[diesel(sql_type = SqlUuid)]
        from_id: Uuid,
    }
    let mut seen = HashSet::from([start]);
    let mut found = Vec::new();
    let mut frontier = vec![start.uuid()];
    for _ in 0..depth {
        if frontier.is_empty() {
            break;
        }
        let level: Vec<Source> = Prepared(
            diesel::sql_query(
                // `= ANY`, unlike the fetches by id (`edge_ends`): a bitmap scan of the covering
                // index (to_id) INCLUDE (from_kind, from_id) beat one probe per node of a wide
                // frontier (56 against 77 ms over the 21 levels of a 10,000-node impact).
                "SELECT DISTINCT from_kind, from_id FROM lineage_edges WHERE to_id = ANY($1)",
            )
            .bind::<Array<SqlUuid>, _>(&frontier),
        )
        .load(conn)
        .await?;
        frontier.clear();
        for source in level {
            let node = NodeRef::new(source.from_kind, source.from_id);
            if seen.insert(node) {
                found.push(node);
                frontier.push(node.uuid());
            }
        }
    }
    Ok(found)
}

/// The targets of kind `T` of `from —relation→ …` edges for many nodes of kind `F` at once
/// (e.g. the dataset versions runs consumed).
pub async fn targets_of<F: NodeId + Ord, T: NodeId>(
    conn: &mut Conn,
    from_ids: &[F],
    relation: &str,
) -> Result<BTreeMap<F, Vec<T>>> {
    let ends = edge_ends(conn, from_ids, End::From, relation, T::KIND).await?;
    Ok(group(ends))
}

/// The sources of kind `F` of `… —relation→ to` edges for many nodes of kind `T` at once (the
/// reverse of [`targets_of`]: e.g. the runs that consumed dataset versions).
pub async fn sources_of<T: NodeId + Ord, F: NodeId>(
    conn: &mut Conn,
    to_ids: &[T],
    relation: &str,
) -> Result<BTreeMap<T, Vec<F>>> {
    let ends = edge_ends(conn, to_ids, End::To, relation, F::KIND).await?;
    Ok(group(ends))
}

/// Which end of an edge the given nodes are.
enum End {
    From,
    To,
}

/// The `relation` edges at the given end of each of `nodes` whose other end is of kind `other`,
/// in the order they were recorded: (the given node, the other end).
///
/// One index probe per node, however many (an impact's thousands of runs): for `= ANY($1)`, and
/// for a plain join to `unnest` alike, the planner costs probes above a pass over every edge, and
/// with 5,000 runs it sorted every `run_of` edge (111 ms where the probes take 50). A lateral
/// subquery kept from flattening (`OFFSET 0`) can only be probed.
async fn edge_ends<N: NodeId + Ord>(
    conn: &mut Conn,
    nodes: &[N],
    end: End,
    relation: &str,
    other: NodeKind,
) -> Result<Vec<(Uuid, Uuid)>> {
    #[derive(QueryableByName)]
    struct Ends {
        #[diesel(sql_type = SqlUuid)]
        near: Uuid,
        #[diesel(sql_type = SqlUuid)]
        far: Uuid,
    }
    // Each node once: a node named twice would find its edges twice.
    let mut ids: Vec<Uuid> = nodes.iter().map(|n| n.uuid()).collect();
    ids.sort();
    ids.dedup();
    let sql = match end {
        End::From => {
            "SELECT x.from_id AS near, x.to_id AS far FROM unnest($1::uuid[]) AS n(id)
             CROSS JOIN LATERAL (SELECT * FROM lineage_edges e WHERE e.from_id = n.id
                 AND e.relation = $2 AND e.from_kind = $3 AND e.to_kind = $4 OFFSET 0) x
             ORDER BY x.id"
        }
        End::To => {
            "SELECT x.to_id AS near, x.from_id AS far FROM unnest($1::uuid[]) AS n(id)
             CROSS JOIN LATERAL (SELECT * FROM lineage_edges e WHERE e.to_id = n.id
                 AND e.relation = $2 AND e.to_kind = $3 AND e.from_kind = $4 OFFSET 0) x
             ORDER BY x.id"
        }
    };
    let rows: Vec<Ends> = Prepared(
        diesel::sql_query(sql)
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Text, _>(relation)
            .bind::<Text, _>(N::KIND.as_str())
            .bind::<Text, _>(other.as_str()),
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.near, r.far)).collect())
}

fn group<K: NodeId + Ord, V: NodeId>(ends: Vec<(Uuid, Uuid)>) -> BTreeMap<K, Vec<V>> {
    let mut map: BTreeMap<K, Vec<V>> = BTreeMap::new();
    for (near, far) in ends {
        map.entry(K::from_uuid(near))
            .or_default()
            .push(V::from_uuid(far));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_names() {
        assert!(is_relation_name("evaluated_on"));
        assert!(!is_relation_name("Evaluated"));
        assert!(!is_relation_name("1st"));
        assert!(!is_relation_name(""));
        assert!(!is_relation_name("has space"));
    }

    #[test]
    fn kinds_round_trip() {
        assert_eq!(NodeKind::ALL.len(), 6);
        for kind in NodeKind::ALL {
            assert_eq!(kind.as_str().parse::<NodeKind>(), Ok(*kind));
        }
        assert!("dataset".parse::<NodeKind>().is_err());
    }
}
