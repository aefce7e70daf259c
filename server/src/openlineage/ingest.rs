//! Applying one OpenLineage event to the registry, in the caller's transaction (the mapping is
//! documented in the module above).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::spec::EventKind;
use super::Namespaces;
use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::code::{self, NewCommit};
use crate::datasets::{self, Dataset, NewVersion};
use crate::db::schema::{
    dataset_versions, datasets as datasets_table, openlineage_datasets, openlineage_runs,
    runs as runs_table,
};
use crate::db::{execute_rows, Conn};
use crate::error::{Error, Result};
use crate::ids::{CodeCommitId, DatasetId, DatasetVersionId, JobId, ProjectId, RunId, UserId};
use crate::jobs::{self, Job};
use crate::lineage::{self, NodeRef};
use crate::projects::{self, Role};
use crate::runs::{self, NewRun, RunStatus};

/// The most input and output datasets one event may name: each is a transaction's worth of work.
const MAX_DATASETS: usize = 1_000;

// What Custody reads of an event (the schema has been checked; unknown facets are ignored).

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_time: DateTime<Utc>,
    pub event_type: Option<EventType>,
    pub run: Option<RunPart>,
    pub job: Option<JobPart>,
    #[serde(default)]
    pub inputs: Vec<DatasetPart>,
    #[serde(default)]
    pub outputs: Vec<DatasetPart>,
    pub dataset: Option<DatasetPart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Start,
    Running,
    Complete,
    Abort,
    Fail,
    Other,
}

impl EventType {
    /// The status a run ends in on this event, if it ends.
    fn ends_as(self) -> Option<RunStatus> {
        match self {
            EventType::Complete => Some(RunStatus::Finished),
            EventType::Fail => Some(RunStatus::Failed),
            EventType::Abort => Some(RunStatus::Killed),
            EventType::Start | EventType::Running | EventType::Other => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPart {
    pub run_id: Uuid,
    #[serde(default)]
    pub facets: RunFacets,
}

#[derive(Debug, Default, Deserialize)]
pub struct RunFacets {
    pub parent: Option<ParentFacet>,
}

#[derive(Debug, Deserialize)]
pub struct ParentFacet {
    pub run: ParentRun,
    pub job: JobName,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRun {
    pub run_id: Uuid,
}

#[derive(Debug, Deserialize)]
pub struct JobName {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct JobPart {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub facets: JobFacets,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFacets {
    pub source_code_location: Option<SourceCodeLocation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceCodeLocation {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub repo_url: Option<String>,
    pub version: Option<String>,
    pub branch: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DatasetPart {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub facets: DatasetFacets,
}

#[derive(Debug, Default, Deserialize)]
pub struct DatasetFacets {
    pub version: Option<VersionFacet>,
    /// Custody's own facet: the SHA-256 of the dataset's content, when the producer knows it.
    #[serde(rename = "custodyContentHash")]
    pub content_hash: Option<ContentHashFacet>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionFacet {
    pub dataset_version: String,
}

#[derive(Debug, Deserialize)]
pub struct ContentHashFacet {
    pub sha256: String,
}

/// What an applied event did, as the endpoint answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// False when the same event had been applied before (nothing changed).
    pub applied: bool,
    pub job_id: Option<JobId>,
    pub run_id: Option<RunId>,
    pub inputs: Vec<DatasetVersionId>,
    pub outputs: Vec<DatasetVersionId>,
}

/// A project events write into: its id and name (the domain functions take names).
#[derive(Debug, Clone)]
struct Target {
    id: ProjectId,
    name: String,
}

/// What a batch of events finds before any of them is applied, in one round trip (see
/// [`Known::find`]): which events are new, and the jobs, runs, datasets and latest dataset
/// versions they name. Applying an event keeps it current: what an event records, the next
/// event of the batch finds here. So what it lacks does not exist.
#[derive(Default)]
pub struct Known {
    // Behind mutexes, not cells: events are applied in a future that must be `Send`, so this
    // must be `Sync`. Nothing contends for them (events of a batch are applied one at a time).
    /// The digests of the events not applied before (inserted into `openlineage_events` now).
    fresh: Mutex<HashSet<String>>,
    jobs: Mutex<HashMap<(String, String), Job>>,
    /// The client's `runId` → the Custody run and its job.
    runs: Mutex<HashMap<Uuid, (RunId, JobId)>>,
    datasets: Mutex<HashMap<(String, String), Dataset>>,
    /// Each known dataset's latest version, for inputs named without one.
    latest: Mutex<HashMap<DatasetId, DatasetVersionId>>,
    /// What each known run (by the client's `runId`) has recorded, for its later events; taken
    /// out by an event of the run applied one by one (see [`Ingest::plan`]).
    run_states: Mutex<HashMap<Uuid, RunState>>,
    /// Run events planned and not yet recorded (see [`Ingest::plan`]).
    planned: Mutex<Vec<Planned>>,
    /// Projects the batch's events touched: their names and each sender's membership there (if
    /// the project exists), read once per project and sender rather than once per object and
    /// event (a pipeline's events name a few projects). Nothing an event does changes them.
    memberships: Mutex<HashMap<(Option<UserId>, ProjectId), ProjectSeen>>,
}

/// A project's name and a user's membership there; `None`: no such project.
type ProjectSeen = Option<(String, Option<Role>)>;

/// What a known run has recorded: enough to plan its later events without a lookup.
#[derive(Clone, Default)]
struct RunState {
    running: bool,
    /// The version of each dataset it read (the newest, where it read several).
    read: HashMap<DatasetId, DatasetVersionId>,
    /// The datasets it wrote a version of.
    wrote: HashSet<DatasetId>,
}

/// A run event planned with nothing left to look up: everything it records, recorded with the
/// batch's other such events by [`Known::record_planned`].
struct Planned {
    actor: Actor,
    job_id: JobId,
    openlineage_run_id: Uuid,
    run: RunPlan,
    outputs: Vec<datasets::Reported>,
    /// The event's own audit entry (`openlineage.event`).
    event: Change<'static>,
}

/// The run of a planned event: started by it, or known and perhaps ended by it.
enum RunPlan {
    New(runs::Reported),
    Known {
        id: RunId,
        ending: Option<runs::Ending>,
    },
}

impl RunPlan {
    fn id(&self) -> RunId {
        match self {
            RunPlan::New(run) => run.id,
            RunPlan::Known { id, .. } => *id,
        }
    }
}

/// Locks a memo (nothing holds one across an await, so a poisoned one is still consistent).
fn memo<T>(memo: &Mutex<T>) -> MutexGuard<'_, T> {
    memo.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Known {
    /// Records the events' digests (each event is applied once: a digest already recorded, or
    /// twice in the batch, is a replay) and finds everything they name, in four statements sent
    /// together (a lookup per object was most of an event's statements). Nothing is locked
    /// here, before the events are authorized: each dataset is locked as its version is
    /// numbered, and a batch that deadlocks with another doing so in the other order is
    /// applied again event by event.
    pub async fn find(conn: &mut Conn, events: &[(&str, &Event)]) -> Result<Known> {
        let digests: Vec<&str> = events.iter().map(|(digest, _)| *digest).collect();
        let (mut job_namespaces, mut job_names, mut run_ids) = (Vec::new(), Vec::new(), Vec::new());
        let (mut namespaces, mut names) = (Vec::new(), Vec::new());
        for (_, event) in events {
            let parent = event.run.as_ref().and_then(|r| r.facets.parent.as_ref());
            for job in event
                .job
                .as_ref()
                .map(|j| (&j.namespace, &j.name))
                .into_iter()
                .chain(parent.map(|p| (&p.job.namespace, &p.job.name)))
            {
                job_namespaces.push(job.0.as_str());
                job_names.push(job.1.as_str());
            }
            run_ids.extend(event.run.as_ref().map(|r| r.run_id));
            run_ids.extend(parent.map(|p| p.run.run_id));
            for part in event
                .inputs
                .iter()
                .chain(&event.outputs)
                .chain(&event.dataset)
            {
                namespaces.push(part.namespace.as_str());
                names.push(part.name.as_str());
            }
        }
        type Texts = diesel::sql_types::Array<diesel::sql_types::Text>;
        #[derive(QueryableByName)]
        struct Fresh {
            #[diesel(sql_type = diesel::sql_types::Text)]
            sha256: String,
        }
        #[derive(QueryableByName)]
        struct Named {
            #[diesel(sql_type = diesel::sql_types::Text)]
            ol_namespace: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            ol_name: String,
            #[diesel(embed)]
            dataset: Dataset,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
            latest: Option<DatasetVersionId>,
        }
        // Sent together; they run in this order, in the caller's transaction. (Boxed: the
        // futures of `load` are not `Send` for every lifetime the transaction's closure needs.)
        let fresh = crate::db::Prepared(
            diesel::sql_query(
                "INSERT INTO openlineage_events (sha256) SELECT unnest($1::text[])
                 ON CONFLICT DO NOTHING RETURNING sha256",
            )
            .bind::<Texts, _>(&digests),
        )
        .load::<Fresh>(conn)
        .boxed();
        // Exact (namespace, name) pairs: an event cannot make a lookup read more objects than
        // it names.
        let datasets = crate::db::Prepared(
            diesel::sql_query(
                "SELECT o.namespace AS ol_namespace, o.name AS ol_name, d.*,
                        (SELECT v.id FROM dataset_versions v WHERE v.dataset_id = d.id
                         ORDER BY v.version DESC LIMIT 1) AS latest
                 FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[])) AS w(namespace, name)
                 JOIN openlineage_datasets o ON o.namespace = w.namespace AND o.name = w.name
                 JOIN datasets d ON d.id = o.dataset_id",
            )
            .bind::<Texts, _>(&namespaces)
            .bind::<Texts, _>(&names),
        )
        .load::<Named>(conn)
        .boxed();
        let jobs = crate::db::Prepared(
            diesel::sql_query(
                "SELECT j.* FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]))
                   AS w(namespace, name)
                 JOIN jobs j ON j.namespace = w.namespace AND j.name = w.name",
            )
            .bind::<Texts, _>(&job_namespaces)
            .bind::<Texts, _>(&job_names),
        )
        .load::<Job>(conn)
        .boxed();
        #[derive(QueryableByName)]
        struct KnownRun {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            openlineage_run_id: Uuid,
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            run_id: RunId,
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            job_id: JobId,
            #[diesel(sql_type = diesel::sql_types::Text)]
            status: RunStatus,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            relation: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
            dataset_id: Option<DatasetId>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
            version_id: Option<DatasetVersionId>,
        }
        // Each known run with what it read and wrote (a row per version, oldest first).
        let runs = crate::db::Prepared(
            diesel::sql_query(
                "SELECT o.openlineage_run_id, o.run_id, o.job_id, r.status,
                        x.relation, x.dataset_id, x.version_id
                 FROM openlineage_runs o
                 JOIN runs r ON r.id = o.run_id
                 LEFT JOIN LATERAL (
                     SELECT 'consumed' AS relation, v.dataset_id, v.id AS version_id, v.version
                     FROM lineage_edges e JOIN dataset_versions v ON v.id = e.to_id
                     WHERE e.from_id = o.run_id AND e.relation = 'consumed'
                     UNION ALL
                     SELECT 'produced_by', v.dataset_id, v.id, v.version
                     FROM lineage_edges e JOIN dataset_versions v ON v.id = e.from_id
                     WHERE e.to_id = o.run_id AND e.relation = 'produced_by'
                 ) x ON true
                 WHERE o.openlineage_run_id = ANY($1)
                 ORDER BY x.version",
            )
            .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&run_ids),
        )
        .load::<KnownRun>(conn)
        .boxed();
        let (fresh, datasets, jobs, runs) =
            futures_util::future::try_join4(fresh, datasets, jobs, runs).await?;
        let known = Known::default();
        memo(&known.fresh).extend(fresh.into_iter().map(|f| f.sha256));
        for named in datasets {
            if let Some(latest) = named.latest {
                memo(&known.latest).insert(named.dataset.id, latest);
            }
            memo(&known.datasets).insert((named.ol_namespace, named.ol_name), named.dataset);
        }
        for job in jobs {
            memo(&known.jobs).insert((job.namespace.clone(), job.name.clone()), job);
        }
        for run in runs {
            memo(&known.runs).insert(run.openlineage_run_id, (run.run_id, run.job_id));
            let mut states = memo(&known.run_states);
            let state = states.entry(run.openlineage_run_id).or_default();
            state.running = run.status == RunStatus::Running;
            match (run.relation.as_deref(), run.dataset_id, run.version_id) {
                (Some("consumed"), Some(dataset), Some(version)) => {
                    state.read.insert(dataset, version);
                }
                (Some(_), Some(dataset), _) => {
                    state.wrote.insert(dataset);
                }
                _ => {}
            }
        }
        Ok(known)
    }

    /// Whether the event with this digest is applied now: the first time it is asked.
    fn first_time(&self, digest: &str) -> bool {
        memo(&self.fresh).remove(digest)
    }

    /// Records the planned events, a statement per table for all of them (their new runs, keys
    /// and `consumed` edges; the runs they end; their output versions; their OpenLineage
    /// bookkeeping rows and other edges), in one round trip; then their audit entries, event by
    /// event in the order they were planned, exactly as one by one. Called before an event that
    /// is applied one by one (it may read what they record) and at the end of the batch.
    pub async fn record_planned(&self, conn: &mut Conn) -> Result<()> {
        let planned = std::mem::take(&mut *memo(&self.planned));
        if planned.is_empty() {
            return Ok(());
        }
        let mut new_runs = Vec::new();
        let mut endings = Vec::new();
        let mut bookkeeping = Vec::new();
        let mut edges: Vec<(NodeRef, NodeRef, &'static str)> = Vec::new();
        for p in &planned {
            let run = NodeRef::Run(p.run.id());
            match &p.run {
                RunPlan::New(reported) => {
                    new_runs.push(reported.clone());
                    bookkeeping.push((
                        openlineage_runs::openlineage_run_id.eq(p.openlineage_run_id),
                        openlineage_runs::run_id.eq(reported.id),
                        openlineage_runs::job_id.eq(p.job_id),
                    ));
                    edges.push((run, NodeRef::Job(p.job_id), "run_of"));
                }
                RunPlan::Known { ending, .. } => endings.extend(ending.clone()),
            }
            edges.extend(
                p.outputs
                    .iter()
                    .map(|o| (NodeRef::DatasetVersion(o.id), run, "produced_by")),
            );
        }
        let versions: Vec<datasets::Reported> = planned
            .iter()
            .flat_map(|p| p.outputs.iter().cloned())
            .collect();
        // Polled together in this order (the runs before the rows that refer to them).
        let numbered = datasets::record_versions(conn, &versions);
        let recorded = runs::record_reported(conn, &new_runs);
        let ended = runs::record_endings(conn, &endings);
        let count = bookkeeping.len();
        let bookkeeping = (count > 0).then(|| {
            execute_rows(
                conn,
                diesel::insert_into(openlineage_runs::table).values(bookkeeping),
                count,
            )
        });
        let bookkeeping = async {
            if let Some(insert) = bookkeeping {
                insert.await?;
            }
            Ok::<_, Error>(())
        };
        let edges = lineage::record_new_edges(conn, &edges);
        let (numbers, (), ended, (), ()) =
            futures_util::try_join!(numbered, recorded, ended, bookkeeping, edges)?;
        let numbers: HashMap<DatasetVersionId, i32> = numbers.into_iter().collect();
        let ended: HashSet<RunId> = ended.into_iter().collect();
        super::PLANNED.inc_by(planned.len() as u64);
        for p in planned {
            let registered = p
                .outputs
                .iter()
                .map(|o| match numbers.get(&o.id) {
                    Some(number) => Ok(o.change(*number)),
                    // Another batch recorded a version of the same identity meanwhile: applied
                    // again one by one, the event finds it.
                    None => Err(Error::conflict(format!(
                        "a version of dataset {} was recorded concurrently",
                        o.dataset.id
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            // As one by one: the run starts, its outputs are registered, it ends, the event.
            let (started, ending) = match p.run {
                RunPlan::New(run) => {
                    let mut changes = run.changes().into_iter();
                    (changes.next(), changes.next())
                }
                RunPlan::Known { ending, .. } => (
                    None,
                    ending.filter(|e| ended.contains(&e.id)).map(|e| e.change()),
                ),
            };
            let in_order: Vec<Change<'static>> = started
                .into_iter()
                .chain(registered)
                .chain(ending)
                .chain(std::iter::once(p.event))
                .collect();
            for change in in_order {
                audit::record(conn, &p.actor, change).await?;
            }
        }
        Ok(())
    }

    /// What a known run has recorded, taken out of the memo: the event applied one by one that
    /// asks may change it, so the batch's later events of that run are applied one by one too.
    fn take_run_state(&self, openlineage_run_id: Uuid) -> Option<RunState> {
        memo(&self.run_states).remove(&openlineage_run_id)
    }
}

/// One event being applied: who sends it and how namespaces map to projects.
pub struct Ingest<'a> {
    actor: &'a Actor,
    namespaces: &'a Namespaces,
    /// The project named by the request (`?project=`), for namespaces no rule maps.
    default_project: Option<&'a str>,
    /// What the event's batch knows.
    known: &'a Known,
}

impl<'a> Ingest<'a> {
    pub fn new(
        actor: &'a Actor,
        namespaces: &'a Namespaces,
        default_project: Option<&'a str>,
        known: &'a Known,
    ) -> Self {
        Ingest {
            actor,
            namespaces,
            default_project,
            known,
        }
    }

    /// The project of an object the event names, the caller holding at least `needed` there;
    /// `hidden` is the refusal when it holds no role at all.
    async fn project_of(
        &self,
        conn: &mut Conn,
        project_id: ProjectId,
        needed: Role,
        hidden: impl Fn() -> Error,
    ) -> Result<Target> {
        let key = (self.actor.user_id, project_id);
        let known = memo(&self.known.memberships).get(&key).cloned();
        let found = match known {
            Some(known) => known,
            None => {
                let found =
                    projects::name_and_membership(conn, self.actor.user_id, project_id).await?;
                memo(&self.known.memberships).insert(key, found.clone());
                found
            }
        };
        let (name, membership) = found.ok_or_else(&hidden)?;
        // The role of this caller (its token's project scope, its server roles) in the project.
        let role = projects::role_given(self.actor, project_id, membership);
        projects::require(role, needed).map_err(projects::hiding(hidden))?;
        Ok(Target {
            id: project_id,
            name,
        })
    }

    /// Applies `event` (already checked against the schema, of `kind`), once: a replay of an
    /// applied event changes nothing.
    pub async fn apply(
        &self,
        conn: &mut Conn,
        digest: &str,
        kind: EventKind,
        event: &Event,
    ) -> Result<Outcome> {
        let first_time = self.known.first_time(digest);
        let mut outcome = Outcome {
            applied: first_time,
            job_id: None,
            run_id: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        if !first_time {
            return Ok(outcome);
        }
        if let Some(planned) = self.plan(conn, digest, kind, event).await? {
            return Ok(planned);
        }
        // Applied one by one from here: what earlier events planned is recorded first.
        self.known.record_planned(conn).await?;
        let project = match kind {
            EventKind::Run | EventKind::Job => {
                let part = event
                    .job
                    .as_ref()
                    .ok_or_else(|| Error::invalid("the event has no job"))?;
                let (job, target) = self.job(conn, &part.namespace, &part.name).await?;
                outcome.job_id = Some(job.id);
                if kind == EventKind::Run {
                    self.run_event(conn, event, part, &job, &target, &mut outcome)
                        .await?;
                } else {
                    for dataset in event.inputs.iter().chain(&event.outputs) {
                        self.dataset(conn, dataset, Some(&target)).await?;
                    }
                }
                target.id
            }
            EventKind::Dataset => {
                let part = event
                    .dataset
                    .as_ref()
                    .ok_or_else(|| Error::invalid("the event has no dataset"))?;
                // A dataset already known is found wherever it lives; a new one goes where its
                // namespace maps (there is no job to fall back on).
                let (dataset, home) = self.dataset(conn, part, None).await?;
                if let Some(identity) = declared_identity(part)? {
                    let (version, _) = self
                        .version(conn, &dataset, &home, part, identity, true)
                        .await?;
                    outcome.outputs.push(version);
                }
                home.id
            }
        };
        audit::record(
            conn,
            self.actor,
            event_change(digest, project, event, &outcome),
        )
        .await?;
        Ok(outcome)
    }

    /// Plans a run event when it needs nothing looked up or created: its job, and every dataset
    /// it names, known and within the caller's reach, no parent or code commit, outputs written
    /// as new versions without a declared identity (a pipeline's usual report). A new run reads
    /// its inputs' latest versions; a known run must have read them already, and not yet written
    /// its outputs. Answers its outcome; it is recorded with the batch's other planned events
    /// ([`Known::record_planned`]), as it would be one by one. Any other event, and any refusal,
    /// takes the one-by-one path (which says why).
    async fn plan(
        &self,
        conn: &mut Conn,
        digest: &str,
        kind: EventKind,
        event: &Event,
    ) -> Result<Option<Outcome>> {
        let (Some(job_part), Some(run_part)) = (&event.job, &event.run) else {
            return Ok(None);
        };
        let Some(user) = self.actor.user_id else {
            return Ok(None);
        };
        if kind != EventKind::Run
            || run_part.facets.parent.is_some()
            || git_commit(job_part).is_some()
        {
            return Ok(None);
        }
        let Some(job) = self.known_job(&job_part.namespace, &job_part.name) else {
            return Ok(None);
        };
        // The run: new, or known (of this job) with what it has recorded.
        let known_run = memo(&self.known.runs).get(&run_part.run_id).copied();
        let known = match known_run {
            None => None,
            Some((run_id, job_id)) if job_id == job.id => {
                match memo(&self.known.run_states).get(&run_part.run_id).cloned() {
                    Some(state) => Some((run_id, state)),
                    None => return Ok(None),
                }
            }
            Some(_) => return Ok(None),
        };
        if !self.holds(conn, job.project_id, Role::Contributor).await? {
            return Ok(None);
        }
        let mut inputs = Vec::with_capacity(event.inputs.len());
        let mut read = HashMap::new();
        for part in &event.inputs {
            let Some(dataset) = self.undeclared_known(part) else {
                return Ok(None);
            };
            let version = match &known {
                Some((_, state)) => state.read.get(&dataset.id).copied(),
                None => memo(&self.known.latest).get(&dataset.id).copied(),
            };
            let Some(version) = version else {
                return Ok(None);
            };
            if !self.holds(conn, dataset.project_id, Role::Viewer).await? {
                return Ok(None);
            }
            inputs.push(version);
            read.insert(dataset.id, version);
        }
        let mut outputs: Vec<(Dataset, &DatasetPart)> = Vec::with_capacity(event.outputs.len());
        for part in &event.outputs {
            let Some(dataset) = self.undeclared_known(part) else {
                return Ok(None);
            };
            let written = known
                .as_ref()
                .is_some_and(|(_, state)| state.wrote.contains(&dataset.id));
            if written
                || outputs.iter().any(|(d, _)| d.id == dataset.id)
                || !self
                    .holds(conn, dataset.project_id, Role::Contributor)
                    .await?
            {
                return Ok(None);
            }
            outputs.push((dataset, part));
        }
        // Everything is checked: plan it, and let the batch's next events find what it records.
        let identity = Identity::ProducedBy(run_part.run_id);
        let outputs: Vec<datasets::Reported> = outputs
            .into_iter()
            .map(|(dataset, part)| datasets::Reported {
                id: DatasetVersionId::generate(),
                dataset,
                uri: uri_of(part),
                sha256: identity.sha256(part),
                tags: identity.tags(),
                created_by: user,
            })
            .collect();
        for version in &outputs {
            memo(&self.known.latest).insert(version.dataset.id, version.id);
        }
        // A run that has ended keeps its first ending.
        let running = known.as_ref().is_none_or(|(_, state)| state.running);
        let ended = event
            .event_type
            .and_then(EventType::ends_as)
            .filter(|_| running)
            .map(|status| {
                let now = Utc::now();
                // PostgreSQL keeps microseconds: the audit entry says what is stored.
                let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
                (status, at)
            });
        let mut state = known
            .as_ref()
            .map_or_else(RunState::default, |(_, state)| state.clone());
        state.running = running && ended.is_none();
        state.read.extend(read);
        state.wrote.extend(outputs.iter().map(|o| o.dataset.id));
        memo(&self.known.run_states).insert(run_part.run_id, state);
        let run = match known {
            Some((id, _)) => RunPlan::Known {
                id,
                ending: ended.map(|(status, at)| runs::Ending {
                    id,
                    project_id: job.project_id,
                    status,
                    at,
                }),
            },
            None => {
                let id = RunId::generate();
                memo(&self.known.runs).insert(run_part.run_id, (id, job.id));
                let mut consumed = inputs.clone();
                consumed.sort();
                consumed.dedup();
                let (name, tags) = run_name_and_tags(&job, run_part.run_id);
                RunPlan::New(runs::Reported {
                    id,
                    project_id: job.project_id,
                    name,
                    tags,
                    inputs: consumed,
                    created_by: user,
                    ended,
                })
            }
        };
        let outcome = Outcome {
            applied: true,
            job_id: Some(job.id),
            run_id: Some(run.id()),
            inputs,
            outputs: outputs.iter().map(|o| o.id).collect(),
        };
        memo(&self.known.planned).push(Planned {
            actor: self.actor.clone(),
            job_id: job.id,
            openlineage_run_id: run_part.run_id,
            run,
            outputs,
            event: event_change(digest, job.project_id, event, &outcome),
        });
        Ok(Some(outcome))
    }

    /// Whether the caller holds at least `needed` in the project (read once per batch and sender).
    async fn holds(&self, conn: &mut Conn, project_id: ProjectId, needed: Role) -> Result<bool> {
        let refused = || Error::not_found("not found");
        match self.project_of(conn, project_id, needed, refused).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_) | Error::Forbidden(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    fn known_job(&self, namespace: &str, name: &str) -> Option<Job> {
        memo(&self.known.jobs)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The known dataset an event names without declaring its version.
    fn undeclared_known(&self, part: &DatasetPart) -> Option<Dataset> {
        if !matches!(declared_identity(part), Ok(None)) {
            return None;
        }
        memo(&self.known.datasets)
            .get(&(part.namespace.clone(), part.name.clone()))
            .cloned()
    }

    /// A RunEvent: the run of the job (created on its first event), what it read and wrote, its
    /// parent run, its code, and its state.
    async fn run_event(
        &self,
        conn: &mut Conn,
        event: &Event,
        job_part: &JobPart,
        job: &Job,
        target: &Target,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let run_part = event
            .run
            .as_ref()
            .ok_or_else(|| Error::invalid("the event has no run"))?;
        let commit = self.commit(conn, job_part).await?;
        // A run's later events name the tables it reads again: without a version they mean the
        // version it read, not one another run wrote since. The batch's lookup found them, unless
        // the run was recorded (or changed) one by one within the batch.
        let known_run = memo(&self.known.runs)
            .get(&run_part.run_id)
            .map(|(id, _)| *id);
        let already_read = match (self.known.take_run_state(run_part.run_id), known_run) {
            (Some(state), _) => state.read,
            (None, Some(run)) if !event.inputs.is_empty() => {
                lineage::consumed_versions(conn, run).await?
            }
            _ => HashMap::new(),
        };
        let mut inputs = Vec::with_capacity(event.inputs.len());
        for part in &event.inputs {
            let (dataset, home) = self.dataset(conn, part, Some(target)).await?;
            let version = match (declared_identity(part)?, already_read.get(&dataset.id)) {
                (Some(identity), _) => {
                    self.version(conn, &dataset, &home, part, identity, true)
                        .await?
                        .0
                }
                (None, Some(read)) => *read,
                (None, None) => self.latest_or_external(conn, &dataset, &home, part).await?,
            };
            inputs.push(version);
        }
        let (run_id, created) = self
            .run(conn, run_part.run_id, job, target, commit, &inputs)
            .await?;
        let this = NodeRef::Run(run_id);
        if !created {
            for input in &inputs {
                lineage::connect(conn, this, NodeRef::DatasetVersion(*input), "consumed").await?;
            }
            if let Some(commit) = commit {
                lineage::connect(conn, this, NodeRef::CodeCommit(commit), "ran").await?;
                diesel::update(runs_table::table.find(run_id))
                    .filter(runs_table::code_commit_id.is_null())
                    .set(runs_table::code_commit_id.eq(commit))
                    .execute(conn)
                    .await?;
            }
        }
        if let Some(parent) = &run_part.facets.parent {
            let (parent_job, parent_target) = self
                .job(conn, &parent.job.namespace, &parent.job.name)
                .await?;
            let (parent_run, _) = self
                .run(
                    conn,
                    parent.run.run_id,
                    &parent_job,
                    &parent_target,
                    None,
                    &[],
                )
                .await?;
            if parent_run == run_id {
                return Err(Error::invalid(
                    "a run cannot be its own parent (/run/facets/parent)",
                ));
            }
            lineage::connect(conn, this, NodeRef::Run(parent_run), "child_of").await?;
        }
        for part in &event.outputs {
            let (dataset, home) = self.dataset(conn, part, Some(target)).await?;
            let declared = declared_identity(part)?;
            // Without a declared identity, one version per run that wrote it: a run this event
            // started has written none yet, so there is none to look for.
            let may_exist = declared.is_some() || !created;
            let identity = declared.unwrap_or(Identity::ProducedBy(run_part.run_id));
            let (version, new) = self
                .version(conn, &dataset, &home, part, identity, may_exist)
                .await?;
            let node = NodeRef::DatasetVersion(version);
            if new {
                lineage::record_new_node_edge(conn, node, this, "produced_by").await?;
            } else {
                lineage::connect(conn, node, this, "produced_by").await?;
            }
            outcome.outputs.push(version);
        }
        if let Some(status) = event.event_type.and_then(EventType::ends_as) {
            // A run this event started is running.
            let current = if created {
                RunStatus::Running
            } else {
                runs_table::table
                    .find(run_id)
                    .select(runs_table::status)
                    .first(conn)
                    .await?
            };
            // Events may arrive late or twice: a run that has ended keeps its first ending.
            if current == RunStatus::Running {
                runs::finish(conn, self.actor, run_id, status).await?;
            }
        }
        outcome.run_id = Some(run_id);
        outcome.inputs = inputs;
        Ok(())
    }

    /// The project a namespace's jobs and datasets go to: the longest configured prefix rule,
    /// else a project named like the namespace, else the request's project, else `fallback`.
    /// The caller must be allowed to write there.
    async fn project_for(
        &self,
        conn: &mut Conn,
        namespace: &str,
        fallback: Option<&Target>,
    ) -> Result<Target> {
        let named = match self.namespaces.project_for(namespace) {
            Some(project) => Some(project.to_owned()),
            None => {
                let same_name = projects::find_by_name(conn, namespace).await.ok();
                let readable = match &same_name {
                    Some(p) => projects::authorize(conn, self.actor, p.id, Role::Viewer)
                        .await
                        .is_ok(),
                    None => false,
                };
                if readable {
                    Some(namespace.to_owned())
                } else {
                    self.default_project.map(str::to_owned)
                }
            }
        };
        match (named, fallback) {
            (Some(name), _) => {
                let project =
                    projects::find_authorized(conn, self.actor, &name, Role::Contributor).await?;
                Ok(Target {
                    id: project.id,
                    name: project.name,
                })
            }
            (None, Some(fallback)) => Ok(fallback.clone()),
            (None, None) => Err(Error::invalid(format!(
                "OpenLineage namespace `{namespace}` maps to no project: configure a rule \
                 (CUSTODY_OPENLINEAGE_NAMESPACES=PREFIX=PROJECT), name a project after it, or \
                 send the events to /api/v1/lineage?project=NAME"
            ))),
        }
    }

    /// The job named in the event, recorded in its namespace's project on first sight; the
    /// caller must be allowed to write in the job's project.
    async fn job(&self, conn: &mut Conn, namespace: &str, name: &str) -> Result<(Job, Target)> {
        if let Some(job) = self.known_job(namespace, name) {
            let hidden = || {
                Error::not_found(format!(
                    "job `{namespace}`/`{name}` belongs to a project you cannot write to"
                ))
            };
            let target = self
                .project_of(conn, job.project_id, Role::Contributor, hidden)
                .await?;
            return Ok((job, target));
        }
        let target = self.project_for(conn, namespace, None).await?;
        let job = jobs::create(conn, self.actor, target.id, namespace, name).await?;
        memo(&self.known.jobs).insert((namespace.to_owned(), name.to_owned()), job.clone());
        Ok((job, target))
    }

    /// The run the client's `runId` names: found, or started as a run of `job` with its inputs
    /// and code. Answers whether it was created now.
    async fn run(
        &self,
        conn: &mut Conn,
        openlineage_run_id: Uuid,
        job: &Job,
        target: &Target,
        commit: Option<CodeCommitId>,
        inputs: &[DatasetVersionId],
    ) -> Result<(RunId, bool)> {
        let known = memo(&self.known.runs).get(&openlineage_run_id).copied();
        if let Some((run_id, job_id)) = known {
            if job_id != job.id {
                return Err(Error::conflict(format!(
                    "run {openlineage_run_id} is a run of another job than `{}`/`{}`",
                    job.namespace, job.name
                )));
            }
            return Ok((run_id, false));
        }
        let (name, tags) = run_name_and_tags(job, openlineage_run_id);
        let run = runs::start(
            conn,
            self.actor,
            &target.name,
            NewRun {
                name: Some(&name),
                code_commit_id: commit,
                inputs: inputs.to_vec(),
                tags: Some(tags),
            },
        )
        .await?;
        // Both in one round trip.
        let known = diesel::insert_into(openlineage_runs::table)
            .values((
                openlineage_runs::openlineage_run_id.eq(openlineage_run_id),
                openlineage_runs::run_id.eq(run.id),
                openlineage_runs::job_id.eq(job.id),
            ))
            .execute(conn);
        let run_of = lineage::record_new_node_edges(
            conn,
            NodeRef::Run(run.id),
            &[(NodeRef::Job(job.id), "run_of")],
        );
        futures_util::future::try_join(async { Ok::<_, Error>(known.await?) }, run_of).await?;
        memo(&self.known.runs).insert(openlineage_run_id, (run.id, job.id));
        Ok((run.id, true))
    }

    /// The code commit a job's `sourceCodeLocation` facet names (git, with a full commit id).
    /// Other systems' versions (an svn revision) are no commit Custody can record.
    async fn commit(&self, conn: &mut Conn, job: &JobPart) -> Result<Option<CodeCommitId>> {
        let Some((location, version)) = git_commit(job) else {
            return Ok(None);
        };
        let repository = location.repo_url.as_deref().unwrap_or(&location.url);
        let commit = code::register(
            conn,
            self.actor,
            NewCommit {
                repository,
                commit: version,
                branch: location.branch.as_deref(),
                author: None,
                message: None,
                dirty: false,
            },
        )
        .await?;
        Ok(Some(commit.id))
    }

    /// The Custody dataset standing for an OpenLineage dataset, and its project: found by
    /// namespace and name wherever it lives (readable by the caller), or created in the
    /// namespace's project (`fallback`: the job's, if any).
    async fn dataset(
        &self,
        conn: &mut Conn,
        part: &DatasetPart,
        fallback: Option<&Target>,
    ) -> Result<(Dataset, Target)> {
        // Every dataset of the batch was looked for before it was applied (`Known::find`), and
        // those it creates are remembered: what is not known does not exist.
        let known = memo(&self.known.datasets)
            .get(&(part.namespace.clone(), part.name.clone()))
            .cloned();
        if let Some(dataset) = known {
            let hidden = || {
                Error::not_found(format!(
                    "dataset `{}`/`{}` belongs to a project you cannot read",
                    part.namespace, part.name
                ))
            };
            let target = self
                .project_of(conn, dataset.project_id, Role::Viewer, hidden)
                .await?;
            return Ok((dataset, target));
        }
        for (what, value) in [
            ("dataset namespace", &part.namespace),
            ("dataset name", &part.name),
        ] {
            crate::validate::text(what, value, 1024)?;
            if value.trim().is_empty() {
                return Err(Error::invalid(format!("{what} must not be empty")));
            }
        }
        let target = self.project_for(conn, &part.namespace, fallback).await?;
        let name = dataset_name(conn, target.id, &part.namespace, &part.name).await?;
        let about = format!("OpenLineage dataset {}", uri_of(part));
        let dataset = datasets::create(conn, self.actor, &target.name, &name, Some(&about)).await?;
        diesel::insert_into(openlineage_datasets::table)
            .values((
                openlineage_datasets::namespace.eq(&part.namespace),
                openlineage_datasets::name.eq(&part.name),
                openlineage_datasets::dataset_id.eq(dataset.id),
            ))
            .execute(conn)
            .await?;
        memo(&self.known.datasets)
            .insert((part.namespace.clone(), part.name.clone()), dataset.clone());
        Ok((dataset, target))
    }

    /// The version of `dataset` with this identity: found (unless the caller knows it cannot
    /// exist: `may_exist` false), or registered (the caller must be allowed to write in the
    /// dataset's project). Answers whether it was registered now.
    async fn version(
        &self,
        conn: &mut Conn,
        dataset: &Dataset,
        home: &Target,
        part: &DatasetPart,
        identity: Identity,
        may_exist: bool,
    ) -> Result<(DatasetVersionId, bool)> {
        let sha256 = identity.sha256(part);
        if may_exist {
            let existing: Option<DatasetVersionId> = dataset_versions::table
                .filter(dataset_versions::dataset_id.eq(dataset.id))
                .filter(dataset_versions::sha256.eq(&sha256))
                .select(dataset_versions::id)
                .first(conn)
                .await
                .optional()?;
            if let Some(id) = existing {
                return Ok((id, false));
            }
        }
        let uri = uri_of(part);
        let version = datasets::register_version(
            conn,
            self.actor,
            &home.name,
            &dataset.name,
            NewVersion {
                uri: &uri,
                sha256: &sha256,
                size_bytes: None,
                tags: identity.tags(),
                derived_from: Vec::new(),
            },
        )
        .await?;
        // Registered last, so it is the dataset's latest.
        memo(&self.known.latest).insert(dataset.id, version.id);
        Ok((version.id, true))
    }

    /// What a run reads when the event names no version: the dataset's latest version, or, for
    /// a source no known job has written, one version standing for the data as found outside.
    async fn latest_or_external(
        &self,
        conn: &mut Conn,
        dataset: &Dataset,
        home: &Target,
        part: &DatasetPart,
    ) -> Result<DatasetVersionId> {
        let latest = memo(&self.known.latest).get(&dataset.id).copied();
        match latest {
            Some(id) => Ok(id),
            None => Ok(self
                .version(conn, dataset, home, part, Identity::External, true)
                .await?
                .0),
        }
    }
}

/// The git commit a job's `sourceCodeLocation` facet names, with its full commit id.
fn git_commit(job: &JobPart) -> Option<(&SourceCodeLocation, &str)> {
    let location = job.facets.source_code_location.as_ref()?;
    let version = location.version.as_deref()?;
    (location.kind.eq_ignore_ascii_case("git") && crate::validate::commit_sha(version).is_ok())
        .then_some((location, version))
}

/// The name and tags of the Custody run standing for a run of `job`.
fn run_name_and_tags(job: &Job, openlineage_run_id: Uuid) -> (String, serde_json::Value) {
    let name = job.name.chars().take(256).collect();
    let tags = json!({
        "openlineage.job.namespace": job.namespace.chars().take(5000).collect::<String>(),
        "openlineage.job.name": job.name.chars().take(5000).collect::<String>(),
        "openlineage.runId": openlineage_run_id.to_string(),
    });
    (name, tags)
}

/// The audit entry of an applied event: what it said and what it became.
fn event_change(
    digest: &str,
    project: ProjectId,
    event: &Event,
    outcome: &Outcome,
) -> Change<'static> {
    Change {
        action: "openlineage.event",
        project_id: Some(project),
        subject_kind: "openlineage_event",
        subject_id: digest.to_owned(),
        before: None,
        after: Some(json!({
            "event_type": event.event_type,
            "event_time": event.event_time,
            "job": event.job.as_ref().map(|j| json!({"namespace": j.namespace, "name": j.name})),
            "openlineage_run_id": event.run.as_ref().map(|r| r.run_id),
            "job_id": outcome.job_id,
            "run_id": outcome.run_id,
            "inputs": outcome.inputs,
            "outputs": outcome.outputs,
        })),
    }
}

/// Refuses an event naming more datasets than one transaction should take.
pub fn check_size(event: &Event) -> Result<()> {
    let datasets = event.inputs.len() + event.outputs.len();
    if datasets > MAX_DATASETS {
        return Err(Error::invalid(format!(
            "an event names at most {MAX_DATASETS} input and output datasets; this one names {datasets}"
        )));
    }
    Ok(())
}

/// What makes a dataset version the same version again.
enum Identity {
    /// The `version` facet's `datasetVersion` (a Delta or Iceberg version, a snapshot id).
    Declared(String),
    /// The `custodyContentHash` facet: the SHA-256 of the content itself.
    Content(String),
    /// No version given: one version per run that wrote it (by the client's runId).
    ProducedBy(Uuid),
    /// Read without a version, never written by a known run: the data as found outside.
    External,
}

impl Identity {
    /// The version's SHA-256: the content's, when given; else that of its identity, so the
    /// same identity finds the same version again.
    fn sha256(&self, part: &DatasetPart) -> String {
        let identity = match self {
            Identity::Content(sha256) => return sha256.clone(),
            Identity::Declared(version) => json!({"version": version}),
            Identity::ProducedBy(run) => json!({"produced_by_run": run}),
            Identity::External => json!({"external": true}),
        };
        custody_audit_format::canonical::sha256_hex(&json!({
            "openlineage_dataset": {"namespace": part.namespace, "name": part.name, "identity": identity}
        }))
    }

    /// Tags that say how the version was identified.
    fn tags(&self) -> Vec<String> {
        let tag = match self {
            Identity::Declared(_) => "openlineage-version",
            Identity::Content(_) => "openlineage-content-hash",
            Identity::ProducedBy(_) => "openlineage-run-output",
            Identity::External => "openlineage-external",
        };
        vec![tag.to_owned()]
    }
}

/// The identity an event declares for a dataset, if any: a content hash, else a version.
fn declared_identity(part: &DatasetPart) -> Result<Option<Identity>> {
    if let Some(hash) = &part.facets.content_hash {
        let sha256 = crate::validate::sha256(&hash.sha256).map_err(|_| {
            Error::invalid(format!(
                "dataset `{}`/`{}`: facets.custodyContentHash.sha256 must be 64 hexadecimal characters",
                part.namespace, part.name
            ))
        })?;
        return Ok(Some(Identity::Content(sha256)));
    }
    Ok(part
        .facets
        .version
        .as_ref()
        .map(|v| Identity::Declared(v.dataset_version.clone())))
}

/// The dataset's URI by OpenLineage's naming convention: namespace, then name.
fn uri_of(part: &DatasetPart) -> String {
    let namespace = part.namespace.trim_end_matches('/');
    let name = part.name.trim_start_matches('/');
    format!("{namespace}/{name}")
}

/// A free Custody dataset name for an OpenLineage dataset: its namespace and name as a slug,
/// made unique in the project with a digest of both when the slug is taken.
async fn dataset_name(
    conn: &mut Conn,
    project_id: ProjectId,
    namespace: &str,
    name: &str,
) -> Result<String> {
    let slug = crate::validate::name_for(&format!("{namespace}/{name}"), "dataset");
    let taken = |candidate: String| {
        datasets_table::table
            .filter(datasets_table::project_id.eq(project_id))
            .filter(datasets_table::name.eq(candidate))
    };
    let slug_taken: bool = diesel::select(diesel::dsl::exists(taken(slug.clone())))
        .get_result(conn)
        .await?;
    if !slug_taken {
        return Ok(slug);
    }
    let digest = custody_audit_format::canonical::sha256_hex(&json!([namespace, name]));
    let short: String = slug.chars().take(110).collect();
    Ok(format!(
        "{}-{}",
        short.trim_end_matches(['-', '.', '_']),
        &digest[..12]
    ))
}
