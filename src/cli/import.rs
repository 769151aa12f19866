//! `psk import`.

use std::io::{IsTerminal, Read, Write};

use anyhow::{anyhow, bail, Context as _};
use chrono::{DateTime, Utc};
use clap::Args;
use zeroize::Zeroizing;

use super::args::{Global, LockWait, StateOverrides};
use super::exit::Status;
use super::session::{Session, Writable};
use crate::cloudflare::Client;
use crate::seal::{self, Psk, PskFault};
use crate::state::{self, format_time, State};
use crate::tunnel::TunnelKey;

/// Adopt a tunnel whose current PSK you know, so a fleet need not be
/// rotated on day one. The PSK is read from stdin (never from an argument,
/// which other users could see in the process list), sealed to psk.yaml's
/// recipients, and dated with Cloudflare's `last_generated_on` (one list
/// call). With --terraform FILE instead of NAME: every PSK the cloudflare
/// provider set, from `terraform show -json`. Takes the state lock.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tunnel's name in psk.yaml.
    #[arg(required_unless_present = "terraform")]
    name: Option<String>,

    /// Adopt the PSKs the cloudflare provider set, from this output of
    /// `terraform show -json` (its `cloudflare_magic_wan_ipsec_tunnel` and
    /// `cloudflare_ipsec_tunnel` resources, matched to psk.yaml by account
    /// and tunnel id): all or none, never printed. See docs/terraform.md.
    #[arg(long, value_name = "FILE", conflicts_with = "name")]
    terraform: Option<std::path::PathBuf>,

    /// Replace a PSK psk already holds for this tunnel, or adopt a PSK
    /// shorter than 16 characters. A PSK Cloudflare would refuse (outside
    /// 8 to 128 printable ASCII characters, or with a space) is refused
    /// even so: it cannot be the tunnel's current key.
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    overrides: StateOverrides,

    #[command(flatten)]
    lock: LockWait,

    #[command(flatten)]
    pub files: super::args::Files,

    #[command(flatten)]
    pub api: super::args::Api,
}

/// The PSK from stdin: one line, printable ASCII with no spaces.
fn read_psk() -> anyhow::Result<Psk> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("psk import reads the PSK from stdin, and will not read it from a terminal where it would be echoed.\nPipe it in, e.g. `pass show fra-psk | psk import NAME` or `psk import NAME < file`");
    }
    let mut raw = Zeroizing::new(Vec::new());
    stdin
        .by_ref()
        .take(4097)
        .read_to_end(&mut raw)
        .context("cannot read the PSK from stdin")?;
    let text = std::str::from_utf8(&raw).map_err(|_| anyhow!("the PSK on stdin is not text"))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        bail!("no PSK on stdin: pipe in the tunnel's current PSK, one line");
    }
    if line.len() > 4096 {
        bail!("the text on stdin is too long to be a PSK (over 4096 bytes)");
    }
    if line.contains('\n') {
        bail!("stdin holds more than one line; pipe in only the PSK");
    }
    if !line.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the PSK on stdin contains spaces or control characters; pipe in only the PSK");
    }
    Ok(Psk::new(line.to_string()))
}

/// Holds an imported PSK to the rule at [`seal::PSK_MIN_LEN`]. A key
/// Cloudflare would refuse cannot be the tunnel's current one, so it is
/// refused even with --force (a typo or the wrong file); a usable but weak
/// key is adopted only with --force, and a warning says so even then.
fn check_rule(psk: &Psk, force: bool) -> anyhow::Result<()> {
    match psk.rule_fault() {
        None => Ok(()),
        Some(PskFault::Unusable(why)) => bail!(
            "the PSK on stdin cannot be a tunnel's current key: {why}.\nCheck what you piped in \
             (the whole key, on one line, with nothing else); rotate the tunnel with \
             `psk apply --replace NAME` if its key is lost"
        ),
        Some(PskFault::Weak(why)) if !force => bail!(
            "the PSK on stdin is weaker than psk adopts without --force: {why}.\nRotate the \
             tunnel with `psk apply --replace NAME` for a strong key, or pass --force to adopt \
             this one as it is"
        ),
        Some(PskFault::Weak(why)) => {
            eprintln!("warning: adopting a weak PSK because of --force: {why}");
            Ok(())
        }
    }
}

pub async fn run(global: &Global, args: ImportArgs) -> anyhow::Result<Status> {
    if let Some(file) = &args.terraform {
        return super::import_terraform::run(global, file, args.force, &args.overrides, &args.lock)
            .await;
    }
    let Some(name) = args.name.as_deref() else {
        bail!("psk import needs a tunnel NAME (the PSK on stdin) or --terraform FILE");
    };
    let mut session = Session::open(global)?;
    session.overrides(&args.overrides);
    let config = &session.config;
    let tunnel = config.tunnel_by_name(name).ok_or_else(|| {
        anyhow!(
            "no tunnel named `{}` in {}{}; add it there first",
            name,
            config.path.display(),
            config.did_you_mean(name)
        )
    })?;
    let key = tunnel.key();
    let psk = read_psk()?;
    check_rule(&psk, args.force)?;
    let Writable {
        path: state_path,
        lock,
        state,
    } = session.lock("import", &args.lock)?;
    if let Some(rec) = state.as_ref().and_then(|s| s.get(&key)) {
        if rec.psk.is_some() && !args.force {
            bail!(
                "{} already holds a sealed PSK for `{}`{}.\nPass --force to replace it with the one on stdin",
                state_path.display(),
                name,
                rec.last_rotated
                    .map(|t| format!(" (last rotated {})", format_time(&t)))
                    .unwrap_or_default()
            );
        }
    }

    let connection = session.connect(state.as_ref()).await?;
    let last = dated_at_cloudflare(&connection.client, &key, name).await?;

    let sealed = seal::seal(&psk, &config.recipients)?;
    drop(psk);
    let mut state = state.unwrap_or_else(|| State::new(config.recipient_fingerprints()));
    let sealed_to = state.sealed_to_for(&config.recipient_fingerprints());
    state
        .entry(&key, &tunnel.name)
        .record_key(sealed, sealed_to, last);
    state::save(&lock, &mut state)?;
    drop(lock);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Imported the PSK of `{}` (Cloudflare dates it {}).\nState saved to {} (serial {}).",
        name,
        format_time(&last),
        state_path.display(),
        state.serial
    )?;
    Ok(Status::Success)
}

/// When Cloudflare says the tunnel's current PSK was made: the date the
/// imported key is recorded with, so policies count from it.
async fn dated_at_cloudflare(
    client: &Client,
    key: &TunnelKey,
    name: &str,
) -> anyhow::Result<DateTime<Utc>> {
    let remote = client
        .list_tunnels(&key.account_id)
        .await
        .with_context(|| {
            format!(
                "cannot list the IPsec tunnels of account {}",
                key.account_id
            )
        })?;
    let remote = remote
        .into_iter()
        .find(|t| t.id.eq_ignore_ascii_case(&key.tunnel_id))
        .ok_or_else(|| {
            anyhow!(
                "tunnel `{}` (id {}) was not found in account {} at Cloudflare; check psk.yaml",
                name,
                key.tunnel_id,
                key.account_id
            )
        })?;
    remote.last_generated_on.ok_or_else(|| {
        anyhow!(
            "Cloudflare reports no psk_metadata.last_generated_on for `{}`, so psk cannot date the PSK; rotate it with `psk apply` instead",
            name
        )
    })
}
