//! `psk show-plan`.

use std::path::PathBuf;

use clap::Args;

use super::args::{Format, Global};
use super::exit::Status;
use super::plan::print;
use crate::planfile::PlanFile;

/// Render a plan saved with `psk plan --out FILE`, in any format. Reads
/// only the plan file: no state, no psk.yaml, no network.
#[derive(Debug, Args)]
pub struct ShowPlanArgs {
    /// The saved plan.
    file: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,

    #[command(flatten)]
    pub color: super::args::Color,
}

pub fn run(global: &Global, args: ShowPlanArgs) -> anyhow::Result<Status> {
    let file = PlanFile::load(&args.file)?;
    print(&file.plan, &file.state_diff, args.format, global.no_color)?;
    Ok(Status::Success)
}
