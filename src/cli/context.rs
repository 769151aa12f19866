//! What several commands share: loading the files, reaching Cloudflare (or
//! the sandbox), refreshing, and dry-running a plan.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use chrono::{DateTime, NaiveDate, Utc};

use crate::cloudflare::{ApiError, BulkResult, PskEntry};
use crate::cloudflare::{Client, ClientOptions, Credentials, RateLimit};
use crate::config::Config;
use crate::policy::Generator;
use crate::reconcile::{resolve_names, DryRun, Plan, Remote};
use crate::sandbox::{self, Running, Sandbox, SandboxOptions};
use crate::state::{self, State, StateLock};

/// Options every command takes.
#[derive(Debug)]
pub struct Global {
    pub config: PathBuf,
    pub state: Option<PathBuf>,
    pub sandbox: bool,
    pub network: Network,
    pub no_color: bool,
}

/// The global network flags: timeouts, retries, pace and parallelism.
#[derive(Debug, Clone)]
pub struct Network {
    pub connect_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    /// Retries after the first try.
    pub retries: u32,
    pub rate_limit: RateLimit,
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
        o.parallelism = self.parallelism;
        o.announce_waits = true;
        o
    }
}

impl Global {
    /// Reads psk.yaml. Tunnels named only by name get the id the state
    /// recorded for them (when it did), so `--offline` can plan them.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(&self.config)?;
        tracing::info!(
            path = %config.path.display(),
            tunnels = config.tunnels.len(),
            by_name = config.unresolved.len(),
            "psk.yaml loaded"
        );
        if !config.unresolved.is_empty() {
            // A state that does not load is reported by the command itself.
            if let Ok(Some(state)) = state::load(&self.state_path(&config)) {
                resolve_names(&mut config, Some(&state), None)?;
            }
        }
        Ok(config)
    }

    pub fn state_path(&self, config: &Config) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| config.state_path.clone())
    }

    /// Takes the state lock for `operation` (waiting up to `timeout` for
    /// another psk), then loads the state for writing: any journal an
    /// interrupted apply left is folded in first.
    pub fn lock_state(
        &self,
        config: &Config,
        operation: &str,
        timeout: Option<std::time::Duration>,
    ) -> anyhow::Result<Writable> {
        let path = self.state_path(config);
        let lock = StateLock::acquire(&path, operation, timeout.unwrap_or_default())?;
        let state = state::load_for_write(&path, &lock)?;
        Ok(Writable { path, lock, state })
    }

    /// A client for Cloudflare, or for an in-process sandbox under
    /// `--sandbox` (returned too, so it lives as long as the client).
    pub async fn connect(
        &self,
        config: &Config,
        state: Option<&State>,
    ) -> anyhow::Result<(Client, Option<Running>)> {
        if self.sandbox {
            let sb = Sandbox::from_config(config, state, &SandboxOptions::default())
                .context("cannot start the sandbox")?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot bind the sandbox to a loopback port")?;
            let running = sandbox::spawn(listener, Arc::new(sb))?;
            let options = ClientOptions {
                base_url: running.base_url(),
                ..self.network.client_options()
            };
            let client = Client::new(&Credentials::Token("sandbox".into()), options)?;
            return Ok((client, Some(running)));
        }
        let credentials = Credentials::from_env()?;
        let client = Client::new(&credentials, self.network.client_options())?;
        Ok((client, None))
    }
}

/// Reads the state, or `None` when there is none yet.
pub fn load_state(path: &std::path::Path) -> anyhow::Result<Option<State>> {
    Ok(state::load(path)?)
}

/// Reads the state for a command that needs one (show, export, deliver).
pub fn require_state(path: &std::path::Path) -> anyhow::Result<State> {
    load_state(path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "there is no state file at {}; run `psk apply` first",
            path.display()
        )
    })
}

/// One list call per account; every tunnel of psk.yaml must be there.
/// Tunnels named only by name get their ids from the list.
pub async fn refresh(client: &Client, config: &mut Config) -> anyhow::Result<Remote> {
    let mut remote = Remote::default();
    for account in config.accounts() {
        let tunnels = client
            .list_tunnels(&account)
            .await
            .with_context(|| format!("cannot list the IPsec tunnels of account {account}"))?;
        tracing::info!(
            account = %account,
            tunnels = tunnels.len(),
            "listed the account's IPsec tunnels"
        );
        for t in tunnels {
            remote
                .tunnels
                .insert(crate::tunnel::TunnelKey::new(&account, &t.id), t);
        }
    }
    resolve_names(config, None, Some(&remote))?;
    let mut missing: Vec<String> = config
        .tunnels
        .iter()
        .filter(|t| !remote.tunnels.contains_key(&t.key()))
        .map(|t| format!("  {} (id {}) in account {}", t.name, t.id, t.account_id))
        .collect();
    missing.extend(config.unresolved.iter().map(|u| {
        format!(
            "  {} (named by name, no id; line {}) in account {}",
            u.name, u.line, u.account_id
        )
    }));
    if !missing.is_empty() {
        bail!(
            "{} tunnel{} in {} {} not found at Cloudflare:\n{}\nCheck the ids and account ids in psk.yaml; psk does not create tunnels",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            config.path.display(),
            if missing.len() == 1 { "was" } else { "were" },
            missing.join("\n")
        );
    }
    Ok(remote)
}

/// Asks Cloudflare to validate every PSK-changing action without doing it,
/// `--parallelism` at a time. Results land on their own actions, so the
/// plan reads the same whatever order the answers came in.
pub async fn dry_run(client: &Client, config: &Config, plan: &mut Plan) {
    let by_key = config.tunnels_by_key();
    let generator = |key: &crate::tunnel::TunnelKey| {
        by_key
            .get(key)
            .map_or(Generator::Cloudflare, |t| config.policy_of(t).generator)
    };
    let todo: Vec<(usize, crate::tunnel::TunnelKey)> = plan
        .actions
        .iter()
        .enumerate()
        .filter(|(_, a)| a.kind.changes_psk() && generator(&a.key) == Generator::Cloudflare)
        .map(|(i, a)| (i, a.key.clone()))
        .collect();
    let results =
        crate::cloudflare::concurrently(client.parallelism(), todo, |(i, key)| async move {
            let r = client
                .psk_generate(&key.account_id, &key.tunnel_id, true)
                .await;
            (i, r)
        })
        .await;
    for (i, r) in results {
        plan.actions[i].dry_run = match r {
            Ok(_) => DryRun::Accepted,
            Err(e) => verdict_of_failure(&e),
        };
        log_verdict(&plan.actions[i], "cloudflare");
    }

    // `local` keys: the bulk set with `validate_only`, per account, with
    // throwaway keys of the shape apply will send (never stored or shown).
    let mut by_account: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, a) in plan.actions.iter().enumerate() {
        if a.kind.changes_psk() && generator(&a.key) == Generator::Local {
            by_account
                .entry(a.key.account_id.clone())
                .or_default()
                .push(i);
        }
    }
    for (account, idxs) in by_account {
        let entries: Vec<PskEntry> = idxs
            .iter()
            .map(|i| PskEntry {
                tunnel_id: plan.actions[*i].key.tunnel_id.clone(),
                psk: crate::apply::new_local_psk(),
            })
            .collect();
        let outcome = client.set_psks(&account, &entries, true).await;
        for i in idxs {
            plan.actions[i].dry_run = match outcome.for_tunnel(&plan.actions[i].key.tunnel_id) {
                BulkResult::Applied(_) => DryRun::Accepted,
                BulkResult::Unapplied(reason) => {
                    DryRun::Refused(format!("Cloudflare would not apply the PSK: {reason}"))
                }
                BulkResult::Failed(e) => verdict_of_failure(e),
                // An answer that skips a tunnel says nothing about it;
                // apply reports what Cloudflare says when it sends it.
                BulkResult::Unmentioned => DryRun::NoVerdict(
                    "Cloudflare's answer to the dry run did not mention this tunnel".into(),
                ),
            };
            log_verdict(&plan.actions[i], "local");
        }
    }
}

/// One line per dry run: its tunnel and verdict, with Cloudflare's message
/// (already shown in the plan) when there is one.
fn log_verdict(a: &crate::reconcile::Action, generator: &str) {
    let (verdict, message) = match &a.dry_run {
        DryRun::NotRun => return,
        DryRun::Accepted => ("accepted", None),
        DryRun::Refused(m) => ("refused", Some(m.as_str())),
        DryRun::NoVerdict(m) => ("no_verdict", Some(m.as_str())),
    };
    tracing::info!(
        tunnel = %a.name,
        tunnel_id = %a.key.tunnel_id,
        account = %a.key.account_id,
        generator,
        verdict,
        message,
        "dry run"
    );
}

/// What a failed dry run says. Cloudflare's own "no" (a 4xx with its
/// error, `success: false`) is a refusal: apply would fail the same way.
/// A dry run that failed in passing (transient, or an answer that could
/// not be read; see [`crate::cloudflare::Failure`]) is no verdict on the
/// rotation: a warning, so the reader retries rather than edits psk.yaml,
/// and apply still goes ahead.
fn verdict_of_failure(e: &ApiError) -> DryRun {
    let message = e.to_string().replace('\n', " ");
    if e.is_transient() || e.outcome_unknown() {
        DryRun::NoVerdict(format!("the dry run itself failed: {message}"))
    } else {
        DryRun::Refused(message)
    }
}

/// `--connect-timeout` and `--request-timeout`: seconds (`90`, `0.5`) or a
/// duration with a unit (`5s`, `2m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let d = if let Ok(secs) = t.parse::<f64>() {
        (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
    } else {
        t.parse::<crate::policy::Span>()
            .ok()
            .and_then(|span| u64::try_from(span.seconds()).ok())
            .map(std::time::Duration::from_secs)
    };
    match d {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "`{s}` is not a duration; use seconds like 30 or 0.5, or a number with a unit like 5s or 2m"
        )),
    }
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

/// The state as a writer holds it: locked until this is dropped.
pub struct Writable {
    pub path: PathBuf,
    pub lock: StateLock,
    /// `None` when there is no state file yet.
    pub state: Option<State>,
}

impl Writable {
    /// The state, for commands that need one to exist: `otherwise` says
    /// what to do instead (e.g. "run `psk apply` first").
    pub fn existing(self, otherwise: &str) -> anyhow::Result<(PathBuf, StateLock, State)> {
        match self.state {
            Some(state) => Ok((self.path, self.lock, state)),
            None => bail!(
                "there is no state file at {}; {otherwise}",
                self.path.display()
            ),
        }
    }
}
