//! The command line: argument parsing, dispatch, and how errors and exit
//! codes reach the user. Each command lives in its own file.

mod apply;
mod context;
mod deliver;
mod export;
mod force_unlock;
mod import;
mod log;
mod plan;
mod progress;
mod reseal;
mod sandbox;
mod schema;
mod show;
mod show_plan;
mod validate;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_HELP: &str = "\
Exit codes:
  0  success, or no changes
  1  any error, usage errors included
  2  changes present (only with `psk plan --detailed-exitcode`)";

/// Keep the IPsec pre-shared keys of Cloudflare Magic WAN / Magic Transit
/// tunnels rotated: `psk plan` shows what is due and why, `psk apply`
/// rotates, seals with age and records each key so none is ever lost.
#[derive(Debug, Parser)]
#[command(name = "psk", version, after_help = EXIT_HELP, max_term_width = 100)]
pub struct Cli {
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
          value_parser = context::parse_duration, help_heading = "Network")]
    connect_timeout: std::time::Duration,

    /// Give up on one API request (connect, send, answer) after this long;
    /// it is then retried like a dropped connection.
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s",
          value_parser = context::parse_duration, help_heading = "Network")]
    request_timeout: std::time::Duration,

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
    /// its concurrent requests. The default is Cloudflare's own limit, which
    /// a 429 turns into a 5-minute block of the whole token.
    #[arg(
        long,
        global = true,
        value_name = "N/DURATION",
        default_value = "1200/5m",
        help_heading = "Network"
    )]
    rate_limit: crate::cloudflare::RateLimit,

    /// Most API requests in flight at once (per-tunnel dry runs, rotations
    /// in apply, chunks of a bulk PSK set). Tunnels of one site never
    /// rotate at the same time.
    #[arg(id = "api_parallelism", long = "parallelism", global = true, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = "Network")]
    parallelism: u32,

    /// No colour in human output (also: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    no_color: bool,

    /// Log what psk does on stderr: -v info (state, lock, dry-run
    /// verdicts, retries), -vv debug (each HTTP request, rate-limiter
    /// waits), -vvv trace. Without it, PSK_LOG=LEVEL (off, error, warn,
    /// info, debug, trace). Never logs a PSK, a credential or a body.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Import(import::ImportArgs),
    ForceUnlock(force_unlock::ForceUnlockArgs),
}

/// What a command wants the process to exit with, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// `plan --detailed-exitcode` found changes.
    Changes,
    /// The command ran but something it did failed (reported already).
    Failure,
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
            return ExitCode::from(code);
        }
    };
    match log::level(cli.verbose, std::env::var(log::ENV).ok().as_deref()) {
        Ok(level) => log::init(level),
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e}");
            return ExitCode::from(1);
        }
    }
    match run(cli) {
        Ok(Status::Success) => ExitCode::SUCCESS,
        Ok(Status::Changes) => ExitCode::from(2),
        Ok(Status::Failure) => ExitCode::from(1),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            print_error(&e);
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?;
    let global = context::Global {
        config: cli.config,
        state: cli.state,
        sandbox: cli.sandbox,
        network: context::Network {
            connect_timeout: cli.connect_timeout,
            request_timeout: cli.request_timeout,
            retries: cli.retries,
            rate_limit: cli.rate_limit,
            parallelism: cli.parallelism as usize,
        },
        no_color: cli.no_color,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Plan(a) => plan::run(&global, a).await,
            Command::Apply(a) => apply::run(&global, a).await,
            Command::Validate(a) => validate::run(&global, a),
            Command::Show(a) => show::run(&global, a),
            Command::Deliver(a) => deliver::run(&global, a).await,
            Command::ShowPlan(a) => show_plan::run(&global, a),
            Command::Sandbox(a) => sandbox::run(&global, a).await,
            Command::Schema(a) => schema::run(a),
            Command::Export(a) => export::run(&global, a),
            Command::Reseal(a) => reseal::run(&global, a),
            Command::Import(a) => import::run(&global, a).await,
            Command::ForceUnlock(a) => force_unlock::run(&global, a),
        }
    })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `error: ...`, then each cause under `Caused by:`.
fn print_error(e: &anyhow::Error) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "error: {e}");
    let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
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
