//! The one input document the policies see (its fields are listed in policies/README.md): the
//! version, the last metrics of its source run, the version now in the stage, upstream lineage,
//! the requester, the eligible approvers and the decisions so far.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::db::schema::{
    code_commits, dataset_versions, datasets, model_versions, projects as projects_table,
    runs as runs_table,
};
use crate::db::Conn;
use crate::error::Result;
use crate::ids::{CodeCommitId, DatasetVersionId, RunId, UserId};
use crate::lineage::{self, Direction, NodeRef};
use crate::models::{Model, ModelVersion};
use crate::promotions::approvals;
use crate::stages::{self, ARCHIVED};

/// The last logged value of each metric of a run.
async fn last_metrics(conn: &mut Conn, run_id: RunId) -> Result<BTreeMap<String, f64>> {
    Ok(crate::runs::last_metrics(conn, &[run_id])
        .await?
        .into_iter()
        .map(|m| (m.key, m.value))
        .collect())
}

async fn version_document(conn: &mut Conn, version: &ModelVersion) -> Result<Value> {
    Ok(json!({
        "id": version.id,
        "version": version.version,
        "manifest_sha256": version.manifest_sha256,
        "run_id": version.run_id,
        "stage": version.stage,
        "metrics": last_metrics(conn, version.run_id).await?,
    }))
}

async fn dataset_documents(conn: &mut Conn, ids: &[DatasetVersionId]) -> Result<Vec<Value>> {
    let rows: Vec<(DatasetVersionId, String, i32, String, String, Vec<String>)> =
        dataset_versions::table
            .inner_join(datasets::table)
            .filter(dataset_versions::id.eq_any(ids))
            .order(dataset_versions::id)
            .select((
                dataset_versions::id,
                datasets::name,
                dataset_versions::version,
                dataset_versions::uri,
                dataset_versions::sha256,
                dataset_versions::tags,
            ))
            .load(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, version, uri, sha256, tags)| {
            json!({"id": id, "dataset": name, "version": version, "uri": uri, "sha256": sha256, "tags": tags})
        })
        .collect())
}

/// Who asks, as the policy input needs them.
pub struct Requester<'a> {
    pub id: Option<UserId>,
    pub email: &'a str,
}

/// The one input document the policies see (schema in policies/README.md). `approvals` are the
/// decisions taken so far (`{email, decision, granted_by}`), empty at request time.
pub async fn policy_input(
    conn: &mut Conn,
    version: &ModelVersion,
    model: &Model,
    stage: &stages::Stage,
    requester: &Requester<'_>,
    approvals: Vec<Value>,
) -> Result<Value> {
    let project: String = projects_table::table
        .find(model.project_id)
        .select(projects_table::name)
        .first(conn)
        .await?;
    // The approvers the request would have (before the policy names a group): the same rule as
    // the mails and decisions.
    let approvers: Vec<Value> = match requester.id {
        Some(requester_id) => {
            let gate = approvals::Gatekeeping {
                project: project.clone(),
                requester_id,
                requester_email: requester.email.to_string(),
                approver_group: None,
            };
            approvals::eligible(conn, model.project_id, &gate)
                .await?
                .iter()
                .map(approvals::Member::to_policy_json)
                .collect()
        }
        None => Vec::new(),
    };
    let all_stages = stages::list(conn, model.project_id).await?;
    let current_stage = version.stage.as_deref().and_then(|name| {
        all_stages
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.name.clone(), s.requires_approval))
    });
    let stage_positions: BTreeMap<&str, i32> = all_stages
        .iter()
        .map(|s| (s.name.as_str(), s.position))
        .collect();
    let current = if stage.name == ARCHIVED {
        None
    } else {
        model_versions::table
            .filter(model_versions::model_id.eq(model.id))
            .filter(model_versions::stage.eq(&stage.name))
            .select(ModelVersion::as_select())
            .first(conn)
            .await
            .optional()?
    };
    let current = match current {
        Some(c) => version_document(conn, &c).await?,
        None => Value::Null,
    };
    let upstream = lineage::walk(
        conn,
        NodeRef::ModelVersion(version.id),
        Direction::Upstream,
        lineage::MAX_DEPTH,
    )
    .await?;
    let dataset_ids: Vec<DatasetVersionId> = upstream.ids();
    let commit_ids: Vec<CodeCommitId> = upstream.ids();
    let datasets_doc = dataset_documents(conn, &dataset_ids).await?;
    let recalled = crate::recalls::in_force_documents(conn, &dataset_ids).await?;
    let commits: Vec<(String, String, bool, Option<String>)> = code_commits::table
        .filter(code_commits::id.eq_any(&commit_ids))
        .order(code_commits::id)
        .select((
            code_commits::repository,
            code_commits::commit_sha,
            code_commits::dirty,
            code_commits::branch,
        ))
        .load(conn)
        .await?;
    // Evaluation runs depend on the version: run —evaluated→ model_version (or any relation).
    let downstream = lineage::walk(
        conn,
        NodeRef::ModelVersion(version.id),
        Direction::Downstream,
        1,
    )
    .await?;
    let mut evaluations = Vec::new();
    for edge in &downstream.edges {
        let NodeRef::Run(run_id) = edge.from() else {
            continue;
        };
        let name: Option<String> = runs_table::table
            .find(run_id)
            .select(runs_table::name)
            .first(conn)
            .await?;
        let consumed = lineage::targets_of(conn, &[run_id], "consumed").await?;
        let consumed: Vec<DatasetVersionId> = consumed.into_values().flatten().collect();
        evaluations.push(json!({
            "run_id": run_id,
            "name": name,
            "relation": edge.relation,
            "metrics": last_metrics(conn, run_id).await?,
            "datasets": dataset_documents(conn, &consumed).await?,
        }));
    }
    Ok(json!({
        "project": project,
        "target_stage": stage.name,
        "target_stage_position": stage.position,
        "target_stage_requires_approval": stage.requires_approval,
        "current_stage": current_stage.as_ref().map(|(name, _)| name),
        "current_stage_requires_approval": current_stage.as_ref().is_some_and(|(_, r)| *r),
        "stage_positions": stage_positions,
        "requester": {"email": requester.email},
        "approvers": approvers,
        "approvals": approvals,
        "model": {
            "id": model.id,
            "name": model.name,
            "primary_metric": model.primary_metric,
            "higher_is_better": model.higher_is_better,
        },
        "model_version": version_document(conn, version).await?,
        "current": current,
        "lineage": {
            "datasets": datasets_doc,
            "recalled": recalled,
            "code_commits": commits.into_iter().map(|(repository, commit, dirty, branch)| json!({
                "repository": repository, "commit": commit, "dirty": dirty, "branch": branch,
            })).collect::<Vec<_>>(),
        },
        "evaluations": evaluations,
    }))
}

/// The dataset versions an input document names upstream (`lineage.datasets[*].id`).
pub fn upstream_dataset_versions(input: &Value) -> Vec<DatasetVersionId> {
    input
        .pointer("/lineage/datasets")
        .and_then(Value::as_array)
        .map(|datasets| datasets.iter().filter_map(dataset_version_id).collect())
        .unwrap_or_default()
}

fn dataset_version_id(dataset: &Value) -> Option<DatasetVersionId> {
    dataset.get("id")?.as_str()?.parse().ok()
}

/// Leaves in an input document only the upstream datasets `visible` accepts, and counts the
/// others in `lineage.hidden_datasets`, so a reader of a promotion learns nothing about another
/// project's data from it (not even a digest).
pub fn hide_datasets(input: &mut Value, visible: impl Fn(DatasetVersionId) -> bool) {
    let Some(lineage) = input.get_mut("lineage").and_then(Value::as_object_mut) else {
        return;
    };
    let mut hidden = 0;
    if let Some(datasets) = lineage.get_mut("datasets").and_then(Value::as_array_mut) {
        let before = datasets.len();
        datasets.retain(|d| dataset_version_id(d).is_some_and(&visible));
        hidden = before - datasets.len();
    }
    // A recall names its dataset; one the reader may not see stays, without its name and reason
    // (the promotion's denial rests on it), as an id only.
    if let Some(recalled) = lineage.get_mut("recalled").and_then(Value::as_array_mut) {
        for recall in recalled.iter_mut() {
            let visible_recall = recall
                .get("dataset_version_id")
                .and_then(Value::as_str)
                .and_then(|id| id.parse().ok())
                .is_some_and(&visible);
            if !visible_recall {
                *recall = serde_json::json!({"hidden": true});
            }
        }
    }
    lineage.insert("hidden_datasets".into(), hidden.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_datasets_are_removed_and_counted() {
        let (a, b) = (DatasetVersionId::generate(), DatasetVersionId::generate());
        let mut input =
            json!({"lineage": {"datasets": [{"id": a, "sha256": "x"}, {"id": b, "sha256": "y"}]}});
        assert_eq!(upstream_dataset_versions(&input), vec![a, b]);
        hide_datasets(&mut input, |id| id == a);
        assert_eq!(
            input["lineage"]["datasets"],
            json!([{"id": a, "sha256": "x"}])
        );
        assert_eq!(input["lineage"]["hidden_datasets"], 1);
    }
}
