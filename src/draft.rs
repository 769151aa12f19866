//! A first psk.yaml, drafted from what Cloudflare lists (`psk init`).
//!
//! Copying 32-character ids from the dashboard by hand is how tunnels get
//! forgotten, and working out which tunnels are redundant paths of one
//! site is guesswork. Cloudflare already knows both: every tunnel of an
//! account, and the customer router at its far end (`customer_endpoint`).
//! Tunnels that share one reach the same router, so they are paths of
//! one site and must not change together; the draft proposes that site,
//! says why in a comment for the reviewer, and leaves a tunnel alone at
//! its endpoint (or with none) without a site.
//!
//! A pure function of the lists, the recipients and the policy, so the
//! same inventory always drafts the same bytes; names Cloudflare allows
//! and psk.yaml does not are made valid by [`crate::config::write`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::cloudflare::RemoteTunnel;
use crate::config::write::{quoted, scalar, Named, Names};

/// One account as Cloudflare listed it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub account_id: String,
    pub tunnels: Vec<RemoteTunnel>,
}

/// What goes into the draft beside the tunnels.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    /// Public keys, each with a comment naming where it came from.
    pub recipients: &'a [(String, String)],
    /// `rotate_every` of the one policy, as psk.yaml writes spans.
    pub rotate_every: &'a str,
    /// The day it was drafted (UTC), for the header.
    pub date: &'a str,
}

/// A proposed site: its name, and the endpoint its tunnels share.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    name: String,
    endpoint: String,
}

/// The whole psk.yaml text.
pub fn draft(accounts: &[Listed], d: &Draft) -> String {
    let total: usize = accounts.iter().map(|a| a.tunnels.len()).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# psk.yaml drafted by `psk init` on {} from Cloudflare's list: {total} IPsec tunnel{} in {} account{}.",
        d.date,
        plural(total),
        accounts.len(),
        plural(accounts.len())
    );
    out.push_str(
        "# Review it before the first `psk plan`: the sites below are proposals, made\n\
         # from the customer endpoints the tunnels share (two paths of one site never\n\
         # change their keys together). Tunnels you manage elsewhere go under `ignore:`.\n",
    );
    out.push_str("version: 1\n");
    let several = accounts.len() > 1;
    if let [only] = accounts {
        let _ = writeln!(out, "account_id: {}", only.account_id);
    }
    out.push_str("recipients:\n");
    for (key, comment) in d.recipients {
        let _ = writeln!(out, "  - {key}   # {comment}");
    }
    let _ = writeln!(
        out,
        "policies:\n  default:\n    rotate_every: {}",
        d.rotate_every
    );

    let mut names = Names::default();
    let mut site_names = BTreeSet::new();
    if several {
        out.push_str("accounts:\n");
    }
    for a in accounts {
        let indent = if several { "    " } else { "" };
        if several {
            let _ = writeln!(
                out,
                "  {}:\n    id: {}",
                account_alias(&a.account_id),
                a.account_id
            );
        }
        let _ = writeln!(out, "{indent}tunnels:");
        if a.tunnels.is_empty() {
            let _ = writeln!(
                out,
                "{indent}  []   # Cloudflare lists no IPsec tunnel in this account"
            );
            continue;
        }
        tunnels(&mut out, indent, a, &mut names, &mut site_names);
    }
    out
}

/// The tunnels of one account: sites first (by name), each introduced by
/// the comment that proposes it, then the tunnels with no site.
fn tunnels(
    out: &mut String,
    indent: &str,
    a: &Listed,
    names: &mut Names,
    site_names: &mut BTreeSet<String>,
) {
    let mut sorted: Vec<&RemoteTunnel> = a.tunnels.iter().collect();
    sorted.sort_by(|x, y| x.name.cmp(&y.name).then_with(|| x.id.cmp(&y.id)));
    // Each tunnel's psk.yaml name is settled in Cloudflare-name order, so
    // the same list always gives the same names.
    let named: BTreeMap<&str, Named> = sorted
        .iter()
        .map(|t| (t.id.as_str(), names.name_for(&t.name, &t.id)))
        .collect();
    let mut by_endpoint: BTreeMap<&str, Vec<&RemoteTunnel>> = BTreeMap::new();
    for t in &sorted {
        if let Some(e) = t.customer_endpoint.as_deref() {
            by_endpoint.entry(e).or_default().push(t);
        }
    }
    let mut sites: Vec<(Site, Vec<&RemoteTunnel>)> = Vec::new();
    for (endpoint, group) in by_endpoint.iter().filter(|(_, g)| g.len() > 1) {
        let psk_names: Vec<&str> = group
            .iter()
            .map(|t| named[t.id.as_str()].name.as_str())
            .collect();
        let name = unique_site(site_name(&psk_names, endpoint), endpoint, site_names);
        let site = Site {
            name,
            endpoint: endpoint.to_string(),
        };
        sites.push((site, group.clone()));
    }
    sites.sort_by(|x, y| x.0.name.cmp(&y.0.name));
    for (site, group) in &sites {
        let members: Vec<String> = group.iter().map(|t| shown(&t.name)).collect();
        let _ = writeln!(
            out,
            "{indent}  # Proposed site {}: {} share customer endpoint {}, so they are\n{indent}  # redundant paths to one router and rotate one at a time. Check before applying.",
            quoted(&site.name),
            members.join(", "),
            site.endpoint
        );
        for t in group {
            entry(out, indent, t, &named[t.id.as_str()], Some(&site.name));
        }
    }
    let in_site: BTreeSet<&str> = (sites.iter())
        .flat_map(|(_, g)| g.iter().map(|t| t.id.as_str()))
        .collect();
    let alone: Vec<&&RemoteTunnel> = sorted
        .iter()
        .filter(|t| !in_site.contains(t.id.as_str()))
        .collect();
    if !alone.is_empty() {
        let _ = writeln!(
            out,
            "{indent}  # No site proposed: no other tunnel shares their customer endpoint (or\n{indent}  # Cloudflare reports none). Give tunnels to one router the same `site:`."
        );
    }
    for t in alone {
        entry(out, indent, t, &named[t.id.as_str()], None);
    }
}

/// One tunnel's entry, with a comment when its name had to change.
fn entry(out: &mut String, indent: &str, t: &RemoteTunnel, named: &Named, site: Option<&str>) {
    let _ = write!(out, "{indent}  - name: {}", scalar(&named.name));
    if let Some(why) = named.changed {
        let _ = write!(out, "   # {} at Cloudflare: {why}", quoted(&t.name));
    }
    let _ = writeln!(out, "\n{indent}    id: {}", t.id);
    if let Some(site) = site {
        let _ = writeln!(out, "{indent}    site: {}", scalar(site));
    }
}

/// A Cloudflare name for a comment: plain when YAML would keep it so.
fn shown(name: &str) -> String {
    let s = scalar(name);
    if s == name {
        s
    } else {
        quoted(name)
    }
}

/// The site of tunnels named `names`: the words (split at `-`, `_`, `.`,
/// space) they all begin with, as `fra-ipsec-1` and `fra-ipsec-2` give
/// `fra-ipsec`; the endpoint when they share none.
fn site_name(names: &[&str], endpoint: &str) -> String {
    let split = |n: &str| -> Vec<String> {
        n.split(['-', '_', '.', ' '])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut common = split(names[0]);
    for n in &names[1..] {
        let words = split(n);
        let same = common
            .iter()
            .zip(&words)
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(same);
    }
    // A name that is all of one tunnel's name would read as that tunnel.
    if common.is_empty() || names.iter().any(|n| split(n).len() == common.len()) {
        return format!("site-{endpoint}");
    }
    common.join("-")
}

/// `name`, or with the endpoint appended when another site took it.
fn unique_site(name: String, endpoint: &str, taken: &mut BTreeSet<String>) -> String {
    let name = if taken.contains(&name) {
        format!("{name}-{endpoint}")
    } else {
        name
    };
    taken.insert(name.clone());
    name
}

/// The short name of an account under `accounts:`.
fn account_alias(id: &str) -> String {
    format!("account-{}", &id[..8.min(id.len())])
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u32, name: &str, endpoint: Option<&str>) -> RemoteTunnel {
        RemoteTunnel {
            id: format!("{id:032x}"),
            name: name.into(),
            last_generated_on: None,
            customer_endpoint: endpoint.map(str::to_string),
        }
    }

    const KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn drafted(accounts: &[Listed]) -> String {
        let recipients = [(KEY.to_string(), "from --recipient".to_string())];
        draft(
            accounts,
            &Draft {
                recipients: &recipients,
                rotate_every: "90d",
                date: "2026-12-06",
            },
        )
    }

    #[test]
    fn sites_are_proposed_from_shared_endpoints_and_the_draft_validates() {
        let a = Listed {
            account_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
            tunnels: vec![
                t(1, "fra-ipsec-2", Some("203.0.113.10")),
                t(2, "fra-ipsec-1", Some("203.0.113.10")),
                t(3, "lone", Some("203.0.113.99")),
                t(4, "primary", Some("198.51.100.1")),
                t(5, "backup", Some("198.51.100.1")),
                t(6, "", None),
                t(7, "yes", None),
            ],
        };
        let text = drafted(std::slice::from_ref(&a));
        let config = crate::config::Config::parse(std::path::Path::new("psk.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.tunnels.len(), 7);
        let site = |n: &str| config.tunnel_by_name(n).unwrap().site.clone();
        assert_eq!(site("fra-ipsec-1").as_deref(), Some("fra-ipsec"));
        assert_eq!(site("fra-ipsec-2").as_deref(), Some("fra-ipsec"));
        assert_eq!(site("primary").as_deref(), Some("site-198.51.100.1"));
        assert_eq!(site("lone"), None);
        assert_eq!(site("tunnel-00000000"), None);
        assert!(text.contains("  - name: tunnel-00000000   # \"\" at Cloudflare: it has no usable name at Cloudflare\n"), "{text}");
        assert!(text.contains("  - name: \"yes\"\n"), "{text}");
        assert!(text.contains("# Proposed site \"fra-ipsec\": fra-ipsec-1, fra-ipsec-2 share customer endpoint 203.0.113.10"), "{text}");
        // Same inventory, same bytes, whatever order Cloudflare listed it in.
        let mut reversed = a.clone();
        reversed.tunnels.reverse();
        assert_eq!(drafted(&[reversed]), text);
    }

    #[test]
    fn several_accounts_keep_names_unique() {
        let accounts = [
            Listed {
                account_id: "11111111111111111111111111111111".into(),
                tunnels: vec![t(1, "edge", None), t(2, "edge\u{7}", None)],
            },
            Listed {
                account_id: "22222222222222222222222222222222".into(),
                tunnels: vec![t(3, "edge", None)],
            },
            Listed {
                account_id: "33333333333333333333333333333333".into(),
                tunnels: vec![],
            },
        ];
        let text = drafted(&accounts);
        let config = crate::config::Config::parse(std::path::Path::new("psk.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let names: Vec<&str> = config.tunnels.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["edge", "edge-", "edge-00000000"]);
        assert_eq!(config.tunnels.len(), 3);
        assert!(text.contains("accounts:\n  account-11111111:\n    id: 11111111111111111111111111111111\n    tunnels:\n"), "{text}");
        assert!(
            text.contains(
                "    tunnels:\n      []   # Cloudflare lists no IPsec tunnel in this account\n"
            ),
            "{text}"
        );
    }
}
