//! `psk sandbox`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::args::Global;
use super::exit::Status;
use super::far_end::parse_rate;
use super::session::Session;
use crate::sandbox::{self, Sandbox, SandboxOptions};

/// Serve a local stand-in for Cloudflare's Magic IPsec API, holding the
/// tunnels of psk.yaml, until Ctrl-C. Prints the `export` lines that point
/// psk at it: its URL and the only credentials it accepts (others are
/// refused as Cloudflare refuses them).
#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(flatten)]
    pub files: super::args::Files,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// Append one JSON line per PSK that becomes valid, PSK included: for
    /// tests that prove no key was lost. Never point this at a real fleet.
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,

    /// Delay each answer by about MS milliseconds (uniformly between half
    /// and one and a half times MS).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        help_heading = "Misbehaviour"
    )]
    latency: u64,

    /// Answer this share of requests (0 to 1) with a 5xx before doing
    /// anything.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate,
          help_heading = "Misbehaviour")]
    fail_rate: f64,

    /// Handle this share of requests (0 to 1) in full, new PSK included,
    /// then drop the connection without answering: a lost response.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate,
          help_heading = "Misbehaviour")]
    drop_rate: f64,

    /// The token's limit: N requests in any window of SECONDS, announced on
    /// every answer in Cloudflare's `Ratelimit` and `Ratelimit-Policy`
    /// headers; past it, answer 429 with `retry-after` and refuse
    /// everything for the next SECONDS, as Cloudflare does (its limit is
    /// 1200/300).
    #[arg(long, value_name = "N/SECONDS", help_heading = "Misbehaviour")]
    rate_limit: Option<crate::cloudflare::RateLimit>,

    /// The per-IP limit: more than N requests from one address in any
    /// window of SECONDS are answered 429 (Cloudflare's is 200/1). Not
    /// announced in headers, as at Cloudflare.
    #[arg(long, value_name = "N/SECONDS", help_heading = "Misbehaviour")]
    ip_limit: Option<crate::cloudflare::RateLimit>,

    /// Keep `--rate-limit` but do not announce it in headers, as the API
    /// did before September 2025.
    #[arg(long, requires = "rate_limit", help_heading = "Misbehaviour")]
    no_rate_limit_headers: bool,

    /// Other clients of the same token spend its `--rate-limit` budget at
    /// this steady rate (they never go past it themselves). At any time,
    /// `curl -X POST URL/sandbox/spend -d '{"requests":N}'` (URL without
    /// /client/v4) makes them spend N at once.
    #[arg(
        long,
        value_name = "N/SECONDS",
        requires = "rate_limit",
        help_heading = "Misbehaviour"
    )]
    other_clients: Option<crate::cloudflare::RateLimit>,

    /// Seed the misbehaviour's random choices, for a reproducible run.
    #[arg(long, value_name = "N", help_heading = "Misbehaviour")]
    seed: Option<u64>,

    /// Refuse real PSK changes of this tunnel id (repeatable) after
    /// validation passes: `psk_generate` answers 409, the bulk set lists it
    /// as unapplied. For partial-failure drills.
    #[arg(long, value_name = "TUNNEL_ID", help_heading = "Misbehaviour")]
    refuse_changes: Vec<String>,

    /// Run the sandbox's clock this many seconds ahead of this machine's
    /// (negative: behind), in its `Date` headers, key dates and health
    /// windows, as Cloudflare's is from a runner without NTP.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i64).range(-31_536_000..=31_536_000),
        help_heading = "Misbehaviour"
    )]
    clock_offset: i64,

    /// The far ends and their health (shared with `--sandbox`).
    #[command(flatten)]
    far_end: super::far_end::FarEnd,
}

pub async fn run(global: &Global, args: SandboxArgs) -> anyhow::Result<Status> {
    let session = Session::open(global)?;
    let config = &session.config;
    let state = session.read_state()?;
    let options = SandboxOptions {
        ledger: args.ledger.clone(),
        latency: std::time::Duration::from_millis(args.latency),
        fail_rate: args.fail_rate,
        drop_rate: args.drop_rate,
        rate_limit: args.rate_limit,
        ip_limit: args.ip_limit,
        hide_rate_limit_headers: args.no_rate_limit_headers,
        other_clients: args.other_clients,
        seed: args.seed,
        refuse_changes: args.refuse_changes.iter().cloned().collect(),
        // Within a year either way (the parser's range), so always a delta.
        clock_offset: chrono::TimeDelta::try_seconds(args.clock_offset).unwrap_or_default(),
        health: args.far_end.health(),
        far_end: args.far_end.kind(),
        ..SandboxOptions::default()
    };
    let strongswan = matches!(options.far_end, sandbox::FarEndKind::Strongswan { .. });
    if strongswan {
        sandbox::strongswan::check_prerequisites()?;
    }
    let credentials = options.credentials.clone();
    let sb = Sandbox::from_config(config, state.as_ref(), &options).with_context(|| {
        if strongswan {
            "cannot start the sandbox's strongSwan far ends"
        } else {
            "cannot open the ledger file"
        }
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| cannot_listen(args.listen, &e))?;
    let tunnels = sb.tunnel_count();
    let running = sandbox::spawn(listener, Arc::new(sb))?;
    // The server keeps serving even if nobody reads this (a closed pipe):
    // write errors are ignored rather than ending the process.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "psk sandbox: {} tunnel{} in {} account{} at {}",
        tunnels,
        if tunnels == 1 { "" } else { "s" },
        config.accounts().len(),
        if config.accounts().len() == 1 {
            ""
        } else {
            "s"
        },
        running.base_url()
    );
    let _ = writeln!(out, "export CLOUDFLARE_BASE_URL={}", running.base_url());
    // The only credentials it accepts; nothing real, so they may be shown.
    let _ = writeln!(out, "export CLOUDFLARE_API_TOKEN={}", credentials.token);
    let _ = writeln!(
        out,
        "# or, as an email and key: export CLOUDFLARE_EMAIL={} CLOUDFLARE_API_KEY={}",
        credentials.email, credentials.key
    );
    if let Some(fleet) = running.sandbox.fleet() {
        // Where a delivery finds each tunnel's router (examples/strongswan).
        let _ = writeln!(out, "export PSK_SANDBOX_FAR_ENDS={}", fleet.dir().display());
        for t in &config.tunnels {
            if let Some((conf, swanctl)) = fleet.router(&t.key()) {
                let _ = writeln!(
                    out,
                    "# {}: its router is STRONGSWAN_CONF={} SWANCTL_DIR={}",
                    t.name,
                    conf.display(),
                    swanctl.display()
                );
            }
        }
    }
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    let _ = out.flush();
    drop(out);
    // SIGTERM too (`kill`, `timeout`, a service manager): the far ends'
    // namespaces and charons outlive a process that ends without stopping.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    running.stop().await;
    Ok(Status::Success)
}

/// Why the sandbox cannot take its address, and the option that picks
/// another: a port in use is the usual case (another `psk sandbox`).
fn cannot_listen(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    let why = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the port is in use (another `psk sandbox`, or another program, holds it)".to_string()
        }
        _ => e.to_string(),
    };
    let other = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024));
    anyhow::anyhow!(
        "cannot listen on {addr}: {why}\nhint: choose another address with `--listen`, e.g. `psk sandbox --listen {other}` (port 0 picks a free one)"
    )
}
