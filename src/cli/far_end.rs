//! The sandbox's far ends and tunnel health, as options: one plain set
//! that `psk sandbox` and the in-process `--sandbox` (plan, apply, import,
//! status, verify) both take, so a policy's `verify` can be rehearsed with
//! `psk apply --sandbox` as well as against a separate server. Without
//! them an in-process sandbox's far ends never take a delivered key (no
//! `deliver` command can reach a server on a port psk picked), and apply
//! would wait out verify's whole timeout.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cloudflare::RateLimit;
use crate::sandbox::{FarEndKind, HealthOptions};

/// The options' heading in `--help`: explicit on each, so the options
/// that follow a flattened group keep their own.
const HEADING: &str = "Sandbox tunnel health";

/// How long a tunnel takes to come back when `--health-delay` is not given.
const DEFAULT_HEALTH_DELAY: u64 = 5;
/// Cloudflare's GraphQL budget: 320 queries per 5 minutes.
const DEFAULT_GRAPHQL_RATE_LIMIT: RateLimit = RateLimit {
    requests: 320,
    window: Duration::from_secs(300),
};

/// The far ends (routers) of the sandbox's tunnels and the health
/// Cloudflare's GraphQL reports for them.
#[derive(Debug, Default, Clone, Args)]
pub struct FarEnd {
    /// What answers at the far end of each tunnel. `model` (the default):
    /// keys compared as strings. `strongswan`: real IKEv2 peers, a
    /// strongSwan charon on Cloudflare's side holding the sandbox's key and
    /// one on the router's side, per tunnel, in network namespaces (needs
    /// root, `ip`, charon and swanctl); a tunnel is then healthy while the
    /// edge's IKE SA is up, and a key reaches a router only by a delivery
    /// to its swanctl directory (examples/strongswan).
    #[arg(long, value_enum, value_name = "KIND", help_heading = HEADING)]
    far_end: Option<FarEndMode>,

    /// With `--far-end strongswan`: the directory for the charons' files,
    /// `DIR/<tunnel id>/{edge,router}/` (default: a new temp directory,
    /// removed at the end). A router's swanctl directory is
    /// `DIR/<tunnel id>/router/swanctl`, its strongswan.conf beside it.
    #[arg(long, value_name = "DIR", requires = "far_end", help_heading = HEADING)]
    far_end_dir: Option<PathBuf>,

    /// How long a tunnel takes, once both ends hold the same key, to be
    /// reported healthy by every data center (degraded from half of it).
    /// Default 5.
    #[arg(long, value_name = "SECONDS", help_heading = HEADING)]
    health_delay: Option<u64>,

    /// Extra delay of the slowest data center before it reports a tunnel
    /// healthy.
    #[arg(long, value_name = "SECONDS", help_heading = HEADING)]
    slow_colo: Option<u64>,

    /// Far ends take each new key on their own this long after it changed
    /// (as if other tooling delivered it). Without it, a tunnel comes back
    /// only when a key is POSTed to
    /// `/sandbox/accounts/{account}/tunnels/{id}/far_end` (what a `deliver`
    /// command can do against `psk sandbox`).
    #[arg(long, value_name = "SECONDS", help_heading = HEADING)]
    far_end_follows: Option<u64>,

    /// This tunnel id's far end never takes a new key: once rotated, it
    /// stays down (repeatable).
    #[arg(long, value_name = "TUNNEL_ID", help_heading = HEADING)]
    never_up: Vec<String>,

    /// This tunnel id is down from the start: its far end holds another
    /// key until one is delivered (repeatable).
    #[arg(long, value_name = "TUNNEL_ID", help_heading = HEADING)]
    down: Vec<String>,

    /// Answer this share of GraphQL queries (0 to 1) with an error.
    #[arg(long, value_name = "F", value_parser = parse_rate, help_heading = HEADING)]
    graphql_error_rate: Option<f64>,

    /// GraphQL's own budget: N queries in any window of SECONDS, then an
    /// error in `errors[]`. Default Cloudflare's, 320/300.
    #[arg(long, value_name = "N/SECONDS", help_heading = HEADING)]
    graphql_rate_limit: Option<RateLimit>,
}

impl FarEnd {
    /// Nothing given: the sandbox's defaults.
    pub fn is_default(&self) -> bool {
        let FarEnd {
            far_end,
            far_end_dir,
            health_delay,
            slow_colo,
            far_end_follows,
            never_up,
            down,
            graphql_error_rate,
            graphql_rate_limit,
        } = self;
        far_end.is_none()
            && far_end_dir.is_none()
            && health_delay.is_none()
            && slow_colo.is_none()
            && far_end_follows.is_none()
            && never_up.is_empty()
            && down.is_empty()
            && graphql_error_rate.is_none()
            && graphql_rate_limit.is_none()
    }

    /// What is at the far ends (`--far-end`, `--far-end-dir`).
    pub fn kind(&self) -> FarEndKind {
        match self.far_end {
            None | Some(FarEndMode::Model) => FarEndKind::Model,
            Some(FarEndMode::Strongswan) => FarEndKind::Strongswan {
                dir: self.far_end_dir.clone(),
            },
        }
    }

    /// The sandbox's settings, defaults filled in.
    pub fn health(&self) -> HealthOptions {
        HealthOptions {
            delay: Duration::from_secs(self.health_delay.unwrap_or(DEFAULT_HEALTH_DELAY)),
            slow_colo: Duration::from_secs(self.slow_colo.unwrap_or(0)),
            far_end_follows: self.far_end_follows.map(Duration::from_secs),
            never_up: self.never_up.iter().cloned().collect(),
            down: self.down.iter().cloned().collect(),
            graphql_error_rate: self.graphql_error_rate.unwrap_or(0.0),
            graphql_rate_limit: Some(
                self.graphql_rate_limit
                    .unwrap_or(DEFAULT_GRAPHQL_RATE_LIMIT),
            ),
        }
    }
}

/// `--far-end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FarEndMode {
    Model,
    Strongswan,
}

/// The sandbox's `--fail-rate` and `--drop-rate`: a share from 0 to 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "`{s}` is not a share; use a number from 0 to 1, like 0.1"
        )),
    }
}
