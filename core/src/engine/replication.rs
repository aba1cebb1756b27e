//! The replication driver: one run of a push or pull job's replication, as attempts over all
//! filesystems, through the sender and receiver endpoints.
//!
//! # A run
//!
//! A run makes up to [`DriverConfig::attempts_max`] attempts. Each attempt lists the
//! filesystems of both sides, then plans and replicates every sender filesystem concurrently
//! through the [`StepQueue`]: planning first (it is due at the Unix epoch), then steps by the
//! creation time of their `to` snapshot, so that with snapshots taken together every filesystem
//! reaches T1 before any reaches T2, with at most [`DriverConfig::step_concurrency`] filesystems
//! working at once. After the attempt, [`decide_run`] looks at the classes of its errors: done,
//! stop, or wait for the connection (pinging both sides, bounded by
//! [`DriverConfig::reconnect_timeout`]) and make another attempt.
//!
//! # A filesystem
//!
//! Planning lists the versions of both sides and asks [`plan`](crate::plan::plan). A receiver
//! resume token is decoded natively; a token that cannot be decoded, or that names snapshots the
//! sender no longer has, or that the sender refuses, is not allowed to wedge the filesystem: it
//! is noted in the report, the filesystem is planned without it, and the first receive clears
//! the partial state (`zfs receive -A`). Every step is checked with a dry-run send at planning,
//! so that policy violations surface before any data moves.
//!
//! A step is `send` → `receive` → `send_completed`. A child whose parent is in its initial
//! replication waits until the parent is on the receiver (its first step is incremental, or it
//! completed one step, or it had nothing to do); a parent that failed planning or its initial
//! step fails the child with "parent(s) failed during initial replication".
//!
//! # Errors
//!
//! Each error is classified ([`Classify`]) and [`decide_filesystem`] decides: a temporary error
//! of one filesystem is retried after a back-off that doubles per consecutive error (and the
//! filesystem goes behind the healthy ones in the queue); a permanent one stops that filesystem
//! for this run while the others carry on; an attempt-scoped one (the connection) ends the
//! attempt: every task is dropped, which stops its stream.
//!
//! Plan correlation across attempts (zrepl truncates a retried plan so that it does not chase
//! snapshots taken meanwhile) is not done: every attempt plans afresh from both pools, which
//! converges because each confirmed step moves the cursor.
//!
//! Cancellation: drop the future of [`Replication::run`]; every spawned task is aborted with
//! it (the join set is owned by the run).

pub mod report;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinSet;

use crate::backend::ByteStream;
use crate::endpoint::{
    EndpointError, Filesystem, Protection, ReceiveReq, Receiver, SendReq, SendRes, Sender,
};
use crate::error_class::{
    ATTEMPTS_MAX, Classify, ErrorClass, FailureKind, FilesystemDecision, RunDecision, StopReason,
    decide_filesystem, decide_run,
};
use crate::name::DatasetName;
use crate::plan::{Plan, PlanError, PlanPolicy, ResumePoint, Step, plan};
use crate::queue::{Item, QueueError, SlotToken, StepDate, StepOutcome, StepQueue};
use crate::resume_token::ResumeToken;

use report::{
    AttemptState, BlockedOn, FilesystemState, ReportHandle, RunState, StepReport, StepState,
};

/// zrepl's `ZREPL_REPLICATION_RECONNECT_HARD_FAIL_TIMEOUT`: how long a run waits for the
/// connection to come back before it gives up.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How often the reconnect wait pings both sides.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// The back-off before the first retry of a filesystem; doubled per consecutive error.
pub const RETRY_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest back-off before a retry.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How many times one filesystem may be re-planned without its resume token in one attempt
/// (a token refused at send time); bounds a loop between planner and sender.
pub const TOKEN_REPLANS_MAX: u32 = 2;

/// How a job's replication runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// The guarantees of initial and incremental steps.
    pub protection: Protection,
    /// The planner's knobs.
    pub plan: PlanPolicy,
    /// How many filesystems plan or step at once (zrepl's `concurrency.steps`, default 1).
    pub step_concurrency: usize,
    /// Whether to ask the sender for each step's size at planning (a dry-run send, which also
    /// validates the step).
    pub size_estimates: bool,
    /// The most attempts of one run.
    pub attempts_max: u32,
    /// How long to wait for the connection before giving up the run.
    pub reconnect_timeout: Duration,
    /// How often to ping while waiting.
    pub reconnect_interval: Duration,
    /// The first retry back-off of a filesystem.
    pub retry_backoff_base: Duration,
    /// The longest retry back-off.
    pub retry_backoff_max: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            protection: Protection::default(),
            plan: PlanPolicy::default(),
            step_concurrency: 1,
            size_estimates: true,
            attempts_max: ATTEMPTS_MAX,
            reconnect_timeout: RECONNECT_TIMEOUT,
            reconnect_interval: RECONNECT_INTERVAL,
            retry_backoff_base: RETRY_BACKOFF_BASE,
            retry_backoff_max: RETRY_BACKOFF_MAX,
        }
    }
}

impl DriverConfig {
    fn backoff(&self, n_errors: u32) -> Duration {
        let shift = n_errors.saturating_sub(1).min(16);
        self.retry_backoff_base
            .saturating_mul(1 << shift)
            .min(self.retry_backoff_max)
    }
}

/// Why one filesystem could not be replicated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// An endpoint request failed.
    #[error("{during}: {source}")]
    Endpoint {
        /// What the driver was doing ("listing sender versions", "send", "receive", ...).
        during: &'static str,
        /// The error.
        source: EndpointError,
    },
    /// The planner found a conflict.
    #[error("{source}; {}", source.advice())]
    Plan {
        /// The conflict.
        source: PlanError,
    },
    /// A parent's initial replication failed, so the child cannot be received below it.
    #[error(
        "parent(s) failed during initial replication: [{}]; this filesystem is replicated once \
         they are",
        parents.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    ParentFailed {
        /// The failed ancestors.
        parents: Vec<DatasetName>,
    },
    /// The sender's filesystem is a placeholder but the receiver's copy is a real filesystem.
    #[error(
        "sender filesystem is placeholder, but receiver filesystem is not; the receiver's copy \
         has data the sender's placeholder does not: rename or destroy it on the receiver after \
         checking it is not needed"
    )]
    SenderPlaceholder,
    /// The step queue refused (more filesystems than it can hold).
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl FsError {
    fn endpoint(during: &'static str) -> impl FnOnce(EndpointError) -> FsError {
        move |source| FsError::Endpoint { during, source }
    }
}

impl Classify for FsError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Endpoint { source, .. } => source.class(),
            Self::Plan { .. } => FailureKind::Conflict.class(),
            Self::ParentFailed { .. } | Self::SenderPlaceholder => ErrorClass::FILESYSTEM_PERMANENT,
            Self::Queue(_) => ErrorClass::FATAL,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every filesystem is up to date.
    Done,
    /// The run stopped with errors; the reason is in the report too.
    Failed {
        /// Why, as status shows it.
        reason: String,
    },
}

/// A job's replication between one sender and one receiver.
#[derive(Debug, Clone)]
pub struct Replication {
    ctx: Arc<Ctx>,
}

#[derive(Debug)]
struct Ctx {
    sender: Arc<dyn Sender>,
    receiver: Arc<dyn Receiver>,
    config: DriverConfig,
    report: ReportHandle,
}

impl Replication {
    /// A driver over the two endpoints, writing into `report`.
    pub fn new(
        sender: Arc<dyn Sender>,
        receiver: Arc<dyn Receiver>,
        config: DriverConfig,
        report: ReportHandle,
    ) -> Self {
        Self {
            ctx: Arc::new(Ctx {
                sender,
                receiver,
                config,
                report,
            }),
        }
    }

    /// The report this driver writes.
    pub fn report(&self) -> &ReportHandle {
        &self.ctx.report
    }

    /// One run: attempts until done, a permanent error, or the attempts are used up.
    pub async fn run(&self) -> RunOutcome {
        let ctx = &self.ctx;
        ctx.report.update(|r| {
            r.state = RunState::Running;
            r.attempts.clear();
            r.stop_reason = None;
        });
        let attempts_max = ctx.config.attempts_max.max(1);
        let mut n_attempts = 0;
        loop {
            n_attempts += 1;
            ctx.report.new_attempt(n_attempts);
            let errors = attempt(ctx).await;
            let classes: Vec<ErrorClass> = errors.iter().map(|(c, _)| *c).collect();
            match decide_run(&classes, n_attempts, attempts_max) {
                RunDecision::Done => {
                    ctx.report.update(|r| r.state = RunState::Done);
                    return RunOutcome::Done;
                }
                RunDecision::RetryAfterReconnect { cause } => {
                    ctx.report
                        .update(|r| r.state = RunState::WaitingForReconnect);
                    if let Err(reason) = wait_for_connectivity(ctx).await {
                        let reason = format!(
                            "connectivity: {reason} (the attempt failed with: {})",
                            errors[cause].1
                        );
                        return fail(ctx, reason);
                    }
                    ctx.report.update(|r| r.state = RunState::Running);
                }
                RunDecision::StopRun { reason } => {
                    let text = match reason {
                        StopReason::Permanent { cause } => errors[cause].1.clone(),
                        StopReason::AttemptsExhausted { cause, .. } => format!(
                            "gave up after {n_attempts} attempts; the last error: {}",
                            errors[cause].1
                        ),
                        StopReason::FilesystemsFailed { cause } => {
                            let n = errors.len();
                            format!(
                                "{n} filesystem error{}; the last: {}",
                                if n == 1 { "" } else { "s" },
                                errors[cause].1
                            )
                        }
                    };
                    return fail(ctx, text);
                }
            }
        }
    }
}

fn fail(ctx: &Ctx, reason: String) -> RunOutcome {
    ctx.report.update(|r| {
        r.state = RunState::Failed;
        r.stop_reason = Some(reason.clone());
    });
    RunOutcome::Failed { reason }
}

/// Pings both sides until both answer, at most `reconnect_timeout`.
async fn wait_for_connectivity(ctx: &Ctx) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + ctx.config.reconnect_timeout;
    loop {
        let sender = ctx.sender.ping().await;
        let receiver = ctx.receiver.ping().await;
        let last = match (sender, receiver) {
            (Ok(()), Ok(())) => return Ok(()),
            (Err(e), _) => format!("sender: {e}"),
            (_, Err(e)) => format!("receiver: {e}"),
        };
        if tokio::time::Instant::now() + ctx.config.reconnect_interval > deadline {
            return Err(format!(
                "no connection within {}s: {last}",
                ctx.config.reconnect_timeout.as_secs()
            ));
        }
        tokio::time::sleep(ctx.config.reconnect_interval).await;
    }
}

/// What a filesystem needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Plan,
    Step,
}

/// One filesystem's progress within an attempt.
#[derive(Debug)]
struct FsRun {
    sender: Filesystem,
    receiver: Option<Filesystem>,
    next: Next,
    steps: Vec<Step>,
    step_index: usize,
    resume_token: Option<String>,
    ignore_token: bool,
    token_replans: u32,
    /// Whether the filesystem exists on the receiver as a real filesystem (or needs no steps):
    /// its children may be received below it.
    present: bool,
    state: FilesystemState,
}

impl FsRun {
    fn is_failed(&self) -> bool {
        matches!(
            self.state,
            FilesystemState::PlanningError | FilesystemState::StepError
        )
    }
}

/// What a finished task reports.
#[derive(Debug)]
enum Work {
    Planned(Result<Planned, FsError>),
    Stepped(Result<(), FsError>),
    BackoffOver,
}

#[derive(Debug)]
struct Planned {
    steps: Vec<Step>,
    sizes: Vec<Option<u64>>,
    resume_token: Option<String>,
    notes: Vec<String>,
}

/// One attempt; returns its errors (class and text), most recent last.
async fn attempt(ctx: &Arc<Ctx>) -> Vec<(ErrorClass, String)> {
    let listed = async {
        let s = ctx.sender.list_filesystems().await;
        let r = ctx.receiver.list_filesystems().await;
        (s, r)
    }
    .await;
    let (senders, receivers) = match listed {
        (Ok(s), Ok(r)) => (s, r),
        (Err(e), _) | (_, Err(e)) => {
            let text = format!("listing filesystems: {e}");
            ctx.report
                .set_attempt(AttemptState::PlanningError, Some(text.clone()));
            return vec![(e.class(), text)];
        }
    };
    let receivers: BTreeMap<DatasetName, Filesystem> =
        receivers.into_iter().map(|f| (f.path.clone(), f)).collect();
    let mut runs: BTreeMap<DatasetName, FsRun> = BTreeMap::new();
    let mut queue = match StepQueue::new(ctx.config.step_concurrency) {
        Ok(q) => q,
        Err(e) => {
            let text = e.to_string();
            ctx.report
                .set_attempt(AttemptState::PlanningError, Some(text.clone()));
            return vec![(ErrorClass::FATAL, text)];
        }
    };
    let mut errors = Vec::new();
    for fs in senders {
        let path = fs.path.clone();
        ctx.report.add_filesystem(&path);
        if let Err(e) = queue.enqueue(path.clone(), Item::PLANNING) {
            let e = FsError::from(e);
            errors.push((e.class(), format!("{path}: {e}")));
            continue;
        }
        runs.insert(
            path.clone(),
            FsRun {
                receiver: receivers.get(&path).cloned(),
                sender: fs,
                next: Next::Plan,
                steps: Vec::new(),
                step_index: 0,
                resume_token: None,
                ignore_token: false,
                token_replans: 0,
                // A filesystem the receiver has (even as a placeholder) can take children.
                present: receivers.contains_key(&path),
                state: FilesystemState::Planning,
            },
        );
    }
    ctx.report
        .set_attempt(AttemptState::FanOutFilesystems, None);

    let mut tasks: JoinSet<(DatasetName, Work)> = JoinSet::new();
    let mut slots: BTreeMap<DatasetName, SlotToken> = BTreeMap::new();
    let mut attempt_error: Option<(ErrorClass, String)> = None;
    loop {
        while let Some(token) = queue.take_next() {
            let fs = token.filesystem().clone();
            let Some(run) = runs.get_mut(&fs) else {
                // Cannot happen: only filesystems with a run are queued. Free the slot.
                let _ = queue.complete(token, StepOutcome::Succeeded);
                continue;
            };
            spawn_work(ctx, &mut tasks, &fs, run);
            slots.insert(fs, token);
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (fs, work) = match joined {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue,
        };
        let outcome = handle(
            ctx, &mut queue, &mut slots, &mut runs, &mut tasks, &fs, work,
        );
        if let Some(error) = outcome {
            match error {
                Handled::FilesystemError(class, text) => errors.push((class, text)),
                Handled::AttemptError(class, text) => {
                    attempt_error = Some((class, text));
                    break;
                }
            }
        }
        unblock_children(ctx, &mut queue, &mut runs, &mut errors);
    }

    if let Some((class, text)) = attempt_error {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        for (fs, run) in &mut runs {
            if !run.state.is_final() {
                run.state = FilesystemState::Cancelled;
                ctx.report.update_fs(fs, |r| {
                    r.state = FilesystemState::Cancelled;
                    r.blocked_on = BlockedOn::Nothing;
                });
            }
        }
        ctx.report
            .set_attempt(AttemptState::AttemptError, Some(text.clone()));
        errors.push((class, text));
        return errors;
    }
    // Filesystems still waiting for a parent when nothing else can run: their parents ended
    // without being present and without failing (cannot happen), so report them.
    let not_present: Vec<DatasetName> = runs
        .iter()
        .filter(|(_, r)| !r.present)
        .map(|(p, _)| p.clone())
        .collect();
    for (fs, run) in &mut runs {
        if !run.state.is_final() {
            let e = FsError::ParentFailed {
                parents: ancestors_in(fs, &not_present),
            };
            run.state = FilesystemState::StepError;
            record_fs_error(ctx, fs, FilesystemState::StepError, &e);
            errors.push((e.class(), format!("{fs}: {e}")));
        }
    }
    let state = if errors.is_empty() {
        AttemptState::Done
    } else {
        AttemptState::FilesystemError
    };
    ctx.report.set_attempt(state, None);
    errors
}

fn ancestors_in(fs: &DatasetName, candidates: &[DatasetName]) -> Vec<DatasetName> {
    candidates
        .iter()
        .filter(|c| *c != fs && c.is_ancestor_of(fs))
        .cloned()
        .collect()
}

fn spawn_work(
    ctx: &Arc<Ctx>,
    tasks: &mut JoinSet<(DatasetName, Work)>,
    fs: &DatasetName,
    run: &mut FsRun,
) {
    let ctx2 = Arc::clone(ctx);
    let path = fs.clone();
    match run.next {
        Next::Plan => {
            run.state = FilesystemState::Planning;
            ctx.report.update_fs(fs, |r| {
                r.state = FilesystemState::Planning;
                r.blocked_on = BlockedOn::Nothing;
            });
            let sender = run.sender.clone();
            let receiver = run.receiver.clone();
            let ignore_token = run.ignore_token;
            tasks.spawn(async move {
                let planned = plan_filesystem(&ctx2, sender, receiver, ignore_token).await;
                (path, Work::Planned(planned))
            });
        }
        Next::Step => {
            let index = run.step_index;
            let Some(step) = run.steps.get(index).cloned() else {
                return;
            };
            let token = if step.resumed {
                run.resume_token.clone()
            } else {
                None
            };
            run.state = FilesystemState::Stepping;
            ctx.report.update_fs(fs, |r| {
                r.state = FilesystemState::Stepping;
                r.blocked_on = BlockedOn::Nothing;
                r.current_step = index;
                if let Some(s) = r.steps.get_mut(index) {
                    s.state = StepState::Running;
                    s.bytes_replicated = 0;
                }
            });
            tasks.spawn(async move {
                let result = run_step(&ctx2, &path, step, index, token).await;
                (path, Work::Stepped(result))
            });
        }
    }
}

enum Handled {
    FilesystemError(ErrorClass, String),
    AttemptError(ErrorClass, String),
}

fn handle(
    ctx: &Arc<Ctx>,
    queue: &mut StepQueue,
    slots: &mut BTreeMap<DatasetName, SlotToken>,
    runs: &mut BTreeMap<DatasetName, FsRun>,
    tasks: &mut JoinSet<(DatasetName, Work)>,
    fs: &DatasetName,
    work: Work,
) -> Option<Handled> {
    let run = runs.get_mut(fs)?;
    let result = match work {
        Work::BackoffOver => {
            run.next = Next::Plan;
            ctx.report
                .update_fs(fs, |r| r.blocked_on = BlockedOn::PlanQueue);
            return match queue.enqueue_retry(fs.clone()) {
                Ok(_) => None,
                Err(e) => Some(Handled::AttemptError(ErrorClass::FATAL, e.to_string())),
            };
        }
        Work::Planned(Ok(planned)) => {
            run.steps = planned.steps;
            run.step_index = 0;
            run.resume_token = planned.resume_token;
            run.next = Next::Step;
            if run.steps.first().is_none_or(|s| s.from.is_some()) {
                run.present = true;
            }
            let reports: Vec<StepReport> = run
                .steps
                .iter()
                .zip(planned.sizes.iter().chain(std::iter::repeat(&None)))
                .map(|(step, size)| StepReport {
                    description: step.to_string(),
                    full: step.from.is_none(),
                    guids: step
                        .from
                        .iter()
                        .chain(step.received())
                        .map(|v| v.guid)
                        .collect(),
                    state: StepState::Pending,
                    bytes_expected: *size,
                    bytes_replicated: 0,
                })
                .collect();
            let notes = planned.notes;
            ctx.report.update_fs(fs, |r| {
                r.steps = reports;
                r.current_step = 0;
                r.notes.extend(notes);
            });
            Ok(StepOutcome::Neutral)
        }
        Work::Stepped(Ok(())) => {
            let index = run.step_index;
            run.step_index += 1;
            run.present = true;
            ctx.report.update_fs(fs, |r| {
                if let Some(s) = r.steps.get_mut(index) {
                    s.state = StepState::Done;
                }
                r.current_step = index + 1;
            });
            Ok(StepOutcome::Succeeded)
        }
        Work::Planned(Err(e)) => Err((e, FilesystemState::PlanningError)),
        Work::Stepped(Err(e)) => {
            let index = run.step_index;
            ctx.report.update_fs(fs, |r| {
                if let Some(s) = r.steps.get_mut(index) {
                    s.state = StepState::Failed;
                }
            });
            Err((e, FilesystemState::StepError))
        }
    };
    let token = slots.remove(fs)?;
    match result {
        Ok(outcome) => {
            // Only a completed step clears the error count; planning again after a failed
            // step must not, or a step that fails every time would be retried forever.
            let completed = match queue.complete(token, outcome) {
                Ok(c) => c,
                Err(e) => return Some(Handled::AttemptError(ErrorClass::FATAL, e.to_string())),
            };
            ctx.report
                .update_fs(fs, |r| r.n_errors = completed.n_errors);
            if run.step_index >= run.steps.len() {
                run.state = FilesystemState::Done;
                run.present = true;
                ctx.report.update_fs(fs, |r| {
                    r.state = FilesystemState::Done;
                    r.blocked_on = BlockedOn::Nothing;
                });
                return None;
            }
            enqueue_step_or_wait(ctx, queue, fs, run, None)
        }
        Err((error, failed_state)) => {
            let completed = match queue.complete(token, StepOutcome::Failed) {
                Ok(c) => c,
                Err(e) => return Some(Handled::AttemptError(ErrorClass::FATAL, e.to_string())),
            };
            let class = error.class();
            let text = format!("{fs}: {error}");
            // A refused resume token is not the filesystem's failure: plan again without it.
            if error_is_token_refusal(&error) && run.token_replans < TOKEN_REPLANS_MAX {
                run.token_replans += 1;
                run.ignore_token = true;
                run.next = Next::Plan;
                ctx.report.update_fs(fs, |r| {
                    r.notes.push(format!(
                        "the sender refused the receiver's resume token ({error}); the partial \
                         receive is discarded and the filesystem planned afresh"
                    ));
                    r.blocked_on = BlockedOn::PlanQueue;
                });
                return match queue.enqueue(fs.clone(), Item::PLANNING) {
                    Ok(_) => None,
                    Err(e) => Some(Handled::AttemptError(ErrorClass::FATAL, e.to_string())),
                };
            }
            ctx.report
                .update_fs(fs, |r| r.n_errors = completed.n_errors);
            match decide_filesystem(class, completed.n_errors) {
                FilesystemDecision::Retry => {
                    run.state = FilesystemState::RetryWait;
                    let delay = ctx.config.backoff(completed.n_errors);
                    ctx.report.update_fs(fs, |r| {
                        r.state = FilesystemState::RetryWait;
                        r.blocked_on = BlockedOn::Backoff;
                        r.last_error = Some(error.to_string());
                    });
                    let path = fs.clone();
                    tasks.spawn(async move {
                        tokio::time::sleep(delay).await;
                        (path, Work::BackoffOver)
                    });
                    None
                }
                FilesystemDecision::StopFilesystem => {
                    run.state = failed_state;
                    record_fs_error(ctx, fs, failed_state, &error);
                    // The filesystem used up its retries (or its error is permanent): for this
                    // run it has failed for good, and another attempt would only repeat that.
                    Some(Handled::FilesystemError(
                        ErrorClass::FILESYSTEM_PERMANENT,
                        text,
                    ))
                }
                FilesystemDecision::StopAttempt => {
                    run.state = failed_state;
                    record_fs_error(ctx, fs, failed_state, &error);
                    Some(Handled::AttemptError(class, text))
                }
            }
        }
    }
}

fn error_is_token_refusal(error: &FsError) -> bool {
    match error {
        FsError::Endpoint { source, .. } => source.is_resume_token_unusable(),
        _ => false,
    }
}

fn record_fs_error(ctx: &Ctx, fs: &DatasetName, state: FilesystemState, error: &FsError) {
    ctx.report.update_fs(fs, |r| {
        r.state = state;
        r.blocked_on = BlockedOn::Nothing;
        r.last_error = Some(error.to_string());
    });
}

/// Queues the filesystem's next step, or parks it until its ancestors are on the receiver.
/// `ancestors_ready` is `Some(true)` when the caller already checked.
fn enqueue_step_or_wait(
    ctx: &Ctx,
    queue: &mut StepQueue,
    fs: &DatasetName,
    run: &mut FsRun,
    ancestors_ready: Option<bool>,
) -> Option<Handled> {
    let first_is_initial =
        run.step_index == 0 && run.steps.first().is_some_and(|s| s.from.is_none());
    if first_is_initial && ancestors_ready != Some(true) {
        // Parked; `unblock_children` queues it once the parents are present.
        run.state = FilesystemState::Stepping;
        ctx.report.update_fs(fs, |r| {
            r.state = FilesystemState::Stepping;
            r.blocked_on = BlockedOn::ParentInitialReplication;
        });
        return None;
    }
    let date = run
        .steps
        .get(run.step_index)
        .map_or(StepDate::PLANNING, |s| {
            StepDate::from_unix(s.to.creation_unix)
        });
    run.state = FilesystemState::Stepping;
    ctx.report.update_fs(fs, |r| {
        r.state = FilesystemState::Stepping;
        r.blocked_on = BlockedOn::StepQueue;
    });
    match queue.enqueue(
        fs.clone(),
        Item::Ready {
            next_step_date: date,
        },
    ) {
        Ok(_) => None,
        Err(e) => Some(Handled::AttemptError(ErrorClass::FATAL, e.to_string())),
    }
}

/// Queues parked initial steps whose ancestors are all on the receiver, and fails those with
/// an ancestor that failed.
fn unblock_children(
    ctx: &Ctx,
    queue: &mut StepQueue,
    runs: &mut BTreeMap<DatasetName, FsRun>,
    errors: &mut Vec<(ErrorClass, String)>,
) {
    let parked: Vec<DatasetName> = runs
        .iter()
        .filter(|(_, r)| {
            r.next == Next::Step
                && r.state == FilesystemState::Stepping
                && r.step_index == 0
                && r.steps.first().is_some_and(|s| s.from.is_none())
        })
        .map(|(p, _)| p.clone())
        .collect();
    for fs in parked {
        let parked_here = runs.get(&fs).is_some_and(|r| {
            // Only those actually parked (not queued or running): no slot, not in the queue.
            !queue.in_flight().any(|f| f == &fs)
                && !queue.waiting().any(|e| e.filesystem == fs)
                && r.state == FilesystemState::Stepping
        });
        if !parked_here {
            continue;
        }
        let ancestors: Vec<(&DatasetName, &FsRun)> = runs
            .iter()
            .filter(|(p, _)| **p != fs && p.is_ancestor_of(&fs))
            .collect();
        let failed: Vec<DatasetName> = ancestors
            .iter()
            .filter(|(_, r)| !r.present && r.is_failed())
            .map(|(p, _)| (*p).clone())
            .collect();
        let all_present = ancestors.iter().all(|(_, r)| r.present);
        let Some(run) = runs.get_mut(&fs) else {
            continue;
        };
        if !failed.is_empty() {
            let e = FsError::ParentFailed { parents: failed };
            run.state = FilesystemState::StepError;
            record_fs_error(ctx, &fs, FilesystemState::StepError, &e);
            errors.push((e.class(), format!("{fs}: {e}")));
        } else if all_present
            && let Some(Handled::AttemptError(class, text)) =
                enqueue_step_or_wait(ctx, queue, &fs, run, Some(true))
        {
            errors.push((class, text));
        }
    }
}

/// Plans one filesystem (see the module doc).
async fn plan_filesystem(
    ctx: &Ctx,
    sender_fs: Filesystem,
    receiver_fs: Option<Filesystem>,
    ignore_token: bool,
) -> Result<Planned, FsError> {
    let fs = &sender_fs.path;
    let mut notes = Vec::new();
    if sender_fs.is_placeholder {
        if receiver_fs.as_ref().is_some_and(|r| !r.is_placeholder) {
            return Err(FsError::SenderPlaceholder);
        }
        notes.push("the sender's filesystem is a placeholder: nothing to send".to_owned());
        return Ok(Planned {
            steps: Vec::new(),
            sizes: Vec::new(),
            resume_token: None,
            notes,
        });
    }
    let sender_versions = ctx
        .sender
        .list_versions(fs)
        .await
        .map_err(FsError::endpoint("listing the sender's versions"))?;
    let receiver_versions = match &receiver_fs {
        Some(r) if !r.is_placeholder => ctx
            .receiver
            .list_versions(fs)
            .await
            .map_err(FsError::endpoint("listing the receiver's versions"))?,
        _ => Vec::new(),
    };

    let mut token = receiver_fs.as_ref().and_then(|r| r.resume_token.clone());
    if ignore_token && let Some(t) = token.take() {
        notes.push(format!(
            "not resuming: the resume token {} is refused",
            abbreviate(&t)
        ));
    }
    let mut resume = None;
    if let Some(text) = &token {
        match ResumeToken::decode(text) {
            Ok(decoded) => {
                let c = decoded.contents();
                resume = Some(ResumePoint {
                    fromguid: c.fromguid,
                    toguid: c.toguid,
                    toname: c.toname.to_string(),
                });
            }
            Err(e) => {
                notes.push(format!(
                    "the receiver's resume token cannot be decoded ({e}); the partial receive \
                     is discarded"
                ));
                token = None;
            }
        }
    }
    let planned = match plan(
        &sender_versions,
        &receiver_versions,
        resume.as_ref(),
        &ctx.config.plan,
    ) {
        Err(
            e @ (PlanError::ResumeTargetGone { .. }
            | PlanError::ResumeBaseGone { .. }
            | PlanError::ResumeBaseNotOlder { .. }),
        ) => {
            notes.push(format!("{e}: the partial receive is discarded"));
            token = None;
            plan(&sender_versions, &receiver_versions, None, &ctx.config.plan)
        }
        other => other,
    }
    .map_err(|source| FsError::Plan { source })?;
    let steps = match planned {
        Plan::UpToDate { .. } => Vec::new(),
        Plan::Replicate { steps, .. } => steps,
    };
    if !steps.first().is_some_and(|s| s.resumed) {
        token = None;
    }
    let mut sizes = Vec::with_capacity(steps.len());
    if ctx.config.size_estimates {
        for (i, step) in steps.iter().enumerate() {
            let request = send_request(ctx, fs, step, if i == 0 { token.clone() } else { None });
            let SendRes { expected_size, .. } = ctx
                .sender
                .send_dry(&request)
                .await
                .map_err(FsError::endpoint("checking the step with a dry-run send"))?;
            sizes.push(expected_size);
        }
    }
    Ok(Planned {
        steps,
        sizes,
        resume_token: token,
        notes,
    })
}

fn abbreviate(token: &str) -> String {
    const SHOWN: usize = 16;
    match token.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &token[..cut]),
        None => token.to_owned(),
    }
}

fn send_request(ctx: &Ctx, fs: &DatasetName, step: &Step, token: Option<String>) -> SendReq {
    SendReq {
        filesystem: fs.clone(),
        from: step.from.clone(),
        to: step.to.clone(),
        include_intermediates: !step.intermediates.is_empty(),
        resume_token: if step.resumed { token } else { None },
        protection: ctx.config.protection,
    }
}

/// One step: send, receive, confirm.
async fn run_step(
    ctx: &Ctx,
    fs: &DatasetName,
    step: Step,
    index: usize,
    token: Option<String>,
) -> Result<(), FsError> {
    let request = send_request(ctx, fs, &step, token);
    let (response, stream) = ctx
        .sender
        .send(&request)
        .await
        .map_err(FsError::endpoint("send"))?;
    if response.expected_size.is_some() {
        ctx.report.update_fs(fs, |r| {
            if let Some(s) = r.steps.get_mut(index) {
                s.bytes_expected = response.expected_size;
            }
        });
    }
    let stream: ByteStream = Box::pin(CountingStream {
        inner: stream,
        report: ctx.report.clone(),
        fs: fs.clone(),
        index,
    });
    let receive = ReceiveReq {
        filesystem: fs.clone(),
        to: step.to.clone(),
        clear_resume_token: !response.used_resume_token,
        protection: ctx.config.protection,
        incremental: step.from.is_some(),
    };
    ctx.receiver
        .receive(&receive, stream)
        .await
        .map_err(FsError::endpoint("receive"))?;
    ctx.sender
        .send_completed(&request)
        .await
        .map_err(FsError::endpoint("confirming the step to the sender"))?;
    Ok(())
}

/// Counts the bytes of a step's stream into the report as they pass.
struct CountingStream {
    inner: ByteStream,
    report: ReportHandle,
    fs: DatasetName,
    index: usize,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        if n > 0 {
            let index = self.index;
            self.report.update_fs(&self.fs, |r| {
                if let Some(s) = r.steps.get_mut(index) {
                    s.bytes_replicated = s.bytes_replicated.saturating_add(n);
                }
            });
        }
        polled
    }
}
