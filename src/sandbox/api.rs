//! The API routes, as strict as Cloudflare's: only the sandbox's own
//! credentials are accepted (see `auth`), a `psk_generate` body, when there
//! is one, must be JSON, `validate_only` must be a boolean, unknown tunnels
//! get the 404 envelope, accounts the credentials cannot use get 403, and
//! only a real change moves `psk_metadata.last_generated_on`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::authorized;
use super::{failure, faults, new_psk, success, EdgeTunnel, Sandbox};
use crate::state::format_time;
use crate::tunnel::TunnelKey;

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
        .route("/client/v4/graphql", post(super::graphql::graphql))
        .route(
            "/sandbox/accounts/{account_id}/tunnels/{tunnel_id}/far_end",
            post(super::health::deliver_far_end),
        )
        .fallback(|| async { failure(StatusCode::NOT_FOUND, 7003, "No route for the URI") })
        .layer(axum::middleware::from_fn_with_state(
            sandbox.clone(),
            faults::misbehave,
        ))
        .layer(axum::middleware::map_response_with_state(
            sandbox.clone(),
            stamp_date,
        ))
        // The sandbox's own controls: outside Cloudflare's paths, and past
        // the misbehaviour (they are not API requests).
        .route("/sandbox/spend", post(spend))
        .with_state(sandbox)
}

type Shared = State<Arc<Sandbox>>;

/// Every answer carries a `Date` header, as Cloudflare's do (RFC 9110:
/// an origin server with a clock sends one), on the sandbox's clock, which
/// may be set off the runner's (`clock_offset`).
async fn stamp_date(State(s): Shared, mut response: Response) -> Response {
    let date = s.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(v) = axum::http::HeaderValue::from_str(&date) {
        response.headers_mut().insert(axum::http::header::DATE, v);
    }
    response
}

#[derive(Deserialize)]
struct Spend {
    requests: u64,
}

/// `POST /sandbox/spend {"requests": N}`: other clients of the token spend
/// N requests of its budget now (as many as it holds).
async fn spend(State(s): Shared, body: Bytes) -> Response {
    let Ok(Spend { requests }) = serde_json::from_slice(&body) else {
        return failure(
            StatusCode::BAD_REQUEST,
            1001,
            "Invalid request body: expected {\"requests\": N}",
        );
    };
    match s.spend_budget(requests) {
        Some((spent, left)) => success(json!({"spent": spent, "left": left})),
        None => failure(
            StatusCode::CONFLICT,
            1002,
            "The sandbox has no --rate-limit, so there is no budget to spend",
        ),
    }
}

#[derive(Deserialize)]
struct ValidateOnly {
    #[serde(default)]
    validate_only: Option<String>,
}

impl ValidateOnly {
    /// The schema's boolean: `true` or `false`, nothing else.
    fn get(&self) -> Result<bool, Box<Response>> {
        match self.validate_only.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(Box::new(failure(
                StatusCode::BAD_REQUEST,
                1001,
                "Invalid query parameter: validate_only must be true or false",
            ))),
        }
    }
}

/// What both writes check first, in the API's order: credentials, a body of
/// the expected shape (`shape` says which, in the error), `validate_only`.
/// `when_empty` is what no body at all stands for, where the operation
/// takes none (`psk_generate`); with `None`, no body is refused like any
/// other that is not JSON.
fn opening<T: serde::de::DeserializeOwned>(
    s: &Sandbox,
    headers: &HeaderMap,
    account_id: &str,
    (body, when_empty): (&[u8], Option<T>),
    q: &ValidateOnly,
    shape: &str,
) -> Result<(T, bool), Box<Response>> {
    authorized(s, headers, account_id)?;
    if let Some(nothing) = when_empty.filter(|_| body.is_empty()) {
        return Ok((nothing, q.get()?));
    }
    let parsed = serde_json::from_slice::<T>(body).map_err(|_| {
        Box::new(failure(
            StatusCode::BAD_REQUEST,
            1001,
            &format!("Invalid request body: {shape}"),
        ))
    })?;
    Ok((parsed, q.get()?))
}

fn tunnel_json(key: &TunnelKey, t: &EdgeTunnel) -> Value {
    let mut tunnel = json!({
        "id": key.tunnel_id,
        "name": t.name,
        "cloudflare_endpoint": "203.0.113.1",
        "interface_address": format!("10.{}.{}.0/31", (t.index / 128) % 256, (t.index % 128) * 2),
        "created_on": format_time(&t.created_on),
        "modified_on": format_time(&t.last_generated_on),
        "psk_metadata": {"last_generated_on": format_time(&t.last_generated_on)},
    });
    // Optional at Cloudflare: absent, not empty, when unset.
    if let Some(endpoint) = &t.customer_endpoint {
        tunnel["customer_endpoint"] = json!(endpoint);
    }
    tunnel
}

fn not_found() -> Response {
    failure(StatusCode::NOT_FOUND, 1003, "IPsec tunnel not found")
}

fn bad_id(id: &str) -> bool {
    !crate::tunnel::is_cloudflare_id(id)
}

async fn list(State(s): Shared, Path(account_id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers, &account_id) {
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
    if let Err(r) = authorized(&s, &headers, &account_id) {
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
    // The schema excerpt marks a JSON body required and the API page sends
    // `{}`, yet Cloudflare's own Python SDK (5.9.0) sends none: the API
    // takes both. A body that is there must be JSON.
    let (_, validate_only) = match opening::<Value>(
        &s,
        &headers,
        &account_id,
        (&body, Some(Value::Null)),
        &q,
        "expected a JSON body (such as {}) or none",
    ) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if bad_id(&tunnel_id) {
        return failure(StatusCode::BAD_REQUEST, 1002, "Invalid tunnel identifier");
    }
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
    if s.refuses(&key) {
        let mut r = failure(
            StatusCode::CONFLICT,
            1010,
            "The IPsec tunnel is being modified; its PSK was not changed",
        );
        r.headers_mut().insert(
            "x-should-retry",
            axum::http::HeaderValue::from_static("false"),
        );
        return r;
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
    let (body, validate_only) = match opening::<BulkBody>(
        &s,
        &headers,
        &account_id,
        (&body, None),
        &q,
        "expected {\"psks\": [{\"id\", \"psk\"}]}",
    ) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if let Err(problem) = body.check() {
        return failure(
            StatusCode::BAD_REQUEST,
            1001,
            &format!("Invalid request body: {problem}"),
        );
    }
    let counter = if validate_only {
        &s.counters.bulk_validate
    } else {
        &s.counters.bulk_set
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let mut applied = serde_json::Map::new();
    let mut unapplied = serde_json::Map::new();
    // One lock for the whole request: it is applied as one change.
    let mut edge = s.edge.lock().expect("edge lock");
    for entry in body.psks {
        match set_one(&s, &mut edge, &account_id, &entry, validate_only) {
            Ok((tunnel_id, answer)) => {
                applied.insert(tunnel_id, answer);
            }
            Err(reason) => {
                unapplied.insert(entry.id, json!(reason));
            }
        }
    }
    success(json!({
        "successfully_applied_psks": applied,
        "unapplied_psks": unapplied,
    }))
}

impl BulkBody {
    /// What makes Cloudflare refuse the whole request.
    fn check(&self) -> Result<(), &'static str> {
        if self.psks.is_empty() {
            return Err("`psks` is empty");
        }
        let mut ids = BTreeSet::new();
        if !self
            .psks
            .iter()
            .all(|e| ids.insert(e.id.to_ascii_lowercase()))
        {
            return Err("a tunnel id appears twice in `psks`");
        }
        Ok(())
    }
}

/// One entry of a bulk set: the tunnel's id and its applied answer, or why
/// it was not applied. Only a real set (not `validate_only`) changes it.
fn set_one(
    s: &Sandbox,
    edge: &mut BTreeMap<TunnelKey, EdgeTunnel>,
    account_id: &str,
    entry: &BulkEntry,
    validate_only: bool,
) -> Result<(String, Value), &'static str> {
    let key = TunnelKey::new(account_id, &entry.id);
    let t = edge.get_mut(&key).ok_or("IPsec tunnel not found")?;
    let printable = entry.psk.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if entry.psk.len() < 8 || entry.psk.len() > 128 || !printable {
        return Err("PSK must be 8 to 128 printable ASCII characters");
    }
    if !validate_only && s.refuses(&key) {
        return Err("The IPsec tunnel is being modified; its PSK was not changed");
    }
    let at = if validate_only {
        t.last_generated_on
    } else {
        s.commit(&key, t, entry.psk.clone())
    };
    let answer = json!({
        "ipsec_tunnel_id": key.tunnel_id,
        "ipsec_id": format!("{}_{}", t.index, key.tunnel_id),
        "psk": entry.psk,
        "psk_metadata": {"last_generated_on": format_time(&at)},
    });
    Ok((key.tunnel_id, answer))
}
