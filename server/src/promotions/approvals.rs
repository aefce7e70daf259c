//! Approval decisions: who may approve (segregation of duties, roles, groups), the quorum, and
//! the signed, single-use links mailed to approvers.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::actor::{Actor, AuthMethod};
use crate::audit::{self, Change};
use crate::auth::{TokenKeys, User, ISSUER};
use crate::db::schema::{
    approval_links, approvals, memberships, projects as projects_table, users,
};
use crate::db::{text_enum, Conn};
use crate::error::{Error, Result};
use crate::ids::{ApprovalId, ApprovalLinkId, ProjectId, PromotionId, UserId};
use crate::models::{Model, ModelVersion};
use crate::notify;
use crate::projects::Role;
use crate::promotions::{self, ApprovalRules, ApprovalSignIn, Gate, Promotion, Status};

const LINK_AUDIENCE: &str = "custody-approval";

text_enum! {
    // An approver's decision (`approvals.decision`).
    #[derive(async_graphql::Enum)]
    #[graphql(name = "ApprovalDecision")]
    pub enum Verdict as "approval decision" {
        Approve = "approve",
        Reject = "reject",
    }
}

text_enum! {
    // How a decision reached the server (`approvals.via`).
    #[derive(async_graphql::Enum)]
    #[graphql(name = "ApprovalVia")]
    pub enum Via as "approval channel" {
        Web = "web",
        Email = "email",
        Api = "api",
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = approvals)]
pub struct Approval {
    pub id: ApprovalId,
    pub promotion_id: PromotionId,
    pub approver_id: UserId,
    pub decision: Verdict,
    pub comment: Option<String>,
    pub via: Via,
    pub at: DateTime<Utc>,
    pub auth_method: AuthMethod,
}

/// Whether `actor` may decide on `promotion` now (the how of their authentication, for the
/// record), or why not: FORBIDDEN for who they are (not a member, the wrong role or group, the
/// requester or their appointee, a sign-in the project's rule does not accept), CONFLICT for the
/// promotion's state (decided, expired, already decided by them). Changes nothing.
pub async fn check_decider(
    conn: &mut Conn,
    actor: &Actor,
    gate: &Gate<'_>,
    promotion: &Promotion,
) -> Result<AuthMethod> {
    let approver = actor.user_id()?;
    let auth_method = actor
        .auth
        .ok_or_else(|| Error::forbidden("only a person decides on a promotion"))?;
    let member = member_of(conn, promotion.project_id, approver).await?;
    let Some(member) = member else {
        return Err(Error::forbidden(
            "only members of the project can decide on its promotions",
        ));
    };
    let rule = sign_in_rule(conn, gate, promotion.project_id).await?;
    if let Some(why) = sign_in_refusal(rule, gate.approval_rules, actor) {
        return Err(Error::forbidden(why));
    }
    if promotion.status != Status::Pending {
        return Err(Error::conflict(format!(
            "the promotion is {}; decisions no longer apply",
            promotion.status
        )));
    }
    if promotion.expires_at <= Utc::now() {
        return Err(Error::conflict("the promotion request has expired"));
    }
    let gatekeeping = Gatekeeping::of(conn, promotion).await?;
    if let Some(why) = ineligibility(&gatekeeping, &member) {
        return Err(Error::forbidden(why));
    }
    let already: bool = diesel::select(diesel::dsl::exists(
        approvals::table
            .filter(approvals::promotion_id.eq(promotion.id))
            .filter(approvals::approver_id.eq(approver)),
    ))
    .get_result(conn)
    .await?;
    if already {
        return Err(Error::conflict(
            "you have already decided on this promotion",
        ));
    }
    Ok(auth_method)
}

/// Records one approver's decision and, when the quorum is reached, applies the promotion (after
/// re-checking manifest and policy). One rejection rejects.
pub async fn decide(
    conn: &mut Conn,
    actor: &Actor,
    gate: &Gate<'_>,
    promotion_id: PromotionId,
    verdict: Verdict,
    comment: Option<&str>,
    via: Via,
) -> Result<Promotion> {
    crate::validate::optional_text("comment", comment, 10_000)?;
    if verdict == Verdict::Reject && comment.is_none_or(|c| c.trim().is_empty()) {
        return Err(Error::invalid("a rejection needs a comment saying why"));
    }
    // The row lock serialises concurrent decisions on one promotion: the quorum is counted once.
    let promotion = promotions::lock(conn, promotion_id).await?;
    let auth_method = check_decider(conn, actor, gate, &promotion).await?;
    let approver = actor.user_id()?;
    diesel::insert_into(approvals::table)
        .values((
            approvals::id.eq(ApprovalId::generate()),
            approvals::promotion_id.eq(promotion.id),
            approvals::approver_id.eq(approver),
            approvals::decision.eq(verdict),
            approvals::comment.eq(comment),
            approvals::via.eq(via),
            approvals::auth_method.eq(auth_method),
        ))
        .execute(conn)
        .await?;
    audit::record(
        conn,
        actor,
        Change {
            action: match verdict {
                Verdict::Approve => "promotion.approve",
                Verdict::Reject => "promotion.reject",
            },
            project_id: Some(promotion.project_id),
            subject_kind: "promotion",
            subject_id: promotion.id.to_string(),
            before: None,
            after: Some(
                json!({"decision": verdict.as_str(), "comment": comment, "via": via.as_str(), "auth_method": auth_method}),
            ),
        },
    )
    .await?;
    let (version, model) = promotions::subject(conn, &promotion).await?;
    if verdict == Verdict::Reject {
        let rejected = promotions::set_status(conn, promotion.id, Status::Rejected).await?;
        let body = promotions::event_body(&rejected, &model, &version);
        notify::enqueue_webhooks(conn, promotion.project_id, "promotion.rejected", &body).await?;
        return Ok(rejected);
    }
    // A bundle that changed while the request waited is evaluated again before anything applies.
    let mut rechecked = false;
    if let Some(decision) = promotions::recheck(conn, gate, &promotion).await? {
        if !decision.deny.is_empty() {
            let rejected = promotions::set_status(conn, promotion.id, Status::Rejected).await?;
            audit::record(
                conn,
                &Actor::system("policy"),
                Change {
                    action: "promotion.reject",
                    project_id: Some(promotion.project_id),
                    subject_kind: "promotion",
                    subject_id: promotion.id.to_string(),
                    before: Some(json!({"status": "pending", "policy_digest": promotion.policy_digest})),
                    after: Some(json!({"status": "rejected", "reason": "the policy bundle changed and now denies", "policy": decision.to_json()})),
                },
            )
            .await?;
            let body = promotions::event_body(&rejected, &model, &version);
            notify::enqueue_webhooks(conn, promotion.project_id, "promotion.rejected", &body)
                .await?;
            return Ok(rejected);
        }
        rechecked = true;
    }
    // Only approvals of members eligible under the current rules count (the rules may have named
    // another group since some approvals were given).
    let current = promotions::lock(conn, promotion.id).await?;
    let eligible = promotions::eligible_approvers(conn, &current).await?;
    let approvers: Vec<UserId> = approvals::table
        .filter(approvals::promotion_id.eq(promotion.id))
        .filter(approvals::decision.eq(Verdict::Approve))
        .select(approvals::approver_id)
        .load(conn)
        .await?;
    let counted = approvers
        .iter()
        .filter(|a| eligible.iter().any(|m| m.user_id == **a))
        .count() as i64;
    if counted < current.required_approvals as i64 {
        if rechecked {
            // Approvers the new rules made eligible get their link now.
            let linked: Vec<UserId> = approval_links::table
                .filter(approval_links::promotion_id.eq(promotion.id))
                .select(approval_links::approver_id)
                .load(conn)
                .await?;
            let requester: String = users::table
                .find(promotion.requested_by)
                .select(users::email)
                .first(conn)
                .await?;
            let mail = LinkMail {
                promotion: &current,
                model: &model,
                version: &version,
                requester_email: &requester,
            };
            for m in eligible.iter().filter(|m| !linked.contains(&m.user_id)) {
                send_link(conn, gate, &mail, m).await?;
            }
        }
        return Ok(current);
    }
    let mut body = promotions::event_body(&current, &model, &version);
    body["approvals"] = json!(counted);
    body["required_approvals"] = json!(current.required_approvals);
    notify::enqueue_webhooks(conn, promotion.project_id, "promotion.approved", &body).await?;
    promotions::apply(conn, actor, &current).await
}

// ---------------------------------------------------------------------------------------------
// Who may decide: the one rule (mails, decisions, the approval page, counting after a recheck,
// the policy's `input.approvers`, emergency notices)

/// A project member as the separation-of-duties rule sees them.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub groups: Vec<String>,
    /// Who granted (or last changed) the role and groups; `None` when unknown (granted before
    /// granters were recorded).
    pub granted_by: Option<UserId>,
    pub granted_by_email: Option<String>,
    pub is_auditor: bool,
    pub is_admin: bool,
}

impl Member {
    /// `{email, role, groups, granted_by}` as the policies see an approver.
    pub fn to_policy_json(&self) -> serde_json::Value {
        json!({
            "email": self.email,
            "role": self.role,
            "groups": self.groups,
            "granted_by": self.granted_by_email,
        })
    }
}

/// What a decision is about: the project, who asked, and the group the policy named.
#[derive(Debug, Clone)]
pub struct Gatekeeping {
    pub project: String,
    pub requester_id: UserId,
    pub requester_email: String,
    pub approver_group: Option<String>,
}

impl Gatekeeping {
    pub async fn of(conn: &mut Conn, promotion: &Promotion) -> Result<Gatekeeping> {
        let project: String = projects_table::table
            .find(promotion.project_id)
            .select(projects_table::name)
            .first(conn)
            .await?;
        let requester_email: String = users::table
            .find(promotion.requested_by)
            .select(users::email)
            .first(conn)
            .await?;
        Ok(Gatekeeping {
            project,
            requester_id: promotion.requested_by,
            requester_email,
            approver_group: promotion.approver_group.clone(),
        })
    }
}

/// Why `member` may not decide on what `gate` describes, or `None` when they may. Segregation of
/// duties: never the requester, nor anyone whose role or groups the requester granted or last
/// changed (a project admin — or a server admin — cannot appoint their own approver); then the
/// approver (or admin) role, the policy's group, and auditors, who are read-only.
pub fn ineligibility(gate: &Gatekeeping, member: &Member) -> Option<String> {
    if member.user_id == gate.requester_id {
        return Some(
            "the requester cannot decide on their own promotion (segregation of duties)".into(),
        );
    }
    if member.is_auditor && !member.is_admin {
        return Some(crate::actor::AUDITORS_READ_ONLY.into());
    }
    if member.role < Role::Approver {
        return Some("deciding needs the approver or admin role in the project".into());
    }
    if member.granted_by == Some(gate.requester_id) {
        return Some(format!(
            "your {} role in project `{}` was granted by the requester ({}); separation of duties needs an approver the requester did not appoint",
            member.role, gate.project, gate.requester_email
        ));
    }
    if let Some(group) = &gate.approver_group {
        if !member.groups.contains(group) {
            return Some(format!(
                "this promotion needs an approver from the `{group}` group"
            ));
        }
    }
    None
}

/// What deciding on a project's promotions demands: the project's own rule, or the server's.
pub async fn sign_in_rule(
    conn: &mut Conn,
    gate: &Gate<'_>,
    project_id: ProjectId,
) -> Result<ApprovalSignIn> {
    let own: Option<ApprovalSignIn> = crate::db::schema::projects::table
        .find(project_id)
        .select(crate::db::schema::projects::approval_sign_in)
        .first(conn)
        .await?;
    Ok(own.unwrap_or(gate.approval_rules.default))
}

/// Why `actor` may not decide under `rule` (`None`: they may). A `session` rule takes a browser
/// session signed in recently (step-up): neither the mailed link alone nor a bearer token.
pub fn sign_in_refusal(
    rule: ApprovalSignIn,
    rules: ApprovalRules,
    actor: &Actor,
) -> Option<String> {
    if rule == ApprovalSignIn::Link {
        return None;
    }
    let minutes = rules.recent_sign_in.num_minutes().max(1);
    let in_session = matches!(
        actor.auth,
        Some(AuthMethod::SessionOidc | AuthMethod::SessionEmail)
    );
    match actor.signed_in_at {
        Some(at) if in_session && Utc::now() - at <= rules.recent_sign_in => None,
        Some(_) if in_session => Some(format!(
            "deciding on this project's promotions needs a sign-in within the last {minutes} minutes: sign in again, then decide"
        )),
        _ => Some(format!(
            "deciding on this project's promotions needs you to be signed in (within the last {minutes} minutes), not only the link or a token: sign in, then decide"
        )),
    }
}

/// The project's members (one of them when `only` is given), ordered by email.
pub async fn members(
    conn: &mut Conn,
    project_id: ProjectId,
    only: Option<UserId>,
) -> Result<Vec<Member>> {
    let mut query = memberships::table
        .inner_join(users::table)
        .filter(memberships::project_id.eq(project_id))
        .order(users::email)
        .select((
            users::id,
            users::email,
            memberships::role,
            memberships::groups,
            memberships::granted_by,
            users::is_auditor,
            users::is_admin,
            users::idp_groups,
        ))
        .into_boxed();
    if let Some(user_id) = only {
        query = query.filter(memberships::user_id.eq(user_id));
    }
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        UserId,
        String,
        Role,
        Vec<String>,
        Option<UserId>,
        bool,
        bool,
        Vec<String>,
    )> = query.load(conn).await?;
    let granters: Vec<UserId> = rows.iter().filter_map(|r| r.4).collect();
    let emails = crate::projects::emails_of(conn, &granters).await?;
    Ok(rows
        .into_iter()
        .map(
            |(user_id, email, role, mut groups, granted_by, is_auditor, is_admin, idp_groups)| {
                // The identity provider's groups count in every project, like the membership's.
                groups.extend(idp_groups);
                groups.sort();
                groups.dedup();
                Member {
                    user_id,
                    email,
                    role,
                    groups,
                    granted_by,
                    granted_by_email: granted_by.and_then(|g| emails.get(&g).cloned()),
                    is_auditor,
                    is_admin,
                }
            },
        )
        .collect())
}

pub async fn member_of(
    conn: &mut Conn,
    project_id: ProjectId,
    user_id: UserId,
) -> Result<Option<Member>> {
    Ok(members(conn, project_id, Some(user_id)).await?.pop())
}

/// The members who may decide on what `gate` describes (everyone the rule lets through).
pub async fn eligible(
    conn: &mut Conn,
    project_id: ProjectId,
    gate: &Gatekeeping,
) -> Result<Vec<Member>> {
    Ok(members(conn, project_id, None)
        .await?
        .into_iter()
        .filter(|m| ineligibility(gate, m).is_none())
        .collect())
}

/// The decisions on a promotion as the policies see them: `{email, decision, granted_by}`.
pub async fn policy_approvals(
    conn: &mut Conn,
    promotion: &Promotion,
) -> Result<Vec<serde_json::Value>> {
    let decided = of_promotions(conn, &[promotion.id]).await?;
    let members = members(conn, promotion.project_id, None).await?;
    Ok(decided
        .iter()
        .map(|(a, u)| {
            let granted_by = members
                .iter()
                .find(|m| m.user_id == u.id)
                .and_then(|m| m.granted_by_email.clone());
            json!({"email": u.email, "decision": a.decision, "granted_by": granted_by, "auth_method": a.auth_method})
        })
        .collect())
}

pub async fn of_promotions(conn: &mut Conn, ids: &[PromotionId]) -> Result<Vec<(Approval, User)>> {
    Ok(approvals::table
        .inner_join(users::table)
        .filter(approvals::promotion_id.eq_any(ids))
        .order(approvals::at)
        .select((Approval::as_select(), User::as_select()))
        .load(conn)
        .await?)
}

// ---------------------------------------------------------------------------------------------
// Links mailed to approvers

#[derive(Serialize, Deserialize)]
struct LinkClaims {
    iss: String,
    aud: String,
    exp: i64,
    jti: ApprovalLinkId,
    promotion_id: PromotionId,
    approver_id: UserId,
}

/// What an approval request mail is about: the promotion, its version and who asked.
pub struct LinkMail<'a> {
    pub promotion: &'a Promotion,
    pub model: &'a Model,
    pub version: &'a ModelVersion,
    pub requester_email: &'a str,
}

/// Creates the approver's link (bound to them and the promotion, expiring with it) and queues
/// the mail that carries it.
pub async fn send_link(
    conn: &mut Conn,
    gate: &Gate<'_>,
    mail: &LinkMail<'_>,
    approver: &Member,
) -> Result<()> {
    let LinkMail {
        promotion,
        model,
        version,
        requester_email,
    } = *mail;
    let (approver_id, approver_email) = (approver.user_id, approver.email.as_str());
    let jti = ApprovalLinkId::generate();
    diesel::insert_into(approval_links::table)
        .values((
            approval_links::jti.eq(jti),
            approval_links::promotion_id.eq(promotion.id),
            approval_links::approver_id.eq(approver_id),
            approval_links::expires_at.eq(promotion.expires_at),
        ))
        .execute(conn)
        .await?;
    let token = gate.keys.sign_for(&LinkClaims {
        iss: ISSUER.into(),
        aud: LINK_AUDIENCE.into(),
        exp: promotion.expires_at.timestamp(),
        jti,
        promotion_id: promotion.id,
        approver_id,
    })?;
    let link = format!("{}/approve/{token}", gate.public_url);
    let context = json!({
        "link": link,
        "model": model.name,
        "version": version.version,
        "stage": promotion.stage,
        "requester": requester_email,
        "comment": promotion.comment,
        "required_approvals": promotion.required_approvals,
        "approver_group": promotion.approver_group,
        "expires_at": promotion.expires_at.to_rfc3339(),
        "manifest_sha256": promotion.manifest_sha256,
        "metrics": promotion.policy_input["model_version"]["metrics"],
    });
    let subject = format!(
        "Approval requested: {} v{} to {}",
        model.name, version.version, promotion.stage
    );
    notify::enqueue_email(
        conn,
        approver_email,
        &subject,
        "approval_request",
        &context,
        promotion.id,
    )
    .await
}

/// What an approval link stands for, once its signature and expiry are checked.
pub struct LinkTarget {
    pub jti: ApprovalLinkId,
    pub promotion_id: PromotionId,
    pub approver: User,
    pub used_at: Option<DateTime<Utc>>,
}

/// Checks a link's signature, expiry and record; never changes anything (mail scanners GET links).
pub async fn open_link(conn: &mut Conn, keys: &TokenKeys, token: &str) -> Result<LinkTarget> {
    let claims: LinkClaims = keys.verify_for(token, LINK_AUDIENCE)?;
    let row: Option<(PromotionId, UserId, Option<DateTime<Utc>>)> = approval_links::table
        .find(claims.jti)
        .select((
            approval_links::promotion_id,
            approval_links::approver_id,
            approval_links::used_at,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((promotion_id, approver_id, used_at)) = row else {
        return Err(Error::Unauthenticated(
            "this link is not one the server issued".into(),
        ));
    };
    if promotion_id != claims.promotion_id || approver_id != claims.approver_id {
        return Err(Error::Unauthenticated(
            "this link does not match its record".into(),
        ));
    }
    let approver: User = users::table
        .find(approver_id)
        .select(User::as_select())
        .first(conn)
        .await?;
    Ok(LinkTarget {
        jti: claims.jti,
        promotion_id,
        approver,
        used_at,
    })
}

/// The approver as the link alone proves them (no server-wide role: a link decides on one
/// promotion, nothing else).
pub fn link_actor(target: &LinkTarget) -> Actor {
    Actor {
        user_id: Some(target.approver.id),
        email: target.approver.email.clone(),
        is_admin: false,
        is_auditor: false,
        read_only: false,
        project_scope: None,
        auth: Some(AuthMethod::EmailLink),
        signed_in_at: None,
        request_id: None,
    }
}

/// The decision posted from a link's page: the link is used up in the same transaction.
///
/// `session` is the browser's signed-in session, if any: when it is the link's approver's, the
/// decision is theirs as signed in (and counts where the project demands a session); anyone
/// else's session is ignored and the link alone speaks.
pub async fn decide_by_link(
    conn: &mut Conn,
    gate: &Gate<'_>,
    token: &str,
    verdict: Verdict,
    comment: Option<&str>,
    session: Option<&Actor>,
    request_id: Option<String>,
) -> Result<Promotion> {
    let target = open_link(conn, gate.keys, token).await?;
    let used: Option<DateTime<Utc>> = approval_links::table
        .find(target.jti)
        .select(approval_links::used_at)
        .for_update()
        .first(conn)
        .await?;
    if used.is_some() {
        return Err(Error::conflict("this link has already been used"));
    }
    diesel::update(approval_links::table.find(target.jti))
        .set(approval_links::used_at.eq(Utc::now()))
        .execute(conn)
        .await?;
    let is_auditor: bool = users::table
        .find(target.approver.id)
        .select(users::is_auditor)
        .first(conn)
        .await?;
    let actor = match session {
        Some(session) if session.user_id == Some(target.approver.id) => Actor {
            is_admin: false,
            request_id,
            ..session.clone()
        },
        _ => Actor {
            is_auditor,
            request_id,
            ..link_actor(&target)
        },
    };
    decide(
        conn,
        &actor,
        gate,
        target.promotion_id,
        verdict,
        comment,
        Via::Email,
    )
    .await
}

/// Everything the approval page shows, from the promotion and the input its policy saw.
pub async fn page_view(
    conn: &mut Conn,
    target: &LinkTarget,
) -> Result<(Promotion, serde_json::Value)> {
    let promotion: Promotion = crate::db::schema::promotions::table
        .find(target.promotion_id)
        .select(Promotion::as_select())
        .first(conn)
        .await?;
    if promotion.status == Status::Pending {
        // The page offers a decision only to an approver who may take it (the same rule as the
        // mails and the decision itself); the refusal says why.
        let gatekeeping = Gatekeeping::of(conn, &promotion).await?;
        match member_of(conn, promotion.project_id, target.approver.id).await? {
            None => {
                return Err(Error::forbidden(
                    "only members of the project can decide on its promotions",
                ))
            }
            Some(member) => {
                if let Some(why) = ineligibility(&gatekeeping, &member) {
                    return Err(Error::forbidden(why));
                }
            }
        }
    }
    let (version, model) = promotions::subject(conn, &promotion).await?;
    let requester: String = users::table
        .find(promotion.requested_by)
        .select(users::email)
        .first(conn)
        .await?;
    let input = &promotion.policy_input;
    let candidate = input["model_version"]["metrics"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let current = input["current"]["metrics"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut keys: Vec<&String> = candidate.keys().chain(current.keys()).collect();
    keys.sort();
    keys.dedup();
    let metrics: Vec<_> = keys
        .iter()
        .map(|k| json!({"key": k, "candidate": candidate.get(*k), "current": current.get(*k)}))
        .collect();
    let decided_rows = of_promotions(conn, &[promotion.id]).await?;
    // A link whose approver already decided (through the API, say) shows no form.
    let already_decided = decided_rows
        .iter()
        .any(|(a, _)| a.approver_id == target.approver.id);
    let decisions: Vec<_> = decided_rows
        .into_iter()
        .map(|(a, u)| json!({"approver": u.email, "decision": a.decision, "comment": a.comment, "via": a.via, "auth_method": a.auth_method, "at": a.at.to_rfc3339()}))
        .collect();
    let view = json!({
        "approver": target.approver.email,
        "model": model.name,
        "version": version.version,
        "stage": promotion.stage,
        "requester": requester,
        "comment": promotion.comment,
        "status": promotion.status.as_str().to_uppercase(),
        "expires_at": promotion.expires_at.to_rfc3339(),
        "manifest_sha256": promotion.manifest_sha256,
        "policy_digest": promotion.policy_digest,
        "required_approvals": promotion.required_approvals,
        "approver_group": promotion.approver_group,
        "metrics": metrics,
        "current_version": input["current"]["version"],
        "datasets": input["lineage"]["datasets"],
        "code_commits": input["lineage"]["code_commits"],
        "policy": promotion.policy_result,
        "approvals": decisions,
        "decided": target.used_at.is_some() || already_decided,
    });
    Ok((promotion, view))
}
