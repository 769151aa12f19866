//! Checks on the raw text of psk.yaml made before any YAML parser sees it.
//!
//! libyaml (under serde_yaml) rescans every open flow collection for each
//! token, so a 200 KB file of nested `[` takes minutes to reject: a review
//! bot running `psk plan` on a pull request would hang. Aliases copy the
//! node they name, so a few lines of nested aliases (a "billion laughs")
//! expand to billions of nodes in any loader that builds a tree. And
//! libyaml reports a control character by byte offset only. All of these
//! are caught here, cheaply and with a line and column.

use std::collections::HashMap;

use yaml_rust2::parser::Event;
use yaml_rust2::scanner::Marker;

use super::{Diagnostic, Position};

/// Far deeper than any psk.yaml needs (it nests four levels at most), far
/// shallower than where libyaml slows down.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Nodes the document may have once every alias is expanded: a fleet of
/// 10,000 tunnels is about 50,000.
pub const MAX_EXPANDED_NODES: u64 = 1_000_000;

/// Every check, the alias cap included: psk itself runs [`check_text`]
/// and then [`super::scan`], which counts aliases in the pass it makes
/// anyway.
#[cfg(test)]
pub fn check(text: &str) -> Result<(), Diagnostic> {
    check_text(text)?;
    super::scan::scan(text).map(|_| ())
}

/// The checks on the characters alone: a second document, control
/// characters and deep flow nesting.
pub fn check_text(text: &str) -> Result<(), Diagnostic> {
    single_document(text)?;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let (mut line, mut column) = (1usize, 0usize);
    for c in text.chars() {
        column += 1;
        let at = Position { line, column };
        if !allowed(c) {
            return Err(Diagnostic::at(
                at,
                format!(
                    "control character U+{:04X} is not allowed in YAML; remove it",
                    c as u32
                ),
            ));
        }
        if c == '\n' {
            line += 1;
            column = 0;
            comment = false;
            prev = c;
            continue;
        }
        match (quote, c) {
            _ if comment => {}
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '#') if prev.is_whitespace() => comment = true,
            (None, '"' | '\'') if starts_token(prev) => quote = Some(c),
            (None, '[' | '{') if starts_token(prev) => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(Diagnostic::at(
                        at,
                        format!(
                            "`[`/`{{` nested more than {MAX_FLOW_DEPTH} deep; psk.yaml never needs that"
                        ),
                    ));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    Ok(())
}

/// Counts the nodes of the document as a loader would build it, each alias
/// counting as the size of the node it names, without building anything.
/// Fed the parser's events by [`super::scan`].
#[derive(Default)]
pub(super) struct Sizer {
    /// Open collections: their anchor id and node count so far.
    open: Vec<(usize, u64)>,
    sizes: HashMap<usize, u64>,
    total: u64,
    over: Option<Marker>,
}

impl Sizer {
    fn add(&mut self, n: u64, mark: Marker) {
        let slot = match self.open.last_mut() {
            Some((_, count)) => count,
            None => &mut self.total,
        };
        *slot = slot.saturating_add(n);
        if *slot > MAX_EXPANDED_NODES && self.over.is_none() {
            self.over = Some(mark);
        }
    }

    pub(super) fn on_event(&mut self, ev: &Event, mark: Marker) {
        match *ev {
            Event::Scalar(_, _, anchor, _) => {
                if anchor > 0 {
                    self.sizes.insert(anchor, 1);
                }
                self.add(1, mark);
            }
            Event::Alias(id) => {
                let n = self.sizes.get(&id).copied().unwrap_or(1);
                self.add(n, mark);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.open.push((anchor, 1));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, count)) = self.open.pop() {
                    if anchor > 0 {
                        self.sizes.insert(anchor, count);
                    }
                    self.add(count, mark);
                }
            }
            _ => {}
        }
    }

    /// The error at the node where the expansion passed the cap, if it did.
    /// A document that does not parse is reported by serde_yaml, located.
    pub(super) fn verdict(&self) -> Result<(), Diagnostic> {
        match self.over {
            None => Ok(()),
            Some(mark) => Err(Diagnostic::at(
                Position::of_mark(mark),
                format!(
                    "aliases (`*name`) here expand the document past {MAX_EXPANDED_NODES} nodes; psk.yaml never needs that many, so write the values out or use fewer aliases"
                ),
            )),
        }
    }
}

/// serde_yaml refuses a second document (`---`) without saying where it
/// starts; a second document is most often two files pasted together.
fn single_document(text: &str) -> Result<(), Diagnostic> {
    let mut content = false;
    for (i, l) in text.split('\n').enumerate() {
        let l = l.trim_end_matches('\r');
        let marker = l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
        if marker && content {
            return Err(Diagnostic::at(
                Position {
                    line: i + 1,
                    column: 1,
                },
                "a second YAML document starts here; psk.yaml holds exactly one".into(),
            ));
        }
        let t = l.trim();
        if !marker && !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
            content = true;
        }
    }
    Ok(())
}

/// YAML's printable set (YAML 1.2, `c-printable`), which libyaml enforces.
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}')
        || (c >= '\u{A0}' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Where a flow collection or quoted scalar may begin (not inside a plain
/// scalar such as `fra[1]` or `it's`).
fn starts_token(prev: char) -> bool {
    prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':' | '-' | '?')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_with_its_position() {
        let text = format!(
            "version: 1\ntunnels: {}{}\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        let d = check(&text).unwrap_err();
        assert_eq!(
            d.position,
            Position {
                line: 2,
                column: 9 + MAX_FLOW_DEPTH + 1
            }
        );
        let ok = format!("tunnels: {}{}\n", "[".repeat(10), "]".repeat(10));
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn brackets_in_plain_or_quoted_scalars_and_comments_do_not_count() {
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                "k{i}: fra[{i} # [[[[ \nq{i}: \"[[[\"\nr{i}: '{{{{'\n"
            ));
        }
        assert!(check(&text).is_ok());
    }

    #[test]
    fn alias_bombs_are_refused_where_they_explode() {
        let mut text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for (i, n) in ["b", "c", "d", "e", "f", "g"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f"][i];
            text.push_str(&format!(
                "{n}: &{n} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let d = check(&text).unwrap_err();
        assert_eq!(d.position.line, 6, "{d:?}");
        assert!(d.message.contains("aliases"), "{}", d.message);
        // Ordinary reuse is fine.
        assert!(check("r: &r [age1x]\nq: *r\np: *r\n").is_ok());
    }

    #[test]
    fn a_second_document_is_located() {
        assert!(check("---\n# c\nversion: 1\n").is_ok());
        let d = check("version: 1\n---\nversion: 1\n").unwrap_err();
        assert_eq!(d.position, Position { line: 2, column: 1 });
    }

    #[test]
    fn control_characters_are_located() {
        let d = check("version: 1\nsite: f\u{0}ra\n").unwrap_err();
        assert_eq!(d.position, Position { line: 2, column: 8 });
        assert!(d.message.contains("U+0000"), "{}", d.message);
        assert!(check("a: \u{7f}").is_err());
        assert!(check("\u{feff}a: b\r\n\tc: é\n").is_ok());
    }
}
