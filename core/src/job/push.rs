//! A `push` job: the snapshotter on the sending side wakes the active job after each round
//! (zrepl's wiring), and the watchdog sees the rounds.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::backend::ZfsBackend;
use crate::clock::Clock;
use crate::engine::snapper::{HookRunner, Snapshotter, SnapshotterReport, Snapshotting};
use crate::filter::Filter;
use crate::job::active::{ActiveJob, ActiveJobConfig, Connect, Trigger};

/// A push job: its snapshotter and its active side.
#[derive(Debug)]
pub struct PushJob {
    job: Arc<ActiveJob>,
    snapshotter: Snapshotter,
    rounds: mpsc::Receiver<crate::engine::snapper::RoundDone>,
    snapshotter_report: watch::Receiver<SnapshotterReport>,
}

/// What a push job snapshots.
#[derive(Debug, Clone)]
pub struct PushSnapshotting {
    /// The sending pool's backend.
    pub backend: Arc<dyn ZfsBackend>,
    /// The hook runner.
    pub hooks: Arc<dyn HookRunner>,
    /// The job's filesystems.
    pub filter: Filter,
    /// The `snapshotting:` section.
    pub snapshotting: Snapshotting,
}

impl PushJob {
    /// A push job; nothing runs until [`PushJob::run`].
    pub fn new(
        config: ActiveJobConfig,
        connect: Arc<dyn Connect>,
        clock: Arc<dyn Clock>,
        snapshotting: PushSnapshotting,
    ) -> Self {
        // Room for one notice: a round that finishes while one is pending merges into it.
        let (tx, rounds) = mpsc::channel(1);
        let snapshotter = Snapshotter::new(
            snapshotting.backend,
            Arc::clone(&clock),
            snapshotting.hooks,
            snapshotting.filter,
            snapshotting.snapshotting,
            Some(tx),
        );
        let snapshotter_report = snapshotter.subscribe();
        let job = Arc::new(
            ActiveJob::new(config, connect, clock).with_snapshotter(snapshotter.subscribe()),
        );
        Self {
            job,
            snapshotter,
            rounds,
            snapshotter_report,
        }
    }

    /// The active side (signals, status).
    pub fn active(&self) -> Arc<ActiveJob> {
        Arc::clone(&self.job)
    }

    /// The snapshotter's report.
    pub fn snapshotter_report(&self) -> watch::Receiver<SnapshotterReport> {
        self.snapshotter_report.clone()
    }

    /// Runs the snapshotter and the replication loop until the job's shutdown signal.
    pub async fn run(self) {
        let Self {
            job,
            snapshotter,
            rounds,
            ..
        } = self;
        let shutdown = job.signals().subscribe_shutdown();
        tokio::join!(
            snapshotter.run(shutdown),
            job.run(Trigger::Snapshots(rounds))
        );
    }
}
