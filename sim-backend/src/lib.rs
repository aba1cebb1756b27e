//! An in-memory simulated ZFS for zferry's tests and deterministic simulation.
//!
//! [`SimZfs`] implements the core's [`ZfsBackend`](zferry_core::backend::ZfsBackend) over a
//! model of pools (txg counter, capacity), datasets (properties with inheritance, encryption,
//! a content digest that writes change), snapshots (holds), bookmarks, send streams that can be
//! cut after any byte, resumable receive state with resume tokens in OpenZFS's exact format,
//! seeded fault injection, and a log of who changed what. Where the model had to choose, it
//! follows what real OpenZFS 2.3 does (captured outputs in the realzfs fixtures, libzfs source).
//!
//! The world lives behind a shareable handle: cloning a [`SimZfs`] shares the pools, so a test
//! can drop a daemon (its handle) and start another on the same pools, as a crash would.
//!
//! # Setting up a test
//!
//! ```
//! use zferry_core::name::{DatasetName, VersionName};
//! use zferry_sim::SimZfs;
//!
//! let sim = SimZfs::new(42, || 1_800_000_000);
//! sim.setup().create_pool("tank", 1 << 30).unwrap();
//! let fs = DatasetName::parse("tank/my data").unwrap();
//! sim.setup().create_dataset(&fs).unwrap();
//! sim.setup().write(&fs, 4 << 20).unwrap();
//! sim.setup().snapshot(&[VersionName::parse("tank/my data@first").unwrap()]).unwrap();
//! assert_eq!(sim.versions(&fs).len(), 1);
//! ```
//!
//! # What is modelled, and how faithfully
//!
//! Checked against OpenZFS 2.3.2 (the realzfs captures) and libzfs's source:
//!
//! - Receive runs libzfs's checks in libzfs's order: a full stream onto an existing dataset
//!   needs `-F` ("must specify -F") and a dataset without snapshots ("destination has
//!   snapshots"); `-F` of a full stream over an encrypted dataset, or of a raw stream over a
//!   plain one, is refused; a raw incremental onto a plain dataset is refused; then the
//!   kernel's: partial state present, the snapshot already there (consumed, success, if the
//!   GUID is there too), the incremental source found anywhere in the snapshot list (not only
//!   the newest), "modified since" as a content comparison, so that a newer snapshot without
//!   changes does not block a plain incremental (it does block a raw one), and `-F` rolling
//!   back to the source (refused when a later snapshot is held).
//! - Snapshots keep their stream names (the CLI backend receives into the filesystem, so that
//!   `-I` works); `to` is then checked by GUID. Received snapshots keep the sender's GUID and
//!   creation time and get the receiving pool's createtxg.
//! - Resumable state: a full receive into a new dataset leaves the dataset inconsistent (listed,
//!   `inconsistent=1`) until completed or aborted (`-A` destroys it); otherwise the state is
//!   hidden beside the dataset. Tokens carry the kernel's fields in the kernel's order;
//!   `object` is always 2, `offset` is the payload position times the payload scale, `bytes`
//!   counts every stream byte read. `largeblockok` is set only when the dataset's recordsize
//!   is above 128 KiB, `-w` implies `compressok`, and `-w` of a plain dataset is `-Lec`.
//! - `zfs send` holds its snapshots while its stream is open (destroy is busy), and what it
//!   refuses arrives as the stream's read error. Encrypted datasets need their key for a plain
//!   send and refuse `-I`, `-p` and `-b` without `-w`.
//!
//! Deliberate differences, each because the trait's contract asks for it:
//!
//! - `destroy_snapshots` destroys the unheld snapshots of a batch (OpenZFS destroys none and
//!   the CLI backend retries without the held ones; the outcome is the same).
//! - Bookmarks may always be copied (`zfs bookmark fs#a fs#b`, OpenZFS 2.0 and later).
//!
//! Not modelled: clones and origins, `-R` streams, redaction, dedup, quotas and reservations,
//! mounting, the `%recv` clone as a dataset of its own, snapshot properties, `zfs rename`,
//! compression ratios (a stream's size is the data's size divided by the payload scale),
//! overwrites (writes only append, so destroying a snapshot frees nothing), holds on bookmarks
//! (ZFS has none either), and `zfs send -S`.
//!
//! What it never does: read the wall clock (time comes from an injected function), draw
//! unseeded randomness (GUIDs come from a splitmix64 seeded at construction), iterate a hash
//! map, or get linked into the production daemon except for its explicit `sim` commands.
#![deny(missing_docs)]

mod backend;
mod dump;
mod plan;
mod stream;
pub mod token;
mod world;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use zferry_core::backend::{
    DestroyOutcome, Features, Operation, PlaceholderEncryption, ZfsError, ZfsErrorKind,
};
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::version::{Guid, Txg, Version};

pub use dump::PoolDump;
pub use plan::{PLAN_FAULTS_MAX, PlanOptions, seeded_plan};
pub use world::{DatasetOptions, DatasetType};

use world::World;

/// Logical bytes one stream payload byte stands for, unless set otherwise: 1 MiB of data
/// travels as 1 KiB of stream, so tests stay fast and streams can still be cut anywhere.
pub const PAYLOAD_SCALE_DEFAULT: u64 = 1024;

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Actor {
    /// The daemon, through the backend trait.
    Daemon,
    /// A user acting behind the daemon's back.
    User,
    /// Test setup.
    Setup,
}

/// What a change was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A pool (and its root dataset) was created.
    CreatePool,
    /// A dataset was created (by setup, a placeholder, or a receive).
    CreateDataset,
    /// Data was written.
    Write {
        /// How much.
        n_bytes: u64,
    },
    /// A snapshot was taken.
    Snapshot,
    /// A bookmark was created.
    Bookmark,
    /// A hold was placed.
    Hold {
        /// The tag.
        tag: String,
    },
    /// A hold was released.
    Release {
        /// The tag.
        tag: String,
    },
    /// A snapshot was destroyed (also by rollback or a forced receive).
    DestroySnapshot,
    /// A bookmark was destroyed.
    DestroyBookmark,
    /// A dataset was destroyed.
    DestroyDataset,
    /// A property was set.
    SetProperty {
        /// The property.
        name: String,
        /// The value.
        value: String,
    },
    /// A snapshot was received completely.
    Receive,
    /// A receive broke off and left resumable state.
    ReceivePartial,
    /// Resumable state was discarded (`zfs receive -A`).
    AbortReceive,
    /// The dataset was rolled back to the snapshot.
    Rollback,
    /// An encryption key was loaded.
    LoadKey,
    /// An encryption key was unloaded.
    UnloadKey,
    /// The pool was filled (fault injection).
    FillPool {
        /// The bytes now taken by filler.
        filler_bytes: u64,
    },
}

/// One recorded change, for invariant checkers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Who made it.
    pub actor: Actor,
    /// The pool.
    pub pool: String,
    /// The pool's txg after the change.
    pub txg: Txg,
    /// What it was.
    pub action: Action,
    /// The object's full name.
    pub object: String,
    /// The GUID of the object, where it has one.
    pub guid: Option<Guid>,
}

/// How a send stream breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamBreak {
    /// The reader sees the end of the stream early (a killed sender behind a pipe).
    Eof,
    /// The reader sees an I/O error carrying a `StreamBroken` backend error.
    Error,
}

/// A fault to inject. Faults are consumed in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `n_calls` calls of `operation` fail with `kind` before doing anything.
    Fail {
        /// The operation.
        operation: Operation,
        /// How many calls.
        n_calls: u32,
        /// The error.
        kind: ZfsErrorKind,
    },
    /// The next `n_calls` calls of `operation` that concern `dataset` fail with `kind` before
    /// doing anything. A call concerns the datasets of the objects it names (every one of a
    /// batch: an atomic snapshot of several datasets fails as a whole, as ZFS's does), so that
    /// one filesystem can fail while the others work.
    FailOn {
        /// The operation.
        operation: Operation,
        /// The dataset.
        dataset: DatasetName,
        /// How many calls.
        n_calls: u32,
        /// The error.
        kind: ZfsErrorKind,
    },
    /// Each call of `operation` fails with `kind` with probability `per_mille`/1000, drawn from
    /// the world's seeded generator.
    FailRandomly {
        /// The operation.
        operation: Operation,
        /// The probability in thousandths.
        per_mille: u32,
        /// The error.
        kind: ZfsErrorKind,
    },
    /// The next `n_calls` calls of `operation` first sleep `duration` (`tokio::time`, so
    /// virtual under paused time or turmoil).
    Delay {
        /// The operation.
        operation: Operation,
        /// How many calls.
        n_calls: u32,
        /// How long.
        duration: Duration,
    },
    /// The next send's stream breaks after `after_bytes`.
    BreakSend {
        /// Bytes delivered before the break.
        after_bytes: u64,
        /// How it breaks.
        how: StreamBreak,
    },
    /// The next receive reads only `after_bytes` of its stream, then sees it end.
    BreakReceive {
        /// Bytes read before the break.
        after_bytes: u64,
    },
}

/// The faults that apply to one call.
#[derive(Debug, Default)]
pub(crate) struct CallFaults {
    pub(crate) fail: Option<ZfsErrorKind>,
    /// The object a [`Fault::FailOn`] names in its error (the dataset it is about).
    pub(crate) fail_object: Option<String>,
    pub(crate) delay: Option<Duration>,
    pub(crate) break_send: Option<(u64, StreamBreak)>,
    pub(crate) break_receive: Option<u64>,
}

/// A simulated ZFS: a shareable handle to a world of pools that outlives every daemon using it.
#[derive(Clone)]
pub struct SimZfs {
    world: Arc<Mutex<World>>,
}

impl fmt::Debug for SimZfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimZfs").field(&*self.lock()).finish()
    }
}

impl SimZfs {
    /// A world without pools. GUIDs are drawn from `seed`; `clock` gives the unix seconds that
    /// `creation` records (pass virtual time from turmoil or a test).
    pub fn new(seed: u64, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self {
            world: Arc::new(Mutex::new(World::new(
                seed,
                Arc::new(clock),
                PAYLOAD_SCALE_DEFAULT,
            ))),
        }
    }

    /// Sets how many logical bytes one stream payload byte stands for (at least 1).
    pub fn set_payload_scale(&self, logical_bytes_per_stream_byte: u64) {
        self.lock().payload_scale = logical_bytes_per_stream_byte.max(1);
    }

    /// Actions by test setup ([`Actor::Setup`]).
    pub fn setup(&self) -> Actions<'_> {
        Actions {
            sim: self,
            actor: Actor::Setup,
        }
    }

    /// Actions by a user behind the daemon's back ([`Actor::User`]).
    pub fn user(&self) -> Actions<'_> {
        Actions {
            sim: self,
            actor: Actor::User,
        }
    }

    /// Sets what the ZFS behind `pool` supports (all true by default), to model an old ZFS.
    pub fn set_features(&self, pool: &str, features: Features) -> Result<(), ZfsError> {
        self.lock().set_features(pool, features)
    }

    /// Sets what every pool, existing and future, supports: models an old ZFS for the whole
    /// machine room.
    pub fn set_features_everywhere(&self, features: Features) {
        let mut w = self.lock();
        w.default_features = features;
        for p in w.pools.values_mut() {
            p.features = features;
        }
    }

    /// Adds a fault to inject.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Adds the faults of a plan (see [`seeded_plan`]), in order.
    pub fn inject_all(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// The faults not yet consumed, in order.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every recorded change, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// How often the trait's `operation` was called (failed calls included).
    pub fn op_count(&self, operation: Operation) -> u64 {
        self.lock().op_counts.get(&operation).copied().unwrap_or(0)
    }

    /// The call counts of every operation called so far.
    pub fn op_counts(&self) -> BTreeMap<Operation, u64> {
        self.lock().op_counts.clone()
    }

    /// The content digest of a dataset's head; `None` if it does not exist.
    pub fn digest(&self, dataset: &DatasetName) -> Option<u64> {
        self.lock().digest(dataset)
    }

    /// The content digest of a snapshot or bookmark; `None` if it does not exist.
    pub fn version_digest(&self, version: &VersionName) -> Option<u64> {
        self.lock().version_digest(version)
    }

    /// A snapshot or bookmark as `zfs list` shows it; `None` if it does not exist. Not a trait
    /// call: it is not counted and no fault applies.
    pub fn version(&self, version: &VersionName) -> Option<Version> {
        self.lock().version(Operation::ListVersions, version).ok()
    }

    /// The snapshots and bookmarks of a dataset in createtxg order (empty if it does not
    /// exist). Not a trait call.
    pub fn versions(&self, dataset: &DatasetName) -> Vec<Version> {
        self.lock()
            .list_versions(
                std::slice::from_ref(dataset),
                zferry_core::backend::VersionTypes::All,
            )
            .map(|mut l| l.datasets.remove(dataset).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Whether a dataset exists. Not a trait call.
    pub fn exists(&self, dataset: &DatasetName) -> bool {
        self.lock().digest(dataset).is_some()
    }

    /// The pool's used bytes (data, partial receive state, filler).
    pub fn pool_used_bytes(&self, pool: &str) -> Option<u64> {
        let w = self.lock();
        let scale = w.payload_scale;
        w.pools.get(pool).map(|p| p.used_bytes(scale))
    }

    /// The pool's current txg.
    pub fn pool_txg(&self, pool: &str) -> Option<Txg> {
        self.lock().pools.get(pool).map(|p| Txg(p.txg))
    }

    /// A deterministic `zfs list -t all`-style dump of a pool, for test failure messages.
    pub fn dump(&self, pool: &str) -> PoolDump {
        dump::dump(&self.lock(), pool)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a trait call and takes the faults that apply to it.
    pub(crate) fn take_faults(&self, operation: Operation, datasets: &[DatasetName]) -> CallFaults {
        let mut w = self.lock();
        *w.op_counts.entry(operation).or_insert(0) += 1;
        let mut out = CallFaults::default();
        let mut i = 0;
        while i < w.faults.len() {
            let mut consumed = false;
            match &mut w.faults[i] {
                Fault::FailOn {
                    operation: op,
                    dataset,
                    n_calls,
                    kind,
                } if *op == operation && out.fail.is_none() && datasets.contains(dataset) => {
                    out.fail = Some(kind.clone());
                    out.fail_object = Some(dataset.to_string());
                    *n_calls = n_calls.saturating_sub(1);
                    consumed = *n_calls == 0;
                }
                Fault::Fail {
                    operation: op,
                    n_calls,
                    kind,
                } if *op == operation && out.fail.is_none() => {
                    out.fail = Some(kind.clone());
                    *n_calls = n_calls.saturating_sub(1);
                    consumed = *n_calls == 0;
                }
                Fault::Delay {
                    operation: op,
                    n_calls,
                    duration,
                } if *op == operation && out.delay.is_none() => {
                    out.delay = Some(*duration);
                    *n_calls = n_calls.saturating_sub(1);
                    consumed = *n_calls == 0;
                }
                Fault::BreakSend { after_bytes, how }
                    if operation == Operation::Send && out.break_send.is_none() =>
                {
                    out.break_send = Some((*after_bytes, *how));
                    consumed = true;
                }
                Fault::BreakReceive { after_bytes }
                    if operation == Operation::Receive && out.break_receive.is_none() =>
                {
                    out.break_receive = Some(*after_bytes);
                    consumed = true;
                }
                _ => {}
            }
            if consumed {
                w.faults.remove(i);
            } else {
                i += 1;
            }
        }
        let random: Vec<(u32, ZfsErrorKind)> = w
            .faults
            .iter()
            .filter_map(|f| match f {
                Fault::FailRandomly {
                    operation: op,
                    per_mille,
                    kind,
                } if *op == operation => Some((*per_mille, kind.clone())),
                _ => None,
            })
            .collect();
        for (per_mille, kind) in random {
            let draw = (w.rng.next_u64() % 1000) as u32;
            if draw < per_mille && out.fail.is_none() {
                out.fail = Some(kind);
            }
        }
        out
    }

    /// Runs the delay and failure faults of a call; returns the stream faults.
    pub(crate) async fn enter(
        &self,
        operation: Operation,
        object: impl fmt::Display,
    ) -> Result<CallFaults, ZfsError> {
        let object = object.to_string();
        // The dataset part of a dataset, snapshot or bookmark name; none for a pool-wide call.
        let dataset = object
            .split(['@', '#'])
            .next()
            .and_then(|d| DatasetName::parse(d).ok());
        self.enter_on(operation, &object, dataset.as_slice()).await
    }

    /// [`Self::enter`] for a call that concerns several datasets (a batch).
    pub(crate) async fn enter_on(
        &self,
        operation: Operation,
        object: impl fmt::Display,
        datasets: &[DatasetName],
    ) -> Result<CallFaults, ZfsError> {
        let mut faults = self.take_faults(operation, datasets);
        if let Some(d) = faults.delay {
            tokio::time::sleep(d).await;
        }
        if let Some(kind) = faults.fail.take() {
            let msg = format!("injected fault: {kind}");
            let object = faults
                .fail_object
                .take()
                .unwrap_or_else(|| object.to_string());
            return Err(ZfsError::new(operation, object, kind).with_stderr(&msg));
        }
        Ok(faults)
    }
}

/// Changes made on a [`SimZfs`] by one actor: test setup, or a user behind the daemon's back.
/// None of them counts as a trait call or consumes faults.
#[derive(Debug, Clone, Copy)]
pub struct Actions<'a> {
    sim: &'a SimZfs,
    actor: Actor,
}

impl Actions<'_> {
    /// Creates a pool (and its root dataset) of `capacity_bytes`.
    pub fn create_pool(&self, name: &str, capacity_bytes: u64) -> Result<(), ZfsError> {
        self.sim
            .lock()
            .create_pool(self.actor, name, capacity_bytes)
    }

    /// Creates a filesystem (its parent must exist).
    pub fn create_dataset(&self, name: &DatasetName) -> Result<(), ZfsError> {
        self.create_dataset_with(name, &DatasetOptions::default())
    }

    /// Creates a dataset with options (volume, own encryption root, local properties).
    pub fn create_dataset_with(
        &self,
        name: &DatasetName,
        options: &DatasetOptions,
    ) -> Result<(), ZfsError> {
        self.sim.lock().create_dataset(self.actor, name, options)
    }

    /// Writes `n_bytes` of new data: the digest changes, usage grows.
    pub fn write(&self, dataset: &DatasetName, n_bytes: u64) -> Result<(), ZfsError> {
        self.sim.lock().write(self.actor, dataset, n_bytes)
    }

    /// Takes snapshots (atomically, in one txg).
    pub fn snapshot(&self, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.sim.lock().snapshot(self.actor, snapshots)
    }

    /// Creates a bookmark of a snapshot or bookmark.
    pub fn bookmark(
        &self,
        source: &VersionName,
        bookmark: &VersionName,
    ) -> Result<Version, ZfsError> {
        self.sim.lock().bookmark(self.actor, source, bookmark)
    }

    /// Places a hold.
    pub fn hold(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.sim.lock().hold(self.actor, tag, snapshots)
    }

    /// Releases a hold.
    pub fn release(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.sim.lock().release(self.actor, tag, snapshots)
    }

    /// Destroys snapshots of one dataset; held ones report `Busy`.
    pub fn destroy_snapshots(
        &self,
        dataset: &DatasetName,
        snapshots: &[Component],
    ) -> Result<Vec<DestroyOutcome>, ZfsError> {
        self.sim
            .lock()
            .destroy_snapshots(self.actor, dataset, snapshots)
    }

    /// Destroys a bookmark.
    pub fn destroy_bookmark(&self, bookmark: &VersionName) -> Result<(), ZfsError> {
        self.sim.lock().destroy_bookmark(self.actor, bookmark)
    }

    /// Destroys a dataset (with `recursive`, its children and snapshots too).
    pub fn destroy_dataset(&self, dataset: &DatasetName, recursive: bool) -> Result<(), ZfsError> {
        self.sim
            .lock()
            .destroy_dataset(self.actor, dataset, recursive)
    }

    /// `zfs rollback -r`.
    pub fn rollback(&self, snapshot: &VersionName) -> Result<(), ZfsError> {
        self.sim.lock().rollback(self.actor, snapshot)
    }

    /// `zfs receive -A`.
    pub fn abort_receive(&self, dataset: &DatasetName) -> Result<(), ZfsError> {
        self.sim.lock().abort_receive(self.actor, dataset)
    }

    /// `zfs set`.
    pub fn set_property(
        &self,
        dataset: &DatasetName,
        name: &str,
        value: &str,
    ) -> Result<(), ZfsError> {
        self.sim
            .lock()
            .set_property(self.actor, dataset, name, value)
    }

    /// `zfs create` of a placeholder.
    pub fn create_placeholder(
        &self,
        dataset: &DatasetName,
        encryption: PlaceholderEncryption,
    ) -> Result<(), ZfsError> {
        self.sim
            .lock()
            .create_placeholder(self.actor, dataset, encryption)
    }

    /// `zfs load-key` on an encryption root.
    pub fn load_key(&self, dataset: &DatasetName) -> Result<(), ZfsError> {
        self.sim.lock().set_key_loaded(self.actor, dataset, true)
    }

    /// `zfs unload-key` on an encryption root.
    pub fn unload_key(&self, dataset: &DatasetName) -> Result<(), ZfsError> {
        self.sim.lock().set_key_loaded(self.actor, dataset, false)
    }

    /// Fills the pool so that only `free_bytes` remain free.
    pub fn fill_pool(&self, pool: &str, free_bytes: u64) -> Result<(), ZfsError> {
        self.sim.lock().fill_pool(self.actor, pool, free_bytes)
    }
}
