//! `psk completions`.

use std::io::Write;

use clap::Args;
use clap_complete::Shell;

use super::exit::Status;

/// Print psk's shell completion script (commands, flags and their values).
/// For bash: `psk completions bash > ~/.local/share/bash-completion/completions/psk`;
/// zsh: `psk completions zsh > _psk` in a folder on `$fpath`; fish:
/// `psk completions fish > ~/.config/fish/completions/psk.fish`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// `cli` is the whole command line's definition, handed in by the
/// dispatcher so this file need not import it back.
pub fn run(args: CompletionsArgs, mut cli: clap::Command) -> anyhow::Result<Status> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cli, "psk", &mut out);
    out.flush()?;
    Ok(Status::Success)
}
