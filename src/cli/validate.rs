//! `psk validate`.

use clap::Args;

use super::context::{self, Global};
use super::Status;

/// Check psk.yaml (and the state file, when there is one) without touching
/// the network. Exits 0 when valid, 1 otherwise.
#[derive(Debug, Args)]
pub struct ValidateArgs {}

pub fn run(global: &Global, _args: ValidateArgs) -> anyhow::Result<Status> {
    let config = global.load_config()?;
    let state_path = global.state_path(&config);
    let state = context::load_state(&state_path)?;
    println!(
        "{} is valid: {} tunnel{} in {} account{}, {} polic{}, {} recipient{}.",
        config.path.display(),
        config.tunnels.len(),
        plural(config.tunnels.len()),
        config.accounts().len(),
        plural(config.accounts().len()),
        config.policies.len(),
        if config.policies.len() == 1 {
            "y"
        } else {
            "ies"
        },
        config.recipients.len(),
        plural(config.recipients.len()),
    );
    match state {
        Some(s) => println!(
            "{} is valid: serial {}, {} tunnel{} recorded.",
            state_path.display(),
            s.serial,
            s.tunnels.len(),
            plural(s.tunnels.len())
        ),
        None => println!(
            "{} does not exist yet; `psk apply` creates it.",
            state_path.display()
        ),
    }
    Ok(Status::Success)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
