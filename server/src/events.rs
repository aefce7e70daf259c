//! Live events for GraphQL subscriptions, across replicas.
//!
//! A writer announces a change with `pg_notify` inside the transaction that makes it (metric
//! points in [`crate::runs::log_metrics`], audit entries in [`crate::audit`]), so every replica
//! hears it exactly when — and only if — it commits, whichever replica wrote it. NOTIFY
//! serialises committing transactions on a database-wide lock, so writers announce only topics
//! some replica watches: each replica keeps a row per watched topic in the unlogged
//! `event_watches` table, refreshed while it has subscribers and left to expire after.
//!
//! Each replica holds one LISTEN connection. For each notification it loads what the payload
//! does not carry (audit entries, by `seq` range) once, and fans it out to its local subscribers
//! through bounded broadcast channels: a subscriber that falls [`QUEUE`] events behind is told
//! so and ended, never buffered without limit.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::audit::AuditEntry;
use crate::db::schema::audit_log;
use crate::db::{Conn, DbPool, Prepared};
use crate::error::{Error, Result};
use crate::ids::{ProjectId, RunId, UserId};

/// The one channel every notification travels on; the payload names its topic.
pub const CHANNEL: &str = "custody_events";

/// Events a subscriber may fall behind before it is ended.
pub const QUEUE: usize = 256;

/// Subscriptions one connection may hold.
pub const SUBSCRIPTIONS_PER_CONNECTION: usize = 100;

/// Subscription connections one user may hold at once (on this replica).
pub const CONNECTIONS_PER_USER: usize = 20;

/// NOTIFY refuses payloads of 8,000 bytes or more; a larger batch of points is announced
/// without them ([`Event::Metrics::truncated`]).
const MAX_PAYLOAD: usize = 7_900;

/// How often a replica refreshes its watches, and how long a watch outlives its last refresh.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
const WATCH_TTL_SECONDS: i32 = 90;

/// What subscribers follow: one run's points, or one project's audit entries (promotions,
/// status changes and membership changes are among them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Run(RunId),
    Project(ProjectId),
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Run(id) => write!(f, "run:{id}"),
            Topic::Project(id) => write!(f, "project:{id}"),
        }
    }
}

/// One metric point as announced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub at: DateTime<Utc>,
}

/// What a notification says, as it travels (JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Notice {
    /// Points logged to a run; `truncated`: too many to carry, `points` is empty.
    Metrics {
        run: RunId,
        points: Vec<Point>,
        truncated: bool,
    },
    /// Audit entries `from..=to` of a project were appended.
    Audit {
        project: ProjectId,
        from: i64,
        to: i64,
    },
}

/// What subscribers receive.
#[derive(Debug)]
pub enum Event {
    Metrics {
        run_id: RunId,
        points: Vec<Point>,
        truncated: bool,
    },
    Audit(Box<AuditEntry>),
}

/// The topic and payload announcing points logged to a run, given as the columns `logMetrics`
/// binds (built before the statement that logs them, which sends it only if the run is watched).
pub fn metrics_payload(
    run: RunId,
    keys: &[String],
    values: &[f64],
    steps: &[i64],
    ats: &[DateTime<Utc>],
) -> (String, String) {
    let topic = Topic::Run(run).to_string();
    // A point takes at least this many bytes of JSON: a batch that cannot fit is not serialised
    // only to be thrown away (the 1,000-point batches of bulk logging).
    const MIN_POINT_JSON: usize = 50;
    if keys.len() * MIN_POINT_JSON > MAX_PAYLOAD {
        return (topic, truncated_payload(run));
    }
    let points = keys
        .iter()
        .zip(values)
        .zip(steps)
        .zip(ats)
        .map(|(((key, value), step), at)| Point {
            key: key.clone(),
            value: *value,
            step: *step,
            at: *at,
        })
        .collect();
    let full = Notice::Metrics {
        run,
        points,
        truncated: false,
    };
    let payload = serde_json::to_string(&full).unwrap_or_default();
    if payload.len() <= MAX_PAYLOAD {
        return (topic, payload);
    }
    (topic, truncated_payload(run))
}

fn truncated_payload(run: RunId) -> String {
    let truncated = Notice::Metrics {
        run,
        points: Vec::new(),
        truncated: true,
    };
    serde_json::to_string(&truncated).unwrap_or_default()
}

/// Announces appended audit entries to the watchers of their projects, in the appending
/// transaction. `entries`: (project, seq) of each appended entry. The statement is sent when the
/// answer is first polled, and the answer does not hold `conn` (the append pipelines it).
pub fn announce_audit(
    conn: &mut Conn,
    entries: &[(ProjectId, i64)],
) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
    let mut ranges: HashMap<ProjectId, (i64, i64)> = HashMap::new();
    for &(project, seq) in entries {
        let range = ranges.entry(project).or_insert((seq, seq));
        range.0 = range.0.min(seq);
        range.1 = range.1.max(seq);
    }
    let (topics, payloads): (Vec<String>, Vec<String>) = ranges
        .into_iter()
        .map(|(project, (from, to))| {
            let notice = Notice::Audit { project, from, to };
            (
                Topic::Project(project).to_string(),
                serde_json::to_string(&notice).unwrap_or_default(),
            )
        })
        .unzip();
    let sent = (!topics.is_empty()).then(|| {
        Prepared(
            diesel::sql_query(
                "SELECT pg_notify('custody_events', n.payload)
                 FROM unnest($1::text[], $2::text[]) AS n (topic, payload)
                 WHERE EXISTS (SELECT 1 FROM event_watches w
                               WHERE w.topic = n.topic AND w.expires_at > now())",
            )
            .bind::<Array<Text>, _>(topics)
            .bind::<Array<Text>, _>(payloads),
        )
        .execute(conn)
    });
    async move {
        if let Some(sent) = sent {
            sent.await?;
        }
        Ok(())
    }
}

/// One replica's subscribers and its LISTEN connection.
pub struct Hub {
    /// Names this replica's rows in `event_watches`.
    replica: uuid::Uuid,
    pool: DbPool,
    topics: Mutex<HashMap<Topic, broadcast::Sender<Arc<Event>>>>,
    connections: Mutex<HashMap<UserId, usize>>,
}

impl Hub {
    /// Starts listening (on a connection of its own to `database_url`) and refreshing watches;
    /// returns once the first LISTEN is in place, so no subscriber misses an event for want of it.
    pub async fn start(database_url: String, pool: DbPool) -> anyhow::Result<Arc<Hub>> {
        let hub = Arc::new(Hub {
            replica: uuid::Uuid::now_v7(),
            pool,
            topics: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
        });
        let (ready, listening) = tokio::sync::oneshot::channel();
        tokio::spawn(listen(hub.clone(), database_url, ready));
        tokio::time::timeout(Duration::from_secs(60), listening)
            .await
            .map_err(|_| anyhow::anyhow!("LISTEN for live events did not start within 60 s"))?
            .map_err(|_| anyhow::anyhow!("the live events listener stopped"))?;
        tokio::spawn(refresh_watches(hub.clone()));
        Ok(hub)
    }

    /// Follows `topic` from now on. The watch row is written before this returns, so a change
    /// committed after it is announced.
    pub async fn watch(self: &Arc<Self>, topic: Topic) -> Result<Watch> {
        let (receiver, new) = {
            let mut topics = self.topics.lock().expect("topics poisoned");
            match topics.get(&topic) {
                Some(sender) => (sender.subscribe(), false),
                None => {
                    let (sender, receiver) = broadcast::channel(QUEUE);
                    topics.insert(topic, sender);
                    (receiver, true)
                }
            }
        };
        let watch = Watch {
            hub: self.clone(),
            topic,
            receiver: Some(receiver),
        };
        if new {
            let mut conn = self.pool.get().await?;
            self.write_watches(&mut conn, &[topic.to_string()]).await?;
        }
        Ok(watch)
    }

    /// Holds one of the user's [`CONNECTIONS_PER_USER`] subscription connections until dropped.
    pub fn connection_slot(self: &Arc<Self>, user: Option<UserId>) -> Result<ConnectionSlot> {
        if let Some(user) = user {
            let mut connections = self.connections.lock().expect("connections poisoned");
            let held = connections.entry(user).or_insert(0);
            if *held >= CONNECTIONS_PER_USER {
                return Err(Error::invalid(format!(
                    "a user holds at most {CONNECTIONS_PER_USER} subscription connections; close one first"
                )));
            }
            *held += 1;
        }
        Ok(ConnectionSlot {
            hub: self.clone(),
            user,
        })
    }

    async fn write_watches(&self, conn: &mut Conn, topics: &[String]) -> Result<()> {
        Prepared(diesel::sql_query(
            "INSERT INTO event_watches (topic, replica, expires_at)
             SELECT topic, $2, now() + make_interval(secs => $3) FROM unnest($1::text[]) AS t (topic)
             ON CONFLICT (topic, replica) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        )
        .bind::<Array<Text>, _>(topics)
        .bind::<SqlUuid, _>(self.replica)
        .bind::<diesel::sql_types::Integer, _>(WATCH_TTL_SECONDS))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The watched topics, forgetting those whose subscribers all left.
    fn watched(&self) -> Vec<String> {
        let mut topics = self.topics.lock().expect("topics poisoned");
        topics.retain(|_, sender| sender.receiver_count() > 0);
        topics.keys().map(Topic::to_string).collect()
    }

    fn sender(&self, topic: Topic) -> Option<broadcast::Sender<Arc<Event>>> {
        let topics = self.topics.lock().expect("topics poisoned");
        topics
            .get(&topic)
            .filter(|sender| sender.receiver_count() > 0)
            .cloned()
    }

    /// Hands one notification to the local subscribers of its topic.
    async fn dispatch(&self, payload: &str) -> Result<()> {
        let notice: Notice = serde_json::from_str(payload)
            .map_err(|e| Error::Internal(anyhow::anyhow!("a live event payload: {e}")))?;
        match notice {
            Notice::Metrics {
                run,
                points,
                truncated,
            } => {
                if let Some(sender) = self.sender(Topic::Run(run)) {
                    let _ = sender.send(Arc::new(Event::Metrics {
                        run_id: run,
                        points,
                        truncated,
                    }));
                }
            }
            Notice::Audit { project, from, to } => {
                let Some(sender) = self.sender(Topic::Project(project)) else {
                    return Ok(());
                };
                let mut conn = self.pool.get().await?;
                let entries: Vec<AuditEntry> = audit_log::table
                    .filter(audit_log::project_id.eq(project))
                    .filter(audit_log::seq.between(from, to))
                    .order(audit_log::seq.asc())
                    .select(AuditEntry::as_select())
                    .load(&mut conn)
                    .await?;
                for entry in entries {
                    let _ = sender.send(Arc::new(Event::Audit(Box::new(entry))));
                }
            }
        }
        Ok(())
    }
}

/// A subscriber's end of a topic.
pub struct Watch {
    hub: Arc<Hub>,
    topic: Topic,
    receiver: Option<broadcast::Receiver<Arc<Event>>>,
}

/// Why a watch gives no more events.
#[derive(Debug)]
pub enum Ended {
    /// The subscriber fell this many events behind; the events were dropped.
    Lagged(u64),
    /// The replica stopped listening.
    Closed,
}

impl Watch {
    pub fn topic(&self) -> Topic {
        self.topic
    }

    pub async fn next(&mut self) -> std::result::Result<Arc<Event>, Ended> {
        let receiver = self.receiver.as_mut().ok_or(Ended::Closed)?;
        receiver.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => Ended::Lagged(n),
            broadcast::error::RecvError::Closed => Ended::Closed,
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut topics = self.hub.topics.lock().expect("topics poisoned");
        if topics
            .get(&self.topic)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            // Its watch row expires on its own; announcements until then find nobody.
            topics.remove(&self.topic);
        }
    }
}

/// One subscription connection of a user, released when the connection ends.
pub struct ConnectionSlot {
    hub: Arc<Hub>,
    user: Option<UserId>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(user) = self.user {
            let mut connections = self.hub.connections.lock().expect("connections poisoned");
            if let Some(held) = connections.get_mut(&user) {
                *held -= 1;
                if *held == 0 {
                    connections.remove(&user);
                }
            }
        }
    }
}

/// The LISTEN connection: reconnects after a failure (events committed meanwhile are missed,
/// and logged as such).
async fn listen(hub: Arc<Hub>, database_url: String, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(200);
    loop {
        match listen_once(&hub, &database_url, &mut ready).await {
            Ok(()) => tracing::warn!("the live events connection closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "the live events connection failed; reconnecting"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn listen_once(
    hub: &Hub,
    database_url: &str,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let (client, mut connection) =
        tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    let (notices, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for the LISTEN to complete and for notifications to arrive.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if notices.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the live events connection");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    } else {
        tracing::warn!("listening for live events again; events committed while disconnected were not delivered");
    }
    while let Some(payload) = incoming.recv().await {
        if let Err(e) = hub.dispatch(&payload).await {
            tracing::warn!(error = %e, "delivering a live event");
        }
    }
    driver.abort();
    Ok(())
}

/// Keeps this replica's watch rows alive while their topics have subscribers, and clears rows
/// every replica let expire.
async fn refresh_watches(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    loop {
        tick.tick().await;
        let topics = hub.watched();
        let outcome = async {
            let mut conn = hub.pool.get().await?;
            if !topics.is_empty() {
                hub.write_watches(&mut conn, &topics).await?;
            }
            diesel::sql_query("DELETE FROM event_watches WHERE expires_at < now()")
                .execute(&mut conn)
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "refreshing live event watches");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TypedId;

    #[test]
    fn large_batches_are_announced_without_their_points() {
        let run = RunId::from_uuid(uuid::Uuid::now_v7());
        let batch = |n: i64| {
            let keys: Vec<String> = (0..n).map(|i| format!("loss_{i}")).collect();
            let steps: Vec<i64> = (0..n).collect();
            (
                keys,
                vec![0.5; n as usize],
                steps,
                vec![Utc::now(); n as usize],
            )
        };
        let (keys, values, steps, ats) = batch(3);
        let (topic, small) = metrics_payload(run, &keys, &values, &steps, &ats);
        assert_eq!(topic, format!("run:{run}"));
        assert!(small.contains("loss_2") && small.contains("\"truncated\":false"));
        for size in [1000, 150] {
            // 1,000 points are refused by their count, 150 by their serialised length.
            let (keys, values, steps, ats) = batch(size);
            let (_, large) = metrics_payload(run, &keys, &values, &steps, &ats);
            assert!(large.len() < MAX_PAYLOAD, "{}", large.len());
            assert!(large.contains("\"truncated\":true") && !large.contains("loss_"));
        }
    }
}
