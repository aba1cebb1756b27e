//! `cron:` snapshot schedules: a spec of 5 fields (minute hour day-of-month month day-of-week),
//! or 6 with leading seconds, and its next fire time after an instant in a time zone.
//!
//! zrepl parses specs with robfig/cron (seconds optional, no descriptors); zferry uses croner.
//! As in zrepl, `@daily`-style descriptors are refused, and a day matches when the
//! day-of-month or the day-of-week field matches unless one of them is `*` (Vixie cron).
//! croner also accepts a few extensions robfig does not (`L`, `W`, `#`, `7` for Sunday); they
//! are kept because a spec zrepl accepts means the same here.
//!
//! Daylight-saving time, as croner documents it: a fixed time that falls in a spring-forward gap
//! fires at the first instant after the gap (`30 2 * * *` in Europe/Berlin fires at 03:00 CEST
//! on that day); a fixed time that occurs twice in a fall-back fires once, at its first
//! occurrence.

use std::fmt;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Zoned;
use serde::Deserialize;

/// The longest spec accepted, in bytes.
pub const CRON_SPEC_LEN_MAX: usize = 256;

/// Why a `cron:` spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronSpecError {
    /// Longer than [`CRON_SPEC_LEN_MAX`].
    #[error("cron spec `{spec}` is longer than {CRON_SPEC_LEN_MAX} bytes")]
    TooLong {
        /// The spec.
        spec: String,
    },
    /// A descriptor such as `@daily`.
    #[error(
        "cron spec `{spec}`: descriptors like `@daily` are not supported (zrepl refuses them \
         too); write the fields, e.g. `0 0 * * *` for daily at midnight"
    )]
    Descriptor {
        /// The spec.
        spec: String,
    },
    /// Not 5 or 6 fields.
    #[error(
        "cron spec `{spec}` has {n_fields} fields; expected 5 (minute hour day-of-month month \
         day-of-week) or 6 with leading seconds"
    )]
    FieldCount {
        /// The spec.
        spec: String,
        /// How many fields it has.
        n_fields: usize,
    },
    /// A field croner refuses.
    #[error("cron spec `{spec}` is invalid: {reason}")]
    Invalid {
        /// The spec.
        spec: String,
        /// croner's reason.
        reason: String,
    },
}

/// No fire time could be found after the instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron spec `{spec}` has no fire time after {after}: {reason}")]
pub struct CronNextError {
    /// The spec.
    pub spec: String,
    /// The instant searched from.
    pub after: Zoned,
    /// croner's reason.
    pub reason: String,
}

/// A parsed `cron:` spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct CronSchedule {
    spec: String,
    cron: Cron,
}

impl CronSchedule {
    /// Parses a spec the way zrepl's config does: 5 fields, or 6 with leading seconds.
    pub fn parse(spec: &str) -> Result<Self, CronSpecError> {
        if spec.len() > CRON_SPEC_LEN_MAX {
            return Err(CronSpecError::TooLong {
                spec: spec.to_owned(),
            });
        }
        if spec.contains('@') {
            return Err(CronSpecError::Descriptor {
                spec: spec.to_owned(),
            });
        }
        let n_fields = spec.split_whitespace().count();
        if !(5..=6).contains(&n_fields) {
            return Err(CronSpecError::FieldCount {
                spec: spec.to_owned(),
                n_fields,
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(spec)
            .map_err(|e| CronSpecError::Invalid {
                spec: spec.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            spec: spec.to_owned(),
            cron,
        })
    }

    /// The first fire time strictly after `after`, in `after`'s time zone.
    pub fn next_after(&self, after: &Zoned) -> Result<Zoned, CronNextError> {
        self.cron
            .find_next_occurrence(after, false)
            .map_err(|e| CronNextError {
                spec: self.spec.clone(),
                after: after.clone(),
                reason: e.to_string(),
            })
    }

    /// The spec as written.
    pub fn as_str(&self) -> &str {
        &self.spec
    }
}

impl TryFrom<String> for CronSchedule {
    type Error = CronSpecError;
    fn try_from(spec: String) -> Result<Self, Self::Error> {
        Self::parse(&spec)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for CronSchedule {}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZoneDatabase;
    use proptest::prelude::*;

    fn zoned(text: &str) -> Zoned {
        // `2024-03-31T01:00:00+01:00[Europe/Berlin]`, resolved with the bundled database.
        let (instant, zone) = text.trim_end_matches(']').split_once('[').unwrap();
        let tz = TimeZoneDatabase::bundled().get(zone).unwrap();
        instant.parse::<jiff::Timestamp>().unwrap().to_zoned(tz)
    }

    /// `spec | after | expected fire times, each strictly after the previous one`.
    const NEXT_CASES: &str = "
    0 * * * *       | 2024-06-01T10:00:00+00:00[UTC]           | 2024-06-01T11:00:00+00:00 2024-06-01T12:00:00+00:00
    */15 * * * *    | 2024-06-01T10:07:30.5+00:00[UTC]         | 2024-06-01T10:15:00+00:00 2024-06-01T10:30:00+00:00
    30 * * * * *    | 2024-06-01T10:00:30+00:00[UTC]           | 2024-06-01T10:01:30+00:00
    * * * * * *     | 2024-06-01T10:00:00.5+00:00[UTC]         | 2024-06-01T10:00:01+00:00 2024-06-01T10:00:02+00:00
    0 0 1 * MON     | 2024-06-01T10:00:00+00:00[UTC]           | 2024-06-03T00:00:00+00:00 2024-06-10T00:00:00+00:00
    0 0 1 * *       | 2024-06-01T10:00:00+00:00[UTC]           | 2024-07-01T00:00:00+00:00
    0 0 * * 0       | 2024-06-01T10:00:00+00:00[UTC]           | 2024-06-02T00:00:00+00:00
    30 2 * * *      | 2024-03-30T12:00:00+01:00[Europe/Berlin] | 2024-03-31T03:00:00+02:00 2024-04-01T02:30:00+02:00
    30 2 * * *      | 2024-10-26T12:00:00+02:00[Europe/Berlin] | 2024-10-27T02:30:00+02:00 2024-10-28T02:30:00+01:00
    0 3 * * *       | 2024-03-30T12:00:00+01:00[Europe/Berlin] | 2024-03-31T03:00:00+02:00 2024-04-01T03:00:00+02:00
    0 0 * * *       | 2024-06-01T10:00:00+00:00[Asia/Kolkata]  | 2024-06-01T18:30:00+00:00
    ";

    #[test]
    fn next_fire_times() {
        for line in NEXT_CASES.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [spec, after, expected] = fields[..] else {
                panic!("bad fixture line {line:?}");
            };
            let schedule = CronSchedule::parse(spec).unwrap();
            let mut at = zoned(after);
            for want in expected.split_whitespace() {
                let next = schedule.next_after(&at).unwrap();
                assert!(
                    next.timestamp() > at.timestamp(),
                    "{spec}: {next} after {at}"
                );
                let want: jiff::Timestamp = want.parse().unwrap();
                assert_eq!(next.timestamp(), want, "{spec} after {at}: got {next}");
                assert_eq!(next.time_zone(), at.time_zone());
                at = next;
            }
        }
    }

    /// `spec | expected error variant`.
    const SPEC_ERRORS: &str = "
    @daily            | Descriptor
    @every 1h         | Descriptor
    @hourly           | Descriptor
    0 0 * *           | FieldCount
    0 0 0 * * * 2024  | FieldCount
                      | FieldCount
    61 * * * *        | Invalid
    0 25 * * *        | Invalid
    x * * * *         | Invalid
    ";

    #[test]
    fn spec_errors() {
        for line in SPEC_ERRORS.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [spec, expected] = fields[..] else {
                panic!("bad fixture line {line:?}");
            };
            let err = CronSchedule::parse(spec).unwrap_err();
            let variant = format!("{err:?}");
            let variant = variant.split([' ', '{']).next().unwrap();
            assert_eq!(variant, expected, "{spec:?}: {err}");
            assert!(err.to_string().contains("cron spec"), "{err}");
        }
        let err = CronSchedule::parse("@daily").unwrap_err().to_string();
        assert!(err.contains("write the fields"), "{err}");
        let long = format!("0 0 * * {}", "1,".repeat(CRON_SPEC_LEN_MAX));
        assert!(matches!(
            CronSchedule::parse(&long),
            Err(CronSpecError::TooLong { .. })
        ));
    }

    #[test]
    fn schedule_deserializes_from_config_text() {
        let schedule: CronSchedule = serde_json::from_str("\"0 3 * * *\"").unwrap();
        assert_eq!(schedule.as_str(), "0 3 * * *");
        let err = serde_json::from_str::<CronSchedule>("\"@daily\"").unwrap_err();
        assert!(err.to_string().contains("descriptors"), "{err}");
    }

    proptest! {
        /// Every next fire time is strictly after its input, in Berlin across DST changes.
        #[test]
        fn next_is_strictly_later(
            unix in 1_700_000_000i64..1_800_000_000,
            spec in prop::sample::select(vec![
                "0 * * * *", "30 2 * * *", "*/7 * * * *", "15 1-3 * * *", "0 0 29 2 *",
                "*/20 * * * * *",
            ]),
        ) {
            let tz = TimeZoneDatabase::bundled().get("Europe/Berlin").unwrap();
            let at = jiff::Timestamp::from_second(unix).unwrap().to_zoned(tz);
            let schedule = CronSchedule::parse(spec).unwrap();
            let next = schedule.next_after(&at).unwrap();
            prop_assert!(next.timestamp() > at.timestamp());
        }
    }
}
