//! Group commit of single-metric requests.
//!
//! A training loop that logs one metric per call (`mlflow.log_metric`) sends a request per
//! point; many loops at once would each pay a transaction of their own: several statements for
//! one row. Metrics are observations, not governance acts, so concurrent calls can share one:
//! each request queues its call here and waits; a writer takes every call waiting (up to
//! [`MAX_GATHERED`]), authorizes each on its own and writes the accepted ones in the statements
//! of one batch (`runs::log_metric_calls`), then answers each request with its own outcome once
//! the transaction has committed. An idle server writes a lone call at once: gathering never
//! waits for company, it only takes what queued while the previous batch was being written.

use std::sync::Arc;

use diesel_async::scoped_futures::ScopedFutureExt;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::audit;
use crate::db::DbPool;
use crate::error::{Error, Result};
use crate::runs::{self, MetricCall};

/// The most calls one transaction writes.
const MAX_GATHERED: usize = 1_000;

/// Calls waiting for a writer; when full, requests wait to queue (back-pressure, not memory).
const QUEUE_CAPACITY: usize = 10_000;

/// Writers working at once: one writes while the other gathers, so the database is never idle
/// waiting for the next batch to be built.
const WRITERS: usize = 2;

struct Queued {
    call: MetricCall,
    answer: oneshot::Sender<Result<()>>,
}

/// Where requests queue their single metrics.
#[derive(Clone)]
pub struct MetricQueue {
    sender: mpsc::Sender<Queued>,
}

impl MetricQueue {
    /// Starts the writers (on the calling runtime) and answers the queue they serve.
    pub fn start(pool: DbPool) -> MetricQueue {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(pool.clone(), receiver.clone()));
        }
        MetricQueue { sender }
    }

    /// Logs one metric and answers once it is committed, or why it was refused.
    pub async fn log(&self, call: MetricCall) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Queued { call, answer })
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        answered
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?
    }
}

async fn write_batches(pool: DbPool, receiver: Arc<Mutex<mpsc::Receiver<Queued>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, MAX_GATHERED).await == 0 {
                return; // every sender is gone: the server is stopping
            }
        }
        let (calls, answers): (Vec<MetricCall>, Vec<_>) =
            batch.into_iter().map(|q| (q.call, q.answer)).unzip();
        let written = async {
            let mut conn = pool.get().await?;
            audit::transaction(&mut conn, |c| {
                runs::log_metric_calls(c, &calls).scope_boxed()
            })
            .await
        }
        .await;
        match written {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    // A request that went away (client disconnected) needs no answer.
                    let _ = answer.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = ?e, calls = calls.len(), "writing a batch of metrics failed");
                for answer in answers {
                    let _ = answer.send(Err(same_for_each(&e)));
                }
            }
        }
    }
}

/// The batch's failure, as each of its requests answers it (nothing of the batch was written).
fn same_for_each(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::internal(anyhow::anyhow!(
            "writing a batch of metrics failed: {other}"
        )),
    }
}
