use async_graphql::{Context, Object, ID};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::access_tokens::AccessTokenNode;
use super::projects::MembershipNode;
use super::{
    access, actor, gql_error, list_cost, parse_id, read, slice, state, transaction, GqlResult,
    DEFAULT_LIST_SIZE, MAX_LIST_SIZE,
};
use crate::access_tokens;
use crate::auth::{self, User};
use crate::ids::TokenId;
use crate::projects;

pub struct UserNode(pub User);

#[Object(name = "User")]
impl UserNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    /// Server-wide administrator.
    async fn is_admin(&self) -> bool {
        self.0.is_admin
    }

    /// This user's access tokens, newest first (without secrets): for the user and server
    /// admins, who may revoke them; FORBIDDEN for anyone else.
    async fn access_tokens(&self, ctx: &Context<'_>) -> GqlResult<Vec<AccessTokenNode>> {
        let caller = actor(ctx)?;
        let user_id = self.0.id;
        let tokens = read(ctx, |c| {
            async move { access_tokens::list_for(c, caller, user_id).await }.scope_boxed()
        })
        .await?;
        Ok(tokens.into_iter().map(AccessTokenNode).collect())
    }

    /// The runs this user started, newest first, in projects the caller may read: `first`
    /// (default 10, at most 100). The user themself only; FORBIDDEN for anyone else.
    #[graphql(complexity = "list_cost(first, 10, child_complexity)")]
    async fn recent_runs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
    ) -> GqlResult<Vec<super::runs::RunNode>> {
        let caller = actor(ctx)?;
        let limit = i64::from(first.unwrap_or(10));
        if !(1..=i64::from(super::MAX_PAGE_SIZE)).contains(&limit) {
            return Err(gql_error(crate::error::Error::invalid(format!(
                "`first` must be between 1 and {}",
                super::MAX_PAGE_SIZE
            ))));
        }
        let user_id = self.0.id;
        let rows = read(ctx, |c| {
            async move { crate::runs::started_by(c, caller, user_id, limit).await }.scope_boxed()
        })
        .await?;
        Ok(super::readable_only(ctx, rows)
            .await?
            .into_iter()
            .map(super::runs::RunNode)
            .collect())
    }

    /// The memberships of this user in projects the caller may read (by project name): adding
    /// someone to a project shows nothing about their other projects. `first` (default 100, at
    /// most 1000) after skipping `offset`.
    #[graphql(complexity = "list_cost(first, DEFAULT_LIST_SIZE, child_complexity)")]
    async fn memberships(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> GqlResult<Vec<MembershipNode>> {
        let slice = slice(first, offset, DEFAULT_LIST_SIZE, MAX_LIST_SIZE)?;
        let user_id = self.0.id;
        let access = access(ctx)?;
        let caller = access.actor().clone();
        // Only projects both share are looked at, so paging never reveals how many are hidden.
        let rows = read(ctx, |c| {
            async move { projects::memberships_visible_to(c, user_id, &caller, slice).await }
                .scope_boxed()
        })
        .await?;
        let mut nodes = Vec::with_capacity(rows.len());
        for (membership, project) in rows {
            let project = access.readable(project).await.map_err(gql_error)?;
            nodes.push(MembershipNode {
                membership: project.child(membership).map_err(gql_error)?,
                user: self.0.clone(),
            });
        }
        Ok(nodes)
    }
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> GqlResult<UserNode> {
        let actor = actor(ctx)?;
        let email = actor.email.clone();
        let user = read(ctx, |c| {
            async move {
                auth::find_user_by_email(c, &email)
                    .await?
                    .ok_or_else(|| crate::error::Error::not_found("the caller's user is gone"))
            }
            .scope_boxed()
        })
        .await?;
        Ok(UserNode(user))
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Issues a bearer token for a user (created if missing). Server admins only.
    async fn issue_token(
        &self,
        ctx: &Context<'_>,
        email: String,
        #[graphql(desc = "lifetime such as 30d, 12h, 15m; default 30d")] ttl: Option<String>,
    ) -> GqlResult<String> {
        let actor = actor(ctx)?;
        let keys = state(ctx).keys.clone();
        let ttl = auth::parse_ttl(ttl.as_deref().unwrap_or("30d")).map_err(super::gql_error)?;
        transaction(ctx, |c| {
            async move { auth::issue_token(c, &keys, actor, &email, false, ttl).await }
                .scope_boxed()
        })
        .await
    }

    /// Revokes every token of a user (server-issued and access tokens); answers how many were
    /// still valid. Server admins only.
    async fn revoke_user_tokens(&self, ctx: &Context<'_>, email: String) -> GqlResult<i32> {
        let actor = actor(ctx)?;
        let revoked = transaction(ctx, |c| {
            async move { auth::revoke_all_tokens_of(c, actor, &email).await }.scope_boxed()
        })
        .await?;
        Ok(i32::try_from(revoked).unwrap_or(i32::MAX))
    }

    /// Ends every browser session of a user at once; answers how many were open. Server admins
    /// only.
    async fn revoke_user_sessions(&self, ctx: &Context<'_>, email: String) -> GqlResult<i32> {
        let actor = actor(ctx)?;
        let revoked = transaction(ctx, |c| {
            async move { crate::sessions::revoke_all_of(c, actor, &email).await }.scope_boxed()
        })
        .await?;
        Ok(i32::try_from(revoked).unwrap_or(i32::MAX))
    }

    /// Revokes a token by its `jti`; it is refused from then on. Server admins only.
    async fn revoke_token(&self, ctx: &Context<'_>, jti: ID) -> GqlResult<bool> {
        let actor = actor(ctx)?;
        let jti = parse_id::<TokenId>(&jti)?;
        transaction(ctx, |c| {
            async move { auth::revoke_token(c, actor, jti).await }.scope_boxed()
        })
        .await?;
        Ok(true)
    }
}
