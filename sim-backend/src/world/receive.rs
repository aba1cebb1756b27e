//! `zfs receive`: its checks, its commits, and the resumable state a broken stream leaves.

use super::*;

impl World {
    pub(super) fn token_of(&self, ds: &Dataset) -> Option<String> {
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
    pub(super) fn record_target(&self, ctx: &ReceiveCtx) -> Component {
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

    pub(super) fn unreserve(&mut self, ctx: &mut ReceiveCtx) {
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
}

/// What to do with a record of a receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordStart {
    /// Receive it.
    Receive,
    /// The destination already has it: consume and ignore.
    Skip,
}
