//! The sender endpoint over a [`ZfsBackend`]: it serves the filesystems a job's filter accepts,
//! checks every send request against its own pool before a byte is sent, and keeps zrepl's
//! holds and bookmarks (reference 2.3-2.5) so that steps can resume and the next incremental
//! step always has its base.
//!
//! # Validation (before any data moves)
//!
//! `send_dry`, `send` and (for the existence part) `send_completed` check, in zrepl's order:
//!
//! 1. the filter accepts the filesystem;
//! 2. `to` is a snapshot, and `include_intermediates` comes with a snapshot `from` (`zfs send
//!    -I` takes no bookmark);
//! 3. `to` and `from` exist on this pool with the GUIDs the active side claims (one listing);
//! 4. the job's encryption policy (`send.encrypted`, `send.raw`) fits the filesystem: zrepl
//!    1.7's matrix, see [`SendOptions`];
//! 5. a resume token decodes and resumes exactly this send ([`crate::resume_token::validate`]).
//!    A token that does not fit, or that ZFS itself rejects, is
//!    [`SenderError::ResumeTokenRefused`]: the active side then discards the receiver's partial
//!    state and sends the step afresh (see [`is_resume_token_refusal`]).
//!
//! # Protection strategies (zrepl's `endpoint_guarantees`)
//!
//! | guarantee | before the send | after the receiver confirmed |
//! |---|---|---|
//! | `guarantee_resumability` | step hold `zrepl_STEP_J_<job>` on `from` (a snapshot) and `to` | cursor bookmark on `to`; release the job's step holds, destroy its tentative and older cursors |
//! | `guarantee_incremental` | tentative cursor bookmarks of `from` and `to` | the same |
//! | `guarantee_nothing` | nothing | destroy *all* the job's cursors and tentative cursors, release its step holds |
//!
//! The last row is zrepl's behaviour and deliberately kept: a job that asks for no guarantee
//! leaves nothing on the sender, which also means sender-side pruning finds no cursor and refuses
//! to prune (zrepl issue #682). Users of `guarantee_nothing` manage retention themselves.
//!
//! After protecting a step, `send` cleans up what earlier, interrupted steps of this job left on
//! the filesystem: its step holds and tentative cursors, except the ones just made and except a
//! bookmark of ours that is this step's `from` (zrepl: the planner may pick a tentative cursor
//! as `from`). Another job's abstractions, the legacy cursor, a user's bookmarks and holds, and
//! names that only look like ours ([`crate::abstraction::Recognition::Tinkered`]) are never
//! touched. A failed cleanup does not fail the send (as zrepl's `TryBatchDestroy`); it is
//! recorded as a [`SenderNote`] and repeated by the next step.
//!
//! `send_completed` moves the cursor only forward: a cursor of this job that is newer than the
//! confirmed `to` stays (zrepl destroys every other cursor; a late confirmation of an old step
//! would then move the cursor backwards).
//!
//! # The second check before every release and destroy
//!
//! Each hold release and bookmark destroy is planned from a listing made after the step's
//! protection, and checked again right before it is issued against what must stay, derived from
//! the request alone: the step's own holds and tentative cursors, the `from` bookmark, the new
//! cursor. Under `cfg(test)` or `debug_assertions` a violation panics; a release build fails the
//! request with [`SenderError::ProtectionViolated`] and issues nothing further.
//!
//! # What it never does
//!
//! It never destroys a snapshot except through [`Endpoint::destroy_snapshots`] (by name, only
//! with the claimed GUID) and [`Endpoint::prune`] (the pruner with its own second check), never
//! touches a filesystem its filter does not accept, and never resumes with a token it has not
//! decoded and matched against its own listing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::abstractions::{FindError, find};
use super::{
    Endpoint, EndpointError, Filesystem, Guarantee, PruneCursors, PruneReq, SendReq, SendRes,
    Sender,
};
use crate::abstraction::{Abstraction, AbstractionKind, FoundAbstraction, Recognition};
use crate::backend::{
    ByteStream, DestroyOutcome, PLACEHOLDER_PROPERTY, SendFlags, SendRequest, SendSource,
    VersionTypes, ZfsBackend, ZfsError, ZfsErrorKind,
};
use crate::engine::pruner::{
    Cursors, PLACEHOLDER_ON, Protected, PruneReport, Side, SideError, SideRequest,
    is_local_placeholder, prune_side,
};
use crate::error_class::{Classify, ErrorClass, FailureKind};
use crate::filter::Filter;
use crate::job_id::JobId;
use crate::name::{Component, DatasetName, NameError, VersionKind, VersionName};
use crate::prune::{ReplicationCursor, cursor_from_bookmarks};
use crate::queue::{ErrorCounters, STEP_QUEUE_LEN_MAX};
use crate::resume_token::{
    FilesystemEncryption, ResumeRequest, ResumeToken, ResumeTokenError, ResumeTokenMismatch,
    SendEncryptionPolicy, validate,
};
use crate::version::{Guid, Version, sort_by_createtxg};

/// The most filesystems one request lists, asks cursors for, or prunes: the replication queue's
/// bound, since every served filesystem is a replicated one.
pub const FILESYSTEMS_MAX: usize = STEP_QUEUE_LEN_MAX;

/// The most snapshots one `destroy_snapshots` request names.
pub const DESTROY_SNAPSHOTS_MAX: usize = 100_000;

/// The most [`SenderNote`]s kept until [`SenderEndpoint::take_notes`]; older ones are dropped
/// first.
pub const NOTES_MAX: usize = 1_024;

/// The property whose value says whether a dataset is encrypted (`off` when not).
const ENCRYPTION_PROPERTY: &str = "encryption";

/// zrepl's `send:` options of a push or source job. Each maps onto a `zfs send` flag
/// ([`SendOptions::flags`]); `encrypted` is also a policy that validation enforces:
///
/// | filesystem | `encrypted` | `raw` | verdict |
/// |---|---|---|---|
/// | plain | false | false | plain send |
/// | plain | false | true | plain send (`-w` of a plain filesystem is plain; zrepl #503) |
/// | plain | true | any | refused: the policy mandates encrypted sends |
/// | encrypted | false | false | plain send (the key must be loaded) |
/// | encrypted | false | true | refused: a raw send would arrive encrypted, against the policy |
/// | encrypted | true | any | raw, encrypted send |
///
/// The bandwidth limit is not a `zfs send` option and is left to the transport.
///
/// It deserializes from zrepl's `send:` keys; keys it does not know (such as
/// `bandwidth_limit`) are left to the configuration layer that owns the whole map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendOptions {
    /// Only encrypted filesystems are sent, and only raw (`-w`): the data stays encrypted on
    /// the receiver, which never sees the key.
    pub encrypted: bool,
    /// `-w`: send blocks as they are on disk.
    pub raw: bool,
    /// `-p`: include the filesystem's properties.
    pub send_properties: bool,
    /// `-b`: include only received properties.
    pub backup_properties: bool,
    /// `-L`: blocks over 128 KiB stay large. Never flip it after the initial replication (data
    /// loss on OpenZFS before 2.0).
    pub large_blocks: bool,
    /// `-c`: compressed blocks stay compressed.
    pub compressed: bool,
    /// `-e`: embedded data blocks stay embedded.
    pub embedded_data: bool,
    /// `-S`: send a partially received dataset's saved state.
    pub saved: bool,
}

impl SendOptions {
    /// The `zfs send` flags: `-w` when either `encrypted` or `raw` is set, as in zrepl.
    pub fn flags(&self) -> SendFlags {
        SendFlags {
            raw: self.encrypted || self.raw,
            properties: self.send_properties,
            backup_properties: self.backup_properties,
            large_blocks: self.large_blocks,
            compressed: self.compressed,
            embedded_data: self.embedded_data,
            saved: self.saved,
        }
    }

    /// The encryption policy resume tokens are checked against.
    pub fn policy(&self) -> SendEncryptionPolicy {
        if self.encrypted {
            SendEncryptionPolicy::Encrypted
        } else {
            SendEncryptionPolicy::Unencrypted
        }
    }
}

/// What a sender endpoint serves and how it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// The sending job: its name is in every hold tag and bookmark the endpoint writes.
    pub job: JobId,
    /// The filesystems served; every request naming another is refused.
    pub filter: Filter,
    /// How to send.
    pub send: SendOptions,
}

/// The sending end of a job over a ZFS backend (see the module doc).
#[derive(Debug)]
pub struct SenderEndpoint {
    backend: Arc<dyn ZfsBackend>,
    config: SenderConfig,
    /// The pruner's back-off, kept across prune requests as zrepl's pruner keeps it.
    prune_counters: tokio::sync::Mutex<ErrorCounters>,
    /// What went wrong without failing a request, until someone takes it.
    notes: std::sync::Mutex<Vec<SenderNote>>,
}

/// Something that went wrong without failing the request it happened in (zrepl logs these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderNote {
    /// Under `guarantee_incremental` with a bookmark as `from`, the tentative cursor could not
    /// be made because this ZFS cannot copy bookmarks; the step goes on, speculating that `from`
    /// stays (zrepl does the same).
    FromNotBookmarked {
        /// The `from` bookmark.
        from: VersionName,
        /// What ZFS said.
        source: ZfsError,
    },
    /// This job's holds and bookmarks on a filesystem could not be listed, so nothing was cleaned
    /// up; the next step of this job on this filesystem tries again.
    CleanupNotPlanned {
        /// The filesystem.
        filesystem: DatasetName,
        /// Why.
        source: FindError,
    },
    /// Releasing a stale step hold or destroying a stale bookmark failed; the next step of this
    /// job on this filesystem tries again.
    CleanupFailed {
        /// The filesystem.
        filesystem: DatasetName,
        /// What could not be cleaned up.
        what: String,
        /// What ZFS said.
        source: ZfsError,
    },
}

impl fmt::Display for SenderNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FromNotBookmarked { from, source } => write!(
                f,
                "`{from}` is not protected by a tentative cursor because this ZFS cannot copy \
                 bookmarks ({source}); the step goes on, but destroying `{from}` during it \
                 would stop incremental replication"
            ),
            Self::CleanupNotPlanned { filesystem, source } => write!(
                f,
                "`{filesystem}`: cannot list this job's holds and bookmarks to clean up: \
                 {source}; the next step tries again"
            ),
            Self::CleanupFailed {
                filesystem,
                what,
                source,
            } => write!(
                f,
                "`{filesystem}`: cannot clean up {what}: {source}; the next step tries again"
            ),
        }
    }
}

/// Which end of a step a version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// The incremental base.
    From,
    /// The snapshot sent.
    To,
}

impl fmt::Display for StepEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::From => "`from`",
            Self::To => "`to`",
        })
    }
}

/// Why the sender will not resume with a receiver's resume token. Whatever the reason, the
/// receiver's partial state cannot continue this step: discard it and send afresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// The token is not a well-formed OpenZFS token.
    #[error("it cannot be decoded: {0}")]
    Undecodable(ResumeTokenError),
    /// The token resumes another send than the one requested (or a send the policy forbids).
    #[error("{0}")]
    Mismatch(ResumeTokenMismatch),
    /// ZFS itself rejected the token (stale, or for state that is gone).
    #[error("ZFS rejected it: {0}")]
    RejectedByZfs(Box<ZfsError>),
}

/// Why the sender refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// The job's filter does not accept the filesystem.
    #[error(
        "the sender does not serve `{filesystem}`: the job's `filesystems` filter does not \
         include it; add it to the filter if it should be replicated"
    )]
    FilesystemNotServed {
        /// The filesystem asked for.
        filesystem: DatasetName,
    },
    /// `to` is a bookmark.
    #[error(
        "cannot send `{filesystem}{to}`: `to` must be a snapshot, not a bookmark; this is a bug \
         in the active side's planning"
    )]
    ToNotSnapshot {
        /// The filesystem.
        filesystem: DatasetName,
        /// `to` as requested (`#name`).
        to: String,
    },
    /// `include_intermediates` without a snapshot as `from`.
    #[error(
        "cannot send `{filesystem}` with intermediate snapshots from {from}: `zfs send -I` \
         needs a snapshot as `from`; this is a bug in the active side's planning"
    )]
    IntermediatesNeedSnapshotFrom {
        /// The filesystem.
        filesystem: DatasetName,
        /// `from` as requested, or "no `from`".
        from: String,
    },
    /// `from` or `to` does not exist on the sender (any more).
    #[error(
        "{end} `{filesystem}{version}` (guid {guid}) does not exist on the sender any more \
         (destroyed or renamed since planning); the next attempt plans again"
    )]
    VersionGone {
        /// The filesystem.
        filesystem: DatasetName,
        /// Which end.
        end: StepEnd,
        /// The relative name (`@name` or `#name`).
        version: String,
        /// The GUID the active side claimed.
        guid: Guid,
    },
    /// `from` or `to` exists with another GUID than claimed: it was replaced by another
    /// snapshot or bookmark of the same name.
    #[error(
        "{end} `{filesystem}{version}` has guid {actual} on the sender, but the request claims \
         guid {claimed}: it was destroyed and re-created since planning; the next attempt \
         plans again"
    )]
    GuidMismatch {
        /// The filesystem.
        filesystem: DatasetName,
        /// Which end.
        end: StepEnd,
        /// The relative name.
        version: String,
        /// The GUID the active side claimed.
        claimed: Guid,
        /// The GUID on the pool.
        actual: Guid,
    },
    /// `send.encrypted` is set but the filesystem is not encrypted.
    #[error(
        "encrypted send mandated by policy, but filesystem `{filesystem}` is not encrypted; \
         exclude it from the job's filter, or set `send.encrypted: false` to send it unencrypted"
    )]
    EncryptedSendOfUnencryptedFilesystem {
        /// The filesystem.
        filesystem: DatasetName,
    },
    /// `send.raw` without `send.encrypted` of an encrypted filesystem: the stream would arrive
    /// encrypted although the policy says unencrypted.
    #[error(
        "policy mandates raw+unencrypted sends, but filesystem `{filesystem}` is encrypted; set \
         `send.encrypted: true` to send it encrypted, or unset `send.raw` to send it decrypted"
    )]
    RawSendOfEncryptedFilesystem {
        /// The filesystem.
        filesystem: DatasetName,
    },
    /// Raw or encrypted sends were asked for, but this ZFS has no native encryption.
    #[error(
        "cannot send `{filesystem}`: raw sends, which `send.encrypted` and `send.raw` need, are \
         not supported by this ZFS; upgrade ZFS or unset those options"
    )]
    EncryptionNotSupported {
        /// The filesystem.
        filesystem: DatasetName,
    },
    /// Whether the filesystem is encrypted could not be learnt.
    #[error("cannot check whether filesystem `{filesystem}` is encrypted: {source}")]
    EncryptionCheck {
        /// The filesystem.
        filesystem: DatasetName,
        /// What ZFS said (boxed: errors stay small on the happy path).
        source: Box<ZfsError>,
    },
    /// The receiver's resume token cannot resume this send.
    #[error(
        "the sender refuses to resume the send of `{filesystem}` with the receiver's resume \
         token: {reason}; the receiver's partial state must be discarded (`zfs receive -A`) and \
         the step sent afresh, which the next attempt does"
    )]
    ResumeTokenRefused {
        /// The filesystem.
        filesystem: DatasetName,
        /// Why.
        reason: TokenRefusal,
    },
    /// A name the endpoint had to build is not a valid ZFS name (a bookmark name too long for
    /// a deep filesystem).
    #[error("`{filesystem}`: {source}")]
    Name {
        /// The filesystem.
        filesystem: DatasetName,
        /// The name problem.
        source: NameError,
    },
    /// A bookmark this job needs on the filesystem (cursor or tentative cursor) would have a
    /// name longer than ZFS allows.
    #[error(
        "`{filesystem}` cannot carry this job's bookmarks: {source}; use a shorter job name, or \
         replicate a less deeply nested dataset, or choose `guarantee_nothing` (no bookmarks)"
    )]
    BookmarkName {
        /// The filesystem.
        filesystem: DatasetName,
        /// The name problem.
        source: NameError,
    },
    /// Finding this job's holds and bookmarks failed.
    #[error(transparent)]
    Abstractions(#[from] FindError),
    /// The step's protection (step holds or tentative cursors) could not be made; nothing was
    /// sent.
    #[error(
        "cannot protect the step of `{filesystem}` as `{guarantee}` asks: {source}; nothing was \
         sent"
    )]
    Protect {
        /// The filesystem.
        filesystem: DatasetName,
        /// The guarantee.
        guarantee: Guarantee,
        /// What ZFS said (boxed: errors stay small on the happy path).
        source: Box<ZfsError>,
    },
    /// The replication cursor could not be moved to the confirmed `to`.
    #[error(
        "cannot move the replication cursor of `{filesystem}` to `{cursor}`: {source}; the \
         step's holds and tentative cursors stay until it succeeds"
    )]
    CursorNotCreated {
        /// The filesystem.
        filesystem: DatasetName,
        /// The cursor bookmark's full name.
        cursor: String,
        /// What ZFS said (boxed: errors stay small on the happy path).
        source: Box<ZfsError>,
    },
    /// The cursor was created but a listing right after does not show it; nothing was released.
    #[error(
        "the replication cursor `{cursor}` is not listed right after it was created; nothing \
         of `{filesystem}` was released or destroyed, the next step tries again"
    )]
    CursorNotVisible {
        /// The filesystem.
        filesystem: DatasetName,
        /// The cursor bookmark's full name.
        cursor: String,
    },
    /// A cleanup would have released or destroyed what protects the step (a bug in zferry).
    #[error(
        "`{filesystem}`: refusing to {action} because it {protects}; this is a bug in zferry, \
         please report it; nothing further was released or destroyed"
    )]
    ProtectionViolated {
        /// The filesystem.
        filesystem: DatasetName,
        /// What would have been done (`release hold ... on ...`, `destroy bookmark ...`).
        action: String,
        /// What it protects.
        protects: &'static str,
    },
    /// A request named more filesystems than [`FILESYSTEMS_MAX`].
    #[error(
        "a request named {n_filesystems} filesystems, more than the {max} the sender serves in \
         one go; split the job"
    )]
    TooManyFilesystems {
        /// How many were named or found.
        n_filesystems: usize,
        /// [`FILESYSTEMS_MAX`].
        max: usize,
    },
    /// A destroy request named more snapshots than [`DESTROY_SNAPSHOTS_MAX`].
    #[error(
        "a request to destroy {n_snapshots} snapshots of `{filesystem}` is more than the {max} \
         the sender destroys in one go"
    )]
    TooManySnapshots {
        /// The filesystem.
        filesystem: DatasetName,
        /// How many were named.
        n_snapshots: usize,
        /// [`DESTROY_SNAPSHOTS_MAX`].
        max: usize,
    },
    /// A prune request gave cursors: the sender reads its own cursor bookmarks.
    #[error(
        "the sender prunes with its own replication cursors, but the request gave cursors; this \
         is a bug in the active side"
    )]
    PruneCursorsGiven,
    /// The sender side's pruning could not run.
    #[error(transparent)]
    Prune(#[from] SideError),
}

impl SenderError {
    /// Whether the sender refused the request's resume token.
    pub fn is_resume_token_refusal(&self) -> bool {
        matches!(self, Self::ResumeTokenRefused { .. })
    }
}

impl Classify for SenderError {
    /// Refusals and validation failures concern one filesystem and repeat until the pool or the
    /// configuration changes; ZFS failures are classified as ZFS errors are.
    fn class(&self) -> ErrorClass {
        match self {
            Self::EncryptionCheck { source, .. }
            | Self::Protect { source, .. }
            | Self::CursorNotCreated { source, .. } => source.class(),
            Self::Abstractions(FindError::Zfs(source))
            | Self::Prune(SideError::ListDatasets { source, .. })
            | Self::Prune(SideError::ListVersions { source, .. }) => source.class(),
            Self::TooManyFilesystems { .. } | Self::Prune(SideError::TooManyTargets { .. }) => {
                ErrorClass::FATAL
            }
            Self::FilesystemNotServed { .. }
            | Self::ToNotSnapshot { .. }
            | Self::IntermediatesNeedSnapshotFrom { .. }
            | Self::VersionGone { .. }
            | Self::GuidMismatch { .. }
            | Self::EncryptedSendOfUnencryptedFilesystem { .. }
            | Self::RawSendOfEncryptedFilesystem { .. }
            | Self::EncryptionNotSupported { .. }
            | Self::ResumeTokenRefused { .. }
            | Self::Name { .. }
            | Self::BookmarkName { .. }
            | Self::Abstractions(_)
            | Self::CursorNotVisible { .. }
            | Self::ProtectionViolated { .. }
            | Self::TooManySnapshots { .. }
            | Self::PruneCursorsGiven => FailureKind::Validation.class(),
        }
    }
}

/// Whether `error` says the receiver's resume token cannot be used: the sender refused it, or
/// ZFS rejected it (which, for a send already started, arrives as the stream's read error and
/// so as a [`ZfsErrorKind::ResumeTokenInvalid`] of the receive). The active side then discards
/// the receiver's partial state and plans the step afresh.
pub fn is_resume_token_refusal(error: &EndpointError) -> bool {
    error.is_resume_token_unusable()
}

impl SenderEndpoint {
    /// A sender of `config.job` over `backend`.
    pub fn new(backend: Arc<dyn ZfsBackend>, config: SenderConfig) -> Self {
        Self {
            backend,
            config,
            prune_counters: tokio::sync::Mutex::new(ErrorCounters::default()),
            notes: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The configuration it serves.
    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Takes what went wrong without failing a request since the last call (at most
    /// [`NOTES_MAX`], oldest first), for the daemon's log.
    pub fn take_notes(&self) -> Vec<SenderNote> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn note(&self, note: SenderNote) {
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        if notes.len() >= NOTES_MAX {
            notes.remove(0);
        }
        notes.push(note);
    }

    fn check_filter(&self, filesystem: &DatasetName) -> Result<(), SenderError> {
        if self.config.filter.accepts(filesystem) {
            Ok(())
        } else {
            Err(SenderError::FilesystemNotServed {
                filesystem: filesystem.clone(),
            })
        }
    }

    async fn versions_of(&self, filesystem: &DatasetName) -> Result<Vec<Version>, ZfsError> {
        let listing = self
            .backend
            .list_versions(std::slice::from_ref(filesystem), VersionTypes::All)
            .await?;
        let mut versions = listing.versions(filesystem).to_vec();
        sort_by_createtxg(&mut versions);
        Ok(versions)
    }

    /// Filter, shape and existence: what `send_completed` checks again.
    async fn check_versions(&self, request: &SendReq) -> Result<Checked, EndpointError> {
        let fs = &request.filesystem;
        self.check_filter(fs)?;
        check_shape(request)?;
        let versions = self.versions_of(fs).await?;
        let to = locate(fs, StepEnd::To, &request.to, &versions)?;
        let from = match &request.from {
            Some(from) => Some(locate(fs, StepEnd::From, from, &versions)?),
            None => None,
        };
        Ok(Checked { from, to })
    }

    /// Everything a send is checked for before a byte is sent.
    async fn validate_send(&self, request: &SendReq) -> Result<ValidSend, EndpointError> {
        let checked = self.check_versions(request).await?;
        let fs = &request.filesystem;
        let (encryption, supported) = self.encryption_of(fs).await?;
        check_encryption(fs, &self.config.send, encryption, supported)?;
        let token = match &request.resume_token {
            Some(text) => Some(check_token(
                fs,
                text,
                &checked,
                encryption,
                self.config.send.policy(),
            )?),
            None => None,
        };
        let send = send_request(
            fs,
            &checked,
            request.include_intermediates,
            token.as_ref(),
            self.config.send.flags(),
        )?;
        // Every name the step will need is built now, so that a name ZFS would refuse surfaces
        // at planning (`send_dry`), before anything is held or sent.
        let guarantee = request.guarantee();
        let protection = self.step_protection(fs, guarantee, &checked)?;
        if guarantee != Guarantee::GuaranteeNothing {
            self.cursor_name(fs, checked.to.guid)?;
        }
        Ok(ValidSend {
            send,
            protection,
            used_resume_token: token.is_some(),
        })
    }

    /// Whether `filesystem` is encrypted, and whether this ZFS supports encryption at all (when
    /// it does not, nothing is encrypted and the property is not asked for, as in zrepl).
    async fn encryption_of(
        &self,
        filesystem: &DatasetName,
    ) -> Result<(FilesystemEncryption, bool), SenderError> {
        let wrap = |source| SenderError::EncryptionCheck {
            filesystem: filesystem.clone(),
            source: Box::new(source),
        };
        let features = self
            .backend
            .features(filesystem.pool())
            .await
            .map_err(wrap)?;
        if !features.encryption {
            return Ok((FilesystemEncryption::Unencrypted, false));
        }
        let properties = self
            .backend
            .get_properties(&filesystem.clone().into(), &[ENCRYPTION_PROPERTY])
            .await
            .map_err(wrap)?;
        let encrypted = properties
            .get(ENCRYPTION_PROPERTY)
            .is_some_and(|p| p.value != "off" && p.value != "-");
        let encryption = if encrypted {
            FilesystemEncryption::Encrypted
        } else {
            FilesystemEncryption::Unencrypted
        };
        Ok((encryption, true))
    }

    /// Makes the step's protection, as its guarantee says.
    async fn protect(
        &self,
        fs: &DatasetName,
        guarantee: Guarantee,
        protection: &StepProtection,
    ) -> Result<(), SenderError> {
        let failed = |source| SenderError::Protect {
            filesystem: fs.clone(),
            guarantee,
            source: Box::new(source),
        };
        if !protection.holds.is_empty() {
            self.backend
                .hold(&protection.hold_tag, &protection.holds)
                .await
                .map_err(failed)?;
        }
        for (source, bookmark) in &protection.tentative {
            match self.backend.bookmark(source, bookmark).await {
                Ok(_) => {}
                Err(e)
                    if source.kind() == VersionKind::Bookmark
                        && matches!(e.kind, ZfsErrorKind::NotSupported { .. }) =>
                {
                    self.note(SenderNote::FromNotBookmarked {
                        from: source.clone(),
                        source: e,
                    });
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }

    /// Finds this job's abstractions of `kinds` among `versions` (listed after the step's
    /// protection was made), and releases or destroys those `keep` does not keep, each command
    /// checked by [`guard`] right before it is issued. Only a violated guard fails the request:
    /// a cleanup that cannot be planned or whose commands fail is noted and left to the next
    /// step, as zrepl's `TryBatchDestroy` does.
    async fn clean_up(
        &self,
        fs: &DatasetName,
        versions: &[Version],
        kinds: &[AbstractionKind],
        keep: &Keep,
    ) -> Result<(), SenderError> {
        let job = &self.config.job;
        let found = match find(self.backend.as_ref(), fs, versions).await {
            Ok(found) => found,
            Err(source) => {
                self.note(SenderNote::CleanupNotPlanned {
                    filesystem: fs.clone(),
                    source,
                });
                return Ok(());
            }
        };
        let cleanup = plan_cleanup(&found, job, kinds, keep);
        if !cleanup.release.is_empty() {
            for snapshot in &cleanup.release {
                guard(fs, job, kinds, keep, &CleanupItem::Release { snapshot })?;
            }
            let tag = step_tag(job);
            if let Err(source) = self.backend.release(&tag, &cleanup.release).await {
                self.note(SenderNote::CleanupFailed {
                    filesystem: fs.clone(),
                    what: format!("step hold `{tag}` on {} snapshot(s)", cleanup.release.len()),
                    source,
                });
            }
        }
        for (bookmark, (abstraction, createtxg)) in &cleanup.destroy {
            let item = CleanupItem::Destroy {
                bookmark,
                abstraction,
                createtxg: *createtxg,
            };
            guard(fs, job, kinds, keep, &item)?;
            match self.backend.destroy_bookmark(bookmark).await {
                Ok(()) => {}
                Err(e) if e.kind == ZfsErrorKind::DoesNotExist => {}
                Err(source) => self.note(SenderNote::CleanupFailed {
                    filesystem: fs.clone(),
                    what: format!("bookmark `{bookmark}`"),
                    source,
                }),
            }
        }
        Ok(())
    }

    /// Lists `fs` again and cleans up as [`Self::clean_up`] does; a failed listing is noted.
    async fn relist_and_clean_up(
        &self,
        fs: &DatasetName,
        kinds: &[AbstractionKind],
        keep: &Keep,
    ) -> Result<(), SenderError> {
        match self.versions_of(fs).await {
            Ok(versions) => self.clean_up(fs, &versions, kinds, keep).await,
            Err(source) => {
                self.note(SenderNote::CleanupNotPlanned {
                    filesystem: fs.clone(),
                    source: FindError::Zfs(source),
                });
                Ok(())
            }
        }
    }

    /// The full name of this job's replication cursor of the snapshot with `guid` in `fs`.
    fn cursor_name(&self, fs: &DatasetName, guid: Guid) -> Result<VersionName, SenderError> {
        self.bookmark_name(
            fs,
            &Abstraction::ReplicationCursor {
                job: self.config.job.clone(),
                guid,
            },
        )
    }

    /// The full name of a bookmark abstraction in `fs` (checked against ZFS's length limit).
    fn bookmark_name(
        &self,
        fs: &DatasetName,
        abstraction: &Abstraction,
    ) -> Result<VersionName, SenderError> {
        Component::parse_as("bookmark name", &abstraction.to_string())
            .and_then(|short| VersionName::new(fs.clone(), VersionKind::Bookmark, short))
            .map_err(|source| SenderError::BookmarkName {
                filesystem: fs.clone(),
                source,
            })
    }

    fn step_protection(
        &self,
        fs: &DatasetName,
        guarantee: Guarantee,
        checked: &Checked,
    ) -> Result<StepProtection, SenderError> {
        let job = &self.config.job;
        let full = |v: &Version| version_name(fs, v);
        let to = full(&checked.to)?;
        let from = checked.from.as_ref().map(full).transpose()?;
        let mut protection = StepProtection {
            hold_tag: Abstraction::StepHold { job: job.clone() }.to_string(),
            holds: Vec::new(),
            tentative: Vec::new(),
            from_bookmark: from.clone().filter(|f| f.kind() == VersionKind::Bookmark),
        };
        match guarantee {
            Guarantee::GuaranteeResumability => {
                // A bookmark cannot be held: `from` stays as long as nobody destroys it.
                protection
                    .holds
                    .extend(from.clone().filter(|f| f.kind() == VersionKind::Snapshot));
                protection.holds.push(to.clone());
            }
            Guarantee::GuaranteeIncremental => {
                if let (Some(from), Some(from_version)) = (&from, &checked.from) {
                    let tentative = Abstraction::TentativeCursor {
                        job: job.clone(),
                        guid: from_version.guid,
                    };
                    protection
                        .tentative
                        .push((from.clone(), self.bookmark_name(fs, &tentative)?));
                }
                let tentative = Abstraction::TentativeCursor {
                    job: job.clone(),
                    guid: checked.to.guid,
                };
                protection
                    .tentative
                    .push((to.clone(), self.bookmark_name(fs, &tentative)?));
            }
            Guarantee::GuaranteeNothing => {}
        }
        Ok(protection)
    }
}

#[async_trait]
impl Endpoint for SenderEndpoint {
    async fn ping(&self) -> Result<(), EndpointError> {
        Ok(())
    }

    /// One `list_datasets` of all pools with `zrepl:placeholder`, then one `get_properties` per
    /// accepted dataset whose value is `on` (only a local `on` makes a placeholder).
    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError> {
        let entries = self
            .backend
            .list_datasets(None, &[PLACEHOLDER_PROPERTY])
            .await?;
        let accepted: BTreeMap<&DatasetName, bool> = entries
            .iter()
            .filter(|e| self.config.filter.accepts(&e.name))
            .map(|e| {
                let maybe = e.properties.first().map(String::as_str) == Some(PLACEHOLDER_ON);
                (&e.name, maybe)
            })
            .collect();
        if accepted.len() > FILESYSTEMS_MAX {
            return Err(SenderError::TooManyFilesystems {
                n_filesystems: accepted.len(),
                max: FILESYSTEMS_MAX,
            }
            .into());
        }
        let mut filesystems = Vec::with_capacity(accepted.len());
        for (path, maybe_placeholder) in accepted {
            let is_placeholder =
                maybe_placeholder && is_local_placeholder(self.backend.as_ref(), path).await?;
            filesystems.push(Filesystem {
                path: path.clone(),
                is_placeholder,
                resume_token: None,
            });
        }
        Ok(filesystems)
    }

    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError> {
        self.check_filter(filesystem)?;
        Ok(self.versions_of(filesystem).await?)
    }

    /// Lists the snapshots first and destroys, in one call, only those whose name still has the
    /// given GUID. A snapshot with another GUID is reported as not destroyed
    /// ([`ZfsErrorKind::ExistsWithOtherGuid`]); one that is gone counts as destroyed, as in the
    /// backend's contract. Outcomes come in request order, duplicates once.
    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError> {
        self.check_filter(filesystem)?;
        if snapshots.len() > DESTROY_SNAPSHOTS_MAX {
            return Err(SenderError::TooManySnapshots {
                filesystem: filesystem.clone(),
                n_snapshots: snapshots.len(),
                max: DESTROY_SNAPSHOTS_MAX,
            }
            .into());
        }
        let listing = self
            .backend
            .list_versions(std::slice::from_ref(filesystem), VersionTypes::Snapshots)
            .await?;
        let current: BTreeMap<&Component, Guid> = listing
            .versions(filesystem)
            .iter()
            .filter(|v| v.is_snapshot())
            .map(|v| (&v.name, v.guid))
            .collect();
        let verdicts = plan_destroy(snapshots, &current);
        let batch: Vec<Component> = verdicts
            .iter()
            .filter(|(_, verdict)| matches!(verdict, DestroyVerdict::Destroy))
            .map(|(name, _)| name.clone())
            .collect();
        let mut destroyed: BTreeMap<Component, Result<(), ZfsErrorKind>> = BTreeMap::new();
        if !batch.is_empty() {
            for outcome in self.backend.destroy_snapshots(filesystem, &batch).await? {
                destroyed.insert(outcome.snapshot, outcome.result);
            }
        }
        Ok(verdicts
            .into_iter()
            .map(|(snapshot, verdict)| {
                let result = match verdict {
                    DestroyVerdict::Destroy => destroyed.remove(&snapshot).unwrap_or_else(|| {
                        Err(ZfsErrorKind::Other {
                            detail: "the destroy call reported nothing about it".to_owned(),
                        })
                    }),
                    DestroyVerdict::Gone => Ok(()),
                    DestroyVerdict::OtherGuid(existing) => {
                        Err(ZfsErrorKind::ExistsWithOtherGuid { existing })
                    }
                };
                DestroyOutcome { snapshot, result }
            })
            .collect())
    }

    /// Runs the pruner over this side with the job's own cursor bookmarks; the back-off
    /// counters live as long as the endpoint.
    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError> {
        if request.cursors != PruneCursors::Own {
            return Err(SenderError::PruneCursorsGiven.into());
        }
        if request.filesystems.len() > FILESYSTEMS_MAX {
            return Err(SenderError::TooManyFilesystems {
                n_filesystems: request.filesystems.len(),
                max: FILESYSTEMS_MAX,
            }
            .into());
        }
        for fs in &request.filesystems {
            self.check_filter(fs)?;
        }
        let protected: Protected = request.protected.iter().cloned().collect();
        let side_request = SideRequest {
            side: Side::Sender,
            targets: &request.filesystems,
            rules: &request.rules,
            cursors: Cursors::FromBookmarks(&self.config.job),
            protected: &protected,
        };
        let mut counters = self.prune_counters.lock().await;
        let report = prune_side(self.backend.as_ref(), &side_request, &mut counters)
            .await
            .map_err(SenderError::from)?;
        Ok(report)
    }
}

#[async_trait]
impl Sender for SenderEndpoint {
    async fn send_dry(&self, request: &SendReq) -> Result<SendRes, EndpointError> {
        let valid = self.validate_send(request).await?;
        let expected_size = self
            .backend
            .send_estimate(&valid.send)
            .await
            .map_err(|e| token_rejected(&request.filesystem, e))?;
        Ok(SendRes {
            used_resume_token: valid.used_resume_token,
            expected_size,
        })
    }

    async fn send(&self, request: &SendReq) -> Result<(SendRes, ByteStream), EndpointError> {
        let valid = self.validate_send(request).await?;
        let fs = &request.filesystem;
        let guarantee = request.guarantee();
        let protection = &valid.protection;
        self.protect(fs, guarantee, protection).await?;

        // Stale cleanup of earlier steps, from a listing made after the protection.
        self.relist_and_clean_up(
            fs,
            &[AbstractionKind::StepHold, AbstractionKind::TentativeCursor],
            &Keep::pre_send(protection),
        )
        .await?;

        let stream = self
            .backend
            .send(&valid.send)
            .await
            .map_err(|e| token_rejected(fs, e))?;
        Ok((
            SendRes {
                used_resume_token: valid.used_resume_token,
                expected_size: None,
            },
            stream,
        ))
    }

    async fn send_completed(&self, request: &SendReq) -> Result<(), EndpointError> {
        let checked = self.check_versions(request).await?;
        let fs = &request.filesystem;
        let kinds = [
            AbstractionKind::StepHold,
            AbstractionKind::TentativeCursor,
            AbstractionKind::ReplicationCursor,
        ];
        match request.guarantee() {
            Guarantee::GuaranteeResumability | Guarantee::GuaranteeIncremental => {
                let to = version_name(fs, &checked.to)?;
                let cursor = self.cursor_name(fs, checked.to.guid)?;
                if let Err(source) = self.backend.bookmark(&to, &cursor).await {
                    return Err(SenderError::CursorNotCreated {
                        filesystem: fs.clone(),
                        cursor: cursor.to_string(),
                        source: Box::new(source),
                    }
                    .into());
                }
                // Nothing is released before the new cursor is seen in place.
                let versions = self.versions_of(fs).await?;
                let Some(listed) = versions.iter().find(|v| {
                    !v.is_snapshot() && &v.name == cursor.short() && v.guid == checked.to.guid
                }) else {
                    return Err(SenderError::CursorNotVisible {
                        filesystem: fs.clone(),
                        cursor: cursor.to_string(),
                    }
                    .into());
                };
                let keep = Keep::post_confirm(Some((cursor.clone(), listed.createtxg)));
                self.clean_up(fs, &versions, &kinds, &keep).await?;
            }
            Guarantee::GuaranteeNothing => {
                // zrepl's behaviour (#682): no cursor, and none of the job's abstractions stay.
                self.relist_and_clean_up(fs, &kinds, &Keep::post_confirm(None))
                    .await?;
            }
        }
        Ok(())
    }

    /// One listing for all filesystems; if one of them is gone, each is listed on its own and a
    /// gone one has no cursor.
    async fn replication_cursors(
        &self,
        filesystems: &[DatasetName],
    ) -> Result<BTreeMap<DatasetName, ReplicationCursor>, EndpointError> {
        if filesystems.len() > FILESYSTEMS_MAX {
            return Err(SenderError::TooManyFilesystems {
                n_filesystems: filesystems.len(),
                max: FILESYSTEMS_MAX,
            }
            .into());
        }
        for fs in filesystems {
            self.check_filter(fs)?;
        }
        let unique: Vec<DatasetName> = filesystems
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let job = &self.config.job;
        if unique.is_empty() {
            return Ok(BTreeMap::new());
        }
        match self
            .backend
            .list_versions(&unique, VersionTypes::Bookmarks)
            .await
        {
            Ok(listing) => Ok(unique
                .iter()
                .map(|fs| (fs.clone(), cursor_from_bookmarks(listing.versions(fs), job)))
                .collect()),
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => {
                let mut cursors = BTreeMap::new();
                for fs in &unique {
                    let cursor = match self
                        .backend
                        .list_versions(std::slice::from_ref(fs), VersionTypes::Bookmarks)
                        .await
                    {
                        Ok(listing) => cursor_from_bookmarks(listing.versions(fs), job),
                        Err(e) if e.kind == ZfsErrorKind::DoesNotExist => {
                            ReplicationCursor::Missing
                        }
                        Err(e) => return Err(e.into()),
                    };
                    cursors.insert(fs.clone(), cursor);
                }
                Ok(cursors)
            }
            Err(e) => Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pure parts

/// `from` and `to` as they are on the pool.
#[derive(Debug, Clone)]
struct Checked {
    from: Option<Version>,
    to: Version,
}

/// A send that passed validation.
#[derive(Debug)]
struct ValidSend {
    send: SendRequest,
    protection: StepProtection,
    used_resume_token: bool,
}

/// What protects one step before its send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepProtection {
    /// The job's step hold tag.
    hold_tag: String,
    /// Snapshots that get the step hold.
    holds: Vec<VersionName>,
    /// Tentative cursors to make: (source, bookmark).
    tentative: Vec<(VersionName, VersionName)>,
    /// `from`, when it is a bookmark (ours or not, it is never destroyed by the cleanup).
    from_bookmark: Option<VersionName>,
}

/// What a cleanup must leave in place, derived from the request alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Keep {
    /// Snapshots whose step hold stays.
    held: BTreeSet<VersionName>,
    /// Bookmarks that stay, with why.
    bookmarks: BTreeMap<VersionName, &'static str>,
    /// The new cursor's createtxg: this job's cursors at or after it stay (send_completed).
    cursor_txg: Option<crate::version::Txg>,
}

impl Keep {
    fn pre_send(protection: &StepProtection) -> Self {
        let mut keep = Self {
            held: protection.holds.iter().cloned().collect(),
            ..Self::default()
        };
        for (_, bookmark) in &protection.tentative {
            keep.bookmarks.insert(
                bookmark.clone(),
                "is a tentative cursor protecting this step",
            );
        }
        if let Some(from) = &protection.from_bookmark {
            keep.bookmarks
                .insert(from.clone(), "is this step's incremental base (`from`)");
        }
        keep
    }

    fn post_confirm(cursor: Option<(VersionName, crate::version::Txg)>) -> Self {
        let mut keep = Self::default();
        if let Some((cursor, txg)) = cursor {
            keep.bookmarks.insert(
                cursor,
                "is the new replication cursor (the last common base)",
            );
            keep.cursor_txg = Some(txg);
        }
        keep
    }

    /// Why `item` must stay, if it must.
    fn protects(&self, item: &CleanupItem) -> Option<&'static str> {
        match item {
            CleanupItem::Release { snapshot } => self
                .held
                .contains(*snapshot)
                .then_some("is the step hold protecting this step's `from` or `to`"),
            CleanupItem::Destroy {
                bookmark,
                abstraction,
                createtxg,
            } => {
                if let Some(why) = self.bookmarks.get(*bookmark) {
                    return Some(why);
                }
                let newer_cursor = abstraction.kind() == AbstractionKind::ReplicationCursor
                    && self.cursor_txg.is_some_and(|txg| *createtxg >= txg);
                newer_cursor.then_some("is a replication cursor not older than the new one")
            }
        }
    }
}

/// What a cleanup releases and destroys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Cleanup {
    /// Snapshots whose step hold of the job is released.
    release: Vec<VersionName>,
    /// Bookmarks destroyed, with the createtxg and what they are.
    destroy: Vec<(VersionName, (Abstraction, crate::version::Txg))>,
}

/// One release or destroy, for the second check.
#[derive(Debug, Clone, Copy)]
enum CleanupItem<'a> {
    Release {
        snapshot: &'a VersionName,
    },
    Destroy {
        bookmark: &'a VersionName,
        abstraction: &'a Abstraction,
        createtxg: crate::version::Txg,
    },
}

impl Cleanup {
    #[cfg(test)]
    fn items(&self) -> impl Iterator<Item = CleanupItem<'_>> {
        self.release
            .iter()
            .map(|snapshot| CleanupItem::Release { snapshot })
            .chain(
                self.destroy
                    .iter()
                    .map(
                        |(bookmark, (abstraction, createtxg))| CleanupItem::Destroy {
                            bookmark,
                            abstraction,
                            createtxg: *createtxg,
                        },
                    ),
            )
    }
}

/// The job's abstractions of `kinds` among `found`, except what `keep` keeps. Found
/// abstractions are only ours (never foreign or tinkered names).
fn plan_cleanup(
    found: &[FoundAbstraction],
    job: &JobId,
    kinds: &[AbstractionKind],
    keep: &Keep,
) -> Cleanup {
    let mut cleanup = Cleanup::default();
    for item in found {
        if item.abstraction.job() != Some(job) || !kinds.contains(&item.abstraction.kind()) {
            continue;
        }
        match item.abstraction {
            Abstraction::StepHold { .. } => {
                let candidate = CleanupItem::Release {
                    snapshot: &item.version,
                };
                if keep.protects(&candidate).is_none() && !cleanup.release.contains(&item.version) {
                    cleanup.release.push(item.version.clone());
                }
            }
            Abstraction::TentativeCursor { .. } | Abstraction::ReplicationCursor { .. } => {
                let candidate = CleanupItem::Destroy {
                    bookmark: &item.version,
                    abstraction: &item.abstraction,
                    createtxg: item.createtxg,
                };
                if keep.protects(&candidate).is_none() {
                    cleanup.destroy.push((
                        item.version.clone(),
                        (item.abstraction.clone(), item.createtxg),
                    ));
                }
            }
            Abstraction::LastReceivedHold { .. } | Abstraction::LegacyCursor => {}
        }
    }
    cleanup
}

/// The second check right before a release or destroy: the item is this job's, of a kind the
/// cleanup may touch, its name is ours (re-parsed), and it is not what protects the step.
///
/// # Panics
///
/// Under `cfg(test)` or `debug_assertions` on a violation (a bug in the plan); a release build
/// returns [`SenderError::ProtectionViolated`] instead.
fn guard(
    fs: &DatasetName,
    job: &JobId,
    kinds: &[AbstractionKind],
    keep: &Keep,
    item: &CleanupItem<'_>,
) -> Result<(), SenderError> {
    let (action, own) = match item {
        CleanupItem::Release { snapshot } => (
            format!("release hold `{}` on `{snapshot}`", step_tag(job)),
            snapshot.dataset() == fs
                && snapshot.kind() == VersionKind::Snapshot
                && kinds.contains(&AbstractionKind::StepHold),
        ),
        CleanupItem::Destroy {
            bookmark,
            abstraction,
            ..
        } => {
            let reparsed = abstraction
                .guid()
                .map(|guid| Abstraction::parse_bookmark(bookmark.short().as_str(), guid));
            (
                format!("destroy bookmark `{bookmark}`"),
                bookmark.dataset() == fs
                    && bookmark.kind() == VersionKind::Bookmark
                    && abstraction.job() == Some(job)
                    && kinds.contains(&abstraction.kind())
                    && reparsed == Some(Recognition::Ours((*abstraction).clone())),
            )
        }
    };
    let protects = keep.protects(item).or(if own {
        None
    } else {
        Some("is not one of this job's abstractions the cleanup may touch")
    });
    match protects {
        None => Ok(()),
        Some(protects) => {
            let error = SenderError::ProtectionViolated {
                filesystem: fs.clone(),
                action,
                protects,
            };
            if cfg!(any(test, debug_assertions)) {
                panic!("{error}");
            }
            Err(error)
        }
    }
}

fn step_tag(job: &JobId) -> String {
    Abstraction::StepHold { job: job.clone() }.to_string()
}

/// `to` is a snapshot; intermediates only from a snapshot.
fn check_shape(request: &SendReq) -> Result<(), SenderError> {
    let fs = &request.filesystem;
    if request.to.kind != VersionKind::Snapshot {
        return Err(SenderError::ToNotSnapshot {
            filesystem: fs.clone(),
            to: request.to.relative_name(),
        });
    }
    if request.include_intermediates
        && request
            .from
            .as_ref()
            .is_none_or(|from| from.kind != VersionKind::Snapshot)
    {
        return Err(SenderError::IntermediatesNeedSnapshotFrom {
            filesystem: fs.clone(),
            from: request
                .from
                .as_ref()
                .map_or_else(|| "no `from`".to_owned(), |f| format!("`{fs}{f}`")),
        });
    }
    Ok(())
}

/// The version of `claimed`'s kind and name in `versions`, which must have the claimed GUID.
fn locate(
    fs: &DatasetName,
    end: StepEnd,
    claimed: &Version,
    versions: &[Version],
) -> Result<Version, SenderError> {
    let found = versions
        .iter()
        .find(|v| v.kind == claimed.kind && v.name == claimed.name);
    match found {
        None => Err(SenderError::VersionGone {
            filesystem: fs.clone(),
            end,
            version: claimed.relative_name(),
            guid: claimed.guid,
        }),
        Some(actual) if actual.guid != claimed.guid => Err(SenderError::GuidMismatch {
            filesystem: fs.clone(),
            end,
            version: claimed.relative_name(),
            claimed: claimed.guid,
            actual: actual.guid,
        }),
        Some(actual) => Ok(actual.clone()),
    }
}

/// zrepl 1.7's encryption matrix (see [`SendOptions`]), then whether this ZFS can send raw.
fn check_encryption(
    fs: &DatasetName,
    options: &SendOptions,
    encryption: FilesystemEncryption,
    supported: bool,
) -> Result<(), SenderError> {
    let encrypted = encryption == FilesystemEncryption::Encrypted;
    if options.encrypted && !encrypted {
        return Err(SenderError::EncryptedSendOfUnencryptedFilesystem {
            filesystem: fs.clone(),
        });
    }
    if options.raw && encrypted && !options.encrypted {
        return Err(SenderError::RawSendOfEncryptedFilesystem {
            filesystem: fs.clone(),
        });
    }
    if options.flags().raw && !supported {
        return Err(SenderError::EncryptionNotSupported {
            filesystem: fs.clone(),
        });
    }
    Ok(())
}

/// Decodes the receiver's token and checks that it resumes exactly this send.
fn check_token(
    fs: &DatasetName,
    text: &str,
    checked: &Checked,
    encryption: FilesystemEncryption,
    policy: SendEncryptionPolicy,
) -> Result<ResumeToken, SenderError> {
    let refused = |reason| SenderError::ResumeTokenRefused {
        filesystem: fs.clone(),
        reason,
    };
    let token = ResumeToken::decode(text).map_err(|e| refused(TokenRefusal::Undecodable(e)))?;
    let request = ResumeRequest {
        filesystem: fs.clone(),
        from: checked.from.as_ref().map(|v| v.guid),
        to: checked.to.guid,
        encryption,
        policy,
    };
    validate(token.contents(), &request).map_err(|e| refused(TokenRefusal::Mismatch(e)))?;
    Ok(token)
}

/// The backend's send request for a validated step.
fn send_request(
    fs: &DatasetName,
    checked: &Checked,
    include_intermediates: bool,
    token: Option<&ResumeToken>,
    flags: SendFlags,
) -> Result<SendRequest, SenderError> {
    let source = match (token, &checked.from) {
        (Some(token), _) => SendSource::Resume {
            token: token.as_str().to_owned(),
        },
        (None, None) => SendSource::Full {
            to: version_name(fs, &checked.to)?,
        },
        (None, Some(from)) => {
            let from = version_name(fs, from)?;
            let to = version_name(fs, &checked.to)?;
            if include_intermediates {
                SendSource::IncrementalRange { from, to }
            } else {
                SendSource::Incremental { from, to }
            }
        }
    };
    Ok(SendRequest { source, flags })
}

fn version_name(fs: &DatasetName, version: &Version) -> Result<VersionName, SenderError> {
    VersionName::new(fs.clone(), version.kind, version.name.clone()).map_err(|source| {
        SenderError::Name {
            filesystem: fs.clone(),
            source,
        }
    })
}

/// A ZFS error of a send; a token ZFS rejects becomes a refusal.
fn token_rejected(fs: &DatasetName, error: ZfsError) -> EndpointError {
    if error.kind == ZfsErrorKind::ResumeTokenInvalid {
        SenderError::ResumeTokenRefused {
            filesystem: fs.clone(),
            reason: TokenRefusal::RejectedByZfs(Box::new(error)),
        }
        .into()
    } else {
        error.into()
    }
}

/// What `destroy_snapshots` does with one requested snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DestroyVerdict {
    /// It has the given GUID: destroy it.
    Destroy,
    /// It is gone: counts as destroyed.
    Gone,
    /// The name belongs to another snapshot now.
    OtherGuid(Guid),
}

/// Each requested snapshot (duplicates once, first occurrence's position) against the current
/// names and GUIDs.
fn plan_destroy(
    requested: &[(Component, Guid)],
    current: &BTreeMap<&Component, Guid>,
) -> Vec<(Component, DestroyVerdict)> {
    let mut seen = BTreeSet::new();
    requested
        .iter()
        .filter(|(name, _)| seen.insert(name))
        .map(|(name, guid)| {
            let verdict = match current.get(name) {
                None => DestroyVerdict::Gone,
                Some(now) if now == guid => DestroyVerdict::Destroy,
                Some(now) => DestroyVerdict::OtherGuid(*now),
            };
            (name.clone(), verdict)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Txg;
    use proptest::prelude::*;

    fn ds(s: &str) -> DatasetName {
        DatasetName::parse(s).unwrap()
    }

    fn job(s: &str) -> JobId {
        JobId::parse(s).unwrap()
    }

    fn vn(s: &str) -> VersionName {
        VersionName::parse(s).unwrap()
    }

    fn snapshot(name: &str, guid: u64, txg: u64) -> Version {
        Version::snapshot(Component::parse(name).unwrap(), Guid(guid), Txg(txg), 0)
    }

    fn bookmark(name: &str, guid: u64, txg: u64) -> Version {
        Version::bookmark(Component::parse(name).unwrap(), Guid(guid), Txg(txg), 0)
    }

    fn found(version: &str, abstraction: Abstraction, txg: u64) -> FoundAbstraction {
        FoundAbstraction {
            version: vn(version),
            createtxg: Txg(txg),
            abstraction,
        }
    }

    /// zrepl's `SendArgsValidationEE_EncryptionAndRaw`, the fresh-send half: (filesystem
    /// encrypted, send.encrypted, send.raw) -> verdict, and the `-w` flag of accepted sends.
    #[test]
    fn encryption_matrix() {
        let fs = ds("pool/send er");
        let rows: [(bool, bool, bool, &str); 8] = [
            (false, false, false, "ok plain"),
            (false, false, true, "ok raw"),
            (
                false,
                true,
                false,
                "encrypted send mandated by policy, but filesystem `pool/send er` is not encrypted",
            ),
            (
                false,
                true,
                true,
                "encrypted send mandated by policy, but filesystem `pool/send er` is not encrypted",
            ),
            (true, false, false, "ok plain"),
            (
                true,
                false,
                true,
                "policy mandates raw+unencrypted sends, but filesystem `pool/send er` is encrypted",
            ),
            (true, true, false, "ok raw"),
            (true, true, true, "ok raw"),
        ];
        for (fs_encrypted, encrypted, raw, expected) in rows {
            let options = SendOptions {
                encrypted,
                raw,
                ..SendOptions::default()
            };
            let encryption = if fs_encrypted {
                FilesystemEncryption::Encrypted
            } else {
                FilesystemEncryption::Unencrypted
            };
            let got = match check_encryption(&fs, &options, encryption, true) {
                Ok(()) if options.flags().raw => "ok raw".to_owned(),
                Ok(()) => "ok plain".to_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                got.starts_with(expected),
                "fs_encrypted={fs_encrypted} encrypted={encrypted} raw={raw}: {got}"
            );
        }
        let raw = SendOptions {
            raw: true,
            ..SendOptions::default()
        };
        assert_eq!(
            check_encryption(&fs, &raw, FilesystemEncryption::Unencrypted, false),
            Err(SenderError::EncryptionNotSupported {
                filesystem: fs.clone()
            })
        );
        assert_eq!(
            check_encryption(
                &fs,
                &SendOptions::default(),
                FilesystemEncryption::Unencrypted,
                false
            ),
            Ok(())
        );
    }

    #[test]
    fn flags_follow_zrepl_order_and_encrypted_implies_raw() {
        let options = SendOptions {
            encrypted: true,
            send_properties: true,
            compressed: true,
            ..SendOptions::default()
        };
        assert_eq!(
            options.flags(),
            SendFlags {
                raw: true,
                properties: true,
                compressed: true,
                ..SendFlags::default()
            }
        );
        assert_eq!(options.policy(), SendEncryptionPolicy::Encrypted);
        assert_eq!(
            SendOptions::default().policy(),
            SendEncryptionPolicy::Unencrypted
        );
    }

    #[test]
    fn locate_checks_kind_name_and_guid() {
        let fs = ds("p/a");
        let versions = [snapshot("s1", 1, 10), bookmark("s1", 1, 10)];
        assert_eq!(
            locate(&fs, StepEnd::To, &snapshot("s1", 1, 99), &versions),
            Ok(versions[0].clone())
        );
        assert_eq!(
            locate(&fs, StepEnd::From, &bookmark("s1", 2, 10), &versions)
                .unwrap_err()
                .to_string(),
            "`from` `p/a#s1` has guid 1 on the sender, but the request claims guid 2: it was \
             destroyed and re-created since planning; the next attempt plans again"
        );
        assert!(matches!(
            locate(&fs, StepEnd::To, &snapshot("s2", 1, 10), &versions),
            Err(SenderError::VersionGone { .. })
        ));
    }

    #[test]
    fn plan_destroy_goes_by_name_and_guid() {
        let (a, b, c) = (
            Component::parse("a").unwrap(),
            Component::parse("b").unwrap(),
            Component::parse("c").unwrap(),
        );
        let current: BTreeMap<&Component, Guid> = [(&a, Guid(1)), (&b, Guid(2))].into();
        let requested = [
            (b.clone(), Guid(5)),
            (a.clone(), Guid(1)),
            (c.clone(), Guid(3)),
            (a.clone(), Guid(1)),
        ];
        assert_eq!(
            plan_destroy(&requested, &current),
            vec![
                (b, DestroyVerdict::OtherGuid(Guid(2))),
                (a, DestroyVerdict::Destroy),
                (c, DestroyVerdict::Gone),
            ]
        );
    }

    fn protection_resumability() -> StepProtection {
        StepProtection {
            hold_tag: "zrepl_STEP_J_push".into(),
            holds: vec![vn("p/a@s1"), vn("p/a@s2")],
            tentative: Vec::new(),
            from_bookmark: None,
        }
    }

    #[test]
    fn cleanup_keeps_the_step_and_touches_only_this_job() {
        let push = job("push");
        let other = job("other");
        let keep = Keep::pre_send(&StepProtection {
            hold_tag: "zrepl_STEP_J_push".into(),
            holds: vec![vn("p/a@s3")],
            tentative: Vec::new(),
            from_bookmark: Some(vn("p/a#zrepl_CURSORTENTATIVE__G_0000000000000002_J_push")),
        });
        let found = [
            found("p/a@s1", Abstraction::StepHold { job: push.clone() }, 10),
            found("p/a@s3", Abstraction::StepHold { job: push.clone() }, 30),
            found("p/a@s1", Abstraction::StepHold { job: other.clone() }, 10),
            found(
                "p/a#zrepl_CURSORTENTATIVE__G_0000000000000001_J_push",
                Abstraction::TentativeCursor {
                    job: push.clone(),
                    guid: Guid(1),
                },
                10,
            ),
            found(
                "p/a#zrepl_CURSORTENTATIVE__G_0000000000000002_J_push",
                Abstraction::TentativeCursor {
                    job: push.clone(),
                    guid: Guid(2),
                },
                20,
            ),
            found(
                "p/a#zrepl_CURSOR_G_0000000000000001_J_push",
                Abstraction::ReplicationCursor {
                    job: push.clone(),
                    guid: Guid(1),
                },
                10,
            ),
            found("p/a#zrepl_replication_cursor", Abstraction::LegacyCursor, 5),
        ];
        let kinds = [AbstractionKind::StepHold, AbstractionKind::TentativeCursor];
        let cleanup = plan_cleanup(&found, &push, &kinds, &keep);
        assert_eq!(cleanup.release, vec![vn("p/a@s1")]);
        let destroyed: Vec<String> = cleanup.destroy.iter().map(|d| d.0.to_string()).collect();
        assert_eq!(
            destroyed,
            ["p/a#zrepl_CURSORTENTATIVE__G_0000000000000001_J_push"]
        );
        for item in cleanup.items() {
            guard(&ds("p/a"), &push, &kinds, &keep, &item).unwrap();
        }
    }

    #[test]
    fn post_confirm_keeps_the_new_and_newer_cursors() {
        let push = job("push");
        let cursor = |g: u64| {
            (
                format!("p/a#zrepl_CURSOR_G_{g:016x}_J_push"),
                Abstraction::ReplicationCursor {
                    job: push.clone(),
                    guid: Guid(g),
                },
            )
        };
        let (c1, a1) = cursor(1);
        let (c2, a2) = cursor(2);
        let (c3, a3) = cursor(3);
        let keep = Keep::post_confirm(Some((vn(&c2), Txg(20))));
        let found = [
            found(&c1, a1, 10),
            found(&c2, a2, 20),
            found(&c3, a3, 30),
            found("p/a@s2", Abstraction::StepHold { job: push.clone() }, 20),
        ];
        let kinds = [
            AbstractionKind::StepHold,
            AbstractionKind::TentativeCursor,
            AbstractionKind::ReplicationCursor,
        ];
        let cleanup = plan_cleanup(&found, &push, &kinds, &keep);
        assert_eq!(cleanup.release, vec![vn("p/a@s2")]);
        let destroyed: Vec<String> = cleanup.destroy.iter().map(|d| d.0.to_string()).collect();
        assert_eq!(destroyed, [c1]);
        // Without a new cursor (guarantee_nothing) every cursor goes.
        let all = plan_cleanup(&found, &push, &kinds, &Keep::post_confirm(None));
        assert_eq!(all.destroy.len(), 3);
    }

    #[test]
    #[should_panic(expected = "refusing to release hold `zrepl_STEP_J_push` on `p/a@s2`")]
    fn guard_panics_on_releasing_the_steps_own_hold() {
        let keep = Keep::pre_send(&protection_resumability());
        let snapshot = vn("p/a@s2");
        let _ = guard(
            &ds("p/a"),
            &job("push"),
            &[AbstractionKind::StepHold],
            &keep,
            &CleanupItem::Release {
                snapshot: &snapshot,
            },
        );
    }

    #[test]
    #[should_panic(expected = "is this step's incremental base")]
    fn guard_panics_on_destroying_from() {
        let from = vn("p/a#zrepl_CURSORTENTATIVE__G_0000000000000002_J_push");
        let keep = Keep::pre_send(&StepProtection {
            from_bookmark: Some(from.clone()),
            ..protection_resumability()
        });
        let abstraction = Abstraction::TentativeCursor {
            job: job("push"),
            guid: Guid(2),
        };
        let _ = guard(
            &ds("p/a"),
            &job("push"),
            &[AbstractionKind::TentativeCursor],
            &keep,
            &CleanupItem::Destroy {
                bookmark: &from,
                abstraction: &abstraction,
                createtxg: Txg(20),
            },
        );
    }

    #[test]
    #[should_panic(expected = "is not one of this job's abstractions")]
    fn guard_panics_on_another_jobs_bookmark() {
        let bookmark = vn("p/a#zrepl_CURSORTENTATIVE__G_0000000000000002_J_other");
        let abstraction = Abstraction::TentativeCursor {
            job: job("other"),
            guid: Guid(2),
        };
        let _ = guard(
            &ds("p/a"),
            &job("push"),
            &[AbstractionKind::TentativeCursor],
            &Keep::default(),
            &CleanupItem::Destroy {
                bookmark: &bookmark,
                abstraction: &abstraction,
                createtxg: Txg(20),
            },
        );
    }

    #[test]
    fn shape_refusals() {
        let base = SendReq {
            filesystem: ds("p/a"),
            from: Some(bookmark("b", 1, 10)),
            to: snapshot("s2", 2, 20),
            include_intermediates: true,
            resume_token: None,
            protection: Default::default(),
        };
        assert_eq!(
            check_shape(&base).unwrap_err().to_string(),
            "cannot send `p/a` with intermediate snapshots from `p/a#b`: `zfs send -I` needs a \
             snapshot as `from`; this is a bug in the active side's planning"
        );
        let to_bookmark = SendReq {
            to: bookmark("s2", 2, 20),
            include_intermediates: false,
            ..base.clone()
        };
        assert!(matches!(
            check_shape(&to_bookmark),
            Err(SenderError::ToNotSnapshot { .. })
        ));
        let ok = SendReq {
            from: Some(snapshot("s1", 1, 10)),
            ..base
        };
        assert_eq!(check_shape(&ok), Ok(()));
    }

    #[test]
    fn refusals_are_permanent_for_the_filesystem() {
        let e = SenderError::ResumeTokenRefused {
            filesystem: ds("p/a"),
            reason: TokenRefusal::Undecodable(ResumeTokenError::Empty),
        };
        assert_eq!(e.class(), ErrorClass::FILESYSTEM_PERMANENT);
        assert!(is_resume_token_refusal(&e.into()));
        let zfs = ZfsError::new(
            crate::backend::Operation::Send,
            "p/a",
            ZfsErrorKind::ResumeTokenInvalid,
        );
        assert!(is_resume_token_refusal(&EndpointError::Zfs(zfs)));
        let busy = SenderError::Protect {
            filesystem: ds("p/a"),
            guarantee: Guarantee::GuaranteeResumability,
            source: Box::new(ZfsError::new(
                crate::backend::Operation::Hold,
                "p/a@s",
                ZfsErrorKind::Busy,
            )),
        };
        assert_eq!(busy.class(), ErrorClass::FILESYSTEM_TEMPORARY);
    }

    #[test]
    fn send_options_read_zrepls_keys() {
        let options: SendOptions = serde_saphyr::from_str(
            "encrypted: true\nsend_properties: true\nlarge_blocks: true\nembedded_data: true\n",
        )
        .unwrap();
        assert_eq!(
            options,
            SendOptions {
                encrypted: true,
                send_properties: true,
                large_blocks: true,
                embedded_data: true,
                ..SendOptions::default()
            }
        );
    }

    /// One abstraction on `p/a`: (snapshot 0..4, owner is `push`, kind 0..4).
    fn arbitrary_found() -> impl Strategy<Value = Vec<(u64, bool, u8)>> {
        proptest::collection::vec((0u64..4, any::<bool>(), 0u8..5), 0..24)
    }

    fn make_found(items: &[(u64, bool, u8)]) -> Vec<FoundAbstraction> {
        items
            .iter()
            .map(|&(snap, ours, kind)| {
                let job = job(if ours { "push" } else { "other" });
                let guid = Guid(snap + 1);
                let abstraction = match kind {
                    0 => Abstraction::StepHold { job },
                    1 => Abstraction::TentativeCursor { job, guid },
                    2 => Abstraction::ReplicationCursor { job, guid },
                    3 => Abstraction::LastReceivedHold { job },
                    _ => Abstraction::LegacyCursor,
                };
                let version = match abstraction.kind().object() {
                    crate::abstraction::AbstractionObject::Hold => vn(&format!("p/a@s{snap}")),
                    crate::abstraction::AbstractionObject::Bookmark => {
                        vn(&format!("p/a#{abstraction}"))
                    }
                };
                found_at(version, abstraction, 10 * (snap + 1))
            })
            .collect()
    }

    fn found_at(version: VersionName, abstraction: Abstraction, txg: u64) -> FoundAbstraction {
        FoundAbstraction {
            version,
            createtxg: Txg(txg),
            abstraction,
        }
    }

    proptest! {
        /// Whatever is on the pool, a cleanup touches only `push`'s abstractions of the allowed
        /// kinds, never what the step or the new cursor needs, passes its own second check, and
        /// leaves nothing of `push`'s it may clean behind.
        #[test]
        fn cleanups_touch_only_what_they_may(
            items in arbitrary_found(),
            held in proptest::collection::btree_set(0u64..4, 0..3),
            from_tentative in proptest::option::of(0u64..4),
            cursor_at in proptest::option::of(0u64..4),
            post_confirm in any::<bool>(),
        ) {
            let push = job("push");
            let found = make_found(&items);
            let (kinds, keep): (Vec<AbstractionKind>, Keep) = if post_confirm {
                let cursor = cursor_at.map(|s| {
                    let c = Abstraction::ReplicationCursor { job: push.clone(), guid: Guid(s + 1) };
                    (vn(&format!("p/a#{c}")), Txg(10 * (s + 1)))
                });
                (
                    vec![
                        AbstractionKind::StepHold,
                        AbstractionKind::TentativeCursor,
                        AbstractionKind::ReplicationCursor,
                    ],
                    Keep::post_confirm(cursor),
                )
            } else {
                let from_bookmark = from_tentative.map(|s| {
                    let t = Abstraction::TentativeCursor { job: push.clone(), guid: Guid(s + 1) };
                    vn(&format!("p/a#{t}"))
                });
                let protection = StepProtection {
                    hold_tag: step_tag(&push),
                    holds: held.iter().map(|s| vn(&format!("p/a@s{s}"))).collect(),
                    tentative: Vec::new(),
                    from_bookmark,
                };
                (
                    vec![AbstractionKind::StepHold, AbstractionKind::TentativeCursor],
                    Keep::pre_send(&protection),
                )
            };
            let cleanup = plan_cleanup(&found, &push, &kinds, &keep);
            for item in cleanup.items() {
                prop_assert!(keep.protects(&item).is_none());
                prop_assert_eq!(guard(&ds("p/a"), &push, &kinds, &keep, &item), Ok(()));
            }
            for f in &found {
                let planned = match f.abstraction {
                    Abstraction::StepHold { .. } => cleanup.release.contains(&f.version),
                    _ => cleanup.destroy.iter().any(|(b, _)| b == &f.version),
                };
                let may = f.abstraction.job() == Some(&push)
                    && kinds.contains(&f.abstraction.kind());
                let item = match f.abstraction {
                    Abstraction::StepHold { .. } => CleanupItem::Release { snapshot: &f.version },
                    _ => CleanupItem::Destroy {
                        bookmark: &f.version,
                        abstraction: &f.abstraction,
                        createtxg: f.createtxg,
                    },
                };
                let kept = keep.protects(&item).is_some();
                // Releases are of `push`'s tag only, so another job's hold on a snapshot
                // that `push` also holds is not released even though the snapshot is listed.
                let by_name = f.abstraction.kind().object()
                    == crate::abstraction::AbstractionObject::Bookmark;
                if f.abstraction.job() == Some(&push) || by_name {
                    prop_assert_eq!(planned, may && !kept, "{:?}", f);
                }
            }
        }
    }
}
