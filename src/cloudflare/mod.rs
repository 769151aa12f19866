//! The Cloudflare API client: the few Magic IPsec calls psk needs.
//!
//! The contract is `shared/cloudflare/magic-ipsec-openapi.json`. Every answer
//! is the envelope `{success, errors, messages, result}`. Responses to
//! `psk_generate` carry a PSK, so no response body ever reaches an error
//! message or a log line: errors hold Cloudflare's codes and messages only.
//!
//! Every call goes through `call_counted`: one try at a time under the
//! shared rate limiter (`limit`, fed by what each answer's headers say of
//! the budget: `announced`), and the retry policy (`retry`) deciding from
//! the error's [`Failure`] row whether to try again.

mod announced;
pub mod clock;
mod endpoint;
mod error;
mod graphql;
mod limit;
mod rate;
mod retry;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use announced::{Announcement, Remaining};
pub use error::{ApiError, ApiMessage, Failure};
pub use graphql::{GraphqlError, HealthByTunnel, GRAPHQL_RATE_LIMIT, HEALTH_QUERY};
pub use limit::{Cause, Limiter, Permit, RateLimit};
pub use retry::RetryPolicy;

use crate::seal::Psk;

pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";

/// Tunnels per bulk `POST .../ipsec_tunnels/psk` request. Cloudflare
/// documents no maximum; 100 keeps a request small (a lost answer leaves at
/// most 100 tunnels with an unknown outcome) while a 1,000-tunnel fleet
/// still takes only 10 of the 1,200 requests per 5 minutes.
pub const BULK_CHUNK: usize = 100;

/// Requests in flight by default: enough to reach the per-IP ceiling of
/// 200 a second at 300 ms per answer (Little's law: 200/s x 0.3 s = 60), so
/// the binding limit is what stops psk, not its own parallelism.
pub const DEFAULT_PARALLELISM: usize = 64;

/// Environment variable that zeroes every retry delay; for tests.
pub const NO_RETRY_DELAY_ENV: &str = crate::backoff::NO_DELAY_ENV;

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
    /// The customer router's address for this tunnel: tunnels that share
    /// one are redundant paths of one site (what `psk init` proposes).
    pub customer_endpoint: Option<String>,
}

/// A freshly generated PSK, as Cloudflare returned it once.
#[derive(Debug)]
pub struct Generated {
    pub psk: Psk,
    pub last_generated_on: Option<DateTime<Utc>>,
    /// Which try's answer this is. Earlier tries may have generated keys
    /// whose answers were lost; the key from the newest answer is the valid
    /// one, because each generation replaces the previous key.
    pub attempt: u32,
}

/// One tunnel's new PSK for the bulk set. `Debug` never shows the PSK.
#[derive(Debug, Clone)]
pub struct PskEntry {
    pub tunnel_id: String,
    pub psk: Psk,
}

/// What Cloudflare reported for a PSK it accepted (or, under
/// `validate_only`, would accept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The PSK's date on the edge; under `validate_only`, the current key's.
    pub last_generated_on: Option<DateTime<Utc>>,
}

/// A chunk of the bulk set whose request failed as a whole.
#[derive(Debug)]
pub struct ChunkFailure {
    pub tunnel_ids: Vec<String>,
    pub error: ApiError,
}

/// Per-tunnel results of a bulk set, keyed by lowercase tunnel id. Every
/// tunnel sent is in exactly one of the three.
#[derive(Debug, Default)]
pub struct BulkOutcome {
    pub applied: BTreeMap<String, Applied>,
    /// Cloudflare's reason, for tunnels it answered about but did not set
    /// (or that its answer did not mention at all).
    pub unapplied: BTreeMap<String, String>,
    /// Chunks whose request failed; see [`ApiError::outcome_unknown`] for
    /// whether Cloudflare may have set their PSKs anyway.
    pub failed: Vec<ChunkFailure>,
}

/// What a bulk set's answer says about one tunnel.
#[derive(Debug)]
pub enum BulkResult<'a> {
    Applied(&'a Applied),
    /// Cloudflare's reason for not setting it.
    Unapplied(&'a str),
    /// Its chunk's request failed: see [`ApiError::outcome_unknown`].
    Failed(&'a ApiError),
    /// Not in the answer at all (it was not sent).
    Unmentioned,
}

impl BulkOutcome {
    /// Sorts one chunk's tunnels by the chunk's answer: each lands in
    /// exactly one of the three maps.
    fn add(&mut self, chunk: &[PskEntry], answer: Result<WireBulkResult, ApiError>, url: &str) {
        let mut result = match answer {
            Ok(r) => r,
            Err(error) => {
                self.failed.push(ChunkFailure {
                    tunnel_ids: chunk
                        .iter()
                        .map(|e| e.tunnel_id.to_ascii_lowercase())
                        .collect(),
                    error,
                });
                return;
            }
        };
        let applied: BTreeMap<String, WireApplied> = result
            .successfully_applied_psks
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let unapplied: BTreeMap<String, String> = std::mem::take(&mut result.unapplied_psks)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for e in chunk {
            let id = e.tunnel_id.to_ascii_lowercase();
            if let Some(a) = applied.get(&id) {
                // An unreadable date is not worth failing an applied PSK:
                // the key is set either way.
                let last_generated_on = a
                    .psk_metadata
                    .as_ref()
                    .and_then(|m| m.last_generated_on.as_deref())
                    .and_then(|s| parse_time(s, url).ok());
                self.applied.insert(id, Applied { last_generated_on });
            } else if let Some(reason) = unapplied.get(&id) {
                self.unapplied.insert(id, reason.clone());
            } else {
                self.unapplied.insert(
                    id,
                    "Cloudflare's answer does not mention this tunnel".into(),
                );
            }
        }
    }

    /// The one reading of the answer for a tunnel (any case), shared by
    /// apply and the dry run so the two never disagree.
    pub fn for_tunnel(&self, tunnel_id: &str) -> BulkResult<'_> {
        let id = tunnel_id.to_ascii_lowercase();
        if let Some(a) = self.applied.get(&id) {
            return BulkResult::Applied(a);
        }
        if let Some(reason) = self.unapplied.get(&id) {
            return BulkResult::Unapplied(reason);
        }
        self.failed
            .iter()
            .find(|f| f.tunnel_ids.iter().any(|t| t.eq_ignore_ascii_case(&id)))
            .map_or(BulkResult::Unmentioned, |f| BulkResult::Failed(&f.error))
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// The token's budget, shared by every request of the client and of
    /// its clones.
    pub rate_limit: RateLimit,
    /// The per-IP ceiling, kept as a pace.
    pub ip_limit: RateLimit,
    /// At most this many requests in flight, for callers that pass
    /// [`Client::parallelism`] to [`concurrently`].
    pub parallelism: usize,
    /// Say on stderr when psk waits a second or more, for budget or before
    /// a retry, so a long wait does not look like a hang. The note names
    /// the cause and the wait, never a URL, body or header.
    pub announce_waits: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            base_url: DEFAULT_BASE_URL.to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            rate_limit: RateLimit::CLOUDFLARE,
            ip_limit: RateLimit::CLOUDFLARE_IP,
            parallelism: DEFAULT_PARALLELISM,
            announce_waits: false,
        }
    }
}

impl ClientOptions {
    /// Defaults, with the base URL from `CLOUDFLARE_BASE_URL` when set, and
    /// retry delays zeroed under `PSK_TEST_NO_RETRY_DELAY`.
    pub fn from_env() -> Self {
        let mut o = ClientOptions::default();
        if let Ok(url) = std::env::var("CLOUDFLARE_BASE_URL") {
            if !url.trim().is_empty() {
                o.base_url = url.trim().to_string();
            }
        }
        o.retry.no_delay = no_retry_delay_from_env();
        o
    }
}

/// Whether `PSK_TEST_NO_RETRY_DELAY` asks for retries without delay.
pub fn no_retry_delay_from_env() -> bool {
    crate::backoff::no_delay_from_env()
}

/// Runs `f` over `items` with at most `limit` futures in flight, and
/// returns the results in the order of `items`.
pub async fn concurrently<T, R, F, Fut>(
    limit: usize,
    items: impl IntoIterator<Item = T>,
    f: F,
) -> Vec<R>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = R>,
{
    use futures_util::StreamExt as _;
    futures_util::stream::iter(items)
        .map(f)
        .buffered(limit.max(1))
        .collect()
        .await
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    retry: RetryPolicy,
    limiter: Arc<Limiter>,
    /// GraphQL's own budget, apart from the REST one.
    graphql_limiter: Arc<Limiter>,
    parallelism: usize,
    announce_waits: bool,
    /// Cloudflare's clock, from every answer's `Date` header.
    clock: Arc<clock::Clock>,
}

/// Shows no credential: not the headers, and no password in the base URL.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &error::redact_url(&self.base))
            .field("retry", &self.retry)
            .field("limiter", &self.limiter)
            .field("parallelism", &self.parallelism)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `options.base_url`, refused (before any request) unless
    /// the token would travel inside TLS: see [`endpoint`]. Redirects are
    /// never followed, and the proxy is the one the environment names.
    pub fn new(credentials: &Credentials, options: ClientOptions) -> Result<Client, ApiError> {
        let base = endpoint::check_base_url(&options.base_url)?;
        let route = endpoint::Route::from_env(&base)?;
        tracing::info!(
            base_url = %error::redact_url(&options.base_url),
            proxy = %route.describe(),
            "API endpoint"
        );
        let mut headers = credentials.headers()?;
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("psk/", env!("CARGO_PKG_VERSION"))),
        );
        crate::tls::ensure_provider();
        let builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::none());
        let http = route
            .configure(builder)?
            .build()
            .map_err(|e| ApiError::Transport {
                url: error::redact_url(&options.base_url),
                message: format!("cannot build the HTTP client: {e}"),
                sent: false,
                attempts: 0,
            })?;
        Ok(Client {
            http,
            base: options.base_url.trim_end_matches('/').to_string(),
            retry: options.retry,
            limiter: Arc::new(Limiter::new(
                options.rate_limit,
                options.ip_limit,
                options.announce_waits,
            )),
            graphql_limiter: Arc::new(Limiter::new(
                GRAPHQL_RATE_LIMIT,
                options.ip_limit,
                options.announce_waits,
            )),
            parallelism: options.parallelism.max(1),
            announce_waits: options.announce_waits,
            clock: Arc::default(),
        })
    }

    /// Now on Cloudflare's clock, never ahead of it: the runner's, corrected
    /// by the offset the answers so far show (see [`clock`]). For windows
    /// asked of Cloudflare and compared with its dates, never for waits.
    pub fn cloudflare_now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Now on Cloudflare's clock, never behind it: for "healthy now"
    /// windows, which must reach the latest moment (see [`clock`]).
    pub fn cloudflare_latest(&self) -> DateTime<Utc> {
        self.clock.latest()
    }

    /// Whether an answer has shown Cloudflare's clock yet.
    pub fn clock_known(&self) -> bool {
        self.clock.known()
    }

    /// Cloudflare's clock minus the runner's, as far as known.
    pub fn clock_offset(&self) -> chrono::TimeDelta {
        self.clock.offset()
    }

    /// Learns Cloudflare's clock from an answer's headers; a large offset
    /// is said on stderr once (where waits are announced too).
    fn observe_clock(&self, headers: &HeaderMap, sent: DateTime<Utc>) {
        let warning = self.clock.observe(headers, sent, Utc::now());
        if let (Some(w), true) = (warning, self.announce_waits) {
            eprintln!("warning: {w}");
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The pace shared by this client, its clones and all their requests.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// `--parallelism`: how many requests psk keeps in flight at once, for
    /// [`concurrently`] (dry runs, bulk chunks). The rate limiter still paces
    /// every request.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    /// All IPsec tunnels of an account, in one call.
    pub async fn list_tunnels(&self, account_id: &str) -> Result<Vec<RemoteTunnel>, ApiError> {
        #[derive(Deserialize)]
        struct ListResult {
            ipsec_tunnels: Vec<WireTunnel>,
        }
        let url = format!("{}/accounts/{account_id}/magic/ipsec_tunnels", self.base);
        let result: ListResult = self
            .call(Method::GET, &url, None::<&()>)
            .await
            .map_err(|e| e.for_account(account_id))?;
        result
            .ipsec_tunnels
            .into_iter()
            .map(|t| t.into_remote(&url))
            .collect()
    }

    /// One tunnel.
    pub async fn get_tunnel(
        &self,
        account_id: &str,
        tunnel_id: &str,
    ) -> Result<RemoteTunnel, ApiError> {
        #[derive(Deserialize)]
        struct GetResult {
            ipsec_tunnel: WireTunnel,
        }
        let url = format!(
            "{}/accounts/{account_id}/magic/ipsec_tunnels/{tunnel_id}",
            self.base
        );
        let result: GetResult = self
            .call(Method::GET, &url, None::<&()>)
            .await
            .map_err(|e| e.for_tunnel(account_id, tunnel_id))?;
        result.ipsec_tunnel.into_remote(&url)
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
        let sent = Utc::now();
        let (result, attempt): (GenResult, u32) = self
            .call_counted(Method::POST, &url, Some(&serde_json::json!({})))
            .await
            .map_err(|e| e.for_tunnel(account_id, tunnel_id))?;
        let received = Utc::now();
        if validate_only {
            return Ok(None);
        }
        let psk = result
            .psk
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::Decode {
                url: error::redact_url(&url),
                status: 200,
                message: "the response has no `result.psk`; the PSK on the edge is unknown".into(),
            })?;
        let last_generated_on = match result.psk_metadata.and_then(|m| m.last_generated_on) {
            Some(s) => Some(parse_time(&s, &url)?),
            None => None,
        };
        // Cloudflare dated the key while answering: its clock, closely.
        if let Some(at) = last_generated_on {
            self.clock.observe_event(at, sent, received);
        }
        Ok(Some(Generated {
            psk: Psk::new(psk),
            last_generated_on,
            attempt,
        }))
    }

    /// Sets caller-made PSKs with `POST .../ipsec_tunnels/psk`, in chunks of
    /// [`BULK_CHUNK`] sent side by side (up to `--parallelism`). With
    /// `validate_only` Cloudflare only checks them. The PSKs Cloudflare
    /// echoes back are never read.
    pub async fn set_psks(
        &self,
        account_id: &str,
        entries: &[PskEntry],
        validate_only: bool,
    ) -> BulkOutcome {
        let mut url = format!(
            "{}/accounts/{account_id}/magic/ipsec_tunnels/psk",
            self.base
        );
        if validate_only {
            url.push_str("?validate_only=true");
        }
        let url = &url;
        let chunks = entries.chunks(BULK_CHUNK);
        let answers = concurrently(self.parallelism, chunks, |chunk| async move {
            let body = WireBulkRequest {
                psks: chunk
                    .iter()
                    .map(|e| WireBulkEntry {
                        id: &e.tunnel_id,
                        psk: e.psk.expose(),
                    })
                    .collect(),
            };
            let answer: Result<WireBulkResult, ApiError> = self
                .call(Method::POST, url, Some(&body))
                .await
                .map_err(|e| e.for_account(account_id));
            (chunk, answer)
        })
        .await;
        let mut outcome = BulkOutcome::default();
        for (chunk, answer) in answers {
            outcome.add(chunk, answer, url);
        }
        outcome
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
        self.call_counted(method, url, body).await.map(|(v, _)| v)
    }

    /// [`Client::call`], also saying which try's answer it returns.
    async fn call_counted<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<(T, u32), ApiError> {
        let path = self.log_path(url);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (err, headers) = match self.try_once(&method, url, &path, body, attempt).await {
                Ok(v) => return Ok((v, attempt)),
                Err(failed) => failed,
            };
            let wait = self.retry.wait_after(attempt, &err, headers.as_ref());
            if err.status() == Some(429) {
                // Cloudflare refuses every request of the token until then,
                // not only this one.
                self.limiter.block_for(wait.unwrap_or_default());
            }
            match wait {
                Some(wait) => {
                    self.wait_to_retry(&method, &path, &err, attempt, wait)
                        .await
                }
                None => {
                    tracing::info!(
                        %method,
                        path = %path,
                        attempts = attempt,
                        reason = %retry_reason(&err),
                        "request failed"
                    );
                    return Err(err.with_attempts(attempt));
                }
            }
        }
    }

    /// One try: waits its turn under the rate limit, sends, and decodes
    /// the answer. A failure comes with the answer's headers when an answer
    /// came, for the retry policy to read.
    async fn try_once<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &Method,
        url: &str,
        path: &str,
        body: Option<&B>,
        attempt: u32,
    ) -> Result<T, (ApiError, Option<HeaderMap>)> {
        let permit = self.limiter.acquire().await;
        // At trace, a request that hangs shows as a start with no end.
        tracing::trace!(%method, path = %path, attempt, "HTTP request sent");
        let started = std::time::Instant::now();
        let mut req = self.http.request(method.clone(), url);
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(b).expect("request body serializes"));
        }
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        let sent_at = Utc::now();
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                // A connect error means the request never left; anything
                // later may have reached Cloudflare.
                permit.unanswered();
                let sent = !e.is_connect();
                let message = error::describe_reqwest(&e);
                tracing::debug!(
                    %method,
                    path = %path,
                    attempt,
                    elapsed_ms = elapsed_ms(),
                    sent,
                    error = %message,
                    "HTTP request got no answer"
                );
                return Err((transport(url, message, sent, attempt), None));
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        self.observe_clock(&headers, sent_at);
        permit.answered(&Announcement::from_headers(&headers));
        let body = resp.bytes().await;
        // Method, path, status and timing only: never a header or the body
        // (a `psk_generate` answer holds a PSK).
        tracing::debug!(
            %method,
            path = %path,
            status = status.as_u16(),
            attempt,
            elapsed_ms = elapsed_ms(),
            "HTTP request"
        );
        match body {
            Err(e) => {
                let message = format!(
                    "the connection broke while reading the answer: {}",
                    error::describe_reqwest(&e)
                );
                Err((transport(url, message, true, attempt), None))
            }
            Ok(bytes) => {
                decode::<T>(status, &headers, &bytes, url).map_err(|err| (err, Some(headers)))
            }
        }
    }

    /// Logs a retry (and, for a long wait, says so on stderr), then waits.
    async fn wait_to_retry(
        &self,
        method: &Method,
        path: &str,
        err: &ApiError,
        attempt: u32,
        wait: Duration,
    ) {
        tracing::warn!(
            %method,
            path = %path,
            reason = %retry_reason(err),
            retry = attempt,
            of = self.retry.max_attempts - 1,
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        if self.announce_waits && wait >= Duration::from_secs(1) {
            let why = match err.status() {
                Some(status) => format!("HTTP {status}"),
                None => "no answer".to_string(),
            };
            eprintln!(
                "note: {why} from the API; retrying in {} s (retry {attempt} of {})",
                wait.as_secs_f64().ceil(),
                self.retry.max_attempts - 1
            );
        }
        tokio::time::sleep(wait).await;
    }

    /// A URL as logs show it: the path and query below the base URL, which
    /// name accounts and tunnels, never the base (it may hold a proxy's
    /// password).
    fn log_path(&self, url: &str) -> String {
        match url.strip_prefix(self.base.as_str()) {
            Some(path) => path.to_string(),
            None => error::redact_url(url),
        }
    }
}

/// Why a try failed, in a few words for the log: a status or the kind of
/// transport failure, never Cloudflare's message (which is in the error).
fn retry_reason(err: &ApiError) -> String {
    match err {
        ApiError::Transport { message, .. } => format!("no answer: {message}"),
        ApiError::MissingCredentials(_) => "no credentials".into(),
        ApiError::InsecureBaseUrl { .. } => "base URL refused".into(),
        ApiError::Proxy { .. } => "proxy refused".into(),
        _ => match err.status() {
            Some(status) => format!("HTTP {status}"),
            None => "failed".into(),
        },
    }
}

/// A try that got no (whole) answer; `sent` says whether it may have
/// reached Cloudflare.
fn transport(url: &str, message: String, sent: bool, attempt: u32) -> ApiError {
    ApiError::Transport {
        url: error::redact_url(url),
        message,
        sent,
        attempts: attempt,
    }
}

#[derive(Serialize)]
struct WireBulkRequest<'a> {
    psks: Vec<WireBulkEntry<'a>>,
}

#[derive(Serialize)]
struct WireBulkEntry<'a> {
    id: &'a str,
    psk: &'a str,
}

/// The bulk answer; the echoed `psk` of each applied entry is skipped.
#[derive(Deserialize)]
struct WireBulkResult {
    #[serde(default)]
    successfully_applied_psks: BTreeMap<String, WireApplied>,
    #[serde(default)]
    unapplied_psks: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct WireApplied {
    #[serde(default)]
    psk_metadata: Option<WireMeta>,
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
    customer_endpoint: Option<String>,
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
            customer_endpoint: self.customer_endpoint.filter(|e| !e.is_empty()),
        })
    }
}

fn parse_time(s: &str, url: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::Decode {
            url: error::redact_url(url),
            status: 200,
            message: format!("`psk_metadata.last_generated_on` is not an RFC 3339 time: `{s}`"),
        })
}

/// The envelope with `result` still undecoded, so a `success: false`
/// answer is reported as Cloudflare's refusal whatever its `result` holds.
#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct FailureEnvelope {
    #[serde(default)]
    errors: Vec<ApiMessage>,
}

/// Turns a status and body into `result` or an error, never quoting the body.
/// A redirect is an error of its own, never followed (see [`Failure`]).
fn decode<T: DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    bytes: &[u8],
    url: &str,
) -> Result<T, ApiError> {
    if status.is_redirection() {
        return Err(error::redirected(status.as_u16(), headers, url));
    }
    if !status.is_success() {
        let (errors, note) = match serde_json::from_slice::<FailureEnvelope>(bytes) {
            Ok(f) => (f.errors, None),
            Err(e) => (
                Vec::new(),
                Some(format!(
                    "the answer is not Cloudflare's error envelope: {}",
                    error::describe_json(&e, bytes.is_empty())
                )),
            ),
        };
        return Err(ApiError::Api {
            url: error::redact_url(url),
            status: status.as_u16(),
            errors,
            attempts: 1,
            note,
        });
    }
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| ApiError::Decode {
        url: error::redact_url(url),
        status: status.as_u16(),
        message: error::describe_json(&e, bytes.is_empty()),
    })?;
    if !envelope.success {
        return Err(ApiError::Api {
            url: error::redact_url(url),
            status: status.as_u16(),
            errors: envelope.errors,
            attempts: 1,
            note: Some(format!(
                "HTTP {} came with `success: false`, so nothing is known to have happened",
                status.as_u16()
            )),
        });
    }
    let result = envelope
        .result
        .filter(|r| !r.is_null())
        .ok_or_else(|| ApiError::Decode {
            url: error::redact_url(url),
            status: status.as_u16(),
            message: "`success` is true but `result` is missing".into(),
        })?;
    serde_json::from_value(result).map_err(|e| ApiError::Decode {
        url: error::redact_url(url),
        status: status.as_u16(),
        message: error::describe_shape(&e),
    })
}
