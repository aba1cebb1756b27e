//! The jobs end to end on the simulated ZFS: push→sink and pull→source joined by the `local`
//! transport, with the real endpoints, the real driver and the real pruner, over simulated
//! days and weeks in virtual time (tokio's paused clock), asserting the exact holds and
//! bookmarks left on both pools.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use zferry_core::backend::{Operation, VersionTypes, ZfsBackend, ZfsErrorKind};
use zferry_core::clock::{Clock, TokioClock};
use zferry_core::endpoint::receiver::{
    PlaceholderEncryptionConfig, ReceiverConfig, ReceiverEndpoint,
};
use zferry_core::endpoint::sender::{SendOptions, SenderConfig, SenderEndpoint};
use zferry_core::endpoint::{EndpointError, Guarantee, Protection, Receiver, Sender};
use zferry_core::engine::pruner::KeptReason;
use zferry_core::engine::replication::report::{FilesystemState, ReportHandle, RunState};
use zferry_core::engine::replication::{DriverConfig, Replication, RunOutcome};
use zferry_core::engine::snapper::{
    HookResult, HookRunner, PeriodicConfig, Snapshotter, Snapshotting, SnapshottingConfig,
};
use zferry_core::filter::Filter;
use zferry_core::job::active::{ActiveJob, ActiveJobConfig, PhaseOutcome, PruneMode, Trigger};
use zferry_core::job::local::{Listener, LocalHub, LocalPull, LocalPush};
use zferry_core::job::passive::{SinkJob, SourceJob};
use zferry_core::job::push::{PushJob, PushSnapshotting};
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::prune::{KeepRule, KeepRules, LastNRule};
use zferry_core::snapshotter::duration::Interval;
use zferry_core::version::Version;
use zferry_sim::{Action, Actor, Fault, SimZfs, StreamBreak};

const SEED: u64 = 0x0b5e_55ed;
const POOL_BYTES: u64 = 1 << 40;
const HOUR: Duration = Duration::from_secs(3600);

fn ds(name: &str) -> DatasetName {
    DatasetName::parse(name).unwrap()
}

fn job(name: &str) -> JobId {
    JobId::parse(name).unwrap()
}

fn last_n(count: u32) -> KeepRules {
    KeepRules::new(vec![KeepRule::LastN(LastNRule {
        count: NonZeroU32::new(count).unwrap(),
        regex: None,
    })])
    .unwrap()
}

/// Pools `src` (with `src/data`, `src/data/a b`, `src/data/a b/c` and an unreplicated
/// `src/other`) and `dst` (with `dst/sink`), on a clock that follows tokio's virtual time.
struct World {
    sim: SimZfs,
    clock: Arc<TokioClock>,
    replicated: Vec<DatasetName>,
    round: u32,
}

impl World {
    fn new() -> Self {
        let start: jiff::Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let clock = Arc::new(TokioClock::starting_at(start));
        let c = Arc::clone(&clock);
        let sim = SimZfs::new(SEED, move || c.now().as_second());
        sim.setup().create_pool("src", POOL_BYTES).unwrap();
        sim.setup().create_pool("dst", POOL_BYTES).unwrap();
        let replicated = vec![ds("src/data"), ds("src/data/a b"), ds("src/data/a b/c")];
        for fs in replicated.iter().chain([&ds("src/other"), &ds("dst/sink")]) {
            sim.setup().create_dataset(fs).unwrap();
        }
        Self {
            sim,
            clock,
            replicated,
            round: 0,
        }
    }

    fn backend(&self) -> Arc<dyn ZfsBackend> {
        Arc::new(self.sim.clone())
    }

    fn filter() -> Filter {
        Filter::from_entries([("src/data<", true)]).unwrap()
    }

    fn sender(&self, name: &str) -> Arc<SenderEndpoint> {
        Arc::new(SenderEndpoint::new(
            self.backend(),
            SenderConfig {
                job: job(name),
                filter: Self::filter(),
                send: SendOptions::default(),
            },
        ))
    }

    fn receiver(&self, name: &str, root: &str, identity: Option<&str>) -> Arc<ReceiverEndpoint> {
        Arc::new(
            ReceiverEndpoint::new(
                self.backend(),
                ReceiverConfig {
                    job: job(name),
                    root_fs: ds(root),
                    client_identity: identity.map(|i| Component::parse(i).unwrap()),
                    placeholder_encryption: PlaceholderEncryptionConfig::Inherit,
                    properties_override: BTreeMap::new(),
                    properties_inherit: Vec::new(),
                },
            )
            .unwrap(),
        )
    }

    /// Writes to every replicated filesystem and snapshots them all at once, as a snapshotter
    /// round does; returns the snapshot's short name.
    fn snapshot_round(&mut self) -> String {
        self.round += 1;
        let name = format!("zferry_{:04}", self.round);
        let snaps: Vec<VersionName> = self
            .replicated
            .iter()
            .map(|fs| {
                self.sim.setup().write(fs, 64 << 10).unwrap();
                VersionName::parse(&format!("{fs}@{name}")).unwrap()
            })
            .collect();
        self.sim.setup().snapshot(&snaps).unwrap();
        name
    }

    fn snapshots(&self, fs: &DatasetName) -> Vec<Version> {
        self.sim
            .versions(fs)
            .into_iter()
            .filter(Version::is_snapshot)
            .collect()
    }

    fn newest(&self, fs: &DatasetName) -> Version {
        self.snapshots(fs).last().cloned().unwrap()
    }

    /// Every bookmark (`#name`) and every hold (`@snap:tag`) of `fs`, sorted.
    async fn abstractions(&self, fs: &DatasetName) -> Vec<String> {
        let listing = self
            .sim
            .list_versions(std::slice::from_ref(fs), VersionTypes::All)
            .await
            .unwrap();
        let mut out = Vec::new();
        for v in listing.versions(fs) {
            if v.is_snapshot() {
                let name = VersionName::parse(&format!("{fs}@{}", v.name)).unwrap();
                for tag in self.sim.holds(&name).await.unwrap() {
                    out.push(format!("@{}:{tag}", v.name));
                }
            } else {
                out.push(format!("#{}", v.name));
            }
        }
        out.sort();
        out
    }

    fn cursor(&self, fs: &DatasetName, job: &str) -> String {
        format!("#zrepl_CURSOR_G_{}_J_{job}", self.newest(fs).guid.hex16())
    }

    /// Checks one replicated filesystem after a run: how many snapshots each side keeps, that
    /// the receiver has the sender's newest, and exactly zrepl's abstractions: one cursor of
    /// `sending_job` on the sender's newest snapshot, one last-received hold of
    /// `receiving_job` on the receiver's.
    async fn assert_replicated(
        &self,
        fs: &DatasetName,
        copy: &DatasetName,
        n_kept: (usize, usize),
        (sending_job, receiving_job): (&str, &str),
    ) {
        assert_eq!(self.snapshots(fs).len(), n_kept.0, "{fs}");
        assert_eq!(self.snapshots(copy).len(), n_kept.1, "{copy}");
        let newest = self.newest(fs);
        assert_eq!(self.newest(copy).guid, newest.guid, "{fs}");
        assert_eq!(
            self.abstractions(fs).await,
            vec![self.cursor(fs, sending_job)],
            "{fs}"
        );
        assert_eq!(
            self.abstractions(copy).await,
            vec![format!(
                "@{}:zrepl_last_received_J_{receiving_job}",
                newest.name
            )],
            "{copy}"
        );
    }

    /// The events in which the daemon destroyed a snapshot.
    fn daemon_destroyed(&self) -> Vec<String> {
        self.sim
            .events()
            .into_iter()
            .filter(|e| e.actor == Actor::Daemon)
            .map(|e| format!("{:?}", e.action))
            .filter(|a| a.contains("DestroySnapshot"))
            .collect()
    }
}

fn sink_listener(world: &World, sink_job: &'static str, root: &'static str) -> Listener {
    let backend = world.backend();
    Listener::Sink(Arc::new(move |identity: &Component| {
        let endpoint = ReceiverEndpoint::new(
            Arc::clone(&backend),
            ReceiverConfig {
                job: job(sink_job),
                root_fs: ds(root),
                client_identity: Some(identity.clone()),
                placeholder_encryption: PlaceholderEncryptionConfig::Inherit,
                properties_override: BTreeMap::new(),
                properties_inherit: Vec::new(),
            },
        )
        .map_err(|e| EndpointError::Config {
            side: "receiver".to_owned(),
            detail: e.to_string(),
        })?;
        let receiver: Arc<dyn Receiver> = Arc::new(endpoint);
        Ok(receiver)
    }))
}

fn push_job(
    world: &World,
    hub: &Arc<LocalHub>,
    protection: Protection,
    keep_sender: KeepRules,
    keep_receiver: KeepRules,
) -> ActiveJob {
    let sender: Arc<dyn Sender> = world.sender("push");
    let mut config = ActiveJobConfig::new(job("push"), keep_sender, keep_receiver);
    config.driver.protection = protection;
    let connect = LocalPush {
        sender,
        hub: Arc::clone(hub),
        listener: "sink".to_owned(),
        identity: Component::parse("host1").unwrap(),
    };
    ActiveJob::new(config, Arc::new(connect), world.clock.clone())
}

fn receiver_path(fs: &DatasetName) -> DatasetName {
    ds(&format!("dst/sink/host1/{fs}"))
}

fn protection(g: Guarantee) -> Protection {
    Protection {
        initial: g,
        incremental: g,
    }
}

/// A week of hourly snapshots, each round followed by an invocation of the push job (as the
/// snapshotter wakes it): every filesystem converges, pruning keeps exactly the last N on
/// each side, and the abstractions are exactly zrepl's: one cursor per filesystem on the
/// newest snapshot, no step holds, one last-received hold on the receiver's newest snapshot.
#[tokio::test(start_paused = true)]
async fn push_to_sink_for_a_week_keeps_exactly_zrepls_abstractions() {
    let mut world = World::new();
    let hub = Arc::new(LocalHub::default());
    hub.register("sink", sink_listener(&world, "sink", "dst/sink"));
    let push = push_job(&world, &hub, Protection::default(), last_n(24), last_n(72));
    for n in 1..=7 * 24 {
        world.snapshot_round();
        push.invocation(n).await;
        let status = push.status();
        let last = status.invocations.last().unwrap();
        assert_eq!(
            last.replication,
            PhaseOutcome::Done,
            "round {n}: {}",
            status.replication
        );
        assert_eq!(last.prune_sender, PhaseOutcome::Done, "round {n}: {last:?}");
        assert_eq!(
            last.prune_receiver,
            PhaseOutcome::Done,
            "round {n}: {last:?}"
        );
        tokio::time::sleep(HOUR).await;
    }
    for fs in &world.replicated {
        let sent = world.snapshots(fs);
        let received = world.snapshots(&receiver_path(fs));
        assert_eq!(sent.len(), 24, "{fs}");
        assert_eq!(received.len(), 72, "{fs}");
        // The receiver's newest 24 are the sender's 24, GUID for GUID, data for data.
        let tail: Vec<_> = received[received.len() - 24..]
            .iter()
            .map(|v| v.guid)
            .collect();
        assert_eq!(
            tail,
            sent.iter().map(|v| v.guid).collect::<Vec<_>>(),
            "{fs}"
        );
        let newest = world.newest(fs);
        assert_eq!(
            world
                .sim
                .version_digest(&VersionName::parse(&format!("{fs}@{}", newest.name)).unwrap()),
            world.sim.version_digest(
                &VersionName::parse(&format!("{}@{}", receiver_path(fs), newest.name)).unwrap()
            ),
        );
        assert_eq!(
            world.abstractions(fs).await,
            vec![world.cursor(fs, "push")],
            "{fs}"
        );
        assert_eq!(
            world.abstractions(&receiver_path(fs)).await,
            vec![format!("@{}:zrepl_last_received_J_sink", newest.name)],
            "{fs}"
        );
    }
    // The sink's client root and the filesystems above the replicated ones are placeholders.
    assert!(world.snapshots(&ds("dst/sink/host1")).is_empty());
    assert!(world.snapshots(&ds("dst/sink/host1/src")).is_empty());
    assert!(world.snapshots(&ds("src/other")).is_empty());
    assert!(!world.daemon_destroyed().is_empty());
}

/// The three protection levels leave exactly zrepl's abstractions after a few rounds.
#[tokio::test(start_paused = true)]
async fn each_protection_level_leaves_zrepls_abstractions() {
    for guarantee in [
        Guarantee::GuaranteeResumability,
        Guarantee::GuaranteeIncremental,
        Guarantee::GuaranteeNothing,
    ] {
        let mut world = World::new();
        let hub = Arc::new(LocalHub::default());
        hub.register("sink", sink_listener(&world, "sink", "dst/sink"));
        let push = push_job(
            &world,
            &hub,
            protection(guarantee),
            KeepRules::default(),
            KeepRules::default(),
        );
        for n in 1..=3 {
            world.snapshot_round();
            push.invocation(n).await;
            tokio::time::sleep(HOUR).await;
        }
        let status = push.status();
        assert_eq!(
            status.replication.state,
            RunState::Done,
            "{guarantee}: {}",
            status.replication
        );
        for fs in &world.replicated {
            let newest = world.newest(fs);
            let (sender, receiver) = match guarantee {
                Guarantee::GuaranteeNothing => (vec![], vec![]),
                _ => (
                    vec![world.cursor(fs, "push")],
                    vec![format!("@{}:zrepl_last_received_J_sink", newest.name)],
                ),
            };
            assert_eq!(world.abstractions(fs).await, sender, "{guarantee} {fs}");
            assert_eq!(
                world.abstractions(&receiver_path(fs)).await,
                receiver,
                "{guarantee} {fs}"
            );
            assert_eq!(
                world.snapshots(&receiver_path(fs)).len(),
                3,
                "{guarantee} {fs}"
            );
        }
    }
}

/// Pull from a source over two simulated days on the job's own interval loop: snapshots are
/// taken on the source at :30 past each hour, the pull job runs every hour on the hour.
#[tokio::test(start_paused = true)]
async fn pull_from_source_on_its_interval() {
    let mut world = World::new();
    let hub = Arc::new(LocalHub::default());
    let source: Arc<dyn Sender> = world.sender("source");
    hub.register("source", Listener::Source(source));
    let receiver: Arc<dyn Receiver> = world.receiver("pull", "dst/sink", None);
    let connect = LocalPull {
        hub: Arc::clone(&hub),
        listener: "source".to_owned(),
        receiver,
    };
    let mut config = ActiveJobConfig::new(job("pull"), last_n(10), last_n(30));
    config.prune_mode = PruneMode::Sequential;
    let pull = Arc::new(ActiveJob::new(
        config,
        Arc::new(connect),
        world.clock.clone(),
    ));
    let signals = pull.signals();
    let runner = {
        let pull = Arc::clone(&pull);
        tokio::spawn(async move { pull.run(Trigger::Interval(HOUR)).await })
    };
    tokio::time::sleep(HOUR / 2).await;
    for _ in 0..48 {
        world.snapshot_round();
        tokio::time::sleep(HOUR).await;
    }
    signals.shutdown();
    runner.await.unwrap();
    let status = pull.status();
    assert!(status.invocations.len() >= 8, "{:?}", status.invocations);
    for fs in &world.replicated {
        // The last snapshot was taken half an hour before the last pull ran.
        let pulled = ds(&format!("dst/sink/{fs}"));
        world
            .assert_replicated(fs, &pulled, (10, 30), ("source", "pull"))
            .await;
    }
}

/// A hook runner for jobs without hooks: any call is a test failure.
#[derive(Debug)]
struct NoHooks;

#[async_trait::async_trait]
impl HookRunner for NoHooks {
    async fn run(
        &self,
        command: &std::path::Path,
        _env: BTreeMap<String, String>,
        _timeout: Duration,
    ) -> HookResult {
        panic!("no hook is configured, yet {command:?} was run");
    }
}

fn hourly(prefix: &str) -> Snapshotting {
    SnapshottingConfig::Periodic(PeriodicConfig {
        prefix: prefix.to_owned(),
        interval: Interval::parse("1h").unwrap(),
        hooks: Vec::new(),
        timestamp_format: None,
        timestamp_location: None,
    })
    .build()
    .unwrap()
}

/// The whole push job for a simulated week: its own periodic snapshotter wakes replication
/// after every round; pruning keeps the last 24 hourly snapshots on the sender and 72 on the
/// receiver. Every round was replicated, and the abstractions are zrepl's.
#[tokio::test(start_paused = true)]
async fn push_job_with_its_snapshotter_for_a_week() {
    let world = World::new();
    let hub = Arc::new(LocalHub::default());
    let sink = Arc::new(SinkJob::new(
        world.backend(),
        ReceiverConfig {
            job: job("sink"),
            root_fs: ds("dst/sink"),
            client_identity: None,
            placeholder_encryption: PlaceholderEncryptionConfig::Inherit,
            properties_override: BTreeMap::new(),
            properties_inherit: Vec::new(),
        },
    ));
    hub.register("sink", sink.listener());
    let sender: Arc<dyn Sender> = world.sender("push");
    let connect = LocalPush {
        sender,
        hub: Arc::clone(&hub),
        listener: "sink".to_owned(),
        identity: Component::parse("host1").unwrap(),
    };
    let push = PushJob::new(
        ActiveJobConfig::new(job("push"), last_n(24), last_n(72)),
        Arc::new(connect),
        world.clock.clone(),
        PushSnapshotting {
            backend: world.backend(),
            hooks: Arc::new(NoHooks),
            filter: World::filter(),
            snapshotting: hourly("zferry_"),
        },
    );
    let active = push.active();
    let snapshotter = push.snapshotter_report();
    let running = tokio::spawn(push.run());
    // A week and a quarter of an hour: the last round's replication has finished.
    tokio::time::sleep(7 * 24 * HOUR + HOUR / 4).await;
    active.signals().shutdown();
    running.await.unwrap();

    let rounds = snapshotter.borrow().n_rounds;
    assert!(rounds >= 7 * 24, "{rounds} rounds");
    let status = active.status();
    assert_eq!(
        status.replication.state,
        RunState::Done,
        "{}",
        status.replication
    );
    let last = status.invocations.last().unwrap();
    assert_eq!(last.prune_order, "concurrent", "{last:?}");
    for fs in &world.replicated {
        assert!(
            world.newest(fs).name.as_str().starts_with("zferry_"),
            "{fs}"
        );
        world
            .assert_replicated(fs, &receiver_path(fs), (24, 72), ("push", "sink"))
            .await;
    }
}

/// A send that breaks after 1000 bytes is a connectivity error: the attempt ends, the next
/// attempt resumes from the receiver's token (`zfs send -t`) and the run completes.
#[tokio::test(start_paused = true)]
async fn an_interrupted_send_is_resumed_by_the_next_attempt() {
    let mut world = World::new();
    world.sim.set_payload_scale(1);
    let hub = Arc::new(LocalHub::default());
    hub.register("sink", sink_listener(&world, "sink", "dst/sink"));
    let push = push_job(
        &world,
        &hub,
        Protection::default(),
        KeepRules::default(),
        KeepRules::default(),
    );
    world.snapshot_round();
    push.invocation(1).await;
    world.snapshot_round();
    world.sim.inject(Fault::BreakSend {
        after_bytes: 1000,
        how: StreamBreak::Error,
    });
    push.invocation(2).await;
    let status = push.status();
    assert_eq!(
        status.replication.state,
        RunState::Done,
        "{}",
        status.replication
    );
    assert_eq!(
        status.replication.attempts.len(),
        2,
        "{}",
        status.replication
    );
    let first = &status.replication.attempts[0];
    assert!(
        first
            .error
            .as_deref()
            .is_some_and(|e| e.contains("broke off")),
        "{first:?}"
    );
    // The broken receive left resumable state, and nothing discarded it: it was resumed.
    let count = |wanted: Action| {
        world
            .sim
            .events()
            .iter()
            .filter(|e| e.actor == Actor::Daemon && e.action == wanted)
            .count()
    };
    assert_eq!(
        count(Action::ReceivePartial),
        1,
        "{:#?}",
        world.sim.events()
    );
    assert_eq!(count(Action::AbortReceive), 0, "{:#?}", world.sim.events());
    for fs in &world.replicated {
        assert_eq!(world.snapshots(&receiver_path(fs)).len(), 2, "{fs}");
        assert_eq!(world.abstractions(fs).await, vec![world.cursor(fs, "push")]);
    }
}

/// Pruning runs while a slow step still streams: the step's `from` and `to`, which the keep
/// rule (last 1) would destroy, are kept with the reason, and the step completes.
#[tokio::test(start_paused = true)]
async fn concurrent_pruning_keeps_what_the_running_plan_needs() {
    let mut world = World::new();
    let hub = Arc::new(LocalHub::default());
    hub.register("sink", sink_listener(&world, "sink", "dst/sink"));
    let mut config = ActiveJobConfig::new(job("push"), last_n(1), last_n(1));
    config.driver.protection = protection(Guarantee::GuaranteeIncremental);
    let connect = LocalPush {
        sender: world.sender("push") as Arc<dyn Sender>,
        hub: Arc::clone(&hub),
        listener: "sink".to_owned(),
        identity: Component::parse("host1").unwrap(),
    };
    let push = ActiveJob::new(config, Arc::new(connect), world.clock.clone());
    world.snapshot_round();
    push.invocation(1).await;
    for _ in 0..3 {
        world.snapshot_round();
    }
    // Every receive of the next invocation takes five minutes: pruning runs meanwhile.
    world.sim.inject(Fault::Delay {
        operation: Operation::Receive,
        n_calls: 100,
        duration: Duration::from_secs(300),
    });
    push.invocation(2).await;
    let status = push.status();
    let last = status.invocations.last().unwrap();
    assert_eq!(
        last.replication,
        PhaseOutcome::Done,
        "{}",
        status.replication
    );
    assert_eq!(last.prune_order, "concurrent");
    let report = last.prune_sender_report.as_ref().unwrap();
    // The base and the two snapshots the running steps still had to send were kept for it;
    // only the newest is kept by the rule.
    assert_eq!(report.filesystems.len(), world.replicated.len());
    for fs in &report.filesystems {
        let kept: Vec<String> = fs
            .kept
            .iter()
            .filter(|k| k.reason == KeptReason::NeededByReplication)
            .map(|k| k.snapshot.to_string())
            .collect();
        assert_eq!(
            kept,
            ["zferry_0001", "zferry_0002", "zferry_0003"],
            "{report:?}"
        );
    }
    for fs in &world.replicated {
        // Every snapshot arrived although the rule keeps only one.
        assert_eq!(world.snapshots(&receiver_path(fs)).len(), 4, "{fs}");
    }
}

/// A step that makes no progress for longer than the watchdog timeout is cancelled and the
/// reason is in the invocation report; pruning still runs.
#[tokio::test(start_paused = true)]
async fn the_watchdog_cancels_a_stalled_replication() {
    let mut world = World::new();
    let hub = Arc::new(LocalHub::default());
    hub.register("sink", sink_listener(&world, "sink", "dst/sink"));
    let mut config = ActiveJobConfig::new(job("push"), KeepRules::default(), KeepRules::default());
    config.prune_mode = PruneMode::Sequential;
    config.watchdog_timeout = Duration::from_secs(600);
    let connect = LocalPush {
        sender: world.sender("push") as Arc<dyn Sender>,
        hub: Arc::clone(&hub),
        listener: "sink".to_owned(),
        identity: Component::parse("host1").unwrap(),
    };
    let push = ActiveJob::new(config, Arc::new(connect), world.clock.clone());
    world.snapshot_round();
    world.sim.inject(Fault::Delay {
        operation: Operation::Send,
        n_calls: 1,
        duration: 24 * HOUR,
    });
    let started = tokio::time::Instant::now();
    push.invocation(1).await;
    let took = started.elapsed();
    let last = push.status().invocations.last().cloned().unwrap();
    match &last.replication {
        PhaseOutcome::Cancelled(reason) => {
            assert!(
                reason.contains("watchdog") && reason.contains("no progress"),
                "{reason}"
            );
        }
        other => panic!("not cancelled: {other:?}"),
    }
    assert!(took < Duration::from_secs(700), "took {took:?}");
    assert_ne!(last.prune_sender, PhaseOutcome::NotRun, "{last:?}");
}

/// A reset cancels the running invocation; a wakeup during a run is kept and runs next.
#[tokio::test(start_paused = true)]
async fn reset_cancels_and_a_wakeup_during_a_run_is_kept() {
    let mut world = World::new();
    let hub = Arc::new(LocalHub::default());
    hub.register("sink", sink_listener(&world, "sink", "dst/sink"));
    let mut config = ActiveJobConfig::new(job("push"), KeepRules::default(), KeepRules::default());
    config.watchdog_timeout = 10 * HOUR;
    let connect = LocalPush {
        sender: world.sender("push") as Arc<dyn Sender>,
        hub: Arc::clone(&hub),
        listener: "sink".to_owned(),
        identity: Component::parse("host1").unwrap(),
    };
    let push = Arc::new(ActiveJob::new(
        config,
        Arc::new(connect),
        world.clock.clone(),
    ));
    world.snapshot_round();
    world.sim.inject(Fault::Delay {
        operation: Operation::Send,
        n_calls: 1,
        duration: 5 * HOUR,
    });
    let signals = push.signals();
    let running = {
        let push = Arc::clone(&push);
        tokio::spawn(async move { push.run(Trigger::Manual).await })
    };
    signals.wakeup();
    tokio::time::sleep(HOUR).await;
    // Running (stuck in the slow send): a reset cancels it, a wakeup queues the next run.
    signals.reset();
    signals.wakeup();
    tokio::time::sleep(HOUR).await;
    signals.shutdown();
    running.await.unwrap();
    let status = push.status();
    assert_eq!(status.invocations.len(), 2, "{:?}", status.invocations);
    assert_eq!(
        status.invocations[0].replication,
        PhaseOutcome::Cancelled("reset by signal".to_owned())
    );
    assert_eq!(
        status.invocations[1].replication,
        PhaseOutcome::Done,
        "{}",
        status.replication
    );
    for fs in &world.replicated {
        assert_eq!(world.snapshots(&receiver_path(fs)).len(), 1, "{fs}");
    }
}

/// The driver alone over the two endpoints of `world`.
fn replication(world: &World, config: DriverConfig) -> Replication {
    Replication::new(
        world.sender("push"),
        world.receiver("sink", "dst/sink", Some("host1")),
        config,
        ReportHandle::default(),
    )
}

/// The daemon's completed receives, by receiving dataset, in order.
fn receives(world: &World) -> Vec<String> {
    world
        .sim
        .events()
        .into_iter()
        .filter(|e| e.actor == Actor::Daemon && e.action == Action::Receive)
        .map(|e| e.object)
        .collect()
}

/// A filesystem whose receive is busy twice is retried after back-offs of 1 s and 2 s, after
/// the healthy filesystems had their turn, and the run completes in one attempt.
#[tokio::test(start_paused = true)]
async fn a_temporarily_failing_filesystem_is_retried_after_the_others() {
    let mut world = World::new();
    let driver = replication(&world, DriverConfig::default());
    world.snapshot_round();
    assert_eq!(driver.run().await, RunOutcome::Done);
    let second = world.snapshot_round();
    world.sim.inject(Fault::FailOn {
        operation: Operation::Receive,
        dataset: receiver_path(&ds("src/data/a b")),
        n_calls: 2,
        kind: ZfsErrorKind::Busy,
    });
    let before = receives(&world).len();
    let started = tokio::time::Instant::now();
    assert_eq!(driver.run().await, RunOutcome::Done);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let report = driver.report().snapshot();
    assert_eq!(report.attempts.len(), 1, "{report}");
    let order: Vec<String> = receives(&world)[before..].to_vec();
    assert_eq!(
        order,
        [
            format!("dst/sink/host1/src/data@{second}"),
            format!("dst/sink/host1/src/data/a b/c@{second}"),
            format!("dst/sink/host1/src/data/a b@{second}"),
        ]
    );
}

/// A filesystem that fails for good does not stop the others; the run fails naming it.
#[tokio::test(start_paused = true)]
async fn a_permanently_failing_filesystem_does_not_block_the_others() {
    let mut world = World::new();
    let driver = replication(&world, DriverConfig::default());
    world.snapshot_round();
    assert_eq!(driver.run().await, RunOutcome::Done);
    world.snapshot_round();
    world.sim.inject(Fault::FailOn {
        operation: Operation::Receive,
        dataset: receiver_path(&ds("src/data")),
        n_calls: 1,
        kind: ZfsErrorKind::Other {
            detail: "injected".to_owned(),
        },
    });
    let outcome = driver.run().await;
    let RunOutcome::Failed { reason } = outcome else {
        panic!("not failed: {outcome:?}");
    };
    assert!(
        reason.starts_with("1 filesystem error; the last: src/data:"),
        "{reason}"
    );
    let report = driver.report().snapshot();
    let attempt = report.attempt().unwrap();
    assert_eq!(
        attempt.filesystems[&ds("src/data")].state,
        FilesystemState::StepError
    );
    for fs in ["src/data/a b", "src/data/a b/c"] {
        assert_eq!(
            attempt.filesystems[&ds(fs)].state,
            FilesystemState::Done,
            "{report}"
        );
        assert_eq!(world.snapshots(&receiver_path(&ds(fs))).len(), 2, "{fs}");
    }
    // The next run picks it up.
    assert_eq!(driver.run().await, RunOutcome::Done);
    assert_eq!(world.snapshots(&receiver_path(&ds("src/data"))).len(), 2);
}

/// A filesystem whose step keeps failing with a temporary error is retried a bounded number of
/// times (planning again in between does not reset the count), then stops for this run.
#[tokio::test(start_paused = true)]
async fn retries_of_a_filesystem_are_bounded() {
    let mut world = World::new();
    let driver = replication(&world, DriverConfig::default());
    world.snapshot_round();
    assert_eq!(driver.run().await, RunOutcome::Done);
    world.snapshot_round();
    world.sim.inject(Fault::FailOn {
        operation: Operation::Receive,
        dataset: receiver_path(&ds("src/data/a b/c")),
        n_calls: 100,
        kind: ZfsErrorKind::Busy,
    });
    let outcome = driver.run().await;
    assert!(matches!(outcome, RunOutcome::Failed { .. }), "{outcome:?}");
    let report = driver.report().snapshot();
    let c = &report.attempt().unwrap().filesystems[&ds("src/data/a b/c")];
    assert_eq!(c.state, FilesystemState::StepError, "{report}");
    assert_eq!(
        c.n_errors,
        zferry_core::error_class::FILESYSTEM_ERRORS_MAX,
        "{report}"
    );
    let receive_calls = world.sim.op_count(Operation::Receive);
    // 3 + 3 for the first run, then 2 healthy receives and 3 failed tries of `c`.
    assert_eq!(receive_calls, 3 + 2 + 3, "{report}");
}

/// A week of pull: the source job's own snapshotter takes hourly snapshots (waking nobody),
/// the pull job runs every two hours; pruning keeps the last 12 on the source and 100 on the
/// puller.
#[tokio::test(start_paused = true)]
async fn pull_from_a_source_with_its_snapshotter_for_a_week() {
    let world = World::new();
    let hub = Arc::new(LocalHub::default());
    let snapshotter = Snapshotter::new(
        world.backend(),
        world.clock.clone(),
        Arc::new(NoHooks),
        World::filter(),
        hourly("zferry_"),
        None,
    );
    let source = SourceJob::new(world.sender("source"), Some(snapshotter));
    hub.register("source", source.listener());
    let connect = LocalPull {
        hub: Arc::clone(&hub),
        listener: "source".to_owned(),
        receiver: world.receiver("pull", "dst/sink", None),
    };
    let pull = Arc::new(ActiveJob::new(
        ActiveJobConfig::new(job("pull"), last_n(12), last_n(100)),
        Arc::new(connect),
        world.clock.clone(),
    ));
    let signals = pull.signals();
    let source_running = tokio::spawn(source.run(signals.subscribe_shutdown()));
    let pull_running = {
        let pull = Arc::clone(&pull);
        tokio::spawn(async move { pull.run(Trigger::Interval(2 * HOUR)).await })
    };
    // Pulls at 0h, 2h, ... 168h; the last snapshot is the one of 168h (taken right before or
    // after that pull), so stop after the pull at 170h.
    tokio::time::sleep(7 * 24 * HOUR + 2 * HOUR + HOUR / 4).await;
    signals.shutdown();
    source_running.await.unwrap();
    pull_running.await.unwrap();
    let status = pull.status();
    let last = status.invocations.last().unwrap();
    assert!(last.number >= 85, "{}", last.number);
    for invocation in &status.invocations {
        assert_eq!(invocation.replication, PhaseOutcome::Done, "{invocation:?}");
    }
    for fs in &world.replicated {
        let pulled = ds(&format!("dst/sink/{fs}"));
        world
            .assert_replicated(fs, &pulled, (12, 100), ("source", "pull"))
            .await;
    }
}

/// A reset while the job is idle is not kept: the next invocation runs to its end. A wakeup
/// does not move a pull job's interval schedule.
#[tokio::test(start_paused = true)]
async fn an_idle_reset_is_dropped_and_a_wakeup_keeps_the_schedule() {
    let mut world = World::new();
    let hub = Arc::new(LocalHub::default());
    let source: Arc<dyn Sender> = world.sender("source");
    hub.register("source", Listener::Source(source));
    let connect = LocalPull {
        hub: Arc::clone(&hub),
        listener: "source".to_owned(),
        receiver: world.receiver("pull", "dst/sink", None),
    };
    let pull = Arc::new(ActiveJob::new(
        ActiveJobConfig::new(job("pull"), KeepRules::default(), KeepRules::default()),
        Arc::new(connect),
        world.clock.clone(),
    ));
    let signals = pull.signals();
    world.snapshot_round();
    let started = tokio::time::Instant::now();
    let runner = {
        let pull = Arc::clone(&pull);
        tokio::spawn(async move { pull.run(Trigger::Interval(HOUR)).await })
    };
    // The first run happens at once; then the job idles until the next hour.
    tokio::time::sleep(HOUR / 4).await;
    signals.reset();
    tokio::time::sleep(HOUR / 4).await;
    signals.wakeup();
    // Runs: at 0 (interval), at 0:30 (wakeup), at 1:00 (interval, not moved by the wakeup).
    tokio::time::sleep(HOUR * 3 / 4).await;
    signals.shutdown();
    runner.await.unwrap();
    let status = pull.status();
    let starts: Vec<u64> = status
        .invocations
        .iter()
        .map(|i| {
            let since = i.started.duration_since(world.clock.now()).unsigned_abs();
            let elapsed = started.elapsed();
            (elapsed.saturating_sub(since)).as_secs() / 60
        })
        .collect();
    assert_eq!(starts, [0, 30, 60], "{:?}", status.invocations);
    for invocation in &status.invocations {
        assert_eq!(invocation.replication, PhaseOutcome::Done, "{invocation:?}");
    }
}
