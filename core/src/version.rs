//! Filesystem versions: the snapshots and bookmarks of one dataset, as `zfs list` reports them.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::{Component, VersionKind};

/// A ZFS GUID: the identity of a snapshot across pools (a received snapshot keeps the sender's
/// GUID; a bookmark has the GUID of the snapshot it was made from).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Guid(pub u64);

impl Guid {
    /// The 16-digit lowercase zero-padded hex form zrepl puts into bookmark names.
    pub fn hex16(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({})", self.0)
    }
}

/// A transaction group number; `createtxg` orders the versions of one pool (and only of one
/// pool: across pools, only GUIDs compare).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Txg(pub u64);

impl fmt::Display for Txg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Txg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Txg({})", self.0)
    }
}

/// One snapshot or bookmark of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Snapshot or bookmark.
    pub kind: VersionKind,
    /// The short name after `@` or `#`.
    pub name: Component,
    /// The GUID.
    pub guid: Guid,
    /// The transaction group it was created in.
    pub createtxg: Txg,
    /// Creation time, Unix seconds.
    pub creation_unix: i64,
    /// The number of user holds; `None` for bookmarks, which cannot be held.
    pub userrefs: Option<u64>,
}

impl Version {
    /// A snapshot without holds.
    pub fn snapshot(name: Component, guid: Guid, createtxg: Txg, creation_unix: i64) -> Self {
        Self {
            kind: VersionKind::Snapshot,
            name,
            guid,
            createtxg,
            creation_unix,
            userrefs: Some(0),
        }
    }

    /// A bookmark.
    pub fn bookmark(name: Component, guid: Guid, createtxg: Txg, creation_unix: i64) -> Self {
        Self {
            kind: VersionKind::Bookmark,
            name,
            guid,
            createtxg,
            creation_unix,
            userrefs: None,
        }
    }

    /// Whether this is a snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.kind == VersionKind::Snapshot
    }

    /// The relative name as `zfs send` takes it after the dataset: `@name` or `#name`.
    pub fn relative_name(&self) -> String {
        format!("{}{}", self.kind.delimiter(), self.name)
    }

    /// zrepl's order within one pool: by createtxg, a bookmark before a snapshot of the same
    /// createtxg, then by name so that the order is total and independent of input order.
    pub fn cmp_by_createtxg(&self, other: &Self) -> Ordering {
        (self.createtxg, self.kind, &self.name).cmp(&(other.createtxg, other.kind, &other.name))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.delimiter(), self.name)
    }
}

/// Sorts versions into zrepl's createtxg order (see [`Version::cmp_by_createtxg`]).
pub fn sort_by_createtxg(versions: &mut [Version]) {
    versions.sort_by(Version::cmp_by_createtxg);
}
