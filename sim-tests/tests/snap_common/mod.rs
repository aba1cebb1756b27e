//! Helpers shared by the snapshotter and snap-job tests: a simulated world whose clock is the
//! test's virtual tokio clock, config from YAML, and a fake hook runner that records its calls.
#![allow(dead_code, unreachable_pub)] // Each test file uses a different part; `pub` is for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use zferry_core::clock::{Clock, TokioClock};
use zferry_core::engine::snapper::{
    HookExit, HookResult, HookRunner, Snapshotting, SnapshottingConfig,
};
use zferry_core::filter::Filter;
use zferry_core::name::{DatasetName, VersionName};
use zferry_sim::SimZfs;

/// The seed of the simulated world's GUIDs.
pub const SEED: u64 = 0x5a_a9_5e_ed;

/// Pool capacity, far above what the tests write.
pub const POOL_BYTES: u64 = 1 << 40;

pub fn ds(name: &str) -> DatasetName {
    DatasetName::parse(name).unwrap_or_else(|e| panic!("{name:?}: {e}"))
}

pub fn snap(name: &str) -> VersionName {
    VersionName::parse(name).unwrap_or_else(|e| panic!("{name:?}: {e}"))
}

pub fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// A clock reading `start` now, and a world whose creation times read the same clock, with
/// the pools and datasets named (`pool` or `pool/fs`, parents first).
pub fn world(start: &str, datasets: &[&str]) -> (SimZfs, TokioClock) {
    let clock = TokioClock::starting_at(ts(start));
    let sim = SimZfs::new(SEED, move || clock.now().as_second());
    for name in datasets {
        if name.contains('/') {
            sim.setup().create_dataset(&ds(name)).unwrap();
        } else {
            sim.setup().create_pool(name, POOL_BYTES).unwrap();
        }
    }
    (sim, clock)
}

pub fn filter(entries: &[(&str, bool)]) -> Filter {
    Filter::from_entries(entries.iter().copied()).unwrap()
}

pub fn snapshotting(yaml: &str) -> Snapshotting {
    let config: SnapshottingConfig =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    config.build().unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

/// The snapshots of `fs` as `name@creation-unix`, in createtxg order.
pub fn snapshots(sim: &SimZfs, fs: &str) -> Vec<(String, i64)> {
    sim.versions(&ds(fs))
        .into_iter()
        .filter(|v| v.is_snapshot())
        .map(|v| (v.name.to_string(), v.creation_unix))
        .collect()
}

/// One call of the fake hook runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    /// The hook's path.
    pub path: String,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    /// Its timeout.
    pub timeout: Duration,
    /// Whether the snapshot named in the environment existed when the hook ran.
    pub snapshot_existed: bool,
}

/// Records calls and answers with a configured exit per path (success otherwise); a path in
/// `hang` never returns.
#[derive(Debug)]
pub struct FakeHooks {
    pub sim: SimZfs,
    pub exits: BTreeMap<PathBuf, HookExit>,
    pub hang: Vec<PathBuf>,
    pub calls: Mutex<Vec<HookCall>>,
}

impl FakeHooks {
    pub fn new(sim: &SimZfs) -> Self {
        Self {
            sim: sim.clone(),
            exits: BTreeMap::new(),
            hang: Vec::new(),
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn calls(&self) -> Vec<HookCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl HookRunner for FakeHooks {
    async fn run(
        &self,
        command: &Path,
        env: BTreeMap<String, String>,
        timeout: Duration,
    ) -> HookResult {
        let snapshot = format!("{}@{}", env["ZREPL_FS"], env["ZREPL_SNAPNAME"]);
        let snapshot_existed = self.sim.version(&snap(&snapshot)).is_some();
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(HookCall {
                path: command.display().to_string(),
                env,
                timeout,
                snapshot_existed,
            });
        if self.hang.iter().any(|p| p == command) {
            std::future::pending::<()>().await;
        }
        let exit = self
            .exits
            .get(command)
            .cloned()
            .unwrap_or(HookExit::Exited { code: 0 });
        HookResult::new(exit)
    }
}

/// A runner for jobs without hooks: any call is a test failure.
#[derive(Debug)]
pub struct NoHooks;

#[async_trait]
impl HookRunner for NoHooks {
    async fn run(&self, command: &Path, _: BTreeMap<String, String>, _: Duration) -> HookResult {
        panic!("no hook is configured, yet {} ran", command.display());
    }
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
