//! What the replication driver shows at every moment: the run, its attempts, each filesystem's
//! state, step i of n, bytes expected and replicated, and the last error.
//!
//! The driver writes into a [`ReportHandle`]; status reads a [`ReplicationReport`] copy from it
//! at any time. The lock is never held across an `.await`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::name::DatasetName;
use crate::version::Guid;

/// The most attempts a report keeps (older ones are dropped from the front); bounds the report
/// of a daemon that runs for years.
pub const REPORT_ATTEMPTS_MAX: usize = 16;

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// No run yet.
    Idle,
    /// An attempt is running.
    Running,
    /// Waiting for the connection to come back before the next attempt.
    WaitingForReconnect,
    /// The run ended; every filesystem is up to date.
    Done,
    /// The run ended with errors (see the attempts).
    Failed,
}

/// The state of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptState {
    /// Listing the filesystems of both sides.
    Planning,
    /// Listing failed; nothing was replicated.
    PlanningError,
    /// Filesystems are being planned and replicated.
    FanOutFilesystems,
    /// Every filesystem ended; at least one with an error.
    FilesystemError,
    /// An error ended the whole attempt (connectivity, cancellation).
    AttemptError,
    /// Every filesystem is up to date.
    Done,
}

/// The state of one filesystem within an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilesystemState {
    /// Waiting to be planned, or being planned.
    Planning,
    /// Planning failed; the filesystem is not replicated in this run.
    PlanningError,
    /// Running its steps.
    Stepping,
    /// A step failed and the filesystem waits for another try.
    RetryWait,
    /// A step failed for good in this run.
    StepError,
    /// Up to date.
    Done,
    /// Stopped because the whole attempt ended.
    Cancelled,
}

impl FilesystemState {
    /// Whether the filesystem has finished (with or without success) in this attempt.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::PlanningError | Self::StepError | Self::Done | Self::Cancelled
        )
    }

    /// Whether the state is an error state (for the watchdog).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::PlanningError | Self::RetryWait | Self::StepError | Self::Cancelled
        )
    }
}

/// What a filesystem waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockedOn {
    /// Nothing: it works, or it is finished.
    Nothing,
    /// A slot to plan in.
    PlanQueue,
    /// Its parent's initial replication.
    ParentInitialReplication,
    /// A slot to run its next step in.
    StepQueue,
    /// The back-off before another try.
    Backoff,
}

/// The state of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Sending and receiving.
    Running,
    /// Received and confirmed.
    Done,
    /// Failed.
    Failed,
}

/// One step of a filesystem's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// The step as the planner prints it (`@a -> @b`, `full @a`, ...).
    pub description: String,
    /// Whether it is a full send (the filesystem's initial replication: no cursor yet).
    pub full: bool,
    /// The GUIDs of its `from` (if any) and `to`, which pruning must keep while it is pending.
    #[serde(skip)]
    pub guids: Vec<Guid>,
    /// Its state.
    pub state: StepState,
    /// The size the sender expects, if it can tell.
    pub bytes_expected: Option<u64>,
    /// Bytes streamed so far.
    pub bytes_replicated: u64,
}

/// One filesystem within an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesystemReport {
    /// Its state.
    pub state: FilesystemState,
    /// What it waits for.
    pub blocked_on: BlockedOn,
    /// Its steps in order; empty before planning and when up to date.
    pub steps: Vec<StepReport>,
    /// The index of the step running or next to run (= `steps.len()` when all are done).
    pub current_step: usize,
    /// Consecutive errors in this attempt.
    pub n_errors: u32,
    /// Notes about how it was planned (e.g. a discarded resume token).
    pub notes: Vec<String>,
    /// The last error, as a user reads it.
    pub last_error: Option<String>,
}

impl FilesystemReport {
    fn new() -> Self {
        Self {
            state: FilesystemState::Planning,
            blocked_on: BlockedOn::PlanQueue,
            steps: Vec::new(),
            current_step: 0,
            n_errors: 0,
            notes: Vec::new(),
            last_error: None,
        }
    }

    /// Bytes expected over all steps whose size is known.
    pub fn bytes_expected(&self) -> u64 {
        self.steps.iter().filter_map(|s| s.bytes_expected).sum()
    }

    /// Bytes streamed over all steps.
    pub fn bytes_replicated(&self) -> u64 {
        self.steps.iter().map(|s| s.bytes_replicated).sum()
    }
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptReport {
    /// 1 for the first attempt of the run.
    pub number: u32,
    /// Its state.
    pub state: AttemptState,
    /// The error that ended the attempt (listing, connectivity), if any.
    pub error: Option<String>,
    /// The filesystems, by sender-side path.
    pub filesystems: BTreeMap<DatasetName, FilesystemReport>,
}

/// The replication report of a job: the current (or last) run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationReport {
    /// The run's state.
    pub state: RunState,
    /// Its attempts, oldest first (at most [`REPORT_ATTEMPTS_MAX`]).
    pub attempts: Vec<AttemptReport>,
    /// Why the run stopped, when it failed.
    pub stop_reason: Option<String>,
    /// Counts every change of state and every chunk of bytes; the watchdog compares it to
    /// see whether the run makes progress.
    #[serde(skip)]
    pub progress_mark: u64,
}

impl Default for ReplicationReport {
    fn default() -> Self {
        Self {
            state: RunState::Idle,
            attempts: Vec::new(),
            stop_reason: None,
            progress_mark: 0,
        }
    }
}

impl ReplicationReport {
    /// The current attempt.
    pub fn attempt(&self) -> Option<&AttemptReport> {
        self.attempts.last()
    }

    /// Whether any filesystem of the current attempt is in an error state.
    pub fn has_error(&self) -> bool {
        self.attempt().is_some_and(|a| {
            a.error.is_some() || a.filesystems.values().any(|f| f.state.is_error())
        })
    }

    /// The snapshots pending steps still need, as (sender-side path, GUID): the `from`, the
    /// intermediates and the `to` of every step not yet done.
    pub fn protected(&self) -> Vec<(DatasetName, Guid)> {
        let mut out = Vec::new();
        if let Some(attempt) = self.attempt() {
            for (fs, report) in &attempt.filesystems {
                if report.state.is_final() && report.state != FilesystemState::Cancelled {
                    continue;
                }
                for step in &report.steps {
                    if step.state != StepState::Done {
                        out.extend(step.guids.iter().map(|g| (fs.clone(), *g)));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl fmt::Display for ReplicationReport {
    /// A compact, human-readable rendering for logs and the demo.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replication: {:?}", self.state)?;
        if let Some(reason) = &self.stop_reason {
            write!(f, " ({reason})")?;
        }
        writeln!(f)?;
        let Some(attempt) = self.attempt() else {
            return Ok(());
        };
        writeln!(f, "  attempt {}: {:?}", attempt.number, attempt.state)?;
        if let Some(error) = &attempt.error {
            writeln!(f, "    error: {error}")?;
        }
        for (fs, r) in &attempt.filesystems {
            write!(
                f,
                "    {fs}: {:?} step {}/{} ({} of {} bytes)",
                r.state,
                r.current_step.min(r.steps.len()),
                r.steps.len(),
                r.bytes_replicated(),
                r.bytes_expected()
            )?;
            if r.blocked_on != BlockedOn::Nothing {
                write!(f, " waiting for {:?}", r.blocked_on)?;
            }
            writeln!(f)?;
            if let Some(e) = &r.last_error {
                writeln!(f, "      last error: {e}")?;
            }
        }
        Ok(())
    }
}

/// Shared access to a report: the driver writes, status reads.
#[derive(Debug, Clone, Default)]
pub struct ReportHandle(Arc<Mutex<ReplicationReport>>);

impl ReportHandle {
    /// A copy of the report as it is now.
    pub fn snapshot(&self) -> ReplicationReport {
        self.lock().clone()
    }

    /// Runs `f` on the report. A poisoned lock (a panic elsewhere while writing) still yields
    /// the report: it is status, not a decision input.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut ReplicationReport) -> R) -> R {
        let mut guard = self.lock();
        guard.progress_mark = guard.progress_mark.wrapping_add(1);
        f(&mut guard)
    }

    /// Runs `f` on the current attempt's report of `fs`, if there is one.
    pub(crate) fn update_fs(&self, fs: &DatasetName, f: impl FnOnce(&mut FilesystemReport)) {
        self.update(|r| {
            if let Some(report) = r
                .attempts
                .last_mut()
                .and_then(|a| a.filesystems.get_mut(fs))
            {
                f(report);
            }
        });
    }

    pub(crate) fn new_attempt(&self, number: u32) {
        self.update(|r| {
            if r.attempts.len() >= REPORT_ATTEMPTS_MAX {
                r.attempts.remove(0);
            }
            r.attempts.push(AttemptReport {
                number,
                state: AttemptState::Planning,
                error: None,
                filesystems: BTreeMap::new(),
            });
        });
    }

    pub(crate) fn add_filesystem(&self, fs: &DatasetName) {
        self.update(|r| {
            if let Some(a) = r.attempts.last_mut() {
                a.filesystems.insert(fs.clone(), FilesystemReport::new());
            }
        });
    }

    pub(crate) fn set_attempt(&self, state: AttemptState, error: Option<String>) {
        self.update(|r| {
            if let Some(a) = r.attempts.last_mut() {
                a.state = state;
                if error.is_some() {
                    a.error = error;
                }
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, ReplicationReport> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
