//! The Cloudflare API client: the few Magic IPsec calls psk needs.
//!
//! The contract is `shared/cloudflare/magic-ipsec-openapi.json`. Every answer
//! is the envelope `{success, errors, messages, result}`. Responses to
//! `psk_generate` carry a PSK, so no response body ever reaches an error
//! message or a log line: errors hold Cloudflare's codes and messages only.

mod error;
mod retry;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use error::{ApiError, ApiMessage};
pub use retry::RetryPolicy;

use crate::seal::Psk;

pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";

/// How psk authenticates. `Debug` never shows the secret.
#[derive(Clone)]
pub enum Credentials {
    Token(String),
    Key { email: String, key: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Credentials::Token(<redacted>)"),
            Credentials::Key { email, .. } => {
                write!(
                    f,
                    "Credentials::Key {{ email: {email:?}, key: <redacted> }}"
                )
            }
        }
    }
}

impl Credentials {
    /// `CLOUDFLARE_API_TOKEN`, else `CLOUDFLARE_EMAIL` + `CLOUDFLARE_API_KEY`.
    pub fn from_env() -> Result<Credentials, ApiError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(token) = var("CLOUDFLARE_API_TOKEN") {
            return Ok(Credentials::Token(token.trim().to_string()));
        }
        match (var("CLOUDFLARE_EMAIL"), var("CLOUDFLARE_API_KEY")) {
            (Some(email), Some(key)) => Ok(Credentials::Key {
                email: email.trim().to_string(),
                key: key.trim().to_string(),
            }),
            (Some(_), None) => Err(ApiError::MissingCredentials(
                "CLOUDFLARE_EMAIL is set but CLOUDFLARE_API_KEY is not".into(),
            )),
            (None, Some(_)) => Err(ApiError::MissingCredentials(
                "CLOUDFLARE_API_KEY is set but CLOUDFLARE_EMAIL is not".into(),
            )),
            (None, None) => Err(ApiError::MissingCredentials(
                "neither CLOUDFLARE_API_TOKEN nor CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY are set"
                    .into(),
            )),
        }
    }

    fn headers(&self) -> Result<HeaderMap, ApiError> {
        let mut h = HeaderMap::new();
        let value = |s: &str| {
            let mut v = HeaderValue::from_str(s).map_err(|_| {
                ApiError::MissingCredentials(
                    "the credential contains characters not allowed in an HTTP header".into(),
                )
            })?;
            v.set_sensitive(true);
            Ok::<_, ApiError>(v)
        };
        match self {
            Credentials::Token(t) => {
                h.insert(AUTHORIZATION, value(&format!("Bearer {t}"))?);
            }
            Credentials::Key { email, key } => {
                h.insert("X-Auth-Email", value(email)?);
                h.insert("X-Auth-Key", value(key)?);
            }
        }
        Ok(h)
    }
}

/// What psk needs to know of a tunnel at Cloudflare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTunnel {
    pub id: String,
    pub name: String,
    /// When its PSK last changed, however it was changed.
    pub last_generated_on: Option<DateTime<Utc>>,
}

/// A freshly generated PSK, as Cloudflare returned it once.
#[derive(Debug)]
pub struct Generated {
    pub psk: Psk,
    pub last_generated_on: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            base_url: DEFAULT_BASE_URL.to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientOptions {
    /// Defaults, with the base URL from `CLOUDFLARE_BASE_URL` when set.
    pub fn from_env() -> Self {
        let mut o = ClientOptions::default();
        if let Ok(url) = std::env::var("CLOUDFLARE_BASE_URL") {
            if !url.trim().is_empty() {
                o.base_url = url.trim().to_string();
            }
        }
        o
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    retry: RetryPolicy,
}

impl Client {
    pub fn new(credentials: &Credentials, options: ClientOptions) -> Result<Client, ApiError> {
        let mut headers = credentials.headers()?;
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("psk/", env!("CARGO_PKG_VERSION"))),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .build()
            .map_err(|e| ApiError::Transport {
                url: options.base_url.clone(),
                message: format!("cannot build the HTTP client: {e}"),
                sent: false,
                attempts: 0,
            })?;
        Ok(Client {
            http,
            base: options.base_url.trim_end_matches('/').to_string(),
            retry: options.retry,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// All IPsec tunnels of an account, in one call.
    pub async fn list_tunnels(&self, account_id: &str) -> Result<Vec<RemoteTunnel>, ApiError> {
        #[derive(Deserialize)]
        struct ListResult {
            ipsec_tunnels: Vec<WireTunnel>,
        }
        let url = format!("{}/accounts/{account_id}/magic/ipsec_tunnels", self.base);
        let result: ListResult = self.call(Method::GET, &url, None::<&()>).await?;
        result
            .ipsec_tunnels
            .into_iter()
            .map(|t| t.into_remote(&url))
            .collect()
    }

    /// Asks Cloudflare to generate a PSK for a tunnel. With `validate_only`
    /// nothing changes and any PSK in the answer is dropped unread.
    pub async fn psk_generate(
        &self,
        account_id: &str,
        tunnel_id: &str,
        validate_only: bool,
    ) -> Result<Option<Generated>, ApiError> {
        #[derive(Deserialize)]
        struct GenResult {
            #[serde(default)]
            psk: Option<String>,
            #[serde(default)]
            psk_metadata: Option<WireMeta>,
        }
        let mut url = format!(
            "{}/accounts/{account_id}/magic/ipsec_tunnels/{tunnel_id}/psk_generate",
            self.base
        );
        if validate_only {
            url.push_str("?validate_only=true");
        }
        let result: GenResult = self
            .call(Method::POST, &url, Some(&serde_json::json!({})))
            .await
            .map_err(|e| e.for_tunnel(account_id, tunnel_id))?;
        if validate_only {
            return Ok(None);
        }
        let psk = result
            .psk
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::Decode {
                url: url.clone(),
                status: 200,
                message: "the response has no `result.psk`; the PSK on the edge is unknown".into(),
            })?;
        let last_generated_on = match result.psk_metadata.and_then(|m| m.last_generated_on) {
            Some(s) => Some(parse_time(&s, &url)?),
            None => None,
        };
        Ok(Some(Generated {
            psk: Psk::new(psk),
            last_generated_on,
        }))
    }

    /// One request with the retry policy; decodes the envelope's `result`.
    ///
    /// Every call psk makes may be repeated: reads and dry runs change
    /// nothing, and for `psk_generate` the newest generated key is the valid
    /// one, so a retry whose answer arrives supersedes a lost earlier answer.
    /// Only when the *last* attempt's outcome is unknown does the caller
    /// have to treat the rotation as interrupted.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url);
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(b).expect("request body serializes"));
            }
            let (err, wait) = match req.send().await {
                Err(e) => {
                    // A connect error means the request never left; anything
                    // later may have reached Cloudflare.
                    let sent = !e.is_connect();
                    let err = ApiError::Transport {
                        url: url.to_string(),
                        message: error::describe_reqwest(&e),
                        sent,
                        attempts: attempt,
                    };
                    (err, Some(self.retry.backoff(attempt)))
                }
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Err(e) => {
                            let err = ApiError::Transport {
                                url: url.to_string(),
                                message: format!(
                                    "the connection broke while reading the answer: {}",
                                    error::describe_reqwest(&e)
                                ),
                                sent: true,
                                attempts: attempt,
                            };
                            (err, Some(self.retry.backoff(attempt)))
                        }
                        Ok(bytes) => match decode::<T>(status, &bytes, url) {
                            Ok(v) => return Ok(v),
                            Err(err) => {
                                let retryable = retry::should_retry(status, &headers);
                                (
                                    err,
                                    retryable.then(|| self.retry.delay_for(attempt, &headers)),
                                )
                            }
                        },
                    }
                }
            };
            match wait {
                Some(wait) if attempt < self.retry.max_attempts => {
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(err.with_attempts(attempt)),
            }
        }
    }
}

#[derive(Deserialize)]
struct WireMeta {
    #[serde(default)]
    last_generated_on: Option<String>,
}

#[derive(Deserialize)]
struct WireTunnel {
    id: String,
    name: String,
    #[serde(default)]
    psk_metadata: Option<WireMeta>,
}

impl WireTunnel {
    fn into_remote(self, url: &str) -> Result<RemoteTunnel, ApiError> {
        let last_generated_on = match self.psk_metadata.and_then(|m| m.last_generated_on) {
            Some(s) => Some(parse_time(&s, url)?),
            None => None,
        };
        Ok(RemoteTunnel {
            id: self.id.to_ascii_lowercase(),
            name: self.name,
            last_generated_on,
        })
    }
}

fn parse_time(s: &str, url: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::Decode {
            url: url.to_string(),
            status: 200,
            message: format!("`psk_metadata.last_generated_on` is not an RFC 3339 time: `{s}`"),
        })
}

#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default = "Option::default")]
    result: Option<T>,
}

#[derive(Deserialize)]
struct FailureEnvelope {
    #[serde(default)]
    errors: Vec<ApiMessage>,
}

/// Turns a status and body into `result` or an error, never quoting the body.
fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8], url: &str) -> Result<T, ApiError> {
    if !status.is_success() {
        let errors = serde_json::from_slice::<FailureEnvelope>(bytes)
            .map(|f| f.errors)
            .unwrap_or_default();
        return Err(ApiError::Api {
            url: url.to_string(),
            status: status.as_u16(),
            errors,
            attempts: 1,
        });
    }
    let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(|e| ApiError::Decode {
        url: url.to_string(),
        status: status.as_u16(),
        message: error::describe_json(&e, bytes.is_empty()),
    })?;
    if !envelope.success {
        return Err(ApiError::Api {
            url: url.to_string(),
            status: status.as_u16(),
            errors: envelope.errors,
            attempts: 1,
        });
    }
    envelope.result.ok_or_else(|| ApiError::Decode {
        url: url.to_string(),
        status: status.as_u16(),
        message: "`success` is true but `result` is missing".into(),
    })
}
