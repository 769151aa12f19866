//! psk keeps the IPsec pre-shared keys of Cloudflare Magic WAN / Magic
//! Transit tunnels rotated, the way Terraform keeps infrastructure in shape.
//!
//! The library exists so tests and benchmarks can use psk's pieces; the
//! `psk` binary is a thin shell over [`cli::main`].

pub mod apply;
pub mod backoff;
pub mod calendar;
pub mod cli;
pub mod cloudflare;
pub mod config;
pub mod deliver;
pub mod draft;
pub mod health;
pub mod planfile;
pub mod policy;
pub mod reconcile;
pub mod remote;
pub mod render;
pub mod sandbox;
pub mod seal;
pub mod state;
pub mod status;
pub mod suggest;
pub mod terraform;
pub mod tls;
pub mod tunnel;
