//! The snap job (zrepl's `type: snap`): the snapshotter plus local pruning after every round.
//!
//! ```yaml
//! - type: snap
//!   name: local
//!   filesystems: {"tank<": true}
//!   snapshotting: {type: periodic, prefix: zrepl_, interval: 15m}
//!   pruning:
//!     keep:
//!       - type: grid
//!         grid: 1x1h(keep=all) | 24x1h | 14x1d
//!         regex: "^zrepl_"
//! ```
//!
//! After every snapshot round, even a partly failed one, and on every wakeup
//! ([`SnapJobHandle::wakeup`]), the job prunes the filesystems its filter accepts with
//! `pruning.keep`, on a fresh listing. A wakeup does not take snapshots, as in zrepl.
//!
//! # No replication cursor
//!
//! A snap job replicates nothing, so nothing is "replicated". zrepl fakes a replication cursor
//! with the newest version's GUID, which fails pruning when that version is a bookmark (its
//! quirk 11) and would tell a `not_replicated` rule that every older snapshot is replicated.
//! zferry says what is true instead: the pruner runs with [`Cursors::NoReplication`], and a
//! `not_replicated` rule is refused when the config is loaded (zrepl refuses it too, with
//! "single-site pruner cannot support `not_replicated` keep rule"). The pruner still never
//! destroys a filesystem's newest snapshot.
//!
//! # Wakeups
//!
//! zrepl delivers a wakeup only while the job is idle and drops it otherwise ("already woken
//! up", quirk 9). Here one wakeup can wait while the job prunes, so that a wakeup sent during
//! a run is not lost; a second one finds that one pending ([`WakeupError::AlreadyPending`]).
//!
//! # Shutdown
//!
//! [`SnapJob::run`] stops when its `watch<bool>` reads `true` or its sender is dropped: the
//! snapshotter as [`Snapshotter::run`] documents (a round in progress is finished), and a
//! pruning run in progress is abandoned at its next backend call (each destroy is atomic;
//! the next start prunes again from a fresh listing).

use std::sync::Arc;

use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::backend::{ZfsBackend, ZfsError};
use crate::clock::Clock;
use crate::engine::pruner::{
    Cursors, Protected, PruneReport, Side, SideError, SideRequest, prune_side,
};
use crate::engine::snapper::{
    HookRunner, RoundDone, Snapshotter, SnapshotterReport, Snapshotting, SnapshottingConfig,
    SnapshottingConfigError, matching_filesystems,
};
use crate::filter::Filter;
use crate::job_id::JobId;
use crate::prune::{KeepRule, KeepRules};
use crate::queue::ErrorCounters;

/// A `type: snap` job as written in the config (without its `type` key, which the caller's
/// job-type dispatch consumes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapJobConfig {
    /// `name`.
    pub name: JobId,
    /// `filesystems`: what to snapshot and prune.
    pub filesystems: Filter,
    /// `snapshotting`.
    pub snapshotting: SnapshottingConfig,
    /// `pruning`.
    pub pruning: SnapPruningConfig,
}

/// `pruning:` of a snap job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapPruningConfig {
    /// `keep`: the keep rules of the local filesystems.
    pub keep: KeepRules,
}

/// Why a snap job's config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapJobConfigError {
    /// The `snapshotting:` section is refused.
    #[error("job `{job}`: {source}")]
    Snapshotting {
        /// The job.
        job: JobId,
        /// Why (boxed: the error is large and config errors are rare).
        source: Box<SnapshottingConfigError>,
    },
    /// A `not_replicated` keep rule in a job that does not replicate.
    #[error(
        "job `{job}`: pruning.keep[{index}]: a snap job does not replicate, so no snapshot is \
         ever \"replicated\" and a `not_replicated` rule cannot work; remove it (to keep recent \
         snapshots, use `last_n` or `grid`)"
    )]
    NotReplicatedRule {
        /// The job.
        job: JobId,
        /// The rule's position in `keep`, from 0.
        index: usize,
    },
}

/// A validated snap job.
#[derive(Debug, Clone)]
pub struct SnapJobSpec {
    /// The job's name.
    pub name: JobId,
    /// What to snapshot and prune.
    pub filesystems: Filter,
    /// When and how to snapshot.
    pub snapshotting: Snapshotting,
    /// The keep rules.
    pub keep: KeepRules,
}

impl SnapJobConfig {
    /// Validates the job: the snapshotting section, and no `not_replicated` rule.
    pub fn build(&self) -> Result<SnapJobSpec, SnapJobConfigError> {
        if let Some(index) = self
            .pruning
            .keep
            .rules()
            .iter()
            .position(|r| matches!(r, KeepRule::NotReplicated(_)))
        {
            return Err(SnapJobConfigError::NotReplicatedRule {
                job: self.name.clone(),
                index,
            });
        }
        let snapshotting =
            self.snapshotting
                .build()
                .map_err(|source| SnapJobConfigError::Snapshotting {
                    job: self.name.clone(),
                    source: Box::new(source),
                })?;
        Ok(SnapJobSpec {
            name: self.name.clone(),
            filesystems: self.filesystems.clone(),
            snapshotting,
            keep: self.pruning.keep.clone(),
        })
    }
}

/// What started a pruning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneTrigger {
    /// A snapshot round finished.
    Round,
    /// A wakeup.
    Wakeup,
}

/// Why a pruning run failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapPruneError {
    /// Listing the filesystems to prune failed.
    #[error("cannot list the filesystems to prune: {0}; the next round tries again")]
    List(ZfsError),
    /// The pruner could not prune the side.
    #[error(transparent)]
    Side(SideError),
}

/// One pruning run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRun {
    /// What started it.
    pub trigger: PruneTrigger,
    /// When it started.
    pub started_at: Timestamp,
    /// When it finished.
    pub finished_at: Timestamp,
    /// What it did, per filesystem, or why it could not start.
    pub result: Result<PruneReport, SnapPruneError>,
}

/// The job's pruning, for status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruningStatus {
    /// Whether a run is in progress (and since when).
    pub running_since: Option<Timestamp>,
    /// How many runs finished.
    pub n_runs: u64,
    /// The last finished run.
    pub last: Option<PruneRun>,
}

/// What a status command shows of a snap job.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapJobReport {
    /// The job.
    pub name: JobId,
    /// The snapshotter.
    pub snapshotter: SnapshotterReport,
    /// The pruning.
    pub pruning: PruningStatus,
}

/// Why a wakeup was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WakeupError {
    /// A wakeup is already waiting to be handled.
    #[error("the job already has a wakeup pending; it prunes once more when it gets to it")]
    AlreadyPending,
    /// The job is not running.
    #[error("the job is not running")]
    NotRunning,
}

/// A handle to a snap job for its report and wakeups; cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapJobHandle {
    name: JobId,
    wakeup: mpsc::Sender<()>,
    snapshotter: watch::Receiver<SnapshotterReport>,
    pruning: watch::Receiver<PruningStatus>,
}

impl SnapJobHandle {
    /// Asks the job to prune now (zrepl's `zrepl signal wakeup`); does not take snapshots.
    pub fn wakeup(&self) -> Result<(), WakeupError> {
        self.wakeup.try_send(()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => WakeupError::AlreadyPending,
            mpsc::error::TrySendError::Closed(()) => WakeupError::NotRunning,
        })
    }

    /// The job's report as of now.
    pub fn report(&self) -> SnapJobReport {
        SnapJobReport {
            name: self.name.clone(),
            snapshotter: self.snapshotter.borrow().clone(),
            pruning: self.pruning.borrow().clone(),
        }
    }
}

/// A snap job, ready to run.
#[derive(Debug)]
pub struct SnapJob {
    spec: SnapJobSpec,
    backend: Arc<dyn ZfsBackend>,
    clock: Arc<dyn Clock>,
    snapshotter: Snapshotter,
    rounds: mpsc::Receiver<RoundDone>,
    wakeups: mpsc::Receiver<()>,
    handle: SnapJobHandle,
    pruning: watch::Sender<PruningStatus>,
}

impl SnapJob {
    /// The job over `backend`, reading wall time from `clock` and running hooks with `hooks`.
    pub fn new(
        spec: SnapJobSpec,
        backend: Arc<dyn ZfsBackend>,
        clock: Arc<dyn Clock>,
        hooks: Arc<dyn HookRunner>,
    ) -> Self {
        // One pending notice or wakeup is enough: each means "prune once more".
        let (round_tx, rounds) = mpsc::channel(1);
        let (wakeup_tx, wakeups) = mpsc::channel(1);
        let snapshotter = Snapshotter::new(
            backend.clone(),
            clock.clone(),
            hooks,
            spec.filesystems.clone(),
            spec.snapshotting.clone(),
            Some(round_tx),
        );
        let (pruning, pruning_rx) = watch::channel(PruningStatus::default());
        let handle = SnapJobHandle {
            name: spec.name.clone(),
            wakeup: wakeup_tx,
            snapshotter: snapshotter.subscribe(),
            pruning: pruning_rx,
        };
        Self {
            spec,
            backend,
            clock,
            snapshotter,
            rounds,
            wakeups,
            handle,
            pruning,
        }
    }

    /// A handle for the report and wakeups.
    pub fn handle(&self) -> SnapJobHandle {
        self.handle.clone()
    }

    /// Runs the snapshotter and the pruning until shutdown (see the module doc).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Self {
            spec,
            backend,
            clock,
            snapshotter,
            mut rounds,
            mut wakeups,
            handle,
            pruning,
        } = self;
        // The job's own handle must not keep the wakeup channel open after the job ends.
        drop(handle);
        let pruner = Pruner {
            spec: &spec,
            backend: backend.as_ref(),
            clock: clock.as_ref(),
            status: &pruning,
        };
        tokio::join!(
            snapshotter.run(shutdown.clone()),
            pruner.run(&mut rounds, &mut wakeups, shutdown),
        );
        pruning.send_modify(|s| s.running_since = None);
    }
}

struct Pruner<'a> {
    spec: &'a SnapJobSpec,
    backend: &'a dyn ZfsBackend,
    clock: &'a dyn Clock,
    status: &'a watch::Sender<PruningStatus>,
}

impl Pruner<'_> {
    async fn run(
        &self,
        rounds: &mut mpsc::Receiver<RoundDone>,
        wakeups: &mut mpsc::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut counters = ErrorCounters::new();
        // Each turn waits for one trigger; it ends at shutdown.
        loop {
            let trigger = tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => return,
                Some(()) = wakeups.recv() => PruneTrigger::Wakeup,
                Some(_) = rounds.recv() => PruneTrigger::Round,
                else => {
                    // Neither a snapshotter nor a handle is left to trigger anything.
                    shutdown_requested(&mut shutdown).await;
                    return;
                }
            };
            tokio::select! {
                biased;
                () = shutdown_requested(&mut shutdown) => return,
                () = self.prune(trigger, &mut counters) => {}
            }
        }
    }

    async fn prune(&self, trigger: PruneTrigger, counters: &mut ErrorCounters) {
        let started_at = self.clock.now();
        self.status
            .send_modify(|s| s.running_since = Some(started_at));
        let result = self.prune_once(counters).await;
        let finished_at = self.clock.now();
        self.status.send_modify(|s| {
            s.running_since = None;
            s.n_runs += 1;
            s.last = Some(PruneRun {
                trigger,
                started_at,
                finished_at,
                result,
            });
        });
    }

    async fn prune_once(
        &self,
        counters: &mut ErrorCounters,
    ) -> Result<PruneReport, SnapPruneError> {
        let targets = matching_filesystems(self.backend, &self.spec.filesystems)
            .await
            .map_err(SnapPruneError::List)?;
        let protected = Protected::new();
        let request = SideRequest {
            // The snapshot-creating side is the sender side in zrepl's terms (`keep_sender`).
            side: Side::Sender,
            targets: &targets,
            rules: &self.spec.keep,
            cursors: Cursors::NoReplication,
            protected: &protected,
        };
        prune_side(self.backend, &request, counters)
            .await
            .map_err(SnapPruneError::Side)
    }
}

async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can ask any more, so that is a stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Job {
        Snap(SnapJobConfig),
    }

    fn build(yaml: &str) -> Result<SnapJobSpec, String> {
        let Job::Snap(config) = serde_saphyr::from_str::<Job>(yaml).map_err(|e| e.to_string())?;
        config.build().map_err(|e| e.to_string())
    }

    const JOB: &str = "type: snap
name: local
filesystems: {\"tank<\": true}
snapshotting: {type: periodic, prefix: zrepl_, interval: 15m}
pruning:
  keep:
    - type: grid
      grid: 1x1h(keep=all) | 24x1h | 14x1d
      regex: \"^zrepl_\"
";

    #[test]
    fn zrepls_snap_job_config_builds() {
        let spec = build(JOB).unwrap();
        assert_eq!(spec.name.as_str(), "local");
        assert_eq!(spec.keep.rules().len(), 1);
        assert!(matches!(spec.snapshotting, Snapshotting::Automatic(_)));
    }

    #[test]
    fn not_replicated_is_refused_with_a_reason() {
        let yaml = format!("{JOB}    - type: not_replicated\n");
        let e = build(&yaml).unwrap_err();
        assert!(e.contains("job `local`: pruning.keep[1]"), "{e}");
        assert!(e.contains("does not replicate"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_sections_are_refused() {
        let e = build(&format!("{JOB}interval: 10m\n")).unwrap_err();
        assert!(e.contains("interval"), "{e}");
        let e = build(&JOB.replace("prefix: zrepl_, ", "prefix: '', ")).unwrap_err();
        assert!(
            e.contains("job `local`: snapshotting: `prefix` must not be empty"),
            "{e}"
        );
    }
}
