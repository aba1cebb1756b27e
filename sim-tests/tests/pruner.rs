//! The pruner (`zferry_core::engine::pruner`) over the simulated ZFS: what it destroys, what it
//! never destroys, how it backs off, and what the sim's event log shows it did.
//!
//! Each test builds a world of filesystems with snapshots `s1..sN` (one minute apart), a
//! replication cursor bookmark of job `push`, and runs one side's pruning.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use zferry_core::abstraction::Abstraction;
use zferry_core::backend::{Operation, PlaceholderEncryption, ZfsErrorKind};
use zferry_core::engine::pruner::{
    Cursors, DestroyCandidate, DropReason, FilesystemError, FilesystemOutcome, KeptReason,
    PlannedFilesystem, Protected, PruneReport, Side, SideRequest, SkipReason, execute_side,
    plan_side, prune_side,
};
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::prune::{KeepRule, KeepRules, LastNRule, PruneError, ReplicationCursor};
use zferry_core::queue::ErrorCounters;
use zferry_core::version::Guid;
use zferry_sim::{Action, Actor, Fault, SimZfs};

/// The pool every test uses.
const POOL: &str = "tank";

/// Its capacity, far above what the tests write.
const POOL_BYTES: u64 = 1 << 30;

/// The seed of the simulated world's GUIDs.
const SEED: u64 = 0x5eed_9a0e;

/// The creation time of the first snapshot; each later one is a minute younger.
const START_UNIX: i64 = 1_763_700_000;

/// The sending job.
const JOB: &str = "push";

// ---------------------------------------------------------------------------------------------
// Fixtures

fn ds(name: &str) -> DatasetName {
    DatasetName::parse(name).unwrap_or_else(|e| panic!("dataset {name:?}: {e}"))
}

fn snap(fs: &str, name: &str) -> VersionName {
    VersionName::parse(&format!("{fs}@{name}")).unwrap()
}

fn job() -> JobId {
    JobId::parse(JOB).unwrap()
}

/// A world with one pool whose clock advances a minute per reading.
fn world() -> SimZfs {
    let now = Arc::new(AtomicI64::new(START_UNIX));
    let sim = SimZfs::new(SEED, move || now.fetch_add(60, Ordering::SeqCst));
    sim.setup().create_pool(POOL, POOL_BYTES).unwrap();
    sim
}

/// Creates `fs` with snapshots `s1..=sN`, each after a write.
fn filesystem(sim: &SimZfs, fs: &str, n: u32) {
    let name = ds(fs);
    sim.setup().create_dataset(&name).unwrap();
    for i in 1..=n {
        sim.setup().write(&name, 1 << 20).unwrap();
        sim.setup().snapshot(&[snap(fs, &format!("s{i}"))]).unwrap();
    }
}

/// The GUID of `fs@name`.
fn guid(sim: &SimZfs, fs: &str, name: &str) -> Guid {
    sim.version(&snap(fs, name))
        .unwrap_or_else(|| panic!("{fs}@{name} does not exist"))
        .guid
}

/// Bookmarks `fs@name` as job `push`'s replication cursor.
fn cursor(sim: &SimZfs, fs: &str, name: &str) {
    let guid = guid(sim, fs, name);
    let bookmark = Abstraction::ReplicationCursor { job: job(), guid }
        .bookmark_name(&ds(fs))
        .unwrap()
        .unwrap();
    sim.setup().bookmark(&snap(fs, name), &bookmark).unwrap();
}

/// `last_n` with `count`.
fn last_n(count: u32) -> KeepRules {
    KeepRules::new(vec![KeepRule::LastN(LastNRule {
        count: NonZeroU32::new(count).unwrap(),
        regex: None,
    })])
    .unwrap()
}

/// The snapshot names of `fs`, space-separated, in createtxg order.
fn names(sim: &SimZfs, fs: &str) -> String {
    sim.versions(&ds(fs))
        .iter()
        .filter(|v| v.is_snapshot())
        .map(|v| v.name.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every snapshot destroy in the event log: `(actor, full name, guid)`.
fn destroys(sim: &SimZfs) -> Vec<(Actor, String, Option<Guid>)> {
    sim.events()
        .into_iter()
        .filter(|e| e.action == Action::DestroySnapshot)
        .map(|e| (e.actor, e.object, e.guid))
        .collect()
}

/// The names the daemon destroyed, space-separated, in log order.
fn daemon_destroyed(sim: &SimZfs) -> String {
    destroys(sim)
        .into_iter()
        .filter(|(actor, _, _)| *actor == Actor::Daemon)
        .map(|(_, object, _)| object)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts that the daemon destroyed none of `guids`.
fn assert_never_destroyed(sim: &SimZfs, guids: &[Guid]) {
    for (actor, object, guid) in destroys(sim) {
        if actor == Actor::Daemon {
            let guid = guid.unwrap_or_else(|| panic!("destroy of {object} without guid"));
            assert!(
                !guids.contains(&guid),
                "the daemon destroyed {object} ({guid})"
            );
        }
    }
}

/// The sender-side request over `targets`.
fn sender<'a>(
    targets: &'a [DatasetName],
    rules: &'a KeepRules,
    job: &'a JobId,
    protected: &'a Protected,
) -> SideRequest<'a> {
    SideRequest {
        side: Side::Sender,
        targets,
        rules,
        cursors: Cursors::FromBookmarks(job),
        protected,
    }
}

/// One line per filesystem: `fs outcome`, where outcome is `skipped: reason`,
/// `done d/n`, `planned d/n` or `error: kind`.
fn outcomes(report: &PruneReport) -> String {
    report
        .filesystems
        .iter()
        .map(|f| {
            let outcome = match &f.outcome {
                FilesystemOutcome::Skipped { reason } => format!("skipped: {reason}"),
                FilesystemOutcome::Planned { destroy, of } => format!("planned {destroy}/{of}"),
                FilesystemOutcome::Done { destroyed, of } => format!("done {destroyed}/{of}"),
                FilesystemOutcome::Error { error, destroyed } => {
                    format!("error after {destroyed}: {}", error_kind(error))
                }
            };
            format!("{} {outcome}", f.filesystem)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn error_kind(error: &FilesystemError) -> String {
    match error {
        FilesystemError::Plan(PruneError::CursorMissing { .. }) => "cursor missing".to_owned(),
        FilesystemError::Plan(other) => format!("plan: {other}"),
        FilesystemError::Destroy { snapshot, kind, .. } => format!("destroy @{snapshot}: {kind}"),
        FilesystemError::Relist { .. } => "relist".to_owned(),
        other => other.to_string(),
    }
}

fn lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn the_rules_destroy_the_right_snapshots_with_one_listing() {
    let sim = world();
    for fs in ["tank/a", "tank/b", "tank/c"] {
        filesystem(&sim, fs, 5);
        cursor(&sim, fs, "s5");
    }
    // tank/c is pruned with nothing to destroy: no second listing for it.
    let targets = [ds("tank/a"), ds("tank/b")];
    let (rules, job, protected) = (last_n(2), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    let plan = plan_side(&sim, &sender(&targets, &rules, &job, &protected), &counters)
        .await
        .unwrap();
    assert_eq!(
        sim.op_count(Operation::ListVersions),
        1,
        "one listing for all"
    );
    assert_eq!(
        sim.op_count(Operation::DestroySnapshots),
        0,
        "planning only reads"
    );
    let report = execute_side(&sim, &plan, &mut counters).await;
    assert_eq!(outcomes(&report), "tank/a done 3/3\ntank/b done 3/3");
    assert_eq!((report.n_done(), report.n_destroyed()), (2, 6));
    assert_eq!(names(&sim, "tank/a"), "s4 s5");
    assert_eq!(names(&sim, "tank/b"), "s4 s5");
    assert_eq!(names(&sim, "tank/c"), "s1 s2 s3 s4 s5");
    assert_eq!(
        daemon_destroyed(&sim),
        "tank/a@s1 tank/a@s2 tank/a@s3 tank/b@s1 tank/b@s2 tank/b@s3"
    );
    assert_eq!(
        sim.op_count(Operation::ListVersions),
        3,
        "plus one re-listing each"
    );
    assert_eq!(
        sim.op_count(Operation::DestroySnapshots),
        2,
        "one batch each"
    );
}

#[tokio::test]
async fn the_cursor_and_protected_snapshots_survive_rules_that_would_destroy_them() {
    let sim = world();
    filesystem(&sim, "tank/a", 6);
    cursor(&sim, "tank/a", "s2");
    // The running replication sends s2 -> s4 next.
    let protected: Protected = [
        (ds("tank/a"), guid(&sim, "tank/a", "s2")),
        (ds("tank/a"), guid(&sim, "tank/a", "s4")),
    ]
    .into_iter()
    .collect();
    let never = [guid(&sim, "tank/a", "s2"), guid(&sim, "tank/a", "s4")];
    let targets = [ds("tank/a")];
    let (rules, job) = (last_n(1), job());
    let mut counters = ErrorCounters::new();
    let report = prune_side(
        &sim,
        &sender(&targets, &rules, &job, &protected),
        &mut counters,
    )
    .await
    .unwrap();
    assert_eq!(outcomes(&report), "tank/a done 3/3");
    assert_eq!(names(&sim, "tank/a"), "s2 s4 s6");
    let kept: Vec<String> = report.filesystems[0]
        .kept
        .iter()
        .map(|k| format!("{} {}", k.snapshot, k.reason))
        .collect();
    assert_eq!(
        kept,
        [
            "s2 kept: needed by the running replication",
            "s4 kept: needed by the running replication"
        ]
    );
    assert!(
        report
            .to_string()
            .contains("@s4: kept: needed by the running replication")
    );
    assert_never_destroyed(&sim, &never);

    // Without the protection, the cursor's snapshot is still kept, for its own reason.
    let report = prune_side(
        &sim,
        &sender(&targets, &rules, &job, &Protected::new()),
        &mut counters,
    )
    .await
    .unwrap();
    assert_eq!(names(&sim, "tank/a"), "s2 s6");
    assert_eq!(
        report.filesystems[0].kept[0].reason,
        KeptReason::ReplicationCursor
    );
    assert_never_destroyed(&sim, &never[..1]);
}

#[tokio::test]
async fn a_held_snapshot_fails_its_filesystem_and_the_others_are_still_pruned() {
    let sim = world();
    for fs in ["tank/a", "tank/b", "tank/held"] {
        filesystem(&sim, fs, 4);
        cursor(&sim, fs, "s4");
    }
    sim.user().hold("keep", &[snap("tank/held", "s2")]).unwrap();
    let targets = [ds("tank/a"), ds("tank/b"), ds("tank/held")];
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    counters.record_error(&ds("tank/b")).unwrap();
    let report = prune_side(
        &sim,
        &sender(&targets, &rules, &job, &protected),
        &mut counters,
    )
    .await
    .unwrap();
    // tank/b failed before, so it goes last.
    assert_eq!(
        outcomes(&report),
        lines(
            "tank/a done 3/3
             tank/held error after 2: destroy @s2: is busy (held or in use)
             tank/b done 3/3"
        )
    );
    assert_eq!(names(&sim, "tank/held"), "s2 s4");
    assert_eq!(names(&sim, "tank/a"), "s4");
    assert_eq!(names(&sim, "tank/b"), "s4");
    assert_eq!(
        counters.count(&ds("tank/held")),
        1,
        "the failure is counted"
    );
    assert_eq!(counters.count(&ds("tank/b")), 0, "success resets");
    assert_eq!(report.n_errors(), 1);
    assert!(
        report
            .to_string()
            .contains("`zfs holds tank/held@s2` shows who holds it"),
        "{report}"
    );
    // The next run tries the failed filesystem last.
    let report = prune_side(
        &sim,
        &sender(&targets, &rules, &job, &protected),
        &mut counters,
    )
    .await
    .unwrap();
    assert_eq!(report.filesystems[2].filesystem, ds("tank/held"));
    assert_eq!(counters.count(&ds("tank/held")), 2);
}

#[tokio::test]
async fn a_missing_cursor_fails_its_filesystem_destroys_nothing_and_counts() {
    let sim = world();
    filesystem(&sim, "tank/a", 4);
    cursor(&sim, "tank/a", "s4");
    filesystem(&sim, "tank/new", 4);
    // Another job's cursor does not count.
    let other = Abstraction::ReplicationCursor {
        job: JobId::parse("other").unwrap(),
        guid: guid(&sim, "tank/new", "s4"),
    };
    let bookmark = other.bookmark_name(&ds("tank/new")).unwrap().unwrap();
    sim.setup()
        .bookmark(&snap("tank/new", "s4"), &bookmark)
        .unwrap();
    let targets = [ds("tank/new"), ds("tank/a")];
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    let report = prune_side(
        &sim,
        &sender(&targets, &rules, &job, &protected),
        &mut counters,
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes(&report),
        "tank/a done 3/3\ntank/new error after 0: cursor missing"
    );
    assert_eq!(names(&sim, "tank/new"), "s1 s2 s3 s4");
    assert_eq!(counters.count(&ds("tank/new")), 1);
    assert!(!daemon_destroyed(&sim).contains("tank/new"));
}

#[tokio::test]
async fn placeholders_missing_and_uncorresponded_filesystems_are_skipped_with_a_reason() {
    let sim = world();
    sim.setup().create_dataset(&ds("tank/backup")).unwrap();
    filesystem(&sim, "tank/backup/a", 3);
    sim.setup()
        .create_placeholder(&ds("tank/backup/ph"), PlaceholderEncryption::Inherit)
        .unwrap();
    // A child of a placeholder inherits `on` but is an ordinary received filesystem.
    filesystem(&sim, "tank/backup/ph/kid", 3);
    filesystem(&sim, "tank/backup/orphan", 3);
    let targets = [
        ds("tank/backup/a"),
        ds("tank/backup/ph"),
        ds("tank/backup/ph/kid"),
        ds("tank/backup/gone"),
        ds("tank/backup/orphan"),
    ];
    let given: BTreeMap<DatasetName, ReplicationCursor> = [
        ("tank/backup/a", Some("s3")),
        ("tank/backup/ph", None),
        ("tank/backup/ph/kid", Some("s3")),
        ("tank/backup/gone", None),
    ]
    .into_iter()
    .map(|(fs, at)| {
        let cursor = at.map_or(ReplicationCursor::Missing, |s| {
            ReplicationCursor::At(guid(&sim, fs, s))
        });
        (ds(fs), cursor)
    })
    .collect();
    let (rules, protected) = (last_n(1), Protected::new());
    let request = SideRequest {
        side: Side::Receiver,
        targets: &targets,
        rules: &rules,
        cursors: Cursors::Given(&given),
        protected: &protected,
    };
    let mut counters = ErrorCounters::new();
    let report = prune_side(&sim, &request, &mut counters).await.unwrap();
    assert_eq!(report.side, Side::Receiver);
    assert_eq!(
        outcomes(&report),
        lines(
            "tank/backup/a done 2/2
             tank/backup/gone skipped: filesystem does not exist
             tank/backup/orphan skipped: filesystem has no correspondence on sender
             tank/backup/ph skipped: filesystem is a placeholder
             tank/backup/ph/kid done 2/2"
        )
    );
    assert_eq!(report.n_skipped(), 3);
    assert_eq!(names(&sim, "tank/backup/orphan"), "s1 s2 s3");
    assert!(counters.is_empty(), "skipping is no error");
    let placeholder = report.filesystem(&ds("tank/backup/ph")).unwrap();
    assert_eq!(
        placeholder.outcome,
        FilesystemOutcome::Skipped {
            reason: SkipReason::Placeholder
        }
    );
}

#[tokio::test]
async fn snapshots_changed_by_a_user_between_plan_and_execute_are_not_destroyed() {
    let sim = world();
    filesystem(&sim, "tank/a", 6);
    cursor(&sim, "tank/a", "s6");
    let targets = [ds("tank/a")];
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    let plan = plan_side(&sim, &sender(&targets, &rules, &job, &protected), &counters)
        .await
        .unwrap();
    assert_eq!(outcomes(&plan.report()), "tank/a planned 5/6");
    assert_eq!(
        names(&sim, "tank/a"),
        "s1 s2 s3 s4 s5 s6",
        "a plan destroys nothing"
    );

    // Behind the daemon's back: s2 is replaced by a new snapshot of the same name, s3 is
    // destroyed.
    sim.user()
        .destroy_snapshots(&ds("tank/a"), &[Component::parse("s2").unwrap()])
        .unwrap();
    sim.user()
        .destroy_snapshots(&ds("tank/a"), &[Component::parse("s3").unwrap()])
        .unwrap();
    sim.user().write(&ds("tank/a"), 1 << 20).unwrap();
    sim.user().snapshot(&[snap("tank/a", "s2")]).unwrap();
    let new_s2 = guid(&sim, "tank/a", "s2");

    let report = execute_side(&sim, &plan, &mut counters).await;
    assert_eq!(outcomes(&report), "tank/a done 3/5");
    let dropped: Vec<(String, DropReason)> = report.filesystems[0]
        .dropped
        .iter()
        .map(|d| (d.snapshot.to_string(), d.reason))
        .collect();
    assert_eq!(
        dropped,
        [
            ("s2".to_owned(), DropReason::GuidChanged { now: new_s2 }),
            ("s3".to_owned(), DropReason::Gone),
        ]
    );
    assert_eq!(names(&sim, "tank/a"), "s6 s2");
    assert_never_destroyed(&sim, &[new_s2]);
    assert_eq!(daemon_destroyed(&sim), "tank/a@s1 tank/a@s4 tank/a@s5");
}

#[tokio::test]
async fn a_cursor_that_moves_onto_the_batch_before_execute_keeps_its_snapshot() {
    let sim = world();
    filesystem(&sim, "tank/a", 5);
    cursor(&sim, "tank/a", "s1");
    let targets = [ds("tank/a")];
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    let plan = plan_side(&sim, &sender(&targets, &rules, &job, &protected), &counters)
        .await
        .unwrap();
    // A replication step finishes and moves the cursor to s3.
    cursor(&sim, "tank/a", "s3");
    let report = execute_side(&sim, &plan, &mut counters).await;
    assert_eq!(outcomes(&report), "tank/a done 2/3");
    assert_eq!(
        report.filesystems[0].dropped[0].reason,
        DropReason::NowCursor
    );
    assert_eq!(names(&sim, "tank/a"), "s1 s3 s5");
}

#[tokio::test]
async fn a_failed_relisting_fails_only_that_filesystem_and_destroys_nothing_there() {
    let sim = world();
    for fs in ["tank/a", "tank/b"] {
        filesystem(&sim, fs, 3);
        cursor(&sim, fs, "s3");
    }
    let targets = [ds("tank/a"), ds("tank/b")];
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    let plan = plan_side(&sim, &sender(&targets, &rules, &job, &protected), &counters)
        .await
        .unwrap();
    sim.inject(Fault::Fail {
        operation: Operation::ListVersions,
        n_calls: 1,
        kind: ZfsErrorKind::Other {
            detail: "injected".to_owned(),
        },
    });
    let report = execute_side(&sim, &plan, &mut counters).await;
    assert_eq!(
        outcomes(&report),
        "tank/a error after 0: relist\ntank/b done 2/2"
    );
    assert_eq!(names(&sim, "tank/a"), "s1 s2 s3");
    assert_eq!(counters.count(&ds("tank/a")), 1);
}

#[tokio::test]
async fn a_failed_listing_fails_the_whole_side_before_any_destroy() {
    let sim = world();
    filesystem(&sim, "tank/a", 3);
    cursor(&sim, "tank/a", "s3");
    sim.inject(Fault::Fail {
        operation: Operation::ListVersions,
        n_calls: 1,
        kind: ZfsErrorKind::Other {
            detail: "injected".to_owned(),
        },
    });
    let targets = [ds("tank/a")];
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    let err = prune_side(
        &sim,
        &sender(&targets, &rules, &job, &protected),
        &mut counters,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot prune the sender: listing the snapshots failed")
    );
    assert_eq!(sim.op_count(Operation::DestroySnapshots), 0);
}

/// The second check's assertion: a plan that includes the cursor's snapshot is a bug, and a
/// debug build (tests) panics before any destroy.
#[tokio::test]
#[should_panic(expected = "this is a bug in zferry")]
async fn a_plan_that_includes_the_cursor_snapshot_panics_at_the_second_check() {
    let sim = world();
    filesystem(&sim, "tank/a", 4);
    cursor(&sim, "tank/a", "s2");
    let targets = [ds("tank/a")];
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    let mut plan = plan_side(&sim, &sender(&targets, &rules, &job, &protected), &counters)
        .await
        .unwrap();
    let PlannedFilesystem::Batch(batch) = &mut plan.filesystems[0] else {
        panic!("not planned: {plan:?}")
    };
    batch.destroy.push(DestroyCandidate {
        snapshot: Component::parse("s2").unwrap(),
        guid: guid(&sim, "tank/a", "s2"),
    });
    let _ = execute_side(&sim, &plan, &mut counters).await;
}

#[tokio::test]
async fn a_tampered_plan_destroys_nothing_before_it_panics() {
    let sim = world();
    filesystem(&sim, "tank/a", 4);
    cursor(&sim, "tank/a", "s4");
    let targets = [ds("tank/a")];
    let protected: Protected = [(ds("tank/a"), guid(&sim, "tank/a", "s1"))]
        .into_iter()
        .collect();
    let (rules, job) = (last_n(1), job());
    let mut plan = plan_side(
        &sim,
        &sender(&targets, &rules, &job, &protected),
        &ErrorCounters::new(),
    )
    .await
    .unwrap();
    let PlannedFilesystem::Batch(batch) = &mut plan.filesystems[0] else {
        panic!("not planned: {plan:?}")
    };
    batch.destroy.insert(
        0,
        DestroyCandidate {
            snapshot: Component::parse("s1").unwrap(),
            guid: guid(&sim, "tank/a", "s1"),
        },
    );
    let sim_for_task = sim.clone();
    let outcome = tokio::spawn(async move {
        let mut counters = ErrorCounters::new();
        execute_side(&sim_for_task, &plan, &mut counters).await
    })
    .await;
    let panic = outcome.unwrap_err();
    assert!(panic.is_panic());
    assert_eq!(names(&sim, "tank/a"), "s1 s2 s3 s4");
    assert_eq!(sim.op_count(Operation::DestroySnapshots), 0);
}

#[tokio::test]
async fn targets_whose_parent_is_gone_are_skipped_not_a_side_error() {
    let sim = world();
    filesystem(&sim, "tank/a", 3);
    cursor(&sim, "tank/a", "s3");
    let (rules, job, protected) = (last_n(1), job(), Protected::new());
    let mut counters = ErrorCounters::new();
    // The common root `tank/gone` does not exist: its ancestor is listed instead.
    let gone = [ds("tank/gone/x"), ds("tank/gone/y")];
    let report = prune_side(
        &sim,
        &sender(&gone, &rules, &job, &protected),
        &mut counters,
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes(&report),
        lines(
            "tank/gone/x skipped: filesystem does not exist
             tank/gone/y skipped: filesystem does not exist"
        )
    );
    // A missing target next to an existing one does not stop the existing one.
    let mixed = [ds("tank/a"), ds("tank/b")];
    let report = prune_side(
        &sim,
        &sender(&mixed, &rules, &job, &protected),
        &mut counters,
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes(&report),
        "tank/a done 2/2\ntank/b skipped: filesystem does not exist"
    );
}
