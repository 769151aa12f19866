//! The state file, `psk.state.json`: what psk knows about each tunnel.
//!
//! It holds the only copy of every PSK (sealed with age), so it is written
//! like a database page: deterministic bytes, a temp file in the same folder,
//! fsync, rename, fsync of the folder, and the previous version kept as a
//! backup. A reader never sees a half-written file. An apply appends its
//! per-tunnel changes to a journal and writes the whole file once at the end,
//! so N tunnels cost O(N) bytes, not O(N²) (see [`Journal`]).
//!
//! A tunnel's record changes only through the transitions on
//! [`TunnelState`] (begin a rotation, record a key, withdraw an attempt,
//! record a delivery, re-seal), so `apply`, `import`, `reseal` and
//! `deliver` can never disagree on what a new key resets. Records are
//! keyed by [`TunnelKey`]; the file writes the key as `account_id/tunnel_id`.

mod backend;
mod belongs;
pub mod durable;
mod error;
mod journal;
mod ledger;
pub mod location;
mod lock;
mod missing;
mod perms;
pub mod remote;
pub mod rescue;
mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::tunnel::TunnelKey;
pub use backend::{Lock, LockFailed};
pub use belongs::{check_belongs, Foreign};
pub use durable::write_atomic;
pub use error::{LostLock, StateError};
pub use journal::Journal;
pub use ledger::Unsaved;
pub use location::Location;
pub use lock::{force_unlock, LockError, LockHolder, StateLock, Unlock};
pub use missing::{NewState, Traces};
pub use perms::{warn_if_world_writable, world_writable_warning};
pub use store::{backup_path, journal_path, parse, reserve_path};

/// Reads the state, replaying any journal an interrupted apply left;
/// `Ok(None)` when there is no state file yet and `new_state` allows one.
/// (Logs what it read.)
pub fn load(location: &Location, new_state: NewState) -> Result<Option<State>, StateError> {
    let state = backend::load(location, new_state)?;
    log_loaded(location.path(), state.as_ref(), "state loaded");
    Ok(state)
}

/// [`load`] for a writer holding the lock: a journal left by an
/// interrupted apply is folded into the state file first.
pub fn load_for_write(lock: &Lock, new_state: NewState) -> Result<Option<State>, StateError> {
    let state = backend::load_for_write(lock, new_state)?;
    log_loaded(
        lock.location().path(),
        state.as_ref(),
        "state loaded for writing",
    );
    Ok(state)
}

/// Bumps the serial and writes the whole state durably (to where `lock`
/// was taken), keeping the previous version as its backup.
pub fn save(lock: &Lock, state: &mut State) -> Result<(), StateError> {
    backend::save(lock, state)?;
    tracing::info!(
        path = %lock.location().path().display(),
        serial = state.serial,
        tunnels = state.tunnels.len(),
        "state written"
    );
    Ok(())
}

/// Writes `state` as it is, lineage and serial kept, over the state `lock`
/// holds (read under it): `move-state`'s copy.
pub fn write_copy(lock: &Lock, state: &State) -> Result<(), StateError> {
    backend::write_copy(lock, state)?;
    tracing::info!(to = %lock.location(), serial = state.serial, "state copied");
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
/// than misreads) one it would not understand. Version 3 adds a record's
/// `verification` (a rotated tunnel not yet shown back up), written only
/// while some record has one.
pub const STATE_VERSION: u64 = 3;

/// The version written when no record needs version 2.
pub const BASE_STATE_VERSION: u64 = 1;

/// The format version is not kept here: it is checked when the file is read
/// (`store::parse`) and derived when it is written (`State::needed_version`),
/// so a state in memory can never claim a version its contents contradict.
///
/// There is no `Deserialize`: a state comes only from [`parse`], which checks
/// that every record matches its key before it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Random id fixed when the state is created; a saved plan is bound to it.
    pub lineage: String,
    /// Fingerprints of the recipients every sealed PSK is encrypted to,
    /// except those whose record names others in `sealed_to`.
    pub recipients: Vec<String>,
    /// Bumped on every write.
    pub serial: u64,
    /// Written as `account_id/tunnel_id`, sorted, so accounts group. Both
    /// ids are 32 lowercase hex characters, so the key's (account, tunnel)
    /// order is exactly the order of those strings: the bytes do not change
    /// with the key's type.
    pub tunnels: BTreeMap<TunnelKey, TunnelState>,
}

/// [`State`] as the file holds it, version included, keyed by the text the
/// file has (checked against each record by `store::parse`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateFile {
    pub(crate) lineage: String,
    pub(crate) recipients: Vec<String>,
    pub(crate) serial: u64,
    #[serde(deserialize_with = "unique_tunnels")]
    pub(crate) tunnels: BTreeMap<String, TunnelState>,
    #[allow(dead_code)] // checked by `store::parse` before this is read
    version: u64,
}

impl StateFile {
    /// The state, each record under its own key. Only for a file whose keys
    /// were checked to be their records' (`store::parse` does), so nothing
    /// is merged or dropped.
    pub(crate) fn into_state(self) -> State {
        State {
            lineage: self.lineage,
            recipients: self.recipients,
            serial: self.serial,
            tunnels: self
                .tunnels
                .into_values()
                .map(|rec| (rec.key(), rec))
                .collect(),
        }
    }
}

/// A key as the file writes it, `account_id/tunnel_id`: `None` unless both
/// are Cloudflare ids and the text is exactly what [`TunnelKey`] displays.
pub fn parse_key(text: &str) -> Option<TunnelKey> {
    let (account, tunnel) = text.split_once('/')?;
    let ids = crate::tunnel::is_cloudflare_id(account) && crate::tunnel::is_cloudflare_id(tunnel);
    let key = TunnelKey::new(account, tunnel);
    (ids && key.to_string() == text).then_some(key)
}

/// Tunnel records (or their absence, in a journal line) as a JSON object
/// keyed by `account_id/tunnel_id`, in the map's order.
pub(crate) fn serialize_by_key<'a, S, V>(
    records: impl IntoIterator<Item = (&'a TunnelKey, V)>,
    s: S,
) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    V: Serialize,
{
    s.collect_map(records.into_iter().map(|(k, v)| (k.to_string(), v)))
}

/// Keys in sorted order, and the lowest version that can hold this state.
impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Tunnels<'a>(&'a BTreeMap<TunnelKey, TunnelState>);
        impl Serialize for Tunnels<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_by_key(self.0, s)
            }
        }
        let mut st = s.serialize_struct("State", 5)?;
        st.serialize_field("lineage", &self.lineage)?;
        st.serialize_field("recipients", &self.recipients)?;
        st.serialize_field("serial", &self.serial)?;
        st.serialize_field("tunnels", &Tunnels(&self.tunnels))?;
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
    /// The outage of the rotation that made the sealed PSK, in
    /// milliseconds: from Cloudflare's answer that the edge took the key
    /// to the path shown back up by `verify`, on the runner's monotonic
    /// clock. Absent when the rotation was not verified (nothing measured
    /// it) or the state predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_ms: Option<u64>,
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
    /// A new PSK whose tunnel is not (yet) shown back up (a policy's
    /// `verify`): see [`Verification`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// Recorded (and made durable) when `verify` starts waiting for a rotated
/// tunnel to come back, and kept when it did not: until the tunnel is shown
/// healthy again (or the operator says so with `psk verify`), every other
/// path of its site is held back, since the site may hang on its siblings
/// alone. A record whose `failed` is empty is a wait that never finished
/// (psk was killed): just as uncertain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// Why it is not shown back up, when psk gave up waiting (never the
    /// probe's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When psk gave up waiting; absent while (or if killed while) waiting.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub failed: Option<DateTime<Utc>>,
    /// When the new key reached the edge: the path is down from then until
    /// its far end holds the key.
    #[serde(with = "rfc3339")]
    pub since: DateTime<Utc>,
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
        self.tunnels.get(key)
    }

    /// The record for a tunnel, created empty if absent; its name follows
    /// psk.yaml's.
    pub fn entry(&mut self, key: &TunnelKey, name: &str) -> &mut TunnelState {
        let rec = self
            .tunnels
            .entry(key.clone())
            .or_insert_with(|| TunnelState {
                account_id: key.account_id.clone(),
                delivery: None,
                intent: None,
                last_rotated: None,
                name: name.to_string(),
                outage_ms: None,
                pending: None,
                psk: None,
                sealed_to: None,
                tunnel_id: key.tunnel_id.clone(),
                verification: None,
            });
        rec.name = name.to_string();
        rec
    }

    /// Drops a tunnel psk.yaml no longer lists (state only: the tunnel is
    /// never touched).
    pub fn forget(&mut self, key: &TunnelKey) -> Option<TunnelState> {
        self.tunnels.remove(key)
    }

    /// Cloudflare surely did not act on the announced call: the intent
    /// goes (the edge still holds the recorded key), and so does a record
    /// left holding nothing (a first generation Cloudflare refused).
    pub fn withdraw_intent(&mut self, key: &TunnelKey) {
        self.withdraw(key, TunnelState::withdraw_intent);
    }

    /// Cloudflare surely did not set the pending key, so it is live
    /// nowhere: it goes, and so does a record left holding nothing (a first
    /// local key Cloudflare refused).
    pub fn withdraw_pending(&mut self, key: &TunnelKey) {
        self.withdraw(key, TunnelState::withdraw_pending);
    }

    fn withdraw(&mut self, key: &TunnelKey, how: fn(&mut TunnelState)) {
        if let Some(rec) = self.tunnels.get_mut(key) {
            how(rec);
            if rec.holds_nothing() {
                self.tunnels.remove(key);
            }
        }
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
        if self.tunnels.values().any(|t| t.verification.is_some()) {
            STATE_VERSION
        } else if per_tunnel {
            2
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
        self.adopt_recipients(first);
    }

    /// Every sealed key is now sealed to `recipients` (`psk reseal` made it
    /// so, or [`State::compact_recipients`] found it so): the header says
    /// it once and the per-record lists go.
    pub fn adopt_recipients(&mut self, recipients: Vec<String>) {
        self.recipients = recipients;
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

/// Which sealed key of a record: the tunnel's PSK or the pending one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Psk,
    Pending,
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::Psk => "psk",
            Slot::Pending => "pending",
        })
    }
}

/// The changes every command makes to a tunnel's record, in one place, so
/// `apply`, `import`, `reseal` and `deliver` leave a record the same way.
/// A rotation begins ([`begin_rotation`](Self::begin_rotation) or
/// [`stage_pending`](Self::stage_pending)), then either a key is recorded
/// ([`record_key`](Self::record_key), [`promote_pending`](Self::promote_pending))
/// or the attempt is withdrawn ([`State::withdraw_intent`],
/// [`State::withdraw_pending`]); a delivery is recorded for the key held.
impl TunnelState {
    pub fn key(&self) -> TunnelKey {
        TunnelKey::new(&self.account_id, &self.tunnel_id)
    }

    /// Announces a call that changes the PSK on the edge (`operation`,
    /// e.g. `psk_generate`). The old key, any pending key and the delivery
    /// stay: until an answer is recorded, they are all still true.
    pub fn begin_rotation(&mut self, operation: &str, started: DateTime<Utc>) {
        self.intent = Some(Intent {
            operation: operation.to_string(),
            started,
        });
    }

    /// Records a locally generated, already sealed key as pending. The
    /// caller makes it durable ([`Journal::record`]) before sending it. Like
    /// [`begin_rotation`](Self::begin_rotation), it changes nothing else.
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

    /// "This tunnel's PSK is now `sealed`", dated `last_rotated` (as
    /// Cloudflare dates it). It resets everything that described the
    /// previous key or the attempt to replace it:
    /// - `intent`: the call it announced has been answered; the edge's key
    ///   is this one, no longer unknown;
    /// - `pending`: the edge now holds this key, so a pending key is live
    ///   nowhere (it was never delivered: only a recorded key is), and
    ///   keeping it would make the next plan rotate again;
    /// - `delivery`: it said how the previous key reached its router; this
    ///   one has not been handed over yet;
    /// - `verification`: it was about the previous key; a policy with
    ///   `verify` starts a new one ([`begin_verification`](Self::begin_verification)).
    pub fn record_key(
        &mut self,
        sealed: String,
        sealed_to: Option<Vec<String>>,
        last_rotated: DateTime<Utc>,
    ) {
        self.psk = Some(sealed);
        self.sealed_to = sealed_to;
        self.last_rotated = Some(last_rotated);
        self.intent = None;
        self.pending = None;
        self.delivery = None;
        self.verification = None;
        self.outage_ms = None;
    }

    /// `verify` starts waiting for the tunnel, whose new key is on the edge
    /// since `since`, to come back. Made durable before the wait, so a
    /// crash leaves the next plan knowing the path may be down.
    pub fn begin_verification(&mut self, since: DateTime<Utc>) {
        self.verification = Some(Verification {
            since,
            failed: None,
            error: None,
        });
    }

    /// How the wait ended: shown back up (`Ok`, the record goes), or not
    /// (`Err` with why; the record stays and holds the site's other paths).
    pub fn end_verification(&mut self, result: Result<(), String>, at: DateTime<Utc>) {
        match result {
            Ok(()) => self.verification = None,
            Err(error) => {
                let since = self.verification.as_ref().map_or(at, |v| v.since);
                self.verification = Some(Verification {
                    since,
                    failed: Some(at),
                    error: Some(error),
                });
            }
        }
    }

    /// The rotation of the sealed key was shown back up `outage` after the
    /// edge took it (see [`TunnelState::outage_ms`]).
    pub fn record_outage(&mut self, outage: std::time::Duration) {
        self.outage_ms = Some(u64::try_from(outage.as_millis()).unwrap_or(u64::MAX));
    }

    /// Cloudflare confirmed the pending key: [`record_key`](Self::record_key)
    /// with it. Returns false when nothing was pending.
    pub fn promote_pending(&mut self, last_generated_on: DateTime<Utc>) -> bool {
        match self.pending.take() {
            Some(p) => {
                self.record_key(p.psk, p.sealed_to, last_generated_on);
                true
            }
            None => false,
        }
    }

    /// See [`State::withdraw_intent`], which also drops a record left empty.
    fn withdraw_intent(&mut self) {
        self.intent = None;
    }

    /// See [`State::withdraw_pending`], which also drops a record left empty.
    fn withdraw_pending(&mut self) {
        self.pending = None;
    }

    /// No key and no work in flight: nothing that must outlive the record.
    fn holds_nothing(&self) -> bool {
        self.psk.is_none() && self.pending.is_none() && self.intent.is_none()
    }

    /// How handing the recorded key to its router went; `Err` says why it
    /// failed (never the command's output, which could echo the PSK).
    pub fn record_delivery(&mut self, result: Result<(), String>, at: DateTime<Utc>) {
        self.delivery = Some(Delivery {
            at,
            ok: result.is_ok(),
            error: result.err(),
        });
    }

    /// The sealed text in `slot` and the recipients the record names for
    /// it (`None`: the state's own).
    pub fn sealed(&self, slot: Slot) -> Option<(&str, Option<&Vec<String>>)> {
        match slot {
            Slot::Psk => self.psk.as_deref().map(|p| (p, self.sealed_to.as_ref())),
            Slot::Pending => self
                .pending
                .as_ref()
                .map(|p| (p.psk.as_str(), p.sealed_to.as_ref())),
        }
    }

    /// The same key, sealed again (to other recipients): its date, intent
    /// and delivery stay, since the key itself did not change. Returns
    /// false when `slot` holds no key.
    pub fn reseal(&mut self, slot: Slot, sealed: String, sealed_to: Option<Vec<String>>) -> bool {
        match slot {
            Slot::Psk if self.psk.is_some() => {
                self.psk = Some(sealed);
                self.sealed_to = sealed_to;
            }
            Slot::Pending => match self.pending.as_mut() {
                Some(p) => {
                    p.psk = sealed;
                    p.sealed_to = sealed_to;
                }
                None => return false,
            },
            Slot::Psk => return false,
        }
        true
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

    /// A verification is recorded when the wait starts, kept with why when
    /// it fails, dropped when the tunnel is back or gets a new key; only a
    /// state holding one needs version 3.
    #[test]
    fn a_verification_lives_from_its_wait_to_its_tunnel_back_up() {
        let key = TunnelKey::new(&"a".repeat(32), &"b".repeat(32));
        let mut s = State::new(vec!["sha256:x".into()]);
        let since = at("2026-02-01T00:00:00Z");
        let rec = s.entry(&key, "fra-a");
        rec.record_key("sealed".into(), None, since);
        rec.begin_verification(since);
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(text.contains("\"version\": 3"), "{text}");
        assert!(
            text.contains(
                "\"verification\": {\n        \"since\": \"2026-02-01T00:00:00Z\"\n      }"
            ),
            "{text}"
        );
        let rec = s.entry(&key, "fra-a");
        rec.end_verification(Err("down in FRA".into()), at("2026-02-01T00:10:00Z"));
        assert_eq!(
            rec.verification,
            Some(Verification {
                since,
                failed: Some(at("2026-02-01T00:10:00Z")),
                error: Some("down in FRA".into()),
            })
        );
        // A new key is a new story; a tunnel back up ends it.
        rec.record_key("sealed-2".into(), None, at("2026-02-02T00:00:00Z"));
        assert_eq!(rec.verification, None);
        rec.begin_verification(at("2026-02-02T00:00:00Z"));
        rec.end_verification(Ok(()), at("2026-02-02T00:01:00Z"));
        assert_eq!(rec.verification, None);
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
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
        assert_eq!(reparsed(&s), s);
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
        assert_eq!(reparsed(&s), s);
    }

    fn reparsed(s: &State) -> State {
        parse(std::path::Path::new("psk.state.json"), &s.to_bytes()).unwrap()
    }

    fn at(t: &str) -> DateTime<Utc> {
        t.parse().unwrap()
    }

    /// A record with every field set, each to a value no transition writes,
    /// so a transition that forgets a field leaves a difference.
    fn busy() -> TunnelState {
        TunnelState {
            account_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
            delivery: Some(Delivery {
                at: at("2026-01-01T00:00:00Z"),
                error: Some("`deliver.sh` exited with status 1".into()),
                ok: false,
            }),
            intent: Some(Intent {
                operation: "psk_generate".into(),
                started: at("2026-01-02T00:00:00Z"),
            }),
            last_rotated: Some(at("2025-12-01T00:00:00Z")),
            name: "fra-primary".into(),
            outage_ms: None,
            pending: Some(Pending {
                generated: at("2026-01-03T00:00:00Z"),
                psk: "sealed-pending".into(),
                sealed_to: Some(vec!["sha256:pending".into()]),
            }),
            psk: Some("sealed-old".into()),
            sealed_to: Some(vec!["sha256:old".into()]),
            tunnel_id: "0123456789abcdef0123456789abcdef".into(),
            verification: None,
        }
    }

    // Each test below spells out the whole record it expects (a struct
    // literal, no `..`): a new field fails to compile until its test says
    // what the transition does with it.

    #[test]
    fn recording_a_key_resets_intent_pending_and_delivery() {
        let mut rec = busy();
        rec.record_key(
            "sealed-new".into(),
            Some(vec!["sha256:new".into()]),
            at("2026-02-01T00:00:00Z"),
        );
        let b = busy();
        assert_eq!(
            rec,
            TunnelState {
                account_id: b.account_id,
                delivery: None,
                intent: None,
                last_rotated: Some(at("2026-02-01T00:00:00Z")),
                name: b.name,
                outage_ms: None,
                pending: None,
                psk: Some("sealed-new".into()),
                sealed_to: Some(vec!["sha256:new".into()]),
                tunnel_id: b.tunnel_id,
                verification: None,
            }
        );
    }

    #[test]
    fn promoting_the_pending_key_records_it() {
        let mut rec = busy();
        assert!(rec.promote_pending(at("2026-02-01T00:00:00Z")));
        let b = busy();
        assert_eq!(
            rec,
            TunnelState {
                account_id: b.account_id,
                delivery: None,
                intent: None,
                last_rotated: Some(at("2026-02-01T00:00:00Z")),
                name: b.name,
                outage_ms: None,
                pending: None,
                psk: Some("sealed-pending".into()),
                sealed_to: Some(vec!["sha256:pending".into()]),
                tunnel_id: b.tunnel_id,
                verification: None,
            }
        );
        let before = rec.clone();
        assert!(!rec.promote_pending(at("2026-03-01T00:00:00Z")));
        assert_eq!(rec, before, "nothing pending, nothing changed");
    }

    #[test]
    fn beginning_a_rotation_sets_only_the_intent() {
        let mut rec = busy();
        rec.begin_rotation("psk_generate", at("2026-02-01T00:00:00Z"));
        let b = busy();
        assert_eq!(
            rec,
            TunnelState {
                account_id: b.account_id,
                delivery: b.delivery,
                intent: Some(Intent {
                    operation: "psk_generate".into(),
                    started: at("2026-02-01T00:00:00Z"),
                }),
                last_rotated: b.last_rotated,
                name: b.name,
                outage_ms: None,
                pending: b.pending,
                psk: b.psk,
                sealed_to: b.sealed_to,
                tunnel_id: b.tunnel_id,
                verification: None,
            }
        );

        let mut rec = busy();
        rec.stage_pending("sealed-next".into(), None, at("2026-02-01T00:00:00Z"));
        let b = busy();
        assert_eq!(
            rec,
            TunnelState {
                account_id: b.account_id,
                delivery: b.delivery,
                intent: b.intent,
                last_rotated: b.last_rotated,
                name: b.name,
                outage_ms: None,
                pending: Some(Pending {
                    generated: at("2026-02-01T00:00:00Z"),
                    psk: "sealed-next".into(),
                    sealed_to: None,
                }),
                psk: b.psk,
                sealed_to: b.sealed_to,
                tunnel_id: b.tunnel_id,
                verification: None,
            }
        );
    }

    #[test]
    fn withdrawing_clears_one_field_and_drops_an_empty_record() {
        let mut s = State::new(vec![]);
        let key = busy().key();
        s.tunnels.insert(key.clone(), busy());
        s.withdraw_intent(&key);
        let b = busy();
        let expected = TunnelState {
            account_id: b.account_id,
            delivery: b.delivery,
            intent: None,
            last_rotated: b.last_rotated,
            name: b.name,
            outage_ms: None,
            pending: b.pending,
            psk: b.psk,
            sealed_to: b.sealed_to,
            tunnel_id: b.tunnel_id,
            verification: None,
        };
        assert_eq!(s.get(&key), Some(&expected));
        s.withdraw_pending(&key);
        assert_eq!(
            s.get(&key),
            Some(&TunnelState {
                pending: None,
                ..expected
            })
        );

        // A record that held only the attempt goes with it, but not one
        // that still holds a key or other work.
        let only = |f: fn(&mut TunnelState)| {
            let mut rec = busy();
            rec.psk = None;
            rec.sealed_to = None;
            f(&mut rec);
            rec
        };
        let mut s = State::new(vec![]);
        s.tunnels.insert(key.clone(), only(|r| r.pending = None));
        s.withdraw_intent(&key);
        assert_eq!(s.get(&key), None);
        s.tunnels.insert(key.clone(), only(|r| r.intent = None));
        s.withdraw_pending(&key);
        assert_eq!(s.get(&key), None);
        s.tunnels.insert(key.clone(), only(|_| {}));
        s.withdraw_intent(&key);
        assert!(s.get(&key).is_some_and(|r| r.pending.is_some()));
    }

    #[test]
    fn recording_a_delivery_sets_only_the_delivery() {
        let mut rec = busy();
        rec.record_delivery(Ok(()), at("2026-02-01T00:00:00Z"));
        let b = busy();
        assert_eq!(
            rec,
            TunnelState {
                account_id: b.account_id,
                delivery: Some(Delivery {
                    at: at("2026-02-01T00:00:00Z"),
                    error: None,
                    ok: true,
                }),
                intent: b.intent,
                last_rotated: b.last_rotated,
                name: b.name,
                outage_ms: None,
                pending: b.pending,
                psk: b.psk,
                sealed_to: b.sealed_to,
                tunnel_id: b.tunnel_id,
                verification: None,
            }
        );
        rec.record_delivery(Err("timed out".into()), at("2026-02-02T00:00:00Z"));
        assert_eq!(
            rec.delivery,
            Some(Delivery {
                at: at("2026-02-02T00:00:00Z"),
                error: Some("timed out".into()),
                ok: false,
            })
        );
    }

    #[test]
    fn resealing_changes_only_the_sealed_text_and_its_recipients() {
        let mut rec = busy();
        assert!(rec.reseal(Slot::Psk, "resealed".into(), None));
        assert!(rec.reseal(Slot::Pending, "resealed-pending".into(), None));
        let b = busy();
        assert_eq!(
            rec,
            TunnelState {
                account_id: b.account_id,
                delivery: b.delivery,
                intent: b.intent,
                last_rotated: b.last_rotated,
                name: b.name,
                outage_ms: None,
                pending: Some(Pending {
                    generated: at("2026-01-03T00:00:00Z"),
                    psk: "resealed-pending".into(),
                    sealed_to: None,
                }),
                psk: Some("resealed".into()),
                sealed_to: None,
                tunnel_id: b.tunnel_id,
                verification: None,
            }
        );
        let mut empty = State::new(vec![]);
        let rec = empty.entry(&busy().key(), "x");
        assert!(!rec.reseal(Slot::Psk, "x".into(), None));
        assert!(!rec.reseal(Slot::Pending, "x".into(), None));
        assert_eq!(rec.sealed(Slot::Psk), None);
    }

    #[test]
    fn keys_parse_only_as_written() {
        let key = busy().key();
        assert_eq!(parse_key(&key.to_string()), Some(key.clone()));
        let upper = key.to_string().to_ascii_uppercase();
        for bad in ["", "x/y", "/", upper.as_str(), &format!("{key}/")] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
