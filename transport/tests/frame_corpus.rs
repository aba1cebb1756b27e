//! Replays the fuzz corpus (`fuzz/corpus/transport_frame/`) through the fuzz harness on
//! stable, so that every seed and every input the fuzzer once found stays a regression test.

use std::fs;
use std::path::Path;

#[path = "../../fuzz/frame_harness.rs"]
mod frame_harness;

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/transport_frame");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "the committed seeds are missing: {files:?}"
    );
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        frame_harness::check(&data);
    }
}

#[test]
fn seeds_reach_the_frame_decoder() {
    use zferry_transport::wire::{Header, decode_frame};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/transport_frame");
    let seed = |name: &str| fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (header, payload) =
        decode_frame(seed("seed-data.frame").into()).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(header, Header::Data { id: 1, .. }), "{header:?}");
    assert_eq!(&payload[..], b"zfs send data");
    let (header, _) =
        decode_frame(seed("seed-request.frame").into()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            header,
            Header::Request {
                id: 1,
                download: true,
                ..
            }
        ),
        "{header:?}"
    );
}
