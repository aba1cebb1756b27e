//! Snapshot hooks as a pure plan: which hooks apply to a filesystem, the environment each
//! invocation gets, and the order of pre edges, the snapshot and post edges.
//!
//! For one filesystem, the hooks whose `filesystems` filter accepts it run their pre edge in
//! config order, then the snapshot is taken, then the post edges run in reverse order (a
//! stack, so that e.g. a lock taken first is released last). A failed pre edge of a hook with
//! `err_is_fatal` skips the later hooks and the snapshot. A post edge runs only if its hook's
//! pre edge succeeded; a failed post edge does not stop the others.
//!
//! One deliberate difference from zrepl: after a fatal pre-edge failure zrepl returns without
//! running any post edge, so the hooks whose pre edge had already succeeded (a
//! `mysql-lock-tables` lock, say) are never undone. Here they are: their post edges still run,
//! in reverse order, and the snapshot is skipped.
//!
//! [`HookPlan`] is a state machine: the driver asks it for the [`Step`] to run next, runs it,
//! and reports whether it succeeded. It never runs anything itself.

use std::collections::BTreeMap;
use std::fmt;

use jiff::SignedDuration;

use crate::filter::Filter;
use crate::name::{Component, DatasetName};

/// zrepl's default hook timeout.
pub const HOOK_TIMEOUT_DEFAULT: SignedDuration = SignedDuration::from_secs(30);

/// The most hooks one snapshotting section may have; each costs two steps per filesystem.
pub const HOOKS_MAX: usize = 256;

/// The environment variable with the hook type (`pre_snapshot` or `post_snapshot`).
pub const ENV_HOOKTYPE: &str = "ZREPL_HOOKTYPE";
/// The environment variable with the filesystem name.
pub const ENV_FS: &str = "ZREPL_FS";
/// The environment variable with the snapshot's short name (after the `@`).
pub const ENV_SNAPNAME: &str = "ZREPL_SNAPNAME";
/// The environment variable that is `true` in a dry run and empty otherwise.
pub const ENV_DRYRUN: &str = "ZREPL_DRYRUN";
/// The environment variable with the hook's timeout in whole seconds, rounded down.
pub const ENV_TIMEOUT: &str = "ZREPL_TIMEOUT";

/// One configured hook, as far as ordering and environment are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// How the hook is shown in reports (a command hook's path).
    pub name: String,
    /// The filesystems it applies to (zrepl's default is `{"<": true}`).
    pub filesystems: Filter,
    /// Whether a failed pre edge skips the later hooks and the snapshot.
    pub err_is_fatal: bool,
    /// How long one edge may run.
    pub timeout: SignedDuration,
}

/// Which edge a hook invocation is, as zrepl names it in `ZREPL_HOOKTYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookType {
    /// Before the snapshot.
    PreSnapshot,
    /// After the snapshot.
    PostSnapshot,
}

impl HookType {
    /// The value of `ZREPL_HOOKTYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreSnapshot => "pre_snapshot",
            Self::PostSnapshot => "post_snapshot",
        }
    }
}

impl fmt::Display for HookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The environment variables zrepl gives a command hook (added to the daemon's environment).
pub fn hook_env(
    hook_type: HookType,
    fs: &DatasetName,
    snapname: &Component,
    dry_run: bool,
    timeout: SignedDuration,
) -> BTreeMap<&'static str, String> {
    // Whole seconds rounded down, as zrepl's `%.f` of `math.Floor(seconds)`.
    let mut timeout_secs = timeout.as_secs();
    if timeout.subsec_nanos() < 0 {
        timeout_secs -= 1;
    }
    BTreeMap::from([
        (ENV_HOOKTYPE, hook_type.as_str().to_owned()),
        (ENV_FS, fs.to_string()),
        (ENV_SNAPNAME, snapname.as_str().to_owned()),
        (ENV_DRYRUN, if dry_run { "true" } else { "" }.to_owned()),
        (ENV_TIMEOUT, timeout_secs.to_string()),
    ])
}

/// The indices (into `hooks`) of the hooks that apply to `fs`, in config order.
pub fn hooks_for_fs(hooks: &[Hook], fs: &DatasetName) -> Vec<usize> {
    hooks
        .iter()
        .enumerate()
        .filter(|(_, hook)| hook.filesystems.accepts(fs))
        .map(|(i, _)| i)
        .collect()
}

/// The indices of the hooks that apply to none of `filesystems` (zrepl warns about them).
pub fn hooks_matching_nothing(hooks: &[Hook], filesystems: &[DatasetName]) -> Vec<usize> {
    hooks
        .iter()
        .enumerate()
        .filter(|(_, hook)| !filesystems.iter().any(|fs| hook.filesystems.accepts(fs)))
        .map(|(i, _)| i)
        .collect()
}

/// One step of a filesystem's hook plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// The pre edge of the hook at this index of the configured list.
    Pre {
        /// Index into the configured hooks.
        hook: usize,
    },
    /// Taking the snapshot.
    Snapshot,
    /// The post edge of the hook at this index of the configured list.
    Post {
        /// Index into the configured hooks.
        hook: usize,
    },
}

/// What became of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepStatus {
    /// Not run yet.
    Pending,
    /// Ran and succeeded.
    Ok,
    /// Ran and failed.
    Err,
    /// Not run because a fatal pre edge failed before it.
    SkippedDueToFatalErr,
    /// A post edge not run because its hook's pre edge failed.
    SkippedDueToPreErr,
}

/// How a step the driver ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// It succeeded.
    Succeeded,
    /// It failed (including a timeout).
    Failed,
}

/// A misuse of [`HookPlan`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookPlanError {
    /// More hooks than [`HOOKS_MAX`].
    #[error("{n_hooks} hooks are configured; at most {HOOKS_MAX} are supported")]
    TooManyHooks {
        /// How many there are.
        n_hooks: usize,
    },
    /// An outcome was recorded after the last step.
    #[error("the hook plan for `{fs}` has no step left to record an outcome for")]
    Finished {
        /// The filesystem.
        fs: DatasetName,
    },
}

/// The hook steps for one filesystem and how far they have got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookPlan {
    fs: DatasetName,
    /// Pre edges in config order, the snapshot, post edges in reverse order.
    steps: Vec<(Step, StepStatus)>,
    /// `err_is_fatal` of each applicable hook, in config order.
    fatal: Vec<bool>,
    cursor: usize,
}

impl HookPlan {
    /// The plan for `fs` over the configured hooks.
    pub fn new(hooks: &[Hook], fs: &DatasetName) -> Result<Self, HookPlanError> {
        if hooks.len() > HOOKS_MAX {
            return Err(HookPlanError::TooManyHooks {
                n_hooks: hooks.len(),
            });
        }
        let applicable = hooks_for_fs(hooks, fs);
        let pending = |step| (step, StepStatus::Pending);
        let steps = applicable
            .iter()
            .map(|&hook| pending(Step::Pre { hook }))
            .chain([pending(Step::Snapshot)])
            .chain(
                applicable
                    .iter()
                    .rev()
                    .map(|&hook| pending(Step::Post { hook })),
            )
            .collect();
        let fatal = applicable
            .iter()
            .map(|&i| hooks.get(i).is_some_and(|h| h.err_is_fatal))
            .collect();
        Ok(Self {
            fs: fs.clone(),
            steps,
            fatal,
            cursor: 0,
        })
    }

    /// The step to run next, or `None` when the plan is finished.
    pub fn next(&self) -> Option<Step> {
        self.steps.get(self.cursor).map(|(step, _)| *step)
    }

    /// Records how the step returned by [`Self::next`] ended, and moves on.
    pub fn record(&mut self, outcome: Outcome) -> Result<(), HookPlanError> {
        let n_pre = self.fatal.len();
        let Some((_, status)) = self.steps.get_mut(self.cursor) else {
            return Err(HookPlanError::Finished {
                fs: self.fs.clone(),
            });
        };
        *status = match outcome {
            Outcome::Succeeded => StepStatus::Ok,
            Outcome::Failed => StepStatus::Err,
        };
        let pre_index = self.cursor;
        if pre_index < n_pre
            && outcome == Outcome::Failed
            && self.fatal.get(pre_index).copied().unwrap_or(false)
        {
            // Skip the later pre edges, the snapshot, and the post edges of this hook and the
            // later ones (positions `n_pre + 1 ..= 2 * n_pre - pre_index`).
            let last_skipped = 2 * n_pre - pre_index;
            for (_, status) in self
                .steps
                .iter_mut()
                .take(last_skipped + 1)
                .skip(pre_index + 1)
            {
                *status = StepStatus::SkippedDueToFatalErr;
            }
        }
        self.advance();
        Ok(())
    }

    /// Every step with its status, in execution order.
    pub fn steps(&self) -> &[(Step, StepStatus)] {
        &self.steps
    }

    /// Whether every step has run or been skipped.
    pub fn is_finished(&self) -> bool {
        self.cursor >= self.steps.len()
    }

    /// Whether the snapshot was skipped because of a fatal pre-edge failure.
    pub fn snapshot_skipped(&self) -> bool {
        self.steps.iter().any(|(step, status)| {
            *step == Step::Snapshot && *status == StepStatus::SkippedDueToFatalErr
        })
    }

    /// Whether any step failed; zrepl then marks the filesystem's snapshot as errored.
    pub fn had_error(&self) -> bool {
        self.steps
            .iter()
            .any(|(_, status)| *status == StepStatus::Err)
    }

    /// The filesystem.
    pub fn fs(&self) -> &DatasetName {
        &self.fs
    }

    /// Moves the cursor to the next pending step, marking post edges whose pre edge failed.
    fn advance(&mut self) {
        let n_pre = self.fatal.len();
        self.cursor += 1;
        // Bounded by the number of steps, `2 * HOOKS_MAX + 1`.
        while let Some(&(step, status)) = self.steps.get(self.cursor) {
            if status != StepStatus::Pending {
                self.cursor += 1;
                continue;
            }
            if let Step::Post { .. } = step {
                let pre_position = 2 * n_pre - self.cursor;
                let pre_status = self.steps.get(pre_position).map(|(_, s)| *s);
                if pre_status != Some(StepStatus::Ok) {
                    if let Some((_, status)) = self.steps.get_mut(self.cursor) {
                        *status = StepStatus::SkippedDueToPreErr;
                    }
                    self.cursor += 1;
                    continue;
                }
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests;
