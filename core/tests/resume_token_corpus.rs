//! Replays the fuzz corpus (`fuzz/corpus/resume_token/`) through the fuzz harness on stable,
//! so that every seed and every input the fuzzer once found stays a regression test.

use std::fs;
use std::path::Path;

#[path = "../../fuzz/harness.rs"]
mod harness;

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/resume_token");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "the committed seeds are missing: {files:?}"
    );
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        harness::check(&data);
    }
}

#[test]
fn seeds_reach_every_layer() {
    use zferry_core::resume_token::{ResumeToken, decode_packed_nvlist};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/resume_token");
    let seed = |name: &str| fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    // Text seeds decode as tokens, packed seeds as nvlists: the harness starts deep.
    let text = String::from_utf8(seed("seed-zrepl-zol081-inc-raw.token")).unwrap_or_default();
    assert!(ResumeToken::decode(&text).is_ok());
    assert!(decode_packed_nvlist(&seed("seed-zrepl-zol081-inc-raw.packed")).is_ok());
}
