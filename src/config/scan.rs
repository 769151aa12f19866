//! One pass of the YAML event parser over psk.yaml for everything psk
//! needs beyond serde_yaml: the alias-expansion cap ([`guard`]), where
//! each key sits ([`Locations`]) and the document as JSON for the schema
//! check ([`schema`]).
//!
//! Each of the three used to parse the file on its own; on a fleet of
//! 10,000 tunnels (a 900 KB file) those parses were a third of
//! `plan --offline`. The events are handed to each consumer in turn, the
//! tree builder last (it takes them by value), and the tree builder is
//! dropped as soon as the aliases expand past the cap, so a "billion
//! laughs" is still refused before anything big is built.
//!
//! [`guard`]: super::guard
//! [`schema`]: super::schema

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::YamlLoader;

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
        loader: Option<YamlLoader>,
    }
    impl MarkedEventReceiver for Fan {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            self.sizer.on_event(&ev, mark);
            self.walker.on_event(&ev, mark);
            if self.sizer.over() {
                self.loader = None;
            }
            if let Some(loader) = self.loader.as_mut() {
                loader.on_event(ev, mark);
            }
        }
    }
    let mut fan = Fan {
        sizer: Sizer::default(),
        walker: Walker::default(),
        loader: Some(YamlLoader::default()),
    };
    let parsed = Parser::new_from_str(text).load(&mut fan, false);
    fan.sizer.verdict()?;
    if parsed.is_err() {
        return Ok(Scan {
            locations: Locations::default(),
            doc: Value::Null,
        });
    }
    // A loader that met an error (a key repeated in a mapping) keeps no
    // document: the duplicate is reported from the locations instead.
    let doc = fan
        .loader
        .as_ref()
        .and_then(|l| l.documents().first())
        .map_or(Value::Null, super::schema::yaml_to_json);
    Ok(Scan {
        locations: fan.walker.finish(),
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_gives_what_three_did() {
        let text = "version: 1\nr: &r [a, b]\nq: *r\ntunnels:\n  - {name: x, id: \"1\"}\n";
        let s = scan(text).unwrap();
        assert_eq!(s.doc, super::super::schema::to_json(text));
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
}
