//! zrepl's duration syntax: an integer and a unit, `s`, `m`, `h`, `d` (24 hours) or `w`
//! (7 days), with optional whitespace around and between them (`10m`, ` 1 d `, `-5s`).
//!
//! A bare number without a unit is accepted only when it is zero, because `0` means the same in
//! every unit while `10` is ambiguous. Days and weeks are fixed lengths (86 400 and 604 800
//! seconds), as in zrepl; they do not follow daylight-saving changes.

use std::fmt;

use jiff::SignedDuration;
use serde::Deserialize;

/// The longest duration text accepted, in bytes. Longer text is not a duration a human wrote.
pub const DURATION_TEXT_LEN_MAX: usize = 64;

/// Why a duration could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is longer than [`DURATION_TEXT_LEN_MAX`].
    #[error("duration `{text}` is longer than {DURATION_TEXT_LEN_MAX} bytes")]
    TooLong {
        /// The text as given.
        text: String,
    },
    /// The text is not `<integer><unit>`.
    #[error(
        "duration `{text}` is not an integer followed by a unit (`s`, `m`, `h`, `d` or `w`), \
         e.g. `10m` or `1d`"
    )]
    Syntax {
        /// The text as given.
        text: String,
    },
    /// A non-zero number without a unit.
    #[error(
        "duration `{text}` has no unit: write `{text}s`, `{text}m`, `{text}h`, `{text}d` or `{text}w`"
    )]
    MissingUnit {
        /// The text as given.
        text: String,
    },
    /// The value does not fit in a duration.
    #[error("duration `{text}` is too large")]
    Overflow {
        /// The text as given.
        text: String,
    },
    /// The duration must be positive here but is zero or negative.
    #[error("{what} must be a positive duration, got `{text}`")]
    NotPositive {
        /// Which setting it was (`interval`, `timeout`).
        what: &'static str,
        /// The text as given.
        text: String,
    },
}

/// Parses zrepl's duration syntax; a unitless number is accepted only if it is zero.
pub fn parse_duration(text: &str) -> Result<SignedDuration, DurationError> {
    if text.len() > DURATION_TEXT_LEN_MAX {
        return Err(DurationError::TooLong {
            text: text.to_owned(),
        });
    }
    let syntax = || DurationError::Syntax {
        text: text.to_owned(),
    };
    // Go's `\s` is ASCII whitespace only, as is `trim_ascii`.
    let trimmed = text.trim_ascii();
    let (sign, rest) = match trimmed.as_bytes().first() {
        Some(b'-') => (-1i64, &trimmed[1..]),
        Some(b'+') => (1, &trimmed[1..]),
        _ => (1, trimmed),
    };
    let n_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if n_digits == 0 {
        return Err(syntax());
    }
    let (digits, unit) = rest.split_at(n_digits);
    let unit_secs: Option<i64> = match unit.trim_ascii_start() {
        "" => None,
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3_600),
        "d" => Some(86_400),
        "w" => Some(604_800),
        _ => return Err(syntax()),
    };
    let overflow = || DurationError::Overflow {
        text: text.to_owned(),
    };
    let value: i64 = digits.parse().map_err(|_| overflow())?;
    let Some(unit_secs) = unit_secs else {
        if value == 0 {
            return Ok(SignedDuration::ZERO);
        }
        return Err(DurationError::MissingUnit {
            text: trimmed.to_owned(),
        });
    };
    let secs = value
        .checked_mul(unit_secs)
        .and_then(|s| s.checked_mul(sign))
        .ok_or_else(overflow)?;
    Ok(SignedDuration::from_secs(secs))
}

/// Parses a duration that must be positive; `what` names the setting in the error.
pub fn parse_positive_duration(
    what: &'static str,
    text: &str,
) -> Result<SignedDuration, DurationError> {
    let duration = parse_duration(text)?;
    if duration.is_positive() {
        Ok(duration)
    } else {
        Err(DurationError::NotPositive {
            what,
            text: text.to_owned(),
        })
    }
}

/// A strictly positive duration between two periodic snapshot rounds (`interval:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Interval(SignedDuration);

impl Interval {
    /// Parses the `interval:` setting.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        parse_positive_duration("interval", text).map(Self)
    }

    /// Wraps a duration, refusing zero and negative ones.
    pub fn new(duration: SignedDuration) -> Result<Self, DurationError> {
        if duration.is_positive() {
            Ok(Self(duration))
        } else {
            Err(DurationError::NotPositive {
                what: "interval",
                text: format!("{duration:#}"),
            })
        }
    }

    /// The duration.
    pub fn duration(self) -> SignedDuration {
        self.0
    }
}

impl TryFrom<String> for Interval {
    type Error = DurationError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case per line: `text => seconds` or `text => error:<variant>`.
    const CASES: &str = "
        10s => 10
        10m => 600
        2h => 7200
        1d => 86400
        2w => 1209600
        ' 5 m ' => 300
        -5s => -5
        +5s => 5
        0 => 0
        0s => 0
        00 => 0
        10 => error:MissingUnit
        '' => error:Syntax
        s => error:Syntax
        10x => error:Syntax
        1.5h => error:Syntax
        1h30m => error:Syntax
        '- 5s' => error:Syntax
        '5\u{a0}s' => error:Syntax
        99999999999999999999s => error:Overflow
        9223372036854775807w => error:Overflow
    ";

    fn check(text: &str, expected: &str) {
        let got = match parse_duration(text) {
            Ok(d) => d.as_secs().to_string(),
            Err(e) => {
                let variant = format!("{e:?}");
                let variant = variant.split([' ', '{']).next().unwrap_or("").to_owned();
                assert!(!e.to_string().is_empty());
                format!("error:{variant}")
            }
        };
        assert_eq!(got, expected, "parse_duration({text:?})");
    }

    #[test]
    fn duration_table() {
        for line in CASES.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (text, expected) = line.split_once(" => ").unwrap();
            check(text.trim_matches('\''), expected);
        }
    }

    #[test]
    fn interval_must_be_positive() {
        assert_eq!(Interval::parse("10m").unwrap().duration().as_secs(), 600);
        for text in ["0", "0s", "-1m"] {
            let err = Interval::parse(text).unwrap_err();
            assert!(matches!(err, DurationError::NotPositive { .. }), "{text}");
            assert!(
                err.to_string()
                    .contains("interval must be a positive duration")
            );
        }
        assert!(Interval::new(SignedDuration::ZERO).is_err());
        assert!(Interval::new(SignedDuration::from_secs(1)).is_ok());
    }

    #[test]
    fn interval_deserializes_from_config_text() {
        let interval: Interval = serde_json::from_str("\"10m\"").unwrap();
        assert_eq!(interval.duration().as_secs(), 600);
        let err = serde_json::from_str::<Interval>("\"0s\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("interval must be a positive duration"),
            "{err}"
        );
    }

    #[test]
    fn too_long_text_is_refused() {
        let text = format!("{}s", "1".repeat(DURATION_TEXT_LEN_MAX));
        assert!(matches!(
            parse_duration(&text),
            Err(DurationError::TooLong { .. })
        ));
    }
}
