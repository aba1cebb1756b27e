//! Snapshot names: `prefix + timestamp`, with zrepl's `timestamp_format` and
//! `timestamp_location`.
//!
//! `timestamp_format` is one of the named formats (case-insensitive) or a Go time layout:
//!
//! | format | Go layout | example |
//! |---|---|---|
//! | `dense` (default) | `20060102_150405_000` (the `_000` is literal text) | `zrepl_20380119_031407_000` |
//! | `human` | `2006-01-02_15:04:05` | `zrepl_2038-01-19_03:14:07` |
//! | `iso-8601` | `2006-01-02T15:04:05.000Z0700` | `zrepl_2038-01-19T03:14:07.000Z` |
//! | `unix-seconds` | (decimal Unix seconds) | `zrepl_2147483647` |
//!
//! `dense`, `human` and `unix-seconds` print no offset, so they require
//! `timestamp_location: UTC`. A custom layout may not contain `+` (ZFS names cannot); a `+`
//! that an offset element prints for a zone east of UTC becomes `_`
//! (`2024-05-14T23:16:23.000_0200`).
//!
//! `timestamp_location` is `UTC` (the default) or an IANA zone name looked up in the time zone
//! database bundled with jiff, so that names do not depend on the host's `/usr/share/zoneinfo`.
//! zrepl's `Local` is refused: the core does not read the host's zone, and a zone named in the
//! config makes names reproducible.
//!
//! Go layouts: every element of Go's `time.Format` is implemented (`2006 06 01 1 Jan January
//! 02 2 _2 002 __2 15 03 3 04 4 05 5 PM pm MST Mon Monday`, the offsets `Z0700 Z07:00 Z07
//! Z070000 Z07:00:00` and `-0700 -07:00 -07 -070000 -07:00:00`, and fractions `.000`/`.999`
//! or `,000`/`,999`); as in Go, any other text is literal. Fractions of more than 9 digits are
//! refused, since Go cannot print them either.

use std::fmt::{self, Write as _};

use jiff::Timestamp;
use jiff::Zoned;
use jiff::tz::{TimeZone, TimeZoneDatabase};

use crate::name::{Component, NameError};

/// The longest custom layout accepted, in bytes: a longer one cannot fit in a snapshot name.
pub const LAYOUT_LEN_MAX: usize = crate::name::NAME_LEN_MAX;

/// The longest time zone name accepted, in bytes (IANA names are far shorter).
pub const ZONE_NAME_LEN_MAX: usize = 64;

/// The two instants zrepl formats at config time to check that names will be valid: one in
/// northern summer and one in winter, so that both offsets of a DST zone are tried.
pub const SAMPLE_INSTANTS_UNIX: [i64; 2] = [1_590_969_600, 1_606_780_800];

/// Why `timestamp_format`, `timestamp_location` or the snapshot name they make is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// `timestamp_format` is empty.
    #[error(
        "timestamp_format is empty: use `dense`, `human`, `iso-8601`, `unix-seconds` or a Go \
         time layout"
    )]
    EmptyFormat,
    /// A custom layout is longer than [`LAYOUT_LEN_MAX`].
    #[error("timestamp_format `{layout}` is longer than {LAYOUT_LEN_MAX} bytes")]
    LayoutTooLong {
        /// The layout.
        layout: String,
    },
    /// A custom layout contains `+`.
    #[error(
        "timestamp_format `{layout}` contains `+`, which ZFS does not allow in snapshot names; \
         offsets are printed with `_` instead of `+` anyway"
    )]
    PlusInLayout {
        /// The layout.
        layout: String,
    },
    /// A fractional-second element with more than 9 digits.
    #[error(
        "timestamp_format `{layout}`: the fractional-second element `{element}` has more than 9 \
         digits; Go time layouts print at most nanoseconds"
    )]
    FractionTooLong {
        /// The layout.
        layout: String,
        /// The element.
        element: String,
    },
    /// A format without an offset in a zone other than UTC.
    #[error(
        "timestamp_format `{format}` requires `timestamp_location: UTC` because it does not \
         print the UTC offset (got `{location}`); use `iso-8601` or a layout with an offset \
         element such as `Z0700` for other zones"
    )]
    RequiresUtc {
        /// The format.
        format: String,
        /// The location.
        location: String,
    },
    /// `timestamp_location: Local`.
    #[error(
        "timestamp_location `Local` is not supported: zferry does not read the host's time \
         zone; name the zone instead, e.g. `Europe/Berlin`, or use `UTC`"
    )]
    LocalUnsupported,
    /// An unknown zone name.
    #[error(
        "timestamp_location `{name}` is not a time zone in the IANA database ({reason}); use \
         `UTC` or a name like `Europe/Berlin`"
    )]
    UnknownZone {
        /// The name as given.
        name: String,
        /// jiff's reason.
        reason: String,
    },
    /// `prefix + timestamp` is not a valid snapshot name.
    #[error(
        "an invalid snapshot name would result from `prefix + timestamp`: `{sample}`: {source}"
    )]
    InvalidName {
        /// The name made for one of [`SAMPLE_INSTANTS_UNIX`].
        sample: String,
        /// Why it is invalid.
        source: NameError,
    },
}

/// `timestamp_location`: the zone in which the timestamp is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampLocation {
    /// `UTC`, the default.
    Utc,
    /// A zone of the IANA database.
    Zone {
        /// The name as configured.
        name: String,
        /// The zone.
        tz: TimeZone,
    },
}

impl TimestampLocation {
    /// Parses `timestamp_location`; an empty value means the default, `UTC`.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        match text {
            "" | "UTC" => Ok(Self::Utc),
            "Local" => Err(TimestampError::LocalUnsupported),
            _ if text.len() > ZONE_NAME_LEN_MAX => Err(TimestampError::UnknownZone {
                name: text.to_owned(),
                reason: format!("longer than {ZONE_NAME_LEN_MAX} bytes"),
            }),
            _ => TimeZoneDatabase::bundled()
                .get(text)
                .map(|tz| Self::Zone {
                    name: text.to_owned(),
                    tz,
                })
                .map_err(|e| TimestampError::UnknownZone {
                    name: text.to_owned(),
                    reason: e.to_string(),
                }),
        }
    }

    /// The zone.
    pub fn time_zone(&self) -> TimeZone {
        match self {
            Self::Utc => TimeZone::UTC,
            Self::Zone { tz, .. } => tz.clone(),
        }
    }
}

impl fmt::Display for TimestampLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Utc => f.write_str("UTC"),
            Self::Zone { name, .. } => f.write_str(name),
        }
    }
}

/// `timestamp_format`: a named format or a Go layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampFormat {
    /// `dense`: `20060102_150405_000`.
    Dense,
    /// `human`: `2006-01-02_15:04:05`.
    Human,
    /// `iso-8601`: `2006-01-02T15:04:05.000Z0700`.
    Iso8601,
    /// `unix-seconds`: decimal Unix seconds.
    UnixSeconds,
    /// A custom Go layout.
    Custom(GoLayout),
}

/// The Go layout of `dense`; the trailing `_000` is literal text.
pub const DENSE_LAYOUT: &str = "20060102_150405_000";
/// The Go layout of `human`.
pub const HUMAN_LAYOUT: &str = "2006-01-02_15:04:05";
/// The Go layout of `iso-8601` (without the colon in the offset, as zrepl's code has it).
pub const ISO8601_LAYOUT: &str = "2006-01-02T15:04:05.000Z0700";

impl TimestampFormat {
    /// Parses `timestamp_format`: the named formats case-insensitively, else a Go layout.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        match text.to_ascii_lowercase().as_str() {
            "" => Err(TimestampError::EmptyFormat),
            "dense" => Ok(Self::Dense),
            "human" => Ok(Self::Human),
            "iso-8601" => Ok(Self::Iso8601),
            "unix-seconds" => Ok(Self::UnixSeconds),
            _ => {
                if text.contains('+') {
                    return Err(TimestampError::PlusInLayout {
                        layout: text.to_owned(),
                    });
                }
                GoLayout::parse(text).map(Self::Custom)
            }
        }
    }

    /// Whether the format prints no offset and so needs `timestamp_location: UTC`.
    pub fn requires_utc(&self) -> bool {
        matches!(self, Self::Dense | Self::Human | Self::UnixSeconds)
    }
}

impl fmt::Display for TimestampFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dense => f.write_str("dense"),
            Self::Human => f.write_str("human"),
            Self::Iso8601 => f.write_str("iso-8601"),
            Self::UnixSeconds => f.write_str("unix-seconds"),
            Self::Custom(layout) => f.write_str(layout.as_str()),
        }
    }
}

/// Formats instants with a timestamp format in a location (zrepl's `timestamp.Formatter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampFormatter {
    format: TimestampFormat,
    layout: Option<GoLayout>,
    location: TimestampLocation,
}

impl TimestampFormatter {
    /// Combines a format and a location, refusing offset-less formats outside UTC.
    pub fn new(
        format: TimestampFormat,
        location: TimestampLocation,
    ) -> Result<Self, TimestampError> {
        if format.requires_utc() && location != TimestampLocation::Utc {
            return Err(TimestampError::RequiresUtc {
                format: format.to_string(),
                location: location.to_string(),
            });
        }
        let layout = match &format {
            TimestampFormat::Dense => Some(GoLayout::parse(DENSE_LAYOUT)?),
            TimestampFormat::Human => Some(GoLayout::parse(HUMAN_LAYOUT)?),
            TimestampFormat::Iso8601 => Some(GoLayout::parse(ISO8601_LAYOUT)?),
            TimestampFormat::UnixSeconds => None,
            TimestampFormat::Custom(layout) => Some(layout.clone()),
        };
        Ok(Self {
            format,
            layout,
            location,
        })
    }

    /// Parses both settings as they appear in the config.
    pub fn parse(format: &str, location: &str) -> Result<Self, TimestampError> {
        Self::new(
            TimestampFormat::parse(format)?,
            TimestampLocation::parse(location)?,
        )
    }

    /// The timestamp for `at`, with every `+` replaced by `_`.
    pub fn format(&self, at: Timestamp) -> String {
        let text = match &self.layout {
            None => at.as_second().to_string(),
            Some(layout) => layout.format(&at.to_zoned(self.location.time_zone())),
        };
        text.replace('+', "_")
    }

    /// The configured format.
    pub fn timestamp_format(&self) -> &TimestampFormat {
        &self.format
    }

    /// The configured location.
    pub fn location(&self) -> &TimestampLocation {
        &self.location
    }
}

/// Builds snapshot names `prefix + timestamp` (zrepl's `snapname.Formatter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotNamer {
    prefix: String,
    timestamp: TimestampFormatter,
}

impl SnapshotNamer {
    /// Combines a prefix and a timestamp formatter, and checks that the names made for
    /// [`SAMPLE_INSTANTS_UNIX`] are valid snapshot names, as zrepl does at config load.
    pub fn new(prefix: &str, timestamp: TimestampFormatter) -> Result<Self, TimestampError> {
        let namer = Self {
            prefix: prefix.to_owned(),
            timestamp,
        };
        for unix in SAMPLE_INSTANTS_UNIX {
            // The samples are constants well inside jiff's range.
            let at = Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH);
            namer
                .name(at)
                .map_err(|source| TimestampError::InvalidName {
                    sample: namer.name_text(at),
                    source,
                })?;
        }
        Ok(namer)
    }

    /// Parses the three settings as they appear in the config.
    pub fn parse(prefix: &str, format: &str, location: &str) -> Result<Self, TimestampError> {
        Self::new(prefix, TimestampFormatter::parse(format, location)?)
    }

    /// The snapshot name for `at`. The config-time check makes an error unlikely but not
    /// impossible (a zone abbreviation can change with the date), so it stays a `Result`.
    pub fn name(&self, at: Timestamp) -> Result<Component, NameError> {
        Component::parse_as("snapshot name", &self.name_text(at))
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The timestamp formatter.
    pub fn timestamp(&self) -> &TimestampFormatter {
        &self.timestamp
    }

    fn name_text(&self, at: Timestamp) -> String {
        format!("{}{}", self.prefix, self.timestamp.format(at))
    }
}

/// A parsed Go time layout (the reference time `Mon Jan 2 15:04:05 MST 2006`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoLayout {
    text: String,
    chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    Literal(String),
    Element(Element),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    LongYear,
    Year,
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekday,
    Weekday,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    UpperPm,
    LowerPm,
    ZoneAbbreviation,
    Offset {
        z_for_utc: bool,
        style: OffsetStyle,
    },
    Fraction {
        separator: char,
        n_digits: u8,
        trim_zeros: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OffsetStyle {
    /// `07`
    H,
    /// `0700`
    Hm,
    /// `07:00`
    HColonM,
    /// `070000`
    Hms,
    /// `07:00:00`
    HColonMColonS,
}

/// Offset spellings after the `-` or `Z`, longest first as Go matches them.
const OFFSET_SPELLINGS: [(&str, OffsetStyle); 5] = [
    ("070000", OffsetStyle::Hms),
    ("07:00:00", OffsetStyle::HColonMColonS),
    ("0700", OffsetStyle::Hm),
    ("07:00", OffsetStyle::HColonM),
    ("07", OffsetStyle::H),
];

/// Fixed-text elements, longest first where one is a prefix of another.
const FIXED_ELEMENTS: [(&str, Element); 23] = [
    ("January", Element::LongMonth),
    ("Jan", Element::Month),
    ("Monday", Element::LongWeekday),
    ("Mon", Element::Weekday),
    ("MST", Element::ZoneAbbreviation),
    ("2006", Element::LongYear),
    ("__2", Element::UnderYearDay),
    ("_2", Element::UnderDay),
    ("002", Element::ZeroYearDay),
    ("01", Element::ZeroMonth),
    ("02", Element::ZeroDay),
    ("03", Element::ZeroHour12),
    ("04", Element::ZeroMinute),
    ("05", Element::ZeroSecond),
    ("06", Element::Year),
    ("15", Element::Hour),
    ("1", Element::NumMonth),
    ("2", Element::Day),
    ("3", Element::Hour12),
    ("4", Element::Minute),
    ("5", Element::Second),
    ("PM", Element::UpperPm),
    ("pm", Element::LowerPm),
];

impl GoLayout {
    /// Parses a layout the way Go's `time.Format` reads it.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        if text.is_empty() {
            return Err(TimestampError::EmptyFormat);
        }
        if text.len() > LAYOUT_LEN_MAX {
            return Err(TimestampError::LayoutTooLong {
                layout: text.to_owned(),
            });
        }
        let mut chunks = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        // Each turn consumes at least one byte, so this runs at most `LAYOUT_LEN_MAX` times.
        while let Some(ch) = rest.chars().next() {
            match Self::element_at(text, rest)? {
                Some((element, len)) => {
                    if !literal.is_empty() {
                        chunks.push(Chunk::Literal(std::mem::take(&mut literal)));
                    }
                    chunks.push(Chunk::Element(element));
                    rest = &rest[len..];
                }
                None => {
                    literal.push(ch);
                    rest = &rest[ch.len_utf8()..];
                }
            }
        }
        if !literal.is_empty() {
            chunks.push(Chunk::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            chunks,
        })
    }

    /// The layout as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Formats a zoned instant.
    pub fn format(&self, at: &Zoned) -> String {
        let mut out = String::new();
        for chunk in &self.chunks {
            match chunk {
                Chunk::Literal(text) => out.push_str(text),
                Chunk::Element(element) => format_element(&mut out, *element, at),
            }
        }
        out
    }

    /// The element at the start of `rest`, with its length in bytes.
    fn element_at(layout: &str, rest: &str) -> Result<Option<(Element, usize)>, TimestampError> {
        // `_2006` is a literal `_` followed by the year, not `_2` followed by `006`.
        if rest.starts_with("_2006") {
            return Ok(None);
        }
        for (z_marker, z_for_utc) in [("-", false), ("Z", true)] {
            if let Some(after) = rest.strip_prefix(z_marker) {
                for (spelling, style) in OFFSET_SPELLINGS {
                    if after.starts_with(spelling) {
                        let element = Element::Offset { z_for_utc, style };
                        return Ok(Some((element, 1 + spelling.len())));
                    }
                }
            }
        }
        if let Some(fraction) = Self::fraction_at(layout, rest)? {
            return Ok(Some(fraction));
        }
        Ok(FIXED_ELEMENTS
            .iter()
            .find(|(spelling, _)| rest.starts_with(spelling))
            .map(|(spelling, element)| (*element, spelling.len())))
    }

    /// `.000`, `.999`, `,000` or `,999` not followed by a digit.
    fn fraction_at(layout: &str, rest: &str) -> Result<Option<(Element, usize)>, TimestampError> {
        let mut chars = rest.chars();
        let (Some(separator @ ('.' | ',')), Some(digit @ ('0' | '9'))) =
            (chars.next(), chars.next())
        else {
            return Ok(None);
        };
        let n_digits = rest[1..].chars().take_while(|&c| c == digit).count();
        if rest[1 + n_digits..].starts_with(|c: char| c.is_ascii_digit()) {
            return Ok(None);
        }
        let Ok(n_digits_u8) = u8::try_from(n_digits) else {
            return Err(fraction_too_long(layout, &rest[..1 + n_digits]));
        };
        if n_digits_u8 > 9 {
            return Err(fraction_too_long(layout, &rest[..1 + n_digits]));
        }
        let element = Element::Fraction {
            separator,
            n_digits: n_digits_u8,
            trim_zeros: digit == '9',
        };
        Ok(Some((element, 1 + n_digits)))
    }
}

fn fraction_too_long(layout: &str, element: &str) -> TimestampError {
    TimestampError::FractionTooLong {
        layout: layout.to_owned(),
        element: element.to_owned(),
    }
}

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const WEEKDAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

// `write!` into a `String` cannot fail, so its results are ignored below.
fn format_element(out: &mut String, element: Element, at: &Zoned) {
    let month_name = MONTH_NAMES
        .get(usize::try_from(at.month() - 1).unwrap_or(0))
        .copied()
        .unwrap_or("");
    let weekday_name = WEEKDAY_NAMES
        .get(usize::from(
            at.weekday().to_monday_zero_offset().unsigned_abs(),
        ))
        .copied()
        .unwrap_or("");
    let hour12 = match at.hour() % 12 {
        0 => 12,
        h => h,
    };
    match element {
        Element::LongYear => {
            let _ = write!(out, "{:04}", at.year());
        }
        Element::Year => {
            let _ = write!(out, "{:02}", at.year().rem_euclid(100));
        }
        Element::LongMonth => out.push_str(month_name),
        Element::Month => out.push_str(month_name.get(..3).unwrap_or(month_name)),
        Element::NumMonth => {
            let _ = write!(out, "{}", at.month());
        }
        Element::ZeroMonth => {
            let _ = write!(out, "{:02}", at.month());
        }
        Element::LongWeekday => out.push_str(weekday_name),
        Element::Weekday => out.push_str(weekday_name.get(..3).unwrap_or(weekday_name)),
        Element::Day => {
            let _ = write!(out, "{}", at.day());
        }
        Element::UnderDay => {
            let _ = write!(out, "{:>2}", at.day());
        }
        Element::ZeroDay => {
            let _ = write!(out, "{:02}", at.day());
        }
        Element::UnderYearDay => {
            let _ = write!(out, "{:>3}", at.day_of_year());
        }
        Element::ZeroYearDay => {
            let _ = write!(out, "{:03}", at.day_of_year());
        }
        Element::Hour => {
            let _ = write!(out, "{:02}", at.hour());
        }
        Element::Hour12 => {
            let _ = write!(out, "{hour12}");
        }
        Element::ZeroHour12 => {
            let _ = write!(out, "{hour12:02}");
        }
        Element::Minute => {
            let _ = write!(out, "{}", at.minute());
        }
        Element::ZeroMinute => {
            let _ = write!(out, "{:02}", at.minute());
        }
        Element::Second => {
            let _ = write!(out, "{}", at.second());
        }
        Element::ZeroSecond => {
            let _ = write!(out, "{:02}", at.second());
        }
        Element::UpperPm => out.push_str(if at.hour() >= 12 { "PM" } else { "AM" }),
        Element::LowerPm => out.push_str(if at.hour() >= 12 { "pm" } else { "am" }),
        Element::ZoneAbbreviation => {
            let info = at.time_zone().to_offset_info(at.timestamp());
            let abbreviation = info.abbreviation();
            if abbreviation.is_empty() {
                format_offset(out, at.offset().seconds(), false, OffsetStyle::Hm);
            } else {
                out.push_str(abbreviation);
            }
        }
        Element::Offset { z_for_utc, style } => {
            format_offset(out, at.offset().seconds(), z_for_utc, style);
        }
        Element::Fraction {
            separator,
            n_digits,
            trim_zeros,
        } => {
            let nanos = format!("{:09}", at.subsec_nanosecond().unsigned_abs());
            let mut digits = nanos.get(..usize::from(n_digits)).unwrap_or(&nanos);
            if trim_zeros {
                digits = digits.trim_end_matches('0');
                if digits.is_empty() {
                    return;
                }
            }
            out.push(separator);
            out.push_str(digits);
        }
    }
}

fn format_offset(out: &mut String, offset_secs: i32, z_for_utc: bool, style: OffsetStyle) {
    if z_for_utc && offset_secs == 0 {
        out.push('Z');
        return;
    }
    out.push(if offset_secs < 0 { '-' } else { '+' });
    let abs = offset_secs.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    let _ = match style {
        OffsetStyle::H => write!(out, "{h:02}"),
        OffsetStyle::Hm => write!(out, "{h:02}{m:02}"),
        OffsetStyle::HColonM => write!(out, "{h:02}:{m:02}"),
        OffsetStyle::Hms => write!(out, "{h:02}{m:02}{s:02}"),
        OffsetStyle::HColonMColonS => write!(out, "{h:02}:{m:02}:{s:02}"),
    };
}

#[cfg(test)]
mod tests;
