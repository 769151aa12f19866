//! Where the API token goes, and by which road: every request carries the
//! token and every `psk_generate` answer a PSK, so neither may cross a
//! network in plain text.
//!
//! - The base URL must be `https://`; `http://` is accepted only for a
//!   loopback host (the sandbox), and refused before any request is made.
//!   No flag lifts this: a typo (`http` for `https`) must not put the token
//!   on the wire.
//! - A proxy is taken from the same variables curl and reqwest read
//!   (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, upper or lower case), but psk
//!   decides here, once, and hands reqwest exactly that choice, so the
//!   `-v` line naming the proxy is the road actually taken. An `https://`
//!   API behind an `http://` proxy is tunnelled with `CONNECT`: the proxy
//!   sees the host name, never the token. A loopback base URL never goes
//!   through a proxy (as Go's `ProxyFromEnvironment` does), since its
//!   requests are plain HTTP.
//! - Redirects are never followed (see `error.rs`, row `Redirected`).

use std::net::IpAddr;

use reqwest::Url;

use super::error::{redact_url, ApiError};

/// The base URL, checked: `https://`, or `http://` to a loopback host.
pub(crate) fn check_base_url(raw: &str) -> Result<Url, ApiError> {
    let refuse = |reason: &str| ApiError::InsecureBaseUrl {
        url: redact_url(raw),
        reason: reason.to_string(),
    };
    let url = Url::parse(raw).map_err(|e| refuse(&format!("it is not a URL ({e})")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(refuse(
            "http:// would send the API token, and every new PSK, unencrypted; it is accepted only for a loopback host (127.0.0.0/8, ::1, localhost)",
        )),
        other => Err(refuse(&format!(
            "psk speaks https:// (or http:// to a loopback host), not {other}://"
        ))),
    }
}

/// True for 127.0.0.0/8, `::1` (also as `::ffff:127.x.y.z`) and
/// `localhost`: hosts whose traffic never leaves the machine.
pub(crate) fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The road to the API: straight, or through one proxy.
pub(crate) enum Route {
    Direct(Direct),
    Proxy {
        /// The variable it came from, for the log line.
        var: &'static str,
        /// As given, password included: only handed to reqwest.
        url: Url,
    },
}

/// Why no proxy is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    NoneSet,
    Loopback,
    NoProxy,
}

/// The proxy variables for an `https://` base URL, in the order they are
/// read; `HTTP_PROXY` applies only to `http://` URLs, which psk sends
/// only to loopback hosts, never through a proxy.
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

impl Route {
    /// The route for `base` from the process environment.
    pub(crate) fn from_env(base: &Url) -> Result<Route, ApiError> {
        Route::choose(base, &|k| std::env::var(k).ok())
    }

    /// The route for `base` given the environment `env`. A proxy variable
    /// psk cannot use is an error, not silently skipped: the user meant the
    /// traffic to go through it.
    pub(crate) fn choose(
        base: &Url,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Route, ApiError> {
        if is_loopback(base) {
            return Ok(Route::Direct(Direct::Loopback));
        }
        let set = |names: &[&'static str]| {
            names.iter().find_map(|&n| {
                env(n)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (n, v.trim().to_string()))
            })
        };
        let Some((var, value)) = set(&PROXY_VARS[..2]).or_else(|| set(&PROXY_VARS[2..])) else {
            return Ok(Route::Direct(Direct::NoneSet));
        };
        let url = parse_proxy(var, &value)?;
        let no_proxy = set(&NO_PROXY_VARS).map(|(_, v)| v).unwrap_or_default();
        if bypassed(base, url.as_str(), &no_proxy) {
            return Ok(Route::Direct(Direct::NoProxy));
        }
        Ok(Route::Proxy { var, url })
    }

    /// Sets reqwest to exactly this route: reqwest's own reading of the
    /// environment is turned off first.
    pub(crate) fn configure(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, ApiError> {
        let builder = builder.no_proxy();
        match self {
            Route::Direct(_) => Ok(builder),
            Route::Proxy { var, url } => {
                let proxy = reqwest::Proxy::all(url.clone()).map_err(|e| ApiError::Proxy {
                    var,
                    url: redact_url(url.as_str()),
                    reason: format!("reqwest cannot use it: {e}"),
                })?;
                Ok(builder.proxy(proxy))
            }
        }
    }

    /// The route as the `-v` log shows it, any password masked.
    pub(crate) fn describe(&self) -> String {
        match self {
            Route::Direct(Direct::NoneSet) => "none (no HTTPS_PROXY or ALL_PROXY set)".into(),
            Route::Direct(Direct::Loopback) => "none (a loopback host is never proxied)".into(),
            Route::Direct(Direct::NoProxy) => "none (the host is in NO_PROXY)".into(),
            Route::Proxy { var, url } => format!("{} (from {var})", redact_url(url.as_str())),
        }
    }
}

/// A proxy variable's value as a URL, as curl reads it: no scheme means
/// `http://`. Only HTTP(S) proxies: psk is built without SOCKS.
fn parse_proxy(var: &'static str, value: &str) -> Result<Url, ApiError> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    // Masked as it is read, so `user:pw@host` without a scheme hides `pw`.
    let refuse = |reason: String| ApiError::Proxy {
        var,
        url: redact_url(&with_scheme),
        reason,
    };
    let url = Url::parse(&with_scheme).map_err(|e| refuse(format!("it is not a URL ({e})")))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(refuse("it names no host".into())),
        other => Err(refuse(format!(
            "psk supports http:// and https:// proxies, not {other}://"
        ))),
    }
}

/// Whether `NO_PROXY` exempts `base`'s host, by the rules reqwest and curl
/// share (comma-separated domains with their subdomains, IPs, CIDR
/// ranges, `*`): asked of hyper-util's matcher, the one reqwest uses.
fn bypassed(base: &Url, proxy: &str, no_proxy: &str) -> bool {
    if no_proxy.is_empty() {
        return false;
    }
    let Ok(uri) = base.as_str().parse::<hyper::Uri>() else {
        return false;
    };
    let matcher = hyper_util::client::proxy::matcher::Matcher::builder()
        .https(proxy.to_string())
        .no(no_proxy.to_string())
        .build();
    matcher.intercept(&uri).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn refused(raw: &str) -> String {
        check_base_url(raw).unwrap_err().to_string()
    }

    #[test]
    fn http_only_to_loopback() {
        for ok in [
            "https://api.cloudflare.com/client/v4",
            "https://example.com:8443/x",
            "http://127.0.0.1:8787/client/v4",
            "http://127.9.8.7/client/v4",
            "http://[::1]:8787/client/v4",
            "http://[::ffff:127.0.0.1]:1/",
            "http://localhost:8787/client/v4",
            "http://LOCALHOST/",
        ] {
            assert!(check_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.invalid/client/v4",
            "http://api.cloudflare.com/client/v4",
            "http://10.0.0.1/",
            "http://0.0.0.0:8787/",
            "http://[::]:8787/",
            "http://localhost.example.com/",
            "http://127.0.0.1.example.com/",
        ] {
            let e = refused(bad);
            assert!(e.contains("unencrypted"), "{bad}: {e}");
        }
        assert!(refused("ftp://example.com/").contains("not ftp://"));
        assert!(refused("api.cloudflare.com/client/v4").contains("not a URL"));
    }

    #[test]
    fn a_refused_url_hides_its_password() {
        let e = refused("http://user:hunter2@proxy.example/client/v4");
        assert!(
            e.contains("http://user:****@proxy.example/client/v4"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    fn route(base: &str, vars: &[(&str, &str)]) -> Result<Route, ApiError> {
        let env: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Route::choose(&Url::parse(base).unwrap(), &|k| env.get(k).cloned())
    }

    const API: &str = "https://api.cloudflare.com/client/v4";

    #[test]
    fn the_proxy_comes_from_https_proxy_then_all_proxy() {
        let d = |vars: &[(&str, &str)]| route(API, vars).unwrap().describe();
        assert_eq!(d(&[]), "none (no HTTPS_PROXY or ALL_PROXY set)");
        assert_eq!(
            d(&[("HTTP_PROXY", "http://plain:3128")]),
            "none (no HTTPS_PROXY or ALL_PROXY set)"
        );
        assert_eq!(
            d(&[
                ("HTTPS_PROXY", "http://u:pw@proxy:3128"),
                ("ALL_PROXY", "http://all:1")
            ]),
            "http://u:****@proxy:3128/ (from HTTPS_PROXY)"
        );
        assert_eq!(
            d(&[("https_proxy", "proxy:3128")]),
            "http://proxy:3128/ (from https_proxy)"
        );
        assert_eq!(
            d(&[("HTTPS_PROXY", " "), ("all_proxy", "https://all:443")]),
            "https://all/ (from all_proxy)"
        );
    }

    #[test]
    fn no_proxy_and_loopback_go_direct() {
        let d = |base: &str, vars: &[(&str, &str)]| route(base, vars).unwrap().describe();
        let proxy = ("HTTPS_PROXY", "http://proxy:3128");
        assert_eq!(
            d(API, &[proxy, ("NO_PROXY", "example.com, .cloudflare.com")]),
            "none (the host is in NO_PROXY)"
        );
        assert_eq!(
            d(API, &[proxy, ("no_proxy", "*")]),
            "none (the host is in NO_PROXY)"
        );
        assert_eq!(
            d(API, &[proxy, ("NO_PROXY", "cloudflare.org")]),
            "http://proxy:3128/ (from HTTPS_PROXY)"
        );
        assert_eq!(
            d(
                "https://10.1.2.3/client/v4",
                &[proxy, ("NO_PROXY", "10.0.0.0/8")]
            ),
            "none (the host is in NO_PROXY)"
        );
        assert_eq!(
            d(
                "http://127.0.0.1:8787/client/v4",
                &[proxy, ("HTTP_PROXY", "http://p:1")]
            ),
            "none (a loopback host is never proxied)"
        );
    }

    #[test]
    fn an_unusable_proxy_is_an_error_naming_the_variable() {
        let e = route(API, &[("ALL_PROXY", "socks5://u:pw@proxy:1080")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ALL_PROXY"), "{e}");
        assert!(e.contains("not socks5://"), "{e}");
        assert!(!e.contains(":pw@"), "{e}");
        let e = route(API, &[("HTTPS_PROXY", "u:pw@")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("HTTPS_PROXY") && !e.contains("pw"), "{e}");
    }
}
