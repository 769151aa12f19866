//! How much room an apply holds on the state's filesystem before its first
//! API call.
//!
//! Cloudflare hands out a generated key once. If the disk is full when the
//! answer comes, the key would be live on the edge and nowhere else. So
//! apply reserves, up front, room for every journal line its plan can write
//! and for the final write of the state (see `Journal::reserve`); without
//! it, apply does not start.

use crate::config::Config;
use crate::reconcile::Plan;
use crate::seal::{self, Psk};
use crate::state::State;

/// Bytes of a record beyond its sealed keys: ids, name, dates, intent,
/// delivery, recipient lists, JSON punctuation. Generous on purpose.
const RECORD_OVERHEAD: u64 = 1024;

/// The room `plan` needs beside the state: each PSK change is written up
/// to three times in the journal (its intent, its key, its delivery), with
/// a pending and a sealed key at worst, and the final write holds the
/// grown state twice (the new file and the backup). Zero when no PSK
/// changes: nothing new is ever answered then.
pub fn needed(config: &Config, plan: &Plan, state: &State) -> u64 {
    let changes = (plan.actions.iter())
        .filter(|a| a.kind.changes_psk())
        .count() as u64;
    if changes == 0 {
        return 0;
    }
    // The size of a sealed key, measured: it grows with the recipients.
    let sealed = seal::seal(&Psk::new("x".repeat(128)), &config.recipients)
        .map_or(8 * 1024, |s| s.len() as u64);
    let record = 2 * sealed + RECORD_OVERHEAD;
    let journal = changes * 3 * record;
    let final_write = 2 * (state.to_bytes().len() as u64 + changes * record);
    journal + final_write
}
