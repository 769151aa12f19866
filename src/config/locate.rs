//! Where each key of a YAML document sits in its file.
//!
//! serde_yaml locates syntax and type errors but forgets positions once a
//! value is deserialized. Semantic checks (a duplicate id, an unknown policy)
//! need the line too, so this walks the parser's marked events once and
//! records the position of every key and sequence item under a path such as
//! `tunnels[1].id`, the same notation serde_yaml uses in its messages.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use yaml_rust2::parser::Event;
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// Where a problem of the whole document points.
    pub const START: Position = Position { line: 1, column: 1 };

    /// Where the parser's `mark` is (it counts columns from 0).
    pub(super) fn of_mark(mark: Marker) -> Position {
        Position {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

#[derive(Debug, Default)]
pub struct Locations {
    paths: HashMap<String, Position>,
    duplicates: Vec<(String, Position)>,
}

impl Locations {
    /// Indexes `text` with a parse of its own (psk.yaml itself is indexed
    /// by [`super::scan`], in the pass that also builds the document). A
    /// document that does not parse yields an empty index: serde_yaml
    /// reports that error with its own position.
    #[cfg(test)]
    pub fn index(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
        struct Feed<'a>(&'a mut Walker);
        impl yaml_rust2::parser::MarkedEventReceiver for Feed<'_> {
            fn on_event(&mut self, ev: Event, mark: Marker) {
                self.0.on_event(&ev, mark);
            }
        }
        if parser.load(&mut Feed(&mut walker), false).is_err() {
            return Locations::default();
        }
        walker.finish()
    }

    /// Keys that appear twice in one mapping, at their second occurrence.
    /// serde_yaml refuses a repeated field but, for a map such as
    /// `policies`, silently keeps the last value: these catch that.
    pub fn duplicates(&self) -> &[(String, Position)] {
        &self.duplicates
    }

    /// The position of `path`, or of its nearest located ancestor, or 1:1.
    pub fn get(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.paths.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Position::START,
            }
        }
    }
}

enum Frame {
    /// `value` is the path of the value whose key was just read: a key
    /// and its value share one path, and the key's position is the one kept.
    Map {
        path: String,
        value: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// Builds [`Locations`] from the parser's events, one allocation per key or
/// item: a fleet of 10,000 tunnels has 40,000 of them.
#[derive(Default)]
pub(super) struct Walker {
    stack: Vec<Frame>,
    paths: HashMap<String, Position>,
    duplicates: Vec<(String, Position)>,
}

/// `parent.key`, or `key` at the top.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        let mut p = String::with_capacity(parent.len() + 1 + key.len());
        p.push_str(parent);
        p.push('.');
        p.push_str(key);
        p
    }
}

impl Walker {
    pub(super) fn finish(self) -> Locations {
        Locations {
            paths: self.paths,
            duplicates: self.duplicates,
        }
    }

    /// Records the node that starts now and returns its path, or `None`
    /// when the node is a mapping key (remembered for its value instead).
    fn node_path(&mut self, ev: &Event, mark: Marker) -> Option<String> {
        let position = Position::of_mark(mark);
        let (path, is_key) = match self.stack.last_mut() {
            None => (String::new(), false),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                (p, false)
            }
            Some(Frame::Map { path, value }) => match value.take() {
                // Its key recorded this path already, at the key.
                Some(p) => return Some(p),
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.as_str(),
                        _ => "?",
                    };
                    let p = join(path, name);
                    *value = Some(p.clone());
                    (p, true)
                }
            },
        };
        match self.paths.entry(path) {
            Entry::Occupied(seen) => {
                let path = seen.key();
                let under_duplicate = || {
                    self.duplicates.iter().any(|(d, _)| {
                        path.strip_prefix(d.as_str())
                            .is_some_and(|rest| rest.starts_with(['.', '[']))
                    })
                };
                if is_key && !path.contains('?') && !under_duplicate() {
                    self.duplicates.push((path.clone(), position));
                }
                (!is_key).then(|| path.clone())
            }
            Entry::Vacant(slot) => {
                let path = (!is_key).then(|| slot.key().clone());
                slot.insert(position);
                path
            }
        }
    }

    pub(super) fn on_event(&mut self, ev: &Event, mark: Marker) {
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                self.node_path(ev, mark);
            }
            Event::MappingStart(..) => {
                // A complex key (a mapping used as a key) is not addressable.
                let path = self.node_path(ev, mark).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Map { path, value: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(ev, mark).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_and_items() {
        let text = "version: 1\npolicies:\n  default:\n    rotate_every: 90d\ntunnels:\n  - name: a\n    id: x\n  - name: b\n    id: y\n";
        let loc = Locations::index(text);
        assert_eq!(loc.get("version"), Position { line: 1, column: 1 });
        assert_eq!(
            loc.get("policies.default.rotate_every"),
            Position { line: 4, column: 5 }
        );
        assert_eq!(loc.get("tunnels[1]").line, 8);
        assert_eq!(loc.get("tunnels[1].id"), Position { line: 9, column: 5 });
        // An absent key falls back to its parent.
        assert_eq!(loc.get("tunnels[1].site").line, 8);
        assert_eq!(loc.get("nothing"), Position { line: 1, column: 1 });
    }

    #[test]
    fn finds_keys_repeated_in_one_mapping() {
        let text = "policies:\n  a: {rotate_every: 1d}\n  b: {}\n  a: {rotate_every: 2d}\ntunnels:\n  - {name: a}\n  - {name: a}\n";
        let loc = Locations::index(text);
        assert_eq!(
            loc.duplicates(),
            &[("policies.a".to_string(), Position { line: 4, column: 3 })]
        );
    }

    #[test]
    fn broken_yaml_gives_empty_index() {
        let loc = Locations::index("a: [1, 2\n");
        assert_eq!(loc.get("a"), Position { line: 1, column: 1 });
    }
}
