//! `log-inputs`: the datasets a run read, as MLflow describes them (name, digest, source, schema,
//! profile), become Custody dataset versions the run consumed, so lineage runs from a model
//! version back through its run to its data.
//!
//! MLflow's digest is a fingerprint its client computes from a sample of the data, not a hash
//! of the content, so it cannot be the dataset version's SHA-256. The version's SHA-256 is that
//! of MLflow's description (canonical JSON of name, digest, source type, source and schema): the
//! same description is the same version, a changed digest or schema a new one. The description
//! itself is kept beside the version (`mlflow_datasets`) and answered back as MLflow sent it.

use std::collections::HashMap;

use actix_web::{web, HttpRequest};
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{args, ok, required, Call, MlflowError, Reply};
use super::wire::{self, KeyValue};
use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::datasets::{self as custody_datasets, NewVersion};
use crate::db::schema::{dataset_versions, datasets, mlflow_datasets, mlflow_run_inputs, projects};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{DatasetVersionId, RunId};
use crate::lineage::{self, NodeRef};
use crate::projects::Role;
use crate::runs::{self as custody_runs, RunStatus};
use crate::validate;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/runs/log-inputs", web::post().to(log_inputs));
}

/// The most datasets one `log-inputs` takes.
const MAX_INPUTS: usize = 100;

#[derive(Debug, Clone, Deserialize)]
struct Described {
    name: Option<String>,
    digest: Option<String>,
    source_type: Option<String>,
    source: Option<String>,
    schema: Option<String>,
    profile: Option<String>,
}

/// A checked MLflow dataset description.
#[derive(Debug, Clone, PartialEq)]
struct Description {
    name: String,
    digest: String,
    source_type: String,
    source: String,
    schema: Option<String>,
    profile: Option<String>,
}

impl Description {
    fn check(d: Described) -> Result<Description, MlflowError> {
        let description = Description {
            name: required(d.name, "dataset.name")?,
            digest: required(d.digest, "dataset.digest")?,
            source_type: required(d.source_type, "dataset.source_type")?,
            source: required(d.source, "dataset.source")?,
            schema: d.schema.filter(|s| !s.is_empty()),
            profile: d.profile.filter(|p| !p.is_empty()),
        };
        validate::text("dataset name", &description.name, 500)?;
        validate::text("dataset digest", &description.digest, 36)?;
        validate::text("dataset source_type", &description.source_type, 36)?;
        validate::text("dataset source", &description.source, 65_535)?;
        validate::optional_text("dataset schema", description.schema.as_deref(), 1_048_575)?;
        validate::optional_text(
            "dataset profile",
            description.profile.as_deref(),
            16_777_215,
        )?;
        if description.name.trim().is_empty() || description.digest.trim().is_empty() {
            return Err(MlflowError::invalid(
                "a dataset needs a non-empty name and digest",
            ));
        }
        Ok(description)
    }

    /// The SHA-256 that identifies this description (see the module comment).
    fn sha256(&self) -> String {
        custody_audit_format::canonical::sha256_hex(&json!({
            "mlflow_dataset": {
                "name": self.name,
                "digest": self.digest,
                "source_type": self.source_type,
                "source": self.source,
                "schema": self.schema,
            }
        }))
    }

    /// Where the data lives, for the version's URI: the `uri`/`url`/`path` the source names, else
    /// a URI that says what MLflow knew.
    fn uri(&self) -> String {
        let source: Value = serde_json::from_str(&self.source).unwrap_or(Value::Null);
        ["uri", "url", "path", "table_name"]
            .iter()
            .find_map(|k| source.get(*k).and_then(Value::as_str))
            .filter(|u| !u.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("mlflow-dataset:{}/{}", self.source_type, self.digest))
    }

    fn to_wire(&self) -> Value {
        let mut dataset = json!({
            "name": self.name,
            "digest": self.digest,
            "source_type": self.source_type,
            "source": self.source,
        });
        if let Some(schema) = &self.schema {
            dataset["schema"] = json!(schema);
        }
        if let Some(profile) = &self.profile {
            dataset["profile"] = json!(profile);
        }
        dataset
    }
}

/// The dataset version of this description in the run's project: found by its SHA-256 in the
/// dataset of that name, or registered (the dataset too, when new).
async fn version_for(
    conn: &mut Conn,
    actor: &Actor,
    project_name: &str,
    project_id: crate::ids::ProjectId,
    description: &Description,
) -> Result<DatasetVersionId> {
    let dataset_name = crate::validate::name_for(&description.name, "dataset");
    let sha256 = description.sha256();
    let existing: Option<DatasetVersionId> = dataset_versions::table
        .inner_join(datasets::table)
        .filter(datasets::project_id.eq(project_id))
        .filter(datasets::name.eq(&dataset_name))
        .filter(dataset_versions::sha256.eq(&sha256))
        .select(dataset_versions::id)
        .first(conn)
        .await
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let has_dataset: bool = diesel::select(diesel::dsl::exists(
        datasets::table
            .filter(datasets::project_id.eq(project_id))
            .filter(datasets::name.eq(&dataset_name)),
    ))
    .get_result(conn)
    .await?;
    if !has_dataset {
        let about = format!("logged through MLflow as `{}`", description.name);
        custody_datasets::create(conn, actor, project_name, &dataset_name, Some(&about)).await?;
    }
    let uri = description.uri();
    let version = custody_datasets::register_version(
        conn,
        actor,
        project_name,
        &dataset_name,
        NewVersion {
            uri: &uri,
            sha256: &sha256,
            size_bytes: None,
            tags: Vec::new(),
            derived_from: Vec::new(),
        },
    )
    .await?;
    diesel::insert_into(mlflow_datasets::table)
        .values((
            mlflow_datasets::dataset_version_id.eq(version.id),
            mlflow_datasets::name.eq(&description.name),
            mlflow_datasets::digest.eq(&description.digest),
            mlflow_datasets::source_type.eq(&description.source_type),
            mlflow_datasets::source.eq(&description.source),
            mlflow_datasets::schema.eq(&description.schema),
            mlflow_datasets::profile.eq(&description.profile),
        ))
        .execute(conn)
        .await?;
    Ok(version.id)
}

/// Records the run's inputs: each dataset version, the `consumed` edge from the run, and the
/// input's tags. A running run only: an ended run's record is sealed. Logging the same input
/// again updates its tags and adds no edge.
async fn record_inputs(
    conn: &mut Conn,
    actor: &Actor,
    run_id: RunId,
    inputs: Vec<(Description, Vec<KeyValue>)>,
) -> Result<()> {
    let run = custody_runs::get(conn, actor, run_id, Role::Contributor).await?;
    if run.status != RunStatus::Running {
        return Err(Error::conflict(format!(
            "run {run_id} is {} and takes no more inputs",
            run.status
        )));
    }
    let project_name: String = projects::table
        .find(run.project_id)
        .select(projects::name)
        .first(conn)
        .await?;
    let mut logged = Vec::with_capacity(inputs.len());
    for (description, tags) in inputs {
        for tag in &tags {
            crate::labels::check_key(&tag.key)?;
            validate::text("input tag value", &tag.value, 5_000)?;
        }
        let version = version_for(conn, actor, &project_name, run.project_id, &description).await?;
        let consumed = (NodeRef::Run(run_id), NodeRef::DatasetVersion(version));
        if !lineage::edge_exists(conn, consumed.0, consumed.1, "consumed").await? {
            lineage::link(
                conn,
                actor,
                NodeRef::Run(run_id),
                NodeRef::DatasetVersion(version),
                "consumed",
            )
            .await?;
        }
        let tags = json!(wire::to_map(&tags));
        diesel::insert_into(mlflow_run_inputs::table)
            .values((
                mlflow_run_inputs::run_id.eq(run_id),
                mlflow_run_inputs::dataset_version_id.eq(version),
                mlflow_run_inputs::tags.eq(&tags),
            ))
            .on_conflict((
                mlflow_run_inputs::run_id,
                mlflow_run_inputs::dataset_version_id,
            ))
            .do_update()
            .set(mlflow_run_inputs::tags.eq(&tags))
            .execute(conn)
            .await?;
        logged.push(
            json!({"dataset_version_id": version, "name": description.name,
                           "digest": description.digest, "tags": tags}),
        );
    }
    audit::record(
        conn,
        actor,
        Change {
            action: "run.log_inputs",
            project_id: Some(run.project_id),
            subject_kind: "run",
            subject_id: run_id.to_string(),
            before: None,
            after: Some(json!({ "datasets": logged })),
        },
    )
    .await?;
    Ok(())
}

/// The inputs of runs as MLflow's `dataset_inputs`, by run.
pub async fn inputs_of(conn: &mut Conn, run_ids: &[RunId]) -> Result<HashMap<RunId, Vec<Value>>> {
    type Row = (
        RunId,
        Value,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = mlflow_run_inputs::table
        .inner_join(
            mlflow_datasets::table
                .on(mlflow_datasets::dataset_version_id.eq(mlflow_run_inputs::dataset_version_id)),
        )
        .filter(mlflow_run_inputs::run_id.eq_any(run_ids))
        .order((mlflow_run_inputs::run_id, mlflow_datasets::name))
        .select((
            mlflow_run_inputs::run_id,
            mlflow_run_inputs::tags,
            mlflow_datasets::name,
            mlflow_datasets::digest,
            mlflow_datasets::source_type,
            mlflow_datasets::source,
            mlflow_datasets::schema,
            mlflow_datasets::profile,
        ))
        .load(conn)
        .await?;
    let mut inputs: HashMap<RunId, Vec<Value>> = HashMap::new();
    for (run_id, tags, name, digest, source_type, source, schema, profile) in rows {
        let description = Description {
            name,
            digest,
            source_type,
            source,
            schema,
            profile,
        };
        inputs.entry(run_id).or_default().push(json!({
            "tags": wire::key_values(&tags),
            "dataset": description.to_wire(),
        }));
    }
    Ok(inputs)
}

#[derive(Deserialize)]
struct InputArg {
    #[serde(default)]
    tags: Vec<KeyValue>,
    dataset: Option<Described>,
}

#[derive(Deserialize)]
struct LogInputsArgs {
    run_id: Option<String>,
    #[serde(default)]
    datasets: Vec<InputArg>,
    /// Logged models as inputs (MLflow 3): accepted only when empty, see below.
    #[serde(default)]
    models: Vec<Value>,
}

async fn log_inputs(call: Call, http: HttpRequest, body: web::Bytes) -> Reply {
    let a: LogInputsArgs = args(&http, &body)?;
    let run_id: RunId = required(a.run_id, "run_id")?
        .parse()
        .map_err(|_| MlflowError::not_found("Run not found"))?;
    if a.datasets.len() > MAX_INPUTS {
        return Err(MlflowError::invalid(format!(
            "at most {MAX_INPUTS} datasets per log-inputs request"
        )));
    }
    if !a.models.is_empty() {
        return Err(MlflowError::invalid(
            "logged models as run inputs are not supported by Custody; log the model version's \
             source run as an input dataset instead",
        ));
    }
    let inputs = a
        .datasets
        .into_iter()
        .map(|input| {
            let dataset = required(input.dataset, "datasets.dataset")?;
            Ok((Description::check(dataset)?, input.tags))
        })
        .collect::<Result<Vec<_>, MlflowError>>()?;
    let actor = &call.actor;
    call.write(|c| record_inputs(c, actor, run_id, inputs).scope_boxed())
        .await?;
    ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(digest: &str, source: &str) -> Description {
        Description::check(Described {
            name: Some("churn-train".into()),
            digest: Some(digest.into()),
            source_type: Some("s3".into()),
            source: Some(source.into()),
            schema: Some("{\"mlflow_colspec\": []}".into()),
            profile: Some("{\"num_rows\": 60}".into()),
        })
        .unwrap()
    }

    #[test]
    fn a_description_is_its_version_and_names_its_data() {
        let a = described("d854b730", r#"{"uri": "s3://bucket/churn.csv"}"#);
        assert_eq!(a.uri(), "s3://bucket/churn.csv");
        assert_eq!(
            a.sha256(),
            described("d854b730", r#"{"uri": "s3://bucket/churn.csv"}"#).sha256()
        );
        assert_ne!(
            a.sha256(),
            described("00000000", r#"{"uri": "s3://bucket/churn.csv"}"#).sha256()
        );
        // The profile (row counts) does not make a new version; the source does.
        let mut b = a.clone();
        b.profile = None;
        assert_eq!(a.sha256(), b.sha256());
        assert_eq!(
            described("d854b730", r#"{"tags": {}}"#).uri(),
            "mlflow-dataset:s3/d854b730"
        );
    }

    #[test]
    fn incomplete_descriptions_are_refused() {
        let missing = Description::check(Described {
            name: Some("x".into()),
            digest: None,
            source_type: Some("code".into()),
            source: Some("{}".into()),
            schema: None,
            profile: None,
        });
        assert_eq!(missing.unwrap_err().code, "INVALID_PARAMETER_VALUE");
    }
}
