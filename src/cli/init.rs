//! `psk init`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use clap::Args;

use super::args::{parse_span, Global};
use super::exit::Status;
use crate::cloudflare::{Client, ClientOptions, Credentials};
use crate::draft::{self, Draft, Listed};
use crate::policy::Span;
use crate::sandbox::{self, Sandbox, SandboxOptions, FLEET_ACCOUNT};
use crate::seal::{self, Recipient};
use crate::tunnel::is_cloudflare_id;

/// Draft a psk.yaml from the IPsec tunnels Cloudflare lists: every tunnel
/// by its name and id, the recipients given, one policy, and sites
/// proposed from the customer endpoints tunnels share (marked for review).
/// Never overwrites a file: psk.yaml must not exist yet (or use --stdout).
#[derive(Debug, Args)]
pub struct InitArgs {
    /// A Cloudflare account to list (32 hexadecimal characters); repeat
    /// for several. Default: CLOUDFLARE_ACCOUNT_ID (with --sandbox, the
    /// sandbox's own 40-tunnel fleet).
    #[arg(long = "account", value_name = "ID")]
    accounts: Vec<String>,

    /// A public key to seal PSKs to (`age1...` or `ssh-ed25519 ...`);
    /// repeat for several.
    #[arg(long = "recipient", value_name = "KEY")]
    recipients: Vec<String>,

    /// An age identity file whose public half to seal PSKs to (the file
    /// itself is not copied anywhere).
    #[arg(long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,

    /// The `rotate_every` of the default policy.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_span)]
    rotate_every: Span,

    /// The file to write; it must not exist yet.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "psk.yaml",
        env = "PSK_CONFIG"
    )]
    config: PathBuf,

    /// Print the draft instead of writing a file.
    #[arg(long)]
    stdout: bool,

    #[command(flatten)]
    pub api: super::args::Api,
}

impl InitArgs {
    /// The file `init` would write, for the command's shared options.
    pub fn config(&self) -> &Path {
        &self.config
    }
}

pub async fn run(global: &Global, args: InitArgs) -> anyhow::Result<Status> {
    // Refused before anything is asked of anyone: psk init never
    // overwrites, and a file there now is someone's work.
    if !args.stdout && args.config.symlink_metadata().is_ok() {
        bail!(
            "{} exists, and psk init never overwrites a file.\nhint: `psk init --stdout` prints the draft to compare with it, or `-c FILE` writes another file",
            args.config.display()
        );
    }
    let recipients = recipients(&args)?;
    let accounts = accounts(global, &args)?;

    let (client, _sandbox) = connect(global).await?;
    let mut listed = Vec::new();
    for account in &accounts {
        let tunnels = client
            .list_tunnels(account)
            .await
            .with_context(|| format!("cannot list the IPsec tunnels of account {account}"))?;
        listed.push(Listed {
            account_id: account.clone(),
            tunnels,
        });
    }
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let every = args.rotate_every.to_string();
    let text = draft::draft(
        &listed,
        &Draft {
            recipients: &recipients,
            rotate_every: &every,
            date: &date,
        },
    );
    // The draft must read back as a valid psk.yaml; anything else is a
    // bug in psk, reported rather than written.
    let config = crate::config::Config::parse(&args.config, &text).map_err(|e| {
        anyhow!("psk drafted a psk.yaml it cannot read back (a bug in psk; please report it):\n{e}")
    })?;

    let tunnels = config.tunnels.len();
    let sites: std::collections::BTreeSet<&str> = config
        .tunnels
        .iter()
        .filter_map(|t| t.site.as_deref())
        .collect();
    let summary = format!(
        "{tunnels} tunnel{} in {} account{}, {} proposed site{}",
        plural(tunnels),
        accounts.len(),
        plural(accounts.len()),
        sites.len(),
        plural(sites.len())
    );
    if args.stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        eprintln!("Drafted psk.yaml: {summary}.");
        return Ok(Status::Success);
    }
    write_new(&args.config, &text)?;
    println!(
        "Wrote {}: {summary}.\nReview the proposed sites, then run `psk validate` and `psk plan`.",
        args.config.display()
    );
    Ok(Status::Success)
}

/// Every recipient given, checked, each with where it came from.
fn recipients(args: &InitArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in &args.recipients {
        let parsed: Recipient = r
            .parse()
            .with_context(|| "--recipient is not a public key psk can seal to")?;
        out.push((parsed.as_str().to_string(), "from --recipient".into()));
    }
    for f in &args.identities {
        for key in seal::public_keys_of(f)? {
            out.push((key, format!("public half of {}", f.display())));
        }
    }
    if out.is_empty() {
        bail!("psk init needs someone to seal the PSKs to.\nhint: pass --recipient age1... (or an SSH public key), or --identity FILE for the public half of an age identity (`age-keygen -o FILE` makes one)");
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(k, _)| seen.insert(k.clone()));
    Ok(out)
}

/// The accounts to list: `--account`, else CLOUDFLARE_ACCOUNT_ID, else
/// (with --sandbox) the sandbox's fleet. Cloudflare's API offers psk no
/// list of a token's accounts, so one must be named.
fn accounts(global: &Global, args: &InitArgs) -> anyhow::Result<Vec<String>> {
    let mut accounts: Vec<String> = args.accounts.clone();
    if accounts.is_empty() {
        match std::env::var("CLOUDFLARE_ACCOUNT_ID") {
            Ok(a) if !a.trim().is_empty() => accounts.push(a),
            _ if global.sandbox => accounts.push(FLEET_ACCOUNT.to_string()),
            _ => bail!("which account? psk init lists the tunnels of the accounts you name.\nhint: pass --account ID (repeat for several) or set CLOUDFLARE_ACCOUNT_ID; the id is in the dashboard's URL, 32 hexadecimal characters"),
        }
    }
    let mut out = Vec::new();
    for a in accounts {
        let id = a.trim().to_ascii_lowercase();
        if !is_cloudflare_id(&id) {
            let shown: String = a.chars().take(48).collect();
            bail!("`{shown}` is not a Cloudflare account id; expected 32 hexadecimal characters");
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A client for Cloudflare, or for an in-process sandbox holding its own
/// fleet under `--sandbox` (served as long as the second value lives).
async fn connect(global: &Global) -> anyhow::Result<(Client, Option<sandbox::Running>)> {
    let network = &global.network;
    if !global.sandbox {
        let credentials = Credentials::from_env()?;
        return Ok((Client::new(&credentials, network.client_options())?, None));
    }
    // The far-end options every --sandbox takes hold here too, though
    // init only lists.
    let options = SandboxOptions {
        health: global.far_end.health(),
        far_end: global.far_end.kind(),
        ..SandboxOptions::default()
    };
    let sb = Sandbox::own_fleet(&options).context("cannot start the sandbox")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the sandbox to a loopback port")?;
    let running = sandbox::spawn(listener, Arc::new(sb))?;
    let client_options = ClientOptions {
        base_url: running.base_url(),
        ..network.client_options()
    };
    let token = Credentials::Token(options.credentials.token);
    Ok((Client::new(&token, client_options)?, Some(running)))
}

/// Writes `text` to `path` only if nothing is there, durably: a temp file
/// beside it, synced, then linked into place (which fails if `path`
/// appeared meanwhile, so nothing is ever overwritten), then the folder
/// synced. A crash leaves either no psk.yaml or the whole one.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "psk.yaml".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.psk-init.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists if path.symlink_metadata().is_ok() => anyhow!(
            "{} appeared while psk init was drafting it, and psk init never overwrites a file",
            path.display()
        ),
        _ => anyhow!("cannot write {}: {e}", path.display()),
    })?;
    #[cfg(unix)]
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
