use proptest::prelude::*;

use super::nvlist::{NVLIST_DEPTH_MAX, NVLIST_PAIRS_MAX, WriteValue as W, write};
use super::*;

/// A real token from zrepl's platform test `resumeTokenParsing.go` (OpenZFS/ZoL 0.8.1,
/// incremental raw send of `zreplplatformtest/src@b` from `@a`).
const ZREPL_INC_RAW: &str =
    include_str!("../../tests/fixtures/resume_tokens/zrepl-zol081-inc-raw.token");

fn contents() -> ResumeTokenContents {
    ResumeTokenContents {
        fromguid: Some(Guid(0x94a2_0a5f_2587_7859)),
        toguid: Guid(0xf784_e100_4f46_0f7a),
        toname: VersionName::parse("pool/a b@snap 1").unwrap(),
        object: 2,
        offset: 0x2c_0000,
        bytes: Some(0x2e_2b0c),
        rawok: true,
        compressok: true,
        embedok: false,
        largeblockok: true,
        savedok: false,
    }
}

fn decode_err(text: &str) -> ResumeTokenError {
    ResumeToken::decode(text).expect_err(text)
}

/// The token text for arbitrary compressed bytes with a correct checksum.
fn wrap_compressed(compressed: &[u8], declared_bytes: u64) -> String {
    let hex: String = compressed.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "1-{:x}-{declared_bytes:x}-{hex}",
        fletcher4_first_word(compressed)
    )
}

/// The packed nvlist of a valid token, for tests that corrupt it.
fn packed_valid() -> Vec<u8> {
    pack(&contents())
}

fn nvlist_kind(packed: &[u8]) -> NvlistErrorKind {
    match decode_err(&wrap_packed(packed)) {
        ResumeTokenError::Nvlist(e) => e.kind,
        other => panic!("expected an nvlist error, got {other:?}"),
    }
}

/// Raw bytes of one pair, for tests that need a pair OpenZFS would never write.
fn raw_pair(name: &[u8], name_sz: i16, n_elements: i32, type_code: i32, value: &[u8]) -> Vec<u8> {
    let value_off = (16 + name.len()).div_ceil(8) * 8;
    let size = value_off + value.len().div_ceil(8) * 8;
    let mut out = Vec::new();
    out.extend_from_slice(&(size as i32).to_le_bytes());
    out.extend_from_slice(&name_sz.to_le_bytes());
    out.extend_from_slice(&0i16.to_le_bytes());
    out.extend_from_slice(&n_elements.to_le_bytes());
    out.extend_from_slice(&type_code.to_le_bytes());
    out.extend_from_slice(name);
    out.resize(value_off, 0);
    out.extend_from_slice(value);
    out.resize(size, 0);
    out
}

/// A packed nvlist holding the valid token's pairs plus `extra` raw bytes before the end.
fn packed_with(extra: &[u8]) -> Vec<u8> {
    let mut packed = packed_valid();
    let end = packed.len() - 4;
    packed.splice(end..end, extra.iter().copied());
    packed
}

#[test]
fn decodes_zrepl_incremental_raw_token() {
    let token = ResumeToken::decode(ZREPL_INC_RAW).unwrap();
    let c = token.contents();
    assert_eq!(c.fromguid, Some(Guid(0x94a2_0a5f_2587_7859)));
    assert_eq!(c.toguid, Guid(0xf784_e100_4f46_0f7a));
    assert_eq!(c.toname.to_string(), "zreplplatformtest/src@b");
    assert!(c.rawok && c.compressok);
    assert!(!c.embedok && !c.largeblockok && !c.savedok);
    assert_eq!(
        token.as_str(),
        ZREPL_INC_RAW.trim(),
        "the text is kept, trimmed, for zfs send -t"
    );
}

#[test]
fn fletcher4_sums_little_endian_words_and_ignores_the_tail() {
    assert_eq!(fletcher4_first_word(&[]), 0);
    assert_eq!(fletcher4_first_word(&[1, 0, 0, 0, 2, 0, 0, 0]), 3);
    assert_eq!(fletcher4_first_word(&[0, 0, 0, 1]), 1 << 24);
    assert_eq!(fletcher4_first_word(&[1, 0, 0, 0, 0xff, 0xff, 0xff]), 1);
    let max = [0xff; 8];
    assert_eq!(fletcher4_first_word(&max), 2 * u64::from(u32::MAX));
}

#[test]
fn encode_then_decode_round_trips() {
    let token = ResumeToken::encode(contents());
    let decoded = ResumeToken::decode(token.as_str()).unwrap();
    assert_eq!(decoded, token);
    let full = ResumeTokenContents {
        fromguid: None,
        bytes: None,
        ..contents()
    };
    let decoded = ResumeToken::decode(ResumeToken::encode(full.clone()).as_str()).unwrap();
    assert_eq!(decoded.contents(), &full);
}

#[test]
fn surrounding_whitespace_is_ignored() {
    let text = format!("  {}\n", ZREPL_INC_RAW.trim());
    assert_eq!(
        ResumeToken::decode(&text).unwrap().as_str(),
        ZREPL_INC_RAW.trim()
    );
}

#[test]
fn serde_uses_the_token_text() {
    let token = ResumeToken::encode(contents());
    let json = serde_json::to_string(&token).unwrap();
    assert_eq!(json, format!("\"{}\"", token.as_str()));
    let back: ResumeToken = serde_json::from_str(&json).unwrap();
    assert_eq!(back, token);
    let corrupt = serde_json::from_str::<ResumeToken>("\"2-0-0-00\"").unwrap_err();
    assert!(
        corrupt.to_string().contains("version `2` is not supported"),
        "{corrupt}"
    );
}

// ---- corruption of the text -------------------------------------------------------------

#[test]
fn text_errors_have_exact_kinds() {
    let valid = ZREPL_INC_RAW.trim();
    let (header, payload) = valid.rsplit_once('-').unwrap();
    assert_eq!(decode_err(""), ResumeTokenError::Empty);
    assert_eq!(decode_err(" \n"), ResumeTokenError::Empty);
    assert_eq!(decode_err("1-2-3"), ResumeTokenError::Format { n_parts: 3 });
    assert_eq!(
        decode_err(&format!("{valid}-00")),
        ResumeTokenError::Format { n_parts: 5 }
    );
    assert_eq!(
        decode_err(&format!("2{}", &valid[1..])),
        ResumeTokenError::Version {
            version: "2".into()
        }
    );
    assert_eq!(
        decode_err(&format!("01{}", &valid[1..])),
        ResumeTokenError::Version {
            version: "01".into()
        }
    );
    let long = "1".repeat(RESUME_TOKEN_TEXT_BYTES_MAX + 1);
    assert_eq!(
        decode_err(&long),
        ResumeTokenError::TooLong {
            len_bytes: RESUME_TOKEN_TEXT_BYTES_MAX + 1
        }
    );
    // Garbage hex, in each part.
    assert_eq!(
        decode_err(&format!("1-xyz-120-{payload}")),
        ResumeTokenError::Hex {
            part: TokenPart::Checksum,
            reason: HexProblem::NotHex {
                ch: 'x',
                position: 0
            }
        }
    );
    assert_eq!(
        decode_err(&format!("1-1164f8d409-12g-{payload}")),
        ResumeTokenError::Hex {
            part: TokenPart::PackedLength,
            reason: HexProblem::NotHex {
                ch: 'g',
                position: 2
            }
        }
    );
    assert_eq!(
        decode_err(&format!("1--120-{payload}")),
        ResumeTokenError::Hex {
            part: TokenPart::Checksum,
            reason: HexProblem::Empty
        }
    );
    assert_eq!(
        decode_err(&format!("{header}-")),
        ResumeTokenError::Hex {
            part: TokenPart::Payload,
            reason: HexProblem::Empty
        }
    );
    let mut garbage = payload.to_owned();
    garbage.replace_range(10..11, "q");
    assert_eq!(
        decode_err(&format!("{header}-{garbage}")),
        ResumeTokenError::Hex {
            part: TokenPart::Payload,
            reason: HexProblem::NotHex {
                ch: 'q',
                position: 10
            }
        }
    );
    assert_eq!(
        decode_err(&format!("{header}-{payload}0")),
        ResumeTokenError::Hex {
            part: TokenPart::Payload,
            reason: HexProblem::OddLength {
                n_digits: payload.len() + 1
            }
        }
    );
    assert_eq!(
        decode_err(&format!("1-11111111111111111-120-{payload}")),
        ResumeTokenError::Hex {
            part: TokenPart::Checksum,
            reason: HexProblem::TooLong { n_digits: 17 }
        }
    );
}

#[test]
fn flipped_checksum_digit_is_a_checksum_mismatch() {
    let valid = ZREPL_INC_RAW.trim();
    let flipped = valid.replacen("1-1164f8d409-", "1-1164f8d408-", 1);
    assert_eq!(
        decode_err(&flipped),
        ResumeTokenError::Checksum {
            expected: 0x1164f8d408,
            computed: 0x1164f8d409
        }
    );
}

#[test]
fn altered_or_truncated_payload_is_a_checksum_mismatch() {
    let valid = ZREPL_INC_RAW.trim();
    // Cutting whole 32-bit words changes the sum.
    let truncated = &valid[..valid.len() - 8];
    assert!(matches!(
        decode_err(truncated),
        ResumeTokenError::Checksum { .. }
    ));
    // Fletcher-4 does not sum a tail of 1-3 bytes (in OpenZFS either), so cutting into the
    // tail keeps the checksum; the zlib stream then ends early and inflation says so.
    let n_payload_bytes = valid.rsplit_once('-').unwrap().1.len() / 2;
    assert_eq!(n_payload_bytes % 4, 2, "this token has a 2-byte tail");
    let into_tail = &valid[..valid.len() - 2];
    assert!(matches!(
        decode_err(into_tail),
        ResumeTokenError::Inflate { .. }
    ));
    let mut altered = valid.to_owned();
    let last = altered.len() - 8;
    let digit = if &altered[last..=last] == "0" {
        "1"
    } else {
        "0"
    };
    altered.replace_range(last..=last, digit);
    assert!(matches!(
        decode_err(&altered),
        ResumeTokenError::Checksum { .. }
    ));
}

#[test]
fn hostile_packed_length_is_refused_before_allocation() {
    let valid = ZREPL_INC_RAW.trim();
    let (_, payload) = valid.rsplit_once('-').unwrap();
    let huge = format!("1-1164f8d409-ffffffffffffffff-{payload}");
    assert_eq!(
        decode_err(&huge),
        ResumeTokenError::PackedTooLarge {
            declared_bytes: u64::MAX
        }
    );
    let just_over = format!(
        "1-1164f8d409-{:x}-{payload}",
        RESUME_TOKEN_PACKED_BYTES_MAX + 1
    );
    assert_eq!(
        decode_err(&just_over),
        ResumeTokenError::PackedTooLarge {
            declared_bytes: RESUME_TOKEN_PACKED_BYTES_MAX + 1
        }
    );
}

#[test]
fn inflation_errors_have_exact_kinds() {
    let packed = packed_valid();
    let compressed = zlib_stored(&packed);
    let n = packed.len() as u64;
    assert_eq!(
        decode_err(&wrap_compressed(&compressed, n - 1)),
        ResumeTokenError::InflatedTooLong {
            declared_bytes: n - 1
        }
    );
    assert_eq!(
        decode_err(&wrap_compressed(&compressed, n + 8)),
        ResumeTokenError::InflatedTooShort {
            declared_bytes: n + 8,
            inflated_bytes: packed.len()
        }
    );
    // A truncated zlib stream, with a checksum that matches the truncation.
    let cut = &compressed[..compressed.len() - 10];
    assert!(matches!(
        decode_err(&wrap_compressed(cut, n)),
        ResumeTokenError::Inflate { .. }
    ));
    // Not zlib at all.
    let not_zlib = [0u8; 16];
    assert!(matches!(
        decode_err(&wrap_compressed(&not_zlib, 16)),
        ResumeTokenError::Inflate { .. }
    ));
    // A bad Adler-32 trailer.
    let mut bad_adler = compressed.clone();
    let last = bad_adler.len() - 1;
    bad_adler[last] ^= 1;
    assert!(matches!(
        decode_err(&wrap_compressed(&bad_adler, n)),
        ResumeTokenError::Inflate { .. }
    ));
}

// ---- corruption of the packed nvlist -----------------------------------------------------

#[test]
fn header_errors_have_exact_kinds() {
    let mut xdr = packed_valid();
    xdr[0] = 1;
    assert_eq!(
        nvlist_kind(&xdr),
        NvlistErrorKind::UnsupportedEncoding { byte: 1 }
    );
    let mut big = packed_valid();
    big[1] = 0;
    assert_eq!(
        nvlist_kind(&big),
        NvlistErrorKind::UnsupportedEndian { byte: 0 }
    );
    let mut version = packed_valid();
    version[4] = 1;
    assert_eq!(
        nvlist_kind(&version),
        NvlistErrorKind::UnsupportedVersion { version: 1 }
    );
    assert!(matches!(
        nvlist_kind(&[0, 1]),
        NvlistErrorKind::Truncated {
            needed_bytes: 4,
            ..
        }
    ));
    let message = decode_err(&wrap_packed(&xdr)).to_string();
    assert!(message.contains("encoding byte is 1 (XDR)"), "{message}");
}

#[test]
fn truncated_nvlist_is_truncated() {
    let packed = packed_valid();
    // Without its terminator, the reader wants 4 more bytes.
    let kind = nvlist_kind(&packed[..packed.len() - 4]);
    assert_eq!(
        kind,
        NvlistErrorKind::Truncated {
            what: "a pair size",
            needed_bytes: 4,
            available_bytes: 0
        }
    );
    // Cut in the middle of a pair, the pair claims more than is left.
    assert!(matches!(
        nvlist_kind(&packed[..40]),
        NvlistErrorKind::PairSize {
            reason: "larger than the rest of the nvlist",
            ..
        }
    ));
}

#[test]
fn bad_pair_sizes_are_refused() {
    assert!(matches!(
        nvlist_kind(&packed_with(&(-8i32).to_le_bytes())),
        NvlistErrorKind::PairSize {
            size_bytes: -8,
            reason: "negative"
        }
    ));
    let mut tiny = 16i32.to_le_bytes().to_vec();
    tiny.resize(16, 0);
    assert!(matches!(
        nvlist_kind(&packed_with(&tiny)),
        NvlistErrorKind::PairSize { size_bytes: 16, .. }
    ));
    assert!(matches!(
        nvlist_kind(&packed_with(&i32::MAX.to_le_bytes())),
        NvlistErrorKind::PairSize {
            reason: "larger than the rest of the nvlist",
            ..
        }
    ));
}

#[test]
fn bad_names_are_refused() {
    let pair = |name: &[u8], name_sz| raw_pair(name, name_sz, 1, 8, &[0; 8]);
    let kind = |extra: Vec<u8>| nvlist_kind(&packed_with(&extra));
    assert_eq!(
        kind(pair(b"x\0", 0)),
        NvlistErrorKind::PairName {
            reason: "zero name length"
        }
    );
    assert_eq!(
        kind(pair(b"x\0", -2)),
        NvlistErrorKind::PairName {
            reason: "negative name length"
        }
    );
    assert_eq!(
        kind(pair(b"xy", 2)),
        NvlistErrorKind::PairName {
            reason: "the name is not NUL-terminated"
        }
    );
    assert_eq!(
        kind(pair(b"x\0y\0", 4)),
        NvlistErrorKind::PairName {
            reason: "the name contains a NUL before its end"
        }
    );
    assert_eq!(
        kind(pair(b"x\0", 200)),
        NvlistErrorKind::PairName {
            reason: "the name is longer than the pair"
        }
    );
}

#[test]
fn bad_types_and_values_are_refused() {
    let kind = |extra: Vec<u8>| nvlist_kind(&packed_with(&extra));
    assert_eq!(
        kind(raw_pair(b"odd\0", 4, 1, 99, &[0; 8])),
        NvlistErrorKind::UnknownType {
            name: "odd".into(),
            type_code: 99
        }
    );
    assert_eq!(
        kind(raw_pair(b"odd\0", 4, 2, 8, &[0; 8])),
        NvlistErrorKind::ElementCount {
            name: "odd".into(),
            type_code: 8,
            n_elements: 2
        }
    );
    assert_eq!(
        kind(raw_pair(b"odd\0", 4, 1, 8, &[0; 16])),
        NvlistErrorKind::ValueSize {
            name: "odd".into(),
            type_code: 8,
            expected_bytes: 8,
            found_bytes: 16
        }
    );
    assert_eq!(
        kind(raw_pair(b"odd\0", 4, 1, 9, b"abcdefgh")),
        NvlistErrorKind::UnterminatedString { name: "odd".into() }
    );
    assert_eq!(
        kind(raw_pair(b"odd\0", 4, 1, 21, &2i32.to_le_bytes())),
        NvlistErrorKind::BooleanValue {
            name: "odd".into(),
            value: 2
        }
    );
    // An array count far beyond its value area: refused before any arithmetic on it.
    assert_eq!(
        kind(raw_pair(b"odd\0", 4, i32::MAX, 16, &[0; 8])),
        NvlistErrorKind::ElementCount {
            name: "odd".into(),
            type_code: 16,
            n_elements: i32::MAX
        }
    );
}

#[test]
fn unknown_pairs_of_every_shape_are_skipped() {
    let mut extra = Vec::new();
    extra.extend(raw_pair(b"redact_snaps\0", 13, 2, 16, &[1; 16]));
    extra.extend(raw_pair(
        b"strings\0",
        8,
        2,
        17,
        &[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'a', 0, b'b', 0,
        ],
    ));
    extra.extend(raw_pair(b"flag\0", 5, 1, 21, &1i32.to_le_bytes()));
    // An embedded nvlist: the pair (with the 24-byte nvlist_t), then its pairs and terminator.
    extra.extend(raw_pair(b"nested\0", 7, 1, 19, &[0; 24]));
    extra.extend(raw_pair(b"inner\0", 6, 1, 8, &[7; 8]));
    extra.extend(0i32.to_le_bytes());
    let token = ResumeToken::decode(&wrap_packed(&packed_with(&extra))).unwrap();
    assert_eq!(token.contents(), &contents());
}

#[test]
fn too_many_pairs_and_too_deep_nesting_are_refused() {
    let mut many = Vec::new();
    for i in 0..NVLIST_PAIRS_MAX {
        let name = format!("p{i:04}\0");
        many.extend(raw_pair(name.as_bytes(), name.len() as i16, 0, 1, &[]));
    }
    assert_eq!(
        nvlist_kind(&packed_with(&many)),
        NvlistErrorKind::TooManyPairs
    );
    let mut deep = Vec::new();
    for _ in 0..=NVLIST_DEPTH_MAX {
        deep.extend(raw_pair(b"n\0", 2, 1, 19, &[0; 24]));
    }
    deep.extend(std::iter::repeat_n(0u8, 4 * (NVLIST_DEPTH_MAX + 1)));
    assert_eq!(nvlist_kind(&packed_with(&deep)), NvlistErrorKind::TooDeep);
}

#[test]
fn trailing_bytes_are_refused() {
    let mut packed = packed_valid();
    packed.extend_from_slice(&[0; 8]);
    assert_eq!(
        nvlist_kind(&packed),
        NvlistErrorKind::TrailingBytes { n_bytes: 8 }
    );
}

// ---- fields -----------------------------------------------------------------------------

#[test]
fn field_errors_have_exact_kinds() {
    let err = |pairs: &[(&str, W<'_>)]| decode_err(&wrap_packed(&write(pairs)));
    let base = [
        ("object", W::Uint64(1)),
        ("offset", W::Uint64(0)),
        ("toguid", W::Uint64(5)),
        ("toname", W::String("pool/a@s")),
    ];
    let without = |skip: &str| -> Vec<(&str, W<'_>)> {
        base.iter().copied().filter(|(n, _)| *n != skip).collect()
    };
    for field in ["toguid", "toname", "object", "offset"] {
        assert_eq!(
            err(&without(field)),
            ResumeTokenError::MissingField { field }
        );
    }
    let mut dup = base.to_vec();
    dup.push(("toname", W::String("pool/secret@s")));
    assert_eq!(
        err(&dup),
        ResumeTokenError::DuplicateField {
            field: "toname".into()
        }
    );
    let mut typed = without("toguid");
    typed.push(("toguid", W::String("5")));
    let e = err(&typed);
    assert_eq!(
        e.to_string(),
        "resume token field `toguid` is a string, expected a uint64"
    );
    let mut flag = base.to_vec();
    flag.push(("rawok", W::Uint64(1)));
    assert_eq!(
        err(&flag).to_string(),
        "resume token field `rawok` is a uint64, expected a boolean"
    );
    let mut bookmark = without("toname");
    bookmark.push(("toname", W::String("pool/a#b")));
    assert_eq!(
        err(&bookmark),
        ResumeTokenError::TonameNotSnapshot {
            toname: "pool/a#b".into()
        }
    );
    let mut invalid = without("toname");
    invalid.push(("toname", W::String("pool/a")));
    assert!(matches!(err(&invalid), ResumeTokenError::Toname(_)));
    // The minimal token: no fromguid, no bytes, no flags.
    let minimal = ResumeToken::decode(&wrap_packed(&write(&base))).unwrap();
    assert_eq!(minimal.contents().fromguid, None);
    assert_eq!(minimal.contents().bytes, None);
}

#[test]
fn error_messages_say_what_is_wrong() {
    let valid = ZREPL_INC_RAW.trim();
    let flipped = valid.replacen("1-1164f8d409-", "1-1164f8d408-", 1);
    assert_eq!(
        decode_err(&flipped).to_string(),
        "resume token checksum mismatch: the header says 0x1164f8d408, the payload sums to \
         0x1164f8d409; the token was truncated or altered"
    );
    assert_eq!(
        decode_err("3-0-0-00").to_string(),
        "resume token version `3` is not supported; OpenZFS writes version 1"
    );
}

// ---- properties -------------------------------------------------------------------------

fn arb_contents() -> impl Strategy<Value = ResumeTokenContents> {
    (
        (
            proptest::option::of(any::<u64>()),
            any::<u64>(),
            "[a-z][a-z0-9]{0,8}(/[a-z0-9 ._:-]{1,12}){0,3}@[a-z0-9_-]{1,20}",
        ),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
        ),
        proptest::array::uniform5(any::<bool>()),
    )
        .prop_filter_map(
            "valid snapshot name",
            |((from, to, name), (object, offset, bytes), f)| {
                let toname = VersionName::parse(&name).ok()?;
                Some(ResumeTokenContents {
                    fromguid: from.map(Guid),
                    toguid: Guid(to),
                    toname,
                    object,
                    offset,
                    bytes,
                    rawok: f[0],
                    compressok: f[1],
                    embedok: f[2],
                    largeblockok: f[3],
                    savedok: f[4],
                })
            },
        )
}

proptest! {
    #[test]
    fn round_trip_any_contents(c in arb_contents()) {
        let token = ResumeToken::encode(c.clone());
        let decoded = ResumeToken::decode(token.as_str()).unwrap();
        prop_assert_eq!(decoded.contents(), &c);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        let _ = ResumeToken::decode(&s);
    }

    #[test]
    fn arbitrary_packed_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = ResumeToken::decode(&wrap_packed(&bytes));
    }

    #[test]
    fn any_single_byte_change_of_a_valid_nvlist_is_caught_or_harmless(
        index in 0usize..200,
        byte in any::<u8>(),
    ) {
        let mut packed = packed_valid();
        let index = index % packed.len();
        packed[index] = byte;
        // Either it still decodes (the byte was padding, a value or a name that stays valid) or
        // it is a typed error; never a panic.
        let _ = ResumeToken::decode(&wrap_packed(&packed));
    }
}
