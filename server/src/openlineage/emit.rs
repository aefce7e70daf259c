//! OpenLineage out: Custody's own runs, dataset versions and model versions, emitted as
//! OpenLineage events to a configured endpoint (a Marquez instance, a catalog's collector,
//! another Custody), so Custody joins an existing lineage catalog instead of becoming an island.
//!
//! Events are outbox rows written in the transaction of the change they describe, delivered by
//! the notify worker with retries (at least once; receivers deduplicate). What they say:
//!
//! - a run started (START) and ended (COMPLETE / FAIL / ABORT): job `<namespace>/<project>` named
//!   after the run, its consumed dataset versions as inputs (version facet: the version number);
//! - a model version registered: an OTHER event of its source run with the model as an output
//!   dataset (`models/<model>`, version facet: the version number);
//! - a dataset version registered: a DatasetEvent.
//!
//! Datasets that came in through OpenLineage keep their original namespace and name, so they
//! line up with what the pipelines reported; runs that came in through OpenLineage are not sent
//! back out (the catalog has them from their pipeline already).
//!
//! The target is process-wide (set once at start-up, like the tracing subscriber): the domain
//! functions that cause events take no server state.

use std::sync::OnceLock;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::db::schema::{dataset_versions, datasets, openlineage_datasets, projects};
use crate::db::Conn;
use crate::error::Result;
use crate::ids::{DatasetVersionId, ProjectId};
use crate::runs::{Run, RunStatus};

/// Where events go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The endpoint events are POSTed to (e.g. `http://marquez:5000/api/v1/lineage`).
    pub url: url::Url,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// The namespace of Custody's jobs and datasets: `custody://<public host>`.
    pub namespace: String,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Turns emission on for this process (at most once).
pub fn configure(target: Target) {
    let _ = TARGET.set(target);
}

pub fn target() -> Option<&'static Target> {
    TARGET.get()
}

const PRODUCER: &str = concat!(
    "https://github.com/custody/custody/tree/v",
    env!("CARGO_PKG_VERSION")
);
const RUN_EVENT: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const DATASET_EVENT: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent";
const VERSION_FACET: &str =
    "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet";

fn version_facet(version: i32) -> Value {
    json!({"version": {
        "_producer": PRODUCER,
        "_schemaURL": VERSION_FACET,
        "datasetVersion": version.to_string(),
    }})
}

async fn project_name(conn: &mut Conn, id: ProjectId) -> Result<String> {
    Ok(projects::table
        .find(id)
        .select(projects::name)
        .first(conn)
        .await?)
}

/// Dataset versions as OpenLineage datasets: their original namespace and name when they came
/// in through OpenLineage, else Custody's.
async fn datasets_of(
    conn: &mut Conn,
    target: &Target,
    ids: &[DatasetVersionId],
) -> Result<Vec<Value>> {
    type Row = (i32, String, String, Option<String>, Option<String>);
    let rows: Vec<Row> = dataset_versions::table
        .inner_join(datasets::table.inner_join(projects::table))
        .left_join(
            openlineage_datasets::table.on(openlineage_datasets::dataset_id.eq(datasets::id)),
        )
        .filter(dataset_versions::id.eq_any(ids))
        .order(dataset_versions::id)
        .select((
            dataset_versions::version,
            projects::name,
            datasets::name,
            openlineage_datasets::namespace.nullable(),
            openlineage_datasets::name.nullable(),
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(version, project, dataset, ol_namespace, ol_name)| {
            let (namespace, name) = match (ol_namespace, ol_name) {
                (Some(namespace), Some(name)) => (namespace, name),
                _ => (format!("{}/{project}", target.namespace), dataset),
            };
            json!({"namespace": namespace, "name": name, "facets": version_facet(version)})
        })
        .collect())
}

async fn enqueue(conn: &mut Conn, event: Value) -> Result<()> {
    crate::notify::enqueue_openlineage(conn, event).await
}

/// Whether a run came in through OpenLineage (its pipeline reports it already).
fn reported_by_pipeline(run: &Run) -> bool {
    run.tags.get("openlineage.runId").is_some()
}

async fn run_event(
    conn: &mut Conn,
    target: &Target,
    run: &Run,
    event_type: &str,
    inputs: &[DatasetVersionId],
    outputs: Vec<Value>,
) -> Result<()> {
    let project = project_name(conn, run.project_id).await?;
    let inputs = datasets_of(conn, target, inputs).await?;
    let job = run.name.clone().unwrap_or_else(|| "run".to_owned());
    enqueue(
        conn,
        json!({
            "eventType": event_type,
            "eventTime": Utc::now().to_rfc3339(),
            "producer": PRODUCER,
            "schemaURL": RUN_EVENT,
            "run": {"runId": run.id.to_string()},
            "job": {"namespace": format!("{}/{project}", target.namespace), "name": job},
            "inputs": inputs,
            "outputs": outputs,
        }),
    )
    .await
}

/// A run started, with the dataset versions it consumes.
pub async fn run_started(conn: &mut Conn, run: &Run, inputs: &[DatasetVersionId]) -> Result<()> {
    match target() {
        Some(target) if !reported_by_pipeline(run) => {
            run_event(conn, target, run, "START", inputs, Vec::new()).await
        }
        _ => Ok(()),
    }
}

/// A run ended as `status`.
pub async fn run_ended(conn: &mut Conn, run: &Run) -> Result<()> {
    let Some(target) = target() else {
        return Ok(());
    };
    if reported_by_pipeline(run) {
        return Ok(());
    }
    let event_type = match run.status {
        RunStatus::Finished => "COMPLETE",
        RunStatus::Failed => "FAIL",
        RunStatus::Killed => "ABORT",
        RunStatus::Running => return Ok(()),
    };
    let inputs: Vec<DatasetVersionId> =
        crate::lineage::targets_of::<_, DatasetVersionId>(conn, &[run.id], "consumed")
            .await?
            .into_values()
            .flatten()
            .collect();
    run_event(conn, target, run, event_type, &inputs, Vec::new()).await
}

/// A model version registered from `run`: the run's output.
pub async fn model_version_registered(
    conn: &mut Conn,
    run: &Run,
    model: &str,
    version: i32,
) -> Result<()> {
    let Some(target) = target() else {
        return Ok(());
    };
    let project = project_name(conn, run.project_id).await?;
    let output = json!({
        "namespace": format!("{}/{project}", target.namespace),
        "name": format!("models/{model}"),
        "facets": version_facet(version),
    });
    run_event(conn, target, run, "OTHER", &[], vec![output]).await
}

/// A dataset version registered through Custody (not one a pipeline reported).
pub async fn dataset_version_registered(conn: &mut Conn, id: DatasetVersionId) -> Result<()> {
    let Some(target) = target() else {
        return Ok(());
    };
    let from_pipeline: bool = diesel::select(diesel::dsl::exists(
        dataset_versions::table
            .inner_join(
                openlineage_datasets::table
                    .on(openlineage_datasets::dataset_id.eq(dataset_versions::dataset_id)),
            )
            .filter(dataset_versions::id.eq(id)),
    ))
    .get_result(conn)
    .await?;
    if from_pipeline {
        return Ok(());
    }
    let Some(dataset) = datasets_of(conn, target, &[id]).await?.pop() else {
        return Ok(());
    };
    enqueue(
        conn,
        json!({
            "eventTime": Utc::now().to_rfc3339(),
            "producer": PRODUCER,
            "schemaURL": DATASET_EVENT,
            "dataset": dataset,
        }),
    )
    .await
}
