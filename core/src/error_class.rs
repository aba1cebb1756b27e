//! Error classification, and the retry decisions that follow from it.
//!
//! Every error that can end a step, a planning round or an attempt answers two questions, with
//! enums rather than bools (zrepl's `Temporary()` and `LocalToFS()`):
//!
//! - [`Persistence`]: will the same operation work after reconnecting ([`Persistence::Temporary`])
//!   or fail again the same way ([`Persistence::Permanent`])?
//! - [`Scope`]: does it concern one filesystem ([`Scope::Filesystem`]: the others carry on) or
//!   the whole attempt ([`Scope::Attempt`]: every filesystem stops)?
//!
//! # The table of classes
//!
//! | failure                                   | persistence | scope      | source                    |
//! |-------------------------------------------|-------------|------------|---------------------------|
//! | network timeout (heartbeat, dial, read)   | temporary   | attempt    | [`FailureKind::NetworkTimeout`] |
//! | connection lost (reset, peer unavailable) | temporary   | attempt    | [`FailureKind::ConnectionLost`] |
//! | conflict (no common snapshot, diverged)   | permanent   | filesystem | [`FailureKind::Conflict`] |
//! | validation failure (resume token, guid)   | permanent   | filesystem | [`FailureKind::Validation`] |
//! | invalid name                              | permanent   | filesystem | [`NameError`], [`FailureKind::InvalidName`] |
//! | malformed `zfs list` output               | permanent   | attempt    | [`ListingError`], [`FailureKind::MalformedListing`] |
//! | cancelled (reset, shutdown, watchdog)     | permanent   | attempt    | [`FailureKind::Cancelled`] |
//!
//! Network failures are attempt-wide because when the connection is gone every filesystem's next
//! step fails too; the cure is to reconnect, not to retry one filesystem. Everything that is not
//! positively known to be transient is permanent: retrying a conflict would only repeat it, and
//! zrepl made the same conservative choice.
//!
//! # The decisions
//!
//! - [`decide_filesystem`]: after one filesystem's error, does that filesystem retry, stop, or
//!   does the whole attempt stop?
//! - [`decide_run`]: after an attempt ended, is the run done, does it reconnect and make another
//!   attempt (at most `attempts_max` in all, by default [`ATTEMPTS_MAX`]), or does it stop?

use std::fmt;

use crate::listing::ListingError;
use crate::name::NameError;

/// The most attempts of one replication run (zrepl's `ZREPL_REPLICATION_MAX_ATTEMPTS`, default
/// 3). After that many attempts that ended in temporary errors, the run stops and the next run
/// (next snapshot, interval or wakeup) starts afresh.
pub const ATTEMPTS_MAX: u32 = 3;

/// The most consecutive errors a filesystem may have within one attempt before a temporary,
/// filesystem-scoped error stops it instead of queueing it for another try.
pub const FILESYSTEM_ERRORS_MAX: u32 = 3;

/// Whether retrying can help.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// Retrying after a reconnect may succeed (timeouts, lost connections).
    Temporary,
    /// Retrying would fail the same way (conflicts, invalid data, invalid names).
    Permanent,
}

/// What the error stops.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only the filesystem it happened on; the other filesystems carry on.
    Filesystem,
    /// The whole attempt: every filesystem stops.
    Attempt,
}

/// The two answers about one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ErrorClass {
    /// Whether retrying can help.
    pub persistence: Persistence,
    /// What the error stops.
    pub scope: Scope,
}

impl ErrorClass {
    /// A network failure: reconnect and make another attempt.
    pub const CONNECTIVITY: ErrorClass = ErrorClass {
        persistence: Persistence::Temporary,
        scope: Scope::Attempt,
    };
    /// A problem of one filesystem that will not go away by itself.
    pub const FILESYSTEM_PERMANENT: ErrorClass = ErrorClass {
        persistence: Persistence::Permanent,
        scope: Scope::Filesystem,
    };
    /// A problem of one filesystem that may go away on another try.
    pub const FILESYSTEM_TEMPORARY: ErrorClass = ErrorClass {
        persistence: Persistence::Temporary,
        scope: Scope::Filesystem,
    };
    /// A problem that ends the whole run.
    pub const FATAL: ErrorClass = ErrorClass {
        persistence: Persistence::Permanent,
        scope: Scope::Attempt,
    };
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let persistence = match self.persistence {
            Persistence::Temporary => "temporary",
            Persistence::Permanent => "permanent",
        };
        let scope = match self.scope {
            Scope::Filesystem => "this filesystem",
            Scope::Attempt => "the whole attempt",
        };
        write!(f, "{persistence}, affects {scope}")
    }
}

/// An error that knows its class.
pub trait Classify {
    /// The error's persistence and scope.
    fn class(&self) -> ErrorClass;
}

/// The kinds of failure the table in the module doc classifies. Error types of the transport and
/// the ZFS backends map their variants onto these, so that the classification lives in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// A network operation timed out (heartbeat, dial, read, write).
    NetworkTimeout,
    /// The connection broke or the peer is unavailable.
    ConnectionLost,
    /// Sender and receiver histories conflict (no common snapshot, diverged receiver).
    Conflict,
    /// Data from the peer or from ZFS failed validation (resume token, GUID mismatch).
    Validation,
    /// A name is not a valid ZFS or zferry name.
    InvalidName,
    /// `zfs list` output could not be parsed.
    MalformedListing,
    /// The attempt was cancelled (reset signal, shutdown, watchdog).
    Cancelled,
}

impl Classify for FailureKind {
    fn class(&self) -> ErrorClass {
        match self {
            FailureKind::NetworkTimeout | FailureKind::ConnectionLost => ErrorClass::CONNECTIVITY,
            FailureKind::Conflict | FailureKind::Validation | FailureKind::InvalidName => {
                ErrorClass::FILESYSTEM_PERMANENT
            }
            FailureKind::MalformedListing | FailureKind::Cancelled => ErrorClass::FATAL,
        }
    }
}

impl Classify for NameError {
    /// A name that is invalid stays invalid; it concerns the filesystem that carries it.
    fn class(&self) -> ErrorClass {
        FailureKind::InvalidName.class()
    }
}

impl Classify for ListingError {
    /// A listing that does not parse leaves the attempt without a trustworthy view of either
    /// side, so nothing can be planned safely.
    fn class(&self) -> ErrorClass {
        FailureKind::MalformedListing.class()
    }
}

/// What happens to one filesystem after an error on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilesystemDecision {
    /// Queue it for another try (as a retry, after the healthy filesystems).
    Retry,
    /// Stop this filesystem for the rest of the run; the others carry on.
    StopFilesystem,
    /// Stop every filesystem: the attempt is over.
    StopAttempt,
}

/// Decides what an error does to its filesystem, given the filesystem's consecutive errors
/// including this one: attempt-scoped errors stop the attempt; a permanent filesystem error stops
/// the filesystem; a temporary filesystem error retries it until it has failed
/// [`FILESYSTEM_ERRORS_MAX`] times in a row.
pub fn decide_filesystem(class: ErrorClass, n_errors: u32) -> FilesystemDecision {
    match (class.scope, class.persistence) {
        (Scope::Attempt, _) => FilesystemDecision::StopAttempt,
        (Scope::Filesystem, Persistence::Permanent) => FilesystemDecision::StopFilesystem,
        (Scope::Filesystem, Persistence::Temporary) if n_errors < FILESYSTEM_ERRORS_MAX => {
            FilesystemDecision::Retry
        }
        (Scope::Filesystem, Persistence::Temporary) => FilesystemDecision::StopFilesystem,
    }
}

/// What the replication driver does after an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunDecision {
    /// No errors: the run is complete.
    Done,
    /// Wait for the connection to come back, then make another attempt.
    RetryAfterReconnect {
        /// The index (into the attempt's errors) of the most recent temporary error, to show in
        /// status as the reason for the retry.
        cause: usize,
    },
    /// Make no further attempt in this run.
    StopRun {
        /// Why.
        reason: StopReason,
    },
}

/// Why a run stops with errors. Each reason names, by index into the attempt's errors, the error
/// that status should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// A permanent error stopped the whole attempt; another attempt would fail the same way.
    Permanent {
        /// The most recent permanent attempt-scoped error.
        cause: usize,
    },
    /// Temporary errors persisted through the allowed number of attempts.
    AttemptsExhausted {
        /// The attempts made.
        n_attempts: u32,
        /// The most recent temporary error.
        cause: usize,
    },
    /// Some filesystems failed for good; every other filesystem completed.
    FilesystemsFailed {
        /// The most recent filesystem error.
        cause: usize,
    },
}

/// Decides the run's next move from the classes of the errors of the attempt that just ended
/// (most recent last), the number of attempts made so far (this one included), and the most
/// a run may make (the configured `attempts_max`, zrepl's default [`ATTEMPTS_MAX`]).
///
/// 1. No errors: [`RunDecision::Done`].
/// 2. A permanent attempt-scoped error: stop (another attempt would fail the same way).
/// 3. Otherwise a temporary error: reconnect and make another attempt, unless `attempts_max`
///    attempts have been made.
/// 4. Otherwise only filesystems failed for good, the others completed: stop.
///
/// zrepl looks at the most recent error only. That stops the run when a conflict on one
/// filesystem happens to be reported after a timeout that interrupted the others; here a
/// filesystem's permanent error never prevents the retry that the other filesystems need.
pub fn decide_run(errors: &[ErrorClass], n_attempts_made: u32, attempts_max: u32) -> RunDecision {
    let most_recent = |wanted: fn(&ErrorClass) -> bool| errors.iter().rposition(wanted);
    if errors.is_empty() {
        return RunDecision::Done;
    }
    if let Some(cause) = most_recent(|c| *c == ErrorClass::FATAL) {
        return RunDecision::StopRun {
            reason: StopReason::Permanent { cause },
        };
    }
    if let Some(cause) = most_recent(|c| c.persistence == Persistence::Temporary) {
        if n_attempts_made < attempts_max {
            return RunDecision::RetryAfterReconnect { cause };
        }
        return RunDecision::StopRun {
            reason: StopReason::AttemptsExhausted {
                n_attempts: n_attempts_made,
                cause,
            },
        };
    }
    // Everything left is permanent and filesystem-scoped; `errors` is not empty.
    let cause = errors.len() - 1;
    RunDecision::StopRun {
        reason: StopReason::FilesystemsFailed { cause },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::parse_versions;
    use crate::name::DatasetName;

    /// Parses a compact class list: `TA` temporary/attempt, `TF`, `PA`, `PF`.
    fn classes(spec: &str) -> Vec<ErrorClass> {
        spec.split_whitespace()
            .map(|code| {
                let persistence = match &code[..1] {
                    "T" => Persistence::Temporary,
                    "P" => Persistence::Permanent,
                    _ => panic!("bad code {code}"),
                };
                let scope = match &code[1..] {
                    "A" => Scope::Attempt,
                    "F" => Scope::Filesystem,
                    _ => panic!("bad code {code}"),
                };
                ErrorClass { persistence, scope }
            })
            .collect()
    }

    fn render_run(decision: RunDecision) -> String {
        match decision {
            RunDecision::Done => "done".into(),
            RunDecision::RetryAfterReconnect { cause } => format!("reconnect cause={cause}"),
            RunDecision::StopRun {
                reason: StopReason::Permanent { cause },
            } => {
                format!("stop permanent cause={cause}")
            }
            RunDecision::StopRun {
                reason: StopReason::AttemptsExhausted { n_attempts, cause },
            } => {
                format!("stop exhausted n={n_attempts} cause={cause}")
            }
            RunDecision::StopRun {
                reason: StopReason::FilesystemsFailed { cause },
            } => {
                format!("stop filesystems cause={cause}")
            }
        }
    }

    #[test]
    fn run_decisions() {
        // (errors of the attempt, most recent last; attempts made; expected decision)
        let table: &[(&str, u32, &str)] = &[
            ("", 1, "done"),
            ("", ATTEMPTS_MAX, "done"),
            ("TA", 1, "reconnect cause=0"),
            ("TA", 2, "reconnect cause=0"),
            ("TA", 3, "stop exhausted n=3 cause=0"),
            ("TF", 1, "reconnect cause=0"),
            ("PA", 1, "stop permanent cause=0"),
            ("PF", 1, "stop filesystems cause=0"),
            ("PF PF", 1, "stop filesystems cause=1"),
            // A filesystem's conflict reported after the timeout does not prevent the retry.
            ("TA PF", 1, "reconnect cause=0"),
            ("PF TA", 1, "reconnect cause=1"),
            ("TA PF TF PF", 2, "reconnect cause=2"),
            // A permanent attempt-wide error wins over any temporary one.
            ("TA PA TA", 1, "stop permanent cause=1"),
            ("PA TA PA PF", 1, "stop permanent cause=2"),
            ("PF TA", 3, "stop exhausted n=3 cause=1"),
            ("TA", 4, "stop exhausted n=4 cause=0"),
        ];
        for (errors, n_attempts, expected) in table {
            let got = render_run(decide_run(&classes(errors), *n_attempts, ATTEMPTS_MAX));
            assert_eq!(got, *expected, "errors {errors:?}, attempt {n_attempts}");
        }
    }

    #[test]
    fn filesystem_decisions() {
        use FilesystemDecision::*;
        let table: &[(&str, u32, FilesystemDecision)] = &[
            ("TA", 1, StopAttempt),
            ("PA", 1, StopAttempt),
            ("PF", 1, StopFilesystem),
            ("TF", 1, Retry),
            ("TF", FILESYSTEM_ERRORS_MAX - 1, Retry),
            ("TF", FILESYSTEM_ERRORS_MAX, StopFilesystem),
            ("TF", u32::MAX, StopFilesystem),
        ];
        for (class, n_errors, expected) in table {
            let class = classes(class)[0];
            assert_eq!(
                decide_filesystem(class, *n_errors),
                *expected,
                "{class} n={n_errors}"
            );
        }
    }

    #[test]
    fn failure_kinds_follow_the_table() {
        let table = [
            (FailureKind::NetworkTimeout, "TA"),
            (FailureKind::ConnectionLost, "TA"),
            (FailureKind::Conflict, "PF"),
            (FailureKind::Validation, "PF"),
            (FailureKind::InvalidName, "PF"),
            (FailureKind::MalformedListing, "PA"),
            (FailureKind::Cancelled, "PA"),
        ];
        for (kind, expected) in table {
            assert_eq!(kind.class(), classes(expected)[0], "{kind:?}");
        }
    }

    #[test]
    fn core_errors_are_classified() {
        let name_error = DatasetName::parse("pool//a").unwrap_err();
        assert_eq!(name_error.class(), ErrorClass::FILESYSTEM_PERMANENT);
        let listing_error = parse_versions("pool/a@s\tnot-a-guid\t1\t1\t0\n").unwrap_err();
        assert_eq!(listing_error.class(), ErrorClass::FATAL);
        // A listing error caused by a bad name is still attempt-wide: the listing as a whole is
        // untrustworthy.
        let listing_error = parse_versions("pool//a@s\t1\t1\t1\t0\n").unwrap_err();
        assert_eq!(listing_error.class(), ErrorClass::FATAL);
    }

    #[test]
    fn classes_render_for_status() {
        assert_eq!(
            ErrorClass::CONNECTIVITY.to_string(),
            "temporary, affects the whole attempt"
        );
        assert_eq!(
            ErrorClass::FILESYSTEM_PERMANENT.to_string(),
            "permanent, affects this filesystem"
        );
    }
}
