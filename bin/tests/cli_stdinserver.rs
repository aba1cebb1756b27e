//! `zferry stdinserver`'s refusals, without ssh.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::str::contains;

#[test]
fn an_invalid_identity_is_bad_input() {
    Command::cargo_bin("zferry")
        .unwrap()
        .args(["stdinserver", "--socket", "/nonexistent.sock", "../etc"])
        .assert()
        .code(2)
        .stderr(contains("client identity"))
        .stderr(contains("authorized_keys"));
}

#[test]
fn a_missing_daemon_is_reported_with_the_socket_path() {
    Command::cargo_bin("zferry")
        .unwrap()
        .args([
            "stdinserver",
            "--socket",
            "/nonexistent/zferry.sock",
            "host1",
        ])
        .assert()
        .code(1)
        .stderr(contains(
            "cannot connect to the zferry daemon at /nonexistent/zferry.sock",
        ));
}

#[test]
fn bytes_pass_through_after_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let daemon = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(b"reply").unwrap();
        got
    });
    Command::cargo_bin("zferry")
        .unwrap()
        .args(["stdinserver", "--socket"])
        .arg(&sock)
        .arg("host1")
        .write_stdin("payload")
        .assert()
        .success()
        .stdout("reply");
    assert_eq!(
        daemon.join().unwrap(),
        b"ZFERRY-STDINSERVER 1 host1\npayload"
    );
}
