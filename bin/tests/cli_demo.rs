//! `zferry demo`: the main job on simulated pools ends with a verdict.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn two_days_with_faults_end_with_a_good_verdict() {
    Command::cargo_bin("zferry")
        .unwrap()
        .args([
            "demo",
            "--days",
            "2",
            "--seed",
            "7",
            "--faults-per-mille",
            "50",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "invocation   48: replication done",
        ))
        .stdout(predicate::str::contains("verdict: OK"));
}

#[test]
fn the_same_seed_prints_the_same_run() {
    let run = || {
        Command::cargo_bin("zferry")
            .unwrap()
            .args([
                "demo",
                "--days",
                "1",
                "--seed",
                "3",
                "--status-every-hours",
                "6",
            ])
            .output()
            .unwrap()
            .stdout
    };
    let first = run();
    assert!(!first.is_empty());
    assert_eq!(first, run());
}

#[test]
fn bad_arguments_are_refused_with_exit_code_2() {
    Command::cargo_bin("zferry")
        .unwrap()
        .args(["demo", "--days", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--days must be between 1 and"));
}
