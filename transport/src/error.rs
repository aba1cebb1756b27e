//! The transport's errors, and how the engine classifies them.

use std::io;
use std::time::Duration;

use zferry_core::endpoint::EndpointError;
use zferry_core::error_class::{Classify, ErrorClass, FailureKind};

use crate::wire::{FrameError, HandshakeError};

/// Which side broke a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This process.
    Local,
    /// The other end of the connection.
    Peer,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "this side",
            Self::Peer => "the peer",
        })
    }
}

/// Why a connection, a request or a stream failed. Every variant except [`Self::Handshake`] and
/// [`Self::Encode`] is a temporary connectivity problem: reconnecting may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The handshake refused the peer (another protocol or version).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// Nothing arrived, or nothing could be written, within the deadline.
    #[error("{what} timed out after {after:?}; the peer or the network is down")]
    Timeout {
        /// What timed out: "dial", "handshake", "read (peer silent)", "write".
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// A socket operation failed.
    #[error("{op} failed: {detail}")]
    Io {
        /// The operation: "dial", "read", "write", "TLS handshake", ...
        op: &'static str,
        /// The I/O error's kind.
        kind: io::ErrorKind,
        /// The I/O error's message.
        detail: String,
    },
    /// The peer closed the connection without saying why.
    #[error("the peer closed the connection unexpectedly")]
    ConnectionClosed,
    /// The peer closed the connection and said why.
    #[error("the peer closed the connection: {reason}")]
    PeerClosed {
        /// The peer's reason.
        reason: String,
    },
    /// The peer sent something this protocol forbids; the connection was closed.
    #[error("protocol violation by the peer, connection closed: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// A frame was refused; the connection was closed.
    #[error("bad frame from the peer, connection closed: {0}")]
    Frame(#[from] FrameError),
    /// A stream broke mid-transfer.
    #[error("stream broken by {by}: {reason}")]
    StreamReset {
        /// Who broke it.
        by: Side,
        /// Why.
        reason: String,
    },
    /// The server accepted the request but could not answer it.
    #[error("the peer failed to handle the request: {reason}")]
    RemoteFailure {
        /// Why.
        reason: String,
    },
    /// A message did not encode or decode (a bug or a peer of another build).
    #[error("message encoding failed: {detail}")]
    Encode {
        /// postcard's error.
        detail: String,
    },
    /// This side closed the connection.
    #[error("the connection was closed by this side")]
    LocallyClosed,
}

impl TransportError {
    /// An I/O error of `op`; a rustls error or an I/O timeout keeps its message.
    pub fn io(op: &'static str, e: &io::Error) -> Self {
        if let Some(inner) = Self::from_io(e) {
            return inner.clone();
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Self::ConnectionClosed,
            kind => Self::Io {
                op,
                kind,
                detail: e.to_string(),
            },
        }
    }

    /// The transport error inside an I/O error returned by a [`crate::ByteReader`], if any.
    pub fn from_io(e: &io::Error) -> Option<&TransportError> {
        e.get_ref()?.downcast_ref::<TransportError>()
    }

    /// Wraps this error in an I/O error (for `AsyncRead`), keeping it retrievable with
    /// [`Self::from_io`].
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            Self::Timeout { .. } => io::ErrorKind::TimedOut,
            Self::StreamReset { .. } => io::ErrorKind::ConnectionReset,
            _ => io::ErrorKind::ConnectionAborted,
        };
        io::Error::new(kind, self)
    }

    /// Whether a deadline expired (as opposed to a reset or a refusal).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// This error as an endpoint error about `peer` ("sender", "receiver").
    pub fn into_endpoint_error(self, peer: &str) -> EndpointError {
        EndpointError::Connectivity {
            peer: peer.to_owned(),
            timeout: self.is_timeout(),
            detail: self.to_string(),
        }
    }
}

impl Classify for TransportError {
    /// A version mismatch or an encoding bug stays until someone upgrades: the attempt fails.
    /// Everything else is the network: reconnect and retry.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Handshake(_) | Self::Encode { .. } => ErrorClass::FATAL,
            Self::Timeout { .. } => FailureKind::NetworkTimeout.class(),
            _ => FailureKind::ConnectionLost.class(),
        }
    }
}
