//! The resume-token fuzz harness, shared by the cargo-fuzz target
//! (`fuzz_targets/resume_token.rs`) and the stable corpus replay test in `core/tests/`.

use zferry_core::resume_token::{ResumeToken, decode_packed_nvlist, fletcher4_first_word};

/// Feeds `data` to the decoder three ways, so that one input reaches every layer:
///
/// 1. as token text (lossily UTF-8), which only rarely gets past the checksum;
/// 2. as a packed nvlist, straight into the nvlist reader;
/// 3. as a little-endian u16 declared length followed by the compressed payload of a token
///    with a correct checksum, which exercises inflation and its bounds.
///
/// It panics only if a token that decoded does not survive encode-then-decode unchanged.
pub(crate) fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    round_trip(ResumeToken::decode(&text).ok());

    if let Ok(contents) = decode_packed_nvlist(data) {
        round_trip(Some(ResumeToken::encode(contents)));
    }

    let (declared, payload) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let mut wrapped = format!("1-{:x}-{declared:x}-", fletcher4_first_word(payload));
    for byte in payload {
        wrapped.push_str(&format!("{byte:02x}"));
    }
    round_trip(ResumeToken::decode(&wrapped).ok());
}

fn round_trip(token: Option<ResumeToken>) {
    let Some(token) = token else { return };
    let again = ResumeToken::encode(token.contents().clone());
    match ResumeToken::decode(again.as_str()) {
        Ok(decoded) => assert_eq!(
            decoded.contents(),
            token.contents(),
            "round trip changed it"
        ),
        Err(e) => panic!("re-encoded token does not decode: {e}\n{}", again.as_str()),
    }
}
