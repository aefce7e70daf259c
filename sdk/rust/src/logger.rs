//! [`RunLogger`]: metrics batched in the background so that a training loop never waits on the
//! network. `log_metric` only stamps the time and enqueues; a worker thread (with its own
//! single-threaded runtime and HTTP connections) sends a batch when 1,000 metrics are waiting,
//! when the oldest waiting metric is `interval` old, on `flush()`, and on `finish()` or drop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{Client, MetricPoint, MAX_METRICS_PER_CALL};
use crate::error::{Error, Result};
use crate::ops::RunStatus;

/// Settings of a [`RunLogger`].
#[derive(Debug, Clone)]
pub struct LoggerOptions {
    /// Metrics per call (at most 1,000, the server's limit).
    pub batch_size: usize,
    /// The longest a logged metric waits before it is sent.
    pub interval: Duration,
    /// Retries of a batch on transient failures (with backoff) before it is counted as lost.
    pub retries: u32,
}

impl Default for LoggerOptions {
    fn default() -> Self {
        LoggerOptions {
            batch_size: MAX_METRICS_PER_CALL,
            interval: Duration::from_secs(1),
            retries: 5,
        }
    }
}

/// What a logger did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoggerStats {
    /// Metrics accepted by `log_metric`.
    pub queued: u64,
    /// Metrics the server stored.
    pub stored: u64,
    /// `logMetrics` calls made.
    pub batches: u64,
    /// Metrics given up on after retries (see the error of `finish`).
    pub lost: u64,
    /// Values refused before queueing (NaN or infinite: the server cannot store them).
    pub rejected: u64,
}

enum Msg {
    Metric(MetricPoint),
    Flush(mpsc::Sender<(u64, Option<String>)>),
    Finish(Option<RunStatus>),
}

struct Report {
    stats: LoggerStats,
    last_error: Option<String>,
    finish_error: Option<Error>,
}

/// Logs a run's metrics in the background. Cheap to call from any thread (`&self`).
///
/// Dropping the logger flushes what is queued (and waits for it); [`finish`](Self::finish) also
/// marks the run finished and reports lost metrics as an error.
pub struct RunLogger {
    run_id: String,
    tx: Option<mpsc::Sender<Msg>>,
    worker: Option<JoinHandle<Report>>,
    queued: AtomicU64,
    rejected: AtomicU64,
}

impl Client {
    /// A background metric logger for a run, with default settings.
    pub fn run_logger(&self, run_id: &str) -> RunLogger {
        self.run_logger_with(run_id, LoggerOptions::default())
    }

    pub fn run_logger_with(&self, run_id: &str, options: LoggerOptions) -> RunLogger {
        RunLogger::start(self, run_id, options)
    }
}

impl RunLogger {
    fn start(client: &Client, run_id: &str, options: LoggerOptions) -> RunLogger {
        let (tx, rx) = mpsc::channel();
        // The worker's own HTTP client: connections belong to the runtime that opened them, and
        // the worker's runtime only runs while it sends.
        let client =
            Client::new(&client.base, client.token.as_deref()).unwrap_or_else(|_| client.clone());
        let id = run_id.to_owned();
        let worker = std::thread::Builder::new()
            .name("custody-run-logger".into())
            .spawn(move || work(client, id, rx, options))
            .expect("spawning the run logger thread");
        RunLogger {
            run_id: run_id.to_owned(),
            tx: Some(tx),
            worker: Some(worker),
            queued: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Enqueues one observation, stamped now; never blocks on the network. NaN and infinite
    /// values are counted in `rejected` and not sent.
    pub fn log_metric(&self, key: &str, value: f64, step: Option<i64>) {
        if !value.is_finite() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        self.enqueue(MetricPoint {
            key: key.to_owned(),
            value,
            step,
            timestamp: Some(timestamp),
        });
    }

    /// Enqueues a prepared observation (its timestamp, if any, is kept).
    pub fn log(&self, metric: MetricPoint) {
        if !metric.value.is_finite() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.enqueue(metric);
    }

    fn enqueue(&self, metric: MetricPoint) {
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Metric(metric)).is_ok() {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends everything queued so far and waits for it. Errors if metrics were lost so far.
    pub fn flush(&self) -> Result<()> {
        let (ack, done) = mpsc::channel();
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Invalid("the logger is finished".into()))?;
        tx.send(Msg::Flush(ack))
            .map_err(|_| Error::Protocol("the logger thread is gone".into()))?;
        let (lost, last_error) = done
            .recv()
            .map_err(|_| Error::Protocol("the logger thread is gone".into()))?;
        if lost > 0 {
            return Err(Error::Logger {
                lost: lost as usize,
                message: last_error.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Sends everything queued, then (with a status) finishes the run. Errors if metrics were
    /// lost or the run could not be finished; the stats are in the error's message then.
    pub fn finish(mut self, status: Option<RunStatus>) -> Result<LoggerStats> {
        self.close(status)
    }

    /// [`finish`](Self::finish) from async code, off the runtime's threads.
    pub async fn finish_async(self, status: Option<RunStatus>) -> Result<LoggerStats> {
        tokio::task::spawn_blocking(move || self.finish(status))
            .await
            .map_err(|e| Error::Protocol(format!("the logger's finishing thread failed: {e}")))?
    }

    fn close(&mut self, status: Option<RunStatus>) -> Result<LoggerStats> {
        let (Some(tx), Some(worker)) = (self.tx.take(), self.worker.take()) else {
            return Err(Error::Invalid("the logger is finished".into()));
        };
        let _ = tx.send(Msg::Finish(status));
        drop(tx);
        let report = worker
            .join()
            .map_err(|_| Error::Protocol("the logger thread panicked".into()))?;
        let mut stats = report.stats;
        stats.queued = self.queued.load(Ordering::Relaxed);
        stats.rejected = self.rejected.load(Ordering::Relaxed);
        if stats.lost > 0 {
            return Err(Error::Logger {
                lost: stats.lost as usize,
                message: report.last_error.unwrap_or_default(),
            });
        }
        if let Some(e) = report.finish_error {
            return Err(e);
        }
        Ok(stats)
    }
}

impl Drop for RunLogger {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let _ = self.close(None);
        }
    }
}

fn work(client: Client, run_id: String, rx: mpsc::Receiver<Msg>, options: LoggerOptions) -> Report {
    let batch_size = options.batch_size.clamp(1, MAX_METRICS_PER_CALL);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let mut report = Report {
        stats: LoggerStats::default(),
        last_error: None,
        finish_error: None,
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            report.last_error = Some(format!("cannot start the logger's runtime: {e}"));
            // Count what arrives as lost, so the caller hears of it.
            for msg in rx {
                match msg {
                    Msg::Metric(_) => report.stats.lost += 1,
                    Msg::Flush(ack) => {
                        let _ = ack.send((report.stats.lost, report.last_error.clone()));
                    }
                    Msg::Finish(_) => break,
                }
            }
            return report;
        }
    };
    let sender = Sender {
        client,
        run_id,
        retries: options.retries,
        batch_size,
    };
    let mut buffer: Vec<MetricPoint> = Vec::with_capacity(batch_size);
    let mut deadline: Option<Instant> = None;
    let mut finish: Option<Option<RunStatus>> = None;
    loop {
        let msg = match deadline {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match msg {
            Ok(Msg::Metric(m)) => {
                buffer.push(m);
                deadline.get_or_insert_with(|| Instant::now() + options.interval);
                if buffer.len() >= batch_size {
                    runtime.block_on(sender.send(&mut buffer, &mut report));
                    deadline = None;
                }
            }
            Ok(Msg::Flush(ack)) => {
                runtime.block_on(sender.send(&mut buffer, &mut report));
                deadline = None;
                let _ = ack.send((report.stats.lost, report.last_error.clone()));
            }
            Ok(Msg::Finish(status)) => {
                finish = Some(status);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                runtime.block_on(sender.send(&mut buffer, &mut report));
                deadline = None;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Whatever is still queued (senders may have raced the close) goes too.
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Metric(m) = msg {
            buffer.push(m);
        }
    }
    runtime.block_on(async {
        sender.send(&mut buffer, &mut report).await;
        if let Some(Some(status)) = finish {
            if let Err(e) = sender.client.finish_run(&sender.run_id, status).await {
                report.finish_error = Some(e);
            }
        }
    });
    report
}

struct Sender {
    client: Client,
    run_id: String,
    retries: u32,
    batch_size: usize,
}

impl Sender {
    /// Sends and empties `buffer`, in calls of at most `batch_size`, retrying transient failures.
    async fn send(&self, buffer: &mut Vec<MetricPoint>, report: &mut Report) {
        for chunk in buffer.chunks(self.batch_size) {
            let mut attempt = 0;
            loop {
                match self.client.log_metrics(&self.run_id, chunk).await {
                    Ok(stored) => {
                        report.stats.stored += stored.max(0) as u64;
                        report.stats.batches += 1;
                        break;
                    }
                    Err(e) if e.is_transient() && attempt < self.retries => {
                        tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(5))).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        report.stats.lost += chunk.len() as u64;
                        report.last_error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        buffer.clear();
    }
}

/// The logger is shared between threads by reference; make sure it stays `Send + Sync`.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<RunLogger>();
    is::<Arc<RunLogger>>();
}
