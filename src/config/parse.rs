//! Reading psk.yaml's text as far as the raw types, stopping at the first
//! stage that finds a problem and reporting everything that stage found.
//!
//! The stages run cheapest and most fundamental first: the checks on the
//! characters (`guard`), one event pass for the alias cap, the positions
//! and the document (`scan`), YAML syntax, keys repeated in one mapping,
//! the schema (every unknown key, missing key and wrong type at once), and
//! serde into the `raw` types. Then `validate` checks the meaning and
//! builds the [`Config`].

use std::collections::BTreeMap;
use std::path::Path;

use super::guard;
use super::raw::RawConfig;
use super::scan::{self, Scan};
use super::schema;
use super::validate;
use super::{Config, ConfigError, Diagnostic, Locations, Position};
use crate::seal::Recipient;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| {
            let message = format!(
                "cannot read it: {e}. Create it (see examples/quickstart/psk.yaml) or pass -c FILE"
            );
            ConfigError::new(path, vec![Diagnostic::at(Position::START, message)])
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = position_of(e.as_bytes(), e.utf8_error().valid_up_to());
            let message = "the file is not valid UTF-8".to_string();
            ConfigError::new(path, vec![Diagnostic::at(at, message)])
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let fail = |diagnostics| ConfigError::new(path, diagnostics);
        let (loc, raw) = read(path, text).map_err(fail)?;
        let mut config = validate::config(path, &raw, &loc).map_err(fail)?;
        config.recipient_names = recipient_names(text, &loc, &config.recipients);
        Ok(config)
    }
}

/// What people call each recipient, by fingerprint: the YAML comment on
/// its own line (`  - age1... # alice`), else an SSH key's comment, else
/// the key shortened (`age1ql3z7h…mcac8p`).
fn recipient_names(
    text: &str,
    loc: &Locations,
    recipients: &[Recipient],
) -> BTreeMap<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut names = BTreeMap::new();
    for (i, r) in recipients.iter().enumerate() {
        let line = loc.get(&format!("recipients[{i}]")).line;
        let comment =
            (lines.get(line.wrapping_sub(1))).and_then(|l| yaml_comment_after(l, r.as_str()));
        let name = comment
            .or_else(|| ssh_comment(r.as_str()))
            .unwrap_or_else(|| shortened(r.as_str()));
        names.insert(r.fingerprint(), name);
    }
    names
}

/// The comment that follows `value` on `line`, when `value` is the line's
/// only item (in a flow list `[a, b] # c`, `c` names neither).
fn yaml_comment_after(line: &str, value: &str) -> Option<String> {
    let at = line.find(value)?;
    let rest = line[at + value.len()..].trim_start();
    let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest).trim_start();
    let comment = rest.strip_prefix('#')?.trim();
    (!comment.is_empty()).then(|| comment.to_string())
}

/// An SSH public key's own comment (`ssh-ed25519 AAAA... alice@laptop`).
fn ssh_comment(key: &str) -> Option<String> {
    if !key.starts_with("ssh-") {
        return None;
    }
    let comment = key.split_whitespace().skip(2).collect::<Vec<_>>().join(" ");
    (!comment.is_empty()).then_some(comment)
}

/// `age1ql3z7h…mcac8p`: enough of a key to tell it from the others.
fn shortened(key: &str) -> String {
    let key = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 20 {
        return key;
    }
    let head: String = chars[..10].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// psk.yaml as the raw types, with where each of its keys sits; or every
/// problem of the first stage that finds one.
fn read(path: &Path, text: &str) -> Result<(Locations, RawConfig), Vec<Diagnostic>> {
    guard::check_text(text).map_err(|d| vec![d])?;
    // One pass of yaml-rust2: the alias cap, key positions, the tree.
    let Scan {
        locations: loc,
        doc,
    } = scan::scan(text).map_err(|d| vec![d])?;
    if text.trim().is_empty() {
        return Err(vec![Diagnostic::at(
            Position::START,
            "the file is empty; it needs at least `version: 1`, `recipients`, `policies` and `tunnels`".into(),
        )]);
    }
    // The model, read once. serde_yaml reads the whole document before
    // building anything, so a document it reads is free of syntax
    // errors; when it fails, the syntax is checked on its own first,
    // because serde_yaml's messages and positions for those are good.
    let raw = serde_yaml::from_str::<RawConfig>(text);
    if raw.is_err() {
        serde_yaml::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| vec![syntax_diagnostic(text, &e)])?;
    }
    // Before anything builds a tree: loaders keep one of two equal keys.
    let duplicates: Vec<Diagnostic> = loc
        .duplicates()
        .iter()
        .map(|(key, position)| Diagnostic {
            position: *position,
            key: key.clone(),
            message:
                "appears twice in one mapping; YAML keeps only one of them, so remove the other"
                    .into(),
        })
        .collect();
    if !duplicates.is_empty() {
        return Err(despite_duplicates(path, text, duplicates));
    }
    structure(path, text, &doc, &loc)?;
    let raw = raw.map_err(|e| vec![serde_diagnostic(&e)])?;
    Ok((loc, raw))
}

/// The repeated keys, and every other problem of the file read without
/// their second (and later) occurrences, so one run shows them all. Only
/// the repeats when they cannot be cut line by line (flow style).
fn despite_duplicates(path: &Path, text: &str, mut all: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let keys: Vec<(&str, Position)> = (all.iter())
        .filter_map(|d| Some((d.key.rsplit('.').next()?, d.position)))
        .collect();
    let rest = cut_lines(text, &keys).map(|cut| match read(path, &cut) {
        Ok((loc, raw)) => validate::config(path, &raw, &loc).err().unwrap_or_default(),
        Err(more) => more,
    });
    all.extend(rest.unwrap_or_default());
    all
}

/// The schema's verdict on `doc`, the file as YAML values.
fn structure(
    path: &Path,
    text: &str,
    doc: &serde_json::Value,
    loc: &Locations,
) -> Result<(), Vec<Diagnostic>> {
    let structural = schema::check(doc, loc);
    if structural.diagnostics.is_empty() {
        return Ok(());
    }
    let mut all = structural.diagnostics;
    all.extend(meaning_despite(
        path,
        text,
        doc,
        loc,
        &structural.wrong_paths,
    ));
    Err(all)
}

/// The meaning errors of the rest of the file, checked with the wrong
/// nodes (`wrong`) cut out, so a misspelled key or a window missing its
/// `end` does not hide a bad id, time zone or duration elsewhere: one run
/// shows every error. Nothing when the cut file is not whole (a required
/// key or a list item was cut). An
/// error under a cut node, or naming one (a tunnel whose cut policy is now
/// "unknown"), is an echo of the cut, not a mistake of its own: dropped.
fn meaning_despite(
    path: &Path,
    text: &str,
    doc: &serde_json::Value,
    loc: &Locations,
    wrong: &[String],
) -> Vec<Diagnostic> {
    let mut cut: Vec<String> = wrong.to_vec();
    cut.sort();
    cut.dedup();
    if cut.iter().any(String::is_empty) {
        return Vec::new();
    }
    // Block style is cut line by line, so the YAML reads as before; what
    // that cannot cut (flow style) is cut from the values, where a plain
    // scalar of digits is a number, which reads as a string only in YAML.
    let raw = match without_lines(text, loc, &cut) {
        Some(pruned) => serde_yaml::from_str::<RawConfig>(&pruned).ok(),
        None => without_keys(doc, &cut).and_then(|v| serde_json::from_value(v).ok()),
    };
    let Some(raw) = raw else {
        return Vec::new();
    };
    let Err(errors) = validate::config(path, &raw, loc) else {
        return Vec::new();
    };
    let echoes = |d: &Diagnostic| {
        cut.iter().any(|c| {
            let under = d.key == *c
                || d.key.starts_with(&format!("{c}."))
                || d.key.starts_with(&format!("{c}["));
            let name = c.rsplit('.').next().unwrap_or(c);
            under || d.message.contains(&format!("`{name}`"))
        })
    };
    errors.into_iter().filter(|d| !echoes(d)).collect()
}

/// `text` with the block-style lines of each key at `paths` turned into
/// comments, so line numbers stay put; `None` when a key is not written
/// alone at the start of its line (flow style), where that is not safe.
fn without_lines(text: &str, loc: &Locations, paths: &[String]) -> Option<String> {
    let at: Option<Vec<(&str, Position)>> = (paths.iter())
        .map(|p| Some((p.rsplit('.').next()?, loc.get(p))))
        .collect();
    cut_lines(text, &at?)
}

/// `text` with the block-style key `key` at each position (and its value
/// on the lines indented deeper) turned into comments; `None` when a key
/// is not written alone at the start of its line.
fn cut_lines(text: &str, keys: &[(&str, Position)]) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (key, pos) in keys {
        let at = pos.line.checked_sub(1)?;
        let indent = pos.column.checked_sub(1)?;
        let line = lines.get(at)?;
        let rest = line.get(indent..)?;
        if !line[..indent].trim().is_empty() || !rest.starts_with(key) {
            return None;
        }
        if !rest[key.len()..].trim_start().starts_with(':') {
            return None;
        }
        lines[at] = "#".into();
        // The key's value continues on the lines indented deeper.
        for next in lines.iter_mut().skip(at + 1) {
            let depth = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && depth <= indent {
                break;
            }
            *next = "#".into();
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}

/// `doc` without the mapping keys at `paths` (e.g. `tunnels[0].sight`),
/// in block or flow style alike; `None` when a path is a list item (taking
/// it out would renumber the items after it, and their errors with them)
/// or cannot be followed.
fn without_keys(doc: &serde_json::Value, paths: &[String]) -> Option<serde_json::Value> {
    let mut doc = doc.clone();
    for path in paths {
        let mut segments = key_segments(path)?;
        let Some(Segment::Key(last)) = segments.pop() else {
            return None;
        };
        let mut node = &mut doc;
        for segment in segments {
            node = match segment {
                Segment::Key(k) => node.get_mut(k)?,
                Segment::Index(i) => node.get_mut(i)?,
            };
        }
        node.as_object_mut()?.remove(last)?;
    }
    Some(doc)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `accounts.eu.tunnels[2].id` as its keys and list indexes.
fn key_segments(path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let (n, after) = r.split_once(']')?;
            out.push(Segment::Index(n.parse().ok()?));
            rest = after;
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// A syntax error as a diagnostic. YAML forbids tabs for indentation, and
/// the parser's own words for one ("found character that cannot start any
/// token") do not say so: a tab in the indentation of the failing line, or
/// of a line before it, is named as what it is.
fn syntax_diagnostic(text: &str, e: &serde_yaml::Error) -> Diagnostic {
    let d = serde_diagnostic(e);
    let tab = text
        .lines()
        .take(d.position.line.max(1))
        .enumerate()
        .find_map(|(i, line)| {
            let indent = &line[..line.len() - line.trim_start().len()];
            indent.find('\t').map(|col| Position {
                line: i + 1,
                column: indent[..col].chars().count() + 1,
            })
        });
    match tab {
        Some(position) => Diagnostic {
            position,
            key: String::new(),
            message: format!(
                "a tab in the indentation; YAML allows only spaces there, so replace the tab with spaces (the YAML parser said: {})",
                d.message
            ),
        },
        None => d,
    }
}

/// A serde_yaml error (syntax, or a type serde found first) as a diagnostic.
fn serde_diagnostic(e: &serde_yaml::Error) -> Diagnostic {
    let position = e.location().map_or(Position::START, |l| Position {
        line: l.line(),
        column: l.column(),
    });
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    // serde_yaml prefixes the key path ("tunnels[0]: ..."); split it off
    // so every diagnostic has the same shape.
    let (key, message) = match message.split_once(": ") {
        Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
        _ => (String::new(), message),
    };
    Diagnostic {
        position,
        key,
        message,
    }
}

/// The 1-based line and column of byte `offset` in `bytes`.
fn position_of(bytes: &[u8], offset: usize) -> Position {
    let before = &bytes[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    Position { line, column }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{errors, parse, GOOD};
    use super::*;

    #[test]
    fn parses_a_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.tunnels.len(), 2);
        assert_eq!(c.tunnels[0].account_id, "023e105f4ecef8ad9ca31a8372d0c353");
        assert_eq!(c.tunnels[1].account_id, "99999999999999999999999999999999");
        assert_eq!(c.tunnels[0].policy, "default");
        assert_eq!(c.tunnels[0].site.as_deref(), Some("fra"));
        assert_eq!(c.state, "psk.state.json");
        assert_eq!(c.accounts().len(), 2);
    }

    #[test]
    fn unknown_key_is_located() {
        let e = errors(&GOOD.replace("    site: fra\n", "    sight: fra\n"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, 11);
        assert_eq!(
            e[0].1,
            "unknown key `sight`; expected one of: account, account_id, id, name, policy, site"
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let e = errors("version: 1\ntunnels: [\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].0 >= 2, "{e:?}");
    }

    #[test]
    fn a_misspelled_key_does_not_hide_other_errors() {
        let text = GOOD
            .replace("    site: fra\n", "    sight: fra\n")
            .replace("fra-secondary", "fra-primary");
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, 11);
        assert!(e[0].1.starts_with("unknown key `sight`"));
        assert_eq!(e[1].0, 12);
        assert!(e[1].1.starts_with("duplicate tunnel name"));
    }

    #[test]
    fn recipients_are_named_by_their_comment_or_a_short_key() {
        let text = GOOD.replace(
            "  - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n",
            "  - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p  # alice (laptop)\n  - \"age1hulcwrj8drla6mh0v9udwl0q98pgp45sn8l8c6483wg2ktqld38qershhj\"\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN ops@bastion\n",
        );
        let c = parse(&text).unwrap();
        let names: Vec<&str> = (c.recipients.iter())
            .map(|r| c.recipient_name(&r.fingerprint()).unwrap())
            .collect();
        assert_eq!(
            names,
            ["alice (laptop)", "age1hulcwr…ershhj", "ops@bastion"]
        );
        // A comment after a flow list names no one recipient.
        assert_eq!(yaml_comment_after("recipients: [a, b] # c", "a"), None);
        assert_eq!(yaml_comment_after("  - 'a' # c", "a"), Some("c".into()));
    }

    #[test]
    fn a_repeated_key_does_not_hide_other_errors() {
        let text = GOOD
            .replace(
                "    rotate_every: 90d\n",
                "    rotate_every: 90d\n    rotate_every: 9x\n",
            )
            .replace(
                "0123456789abcdef0123456789abcdee",
                "0123456789abcdef0123456789abcdeZ",
            );
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, 8);
        assert!(e[0].1.starts_with("appears twice in one mapping"), "{e:?}");
        assert_eq!(e[1].0, 14);
        assert!(e[1].1.contains("is not a Cloudflare tunnel id"), "{e:?}");
    }

    #[test]
    fn a_tab_in_the_indentation_is_named() {
        let text = GOOD.replace("    site: fra\n", "\tsite: fra\n");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, 11);
        assert!(e[0].1.starts_with("a tab in the indentation"), "{e:?}");
        // A tab inside a value is no indentation: the parser's word stands.
        let e = errors("version: 1\ntunnels: [\n");
        assert!(!e[0].1.contains("tab"), "{e:?}");
    }

    #[test]
    fn a_missing_key_does_not_hide_other_errors() {
        let text = GOOD
            .replace(
                "    rotate_every: 90d\n",
                "    rotate_every: 90dd\n    window:\n      days: [mon]\n      start: \"02:00\"\n      timezone: Europe/Berln\n",
            )
            .replace("0123456789abcdef0123456789abcdee", "0123456789abcdef0123456789abcdeZ")
            .replace("    site: fra\n", "    sight: fra\n");
        let e = errors(&text);
        let lines: Vec<usize> = e.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [7, 8, 15, 17], "{e:?}");
        assert!(e[0].1.contains("`90dd` is not a duration"), "{e:?}");
        assert!(e[1].1.starts_with("missing key `end`"), "{e:?}");
        assert!(e[2].1.starts_with("unknown key `sight`"), "{e:?}");
        assert!(e[3].1.contains("is not a Cloudflare tunnel id"), "{e:?}");
    }

    #[test]
    fn pruning_a_misspelled_block_keeps_line_numbers() {
        let text = "version: 1\nrecipients: [x]\npolicis:\n  a:\n    rotate_every: 1d\n\nmore: 1\n";
        let loc = Locations::index(text);
        let pruned = without_lines(text, &loc, &["policis".to_string()]).unwrap();
        assert_eq!(pruned, "version: 1\nrecipients: [x]\n#\n#\n#\n#\nmore: 1\n");
        // A key inside a flow mapping cannot be cut out line by line.
        let flow = "tunnels:\n  - {name: a, sight: b}\n";
        let loc = Locations::index(flow);
        assert_eq!(
            without_lines(flow, &loc, &["tunnels[0].sight".to_string()]),
            None
        );
    }

    #[test]
    fn wrong_keys_are_cut_in_block_and_flow_style_alike() {
        let doc = serde_json::json!({
            "policis": {"a": {"rotate_every": "1d"}},
            "tunnels": [{"name": "a", "sight": "b"}],
        });
        let cut = ["policis".to_string(), "tunnels[0].sight".to_string()];
        assert_eq!(
            without_keys(&doc, &cut),
            Some(serde_json::json!({"tunnels": [{"name": "a"}]}))
        );
        // A list item cannot go: the items after it would be renumbered.
        assert_eq!(without_keys(&doc, &["tunnels[0]".to_string()]), None);
        assert_eq!(without_keys(&doc, &["tunnels[9].x".to_string()]), None);
    }

    #[test]
    fn an_unknown_key_in_flow_style_does_not_hide_other_errors() {
        let text = "version: 1
account_id: 023e105f4ecef8ad9ca31a8372d0c353
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
policies:
  default: {rotate_every: 90dd, window: {days: [mon], start: \"02:00\", end: \"04:00\", timezone: Europe/Berln}}
tunnels:
  - {name: fra-primary, id: 0123456789abcdef0123456789abcdeZ, sight: fra}
";
        let e = errors(text);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            e.iter()
                .any(|(_, m)| m.contains("`90dd` is not a duration")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|(_, m)| m.contains("unknown time zone `Europe/Berln`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|(_, m)| m.contains("is not a Cloudflare tunnel id")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|(_, m)| m.starts_with("unknown key `sight`")),
            "{e:?}"
        );
    }
}
