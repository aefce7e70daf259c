use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::{actor, transaction, GqlResult};
use crate::code::{self, CodeCommit, NewCommit};

pub struct CodeCommitNode(pub CodeCommit);

#[Object(name = "CodeCommit")]
impl CodeCommitNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn repository(&self) -> &str {
        &self.0.repository
    }

    /// The 40-hex commit id.
    async fn commit(&self) -> &str {
        &self.0.commit_sha
    }

    async fn branch(&self) -> Option<&str> {
        self.0.branch.as_deref()
    }

    async fn author(&self) -> Option<&str> {
        self.0.author.as_deref()
    }

    async fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }

    /// Whether the working tree had uncommitted changes.
    async fn dirty(&self) -> bool {
        self.0.dirty
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(Default)]
pub struct CodeMutation;

#[Object]
impl CodeMutation {
    /// Registers a commit; the same repository, commit and dirty flag again returns the first one.
    // The arguments are the mutation's GraphQL arguments; async-graphql names them by these.
    #[allow(clippy::too_many_arguments)]
    async fn register_code_commit(
        &self,
        ctx: &Context<'_>,
        repository: String,
        commit: String,
        branch: Option<String>,
        dirty: Option<bool>,
        author: Option<String>,
        message: Option<String>,
    ) -> GqlResult<CodeCommitNode> {
        let actor = actor(ctx)?;
        let commit = transaction(ctx, |c| {
            async move {
                let new = NewCommit {
                    repository: &repository,
                    commit: &commit,
                    branch: branch.as_deref(),
                    author: author.as_deref(),
                    message: message.as_deref(),
                    dirty: dirty.unwrap_or(false),
                };
                code::register(c, actor, new).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(CodeCommitNode(commit))
    }
}
