//! `psk apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use chrono::Utc;
use clap::Args;

use super::context::{self, Global};
use super::plan::Selection;
use super::progress::Progress;
use super::Status;
use crate::apply;
use crate::planfile::{self, PlanFile};
use crate::reconcile;
use crate::render;
use crate::state::{parse_lock_timeout, State};

/// Rotate each due PSK: generate it (at Cloudflare, or locally for
/// `generator: local`), seal it with age and record it durably as each
/// tunnel finishes; tunnels of one site never rotate at once. With a saved plan FILE, apply
/// exactly that plan, without asking; otherwise plan now, show the plan and
/// ask for `yes`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `psk plan --out FILE`.
    #[arg(value_name = "FILE")]
    plan_file: Option<PathBuf>,

    /// Do not ask for confirmation. Required when stdin is not a terminal.
    #[arg(long)]
    auto_approve: bool,

    #[command(flatten)]
    selection: Selection,

    /// Report progress as one JSON object per line on stdout, for CI.
    #[arg(long)]
    json: bool,

    /// How long to wait for another psk holding the state lock (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_lock_timeout)]
    lock_timeout: Option<std::time::Duration>,
}

pub async fn run(global: &Global, args: ApplyArgs) -> anyhow::Result<Status> {
    let mut config = global.load_config()?;
    let super::context::Writable {
        path: state_path,
        lock: _lock,
        state,
    } = global.lock_state(&config, "apply", args.lock_timeout)?;

    let from_file = args.plan_file.is_some();
    if from_file && (!args.selection.is_empty()) {
        bail!(
            "--replace and --target shape a new plan; they cannot be used with a saved plan FILE"
        );
    }
    let mut connection = None;
    let plan = match &args.plan_file {
        Some(path) => {
            let file = PlanFile::load(path)?;
            let digest = planfile::digest_file(&config.path)
                .with_context(|| format!("cannot read {}", config.path.display()))?;
            file.check(&config, &digest, state.as_ref(), Utc::now())
                .map_err(|why| {
                    anyhow!(
                        "refusing to apply {}: {why}.\nNothing was changed. Run `psk plan --out {}` again, review it, and apply the new plan",
                        path.display(),
                        path.display()
                    )
                })?;
            file.plan
        }
        None => {
            let options = args.selection.options(&config, state.as_ref())?;
            let (client, sandbox) = global.connect(&config, state.as_ref()).await?;
            let remote = context::refresh(&client, &mut config).await?;
            let mut plan = reconcile::reconcile_with(
                &config,
                state.as_ref(),
                Some(&remote),
                Utc::now(),
                &options,
            );
            context::dry_run(&client, &config, &mut plan).await;
            connection = Some((client, sandbox));
            plan
        }
    };

    let mut out = std::io::stdout().lock();
    if args.json {
        if !from_file && !args.auto_approve {
            bail!("--json cannot ask for confirmation: pass --auto-approve, or apply a saved plan FILE");
        }
        render::json_apply_header(&plan, &mut out)?;
    } else {
        let color = render::use_color(global.no_color, std::io::stdout().is_terminal());
        render::human_styled(&plan, &mut out, color)?;
    }
    out.flush()?;
    if !plan.has_changes() {
        return Ok(Status::Success);
    }
    if plan.has_refusals() {
        bail!("Cloudflare refused the dry run of at least one rotation (shown above); nothing was applied");
    }
    if !from_file && !args.auto_approve && !confirm(&mut out)? {
        writeln!(out, "\nApply cancelled. Nothing was changed.")?;
        return Ok(Status::Failure);
    }
    if !args.json {
        writeln!(out)?;
    }
    drop(out);
    let (client, _sandbox) = match connection {
        Some(c) => c,
        None => global.connect(&config, state.as_ref()).await?,
    };

    let options = apply::Options {
        parallelism: global.network.parallelism,
        stop: apply::Stop::default(),
    };
    watch_signals(options.stop.clone());
    // Log lines (-v) on stderr would tear a progress bar apart: with
    // logging on, progress is plain lines.
    let logging =
        tracing::level_filters::LevelFilter::current() != tracing::level_filters::LevelFilter::OFF;
    let mut progress = Progress::new(
        args.json,
        plan.actions.len(),
        std::io::stderr().is_terminal() && std::io::stdout().is_terminal() && !logging,
    );
    let mut state = state.unwrap_or_else(|| State::new(config.recipient_fingerprints()));
    let report = apply::apply(
        &config,
        &plan,
        &mut state,
        &state_path,
        &client,
        &options,
        |event| progress.event(event),
    )
    .await?;
    progress.finish(&report, &state_path, state.serial);
    Ok(if report.is_failure() {
        Status::Failure
    } else {
        Status::Success
    })
}

/// First Ctrl-C (or SIGTERM): stop starting rotations, finish and record
/// those in flight. Second: quit at once; the intents already on disk let
/// the next plan recover whatever was cut off.
fn watch_signals(stop: apply::Stop) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            {
                let term_recv = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    r = tokio::signal::ctrl_c() => { if r.is_err() { return; } }
                    _ = term_recv => {}
                }
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            if stop.requested() {
                eprintln!("\nSecond interrupt: quitting now. Rotations cut off are recorded as intents; the next `psk plan` shows them as interrupted.");
                std::process::exit(130);
            }
            eprintln!("\nInterrupt: finishing the rotations in flight and starting no new ones (Ctrl-C again quits at once).");
            stop.request();
        }
    });
}

/// Asks for `yes` on a terminal; refuses to guess without one.
fn confirm(out: &mut impl Write) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("psk apply needs confirmation, but stdin is not a terminal.\nReview the plan above and run `psk apply --auto-approve`");
    }
    write!(
        out,
        "\nDo you want to perform these actions?\n  Each rotation takes its tunnel down until the router has the new PSK.\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    )?;
    out.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}
