//! One pass of the YAML event parser over psk.yaml for everything psk
//! needs beyond serde_yaml: the alias-expansion cap ([`guard`]), where
//! each key sits ([`Locations`]) and the document as JSON for the schema
//! check ([`schema`]).
//!
//! Each of the three used to parse the file on its own; on a fleet of
//! 10,000 tunnels (a 900 KB file) those parses were a third of
//! `plan --offline`. The events are handed to each consumer in turn, and
//! the document is built straight from them as JSON (no YAML tree in
//! between). A document with anchors or aliases gets the loader's own
//! tree, in a second parse made only once the alias cap has passed, so a
//! "billion laughs" is still refused before anything big is built. Both
//! ways of building the document share one rule for scalars and keys.
//!
//! [`guard`]: super::guard
//! [`schema`]: super::schema

use std::collections::HashSet;

use serde_json::{Map, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

use super::guard::Sizer;
use super::locate::Walker;
use super::{Diagnostic, Locations};

/// What one pass over a document that passed [`super::guard::check_text`]
/// yields. For a document yaml-rust2 cannot parse, the index is empty and
/// the document `Null`: serde_yaml reports that error with its own position.
pub struct Scan {
    pub locations: Locations,
    pub doc: Value,
}

/// The alias-expansion error, or the document's locations and JSON.
pub fn scan(text: &str) -> Result<Scan, Diagnostic> {
    struct Fan {
        sizer: Sizer,
        walker: Walker,
        builder: Builder,
    }
    impl MarkedEventReceiver for Fan {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            self.sizer.on_event(&ev, mark);
            self.walker.on_event(&ev, mark);
            self.builder.on_event(ev);
        }
    }
    let mut fan = Fan {
        sizer: Sizer::default(),
        walker: Walker::default(),
        builder: Builder::default(),
    };
    let parsed = Parser::new_from_str(text).load(&mut fan, false);
    fan.sizer.verdict()?;
    if parsed.is_err() {
        return Ok(Scan {
            locations: Locations::default(),
            doc: Value::Null,
        });
    }
    let doc = if fan.builder.gave_up {
        // Anchors, aliases, tags or a collection as a key: rare in
        // psk.yaml, and the loader's rules for them are its own. The alias
        // cap has passed, so the tree it builds is bounded.
        to_json(text)
    } else if fan.builder.duplicate {
        // yaml-rust2's loader refuses such a document and keeps no tree;
        // the duplicate itself is reported from the locations.
        Value::Null
    } else {
        fan.builder.done.unwrap_or(Value::Null)
    };
    Ok(Scan {
        locations: fan.walker.finish(),
        doc,
    })
}

/// Builds the document as JSON straight from the events, as [`to_json`]
/// does from yaml-rust2's `YamlLoader`, without
/// the intermediate tree (which cost as much as the parse). It handles
/// scalars, sequences and mappings with scalar keys, which is all a
/// psk.yaml normally has, and gives up on anything else.
#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    done: Option<Value>,
    gave_up: bool,
    /// Two keys equal as YAML values in one mapping (`1` and `01` too).
    duplicate: bool,
}

enum Open {
    Seq(Vec<Value>),
    Map {
        map: Map<String, Value>,
        /// The keys so far, as the loader compares them.
        keys: HashSet<Yaml>,
        /// The key whose value comes next.
        key: Option<String>,
    },
}

impl Builder {
    fn on_event(&mut self, ev: Event) {
        if self.gave_up || self.duplicate {
            return;
        }
        match ev {
            Event::Scalar(v, style, anchor, tag) => {
                if anchor > 0 || tag.is_some() {
                    self.gave_up = true;
                    return;
                }
                // The loader's resolution of an untagged scalar.
                let node = if style == TScalarStyle::Plain {
                    Yaml::from_str(&v)
                } else {
                    Yaml::String(v)
                };
                if let Some(Open::Map { keys, key, .. }) = self.stack.last_mut() {
                    if key.is_none() {
                        *key = Some(key_text(&node));
                        if !keys.insert(node) {
                            self.duplicate = true;
                        }
                        return;
                    }
                }
                self.add(scalar_json(node));
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
                if anchor > 0 || tag.is_some() || self.at_key() =>
            {
                self.gave_up = true;
            }
            Event::SequenceStart(..) => self.stack.push(Open::Seq(Vec::new())),
            Event::MappingStart(..) => self.stack.push(Open::Map {
                map: Map::new(),
                keys: HashSet::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Open::Seq(items)) => self.add(Value::Array(items)),
                Some(Open::Map { map, .. }) => self.add(Value::Object(map)),
                None => {}
            },
            Event::Alias(_) => self.gave_up = true,
            _ => {}
        }
    }

    /// Whether the next node is a mapping key.
    fn at_key(&self) -> bool {
        matches!(self.stack.last(), Some(Open::Map { key: None, .. }))
    }

    fn add(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.done = Some(value),
            Some(Open::Seq(items)) => items.push(value),
            Some(Open::Map { map, key, .. }) => {
                if let Some(k) = key.take() {
                    map.insert(k, value);
                }
            }
        }
    }
}

/// The YAML document as JSON, from yaml-rust2's loader: the conversion
/// that `Builder` makes from the events, for documents it gives up on
/// (and to test it against). yaml-rust2 rather than serde_yaml reads it,
/// because serde_yaml's values cannot hold an id made of 32 digits (too
/// large for an integer). Keys that are not text (`1: x`) become their text.
pub fn to_json(text: &str) -> Value {
    match yaml_rust2::YamlLoader::load_from_str(text) {
        Ok(docs) => docs.first().map_or(Value::Null, yaml_to_json),
        Err(_) => Value::Null,
    }
}

fn yaml_to_json(v: &Yaml) -> Value {
    match v {
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (key_text(k), yaml_to_json(v)))
                .collect(),
        ),
        scalar => scalar_json(scalar.clone()),
    }
}

/// A mapping key as JSON's text key.
fn key_text(key: &Yaml) -> String {
    match key {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => "?".into(),
    }
}

/// A scalar as JSON; a null, an alias or a value the loader could not
/// read is `null`.
fn scalar_json(node: Yaml) -> Value {
    match node {
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::from(i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(r), Value::Number),
        Yaml::String(s) => Value::String(s),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_gives_what_three_did() {
        let text = "version: 1\nr: &r [a, b]\nq: *r\ntunnels:\n  - {name: x, id: \"1\"}\n";
        let s = scan(text).unwrap();
        assert_eq!(s.doc, to_json(text));
        assert_eq!(
            s.doc,
            serde_json::json!({"version": 1, "r": ["a", "b"], "q": ["a", "b"],
                "tunnels": [{"name": "x", "id": "1"}]})
        );
        let loc = Locations::index(text);
        for path in [
            "version",
            "r",
            "q",
            "tunnels[0]",
            "tunnels[0].id",
            "nothing",
        ] {
            assert_eq!(s.locations.get(path), loc.get(path), "{path}");
        }
        assert_eq!(s.locations.get("tunnels[0].id").line, 5);
    }

    #[test]
    fn broken_or_duplicated_documents_give_no_tree() {
        let s = scan("a: [1, 2\n").unwrap();
        assert_eq!(s.doc, Value::Null);
        let s = scan("a: 1\na: 2\n").unwrap();
        assert_eq!(s.doc, Value::Null);
        assert_eq!(s.locations.duplicates().len(), 1);
    }

    #[test]
    fn an_alias_bomb_is_refused_before_its_tree_is_built() {
        let mut text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for (i, n) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            text.push_str(&format!(
                "{n}: &{n} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let Err(d) = scan(&text) else {
            panic!("an alias bomb passed");
        };
        assert_eq!(d.position.line, 6, "{d:?}");
    }

    /// The JSON built from events is the loader's tree converted, for
    /// every file psk ships or tests with, and for the scalars and keys
    /// where YAML's resolution rules bite.
    #[test]
    fn the_document_is_what_the_loader_gives() {
        let mut texts: Vec<String> = [
            "a: 1\nb: 01\nc: 0x1f\nd: 1.5\ne: .inf\nf: ~\ng: null\nh: true\ni: 'true'\nj: \"7\"\n",
            "1: a\ntrue: b\n1.5: c\n~: d\nk: [1, [2, {x: y}], {}]\nl: |\n  text\n",
            "1: a\n01: b\n",
            "a: 1\n'a': 2\n",
            "? [complex]\n: value\n",
            "s: !!str 1\nt: !!int 2\n",
            "r: &r {a: 1}\nq: *r\n",
            "- 1\n- two\n",
            "",
            "# nothing\n",
            "plain",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in [
            "examples/quickstart",
            "examples/fleet",
            "examples/github-actions",
        ] {
            texts.push(std::fs::read_to_string(root.join(dir).join("psk.yaml")).unwrap());
        }
        for dir in [
            "tests/corpus/config",
            "tests/corpus/config-extra",
            "tests/corpus/base",
        ] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    texts.push(text);
                }
            }
        }
        assert!(texts.len() > 20, "{}", texts.len());
        for text in &texts {
            if let Ok(s) = scan(text) {
                assert_eq!(s.doc, to_json(text), "{text}");
            }
        }
    }
}
