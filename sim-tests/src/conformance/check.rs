//! Failures of cases and the assertions that produce them.
//!
//! Cases return a [`CaseFailure`] instead of panicking, so that the failure names the source
//! line and what was expected; the runner still catches panics as a last resort.

use std::fmt;
use std::panic::Location;

use zferry_core::backend::{ZfsError, ZfsErrorKind};

/// Why a case failed: a message and the source line that decided it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at {location})")]
pub struct CaseFailure {
    /// What went wrong, with the values involved.
    pub message: String,
    /// `file:line` of the check.
    pub location: String,
}

impl CaseFailure {
    /// A failure at the caller's source line.
    #[track_caller]
    pub fn new(message: impl Into<String>) -> Self {
        let at = Location::caller();
        Self {
            message: message.into(),
            location: format!("{}:{}", at.file(), at.line()),
        }
    }
}

/// Turns a backend error into a failure that says which step of the case failed.
pub trait Ctx<T> {
    /// `what` is the step ("snapshot @1", "receive into dst").
    #[track_caller]
    fn ctx(self, what: impl fmt::Display) -> Result<T, CaseFailure>;
}

impl<T> Ctx<T> for Result<T, ZfsError> {
    #[track_caller]
    fn ctx(self, what: impl fmt::Display) -> Result<T, CaseFailure> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => Err(CaseFailure::new(format!(
                "{what}: unexpected error {:?}: {e}",
                e.kind
            ))),
        }
    }
}

/// Expects `result` to be an error of exactly `kind`; returns the error for further checks.
#[track_caller]
pub fn expect_kind<T: fmt::Debug>(
    result: Result<T, ZfsError>,
    kind: &ZfsErrorKind,
    what: impl fmt::Display,
) -> Result<ZfsError, CaseFailure> {
    match result {
        Err(e) if &e.kind == kind => Ok(e),
        Err(e) => Err(CaseFailure::new(format!(
            "{what}: expected error {kind:?}, got error {:?}: {e}",
            e.kind
        ))),
        Ok(v) => Err(CaseFailure::new(format!(
            "{what}: expected error {kind:?}, got success {v:?}"
        ))),
    }
}

/// Expects `result` to be an error matching `pred` (for kinds with a payload that the case
/// cannot know, like a resume token); returns the error.
#[track_caller]
pub fn expect_err_where<T: fmt::Debug>(
    result: Result<T, ZfsError>,
    expected: &str,
    pred: impl FnOnce(&ZfsErrorKind) -> bool,
    what: impl fmt::Display,
) -> Result<ZfsError, CaseFailure> {
    match result {
        Err(e) if pred(&e.kind) => Ok(e),
        Err(e) => Err(CaseFailure::new(format!(
            "{what}: expected error {expected}, got error {:?}: {e}",
            e.kind
        ))),
        Ok(v) => Err(CaseFailure::new(format!(
            "{what}: expected error {expected}, got success {v:?}"
        ))),
    }
}

/// Fails the case with a formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::CaseFailure::new(format!($($msg)+)));
        }
    };
}
pub(crate) use ensure;

/// Fails the case unless the two values are equal; the message shows both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err($crate::conformance::CaseFailure::new(format!(
                "{}: expected {:?}, got {:?}",
                format!($($msg)+),
                right,
                left
            )));
        }
    }};
}
pub(crate) use ensure_eq;
