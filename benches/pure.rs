//! Criterion benchmarks of psk's pure parts (issue 9): reading psk.yaml,
//! planning, rendering a plan and reading and writing the state, each over
//! fleets of 100, 1,000 and 10,000 tunnels built in memory.
//!
//! `cargo bench --bench pure` (all), `cargo bench --bench pure -- reconcile`
//! (one group). The fleet has the shape of `bench/fleet.sh`: one account,
//! one site per tunnel, every tunnel due under a 1-day policy. No disk, no
//! network, no clock: the figures are the code's own cost.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
};
use psk::config::Config;
use psk::reconcile::{reconcile, Plan};
use psk::render;
use psk::seal::{self, Psk};
use psk::state::State;

const SIZES: [usize; 3] = [100, 1_000, 10_000];

/// An age recipient whose identity nobody keeps: the benches seal, never open.
const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

/// The psk.yaml `bench/fleet.sh N cloudflare RECIPIENT` prints.
fn fleet_yaml(n: usize) -> String {
    let mut text = format!(
        "version: 1\nstate: psk.state.json\nrecipients:\n  - {RECIPIENT}\n\
         defaults:\n  policy: bench\npolicies:\n  bench:\n    rotate_every: 1d\n    generator: cloudflare\n\
         accounts:\n  bench:\n    id: 0123456789abcdef0123456789abcdef\n    tunnels:\n"
    );
    for i in 1..=n {
        text.push_str(&format!(
            "      - name: t{i:05}\n        id: {i:032x}\n        site: s{i:05}\n"
        ));
    }
    text
}

fn config(n: usize) -> Config {
    Config::parse(Path::new("psk.yaml"), &fleet_yaml(n)).expect("the bench fleet is valid")
}

/// A state holding a sealed PSK for every tunnel, rotated two days before
/// [`now`], so every tunnel is due again. One real seal, copied: the
/// ciphertext's size, not its content, is what the code handles.
fn sealed_state(config: &Config) -> State {
    let sealed = seal::seal(&Psk::new("x".repeat(32)), &config.recipients).expect("seal");
    let mut state = State::new(config.recipient_fingerprints());
    state.lineage = "00000000-0000-4000-8000-000000000000".into();
    for t in &config.tunnels {
        let rec = state.entry(&t.key(), &t.name);
        rec.psk = Some(sealed.clone());
        rec.last_rotated = Some(now() - TimeDelta::days(2));
    }
    state
}

/// Few samples, each one iteration: the 10,000-tunnel cases take a tenth
/// of a second each, and `cargo bench` should finish in minutes on 2 cores.
fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);
    g
}

fn config_parse(c: &mut Criterion) {
    let mut g = configure(c, "config_parse");
    for n in SIZES {
        let text = fleet_yaml(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| Config::parse(Path::new("psk.yaml"), black_box(text)).unwrap())
        });
    }
    g.finish();
}

fn reconcile_plans(c: &mut Criterion) {
    let mut g = configure(c, "reconcile");
    for n in SIZES {
        let config = config(n);
        let state = sealed_state(&config);
        g.bench_with_input(BenchmarkId::new("no_state", n), &config, |b, config| {
            b.iter(|| reconcile(black_box(config), None, None, now()))
        });
        g.bench_with_input(BenchmarkId::new("sealed_state", n), &config, |b, config| {
            b.iter(|| reconcile(black_box(config), Some(&state), None, now()))
        });
    }
    g.finish();
}

fn render_plans(c: &mut Criterion) {
    let mut g = configure(c, "render");
    for n in SIZES {
        let config = config(n);
        let state = sealed_state(&config);
        let plan: Plan = reconcile(&config, Some(&state), None, now());
        let diff = render::diff::state_diff(Some(&state), &plan, "psk.state.json");
        g.bench_with_input(BenchmarkId::new("human", n), &plan, |b, plan| {
            b.iter(|| {
                let mut out = Vec::new();
                render::human(black_box(plan), &mut out).unwrap();
                out
            })
        });
        g.bench_with_input(BenchmarkId::new("markdown", n), &plan, |b, plan| {
            b.iter(|| {
                let mut out = Vec::new();
                render::markdown::markdown(black_box(plan), &diff, &mut out).unwrap();
                out
            })
        });
        g.bench_with_input(BenchmarkId::new("json", n), &plan, |b, plan| {
            b.iter(|| {
                let mut out = Vec::new();
                render::json(black_box(plan), &mut out).unwrap();
                out
            })
        });
        g.bench_with_input(BenchmarkId::new("state_diff", n), &plan, |b, plan| {
            b.iter(|| render::diff::state_diff(Some(&state), black_box(plan), "psk.state.json"))
        });
    }
    g.finish();
}

fn state_files(c: &mut Criterion) {
    let mut g = configure(c, "state");
    for n in SIZES {
        let state = sealed_state(&config(n));
        let bytes = state.to_bytes();
        g.bench_with_input(BenchmarkId::new("parse", n), &bytes, |b, bytes| {
            b.iter(|| psk::state::parse(Path::new("psk.state.json"), black_box(bytes)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("serialize", n), &state, |b, state| {
            b.iter(|| black_box(state).to_bytes())
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    config_parse,
    reconcile_plans,
    render_plans,
    state_files
);
criterion_main!(benches);
