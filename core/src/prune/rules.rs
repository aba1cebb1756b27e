//! The keep rules and how they are read from zrepl's YAML shape.
//!
//! ```yaml
//! - type: not_replicated
//!   keep_snapshot_at_cursor: true   # optional, default true
//! - type: last_n
//!   count: 10
//!   regex: "^zrepl_"                # optional, default: every snapshot
//! - type: grid
//!   grid: 1x1h(keep=all) | 24x1h | 35x1d | 6x30d
//!   regex: "^zrepl_"                # required
//! - type: regex
//!   regex: "^manual_"
//!   negate: false                   # optional, default false
//! ```
//!
//! Every key is checked: an unknown key, a key that does not belong to the rule's type, a
//! missing required key and an invalid value are errors that name the key, so that a typo can
//! never silently turn a rule into one that keeps less than intended. The deserializer reads the
//! keys in any order and does not buffer the map, so a format that tracks positions (YAML)
//! reports each error at the offending key or value.

use std::fmt;
use std::num::NonZeroU32;

use regex::Regex;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::grid::GridSpec;

/// The most keep rules one list may have; zrepl configs use a handful.
pub const KEEP_RULES_MAX: usize = 100;

/// The longest regular expression accepted, in bytes.
pub const REGEX_LEN_MAX_BYTES: usize = 1024;

/// The most memory one compiled regular expression may take, in bytes (the `regex` crate's
/// size limit), so that a pathological pattern is a config error rather than a memory spike.
pub const REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;

/// An ordered list of keep rules. A snapshot is destroyed only if every rule would destroy it;
/// an empty list destroys nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepRules {
    rules: Vec<KeepRule>,
}

/// One keep rule. Each rule names the snapshots it keeps; it never keeps bookmarks, which are
/// not pruned at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepRule {
    /// `type: grid`: thin out matching snapshots along a retention grid.
    Grid(GridRule),
    /// `type: last_n`: keep the newest `count` matching snapshots.
    LastN(LastNRule),
    /// `type: regex`: keep snapshots whose name matches (or, negated, does not match).
    Regex(RegexRule),
    /// `type: not_replicated`: keep snapshots not yet replicated.
    NotReplicated(NotReplicatedRule),
}

/// The `type:` of a keep rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// `grid`
    Grid,
    /// `last_n`
    LastN,
    /// `regex`
    Regex,
    /// `not_replicated`
    NotReplicated,
}

/// `type: grid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridRule {
    /// The retention grid.
    pub grid: GridSpec,
    /// Which snapshots the grid looks at; the others it does not keep. Required and non-empty,
    /// as in zrepl, because a grid over every snapshot would thin out manual snapshots too.
    pub regex: Pattern,
}

/// `type: last_n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastNRule {
    /// How many of the newest matching snapshots to keep.
    pub count: NonZeroU32,
    /// Which snapshots count; `None` means every snapshot. Non-matching snapshots are not kept
    /// by this rule (zrepl 0.7 behaviour; earlier versions kept them).
    pub regex: Option<Pattern>,
}

/// `type: regex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexRule {
    /// The pattern, unanchored.
    pub regex: Pattern,
    /// Keep the snapshots that do *not* match instead.
    pub negate: bool,
}

/// `type: not_replicated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReplicatedRule {
    /// Whether the snapshot the replication cursor points at is kept too (default `true`). If
    /// any `not_replicated` rule sets it to `false`, that snapshot counts as replicated.
    pub keep_snapshot_at_cursor: bool,
}

/// An unanchored regular expression over snapshot names, with the syntax of Go's RE2 that zrepl
/// uses (the `regex` crate's syntax is a superset for every practical pattern).
#[derive(Clone)]
pub struct Pattern(Regex);

/// A keep rule list that breaks a rule not expressed by the types (the count bound).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// More than [`KEEP_RULES_MAX`] rules.
    #[error("{n_rules} keep rules are given; at most {KEEP_RULES_MAX} are accepted")]
    TooMany {
        /// How many were given.
        n_rules: usize,
    },
}

/// A regular expression that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is longer than [`REGEX_LEN_MAX_BYTES`].
    #[error("the regex is {len_bytes} bytes long; at most {REGEX_LEN_MAX_BYTES} are accepted")]
    TooLong {
        /// Its length.
        len_bytes: usize,
    },
    /// The pattern is not valid.
    #[error("invalid regex `{pattern}`: {reason}")]
    Invalid {
        /// The pattern.
        pattern: String,
        /// The compiler's explanation.
        reason: String,
    },
}

impl KeepRules {
    /// A rule list, checked against [`KEEP_RULES_MAX`].
    pub fn new(rules: Vec<KeepRule>) -> Result<Self, RulesError> {
        if rules.len() > KEEP_RULES_MAX {
            return Err(RulesError::TooMany {
                n_rules: rules.len(),
            });
        }
        Ok(Self { rules })
    }

    /// The rules in order.
    pub fn rules(&self) -> &[KeepRule] {
        &self.rules
    }

    /// Whether there are no rules (and so nothing is ever destroyed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule reads the `replicated` attribute, which needs the sender's replication
    /// cursor.
    pub fn reads_replicated(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r, KeepRule::NotReplicated(_)))
    }

    /// Whether the snapshot at the replication cursor counts as replicated: only if some
    /// `not_replicated` rule sets `keep_snapshot_at_cursor: false`.
    pub fn cursor_snapshot_counts_as_replicated(&self) -> bool {
        self.rules.iter().any(|r| {
            matches!(
                r,
                KeepRule::NotReplicated(NotReplicatedRule {
                    keep_snapshot_at_cursor: false
                })
            )
        })
    }

    /// A short name for rule `index` as a user reads it in a verdict: the rule's type, with its
    /// 1-based position appended when the list has several rules of that type (`grid#2`).
    /// An index past the end renders as `rule#N`.
    pub fn label(&self, index: usize) -> String {
        let Some(rule) = self.rules.get(index) else {
            return format!("rule#{}", index + 1);
        };
        let kind = rule.kind();
        let same_kind = self.rules.iter().filter(|r| r.kind() == kind).count();
        if same_kind > 1 {
            format!("{kind}#{}", index + 1)
        } else {
            kind.to_string()
        }
    }
}

impl KeepRule {
    /// The rule's type.
    pub fn kind(&self) -> RuleKind {
        match self {
            Self::Grid(_) => RuleKind::Grid,
            Self::LastN(_) => RuleKind::LastN,
            Self::Regex(_) => RuleKind::Regex,
            Self::NotReplicated(_) => RuleKind::NotReplicated,
        }
    }
}

impl RuleKind {
    /// The name used in `type:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grid => "grid",
            Self::LastN => "last_n",
            Self::Regex => "regex",
            Self::NotReplicated => "not_replicated",
        }
    }

    /// The keys a rule of this type takes besides `type`, for error messages.
    fn keys(self) -> &'static str {
        match self {
            Self::Grid => "`grid` and `regex`",
            Self::LastN => "`count` and optionally `regex`",
            Self::Regex => "`regex` and optionally `negate`",
            Self::NotReplicated => "optionally `keep_snapshot_at_cursor`",
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Pattern {
    /// Compiles an unanchored pattern.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        if pattern.len() > REGEX_LEN_MAX_BYTES {
            return Err(PatternError::TooLong {
                len_bytes: pattern.len(),
            });
        }
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_COMPILED_BYTES_MAX)
            .build()
            .map(Self)
            .map_err(|e| PatternError::Invalid {
                pattern: pattern.to_owned(),
                reason: reason(&e),
            })
    }

    /// Whether the pattern matches somewhere in `name`.
    pub fn is_match(&self, name: &str) -> bool {
        self.0.is_match(name)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The `regex` crate's explanation on one line: its syntax errors draw the pattern with a caret
/// over several lines and end with `error: <what>`; keep the last part.
fn reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled regex would exceed {limit} bytes; simplify it")
        }
        other => {
            let text = other.to_string();
            match text.rsplit_once("error: ") {
                Some((_, what)) => what.trim().to_owned(),
                None => text.lines().map(str::trim).collect::<Vec<_>>().join(" "),
            }
        }
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for KeepRules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(RulesVisitor)
    }
}

struct RulesVisitor;

impl<'de> Visitor<'de> for RulesVisitor {
    type Value = KeepRules;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of keep rules (at most {KEEP_RULES_MAX})")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeepRules, A::Error> {
        let mut rules = Vec::new();
        while let Some(rule) = seq.next_element::<KeepRule>()? {
            if rules.len() == KEEP_RULES_MAX {
                return Err(de::Error::custom(RulesError::TooMany {
                    n_rules: KEEP_RULES_MAX + 1,
                }));
            }
            rules.push(rule);
        }
        Ok(KeepRules { rules })
    }
}

/// The keys any rule may have; which ones a given type accepts is checked separately.
const RULE_KEYS: &[&str] = &[
    "type",
    "grid",
    "regex",
    "count",
    "negate",
    "keep_snapshot_at_cursor",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleKey {
    Type,
    Grid,
    Regex,
    Count,
    Negate,
    KeepSnapshotAtCursor,
}

impl RuleKey {
    fn as_str(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::Grid => "grid",
            Self::Regex => "regex",
            Self::Count => "count",
            Self::Negate => "negate",
            Self::KeepSnapshotAtCursor => "keep_snapshot_at_cursor",
        }
    }

    fn applies_to(self, kind: RuleKind) -> bool {
        matches!(
            (self, kind),
            (Self::Type, _)
                | (Self::Grid, RuleKind::Grid)
                | (
                    Self::Regex,
                    RuleKind::Grid | RuleKind::LastN | RuleKind::Regex
                )
                | (Self::Count, RuleKind::LastN)
                | (Self::Negate, RuleKind::Regex)
                | (Self::KeepSnapshotAtCursor, RuleKind::NotReplicated)
        )
    }
}

impl<'de> Deserialize<'de> for RuleKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        Ok(match key.as_str() {
            "type" => Self::Type,
            "grid" => Self::Grid,
            "regex" => Self::Regex,
            "count" => Self::Count,
            "negate" => Self::Negate,
            "keep_snapshot_at_cursor" => Self::KeepSnapshotAtCursor,
            _ => return Err(de::Error::unknown_field(&key, RULE_KEYS)),
        })
    }
}

impl<'de> Deserialize<'de> for KeepRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RuleVisitor)
    }
}

struct RuleVisitor;

/// The keys of one rule as read so far.
#[derive(Default)]
struct RawRule {
    kind: Option<RuleKind>,
    grid: Option<GridSpec>,
    regex: Option<Pattern>,
    count: Option<NonZeroU32>,
    negate: Option<bool>,
    keep_snapshot_at_cursor: Option<bool>,
    /// Keys read before `type`, checked against the type once it is known.
    keys_before_type: Vec<RuleKey>,
}

fn misplaced_key<E: de::Error>(key: RuleKey, kind: RuleKind) -> E {
    E::custom(format!(
        "`{}` does not belong to a `{kind}` rule, which takes {}",
        key.as_str(),
        kind.keys()
    ))
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, key: RuleKey, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key.as_str()));
    }
    *slot = Some(value);
    Ok(())
}

fn missing<E: de::Error>(kind: RuleKind, key: &str, example: &str) -> E {
    E::custom(format!(
        "a `{kind}` rule needs `{key}`, for example `{key}: {example}`"
    ))
}

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = KeepRule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a keep rule: a map with `type` (grid, last_n, regex or not_replicated)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeepRule, A::Error> {
        let mut raw = RawRule::default();
        // Bounded: every key may appear once and there are six of them.
        while let Some(key) = map.next_key::<RuleKey>()? {
            if let Some(kind) = raw.kind {
                if !key.applies_to(kind) {
                    return Err(misplaced_key(key, kind));
                }
            } else if key != RuleKey::Type {
                if raw.keys_before_type.contains(&key) {
                    return Err(de::Error::duplicate_field(key.as_str()));
                }
                raw.keys_before_type.push(key);
            }
            match key {
                RuleKey::Type => set_once(&mut raw.kind, key, map.next_value()?)?,
                RuleKey::Grid => set_once(&mut raw.grid, key, map.next_value()?)?,
                RuleKey::Regex => set_once(&mut raw.regex, key, map.next_value()?)?,
                RuleKey::Count => {
                    let Count(count) = map.next_value()?;
                    set_once(&mut raw.count, key, count)?;
                }
                RuleKey::Negate => set_once(&mut raw.negate, key, map.next_value()?)?,
                RuleKey::KeepSnapshotAtCursor => {
                    set_once(&mut raw.keep_snapshot_at_cursor, key, map.next_value()?)?;
                }
            }
        }
        raw.finish()
    }
}

/// `count:` of a `last_n` rule: a positive whole number, with an error that says so.
struct Count(NonZeroU32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a positive whole number for `count`")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
        u32::try_from(v)
            .ok()
            .and_then(NonZeroU32::new)
            .map(Count)
            .ok_or_else(|| E::custom(format!("`count` must be a positive number, found {v}")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        u32::try_from(v)
            .ok()
            .and_then(NonZeroU32::new)
            .map(Count)
            .ok_or_else(|| E::custom(format!("`count` must be a positive number, found {v}")))
    }
}

impl RawRule {
    fn finish<E: de::Error>(self) -> Result<KeepRule, E> {
        let Some(kind) = self.kind else {
            return Err(E::custom(
                "a keep rule needs `type`: one of grid, last_n, regex, not_replicated",
            ));
        };
        if let Some(key) = self.keys_before_type.iter().find(|k| !k.applies_to(kind)) {
            return Err(misplaced_key(*key, kind));
        }
        Ok(match kind {
            RuleKind::Grid => {
                let grid = self
                    .grid
                    .ok_or_else(|| missing(kind, "grid", "1x1h(keep=all) | 24x1h"))?;
                let regex = self
                    .regex
                    .ok_or_else(|| missing(kind, "regex", "\"^zrepl_\""))?;
                if regex.as_str().is_empty() {
                    return Err(E::custom(
                        "the `regex` of a `grid` rule must not be empty; use \".*\" to thin out \
                         every snapshot",
                    ));
                }
                KeepRule::Grid(GridRule { grid, regex })
            }
            RuleKind::LastN => KeepRule::LastN(LastNRule {
                count: self.count.ok_or_else(|| missing(kind, "count", "10"))?,
                regex: self.regex,
            }),
            RuleKind::Regex => KeepRule::Regex(RegexRule {
                regex: self
                    .regex
                    .ok_or_else(|| missing(kind, "regex", "\"^manual_\""))?,
                negate: self.negate.unwrap_or(false),
            }),
            RuleKind::NotReplicated => KeepRule::NotReplicated(NotReplicatedRule {
                keep_snapshot_at_cursor: self.keep_snapshot_at_cursor.unwrap_or(true),
            }),
        })
    }
}
