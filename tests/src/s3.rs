//! A real S3-compatible server inside the test process, for the artifact tests: `s3s-fs` (objects
//! are files under a temp dir) behind `s3s`' HTTP service with SigV4 authentication
//! (`SimpleAuth`, one access key), served over HTTP/1.1 on a free port of 127.0.0.1.
//!
//! It runs on its own thread with its own tokio runtime, so it keeps serving whatever the test's
//! runtime is doing, and it stops (thread joined, files removed) when the [`S3Server`] is dropped.
//!
//! The custody server is pointed at it with [`S3Server::server_env`]. What the server stored can be
//! read back from the disk: the bucket's objects are the files under `<root>/<bucket>/`
//! ([`S3Server::keys`]); s3s-fs keeps multipart state as `.upload-<id>.json` and
//! `.upload_id-<id>.part-<n>` files in `<root>` ([`S3Server::open_multipart_uploads`]).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "custody-test-access-key";
pub const SECRET_KEY: &str = "custody-test-secret-key-0123456789";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    pub port: u16,
    pub bucket: String,
    /// The s3s-fs root; the bucket's objects are the files under `root/<bucket>/`.
    pub root: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server holding one empty bucket. Blocking only for the bind.
    pub fn start(bucket: &str) -> S3Server {
        let dir = crate::server::tmp_dir("custody-test-s3-");
        let root = dir.path().join("s3");
        std::fs::create_dir_all(root.join(bucket)).expect("creating the bucket directory");
        let root = root.canonicalize().unwrap();
        let fs = s3s_fs::FileSystem::new(&root)
            .unwrap_or_else(|e| panic!("s3s-fs on {}: {e:?}", root.display()));
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for S3");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("s3s-fs-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("s3s-fs")
                    .enable_all()
                    .build()
                    .expect("a runtime for the S3 server");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((socket, _)) = accepted else { continue };
                                let service = service.clone();
                                tokio::spawn(async move {
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .keep_alive(true)
                                        .serve_connection(TokioIo::new(socket), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                // Open connections (the custody server's pool) are dropped with the runtime.
                rt.shutdown_timeout(std::time::Duration::from_secs(2));
            })
            .expect("spawning the S3 server thread");
        S3Server {
            port,
            bucket: bucket.to_owned(),
            root,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points `custody-server serve` at this server, storing under `prefix`
    /// (path-style addressing is the server's default when an endpoint is given).
    pub fn server_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                "CUSTODY_ARTIFACTS".into(),
                format!("s3://{}/{}", self.bucket, prefix),
            ),
            ("CUSTODY_S3_ENDPOINT".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }

    /// The keys of the bucket's objects that start with `prefix`, sorted (read from the disk).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.root.join(&self.bucket);
        let mut keys = Vec::new();
        walk_files(&bucket, &mut |p| {
            let key = p
                .strip_prefix(&bucket)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if key.starts_with(prefix) {
                keys.push(key);
            }
        });
        keys.sort();
        keys
    }

    /// The file holding the object `key`.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.join(&self.bucket).join(key)
    }

    /// Multipart uploads begun and neither completed nor aborted, and parts they hold: the names
    /// of s3s-fs' bookkeeping files (`.upload-<id>.json`, `.upload_id-<id>.part-<n>`).
    pub fn open_multipart_uploads(&self) -> Vec<String> {
        let mut open: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                (n.starts_with(".upload-") && n.ends_with(".json")) || n.starts_with(".upload_id-")
            })
            .collect();
        open.sort();
        open
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Calls `f` with every regular file under `dir` (recursively); a missing `dir` has none.
pub fn walk_files(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&p, f),
            Ok(t) if t.is_file() => f(&p),
            _ => {}
        }
    }
}
