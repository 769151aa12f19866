//! `psk verify`: the operator's way out of a hold left by a rotated
//! tunnel that did not come back.

use std::io::Write;

use anyhow::{anyhow, Context as _};
use chrono::Utc;
use clap::Args;

use super::args::{Global, LockWait};
use super::exit::Status;
use super::session::Session;
use crate::config::Tunnel;
use crate::state::{self, format_time};

/// Check now whether tunnels that did not come back after their new PSK
/// (a policy's `verify`) are back up, and lift the hold they put on the
/// other paths of their site. Runs the policy's checks once, as apply's
/// wait does: Cloudflare's health checks over the last `settle`, and the
/// probe. Exits 1 if any is still not back.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Tunnel names; without any, every tunnel not shown back up.
    names: Vec<String>,

    /// Lift the hold without checking: you know the path is up (or accept
    /// that its site may hang on its other paths while they rotate).
    #[arg(long)]
    accept: bool,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,

    #[command(flatten)]
    pub api: super::args::Api,
}

pub async fn run(global: &Global, args: VerifyArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let config = &session.config;
    let (_, lock, mut state) = session
        .lock("verify", &args.lock)?
        .existing("run `psk apply` first")?;
    let mut todo: Vec<Tunnel> = Vec::new();
    for n in &args.names {
        let t = config.tunnel_by_name(n).ok_or_else(|| {
            anyhow!(
                "no tunnel named `{n}` in {}{}",
                config.path.display(),
                config.did_you_mean(n)
            )
        })?;
        todo.push(t.clone());
    }
    if args.names.is_empty() {
        todo.extend(
            (config.tunnels.iter())
                .filter(|t| unverified(&state, t))
                .cloned(),
        );
    }
    let mut out = std::io::stdout().lock();
    if todo.iter().all(|t| !unverified(&state, t)) {
        let names: Vec<&str> = todo.iter().map(|t| t.name.as_str()).collect();
        match names.is_empty() {
            true => writeln!(
                out,
                "Every rotated tunnel was shown back up: nothing is held."
            )?,
            false => writeln!(
                out,
                "{}: shown back up after its last new PSK; nothing is held.",
                names.join(", ")
            )?,
        }
        return Ok(Status::Success);
    }
    let connection = match args.accept {
        true => None,
        false => Some(session.connect(Some(&state)).await?),
    };
    let mut still_down = 0;
    todo.retain(|t| unverified(&state, t));
    for t in &todo {
        let since = (state.get(&t.key()).and_then(|r| r.verification.as_ref()))
            .map(|v| v.since)
            .expect("filtered on it");
        let result = match (&connection, config.policy_of(t).verify.as_ref()) {
            (None, _) => Ok("not checked (--accept)".to_string()),
            (Some(_), None) => Err(format!(
                "its policy \"{}\" no longer sets `verify`, so there is nothing to check; `psk verify --accept {}` lifts the hold",
                t.policy, t.name
            )),
            (Some(c), Some(v)) => crate::apply::check_once(&c.client, v, t, since).await,
        };
        match result {
            Ok(how) => {
                writeln!(
                    out,
                    "{}: back up ({how}); the hold on its site is lifted",
                    t.name
                )?;
                let rec = state.entry(&t.key(), &t.name);
                rec.end_verification(Ok(()), Utc::now());
                // Each outcome is durable before the next check.
                state::save(&lock, &mut state)
                    .with_context(|| format!("cannot record that {} is back up", t.name))?;
            }
            Err(why) => {
                still_down += 1;
                writeln!(
                    out,
                    "{}: NOT BACK UP (new PSK since {}): {why}\n  its site's other paths stay held; `psk apply --replace {}` rotates it again",
                    t.name,
                    format_time(&since),
                    t.name
                )?;
            }
        }
    }
    Ok(if still_down > 0 {
        Status::Failure
    } else {
        Status::Success
    })
}

/// Whether the state says `t` got a new PSK and was not shown back up.
fn unverified(state: &state::State, t: &Tunnel) -> bool {
    (state.get(&t.key())).is_some_and(|r| r.verification.is_some())
}
