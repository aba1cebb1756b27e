//! The retention grid: a spec such as `1x1h(keep=all) | 24x1h | 35x1d | 6x30d` and the sieve it
//! describes.
//!
//! The spec is a list of interval groups joined by `|`. `N x DURATION` stands for N adjacent
//! intervals of that length, each keeping at most one snapshot unless `(keep=K)` or `(keep=all)`
//! follows. The first interval starts at "now", the creation time of the youngest snapshot the
//! rule looks at, and each further interval lies further in the past. A snapshot created at `t`
//! belongs to the interval `(newer_edge - length, newer_edge]`: the newer edge is inclusive, the
//! older edge exclusive. In each interval the oldest `keep` snapshots survive; snapshots older
//! than the last interval are destroyed.
//!
//! zrepl parses `keep=0` and then panics while pruning, and treats `keep=-1` as `all`; both are
//! rejected here when the spec is parsed, so that a bad spec is a config error with a reason
//! rather than a crash hours later.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// The longest grid spec accepted, in bytes; real specs are a few dozen bytes.
pub const GRID_SPEC_LEN_MAX_BYTES: usize = 4096;

/// The most `|`-separated interval groups a spec may have.
pub const GRID_GROUPS_MAX: usize = 64;

/// The longest time span a whole grid may cover, in seconds (200 years of 366 days); a bound
/// that keeps every edge computation far from integer overflow.
pub const GRID_SPAN_SECONDS_MAX: i64 = 200 * 366 * SECONDS_PER_DAY;

const SECONDS_PER_DAY: i64 = 86_400;

/// A parsed retention grid spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridSpec {
    groups: Vec<GridGroup>,
}

/// One `N x DURATION(keep=K)` group of a grid spec: `count` adjacent intervals of one length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridGroup {
    /// How many adjacent intervals the group stands for (the `N`).
    pub count: NonZeroU32,
    /// The length of each interval.
    pub length: GridDuration,
    /// How many snapshots each interval keeps.
    pub keep: GridKeep,
}

/// How many snapshots one grid interval keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridKeep {
    /// At most this many: the oldest ones in the interval.
    Count(NonZeroU32),
    /// Every snapshot in the interval.
    All,
}

/// A duration as written in a grid spec: a positive amount of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridDuration {
    /// The number before the unit.
    pub amount: u32,
    /// The unit.
    pub unit: DurationUnit,
}

/// The units a grid duration may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationUnit {
    /// `s`
    Seconds,
    /// `m`
    Minutes,
    /// `h`
    Hours,
    /// `d` (always 86400 seconds: the grid counts from snapshot times, not calendar days)
    Days,
    /// `w` (seven days)
    Weeks,
}

/// A grid spec that could not be parsed, with the interval group it failed in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GridSpecError {
    /// The spec is empty or only whitespace.
    #[error("the grid is empty: give at least one interval group such as `1x1h(keep=all) | 24x1h`")]
    Empty,
    /// The spec is longer than [`GRID_SPEC_LEN_MAX_BYTES`].
    #[error("the grid is {len_bytes} bytes long; at most {GRID_SPEC_LEN_MAX_BYTES} are accepted")]
    TooLong {
        /// The spec's length.
        len_bytes: usize,
    },
    /// The spec has more than [`GRID_GROUPS_MAX`] groups.
    #[error("the grid has {n_groups} interval groups; at most {GRID_GROUPS_MAX} are accepted")]
    TooManyGroups {
        /// How many groups it has.
        n_groups: usize,
    },
    /// One group is malformed.
    #[error("interval group {position} of {n_groups} (`{text}`): {kind}")]
    Group {
        /// The group's position, starting at 1.
        position: usize,
        /// How many groups the spec has.
        n_groups: usize,
        /// The group as written, trimmed.
        text: String,
        /// What is wrong with it.
        kind: GridGroupError,
    },
    /// A group's intervals are shorter than an earlier group's although not every earlier group
    /// keeps all snapshots.
    #[error(
        "interval group {position} (`{text}`) has intervals of {length}, shorter than the \
         {previous} of an earlier group: interval lengths must not decrease from one group to \
         the next, unless every earlier group is `keep=all`"
    )]
    ShrinkingInterval {
        /// The group's position, starting at 1.
        position: usize,
        /// The group as written, trimmed.
        text: String,
        /// Its interval length.
        length: GridDuration,
        /// The longer length before it.
        previous: GridDuration,
    },
    /// The grid covers more than [`GRID_SPAN_SECONDS_MAX`].
    #[error(
        "the grid covers more than {} days; at most {} are accepted",
        GRID_SPAN_SECONDS_MAX / SECONDS_PER_DAY,
        GRID_SPAN_SECONDS_MAX / SECONDS_PER_DAY
    )]
    SpanTooLong,
}

/// What is wrong with one `N x DURATION(keep=K)` group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GridGroupError {
    /// The group is empty (two `|` in a row, or a leading or trailing `|`).
    #[error("the group is empty; remove the extra `|`")]
    EmptyGroup,
    /// The group does not start with the interval count.
    #[error("expected the number of intervals first, as in `24x1h`")]
    ExpectedCount,
    /// The count is zero.
    #[error("the number of intervals must be positive, found 0")]
    ZeroCount,
    /// A number does not fit.
    #[error("the number `{digits}` is too large")]
    NumberTooLarge {
        /// The digits.
        digits: String,
    },
    /// The `x` between count and duration is missing.
    #[error("expected `x` after the number of intervals, as in `24x1h`")]
    ExpectedX,
    /// The duration's amount is missing.
    #[error("expected a duration after `x`, such as `1h`, `30m` or `7d`")]
    ExpectedDuration,
    /// The duration is zero.
    #[error("the interval length must be positive, found 0")]
    ZeroDuration,
    /// The duration's unit is missing or unknown.
    #[error("expected a duration unit after the number: one of `s`, `m`, `h`, `d`, `w`")]
    ExpectedUnit,
    /// A parameter other than `keep` is given.
    #[error("expected `(keep=N)` or `(keep=all)` after the duration")]
    ExpectedKeep,
    /// `keep=0`.
    #[error(
        "`keep=0` would keep nothing; remove the group so that its snapshots fall outside the \
         grid, or keep at least 1"
    )]
    KeepZero,
    /// A negative keep count, such as zrepl's undocumented `keep=-1`.
    #[error("`keep` must be a positive number or `all`, found `{value}`; write `keep=all`")]
    KeepNegative {
        /// The value written.
        value: String,
    },
    /// The keep value is neither a number nor `all`.
    #[error("`keep` must be a positive number or `all`")]
    KeepInvalid,
    /// The `(` is not closed.
    #[error("expected `)` to close `(keep=...`")]
    ExpectedCloseParen,
    /// Something follows the group.
    #[error("unexpected `{rest}` after the group; groups are separated by `|`")]
    TrailingGarbage {
        /// What follows.
        rest: String,
    },
}

impl GridSpec {
    /// Parses a spec such as `1x1h(keep=all) | 24x1h | 35x1d | 6x30d`. Whitespace around
    /// every token is allowed.
    pub fn parse(spec: &str) -> Result<Self, GridSpecError> {
        if spec.len() > GRID_SPEC_LEN_MAX_BYTES {
            return Err(GridSpecError::TooLong {
                len_bytes: spec.len(),
            });
        }
        if spec.trim().is_empty() {
            return Err(GridSpecError::Empty);
        }
        let texts: Vec<&str> = spec.split('|').collect();
        if texts.len() > GRID_GROUPS_MAX {
            return Err(GridSpecError::TooManyGroups {
                n_groups: texts.len(),
            });
        }
        let mut groups = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let group = parse_group(text).map_err(|kind| GridSpecError::Group {
                position: index + 1,
                n_groups: texts.len(),
                text: text.trim().to_owned(),
                kind,
            })?;
            groups.push(group);
        }
        check_lengths(&groups, &texts)?;
        let grid = Self { groups };
        if grid.span_seconds().is_none() {
            return Err(GridSpecError::SpanTooLong);
        }
        Ok(grid)
    }

    /// The groups in order, youngest first.
    pub fn groups(&self) -> &[GridGroup] {
        &self.groups
    }

    /// The total time the grid covers, in seconds; `None` if it exceeds
    /// [`GRID_SPAN_SECONDS_MAX`] (never for a parsed spec).
    pub fn span_seconds(&self) -> Option<i64> {
        let mut total: i64 = 0;
        for group in &self.groups {
            let group_span = i64::from(group.count.get()).checked_mul(group.length.seconds())?;
            total = total.checked_add(group_span)?;
        }
        (total <= GRID_SPAN_SECONDS_MAX).then_some(total)
    }

    /// Which of `entries` (creation time in Unix seconds, snapshot name) the grid keeps, in the
    /// order given. "Now" is the youngest entry's creation time. Within one interval the oldest
    /// entries survive; entries created in the same second are ordered by name, the greater
    /// name counting as the younger, so the result does not depend on the input order.
    pub fn keeps(&self, entries: &[(i64, &str)]) -> Vec<bool> {
        match entries.iter().map(|(creation, _)| *creation).max() {
            Some(now) => self.keeps_at(now, entries),
            None => Vec::new(),
        }
    }

    /// [`GridSpec::keeps`] with an explicit "now", as zrepl's own grid tests use it.
    fn keeps_at(&self, now: i64, entries: &[(i64, &str)]) -> Vec<bool> {
        let mut kept = vec![false; entries.len()];
        // Members of each interval, keyed by (group index, interval index within the group).
        // The map grows with the number of entries, never with the grid's nominal size.
        let mut intervals: BTreeMap<(usize, i64), Vec<usize>> = BTreeMap::new();
        for (index, (creation, _)) in entries.iter().enumerate() {
            let age = i128::from(now) - i128::from(*creation);
            if age < 0 {
                // Younger than "now": cannot happen with "now" defined as the youngest entry,
                // but a grid never destroys what lies ahead of it.
                kept[index] = true;
                continue;
            }
            if let Some(slot) = self.interval_of(age) {
                intervals.entry(slot).or_default().push(index);
            }
            // Entries older than the last interval stay `false`: destroyed.
        }
        for ((group, _), mut members) in intervals {
            let keep = match self.groups[group].keep {
                GridKeep::All => members.len(),
                GridKeep::Count(n) => usize::try_from(n.get()).unwrap_or(usize::MAX),
            };
            members.sort_by(|a, b| older_first(entries[*a], entries[*b]));
            for index in members.into_iter().take(keep) {
                kept[index] = true;
            }
        }
        kept
    }

    /// The interval an entry `age` seconds older than "now" falls into: the age range of
    /// interval `k` of a group starting at age `start` is `[start + k*len, start + (k+1)*len)`,
    /// which is `(newer_edge - len, newer_edge]` in time.
    fn interval_of(&self, age: i128) -> Option<(usize, i64)> {
        let mut start: i128 = 0;
        for (group_index, group) in self.groups.iter().enumerate() {
            let length = i128::from(group.length.seconds());
            let end = start + i128::from(group.count.get()) * length;
            if age < end {
                let k = (age - start) / length;
                return i64::try_from(k).ok().map(|k| (group_index, k));
            }
            start = end;
        }
        None
    }
}

/// Oldest first; in the same second the smaller name is the older.
fn older_first(a: (i64, &str), b: (i64, &str)) -> Ordering {
    a.cmp(&b)
}

impl FromStr for GridSpec {
    type Err = GridSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for GridSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, group) in self.groups.iter().enumerate() {
            if index > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{group}")?;
        }
        Ok(())
    }
}

impl fmt::Display for GridGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.count, self.length)?;
        match self.keep {
            GridKeep::Count(n) if n.get() == 1 => Ok(()),
            GridKeep::Count(n) => write!(f, "(keep={n})"),
            GridKeep::All => f.write_str("(keep=all)"),
        }
    }
}

impl<'de> Deserialize<'de> for GridSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(|e| serde::de::Error::custom(format!("invalid grid: {e}")))
    }
}

impl GridDuration {
    /// The length in seconds.
    pub fn seconds(self) -> i64 {
        i64::from(self.amount) * self.unit.seconds()
    }
}

impl fmt::Display for GridDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.symbol())
    }
}

impl DurationUnit {
    /// The unit's length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::Seconds => 1,
            Self::Minutes => 60,
            Self::Hours => 3600,
            Self::Days => SECONDS_PER_DAY,
            Self::Weeks => 7 * SECONDS_PER_DAY,
        }
    }

    /// The letter that stands for the unit in a spec.
    pub fn symbol(self) -> char {
        match self {
            Self::Seconds => 's',
            Self::Minutes => 'm',
            Self::Hours => 'h',
            Self::Days => 'd',
            Self::Weeks => 'w',
        }
    }

    fn from_symbol(symbol: char) -> Option<Self> {
        Some(match symbol {
            's' => Self::Seconds,
            'm' => Self::Minutes,
            'h' => Self::Hours,
            'd' => Self::Days,
            'w' => Self::Weeks,
            _ => return None,
        })
    }
}

/// zrepl's rule: interval lengths may not decrease, except right after groups that all keep
/// everything (a fine-grained keep-all head such as `1x1h(keep=all)` may precede anything).
fn check_lengths(groups: &[GridGroup], texts: &[&str]) -> Result<(), GridSpecError> {
    // zrepl compares each length with the one right before it; a shrink is allowed only while
    // every earlier group is keep=all.
    let mut previous_length: Option<GridDuration> = None;
    let mut all_keep_all_so_far = true;
    for (index, group) in groups.iter().enumerate() {
        if let Some(previous) = previous_length
            && group.length.seconds() < previous.seconds()
            && !all_keep_all_so_far
        {
            return Err(GridSpecError::ShrinkingInterval {
                position: index + 1,
                text: texts[index].trim().to_owned(),
                length: group.length,
                previous,
            });
        }
        previous_length = Some(group.length);
        all_keep_all_so_far &= group.keep == GridKeep::All;
    }
    Ok(())
}

/// A tiny cursor over one group's text.
struct Scanner<'a> {
    rest: &'a str,
}

impl<'a> Scanner<'a> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Decimal digits, or `None` if there are none.
    fn digits(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let end = self
            .rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (digits, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(digits)
    }

    fn unit(&mut self) -> Option<DurationUnit> {
        self.skip_ws();
        let unit = DurationUnit::from_symbol(self.rest.chars().next()?)?;
        self.rest = &self.rest[1..];
        Some(unit)
    }
}

fn parse_u32(digits: &str) -> Result<u32, GridGroupError> {
    digits.parse().map_err(|_| GridGroupError::NumberTooLarge {
        digits: digits.to_owned(),
    })
}

fn parse_group(text: &str) -> Result<GridGroup, GridGroupError> {
    if text.trim().is_empty() {
        return Err(GridGroupError::EmptyGroup);
    }
    let mut s = Scanner { rest: text };
    let count = parse_u32(s.digits().ok_or(GridGroupError::ExpectedCount)?)?;
    let count = NonZeroU32::new(count).ok_or(GridGroupError::ZeroCount)?;
    if !s.eat("x") {
        return Err(GridGroupError::ExpectedX);
    }
    let amount = parse_u32(s.digits().ok_or(GridGroupError::ExpectedDuration)?)?;
    let unit = s.unit().ok_or(GridGroupError::ExpectedUnit)?;
    if amount == 0 {
        return Err(GridGroupError::ZeroDuration);
    }
    let length = GridDuration { amount, unit };
    let mut keep = GridKeep::Count(NonZeroU32::MIN);
    if s.eat("(") {
        if !s.eat("keep") || !s.eat("=") {
            return Err(GridGroupError::ExpectedKeep);
        }
        keep = parse_keep(&mut s)?;
        if !s.eat(")") {
            return Err(GridGroupError::ExpectedCloseParen);
        }
    }
    s.skip_ws();
    if !s.rest.is_empty() {
        return Err(GridGroupError::TrailingGarbage {
            rest: s.rest.trim_end().to_owned(),
        });
    }
    Ok(GridGroup {
        count,
        length,
        keep,
    })
}

fn parse_keep(s: &mut Scanner<'_>) -> Result<GridKeep, GridGroupError> {
    if s.eat("all") {
        return Ok(GridKeep::All);
    }
    if s.eat("-") {
        let digits = s.digits().ok_or(GridGroupError::KeepInvalid)?;
        return Err(GridGroupError::KeepNegative {
            value: format!("-{digits}"),
        });
    }
    let digits = s.digits().ok_or(GridGroupError::KeepInvalid)?;
    let n = NonZeroU32::new(parse_u32(digits)?).ok_or(GridGroupError::KeepZero)?;
    Ok(GridKeep::Count(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `spec` and renders it back, or renders the error.
    fn check(spec: &str, expected: &str) {
        let got = match GridSpec::parse(spec) {
            Ok(grid) => grid.to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "spec {spec:?}");
    }

    #[test]
    fn parses_and_renders() {
        check(
            "1x1h(keep=all) | 24x1h | 35x1d | 6x30d",
            "1x1h(keep=all) | 24x1h | 35x1d | 6x30d",
        );
        check("  2 x 10 m ( keep = 2 )|1x1w  ", "2x10m(keep=2) | 1x1w");
        check("1x10s|1x10s", "1x10s | 1x10s");
        check("3x1h(keep=1)", "3x1h");
        check("1x1s(keep=all)", "1x1s(keep=all)");
        // A keep-all head may be longer than what follows (zrepl allows it).
        check("1x1d(keep=all) | 24x1h", "1x1d(keep=all) | 24x1h");
        check(
            "1x1d(keep=all) | 1x2d(keep=all) | 24x1h",
            "1x1d(keep=all) | 1x2d(keep=all) | 24x1h",
        );
    }

    #[test]
    fn rejects_with_reasons() {
        check(
            "",
            "error: the grid is empty: give at least one interval group such as `1x1h(keep=all) | 24x1h`",
        );
        check(
            "  ",
            "error: the grid is empty: give at least one interval group such as `1x1h(keep=all) | 24x1h`",
        );
        check(
            "1x1h(keep=0)",
            "error: interval group 1 of 1 (`1x1h(keep=0)`): `keep=0` would keep nothing; remove \
             the group so that its snapshots fall outside the grid, or keep at least 1",
        );
        check(
            "1x1h | 2x1h(keep=-1)",
            "error: interval group 2 of 2 (`2x1h(keep=-1)`): `keep` must be a positive number or \
             `all`, found `-1`; write `keep=all`",
        );
        check(
            "0x1h",
            "error: interval group 1 of 1 (`0x1h`): the number of intervals must be positive, found 0",
        );
        check(
            "1x0h",
            "error: interval group 1 of 1 (`1x0h`): the interval length must be positive, found 0",
        );
        check(
            "-1x1h",
            "error: interval group 1 of 1 (`-1x1h`): expected the number of intervals first, as in `24x1h`",
        );
        check(
            "1x-1h",
            "error: interval group 1 of 1 (`1x-1h`): expected a duration after `x`, such as `1h`, `30m` or `7d`",
        );
        check(
            "1xh",
            "error: interval group 1 of 1 (`1xh`): expected a duration after `x`, such as `1h`, `30m` or `7d`",
        );
        check(
            "1x1y",
            "error: interval group 1 of 1 (`1x1y`): expected a duration unit after the number: one of `s`, `m`, `h`, `d`, `w`",
        );
        check(
            "1x1",
            "error: interval group 1 of 1 (`1x1`): expected a duration unit after the number: one of `s`, `m`, `h`, `d`, `w`",
        );
        check(
            "1 1h",
            "error: interval group 1 of 1 (`1 1h`): expected `x` after the number of intervals, as in `24x1h`",
        );
        check(
            "1x1h foo",
            "error: interval group 1 of 1 (`1x1h foo`): unexpected `foo` after the group; groups are separated by `|`",
        );
        check(
            "1x1h(keep=1) x",
            "error: interval group 1 of 1 (`1x1h(keep=1) x`): unexpected `x` after the group; groups are separated by `|`",
        );
        check(
            "1x1hh",
            "error: interval group 1 of 1 (`1x1hh`): unexpected `h` after the group; groups are separated by `|`",
        );
        check(
            "1x1h(keep=1",
            "error: interval group 1 of 1 (`1x1h(keep=1`): expected `)` to close `(keep=...`",
        );
        check(
            "1x1h(count=1)",
            "error: interval group 1 of 1 (`1x1h(count=1)`): expected `(keep=N)` or `(keep=all)` after the duration",
        );
        check(
            "1x1h(keep=some)",
            "error: interval group 1 of 1 (`1x1h(keep=some)`): `keep` must be a positive number or `all`",
        );
        check(
            "1x1h |",
            "error: interval group 2 of 2 (``): the group is empty; remove the extra `|`",
        );
        check(
            "1x1h || 1x1d",
            "error: interval group 2 of 3 (``): the group is empty; remove the extra `|`",
        );
        check(
            "99999999999x1h",
            "error: interval group 1 of 1 (`99999999999x1h`): the number `99999999999` is too large",
        );
        check(
            "24x1h | 1x30m",
            "error: interval group 2 (`1x30m`) has intervals of 30m, shorter than the 1h of an \
             earlier group: interval lengths must not decrease from one group to the next, \
             unless every earlier group is `keep=all`",
        );
        // Only a head of keep=all groups may shrink; one keep=1 group before it forbids it.
        check(
            "1x1d | 1x2d(keep=all) | 1x1h",
            "error: interval group 3 (`1x1h`) has intervals of 1h, shorter than the 2d of an \
             earlier group: interval lengths must not decrease from one group to the next, \
             unless every earlier group is `keep=all`",
        );
        check(
            "100000x1w",
            "error: the grid covers more than 73200 days; at most 73200 are accepted",
        );
        let long = "1x1h|".repeat(GRID_GROUPS_MAX) + "1x1h";
        check(
            &long,
            "error: the grid has 65 interval groups; at most 64 are accepted",
        );
        let huge = " ".repeat(GRID_SPEC_LEN_MAX_BYTES) + "1x1h";
        check(
            &huge,
            "error: the grid is 4100 bytes long; at most 4096 are accepted",
        );
    }

    /// Runs `grid` at `now` over `entries` (`name creation` pairs) and returns the kept names,
    /// sorted.
    fn fit_at(grid: &str, now: Option<i64>, entries: &[(&str, i64)]) -> Vec<String> {
        let grid = GridSpec::parse(grid).unwrap();
        let input: Vec<(i64, &str)> = entries.iter().map(|(n, t)| (*t, *n)).collect();
        let kept = match now {
            Some(now) => grid.keeps_at(now, &input),
            None => grid.keeps(&input),
        };
        assert_eq!(kept.len(), entries.len());
        let mut names: Vec<String> = entries
            .iter()
            .zip(kept)
            .filter(|(_, k)| *k)
            .map(|((n, _), _)| (*n).to_owned())
            .collect();
        names.sort();
        names
    }

    const MIN: i64 = 60;

    // Ported from zrepl's retentiongrid tests; the expectations are zrepl's. Where zrepl's test
    // passes an explicit "now", so does the port.

    #[test]
    fn zrepl_empty_input() {
        assert!(fit_at("1x10m|1x10m|1x10m|1x1h", None, &[]).is_empty());
    }

    #[test]
    fn zrepl_interval_boundaries_and_alignment() {
        let kept = fit_at(
            "1x10m|1x10m|1x10m",
            Some(0),
            &[
                ("0", MIN),       // ahead of now: always kept
                ("1", 0),         // first interval's newer edge: inclusive
                ("2", -10 * MIN), // second interval's newer edge: inclusive
                ("3", -20 * MIN), // third interval's newer edge: inclusive
                ("4", -30 * MIN), // third interval's older edge: exclusive
                ("5", -40 * MIN), // beyond the last interval: destroyed
            ],
        );
        assert_eq!(kept, ["0", "1", "2", "3"]);
    }

    #[test]
    fn zrepl_keeps_oldest_snaps_in_a_bucket() {
        let kept = fit_at(
            "1x1m(keep=2)",
            None,
            &[("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)],
        );
        assert_eq!(kept, ["1", "2"]);
    }

    #[test]
    fn zrepl_respects_keep_count_all() {
        let kept = fit_at(
            "1x1m(keep=all)|1x1m",
            None,
            &[("a", 0), ("b", -1), ("c", -2), ("d", -60), ("e", -61)],
        );
        assert_eq!(kept, ["a", "b", "c", "e"]);
    }

    #[test]
    fn zrepl_complex() {
        let kept = fit_at(
            "1x10m(keep=all)|1x10m|1x10m(keep=2)|1x1h",
            Some(0),
            &[
                ("1", 3 * MIN),   // ahead of now
                ("b1", -6 * MIN), // first interval keeps all
                ("b3", -8 * MIN),
                ("b2", -9 * MIN),
                ("a", -11 * MIN), // second interval keeps the oldest one
                ("c", -19 * MIN),
                ("foo", -25 * MIN), // third interval keeps two
                ("bar", -26 * MIN),
                ("border", -30 * MIN), // newer edge of the fourth interval: in it, but younger
                ("d", -75 * MIN),      // than `d`, which the fourth interval keeps
                ("q", -90 * MIN),      // older edge of the fourth interval: outside
                ("e", -91 * MIN),
                ("f", -120 * MIN),
            ],
        );
        assert_eq!(kept, ["1", "b1", "b2", "b3", "bar", "c", "d", "foo"]);
    }

    #[test]
    fn now_is_the_youngest_entry_and_ties_break_by_name() {
        // Same second, keep=1: the smaller name counts as older and survives.
        assert_eq!(fit_at("1x1h", None, &[("b", 5), ("a", 5), ("c", 5)]), ["a"]);
        // A long gap: only the youngest entry anchors the grid; older ones fall outside.
        assert_eq!(
            fit_at("2x1h", None, &[("old", 0), ("new", 100 * 3600)]),
            ["new"]
        );
        // Extreme creation times do not overflow.
        assert_eq!(
            fit_at("1x1h", None, &[("min", i64::MIN), ("max", i64::MAX)]),
            ["max"]
        );
    }

    #[test]
    fn groups_expand_into_adjacent_intervals() {
        // 3x1h keeps one per hour; the fourth hour is outside.
        let h = 3600;
        let kept = fit_at(
            "3x1h",
            None,
            &[
                ("n", 0),
                ("n2", -10),
                ("h1", -h),
                ("h1b", -h - 10),
                ("h2", -2 * h - 1),
                ("out", -3 * h),
            ],
        );
        assert_eq!(kept, ["h1b", "h2", "n2"]);
    }
}
