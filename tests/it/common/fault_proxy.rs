//! A small fault proxy on 127.0.0.1 between psk and a real SeaweedFS:
//! every request goes through it unchanged (SigV4 signs the Host psk sent,
//! which is kept), after an added latency, unless a fault the test armed
//! matches it first: an answer with a status of the test's choosing (a 412,
//! a 503), a hold until the test releases it (a writer waiting on the
//! store), or no answer at all (a store that hangs).
//!
//! `examples/store_latency_proxy.rs` runs this same proxy as a process of
//! its own, for `bench/store.sh` (a store 30 ms away): one implementation
//! for the tests and the benchmark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;

/// What an armed fault does to a request it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answers with this status and an S3 error body; the store never sees it.
    Status(u16),
    /// Waits until [`FaultProxy::release`], then forwards it.
    Hold,
    /// Never answers.
    Hang,
    /// Waits this long, then forwards it.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Fault {
    method: Option<&'static str>,
    path_contains: Option<String>,
    action: Action,
    /// How many more requests it applies to (`None`: every one).
    left: Option<usize>,
}

#[derive(Default)]
struct Shared {
    upstream: String,
    latency: Mutex<Duration>,
    faults: Mutex<Vec<Fault>>,
    requests: AtomicUsize,
    /// Requests by kind: the method, or `LIST` for a listing.
    kinds: Mutex<BTreeMap<String, usize>>,
    held: AtomicUsize,
    faulted: AtomicUsize,
    released: tokio::sync::Notify,
    released_flag: Mutex<bool>,
}

pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        psk::tls::ensure_provider();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            ..Shared::default()
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((shared.clone(), client));
        let addr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            addr
        });
        FaultProxy {
            shared,
            addr,
            runtime: Some(runtime),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        *self.shared.latency.lock().unwrap() = latency;
    }

    /// Arms a fault for the next `times` requests (`None`: all) whose
    /// method and path match.
    pub fn arm(
        &self,
        method: Option<&'static str>,
        path_contains: Option<&str>,
        action: Action,
        times: Option<usize>,
    ) {
        *self.shared.released_flag.lock().unwrap() = false;
        self.shared.faults.lock().unwrap().push(Fault {
            method,
            path_contains: path_contains.map(str::to_string),
            action,
            left: times,
        });
    }

    /// Removes every armed fault (requests already held stay held).
    pub fn disarm(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Lets every held request (and any held later) go on to the store.
    pub fn release(&self) {
        *self.shared.released_flag.lock().unwrap() = true;
        self.shared.released.notify_waiters();
    }

    /// Requests held right now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Requests a fault applied to so far.
    pub fn faulted(&self) -> usize {
        self.shared.faulted.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests seen so far by kind: `GET`, `PUT`, `HEAD`, `DELETE`, ...,
    /// and `LIST` for a listing (a GET with `list-type`).
    pub fn requests_by_kind(&self) -> BTreeMap<String, usize> {
        self.shared.kinds.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Shared {
    fn take_fault(&self, method: &str, path: &str) -> Option<Action> {
        let mut faults = self.faults.lock().unwrap();
        let at = faults.iter().position(|f| {
            f.method.is_none_or(|m| m == method)
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
                && f.left != Some(0)
        })?;
        let f = &mut faults[at];
        if let Some(n) = f.left.as_mut() {
            *n -= 1;
        }
        Some(f.action.clone())
    }
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade"
    )
}

async fn forward(
    State((shared, client)): State<(Arc<Shared>, reqwest::Client)>,
    req: Request,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let listing = parts.uri.query().is_some_and(|q| q.contains("list-type"));
    let kind = if listing {
        "LIST"
    } else {
        parts.method.as_str()
    };
    *shared
        .kinds
        .lock()
        .unwrap()
        .entry(kind.to_string())
        .or_default() += 1;
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let latency = *shared.latency.lock().unwrap();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let fault = shared.take_fault(parts.method.as_str(), parts.uri.path());
    if fault.is_some() {
        shared.faulted.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(latency).await;
    match fault {
        Some(Action::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap();
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>injected by the test's fault proxy</Message></Error>",
                if code == 412 { "PreconditionFailed" } else { "ServiceUnavailable" }
            );
            return Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(Body::from(body))
                .unwrap();
        }
        Some(Action::Hang) => std::future::pending::<()>().await,
        Some(Action::Slow(d)) => tokio::time::sleep(d).await,
        Some(Action::Hold) => {
            shared.held.fetch_add(1, Ordering::SeqCst);
            loop {
                let notified = shared.released.notified();
                if *shared.released_flag.lock().unwrap() {
                    break;
                }
                notified.await;
            }
            shared.held.fetch_sub(1, Ordering::SeqCst);
        }
        None => {}
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    let url = format!("{}{path_and_query}", shared.upstream);
    let sent = client
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(a) => a,
        Err(_) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::empty())
                .unwrap()
        }
    };
    let mut out = Response::builder().status(answer.status().as_u16());
    for (k, v) in answer.headers() {
        if !hop_by_hop(k) {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    out.body(Body::from(bytes)).unwrap()
}
