//! Subscriptions: a run's new points and status, a project's promotions and audit entries, live
//! (graphql-transport-ws on `/graphql`, served by `http::subscriptions`; events from
//! [`crate::events`]). Each is authorized when it starts, and again whenever the project's
//! membership changes: it ends with FORBIDDEN once the caller may no longer read the project.

use std::sync::Arc;

use async_graphql::{Context, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::audit::AuditEntryNode;
use super::loaders::RunById;
use super::promotions::PromotionNode;
use super::runs::{Metric, RunNode};
use super::{actor, gql_error, load, parse_id, read, readable, state, GqlResult};
use crate::actor::Actor;
use crate::audit::AuditEntry;
use crate::db::DbPool;
use crate::error::Error;
use crate::events::{Ended, Event, Topic, Watch, SUBSCRIPTIONS_PER_CONNECTION};
use crate::ids::{ProjectId, PromotionId, RunId};
use crate::projects::{self, Role};
use crate::{promotions, runs};

/// The subscriptions one connection may still start ([`SUBSCRIPTIONS_PER_CONNECTION`]).
#[derive(Clone)]
pub struct SubscriptionSlots(Arc<Semaphore>);

impl Default for SubscriptionSlots {
    fn default() -> Self {
        SubscriptionSlots(Arc::new(Semaphore::new(SUBSCRIPTIONS_PER_CONNECTION)))
    }
}

#[derive(Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// A run's metric points as they are logged, and the run when it finishes.
    async fn run_updates(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = GqlResult<RunUpdate>>> {
        let slot = take_slot(ctx)?;
        let actor = actor(ctx)?;
        let id = parse_id::<RunId>(&run_id)?;
        let run = read(ctx, |c| {
            async move { runs::get(c, actor, id, Role::Viewer).await }.scope_boxed()
        })
        .await?;
        let follow = Follow::start(ctx, run.project_id, Some(Topic::Run(id)), slot).await?;
        let subject = id.to_string();
        Ok(follow.into_stream(move |event| match event {
            Event::Metrics {
                run_id,
                points,
                truncated,
            } if *run_id == id => Some(RunUpdate {
                run_id: id,
                metrics: points
                    .iter()
                    .map(|p| Metric {
                        key: p.key.clone(),
                        value: p.value,
                        step: p.step,
                        timestamp: p.at,
                    })
                    .collect(),
                truncated: *truncated,
            }),
            Event::Audit(entry) if entry.action == "run.finish" && entry.subject_id == subject => {
                Some(RunUpdate {
                    run_id: id,
                    metrics: Vec::new(),
                    truncated: false,
                })
            }
            _ => None,
        }))
    }

    /// A project's promotions as they are requested, decided, applied, cancelled or expire.
    async fn promotion_events(
        &self,
        ctx: &Context<'_>,
        project: String,
    ) -> async_graphql::Result<impl Stream<Item = GqlResult<PromotionEvent>>> {
        let slot = take_slot(ctx)?;
        let project = readable_project(ctx, project).await?;
        let follow = Follow::start(ctx, project, None, slot).await?;
        Ok(follow.into_stream(|event| match event {
            Event::Audit(entry) if entry.subject_kind == "promotion" => {
                Some(PromotionEvent(entry.as_ref().clone()))
            }
            _ => None,
        }))
    }

    /// A project's audit entries as they are appended.
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        project: String,
    ) -> async_graphql::Result<impl Stream<Item = GqlResult<AuditEntryNode>>> {
        let slot = take_slot(ctx)?;
        let project = readable_project(ctx, project).await?;
        let follow = Follow::start(ctx, project, None, slot).await?;
        Ok(follow.into_stream(|event| match event {
            Event::Audit(entry) => Some(AuditEntryNode(entry.as_ref().clone())),
            Event::Metrics { .. } => None,
        }))
    }
}

/// New points of a run (or, with none, a change of its status: read `run.status`).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct RunUpdate {
    #[graphql(skip)]
    run_id: RunId,
    /// The points of one logged batch, in the order logged; empty for a status change.
    metrics: Vec<Metric>,
    /// The batch was too large to carry here (`metrics` is empty): read `metricHistory`.
    truncated: bool,
}

#[async_graphql::ComplexObject]
impl RunUpdate {
    /// The run as it is now.
    async fn run(&self, ctx: &Context<'_>) -> GqlResult<RunNode> {
        let run = load(ctx, RunById(self.run_id), "run").await?;
        Ok(RunNode(readable(ctx, run).await?))
    }
}

/// A change of a promotion: `action` is the audit action (`promotion.request`,
/// `promotion.approve`, `promotion.apply`, …).
pub struct PromotionEvent(AuditEntry);

#[Object]
impl PromotionEvent {
    async fn action(&self) -> &str {
        &self.0.action
    }

    async fn actor(&self) -> &str {
        &self.0.actor
    }

    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    /// The audit entry's position in the chain.
    async fn seq(&self) -> i64 {
        self.0.seq
    }

    /// The promotion as it is now.
    async fn promotion(&self, ctx: &Context<'_>) -> GqlResult<PromotionNode> {
        let actor = actor(ctx)?;
        let id: PromotionId =
            self.0.subject_id.parse().map_err(|_| {
                gql_error(Error::Internal(anyhow::anyhow!("a promotion entry's id")))
            })?;
        let promotion = read(ctx, |c| {
            async move { promotions::get(c, actor, id).await }.scope_boxed()
        })
        .await?;
        Ok(PromotionNode(readable(ctx, promotion).await?))
    }
}

fn take_slot(ctx: &Context<'_>) -> GqlResult<OwnedSemaphorePermit> {
    let slots = ctx.data::<SubscriptionSlots>().map_err(|_| {
        gql_error(Error::invalid(
            "subscriptions are served over WebSocket (graphql-transport-ws) on /graphql",
        ))
    })?;
    slots.0.clone().try_acquire_owned().map_err(|_| {
        gql_error(Error::invalid(format!(
            "a connection holds at most {SUBSCRIPTIONS_PER_CONNECTION} subscriptions; complete one first"
        )))
    })
}

async fn readable_project(ctx: &Context<'_>, name: String) -> GqlResult<ProjectId> {
    let actor = actor(ctx)?;
    let project = read(ctx, |c| {
        async move { projects::find_authorized(c, actor, &name, Role::Viewer).await }.scope_boxed()
    })
    .await?;
    Ok(project.id)
}

/// One subscription's events: its project's (always: membership changes arrive there) and,
/// for a run, the run's; re-checks the caller's access when the membership changes.
struct Follow {
    actor: Actor,
    pool: DbPool,
    project_id: ProjectId,
    project: Watch,
    subject: Option<Watch>,
    ended: bool,
    _slot: OwnedSemaphorePermit,
}

impl Follow {
    async fn start(
        ctx: &Context<'_>,
        project_id: ProjectId,
        subject: Option<Topic>,
        slot: OwnedSemaphorePermit,
    ) -> GqlResult<Follow> {
        let state = state(ctx);
        let project = state
            .events
            .watch(Topic::Project(project_id))
            .await
            .map_err(gql_error)?;
        let subject = match subject {
            Some(topic) => Some(state.events.watch(topic).await.map_err(gql_error)?),
            None => None,
        };
        Ok(Follow {
            actor: actor(ctx)?.clone(),
            pool: state.pool.clone(),
            project_id,
            project,
            subject,
            ended: false,
            _slot: slot,
        })
    }

    /// The next event, an error that ends the subscription, or None when it has ended.
    async fn next(&mut self) -> Option<GqlResult<Arc<Event>>> {
        if self.ended {
            return None;
        }
        let received = match &mut self.subject {
            Some(subject) => tokio::select! {
                event = self.project.next() => event,
                event = subject.next() => event,
            },
            None => self.project.next().await,
        };
        let outcome = match received {
            Ok(event) => match &*event {
                Event::Audit(entry) if entry.action.starts_with("member.") => {
                    self.still_readable().await.map(|()| event)
                }
                _ => Ok(event),
            },
            Err(Ended::Lagged(missed)) => Err(Error::Unavailable(format!(
                "this subscriber fell {missed} events behind and was ended; subscribe again"
            ))),
            Err(Ended::Closed) => {
                self.ended = true;
                return None;
            }
        };
        self.ended = outcome.is_err();
        Some(outcome.map_err(gql_error))
    }

    async fn still_readable(&self) -> Result<(), Error> {
        let mut conn = self.pool.get().await?;
        let roles = projects::roles_in(&mut conn, &self.actor, &[self.project_id]).await?;
        if roles.contains_key(&self.project_id) {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "you may no longer read this project; the subscription ended".into(),
            ))
        }
    }

    /// The events `select` keeps, as a stream that ends after an error.
    fn into_stream<T, F>(self, select: F) -> impl Stream<Item = GqlResult<T>>
    where
        T: Send + 'static,
        F: FnMut(&Event) -> Option<T> + Send + 'static,
    {
        futures_util::stream::unfold((self, select), |(mut follow, mut select)| async move {
            loop {
                match follow.next().await? {
                    Ok(event) => {
                        if let Some(item) = select(&event) {
                            return Some((Ok(item), (follow, select)));
                        }
                    }
                    Err(e) => return Some((Err(e), (follow, select))),
                }
            }
        })
    }
}
