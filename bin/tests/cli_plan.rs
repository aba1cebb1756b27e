//! `zferry plan` end to end: the examples, the exit codes and the errors on bad input.

#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plan")
        .join(name)
}

fn zferry_plan(receiver: &str) -> Command {
    let mut cmd = Command::cargo_bin("zferry").unwrap();
    cmd.arg("plan")
        .arg("--sender")
        .arg(example("sender.txt"))
        .arg("--receiver")
        .arg(example(receiver))
        .args(["--receiver-root", "backup/host1"]);
    cmd
}

#[test]
fn healthy_example_plans_every_filesystem() {
    zferry_plan("receiver.txt")
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "tank/home -> backup/host1/tank/home\n  incremental from @zrepl_20261126_020000_000: \
             3 steps, 3 snapshots\n    1. @zrepl_20261126_020000_000 -> @zrepl_20261126_030000_000\n",
        ))
        .stdout(predicate::str::contains("  up to date at @zrepl_20261126_030000_000\n"))
        .stdout(predicate::str::contains(
            "  initial replication (most_recent): 1 step, 1 snapshot\n    1. full \
             @zrepl_20261126_050000_000\n",
        ))
        .stdout(predicate::str::contains("    1. #zrepl_CURSOR_G_"))
        .stdout(predicate::str::ends_with(
            "4 filesystems: 3 to replicate (7 steps, 7 snapshots), 1 up to date, 0 conflicts\n",
        ));
}

#[test]
fn batching_merges_runs_into_range_steps() {
    zferry_plan("receiver.txt")
        .args(["--batch", "10"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "    1. @zrepl_20261126_020000_000 -I> @zrepl_20261126_050000_000 (3 snapshots)\n",
        ));
}

#[test]
fn a_conflict_is_explained_and_exits_1() {
    zferry_plan("receiver-diverged.txt")
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "tank/db -> backup/host1/tank/db\n  CONFLICT: the receiver's newest snapshot \
             @manual-before-upgrade is not on the sender",
        ))
        .stdout(predicate::str::contains("  what to do: "))
        .stdout(predicate::str::contains("1 conflict\n"));
}

#[test]
fn initial_fail_turns_an_empty_receiver_into_a_conflict() {
    zferry_plan("receiver.txt")
        .args(["--initial", "fail"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "initial replication is set to `fail`",
        ));
}

#[test]
fn json_has_the_same_content() {
    let out = zferry_plan("receiver-diverged.txt")
        .arg("--json")
        .assert()
        .code(1);
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let fss = json["filesystems"].as_array().unwrap();
    assert_eq!(fss.len(), 4);
    let db = &fss[0];
    assert_eq!(db["sender"], "tank/db");
    assert_eq!(db["receiver"], "backup/host1/tank/db");
    assert_eq!(db["outcome"], "conflict");
    assert_eq!(db["conflict"]["conflict"], "diverged");
    assert_eq!(
        db["conflict"]["receiver_only"][0]["name"],
        "manual-before-upgrade"
    );
    let home = &fss[1];
    assert_eq!(home["outcome"], "replicate");
    assert_eq!(home["base"]["kind"], "common");
    assert_eq!(home["steps"].as_array().unwrap().len(), 3);
    assert_eq!(home["steps"][0]["send"], "incremental");
    assert_eq!(json["summary"]["n_conflicts"], 1);
    assert_eq!(json["summary"]["n_steps"], 7);
}

#[test]
fn a_malformed_line_is_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "tank/a@s1\t1\t10\t100\t0\ntank/a@s2 2 20 200 0\n").unwrap();
    let mut cmd = Command::cargo_bin("zferry").unwrap();
    cmd.args(["plan", "--sender"])
        .arg(&bad)
        .arg("--receiver")
        .arg(example("receiver.txt"));
    cmd.assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(format!(
            "{}:2: expected 5 tab-separated fields",
            bad.display()
        )));
}

#[test]
fn missing_files_and_bad_arguments_exit_2() {
    let mut cmd = Command::cargo_bin("zferry").unwrap();
    cmd.args([
        "plan",
        "--sender",
        "/nonexistent/s.txt",
        "--receiver",
        "/nonexistent/r.txt",
    ]);
    cmd.assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read `/nonexistent/s.txt`"));
    zferry_plan("receiver.txt")
        .args(["--batch", "0"])
        .assert()
        .code(2);
    let mut cmd = Command::cargo_bin("zferry").unwrap();
    cmd.args([
        "plan",
        "--sender",
        "a",
        "--receiver",
        "b",
        "--receiver-root",
        "backup//x",
    ]);
    cmd.assert()
        .code(2)
        .stderr(predicate::str::contains("empty component"));
}
