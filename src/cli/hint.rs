//! Commands an error suggests are written as the user would type them
//! next. A hint that says `psk apply --auto-approve` to someone who ran
//! `psk apply --sandbox -c lab/psk.yaml` would, followed literally, talk to
//! real Cloudflare about another psk.yaml; so the options that choose the
//! fleet, its state and the API (`-c`, `--state`, `--sandbox`) are carried
//! into every `psk COMMAND ...` an error names, where that command takes
//! them. One pass over the message at the edge, so no hint can forget.

use std::path::{Path, PathBuf};

use clap::Command;

use super::args::Global;

/// The options of this run that a suggested command must repeat.
#[derive(Debug, Default)]
pub struct Carried {
    config: Option<PathBuf>,
    state: Option<PathBuf>,
    sandbox: bool,
}

impl Carried {
    pub fn from(global: &Global) -> Carried {
        let default = Global::default();
        Carried {
            config: (global.config != default.config).then(|| global.config.clone()),
            state: global.state.clone(),
            sandbox: global.sandbox,
        }
    }

    /// `text` with every `` `psk COMMAND ...` `` span given the carried
    /// options that COMMAND takes and does not already name.
    pub fn apply(&self, text: &str, root: &Command) -> String {
        text.split('`')
            .enumerate()
            .map(|(i, part)| {
                if i % 2 == 1 {
                    self.command(part, root)
                } else {
                    part.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("`")
    }

    fn command(&self, span: &str, root: &Command) -> String {
        let Some(rest) = span.strip_prefix("psk ") else {
            return span.to_string();
        };
        let name = rest.split_whitespace().next().unwrap_or("");
        let Some(sub) = root.find_subcommand(name) else {
            return span.to_string();
        };
        let takes = |long: &str| sub.get_arguments().any(|a| a.get_long() == Some(long));
        let words: Vec<&str> = rest.split_whitespace().collect();
        let names = |flags: &[&str]| {
            words.iter().any(|w| {
                flags
                    .iter()
                    .any(|f| w == f || w.starts_with(&format!("{f}=")))
            })
        };
        let mut add: Vec<String> = Vec::new();
        if let Some(c) = &self.config {
            if takes("config") && !names(&["-c", "--config"]) {
                add.push(format!("-c {}", quoted(c)));
            }
        }
        if let Some(s) = &self.state {
            if takes("state") && !names(&["--state"]) {
                add.push(format!("--state {}", quoted(s)));
            }
        }
        if self.sandbox && takes("sandbox") && !names(&["--sandbox"]) {
            add.push("--sandbox".to_string());
        }
        if add.is_empty() {
            return span.to_string();
        }
        // Right after the command's name: before its arguments, a pipe or
        // a redirection, so the options stay psk's.
        let after = &rest[name.len()..];
        format!("psk {name} {}{after}", add.join(" "))
    }
}

/// A path as a POSIX shell reads it back.
fn quoted(p: &Path) -> String {
    let s = p.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=~".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn carried(config: Option<&str>, state: Option<&str>, sandbox: bool) -> Carried {
        Carried {
            config: config.map(PathBuf::from),
            state: state.map(PathBuf::from),
            sandbox,
        }
    }

    #[test]
    fn options_go_after_the_command_name_and_only_where_taken() {
        let root = crate::cli::Cli::command();
        let c = carried(Some("lab/psk.yaml"), Some("my state.json"), true);
        assert_eq!(
            c.apply("run `psk apply --auto-approve` now", &root),
            "run `psk apply -c lab/psk.yaml --state 'my state.json' --sandbox --auto-approve` now"
        );
        // `show` has no --sandbox; `schema` takes none of them.
        assert_eq!(
            c.apply("`psk show fra | head` or `psk schema`", &root),
            "`psk show -c lab/psk.yaml --state 'my state.json' fra | head` or `psk schema`"
        );
    }

    #[test]
    fn options_the_hint_already_names_are_not_repeated() {
        let root = crate::cli::Cli::command();
        let c = carried(Some("x.yaml"), None, true);
        assert_eq!(
            c.apply("try `psk plan --sandbox`", &root),
            "try `psk plan -c x.yaml --sandbox`"
        );
        assert_eq!(
            c.apply("`psk plan --config=y.yaml`", &root),
            "`psk plan --sandbox --config=y.yaml`"
        );
    }

    #[test]
    fn nothing_given_changes_nothing() {
        let root = crate::cli::Cli::command();
        let text = "run `psk apply --auto-approve`, or `sudo psk plan`, `psk`";
        assert_eq!(carried(None, None, false).apply(text, &root), text);
    }
}
