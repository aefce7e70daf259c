//! The harness itself: one cluster per process, a fresh database per test cloned from the migrated
//! template, and snapshots that do see changes (so "nothing changed" assertions can fail).

use custody_tests::db::count;
use custody_tests::pg::PgCluster;
use custody_tests::{Snapshot, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_fresh_clones_of_the_migrated_template() {
    let a = TestDb::create().await;
    let b = TestDb::create().await;
    assert_ne!(a.name, b.name);
    let (ca, cb) = (a.connect().await, b.connect().await);
    // The template was migrated: the audit table is there, empty.
    assert_eq!(count(&ca, "audit_log").await, 0);
    ca.batch_execute("CREATE TABLE harness_probe (x int); INSERT INTO harness_probe VALUES (1)")
        .await
        .unwrap();
    // b is untouched by a.
    let exists: bool = cb
        .query_one(
            "SELECT to_regclass('public.harness_probe') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "databases are not isolated");
    // One cluster per process.
    let c1 = custody_tests::blocking(PgCluster::get).await;
    let c2 = custody_tests::blocking(PgCluster::get).await;
    assert!(std::ptr::eq(c1, c2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_see_inserts_updates_and_deletes() {
    let db = TestDb::create().await;
    let c = db.connect().await;
    c.batch_execute("CREATE TABLE probe (id int PRIMARY KEY, v text); INSERT INTO probe VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let s0 = Snapshot::take(&c).await;
    assert_eq!(
        s0,
        Snapshot::take(&c).await,
        "snapshots of an unchanged database differ"
    );
    assert_eq!(s0.rows("probe"), 2);
    for change in [
        "INSERT INTO probe VALUES (3, 'c')",
        "UPDATE probe SET v = 'z' WHERE id = 3",
        "DELETE FROM probe WHERE id = 3",
    ] {
        let before = Snapshot::take(&c).await;
        c.batch_execute(change).await.unwrap();
        let after = Snapshot::take(&c).await;
        let caught = std::panic::catch_unwind(|| before.assert_unchanged(&after, change));
        assert!(caught.is_err(), "the snapshot missed `{change}`");
    }
}
