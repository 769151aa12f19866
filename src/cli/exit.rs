//! psk's exit codes, decided once.
//!
//! Every command ends with a [`Status`] and `main` turns it into the
//! process's exit code here, the same table `--help` prints. A leaf module:
//! commands name their outcome without importing the dispatcher that
//! imports them.

use std::process::ExitCode;

/// The table `psk --help` ends with.
pub const EXIT_HELP: &str = "\
Exit codes:
  0  success, or no changes
  1  any error, usage errors included
  2  changes present (only with `psk plan --detailed-exitcode`), or a tunnel
     needs attention (only with `psk status --exit-code`)";

/// What a command wants the process to exit with, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// `plan --detailed-exitcode` found changes, or `status --exit-code`
    /// found a tunnel that needs attention.
    Changes,
    /// The command ran but something it did failed (reported already).
    Failure,
}

impl Status {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Status::Success => ExitCode::SUCCESS,
            Status::Changes => ExitCode::from(2),
            Status::Failure => ExitCode::from(1),
        }
    }
}
