//! Real resume tokens decode to what OpenZFS says they contain.
//!
//! Each `fixtures/resume_tokens/<case>.token` has beside it either `<case>.nvt.txt`, the
//! output of `zfs send -nvt <token>` captured on a real OpenZFS, or `<case>.expected.txt`, the
//! same layout written by hand from a documented source. Both are parsed into the expected
//! [`ResumeTokenContents`] by [`parse_nvt`] and compared field by field with the decoder's.
//! Where ZFS refused the token (`resume token is corrupt (<reason>)`), the decoder must refuse
//! it with the same kind of error.

use std::fs;
use std::path::{Path, PathBuf};

use zferry_core::name::VersionName;
use zferry_core::resume_token::{ResumeToken, ResumeTokenContents, ResumeTokenError};
use zferry_core::version::Guid;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resume_tokens")
}

/// Parses the nvlist part of `zfs send -nvt` output: the tab-indented `key = value` lines
/// (numbers in `0x` hex, as libnvpair prints uint64). Other lines (the `resume token contents:`
/// and `nvlist version: 0` headers, the dry-run summary, `#` comments) are skipped. A boolean
/// flag may be printed as `flag = 1` or as a bare `flag`. An unknown key fails the test, so that
/// a field OpenZFS adds is noticed rather than silently ignored.
fn parse_nvt(text: &str, origin: &Path) -> ResumeTokenContents {
    let mut fromguid = None;
    let mut toguid = None;
    let mut toname = None;
    let mut object = None;
    let mut offset = None;
    let mut bytes = None;
    let mut flags = [false; 5];
    for (index, line) in text.lines().enumerate() {
        let Some(entry) = line.strip_prefix('\t') else {
            continue;
        };
        let at = || format!("{}:{}", origin.display(), index + 1);
        let (key, value) = match entry.split_once(" = ") {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (entry.trim(), None),
        };
        let number = || {
            let v = value.unwrap_or_else(|| panic!("{}: `{key}` has no value", at()));
            let hex = v
                .strip_prefix("0x")
                .unwrap_or_else(|| panic!("{}: `{v}` is not 0x hex", at()));
            u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{}: `{v}`: {e}", at()))
        };
        let flag_index = ["rawok", "compressok", "embedok", "largeblockok", "savedok"]
            .iter()
            .position(|f| *f == key);
        match (key, flag_index) {
            ("fromguid", _) => fromguid = Some(Guid(number())),
            ("toguid", _) => toguid = Some(Guid(number())),
            ("object", _) => object = Some(number()),
            ("offset", _) => offset = Some(number()),
            ("bytes", _) => bytes = Some(number()),
            ("toname", _) => {
                let v = value.unwrap_or_else(|| panic!("{}: toname has no value", at()));
                toname = Some(VersionName::parse(v).unwrap_or_else(|e| panic!("{}: {e}", at())));
            }
            (_, Some(i)) => {
                assert!(
                    matches!(value, None | Some("1")),
                    "{}: flag `{key}` = {value:?}",
                    at()
                );
                flags[i] = true;
            }
            _ => panic!(
                "{}: unknown key `{key}`; teach this test and the decoder about it",
                at()
            ),
        }
    }
    let missing = |what: &str| -> ! { panic!("{}: no `{what}`", origin.display()) };
    let [rawok, compressok, embedok, largeblockok, savedok] = flags;
    ResumeTokenContents {
        fromguid,
        toguid: toguid.unwrap_or_else(|| missing("toguid")),
        toname: toname.unwrap_or_else(|| missing("toname")),
        object: object.unwrap_or_else(|| missing("object")),
        offset: offset.unwrap_or_else(|| missing("offset")),
        bytes,
        rawok,
        compressok,
        embedok,
        largeblockok,
        savedok,
    }
}

fn check(token_path: &Path) {
    let expected_path = ["nvt.txt", "expected.txt"]
        .iter()
        .map(|ext| token_path.with_extension(ext))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{}: no .nvt.txt or .expected.txt beside it",
                token_path.display()
            )
        });
    let expected_text = fs::read_to_string(&expected_path)
        .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
    let text =
        fs::read_to_string(token_path).unwrap_or_else(|e| panic!("{}: {e}", token_path.display()));
    let decoded = ResumeToken::decode(&text);
    if let Some(zfs_reason) = zfs_corrupt_reason(&expected_text) {
        let err = decoded.expect_err(&format!("{}: ZFS calls it corrupt", token_path.display()));
        assert!(
            same_verdict(zfs_reason, &err),
            "{}: ZFS says `{zfs_reason}`, the decoder says `{err}`",
            token_path.display()
        );
        return;
    }
    let expected = parse_nvt(&expected_text, &expected_path);
    let token =
        decoded.unwrap_or_else(|e| panic!("{}: does not decode: {e}", token_path.display()));
    assert_eq!(token.contents(), &expected, "{}", token_path.display());
    assert_eq!(token.as_str(), text.trim());
}

/// The reason in libzfs's `resume token is corrupt (<reason>)`, if `zfs send -nvt` said so.
fn zfs_corrupt_reason(nvt: &str) -> Option<&str> {
    let (_, rest) = nvt.split_once("resume token is corrupt (")?;
    rest.split_once(')').map(|(reason, _)| reason)
}

/// Whether the decoder's error is the same kind of corruption libzfs reports.
fn same_verdict(zfs_reason: &str, err: &ResumeTokenError) -> bool {
    use ResumeTokenError as E;
    match zfs_reason {
        "incorrect checksum" => matches!(err, E::Checksum { .. }),
        "invalid format" => matches!(err, E::Format { .. } | E::Hex { .. }),
        r if r.starts_with("invalid version") => matches!(err, E::Version { .. }),
        "payload is not hex-encoded" => matches!(err, E::Hex { .. }),
        "decompression failed" => matches!(
            err,
            E::Inflate { .. } | E::InflatedTooShort { .. } | E::InflatedTooLong { .. }
        ),
        "nvlist_unpack failed" => matches!(err, E::Nvlist(_)),
        other => panic!("unknown libzfs reason `{other}`: teach this test about it"),
    }
}

#[test]
fn every_fixture_token_decodes_to_its_expected_contents() {
    let mut tokens: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "token"))
        .collect();
    tokens.sort();
    assert!(
        tokens.len() >= 4,
        "expected at least zrepl's four tokens, found {tokens:?}"
    );
    for token in &tokens {
        check(token);
    }
}

#[test]
fn the_nvt_parser_reads_what_it_must() {
    let text = "resume token contents:\nnvlist version: 0\n\tfromguid = 0x10\n\tobject = 0x1\n\
                \toffset = 0x0\n\tbytes = 0xff\n\ttoguid = 0x20\n\ttoname = p/a b@s 1\n\
                \tembedok = 1\n\tsavedok\nfull\tp/a b@s 1\t1234\n";
    let c = parse_nvt(text, Path::new("inline"));
    assert_eq!(c.fromguid, Some(Guid(0x10)));
    assert_eq!(
        (c.toguid, c.object, c.offset, c.bytes),
        (Guid(0x20), 1, 0, Some(0xff))
    );
    assert_eq!(c.toname.to_string(), "p/a b@s 1");
    assert!(c.embedok && c.savedok && !c.rawok && !c.compressok && !c.largeblockok);
}
