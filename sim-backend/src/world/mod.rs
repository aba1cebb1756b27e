//! The simulated pools and every synchronous operation on them. The async backend and the user
//! actions both call into here with the actor that asks, so that the event log can tell who
//! changed what.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use zferry_core::backend::{
    DestroyOutcome, Features, ObjectName, Operation, PLACEHOLDER_PROPERTY, PlaceholderEncryption,
    Property, PropertySource, SendRequest, SendSource, VersionTypes, ZfsError, ZfsErrorKind,
};
use zferry_core::listing::{DatasetEntry, VersionListing};
use zferry_core::name::{Component, DatasetName, VersionKind, VersionName};
use zferry_core::version::{Guid, Txg, Version, sort_by_createtxg};

use crate::stream::{Header, Record, StreamFlags};
use crate::token::{self, TokenFields};
use crate::{Action, Actor, Event, Fault};

mod objects;
mod props;
mod receive;
mod send;

pub(crate) use receive::RecordStart;

/// The value of unset properties, as `zfs get` prints it.
const NONE_VALUE: &str = "-";
/// The default encryption suite of `encryption=on`.
const ENCRYPTION_SUITE: &str = "aes-256-gcm";
/// The default `recordsize`, in bytes; larger records make `-L` streams large-block ones.
const RECORDSIZE_DEFAULT: u64 = 128 * 1024;
/// The object number resume tokens name (OpenZFS names the object it stopped in).
const TOKEN_OBJECT: u64 = 2;

/// An injected clock: unix seconds.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// splitmix64: a small, well-known generator whose output never changes across crate versions.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Whether a dataset is a filesystem or a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetType {
    /// A filesystem.
    Filesystem,
    /// A volume (zvol).
    Volume,
}

/// The encryption of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encryption {
    /// The encryption root (whose key this dataset uses).
    pub(crate) root: DatasetName,
    /// The key's identity: equal keys have equal ids.
    pub(crate) key_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropSource {
    Local,
    Received,
}

#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) guid: Guid,
    pub(crate) createtxg: Txg,
    pub(crate) creation: i64,
    pub(crate) digest: u64,
    pub(crate) size_bytes: u64,
    pub(crate) holds: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Bookmark {
    pub(crate) guid: Guid,
    pub(crate) createtxg: Txg,
    pub(crate) creation: i64,
    pub(crate) digest: u64,
    pub(crate) size_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartialKind {
    /// A full receive created the dataset, which stays inconsistent until completed.
    NewFs,
    /// The partial state is hidden beside an existing dataset (`fs/%recv`).
    Hidden,
}

/// Resumable receive state.
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    pub(crate) kind: PartialKind,
    pub(crate) from_guid: Option<Guid>,
    pub(crate) record: Record,
    pub(crate) sender_dataset: String,
    pub(crate) flags: StreamFlags,
    pub(crate) payload_received: u64,
    pub(crate) stream_bytes: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Dataset {
    pub(crate) kind: DatasetType,
    pub(crate) guid: Guid,
    pub(crate) createtxg: Txg,
    pub(crate) creation: i64,
    pub(crate) props: BTreeMap<String, (String, PropSource)>,
    pub(crate) encryption: Option<Encryption>,
    /// Whether this dataset's key is loaded (meaningful on encryption roots).
    pub(crate) key_loaded: bool,
    pub(crate) digest: u64,
    pub(crate) size_bytes: u64,
    /// Bytes written since the newest snapshot (usage not yet in any snapshot).
    pub(crate) dirty_bytes: u64,
    pub(crate) snapshots: BTreeMap<Component, Snapshot>,
    pub(crate) bookmarks: BTreeMap<Component, Bookmark>,
    pub(crate) partial: Option<Partial>,
    pub(crate) inconsistent: bool,
    pub(crate) receiving: bool,
    pub(crate) writes: u64,
}

impl Dataset {
    fn newest_snapshot(&self) -> Option<(&Component, &Snapshot)> {
        self.snapshots.iter().max_by_key(|(_, s)| s.createtxg)
    }

    fn snapshot_by_guid(&self, guid: Guid) -> Option<(&Component, &Snapshot)> {
        self.snapshots.iter().find(|(_, s)| s.guid == guid)
    }

    /// Whether the head differs from `snap` (OpenZFS compares the head's and the snapshot's
    /// meta-dnode; a digest comparison says the same).
    fn modified_since(&self, snap: &Snapshot) -> bool {
        self.digest != snap.digest
    }

    /// Bytes this dataset takes in its pool. Writes only append, so every snapshot's data is
    /// still the head's: the head's size is all there is, plus partial receive state (scaled
    /// from payload units to bytes). Destroying a snapshot frees nothing; a rollback frees
    /// what was written after its snapshot.
    pub(crate) fn usage_bytes(&self, scale: u64) -> u64 {
        let partial = self
            .partial
            .as_ref()
            .map_or(0, |p| p.payload_received * scale);
        self.size_bytes + partial
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) capacity_bytes: u64,
    pub(crate) filler_bytes: u64,
    pub(crate) reserved_bytes: u64,
    pub(crate) txg: u64,
    pub(crate) features: Features,
    pub(crate) datasets: BTreeMap<DatasetName, Dataset>,
}

impl Pool {
    pub(crate) fn used_bytes(&self, scale: u64) -> u64 {
        let data: u64 = self.datasets.values().map(|d| d.usage_bytes(scale)).sum();
        data + self.filler_bytes + self.reserved_bytes
    }
}

/// The whole simulated machine room.
pub(crate) struct World {
    pub(crate) rng: SplitMix64,
    pub(crate) clock: Clock,
    pub(crate) payload_scale: u64,
    pub(crate) pools: BTreeMap<String, Pool>,
    pub(crate) events: Vec<Event>,
    pub(crate) op_counts: BTreeMap<Operation, u64>,
    pub(crate) faults: Vec<Fault>,
    /// Snapshots an unfinished `zfs send` holds (destroy is busy), by send id.
    pub(crate) sending: BTreeMap<u64, Vec<VersionName>>,
    pub(crate) next_send_id: u64,
    /// What new pools support.
    pub(crate) default_features: Features,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("pools", &self.pools.keys().collect::<Vec<_>>())
            .field("n_events", &self.events.len())
            .finish()
    }
}

pub(crate) fn err(
    op: Operation,
    object: impl std::fmt::Display,
    kind: ZfsErrorKind,
    stderr: &str,
) -> ZfsError {
    ZfsError::new(op, object, kind).with_stderr(stderr)
}

fn dne(op: Operation, object: impl std::fmt::Display) -> ZfsError {
    let msg = format!("cannot open '{object}': dataset does not exist");
    err(op, object, ZfsErrorKind::DoesNotExist, &msg)
}

/// Options of a dataset created by test setup.
#[derive(Debug, Clone, Default)]
pub struct DatasetOptions {
    /// Make it a volume.
    pub volume: bool,
    /// Make it an encryption root with its own (loaded) key.
    pub encrypted: bool,
    /// Local properties to set.
    pub properties: BTreeMap<String, String>,
}

/// What one receive is doing, between its chunks of stream.
#[derive(Debug)]
pub(crate) struct ReceiveCtx {
    pub(crate) actor: Actor,
    pub(crate) dataset: DatasetName,
    pub(crate) to: Component,
    pub(crate) force: bool,
    pub(crate) resumable: bool,
    pub(crate) header: Header,
    pub(crate) kind: PartialKind,
    /// Record being received and the payload position in it.
    pub(crate) index: usize,
    pub(crate) pos: u64,
    /// Payload bytes of the current record received by this call (reserved in the pool).
    pub(crate) reserved_payload: u64,
    /// Stream bytes received before this call (a resumed receive) plus by this call.
    pub(crate) stream_bytes: u64,
    pub(crate) created_dataset: bool,
    pub(crate) n_committed: usize,
}

impl World {
    pub(crate) fn new(seed: u64, clock: Clock, payload_scale: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            clock,
            payload_scale: payload_scale.max(1),
            pools: BTreeMap::new(),
            events: Vec::new(),
            op_counts: BTreeMap::new(),
            faults: Vec::new(),
            sending: BTreeMap::new(),
            next_send_id: 1,
            default_features: Features {
                resumable_send: true,
                resumable_receive: true,
                encryption: true,
                batch_destroy: true,
            },
        }
    }

    fn guid(&mut self) -> Guid {
        loop {
            let g = self.rng.next_u64();
            if g != 0 {
                return Guid(g);
            }
        }
    }

    fn log(
        &mut self,
        actor: Actor,
        pool: &str,
        action: Action,
        object: impl std::fmt::Display,
        guid: Option<Guid>,
    ) {
        let txg = self.pools.get(pool).map_or(0, |p| p.txg);
        let seq = self.events.len() as u64;
        self.events.push(Event {
            seq,
            actor,
            pool: pool.to_owned(),
            txg: Txg(txg),
            action,
            object: object.to_string(),
            guid,
        });
    }

    fn pool(&self, op: Operation, name: &DatasetName) -> Result<&Pool, ZfsError> {
        self.pools.get(name.pool()).ok_or_else(|| dne(op, name))
    }

    fn pool_mut(&mut self, op: Operation, name: &DatasetName) -> Result<&mut Pool, ZfsError> {
        self.pools.get_mut(name.pool()).ok_or_else(|| dne(op, name))
    }

    pub(crate) fn dataset(&self, op: Operation, name: &DatasetName) -> Result<&Dataset, ZfsError> {
        self.pool(op, name)?
            .datasets
            .get(name)
            .ok_or_else(|| dne(op, name))
    }

    fn dataset_mut(&mut self, op: Operation, name: &DatasetName) -> Result<&mut Dataset, ZfsError> {
        self.pool_mut(op, name)?
            .datasets
            .get_mut(name)
            .ok_or_else(|| dne(op, name))
    }

    /// Advances the pool's txg and returns the new one.
    fn next_txg(&mut self, pool: &str) -> Txg {
        match self.pools.get_mut(pool) {
            Some(p) => {
                p.txg += 1;
                Txg(p.txg)
            }
            None => Txg(0),
        }
    }

    pub(crate) fn features(&self, op: Operation, pool: &str) -> Result<Features, ZfsError> {
        self.pools.get(pool).map(|p| p.features).ok_or_else(|| {
            let msg = format!("Cannot get properties of {pool}: no such pool available.");
            err(op, pool, ZfsErrorKind::DoesNotExist, &msg)
        })
    }

    // ---- setup -------------------------------------------------------------------------------

    pub(crate) fn create_pool(
        &mut self,
        actor: Actor,
        name: &str,
        capacity_bytes: u64,
    ) -> Result<(), ZfsError> {
        let op = Operation::CreatePlaceholder;
        let root = DatasetName::parse(name)
            .map_err(|e| err(op, name, ZfsErrorKind::InvalidArgument, &e.to_string()))?;
        if root.parent().is_some() {
            return Err(err(
                op,
                name,
                ZfsErrorKind::InvalidArgument,
                "a pool name has no `/`",
            ));
        }
        if self.pools.contains_key(name) {
            return Err(err(
                op,
                name,
                ZfsErrorKind::AlreadyExists,
                "pool already exists",
            ));
        }
        self.pools.insert(
            name.to_owned(),
            Pool {
                capacity_bytes,
                filler_bytes: 0,
                reserved_bytes: 0,
                txg: 4,
                features: self.default_features,
                datasets: BTreeMap::new(),
            },
        );
        let guid = self.guid();
        let creation = (self.clock)();
        let txg = self.next_txg(name);
        let ds = new_dataset(DatasetType::Filesystem, guid, txg, creation, None);
        if let Some(p) = self.pools.get_mut(name) {
            p.datasets.insert(root.clone(), ds);
        }
        self.log(actor, name, Action::CreatePool, name, Some(guid));
        Ok(())
    }

    pub(crate) fn set_features(&mut self, pool: &str, features: Features) -> Result<(), ZfsError> {
        let p = self.pools.get_mut(pool).ok_or_else(|| {
            err(
                Operation::Features,
                pool,
                ZfsErrorKind::DoesNotExist,
                "no such pool",
            )
        })?;
        p.features = features;
        Ok(())
    }

    pub(crate) fn create_dataset(
        &mut self,
        actor: Actor,
        name: &DatasetName,
        opts: &DatasetOptions,
    ) -> Result<(), ZfsError> {
        let op = Operation::CreatePlaceholder;
        let inherited = self.check_create(op, name)?;
        if !opts.encrypted
            && let Some(e) = &inherited
            && !self.key_loaded(name.pool(), &e.root)
        {
            let msg = format!(
                "cannot create '{name}': encryption key not loaded for '{}'",
                e.root
            );
            return Err(err(op, name, ZfsErrorKind::KeyNotLoaded, &msg));
        }
        self.insert_dataset(actor, name, opts, inherited)
    }

    /// Creates a checked dataset: its own encryption root with `opts.encrypted`, else with the
    /// `encryption` given (inherited, or none).
    fn insert_dataset(
        &mut self,
        actor: Actor,
        name: &DatasetName,
        opts: &DatasetOptions,
        encryption: Option<Encryption>,
    ) -> Result<(), ZfsError> {
        let op = Operation::CreatePlaceholder;
        let guid = self.guid();
        let creation = (self.clock)();
        let txg = self.next_txg(name.pool());
        let kind = if opts.volume {
            DatasetType::Volume
        } else {
            DatasetType::Filesystem
        };
        let encryption = if opts.encrypted {
            Some(Encryption {
                root: name.clone(),
                key_id: guid.0,
            })
        } else {
            encryption
        };
        let mut ds = new_dataset(kind, guid, txg, creation, encryption);
        ds.key_loaded = opts.encrypted;
        for (k, v) in &opts.properties {
            ds.props.insert(k.clone(), (v.clone(), PropSource::Local));
        }
        self.pool_mut(op, name)?.datasets.insert(name.clone(), ds);
        self.log(actor, name.pool(), Action::CreateDataset, name, Some(guid));
        Ok(())
    }

    /// Checks that `name` can be created; returns the encryption it would inherit.
    fn check_create(
        &self,
        op: Operation,
        name: &DatasetName,
    ) -> Result<Option<Encryption>, ZfsError> {
        let Some(parent) = name.parent() else {
            let msg = format!("cannot create '{name}': missing dataset name");
            return Err(err(op, name, ZfsErrorKind::InvalidArgument, &msg));
        };
        let pool = self.pool(op, name)?;
        if pool.datasets.contains_key(name) {
            let msg = format!("cannot create '{name}': dataset already exists");
            return Err(err(op, name, ZfsErrorKind::AlreadyExists, &msg));
        }
        let Some(p) = pool.datasets.get(&parent) else {
            let msg = format!("cannot create '{name}': parent does not exist");
            return Err(err(op, name, ZfsErrorKind::DoesNotExist, &msg));
        };
        if p.kind == DatasetType::Volume {
            let msg = format!("cannot create '{name}': parent is not a filesystem");
            return Err(err(op, name, ZfsErrorKind::InvalidArgument, &msg));
        }
        Ok(p.encryption.clone())
    }

    pub(crate) fn write(
        &mut self,
        actor: Actor,
        name: &DatasetName,
        n_bytes: u64,
    ) -> Result<(), ZfsError> {
        let op = Operation::SetProperty;
        let scale = self.payload_scale;
        let pool = self.pool(op, name)?;
        if pool.used_bytes(scale) + n_bytes > pool.capacity_bytes {
            let msg = format!("cannot write to '{name}': out of space");
            return Err(err(op, name, ZfsErrorKind::NoSpace, &msg));
        }
        let ds = self.dataset(op, name)?;
        if ds.inconsistent || ds.receiving {
            return Err(err(op, name, ZfsErrorKind::Busy, "dataset is busy"));
        }
        if let Some(enc) = &ds.encryption
            && !self.key_loaded(name.pool(), &enc.root)
        {
            return Err(err(
                op,
                name,
                ZfsErrorKind::KeyNotLoaded,
                "encryption key not loaded",
            ));
        }
        let txg = self.next_txg(name.pool());
        let ds = self.dataset_mut(op, name)?;
        ds.writes += 1;
        ds.digest = mix(ds.digest ^ mix(n_bytes ^ txg.0.rotate_left(17)) ^ ds.writes);
        ds.size_bytes += n_bytes;
        ds.dirty_bytes += n_bytes;
        self.log(actor, name.pool(), Action::Write { n_bytes }, name, None);
        Ok(())
    }

    fn key_loaded(&self, pool: &str, root: &DatasetName) -> bool {
        self.pools
            .get(pool)
            .and_then(|p| p.datasets.get(root))
            .is_some_and(|d| d.key_loaded)
    }

    pub(crate) fn set_key_loaded(
        &mut self,
        actor: Actor,
        name: &DatasetName,
        loaded: bool,
    ) -> Result<(), ZfsError> {
        let op = Operation::SetProperty;
        let ds = self.dataset_mut(op, name)?;
        match &ds.encryption {
            Some(enc) if enc.root == *name => ds.key_loaded = loaded,
            _ => {
                let msg = format!("'{name}' is not an encryption root");
                return Err(err(op, name, ZfsErrorKind::InvalidArgument, &msg));
            }
        }
        self.next_txg(name.pool());
        let action = if loaded {
            Action::LoadKey
        } else {
            Action::UnloadKey
        };
        self.log(actor, name.pool(), action, name, None);
        Ok(())
    }

    pub(crate) fn fill_pool(
        &mut self,
        actor: Actor,
        pool: &str,
        free_bytes: u64,
    ) -> Result<(), ZfsError> {
        let scale = self.payload_scale;
        let p = self.pools.get_mut(pool).ok_or_else(|| {
            err(
                Operation::Features,
                pool,
                ZfsErrorKind::DoesNotExist,
                "no such pool",
            )
        })?;
        p.txg += 1;
        p.filler_bytes = 0;
        let used = p.used_bytes(scale);
        p.filler_bytes = p
            .capacity_bytes
            .saturating_sub(used)
            .saturating_sub(free_bytes);
        let filler = p.filler_bytes;
        self.log(
            actor,
            pool,
            Action::FillPool {
                filler_bytes: filler,
            },
            pool,
            None,
        );
        Ok(())
    }

    /// The digest of a dataset's head, for data-identity checks.
    pub(crate) fn digest(&self, d: &DatasetName) -> Option<u64> {
        self.pools
            .get(d.pool())?
            .datasets
            .get(d)
            .map(|ds| ds.digest)
    }

    /// The digest of a snapshot or bookmark.
    pub(crate) fn version_digest(&self, v: &VersionName) -> Option<u64> {
        let ds = self
            .pools
            .get(v.dataset().pool())?
            .datasets
            .get(v.dataset())?;
        match v.kind() {
            VersionKind::Snapshot => ds.snapshots.get(v.short()).map(|s| s.digest),
            VersionKind::Bookmark => ds.bookmarks.get(v.short()).map(|b| b.digest),
        }
    }
}

fn new_dataset(
    kind: DatasetType,
    guid: Guid,
    createtxg: Txg,
    creation: i64,
    encryption: Option<Encryption>,
) -> Dataset {
    Dataset {
        kind,
        guid,
        createtxg,
        creation,
        props: BTreeMap::new(),
        encryption,
        key_loaded: false,
        digest: mix(guid.0),
        size_bytes: 0,
        dirty_bytes: 0,
        snapshots: BTreeMap::new(),
        bookmarks: BTreeMap::new(),
        partial: None,
        inconsistent: false,
        receiving: false,
        writes: 0,
    }
}

/// A 64-bit mixer (the splitmix64 finaliser) for content digests.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn is_user_property(name: &str) -> bool {
    name.contains(':')
}

fn default_of(name: &str) -> &'static str {
    match name {
        "readonly" | "atime" => "off",
        "canmount" | "compression" => "on",
        "recordsize" => "131072",
        _ => NONE_VALUE,
    }
}

fn bad_property(op: Operation, object: &ObjectName, name: &str) -> ZfsError {
    let msg = format!("bad property list: invalid property '{name}'");
    err(op, object, ZfsErrorKind::InvalidArgument, &msg)
}
