//! `psk import --terraform FILE`: the PSKs the cloudflare provider set,
//! adopted from `terraform show -json`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use super::args::{Global, LockWait, StateOverrides};
use super::exit::Status;
use super::session::{Session, Writable};
use crate::seal::{self, PskFault};
use crate::state::{self, format_time, State};
use crate::terraform::{self, Resource};
use crate::tunnel::TunnelKey;

/// Seals every PSK the file holds for a tunnel of psk.yaml, dated by
/// Cloudflare, in one state write; all or nothing.
pub async fn run(
    global: &Global,
    file: &Path,
    force: bool,
    overrides: &StateOverrides,
    wait: &LockWait,
) -> anyhow::Result<Status> {
    let mut session = Session::open(global)?;
    session.overrides(overrides);
    let resources = terraform::read(file)?;
    let config = &session.config;
    let by_key: HashMap<TunnelKey, &Resource> =
        resources.iter().map(|r| (r.key.clone(), r)).collect();

    // Which tunnels of psk.yaml the file sets a key for, checked before
    // anything is locked or asked.
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let mut without_psk = Vec::new();
    for t in &config.tunnels {
        let Some(r) = by_key.get(&t.key()) else {
            continue;
        };
        let Some(psk) = &r.psk else {
            without_psk.push(format!("{} ({})", t.name, r.address));
            continue;
        };
        match psk.rule_fault() {
            Some(PskFault::Unusable(why)) => problems.push(format!(
                "  {} ({}): cannot be the tunnel's current key: {why}",
                t.name, r.address
            )),
            Some(PskFault::Weak(why)) if !force => problems.push(format!(
                "  {} ({}): weaker than psk adopts without --force: {why}",
                t.name, r.address
            )),
            _ => found.push((t, *r)),
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} sets PSKs psk will not adopt, so it adopts none:\n{}\nRotate those tunnels with `psk apply --replace NAME`, or pass --force for weak keys",
            file.display(),
            problems.join("\n")
        );
    }
    let managed: std::collections::HashSet<TunnelKey> =
        config.tunnels.iter().map(|t| t.key()).collect();
    let elsewhere: Vec<String> = (resources.iter())
        .filter(|r| !managed.contains(&r.key))
        .map(|r| r.address.clone())
        .collect();
    if found.is_empty() {
        bail!(
            "{} sets no PSK for a tunnel of {} ({} IPsec tunnel resource{} in it{}).\nhint: psk matches resources to psk.yaml by account and tunnel id",
            file.display(),
            config.path.display(),
            resources.len(),
            if resources.len() == 1 { "" } else { "s" },
            if without_psk.is_empty() { String::new() } else { format!(", {} of them without `psk`", without_psk.len()) }
        );
    }
    for (t, r) in &found {
        if let Some(PskFault::Weak(why)) = r.psk.as_ref().and_then(|p| p.rule_fault()) {
            eprintln!(
                "warning: adopting a weak PSK for `{}` because of --force: {why}",
                t.name
            );
        }
    }

    let Writable {
        path: state_path,
        lock,
        state,
    } = session.lock("import", wait)?;
    if !force {
        let held: Vec<String> = (found.iter())
            .filter(|(t, _)| {
                state
                    .as_ref()
                    .and_then(|s| s.get(&t.key()))
                    .is_some_and(|r| r.psk.is_some())
            })
            .map(|(t, _)| format!("  {}", t.name))
            .collect();
        if !held.is_empty() {
            bail!(
                "{} already holds sealed PSKs for these tunnels, so psk imports none:\n{}\nPass --force to replace them with the ones in {}",
                state_path.display(),
                held.join("\n"),
                file.display()
            );
        }
    }
    let connection = session.connect(state.as_ref()).await?;
    let dates = dated_at_cloudflare(&connection.client, found.iter().map(|(t, _)| t.key())).await?;

    let config = &session.config;
    let mut state = state.unwrap_or_else(|| State::new(config.recipient_fingerprints()));
    let sealed_to = state.sealed_to_for(&config.recipient_fingerprints());
    let mut lines = Vec::new();
    for (t, r) in &found {
        let key = t.key();
        let Some(last) = dates.get(&key).copied().flatten() else {
            bail!(
                "Cloudflare reports no psk_metadata.last_generated_on for `{}`, so psk cannot date its PSK; nothing was imported. Rotate it with `psk apply` instead",
                t.name
            );
        };
        let psk = r.psk.as_ref().expect("found only with a PSK");
        let sealed = seal::seal(psk, &config.recipients)?;
        state
            .entry(&key, &t.name)
            .record_key(sealed, sealed_to.clone(), last);
        lines.push(format!(
            "  {} from {} (Cloudflare dates it {})",
            t.name,
            r.address,
            format_time(&last)
        ));
    }
    state::save(&lock, &mut state)?;
    drop(lock);

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Imported {} PSK{} from {}:\n{}",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        file.display(),
        lines.join("\n")
    )?;
    if !without_psk.is_empty() {
        writeln!(
            out,
            "No `psk` in Terraform for: {}.",
            without_psk.join(", ")
        )?;
    }
    if !elsewhere.is_empty() {
        writeln!(
            out,
            "Not in psk.yaml, left alone: {}.",
            elsewhere.join(", ")
        )?;
    }
    writeln!(
        out,
        "State saved to {} (serial {}).\n{} holds these keys in clear: delete it. Add `lifecycle {{ ignore_changes = [psk] }}` to the resources, or the next `terraform apply` may set the old keys again (docs/terraform.md).",
        state_path.display(),
        state.serial,
        file.display()
    )?;
    Ok(Status::Success)
}

/// Cloudflare's `last_generated_on` of each tunnel, one list call per
/// account; a tunnel Cloudflare does not list is an error.
async fn dated_at_cloudflare(
    client: &crate::cloudflare::Client,
    keys: impl Iterator<Item = TunnelKey>,
) -> anyhow::Result<HashMap<TunnelKey, Option<DateTime<Utc>>>> {
    let mut by_account: BTreeMap<String, Vec<TunnelKey>> = BTreeMap::new();
    for k in keys {
        by_account.entry(k.account_id.clone()).or_default().push(k);
    }
    let mut out = HashMap::new();
    for (account, keys) in by_account {
        let listed = client
            .list_tunnels(&account)
            .await
            .with_context(|| format!("cannot list the IPsec tunnels of account {account}"))?;
        for k in keys {
            let t = (listed.iter())
                .find(|t| t.id.eq_ignore_ascii_case(&k.tunnel_id))
                .with_context(|| {
                    format!(
                        "tunnel {} was not found in account {account} at Cloudflare; nothing was imported",
                        k.tunnel_id
                    )
                })?;
            out.insert(k, t.last_generated_on);
        }
    }
    Ok(out)
}
