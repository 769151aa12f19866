//! What psk asks Cloudflare before it plans, and what the answers mean.
//!
//! A plan made online stands on two questions: which tunnels exist and
//! when each PSK was last made ([`refresh`], which also gives tunnels named
//! by name their ids, through [`crate::reconcile::resolve_names`]), and
//! whether Cloudflare would accept each rotation ([`dry_run`]). Both are
//! domain rules, not command line: which tunnels must be found, and which
//! failed dry run is Cloudflare saying "no" rather than a request that
//! failed in passing. So they live here, with typed errors; the commands
//! add what the user should do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::cloudflare::{ApiError, BulkOutcome, BulkResult, Client, PskEntry};
use crate::config::Config;
use crate::health::{PathHealth, NOW_WINDOW_SECONDS};
use crate::policy::Generator;
use crate::reconcile::{resolve_names, Action, DryRun, NameError, Plan, Remote};
use crate::tunnel::TunnelKey;

/// Why a refresh could not give the planner Cloudflare's view.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("cannot list the IPsec tunnels of account {account}")]
    List {
        account: String,
        #[source]
        source: ApiError,
    },
    /// A name in psk.yaml that Cloudflare's list does not settle.
    #[error(transparent)]
    Names(#[from] Box<NameError>),
    /// Tunnels of psk.yaml Cloudflare does not have, one line each.
    #[error(
        "{} tunnel{} in {} {} not found at Cloudflare:\n{}\nCheck the ids and account ids in psk.yaml; psk does not create tunnels",
        .missing.len(),
        if .missing.len() == 1 { "" } else { "s" },
        .path.display(),
        if .missing.len() == 1 { "was" } else { "were" },
        .missing.join("\n")
    )]
    Missing { path: PathBuf, missing: Vec<String> },
}

/// What a refresh and its dry runs report as they go, so a long plan is
/// not minutes of blank screen (`cli::progress` shows it). Every method
/// has a silent default.
pub trait Watch: Sync {
    /// About to list the tunnels of `account`.
    fn listing(&self, _account: &str) {}
    /// `account` lists `tunnels` IPsec tunnels.
    fn listed(&self, _account: &str, _tunnels: usize) {}
    /// About to dry-run `total` PSK changes.
    fn dry_runs(&self, _total: usize) {}
    /// The dry run of tunnel `name` has its answer.
    fn answered(&self, _name: &str) {}
}

/// A [`Watch`] that shows nothing.
pub struct Silent;

impl Watch for Silent {}

/// One list call per account; every tunnel of psk.yaml must be there.
/// Tunnels named only by name get their ids from the list.
pub async fn refresh(client: &Client, config: &mut Config) -> Result<Remote, RefreshError> {
    refresh_watched(client, config, &Silent).await
}

/// [`refresh`], reporting each account to `watch`.
pub async fn refresh_watched(
    client: &Client,
    config: &mut Config,
    watch: &dyn Watch,
) -> Result<Remote, RefreshError> {
    let mut remote = Remote::default();
    for account in config.accounts() {
        watch.listing(&account);
        let tunnels = client
            .list_tunnels(&account)
            .await
            .map_err(|source| RefreshError::List {
                account: account.clone(),
                source,
            })?;
        tracing::info!(
            account = %account,
            tunnels = tunnels.len(),
            "listed the account's IPsec tunnels"
        );
        watch.listed(&account, tunnels.len());
        for t in tunnels {
            remote.tunnels.insert(TunnelKey::new(&account, &t.id), t);
        }
    }
    resolve_names(config, None, Some(&remote))?;
    check_listed(config, &remote)?;
    read_health(client, config, &mut remote, client.cloudflare_latest()).await;
    Ok(remote)
}

/// Lists the accounts that still hold records in `state` but are no longer
/// in psk.yaml, when this token can: a tunnel psk.yaml dropped together with
/// its account is then forgotten once Cloudflare no longer lists it, as any
/// other, instead of being kept forever for want of asking. An account the
/// token cannot list is left out (logged), and its records stay.
pub async fn list_departed(
    client: &Client,
    config: &Config,
    state: Option<&crate::state::State>,
    remote: &mut Remote,
) {
    let asked: BTreeSet<String> = config.accounts().into_iter().collect();
    let departed: BTreeSet<&str> = (state.iter())
        .flat_map(|s| s.tunnels.keys())
        .map(|k| k.account_id.as_str())
        .filter(|a| !asked.contains(*a))
        .collect();
    for account in departed {
        match client.list_tunnels(account).await {
            Ok(tunnels) => {
                tracing::info!(%account, tunnels = tunnels.len(), "listed an account psk.yaml no longer names, for its records in the state");
                for t in tunnels {
                    remote.tunnels.insert(TunnelKey::new(account, &t.id), t);
                }
                remote.departed.insert(account.to_string());
            }
            Err(e) => {
                tracing::warn!(%account, error = %e, "cannot list an account psk.yaml no longer names; its records stay in the state");
            }
        }
    }
}

/// `verify`'s preflight needs the health now of every path of each site
/// where some policy verifies with health checks: one GraphQL query per
/// account, over the last [`NOW_WINDOW_SECONDS`]. A failed query leaves
/// those paths of unknown health, which holds their siblings back: psk
/// rotates nothing it cannot show to be safe.
async fn read_health(
    client: &Client,
    config: &Config,
    remote: &mut Remote,
    now: chrono::DateTime<chrono::Utc>,
) {
    let verified_sites: BTreeSet<&str> = config
        .tunnels
        .iter()
        .filter(|t| {
            let v = config.policy_of(t).verify.as_ref();
            v.is_some_and(|v| v.health_checks)
        })
        .filter_map(|t| t.site.as_deref())
        .collect();
    // Per account: the tunnels to ask about, by their name at Cloudflare.
    let mut asked: BTreeMap<String, BTreeMap<String, TunnelKey>> = BTreeMap::new();
    for t in &config.tunnels {
        if !t
            .site
            .as_deref()
            .is_some_and(|s| verified_sites.contains(s))
        {
            continue;
        }
        let key = t.key();
        let name = remote.tunnels.get(&key).map_or(&t.name, |r| &r.name);
        asked
            .entry(t.account_id.clone())
            .or_default()
            .insert(name.clone(), key);
    }
    let start = now - chrono::TimeDelta::seconds(NOW_WINDOW_SECONDS);
    for (account, tunnels) in asked {
        let names: Vec<String> = tunnels.keys().cloned().collect();
        let answer = client.tunnel_health(&account, &names, start, now).await;
        if let Err(e) = &answer {
            tracing::warn!(account = %account, error = %e, "tunnel health unknown");
        }
        for (name, key) in tunnels {
            let health = match &answer {
                Ok(h) => PathHealth::judge(h.get(&name)),
                Err(e) => PathHealth::Unknown(e.to_string()),
            };
            tracing::info!(tunnel = %name, health = %health.describe(), "tunnel health");
            remote.health.insert(key, health);
        }
    }
}

/// Every tunnel of psk.yaml is in `remote`: those it lists by id, and
/// those named by name only (which the list would have resolved).
fn check_listed(config: &Config, remote: &Remote) -> Result<(), RefreshError> {
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
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RefreshError::Missing {
            path: config.path.clone(),
            missing,
        })
    }
}

/// Asks Cloudflare to validate every PSK-changing action without doing it,
/// `--parallelism` at a time. Results land on their own actions, so the
/// plan reads the same whatever order the answers came in.
pub async fn dry_run(client: &Client, config: &Config, plan: &mut Plan) {
    dry_run_watched(client, config, plan, &Silent).await;
}

/// [`dry_run`], reporting each answer to `watch`.
pub async fn dry_run_watched(client: &Client, config: &Config, plan: &mut Plan, watch: &dyn Watch) {
    let by_key = config.tunnels_by_key();
    let mut generated = Vec::new();
    let mut set_by_account: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, a) in plan.actions.iter().enumerate() {
        if !a.kind.changes_psk() {
            continue;
        }
        let generator = by_key
            .get(&a.key)
            .map_or(Generator::Cloudflare, |t| config.policy_of(t).generator);
        match generator {
            Generator::Cloudflare => generated.push((i, a.key.clone(), a.name.clone())),
            Generator::Local => set_by_account
                .entry(a.key.account_id.clone())
                .or_default()
                .push(i),
        }
    }
    let total = generated.len() + set_by_account.values().map(Vec::len).sum::<usize>();
    watch.dry_runs(total);
    dry_run_generate(client, plan, generated, watch).await;
    for (account, idxs) in set_by_account {
        dry_run_set(client, plan, &account, idxs, watch).await;
    }
}

/// `cloudflare` keys: one `psk_generate` with `validate_only` per tunnel.
async fn dry_run_generate(
    client: &Client,
    plan: &mut Plan,
    todo: Vec<(usize, TunnelKey, String)>,
    watch: &dyn Watch,
) {
    let results =
        crate::cloudflare::concurrently(client.parallelism(), todo, |(i, key, name)| async move {
            let r = client
                .psk_generate(&key.account_id, &key.tunnel_id, true)
                .await;
            watch.answered(&name);
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
}

/// `local` keys: the bulk set with `validate_only`, for one account, with
/// throwaway keys of the shape apply will send (never stored or shown).
async fn dry_run_set(
    client: &Client,
    plan: &mut Plan,
    account: &str,
    idxs: Vec<usize>,
    watch: &dyn Watch,
) {
    let entries: Vec<PskEntry> = idxs
        .iter()
        .map(|i| PskEntry {
            tunnel_id: plan.actions[*i].key.tunnel_id.clone(),
            psk: crate::apply::new_local_psk(),
        })
        .collect();
    let outcome = client.set_psks(account, &entries, true).await;
    for i in idxs {
        plan.actions[i].dry_run = verdict_of_set(&outcome, &plan.actions[i].key.tunnel_id);
        log_verdict(&plan.actions[i], "local");
        watch.answered(&plan.actions[i].name);
    }
}

/// What the bulk set's answer says about one tunnel.
fn verdict_of_set(outcome: &BulkOutcome, id: &str) -> DryRun {
    match outcome.for_tunnel(id) {
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
    }
}

/// One line per dry run: its tunnel and verdict, with Cloudflare's message
/// (already shown in the plan) when there is one.
fn log_verdict(a: &Action, generator: &str) {
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
