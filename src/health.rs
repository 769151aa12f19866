//! Is a tunnel carrying traffic? The pure judgement of Cloudflare's tunnel
//! health checks, apart from the query that fetches them
//! (`cloudflare::Client::tunnel_health`) and the waiting that repeats it.
//!
//! Cloudflare reports `tunnelState` per data center: 1 healthy, 0.5
//! degraded, 0 down, averaged over the window asked about. A path is
//! healthy when every data center that reports it says 1 for the whole
//! window; psk never calls a path healthy on no data.

use std::collections::BTreeMap;

/// How the look back for "healthy now" reaches, in seconds: long enough
/// for every data center to have reported, short enough to be now.
pub const NOW_WINDOW_SECONDS: i64 = 60;

/// One path's health over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathHealth {
    /// Healthy in every reporting data center, all the window long.
    Healthy,
    /// Not down, but not healthy all along in these data centers.
    Degraded { colos: Vec<String> },
    /// Down most of the window in these data centers.
    Down { colos: Vec<String> },
    /// No data center reported the tunnel in the window.
    NoData,
    /// The health query failed; why, in words.
    Unknown(String),
}

impl PathHealth {
    /// Judges one tunnel's averages by data center (absent: no data).
    pub fn judge(colos: Option<&BTreeMap<String, f64>>) -> PathHealth {
        let Some(colos) = colos.filter(|c| !c.is_empty()) else {
            return PathHealth::NoData;
        };
        let below = |limit: f64| -> Vec<String> {
            colos
                .iter()
                .filter(|(_, s)| **s < limit)
                .map(|(c, _)| c.clone())
                .collect()
        };
        let down = below(0.5);
        if !down.is_empty() {
            return PathHealth::Down { colos: down };
        }
        let degraded = below(1.0);
        if !degraded.is_empty() {
            return PathHealth::Degraded { colos: degraded };
        }
        PathHealth::Healthy
    }

    pub fn is_healthy(&self) -> bool {
        matches!(self, PathHealth::Healthy)
    }

    /// A short machine name, for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            PathHealth::Healthy => "healthy",
            PathHealth::Degraded { .. } => "degraded",
            PathHealth::Down { .. } => "down",
            PathHealth::NoData => "no_data",
            PathHealth::Unknown(_) => "unknown",
        }
    }

    /// What a person reads, e.g. `down in AMS, FRA`.
    pub fn describe(&self) -> String {
        match self {
            PathHealth::Healthy => "healthy".into(),
            PathHealth::Degraded { colos } => format!("degraded in {}", colos.join(", ")),
            PathHealth::Down { colos } => format!("down in {}", colos.join(", ")),
            PathHealth::NoData => "not reported by any Cloudflare data center".into(),
            PathHealth::Unknown(why) => format!("of unknown health ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn colos(states: &[(&str, f64)]) -> BTreeMap<String, f64> {
        states.iter().map(|(c, s)| (c.to_string(), *s)).collect()
    }

    #[test]
    fn healthy_only_when_every_data_center_says_so_all_along() {
        assert_eq!(
            PathHealth::judge(Some(&colos(&[("AMS", 1.0), ("FRA", 1.0)]))),
            PathHealth::Healthy
        );
        assert_eq!(
            PathHealth::judge(Some(&colos(&[("AMS", 1.0), ("FRA", 0.99)]))),
            PathHealth::Degraded {
                colos: vec!["FRA".into()]
            }
        );
        let down = PathHealth::judge(Some(&colos(&[("AMS", 0.0), ("FRA", 0.4), ("LHR", 1.0)])));
        assert_eq!(down.describe(), "down in AMS, FRA");
        assert_eq!(down.code(), "down");
        assert_eq!(PathHealth::judge(None), PathHealth::NoData);
        assert_eq!(PathHealth::judge(Some(&colos(&[]))), PathHealth::NoData);
        assert!(!PathHealth::NoData.is_healthy());
    }
}
