//! `zferry test decoderesumetoken` end to end.

use assert_cmd::Command;
use predicates::prelude::*;

/// A real OpenZFS (ZoL 0.8.1) token from zrepl's platform test `resumeTokenParsing.go`.
const ZREPL_INC_RAW: &str =
    include_str!("../../core/tests/fixtures/resume_tokens/zrepl-zol081-inc-raw.token");

fn zferry() -> Command {
    Command::cargo_bin("zferry").unwrap_or_else(|e| panic!("the zferry binary is not built: {e}"))
}

#[test]
fn decodes_a_real_token() {
    zferry()
        .args(["test", "decoderesumetoken", "--token", ZREPL_INC_RAW.trim()])
        .assert()
        .success()
        .stdout(
            "fromguid = 0x94a20a5f25877859\nobject = 0x2\noffset = 0x2c0000\nbytes = 0x2e2b0c\n\
             toguid = 0xf784e1004f460f7a\ntoname = zreplplatformtest/src@b\nrawok = true\n\
             compressok = true\nembedok = false\nlargeblockok = false\nsavedok = false\n",
        );
}

#[test]
fn json_output_is_one_object() {
    let out = zferry()
        .args([
            "test",
            "decoderesumetoken",
            "--json",
            "--token",
            ZREPL_INC_RAW,
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["fromguid"].as_u64(), Some(0x94a2_0a5f_2587_7859));
    assert_eq!(v["toguid"].as_u64(), Some(0xf784_e100_4f46_0f7a));
    assert_eq!(v["toname"], "zreplplatformtest/src@b");
    assert_eq!(v["filesystem"], "zreplplatformtest/src");
    assert_eq!(v["object"], 2);
    assert_eq!(v["rawok"], true);
    assert_eq!(v["savedok"], false);
}

#[test]
fn corrupt_token_exits_2_and_says_what_is_wrong() {
    let flipped = ZREPL_INC_RAW
        .trim()
        .replacen("1-1164f8d409-", "1-1164f8d408-", 1);
    zferry()
        .args(["test", "decoderesumetoken", "--token", &flipped])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("resume token checksum mismatch"));
    zferry()
        .args(["test", "decoderesumetoken", "--token", "2-abc-10-789c"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "resume token version `2` is not supported",
        ));
}

#[test]
fn missing_token_is_a_usage_error() {
    zferry()
        .args(["test", "decoderesumetoken"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--token"));
}
