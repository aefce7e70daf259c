//! Events checked against the published OpenLineage JSON schema (embedded, see `spec/`): the
//! core schema for the event's kind, then the schema of each facet Custody interprets, so a
//! refusal names the field at fault (`/run/runId: "x" is not a "uuid"`) rather than saying that
//! the event matched none of three shapes.

use std::sync::OnceLock;

use jsonschema::{Registry, Resource, Validator};
use serde_json::{json, Value};

use crate::error::{Error, Result};

const CORE_ID: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json";

/// The published schemas by their `$id`, and the facets (by the key events carry them under)
/// that Custody reads, with the definition that describes each.
const SCHEMAS: [&str; 5] = [
    include_str!("spec/OpenLineage.json"),
    include_str!("spec/ParentRunFacet.json"),
    include_str!("spec/SourceCodeLocationJobFacet.json"),
    include_str!("spec/DatasetVersionDatasetFacet.json"),
    include_str!("spec/SchemaDatasetFacet.json"),
];

/// Which of the three events a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Run,
    Dataset,
    Job,
}

impl EventKind {
    /// The kind the spec's `oneOf` would pick: a run makes a RunEvent, a lone dataset a
    /// DatasetEvent, a job without a run a JobEvent.
    fn of(event: &Value) -> Option<EventKind> {
        let has = |key: &str| event.get(key).is_some();
        if has("run") {
            Some(EventKind::Run)
        } else if has("dataset") {
            Some(EventKind::Dataset)
        } else if has("job") {
            Some(EventKind::Job)
        } else {
            None
        }
    }

    fn definition(self) -> &'static str {
        match self {
            EventKind::Run => "RunEvent",
            EventKind::Dataset => "DatasetEvent",
            EventKind::Job => "JobEvent",
        }
    }
}

struct Validators {
    events: [(EventKind, Validator); 3],
    parent: Validator,
    source_code_location: Validator,
    dataset_version: Validator,
    schema: Validator,
}

fn validators() -> &'static Validators {
    static VALIDATORS: OnceLock<Validators> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let mut resources = Vec::new();
        for text in SCHEMAS {
            let schema: Value = serde_json::from_str(text).expect("an embedded schema is JSON");
            let id = schema["$id"]
                .as_str()
                .expect("a published schema has an $id")
                .to_owned();
            resources.push((id, Resource::from_contents(schema)));
        }
        let ids: Vec<String> = resources.iter().map(|(id, _)| id.clone()).collect();
        let registry = Registry::new()
            .extend(resources)
            .and_then(|r| r.prepare())
            .expect("the embedded schemas resolve");
        let build = |reference: String| {
            jsonschema::options()
                .with_registry(&registry)
                .should_validate_formats(true)
                .build(&json!({ "$ref": reference }))
                .expect("an embedded schema compiles")
        };
        let facet = |file: &str, definition: &str| {
            let id = ids
                .iter()
                .find(|id| id.ends_with(&format!("/{file}.json")))
                .expect("the facet's schema is embedded");
            build(format!("{id}#/$defs/{definition}"))
        };
        Validators {
            events: [EventKind::Run, EventKind::Dataset, EventKind::Job].map(|kind| {
                (
                    kind,
                    build(format!("{CORE_ID}#/$defs/{}", kind.definition())),
                )
            }),
            parent: facet("ParentRunFacet", "ParentRunFacet"),
            source_code_location: facet("SourceCodeLocationJobFacet", "SourceCodeLocationJobFacet"),
            dataset_version: facet("DatasetVersionDatasetFacet", "DatasetVersionDatasetFacet"),
            schema: facet("SchemaDatasetFacet", "SchemaDatasetFacet"),
        }
    })
}

/// The first error of `validator` on `value` (found at `at` in the event), as INVALID_INPUT
/// naming the field.
fn check_with(validator: &Validator, value: &Value, at: &str) -> Result<()> {
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(error) => {
            let path = error.instance_path().to_string();
            Err(Error::invalid(format!(
                "the event does not follow the OpenLineage schema at {at}{path}: {}",
                error.masked()
            )))
        }
    }
}

/// Checks an event against the schema of its kind and of the facets Custody reads; answers its
/// kind.
pub fn check(event: &Value) -> Result<EventKind> {
    if !event.is_object() {
        return Err(Error::invalid("an OpenLineage event is a JSON object"));
    }
    let kind = EventKind::of(event).ok_or_else(|| {
        Error::invalid(
            "the event is none of RunEvent (with `run` and `job`), DatasetEvent (with `dataset`) \
             or JobEvent (with `job`)",
        )
    })?;
    let v = validators();
    let (_, validator) = v
        .events
        .iter()
        .find(|(k, _)| *k == kind)
        .expect("every kind has a validator");
    check_with(validator, event, "")?;
    if let Some(parent) = event.pointer("/run/facets/parent") {
        check_with(&v.parent, parent, "/run/facets/parent")?;
    }
    if let Some(location) = event.pointer("/job/facets/sourceCodeLocation") {
        check_with(
            &v.source_code_location,
            location,
            "/job/facets/sourceCodeLocation",
        )?;
    }
    let datasets = ["inputs", "outputs"]
        .iter()
        .flat_map(|side| {
            let list = event.get(*side).and_then(Value::as_array);
            list.into_iter()
                .flatten()
                .enumerate()
                .map(move |(i, d)| (format!("/{side}/{i}"), d))
        })
        .chain(event.get("dataset").map(|d| ("/dataset".to_owned(), d)));
    for (at, dataset) in datasets {
        if let Some(version) = dataset.pointer("/facets/version") {
            check_with(&v.dataset_version, version, &format!("{at}/facets/version"))?;
        }
        if let Some(schema) = dataset.pointer("/facets/schema") {
            check_with(&v.schema, schema, &format!("{at}/facets/schema"))?;
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_event() -> Value {
        json!({
            "eventType": "START",
            "eventTime": "2026-12-04T10:00:00.000Z",
            "producer": "https://github.com/example/pipeline",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": "0190a4c3-1c2b-7e3f-8a9b-0c1d2e3f4a5b"},
            "job": {"namespace": "warehouse", "name": "load_orders"},
            "inputs": [{"namespace": "postgres://db:5432", "name": "public.orders"}],
            "outputs": [],
        })
    }

    #[test]
    fn events_of_each_kind_pass() {
        assert_eq!(check(&run_event()).unwrap(), EventKind::Run);
        let dataset = json!({
            "eventTime": "2026-12-04T10:00:00Z",
            "producer": "https://example.com/p",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
            "dataset": {"namespace": "s3://lake", "name": "orders"},
        });
        assert_eq!(check(&dataset).unwrap(), EventKind::Dataset);
        let job = json!({
            "eventTime": "2026-12-04T10:00:00Z",
            "producer": "https://example.com/p",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
            "job": {"namespace": "warehouse", "name": "load_orders"},
        });
        assert_eq!(check(&job).unwrap(), EventKind::Job);
    }

    fn refusal(event: &Value) -> String {
        check(event).unwrap_err().to_string()
    }

    #[test]
    fn refusals_name_the_field() {
        let mut bad_id = run_event();
        bad_id["run"]["runId"] = json!("not-a-uuid");
        assert!(
            refusal(&bad_id).contains("/run/runId"),
            "{}",
            refusal(&bad_id)
        );

        let mut no_name = run_event();
        no_name["job"].as_object_mut().unwrap().remove("name");
        assert!(refusal(&no_name).contains("name"), "{}", refusal(&no_name));

        let mut bad_type = run_event();
        bad_type["eventType"] = json!("FINISHED");
        assert!(
            refusal(&bad_type).contains("/eventType"),
            "{}",
            refusal(&bad_type)
        );

        let mut bad_time = run_event();
        bad_time["eventTime"] = json!("yesterday");
        assert!(
            refusal(&bad_time).contains("/eventTime"),
            "{}",
            refusal(&bad_time)
        );

        let mut bad_input = run_event();
        bad_input["inputs"][0]["namespace"] = json!(7);
        assert!(
            refusal(&bad_input).contains("/inputs/0/namespace"),
            "{}",
            refusal(&bad_input)
        );

        assert!(refusal(&json!({"eventTime": "x"})).contains("none of"));
        assert!(refusal(&json!([1])).contains("JSON object"));
    }

    #[test]
    fn interpreted_facets_are_checked_too() {
        let mut parent = run_event();
        parent["run"]["facets"] = json!({"parent": {
            "_producer": "https://example.com/p",
            "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json",
            "run": {"runId": "nope"},
            "job": {"namespace": "airflow", "name": "dag"},
        }});
        assert!(
            refusal(&parent).contains("/run/facets/parent/run/runId"),
            "{}",
            refusal(&parent)
        );

        let mut version = run_event();
        version["inputs"][0]["facets"] = json!({"version": {
            "_producer": "https://example.com/p",
            "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json",
        }});
        assert!(
            refusal(&version).contains("/inputs/0/facets/version"),
            "{}",
            refusal(&version)
        );
    }
}
