use async_graphql::connection::Connection;
use async_graphql::{Context, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::auth::UserNode;
use super::loaders::{
    ApprovalsOfPromotion, DatasetById, DatasetVersionById, ModelVersionById, UserById,
};
use super::models::ModelVersionNode;
use super::scalars::Sha256;
use super::{
    actor, gql_error, list_cost, load, loaders, page_size, parse_cursor, parse_id, read, readable,
    readable_child, readable_only, state, transaction, GqlResult, DEFAULT_PAGE_SIZE,
};
use crate::access::Readable;
use crate::actor::AuthMethod;
use crate::error::Error;
use crate::ids::{DatasetVersionId, ModelVersionId, ProjectId, PromotionId, WebhookId};
use crate::notify;
use crate::projects;
use crate::promotions::approvals::{self, Verdict, Via};
use crate::promotions::{self, Promotion, Status};
use crate::stages::Stage;

/// A stage of a project the caller may read.
pub struct StageNode(pub Readable<Stage>);

#[Object(name = "Stage")]
impl StageNode {
    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn position(&self) -> i32 {
        self.0.position
    }

    async fn requires_approval(&self) -> bool {
        self.0.requires_approval
    }
}

#[derive(SimpleObject)]
pub struct ApprovalNode {
    approver: UserNode,
    decision: Verdict,
    comment: Option<String>,
    via: Via,
    /// How the approver proved who they were.
    auth_method: AuthMethod,
    at: DateTime<Utc>,
}

#[derive(SimpleObject)]
pub struct PolicyDecision {
    deny: Vec<String>,
    required_approvals: i32,
    approver_group: Option<String>,
    expires_in: Option<String>,
    policy_digest: Sha256,
    /// The input document the policies saw.
    input: Json<serde_json::Value>,
}

#[derive(SimpleObject)]
pub struct Webhook {
    id: ID,
    url: String,
    /// The HMAC-SHA256 key for `X-Custody-Signature`; shown once.
    secret: String,
}

/// A registered webhook as its project's admins list it (its secret was shown once).
#[derive(SimpleObject)]
pub struct ProjectWebhook {
    pub id: ID,
    pub url: String,
    pub created_at: DateTime<Utc>,
}

impl From<notify::WebhookRow> for ProjectWebhook {
    fn from(row: notify::WebhookRow) -> Self {
        ProjectWebhook {
            id: ID(row.id.to_string()),
            url: row.url,
            created_at: row.created_at,
        }
    }
}

/// A promotion the caller may read.
pub struct PromotionNode(pub Readable<Promotion>);

#[Object(name = "Promotion")]
impl PromotionNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn status(&self) -> Status {
        self.0.status
    }

    async fn stage(&self) -> &str {
        &self.0.stage
    }

    async fn comment(&self) -> Option<&str> {
        self.0.comment.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }

    async fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.0.decided_at
    }

    /// The manifest digest of the version, as approved.
    async fn manifest_sha256(&self) -> Sha256 {
        Sha256(self.0.manifest_sha256.clone())
    }

    /// `deny`, `required_approvals`, `approver_group`, `expires_in`, `policy_digest`, `error`.
    async fn policy_result(&self) -> Json<serde_json::Value> {
        Json(self.0.policy_result.clone())
    }

    async fn policy_digest(&self) -> Sha256 {
        Sha256(self.0.policy_digest.clone())
    }

    /// The input document the policies evaluated; upstream datasets of projects the caller
    /// cannot read are left out (counted in `lineage.hidden_datasets`).
    async fn policy_input(&self, ctx: &Context<'_>) -> GqlResult<Json<serde_json::Value>> {
        Ok(Json(
            redacted_input(ctx, self.0.policy_input.clone()).await?,
        ))
    }

    async fn required_approvals(&self) -> i32 {
        self.0.required_approvals
    }

    async fn approver_group(&self) -> Option<&str> {
        self.0.approver_group.as_deref()
    }

    async fn model_version(&self, ctx: &Context<'_>) -> GqlResult<ModelVersionNode> {
        let version = load(
            ctx,
            ModelVersionById(self.0.model_version_id),
            "model version",
        )
        .await?;
        Ok(ModelVersionNode(readable_child(ctx, version).await?))
    }

    async fn requested_by(&self, ctx: &Context<'_>) -> GqlResult<UserNode> {
        loaders(ctx)
            .load_one(UserById(self.0.requested_by))
            .await
            .map_err(|e| (*e).clone())?
            .map(UserNode)
            .ok_or_else(|| gql_error(Error::not_found("requester is gone")))
    }

    /// Whether the caller may decide on this promotion now, as this request is authenticated
    /// (role, group, separation of duties, the project's sign-in rule, not yet decided).
    async fn viewer_can_decide(&self, ctx: &Context<'_>) -> GqlResult<bool> {
        Ok(self.blocked(ctx).await?.is_none())
    }

    /// Why the caller may not decide on this promotion now (null when they may).
    async fn decision_blocked_by(&self, ctx: &Context<'_>) -> GqlResult<Option<String>> {
        self.blocked(ctx).await
    }

    async fn approvals(&self, ctx: &Context<'_>) -> GqlResult<Vec<ApprovalNode>> {
        let rows = loaders(ctx)
            .load_one(ApprovalsOfPromotion(self.0.id))
            .await
            .map_err(|e| (*e).clone())?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|(a, user)| ApprovalNode {
                approver: UserNode(user),
                decision: a.decision,
                comment: a.comment,
                via: a.via,
                auth_method: a.auth_method,
                at: a.at,
            })
            .collect())
    }
}

impl PromotionNode {
    /// Why the caller may not decide now, or `None` (`approvals::check_decider`, read-only).
    async fn blocked(&self, ctx: &Context<'_>) -> GqlResult<Option<String>> {
        let actor = actor(ctx)?;
        let state = state(ctx);
        let promotion: &Promotion = &self.0;
        read(ctx, |c| {
            async move {
                let gate = state.gate();
                match approvals::check_decider(c, actor, &gate, promotion).await {
                    Ok(_) => Ok(None),
                    Err(
                        e @ (Error::Forbidden(_) | Error::Conflict(_) | Error::Unauthenticated(_)),
                    ) => Ok(Some(e.to_string())),
                    Err(e) => Err(e),
                }
            }
            .scope_boxed()
        })
        .await
    }
}

#[derive(Default)]
pub struct PromotionQuery;

#[Object]
impl PromotionQuery {
    async fn promotion(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Option<PromotionNode>> {
        let actor = actor(ctx)?;
        let id = parse_id::<PromotionId>(&id)?;
        let found = read(ctx, |c| {
            async move {
                match promotions::get(c, actor, id).await {
                    Ok(p) => Ok(Some(p)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .scope_boxed()
        })
        .await?;
        match found {
            Some(promotion) => Ok(Some(PromotionNode(readable(ctx, promotion).await?))),
            None => Ok(None),
        }
    }

    /// Promotions, newest first: of one project, or of every project the caller belongs to;
    /// `model` (with `project`) keeps one model's, `modelVersionId` one version's.
    #[graphql(complexity = "list_cost(first, DEFAULT_PAGE_SIZE, child_complexity)")]
    // The arguments are the field's GraphQL arguments; async-graphql names them by these.
    #[allow(clippy::too_many_arguments)]
    async fn promotions(
        &self,
        ctx: &Context<'_>,
        project: Option<String>,
        status: Option<Status>,
        first: Option<i32>,
        after: Option<String>,
        model: Option<String>,
        model_version_id: Option<ID>,
    ) -> GqlResult<Connection<String, PromotionNode>> {
        let actor = actor(ctx)?;
        let limit = page_size(first)?;
        let after = after.map(|a| parse_cursor(&a)).transpose()?;
        let version = model_version_id
            .map(|id| parse_id::<ModelVersionId>(&id))
            .transpose()?;
        let rows = read(ctx, |c| {
            async move {
                let of = match (model.as_deref(), version) {
                    (Some(_), Some(_)) => {
                        return Err(Error::invalid(
                            "give at most one of model and modelVersionId",
                        ))
                    }
                    (Some(name), None) => Some(promotions::PromotionsOf::Model(name)),
                    (None, Some(id)) => Some(promotions::PromotionsOf::Version(id)),
                    (None, None) => None,
                };
                promotions::list(c, actor, project.as_deref(), of, status, after, limit).await
            }
            .scope_boxed()
        })
        .await?;
        let has_next = rows.len() as i64 > limit;
        let rows = readable_only(ctx, rows).await?;
        let mut page = super::page(
            rows,
            limit,
            after.is_some(),
            |p| p.id.to_string(),
            PromotionNode,
        );
        page.has_next_page = has_next;
        Ok(page)
    }

    /// Evaluates the promotion policies for a would-be promotion without requesting it.
    async fn promotion_dry_run(
        &self,
        ctx: &Context<'_>,
        model_version_id: ID,
        stage: String,
    ) -> GqlResult<PolicyDecision> {
        let actor = actor(ctx)?;
        let id = parse_id::<ModelVersionId>(&model_version_id)?;
        let policy = state(ctx).policy.clone();
        let (input, decision) = read(ctx, |c| {
            async move { promotions::dry_run(c, actor, &policy, id, &stage).await }.scope_boxed()
        })
        .await?;
        Ok(PolicyDecision {
            deny: decision.deny,
            required_approvals: decision.required_approvals,
            approver_group: decision.approver_group,
            expires_in: decision.expires_in_text,
            policy_digest: Sha256(decision.policy_digest),
            input: Json(redacted_input(ctx, input).await?),
        })
    }
}

#[derive(Default)]
pub struct PromotionMutation;

#[Object]
impl PromotionMutation {
    /// Asks to move a model version to a stage: DENIED (reasons in `policyResult.deny`), APPLIED
    /// at once when no approval is needed, else PENDING while approvers are mailed.
    async fn request_promotion(
        &self,
        ctx: &Context<'_>,
        model_version_id: ID,
        stage: String,
        comment: Option<String>,
    ) -> GqlResult<PromotionNode> {
        let actor = actor(ctx)?;
        let id = parse_id::<ModelVersionId>(&model_version_id)?;
        let state = state(ctx);
        let promotion = transaction(ctx, |c| {
            async move {
                let gate = state.gate();
                promotions::request(c, actor, &gate, id, &stage, comment.as_deref()).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(PromotionNode(readable(ctx, promotion).await?))
    }

    async fn approve_promotion(
        &self,
        ctx: &Context<'_>,
        id: ID,
        comment: Option<String>,
    ) -> GqlResult<PromotionNode> {
        decide(ctx, id, Verdict::Approve, comment).await
    }

    async fn reject_promotion(
        &self,
        ctx: &Context<'_>,
        id: ID,
        comment: String,
    ) -> GqlResult<PromotionNode> {
        decide(ctx, id, Verdict::Reject, Some(comment)).await
    }

    /// Cancels a pending promotion (its requester or a project admin).
    async fn cancel_promotion(&self, ctx: &Context<'_>, id: ID) -> GqlResult<PromotionNode> {
        let actor = actor(ctx)?;
        let id = parse_id::<PromotionId>(&id)?;
        let promotion = transaction(ctx, |c| {
            async move { promotions::cancel(c, actor, id).await }.scope_boxed()
        })
        .await?;
        Ok(PromotionNode(readable(ctx, promotion).await?))
    }

    /// Adds a stage to a project (admins), e.g. `canary` at position 25.
    async fn add_stage(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: String,
        position: i32,
        requires_approval: bool,
    ) -> GqlResult<StageNode> {
        let actor = actor(ctx)?;
        let stage = transaction(ctx, |c| {
            async move {
                projects::add_stage(c, actor, &project, &name, position, requires_approval).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(StageNode(readable_child(ctx, stage).await?))
    }

    /// Sets whether promotions into a stage wait for approval (admins).
    async fn set_stage_approval(
        &self,
        ctx: &Context<'_>,
        project: String,
        stage: String,
        requires_approval: bool,
    ) -> GqlResult<StageNode> {
        let actor = actor(ctx)?;
        let stage = transaction(ctx, |c| {
            async move {
                projects::set_stage_approval(c, actor, &project, &stage, requires_approval).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(StageNode(readable_child(ctx, stage).await?))
    }

    /// Registers a webhook for the project's promotion events (admins). Calls carry
    /// `X-Custody-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>`.
    async fn add_webhook(
        &self,
        ctx: &Context<'_>,
        project: String,
        url: String,
    ) -> GqlResult<Webhook> {
        let actor = actor(ctx)?;
        let policy = &state(ctx).webhooks;
        let (id, secret) = transaction(ctx, |c| {
            let url = url.clone();
            async move { notify::add_webhook(c, actor, policy, &project, &url).await }.scope_boxed()
        })
        .await?;
        Ok(Webhook {
            id: ID(id.to_string()),
            url,
            secret,
        })
    }

    /// Removes a webhook of the project (admins); calls already queued for it are dropped.
    /// True when done.
    async fn remove_webhook(&self, ctx: &Context<'_>, project: String, id: ID) -> GqlResult<bool> {
        let actor = actor(ctx)?;
        let id = parse_id::<WebhookId>(&id)?;
        transaction(ctx, |c| {
            async move { notify::remove_webhook(c, actor, &project, id).await }.scope_boxed()
        })
        .await?;
        Ok(true)
    }

    /// The emergency path (project admins): moves the version to `archived` at once, cancels
    /// its pending promotions, audits the reason and mails the project's approvers.
    async fn emergency_archive(
        &self,
        ctx: &Context<'_>,
        model_version_id: ID,
        reason: String,
    ) -> GqlResult<ModelVersionNode> {
        let actor = actor(ctx)?;
        let id = parse_id::<ModelVersionId>(&model_version_id)?;
        let version = transaction(ctx, |c| {
            async move { promotions::emergency_archive(c, actor, id, &reason).await }.scope_boxed()
        })
        .await?;
        Ok(ModelVersionNode(readable_child(ctx, version).await?))
    }
}

async fn decide(
    ctx: &Context<'_>,
    id: ID,
    verdict: Verdict,
    comment: Option<String>,
) -> GqlResult<PromotionNode> {
    let actor = actor(ctx)?;
    let id = parse_id::<PromotionId>(&id)?;
    let state = state(ctx);
    let promotion = transaction(ctx, |c| {
        async move {
            let gate = state.gate();
            approvals::decide(c, actor, &gate, id, verdict, comment.as_deref(), Via::Api).await
        }
        .scope_boxed()
    })
    .await?;
    Ok(PromotionNode(readable(ctx, promotion).await?))
}

/// A policy input as this caller may see it: upstream datasets of projects the caller cannot
/// read are left out (the rule is `promotions::hide_datasets`).
async fn redacted_input(
    ctx: &Context<'_>,
    mut input: serde_json::Value,
) -> GqlResult<serde_json::Value> {
    let ids = promotions::upstream_dataset_versions(&input);
    if ids.is_empty() {
        return Ok(input);
    }
    // Through the request's loaders, so a list of promotions (the inbox asks for up to 100)
    // looks their datasets up in one batch instead of one query each.
    let versions = loaders(ctx)
        .load_many(ids.iter().map(|id| DatasetVersionById(*id)))
        .await
        .map_err(|e| (*e).clone())?;
    let datasets = loaders(ctx)
        .load_many(versions.values().map(|v| DatasetById(v.dataset_id)))
        .await
        .map_err(|e| (*e).clone())?;
    let projects: std::collections::HashMap<DatasetVersionId, ProjectId> = versions
        .values()
        .filter_map(|v| {
            let dataset = datasets.get(&DatasetById(v.dataset_id))?;
            Some((v.id, dataset.project_id))
        })
        .collect();
    let project_ids: Vec<ProjectId> = projects.values().copied().collect();
    let readable = super::access(ctx)?
        .readable_projects(&project_ids)
        .await
        .map_err(gql_error)?;
    promotions::hide_datasets(&mut input, |version| {
        projects.get(&version).is_some_and(|p| readable.contains(p))
    });
    Ok(input)
}
