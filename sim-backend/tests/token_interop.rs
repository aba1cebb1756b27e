//! The simulator's resume tokens decode with the daemon's decoder (`zferry_core::resume_token`)
//! to the same fields, and the simulator reads every token real OpenZFS 2.3.2 wrote (the
//! realzfs captures), so the two agree on one format: OpenZFS's.

mod common;

use common::*;
use zferry_core::backend::{SendFlags, SendRequest, SendSource, ZfsErrorKind};
use zferry_core::resume_token::ResumeToken;
use zferry_core::version::Guid;
use zferry_sim::{DatasetOptions, Fault, SimZfs, StreamBreak, token};

/// Interrupts `send` into `dst/r` after `after_bytes` and returns the receiver's token.
async fn interrupted_token(sim: &SimZfs, send: &SendRequest, to: &str, after_bytes: u64) -> String {
    let to_guid = sim
        .version(&v(&format!("src/my data@{to}")))
        .map_or(Guid(0), |x| x.guid);
    sim.inject(Fault::BreakSend {
        after_bytes,
        how: StreamBreak::Eof,
    });
    let e = transfer(sim, send, &recv("dst/r", to, to_guid))
        .await
        .expect_err("the stream was cut");
    let ZfsErrorKind::ReceiveInterrupted { token: Some(t) } = e.kind else {
        panic!("{e:?}\n{:?}", sim.dump("dst"));
    };
    t
}

#[tokio::test(start_paused = true)]
async fn full_incremental_raw_and_bookmark_tokens_decode_in_core_to_the_same_fields() {
    let sim = SimZfs::new(61, || NOW);
    sim.setup().create_pool("src", TIB).unwrap();
    sim.setup().create_pool("dst", TIB).unwrap();
    let encrypted = DatasetOptions {
        encrypted: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("src/my data"), &encrypted)
        .unwrap();
    // Large blocks exist only with a recordsize above 128 KiB (see the next test).
    sim.setup()
        .set_property(&ds("src/my data"), "recordsize", "1048576")
        .unwrap();
    write_and_snap(&sim, "src/my data@1", 4);
    write_and_snap(&sim, "src/my data@2", 4);
    let raw_lec = SendFlags {
        raw: true,
        large_blocks: true,
        embedded_data: true,
        compressed: true,
        ..SendFlags::default()
    };
    let full_raw = SendRequest {
        source: SendSource::Full {
            to: v("src/my data@1"),
        },
        flags: raw_lec,
    };
    let t_full = interrupted_token(&sim, &full_raw, "1", 1000).await;
    let resume = SendRequest {
        source: SendSource::Resume {
            token: t_full.clone(),
        },
        flags: SendFlags::default(),
    };
    transfer(
        &sim,
        &resume,
        &recv("dst/r", "1", guid(&sim, "src/my data@1")),
    )
    .await
    .unwrap();
    sim.setup()
        .bookmark(&v("src/my data@1"), &v("src/my data#1 mark"))
        .unwrap();
    let from_bookmark = SendRequest {
        source: SendSource::Incremental {
            from: v("src/my data#1 mark"),
            to: v("src/my data@2"),
        },
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
    };
    let t_inc = interrupted_token(&sim, &from_bookmark, "2", 2500).await;
    for (text, from) in [(&t_full, None), (&t_inc, Some(guid(&sim, "src/my data@1")))] {
        let ours = token::decode(text).unwrap();
        let core = ResumeToken::decode(text).unwrap_or_else(|e| panic!("core refuses {text}: {e}"));
        let c = core.contents();
        assert_eq!(c.fromguid, from);
        assert_eq!(c.fromguid, ours.fromguid);
        assert_eq!(c.toguid, ours.toguid);
        assert_eq!(c.toname.to_string(), ours.toname);
        assert_eq!(
            (c.object, c.offset, c.bytes),
            (ours.object, ours.offset, Some(ours.bytes))
        );
        assert_eq!(
            (c.rawok, c.compressok, c.embedok, c.largeblockok, c.savedok),
            (
                ours.rawok,
                ours.compressok,
                ours.embedok,
                ours.largeblockok,
                false
            )
        );
        assert!(c.rawok);
    }
    let full = ResumeToken::decode(&t_full).unwrap();
    let f = full.contents();
    assert!(f.largeblockok && f.embedok && f.compressok, "{f:?}");
    assert_eq!(full.contents().toguid, guid(&sim, "src/my data@1"));
}

#[tokio::test(start_paused = true)]
async fn l_without_large_records_sets_no_largeblockok_as_in_the_real_full_lec_token() {
    let sim = world(62);
    write_and_snap(&sim, "src/my data@1", 4);
    let lec = SendRequest {
        source: SendSource::Full {
            to: v("src/my data@1"),
        },
        flags: SendFlags {
            large_blocks: true,
            embedded_data: true,
            compressed: true,
            ..SendFlags::default()
        },
    };
    let ours = token::decode(&interrupted_token(&sim, &lec, "1", 1000).await).unwrap();
    let real = token::decode(REAL_TOKENS[1].1).unwrap();
    assert_eq!(
        (ours.largeblockok, ours.embedok, ours.compressok, ours.rawok),
        (real.largeblockok, real.embedok, real.compressok, real.rawok)
    );
}

/// The tokens real OpenZFS wrote, with what `zfs send -nvt` said they contain.
const REAL_TOKENS: &[(&str, &str)] = &[
    (
        "full",
        include_str!("../../core/tests/fixtures/resume_tokens/full.token"),
    ),
    (
        "full_lec",
        include_str!("../../core/tests/fixtures/resume_tokens/full_lec.token"),
    ),
    (
        "incremental",
        include_str!("../../core/tests/fixtures/resume_tokens/incremental.token"),
    ),
    (
        "raw_full",
        include_str!("../../core/tests/fixtures/resume_tokens/raw_full.token"),
    ),
    (
        "raw_incremental",
        include_str!("../../core/tests/fixtures/resume_tokens/raw_incremental.token"),
    ),
    (
        "bookmark",
        include_str!("../../core/tests/fixtures/resume_tokens/bookmark.token"),
    ),
];

#[test]
fn the_simulator_reads_every_token_real_openzfs_wrote_as_core_does() {
    for (case, text) in REAL_TOKENS {
        let ours = token::decode(text).unwrap_or_else(|e| panic!("{case}: {e}"));
        let core = ResumeToken::decode(text).unwrap();
        let c = core.contents();
        assert_eq!(ours.fromguid, c.fromguid, "{case}");
        assert_eq!(ours.toguid, c.toguid, "{case}");
        assert_eq!(ours.toname, c.toname.to_string(), "{case}");
        assert_eq!(
            (ours.object, ours.offset, Some(ours.bytes)),
            (c.object, c.offset, c.bytes),
            "{case}"
        );
        assert_eq!(
            (ours.rawok, ours.compressok, ours.embedok, ours.largeblockok),
            (c.rawok, c.compressok, c.embedok, c.largeblockok),
            "{case}"
        );
        // Re-encoding what we read gives a token core reads back to the same contents.
        let again = ResumeToken::decode(&token::encode(&ours)).unwrap();
        assert_eq!(again.contents(), c, "{case}");
    }
    let corrupt = include_str!("../../core/tests/fixtures/resume_tokens/corrupt.token");
    assert!(token::decode(corrupt).is_err());
    let truncated = include_str!("../../core/tests/fixtures/resume_tokens/truncated.token");
    assert!(token::decode(truncated).is_err());
}
