//! `zferry prune --dry-run` end to end: the examples, the exit codes and the errors on bad input.

#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/prune")
        .join(name)
}

fn zferry_prune(rules: &Path) -> Command {
    let mut cmd = Command::cargo_bin("zferry").unwrap();
    cmd.args(["prune", "--dry-run", "--rules"])
        .arg(rules)
        .arg("--listing")
        .arg(example("listing.txt"));
    cmd
}

/// The GUID of `tank/home@zrepl_20261126_040000_000`, where the example's cursor points.
const HOME_CURSOR: &str = "6502634911969627067";

#[test]
fn sender_rules_with_the_jobs_cursor() {
    zferry_prune(&example("rules.yml"))
        .args(["--job", "push"])
        .assert()
        .code(1) // tank/new has no cursor yet
        .stdout(predicate::str::contains(format!(
            "tank/home (replication cursor at guid {HOME_CURSOR})\n\
             \x20 @zrepl_20261124_000000_000  2026-11-24 00:00:00  replicated      keep (grid)\n\
             \x20 @zrepl_20261124_060000_000  2026-11-24 06:00:00  replicated      destroy\n"
        )))
        .stdout(predicate::str::contains(
            "  @manual_before_upgrade      2026-11-25 09:00:00  replicated      keep (regex)\n",
        ))
        .stdout(predicate::str::contains(
            "  @zrepl_20261126_040000_000  2026-11-26 04:00:00  not replicated  keep \
             (not_replicated, grid)\n\
             \x20 @zrepl_20261126_050000_000  2026-11-26 05:00:00  not replicated  keep \
             (not_replicated, last_n, grid)\n",
        ))
        .stdout(predicate::str::contains(
            "tank/new\n  NOT PRUNED: `tank/new` is not pruned: the sender has no replication \
             cursor for it",
        ))
        .stdout(predicate::str::ends_with(
            "2 filesystems: 6 snapshots to destroy, 9 kept, 1 not pruned\n\
             dry run: nothing was destroyed\n",
        ));
}

#[test]
fn explicit_cursors_per_dataset_and_default() {
    zferry_prune(&example("rules.yml"))
        .arg("--cursor")
        .arg(format!("tank/home={HOME_CURSOR}"))
        .args(["--cursor", "4323455642275676162"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "tank/new (replication cursor at guid 4323455642275676162)\n\
             \x20 @zrepl_20261126_020000_000  2026-11-26 02:00:00  replicated      keep (last_n, \
             grid)\n",
        ))
        .stdout(predicate::str::contains(
            "6 snapshots to destroy, 12 kept, 0 not pruned",
        ));
}

#[test]
fn a_cursor_guid_absent_from_the_listing_is_a_filesystem_error() {
    zferry_prune(&example("rules.yml"))
        .args(["--cursor", "12345"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "NOT PRUNED: `tank/home` is not pruned: none of its snapshots has guid 12345",
        ))
        .stdout(predicate::str::contains(
            "0 snapshots to destroy, 0 kept, 2 not pruned",
        ));
}

#[test]
fn not_replicated_without_a_cursor_is_a_filesystem_error() {
    zferry_prune(&example("rules.yml"))
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "NOT PRUNED: `tank/home` is not pruned: a `not_replicated` rule needs the sender's \
             replication cursor",
        ))
        .stdout(predicate::str::contains("what to do: give --job JOB"));
}

#[test]
fn receiver_rules_need_no_cursor_and_json_is_complete() {
    let output = zferry_prune(&example("rules-receiver.yml"))
        .arg("--json")
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["rules"], serde_json::json!(["grid"]));
    let home = &json["filesystems"][0];
    assert_eq!(home["dataset"], "tank/home");
    assert_eq!(home["error"], serde_json::Value::Null);
    let snapshots = home["snapshots"].as_array().unwrap();
    // 15 snapshots, bookmarks left out; 24x1h keeps one per hour of the last day, 14x1d the
    // oldest per day before that; the manual snapshot does not match the grid's regex.
    assert_eq!(snapshots.len(), 15);
    let manual = snapshots
        .iter()
        .find(|s| s["name"] == "manual_before_upgrade")
        .unwrap();
    assert_eq!(manual["verdict"], "destroy");
    assert_eq!(manual["kept_by"], serde_json::json!([]));
    assert_eq!(manual["replicated"], serde_json::Value::Null);
    assert_eq!(json["summary"]["n_destroy"], 4);
    assert_eq!(json["summary"]["n_errors"], 0);
}

#[test]
fn without_dry_run_it_refuses() {
    Command::cargo_bin("zferry")
        .unwrap()
        .args(["prune", "--rules"])
        .arg(example("rules.yml"))
        .arg("--listing")
        .arg(example("listing.txt"))
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("only does dry runs"));
}

#[test]
fn a_bad_rules_file_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "- type: last_n\n  count: 2\n- type: grid\n  regex: x\n  grid: 1x1h(keep=0)\n",
    )
    .unwrap();
    zferry_prune(&rules)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "zferry: {}:5:9: invalid grid: interval group 1 of 1 (`1x1h(keep=0)`): `keep=0` would \
             keep nothing",
            rules.display()
        )));
    std::fs::write(&rules, "- type: last_n\n  count: 2\n  colour: blue\n").unwrap();
    zferry_prune(&rules)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(":3:3: unknown field `colour`"));
}

#[test]
fn a_bad_listing_or_cursor_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let listing = dir.path().join("listing.txt");
    std::fs::write(&listing, "tank/a@s\t1\t1\t1\t0\ntank/a@t\t2\n").unwrap();
    Command::cargo_bin("zferry")
        .unwrap()
        .args(["prune", "--dry-run", "--rules"])
        .arg(example("rules-receiver.yml"))
        .arg("--listing")
        .arg(&listing)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "{}:2: expected 5",
            listing.display()
        )));
    zferry_prune(&example("rules.yml"))
        .args(["--cursor", "tank/elsewhere=1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "the listing has no snapshots or bookmarks of `tank/elsewhere`",
        ));
    zferry_prune(&example("rules.yml"))
        .args(["--cursor", "zzz"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("`zzz` is not a GUID"));
    zferry_prune(&example("rules.yml"))
        .args(["--cursor", "1", "--job", "push"])
        .assert()
        .code(2);
}
