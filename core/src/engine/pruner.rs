//! The pruner: executes the keep rules' verdicts for the filesystems of one side (sender or
//! receiver) over a [`ZfsBackend`].
//!
//! # Two phases
//!
//! [`plan_side`] only reads: one `list_datasets` call (with `zrepl:placeholder`, under the
//! targets' common ancestor, or its nearest existing ancestor if that is gone) to skip
//! placeholders and vanished filesystems, one `get_properties` call per filesystem whose
//! placeholder property is `on` (only a *local* `on` makes a placeholder, as in zrepl; children
//! of a placeholder inherit the value and are ordinary filesystems), and ONE `list_versions`
//! call for all remaining filesystems. Per filesystem it asks [`plan_filesystem`] for the
//! verdicts and turns them into a [`FilesystemBatch`]. [`execute_side`] then destroys, one
//! batched `destroy_snapshots` call per filesystem, in [`prune_order`] (fewest errors first).
//! [`prune_side`] runs both.
//!
//! # What the pruner never destroys
//!
//! On top of the rules (zrepl's semantics, see [`crate::prune`]), the plan keeps, and says so
//! in the report ([`KeptReason`]):
//!
//! - a snapshot the running replication still needs (the `from` or `to` of a pending step,
//!   the [`Protected`] set). zrepl cancels the pruner or lets it race replication (its "dirty
//!   hack"); zferry keeps the snapshot instead and prunes it next time;
//! - the snapshot the replication cursor points at: the last common base of sender and
//!   receiver, whatever the rules say;
//! - the filesystem's newest snapshot, so that pruning never leaves a filesystem without one.
//!
//! # The second check (destructive actions are checked twice)
//!
//! Right before a filesystem's `destroy_snapshots`, [`execute_side`] lists that filesystem's
//! versions again and runs [`recheck_batch`]:
//!
//! - Snapshots whose state changed since planning are dropped from the batch, which is normal
//!   (a user or the replication acts concurrently): gone, renamed-over with another GUID
//!   (destroy goes by name, so a GUID that changed means another snapshot now has the name),
//!   now the cursor's snapshot (the sender's cursor moved), or now the newest snapshot.
//! - A batch that contains the cursor's snapshot, a protected snapshot or the newest snapshot
//!   as they were known when planning is a bug in the plan, not a change in the world. Under
//!   `cfg(test)` or a `debug_assertions` build this panics (an assertion, so that tests and
//!   simulations find the bug); in a release build the filesystem fails with
//!   [`FilesystemError::PlanViolated`] and no destroy is issued for it.
//!
//! # Back-off
//!
//! As zrepl's pruner does, the first error of a filesystem ends its pruning for this run: it is
//! recorded in the report, its [`ErrorCounters`] entry is raised (so it goes last next time), and
//! the pruner goes on with the other filesystems. A filesystem pruned without error has its
//! counter reset. Errors that concern the whole side (listing failed) are [`SideError`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::backend::{
    PLACEHOLDER_PROPERTY, PropertySource, VersionTypes, ZfsBackend, ZfsError, ZfsErrorKind,
};
use crate::job_id::JobId;
use crate::listing::DatasetEntry;
use crate::name::{Component, DatasetName};
use crate::prune::{
    KeepRules, PruneError, ReplicationCursor, cursor_from_bookmarks, plan_filesystem,
};
use crate::queue::{CountersFull, ErrorCounters, STEP_QUEUE_LEN_MAX, prune_order};
use crate::version::{Guid, Version};

/// The most filesystems one side's pruning takes; the same bound as the replication queue,
/// since every pruned filesystem is a replicated one.
pub const PRUNE_TARGETS_MAX: usize = STEP_QUEUE_LEN_MAX;

/// The value of `zrepl:placeholder` that marks a placeholder (when set locally).
pub const PLACEHOLDER_ON: &str = "on";

/// The snapshots the running replication still needs, by filesystem (on the side being pruned)
/// and GUID: the `from` and `to` of every pending step. The pruner never destroys them.
pub type Protected = BTreeSet<(DatasetName, Guid)>;

/// Which side of a job is pruned.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The sending side (`keep_sender`).
    Sender,
    /// The receiving side (`keep_receiver`).
    Receiver,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sender => "sender",
            Self::Receiver => "receiver",
        })
    }
}

/// Where each filesystem's replication cursor comes from.
#[derive(Debug, Clone, Copy)]
pub enum Cursors<'a> {
    /// The sender side: the job's newest `zrepl_CURSOR_G_..._J_<job>` bookmark among the
    /// filesystem's own versions ([`cursor_from_bookmarks`]). Read again at the second check.
    FromBookmarks(&'a JobId),
    /// The receiver side: what the sender side found, keyed by *receiver* filesystem. A
    /// filesystem without an entry has no correspondence on the sender and is skipped.
    Given(&'a BTreeMap<DatasetName, ReplicationCursor>),
    /// A job that does not replicate (the snap job): there is no cursor and nothing counts as
    /// replicated. Every filesystem is planned with [`ReplicationCursor::Unknown`], so a
    /// `not_replicated` rule fails each filesystem with [`PruneError::CursorUnknown`]; the snap
    /// job refuses such rules when its config is loaded, so this is a second line of defence.
    ///
    /// zrepl fakes a cursor here with the newest version's GUID (its quirk 11: an error when
    /// that version is a bookmark); a fake cursor would also mark every older snapshot as
    /// "replicated", a lie a `not_replicated` rule would act on.
    ///
    /// [`PruneError::CursorUnknown`]: crate::prune::PruneError::CursorUnknown
    NoReplication,
}

/// What to prune on one side.
#[derive(Debug, Clone, Copy)]
pub struct SideRequest<'a> {
    /// Which side this is (for the report).
    pub side: Side,
    /// The filesystems to prune (duplicates are pruned once).
    pub targets: &'a [DatasetName],
    /// The keep rules of this side.
    pub rules: &'a KeepRules,
    /// How the replication cursors are learnt.
    pub cursors: Cursors<'a>,
    /// The snapshots the running replication still needs.
    pub protected: &'a Protected,
}

/// Why a filesystem is not pruned at all, without that being an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// It is a placeholder (`zrepl:placeholder=on`, set locally): it has no snapshots of its own.
    Placeholder,
    /// It does not exist (any more) on this side.
    DoesNotExist,
    /// The sender side has no filesystem that replicates to it (receiver side only).
    NoCorrespondenceOnSender,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Placeholder => "filesystem is a placeholder",
            Self::DoesNotExist => "filesystem does not exist",
            Self::NoCorrespondenceOnSender => "filesystem has no correspondence on sender",
        })
    }
}

/// Why a snapshot the rules would destroy is kept.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KeptReason {
    /// The running replication still needs it (it is in [`Protected`]).
    NeededByReplication,
    /// It is the snapshot the replication cursor points at: the last common base.
    ReplicationCursor,
    /// It is the filesystem's newest snapshot.
    Newest,
}

impl fmt::Display for KeptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NeededByReplication => "kept: needed by the running replication",
            Self::ReplicationCursor => "kept: the replication cursor's snapshot (last common base)",
            Self::Newest => "kept: the newest snapshot",
        })
    }
}

/// A snapshot the rules would destroy and the pruner keeps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptOverride {
    /// The snapshot's short name.
    pub snapshot: Component,
    /// Its GUID.
    pub guid: Guid,
    /// Why it stays.
    pub reason: KeptReason,
}

/// A snapshot the plan destroys: by name, verified by GUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyCandidate {
    /// The snapshot's short name.
    pub snapshot: Component,
    /// Its GUID when planned.
    pub guid: Guid,
}

/// The plan of one filesystem that can be pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemBatch {
    /// The filesystem.
    pub filesystem: DatasetName,
    /// The GUID of the replication cursor's snapshot as planned (`None` when unknown).
    pub cursor: Option<Guid>,
    /// The GUID of the newest snapshot as planned (`None` without snapshots).
    pub newest: Option<Guid>,
    /// How many snapshots the filesystem had.
    pub n_snapshots: usize,
    /// What to destroy, in createtxg order.
    pub destroy: Vec<DestroyCandidate>,
    /// What the rules would destroy but the pruner keeps.
    pub kept: Vec<KeptOverride>,
}

/// What the plan says about one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedFilesystem {
    /// Not pruned, and not an error.
    Skipped {
        /// The filesystem.
        filesystem: DatasetName,
        /// Why.
        reason: SkipReason,
    },
    /// Cannot be planned; executing records the error and raises its counter.
    Failed {
        /// The filesystem.
        filesystem: DatasetName,
        /// Why.
        error: FilesystemError,
    },
    /// Planned.
    Batch(FilesystemBatch),
}

impl PlannedFilesystem {
    /// The filesystem this is about.
    pub fn filesystem(&self) -> &DatasetName {
        match self {
            Self::Skipped { filesystem, .. } | Self::Failed { filesystem, .. } => filesystem,
            Self::Batch(batch) => &batch.filesystem,
        }
    }
}

/// The plan of one side, in execution order ([`prune_order`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidePlan {
    /// Which side.
    pub side: Side,
    /// The sending job, whose cursor the second check reads again (sender side only).
    pub cursor_job: Option<JobId>,
    /// The snapshots the running replication needs, checked again before each destroy.
    pub protected: Protected,
    /// One entry per target filesystem.
    pub filesystems: Vec<PlannedFilesystem>,
}

/// Why one filesystem's pruning failed. It concerns that filesystem only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilesystemError {
    /// The keep rules cannot be applied (no cursor, cursor not on target, ...).
    #[error(transparent)]
    Plan(#[from] PruneError),
    /// Whether the filesystem is a placeholder could not be learnt.
    #[error(
        "`{filesystem}` is not pruned: cannot tell whether it is a placeholder: {source}; it is \
         tried again next time"
    )]
    PlaceholderCheck {
        /// The filesystem.
        filesystem: DatasetName,
        /// The backend's error.
        source: ZfsError,
    },
    /// Listing the filesystem again right before destroying failed.
    #[error(
        "`{filesystem}` is not pruned: cannot list its snapshots again before destroying: \
         {source}; nothing was destroyed, it is tried again next time"
    )]
    Relist {
        /// The filesystem.
        filesystem: DatasetName,
        /// The backend's error.
        source: ZfsError,
    },
    /// The plan wanted to destroy a snapshot it must keep (found at the second check).
    #[error(
        "`{filesystem}` is not pruned: the plan included `@{snapshot}` (guid {guid}) although it \
         is {what}; this is a bug in zferry, please report it; nothing of `{filesystem}` was \
         destroyed"
    )]
    PlanViolated {
        /// The filesystem.
        filesystem: DatasetName,
        /// The snapshot.
        snapshot: Component,
        /// Its GUID.
        guid: Guid,
        /// What it is.
        what: ViolatedRule,
    },
    /// The destroy call failed as a whole.
    #[error(
        "`{filesystem}`: destroying {n_snapshots} snapshot(s) failed: {source}; it is tried \
         again next time"
    )]
    DestroyCall {
        /// The filesystem.
        filesystem: DatasetName,
        /// The size of the batch.
        n_snapshots: usize,
        /// The backend's error.
        source: ZfsError,
    },
    /// One snapshot of the batch could not be destroyed.
    #[error(
        "cannot destroy `{filesystem}@{snapshot}`: {kind}{hint}; {n_destroyed} other snapshot(s) \
         of the batch were destroyed, it is tried again next time",
        hint = busy_hint(kind, filesystem, snapshot)
    )]
    Destroy {
        /// The filesystem.
        filesystem: DatasetName,
        /// The first snapshot that failed.
        snapshot: Component,
        /// Why.
        kind: ZfsErrorKind,
        /// How many of the batch were destroyed.
        n_destroyed: usize,
    },
}

/// What a snapshot in a violating batch was, when planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolatedRule {
    /// In the [`Protected`] set.
    Protected,
    /// The replication cursor's snapshot.
    Cursor,
    /// The newest snapshot.
    Newest,
}

impl fmt::Display for ViolatedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Protected => "needed by the running replication",
            Self::Cursor => "the replication cursor's snapshot",
            Self::Newest => "the newest snapshot",
        })
    }
}

/// Why a whole side could not be pruned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SideError {
    /// More targets than [`PRUNE_TARGETS_MAX`].
    #[error(
        "cannot prune the {side}: {n_targets} filesystems is more than the {max} one run \
         handles; split the job"
    )]
    TooManyTargets {
        /// The side.
        side: Side,
        /// How many were given.
        n_targets: usize,
        /// The bound.
        max: usize,
    },
    /// Listing the datasets failed.
    #[error("cannot prune the {side}: listing its filesystems failed: {source}")]
    ListDatasets {
        /// The side.
        side: Side,
        /// The backend's error.
        source: ZfsError,
    },
    /// Listing the versions failed.
    #[error("cannot prune the {side}: listing the snapshots failed: {source}")]
    ListVersions {
        /// The side.
        side: Side,
        /// The backend's error.
        source: ZfsError,
    },
}

/// Why a planned snapshot was left out of the batch at the second check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// It no longer exists (someone else destroyed it).
    Gone,
    /// A snapshot of that name exists with another GUID: it was replaced.
    GuidChanged {
        /// The GUID now.
        now: Guid,
    },
    /// The replication cursor now points at it.
    NowCursor,
    /// It is now the newest snapshot.
    NowNewest,
    /// It is now needed by the running replication (its GUID is protected).
    NowProtected,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gone => f.write_str("not destroyed: it is already gone"),
            Self::GuidChanged { now } => write!(
                f,
                "not destroyed: the name now belongs to another snapshot (guid {now})"
            ),
            Self::NowCursor => f.write_str("not destroyed: it is now the replication cursor's"),
            Self::NowNewest => f.write_str("not destroyed: it is now the newest snapshot"),
            Self::NowProtected => f.write_str("not destroyed: the replication now needs it"),
        }
    }
}

/// A planned snapshot left out at the second check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dropped {
    /// The snapshot's short name.
    pub snapshot: Component,
    /// Its GUID when planned.
    pub guid: Guid,
    /// Why.
    pub reason: DropReason,
}

/// The second check's verdict on a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    /// What may be destroyed now, in batch order.
    pub destroy: Vec<Component>,
    /// What was left out, and why.
    pub dropped: Vec<Dropped>,
}

/// A batch that contains what the plan must keep: a bug in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The snapshot.
    pub snapshot: Component,
    /// Its GUID.
    pub guid: Guid,
    /// What it was.
    pub what: ViolatedRule,
}

/// How one filesystem's pruning ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilesystemOutcome {
    /// Not pruned, and not an error.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// Planned, not executed (a dry run): `destroy` of its `of` snapshots.
    Planned {
        /// How many the plan destroys.
        destroy: usize,
        /// How many snapshots the filesystem has.
        of: usize,
    },
    /// Executed without error: `destroyed` of the `of` planned.
    Done {
        /// How many were destroyed.
        destroyed: usize,
        /// How many were planned.
        of: usize,
    },
    /// Failed; pruning of the filesystem stopped at this error.
    Error {
        /// Why.
        error: FilesystemError,
        /// How many were destroyed before the error.
        destroyed: usize,
    },
}

/// One filesystem in a [`PruneReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilesystemReport {
    /// The filesystem.
    pub filesystem: DatasetName,
    /// How it ended.
    pub outcome: FilesystemOutcome,
    /// Snapshots the rules would destroy that the pruner kept.
    pub kept: Vec<KeptOverride>,
    /// Snapshots left out at the second check.
    pub dropped: Vec<Dropped>,
}

/// What pruning one side did, for status output; filesystems in execution order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PruneReport {
    /// Which side.
    pub side: Side,
    /// One entry per target filesystem.
    pub filesystems: Vec<FilesystemReport>,
    /// Errors that could not be counted because the counters are full.
    pub counters_full: Vec<CountersFull>,
}

impl PruneReport {
    /// How many filesystems were skipped.
    pub fn n_skipped(&self) -> usize {
        self.count(|o| matches!(o, FilesystemOutcome::Skipped { .. }))
    }

    /// How many filesystems were planned (dry run).
    pub fn n_planned(&self) -> usize {
        self.count(|o| matches!(o, FilesystemOutcome::Planned { .. }))
    }

    /// How many filesystems were pruned without error.
    pub fn n_done(&self) -> usize {
        self.count(|o| matches!(o, FilesystemOutcome::Done { .. }))
    }

    /// How many filesystems failed.
    pub fn n_errors(&self) -> usize {
        self.count(|o| matches!(o, FilesystemOutcome::Error { .. }))
    }

    /// How many snapshots were destroyed in all.
    pub fn n_destroyed(&self) -> usize {
        self.filesystems
            .iter()
            .map(|f| match &f.outcome {
                FilesystemOutcome::Done { destroyed, .. }
                | FilesystemOutcome::Error { destroyed, .. } => *destroyed,
                FilesystemOutcome::Skipped { .. } | FilesystemOutcome::Planned { .. } => 0,
            })
            .sum()
    }

    /// The entry of `filesystem`.
    pub fn filesystem(&self, filesystem: &DatasetName) -> Option<&FilesystemReport> {
        self.filesystems
            .iter()
            .find(|f| &f.filesystem == filesystem)
    }

    fn count(&self, pred: impl Fn(&FilesystemOutcome) -> bool) -> usize {
        self.filesystems.iter().filter(|f| pred(&f.outcome)).count()
    }
}

impl fmt::Display for PruneReport {
    /// One line per filesystem, then one indented line per kept or dropped snapshot.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} pruning: {} done, {} skipped, {} failed, {} snapshot(s) destroyed",
            self.side,
            self.n_done() + self.n_planned(),
            self.n_skipped(),
            self.n_errors(),
            self.n_destroyed()
        )?;
        for fs in &self.filesystems {
            match &fs.outcome {
                FilesystemOutcome::Skipped { reason } => {
                    writeln!(f, "  {}: skipped: {reason}", fs.filesystem)?;
                }
                FilesystemOutcome::Planned { destroy, of } => {
                    writeln!(f, "  {}: would destroy {destroy} of {of}", fs.filesystem)?;
                }
                FilesystemOutcome::Done { destroyed, of } => {
                    writeln!(f, "  {}: destroyed {destroyed} of {of}", fs.filesystem)?;
                }
                FilesystemOutcome::Error { error, .. } => {
                    writeln!(f, "  {}: error: {error}", fs.filesystem)?;
                }
            }
            for kept in &fs.kept {
                writeln!(f, "    @{}: {}", kept.snapshot, kept.reason)?;
            }
            for dropped in &fs.dropped {
                writeln!(f, "    @{}: {}", dropped.snapshot, dropped.reason)?;
            }
        }
        Ok(())
    }
}

impl SidePlan {
    /// The plan as a dry-run report: what would be destroyed, nothing executed.
    pub fn report(&self) -> PruneReport {
        let filesystems = self
            .filesystems
            .iter()
            .map(|planned| match planned {
                PlannedFilesystem::Skipped { filesystem, reason } => {
                    plain_report(filesystem, FilesystemOutcome::Skipped { reason: *reason })
                }
                PlannedFilesystem::Failed { filesystem, error } => plain_report(
                    filesystem,
                    FilesystemOutcome::Error {
                        error: error.clone(),
                        destroyed: 0,
                    },
                ),
                PlannedFilesystem::Batch(batch) => FilesystemReport {
                    filesystem: batch.filesystem.clone(),
                    outcome: FilesystemOutcome::Planned {
                        destroy: batch.destroy.len(),
                        of: batch.n_snapshots,
                    },
                    kept: batch.kept.clone(),
                    dropped: Vec::new(),
                },
            })
            .collect();
        PruneReport {
            side: self.side,
            filesystems,
            counters_full: Vec::new(),
        }
    }
}

/// Plans and executes the pruning of one side; see the module doc.
pub async fn prune_side(
    backend: &dyn ZfsBackend,
    request: &SideRequest<'_>,
    counters: &mut ErrorCounters,
) -> Result<PruneReport, SideError> {
    let plan = plan_side(backend, request, counters).await?;
    Ok(execute_side(backend, &plan, counters).await)
}

/// Plans the pruning of one side without changing anything: which filesystems are skipped,
/// which cannot be planned, and what each of the others destroys and keeps. Filesystems come
/// in [`prune_order`] of `counters`.
pub async fn plan_side(
    backend: &dyn ZfsBackend,
    request: &SideRequest<'_>,
    counters: &ErrorCounters,
) -> Result<SidePlan, SideError> {
    let side = request.side;
    let mut targets: Vec<DatasetName> = request
        .targets
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if targets.len() > PRUNE_TARGETS_MAX {
        return Err(SideError::TooManyTargets {
            side,
            n_targets: targets.len(),
            max: PRUNE_TARGETS_MAX,
        });
    }
    prune_order(&mut targets, counters);

    // Which targets exist and which are (maybe) placeholders: one listing under their common
    // ancestor.
    let listed = list_under_common_root(backend, &targets)
        .await
        .map_err(|source| SideError::ListDatasets { side, source })?;
    let placeholder_values: BTreeMap<&DatasetName, Option<&str>> = listed
        .iter()
        .map(|e| (&e.name, e.properties.first().map(String::as_str)))
        .collect();

    let mut early: BTreeMap<DatasetName, PlannedFilesystem> = BTreeMap::new();
    let mut to_list: Vec<DatasetName> = Vec::new();
    for fs in &targets {
        if let Cursors::Given(given) = request.cursors
            && !given.contains_key(fs)
        {
            early.insert(
                fs.clone(),
                skipped(fs, SkipReason::NoCorrespondenceOnSender),
            );
            continue;
        }
        match placeholder_values.get(fs) {
            None => {
                early.insert(fs.clone(), skipped(fs, SkipReason::DoesNotExist));
            }
            Some(Some(PLACEHOLDER_ON)) => match is_local_placeholder(backend, fs).await {
                Ok(true) => {
                    early.insert(fs.clone(), skipped(fs, SkipReason::Placeholder));
                }
                Ok(false) => to_list.push(fs.clone()),
                Err(source) => {
                    let error = FilesystemError::PlaceholderCheck {
                        filesystem: fs.clone(),
                        source,
                    };
                    early.insert(
                        fs.clone(),
                        PlannedFilesystem::Failed {
                            filesystem: fs.clone(),
                            error,
                        },
                    );
                }
            },
            Some(_) => to_list.push(fs.clone()),
        }
    }

    let listing = if to_list.is_empty() {
        Default::default()
    } else {
        backend
            .list_versions(&to_list, VersionTypes::All)
            .await
            .map_err(|source| SideError::ListVersions { side, source })?
    };

    let mut filesystems = Vec::with_capacity(targets.len());
    for fs in &targets {
        if let Some(planned) = early.remove(fs) {
            filesystems.push(planned);
            continue;
        }
        let versions = listing.versions(fs);
        let cursor = match request.cursors {
            Cursors::FromBookmarks(job) => cursor_from_bookmarks(versions, job),
            Cursors::Given(given) => given.get(fs).copied().unwrap_or(ReplicationCursor::Missing),
            Cursors::NoReplication => ReplicationCursor::Unknown,
        };
        filesystems.push(plan_one(
            fs,
            versions,
            request.rules,
            cursor,
            request.protected,
        ));
    }
    Ok(SidePlan {
        side,
        cursor_job: match request.cursors {
            Cursors::FromBookmarks(job) => Some(job.clone()),
            Cursors::Given(_) | Cursors::NoReplication => None,
        },
        protected: request.protected.clone(),
        filesystems,
    })
}

/// Executes a side's plan in its order: per filesystem the second check, then one batched
/// destroy; errors end that filesystem's pruning and raise its counter, success resets it.
///
/// # Panics
///
/// Under `cfg(test)` or `debug_assertions`, when a batch contains a snapshot the plan must keep
/// (see the module doc); a release build fails that filesystem instead.
pub async fn execute_side(
    backend: &dyn ZfsBackend,
    plan: &SidePlan,
    counters: &mut ErrorCounters,
) -> PruneReport {
    let mut report = PruneReport {
        side: plan.side,
        filesystems: Vec::with_capacity(plan.filesystems.len()),
        counters_full: Vec::new(),
    };
    for planned in &plan.filesystems {
        let entry = match planned {
            PlannedFilesystem::Skipped { filesystem, reason } => {
                plain_report(filesystem, FilesystemOutcome::Skipped { reason: *reason })
            }
            PlannedFilesystem::Failed { filesystem, error } => plain_report(
                filesystem,
                FilesystemOutcome::Error {
                    error: error.clone(),
                    destroyed: 0,
                },
            ),
            PlannedFilesystem::Batch(batch) => execute_batch(backend, plan, batch).await,
        };
        match &entry.outcome {
            FilesystemOutcome::Error { .. } => {
                if let Err(full) = counters.record_error(&entry.filesystem) {
                    report.counters_full.push(full);
                }
            }
            FilesystemOutcome::Done { .. } => counters.reset(&entry.filesystem),
            FilesystemOutcome::Skipped { .. } | FilesystemOutcome::Planned { .. } => {}
        }
        report.filesystems.push(entry);
    }
    report
}

/// The second check of one batch against the filesystem's versions as listed right before the
/// destroy; `cursor_now` is the cursor's GUID as read again (sender side) or as planned.
/// `Err` means the batch itself is wrong (see the module doc); `Ok` holds what may still be
/// destroyed and what was left out because the world changed.
pub fn recheck_batch(
    batch: &FilesystemBatch,
    now: &[Version],
    cursor_now: Option<Guid>,
    protected: &Protected,
) -> Result<Recheck, Violation> {
    for candidate in &batch.destroy {
        let what = if protected.contains(&(batch.filesystem.clone(), candidate.guid)) {
            Some(ViolatedRule::Protected)
        } else if batch.cursor == Some(candidate.guid) {
            Some(ViolatedRule::Cursor)
        } else if batch.newest == Some(candidate.guid) {
            Some(ViolatedRule::Newest)
        } else {
            None
        };
        if let Some(what) = what {
            return Err(Violation {
                snapshot: candidate.snapshot.clone(),
                guid: candidate.guid,
                what,
            });
        }
    }
    let snapshots: BTreeMap<&Component, &Version> = now
        .iter()
        .filter(|v| v.is_snapshot())
        .map(|v| (&v.name, v))
        .collect();
    let newest_now = now
        .iter()
        .filter(|v| v.is_snapshot())
        .max_by(|a, b| a.cmp_by_createtxg(b))
        .map(|v| v.guid);
    let mut recheck = Recheck {
        destroy: Vec::with_capacity(batch.destroy.len()),
        dropped: Vec::new(),
    };
    for candidate in &batch.destroy {
        let reason = match snapshots.get(&candidate.snapshot) {
            None => Some(DropReason::Gone),
            Some(v) if v.guid != candidate.guid => Some(DropReason::GuidChanged { now: v.guid }),
            Some(_) if cursor_now == Some(candidate.guid) => Some(DropReason::NowCursor),
            Some(_) if newest_now == Some(candidate.guid) => Some(DropReason::NowNewest),
            Some(_) => None,
        };
        match reason {
            Some(reason) => recheck.dropped.push(Dropped {
                snapshot: candidate.snapshot.clone(),
                guid: candidate.guid,
                reason,
            }),
            None => recheck.destroy.push(candidate.snapshot.clone()),
        }
    }
    Ok(recheck)
}

/// Turns the rules' verdicts for one listed filesystem into its batch (the first check).
pub fn plan_one(
    filesystem: &DatasetName,
    versions: &[Version],
    rules: &KeepRules,
    cursor: ReplicationCursor,
    protected: &Protected,
) -> PlannedFilesystem {
    let plan = match plan_filesystem(filesystem, versions, rules, cursor) {
        Ok(plan) => plan,
        Err(e) => {
            return PlannedFilesystem::Failed {
                filesystem: filesystem.clone(),
                error: e.into(),
            };
        }
    };
    let cursor = match cursor {
        ReplicationCursor::At(guid) => Some(guid),
        ReplicationCursor::Missing | ReplicationCursor::Unknown => None,
    };
    let newest = plan.snapshots.last().map(|s| s.version.guid);
    let mut batch = FilesystemBatch {
        filesystem: filesystem.clone(),
        cursor,
        newest,
        n_snapshots: plan.snapshots.len(),
        destroy: Vec::new(),
        kept: Vec::new(),
    };
    for planned in plan.destroyed() {
        let guid = planned.version.guid;
        let reason = if protected.contains(&(filesystem.clone(), guid)) {
            Some(KeptReason::NeededByReplication)
        } else if cursor == Some(guid) {
            Some(KeptReason::ReplicationCursor)
        } else if newest == Some(guid) {
            Some(KeptReason::Newest)
        } else {
            None
        };
        let snapshot = planned.version.name.clone();
        match reason {
            Some(reason) => batch.kept.push(KeptOverride {
                snapshot,
                guid,
                reason,
            }),
            None => batch.destroy.push(DestroyCandidate { snapshot, guid }),
        }
    }
    PlannedFilesystem::Batch(batch)
}

/// The deepest dataset that is an ancestor of (or equal to) every one of `datasets`; `None`
/// when they are in different pools or there are none.
pub fn common_root(datasets: &[DatasetName]) -> Option<DatasetName> {
    let (first, rest) = datasets.split_first()?;
    let mut root = first.clone();
    for dataset in rest {
        while !(root == *dataset || root.is_ancestor_of(dataset)) {
            root = root.parent()?;
        }
    }
    Some(root)
}

async fn execute_batch(
    backend: &dyn ZfsBackend,
    plan: &SidePlan,
    batch: &FilesystemBatch,
) -> FilesystemReport {
    let fs = &batch.filesystem;
    let mut entry = FilesystemReport {
        filesystem: fs.clone(),
        outcome: FilesystemOutcome::Done {
            destroyed: 0,
            of: batch.destroy.len(),
        },
        kept: batch.kept.clone(),
        dropped: Vec::new(),
    };
    if batch.destroy.is_empty() {
        return entry;
    }
    let fail = |entry: &mut FilesystemReport, error, destroyed| {
        entry.outcome = FilesystemOutcome::Error { error, destroyed };
    };
    let now = match backend
        .list_versions(std::slice::from_ref(fs), VersionTypes::All)
        .await
    {
        Ok(listing) => listing.versions(fs).to_vec(),
        Err(source) => {
            let error = FilesystemError::Relist {
                filesystem: fs.clone(),
                source,
            };
            fail(&mut entry, error, 0);
            return entry;
        }
    };
    let cursor_now = match &plan.cursor_job {
        Some(job) => match cursor_from_bookmarks(&now, job) {
            ReplicationCursor::At(guid) => Some(guid),
            ReplicationCursor::Missing | ReplicationCursor::Unknown => None,
        },
        None => batch.cursor,
    };
    let recheck = match recheck_batch(batch, &now, cursor_now, &plan.protected) {
        Ok(recheck) => recheck,
        Err(violation) => {
            let error = FilesystemError::PlanViolated {
                filesystem: fs.clone(),
                snapshot: violation.snapshot,
                guid: violation.guid,
                what: violation.what,
            };
            // The assertion of the second check: in tests and debug builds a plan that wants
            // to destroy what it must keep is a bug to find, not a state to survive.
            #[cfg(any(test, debug_assertions))]
            panic!("{error}");
            #[cfg(not(any(test, debug_assertions)))]
            {
                fail(&mut entry, error, 0);
                return entry;
            }
        }
    };
    entry.dropped = recheck.dropped;
    if recheck.destroy.is_empty() {
        return entry;
    }
    let outcomes = match backend.destroy_snapshots(fs, &recheck.destroy).await {
        Ok(outcomes) => outcomes,
        Err(source) => {
            let error = FilesystemError::DestroyCall {
                filesystem: fs.clone(),
                n_snapshots: recheck.destroy.len(),
                source,
            };
            fail(&mut entry, error, 0);
            return entry;
        }
    };
    let destroyed = outcomes.iter().filter(|o| o.result.is_ok()).count();
    match outcomes.iter().find_map(|o| {
        o.result
            .as_ref()
            .err()
            .map(|kind| (o.snapshot.clone(), kind.clone()))
    }) {
        Some((snapshot, kind)) => {
            let error = FilesystemError::Destroy {
                filesystem: fs.clone(),
                snapshot,
                kind,
                n_destroyed: destroyed,
            };
            fail(&mut entry, error, destroyed);
        }
        None => {
            entry.outcome = FilesystemOutcome::Done {
                destroyed,
                of: batch.destroy.len(),
            };
        }
    }
    entry
}

/// The datasets with their placeholder property under the targets' [`common_root`]. A root
/// that does not exist (the targets' parent was destroyed) is no error: its nearest existing
/// ancestor is listed instead, at most one call per level of the root's depth, and finally
/// all pools.
async fn list_under_common_root(
    backend: &dyn ZfsBackend,
    targets: &[DatasetName],
) -> Result<Vec<DatasetEntry>, ZfsError> {
    let mut root = common_root(targets);
    loop {
        match backend
            .list_datasets(root.as_ref(), &[PLACEHOLDER_PROPERTY])
            .await
        {
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => match root {
                Some(missing) => root = missing.parent(),
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Whether `zrepl:placeholder` of `filesystem` is `on` and set locally (zrepl's rule).
pub(crate) async fn is_local_placeholder(
    backend: &dyn ZfsBackend,
    filesystem: &DatasetName,
) -> Result<bool, ZfsError> {
    let properties = backend
        .get_properties(&filesystem.clone().into(), &[PLACEHOLDER_PROPERTY])
        .await?;
    Ok(properties
        .get(PLACEHOLDER_PROPERTY)
        .is_some_and(|p| p.value == PLACEHOLDER_ON && p.source == PropertySource::Local))
}

fn skipped(filesystem: &DatasetName, reason: SkipReason) -> PlannedFilesystem {
    PlannedFilesystem::Skipped {
        filesystem: filesystem.clone(),
        reason,
    }
}

fn plain_report(filesystem: &DatasetName, outcome: FilesystemOutcome) -> FilesystemReport {
    FilesystemReport {
        filesystem: filesystem.clone(),
        outcome,
        kept: Vec::new(),
        dropped: Vec::new(),
    }
}

fn busy_hint(kind: &ZfsErrorKind, filesystem: &DatasetName, snapshot: &Component) -> String {
    if *kind == ZfsErrorKind::Busy {
        format!(" (`zfs holds {filesystem}@{snapshot}` shows who holds it)")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests;
