//! Tunnels the accounts of psk.yaml hold that psk.yaml does not list.
//!
//! A tunnel left out of psk.yaml is never rotated, and nothing else would
//! say so: its key simply grows old. The refresh lists every tunnel of
//! every account anyway, so the plan and `psk status --refresh` name each
//! such tunnel, with the line that adds it to psk.yaml; psk.yaml's
//! `ignore:` says which are managed elsewhere, and those are only counted.

use super::plan::Remote;
pub use super::plan::UnmanagedTunnel;
use crate::config::write::{scalar, Names};
use crate::config::Config;
use crate::tunnel::TunnelKey;

/// What the refresh found beyond psk.yaml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unmanaged {
    /// By account, then Cloudflare name, then id.
    pub tunnels: Vec<UnmanagedTunnel>,
    /// How many psk.yaml's `ignore:` left out.
    pub ignored: usize,
}

/// The sentence over a list of `n` unmanaged tunnels (`ignored` more left
/// out by `ignore:`), the same words in every format: `code` marks keys
/// as the format does.
pub fn heading(n: usize, ignored: usize, code: impl Fn(&str) -> String) -> String {
    let one = n == 1;
    let ignored = match ignored {
        0 => String::new(),
        i => format!(
            "; {i} more {} ignored by {}",
            if i == 1 { "is" } else { "are" },
            code("ignore:")
        ),
    };
    format!(
        "Not in psk.yaml: {n} tunnel{} Cloudflare lists for its accounts, never rotated by psk{ignored}. Add {} under {} to have psk rotate {}, or list {} under {} if {} managed elsewhere:",
        if one { "" } else { "s" },
        if one { "its line" } else { "their lines" },
        code("tunnels:"),
        if one { "it" } else { "them" },
        if one { "its name or id" } else { "their names or ids" },
        code("ignore:"),
        if one { "it is" } else { "they are" },
    )
}

/// Every tunnel Cloudflare listed for an account of psk.yaml that is
/// neither one of its tunnels nor ignored. Accounts psk.yaml no longer
/// names (listed only for their records in the state) are not looked at.
pub fn find(desired: &Config, remote: &Remote) -> Unmanaged {
    let accounts = desired.accounts();
    let managed = desired.tunnels_by_key();
    let several_accounts = accounts.len() > 1;
    let mut names = Names::taken(desired.tunnels.iter().map(|t| t.name.as_str()));
    let mut found: Vec<(&TunnelKey, &str)> = Vec::new();
    let mut ignored = 0;
    for (key, t) in &remote.tunnels {
        if !accounts.contains(&key.account_id) || managed.contains_key(key) {
            continue;
        }
        if desired.ignore.iter().any(|i| i.matches(&t.id, &t.name)) {
            ignored += 1;
            continue;
        }
        found.push((key, &t.name));
    }
    found.sort_by(|a, b| {
        (a.0.account_id.cmp(&b.0.account_id))
            .then_with(|| a.1.cmp(b.1))
            .then_with(|| a.0.tunnel_id.cmp(&b.0.tunnel_id))
    });
    let tunnels = found
        .into_iter()
        .map(|(key, name)| {
            let named = names.name_for(name, &key.tunnel_id);
            let account = if several_accounts {
                format!(", account_id: {}", key.account_id)
            } else {
                String::new()
            };
            UnmanagedTunnel {
                name: name.to_string(),
                key: key.clone(),
                add: format!(
                    "- {{ name: {}, id: {}{account} }}",
                    scalar(&named.name),
                    key.tunnel_id
                ),
            }
        })
        .collect();
    Unmanaged { tunnels, ignored }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudflare::RemoteTunnel;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    fn config(extra: &str) -> Config {
        let text = format!(
            "version: 1\naccount_id: {ACCOUNT}\nrecipients:\n  - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\npolicies:\n  default:\n    rotate_every: 90d\ntunnels:\n  - name: fra\n    id: {:032x}\n{extra}",
            1
        );
        Config::parse(std::path::Path::new("psk.yaml"), &text).unwrap()
    }

    fn remote(tunnels: &[(&str, u32, &str)]) -> Remote {
        let mut r = Remote::default();
        for (account, id, name) in tunnels {
            let id = format!("{id:032x}");
            r.tunnels.insert(
                TunnelKey::new(account, &id),
                RemoteTunnel {
                    id,
                    name: name.to_string(),
                    last_generated_on: None,
                    customer_endpoint: None,
                },
            );
        }
        r
    }

    #[test]
    fn lists_what_psk_yaml_leaves_out_with_a_line_that_adds_it() {
        let other = "11111111111111111111111111111111";
        let r = remote(&[
            (ACCOUNT, 1, "fra"),
            (ACCOUNT, 3, "zrh"),
            (ACCOUNT, 2, "fra"),
            (ACCOUNT, 4, "yes"),
            (other, 5, "elsewhere"),
        ]);
        let u = find(&config(""), &r);
        let names: Vec<&str> = u.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fra", "yes", "zrh"]);
        assert_eq!(
            u.tunnels[0].add,
            format!("- {{ name: fra-00000000, id: {:032x} }}", 2)
        );
        assert_eq!(
            u.tunnels[1].add,
            format!("- {{ name: \"yes\", id: {:032x} }}", 4)
        );
        assert_eq!(u.ignored, 0);
    }

    #[test]
    fn ignored_tunnels_are_counted_not_listed() {
        let r = remote(&[
            (ACCOUNT, 2, "tf-a"),
            (ACCOUNT, 3, "tf-b"),
            (ACCOUNT, 4, "x"),
        ]);
        let ignore = format!("ignore:\n  - tf-a\n  - \"{:032X}\"\n", 3);
        let u = find(&config(&ignore), &r);
        assert_eq!(u.ignored, 2);
        assert_eq!(u.tunnels.len(), 1);
        assert_eq!(u.tunnels[0].name, "x");
    }
}
