//! Promotion requests: the policy check, the approval gate, expiry, cancellation, and applying a
//! promotion (the version takes the stage, the previous holder is archived, a deployment is
//! recorded), each in the caller's transaction with its audit entries and outbox rows.
//!
//! `approvals` holds who may decide and the decisions (links, pages, the quorum); `input` builds
//! the document the policies evaluate.

pub mod approvals;

pub use crate::projects::ApprovalSignIn;
mod input;

pub use input::{hide_datasets, policy_input, upstream_dataset_versions, Requester};

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::actor::Actor;
use crate::audit::{self, Change};
use crate::auth::TokenKeys;
use crate::db::schema::{
    deployments, model_versions, models as models_table, projects as projects_table, promotions,
    users,
};
use crate::db::{text_enum, Conn, Prepared};
use crate::error::{Error, Result};
use crate::ids::{DeploymentId, ModelVersionId, ProjectId, PromotionId, UserId};
use crate::lineage::{self, NodeRef};
use crate::models::{self, Model, ModelVersion};
use crate::notify;
use crate::policy::{Decision, PolicyBundle};
use crate::projects::{self, Role};
use crate::stages::{self, ARCHIVED};

/// How long a request waits for approvals when the policy does not say.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

text_enum! {
    #[derive(async_graphql::Enum)]
    #[graphql(name = "PromotionStatus")]
    pub enum Status as "promotion status" {
        Pending = "pending",
        // Reserved: a promotion that reached its quorum is applied in the same transaction.
        Approved = "approved",
        Rejected = "rejected",
        Applied = "applied",
        Expired = "expired",
        Cancelled = "cancelled",
        Denied = "denied",
    }
}

/// A model version placed in a stage by an applied promotion (a DEPLOYMENT lineage node,
/// `deployment —deploys→ model_version`).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = deployments)]
pub struct Deployment {
    pub id: DeploymentId,
    pub model_version_id: ModelVersionId,
    pub stage: String,
    pub created_at: DateTime<Utc>,
}

pub async fn deployments_by_ids(conn: &mut Conn, ids: &[DeploymentId]) -> Result<Vec<Deployment>> {
    Ok(deployments::table
        .filter(deployments::id.eq_any(ids))
        .order(deployments::created_at.desc())
        .select(Deployment::as_select())
        .load(conn)
        .await?)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = promotions)]
pub struct Promotion {
    pub id: PromotionId,
    pub project_id: ProjectId,
    pub model_version_id: ModelVersionId,
    pub stage: String,
    pub status: Status,
    pub requested_by: UserId,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub manifest_sha256: String,
    pub policy_digest: String,
    pub policy_input: Value,
    pub policy_result: Value,
    pub required_approvals: i32,
    pub approver_group: Option<String>,
    pub replaced_version_id: Option<ModelVersionId>,
}

/// What a promotion needs besides the database: the policies and the link signer.
pub struct Gate<'a> {
    pub policy: &'a PolicyBundle,
    pub keys: &'a TokenKeys,
    pub public_url: &'a str,
    pub approval_rules: ApprovalRules,
}

/// What deciding on a promotion demands of approvers, server-wide; a project may choose its own
/// rule (`projects::set_approval_sign_in`).
#[derive(Debug, Clone, Copy)]
pub struct ApprovalRules {
    /// The rule of projects that have not chosen one.
    pub default: ApprovalSignIn,
    /// Under the `session` rule, how recent the approver's sign-in must be.
    pub recent_sign_in: chrono::Duration,
}

/// Evaluates the policies for a would-be promotion without recording anything.
pub async fn dry_run(
    conn: &mut Conn,
    actor: &Actor,
    policy: &PolicyBundle,
    model_version_id: ModelVersionId,
    stage: &str,
) -> Result<(Value, Decision)> {
    let (version, model) =
        models::version_and_model_for(conn, actor, model_version_id, Role::Viewer).await?;
    let stage = stages::find(conn, model.project_id, stage).await?;
    let requester = Requester {
        id: actor.user_id,
        email: &actor.email,
    };
    let input = policy_input(conn, &version, &model, &stage, &requester, Vec::new()).await?;
    let floor = approval_floor(conn, model.project_id, &version, &stage).await?;
    let decision = with_floor(policy.evaluate(&input), floor);
    Ok((input, decision))
}

/// The fewest approvals a move of `version` into `stage` needs, whatever the policy says: one
/// into a stage that requires approval; and leaving a stage that requires approval needs at
/// least the gate of that stage — one, or as many as the promotion that brought the version
/// there needed — so nobody empties `staging` or `production` alone (to `archived` or anywhere).
pub async fn approval_floor(
    conn: &mut Conn,
    project_id: ProjectId,
    version: &ModelVersion,
    stage: &stages::Stage,
) -> Result<i32> {
    let mut floor = i32::from(stage.requires_approval);
    let Some(current) = version.stage.as_deref().filter(|c| *c != stage.name) else {
        return Ok(floor);
    };
    let left = stages::find(conn, project_id, current).await.ok();
    if left.is_some_and(|l| l.requires_approval) {
        // The gate the version passed to get where it is.
        let entered: Option<i32> = promotions::table
            .filter(promotions::model_version_id.eq(version.id))
            .filter(promotions::stage.eq(current))
            .filter(promotions::status.eq(Status::Applied))
            .order(promotions::decided_at.desc())
            .select(promotions::required_approvals)
            .first(conn)
            .await
            .optional()?;
        floor = floor.max(1).max(entered.unwrap_or(1));
    }
    Ok(floor)
}

fn with_floor(mut decision: Decision, floor: i32) -> Decision {
    if decision.required_approvals < floor {
        decision.required_approvals = floor;
    }
    decision
}

/// Requests a promotion: DENIED with the policy's reasons, APPLIED at once when no approval is
/// needed, else PENDING with links mailed to every eligible approver.
pub async fn request(
    conn: &mut Conn,
    actor: &Actor,
    gate: &Gate<'_>,
    model_version_id: ModelVersionId,
    stage_name: &str,
    comment: Option<&str>,
) -> Result<Promotion> {
    crate::validate::optional_text("comment", comment, 10_000)?;
    let (version, model) =
        models::version_and_model_for(conn, actor, model_version_id, Role::Contributor).await?;
    let requester = actor.user_id()?;
    let stage = stages::find(conn, model.project_id, stage_name).await?;
    if version.stage.as_deref() == Some(stage.name.as_str()) {
        return Err(Error::conflict(format!(
            "version {} is already in {}",
            version.version, stage.name
        )));
    }
    let pending: bool = diesel::select(diesel::dsl::exists(
        promotions::table
            .filter(promotions::model_version_id.eq(version.id))
            .filter(promotions::stage.eq(&stage.name))
            .filter(promotions::status.eq(Status::Pending)),
    ))
    .get_result(conn)
    .await?;
    if pending {
        return Err(Error::conflict(format!(
            "a promotion of version {} to {} is already pending",
            version.version, stage.name
        )));
    }
    let input = policy_input(
        conn,
        &version,
        &model,
        &stage,
        &Requester {
            id: Some(requester),
            email: &actor.email,
        },
        Vec::new(),
    )
    .await?;
    let floor = approval_floor(conn, model.project_id, &version, &stage).await?;
    let decision = with_floor(gate.policy.evaluate(&input), floor);
    let now = Utc::now();
    let expires_at = now
        + chrono::Duration::from_std(decision.expires_in.unwrap_or(DEFAULT_EXPIRY))
            .map_err(Error::internal)?;
    let status = if !decision.deny.is_empty() {
        Status::Denied
    } else {
        Status::Pending
    };
    let promotion: Promotion = diesel::insert_into(promotions::table)
        .values((
            promotions::id.eq(PromotionId::generate()),
            promotions::project_id.eq(model.project_id),
            promotions::model_version_id.eq(version.id),
            promotions::stage.eq(&stage.name),
            promotions::status.eq(status),
            promotions::requested_by.eq(requester),
            promotions::comment.eq(comment),
            promotions::expires_at.eq(expires_at),
            promotions::decided_at.eq((status == Status::Denied).then_some(now)),
            promotions::manifest_sha256.eq(&version.manifest_sha256),
            promotions::policy_digest.eq(gate.policy.digest()),
            promotions::policy_input.eq(&input),
            promotions::policy_result.eq(decision.to_json()),
            promotions::required_approvals.eq(decision.required_approvals),
            promotions::approver_group.eq(&decision.approver_group),
        ))
        .returning(Promotion::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: if status == Status::Denied {
                "promotion.deny"
            } else {
                "promotion.request"
            },
            project_id: Some(model.project_id),
            subject_kind: "promotion",
            subject_id: promotion.id.to_string(),
            before: None,
            after: Some(json!({
                "model": model.name,
                "version": version.version,
                "model_version_id": version.id,
                "stage": stage.name,
                "status": promotion.status,
                "manifest_sha256": version.manifest_sha256,
                "policy": decision.to_json(),
                "metrics": input["model_version"]["metrics"],
                "comment": comment,
            })),
        },
    )
    .await?;
    if status == Status::Denied {
        return Ok(promotion);
    }
    notify::enqueue_webhooks(
        conn,
        model.project_id,
        "promotion.requested",
        &event_body(&promotion, &model, &version),
    )
    .await?;
    if promotion.required_approvals == 0 {
        return apply(conn, actor, &promotion).await;
    }
    let approvers = eligible_approvers(conn, &promotion).await?;
    let mail = approvals::LinkMail {
        promotion: &promotion,
        model: &model,
        version: &version,
        requester_email: &actor.email,
    };
    for approver in &approvers {
        approvals::send_link(conn, gate, &mail, approver).await?;
    }
    Ok(promotion)
}

pub fn event_body(promotion: &Promotion, model: &Model, version: &ModelVersion) -> Value {
    json!({
        "promotion_id": promotion.id,
        "status": promotion.status,
        "stage": promotion.stage,
        "model": model.name,
        "version": version.version,
        "model_version_id": version.id,
        "manifest_sha256": promotion.manifest_sha256,
        "policy_digest": promotion.policy_digest,
    })
}

/// Members who may decide on a promotion: the one rule of [`approvals::ineligibility`] (approver
/// or admin role, in the required group if any, never the requester nor anyone the requester
/// appointed). Only members: nobody outside the project is ever mailed or counted.
pub async fn eligible_approvers(
    conn: &mut Conn,
    promotion: &Promotion,
) -> Result<Vec<approvals::Member>> {
    let gate = approvals::Gatekeeping::of(conn, promotion).await?;
    approvals::eligible(conn, promotion.project_id, &gate).await
}

/// Locks a promotion row for a state change.
pub async fn lock(conn: &mut Conn, id: PromotionId) -> Result<Promotion> {
    promotions::table
        .find(id)
        .select(Promotion::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no promotion with id {id}")))
}

pub async fn set_status(conn: &mut Conn, id: PromotionId, status: Status) -> Result<Promotion> {
    Ok(diesel::update(promotions::table.find(id))
        .set((
            promotions::status.eq(status),
            promotions::decided_at.eq(Utc::now()),
        ))
        .returning(Promotion::as_returning())
        .get_result(conn)
        .await?)
}

/// Takes the lock of one model's stage until the transaction ends: one applier per model and
/// stage at a time, so a stage never holds two versions (`apply`, `emergency_archive`).
async fn lock_stage(conn: &mut Conn, model: &Model, stage: &str) -> Result<()> {
    Prepared(
        diesel::sql_query(
            "SELECT pg_advisory_xact_lock(hashtextextended('custody.stage.' || $1 || '/' || $2, 0))",
        )
        .bind::<Text, _>(model.id.to_string())
        .bind::<Text, _>(stage),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies a promotion whose gate is passed: the version takes the stage, the previous holder
/// is archived, a deployment is recorded (a DEPLOYMENT lineage node), all audited.
pub async fn apply(conn: &mut Conn, actor: &Actor, promotion: &Promotion) -> Result<Promotion> {
    let (version, model) = models::version_and_model(conn, promotion.model_version_id).await?;
    lock_stage(conn, &model, &promotion.stage).await?;
    let mut replaced: Option<ModelVersion> = None;
    if promotion.stage != ARCHIVED {
        replaced = model_versions::table
            .filter(model_versions::model_id.eq(model.id))
            .filter(model_versions::stage.eq(&promotion.stage))
            .filter(model_versions::id.ne(version.id))
            .select(ModelVersion::as_select())
            .first(conn)
            .await
            .optional()?;
        if let Some(old) = &replaced {
            set_stage(conn, actor, &model, old, ARCHIVED).await?;
        }
    }
    set_stage(conn, actor, &model, &version, &promotion.stage).await?;
    let deployment_id = DeploymentId::generate();
    diesel::insert_into(deployments::table)
        .values((
            deployments::id.eq(deployment_id),
            deployments::model_version_id.eq(version.id),
            deployments::stage.eq(&promotion.stage),
            deployments::promotion_id.eq(promotion.id),
            deployments::replaced_version_id.eq(replaced.as_ref().map(|r| r.id)),
            // Taken under the stage lock, so deployments order as they were applied (the
            // column default, now(), is the transaction's start).
            deployments::created_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    lineage::record_new_node_edge(
        conn,
        NodeRef::Deployment(deployment_id),
        NodeRef::ModelVersion(version.id),
        "deploys",
    )
    .await?;
    let applied: Promotion = diesel::update(promotions::table.find(promotion.id))
        .set((
            promotions::status.eq(Status::Applied),
            promotions::decided_at.eq(Utc::now()),
            promotions::replaced_version_id.eq(replaced.as_ref().map(|r| r.id)),
        ))
        .returning(Promotion::as_returning())
        .get_result(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "promotion.apply",
            project_id: Some(model.project_id),
            subject_kind: "promotion",
            subject_id: promotion.id.to_string(),
            before: Some(json!({"status": promotion.status})),
            after: Some(json!({
                "status": applied.status,
                "model_version_id": version.id,
                "stage": promotion.stage,
                "deployment_id": deployment_id,
                "replaced_version_id": replaced.as_ref().map(|r| r.id),
                "manifest_sha256": promotion.manifest_sha256,
                "policy_digest": promotion.policy_digest,
            })),
        },
    )
    .await?;
    notify::enqueue_webhooks(
        conn,
        model.project_id,
        "promotion.applied",
        &event_body(&applied, &model, &version),
    )
    .await?;
    Ok(applied)
}

async fn set_stage(
    conn: &mut Conn,
    actor: &Actor,
    model: &Model,
    version: &ModelVersion,
    stage: &str,
) -> Result<()> {
    diesel::update(model_versions::table.find(version.id))
        .set(model_versions::stage.eq(stage))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "model_version.stage",
            project_id: Some(model.project_id),
            subject_kind: "model_version",
            subject_id: version.id.to_string(),
            before: Some(json!({"stage": version.stage})),
            after: Some(json!({"stage": stage, "model": model.name, "version": version.version})),
        },
    )
    .await
    .map(|_| ())
}

/// Cancels a pending promotion (its requester, or a project admin).
pub async fn cancel(conn: &mut Conn, actor: &Actor, id: PromotionId) -> Result<Promotion> {
    let promotion = lock(conn, id).await?;
    projects::authorize(conn, actor, promotion.project_id, Role::Viewer)
        .await
        .map_err(projects::hiding(|| {
            Error::not_found(format!("no promotion with id {id}"))
        }))?;
    let is_requester = actor.user_id == Some(promotion.requested_by);
    if !is_requester {
        projects::authorize(conn, actor, promotion.project_id, Role::Admin)
            .await
            .map_err(|_| {
                Error::forbidden("only the requester or a project admin can cancel a promotion")
            })?;
    }
    if promotion.status != Status::Pending {
        return Err(Error::conflict(format!(
            "the promotion is {}; only pending ones can be cancelled",
            promotion.status
        )));
    }
    let cancelled = set_status(conn, id, Status::Cancelled).await?;
    audit::record(
        conn,
        actor,
        Change {
            action: "promotion.cancel",
            project_id: Some(promotion.project_id),
            subject_kind: "promotion",
            subject_id: id.to_string(),
            before: Some(json!({"status": promotion.status})),
            after: Some(json!({"status": cancelled.status})),
        },
    )
    .await?;
    Ok(cancelled)
}

/// Marks overdue pending promotions EXPIRED (claimed with SKIP LOCKED, so replicas share work).
pub async fn expire_due(conn: &mut Conn) -> Result<usize> {
    let due: Vec<Promotion> = promotions::table
        .filter(promotions::status.eq(Status::Pending))
        .filter(promotions::expires_at.le(Utc::now()))
        .order(promotions::expires_at)
        .limit(100)
        .select(Promotion::as_select())
        .for_update()
        .skip_locked()
        .load(conn)
        .await?;
    let actor = Actor::system("expiry");
    for promotion in &due {
        set_status(conn, promotion.id, Status::Expired).await?;
        audit::record(
            conn,
            &actor,
            Change {
                action: "promotion.expire",
                project_id: Some(promotion.project_id),
                subject_kind: "promotion",
                subject_id: promotion.id.to_string(),
                before: Some(json!({"status": promotion.status})),
                after: Some(
                    json!({"status": Status::Expired.as_str(), "expires_at": promotion.expires_at}),
                ),
            },
        )
        .await?;
    }
    Ok(due.len())
}

/// A promotion the caller may read.
pub async fn get(conn: &mut Conn, actor: &Actor, id: PromotionId) -> Result<Promotion> {
    let promotion = promotions::table
        .find(id)
        .select(Promotion::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no promotion with id {id}")))?;
    projects::authorize(conn, actor, promotion.project_id, Role::Viewer)
        .await
        .map_err(projects::hiding(|| {
            Error::not_found(format!("no promotion with id {id}"))
        }))?;
    Ok(promotion)
}

/// Promotions, newest first, of one project (or, for server admins, all), after a cursor.
pub async fn list(
    conn: &mut Conn,
    actor: &Actor,
    project: Option<&str>,
    of: Option<PromotionsOf<'_>>,
    status: Option<Status>,
    before_id: Option<PromotionId>,
    limit: i64,
) -> Result<Vec<Promotion>> {
    let mut query = promotions::table
        .order(promotions::id.desc())
        .limit(limit + 1)
        .select(Promotion::as_select())
        .into_boxed();
    match of {
        // A model name means something only inside its project (checked below).
        Some(PromotionsOf::Model(_)) if project.is_none() => {
            return Err(Error::invalid("a model's promotions need its project"));
        }
        Some(PromotionsOf::Version(id)) => {
            query = query.filter(promotions::model_version_id.eq(id));
        }
        _ => {}
    }
    match project {
        Some(name) => {
            let project = projects::find_authorized(conn, actor, name, Role::Viewer).await?;
            query = query.filter(promotions::project_id.eq(project.id));
            if let Some(PromotionsOf::Model(model)) = of {
                let versions = model_versions::table
                    .inner_join(models_table::table)
                    .filter(models_table::project_id.eq(project.id))
                    .filter(models_table::name.eq(model.to_owned()))
                    .select(model_versions::id);
                query = query.filter(promotions::model_version_id.eq_any(versions));
            }
        }
        None if actor.is_admin && actor.project_scope.is_none() => {}
        None => {
            let mine = projects::readable_ids(conn, actor, None).await?;
            query = query.filter(promotions::project_id.eq_any(mine));
        }
    }
    if let Some(status) = status {
        query = query.filter(promotions::status.eq(status));
    }
    if let Some(before) = before_id {
        query = query.filter(promotions::id.lt(before));
    }
    Ok(query.load(conn).await?)
}

/// Narrows a list of promotions to one model (by name, in the listed project) or one version.
#[derive(Debug, Clone, Copy)]
pub enum PromotionsOf<'a> {
    Model(&'a str),
    Version(ModelVersionId),
}

/// Re-checks a pending promotion as an approval arrives: the manifest must be the
/// one approved, and a policy bundle that changed meanwhile is evaluated again. Answers the
/// decision to use, or `None` when nothing changed.
pub async fn recheck(
    conn: &mut Conn,
    gate: &Gate<'_>,
    promotion: &Promotion,
) -> Result<Option<Decision>> {
    let (version, model) = models::version_and_model(conn, promotion.model_version_id).await?;
    if version.manifest_sha256 != promotion.manifest_sha256 {
        return Err(Error::conflict(
            "the version's manifest changed since the request",
        ));
    }
    if gate.policy.digest() == promotion.policy_digest {
        return Ok(None);
    }
    let stage = stages::find(conn, promotion.project_id, &promotion.stage).await?;
    let requester: String = users::table
        .find(promotion.requested_by)
        .select(users::email)
        .first(conn)
        .await?;
    let decided = approvals::policy_approvals(conn, promotion).await?;
    let input = policy_input(
        conn,
        &version,
        &model,
        &stage,
        &Requester {
            id: Some(promotion.requested_by),
            email: &requester,
        },
        decided,
    )
    .await?;
    let floor = approval_floor(conn, promotion.project_id, &version, &stage).await?;
    let decision = with_floor(gate.policy.evaluate(&input), floor);
    diesel::update(promotions::table.find(promotion.id))
        .set((
            promotions::policy_digest.eq(&decision.policy_digest),
            promotions::policy_input.eq(&input),
            promotions::policy_result.eq(decision.to_json()),
            promotions::required_approvals.eq(decision.required_approvals),
            promotions::approver_group.eq(&decision.approver_group),
        ))
        .execute(conn)
        .await?;
    if decision.required_approvals != promotion.required_approvals
        || decision.approver_group != promotion.approver_group
    {
        // The gate of a pending request changed under it: on the record, with both sides.
        audit::record(
            conn,
            &Actor::system("policy"),
            Change {
                action: "promotion.recheck",
                project_id: Some(promotion.project_id),
                subject_kind: "promotion",
                subject_id: promotion.id.to_string(),
                before: Some(json!({
                    "required_approvals": promotion.required_approvals,
                    "approver_group": promotion.approver_group,
                    "policy_digest": promotion.policy_digest,
                })),
                after: Some(json!({
                    "required_approvals": decision.required_approvals,
                    "approver_group": decision.approver_group,
                    "policy_digest": decision.policy_digest,
                    "reason": "the policy bundle changed while the request was pending",
                })),
            },
        )
        .await?;
    }
    Ok(Some(decision))
}

/// The version and model behind a promotion (for pages and events).
pub async fn subject(conn: &mut Conn, promotion: &Promotion) -> Result<(ModelVersion, Model)> {
    models::version_and_model(conn, promotion.model_version_id).await
}

/// Expires overdue promotions every `every` on this replica.
pub fn spawn_expiry(pool: crate::db::DbPool, every: Duration) {
    use diesel_async::scoped_futures::ScopedFutureExt;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let outcome = async {
                let mut pooled = pool.get().await?;
                let conn: &mut Conn = &mut pooled;
                audit::transaction(conn, |c| expire_due(c).scope_boxed()).await
            }
            .await;
            match outcome {
                Ok(0) => {}
                Ok(n) => tracing::info!(promotions = n, "expired overdue promotions"),
                Err(e) => tracing::error!(error = ?e, "expiring promotions failed"),
            }
        }
    });
}

/// The emergency path out of a stage (project admins only): the version goes to `archived` at
/// once, its pending promotions are cancelled, one `model_version.emergency_archive` audit entry
/// keeps the reason, and every approver who could have gated the move (the approval rule, with
/// the admin as requester) is mailed, so that the bypass is seen by people the admin did not
/// appoint. Refusals change nothing: FORBIDDEN for non-admins, INVALID_INPUT without a reason,
/// CONFLICT for a version already archived.
pub async fn emergency_archive(
    conn: &mut Conn,
    actor: &Actor,
    model_version_id: ModelVersionId,
    reason: &str,
) -> Result<ModelVersion> {
    let (version, model) =
        models::version_and_model_for(conn, actor, model_version_id, Role::Admin)
            .await
            .map_err(|e| match e {
                Error::Forbidden(_) => {
                    Error::forbidden("an emergency archive needs the admin role in the project")
                }
                other => other,
            })?;
    crate::validate::optional_text("reason", Some(reason), 10_000)?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::invalid(
            "an emergency archive needs a reason saying why",
        ));
    }
    // No promotion applies to this stage meanwhile.
    if let Some(stage) = &version.stage {
        lock_stage(conn, &model, stage).await?;
    }
    let locked: Option<String> = model_versions::table
        .find(version.id)
        .select(model_versions::stage)
        .for_update()
        .first(conn)
        .await?;
    if locked.as_deref() == Some(ARCHIVED) {
        return Err(Error::conflict(format!(
            "version {} of {} is already archived",
            version.version, model.name
        )));
    }
    let pending: Vec<Promotion> = promotions::table
        .filter(promotions::model_version_id.eq(version.id))
        .filter(promotions::status.eq(Status::Pending))
        .order(promotions::id)
        .select(Promotion::as_select())
        .for_update()
        .load(conn)
        .await?;
    let archived: ModelVersion = diesel::update(model_versions::table.find(version.id))
        .set(model_versions::stage.eq(ARCHIVED))
        .returning(ModelVersion::as_returning())
        .get_result(conn)
        .await?;
    let mut cancelled = Vec::new();
    for promotion in &pending {
        set_status(conn, promotion.id, Status::Cancelled).await?;
        cancelled.push(promotion.id);
    }
    audit::record(
        conn,
        actor,
        Change {
            action: "model_version.emergency_archive",
            project_id: Some(model.project_id),
            subject_kind: "model_version",
            subject_id: version.id.to_string(),
            before: Some(json!({
                "stage": locked,
                "pending_promotions": pending.iter().map(|p| json!({"id": p.id, "stage": p.stage})).collect::<Vec<_>>(),
            })),
            after: Some(json!({
                "stage": ARCHIVED,
                "model": model.name,
                "version": version.version,
                "reason": reason,
                "cancelled_promotions": cancelled,
            })),
        },
    )
    .await?;
    let event = json!({
        "model": model.name,
        "version": version.version,
        "model_version_id": version.id,
        "from_stage": locked,
        "stage": ARCHIVED,
        "reason": reason,
        "by": actor.email,
        "cancelled_promotions": cancelled,
    });
    notify::enqueue_webhooks(
        conn,
        model.project_id,
        "model_version.emergency_archived",
        &event,
    )
    .await?;
    let project: String = projects_table::table
        .find(model.project_id)
        .select(projects_table::name)
        .first(conn)
        .await?;
    let recipients = match actor.user_id {
        Some(requester_id) => {
            let gate = approvals::Gatekeeping {
                project: project.clone(),
                requester_id,
                requester_email: actor.email.clone(),
                approver_group: None,
            };
            approvals::eligible(conn, model.project_id, &gate).await?
        }
        None => Vec::new(),
    };
    let context = json!({
        "project": project,
        "model": model.name,
        "version": version.version,
        "from_stage": locked,
        "by": actor.email,
        "reason": reason,
        "cancelled": cancelled.len(),
        "manifest_sha256": version.manifest_sha256,
    });
    let subject = format!(
        "Emergency archive: {} v{} taken out of {}",
        model.name,
        version.version,
        locked.as_deref().unwrap_or("no stage")
    );
    for approver in recipients {
        notify::enqueue_email(
            conn,
            &approver.email,
            &subject,
            "emergency_archive",
            &context,
            version.id,
        )
        .await?;
    }
    Ok(archived)
}
