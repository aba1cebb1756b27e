//! The snapshotter driver: takes the snapshots of zrepl's `snapshotting:` section over a
//! [`ZfsBackend`], at the times the pure schedules in [`crate::snapshotter`] decide, running the
//! configured hooks through a [`HookRunner`].
//!
//! # Modes
//!
//! - `periodic`: on start the *sync-up* ([`periodic::sync_up`]) picks the first round from the
//!   newest snapshot with the prefix; after each round the next is `round start + interval`,
//!   whatever the round's outcome (zrepl has no shorter retry after an error). A sync-up that
//!   fails (listing failed, or every filesystem has a snapshot from the future) is reported and
//!   waits one interval, then snapshots as usual: a clock problem must not stop snapshots
//!   forever.
//! - `cron`: rounds at the fire times of a [`CronSchedule`], read in `cron_location` (a zferry
//!   extension; by default the zone of `timestamp_location`, because zferry never reads the
//!   host's zone, which is what zrepl uses). Fire times that pass while a round runs are
//!   skipped and counted, as zrepl skips overlapping fires.
//! - `manual`: never snapshots; the job's wakeup does whatever the job does.
//!
//! # One round
//!
//! The round lists the datasets and keeps those the job's [`Filter`] accepts. It reads the
//! [`Clock`] once and names every snapshot of the round after that instant (zrepl reads the
//! clock per filesystem, so its names can differ by a second within a round: quirk 18). Per
//! filesystem a [`HookPlan`] orders the hooks: first every filesystem's pre edges, then the
//! snapshots of all filesystems whose plan reached the snapshot, in ONE `backend.snapshot`
//! call per pool (ZFS takes them in one transaction group; it refuses several pools in one
//! call), then every filesystem's post edges. If a batched call fails, each snapshot of the
//! batch is taken on its own, so that one failing filesystem does not stop the others (ZFS
//! takes none of a failed batch, so nothing is taken twice); the batch's error is kept in the
//! report. A fatal pre-edge failure skips that filesystem's snapshot only.
//!
//! After every round, even a partly failed one, the owner is told through the channel given
//! at construction ([`RoundDone`]): a push job wakes its replication, a snap job prunes. The
//! channel has room for one message; when it is full, a notice is already pending and the new
//! one is merged into it (dropped), which is what the owner needs: one more run.
//!
//! # Time
//!
//! Sleeps use `tokio::time` only (virtual under tokio's paused clock and turmoil) and wall time
//! comes only from the injected [`Clock`]. A wait until a wall-clock instant sleeps in steps of
//! at most [`WALLCLOCK_RECHECK`] and reads the clock after each, so that a suspended machine
//! (whose monotonic clock stood still) snapshots on time after it wakes, as zrepl's
//! suspend-resume-safe timers do.
//!
//! # Cancellation
//!
//! [`Snapshotter::run`] watches a `tokio::sync::watch<bool>`: `true`, or the sender being
//! dropped, asks it to stop. A wait ends at once. A round in progress is finished first, so
//! that the post edges of hooks whose pre edge ran (a database lock, say) always run; a round
//! is bounded by its hooks' timeouts and the backend's calls. Dropping the future instead stops
//! it at the next await, which is safe for ZFS (each call is atomic) but may skip post edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::backend::{VersionTypes, ZfsBackend, ZfsError};
use crate::clock::Clock;
use crate::filter::Filter;
use crate::name::{Component, DatasetName, NameError, VersionKind, VersionName};
use crate::queue::STEP_QUEUE_LEN_MAX;
use crate::snapshotter::cron::{CronNextError, CronSchedule};
use crate::snapshotter::duration::{DurationError, Interval, parse_positive_duration};
use crate::snapshotter::hooks::{
    HOOK_TIMEOUT_DEFAULT, HOOKS_MAX, Hook, HookPlan, HookPlanError, HookType, Outcome, Step,
    StepStatus, hook_env,
};
use crate::snapshotter::periodic::{self, ScheduleOverflow, SyncUp, SyncUpError};
use crate::snapshotter::timestamp::{SnapshotNamer, TimestampError, TimestampLocation};
use crate::version::Version;

/// The most filesystems one round snapshots: the same bound as the replication queue, since
/// every snapshotted filesystem of a push job is a replicated one.
pub const ROUND_FILESYSTEMS_MAX: usize = STEP_QUEUE_LEN_MAX;

/// The most snapshots one `backend.snapshot` call names (bounded so that a command line stays
/// far below the kernel's argument limit: 512 names of at most 256 bytes are 128 KiB). A pool
/// with more matched filesystems is snapshotted in several transaction groups.
pub const SNAPSHOT_BATCH_MAX: usize = 512;

/// The longest single sleep of a wait for a wall-clock instant; the clock is read again after
/// each (zrepl's `ZREPL_WALLCLOCKTIMER_MAX_DELAY`).
pub const WALLCLOCK_RECHECK: Duration = Duration::from_secs(10);

/// The most output of one stream (stdout or stderr) a [`HookRunner`] keeps per invocation, in
/// bytes (zrepl's `ZREPL_MAX_HOOK_LOG_SIZE`); the rest is read and discarded.
pub const HOOK_OUTPUT_BYTES_MAX: usize = 1024 * 1024;

/// How much longer than a hook's timeout the driver waits for its [`HookRunner`] before it
/// gives up on the invocation (a runner is expected to kill the hook at the timeout itself).
pub const HOOK_TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// The most output of one stream of one hook invocation the report keeps, in bytes (the end of
/// it, where errors usually are): the report holds every filesystem's hook table, so what a
/// runner captured ([`HOOK_OUTPUT_BYTES_MAX`]) is cut further for it.
pub const HOOK_REPORT_OUTPUT_BYTES_MAX: usize = 4 * 1024;

/// The most skipped cron fire times counted after one long round.
pub const CRON_SKIPPED_COUNT_MAX: u64 = 10_000;

/// The longest hook path accepted, in bytes (Linux's `PATH_MAX`).
pub const HOOK_PATH_LEN_MAX: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Configuration

/// zrepl's `snapshotting:` section, as written in the config (`type: periodic | cron | manual`).
// Built once per job and never moved in a hot path: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SnapshottingConfig {
    /// `type: periodic`.
    Periodic(PeriodicConfig),
    /// `type: cron`.
    Cron(CronConfig),
    /// `type: manual`: no keys.
    Manual(ManualConfig),
}

/// `type: periodic`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodicConfig {
    /// `prefix`: the start of every snapshot name; must not be empty.
    pub prefix: String,
    /// `interval`: the time between rounds.
    pub interval: Interval,
    /// `hooks`.
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    /// `timestamp_format` (default `dense`).
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// `timestamp_location` (default `UTC`).
    #[serde(default)]
    pub timestamp_location: Option<String>,
}

/// `type: cron`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    /// `prefix`; zrepl accepts an empty one for cron (quirk 4), and so does zferry, so that a
    /// config that works with zrepl keeps working.
    #[serde(default)]
    pub prefix: String,
    /// `cron`: the schedule.
    pub cron: CronSchedule,
    /// `hooks`.
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    /// `timestamp_format` (default `dense`).
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// `timestamp_location` (default `UTC`).
    #[serde(default)]
    pub timestamp_location: Option<String>,
    /// zferry extension: the zone the cron fields are read in (default: `timestamp_location`).
    #[serde(default)]
    pub cron_location: Option<String>,
}

/// `type: manual` has no keys; zrepl refuses `prefix` there, and so does zferry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualConfig {}

/// One entry of `hooks:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// `type`: only `command` is supported.
    #[serde(rename = "type")]
    pub hook_type: String,
    /// `path`: the absolute path of the program (no arguments).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `timeout` (default 30s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// `err_is_fatal` (default false).
    #[serde(default)]
    pub err_is_fatal: bool,
    /// `filesystems` (default `{"<": true}`).
    #[serde(default)]
    pub filesystems: Option<Filter>,
    /// `dsn` of zrepl's database hooks: accepted by the parser only to say that those hook
    /// types are not supported.
    #[serde(default)]
    pub dsn: Option<String>,
}

/// Why a `snapshotting:` section is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshottingConfigError {
    /// `prefix` of a periodic section is empty.
    #[error(
        "snapshotting: `prefix` must not be empty for `type: periodic`: the sync-up finds the \
         newest snapshot by its prefix; write e.g. `prefix: zrepl_`"
    )]
    EmptyPrefix,
    /// `timestamp_format`, `timestamp_location` or the names they make are refused.
    #[error("snapshotting: {0}")]
    Timestamp(#[from] TimestampError),
    /// `cron_location` is refused.
    #[error("snapshotting: cron_location: {0}")]
    CronLocation(TimestampError),
    /// Too many hooks.
    #[error("snapshotting: {n_hooks} hooks are configured; at most {HOOKS_MAX} are supported")]
    TooManyHooks {
        /// How many.
        n_hooks: usize,
    },
    /// A hook is refused.
    #[error("snapshotting: hooks[{index}]: {reason}")]
    Hook {
        /// Its position in `hooks:`, from 0.
        index: usize,
        /// Why.
        reason: HookConfigError,
    },
}

/// Why one hook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookConfigError {
    /// A zrepl hook type zferry does not run.
    #[error(
        "hook type `{hook_type}` is not supported by zferry; run the same statement from a \
         `type: command` hook (e.g. with psql or mysql)"
    )]
    UnsupportedType {
        /// The type as written.
        hook_type: String,
    },
    /// An unknown hook type.
    #[error("unknown hook type `{hook_type}`; the supported type is `command`")]
    UnknownType {
        /// The type as written.
        hook_type: String,
    },
    /// `path` is missing.
    #[error("a `type: command` hook needs `path`, the absolute path of the program to run")]
    MissingPath,
    /// `path` is not absolute or too long.
    #[error(
        "hook path `{path}` must be absolute and at most {HOOK_PATH_LEN_MAX} bytes; arguments \
         are not supported (put them in a wrapper script)"
    )]
    BadPath {
        /// The path as written.
        path: String,
    },
    /// `dsn` on a command hook.
    #[error("`dsn` is only for database hooks, which zferry does not support")]
    DsnOnCommand,
    /// `timeout` is refused.
    #[error("timeout: {0}")]
    Timeout(DurationError),
}

/// A command hook ready to run: the program and the pure [`Hook`] that orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandHook {
    /// The program's absolute path.
    pub path: PathBuf,
    /// Its filter, fatality and timeout; `name` is the path as text.
    pub hook: Hook,
}

/// When rounds happen.
// Built once per job and never moved in a hot path: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Every `interval` after a sync-up.
    Periodic {
        /// The time between rounds.
        interval: Interval,
    },
    /// At the fire times of a cron spec, read in `zone`.
    Cron {
        /// The spec.
        schedule: CronSchedule,
        /// The zone the fields are read in.
        zone: TimeZone,
    },
}

/// The snapshotting of a periodic or cron section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSnapshotting {
    /// When.
    pub schedule: Schedule,
    /// The snapshot names.
    pub namer: SnapshotNamer,
    /// The hooks, in config order.
    pub hooks: Vec<CommandHook>,
}

/// A validated `snapshotting:` section.
// Built once per job and never moved in a hot path: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshotting {
    /// `periodic` or `cron`.
    Automatic(AutoSnapshotting),
    /// `manual`: no snapshots.
    Manual,
}

impl SnapshottingConfig {
    /// Checks the section the way zrepl does at config load (names for two sample instants,
    /// hook paths) and builds what the driver runs.
    pub fn build(&self) -> Result<Snapshotting, SnapshottingConfigError> {
        match self {
            Self::Manual(ManualConfig {}) => Ok(Snapshotting::Manual),
            Self::Periodic(c) => {
                if c.prefix.is_empty() {
                    return Err(SnapshottingConfigError::EmptyPrefix);
                }
                let namer = namer(&c.prefix, &c.timestamp_format, &c.timestamp_location)?;
                Ok(Snapshotting::Automatic(AutoSnapshotting {
                    schedule: Schedule::Periodic {
                        interval: c.interval,
                    },
                    namer,
                    hooks: build_hooks(&c.hooks)?,
                }))
            }
            Self::Cron(c) => {
                let namer = namer(&c.prefix, &c.timestamp_format, &c.timestamp_location)?;
                let zone = match &c.cron_location {
                    Some(text) => TimestampLocation::parse(text)
                        .map_err(SnapshottingConfigError::CronLocation)?
                        .time_zone(),
                    None => namer.timestamp().location().time_zone(),
                };
                Ok(Snapshotting::Automatic(AutoSnapshotting {
                    schedule: Schedule::Cron {
                        schedule: c.cron.clone(),
                        zone,
                    },
                    namer,
                    hooks: build_hooks(&c.hooks)?,
                }))
            }
        }
    }
}

fn namer(
    prefix: &str,
    format: &Option<String>,
    location: &Option<String>,
) -> Result<SnapshotNamer, SnapshottingConfigError> {
    Ok(SnapshotNamer::parse(
        prefix,
        format.as_deref().unwrap_or("dense"),
        location.as_deref().unwrap_or("UTC"),
    )?)
}

fn build_hooks(hooks: &[HookConfig]) -> Result<Vec<CommandHook>, SnapshottingConfigError> {
    if hooks.len() > HOOKS_MAX {
        return Err(SnapshottingConfigError::TooManyHooks {
            n_hooks: hooks.len(),
        });
    }
    hooks
        .iter()
        .enumerate()
        .map(|(index, h)| {
            build_hook(h).map_err(|reason| SnapshottingConfigError::Hook { index, reason })
        })
        .collect()
}

fn build_hook(h: &HookConfig) -> Result<CommandHook, HookConfigError> {
    match h.hook_type.as_str() {
        "command" => {}
        "postgres-checkpoint" | "mysql-lock-tables" => {
            return Err(HookConfigError::UnsupportedType {
                hook_type: h.hook_type.clone(),
            });
        }
        _ => {
            return Err(HookConfigError::UnknownType {
                hook_type: h.hook_type.clone(),
            });
        }
    }
    if h.dsn.is_some() {
        return Err(HookConfigError::DsnOnCommand);
    }
    let path = h.path.clone().ok_or(HookConfigError::MissingPath)?;
    let text = path.to_string_lossy().into_owned();
    if !path.is_absolute() || text.len() > HOOK_PATH_LEN_MAX {
        return Err(HookConfigError::BadPath { path: text });
    }
    let timeout = match &h.timeout {
        Some(t) => parse_positive_duration("timeout", t).map_err(HookConfigError::Timeout)?,
        None => HOOK_TIMEOUT_DEFAULT,
    };
    let filesystems = match &h.filesystems {
        Some(f) => f.clone(),
        // zrepl's default: every filesystem of the job. The pattern is a constant.
        None => Filter::from_entries([("<", true)]).unwrap_or_default(),
    };
    Ok(CommandHook {
        path,
        hook: Hook {
            name: text,
            filesystems,
            err_is_fatal: h.err_is_fatal,
            timeout,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Hook runner

/// Runs a hook program. The core never spawns processes: the daemon passes a runner that does
/// (`zferry_zfs_cli::hooks::CommandHookRunner`), tests pass a fake.
#[async_trait]
pub trait HookRunner: Send + Sync + fmt::Debug {
    /// Runs `command` with `env` added to the daemon's environment and no arguments, kills it
    /// when `timeout` passes, and keeps at most [`HOOK_OUTPUT_BYTES_MAX`] of each output
    /// stream.
    async fn run(
        &self,
        command: &Path,
        env: BTreeMap<String, String>,
        timeout: Duration,
    ) -> HookResult;
}

/// How a hook invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookExit {
    /// The program exited with this code (0 is success).
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The program was killed by a signal it did not get from the runner.
    Signaled,
    /// The timeout passed; the program was killed.
    TimedOut,
    /// The program could not be started.
    SpawnFailed {
        /// The operating system's reason.
        reason: String,
    },
}

impl fmt::Display for HookExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited { code: 0 } => f.write_str("succeeded"),
            Self::Exited { code } => write!(f, "exited with code {code}"),
            Self::Signaled => f.write_str("was killed by a signal"),
            Self::TimedOut => f.write_str("timed out and was killed"),
            Self::SpawnFailed { reason } => write!(f, "could not be started: {reason}"),
        }
    }
}

/// What one hook invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    /// How it ended.
    pub exit: HookExit,
    /// The start of its stdout, at most [`HOOK_OUTPUT_BYTES_MAX`] bytes (lossily decoded).
    pub stdout: String,
    /// The start of its stderr, at most [`HOOK_OUTPUT_BYTES_MAX`] bytes.
    pub stderr: String,
    /// Whether either stream was longer than what is kept.
    pub output_truncated: bool,
}

impl HookResult {
    /// A result without output.
    pub fn new(exit: HookExit) -> Self {
        Self {
            exit,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
        }
    }

    /// Whether the hook succeeded (exit code 0).
    pub fn succeeded(&self) -> bool {
        self.exit == HookExit::Exited { code: 0 }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

/// Which mode the snapshotter runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `periodic`.
    Periodic,
    /// `cron`.
    Cron,
    /// `manual`.
    Manual,
}

/// What the snapshotter is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Idle,
    /// Periodic: finding the first round's time from the existing snapshots.
    SyncingUp,
    /// Periodic: the sync-up failed; waiting one interval before the first round.
    SyncUpErrorWait,
    /// Listing the filesystems and naming the snapshots of a round.
    Planning,
    /// Running hooks and taking snapshots.
    Snapshotting,
    /// Waiting for the next round; the last one went well.
    Waiting,
    /// Waiting for the next round; the last one had errors (no earlier retry, as zrepl).
    ErrorWait,
    /// Manual mode: nothing to do until shutdown.
    Manual,
    /// No next round can be computed (see `last_error`); only shutdown is left.
    Halted,
    /// Shut down.
    Stopped,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::SyncingUp => "syncing-up",
            Self::SyncUpErrorWait => "sync-up-error-wait",
            Self::Planning => "planning",
            Self::Snapshotting => "snapshotting",
            Self::Waiting => "waiting",
            Self::ErrorWait => "error-wait",
            Self::Manual => "manual",
            Self::Halted => "halted",
            Self::Stopped => "stopped",
        })
    }
}

/// Why a round, the sync-up or the schedule failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotterError {
    /// Listing the datasets (or their snapshots for the sync-up) failed.
    #[error("cannot list the filesystems to snapshot: {0}; the next round tries again")]
    List(ZfsError),
    /// More filesystems matched than a round takes.
    #[error(
        "{n_filesystems} filesystems match the job's filter, more than the {max} one round \
         snapshots; narrow `filesystems` or split the job"
    )]
    TooManyFilesystems {
        /// How many matched.
        n_filesystems: usize,
        /// The bound.
        max: usize,
    },
    /// The sync-up failed for every filesystem.
    #[error("{0}; snapshotting starts one interval from now")]
    SyncUp(SyncUpError),
    /// The snapshot name for this round is not valid.
    #[error("cannot name this round's snapshots: {0}")]
    Name(NameError),
    /// One or more filesystems were not snapshotted (or their hooks failed).
    #[error(
        "{n_failed} of {n_filesystems} filesystem(s) had errors this round (first: {first}); \
         the others were snapshotted"
    )]
    Filesystems {
        /// How many had errors.
        n_failed: usize,
        /// How many there were.
        n_filesystems: usize,
        /// The first error, as text.
        first: String,
    },
    /// The periodic schedule ran past the representable range.
    #[error("{0}")]
    Overflow(ScheduleOverflow),
    /// The cron schedule has no next fire time.
    #[error("{0}")]
    Cron(CronNextError),
}

/// Why one filesystem's part of a round failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// The snapshot could not be taken.
    #[error("snapshot `{snapshot}` was not taken: {source}")]
    Snapshot {
        /// The snapshot.
        snapshot: VersionName,
        /// The backend's error.
        source: ZfsError,
    },
    /// A pre-snapshot hook with `err_is_fatal` failed, so the snapshot was skipped.
    #[error(
        "snapshot `{snapshot}` was not taken: the pre-snapshot hook `{hook}` {exit} and has \
         `err_is_fatal: true`"
    )]
    FatalHook {
        /// The snapshot.
        snapshot: VersionName,
        /// The hook's path.
        hook: String,
        /// How it ended.
        exit: HookExit,
    },
    /// The snapshot was taken but a hook edge failed.
    #[error(
        "snapshot `{snapshot}` was taken, but {n_failed} hook run(s) failed (first: `{hook}` {exit})"
    )]
    Hooks {
        /// The snapshot.
        snapshot: VersionName,
        /// How many hook edges failed.
        n_failed: usize,
        /// The first failed hook's path.
        hook: String,
        /// How it ended.
        exit: HookExit,
    },
    /// The hook plan was misused (a bug in zferry).
    #[error("hook plan: {0}")]
    Plan(HookPlanError),
}

/// Where one filesystem of a round is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsState {
    /// Nothing done yet.
    Pending,
    /// Pre edges running.
    PreHooks,
    /// Waiting for or in the snapshot call.
    Snapshotting,
    /// Post edges running.
    PostHooks,
    /// Snapshot taken and every hook succeeded.
    Done,
    /// Something failed.
    Error(FsError),
}

/// One hook step in a filesystem's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStepReport {
    /// The step (the snapshot itself is a step too).
    pub step: Step,
    /// The hook's path; empty for the snapshot step.
    pub hook: String,
    /// What became of it.
    pub status: StepStatus,
    /// The invocation's result once it ran, each output stream cut to its last
    /// [`HOOK_REPORT_OUTPUT_BYTES_MAX`] bytes.
    pub result: Option<HookResult>,
}

/// One filesystem of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsReport {
    /// The snapshot this round takes of it.
    pub snapshot: VersionName,
    /// Where it is.
    pub state: FsState,
    /// Its hook table, in execution order (empty without hooks: only the snapshot step).
    pub hooks: Vec<HookStepReport>,
}

/// One round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// When it started (the instant the names are made from).
    pub started_at: Timestamp,
    /// When it finished; `None` while it runs.
    pub finished_at: Option<Timestamp>,
    /// The snapshots' short name; `None` until named.
    pub name: Option<Component>,
    /// The filesystems, in name order.
    pub filesystems: Vec<FsReport>,
    /// Errors of batched snapshot calls that were then retried per filesystem.
    pub batch_errors: Vec<ZfsError>,
    /// Why the round failed as a whole, or the summary of its filesystems' errors.
    pub error: Option<SnapshotterError>,
}

impl RoundReport {
    /// The filesystems whose snapshot was taken this round.
    pub fn taken(&self) -> Vec<&VersionName> {
        self.filesystems
            .iter()
            .filter(|f| {
                matches!(
                    &f.state,
                    FsState::Done | FsState::Error(FsError::Hooks { .. })
                )
            })
            .map(|f| &f.snapshot)
            .collect()
    }

    /// The entry of `fs`.
    pub fn filesystem(&self, fs: &DatasetName) -> Option<&FsReport> {
        self.filesystems.iter().find(|f| f.snapshot.dataset() == fs)
    }
}

/// What the snapshotter shows a status command, readable at any moment through
/// [`Snapshotter::subscribe`].
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotterReport {
    /// The mode.
    pub mode: Mode,
    /// The state.
    pub state: State,
    /// When the current wait ends.
    pub sleep_until: Option<Timestamp>,
    /// The last error (a failed round, sync-up or schedule), cleared by a good round.
    pub last_error: Option<SnapshotterError>,
    /// The sync-up's outcome (periodic), with per-filesystem errors that did not stop it.
    pub sync_up: Option<SyncUp>,
    /// The current round while one runs, else the last one.
    pub round: Option<RoundReport>,
    /// How many rounds finished.
    pub n_rounds: u64,
    /// How many cron fire times were skipped because a round was still running.
    pub n_fires_skipped: u64,
}

/// The notice sent to the owner after every round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundDone {
    /// When the round started.
    pub started_at: Timestamp,
    /// The snapshots taken.
    pub taken: Vec<VersionName>,
    /// Whether the round had errors.
    pub had_errors: bool,
}

// ---------------------------------------------------------------------------------------------
// Driver

/// The snapshotter of one job. Build it with [`Snapshotter::new`], read its report through
/// [`Snapshotter::subscribe`], run it with [`Snapshotter::run`].
#[derive(Debug)]
pub struct Snapshotter {
    backend: Arc<dyn ZfsBackend>,
    clock: Arc<dyn Clock>,
    hooks: Arc<dyn HookRunner>,
    filter: Filter,
    snapshotting: Snapshotting,
    notify: Option<mpsc::Sender<RoundDone>>,
    report: watch::Sender<SnapshotterReport>,
}

impl Snapshotter {
    /// A snapshotter of the filesystems `filter` accepts. `notify` receives a [`RoundDone`]
    /// after every round (`None`: nobody is told, as for a source job).
    pub fn new(
        backend: Arc<dyn ZfsBackend>,
        clock: Arc<dyn Clock>,
        hooks: Arc<dyn HookRunner>,
        filter: Filter,
        snapshotting: Snapshotting,
        notify: Option<mpsc::Sender<RoundDone>>,
    ) -> Self {
        let mode = match &snapshotting {
            Snapshotting::Manual => Mode::Manual,
            Snapshotting::Automatic(a) => match a.schedule {
                Schedule::Periodic { .. } => Mode::Periodic,
                Schedule::Cron { .. } => Mode::Cron,
            },
        };
        let (report, _) = watch::channel(SnapshotterReport {
            mode,
            state: State::Idle,
            sleep_until: None,
            last_error: None,
            sync_up: None,
            round: None,
            n_rounds: 0,
            n_fires_skipped: 0,
        });
        Self {
            backend,
            clock,
            hooks,
            filter,
            snapshotting,
            notify,
            report,
        }
    }

    /// A receiver of the report; `borrow()` reads it at any moment.
    pub fn subscribe(&self) -> watch::Receiver<SnapshotterReport> {
        self.report.subscribe()
    }

    /// Runs until `shutdown` reads `true` or its sender is dropped; see the module doc for
    /// what happens to a round in progress.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        match &self.snapshotting {
            Snapshotting::Manual => {
                self.update(|r| r.state = State::Manual);
                shutdown_requested(&mut shutdown).await;
            }
            Snapshotting::Automatic(auto) => match &auto.schedule {
                Schedule::Periodic { interval } => {
                    self.run_periodic(auto, *interval, &mut shutdown).await;
                }
                Schedule::Cron { schedule, zone } => {
                    self.run_cron(auto, schedule, zone, &mut shutdown).await;
                }
            },
        }
        self.update(|r| {
            r.state = State::Stopped;
            r.sleep_until = None;
        });
    }

    async fn run_periodic(
        &self,
        auto: &AutoSnapshotting,
        interval: Interval,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        self.update(|r| r.state = State::SyncingUp);
        let (mut next, mut wait_state) = match self.sync_up(auto, interval).await {
            Ok(sync) => {
                let next = sync.next;
                self.update(|r| r.sync_up = Some(sync));
                (next, State::Waiting)
            }
            Err(e) => {
                self.update(|r| r.last_error = Some(e));
                match periodic::next_after(self.clock.now(), interval) {
                    Ok(next) => (next, State::SyncUpErrorWait),
                    Err(e) => return self.halt(SnapshotterError::Overflow(e), shutdown).await,
                }
            }
        };
        loop {
            self.update(|r| {
                r.state = wait_state;
                r.sleep_until = Some(next);
            });
            if !self.sleep_until(next, shutdown).await {
                return;
            }
            let invocation = self.clock.now();
            let had_errors = self.round(auto, invocation).await;
            next = match periodic::next_after(invocation, interval) {
                Ok(next) => next,
                Err(e) => return self.halt(SnapshotterError::Overflow(e), shutdown).await,
            };
            wait_state = if had_errors {
                State::ErrorWait
            } else {
                State::Waiting
            };
        }
    }

    async fn run_cron(
        &self,
        auto: &AutoSnapshotting,
        schedule: &CronSchedule,
        zone: &TimeZone,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let mut wait_state = State::Waiting;
        loop {
            let now = self.clock.now().to_zoned(zone.clone());
            let fire = match schedule.next_after(&now) {
                Ok(fire) => fire,
                Err(e) => return self.halt(SnapshotterError::Cron(e), shutdown).await,
            };
            self.update(|r| {
                r.state = wait_state;
                r.sleep_until = Some(fire.timestamp());
            });
            if !self.sleep_until(fire.timestamp(), shutdown).await {
                return;
            }
            let had_errors = self.round(auto, self.clock.now()).await;
            let n_skipped = skipped_fires(schedule, &fire, self.clock.now());
            self.update(|r| r.n_fires_skipped += n_skipped);
            wait_state = if had_errors {
                State::ErrorWait
            } else {
                State::Waiting
            };
        }
    }

    /// Reports an error no round can fix and waits for shutdown.
    async fn halt(&self, error: SnapshotterError, shutdown: &mut watch::Receiver<bool>) {
        self.update(|r| {
            r.state = State::Halted;
            r.sleep_until = None;
            r.last_error = Some(error);
        });
        shutdown_requested(shutdown).await;
    }

    async fn sync_up(
        &self,
        auto: &AutoSnapshotting,
        interval: Interval,
    ) -> Result<SyncUp, SnapshotterError> {
        let filesystems = self.filesystems().await?;
        let listing = if filesystems.is_empty() {
            Default::default()
        } else {
            self.backend
                .list_versions(&filesystems, VersionTypes::Snapshots)
                .await
                .map_err(SnapshotterError::List)?
        };
        let versions: BTreeMap<DatasetName, Vec<Version>> = filesystems
            .iter()
            .map(|fs| (fs.clone(), listing.versions(fs).to_vec()))
            .collect();
        periodic::sync_up(self.clock.now(), interval, auto.namer.prefix(), &versions)
            .map_err(SnapshotterError::SyncUp)
    }

    async fn filesystems(&self) -> Result<Vec<DatasetName>, SnapshotterError> {
        let filesystems = matching_filesystems(self.backend.as_ref(), &self.filter)
            .await
            .map_err(SnapshotterError::List)?;
        if filesystems.len() > ROUND_FILESYSTEMS_MAX {
            return Err(SnapshotterError::TooManyFilesystems {
                n_filesystems: filesystems.len(),
                max: ROUND_FILESYSTEMS_MAX,
            });
        }
        Ok(filesystems)
    }

    /// One round; returns whether it had errors. Always notifies the owner.
    async fn round(&self, auto: &AutoSnapshotting, at: Timestamp) -> bool {
        self.update(|r| {
            r.state = State::Planning;
            r.sleep_until = None;
            r.round = Some(RoundReport {
                started_at: at,
                finished_at: None,
                name: None,
                filesystems: Vec::new(),
                batch_errors: Vec::new(),
                error: None,
            });
        });
        let error = match self.plan_and_snapshot(auto, at).await {
            Ok(()) => self.summarize_filesystems(),
            Err(e) => Some(e),
        };
        let had_errors = error.is_some();
        let finished_at = self.clock.now();
        let mut taken = Vec::new();
        self.update(|r| {
            r.n_rounds += 1;
            r.last_error.clone_from(&error);
            if let Some(round) = &mut r.round {
                round.finished_at = Some(finished_at);
                round.error = error;
                taken = round.taken().into_iter().cloned().collect();
            }
        });
        if let Some(notify) = &self.notify {
            // Full: a notice is pending and this one merges into it. Closed: nobody listens.
            let _ = notify.try_send(RoundDone {
                started_at: at,
                taken,
                had_errors,
            });
        }
        had_errors
    }

    async fn plan_and_snapshot(
        &self,
        auto: &AutoSnapshotting,
        at: Timestamp,
    ) -> Result<(), SnapshotterError> {
        let filesystems = self.filesystems().await?;
        let name = auto.namer.name(at).map_err(SnapshotterError::Name)?;
        let hooks: Vec<Hook> = auto.hooks.iter().map(|h| h.hook.clone()).collect();
        let mut plans = Vec::with_capacity(filesystems.len());
        let mut reports = Vec::with_capacity(filesystems.len());
        for fs in &filesystems {
            let snapshot = VersionName::new(fs.clone(), VersionKind::Snapshot, name.clone())
                .map_err(SnapshotterError::Name)?;
            // The config bounds the hooks, so a plan cannot fail to build; if it did, the
            // filesystem gets an error and the others go on.
            let (plan, state) = match HookPlan::new(&hooks, fs) {
                Ok(plan) => (Some(plan), FsState::Pending),
                Err(e) => (None, FsState::Error(FsError::Plan(e))),
            };
            let mut report = FsReport {
                snapshot,
                state,
                hooks: Vec::new(),
            };
            if let Some(plan) = &plan {
                report.hooks = hook_table(plan, auto, &BTreeMap::new());
            }
            plans.push(plan);
            reports.push(report);
        }
        self.update(|r| {
            r.state = State::Snapshotting;
            if let Some(round) = &mut r.round {
                round.name = Some(name.clone());
                round.filesystems = reports.clone();
            }
        });

        let mut results: Vec<BTreeMap<Step, HookResult>> = vec![BTreeMap::new(); plans.len()];
        for (index, plan) in plans.iter_mut().enumerate() {
            if let Some(plan) = plan {
                self.set_fs_state(index, FsState::PreHooks);
                self.run_hooks(auto, index, plan, &name, &mut results[index])
                    .await;
            }
        }

        let ready: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().and_then(HookPlan::next) == Some(Step::Snapshot))
            .map(|(i, _)| i)
            .collect();
        for &index in &ready {
            self.set_fs_state(index, FsState::Snapshotting);
        }
        let names: Vec<VersionName> = ready.iter().map(|&i| reports[i].snapshot.clone()).collect();
        let (outcomes, batch_errors) = self.take_snapshots(&names).await;
        self.update(|r| {
            if let Some(round) = &mut r.round {
                round.batch_errors = batch_errors;
            }
        });
        let mut snapshot_errors: BTreeMap<usize, ZfsError> = BTreeMap::new();
        for (&index, outcome) in ready.iter().zip(outcomes) {
            let recorded = match &outcome {
                Ok(()) => Outcome::Succeeded,
                Err(_) => Outcome::Failed,
            };
            if let Some(Some(plan)) = plans.get_mut(index) {
                record(plan, recorded);
            }
            if let Err(e) = outcome {
                snapshot_errors.insert(index, e);
            }
        }

        for (index, plan) in plans.iter_mut().enumerate() {
            let Some(plan) = plan else { continue };
            if !plan.is_finished() {
                self.set_fs_state(index, FsState::PostHooks);
                self.run_hooks(auto, index, plan, &name, &mut results[index])
                    .await;
            }
            let snapshot = reports[index].snapshot.clone();
            let state = final_state(
                plan,
                auto,
                &results[index],
                snapshot,
                &mut snapshot_errors,
                index,
            );
            let table = hook_table(plan, auto, &results[index]);
            self.update(|r| {
                if let Some(fs) = r
                    .round
                    .as_mut()
                    .and_then(|round| round.filesystems.get_mut(index))
                {
                    fs.state = state;
                    fs.hooks = table;
                }
            });
        }
        Ok(())
    }

    /// Runs the plan's hook steps until it reaches the snapshot or ends.
    async fn run_hooks(
        &self,
        auto: &AutoSnapshotting,
        index: usize,
        plan: &mut HookPlan,
        name: &Component,
        results: &mut BTreeMap<Step, HookResult>,
    ) {
        // Each turn records one step, so this runs at most `2 * HOOKS_MAX` times.
        while let Some(step) = plan.next() {
            let (hook_index, hook_type) = match step {
                Step::Snapshot => return,
                Step::Pre { hook } => (hook, HookType::PreSnapshot),
                Step::Post { hook } => (hook, HookType::PostSnapshot),
            };
            let Some(hook) = auto.hooks.get(hook_index) else {
                record(plan, Outcome::Failed);
                continue;
            };
            let env = hook_env(hook_type, plan.fs(), name, false, hook.hook.timeout)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            let timeout = Duration::try_from(hook.hook.timeout).unwrap_or(Duration::ZERO);
            let result = match tokio::time::timeout(
                timeout.saturating_add(HOOK_TIMEOUT_GRACE),
                self.hooks.run(&hook.path, env, timeout),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => HookResult::new(HookExit::TimedOut),
            };
            let result = shorten_for_report(result);
            let outcome = if result.succeeded() {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
            results.insert(step, result);
            record(plan, outcome);
            let table = hook_table(plan, auto, results);
            self.update(|r| {
                if let Some(fs) = r
                    .round
                    .as_mut()
                    .and_then(|round| round.filesystems.get_mut(index))
                {
                    fs.hooks = table;
                }
            });
        }
    }

    /// Takes `names` in one call per pool (and per [`SNAPSHOT_BATCH_MAX`]); a failed batch is
    /// retried one snapshot at a time. Returns each snapshot's outcome, aligned with `names`,
    /// and the errors of the failed batches.
    async fn take_snapshots(
        &self,
        names: &[VersionName],
    ) -> (Vec<Result<(), ZfsError>>, Vec<ZfsError>) {
        let mut by_pool: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, name) in names.iter().enumerate() {
            by_pool
                .entry(name.dataset().pool())
                .or_default()
                .push(index);
        }
        let mut outcomes: Vec<Option<Result<(), ZfsError>>> = vec![None; names.len()];
        let mut batch_errors = Vec::new();
        for indexes in by_pool.values() {
            for chunk in indexes.chunks(SNAPSHOT_BATCH_MAX) {
                let batch: Vec<VersionName> = chunk.iter().map(|&i| names[i].clone()).collect();
                match self.backend.snapshot(&batch).await {
                    Ok(()) => {
                        for &i in chunk {
                            outcomes[i] = Some(Ok(()));
                        }
                    }
                    Err(e) if chunk.len() == 1 => {
                        outcomes[chunk[0]] = Some(Err(e));
                    }
                    Err(e) => {
                        batch_errors.push(e);
                        for &i in chunk {
                            let one = std::slice::from_ref(&names[i]);
                            outcomes[i] = Some(self.backend.snapshot(one).await);
                        }
                    }
                }
            }
        }
        let outcomes = outcomes
            .into_iter()
            .zip(names)
            .map(|(o, name)| {
                o.unwrap_or_else(|| {
                    Err(ZfsError::new(
                        crate::backend::Operation::Snapshot,
                        name,
                        crate::backend::ZfsErrorKind::Other {
                            detail: "not attempted".into(),
                        },
                    ))
                })
            })
            .collect();
        (outcomes, batch_errors)
    }

    fn summarize_filesystems(&self) -> Option<SnapshotterError> {
        let report = self.report.borrow();
        let round = report.round.as_ref()?;
        let errors: Vec<&FsError> = round
            .filesystems
            .iter()
            .filter_map(|f| match &f.state {
                FsState::Error(e) => Some(e),
                _ => None,
            })
            .collect();
        let first = errors.first()?;
        Some(SnapshotterError::Filesystems {
            n_failed: errors.len(),
            n_filesystems: round.filesystems.len(),
            first: first.to_string(),
        })
    }

    fn set_fs_state(&self, index: usize, state: FsState) {
        self.update(|r| {
            if let Some(fs) = r
                .round
                .as_mut()
                .and_then(|round| round.filesystems.get_mut(index))
            {
                fs.state = state;
            }
        });
    }

    /// Sleeps until the clock reads `until`; `false` when shutdown came first.
    async fn sleep_until(&self, until: Timestamp, shutdown: &mut watch::Receiver<bool>) -> bool {
        // Each turn sleeps until `until` or for `WALLCLOCK_RECHECK`; it ends when the clock
        // passes `until`.
        loop {
            let left = until.duration_since(self.clock.now());
            let Ok(left) = Duration::try_from(left) else {
                return true;
            };
            if left.is_zero() {
                return true;
            }
            tokio::select! {
                biased;
                () = shutdown_requested(shutdown) => return false,
                () = tokio::time::sleep(left.min(WALLCLOCK_RECHECK)) => {}
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut SnapshotterReport)) {
        self.report.send_modify(f);
    }
}

/// The datasets (filesystems and volumes) that `filter` accepts, in name order: one listing of
/// every pool, as zrepl does.
pub async fn matching_filesystems(
    backend: &dyn ZfsBackend,
    filter: &Filter,
) -> Result<Vec<DatasetName>, ZfsError> {
    let listed = backend.list_datasets(None, &[]).await?;
    let accepted: BTreeSet<DatasetName> = listed
        .into_iter()
        .map(|e| e.name)
        .filter(|name| filter.accepts(name))
        .collect();
    Ok(accepted.into_iter().collect())
}

/// Resolves when shutdown is asked for: the value is `true` or the sender is gone.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can ask any more, so that is a stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Keeps the last [`HOOK_REPORT_OUTPUT_BYTES_MAX`] bytes of each output stream.
fn shorten_for_report(mut result: HookResult) -> HookResult {
    for text in [&mut result.stdout, &mut result.stderr] {
        if text.len() > HOOK_REPORT_OUTPUT_BYTES_MAX {
            let mut start = text.len() - HOOK_REPORT_OUTPUT_BYTES_MAX;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            text.drain(..start);
            result.output_truncated = true;
        }
    }
    result
}

fn record(plan: &mut HookPlan, outcome: Outcome) {
    let recorded = plan.record(outcome);
    // The driver records only after `next()` returned a step, so this cannot fail.
    debug_assert!(recorded.is_ok(), "{recorded:?}");
}

/// The fire times after `fire` that passed by `now` (a round ran through them).
fn skipped_fires(schedule: &CronSchedule, fire: &jiff::Zoned, now: Timestamp) -> u64 {
    let mut n = 0;
    let mut at = fire.clone();
    while n < CRON_SKIPPED_COUNT_MAX {
        match schedule.next_after(&at) {
            Ok(next) if next.timestamp() <= now => {
                n += 1;
                at = next;
            }
            _ => break,
        }
    }
    n
}

fn hook_table(
    plan: &HookPlan,
    auto: &AutoSnapshotting,
    results: &BTreeMap<Step, HookResult>,
) -> Vec<HookStepReport> {
    plan.steps()
        .iter()
        .map(|(step, status)| {
            let hook = match step {
                Step::Pre { hook } | Step::Post { hook } => auto
                    .hooks
                    .get(*hook)
                    .map(|h| h.hook.name.clone())
                    .unwrap_or_default(),
                Step::Snapshot => String::new(),
            };
            HookStepReport {
                step: *step,
                hook,
                status: *status,
                result: results.get(step).cloned(),
            }
        })
        .collect()
}

fn final_state(
    plan: &HookPlan,
    auto: &AutoSnapshotting,
    results: &BTreeMap<Step, HookResult>,
    snapshot: VersionName,
    snapshot_errors: &mut BTreeMap<usize, ZfsError>,
    index: usize,
) -> FsState {
    if let Some(source) = snapshot_errors.remove(&index) {
        return FsState::Error(FsError::Snapshot { snapshot, source });
    }
    let hook_name = |step: &Step| match step {
        Step::Pre { hook } | Step::Post { hook } => auto
            .hooks
            .get(*hook)
            .map(|h| h.hook.name.clone())
            .unwrap_or_default(),
        Step::Snapshot => String::new(),
    };
    let exit = |step: &Step| {
        results
            .get(step)
            .map_or(HookExit::Signaled, |r| r.exit.clone())
    };
    let failed: Vec<&Step> = plan
        .steps()
        .iter()
        .filter(|(_, status)| *status == StepStatus::Err)
        .map(|(step, _)| step)
        .collect();
    if plan.snapshot_skipped() {
        // The fatal pre edge is the last failed pre step.
        let fatal = failed
            .iter()
            .rev()
            .find(|s| matches!(s, Step::Pre { .. }))
            .copied();
        return FsState::Error(FsError::FatalHook {
            snapshot,
            hook: fatal.map(hook_name).unwrap_or_default(),
            exit: fatal.map_or(HookExit::Signaled, exit),
        });
    }
    match failed.first() {
        None => FsState::Done,
        Some(first) => FsState::Error(FsError::Hooks {
            snapshot,
            n_failed: failed.len(),
            hook: hook_name(first),
            exit: exit(first),
        }),
    }
}

#[cfg(test)]
mod tests;
