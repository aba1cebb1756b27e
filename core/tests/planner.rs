//! The planner's cases: zrepl's `diff_test.go` and planner cases ported as a table, plus
//! property tests over generated histories.
//!
//! Fixture syntax, one side per string: versions separated by spaces, each `@name=guid` or
//! `#name=guid`, listed oldest first. The createtxg is implied by position on that side, except
//! that a bookmark of a GUID already listed shares that snapshot's createtxg (as a real bookmark
//! does). A version may name its createtxg explicitly as `@name=guid:txg`.

#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::num::NonZeroUsize;

use proptest::prelude::*;
use zferry_core::name::Component;
use zferry_core::plan::{InitialReplication, Plan, PlanError, PlanPolicy, ResumePoint, Step, plan};
use zferry_core::version::{Guid, Txg, Version};

fn side(fixture: &str) -> Vec<Version> {
    let mut versions: Vec<Version> = Vec::new();
    let mut next_txg = 10;
    for token in fixture.split_whitespace() {
        let (name, rest) = token[1..].split_once('=').expect("name=guid");
        let (guid, txg) = match rest.split_once(':') {
            Some((g, t)) => (g.parse().unwrap(), Some(t.parse().unwrap())),
            None => (rest.parse().unwrap(), None),
        };
        let guid = Guid(guid);
        let txg = txg.unwrap_or_else(|| {
            let shared = versions
                .iter()
                .find(|v| v.guid == guid)
                .map(|v| v.createtxg.0);
            shared.unwrap_or_else(|| {
                next_txg += 10;
                next_txg
            })
        });
        let name = Component::parse(name).unwrap();
        let creation = i64::try_from(txg).unwrap() * 100;
        versions.push(if token.starts_with('@') {
            Version::snapshot(name, guid, Txg(txg), creation)
        } else {
            Version::bookmark(name, guid, Txg(txg), creation)
        });
    }
    versions
}

fn render(result: &Result<Plan, PlanError>) -> String {
    match result {
        Ok(Plan::UpToDate { newest }) => format!("up to date at {newest}"),
        Ok(Plan::Replicate { steps, .. }) => steps
            .iter()
            .map(Step::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => match e {
            PlanError::NoSenderSnapshots { .. } => "conflict: no sender snapshots".into(),
            PlanError::NoCommonAncestor { .. } => "conflict: no common ancestor".into(),
            PlanError::InitialReplicationDisabled { sender_newest } => {
                format!("conflict: initial replication disabled, newest {sender_newest}")
            }
            PlanError::Diverged {
                common,
                sender_only,
                receiver_only,
            } => {
                let names = |v: &[Version]| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                format!(
                    "conflict: diverged after {common}; sender only [{}]; receiver only [{}]",
                    names(sender_only),
                    names(receiver_only)
                )
            }
            PlanError::ResumeTargetGone { only_bookmark, .. } => {
                format!("conflict: resume target gone (only bookmark: {only_bookmark})")
            }
            PlanError::ResumeBaseGone { .. } => "conflict: resume base gone".into(),
            PlanError::ResumeBaseNotOlder { .. } => "conflict: resume base not older".into(),
        },
    }
}

fn policy(initial: InitialReplication, batch: usize) -> PlanPolicy {
    PlanPolicy {
        initial,
        snapshots_per_step_max: NonZeroUsize::new(batch).unwrap(),
    }
}

/// Plans `sender` against `receiver` with the default policy and compares the rendering.
fn check(sender: &str, receiver: &str, expected: &str) {
    check_with(sender, receiver, None, &PlanPolicy::default(), expected);
}

fn check_with(
    sender: &str,
    receiver: &str,
    resume: Option<&ResumePoint>,
    policy: &PlanPolicy,
    expected: &str,
) {
    let result = plan(&side(sender), &side(receiver), resume, policy);
    assert_eq!(
        render(&result),
        expected,
        "sender: {sender}\nreceiver: {receiver}"
    );
    // Input order must not matter.
    let mut s = side(sender);
    let mut r = side(receiver);
    s.reverse();
    r.reverse();
    assert_eq!(
        render(&plan(&s, &r, resume, policy)),
        expected,
        "reversed input"
    );
}

#[test]
fn incremental_path() {
    check("@a=1 @b=2 @c=3", "@a=1", "@a -> @b, @b -> @c");
    check("@a=1 @b=2 @c=3", "@a=1 @b=2", "@b -> @c");
}

#[test]
fn no_common_ancestor() {
    check("@a=1 @b=2", "", "full @b");
    check("@a=1 @b=2", "@x=9", "conflict: no common ancestor");
    check("@a=1 @b=2", "@x=9 @y=10", "conflict: no common ancestor");
}

#[test]
fn divergence_lists_common_sender_only_and_receiver_only() {
    check(
        "@a=1 @b=2 @c=3",
        "@a=1 @x=8 @y=9",
        "conflict: diverged after @a; sender only [@b @c]; receiver only [@x @y]",
    );
    // The receiver's newest is on the sender but an older one is not: that is fine (gap).
    check("@a=1 @c=3 @d=4", "@a=1 @b=2 @c=3", "@c -> @d");
    // The receiver rolled forward past the sender (sender rolled back).
    check(
        "@a=1 @b=2",
        "@a=1 @b=2 @c=3",
        "conflict: diverged after @b; sender only []; receiver only [@c]",
    );
}

#[test]
fn gaps_before_the_common_ancestor_do_not_matter() {
    check("@a=1 @c=3 @e=5 @f=6", "@b=2 @d=4 @e=5", "@e -> @f");
}

#[test]
fn already_up_to_date() {
    check("@a=1 @b=2 @c=3", "@a=1 @b=2 @c=3", "up to date at @c");
    check("@a=1 @b=2 @c=3", "@c=3", "up to date at @c");
    // A sender bookmark newer than its last snapshot does not need sending.
    check("@a=1 #b=2", "@a=1 @b=2", "up to date at #b");
}

#[test]
fn sender_without_snapshots() {
    check("", "", "conflict: no sender snapshots");
    check("", "@a=1", "conflict: no sender snapshots");
    // zrepl#558: only a cursor bookmark left on the sender, empty receiver.
    check("#zrepl_CURSOR=1", "", "conflict: no sender snapshots");
}

#[test]
fn bookmarks_as_base_and_in_between() {
    check("#a=1 @b=2 @c=3", "@a=1", "#a -> @b, @b -> @c");
    check("@a=1 #x=7 @b=2", "@a=1", "@a -> @b");
    check("@a=1 #b=2 @c=3", "@a=1", "@a -> @c");
}

#[test]
fn snapshot_preferred_over_its_bookmark() {
    check("#a=1 @a=1 @b=2", "@a=1", "@a -> @b");
    check("@a=1 #a=1 @b=2", "@a=1", "@a -> @b");
    // A bookmark copy under another name changes nothing.
    check("#a=1 #copy=1 @a=1 @b=2", "@a=1", "@a -> @b");
}

#[test]
fn receiver_bookmarks_are_ignored() {
    check("@a=1 @b=2", "@a=1 #z=99", "@a -> @b");
    check("@a=1 @b=2", "@a=1 #b=2", "@a -> @b");
    // A receiver with only a bookmark counts as empty.
    check("@a=1 @b=2", "#a=1", "full @b");
    check_with(
        "@a=1 @b=2",
        "#a=1",
        None,
        &policy(InitialReplication::Fail, 1),
        "conflict: initial replication disabled, newest @b",
    );
}

#[test]
fn initial_replication_modes_pick_by_createtxg_not_name() {
    // zrepl's ReplicationInitial* platform tests: created in the order @3, @2, @1.
    let sender = "@3=3 @2=2 @1=1";
    check_with(
        sender,
        "",
        None,
        &policy(InitialReplication::MostRecent, 1),
        "full @1",
    );
    check_with(
        sender,
        "",
        None,
        &policy(InitialReplication::All, 1),
        "full @3, @3 -> @2, @2 -> @1",
    );
    check_with(
        sender,
        "",
        None,
        &policy(InitialReplication::Fail, 1),
        "conflict: initial replication disabled, newest @1",
    );
}

#[test]
fn resume_finishes_the_interrupted_step_first() {
    let sender = "@a=1 @b=2 @c=3 @d=4";
    let resume = ResumePoint {
        fromguid: Some(Guid(1)),
        toguid: Guid(2),
        toname: "p/a@b".into(),
    };
    // The receiver's own listing is irrelevant while a partial receive exists.
    check_with(
        sender,
        "@a=1",
        Some(&resume),
        &PlanPolicy::default(),
        "@a -> @b (resuming), @b -> @c, @c -> @d",
    );
    let full = ResumePoint {
        fromguid: None,
        toguid: Guid(2),
        toname: "p/a@b".into(),
    };
    check_with(
        sender,
        "",
        Some(&full),
        &PlanPolicy::default(),
        "full @b (resuming), @b -> @c, @c -> @d",
    );
    // The base may be a bookmark by now.
    check_with(
        "#a=1 @b=2 @c=3",
        "@a=1",
        Some(&resume),
        &PlanPolicy::default(),
        "#a -> @b (resuming), @b -> @c",
    );
    check_with(
        sender,
        "@a=1",
        Some(&resume),
        &policy(InitialReplication::MostRecent, 5),
        "@a -> @b (resuming), @b -I> @d (2 snapshots)",
    );
}

#[test]
fn resume_with_vanished_versions_is_a_named_error() {
    let resume = ResumePoint {
        fromguid: Some(Guid(1)),
        toguid: Guid(2),
        toname: "p/a@b".into(),
    };
    let policy = PlanPolicy::default();
    check_with(
        "@a=1 @c=3",
        "@a=1",
        Some(&resume),
        &policy,
        "conflict: resume target gone (only bookmark: false)",
    );
    check_with(
        "@a=1 #b=2 @c=3",
        "@a=1",
        Some(&resume),
        &policy,
        "conflict: resume target gone (only bookmark: true)",
    );
    check_with(
        "@b=2 @c=3",
        "@a=1",
        Some(&resume),
        &policy,
        "conflict: resume base gone",
    );
    let backwards = ResumePoint {
        fromguid: Some(Guid(3)),
        toguid: Guid(2),
        toname: "p/a@b".into(),
    };
    check_with(
        "@a=1 @b=2 @c=3",
        "@a=1",
        Some(&backwards),
        &policy,
        "conflict: resume base not older",
    );
    let err = plan(&side("@a=1 @c=3"), &[], Some(&resume), &policy).unwrap_err();
    assert!(err.advice().contains("zfs receive -A"), "{}", err.advice());
}

#[test]
fn runs_of_snapshots_merge_into_range_steps() {
    let p = |n| policy(InitialReplication::MostRecent, n);
    let sender = "@a=1 @b=2 @c=3 @d=4 @e=5 @f=6";
    check_with(
        sender,
        "@a=1",
        None,
        &p(3),
        "@a -I> @d (3 snapshots), @d -I> @f (2 snapshots)",
    );
    check_with(sender, "@a=1", None, &p(100), "@a -I> @f (5 snapshots)");
    check_with(sender, "@e=5", None, &p(100), "@e -> @f");
    // -I cannot start at a bookmark: the first step stays single.
    check_with(
        "#a=1 @b=2 @c=3 @d=4",
        "@a=1",
        None,
        &p(3),
        "#a -> @b, @b -I> @d (2 snapshots)",
    );
    // A full send carries one snapshot.
    check_with(
        "@a=1 @b=2 @c=3",
        "",
        None,
        &policy(InitialReplication::All, 2),
        "full @a, @a -I> @c (2 snapshots)",
    );
}

#[test]
fn conflict_messages_say_what_and_advice_says_what_to_do() {
    let err = plan(
        &side("@a=1 @b=2 @c=3"),
        &side("@a=1 @x=8"),
        None,
        &PlanPolicy::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the receiver's newest snapshot @x is not on the sender: the sides diverged after the \
         common snapshot @a; receiver only: @x; sender only: @b @c"
    );
    assert!(err.advice().contains("roll the receiver back"));
    let err = plan(
        &side("@a=1 @b=2"),
        &side("@x=8"),
        None,
        &PlanPolicy::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no common snapshot or bookmark between sender and receiver: newest sender snapshot @b, \
         newest receiver snapshot @x (1 receiver snapshots, none of them on the sender)"
    );
    let many: String = (1..=9).map(|i| format!("@s{i}={i} ")).collect();
    let err = plan(
        &side("@a=100"),
        &side(&format!("@a=100 {many}")),
        None,
        &PlanPolicy::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("receiver only: @s1 @s2 @s3 @s4 @s5 and 4 more; sender only: none"),
        "{err}"
    );
}

// ---- property tests ----------------------------------------------------------------------

/// What became of one snapshot of the shared history on each side.
#[derive(Debug, Clone, Copy)]
enum OnSender {
    Snapshot,
    Bookmark,
    SnapshotAndBookmark,
    Gone,
}

#[derive(Debug, Clone)]
struct Scenario {
    sender: Vec<Version>,
    receiver: Vec<Version>,
    batch: usize,
    initial: InitialReplication,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let fate = prop_oneof![
        4 => Just(OnSender::Snapshot),
        1 => Just(OnSender::Bookmark),
        1 => Just(OnSender::SnapshotAndBookmark),
        1 => Just(OnSender::Gone),
    ];
    (
        prop::collection::vec((fate, any::<bool>()), 0..24),
        0usize..25,
        0usize..3,
        any::<bool>(),
        1usize..6,
        prop_oneof![
            Just(InitialReplication::MostRecent),
            Just(InitialReplication::All)
        ],
    )
        .prop_map(
            |(history, received_len, n_diverged, receiver_bookmark, batch, initial)| {
                let mut sender = Vec::new();
                let mut receiver = Vec::new();
                for (i, (fate, kept_on_receiver)) in history.iter().enumerate() {
                    let guid = Guid(1000 + i as u64);
                    let txg = Txg(10 * (i as u64 + 1));
                    let name = Component::parse(&format!("s{i}")).unwrap();
                    let creation = i as i64;
                    if matches!(fate, OnSender::Snapshot | OnSender::SnapshotAndBookmark) {
                        sender.push(Version::snapshot(name.clone(), guid, txg, creation));
                    }
                    if matches!(fate, OnSender::Bookmark | OnSender::SnapshotAndBookmark) {
                        sender.push(Version::bookmark(name.clone(), guid, txg, creation));
                    }
                    // The receiver got a prefix of the history, with some of it pruned since; the
                    // newest received snapshot is never pruned (the last-received hold).
                    let received = i < received_len.min(history.len());
                    let newest_received = i + 1 == received_len.min(history.len());
                    if received && (*kept_on_receiver || newest_received) {
                        // Another pool: other createtxgs, same order.
                        receiver.push(Version::snapshot(
                            name,
                            guid,
                            Txg(3 * i as u64 + 1),
                            creation,
                        ));
                    }
                }
                let base_txg = 3 * history.len() as u64 + 1;
                for d in 0..n_diverged {
                    let name = Component::parse(&format!("r{d}")).unwrap();
                    let v =
                        Version::snapshot(name, Guid(9000 + d as u64), Txg(base_txg + d as u64), 0);
                    receiver.push(v);
                }
                if receiver_bookmark {
                    let name = Component::parse("rb").unwrap();
                    receiver.push(Version::bookmark(name, Guid(7777), Txg(base_txg + 99), 0));
                }
                Scenario {
                    sender,
                    receiver,
                    batch,
                    initial,
                }
            },
        )
}

/// Applies the steps to the receiver's snapshot GUIDs as `zfs recv` without `-F` would, failing
/// on anything ZFS would refuse, and returns the final list.
fn apply(sc: &Scenario, steps: &[Step]) -> Result<Vec<Guid>, String> {
    let mut recv: Vec<Guid> = sc
        .receiver
        .iter()
        .filter(|v| v.is_snapshot())
        .map(|v| v.guid)
        .collect();
    let mut last_to_txg = None;
    for step in steps {
        match &step.from {
            None => {
                if !recv.is_empty() {
                    return Err(format!("full send {step} onto a receiver with snapshots"));
                }
            }
            Some(from) => {
                if !sc.sender.contains(from) {
                    return Err(format!("base {from} is not on the sender"));
                }
                if recv.last() != Some(&from.guid) {
                    return Err(format!("base {from} is not the receiver's newest snapshot"));
                }
                if from.createtxg >= step.to.createtxg {
                    return Err(format!("step {step} goes backwards"));
                }
                if !from.is_snapshot() && !step.intermediates.is_empty() {
                    return Err(format!("-I from a bookmark: {step}"));
                }
            }
        }
        if step.n_snapshots() > sc.batch {
            return Err(format!(
                "step {step} carries more than {} snapshots",
                sc.batch
            ));
        }
        for v in step.received() {
            if !v.is_snapshot() || !sc.sender.contains(v) {
                return Err(format!("{v} is not a sender snapshot"));
            }
            if last_to_txg.is_some_and(|t| v.createtxg <= t) {
                return Err(format!("{v} does not come after the previous snapshot"));
            }
            last_to_txg = Some(v.createtxg);
            recv.push(v.guid);
        }
    }
    Ok(recv)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn applied_plans_converge_and_conflicts_are_real(sc in scenario()) {
        let policy = policy(sc.initial, sc.batch);
        let sender_newest = sc.sender.iter().filter(|v| v.is_snapshot()).max_by_key(|v| v.createtxg);
        let sender_guids: Vec<Guid> = sc.sender.iter().map(|v| v.guid).collect();
        let recv_snaps: Vec<&Version> = sc.receiver.iter().filter(|v| v.is_snapshot()).collect();
        let recv_newest = recv_snaps.iter().max_by_key(|v| v.createtxg);
        match plan(&sc.sender, &sc.receiver, None, &policy) {
            Ok(Plan::Replicate { steps, .. }) => {
                prop_assert!(!steps.is_empty());
                let recv = apply(&sc, &steps).map_err(TestCaseError::fail)?;
                prop_assert_eq!(recv.last().copied(), sender_newest.map(|v| v.guid));
            }
            Ok(Plan::UpToDate { newest }) => {
                prop_assert_eq!(recv_newest.map(|v| v.guid), Some(newest.guid));
                let newer = sc.sender.iter().any(|v| v.is_snapshot() && v.createtxg > newest.createtxg);
                prop_assert!(!newer, "up to date although the sender has newer snapshots");
            }
            Err(PlanError::NoSenderSnapshots { .. }) => prop_assert!(sender_newest.is_none()),
            Err(PlanError::NoCommonAncestor { .. }) => {
                prop_assert!(!recv_snaps.is_empty());
                prop_assert!(recv_snaps.iter().all(|v| !sender_guids.contains(&v.guid)));
            }
            Err(PlanError::Diverged { receiver_only, .. }) => {
                prop_assert!(!receiver_only.is_empty());
                prop_assert!(receiver_only.iter().all(|v| !sender_guids.contains(&v.guid)));
                let newest = recv_newest.map(|v| v.guid);
                prop_assert!(newest.is_some_and(|g| !sender_guids.contains(&g)));
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
        // Whenever the receiver's newest snapshot is on the sender, there must be a plan.
        if recv_newest.is_some_and(|newest| sender_guids.contains(&newest.guid)) {
            prop_assert!(plan(&sc.sender, &sc.receiver, None, &policy).is_ok());
        }
    }

    #[test]
    fn plans_do_not_depend_on_input_order(sc in scenario(), seed in any::<u64>()) {
        let policy = policy(sc.initial, sc.batch);
        let mut sender = sc.sender.clone();
        let mut receiver = sc.receiver.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..sender.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            sender.swap(i, (x % (i as u64 + 1)) as usize);
        }
        receiver.reverse();
        prop_assert_eq!(
            plan(&sc.sender, &sc.receiver, None, &policy),
            plan(&sender, &receiver, None, &policy)
        );
    }

    #[test]
    fn resumed_plans_chain_from_the_interrupted_step(sc in scenario(), pick in any::<prop::sample::Index>()) {
        let policy = policy(sc.initial, sc.batch);
        let snapshots: Vec<&Version> = sc.sender.iter().filter(|v| v.is_snapshot()).collect();
        prop_assume!(!snapshots.is_empty());
        let to = snapshots[pick.index(snapshots.len())];
        let resume = ResumePoint { fromguid: None, toguid: to.guid, toname: format!("p/a@{}", to.name) };
        let result = plan(&sc.sender, &[], Some(&resume), &policy);
        let Ok(Plan::Replicate { steps, .. }) = result else {
            return Err(TestCaseError::fail(format!("no plan: {result:?}")));
        };
        prop_assert!(steps[0].resumed && steps[0].to == *to && steps[0].from.is_none());
        prop_assert!(steps[1..].iter().all(|s| !s.resumed));
        let empty = Scenario { receiver: Vec::new(), ..sc.clone() };
        let recv = apply(&empty, &steps).map_err(TestCaseError::fail)?;
        prop_assert_eq!(recv.last().copied(), snapshots.last().map(|v| v.guid));
    }
}
