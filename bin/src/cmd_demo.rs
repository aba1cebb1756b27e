//! `zferry demo`: zferry's main job, a push to a sink with snapshotting and pruning, on the
//! simulated ZFS in virtual time, with seeded faults; it prints status as it goes and a verdict.
//!
//! Nothing here touches a real pool: the pools, their data and the faults are simulated, and
//! the clock is tokio's paused clock, so a simulated week takes seconds and the same seed prints
//! the same run. The job is the real one: the real snapshotter, endpoints, replication driver
//! and pruner.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zferry_core::backend::{Operation, VersionTypes, ZfsBackend, ZfsErrorKind};
use zferry_core::clock::{Clock, TokioClock};
use zferry_core::endpoint::Sender;
use zferry_core::endpoint::receiver::{PlaceholderEncryptionConfig, ReceiverConfig};
use zferry_core::endpoint::sender::{SendOptions, SenderConfig, SenderEndpoint};
use zferry_core::engine::snapper::{HookResult, HookRunner, PeriodicConfig, SnapshottingConfig};
use zferry_core::filter::Filter;
use zferry_core::job::active::{ActiveJob, ActiveJobConfig, PhaseOutcome};
use zferry_core::job::local::{LocalHub, LocalPush};
use zferry_core::job::passive::SinkJob;
use zferry_core::job::push::{PushJob, PushSnapshotting};
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::prune::KeepRules;
use zferry_core::snapshotter::duration::Interval;
use zferry_core::version::Version;
use zferry_sim::{Fault, SimZfs};

/// The longest demo, in simulated days.
const DAYS_MAX: u32 = 366;
/// How many filesystems the demo replicates at most.
const FILESYSTEMS_MAX: u32 = 1000;
/// The simulated pools' capacity.
const POOL_BYTES: u64 = 1 << 44;
/// The demo's keep rules, zrepl's documentation example.
const KEEP_SENDER: &str = "- type: not_replicated\n- type: last_n\n  count: 24\n";
const KEEP_RECEIVER: &str =
    "- type: grid\n  grid: 1x1h(keep=all) | 24x1h | 6x1d | 3x1w\n  regex: \"^zferry_\"\n";

/// Run zferry's main job on simulated pools: a push job snapshots `src/data` and its children
/// hourly, replicates them to a sink on `dst/sink`, and prunes both sides, under seeded faults.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The seed of the simulated pools' GUIDs and of the faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated days to run.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Filesystems below `src/data` (besides `src/data` itself).
    #[arg(long, default_value_t = 3)]
    children: u32,
    /// Per-mille probability that a send breaks off midway or a receive finds the dataset busy.
    #[arg(long, default_value_t = 20)]
    faults_per_mille: u32,
    /// Print status every this many simulated hours.
    #[arg(long, default_value_t = 24)]
    status_every_hours: u32,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    if args.days == 0 || args.days > DAYS_MAX {
        eprintln!("zferry demo: --days must be between 1 and {DAYS_MAX}");
        return ExitCode::from(crate::input::EXIT_BAD_INPUT);
    }
    if args.children > FILESYSTEMS_MAX || args.faults_per_mille > 1000 {
        eprintln!(
            "zferry demo: --children must be at most {FILESYSTEMS_MAX} and --faults-per-mille \
             at most 1000"
        );
        return ExitCode::from(crate::input::EXIT_BAD_INPUT);
    }
    if args.status_every_hours == 0 {
        eprintln!("zferry demo: --status-every-hours must be at least 1");
        return ExitCode::from(crate::input::EXIT_BAD_INPUT);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zferry demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verdict = runtime.block_on(demo(args));
    print!("{}", verdict.text);
    if verdict.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// No hooks are configured; a call is a bug.
#[derive(Debug)]
struct NoHooks;

#[async_trait]
impl HookRunner for NoHooks {
    async fn run(
        &self,
        _command: &Path,
        _env: BTreeMap<String, String>,
        _timeout: Duration,
    ) -> HookResult {
        HookResult::new(zferry_core::engine::snapper::HookExit::SpawnFailed {
            reason: "the demo configures no hooks".to_owned(),
        })
    }
}

struct Verdict {
    ok: bool,
    text: String,
}

fn name(s: &str) -> DatasetName {
    // The demo's names are fixed and valid; a failure here is a bug in this file.
    DatasetName::parse(s).unwrap_or_else(|e| unreachable!("demo dataset {s:?}: {e}"))
}

async fn demo(args: &Args) -> Verdict {
    let start: jiff::Timestamp =
        jiff::Timestamp::from_second(1_767_225_600).unwrap_or(jiff::Timestamp::UNIX_EPOCH); // 2026-01-01T00:00:00Z
    let clock = Arc::new(TokioClock::starting_at(start));
    let sim_clock = Arc::clone(&clock);
    let sim = SimZfs::new(args.seed, move || sim_clock.now().as_second());
    let mut filesystems = vec![name("src/data")];
    filesystems.extend((1..=args.children).map(|i| name(&format!("src/data/fs {i}"))));
    let setup = || -> Result<(), zferry_core::backend::ZfsError> {
        sim.setup().create_pool("src", POOL_BYTES)?;
        sim.setup().create_pool("dst", POOL_BYTES)?;
        for fs in filesystems.iter().chain([&name("dst/sink")]) {
            sim.setup().create_dataset(fs)?;
            sim.setup().write(fs, 1 << 20)?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        return Verdict {
            ok: false,
            text: format!("cannot set up the simulated pools: {e}\n"),
        };
    }
    if args.faults_per_mille > 0 {
        sim.inject_all([
            Fault::FailRandomly {
                operation: Operation::Receive,
                per_mille: args.faults_per_mille,
                kind: ZfsErrorKind::Busy,
            },
            Fault::FailRandomly {
                operation: Operation::Send,
                per_mille: args.faults_per_mille,
                kind: ZfsErrorKind::StreamBroken,
            },
        ]);
    }
    let job = match build_job(&sim, Arc::clone(&clock)) {
        Ok(job) => job,
        Err(e) => {
            return Verdict {
                ok: false,
                text: format!("cannot configure the demo job: {e}\n"),
            };
        }
    };
    let active = job.active();
    let running = tokio::spawn(job.run());
    // The workload: every 20 minutes each filesystem gets new data, so that every snapshot
    // carries some.
    let workload = {
        let sim = sim.clone();
        let filesystems = filesystems.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(20 * 60)).await;
                for fs in &filesystems {
                    // A write fails only if the pool is full, which the demo's pools are not.
                    let _ = sim.user().write(fs, 256 << 10);
                }
            }
        })
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "zferry demo: push job `push` -> sink `sink` on simulated ZFS, seed {}, {} day(s), {} \
         filesystem(s), faults {}/1000\n  keep_sender: not_replicated + last 24; keep_receiver: \
         grid 1x1h(keep=all) | 24x1h | 6x1d | 3x1w",
        args.seed,
        args.days,
        filesystems.len(),
        args.faults_per_mille
    );
    print!("{out}");
    out.clear();
    let hours = args.days * 24;
    let mut hour = 0;
    while hour < hours {
        let step = args.status_every_hours.min(hours - hour);
        tokio::time::sleep(Duration::from_secs(u64::from(step) * 3600)).await;
        hour += step;
        println!(
            "{}",
            status_line(&sim, &active, &filesystems, clock.now()).await
        );
    }
    // The faults heal; one more invocation must bring every filesystem up to date (liveness).
    sim.clear_faults();
    println!(
        "faults healed at {}; waking the job once more",
        clock.now().strftime("%Y-%m-%d %H:%M")
    );
    active.signals().wakeup();
    tokio::time::sleep(Duration::from_secs(1800)).await;
    workload.abort();
    active.signals().shutdown();
    let _ = running.await;
    verdict(&sim, &active, &filesystems).await
}

fn build_job(sim: &SimZfs, clock: Arc<TokioClock>) -> Result<PushJob, String> {
    let backend: Arc<dyn ZfsBackend> = Arc::new(sim.clone());
    let job = |n: &str| JobId::parse(n).map_err(|e| e.to_string());
    let filter = Filter::from_entries([("src/data<", true)]).map_err(|e| e.to_string())?;
    let keep_sender: KeepRules = crate::cmd_prune::parse_rules(KEEP_SENDER, "keep_sender")?;
    let keep_receiver: KeepRules = crate::cmd_prune::parse_rules(KEEP_RECEIVER, "keep_receiver")?;
    let hub = Arc::new(LocalHub::default());
    let sink = Arc::new(SinkJob::new(
        Arc::clone(&backend),
        ReceiverConfig {
            job: job("sink")?,
            root_fs: name("dst/sink"),
            client_identity: None,
            placeholder_encryption: PlaceholderEncryptionConfig::Inherit,
            properties_override: BTreeMap::new(),
            properties_inherit: Vec::new(),
        },
    ));
    hub.register("sink", sink.listener());
    let sender: Arc<dyn Sender> = Arc::new(SenderEndpoint::new(
        Arc::clone(&backend),
        SenderConfig {
            job: job("push")?,
            filter: filter.clone(),
            send: SendOptions::default(),
        },
    ));
    let connect = LocalPush {
        sender,
        hub,
        listener: "sink".to_owned(),
        identity: Component::parse("demo-host").map_err(|e| e.to_string())?,
    };
    let snapshotting = SnapshottingConfig::Periodic(PeriodicConfig {
        prefix: "zferry_".to_owned(),
        interval: Interval::parse("1h").map_err(|e| e.to_string())?,
        hooks: Vec::new(),
        timestamp_format: None,
        timestamp_location: None,
    })
    .build()
    .map_err(|e| e.to_string())?;
    Ok(PushJob::new(
        ActiveJobConfig::new(job("push")?, keep_sender, keep_receiver),
        Arc::new(connect),
        clock,
        PushSnapshotting {
            backend,
            hooks: Arc::new(NoHooks),
            filter,
            snapshotting,
        },
    ))
}

fn received(fs: &DatasetName) -> DatasetName {
    name(&format!("dst/sink/demo-host/{fs}"))
}

fn snapshots(sim: &SimZfs, fs: &DatasetName) -> Vec<Version> {
    sim.versions(fs)
        .into_iter()
        .filter(Version::is_snapshot)
        .collect()
}

async fn status_line(
    sim: &SimZfs,
    active: &ActiveJob,
    filesystems: &[DatasetName],
    now: jiff::Timestamp,
) -> String {
    let status = active.status();
    let (mut sent, mut got) = (0, 0);
    for fs in filesystems {
        sent += snapshots(sim, fs).len();
        got += snapshots(sim, &received(fs)).len();
    }
    let last = status.invocations.last();
    let outcome = |p: Option<&PhaseOutcome>| match p {
        None | Some(PhaseOutcome::NotRun) => "-".to_owned(),
        Some(PhaseOutcome::Done) => "done".to_owned(),
        Some(PhaseOutcome::Failed(e)) => format!("failed ({e})"),
        Some(PhaseOutcome::Cancelled(e)) => format!("cancelled ({e})"),
    };
    format!(
        "{} invocation {:>4}: replication {}, prune sender {}, prune receiver {}; snapshots: \
         {sent} on the sender, {got} on the receiver",
        now.strftime("%Y-%m-%d %H:%M"),
        last.map_or(0, |i| i.number),
        outcome(last.map(|i| &i.replication)),
        outcome(last.map(|i| &i.prune_sender)),
        outcome(last.map(|i| &i.prune_receiver)),
    )
}

/// Checks the end state: every filesystem's newest snapshot arrived with the same data, the
/// sender has exactly one cursor on it and no step holds, the receiver exactly one
/// last-received hold on it.
async fn verdict(sim: &SimZfs, active: &ActiveJob, filesystems: &[DatasetName]) -> Verdict {
    let mut problems = Vec::new();
    for fs in filesystems {
        let Some(newest) = snapshots(sim, fs).last().cloned() else {
            problems.push(format!("{fs}: no snapshot on the sender"));
            continue;
        };
        let copy = received(fs);
        let theirs = snapshots(sim, &copy);
        if theirs.last().map(|v| v.guid) != Some(newest.guid) {
            problems.push(format!(
                "{fs}: the receiver's newest snapshot is not @{}",
                newest.name
            ));
            continue;
        }
        let digest = |d: &DatasetName| {
            VersionName::parse(&format!("{d}@{}", newest.name))
                .ok()
                .and_then(|v| sim.version_digest(&v))
        };
        if digest(fs) != digest(&copy) {
            problems.push(format!(
                "{fs}@{}: the data differs on the receiver",
                newest.name
            ));
        }
        let want_sender = vec![format!("#zrepl_CURSOR_G_{}_J_push", newest.guid.hex16())];
        let want_receiver = vec![format!("@{}:zrepl_last_received_J_sink", newest.name)];
        for (dataset, want) in [(fs, want_sender), (&copy, want_receiver)] {
            match abstractions(sim, dataset).await {
                Ok(have) if have == want => {}
                Ok(have) => problems.push(format!(
                    "{dataset}: abstractions {have:?}, expected {want:?}"
                )),
                Err(e) => problems.push(format!("{dataset}: {e}")),
            }
        }
    }
    let status = active.status();
    let mut text = String::new();
    let _ = writeln!(text, "\nlast replication run:\n{}", status.replication);
    if problems.is_empty() {
        let _ = writeln!(
            text,
            "verdict: OK: every filesystem is replicated up to its newest snapshot with equal \
             data; the sender holds exactly one replication cursor per filesystem and no step \
             holds, the receiver exactly one last-received hold"
        );
    } else {
        let _ = writeln!(text, "verdict: FAILED");
        for p in &problems {
            let _ = writeln!(text, "  {p}");
        }
    }
    Verdict {
        ok: problems.is_empty(),
        text,
    }
}

/// Bookmarks (`#name`) and holds (`@snap:tag`) of one dataset, sorted.
async fn abstractions(sim: &SimZfs, fs: &DatasetName) -> Result<Vec<String>, String> {
    let listing = sim
        .list_versions(std::slice::from_ref(fs), VersionTypes::All)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for v in listing.versions(fs) {
        if v.is_snapshot() {
            let snapshot =
                VersionName::parse(&format!("{fs}@{}", v.name)).map_err(|e| e.to_string())?;
            for tag in sim.holds(&snapshot).await.map_err(|e| e.to_string())? {
                out.push(format!("@{}:{tag}", v.name));
            }
        } else {
            out.push(format!("#{}", v.name));
        }
    }
    out.sort();
    Ok(out)
}
