//! `psk export`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, ValueEnum};
use zeroize::Zeroizing;

use super::args::Global;
use super::exit::Status;
use super::session::{identities, no_record, Session};
use crate::config::Config;
use crate::seal::{self, Psk, Recipient};
use crate::state::{format_time, State, TunnelState};

/// Print many PSKs at once, for provisioning routers: every tunnel of
/// psk.yaml with a sealed PSK, or the NAMEs given. Needs an identity, like
/// `psk show`. With --recipient, each PSK is re-sealed to those age or SSH
/// public keys instead of printed in plain text.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Tunnel names (default: every tunnel in psk.yaml that has a PSK).
    names: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
    format: ExportFormat,

    /// Re-seal each PSK to this recipient (age1... or an SSH public key)
    /// instead of printing it; repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    recipients: Vec<String>,

    /// An age identity file or an unencrypted SSH private key; repeatable.
    /// PSK_AGE_KEY_FILE and PSK_AGE_KEY are tried too.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,

    #[command(flatten)]
    pub files: super::args::Files,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `{"format_version": "1.0", "tunnels": [...]}`
    Json,
    /// `PSK_<NAME>='...'` lines for a shell (`_AGE` suffix when re-sealed).
    Env,
    /// A header row, then one row per tunnel.
    Csv,
}

/// One exported tunnel; `secret` is the PSK or its re-sealed armor.
struct Row<'a> {
    name: &'a str,
    record: &'a TunnelState,
    site: Option<&'a str>,
    secret: Zeroizing<String>,
}

pub fn run(global: &Global, args: ExportArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let (config, state_path) = (&session.config, &session.state_path);
    let state = session.require_state()?;
    let recipients: Vec<Recipient> = args
        .recipients
        .iter()
        .map(|r| r.parse::<Recipient>())
        .collect::<Result<_, _>>()
        .context("bad --recipient")?;
    let selected = select(config, &state, &args.names, state_path)?;
    let ids = identities(&args.identities)?;

    let mut rows = Vec::new();
    for (name, record, site) in selected {
        let sealed = record.psk.as_deref().expect("selected tunnels have a PSK");
        let psk = seal::open(sealed, &ids).with_context(|| {
            format!(
                "cannot open the PSK of `{name}` sealed in {}; nothing was printed",
                state_path.display()
            )
        })?;
        if record.intent.is_some() {
            eprintln!("warning: a rotation of `{name}` was interrupted; Cloudflare may hold a newer PSK than this one. Run `psk plan`.");
        }
        if record.pending.is_some() {
            eprintln!("warning: `{name}` has a new PSK pending that Cloudflare has not confirmed; this is the one before it. Run `psk plan`.");
        }
        let secret = if recipients.is_empty() {
            Zeroizing::new(psk.expose().to_string())
        } else {
            Zeroizing::new(reseal(&psk, &recipients)?)
        };
        rows.push(Row {
            name,
            record,
            site,
            secret,
        });
    }
    let sealed = !recipients.is_empty();
    let text = match args.format {
        ExportFormat::Json => json(&rows, sealed),
        ExportFormat::Env => env(&rows, sealed)?,
        ExportFormat::Csv => csv(&rows, sealed),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(Status::Success)
}

fn reseal(psk: &Psk, recipients: &[Recipient]) -> anyhow::Result<String> {
    Ok(seal::seal(psk, recipients)?)
}

/// The tunnels to export, in psk.yaml order (or the order asked for).
fn select<'a>(
    config: &'a Config,
    state: &'a State,
    names: &'a [String],
    state_path: &std::path::Path,
) -> anyhow::Result<Vec<(&'a str, &'a TunnelState, Option<&'a str>)>> {
    let mut out = Vec::new();
    if names.is_empty() {
        for t in &config.tunnels {
            match state.get(&t.key()).filter(|r| r.psk.is_some()) {
                Some(r) => out.push((t.name.as_str(), r, t.site.as_deref())),
                None => eprintln!(
                    "warning: skipped `{}`: psk holds no PSK for it yet (run `psk apply`)",
                    t.name
                ),
            }
        }
        if out.is_empty() {
            bail!(
                "no tunnel of {} has a PSK in {} yet; run `psk apply` first",
                config.path.display(),
                state_path.display()
            );
        }
        return Ok(out);
    }
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name) {
            continue;
        }
        let site = config.tunnel_by_name(name).and_then(|t| t.site.as_deref());
        let record = match config.tunnel_by_name(name) {
            Some(t) => state.get(&t.key()),
            None => state.find_by_name(name),
        }
        .ok_or_else(|| anyhow!("{}", no_record(config, state_path, name)))?;
        if record.psk.is_none() {
            bail!("psk holds no PSK for `{name}` yet; run `psk apply` to generate one");
        }
        out.push((name.as_str(), record, site));
    }
    Ok(out)
}

#[derive(serde::Serialize)]
struct JsonRow<'a> {
    name: &'a str,
    account_id: &'a str,
    tunnel_id: &'a str,
    site: Option<&'a str>,
    last_rotated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    psk: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed_psk: Option<&'a str>,
}

fn json(rows: &[Row], sealed: bool) -> Zeroizing<String> {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        format_version: &'static str,
        tunnels: Vec<JsonRow<'a>>,
    }
    let doc = Doc {
        format_version: "1.0",
        tunnels: rows
            .iter()
            .map(|r| JsonRow {
                name: r.name,
                account_id: &r.record.account_id,
                tunnel_id: &r.record.tunnel_id,
                site: r.site,
                last_rotated: r.record.last_rotated.as_ref().map(format_time),
                psk: (!sealed).then_some(r.secret.as_str()),
                sealed_psk: sealed.then_some(r.secret.as_str()),
            })
            .collect(),
    };
    let mut text = Zeroizing::new(serde_json::to_string_pretty(&doc).expect("JSON serializes"));
    text.push('\n');
    text
}

/// `fra-primary` becomes `PSK_FRA_PRIMARY`.
fn env_name(name: &str, sealed: bool) -> String {
    let mut v: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    v.insert_str(0, "PSK_");
    if sealed {
        v.push_str("_AGE");
    }
    v
}

fn env(rows: &[Row], sealed: bool) -> anyhow::Result<Zeroizing<String>> {
    let mut seen = std::collections::HashMap::new();
    let mut text = Zeroizing::new(String::new());
    for r in rows {
        let var = env_name(r.name, sealed);
        if let Some(other) = seen.insert(var.clone(), r.name) {
            bail!(
                "tunnels `{other}` and `{}` would both export as {var}; use --format json or csv",
                r.name
            );
        }
        text.push_str(&var);
        text.push_str("='");
        text.push_str(&r.secret.replace('\'', "'\\''"));
        text.push_str("'\n");
    }
    Ok(text)
}

fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn csv(rows: &[Row], sealed: bool) -> Zeroizing<String> {
    let mut text = Zeroizing::new(format!(
        "name,account_id,tunnel_id,site,last_rotated,{}\n",
        if sealed { "sealed_psk" } else { "psk" }
    ));
    for r in rows {
        let last = r.record.last_rotated.as_ref().map(format_time);
        let fields = [
            r.name,
            &r.record.account_id,
            &r.record.tunnel_id,
            r.site.unwrap_or(""),
            last.as_deref().unwrap_or(""),
        ];
        for f in fields {
            csv_field(&mut text, f);
            text.push(',');
        }
        csv_field(&mut text, &r.secret);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_csv_quoting() {
        assert_eq!(env_name("fra-primary.1", false), "PSK_FRA_PRIMARY_1");
        assert_eq!(env_name("a", true), "PSK_A_AGE");
        let mut s = String::new();
        csv_field(&mut s, "a,\"b\"\nc");
        assert_eq!(s, "\"a,\"\"b\"\"\nc\"");
    }
}
