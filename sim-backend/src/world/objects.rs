//! Snapshots, bookmarks, holds, destroys, rollback and placeholders.

use super::*;

impl World {
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

    pub(super) fn send_busy(&self, snapshot: &VersionName) -> bool {
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
}
