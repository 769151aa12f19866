//! `psk sandbox` for `bench/run.sh`: the same in-process sandbox, plus its
//! request counters written as JSON to a file every 50 ms, because the
//! benchmark needs requests made and 429s sent per command and the real
//! `psk sandbox` keeps its counters to itself.
//!
//! `bench_sandbox CONFIG LATENCY_MS RATE|none COUNTERS_FILE [IP_RATE]`
//!
//! RATE is the token's limit (announced in `Ratelimit` headers, 429 past
//! it), IP_RATE the per-IP limit (429 past it); Cloudflare's are 1200/300
//! and 200/1.
//!
//! Prints `export CLOUDFLARE_BASE_URL=...` on stdout once listening on a
//! free loopback port, then serves until killed.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use psk::cloudflare::RateLimit;
use psk::config::Config;
use psk::sandbox::{self, Counters, Sandbox, SandboxOptions};

fn snapshot(c: &Counters) -> String {
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    serde_json::json!({
        "requests": g(&c.requests),
        "list": g(&c.list),
        "get": g(&c.get),
        "generate": g(&c.generate),
        "generate_validate": g(&c.generate_validate),
        "bulk_set": g(&c.bulk_set),
        "bulk_validate": g(&c.bulk_validate),
        "unauthorized": g(&c.unauthorized),
        "rate_limited": g(&c.rate_limited),
        "ip_limited": g(&c.ip_limited),
        "failed": g(&c.failed),
        "dropped": g(&c.dropped),
    })
    .to_string()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, latency, rate, counters, ip) = match args.as_slice() {
        [c, l, r, k] => (c, l, r, k, None),
        [c, l, r, k, ip] => (c, l, r, k, Some(ip)),
        _ => {
            eprintln!("usage: bench_sandbox CONFIG LATENCY_MS RATE|none COUNTERS_FILE [IP_RATE]");
            std::process::exit(1);
        }
    };
    let ip_limit = ip.map(|ip| {
        ip.parse::<RateLimit>().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1);
        })
    });
    let config = Config::load(std::path::Path::new(config)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let rate_limit = if rate == "none" {
        None
    } else {
        Some(rate.parse::<RateLimit>().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1);
        }))
    };
    let options = SandboxOptions {
        latency: Duration::from_millis(latency.parse().expect("latency in ms")),
        rate_limit,
        ip_limit,
        ..SandboxOptions::default()
    };
    let sb = Arc::new(Sandbox::from_config(&config, None, &options).expect("sandbox"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let running = sandbox::spawn(listener, sb.clone()).expect("serve");
    println!("export CLOUDFLARE_BASE_URL={}", running.base_url());
    std::io::stdout().flush().ok();
    let path = std::path::PathBuf::from(counters);
    let tmp = path.with_extension("tmp");
    loop {
        std::fs::write(&tmp, snapshot(&sb.counters)).expect("write counters");
        std::fs::rename(&tmp, &path).expect("rename counters");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
