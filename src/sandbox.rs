//! A local stand-in for Cloudflare's Magic IPsec API.
//!
//! It speaks the same contract as `shared/cloudflare/magic-ipsec-openapi.json`
//! (list, get, `psk_generate`, the bulk PSK set, `validate_only`, the error
//! envelope, auth) for the tunnels of a psk.yaml, so a new user can run the
//! whole flow with no account, and tests talk real HTTP to a real server.
//! It is the only place a PSK is ever written in plain text: its optional
//! ledger, which lets tests prove that no key was lost.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Config, TunnelKey};
use crate::state::{format_time, State as PskState};

/// One tunnel as the sandbox's "edge" knows it.
#[derive(Debug, Clone)]
struct EdgeTunnel {
    name: String,
    /// The valid PSK. Held only by the sandbox, never printed.
    psk: String,
    created_on: DateTime<Utc>,
    last_generated_on: DateTime<Utc>,
    index: usize,
}

/// Counters that tests read to prove request patterns (e.g. one list call
/// per account).
#[derive(Debug, Default)]
pub struct Counters {
    pub list: AtomicU64,
    pub get: AtomicU64,
    pub generate: AtomicU64,
    pub generate_validate: AtomicU64,
    pub bulk_set: AtomicU64,
    pub bulk_validate: AtomicU64,
    pub unauthorized: AtomicU64,
}

#[derive(Debug, Default, Clone)]
pub struct SandboxOptions {
    /// Append one JSON line per PSK that becomes valid on the edge.
    pub ledger: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Sandbox {
    edge: Mutex<BTreeMap<TunnelKey, EdgeTunnel>>,
    ledger: Option<Mutex<std::fs::File>>,
    pub counters: Counters,
}

impl Sandbox {
    /// An edge holding every tunnel of `config`. Where `state` knows a
    /// tunnel, its PSK is dated as the state says, so a sandbox started
    /// next to an existing state shows no drift.
    pub fn from_config(
        config: &Config,
        state: Option<&PskState>,
        options: &SandboxOptions,
    ) -> std::io::Result<Sandbox> {
        let now = Utc::now();
        let created = now - TimeDelta::days(365);
        let mut edge = BTreeMap::new();
        for (index, t) in config.tunnels.iter().enumerate() {
            let key = t.key();
            let last = state
                .and_then(|s| s.get(&key))
                .and_then(|r| r.last_rotated)
                .unwrap_or(created);
            edge.insert(
                key,
                EdgeTunnel {
                    name: t.name.clone(),
                    psk: new_psk(),
                    created_on: created,
                    last_generated_on: last,
                    index,
                },
            );
        }
        // Tunnels psk.yaml names only by name exist here under an id made
        // from their name, so psk finds them by listing, as at Cloudflare.
        for (offset, u) in config.unresolved.iter().enumerate() {
            edge.insert(
                TunnelKey::new(&u.account_id, &id_for_name(&u.account_id, &u.name)),
                EdgeTunnel {
                    name: u.name.clone(),
                    psk: new_psk(),
                    created_on: created,
                    last_generated_on: created,
                    index: config.tunnels.len() + offset,
                },
            );
        }
        let ledger = match &options.ledger {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        Ok(Sandbox {
            edge: Mutex::new(edge),
            ledger,
            counters: Counters::default(),
        })
    }

    fn record(&self, key: &TunnelKey, psk: &str, at: DateTime<Utc>) {
        if let Some(ledger) = &self.ledger {
            let line = json!({
                "account_id": key.account_id,
                "tunnel_id": key.tunnel_id,
                "psk": psk,
                "at": format_time(&at),
            });
            let mut f = ledger.lock().expect("ledger lock");
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
    }

    /// Makes `psk` the valid key of a tunnel and returns its new date.
    fn commit(&self, key: &TunnelKey, t: &mut EdgeTunnel, psk: String) -> DateTime<Utc> {
        // Strictly increasing, even for two changes within one clock tick.
        let at = Utc::now()
            .trunc_subsecs(6)
            .max(t.last_generated_on + TimeDelta::microseconds(1));
        t.psk = psk;
        t.last_generated_on = at;
        self.record(key, &t.psk, at);
        at
    }
}

/// A stable tunnel id for a tunnel the sandbox knows only by name.
pub fn id_for_name(account_id: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("psk-sandbox\0{account_id}/{name}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn new_psk() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32)
}

/// A running sandbox server, stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub sandbox: Arc<Sandbox>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `sandbox` on an already bound listener, in the background.
pub fn spawn(listener: tokio::net::TcpListener, sandbox: Arc<Sandbox>) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(sandbox.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Running {
        addr,
        sandbox,
        shutdown: Some(tx),
        task: Some(task),
    })
}

pub fn router(sandbox: Arc<Sandbox>) -> Router {
    let base = "/client/v4/accounts/{account_id}/magic/ipsec_tunnels";
    Router::new()
        .route(base, get(list))
        .route(&format!("{base}/psk"), post(bulk_set))
        .route(&format!("{base}/{{tunnel_id}}"), get(get_one))
        .route(
            &format!("{base}/{{tunnel_id}}/psk_generate"),
            post(generate),
        )
        .fallback(|| async { failure(StatusCode::NOT_FOUND, 7003, "No route for the URI") })
        .with_state(sandbox)
}

type Shared = State<Arc<Sandbox>>;

#[derive(Deserialize)]
struct ValidateOnly {
    #[serde(default)]
    validate_only: Option<String>,
}

impl ValidateOnly {
    fn get(&self) -> bool {
        matches!(self.validate_only.as_deref(), Some("true") | Some("1"))
    }
}

fn failure(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({
            "success": false,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": null,
        })),
    )
        .into_response()
}

fn success(result: Value) -> Response {
    Json(json!({"success": true, "errors": [], "messages": [], "result": result})).into_response()
}

/// Like Cloudflare: a non-empty bearer token, or an email and key pair.
fn authorized(s: &Sandbox, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("")
    };
    let bearer = h("authorization")
        .strip_prefix("Bearer ")
        .is_some_and(|t| !t.trim().is_empty());
    let key = !h("x-auth-email").is_empty() && !h("x-auth-key").is_empty();
    if bearer || key {
        Ok(())
    } else {
        s.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        Err(Box::new(failure(
            StatusCode::UNAUTHORIZED,
            10000,
            "Authentication error",
        )))
    }
}

fn tunnel_json(key: &TunnelKey, t: &EdgeTunnel) -> Value {
    json!({
        "id": key.tunnel_id,
        "name": t.name,
        "cloudflare_endpoint": "203.0.113.1",
        "customer_endpoint": format!("198.51.100.{}", t.index % 250 + 1),
        "interface_address": format!("10.{}.{}.0/31", (t.index / 128) % 256, (t.index % 128) * 2),
        "created_on": format_time(&t.created_on),
        "modified_on": format_time(&t.last_generated_on),
        "psk_metadata": {"last_generated_on": format_time(&t.last_generated_on)},
    })
}

fn not_found() -> Response {
    failure(StatusCode::NOT_FOUND, 1003, "IPsec tunnel not found")
}

fn bad_id(id: &str) -> bool {
    !crate::config::is_cloudflare_id(id)
}

async fn list(State(s): Shared, Path(account_id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    s.counters.list.fetch_add(1, Ordering::Relaxed);
    let edge = s.edge.lock().expect("edge lock");
    let account = account_id.to_ascii_lowercase();
    let tunnels: Vec<Value> = edge
        .iter()
        .filter(|(k, _)| k.account_id == account)
        .map(|(k, t)| tunnel_json(k, t))
        .collect();
    success(json!({ "ipsec_tunnels": tunnels }))
}

async fn get_one(
    State(s): Shared,
    Path((account_id, tunnel_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    s.counters.get.fetch_add(1, Ordering::Relaxed);
    let key = TunnelKey::new(&account_id, &tunnel_id);
    let edge = s.edge.lock().expect("edge lock");
    match edge.get(&key) {
        Some(t) => success(json!({ "ipsec_tunnel": tunnel_json(&key, t) })),
        None => not_found(),
    }
}

async fn generate(
    State(s): Shared,
    Path((account_id, tunnel_id)): Path<(String, String)>,
    Query(q): Query<ValidateOnly>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    // The schema requires a JSON request body, even if it is only `{}`.
    if serde_json::from_slice::<Value>(&body).is_err() {
        return failure(
            StatusCode::BAD_REQUEST,
            1001,
            "Invalid request body: a JSON body is required",
        );
    }
    if bad_id(&tunnel_id) {
        return failure(StatusCode::BAD_REQUEST, 1002, "Invalid tunnel identifier");
    }
    let validate_only = q.get();
    let counter = if validate_only {
        &s.counters.generate_validate
    } else {
        &s.counters.generate
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let key = TunnelKey::new(&account_id, &tunnel_id);
    let mut edge = s.edge.lock().expect("edge lock");
    let Some(t) = edge.get_mut(&key) else {
        return not_found();
    };
    if validate_only {
        return success(json!({
            "ipsec_tunnel_id": key.tunnel_id,
            "psk_metadata": {"last_generated_on": format_time(&t.last_generated_on)},
        }));
    }
    let at = s.commit(&key, t, new_psk());
    success(json!({
        "ipsec_tunnel_id": key.tunnel_id,
        "psk": t.psk,
        "psk_metadata": {"last_generated_on": format_time(&at)},
    }))
}

#[derive(Deserialize)]
struct BulkBody {
    psks: Vec<BulkEntry>,
}

#[derive(Deserialize)]
struct BulkEntry {
    id: String,
    psk: String,
}

async fn bulk_set(
    State(s): Shared,
    Path(account_id): Path<String>,
    Query(q): Query<ValidateOnly>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let Ok(body) = serde_json::from_slice::<BulkBody>(&body) else {
        return failure(
            StatusCode::BAD_REQUEST,
            1001,
            "Invalid request body: expected {\"psks\": [{\"id\", \"psk\"}]}",
        );
    };
    let validate_only = q.get();
    let counter = if validate_only {
        &s.counters.bulk_validate
    } else {
        &s.counters.bulk_set
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let mut applied = serde_json::Map::new();
    let mut unapplied = serde_json::Map::new();
    let mut edge = s.edge.lock().expect("edge lock");
    for entry in body.psks {
        let key = TunnelKey::new(&account_id, &entry.id);
        let Some(t) = edge.get_mut(&key) else {
            unapplied.insert(entry.id, json!("IPsec tunnel not found"));
            continue;
        };
        if entry.psk.len() < 8 || entry.psk.len() > 128 || !entry.psk.is_ascii() {
            unapplied.insert(
                entry.id,
                json!("PSK must be 8 to 128 printable ASCII characters"),
            );
            continue;
        }
        let at = if validate_only {
            t.last_generated_on
        } else {
            s.commit(&key, t, entry.psk.clone())
        };
        applied.insert(
            key.tunnel_id.clone(),
            json!({
                "ipsec_tunnel_id": key.tunnel_id,
                "ipsec_id": format!("{}_{}", t.index, key.tunnel_id),
                "psk": entry.psk,
                "psk_metadata": {"last_generated_on": format_time(&at)},
            }),
        );
    }
    success(json!({
        "successfully_applied_psks": applied,
        "unapplied_psks": unapplied,
    }))
}
