//! The sandbox's own fleet: an account of 40 tunnels that exists in every
//! sandbox, so `psk init --sandbox` has something to find and a psk.yaml
//! that lists only part of it shows the rest as unmanaged.
//!
//! It has the shape of a real Magic WAN fleet: twenty sites, each reached
//! by two tunnels from one customer router (the same `customer_endpoint`,
//! as Cloudflare reports it), keys made on different days over the last
//! four months. Everything is derived from the tunnel's place in the list,
//! so every sandbox holds the same fleet.

use chrono::{DateTime, TimeDelta, Utc};

use super::id_for_name;
use crate::tunnel::TunnelKey;

/// The account the fleet lives in. psk.yaml files that name it get the
/// fleet in their sandbox beside their own tunnels.
pub const FLEET_ACCOUNT: &str = "f1ee7000000000000000000000000000";

/// Three-letter site codes, as network teams name locations.
const SITES: [&str; 20] = [
    "fra", "ams", "lhr", "cdg", "mad", "mxp", "zrh", "vie", "waw", "arn", "cph", "osl", "hel",
    "dub", "lis", "bru", "prg", "bud", "ath", "ist",
];

/// How many tunnels the fleet has.
pub const FLEET_SIZE: usize = SITES.len() * 2;

/// One tunnel of the fleet, before the sandbox gives it a key.
pub(super) struct Seeded {
    pub key: TunnelKey,
    pub name: String,
    pub customer_endpoint: String,
    pub last_generated_on: DateTime<Utc>,
}

/// The fleet as it stands at `now`: site `s` has tunnels `{s}-ipsec-1`
/// and `{s}-ipsec-2` behind `203.0.113.{10 + site}` (a documentation
/// range); the two keys of a site were made a day apart.
pub(super) fn seeds(now: DateTime<Utc>) -> Vec<Seeded> {
    let mut out = Vec::with_capacity(FLEET_SIZE);
    for (i, site) in SITES.iter().enumerate() {
        let days_ago = 5 + (i as i64 * 23) % 120;
        for path in 1..=2 {
            let name = format!("{site}-ipsec-{path}");
            out.push(Seeded {
                key: TunnelKey::new(FLEET_ACCOUNT, &id_for_name(FLEET_ACCOUNT, &name)),
                name,
                customer_endpoint: format!("203.0.113.{}", 10 + i),
                last_generated_on: now - TimeDelta::days(days_ago + path - 1),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forty_tunnels_in_pairs_behind_one_endpoint() {
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        let fleet = seeds(now);
        assert_eq!(fleet.len(), 40);
        let mut endpoints = std::collections::BTreeMap::<&str, usize>::new();
        for t in &fleet {
            *endpoints.entry(&t.customer_endpoint).or_default() += 1;
            assert!(crate::tunnel::is_cloudflare_id(&t.key.tunnel_id));
        }
        assert_eq!(endpoints.len(), 20);
        assert!(endpoints.values().all(|n| *n == 2));
        // Some keys are past a 90-day policy, some are not.
        let old = fleet
            .iter()
            .filter(|t| now - t.last_generated_on > TimeDelta::days(90));
        assert!((1..40).contains(&old.count()));
    }
}
