//! The background [`RunLogger`] against the real server: everything logged arrives on `finish()`
//! and on drop, batches respect the 1,000 limit, the interval flushes on its own, and lost
//! metrics are reported rather than swallowed.

use std::time::{Duration, Instant};

use custody::{Client, ErrorCode, LoggerOptions, NewRun, RunStatus};
use custody_tests::{random_id, TestEnv};

async fn setup() -> (TestEnv, Client, String) {
    let env = TestEnv::start().await;
    let client = Client::new(&env.server.url(""), Some(&env.admin)).unwrap();
    client.create_project("train", None).await.unwrap();
    let run = client
        .start_run(
            "train",
            &NewRun {
                name: Some("loop".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (env, client, run.id)
}

/// Never flushes on time within a test: only size, flush, finish and drop.
fn no_interval() -> LoggerOptions {
    LoggerOptions {
        interval: Duration::from_secs(3600),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_flushes_everything_and_finishes_the_run() {
    let (_env, client, run) = setup().await;
    let logger = client.run_logger_with(&run, no_interval());
    let started = Instant::now();
    for step in 0..2500 {
        logger.log_metric("loss", 1.0 / (step + 1) as f64, Some(step));
    }
    logger.log_metric("acc", 0.5, None);
    let enqueue_time = started.elapsed();
    // Enqueueing is memory work only; a generous bound so that a loaded machine does not flake,
    // still far below one network round trip per metric.
    assert!(
        enqueue_time < Duration::from_secs(2),
        "2,501 log_metric calls took {enqueue_time:?}"
    );
    logger.log_metric("bad", f64::NAN, None);
    let stats = logger
        .finish_async(Some(RunStatus::Finished))
        .await
        .unwrap();
    assert_eq!(stats.queued, 2501);
    assert_eq!(stats.stored, 2501);
    assert_eq!(
        stats.rejected, 1,
        "NaN is refused before it can spoil a batch"
    );
    assert_eq!(stats.lost, 0);
    assert!(stats.batches >= 3, "at most 1,000 per call: {stats:?}");
    let metrics = client.run_metrics(&run, None).await.unwrap().unwrap();
    assert_eq!(metrics.len(), 2501);
    let loss: Vec<i64> = metrics
        .iter()
        .filter(|m| m.key == "loss")
        .map(|m| m.step)
        .collect();
    assert_eq!(loss, (0..2500).collect::<Vec<_>>(), "every step, once");
    assert_eq!(
        client.run(&run).await.unwrap().unwrap().status,
        RunStatus::Finished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_flushes_everything() {
    let (_env, client, run) = setup().await;
    let logger = client.run_logger_with(&run, no_interval());
    let from_threads = std::sync::Arc::new(logger);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let logger = from_threads.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    logger.log_metric(&format!("thread{t}"), i as f64, Some(i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let logger = std::sync::Arc::try_unwrap(from_threads)
        .ok()
        .expect("the last reference");
    // Dropping waits for the worker: drop off the runtime's threads, as a training script would.
    tokio::task::spawn_blocking(move || drop(logger))
        .await
        .unwrap();
    let metrics = client.run_metrics(&run, None).await.unwrap().unwrap();
    assert_eq!(
        metrics.len(),
        1200,
        "every metric logged before the drop arrives"
    );
    assert_eq!(
        client.run(&run).await.unwrap().unwrap().status,
        RunStatus::Running,
        "drop does not finish the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_flushes_on_its_own_and_flush_waits() {
    let (_env, client, run) = setup().await;
    let logger = client.run_logger_with(
        &run,
        LoggerOptions {
            interval: Duration::from_millis(200),
            ..Default::default()
        },
    );
    for step in 0..5 {
        logger.log_metric("lr", 0.1, Some(step));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = client
            .run_metrics(&run, Some("lr"))
            .await
            .unwrap()
            .unwrap()
            .len();
        if n == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the interval did not flush 5 metrics within 10 s (saw {n})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logger = client.run_logger_with(&run, no_interval());
    logger.log_metric("x", 1.0, Some(1));
    let logger = tokio::task::spawn_blocking(move || {
        logger.flush().unwrap();
        logger
    })
    .await
    .unwrap();
    assert_eq!(
        client
            .run_metrics(&run, Some("x"))
            .await
            .unwrap()
            .unwrap()
            .len(),
        1,
        "flush() returns once sent"
    );
    logger.finish_async(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_metrics_are_reported() {
    let (_env, client, run) = setup().await;
    // A run that does not exist: every batch is refused (not transient), and finish says so.
    let logger = client.run_logger_with(&random_id(), no_interval());
    for i in 0..10 {
        logger.log_metric("loss", i as f64, Some(i));
    }
    match logger.finish_async(None).await {
        Err(custody::Error::Logger { lost, message }) => {
            assert_eq!(lost, 10);
            assert!(!message.is_empty());
        }
        other => panic!("expected lost metrics to be reported, got {other:?}"),
    }
    // A finished run takes no more metrics: the logger reports the loss, and finishing it again
    // is refused with the server's code.
    client.finish_run(&run, RunStatus::Finished).await.unwrap();
    let logger = client.run_logger_with(&run, no_interval());
    logger.log_metric("late", 1.0, None);
    let err = logger.finish_async(None).await.unwrap_err();
    assert!(
        matches!(err, custody::Error::Logger { lost: 1, .. }),
        "{err}"
    );
    let logger = client.run_logger(&run);
    let err = logger
        .finish_async(Some(RunStatus::Finished))
        .await
        .unwrap_err();
    assert!(
        err.is(ErrorCode::Conflict),
        "finishing a finished run: {err}"
    );
}
