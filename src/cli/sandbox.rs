//! `psk sandbox`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::context::{self, Global};
use super::Status;
use crate::sandbox::{self, Sandbox, SandboxOptions};

/// Serve a local stand-in for Cloudflare's Magic IPsec API, holding the
/// tunnels of psk.yaml, until Ctrl-C. Prints the two `export` lines that
/// point psk at it.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// Append one JSON line per PSK that becomes valid, PSK included: for
    /// tests that prove no key was lost. Never point this at a real fleet.
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
}

pub async fn run(global: &Global, args: SandboxArgs) -> anyhow::Result<Status> {
    let config = global.load_config()?;
    let state = context::load_state(&global.state_path(&config))?;
    let options = SandboxOptions {
        ledger: args.ledger.clone(),
    };
    let sb = Sandbox::from_config(&config, state.as_ref(), &options)
        .context("cannot open the ledger file")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let running = sandbox::spawn(listener, Arc::new(sb))?;
    println!(
        "psk sandbox: {} tunnel{} in {} account{} at {}",
        config.tunnels.len(),
        if config.tunnels.len() == 1 { "" } else { "s" },
        config.accounts().len(),
        if config.accounts().len() == 1 {
            ""
        } else {
            "s"
        },
        running.base_url()
    );
    println!("export CLOUDFLARE_BASE_URL={}", running.base_url());
    println!("export CLOUDFLARE_API_TOKEN=sandbox-token");
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(Status::Success)
}
