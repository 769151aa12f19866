//! The JSON Schema of psk.yaml, and the structural check built on it.
//!
//! serde stops at the first error; people fixing a file want all of them.
//! So the document is first checked against the schema generated from the
//! raw types (one source of truth for editors, `psk schema` and psk
//! itself), which reports every unknown key, missing key and wrong type at
//! once. Each error is located through [`Locations`] and phrased for
//! people, with a suggestion for a misspelled key.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::{Map, Value};

use super::locate::join;
use super::raw::RawConfig;
use super::{Diagnostic, Locations, Position};
use crate::suggest::did_you_mean;

/// The document as the JSON the schema checks, for tests and tools that
/// hold a file against [`schema`].
pub use super::scan::to_json;

/// The schema of psk.yaml as pretty JSON with a trailing newline: what
/// `psk schema` prints and `schema/psk.schema.json` holds.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a schema serializes");
    text.push('\n');
    text
}

/// The schema of psk.yaml, JSON Schema draft 7 (the draft editors'
/// YAML plugins support best).
pub fn schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<RawConfig>();
    schema.to_value()
}

/// What the structural check found.
#[derive(Debug, Default)]
pub struct Structural {
    pub diagnostics: Vec<Diagnostic>,
    /// The key path of every node found wrong: an unknown key (e.g.
    /// `tunnels[0].sight`), a mapping missing a key, a value of the wrong
    /// type. The document without them can still be checked for meaning,
    /// so one run reports every error. Empty for the document itself.
    pub wrong_paths: Vec<String>,
}

/// Every structural problem of `doc` (the file as YAML values), located.
pub fn check(doc: &Value, loc: &Locations) -> Structural {
    let schema = schema();
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        // The schema is generated from our own types and tested; should it
        // ever fail to compile, serde's own check still runs after this.
        Err(_) => return Structural::default(),
    };
    let mut found = Structural::default();
    for error in validator.iter_errors(doc) {
        let pointer = error.instance_path().as_str();
        let path = key_path(doc, pointer);
        if let ValidationErrorKind::AdditionalProperties { unexpected } = error.kind() {
            let known = known_keys(&schema, doc, pointer);
            for key in unexpected {
                found.unknown_key(loc, &path, key, &known);
            }
            continue;
        }
        let Some(message) = describe(&error) else {
            continue;
        };
        found.wrong_paths.push(path.clone());
        // The whole document has no key of its own: point at its start.
        let position = if path.is_empty() {
            Position::START
        } else {
            loc.get(&path)
        };
        found.diagnostics.push(Diagnostic {
            position,
            key: path,
            message,
        });
    }
    found
}

impl Structural {
    /// `key`, unknown in the mapping at `parent`, where `known` are allowed.
    fn unknown_key(&mut self, loc: &Locations, parent: &str, key: &str, known: &[String]) {
        let hint = match did_you_mean(key, known.iter().map(String::as_str)) {
            Some(hint) => hint,
            None if known.is_empty() => String::new(),
            None => format!("; expected one of: {}", known.join(", ")),
        };
        let at = join(parent, key);
        self.wrong_paths.push(at.clone());
        self.diagnostics.push(Diagnostic {
            position: loc.get(&at),
            key: at,
            message: format!("unknown key `{key}`{hint}"),
        });
    }
}

/// A schema error other than an unknown key, phrased for people; `None`
/// for one that is no mistake in psk.yaml.
fn describe(error: &ValidationError) -> Option<String> {
    let instance = error.instance().as_ref();
    Some(match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            format!("missing key `{name}`{}", required_hint(name))
        }
        ValidationErrorKind::Type { kind } => return wrong_type(kind, instance),
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(show_scalar).collect())
                .unwrap_or_default();
            format!(
                "{} is not allowed here; expected one of: {}",
                show_scalar(instance),
                allowed.join(", ")
            )
        }
        _ => error.to_string(),
    })
}

fn wrong_type(kind: &TypeKind, instance: &Value) -> Option<String> {
    let expected = match kind {
        TypeKind::Single(t) => t.to_string(),
        // An optional key may be left empty; say what it takes.
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.to_string())
            .filter(|t| t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
    };
    // serde_yaml reads any plain scalar as a string (an id of digits only,
    // a name like `1`), so only a list, mapping or null is wrong where text
    // is expected.
    if expected.contains("string") && matches!(instance, Value::Number(_) | Value::Bool(_)) {
        return None;
    }
    Some(format!(
        "expected {}, found {}",
        describe_type(&expected),
        describe_value(instance)
    ))
}

fn required_hint(name: &str) -> &'static str {
    match name {
        "version" => " (write `version: 1` at the top)",
        "rotate_every" => " (how often the PSK changes, e.g. `rotate_every: 90d`)",
        "name" => " (the tunnel's name; with no `id`, its name at Cloudflare)",
        "id" => " (the Cloudflare account id: 32 hexadecimal characters)",
        "start" | "end" => " (a time of day such as \"02:00\")",
        _ => "",
    }
}

fn describe_type(t: &str) -> String {
    t.replace("object", "a mapping")
        .replace("array", "a list")
        .replace("string", "text")
        .replace("integer", "a whole number")
        .replace("boolean", "true or false")
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text `{}`", truncate(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn show_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{}`", truncate(s)),
        other => format!("`{other}`"),
    }
}

fn truncate(s: &str) -> String {
    let t: String = s.chars().take(48).collect();
    if t.len() < s.len() {
        format!("{t}...")
    } else {
        t
    }
}

fn pointer_segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// A JSON pointer into `doc` as psk's key path: `/tunnels/1/id` is
/// `tunnels[1].id`.
fn key_path(doc: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut node = Some(doc);
    for seg in pointer_segments(pointer) {
        match node {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{seg}]"));
                node = seg.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                path = join(&path, &seg);
                node = other.and_then(|v| v.get(&seg));
            }
        }
    }
    path
}

/// The keys the schema allows in the mapping at `pointer`.
fn known_keys(schema: &Value, doc: &Value, pointer: &str) -> Vec<String> {
    let mut node = schema;
    let mut inst = Some(doc);
    for seg in pointer_segments(pointer) {
        node = resolve(schema, node);
        let next = match inst {
            Some(Value::Array(items)) => {
                inst = seg.parse::<usize>().ok().and_then(|i| items.get(i));
                node.get("items")
            }
            other => {
                inst = other.and_then(|v| v.get(&seg));
                node.get("properties")
                    .and_then(|p| p.get(&seg))
                    .or_else(|| node.get("additionalProperties"))
            }
        };
        match next {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    resolve(schema, node)
        .get("properties")
        .and_then(Value::as_object)
        .map(|p: &Map<String, Value>| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Follows a local `$ref` (`#/definitions/Policy`), also when wrapped in
/// an `allOf` or `anyOf` (as schemars writes a field with a description).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..8 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => node = target,
                None => return node,
            }
            continue;
        }
        let wrapped = ["allOf", "anyOf"]
            .iter()
            .filter_map(|k| node.get(*k).and_then(Value::as_array))
            .flatten()
            .find(|n| n.get("$ref").is_some() || n.get("properties").is_some());
        match wrapped {
            Some(inner) => node = inner,
            None => return node,
        }
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_every_policy_key() {
        let s = schema();
        let keys = known_keys(
            &s,
            &serde_json::json!({"policies": {"p": {}}}),
            "/policies/p",
        );
        assert_eq!(
            keys,
            [
                "deliver",
                "deliver_timeout",
                "generator",
                "rotate_every",
                "site_parallel",
                "spread",
                "verify",
                "window"
            ]
        );
        let keys = known_keys(
            &s,
            &serde_json::json!({"policies": {"p": {"window": {}}}}),
            "/policies/p/window",
        );
        assert_eq!(keys, ["days", "end", "start", "timezone"]);
        let keys = known_keys(
            &s,
            &serde_json::json!({"accounts": {"eu": {"tunnels": [{}]}}}),
            "/accounts/eu/tunnels/0",
        );
        assert!(keys.contains(&"site".to_string()), "{keys:?}");
    }

    #[test]
    fn pointer_to_key_path() {
        let doc = serde_json::json!({"tunnels": [{}, {"id": 1}], "a/b": {"c": 1}});
        assert_eq!(key_path(&doc, "/tunnels/1/id"), "tunnels[1].id");
        assert_eq!(key_path(&doc, "/a~1b/c"), "a/b.c");
        assert_eq!(key_path(&doc, ""), "");
    }
}
