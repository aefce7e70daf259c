//! OpenLineage in: `POST /api/v1/lineage` takes the events pipelines already emit (Airflow,
//! Spark, dbt, or any `openlineage-python` client), so lineage reaches past Custody's own SDK
//! back to the source tables.
//!
//! Each event is checked against the published JSON schema (400 naming the field at fault), then
//! applied in one transaction with its audit entry (`openlineage.event`), once: a replay of the
//! same event is answered 200 and changes nothing. The mapping:
//!
//! - namespace → project: the longest configured prefix rule
//!   (`CUSTODY_OPENLINEAGE_NAMESPACES=postgres://warehouse=data-platform,airflow=pipelines`),
//!   else a project named like the namespace, else the request's `?project=NAME`; a dataset of
//!   an unmapped namespace goes to its job's project. Anything else is refused. The token must
//!   be allowed to write (CONTRIBUTOR) where something is recorded, and to read the datasets a
//!   run reads from other projects.
//! - job (namespace, name) → a JOB lineage node of that project, recorded on first sight.
//! - run (`runId`) → a Custody run of the job (`run —run_of→ job`), named after the job, started
//!   on its first event; COMPLETE / FAIL / ABORT end it as FINISHED / FAILED / KILLED (a run that
//!   has ended keeps its first ending); START, RUNNING and OTHER add what they carry.
//! - datasets (namespace, name) → one Custody dataset wherever they appear (created in their
//!   namespace's project), and versions: the `version` facet's `datasetVersion`, or Custody's
//!   `custodyContentHash` facet (`{"sha256": …}`, the content's SHA-256), identifies one; without
//!   either an output is one version per producing run and an input is the dataset's latest
//!   version (or, for a source no known job wrote, one "external" version). Inputs are
//!   `run —consumed→ version`, outputs `version —produced_by→ run`; a Custody run that consumes
//!   that version links up with the pipeline that made it.
//! - `parent` run facet → `run —child_of→ parent run` (the parent recorded if unseen);
//!   `sourceCodeLocation` job facet (git, full commit id) → the code commit node
//!   (`run —ran→ commit`). `sourceCode` alone names no commit and is not recorded.
//! - DatasetEvent → the dataset (and its version, when one is declared); JobEvent → the job and
//!   its datasets.
//!
//! Events sent at once share a transaction (`group_commit`): pipelines send many small events,
//! and one transaction each queued them all behind the audit chain's append. A batch applies its
//! events in the order they queued, exactly as one by one; if any of them fails, nothing of the
//! batch is kept and each event is applied again on its own, so a bad event is refused alone and
//! its neighbours are unaffected. An event that loses a race to record a new job or dataset (a
//! concurrent event recorded it first: CONFLICT) is applied once more, and finds it.
//!
//! Within a batch, a run event that needs nothing looked up or created (its job and datasets
//! known, new outputs without a declared identity; a new run reading its inputs' latest
//! versions, or a known run reading what it read and writing what it has not: a pipeline's
//! usual START and COMPLETE) is planned in memory and recorded set-wise with the batch's other
//! such events, a statement per table for all of them, with the same rows and audit entries as
//! one by one; any other event first has them recorded, then is applied on its own.

pub mod emit;
mod ingest;
mod spec;

use std::sync::{Arc, LazyLock};

use actix_web::{web, HttpRequest, HttpResponse};
use diesel_async::scoped_futures::ScopedFutureExt;
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::Value;
use tracing_actix_web::RequestId;

use crate::actor::Actor;
use crate::audit;
use crate::db::{Conn, DbPool};
use crate::error::{Error, Result};
use crate::group_commit::GroupCommit;
use crate::http::ApiError;
use crate::state::AppState;

/// The largest event taken (schema and column-lineage facets of wide tables are large).
const MAX_EVENT: usize = 4 * 1024 * 1024;

/// The most events one transaction applies: enough to share the commit widely, few enough
/// that the rows a batch locks (each output dataset's numbering) are not held for long.
const MAX_GATHERED: usize = 32;

/// Batches applied at once: one commits while the next is applied, so both cores stay busy.
const WRITERS: usize = 4;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/lineage", web::post().to(receive));
}

/// One rule of the namespace mapping: namespaces starting with `prefix` go to `project`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRule {
    pub prefix: String,
    pub project: String,
}

impl std::str::FromStr for NamespaceRule {
    type Err = String;

    /// `PREFIX=PROJECT` (split at the last `=`: project names have none).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (prefix, project) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("`{text}` is not PREFIX=PROJECT"))?;
        if prefix.is_empty() {
            return Err(format!("`{text}`: the namespace prefix is empty"));
        }
        crate::validate::name("project", project).map_err(|e| e.to_string())?;
        Ok(NamespaceRule {
            prefix: prefix.to_owned(),
            project: project.to_owned(),
        })
    }
}

/// The configured namespace rules.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// Longest prefix first, so the most specific rule wins.
    rules: Vec<NamespaceRule>,
}

impl Namespaces {
    pub fn new(mut rules: Vec<NamespaceRule>) -> Self {
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.prefix.len()));
        Namespaces { rules }
    }

    /// The project a rule sends `namespace` to.
    pub fn project_for(&self, namespace: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|rule| namespace.starts_with(&rule.prefix))
            .map(|rule| rule.project.as_str())
    }
}

/// The Custody dataset standing for the OpenLineage dataset `namespace`/`name`, if one does.
pub async fn dataset_named(
    conn: &mut crate::db::Conn,
    namespace: &str,
    name: &str,
) -> crate::error::Result<Option<crate::datasets::Dataset>> {
    use crate::db::schema::{datasets, openlineage_datasets};
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    Ok(openlineage_datasets::table
        .inner_join(datasets::table)
        .filter(openlineage_datasets::namespace.eq(namespace))
        .filter(openlineage_datasets::name.eq(name))
        .select(crate::datasets::Dataset::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Batches of events that failed together and were applied again one by one.
static REAPPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "custody_openlineage_batches_reapplied_total",
        "batches of OpenLineage events that failed together and were applied again one by one",
    )
    .expect("a valid counter definition")
});

/// Events recorded set-wise with their batch's others (a run event with nothing to look up),
/// rather than one by one.
static PLANNED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "custody_openlineage_events_planned_total",
        "OpenLineage events recorded set-wise with the other events of their batch",
    )
    .expect("a valid counter definition")
});

/// Puts the ingest's counters in the scrape (`GET /metrics`).
pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
    registry.register(Box::new(REAPPLIED.clone()))?;
    registry.register(Box::new(PLANNED.clone()))
}

/// Where received events queue to be applied (see the module's documentation).
#[derive(Clone)]
pub struct Ingestion {
    queue: GroupCommit<Received, ingest::Outcome>,
}

/// An event checked against the schema, waiting to be applied.
struct Received {
    actor: Actor,
    /// The project named by the request (`?project=`), for namespaces no rule maps.
    project: Option<String>,
    /// The SHA-256 of the event's canonical JSON: what makes a replay the same event.
    digest: String,
    kind: spec::EventKind,
    event: ingest::Event,
}

/// Applies `events` in order in the caller's transaction (a batch, or one event on its own).
async fn apply_in_order(
    conn: &mut Conn,
    namespaces: &Namespaces,
    events: &[Received],
) -> Result<Vec<ingest::Outcome>> {
    let named: Vec<(&str, &ingest::Event)> = events
        .iter()
        .map(|e| (e.digest.as_str(), &e.event))
        .collect();
    let known = ingest::Known::find(conn, &named).await?;
    let mut outcomes = Vec::with_capacity(events.len());
    for e in events {
        let ingest = ingest::Ingest::new(&e.actor, namespaces, e.project.as_deref(), &known);
        outcomes.push(ingest.apply(conn, &e.digest, e.kind, &e.event).await?);
    }
    known.record_planned(conn).await?;
    Ok(outcomes)
}

impl Ingestion {
    /// Starts the writers (on the calling runtime) that apply events with these namespace rules.
    pub fn start(pool: DbPool, namespaces: Namespaces) -> Ingestion {
        let namespaces = Arc::new(namespaces);
        let queue = GroupCommit::start("openlineage", WRITERS, MAX_GATHERED, move |events| {
            apply_batch(pool.clone(), namespaces.clone(), events)
        });
        Ingestion { queue }
    }

    async fn apply(&self, event: Received) -> Result<ingest::Outcome> {
        self.queue.submit(event).await
    }
}

/// Applies the events in one transaction; if that fails, each on its own (see the module).
async fn apply_batch(
    pool: DbPool,
    namespaces: Arc<Namespaces>,
    events: Vec<Received>,
) -> Vec<Result<ingest::Outcome>> {
    if events.len() > 1 {
        let together = async {
            let mut conn = pool.get().await?;
            audit::transaction(&mut conn, |c| {
                apply_in_order(c, &namespaces, &events).scope_boxed()
            })
            .await
        };
        match together.await {
            Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                REAPPLIED.inc();
                tracing::debug!(
                    error = %e,
                    events = events.len(),
                    "a batch of OpenLineage events failed; applying each on its own"
                );
            }
        }
    }
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events.chunks(1) {
        let alone = || async {
            let mut conn = pool.get().await?;
            audit::transaction(&mut conn, |c| {
                apply_in_order(c, &namespaces, event).scope_boxed()
            })
            .await
            .map(|mut outcome| outcome.remove(0))
        };
        let mut outcome = alone().await;
        // Two pipelines reporting a job or dataset for the first time at once both record it,
        // and the one that commits second is refused (CONFLICT); applied again, the event finds
        // the one recorded. (A conflict of the event itself, a run id of another job, is
        // refused again.)
        if matches!(outcome, Err(Error::Conflict(_))) {
            outcome = alone().await;
        }
        outcomes.push(outcome);
    }
    outcomes
}

#[derive(Deserialize)]
struct Destination {
    /// The project for namespaces no rule maps.
    project: Option<String>,
}

/// Authenticates first (a caller who may write), then reads the body under [`MAX_EVENT`]: an
/// anonymous or read-only caller never gets a body buffered.
async fn receive(
    state: web::Data<AppState>,
    http: HttpRequest,
    request_id: RequestId,
    destination: web::Query<Destination>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let actor = crate::http::authenticate(&state, &http, request_id.to_string()).await?;
    // An event records jobs, runs and datasets: a change, refused to read-only tokens and
    // auditors as every mutation is.
    actor.require_writer()?;
    let body = match crate::http::read_body(&http, payload, MAX_EVENT).await {
        Ok(body) => body,
        Err(crate::http::BodyRefusal::TooLarge) => {
            return Err(
                Error::TooLarge(format!("an event may be at most {MAX_EVENT} bytes")).into(),
            )
        }
        Err(crate::http::BodyRefusal::Broken(why)) => return Err(Error::invalid(why).into()),
    };
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("the body is not a JSON document: {e}")))?;
    drop(body);
    let kind = spec::check(&raw)?;
    let digest = custody_audit_format::canonical::sha256_hex(&raw);
    let event: ingest::Event = serde_json::from_value(raw)
        .map_err(|e| Error::invalid(format!("the event cannot be read: {e}")))?;
    ingest::check_size(&event)?;
    let outcome = state
        .openlineage
        .apply(Received {
            actor,
            project: destination.into_inner().project,
            digest,
            kind,
            event,
        })
        .await?;
    let mut answer = if outcome.applied {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer.json(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins() {
        let namespaces = Namespaces::new(vec![
            "postgres://=warehouse".parse().unwrap(),
            "postgres://prod:5432=finance".parse().unwrap(),
        ]);
        assert_eq!(
            namespaces.project_for("postgres://prod:5432"),
            Some("finance")
        );
        assert_eq!(
            namespaces.project_for("postgres://dev:5432"),
            Some("warehouse")
        );
        assert_eq!(namespaces.project_for("s3://lake"), None);
    }

    #[test]
    fn rules_are_checked() {
        assert!("no-equals".parse::<NamespaceRule>().is_err());
        assert!("=churn".parse::<NamespaceRule>().is_err());
        assert!("s3://x=not a project".parse::<NamespaceRule>().is_err());
        let rule: NamespaceRule = "a=b=churn".parse().unwrap();
        assert_eq!(
            (rule.prefix.as_str(), rule.project.as_str()),
            ("a=b", "churn")
        );
    }
}
