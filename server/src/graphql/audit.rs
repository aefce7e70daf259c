use async_graphql::connection::Connection;
use async_graphql::{Context, Json, Object, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::{actor, gql_error, page_size, read, GqlResult};
use crate::audit::{self, AuditEntry, AuditFilter};
use crate::error::Error;
use crate::projects::{self, Role};

pub struct AuditEntryNode(pub AuditEntry);

#[Object(name = "AuditEntry")]
impl AuditEntryNode {
    async fn seq(&self) -> i64 {
        self.0.seq
    }

    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    /// Email of the user (or `system:…`) who acted.
    async fn actor(&self) -> &str {
        &self.0.actor
    }

    async fn action(&self) -> &str {
        &self.0.action
    }

    async fn project_id(&self) -> Option<ID> {
        self.0.project_id.map(|p| ID(p.to_string()))
    }

    async fn subject_kind(&self) -> &str {
        &self.0.subject_kind
    }

    async fn subject_id(&self) -> ID {
        ID(self.0.subject_id.clone())
    }

    async fn before(&self) -> Option<Json<serde_json::Value>> {
        self.0.before.clone().map(Json)
    }

    async fn after(&self) -> Option<Json<serde_json::Value>> {
        self.0.after.clone().map(Json)
    }

    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    async fn prev_hash(&self) -> &str {
        &self.0.prev_hash
    }

    /// `sha256(prevHash || canonical JSON of entry)`, hex.
    async fn hash(&self) -> &str {
        &self.0.hash
    }

    /// The canonical entry document the hash covers (serialise with sorted keys, no whitespace).
    async fn entry(&self) -> Json<serde_json::Value> {
        Json(self.0.canonical_document())
    }
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The audit log in ascending `seq`. With `project`, readable by the project's members;
    /// without, by server admins only. Filters: `subjectId`, `action` and `actor` (the entry's
    /// actor exactly, e.g. an email) match exactly; `since` (inclusive) and `until` (exclusive)
    /// bound the time.
    #[allow(clippy::too_many_arguments)]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        project: Option<String>,
        subject_id: Option<ID>,
        action: Option<String>,
        #[graphql(name = "actor")] acted_by: Option<String>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Connection<String, AuditEntryNode>> {
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                return Err(gql_error(Error::invalid(
                    "`since` must be before `until` (since is inclusive, until exclusive)",
                )));
            }
        }
        let actor = actor(ctx)?;
        let limit = page_size(first)?;
        let after_seq = after
            .map(|a| {
                a.parse::<i64>()
                    .map_err(|_| gql_error(Error::invalid("`after` is not an audit cursor")))
            })
            .transpose()?;
        let rows = read(ctx, |c| {
            async move {
                let project_id = match project {
                    Some(name) => Some(
                        projects::find_authorized(c, actor, &name, Role::Viewer)
                            .await?
                            .id,
                    ),
                    None => {
                        actor.require_admin()?;
                        None
                    }
                };
                let filter = AuditFilter {
                    project_id,
                    subject_id: subject_id.map(|s| s.0),
                    action,
                    actor: acted_by,
                    since,
                    until,
                };
                audit::list(c, &filter, after_seq, limit).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(super::page(
            rows,
            limit,
            after_seq.is_some(),
            |e| e.seq.to_string(),
            AuditEntryNode,
        ))
    }

    /// The newest entries of the projects the caller is a member of (server admins too: their
    /// own projects), newest first: `first` (default 10, at most 100).
    #[graphql(complexity = "super::list_cost(first, 10, child_complexity)")]
    async fn recent_activity(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
    ) -> GqlResult<Vec<AuditEntryNode>> {
        let actor = actor(ctx)?;
        let limit = i64::from(first.unwrap_or(10));
        if !(1..=i64::from(super::MAX_PAGE_SIZE)).contains(&limit) {
            return Err(gql_error(Error::invalid(format!(
                "`first` must be between 1 and {}",
                super::MAX_PAGE_SIZE
            ))));
        }
        let rows = read(ctx, |c| {
            async move {
                let projects = projects::member_ids(c, actor).await?;
                audit::recent(c, &projects, limit).await
            }
            .scope_boxed()
        })
        .await?;
        Ok(rows.into_iter().map(AuditEntryNode).collect())
    }
}
