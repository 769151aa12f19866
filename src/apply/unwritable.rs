//! When the state cannot be written: retry, stop, rescue.
//!
//! A journal commit that fails (a full disk, EIO, a read-only remount, a
//! quota) is tried again a few times, the keys staying sealed in memory.
//! If it still fails, the apply makes no further call to Cloudflare: the
//! rotations not yet started never start, those in flight are let answer
//! (their keys exist on the edge now), and every change the disk does not
//! hold goes, sealed as in the state, to a rescue file elsewhere
//! (`state::rescue`), with the command that takes it back.
//!
//! A writer that lost its lock to another (`psk force-unlock` while it was
//! paused) is not retried at all: it stays fenced, and says so, with where
//! its keys are and what becomes of what it left on the store.

use std::path::PathBuf;
use std::time::Duration;

use super::Run;
use crate::state::rescue::Rescue;
use crate::state::{Journal, LostLock, State, StateError};

/// Waits before each new attempt of a failed commit: a disk that was full
/// for a moment (another writer, a log rotation) gets a little time.
const RETRY: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).tries(3);

/// Why an apply stopped because its state could not be written. Each says
/// where every key it made is.
#[derive(Debug, thiserror::Error)]
pub enum Unwritable {
    #[error("{error}\nThe apply stopped there: psk makes no call to Cloudflare it cannot record. {} new tunnel record{} the state could not take ({}) {} sealed in the rescue file {rescue}, as the state would hold them (no PSK in plaintext). Once the state can be written again (its disk has room and is writable, or its bucket answers), take them back into the state with:\n  psk recover {rescue}", .names.len(), if .names.len() == 1 { "" } else { "s" }, .names.join(", "), if .names.len() == 1 { "is" } else { "are" })]
    Rescued {
        error: StateError,
        rescue: PathBuf,
        names: Vec<String>,
    },
    #[error("{error}\nThe apply stopped there: psk makes no call to Cloudflare it cannot record. Every change it made is in the journal beside the state, which the next psk command folds in: nothing was lost")]
    Stopped { error: StateError },
    #[error("{error}\nThe apply stopped there: psk makes no call to Cloudflare it cannot record. No rescue file could be written either:\n{tried}\nThe sealed records of {names} follow between the two marker lines (sealed with age, as the state holds them: no PSK in plaintext). Save them to a file and, once a disk is writable, run `psk recover FILE`:\n-----BEGIN PSK RESCUE-----\n{text}-----END PSK RESCUE-----")]
    Nowhere {
        error: StateError,
        tried: String,
        names: String,
        text: String,
    },
    /// This writer's lock was taken: it stopped for good.
    #[error("{}", fenced(.lost, .rescue.as_deref(), .names))]
    Fenced {
        lost: LostLock,
        /// The rescue file holding the records the state did not take.
        rescue: Option<PathBuf>,
        names: Vec<String>,
    },
    #[error("{error}\nEvery change of this apply is in the journal beside the state, which the next psk command folds in: nothing was lost. Once the state can be written again (free or remount the disk, or wait for the bucket), run `psk plan`")]
    Unfolded { error: StateError },
}

/// The delays between attempts; none in tests of faults.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    RETRY.from_env().delays()
}

/// What a fenced-off apply says: whose the lock is now, that nothing more
/// went to Cloudflare, where its keys are, and what becomes of the journal
/// object it left.
fn fenced(lost: &LostLock, rescue: Option<&std::path::Path>, names: &[String]) -> String {
    let url = &lost.url;
    let id = &lost.id;
    let keys = match rescue {
        Some(rescue) => {
            let one = names.len() == 1;
            format!(
                "{} new tunnel record{} the state did not take ({}) {} sealed in this apply's rescue file, as the state would hold {} (no PSK in plaintext); Cloudflare's edge may hold {}. Take {} back on this machine with:\n  psk recover {}\n(recover asks Cloudflare which key its edge holds, and keeps that one.)",
                names.len(),
                if one { "" } else { "s" },
                names.join(", "),
                if one { "is" } else { "are" },
                if one { "it" } else { "them" },
                if one { "its key" } else { "their keys" },
                if one { "it" } else { "them" },
                rescue.display()
            )
        }
        None => "It made no key the state lacks: there is nothing to recover.".to_string(),
    };
    format!(
        "this apply lost the lock of {url} (lock ID {id}) while it waited on the store; {}.\nSomeone ran `psk force-unlock {id}` and the state moved on without this apply. It made no further call to Cloudflare and changes nothing more: what it had not started stays undone, for the next plan to show.\n{keys}\nThe journal object it wrote after losing the lock is never replayed: the next `psk plan` reads the state without it, and the next psk that writes the state (the next `psk apply`, say) sets it aside under {url}.fenced/.",
        lost.now()
    )
}

/// Folds the journal into the state file, trying again as a commit does;
/// when it cannot, every change is still in the journal. A writer that
/// lost its lock is not tried again.
pub async fn fold(journal: &mut Journal, state: &mut State) -> Result<(), Unwritable> {
    let mut delays = retry_delays();
    loop {
        let Err(source) = journal.finish(state) else {
            return Ok(());
        };
        if source.lost_lock().is_some() {
            return Err(rescue_unsaved(journal, state, source));
        }
        let Some(delay) = delays.next() else {
            return Err(Unwritable::Unfolded { error: source });
        };
        tracing::warn!(error = %source, retry_in_ms = delay.as_millis() as u64, "state file not written; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// After the apply stopped on `source`: one last commit (the disk may be
/// back), else the rescue file.
pub fn rescue(run: &mut Run<'_>, source: StateError) -> Unwritable {
    if run.journal.commit(run.state).is_ok() {
        return Unwritable::Stopped { error: source };
    }
    rescue_unsaved(&run.journal, run.state, source)
}

/// Writes what `journal` could not make durable to a rescue file.
fn rescue_unsaved(journal: &Journal, state: &State, source: StateError) -> Unwritable {
    let unsaved = journal.unsaved(state);
    let lost = source.lost_lock().cloned();
    if unsaved.is_empty() {
        return match lost {
            Some(lost) => Unwritable::Fenced {
                lost,
                rescue: None,
                names: vec![],
            },
            None => Unwritable::Stopped { error: source },
        };
    }
    let rescue = Rescue::new(journal.state_path(), state, &unsaved, chrono::Utc::now());
    let names = rescue.names();
    match rescue.write() {
        Ok(path) => {
            tracing::warn!(rescue = %path.display(), tunnels = names.len(), "unsaved records written to a rescue file");
            match lost {
                Some(lost) => Unwritable::Fenced {
                    lost,
                    rescue: Some(path),
                    names,
                },
                None => Unwritable::Rescued {
                    error: source,
                    rescue: path,
                    names,
                },
            }
        }
        Err(tried) => Unwritable::Nowhere {
            error: source,
            tried: (tried.iter())
                .map(|(p, e)| format!("  {}: {e}", p.display()))
                .collect::<Vec<_>>()
                .join("\n"),
            names: names.join(", "),
            text: String::from_utf8(rescue.to_bytes()).expect("JSON is UTF-8"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock's new holder, every rescued tunnel and the one command
    /// that takes them back are named; nothing else would tell the user.
    #[test]
    fn a_fenced_apply_names_the_new_holder_its_rescue_and_the_set_aside() {
        let lost = LostLock {
            url: "s3://b/psk.state.json".into(),
            id: "abc".into(),
            holder: Some(
                "ops@ci (pid 7), running `psk apply` since 2026-12-07T00:00:00Z (lock ID def)"
                    .into(),
            ),
        };
        let names = ["t1".to_string(), "t2".to_string()];
        let text = fenced(&lost, Some(std::path::Path::new("/r/x.json")), &names);
        for said in [
            "this apply lost the lock of s3://b/psk.state.json (lock ID abc) while it waited on the store; it is now held by ops@ci (pid 7)",
            "It made no further call to Cloudflare",
            "2 new tunnel records the state did not take (t1, t2) are sealed in this apply's rescue file",
            "Take them back on this machine with:\n  psk recover /r/x.json\n",
            "sets it aside under s3://b/psk.state.json.fenced/",
        ] {
            assert!(text.contains(said), "no `{said}` in {text}");
        }
        let none = fenced(
            &LostLock {
                holder: None,
                ..lost
            },
            None,
            &[],
        );
        assert!(none.contains("no one holds it now"), "{none}");
        assert!(none.contains("there is nothing to recover"), "{none}");
        assert!(!none.contains("psk recover"), "{none}");
    }
}
