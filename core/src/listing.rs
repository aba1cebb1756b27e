//! Parsers of `zfs list -H -p` output.
//!
//! Two shapes are read: the versions listing
//! `zfs list -H -p -o name,guid,createtxg,creation,userrefs -t snapshot,bookmark`
//! and the filesystem listing `zfs list -H -p -o name[,property...] -t filesystem,volume`.
//! Both are tab-separated, one entry per line. Any malformed line is an error that names the
//! line (1-based) and what is wrong with it, never a silently skipped entry: a skipped snapshot
//! could make the planner or the pruner decide on a history that does not exist.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::name::{DatasetName, NameError, VersionKind, VersionName};
use crate::version::{Guid, Txg, Version, sort_by_createtxg};

/// The columns of the versions listing, in order, as passed to `zfs list -o`.
pub const VERSION_COLUMNS: &str = "name,guid,createtxg,creation,userrefs";

/// A malformed line in a listing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ListingError {
    /// The line number, starting at 1.
    pub line: usize,
    /// What is wrong with it.
    pub kind: ListingErrorKind,
}

/// What is wrong with a listing line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingErrorKind {
    /// The line has the wrong number of tab-separated fields.
    #[error("expected {expected} tab-separated fields ({columns}), found {found}")]
    FieldCount {
        /// How many fields were expected.
        expected: usize,
        /// The column names.
        columns: String,
        /// How many were found.
        found: usize,
    },
    /// The name is not a valid ZFS name.
    #[error("{0}")]
    Name(#[from] NameError),
    /// A numeric field is not a decimal number.
    #[error("{field} `{value}` is not a decimal number")]
    Number {
        /// The column.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// `userrefs` is `-` for a snapshot or a number for a bookmark.
    #[error("userrefs `{value}` does not fit a {kind}: snapshots have a count, bookmarks `-`")]
    Userrefs {
        /// The text found.
        value: String,
        /// The kind of the version.
        kind: &'static str,
    },
    /// The same snapshot or bookmark is listed twice.
    #[error("`{name}` is listed twice (first on line {first_line})")]
    Duplicate {
        /// The full name.
        name: String,
        /// Where it was first listed.
        first_line: usize,
    },
    /// Two snapshots of one dataset claim the same GUID, which ZFS never produces.
    #[error("snapshots `{first}` and `{second}` have the same guid {guid}")]
    DuplicateSnapshotGuid {
        /// The first snapshot.
        first: String,
        /// The second snapshot.
        second: String,
        /// The shared GUID.
        guid: Guid,
    },
}

/// The versions of many datasets, each list sorted by [`Version::cmp_by_createtxg`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionListing {
    /// Versions per dataset.
    pub datasets: BTreeMap<DatasetName, Vec<Version>>,
}

impl VersionListing {
    /// The versions of `dataset`, empty if it has none listed.
    pub fn versions(&self, dataset: &DatasetName) -> &[Version] {
        self.datasets.get(dataset).map_or(&[], Vec::as_slice)
    }
}

/// Parses the versions listing (`name,guid,createtxg,creation,userrefs`). Empty lines are
/// allowed (a trailing newline, a blank line between pasted outputs); everything else must be a
/// well-formed entry.
pub fn parse_versions(text: &str) -> Result<VersionListing, ListingError> {
    let mut datasets: BTreeMap<DatasetName, Vec<Version>> = BTreeMap::new();
    // Where each full name and each (dataset, snapshot guid) was first seen, for duplicates.
    let mut seen_names: BTreeMap<VersionName, usize> = BTreeMap::new();
    let mut seen_guids: BTreeMap<(DatasetName, Guid), VersionName> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.is_empty() {
            continue;
        }
        let err = |kind| ListingError { line, kind };
        let (name, version) = parse_version_line(raw).map_err(err)?;
        match seen_names.entry(name.clone()) {
            Entry::Occupied(first) => {
                return Err(err(ListingErrorKind::Duplicate {
                    name: name.to_string(),
                    first_line: *first.get(),
                }));
            }
            Entry::Vacant(slot) => {
                slot.insert(line);
            }
        }
        if version.is_snapshot() {
            match seen_guids.entry((name.dataset().clone(), version.guid)) {
                Entry::Occupied(first) => {
                    return Err(err(ListingErrorKind::DuplicateSnapshotGuid {
                        first: first.get().to_string(),
                        second: name.to_string(),
                        guid: version.guid,
                    }));
                }
                Entry::Vacant(slot) => {
                    slot.insert(name.clone());
                }
            }
        }
        datasets
            .entry(name.dataset().clone())
            .or_default()
            .push(version);
    }
    for versions in datasets.values_mut() {
        sort_by_createtxg(versions);
    }
    Ok(VersionListing { datasets })
}

fn parse_version_line(raw: &str) -> Result<(VersionName, Version), ListingErrorKind> {
    let fields: Vec<&str> = raw.split('\t').collect();
    let [name, guid, createtxg, creation, userrefs] = fields[..] else {
        return Err(ListingErrorKind::FieldCount {
            expected: 5,
            columns: VERSION_COLUMNS.to_owned(),
            found: fields.len(),
        });
    };
    let name = VersionName::parse(name)?;
    let guid = Guid(parse_u64("guid", guid)?);
    let createtxg = Txg(parse_u64("createtxg", createtxg)?);
    let creation_unix = creation
        .parse::<i64>()
        .map_err(|_| ListingErrorKind::Number {
            field: "creation",
            value: creation.to_owned(),
        })?;
    let userrefs = match (name.kind(), userrefs) {
        (VersionKind::Bookmark, "-") => None,
        (VersionKind::Snapshot, n) if n != "-" => Some(parse_u64("userrefs", n)?),
        (kind, value) => {
            let kind = if kind == VersionKind::Snapshot {
                "snapshot"
            } else {
                "bookmark"
            };
            return Err(ListingErrorKind::Userrefs {
                value: value.to_owned(),
                kind,
            });
        }
    };
    let version = Version {
        kind: name.kind(),
        name: name.short().clone(),
        guid,
        createtxg,
        creation_unix,
        userrefs,
    };
    Ok((name, version))
}

fn parse_u64(field: &'static str, value: &str) -> Result<u64, ListingErrorKind> {
    // `str::parse` accepts a leading `+`; ZFS never prints one, so neither do we.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ListingErrorKind::Number {
            field,
            value: value.to_owned(),
        });
    }
    value.parse().map_err(|_| ListingErrorKind::Number {
        field,
        value: value.to_owned(),
    })
}

/// One dataset of the filesystem listing with the values of the extra columns, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetEntry {
    /// The dataset.
    pub name: DatasetName,
    /// The values of the columns after `name`, as printed.
    pub properties: Vec<String>,
}

/// Parses `zfs list -H -p -o name,<extra...> -t filesystem,volume` output; `extra` names the
/// columns after `name` (possibly none).
pub fn parse_datasets(text: &str, extra: &[&str]) -> Result<Vec<DatasetEntry>, ListingError> {
    let mut entries = Vec::new();
    let mut seen: BTreeMap<DatasetName, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.is_empty() {
            continue;
        }
        let err = |kind| ListingError { line, kind };
        let fields: Vec<&str> = raw.split('\t').collect();
        if fields.len() != 1 + extra.len() {
            let columns = std::iter::once("name").chain(extra.iter().copied());
            return Err(err(ListingErrorKind::FieldCount {
                expected: 1 + extra.len(),
                columns: columns.collect::<Vec<_>>().join(","),
                found: fields.len(),
            }));
        }
        let name = DatasetName::parse(fields[0]).map_err(|e| err(e.into()))?;
        if let Some(first_line) = seen.insert(name.clone(), line) {
            return Err(err(ListingErrorKind::Duplicate {
                name: name.to_string(),
                first_line,
            }));
        }
        let properties = fields[1..].iter().map(|s| (*s).to_owned()).collect();
        entries.push(DatasetEntry { name, properties });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sorts_by_createtxg() {
        let text = "pool/a b@s2\t22\t20\t1700000200\t1\n\
                    pool/a b#s1\t11\t10\t1700000100\t-\n\
                    pool/a b@s1\t11\t10\t1700000100\t0\n\
                    pool/c@x\t5\t3\t1\t0\n";
        let listing = parse_versions(text).unwrap();
        let ab = DatasetName::parse("pool/a b").unwrap();
        let names: Vec<String> = listing
            .versions(&ab)
            .iter()
            .map(Version::relative_name)
            .collect();
        assert_eq!(names, ["#s1", "@s1", "@s2"]);
        assert_eq!(listing.versions(&ab)[2].userrefs, Some(1));
        assert_eq!(listing.versions(&ab)[0].userrefs, None);
        assert_eq!(listing.datasets.len(), 2);
    }

    fn error(text: &str) -> ListingError {
        parse_versions(text).expect_err(text)
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = error("pool/a@s1\t1\t1\t1\t0\npool/a@s2\t2\t2\t2\n");
        assert_eq!(e.line, 2);
        assert!(matches!(
            e.kind,
            ListingErrorKind::FieldCount {
                expected: 5,
                found: 4,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "line 2: expected 5 tab-separated fields (name,guid,createtxg,creation,userrefs), \
             found 4"
        );
        let e = error("pool/a@s1\t0x1\t1\t1\t0\n");
        assert_eq!(
            e.kind,
            ListingErrorKind::Number {
                field: "guid",
                value: "0x1".into()
            }
        );
        let e = error("pool/a@s1\t+1\t1\t1\t0\n");
        assert!(matches!(
            e.kind,
            ListingErrorKind::Number { field: "guid", .. }
        ));
        let e = error("pool/a@s1\t1\t1\t1\t-\n");
        assert!(matches!(
            e.kind,
            ListingErrorKind::Userrefs {
                kind: "snapshot",
                ..
            }
        ));
        let e = error("pool/a#b\t1\t1\t1\t0\n");
        assert!(matches!(
            e.kind,
            ListingErrorKind::Userrefs {
                kind: "bookmark",
                ..
            }
        ));
        let e = error("pool/a\t1\t1\t1\t0\n");
        assert!(matches!(e.kind, ListingErrorKind::Name(_)));
        let e = error("\n\npool/a@s\t1\t1\t1\t0\npool/a@s\t2\t2\t2\t0\n");
        assert_eq!(e.line, 4);
        assert_eq!(
            e.kind,
            ListingErrorKind::Duplicate {
                name: "pool/a@s".into(),
                first_line: 3
            }
        );
        let e = error("pool/a@s\t7\t1\t1\t0\npool/a@t\t7\t2\t2\t0\n");
        assert!(matches!(
            e.kind,
            ListingErrorKind::DuplicateSnapshotGuid { .. }
        ));
        let e = error("pool/a@s\t1\t99999999999999999999\t1\t0\n");
        assert!(matches!(
            e.kind,
            ListingErrorKind::Number {
                field: "createtxg",
                ..
            }
        ));
    }

    #[test]
    fn a_bookmark_may_share_its_snapshots_guid_and_copies_may_share_too() {
        let text = "p/a@s\t7\t1\t1\t0\np/a#s\t7\t1\t1\t-\np/a#copy\t7\t1\t1\t-\n";
        assert_eq!(
            parse_versions(text)
                .unwrap()
                .datasets
                .values()
                .next()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn dataset_listing() {
        let entries = parse_datasets("pool\t-\npool/a b\ton\n", &["zrepl:placeholder"]).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name.as_str(), "pool/a b");
        assert_eq!(entries[1].properties, ["on"]);
        let e = parse_datasets("pool\n", &["mountpoint"]).unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_datasets("pool\npool\n", &[]).unwrap_err();
        assert_eq!(
            e.kind,
            ListingErrorKind::Duplicate {
                name: "pool".into(),
                first_line: 1
            }
        );
    }
}
