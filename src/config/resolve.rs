//! Finding the ids of tunnels that psk.yaml names only by their Cloudflare
//! name, and looking tunnels up once they have one.
//!
//! Parsing cannot know those ids: they come from Cloudflare's list or from
//! the state, once a command has them (`reconcile::resolve_names` asks
//! both, once, before planning). Until then such a tunnel waits in
//! [`Config::unresolved`], and commands that need every id say which ones
//! are missing ([`Config::require_resolved`]).

use super::{Config, ConfigError, Diagnostic, Position, Tunnel, Unresolved};
use crate::tunnel::TunnelKey;

impl Config {
    /// Finds the ids of tunnels named only by name: `lookup(account, name)`
    /// answers from Cloudflare's list or from the state. Returns the
    /// tunnels still unknown (they stay in `unresolved`).
    pub fn resolve(
        &mut self,
        mut lookup: impl FnMut(&str, &str) -> Option<String>,
    ) -> Vec<Unresolved> {
        let mut still = Vec::new();
        for u in std::mem::take(&mut self.unresolved) {
            match lookup(&u.account_id, &u.name) {
                Some(id) => self.tunnels.push(Tunnel {
                    name: u.name,
                    id: id.to_ascii_lowercase(),
                    account_id: u.account_id,
                    policy: u.policy,
                    site: u.site,
                }),
                None => still.push(u),
            }
        }
        let order = &self.order;
        self.tunnels
            .sort_by_key(|t| order.get(&t.name).copied().unwrap_or(usize::MAX));
        self.unresolved = still.clone();
        still
    }

    /// An error naming every tunnel whose id is still unknown, or `Ok`.
    pub fn require_resolved(&self, why: &str) -> Result<(), ConfigError> {
        if self.unresolved.is_empty() {
            return Ok(());
        }
        Err(ConfigError {
            file: self.path.clone(),
            diagnostics: self
                .unresolved
                .iter()
                .map(|u| Diagnostic {
                    position: Position {
                        line: u.line,
                        column: 1,
                    },
                    key: u.key_path.clone(),
                    message: format!(
                        "tunnel `{}` has no `id` and {why}; run `psk plan` without --offline (psk finds the id by name at Cloudflare) and `psk apply` once to record it, or add its `id`",
                        u.name
                    ),
                })
                .collect(),
        })
    }

    /// Tunnels by key, for code that looks up one per action: a linear
    /// search each time makes a 10,000-tunnel plan or apply quadratic.
    pub fn tunnels_by_key(&self) -> std::collections::HashMap<TunnelKey, &Tunnel> {
        self.tunnels.iter().map(|t| (t.key(), t)).collect()
    }

    pub fn tunnel_by_name(&self, name: &str) -> Option<&Tunnel> {
        self.tunnels.iter().find(|t| t.name == name)
    }

    /// ", did you mean `x`?" for a tunnel name psk.yaml does not have,
    /// when one of its tunnels is named nearly so; empty otherwise. A
    /// misspelled name on the command line is the likeliest cause.
    pub fn did_you_mean(&self, name: &str) -> String {
        let names = (self.tunnels.iter().map(|t| t.name.as_str()))
            .chain(self.unresolved.iter().map(|u| u.name.as_str()));
        crate::suggest::did_you_mean(name, names).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse, FLEET};

    #[test]
    fn resolving_names_keeps_file_order() {
        let mut c = parse(FLEET).unwrap();
        let still = c.resolve(|account, name| {
            (account == "99999999999999999999999999999999" && name == "us-by-name")
                .then(|| "ABCDEF0123456789ABCDEF0123456789".to_string())
        });
        assert!(still.is_empty());
        assert!(c.unresolved.is_empty());
        let names: Vec<&str> = c.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["eu-1", "us-1", "us-2", "us-by-name", "top-1", "top-2"]
        );
        assert_eq!(
            c.tunnel_by_name("us-by-name").unwrap().id,
            "abcdef0123456789abcdef0123456789"
        );
        assert!(c.require_resolved("x").is_ok());
    }
}
