//! Group commit: concurrent requests that each make a small change share one transaction.
//!
//! A transaction costs more than the rows it writes: its BEGIN and COMMIT round trips, the
//! commit's WAL flush, and, above all, the audit chain's append, which every writer takes in
//! turn (`audit::transaction`). Requests that arrive together queue their call here and wait;
//! a writer takes every call waiting (up to a batch's most), applies them together and answers
//! each request with its own outcome once the batch has committed. An idle server applies a
//! lone call at once: gathering never waits for company, it only takes what queued while the
//! previous batch was being written.
//!
//! Used for single metrics (`metric_queue`) and OpenLineage events (`openlineage`).

use std::future::Future;
use std::sync::{Arc, LazyLock};

use prometheus::IntCounterVec;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::{Error, Result};

/// Calls waiting for a writer; when full, requests wait to queue (back-pressure, not memory).
const QUEUE_CAPACITY: usize = 10_000;

/// Batches written, by queue: against [`CALLS`], how much the commits were shared.
static BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "custody_group_commit_batches_total",
        "batches written together, by queue",
    )
});
static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "custody_group_commit_calls_total",
        "calls written in batches, by queue",
    )
});

fn counter(name: &str, help: &str) -> IntCounterVec {
    IntCounterVec::new(prometheus::Opts::new(name, help), &["queue"])
        .expect("a valid counter definition")
}

/// Puts the batch counters in the scrape (`GET /metrics`).
pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
    registry.register(Box::new(BATCHES.clone()))?;
    registry.register(Box::new(CALLS.clone()))
}

struct Queued<C, O> {
    call: C,
    answer: oneshot::Sender<Result<O>>,
}

/// Where requests queue calls of type `C`, answered with an `O` each.
pub struct GroupCommit<C, O> {
    sender: mpsc::Sender<Queued<C, O>>,
}

impl<C, O> Clone for GroupCommit<C, O> {
    fn clone(&self) -> Self {
        GroupCommit {
            sender: self.sender.clone(),
        }
    }
}

impl<C: Send + 'static, O: Send + 'static> GroupCommit<C, O> {
    /// Starts `writers` writers of the queue `name` on the calling runtime, each applying up to
    /// `most` calls at a time with `write`, which answers one outcome per call, in order. More
    /// than one writer keeps the database busy while the next batch is gathered.
    pub fn start<W, F>(name: &'static str, writers: usize, most: usize, write: W) -> Self
    where
        W: Fn(Vec<C>) -> F + Clone + Send + 'static,
        F: Future<Output = Vec<Result<O>>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers {
            tokio::spawn(write_batches(name, receiver.clone(), most, write.clone()));
        }
        GroupCommit { sender }
    }

    /// Queues one call and answers its outcome once its batch has committed.
    pub async fn submit(&self, call: C) -> Result<O> {
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Queued { call, answer })
            .await
            .map_err(|_| stopping())?;
        answered.await.map_err(|_| stopping())?
    }
}

fn stopping() -> Error {
    Error::Unavailable("the server is shutting down".into())
}

async fn write_batches<C, O, W, F>(
    name: &'static str,
    receiver: Arc<Mutex<mpsc::Receiver<Queued<C, O>>>>,
    most: usize,
    write: W,
) where
    W: Fn(Vec<C>) -> F,
    F: Future<Output = Vec<Result<O>>>,
{
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, most).await == 0 {
                return; // every sender is gone: the server is stopping
            }
        }
        BATCHES.with_label_values(&[name]).inc();
        CALLS.with_label_values(&[name]).inc_by(batch.len() as u64);
        let (calls, answers): (Vec<C>, Vec<_>) =
            batch.into_iter().map(|q| (q.call, q.answer)).unzip();
        let outcomes = write(calls).await;
        debug_assert_eq!(outcomes.len(), answers.len(), "one outcome per call");
        let mut outcomes = outcomes.into_iter();
        for answer in answers {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(Error::internal(anyhow::anyhow!(
                    "the `{name}` writer answered no outcome for this call"
                )))
            });
            // A request that went away (client disconnected) needs no answer.
            let _ = answer.send(outcome);
        }
    }
}
