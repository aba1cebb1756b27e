//! Incremental replication: a cursor bookmark as the base after the common snapshot is gone,
//! the cleanup of stale abstractions of the own job only, a tentative cursor as `from`, and a
//! lost `send_completed`.

use zferry_core::backend::ZfsErrorKind;
use zferry_core::endpoint::Guarantee;
use zferry_core::engine::replication::RunOutcome;
use zferry_core::engine::replication::report::AttemptState;

use super::faults::SenderFault;
use super::setup::{
    OTHER_JOB, Pair, RECEIVER_JOB, SENDER_JOB, abstractions, cursor, destroy_snapshot, job_id,
    last_received, must_destroy_snapshot, snapshot_names, sorted, step_hold, tentative,
};
use crate::conformance::check::{Ctx, ensure, ensure_eq};
use crate::conformance::util::{bmark, guid, snap, snapshots};
use crate::conformance::{CaseFailure, Harness, case_table};
use zferry_core::abstraction::Abstraction;
use zferry_core::name::{DatasetName, VersionName};

case_table!(
    replication_incremental_is_possible_if_common_snapshot_is_destroyed,
    replication_incremental_cleans_up_stale_abstractions,
    replication_incremental_handles_from_version_eq_tentative_cursor_correctly,
    replication_step_completed_lost_behavior_guarantee_resumability,
    replication_step_completed_lost_behavior_guarantee_incremental,
);

/// Bookmarks `dataset@snap` as the abstraction's bookmark name.
async fn bookmark_as(
    h: &dyn Harness,
    dataset: &DatasetName,
    snap_name: &str,
    abstraction: &Abstraction,
) -> Result<VersionName, CaseFailure> {
    let name = bmark(dataset, &abstraction.to_string())?;
    h.backend()
        .bookmark(&snap(dataset, snap_name)?, &name)
        .await
        .ctx(format!("bookmark `{name}`"))?;
    Ok(name)
}

/// Holds `dataset@snap` with the abstraction's tag.
async fn hold_as(
    h: &dyn Harness,
    dataset: &DatasetName,
    snap_name: &str,
    abstraction: &Abstraction,
) -> Result<(), CaseFailure> {
    let s = snap(dataset, snap_name)?;
    h.backend()
        .hold(&abstraction.to_string(), std::slice::from_ref(&s))
        .await
        .ctx(format!("hold `{s}`"))
}

/// After the first replication, the sender's `@1` is destroyed; the next replication of `@2`
/// starts from the cursor bookmark of `@1`.
async fn replication_incremental_is_possible_if_common_snapshot_is_destroyed(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, "repl common gone").await?;
    snapshots(h, &pair.sender, &["1"]).await?;
    let g1 = guid(h, &snap(&pair.sender, "1")?).await?;
    let rep = pair.invocation(Guarantee::GuaranteeResumability);
    rep.run(h).await?.expect_done()?;
    ensure_eq!(
        snapshot_names(h, &pair.receiver).await?,
        ["@1"],
        "receiver after run 1"
    );

    must_destroy_snapshot(h, &pair.sender, "1").await?;
    ensure_eq!(
        abstractions(h, &pair.sender).await?,
        [cursor(g1, SENDER_JOB)?],
        "sender abstractions after destroying @1"
    );

    snapshots(h, &pair.sender, &["2"]).await?;
    let g2 = guid(h, &snap(&pair.sender, "2")?).await?;
    let ran = rep.run(h).await?;
    ran.expect_done()?;
    ensure_eq!(
        ran.steps(&pair.sender)?,
        [format!("{} -> @2", cursor(g1, SENDER_JOB)?)],
        "steps of run 2"
    );
    ensure_eq!(
        snapshot_names(h, &pair.receiver).await?,
        ["@1", "@2"],
        "receiver after run 2"
    );
    ensure_eq!(
        abstractions(h, &pair.sender).await?,
        [cursor(g2, SENDER_JOB)?],
        "sender abstractions after run 2"
    );
    ensure_eq!(
        abstractions(h, &pair.receiver).await?,
        [last_received("2", RECEIVER_JOB)?],
        "receiver abstractions after run 2"
    );
    super::setup::finish(h, &pair.root).await
}

/// Stale cursors, step holds and tentative cursors of the own job and of another job; the
/// next replication removes exactly the own job's stale ones, keeps the other job's and the
/// user's bookmark `#2`, and moves the own last-received hold to the newest snapshot while the
/// other job's stays. zferry keeps no abstraction cache, so this is zrepl's "cache invalidated"
/// variant; the "without cache" variant's extra survivors are an artifact of zrepl's cache.
async fn replication_incremental_cleans_up_stale_abstractions(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, "repl stale").await?;
    let (sfs, rfs) = (&pair.sender, &pair.receiver);
    snapshots(h, sfs, &["1", "2"]).await?;
    h.backend()
        .bookmark(&snap(sfs, "2")?, &bmark(sfs, "2")?)
        .await
        .ctx("bookmark #2")?;
    snapshots(h, sfs, &["3"]).await?;
    let g = |n: &'static str| async move { guid(h, &snap(sfs, n)?).await };
    let (g2, g3) = (g("2").await?, g("3").await?);

    let rep = pair.invocation(Guarantee::GuaranteeResumability);
    rep.run(h).await?.expect_done()?;
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@3"],
        "receiver after run 1"
    );
    ensure_eq!(
        abstractions(h, sfs).await?,
        sorted(["#2".to_owned(), cursor(g3, SENDER_JOB)?]),
        "sender abstractions after run 1"
    );
    ensure_eq!(
        abstractions(h, rfs).await?,
        [last_received("3", RECEIVER_JOB)?],
        "receiver abstractions after run 1"
    );

    // Artificial stale abstractions of this job and of another one.
    for job in [SENDER_JOB, OTHER_JOB] {
        let job = job_id(job)?;
        bookmark_as(
            h,
            sfs,
            "2",
            &Abstraction::ReplicationCursor {
                job: job.clone(),
                guid: g2,
            },
        )
        .await?;
        hold_as(h, sfs, "1", &Abstraction::StepHold { job: job.clone() }).await?;
        hold_as(h, sfs, "2", &Abstraction::StepHold { job: job.clone() }).await?;
        bookmark_as(h, sfs, "3", &Abstraction::TentativeCursor { job, guid: g3 }).await?;
    }
    hold_as(
        h,
        rfs,
        "3",
        &Abstraction::LastReceivedHold {
            job: job_id(OTHER_JOB)?,
        },
    )
    .await?;
    let other_job_sender = sorted([
        cursor(g2, OTHER_JOB)?,
        step_hold("1", OTHER_JOB)?,
        step_hold("2", OTHER_JOB)?,
        tentative(g3, OTHER_JOB)?,
    ]);

    snapshots(h, sfs, &["4", "5"]).await?;
    let g5 = g("5").await?;
    let ran = rep.run(h).await?;
    ran.expect_done()?;
    ensure_eq!(ran.steps(sfs)?, ["@3 -> @4", "@4 -> @5"], "steps of run 2");
    ensure_eq!(
        snapshot_names(h, sfs).await?,
        ["@1", "@2", "@3", "@4", "@5"],
        "sender snapshots"
    );
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@3", "@4", "@5"],
        "receiver snapshots"
    );
    ensure_eq!(
        abstractions(h, sfs).await?,
        sorted(
            other_job_sender
                .into_iter()
                .chain(["#2".to_owned(), cursor(g5, SENDER_JOB)?])
        ),
        "sender abstractions after run 2 (the other job's and #2 kept, ours: one cursor)"
    );
    ensure_eq!(
        abstractions(h, rfs).await?,
        sorted([
            last_received("3", OTHER_JOB)?,
            last_received("5", RECEIVER_JOB)?
        ]),
        "receiver abstractions after run 2"
    );
    super::setup::finish(h, &pair.root).await
}

/// The only version the sender shares with the receiver is a tentative cursor of this job:
/// the planner takes it as `from` and the stale-cleanup of the send does not destroy it; one
/// step, done; `guarantee_nothing` then removes it with the job's other abstractions.
async fn replication_incremental_handles_from_version_eq_tentative_cursor_correctly(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, "repl tentative from").await?;
    let (sfs, rfs) = (&pair.sender, &pair.receiver);
    snapshots(h, sfs, &["1"]).await?;
    let g1 = guid(h, &snap(sfs, "1")?).await?;
    let mut rep = pair.invocation(Guarantee::GuaranteeIncremental);
    rep.run(h).await?.expect_done()?;
    ensure_eq!(
        abstractions(h, sfs).await?,
        [cursor(g1, SENDER_JOB)?],
        "sender abstractions after run 1"
    );

    let tentative_name = tentative(g1, SENDER_JOB)?;
    bookmark_as(
        h,
        sfs,
        "1",
        &Abstraction::TentativeCursor {
            job: job_id(SENDER_JOB)?,
            guid: g1,
        },
    )
    .await?;
    must_destroy_snapshot(h, sfs, "1").await?;
    let cursor_name = cursor(g1, SENDER_JOB)?;
    h.backend()
        .destroy_bookmark(&bmark(sfs, cursor_name.trim_start_matches('#'))?)
        .await
        .ctx("destroy the cursor")?;
    ensure_eq!(
        abstractions(h, sfs).await?,
        vec![tentative_name.clone()],
        "sender versions before run 2"
    );
    snapshots(h, sfs, &["2"]).await?;

    rep.protection = super::setup::protection(Guarantee::GuaranteeNothing);
    let ran = rep.run(h).await?;
    ran.expect_done()?;
    let attempt = ran.attempt()?;
    ensure_eq!(attempt.state, AttemptState::Done, "attempt state");
    ensure_eq!(attempt.filesystems.len(), 1, "filesystems");
    let fs = ran.fs(sfs)?;
    ensure_eq!(fs.last_error, None, "filesystem error");
    ensure_eq!(
        ran.steps(sfs)?,
        [format!("{tentative_name} -> @2")],
        "steps"
    );
    ensure_eq!(fs.current_step, 1, "current step");
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@1", "@2"],
        "receiver snapshots"
    );
    ensure_eq!(
        abstractions(h, sfs).await?,
        Vec::<String>::new(),
        "sender abstractions after run 2 (guarantee_nothing removes the tentative cursor)"
    );
    ensure_eq!(
        abstractions(h, rfs).await?,
        Vec::<String>::new(),
        "receiver abstractions after run 2 (guarantee_nothing releases the hold)"
    );
    super::setup::finish(h, &pair.root).await
}

/// `ReplicationStepCompletedLostBehavior`: `@2` is received but `send_completed` is lost; the
/// receiver holds `@2`; the sender's `@1` and `@2` are protected by step holds
/// (resumability) or not at all (incremental: tentative cursors instead); after destroying
/// `@1` on both sides the next replication of `@3` still succeeds.
async fn step_completed_lost(
    h: &dyn Harness,
    key: &str,
    guarantee: Guarantee,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, key).await?;
    let (sfs, rfs) = (&pair.sender, &pair.receiver);
    snapshots(h, sfs, &["1"]).await?;
    let g1 = guid(h, &snap(sfs, "1")?).await?;
    let rep = pair.invocation(guarantee);
    rep.run(h).await?.expect_done()?;
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@1"],
        "receiver after run 1"
    );

    snapshots(h, sfs, &["2"]).await?;
    let g2 = guid(h, &snap(sfs, "2")?).await?;
    let mut lost = rep.clone();
    lost.sender_fault = SenderFault::LoseSendCompleted;
    let ran = lost.run(h).await?;
    ensure!(
        matches!(&ran.outcome, RunOutcome::Failed { reason } if reason.contains("send_completed not delivered")),
        "the run with the lost confirmation ended {:?}",
        ran.outcome
    );
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@1", "@2"],
        "receiver after the lost confirmation"
    );
    ensure_eq!(
        abstractions(h, rfs).await?,
        [last_received("2", RECEIVER_JOB)?],
        "receiver abstractions after the lost confirmation"
    );
    let expected_sender: Vec<String> = match guarantee {
        Guarantee::GuaranteeResumability => sorted([
            cursor(g1, SENDER_JOB)?,
            step_hold("1", SENDER_JOB)?,
            step_hold("2", SENDER_JOB)?,
        ]),
        _ => sorted([
            cursor(g1, SENDER_JOB)?,
            tentative(g1, SENDER_JOB)?,
            tentative(g2, SENDER_JOB)?,
        ]),
    };
    ensure_eq!(
        abstractions(h, sfs).await?,
        expected_sender,
        "sender abstractions after the lost confirmation"
    );

    let destroy2 = destroy_snapshot(h, sfs, "2").await?;
    snapshots(h, sfs, &["3"]).await?;
    let g3 = guid(h, &snap(sfs, "3")?).await?;
    let destroy1 = destroy_snapshot(h, sfs, "1").await?;
    must_destroy_snapshot(h, rfs, "1").await?;
    let expected = match guarantee {
        Guarantee::GuaranteeResumability => Err(ZfsErrorKind::Busy),
        _ => Ok(()),
    };
    ensure_eq!(destroy2, expected, "destroying the sender's @2");
    ensure_eq!(destroy1, expected, "destroying the sender's @1");

    let ran = rep.run(h).await?;
    ran.expect_done()?;
    let from: String = match guarantee {
        Guarantee::GuaranteeResumability => "@2".to_owned(),
        _ => tentative(g2, SENDER_JOB)?,
    };
    ensure_eq!(
        ran.steps(sfs)?,
        [format!("{from} -> @3")],
        "steps of the last run"
    );
    ensure_eq!(
        snapshot_names(h, rfs).await?,
        ["@2", "@3"],
        "receiver at the end"
    );
    ensure_eq!(
        abstractions(h, sfs).await?,
        [cursor(g3, SENDER_JOB)?],
        "sender abstractions at the end"
    );
    ensure_eq!(
        abstractions(h, rfs).await?,
        [last_received("3", RECEIVER_JOB)?],
        "receiver abstractions at the end"
    );
    super::setup::finish(h, &pair.root).await
}

async fn replication_step_completed_lost_behavior_guarantee_resumability(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    step_completed_lost(h, "repl lost resumab", Guarantee::GuaranteeResumability).await
}

async fn replication_step_completed_lost_behavior_guarantee_incremental(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    step_completed_lost(h, "repl lost incr", Guarantee::GuaranteeIncremental).await
}
