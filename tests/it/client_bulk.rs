//! The bulk PSK set (`POST .../ipsec_tunnels/psk`) through psk's client,
//! against the sandbox: chunking, `validate_only`, per-tunnel results.

use std::sync::atomic::Ordering;

use crate::common::*;
use psk::cloudflare::{Client, ClientOptions, Credentials, PskEntry, RetryPolicy, BULK_CHUNK};
use psk::sandbox::SandboxOptions;
use psk::seal::Psk;

fn client(env: &TestEnv, retries: u32) -> Client {
    let options = ClientOptions {
        base_url: env.base_url(),
        retry: RetryPolicy {
            max_attempts: retries + 1,
            no_delay: true,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    Client::new(&Credentials::Token(TOKEN.into()), options).unwrap()
}

fn entries(n: usize) -> Vec<PskEntry> {
    (0..n)
        .map(|i| PskEntry {
            tunnel_id: tunnel_id(i),
            psk: Psk::new(format!("bulk-key-{i:04}-0123456789abcdef")),
        })
        .collect()
}

#[test]
fn a_large_set_goes_in_chunks_and_every_key_lands() {
    const N: usize = 250;
    let mut env = TestEnv::new(N);
    env.start_sandbox();
    let c = client(&env, 0);
    let before = env.block_on(c.list_tunnels(ACCOUNT)).unwrap();
    let all = entries(N);

    let dry = env.block_on(c.set_psks(ACCOUNT, &all, true));
    assert!(dry.failed.is_empty() && dry.unapplied.is_empty(), "{dry:?}");
    assert_eq!(dry.applied.len(), N);
    let chunks = N.div_ceil(BULK_CHUNK) as u64;
    assert_eq!(
        env.sandbox().counters.bulk_validate.load(Ordering::Relaxed),
        chunks
    );
    assert!(env.ledger().is_empty(), "validate_only changed nothing");
    // Under validate_only the dates are the current keys', unchanged.
    for t in &before {
        assert_eq!(dry.applied[&t.id].last_generated_on, t.last_generated_on);
    }

    let real = env.block_on(c.set_psks(ACCOUNT, &all, false));
    assert!(
        real.failed.is_empty() && real.unapplied.is_empty(),
        "{real:?}"
    );
    assert_eq!(
        env.sandbox().counters.bulk_set.load(Ordering::Relaxed),
        chunks
    );
    let ledger = env.ledger();
    let after = env.block_on(c.list_tunnels(ACCOUNT)).unwrap();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(ledger[&e.tunnel_id], vec![e.psk.expose().to_string()]);
        let now = after.iter().find(|t| t.id == e.tunnel_id).unwrap();
        assert!(now.last_generated_on > before[i].last_generated_on);
        assert_eq!(
            real.applied[&e.tunnel_id].last_generated_on,
            now.last_generated_on
        );
    }
}

#[test]
fn per_tunnel_refusals_are_reported_by_tunnel() {
    let mut env = TestEnv::new(2);
    env.start_sandbox();
    let c = client(&env, 0);
    let unknown = "0123456789abcdef0123456789abcdef";
    let set = vec![
        PskEntry {
            tunnel_id: tunnel_id(0).to_ascii_uppercase(),
            psk: Psk::new("good-key-0123456789".into()),
        },
        PskEntry {
            tunnel_id: tunnel_id(1),
            psk: Psk::new("bad key with spaces".into()),
        },
        PskEntry {
            tunnel_id: unknown.into(),
            psk: Psk::new("good-key-0123456789".into()),
        },
    ];
    let out = env.block_on(c.set_psks(ACCOUNT, &set, false));
    assert!(out.failed.is_empty(), "{out:?}");
    assert_eq!(
        out.applied.keys().cloned().collect::<Vec<_>>(),
        vec![tunnel_id(0)]
    );
    assert!(
        out.unapplied[&tunnel_id(1)].contains("printable"),
        "{out:?}"
    );
    assert!(out.unapplied[unknown].contains("not found"), "{out:?}");
    assert_eq!(env.ledger().len(), 1);
    // Reasons never hold the PSK.
    assert!(!format!("{out:?}").contains("good-key-0123456789"));
}

#[test]
fn a_failed_chunk_is_reported_with_its_tunnels_and_unknown_outcome() {
    let mut env = TestEnv::new(3);
    env.start_sandbox_with(SandboxOptions {
        drop_rate: 1.0,
        ..SandboxOptions::default()
    });
    let c = client(&env, 1);
    let out = env.block_on(c.set_psks(ACCOUNT, &entries(3), false));
    assert!(out.applied.is_empty() && out.unapplied.is_empty());
    assert_eq!(out.failed.len(), 1);
    let f = &out.failed[0];
    assert_eq!(f.tunnel_ids, (0..3).map(tunnel_id).collect::<Vec<_>>());
    assert!(
        f.error.outcome_unknown(),
        "the sandbox did set them: {:?}",
        f.error
    );
    assert!(
        f.error.to_string().contains("after 1 retries"),
        "{}",
        f.error
    );
    // It did: both tries committed, and the ledger knows.
    assert_eq!(env.ledger()[&tunnel_id(0)].len(), 2);
    assert!(!f.error.to_string().contains("bulk-key-"));
}
