//! Measures the bytes an apply writes to disk for N tunnels, with the state
//! journal, against what a whole-file write after every change would cost.
//!
//! `cargo run --release --example state_bytes -- 100 1000 10000`
//!
//! Each tunnel goes through what `psk apply` records for a rotation: an
//! intent, then the sealed PSK (a real age seal to one X25519 recipient).
//! The journal numbers are bytes actually written (state, backup and
//! journal); the whole-file numbers are the sizes those writes would have
//! had (state plus backup, twice per tunnel), summed without writing them.

use chrono::{TimeDelta, TimeZone, Utc};
use psk::seal::{self, Psk, Recipient};
use psk::state::{Intent, State};
use psk::tunnel::TunnelKey;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("tunnel counts"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    let recipient: Recipient = age::x25519::Identity::generate()
        .to_public()
        .to_string()
        .parse()
        .expect("recipient");
    let recipients = [recipient];
    println!(
        "| tunnels | journal: bytes written | per tunnel | whole-file writes would write | ratio |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("psk.state.json");
        let mut state = State::new(vec!["sha256:0000000000000000".into()]);
        let location = psk::state::Location::File(path.clone());
        let lock =
            psk::state::Lock::acquire(&location, "bench", std::time::Duration::ZERO).expect("lock");
        let mut journal = lock.journal(&mut state).expect("open journal");
        let mut whole: u64 = 0;
        let mut previous = state.to_bytes().len() as u64;
        let start = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        for i in 0..n {
            let key = TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"));
            let name = format!("tunnel-{i:05}");
            let at = start + TimeDelta::milliseconds(i as i64);
            state.entry(&key, &name).intent = Some(Intent {
                operation: "psk_generate".into(),
                started: at,
            });
            journal.record(&mut state, &key).expect("record intent");
            let now = state.to_bytes().len() as u64;
            whole += now + previous;
            previous = now;

            let psk = Psk::new(format!("{:032}", i));
            let rec = state.entry(&key, &name);
            rec.psk = Some(seal::seal(&psk, &recipients).expect("seal"));
            rec.last_rotated = Some(at);
            rec.intent = None;
            journal.record(&mut state, &key).expect("record PSK");
            let now = state.to_bytes().len() as u64;
            whole += now + previous;
            previous = now;
        }
        let written = journal.finish(&mut state).expect("fold journal");
        println!(
            "| {n} | {written} | {} | {whole} | {:.0}x |",
            written / n as u64,
            whole as f64 / written as f64
        );
    }
}
