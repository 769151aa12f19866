//! Spread: each tunnel rotates at its own fixed slot, so a fleet imported on
//! one day does not fall due on one day forever after.
//!
//! A policy with `spread: 7d` cuts time (from the Unix epoch) into 7-day
//! periods, and gives each tunnel a fixed offset inside them, taken from a
//! SHA-256 of its account and tunnel id: the same on every run and every
//! machine (Rust's `HashMap` hasher is randomized per process, so it would
//! not do). A tunnel is due at its last slot on or before the moment the
//! policy's period runs out, so a key never outlives `rotate_every` and is
//! replaced at most `spread` early. Because slots are absolute, tunnels stay
//! spread after every rotation instead of drifting back together.

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use super::span::Span;
use crate::tunnel::TunnelKey;

/// The tunnel's offset inside each `spread` period, in seconds:
/// `0..spread.seconds()`.
pub fn offset(key: &TunnelKey, spread: Span) -> i64 {
    let mut h = Sha256::new();
    h.update(b"psk-spread-v1\0");
    h.update(key.account_id.as_bytes());
    h.update(b"/");
    h.update(key.tunnel_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(first);
    // `spread` is at most a hundred years of seconds, far inside i64.
    (n % spread.seconds() as u64) as i64
}

/// The tunnel's last slot at or before `deadline` (when the policy's period
/// runs out): `deadline` minus less than one `spread`.
pub fn slot_at_or_before(deadline: DateTime<Utc>, offset: i64, spread: Span) -> DateTime<Utc> {
    let early = (deadline.timestamp() - offset).rem_euclid(spread.seconds());
    deadline - TimeDelta::seconds(early)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> TunnelKey {
        TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", id)
    }

    #[test]
    fn offsets_are_fixed_for_fixed_ids() {
        // These numbers are part of psk's behaviour: a change here moves
        // every rotation of every fleet that uses `spread`. Python gives the
        // same: int.from_bytes(sha256(b"psk-spread-v1\0" + b"<account>/<id>")
        // .digest()[:8], "big") % 604800.
        let week: Span = "7d".parse().unwrap();
        assert_eq!(
            offset(&key("0123456789abcdef0123456789abcdef"), week),
            OFFSET_A
        );
        assert_eq!(
            offset(&key("0123456789abcdef0123456789abcd01"), week),
            OFFSET_B
        );
        // Case does not matter: keys are normalised to lowercase.
        assert_eq!(
            offset(&key("0123456789ABCDEF0123456789ABCDEF"), week),
            OFFSET_A
        );
    }

    const OFFSET_A: i64 = 586_190;
    const OFFSET_B: i64 = 78_726;

    #[test]
    fn offsets_fall_inside_the_spread_and_differ() {
        let day: Span = "1d".parse().unwrap();
        let offsets: Vec<i64> = (0..100)
            .map(|i| offset(&key(&format!("{i:032x}")), day))
            .collect();
        assert!(offsets.iter().all(|o| (0..86_400).contains(o)));
        let mut distinct = offsets.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 95, "{distinct:?}");
    }

    #[test]
    fn slot_is_never_after_the_deadline_and_at_most_a_spread_early() {
        let spread: Span = "7d".parse().unwrap();
        let deadline: DateTime<Utc> = "2027-02-24T00:00:00Z".parse().unwrap();
        for offset in [0, 1, 3_600, 302_400, 604_799] {
            let due = slot_at_or_before(deadline, offset, spread);
            assert!(due <= deadline);
            assert!(deadline - due < spread.as_delta());
            assert_eq!((due.timestamp() - offset).rem_euclid(604_800), 0);
        }
        // A deadline exactly on the slot is the slot.
        let on_slot =
            deadline - TimeDelta::seconds((deadline.timestamp() - 3_600).rem_euclid(604_800));
        assert_eq!(slot_at_or_before(on_slot, 3_600, spread), on_slot);
    }
}
