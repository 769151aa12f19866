//! The command-line reference, generated from the argument parser itself:
//! `docs/cli.md` (markdown, like jj's `cli-reference`) and the man pages
//! (`psk man`, `docs/man/`). Both come from the same definition as
//! `--help` and the completions, and `tests/it/docs.rs` fails when the
//! checked-in files differ, so the reference cannot drift from the binary.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Arg, Args, Command};

use super::exit::Status;

/// Print psk's man page (roff), or write one page per command into DIR
/// (psk.1, psk-plan.1, ...): `psk man --dir ~/.local/share/man/man1`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write psk.1 and a page for every command into this folder, made
    /// if it does not exist yet.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: ManArgs, cli: Command) -> anyhow::Result<Status> {
    let pages = man_pages(cli);
    match args.dir {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(pages[0].1.as_bytes())?;
            out.flush()?;
        }
        Some(dir) => {
            // `~/.local/share/man/man1` often does not exist yet; `man`
            // finds it once it does.
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            for (name, text) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
        }
    }
    Ok(Status::Success)
}

/// The parser as the reference shows it: the package version without the
/// commit (so the files change only when the command line does), every
/// global flag propagated to the commands that take it.
fn prepared(cli: Command) -> Command {
    let mut cmd = cli
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The visible commands, `psk` first.
fn commands(root: &Command) -> Vec<&Command> {
    std::iter::once(root)
        .chain(root.get_subcommands().filter(|c| !c.is_hide_set()))
        .collect()
}

/// Every man page: `psk.1` first, then `psk-COMMAND.1` in help order.
pub fn man_pages(cli: Command) -> Vec<(String, String)> {
    let root = prepared(cli);
    commands(&root)
        .into_iter()
        .map(|c| {
            let man = clap_mangen::Man::new(c.clone()).manual("psk manual");
            let mut text = Vec::new();
            man.render(&mut text).expect("rendering to memory");
            let text = String::from_utf8(text).expect("roff from UTF-8 help is UTF-8");
            (man.get_filename(), text)
        })
        .collect()
}

/// `docs/cli.md`: every command's help as markdown, options under the same
/// headings as `--help`.
pub fn markdown(cli: Command) -> String {
    let root = prepared(cli);
    let mut md = String::from(
        "# psk command-line reference\n\n\
         <!-- Generated from psk's argument parser; do not edit. Regenerate with\n     \
         PSK_UPDATE_DOCS=1 cargo test --test it docs:: -->\n\n\
         Every command's `--help`, in one page. Options after the command they\n\
         belong to: `psk plan --sandbox`, not `psk --sandbox plan`.\n\n",
    );
    for c in commands(&root) {
        command_markdown(&mut md, c);
    }
    md
}

/// `psk`, or `psk show-plan` for the subcommand clap names `psk-show-plan`.
fn title(c: &Command) -> String {
    match c.get_display_name() {
        Some(d) if d != "psk" => d.replacen('-', " ", 1),
        _ => "psk".to_string(),
    }
}

/// GitHub's anchor for the heading `` `psk show-plan` ``: `psk-show-plan`.
fn anchor(c: &Command) -> String {
    title(c).replace(' ', "-")
}

fn first_line(c: &Command) -> String {
    c.get_about().map(|a| a.to_string()).unwrap_or_default()
}

fn command_markdown(md: &mut String, c: &Command) {
    let _ = writeln!(md, "## `{}`\n", title(c));
    let about = c.get_long_about().or(c.get_about());
    if let Some(about) = about {
        let _ = writeln!(md, "{about}\n");
    }
    let usage = c.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    let _ = writeln!(md, "```text\n{}\n```\n", usage.replacen("psk-", "psk ", 1));
    let subcommands: Vec<&Command> = c.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subcommands.is_empty() {
        md.push_str("**Commands:**\n\n");
        for s in subcommands {
            let _ = writeln!(
                md,
                "- [`{}`](#{}): {}",
                s.get_name(),
                anchor(s),
                first_line(s)
            );
        }
        md.push('\n');
    }
    let positionals: Vec<&Arg> = c.get_positionals().filter(|a| !a.is_hide_set()).collect();
    if !positionals.is_empty() {
        md.push_str("**Arguments:**\n\n");
        for a in positionals {
            arg_markdown(md, a);
        }
        md.push('\n');
    }
    for (heading, args) in option_groups(c) {
        let _ = writeln!(md, "**{heading}:**\n");
        for a in args {
            arg_markdown(md, a);
        }
        md.push('\n');
    }
    if let Some(after) = c.get_after_long_help().or(c.get_after_help()) {
        let _ = writeln!(md, "```text\n{}\n```\n", after.to_string().trim_end());
    }
}

/// Options by help heading, in the order `--help` shows them: "Options"
/// first, then each heading in the order its first option was declared;
/// within a heading, by display order.
fn option_groups(c: &Command) -> Vec<(String, Vec<&Arg>)> {
    let mut groups: Vec<(String, Vec<&Arg>)> = vec![("Options".to_string(), Vec::new())];
    for a in c
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
    {
        let heading = a.get_help_heading().unwrap_or("Options");
        match groups.iter_mut().find(|(h, _)| h == heading) {
            Some((_, args)) => args.push(a),
            None => groups.push((heading.to_string(), vec![a])),
        }
    }
    for (_, args) in &mut groups {
        args.sort_by_key(|a| a.get_display_order());
    }
    groups.retain(|(_, args)| !args.is_empty());
    groups
}

fn arg_markdown(md: &mut String, a: &Arg) {
    let value = a
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
    let takes_value = a.get_action().takes_values();
    let mut name = match (a.get_short(), a.get_long()) {
        (Some(s), Some(l)) => format!("-{s}, --{l}"),
        (None, Some(l)) => format!("--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, None) => String::new(),
    };
    if a.is_positional() {
        name = format!("<{value}>");
    } else if takes_value {
        name.push_str(&format!(" <{value}>"));
    }
    let help = a
        .get_long_help()
        .or(a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut help = help.replace("\n\n", " ").replace('\n', " ");
    // clap drops a one-sentence help's full stop; the notes after it need one.
    if !help.is_empty() && !help.ends_with('.') {
        help.push('.');
    }
    let _ = write!(md, "- `{name}`: {help}");
    if let Some(env) = a.get_env() {
        let _ = write!(md, " Environment: `{}`.", env.to_string_lossy());
    }
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| format!("`{}`", v.to_string_lossy()))
        .collect();
    if !defaults.is_empty() && takes_value {
        let _ = write!(md, " Default: {}.", defaults.join(", "));
    }
    md.push('\n');
    possible_values(md, a);
}

fn possible_values(md: &mut String, a: &Arg) {
    if !a.get_action().takes_values() {
        return;
    }
    let values: Vec<PossibleValue> = a
        .get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set())
        .collect();
    if values.is_empty() {
        return;
    }
    if values.iter().any(|v| v.get_help().is_some()) {
        for v in values {
            let help = v.get_help().map(|h| format!(": {h}")).unwrap_or_default();
            let _ = writeln!(md, "  - `{}`{help}", v.get_name());
        }
    } else {
        let names: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        let _ = writeln!(md, "  Values: {}.", names.join(", "));
    }
}
