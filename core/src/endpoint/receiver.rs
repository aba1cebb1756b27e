//! The receiver endpoint over a [`ZfsBackend`](crate::backend::ZfsBackend).

use crate::error_class::{Classify, ErrorClass};

/// Why the receiver refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverError {
    /// Placeholder until the receiver endpoint is written.
    #[error("the receiver endpoint is not written yet")]
    NotWritten,
}

impl Classify for ReceiverError {
    fn class(&self) -> ErrorClass {
        ErrorClass::FILESYSTEM_PERMANENT
    }
}
