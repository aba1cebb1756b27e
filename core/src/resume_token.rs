//! OpenZFS resume tokens, decoded natively, and their validation against a send request.
//!
//! A receiver that was interrupted during `zfs recv -s` keeps a `receive_resume_token`. The
//! sender resumes with `zfs send -t <token>`. The token is text written by OpenZFS
//! (`dsl_dataset.c`, read back by libzfs's `zfs_send_resume_token_to_nvlist`):
//!
//! ```text
//! 1-<checksum hex>-<packed length hex>-<payload hex>
//! ```
//!
//! * `1` is the token version, the only one that exists;
//! * the payload is a zlib stream whose inflated form is a packed nvlist of
//!   `<packed length>` bytes (see [`nvlist`]);
//! * the checksum is the first 64-bit word of the fletcher-4 sum of the compressed payload bytes
//!   (the little-endian 32-bit words; a tail of 1-3 bytes is not summed, as in OpenZFS).
//!
//! The token travels from the receiver to the sender, so a sender must treat it as hostile:
//! it can name another filesystem or ask for an unencrypted send of encrypted data (zrepl's
//! threat model). [`validate`] checks a decoded token against what the sender was asked to do.
//!
//! Decoding never panics and never allocates more than [`RESUME_TOKEN_PACKED_BYTES_MAX`] plus
//! the token text: every length read from the token is checked against a named bound first.

pub mod nvlist;
mod validate;

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::name::{NameError, VersionKind, VersionName};
use crate::version::Guid;

pub use nvlist::{NvlistError, NvlistErrorKind};
pub use validate::{
    FilesystemEncryption, ResumeRequest, ResumeTokenMismatch, SendEncryptionPolicy, validate,
};

/// The only resume token version OpenZFS writes (`ZFS_SEND_RESUME_TOKEN_VERSION`).
pub const RESUME_TOKEN_VERSION: u32 = 1;

/// The largest packed (uncompressed) nvlist accepted, in bytes. Real tokens pack to a few
/// hundred bytes (six numbers, a name of at most 255 bytes, a few flags; redaction lists add
/// 8 bytes per snapshot). The bound is what the decoder will ever allocate for inflation.
pub const RESUME_TOKEN_PACKED_BYTES_MAX: u64 = 64 * 1024;

/// The longest token text accepted, in bytes. OpenZFS never lets the compressed payload exceed
/// the packed size, so two hex digits per packed byte plus the header is the most it writes.
pub const RESUME_TOKEN_TEXT_BYTES_MAX: usize = 2 * RESUME_TOKEN_PACKED_BYTES_MAX as usize + 64;

/// The most hex digits a 64-bit header field can have.
const HEADER_HEX_DIGITS_MAX: usize = 16;

/// A part of the token text, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPart {
    /// The leading version number.
    Version,
    /// The checksum field.
    Checksum,
    /// The packed-length field.
    PackedLength,
    /// The compressed payload.
    Payload,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPart::Version => "version",
            TokenPart::Checksum => "checksum",
            TokenPart::PackedLength => "packed length",
            TokenPart::Payload => "payload",
        })
    }
}

/// Why a token could not be decoded. Every variant means the token is corrupt, forged, or from
/// a ZFS this decoder does not understand; the receiver's partial state can be discarded with
/// `zfs recv -A` and the step sent again from the start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeTokenError {
    /// The text is empty (after trimming whitespace).
    #[error("resume token is empty")]
    Empty,
    /// The text exceeds [`RESUME_TOKEN_TEXT_BYTES_MAX`].
    #[error(
        "resume token is {len_bytes} bytes long; at most {RESUME_TOKEN_TEXT_BYTES_MAX} are \
         accepted"
    )]
    TooLong {
        /// The text's length.
        len_bytes: usize,
    },
    /// The text does not have four `-`-separated parts.
    #[error(
        "resume token has {n_parts} `-`-separated parts; expected 4: \
         `<version>-<checksum>-<packed length>-<payload>`"
    )]
    Format {
        /// How many parts it has.
        n_parts: usize,
    },
    /// The version is not [`RESUME_TOKEN_VERSION`].
    #[error(
        "resume token version `{version}` is not supported; OpenZFS writes version \
         {RESUME_TOKEN_VERSION}"
    )]
    Version {
        /// The version text found.
        version: String,
    },
    /// A header field or the payload is not hexadecimal, is empty or too long, or the payload
    /// has an odd number of digits.
    #[error("resume token {part} is not valid hex: {reason}")]
    Hex {
        /// Which part.
        part: TokenPart,
        /// What is wrong with it.
        reason: HexProblem,
    },
    /// The checksum in the header does not match the payload.
    #[error(
        "resume token checksum mismatch: the header says {expected:#x}, the payload sums to \
         {computed:#x}; the token was truncated or altered"
    )]
    Checksum {
        /// The checksum written in the token.
        expected: u64,
        /// The checksum of the payload as found.
        computed: u64,
    },
    /// The declared packed length exceeds [`RESUME_TOKEN_PACKED_BYTES_MAX`].
    #[error(
        "resume token declares a packed nvlist of {declared_bytes} bytes; at most \
         {RESUME_TOKEN_PACKED_BYTES_MAX} are accepted"
    )]
    PackedTooLarge {
        /// The declared length.
        declared_bytes: u64,
    },
    /// The payload is not a valid zlib stream.
    #[error("resume token payload does not inflate: {reason}")]
    Inflate {
        /// The inflater's complaint.
        reason: String,
    },
    /// The payload inflates to fewer bytes than declared.
    #[error(
        "resume token payload inflates to {inflated_bytes} bytes, but the header declares \
         {declared_bytes}"
    )]
    InflatedTooShort {
        /// The declared length.
        declared_bytes: u64,
        /// What it inflated to.
        inflated_bytes: usize,
    },
    /// The payload inflates to more bytes than declared.
    #[error(
        "resume token payload inflates to more than the {declared_bytes} bytes the header \
         declares"
    )]
    InflatedTooLong {
        /// The declared length.
        declared_bytes: u64,
    },
    /// The inflated payload is not a well-formed packed nvlist.
    #[error("resume token payload is malformed: {0}")]
    Nvlist(#[from] NvlistError),
    /// A field every OpenZFS token has is missing.
    #[error("resume token has no `{field}` field")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A known field appears twice.
    #[error("resume token has the field `{field}` twice")]
    DuplicateField {
        /// The field's name.
        field: String,
    },
    /// A known field has another type than OpenZFS gives it.
    #[error("resume token field `{field}` is a {found}, expected a {expected}")]
    FieldType {
        /// The field's name.
        field: &'static str,
        /// The type OpenZFS writes.
        expected: nvlist::TypeName,
        /// The type found.
        found: nvlist::TypeName,
    },
    /// `toname` is not a valid snapshot name.
    #[error("resume token field `toname` is not a valid snapshot name: {0}")]
    Toname(NameError),
    /// `toname` names a bookmark; only snapshots are sent.
    #[error("resume token field `toname` = `{toname}` is a bookmark, not a snapshot")]
    TonameNotSnapshot {
        /// The name found.
        toname: String,
    },
}

/// What is wrong with a hex field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexProblem {
    /// No digits at all.
    #[error("it is empty")]
    Empty,
    /// A character that is not a hex digit.
    #[error("{ch:?} at character {position} is not a hex digit")]
    NotHex {
        /// The character.
        ch: char,
        /// Its index within the part, counting from 0.
        position: usize,
    },
    /// More digits than fit 64 bits.
    #[error("{n_digits} digits do not fit 64 bits")]
    TooLong {
        /// How many digits.
        n_digits: usize,
    },
    /// The payload has an odd number of digits.
    #[error("it has an odd number of digits ({n_digits})")]
    OddLength {
        /// How many digits.
        n_digits: usize,
    },
}

/// What a resume token says: which send to resume and from where. Plain data, so that
/// validation and tests need no encoded token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTokenContents {
    /// The GUID of the incremental source; `None` for a full send.
    pub fromguid: Option<Guid>,
    /// The GUID of the snapshot being sent.
    pub toguid: Guid,
    /// The sender's full name of the snapshot being sent (`pool/fs@snap`).
    pub toname: VersionName,
    /// The object number to resume at.
    pub object: u64,
    /// The byte offset within `object` to resume at.
    pub offset: u64,
    /// The bytes received so far, if the token says (OpenZFS always writes it).
    pub bytes: Option<u64>,
    /// The interrupted send was raw (`zfs send -w`).
    pub rawok: bool,
    /// The interrupted send kept blocks compressed (`zfs send -c`).
    pub compressok: bool,
    /// The interrupted send used embedded blocks (`zfs send -e`).
    pub embedok: bool,
    /// The interrupted send allowed blocks over 128 KiB (`zfs send -L`).
    pub largeblockok: bool,
    /// The send is of a partially received dataset's saved state (`zfs send -S`).
    pub savedok: bool,
}

impl ResumeTokenContents {
    /// Whether this resumes an incremental send.
    pub fn is_incremental(&self) -> bool {
        self.fromguid.is_some()
    }
}

/// A decoded resume token: the exact text (to pass to `zfs send -t`) and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    text: String,
    contents: ResumeTokenContents,
}

impl ResumeToken {
    /// Decodes a token as `zfs get receive_resume_token` prints it. Surrounding whitespace is
    /// ignored; everything else must be exactly what OpenZFS writes.
    pub fn decode(text: &str) -> Result<Self, ResumeTokenError> {
        let text = text.trim_ascii();
        let contents = decode_contents(text)?;
        Ok(Self {
            text: text.to_owned(),
            contents,
        })
    }

    /// Encodes `contents` as a version-1 token that OpenZFS's decoder accepts. The payload is
    /// zlib with stored (uncompressed) blocks, so the text is longer than one ZFS writes for the
    /// same contents; the simulator and tests use it, the daemon only passes tokens on.
    pub fn encode(contents: ResumeTokenContents) -> Self {
        let packed = pack(&contents);
        let text = wrap_packed(&packed);
        Self { text, contents }
    }

    /// The token text, trimmed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What the token says.
    pub fn contents(&self) -> &ResumeTokenContents {
        &self.contents
    }
}

impl FromStr for ResumeToken {
    type Err = ResumeTokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ResumeToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ResumeToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// The first word of OpenZFS's fletcher-4 checksum over `data` read as little-endian 32-bit
/// words (`fletcher_4_native_varsize` on a little-endian host): their sum modulo 2^64. A tail
/// of 1-3 bytes is not summed.
pub fn fletcher4_first_word(data: &[u8]) -> u64 {
    data.chunks_exact(4).fold(0u64, |a, w| {
        a.wrapping_add(u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
    })
}

fn decode_contents(text: &str) -> Result<ResumeTokenContents, ResumeTokenError> {
    if text.is_empty() {
        return Err(ResumeTokenError::Empty);
    }
    if text.len() > RESUME_TOKEN_TEXT_BYTES_MAX {
        return Err(ResumeTokenError::TooLong {
            len_bytes: text.len(),
        });
    }
    let parts: Vec<&str> = text.splitn(5, '-').collect();
    let &[version, checksum, packed_len, payload] = parts.as_slice() else {
        let n_parts = text.split('-').count();
        return Err(ResumeTokenError::Format { n_parts });
    };
    if version != "1" {
        return Err(ResumeTokenError::Version {
            version: version.to_owned(),
        });
    }
    let expected = parse_header_hex(TokenPart::Checksum, checksum)?;
    let declared_bytes = parse_header_hex(TokenPart::PackedLength, packed_len)?;
    if declared_bytes > RESUME_TOKEN_PACKED_BYTES_MAX {
        return Err(ResumeTokenError::PackedTooLarge { declared_bytes });
    }
    let compressed = parse_payload_hex(payload)?;
    let computed = fletcher4_first_word(&compressed);
    if computed != expected {
        return Err(ResumeTokenError::Checksum { expected, computed });
    }
    let packed = inflate(&compressed, declared_bytes)?;
    decode_packed_nvlist(&packed)
}

/// Decodes the inflated payload of a token: a packed native nvlist. [`ResumeToken::decode`]
/// calls it after the checksum and inflation; it is public for the fuzzer and for tools that
/// already hold the nvlist. Inputs longer than [`RESUME_TOKEN_PACKED_BYTES_MAX`] are refused.
pub fn decode_packed_nvlist(packed: &[u8]) -> Result<ResumeTokenContents, ResumeTokenError> {
    if packed.len() as u64 > RESUME_TOKEN_PACKED_BYTES_MAX {
        return Err(ResumeTokenError::PackedTooLarge {
            declared_bytes: packed.len() as u64,
        });
    }
    let pairs = nvlist::read(packed)?;
    contents_from_pairs(&pairs)
}

fn parse_header_hex(part: TokenPart, s: &str) -> Result<u64, ResumeTokenError> {
    let err = |reason| ResumeTokenError::Hex { part, reason };
    if s.is_empty() {
        return Err(err(HexProblem::Empty));
    }
    check_hex_digits(s).map_err(err)?;
    if s.len() > HEADER_HEX_DIGITS_MAX {
        return Err(err(HexProblem::TooLong { n_digits: s.len() }));
    }
    u64::from_str_radix(s, 16).map_err(|_| err(HexProblem::TooLong { n_digits: s.len() }))
}

fn check_hex_digits(s: &str) -> Result<(), HexProblem> {
    match s
        .chars()
        .enumerate()
        .find(|(_, ch)| !ch.is_ascii_hexdigit())
    {
        Some((position, ch)) => Err(HexProblem::NotHex { ch, position }),
        None => Ok(()),
    }
}

fn parse_payload_hex(s: &str) -> Result<Vec<u8>, ResumeTokenError> {
    let err = |reason| ResumeTokenError::Hex {
        part: TokenPart::Payload,
        reason,
    };
    if s.is_empty() {
        return Err(err(HexProblem::Empty));
    }
    check_hex_digits(s).map_err(err)?;
    if !s.len().is_multiple_of(2) {
        return Err(err(HexProblem::OddLength { n_digits: s.len() }));
    }
    // All digits are ASCII hex (checked above), so each pair converts.
    Ok(s.as_bytes()
        .chunks_exact(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect())
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Inflates the zlib payload, reading at most one byte more than declared so that a payload
/// that inflates to more is caught without inflating all of it.
fn inflate(compressed: &[u8], declared_bytes: u64) -> Result<Vec<u8>, ResumeTokenError> {
    // `declared_bytes` is at most RESUME_TOKEN_PACKED_BYTES_MAX here.
    let mut packed = Vec::with_capacity(declared_bytes as usize);
    flate2::read::ZlibDecoder::new(compressed)
        .take(declared_bytes + 1)
        .read_to_end(&mut packed)
        .map_err(|e| ResumeTokenError::Inflate {
            reason: e.to_string(),
        })?;
    if packed.len() as u64 > declared_bytes {
        return Err(ResumeTokenError::InflatedTooLong { declared_bytes });
    }
    if (packed.len() as u64) < declared_bytes {
        return Err(ResumeTokenError::InflatedTooShort {
            declared_bytes,
            inflated_bytes: packed.len(),
        });
    }
    Ok(packed)
}

// The names of a token's pairs as OpenZFS writes them: uint64 numbers, a string `toname`, and
// presence flags (`DATA_TYPE_BOOLEAN`, no value).
const FIELD_FROMGUID: &str = "fromguid";
const FIELD_TOGUID: &str = "toguid";
const FIELD_TONAME: &str = "toname";
const FIELD_OBJECT: &str = "object";
const FIELD_OFFSET: &str = "offset";
const FIELD_BYTES: &str = "bytes";
const FLAGS: [&str; 5] = ["rawok", "compressok", "embedok", "largeblockok", "savedok"];
const UINT64_FIELDS: [&str; 5] = [
    FIELD_FROMGUID,
    FIELD_TOGUID,
    FIELD_OBJECT,
    FIELD_OFFSET,
    FIELD_BYTES,
];

fn contents_from_pairs(
    pairs: &[nvlist::Pair<'_>],
) -> Result<ResumeTokenContents, ResumeTokenError> {
    let mut numbers: [Option<u64>; UINT64_FIELDS.len()] = [None; UINT64_FIELDS.len()];
    let mut flags = [false; FLAGS.len()];
    let mut toname: Option<&[u8]> = None;
    let mut seen: std::collections::BTreeSet<&[u8]> = std::collections::BTreeSet::new();
    for pair in pairs {
        // A forged token could carry a field twice, hoping one check reads the first and
        // `zfs send` the second; OpenZFS's unique-name nvlists never do.
        if !seen.insert(pair.name) {
            return Err(ResumeTokenError::DuplicateField {
                field: String::from_utf8_lossy(pair.name).into_owned(),
            });
        }
        let expect =
            |field: &'static str, expected: nvlist::Value<'_>| ResumeTokenError::FieldType {
                field,
                expected: expected.type_name(),
                found: pair.value.type_name(),
            };
        if let Some(i) = UINT64_FIELDS.iter().position(|f| f.as_bytes() == pair.name) {
            let nvlist::Value::Uint64(v) = pair.value else {
                return Err(expect(UINT64_FIELDS[i], nvlist::Value::Uint64(0)));
            };
            numbers[i] = Some(v);
        } else if let Some(i) = FLAGS.iter().position(|f| f.as_bytes() == pair.name) {
            if pair.value != nvlist::Value::Boolean {
                return Err(expect(FLAGS[i], nvlist::Value::Boolean));
            }
            flags[i] = true;
        } else if pair.name == FIELD_TONAME.as_bytes() {
            let nvlist::Value::String(s) = pair.value else {
                return Err(expect(FIELD_TONAME, nvlist::Value::String(b"")));
            };
            toname = Some(s);
        }
        // Any other pair (redaction lists and whatever later OpenZFS adds) is skipped.
    }
    let [fromguid, toguid, object, offset, bytes] = numbers;
    let required = |v: Option<u64>, field| v.ok_or(ResumeTokenError::MissingField { field });
    let toguid = Guid(required(toguid, FIELD_TOGUID)?);
    let object = required(object, FIELD_OBJECT)?;
    let offset = required(offset, FIELD_OFFSET)?;
    let toname = toname.ok_or(ResumeTokenError::MissingField {
        field: FIELD_TONAME,
    })?;
    let toname_text = String::from_utf8_lossy(toname);
    let toname = VersionName::parse(&toname_text).map_err(ResumeTokenError::Toname)?;
    if toname.kind() != VersionKind::Snapshot {
        return Err(ResumeTokenError::TonameNotSnapshot {
            toname: toname.to_string(),
        });
    }
    let [rawok, compressok, embedok, largeblockok, savedok] = flags;
    Ok(ResumeTokenContents {
        fromguid: fromguid.map(Guid),
        toguid,
        toname,
        object,
        offset,
        bytes,
        rawok,
        compressok,
        embedok,
        largeblockok,
        savedok,
    })
}

/// Packs `contents` in the pair order OpenZFS's `get_receive_resume_token` uses.
fn pack(c: &ResumeTokenContents) -> Vec<u8> {
    use nvlist::WriteValue as V;
    let toname = c.toname.to_string();
    let mut pairs: Vec<(&str, V<'_>)> = Vec::new();
    if let Some(from) = c.fromguid {
        pairs.push((FIELD_FROMGUID, V::Uint64(from.0)));
    }
    pairs.push((FIELD_OBJECT, V::Uint64(c.object)));
    pairs.push((FIELD_OFFSET, V::Uint64(c.offset)));
    if let Some(bytes) = c.bytes {
        pairs.push((FIELD_BYTES, V::Uint64(bytes)));
    }
    pairs.push((FIELD_TOGUID, V::Uint64(c.toguid.0)));
    pairs.push((FIELD_TONAME, V::String(&toname)));
    let flags = [
        ("largeblockok", c.largeblockok),
        ("embedok", c.embedok),
        ("compressok", c.compressok),
        ("rawok", c.rawok),
        ("savedok", c.savedok),
    ];
    pairs.extend(
        flags
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| (name, V::Boolean)),
    );
    nvlist::write(&pairs)
}

/// Wraps a packed nvlist into token text: zlib with stored blocks, checksum, header.
fn wrap_packed(packed: &[u8]) -> String {
    let compressed = zlib_stored(packed);
    let mut text = format!(
        "{RESUME_TOKEN_VERSION}-{:x}-{:x}-",
        fletcher4_first_word(&compressed),
        packed.len()
    );
    text.reserve(compressed.len() * 2);
    for byte in &compressed {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A zlib stream (RFC 1950) of stored deflate blocks (RFC 1951 §3.2.4): infallible and exact.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    const STORED_BLOCK_BYTES_MAX: usize = 0xffff;
    let mut out = vec![0x78, 0x01];
    let mut chunks = data.chunks(STORED_BLOCK_BYTES_MAX).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = chunk.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % MOD;
        b = (b + a) % MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests;
