//! `psk apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use chrono::Utc;
use clap::Args;

use super::args::{Global, LockWait, Selection, StateOverrides};
use super::exit::Status;
use super::progress::{PlanProgress, Progress};
use super::session::{Connection, Session, Writable};
use crate::apply;
use crate::cloudflare::Client;
use crate::planfile::{self, PlanFile};
use crate::reconcile::Plan;
use crate::render;
use crate::state::{Lock, State};

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

    #[command(flatten)]
    overrides: StateOverrides,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,

    #[command(flatten)]
    pub api: super::args::Api,

    #[command(flatten)]
    pub color: super::args::Color,
}

pub async fn run(global: &Global, args: ApplyArgs) -> anyhow::Result<Status> {
    let mut session = Session::open(global)?;
    session.overrides(&args.overrides);
    let Writable { lock, state, .. } = session.lock("apply", &args.lock)?;
    let (plan, connection) = plan_to_apply(&mut session, &args, state.as_ref()).await?;
    if let Some(status) = review(&plan, &args, global.no_color)? {
        return Ok(status);
    }
    let connection = match connection {
        Some(c) => c,
        None => session.connect(state.as_ref()).await?,
    };
    let state = state.unwrap_or_else(|| State::new(session.config.recipient_fingerprints()));
    execute(&session, &plan, state, &lock, &connection.client, args.json).await
}

/// The saved plan FILE, or a plan made now (with the connection it was
/// made on, for the rotations to use).
async fn plan_to_apply(
    session: &mut Session<'_>,
    args: &ApplyArgs,
    state: Option<&State>,
) -> anyhow::Result<(Plan, Option<Connection>)> {
    let Some(path) = &args.plan_file else {
        let options = args.selection.options(&session.config, state)?;
        let progress = PlanProgress::new(args.json);
        let planned = session.plan_online(state, Utc::now(), &options, &progress);
        let (plan, connection) = planned.await?;
        progress.finish();
        return Ok((plan, Some(connection)));
    };
    if !args.selection.is_empty() {
        bail!(
            "--replace and --target shape a new plan; they cannot be used with a saved plan FILE"
        );
    }
    let file = PlanFile::load(path)?;
    let connection = session.resolve_online(state).await?;
    let config = &session.config;
    let digest = planfile::digest_file(&config.path)
        .with_context(|| format!("cannot read {}", config.path.display()))?;
    file.check(config, &digest, state, Utc::now())
        .map_err(|why| {
            anyhow!(
                "refusing to apply {}: {why}.\nNothing was changed. Run `psk plan --out {}` again, review it, and apply the new plan",
                path.display(),
                path.display()
            )
        })?;
    Ok((file.plan, connection))
}

/// Shows the plan and settles whether to go on: `Some` is the status to
/// end with (nothing to change, or the user said no).
fn review(plan: &Plan, args: &ApplyArgs, no_color: bool) -> anyhow::Result<Option<Status>> {
    let from_file = args.plan_file.is_some();
    let mut out = std::io::stdout().lock();
    if args.json {
        if !from_file && !args.auto_approve {
            bail!("--json cannot ask for confirmation: pass --auto-approve, or apply a saved plan FILE");
        }
        render::json_apply_header(plan, &mut out)?;
    } else {
        let color = render::use_color(no_color, std::io::stdout().is_terminal());
        render::human_styled(plan, &mut out, color)?;
    }
    out.flush()?;
    if !plan.has_changes() {
        return Ok(Some(Status::Success));
    }
    if plan.has_refusals() {
        bail!("Cloudflare refused the dry run of at least one rotation (shown above); nothing was applied");
    }
    if !from_file && !args.auto_approve && !confirm(&mut out)? {
        writeln!(out, "\nApply cancelled. Nothing was changed.")?;
        return Ok(Some(Status::Failure));
    }
    if !args.json {
        writeln!(out)?;
    }
    Ok(None)
}

/// Runs the plan, showing progress as each tunnel finishes; the state is
/// saved as it goes, so what ran is recorded even if this is cut off.
async fn execute(
    session: &Session<'_>,
    plan: &Plan,
    mut state: State,
    lock: &Lock,
    client: &Client,
    json: bool,
) -> anyhow::Result<Status> {
    let options = apply::Options {
        parallelism: session.global.network.parallelism,
        stop: apply::Stop::default(),
    };
    watch_signals(options.stop.clone());
    // Log lines (-v) on stderr would tear a progress bar apart: with
    // logging on, progress is plain lines.
    let logging =
        tracing::level_filters::LevelFilter::current() != tracing::level_filters::LevelFilter::OFF;
    let mut progress = Progress::new(
        json,
        plan.actions.len(),
        std::io::stderr().is_terminal() && std::io::stdout().is_terminal() && !logging,
    );
    let report = apply::apply(
        &session.config,
        plan,
        &mut state,
        lock,
        client,
        &options,
        |event| progress.event(event),
    )
    .await?;
    progress.finish(&report, plan, lock.location().path(), state.serial);
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
