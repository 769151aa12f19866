//! Change windows: the local hours in which a policy lets rotations start.
//!
//! Operators book maintenance in local time ("Saturday 02:00 in Berlin"),
//! so a window is kept as days and times of day in an IANA zone and turned
//! into UTC instants only when asked, date by date. That is what keeps DST
//! change days right: a window's local bounds map to different UTC instants
//! in summer and winter, and a local time that is skipped or repeated on the
//! change day has one defined answer (see [`Window`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Seconds in a day; also the largest `end` (written `24:00`).
const DAY: u32 = 86_400;

/// When rotations may start, e.g. Saturday and Sunday 02:00–06:00 in
/// Europe/Berlin.
///
/// - `days` are the days on which the window *opens*; a window whose `end`
///   is not after its `start` crosses midnight and closes on the next day.
/// - On a DST change day, a `start` or `end` that the clocks skip (02:30 on
///   a spring-forward day in Berlin) means the first instant after the gap;
///   a time that happens twice (02:30 on the autumn day) opens at the first
///   and closes at the second occurrence, so the window never shrinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Indexed by `Weekday::num_days_from_monday`.
    days: [bool; 7],
    /// Seconds after local midnight.
    start: u32,
    /// Seconds after local midnight, `1..=86400`.
    end: u32,
    tz: Tz,
}

/// A day name as written in psk.yaml.
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// `days` as indices from Monday; `start` and `end` in seconds after
    /// local midnight (`end` up to 86400). Refuses a window that is never
    /// open or open for less than a minute.
    pub fn new(days: &[usize], start: u32, end: u32, tz: Tz) -> Result<Window, String> {
        let mut set = [false; 7];
        for d in days {
            if let Some(slot) = set.get_mut(*d) {
                *slot = true;
            }
        }
        if !set.iter().any(|d| *d) {
            return Err("the window is never open: `days` is empty; list at least one day (mon, tue, wed, thu, fri, sat, sun) or leave `days` out for every day".into());
        }
        if start >= DAY || end == 0 || end > DAY {
            return Err("start must be before 24:00 and end after 00:00".into());
        }
        if start == end {
            return Err(format!(
                "the window is never open: start and end are both {}; for a whole day use start: \"00:00\" and end: \"24:00\"",
                format_time_of_day(start)
            ));
        }
        let length = if end > start {
            end - start
        } else {
            end + DAY - start
        };
        if length < 60 {
            return Err(format!(
                "the window {}–{} is open for {length} second{}; a window must be open for at least a minute",
                format_time_of_day(start),
                format_time_of_day(end),
                if length == 1 { "" } else { "s" }
            ));
        }
        Ok(Window {
            days: set,
            start,
            end,
            tz,
        })
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether a rotation may start at `t`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.intervals(t, 1)
            .any(|(open, close)| open <= t && t < close)
    }

    /// The first instant at or after `t` when the window is open: `t` itself
    /// when it is open now. `None` only for a window that is empty on every
    /// date of the next year (which validation rules out).
    pub fn next_open(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(t) {
            return Some(t);
        }
        self.intervals(t, 370)
            .map(|(open, _)| open)
            .filter(|open| *open > t)
            .min()
    }

    /// Every opening `[open, close)` that overlaps `[from, until)`, in
    /// order: what a calendar draws.
    pub fn openings(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let days = (until - from).num_days().max(0) + 1;
        let mut out: Vec<_> = self
            .intervals(from, days)
            .filter(|(open, close)| *close > from && *open < until)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// When the opening that holds `t` closes; `None` when shut at `t`.
    pub fn closes_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.intervals(t, 1)
            .find(|(open, close)| *open <= t && t < *close)
            .map(|(_, close)| close)
    }

    /// `t` in the window's zone, for messages: `2026-11-28 02:00 CET`.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// The open intervals `[open, close)` of the windows opening on the
    /// local dates from the day before `t` to `days_ahead` days after it.
    fn intervals(
        &self,
        t: DateTime<Utc>,
        days_ahead: i64,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let today = t.with_timezone(&self.tz).date_naive();
        (-1..=days_ahead.max(1) + 1).filter_map(move |offset| {
            let date = today.checked_add_signed(TimeDelta::days(offset))?;
            if !self.days[date.weekday().num_days_from_monday() as usize] {
                return None;
            }
            let open = self.instant(date, self.start, Bound::Open)?;
            let close_date = if self.end > self.start {
                date
            } else {
                date.succ_opt()?
            };
            let close = self.instant(close_date, self.end, Bound::Close)?;
            // A window that lies wholly in a DST gap is shut that day.
            (open < close).then_some((open, close))
        })
    }

    /// The UTC instant of a local date and time of day in the window's zone.
    fn instant(&self, date: NaiveDate, seconds: u32, bound: Bound) -> Option<DateTime<Utc>> {
        let mut local: NaiveDateTime =
            date.and_hms_opt(0, 0, 0)? + TimeDelta::seconds(i64::from(seconds));
        // A skipped local time means the first instant after the gap; gaps
        // are at most a few hours, a day of minutes is a generous bound.
        for _ in 0..=1440 {
            match self.tz.from_local_datetime(&local) {
                LocalResult::Single(x) => return Some(x.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, second) => {
                    let x = match bound {
                        Bound::Open => first,
                        Bound::Close => second,
                    };
                    return Some(x.with_timezone(&Utc));
                }
                LocalResult::None => {
                    local = local.checked_add_signed(TimeDelta::minutes(1))?;
                }
            }
        }
        None
    }
}

#[derive(Clone, Copy)]
enum Bound {
    Open,
    Close,
}

impl fmt::Display for Window {
    /// `sat, sun 02:00–06:00 Europe/Berlin`, or `daily 22:00–02:00 UTC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days.iter().all(|d| *d) {
            write!(f, "daily")?;
        } else {
            let names: Vec<&str> = DAY_NAMES
                .iter()
                .zip(self.days)
                .filter(|(_, on)| *on)
                .map(|(n, _)| *n)
                .collect();
            write!(f, "{}", names.join(", "))?;
        }
        write!(
            f,
            " {}–{} {}",
            format_time_of_day(self.start),
            format_time_of_day(self.end),
            self.tz.name()
        )
    }
}

/// `HH:MM`, or `HH:MM:SS` when there are seconds; 86400 is `24:00`.
pub fn format_time_of_day(seconds: u32) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if s == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// Parses `HH:MM` or `HH:MM:SS` (24-hour clock) into seconds after
/// midnight. `24:00` is accepted only where `allow_24` (a window's end).
pub fn parse_time_of_day(text: &str, allow_24: bool) -> Result<u32, String> {
    let bad = || {
        format!(
            "`{text}` is not a time of day; expected HH:MM on a 24-hour clock, e.g. \"02:00\"{}",
            if allow_24 { " or \"24:00\"" } else { "" }
        )
    };
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let n: Vec<u32> = parts.iter().map(|p| p.parse().unwrap_or(99)).collect();
    let (h, m, s) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    if m > 59 || s > 59 {
        return Err(bad());
    }
    let total = h * 3600 + m * 60 + s;
    if h < 24 || (allow_24 && total == DAY) {
        Ok(total)
    } else {
        Err(bad())
    }
}

/// A day as written in psk.yaml (`mon` ... `sun`), as an index from Monday.
pub fn parse_day(text: &str) -> Option<usize> {
    DAY_NAMES.iter().position(|d| *d == text)
}

/// An IANA time zone name; a near miss gets a suggestion.
pub fn parse_timezone(text: &str) -> Result<Tz, String> {
    if let Ok(tz) = Tz::from_str(text) {
        return Ok(tz);
    }
    let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
    let hint = crate::suggest::did_you_mean(text, names).unwrap_or_else(|| {
        "; expected an IANA name such as UTC, Europe/Berlin or America/New_York".into()
    });
    Err(format!("unknown time zone `{text}`{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Asked at `asked`, `w` opens next at `opens`.
    fn assert_opens(w: &Window, asked: &str, opens: &str) {
        assert_eq!(w.next_open(t(asked)), Some(t(opens)), "asked at {asked}");
    }

    fn window(days: &[&str], start: &str, end: &str, tz: &str) -> Window {
        let days: Vec<usize> = days.iter().map(|d| parse_day(d).unwrap()).collect();
        Window::new(
            &days,
            parse_time_of_day(start, false).unwrap(),
            parse_time_of_day(end, true).unwrap(),
            parse_timezone(tz).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn utc_window_bounds_are_half_open() {
        let w = window(&["sat", "sun"], "02:00", "06:00", "UTC");
        // 2026-11-28 is a Saturday.
        assert!(!w.contains(t("2026-11-28T01:59:59Z")));
        assert!(w.contains(t("2026-11-28T02:00:00Z")));
        assert!(w.contains(t("2026-11-28T05:59:59Z")));
        assert!(!w.contains(t("2026-11-28T06:00:00Z")));
        assert!(!w.contains(t("2026-11-27T03:00:00Z")), "a Friday");
        assert_opens(&w, "2026-11-26T12:00:00Z", "2026-11-28T02:00:00Z");
        assert_opens(&w, "2026-11-28T03:00:00Z", "2026-11-28T03:00:00Z");
        assert_opens(&w, "2026-11-29T06:00:00Z", "2026-12-05T02:00:00Z");
    }

    #[test]
    fn window_crossing_midnight_closes_the_next_day() {
        // Opens Friday 22:00, closes Saturday 02:00.
        let w = window(&["fri"], "22:00", "02:00", "UTC");
        assert!(!w.contains(t("2026-11-27T21:59:59Z")));
        assert!(w.contains(t("2026-11-27T22:00:00Z")));
        assert!(w.contains(t("2026-11-28T01:59:59Z")), "Saturday morning");
        assert!(!w.contains(t("2026-11-28T02:00:00Z")));
        assert!(!w.contains(t("2026-11-28T22:30:00Z")), "Saturday night");
        assert!(!w.contains(t("2026-11-27T01:00:00Z")), "Thursday's night");
        assert_opens(&w, "2026-11-28T02:00:00Z", "2026-12-04T22:00:00Z");
        assert_eq!(w.to_string(), "fri 22:00–02:00 UTC");
    }

    #[test]
    fn whole_day_with_24_00() {
        let w = window(&["wed"], "00:00", "24:00", "UTC");
        assert!(w.contains(t("2026-11-25T00:00:00Z")));
        assert!(w.contains(t("2026-11-25T23:59:59Z")));
        assert!(!w.contains(t("2026-11-26T00:00:00Z")));
    }

    #[test]
    fn berlin_summer_and_winter_map_to_different_utc_hours() {
        let w = window(&["sun"], "02:00", "06:00", "Europe/Berlin");
        // A winter Sunday: CET is UTC+1.
        assert!(!w.contains(t("2026-11-01T00:59:59Z")));
        assert!(w.contains(t("2026-11-01T01:00:00Z")));
        assert!(!w.contains(t("2026-11-01T05:00:00Z")));
        // A summer Sunday: CEST is UTC+2.
        assert!(w.contains(t("2026-07-05T00:00:00Z")));
        assert!(!w.contains(t("2026-07-05T04:00:00Z")));
        assert_eq!(w.local(t("2026-07-05T00:00:00Z")), "2026-07-05 02:00 CEST");
    }

    #[test]
    fn spring_forward_day_opens_after_the_gap() {
        // 2026-03-29: Berlin's clocks jump from 02:00 CET to 03:00 CEST, so
        // 02:00 does not exist; the window opens at 03:00 CEST (01:00 UTC)
        // and closes at 06:00 CEST (04:00 UTC).
        let w = window(&["sun"], "02:00", "06:00", "Europe/Berlin");
        assert!(!w.contains(t("2026-03-29T00:59:59Z")));
        assert!(w.contains(t("2026-03-29T01:00:00Z")));
        assert!(w.contains(t("2026-03-29T03:59:59Z")));
        assert!(!w.contains(t("2026-03-29T04:00:00Z")));
        assert_opens(&w, "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z");
        // A window inside the gap is shut that day only.
        let gap = window(&["sun"], "02:15", "02:45", "Europe/Berlin");
        assert_opens(&gap, "2026-03-28T12:00:00Z", "2026-04-05T00:15:00Z");
    }

    #[test]
    fn fall_back_day_keeps_the_whole_local_window() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:00-03:00 happens
        // twice. The window opens at the first 02:00 (00:00 UTC) and closes
        // at 06:00 CET (05:00 UTC): five real hours.
        let w = window(&["sun"], "02:00", "06:00", "Europe/Berlin");
        assert!(!w.contains(t("2026-10-24T23:59:59Z")));
        assert!(w.contains(t("2026-10-25T00:00:00Z")));
        assert!(w.contains(t("2026-10-25T04:59:59Z")));
        assert!(!w.contains(t("2026-10-25T05:00:00Z")));
        // An end inside the repeated hour closes at its second occurrence.
        let short = window(&["sun"], "01:30", "02:30", "Europe/Berlin");
        assert!(short.contains(t("2026-10-24T23:30:00Z")));
        assert!(short.contains(t("2026-10-25T01:29:59Z")));
        assert!(!short.contains(t("2026-10-25T01:30:00Z")));
    }

    #[test]
    fn new_york_dst_days() {
        // US DST starts 2026-03-08 (02:00 EST -> 03:00 EDT) and ends
        // 2026-11-01 (02:00 EDT -> 01:00 EST).
        let w = window(&["sun"], "01:00", "04:00", "America/New_York");
        assert!(w.contains(t("2026-03-08T06:00:00Z")), "01:00 EST");
        assert!(!w.contains(t("2026-03-08T08:00:00Z")), "04:00 EDT");
        assert!(w.contains(t("2026-03-08T07:59:59Z")));
        assert!(w.contains(t("2026-11-01T05:00:00Z")), "01:00 EDT");
        assert!(w.contains(t("2026-11-01T08:59:59Z")));
        assert!(!w.contains(t("2026-11-01T09:00:00Z")), "04:00 EST");
    }

    #[test]
    fn refuses_windows_that_are_never_open_or_too_short() {
        let utc = parse_timezone("UTC").unwrap();
        assert!(Window::new(&[], 0, 3600, utc)
            .unwrap_err()
            .contains("never open"));
        assert!(Window::new(&[0], 7200, 7200, utc)
            .unwrap_err()
            .contains("never open"));
        assert!(Window::new(&[0], 7200, 7230, utc)
            .unwrap_err()
            .contains("at least a minute"));
        assert!(Window::new(&[0], 86_370, 10, utc)
            .unwrap_err()
            .contains("40 seconds"));
        assert!(Window::new(&[0], 7200, 7260, utc).is_ok());
    }

    #[test]
    fn parses_times_days_and_zones() {
        assert_eq!(parse_time_of_day("02:00", false), Ok(7200));
        assert_eq!(parse_time_of_day("23:59:30", false), Ok(86_370));
        assert_eq!(parse_time_of_day("24:00", true), Ok(86_400));
        for bad in ["24:00", "2:00", "02:60", "0200", "ab:cd", "", "02:00:00:00"] {
            assert!(parse_time_of_day(bad, false).is_err(), "{bad}");
        }
        assert!(parse_time_of_day("24:01", true).is_err());
        assert_eq!(parse_day("sat"), Some(5));
        assert_eq!(parse_day("Saturday"), None);
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert_eq!(
            parse_timezone("Europe/Berln").unwrap_err(),
            "unknown time zone `Europe/Berln`, did you mean `Europe/Berlin`?"
        );
        assert!(parse_timezone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
