//! A `zfs list -t all`-style dump of a pool, deterministic so that test failures can show it.

use std::fmt;

use crate::world::World;

/// The text of a pool dump; `Debug` prints it as lines, so `assert!(.., "{:?}", dump)` reads
/// well.
#[derive(Clone, PartialEq, Eq)]
pub struct PoolDump(pub String);

impl fmt::Debug for PoolDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\n")?;
        f.write_str(&self.0)
    }
}

impl fmt::Display for PoolDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn dump(w: &World, pool: &str) -> PoolDump {
    let Some(p) = w.pools.get(pool) else {
        return PoolDump(format!("pool {pool}: does not exist\n"));
    };
    let mut out = format!(
        "pool {pool} txg={} capacity={} used={} filler={}\n",
        p.txg,
        p.capacity_bytes,
        p.used_bytes(w.payload_scale),
        p.filler_bytes
    );
    let mut names: Vec<_> = p.datasets.keys().collect();
    names.sort_by(|a, b| a.components().cmp(b.components()));
    for name in names {
        let d = &p.datasets[name];
        let mut line = format!(
            "{name}\t{:?} guid={} createtxg={} digest={:016x} size={} dirty={}",
            d.kind, d.guid.0, d.createtxg.0, d.digest, d.size_bytes, d.dirty_bytes
        );
        if let Some(e) = &d.encryption {
            let loaded = p.datasets.get(&e.root).is_some_and(|r| r.key_loaded);
            line.push_str(&format!(
                " encryptionroot={} keystatus={}",
                e.root,
                if loaded { "available" } else { "unavailable" }
            ));
        }
        if d.inconsistent {
            line.push_str(" inconsistent");
        }
        if d.receiving {
            line.push_str(" receiving");
        }
        if let Some(partial) = &d.partial {
            line.push_str(&format!(
                " partial={:?}(to={}@{} guid={} payload={}/{})",
                partial.kind,
                partial.sender_dataset,
                partial.record.name,
                partial.record.guid.0,
                partial.payload_received,
                partial.record.payload_len
            ));
        }
        for (k, (v, src)) in &d.props {
            line.push_str(&format!(" {k}={v:?}({src:?})"));
        }
        out.push_str(&line);
        out.push('\n');
        let mut versions: Vec<(u64, String)> = Vec::new();
        for (n, s) in &d.snapshots {
            let holds: Vec<&str> = s.holds.iter().map(String::as_str).collect();
            versions.push((
                s.createtxg.0 * 2 + 1,
                format!(
                    "{name}@{n}\tsnapshot guid={} createtxg={} creation={} digest={:016x} size={} holds={holds:?}",
                    s.guid.0, s.createtxg.0, s.creation, s.digest, s.size_bytes
                ),
            ));
        }
        for (n, b) in &d.bookmarks {
            versions.push((
                b.createtxg.0 * 2,
                format!(
                    "{name}#{n}\tbookmark guid={} createtxg={} creation={}",
                    b.guid.0, b.createtxg.0, b.creation
                ),
            ));
        }
        versions.sort();
        for (_, v) in versions {
            out.push_str(&v);
            out.push('\n');
        }
    }
    PoolDump(out)
}
