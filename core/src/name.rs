//! ZFS names, parsed once at the edge into types that cannot hold an invalid name.
//!
//! The rules are OpenZFS's `entity_namecheck` and `pool_namecheck`: a full name is at most
//! [`NAME_LEN_MAX`] bytes; components are non-empty, at most [`NAME_LEN_MAX`] bytes, made of ASCII
//! letters, digits, space and `-_.:`, and are neither `.` nor `..`; `%` is reserved; one `@`
//! (snapshot) or `#` (bookmark) may appear, and only in the last component. Every error names
//! the rule that was broken so that a user can fix the name without reading ZFS's source.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest full name OpenZFS accepts, in bytes (`ZFS_MAX_DATASET_NAME_LEN - 1`).
pub const NAME_LEN_MAX: usize = 255;

/// The rule a name broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameRule {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The whole name is longer than [`NAME_LEN_MAX`].
    #[error("the name is {len_bytes} bytes long; ZFS allows at most {NAME_LEN_MAX}")]
    TooLong {
        /// The name's length.
        len_bytes: usize,
    },
    /// One component is longer than [`NAME_LEN_MAX`].
    #[error("component `{component}` is {len_bytes} bytes long; ZFS allows at most {NAME_LEN_MAX}")]
    ComponentTooLong {
        /// The offending component.
        component: String,
        /// Its length.
        len_bytes: usize,
    },
    /// Two slashes in a row, or a leading or trailing slash.
    #[error("the name has an empty component (a leading, trailing or doubled `/`)")]
    EmptyComponent,
    /// A character outside `[0-9A-Za-z-_.: ]`.
    #[error(
        "the character {ch:?} at byte {position} is not allowed (only ASCII letters, digits, \
         space and `-_.:` are)"
    )]
    InvalidChar {
        /// The character.
        ch: char,
        /// Its byte offset in the name.
        position: usize,
    },
    /// `%` is reserved for ZFS's internal datasets.
    #[error("`%` is reserved by ZFS for internal datasets")]
    Percent,
    /// A component is `.`.
    #[error("a component may not be `.`")]
    SelfReference,
    /// A component is `..`.
    #[error("a component may not be `..`")]
    ParentReference,
    /// More than one `@` or `#`.
    #[error("the name has more than one `@` or `#`")]
    MultipleDelimiters,
    /// An `@` or `#` followed by a `/`.
    #[error("`@` or `#` may only appear in the last component")]
    DelimiterNotInLastComponent,
    /// A snapshot or bookmark name lacks its delimiter, or a dataset name has one.
    #[error("expected {expected}")]
    WrongDelimiter {
        /// What the name should have looked like.
        expected: &'static str,
    },
    /// The pool name (first component) must begin with a letter.
    #[error("the pool name must begin with a letter")]
    PoolNameNotLetter,
    /// The pool name is reserved by `zpool` (a vdev type).
    #[error("the pool name `{pool}` is reserved by zpool")]
    PoolNameReserved {
        /// The pool name.
        pool: String,
    },
}

/// A name that failed validation, with the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{name}`: {rule}")]
pub struct NameError {
    /// What kind of name it was meant to be ("dataset name", "job name", ...).
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// The broken rule.
    pub rule: NameRule,
}

impl NameError {
    /// An error for `name`, meant to be a `what`, that broke `rule`.
    pub fn new(what: &'static str, name: &str, rule: NameRule) -> Self {
        Self {
            what,
            name: name.to_owned(),
            rule,
        }
    }
}

/// Checks one name component (a dataset path segment, a snapshot's or bookmark's short name, a
/// job name, a client identity): non-empty, short enough, allowed characters, not `.`/`..`.
pub fn check_component(component: &str) -> Result<(), NameRule> {
    if component.is_empty() {
        return Err(NameRule::EmptyComponent);
    }
    if component.len() > NAME_LEN_MAX {
        return Err(NameRule::ComponentTooLong {
            component: component.to_owned(),
            len_bytes: component.len(),
        });
    }
    check_chars(component, 0)?;
    match component {
        "." => Err(NameRule::SelfReference),
        ".." => Err(NameRule::ParentReference),
        _ => Ok(()),
    }
}

fn check_chars(s: &str, offset: usize) -> Result<(), NameRule> {
    for (i, ch) in s.char_indices() {
        if ch == '%' {
            return Err(NameRule::Percent);
        }
        if !is_valid_char(ch) {
            return Err(NameRule::InvalidChar {
                ch,
                position: offset + i,
            });
        }
    }
    Ok(())
}

fn is_valid_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':' | ' ')
}

/// Pool names `zpool create` refuses because they name vdev types.
const POOL_NAMES_RESERVED: &[&str] = &["mirror", "raidz", "draid", "spare", "log"];

fn check_pool(pool: &str) -> Result<(), NameRule> {
    if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(NameRule::PoolNameNotLetter);
    }
    let reserved = POOL_NAMES_RESERVED.iter().any(|r| {
        // `raidz1`, `draid2:3d` and the like are vdev specs too; `log` is reserved exactly.
        if *r == "log" {
            pool == "log"
        } else {
            pool.starts_with(r)
        }
    });
    if reserved {
        return Err(NameRule::PoolNameReserved {
            pool: pool.to_owned(),
        });
    }
    Ok(())
}

/// Checks a dataset path (no `@`/`#`) and returns nothing but the verdict.
fn check_dataset(path: &str) -> Result<(), NameRule> {
    if path.is_empty() {
        return Err(NameRule::Empty);
    }
    if path.len() > NAME_LEN_MAX {
        return Err(NameRule::TooLong {
            len_bytes: path.len(),
        });
    }
    let mut offset = 0;
    for (i, component) in path.split('/').enumerate() {
        if component.is_empty() {
            return Err(NameRule::EmptyComponent);
        }
        if component.contains(['@', '#']) {
            return Err(NameRule::WrongDelimiter {
                expected: "a dataset name without `@` or `#`",
            });
        }
        check_chars(component, offset)?;
        check_component(component)?;
        if i == 0 {
            check_pool(component)?;
        }
        offset += component.len() + 1;
    }
    Ok(())
}

/// A dataset (filesystem or volume) path such as `pool/data/home`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetName(String);

impl DatasetName {
    /// Parses a dataset path.
    pub fn parse(path: &str) -> Result<Self, NameError> {
        check_dataset(path).map_err(|rule| NameError::new("dataset name", path, rule))?;
        Ok(Self(path.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool, i.e. the first component.
    pub fn pool(&self) -> &str {
        self.components().next().unwrap_or(&self.0)
    }

    /// The components from the pool down.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The number of components (`pool` is 1, `pool/a` is 2).
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The parent dataset, or `None` for a pool.
    pub fn parent(&self) -> Option<DatasetName> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| Self(parent.to_owned()))
    }

    /// Whether `self` is a strict ancestor of `other` (by path components, so `pool/a` is an
    /// ancestor of `pool/a/b` but not of `pool/ab`).
    pub fn is_ancestor_of(&self, other: &DatasetName) -> bool {
        other.0.len() > self.0.len()
            && other.0.starts_with(&self.0)
            && other.0.as_bytes()[self.0.len()] == b'/'
    }

    /// `self` with `child` (one or more components) appended.
    pub fn join(&self, child: &str) -> Result<DatasetName, NameError> {
        Self::parse(&format!("{}/{child}", self.0))
    }

    /// The path of `self` below `ancestor`, or `None` if `ancestor` is not a strict ancestor.
    pub fn strip_ancestor(&self, ancestor: &DatasetName) -> Option<&str> {
        ancestor
            .is_ancestor_of(self)
            .then(|| &self.0[ancestor.0.len() + 1..])
    }
}

impl TryFrom<String> for DatasetName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DatasetName> for String {
    fn from(value: DatasetName) -> Self {
        value.0
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One valid name component: a snapshot's or bookmark's short name, a job name, a client
/// identity.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Component(String);

impl Component {
    /// Parses one component; `what` names it in the error ("snapshot name", "job name", ...).
    pub fn parse_as(what: &'static str, s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::new(what, s, NameRule::Empty));
        }
        if s.contains(['/', '@', '#']) {
            return Err(NameError::new(
                what,
                s,
                NameRule::WrongDelimiter {
                    expected: "a single component without `/`, `@` or `#`",
                },
            ));
        }
        check_component(s).map_err(|rule| NameError::new(what, s, rule))?;
        Ok(Self(s.to_owned()))
    }

    /// Parses one component.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        Self::parse_as("name component", s)
    }

    /// The component as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Component {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Component> for String {
    fn from(value: Component) -> Self {
        value.0
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Whether a version is a snapshot or a bookmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// A bookmark; sorts before a snapshot of the same createtxg, as in zrepl.
    Bookmark,
    /// A snapshot.
    Snapshot,
}

impl VersionKind {
    /// The delimiter between dataset and short name: `@` or `#`.
    pub fn delimiter(self) -> char {
        match self {
            Self::Snapshot => '@',
            Self::Bookmark => '#',
        }
    }
}

/// The full name of a snapshot (`pool/a@s1`) or bookmark (`pool/a#b1`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionName {
    dataset: DatasetName,
    kind: VersionKind,
    short: Component,
}

impl VersionName {
    /// Parses `fs@snap` or `fs#bookmark`.
    pub fn parse(full: &str) -> Result<Self, NameError> {
        let err = |rule| NameError::new("snapshot or bookmark name", full, rule);
        if full.is_empty() {
            return Err(err(NameRule::Empty));
        }
        if full.len() > NAME_LEN_MAX {
            return Err(err(NameRule::TooLong {
                len_bytes: full.len(),
            }));
        }
        let Some(at) = full.find(['@', '#']) else {
            return Err(err(NameRule::WrongDelimiter {
                expected: "`dataset@snapshot` or `dataset#bookmark`",
            }));
        };
        let (dataset, rest) = full.split_at(at);
        let short = &rest[1..];
        if short.contains(['@', '#']) {
            return Err(err(NameRule::MultipleDelimiters));
        }
        if short.contains('/') {
            return Err(err(NameRule::DelimiterNotInLastComponent));
        }
        let kind = if rest.starts_with('@') {
            VersionKind::Snapshot
        } else {
            VersionKind::Bookmark
        };
        check_dataset(dataset).map_err(err)?;
        check_chars(short, at + 1).map_err(err)?;
        check_component(short).map_err(err)?;
        Ok(Self {
            dataset: DatasetName(dataset.to_owned()),
            kind,
            short: Component(short.to_owned()),
        })
    }

    /// Builds a name from parts that are already valid, checking the total length.
    pub fn new(
        dataset: DatasetName,
        kind: VersionKind,
        short: Component,
    ) -> Result<Self, NameError> {
        let len_bytes = dataset.0.len() + 1 + short.0.len();
        if len_bytes > NAME_LEN_MAX {
            let full = format!("{dataset}{}{short}", kind.delimiter());
            return Err(NameError::new(
                "snapshot or bookmark name",
                &full,
                NameRule::TooLong { len_bytes },
            ));
        }
        Ok(Self {
            dataset,
            kind,
            short,
        })
    }

    /// The dataset part.
    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    /// Snapshot or bookmark.
    pub fn kind(&self) -> VersionKind {
        self.kind
    }

    /// The short name after the delimiter.
    pub fn short(&self) -> &Component {
        &self.short
    }
}

impl TryFrom<String> for VersionName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<VersionName> for String {
    fn from(value: VersionName) -> Self {
        value.to_string()
    }
}

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.dataset, self.kind.delimiter(), self.short)
    }
}

impl fmt::Debug for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset_rule(s: &str) -> NameRule {
        DatasetName::parse(s).expect_err(s).rule
    }

    #[test]
    fn valid_dataset_names() {
        for ok in [
            "tank",
            "tank/a",
            "tank/a b/c:d-e_f.g",
            "t/..x",
            "pool/.hidden",
            "a/ ",
        ] {
            let name = DatasetName::parse(ok).expect(ok);
            assert_eq!(name.as_str(), ok);
        }
    }

    #[test]
    fn dataset_rules_are_named() {
        assert_eq!(dataset_rule(""), NameRule::Empty);
        assert_eq!(dataset_rule("tank//a"), NameRule::EmptyComponent);
        assert_eq!(dataset_rule("/tank"), NameRule::EmptyComponent);
        assert_eq!(dataset_rule("tank/"), NameRule::EmptyComponent);
        assert_eq!(dataset_rule("tank/a%b"), NameRule::Percent);
        assert_eq!(dataset_rule("tank/./a"), NameRule::SelfReference);
        assert_eq!(dataset_rule("tank/.."), NameRule::ParentReference);
        assert_eq!(
            dataset_rule("tank/a\tb"),
            NameRule::InvalidChar {
                ch: '\t',
                position: 6
            }
        );
        assert_eq!(
            dataset_rule("tank/ä"),
            NameRule::InvalidChar {
                ch: 'ä',
                position: 5
            }
        );
        assert_eq!(
            dataset_rule("tank/a*"),
            NameRule::InvalidChar {
                ch: '*',
                position: 6
            }
        );
        assert!(matches!(
            dataset_rule("tank@s"),
            NameRule::WrongDelimiter { .. }
        ));
        assert_eq!(dataset_rule("1tank"), NameRule::PoolNameNotLetter);
        assert_eq!(
            dataset_rule("mirror/a"),
            NameRule::PoolNameReserved {
                pool: "mirror".into()
            }
        );
        assert_eq!(
            dataset_rule("raidz2"),
            NameRule::PoolNameReserved {
                pool: "raidz2".into()
            }
        );
        assert!(
            DatasetName::parse("logs").is_ok(),
            "only `log` itself is reserved"
        );
    }

    #[test]
    fn lengths_are_bounded_at_255_bytes() {
        let ok = format!("t/{}", "a".repeat(253));
        assert_eq!(ok.len(), 255);
        assert!(DatasetName::parse(&ok).is_ok());
        let long = format!("t/{}", "a".repeat(254));
        assert_eq!(dataset_rule(&long), NameRule::TooLong { len_bytes: 256 });
        let component = "a".repeat(256);
        assert!(matches!(
            check_component(&component),
            Err(NameRule::ComponentTooLong { .. })
        ));
        let snap = format!("t/a@{}", "s".repeat(252));
        assert!(matches!(
            VersionName::parse(&snap).expect_err("too long").rule,
            NameRule::TooLong { len_bytes: 256 }
        ));
    }

    #[test]
    fn version_names() {
        let s = VersionName::parse("tank/a b@snap 1").unwrap();
        assert_eq!(s.dataset().as_str(), "tank/a b");
        assert_eq!(s.kind(), VersionKind::Snapshot);
        assert_eq!(s.short().as_str(), "snap 1");
        assert_eq!(s.to_string(), "tank/a b@snap 1");
        let b = VersionName::parse("tank#zrepl_CURSOR").unwrap();
        assert_eq!(b.kind(), VersionKind::Bookmark);
        let rule = |s: &str| VersionName::parse(s).expect_err(s).rule;
        assert_eq!(rule("tank/a@b@c"), NameRule::MultipleDelimiters);
        assert_eq!(rule("tank/a@b#c"), NameRule::MultipleDelimiters);
        assert_eq!(rule("tank@a/b"), NameRule::DelimiterNotInLastComponent);
        assert_eq!(rule("tank/a@"), NameRule::EmptyComponent);
        assert!(matches!(rule("tank/a"), NameRule::WrongDelimiter { .. }));
        assert_eq!(rule("tank/a@.."), NameRule::ParentReference);
        assert_eq!(rule("tank/a@x%y"), NameRule::Percent);
    }

    #[test]
    fn ancestry_is_by_component() {
        let a = DatasetName::parse("pool/a").unwrap();
        let ab = DatasetName::parse("pool/a/b").unwrap();
        let aa = DatasetName::parse("pool/aa").unwrap();
        assert!(a.is_ancestor_of(&ab));
        assert!(!a.is_ancestor_of(&aa));
        assert!(!a.is_ancestor_of(&a));
        assert_eq!(ab.parent(), Some(a.clone()));
        assert_eq!(ab.strip_ancestor(&a), Some("b"));
        assert_eq!(a.parent().unwrap().parent(), None);
        assert_eq!(a.join("x/y").unwrap().as_str(), "pool/a/x/y");
        assert_eq!(ab.depth(), 3);
    }

    #[test]
    fn errors_say_what_and_why() {
        let e = DatasetName::parse("tank/a|b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid dataset name `tank/a|b`: the character '|' at byte 6 is not allowed \
             (only ASCII letters, digits, space and `-_.:` are)"
        );
    }
}
