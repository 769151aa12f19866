//! API errors a person can act on, with no body text and no credential,
//! and the one table ([`Failure`]) of what a failure says about its
//! request: the retry policy, dry-run verdicts and the executor's
//! "interrupted" all read it, so they cannot disagree.

use std::fmt;

use serde::Deserialize;

/// One item of the envelope's `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiMessage {
    pub code: i64,
    pub message: String,
    /// The causes Cloudflare chains under a general error: "Invalid request
    /// headers" (6003) says which header in its chain.
    #[serde(default)]
    pub error_chain: Vec<ApiMessage>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no Cloudflare credentials: {0}.\nSet CLOUDFLARE_API_TOKEN to an API token with the \"Magic WAN Write\" or \"Magic Transit Write\" permission (or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY); or run `psk plan --offline`, or rehearse the whole flow against a local sandbox with `--sandbox` (`psk plan --sandbox`)")]
    MissingCredentials(String),
    #[error("{}", describe_api(*status, errors, url, *attempts, note.as_deref()))]
    Api {
        url: String,
        status: u16,
        errors: Vec<ApiMessage>,
        attempts: u32,
        /// What was wrong with the answer itself, if anything.
        note: Option<String>,
    },
    #[error("tunnel {tunnel_id} was not found in Cloudflare account {account_id} (HTTP 404).\nhint: check the tunnel's `id` and `account_id` in psk.yaml; psk does not create tunnels")]
    TunnelNotFound {
        account_id: String,
        tunnel_id: String,
    },
    #[error("Cloudflare account {account_id} was not found, or has no Magic IPsec tunnels API (HTTP 404).\nhint: check `account_id` in psk.yaml, and that the token's permissions cover this account")]
    AccountNotFound { account_id: String },
    #[error("request to {url} failed{}: {message}{}", retries(*attempts), connect_hint(url, *sent))]
    Transport {
        url: String,
        message: String,
        /// Whether the request may have reached Cloudflare.
        sent: bool,
        attempts: u32,
    },
    #[error("unexpected answer from {url} (HTTP {status}): {message}")]
    Decode {
        url: String,
        status: u16,
        message: String,
    },
    /// A 3xx: never followed. Cloudflare's API does not redirect, so
    /// something between psk and Cloudflare answered, and whether it passed
    /// the request on is unknown.
    #[error("{url} answered with a redirect (HTTP {status}) to {}, which psk does not follow: the API token and PSKs go only where CLOUDFLARE_BASE_URL points.\nhint: Cloudflare's API never redirects; check CLOUDFLARE_BASE_URL and any proxy between psk and Cloudflare", location.as_deref().unwrap_or("nowhere (no Location header)"))]
    Redirected {
        url: String,
        status: u16,
        /// The `Location` header, any password masked.
        location: Option<String>,
    },
    /// Refused before any request: see `endpoint.rs`.
    #[error("refusing to send the API token to {url}: {reason}.\nhint: set CLOUDFLARE_BASE_URL to an https:// URL (Cloudflare's is {}), or unset it; http:// is for a sandbox on this machine (`psk sandbox`, or `--sandbox`)", super::DEFAULT_BASE_URL)]
    InsecureBaseUrl { url: String, reason: String },
    #[error("cannot use the proxy in {var} ({url}): {reason}.\nhint: set {var} to http://HOST:PORT or https://HOST:PORT, or unset it")]
    Proxy {
        var: &'static str,
        url: String,
        reason: String,
    },
}

fn retries(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {} retries", attempts - 1)
    } else {
        String::new()
    }
}

/// What to check when no connection could be made: the network for
/// Cloudflare's own URL, else the `CLOUDFLARE_BASE_URL` that points psk
/// elsewhere (most often at a sandbox that is not running).
fn connect_hint(url: &str, sent: bool) -> String {
    if sent {
        String::new()
    } else if url.starts_with(super::DEFAULT_BASE_URL) {
        "\nhint: check the network connection, and HTTPS_PROXY if api.cloudflare.com is reached through a proxy".into()
    } else {
        "\nhint: nothing accepted the connection. CLOUDFLARE_BASE_URL points psk there; for the sandbox, start `psk sandbox` and export the CLOUDFLARE_BASE_URL it prints (or run with --sandbox), or unset CLOUDFLARE_BASE_URL to talk to Cloudflare".into()
    }
}

const PERMISSIONS: &str =
    "an API token with the \"Magic WAN Write\" or \"Magic Transit Write\" permission";

/// Cloudflare's codes for credentials it refused, whatever the status
/// (400 for missing or malformed ones, 403 for unknown ones): 9106 missing,
/// 6003 malformed headers, 10000 an unknown token, 9103 an unknown email
/// and key.
const CREDENTIAL_CODES: [i64; 4] = [9106, 6003, 10000, 9103];

fn describe_api(
    status: u16,
    errors: &[ApiMessage],
    url: &str,
    attempts: u32,
    note: Option<&str>,
) -> String {
    // A 5xx is a failure, not a verdict; a 429 is the rate limit.
    let verb = match status {
        429 => "Cloudflare rate-limited",
        500..=599 => "Cloudflare failed to handle",
        _ => "Cloudflare refused",
    };
    let mut s = format!("{verb} {url} (HTTP {status}{})", retries(attempts));
    if let Some(note) = note {
        s.push_str(&format!(": {note}"));
    } else if errors.is_empty() {
        s.push_str(": no error details in the answer");
    }
    for e in errors {
        s.push_str(&format!("\n  code {}: {}", e.code, e.message));
        for cause in &e.error_chain {
            s.push_str(&format!("\n    code {}: {}", cause.code, cause.message));
        }
    }
    if errors.iter().any(|e| e.code == 1012) {
        s.push_str("\nhint: code 1012 means this account is not onboarded to Magic WAN or Magic Transit; check `account_id` in psk.yaml");
    }
    let refused_credentials = errors.iter().any(|e| CREDENTIAL_CODES.contains(&e.code));
    match status {
        _ if refused_credentials || status == 401 => s.push_str(&format!("\nhint: the credentials were not accepted; set CLOUDFLARE_API_TOKEN to {PERMISSIONS} (or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY)")),
        403 => s.push_str(&format!("\nhint: Cloudflare refused these credentials for this account: check `account_id` in psk.yaml (a token of another account is refused the same way), and that the token is {PERMISSIONS} on this account")),
        429 => s.push_str("\nhint: Cloudflare's rate limit (1,200 requests per 5 minutes) was hit; wait 5 minutes before trying again"),
        _ => {}
    }
    s
}

impl ApiError {
    /// Names the tunnel in a 404 about it.
    pub(crate) fn for_tunnel(self, account_id: &str, tunnel_id: &str) -> ApiError {
        match self {
            ApiError::Api { status: 404, .. } => ApiError::TunnelNotFound {
                account_id: account_id.to_string(),
                tunnel_id: tunnel_id.to_string(),
            },
            other => other,
        }
    }

    /// Names the account in a 404 about it.
    pub(crate) fn for_account(self, account_id: &str) -> ApiError {
        match self {
            ApiError::Api { status: 404, .. } => ApiError::AccountNotFound {
                account_id: account_id.to_string(),
            },
            other => other,
        }
    }

    pub(crate) fn with_attempts(mut self, n: u32) -> ApiError {
        match &mut self {
            ApiError::Api { attempts, .. } | ApiError::Transport { attempts, .. } => *attempts = n,
            _ => {}
        }
        self
    }

    /// The HTTP status of an answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api { status, .. }
            | ApiError::Decode { status, .. }
            | ApiError::Redirected { status, .. } => Some(*status),
            ApiError::TunnelNotFound { .. } | ApiError::AccountNotFound { .. } => Some(404),
            ApiError::MissingCredentials(_)
            | ApiError::Transport { .. }
            | ApiError::InsecureBaseUrl { .. }
            | ApiError::Proxy { .. } => None,
        }
    }

    /// What this failure says about the request; see [`Failure`].
    pub fn failure(&self) -> Failure {
        match self {
            ApiError::Transport { sent: false, .. } => Failure::TurnedAway,
            ApiError::Transport { sent: true, .. } => Failure::Lost,
            ApiError::Api { status, .. } => Failure::of_status(*status),
            ApiError::Decode { status, .. } if (200..300).contains(status) => Failure::Unreadable,
            ApiError::Decode { status, .. } => Failure::of_status(*status),
            ApiError::Redirected { .. } => Failure::Redirected,
            ApiError::MissingCredentials(_)
            | ApiError::InsecureBaseUrl { .. }
            | ApiError::Proxy { .. }
            | ApiError::TunnelNotFound { .. }
            | ApiError::AccountNotFound { .. } => Failure::Final,
        }
    }

    /// True when the same request may well succeed if sent again: the
    /// failure was in passing, not an answer about the request. Retries
    /// follow it, and a dry run that failed so gives no verdict.
    pub fn is_transient(&self) -> bool {
        self.failure().is_transient()
    }

    /// True when Cloudflare may have acted on a request whose answer psk
    /// did not get: for a rotation, the PSK on the edge is then unknown.
    pub fn outcome_unknown(&self) -> bool {
        self.failure().may_have_acted()
    }
}

/// What a failed call says about its request: the one table behind
/// retries, dry-run verdicts and interrupted rotations. Two questions are
/// read off it: would sending it again help ([`Failure::is_transient`]),
/// and may Cloudflare have acted ([`Failure::may_have_acted`]). They
/// differ: a 429 is worth another try but changed nothing, while an
/// unreadable success changed something but trying again repeats the act
/// rather than the reading.
///
/// | failure | transient | may have acted |
/// | --- | --- | --- |
/// | `TurnedAway`: no connection, 409, 429 | yes | no |
/// | `Lost`: no answer after sending, 408, 5xx | yes | yes |
/// | `Unreadable`: a 2xx psk cannot read | no | yes |
/// | `Redirected`: a 3xx, never followed | no | yes |
/// | `Final`: any other answer, 404, `success: false`, no credentials, a refused base URL or proxy | no | no |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused for now, before Cloudflare did anything: the connection was
    /// not made, a conflicting change was under way (409), or the rate
    /// limit (429).
    TurnedAway,
    /// The request may have reached Cloudflare and no usable answer came
    /// back: the connection broke, the request timed out (408; kept here
    /// rather than under `TurnedAway`, since psk cannot tell whose timeout
    /// it was), or Cloudflare failed (5xx).
    Lost,
    /// Cloudflare said it succeeded, in an answer psk cannot read.
    Unreadable,
    /// A redirect (3xx), which psk never follows. Cloudflare's API does not
    /// redirect, so whatever answered stood between psk and Cloudflare, and
    /// may have passed the request on: for a rotation this is a dropped
    /// answer (the PSK on the edge is unknown). Sending it again would only
    /// be redirected again.
    Redirected,
    /// Cloudflare's answer about the request itself (or no request could
    /// be made): the same request fails the same way, and nothing changed.
    Final,
}

impl Failure {
    /// The row of an error answer with this HTTP status.
    pub fn of_status(status: u16) -> Failure {
        match status {
            300..=399 => Failure::Redirected,
            409 | 429 => Failure::TurnedAway,
            408 | 500..=599 => Failure::Lost,
            _ => Failure::Final,
        }
    }

    pub fn is_transient(self) -> bool {
        matches!(self, Failure::TurnedAway | Failure::Lost)
    }

    pub fn may_have_acted(self) -> bool {
        matches!(
            self,
            Failure::Lost | Failure::Unreadable | Failure::Redirected
        )
    }
}

/// A 3xx answer to `url`, as an error naming its `Location` (masked).
pub(crate) fn redirected(status: u16, headers: &reqwest::header::HeaderMap, url: &str) -> ApiError {
    let location = headers
        .get(reqwest::header::LOCATION)
        .map(|v| redact_url(&String::from_utf8_lossy(v.as_bytes())));
    ApiError::Redirected {
        url: redact_url(url),
        status,
        location,
    }
}

/// reqwest's error, by kind, with its cause chain; never a body.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read"
    } else {
        "the request failed"
    };
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        causes.push(c.to_string());
        src = c.source();
    }
    causes.dedup();
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({})", causes.join(": "))
    }
}

/// Why a body is not the envelope, without quoting it: a `psk_generate`
/// answer holds a PSK.
pub(crate) fn describe_json(e: &serde_json::Error, empty: bool) -> String {
    use serde_json::error::Category;
    if empty {
        return "the body is empty; expected a JSON envelope".into();
    }
    match e.classify() {
        Category::Eof => "the body ends early (truncated JSON)".into(),
        Category::Syntax => format!(
            "the body is not JSON (syntax error at line {} column {})",
            e.line(),
            e.column()
        ),
        Category::Data => format!(
            "the JSON does not have the expected shape (at line {} column {})",
            e.line(),
            e.column()
        ),
        Category::Io => "the body could not be read".into(),
    }
}

/// Why `result` is not what psk expects. serde's own message may quote a
/// value (a PSK, in a `psk_generate` answer), so only a missing field, which
/// names nothing but the field, is passed on.
pub(crate) fn describe_shape(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.strip_prefix("missing field ") {
        Some(field) if field.starts_with('`') => {
            let field: String = field.chars().take_while(|c| *c != ' ').collect();
            format!("`result` lacks the field {field}")
        }
        _ => "`result` does not have the shape psk expects".into(),
    }
}

impl fmt::Display for ApiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A URL as it may be shown: a password in it (a proxy's, in
/// `CLOUDFLARE_BASE_URL`) becomes `****`, as uv and cargo show URLs.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL psk can parse: show only what precedes any `@`.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("****@{host}"),
            None => url.to_string(),
        },
    }
}

#[cfg(test)]
impl ApiError {
    /// An error answer with `status` and nothing else.
    pub(crate) fn answer(status: u16) -> ApiError {
        ApiError::Api {
            url: "u".into(),
            status,
            errors: vec![],
            attempts: 1,
            note: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in [`Failure`]'s doc, row by row: retries, dry-run
    /// verdicts and interrupted rotations all read it.
    #[test]
    fn every_failure_has_one_row() {
        let transport = |sent| ApiError::Transport {
            url: "u".into(),
            message: "m".into(),
            sent,
            attempts: 1,
        };
        let decode = |status| ApiError::Decode {
            url: "u".into(),
            status,
            message: "m".into(),
        };
        let redirect = |status| ApiError::Redirected {
            url: "u".into(),
            status,
            location: None,
        };
        let cases = [
            (transport(false), Failure::TurnedAway),
            (ApiError::answer(409), Failure::TurnedAway),
            (ApiError::answer(429), Failure::TurnedAway),
            (transport(true), Failure::Lost),
            (ApiError::answer(408), Failure::Lost),
            (ApiError::answer(500), Failure::Lost),
            (ApiError::answer(503), Failure::Lost),
            (decode(503), Failure::Lost),
            (decode(200), Failure::Unreadable),
            (redirect(307), Failure::Redirected),
            (redirect(301), Failure::Redirected),
            (ApiError::answer(302), Failure::Redirected),
            (
                ApiError::InsecureBaseUrl {
                    url: "u".into(),
                    reason: "r".into(),
                },
                Failure::Final,
            ),
            (
                ApiError::Proxy {
                    var: "HTTPS_PROXY",
                    url: "u".into(),
                    reason: "r".into(),
                },
                Failure::Final,
            ),
            (ApiError::answer(200), Failure::Final),
            (ApiError::answer(400), Failure::Final),
            (ApiError::answer(403), Failure::Final),
            (ApiError::answer(422), Failure::Final),
            (ApiError::MissingCredentials("m".into()), Failure::Final),
            (ApiError::answer(404).for_account("a"), Failure::Final),
            (ApiError::answer(404).for_tunnel("a", "t"), Failure::Final),
        ];
        for (e, row) in cases {
            assert_eq!(e.failure(), row, "{e:?}");
            assert_eq!(
                e.is_transient(),
                matches!(row, Failure::TurnedAway | Failure::Lost),
                "{e:?}"
            );
            assert_eq!(
                e.outcome_unknown(),
                matches!(
                    row,
                    Failure::Lost | Failure::Unreadable | Failure::Redirected
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_redirect_names_its_status_and_masked_location() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LOCATION,
            "https://u:hunter2@elsewhere.example/x".parse().unwrap(),
        );
        let e = redirected(307, &h, "https://api.example/client/v4/a").to_string();
        assert!(e.contains("HTTP 307"), "{e}");
        assert!(e.contains("https://u:****@elsewhere.example/x"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = redirected(301, &reqwest::header::HeaderMap::new(), "u").to_string();
        assert!(e.contains("no Location header"), "{e}");
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("https://proxy-user:s3cret@proxy.example/client/v4/accounts"),
            "https://proxy-user:****@proxy.example/client/v4/accounts"
        );
        assert_eq!(
            redact_url("https://api.cloudflare.com/client/v4"),
            "https://api.cloudflare.com/client/v4"
        );
    }
}
