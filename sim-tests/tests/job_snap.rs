//! The snap job (`zferry_core::job::snap`) over the simulated ZFS in virtual time: snapshots,
//! local pruning after every round and on wakeup, no fake replication cursor, shutdown.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

mod snap_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use snap_common::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use zferry_core::backend::{Operation, ZfsErrorKind};
use zferry_core::clock::TokioClock;
use zferry_core::engine::pruner::{
    Cursors, FilesystemError, FilesystemOutcome, Protected, Side, SideRequest, prune_side,
};
use zferry_core::engine::snapper::State;
use zferry_core::job::snap::{
    PruneTrigger, SnapJob, SnapJobConfig, SnapJobHandle, SnapJobSpec, WakeupError,
};
use zferry_core::prune::{KeepRules, PruneError};
use zferry_core::queue::ErrorCounters;
use zferry_sim::{Fault, SimZfs};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

struct Running {
    handle: SnapJobHandle,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) -> Duration {
        let start = Instant::now();
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap();
        start.elapsed()
    }
}

fn spec(yaml: &str) -> SnapJobSpec {
    let config: SnapJobConfig = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    config.build().unwrap_or_else(|e| panic!("{e}"))
}

fn start(sim: &SimZfs, clock: TokioClock, yaml: &str) -> Running {
    let job = SnapJob::new(
        spec(yaml),
        Arc::new(sim.clone()),
        Arc::new(clock),
        arc(NoHooks),
    );
    let handle = job.handle();
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(job.run(stop));
    Running {
        handle,
        shutdown,
        task,
    }
}

fn names(sim: &SimZfs, fs: &str) -> BTreeSet<String> {
    snapshots(sim, fs).into_iter().map(|(n, _)| n).collect()
}

/// zrepl's grid `1x1h(keep=all) | 24x1h | 6x1d` written out on its own: "now" is the youngest
/// time, an entry `age` seconds older falls into the interval counted from there, each
/// interval after the first keeps its oldest entry, and older entries go.
fn grid_keeps(times: &BTreeSet<i64>) -> BTreeSet<i64> {
    let Some(&now) = times.last() else {
        return BTreeSet::new();
    };
    let mut kept = BTreeSet::new();
    let mut oldest: BTreeMap<(u8, i64), i64> = BTreeMap::new();
    for &t in times {
        let age = now - t;
        let slot = if age < HOUR {
            kept.insert(t);
            continue;
        } else if age < 25 * HOUR {
            (1, (age - HOUR) / HOUR)
        } else if age < 25 * HOUR + 6 * DAY {
            (2, (age - 25 * HOUR) / DAY)
        } else {
            continue;
        };
        let o = oldest.entry(slot).or_insert(t);
        *o = (*o).min(t);
    }
    kept.extend(oldest.into_values());
    kept
}

const WEEK_JOB: &str = "name: hourly
filesystems: {\"tank<\": true, \"tank\": false}
snapshotting: {type: periodic, prefix: zrepl_, interval: 1h}
pruning:
  keep:
    - type: grid
      grid: 1x1h(keep=all) | 24x1h | 6x1d
      regex: \"^zrepl_\"
    - type: regex
      regex: \"^manual_\"
";

#[tokio::test(start_paused = true)]
async fn a_week_of_hourly_snapshots_leaves_exactly_what_the_grid_keeps() {
    const T0: &str = "2026-03-02T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a", "tank/b"]);
    sim.setup()
        .snapshot(&[snap("tank/a@manual_keep"), snap("tank/a@other")])
        .unwrap();
    sleep(Duration::from_secs(30 * 60)).await;
    let first_round = ts(T0).as_second() + 30 * 60;
    let run = start(&sim, clock, WEEK_JOB);
    // Rounds 0..=168: a week and the round that closes it.
    sleep(Duration::from_secs(168 * 3600 + 30 * 60)).await;

    let mut expected = BTreeSet::new();
    for round in 0..=168 {
        expected.insert(first_round + round * HOUR);
        expected = grid_keeps(&expected);
    }
    let expected: BTreeSet<String> = expected
        .iter()
        .map(|&t| {
            jiff::Timestamp::from_second(t)
                .unwrap()
                .strftime("zrepl_%Y%m%d_%H%M%S_000")
                .to_string()
        })
        .collect();
    assert!(expected.len() > 24 && expected.len() < 60, "{expected:?}");
    assert_eq!(names(&sim, "tank/b"), expected);
    let mut with_manual = expected.clone();
    with_manual.insert("manual_keep".into());
    // `other` matches no rule: the first pruning destroyed it, as zrepl does (#403).
    assert_eq!(names(&sim, "tank/a"), with_manual);

    let report = run.handle.report();
    assert_eq!(report.snapshotter.n_rounds, 169);
    assert_eq!(report.snapshotter.state, State::Waiting);
    assert_eq!(report.pruning.n_runs, 169);
    let last = report.pruning.last.unwrap();
    assert_eq!(last.trigger, PruneTrigger::Round);
    let pruned = last.result.unwrap();
    assert_eq!((pruned.n_done(), pruned.n_errors()), (2, 0));
    assert_eq!(run.stop().await, Duration::ZERO);
}

const MANUAL_JOB: &str = "name: manual
filesystems: {\"tank/a\": true}
snapshotting: {type: manual}
pruning:
  keep:
    - type: last_n
      count: 2
";

#[tokio::test(start_paused = true)]
async fn a_wakeup_prunes_without_snapshotting_and_one_sent_during_a_run_waits() {
    let (sim, clock) = world("2026-03-02T00:00:00Z", &["tank", "tank/a"]);
    for i in 1..=5 {
        sim.user()
            .snapshot(&[snap(&format!("tank/a@s{i}"))])
            .unwrap();
    }
    let run = start(&sim, clock, MANUAL_JOB);
    assert_eq!(run.handle.wakeup(), Ok(()));
    assert_eq!(run.handle.wakeup(), Err(WakeupError::AlreadyPending));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(names(&sim, "tank/a"), ["s4", "s5"].map(String::from).into());
    assert_eq!(sim.op_count(Operation::Snapshot), 0);
    let report = run.handle.report();
    assert_eq!(report.snapshotter.state, State::Manual);
    assert_eq!(report.pruning.n_runs, 1);
    let last = report.pruning.last.unwrap();
    assert_eq!(last.trigger, PruneTrigger::Wakeup);
    assert_eq!(last.result.unwrap().n_destroyed(), 3);

    // A wakeup during a pruning run waits for it (zrepl would drop it), a second one finds it
    // pending.
    sim.inject(Fault::Delay {
        operation: Operation::ListDatasets,
        n_calls: 1,
        duration: Duration::from_secs(10),
    });
    sim.user().snapshot(&[snap("tank/a@s6")]).unwrap();
    run.handle.wakeup().unwrap();
    sleep(Duration::from_secs(5)).await;
    assert!(run.handle.report().pruning.running_since.is_some());
    assert_eq!(run.handle.wakeup(), Ok(()));
    assert_eq!(run.handle.wakeup(), Err(WakeupError::AlreadyPending));
    sim.user().snapshot(&[snap("tank/a@s7")]).unwrap();
    sleep(Duration::from_secs(10)).await;
    assert_eq!(run.handle.report().pruning.n_runs, 3);
    assert_eq!(names(&sim, "tank/a"), ["s6", "s7"].map(String::from).into());

    let handle = run.handle.clone();
    assert_eq!(run.stop().await, Duration::ZERO);
    assert_eq!(handle.wakeup(), Err(WakeupError::NotRunning));
}

#[tokio::test(start_paused = true)]
async fn a_bookmark_as_the_newest_version_does_not_stop_pruning() {
    // zrepl's quirk 11: its fake cursor is the newest version, and a bookmark there fails
    // pruning. Without a fake cursor there is nothing to fail.
    let (sim, clock) = world("2026-03-02T00:00:00Z", &["tank", "tank/a"]);
    for i in 1..=4 {
        sim.user()
            .snapshot(&[snap(&format!("tank/a@s{i}"))])
            .unwrap();
    }
    sim.user()
        .bookmark(&snap("tank/a@s4"), &snap("tank/a#after"))
        .unwrap();
    let run = start(&sim, clock, MANUAL_JOB);
    run.handle.wakeup().unwrap();
    sleep(Duration::from_secs(1)).await;
    let last = run.handle.report().pruning.last.unwrap();
    let pruned = last.result.unwrap();
    assert_eq!(
        (pruned.n_errors(), pruned.n_destroyed()),
        (0, 2),
        "{pruned}"
    );
    assert_eq!(names(&sim, "tank/a"), ["s3", "s4"].map(String::from).into());
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_replication_a_not_replicated_rule_fails_each_filesystem_and_destroys_nothing() {
    // The config refuses the rule; the pruner refuses it again if it gets there anyway.
    let (sim, _clock) = world("2026-03-02T00:00:00Z", &["tank", "tank/a", "tank/b"]);
    for fs in ["tank/a", "tank/b"] {
        for i in 1..=3 {
            sim.user().snapshot(&[snap(&format!("{fs}@s{i}"))]).unwrap();
        }
    }
    let rules: KeepRules = serde_saphyr::from_str("- type: not_replicated\n").unwrap();
    let targets = [ds("tank/a"), ds("tank/b")];
    let protected = Protected::new();
    let request = SideRequest {
        side: Side::Sender,
        targets: &targets,
        rules: &rules,
        cursors: Cursors::NoReplication,
        protected: &protected,
    };
    let report = prune_side(&sim, &request, &mut ErrorCounters::new())
        .await
        .unwrap();
    assert_eq!(report.n_errors(), 2);
    for fs in &report.filesystems {
        assert!(
            matches!(
                &fs.outcome,
                FilesystemOutcome::Error {
                    error: FilesystemError::Plan(PruneError::CursorUnknown { .. }),
                    destroyed: 0
                }
            ),
            "{fs:?}"
        );
    }
    assert_eq!(sim.op_count(Operation::DestroySnapshots), 0);
    let config = format!("{MANUAL_JOB}    - type: not_replicated\n");
    let config: SnapJobConfig = serde_saphyr::from_str(&config).unwrap();
    let e = config.build().unwrap_err().to_string();
    assert!(e.contains("pruning.keep[1]"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_partly_failed_round_still_triggers_pruning() {
    const T0: &str = "2026-03-02T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a", "tank/b"]);
    for fs in ["tank/a", "tank/b"] {
        for i in 1..=3 {
            sim.user()
                .snapshot(&[snap(&format!("{fs}@old{i}"))])
                .unwrap();
        }
    }
    sim.inject(Fault::FailOn {
        operation: Operation::Snapshot,
        dataset: ds("tank/b"),
        n_calls: 2,
        kind: ZfsErrorKind::NoSpace,
    });
    let yaml = "name: j
filesystems: {\"tank<\": true, \"tank\": false}
snapshotting: {type: periodic, prefix: zrepl_, interval: 1d}
pruning:
  keep:
    - type: last_n
      count: 1
";
    let run = start(&sim, clock, yaml);
    sleep(Duration::from_secs(60)).await;
    let report = run.handle.report();
    assert_eq!(report.snapshotter.state, State::ErrorWait);
    assert_eq!(report.pruning.n_runs, 1);
    assert_eq!(
        names(&sim, "tank/a"),
        ["zrepl_20260302_000000_000".to_owned()].into()
    );
    assert_eq!(names(&sim, "tank/b"), ["old3".to_owned()].into());
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_snapshotter_and_the_pruning_at_once() {
    let (sim, clock) = world("2026-03-02T00:00:00Z", &["tank", "tank/a"]);
    let run = start(&sim, clock, WEEK_JOB);
    sleep(Duration::from_secs(90 * 60)).await;
    let handle = run.handle.clone();
    assert_eq!(run.stop().await, Duration::ZERO);
    let report = handle.report();
    assert_eq!(report.snapshotter.state, State::Stopped);
    assert_eq!(report.pruning.running_since, None);
    assert_eq!(report.pruning.n_runs, 2);
    let n_snapshots = sim.op_count(Operation::Snapshot);
    sleep(Duration::from_secs(7 * 86_400)).await;
    assert_eq!(sim.op_count(Operation::Snapshot), n_snapshots);
}
