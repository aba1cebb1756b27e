//! zrepl's on-pool abstractions: the bookmarks and holds a job leaves on a pool to remember how
//! far replication got and to protect what the next step needs.
//!
//! The names are zrepl's, byte for byte, so that zferry can take over a pool zrepl replicated
//! (and zrepl can read what zferry writes):
//!
//! | abstraction | object | name |
//! |---|---|---|
//! | replication cursor | sender bookmark | `zrepl_CURSOR_G_<guid>_J_<job>` |
//! | tentative cursor | sender bookmark | `zrepl_CURSORTENTATIVE__G_<guid>_J_<job>` |
//! | step hold | sender snapshot hold | `zrepl_STEP_J_<job>` |
//! | last-received hold | receiver snapshot hold | `zrepl_last_received_J_<job>` |
//! | legacy (v1) cursor | sender bookmark | `zrepl_replication_cursor` |
//!
//! `<guid>` is the GUID of the bookmarked snapshot as 16 lowercase zero-padded hex digits. The
//! tentative cursor's double underscore is not a typo here: zrepl's prefix constant ends in `_`
//! and its formatter adds `_G_`; on-pool compatibility requires that spelling.
//!
//! Recognising a name never fails: a name is either [`Recognition::Ours`], someone else's
//! ([`Recognition::Foreign`]), or looks like ours but is not ([`Recognition::Tinkered`]: a
//! malformed GUID or job, or a GUID that is not the bookmark's own). Only the first is ever
//! touched; a tinkered bookmark is left alone, because destroying something zferry did not write
//! could destroy a user's only incremental base.
//!
//! [`list_stale`] is zrepl's `ListStale`: which abstractions are left over from earlier steps and
//! may be destroyed or released.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::job_id::{JobId, JobIdError};
use crate::name::{Component, DatasetName, NameError, VersionKind, VersionName};
use crate::version::{Guid, Txg};

/// The prefix of a replication cursor bookmark, before [`GUID_MARKER`].
pub const REPLICATION_CURSOR_PREFIX: &str = "zrepl_CURSOR";
/// The prefix of a tentative cursor bookmark, before [`GUID_MARKER`]. It ends in `_`, which is
/// why the name has a double underscore.
pub const TENTATIVE_CURSOR_PREFIX: &str = "zrepl_CURSORTENTATIVE_";
/// What follows a bookmark prefix and precedes the GUID.
pub const GUID_MARKER: &str = "_G_";
/// What follows the GUID (in bookmarks) or the prefix (in hold tags) and precedes the job id.
pub const JOB_MARKER: &str = "_J_";
/// The number of hex digits of the GUID in a bookmark name.
pub const GUID_HEX_DIGITS: usize = 16;
/// The step hold tag, up to the job id.
pub const STEP_HOLD_PREFIX: &str = "zrepl_STEP_J_";
/// The last-received hold tag, up to the job id.
pub const LAST_RECEIVED_HOLD_PREFIX: &str = "zrepl_last_received_J_";
/// The name of the replication cursor bookmark of zrepl before 0.3, shared by all jobs.
pub const LEGACY_CURSOR_NAME: &str = "zrepl_replication_cursor";

/// One abstraction: what it is, and whose.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Abstraction {
    /// The sender's bookmark of the newest snapshot the receiver confirmed; the base of the next
    /// incremental send and what "replicated" means for pruning.
    ReplicationCursor {
        /// The sending job.
        job: JobId,
        /// The GUID of the bookmarked snapshot.
        guid: Guid,
    },
    /// A bookmark made before a step under `guarantee_incremental`, promoted to the cursor once
    /// the step is confirmed.
    TentativeCursor {
        /// The sending job.
        job: JobId,
        /// The GUID of the bookmarked snapshot.
        guid: Guid,
    },
    /// A hold on a step's `from` and `to` snapshots on the sender while the step runs, so that
    /// an interrupted step can resume.
    StepHold {
        /// The sending job.
        job: JobId,
    },
    /// A hold on the newest received snapshot on the receiver, so that the next incremental
    /// step has its base.
    LastReceivedHold {
        /// The receiving job.
        job: JobId,
    },
    /// zrepl's pre-0.3 cursor bookmark, which names no job.
    LegacyCursor,
}

/// The kinds of abstraction, named as zrepl's CLI and JSON name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AbstractionKind {
    /// [`Abstraction::ReplicationCursor`].
    #[serde(rename = "replication-cursor-bookmark-v2")]
    ReplicationCursor,
    /// [`Abstraction::TentativeCursor`].
    #[serde(rename = "tentative-replication-cursor-bookmark-v2")]
    TentativeCursor,
    /// [`Abstraction::StepHold`].
    #[serde(rename = "step-hold")]
    StepHold,
    /// [`Abstraction::LastReceivedHold`].
    #[serde(rename = "last-received-hold")]
    LastReceivedHold,
    /// [`Abstraction::LegacyCursor`].
    #[serde(rename = "replication-cursor-bookmark-v1")]
    LegacyCursor,
}

/// What an abstraction is made of on the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbstractionObject {
    /// A bookmark, whose name is the abstraction's name.
    Bookmark,
    /// A user hold on a snapshot, whose tag is the abstraction's name.
    Hold,
}

impl AbstractionKind {
    /// zrepl's type string (`step-hold`, `replication-cursor-bookmark-v2`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReplicationCursor => "replication-cursor-bookmark-v2",
            Self::TentativeCursor => "tentative-replication-cursor-bookmark-v2",
            Self::StepHold => "step-hold",
            Self::LastReceivedHold => "last-received-hold",
            Self::LegacyCursor => "replication-cursor-bookmark-v1",
        }
    }

    /// Whether this kind is a bookmark or a hold.
    pub fn object(self) -> AbstractionObject {
        match self {
            Self::ReplicationCursor | Self::TentativeCursor | Self::LegacyCursor => {
                AbstractionObject::Bookmark
            }
            Self::StepHold | Self::LastReceivedHold => AbstractionObject::Hold,
        }
    }
}

impl fmt::Display for AbstractionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bookmark name or hold tag turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognition {
    /// One of ours (or zrepl's, which is the same).
    Ours(Abstraction),
    /// Not a name zferry or zrepl writes: the user's own bookmark or hold, never touched.
    Foreign,
    /// Has one of our prefixes but is not a name we wrote; never touched.
    Tinkered(Tinkered),
}

impl Recognition {
    /// The abstraction, if the name is ours.
    pub fn ours(self) -> Option<Abstraction> {
        match self {
            Self::Ours(abstraction) => Some(abstraction),
            Self::Foreign | Self::Tinkered(_) => None,
        }
    }
}

/// A name that starts like one of ours but is not one we wrote. It is reported (so that a user
/// can clean it up) and otherwise ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{name}` looks like a {kind} but was not written by zferry or zrepl ({reason}); it is left alone"
)]
pub struct Tinkered {
    /// The bookmark name or hold tag.
    pub name: String,
    /// What its prefix claims it is.
    pub kind: AbstractionKind,
    /// Why it is not one.
    pub reason: TinkeredReason,
}

/// Why a name with one of our prefixes is not ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TinkeredReason {
    /// The GUID part is not exactly 16 lowercase hex digits.
    #[error("the GUID part `{found}` is not 16 lowercase hex digits")]
    GuidMalformed {
        /// The text between `_G_` and `_J_`.
        found: String,
    },
    /// There is no `_J_` after the GUID.
    #[error("there is no `_J_<job>` after the GUID")]
    NoJobMarker,
    /// The job part is not a valid job id.
    #[error("{0}")]
    JobId(JobIdError),
    /// The GUID in the name is not the GUID of the bookmark.
    #[error("the name says GUID {in_name:016x} but the bookmark has GUID {actual:016x}", in_name = in_name.0, actual = actual.0)]
    GuidMismatch {
        /// The GUID encoded in the name.
        in_name: Guid,
        /// The bookmark's actual GUID.
        actual: Guid,
    },
}

impl Abstraction {
    /// Recognises a bookmark by its short name (after `#`) and its actual GUID.
    ///
    /// The name must be `<prefix>_G_<16 lowercase hex>_J_<job>` with one of the two cursor
    /// prefixes exactly, a valid job id, and the GUID in the name equal to `guid`; or exactly
    /// [`LEGACY_CURSOR_NAME`].
    ///
    /// zrepl finds the GUID with a greedy regex, `(.+)_G_([0-9a-f]{16})_J_(.+)$`, which takes the
    /// last `_G_<hex>_J_` in the name; a job whose name itself contains such a sequence then fails
    /// to recognise its own bookmarks. zferry anchors at the known prefix instead, so that every
    /// valid job id round-trips; for every name zrepl recognises, the result is the same.
    pub fn parse_bookmark(name: &str, guid: Guid) -> Recognition {
        if name == LEGACY_CURSOR_NAME {
            return Recognition::Ours(Self::LegacyCursor);
        }
        type Make = fn(JobId, Guid) -> Abstraction;
        let kinds: [(AbstractionKind, &str, Make); 2] = [
            (
                AbstractionKind::ReplicationCursor,
                REPLICATION_CURSOR_PREFIX,
                |job, guid| Self::ReplicationCursor { job, guid },
            ),
            (
                AbstractionKind::TentativeCursor,
                TENTATIVE_CURSOR_PREFIX,
                |job, guid| Self::TentativeCursor { job, guid },
            ),
        ];
        for (kind, prefix, make) in kinds {
            let Some(rest) = name
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix(GUID_MARKER))
            else {
                continue;
            };
            let tinkered = |reason| {
                Recognition::Tinkered(Tinkered {
                    name: name.to_owned(),
                    kind,
                    reason,
                })
            };
            let (job, in_name) = match parse_guid_and_job(rest) {
                Ok(parts) => parts,
                Err(reason) => return tinkered(reason),
            };
            if in_name != guid {
                return tinkered(TinkeredReason::GuidMismatch {
                    in_name,
                    actual: guid,
                });
            }
            return Recognition::Ours(make(job, guid));
        }
        Recognition::Foreign
    }

    /// Recognises a hold tag: `zrepl_STEP_J_<job>` or `zrepl_last_received_J_<job>` with a valid
    /// job id.
    pub fn parse_hold_tag(tag: &str) -> Recognition {
        type Make = fn(JobId) -> Abstraction;
        let kinds: [(AbstractionKind, &str, Make); 2] = [
            (AbstractionKind::StepHold, STEP_HOLD_PREFIX, |job| {
                Self::StepHold { job }
            }),
            (
                AbstractionKind::LastReceivedHold,
                LAST_RECEIVED_HOLD_PREFIX,
                |job| Self::LastReceivedHold { job },
            ),
        ];
        for (kind, prefix, make) in kinds {
            let Some(job) = tag.strip_prefix(prefix) else {
                continue;
            };
            let job = match JobId::parse(job) {
                Ok(job) => job,
                Err(e) => {
                    return Recognition::Tinkered(Tinkered {
                        name: tag.to_owned(),
                        kind,
                        reason: TinkeredReason::JobId(e),
                    });
                }
            };
            return Recognition::Ours(make(job));
        }
        Recognition::Foreign
    }

    /// The kind.
    pub fn kind(&self) -> AbstractionKind {
        match self {
            Self::ReplicationCursor { .. } => AbstractionKind::ReplicationCursor,
            Self::TentativeCursor { .. } => AbstractionKind::TentativeCursor,
            Self::StepHold { .. } => AbstractionKind::StepHold,
            Self::LastReceivedHold { .. } => AbstractionKind::LastReceivedHold,
            Self::LegacyCursor => AbstractionKind::LegacyCursor,
        }
    }

    /// The owning job; `None` for the legacy cursor.
    pub fn job(&self) -> Option<&JobId> {
        match self {
            Self::ReplicationCursor { job, .. }
            | Self::TentativeCursor { job, .. }
            | Self::StepHold { job }
            | Self::LastReceivedHold { job } => Some(job),
            Self::LegacyCursor => None,
        }
    }

    /// The GUID of the bookmarked snapshot, for the bookmarks that encode one.
    pub fn guid(&self) -> Option<Guid> {
        match self {
            Self::ReplicationCursor { guid, .. } | Self::TentativeCursor { guid, .. } => {
                Some(*guid)
            }
            Self::StepHold { .. } | Self::LastReceivedHold { .. } | Self::LegacyCursor => None,
        }
    }

    /// The full name of this bookmark in `dataset`, checked against ZFS's total length limit
    /// (a job id always fits in the short name, but a deep dataset may leave no room for it).
    /// `None` for holds, which are not named objects.
    pub fn bookmark_name(&self, dataset: &DatasetName) -> Option<Result<VersionName, NameError>> {
        if self.kind().object() != AbstractionObject::Bookmark {
            return None;
        }
        let short = self.to_string();
        Some(
            Component::parse_as("bookmark name", &short)
                .and_then(|short| VersionName::new(dataset.clone(), VersionKind::Bookmark, short)),
        )
    }
}

/// Formats the exact bookmark name or hold tag.
impl fmt::Display for Abstraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReplicationCursor { job, guid } => {
                write_bookmark(f, REPLICATION_CURSOR_PREFIX, *guid, job)
            }
            Self::TentativeCursor { job, guid } => {
                write_bookmark(f, TENTATIVE_CURSOR_PREFIX, *guid, job)
            }
            Self::StepHold { job } => write!(f, "{STEP_HOLD_PREFIX}{job}"),
            Self::LastReceivedHold { job } => write!(f, "{LAST_RECEIVED_HOLD_PREFIX}{job}"),
            Self::LegacyCursor => f.write_str(LEGACY_CURSOR_NAME),
        }
    }
}

/// One abstraction found on a pool, with where and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAbstraction {
    /// The bookmark, or the held snapshot.
    pub version: VersionName,
    /// The createtxg of the bookmark or the held snapshot.
    pub createtxg: Txg,
    /// What it is.
    pub abstraction: Abstraction,
}

/// The abstractions of [`list_stale`], split into those still needed and the leftovers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staleness {
    /// Still needed; in input order.
    pub live: Vec<FoundAbstraction>,
    /// Left over from earlier steps: may be destroyed (bookmarks) or released (holds); in input
    /// order.
    pub stale: Vec<FoundAbstraction>,
}

/// zrepl's `ListStale`: splits abstractions into live and stale, per filesystem and job.
///
/// - Replication cursors and last-received holds: all but the one with the highest createtxg are
///   stale (they are moved forward, so older ones are leftovers of a crash between create and
///   destroy).
/// - Step holds: stale if their createtxg is at or below the newest replication cursor's. With
///   no cursor (initial replication), all step holds strictly older than the newest step hold are
///   stale; the newest may protect an interrupted initial send.
/// - Tentative cursors are always live here, as in zrepl: they are cleaned up by the step that
///   made them.
/// - Abstractions without a job (the legacy cursor) are always live.
///
/// Ties at the highest createtxg (several snapshots made in one transaction group) are broken by
/// the highest name; entries listed twice are treated alike, so that a duplicate in the input
/// never makes the newest cursor stale.
pub fn list_stale(found: Vec<FoundAbstraction>) -> Staleness {
    let newest = Newest::of(&found);
    let verdicts: Vec<bool> = found.iter().map(|item| newest.is_stale(item)).collect();
    let mut staleness = Staleness::default();
    for (item, is_stale) in found.into_iter().zip(verdicts) {
        if is_stale {
            staleness.stale.push(item);
        } else {
            staleness.live.push(item);
        }
    }
    staleness
}

/// The newest abstraction of each kind per (filesystem, job), by (createtxg, name).
struct Newest<'a> {
    by_group: BTreeMap<(&'a DatasetName, &'a JobId, AbstractionKind), (Txg, &'a VersionName)>,
}

impl<'a> Newest<'a> {
    fn of(found: &'a [FoundAbstraction]) -> Self {
        let mut by_group = BTreeMap::new();
        for item in found {
            let Some(job) = item.abstraction.job() else {
                continue;
            };
            let key = (item.version.dataset(), job, item.abstraction.kind());
            let candidate = (item.createtxg, &item.version);
            by_group
                .entry(key)
                .and_modify(|newest: &mut (Txg, &VersionName)| *newest = (*newest).max(candidate))
                .or_insert(candidate);
        }
        Self { by_group }
    }

    fn newest(
        &self,
        item: &FoundAbstraction,
        job: &JobId,
        kind: AbstractionKind,
    ) -> Option<(Txg, &VersionName)> {
        self.by_group
            .get(&(item.version.dataset(), job, kind))
            .copied()
    }

    fn is_stale(&self, item: &FoundAbstraction) -> bool {
        let Some(job) = item.abstraction.job() else {
            return false;
        };
        let kind = item.abstraction.kind();
        match kind {
            AbstractionKind::ReplicationCursor | AbstractionKind::LastReceivedHold => self
                .newest(item, job, kind)
                .is_some_and(|newest| newest != (item.createtxg, &item.version)),
            AbstractionKind::StepHold => {
                match self.newest(item, job, AbstractionKind::ReplicationCursor) {
                    Some((cursor_txg, _)) => item.createtxg <= cursor_txg,
                    None => self
                        .newest(item, job, AbstractionKind::StepHold)
                        .is_some_and(|(step_txg, _)| item.createtxg < step_txg),
                }
            }
            AbstractionKind::TentativeCursor | AbstractionKind::LegacyCursor => false,
        }
    }
}

fn write_bookmark(
    f: &mut fmt::Formatter<'_>,
    prefix: &str,
    guid: Guid,
    job: &JobId,
) -> fmt::Result {
    write!(f, "{prefix}{GUID_MARKER}{}{JOB_MARKER}{job}", guid.hex16())
}

/// Parses `<16 hex>_J_<job>`, the part of a bookmark name after `_G_`.
fn parse_guid_and_job(rest: &str) -> Result<(JobId, Guid), TinkeredReason> {
    // The hex digits contain no `_`, so the first `_J_` is the one that ends a well-formed GUID.
    let Some((hex, job)) = rest.split_once(JOB_MARKER) else {
        return Err(TinkeredReason::NoJobMarker);
    };
    let malformed = || TinkeredReason::GuidMalformed {
        found: hex.to_owned(),
    };
    let is_lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hex.len() != GUID_HEX_DIGITS || !hex.bytes().all(is_lower_hex) {
        return Err(malformed());
    }
    let guid = u64::from_str_radix(hex, 16).map_err(|_| malformed())?;
    let job = JobId::parse(job).map_err(TinkeredReason::JobId)?;
    Ok((job, Guid(guid)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::job_id::JOB_ID_LEN_MAX;

    fn job(name: &str) -> JobId {
        JobId::parse(name).unwrap()
    }

    #[test]
    fn names_are_zrepls_byte_for_byte() {
        let push = job("push");
        let guid = Guid(0x932f_3a70_8908_0ce2);
        let cases = [
            (
                Abstraction::ReplicationCursor {
                    job: push.clone(),
                    guid,
                },
                "zrepl_CURSOR_G_932f3a7089080ce2_J_push",
            ),
            (
                Abstraction::TentativeCursor {
                    job: push.clone(),
                    guid: Guid(0xface601d),
                },
                "zrepl_CURSORTENTATIVE__G_00000000face601d_J_push",
            ),
            (
                Abstraction::ReplicationCursor {
                    job: job("a b"),
                    guid: Guid(0),
                },
                "zrepl_CURSOR_G_0000000000000000_J_a b",
            ),
            (
                Abstraction::StepHold { job: push.clone() },
                "zrepl_STEP_J_push",
            ),
            (
                Abstraction::LastReceivedHold { job: job("sink 1") },
                "zrepl_last_received_J_sink 1",
            ),
            (Abstraction::LegacyCursor, "zrepl_replication_cursor"),
        ];
        for (abstraction, name) in cases {
            assert_eq!(abstraction.to_string(), name);
            let recognised = match abstraction.kind().object() {
                AbstractionObject::Bookmark => {
                    Abstraction::parse_bookmark(name, abstraction.guid().unwrap_or(Guid(7)))
                }
                AbstractionObject::Hold => Abstraction::parse_hold_tag(name),
            };
            assert_eq!(recognised, Recognition::Ours(abstraction));
        }
    }

    /// Renders what a bookmark name is recognised as, in one line.
    fn render(recognition: &Recognition) -> String {
        match recognition {
            Recognition::Ours(a) => match (a.job(), a.guid()) {
                (Some(job), Some(guid)) => {
                    format!("ours {} guid={:016x} job={job:?}", a.kind(), guid.0)
                }
                (Some(job), None) => format!("ours {} job={job:?}", a.kind()),
                _ => format!("ours {}", a.kind()),
            },
            Recognition::Foreign => "foreign".to_owned(),
            Recognition::Tinkered(t) => format!("tinkered {}: {}", t.kind, t.reason),
        }
    }

    /// Fixture lines: `<full bookmark name> | <actual guid in hex> | <expected rendering>`.
    /// The name is split at the first `#`, as the listing does.
    fn check_bookmarks(fixture: &str) {
        for line in fixture.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split(" | ").collect();
            let [full, guid, expected] = fields[..] else {
                panic!("bad fixture line {line:?}")
            };
            let (_, short) = full.split_once('#').unwrap();
            let guid = Guid(u64::from_str_radix(guid, 16).unwrap());
            let actual = render(&Abstraction::parse_bookmark(short, guid));
            assert_eq!(actual, expected, "bookmark {full:?}");
        }
    }

    /// zrepl's `endpoint_zfs_helpers_repr_test.go` cases, plus the GUID and prefix rules.
    #[test]
    fn bookmark_names() {
        check_bookmarks(
            "
            p1/sync#zrepl_CURSOR_G_932f3a7089080ce2_J_push with legitimate name | 932f3a7089080ce2 | ours replication-cursor-bookmark-v2 guid=932f3a7089080ce2 job=JobId(\"push with legitimate name\")
            p1/sync#zrepl_CURSOR_G_932f3a7089_J_push with legitimate name | 932f3a7089 | tinkered replication-cursor-bookmark-v2: the GUID part `932f3a7089` is not 16 lowercase hex digits
            p1/sync#zrepl_CURSOR_G_932f3a7089080ce2_J_push with il\tlegitimate name | 932f3a7089080ce2 | tinkered replication-cursor-bookmark-v2: invalid job name `push with il\tlegitimate name`: the character '\\t' at byte 12 is not allowed (only ASCII letters, digits, space and `-_.:` are); a job name must be usable as one component of a ZFS dataset name
            p1/sync#otherprefix_G_932f3a7089080ce2_J_push with legitimate name | 932f3a7089080ce2 | foreign
            p1/sync#zrepl_CURSOR_G_932F3A7089080CE2_J_push | 932f3a7089080ce2 | tinkered replication-cursor-bookmark-v2: the GUID part `932F3A7089080CE2` is not 16 lowercase hex digits
            p1/sync#zrepl_CURSOR_G_0932f3a7089080ce2_J_push | 932f3a7089080ce2 | tinkered replication-cursor-bookmark-v2: the GUID part `0932f3a7089080ce2` is not 16 lowercase hex digits
            p1/sync#zrepl_CURSOR_G_932f3a708908zce2_J_push | 932f3a7089080ce2 | tinkered replication-cursor-bookmark-v2: the GUID part `932f3a708908zce2` is not 16 lowercase hex digits
            p1/sync#zrepl_CURSOR_G_932f3a7089080ce2_J_push | 1 | tinkered replication-cursor-bookmark-v2: the name says GUID 932f3a7089080ce2 but the bookmark has GUID 0000000000000001
            p1/sync#zrepl_CURSOR_G_932f3a7089080ce2_J_ | 932f3a7089080ce2 | tinkered replication-cursor-bookmark-v2: invalid job name ``: the name is empty; a job name must be usable as one component of a ZFS dataset name
            p1/sync#zrepl_CURSOR_G_932f3a7089080ce2 | 932f3a7089080ce2 | tinkered replication-cursor-bookmark-v2: there is no `_J_<job>` after the GUID
            p1/sync#zrepl_CURSOR_G_932f3a7089080ce2_J__control | 932f3a7089080ce2 | tinkered replication-cursor-bookmark-v2: invalid job name `_control`: names starting with `_` are reserved for internal jobs (such as `_control` and `_prometheus`); choose a name that starts with another character
            p1/sync#zrepl_CURSORTENTATIVE__G_00000000face601d_J_push | face601d | ours tentative-replication-cursor-bookmark-v2 guid=00000000face601d job=JobId(\"push\")
            p1/sync#zrepl_CURSORTENTATIVE_G_00000000face601d_J_push | face601d | foreign
            p1/sync#zrepl_CUSORTENTATIVE_G_00000000face601d_J_push | face601d | foreign
            p1/sync#zrepl_CURSOR_x_G_00000000face601d_J_push | face601d | foreign
            p1/sync#zrepl_STEP_G_00000000face601d_J_push | face601d | foreign
            p1/sync#zrepl_replication_cursor | 5 | ours replication-cursor-bookmark-v1
            p1/sync#zrepl_replication_cursor_2 | 5 | foreign
            p1/sync#zrepl_CURSOR_G_00000000face601d_J_a_G_0000000000000001_J_b | face601d | ours replication-cursor-bookmark-v2 guid=00000000face601d job=JobId(\"a_G_0000000000000001_J_b\")
            ",
        );
    }

    #[test]
    fn hold_tags() {
        let cases = [
            ("zrepl_STEP_J_push", "ours step-hold job=JobId(\"push\")"),
            (
                "zrepl_STEP_J_push with spaces",
                "ours step-hold job=JobId(\"push with spaces\")",
            ),
            (
                "zrepl_last_received_J_sink",
                "ours last-received-hold job=JobId(\"sink\")",
            ),
            (
                "zrepl_last_received_J_a b",
                "ours last-received-hold job=JobId(\"a b\")",
            ),
            (
                "zrepl_STEP_J_",
                "tinkered step-hold: invalid job name ``: the name is empty; a job name must be usable as one component of a ZFS dataset name",
            ),
            (
                "zrepl_STEP_J_a\tb",
                "tinkered step-hold: invalid job name `a\tb`: the character '\\t' at byte 1 is not allowed (only ASCII letters, digits, space and `-_.:` are); a job name must be usable as one component of a ZFS dataset name",
            ),
            (
                "zrepl_last_received_J_a/b",
                "tinkered last-received-hold: invalid job name `a/b`: expected a single component without `/`, `@` or `#`; a job name must be usable as one component of a ZFS dataset name",
            ),
            ("zrepl_step_J_push", "foreign"),
            ("zrepl_STEP_push", "foreign"),
            ("keep", "foreign"),
            ("zrepl_CURSOR_G_932f3a7089080ce2_J_push", "foreign"),
            ("zrepl_replication_cursor", "foreign"),
        ];
        for (tag, expected) in cases {
            assert_eq!(
                render(&Abstraction::parse_hold_tag(tag)),
                expected,
                "tag {tag:?}"
            );
        }
    }

    #[test]
    fn tinkered_explains_itself() {
        let Recognition::Tinkered(t) =
            Abstraction::parse_bookmark("zrepl_CURSOR_G_0000000000000002_J_j", Guid(3))
        else {
            panic!("expected tinkered");
        };
        assert_eq!(
            t.to_string(),
            "`zrepl_CURSOR_G_0000000000000002_J_j` looks like a replication-cursor-bookmark-v2 but \
             was not written by zferry or zrepl (the name says GUID 0000000000000002 but the \
             bookmark has GUID 0000000000000003); it is left alone"
        );
    }

    #[test]
    fn bookmark_full_names_respect_the_total_length() {
        let cursor = Abstraction::ReplicationCursor {
            job: job("push"),
            guid: Guid(1),
        };
        let short = DatasetName::parse("pool/a").unwrap();
        let name = cursor.bookmark_name(&short).unwrap().unwrap();
        assert_eq!(
            name.to_string(),
            "pool/a#zrepl_CURSOR_G_0000000000000001_J_push"
        );
        let deep = DatasetName::parse(&format!("pool/{}", "d".repeat(220))).unwrap();
        assert!(cursor.bookmark_name(&deep).unwrap().is_err());
        assert_eq!(
            Abstraction::StepHold { job: job("push") }.bookmark_name(&short),
            None
        );
        let longest = Abstraction::TentativeCursor {
            job: job(&"j".repeat(JOB_ID_LEN_MAX)),
            guid: Guid(u64::MAX),
        };
        assert_eq!(longest.to_string().len(), 255);
        assert!(Component::parse(&longest.to_string()).is_ok());
    }

    #[test]
    fn kinds_serialize_as_zrepl_type_strings() {
        for kind in [
            AbstractionKind::ReplicationCursor,
            AbstractionKind::TentativeCursor,
            AbstractionKind::StepHold,
            AbstractionKind::LastReceivedHold,
            AbstractionKind::LegacyCursor,
        ] {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
    }

    /// Fixture lines, one abstraction each, `|`-separated:
    /// `<bookmark> | <txg> | <verdict>` or `<snapshot> | <hold tag> | <txg> | <verdict>`,
    /// where a bookmark's actual GUID is the one in its name (0 for the legacy cursor).
    fn check_staleness(fixture: &str) {
        let lines: Vec<&str> = fixture
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut found = Vec::new();
        for line in &lines {
            let fields: Vec<&str> = line.split(" | ").collect();
            let (version, abstraction, txg) = match fields[..] {
                [bookmark, txg, _] => {
                    let version = VersionName::parse(bookmark).unwrap();
                    let short = version.short().as_str();
                    let guid = short
                        .split_once("_G_")
                        .map_or(0, |(_, rest)| u64::from_str_radix(&rest[..16], 16).unwrap());
                    let abstraction = Abstraction::parse_bookmark(short, Guid(guid))
                        .ours()
                        .unwrap();
                    (version, abstraction, txg)
                }
                [snapshot, tag, txg, _] => {
                    let abstraction = Abstraction::parse_hold_tag(tag).ours().unwrap();
                    (VersionName::parse(snapshot).unwrap(), abstraction, txg)
                }
                _ => panic!("bad fixture line {line:?}"),
            };
            let createtxg = Txg(txg.parse().unwrap());
            found.push(FoundAbstraction {
                version,
                createtxg,
                abstraction,
            });
        }
        let staleness = list_stale(found.clone());
        assert_eq!(staleness.live.len() + staleness.stale.len(), found.len());
        let actual: Vec<String> = lines
            .iter()
            .zip(&found)
            .map(|(line, item)| {
                let (live, stale) = (
                    staleness.live.contains(item),
                    staleness.stale.contains(item),
                );
                assert_ne!(
                    live, stale,
                    "{item:?} must be exactly one of live and stale"
                );
                let verdict = if stale { "stale" } else { "live" };
                format!("{} | {verdict}", line.rsplit_once(" | ").unwrap().0)
            })
            .collect();
        assert_eq!(actual.join("\n"), lines.join("\n"));
    }

    #[test]
    fn cursors_all_but_newest_are_stale() {
        check_staleness(
            "
            p/a#zrepl_CURSOR_G_0000000000000001_J_push | 10 | stale
            p/a#zrepl_CURSOR_G_0000000000000003_J_push | 30 | live
            p/a#zrepl_CURSOR_G_0000000000000002_J_push | 20 | stale
            p/a#zrepl_CURSOR_G_0000000000000001_J_other job | 10 | live
            p/b#zrepl_CURSOR_G_0000000000000001_J_push | 10 | live
            p/a#zrepl_replication_cursor | 1 | live
            p/a#zrepl_CURSORTENTATIVE__G_0000000000000001_J_push | 10 | live
            p/a#zrepl_CURSORTENTATIVE__G_0000000000000003_J_push | 30 | live
            ",
        );
    }

    #[test]
    fn last_received_holds_all_but_newest_are_stale() {
        check_staleness(
            "
            q/p/a@s1 | zrepl_last_received_J_sink | 10 | stale
            q/p/a@s3 | zrepl_last_received_J_sink | 30 | live
            q/p/a@s2 | zrepl_last_received_J_sink | 20 | stale
            q/p/a@s2 | zrepl_last_received_J_other | 20 | live
            q/p/b@s1 | zrepl_last_received_J_sink | 10 | live
            ",
        );
    }

    #[test]
    fn step_holds_at_or_below_the_cursor_are_stale() {
        check_staleness(
            "
            p/a#zrepl_CURSOR_G_0000000000000002_J_push | 20 | live
            p/a@s1 | zrepl_STEP_J_push | 10 | stale
            p/a@s2 | zrepl_STEP_J_push | 20 | stale
            p/a@s3 | zrepl_STEP_J_push | 30 | live
            p/a@s4 | zrepl_STEP_J_push | 40 | live
            p/b@s1 | zrepl_STEP_J_push | 10 | live
            p/a@s1 | zrepl_STEP_J_other | 10 | live
            ",
        );
    }

    #[test]
    fn without_a_cursor_the_newest_step_holds_stay() {
        // An interrupted initial replication: the newest step hold protects the `to` snapshot.
        // Another job's cursor does not count, nor a tentative cursor.
        check_staleness(
            "
            p/a@s1 | zrepl_STEP_J_push | 10 | stale
            p/a@s2 | zrepl_STEP_J_push | 20 | stale
            p/a@s3 | zrepl_STEP_J_push | 30 | live
            p/a@s3b | zrepl_STEP_J_push | 30 | live
            p/a#zrepl_CURSOR_G_0000000000000009_J_other | 90 | live
            p/a#zrepl_CURSORTENTATIVE__G_0000000000000009_J_push | 90 | live
            ",
        );
    }

    #[test]
    fn ties_and_duplicates_never_make_the_newest_stale() {
        check_staleness(
            "
            p/a#zrepl_CURSOR_G_0000000000000003_J_push | 30 | live
            p/a#zrepl_CURSOR_G_0000000000000003_J_push | 30 | live
            p/a#zrepl_CURSOR_G_0000000000000002_J_push | 30 | stale
            q/a@x | zrepl_last_received_J_sink | 7 | stale
            q/a@y | zrepl_last_received_J_sink | 7 | live
            ",
        );
        assert_eq!(list_stale(Vec::new()), Staleness::default());
    }

    fn job_id() -> impl Strategy<Value = JobId> {
        // Any valid component characters, including spaces and the markers' own characters;
        // filtered to exclude the reserved `_` start, `.` and `..`.
        "[0-9A-Za-z:. _-][0-9A-Za-z:. _GJ-]{0,210}"
            .prop_filter_map("not a valid job id", |s| JobId::parse(&s).ok())
    }

    proptest! {
        #[test]
        fn bookmarks_round_trip(job in job_id(), guid in any::<u64>(), tentative in any::<bool>()) {
            let guid = Guid(guid);
            let abstraction = if tentative {
                Abstraction::TentativeCursor { job, guid }
            } else {
                Abstraction::ReplicationCursor { job, guid }
            };
            let name = abstraction.to_string();
            prop_assert!(Component::parse(&name).is_ok(), "{name:?} is not a valid component");
            prop_assert_eq!(Abstraction::parse_bookmark(&name, guid), Recognition::Ours(abstraction.clone()));
            let other = Guid(guid.0 ^ 1);
            let is_tinkered = matches!(Abstraction::parse_bookmark(&name, other), Recognition::Tinkered(_));
            prop_assert!(is_tinkered);
        }

        #[test]
        fn hold_tags_round_trip(job in job_id(), step in any::<bool>()) {
            let abstraction = if step {
                Abstraction::StepHold { job }
            } else {
                Abstraction::LastReceivedHold { job }
            };
            let tag = abstraction.to_string();
            prop_assert!(tag.len() <= crate::job_id::HOLD_TAG_LEN_MAX);
            prop_assert_eq!(Abstraction::parse_hold_tag(&tag), Recognition::Ours(abstraction));
        }
    }
}
