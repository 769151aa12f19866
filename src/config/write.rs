//! psk.yaml as psk writes it: `psk init`'s file and the line a plan offers
//! for a tunnel psk.yaml does not list yet.
//!
//! A tunnel's name at Cloudflare is whatever someone typed in the
//! dashboard; psk.yaml's names must be non-empty printable text, unique in
//! the file, and a YAML scalar that reads back as the same string. So
//! every name psk writes goes through [`Names`] (a valid, unique name for
//! a tunnel) and [`scalar`] (its YAML spelling), and what was changed is
//! said in a comment rather than silently.

use std::collections::HashSet;

/// `s` as a YAML scalar that reads back as exactly `s`: plain when that is
/// safe in YAML 1.1 and 1.2 alike (starts with a letter, then letters,
/// digits, `-`, `_`, `.`; not a word YAML reads as a boolean or null),
/// double-quoted otherwise with every character YAML does not print
/// escaped.
pub fn scalar(s: &str) -> String {
    if is_plain(s) {
        return s.to_string();
    }
    quoted(s)
}

/// `s` double-quoted, always: for YAML comments too, where a name holding
/// a line break or `#` must stay one line.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_plain(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf",
    ];
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// The tunnel names of one psk.yaml, handed out so none is used twice.
#[derive(Debug, Default)]
pub struct Names {
    taken: HashSet<String>,
}

/// A name for psk.yaml, and why it is not the tunnel's name at Cloudflare
/// when it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    /// `None` when `name` is the Cloudflare name itself.
    pub changed: Option<&'static str>,
}

impl Names {
    /// Names already in use (psk.yaml's own tunnels).
    pub fn taken<'a>(names: impl IntoIterator<Item = &'a str>) -> Names {
        Names {
            taken: names.into_iter().map(str::to_string).collect(),
        }
    }

    /// The name psk.yaml gives the tunnel `id` called `cloudflare` at
    /// Cloudflare: that name when it is valid and free; else trimmed, with
    /// control characters as `-`, or `tunnel-` and the id's first eight
    /// characters when nothing is left; and a name already used gets the
    /// id's first eight characters (then the whole id) appended.
    pub fn name_for(&mut self, cloudflare: &str, id: &str) -> Named {
        let cleaned: String = cloudflare
            .chars()
            .map(|c| if c.is_control() { '-' } else { c })
            .collect();
        let cleaned = cleaned.trim().to_string();
        let short = id.get(..8).unwrap_or(id);
        let (mut name, mut changed) = if cleaned.is_empty() {
            (
                format!("tunnel-{short}"),
                Some("it has no usable name at Cloudflare"),
            )
        } else if cleaned != cloudflare {
            (
                cleaned,
                Some("its Cloudflare name holds control characters or surrounding spaces"),
            )
        } else {
            (cleaned, None)
        };
        if self.taken.contains(&name) {
            let with_short = format!("{name}-{short}");
            name = if self.taken.contains(&with_short) {
                format!("{name}-{id}")
            } else {
                with_short
            };
            changed = Some("another tunnel has the same name");
        }
        self.taken.insert(name.clone());
        Named { name, changed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_plain_and_the_rest_is_quoted_to_read_back() {
        assert_eq!(scalar("fra-primary"), "fra-primary");
        assert_eq!(scalar("edge.1_a"), "edge.1_a");
        for s in [
            "yes",
            "No",
            "null",
            "1234",
            "0x1f",
            "-x",
            "a b",
            "a: b",
            "#x",
            "a#b",
            "ü",
            "",
            "tab\there",
            "line\nbreak",
            "nel\u{85}",
            "ls\u{2028}",
            "quote\"back\\",
            "[x]",
            "{x}",
            "*x",
            "&x",
            "!x",
            "%x",
            "@x",
            "`x",
            "'x",
            "|",
            ">",
        ] {
            let yaml = format!("name: {}\n", scalar(s));
            let back: std::collections::BTreeMap<String, String> =
                serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(back["name"], s, "{yaml}");
        }
    }

    #[test]
    fn names_are_made_valid_and_unique() {
        let mut names = Names::taken(["fra-1"]);
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(names.name_for("ams-1", id).name, "ams-1");
        assert_eq!(names.name_for("ams-1", id).name, "ams-1-01234567");
        assert_eq!(names.name_for("ams-1", id).name, format!("ams-1-{id}"));
        let fra = names.name_for("fra-1", id);
        assert_eq!(fra.name, "fra-1-01234567");
        assert!(fra.changed.is_some());
        assert_eq!(names.name_for("  ", id).name, "tunnel-01234567");
        assert_eq!(names.name_for(" bad\u{7}name ", id).name, "bad-name");
        assert_eq!(names.name_for("lon", id).changed, None);
    }
}
