//! The arguments more than one command takes, and every value parser.
//!
//! Two stages, as in ripgrep's low and high arguments: [`GlobalArgs`] is
//! what clap reads (its doc comments are the help text), [`Global`] is what
//! a command works with once the flags are resolved. A parser's error is
//! the message clap prints after `invalid value`, so each says what a good
//! value looks like. Flags that only one command takes live in that
//! command's file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, ValueEnum};

use crate::cloudflare::{ClientOptions, RateLimit};
use crate::config::Config;
use crate::policy::Span;
use crate::reconcile::PlanOptions;
use crate::state::State;

/// The flags every command takes, as clap reads them.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The desired-state file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "psk.yaml",
        env = "PSK_CONFIG"
    )]
    config: PathBuf,

    /// Use this state file instead of the one psk.yaml names.
    #[arg(long = "state", global = true, value_name = "FILE")]
    state: Option<PathBuf>,

    /// Talk to a sandbox started in-process on a free loopback port instead
    /// of Cloudflare: the whole flow with no account and no token.
    #[arg(long, global = true)]
    sandbox: bool,

    /// Give up connecting to the API after this long (e.g. 5s, 1m).
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s",
          value_parser = parse_duration, help_heading = "Network")]
    connect_timeout: Duration,

    /// Give up on one API request (connect, send, answer) after this long;
    /// it is then retried like a dropped connection.
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration, help_heading = "Network")]
    request_timeout: Duration,

    /// Retries of a failed request (408, 409, 429, 5xx, a dropped or refused
    /// connection, a timeout) after the first try, with exponential backoff
    /// and jitter, or as long as Cloudflare's Retry-After says.
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 3,
        help_heading = "Network"
    )]
    retries: u32,

    /// Most API requests psk sends in any window of this length, across all
    /// its concurrent requests and retries: an exact any-window limit, so a
    /// run that fits goes at full speed. The default is Cloudflare's limit
    /// per token, which a 429 turns into a 5-minute block of the whole
    /// token. A stricter quota the API announces (`Ratelimit-Policy`), or
    /// fewer requests left (`Ratelimit`), wins.
    #[arg(
        long,
        global = true,
        value_name = "N/DURATION",
        default_value = "1200/5m",
        help_heading = "Network"
    )]
    rate_limit: RateLimit,

    /// The per-IP ceiling: psk paces its requests at 95% of it. The
    /// default is Cloudflare's 200 requests a second per client address.
    #[arg(
        long,
        global = true,
        value_name = "N/DURATION",
        default_value = "200/1",
        help_heading = "Network"
    )]
    ip_limit: RateLimit,

    /// Most API requests in flight at once (per-tunnel dry runs, rotations
    /// in apply, chunks of a bulk PSK set). The default reaches the per-IP
    /// ceiling at 300 ms per answer. Tunnels of one site never rotate at
    /// the same time.
    #[arg(id = "api_parallelism", long = "parallelism", global = true, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = "Network")]
    parallelism: u32,

    /// No colour in human output (also: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    no_color: bool,

    /// Log what psk does on stderr: -v info (state, lock, the API's URL
    /// and proxy, dry-run verdicts, retries), -vv debug (each HTTP request, rate-limiter
    /// waits), -vvv trace. Without it, PSK_LOG=LEVEL (off, error, warn,
    /// info, debug, trace). Never logs a PSK, a credential or a body.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// The options commands work with (`-v` is the logger's, read apart).
    pub fn resolve(self) -> Global {
        Global {
            config: self.config,
            state: self.state,
            sandbox: self.sandbox,
            network: Network {
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                retries: self.retries,
                rate_limit: self.rate_limit,
                ip_limit: self.ip_limit,
                parallelism: self.parallelism as usize,
            },
            no_color: self.no_color,
        }
    }
}

/// Options every command takes, resolved.
#[derive(Debug)]
pub struct Global {
    pub config: PathBuf,
    pub state: Option<PathBuf>,
    pub sandbox: bool,
    pub network: Network,
    pub no_color: bool,
}

impl Global {
    /// `--state` wins over the state file psk.yaml names.
    pub fn state_path(&self, config: &Config) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| config.state_path.clone())
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
    #[arg(long)]
    pub new_state: bool,

    /// Use a state that shares no account or no tunnel with psk.yaml. Only
    /// when psk.yaml really replaces that whole fleet: every record in the
    /// state is then planned as no longer in psk.yaml.
    #[arg(long)]
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
    #[arg(long, value_name = "DURATION", value_parser = parse_lock_timeout)]
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

/// `--at`: an RFC 3339 instant, or a date meaning its midnight UTC.
pub fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "`{s}` is not a time; use RFC 3339 like 2027-01-31T00:00:00Z, or a date like 2027-01-31"
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

/// The sandbox's `--fail-rate` and `--drop-rate`: a share from 0 to 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "`{s}` is not a share; use a number from 0 to 1, like 0.1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_timeouts_parse() {
        assert_eq!(parse_lock_timeout("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_lock_timeout("30s").unwrap(), Duration::from_secs(30));
        assert!(parse_lock_timeout("soon").is_err());
    }
}
