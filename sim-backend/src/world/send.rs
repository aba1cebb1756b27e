//! What `zfs send` checks before it writes, and the header of the stream it writes.

use super::*;

impl World {
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

    pub(super) fn plan_snapshots(
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

    pub(super) fn plan_resume(
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
}
