//! The two ends of a replication: the sender endpoint, which owns the filesystems being
//! replicated, and the receiver endpoint, which owns the copies. The active side of a job (push
//! or pull) drives both through the traits here, whether the other end is in the same process
//! or (with the transport) on another host; the passive side (sink or source) only serves them.
//!
//! The request and response shapes are zrepl's (reference 2.1): list filesystems, list versions,
//! dry-run send, send, receive, send completed, replication cursor, destroy snapshots. One
//! addition: [`Endpoint::prune`] runs a side's pruning *on the side that owns the pool*, so that
//! the second check before every destroy (`engine::pruner`) happens next to the pool rather than
//! one network round trip away, and a side's pruning costs one request instead of one per
//! filesystem.
//!
//! # Naming on the wire
//!
//! Filesystems are always named by their *sender-side* path, as in zrepl. The receiver maps a
//! path into its own namespace (`root_fs/<client identity>/<path>`) and back; nothing the active
//! side sends can name a dataset outside that namespace.
//!
//! # The protection strategy travels with each request
//!
//! As in zrepl, the active side decides the protection level ([`Protection`]) and tells both
//! endpoints in every send, receive and send-completed request, so that the sender's holds and
//! bookmarks and the receiver's hold agree on one strategy.

pub mod abstractions;
pub mod receiver;
pub mod sender;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::{ByteStream, DestroyOutcome, ZfsError, ZfsErrorKind};
use crate::engine::pruner::PruneReport;
use crate::error_class::{Classify, ErrorClass, FailureKind};
use crate::name::{Component, DatasetName};
use crate::prune::{KeepRules, ReplicationCursor};
use crate::version::{Guid, Version};

pub use receiver::ReceiverError;
pub use sender::SenderError;

/// What a step guarantees if it is interrupted or its snapshots are destroyed meanwhile
/// (zrepl's `replication.protection.{initial,incremental}`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Step holds on `from` and `to` while the step runs: an interrupted step can always be
    /// resumed, and the next incremental step always has its base. The default.
    #[default]
    GuaranteeResumability,
    /// Tentative cursor bookmarks instead of holds: the next incremental step always has its
    /// base, but `from` and `to` may be destroyed mid-step (the partial receive is then
    /// discarded and a new step planned).
    GuaranteeIncremental,
    /// No holds, no bookmarks: nothing protects the step, and sender-side pruning has no cursor
    /// (zrepl issue #682). For users who manage retention by hand.
    GuaranteeNothing,
}

impl Guarantee {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GuaranteeResumability => "guarantee_resumability",
            Self::GuaranteeIncremental => "guarantee_incremental",
            Self::GuaranteeNothing => "guarantee_nothing",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guarantees of initial (full) and incremental steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Protection {
    /// For a full send (no `from`).
    pub initial: Guarantee,
    /// For an incremental send.
    pub incremental: Guarantee,
}

impl Protection {
    /// The guarantee of a step with (`true`) or without (`false`) an incremental base.
    pub fn for_step(&self, incremental: bool) -> Guarantee {
        if incremental {
            self.incremental
        } else {
            self.initial
        }
    }
}

/// A filesystem as an endpoint reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// The sender-side path.
    pub path: DatasetName,
    /// Whether it is a placeholder (`zrepl:placeholder=on`, set locally): a dataset that only
    /// exists to hold children, with no snapshots of its own to replicate.
    pub is_placeholder: bool,
    /// The receiver's `receive_resume_token`, if a receive was interrupted (receiver only;
    /// always `None` from a sender).
    pub resume_token: Option<String>,
}

/// A send (or a dry run of one): `from` and `to` as the active side saw them on the sender.
/// The sender checks every field against its own pool before sending a byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReq {
    /// The sender's filesystem.
    pub filesystem: DatasetName,
    /// The incremental base (snapshot or bookmark) with the GUID the active side saw; `None`
    /// for a full send.
    pub from: Option<Version>,
    /// The snapshot to send, with the GUID the active side saw.
    pub to: Version,
    /// Whether the stream also carries every snapshot between `from` and `to` (`zfs send -I`);
    /// only with a snapshot as `from`.
    pub include_intermediates: bool,
    /// The receiver's resume token for this step, if the step continues a partial receive.
    pub resume_token: Option<String>,
    /// The protection strategy the active side chose.
    pub protection: Protection,
}

impl SendReq {
    /// The guarantee that applies to this step.
    pub fn guarantee(&self) -> Guarantee {
        self.protection.for_step(self.from.is_some())
    }
}

/// The answer to a send or a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRes {
    /// Whether the stream continues the resume token (`zfs send -t`). When `false` although a
    /// token was given, the receiver must discard its partial state before receiving.
    pub used_resume_token: bool,
    /// The stream's expected size in bytes, where ZFS can tell.
    pub expected_size: Option<u64>,
}

/// A receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveReq {
    /// The sender-side path of the filesystem.
    pub filesystem: DatasetName,
    /// The snapshot the stream ends with, as it is on the sender (name and GUID).
    pub to: Version,
    /// Discard a partial receive (`zfs receive -A`) before receiving: the stream does not
    /// continue it.
    pub clear_resume_token: bool,
    /// The protection strategy the active side chose.
    pub protection: Protection,
    /// Whether the stream is incremental (decides which guarantee applies).
    pub incremental: bool,
}

/// The answer to a receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveRes {
    /// The received `to`, as listed on the receiver afterwards.
    pub received: Version,
}

/// Where a side's pruning learns each filesystem's replication cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneCursors {
    /// From this endpoint's own cursor bookmarks (the sender side).
    Own,
    /// Given by the active side, keyed by sender-side path (the receiver side: the sender's
    /// cursors). A filesystem without an entry is not pruned.
    Given(BTreeMap<DatasetName, ReplicationCursor>),
}

/// A side's pruning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReq {
    /// The sender-side paths of the filesystems to prune.
    pub filesystems: Vec<DatasetName>,
    /// This side's keep rules.
    pub rules: KeepRules,
    /// Where the cursors come from.
    pub cursors: PruneCursors,
    /// Snapshots the running replication still needs, by sender-side path and GUID; never
    /// destroyed.
    pub protected: Vec<(DatasetName, Guid)>,
}

/// Why a request to an endpoint failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// A ZFS operation failed.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    /// The sender refused or failed the request.
    #[error(transparent)]
    Sender(#[from] SenderError),
    /// The receiver refused or failed the request.
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    /// The connection to the other side failed; reconnecting may help.
    #[error("connection to the {peer} failed: {detail}")]
    Connectivity {
        /// Which side could not be reached.
        peer: String,
        /// What happened.
        detail: String,
        /// Whether it was a timeout (rather than a reset or refusal).
        timeout: bool,
    },
    /// The endpoint cannot be set up as configured (e.g. a client identity that makes an
    /// invalid dataset name below `root_fs`).
    #[error("the {side} is misconfigured: {detail}")]
    Config {
        /// Which side.
        side: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The other side refused or failed the request, as it reported it over the network: its
    /// message and what the active side needs to decide (the class, and whether it was about
    /// the resume token). The transport turns every error of a remote endpoint into this.
    #[error("{message}")]
    Remote {
        /// The remote error's message, as its side renders it.
        message: String,
        /// Whether retrying can help.
        persistence: crate::error_class::Persistence,
        /// What it stops.
        scope: crate::error_class::Scope,
        /// Whether the remote side refused the resume token.
        resume_token_unusable: bool,
    },
    /// The request was cancelled (shutdown, reset signal, watchdog).
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl EndpointError {
    /// The error as the other side of a connection receives it: [`EndpointError::Remote`]
    /// with this error's message, class and resume-token verdict.
    pub fn to_remote(&self) -> EndpointError {
        let class = self.class();
        EndpointError::Remote {
            message: self.to_string(),
            persistence: class.persistence,
            scope: class.scope,
            resume_token_unusable: self.is_resume_token_unusable(),
        }
    }

    /// Whether the error says that the receiver's resume token cannot be used (the sender
    /// refused it, or ZFS did): the driver then discards the partial receive and plans the
    /// filesystem afresh instead of failing it run after run.
    pub fn is_resume_token_unusable(&self) -> bool {
        match self {
            Self::Zfs(e) => e.kind == ZfsErrorKind::ResumeTokenInvalid,
            Self::Sender(e) => e.is_resume_token_refusal(),
            Self::Remote {
                resume_token_unusable,
                ..
            } => *resume_token_unusable,
            _ => false,
        }
    }
}

impl Classify for ZfsError {
    /// A broken stream is a connectivity problem (zrepl reports the network error instead of
    /// `zfs recv`'s "failed to read from stream"), an interrupted receive too: both heal by
    /// reconnecting and resuming. A busy dataset may be free on another try. Everything else
    /// concerns this filesystem and would fail the same way.
    fn class(&self) -> ErrorClass {
        match self.kind {
            ZfsErrorKind::StreamBroken | ZfsErrorKind::ReceiveInterrupted { .. } => {
                ErrorClass::CONNECTIVITY
            }
            ZfsErrorKind::Busy => ErrorClass::FILESYSTEM_TEMPORARY,
            _ => ErrorClass::FILESYSTEM_PERMANENT,
        }
    }
}

impl Classify for EndpointError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Zfs(e) => e.class(),
            Self::Sender(e) => e.class(),
            Self::Receiver(e) => e.class(),
            Self::Connectivity { timeout: true, .. } => FailureKind::NetworkTimeout.class(),
            Self::Connectivity { timeout: false, .. } => FailureKind::ConnectionLost.class(),
            Self::Cancelled { .. } => FailureKind::Cancelled.class(),
            Self::Config { .. } => ErrorClass::FATAL,
            Self::Remote {
                persistence, scope, ..
            } => ErrorClass {
                persistence: *persistence,
                scope: *scope,
            },
        }
    }
}

/// What both endpoints answer.
#[async_trait]
pub trait Endpoint: Send + Sync + fmt::Debug {
    /// Checks that the endpoint is reachable and serving.
    async fn ping(&self) -> Result<(), EndpointError>;

    /// The filesystems this endpoint replicates (sender: those its filter accepts; receiver:
    /// those below its root, mapped back to sender-side paths), sorted by path.
    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError>;

    /// Snapshots and bookmarks of one filesystem, in createtxg order.
    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError>;

    /// Destroys snapshots of one filesystem, by name, each only if it still has the given GUID.
    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError>;

    /// Prunes this side's filesystems by the request's keep rules (see the module doc).
    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError>;
}

/// The sending end.
#[async_trait]
pub trait Sender: Endpoint {
    /// Validates a send and estimates its size, without sending or changing anything; policy
    /// violations surface here, at planning, before any data moves.
    async fn send_dry(&self, request: &SendReq) -> Result<SendRes, EndpointError>;

    /// Validates a send, protects its snapshots as the request's guarantee says, cleans this
    /// job's stale step holds and tentative cursors of the filesystem, and starts the stream.
    async fn send(&self, request: &SendReq) -> Result<(SendRes, ByteStream), EndpointError>;

    /// The receiver confirmed the step: move the cursor to `to` and release the step's
    /// protection.
    async fn send_completed(&self, request: &SendReq) -> Result<(), EndpointError>;

    /// The GUIDs of this job's newest replication cursor of each filesystem
    /// ([`ReplicationCursor::Missing`] where there is none), for the receiver's pruning.
    async fn replication_cursors(
        &self,
        filesystems: &[DatasetName],
    ) -> Result<BTreeMap<DatasetName, ReplicationCursor>, EndpointError>;
}

/// The receiving end.
#[async_trait]
pub trait Receiver: Endpoint {
    /// Receives a stream into the filesystem's place below the receiver's root, creating
    /// missing ancestors as placeholders, and holds `to` as the last received snapshot as the
    /// request's guarantee says.
    async fn receive(
        &self,
        request: &ReceiveReq,
        stream: ByteStream,
    ) -> Result<ReceiveRes, EndpointError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Operation;

    #[test]
    fn a_remote_error_keeps_its_class_and_resume_token_verdict() {
        let cases = [
            ZfsError::new(Operation::Send, "p/a", ZfsErrorKind::StreamBroken),
            ZfsError::new(Operation::Receive, "p/a", ZfsErrorKind::Busy),
            ZfsError::new(Operation::Send, "p/a", ZfsErrorKind::ResumeTokenInvalid),
            ZfsError::new(Operation::Send, "p/a", ZfsErrorKind::DoesNotExist),
        ];
        for zfs in cases {
            let local = EndpointError::Zfs(zfs);
            let remote = local.to_remote();
            assert_eq!(remote.class(), local.class(), "{local}");
            assert_eq!(
                remote.is_resume_token_unusable(),
                local.is_resume_token_unusable(),
                "{local}"
            );
            assert_eq!(remote.to_string(), local.to_string());
        }
    }
}
