//! Model search: by name, tag and creation time, across the readable projects.

use super::filter::ValueType;
use super::sql::{AttributeSpec, Rule, Subject};

/// Models (`m`); they have no metrics or params of their own (their versions' runs do).
pub static MODELS: Subject = Subject {
    from: "models m",
    row: "m.*",
    id: "m.id",
    project: "m.project_id",
    tags: "m.tags",
    run: None,
    attributes: &[
        AttributeSpec {
            names: &["name"],
            column: "m.name",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["creation_timestamp", "created_time", "created"],
            column: "m.created_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
    ],
};
