//! The compliance report of one model version: what it is (identity, manifest digest, files),
//! where it came from (full upstream lineage: datasets with digests and tags, code commits, runs
//! with params and their last metric values), how it was promoted (policy digest and result,
//! every approval), where it is deployed, and every audit entry about it with the result of
//! checking each against the chain. The report is signed like an export: the JWS covers the
//! SHA-256 of the report's canonical JSON, so `custody-server audit verify` checks a saved copy.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use custody_audit_format::canonical;
use custody_audit_format::claims::{ReportClaims, ISSUER, TYP_REPORT};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use super::export::is_auditor;
use super::{rfc3339, AuditEntry, AuditKeys, GENESIS_HASH};
use crate::actor::Actor;
use crate::db::schema::{
    approvals, audit_log, deployments, model_versions, models, projects as projects_table,
    promotions, users,
};
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::ids::{
    CodeCommitId, DatasetId, DatasetVersionId, DeploymentId, ModelId, ModelVersionId, ProjectId,
    PromotionId, RunId, UserId,
};
use crate::lineage::{self, Direction, NodeKind, NodeRef};
use crate::projects::{self, Role};
use crate::{artifacts, code, datasets, runs};

/// Audit entries listed in one report; a version with more is summarised by the newest ones.
const MAX_AUDIT_ENTRIES: i64 = 1_000;

/// A report and its signature, as served.
pub struct SignedReport {
    pub report: Value,
    pub report_sha256: String,
    pub signature: String,
}

impl SignedReport {
    pub fn to_json(&self) -> Value {
        json!({"report": self.report, "signature": self.signature})
    }
}

/// Builds and signs the report. Readable by server admins, auditors and the project's members.
pub async fn build(
    conn: &mut Conn,
    keys: &AuditKeys,
    actor: &Actor,
    model_version_id: ModelVersionId,
) -> Result<SignedReport> {
    type Identity = (
        ModelVersionId,
        i32,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        DateTime<Utc>,
        RunId,
        ModelId,
        String,
        ProjectId,
        String,
        String,
    );
    let found: Option<Identity> = model_versions::table
        .inner_join(models::table.inner_join(projects_table::table))
        .inner_join(users::table.on(users::id.eq(model_versions::created_by)))
        .filter(model_versions::id.eq(model_version_id))
        .select((
            model_versions::id,
            model_versions::version,
            model_versions::stage,
            model_versions::description,
            model_versions::artifact_path,
            model_versions::manifest_sha256,
            model_versions::created_at,
            model_versions::run_id,
            models::id,
            models::name,
            projects_table::id,
            projects_table::name,
            users::email,
        ))
        .first(conn)
        .await
        .optional()?;
    let (
        id,
        version,
        stage,
        description,
        artifact_path,
        manifest_sha256,
        created_at,
        run_id,
        model_id,
        model_name,
        project_id,
        project_name,
        created_by,
    ) = found
        .ok_or_else(|| Error::not_found(format!("no model version with id {model_version_id}")))?;
    // Auditors read every project; they are not members, so the lineage walk (which checks the
    // project role) runs with a read-only view that passes those checks. Only reads follow.
    let reader = if actor.is_admin {
        actor.clone()
    } else if is_auditor(conn, actor).await? {
        Actor {
            is_admin: true,
            ..actor.clone()
        }
    } else {
        projects::authorize(conn, actor, project_id, Role::Viewer).await.map_err(|_| {
            Error::forbidden("the compliance report needs a role in the model's project, the auditor role or server admin")
        })?;
        actor.clone()
    };

    let files: Vec<Value> = artifacts::of_model_versions(conn, &[id])
        .await?
        .into_iter()
        .map(|(_, f)| json!({"path": f.path, "sha256": f.sha256, "size": f.size}))
        .collect();
    let start = NodeRef::ModelVersion(id);
    let graph = lineage::traverse(
        conn,
        &reader,
        start,
        Direction::Upstream,
        lineage::MAX_DEPTH,
    )
    .await?;
    let lineage_section = lineage_section(conn, &graph).await?;
    let (promotion_section, promotion_ids) = promotions_section(conn, id).await?;
    let deployment_rows: Vec<(DeploymentId, String, DateTime<Utc>)> = deployments::table
        .filter(deployments::model_version_id.eq(id))
        .order(deployments::created_at.asc())
        .select((deployments::id, deployments::stage, deployments::created_at))
        .load(conn)
        .await?;
    let deployment_section: Vec<Value> = deployment_rows
        .iter()
        .map(|(d, stage, at)| json!({"id": d, "stage": stage, "created_at": rfc3339(*at)}))
        .collect();

    let mut subjects: Vec<String> = vec![id.to_string()];
    subjects.extend(promotion_ids.iter().map(PromotionId::to_string));
    subjects.extend(deployment_rows.iter().map(|(d, _, _)| d.to_string()));
    let audit_section = audit_section(conn, &subjects).await?;

    let now = Utc::now();
    let report = json!({
        "kind": TYP_REPORT,
        "version": 1,
        "generated_at": rfc3339(now),
        "generated_by": actor.email,
        "model_version": {
            "id": id,
            "project": {"id": project_id, "name": project_name},
            "model": {"id": model_id, "name": model_name},
            "version": version,
            "stage": stage,
            "description": description,
            "artifact_path": artifact_path,
            "manifest_sha256": manifest_sha256,
            "files": files,
            "source_run_id": run_id,
            "created_at": rfc3339(created_at),
            "created_by": created_by,
        },
        "lineage": lineage_section,
        "promotions": promotion_section,
        "deployments": deployment_section,
        "audit": audit_section,
    });
    let report_sha256 = canonical::sha256_hex(&report);
    let signature = keys.sign(&ReportClaims {
        iss: ISSUER.to_owned(),
        typ: TYP_REPORT.to_owned(),
        model_version_id: id.to_string(),
        report_sha256: report_sha256.clone(),
        generated_at: rfc3339(now),
        iat: now.timestamp(),
    })?;
    Ok(SignedReport {
        report,
        report_sha256,
        signature,
    })
}

/// Upstream nodes, resolved: datasets with digests and tags, commits, runs with params and the
/// last logged value of each metric, other model versions; and the edges between them.
async fn lineage_section(conn: &mut Conn, graph: &lineage::Graph) -> Result<Value> {
    let dataset_versions = datasets::versions_by_id(conn, &graph.ids::<DatasetVersionId>()).await?;
    let dataset_names: BTreeMap<DatasetId, String> = datasets::by_ids(
        conn,
        &dataset_versions
            .iter()
            .map(|v| v.dataset_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
    )
    .await?
    .into_iter()
    .map(|d| (d.id, d.name))
    .collect();
    // Every recall of an upstream version, in force or lifted: the report records both decisions.
    let version_ids: Vec<DatasetVersionId> = dataset_versions.iter().map(|v| v.id).collect();
    let recalls = crate::recalls::of_versions(conn, &version_ids).await?;
    let deciders: Vec<crate::ids::UserId> = recalls
        .iter()
        .flat_map(|r| std::iter::once(r.recalled_by).chain(r.lifted_by))
        .collect();
    let emails = crate::projects::emails_of(conn, &deciders).await?;
    let mut recalls_of: BTreeMap<DatasetVersionId, Vec<Value>> = BTreeMap::new();
    for r in recalls {
        recalls_of
            .entry(r.dataset_version_id)
            .or_default()
            .push(json!({
                "reason": r.reason,
                "recalled_by": emails.get(&r.recalled_by),
                "recalled_at": rfc3339(r.recalled_at),
                "in_force": r.in_force(),
                "lifted_by": r.lifted_by.and_then(|u| emails.get(&u)),
                "lifted_at": r.lifted_at.map(rfc3339),
                "lift_reason": r.lift_reason,
            }));
    }
    let mut dataset_items: Vec<Value> = dataset_versions
        .iter()
        .map(|v| {
            json!({
                "recalls": recalls_of.remove(&v.id).unwrap_or_default(),
                "id": v.id,
                "dataset": dataset_names.get(&v.dataset_id),
                "version": v.version,
                "uri": v.uri,
                "sha256": v.sha256,
                "size_bytes": v.size_bytes,
                "tags": v.tags,
                "created_at": rfc3339(v.created_at),
            })
        })
        .collect();
    dataset_items.sort_by_key(|d| {
        (
            d["dataset"].as_str().map(str::to_owned),
            d["version"].as_i64(),
        )
    });

    let commit_items: Vec<Value> = code::by_ids(conn, &graph.ids::<CodeCommitId>())
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id, "repository": c.repository, "commit": c.commit_sha, "branch": c.branch,
                "author": c.author, "message": c.message, "dirty": c.dirty,
            })
        })
        .collect();

    let run_ids = graph.ids::<RunId>();
    let mut params: BTreeMap<RunId, BTreeMap<String, String>> = BTreeMap::new();
    for p in runs::params_of(conn, &run_ids).await? {
        params.entry(p.run_id).or_default().insert(p.key, p.value);
    }
    let mut metrics: BTreeMap<RunId, BTreeMap<String, Value>> = BTreeMap::new();
    for m in runs::last_metrics(conn, &run_ids).await? {
        metrics.entry(m.run_id).or_default().insert(
            m.key,
            json!({"value": m.value, "step": m.step, "at": rfc3339(m.at)}),
        );
    }
    let run_items: Vec<Value> = runs::by_ids(conn, &run_ids)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id, "name": r.name, "status": r.status, "code_commit_id": r.code_commit_id,
                "started_at": rfc3339(r.started_at), "ended_at": r.ended_at.map(rfc3339), "tags": r.tags,
                "params": params.remove(&r.id).unwrap_or_default(),
                "metrics": metrics.remove(&r.id).unwrap_or_default(),
            })
        })
        .collect();
    let upstream_versions: Vec<Value> = graph
        .nodes
        .iter()
        .skip(1)
        .filter(|n| n.kind() == NodeKind::ModelVersion)
        .map(|n| json!({"id": n.uuid()}))
        .collect();
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| {
            json!({
                "from": {"kind": e.from_kind, "id": e.from_id},
                "to": {"kind": e.to_kind, "id": e.to_id},
                "relation": e.relation,
            })
        })
        .collect();
    Ok(json!({
        "datasets": dataset_items,
        "code_commits": commit_items,
        "runs": run_items,
        "model_versions": upstream_versions,
        "edges": edges,
    }))
}

/// Every promotion of the version with its policy digest, result and approvals.
async fn promotions_section(
    conn: &mut Conn,
    model_version_id: ModelVersionId,
) -> Result<(Vec<Value>, Vec<PromotionId>)> {
    type Row = (
        PromotionId,
        String,
        String,
        UserId,
        Option<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        String,
        String,
        Value,
        i32,
        Option<String>,
    );
    let rows: Vec<(Row, String)> = promotions::table
        .inner_join(users::table.on(users::id.eq(promotions::requested_by)))
        .filter(promotions::model_version_id.eq(model_version_id))
        .order(promotions::created_at.asc())
        .select((
            (
                promotions::id,
                promotions::stage,
                promotions::status,
                promotions::requested_by,
                promotions::comment,
                promotions::created_at,
                promotions::decided_at,
                promotions::manifest_sha256,
                promotions::policy_digest,
                promotions::policy_result,
                promotions::required_approvals,
                promotions::approver_group,
            ),
            users::email,
        ))
        .load(conn)
        .await?;
    let ids: Vec<PromotionId> = rows.iter().map(|(r, _)| r.0).collect();
    /// promotion, decision, comment, via, at, approver, auth method
    type Decision = (
        PromotionId,
        String,
        Option<String>,
        String,
        DateTime<Utc>,
        String,
        String,
    );
    let decisions: Vec<Decision> = approvals::table
        .inner_join(users::table.on(users::id.eq(approvals::approver_id)))
        .filter(approvals::promotion_id.eq_any(&ids))
        .order(approvals::at.asc())
        .select((
            approvals::promotion_id,
            approvals::decision,
            approvals::comment,
            approvals::via,
            approvals::at,
            users::email,
            approvals::auth_method,
        ))
        .load(conn)
        .await?;
    let items = rows
        .into_iter()
        .map(|((pid, stage, status, _, comment, created_at, decided_at, manifest, digest, result, required, group), requester)| {
            let approvals: Vec<Value> = decisions
                .iter()
                .filter(|d| d.0 == pid)
                .map(|(_, decision, comment, via, at, email, auth_method)| {
                    json!({"approver": email, "decision": decision, "comment": comment, "via": via, "auth_method": auth_method, "at": rfc3339(*at)})
                })
                .collect();
            json!({
                "id": pid, "stage": stage, "status": status, "requested_by": requester, "comment": comment,
                "created_at": rfc3339(created_at), "decided_at": decided_at.map(rfc3339),
                "manifest_sha256": manifest, "policy_digest": digest, "policy_result": result,
                "required_approvals": required, "approver_group": group, "approvals": approvals,
            })
        })
        .collect();
    Ok((items, ids))
}

/// The audit entries about the given subjects, each checked against the chain: its hash is
/// recomputed from its content and prev_hash, its prev_hash must be the stored hash of the entry
/// before it, and the entry after it must link to it.
async fn audit_section(conn: &mut Conn, subjects: &[String]) -> Result<Value> {
    let mut entries: Vec<AuditEntry> = audit_log::table
        .filter(audit_log::subject_id.eq_any(subjects))
        .order(audit_log::seq.desc())
        .limit(MAX_AUDIT_ENTRIES + 1)
        .select(AuditEntry::as_select())
        .load(conn)
        .await?;
    let truncated = entries.len() as i64 > MAX_AUDIT_ENTRIES;
    entries.truncate(MAX_AUDIT_ENTRIES as usize);
    entries.reverse();
    let neighbours: Vec<i64> = entries
        .iter()
        .flat_map(|e| [e.seq - 1, e.seq + 1])
        .collect();
    let linked: BTreeMap<i64, (String, String)> = audit_log::table
        .filter(audit_log::seq.eq_any(&neighbours))
        .select((audit_log::seq, audit_log::prev_hash, audit_log::hash))
        .load::<(i64, String, String)>(conn)
        .await?
        .into_iter()
        .map(|(seq, prev, hash)| (seq, (prev, hash)))
        .collect();
    let mut problems = Vec::new();
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            let check = chain_check(e, &linked);
            if let Err(why) = &check {
                problems.push(json!({"seq": e.seq, "problem": why}));
            }
            json!({
                "seq": e.seq,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
                "entry": e.canonical_document(),
                "chain": match &check { Ok(()) => "ok".to_owned(), Err(why) => why.clone() },
            })
        })
        .collect();
    Ok(json!({
        "entries": items,
        "truncated_to_newest": truncated.then_some(MAX_AUDIT_ENTRIES),
        "chain_check": {"ok": problems.is_empty(), "entries_checked": items.len(), "problems": problems},
    }))
}

fn chain_check(
    e: &AuditEntry,
    linked: &BTreeMap<i64, (String, String)>,
) -> std::result::Result<(), String> {
    if e.compute_hash() != e.hash {
        return Err("its hash does not match its content: the entry was altered".into());
    }
    let before_ok = if e.seq == 1 {
        e.prev_hash == GENESIS_HASH
    } else {
        linked
            .get(&(e.seq - 1))
            .is_some_and(|(_, hash)| *hash == e.prev_hash)
    };
    if !before_ok {
        return Err(format!(
            "its prev_hash is not the hash of seq {}: the chain is broken before it",
            e.seq - 1
        ));
    }
    match linked.get(&(e.seq + 1)) {
        Some((prev, _)) if *prev != e.hash => Err(format!(
            "seq {} does not link to it: the chain is broken after it",
            e.seq + 1
        )),
        _ => Ok(()),
    }
}

/// The printable page: the report, then its digest and signature so a printed copy can be checked.
pub fn render_html(signed: &SignedReport) -> Result<String> {
    let mut context = signed.report.clone();
    context["report_sha256"] = json!(signed.report_sha256);
    context["signature"] = json!(signed.signature);
    crate::templates::render("compliance_report.html", &context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_renders_and_escapes() {
        let (keys, _) = AuditKeys::generate().unwrap();
        let report = json!({
            "kind": TYP_REPORT, "version": 1, "generated_at": "t", "generated_by": "<b>me</b>",
            "model_version": {"id": "mv", "project": {"id": "p", "name": "proj"}, "model": {"id": "m", "name": "churn"},
                "version": 3, "stage": "production", "description": null, "artifact_path": "model",
                "manifest_sha256": "ab", "files": [{"path": "model.pt", "sha256": "cd", "size": 10}],
                "source_run_id": "r", "created_at": "t", "created_by": "a@x"},
            "lineage": {"datasets": [{"id": "d", "dataset": "train", "version": 1, "uri": "s3://x", "sha256": "ef",
                "size_bytes": 5, "tags": ["pii"], "created_at": "t", "recalls": [{"reason": "<b>consent</b>",
                "recalled_by": "s@x", "recalled_at": "t", "in_force": false, "lifted_by": "s@x",
                "lifted_at": "t", "lift_reason": "rows removed"}]}],
                "code_commits": [{"id": "c", "repository": "r", "commit": "abc", "branch": "main", "author": null, "message": null, "dirty": true}],
                "runs": [{"id": "r", "name": "train", "status": "finished", "code_commit_id": "c", "started_at": "t", "ended_at": "t",
                    "tags": {}, "params": {"lr": "0.1"}, "metrics": {"auc": {"value": 0.9, "step": 3, "at": "t"}}}],
                "model_versions": [], "edges": []},
            "promotions": [{"id": "pr", "stage": "production", "status": "applied", "requested_by": "a@x", "comment": "go",
                "created_at": "t", "decided_at": "t", "manifest_sha256": "ab", "policy_digest": "pd",
                "policy_result": {"deny": []}, "required_approvals": 1, "approver_group": null,
                "approvals": [{"approver": "b@x", "decision": "approve", "comment": null, "via": "email", "auth_method": "email_link", "at": "t"}]}],
            "deployments": [{"id": "dep", "stage": "production", "created_at": "t"}],
            "audit": {"entries": [{"seq": 1, "prev_hash": "0", "hash": "1", "entry": {"action": "model_version.register",
                "actor": "a@x", "at": "t"}, "chain": "ok"}], "truncated_to_newest": null,
                "chain_check": {"ok": true, "entries_checked": 1, "problems": []}},
        });
        let signed = SignedReport {
            report_sha256: "ff".into(),
            signature: keys.sign(&json!({"iss": "custody"})).unwrap(),
            report,
        };
        let page = render_html(&signed).unwrap();
        assert!(
            page.contains("churn")
                && page.contains("pii")
                && page.contains("b@x")
                && page.contains("lr")
                && page.contains("authenticated by email_link")
                && page.contains("lifted t by s@x: “rows removed”")
        );
        assert!(!page.contains("<b>me</b>"), "HTML must be escaped");
        assert!(!page.contains("<b>consent</b>"), "HTML must be escaped");
    }
}
