//! The rescue file: where the keys go when the state cannot be written.
//!
//! Cloudflare hands a generated key out once. When the journal cannot take
//! a commit (a full disk, EIO, a read-only remount, a quota) even after
//! retries, the apply stops, and the records it could not write, with their
//! PSKs *sealed* exactly as the state holds them, go to a rescue file on
//! another filesystem: `$PSK_RESCUE_DIR`, else `$XDG_STATE_HOME/psk`, else
//! `~/.local/state/psk`, else the system's temp folder; the first that takes
//! it. `psk recover FILE` merges it back into the state.
//!
//! Each change carries the record as the disk held it (`before`) and as it
//! should be (`after`). Merging takes `after` only where the state still
//! holds `before`, so recovering twice changes nothing, and a record a
//! later apply changed (which rotated that tunnel again) is left alone.
//!
//! One exception, decided by Cloudflare and not by guess: a writer whose
//! lock was taken may have made a key after the state moved on, replacing
//! the key the new writer had sealed (see docs/remote-state.md). Then the
//! state holds a key the edge no longer uses, and the rescue holds the one
//! it does. When Cloudflare says the tunnel's key was generated exactly
//! when the rescued record says (`last_generated_on`), and not when the
//! state's record says, the rescued record is taken: it is the live key.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::durable::write_new_private;
use super::ledger::Unsaved;
use super::{State, TunnelState};
use crate::tunnel::TunnelKey;

/// The rescue format's version (`psk_rescue` in the file).
const RESCUE_VERSION: u64 = 1;

/// A rescue file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rescue {
    /// Always [`RESCUE_VERSION`]; names the file's kind too.
    pub psk_rescue: u64,
    /// The state file these changes belong to.
    pub state: PathBuf,
    /// The state's lineage: a rescue merges only into its own state.
    pub lineage: String,
    /// The state's serial when the rescue was written (what is on disk).
    pub serial: u64,
    /// The state's recipients then: a record without `sealed_to` is sealed
    /// to these.
    pub recipients: Vec<String>,
    #[serde(with = "super::rfc3339")]
    pub written: DateTime<Utc>,
    pub changes: Vec<Change>,
}

/// One tunnel's record as the disk held it, and as it should be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// `account_id/tunnel_id`.
    pub tunnel: String,
    pub before: Option<TunnelState>,
    pub after: Option<TunnelState>,
}

#[derive(Debug, thiserror::Error)]
pub enum RescueError {
    #[error("cannot read rescue file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a psk rescue file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("rescue file {path} belongs to another state: it holds changes to the state of lineage {found} ({state}), but {target} has lineage {expected}.\nNothing was changed. Recover it into that state (`--state {state}`)")]
    Lineage {
        path: PathBuf,
        found: String,
        state: PathBuf,
        target: PathBuf,
        expected: String,
    },
}

impl Rescue {
    /// The rescue of `unsaved` changes to `state` (its serial as on disk).
    pub fn new(
        state_path: &Path,
        state: &State,
        unsaved: &[Unsaved],
        now: DateTime<Utc>,
    ) -> Rescue {
        let state_path = match state_path.to_str().is_some_and(super::location::is_url) {
            true => state_path.into(),
            false => std::path::absolute(state_path).unwrap_or_else(|_| state_path.into()),
        };
        Rescue {
            psk_rescue: RESCUE_VERSION,
            state: state_path,
            lineage: state.lineage.clone(),
            serial: state.serial,
            recipients: state.recipients.clone(),
            written: now,
            changes: unsaved
                .iter()
                .map(|u| Change {
                    tunnel: u.key.to_string(),
                    before: u.before.clone(),
                    after: u.after.clone(),
                })
                .collect(),
        }
    }

    /// The names of the tunnels it holds, for messages.
    pub fn names(&self) -> Vec<String> {
        (self.changes.iter())
            .filter_map(|c| c.after.as_ref().or(c.before.as_ref()))
            .map(|r| r.name.clone())
            .collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("rescue serializes");
        b.push(b'\n');
        b
    }

    pub fn load(path: &Path) -> Result<Rescue, RescueError> {
        let bytes = fs::read(path).map_err(|source| RescueError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_err = |message: String| RescueError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let r: Rescue = serde_json::from_slice(&bytes)
            .map_err(|e| parse_err(format!("{} (line {})", e.classify_text(), e.line())))?;
        if r.psk_rescue != RESCUE_VERSION {
            return Err(parse_err(format!(
                "format version {} (this psk reads {RESCUE_VERSION})",
                r.psk_rescue
            )));
        }
        for c in &r.changes {
            let key = super::parse_key(&c.tunnel);
            let agrees = |rec: &Option<TunnelState>| {
                rec.as_ref()
                    .is_none_or(|rec| key.as_ref() == Some(&rec.key()))
            };
            if key.is_none() || !agrees(&c.before) || !agrees(&c.after) {
                return Err(parse_err(format!(
                    "the change for `{}` does not match its records",
                    c.tunnel
                )));
            }
        }
        Ok(r)
    }

    /// Writes the rescue to the first place that takes it; `Err` lists
    /// each place tried and why it failed.
    pub fn write(&self) -> Result<PathBuf, Vec<(PathBuf, io::Error)>> {
        let name = format!(
            "psk-rescue-{}-{}.json",
            self.written.format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        );
        let mut tried = Vec::new();
        for dir in places() {
            let path = dir.join(&name);
            match write_new_private(&dir, &path, &self.to_bytes(), "rescue") {
                Ok(()) => return Ok(path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "rescue file not written here");
                    tried.push((path, e));
                }
            }
        }
        Err(tried)
    }

    /// Merges the rescued records into `state` (`target` is its path, for
    /// the message): see the module's doc for the rule.
    pub fn merge_into(
        &self,
        path: &Path,
        target: &Path,
        state: &mut State,
        edge: &Edge,
    ) -> Result<Merged, RescueError> {
        if self.lineage != state.lineage {
            return Err(RescueError::Lineage {
                path: path.to_path_buf(),
                found: self.lineage.clone(),
                state: self.state.clone(),
                target: target.to_path_buf(),
                expected: state.lineage.clone(),
            });
        }
        let mut merged = Merged::default();
        for c in &self.changes {
            let key = super::parse_key(&c.tunnel).expect("checked by load");
            let after = c.after.clone().map(|r| self.explicit(state, r));
            let name =
                (after.as_ref().or(c.before.as_ref())).map_or(c.tunnel.clone(), |r| r.name.clone());
            let now = state.tunnels.get(&key);
            if now == after.as_ref() || now == c.after.as_ref() {
                merged.already.push(name);
            } else if now == c.before.as_ref() {
                match after {
                    Some(r) => state.tunnels.insert(key, r),
                    None => state.tunnels.remove(&key),
                };
                merged.taken.push(name);
            } else if let Some(r) = after.filter(|r| edge_holds(edge, &key, r, now)) {
                state.tunnels.insert(key, r);
                merged.from_edge.push(name);
            } else {
                merged.changed_since.push(name);
            }
        }
        Ok(merged)
    }

    /// The tunnels whose rescued key the state's record contradicts (it
    /// changed since the rescue was written): only Cloudflare can say which
    /// of the two keys its edge holds.
    pub fn contested(&self, state: &State) -> Vec<TunnelKey> {
        (self.changes.iter())
            .filter_map(|c| {
                let key = super::parse_key(&c.tunnel)?;
                let now = state.tunnels.get(&key);
                let after = c.after.as_ref().filter(|r| r.psk.is_some())?;
                (now != c.before.as_ref() && now != Some(after)).then_some(key)
            })
            .collect()
    }

    /// A rescued record that relies on the rescue's header recipients says
    /// them itself when the state's header now names others.
    fn explicit(&self, state: &State, mut r: TunnelState) -> TunnelState {
        if super::canonical(&state.recipients) == super::canonical(&self.recipients) {
            return r;
        }
        if r.psk.is_some() && r.sealed_to.is_none() {
            r.sealed_to = Some(super::canonical(&self.recipients));
        }
        if let Some(p) = r.pending.as_mut().filter(|p| p.sealed_to.is_none()) {
            p.sealed_to = Some(super::canonical(&self.recipients));
        }
        r
    }
}

/// When Cloudflare says each tunnel's key was last generated, for the
/// tunnels a merge must ask it about ([`Rescue::contested`]); empty when
/// none was asked.
pub type Edge = std::collections::BTreeMap<TunnelKey, Option<DateTime<Utc>>>;

/// Whether the edge holds the key of the rescued record `r` and not the
/// one of the state's record `now`.
fn edge_holds(edge: &Edge, key: &TunnelKey, r: &TunnelState, now: Option<&TunnelState>) -> bool {
    let Some(Some(on)) = edge.get(key) else {
        return false;
    };
    r.psk.is_some()
        && r.last_rotated.as_ref() == Some(on)
        && now.and_then(|n| n.last_rotated.as_ref()) != Some(on)
}

/// What merging a rescue did, by tunnel name.
#[derive(Debug, Default)]
pub struct Merged {
    /// Records taken from the rescue.
    pub taken: Vec<String>,
    /// Records taken from the rescue over a newer record of the state,
    /// because Cloudflare's edge holds the rescued key.
    pub from_edge: Vec<String>,
    /// Records the state already held as the rescue has them.
    pub already: Vec<String>,
    /// Records that changed in the state since the rescue was written (a
    /// later apply rotated the tunnel again): left as the state has them.
    pub changed_since: Vec<String>,
}

/// Where a rescue may go, in order: never beside the state, whose disk
/// just failed, unless the operator points there.
pub fn places() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    out.extend(env("PSK_RESCUE_DIR"));
    out.extend(env("XDG_STATE_HOME").map(|d| d.join("psk")));
    out.extend(env("HOME").map(|h| h.join(".local/state/psk")));
    out.push(std::env::temp_dir());
    out
}

/// serde_json's error kind in words, never its text: that could quote a
/// sealed key.
trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        use serde_json::error::Category;
        match self.classify() {
            Category::Eof => "the file ends too early (truncated?)",
            Category::Syntax => "invalid JSON",
            Category::Data => "a field is missing, unknown or of the wrong type",
            Category::Io => "read error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::TunnelKey;

    fn key(i: usize) -> TunnelKey {
        TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"))
    }

    fn rec(s: &mut State, i: usize, psk: &str) -> TunnelState {
        let r = s.entry(&key(i), &format!("t{i}"));
        r.psk = Some(psk.into());
        r.clone()
    }

    /// A rescue merges where the state still holds what the disk held,
    /// changes nothing the second time, leaves a record changed since, and
    /// refuses another state.
    #[test]
    fn merging_is_idempotent_and_leaves_later_changes() {
        let mut s = State::new(vec!["r1".into()]);
        let before0 = rec(&mut s, 0, "old-0");
        let before1 = rec(&mut s, 1, "old-1");
        let disk = s.clone();
        let mut mem = s.clone();
        let after0 = rec(&mut mem, 0, "new-0");
        let after1 = rec(&mut mem, 1, "new-1");
        let after2 = rec(&mut mem, 2, "new-2");
        let unsaved = vec![
            Unsaved {
                key: key(0),
                before: Some(before0),
                after: Some(after0.clone()),
            },
            Unsaved {
                key: key(1),
                before: Some(before1),
                after: Some(after1),
            },
            Unsaved {
                key: key(2),
                before: None,
                after: Some(after2.clone()),
            },
        ];
        let r = Rescue::new(Path::new("psk.state.json"), &disk, &unsaved, Utc::now());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(&path, r.to_bytes()).unwrap();
        let r = Rescue::load(&path).unwrap();

        let mut target = disk.clone();
        // A later apply rotated t1 again before the rescue came back.
        rec(&mut target, 1, "later-1");
        let m = r
            .merge_into(&path, &path, &mut target, &Edge::new())
            .unwrap();
        assert_eq!(m.taken, vec!["t0", "t2"]);
        assert_eq!(m.changed_since, vec!["t1"]);
        assert_eq!(target.tunnels[&key(0)], after0);
        assert_eq!(target.tunnels[&key(2)], after2);
        assert_eq!(target.tunnels[&key(1)].psk.as_deref(), Some("later-1"));
        let once = target.clone();
        let m = r
            .merge_into(&path, &path, &mut target, &Edge::new())
            .unwrap();
        assert!(m.taken.is_empty(), "{m:?}");
        assert_eq!(m.already, vec!["t0", "t2"]);
        assert_eq!(target, once);

        let mut other = State::new(vec![]);
        let e = r
            .merge_into(&path, &path, &mut other, &Edge::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs to another state"), "{e}");
        assert!(other.tunnels.is_empty());
    }

    /// A fenced-off writer's key replaced the one the state holds on the
    /// edge: the rescue's record is taken when, and only when, Cloudflare's
    /// `last_generated_on` is the rescued key's.
    #[test]
    fn a_contested_key_is_taken_when_the_edge_holds_it() {
        let mut s = State::new(vec!["r1".into()]);
        let t = |h: u32| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 6, h, 0, 0).unwrap();
        let mut before = rec(&mut s, 0, "old");
        before.last_rotated = Some(t(1));
        let mut fenced = before.clone();
        fenced.psk = Some("fenced-writers".into());
        fenced.last_rotated = Some(t(3));
        let unsaved = vec![Unsaved {
            key: key(0),
            before: Some(before.clone()),
            after: Some(fenced.clone()),
        }];
        let r = Rescue::new(Path::new("s3://b/psk.state.json"), &s, &unsaved, Utc::now());
        // The new writer sealed its own key in between.
        let mut state = s.clone();
        let mut newer = before.clone();
        newer.psk = Some("new-writers".into());
        newer.last_rotated = Some(t(2));
        state.tunnels.insert(key(0), newer.clone());
        assert_eq!(r.contested(&state), vec![key(0)]);
        let p = Path::new("r.json");

        let mut kept = state.clone();
        let edge: Edge = [(key(0), Some(t(2)))].into_iter().collect();
        let m = r.merge_into(p, p, &mut kept, &edge).unwrap();
        assert_eq!((m.from_edge.len(), m.changed_since.len()), (0, 1));
        assert_eq!(kept.tunnels[&key(0)], newer);

        let edge: Edge = [(key(0), Some(t(3)))].into_iter().collect();
        let m = r.merge_into(p, p, &mut state, &edge).unwrap();
        assert_eq!(m.from_edge, vec!["t0"]);
        assert_eq!(state.tunnels[&key(0)], fenced);
        assert!(r.contested(&state).is_empty());
        let m = r.merge_into(p, p, &mut state, &edge).unwrap();
        assert_eq!(m.already, vec!["t0"]);
    }

    #[test]
    fn a_damaged_rescue_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(
            &path,
            b"{\"psk_rescue\": 1, \"secret-looking\": \"AGE-ENCRYPTED\"}",
        )
        .unwrap();
        let e = Rescue::load(&path).unwrap_err().to_string();
        assert!(e.contains("not a psk rescue file"), "{e}");
        assert!(
            !e.contains("AGE-ENCRYPTED") && !e.contains("secret-looking"),
            "{e}"
        );
    }
}
