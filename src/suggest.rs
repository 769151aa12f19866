//! "Did you mean ...?" for misspelled keys, policy names and time zones.

/// The candidate closest to `word`, when it is close enough to be the
/// likely intent (Jaro-Winkler similarity of at least 0.8, which catches a
/// dropped, doubled or swapped letter but not an unrelated word).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&word, &c.to_ascii_lowercase());
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// ``, did you mean `best`?`` when a candidate is [`closest`] to `word`:
/// the end of a message that has just named what is wrong.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|best| format!(", did you mean `{best}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = [
            "rotate_every",
            "generator",
            "window",
            "spread",
            "site_parallel",
        ];
        assert_eq!(closest("rotate_evry", keys), Some("rotate_every"));
        assert_eq!(closest("windw", keys), Some("window"));
        assert_eq!(closest("spraed", keys), Some("spread"));
        assert_eq!(closest("colour", keys), None);
        let tunnel = ["name", "id", "policy", "site", "account_id", "account"];
        assert_eq!(closest("ste", tunnel), Some("site"));
        assert_eq!(closest("acount", tunnel), Some("account"));
        assert_eq!(closest("polcy", tunnel), Some("policy"));
        assert_eq!(
            did_you_mean("polcy", tunnel).as_deref(),
            Some(", did you mean `policy`?")
        );
        assert_eq!(did_you_mean("colour", tunnel), None);
    }
}
