//! Model version search: by model name, version number, stage, alias, tag, and the metrics and
//! params of the run that produced the version.

use super::filter::ValueType;
use super::sql::{AttributeSpec, Rule, Subject};

/// Model versions with their model (`v`, `m`), MLflow's attribute names first.
pub static MODEL_VERSIONS: Subject = Subject {
    from: "model_versions v JOIN models m ON m.id = v.model_id",
    row: "v.*",
    id: "v.id",
    project: "m.project_id",
    tags: "v.tags",
    run: Some("v.run_id"),
    attributes: &[
        AttributeSpec {
            names: &["name", "model"],
            column: "m.name",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["version_number", "version"],
            column: "v.version",
            value_type: ValueType::Number,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["current_stage", "stage"],
            column: "v.stage",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["alias"],
            column: "",
            value_type: ValueType::Text,
            rule: Rule::Alias,
        },
        AttributeSpec {
            names: &["run_id"],
            column: "v.run_id",
            value_type: ValueType::Id,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["creation_timestamp", "created_time", "created"],
            column: "v.created_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
    ],
};
