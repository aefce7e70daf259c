use async_graphql::connection::Connection;
use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::auth::UserNode;
use super::datasets::DatasetNode;
use super::loaders::ProjectById;
use super::models::ModelNode;
use super::runs::RunNode;
use super::{
    actor, gql_error, list_cost, load, page_size, parse_cursor, read, readable, readable_only,
    slice, transaction, GqlResult, DEFAULT_LIST_SIZE, DEFAULT_PAGE_SIZE, MAX_LIST_SIZE,
};
use crate::access::Readable;
use crate::auth::User;
use crate::error::Error;
use crate::projects::{self, ApprovalSignIn, Membership, Project, Role};
use crate::{datasets, models, run_keys, runs};

/// A project the caller may read.
pub struct ProjectNode(pub Readable<Project>);

#[Object(name = "Project")]
impl ProjectNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// What deciding on this project's promotions needs: the project's own rule, or else the
    /// server's (`approvalSignInIsDefault`).
    async fn approval_sign_in(&self, ctx: &Context<'_>) -> ApprovalSignIn {
        self.0
            .approval_sign_in
            .unwrap_or(super::state(ctx).sign_in.approvals.default)
    }

    /// Whether `approvalSignIn` is the server's setting (the project has not chosen one).
    async fn approval_sign_in_is_default(&self) -> bool {
        self.0.approval_sign_in.is_none()
    }

    /// Members by email: `first` (default 100, at most 1000) after skipping `offset`.
    #[graphql(complexity = "list_cost(first, DEFAULT_LIST_SIZE, child_complexity)")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> GqlResult<Vec<MembershipNode>> {
        let slice = slice(first, offset, DEFAULT_LIST_SIZE, MAX_LIST_SIZE)?;
        let id = self.0.id;
        let rows = read(ctx, |c| projects::members(c, id, slice).scope_boxed()).await?;
        rows.into_iter()
            .map(|(membership, user)| {
                Ok(MembershipNode {
                    membership: self.0.child(membership).map_err(gql_error)?,
                    user,
                })
            })
            .collect()
    }

    /// Open invitations, by email (project admins; FORBIDDEN for other members).
    async fn invitations(
        &self,
        ctx: &Context<'_>,
    ) -> GqlResult<Vec<super::invitations::InvitationNode>> {
        let actor = actor(ctx)?;
        let id = self.0.id;
        let open = read(ctx, |c| {
            async move { crate::invitations::open_for_project(c, actor, id).await }.scope_boxed()
        })
        .await?;
        Ok(open
            .into_iter()
            .map(super::invitations::InvitationNode)
            .collect())
    }

    /// Keys the project's runs have used, in the search syntax (`metrics.auc`, `params.depth`,
    /// `tags.team`), in byte order: those starting with `prefix` (all when absent), at most
    /// `first` (default 100, at most 1000). For choosing columns and completing filters.
    async fn run_keys(
        &self,
        ctx: &Context<'_>,
        prefix: Option<String>,
        first: Option<i32>,
    ) -> GqlResult<Vec<String>> {
        let first = first.map_or(run_keys::DEFAULT_KEYS, i64::from);
        if !(1..=run_keys::MAX_KEYS).contains(&first) {
            return Err(gql_error(Error::invalid(format!(
                "first must be 1 to {}",
                run_keys::MAX_KEYS
            ))));
        }
        let id = self.0.id;
        let prefix = prefix.unwrap_or_default();
        read(ctx, |c| {
            async move { run_keys::list(c, id, &prefix, first).await }.scope_boxed()
        })
        .await
    }

    /// The project's webhooks, oldest first (project admins; FORBIDDEN for other members).
    async fn webhooks(
        &self,
        ctx: &Context<'_>,
    ) -> GqlResult<Vec<super::promotions::ProjectWebhook>> {
        let actor = actor(ctx)?;
        let id = self.0.id;
        let rows = read(ctx, |c| {
            async move { crate::notify::webhooks_of(c, actor, id).await }.scope_boxed()
        })
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Datasets by name: `first` (default 100, at most 1000) after skipping `offset`.
    #[graphql(complexity = "list_cost(first, DEFAULT_LIST_SIZE, child_complexity)")]
    async fn datasets(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> GqlResult<Vec<DatasetNode>> {
        let slice = slice(first, offset, DEFAULT_LIST_SIZE, MAX_LIST_SIZE)?;
        let id = self.0.id;
        let rows = read(ctx, |c| {
            datasets::list_in_project(c, id, slice).scope_boxed()
        })
        .await?;
        Ok(readable_only(ctx, rows)
            .await?
            .into_iter()
            .map(DatasetNode)
            .collect())
    }

    /// Models by name: `first` (default 100, at most 1000) after skipping `offset`.
    #[graphql(complexity = "list_cost(first, DEFAULT_LIST_SIZE, child_complexity)")]
    async fn models(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> GqlResult<Vec<ModelNode>> {
        let slice = slice(first, offset, DEFAULT_LIST_SIZE, MAX_LIST_SIZE)?;
        let id = self.0.id;
        let rows = read(ctx, |c| models::list_in_project(c, id, slice).scope_boxed()).await?;
        Ok(readable_only(ctx, rows)
            .await?
            .into_iter()
            .map(ModelNode)
            .collect())
    }

    /// The project's stages in order, and whether promotions into each wait for approval.
    async fn stages(&self, ctx: &Context<'_>) -> GqlResult<Vec<super::promotions::StageNode>> {
        let id = self.0.id;
        let rows = read(ctx, |c| crate::stages::list(c, id).scope_boxed()).await?;
        let rows = self.0.children(rows).map_err(gql_error)?;
        Ok(rows.into_iter().map(super::promotions::StageNode).collect())
    }

    /// Runs, newest first.
    #[graphql(complexity = "list_cost(first, DEFAULT_PAGE_SIZE, child_complexity)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Connection<String, RunNode>> {
        let limit = page_size(first)?;
        let after = after.map(|a| parse_cursor(&a)).transpose()?;
        let id = self.0.id;
        let rows = read(ctx, |c| {
            runs::list_in_project(c, id, after, limit).scope_boxed()
        })
        .await?;
        let has_next = rows.len() as i64 > limit;
        let rows = readable_only(ctx, rows).await?;
        let mut page = super::page(
            rows,
            limit,
            after.is_some(),
            |run| run.id.to_string(),
            RunNode,
        );
        page.has_next_page = has_next;
        Ok(page)
    }
}

/// A member of a project the caller may read.
pub struct MembershipNode {
    pub membership: Readable<Membership>,
    pub user: User,
}

#[Object(name = "Membership")]
impl MembershipNode {
    async fn user(&self) -> UserNode {
        UserNode(self.user.clone())
    }

    async fn role(&self) -> Role {
        self.membership.role
    }

    async fn groups(&self) -> &[String] {
        &self.membership.groups
    }

    async fn project(&self, ctx: &Context<'_>) -> GqlResult<ProjectNode> {
        let project = load(ctx, ProjectById(self.membership.project_id), "project").await?;
        Ok(ProjectNode(readable(ctx, project).await?))
    }
}

#[derive(Default)]
pub struct ProjectQuery;

#[Object]
impl ProjectQuery {
    /// A project by name; null if it does not exist, FORBIDDEN for non-members.
    async fn project(&self, ctx: &Context<'_>, name: String) -> GqlResult<Option<ProjectNode>> {
        let actor = actor(ctx)?;
        let found = read(ctx, |c| {
            async move {
                match projects::find_authorized(c, actor, &name, Role::Viewer).await {
                    Ok(p) => Ok(Some(p)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            .scope_boxed()
        })
        .await?;
        match found {
            Some(project) => Ok(Some(ProjectNode(readable(ctx, project).await?))),
            None => Ok(None),
        }
    }
}

#[derive(Default)]
pub struct ProjectMutation;

#[Object]
impl ProjectMutation {
    /// Creates a project; the caller becomes its admin.
    async fn create_project(
        &self,
        ctx: &Context<'_>,
        name: String,
        description: Option<String>,
    ) -> GqlResult<ProjectNode> {
        let actor = actor(ctx)?;
        let project = transaction(ctx, |c| {
            async move { projects::create(c, actor, &name, description.as_deref()).await }
                .scope_boxed()
        })
        .await?;
        Ok(ProjectNode(readable(ctx, project).await?))
    }

    /// Sets what deciding on the project's promotions needs (project admins): `SESSION`, a
    /// recent browser sign-in of the approver; `LINK`, the mailed link alone; null, the
    /// server's setting.
    async fn set_approval_sign_in(
        &self,
        ctx: &Context<'_>,
        project: String,
        rule: Option<ApprovalSignIn>,
    ) -> GqlResult<ProjectNode> {
        let actor = actor(ctx)?;
        let project = transaction(ctx, |c| {
            async move { projects::set_approval_sign_in(c, actor, &project, rule).await }
                .scope_boxed()
        })
        .await?;
        Ok(ProjectNode(readable(ctx, project).await?))
    }

    /// Adds a member, or changes a member's role and groups (project admins). The person must
    /// have an account (NOT_FOUND otherwise): `inviteMember` invites someone without one.
    async fn add_member(
        &self,
        ctx: &Context<'_>,
        project: String,
        email: String,
        role: Role,
        groups: Option<Vec<String>>,
    ) -> GqlResult<MembershipNode> {
        let actor = actor(ctx)?;
        let (membership, user, project) = transaction(ctx, |c| {
            async move {
                let (membership, user) = projects::add_member(
                    c,
                    actor,
                    &project,
                    &email,
                    role,
                    groups.unwrap_or_default(),
                )
                .await?;
                let project = projects::find_by_name(c, &project).await?;
                Ok((membership, user, project))
            }
            .scope_boxed()
        })
        .await?;
        let project = readable(ctx, project).await?;
        Ok(MembershipNode {
            membership: project.child(membership).map_err(gql_error)?,
            user,
        })
    }

    /// Removes a member from a project (project admins; never its last admin). True when done.
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        project: String,
        email: String,
    ) -> GqlResult<bool> {
        let actor = actor(ctx)?;
        transaction(ctx, |c| {
            async move { projects::remove_member(c, actor, &project, &email).await }.scope_boxed()
        })
        .await?;
        Ok(true)
    }
}
