//! API errors a person can act on, with no body text and no credential.

use std::fmt;

use serde::Deserialize;

/// One item of the envelope's `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiMessage {
    pub code: i64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no Cloudflare credentials: {0}.\nSet CLOUDFLARE_API_TOKEN to an API token with the \"Magic WAN Write\" or \"Magic Transit Write\" permission (or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY); or run `psk plan --offline`, or try everything with `psk --sandbox`")]
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
    #[error("request to {url} failed{}: {message}", retries(*attempts))]
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
}

fn retries(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {} retries", attempts - 1)
    } else {
        String::new()
    }
}

const PERMISSIONS: &str =
    "an API token with the \"Magic WAN Write\" or \"Magic Transit Write\" permission";

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
    }
    if errors.iter().any(|e| e.code == 1012) {
        s.push_str("\nhint: code 1012 means this account is not onboarded to Magic WAN or Magic Transit; check `account_id` in psk.yaml");
    }
    match status {
        401 => s.push_str(&format!("\nhint: the credentials were not accepted; set CLOUDFLARE_API_TOKEN to {PERMISSIONS} (or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY)")),
        403 => s.push_str(&format!("\nhint: the credentials lack permission for this account; psk needs {PERMISSIONS} on it")),
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
            ApiError::Api { status, .. } | ApiError::Decode { status, .. } => Some(*status),
            ApiError::TunnelNotFound { .. } | ApiError::AccountNotFound { .. } => Some(404),
            ApiError::MissingCredentials(_) | ApiError::Transport { .. } => None,
        }
    }

    /// True when Cloudflare may have acted on a request whose answer psk
    /// did not get: for a rotation, the PSK on the edge is then unknown.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ApiError::Transport { sent, .. } => *sent,
            ApiError::Api { status, .. } => *status >= 500 || *status == 408,
            ApiError::Decode { status, .. } => (200..300).contains(status) || *status >= 500,
            ApiError::MissingCredentials(_)
            | ApiError::TunnelNotFound { .. }
            | ApiError::AccountNotFound { .. } => false,
        }
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
mod tests {
    use super::*;

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
