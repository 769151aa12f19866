//! `psk validate`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::args::Global;
use super::exit::Status;
use crate::config::{Config, ConfigError, Diagnostic};
use crate::state::{self, StateError};

/// Check psk.yaml (and the state file, when there is one) without touching
/// the network: every problem at once, each with file:line:column and key.
/// Exits 0 when valid (warnings allowed), 1 otherwise.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Output format: `json` gives errors and warnings as data for editors
    /// and CI.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,

    #[command(flatten)]
    pub files: super::args::Files,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// The JSON report's version; fields are only ever added within a major.
pub const JSON_FORMAT_VERSION: &str = "1.0";

#[derive(Serialize)]
struct Report {
    format_version: &'static str,
    valid: bool,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

#[derive(Serialize)]
struct Problem {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    key: String,
    message: String,
}

impl Problem {
    fn from_diagnostic(file: &Path, d: &Diagnostic) -> Problem {
        Problem {
            file: file.display().to_string(),
            line: Some(d.position.line),
            column: Some(d.position.column),
            key: d.key.clone(),
            message: d.message.clone(),
        }
    }

    fn from_state(path: &Path, e: &StateError) -> Problem {
        let (line, column, message) = match e {
            StateError::Parse {
                line,
                column,
                message,
                ..
            } => (Some(*line), Some(*column), message.clone()),
            StateError::Conflict { line, .. } => (Some(*line), Some(1), e.to_string()),
            other => (None, None, other.to_string()),
        };
        Problem {
            file: path.display().to_string(),
            line,
            column,
            key: String::new(),
            message,
        }
    }
}

pub fn run(global: &Global, args: ValidateArgs) -> anyhow::Result<Status> {
    let loaded = Config::load(&global.config);
    let location = loaded.as_ref().ok().map(|c| global.state_location(c));
    let state_path = loaded.as_ref().ok().map(|c| match &location {
        Some(Ok(l)) => l.path().to_path_buf(),
        _ => global
            .state
            .clone()
            .unwrap_or_else(|| PathBuf::from(&c.state)),
    });
    let state = location.map(|l| {
        l.map_err(state::StateError::from)
            .and_then(|l| state::load(&l, state::NewState::IfNoTraces))
    });
    match args.format {
        Format::Json => json(
            &global.config,
            &loaded,
            state_path.as_deref(),
            state.as_ref(),
        ),
        Format::Human => {
            let config = loaded?;
            let mut err = std::io::stderr().lock();
            for w in &config.warnings {
                writeln!(
                    err,
                    "warning: {}:{}:{}: {}{}",
                    config.path.display(),
                    w.position.line,
                    w.position.column,
                    if w.key.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", w.key)
                    },
                    w.message
                )?;
            }
            let state_path = state_path.expect("a loaded config names a state path");
            let state = state.expect("loaded with the config")?;
            human(&config, &state_path, state.as_ref())?;
            Ok(Status::Success)
        }
    }
}

fn human(config: &Config, state_path: &Path, state: Option<&state::State>) -> anyhow::Result<()> {
    let tunnels = config.tunnels.len() + config.unresolved.len();
    let accounts = config.accounts().len();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} is valid: {} tunnel{} in {} account{}, {} polic{}, {} recipient{}.",
        config.path.display(),
        tunnels,
        plural(tunnels),
        accounts,
        plural(accounts),
        config.policies.len(),
        if config.policies.len() == 1 {
            "y"
        } else {
            "ies"
        },
        config.recipients.len(),
        plural(config.recipients.len()),
    )?;
    if !config.unresolved.is_empty() {
        writeln!(
            out,
            "{} tunnel{} named by name only; psk finds {} id{} at Cloudflare when it plans.",
            config.unresolved.len(),
            if config.unresolved.len() == 1 {
                " is"
            } else {
                "s are"
            },
            if config.unresolved.len() == 1 {
                "its"
            } else {
                "their"
            },
            plural(config.unresolved.len()),
        )?;
    }
    match state {
        Some(s) => writeln!(
            out,
            "{} is valid: serial {}, {} tunnel{} recorded.",
            state_path.display(),
            s.serial,
            s.tunnels.len(),
            plural(s.tunnels.len())
        )?,
        None => writeln!(
            out,
            "{} does not exist yet; `psk apply` creates it.",
            state_path.display()
        )?,
    }
    Ok(())
}

fn json(
    config_path: &Path,
    loaded: &Result<Config, ConfigError>,
    state_path: Option<&Path>,
    state: Option<&Result<Option<state::State>, StateError>>,
) -> anyhow::Result<Status> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    match loaded {
        Ok(c) => warnings.extend(
            c.warnings
                .iter()
                .map(|d| Problem::from_diagnostic(&c.path, d)),
        ),
        Err(e) => errors.extend(
            e.diagnostics
                .iter()
                .map(|d| Problem::from_diagnostic(config_path, d)),
        ),
    }
    if let (Some(path), Some(Err(e))) = (state_path, state) {
        errors.push(Problem::from_state(path, e));
    }
    let report = Report {
        format_version: JSON_FORMAT_VERSION,
        valid: errors.is_empty(),
        errors,
        warnings,
    };
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(if report.valid {
        Status::Success
    } else {
        Status::Failure
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
