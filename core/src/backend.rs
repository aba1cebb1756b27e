//! The seam between zferry and ZFS: one async trait, implemented over the real `zfs` CLI
//! (`zferry-zfs-cli`) and over an in-memory simulated ZFS (`zferry-sim`).
//!
//! The trait is shaped by what replication, pruning and snapshotting need, batched where ZFS
//! allows it, so that a backend can do each with as few `zfs` launches as possible: listing the
//! versions of many datasets is one call, destroying many snapshots of one dataset is one call,
//! snapshotting several datasets at once is one (atomic) call.
//!
//! Idempotency is part of the contract, because every attempt re-plans from what is on the pool
//! and may repeat what an interrupted attempt already did: creating a bookmark that exists with
//! the same GUID succeeds, holding a tag twice succeeds, releasing a tag that is not there
//! succeeds, aborting a receive that has no partial state succeeds.
//!
//! Errors are [`ZfsError`]: the operation, the object, a typed [`ZfsErrorKind`] and the tail
//! of `zfs`'s stderr where there is one. The kinds are what the engine decides on; the stderr
//! tail is what a user reads.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::listing::{DatasetEntry, VersionListing};
use crate::name::{Component, DatasetName, VersionName};
use crate::version::{Guid, Version};

/// How much of `zfs`'s stderr an error keeps, in bytes (the tail, where the reason is).
pub const STDERR_TAIL_BYTES_MAX: usize = 32 * 1024;

/// A send stream: the bytes `zfs send` writes. A failure of the sender shows up as a read error
/// whose inner error is a [`ZfsError`] (see [`ZfsError::from_io`]).
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

/// A dataset or a snapshot/bookmark: what `zfs get`, `zfs destroy` and errors refer to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ObjectName {
    /// A filesystem or volume.
    Dataset(DatasetName),
    /// A snapshot or bookmark.
    Version(VersionName),
}

impl ObjectName {
    /// The dataset the object belongs to.
    pub fn dataset(&self) -> &DatasetName {
        match self {
            Self::Dataset(d) => d,
            Self::Version(v) => v.dataset(),
        }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dataset(d) => d.fmt(f),
            Self::Version(v) => v.fmt(f),
        }
    }
}

impl From<DatasetName> for ObjectName {
    fn from(value: DatasetName) -> Self {
        Self::Dataset(value)
    }
}

impl From<VersionName> for ObjectName {
    fn from(value: VersionName) -> Self {
        Self::Version(value)
    }
}

/// The backend operation an error came from; also the key of fault injection and of the
/// count of `zfs` launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `zfs list -t filesystem,volume`.
    ListDatasets,
    /// `zfs list -t snapshot,bookmark`.
    ListVersions,
    /// `zfs get`.
    GetProperties,
    /// `zfs set`.
    SetProperty,
    /// `zfs snapshot`.
    Snapshot,
    /// `zfs bookmark`.
    Bookmark,
    /// `zfs hold`.
    Hold,
    /// `zfs release`.
    Release,
    /// `zfs holds`.
    ListHolds,
    /// `zfs destroy fs@a,b,c`.
    DestroySnapshots,
    /// `zfs destroy fs#b`.
    DestroyBookmark,
    /// `zfs destroy fs`.
    DestroyDataset,
    /// `zfs send -n -v -P`.
    SendEstimate,
    /// `zfs send`.
    Send,
    /// `zfs receive`.
    Receive,
    /// `zfs receive -A`.
    AbortReceive,
    /// `zfs create` of a placeholder.
    CreatePlaceholder,
    /// `zfs rollback`.
    Rollback,
    /// Usage-text and pool-feature probes.
    Features,
}

impl Operation {
    /// The `zfs` command line it stands for, for messages.
    pub fn command(self) -> &'static str {
        match self {
            Self::ListDatasets => "zfs list -t filesystem,volume",
            Self::ListVersions => "zfs list -t snapshot,bookmark",
            Self::GetProperties => "zfs get",
            Self::SetProperty => "zfs set",
            Self::Snapshot => "zfs snapshot",
            Self::Bookmark => "zfs bookmark",
            Self::Hold => "zfs hold",
            Self::Release => "zfs release",
            Self::ListHolds => "zfs holds",
            Self::DestroySnapshots | Self::DestroyBookmark | Self::DestroyDataset => "zfs destroy",
            Self::SendEstimate => "zfs send -nvP",
            Self::Send => "zfs send",
            Self::Receive => "zfs receive",
            Self::AbortReceive => "zfs receive -A",
            Self::CreatePlaceholder => "zfs create",
            Self::Rollback => "zfs rollback",
            Self::Features => "zfs/zpool feature probe",
        }
    }
}

/// What went wrong, as the engine needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ZfsErrorKind {
    /// The dataset, snapshot or bookmark does not exist.
    #[error("does not exist")]
    DoesNotExist,
    /// The snapshot is held or the dataset is in use ("dataset is busy").
    #[error("is busy (held or in use)")]
    Busy,
    /// A bookmark of that name exists for another snapshot.
    #[error("exists with another guid ({existing})")]
    ExistsWithOtherGuid {
        /// The GUID of what is there.
        existing: Guid,
    },
    /// The object exists and the operation would have to overwrite it.
    #[error("already exists")]
    AlreadyExists,
    /// The pool is out of space.
    #[error("out of space")]
    NoSpace,
    /// A send or receive stream broke off (network, killed sender, truncated input).
    #[error("the stream broke off")]
    StreamBroken,
    /// A receive was interrupted and left resumable state; the token continues it.
    #[error("the receive was interrupted and left resumable state")]
    ReceiveInterrupted {
        /// The receiver's resume token, when ZFS printed one.
        token: Option<String>,
    },
    /// The target has a partial receive in the way (abort it or resume it).
    #[error("has a partially received state")]
    ResumeStatePresent,
    /// The incremental base is not the target's most recent snapshot, or is missing there.
    #[error("the incremental source does not match the target's most recent snapshot")]
    IncrementalSourceMismatch,
    /// The target was modified since its most recent snapshot.
    #[error("the target was modified since its most recent snapshot")]
    ModifiedSinceSnapshot,
    /// ZFS refuses a forced receive over an encrypted dataset (or plain over encrypted).
    #[error("a forced receive cannot overwrite an encrypted dataset")]
    EncryptedOverwriteRefused,
    /// The dataset's key is not loaded.
    #[error("the encryption key is not loaded")]
    KeyNotLoaded,
    /// The resume token cannot be used (stale, corrupt, for another dataset).
    #[error("the resume token is not usable")]
    ResumeTokenInvalid,
    /// This ZFS or pool lacks a feature the operation needs.
    #[error("not supported by this ZFS: {feature}")]
    NotSupported {
        /// The missing feature.
        feature: String,
    },
    /// ZFS rejected the arguments (a bug in the caller, or a name ZFS refuses).
    #[error("invalid argument")]
    InvalidArgument,
    /// `zfs` printed something the backend does not understand; the stderr tail says more.
    #[error("failed ({detail})")]
    Other {
        /// The exit status or a short description.
        detail: String,
    },
}

/// An error of a backend operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ZfsError {
    /// The operation.
    pub operation: Operation,
    /// The object it was applied to.
    pub object: String,
    /// What went wrong.
    pub kind: ZfsErrorKind,
    /// The end of `zfs`'s stderr, at most [`STDERR_TAIL_BYTES_MAX`] bytes.
    pub stderr_tail: Option<String>,
}

impl fmt::Display for ZfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}`: {}",
            self.operation.command(),
            self.object,
            self.kind
        )?;
        if let Some(tail) = self
            .stderr_tail
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            write!(f, " (zfs said: {tail})")?;
        }
        Ok(())
    }
}

impl ZfsError {
    /// An error without stderr.
    pub fn new(operation: Operation, object: impl fmt::Display, kind: ZfsErrorKind) -> Self {
        Self {
            operation,
            object: object.to_string(),
            kind,
            stderr_tail: None,
        }
    }

    /// The same error with the tail of `stderr` attached (cut at a character boundary).
    pub fn with_stderr(mut self, stderr: &str) -> Self {
        let mut start = stderr.len().saturating_sub(STDERR_TAIL_BYTES_MAX);
        while !stderr.is_char_boundary(start) {
            start += 1;
        }
        self.stderr_tail = Some(stderr[start..].to_owned());
        self
    }

    /// Wraps the error for a stream read.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// Recovers a backend error from a stream read error, or classifies an I/O error of the
    /// stream itself as [`ZfsErrorKind::StreamBroken`].
    pub fn from_io(operation: Operation, object: impl fmt::Display, err: &std::io::Error) -> Self {
        if let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<ZfsError>()) {
            return inner.clone();
        }
        Self::new(operation, object, ZfsErrorKind::StreamBroken).with_stderr(&err.to_string())
    }
}

/// Which versions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionTypes {
    /// Snapshots only.
    Snapshots,
    /// Bookmarks only.
    Bookmarks,
    /// Both.
    All,
}

/// Where a property value comes from, as `zfs get` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertySource {
    /// Set on this object.
    Local,
    /// The default.
    Default,
    /// Inherited from the named ancestor.
    Inherited {
        /// The ancestor it comes from.
        from: String,
    },
    /// Received with a stream.
    Received,
    /// A temporary mount option.
    Temporary,
    /// Not applicable (`-`), e.g. read-only properties.
    None,
}

/// One property of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    /// The value as `zfs get -p` prints it (`-` for none).
    pub value: String,
    /// Where it comes from.
    pub source: PropertySource,
}

/// Flags of `zfs send`, in zrepl's order `-w -p -b -L -c -e -S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SendFlags {
    /// `-w`: raw (encrypted datasets stay encrypted).
    pub raw: bool,
    /// `-p`: include properties.
    pub properties: bool,
    /// `-b`: include only received properties (backup).
    pub backup_properties: bool,
    /// `-L`: large blocks.
    pub large_blocks: bool,
    /// `-c`: compressed blocks as they are on disk.
    pub compressed: bool,
    /// `-e`: embedded data blocks.
    pub embedded_data: bool,
    /// `-S`: send a partially received dataset's saved state.
    pub saved: bool,
}

/// What a send produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SendSource {
    /// `zfs send fs@to`.
    Full {
        /// The snapshot.
        to: VersionName,
    },
    /// `zfs send -i from fs@to`; `from` is a snapshot or bookmark of the same dataset.
    Incremental {
        /// The base.
        from: VersionName,
        /// The snapshot.
        to: VersionName,
    },
    /// `zfs send -I from fs@to`: every snapshot between, too; `from` must be a snapshot.
    IncrementalRange {
        /// The base snapshot.
        from: VersionName,
        /// The last snapshot.
        to: VersionName,
    },
    /// `zfs send -t token`: the flags are in the token.
    Resume {
        /// The receiver's resume token.
        token: String,
    },
}

/// A send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// What to send.
    pub source: SendSource,
    /// How (ignored for [`SendSource::Resume`]).
    pub flags: SendFlags,
}

/// A receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveRequest {
    /// The dataset to receive into.
    pub dataset: DatasetName,
    /// The snapshot the stream must end with (its short name on the receiver).
    pub to: Component,
    /// The GUID the received `to` must have; a mismatch is an error after the receive.
    pub to_guid: Guid,
    /// `-s`: keep a resumable state if the stream breaks.
    pub resumable: bool,
    /// `-F`: roll back and overwrite; only ever for replacing a placeholder.
    pub force: bool,
    /// `-o property=value`, in name order.
    pub properties_override: BTreeMap<String, String>,
    /// `-x property`.
    pub properties_inherit: Vec<String>,
}

/// What a successful receive left on the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// The received `to` snapshot, as listed afterwards.
    pub to: Version,
}

/// The outcome of one snapshot in a batched destroy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyOutcome {
    /// The snapshot's short name.
    pub snapshot: Component,
    /// `Ok` if destroyed (or already gone), else why not (e.g. [`ZfsErrorKind::Busy`]).
    pub result: Result<(), ZfsErrorKind>,
}

/// Encryption of a placeholder (zrepl's `recv.placeholder.encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceholderEncryption {
    /// Inherit from the parent (plain send, encrypted on receive).
    Inherit,
    /// `encryption=off` (raw encrypted sends to an untrusted receiver).
    Off,
}

/// What this ZFS and pool can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Features {
    /// `zfs send -t` / `receive_resume_token`.
    pub resumable_send: bool,
    /// `zfs receive -s`/`-A` and the pool feature `extensible_dataset`.
    pub resumable_receive: bool,
    /// Native encryption in the CLI.
    pub encryption: bool,
    /// `zfs destroy fs@a,b,c`.
    pub batch_destroy: bool,
}

/// The property that marks a placeholder, as zrepl names it.
pub const PLACEHOLDER_PROPERTY: &str = "zrepl:placeholder";

/// ZFS as zferry needs it. Every method is one logical ZFS operation; implementations say in
/// their docs how many processes each costs.
#[async_trait]
pub trait ZfsBackend: Send + Sync + fmt::Debug {
    /// Datasets (filesystems and volumes) under `root`, recursively, `root` included; all pools
    /// when `root` is `None`. Each entry carries the values of `properties` in order.
    async fn list_datasets(
        &self,
        root: Option<&DatasetName>,
        properties: &[&str],
    ) -> Result<Vec<DatasetEntry>, ZfsError>;

    /// The versions of each dataset in `datasets` (not of their children), in one call. A
    /// dataset without versions has an empty list; a missing dataset is
    /// [`ZfsErrorKind::DoesNotExist`].
    async fn list_versions(
        &self,
        datasets: &[DatasetName],
        types: VersionTypes,
    ) -> Result<VersionListing, ZfsError>;

    /// The named properties of one object; every requested property is in the result.
    async fn get_properties(
        &self,
        object: &ObjectName,
        properties: &[&str],
    ) -> Result<BTreeMap<String, Property>, ZfsError>;

    /// Sets a (user) property on a dataset.
    async fn set_property(
        &self,
        dataset: &DatasetName,
        property: &str,
        value: &str,
    ) -> Result<(), ZfsError>;

    /// Takes snapshots, atomically when there are several (one txg).
    async fn snapshot(&self, snapshots: &[VersionName]) -> Result<(), ZfsError>;

    /// Bookmarks `source` (a snapshot, or a bookmark where ZFS can copy bookmarks) as
    /// `bookmark`. Idempotent: if `bookmark` exists with the source's GUID it is returned; with
    /// another GUID the error is [`ZfsErrorKind::ExistsWithOtherGuid`].
    async fn bookmark(
        &self,
        source: &VersionName,
        bookmark: &VersionName,
    ) -> Result<Version, ZfsError>;

    /// Places hold `tag` on each snapshot; a tag already there is success.
    async fn hold(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError>;

    /// Releases hold `tag` from each snapshot; a tag not there is success.
    async fn release(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError>;

    /// The hold tags on a snapshot, sorted.
    async fn holds(&self, snapshot: &VersionName) -> Result<Vec<String>, ZfsError>;

    /// Destroys snapshots of one dataset in one call where ZFS allows it; reports each
    /// snapshot's outcome. A snapshot that is already gone counts as destroyed. The call itself
    /// fails only when nothing could be attempted (e.g. the dataset does not exist).
    async fn destroy_snapshots(
        &self,
        dataset: &DatasetName,
        snapshots: &[Component],
    ) -> Result<Vec<DestroyOutcome>, ZfsError>;

    /// Destroys a bookmark; a missing one is [`ZfsErrorKind::DoesNotExist`].
    async fn destroy_bookmark(&self, bookmark: &VersionName) -> Result<(), ZfsError>;

    /// Destroys a dataset and, with `recursive`, its children and snapshots.
    async fn destroy_dataset(&self, dataset: &DatasetName, recursive: bool)
    -> Result<(), ZfsError>;

    /// The size a send would have, in bytes, if ZFS can tell (`None` from a bookmark base or
    /// where ZFS prints no size).
    async fn send_estimate(&self, request: &SendRequest) -> Result<Option<u64>, ZfsError>;

    /// Starts a send; the stream ends with the last byte `zfs send` writes. Dropping the
    /// stream early stops the sender without hanging.
    async fn send(&self, request: &SendRequest) -> Result<ByteStream, ZfsError>;

    /// Receives `stream` as the request says, and checks that `to` arrived with `to_guid`.
    async fn receive(
        &self,
        request: &ReceiveRequest,
        stream: ByteStream,
    ) -> Result<Received, ZfsError>;

    /// Discards a partial receive (`zfs receive -A`); none is success.
    async fn abort_receive(&self, dataset: &DatasetName) -> Result<(), ZfsError>;

    /// The dataset's `receive_resume_token`, `None` when it has no partial receive.
    async fn resume_token(&self, dataset: &DatasetName) -> Result<Option<String>, ZfsError>;

    /// Creates a placeholder: `zrepl:placeholder=on`, `mountpoint=none`, and the encryption
    /// choice. Refuses a pool's root dataset.
    async fn create_placeholder(
        &self,
        dataset: &DatasetName,
        encryption: PlaceholderEncryption,
    ) -> Result<(), ZfsError>;

    /// Rolls a dataset back to `snapshot`, destroying later snapshots (`zfs rollback -r`).
    async fn rollback(&self, snapshot: &VersionName) -> Result<(), ZfsError>;

    /// What the ZFS behind this backend, and the pool of `dataset`, support.
    async fn features(&self, pool: &str) -> Result<Features, ZfsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_end_at_a_char_boundary() {
        let long = format!(
            "{}é{}",
            "x".repeat(STDERR_TAIL_BYTES_MAX),
            "cannot destroy: busy"
        );
        let e = ZfsError::new(Operation::DestroySnapshots, "p/a@s", ZfsErrorKind::Busy)
            .with_stderr(&long);
        let tail = e.stderr_tail.unwrap();
        assert!(tail.len() <= STDERR_TAIL_BYTES_MAX);
        assert!(tail.ends_with("cannot destroy: busy"));
    }

    #[test]
    fn errors_survive_a_stream_read() {
        let original = ZfsError::new(Operation::Send, "p/a@s", ZfsErrorKind::DoesNotExist)
            .with_stderr("cannot open 'p/a@s': dataset does not exist\n");
        let io = original.clone().into_io();
        assert_eq!(ZfsError::from_io(Operation::Receive, "p/b", &io), original);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let broken = ZfsError::from_io(Operation::Receive, "p/b", &reset);
        assert_eq!(broken.kind, ZfsErrorKind::StreamBroken);
        assert_eq!(broken.operation, Operation::Receive);
    }

    #[test]
    fn messages_name_the_command_the_object_and_what_zfs_said() {
        let e = ZfsError::new(Operation::Hold, "p/a@s", ZfsErrorKind::DoesNotExist)
            .with_stderr("cannot hold snapshot 'p/a@s': dataset does not exist\n");
        assert_eq!(
            e.to_string(),
            "zfs hold `p/a@s`: does not exist (zfs said: cannot hold snapshot 'p/a@s': dataset \
             does not exist)"
        );
    }
}
