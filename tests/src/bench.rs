//! What the load benchmarks share: how many requests to measure, and percentiles of latencies.

use std::time::Duration;

/// Requests per measured query: `BENCH_REQUESTS`, else `default`.
pub fn requests(default: usize) -> usize {
    std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0 < p ≤ 1) of sorted latencies, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)]
}
