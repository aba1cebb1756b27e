//! The watchdog's verdict: let the current phase of an invocation run on, or cancel it and say
//! why.
//!
//! An invocation of an active job runs three phases in order: replication, sender-side pruning,
//! receiver-side pruning. They cannot run in parallel (they work on the same snapshots), yet
//! pruning must run even when replication is stuck, or the sender fills up with snapshots. The
//! watchdog decides when to give up on a phase. It is a pure function of plain data: the engine
//! passes the time in, reads no clock here, and applies the verdict itself.
//!
//! # Rules, in order
//!
//! 1. **No progress**: a phase that has made no progress for `timeout` is cancelled, whatever
//!    its state ([`CancelReason::NoProgress`]).
//! 2. **New snapshots while still running** (zrepl's push-mode rule): when the snapshotter has
//!    finished a new round while the invocation still runs,
//!    - replication that is making progress runs on: initial replication may take longer than a
//!      snapshot interval, and cancelling it would never let it finish;
//!    - replication in an error state is cancelled ([`CancelReason::ReplicationFailing`]);
//!    - sender-side pruning is left alone: in push mode the sender is local and fails hard
//!      rather than retrying;
//!    - receiver-side pruning in an error state is cancelled
//!      ([`CancelReason::ReceiverPruningFailing`]); otherwise it runs on.
//!
//!    Pull jobs have no local snapshotter to report new rounds and pass
//!    [`NewSnapshots::NotArrived`].
//! 3. Otherwise the phase runs on.
//!
//! Every "run on" tolerates a temporary excess of snapshots; with timeouts much shorter than the
//! snapshot interval that excess stays small.
//!
//! # Progress
//!
//! [`Progress`] records progress only on a transition between two non-error states. A transition
//! into, out of or within an error state is not progress: if it were, a phase cycling through
//! fail, retry, fail would refresh the watchdog forever and never be cancelled (the live-lock
//! zrepl warns about).
//!
//! Cancel reasons render as sentences for status, so a user sees why a phase was cancelled
//! rather than a bare "context cancelled".

use std::fmt;
use std::time::Duration;

/// A point in monotonic time: the time since an arbitrary epoch chosen by the engine's clock
/// (process start, simulation start). Only differences between two timestamps of the same clock
/// mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// The clock's epoch.
    pub const EPOCH: Timestamp = Timestamp(Duration::ZERO);

    /// The timestamp `since_epoch` after the clock's epoch.
    pub const fn from_duration(since_epoch: Duration) -> Self {
        Self(since_epoch)
    }

    /// The time since the clock's epoch.
    pub const fn since_epoch(self) -> Duration {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// The phase an invocation of an active job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Replicating.
    Replicating,
    /// Pruning the sender.
    PruningSender,
    /// Pruning the receiver.
    PruningReceiver,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Replicating => "replication",
            Phase::PruningSender => "sender-side pruning",
            Phase::PruningReceiver => "receiver-side pruning",
        })
    }
}

/// The state of the current phase as its state machine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PhaseState {
    /// Working normally.
    MakingProgress,
    /// In an error state (failed, waiting to retry).
    Error,
}

/// Whether the snapshotter finished a new round since the invocation started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NewSnapshots {
    /// No new round yet (always so for pull jobs).
    NotArrived,
    /// A new round finished while the invocation still runs.
    Arrived,
}

/// Everything the verdict depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogInput {
    /// The current phase.
    pub phase: Phase,
    /// Its state.
    pub state: PhaseState,
    /// When it last made progress (see [`Progress`]).
    pub last_progress: Timestamp,
    /// The time now, from the same clock.
    pub now: Timestamp,
    /// How long a phase may go without progress.
    pub timeout: Duration,
    /// Whether new snapshots arrived meanwhile.
    pub new_snapshots: NewSnapshots,
}

/// The watchdog's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the phase run on.
    LetRun,
    /// Cancel the phase and move on to the next one.
    Cancel {
        /// Why, for status and logs.
        reason: CancelReason,
    },
}

/// Why the watchdog cancelled a phase. [`Display`](fmt::Display) renders the sentence status
/// shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The phase made no progress for longer than the timeout.
    NoProgress {
        /// The phase.
        phase: Phase,
        /// How long it went without progress.
        stalled: Duration,
        /// The timeout.
        timeout: Duration,
    },
    /// New snapshots arrived while replication was in an error state.
    ReplicationFailing,
    /// New snapshots arrived while receiver-side pruning was in an error state.
    ReceiverPruningFailing,
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::NoProgress {
                phase,
                stalled,
                timeout,
            } => write!(
                f,
                "cancelled {phase} by the watchdog: no progress for {}s (timeout {}s); \
                 see the job's log for the last error",
                stalled.as_secs(),
                timeout.as_secs()
            ),
            CancelReason::ReplicationFailing => f.write_str(
                "cancelled replication by the watchdog: new snapshots were taken while \
                 replication was failing; pruning runs now so the sender does not fill up, \
                 and replication retries on the next run",
            ),
            CancelReason::ReceiverPruningFailing => f.write_str(
                "cancelled receiver-side pruning by the watchdog: new snapshots were taken \
                 while it was failing; it retries on the next run",
            ),
        }
    }
}

/// Decides whether the current phase runs on; see the module doc for the rules.
pub fn verdict(input: &WatchdogInput) -> Verdict {
    let stalled = input.now.saturating_duration_since(input.last_progress);
    if stalled >= input.timeout {
        let reason = CancelReason::NoProgress {
            phase: input.phase,
            stalled,
            timeout: input.timeout,
        };
        return Verdict::Cancel { reason };
    }
    if input.new_snapshots == NewSnapshots::NotArrived {
        return Verdict::LetRun;
    }
    match (input.phase, input.state) {
        (Phase::Replicating, PhaseState::Error) => Verdict::Cancel {
            reason: CancelReason::ReplicationFailing,
        },
        (Phase::PruningReceiver, PhaseState::Error) => Verdict::Cancel {
            reason: CancelReason::ReceiverPruningFailing,
        },
        (Phase::Replicating | Phase::PruningReceiver, PhaseState::MakingProgress)
        | (Phase::PruningSender, _) => Verdict::LetRun,
    }
}

/// A state transition of a phase's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// The state left.
    pub from: PhaseState,
    /// The state entered.
    pub to: PhaseState,
}

impl Transition {
    /// Whether this transition is progress: both states are non-error states.
    pub fn is_progress(self) -> bool {
        self.from == PhaseState::MakingProgress && self.to == PhaseState::MakingProgress
    }
}

/// Whether [`Progress::made_progress`] recorded the transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recorded {
    /// The transition was progress; the time of the last progress moved to now.
    Yes,
    /// The transition involved an error state; the time of the last progress is unchanged.
    No,
}

/// The time of a phase's last progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    last: Timestamp,
}

impl Progress {
    /// A tracker for a phase that started at `started` (the start counts as progress).
    pub fn new(started: Timestamp) -> Self {
        Self { last: started }
    }

    /// Called right before a state transition of the phase; records `now` as the time of the
    /// last progress only if the transition is progress (see [`Transition::is_progress`]).
    /// Never moves the time backwards.
    pub fn made_progress(&mut self, transition: Transition, now: Timestamp) -> Recorded {
        if !transition.is_progress() {
            return Recorded::No;
        }
        self.last = self.last.max(now);
        Recorded::Yes
    }

    /// When the phase last made progress.
    pub fn last(&self) -> Timestamp {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_secs(n))
    }

    /// Renders the verdict for a row: `let-run` or `cancel: <reason>`.
    fn render(verdict: Verdict) -> String {
        match verdict {
            Verdict::LetRun => "let-run".into(),
            Verdict::Cancel { reason } => format!("cancel: {reason}"),
        }
    }

    /// One row: phase, state, new snapshots, seconds since progress, timeout seconds.
    fn check(
        phase: Phase,
        state: PhaseState,
        new_snapshots: NewSnapshots,
        stalled_secs: u64,
        timeout_secs: u64,
        expected: &str,
    ) {
        let input = WatchdogInput {
            phase,
            state,
            last_progress: secs(1000),
            now: secs(1000 + stalled_secs),
            timeout: Duration::from_secs(timeout_secs),
            new_snapshots,
        };
        let got = render(verdict(&input));
        assert!(
            got.starts_with(expected),
            "{input:?}\n got: {got}\nwant: {expected}..."
        );
    }

    #[test]
    fn verdicts() {
        use NewSnapshots::*;
        use Phase::*;
        use PhaseState::*;
        const NO_PROGRESS: &str = "cancel: cancelled";
        let table: &[(Phase, PhaseState, NewSnapshots, u64, u64, &str)] = &[
            // Within the timeout and no new snapshots: everything runs on.
            (Replicating, MakingProgress, NotArrived, 0, 600, "let-run"),
            (Replicating, Error, NotArrived, 599, 600, "let-run"),
            (PruningSender, Error, NotArrived, 10, 600, "let-run"),
            (PruningReceiver, Error, NotArrived, 10, 600, "let-run"),
            // No progress for the whole timeout: cancelled, whatever the phase and state.
            (
                Replicating,
                MakingProgress,
                NotArrived,
                600,
                600,
                NO_PROGRESS,
            ),
            (Replicating, Error, Arrived, 601, 600, NO_PROGRESS),
            (
                PruningSender,
                MakingProgress,
                NotArrived,
                900,
                600,
                NO_PROGRESS,
            ),
            (PruningSender, Error, Arrived, 900, 600, NO_PROGRESS),
            (
                PruningReceiver,
                MakingProgress,
                NotArrived,
                900,
                600,
                NO_PROGRESS,
            ),
            // New snapshots while replication runs: progress runs on (initial replication),
            // an error state is cancelled.
            (Replicating, MakingProgress, Arrived, 10, 600, "let-run"),
            (
                Replicating,
                Error,
                Arrived,
                10,
                600,
                "cancel: cancelled replication by the watchdog: new snapshots",
            ),
            // Sender-side pruning is left alone.
            (PruningSender, MakingProgress, Arrived, 10, 600, "let-run"),
            (PruningSender, Error, Arrived, 10, 600, "let-run"),
            // Receiver-side pruning in an error state is cancelled.
            (PruningReceiver, MakingProgress, Arrived, 10, 600, "let-run"),
            (
                PruningReceiver,
                Error,
                Arrived,
                10,
                600,
                "cancel: cancelled receiver-side pruning by the watchdog: new snapshots",
            ),
        ];
        for (phase, state, new_snapshots, stalled, timeout, expected) in table {
            check(*phase, *state, *new_snapshots, *stalled, *timeout, expected);
        }
    }

    #[test]
    fn no_progress_reason_names_phase_and_times() {
        let input = WatchdogInput {
            phase: Phase::PruningReceiver,
            state: PhaseState::MakingProgress,
            last_progress: secs(100),
            now: secs(760),
            timeout: Duration::from_secs(600),
            new_snapshots: NewSnapshots::NotArrived,
        };
        let Verdict::Cancel { reason } = verdict(&input) else {
            panic!("expected a cancel")
        };
        assert_eq!(
            reason,
            CancelReason::NoProgress {
                phase: Phase::PruningReceiver,
                stalled: Duration::from_secs(660),
                timeout: Duration::from_secs(600),
            }
        );
        assert_eq!(
            reason.to_string(),
            "cancelled receiver-side pruning by the watchdog: no progress for 660s \
             (timeout 600s); see the job's log for the last error"
        );
        assert!(!reason.to_string().contains("context cancelled"));
    }

    #[test]
    fn a_clock_that_seems_to_go_backwards_counts_as_no_time_passed() {
        let input = WatchdogInput {
            phase: Phase::Replicating,
            state: PhaseState::MakingProgress,
            last_progress: secs(500),
            now: secs(400),
            timeout: Duration::from_secs(60),
            new_snapshots: NewSnapshots::NotArrived,
        };
        assert_eq!(verdict(&input), Verdict::LetRun);
    }

    #[test]
    fn progress_is_recorded_only_between_non_error_states() {
        use PhaseState::*;
        let table = [
            (MakingProgress, MakingProgress, Recorded::Yes, 50),
            (MakingProgress, Error, Recorded::No, 10),
            (Error, Error, Recorded::No, 10),
            (Error, MakingProgress, Recorded::No, 10),
        ];
        for (from, to, recorded, last) in table {
            let mut progress = Progress::new(secs(10));
            assert_eq!(
                progress.made_progress(Transition { from, to }, secs(50)),
                recorded
            );
            assert_eq!(progress.last(), secs(last), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn a_phase_cycling_through_errors_is_cancelled() {
        // The live-lock the seed warns about: fail, retry, fail, ... must not keep the phase
        // alive. Every 60 s the phase goes error -> error; after the timeout it is cancelled.
        let timeout = Duration::from_secs(600);
        let mut progress = Progress::new(secs(0));
        let transition = Transition {
            from: PhaseState::Error,
            to: PhaseState::Error,
        };
        let mut cancelled_at = None;
        for minute in 1..=20 {
            let now = secs(minute * 60);
            assert_eq!(progress.made_progress(transition, now), Recorded::No);
            let input = WatchdogInput {
                phase: Phase::Replicating,
                state: PhaseState::Error,
                last_progress: progress.last(),
                now,
                timeout,
                new_snapshots: NewSnapshots::NotArrived,
            };
            if let Verdict::Cancel { .. } = verdict(&input) {
                cancelled_at = Some(minute);
                break;
            }
        }
        assert_eq!(cancelled_at, Some(10));
        // A phase that keeps completing steps is never cancelled for lack of progress.
        let mut progress = Progress::new(secs(0));
        let step = Transition {
            from: PhaseState::MakingProgress,
            to: PhaseState::MakingProgress,
        };
        for minute in 1..=20 {
            let now = secs(minute * 60);
            assert_eq!(progress.made_progress(step, now), Recorded::Yes);
            let input = WatchdogInput {
                phase: Phase::Replicating,
                state: PhaseState::MakingProgress,
                last_progress: progress.last(),
                now,
                timeout,
                new_snapshots: NewSnapshots::Arrived,
            };
            assert_eq!(verdict(&input), Verdict::LetRun, "minute {minute}");
        }
    }

    #[test]
    fn progress_never_moves_backwards() {
        let mut progress = Progress::new(secs(100));
        let step = Transition {
            from: PhaseState::MakingProgress,
            to: PhaseState::MakingProgress,
        };
        assert_eq!(progress.made_progress(step, secs(90)), Recorded::Yes);
        assert_eq!(progress.last(), secs(100));
        assert_eq!(Timestamp::EPOCH.since_epoch(), Duration::ZERO);
    }
}
