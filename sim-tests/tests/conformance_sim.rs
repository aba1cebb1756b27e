//! The conformance suite against the simulated ZFS (`zferry-sim`), under tokio's paused clock.
//!
//! `ZFERRY_CONFORMANCE_FILTER=name` runs only the cases whose name contains `name`.

mod common;

use std::sync::Arc;

use common::SimHarness;
use zferry_sim_tests::conformance;

/// Cases where the simulated ZFS still disagrees with OpenZFS 2.3.2 (sim-tests/CONFORMANCE.md
/// has the details), with a piece of the failure message. Each must still fail on the sim in
/// exactly that way: once the sim is fixed the case passes and this test fails until the entry
/// is removed, so the list cannot go stale and no other failure hides behind it.
const KNOWN_SIM_DISAGREEMENTS: &[(&str, &str)] = &[];

#[tokio::test(start_paused = true)]
async fn every_case_passes_on_the_simulated_zfs() {
    let filter = std::env::var("ZFERRY_CONFORMANCE_FILTER").ok();
    let report = conformance::run(Arc::new(SimHarness::new()), filter.as_deref()).await;
    assert!(!report.outcomes.is_empty(), "no case ran");
    let mut unexpected = Vec::new();
    for outcome in &report.outcomes {
        let known = KNOWN_SIM_DISAGREEMENTS
            .iter()
            .find(|(name, _)| *name == outcome.name);
        match (&outcome.result, known) {
            (Ok(()), None) => {}
            (Err(message), Some((_, text))) if message.contains(text) => {}
            (Ok(()), Some(_)) => unexpected.push(format!(
                "{}: passes now; remove it from KNOWN_SIM_DISAGREEMENTS and CONFORMANCE.md",
                outcome.name
            )),
            (Err(message), _) => unexpected.push(format!("{}: {message}", outcome.name)),
        }
    }
    assert!(
        unexpected.is_empty(),
        "{}\nunexpected:\n{}",
        report.summary_line(),
        unexpected.join("\n")
    );
}
