//! Tunnel health from Cloudflare's GraphQL Analytics API: the
//! `magicTransitTunnelHealthChecksAdaptiveGroups` dataset, as Cloudflare's
//! guide "Querying tunnel health check results with GraphQL" shows it.
//!
//! One query per account covers every tunnel asked about. GraphQL has its
//! own budget (at most 320 queries per 5 minutes, apart from the REST
//! API's 1,200), so every query waits its turn under a second limiter of
//! the same kind as the REST one. A failed query is not retried here: the
//! callers poll, and the next poll is the retry.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::json;

use super::{error, Client, RateLimit};

/// Cloudflare's GraphQL budget: 320 queries per 5 minutes.
pub const GRAPHQL_RATE_LIMIT: RateLimit = RateLimit {
    requests: 320,
    window: std::time::Duration::from_secs(300),
};

/// Rows per answer. Cloudflare's maximum; an answer that fills it may be
/// cut short, and is refused rather than read as "no data".
pub const HEALTH_ROW_LIMIT: usize = 10_000;

/// The query psk sends, with its variables `$accountTag`, `$start`, `$end`
/// and `$tunnels` (tunnel names). Tested against the guide's query shape.
pub const HEALTH_QUERY: &str =
    "query TunnelHealth($accountTag: string!, $start: Time!, $end: Time!, $tunnels: [string!]) {
  viewer {
    accounts(filter: {accountTag: $accountTag}) {
      magicTransitTunnelHealthChecksAdaptiveGroups(
        limit: 10000
        filter: {datetime_geq: $start, datetime_lt: $end, tunnelName_in: $tunnels}
      ) {
        avg { tunnelState }
        dimensions { tunnelName edgeColoName }
      }
    }
  }
}";

/// Average `tunnelState` (1 healthy, 0.5 degraded, 0 down) by tunnel name,
/// then by data center. A tunnel with no checks in the window is absent.
pub type HealthByTunnel = BTreeMap<String, BTreeMap<String, f64>>;

/// Why a health query gave no answer psk can use.
#[derive(Debug, thiserror::Error)]
pub enum GraphqlError {
    #[error("the health query to {url} got no answer: {message}")]
    Transport { url: String, message: String },
    #[error("the health query to {url} was answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "Cloudflare's GraphQL API refused the health query: {messages}{}",
        hint(messages)
    )]
    Refused { messages: String },
    #[error("unexpected answer to the health query from {url}: {message}")]
    Decode { url: String, message: String },
}

fn hint(messages: &str) -> &'static str {
    if messages.contains("authz") || messages.contains("authentication") {
        "\nhint: the token needs the account permission \"Account Analytics: Read\""
    } else {
        ""
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    errors: Option<Vec<Message>>,
}

#[derive(Deserialize)]
struct Message {
    message: String,
}

#[derive(Deserialize)]
struct Data {
    viewer: Viewer,
}

#[derive(Deserialize)]
struct Viewer {
    accounts: Vec<Account>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Account {
    magic_transit_tunnel_health_checks_adaptive_groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    avg: Avg,
    dimensions: Dimensions,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Avg {
    tunnel_state: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dimensions {
    tunnel_name: String,
    edge_colo_name: String,
}

impl Client {
    /// The average health of the named tunnels of one account over
    /// `[start, end)`, per data center: one GraphQL query.
    pub async fn tunnel_health(
        &self,
        account_id: &str,
        tunnel_names: &[String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<HealthByTunnel, GraphqlError> {
        let url = format!("{}/graphql", self.base);
        let body = json!({
            "query": HEALTH_QUERY,
            "variables": {
                "accountTag": account_id,
                "start": start.to_rfc3339_opts(SecondsFormat::Millis, true),
                "end": end.to_rfc3339_opts(SecondsFormat::Millis, true),
                "tunnels": tunnel_names,
            },
        });
        // Held until the answer (or the end), so the window counts from it.
        let _permit = self.graphql_limiter.acquire().await;
        let shown = error::redact_url(&url);
        let sent_at = Utc::now();
        let resp = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| GraphqlError::Transport {
                url: shown.clone(),
                message: error::describe_reqwest(&e),
            })?;
        let status = resp.status();
        self.observe_clock(resp.headers(), sent_at);
        tracing::debug!(path = "/graphql", status = status.as_u16(), "GraphQL query");
        if !status.is_success() {
            return Err(GraphqlError::Status {
                url: shown,
                status: status.as_u16(),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| GraphqlError::Transport {
            url: shown.clone(),
            message: error::describe_reqwest(&e),
        })?;
        read_answer(&bytes, &shown)
    }

    /// The GraphQL budget shared by this client and its clones.
    pub fn graphql_limiter(&self) -> &super::Limiter {
        &self.graphql_limiter
    }
}

/// The rows of an answer, or its `errors[]`.
fn read_answer(bytes: &[u8], url: &str) -> Result<HealthByTunnel, GraphqlError> {
    let decode = |message: String| GraphqlError::Decode {
        url: url.to_string(),
        message,
    };
    let answer: Answer = serde_json::from_slice(bytes)
        .map_err(|e| decode(error::describe_json(&e, bytes.is_empty())))?;
    if let Some(errors) = answer.errors.filter(|e| !e.is_empty()) {
        let messages: Vec<String> = errors.into_iter().map(|m| m.message).collect();
        return Err(GraphqlError::Refused {
            messages: messages.join("; "),
        });
    }
    let data = answer
        .data
        .ok_or_else(|| decode("neither `data` nor `errors`".into()))?;
    let mut out = HealthByTunnel::new();
    let mut rows = 0;
    for account in data.viewer.accounts {
        for g in account.magic_transit_tunnel_health_checks_adaptive_groups {
            rows += 1;
            out.entry(g.dimensions.tunnel_name)
                .or_default()
                .insert(g.dimensions.edge_colo_name, g.avg.tunnel_state);
        }
    }
    if rows >= HEALTH_ROW_LIMIT {
        return Err(decode(format!(
            "the answer holds {rows} rows, the most one query returns, so it may be cut short"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_and_refusals() {
        let ok = br#"{"data":{"viewer":{"accounts":[{"magicTransitTunnelHealthChecksAdaptiveGroups":[
            {"avg":{"tunnelState":1},"dimensions":{"tunnelName":"fra-a","edgeColoName":"FRA"}},
            {"avg":{"tunnelState":0.5},"dimensions":{"tunnelName":"fra-a","edgeColoName":"AMS"}}]}]}},"errors":null}"#;
        let h = read_answer(ok, "u").unwrap();
        assert_eq!(h["fra-a"]["FRA"], 1.0);
        assert_eq!(h["fra-a"]["AMS"], 0.5);
        let refused = br#"{"data":null,"errors":[{"message":"rate limiter budget depleted"}]}"#;
        let e = read_answer(refused, "u").unwrap_err().to_string();
        assert!(e.contains("budget depleted"), "{e}");
        assert!(read_answer(b"{}", "u").is_err());
        assert!(read_answer(b"", "u").is_err());
    }
}
