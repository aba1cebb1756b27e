//! Listing datasets and versions, and `zfs get`/`zfs set` with ZFS's inheritance.

use super::*;

impl World {
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

    pub(super) fn property(
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
    pub(super) fn user_property(
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

    pub(super) fn inherited(&self, mut at: Option<DatasetName>, name: &str) -> Option<Property> {
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

    pub(super) fn inheritable(&self, d: &DatasetName, name: &str) -> Option<Property> {
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
    pub(super) fn mountpoint(&self, d: &DatasetName) -> Property {
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

    pub(super) fn recordsize(&self, d: &DatasetName) -> u64 {
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
}
