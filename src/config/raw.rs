//! psk.yaml as written, before any checks beyond types and known keys.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Diagnostic, Position};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub version: u64,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    pub tunnels: Vec<RawTunnel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub rotate_every: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTunnel {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
}

pub fn parse(text: &str) -> Result<RawConfig, Diagnostic> {
    if text.trim().is_empty() {
        return Err(Diagnostic {
            position: Position { line: 1, column: 1 },
            key: String::new(),
            message: "the file is empty; it needs at least `version: 1`, `recipients`, `policies` and `tunnels`".into(),
        });
    }
    serde_yaml::from_str(text).map_err(|e| {
        let position = e
            .location()
            .map_or(Position { line: 1, column: 1 }, |l| Position {
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
    })
}
