//! Personal access tokens and service accounts over GraphQL: thin wrappers around
//! `access_tokens` and `service_accounts`.

use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::loaders::ProjectById;
use super::projects::ProjectNode;
use super::{access, actor, gql_error, loaders, parse_id, read, transaction, GqlResult};
use crate::access_tokens::{self, AccessToken, Created, TokenRequest};
use crate::ids::AccessTokenId;
use crate::projects::Role;
use crate::service_accounts::{self, ServiceAccount};

pub struct AccessTokenNode(pub AccessToken);

/// A personal access token or a service account's token. Its secret is never shown again
/// after creation.
#[Object(name = "AccessToken")]
impl AccessTokenNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The one project the token reaches, if limited to one (null also when the caller cannot
    /// read that project).
    async fn project(&self, ctx: &Context<'_>) -> GqlResult<Option<ProjectNode>> {
        let Some(id) = self.0.project_id else {
            return Ok(None);
        };
        let Some(project) = loaders(ctx)
            .load_one(ProjectById(id))
            .await
            .map_err(|e| (*e).clone())?
        else {
            return Ok(None);
        };
        let readable = access(ctx)?
            .readable_opt(project)
            .await
            .map_err(gql_error)?;
        Ok(readable.map(ProjectNode))
    }

    /// Every change through this token is refused.
    async fn read_only(&self) -> bool {
        self.0.read_only
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }

    /// When the token last authenticated a request (to the minute).
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// A token just created: `secret` is the bearer token, shown this once.
#[derive(SimpleObject)]
pub struct NewAccessToken {
    secret: String,
    token: AccessTokenNode,
}

impl From<Created> for NewAccessToken {
    fn from(created: Created) -> Self {
        NewAccessToken {
            secret: created.secret,
            token: AccessTokenNode(created.token),
        }
    }
}

pub struct ServiceAccountNode(ServiceAccount);

/// An identity for automation owned by a project: acts only through its tokens, only in its
/// project, as VIEWER or CONTRIBUTOR.
#[Object(name = "ServiceAccount")]
impl ServiceAccountNode {
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// How the account is named wherever a user is (`service:<project>/<name>`).
    async fn identity(&self) -> &str {
        &self.0.email
    }

    async fn role(&self) -> Role {
        self.0.role
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The account's tokens, newest first (project admins; others get FORBIDDEN).
    async fn tokens(&self, ctx: &Context<'_>) -> GqlResult<Vec<AccessTokenNode>> {
        let actor = actor(ctx)?;
        let account = &self.0;
        let tokens = read(ctx, |c| {
            async move { access_tokens::list_for_service_account(c, actor, account).await }
                .scope_boxed()
        })
        .await?;
        Ok(tokens.into_iter().map(AccessTokenNode).collect())
    }
}

#[derive(Default)]
pub struct AccessTokenQuery;

#[Object]
impl AccessTokenQuery {
    /// The caller's own access tokens, newest first (revoked and expired ones say so).
    async fn access_tokens(&self, ctx: &Context<'_>) -> GqlResult<Vec<AccessTokenNode>> {
        let actor = actor(ctx)?;
        let tokens = read(ctx, |c| {
            async move { access_tokens::list_own(c, actor).await }.scope_boxed()
        })
        .await?;
        Ok(tokens.into_iter().map(AccessTokenNode).collect())
    }

    /// A project's service accounts, by name (any member).
    async fn service_accounts(
        &self,
        ctx: &Context<'_>,
        project: String,
    ) -> GqlResult<Vec<ServiceAccountNode>> {
        let actor = actor(ctx)?;
        let accounts = read(ctx, |c| {
            async move { service_accounts::list(c, actor, &project).await }.scope_boxed()
        })
        .await?;
        Ok(accounts.into_iter().map(ServiceAccountNode).collect())
    }
}

#[derive(Default)]
pub struct AccessTokenMutation;

#[Object]
impl AccessTokenMutation {
    /// Creates a personal access token acting as the caller: `expiresIn` like 90d (default),
    /// 12h, 15m; `readOnly` refuses every change; `project` limits it to that project.
    async fn create_access_token(
        &self,
        ctx: &Context<'_>,
        name: String,
        expires_in: Option<String>,
        read_only: Option<bool>,
        project: Option<String>,
    ) -> GqlResult<NewAccessToken> {
        let actor = actor(ctx)?;
        let request =
            TokenRequest::new(name, expires_in.as_deref(), read_only).map_err(gql_error)?;
        let created = transaction(ctx, |c| {
            async move {
                access_tokens::create_personal(c, actor, request, project.as_deref()).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(created.into())
    }

    /// Revokes an access token: its owner, a server admin, or an admin of a service account's
    /// project. It is refused from then on.
    async fn revoke_access_token(&self, ctx: &Context<'_>, id: ID) -> GqlResult<AccessTokenNode> {
        let actor = actor(ctx)?;
        let id = parse_id::<AccessTokenId>(&id)?;
        let token = transaction(ctx, |c| {
            async move { access_tokens::revoke(c, actor, id).await }.scope_boxed()
        })
        .await?;
        Ok(AccessTokenNode(token))
    }

    /// Creates a service account in a project (project admins), as VIEWER or CONTRIBUTOR
    /// (default CONTRIBUTOR).
    async fn create_service_account(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: String,
        role: Option<Role>,
    ) -> GqlResult<ServiceAccountNode> {
        let actor = actor(ctx)?;
        let account = transaction(ctx, |c| {
            async move { service_accounts::create(c, actor, &project, &name, role).await }
                .scope_boxed()
        })
        .await?;
        Ok(ServiceAccountNode(account))
    }

    /// Creates a token for a project's service account (project admins); it reaches that
    /// project only.
    async fn create_service_account_token(
        &self,
        ctx: &Context<'_>,
        project: String,
        account: String,
        name: String,
        expires_in: Option<String>,
        read_only: Option<bool>,
    ) -> GqlResult<NewAccessToken> {
        let actor = actor(ctx)?;
        let request =
            TokenRequest::new(name, expires_in.as_deref(), read_only).map_err(gql_error)?;
        let created = transaction(ctx, |c| {
            async move {
                access_tokens::create_for_service_account(c, actor, &project, &account, request)
                    .await
            }
            .scope_boxed()
        })
        .await?;
        Ok(created.into())
    }

    /// Removes a service account (project admins): its membership ends and all its tokens are
    /// revoked. What it did keeps naming it.
    async fn remove_service_account(
        &self,
        ctx: &Context<'_>,
        project: String,
        name: String,
    ) -> GqlResult<bool> {
        let actor = actor(ctx)?;
        transaction(ctx, |c| {
            async move { service_accounts::remove(c, actor, &project, &name).await }.scope_boxed()
        })
        .await?;
        Ok(true)
    }
}
