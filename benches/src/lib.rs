//! Criterion benchmarks of zferry's hot paths, and the fixtures they share.
//!
//! The benchmarks live in `benches/`; this library holds the deterministic generators of large
//! inputs (many filesystems, many snapshots) so that every benchmark measures the same data.
//!
//! What it never does: assert on timings. Figures are written down in the README with the
//! command that produced them.
#![deny(missing_docs)]

pub mod queue_fixtures;

use zferry_core::name::Component;
use zferry_core::version::{Guid, Txg, Version};

/// One filesystem's versions on both sides.
#[derive(Debug, Clone)]
pub struct FilesystemPair {
    /// The sender's versions, oldest first.
    pub sender: Vec<Version>,
    /// The receiver's versions, oldest first.
    pub receiver: Vec<Version>,
}

/// A filesystem whose sender has `n_snapshots` hourly snapshots (zrepl-style names) and whose
/// receiver has all but the newest `n_new`. GUIDs come from a fixed generator seeded by `seed`,
/// so every run plans the same data.
pub fn filesystem_pair(seed: u64, n_snapshots: usize, n_new: usize) -> FilesystemPair {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next_guid = move || {
        // xorshift64*: deterministic, fast, good enough to make GUIDs distinct in practice.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        Guid(state.wrapping_mul(0x2545_F491_4F6C_DD1D))
    };
    let mut sender = Vec::with_capacity(n_snapshots);
    let mut receiver = Vec::with_capacity(n_snapshots);
    for i in 0..n_snapshots {
        let name = Component::parse(&format!("zrepl_{i:08}_000000_000")).unwrap_or_else(|e| {
            unreachable!("generated names are valid: {e}");
        });
        let guid = next_guid();
        let creation = 1_700_000_000 + 3600 * i as i64;
        sender.push(Version::snapshot(
            name.clone(),
            guid,
            Txg(1000 + 7 * i as u64),
            creation,
        ));
        if i + n_new < n_snapshots {
            receiver.push(Version::snapshot(
                name,
                guid,
                Txg(500 + 3 * i as u64),
                creation,
            ));
        }
    }
    FilesystemPair { sender, receiver }
}

/// `n_filesystems` pairs as made by [`filesystem_pair`], each with its own GUIDs.
pub fn many_filesystems(
    n_filesystems: usize,
    n_snapshots: usize,
    n_new: usize,
) -> Vec<FilesystemPair> {
    (0..n_filesystems)
        .map(|i| filesystem_pair(i as u64 + 1, n_snapshots, n_new))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_have_the_promised_shape() {
        let pair = filesystem_pair(1, 100, 5);
        assert_eq!(pair.sender.len(), 100);
        assert_eq!(pair.receiver.len(), 95);
        assert_eq!(pair.receiver[94].guid, pair.sender[94].guid);
        let mut guids: Vec<Guid> = pair.sender.iter().map(|v| v.guid).collect();
        guids.sort();
        guids.dedup();
        assert_eq!(guids.len(), 100, "GUIDs are distinct");
        assert_eq!(
            filesystem_pair(1, 10, 1).sender,
            filesystem_pair(1, 10, 1).sender
        );
    }
}
