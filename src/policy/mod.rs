//! Rotation policies and the time arithmetic behind "is this PSK due?".
//!
//! Everything here takes `now` as an argument so the planner stays a pure
//! function and tests can pin any instant. Windows and spread have their own
//! modules because their arithmetic (time zones, hashing) is the subtle part;
//! durations ([`Span`]) have theirs because spread and the rest of psk (lock
//! waits, rate limits) read them too, and so that no module here imports
//! one that imports it back.

mod span;
pub mod spread;
pub mod window;

use chrono::{DateTime, Utc};

pub use span::{Span, SpanError};

use crate::tunnel::TunnelKey;

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
    /// How a rotated tunnel is proven back up; without it, psk does not
    /// wait for one.
    pub verify: Option<Verify>,
}

/// A policy's `verify`: Cloudflare's health checks, a probe of the user's,
/// or both, and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// Read Cloudflare's tunnel health checks over GraphQL.
    pub health_checks: bool,
    /// The user's probe (exit 0 = carrying traffic), with its timeout per run.
    pub command: Option<Deliver>,
    /// Healthy continuously for this long counts as back up.
    pub settle: Span,
    /// Give up on a tunnel after this long.
    pub timeout: Span,
}

/// `verify.settle` when psk.yaml gives none.
pub const DEFAULT_VERIFY_SETTLE_SECONDS: i64 = 120;
/// `verify.timeout` when psk.yaml gives none.
pub const DEFAULT_VERIFY_TIMEOUT_SECONDS: i64 = 900;
/// `verify.command_timeout` when psk.yaml gives none.
pub const DEFAULT_VERIFY_COMMAND_TIMEOUT_SECONDS: i64 = 30;

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
            verify: None,
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
    fn due_exactly_at_the_boundary() {
        let p = Policy::new("default", "30d".parse().unwrap());
        let last = at("2026-01-01T00:00:00Z");
        assert_eq!(p.next_due(last), at("2026-01-31T00:00:00Z"));
        assert!(!p.is_due(last, at("2026-01-30T23:59:59Z")));
        assert!(p.is_due(last, at("2026-01-31T00:00:00Z")));
        assert!(p.is_due(last, at("2027-01-01T00:00:00Z")));
    }
}
