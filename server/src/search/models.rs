//! Model search: by name, tag and creation time, across the readable projects.

use diesel::sql_types::Jsonb;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::Value;

use super::filter::ValueType;
use super::sql::{encode_cursor, AttributeSpec, Rule, Search, Subject};
use crate::db::Conn;
use crate::error::Result;
use crate::ids::ProjectId;
use crate::models::Model;

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

#[derive(QueryableByName)]
struct Hit {
    #[diesel(embed)]
    model: Model,
    #[diesel(sql_type = Jsonb)]
    sort_values: Value,
}

/// Checks a model search (see [`Search::new`]).
pub fn checked(
    filter: Option<&str>,
    order_by: &[String],
    after: Option<&str>,
    limit: i64,
) -> Result<Search> {
    Search::new(&MODELS, filter, order_by, after, limit)
}

/// Runs the search over the models of `project_ids`; each hit with its cursor, and whether
/// another page follows.
pub async fn search(
    conn: &mut Conn,
    project_ids: &[ProjectId],
    search: &Search,
) -> Result<(Vec<(Model, String)>, bool)> {
    let hits: Vec<Hit> = search
        .statement(&MODELS, project_ids)
        .query()
        .load(conn)
        .await?;
    let has_next = hits.len() as i64 > search.limit();
    let models = hits
        .into_iter()
        .take(search.limit() as usize)
        .map(|hit| (hit.model, encode_cursor(&hit.sort_values)))
        .collect();
    Ok((models, has_next))
}
