//! The durations of psk.yaml and the command line (`90d`, `1w2d`, `30s`):
//! a policy's period and spread, a delivery timeout, a lock wait. One
//! syntax for all of them, and one spelling when psk shows them.

use std::fmt;
use std::str::FromStr;

use chrono::TimeDelta;

/// A positive span written as `<number><unit>` groups, e.g. `90d` or `1w2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    seconds: i64,
}

/// The longest span accepted: a hundred years is already absurd for a PSK.
const MAX_SECONDS: i64 = 100 * 366 * 86_400;

impl Span {
    pub fn from_seconds(seconds: i64) -> Option<Self> {
        (seconds > 0 && seconds <= MAX_SECONDS).then_some(Span { seconds })
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }

    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("empty duration; expected a number and a unit, e.g. 90d")]
    Empty,
    #[error(
        "`{0}` is not a duration; expected a number and a unit (s, m, h, d, w), e.g. 90d or 1w2d"
    )]
    Syntax(String),
    #[error("`{0}` is zero; a rotation period must be positive")]
    Zero(String),
    #[error("`{0}` is longer than 100 years")]
    TooLong(String),
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(SpanError::Empty);
        }
        let syntax = || SpanError::Syntax(text.to_string());
        let mut total: i64 = 0;
        let mut digits = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit: i64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(syntax()),
            };
            if digits.is_empty() {
                return Err(syntax());
            }
            let n: i64 = digits
                .parse()
                .map_err(|_| SpanError::TooLong(text.to_string()))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| SpanError::TooLong(text.to_string()))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(syntax());
        }
        if total == 0 {
            return Err(SpanError::Zero(text.to_string()));
        }
        Span::from_seconds(total).ok_or_else(|| SpanError::TooLong(text.to_string()))
    }
}

impl fmt::Display for Span {
    /// The shortest exact spelling, largest unit first: `90d`, `1w2d`, `36h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.seconds;
        for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
            // Whole days read better than weeks unless the span is whole weeks.
            if unit == "w" && rest % size != 0 {
                continue;
            }
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        if rest > 0 {
            write!(f, "{rest}s")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!("30s".parse::<Span>().unwrap().seconds(), 30);
        assert_eq!("5m".parse::<Span>().unwrap().seconds(), 300);
        assert_eq!("2h".parse::<Span>().unwrap().seconds(), 7200);
        assert_eq!("90d".parse::<Span>().unwrap().seconds(), 90 * 86_400);
        assert_eq!("1w2d".parse::<Span>().unwrap().seconds(), 9 * 86_400);
        assert_eq!(" 12h ".parse::<Span>().unwrap().seconds(), 12 * 3600);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "d", "90", "90x", "-1d", "1.5d", "9 0d", "90dd"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} should fail");
        }
        assert!(matches!("0d".parse::<Span>(), Err(SpanError::Zero(_))));
        assert!(matches!("0s0m".parse::<Span>(), Err(SpanError::Zero(_))));
        assert!(matches!(
            "99999999999999999999d".parse::<Span>(),
            Err(SpanError::TooLong(_))
        ));
        assert!(matches!(
            "40000d".parse::<Span>(),
            Err(SpanError::TooLong(_))
        ));
    }

    #[test]
    fn displays_shortest_exact_form() {
        for (input, shown) in [
            ("90d", "90d"),
            ("2w", "2w"),
            ("1w2d", "9d"),
            ("36h", "1d12h"),
            ("90s", "1m30s"),
        ] {
            assert_eq!(input.parse::<Span>().unwrap().to_string(), shown);
        }
    }
}
