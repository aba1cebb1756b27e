//! The replication platform suite (zrepl's `Replication*` platform tests) against the
//! simulated ZFS (`zferry-sim`), under tokio's paused clock.
//!
//! `ZFERRY_REPLICATION_FILTER=name` runs only the cases whose name contains `name`.

mod common;

use std::sync::Arc;

use common::SimHarness;
use zferry_sim_tests::replication_suite;

#[tokio::test(start_paused = true)]
async fn every_replication_case_passes_on_the_simulated_zfs() {
    let filter = std::env::var("ZFERRY_REPLICATION_FILTER").ok();
    let report = replication_suite::run(Arc::new(SimHarness::new()), filter.as_deref()).await;
    assert!(!report.outcomes.is_empty(), "no case ran");
    assert_eq!(
        report.n_failed(),
        0,
        "{}\n{}",
        report.summary_line(),
        report.failures()
    );
}
