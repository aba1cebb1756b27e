//! zrepl's `timestamp_test.go` and `snapname.go` behaviour as tables, with fixed instants.

use super::*;
use proptest::prelude::*;

/// `format | location | instant (RFC 3339) | expected timestamp`. As in Go, `.0001` is no
/// fraction (the digits differ): it is a literal `.00` followed by `01`, the month.
const FORMAT_CASES: &str = "
dense                         | UTC              | 2038-01-19T03:14:07Z            | 20380119_031407_000
DENSE                         |                  | 2038-01-19T03:14:07.999Z        | 20380119_031407_000
Human                         | UTC              | 2038-01-19T03:14:07Z            | 2038-01-19_03:14:07
iso-8601                      | UTC              | 2038-01-19T03:14:07.123456789Z  | 2038-01-19T03:14:07.123Z
ISO-8601                      | Europe/Berlin    | 2024-05-14T21:16:23Z            | 2024-05-14T23:16:23.000_0200
iso-8601                      | Europe/Berlin    | 2024-01-14T21:16:23Z            | 2024-01-14T22:16:23.000_0100
iso-8601                      | America/New_York | 2024-01-15T12:00:00Z            | 2024-01-15T07:00:00.000-0500
unix-seconds                  | UTC              | 2038-01-19T03:14:07Z            | 2147483647
unix-seconds                  | UTC              | 1969-12-31T23:59:59Z            | -1
2006-01-02T15:04:05.000Z      | UTC              | 2038-01-19T03:14:07.123456789Z  | 2038-01-19T03:14:07.123Z
2006-01-02_15:04:05-07:00:00  | Europe/Berlin    | 2024-05-14T21:16:23Z            | 2024-05-14_23:16:23_02:00:00
Jan _2 3:4:5 pm MST           | UTC              | 2024-03-05T14:07:09Z            | Mar  5 2:7:9 pm UTC
Monday January 2 06 002 __2   | UTC              | 2024-02-03T00:00:00Z            | Saturday February 3 24 034  34
Mon 1 01 02 03 04 05 PM       | UTC              | 2024-12-09T00:30:05Z            | Mon 12 12 09 12 30 05 AM
15h MST                       | Europe/Berlin    | 2024-07-01T10:00:00Z            | 12h CEST
05.999                        | UTC              | 2024-07-01T10:00:07.120Z        | 07.12
05.999                        | UTC              | 2024-07-01T10:00:07Z            | 07
05,000000000                  | UTC              | 2024-07-01T10:00:07.000000042Z  | 07,000000042
05.0001                       | UTC              | 2024-07-01T10:00:07.5Z          | 07.0007
Z07:00 -07:00 Z07 -07         | UTC              | 2024-07-01T10:00:00Z            | Z _00:00 Z _00
Z07:00 Z0700 Z070000 Z07      | Asia/Kolkata     | 2024-07-01T10:00:00Z            | _05:30 _0530 _053000 _05
-0700                         | America/New_York | 2024-07-01T10:00:00Z            | -0400
_2006                         | UTC              | 2024-07-01T10:00:00Z            | _2024
snap                          | UTC              | 2024-07-01T10:00:00Z            | snap
";

fn formatter(format: &str, location: &str) -> Result<TimestampFormatter, TimestampError> {
    TimestampFormatter::parse(format, location)
}

#[test]
fn format_table() {
    let mut n_cases = 0;
    for line in FORMAT_CASES.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [format, location, instant, expected] = fields[..] else {
            panic!("bad fixture line {line:?}");
        };
        let at: Timestamp = instant.parse().unwrap();
        let got = formatter(format, location).unwrap().format(at);
        assert_eq!(got, expected, "{format} in {location} at {instant}");
        n_cases += 1;
    }
    assert_eq!(n_cases, 24);
}

/// `format | location | expected error variant`.
const ERROR_CASES: &str = "
dense                 | Europe/Berlin | RequiresUtc
human                 | Europe/Berlin | RequiresUtc
unix-seconds          | Europe/Berlin | RequiresUtc
dense                 | Etc/UTC       | RequiresUtc
dense                 | Local         | LocalUnsupported
iso-8601              | Local         | LocalUnsupported
dense                 | Mars/Olympus  | UnknownZone
2006+01               | UTC           | PlusInLayout
2006-01-02T15:04:05Z+ | UTC           | PlusInLayout
05.0000000000         | UTC           | FractionTooLong
                      | UTC           | EmptyFormat
";

fn variant(e: &TimestampError) -> String {
    let debug = format!("{e:?}");
    debug.split([' ', '{', '(']).next().unwrap_or("").to_owned()
}

#[test]
fn error_table() {
    for line in ERROR_CASES.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [format, location, expected] = fields[..] else {
            panic!("bad fixture line {line:?}");
        };
        let err = formatter(format, location).unwrap_err();
        assert_eq!(variant(&err), expected, "{format:?} in {location:?}: {err}");
    }
}

#[test]
fn iso_8601_allows_other_zones() {
    assert!(formatter("iso-8601", "Europe/Berlin").is_ok());
    assert!(formatter("2006-01-02T15:04:05Z07:00", "America/New_York").is_ok());
}

#[test]
fn error_messages_tell_what_to_do() {
    let err = formatter("dense", "Europe/Berlin").unwrap_err().to_string();
    assert!(err.contains("requires `timestamp_location: UTC`"), "{err}");
    let err = formatter("dense", "Local").unwrap_err().to_string();
    assert!(err.contains("name the zone"), "{err}");
    let err = formatter("2006+01", "UTC").unwrap_err().to_string();
    assert!(err.contains("contains `+`"), "{err}");
}

#[test]
fn namer_builds_prefix_plus_timestamp() {
    let namer = SnapshotNamer::parse("zrepl_", "dense", "UTC").unwrap();
    let at = Timestamp::from_second(2_147_483_647).unwrap();
    assert_eq!(
        namer.name(at).unwrap().as_str(),
        "zrepl_20380119_031407_000"
    );
    assert_eq!(namer.prefix(), "zrepl_");
    let namer = SnapshotNamer::parse("auto-", "iso-8601", "Europe/Berlin").unwrap();
    let at: Timestamp = "2024-05-14T21:16:23Z".parse().unwrap();
    assert_eq!(
        namer.name(at).unwrap().as_str(),
        "auto-2024-05-14T23:16:23.000_0200"
    );
}

/// `prefix | format | location`: names that would be invalid are refused at config time.
const INVALID_NAME_CASES: &str = "
zrepl_  | 2006/01/02          | UTC
bad@    | dense               | UTC
bad#    | dense               | UTC
zrepl_  | 2006-01-02 15:04 %  | UTC
";

#[test]
fn invalid_names_are_refused_at_config_time() {
    for line in INVALID_NAME_CASES.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [prefix, format, location] = fields[..] else {
            panic!("bad fixture line {line:?}");
        };
        let err = SnapshotNamer::parse(prefix, format, location).unwrap_err();
        assert!(
            matches!(err, TimestampError::InvalidName { .. }),
            "{prefix} {format}: {err}"
        );
        assert!(err.to_string().contains(prefix), "{err}");
    }
    let long_prefix = "a".repeat(crate::name::NAME_LEN_MAX);
    assert!(matches!(
        SnapshotNamer::parse(&long_prefix, "dense", "UTC"),
        Err(TimestampError::InvalidName { .. })
    ));
}

#[test]
fn layout_length_is_bounded() {
    let layout = "x".repeat(LAYOUT_LEN_MAX + 1);
    assert!(matches!(
        GoLayout::parse(&layout),
        Err(TimestampError::LayoutTooLong { .. })
    ));
}

fn builtin_formats() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop_oneof![
        Just(("dense", "UTC")),
        Just(("human", "UTC")),
        Just(("iso-8601", "UTC")),
        Just(("unix-seconds", "UTC")),
        Just(("iso-8601", "Europe/Berlin")),
        Just(("iso-8601", "America/New_York")),
        Just(("iso-8601", "Asia/Kolkata")),
        Just(("2006-01-02_15:04:05-07:00:00", "Australia/Lord_Howe")),
        Just(("Mon_Jan__2_15.04.05.999999999_MST", "Europe/Berlin")),
    ]
}

proptest! {
    /// Every name a valid config produces is a valid snapshot name component.
    #[test]
    fn every_name_is_a_valid_component(
        (format, location) in builtin_formats(),
        prefix in "[a-zA-Z0-9_.:-]{1,20}",
        unix in -30_000_000_000i64..200_000_000_000,
        nanos in 0i32..1_000_000_000,
    ) {
        let namer = SnapshotNamer::parse(&prefix, format, location).unwrap();
        let at = Timestamp::new(unix, nanos).unwrap();
        let name = namer.name(at).unwrap();
        prop_assert!(Component::parse(name.as_str()).is_ok());
        prop_assert!(name.as_str().starts_with(&prefix));
    }

    /// `dense` names sort like the instants they name (within four-digit years).
    #[test]
    fn dense_names_sort_chronologically(
        a in 0i64..250_000_000_000,
        b in 0i64..250_000_000_000,
    ) {
        let namer = SnapshotNamer::parse("zrepl_", "dense", "UTC").unwrap();
        let name_a = namer.name(Timestamp::from_second(a).unwrap()).unwrap();
        let name_b = namer.name(Timestamp::from_second(b).unwrap()).unwrap();
        prop_assert_eq!(a.cmp(&b), name_a.cmp(&name_b));
    }
}
