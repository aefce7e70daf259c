use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::auth::UserNode;
use super::datasets::DatasetNode;
use super::models::ModelNode;
use super::runs::RunNode;
use super::{actor, gql_error, page_size, parse_id, read, transaction, GqlResult};
use crate::auth::User;
use crate::error::Error;
use crate::projects::{self, Membership, Project, Role};
use crate::{datasets, models, runs};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "Role")]
pub enum RoleGql {
    Viewer,
    Contributor,
    Approver,
    Admin,
}

impl From<RoleGql> for Role {
    fn from(role: RoleGql) -> Self {
        match role {
            RoleGql::Viewer => Role::Viewer,
            RoleGql::Contributor => Role::Contributor,
            RoleGql::Approver => Role::Approver,
            RoleGql::Admin => Role::Admin,
        }
    }
}

impl From<Role> for RoleGql {
    fn from(role: Role) -> Self {
        match role {
            Role::Viewer => RoleGql::Viewer,
            Role::Contributor => RoleGql::Contributor,
            Role::Approver => RoleGql::Approver,
            Role::Admin => RoleGql::Admin,
        }
    }
}

pub struct ProjectNode(pub Project);

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

    async fn members(&self, ctx: &Context<'_>) -> GqlResult<Vec<MembershipNode>> {
        let id = self.0.id;
        let rows = read(ctx, |c| projects::members(c, id).scope_boxed()).await?;
        Ok(rows
            .into_iter()
            .map(|(membership, user)| MembershipNode {
                membership,
                user,
                project: None,
            })
            .collect())
    }

    async fn datasets(&self, ctx: &Context<'_>) -> GqlResult<Vec<DatasetNode>> {
        let id = self.0.id;
        let rows = read(ctx, |c| datasets::list_in_project(c, id).scope_boxed()).await?;
        Ok(rows.into_iter().map(DatasetNode).collect())
    }

    async fn models(&self, ctx: &Context<'_>) -> GqlResult<Vec<ModelNode>> {
        let id = self.0.id;
        let rows = read(ctx, |c| models::list_in_project(c, id).scope_boxed()).await?;
        Ok(rows.into_iter().map(ModelNode).collect())
    }

    /// The project's stages in order, and whether promotions into each wait for approval.
    async fn stages(&self, ctx: &Context<'_>) -> GqlResult<Vec<super::promotions::StageNode>> {
        let id = self.0.id;
        let rows = read(ctx, |c| crate::stages::list(c, id).scope_boxed()).await?;
        Ok(rows.into_iter().map(super::promotions::StageNode).collect())
    }

    /// Runs, newest first.
    async fn runs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Connection<String, RunNode>> {
        let limit = page_size(first)?;
        let after = after.map(|a| parse_id(&ID(a), "cursor")).transpose()?;
        let id = self.0.id;
        let rows = read(ctx, |c| {
            runs::list_in_project(c, id, after, limit).scope_boxed()
        })
        .await?;
        Ok(super::page(
            rows,
            limit,
            after.is_some(),
            |run| run.id.to_string(),
            RunNode,
        ))
    }
}

pub struct MembershipNode {
    pub membership: Membership,
    pub user: User,
    pub project: Option<ProjectNode>,
}

#[Object(name = "Membership")]
impl MembershipNode {
    async fn user(&self) -> UserNode {
        UserNode(self.user.clone())
    }

    async fn role(&self) -> RoleGql {
        self.membership.role().into()
    }

    async fn groups(&self) -> &[String] {
        &self.membership.groups
    }

    async fn project(&self, ctx: &Context<'_>) -> GqlResult<ProjectNode> {
        if let Some(p) = &self.project {
            return Ok(ProjectNode(p.0.clone()));
        }
        let id = self.membership.project_id;
        let found = super::loaders(ctx)
            .load_one(super::loaders::ProjectById(id))
            .await
            .map_err(|e| (*e).clone())?
            .ok_or_else(|| gql_error(Error::not_found("project is gone")))?;
        Ok(ProjectNode(found))
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
        Ok(found.map(ProjectNode))
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
        Ok(ProjectNode(project))
    }

    /// Adds a member, or changes a member's role and groups (project admins). Creates the user if needed.
    async fn add_member(
        &self,
        ctx: &Context<'_>,
        project: String,
        email: String,
        role: RoleGql,
        groups: Option<Vec<String>>,
    ) -> GqlResult<MembershipNode> {
        let actor = actor(ctx)?;
        let (membership, user) = transaction(ctx, |c| {
            async move {
                projects::add_member(
                    c,
                    actor,
                    &project,
                    &email,
                    role.into(),
                    groups.unwrap_or_default(),
                )
                .await
            }
            .scope_boxed()
        })
        .await?;
        Ok(MembershipNode {
            membership,
            user,
            project: None,
        })
    }
}
