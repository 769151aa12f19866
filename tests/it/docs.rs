//! The docs that can be generated are generated, and checked here: the
//! command-line reference (`docs/cli.md`) and the man pages (`docs/man/`)
//! from clap's definition of the command line, and the JSON plan's tables
//! of actions and codes (in `docs/formats.md`) from the serde types that
//! write them. A test fails when a checked-in file differs from what psk
//! produces, and says how to regenerate it:
//! `PSK_UPDATE_DOCS=1 cargo test --test it docs::` rewrites them.

use std::path::{Path, PathBuf};

use crate::common::TestEnv;

const REGENERATE: &str = "PSK_UPDATE_DOCS=1 cargo test --test it docs::";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("PSK_UPDATE_DOCS").is_some_and(|v| !v.is_empty())
}

/// Compares `path` with `generated`, or writes it under `PSK_UPDATE_DOCS`.
fn check_file(path: &Path, generated: &str) {
    if updating() {
        // Whole or not at all: the other tests here read these files.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, generated).unwrap();
        std::fs::rename(&tmp, path).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{} differs from what psk generates (first at line {}: {:?} instead of {:?}).\n\
             Regenerate it with:\n    {REGENERATE}",
            path.display(),
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            generated.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn cli_reference_is_generated_from_the_parser() {
    let md = psk::cli::reference_markdown();
    check_file(&root().join("docs/cli.md"), &md);
    // Every command, and the flags that moved off the commands that ignore
    // them, are where `--help` has them.
    for command in [
        "psk plan",
        "psk apply",
        "psk show-plan",
        "psk sandbox",
        "psk completions",
    ] {
        assert!(md.contains(&format!("## `{command}`")), "{command}");
    }
    assert!(
        md.contains("`--refuse-changes <TUNNEL_ID>`"),
        "the sandbox's flags"
    );
    let schema = section(&md, "psk schema");
    assert!(
        !schema.contains("--sandbox") && !schema.contains("--config"),
        "{schema}"
    );
}

#[test]
fn man_pages_are_generated_from_the_parser() {
    let pages = psk::cli::man_pages();
    let dir = root().join("docs/man");
    for (name, text) in &pages {
        check_file(&dir.join(name), text);
    }
    let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "psk.1");
    assert!(names.contains(&"psk-show-plan.1"), "{names:?}");
    if !updating() {
        // No page left over from a command that is gone.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                names.contains(&file.as_str()),
                "docs/man/{file} is no command's page; {REGENERATE}"
            );
        }
    }
    // `psk man` prints the same page the docs hold, and writes them all,
    // into a folder it makes when it is not there yet (the README's
    // `~/.local/share/man/man1` often is not).
    let env = TestEnv::new(0);
    let run = env.run(&["man"]).success();
    assert_eq!(run.stdout, pages[0].1);
    let out = env.path("share/man/man1");
    assert!(!env.path("share").exists());
    env.run(&["man", "--dir", out.to_str().unwrap()]).success();
    for (name, text) in &pages {
        assert_eq!(
            &std::fs::read_to_string(out.join(name)).unwrap(),
            text,
            "{name}"
        );
    }
}

/// `psk --help` lists `man` with the other commands, so the README's
/// `psk man --dir` is found from the binary alone.
#[test]
fn man_is_listed_in_help() {
    let env = TestEnv::new(0);
    let help = env.run(&["--help"]).success().stdout;
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("man ")),
        "{help}"
    );
}

/// The tables of `docs/formats.md` between the `generated` markers.
#[test]
fn json_codes_are_listed_from_the_types() {
    let path = root().join("docs/formats.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let generated = psk::render::codes::markdown().unwrap();
    const BEGIN: &str = "<!-- BEGIN generated: JSON plan vocabularies; regenerate with PSK_UPDATE_DOCS=1 cargo test --test it docs:: -->\n";
    const END: &str = "<!-- END generated -->";
    let start = text
        .find(BEGIN)
        .expect("docs/formats.md has the BEGIN marker")
        + BEGIN.len();
    let end = start + text[start..].find(END).expect("and the END marker");
    let want = format!("{}{generated}\n{}", &text[..start], &text[end..]);
    check_file(&path, &want);
    for code in [
        "redeliver",
        "delivery_failed",
        "unknown_live_key",
        "sibling_down",
        "no_verdict",
    ] {
        assert!(generated.contains(&format!("`{code}`")), "{code}");
    }
}

fn section<'a>(md: &'a str, command: &str) -> &'a str {
    let start = md.find(&format!("## `{command}`")).expect(command);
    let rest = &md[start + 1..];
    let end = rest.find("\n## `").map_or(md.len(), |e| start + 1 + e);
    &md[start..end]
}

/// The pages a reader is sent to: README.md and docs/*.md.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Every `psk ...` line in a `sh` block of the README and docs parses with
/// the command line as it is now: an example cannot name a flag psk
/// dropped or put an option where psk no longer takes it.
#[test]
fn every_psk_command_in_the_docs_parses() {
    use clap::Parser;
    // A comment after a command is for the reader, not for psk.
    let comment = regex::Regex::new(r"(?m)\s+#.*$").unwrap();
    let mut seen = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for block in text.split("```sh\n").skip(1) {
            let block = block.split("```").next().unwrap();
            let block = comment.replace_all(block, "");
            for args in crate::workflows::psk_commands(&block) {
                let argv = std::iter::once("psk".to_string()).chain(args.iter().cloned());
                if let Err(e) = psk::cli::Cli::try_parse_from(argv) {
                    use clap::error::ErrorKind;
                    assert!(
                        matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion),
                        "{}: `psk {}` does not parse:\n{e}",
                        page.display(),
                        args.join(" ")
                    );
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "found only {seen} psk commands in the docs");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as dashes.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings' anchors, and `<a id="...">` ones.
fn anchors(text: &str) -> Vec<String> {
    let ids = regex::Regex::new(r#"<a id="([^"]+)"></a>"#).unwrap();
    let mut in_code = false;
    let mut out = Vec::new();
    for l in text.lines() {
        if l.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && l.starts_with('#') {
            out.push(slug(l.trim_start_matches('#')));
        }
    }
    out.extend(ids.captures_iter(text).map(|c| c[1].to_string()));
    out
}

/// Every relative link in the README and docs leads to a file that exists,
/// and to a heading in it when it names one.
#[test]
fn links_between_the_docs_resolve() {
    // Pages the verify, custody and s3 branches add; drop each from this
    // list once its page is here.
    const COMING: &[&str] = &["docs/verify.md", "docs/remote-state.md"];
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap();
        for cap in link.captures_iter(&text) {
            let target = &cap[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            let rel = path.canonicalize().ok().and_then(|p| {
                p.strip_prefix(root().canonicalize().unwrap())
                    .ok()
                    .map(|p| p.to_path_buf())
            });
            if !path.exists() {
                let named = dir.join(file);
                let coming = COMING
                    .iter()
                    .any(|c| root().join(c) == named || named.ends_with(c));
                assert!(coming, "{}: link to {target}: no such file", page.display());
                continue;
            }
            if !anchor.is_empty() && path.extension().is_some_and(|e| e == "md") {
                let there = std::fs::read_to_string(&path).unwrap();
                assert!(
                    anchors(&there).iter().any(|a| a == anchor),
                    "{}: link to {target}: {} has no heading #{anchor}",
                    page.display(),
                    rel.map(|r| r.display().to_string()).unwrap_or_default()
                );
            }
        }
    }
}
