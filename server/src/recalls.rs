//! Dataset recalls: a dataset version found to hold data that may not be used (consent
//! withdrawn, a licence breached, poisoned rows) is marked recalled by an approver or admin of
//! its project, with a reason. Everything built on it learns of it: the projects downstream are
//! notified (their admins by mail, their webhooks), promotion policies see the recalled ancestors
//! of a version (`input.lineage.recalled`), and the version's page and the compliance report show
//! them. Lifting a recall is a decision of its own, recorded beside it; the history stays.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::datasets::DatasetVersion;
use crate::db::schema::{
    dataset_recalls, dataset_versions, datasets, memberships, projects, users,
};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{DatasetRecallId, DatasetVersionId, ModelVersionId, ProjectId, UserId};
use crate::lineage::{self, NodeRef};
use crate::notify;
use crate::projects::Role;
use crate::validate;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = dataset_recalls)]
pub struct Recall {
    pub id: DatasetRecallId,
    pub dataset_version_id: DatasetVersionId,
    pub reason: String,
    pub recalled_by: UserId,
    pub recalled_at: DateTime<Utc>,
    pub lifted_by: Option<UserId>,
    pub lifted_at: Option<DateTime<Utc>>,
    pub lift_reason: Option<String>,
}

impl Recall {
    pub fn in_force(&self) -> bool {
        self.lifted_at.is_none()
    }
}

fn check_reason(what: &str, reason: &str) -> Result<()> {
    validate::text(what, reason, 2_000)?;
    if reason.trim().is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    Ok(())
}

/// The dataset version's dataset name, number and project, for mails and audit entries.
async fn describe(conn: &mut Conn, id: DatasetVersionId) -> Result<(String, i32, ProjectId)> {
    Ok(dataset_versions::table
        .inner_join(datasets::table)
        .filter(dataset_versions::id.eq(id))
        .select((
            datasets::name,
            dataset_versions::version,
            datasets::project_id,
        ))
        .first(conn)
        .await?)
}

/// Recalls a dataset version (APPROVER or ADMIN of its project). Refused while a recall of it is
/// in force.
pub async fn recall(
    conn: &mut Conn,
    actor: &Actor,
    version_id: DatasetVersionId,
    reason: &str,
) -> Result<Recall> {
    check_reason("reason", reason)?;
    let node = NodeRef::DatasetVersion(version_id);
    lineage::authorize_node(conn, actor, node, Role::Approver).await?;
    let recall: Recall = diesel::insert_into(dataset_recalls::table)
        .values((
            dataset_recalls::id.eq(DatasetRecallId::generate()),
            dataset_recalls::dataset_version_id.eq(version_id),
            dataset_recalls::reason.eq(reason.trim()),
            dataset_recalls::recalled_by.eq(actor.user_id()?),
        ))
        .on_conflict_do_nothing()
        .returning(Recall::as_returning())
        .get_result(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            Error::conflict(format!(
                "dataset version {version_id} is already recalled: lift that recall first"
            ))
        })?;
    let (dataset, version, project_id) = describe(conn, version_id).await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "dataset_version.recall",
            project_id: Some(project_id),
            subject_kind: "dataset_version",
            subject_id: version_id.to_string(),
            before: None,
            after: Some(json!({
                "recall_id": recall.id,
                "dataset": dataset,
                "version": version,
                "reason": recall.reason,
            })),
        },
    )
    .await?;
    notify_affected(conn, actor, &recall, &dataset, version, project_id).await?;
    Ok(recall)
}

/// Lifts the recall in force on a dataset version (APPROVER or ADMIN of its project), with the
/// reason it may be used again.
pub async fn lift(
    conn: &mut Conn,
    actor: &Actor,
    version_id: DatasetVersionId,
    reason: &str,
) -> Result<Recall> {
    check_reason("reason", reason)?;
    let node = NodeRef::DatasetVersion(version_id);
    lineage::authorize_node(conn, actor, node, Role::Approver).await?;
    let lifted: Recall = diesel::update(
        dataset_recalls::table
            .filter(dataset_recalls::dataset_version_id.eq(version_id))
            .filter(dataset_recalls::lifted_at.is_null()),
    )
    .set((
        dataset_recalls::lifted_by.eq(actor.user_id()?),
        dataset_recalls::lifted_at.eq(Utc::now()),
        dataset_recalls::lift_reason.eq(reason.trim()),
    ))
    .returning(Recall::as_returning())
    .get_result(conn)
    .await
    .optional()?
    .ok_or_else(|| {
        Error::conflict(format!(
            "dataset version {version_id} has no recall in force to lift"
        ))
    })?;
    let (dataset, version, project_id) = describe(conn, version_id).await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "dataset_version.lift_recall",
            project_id: Some(project_id),
            subject_kind: "dataset_version",
            subject_id: version_id.to_string(),
            before: Some(json!({"recall_id": lifted.id, "reason": lifted.reason})),
            after: Some(json!({
                "dataset": dataset,
                "version": version,
                "lift_reason": lifted.lift_reason,
            })),
        },
    )
    .await?;
    notify::enqueue_webhooks(
        conn,
        project_id,
        "dataset_version.recall_lifted",
        &json!({
            "dataset_version_id": version_id,
            "dataset": dataset,
            "version": version,
            "reason": lifted.lift_reason,
            "by": actor.email,
        }),
    )
    .await?;
    Ok(lifted)
}

/// Tells every project with something downstream of the recalled version (and the version's own
/// project): a webhook event per project, and a mail to each of its admins. Each project hears
/// of its own affected model versions only.
async fn notify_affected(
    conn: &mut Conn,
    actor: &Actor,
    recall: &Recall,
    dataset: &str,
    version: i32,
    own_project: ProjectId,
) -> Result<()> {
    let start = NodeRef::DatasetVersion(recall.dataset_version_id);
    let downstream = lineage::descendants(conn, start, lineage::MAX_DEPTH).await?;
    let mut affected: BTreeMap<ProjectId, Vec<ModelVersionId>> = BTreeMap::new();
    affected.entry(own_project).or_default();
    for (node, project) in lineage::owners(conn, &downstream).await? {
        let models = affected.entry(project).or_default();
        if let NodeRef::ModelVersion(id) = node {
            models.push(id);
        }
    }
    let ids: Vec<ProjectId> = affected.keys().copied().collect();
    let names: BTreeMap<ProjectId, String> = projects::table
        .filter(projects::id.eq_any(&ids))
        .select((projects::id, projects::name))
        .load::<(ProjectId, String)>(conn)
        .await?
        .into_iter()
        .collect();
    let admins: Vec<(ProjectId, String)> = memberships::table
        .inner_join(users::table)
        .filter(memberships::project_id.eq_any(&ids))
        .filter(memberships::role.eq(Role::Admin))
        .select((memberships::project_id, users::email))
        .load(conn)
        .await?;
    for (project_id, model_versions) in &affected {
        let project = names.get(project_id).map(String::as_str).unwrap_or("");
        let event = json!({
            "dataset_version_id": recall.dataset_version_id,
            "dataset": dataset,
            "version": version,
            "reason": recall.reason,
            "by": actor.email,
            "affected_model_versions": model_versions,
        });
        notify::enqueue_webhooks(conn, *project_id, "dataset_version.recalled", &event).await?;
        let context = json!({
            "project": project,
            "dataset": dataset,
            "version": version,
            "reason": recall.reason,
            "by": actor.email,
            "affected_model_versions": model_versions.len(),
        });
        let subject = format!("Recalled: {dataset} version {version} (affects {project})");
        let recipients: BTreeSet<&str> = admins
            .iter()
            .filter(|(p, _)| p == project_id)
            .map(|(_, email)| email.as_str())
            .collect();
        for to in recipients {
            notify::enqueue_email(conn, to, &subject, "dataset_recall", &context, recall.id)
                .await?;
        }
    }
    Ok(())
}

/// Every recall of these versions, in force or lifted, oldest first.
pub async fn of_versions(conn: &mut Conn, ids: &[DatasetVersionId]) -> Result<Vec<Recall>> {
    Ok(dataset_recalls::table
        .filter(dataset_recalls::dataset_version_id.eq_any(ids))
        .order((
            dataset_recalls::dataset_version_id,
            dataset_recalls::recalled_at,
        ))
        .select(Recall::as_select())
        .load(conn)
        .await?)
}

/// The recalls in force among `ids`, as documents for policy input and reports:
/// `{dataset_version_id, dataset, version, reason, recalled_at}`.
pub async fn in_force_documents(conn: &mut Conn, ids: &[DatasetVersionId]) -> Result<Vec<Value>> {
    let rows: Vec<(DatasetVersionId, String, i32, String, DateTime<Utc>)> = dataset_recalls::table
        .inner_join(dataset_versions::table.inner_join(datasets::table))
        .filter(dataset_recalls::dataset_version_id.eq_any(ids))
        .filter(dataset_recalls::lifted_at.is_null())
        .order(dataset_recalls::dataset_version_id)
        .select((
            dataset_recalls::dataset_version_id,
            datasets::name,
            dataset_versions::version,
            dataset_recalls::reason,
            dataset_recalls::recalled_at,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, dataset, version, reason, at)| {
            json!({
                "dataset_version_id": id,
                "dataset": dataset,
                "version": version,
                "reason": reason,
                "recalled_at": at,
            })
        })
        .collect())
}

/// The dataset versions upstream of a node (at any depth) under a recall in force.
pub async fn recalled_upstream(conn: &mut Conn, node: NodeRef) -> Result<Vec<DatasetVersion>> {
    let upstream =
        lineage::walk(conn, node, lineage::Direction::Upstream, lineage::MAX_DEPTH).await?;
    let ids: Vec<DatasetVersionId> = upstream.ids();
    Ok(dataset_versions::table
        .inner_join(dataset_recalls::table)
        .filter(dataset_versions::id.eq_any(&ids))
        .filter(dataset_recalls::lifted_at.is_null())
        .order(dataset_versions::id)
        .select(DatasetVersion::as_select())
        .load(conn)
        .await?)
}
