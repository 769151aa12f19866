//! Rotation policies and the time arithmetic behind "is this PSK due?".
//!
//! Everything here takes `now` as an argument so the planner stays a pure
//! function and tests can pin any instant. Windows and spread have their own
//! modules because their arithmetic (time zones, hashing) is the subtle part.

pub mod spread;
pub mod window;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use crate::tunnel::TunnelKey;

/// A positive span written as `<number><unit>` groups, e.g. `90d` or `1w2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    seconds: i64,
}

/// The longest span accepted: a hundred years is already absurd for a PSK.
const MAX_SECONDS: i64 = 100 * 366 * 86_400;

impl Span {
    pub fn from_seconds(seconds: i64) -> Option<Self> {
        (seconds > 0 && seconds <= MAX_SECONDS).then_some(Span { seconds })
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }

    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("empty duration; expected a number and a unit, e.g. 90d")]
    Empty,
    #[error(
        "`{0}` is not a duration; expected a number and a unit (s, m, h, d, w), e.g. 90d or 1w2d"
    )]
    Syntax(String),
    #[error("`{0}` is zero; a rotation period must be positive")]
    Zero(String),
    #[error("`{0}` is longer than 100 years")]
    TooLong(String),
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(SpanError::Empty);
        }
        let syntax = || SpanError::Syntax(text.to_string());
        let mut total: i64 = 0;
        let mut digits = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit: i64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(syntax()),
            };
            if digits.is_empty() {
                return Err(syntax());
            }
            let n: i64 = digits
                .parse()
                .map_err(|_| SpanError::TooLong(text.to_string()))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| SpanError::TooLong(text.to_string()))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(syntax());
        }
        if total == 0 {
            return Err(SpanError::Zero(text.to_string()));
        }
        Span::from_seconds(total).ok_or_else(|| SpanError::TooLong(text.to_string()))
    }
}

impl fmt::Display for Span {
    /// The shortest exact spelling, largest unit first: `90d`, `1w2d`, `36h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.seconds;
        for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
            // Whole days read better than weeks unless the span is whole weeks.
            if unit == "w" && rest % size != 0 {
                continue;
            }
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        if rest > 0 {
            write!(f, "{rest}s")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which API path makes a new key (see DESIGN.md, "Rotation without losing
/// a key").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Generator {
    /// `psk_generate`: Cloudflare makes the key and returns it once.
    #[default]
    Cloudflare,
    /// psk makes the key, seals it as pending, then sets it.
    Local,
}

impl Generator {
    pub fn as_str(self) -> &'static str {
        match self {
            Generator::Cloudflare => "cloudflare",
            Generator::Local => "local",
        }
    }
}

/// A named rotation policy from psk.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub rotate_every: Span,
    pub generator: Generator,
    /// When rotations may start; always, when absent.
    pub window: Option<window::Window>,
    /// Rotations are spread over this span before they fall due; always
    /// shorter than `rotate_every`.
    pub spread: Option<Span>,
    /// Whether tunnels of one site may rotate in the same apply.
    pub site_parallel: bool,
    /// The command that hands a new PSK to its router, if any.
    pub deliver: Option<Deliver>,
}

/// A delivery command from psk.yaml: argv, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    pub argv: Vec<String>,
    pub timeout: Span,
}

/// `deliver_timeout` when psk.yaml gives none.
pub const DEFAULT_DELIVER_TIMEOUT_SECONDS: i64 = 60;

impl Policy {
    /// A policy with only a period: Cloudflare generates, any time, no
    /// spread, one tunnel per site per apply.
    pub fn new(name: &str, rotate_every: Span) -> Policy {
        Policy {
            name: name.to_string(),
            rotate_every,
            generator: Generator::Cloudflare,
            window: None,
            spread: None,
            site_parallel: false,
            deliver: None,
        }
    }

    /// When a PSK last changed at `last_rotated` must change again, before
    /// spread: the end of the policy's period.
    pub fn next_due(&self, last_rotated: DateTime<Utc>) -> DateTime<Utc> {
        last_rotated
            .checked_add_signed(self.rotate_every.as_delta())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn is_due(&self, last_rotated: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.next_due(last_rotated) <= now
    }

    /// When this tunnel's PSK falls due: the end of the period, moved to
    /// the tunnel's slot when the policy spreads rotations.
    pub fn due_for(&self, key: &TunnelKey, last_rotated: DateTime<Utc>) -> DateTime<Utc> {
        let deadline = self.next_due(last_rotated);
        match self.spread {
            Some(spread) if deadline < DateTime::<Utc>::MAX_UTC => {
                spread::slot_at_or_before(deadline, spread::offset(key, spread), spread)
            }
            _ => deadline,
        }
    }

    /// The first instant at or after `t` when a rotation may start: `t`
    /// when the policy has no window or the window is open.
    pub fn may_start_at(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match &self.window {
            Some(w) => w.next_open(t).unwrap_or(DateTime::<Utc>::MAX_UTC),
            None => t,
        }
    }
}

/// Whole days between two instants, for messages like "117 days ago".
pub fn days_between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> i64 {
    (later - earlier).num_days()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!("30s".parse::<Span>().unwrap().seconds(), 30);
        assert_eq!("5m".parse::<Span>().unwrap().seconds(), 300);
        assert_eq!("2h".parse::<Span>().unwrap().seconds(), 7200);
        assert_eq!("90d".parse::<Span>().unwrap().seconds(), 90 * 86_400);
        assert_eq!("1w2d".parse::<Span>().unwrap().seconds(), 9 * 86_400);
        assert_eq!(" 12h ".parse::<Span>().unwrap().seconds(), 12 * 3600);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "d", "90", "90x", "-1d", "1.5d", "9 0d", "90dd"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} should fail");
        }
        assert!(matches!("0d".parse::<Span>(), Err(SpanError::Zero(_))));
        assert!(matches!("0s0m".parse::<Span>(), Err(SpanError::Zero(_))));
        assert!(matches!(
            "99999999999999999999d".parse::<Span>(),
            Err(SpanError::TooLong(_))
        ));
        assert!(matches!(
            "40000d".parse::<Span>(),
            Err(SpanError::TooLong(_))
        ));
    }

    #[test]
    fn displays_shortest_exact_form() {
        for (input, shown) in [
            ("90d", "90d"),
            ("2w", "2w"),
            ("1w2d", "9d"),
            ("36h", "1d12h"),
            ("90s", "1m30s"),
        ] {
            assert_eq!(input.parse::<Span>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn due_exactly_at_the_boundary() {
        let p = Policy::new("default", "30d".parse().unwrap());
        let last = at("2026-01-01T00:00:00Z");
        assert_eq!(p.next_due(last), at("2026-01-31T00:00:00Z"));
        assert!(!p.is_due(last, at("2026-01-30T23:59:59Z")));
        assert!(p.is_due(last, at("2026-01-31T00:00:00Z")));
        assert!(p.is_due(last, at("2027-01-01T00:00:00Z")));
    }
}
