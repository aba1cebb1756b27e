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
                features: Features {
                    resumable_send: true,
                    resumable_receive: true,
                    encryption: true,
                    batch_destroy: true,
                },
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

    // ---- listing and properties --------------------------------------------------------------

    pub(crate) fn list_datasets(
        &self,
        root: Option<&DatasetName>,
        properties: &[&str],
    ) -> Result<Vec<DatasetEntry>, ZfsError> {
        let op = Operation::ListDatasets;
        if let Some(r) = root {
            self.dataset(op, r)?;
        }
        let mut names: Vec<&DatasetName> = self
            .pools
            .values()
            .flat_map(|p| p.datasets.keys())
            .filter(|n| root.is_none_or(|r| r == *n || r.is_ancestor_of(n)))
            .collect();
        // `zfs list -r` walks the tree depth first, children by name.
        names.sort_by(|a, b| a.components().cmp(b.components()));
        let mut out = Vec::new();
        for name in names {
            let object = ObjectName::Dataset(name.clone());
            let mut values = Vec::new();
            for p in properties {
                values.push(self.property(op, &object, p)?.value);
            }
            out.push(DatasetEntry {
                name: name.clone(),
                properties: values,
            });
        }
        Ok(out)
    }

    pub(crate) fn list_versions(
        &self,
        datasets: &[DatasetName],
        types: VersionTypes,
    ) -> Result<VersionListing, ZfsError> {
        let op = Operation::ListVersions;
        let mut listing = VersionListing::default();
        for name in datasets {
            let ds = self.dataset(op, name)?;
            let mut versions = Vec::new();
            if types != VersionTypes::Bookmarks {
                for (short, s) in &ds.snapshots {
                    let mut v = Version::snapshot(short.clone(), s.guid, s.createtxg, s.creation);
                    v.userrefs = Some(s.holds.len() as u64);
                    versions.push(v);
                }
            }
            if types != VersionTypes::Snapshots {
                for (short, b) in &ds.bookmarks {
                    versions.push(Version::bookmark(
                        short.clone(),
                        b.guid,
                        b.createtxg,
                        b.creation,
                    ));
                }
            }
            sort_by_createtxg(&mut versions);
            listing.datasets.insert(name.clone(), versions);
        }
        Ok(listing)
    }

    pub(crate) fn version(&self, op: Operation, name: &VersionName) -> Result<Version, ZfsError> {
        let ds = self
            .dataset(op, name.dataset())
            .map_err(|_| dne(op, name))?;
        match name.kind() {
            VersionKind::Snapshot => ds
                .snapshots
                .get(name.short())
                .map(|s| {
                    let mut v =
                        Version::snapshot(name.short().clone(), s.guid, s.createtxg, s.creation);
                    v.userrefs = Some(s.holds.len() as u64);
                    v
                })
                .ok_or_else(|| dne(op, name)),
            VersionKind::Bookmark => ds
                .bookmarks
                .get(name.short())
                .map(|b| Version::bookmark(name.short().clone(), b.guid, b.createtxg, b.creation))
                .ok_or_else(|| dne(op, name)),
        }
    }

    pub(crate) fn get_properties(
        &self,
        object: &ObjectName,
        properties: &[&str],
    ) -> Result<BTreeMap<String, Property>, ZfsError> {
        let op = Operation::GetProperties;
        let mut out = BTreeMap::new();
        for p in properties {
            out.insert((*p).to_owned(), self.property(op, object, p)?);
        }
        Ok(out)
    }

    fn property(
        &self,
        op: Operation,
        object: &ObjectName,
        name: &str,
    ) -> Result<Property, ZfsError> {
        let ro = |value: String| Property {
            value,
            source: PropertySource::None,
        };
        match object {
            ObjectName::Version(v) => {
                let version = self.version(op, v)?;
                match name {
                    "guid" => Ok(ro(version.guid.0.to_string())),
                    "createtxg" => Ok(ro(version.createtxg.0.to_string())),
                    "creation" => Ok(ro(version.creation_unix.to_string())),
                    "name" => Ok(ro(v.to_string())),
                    "type" => Ok(ro(if version.is_snapshot() {
                        "snapshot"
                    } else {
                        "bookmark"
                    }
                    .to_owned())),
                    "userrefs" => Ok(ro(version
                        .userrefs
                        .map_or(NONE_VALUE.to_owned(), |u| u.to_string()))),
                    _ if is_user_property(name) && version.is_snapshot() => {
                        self.user_property(v.dataset(), name, true)
                    }
                    _ if is_user_property(name) => Ok(ro(NONE_VALUE.to_owned())),
                    _ => Err(bad_property(op, object, name)),
                }
            }
            ObjectName::Dataset(d) => {
                let ds = self.dataset(op, d)?;
                let keystatus = || match &ds.encryption {
                    None => NONE_VALUE.to_owned(),
                    Some(e) if self.key_loaded(d.pool(), &e.root) => "available".to_owned(),
                    Some(_) => "unavailable".to_owned(),
                };
                match name {
                    "guid" => Ok(ro(ds.guid.0.to_string())),
                    "createtxg" => Ok(ro(ds.createtxg.0.to_string())),
                    "creation" => Ok(ro(ds.creation.to_string())),
                    "name" => Ok(ro(d.to_string())),
                    "type" => Ok(ro(match ds.kind {
                        DatasetType::Filesystem => "filesystem",
                        DatasetType::Volume => "volume",
                    }
                    .to_owned())),
                    "used" => Ok(ro(ds.usage_bytes(self.payload_scale).to_string())),
                    "referenced" | "logicalreferenced" => Ok(ro(ds.size_bytes.to_string())),
                    "inconsistent" => Ok(ro(u8::from(ds.inconsistent).to_string())),
                    "keystatus" => Ok(ro(keystatus())),
                    "encryptionroot" => Ok(ro(ds
                        .encryption
                        .as_ref()
                        .map_or(NONE_VALUE.to_owned(), |e| e.root.to_string()))),
                    "encryption" => Ok(match &ds.encryption {
                        Some(_) => ro(ENCRYPTION_SUITE.to_owned()),
                        None => Property {
                            value: "off".to_owned(),
                            source: PropertySource::Default,
                        },
                    }),
                    "receive_resume_token" => Ok(ro(self
                        .token_of(ds)
                        .unwrap_or_else(|| NONE_VALUE.to_owned()))),
                    "mountpoint" => Ok(self.mountpoint(d)),
                    "mounted" => Ok(ro(if ds.inconsistent || ds.kind == DatasetType::Volume {
                        NONE_VALUE
                    } else if self.mountpoint(d).value == "none" {
                        "no"
                    } else {
                        "yes"
                    }
                    .to_owned())),
                    "readonly" | "canmount" | "compression" | "atime" | "recordsize" => {
                        Ok(self.inheritable(d, name).unwrap_or_else(|| Property {
                            value: default_of(name).to_owned(),
                            source: PropertySource::Default,
                        }))
                    }
                    _ if is_user_property(name) => self.user_property(d, name, false),
                    _ => Err(bad_property(op, object, name)),
                }
            }
        }
    }

    /// A user property: set here (local or received), else inherited from the nearest ancestor.
    fn user_property(
        &self,
        d: &DatasetName,
        name: &str,
        from_snapshot: bool,
    ) -> Result<Property, ZfsError> {
        if !from_snapshot
            && let Some((v, src)) = self
                .pools
                .get(d.pool())
                .and_then(|p| p.datasets.get(d))
                .and_then(|ds| ds.props.get(name))
        {
            return Ok(Property {
                value: v.clone(),
                source: match src {
                    PropSource::Local => PropertySource::Local,
                    PropSource::Received => PropertySource::Received,
                },
            });
        }
        let start = if from_snapshot {
            Some(d.clone())
        } else {
            d.parent()
        };
        Ok(self.inherited(start, name).unwrap_or(Property {
            value: NONE_VALUE.to_owned(),
            source: PropertySource::None,
        }))
    }

    fn inherited(&self, mut at: Option<DatasetName>, name: &str) -> Option<Property> {
        while let Some(a) = at {
            let found = self
                .pools
                .get(a.pool())
                .and_then(|p| p.datasets.get(&a))
                .and_then(|ds| ds.props.get(name));
            if let Some((v, _)) = found {
                return Some(Property {
                    value: v.clone(),
                    source: PropertySource::Inherited {
                        from: a.to_string(),
                    },
                });
            }
            at = a.parent();
        }
        None
    }

    fn inheritable(&self, d: &DatasetName, name: &str) -> Option<Property> {
        let own = self
            .pools
            .get(d.pool())
            .and_then(|p| p.datasets.get(d))
            .and_then(|ds| ds.props.get(name));
        if let Some((v, src)) = own {
            return Some(Property {
                value: v.clone(),
                source: if *src == PropSource::Local {
                    PropertySource::Local
                } else {
                    PropertySource::Received
                },
            });
        }
        self.inherited(d.parent(), name)
    }

    /// `mountpoint`: local, or the nearest ancestor's with the rest of the path appended
    /// (`none` and `legacy` inherit as they are), or `/<name>` by default.
    fn mountpoint(&self, d: &DatasetName) -> Property {
        let mut at = Some(d.clone());
        while let Some(a) = at {
            let own = self
                .pools
                .get(a.pool())
                .and_then(|p| p.datasets.get(&a))
                .and_then(|ds| ds.props.get("mountpoint"));
            if let Some((v, src)) = own {
                if a == *d {
                    return Property {
                        value: v.clone(),
                        source: if *src == PropSource::Local {
                            PropertySource::Local
                        } else {
                            PropertySource::Received
                        },
                    };
                }
                let value = if v == "none" || v == "legacy" {
                    v.clone()
                } else {
                    let rest = d.strip_ancestor(&a).unwrap_or_default();
                    format!("{}/{}", v.trim_end_matches('/'), rest)
                };
                return Property {
                    value,
                    source: PropertySource::Inherited {
                        from: a.to_string(),
                    },
                };
            }
            at = a.parent();
        }
        Property {
            value: format!("/{d}"),
            source: PropertySource::Default,
        }
    }

    fn recordsize(&self, d: &DatasetName) -> u64 {
        self.inheritable(d, "recordsize")
            .and_then(|p| p.value.parse().ok())
            .unwrap_or(RECORDSIZE_DEFAULT)
    }

    pub(crate) fn set_property(
        &mut self,
        actor: Actor,
        d: &DatasetName,
        name: &str,
        value: &str,
    ) -> Result<(), ZfsError> {
        let op = Operation::SetProperty;
        let settable = is_user_property(name)
            || matches!(
                name,
                "mountpoint" | "readonly" | "canmount" | "compression" | "atime" | "recordsize"
            );
        if !settable || name.contains('=') {
            let msg = format!("cannot set property for '{d}': invalid property '{name}'");
            return Err(err(op, d, ZfsErrorKind::InvalidArgument, &msg));
        }
        self.next_txg(d.pool());
        let ds = self.dataset_mut(op, d)?;
        ds.props
            .insert(name.to_owned(), (value.to_owned(), PropSource::Local));
        self.log(
            actor,
            d.pool(),
            Action::SetProperty {
                name: name.to_owned(),
                value: value.to_owned(),
            },
            d,
            None,
        );
        Ok(())
    }

    // ---- snapshots, bookmarks, holds ---------------------------------------------------------

    pub(crate) fn snapshot(
        &mut self,
        actor: Actor,
        snapshots: &[VersionName],
    ) -> Result<(), ZfsError> {
        let op = Operation::Snapshot;
        let Some(first) = snapshots.first() else {
            return Ok(());
        };
        let pool = first.dataset().pool().to_owned();
        let mut seen = BTreeSet::new();
        for s in snapshots {
            if s.kind() != VersionKind::Snapshot {
                return Err(err(
                    op,
                    s,
                    ZfsErrorKind::InvalidArgument,
                    "not a snapshot name",
                ));
            }
            if s.dataset().pool() != pool {
                let msg = "cannot create snapshots in multiple pools";
                return Err(err(op, s, ZfsErrorKind::InvalidArgument, msg));
            }
            if !seen.insert(s.clone()) {
                let msg = format!("cannot create snapshot '{s}': duplicate name in the list");
                return Err(err(op, s, ZfsErrorKind::InvalidArgument, &msg));
            }
            let ds = self.dataset(op, s.dataset()).map_err(|_| dne(op, s))?;
            if ds.inconsistent {
                return Err(err(op, s, ZfsErrorKind::Busy, "dataset is busy"));
            }
            if ds.snapshots.contains_key(s.short()) {
                let msg = format!("cannot create snapshot '{s}': dataset already exists");
                return Err(err(op, s, ZfsErrorKind::AlreadyExists, &msg));
            }
        }
        let txg = self.next_txg(&pool);
        let creation = (self.clock)();
        for s in snapshots {
            let guid = self.guid();
            let ds = self.dataset_mut(op, s.dataset())?;
            let snap = Snapshot {
                guid,
                createtxg: txg,
                creation,
                digest: ds.digest,
                size_bytes: ds.size_bytes,
                holds: BTreeSet::new(),
            };
            ds.dirty_bytes = 0;
            ds.snapshots.insert(s.short().clone(), snap);
            self.log(actor, &pool, Action::Snapshot, s, Some(guid));
        }
        Ok(())
    }

    pub(crate) fn bookmark(
        &mut self,
        actor: Actor,
        source: &VersionName,
        bookmark: &VersionName,
    ) -> Result<Version, ZfsError> {
        let op = Operation::Bookmark;
        if bookmark.kind() != VersionKind::Bookmark || source.dataset() != bookmark.dataset() {
            let msg = format!(
                "cannot create bookmark '{bookmark}': a bookmark must be of the source's dataset and contain '#'"
            );
            return Err(err(op, bookmark, ZfsErrorKind::InvalidArgument, &msg));
        }
        let ds = self
            .dataset(op, source.dataset())
            .map_err(|_| dne(op, source))?;
        let (guid, createtxg, creation, digest, size_bytes) = match source.kind() {
            VersionKind::Snapshot => {
                let s = ds
                    .snapshots
                    .get(source.short())
                    .ok_or_else(|| dne(op, source))?;
                (s.guid, s.createtxg, s.creation, s.digest, s.size_bytes)
            }
            VersionKind::Bookmark => {
                let b = ds
                    .bookmarks
                    .get(source.short())
                    .ok_or_else(|| dne(op, source))?;
                (b.guid, b.createtxg, b.creation, b.digest, b.size_bytes)
            }
        };
        if let Some(existing) = ds.bookmarks.get(bookmark.short()) {
            if existing.guid == guid {
                return Ok(Version::bookmark(
                    bookmark.short().clone(),
                    existing.guid,
                    existing.createtxg,
                    existing.creation,
                ));
            }
            let msg = format!("cannot create bookmark '{bookmark}': bookmark exists");
            return Err(err(
                op,
                bookmark,
                ZfsErrorKind::ExistsWithOtherGuid {
                    existing: existing.guid,
                },
                &msg,
            ));
        }
        self.next_txg(source.dataset().pool());
        let ds = self.dataset_mut(op, source.dataset())?;
        ds.bookmarks.insert(
            bookmark.short().clone(),
            Bookmark {
                guid,
                createtxg,
                creation,
                digest,
                size_bytes,
            },
        );
        self.log(
            actor,
            source.dataset().pool(),
            Action::Bookmark,
            bookmark,
            Some(guid),
        );
        Ok(Version::bookmark(
            bookmark.short().clone(),
            guid,
            createtxg,
            creation,
        ))
    }

    pub(crate) fn hold(
        &mut self,
        actor: Actor,
        tag: &str,
        snapshots: &[VersionName],
    ) -> Result<(), ZfsError> {
        let op = Operation::Hold;
        if tag.is_empty() || tag.len() > 255 {
            return Err(err(
                op,
                tag,
                ZfsErrorKind::InvalidArgument,
                "invalid hold tag",
            ));
        }
        for s in snapshots {
            let ds = self.dataset(op, s.dataset()).map_err(|_| dne(op, s))?;
            if s.kind() != VersionKind::Snapshot || !ds.snapshots.contains_key(s.short()) {
                let msg = format!("cannot hold snapshot '{s}': dataset does not exist");
                return Err(err(op, s, ZfsErrorKind::DoesNotExist, &msg));
            }
        }
        for s in snapshots {
            let added = self
                .dataset_mut(op, s.dataset())?
                .snapshots
                .get_mut(s.short())
                .is_some_and(|snap| snap.holds.insert(tag.to_owned()));
            if added {
                self.next_txg(s.dataset().pool());
                self.log(
                    actor,
                    s.dataset().pool(),
                    Action::Hold {
                        tag: tag.to_owned(),
                    },
                    s,
                    None,
                );
            }
        }
        Ok(())
    }

    pub(crate) fn release(
        &mut self,
        actor: Actor,
        tag: &str,
        snapshots: &[VersionName],
    ) -> Result<(), ZfsError> {
        let op = Operation::Release;
        for s in snapshots {
            let ds = self.dataset(op, s.dataset()).map_err(|_| dne(op, s))?;
            if s.kind() != VersionKind::Snapshot || !ds.snapshots.contains_key(s.short()) {
                let msg =
                    format!("cannot release hold from snapshot '{s}': dataset does not exist");
                return Err(err(op, s, ZfsErrorKind::DoesNotExist, &msg));
            }
        }
        for s in snapshots {
            let removed = self
                .dataset_mut(op, s.dataset())?
                .snapshots
                .get_mut(s.short())
                .is_some_and(|snap| snap.holds.remove(tag));
            if removed {
                self.next_txg(s.dataset().pool());
                self.log(
                    actor,
                    s.dataset().pool(),
                    Action::Release {
                        tag: tag.to_owned(),
                    },
                    s,
                    None,
                );
            }
        }
        Ok(())
    }

    pub(crate) fn holds(&self, snapshot: &VersionName) -> Result<Vec<String>, ZfsError> {
        let op = Operation::ListHolds;
        let ds = self
            .dataset(op, snapshot.dataset())
            .map_err(|_| dne(op, snapshot))?;
        ds.snapshots
            .get(snapshot.short())
            .filter(|_| snapshot.kind() == VersionKind::Snapshot)
            .map(|s| s.holds.iter().cloned().collect())
            .ok_or_else(|| dne(op, snapshot))
    }

    fn send_busy(&self, snapshot: &VersionName) -> bool {
        self.sending.values().any(|held| held.contains(snapshot))
    }

    pub(crate) fn destroy_snapshots(
        &mut self,
        actor: Actor,
        d: &DatasetName,
        names: &[Component],
    ) -> Result<Vec<DestroyOutcome>, ZfsError> {
        let op = Operation::DestroySnapshots;
        self.dataset(op, d)?;
        let mut out = Vec::new();
        for short in names {
            let full = VersionName::new(d.clone(), VersionKind::Snapshot, short.clone())
                .map_err(|e| err(op, d, ZfsErrorKind::InvalidArgument, &e.to_string()))?;
            let ds = self.dataset(op, d)?;
            let result = match ds.snapshots.get(short) {
                None => Ok(()),
                Some(s) if !s.holds.is_empty() || self.send_busy(&full) => Err(ZfsErrorKind::Busy),
                Some(s) => {
                    let guid = s.guid;
                    self.next_txg(d.pool());
                    self.dataset_mut(op, d)?.snapshots.remove(short);
                    self.log(actor, d.pool(), Action::DestroySnapshot, &full, Some(guid));
                    Ok(())
                }
            };
            out.push(DestroyOutcome {
                snapshot: short.clone(),
                result,
            });
        }
        Ok(out)
    }

    pub(crate) fn destroy_bookmark(
        &mut self,
        actor: Actor,
        bookmark: &VersionName,
    ) -> Result<(), ZfsError> {
        let op = Operation::DestroyBookmark;
        let missing = || {
            let msg = format!("bookmark '{bookmark}' does not exist.");
            err(op, bookmark, ZfsErrorKind::DoesNotExist, &msg)
        };
        if bookmark.kind() != VersionKind::Bookmark {
            return Err(err(
                op,
                bookmark,
                ZfsErrorKind::InvalidArgument,
                "not a bookmark",
            ));
        }
        let ds = self
            .dataset(op, bookmark.dataset())
            .map_err(|_| missing())?;
        let guid = ds.bookmarks.get(bookmark.short()).ok_or_else(missing)?.guid;
        self.next_txg(bookmark.dataset().pool());
        self.dataset_mut(op, bookmark.dataset())?
            .bookmarks
            .remove(bookmark.short());
        self.log(
            actor,
            bookmark.dataset().pool(),
            Action::DestroyBookmark,
            bookmark,
            Some(guid),
        );
        Ok(())
    }

    pub(crate) fn destroy_dataset(
        &mut self,
        actor: Actor,
        d: &DatasetName,
        recursive: bool,
    ) -> Result<(), ZfsError> {
        let op = Operation::DestroyDataset;
        let pool = self.pool(op, d)?;
        let ds = pool.datasets.get(d).ok_or_else(|| dne(op, d))?;
        if d.parent().is_none() {
            let msg = format!("cannot destroy '{d}': operation does not apply to pools");
            return Err(err(op, d, ZfsErrorKind::InvalidArgument, &msg));
        }
        let doomed: Vec<DatasetName> = pool
            .datasets
            .keys()
            .filter(|n| *n == d || d.is_ancestor_of(n))
            .cloned()
            .collect();
        if !recursive && (doomed.len() > 1 || !ds.snapshots.is_empty()) {
            let mut msg = format!(
                "cannot destroy '{d}': filesystem has children\nuse '-r' to destroy the following datasets:"
            );
            for n in doomed.iter().filter(|n| *n != d) {
                msg.push_str(&format!("\n{n}"));
            }
            for s in ds.snapshots.keys() {
                msg.push_str(&format!("\n{d}@{s}"));
            }
            let detail = "filesystem has children".to_owned();
            return Err(err(op, d, ZfsErrorKind::Other { detail }, &msg));
        }
        for n in &doomed {
            let child = &pool.datasets[n];
            if child.receiving {
                return Err(err(
                    op,
                    n,
                    ZfsErrorKind::Busy,
                    &format!("cannot destroy '{n}': dataset is busy"),
                ));
            }
            for (short, s) in &child.snapshots {
                let full = format!("{n}@{short}");
                let sending = self
                    .sending
                    .values()
                    .flatten()
                    .any(|v| v.to_string() == full);
                if !s.holds.is_empty() || sending {
                    let msg = format!("cannot destroy snapshot {full}: dataset is busy");
                    return Err(err(op, full, ZfsErrorKind::Busy, &msg));
                }
            }
        }
        self.next_txg(d.pool());
        // Children first, as `zfs destroy -r` does.
        for n in doomed.iter().rev() {
            if let Some(removed) = self.pool_mut(op, d)?.datasets.remove(n) {
                self.log(
                    actor,
                    d.pool(),
                    Action::DestroyDataset,
                    n,
                    Some(removed.guid),
                );
            }
        }
        Ok(())
    }

    pub(crate) fn rollback(
        &mut self,
        actor: Actor,
        snapshot: &VersionName,
    ) -> Result<(), ZfsError> {
        let op = Operation::Rollback;
        let d = snapshot.dataset();
        let ds = self.dataset(op, d).map_err(|_| dne(op, snapshot))?;
        let target = ds
            .snapshots
            .get(snapshot.short())
            .filter(|_| snapshot.kind() == VersionKind::Snapshot)
            .ok_or_else(|| dne(op, snapshot))?
            .clone();
        if ds.receiving {
            return Err(err(op, d, ZfsErrorKind::Busy, "dataset is busy"));
        }
        let later: Vec<Component> = ds
            .snapshots
            .iter()
            .filter(|(_, s)| s.createtxg > target.createtxg)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &later {
            let full = format!("{d}@{n}");
            if !ds.snapshots[n].holds.is_empty() {
                let msg = format!("cannot destroy snapshot {full}: dataset is busy");
                return Err(err(op, full, ZfsErrorKind::Busy, &msg));
            }
        }
        let later_bookmarks: Vec<Component> = ds
            .bookmarks
            .iter()
            .filter(|(_, b)| b.createtxg > target.createtxg)
            .map(|(n, _)| n.clone())
            .collect();
        self.next_txg(d.pool());
        let ds = self.dataset_mut(op, d)?;
        let mut removed = Vec::new();
        for n in &later {
            if let Some(s) = ds.snapshots.remove(n) {
                removed.push((format!("{d}@{n}"), s.guid, true));
            }
        }
        for n in &later_bookmarks {
            if let Some(b) = ds.bookmarks.remove(n) {
                removed.push((format!("{d}#{n}"), b.guid, false));
            }
        }
        ds.digest = target.digest;
        ds.size_bytes = target.size_bytes;
        ds.dirty_bytes = 0;
        for (name, guid, is_snap) in removed {
            let action = if is_snap {
                Action::DestroySnapshot
            } else {
                Action::DestroyBookmark
            };
            self.log(actor, d.pool(), action, name, Some(guid));
        }
        self.log(
            actor,
            d.pool(),
            Action::Rollback,
            snapshot,
            Some(target.guid),
        );
        Ok(())
    }

    pub(crate) fn create_placeholder(
        &mut self,
        actor: Actor,
        d: &DatasetName,
        encryption: PlaceholderEncryption,
    ) -> Result<(), ZfsError> {
        let op = Operation::CreatePlaceholder;
        let inherited = self.check_create(op, d)?;
        let features = self.features(op, d.pool())?;
        let enc = match encryption {
            PlaceholderEncryption::Off if !features.encryption => {
                let feature = "encryption=off (native encryption)".to_owned();
                return Err(err(
                    op,
                    d,
                    ZfsErrorKind::NotSupported { feature },
                    "invalid property 'encryption'",
                ));
            }
            PlaceholderEncryption::Off => None,
            PlaceholderEncryption::Inherit => inherited,
        };
        if let Some(e) = &enc
            && !self.key_loaded(d.pool(), &e.root)
        {
            let msg = format!(
                "cannot create '{d}': encryption key not loaded for '{}'",
                e.root
            );
            return Err(err(op, d, ZfsErrorKind::KeyNotLoaded, &msg));
        }
        let mut properties = BTreeMap::new();
        properties.insert(PLACEHOLDER_PROPERTY.to_owned(), "on".to_owned());
        properties.insert("mountpoint".to_owned(), "none".to_owned());
        let opts = DatasetOptions {
            properties,
            ..DatasetOptions::default()
        };
        self.insert_dataset(actor, d, &opts, enc)
    }

    // ---- resumable state ---------------------------------------------------------------------

    fn token_of(&self, ds: &Dataset) -> Option<String> {
        let p = ds.partial.as_ref()?;
        Some(token::encode(&TokenFields {
            fromguid: p.from_guid,
            object: TOKEN_OBJECT,
            offset: p.payload_received * self.payload_scale,
            bytes: p.stream_bytes,
            toguid: p.record.guid,
            toname: format!("{}@{}", p.sender_dataset, p.record.name),
            largeblockok: p.flags.large_blocks,
            embedok: p.flags.embedded,
            compressok: p.flags.compressed,
            rawok: p.flags.raw,
        }))
    }

    pub(crate) fn resume_token(&self, d: &DatasetName) -> Result<Option<String>, ZfsError> {
        let ds = self.dataset(Operation::GetProperties, d)?;
        Ok(self.token_of(ds))
    }

    pub(crate) fn abort_receive(&mut self, actor: Actor, d: &DatasetName) -> Result<(), ZfsError> {
        let op = Operation::AbortReceive;
        let features = self.features(op, d.pool())?;
        if !features.resumable_receive {
            let feature = "zfs receive -A (resumable receive)".to_owned();
            return Err(err(
                op,
                d,
                ZfsErrorKind::NotSupported { feature },
                "invalid option 'A'",
            ));
        }
        let ds = self.dataset(op, d)?;
        if ds.receiving {
            return Err(err(op, d, ZfsErrorKind::Busy, "dataset is busy"));
        }
        let Some(partial) = &ds.partial else {
            return Ok(());
        };
        let kind = partial.kind;
        self.next_txg(d.pool());
        match kind {
            PartialKind::NewFs => {
                if let Some(removed) = self.pool_mut(op, d)?.datasets.remove(d) {
                    self.log(actor, d.pool(), Action::AbortReceive, d, None);
                    self.log(
                        actor,
                        d.pool(),
                        Action::DestroyDataset,
                        d,
                        Some(removed.guid),
                    );
                }
            }
            PartialKind::Hidden => {
                self.dataset_mut(op, d)?.partial = None;
                self.log(actor, d.pool(), Action::AbortReceive, d, None);
            }
        }
        Ok(())
    }

    // ---- send --------------------------------------------------------------------------------

    /// Validates a send and builds its stream header (what `zfs send` checks before writing).
    pub(crate) fn plan_send(
        &self,
        op: Operation,
        request: &SendRequest,
    ) -> Result<(Header, Vec<VersionName>), ZfsError> {
        let flags = request.flags;
        match &request.source {
            SendSource::Resume { token } => self.plan_resume(op, token),
            SendSource::Full { to } => self.plan_snapshots(op, None, to, false, flags),
            SendSource::Incremental { from, to } => {
                self.plan_snapshots(op, Some(from), to, false, flags)
            }
            SendSource::IncrementalRange { from, to } => {
                self.plan_snapshots(op, Some(from), to, true, flags)
            }
        }
    }

    fn plan_snapshots(
        &self,
        op: Operation,
        from: Option<&VersionName>,
        to: &VersionName,
        range: bool,
        flags: zferry_core::backend::SendFlags,
    ) -> Result<(Header, Vec<VersionName>), ZfsError> {
        if to.kind() != VersionKind::Snapshot {
            return Err(err(
                op,
                to,
                ZfsErrorKind::InvalidArgument,
                "the send target must be a snapshot",
            ));
        }
        let d = to.dataset();
        let features = self.features(op, d.pool()).map_err(|_| dne(op, to))?;
        let ds = self.dataset(op, d).map_err(|_| dne(op, to))?;
        let to_snap = ds.snapshots.get(to.short()).ok_or_else(|| dne(op, to))?;
        let mut held = vec![to.clone()];
        let base: Option<(Guid, Txg, u64)> = match from {
            None => None,
            Some(f) => {
                if f.dataset() != d {
                    let msg = format!(
                        "cannot send '{to}': incremental source must be in same filesystem"
                    );
                    return Err(err(op, f, ZfsErrorKind::InvalidArgument, &msg));
                }
                if range && f.kind() != VersionKind::Snapshot {
                    let msg = "-I requires a snapshot as the incremental source";
                    return Err(err(op, f, ZfsErrorKind::InvalidArgument, msg));
                }
                let v = self.version(op, f)?;
                let size = match f.kind() {
                    VersionKind::Snapshot => ds.snapshots[f.short()].size_bytes,
                    VersionKind::Bookmark => ds.bookmarks[f.short()].size_bytes,
                };
                if v.createtxg >= to_snap.createtxg {
                    let msg =
                        format!("cannot send '{to}': not an earlier snapshot from the same fs");
                    return Err(err(op, f, ZfsErrorKind::InvalidArgument, &msg));
                }
                if f.kind() == VersionKind::Snapshot {
                    held.push(f.clone());
                }
                Some((v.guid, v.createtxg, size))
            }
        };
        let mut chain: Vec<(&Component, &Snapshot)> = if range {
            let from_txg = base.map_or(Txg(0), |b| b.1);
            ds.snapshots
                .iter()
                .filter(|(_, s)| s.createtxg > from_txg && s.createtxg <= to_snap.createtxg)
                .collect()
        } else {
            vec![(to.short(), to_snap)]
        };
        chain.sort_by_key(|(_, s)| s.createtxg);
        let encrypted = ds.encryption.is_some();
        if flags.raw && !features.encryption {
            let feature = "raw send (zfs send -w)".to_owned();
            return Err(err(
                op,
                to,
                ZfsErrorKind::NotSupported { feature },
                "invalid option 'w'",
            ));
        }
        if encrypted && !flags.raw {
            let root = ds.encryption.as_ref().map(|e| e.root.clone());
            if root.is_some_and(|r| !self.key_loaded(d.pool(), &r)) {
                let msg = format!("warning: cannot send '{to}': source key must be loaded");
                return Err(err(op, to, ZfsErrorKind::KeyNotLoaded, &msg));
            }
            // libzfs gathers properties for -I, -p and -b, and refuses that for encrypted
            // datasets unless the send is raw.
            if range || flags.properties || flags.backup_properties {
                let msg = format!(
                    "cannot send {to}: encrypted dataset {d} may not be sent with properties without the raw flag"
                );
                return Err(err(op, to, ZfsErrorKind::InvalidArgument, &msg));
            }
        }
        // `-w` on an unencrypted dataset is `-Lec`.
        let raw = flags.raw && encrypted;
        let stream_flags = StreamFlags {
            raw,
            properties: flags.properties || flags.backup_properties,
            // OpenZFS marks a stream (and its token) large-block only when the dataset has
            // blocks over 128 KiB, i.e. a recordsize above that.
            large_blocks: (flags.large_blocks || (flags.raw && !encrypted))
                && self.recordsize(d) > RECORDSIZE_DEFAULT,
            compressed: flags.compressed || flags.raw,
            embedded: flags.embedded_data || (flags.raw && !encrypted),
            resuming: false,
            volume: ds.kind == DatasetType::Volume,
        };
        let mut prev_size = base.map_or(0, |b| b.2);
        let mut records = Vec::new();
        for (name, s) in chain {
            let written = s.size_bytes.saturating_sub(prev_size);
            prev_size = s.size_bytes;
            records.push(Record {
                guid: s.guid,
                name: name.to_string(),
                creation: s.creation,
                digest: s.digest,
                size_bytes: s.size_bytes,
                written_bytes: written,
                payload_len: written.div_ceil(self.payload_scale),
            });
            if let Ok(v) = VersionName::new(d.clone(), VersionKind::Snapshot, name.clone()) {
                held.push(v);
            }
        }
        let props = if stream_flags.properties {
            ds.props
                .iter()
                .filter(|(k, (_, src))| {
                    is_user_property(k)
                        && (!flags.backup_properties || *src == PropSource::Received)
                })
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let header = Header {
            flags: stream_flags,
            from_guid: base.map(|b| b.0),
            key_id: if raw {
                ds.encryption.as_ref().map_or(0, |e| e.key_id)
            } else {
                0
            },
            dataset: d.to_string(),
            props,
            resume_offset: 0,
            records,
        };
        Ok((header, held))
    }

    fn plan_resume(
        &self,
        op: Operation,
        text: &str,
    ) -> Result<(Header, Vec<VersionName>), ZfsError> {
        let corrupt = |why: &str| {
            let msg = format!("cannot resume send: {why}");
            err(op, "resume token", ZfsErrorKind::ResumeTokenInvalid, &msg)
        };
        let fields = token::decode(text).map_err(|e| corrupt(&e.to_string()))?;
        let to =
            VersionName::parse(&fields.toname).map_err(|_| corrupt("resume token is corrupt"))?;
        if to.kind() != VersionKind::Snapshot {
            return Err(corrupt("resume token is corrupt"));
        }
        let features = self
            .features(op, to.dataset().pool())
            .map_err(|_| dne(op, &to))?;
        if !features.resumable_send {
            let feature = "zfs send -t (resumable send)".to_owned();
            return Err(err(
                op,
                &to,
                ZfsErrorKind::NotSupported { feature },
                "invalid option 't'",
            ));
        }
        // The token is stale: what it names is gone or replaced (the CLI backend classifies
        // these messages the same way).
        let gone = |what: String| {
            let msg = format!("cannot resume send: {what}");
            err(op, &to, ZfsErrorKind::ResumeTokenInvalid, &msg)
        };
        let ds = self
            .dataset(op, to.dataset())
            .map_err(|_| gone(format!("'{to}' used in the initial send no longer exists")))?;
        let snap = ds
            .snapshots
            .get(to.short())
            .ok_or_else(|| gone(format!("'{to}' used in the initial send no longer exists")))?;
        if snap.guid != fields.toguid {
            return Err(gone(format!(
                "'{to}' is no longer the same snapshot used in the initial send"
            )));
        }
        let base_size = match fields.fromguid {
            None => 0,
            Some(g) => {
                let s = ds
                    .snapshots
                    .values()
                    .find(|s| s.guid == g)
                    .map(|s| s.size_bytes);
                let b = ds
                    .bookmarks
                    .values()
                    .find(|b| b.guid == g)
                    .map(|b| b.size_bytes);
                s.or(b).ok_or_else(|| {
                    let msg = format!(
                        "cannot resume send: incremental source {:#x} no longer exists",
                        g.0
                    );
                    err(op, &to, ZfsErrorKind::IncrementalSourceMismatch, &msg)
                })?
            }
        };
        if fields.rawok && ds.encryption.is_none() {
            return Err(corrupt(
                "resume token is corrupt (raw send of an unencrypted dataset)",
            ));
        }
        if ds.encryption.is_some() && !fields.rawok {
            let root = ds.encryption.as_ref().map(|e| e.root.clone());
            if root.is_some_and(|r| !self.key_loaded(to.dataset().pool(), &r)) {
                let msg = format!("cannot send '{to}': encryption key not loaded");
                return Err(err(op, &to, ZfsErrorKind::KeyNotLoaded, &msg));
            }
        }
        let written = snap.size_bytes.saturating_sub(base_size);
        let payload_len = written.div_ceil(self.payload_scale);
        let resume_offset = fields.offset / self.payload_scale;
        if fields.offset % self.payload_scale != 0 || resume_offset > payload_len {
            return Err(corrupt("resume token offset is beyond the stream"));
        }
        let header = Header {
            flags: StreamFlags {
                raw: fields.rawok,
                properties: false,
                large_blocks: fields.largeblockok,
                compressed: fields.compressok,
                embedded: fields.embedok,
                resuming: true,
                volume: ds.kind == DatasetType::Volume,
            },
            from_guid: fields.fromguid,
            key_id: if fields.rawok {
                ds.encryption.as_ref().map_or(0, |e| e.key_id)
            } else {
                0
            },
            dataset: to.dataset().to_string(),
            props: Vec::new(),
            resume_offset,
            records: vec![Record {
                guid: snap.guid,
                name: to.short().to_string(),
                creation: snap.creation,
                digest: snap.digest,
                size_bytes: snap.size_bytes,
                written_bytes: written,
                payload_len,
            }],
        };
        Ok((header, vec![to]))
    }

    pub(crate) fn start_send(&mut self, held: Vec<VersionName>) -> u64 {
        let id = self.next_send_id;
        self.next_send_id += 1;
        self.sending.insert(id, held);
        id
    }

    pub(crate) fn end_send(&mut self, id: u64) {
        self.sending.remove(&id);
    }

    // ---- receive -----------------------------------------------------------------------------

    /// The checks `zfs receive` makes once it has the stream's header, and the setup of the
    /// receive (a new dataset is created inconsistent).
    pub(crate) fn begin_receive(
        &mut self,
        actor: Actor,
        request: &zferry_core::backend::ReceiveRequest,
        header: Header,
    ) -> Result<ReceiveCtx, ZfsError> {
        let op = Operation::Receive;
        let d = &request.dataset;
        let resuming = header.flags.resuming;
        let raw = header.flags.raw;
        let wants_newfs = header.from_guid.is_none() && !resuming;
        let prefix = if resuming {
            "cannot receive resume stream"
        } else if wants_newfs {
            "cannot receive new filesystem stream"
        } else {
            "cannot receive incremental stream"
        };
        let fail = |kind: ZfsErrorKind, why: &str| err(op, d, kind, &format!("{prefix}: {why}"));
        let features = self.features(op, d.pool()).map_err(|_| dne(op, d))?;
        if request.resumable && !features.resumable_receive {
            let feature = "zfs receive -s (resumable receive)".to_owned();
            return Err(fail(
                ZfsErrorKind::NotSupported { feature },
                "invalid option 's'",
            ));
        }
        if raw && !features.encryption {
            let feature = "raw receive (native encryption)".to_owned();
            return Err(fail(
                ZfsErrorKind::NotSupported { feature },
                "pool must be upgraded to receive this stream.",
            ));
        }
        let exists = self.pool(op, d)?.datasets.contains_key(d);
        let mut kind = PartialKind::Hidden;
        let mut created = false;
        if exists {
            let ds = self.dataset(op, d)?;
            if wants_newfs {
                if !request.force {
                    let why = format!("destination '{d}' exists\nmust specify -F to overwrite it");
                    return Err(fail(ZfsErrorKind::AlreadyExists, &why));
                }
                if let Some((first, _)) = ds.snapshots.iter().min_by_key(|(_, s)| s.createtxg) {
                    let why = format!(
                        "destination has snapshots (eg. {d}@{first})\nmust destroy them to overwrite it"
                    );
                    return Err(fail(ZfsErrorKind::AlreadyExists, &why));
                }
            }
            let encrypted = ds.encryption.is_some();
            if !wants_newfs && !encrypted && raw {
                let why = "cannot perform raw receive on top of existing unencrypted dataset";
                return Err(fail(
                    ZfsErrorKind::Other {
                        detail: why.to_owned(),
                    },
                    why,
                ));
            }
            if wants_newfs && request.force && (raw || encrypted) {
                let why = "zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one";
                return Err(fail(ZfsErrorKind::EncryptedOverwriteRefused, why));
            }
            if ds.receiving {
                return Err(fail(ZfsErrorKind::Busy, "dataset is busy"));
            }
            if resuming {
                let stale = |why: &str| {
                    let kind = ZfsErrorKind::ResumeTokenInvalid;
                    fail(
                        kind,
                        &format!("kernel modules must be upgraded to receive this stream. ({why})"),
                    )
                };
                let Some(p) = &ds.partial else {
                    return Err(stale("the destination has no partial receive state"));
                };
                let r = &header.records[0];
                if p.record.guid != r.guid || p.from_guid != header.from_guid {
                    return Err(stale(
                        "the stream is not the one the partial state belongs to",
                    ));
                }
                if p.payload_received != header.resume_offset {
                    return Err(stale(
                        "the stream does not start where the partial state ends",
                    ));
                }
                kind = p.kind;
            } else {
                if ds.partial.is_some() {
                    let why = format!(
                        "destination {d} contains partially-complete state from \"zfs receive -s\"."
                    );
                    return Err(fail(ZfsErrorKind::ResumeStatePresent, &why));
                }
                if !raw
                    && let Some(e) = &ds.encryption
                    && !self.key_loaded(d.pool(), &e.root)
                {
                    return Err(fail(
                        ZfsErrorKind::KeyNotLoaded,
                        "inherited key must be loaded",
                    ));
                }
                if raw
                    && let Some(e) = &ds.encryption
                    && e.key_id != header.key_id
                {
                    let why = "encryption key does not match existing key";
                    return Err(fail(
                        ZfsErrorKind::Other {
                            detail: why.to_owned(),
                        },
                        why,
                    ));
                }
            }
        } else {
            if !wants_newfs {
                return Err(fail(
                    ZfsErrorKind::DoesNotExist,
                    &format!("destination '{d}' does not exist"),
                ));
            }
            let Some(parent) = d.parent() else {
                return Err(fail(
                    ZfsErrorKind::DoesNotExist,
                    &format!("destination '{d}' does not exist"),
                ));
            };
            let parent_ds = self.dataset(op, &parent)?;
            if parent_ds.kind == DatasetType::Volume {
                return Err(fail(
                    ZfsErrorKind::InvalidArgument,
                    &format!("parent '{parent}' is not a filesystem"),
                ));
            }
            let inherited = parent_ds.encryption.clone();
            if !raw
                && let Some(e) = &inherited
                && !self.key_loaded(d.pool(), &e.root)
            {
                return Err(fail(
                    ZfsErrorKind::KeyNotLoaded,
                    "inherited key must be loaded",
                ));
            }
            let guid = self.guid();
            let creation = (self.clock)();
            let txg = self.next_txg(d.pool());
            let encryption = if raw {
                Some(Encryption {
                    root: d.clone(),
                    key_id: header.key_id,
                })
            } else {
                inherited
            };
            let ds_type = if header.flags.volume {
                DatasetType::Volume
            } else {
                DatasetType::Filesystem
            };
            let mut ds = new_dataset(ds_type, guid, txg, creation, encryption);
            ds.inconsistent = true;
            self.pool_mut(op, d)?.datasets.insert(d.clone(), ds);
            self.log(actor, d.pool(), Action::CreateDataset, d, Some(guid));
            kind = PartialKind::NewFs;
            created = true;
        }
        let stream_bytes = if resuming {
            self.dataset(op, d)?
                .partial
                .as_ref()
                .map_or(0, |p| p.stream_bytes)
        } else {
            0
        };
        let ds = self.dataset_mut(op, d)?;
        ds.receiving = true;
        Ok(ReceiveCtx {
            actor,
            dataset: d.clone(),
            to: request.to.clone(),
            force: request.force,
            resumable: request.resumable || resuming,
            pos: header.resume_offset,
            header,
            kind,
            index: 0,
            reserved_payload: 0,
            stream_bytes,
            created_dataset: created,
            n_committed: 0,
        })
    }

    /// Checks a record before its payload is accepted (per-substream checks of the kernel).
    pub(crate) fn check_record(&self, ctx: &ReceiveCtx) -> Result<RecordStart, ZfsError> {
        let op = Operation::Receive;
        let d = &ctx.dataset;
        let ds = self.dataset(op, d)?;
        let record = &ctx.header.records[ctx.index];
        if ctx.header.flags.resuming {
            return Ok(RecordStart::Receive);
        }
        let from = if ctx.index == 0 {
            ctx.header.from_guid
        } else {
            Some(ctx.header.records[ctx.index - 1].guid)
        };
        let prefix = if from.is_some() {
            "cannot receive incremental stream"
        } else {
            "cannot receive new filesystem stream"
        };
        let fail = |kind: ZfsErrorKind, why: &str| err(op, d, kind, &format!("{prefix}: {why}"));
        let name = self.record_target(ctx);
        if ds.snapshots.contains_key(&name) {
            // libzfs consumes a stream whose snapshot the destination already has.
            if ds.snapshot_by_guid(record.guid).is_some() {
                return Ok(RecordStart::Skip);
            }
            let why = format!("cannot restore to {d}@{name}: destination already exists");
            return Err(fail(ZfsErrorKind::AlreadyExists, &why));
        }
        if let Some(from) = from {
            let Some((from_name, from_snap)) = ds.snapshot_by_guid(from) else {
                let why = format!("most recent snapshot of {d} does not\nmatch incremental source");
                return Err(fail(ZfsErrorKind::IncrementalSourceMismatch, &why));
            };
            let newest = ds.newest_snapshot().map(|(n, _)| n.clone());
            if ctx.force {
                for (n, s) in &ds.snapshots {
                    if s.createtxg > from_snap.createtxg && !s.holds.is_empty() {
                        let why = format!("cannot destroy snapshot {d}@{n}: dataset is busy");
                        return Err(fail(ZfsErrorKind::Busy, &why));
                    }
                }
            } else if ds.modified_since(from_snap)
                || (ctx.header.flags.raw && newest.as_ref() != Some(from_name))
            {
                let why = format!("destination {d} has been modified\nsince most recent snapshot");
                return Err(fail(ZfsErrorKind::ModifiedSinceSnapshot, &why));
            }
        }
        Ok(RecordStart::Receive)
    }

    /// The name a record gets on the receiver: its name in the stream, as `zfs recv fs` gives
    /// it (the CLI backend receives into the filesystem, not `fs@to`, so that `-I` streams
    /// work); the backend then checks that `to` arrived with the expected GUID.
    fn record_target(&self, ctx: &ReceiveCtx) -> Component {
        let name = &ctx.header.records[ctx.index].name;
        Component::parse(name).unwrap_or_else(|_| ctx.to.clone())
    }

    /// Accepts up to `n` payload bytes of the current record; returns how many fit the pool.
    pub(crate) fn accept_payload(&mut self, ctx: &mut ReceiveCtx, n: u64) -> u64 {
        let scale = self.payload_scale;
        let Some(pool) = self.pools.get_mut(ctx.dataset.pool()) else {
            return 0;
        };
        let free = pool.capacity_bytes.saturating_sub(pool.used_bytes(scale));
        let fits = (free / scale).min(n);
        pool.reserved_bytes += fits * scale;
        ctx.reserved_payload += fits;
        fits
    }

    fn unreserve(&mut self, ctx: &mut ReceiveCtx) {
        if let Some(pool) = self.pools.get_mut(ctx.dataset.pool()) {
            pool.reserved_bytes = pool
                .reserved_bytes
                .saturating_sub(ctx.reserved_payload * self.payload_scale);
        }
        ctx.reserved_payload = 0;
    }

    /// Commits the current record as a snapshot of the target.
    pub(crate) fn commit_record(
        &mut self,
        ctx: &mut ReceiveCtx,
        skip: bool,
    ) -> Result<(), ZfsError> {
        let op = Operation::Receive;
        self.unreserve(ctx);
        let d = ctx.dataset.clone();
        let record = ctx.header.records[ctx.index].clone();
        let name = self.record_target(ctx);
        let first = ctx.n_committed == 0;
        ctx.index += 1;
        ctx.pos = 0;
        if skip {
            return Ok(());
        }
        let from = if ctx.index == 1 {
            ctx.header.from_guid
        } else {
            Some(ctx.header.records[ctx.index - 2].guid)
        };
        let ds = self.dataset(op, &d)?;
        let mut doomed = Vec::new();
        if let Some(from) = from {
            let Some((_, from_snap)) = ds.snapshot_by_guid(from) else {
                let why = format!(
                    "cannot receive incremental stream: most recent snapshot of {d} does not\nmatch incremental source"
                );
                return Err(err(op, &d, ZfsErrorKind::IncrementalSourceMismatch, &why));
            };
            if ctx.force {
                doomed = ds
                    .snapshots
                    .iter()
                    .filter(|(_, s)| s.createtxg > from_snap.createtxg)
                    .map(|(n, s)| (n.clone(), s.guid, !s.holds.is_empty()))
                    .collect();
                if let Some((n, _, _)) = doomed.iter().find(|(_, _, held)| *held) {
                    let why = format!(
                        "cannot receive incremental stream: cannot destroy snapshot {d}@{n}: dataset is busy"
                    );
                    return Err(err(op, &d, ZfsErrorKind::Busy, &why));
                }
            } else if ds.modified_since(from_snap) {
                let why = format!(
                    "cannot receive incremental stream: destination {d} has been modified\nsince most recent snapshot"
                );
                return Err(err(op, &d, ZfsErrorKind::ModifiedSinceSnapshot, &why));
            }
        }
        let txg = self.next_txg(d.pool());
        let ds = self.dataset_mut(op, &d)?;
        for (n, _, _) in &doomed {
            ds.snapshots.remove(n);
        }
        ds.snapshots.insert(
            name.clone(),
            Snapshot {
                guid: record.guid,
                createtxg: txg,
                creation: record.creation,
                digest: record.digest,
                size_bytes: record.size_bytes,
                holds: BTreeSet::new(),
            },
        );
        ds.digest = record.digest;
        ds.size_bytes = record.size_bytes;
        ds.dirty_bytes = 0;
        ds.inconsistent = false;
        ds.partial = None;
        if first {
            for (k, v) in &ctx.header.props {
                ds.props
                    .insert(k.clone(), (v.clone(), PropSource::Received));
            }
        }
        for (n, guid, _) in doomed {
            self.log(
                ctx.actor,
                d.pool(),
                Action::DestroySnapshot,
                format!("{d}@{n}"),
                Some(guid),
            );
        }
        self.log(
            ctx.actor,
            d.pool(),
            Action::Receive,
            format!("{d}@{name}"),
            Some(record.guid),
        );
        ctx.n_committed += 1;
        Ok(())
    }

    /// Applies `-o` and `-x` after a successful receive.
    pub(crate) fn apply_overrides(
        &mut self,
        ctx: &ReceiveCtx,
        request: &zferry_core::backend::ReceiveRequest,
    ) {
        if let Some(ds) = self
            .pools
            .get_mut(ctx.dataset.pool())
            .and_then(|p| p.datasets.get_mut(&ctx.dataset))
        {
            for p in &request.properties_inherit {
                if ds
                    .props
                    .get(p)
                    .is_some_and(|(_, s)| *s == PropSource::Received)
                {
                    ds.props.remove(p);
                }
            }
            for (k, v) in &request.properties_override {
                ds.props.insert(k.clone(), (v.clone(), PropSource::Local));
            }
        }
    }

    /// Ends a receive that succeeded.
    pub(crate) fn finish_receive(&mut self, ctx: &mut ReceiveCtx) {
        self.unreserve(ctx);
        if let Some(ds) = self
            .pools
            .get_mut(ctx.dataset.pool())
            .and_then(|p| p.datasets.get_mut(&ctx.dataset))
        {
            ds.receiving = false;
        }
    }

    /// Ends a receive that broke off: keeps resumable state where ZFS would, discards the rest.
    /// Returns the token when state was kept.
    pub(crate) fn interrupt_receive(&mut self, ctx: &mut ReceiveCtx) -> Option<String> {
        self.unreserve(ctx);
        let d = ctx.dataset.clone();
        let pool_name = d.pool().to_owned();
        let in_record = ctx.index < ctx.header.records.len();
        let keep = ctx.resumable && in_record;
        let ds = self
            .pools
            .get_mut(&pool_name)
            .and_then(|p| p.datasets.get_mut(&d))?;
        ds.receiving = false;
        if keep {
            let record = ctx.header.records[ctx.index].clone();
            let from_guid = if ctx.index == 0 {
                ctx.header.from_guid
            } else {
                Some(ctx.header.records[ctx.index - 1].guid)
            };
            let was_resuming = ctx.header.flags.resuming && ctx.index == 0;
            let kind = if was_resuming {
                ds.partial.as_ref().map_or(ctx.kind, |p| p.kind)
            } else if ctx.created_dataset && ctx.n_committed == 0 {
                PartialKind::NewFs
            } else {
                PartialKind::Hidden
            };
            let payload_received = ctx.pos;
            let partial = Partial {
                kind,
                from_guid,
                record,
                sender_dataset: ctx.header.dataset.clone(),
                flags: ctx.header.flags,
                payload_received,
                stream_bytes: ctx.stream_bytes,
            };
            ds.partial = Some(partial);
            let token = self.token_of(&self.pools[&pool_name].datasets[&d]);
            self.next_txg(&pool_name);
            self.log(ctx.actor, &pool_name, Action::ReceivePartial, &d, None);
            return token;
        }
        // Not resumable: nothing of the broken snapshot stays.
        if ctx.header.flags.resuming {
            ds.partial = None;
        }
        if ctx.created_dataset && ctx.n_committed == 0 {
            let guid = ds.guid;
            if let Some(p) = self.pools.get_mut(&pool_name) {
                p.datasets.remove(&d);
            }
            self.log(
                ctx.actor,
                &pool_name,
                Action::DestroyDataset,
                &d,
                Some(guid),
            );
        }
        None
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

/// What to do with a record of a receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordStart {
    /// Receive it.
    Receive,
    /// The destination already has it: consume and ignore.
    Skip,
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
