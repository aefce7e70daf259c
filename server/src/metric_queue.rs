//! Group commit of single-metric requests.
//!
//! A training loop that logs one metric per call (`mlflow.log_metric`) sends a request per
//! point; many loops at once would each pay a transaction of their own: several statements for
//! one row. Metrics are observations, not governance acts, so concurrent calls share one
//! (`group_commit`): a writer takes every call waiting, authorizes each on its own and writes
//! the accepted ones in the statements of one batch (`runs::log_metric_calls`), then answers
//! each request with its own outcome once the transaction has committed.

use diesel_async::scoped_futures::ScopedFutureExt;

use crate::audit;
use crate::db::DbPool;
use crate::error::{Error, Result};
use crate::group_commit::GroupCommit;
use crate::runs::{self, MetricCall};

/// The most calls one transaction writes.
const MAX_GATHERED: usize = 1_000;

/// Writers working at once: one writes while the other gathers, so the database is never idle
/// waiting for the next batch to be built.
const WRITERS: usize = 2;

/// Where requests queue their single metrics.
#[derive(Clone)]
pub struct MetricQueue {
    queue: GroupCommit<MetricCall, ()>,
}

impl MetricQueue {
    /// Starts the writers (on the calling runtime) and answers the queue they serve.
    pub fn start(pool: DbPool) -> MetricQueue {
        let queue = GroupCommit::start("metrics", WRITERS, MAX_GATHERED, move |calls| {
            write_batch(pool.clone(), calls)
        });
        MetricQueue { queue }
    }

    /// Logs one metric and answers once it is committed, or why it was refused.
    pub async fn log(&self, call: MetricCall) -> Result<()> {
        self.queue.submit(call).await
    }
}

async fn write_batch(pool: DbPool, calls: Vec<MetricCall>) -> Vec<Result<()>> {
    let written = async {
        let mut conn = pool.get().await?;
        audit::transaction(&mut conn, |c| {
            runs::log_metric_calls(c, &calls).scope_boxed()
        })
        .await
    }
    .await;
    match written {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::error!(error = ?e, calls = calls.len(), "writing a batch of metrics failed");
            calls.iter().map(|_| Err(same_for_each(&e))).collect()
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
