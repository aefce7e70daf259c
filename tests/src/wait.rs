//! Waiting for something to happen by polling it, never by sleeping a fixed time and hoping.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the helpers below look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` until it answers `Some`, and answers that; panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `check` until it is true; answers whether that happened within `timeout` (for callers
/// that add their own context to the failure, e.g. the server's log).
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
