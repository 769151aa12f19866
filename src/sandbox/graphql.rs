//! Cloudflare's GraphQL Analytics API, for the one dataset psk reads:
//! `magicTransitTunnelHealthChecksAdaptiveGroups` (Cloudflare's guide
//! "Querying tunnel health check results with GraphQL").
//!
//! The query is parsed, not pattern-matched, and held to the dataset's
//! shape: `viewer.accounts(filter: {accountTag})`, the dataset with a
//! `limit` and a `filter` that needs `datetime_geq` and `datetime_lt` (and
//! may name tunnels with `tunnelName` or `tunnelName_in`), selecting from
//! `avg { tunnelState }`, `dimensions { tunnelName edgeColoName }` and
//! `count`. Anything else is refused the way GraphQL refuses: HTTP 200 with
//! the reason in `errors[]` and `data: null`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use graphql_parser::query::{
    Definition, Field, OperationDefinition, Selection, SelectionSet, Value as GqlValue,
};
use rand::RngExt as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::health::{colo_delays, COLOS};
use super::Sandbox;

type Gql<'a> = GqlValue<'a, String>;

#[derive(Deserialize)]
struct Request {
    query: String,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
}

/// `POST /client/v4/graphql`.
pub(crate) async fn graphql(
    State(s): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.counters.graphql.fetch_add(1, Ordering::Relaxed);
    match answer(&s, &headers, &body) {
        Ok(data) => Json(json!({"data": data, "errors": null})).into_response(),
        Err((code, message)) => {
            s.counters.graphql_refused.fetch_add(1, Ordering::Relaxed);
            Json(json!({
                "data": null,
                "errors": [{"message": message, "path": null, "extensions": {"code": code}}],
            }))
            .into_response()
        }
    }
}

type Refusal = (&'static str, String);

fn answer(s: &Sandbox, headers: &HeaderMap, body: &[u8]) -> Result<Value, Refusal> {
    if super::auth::check(&s.credentials, headers).is_err() {
        return Err(("authz", "authentication error: no valid credentials".into()));
    }
    if !s
        .graphql_budget
        .lock()
        .expect("budget lock")
        .admit(s.health.graphql_rate_limit, tokio::time::Instant::now())
    {
        return Err((
            "budgetExceeded",
            "rate limiter budget depleted; try again in a few minutes".into(),
        ));
    }
    if s.health.graphql_error_rate > 0.0
        && s.graphql_rng.lock().expect("rng lock").random::<f64>() < s.health.graphql_error_rate
    {
        return Err((
            "internal",
            "internal error (the sandbox's --graphql-error-rate)".into(),
        ));
    }
    let request: Request = serde_json::from_slice(body).map_err(|_| {
        (
            "parse",
            "the body must be JSON with a `query` string and optional `variables`".to_string(),
        )
    })?;
    let doc = graphql_parser::parse_query::<String>(&request.query)
        .map_err(|e| ("parse", format!("the query does not parse: {e}")))?;
    let selection = operation(&doc.definitions)?;
    let vars = request.variables.unwrap_or_default();
    let mut data = Map::new();
    for viewer in fields(selection, &["viewer"], "Query")? {
        let mut out = Map::new();
        for accounts in fields(&viewer.selection_set, &["accounts"], "viewer")? {
            let account = account_tag(accounts, &vars)?;
            super::auth::authorized(s, headers, &account).map_err(|_| {
                (
                    "authz",
                    format!("not authorized for that account: {account}"),
                )
            })?;
            let mut acc = Map::new();
            let wanted = ["magicTransitTunnelHealthChecksAdaptiveGroups"];
            for groups in fields(&accounts.selection_set, &wanted, "account")? {
                let rows = health_rows(s, &account, groups, &vars)?;
                acc.insert(key(groups), Value::Array(rows));
            }
            out.insert(key(accounts), json!([acc]));
        }
        data.insert(key(viewer), Value::Object(out));
    }
    Ok(Value::Object(data))
}

/// The selection set of the document's one query.
fn operation<'d>(
    defs: &'d [Definition<'d, String>],
) -> Result<&'d SelectionSet<'d, String>, Refusal> {
    let mut ops = defs.iter().filter_map(|d| match d {
        Definition::Operation(OperationDefinition::Query(q)) => Some(Ok(&q.selection_set)),
        Definition::Operation(OperationDefinition::SelectionSet(s)) => Some(Ok(s)),
        Definition::Operation(_) => Some(Err(("parse", "only queries are supported".to_string()))),
        Definition::Fragment(_) => None,
    });
    match (ops.next(), ops.next()) {
        (Some(op), None) => op,
        _ => Err(("parse", "the document must hold exactly one query".into())),
    }
}

/// The fields of a selection, each one of `allowed`.
fn fields<'d, 'a>(
    set: &'d SelectionSet<'a, String>,
    allowed: &[&str],
    on: &str,
) -> Result<Vec<&'d Field<'a, String>>, Refusal> {
    set.items
        .iter()
        .map(|item| match item {
            Selection::Field(f) if allowed.contains(&f.name.as_str()) => Ok(f),
            Selection::Field(f) => Err((
                "validation",
                format!("unknown field \"{}\" on type \"{on}\"", f.name),
            )),
            _ => Err((
                "validation",
                format!("fragments are not supported on \"{on}\""),
            )),
        })
        .collect()
}

fn key(f: &Field<'_, String>) -> String {
    f.alias.clone().unwrap_or_else(|| f.name.clone())
}

/// A GraphQL value as JSON, with variables filled in.
fn resolve(v: &Gql<'_>, vars: &Map<String, Value>) -> Result<Value, Refusal> {
    Ok(match v {
        GqlValue::Variable(name) => vars
            .get(name)
            .cloned()
            .ok_or_else(|| ("validation", format!("variable ${name} is not given")))?,
        GqlValue::Int(n) => json!(n.as_i64()),
        GqlValue::Float(f) => json!(f),
        GqlValue::String(s) => json!(s),
        GqlValue::Boolean(b) => json!(b),
        GqlValue::Null => Value::Null,
        GqlValue::Enum(e) => json!(e),
        GqlValue::List(l) => Value::Array(
            l.iter()
                .map(|v| resolve(v, vars))
                .collect::<Result<_, _>>()?,
        ),
        GqlValue::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, vars)?)))
                .collect::<Result<_, Refusal>>()?,
        ),
    })
}

/// A field's arguments, resolved, each one of `allowed`.
fn arguments(
    f: &Field<'_, String>,
    allowed: &[&str],
    vars: &Map<String, Value>,
) -> Result<BTreeMap<String, Value>, Refusal> {
    f.arguments
        .iter()
        .map(|(name, v)| {
            if !allowed.contains(&name.as_str()) {
                return Err((
                    "validation",
                    format!("unknown argument \"{name}\" on field \"{}\"", f.name),
                ));
            }
            Ok((name.clone(), resolve(v, vars)?))
        })
        .collect()
}

fn account_tag(accounts: &Field<'_, String>, vars: &Map<String, Value>) -> Result<String, Refusal> {
    let args = arguments(accounts, &["filter"], vars)?;
    args.get("filter")
        .and_then(|f| f.get("accountTag"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            (
                "validation",
                "accounts needs filter: {accountTag: \"<account id>\"}".to_string(),
            )
        })
}

/// What the dataset's filter asks for.
struct Filter {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    names: Option<Vec<String>>,
    limit: usize,
}

fn filter(groups: &Field<'_, String>, vars: &Map<String, Value>) -> Result<Filter, Refusal> {
    let args = arguments(groups, &["limit", "filter", "orderBy"], vars)?;
    let limit = args
        .get("limit")
        .and_then(Value::as_u64)
        .filter(|l| (1..=10_000).contains(l))
        .ok_or_else(|| {
            (
                "validation",
                "limit must be between 1 and 10000".to_string(),
            )
        })?;
    let f = args
        .get("filter")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            (
                "validation",
                "a filter with datetime_geq and datetime_lt is required".to_string(),
            )
        })?;
    const KNOWN: [&str; 4] = ["datetime_geq", "datetime_lt", "tunnelName", "tunnelName_in"];
    if let Some(k) = f.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(("validation", format!("unknown filter field \"{k}\"")));
    }
    let time = |k: &str| {
        f.get(k)
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| ("validation", format!("filter.{k} must be an RFC 3339 time")))
    };
    let mut names: Option<Vec<String>> = None;
    if let Some(n) = f.get("tunnelName") {
        names = Some(vec![n.as_str().unwrap_or_default().to_string()]);
    }
    if let Some(list) = f.get("tunnelName_in") {
        let list = list
            .as_array()
            .ok_or(("validation", "tunnelName_in must be a list".to_string()))?;
        names = Some(
            list.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        );
    }
    Ok(Filter {
        start: time("datetime_geq")?,
        end: time("datetime_lt")?,
        names,
        limit: limit as usize,
    })
}

/// One row per tunnel and data center that reports in the window, in
/// tunnel then data-center order, at most `limit`.
fn health_rows(
    s: &Sandbox,
    account: &str,
    groups: &Field<'_, String>,
    vars: &Map<String, Value>,
) -> Result<Vec<Value>, Refusal> {
    let filter = filter(groups, vars)?;
    let picks = fields(
        &groups.selection_set,
        &["avg", "dimensions", "count"],
        "group",
    )?;
    let now = s.now();
    let end = filter.end.min(now);
    let delays = colo_delays(&s.health);
    let mut edge = s.edge.lock().expect("edge lock");
    let mut tunnels: Vec<_> = edge
        .iter_mut()
        .filter(|(k, t)| {
            k.account_id == account && filter.names.as_ref().is_none_or(|n| n.contains(&t.name))
        })
        .map(|(_, t)| t)
        .collect();
    tunnels.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for t in tunnels {
        t.far.catch_up(&t.psk, now);
        for (colo, delay) in COLOS.iter().zip(delays) {
            let Some(avg) = t.far.average(filter.start, end, delay) else {
                continue;
            };
            rows.push(row(&picks, &t.name, colo, avg)?);
        }
    }
    rows.truncate(filter.limit);
    Ok(rows)
}

fn row(picks: &[&Field<'_, String>], tunnel: &str, colo: &str, avg: f64) -> Result<Value, Refusal> {
    let mut out = Map::new();
    for p in picks {
        let v = match p.name.as_str() {
            "count" => json!(120),
            "avg" => sub(p, "avg", &[("tunnelState", json!(avg))])?,
            _ => sub(
                p,
                "dimensions",
                &[("tunnelName", json!(tunnel)), ("edgeColoName", json!(colo))],
            )?,
        };
        out.insert(key(p), v);
    }
    Ok(Value::Object(out))
}

fn sub(p: &Field<'_, String>, on: &str, have: &[(&str, Value)]) -> Result<Value, Refusal> {
    let names: Vec<&str> = have.iter().map(|(n, _)| *n).collect();
    let picked = fields(&p.selection_set, &names, on)?;
    if picked.is_empty() {
        return Err(("validation", format!("field \"{on}\" needs a selection")));
    }
    Ok(Value::Object(
        picked
            .iter()
            .map(|f| {
                let v = have
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, v)| v.clone());
                (key(f), v.unwrap_or(Value::Null))
            })
            .collect(),
    ))
}
