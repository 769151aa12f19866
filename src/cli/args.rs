//! The arguments more than one command takes, and every value parser.
//!
//! Two stages, as in ripgrep's low and high arguments: the groups below
//! ([`Files`], [`Api`], [`Color`], [`Verbosity`]) are what clap reads (their
//! doc comments are the help text), [`Global`] is what a command works with
//! once the flags are resolved. A command takes a group only when it uses
//! it, so `psk schema --sandbox` is a usage error rather than a flag that
//! does nothing; every group has its own help heading, so each command's
//! help has one layout. A parser's error is the message clap prints after
//! `invalid value`, so each says what a good value looks like. Flags that
//! only one command takes live in that command's file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, ValueEnum};

use crate::cloudflare::{ClientOptions, RateLimit};
use crate::config::Config;
use crate::policy::Span;
use crate::reconcile::PlanOptions;
use crate::state::remote::RemoteError;
use crate::state::{Location, State};

/// The help heading of psk.yaml, the state and the state's guards.
pub const FILES: &str = "Files";
/// The help heading of how psk reaches Cloudflare (or the sandbox).
pub const API: &str = "Cloudflare API";

/// Where shared flags sit in a command's help: the command's own options
/// first (clap numbers them from 0 in declaration order), then these, so
/// every command's help has one layout whatever order its struct flattens
/// them in.
const ORDER_FILES: usize = 1000;
const ORDER_API: usize = 2000;
const ORDER_LAST: usize = 9000;

/// `-v`: the one flag every command takes, since every command can log.
#[derive(Debug, Args)]
pub struct Verbosity {
    /// Log what psk does on stderr: -v info (state, lock, the API's URL
    /// and proxy, dry-run verdicts, retries), -vv debug (each HTTP request, rate-limiter
    /// waits), -vvv trace. Without it, PSK_LOG=LEVEL (off, error, warn,
    /// info, debug, trace). Never logs a PSK, a credential or a body.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count, display_order = ORDER_LAST)]
    pub verbose: u8,

    /// Print help.
    #[arg(short = 'h', long = "help", global = true, action = clap::ArgAction::Help, display_order = ORDER_LAST + 1)]
    help: Option<bool>,
}

/// `-c/--config` and `--state`: for the commands that read psk.yaml.
#[derive(Debug, Args)]
pub struct Files {
    /// The desired-state file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "psk.yaml",
        env = "PSK_CONFIG",
        help_heading = FILES,
        display_order = ORDER_FILES
    )]
    config: PathBuf,

    /// Use this state instead of the one psk.yaml names: a file, or
    /// s3://BUCKET/PATH/psk.state.json.
    #[arg(long = "state", value_name = "FILE", help_heading = FILES, display_order = ORDER_FILES + 1)]
    state: Option<PathBuf>,
}

/// `--sandbox` and the network options: for the commands that talk to
/// Cloudflare (plan, apply, import, status).
#[derive(Debug, Args)]
pub struct Api {
    /// Talk to a sandbox started in-process on a free loopback port instead
    /// of Cloudflare: the whole flow with no account and no token.
    #[arg(long, help_heading = API, display_order = ORDER_API)]
    sandbox: bool,

    /// Give up connecting to the API after this long (e.g. 5s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = parse_duration, help_heading = API, display_order = ORDER_API + 1)]
    connect_timeout: Duration,

    /// Give up on one API request (connect, send, answer) after this long;
    /// it is then retried like a dropped connection.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration, help_heading = API, display_order = ORDER_API + 2)]
    request_timeout: Duration,

    /// Retries of a failed request (408, 409, 429, 5xx, a dropped or refused
    /// connection, a timeout) after the first try, with exponential backoff
    /// and jitter, or as long as Cloudflare's Retry-After says.
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = API, display_order = ORDER_API + 3)]
    retries: u32,

    /// Most API requests psk sends in any window of this length, across all
    /// its concurrent requests and retries: an exact any-window limit, so a
    /// run that fits goes at full speed. The default is Cloudflare's limit
    /// per token, which a 429 turns into a 5-minute block of the whole
    /// token. A stricter quota the API announces (`Ratelimit-Policy`), or
    /// fewer requests left (`Ratelimit`), wins.
    #[arg(long, value_name = "N/DURATION", default_value = "1200/5m", help_heading = API, display_order = ORDER_API + 4)]
    rate_limit: RateLimit,

    /// The per-IP ceiling: psk paces its requests at 95% of it. The
    /// default is Cloudflare's 200 requests a second per client address.
    #[arg(long, value_name = "N/DURATION", default_value = "200/1", help_heading = API, display_order = ORDER_API + 5)]
    ip_limit: RateLimit,

    /// Most API requests in flight at once (per-tunnel dry runs, rotations
    /// in apply, chunks of a bulk PSK set). The default reaches the per-IP
    /// ceiling at 300 ms per answer. Tunnels of one site never rotate at
    /// the same time.
    #[arg(id = "api_parallelism", long = "parallelism", value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = API, display_order = ORDER_API + 6)]
    parallelism: u32,

    /// The in-process sandbox's far ends, as `psk sandbox` takes them.
    #[command(flatten)]
    far_end: super::far_end::FarEnd,
}

/// `--no-color`: for the commands that colour a plan (plan, apply,
/// show-plan).
#[derive(Debug, Args)]
pub struct Color {
    /// No colour in human output (also: the NO_COLOR environment variable).
    /// Without it, colour only when stdout is a terminal.
    #[arg(long, display_order = ORDER_LAST - 1)]
    no_color: bool,
}

/// Options a command works with, resolved from the groups it takes; a
/// group it does not take leaves its defaults, which it never reads.
#[derive(Debug)]
pub struct Global {
    pub config: PathBuf,
    pub state: Option<PathBuf>,
    pub sandbox: bool,
    /// The in-process sandbox's far ends (only with `sandbox`).
    pub far_end: super::far_end::FarEnd,
    pub network: Network,
    pub no_color: bool,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            config: PathBuf::from("psk.yaml"),
            state: None,
            sandbox: false,
            far_end: Default::default(),
            network: Network::default(),
            no_color: false,
        }
    }
}

impl Global {
    /// A command that reads psk.yaml and the state.
    pub fn files(files: &Files) -> Self {
        Global {
            config: files.config.clone(),
            state: files.state.clone(),
            ..Global::default()
        }
    }

    /// The command talks to Cloudflare too.
    pub fn api(self, api: &Api) -> Self {
        Global {
            sandbox: api.sandbox,
            far_end: api.far_end.clone(),
            network: Network {
                connect_timeout: api.connect_timeout,
                request_timeout: api.request_timeout,
                retries: api.retries,
                rate_limit: api.rate_limit,
                ip_limit: api.ip_limit,
                parallelism: api.parallelism as usize,
            },
            ..self
        }
    }

    /// The command colours its output.
    pub fn color(self, color: &Color) -> Self {
        Global {
            no_color: color.no_color,
            ..self
        }
    }

    /// Options that mean nothing without another: the sandbox's far ends
    /// without `--sandbox` would be silently ignored against Cloudflare.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.sandbox && !self.far_end.is_default() {
            anyhow::bail!(
                "the tunnel health options (--health-delay, --far-end-follows, ...) set up the in-process sandbox; add --sandbox, or leave them out to talk to Cloudflare"
            );
        }
        Ok(())
    }

    /// Where the state lives: `--state` wins over psk.yaml's `state:`
    /// (a file there is relative to psk.yaml's folder). Parsed here, once.
    pub fn state_location(&self, config: &Config) -> Result<Location, RemoteError> {
        match &self.state {
            Some(given) => Location::given(given),
            None => Location::resolve(config.path.parent().unwrap_or(Path::new("")), &config.state),
        }
    }
}

/// The global network flags: timeouts, retries, pace and parallelism.
#[derive(Debug, Clone)]
pub struct Network {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Retries after the first try.
    pub retries: u32,
    pub rate_limit: RateLimit,
    pub ip_limit: RateLimit,
    pub parallelism: usize,
}

impl Default for Network {
    fn default() -> Self {
        let o = ClientOptions::default();
        Network {
            connect_timeout: o.connect_timeout,
            request_timeout: o.request_timeout,
            retries: o.retry.max_attempts - 1,
            rate_limit: o.rate_limit,
            ip_limit: o.ip_limit,
            parallelism: o.parallelism,
        }
    }
}

impl Network {
    /// Client options from these flags and the environment
    /// (`CLOUDFLARE_BASE_URL`, `PSK_TEST_NO_RETRY_DELAY`).
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::from_env();
        o.connect_timeout = self.connect_timeout;
        o.request_timeout = self.request_timeout;
        o.retry.max_attempts = self.retries.saturating_add(1);
        o.rate_limit = self.rate_limit;
        o.ip_limit = self.ip_limit;
        o.parallelism = self.parallelism;
        o.announce_waits = true;
        o
    }
}

/// `--new-state` and `--foreign-state`, shared by the commands that may
/// start or rewrite a state: plan, apply and import.
#[derive(Debug, Args, Default)]
pub struct StateOverrides {
    /// Start a new state here although the backup or lock file of a state
    /// that is now missing is beside it. Restore that state instead if you
    /// can: without it every live key on Cloudflare is replaced (or must be
    /// adopted with `psk import`).
    #[arg(long, help_heading = FILES, display_order = ORDER_FILES + 2)]
    pub new_state: bool,

    /// Use a state that shares no account or no tunnel with psk.yaml. Only
    /// when psk.yaml really replaces that whole fleet: every record in the
    /// state is then planned as no longer in psk.yaml.
    #[arg(long, help_heading = FILES, display_order = ORDER_FILES + 3)]
    pub foreign_state: bool,
}

/// `--replace` and `--target`, shared by plan and apply.
#[derive(Debug, Args, Default)]
pub struct Selection {
    /// Rotate this tunnel now whatever its policy says (repeatable).
    #[arg(long, value_name = "NAME")]
    replace: Vec<String>,

    /// Plan only this tunnel (repeatable). For exceptional use: the plan
    /// then hides other tunnels that are due.
    #[arg(long, value_name = "NAME")]
    target: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.target.is_empty()
    }

    /// Checks every name against psk.yaml (and the state, for `--target`,
    /// which may name a tunnel to forget).
    pub fn options(&self, config: &Config, state: Option<&State>) -> anyhow::Result<PlanOptions> {
        let known = |n: &str| {
            config.tunnel_by_name(n).is_some() || config.unresolved.iter().any(|u| u.name == n)
        };
        for n in &self.replace {
            if !known(n) {
                bail!(
                    "--replace {n}: no tunnel named `{n}` in {}{}",
                    config.path.display(),
                    config.did_you_mean(n)
                );
            }
        }
        for n in &self.target {
            if !known(n) && state.and_then(|s| s.find_by_name(n)).is_none() {
                bail!(
                    "--target {n}: no tunnel named `{n}` in {} or in the state{}",
                    config.path.display(),
                    config.did_you_mean(n)
                );
            }
        }
        Ok(PlanOptions {
            replace: self.replace.iter().cloned().collect(),
            target: (!self.target.is_empty())
                .then(|| self.target.iter().cloned().collect::<BTreeSet<_>>()),
            ..PlanOptions::default()
        })
    }
}

/// `--lock-timeout`, for the commands that write the state.
#[derive(Debug, Args, Default)]
pub struct LockWait {
    /// How long to wait for another psk holding the state lock (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_lock_timeout, help_heading = FILES, display_order = ORDER_FILES + 4)]
    lock_timeout: Option<Duration>,
}

impl LockWait {
    /// How long to wait; without the flag, not at all.
    pub fn timeout(&self) -> Duration {
        self.lock_timeout.unwrap_or_default()
    }
}

/// How a plan is printed, by `plan` and `show-plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Markdown,
    Json,
}

/// `--forecast`: a span, or none for `0`.
#[derive(Debug, Clone, Copy)]
pub struct Forecast(pub Option<Span>);

/// `--connect-timeout` and `--request-timeout`: seconds (`90`, `0.5`) or a
/// duration with a unit (`5s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if let Ok(secs) = t.parse::<f64>() {
        (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
    } else {
        t.parse::<Span>()
            .ok()
            .and_then(|span| u64::try_from(span.seconds()).ok())
            .map(Duration::from_secs)
    };
    match d {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "`{s}` is not a duration; use seconds like 30 or 0.5, or a number with a unit like 5s or 2m"
        )),
    }
}

/// `--lock-timeout` values: psk durations (`30s`, `5m`), or `0`.
pub fn parse_lock_timeout(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    s.parse::<Span>()
        .map(|span| Duration::from_secs(span.seconds() as u64))
        .map_err(|e| e.to_string())
}

/// `--at`: an RFC 3339 instant, a date meaning its midnight UTC, or a
/// span from now (`+100d`, `-2h`), so scripts need no `date -d` (GNU only).
pub fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    parse_at_from(s, Utc::now())
}

/// [`parse_at`], with "now" given.
pub fn parse_at_from(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if t.starts_with("--") {
        // `--at --offline`: the flag's value is missing.
        return Err(format!(
            "`{s}` is not a time: --at needs one, like 2027-01-31 or +100d"
        ));
    }
    if let Some((sign, span)) = t
        .strip_prefix('+')
        .map(|r| (1, r))
        .or_else(|| t.strip_prefix('-').map(|r| (-1, r)))
    {
        let span = span.parse::<Span>().map_err(|e| {
            format!("`{s}`: {e}; a time from now is + or - and a duration, like +100d or -2h")
        })?;
        return now
            .checked_add_signed(span.as_delta() * sign)
            .ok_or_else(|| format!("`{s}` is out of range"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(t) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "`{s}` is not a time; use RFC 3339 like 2027-01-31T00:00:00Z, a date like 2027-01-31, or a time from now like +100d"
    ))
}

/// `--expires-in`: a span like `24h`.
pub fn parse_span(s: &str) -> Result<Span, String> {
    s.parse::<Span>().map_err(|e| e.to_string())
}

/// `--forecast`: a span like `14d`, or `0` for no forecast.
pub fn parse_forecast(s: &str) -> Result<Forecast, String> {
    if s.trim().trim_end_matches(['s', 'm', 'h', 'd', 'w']) == "0" {
        return Ok(Forecast(None));
    }
    parse_span(s).map(|span| Forecast(Some(span)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_times_dates_and_spans_from_now() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s| parse_at_from(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("+100d").unwrap(), "2027-03-07T10:00:00+00:00");
        assert_eq!(at("+2h").unwrap(), "2026-11-27T12:00:00+00:00");
        assert_eq!(at("+1w2d").unwrap(), "2026-12-06T10:00:00+00:00");
        assert_eq!(at("-7d").unwrap(), "2026-11-20T10:00:00+00:00");
        assert_eq!(at("2027-01-31").unwrap(), "2027-01-31T00:00:00+00:00");
        assert_eq!(
            at("2027-01-31T08:00:00+01:00").unwrap(),
            "2027-01-31T07:00:00+00:00"
        );
        let e = at("+100").unwrap_err();
        assert!(e.contains("like +100d"), "{e}");
        assert!(at("+0d").is_err(), "a zero span is refused as in psk.yaml");
        assert!(at("--offline").unwrap_err().contains("needs one"));
        let e = at("tomorrow").unwrap_err();
        assert!(e.contains("+100d"), "{e}");
    }

    #[test]
    fn lock_timeouts_parse() {
        assert_eq!(parse_lock_timeout("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_lock_timeout("30s").unwrap(), Duration::from_secs(30));
        assert!(parse_lock_timeout("soon").is_err());
    }
}
