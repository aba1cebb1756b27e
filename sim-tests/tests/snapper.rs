//! The snapshotter driver (`zferry_core::engine::snapper`) over the simulated ZFS, in virtual
//! time: the simulated world's creation times read the same tokio clock as the driver.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

mod snap_common;

use std::sync::Arc;
use std::time::Duration;

use snap_common::*;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use zferry_core::backend::{Operation, ZfsErrorKind};
use zferry_core::clock::TokioClock;
use zferry_core::engine::snapper::{
    FsError, FsState, HookExit, HookRunner, RoundDone, Snapshotter, SnapshotterError,
    SnapshotterReport, Snapshotting, State,
};
use zferry_core::filter::Filter;
use zferry_core::snapshotter::hooks::Step;
use zferry_core::snapshotter::periodic::SyncUpReason;
use zferry_sim::{Fault, SimZfs};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

const HOURLY: &str = "type: periodic\nprefix: zrepl_\ninterval: 1h\n";

struct Running {
    report: watch::Receiver<SnapshotterReport>,
    rounds: mpsc::Receiver<RoundDone>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    fn report(&self) -> SnapshotterReport {
        self.report.borrow().clone()
    }

    /// Every notice received so far.
    fn notices(&mut self) -> Vec<RoundDone> {
        let mut out = Vec::new();
        while let Ok(done) = self.rounds.try_recv() {
            out.push(done);
        }
        out
    }

    /// Asks for shutdown and returns how much virtual time the stop took.
    async fn stop(self) -> Duration {
        let start = Instant::now();
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap();
        assert_eq!(self.report.borrow().state, State::Stopped);
        start.elapsed()
    }
}

fn start(
    sim: &SimZfs,
    clock: TokioClock,
    filter: Filter,
    snapshotting: Snapshotting,
    hooks: Arc<dyn HookRunner>,
) -> Running {
    let (notify, rounds) = mpsc::channel(10_000);
    let snapper = Snapshotter::new(
        Arc::new(sim.clone()),
        Arc::new(clock),
        hooks,
        filter,
        snapshotting,
        Some(notify),
    );
    let report = snapper.subscribe();
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(snapper.run(stop));
    Running {
        report,
        rounds,
        shutdown,
        task,
    }
}

/// `name@offset-seconds-from-start` of each snapshot of `fs`.
fn taken(sim: &SimZfs, fs: &str, start: &str) -> Vec<String> {
    let start = ts(start).as_second();
    snapshots(sim, fs)
        .into_iter()
        .map(|(name, creation)| format!("{name}@{}", creation - start))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn periodic_rounds_take_one_atomic_call_per_pool() {
    const T0: &str = "2026-01-05T00:00:00Z";
    let (sim, clock) = world(
        T0,
        &[
            "tank",
            "tank/a",
            "tank/b",
            "tank/b/c",
            "tank/skip",
            "zroot",
            "zroot/x",
        ],
    );
    let filter = filter(&[("tank<", true), ("tank/skip", false), ("zroot/x", true)]);
    let mut run = start(&sim, clock, filter, snapshotting(HOURLY), arc(NoHooks));
    sleep(2 * HOUR + 30 * MINUTE).await;

    let expected = [
        "zrepl_20260105_000000_000@0",
        "zrepl_20260105_010000_000@3600",
        "zrepl_20260105_020000_000@7200",
    ];
    for fs in ["tank", "tank/a", "tank/b", "tank/b/c", "zroot/x"] {
        assert_eq!(taken(&sim, fs, T0), expected, "{fs}");
    }
    assert!(snapshots(&sim, "tank/skip").is_empty());
    assert!(snapshots(&sim, "zroot").is_empty());
    // One call per pool and round; the snapshots of one pool share a transaction group.
    assert_eq!(sim.op_count(Operation::Snapshot), 3 * 2);
    let txgs: Vec<_> = ["tank", "tank/a", "tank/b", "tank/b/c"]
        .iter()
        .map(|fs| sim.versions(&ds(fs))[0].createtxg)
        .collect();
    assert!(txgs.windows(2).all(|w| w[0] == w[1]), "{txgs:?}");

    let notices = run.notices();
    assert_eq!(notices.len(), 3);
    assert!(notices.iter().all(|n| n.taken.len() == 5 && !n.had_errors));
    let report = run.report();
    assert_eq!(report.state, State::Waiting);
    assert_eq!(report.sleep_until, Some(ts("2026-01-05T03:00:00Z")));
    assert_eq!(report.n_rounds, 3);
    assert_eq!(report.last_error, None);
    assert_eq!(run.stop().await, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn sync_up_waits_for_the_newest_prefix_snapshot_plus_the_interval_after_a_restart() {
    const T0: &str = "2026-01-05T12:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a", "tank/b", "tank/c"]);
    // tank/b's newest prefix snapshot is the oldest newest one: it sets the sync point.
    sim.setup().snapshot(&[snap("tank/b@zrepl_old")]).unwrap();
    sleep(10 * MINUTE).await;
    sim.setup().snapshot(&[snap("tank/a@zrepl_mid")]).unwrap();
    sleep(5 * MINUTE).await;
    sim.setup().snapshot(&[snap("tank/b@manual")]).unwrap();
    sleep(5 * MINUTE).await;

    let filter = filter(&[("tank/a", true), ("tank/b", true), ("tank/c", true)]);
    let run = start(
        &sim,
        clock,
        filter.clone(),
        snapshotting(HOURLY),
        arc(NoHooks),
    );
    sleep(Duration::from_secs(1)).await;
    let report = run.report();
    assert_eq!(report.state, State::Waiting);
    assert_eq!(report.sleep_until, Some(ts("2026-01-05T13:00:00Z")));
    let reason = report.sync_up.unwrap().reason;
    assert!(
        matches!(&reason, SyncUpReason::Newest { fs, .. } if *fs == ds("tank/b")),
        "{reason:?}"
    );
    sleep(40 * MINUTE - Duration::from_secs(2)).await;
    assert_eq!(sim.op_count(Operation::Snapshot), 0, "too early");
    sleep(Duration::from_secs(2)).await;
    for fs in ["tank/a", "tank/b", "tank/c"] {
        assert_eq!(
            taken(&sim, fs, T0).last().unwrap(),
            "zrepl_20260105_130000_000@3600",
            "{fs}"
        );
    }

    // A restart half an hour later waits for 14:00, not a full interval from the restart.
    sleep(30 * MINUTE).await;
    assert_eq!(run.stop().await, Duration::ZERO);
    let run = start(&sim, clock, filter, snapshotting(HOURLY), arc(NoHooks));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(run.report().sleep_until, Some(ts("2026-01-05T14:00:00Z")));
    sleep(30 * MINUTE).await;
    assert_eq!(sim.op_count(Operation::Snapshot), 2);
    assert_eq!(
        taken(&sim, "tank/c", T0),
        [
            "zrepl_20260105_130000_000@3600",
            "zrepl_20260105_140000_000@7200"
        ]
    );
    run.stop().await;
}

const CRON_BERLIN: &str = "type: cron
prefix: zrepl_
cron: \"30 2 * * *\"
cron_location: Europe/Berlin
";

#[tokio::test(start_paused = true)]
async fn cron_in_berlin_fires_after_the_spring_forward_gap() {
    const T0: &str = "2024-03-30T11:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a"]);
    let run = start(
        &sim,
        clock,
        filter(&[("tank/a", true)]),
        snapshotting(CRON_BERLIN),
        arc(NoHooks),
    );
    sleep(Duration::from_secs(3 * 86_400 + 3600)).await;
    // 02:30 does not exist on 31 March (02:00 CET jumps to 03:00 CEST): the fire is at 03:00
    // CEST = 01:00 UTC; later days fire at 02:30 CEST = 00:30 UTC.
    let names: Vec<String> = snapshots(&sim, "tank/a").into_iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        [
            "zrepl_20240331_010000_000",
            "zrepl_20240401_003000_000",
            "zrepl_20240402_003000_000"
        ]
    );
    let report = run.report();
    assert_eq!(report.sleep_until, Some(ts("2024-04-03T00:30:00Z")));
    assert_eq!(report.n_fires_skipped, 0);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cron_in_berlin_fires_once_in_the_repeated_fall_back_hour() {
    const T0: &str = "2024-10-26T12:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a"]);
    let run = start(
        &sim,
        clock,
        filter(&[("tank/a", true)]),
        snapshotting(CRON_BERLIN),
        arc(NoHooks),
    );
    sleep(2 * 86_400 * Duration::from_secs(1)).await;
    // 02:30 happens twice on 27 October (CEST, then CET): only the first fires.
    let names: Vec<String> = snapshots(&sim, "tank/a").into_iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        ["zrepl_20241027_003000_000", "zrepl_20241028_013000_000"]
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_failing_filesystem_does_not_stop_the_others_and_is_reported() {
    const T0: &str = "2026-01-05T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a", "tank/b", "tank/c"]);
    // Two calls: the batch naming tank/b, then tank/b's own retry.
    sim.inject(Fault::FailOn {
        operation: Operation::Snapshot,
        dataset: ds("tank/b"),
        n_calls: 2,
        kind: ZfsErrorKind::NoSpace,
    });
    let mut run = start(
        &sim,
        clock,
        filter(&[("tank<", true), ("tank", false)]),
        snapshotting(HOURLY),
        arc(NoHooks),
    );
    sleep(30 * MINUTE).await;
    assert_eq!(taken(&sim, "tank/a", T0), ["zrepl_20260105_000000_000@0"]);
    assert_eq!(taken(&sim, "tank/c", T0), ["zrepl_20260105_000000_000@0"]);
    assert!(snapshots(&sim, "tank/b").is_empty());
    // The batch, then one call per filesystem.
    assert_eq!(sim.op_count(Operation::Snapshot), 4);

    let report = run.report();
    assert_eq!(report.state, State::ErrorWait);
    let round = report.round.as_ref().unwrap();
    assert_eq!(round.batch_errors.len(), 1);
    assert_eq!(
        round.filesystem(&ds("tank/a")).unwrap().state,
        FsState::Done
    );
    assert_eq!(
        round.filesystem(&ds("tank/c")).unwrap().state,
        FsState::Done
    );
    match &round.filesystem(&ds("tank/b")).unwrap().state {
        FsState::Error(FsError::Snapshot { snapshot, source }) => {
            assert_eq!(*snapshot, snap("tank/b@zrepl_20260105_000000_000"));
            assert_eq!(source.kind, ZfsErrorKind::NoSpace);
        }
        other => panic!("{other:?}"),
    }
    let error = report.last_error.unwrap();
    assert!(
        matches!(
            error,
            SnapshotterError::Filesystems {
                n_failed: 1,
                n_filesystems: 3,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("tank/b@zrepl_20260105_000000_000"),
        "{error}"
    );
    let notices = run.notices();
    assert_eq!(notices.len(), 1);
    assert!(notices[0].had_errors);
    assert_eq!(
        notices[0].taken,
        [
            snap("tank/a@zrepl_20260105_000000_000"),
            snap("tank/c@zrepl_20260105_000000_000")
        ]
    );

    // The next round, on schedule (no earlier retry), takes all three in one call.
    sleep(HOUR).await;
    assert_eq!(sim.op_count(Operation::Snapshot), 5);
    assert_eq!(
        taken(&sim, "tank/b", T0),
        ["zrepl_20260105_010000_000@3600"]
    );
    let report = run.report();
    assert_eq!(report.state, State::Waiting);
    assert_eq!(report.last_error, None);
    run.stop().await;
}

const HOOKED: &str = "type: periodic
prefix: zrepl_
interval: 1h
hooks:
  - type: command
    path: /hooks/a
  - type: command
    path: /hooks/lock
    err_is_fatal: true
    timeout: 5s
    filesystems: {\"tank/db\": true}
  - type: command
    path: /hooks/c
";

#[tokio::test(start_paused = true)]
async fn hooks_run_in_order_with_zrepls_environment_and_a_fatal_pre_hook_skips_its_filesystem() {
    const T0: &str = "2026-01-05T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a", "tank/db"]);
    let mut hooks = FakeHooks::new(&sim);
    hooks
        .exits
        .insert("/hooks/lock".into(), HookExit::Exited { code: 1 });
    let hooks = arc(hooks);
    let run = start(
        &sim,
        clock,
        filter(&[("tank/a", true), ("tank/db", true)]),
        snapshotting(HOOKED),
        hooks.clone(),
    );
    sleep(30 * MINUTE).await;

    let calls: Vec<String> = hooks
        .calls()
        .iter()
        .map(|c| {
            format!(
                "{} {} {} existed={} timeout={}/{:?} dryrun={:?} snap={}",
                c.path,
                c.env["ZREPL_HOOKTYPE"],
                c.env["ZREPL_FS"],
                c.snapshot_existed,
                c.env["ZREPL_TIMEOUT"],
                c.timeout,
                c.env["ZREPL_DRYRUN"],
                c.env["ZREPL_SNAPNAME"],
            )
        })
        .collect();
    let snap_name = "zrepl_20260105_000000_000";
    let expected: Vec<String> = [
        "/hooks/a pre_snapshot tank/a existed=false timeout=30/30s",
        "/hooks/c pre_snapshot tank/a existed=false timeout=30/30s",
        "/hooks/a pre_snapshot tank/db existed=false timeout=30/30s",
        "/hooks/lock pre_snapshot tank/db existed=false timeout=5/5s",
        // The lock's pre edge failed fatally: its later hooks and the snapshot are skipped,
        // but the hook whose pre edge ran still gets its post edge.
        "/hooks/a post_snapshot tank/db existed=false timeout=30/30s",
        "/hooks/c post_snapshot tank/a existed=true timeout=30/30s",
        "/hooks/a post_snapshot tank/a existed=true timeout=30/30s",
    ]
    .iter()
    .map(|c| format!("{c} dryrun=\"\" snap={snap_name}"))
    .collect();
    assert_eq!(calls, expected);
    assert_eq!(calls.len(), 7);
    assert!(hooks.calls().iter().all(|c| c.env.len() == 5));

    assert_eq!(taken(&sim, "tank/a", T0), [format!("{snap_name}@0")]);
    assert!(snapshots(&sim, "tank/db").is_empty());
    let report = run.report();
    let round = report.round.as_ref().unwrap();
    assert_eq!(
        round.filesystem(&ds("tank/a")).unwrap().state,
        FsState::Done
    );
    let db = round.filesystem(&ds("tank/db")).unwrap();
    match &db.state {
        FsState::Error(FsError::FatalHook { hook, exit, .. }) => {
            assert_eq!(hook, "/hooks/lock");
            assert_eq!(*exit, HookExit::Exited { code: 1 });
        }
        other => panic!("{other:?}"),
    }
    let table: Vec<String> = db
        .hooks
        .iter()
        .map(|h| {
            let step = match h.step {
                Step::Pre { .. } => "pre",
                Step::Snapshot => "snapshot",
                Step::Post { .. } => "post",
            };
            format!("{step}{}={:?}", h.hook, h.status)
        })
        .collect();
    assert_eq!(
        table.join(" "),
        "pre/hooks/a=Ok pre/hooks/lock=Err pre/hooks/c=SkippedDueToFatalErr \
         snapshot=SkippedDueToFatalErr post/hooks/c=SkippedDueToFatalErr \
         post/hooks/lock=SkippedDueToFatalErr post/hooks/a=Ok"
    );
    assert_eq!(report.state, State::ErrorWait);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_outlives_its_timeout_is_given_up_and_the_snapshot_still_taken() {
    const T0: &str = "2026-01-05T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a"]);
    let mut hooks = FakeHooks::new(&sim);
    hooks.hang.push("/hooks/slow".into());
    let config = "type: periodic
prefix: zrepl_
interval: 1h
hooks: [{type: command, path: /hooks/slow, timeout: 2s}]
";
    let run = start(
        &sim,
        clock,
        filter(&[("tank/a", true)]),
        snapshotting(config),
        arc(hooks),
    );
    sleep(MINUTE).await;
    assert_eq!(taken(&sim, "tank/a", T0), ["zrepl_20260105_000000_000@7"]);
    let report = run.report();
    let round = report.round.as_ref().unwrap();
    // The 2 s timeout plus the 5 s grace for the runner; the pre edge failed, so its post
    // edge does not run.
    assert_eq!(
        round.finished_at.unwrap().duration_since(round.started_at),
        jiff::SignedDuration::from_secs(7)
    );
    match &round.filesystem(&ds("tank/a")).unwrap().state {
        FsState::Error(FsError::Hooks { n_failed, exit, .. }) => {
            assert_eq!((*n_failed, exit), (1, &HookExit::TimedOut));
        }
        other => panic!("{other:?}"),
    }
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn manual_never_snapshots() {
    let (sim, clock) = world("2026-01-05T00:00:00Z", &["tank", "tank/a"]);
    let mut run = start(
        &sim,
        clock,
        filter(&[("tank<", true)]),
        snapshotting("type: manual\n"),
        arc(NoHooks),
    );
    sleep(7 * 24 * HOUR).await;
    assert_eq!(sim.op_count(Operation::Snapshot), 0);
    assert_eq!(sim.op_count(Operation::ListDatasets), 0);
    assert!(run.notices().is_empty());
    assert_eq!(run.report().state, State::Manual);
    assert_eq!(run.stop().await, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_waiting_loop_at_once() {
    let (sim, clock) = world("2026-01-05T00:00:00Z", &["tank", "tank/a"]);
    let config = "type: periodic\nprefix: zrepl_\ninterval: 1d\n";
    let run = start(
        &sim,
        clock,
        filter(&[("tank<", true)]),
        snapshotting(config),
        arc(NoHooks),
    );
    sleep(HOUR).await;
    assert_eq!(run.report().state, State::Waiting);
    assert_eq!(sim.op_count(Operation::Snapshot), 1);
    assert_eq!(run.stop().await, Duration::ZERO);
    sleep(7 * 24 * HOUR).await;
    assert_eq!(sim.op_count(Operation::Snapshot), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_shutdown_sender_stops_the_loop_too() {
    let (sim, clock) = world("2026-01-05T00:00:00Z", &["tank", "tank/a"]);
    let run = start(
        &sim,
        clock,
        filter(&[("tank<", true)]),
        snapshotting(HOURLY),
        arc(NoHooks),
    );
    sleep(MINUTE).await;
    drop(run.shutdown);
    run.task.await.unwrap();
    assert_eq!(run.report.borrow().state, State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn the_report_shows_each_phase_of_a_round_while_it_runs() {
    const T0: &str = "2026-01-05T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a"]);
    sim.inject_all([
        Fault::Delay {
            operation: Operation::ListDatasets,
            n_calls: 1,
            duration: 10 * Duration::from_secs(1),
        },
        Fault::Delay {
            operation: Operation::Snapshot,
            n_calls: 1,
            duration: 10 * Duration::from_secs(1),
        },
    ]);
    let run = start(
        &sim,
        clock,
        filter(&[("tank/a", true)]),
        snapshotting("type: cron\nprefix: zrepl_\ncron: \"0 * * * *\"\n"),
        arc(NoHooks),
    );
    sleep(Duration::from_secs(1)).await;
    let report = run.report();
    assert_eq!(report.state, State::Waiting);
    assert_eq!(report.sleep_until, Some(ts("2026-01-05T01:00:00Z")));
    // The round starts at 01:00; listing takes 10 s, then the snapshot call 10 s.
    sleep(HOUR).await;
    let report = run.report();
    assert_eq!((report.state, report.sleep_until), (State::Planning, None));
    sleep(10 * Duration::from_secs(1)).await;
    let report = run.report();
    assert_eq!(report.state, State::Snapshotting);
    let round = report.round.unwrap();
    assert_eq!(round.name.unwrap().as_str(), "zrepl_20260105_010000_000");
    assert_eq!(round.filesystems[0].state, FsState::Snapshotting);
    sleep(10 * Duration::from_secs(1)).await;
    let report = run.report();
    assert_eq!(report.state, State::Waiting);
    assert_eq!(report.sleep_until, Some(ts("2026-01-05T02:00:00Z")));
    let round = report.round.unwrap();
    assert_eq!(round.filesystems[0].state, FsState::Done);
    assert_eq!(
        round.finished_at.unwrap(),
        ts("2026-01-05T01:00:20Z"),
        "{round:?}"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_sync_up_waits_one_interval_then_snapshots() {
    const T0: &str = "2026-01-05T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a"]);
    sim.inject(Fault::Fail {
        operation: Operation::ListVersions,
        n_calls: 1,
        kind: ZfsErrorKind::Other {
            detail: "exit status 1".into(),
        },
    });
    let mut run = start(
        &sim,
        clock,
        filter(&[("tank/a", true)]),
        snapshotting(HOURLY),
        arc(NoHooks),
    );
    sleep(MINUTE).await;
    let report = run.report();
    assert_eq!(report.state, State::SyncUpErrorWait);
    assert_eq!(report.sleep_until, Some(ts("2026-01-05T01:00:00Z")));
    let error = report.last_error.unwrap();
    assert!(matches!(error, SnapshotterError::List(_)), "{error:?}");
    assert!(error.to_string().contains("cannot list"), "{error}");
    assert!(run.notices().is_empty());
    sleep(HOUR).await;
    assert_eq!(
        taken(&sim, "tank/a", T0),
        ["zrepl_20260105_010000_000@3600"]
    );
    let report = run.report();
    assert_eq!((report.state, report.last_error), (State::Waiting, None));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cron_fires_that_pass_during_a_long_round_are_skipped_and_counted() {
    const T0: &str = "2026-01-05T00:00:30Z";
    let (sim, clock) = world(T0, &["tank", "tank/a"]);
    // The first round's snapshot call takes 150 s: the fires at 00:02 and 00:03 pass.
    sim.inject(Fault::Delay {
        operation: Operation::Snapshot,
        n_calls: 1,
        duration: Duration::from_secs(150),
    });
    let run = start(
        &sim,
        clock,
        filter(&[("tank/a", true)]),
        snapshotting("type: cron\nprefix: zrepl_\ncron: \"* * * * *\"\n"),
        arc(NoHooks),
    );
    sleep(5 * MINUTE - Duration::from_secs(31)).await;
    let names: Vec<String> = snapshots(&sim, "tank/a").into_iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        ["zrepl_20260105_000100_000", "zrepl_20260105_000400_000"]
    );
    let report = run.report();
    assert_eq!(report.n_fires_skipped, 2);
    assert_eq!(report.n_rounds, 2);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_round_finishes_it_so_post_hooks_undo_pre_hooks() {
    const T0: &str = "2026-01-05T00:00:00Z";
    let (sim, clock) = world(T0, &["tank", "tank/a"]);
    sim.inject(Fault::Delay {
        operation: Operation::Snapshot,
        n_calls: 1,
        duration: Duration::from_secs(10),
    });
    let hooks = arc(FakeHooks::new(&sim));
    let config = "type: periodic
prefix: zrepl_
interval: 1h
hooks: [{type: command, path: /hooks/lock}]
";
    let run = start(
        &sim,
        clock,
        filter(&[("tank/a", true)]),
        snapshotting(config),
        hooks.clone(),
    );
    sleep(Duration::from_secs(4)).await;
    assert_eq!(run.report().state, State::Snapshotting);
    // The snapshot call has 6 s to go; the stop waits for it and for the post edge.
    assert_eq!(run.stop().await, Duration::from_secs(6));
    let edges: Vec<String> = hooks
        .calls()
        .iter()
        .map(|c| format!("{} {}", c.env["ZREPL_HOOKTYPE"], c.snapshot_existed))
        .collect();
    assert_eq!(edges, ["pre_snapshot false", "post_snapshot true"]);
}
