//! Deterministic inputs for the step-queue benchmark: many filesystems with a realistic mix of
//! planning work, steps due at shared snapshot times, and retries.

use zferry_core::name::DatasetName;
use zferry_core::queue::{Item, QueueEntry, StepDate};

/// The number of entries the queue benchmark orders and drains.
pub const QUEUE_BENCH_LEN: usize = 100_000;

/// The seed of the queue benchmark's generator, fixed so that every run measures the same data.
pub const QUEUE_BENCH_SEED: u64 = 0x5EED_0F9E_0E00;

/// A splitmix64 generator: small, seeded, and the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; the slight modulo bias does not matter here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// `n` entries for distinct filesystems `tank/hNNN/fsNNNNNN`, in a shuffled order: 5 % planning,
/// 80 % steps due at one of 96 snapshot times (a day of 15-minute snapshots, so many ties that
/// only the name breaks), 15 % retries with 0 to 4 errors.
pub fn queue_entries(n: usize, seed: u64) -> Vec<QueueEntry> {
    let mut rng = SplitMix64::new(seed);
    let mut entries: Vec<QueueEntry> = (0..n)
        .map(|i| {
            let path = format!("tank/h{:03}/fs{i:06}", i % 512);
            let filesystem = match DatasetName::parse(&path) {
                Ok(name) => name,
                Err(e) => panic!("generated an invalid name: {e}"),
            };
            let item = match rng.below(100) {
                0..5 => Item::PLANNING,
                5..85 => {
                    let date = 1_700_000_000 + 900 * rng.below(96) as i64;
                    Item::Ready {
                        next_step_date: StepDate::from_unix(date),
                    }
                }
                _ => Item::Retry {
                    n_errors: rng.below(5) as u32,
                },
            };
            QueueEntry { item, filesystem }
        })
        .collect();
    for i in (1..entries.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        entries.swap(i, j);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_reproducible_and_mixed() {
        let a = queue_entries(1000, 7);
        assert_eq!(a, queue_entries(1000, 7));
        assert_ne!(a, queue_entries(1000, 8));
        let retries = a
            .iter()
            .filter(|e| matches!(e.item, Item::Retry { .. }))
            .count();
        let planning = a.iter().filter(|e| e.item == Item::PLANNING).count();
        assert!((100..200).contains(&retries), "{retries} retries");
        assert!((20..80).contains(&planning), "{planning} planning");
        let mut names: Vec<_> = a.iter().map(|e| &e.filesystem).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 1000);
    }
}
