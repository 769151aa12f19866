//! What names a tunnel across psk.yaml, the state and Cloudflare: its key
//! (account and tunnel id) and the rule for Cloudflare ids. A leaf, so that
//! policy, state and the planner can share it without importing the config.

use std::fmt;

/// A Cloudflare account or tunnel identifier: 32 lowercase hex characters.
pub fn is_cloudflare_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A tunnel's identity across config, state and Cloudflare: account and id.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TunnelKey {
    pub account_id: String,
    pub tunnel_id: String,
}

impl TunnelKey {
    pub fn new(account_id: &str, tunnel_id: &str) -> Self {
        TunnelKey {
            account_id: account_id.to_ascii_lowercase(),
            tunnel_id: tunnel_id.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account_id, self.tunnel_id)
    }
}
