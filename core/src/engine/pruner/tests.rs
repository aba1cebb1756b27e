//! Pure tests of the pruner's two checks: the batch built from the rules' verdicts (first
//! check) and the re-check against a fresh listing (second check). The backend-driven tests
//! are in `sim-tests/tests/pruner.rs`.

use super::*;
use crate::version::Txg;

const FS: &str = "pool/data";

fn fs() -> DatasetName {
    DatasetName::parse(FS).unwrap()
}

fn rules(yaml: &str) -> KeepRules {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("rules {yaml:?}: {e}"))
}

/// Versions, one a line: `@name guid txg` (creation = txg) or `#name guid txg` for bookmarks.
fn versions(fixture: &str) -> Vec<Version> {
    fixture
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (kind, name) = fields[0].split_at(1);
            let name = Component::parse(name).unwrap();
            let guid = Guid(fields[1].parse().unwrap());
            let txg: u64 = fields[2].parse().unwrap();
            let creation = i64::try_from(txg).unwrap();
            match kind {
                "@" => Version::snapshot(name, guid, Txg(txg), creation),
                "#" => Version::bookmark(name, guid, Txg(txg), creation),
                other => panic!("unknown kind {other:?} in {line:?}"),
            }
        })
        .collect()
}

fn protected(guids: &[u64]) -> Protected {
    guids.iter().map(|g| (fs(), Guid(*g))).collect()
}

/// Renders a planned filesystem: `destroy a b` then one `keep x: reason` line per override.
fn render(planned: &PlannedFilesystem) -> String {
    match planned {
        PlannedFilesystem::Skipped { reason, .. } => format!("skipped: {reason}"),
        PlannedFilesystem::Failed { error, .. } => format!("error: {error}"),
        PlannedFilesystem::Batch(batch) => {
            let mut lines = vec![format!(
                "destroy{}",
                batch
                    .destroy
                    .iter()
                    .map(|c| format!(" {}", c.snapshot))
                    .collect::<String>()
            )];
            for kept in &batch.kept {
                lines.push(format!("{} {}", kept.snapshot, kept.reason));
            }
            lines.join("\n")
        }
    }
}

/// Plans `fixture` under `rules_yaml` with the cursor at `cursor` and checks the rendering.
fn check(rules_yaml: &str, fixture: &str, cursor: ReplicationCursor, prot: &[u64], want: &str) {
    let planned = plan_one(
        &fs(),
        &versions(fixture),
        &rules(rules_yaml),
        cursor,
        &protected(prot),
    );
    let want: Vec<&str> = want
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(render(&planned), want.join("\n"), "fixture:\n{fixture}");
}

const FIVE: &str = "
    @s1 1 10
    @s2 2 20
    @s3 3 30
    @s4 4 40
    @s5 5 50
";

#[test]
fn rules_destroy_what_no_rule_keeps() {
    check(
        "- type: last_n\n  count: 2\n",
        FIVE,
        ReplicationCursor::At(Guid(5)),
        &[],
        "destroy s1 s2 s3",
    );
}

#[test]
fn the_cursor_snapshot_is_kept_whatever_the_rules_say() {
    check(
        "- type: last_n\n  count: 1\n",
        FIVE,
        ReplicationCursor::At(Guid(3)),
        &[],
        "destroy s1 s2 s4
         s3 kept: the replication cursor's snapshot (last common base)",
    );
}

#[test]
fn protected_snapshots_are_kept_and_say_so() {
    check(
        "- type: last_n\n  count: 1\n",
        FIVE,
        ReplicationCursor::At(Guid(5)),
        &[2, 4],
        "destroy s1 s3
         s2 kept: needed by the running replication
         s4 kept: needed by the running replication",
    );
}

#[test]
fn the_newest_snapshot_is_kept() {
    check(
        "- type: regex\n  regex: '^manual'\n",
        FIVE,
        ReplicationCursor::At(Guid(1)),
        &[],
        "destroy s2 s3 s4
         s1 kept: the replication cursor's snapshot (last common base)
         s5 kept: the newest snapshot",
    );
}

#[test]
fn a_missing_cursor_is_an_error_and_destroys_nothing() {
    check(
        "- type: last_n\n  count: 1\n",
        FIVE,
        ReplicationCursor::Missing,
        &[],
        "error: `pool/data` is not pruned: the sender has no replication cursor for it, so it \
         cannot tell replicated snapshots from new ones; pruning starts after the first \
         successful replication",
    );
}

#[test]
fn no_rules_destroy_nothing() {
    check("[]", FIVE, ReplicationCursor::At(Guid(5)), &[], "destroy");
}

/// The batch of `last_n: 1` over [`FIVE`] with the cursor at s5: destroy s1..s4.
fn batch() -> FilesystemBatch {
    match plan_one(
        &fs(),
        &versions(FIVE),
        &rules("- type: last_n\n  count: 1\n"),
        ReplicationCursor::At(Guid(5)),
        &Protected::new(),
    ) {
        PlannedFilesystem::Batch(b) => b,
        other => panic!("{other:?}"),
    }
}

/// Re-checks [`batch`] against `now` and renders `destroy ...` and one line per dropped one.
fn recheck(now: &str, cursor_now: Option<u64>) -> String {
    let got = recheck_batch(
        &batch(),
        &versions(now),
        cursor_now.map(Guid),
        &Protected::new(),
    )
    .unwrap_or_else(|v| panic!("violation {v:?}"));
    let mut lines = vec![format!(
        "destroy{}",
        got.destroy
            .iter()
            .map(|c| format!(" {c}"))
            .collect::<String>()
    )];
    for d in &got.dropped {
        lines.push(format!("{} {}", d.snapshot, d.reason));
    }
    lines.join("\n")
}

#[test]
fn recheck_keeps_an_unchanged_batch() {
    assert_eq!(recheck(FIVE, Some(5)), "destroy s1 s2 s3 s4");
}

#[test]
fn recheck_drops_what_changed_since_planning() {
    let now = "
        @s1 1 10
        @s2 99 25
        @s3 3 30
        @s4 4 40
        #zrepl_CURSOR_G_0000000000000003_J_job 3 30
    ";
    // s5 is gone (so s4 is newest), s2 was replaced, the cursor moved back to s3.
    assert_eq!(
        recheck(now, Some(3)),
        "destroy s1
         s2 not destroyed: the name now belongs to another snapshot (guid 99)
         s3 not destroyed: it is now the replication cursor's
         s4 not destroyed: it is now the newest snapshot"
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn recheck_drops_snapshots_that_are_gone() {
    let now = "@s2 2 20\n@s5 5 50";
    assert_eq!(
        recheck(now, Some(5)),
        "destroy s2\ns1 not destroyed: it is already gone\n\
         s3 not destroyed: it is already gone\ns4 not destroyed: it is already gone"
    );
}

#[test]
fn recheck_refuses_a_batch_with_what_the_plan_must_keep() {
    for (guid, what) in [
        (2, ViolatedRule::Protected),
        (5, ViolatedRule::Cursor),
        (6, ViolatedRule::Newest),
    ] {
        let mut b = batch();
        b.cursor = Some(Guid(5));
        b.newest = Some(Guid(6));
        b.destroy.push(DestroyCandidate {
            snapshot: Component::parse(&format!("x{guid}")).unwrap(),
            guid: Guid(guid),
        });
        let protected = if guid == 2 {
            protected(&[2])
        } else {
            Protected::new()
        };
        let got = recheck_batch(&b, &versions(FIVE), Some(Guid(5)), &protected);
        assert_eq!(got.map_err(|v| v.what), Err(what), "guid {guid}");
    }
}

#[test]
fn common_root_is_the_deepest_shared_ancestor() {
    let names = |s: &str| -> Vec<DatasetName> {
        s.split(',')
            .map(|n| DatasetName::parse(n).unwrap())
            .collect()
    };
    let root = |s: &str| common_root(&names(s)).map(|d| d.to_string());
    assert_eq!(root("p/a/b,p/a/c"), Some("p/a".to_owned()));
    assert_eq!(root("p/a/b"), Some("p/a/b".to_owned()));
    assert_eq!(root("p/a,p/a/b"), Some("p/a".to_owned()));
    assert_eq!(root("p/ab,p/a"), Some("p".to_owned()));
    assert_eq!(root("p/a,q/a"), None);
    assert_eq!(common_root(&[]), None);
}

#[test]
fn the_report_counts_and_renders_each_outcome() {
    let d = |n: &str| DatasetName::parse(n).unwrap();
    let report = PruneReport {
        side: Side::Receiver,
        filesystems: vec![
            FilesystemReport {
                filesystem: d("b/a"),
                outcome: FilesystemOutcome::Done {
                    destroyed: 3,
                    of: 3,
                },
                kept: vec![KeptOverride {
                    snapshot: Component::parse("s9").unwrap(),
                    guid: Guid(9),
                    reason: KeptReason::NeededByReplication,
                }],
                dropped: Vec::new(),
            },
            FilesystemReport {
                filesystem: d("b/p"),
                outcome: FilesystemOutcome::Skipped {
                    reason: SkipReason::Placeholder,
                },
                kept: Vec::new(),
                dropped: Vec::new(),
            },
            FilesystemReport {
                filesystem: d("b/h"),
                outcome: FilesystemOutcome::Error {
                    error: FilesystemError::Destroy {
                        filesystem: d("b/h"),
                        snapshot: Component::parse("s1").unwrap(),
                        kind: ZfsErrorKind::Busy,
                        n_destroyed: 1,
                    },
                    destroyed: 1,
                },
                kept: Vec::new(),
                dropped: Vec::new(),
            },
        ],
        counters_full: Vec::new(),
    };
    assert_eq!(
        (
            report.n_done(),
            report.n_skipped(),
            report.n_errors(),
            report.n_destroyed()
        ),
        (1, 1, 1, 4)
    );
    assert_eq!(
        report.to_string(),
        "receiver pruning: 1 done, 1 skipped, 1 failed, 4 snapshot(s) destroyed
  b/a: destroyed 3 of 3
    @s9: kept: needed by the running replication
  b/p: skipped: filesystem is a placeholder
  b/h: error: cannot destroy `b/h@s1`: is busy (held or in use) (`zfs holds b/h@s1` shows who \
holds it); 1 other snapshot(s) of the batch were destroyed, it is tried again next time
"
    );
}

#[test]
fn bookmarks_are_never_in_a_batch() {
    let fixture = format!("{FIVE}\n#b1 1 10\n#b2 2 20");
    let planned = plan_one(
        &fs(),
        &versions(&fixture),
        &rules("- type: last_n\n  count: 1\n"),
        ReplicationCursor::At(Guid(5)),
        &Protected::new(),
    );
    let PlannedFilesystem::Batch(batch) = planned else {
        panic!("{planned:?}")
    };
    assert!(
        batch
            .destroy
            .iter()
            .all(|c| c.snapshot.as_str().starts_with('s'))
    );
    assert_eq!(batch.n_snapshots, 5);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// `n` snapshots `s1..sn` with GUIDs 1..n in createtxg order.
    fn history(n: u64) -> Vec<Version> {
        (1..=n)
            .map(|i| {
                let creation = i64::try_from(i).unwrap() * 60;
                Version::snapshot(
                    Component::parse(&format!("s{i}")).unwrap(),
                    Guid(i),
                    Txg(i * 10),
                    creation,
                )
            })
            .collect()
    }

    proptest! {
        /// Whatever the rules, the first check never puts the cursor's snapshot, a protected
        /// one or the newest into a batch; together with the kept overrides the batch is
        /// exactly what the rules destroy; and an unchanged world passes the second check
        /// with the whole batch.
        #[test]
        fn a_batch_never_holds_what_must_stay(
            n in 1u64..40,
            count in 1u32..45,
            cursor_at in 0u64..40,
            protected_mask in any::<u64>(),
            not_replicated in any::<bool>(),
        ) {
            let versions = history(n);
            let cursor = Guid(cursor_at % n + 1);
            let protected: Protected = (1..=n)
                .filter(|i| protected_mask & (1 << i) != 0)
                .map(|i| (fs(), Guid(i)))
                .collect();
            let mut yaml = format!("- type: last_n\n  count: {count}\n");
            if not_replicated {
                yaml.push_str("- type: not_replicated\n  keep_snapshot_at_cursor: false\n");
            }
            let rules = rules(&yaml);
            let planned = plan_one(
                &fs(),
                &versions,
                &rules,
                ReplicationCursor::At(cursor),
                &protected,
            );
            let PlannedFilesystem::Batch(batch) = planned else {
                panic!("not planned: {planned:?}")
            };
            for c in &batch.destroy {
                prop_assert_ne!(c.guid, cursor);
                prop_assert_ne!(c.guid, Guid(n));
                prop_assert!(!protected.contains(&(fs(), c.guid)));
            }
            let rule_destroyed: BTreeSet<Guid> =
                plan_filesystem(&fs(), &versions, &rules, ReplicationCursor::At(cursor))
                    .unwrap()
                    .destroyed()
                    .map(|s| s.version.guid)
                    .collect();
            let ours: BTreeSet<Guid> = batch
                .destroy
                .iter()
                .map(|c| c.guid)
                .chain(batch.kept.iter().map(|k| k.guid))
                .collect();
            prop_assert_eq!(ours, rule_destroyed);
            let recheck = recheck_batch(&batch, &versions, Some(cursor), &protected).unwrap();
            prop_assert!(recheck.dropped.is_empty());
            prop_assert_eq!(recheck.destroy.len(), batch.destroy.len());
        }
    }
}
