//! The replication planner: a pure function from both sides' versions to the steps that make
//! the receiver hold the sender's newest snapshot, or to the conflict that prevents it.
//!
//! The algorithm is zrepl's, so that plans match what a zrepl user expects:
//!
//! 1. Sort both sides by createtxg (a bookmark before a snapshot of the same createtxg) and
//!    ignore the receiver's bookmarks: a receiver bookmark cannot be the base of a receive.
//! 2. Walk the receiver's snapshots from newest to oldest; the first whose GUID the sender has
//!    is the most recent common ancestor (MRCA). When the sender has both a snapshot and a
//!    bookmark of that GUID, the snapshot is the base.
//! 3. If the MRCA is not the receiver's newest snapshot, the receiver has history the sender
//!    lacks: the sides have diverged and nothing is sent (a forced receive would destroy it).
//! 4. Otherwise every sender snapshot after the MRCA is sent, in createtxg order. Bookmarks
//!    after the MRCA are skipped: they carry no data to send.
//! 5. With no common GUID and an empty receiver, initial replication sends the newest sender
//!    snapshot (`most_recent`), or all of them (`all`), or refuses (`fail`). With no common GUID
//!    and a non-empty receiver, the conflict is for a human to resolve.
//!
//! A partial receive takes precedence over all of this: its resume token names the step that
//! was interrupted, which is finished first, and the rest of the sender's snapshots chain on.
//!
//! Where zferry goes beyond zrepl: consecutive snapshots may be merged into one `zfs send -I`
//! step ([`PlanPolicy::snapshots_per_step_max`]), which saves the per-step overhead that made
//! zrepl slow after outages. `-I` needs a snapshot as its base, so a step from a bookmark is
//! always a single `-i` step.
//!
//! Cost: O((s + r) log s) for s sender and r receiver versions; the GUID index avoids zrepl's
//! O(s * r) scan when the sides share nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

use crate::version::{Guid, Version};

/// The most snapshots one `-I` step may carry; bounds the size of a step's snapshot list.
pub const STEP_SNAPSHOTS_MAX: usize = 10_000;

/// How many versions to name when a conflict lists one side's snapshots.
const CONFLICT_LIST_NAMES_MAX: usize = 5;

/// What to do when the receiver has no snapshots of a filesystem (zrepl's
/// `conflict_resolution.initial_replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialReplication {
    /// Send only the newest sender snapshot (by createtxg, not by name).
    #[default]
    MostRecent,
    /// Send the oldest sender snapshot, then every later one incrementally.
    All,
    /// Refuse: a human decides how the first replication happens.
    Fail,
}

impl InitialReplication {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MostRecent => "most_recent",
            Self::All => "all",
            Self::Fail => "fail",
        }
    }
}

/// The knobs of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPolicy {
    /// Initial replication onto an empty receiver.
    pub initial: InitialReplication,
    /// The most snapshots merged into one `-I` step; 1 means one step per snapshot (zrepl's
    /// behaviour). Capped at [`STEP_SNAPSHOTS_MAX`].
    pub snapshots_per_step_max: NonZeroUsize,
}

impl Default for PlanPolicy {
    fn default() -> Self {
        Self {
            initial: InitialReplication::MostRecent,
            snapshots_per_step_max: NonZeroUsize::MIN,
        }
    }
}

/// The fields of a decoded resume token the planner needs: which step was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The GUID of the incremental base, absent for an interrupted full send.
    pub fromguid: Option<Guid>,
    /// The GUID of the snapshot being received.
    pub toguid: Guid,
    /// The sender's `fs@snap` name of that snapshot, for messages.
    pub toname: String,
}

/// One `zfs send | zfs recv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The incremental base on the sender (a snapshot or bookmark), `None` for a full send.
    pub from: Option<Version>,
    /// The snapshot the receiver holds afterwards.
    pub to: Version,
    /// Snapshots strictly between `from` and `to` that a `-I` stream also carries, oldest
    /// first; empty for a full or `-i` step.
    pub intermediates: Vec<Version>,
    /// Whether this step continues a partial receive from its resume token.
    pub resumed: bool,
}

impl Step {
    /// How the stream is made.
    pub fn send_kind(&self) -> SendKind {
        match (&self.from, self.intermediates.is_empty()) {
            (None, _) => SendKind::Full,
            (Some(_), true) => SendKind::Incremental,
            (Some(_), false) => SendKind::IncrementalRange,
        }
    }

    /// The number of snapshots the receiver gains.
    pub fn n_snapshots(&self) -> usize {
        self.intermediates.len() + 1
    }

    /// The snapshots the receiver gains, oldest first.
    pub fn received(&self) -> impl Iterator<Item = &Version> {
        self.intermediates.iter().chain(std::iter::once(&self.to))
    }
}

/// The shape of a send stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendKind {
    /// `zfs send fs@to`.
    Full,
    /// `zfs send -i from fs@to`.
    Incremental,
    /// `zfs send -I from fs@to`.
    IncrementalRange,
}

impl fmt::Display for Step {
    /// `full @a`, `@a -> @b`, `#a -> @b`, `@b -I> @f (4 snapshots)`, plus ` (resuming)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.send_kind(), &self.from) {
            (SendKind::Full, _) | (_, None) => write!(f, "full {}", self.to)?,
            (SendKind::Incremental, Some(from)) => write!(f, "{from} -> {}", self.to)?,
            (SendKind::IncrementalRange, Some(from)) => {
                write!(
                    f,
                    "{from} -I> {} ({} snapshots)",
                    self.to,
                    self.n_snapshots()
                )?;
            }
        }
        if self.resumed {
            f.write_str(" (resuming)")?;
        }
        Ok(())
    }
}

/// Why the steps start where they start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PlanBase {
    /// Incremental from the most recent common version.
    Common {
        /// The sender's version of the MRCA (a snapshot if it has one, else a bookmark).
        version: Version,
    },
    /// Initial replication onto a receiver without snapshots.
    Initial {
        /// The mode that chose the first snapshot.
        mode: InitialReplication,
    },
    /// Continuing an interrupted receive.
    Resume {
        /// The sender's name of the snapshot being resumed.
        toname: String,
    },
}

/// What the planner decided for one filesystem when there is no conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Plan {
    /// The receiver already holds the sender's newest snapshot.
    UpToDate {
        /// The common version the sides share (the sender's view of it).
        newest: Version,
    },
    /// Steps to run, in order.
    Replicate {
        /// Where the steps start.
        base: PlanBase,
        /// The steps, oldest first; never empty.
        steps: Vec<Step>,
    },
}

impl Plan {
    /// The steps (none when up to date).
    pub fn steps(&self) -> &[Step] {
        match self {
            Self::UpToDate { .. } => &[],
            Self::Replicate { steps, .. } => steps,
        }
    }
}

/// Why a filesystem cannot be replicated as it stands. Each variant carries what a user needs to
/// understand the situation; [`PlanError::advice`] says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "conflict")]
pub enum PlanError {
    /// The sender has no snapshots to send (bookmarks alone carry no data).
    #[error("the sender has no snapshots{}", receiver_note(.receiver_newest.as_ref()))]
    NoSenderSnapshots {
        /// The receiver's newest snapshot, if any.
        receiver_newest: Option<Version>,
    },
    /// Both sides have snapshots but share none.
    #[error(
        "no common snapshot or bookmark between sender and receiver: newest sender snapshot \
         {sender_newest}, newest receiver snapshot {receiver_newest} ({n_receiver_snapshots} \
         receiver snapshots, none of them on the sender)"
    )]
    NoCommonAncestor {
        /// The sender's newest snapshot.
        sender_newest: Box<Version>,
        /// The receiver's newest snapshot.
        receiver_newest: Box<Version>,
        /// How many snapshots the receiver has.
        n_receiver_snapshots: usize,
    },
    /// The receiver is empty and the policy forbids automatic initial replication.
    #[error(
        "the receiver has no snapshots and initial replication is set to `fail`: newest sender \
         snapshot {sender_newest}"
    )]
    InitialReplicationDisabled {
        /// The sender's newest snapshot, the one `most_recent` would send.
        sender_newest: Version,
    },
    /// The receiver has snapshots newer than the last common one that the sender lacks.
    #[error(
        "the receiver's newest snapshot {} is not on the sender: the sides diverged after the \
         common snapshot {common}; receiver only: {}; sender only: {}",
        receiver_only.last().map_or_else(String::new, ToString::to_string),
        list_names(receiver_only),
        list_names(sender_only)
    )]
    Diverged {
        /// The most recent common version (sender's view).
        common: Version,
        /// Sender snapshots after it.
        sender_only: Vec<Version>,
        /// Receiver snapshots after it.
        receiver_only: Vec<Version>,
    },
    /// A partial receive wants a snapshot the sender no longer has.
    #[error(
        "the partial receive on the receiver resumes `{toname}` (guid {toguid}), which the sender \
         {}",
        if *.only_bookmark { "has only as a bookmark" } else { "no longer has" }
    )]
    ResumeTargetGone {
        /// The GUID of the snapshot being received.
        toguid: Guid,
        /// Its name on the sender.
        toname: String,
        /// The sender still has a bookmark of it, which cannot be sent.
        only_bookmark: bool,
    },
    /// A partial incremental receive needs a base the sender no longer has.
    #[error(
        "the partial receive of `{toname}` is incremental from guid {fromguid}, which the sender \
         no longer has as a snapshot or bookmark"
    )]
    ResumeBaseGone {
        /// The GUID of the missing base.
        fromguid: Guid,
        /// The name of the snapshot being received.
        toname: String,
    },
    /// The resume token's base is not older than its target on the sender.
    #[error(
        "the partial receive of `{toname}` claims base {from}, which is not older than {to} on \
         the sender"
    )]
    ResumeBaseNotOlder {
        /// The base version.
        from: Box<Version>,
        /// The target snapshot.
        to: Box<Version>,
        /// The name of the snapshot being received.
        toname: String,
    },
}

impl PlanError {
    /// What a user can do about it, in one or two sentences.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::NoSenderSnapshots { .. } => {
                "take a snapshot on the sender (or wait for the snapshotter); replication starts \
                 from the newest one"
            }
            Self::NoCommonAncestor { .. } => {
                "the receiver's copy is unrelated to the sender's history; rename or destroy the \
                 receiver filesystem to start over with a full send, after checking that nothing \
                 on it is needed"
            }
            Self::InitialReplicationDisabled { .. } => {
                "set `initial_replication` to `most_recent` or `all`, or create the first copy on \
                 the receiver by hand"
            }
            Self::Diverged { .. } => {
                "the receiver has snapshots the sender lacks (a rollback or restore on the sender, \
                 or snapshots taken on the receiver); roll the receiver back to the common \
                 snapshot, destroying the receiver-only snapshots, after checking they are not \
                 needed"
            }
            Self::ResumeTargetGone { .. }
            | Self::ResumeBaseGone { .. }
            | Self::ResumeBaseNotOlder { .. } => {
                "the partial receive can never finish; clear it on the receiver with \
                 `zfs receive -A <filesystem>` and the next run plans from the last complete \
                 snapshot"
            }
        }
    }
}

fn receiver_note(newest: Option<&Version>) -> String {
    newest.map_or_else(String::new, |v| format!(" (newest receiver snapshot {v})"))
}

fn list_names(versions: &[Version]) -> String {
    if versions.is_empty() {
        return "none".to_owned();
    }
    let shown = versions
        .iter()
        .take(CONFLICT_LIST_NAMES_MAX)
        .map(ToString::to_string);
    let mut text = shown.collect::<Vec<_>>().join(" ");
    if versions.len() > CONFLICT_LIST_NAMES_MAX {
        text.push_str(&format!(
            " and {} more",
            versions.len() - CONFLICT_LIST_NAMES_MAX
        ));
    }
    text
}

/// Plans the replication of one filesystem.
///
/// `sender` and `receiver` are the versions of the filesystem on each side in any order; an
/// absent or placeholder receiver filesystem is an empty `receiver`. `resume` is the receiver's
/// partial-receive state, if any.
pub fn plan(
    sender: &[Version],
    receiver: &[Version],
    resume: Option<&ResumePoint>,
    policy: &PlanPolicy,
) -> Result<Plan, PlanError> {
    let batch = policy.snapshots_per_step_max.get().min(STEP_SNAPSHOTS_MAX);
    let sender = sorted(sender.iter());
    if let Some(resume) = resume {
        return plan_resume(&sender, resume, batch);
    }
    let receiver = sorted(receiver.iter().filter(|v| v.is_snapshot()));

    let mut by_guid: BTreeMap<Guid, usize> = BTreeMap::new();
    for (i, v) in sender.iter().enumerate() {
        // Later in createtxg order wins: a snapshot over its bookmark, as zrepl's backwards scan.
        by_guid.insert(v.guid, i);
    }
    let common = receiver
        .iter()
        .enumerate()
        .rev()
        .find_map(|(r, v)| by_guid.get(&v.guid).map(|&s| (r, s)));

    let Some((r_common, s_common)) = common else {
        return plan_without_common(&sender, &receiver, policy.initial, batch);
    };
    let base = sender[s_common];
    // Sender snapshots after the base, without bookmarks and without the base's own GUID (a
    // snapshot of the same createtxg as a bookmark base).
    let later: Vec<&Version> = sender[s_common + 1..]
        .iter()
        .copied()
        .filter(|v| v.is_snapshot() && v.guid != base.guid)
        .collect();
    if r_common + 1 != receiver.len() {
        return Err(PlanError::Diverged {
            common: base.clone(),
            sender_only: later.into_iter().cloned().collect(),
            receiver_only: receiver[r_common + 1..]
                .iter()
                .map(|v| (*v).clone())
                .collect(),
        });
    }
    if later.is_empty() {
        return Ok(Plan::UpToDate {
            newest: base.clone(),
        });
    }
    Ok(Plan::Replicate {
        base: PlanBase::Common {
            version: base.clone(),
        },
        steps: chain(Some(base), &later, batch),
    })
}

fn sorted<'a>(versions: impl Iterator<Item = &'a Version>) -> Vec<&'a Version> {
    let mut sorted: Vec<&Version> = versions.collect();
    sorted.sort_by(|a, b| a.cmp_by_createtxg(b));
    sorted
}

fn plan_without_common(
    sender: &[&Version],
    receiver: &[&Version],
    initial: InitialReplication,
    batch: usize,
) -> Result<Plan, PlanError> {
    let snapshots: Vec<&Version> = sender.iter().copied().filter(|v| v.is_snapshot()).collect();
    let Some(&newest) = snapshots.last() else {
        return Err(PlanError::NoSenderSnapshots {
            receiver_newest: receiver.last().map(|v| (*v).clone()),
        });
    };
    if let Some(receiver_newest) = receiver.last() {
        return Err(PlanError::NoCommonAncestor {
            sender_newest: Box::new(newest.clone()),
            receiver_newest: Box::new((*receiver_newest).clone()),
            n_receiver_snapshots: receiver.len(),
        });
    }
    let steps = match initial {
        InitialReplication::Fail => {
            return Err(PlanError::InitialReplicationDisabled {
                sender_newest: newest.clone(),
            });
        }
        InitialReplication::MostRecent => chain(None, &[newest], batch),
        InitialReplication::All => chain(None, &snapshots, batch),
    };
    Ok(Plan::Replicate {
        base: PlanBase::Initial { mode: initial },
        steps,
    })
}

fn plan_resume(sender: &[&Version], resume: &ResumePoint, batch: usize) -> Result<Plan, PlanError> {
    let to_index = sender
        .iter()
        .rposition(|v| v.guid == resume.toguid && v.is_snapshot());
    let Some(to_index) = to_index else {
        return Err(PlanError::ResumeTargetGone {
            toguid: resume.toguid,
            toname: resume.toname.clone(),
            only_bookmark: sender.iter().any(|v| v.guid == resume.toguid),
        });
    };
    let to = sender[to_index];
    let from = match resume.fromguid {
        None => None,
        Some(fromguid) => {
            // Snapshot preferred over its bookmark: the last of that GUID in createtxg order.
            let Some(from) = sender.iter().rev().find(|v| v.guid == fromguid) else {
                return Err(PlanError::ResumeBaseGone {
                    fromguid,
                    toname: resume.toname.clone(),
                });
            };
            if from.createtxg >= to.createtxg {
                return Err(PlanError::ResumeBaseNotOlder {
                    from: Box::new((*from).clone()),
                    to: Box::new(to.clone()),
                    toname: resume.toname.clone(),
                });
            }
            Some(*from)
        }
    };
    let mut steps = vec![Step {
        from: from.cloned(),
        to: to.clone(),
        intermediates: Vec::new(),
        resumed: true,
    }];
    let later: Vec<&Version> = sender[to_index + 1..]
        .iter()
        .copied()
        .filter(|v| v.is_snapshot() && v.guid != to.guid)
        .collect();
    steps.extend(chain(Some(to), &later, batch));
    Ok(Plan::Replicate {
        base: PlanBase::Resume {
            toname: resume.toname.clone(),
        },
        steps,
    })
}

/// Steps that carry `snapshots` in order, starting from `base`, merging up to `batch` snapshots
/// per step where the base of a step is a snapshot (`-I` cannot start at a bookmark, and a full
/// send carries exactly one snapshot).
fn chain(base: Option<&Version>, snapshots: &[&Version], batch: usize) -> Vec<Step> {
    let mut steps = Vec::with_capacity(snapshots.len().div_ceil(batch.max(1)));
    let mut from = base;
    let mut rest = snapshots;
    while let Some(&first) = rest.first() {
        let take = match from {
            Some(f) if f.is_snapshot() => batch.clamp(1, rest.len()),
            _ => 1,
        };
        let (carried, tail) = rest.split_at(take);
        let to = carried.last().copied().unwrap_or(first);
        steps.push(Step {
            from: from.cloned(),
            to: to.clone(),
            intermediates: carried[..take - 1].iter().map(|v| (*v).clone()).collect(),
            resumed: false,
        });
        from = Some(to);
        rest = tail;
    }
    steps
}
