//! Invitations over GraphQL: thin wrappers around `invitations`.

use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::auth::UserNode;
use super::loaders::UserById;
use super::{actor, loaders, parse_id, state, transaction, GqlResult};
use crate::ids::InvitationId;
use crate::invitations::{self, Invitation};
use crate::projects::Role;

pub struct InvitationNode(pub Invitation);

/// An invitation to join a project, for an address without an account: it is taken up when
/// that account comes to be (by signing in, or created by a server admin).
#[Object(name = "Invitation")]
impl InvitationNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn role(&self) -> Role {
        self.0.role
    }

    async fn groups(&self) -> &[String] {
        &self.0.groups
    }

    /// The project admin who invited (or last re-invited); they count as the granter of the
    /// role (separation of duties).
    async fn invited_by(&self, ctx: &Context<'_>) -> GqlResult<Option<UserNode>> {
        let user = loaders(ctx)
            .load_one(UserById(self.0.invited_by))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(user.map(UserNode))
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }

    async fn accepted_at(&self) -> Option<DateTime<Utc>> {
        self.0.accepted_at
    }

    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

#[derive(Default)]
pub struct InvitationMutation;

#[Object]
impl InvitationMutation {
    /// Invites an address that has no account yet to a project (project admins), mailing the
    /// invitee; inviting again updates the open invitation. Addresses with an account are added
    /// with `addMember`.
    async fn invite_member(
        &self,
        ctx: &Context<'_>,
        project: String,
        email: String,
        role: Role,
        groups: Option<Vec<String>>,
    ) -> GqlResult<InvitationNode> {
        let actor = actor(ctx)?;
        let public_url = state(ctx).public_url.as_str();
        let groups = groups.unwrap_or_default();
        let invitation = transaction(ctx, |c| {
            async move {
                invitations::invite(c, actor, public_url, &project, &email, role, groups).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(InvitationNode(invitation))
    }

    /// Withdraws an open invitation (its project's admins).
    async fn revoke_invitation(&self, ctx: &Context<'_>, id: ID) -> GqlResult<InvitationNode> {
        let actor = actor(ctx)?;
        let id = parse_id::<InvitationId>(&id)?;
        let invitation = transaction(ctx, |c| {
            async move { invitations::revoke(c, actor, id).await }.scope_boxed()
        })
        .await?;
        Ok(InvitationNode(invitation))
    }
}
