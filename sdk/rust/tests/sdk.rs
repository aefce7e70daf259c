//! The SDK against the real server (the harness of `tests/`: a private PostgreSQL and the real
//! `custody-server` binary): every operation of the API, artifact transfers (one PUT, direct
//! multipart, resumed multipart, verified downloads), and error codes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use custody::{
    AuditFilter, Client, ErrorCode, LineageDirection, MetricPoint, NewCodeCommit,
    NewDatasetVersion, NewModel, NewRun, NodeKind, NodeRef, Owner, Phase, Progress,
    PromotionFilter, PromotionStatus, Role, RunStatus, TransferOptions,
};
use custody_tests::{commit_sha, random_id, sha256_hex, TestEnv};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn client(env: &TestEnv, token: &str) -> Client {
    Client::new(&env.server.url(""), Some(token)).unwrap()
}

/// `len` pseudo-random bytes in `dir/name`; answers path and digest.
fn data_file(dir: &Path, name: &str, seed: u64, len: u64) -> (PathBuf, String) {
    use std::io::Write;
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut hasher = Sha256::new();
    let mut x = seed | 1;
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    (path, hex::encode(hasher.finalize()))
}

fn file_sha(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_end_to_end() {
    let env = TestEnv::start().await;
    let admin = client(&env, &env.admin);

    let me = admin.me().await.unwrap();
    assert_eq!(me.email, "admin@localhost");
    assert!(me.is_admin);

    let project = admin
        .create_project("nlp", Some("language models"))
        .await
        .unwrap();
    assert_eq!(project.name, "nlp");
    assert_eq!(
        admin.project("nlp").await.unwrap().unwrap().stages.len(),
        4,
        "development, staging, production, archived"
    );
    assert!(admin.project("no-such").await.unwrap().is_none());
    // People have accounts before they are added (an unknown address would be invited).
    env.issue_token("ann@example.com", false).await;
    let member = admin
        .add_member(
            "nlp",
            "ann@example.com",
            Role::Approver,
            &["privacy".into()],
        )
        .await
        .unwrap();
    assert_eq!(member.role, Role::Approver);
    assert_eq!(member.groups, vec!["privacy".to_string()]);
    assert_eq!(
        admin
            .me()
            .await
            .unwrap()
            .memberships
            .iter()
            .filter(|m| m.project.name == "nlp")
            .count(),
        1
    );

    // Datasets and code.
    admin
        .create_dataset("nlp", "corpus", Some("text"))
        .await
        .unwrap();
    let v1 = admin
        .register_dataset_version(
            "nlp",
            "corpus",
            &NewDatasetVersion {
                uri: "s3://bucket/corpus/1".into(),
                sha256: sha256_hex("corpus-1"),
                size_bytes: Some(1234),
                tags: vec!["training".into()],
                derived_from: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.sha256, sha256_hex("corpus-1"));
    let v2 = admin
        .register_dataset_version(
            "nlp",
            "corpus",
            &NewDatasetVersion {
                uri: "s3://bucket/corpus/2".into(),
                sha256: sha256_hex("corpus-2"),
                derived_from: vec![v1.id.clone()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let dataset = admin.dataset("nlp", "corpus").await.unwrap().unwrap();
    assert_eq!(
        dataset
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let commit = admin
        .register_code_commit(&NewCodeCommit {
            repository: "git@example.com:nlp.git".into(),
            commit: commit_sha("nlp"),
            branch: Some("main".into()),
            dirty: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(commit.commit, commit_sha("nlp"));

    // A run: params, 1,500 metrics (two calls), artifacts, finish.
    let run = admin
        .start_run(
            "nlp",
            &NewRun {
                name: Some("bert".into()),
                code_commit_id: Some(commit.id.clone()),
                inputs: vec![v2.id.clone()],
                tags: Some(serde_json::json!({"team": "search"})),
            },
        )
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.inputs.len(), 1);
    assert_eq!(run.tags["team"], "search");
    let logged = admin
        .log_params(
            &run.id,
            &[("lr".into(), "3e-5".into()), ("epochs".into(), "2".into())],
        )
        .await
        .unwrap();
    assert_eq!(logged.params.len(), 2);
    let metrics: Vec<MetricPoint> = (0..1500)
        .map(|i| MetricPoint::new("loss", 1.0 / (i + 1) as f64, Some(i)))
        .collect();
    assert_eq!(admin.log_metrics(&run.id, &metrics).await.unwrap(), 1500);
    admin
        .log_metrics(&run.id, &[MetricPoint::new("f1", 0.87, None)])
        .await
        .unwrap();
    assert_eq!(
        admin
            .run_metrics(&run.id, Some("loss"))
            .await
            .unwrap()
            .unwrap()
            .len(),
        1500
    );
    assert_eq!(
        admin
            .run_metrics(&run.id, None)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1501
    );

    let work = tempfile::tempdir().unwrap();
    let (weights, weights_sha) = data_file(work.path(), "weights.bin", 7, 3 * MIB + 17);
    let stored = admin
        .upload_artifact(
            &Owner::Run(run.id.clone()),
            "model/weights.bin",
            &weights,
            &TransferOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(stored.sha256, weights_sha);
    assert_eq!(stored.size, (3 * MIB + 17) as i64);
    let (tokenizer, _) = data_file(work.path(), "tok.json", 8, 100);
    admin
        .upload_artifact(
            &Owner::Run(run.id.clone()),
            "model/tokenizer v1 #1.json",
            &tokenizer,
            &TransferOptions::default(),
        )
        .await
        .unwrap();
    let fetched = admin.run(&run.id).await.unwrap().unwrap();
    assert_eq!(
        fetched
            .artifacts
            .iter()
            .map(|a| a.path.as_str())
            .collect::<Vec<_>>(),
        ["model/tokenizer v1 #1.json", "model/weights.bin"]
    );
    assert_eq!(
        fetched
            .params
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        ["epochs", "lr"]
    );
    assert_eq!(fetched.code_commit.as_ref().unwrap().id, commit.id);
    let page = admin.runs("nlp", Some(10), None).await.unwrap().unwrap();
    assert_eq!(page.edges.len(), 1);
    assert!(!page.page_info.has_next_page);
    assert_eq!(
        admin
            .finish_run(&run.id, RunStatus::Finished)
            .await
            .unwrap()
            .status,
        RunStatus::Finished
    );

    // Downloads verify the digest; a download URL works without a token.
    let back = work.path().join("back.bin");
    let got = admin
        .download_artifact(
            &Owner::Run(run.id.clone()),
            "model/weights.bin",
            &back,
            &TransferOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(got.sha256, weights_sha);
    assert_eq!(file_sha(&back), weights_sha);
    let url = admin
        .artifact_download_url(&Owner::Run(run.id.clone()), "model/weights.bin")
        .await
        .unwrap();
    let bytes = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), weights_sha);

    // Models and versions.
    let model = admin
        .create_model(
            "nlp",
            "ranker",
            &NewModel {
                primary_metric: Some("f1".into()),
                higher_is_better: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(model.primary_metric.as_deref(), Some("f1"));
    let mv = admin
        .register_model_version("nlp", "ranker", &run.id, Some("model"), Some("first"))
        .await
        .unwrap();
    assert_eq!(mv.version, 1);
    // A version's paths are relative to the artifact path it was registered from.
    assert_eq!(
        mv.artifacts
            .iter()
            .map(|a| a.path.as_str())
            .collect::<Vec<_>>(),
        ["tokenizer v1 #1.json", "weights.bin"]
    );
    assert_eq!(mv.run.id, run.id);
    assert_eq!(
        admin
            .model_version("nlp", "ranker", 1)
            .await
            .unwrap()
            .unwrap()
            .id,
        mv.id
    );
    assert!(admin
        .model_version("nlp", "ranker", 9)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        admin
            .model("nlp", "ranker")
            .await
            .unwrap()
            .unwrap()
            .versions
            .len(),
        1
    );
    let copy = work.path().join("copy.bin");
    admin
        .download_artifact(
            &Owner::ModelVersion(mv.id.clone()),
            "weights.bin",
            &copy,
            &TransferOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(file_sha(&copy), weights_sha);

    // Lineage both ways, and an explicit link.
    let up = admin
        .lineage(
            &NodeRef::new(NodeKind::ModelVersion, &mv.id),
            LineageDirection::Upstream,
            Some(5),
        )
        .await
        .unwrap();
    assert_eq!(up.nodes[0].id, mv.id);
    for (kind, id) in [
        (NodeKind::Run, &run.id),
        (NodeKind::DatasetVersion, &v2.id),
        (NodeKind::DatasetVersion, &v1.id),
        (NodeKind::CodeCommit, &commit.id),
    ] {
        assert!(
            up.nodes.iter().any(|n| n.kind == kind && &n.id == id),
            "upstream lacks {kind} {id}: {up:?}"
        );
    }
    let eval = admin
        .start_run(
            "nlp",
            &NewRun {
                name: Some("eval".into()),
                inputs: vec![v1.id.clone()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let edge = admin
        .link_lineage(
            &NodeRef::new(NodeKind::Run, &eval.id),
            &NodeRef::new(NodeKind::ModelVersion, &mv.id),
            "evaluated",
        )
        .await
        .unwrap();
    assert_eq!(edge.relation, "evaluated");
    let cycle = admin
        .link_lineage(
            &NodeRef::new(NodeKind::DatasetVersion, &v1.id),
            &NodeRef::new(NodeKind::DatasetVersion, &v2.id),
            "derived_from",
        )
        .await
        .unwrap_err();
    assert!(
        cycle.is(ErrorCode::Conflict),
        "a cycle is a conflict: {cycle}"
    );
    let down = admin
        .lineage(
            &NodeRef::new(NodeKind::DatasetVersion, &v1.id),
            LineageDirection::Downstream,
            None,
        )
        .await
        .unwrap();
    assert!(down.nodes.iter().any(|n| n.id == mv.id), "{down:?}");

    // Promotions: dry run, applied at once, pending then approved, rejected, cancelled.
    let dry = admin.promotion_dry_run(&mv.id, "staging").await.unwrap();
    assert!(dry.deny.is_empty());
    assert_eq!(dry.required_approvals, 1);
    let dev = admin
        .request_promotion(&mv.id, "development", None)
        .await
        .unwrap();
    assert_eq!(dev.status, PromotionStatus::Applied);
    // Another project admin asks: Ann's approver role was granted by the server admin, and an
    // approver the requester appointed would not count (separation of duties).
    env.issue_token("lead@example.com", false).await;
    admin
        .add_member("nlp", "lead@example.com", Role::Admin, &[])
        .await
        .unwrap();
    let lead = client(&env, &env.issue_token("lead@example.com", false).await);
    let staging = lead
        .request_promotion(&mv.id, "staging", Some("QA please"))
        .await
        .unwrap();
    assert_eq!(staging.status, PromotionStatus::Pending);
    let ann = client(&env, &env.issue_token("ann@example.com", false).await);
    let applied = ann
        .approve_promotion(&staging.id, Some("ok"))
        .await
        .unwrap();
    assert_eq!(applied.status, PromotionStatus::Applied);
    assert_eq!(applied.approvals.len(), 1);
    assert_eq!(
        admin.promotion(&staging.id).await.unwrap().unwrap().status,
        PromotionStatus::Applied
    );
    assert!(admin.promotion(&random_id()).await.unwrap().is_none());
    let mv2 = admin
        .register_model_version("nlp", "ranker", &run.id, Some("model"), None)
        .await
        .unwrap();
    let p = lead
        .request_promotion(&mv2.id, "staging", None)
        .await
        .unwrap();
    let rejected = ann.reject_promotion(&p.id, "not yet").await.unwrap();
    assert_eq!(rejected.status, PromotionStatus::Rejected);
    let p = admin
        .request_promotion(&mv2.id, "staging", None)
        .await
        .unwrap();
    assert_eq!(
        admin.cancel_promotion(&p.id).await.unwrap().status,
        PromotionStatus::Cancelled
    );
    let denied = admin.request_promotion(&mv2.id, "production", None).await;
    match denied {
        Ok(p) => assert_eq!(p.status, PromotionStatus::Denied, "{p:?}"),
        Err(e) => assert!(e.is(ErrorCode::PolicyDenied), "{e}"),
    }
    let listed = admin
        .promotions(&PromotionFilter {
            project: Some("nlp".into()),
            first: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.promotions.len(), 2);
    assert!(listed.has_next_page);
    let rest = admin
        .promotions(&PromotionFilter {
            project: Some("nlp".into()),
            after: listed.end_cursor.clone(),
            first: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(rest.promotions.len() >= 3, "{rest:?}");
    let pending = admin
        .promotions(&PromotionFilter {
            project: Some("nlp".into()),
            status: Some(PromotionStatus::Applied),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(pending
        .promotions
        .iter()
        .all(|p| p.status == PromotionStatus::Applied));

    // The audit log, paged.
    let page = admin
        .audit_log(&AuditFilter {
            project: Some("nlp".into()),
            first: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.edges.len(), 5);
    assert!(page.page_info.has_next_page);
    let next = admin
        .audit_log(&AuditFilter {
            project: Some("nlp".into()),
            after: page.page_info.end_cursor.clone(),
            first: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(next.edges[0].node.seq > page.edges[4].node.seq);
    assert_eq!(next.edges[0].node.prev_hash.len(), 64);
    let by_subject = admin
        .audit_log(&AuditFilter {
            project: Some("nlp".into()),
            subject_id: Some(run.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !by_subject.edges.is_empty()
            && by_subject.edges.iter().all(|e| e.node.subject_id == run.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_server_codes() {
    let env = TestEnv::start().await;
    let admin = client(&env, &env.admin);
    admin.create_project("p", None).await.unwrap();
    let run = admin.start_run("p", &NewRun::default()).await.unwrap();

    let e = admin
        .finish_run(&random_id(), RunStatus::Finished)
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::NotFound), "{e}");
    let e = client(&env, "not-a-token").me().await.unwrap_err();
    assert!(e.is(ErrorCode::Unauthenticated), "{e}");
    let e = Client::new(&env.server.url(""), None)
        .unwrap()
        .me()
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::Unauthenticated), "{e}");
    let viewer = client(&env, &env.issue_token("viewer@example.com", false).await);
    admin
        .add_member("p", "viewer@example.com", Role::Viewer, &[])
        .await
        .unwrap();
    let e = viewer
        .log_metrics(&run.id, &[MetricPoint::new("x", 1.0, None)])
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::Forbidden), "{e}");
    let e = admin
        .log_metrics(&run.id, &[MetricPoint::new("x", f64::NAN, None)])
        .await
        .unwrap_err();
    assert!(
        e.code().is_some(),
        "a NaN is refused, not sent as garbage: {e}"
    );
    let e = admin.create_project("p", None).await.unwrap_err();
    assert!(e.is(ErrorCode::Conflict), "{e}");

    // Artifact routes answer the same codes.
    let work = tempfile::tempdir().unwrap();
    let (f, _) = data_file(work.path(), "f.bin", 1, 10);
    let e = viewer
        .upload_artifact(
            &Owner::Run(run.id.clone()),
            "f.bin",
            &f,
            &TransferOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::Forbidden), "{e}");
    let e = admin
        .download_artifact(
            &Owner::Run(run.id.clone()),
            "missing.bin",
            &work.path().join("out"),
            &TransferOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::NotFound), "{e}");
    assert!(!work.path().join("out").exists() && !work.path().join("out.part").exists());
    let e = admin
        .upload_artifact(
            &Owner::Run(run.id.clone()),
            "../escape",
            &f,
            &TransferOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::InvalidInput), "{e}");
    let e = admin
        .upload_artifact(
            &Owner::ModelVersion(random_id()),
            "x",
            &f,
            &TransferOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.code().is_some(), "{e}");

    // An unreachable server is a transport error, worth retrying.
    let e = Client::new("http://127.0.0.1:9", Some("t"))
        .unwrap()
        .me()
        .await
        .unwrap_err();
    assert!(
        matches!(e, custody::Error::Transport { .. }) && e.is_transient(),
        "{e}"
    );
    assert!(Client::new("ftp://x", None).is_err());
}

/// Records what a transfer reported; can stop it once `stop_after` bytes were uploaded.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(Phase, Option<u64>)>>,
    first_advance: Mutex<Option<u64>>,
    uploaded: AtomicU64,
    stop_after: u64,
    stop: tokio::sync::Notify,
}

impl Progress for Recorder {
    fn start(&self, phase: Phase, total: Option<u64>) {
        self.events.lock().unwrap().push((phase, total));
        if phase == Phase::Uploading {
            *self.first_advance.lock().unwrap() = None;
        }
    }

    fn advance(&self, bytes: u64) {
        let phase = self.events.lock().unwrap().last().map(|e| e.0);
        if phase == Some(Phase::Uploading) {
            self.first_advance.lock().unwrap().get_or_insert(bytes);
            let total = self.uploaded.fetch_add(bytes, Ordering::SeqCst) + bytes;
            if self.stop_after > 0 && total >= self.stop_after {
                self.stop.notify_one();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_resume_after_an_interruption() {
    let env = TestEnv::start().await;
    let admin = client(&env, &env.admin);
    admin.create_project("big", None).await.unwrap();
    let run = admin.start_run("big", &NewRun::default()).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    // Three parts of the server's default 16 MiB.
    let size = 40 * MIB + 3;
    let (file, sha) = data_file(work.path(), "big.bin", 42, size);
    let owner = Owner::Run(run.id.clone());

    // First attempt: one part at a time, stopped (as a killed process would be) once the first
    // part is through and the second is under way.
    let recorder = Arc::new(Recorder {
        stop_after: 16 * MIB + MIB,
        ..Default::default()
    });
    let options = TransferOptions {
        progress: recorder.clone(),
        multipart_threshold: MIB,
        state_dir: Some(state.clone()),
        concurrency: 1,
        ..Default::default()
    };
    tokio::select! {
        r = admin.upload_artifact(&owner, "big.bin", &file, &options) => panic!("the upload should have been interrupted: {r:?}"),
        _ = recorder.stop.notified() => {}
    }
    let saved: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
    assert_eq!(saved.len(), 1, "one state file for the interrupted upload");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved[0].path()).unwrap()).unwrap();
    assert_eq!(
        doc["done"].as_object().unwrap().len(),
        1,
        "part 1 is recorded as done: {doc}"
    );
    assert!(
        admin
            .run(&run.id)
            .await
            .unwrap()
            .unwrap()
            .artifacts
            .is_empty(),
        "nothing is recorded before completion"
    );

    // Second attempt: resumes; the first progress step is the part already stored.
    let recorder = Arc::new(Recorder::default());
    let options = TransferOptions {
        progress: recorder.clone(),
        ..options
    };
    let stored = admin
        .upload_artifact(&owner, "big.bin", &file, &options)
        .await
        .unwrap();
    assert_eq!(stored.sha256, sha);
    assert_eq!(stored.size as u64, size);
    assert_eq!(
        *recorder.first_advance.lock().unwrap(),
        Some(16 * MIB),
        "the resumed upload skipped part 1"
    );
    assert_eq!(
        recorder.uploaded.load(Ordering::SeqCst),
        size,
        "every byte is accounted for once"
    );
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "the state file is removed after completion"
    );
    let phases: Vec<Phase> = recorder
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(phases, [Phase::Hashing, Phase::Uploading]);

    let back = work.path().join("back.bin");
    admin
        .download_artifact(&owner, "big.bin", &back, &TransferOptions::default())
        .await
        .unwrap();
    assert_eq!(file_sha(&back), sha);

    // A stale state file (its upload is gone) is discarded and the upload starts over.
    let (other, other_sha) = data_file(work.path(), "other.bin", 43, 17 * MIB);
    let recorder = Arc::new(Recorder {
        stop_after: 16 * MIB + 1,
        ..Default::default()
    });
    let first = TransferOptions {
        progress: recorder.clone(),
        ..options.clone()
    };
    tokio::select! {
        r = admin.upload_artifact(&owner, "other.bin", &other, &first) => panic!("the upload should have been interrupted: {r:?}"),
        _ = recorder.stop.notified() => {}
    }
    let saved = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    doc["upload_id"] = serde_json::Value::String(random_id());
    std::fs::write(&saved, serde_json::to_vec(&doc).unwrap()).unwrap();
    // The resumed upload's completion is refused (no such upload): the state is dropped and the
    // upload starts over, once.
    let retried = admin
        .upload_artifact(
            &owner,
            "other.bin",
            &other,
            &TransferOptions {
                state_dir: Some(state.clone()),
                multipart_threshold: MIB,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(retried.sha256, other_sha);
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "the stale state file is gone"
    );
}
