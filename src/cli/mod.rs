//! The command line: argument parsing, dispatch, and how errors and exit
//! codes reach the user.
//!
//! Each command lives in its own file: an `XxxArgs` struct whose doc
//! comment is its help, and a `run` function. What several commands share
//! is in two places: `args` (the flags and their value parsers) and
//! `session` (loading psk.yaml and the state, the lock, connecting, and
//! planning online). Talking to Cloudflare before a plan is the domain's
//! [`crate::remote`], not the command line's.

mod apply;
mod args;
mod completions;
mod deliver;
mod exit;
mod export;
mod far_end;
mod force_unlock;
mod forget;
mod hint;
mod identity_perms;
mod import;
mod import_terraform;
mod init;
mod log;
mod move_state;
mod plan;
mod progress;
mod recover;
pub mod reference;
mod reseal;
mod sandbox;
mod schema;
mod session;
mod show;
mod show_plan;
mod status;
mod validate;
mod verify;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use args::Global;
use exit::{Status, EXIT_HELP};

/// Keep the IPsec pre-shared keys of Cloudflare Magic WAN / Magic Transit
/// tunnels rotated: `psk plan` shows what is due and why, `psk apply`
/// rotates, seals with age and records each key so none is ever lost.
#[derive(Debug, Parser)]
#[command(name = "psk", version = env!("PSK_LONG_VERSION"), after_help = EXIT_HELP, max_term_width = 100,
    disable_help_flag = true)]
pub struct Cli {
    #[command(flatten)]
    verbosity: args::Verbosity,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Init(init::InitArgs),
    Plan(plan::PlanArgs),
    Apply(apply::ApplyArgs),
    Validate(validate::ValidateArgs),
    Show(show::ShowArgs),
    Deliver(deliver::DeliverArgs),
    ShowPlan(show_plan::ShowPlanArgs),
    Sandbox(sandbox::SandboxArgs),
    Schema(schema::SchemaArgs),
    Export(export::ExportArgs),
    Reseal(reseal::ResealArgs),
    Recover(recover::RecoverArgs),
    Forget(forget::ForgetArgs),
    Import(import::ImportArgs),
    ForceUnlock(force_unlock::ForceUnlockArgs),
    MoveState(move_state::MoveStateArgs),
    Status(status::StatusArgs),
    Completions(completions::CompletionsArgs),
    Verify(verify::VerifyArgs),
    Man(reference::ManArgs),
}

impl Command {
    /// The shared options this command takes, resolved: only the groups
    /// its arguments flatten in, so no command accepts a flag it ignores.
    fn global(&self) -> Global {
        match self {
            Command::Init(a) => Global {
                config: a.config().to_path_buf(),
                ..Global::default()
            }
            .api(&a.api),
            Command::Plan(a) => Global::files(&a.files).api(&a.api).color(&a.color),
            Command::Apply(a) => Global::files(&a.files).api(&a.api).color(&a.color),
            Command::Import(a) => Global::files(&a.files).api(&a.api),
            Command::Status(a) => Global::files(&a.files).api(&a.api),
            Command::Validate(a) => Global::files(&a.files),
            Command::Show(a) => Global::files(&a.files),
            Command::Deliver(a) => Global::files(&a.files),
            Command::Sandbox(a) => Global::files(&a.files),
            Command::Export(a) => Global::files(&a.files),
            Command::Reseal(a) => Global::files(&a.files),
            Command::ForceUnlock(a) => Global::files(&a.files),
            Command::MoveState(a) => Global::files(&a.files),
            Command::Recover(a) => Global::files(&a.files),
            Command::Forget(a) => Global::files(&a.files),
            Command::Verify(a) => Global::files(&a.files).api(&a.api),
            Command::ShowPlan(a) => Global::default().color(&a.color),
            Command::Schema(_) | Command::Completions(_) | Command::Man(_) => Global::default(),
        }
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            if let Some(hint) = misplaced_option(&e, std::env::args_os().skip(1)) {
                let _ = writeln!(io::stderr(), "hint: {hint}");
            }
            return ExitCode::from(code);
        }
    };
    match log::level(
        cli.verbosity.verbose,
        std::env::var(log::ENV).ok().as_deref(),
    ) {
        Ok(level) => log::init(level),
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e}");
            return ExitCode::from(1);
        }
    }
    let carried = hint::Carried::from(&cli.command.global());
    match run(cli) {
        Ok(status) => status.exit_code(),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            print_error(&e, &carried);
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?;
    let global = cli.command.global();
    global.check()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Init(a) => init::run(&global, a).await,
            Command::Plan(a) => plan::run(&global, a).await,
            Command::Apply(a) => apply::run(&global, a).await,
            Command::Validate(a) => validate::run(&global, a),
            Command::Show(a) => show::run(&global, a),
            Command::Deliver(a) => deliver::run(&global, a).await,
            Command::Verify(a) => verify::run(&global, a).await,
            Command::ShowPlan(a) => show_plan::run(&global, a),
            Command::Sandbox(a) => sandbox::run(&global, a).await,
            Command::Schema(a) => schema::run(a),
            Command::Export(a) => export::run(&global, a),
            Command::Reseal(a) => reseal::run(&global, a),
            Command::Recover(a) => recover::run(&global, a).await,
            Command::Forget(a) => forget::run(&global, a),
            Command::Import(a) => import::run(&global, a).await,
            Command::ForceUnlock(a) => force_unlock::run(&global, a),
            Command::MoveState(a) => move_state::run(&global, a),
            Command::Status(a) => status::run(&global, a).await,
            Command::Completions(a) => completions::run(a, Cli::command()),
            Command::Man(a) => reference::run(a, Cli::command()),
        }
    })
}

/// An option written before the command (`psk -c x.yaml validate`, as
/// `git -C` would have it) that the command itself takes: psk's options
/// belong to the commands that use them, so say where it goes.
fn misplaced_option(
    e: &clap::Error,
    argv: impl Iterator<Item = std::ffi::OsString>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument || e.get(ContextKind::Suggested).is_some() {
        return None;
    }
    let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let root = Cli::command();
    let argv: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
    let at = argv
        .iter()
        .position(|a| a.split_once('=').map_or(a.as_str(), |(f, _)| f) == flag)?;
    let name = argv[at..]
        .iter()
        .find(|a| root.find_subcommand(a.as_str()).is_some())?;
    let command = root.find_subcommand(name.as_str())?;
    let takes = command.get_arguments().any(|a| {
        a.get_long().is_some_and(|l| flag == &format!("--{l}"))
            || a.get_short().is_some_and(|s| flag == &format!("-{s}"))
    });
    takes.then(|| format!("options go after the command: `psk {name} {flag} ...`"))
}

/// `docs/cli.md`, from the parser itself.
pub fn reference_markdown() -> String {
    reference::markdown(Cli::command())
}

/// The man pages (`psk.1`, `psk-plan.1`, ...), from the parser itself.
pub fn man_pages() -> Vec<(String, String)> {
    reference::man_pages(Cli::command())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `error: ...`, then each cause under `Caused by:`; every command they
/// suggest carries this run's `-c`, `--state` and `--sandbox` (`hint`).
fn print_error(e: &anyhow::Error, carried: &hint::Carried) {
    let root = Cli::command();
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "error: {}", carried.apply(&e.to_string(), &root));
    let causes: Vec<String> = e
        .chain()
        .skip(1)
        .map(|c| carried.apply(&c.to_string(), &root))
        .collect();
    if !causes.is_empty() {
        let _ = writeln!(err, "\nCaused by:");
        for c in causes {
            for (i, line) in c.lines().enumerate() {
                let lead = if i == 0 { "  " } else { "    " };
                let _ = writeln!(err, "{lead}{line}");
            }
        }
    }
}
