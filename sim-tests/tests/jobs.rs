//! The jobs end to end on the simulated ZFS: push→sink and pull→source joined by the `local`
//! transport, with the real endpoints, the real driver and the real pruner, over simulated
//! days and weeks in virtual time (tokio's paused clock), asserting the exact holds and
//! bookmarks left on both pools.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use zferry_core::backend::{VersionTypes, ZfsBackend};
use zferry_core::clock::{Clock, TokioClock};
use zferry_core::endpoint::receiver::{
    PlaceholderEncryptionConfig, ReceiverConfig, ReceiverEndpoint,
};
use zferry_core::endpoint::sender::{SendOptions, SenderConfig, SenderEndpoint};
use zferry_core::endpoint::{EndpointError, Guarantee, Protection, Receiver, Sender};
use zferry_core::engine::replication::report::RunState;
use zferry_core::filter::Filter;
use zferry_core::job::active::{ActiveJob, ActiveJobConfig, PhaseOutcome, PruneMode, Trigger};
use zferry_core::job::local::{Listener, LocalHub, LocalPull, LocalPush};
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::prune::{KeepRule, KeepRules, LastNRule};
use zferry_core::version::Version;
use zferry_sim::{Actor, SimZfs};

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
        let pulled = ds(&format!("dst/sink/{fs}"));
        assert_eq!(world.snapshots(fs).len(), 10, "{fs}");
        assert_eq!(world.snapshots(&pulled).len(), 30, "{fs}");
        // The last snapshot was taken half an hour before the last pull ran.
        assert_eq!(world.newest(&pulled).guid, world.newest(fs).guid, "{fs}");
        assert_eq!(
            world.abstractions(fs).await,
            vec![world.cursor(fs, "source")]
        );
        assert_eq!(
            world.abstractions(&pulled).await,
            vec![format!(
                "@{}:zrepl_last_received_J_pull",
                world.newest(fs).name
            )]
        );
    }
}
