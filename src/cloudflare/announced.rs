//! What the API says of its own limits on every answer (Cloudflare since
//! September 2025, in the form of the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers`):
//!
//! - `Ratelimit: "default";r=50;t=30`: 50 requests left, for 30 seconds;
//! - `Ratelimit-Policy: "burst";q=100;w=60`: a quota of 100 per 60 seconds.
//!
//! Both are lists of structured-field items (RFC 9651), parsed by the `sfv`
//! crate. Unknown parameters are ignored; a header that does not parse, or
//! an item without its numbers, counts as absent: psk then keeps to the
//! limit it was configured with, it never fails a request over a header.

use std::time::Duration;

use reqwest::header::HeaderMap;
use sfv::{BareItem, ListEntry, Parameters, Parser};

use super::rate::RateLimit;

/// The budget the server announced with one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// Requests left, and for how long that figure holds (the tightest of
    /// the `Ratelimit` items).
    pub remaining: Option<Remaining>,
    /// Every quota of `Ratelimit-Policy`.
    pub policies: Vec<RateLimit>,
}

/// `r` requests left until `t` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub left: u32,
    pub reset: Duration,
}

impl Announcement {
    /// Reads both headers of an answer; what is missing or garbled is absent.
    pub fn from_headers(headers: &HeaderMap) -> Announcement {
        let text = |name: &str| -> Option<String> {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        Announcement {
            remaining: text("ratelimit").and_then(|v| parse_remaining(&v)),
            policies: text("ratelimit-policy")
                .map(|v| parse_policies(&v))
                .unwrap_or_default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remaining.is_none() && self.policies.is_empty()
    }
}

/// The items of a structured list with their parameters, or `None` when
/// the header is not a valid list.
fn items(value: &str) -> Option<Vec<Parameters>> {
    let list: sfv::List = Parser::new(value).parse().ok()?;
    Some(
        list.into_iter()
            .filter_map(|entry| match entry {
                ListEntry::Item(item) => Some(item.params),
                ListEntry::InnerList(_) => None,
            })
            .collect(),
    )
}

/// A non-negative integer parameter.
fn param(params: &Parameters, name: &str) -> Option<u64> {
    params
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .and_then(|(_, v)| match v {
            BareItem::Integer(i) => u64::try_from(i64::from(*i)).ok(),
            _ => None,
        })
}

/// `Ratelimit`: of several items, the one with the fewest requests left
/// binds.
pub fn parse_remaining(value: &str) -> Option<Remaining> {
    items(value)?
        .iter()
        .filter_map(|p| {
            let left = u32::try_from(param(p, "r")?).unwrap_or(u32::MAX);
            let reset = Duration::from_secs(param(p, "t")?);
            Some(Remaining { left, reset })
        })
        .min_by_key(|r| (r.left, std::cmp::Reverse(r.reset)))
}

/// `Ratelimit-Policy`: every item with a quota and a window of at least a
/// second.
pub fn parse_policies(value: &str) -> Vec<RateLimit> {
    items(value)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let requests = u32::try_from(param(p, "q")?).unwrap_or(u32::MAX);
            let window = param(p, "w").filter(|w| *w > 0)?;
            Some(RateLimit {
                requests,
                window: Duration::from_secs(window),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(requests: u32, secs: u64) -> RateLimit {
        RateLimit {
            requests,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn reads_cloudflares_headers() {
        assert_eq!(
            parse_remaining(r#""default";r=50;t=30"#),
            Some(Remaining {
                left: 50,
                reset: Duration::from_secs(30)
            })
        );
        assert_eq!(parse_policies(r#""burst";q=100;w=60"#), vec![rl(100, 60)]);
        // Tokens as names, unknown parameters, several items: the tightest
        // remaining figure, every policy.
        assert_eq!(
            parse_remaining(r#"default;r=50;t=30;pk=:AAA=:, "hour";r=7;t=3000"#),
            Some(Remaining {
                left: 7,
                reset: Duration::from_secs(3000)
            })
        );
        assert_eq!(
            parse_policies(r#""default";q=1200;w=300;qu="requests", "ip";q=200;w=1"#),
            vec![rl(1200, 300), rl(200, 1)]
        );
    }

    #[test]
    fn garbled_headers_are_absent() {
        for bad in [
            "",
            "r=50;t=30",
            r#""default";r=-1;t=30"#,
            r#""default";r=1.5;t=30"#,
            r#""default";r=50"#,
            r#""default";r="50";t=30"#,
            r#""default;r=50;t=30"#,
            "(a b);r=1;t=1",
            "\u{0}",
        ] {
            assert_eq!(parse_remaining(bad), None, "{bad:?}");
        }
        for bad in [r#""p";q=10"#, r#""p";q=10;w=0"#, r#""p";q=x;w=1"#, "!!"] {
            assert!(parse_policies(bad).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn reads_from_a_header_map() {
        let mut h = HeaderMap::new();
        assert!(Announcement::from_headers(&h).is_empty());
        h.insert("ratelimit", r#""default";r=3;t=9"#.parse().unwrap());
        h.insert(
            "ratelimit-policy",
            r#""default";q=10;w=60"#.parse().unwrap(),
        );
        let a = Announcement::from_headers(&h);
        assert_eq!(a.remaining.map(|r| r.left), Some(3));
        assert_eq!(a.policies, vec![rl(10, 60)]);
    }
}
