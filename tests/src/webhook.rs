//! A real HTTP receiver for webhook calls: a small hyper server on a free port of 127.0.0.1 that
//! records every request (method, path, headers, raw body) and answers 204 (or, for the first
//! `fail_first` calls, 503, to exercise retries). Stopped on drop.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The server setting that lets webhooks reach this receiver: it listens on 127.0.0.1, which
/// the server refuses to call unless the network is allowed on purpose.
pub const ALLOW_RECEIVER: (&str, &str) = ("CUSTODY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32");

/// One call as received.
#[derive(Debug, Clone)]
pub struct WebhookCall {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status this receiver answered.
    pub answered: u16,
}

impl WebhookCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `X-Custody-Event`.
    pub fn event(&self) -> String {
        self.header("x-custody-event")
            .unwrap_or_else(|| panic!("no x-custody-event header: {self:?}"))
            .to_string()
    }

    /// Checks `X-Custody-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`.
    pub fn signature_valid(&self, secret: &str) -> bool {
        match self.header("x-custody-signature") {
            Some(sig) => verify_signature(secret, &self.body, sig),
            None => false,
        }
    }
}

/// `sha256=<hex>` as the HMAC-SHA256 of `body` keyed with `secret`, compared in constant time.
pub fn verify_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

struct Shared {
    calls: Mutex<Vec<WebhookCall>>,
    fail_first: AtomicUsize,
}

pub struct WebhookReceiver {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl WebhookReceiver {
    /// Starts a receiver answering 204 to every call.
    pub async fn start() -> WebhookReceiver {
        Self::start_failing_first(0).await
    }

    /// Starts a receiver answering 503 to the first `n` calls, then 204.
    pub async fn start_failing_first(n: usize) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the webhook receiver");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            calls: Mutex::new(Vec::new()),
            fail_first: AtomicUsize::new(n),
        });
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (shared2, connections2) = (shared.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared2.clone();
                let task = tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut c = connections2.lock().unwrap();
                c.retain(|t| !t.is_finished());
                c.push(task);
            }
        });
        WebhookReceiver {
            port,
            shared,
            accept: Some(accept),
            connections,
        }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn calls(&self) -> Vec<WebhookCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// The calls answered with a success status.
    pub fn accepted_calls(&self) -> Vec<WebhookCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.answered < 300)
            .collect()
    }

    /// Waits until at least `n` calls were accepted (polling), then returns the accepted calls.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<WebhookCall> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.accepted_calls();
            if got.len() >= n {
                return got;
            }
            if Instant::now() > deadline {
                let events: Vec<String> = got.iter().map(|c| c.event()).collect();
                panic!(
                    "{} webhook call(s) accepted within {timeout:?}, expected {n}: {events:?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for t in self.connections.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let fail = shared
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    };
    shared.calls.lock().unwrap().push(WebhookCall {
        method,
        path,
        headers,
        body,
        answered: status.as_u16(),
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}
