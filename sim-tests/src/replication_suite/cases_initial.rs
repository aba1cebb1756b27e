//! Initial replication: `initial_replication` all / most_recent / fail, a failing parent that
//! stops its children but not its string-prefix siblings, and a receiver that fails while the
//! sender still streams.

use std::time::Duration;

use zferry_core::endpoint::Guarantee;
use zferry_core::engine::replication::report::{AttemptState, FilesystemState};
use zferry_core::plan::InitialReplication;

use super::faults::{ReceiverFault, SenderFault};
use super::setup::{Invocation, Pair, abstractions, cursor, last_received, snapshot_names, sorted};
use crate::conformance::check::{ensure, ensure_eq};
use crate::conformance::util::{child, exists, guid, snap, snapshots};
use crate::conformance::{CaseFailure, DatasetSpec, Harness, case_table};

case_table!(
    replication_initial_all,
    replication_initial_most_recent,
    replication_initial_fail,
    replication_failing_initial_parent_prohibits_child_replication,
    replication_receiver_error_while_still_sending,
    replication_receiver_error_while_still_sending_real_receiver,
);

/// How long a case that must not hang may take, in (virtual, on the sim) time.
const NO_HANG_TIMEOUT: Duration = Duration::from_secs(60);

/// zrepl's message in both fault cases of this file: the step error must carry it.
const MOCK_RECEIVE_ERROR: &str = "yifae4ohPhaquaes0hohghiep9oufie4roo7quoWooluaj2ee8";

/// zrepl's `replicationInitialImpl`: snapshots made in the order `@3`, `@2`, `@1` (so that
/// name order and createtxg order disagree), one replication with `initial`; returns the
/// layout, the run and the receiver's snapshots.
async fn initial(
    h: &dyn Harness,
    key: &str,
    initial: InitialReplication,
) -> Result<(Pair, super::setup::Ran, Vec<String>), CaseFailure> {
    let pair = Pair::make(h, key).await?;
    snapshots(h, &pair.sender, &["3", "2", "1"]).await?;
    let mut rep = pair.invocation(Guarantee::GuaranteeResumability);
    rep.initial = initial;
    let ran = rep.run(h).await?;
    let received = snapshot_names(h, &pair.receiver).await?;
    Ok((pair, ran, received))
}

/// `all`: every snapshot, oldest (by createtxg) first, one step each.
async fn replication_initial_all(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (pair, ran, received) = initial(h, "repl init all", InitialReplication::All).await?;
    ran.expect_done()?;
    ensure_eq!(received, ["@3", "@2", "@1"], "receiver snapshots");
    ensure_eq!(
        ran.steps(&pair.sender)?,
        ["full @3", "@3 -> @2", "@2 -> @1"],
        "steps"
    );
    let g1 = guid(h, &snap(&pair.sender, "1")?).await?;
    ensure_eq!(
        abstractions(h, &pair.sender).await?,
        [cursor(g1, super::setup::SENDER_JOB)?],
        "sender abstractions"
    );
    ensure_eq!(
        abstractions(h, &pair.receiver).await?,
        [last_received("1", super::setup::RECEIVER_JOB)?],
        "receiver abstractions"
    );
    super::setup::finish(h, &pair.root).await
}

/// `most_recent`: only `@1`, the newest by createtxg although the smallest by name.
async fn replication_initial_most_recent(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (pair, ran, received) =
        initial(h, "repl init recent", InitialReplication::MostRecent).await?;
    ran.expect_done()?;
    ensure_eq!(received, ["@1"], "receiver snapshots");
    ensure_eq!(ran.steps(&pair.sender)?, ["full @1"], "steps");
    super::setup::finish(h, &pair.root).await
}

/// `fail`: a planning error of the filesystem with the documented message; nothing received.
async fn replication_initial_fail(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (pair, ran, received) = initial(h, "repl init fail", InitialReplication::Fail).await?;
    ensure_eq!(received, Vec::<String>::new(), "receiver snapshots");
    ensure!(
        !exists(h, &pair.receiver).await?,
        "the receiver's filesystem was created"
    );
    let attempt = ran.attempt()?;
    ensure_eq!(attempt.error, None, "attempt-level error");
    ensure_eq!(
        attempt.filesystems.len(),
        1,
        "filesystems in the report:\n{}",
        ran.report
    );
    let fs = ran.fs(&pair.sender)?;
    ensure_eq!(fs.state, FilesystemState::PlanningError, "filesystem state");
    let error = fs.last_error.clone().unwrap_or_default();
    ensure!(
        error.contains(
            "the receiver has no snapshots and initial replication is set to `fail`: newest \
             sender snapshot @1"
        ),
        "planning error: {error}"
    );
    super::setup::finish(h, &pair.root).await
}

/// A parent `a` whose initial receive fails fails its child `a/child` with "parent(s) failed
/// during initial replication"; `aa`, a string prefix but no path child of `a`, is replicated
/// on its own (and fails with the receiver's error).
async fn replication_failing_initial_parent_prohibits_child_replication(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, "repl parent fails").await?;
    let a = child(&pair.sender, "a")?;
    let a_child = child(&a, "child")?;
    let aa = child(&pair.sender, "aa")?;
    for fs in [&a, &a_child, &aa] {
        h.create_dataset(fs, DatasetSpec::FILESYSTEM).await?;
    }
    let all = [&pair.sender, &a, &a_child, &aa];
    let snaps = all
        .iter()
        .map(|fs| snap(fs, "initial"))
        .collect::<Result<Vec<_>, _>>()?;
    h.backend()
        .snapshot(&snaps)
        .await
        .map_err(|e| CaseFailure::new(format!("snapshot -r: {e}")))?;

    let mut rep = Invocation::new(
        &[&a, &a_child, &aa],
        &pair.receiver_root,
        Guarantee::GuaranteeNothing,
    );
    rep.receiver_fault = ReceiverFault::FailWith(MOCK_RECEIVE_ERROR.to_owned());
    let ran = rep.run(h).await?;

    ensure_eq!(
        ran.filesystems()?,
        sorted([&a, &a_child, &aa].map(|d| d.as_str().to_owned())),
        "filesystems in the report"
    );
    for (fs, expected) in [
        (&a, MOCK_RECEIVE_ERROR),
        (&a_child, "parent(s) failed during initial replication"),
        (&aa, MOCK_RECEIVE_ERROR),
    ] {
        let report = ran.fs(fs)?;
        ensure_eq!(report.steps.len(), 1, "steps of `{fs}`");
        ensure_eq!(report.state, FilesystemState::StepError, "state of `{fs}`");
        let error = report.last_error.clone().unwrap_or_default();
        ensure!(
            error.contains(expected),
            "error of `{fs}` does not contain `{expected}`: {error}"
        );
    }
    let a_child_error = ran.fs(&a_child)?.last_error.clone().unwrap_or_default();
    ensure!(
        a_child_error.contains(a.as_str()) && !a_child_error.contains(aa.as_str()),
        "the child's error must name exactly its parent `{a}`: {a_child_error}"
    );
    for fs in [&a, &a_child, &aa] {
        ensure!(
            !exists(h, &rep.receiver_fs(fs)?).await?,
            "`{fs}` was created on the receiver"
        );
    }
    super::setup::finish(h, &pair.root).await
}

/// A receiver that fails while the sender streams endlessly: the step fails with the
/// receiver's message, and the run ends (bounded by a timeout: a hang fails the case).
async fn replication_receiver_error_while_still_sending(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, "repl recv err").await?;
    snapshots(h, &pair.sender, &["1"]).await?;
    let mut rep = pair.invocation(Guarantee::GuaranteeNothing);
    rep.sender_fault = SenderFault::NeverEnding;
    rep.receiver_fault = ReceiverFault::FailWith(MOCK_RECEIVE_ERROR.to_owned());
    let ran = tokio::time::timeout(NO_HANG_TIMEOUT, rep.run(h))
        .await
        .map_err(|_| CaseFailure::new("the replication hung"))??;
    let attempt = ran.attempt()?;
    ensure_eq!(attempt.error, None, "attempt-level error");
    ensure_eq!(attempt.filesystems.len(), 1, "filesystems in the report");
    let fs = ran.fs(&pair.sender)?;
    ensure_eq!(fs.steps.len(), 1, "steps");
    ensure_eq!(fs.state, FilesystemState::StepError, "state");
    let error = fs.last_error.clone().unwrap_or_default();
    ensure!(error.contains(MOCK_RECEIVE_ERROR), "step error: {error}");
    super::setup::finish(h, &pair.root).await
}

/// Beyond zrepl: the same endless stream into the real receiver. ZFS rejects the stream
/// (zeros are no send stream) while the sender still writes; the step fails with the receive's
/// error, nothing is left on the receiver, and nothing hangs.
async fn replication_receiver_error_while_still_sending_real_receiver(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let pair = Pair::make(h, "repl recv err real").await?;
    snapshots(h, &pair.sender, &["1"]).await?;
    let mut rep = pair.invocation(Guarantee::GuaranteeNothing);
    rep.sender_fault = SenderFault::NeverEnding;
    let ran = tokio::time::timeout(NO_HANG_TIMEOUT, rep.run(h))
        .await
        .map_err(|_| CaseFailure::new("the replication hung"))??;
    ensure!(
        ran.outcome != zferry_core::engine::replication::RunOutcome::Done,
        "a stream of zeros was received:\n{}",
        ran.report
    );
    let attempt = ran.attempt()?;
    ensure!(
        attempt.state != AttemptState::Done,
        "attempt state {:?}",
        attempt.state
    );
    let fs = ran.fs(&pair.sender)?;
    let error = fs
        .last_error
        .clone()
        .or_else(|| attempt.error.clone())
        .unwrap_or_default();
    ensure!(
        error.contains("receive"),
        "step error: {error}\n{}",
        ran.report
    );
    ensure!(
        !exists(h, &pair.receiver).await?,
        "the receiver's filesystem exists after a rejected stream"
    );
    super::setup::finish(h, &pair.root).await
}
