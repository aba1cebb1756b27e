//! The frame-decoder fuzz harness, shared by the cargo-fuzz target
//! (`fuzz_targets/transport_frame.rs`) and the stable corpus replay test in `transport/tests/`.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;
use zferry_transport::wire::{HELLO_LEN_BYTES, check_hello, codec, decode_frame, encode_head};

/// The most frames taken from one input (inputs are small; this only bounds the loop).
const FRAMES_PER_INPUT_MAX: usize = 10_000;

/// Feeds `data` to the decoder three ways, so that one input reaches every layer:
///
/// 1. as one frame's bytes (header and payload), straight into `decode_frame`;
/// 2. as a byte stream after the handshake: length-delimited frames, each into `decode_frame`,
///    and the rest at the end of the stream;
/// 3. its first bytes as the peer's handshake greeting.
///
/// It panics only if a frame that decoded does not survive encode-then-decode unchanged.
pub(crate) fn check(data: &[u8]) {
    round_trip(Bytes::copy_from_slice(data));

    let mut codec = codec();
    let mut buf = BytesMut::from(data);
    for _ in 0..FRAMES_PER_INPUT_MAX {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => round_trip(frame.freeze()),
            Ok(None) => {
                if let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
                    round_trip(frame.freeze());
                }
                break;
            }
            Err(_) => break,
        }
    }

    if let Some(greeting) = data.first_chunk::<HELLO_LEN_BYTES>() {
        let _ = check_hello(greeting);
    }
}

fn round_trip(frame: Bytes) {
    let Ok((header, payload)) = decode_frame(frame) else {
        return;
    };
    let mut again = encode_head(&header, payload.len());
    again.extend_from_slice(&payload);
    let again = again.split_off(4).freeze();
    match decode_frame(again) {
        Ok(decoded) => assert_eq!(decoded, (header, payload), "round trip changed it"),
        Err(e) => panic!("re-encoded frame {header:?} does not decode: {e}"),
    }
}
