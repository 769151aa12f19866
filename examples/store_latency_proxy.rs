//! The tests' fault proxy (`tests/it/common/fault_proxy.rs`) as a process
//! of its own, for `bench/store.sh`: between psk and a real SeaweedFS on
//! 127.0.0.1, it adds a latency to every request to the store, as a
//! bucket in another data center would, and counts the requests by kind.
//!
//! `store_latency_proxy UPSTREAM LATENCY_MS COUNTERS_FILE`
//!
//! Prints `export AWS_ENDPOINT_URL=http://127.0.0.1:PORT` once listening on
//! a free loopback port, then serves until killed, writing its counters
//! (`{"requests": N, "PUT": N, "GET": N, "HEAD": N, "LIST": N, ...}`) to
//! COUNTERS_FILE every 50 ms.

use std::io::Write;
use std::time::Duration;

// The one implementation the tests use; the bench needs only its latency
// and counters, not the faults the tests arm.
#[allow(dead_code)]
#[path = "../tests/it/common/fault_proxy.rs"]
mod fault_proxy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [upstream, latency, counters] = args.as_slice() else {
        eprintln!("usage: store_latency_proxy UPSTREAM LATENCY_MS COUNTERS_FILE");
        std::process::exit(1);
    };
    let Ok(latency) = latency.parse::<u64>() else {
        eprintln!("LATENCY_MS must be a whole number of milliseconds, not `{latency}`");
        std::process::exit(1);
    };
    let proxy = fault_proxy::FaultProxy::start(upstream);
    proxy.set_latency(Duration::from_millis(latency));
    println!("export AWS_ENDPOINT_URL={}", proxy.endpoint());
    std::io::stdout().flush().ok();
    let path = std::path::PathBuf::from(counters);
    let tmp = path.with_extension("tmp");
    loop {
        let mut counts = serde_json::Map::new();
        counts.insert("requests".into(), proxy.requests().into());
        for (kind, n) in proxy.requests_by_kind() {
            counts.insert(kind, n.into());
        }
        let text = serde_json::Value::Object(counts).to_string();
        if std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            eprintln!("cannot write the counters to {}", path.display());
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
