//! The replication platform suite: a counterpart of every `Replication*` platform test of zrepl
//! (reference 6.1), written once against the conformance [`Harness`] and run on the simulated
//! ZFS (`tests/replication_sim.rs`, every `cargo test`) and on real OpenZFS (the
//! `zferry-conformance` binary in the VM, `scripts/real-zfs-test.sh`).
//!
//! Each case puts sender and receiver datasets under its own fresh root on one pool, as zrepl's
//! tests do, runs the real sender and receiver endpoints and the real replication driver (one
//! attempt per invocation, like zrepl's `replicationInvocation.Do`), and asserts the exact state
//! left on the pool: snapshots, bookmarks by name, hold tags, the driver's report and its error
//! texts. Faults that zrepl injects by code go through the wrapper endpoints of [`faults`].
//! `sim-tests/REPLICATION_SUITE.md` maps each zrepl test to its case.
//!
//! Where the simulated ZFS and OpenZFS disagree, OpenZFS is right.

use std::sync::Arc;
use std::time::Duration;

use crate::conformance::{self, Case, Harness, Report};

mod cases_incremental;
mod cases_initial;
mod cases_placeholder;
mod cases_resume;
pub mod faults;
pub mod setup;

/// Every case of the suite, in the order they run.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend_from_slice(cases_initial::CASES);
    all.extend_from_slice(cases_incremental::CASES);
    all.extend_from_slice(cases_resume::CASES);
    all.extend_from_slice(cases_placeholder::CASES);
    all
}

/// How many cases run at the same time. On real ZFS in the VM a `zfs` command takes ~0.3 s,
/// mostly waiting for a txg to sync, and a case issues some fifty of them per replication run:
/// one at a time the suite takes over ten minutes.
pub const CASES_AT_ONCE: usize = 10;

/// How long one case may take, with the others running beside it.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs the cases whose name contains `filter` (all without one), as
/// [`conformance::run`] does but [`CASES_AT_ONCE`] at a time; the output starts with
/// `replication: <harness>`.
pub async fn run(harness: Arc<dyn Harness>, filter: Option<&str>) -> Report {
    conformance::run_suite(
        "replication",
        harness,
        &cases(),
        filter,
        CASES_AT_ONCE,
        CASE_TIMEOUT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_every_zrepl_test_is_there() {
        let all = cases();
        let names: std::collections::BTreeSet<_> = all.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), all.len(), "duplicate case names");
        assert!(all.len() >= 20, "only {} cases", all.len());
    }
}
