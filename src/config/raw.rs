//! psk.yaml as written, before any checks beyond types and known keys.
//!
//! These types are also the source of `schema/psk.schema.json` (through
//! schemars), so their doc comments are what editors show on hover: they
//! describe the file for the people writing it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// The desired state of psk: which Cloudflare IPsec tunnels have their
/// pre-shared keys rotated, by which policy, and to whom the keys are
/// sealed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "psk.yaml")]
pub struct RawConfig {
    /// The file format version. This psk reads version 1.
    pub version: u64,
    /// The Cloudflare account (32 hexadecimal characters) of top-level
    /// tunnels that name none. Same as `defaults.account`; set one of them.
    #[serde(default)]
    pub account_id: Option<String>,
    /// Where the state file lives, relative to this file. Default
    /// `psk.state.json`. Or a state shared on S3-compatible object storage,
    /// `s3://BUCKET/PATH/psk.state.json`, with the endpoint, region and
    /// credentials from the AWS environment (see docs/remote-state.md).
    #[serde(default)]
    pub state: Option<String>,
    /// Who can open the sealed PSKs: age public keys (`age1...`) or SSH
    /// public keys (`ssh-ed25519 ...`, `ssh-rsa ...`). At least one.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The account and policy of tunnels that name none.
    #[serde(default)]
    #[schemars(with = "RawDefaults")]
    pub defaults: Option<RawDefaults>,
    /// Cloudflare accounts by a short name of your choice, each with its
    /// tunnels: for fleets across several accounts.
    #[serde(default)]
    pub accounts: BTreeMap<String, RawAccount>,
    /// Rotation policies by name. A tunnel without `policy` uses the
    /// account's, then `defaults.policy`, then the one named `default`.
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    /// Tunnels of the default account (or naming their own).
    #[serde(default)]
    pub tunnels: Vec<RawTunnel>,
    /// Tunnels of these accounts that psk leaves to someone else (another
    /// team, Terraform): each a Cloudflare tunnel id (32 hexadecimal
    /// characters) or a tunnel's name at Cloudflare. `psk plan` and
    /// `psk status --refresh` list every other tunnel the accounts hold
    /// and psk.yaml does not, as unmanaged.
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// Fallbacks for tunnels that do not say.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Defaults")]
pub struct RawDefaults {
    /// The policy of tunnels that name none (and whose account names none).
    #[serde(default)]
    pub policy: Option<String>,
    /// The account of top-level tunnels that name none: a name from
    /// `accounts` or a Cloudflare account id.
    #[serde(default)]
    pub account: Option<String>,
}

/// One Cloudflare account and its tunnels.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Account")]
pub struct RawAccount {
    /// The Cloudflare account id: 32 hexadecimal characters.
    pub id: String,
    /// The policy of this account's tunnels that name none.
    #[serde(default)]
    pub policy: Option<String>,
    /// This account's tunnels.
    #[serde(default)]
    pub tunnels: Vec<RawTunnel>,
}

/// How often PSKs change, how, and when.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Policy")]
pub struct RawPolicy {
    /// The longest a PSK may live: `<number><unit>` groups with units s, m,
    /// h, d, w, e.g. `90d` or `1w2d`.
    pub rotate_every: String,
    /// Who makes a new key: `cloudflare` (psk_generate; the default) or
    /// `local` (psk makes it and sets it).
    #[serde(default)]
    #[schemars(with = "RawGenerator")]
    pub generator: Option<RawGenerator>,
    /// When rotations may start. Without it, any time.
    #[serde(default)]
    #[schemars(with = "RawWindow")]
    pub window: Option<RawWindow>,
    /// Spread rotations over this span before they fall due, at a fixed
    /// slot per tunnel, so a fleet imported on one day does not rotate on
    /// one day forever after. Shorter than `rotate_every`, e.g. `7d`.
    #[serde(default)]
    pub spread: Option<String>,
    /// Let tunnels of one site rotate in the same apply. Default false:
    /// redundant paths of a site rotate one per apply.
    #[serde(default)]
    pub site_parallel: Option<bool>,
    /// A command (argv list, no shell) that hands each new PSK to its
    /// router right after psk records it: the PSK on stdin, never in argv
    /// or the environment; `PSK_TUNNEL_NAME`, `PSK_TUNNEL_ID`,
    /// `PSK_ACCOUNT_ID`, `PSK_SITE` in the environment. Exit 0 means
    /// delivered. With it, a site's tunnels rotate one after another in one
    /// apply, each only after the previous one was delivered.
    #[serde(default)]
    pub deliver: Option<Vec<String>>,
    /// How long `deliver` may run before it is stopped and counted as
    /// failed; default `60s`.
    #[serde(default)]
    pub deliver_timeout: Option<String>,
    /// Check that each rotated tunnel carries traffic again before the next
    /// path of its site changes, and never rotate a path while another path
    /// of its site is down. With it, one apply rotates all due paths of a
    /// site one after another: rotate, deliver, verify, next.
    #[serde(default)]
    #[schemars(with = "RawVerify")]
    pub verify: Option<RawVerify>,
}

/// How psk decides that a rotated tunnel is back up.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Verify")]
pub struct RawVerify {
    /// Read Cloudflare's own tunnel health checks (GraphQL Analytics API;
    /// the token needs "Account Analytics: Read"): back up means healthy in
    /// every reporting data center for `settle`. Default true.
    #[serde(default)]
    pub health_checks: Option<bool>,
    /// A probe of your own (argv list, no shell), run until it exits 0 (the
    /// tunnel carries traffic again); `PSK_TUNNEL_NAME`, `PSK_TUNNEL_ID`,
    /// `PSK_ACCOUNT_ID`, `PSK_SITE` in the environment, never the PSK.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// How long one run of `command` may take; default `30s`.
    #[serde(default)]
    pub command_timeout: Option<String>,
    /// How long a tunnel must stay healthy to count as back up; default
    /// `2m`.
    #[serde(default)]
    pub settle: Option<String>,
    /// How long psk waits for a tunnel to come back before it stops its
    /// site; default `15m`. Longer than `settle`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The API path that makes a new key.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Generator")]
pub enum RawGenerator {
    // Cloudflare generates the key (`psk_generate`) and returns it once.
    // (Plain comments: doc comments would make the schema a `oneOf`, whose
    // errors cannot say which values are allowed.)
    Cloudflare,
    // psk generates the key, seals it as pending, then sets it.
    Local,
}

/// A change window: rotations start only while it is open.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Window")]
pub struct RawWindow {
    /// The days on which the window opens. Default: every day.
    #[serde(default)]
    pub days: Option<Vec<RawDay>>,
    /// Opening time, `HH:MM` on a 24-hour clock, local to `timezone`.
    pub start: String,
    /// Closing time, `HH:MM` (or `24:00`). Not after `start`: the window
    /// crosses midnight and closes the next day.
    pub end: String,
    /// An IANA time zone such as `Europe/Berlin`. Default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Day")]
pub enum RawDay {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl RawDay {
    /// Days from Monday.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One IPsec tunnel whose PSK psk keeps.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tunnel")]
pub struct RawTunnel {
    /// The name psk shows and `psk show` takes. Without `id`, it must be
    /// the tunnel's name at Cloudflare: psk finds the id by listing the
    /// account's tunnels and records it in the state.
    pub name: String,
    /// The Cloudflare IPsec tunnel id: 32 hexadecimal characters.
    #[serde(default)]
    pub id: Option<String>,
    /// The rotation policy; see `policies`.
    #[serde(default)]
    pub policy: Option<String>,
    /// The location this tunnel reaches. Tunnels of one site are redundant
    /// paths and rotate one per apply unless the policy allows more.
    #[serde(default)]
    pub site: Option<String>,
    /// The Cloudflare account id, for a top-level tunnel outside the
    /// default account.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The account, by its name under `accounts` (or its id), for a
    /// top-level tunnel outside the default account.
    #[serde(default)]
    pub account: Option<String>,
}
