//! The state file, `psk.state.json`: what psk knows about each tunnel.
//!
//! It holds the only copy of every PSK (sealed with age), so it is written
//! like a database page: deterministic bytes, a temp file in the same folder,
//! fsync, rename, fsync of the folder, and the previous version kept as a
//! backup. A reader never sees a half-written file. An apply appends its
//! per-tunnel changes to a journal and writes the whole file once at the end,
//! so N tunnels cost O(N) bytes, not O(N²) (see [`Journal`]).

mod lock;
mod perms;
mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::tunnel::TunnelKey;
pub use lock::{force_unlock, LockError, LockHolder, StateLock, Unlock};
pub use perms::{warn_if_world_writable, world_writable_warning};
pub use store::{backup_path, journal_path, parse, write_atomic, Journal, StateError};

/// Reads the state, replaying any journal an interrupted apply left;
/// `Ok(None)` when there is no state file yet. (Logs what it read.)
pub fn load(path: &std::path::Path) -> Result<Option<State>, StateError> {
    let state = store::load(path)?;
    log_loaded(path, state.as_ref(), "state loaded");
    Ok(state)
}

/// [`load`] for a writer holding the lock: a journal left by an
/// interrupted apply is folded into the state file first.
pub fn load_for_write(
    path: &std::path::Path,
    lock: &StateLock,
) -> Result<Option<State>, StateError> {
    let state = store::load_for_write(path, lock)?;
    log_loaded(path, state.as_ref(), "state loaded for writing");
    Ok(state)
}

/// Bumps the serial and writes the whole state durably, keeping the
/// previous file as its backup.
pub fn save(path: &std::path::Path, state: &mut State) -> Result<(), StateError> {
    store::save(path, state)?;
    tracing::info!(
        path = %path.display(),
        serial = state.serial,
        tunnels = state.tunnels.len(),
        "state written"
    );
    Ok(())
}

/// Metadata only: path, serial, lineage and counts, never a sealed PSK.
fn log_loaded(path: &std::path::Path, state: Option<&State>, what: &str) {
    match state {
        Some(s) => tracing::info!(
            path = %path.display(),
            serial = s.serial,
            lineage = %s.lineage,
            tunnels = s.tunnels.len(),
            "{what}"
        ),
        None => tracing::info!(path = %path.display(), "no state file yet"),
    }
}

/// The newest state format this build reads.
///
/// Version 2 adds `sealed_to` to a tunnel record (and its pending key): the
/// recipients it is sealed to when they are not the state's `recipients`.
/// A state is written as version 2 only while some record has one, so a
/// psk of version 1 keeps reading every other state, and refuses (rather
/// than misreads) one it would not understand.
pub const STATE_VERSION: u64 = 2;

/// The version written when no record needs version 2.
pub const BASE_STATE_VERSION: u64 = 1;

/// The format version is not kept here: it is checked when the file is read
/// (`store::parse`) and derived when it is written ([`State::needed_version`]),
/// so a state in memory can never claim a version its contents contradict.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "StateFile")]
pub struct State {
    /// Random id fixed when the state is created; a saved plan is bound to it.
    pub lineage: String,
    /// Fingerprints of the recipients every sealed PSK is encrypted to,
    /// except those whose record names others in `sealed_to`.
    pub recipients: Vec<String>,
    /// Bumped on every write.
    pub serial: u64,
    /// Keyed by `account_id/tunnel_id`, so sorted output groups accounts.
    pub tunnels: BTreeMap<String, TunnelState>,
}

/// [`State`] as the file holds it, version included.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    lineage: String,
    recipients: Vec<String>,
    serial: u64,
    #[serde(deserialize_with = "unique_tunnels")]
    tunnels: BTreeMap<String, TunnelState>,
    #[allow(dead_code)] // checked by `store::parse` before this is read
    version: u64,
}

impl From<StateFile> for State {
    fn from(f: StateFile) -> State {
        State {
            lineage: f.lineage,
            recipients: f.recipients,
            serial: f.serial,
            tunnels: f.tunnels,
        }
    }
}

/// Keys in sorted order, and the lowest version that can hold this state.
impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("State", 5)?;
        st.serialize_field("lineage", &self.lineage)?;
        st.serialize_field("recipients", &self.recipients)?;
        st.serialize_field("serial", &self.serial)?;
        st.serialize_field("tunnels", &self.tunnels)?;
        st.serialize_field("version", &self.needed_version())?;
        st.end()
    }
}

/// Field order is alphabetical so the JSON keys come out sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelState {
    pub account_id: String,
    /// How the last hand-over of the sealed PSK to its router went, for
    /// policies with `deliver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Work started but not known to have finished: see [`Intent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// Cloudflare's `psk_metadata.last_generated_on` for the sealed PSK.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub last_rotated: Option<DateTime<Utc>>,
    pub name: String,
    /// A PSK psk generated itself, sealed and made durable *before* it is
    /// sent to Cloudflare: see [`Pending`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The PSK as an ASCII-armored age message to every recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<String>,
    /// Fingerprints of the recipients `psk` is sealed to, when they are not
    /// the state's `recipients`: a key sealed after psk.yaml's recipients
    /// changed and before `psk reseal` caught the rest up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_to: Option<Vec<String>>,
    pub tunnel_id: String,
}

/// A key made by psk (the `local` generator) that Cloudflare has not yet
/// confirmed. It is sealed into the state and fsynced before the request
/// that sets it, so a crash or a lost answer can never lose it: once
/// Cloudflare confirms, it is promoted to `psk`; until then the next apply
/// sends a fresh key in its place (apply cannot open the pending one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// When psk generated it.
    #[serde(with = "rfc3339")]
    pub generated: DateTime<Utc>,
    /// The new PSK as an ASCII-armored age message to every recipient.
    pub psk: String,
    /// As [`TunnelState::sealed_to`], for the pending key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_to: Option<Vec<String>>,
}

/// The outcome of a policy's `deliver` command for the sealed PSK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// Why it failed (exit status, timeout, or a start error); never output
    /// of the command, which could echo the PSK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ok: bool,
}

/// Recorded (and made durable) before a call that changes the PSK on
/// Cloudflare's edge. If psk dies before recording the answer, the intent is
/// what tells the next plan that the key on the edge is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// The API operation, e.g. `psk_generate`.
    pub operation: String,
    #[serde(with = "rfc3339")]
    pub started: DateTime<Utc>,
}

impl State {
    pub fn new(recipients: Vec<String>) -> State {
        State {
            lineage: uuid::Uuid::new_v4().to_string(),
            recipients,
            serial: 0,
            tunnels: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &TunnelKey) -> Option<&TunnelState> {
        self.tunnels.get(&key.to_string())
    }

    /// The record for a tunnel, created empty if absent.
    pub fn entry(&mut self, key: &TunnelKey, name: &str) -> &mut TunnelState {
        let rec = self
            .tunnels
            .entry(key.to_string())
            .or_insert_with(|| TunnelState {
                account_id: key.account_id.clone(),
                delivery: None,
                intent: None,
                last_rotated: None,
                name: name.to_string(),
                pending: None,
                psk: None,
                sealed_to: None,
                tunnel_id: key.tunnel_id.clone(),
            });
        rec.name = name.to_string();
        rec
    }

    pub fn find_by_name(&self, name: &str) -> Option<&TunnelState> {
        self.tunnels.values().find(|t| t.name == name)
    }

    /// Canonical bytes: pretty JSON, keys sorted, trailing newline; the
    /// lowest version that can hold this state.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        bytes.push(b'\n');
        bytes
    }

    fn needed_version(&self) -> u64 {
        let per_tunnel = self.tunnels.values().any(|t| {
            t.sealed_to.is_some() || t.pending.as_ref().is_some_and(|p| p.sealed_to.is_some())
        });
        if per_tunnel {
            STATE_VERSION
        } else {
            BASE_STATE_VERSION
        }
    }

    /// What a record's `sealed_to` should say for a key sealed to
    /// `fingerprints` now: nothing when that is the state's own list.
    pub fn sealed_to_for(&self, fingerprints: &[String]) -> Option<Vec<String>> {
        (canonical(&self.recipients) != canonical(fingerprints)).then(|| canonical(fingerprints))
    }

    /// The recipients the `psk` of `rec` is sealed to.
    pub fn psk_sealed_to<'a>(&'a self, rec: &'a TunnelState) -> &'a [String] {
        rec.sealed_to.as_deref().unwrap_or(&self.recipients)
    }

    /// The recipients the pending key of `rec` is sealed to.
    pub fn pending_sealed_to<'a>(&'a self, pending: &'a Pending) -> &'a [String] {
        pending.sealed_to.as_deref().unwrap_or(&self.recipients)
    }

    /// When every sealed key names the same recipients in `sealed_to`
    /// (an apply rotated them all after psk.yaml's recipients changed),
    /// that list becomes the state's and the per-record lists go, so the
    /// file stays small and readable by a psk of version 1.
    pub fn compact_recipients(&mut self) {
        let mut lists = self.tunnels.values().flat_map(|t| {
            let psk = t.psk.as_ref().map(|_| t.sealed_to.as_deref());
            let pending = t.pending.as_ref().map(|p| p.sealed_to.as_deref());
            psk.into_iter().chain(pending)
        });
        let Some(Some(first)) = lists.next() else {
            return;
        };
        let first = first.to_vec();
        if !lists.all(|l| l == Some(first.as_slice())) {
            return;
        }
        self.recipients = first;
        for t in self.tunnels.values_mut() {
            t.sealed_to = None;
            if let Some(p) = t.pending.as_mut() {
                p.sealed_to = None;
            }
        }
    }
}

/// Sorted and without repeats, so lists compare as sets.
pub fn canonical(fingerprints: &[String]) -> Vec<String> {
    let mut v = fingerprints.to_vec();
    v.sort();
    v.dedup();
    v
}

impl TunnelState {
    pub fn key(&self) -> TunnelKey {
        TunnelKey::new(&self.account_id, &self.tunnel_id)
    }

    /// Records a locally generated, already sealed key as pending. The
    /// caller makes it durable ([`Journal::record`]) before sending it.
    pub fn stage_pending(
        &mut self,
        sealed: String,
        sealed_to: Option<Vec<String>>,
        generated: DateTime<Utc>,
    ) {
        self.pending = Some(Pending {
            generated,
            psk: sealed,
            sealed_to,
        });
    }

    /// Cloudflare confirmed the pending key: it becomes the tunnel's PSK,
    /// dated as Cloudflare dates it. Returns false when nothing was pending.
    pub fn promote_pending(&mut self, last_generated_on: DateTime<Utc>) -> bool {
        match self.pending.take() {
            Some(p) => {
                self.psk = Some(p.psk);
                self.sealed_to = p.sealed_to;
                self.last_rotated = Some(last_generated_on);
                self.intent = None;
                true
            }
            None => false,
        }
    }
}

/// A record listed twice (a bad merge of two branches' state) must not
/// silently drop one of its sealed PSKs, as a plain map would.
fn unique_tunnels<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, TunnelState>, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, TunnelState>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of tunnel records")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, TunnelState>()? {
                if out.contains_key(&k) {
                    // Echo the key only when it looks like one: a damaged
                    // file could put anything there.
                    let shown = if k.len() <= 80 && k.bytes().all(|b| b.is_ascii_graphic()) {
                        format!("`{k}`")
                    } else {
                        "a tunnel".into()
                    };
                    return Err(serde::de::Error::custom(format!(
                        "{shown} is recorded twice (a bad merge?); keep the record whose PSK is current and remove the other"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

/// Timestamps as RFC 3339 in UTC with `Z`, seconds unless Cloudflare gave more.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time: {e}")))
    }
}

mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        super::rfc3339::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    fn sealed(state: &mut State, i: usize, sealed_to: Option<Vec<String>>) {
        let key = TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"));
        let rec = state.entry(&key, &format!("t{i}"));
        rec.psk = Some(format!("sealed-{i}"));
        rec.sealed_to = sealed_to;
    }

    #[test]
    fn per_record_recipients_need_version_2_and_compact_away() {
        let old = vec!["sha256:old".to_string()];
        let new = vec!["sha256:new".to_string(), "sha256:old".to_string()];
        let mut s = State::new(old.clone());
        sealed(&mut s, 0, None);
        sealed(&mut s, 1, None);
        assert_eq!(s.sealed_to_for(&old), None);
        assert_eq!(s.sealed_to_for(&new), Some(new.clone()));
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");

        // One key sealed to the new list: version 2, and nothing to compact.
        let to_new = s.sealed_to_for(&new);
        sealed(&mut s, 0, to_new.clone());
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert!(text.contains("\"sealed_to\""), "{text}");
        let before = s.clone();
        s.compact_recipients();
        assert_eq!(s, before);

        // Every key sealed to it: the header takes the list, version 1.
        sealed(&mut s, 1, to_new);
        s.compact_recipients();
        assert_eq!(s.recipients, new);
        assert!(s.tunnels.values().all(|t| t.sealed_to.is_none()));
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    use super::*;

    fn sample() -> State {
        let mut s = State::new(vec!["sha256:00".into()]);
        s.lineage = "fixed".into();
        let key = TunnelKey::new(
            "023e105f4ecef8ad9ca31a8372d0c353",
            "0123456789abcdef0123456789abcdef",
        );
        let rec = s.entry(&key, "fra-primary");
        rec.last_rotated = Some("2026-08-01T10:00:00Z".parse().unwrap());
        rec.psk = Some(
            "-----BEGIN AGE ENCRYPTED FILE-----\nx\n-----END AGE ENCRYPTED FILE-----\n".into(),
        );
        s
    }

    #[test]
    fn bytes_are_deterministic_and_sorted() {
        let s = sample();
        let a = String::from_utf8(s.to_bytes()).unwrap();
        assert_eq!(a, String::from_utf8(s.clone().to_bytes()).unwrap());
        assert!(a.ends_with("}\n"));
        let order: Vec<usize> = [
            "\"lineage\"",
            "\"recipients\"",
            "\"serial\"",
            "\"tunnels\"",
            "\"version\"",
        ]
        .iter()
        .map(|k| a.find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{a}");
        assert!(a.contains("\"last_rotated\": \"2026-08-01T10:00:00Z\""));
        assert!(!a.contains("intent"));
    }

    #[test]
    fn pending_key_is_kept_until_promoted() {
        let mut s = sample();
        let key = s.tunnels.values().next().unwrap().key();
        let old = s.get(&key).unwrap().psk.clone();
        let generated: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        s.entry(&key, "fra-primary")
            .stage_pending("sealed-new".into(), None, generated);
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(text.contains("\"pending\": {"), "{text}");
        let back: State = serde_json::from_slice(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        // Not confirmed yet: the old key is still the tunnel's PSK.
        assert_eq!(s.get(&key).unwrap().psk, old);

        let confirmed: DateTime<Utc> = "2026-11-26T12:00:01Z".parse().unwrap();
        let rec = s.entry(&key, "fra-primary");
        assert!(rec.promote_pending(confirmed));
        assert_eq!(rec.psk.as_deref(), Some("sealed-new"));
        assert_eq!(rec.last_rotated, Some(confirmed));
        assert!(rec.pending.is_none());
        assert!(!rec.promote_pending(confirmed), "nothing left to promote");
    }

    #[test]
    fn round_trips() {
        let mut s = sample();
        let key = s.tunnels.values().next().unwrap().key();
        s.entry(&key, "fra-primary").intent = Some(Intent {
            operation: "psk_generate".into(),
            started: "2026-08-01T10:00:00.5Z".parse().unwrap(),
        });
        let back: State = serde_json::from_slice(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
    }
}
