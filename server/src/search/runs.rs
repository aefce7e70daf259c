//! Run search: filters on latest metric values, params, tags and attributes, over `runs`,
//! `run_latest_metrics` and `run_params`.

use super::filter::ValueType;
use super::sql::{AttributeSpec, Bind, Rule, Search, Subject};
use crate::ids::ProjectId;
use crate::projects::Readable;

/// Runs, with MLflow's attribute names first.
pub static RUNS: Subject = Subject {
    from: "runs r",
    row: "r.*",
    id: "r.id",
    project: "r.project_id",
    tags: "r.tags",
    run: Some("r.id"),
    attributes: &[
        AttributeSpec {
            names: &["run_id", "id"],
            column: "r.id",
            value_type: ValueType::Id,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["run_name", "name", "run name"],
            column: "r.name",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["status"],
            column: "r.status",
            value_type: ValueType::Text,
            rule: Rule::RunStatus,
        },
        AttributeSpec {
            names: &["start_time", "created"],
            column: "r.started_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
        AttributeSpec {
            names: &["end_time"],
            column: "r.ended_at",
            value_type: ValueType::Time,
            rule: Rule::Plain,
        },
        // MLflow's soft delete: `active` or `deleted`.
        AttributeSpec {
            names: &["lifecycle_stage"],
            column: "(CASE WHEN r.deleted_at IS NULL THEN 'active' ELSE 'deleted' END)",
            value_type: ValueType::Text,
            rule: Rule::Plain,
        },
    ],
};

/// The statement's text and binds, for `EXPLAIN` in the tests that keep the plans honest.
pub fn explainable(search: &Search, project_ids: &[ProjectId]) -> (String, Vec<Bind>) {
    let st = search.statement(&RUNS, &Readable::Ids(project_ids.to_vec()));
    (st.sql, st.binds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TypedId;
    use uuid::Uuid;

    use crate::error::Result;
    use crate::search::sql::encode_cursor;

    fn search(filter: &str, order: &[&str]) -> Result<Search> {
        let order: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        checked(Some(filter), &order, None, 50)
    }

    fn checked(
        filter: Option<&str>,
        order: &[String],
        after: Option<&str>,
        limit: i64,
    ) -> Result<Search> {
        Search::new(&RUNS, filter, order, after, limit)
    }

    #[test]
    fn user_text_only_reaches_sql_as_binds() {
        let st = search(
            "tags.`x'); drop table runs; --` = 'y''; drop table runs; --' and params.a LIKE '%\\'",
            &["params.`'; delete from runs` DESC"],
        )
        .unwrap()
        .statement(
            &RUNS,
            &Readable::Ids(vec![ProjectId::from_uuid(Uuid::nil())]),
        );
        assert!(!st.sql.contains("drop"), "{}", st.sql);
        assert!(!st.sql.contains("delete"), "{}", st.sql);
        assert_eq!(st.binds.len(), 7, "{:?}", st.binds);
    }

    #[test]
    fn semantic_errors_name_the_column() {
        let message = |filter: &str| search(filter, &[]).unwrap_err().to_string();
        let err = message("attributes.status = 'DONE'");
        assert!(
            err.contains("column 21") && err.contains("RUNNING"),
            "{err}"
        );
        assert!(message("attributes.start_time > 'yesterday'").contains("RFC 3339"));
        assert!(message("attributes.run_id = 'x'").contains("not an id"));
        let err = message("attributes.colour = 'red'");
        assert!(
            err.contains("unknown attribute `colour`") && err.contains("run_name"),
            "{err}"
        );
        let err = message("attributes.start_time LIKE 'x'");
        assert!(err.contains("column 1"), "{err}");
        let err = search("", &["metrics.a up"]).unwrap_err().to_string();
        assert!(err.starts_with("orderBy[0]: at column 11"), "{err}");
        let err = search("", &["attributes.nope"]).unwrap_err().to_string();
        assert!(err.contains("unknown attribute"), "{err}");
    }

    #[test]
    fn cursors_must_fit_the_order() {
        let order = vec!["metrics.auc DESC".to_string()];
        let good = encode_cursor(&serde_json::json!([0.5, Uuid::nil().to_string()]));
        assert!(checked(None, &order, Some(&good), 10).is_ok());
        let null = encode_cursor(&serde_json::json!([null, Uuid::nil().to_string()]));
        assert!(checked(None, &order, Some(&null), 10).is_ok());
        for bad in [
            "garbage!".to_string(),
            encode_cursor(&serde_json::json!(["high", Uuid::nil().to_string()])),
            encode_cursor(&serde_json::json!([0.5])),
            encode_cursor(&serde_json::json!([0.5, null])),
            encode_cursor(&serde_json::json!({"a": 1})),
        ] {
            assert!(checked(None, &order, Some(&bad), 10).is_err(), "{bad}");
        }
    }
}
