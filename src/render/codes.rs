//! The JSON plan's vocabularies (actions, reason codes, deferral codes,
//! dry-run statuses) read from the serde types that define them, for the
//! tables in `docs/formats.md`. The names come from the types (serde's own
//! list of variants), the meanings from [`meaning`]; a code without a
//! meaning, or a meaning without a code, makes [`vocabularies`] fail, and
//! `tests/it/docs.rs` fails when the checked-in tables differ from these,
//! so the docs cannot drift from what `psk plan --format json` writes.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;

use crate::reconcile::{ActionKind, Deferral, DryRun, Reason};

/// One list of values a JSON field takes.
pub struct Vocabulary {
    /// The field, e.g. `actions[].reasons[].code`.
    pub field: &'static str,
    /// Each value and what it means, in the type's order.
    pub values: Vec<(String, &'static str)>,
}

/// Every vocabulary of the JSON plan; `Err` names a value with no meaning
/// in [`meaning`] (or a meaning whose value the types no longer have).
pub fn vocabularies() -> Result<Vec<Vocabulary>, String> {
    let lists = [
        ("actions[].action", variants::<ActionKind>(None)),
        ("actions[].reasons[].code", variants::<Reason>(Some("code"))),
        (
            "deferred[].deferred.code",
            variants::<Deferral>(Some("code")),
        ),
        (
            "actions[].dry_run.status",
            variants::<DryRun>(Some("status")),
        ),
    ];
    let mut out = Vec::new();
    for (field, names) in lists {
        let names = names?;
        let values = names
            .into_iter()
            .map(|n| match meaning(field, &n) {
                Some(m) => Ok((n, m)),
                None => Err(format!(
                    "`{n}` ({field}) has no meaning in src/render/codes.rs; add one"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Vocabulary { field, values });
    }
    for (field, value) in MEANINGS.iter().map(|(f, v, _)| (*f, *v)) {
        let known = out
            .iter()
            .any(|voc| voc.field == field && voc.values.iter().any(|(n, _)| n == value));
        if !known {
            return Err(format!(
                "src/render/codes.rs explains `{value}` ({field}), which psk no longer writes"
            ));
        }
    }
    Ok(out)
}

/// The tables as markdown, one per vocabulary.
pub fn markdown() -> Result<String, String> {
    let mut md = String::new();
    for v in vocabularies()? {
        let _ = writeln!(md, "| `{}` | meaning |\n| --- | --- |", v.field);
        for (name, meaning) in v.values {
            let _ = writeln!(md, "| `{name}` | {meaning} |");
        }
        md.push('\n');
    }
    md.pop();
    Ok(md)
}

/// The variant names serde reads for `T`, with the tag field for an
/// internally tagged enum. serde's derive lists every variant (renames
/// applied) in its "unknown variant" error, so an unknown value brings the
/// list out; that is the list the wire format accepts.
fn variants<T: DeserializeOwned>(tag: Option<&str>) -> Result<Vec<String>, String> {
    const PROBE: &str = "\u{1}";
    let probe = match tag {
        Some(tag) => serde_json::json!({ tag: PROBE }),
        None => serde_json::json!(PROBE),
    };
    let err = match serde_json::from_value::<T>(probe) {
        Ok(_) => {
            return Err(format!(
                "{} accepted the probe value",
                std::any::type_name::<T>()
            ))
        }
        Err(e) => e.to_string(),
    };
    let expected = err
        .split_once("expected")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected serde error: {err}"))?;
    let names: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(format!("unexpected serde error: {err}"));
    }
    Ok(names)
}

fn meaning(field: &str, value: &str) -> Option<&'static str> {
    MEANINGS
        .iter()
        .find(|(f, v, _)| *f == field && *v == value)
        .map(|(_, _, m)| *m)
}

/// What each value means, for people reading the JSON.
const MEANINGS: &[(&str, &str, &str)] = &[
    ("actions[].action", "generate", "a first PSK made by psk for the tunnel (Cloudflare's `psk_generate`, or the bulk set with `generator: local`)"),
    ("actions[].action", "rotate", "replace the PSK psk sealed before"),
    ("actions[].action", "forget", "drop the tunnel's record and sealed PSK from the state; the tunnel on Cloudflare is never touched"),
    ("actions[].action", "reseal", "re-encrypt the sealed PSK to psk.yaml's recipients; `psk reseal` does it (no API call), apply reports it as left for reseal"),
    ("actions[].action", "redeliver", "hand the sealed PSK to its router again: the policy's `deliver` command failed; `psk deliver` does it (no API call)"),
    ("actions[].reasons[].code", "never_rotated", "psk holds no sealed PSK for the tunnel, and Cloudflare reports none (or was not asked: `--offline`)"),
    ("actions[].reasons[].code", "unknown_live_key", "psk holds no sealed PSK, but Cloudflare has held one since `since`: the key the router uses now, which apply replaces (`psk import NAME` adopts it instead)"),
    ("actions[].reasons[].code", "due", "the policy's period has run out (`last_rotated + rotate_every`, spread included)"),
    ("actions[].reasons[].code", "interrupted", "a rotation was started and its answer never recorded: the PSK on the edge is unknown"),
    ("actions[].reasons[].code", "drift", "Cloudflare's `last_generated_on` is newer than the sealed PSK: changed outside psk"),
    ("actions[].reasons[].code", "not_in_config", "the tunnel is in the state but no longer in psk.yaml"),
    ("actions[].reasons[].code", "not_listed", "Cloudflare no longer lists the tunnel, so its key is live nowhere (with `not_in_config`, for `forget`)"),
    ("actions[].reasons[].code", "forced", "asked for with `--replace NAME`"),
    ("actions[].reasons[].code", "pending", "a PSK psk generated itself is sealed as pending and Cloudflare never confirmed it; apply sends a new one"),
    ("actions[].reasons[].code", "delivery_failed", "the policy's `deliver` command failed for the sealed PSK (`redeliver`)"),
    ("actions[].reasons[].code", "recipients_changed", "psk.yaml's recipients differ from those the PSK is sealed to (`reseal`)"),
    ("deferred[].deferred.code", "window", "the policy's change window is shut; `opens` is when it opens next (RFC 3339, UTC)"),
    ("deferred[].deferred.code", "site", "another tunnel of the same site (`rotating`) changes in this apply"),
    ("deferred[].deferred.code", "still_listed", "(a `forget`) gone from psk.yaml, but Cloudflare still lists the tunnel: the record and its sealed PSK stay"),
    ("deferred[].deferred.code", "not_asked", "(a `forget`) gone from psk.yaml, and Cloudflare could not be asked (offline, or its account left psk.yaml and the token cannot list it): the record stays"),
    ("deferred[].deferred.code", "sibling_down", "`verify`'s preflight: another path of the site (`sibling`) is not healthy now (`health`, e.g. `down in AMS, FRA`)"),
    ("deferred[].deferred.code", "unhealthy", "another path of the site (`sibling`) got a new PSK and was not shown back up (`down_since`; `gave_up`, absent if psk was stopped while waiting; `health` now, when read): held until it is healthy again, `psk verify` clears it, or `--replace` rotates it again"),
    ("deferred[].deferred.code", "undelivered", "another path of the site (`sibling`) got a new PSK that its `deliver` command failed to hand its router (`delivery_failed_at`): held until `psk deliver` succeeds for it, or `--replace` rotates it again"),
    ("deferred[].deferred.code", "uncertain", "another path of the site (`sibling`) has a rotation whose outcome is unknown (interrupted, or a key psk made that Cloudflare never confirmed; `uncertain_since`): held until psk rotates it again and it settles"),
    ("actions[].dry_run.status", "not_run", "not attempted: offline, or an action that makes no API call"),
    ("actions[].dry_run.status", "accepted", "Cloudflare's `validate_only` would do it"),
    ("actions[].dry_run.status", "refused", "Cloudflare said no (`message`): apply would fail the same way, so the plan is not applyable"),
    ("actions[].dry_run.status", "no_verdict", "the dry run itself failed in passing (`message`): a warning, apply still tries"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_the_types_define_has_a_meaning() {
        let v = vocabularies().unwrap();
        let reasons = &v[1].values;
        assert!(reasons.iter().any(|(n, _)| n == "delivery_failed"));
        assert!(reasons.iter().any(|(n, _)| n == "drift"), "serde's rename");
        assert_eq!(
            v[0].values.len(),
            5,
            "generate, rotate, forget, reseal, redeliver"
        );
    }

    #[test]
    fn the_probe_reads_serde_names() {
        let names = variants::<ActionKind>(None).unwrap();
        assert_eq!(
            names,
            ["generate", "rotate", "forget", "reseal", "redeliver"]
        );
        let statuses = variants::<DryRun>(Some("status")).unwrap();
        assert_eq!(statuses, ["not_run", "accepted", "refused", "no_verdict"]);
    }
}
