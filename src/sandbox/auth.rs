//! Who may call the sandbox: only the credentials it prints, refused the
//! way Cloudflare refuses others, so a wrong-credential path (psk's own
//! message, an SDK's typed error) can be exercised without an account.
//!
//! Cloudflare's answers, as its API gives them (the codes and messages are
//! those its clients report; none is in the OpenAPI schema):
//!
//! | request | HTTP | code: message |
//! | --- | --- | --- |
//! | no `Authorization`, `X-Auth-Email` or `X-Auth-Key` | 400 | 9106: Missing X-Auth-Key, X-Auth-Email or Authorization headers |
//! | `Authorization` that is not `Bearer <token>` | 400 | 6003: Invalid request headers, chain 6111: Invalid format for Authorization header |
//! | an email without a key, or a malformed key | 400 | 6003, chain 6103: Invalid format for X-Auth-Key header |
//! | a key without an email, or a malformed email | 400 | 6003, chain 6102: Invalid format for X-Auth-Email header |
//! | a well-formed token Cloudflare does not know | 403 | 10000: Authentication error |
//! | an email and key Cloudflare does not know | 403 | 9103: Unknown X-Auth-Key or X-Auth-Email |
//!
//! When both schemes are sent, the email and key are judged, as the
//! official SDKs send them in preference to a token.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{failure, Sandbox};

/// Like Cloudflare: the sandbox's own token, or its email and key (see
/// `auth`); and an account these credentials may use (the sandbox's
/// accounts are those of its tunnels).
pub(super) fn authorized(
    s: &Sandbox,
    headers: &HeaderMap,
    account_id: &str,
) -> Result<(), Box<Response>> {
    if let Err(refusal) = check(&s.credentials, headers) {
        s.counters
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(Box::new(refusal.response()));
    }
    if !s.knows_account(account_id) {
        return Err(Box::new(failure(
            StatusCode::FORBIDDEN,
            9109,
            "Unauthorized to access requested resource",
        )));
    }
    Ok(())
}

/// The credentials a sandbox accepts, and prints for its user. They guard
/// nothing (the sandbox holds no real key) but are checked exactly, so a
/// wrong one is refused as Cloudflare would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCredentials {
    /// For `Authorization: Bearer`.
    pub token: String,
    /// For `X-Auth-Email`, with `key`.
    pub email: String,
    /// For `X-Auth-Key`: shaped like a Global API Key (37 lowercase hex
    /// digits), since a key of any other shape is refused as malformed.
    pub key: String,
}

impl Default for SandboxCredentials {
    /// The fixed credentials `psk sandbox` prints, so scripts and the
    /// quick start can export them without reading its output.
    fn default() -> SandboxCredentials {
        SandboxCredentials {
            token: "sandbox-token".into(),
            email: "sandbox@example.com".into(),
            key: "5a4db0c5ec0ffee0000000000000000000000".into(),
        }
    }
}

/// Why a request's credentials were refused, as Cloudflare words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Missing,
    MalformedAuthorization,
    MalformedKey,
    MalformedEmail,
    UnknownToken,
    UnknownKey,
}

impl Refusal {
    /// Cloudflare's answer: the status and the envelope.
    pub(crate) fn response(self) -> Response {
        let malformed = |code: u32, message: &str| {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "success": false,
                    "errors": [{
                        "code": 6003,
                        "message": "Invalid request headers",
                        "error_chain": [{"code": code, "message": message}],
                    }],
                    "messages": [],
                    "result": null,
                })),
            )
                .into_response()
        };
        match self {
            Refusal::Missing => failure(
                StatusCode::BAD_REQUEST,
                9106,
                "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
            ),
            Refusal::MalformedAuthorization => {
                malformed(6111, "Invalid format for Authorization header")
            }
            Refusal::MalformedKey => malformed(6103, "Invalid format for X-Auth-Key header"),
            Refusal::MalformedEmail => malformed(6102, "Invalid format for X-Auth-Email header"),
            Refusal::UnknownToken => failure(StatusCode::FORBIDDEN, 10000, "Authentication error"),
            Refusal::UnknownKey => failure(
                StatusCode::FORBIDDEN,
                9103,
                "Unknown X-Auth-Key or X-Auth-Email",
            ),
        }
    }
}

/// Checks a request's credentials against `accepted`.
pub(crate) fn check(accepted: &SandboxCredentials, headers: &HeaderMap) -> Result<(), Refusal> {
    let h = |k: &str| headers.get(k).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    match (h("x-auth-email"), h("x-auth-key"), h("authorization")) {
        (None, None, None) => Err(Refusal::Missing),
        (Some(_), None, _) => Err(Refusal::MalformedKey),
        (None, Some(_), _) => Err(Refusal::MalformedEmail),
        (Some(email), Some(key), _) => {
            if !email_shaped(email) {
                Err(Refusal::MalformedEmail)
            } else if !key_shaped(key) {
                Err(Refusal::MalformedKey)
            } else if email.eq_ignore_ascii_case(&accepted.email) && key == accepted.key {
                Ok(())
            } else {
                Err(Refusal::UnknownKey)
            }
        }
        (None, None, Some(authorization)) => {
            let token = authorization
                .strip_prefix("Bearer ")
                .filter(|t| token_shaped(t))
                .ok_or(Refusal::MalformedAuthorization)?;
            if token == accepted.token {
                Ok(())
            } else {
                Err(Refusal::UnknownToken)
            }
        }
    }
}

/// A token's characters: Cloudflare's are letters, digits, `-` and `_`.
fn token_shaped(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A Global API Key: 37 lowercase hex digits.
fn key_shaped(k: &str) -> bool {
    k.len() == 37 && k.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn email_shaped(e: &str) -> bool {
    matches!(e.split_once('@'), Some((user, host)) if !user.is_empty() && host.contains('.'))
        && !e
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// Every row of the module's table.
    #[test]
    fn refusals_follow_cloudflare() {
        let ok = SandboxCredentials::default();
        let bearer = |t: &str| format!("Bearer {t}");
        let key = ok.key.clone();
        let cases: Vec<(HeaderMap, Result<(), Refusal>)> = vec![
            (headers(&[]), Err(Refusal::Missing)),
            (headers(&[("authorization", &bearer(&ok.token))]), Ok(())),
            (
                headers(&[("authorization", &bearer("someone-elses-token"))]),
                Err(Refusal::UnknownToken),
            ),
            (
                headers(&[("authorization", &ok.token)]),
                Err(Refusal::MalformedAuthorization),
            ),
            (
                headers(&[("authorization", "Bearer tok en")]),
                Err(Refusal::MalformedAuthorization),
            ),
            (
                headers(&[("authorization", "Bearer ")]),
                Err(Refusal::MalformedAuthorization),
            ),
            (
                headers(&[("x-auth-email", &ok.email), ("x-auth-key", &key)]),
                Ok(()),
            ),
            (
                headers(&[
                    ("x-auth-email", "SANDBOX@example.com"),
                    ("x-auth-key", &key),
                ]),
                Ok(()),
            ),
            (
                headers(&[("x-auth-email", "ops@example.com"), ("x-auth-key", &key)]),
                Err(Refusal::UnknownKey),
            ),
            (
                headers(&[
                    ("x-auth-email", &ok.email),
                    ("x-auth-key", "0000000000000000000000000000000000000"),
                ]),
                Err(Refusal::UnknownKey),
            ),
            (
                headers(&[("x-auth-email", &ok.email), ("x-auth-key", "k")]),
                Err(Refusal::MalformedKey),
            ),
            (
                headers(&[("x-auth-email", "nobody"), ("x-auth-key", &key)]),
                Err(Refusal::MalformedEmail),
            ),
            (
                headers(&[("x-auth-email", &ok.email)]),
                Err(Refusal::MalformedKey),
            ),
            (
                headers(&[("x-auth-key", &key)]),
                Err(Refusal::MalformedEmail),
            ),
            (
                headers(&[
                    ("authorization", &bearer(&ok.token)),
                    ("x-auth-email", "ops@example.com"),
                    ("x-auth-key", &key),
                ]),
                Err(Refusal::UnknownKey),
            ),
        ];
        for (h, want) in cases {
            assert_eq!(check(&ok, &h), want, "{h:?}");
        }
    }

    #[test]
    fn the_default_key_is_shaped_like_a_global_api_key() {
        let c = SandboxCredentials::default();
        assert!(key_shaped(&c.key));
        assert!(token_shaped(&c.token));
        assert!(email_shaped(&c.email));
    }
}
