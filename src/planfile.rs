//! Saved plans: `psk plan --out FILE` and `psk apply FILE`.
//!
//! A saved plan is what reviewers approved, so `apply FILE` must do exactly
//! it or nothing. It is bound to the state it was made against (lineage and
//! serial), to a digest of psk.yaml, and to an expiry; any mismatch is
//! refused with what changed and what to run. It holds no secrets.
//!
//! [`PlanFile`] is the plan as psk holds it; the bytes on disk are the
//! structs of `wire`, so the planner's types can change without changing
//! the file format.

mod wire;

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::Digest as _;

use crate::config::Config;
use crate::reconcile::Plan;
use crate::state::State;

pub const PLAN_FORMAT: &str = "psk-plan";
/// The newest plan file format this psk reads and writes. Version 2 added
/// the dry-run result `no_verdict`, version 3 the deferral `sibling_down`,
/// the reasons `unknown_live_key` and `not_listed` and the deferrals
/// `still_listed` and `not_asked`, version 4 the `names` of recipients in
/// `recipients_changed`, version 5 the deferral `unhealthy` and the plan's
/// `health` of the paths it touches (`verify`), version 6 the deferrals
/// `undelivered` and `uncertain` (a sibling that may be down), version 7
/// the tunnels psk.yaml leaves out (`unmanaged`, `ignored`).
pub const PLAN_FORMAT_VERSION: u64 = 7;
/// The oldest version this psk still reads.
pub const PLAN_FORMAT_OLDEST: u64 = 1;

/// The oldest format that can hold `plan`, written as the file's version:
/// a plan without a no-verdict dry run stays version 1, so an older psk
/// still applies it, and one with it tells an older psk to plan again
/// rather than failing on a value it does not know.
fn version_needed(plan: &Plan) -> u64 {
    let version_3 = |r: &crate::reconcile::Reason| {
        use crate::reconcile::Reason;
        matches!(r, Reason::UnknownLiveKey { .. } | Reason::NotListed)
    };
    let reasons = (plan.actions.iter().flat_map(|a| &a.reasons))
        .chain(plan.deferred.iter().flat_map(|d| &d.reasons));
    let new_deferral = |d: &crate::reconcile::Deferred| {
        use crate::reconcile::Deferral;
        matches!(
            d.why,
            Deferral::StillListed | Deferral::NotAsked | Deferral::SiblingDown { .. }
        )
    };
    let version_5 = !plan.health.is_empty()
        || (plan.deferred.iter())
            .any(|d| matches!(d.why, crate::reconcile::Deferral::Unhealthy { .. }));
    let named = |r: &crate::reconcile::Reason| {
        use crate::reconcile::Reason;
        matches!(r, Reason::RecipientsChanged { names, .. } if !names.is_empty())
    };
    let version_6 = (plan.deferred.iter()).any(|d| {
        use crate::reconcile::Deferral;
        matches!(
            d.why,
            Deferral::Undelivered { .. } | Deferral::Uncertain { .. }
        )
    });
    if !plan.unmanaged.is_empty() || plan.ignored > 0 {
        7
    } else if version_6 {
        6
    } else if version_5 {
        5
    } else if reasons.clone().any(named) {
        4
    } else if reasons.clone().any(version_3) || plan.deferred.iter().any(new_deferral) {
        3
    } else if plan.no_verdicts() > 0 {
        2
    } else {
        1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFile {
    /// Always `psk-plan`: tells a plan from any other JSON.
    pub format: String,
    pub format_version: u64,
    /// The psk that made it, for support.
    pub psk_version: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `sha256:<hex>` of psk.yaml's bytes.
    pub config_digest: String,
    /// The state's lineage, or `None` when planned against no state.
    pub state_lineage: Option<String>,
    pub state_serial: Option<u64>,
    /// The state diff shown in review, for `show-plan`.
    pub state_diff: String,
    pub plan: Plan,
}

/// Why a saved plan may not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    Expired {
        expires_at: DateTime<Utc>,
    },
    ConfigChanged,
    LineageDiffers {
        planned: Option<String>,
        now: Option<String>,
    },
    StateChanged {
        planned: u64,
        now: u64,
    },
    NotApplyable,
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::Expired { expires_at } => write!(
                f,
                "the plan expired at {}",
                crate::state::format_time(expires_at)
            ),
            Stale::ConfigChanged => write!(f, "psk.yaml changed since the plan was made"),
            Stale::LineageDiffers { planned: None, now: Some(l) } => write!(
                f,
                "the plan was made when there was no state, but a state now exists (lineage {l}); someone applied in between"
            ),
            Stale::LineageDiffers { planned, now } => write!(
                f,
                "the plan was made for another state (lineage {}), not this one (lineage {})",
                planned.as_deref().unwrap_or("none"),
                now.as_deref().unwrap_or("none: the state file is gone")
            ),
            Stale::StateChanged { planned, now } => write!(
                f,
                "the state changed since the plan was made (serial {planned}, now {now})"
            ),
            Stale::NotApplyable => write!(
                f,
                "Cloudflare refused a dry run in this plan, so it cannot be applied"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a psk plan file: {message} (line {line}, column {column}). Make one with `psk plan --out FILE`")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path} is a psk plan of format version {found}; this psk reads versions {PLAN_FORMAT_OLDEST} to {PLAN_FORMAT_VERSION}. Plan again with this psk")]
    Version { path: PathBuf, found: u64 },
    #[error("{path} is not a usable plan: {message}. Make a new one with `psk plan --out FILE`")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write plan file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `sha256:<hex>` of a file's bytes.
pub fn digest_file(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    let d = sha2::Sha256::digest(&bytes);
    Ok(format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

impl PlanFile {
    pub fn new(
        plan: Plan,
        config_digest: String,
        state: Option<&State>,
        state_diff: String,
        created_at: DateTime<Utc>,
        valid_for: chrono::TimeDelta,
    ) -> PlanFile {
        PlanFile {
            format: PLAN_FORMAT.into(),
            format_version: version_needed(&plan),
            psk_version: env!("CARGO_PKG_VERSION").into(),
            created_at,
            expires_at: created_at
                .checked_add_signed(valid_for)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            config_digest,
            state_lineage: state.map(|s| s.lineage.clone()),
            state_serial: state.map(|s| s.serial),
            state_diff,
            plan,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(&self.to_wire()).expect("plan serializes");
        b.push(b'\n');
        b
    }

    pub fn write(&self, path: &Path) -> Result<(), PlanFileError> {
        crate::state::write_atomic(path, &self.to_bytes(), false).map_err(|source| {
            PlanFileError::Write {
                path: path.to_path_buf(),
                source,
            }
        })?;
        self.log("plan file written", path);
        Ok(())
    }

    fn log(&self, what: &str, path: &Path) {
        tracing::info!(
            path = %path.display(),
            format_version = self.format_version,
            actions = self.plan.actions.len(),
            state_serial = ?self.state_serial,
            expires_at = %crate::state::format_time(&self.expires_at),
            "{what}"
        );
    }

    pub fn load(path: &Path) -> Result<PlanFile, PlanFileError> {
        let bytes = std::fs::read(path).map_err(|source| PlanFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = PlanFile::parse(path, &bytes)?;
        file.log("plan file loaded", path);
        Ok(file)
    }

    /// Parses the bytes of a plan file, naming `path` in any error (the
    /// fuzzer calls this directly).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<PlanFile, PlanFileError> {
        let perr = |e: serde_json::Error| PlanFileError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: match e.classify() {
                serde_json::error::Category::Eof => "the file ends early (truncated?)".into(),
                _ => {
                    let t = e.to_string();
                    t.rfind(" at line ")
                        .map_or(t.clone(), |i| t[..i].to_string())
                }
            },
        };
        #[derive(Deserialize)]
        struct Head {
            format: String,
            format_version: u64,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(perr)?;
        if head.format != PLAN_FORMAT {
            return Err(PlanFileError::Invalid {
                path: path.to_path_buf(),
                message: format!("its `format` is `{}`, not `{PLAN_FORMAT}`", head.format),
            });
        }
        if !(PLAN_FORMAT_OLDEST..=PLAN_FORMAT_VERSION).contains(&head.format_version) {
            return Err(PlanFileError::Version {
                path: path.to_path_buf(),
                found: head.format_version,
            });
        }
        let file = PlanFile::from_wire(serde_json::from_slice(bytes).map_err(perr)?);
        file.check_shape()
            .map_err(|message| PlanFileError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(file)
    }

    fn to_wire(&self) -> wire::File {
        wire::File {
            format: self.format.clone(),
            format_version: self.format_version,
            psk_version: self.psk_version.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            config_digest: self.config_digest.clone(),
            state_lineage: self.state_lineage.clone(),
            state_serial: self.state_serial,
            state_diff: self.state_diff.clone(),
            plan: wire::Plan::from(&self.plan),
        }
    }

    fn from_wire(f: wire::File) -> PlanFile {
        PlanFile {
            format: f.format,
            format_version: f.format_version,
            psk_version: f.psk_version,
            created_at: f.created_at,
            expires_at: f.expires_at,
            config_digest: f.config_digest,
            state_lineage: f.state_lineage,
            state_serial: f.state_serial,
            state_diff: f.state_diff,
            plan: f.plan.into(),
        }
    }

    /// Semantic checks serde cannot do: ids are ids, names are printable.
    fn check_shape(&self) -> Result<(), String> {
        for a in &self.plan.actions {
            if !crate::tunnel::is_cloudflare_id(&a.key.account_id)
                || !crate::tunnel::is_cloudflare_id(&a.key.tunnel_id)
            {
                return Err(format!(
                    "action `{}` has a malformed tunnel or account id",
                    a.name
                ));
            }
            if a.name.is_empty() || a.name.chars().any(char::is_control) {
                return Err("an action has an empty or unprintable tunnel name".into());
            }
        }
        Ok(())
    }

    /// Whether this plan may still be applied to `state` under `config`.
    pub fn check(
        &self,
        config: &Config,
        config_digest: &str,
        state: Option<&State>,
        now: DateTime<Utc>,
    ) -> Result<(), Stale> {
        if now >= self.expires_at {
            return Err(Stale::Expired {
                expires_at: self.expires_at,
            });
        }
        if self.config_digest != config_digest {
            return Err(Stale::ConfigChanged);
        }
        let lineage = state.map(|s| s.lineage.clone());
        if lineage != self.state_lineage {
            return Err(Stale::LineageDiffers {
                planned: self.state_lineage.clone(),
                now: lineage,
            });
        }
        if let (Some(planned), Some(s)) = (self.state_serial, state) {
            if planned != s.serial {
                return Err(Stale::StateChanged {
                    planned,
                    now: s.serial,
                });
            }
        }
        if self.plan.has_refusals() {
            return Err(Stale::NotApplyable);
        }
        // The digest binds psk.yaml, but a hand-edited plan could still name
        // a tunnel psk.yaml lacks: never act on one.
        let by_key = config.tunnels_by_key();
        for a in self.plan.actions.iter().filter(|a| a.kind.changes_psk()) {
            if !by_key.contains_key(&a.key) {
                return Err(Stale::ConfigChanged);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::reconcile;

    const TEXT: &str = "version: 1
account_id: 023e105f4ecef8ad9ca31a8372d0c353
recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
policies:
  default: {rotate_every: 30d}
tunnels:
  - {name: a, id: 0123456789abcdef0123456789abcdef}
";

    fn setup() -> (Config, State, PlanFile, DateTime<Utc>) {
        let config = Config::parse(Path::new("psk.yaml"), TEXT).unwrap();
        let mut state = State::new(vec![]);
        state.serial = 3;
        let now: DateTime<Utc> = "2026-11-26T00:00:00Z".parse().unwrap();
        let plan = reconcile(&config, Some(&state), None, now);
        let file = PlanFile::new(
            plan,
            "sha256:aa".into(),
            Some(&state),
            String::new(),
            now,
            chrono::TimeDelta::hours(24),
        );
        (config, state, file, now)
    }

    #[test]
    fn round_trips_and_accepts_a_fresh_plan() {
        let (config, state, file, now) = setup();
        let back = PlanFile::parse(Path::new("p.json"), &file.to_bytes()).unwrap();
        assert_eq!(back, file);
        assert_eq!(file.check(&config, "sha256:aa", Some(&state), now), Ok(()));
    }

    #[test]
    fn refuses_every_kind_of_staleness() {
        let (config, mut state, file, now) = setup();
        let later = now + chrono::TimeDelta::hours(24);
        assert!(matches!(
            file.check(&config, "sha256:aa", Some(&state), later),
            Err(Stale::Expired { .. })
        ));
        assert_eq!(
            file.check(&config, "sha256:bb", Some(&state), now),
            Err(Stale::ConfigChanged)
        );
        assert!(matches!(
            file.check(&config, "sha256:aa", None, now),
            Err(Stale::LineageDiffers { .. })
        ));
        state.serial = 4;
        assert_eq!(
            file.check(&config, "sha256:aa", Some(&state), now),
            Err(Stale::StateChanged { planned: 3, now: 4 })
        );
        state.serial = 3;
        state.lineage = "other".into();
        assert!(matches!(
            file.check(&config, "sha256:aa", Some(&state), now),
            Err(Stale::LineageDiffers { .. })
        ));
    }

    #[test]
    fn a_plan_against_no_state_is_refused_once_a_state_exists() {
        let (config, state, _, now) = setup();
        let plan = reconcile(&config, None, None, now);
        let file = PlanFile::new(
            plan,
            "d".into(),
            None,
            String::new(),
            now,
            chrono::TimeDelta::hours(1),
        );
        assert_eq!(file.check(&config, "d", None, now), Ok(()));
        let e = file.check(&config, "d", Some(&state), now).unwrap_err();
        assert!(
            e.to_string().contains("no state, but a state now exists"),
            "{e}"
        );
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn span(s: &str) -> crate::policy::Span {
        s.parse().unwrap()
    }

    fn key(i: u8) -> crate::tunnel::TunnelKey {
        crate::tunnel::TunnelKey::new("023e105f4ecef8ad9ca31a8372d0c353", &format!("{i:032x}"))
    }

    /// One of every reason.
    fn every_reason() -> Vec<crate::reconcile::Reason> {
        use crate::reconcile::Reason;
        vec![
            Reason::NeverRotated,
            Reason::NotListed,
            Reason::UnknownLiveKey {
                since: t("2026-08-01T00:00:00Z"),
            },
            Reason::Due {
                last_rotated: t("2026-08-01T10:00:00Z"),
                days_ago: 117,
                policy: "default".into(),
                every: span("90d"),
                spread: Some(span("2w")),
            },
            Reason::Due {
                last_rotated: t("2026-08-01T10:00:00.123456789Z"),
                days_ago: 1,
                policy: "p".into(),
                every: span("30d"),
                spread: None,
            },
            Reason::Interrupted {
                started: t("2026-11-25T00:00:00Z"),
            },
            Reason::ChangedOutside {
                on: t("2026-11-20T00:00:00Z"),
            },
            Reason::NotInConfig,
            Reason::Forced,
            Reason::Pending {
                generated: t("2026-11-24T00:00:00Z"),
                remote_changed: Some(t("2026-11-24T01:00:00Z")),
            },
            Reason::DeliveryFailed {
                at: t("2026-11-23T00:00:00Z"),
                error: Some("exit status 1".into()),
            },
            Reason::RecipientsChanged {
                added: vec!["age1new".into()],
                removed: vec![],
                names: Default::default(),
            },
        ]
    }

    /// One action of every kind, with every dry-run result.
    fn every_action() -> Vec<crate::reconcile::Action> {
        use crate::reconcile::{Action, ActionKind, DryRun};
        let kinds = [
            ActionKind::Generate,
            ActionKind::Rotate,
            ActionKind::Forget,
            ActionKind::Reseal,
        ];
        let dry_runs = [
            DryRun::NotRun,
            DryRun::Accepted,
            DryRun::Refused("Cloudflare refused (HTTP 400)".into()),
            DryRun::NoVerdict("the dry run itself failed: HTTP 503".into()),
        ];
        let mut actions: Vec<Action> = kinds
            .iter()
            .zip(dry_runs)
            .enumerate()
            .map(|(i, (kind, dry_run))| Action {
                name: format!("t{i}"),
                key: key(i as u8),
                kind: *kind,
                reasons: every_reason(),
                policy: Some("default".into()),
                last_rotated: Some(t("2026-08-01T10:00:00Z")),
                next_due: Some(t("2026-10-30T10:00:00Z")),
                dry_run,
            })
            .collect();
        actions.push(Action {
            name: "r".into(),
            key: key(9),
            kind: ActionKind::Redeliver,
            reasons: vec![],
            policy: None,
            last_rotated: None,
            next_due: None,
            dry_run: DryRun::NotRun,
        });
        actions
    }

    /// A plan holding every variant the file format has.
    fn every_field() -> PlanFile {
        use crate::reconcile::{ActionKind, Deferral, Deferred, Reason, Unchanged, Upcoming};
        let deferred = |why| Deferred {
            name: "d".into(),
            key: key(10),
            kind: ActionKind::Rotate,
            reasons: vec![Reason::Forced],
            policy: "standard".into(),
            why,
        };
        let plan = Plan {
            now: t("2026-11-26T12:00:00Z"),
            offline: false,
            targeted: true,
            actions: every_action(),
            unchanged: vec![Unchanged {
                name: "u".into(),
                key: key(11),
                next_due: t("2027-01-01T00:00:00Z"),
            }],
            deferred: vec![
                deferred(Deferral::Window {
                    opens: t("2026-11-28T01:00:00Z"),
                    opens_local: "2026-11-28 02:00 CET".into(),
                    window: "sat 02:00–06:00 Europe/Berlin".into(),
                }),
                deferred(Deferral::Site {
                    site: "fra".into(),
                    rotating: "t1".into(),
                }),
                deferred(Deferral::SiblingDown {
                    site: "fra".into(),
                    sibling: "t2".into(),
                    health: "down in AMS, FRA".into(),
                }),
                deferred(Deferral::Unhealthy {
                    site: "fra".into(),
                    sibling: "t3".into(),
                    since: t("2026-11-26T10:42:00Z"),
                    failed: Some(t("2026-11-26T10:52:00Z")),
                    health: Some("down in AMS, FRA".into()),
                }),
                deferred(Deferral::Undelivered {
                    site: "fra".into(),
                    sibling: "t4".into(),
                    at: t("2026-11-26T10:43:00Z"),
                    error: Some("`deliver.sh` exited with status 3".into()),
                }),
                deferred(Deferral::Uncertain {
                    site: "fra".into(),
                    sibling: "t5".into(),
                    since: t("2026-11-26T10:44:00Z"),
                    pending: true,
                }),
            ],
            upcoming: vec![Upcoming {
                name: "soon".into(),
                key: key(12),
                policy: "standard".into(),
                due: t("2026-12-03T10:00:00Z"),
                starts: t("2026-12-05T01:00:00Z"),
            }],
            horizon: Some(span("2w")),
            health: vec![crate::reconcile::PathStatus {
                name: "t3".into(),
                key: key(13),
                site: "fra".into(),
                code: "down".into(),
                health: "down in AMS, FRA".into(),
                unverified_since: Some(t("2026-11-26T10:42:00Z")),
                gave_up: Some(t("2026-11-26T10:52:00Z")),
            }],
            unmanaged: vec![crate::reconcile::unmanaged::UnmanagedTunnel {
                name: "elsewhere".into(),
                key: key(14),
                add: format!("- {{ name: elsewhere, id: {} }}", key(14).tunnel_id),
            }],
            ignored: 2,
        };
        PlanFile::new(
            plan,
            "sha256:aa".into(),
            None,
            "--- a\n+++ b\n".into(),
            t("2026-11-26T12:00:00.5Z"),
            chrono::TimeDelta::hours(24),
        )
    }

    /// The file format does not move when the planner's types do: a plan
    /// with every variant is written to the very bytes psk wrote before
    /// the format had structs of its own, and reads back the same.
    #[test]
    fn every_field_is_written_as_before() {
        let file = every_field();
        let bytes = file.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            include_str!("planfile/every_field.json")
        );
        assert_eq!(PlanFile::parse(Path::new("p.json"), &bytes).unwrap(), file);
    }

    /// A no-verdict dry run is a warning: the plan stays applyable, and
    /// only such a plan needs format 2, which older files never hold.
    #[test]
    fn a_no_verdict_plan_is_version_2_and_still_applyable() {
        let (config, state, mut file, now) = setup();
        assert_eq!(file.format_version, 1, "no new value, the old version");
        let v1 = file.to_bytes();
        assert_eq!(PlanFile::parse(Path::new("p.json"), &v1).unwrap(), file);

        file.plan.actions[0].dry_run =
            crate::reconcile::DryRun::NoVerdict("the dry run itself failed: HTTP 503".into());
        let file = PlanFile::new(
            file.plan,
            "sha256:aa".into(),
            Some(&state),
            String::new(),
            now,
            chrono::TimeDelta::hours(24),
        );
        assert_eq!(file.format_version, 2);
        let text = String::from_utf8(file.to_bytes()).unwrap();
        assert!(text.contains("\"status\": \"no_verdict\""), "{text}");
        let back = PlanFile::parse(Path::new("p.json"), text.as_bytes()).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.check(&config, "sha256:aa", Some(&state), now), Ok(()));

        let mut refused = back.clone();
        refused.plan.actions[0].dry_run =
            crate::reconcile::DryRun::Refused("Cloudflare refused (HTTP 400)".into());
        assert_eq!(
            refused.check(&config, "sha256:aa", Some(&state), now),
            Err(Stale::NotApplyable)
        );

        let future = text.replace("\"format_version\": 2", "\"format_version\": 8");
        let e = PlanFile::parse(Path::new("p.json"), future.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("reads versions 1 to 7"), "{e}");

        // A live key psk does not hold needs the version that added it.
        let mut live = back.clone();
        live.plan.actions[0].reasons = vec![crate::reconcile::Reason::UnknownLiveKey {
            since: t("2026-08-01T00:00:00Z"),
        }];
        let live = PlanFile::new(
            live.plan,
            "sha256:aa".into(),
            Some(&state),
            String::new(),
            now,
            chrono::TimeDelta::hours(24),
        );
        assert_eq!(live.format_version, 3);
        let back = PlanFile::parse(Path::new("p.json"), &live.to_bytes()).unwrap();
        assert_eq!(back, live);

        // Recipients named as psk.yaml knows them need version 4; the
        // names come back, so `show-plan` says who joined.
        let mut named = back.clone();
        named.plan.actions[0].reasons = vec![crate::reconcile::Reason::RecipientsChanged {
            added: vec!["sha256:aa".into()],
            removed: vec![],
            names: [("sha256:aa".to_string(), "alice".to_string())].into(),
        }];
        let named = PlanFile::new(
            named.plan,
            "sha256:aa".into(),
            Some(&state),
            String::new(),
            now,
            chrono::TimeDelta::hours(24),
        );
        assert_eq!(named.format_version, 4);
        let back = PlanFile::parse(Path::new("p.json"), &named.to_bytes()).unwrap();
        assert_eq!(back, named);
        assert!(back.plan.actions[0].reasons[0]
            .describe()
            .contains("added alice."));
    }
}
