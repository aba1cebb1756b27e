//! The active side of a job (`push` and `pull`): it decides everything. Each *invocation*
//! connects to both endpoints, replicates, and prunes the sender and the receiver.
//!
//! # When an invocation runs
//!
//! - `push`: after every snapshotter round of the job (even a partly failed one), passed in as
//!   [`Trigger::Snapshots`];
//! - `pull`: every `interval` ([`Trigger::Interval`]); a tick that comes while an invocation
//!   runs is kept as exactly one pending run (zrepl logs "pull job took longer than pull
//!   interval" and does the same);
//! - both: on a wakeup signal ([`JobSignals::wakeup`]). A wakeup during an invocation is kept
//!   (one), not dropped as zrepl drops it, so that a user's "replicate now" is never lost.
//!
//! A reset signal ([`JobSignals::reset`]) cancels the running invocation; shutdown
//! ([`JobSignals::shutdown`]) cancels it and ends the loop. Cancelling drops the phase's future,
//! which aborts its tasks and streams.
//!
//! # Pruning alongside replication
//!
//! zrepl runs replication, then sender pruning, then receiver pruning, because its RPC could not
//! do two things at once and pruning could destroy a snapshot a running step needs (seed 001's
//! "dirty hack"). zferry tells the pruner which snapshots the replication plan still needs (the
//! `from`, intermediates and `to` of every pending step, [`ReplicationReport::protected`]) and
//! the pruner never destroys them. With [`PruneMode::Concurrent`] (the default) pruning starts
//! as soon as every filesystem is planned and runs while the steps run; if replication fails
//! before it has a plan, pruning falls back to zrepl's order and runs after it. With
//! [`PruneMode::Sequential`] it is always zrepl's order. The invocation report says which ran.
//!
//! # The watchdog
//!
//! Every phase is watched: each `watchdog_interval` the job reads the phase's progress (a
//! replication report that changed while not in an error state is progress; see
//! [`crate::watchdog`]) and cancels the phase when [`verdict`] says so, keeping the reason in
//! the report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::endpoint::{EndpointError, PruneCursors, PruneReq, Receiver, Sender};
use crate::engine::pruner::PruneReport;
use crate::engine::replication::report::{ReplicationReport, ReportHandle};
use crate::engine::replication::{DriverConfig, Replication, RunOutcome};
use crate::engine::snapper::{RoundDone, SnapshotterReport};
use crate::job_id::JobId;
use crate::prune::KeepRules;
use crate::watchdog::{
    NewSnapshots, Phase, PhaseState, Progress, Timestamp as WatchTime, Transition, Verdict,
    WatchdogInput, verdict,
};

/// zrepl's `ZREPL_JOB_WATCHDOG_TIMEOUT`: how long a phase may go without progress.
pub const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How often the watchdog looks.
pub const WATCHDOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often concurrent pruning checks whether replication has its plan.
pub const PLAN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The most invocation reports a job keeps.
pub const INVOCATIONS_KEPT_MAX: usize = 8;

/// How pruning is ordered with replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneMode {
    /// Pruning runs while the replication steps run, protecting what they need.
    #[default]
    Concurrent,
    /// zrepl's order: replicate, then prune the sender, then the receiver.
    Sequential,
}

/// What ended the job loop's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    Shutdown,
    Wakeup,
    Trigger,
}

/// What starts an invocation besides a wakeup.
#[derive(Debug)]
pub enum Trigger {
    /// Push: each message is a finished snapshotter round.
    Snapshots(tokio::sync::mpsc::Receiver<RoundDone>),
    /// Pull: a fixed interval.
    Interval(Duration),
    /// Only wakeups.
    Manual,
}

/// The configuration of an active job.
#[derive(Debug, Clone)]
pub struct ActiveJobConfig {
    /// The job's name.
    pub name: JobId,
    /// Replication.
    pub driver: DriverConfig,
    /// `pruning.keep_sender`.
    pub keep_sender: KeepRules,
    /// `pruning.keep_receiver`.
    pub keep_receiver: KeepRules,
    /// Pruning alongside or after replication.
    pub prune_mode: PruneMode,
    /// How long a phase may go without progress.
    pub watchdog_timeout: Duration,
    /// How often the watchdog looks.
    pub watchdog_interval: Duration,
}

impl ActiveJobConfig {
    /// A configuration with zrepl's defaults for everything but the name and the rules.
    pub fn new(name: JobId, keep_sender: KeepRules, keep_receiver: KeepRules) -> Self {
        Self {
            name,
            driver: DriverConfig::default(),
            keep_sender,
            keep_receiver,
            prune_mode: PruneMode::default(),
            watchdog_timeout: WATCHDOG_TIMEOUT,
            watchdog_interval: WATCHDOG_INTERVAL,
        }
    }
}

/// How an active job reaches its two endpoints, once per invocation.
#[async_trait]
pub trait Connect: Send + Sync + std::fmt::Debug {
    /// Connects to both sides; one of them is usually local.
    async fn connect(&self) -> Result<(Arc<dyn Sender>, Arc<dyn Receiver>), EndpointError>;
}

/// The signals of a job, shared with whoever controls it (the control socket, tests).
#[derive(Debug, Clone)]
pub struct JobSignals {
    wakeup: Arc<Notify>,
    reset: Arc<Notify>,
    shutdown: watch::Sender<bool>,
}

impl Default for JobSignals {
    fn default() -> Self {
        Self {
            wakeup: Arc::new(Notify::new()),
            reset: Arc::new(Notify::new()),
            shutdown: watch::Sender::new(false),
        }
    }
}

impl JobSignals {
    /// Asks for an invocation now (or right after the running one).
    pub fn wakeup(&self) {
        self.wakeup.notify_one();
    }

    /// Cancels the running invocation, if any.
    pub fn reset(&self) {
        // Only a running invocation is reset; a reset while idle must not cancel the next
        // one, so no permit is stored (as zrepl: "already reset" when nothing runs).
        self.reset.notify_waiters();
    }

    /// Ends the job's loop, cancelling what runs.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver of the shutdown flag, for the job's other tasks (its snapshotter).
    pub fn subscribe_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// How a phase of an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "detail")]
pub enum PhaseOutcome {
    /// Not run (yet).
    NotRun,
    /// Ran to its end without error.
    Done,
    /// Ran to its end with errors.
    Failed(String),
    /// Cancelled (watchdog, reset, shutdown); the reason.
    Cancelled(String),
}

/// One invocation of an active job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InvocationReport {
    /// 1 for the first invocation of the job.
    pub number: u64,
    /// When it started.
    pub started: jiff::Timestamp,
    /// When it ended, if it did.
    pub finished: Option<jiff::Timestamp>,
    /// Connecting to the endpoints failed.
    pub connect_error: Option<String>,
    /// Replication.
    pub replication: PhaseOutcome,
    /// Which order pruning ran in: concurrent, or sequential (configured or as a fallback).
    pub prune_order: String,
    /// Sender-side pruning.
    pub prune_sender: PhaseOutcome,
    /// Receiver-side pruning.
    pub prune_receiver: PhaseOutcome,
    /// The last sender-side pruning report.
    #[serde(skip)]
    pub prune_sender_report: Option<PruneReport>,
    /// The last receiver-side pruning report.
    #[serde(skip)]
    pub prune_receiver_report: Option<PruneReport>,
}

/// An active job's status: its invocations and the live replication report.
#[derive(Debug, Clone, Default)]
pub struct ActiveJobStatus {
    /// Recent invocations, oldest first (at most [`INVOCATIONS_KEPT_MAX`]).
    pub invocations: Vec<InvocationReport>,
    /// Replication of the current (or last) invocation.
    pub replication: ReplicationReport,
}

/// A push or pull job.
#[derive(Debug)]
pub struct ActiveJob {
    config: ActiveJobConfig,
    connect: Arc<dyn Connect>,
    clock: Arc<dyn Clock>,
    signals: JobSignals,
    replication_report: ReportHandle,
    invocations: Arc<Mutex<Vec<InvocationReport>>>,
    /// The local snapshotter's report (push), for the watchdog's "new snapshots" rule.
    snapshotter: Option<watch::Receiver<SnapshotterReport>>,
}

impl ActiveJob {
    /// A job; nothing runs until [`ActiveJob::run`].
    pub fn new(config: ActiveJobConfig, connect: Arc<dyn Connect>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            connect,
            clock,
            signals: JobSignals::default(),
            replication_report: ReportHandle::default(),
            invocations: Arc::new(Mutex::new(Vec::new())),
            snapshotter: None,
        }
    }

    /// Lets the watchdog see the local snapshotter's rounds (push jobs): a phase in an error
    /// state is cancelled when a new round finished meanwhile (see [`crate::watchdog`]).
    pub fn with_snapshotter(mut self, report: watch::Receiver<SnapshotterReport>) -> Self {
        self.snapshotter = Some(report);
        self
    }

    fn rounds_done(&self) -> u64 {
        self.snapshotter.as_ref().map_or(0, |r| r.borrow().n_rounds)
    }

    /// The job's signals.
    pub fn signals(&self) -> JobSignals {
        self.signals.clone()
    }

    /// The job's status now.
    pub fn status(&self) -> ActiveJobStatus {
        ActiveJobStatus {
            invocations: self.invocations_lock().clone(),
            replication: self.replication_report.snapshot(),
        }
    }

    fn invocations_lock(&self) -> std::sync::MutexGuard<'_, Vec<InvocationReport>> {
        self.invocations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update_invocation(&self, f: impl FnOnce(&mut InvocationReport)) {
        if let Some(last) = self.invocations_lock().last_mut() {
            f(last);
        }
    }

    /// The job's loop: waits for a trigger or a wakeup, runs an invocation, until shutdown.
    pub async fn run(&self, mut trigger: Trigger) {
        let mut shutdown = self.signals.shutdown.subscribe();
        let mut number = 0u64;
        let mut next_tick = match &trigger {
            Trigger::Interval(_) => Some(tokio::time::Instant::now()),
            _ => None,
        };
        loop {
            if self.signals.is_shutdown() {
                return;
            }
            let woken = tokio::select! {
                biased;
                _ = shutdown.changed() => Woken::Shutdown,
                _ = self.signals.wakeup.notified() => Woken::Wakeup,
                _ = next_trigger(&mut trigger, next_tick) => Woken::Trigger,
            };
            if woken == Woken::Shutdown || self.signals.is_shutdown() {
                return;
            }
            if let (Woken::Trigger, Trigger::Interval(every), Some(tick)) =
                (woken, &trigger, next_tick.as_mut())
            {
                // The next tick is one interval after this one, or now if we are late (a run
                // that took longer than the interval leaves exactly one run pending). A wakeup
                // does not move the schedule.
                *tick = (*tick + *every).max(tokio::time::Instant::now());
            }
            number += 1;
            let finished = tokio::select! {
                biased;
                _ = shutdown.changed() => false,
                () = self.invocation(number) => true,
            };
            if !finished {
                self.update_invocation(|i| {
                    cancel_unfinished(i, "the daemon is shutting down");
                    i.finished = Some(self.clock.now());
                });
                return;
            }
        }
    }

    /// One invocation: connect, replicate, prune (see the module doc). Cancelled by a reset.
    pub async fn invocation(&self, number: u64) {
        {
            let mut invocations = self.invocations_lock();
            if invocations.len() >= INVOCATIONS_KEPT_MAX {
                invocations.remove(0);
            }
            invocations.push(InvocationReport {
                number,
                started: self.clock.now(),
                finished: None,
                connect_error: None,
                replication: PhaseOutcome::NotRun,
                prune_order: String::new(),
                prune_sender: PhaseOutcome::NotRun,
                prune_receiver: PhaseOutcome::NotRun,
                prune_sender_report: None,
                prune_receiver_report: None,
            });
        }
        let reset = self.signals.reset.notified();
        tokio::select! {
            biased;
            () = reset => {
                self.update_invocation(|i| cancel_unfinished(i, "reset by signal"));
            }
            () = self.invocation_body() => {}
        }
        self.update_invocation(|i| i.finished = Some(self.clock.now()));
    }

    async fn invocation_body(&self) {
        let (sender, receiver) = match self.connect.connect().await {
            Ok(pair) => pair,
            Err(e) => {
                self.update_invocation(|i| i.connect_error = Some(e.to_string()));
                return;
            }
        };
        let replication = Replication::new(
            Arc::clone(&sender),
            Arc::clone(&receiver),
            self.config.driver.clone(),
            self.replication_report.clone(),
        );
        // The report shows this invocation's run from here on, before either branch below
        // looks at it.
        self.replication_report.update(|r| {
            r.state = crate::engine::replication::report::RunState::Running;
            r.attempts.clear();
            r.stop_reason = None;
        });
        match self.config.prune_mode {
            PruneMode::Sequential => {
                self.update_invocation(|i| i.prune_order = "sequential (configured)".to_owned());
                self.replicate_watched(&replication).await;
                self.prune_both(&sender, &receiver).await;
            }
            PruneMode::Concurrent => {
                let replicate = self.replicate_watched(&replication);
                let prune = async {
                    let planned = wait_for_plan(&self.replication_report).await;
                    if planned == Planned::Incremental {
                        self.update_invocation(|i| i.prune_order = "concurrent".to_owned());
                        self.prune_both(&sender, &receiver).await;
                    }
                    planned
                };
                let ((), planned) = tokio::join!(replicate, prune);
                let fallback = match planned {
                    Planned::Incremental => None,
                    Planned::WithInitial => Some(
                        "sequential (fallback: an initial replication makes the first cursor,                          which pruning needs)",
                    ),
                    Planned::Not => {
                        Some("sequential (fallback: replication ended before it had a plan)")
                    }
                };
                if let Some(order) = fallback {
                    self.update_invocation(|i| i.prune_order = order.to_owned());
                    self.prune_both(&sender, &receiver).await;
                }
            }
        }
    }

    async fn replicate_watched(&self, replication: &Replication) {
        let report = self.replication_report.clone();
        let outcome = self
            .watched(Phase::Replicating, replication.run(), move || {
                let r = report.snapshot();
                let state = if r.has_error() {
                    PhaseState::Error
                } else {
                    PhaseState::MakingProgress
                };
                (r.progress_mark, state)
            })
            .await;
        let phase = match outcome {
            Ok(RunOutcome::Done) => PhaseOutcome::Done,
            Ok(RunOutcome::Failed { reason }) => PhaseOutcome::Failed(reason),
            Err(reason) => PhaseOutcome::Cancelled(reason),
        };
        self.update_invocation(|i| i.replication = phase);
    }

    async fn prune_both(&self, sender: &Arc<dyn Sender>, receiver: &Arc<dyn Receiver>) {
        let filesystems = match sender.list_filesystems().await {
            Ok(list) => list
                .into_iter()
                .filter(|f| !f.is_placeholder)
                .map(|f| f.path)
                .collect::<Vec<_>>(),
            Err(e) => {
                let text = format!("listing the sender's filesystems: {e}");
                self.update_invocation(|i| {
                    i.prune_sender = PhaseOutcome::Failed(text.clone());
                    i.prune_receiver = PhaseOutcome::Failed(text);
                });
                return;
            }
        };
        let protected = self.replication_report.snapshot().protected();
        let request = PruneReq {
            filesystems: filesystems.clone(),
            rules: self.config.keep_sender.clone(),
            cursors: PruneCursors::Own,
            protected: protected.clone(),
        };
        let outcome = self
            .watched(Phase::PruningSender, sender.prune(&request), || {
                (0, PhaseState::MakingProgress)
            })
            .await;
        let (phase, report) = prune_outcome(outcome);
        self.update_invocation(|i| {
            i.prune_sender = phase;
            i.prune_sender_report = report;
        });

        let cursors = match sender.replication_cursors(&filesystems).await {
            Ok(c) => c,
            Err(e) => {
                let text = format!("asking the sender for its replication cursors: {e}");
                self.update_invocation(|i| i.prune_receiver = PhaseOutcome::Failed(text));
                return;
            }
        };
        let request = PruneReq {
            filesystems,
            rules: self.config.keep_receiver.clone(),
            cursors: PruneCursors::Given(cursors),
            protected,
        };
        let outcome = self
            .watched(Phase::PruningReceiver, receiver.prune(&request), || {
                (0, PhaseState::MakingProgress)
            })
            .await;
        let (phase, report) = prune_outcome(outcome);
        self.update_invocation(|i| {
            i.prune_receiver = phase;
            i.prune_receiver_report = report;
        });
    }

    /// Runs `work` under the watchdog; `Err(reason)` when it was cancelled.
    async fn watched<T>(
        &self,
        phase: Phase,
        work: impl Future<Output = T>,
        progress: impl Fn() -> (u64, PhaseState),
    ) -> Result<T, String> {
        let start = tokio::time::Instant::now();
        let since_start = |now: tokio::time::Instant| {
            WatchTime::from_duration(now.saturating_duration_since(start))
        };
        let mut tracker = Progress::new(WatchTime::EPOCH);
        let rounds_at_start = self.rounds_done();
        let (mut last_mark, mut last_state) = progress();
        let mut ticker =
            tokio::time::interval(self.config.watchdog_interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return Ok(out),
                _ = ticker.tick() => {
                    let now = since_start(tokio::time::Instant::now());
                    let (mark, state) = progress();
                    if mark != last_mark {
                        tracker.made_progress(Transition { from: last_state, to: state }, now);
                    }
                    last_mark = mark;
                    last_state = state;
                    let input = WatchdogInput {
                        phase,
                        state,
                        last_progress: tracker.last(),
                        now,
                        timeout: self.config.watchdog_timeout,
                        new_snapshots: if self.rounds_done() > rounds_at_start {
                            NewSnapshots::Arrived
                        } else {
                            NewSnapshots::NotArrived
                        },
                    };
                    if let Verdict::Cancel { reason } = verdict(&input) {
                        return Err(reason.to_string());
                    }
                }
            }
        }
    }
}

fn prune_outcome(
    outcome: Result<Result<PruneReport, EndpointError>, String>,
) -> (PhaseOutcome, Option<PruneReport>) {
    match outcome {
        Ok(Ok(report)) => {
            let n_errors = report.n_errors();
            if n_errors == 0 {
                (PhaseOutcome::Done, Some(report))
            } else {
                (
                    PhaseOutcome::Failed(format!(
                        "{n_errors} filesystem{} could not be pruned",
                        if n_errors == 1 { "" } else { "s" }
                    )),
                    Some(report),
                )
            }
        }
        Ok(Err(e)) => (PhaseOutcome::Failed(e.to_string()), None),
        Err(reason) => (PhaseOutcome::Cancelled(reason), None),
    }
}

fn cancel_unfinished(i: &mut InvocationReport, why: &str) {
    for phase in [
        &mut i.replication,
        &mut i.prune_sender,
        &mut i.prune_receiver,
    ] {
        if *phase == PhaseOutcome::NotRun {
            *phase = PhaseOutcome::Cancelled(why.to_owned());
        }
    }
}

/// What concurrent pruning learnt about the replication plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planned {
    /// Every filesystem is planned and none needs an initial replication: prune now.
    Incremental,
    /// Some filesystem's plan starts with a full send: its first cursor appears only when that
    /// step is confirmed, and sender pruning without a cursor fails, so prune afterwards.
    WithInitial,
    /// Replication ended without a plan (listing failed): prune afterwards.
    Not,
}

/// Waits until the current attempt has planned every filesystem, or the run ended without a
/// plan.
async fn wait_for_plan(report: &ReportHandle) -> Planned {
    use crate::engine::replication::report::{FilesystemState, RunState};
    loop {
        let r = report.snapshot();
        if let Some(attempt) = r.attempt()
            && matches!(r.state, RunState::Running | RunState::Done)
            && !attempt.filesystems.is_empty()
            && attempt
                .filesystems
                .values()
                .all(|f| f.state != FilesystemState::Planning)
        {
            let initial = attempt
                .filesystems
                .values()
                .any(|f| f.steps.iter().any(|s| s.full));
            return if initial {
                Planned::WithInitial
            } else {
                Planned::Incremental
            };
        }
        match r.state {
            RunState::Done | RunState::Failed => return Planned::Not,
            _ => {}
        }
        tokio::time::sleep(PLAN_POLL_INTERVAL).await;
    }
}

async fn next_trigger(trigger: &mut Trigger, next_tick: Option<tokio::time::Instant>) {
    match trigger {
        Trigger::Snapshots(rounds) => match rounds.recv().await {
            Some(_round) => {}
            // The snapshotter is gone: only wakeups remain.
            None => std::future::pending().await,
        },
        Trigger::Interval(_) => {
            if let Some(at) = next_tick {
                tokio::time::sleep_until(at).await;
            }
        }
        Trigger::Manual => std::future::pending().await,
    }
}
