//! psk.yaml texts shared by the tests of parsing, validation and
//! resolution.

use std::path::Path;

use super::{Config, ConfigError};

/// A small complete file: two tunnels in two accounts, one policy.
pub const GOOD: &str = "version: 1
account_id: 023e105f4ecef8ad9ca31a8372d0c353
recipients:
  - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
policies:
  default:
    rotate_every: 90d
tunnels:
  - name: fra-primary
    id: 0123456789abcdef0123456789abcdef
    site: fra
  - name: fra-secondary
    id: 0123456789abcdef0123456789abcdee
    account_id: 99999999999999999999999999999999
";

/// `text` parsed as `conf/psk.yaml`.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("conf/psk.yaml"), text)
}

/// Each problem of `text` as its line and message.
pub fn errors(text: &str) -> Vec<(usize, String)> {
    parse(text)
        .unwrap_err()
        .diagnostics
        .into_iter()
        .map(|d| (d.position.line, d.message))
        .collect()
}

/// Every way of naming accounts, policies and tunnels at once.
pub const FLEET: &str = "version: 1
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
defaults:
  policy: standard
  account: eu
policies:
  standard: {rotate_every: 90d}
  night:
    rotate_every: 30d
    generator: local
    spread: 3d
    site_parallel: true
    window: {days: [mon, fri], start: \"22:00\", end: \"02:00\", timezone: Asia/Tokyo}
  lab: {rotate_every: 7d}
accounts:
  eu:
    id: 023E105F4ECEF8AD9CA31A8372D0C353
    tunnels:
      - {name: eu-1, id: 0123456789abcdef0123456789abcdef}
  us:
    id: 99999999999999999999999999999999
    policy: night
    tunnels:
      - {name: us-1, id: 0123456789abcdef0123456789abcdef}
      - {name: us-2, id: 0123456789abcdef0123456789abcdee, policy: lab}
      - {name: us-by-name}
tunnels:
  - {name: top-1, id: fedcba9876543210fedcba9876543210}
  - {name: top-2, id: fedcba9876543210fedcba9876543211, account: us}
";
