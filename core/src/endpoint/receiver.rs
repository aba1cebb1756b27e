//! The receiver endpoint over a [`ZfsBackend`]: receives streams into its own namespace,
//! creates the placeholders that hold them, keeps the last-received hold, and prunes its copies.
//!
//! # Confinement (architecture invariant)
//!
//! Every filesystem a request names is a *sender-side* path. The receiver maps it to
//! `root_fs[/client identity]/<path>` ([`ClientRoot::map_in`]) and never touches a dataset that is
//! not strictly below that client root: not the root itself, nothing above it, and, on a sink,
//! nothing of another client. [`ClientRoot::check`] is the one place that decides; it runs when
//! a name is mapped, and again right before every destructive call (destroy, rollback, release,
//! forced receive, abort of a partial receive). A violation at that second check is a bug in
//! zferry: under `cfg(test)` or `debug_assertions` it panics, in a release build the request
//! fails with [`ReceiverError::OutsideRoot`] and nothing is issued.
//!
//! # Placeholders
//!
//! Missing ancestors of a received filesystem are created as placeholders
//! (`zrepl:placeholder=on`, `mountpoint=none`), serialised by one mutex per endpoint as in zrepl.
//! Their encryption follows [`PlaceholderEncryptionConfig`]; with `unspecified`, only the sink's
//! client-identity dataset may be created (it inherits), every other placeholder is refused with
//! zrepl's message. A full stream into a placeholder replaces it: the property is turned `off`,
//! the placeholder's snapshots (if a user made any) are rolled back and destroyed, and the stream
//! is received with `-F`; if that fails without leaving resumable state, the property is turned
//! back `on`.
//!
//! # The last-received hold
//!
//! After a receive under `guarantee_resumability` or `guarantee_incremental`, the receiving
//! job's hold `zrepl_last_received_J_<job>` is placed on `to`, checked to be there, and only then
//! released from this job's other snapshots of the filesystem; under `guarantee_nothing` all of
//! this job's last-received holds on the filesystem are released. Holds of other jobs are never
//! touched.
//!
//! # Costs, in backend calls
//!
//! - `list_filesystems`: `features`, one `list_datasets` (placeholder property and resume token),
//!   and one `get_properties` per dataset whose placeholder value is `on`, because a listing
//!   carries no property sources and only a *local* `on` makes a placeholder. Datasets received
//!   below a placeholder inherit `on`, so on a sink (whose client-identity dataset is a
//!   placeholder) that is one call per received filesystem that is not itself a replaced
//!   placeholder. A listing with sources in the backend trait would make it one call.
//! - `receive` of an incremental step into an existing filesystem: `get_properties` of the
//!   parent (it exists, so no placeholder is needed), `features`, `get_properties` of the target,
//!   the receive, `hold`, `list_versions`, `holds` per snapshot with holds, and one `release`.
//!
//! What it never does: receive with `-F` into anything but a placeholder, destroy a snapshot
//! whose GUID is not the one asked for, or read any dataset outside its `root_fs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::abstraction::Abstraction;
use crate::backend::{
    ByteStream, DestroyOutcome, Operation, PLACEHOLDER_PROPERTY, PlaceholderEncryption,
    PropertySource, ReceiveRequest, VersionTypes, ZfsBackend, ZfsError, ZfsErrorKind,
};
use crate::endpoint::abstractions::{FindError, find};
use crate::endpoint::{
    Endpoint, EndpointError, Filesystem, Guarantee, PruneCursors, PruneReq, ReceiveReq, ReceiveRes,
    Receiver,
};
use crate::engine::pruner::{
    Cursors, PLACEHOLDER_ON, PRUNE_TARGETS_MAX, Protected, PruneReport, Side, SideError,
    SideRequest, is_local_placeholder, prune_side,
};
use crate::error_class::{Classify, ErrorClass};
use crate::job_id::JobId;
use crate::name::{Component, DatasetName, NAME_LEN_MAX, NameError, VersionKind, VersionName};
use crate::prune::ReplicationCursor;
use crate::queue::ErrorCounters;
use crate::version::{Guid, Version};

/// The most filesystems below the client root that [`Endpoint::list_filesystems`] reports; the
/// same bound as the replication queue, since each is a filesystem to replicate.
pub const FILESYSTEMS_MAX: usize = PRUNE_TARGETS_MAX;

/// The most snapshots one [`Endpoint::destroy_snapshots`] request may name.
pub const DESTROY_SNAPSHOTS_MAX: usize = 10_000;

/// The most snapshots one prune request may declare protected.
pub const PROTECTED_MAX: usize = 100_000;

/// The most `properties.override` plus `properties.inherit` entries of a receiver's config.
pub const RECEIVE_PROPERTIES_MAX: usize = 256;

/// The property that holds a partial receive's resume token.
pub const RESUME_TOKEN_PROPERTY: &str = "receive_resume_token";

/// What `zfs` prints for a property without a value (no resume token).
pub const PROPERTY_NONE: &str = "-";

/// The value of `zrepl:placeholder` while a placeholder is being replaced by a receive.
pub const PLACEHOLDER_OFF: &str = "off";

/// How placeholders get their encryption (zrepl's `recv.placeholder.encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceholderEncryptionConfig {
    /// Not configured: creating a placeholder fails, except the sink's client-identity dataset,
    /// which inherits (zrepl's default, so that nobody gets an unencrypted placeholder below an
    /// encrypted root by accident).
    #[default]
    Unspecified,
    /// `encryption=off`: for raw sends of encrypted filesystems to an untrusted receiver.
    Off,
    /// Inherit from the parent: for plain sends encrypted on the receiver.
    Inherit,
}

/// What a receiving job (sink or pull) configures for its receiver endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// The receiving job: its last-received hold is `zrepl_last_received_J_<job>`.
    pub job: JobId,
    /// The dataset below which everything is received.
    pub root_fs: DatasetName,
    /// A sink's client identity (one more level below `root_fs`); `None` for a pull job.
    pub client_identity: Option<Component>,
    /// How placeholders get their encryption.
    pub placeholder_encryption: PlaceholderEncryptionConfig,
    /// `zfs receive -o name=value`, for every receive.
    pub properties_override: BTreeMap<String, String>,
    /// `zfs receive -x name`, for every receive.
    pub properties_inherit: Vec<String>,
}

/// Why a receiver configuration is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverConfigError {
    /// `root_fs/<identity>` is not a valid dataset name (too long, usually).
    #[error(
        "the client identity `{identity}` cannot be used below root_fs `{root_fs}`: {source}; \
         choose a shorter root_fs or client identity"
    )]
    ClientRoot {
        /// The configured root.
        root_fs: DatasetName,
        /// The client identity.
        identity: Component,
        /// Why the joined name is invalid.
        source: NameError,
    },
    /// A property name of `properties.override` or `properties.inherit` is unusable.
    #[error(
        "receive property `{name}` in recv.properties.{list}: {why}; fix the job's configuration"
    )]
    Property {
        /// The name as configured.
        name: String,
        /// `override` or `inherit`.
        list: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// More properties than [`RECEIVE_PROPERTIES_MAX`].
    #[error(
        "recv.properties lists {n_properties} properties, more than the {max} zferry passes to \
         one `zfs receive`; remove some from the job's configuration"
    )]
    TooManyProperties {
        /// How many are configured.
        n_properties: usize,
        /// [`RECEIVE_PROPERTIES_MAX`].
        max: usize,
    },
}

/// A destructive action, named for the second confinement check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestructiveAction {
    /// `zfs destroy fs@a,b`.
    DestroySnapshots,
    /// `zfs rollback -r` before replacing a placeholder.
    Rollback,
    /// `zfs receive -F` into a placeholder.
    ForcedReceive,
    /// `zfs receive -A`.
    AbortReceive,
    /// `zfs release` of last-received holds.
    Release,
    /// Pruning.
    Prune,
}

impl fmt::Display for DestructiveAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DestroySnapshots => "destroy snapshots",
            Self::Rollback => "roll back",
            Self::ForcedReceive => "receive with -F",
            Self::AbortReceive => "abort the partial receive",
            Self::Release => "release holds",
            Self::Prune => "prune",
        })
    }
}

/// Why the receiver refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverError {
    /// The configured `root_fs` does not exist.
    #[error(
        "root_fs `{root_fs}` does not exist on the receiver; create it (`zfs create -p \
         {root_fs}`) or correct root_fs in the receiving job's configuration"
    )]
    RootMissing {
        /// The configured root.
        root_fs: DatasetName,
    },
    /// The pool of `root_fs` is not imported.
    #[error(
        "pool `{pool}` of root_fs `{root_fs}` is not imported on the receiver; import it \
         (`zpool import {pool}`) or correct root_fs in the receiving job's configuration"
    )]
    PoolMissing {
        /// The pool.
        pool: String,
        /// The configured root.
        root_fs: DatasetName,
    },
    /// A sender-side path does not fit below the client root.
    #[error(
        "sender filesystem `{filesystem}` cannot be received below `{client_root}`: {source}; \
         choose a shorter root_fs or exclude the filesystem from replication"
    )]
    Unmappable {
        /// The sender-side path.
        filesystem: DatasetName,
        /// The client root.
        client_root: DatasetName,
        /// Why the joined name is invalid.
        source: NameError,
    },
    /// A snapshot's full name on the receiver is not a valid name (too long).
    #[error(
        "a snapshot of `{dataset}` cannot be named on the receiver: {source}; choose a shorter \
         root_fs or shorter snapshot names"
    )]
    SnapshotName {
        /// The receiving dataset.
        dataset: DatasetName,
        /// Why the full name is invalid.
        source: NameError,
    },
    /// A dataset is not strictly below the client root (the confinement check).
    #[error(
        "refusing to {action} `{dataset}`: it is not below this receiver's root `{client_root}`; \
         this is a bug in zferry, please report it"
    )]
    OutsideRoot {
        /// What was about to happen.
        action: String,
        /// The dataset.
        dataset: DatasetName,
        /// The client root.
        client_root: DatasetName,
    },
    /// A receive request's `to` is a bookmark.
    #[error(
        "cannot receive into `{filesystem}`: the request's `to` (`{to}`) is not a snapshot; this \
         is a bug in the active side"
    )]
    ToNotSnapshot {
        /// The sender-side path.
        filesystem: DatasetName,
        /// The `to` of the request.
        to: String,
    },
    /// A placeholder is needed but `recv.placeholder.encryption` is `unspecified`.
    #[error(
        "cannot create placeholder filesystem `{dataset}`: placeholder filesystem encryption \
         handling is unspecified in receiver config; set recv.placeholder.encryption to \
         `inherit` (plain sends, encrypted on the receiver) or `off` (raw sends of encrypted \
         filesystems) in the receiving job's configuration"
    )]
    PlaceholderEncryptionUnspecified {
        /// The placeholder that would have been created.
        dataset: DatasetName,
    },
    /// Creating a placeholder failed.
    #[error("cannot create placeholder filesystem `{dataset}`: {source}")]
    CreatePlaceholder {
        /// The placeholder.
        dataset: DatasetName,
        /// The backend's error.
        source: ZfsError,
    },
    /// ZFS refuses to replace an encrypted placeholder with a full stream.
    #[error(
        "cannot replace placeholder `{dataset}` with the received filesystem: ZFS refuses \
         `zfs receive -F` over an encrypted dataset (the placeholder inherited its encryption); \
         move its children aside (`zfs rename`), destroy the placeholder (`zfs destroy \
         {dataset}`), replicate again, then move the children back; the placeholder was left \
         as it was"
    )]
    EncryptedPlaceholder {
        /// The placeholder.
        dataset: DatasetName,
        /// The backend's error.
        source: ZfsError,
    },
    /// The receive into a placeholder failed and turning `zrepl:placeholder` back on failed too.
    #[error(
        "receiving into placeholder `{dataset}` failed ({receive}), and setting \
         zrepl:placeholder back to on failed too ({restore}); run `zfs set \
         zrepl:placeholder=on {dataset}` by hand before the next replication"
    )]
    RestorePlaceholder {
        /// The placeholder.
        dataset: DatasetName,
        /// Why the receive failed.
        receive: Box<ZfsError>,
        /// Why restoring the property failed.
        restore: Box<ZfsError>,
    },
    /// The received snapshot is not there, or has another GUID, after the receive.
    #[error(
        "after receiving `{snapshot}` it is {found} on the receiver, not the snapshot with guid \
         {expected} the request named; check `zfs list -t snapshot -o name,guid {dataset}`"
    )]
    ReceivedMismatch {
        /// The receiving dataset.
        dataset: DatasetName,
        /// The snapshot.
        snapshot: VersionName,
        /// The GUID the request named.
        expected: Guid,
        /// What was found instead ("missing", "guid N").
        found: String,
    },
    /// The abstractions of a filesystem could not be listed.
    #[error("cannot find the last-received holds of `{dataset}`: {source}")]
    FindHolds {
        /// The receiving dataset.
        dataset: DatasetName,
        /// Why.
        source: FindError,
    },
    /// The new last-received hold is not on `to` after placing it.
    #[error(
        "the last-received hold `{tag}` is not on `{snapshot}` after placing it, so this job's \
         older last-received holds were kept; check `zfs holds {snapshot}`"
    )]
    HoldNotPlaced {
        /// The snapshot.
        snapshot: VersionName,
        /// The tag.
        tag: String,
    },
    /// The release of this job's older holds would have released the new one (the second
    /// check; a bug).
    #[error(
        "refusing to release `{tag}` from `{snapshot}`: it protects the snapshot just \
         received; this is a bug in zferry, please report it"
    )]
    ReleaseRefused {
        /// The snapshot just received.
        snapshot: VersionName,
        /// The tag.
        tag: String,
    },
    /// A prune request asked the receiver for its own cursors.
    #[error(
        "a receiver has no replication cursors: its pruning needs the sender's cursors given \
         with the request; this is a bug in the active side"
    )]
    OwnCursorsRefused,
    /// A request names more items than its bound.
    #[error("the request names {n} {what}, more than the {max} a receiver takes in one request")]
    TooMany {
        /// What ("snapshots", "filesystems", ...).
        what: &'static str,
        /// How many.
        n: usize,
        /// The bound.
        max: usize,
    },
    /// The receiver's pruning failed as a whole.
    #[error(transparent)]
    Prune(#[from] SideError),
}

impl Classify for ReceiverError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::RootMissing { .. } | Self::PoolMissing { .. } | Self::OwnCursorsRefused => {
                ErrorClass::FATAL
            }
            Self::CreatePlaceholder { source, .. } => source.class(),
            Self::FindHolds {
                source: FindError::Zfs(source),
                ..
            } => source.class(),
            Self::Prune(SideError::ListDatasets { source, .. })
            | Self::Prune(SideError::ListVersions { source, .. }) => source.class(),
            Self::Prune(SideError::TooManyTargets { .. }) => ErrorClass::FATAL,
            Self::Unmappable { .. }
            | Self::SnapshotName { .. }
            | Self::OutsideRoot { .. }
            | Self::ToNotSnapshot { .. }
            | Self::PlaceholderEncryptionUnspecified { .. }
            | Self::EncryptedPlaceholder { .. }
            | Self::RestorePlaceholder { .. }
            | Self::ReceivedMismatch { .. }
            | Self::FindHolds { .. }
            | Self::HoldNotPlaced { .. }
            | Self::ReleaseRefused { .. }
            | Self::TooMany { .. } => ErrorClass::FILESYSTEM_PERMANENT,
        }
    }
}

/// The dataset a receiver receives into (`root_fs` or `root_fs/<client identity>`), and the
/// mapping of sender-side paths into it and back. See the module doc on confinement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRoot {
    root_fs: DatasetName,
    identity: Option<Component>,
    dataset: DatasetName,
}

impl ClientRoot {
    /// The client root of `root_fs` and a sink's `identity` (`None` for a pull job).
    pub fn new(
        root_fs: DatasetName,
        identity: Option<Component>,
    ) -> Result<Self, ReceiverConfigError> {
        let dataset = match &identity {
            None => root_fs.clone(),
            Some(id) => {
                root_fs
                    .join(id.as_str())
                    .map_err(|source| ReceiverConfigError::ClientRoot {
                        root_fs: root_fs.clone(),
                        identity: id.clone(),
                        source,
                    })?
            }
        };
        Ok(Self {
            root_fs,
            identity,
            dataset,
        })
    }

    /// The configured `root_fs`.
    pub fn root_fs(&self) -> &DatasetName {
        &self.root_fs
    }

    /// The dataset everything of this client is received below.
    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    /// Whether there is a client identity level (a sink).
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The local dataset for a sender-side path: `<client root>/<path>`, checked to be
    /// confined. A name that would exceed ZFS's limits is [`ReceiverError::Unmappable`].
    pub fn map_in(&self, filesystem: &DatasetName) -> Result<DatasetName, ReceiverError> {
        let local =
            self.dataset
                .join(filesystem.as_str())
                .map_err(|source| ReceiverError::Unmappable {
                    filesystem: filesystem.clone(),
                    client_root: self.dataset.clone(),
                    source,
                })?;
        self.check(&local, "receive into")?;
        Ok(local)
    }

    /// The sender-side path of a local dataset, or `None` for the client root itself, anything
    /// outside it, and a dataset whose relative path is no valid sender path (its first
    /// component is no valid pool name, so no request can name it).
    pub fn map_out(&self, local: &DatasetName) -> Option<DatasetName> {
        local
            .strip_ancestor(&self.dataset)
            .and_then(|rel| DatasetName::parse(rel).ok())
    }

    /// The confinement check: `dataset` must be strictly below the client root.
    pub fn check(&self, dataset: &DatasetName, action: &str) -> Result<(), ReceiverError> {
        if self.dataset.is_ancestor_of(dataset) {
            Ok(())
        } else {
            Err(ReceiverError::OutsideRoot {
                action: action.to_owned(),
                dataset: dataset.clone(),
                client_root: self.dataset.clone(),
            })
        }
    }

    /// The second confinement check, right before a destructive call.
    ///
    /// # Panics
    ///
    /// Under `cfg(test)` or `debug_assertions` when `dataset` is not confined: every name
    /// reaching a destructive call was mapped by [`Self::map_in`], so a violation is a bug.
    pub fn assert_before(
        &self,
        dataset: &DatasetName,
        action: DestructiveAction,
    ) -> Result<(), ReceiverError> {
        let checked = self.check(dataset, &action.to_string());
        #[cfg(any(test, debug_assertions))]
        if let Err(e) = &checked {
            panic!("confinement violated: {e}");
        }
        checked
    }
}

/// The receiving end of a sink or pull job, over a [`ZfsBackend`].
#[derive(Debug)]
pub struct ReceiverEndpoint {
    backend: Arc<dyn ZfsBackend>,
    config: ReceiverConfig,
    root: ClientRoot,
    /// `zrepl_last_received_J_<job>`.
    last_received_tag: String,
    /// Serialises the creation of placeholders (zrepl's receiver mutex).
    placeholders: Mutex<()>,
    /// The pruner's back-off across prune requests, keyed by local dataset.
    prune_counters: Mutex<ErrorCounters>,
}

impl ReceiverEndpoint {
    /// A receiver endpoint; checks that the client root is a valid name and that the receive
    /// properties can be passed to `zfs receive`.
    pub fn new(
        backend: Arc<dyn ZfsBackend>,
        config: ReceiverConfig,
    ) -> Result<Self, ReceiverConfigError> {
        let root = ClientRoot::new(config.root_fs.clone(), config.client_identity.clone())?;
        check_properties(&config)?;
        let last_received_tag = Abstraction::LastReceivedHold {
            job: config.job.clone(),
        }
        .to_string();
        Ok(Self {
            backend,
            config,
            root,
            last_received_tag,
            placeholders: Mutex::new(()),
            prune_counters: Mutex::new(ErrorCounters::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    /// The client root and its mapping.
    pub fn client_root(&self) -> &ClientRoot {
        &self.root
    }

    /// The hold tag of this job's last-received hold.
    pub fn last_received_tag(&self) -> &str {
        &self.last_received_tag
    }

    fn backend(&self) -> &dyn ZfsBackend {
        self.backend.as_ref()
    }

    /// Whether a dataset exists (asked with a cheap `zfs get` of one user property).
    async fn exists(&self, dataset: &DatasetName) -> Result<bool, ZfsError> {
        match self
            .backend()
            .get_properties(&dataset.clone().into(), &[PLACEHOLDER_PROPERTY])
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The error for a missing `root_fs`: the pool, if that is missing, or the root.
    async fn root_missing(&self) -> EndpointError {
        let root_fs = self.root.root_fs().clone();
        let pool = root_fs.pool().to_owned();
        let pool_exists = match DatasetName::parse(&pool) {
            Ok(pool_ds) if pool_ds != root_fs => self.exists(&pool_ds).await,
            _ => Ok(false),
        };
        match pool_exists {
            Ok(false) => ReceiverError::PoolMissing { pool, root_fs }.into(),
            Ok(true) => ReceiverError::RootMissing { root_fs }.into(),
            Err(e) => e.into(),
        }
    }

    /// Creates the missing ancestors of `local` below `root_fs` as placeholders, under the
    /// placeholder mutex.
    async fn ensure_ancestors(&self, local: &DatasetName) -> Result<(), EndpointError> {
        let _serialised = self.placeholders.lock().await;
        let root_fs = self.root.root_fs();
        // `local` is strictly below the client root, so it always has a parent.
        let Some(parent) = local.parent() else {
            return Ok(());
        };
        if self.exists(&parent).await? {
            return Ok(());
        }
        // The chain from just below root_fs down to the parent, top-down. Its length is bounded
        // by the name length: every level costs at least two bytes.
        let mut chain: Vec<DatasetName> = Vec::new();
        let mut cursor = Some(parent);
        while let Some(d) = cursor {
            if !root_fs.is_ancestor_of(&d) || chain.len() > NAME_LEN_MAX {
                break;
            }
            cursor = d.parent();
            chain.push(d);
        }
        chain.reverse();
        if !self.exists(root_fs).await? {
            return Err(self.root_missing().await);
        }
        let mut first_missing = chain.len();
        for (i, d) in chain.iter().enumerate() {
            if !self.exists(d).await? {
                first_missing = i;
                break;
            }
        }
        // Decide every placeholder's encryption before creating any, so that a refusal leaves
        // the pool as it was.
        let mut to_create = Vec::with_capacity(chain.len() - first_missing);
        for d in &chain[first_missing..] {
            // A placeholder is either the client root or below it.
            if d != self.root.dataset() {
                self.root.check(d, "create a placeholder")?;
            }
            to_create.push((d, self.placeholder_encryption(d)?));
        }
        for (d, encryption) in to_create {
            match self.backend().create_placeholder(d, encryption).await {
                Ok(()) => {}
                // Another job created it meanwhile: what we wanted.
                Err(e) if e.kind == ZfsErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(ReceiverError::CreatePlaceholder {
                        dataset: d.clone(),
                        source,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    fn placeholder_encryption(
        &self,
        dataset: &DatasetName,
    ) -> Result<PlaceholderEncryption, ReceiverError> {
        match self.config.placeholder_encryption {
            PlaceholderEncryptionConfig::Off => Ok(PlaceholderEncryption::Off),
            PlaceholderEncryptionConfig::Inherit => Ok(PlaceholderEncryption::Inherit),
            PlaceholderEncryptionConfig::Unspecified
                if self.root.has_identity() && dataset == self.root.dataset() =>
            {
                Ok(PlaceholderEncryption::Inherit)
            }
            PlaceholderEncryptionConfig::Unspecified => {
                Err(ReceiverError::PlaceholderEncryptionUnspecified {
                    dataset: dataset.clone(),
                })
            }
        }
    }

    /// What the receive's target is now.
    async fn target_state(&self, local: &DatasetName) -> Result<Target, ZfsError> {
        let props = match self
            .backend()
            .get_properties(&local.clone().into(), &[PLACEHOLDER_PROPERTY])
            .await
        {
            Ok(props) => props,
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => return Ok(Target::Missing),
            Err(e) => return Err(e),
        };
        let local_value = props
            .get(PLACEHOLDER_PROPERTY)
            .filter(|p| p.source == PropertySource::Local)
            .map(|p| p.value.as_str());
        Ok(match local_value {
            Some(PLACEHOLDER_ON) => Target::Placeholder,
            Some(PLACEHOLDER_OFF) => Target::TurnedOffPlaceholder,
            _ => Target::Filesystem,
        })
    }

    /// Rolls a placeholder back to its oldest snapshot and destroys that, so that `zfs receive
    /// -F` of a full stream finds no snapshots (reference 4.1, "rollback for forced recv").
    /// The caller has made the second confinement check.
    async fn clear_placeholder_snapshots(&self, oldest: &VersionName) -> Result<(), ZfsError> {
        self.backend().rollback(oldest).await?;
        let outcomes = self
            .backend()
            .destroy_snapshots(oldest.dataset(), std::slice::from_ref(oldest.short()))
            .await?;
        for outcome in outcomes {
            if let Err(kind) = outcome.result {
                return Err(ZfsError::new(Operation::DestroySnapshots, oldest, kind));
            }
        }
        Ok(())
    }

    /// After a failed receive into a placeholder: turn the property back on, unless the receive
    /// left resumable state (the next attempt continues it, and the dataset is no placeholder
    /// any more).
    async fn restore_placeholder(&self, local: &DatasetName, receive: ZfsError) -> EndpointError {
        let state_left = match &receive.kind {
            ZfsErrorKind::ReceiveInterrupted { .. } => true,
            _ => matches!(self.backend().resume_token(local).await, Ok(Some(_))),
        };
        if state_left {
            return receive.into();
        }
        match self
            .backend()
            .set_property(local, PLACEHOLDER_PROPERTY, PLACEHOLDER_ON)
            .await
        {
            Ok(()) if receive.kind == ZfsErrorKind::EncryptedOverwriteRefused => {
                ReceiverError::EncryptedPlaceholder {
                    dataset: local.clone(),
                    source: receive,
                }
                .into()
            }
            Ok(()) => receive.into(),
            // The dataset went away with the failed receive: nothing to restore.
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => receive.into(),
            Err(restore) => ReceiverError::RestorePlaceholder {
                dataset: local.clone(),
                receive: Box::new(receive),
                restore: Box::new(restore),
            }
            .into(),
        }
    }

    /// `dataset@name`, or the error that says the full name is too long for ZFS.
    fn snapshot_name(
        &self,
        dataset: &DatasetName,
        name: &Component,
    ) -> Result<VersionName, ReceiverError> {
        VersionName::new(dataset.clone(), VersionKind::Snapshot, name.clone()).map_err(|source| {
            ReceiverError::SnapshotName {
                dataset: dataset.clone(),
                source,
            }
        })
    }

    /// Places, checks and moves this job's last-received hold as the guarantee says; returns
    /// `to` as listed afterwards.
    async fn after_receive(
        &self,
        local: &DatasetName,
        to: &Version,
        guarantee: Guarantee,
    ) -> Result<Version, EndpointError> {
        let to_name = self.snapshot_name(local, &to.name)?;
        let tag = self.last_received_tag.as_str();
        let hold_on_to = guarantee != Guarantee::GuaranteeNothing;
        if hold_on_to {
            self.backend()
                .hold(tag, std::slice::from_ref(&to_name))
                .await?;
        }
        let listing = self
            .backend()
            .list_versions(std::slice::from_ref(local), VersionTypes::Snapshots)
            .await?;
        let versions = listing.versions(local);
        let mut listed_to = match versions.iter().find(|v| v.name == to.name) {
            Some(v) if v.guid == to.guid => v.clone(),
            other => {
                return Err(ReceiverError::ReceivedMismatch {
                    dataset: local.clone(),
                    snapshot: to_name,
                    expected: to.guid,
                    found: other
                        .map_or_else(|| "missing".to_owned(), |v| format!("guid {}", v.guid)),
                }
                .into());
            }
        };
        let found = find(self.backend(), local, versions)
            .await
            .map_err(|source| ReceiverError::FindHolds {
                dataset: local.clone(),
                source,
            })?;
        let ours = Abstraction::LastReceivedHold {
            job: self.config.job.clone(),
        };
        let held: Vec<&VersionName> = found
            .iter()
            .filter(|f| f.abstraction == ours)
            .map(|f| &f.version)
            .collect();
        if hold_on_to && !held.contains(&&to_name) {
            return Err(ReceiverError::HoldNotPlaced {
                snapshot: to_name,
                tag: tag.to_owned(),
            }
            .into());
        }
        let release: Vec<VersionName> = held
            .into_iter()
            .filter(|v| !hold_on_to || **v != to_name)
            .cloned()
            .collect();
        if release.is_empty() {
            return Ok(listed_to);
        }
        // The second check of the release: never the hold that protects the new `to`.
        let releases_to = release.contains(&to_name);
        if hold_on_to && releases_to {
            let error = ReceiverError::ReleaseRefused {
                snapshot: to_name,
                tag: tag.to_owned(),
            };
            #[cfg(any(test, debug_assertions))]
            panic!("{error}");
            #[cfg(not(any(test, debug_assertions)))]
            return Err(error.into());
        }
        self.root.assert_before(local, DestructiveAction::Release)?;
        self.backend().release(tag, &release).await?;
        if releases_to {
            listed_to.userrefs = listed_to.userrefs.map(|n| n.saturating_sub(1));
        }
        Ok(listed_to)
    }
}

/// The state of a receive's target before receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// It does not exist: the receive creates it.
    Missing,
    /// A placeholder (`zrepl:placeholder=on`, local).
    Placeholder,
    /// A placeholder whose replacement was interrupted (`zrepl:placeholder=off`, local).
    TurnedOffPlaceholder,
    /// An ordinary filesystem.
    Filesystem,
}

#[async_trait]
impl Endpoint for ReceiverEndpoint {
    async fn ping(&self) -> Result<(), EndpointError> {
        Ok(())
    }

    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError> {
        let root = self.root.dataset();
        let features = match self.backend().features(root.pool()).await {
            Ok(features) => features,
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => {
                return Err(self.root_missing().await);
            }
            Err(e) => return Err(e.into()),
        };
        // Without resumable receive there is no token property to ask for (zrepl: empty).
        let properties: &[&str] = if features.resumable_receive {
            &[PLACEHOLDER_PROPERTY, RESUME_TOKEN_PROPERTY]
        } else {
            &[PLACEHOLDER_PROPERTY]
        };
        let entries = match self.backend().list_datasets(Some(root), properties).await {
            Ok(entries) => entries,
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => {
                if self.root.has_identity() && self.exists(self.root.root_fs()).await? {
                    // Nothing received from this client yet.
                    return Ok(Vec::new());
                }
                return Err(self.root_missing().await);
            }
            Err(e) => return Err(e.into()),
        };
        if entries.len() > FILESYSTEMS_MAX + 1 {
            return Err(ReceiverError::TooMany {
                what: "filesystems below the receiver's root",
                n: entries.len(),
                max: FILESYSTEMS_MAX,
            }
            .into());
        }
        let mut filesystems = Vec::with_capacity(entries.len());
        for entry in &entries {
            let Some(path) = self.root.map_out(&entry.name) else {
                continue;
            };
            let placeholder_value = entry.properties.first().map(String::as_str);
            // Only a local `on` makes a placeholder; children inherit the value, so ask. One
            // that vanished since the listing (an aborted receive) is not listed.
            let is_placeholder = if placeholder_value == Some(PLACEHOLDER_ON) {
                match is_local_placeholder(self.backend(), &entry.name).await {
                    Ok(local_on) => local_on,
                    Err(e) if e.kind == ZfsErrorKind::DoesNotExist => continue,
                    Err(e) => return Err(e.into()),
                }
            } else {
                false
            };
            let resume_token = entry
                .properties
                .get(1)
                .filter(|t| !t.is_empty() && t.as_str() != PROPERTY_NONE)
                .cloned();
            filesystems.push(Filesystem {
                path,
                is_placeholder,
                resume_token,
            });
        }
        filesystems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(filesystems)
    }

    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError> {
        let local = self.root.map_in(filesystem)?;
        let mut listing = self
            .backend()
            .list_versions(std::slice::from_ref(&local), VersionTypes::All)
            .await?;
        Ok(listing.datasets.remove(&local).unwrap_or_default())
    }

    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError> {
        if snapshots.len() > DESTROY_SNAPSHOTS_MAX {
            return Err(ReceiverError::TooMany {
                what: "snapshots to destroy",
                n: snapshots.len(),
                max: DESTROY_SNAPSHOTS_MAX,
            }
            .into());
        }
        let local = self.root.map_in(filesystem)?;
        let listing = self
            .backend()
            .list_versions(std::slice::from_ref(&local), VersionTypes::Snapshots)
            .await?;
        let current: BTreeMap<&Component, Guid> = listing
            .versions(&local)
            .iter()
            .map(|v| (&v.name, v.guid))
            .collect();
        // One outcome per distinct name, in request order; the first GUID given for a name wins.
        let mut order: Vec<&Component> = Vec::new();
        let mut outcomes: BTreeMap<&Component, Result<(), ZfsErrorKind>> = BTreeMap::new();
        let mut doomed: Vec<Component> = Vec::new();
        for (name, guid) in snapshots {
            if outcomes.contains_key(name) || doomed.contains(name) {
                continue;
            }
            order.push(name);
            match current.get(name) {
                // Already gone: destroyed, as the backend counts it.
                None => {
                    outcomes.insert(name, Ok(()));
                }
                Some(existing) if existing == guid => doomed.push(name.clone()),
                Some(existing) => {
                    outcomes.insert(
                        name,
                        Err(ZfsErrorKind::ExistsWithOtherGuid {
                            existing: *existing,
                        }),
                    );
                }
            }
        }
        if !doomed.is_empty() {
            self.root
                .assert_before(&local, DestructiveAction::DestroySnapshots)?;
            let destroyed = self.backend().destroy_snapshots(&local, &doomed).await?;
            let by_name: BTreeMap<Component, Result<(), ZfsErrorKind>> = destroyed
                .into_iter()
                .map(|o| (o.snapshot, o.result))
                .collect();
            for name in &doomed {
                let result = by_name.get(name).cloned().unwrap_or_else(|| {
                    Err(ZfsErrorKind::Other {
                        detail: "the backend reported no outcome".to_owned(),
                    })
                });
                if let Some(key) = order.iter().find(|n| **n == name) {
                    outcomes.insert(key, result);
                }
            }
        }
        Ok(order
            .into_iter()
            .map(|name| DestroyOutcome {
                snapshot: name.clone(),
                result: outcomes.remove(name).unwrap_or(Ok(())),
            })
            .collect())
    }

    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError> {
        let PruneCursors::Given(given) = &request.cursors else {
            return Err(ReceiverError::OwnCursorsRefused.into());
        };
        for (what, n, max) in [
            ("filesystems", request.filesystems.len(), PRUNE_TARGETS_MAX),
            ("cursors", given.len(), PRUNE_TARGETS_MAX),
            (
                "protected snapshots",
                request.protected.len(),
                PROTECTED_MAX,
            ),
        ] {
            if n > max {
                return Err(ReceiverError::TooMany { what, n, max }.into());
            }
        }
        let mut sender_paths: BTreeMap<DatasetName, DatasetName> = BTreeMap::new();
        let mut targets = Vec::with_capacity(request.filesystems.len());
        for fs in &request.filesystems {
            let local = self.root.map_in(fs)?;
            sender_paths.insert(local.clone(), fs.clone());
            targets.push(local);
        }
        let mut cursors: BTreeMap<DatasetName, ReplicationCursor> = BTreeMap::new();
        for (fs, cursor) in given {
            cursors.insert(self.root.map_in(fs)?, *cursor);
        }
        let mut protected = Protected::new();
        for (fs, guid) in &request.protected {
            protected.insert((self.root.map_in(fs)?, *guid));
        }
        for local in &targets {
            self.root.assert_before(local, DestructiveAction::Prune)?;
        }
        let side_request = SideRequest {
            side: Side::Receiver,
            targets: &targets,
            rules: &request.rules,
            cursors: Cursors::Given(&cursors),
            protected: &protected,
        };
        let mut counters = self.prune_counters.lock().await;
        let mut report = prune_side(self.backend(), &side_request, &mut counters)
            .await
            .map_err(ReceiverError::from)?;
        // Report by sender-side path, as the request named them; the errors inside name the
        // local datasets, which is what a user acts on.
        for entry in &mut report.filesystems {
            if let Some(path) = sender_paths.get(&entry.filesystem) {
                entry.filesystem = path.clone();
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl Receiver for ReceiverEndpoint {
    async fn receive(
        &self,
        request: &ReceiveReq,
        stream: ByteStream,
    ) -> Result<ReceiveRes, EndpointError> {
        let local = self.root.map_in(&request.filesystem)?;
        if !request.to.is_snapshot() {
            return Err(ReceiverError::ToNotSnapshot {
                filesystem: request.filesystem.clone(),
                to: request.to.to_string(),
            }
            .into());
        }
        self.ensure_ancestors(&local).await?;
        let features = self.backend().features(local.pool()).await?;
        let resumable = features.resumable_receive;

        let mut target = self.target_state(&local).await?;
        if request.clear_resume_token && resumable && target != Target::Missing {
            self.root
                .assert_before(&local, DestructiveAction::AbortReceive)?;
            self.backend().abort_receive(&local).await?;
            // Aborting the partial receive of a new filesystem destroys it.
            target = self.target_state(&local).await?;
        }

        // A full stream replaces a placeholder: `off`, no snapshots, `-F`. An incremental
        // stream never does: a placeholder shares no snapshot with the sender, so it would
        // fail after the placeholder's snapshots were destroyed.
        let mut force = false;
        let mut turned_off = false;
        let replaceable = !request.incremental
            && match target {
                Target::Placeholder => true,
                // A replacement that was interrupted: still the placeholder it was once its
                // partial state is gone (a partial state is resumed, not forced over), as long
                // as it has no snapshots of its own (checked below).
                Target::TurnedOffPlaceholder => {
                    !resumable || self.backend().resume_token(&local).await?.is_none()
                }
                Target::Missing | Target::Filesystem => false,
            };
        if replaceable {
            let listing = self
                .backend()
                .list_versions(std::slice::from_ref(&local), VersionTypes::Snapshots)
                .await?;
            let snapshots = listing.versions(&local).to_vec();
            if target == Target::Placeholder || snapshots.is_empty() {
                let oldest = match snapshots.first() {
                    Some(v) => Some(self.snapshot_name(&local, &v.name)?),
                    None => None,
                };
                if oldest.is_some() {
                    self.root
                        .assert_before(&local, DestructiveAction::Rollback)?;
                    self.root
                        .assert_before(&local, DestructiveAction::DestroySnapshots)?;
                }
                if target == Target::Placeholder {
                    self.backend()
                        .set_property(&local, PLACEHOLDER_PROPERTY, PLACEHOLDER_OFF)
                        .await?;
                    turned_off = true;
                }
                if let Some(oldest) = &oldest
                    && let Err(e) = self.clear_placeholder_snapshots(oldest).await
                {
                    // Nothing was received: put the placeholder back as it was.
                    return Err(self.restore_placeholder(&local, e).await);
                }
                force = true;
            }
        }

        let backend_request = ReceiveRequest {
            dataset: local.clone(),
            to: request.to.name.clone(),
            to_guid: request.to.guid,
            resumable,
            force,
            properties_override: self.config.properties_override.clone(),
            properties_inherit: self.config.properties_inherit.clone(),
        };
        if force {
            self.root
                .assert_before(&local, DestructiveAction::ForcedReceive)?;
        }
        let received = match self.backend().receive(&backend_request, stream).await {
            Ok(received) => received,
            Err(e) if turned_off => return Err(self.restore_placeholder(&local, e).await),
            Err(e) if force && e.kind == ZfsErrorKind::EncryptedOverwriteRefused => {
                return Err(ReceiverError::EncryptedPlaceholder {
                    dataset: local.clone(),
                    source: e,
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        if received.to.guid != request.to.guid || received.to.name != request.to.name {
            return Err(ReceiverError::ReceivedMismatch {
                dataset: local.clone(),
                snapshot: self.snapshot_name(&local, &request.to.name)?,
                expected: request.to.guid,
                found: format!("`@{}` with guid {}", received.to.name, received.to.guid),
            }
            .into());
        }
        let guarantee = request.protection.for_step(request.incremental);
        let listed = self.after_receive(&local, &request.to, guarantee).await?;
        Ok(ReceiveRes { received: listed })
    }
}

/// Checks the receive properties of a configuration.
fn check_properties(config: &ReceiverConfig) -> Result<(), ReceiverConfigError> {
    let n_properties = config.properties_override.len() + config.properties_inherit.len();
    if n_properties > RECEIVE_PROPERTIES_MAX {
        return Err(ReceiverConfigError::TooManyProperties {
            n_properties,
            max: RECEIVE_PROPERTIES_MAX,
        });
    }
    let names = config
        .properties_override
        .keys()
        .map(|k| (k, "override"))
        .chain(config.properties_inherit.iter().map(|k| (k, "inherit")));
    let mut seen = BTreeSet::new();
    for (name, list) in names {
        let why = if name.is_empty() {
            Some("the name is empty")
        } else if name.contains('=') {
            Some("a property name cannot contain `=`")
        } else if name.starts_with('-') {
            Some("a property name cannot start with `-`")
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("a property name cannot contain whitespace or control characters")
        } else if name == PLACEHOLDER_PROPERTY {
            Some(
                "zferry manages zrepl:placeholder itself; receiving it would turn received \
                 filesystems into placeholders, which the next replication would overwrite",
            )
        } else if !seen.insert(name.as_str()) {
            Some("the property is both overridden and inherited")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ReceiverConfigError::Property {
                name: name.clone(),
                list,
                why,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ds(name: &str) -> DatasetName {
        DatasetName::parse(name).unwrap()
    }

    fn sink_root() -> ClientRoot {
        ClientRoot::new(ds("backup/sink"), Some(Component::parse("host1").unwrap())).unwrap()
    }

    /// `check(root, dataset)` over a table: `ok` or the error's first words.
    #[test]
    fn confinement_accepts_only_datasets_strictly_below_the_client_root() {
        let root = sink_root();
        let cases = [
            ("backup/sink/host1/tank", true),
            ("backup/sink/host1/tank/a/b", true),
            ("backup/sink/host1", false),
            ("backup/sink", false),
            ("backup", false),
            ("backup/sink/host2/tank", false),
            ("backup/sink/host10/tank", false),
            ("backup/sink/host1x", false),
            ("other/sink/host1/tank", false),
        ];
        for (dataset, ok) in cases {
            let verdict = root.check(&ds(dataset), "test");
            assert_eq!(verdict.is_ok(), ok, "{dataset}: {verdict:?}");
        }
    }

    #[test]
    fn mapping_goes_below_the_identity_and_back() {
        let root = sink_root();
        let local = root.map_in(&ds("tank/a b")).unwrap();
        assert_eq!(local, ds("backup/sink/host1/tank/a b"));
        assert_eq!(root.map_out(&local), Some(ds("tank/a b")));
        assert_eq!(root.map_out(&ds("backup/sink/host1")), None);
        assert_eq!(root.map_out(&ds("backup/sink/host2/tank")), None);
        // Below the root, but no sender path maps there: `1x` is not a pool name.
        assert_eq!(root.map_out(&ds("backup/sink/host1/1x")), None);

        let pull = ClientRoot::new(ds("backup/pull"), None).unwrap();
        assert_eq!(pull.map_in(&ds("tank")).unwrap(), ds("backup/pull/tank"));
        assert_eq!(pull.map_out(&ds("backup/pull")), None);
    }

    #[test]
    fn hostile_sender_paths_are_refused() {
        let root = sink_root();
        // `..`, absolute and empty paths never become a DatasetName at all.
        for hostile in [
            "..",
            "tank/../../x",
            "/tank",
            "",
            "tank/",
            "tank//a",
            "tank@s",
        ] {
            assert!(DatasetName::parse(hostile).is_err(), "{hostile:?} parsed");
        }
        // A valid sender path that is too long below the root.
        let long = format!("tank/{}", "a".repeat(240));
        let err = root.map_in(&ds(&long)).unwrap_err();
        assert!(matches!(err, ReceiverError::Unmappable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("choose a shorter root_fs"), "{message}");
        assert!(message.contains("ZFS allows at most 255"), "{message}");
    }

    #[test]
    #[should_panic(expected = "confinement violated")]
    fn the_second_check_panics_in_tests() {
        let root = sink_root();
        let _ = root.assert_before(&ds("backup/sink/host1"), DestructiveAction::ForcedReceive);
    }

    #[test]
    fn the_client_root_must_be_a_valid_name() {
        let long_root = ds(&format!("backup/{}", "r".repeat(240)));
        let err = ClientRoot::new(long_root, Some(Component::parse(&"i".repeat(20)).unwrap()))
            .unwrap_err();
        assert!(matches!(err, ReceiverConfigError::ClientRoot { .. }));
        assert!(err.to_string().contains("choose a shorter"));
        // The identity is one component by construction.
        assert!(Component::parse("a/b").is_err());
        assert!(Component::parse("..").is_err());
    }

    fn config() -> ReceiverConfig {
        ReceiverConfig {
            job: JobId::parse("sink").unwrap(),
            root_fs: ds("backup/sink"),
            client_identity: None,
            placeholder_encryption: PlaceholderEncryptionConfig::Unspecified,
            properties_override: BTreeMap::new(),
            properties_inherit: Vec::new(),
        }
    }

    #[test]
    fn receive_properties_are_checked() {
        let check = |over: &[&str], inherit: &[&str]| {
            let mut c = config();
            c.properties_override = over
                .iter()
                .map(|k| ((*k).to_owned(), "v".to_owned()))
                .collect();
            c.properties_inherit = inherit.iter().map(|k| (*k).to_owned()).collect();
            check_properties(&c).map_err(|e| e.to_string())
        };
        assert_eq!(
            check(&["mountpoint", "com.example:x"], &["keylocation"]),
            Ok(())
        );
        let cases: [(&[&str], &[&str], &str); 6] = [
            (&["a=b"], &[], "cannot contain `=`"),
            (&[""], &[], "empty"),
            (&[], &["-F"], "start with `-`"),
            (&["a b"], &[], "whitespace"),
            (&[], &["zrepl:placeholder"], "manages zrepl:placeholder"),
            (&["atime"], &["atime"], "both overridden and inherited"),
        ];
        for (over, inherit, expected) in cases {
            let err = check(over, inherit).unwrap_err();
            assert!(err.contains(expected), "{over:?} {inherit:?}: {err}");
        }
    }

    #[test]
    fn error_classes() {
        let root_missing = ReceiverError::RootMissing {
            root_fs: ds("backup/sink"),
        };
        assert_eq!(root_missing.class(), ErrorClass::FATAL);
        let unspecified = ReceiverError::PlaceholderEncryptionUnspecified {
            dataset: ds("backup/sink/tank"),
        };
        assert_eq!(unspecified.class(), ErrorClass::FILESYSTEM_PERMANENT);
        let busy = ReceiverError::CreatePlaceholder {
            dataset: ds("backup/sink/tank"),
            source: ZfsError::new(
                crate::backend::Operation::CreatePlaceholder,
                "backup/sink/tank",
                ZfsErrorKind::Busy,
            ),
        };
        assert_eq!(busy.class(), ErrorClass::FILESYSTEM_TEMPORARY);
        assert_eq!(ReceiverError::OwnCursorsRefused.class(), ErrorClass::FATAL);
    }

    /// Valid dataset names of one to six components, some long enough to overflow a root.
    fn dataset_name() -> impl Strategy<Value = DatasetName> {
        (
            "[a-z][a-z0-9_.:-]{0,12}",
            prop::collection::vec("[0-9A-Za-z _.:-]{1,60}", 0..6),
        )
            .prop_filter_map("not a valid dataset name", |(pool, rest)| {
                let mut name = pool;
                for c in rest {
                    name.push('/');
                    name.push_str(&c);
                }
                DatasetName::parse(&name).ok()
            })
    }

    fn client_root() -> impl Strategy<Value = ClientRoot> {
        prop_oneof![
            Just(ClientRoot::new(ds("backup/sink"), None).unwrap()),
            Just(sink_root()),
            Just(ClientRoot::new(ds("b"), Some(Component::parse("h").unwrap())).unwrap()),
        ]
    }

    /// A client root and a local dataset: anywhere, or below the root (with any first
    /// component, valid pool name or not).
    fn root_and_local() -> impl Strategy<Value = (ClientRoot, DatasetName)> {
        client_root().prop_flat_map(|root| {
            let below = root.dataset().clone();
            let local = prop_oneof![
                dataset_name(),
                "[0-9A-Za-z _.:-]{1,30}(/[0-9A-Za-z _.:-]{1,30}){0,3}"
                    .prop_filter_map("too long", move |rel| below.join(&rel).ok()),
            ];
            (Just(root), local)
        })
    }

    proptest! {
        /// Every sender path maps below the root and back to itself, or is refused exactly when
        /// the mapped name would be longer than ZFS allows.
        #[test]
        fn mapping_round_trips_or_refuses_long_names(root in client_root(), path in dataset_name()) {
            let fits = root.dataset().as_str().len() + 1 + path.as_str().len() <= NAME_LEN_MAX;
            match root.map_in(&path) {
                Ok(local) => {
                    prop_assert!(fits);
                    prop_assert!(root.check(&local, "test").is_ok());
                    prop_assert_eq!(root.map_out(&local), Some(path));
                }
                Err(ReceiverError::Unmappable { .. }) => prop_assert!(!fits),
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        /// Any local dataset that maps out maps back in to itself; anything the check refuses
        /// maps to no sender path.
        #[test]
        fn only_confined_datasets_map_out((root, local) in root_and_local()) {
            match root.map_out(&local) {
                Some(path) => prop_assert_eq!(root.map_in(&path).ok(), Some(local)),
                None => {
                    let confined = root.check(&local, "test").is_ok();
                    // Confined but unmappable only when the first relative component is no
                    // pool name.
                    prop_assert!(!confined || local.strip_ancestor(root.dataset())
                        .and_then(|rel| rel.split('/').next())
                        .is_some_and(|first| DatasetName::parse(first).is_err()));
                }
            }
        }
    }

    #[test]
    fn placeholder_encryption_config_spelling() {
        for (value, text) in [
            (PlaceholderEncryptionConfig::Unspecified, "\"unspecified\""),
            (PlaceholderEncryptionConfig::Off, "\"off\""),
            (PlaceholderEncryptionConfig::Inherit, "\"inherit\""),
        ] {
            assert_eq!(serde_json::to_string(&value).unwrap(), text);
        }
        assert_eq!(
            PlaceholderEncryptionConfig::default(),
            PlaceholderEncryptionConfig::Unspecified
        );
    }
}
