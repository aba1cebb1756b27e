//! The sender endpoint over a [`ZfsBackend`](crate::backend::ZfsBackend).

use crate::error_class::{Classify, ErrorClass};

/// Why the sender refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// Placeholder until the sender endpoint is written.
    #[error("the sender endpoint is not written yet")]
    NotWritten,
}

impl SenderError {
    /// Whether the sender refused the request's resume token.
    pub fn is_resume_token_refusal(&self) -> bool {
        false
    }
}

impl Classify for SenderError {
    fn class(&self) -> ErrorClass {
        ErrorClass::FILESYSTEM_PERMANENT
    }
}
