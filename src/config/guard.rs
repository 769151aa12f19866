//! Checks on the raw text of psk.yaml made before any YAML parser sees it.
//!
//! libyaml (under serde_yaml) rescans every open flow collection for each
//! token, so a 200 KB file of nested `[` takes minutes to reject: a review
//! bot running `psk plan` on a pull request would hang. And it reports a
//! control character by byte offset only. Both are caught here, cheaply and
//! with a line and column.

use super::{Diagnostic, Position};

/// Far deeper than any psk.yaml needs (it nests four levels at most), far
/// shallower than where libyaml slows down.
pub const MAX_FLOW_DEPTH: usize = 64;

pub fn check(text: &str) -> Result<(), Diagnostic> {
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
            return Err(Diagnostic {
                position: at,
                key: String::new(),
                message: format!(
                    "control character U+{:04X} is not allowed in YAML; remove it",
                    c as u32
                ),
            });
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
                    return Err(Diagnostic {
                        position: at,
                        key: String::new(),
                        message: format!(
                            "`[`/`{{` nested more than {MAX_FLOW_DEPTH} deep; psk.yaml never needs that"
                        ),
                    });
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    Ok(())
}

/// serde_yaml refuses a second document (`---`) without saying where it
/// starts; a second document is most often two files pasted together.
fn single_document(text: &str) -> Result<(), Diagnostic> {
    let mut content = false;
    for (i, l) in text.split('\n').enumerate() {
        let l = l.trim_end_matches('\r');
        let marker = l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
        if marker && content {
            return Err(Diagnostic {
                position: Position {
                    line: i + 1,
                    column: 1,
                },
                key: String::new(),
                message: "a second YAML document starts here; psk.yaml holds exactly one".into(),
            });
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
