//! The bytes on the wire: the version handshake and the frames that follow it.
//!
//! After the handshake, every frame is a big-endian `u32` length followed by that many bytes
//! (tokio-util's `LengthDelimitedCodec` format, decoded with [`FRAME_LEN_MAX`] as its limit).
//! A frame's bytes are a postcard-encoded [`Header`] followed by its payload: a postcard-encoded
//! request or response body, raw stream bytes, or nothing. [`decode_frame`] is the single place
//! that turns untrusted bytes into a header; the fuzz target `transport_frame` feeds it.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The protocol's name in the handshake: a peer that does not send it is not zferry.
pub const PROTOCOL_NAME: &str = "ZFERRY-TRANSPORT";

/// The protocol version. Peers with different versions refuse each other in the handshake:
/// bump it on any change to [`Header`] or to the framing.
pub const PROTOCOL_VERSION: u16 = 1;

/// The handshake message's fixed size: `ZFERRY-TRANSPORT/0001\n`, padded with NUL bytes.
pub const HELLO_LEN_BYTES: usize = 32;

/// The largest request or response body, encoded. A listing of many filesystems is the largest
/// message the endpoints exchange; 8 MiB holds tens of thousands of them.
pub const MESSAGE_LEN_MAX_BYTES: usize = 8 << 20;

/// The largest chunk of stream data in one frame. A request queued behind a data frame waits
/// for at most this much on the wire (1 ms at 1 GB/s, 80 ms at 100 Mbit/s); larger chunks
/// mean fewer frames and task wake-ups per byte (256 KiB chunks reached about 60 % of a plain
/// copy's throughput on loopback, 1 MiB chunks about 75 %: `benches/README.md`).
pub const DATA_CHUNK_MAX_BYTES: usize = 1 << 20;

/// Room for a frame header (postcard, a few varints and a short reason).
pub const HEADER_LEN_MAX_BYTES: usize = 2 << 10;

/// The largest frame a peer may send; a longer declared length closes the connection before
/// anything is allocated for it.
pub const FRAME_LEN_MAX: usize = MESSAGE_LEN_MAX_BYTES + HEADER_LEN_MAX_BYTES;

/// The longest reset or close reason sent; longer ones are cut (on a character boundary).
pub const REASON_LEN_MAX_BYTES: usize = 1024;

/// Which way a stream flows: with the request (client to server, e.g. `zfs receive` data) or
/// with the response (server to client, e.g. `zfs send` data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    /// Client to server, alongside a request.
    Upload,
    /// Server to client, alongside a response.
    Download,
}

/// A frame's header. Streams are named by the request ID and their direction: a request has at
/// most one stream each way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header {
    /// A request; the payload is its body. `upload`: a stream follows from the client;
    /// `download`: the client accepts a stream with the response.
    Request {
        /// The request ID, unique among the client's requests in flight.
        id: u64,
        /// Whether a stream follows the request.
        upload: bool,
        /// Whether the client accepts a stream with the response.
        download: bool,
    },
    /// The response to request `id`; the payload is its body. `download`: a stream follows.
    Response {
        /// The request ID.
        id: u64,
        /// Whether a stream follows the response.
        download: bool,
    },
    /// The server could not produce a response (the handler failed or its response did not
    /// encode).
    Failed {
        /// The request ID.
        id: u64,
        /// What went wrong.
        reason: String,
    },
    /// Stream data; the payload is the bytes (never empty).
    Data {
        /// The request ID.
        id: u64,
        /// The stream's direction.
        dir: Direction,
    },
    /// The stream ended normally: everything was sent.
    End {
        /// The request ID.
        id: u64,
        /// The stream's direction.
        dir: Direction,
    },
    /// The stream broke: the sending side's source failed, or the receiving side stopped
    /// reading. Either side may send it.
    Reset {
        /// The request ID.
        id: u64,
        /// The stream's direction.
        dir: Direction,
        /// Why.
        reason: String,
    },
    /// The stream's reader consumed `bytes` more: the writer may send that much more.
    Credit {
        /// The request ID.
        id: u64,
        /// The stream's direction.
        dir: Direction,
        /// How many more bytes may be sent.
        bytes: u32,
    },
    /// Nothing to say, but alive.
    Heartbeat,
    /// The sender closes the connection: `None` in an orderly close, else the error.
    Close {
        /// The error that made the sender close, if any.
        reason: Option<String>,
    },
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header did not decode (unknown message type, truncated, or garbage).
    #[error("undecodable frame header ({detail}); the peer is not speaking this protocol version")]
    Header {
        /// postcard's error.
        detail: String,
    },
    /// A frame that carries no payload had bytes after its header.
    #[error("frame `{kind}` carries {len_bytes} unexpected payload bytes")]
    UnexpectedPayload {
        /// The header's kind.
        kind: &'static str,
        /// The payload's length.
        len_bytes: usize,
    },
    /// A data frame without data, or with more than [`DATA_CHUNK_MAX_BYTES`].
    #[error("data frame of {len_bytes} bytes (must be 1 to {DATA_CHUNK_MAX_BYTES})")]
    DataLength {
        /// The payload's length.
        len_bytes: usize,
    },
    /// A body longer than [`MESSAGE_LEN_MAX_BYTES`].
    #[error("message body of {len_bytes} bytes exceeds {MESSAGE_LEN_MAX_BYTES}")]
    BodyTooLong {
        /// The body's length.
        len_bytes: usize,
    },
    /// A reason string longer than [`REASON_LEN_MAX_BYTES`].
    #[error("reason of {len_bytes} bytes exceeds {REASON_LEN_MAX_BYTES}")]
    ReasonTooLong {
        /// The reason's length.
        len_bytes: usize,
    },
}

/// Why the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's first bytes are not a zferry transport greeting.
    #[error(
        "the peer is not a zferry transport endpoint: it sent {got} instead of `{PROTOCOL_NAME}/NNNN`; check the address and the transport type (tcp vs tls)"
    )]
    NotZferry {
        /// What it sent, escaped.
        got: String,
    },
    /// The peer speaks another version.
    #[error(
        "protocol version mismatch: this side speaks {PROTOCOL_NAME} version {ours}, the peer version {theirs}; run the same zferry version on both sides"
    )]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
}

impl Header {
    /// The header's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Request { .. } => "request",
            Self::Response { .. } => "response",
            Self::Failed { .. } => "failed",
            Self::Data { .. } => "data",
            Self::End { .. } => "end",
            Self::Reset { .. } => "reset",
            Self::Credit { .. } => "credit",
            Self::Heartbeat => "heartbeat",
            Self::Close { .. } => "close",
        }
    }
}

/// The handshake message this side sends.
pub fn hello() -> [u8; HELLO_LEN_BYTES] {
    hello_for(PROTOCOL_VERSION)
}

/// The handshake message of `version` (tests use it to play an old peer).
pub fn hello_for(version: u16) -> [u8; HELLO_LEN_BYTES] {
    let text = format!("{PROTOCOL_NAME}/{version:04}\n");
    let mut out = [0u8; HELLO_LEN_BYTES];
    let n = text.len().min(HELLO_LEN_BYTES);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// Checks the peer's handshake message.
pub fn check_hello(got: &[u8; HELLO_LEN_BYTES]) -> Result<(), HandshakeError> {
    let not_zferry = || HandshakeError::NotZferry {
        got: format!("{:?}", String::from_utf8_lossy(got).trim_end_matches('\0')),
    };
    let prefix = format!("{PROTOCOL_NAME}/");
    let rest = got.strip_prefix(prefix.as_bytes()).ok_or_else(not_zferry)?;
    let (digits, tail) = rest.split_at_checked(4).ok_or_else(not_zferry)?;
    if !digits.iter().all(u8::is_ascii_digit) || tail.first() != Some(&b'\n') {
        return Err(not_zferry());
    }
    if tail[1..].iter().any(|b| *b != 0) {
        return Err(not_zferry());
    }
    let theirs = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if theirs != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    Ok(())
}

/// The length-delimited codec with this protocol's frame limit.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_LEN_MAX)
        .length_field_type::<u32>()
        .new_codec()
}

/// Splits one frame (without its length prefix) into its header and payload, and checks that
/// the payload fits the header. Never panics, allocates at most the frame's size.
pub fn decode_frame(frame: Bytes) -> Result<(Header, Bytes), FrameError> {
    let (header, rest) =
        postcard::take_from_bytes::<Header>(&frame).map_err(|e| FrameError::Header {
            detail: e.to_string(),
        })?;
    let payload = frame.slice(frame.len() - rest.len()..);
    match &header {
        Header::Request { .. } | Header::Response { .. } => {
            if payload.len() > MESSAGE_LEN_MAX_BYTES {
                return Err(FrameError::BodyTooLong {
                    len_bytes: payload.len(),
                });
            }
        }
        Header::Data { .. } => {
            if payload.is_empty() || payload.len() > DATA_CHUNK_MAX_BYTES {
                return Err(FrameError::DataLength {
                    len_bytes: payload.len(),
                });
            }
        }
        Header::Failed { reason, .. }
        | Header::Reset { reason, .. }
        | Header::Close {
            reason: Some(reason),
        } if reason.len() > REASON_LEN_MAX_BYTES => {
            return Err(FrameError::ReasonTooLong {
                len_bytes: reason.len(),
            });
        }
        _ => {
            if !payload.is_empty() {
                return Err(FrameError::UnexpectedPayload {
                    kind: header.kind(),
                    len_bytes: payload.len(),
                });
            }
        }
    }
    Ok((header, payload))
}

/// The length prefix and encoded header of a frame whose payload is `payload_len` bytes; the
/// payload is written after it as is.
pub fn encode_head(header: &Header, payload_len: usize) -> BytesMut {
    // A header is a few varints and a bounded reason: it always encodes and always fits.
    let encoded = postcard::to_stdvec(header).unwrap_or_default();
    let len = encoded.len() + payload_len;
    let mut out = BytesMut::with_capacity(4 + encoded.len());
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_slice(&encoded);
    out
}

/// Cuts a reason to [`REASON_LEN_MAX_BYTES`] on a character boundary.
pub fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(REASON_LEN_MAX_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(header: &Header, payload: &[u8]) -> Bytes {
        let mut head = encode_head(header, payload.len());
        head.put_slice(payload);
        head.split_off(4).freeze()
    }

    #[test]
    fn hello_round_trips_and_refuses_others() {
        assert_eq!(check_hello(&hello()), Ok(()));
        assert_eq!(
            check_hello(&hello_for(2)),
            Err(HandshakeError::VersionMismatch { ours: 1, theirs: 2 })
        );
        let mut http = [0u8; HELLO_LEN_BYTES];
        http[..16].copy_from_slice(b"GET / HTTP/1.1\r\n");
        let err = check_hello(&http).unwrap_err();
        assert!(err.to_string().contains("GET / HTTP/1.1"), "{err}");
        let mut trailing = hello();
        trailing[30] = b'x';
        assert!(matches!(
            check_hello(&trailing),
            Err(HandshakeError::NotZferry { .. })
        ));
    }

    #[test]
    fn frames_round_trip() {
        let cases = [
            (
                Header::Request {
                    id: 7,
                    upload: true,
                    download: false,
                },
                &b"body"[..],
            ),
            (
                Header::Response {
                    id: 7,
                    download: true,
                },
                b"",
            ),
            (
                Header::Data {
                    id: u64::MAX,
                    dir: Direction::Download,
                },
                b"x",
            ),
            (
                Header::Credit {
                    id: 1,
                    dir: Direction::Upload,
                    bytes: 4096,
                },
                b"",
            ),
            (Header::Close { reason: None }, b""),
        ];
        for (header, payload) in cases {
            let (h, p) = decode_frame(frame(&header, payload)).unwrap();
            assert_eq!((h, &p[..]), (header, payload));
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let cases: Vec<(Bytes, &str)> = vec![
            (Bytes::from_static(&[200]), "undecodable"),
            (Bytes::new(), "undecodable"),
            (frame(&Header::Heartbeat, b"junk"), "unexpected payload"),
            (
                frame(
                    &Header::Data {
                        id: 1,
                        dir: Direction::Upload,
                    },
                    b"",
                ),
                "data frame of 0 bytes",
            ),
            (
                frame(
                    &Header::Reset {
                        id: 1,
                        dir: Direction::Upload,
                        reason: "r".repeat(REASON_LEN_MAX_BYTES + 1),
                    },
                    b"",
                ),
                "reason of",
            ),
        ];
        for (bytes, expected) in cases {
            let err = decode_frame(bytes.clone()).unwrap_err();
            assert!(err.to_string().contains(expected), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        let long = "é".repeat(REASON_LEN_MAX_BYTES);
        let cut = bounded_reason(&long);
        assert!(cut.len() <= REASON_LEN_MAX_BYTES && cut.len() >= REASON_LEN_MAX_BYTES - 1);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_frame(Bytes::from(bytes));
        }
    }
}
