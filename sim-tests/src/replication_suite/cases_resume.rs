//! Interrupted steps: a full send cut after 1 MiB of 4 MiB, resumed run after run under each
//! protection, and step holds of an interrupted step when the guarantee changes.

use zferry_core::backend::ZfsErrorKind;
use zferry_core::endpoint::{Guarantee, Protection};
use zferry_core::engine::replication::report::AttemptState;

use super::faults::SenderFault;
use super::setup::{
    Pair, RECEIVER_JOB, SENDER_JOB, abstractions, cursor, destroy_snapshot, last_received,
    snapshot_names, sorted, step_hold,
};
use crate::conformance::check::{ensure, ensure_eq};
use crate::conformance::util::{MIB, guid, snap, snapshots, write_and_snapshot};
use crate::conformance::{CaseFailure, Harness, case_table};

case_table!(
    replication_is_resumable_full_send_both_guarantee_resumability,
    replication_is_resumable_full_send_initial_resumability_incremental_incremental,
    replication_is_resumable_full_send_initial_incremental_incremental_incremental,
    replication_incremental_destroys_step_holds_iff_incremental_step_holds_are_disabled_but_step_holds_exist,
);

/// zrepl's data size of the interrupted snapshot.
const DATA_BYTES: u64 = 4 * MIB;

/// Where zrepl's `PartialSender` cuts every stream.
const CUT_BYTES: u64 = MIB;

/// zrepl's loop: runs `i = 2..10`.
const RUNS_MAX: u32 = 8;

/// zrepl's `implReplicationIsResumableFullSend`: `@1` with 4 MiB, every stream cut after
/// 1 MiB; each run is followed by an attempt to destroy the sender's `@1`, and the first two
/// by snapshots `@2` and `@3`; runs until a run has no step. Returns the receiver's snapshots
/// and the layout.
async fn resumable_full_send(
    h: &dyn Harness,
    key: &str,
    protection: Protection,
    expect_busy: bool,
) -> Result<(Pair, Vec<String>), CaseFailure> {
    let pair = Pair::make(h, key).await?;
    let sfs = &pair.sender;
    write_and_snapshot(h, sfs, &["1"], DATA_BYTES).await?;
    let mut rep = pair.invocation(Guarantee::GuaranteeResumability);
    rep.protection = protection;
    rep.sender_fault = SenderFault::CutAfter(CUT_BYTES);
    let mut converged = false;
    for i in 2..2 + RUNS_MAX {
        let ran = rep.run(h).await?;
        let destroyed = destroy_snapshot(h, sfs, "1").await?;
        // 1 MiB of a 4 MiB stream: the first runs cannot have finished `@1`.
        if i < 4 && expect_busy {
            ensure_eq!(
                destroyed,
                Err(ZfsErrorKind::Busy),
                "destroying @1 after run {i} (step holds)"
            );
        }
        if i == 2 || i == 3 {
            snapshots(h, sfs, &[&i.to_string()]).await?;
        }
        let attempt = ran.attempt()?;
        ensure!(
            attempt.state != AttemptState::PlanningError,
            "run {i}: listing failed:\n{}",
            ran.report
        );
        ensure_eq!(attempt.filesystems.len(), 1, "run {i}: filesystems");
        if ran.fs(sfs)?.steps.is_empty() {
            converged = true;
            break;
        }
    }
    ensure!(converged, "still not up to date after {RUNS_MAX} runs");
    let received = snapshot_names(h, &pair.receiver).await?;
    Ok((pair, received))
}

/// Step holds protect `@1` while it is partially received; everything arrives; one cursor
/// and one last-received hold remain.
async fn resumable_full_send_with_holds(
    h: &dyn Harness,
    key: &str,
    incremental: Guarantee,
) -> Result<(), CaseFailure> {
    let protection = Protection {
        initial: Guarantee::GuaranteeResumability,
        incremental,
    };
    let (pair, received) = resumable_full_send(h, key, protection, true).await?;
    ensure_eq!(received, ["@1", "@2", "@3"], "receiver snapshots");
    ensure_eq!(
        snapshot_names(h, &pair.sender).await?,
        ["@2", "@3"],
        "sender snapshots"
    );
    let g3 = guid(h, &snap(&pair.sender, "3")?).await?;
    ensure_eq!(
        abstractions(h, &pair.sender).await?,
        [cursor(g3, SENDER_JOB)?],
        "sender abstractions"
    );
    ensure_eq!(
        abstractions(h, &pair.receiver).await?,
        [last_received("3", RECEIVER_JOB)?],
        "receiver abstractions"
    );
    super::setup::finish(h, &pair.root).await
}

async fn replication_is_resumable_full_send_both_guarantee_resumability(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    resumable_full_send_with_holds(h, "repl resume rr", Guarantee::GuaranteeResumability).await
}

async fn replication_is_resumable_full_send_initial_resumability_incremental_incremental(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    resumable_full_send_with_holds(h, "repl resume ri", Guarantee::GuaranteeIncremental).await
}

/// Under `guarantee_incremental` the partially received `@1` is not held: destroying it works.
/// zrepl then fails planning in every later run (the token's `toguid` is gone, #644) and the
/// receiver ends with no snapshot. zferry discards the unusable partial receive and starts
/// over from the newest snapshot, so the receiver ends with `@2` and `@3` (deliberate
/// difference).
async fn replication_is_resumable_full_send_initial_incremental_incremental_incremental(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let protection = super::setup::protection(Guarantee::GuaranteeIncremental);
    let (pair, received) = resumable_full_send(h, "repl resume ii", protection, false).await?;
    ensure_eq!(
        snapshot_names(h, &pair.sender).await?,
        ["@2", "@3"],
        "sender snapshots"
    );
    ensure_eq!(received, ["@2", "@3"], "receiver snapshots");
    let g3 = guid(h, &snap(&pair.sender, "3")?).await?;
    ensure_eq!(
        abstractions(h, &pair.sender).await?,
        [cursor(g3, SENDER_JOB)?],
        "sender abstractions"
    );
    super::setup::finish(h, &pair.root).await
}

/// An incremental step interrupted under `guarantee_resumability` leaves step holds on `@1`
/// and `@2`; resumed under `guarantee_incremental` (every stream still cut after 1 MiB), it
/// completes within 5 runs, and then no step hold is left and exactly one cursor, on `@2`.
async fn replication_incremental_destroys_step_holds_iff_incremental_step_holds_are_disabled_but_step_holds_exist(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, "repl step holds").await?;
    let (sfs, rfs) = (&pair.sender, &pair.receiver);
    snapshots(h, sfs, &["1"]).await?;
    let g1 = guid(h, &snap(sfs, "1")?).await?;
    pair.invocation(Guarantee::GuaranteeResumability)
        .run(h)
        .await?
        .expect_done()?;
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@1"],
        "receiver after run 1"
    );

    write_and_snapshot(h, sfs, &["2"], DATA_BYTES).await?;
    let g2 = guid(h, &snap(sfs, "2")?).await?;
    let mut partial = pair.invocation(Guarantee::GuaranteeResumability);
    partial.sender_fault = SenderFault::CutAfter(CUT_BYTES);
    partial.run(h).await?;
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@1"],
        "receiver after the interrupted step"
    );
    ensure_eq!(
        abstractions(h, sfs).await?,
        sorted([
            cursor(g1, SENDER_JOB)?,
            step_hold("1", SENDER_JOB)?,
            step_hold("2", SENDER_JOB)?,
        ]),
        "sender abstractions after the interrupted step"
    );

    let mut rep = pair.invocation(Guarantee::GuaranteeIncremental);
    rep.sender_fault = SenderFault::CutAfter(CUT_BYTES);
    let mut n_runs = 0;
    while !snapshot_names(h, rfs).await?.contains(&"@2".to_owned()) {
        ensure!(n_runs < 5, "@2 not received after 5 runs");
        rep.run(h).await?;
        n_runs += 1;
    }
    ensure_eq!(
        abstractions(h, sfs).await?,
        [cursor(g2, SENDER_JOB)?],
        "sender abstractions at the end (no step holds, one cursor on @2)"
    );
    super::setup::finish(h, &pair.root).await
}
