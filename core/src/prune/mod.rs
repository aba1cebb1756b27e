//! Pruning: which snapshots of one filesystem the keep rules destroy.
//!
//! zrepl's semantics, decided as a pure function:
//!
//! - Each rule names the snapshots it keeps. A snapshot is destroyed only if *every* rule would
//!   destroy it; with no rules nothing is destroyed. Bookmarks are never candidates.
//! - The `replicated` attribute that `not_replicated` reads comes from the sender's replication
//!   cursor: its GUID is looked up in the target's snapshots sorted by createtxg; strictly older
//!   snapshots are replicated, newer ones are not, and the cursor's own snapshot is replicated
//!   only if some `not_replicated` rule sets `keep_snapshot_at_cursor: false`.
//! - A filesystem without a cursor, or whose snapshots do not include the cursor's GUID, is not
//!   pruned at all: that is an error for that filesystem, never a silent "keep all" or
//!   "destroy all".
//!
//! The verdicts do not depend on the order of the input: every tie is broken by name.
//!
//! Entry points: [`plan_filesystem`] for a listed filesystem and a cursor, [`decide`] for
//! snapshots whose `replicated` attribute is already known.

mod grid;
mod rules;

pub use grid::{
    DurationUnit, GRID_GROUPS_MAX, GRID_SPAN_SECONDS_MAX, GRID_SPEC_LEN_MAX_BYTES, GridDuration,
    GridGroup, GridGroupError, GridKeep, GridSpec, GridSpecError,
};
pub use rules::{
    GridRule, KEEP_RULES_MAX, KeepRule, KeepRules, LastNRule, NotReplicatedRule, Pattern,
    PatternError, REGEX_COMPILED_BYTES_MAX, REGEX_LEN_MAX_BYTES, RegexRule, RuleKind, RulesError,
};

use std::collections::BTreeSet;

use serde::Serialize;

use crate::abstraction::Abstraction;
use crate::job_id::JobId;
use crate::name::{Component, DatasetName};
use crate::version::{Guid, Version, sort_by_createtxg};

/// One snapshot as the keep rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneSnapshot {
    /// The short name after `@`; regexes match against it.
    pub name: Component,
    /// Creation time, Unix seconds.
    pub creation_unix: i64,
    /// Whether the snapshot has been replicated (see the module doc).
    pub replicated: bool,
}

/// What the rules decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The snapshot stays.
    Keep(KeepReason),
    /// Every rule would destroy it.
    Destroy,
}

/// Why a snapshot stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// There are no rules, and no rules destroy nothing.
    NoRules,
    /// These rules keep it: indexes into [`KeepRules::rules`], ascending, never empty.
    KeptBy(Vec<usize>),
}

/// How the sender's replication cursor for a filesystem is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationCursor {
    /// The cursor bookmark records the snapshot with this GUID.
    At(Guid),
    /// The sender was asked and has no cursor for this filesystem: nothing was replicated yet
    /// (or the cursor was destroyed, as `guarantee_nothing` does).
    Missing,
    /// Nobody asked (an offline dry run): fine as long as no rule reads `replicated`.
    Unknown,
}

/// Why a filesystem cannot be pruned. Each error concerns one filesystem only; the others are
/// pruned as usual, and retrying without a change on the pools gives the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneError {
    /// The sender has no replication cursor for the filesystem.
    #[error(
        "`{dataset}` is not pruned: the sender has no replication cursor for it, so it cannot \
         tell replicated snapshots from new ones; pruning starts after the first successful \
         replication"
    )]
    CursorMissing {
        /// The filesystem.
        dataset: DatasetName,
    },
    /// A rule reads `replicated` but no cursor was given.
    #[error(
        "`{dataset}` is not pruned: a `not_replicated` rule needs the sender's replication \
         cursor to tell replicated snapshots from new ones, and none was given"
    )]
    CursorUnknown {
        /// The filesystem.
        dataset: DatasetName,
    },
    /// No snapshot of the filesystem has the cursor's GUID.
    #[error(
        "`{dataset}` is not pruned: none of its snapshots has guid {guid}, the snapshot the \
         sender's replication cursor points at (it was destroyed here, or this is not the \
         filesystem the sender replicates to); the next successful replication moves the cursor"
    )]
    CursorNotOnTarget {
        /// The filesystem.
        dataset: DatasetName,
        /// The cursor's GUID.
        guid: Guid,
    },
    /// Two snapshots share a name, which a listing of one filesystem never has.
    #[error("`{dataset}` is not pruned: the snapshot `@{name}` is listed twice")]
    DuplicateSnapshot {
        /// The filesystem.
        dataset: DatasetName,
        /// The repeated name.
        name: Component,
    },
}

/// The verdicts for one filesystem's snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemPlan {
    /// The filesystem.
    pub dataset: DatasetName,
    /// Its snapshots (bookmarks are not candidates) in createtxg order, each with a verdict.
    pub snapshots: Vec<PlannedSnapshot>,
}

/// One snapshot of a [`FilesystemPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSnapshot {
    /// The snapshot as listed.
    pub version: Version,
    /// Its `replicated` attribute; `None` when the cursor was [`ReplicationCursor::Unknown`].
    pub replicated: Option<bool>,
    /// The rules' verdict.
    pub verdict: Verdict,
}

impl FilesystemPlan {
    /// The snapshots to destroy, in createtxg order.
    pub fn destroyed(&self) -> impl Iterator<Item = &PlannedSnapshot> {
        self.snapshots
            .iter()
            .filter(|s| s.verdict == Verdict::Destroy)
    }
}

impl KeepRules {
    /// The verdict as a user reads it: `destroy`, `keep (last_n, grid)` or
    /// `keep (no keep rules)`.
    pub fn describe(&self, verdict: &Verdict) -> String {
        match verdict {
            Verdict::Destroy => "destroy".to_owned(),
            Verdict::Keep(KeepReason::NoRules) => "keep (no keep rules)".to_owned(),
            Verdict::Keep(KeepReason::KeptBy(indexes)) => {
                let labels: Vec<String> = indexes.iter().map(|i| self.label(*i)).collect();
                format!("keep ({})", labels.join(", "))
            }
        }
    }
}

/// Decides, for each of `snapshots`, whether the rules keep it; the result is aligned with the
/// input. Order-independent: the same set in any order gets the same verdicts.
pub fn decide(rules: &KeepRules, snapshots: &[PruneSnapshot]) -> Vec<Verdict> {
    if rules.is_empty() {
        return vec![Verdict::Keep(KeepReason::NoRules); snapshots.len()];
    }
    let mut kept_by: Vec<Vec<usize>> = vec![Vec::new(); snapshots.len()];
    for (rule_index, rule) in rules.rules().iter().enumerate() {
        let keeps = keeps(rule, snapshots);
        debug_assert_eq!(keeps.len(), snapshots.len());
        for (snapshot_index, kept) in keeps.into_iter().enumerate() {
            if kept {
                kept_by[snapshot_index].push(rule_index);
            }
        }
    }
    kept_by
        .into_iter()
        .map(|by| {
            if by.is_empty() {
                Verdict::Destroy
            } else {
                Verdict::Keep(KeepReason::KeptBy(by))
            }
        })
        .collect()
}

/// Which of `snapshots` one rule keeps, aligned with the input.
pub fn keeps(rule: &KeepRule, snapshots: &[PruneSnapshot]) -> Vec<bool> {
    match rule {
        KeepRule::Regex(r) => snapshots
            .iter()
            .map(|s| r.regex.is_match(s.name.as_str()) != r.negate)
            .collect(),
        KeepRule::NotReplicated(_) => snapshots.iter().map(|s| !s.replicated).collect(),
        KeepRule::LastN(r) => keeps_last_n(r, snapshots),
        KeepRule::Grid(r) => keeps_grid(r, snapshots),
    }
}

fn matches(pattern: Option<&Pattern>, snapshot: &PruneSnapshot) -> bool {
    pattern.is_none_or(|p| p.is_match(snapshot.name.as_str()))
}

fn keeps_last_n(rule: &LastNRule, snapshots: &[PruneSnapshot]) -> Vec<bool> {
    let mut matching: Vec<usize> = (0..snapshots.len())
        .filter(|i| matches(rule.regex.as_ref(), &snapshots[*i]))
        .collect();
    // Newest first; in the same second the greater name first (zrepl's tie-break); the
    // `replicated` flag last only to make the order total.
    matching.sort_by(|a, b| {
        let (a, b) = (&snapshots[*a], &snapshots[*b]);
        (b.creation_unix, &b.name, b.replicated).cmp(&(a.creation_unix, &a.name, a.replicated))
    });
    let count = usize::try_from(rule.count.get()).unwrap_or(usize::MAX);
    let mut kept = vec![false; snapshots.len()];
    for index in matching.into_iter().take(count) {
        kept[index] = true;
    }
    kept
}

fn keeps_grid(rule: &GridRule, snapshots: &[PruneSnapshot]) -> Vec<bool> {
    let matching: Vec<usize> = (0..snapshots.len())
        .filter(|i| rule.regex.is_match(snapshots[*i].name.as_str()))
        .collect();
    let entries: Vec<(i64, &str)> = matching
        .iter()
        .map(|i| (snapshots[*i].creation_unix, snapshots[*i].name.as_str()))
        .collect();
    let mut kept = vec![false; snapshots.len()];
    for (index, keep) in matching.into_iter().zip(rule.grid.keeps(&entries)) {
        kept[index] = keep;
    }
    kept
}

/// The `replicated` attribute of each snapshot in `snapshots`, which must be sorted by
/// createtxg (bookmarks may be mixed in; they are skipped and get no entry): `None` if no
/// snapshot has the cursor's GUID.
pub fn replicated_flags(
    snapshots: &[Version],
    cursor: Guid,
    cursor_snapshot_counts_as_replicated: bool,
) -> Option<Vec<bool>> {
    let snapshots = || snapshots.iter().filter(|v| v.is_snapshot());
    let at = snapshots().position(|v| v.guid == cursor)?;
    Some(
        snapshots()
            .enumerate()
            .map(|(i, _)| i < at || (i == at && cursor_snapshot_counts_as_replicated))
            .collect(),
    )
}

/// The replication cursor `job` left among `versions`, the sender's versions of one filesystem:
/// the GUID of its newest cursor bookmark (highest createtxg, then greatest name), as zrepl's
/// `ReplicationCursor` answers, or [`ReplicationCursor::Missing`]. Tentative cursors, legacy v1
/// cursors, other jobs' cursors and bookmarks whose name does not match their GUID do not count.
pub fn cursor_from_bookmarks(versions: &[Version], job: &JobId) -> ReplicationCursor {
    versions
        .iter()
        .filter(|v| !v.is_snapshot())
        .filter_map(
            |v| match Abstraction::parse_bookmark(v.name.as_str(), v.guid).ours() {
                Some(Abstraction::ReplicationCursor { job: owner, guid }) if &owner == job => {
                    Some((v.createtxg, &v.name, guid))
                }
                _ => None,
            },
        )
        .max()
        .map_or(ReplicationCursor::Missing, |(_, _, guid)| {
            ReplicationCursor::At(guid)
        })
}

/// Plans the pruning of one filesystem: its listed versions (any order; bookmarks are ignored),
/// the rules, and what is known of the sender's replication cursor.
pub fn plan_filesystem(
    dataset: &DatasetName,
    versions: &[Version],
    rules: &KeepRules,
    cursor: ReplicationCursor,
) -> Result<FilesystemPlan, PruneError> {
    let mut snapshots: Vec<Version> = versions
        .iter()
        .filter(|v| v.is_snapshot())
        .cloned()
        .collect();
    sort_by_createtxg(&mut snapshots);
    let mut names = BTreeSet::new();
    for snapshot in &snapshots {
        if !names.insert(&snapshot.name) {
            return Err(PruneError::DuplicateSnapshot {
                dataset: dataset.clone(),
                name: snapshot.name.clone(),
            });
        }
    }
    let replicated: Vec<Option<bool>> = match cursor {
        ReplicationCursor::Missing => {
            return Err(PruneError::CursorMissing {
                dataset: dataset.clone(),
            });
        }
        ReplicationCursor::Unknown if rules.reads_replicated() => {
            return Err(PruneError::CursorUnknown {
                dataset: dataset.clone(),
            });
        }
        ReplicationCursor::Unknown => vec![None; snapshots.len()],
        ReplicationCursor::At(guid) => replicated_flags(
            &snapshots,
            guid,
            rules.cursor_snapshot_counts_as_replicated(),
        )
        .ok_or_else(|| PruneError::CursorNotOnTarget {
            dataset: dataset.clone(),
            guid,
        })?
        .into_iter()
        .map(Some)
        .collect(),
    };
    let candidates: Vec<PruneSnapshot> = snapshots
        .iter()
        .zip(&replicated)
        .map(|(v, r)| PruneSnapshot {
            name: v.name.clone(),
            creation_unix: v.creation_unix,
            // Unknown only when no rule reads it; "not replicated" is the side that keeps.
            replicated: r.unwrap_or(false),
        })
        .collect();
    let verdicts = decide(rules, &candidates);
    let snapshots = snapshots
        .into_iter()
        .zip(replicated)
        .zip(verdicts)
        .map(|((version, replicated), verdict)| PlannedSnapshot {
            version,
            replicated,
            verdict,
        })
        .collect();
    Ok(FilesystemPlan {
        dataset: dataset.clone(),
        snapshots,
    })
}

#[cfg(test)]
mod tests;
