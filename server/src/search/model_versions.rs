//! Model version search: by model name, version number, stage, alias, tag, and the metrics and
//! params of the run that produced the version.

use diesel::sql_types::Jsonb;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::Value;

use super::filter::ValueType;
use super::sql::{encode_cursor, AttributeSpec, Rule, Search, Subject};
use crate::db::Conn;
use crate::error::Result;
use crate::ids::ProjectId;
use crate::models::ModelVersion;

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

#[derive(QueryableByName)]
struct Hit {
    #[diesel(embed)]
    version: ModelVersion,
    #[diesel(sql_type = Jsonb)]
    sort_values: Value,
}

/// Checks a model version search (see [`Search::new`]).
pub fn checked(
    filter: Option<&str>,
    order_by: &[String],
    after: Option<&str>,
    limit: i64,
) -> Result<Search> {
    Search::new(&MODEL_VERSIONS, filter, order_by, after, limit)
}

/// Runs the search over the versions of models in `project_ids`; each hit with its cursor, and
/// whether another page follows.
pub async fn search(
    conn: &mut Conn,
    project_ids: &[ProjectId],
    search: &Search,
) -> Result<(Vec<(ModelVersion, String)>, bool)> {
    let hits: Vec<Hit> = search
        .statement(&MODEL_VERSIONS, project_ids)
        .query()
        .load(conn)
        .await?;
    let has_next = hits.len() as i64 > search.limit();
    let versions = hits
        .into_iter()
        .take(search.limit() as usize)
        .map(|hit| (hit.version, encode_cursor(&hit.sort_values)))
        .collect();
    Ok((versions, has_next))
}
