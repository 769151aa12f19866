//! A local stand-in for Cloudflare's Magic IPsec API.
//!
//! It speaks the same contract as `shared/cloudflare/magic-ipsec-openapi.json`
//! (list, get, `psk_generate`, the bulk PSK set, `validate_only`, the error
//! envelope, auth) for the tunnels of a psk.yaml, so a new user can run the
//! whole flow with no account, and tests talk real HTTP to a real server.
//! Beside them it holds a fleet of its own (see `fleet`), for `psk init`
//! to find and for a psk.yaml that lists only part of an account.
//! It is as strict as the real API (see `api`; it accepts only its own
//! credentials, see `auth`), and misbehaves on request
//! (see `faults`): latency, server errors, Cloudflare's rate limit and
//! connections dropped after the change was made.
//!
//! It is the only place a PSK is ever written in plain text: its optional
//! ledger, which lets tests prove that no key was lost.

mod api;
mod auth;
mod faults;
mod fleet;
mod graphql;
mod health;
pub mod strongswan;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use crate::cloudflare::RateLimit;
use crate::config::Config;
use crate::state::{format_time, State as PskState};
use crate::tunnel::TunnelKey;

pub use api::router;
pub use auth::SandboxCredentials;
pub use fleet::{FLEET_ACCOUNT, FLEET_SIZE};
pub use health::{HealthOptions, COLOS};

/// One tunnel as the sandbox's "edge" knows it.
#[derive(Debug, Clone)]
struct EdgeTunnel {
    name: String,
    /// The valid PSK. Held only by the sandbox, never printed.
    psk: String,
    created_on: DateTime<Utc>,
    last_generated_on: DateTime<Utc>,
    index: usize,
    /// The customer router's address, as Cloudflare reports it (optional
    /// there): tunnels sharing one are paths of one site.
    customer_endpoint: Option<String>,
    /// The router at the far end, whose key decides the tunnel's health.
    far: health::FarEnd,
}

/// Counters that tests read to prove request patterns (e.g. one list call
/// per account) and that faults really happened.
#[derive(Debug, Default)]
pub struct Counters {
    /// Every request that reached the server, faulted or not.
    pub requests: AtomicU64,
    pub list: AtomicU64,
    pub get: AtomicU64,
    pub generate: AtomicU64,
    pub generate_validate: AtomicU64,
    pub bulk_set: AtomicU64,
    pub bulk_validate: AtomicU64,
    /// Refused for their credentials: missing, malformed or unknown.
    pub unauthorized: AtomicU64,
    /// Answered 429, by `rate_limit` or `ip_limit`.
    pub rate_limited: AtomicU64,
    /// Of those, answered 429 by `ip_limit`.
    pub ip_limited: AtomicU64,
    /// Answered 5xx by `fail_rate`.
    pub failed: AtomicU64,
    /// Handled, then dropped unanswered by `drop_rate`.
    pub dropped: AtomicU64,
    /// GraphQL queries, answered or refused.
    pub graphql: AtomicU64,
    /// GraphQL queries answered with `errors[]`.
    pub graphql_refused: AtomicU64,
    /// Keys handed to a far end.
    pub far_end_deliveries: AtomicU64,
}

#[derive(Debug, Default, Clone)]
pub struct SandboxOptions {
    /// Append one JSON line per PSK that becomes valid on the edge.
    pub ledger: Option<PathBuf>,
    /// Delay before each answer; each request waits a random time between
    /// half and one and a half times this.
    pub latency: Duration,
    /// Share of requests answered with a 5xx before anything is done.
    pub fail_rate: f64,
    /// Share of requests handled in full (a new PSK committed and in the
    /// ledger) whose connection is then dropped without an answer.
    pub drop_rate: f64,
    /// Cloudflare's rule: more than `requests` in any `window` gets HTTP
    /// 429 with `retry-after`, and every request for the next `window` too.
    pub rate_limit: Option<RateLimit>,
    /// Cloudflare's per-IP limit: more than `requests` from one client
    /// address in any `window` gets HTTP 429 with `retry-after` (no block
    /// beyond the window). Not announced in headers, as at Cloudflare.
    pub ip_limit: Option<RateLimit>,
    /// Keep `rate_limit` without announcing it (no `Ratelimit` headers),
    /// as the API did before September 2025: for tests of what psk does
    /// when it is not told, and of its 429 handling.
    pub hide_rate_limit_headers: bool,
    /// Other clients of the same token spending its `rate_limit` budget at
    /// this steady rate (never past the limit themselves).
    pub other_clients: Option<RateLimit>,
    /// Seed for the fault decisions, for reproducible runs. PSKs always come
    /// from the OS's generator.
    pub seed: Option<u64>,
    /// Tunnel ids whose PSK changes pass validation but are then refused,
    /// as when a tunnel is being modified at the same moment:
    /// `psk_generate` answers 409 without retry, and the bulk set lists
    /// them in `unapplied_psks`. For partial-failure drills.
    pub refuse_changes: std::collections::BTreeSet<String>,
    /// The tunnels' far ends and their health (see `health`).
    pub health: HealthOptions,
    /// The only credentials accepted; any other is refused as Cloudflare
    /// refuses it (see `auth`).
    pub credentials: SandboxCredentials,
    /// Cloudflare's clock minus the runner's: every date the sandbox gives
    /// (`Date` headers, `last_generated_on`, health-check windows) is on a
    /// clock this far off, as Cloudflare's is from a runner without NTP.
    pub clock_offset: TimeDelta,
    /// What is at the far end of each tunnel: the model of `health`, or
    /// real strongSwan charons.
    pub far_end: FarEndKind,
}

/// What answers on Cloudflare's side of each tunnel, and at the router.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum FarEndKind {
    /// Keys compared as strings (see `health`).
    #[default]
    Model,
    /// A pair of strongSwan charons per tunnel in network namespaces (see
    /// `strongswan`), the routers' files under `dir` (a temp dir when
    /// `None`, removed at the end).
    Strongswan { dir: Option<PathBuf> },
}

pub struct Sandbox {
    edge: Mutex<BTreeMap<TunnelKey, EdgeTunnel>>,
    ledger: Option<Mutex<std::fs::File>>,
    faults: faults::Faults,
    refuse_changes: std::collections::BTreeSet<String>,
    health: HealthOptions,
    graphql_budget: Mutex<health::Budget>,
    graphql_rng: Mutex<rand::rngs::StdRng>,
    credentials: SandboxCredentials,
    /// See [`SandboxOptions::clock_offset`].
    clock_offset: TimeDelta,
    pub counters: Counters,
    /// The real far ends, under `FarEndKind::Strongswan`.
    fleet: Option<strongswan::Fleet>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Now on the sandbox's (Cloudflare's) clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// An edge holding every tunnel of `config`. Where `state` knows a
    /// tunnel, its PSK is dated as the state says, so a sandbox started
    /// next to an existing state shows no drift.
    pub fn from_config(
        config: &Config,
        state: Option<&PskState>,
        options: &SandboxOptions,
    ) -> std::io::Result<Sandbox> {
        let now = Utc::now() + options.clock_offset;
        let created = now - TimeDelta::days(365);
        // The live keys are a day old, as on a fleet whose keys were just
        // set up: `psk import` adopts a key that is not yet due, so "nothing
        // changes on day one" can be rehearsed. A key psk never held is
        // still planned at once ("never rotated by psk").
        let generated = now - TimeDelta::days(1);
        let mut edge = BTreeMap::new();
        for (index, t) in config.tunnels.iter().enumerate() {
            let key = t.key();
            let last = state
                .and_then(|s| s.get(&key))
                .and_then(|r| r.last_rotated)
                .unwrap_or(generated);
            let psk = new_psk();
            let far = far_end(&options.health, &key, &psk, created);
            edge.insert(
                key,
                EdgeTunnel {
                    name: t.name.clone(),
                    psk,
                    created_on: created,
                    last_generated_on: last,
                    index,
                    customer_endpoint: Some(format!("198.51.100.{}", index % 250 + 1)),
                    far,
                },
            );
        }
        // Tunnels psk.yaml names only by name exist here under an id made
        // from their name, so psk finds them by listing, as at Cloudflare.
        for (offset, u) in config.unresolved.iter().enumerate() {
            let key = TunnelKey::new(&u.account_id, &id_for_name(&u.account_id, &u.name));
            let psk = new_psk();
            let far = far_end(&options.health, &key, &psk, created);
            edge.insert(
                key,
                EdgeTunnel {
                    name: u.name.clone(),
                    psk,
                    created_on: created,
                    last_generated_on: generated,
                    index: config.tunnels.len() + offset,
                    customer_endpoint: Some(format!(
                        "198.51.100.{}",
                        (config.tunnels.len() + offset) % 250 + 1
                    )),
                    far,
                },
            );
        }
        if config.accounts().iter().any(|a| a == FLEET_ACCOUNT) {
            seed_fleet(&mut edge, state, options, now);
        }
        Sandbox::with_edge(edge, options, created)
    }

    /// A sandbox whose edge holds `edge`, with far ends made `created`.
    fn with_edge(
        mut edge: BTreeMap<TunnelKey, EdgeTunnel>,
        options: &SandboxOptions,
        created: DateTime<Utc>,
    ) -> std::io::Result<Sandbox> {
        let fleet = match &options.far_end {
            FarEndKind::Model => None,
            FarEndKind::Strongswan { dir } => {
                if !options.health.never_up.is_empty() || options.health.far_end_follows.is_some() {
                    return Err(std::io::Error::other(
                        "the strongSwan far end takes keys only by delivery: `never_up` and `far_end_follows` are the model's",
                    ));
                }
                let mut psks = Vec::new();
                for (key, t) in edge.iter_mut() {
                    let down = options
                        .health
                        .down
                        .iter()
                        .any(|id| id.eq_ignore_ascii_case(&key.tunnel_id));
                    t.far = health::FarEnd::real(created, !down);
                    let router = if down { new_psk() } else { t.psk.clone() };
                    psks.push((key.clone(), t.name.clone(), t.psk.clone(), router));
                }
                let peers: Vec<strongswan::Peer<'_>> = psks
                    .iter()
                    .map(|(key, name, edge_psk, router_psk)| strongswan::Peer {
                        key,
                        name,
                        edge_psk,
                        router_psk,
                    })
                    .collect();
                Some(
                    strongswan::Fleet::start(dir.as_deref(), &peers)
                        .map_err(std::io::Error::other)?,
                )
            }
        };
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
            faults: faults::Faults::new(options),
            refuse_changes: options
                .refuse_changes
                .iter()
                .map(|id| id.to_ascii_lowercase())
                .collect(),
            health: options.health.clone(),
            graphql_budget: Mutex::new(health::Budget::default()),
            graphql_rng: Mutex::new(match options.seed {
                Some(seed) => rand::SeedableRng::seed_from_u64(seed.wrapping_add(1)),
                None => rand::make_rng(),
            }),
            credentials: options.credentials.clone(),
            clock_offset: options.clock_offset,
            counters: Counters::default(),
            fleet,
        })
    }

    /// A sandbox holding only its own fleet (see [`FLEET_ACCOUNT`]), for
    /// `psk init --sandbox`, which has no psk.yaml to seed from.
    pub fn own_fleet(options: &SandboxOptions) -> std::io::Result<Sandbox> {
        let now = Utc::now() + options.clock_offset;
        let mut edge = BTreeMap::new();
        seed_fleet(&mut edge, None, options, now);
        Sandbox::with_edge(edge, options, now - TimeDelta::days(365))
    }

    /// The real far ends, if the sandbox runs them.
    pub fn fleet(&self) -> Option<&strongswan::Fleet> {
        self.fleet.as_ref()
    }

    /// Other clients of the token spend `requests` of its budget at once,
    /// as far as it holds (they never draw a 429). Returns how many were
    /// spent and how many are left; `None` when the sandbox has no
    /// `rate_limit`. Also `POST /sandbox/spend` with `{"requests": N}`.
    pub fn spend_budget(&self, requests: u64) -> Option<(u64, u32)> {
        self.faults.spend(requests).map(|(n, left)| (n, left.left))
    }

    /// How many tunnels the edge holds.
    pub fn tunnel_count(&self) -> usize {
        self.edge.lock().expect("edge lock").len()
    }

    /// Whether a real change of this tunnel's PSK is to be refused.
    pub(crate) fn refuses(&self, key: &TunnelKey) -> bool {
        self.refuse_changes.contains(&key.tunnel_id)
    }

    /// Whether any tunnel of the edge belongs to `account_id`: the sandbox's
    /// stand-in for "this token may use this account".
    fn knows_account(&self, account_id: &str) -> bool {
        let account = account_id.to_ascii_lowercase();
        self.edge
            .lock()
            .expect("edge lock")
            .keys()
            .any(|k| k.account_id == account)
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
        let at = self
            .now()
            .trunc_subsecs(6)
            .max(t.last_generated_on + TimeDelta::microseconds(1));
        t.psk = psk;
        t.last_generated_on = at;
        t.far.edge_changed(&t.psk, at, self.health.far_end_follows);
        if let Some(fleet) = &self.fleet {
            // A charon that refuses the key leaves the tunnel down, which
            // its health then shows; the API's answer stays Cloudflare's.
            if let Err(e) = fleet.set_edge_key(key, &t.psk) {
                tracing::warn!(tunnel = %key.tunnel_id, "{e}");
            }
        }
        self.record(key, &t.psk, at);
        at
    }

    /// Watches the real far ends' IKE SAs, as Cloudflare's health checks
    /// watch a tunnel, until the sandbox is gone: each tunnel's timeline
    /// records when an IKE SA was seen established on the edge or not.
    fn watch_far_ends(sandbox: &Arc<Sandbox>) {
        if sandbox.fleet.is_none() {
            return;
        }
        let weak = Arc::downgrade(sandbox);
        std::thread::spawn(move || loop {
            let Some(s) = weak.upgrade() else { return };
            let Some(fleet) = &s.fleet else { return };
            if fleet.is_stopped() {
                return;
            }
            for key in fleet.tunnels() {
                let Some(changes) = s
                    .edge
                    .lock()
                    .expect("edge lock")
                    .get(key)
                    .map(|t| t.far.changes())
                else {
                    continue;
                };
                let up = fleet.edge_established(key);
                if let Some(t) = s.edge.lock().expect("edge lock").get_mut(key) {
                    t.far.observed(changes, s.now(), up);
                }
            }
            drop(s);
            std::thread::sleep(FAR_END_POLL);
        });
    }
}

/// How often the real far ends' IKE SAs are looked at.
const FAR_END_POLL: Duration = Duration::from_millis(50);

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.stop();
        }
    }
}

/// Adds the sandbox's own fleet to `edge`, leaving any tunnel psk.yaml
/// already put there as it is; dated as `state` says where it knows one.
fn seed_fleet(
    edge: &mut BTreeMap<TunnelKey, EdgeTunnel>,
    state: Option<&PskState>,
    options: &SandboxOptions,
    now: DateTime<Utc>,
) {
    let created = now - TimeDelta::days(365);
    let first = edge.len();
    for (i, t) in fleet::seeds(now).into_iter().enumerate() {
        let psk = new_psk();
        let far = far_end(&options.health, &t.key, &psk, created);
        let last = (state.and_then(|s| s.get(&t.key)))
            .and_then(|r| r.last_rotated)
            .unwrap_or(t.last_generated_on);
        let seeded = EdgeTunnel {
            name: t.name,
            psk,
            created_on: created,
            last_generated_on: last,
            index: first + i,
            customer_endpoint: Some(t.customer_endpoint),
            far,
        };
        match edge.get_mut(&t.key) {
            // psk.yaml lists it: Cloudflare's name and endpoint are the
            // fleet's, whatever psk.yaml calls it.
            Some(listed) => {
                listed.name = seeded.name;
                listed.customer_endpoint = seeded.customer_endpoint;
            }
            None => {
                edge.insert(t.key, seeded);
            }
        }
    }
}

/// A tunnel's far end as the health options set it up.
fn far_end(
    o: &HealthOptions,
    key: &TunnelKey,
    psk: &str,
    created: DateTime<Utc>,
) -> health::FarEnd {
    let listed = |ids: &std::collections::BTreeSet<String>| {
        ids.iter().any(|id| id.eq_ignore_ascii_case(&key.tunnel_id))
    };
    health::FarEnd::new(psk, created, listed(&o.down), listed(&o.never_up))
}

/// A stable tunnel id for a tunnel the sandbox knows only by name.
pub fn id_for_name(account_id: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("psk-sandbox\0{account_id}/{name}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn new_psk() -> String {
    Alphanumeric.sample_string(&mut rand::rand_core::UnwrapErr(rand::rngs::SysRng), 32)
}

/// Cloudflare's failure envelope.
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

/// The URL for a server listening on `addr`: an unspecified address
/// (`0.0.0.0`, `::`) is reached through loopback, because psk sends its
/// token over plain HTTP only to a loopback host.
fn base_url_of(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/client/v4")
}

/// A running sandbox server, stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub sandbox: Arc<Sandbox>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The URL psk reaches it at; see [`base_url_of`].
    pub fn base_url(&self) -> String {
        base_url_of(self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.stop_far_ends();
    }

    /// Stops the real far ends now, whoever else still holds the sandbox.
    fn stop_far_ends(&self) {
        if let Some(fleet) = self.sandbox.fleet() {
            fleet.stop();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.stop_far_ends();
    }
}

/// Why a connection ended without an answer (`drop_rate`).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// Serves `sandbox` on an already bound listener, in the background.
///
/// Connections are served by hyper directly rather than `axum::serve`, so a
/// response marked by the fault layer can end its connection with no answer
/// at all, after the handler has committed its change: the "response lost
/// in flight" case that psk's intents exist for.
pub fn spawn(listener: tokio::net::TcpListener, sandbox: Arc<Sandbox>) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    Sandbox::watch_far_ends(&sandbox);
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(sandbox.clone());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let app = app.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(faults::Peer(peer.ip()));
                            let mut app = app.clone();
                            async move {
                                let response =
                                    tower_service::Service::call(&mut app, req).await;
                                let response = match response {
                                    Ok(r) => r,
                                    Err(never) => match never {},
                                };
                                if response.extensions().get::<faults::DropConnection>().is_some() {
                                    return Err(Dropped);
                                }
                                Ok(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
    });
    Ok(Running {
        addr,
        sandbox,
        shutdown: Some(tx),
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_on_every_interface_is_reached_through_loopback() {
        let url = |a: &str| base_url_of(a.parse().unwrap());
        assert_eq!(url("127.0.0.1:8787"), "http://127.0.0.1:8787/client/v4");
        assert_eq!(url("0.0.0.0:8787"), "http://127.0.0.1:8787/client/v4");
        assert_eq!(url("[::]:8787"), "http://[::1]:8787/client/v4");
    }
}
