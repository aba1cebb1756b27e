//! A reader (and a small writer) of OpenZFS packed nvlists in `NV_ENCODE_NATIVE` encoding, the
//! form `nvlist_pack` gives on a little-endian host.
//!
//! Layout, as OpenZFS's `nvs_native` writes it (all integers little-endian):
//!
//! ```text
//! header   u8 encoding (0 native, 1 XDR) | u8 endian (1 little, 0 big) | u8 | u8
//! nvlist   i32 nvl_version (0) | u32 nvl_nvflag
//! pair*    i32 nvp_size | i16 nvp_name_sz | i16 reserved | i32 nvp_value_elem | i32 nvp_type
//!          | name (nvp_name_sz bytes, NUL-terminated), zero-padded to 8
//!          | value, zero-padded to 8; nvp_size covers all of it
//!          (an embedded nvlist's pairs follow its pair, each list ends with its own terminator)
//! end      i32 0
//! ```
//!
//! The reader checks every size against the bytes that are there and against the rules of
//! OpenZFS's `i_validate_nvpair`, bounds the number of pairs and the nesting depth, and returns
//! the top-level pairs it understands. It never allocates in proportion to a length it read.

use std::fmt;

/// The most pairs (counting those of embedded nvlists) one packed nvlist may hold. A resume
/// token has at most a dozen; the bound keeps a forged one from making the reader loop long.
pub const NVLIST_PAIRS_MAX: usize = 256;

/// The deepest nesting of embedded nvlists accepted (OpenZFS allows 20; tokens use none).
pub const NVLIST_DEPTH_MAX: usize = 8;

/// `sizeof (nvpair_t)`: the fixed part of a pair before its name.
const PAIR_HEADER_BYTES: usize = 16;
/// `sizeof (nvlist_t)` as embedded in an nvlist-valued pair, already 8-aligned.
const EMBEDDED_NVLIST_BYTES: u64 = 24;
/// The only `nvl_version` OpenZFS has ever written (`NV_VERSION`).
const NV_VERSION: i32 = 0;
/// `NV_UNIQUE_NAME`, the flag `fnvlist_alloc` sets.
const NV_UNIQUE_NAME: u32 = 1;

/// The `data_type_t` codes of `sys/nvpair.h`.
mod data_type {
    pub(super) const BOOLEAN: i32 = 1;
    pub(super) const BYTE: i32 = 2;
    pub(super) const INT16: i32 = 3;
    pub(super) const UINT16: i32 = 4;
    pub(super) const INT32: i32 = 5;
    pub(super) const UINT32: i32 = 6;
    pub(super) const INT64: i32 = 7;
    pub(super) const UINT64: i32 = 8;
    pub(super) const STRING: i32 = 9;
    pub(super) const BYTE_ARRAY: i32 = 10;
    pub(super) const INT16_ARRAY: i32 = 11;
    pub(super) const UINT16_ARRAY: i32 = 12;
    pub(super) const INT32_ARRAY: i32 = 13;
    pub(super) const UINT32_ARRAY: i32 = 14;
    pub(super) const INT64_ARRAY: i32 = 15;
    pub(super) const UINT64_ARRAY: i32 = 16;
    pub(super) const STRING_ARRAY: i32 = 17;
    pub(super) const HRTIME: i32 = 18;
    pub(super) const NVLIST: i32 = 19;
    pub(super) const NVLIST_ARRAY: i32 = 20;
    pub(super) const BOOLEAN_VALUE: i32 = 21;
    pub(super) const INT8: i32 = 22;
    pub(super) const UINT8: i32 = 23;
    pub(super) const BOOLEAN_ARRAY: i32 = 24;
    pub(super) const INT8_ARRAY: i32 = 25;
    pub(super) const UINT8_ARRAY: i32 = 26;
    pub(super) const DOUBLE: i32 = 27;
}

/// A malformed packed nvlist: where (byte offset into the uncompressed payload) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packed nvlist, byte {offset}: {kind}")]
pub struct NvlistError {
    /// The byte offset in the packed (uncompressed) nvlist where the problem was found.
    pub offset: usize,
    /// What is wrong there.
    pub kind: NvlistErrorKind,
}

/// What is wrong with a packed nvlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvlistErrorKind {
    /// The data ends before a field that must be there.
    #[error("truncated: {what} needs {needed_bytes} bytes, only {available_bytes} remain")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes it needs.
        needed_bytes: usize,
        /// Bytes left.
        available_bytes: usize,
    },
    /// The header names an encoding other than native (0).
    #[error(
        "encoding byte is {byte} ({}); only the native encoding (0), which OpenZFS uses for \
         resume tokens, is supported",
        encoding_name(*byte)
    )]
    UnsupportedEncoding {
        /// The header's encoding byte.
        byte: u8,
    },
    /// The header says the nvlist was packed on a host of another byte order.
    #[error(
        "endianness byte is {byte} ({}); only little-endian (1) nvlists are supported, as \
         written by x86 and arm64 hosts",
        endian_name(*byte)
    )]
    UnsupportedEndian {
        /// The header's endianness byte.
        byte: u8,
    },
    /// `nvl_version` is not 0.
    #[error("nvlist version is {version}; only version 0 exists")]
    UnsupportedVersion {
        /// The version found.
        version: i32,
    },
    /// A pair's `nvp_size` is negative, too small for any pair, or larger than what is left.
    #[error("pair size {size_bytes} is invalid: {reason}")]
    PairSize {
        /// The size found.
        size_bytes: i64,
        /// Why it cannot be right.
        reason: &'static str,
    },
    /// A pair's name length or name bytes are wrong.
    #[error("pair name is invalid: {reason}")]
    PairName {
        /// What is wrong.
        reason: &'static str,
    },
    /// A pair's type code is not one OpenZFS defines.
    #[error("pair `{name}` has unknown data type {type_code}")]
    UnknownType {
        /// The pair's name.
        name: String,
        /// The type code found.
        type_code: i32,
    },
    /// A pair's element count does not fit its type (or is absurd).
    #[error("pair `{name}` of type {type_code} has invalid element count {n_elements}")]
    ElementCount {
        /// The pair's name.
        name: String,
        /// The type code.
        type_code: i32,
        /// The element count found.
        n_elements: i32,
    },
    /// The value area does not have the size the type and element count imply.
    #[error(
        "pair `{name}` has a value area of {found_bytes} bytes, but its type {type_code} \
         needs {expected_bytes}"
    )]
    ValueSize {
        /// The pair's name.
        name: String,
        /// The type code.
        type_code: i32,
        /// Bytes the value should take (8-aligned).
        expected_bytes: u64,
        /// Bytes it takes.
        found_bytes: usize,
    },
    /// A string value has no terminating NUL inside its pair.
    #[error("pair `{name}` holds a string without a terminating NUL")]
    UnterminatedString {
        /// The pair's name.
        name: String,
    },
    /// A `boolean_value` is neither 0 nor 1.
    #[error("pair `{name}` holds boolean value {value}; only 0 and 1 are valid")]
    BooleanValue {
        /// The pair's name.
        name: String,
        /// The value found.
        value: i32,
    },
    /// More than [`NVLIST_PAIRS_MAX`] pairs.
    #[error("more than {NVLIST_PAIRS_MAX} pairs")]
    TooManyPairs,
    /// Embedded nvlists nest deeper than [`NVLIST_DEPTH_MAX`].
    #[error("embedded nvlists nest deeper than {NVLIST_DEPTH_MAX} levels")]
    TooDeep,
    /// Bytes follow the terminator of the top-level nvlist.
    #[error("{n_bytes} bytes follow the end of the nvlist")]
    TrailingBytes {
        /// How many.
        n_bytes: usize,
    },
}

fn encoding_name(byte: u8) -> &'static str {
    match byte {
        0 => "native",
        1 => "XDR",
        _ => "unknown",
    }
}

fn endian_name(byte: u8) -> &'static str {
    match byte {
        0 => "big-endian",
        1 => "little-endian",
        _ => "unknown",
    }
}

/// The value of one top-level pair, for the types a resume token uses; anything else is
/// `Other` and is skipped by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// `DATA_TYPE_BOOLEAN`: a flag whose presence is its value.
    Boolean,
    /// `DATA_TYPE_UINT64`.
    Uint64(u64),
    /// `DATA_TYPE_STRING`, the bytes before the NUL.
    String(&'a [u8]),
    /// Any other valid type, with its code.
    Other(i32),
}

impl Value<'_> {
    /// A short name of the type, for error messages.
    pub(crate) fn type_name(&self) -> TypeName {
        TypeName(match self {
            Value::Boolean => data_type::BOOLEAN,
            Value::Uint64(_) => data_type::UINT64,
            Value::String(_) => data_type::STRING,
            Value::Other(code) => *code,
        })
    }
}

/// A `data_type_t` code that displays as OpenZFS's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeName(pub i32);

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use data_type::*;
        let name = match self.0 {
            BOOLEAN => "boolean",
            BYTE => "byte",
            INT16 => "int16",
            UINT16 => "uint16",
            INT32 => "int32",
            UINT32 => "uint32",
            INT64 => "int64",
            UINT64 => "uint64",
            STRING => "string",
            BYTE_ARRAY => "byte array",
            INT16_ARRAY => "int16 array",
            UINT16_ARRAY => "uint16 array",
            INT32_ARRAY => "int32 array",
            UINT32_ARRAY => "uint32 array",
            INT64_ARRAY => "int64 array",
            UINT64_ARRAY => "uint64 array",
            STRING_ARRAY => "string array",
            HRTIME => "hrtime",
            NVLIST => "nvlist",
            NVLIST_ARRAY => "nvlist array",
            BOOLEAN_VALUE => "boolean_value",
            INT8 => "int8",
            UINT8 => "uint8",
            BOOLEAN_ARRAY => "boolean array",
            INT8_ARRAY => "int8 array",
            UINT8_ARRAY => "uint8 array",
            DOUBLE => "double",
            other => return write!(f, "type {other}"),
        };
        f.write_str(name)
    }
}

/// One top-level pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pair<'a> {
    /// The name, without its NUL.
    pub(crate) name: &'a [u8],
    /// The value.
    pub(crate) value: Value<'a>,
    /// Where the pair starts in the packed nvlist.
    pub(crate) offset: usize,
}

/// Reads a packed native nvlist and returns its top-level pairs in order. Embedded nvlists are
/// checked and skipped.
pub(crate) fn read(packed: &[u8]) -> Result<Vec<Pair<'_>>, NvlistError> {
    let mut r = Reader {
        buf: packed,
        pos: 0,
    };
    let header = r.bytes(4, "the nvlist header")?;
    let (encoding, endian) = (header[0], header[1]);
    if encoding != 0 {
        return Err(r.err_at(0, NvlistErrorKind::UnsupportedEncoding { byte: encoding }));
    }
    if endian != 1 {
        return Err(r.err_at(1, NvlistErrorKind::UnsupportedEndian { byte: endian }));
    }
    let version_at = r.pos;
    let version = r.i32("nvl_version")?;
    if version != NV_VERSION {
        return Err(r.err_at(version_at, NvlistErrorKind::UnsupportedVersion { version }));
    }
    let _nvflag = r.i32("nvl_nvflag")?;
    let mut pairs = Vec::new();
    let mut n_pairs = 0;
    r.pairs(0, &mut n_pairs, Some(&mut pairs))?;
    if r.pos != packed.len() {
        let n_bytes = packed.len() - r.pos;
        return Err(r.err_at(r.pos, NvlistErrorKind::TrailingBytes { n_bytes }));
    }
    Ok(pairs)
}

/// A pair to write with [`write`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteValue<'a> {
    /// A presence flag.
    Boolean,
    /// A 64-bit unsigned number.
    Uint64(u64),
    /// A string (must not contain NUL; the caller guarantees it).
    String(&'a str),
}

/// Packs `pairs` the way `fnvlist_pack` does on a little-endian host.
pub(crate) fn write(pairs: &[(&str, WriteValue<'_>)]) -> Vec<u8> {
    let mut out = vec![0u8, 1, 0, 0];
    out.extend_from_slice(&NV_VERSION.to_le_bytes());
    out.extend_from_slice(&NV_UNIQUE_NAME.to_le_bytes());
    for (name, value) in pairs {
        let name_sz = name.len() + 1;
        let (type_code, n_elements, value_bytes): (i32, i32, Vec<u8>) = match value {
            WriteValue::Boolean => (data_type::BOOLEAN, 0, Vec::new()),
            WriteValue::Uint64(v) => (data_type::UINT64, 1, v.to_le_bytes().to_vec()),
            WriteValue::String(s) => {
                let mut bytes = s.as_bytes().to_vec();
                bytes.push(0);
                (data_type::STRING, 1, bytes)
            }
        };
        let value_off = align8(PAIR_HEADER_BYTES + name_sz);
        let size = value_off + align8(value_bytes.len());
        let start = out.len();
        out.extend_from_slice(&(size as i32).to_le_bytes());
        out.extend_from_slice(&(name_sz as i16).to_le_bytes());
        out.extend_from_slice(&0i16.to_le_bytes());
        out.extend_from_slice(&n_elements.to_le_bytes());
        out.extend_from_slice(&type_code.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(start + value_off, 0);
        out.extend_from_slice(&value_bytes);
        out.resize(start + size, 0);
    }
    out.extend_from_slice(&0i32.to_le_bytes());
    out
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

fn align8_u64(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err_at(&self, offset: usize, kind: NvlistErrorKind) -> NvlistError {
        NvlistError { offset, kind }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], NvlistError> {
        let available_bytes = self.remaining();
        if n > available_bytes {
            return Err(self.err_at(
                self.pos,
                NvlistErrorKind::Truncated {
                    what,
                    needed_bytes: n,
                    available_bytes,
                },
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, NvlistError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads one list of pairs up to and including its terminator. `out` receives the pairs of
    /// the top-level list; embedded lists pass `None`.
    fn pairs(
        &mut self,
        depth: usize,
        n_pairs: &mut usize,
        mut out: Option<&mut Vec<Pair<'a>>>,
    ) -> Result<(), NvlistError> {
        // Each pass consumes at least 4 bytes (a terminator) or a whole pair of at least
        // `NVP_SIZE_CALC(1, 0)` bytes, and the pair count is bounded, so the loop ends.
        loop {
            let start = self.pos;
            let size = self.i32("a pair size")?;
            if size == 0 {
                return Ok(());
            }
            *n_pairs += 1;
            if *n_pairs > NVLIST_PAIRS_MAX {
                return Err(self.err_at(start, NvlistErrorKind::TooManyPairs));
            }
            let pair = self.pair_bytes(start, size)?;
            let (name, value, trailing) = self.parse_pair(start, pair)?;
            match trailing {
                Embedded::None => {}
                Embedded::Lists(n_lists) => {
                    if depth + 1 > NVLIST_DEPTH_MAX {
                        return Err(self.err_at(start, NvlistErrorKind::TooDeep));
                    }
                    // `n_lists` is bounded by the pair's value size, checked in `parse_pair`.
                    for _ in 0..n_lists {
                        self.pairs(depth + 1, n_pairs, None)?;
                    }
                }
            }
            if let Some(out) = out.as_deref_mut() {
                out.push(Pair {
                    name,
                    value,
                    offset: start,
                });
            }
        }
    }

    /// Checks a pair's size and returns its bytes (starting at its size field), advancing past
    /// it.
    fn pair_bytes(&mut self, start: usize, size: i32) -> Result<&'a [u8], NvlistError> {
        let size_err = |size_bytes: i64, reason| NvlistError {
            offset: start,
            kind: NvlistErrorKind::PairSize { size_bytes, reason },
        };
        let Ok(size) = usize::try_from(size) else {
            return Err(size_err(size.into(), "negative"));
        };
        if size < align8(PAIR_HEADER_BYTES + 1) {
            return Err(size_err(
                size as i64,
                "smaller than the smallest possible pair (24 bytes)",
            ));
        }
        if size > self.buf.len() - start {
            return Err(size_err(size as i64, "larger than the rest of the nvlist"));
        }
        self.pos = start + size;
        Ok(&self.buf[start..start + size])
    }

    fn parse_pair(
        &self,
        start: usize,
        pair: &'a [u8],
    ) -> Result<(&'a [u8], Value<'a>, Embedded), NvlistError> {
        let err = |kind| NvlistError {
            offset: start,
            kind,
        };
        let name_sz = i16::from_le_bytes([pair[4], pair[5]]);
        let n_elements = i32::from_le_bytes([pair[8], pair[9], pair[10], pair[11]]);
        let type_code = i32::from_le_bytes([pair[12], pair[13], pair[14], pair[15]]);
        let Ok(name_sz) = usize::try_from(name_sz) else {
            return Err(err(NvlistErrorKind::PairName {
                reason: "negative name length",
            }));
        };
        if name_sz == 0 {
            return Err(err(NvlistErrorKind::PairName {
                reason: "zero name length",
            }));
        }
        let value_off = align8(PAIR_HEADER_BYTES + name_sz);
        if value_off > pair.len() {
            return Err(err(NvlistErrorKind::PairName {
                reason: "the name is longer than the pair",
            }));
        }
        let name_with_nul = &pair[PAIR_HEADER_BYTES..PAIR_HEADER_BYTES + name_sz];
        let (name, nul) = name_with_nul.split_at(name_sz - 1);
        if nul != [0] {
            return Err(err(NvlistErrorKind::PairName {
                reason: "the name is not NUL-terminated",
            }));
        }
        if name.contains(&0) {
            return Err(err(NvlistErrorKind::PairName {
                reason: "the name contains a NUL before its end",
            }));
        }
        let name_text = || String::from_utf8_lossy(name).into_owned();
        let value = &pair[value_off..];
        let (expected, embedded) = value_size(type_code, n_elements, value).map_err(|e| {
            err(match e {
                SizeError::UnknownType => NvlistErrorKind::UnknownType {
                    name: name_text(),
                    type_code,
                },
                SizeError::ElementCount => NvlistErrorKind::ElementCount {
                    name: name_text(),
                    type_code,
                    n_elements,
                },
                SizeError::UnterminatedString => {
                    NvlistErrorKind::UnterminatedString { name: name_text() }
                }
            })
        })?;
        if align8_u64(expected) != value.len() as u64 {
            return Err(err(NvlistErrorKind::ValueSize {
                name: name_text(),
                type_code,
                expected_bytes: align8_u64(expected),
                found_bytes: value.len(),
            }));
        }
        let decoded = match type_code {
            data_type::BOOLEAN => Value::Boolean,
            data_type::UINT64 => {
                let mut le = [0u8; 8];
                le.copy_from_slice(&value[..8]);
                Value::Uint64(u64::from_le_bytes(le))
            }
            data_type::STRING => Value::String(&value[..expected as usize - 1]),
            data_type::BOOLEAN_VALUE | data_type::BOOLEAN_ARRAY => {
                for word in value[..expected as usize].chunks_exact(4) {
                    let b = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                    if b != 0 && b != 1 {
                        return Err(err(NvlistErrorKind::BooleanValue {
                            name: name_text(),
                            value: b,
                        }));
                    }
                }
                Value::Other(type_code)
            }
            other => Value::Other(other),
        };
        Ok((name, decoded, embedded))
    }
}

/// What follows a pair in the stream.
enum Embedded {
    None,
    /// This many embedded nvlists (each a list of pairs with its own terminator).
    Lists(usize),
}

enum SizeError {
    UnknownType,
    ElementCount,
    UnterminatedString,
}

/// The unaligned size of a value of `type_code` with `n_elements`, as OpenZFS's
/// `i_get_value_size` computes it, and how many embedded nvlists follow the pair.
fn value_size(type_code: i32, n_elements: i32, value: &[u8]) -> Result<(u64, Embedded), SizeError> {
    use data_type::*;
    let scalar = |size: u64| {
        if n_elements == 1 {
            Ok((size, Embedded::None))
        } else {
            Err(SizeError::ElementCount)
        }
    };
    // Arrays: a count that could not fit the value area is refused before any arithmetic on
    // it, so no product below can overflow and no loop runs longer than the area is long.
    let count = || -> Result<u64, SizeError> {
        match u64::try_from(n_elements) {
            Ok(n) if n <= value.len() as u64 => Ok(n),
            _ => Err(SizeError::ElementCount),
        }
    };
    match type_code {
        BOOLEAN => {
            if n_elements == 0 {
                Ok((0, Embedded::None))
            } else {
                Err(SizeError::ElementCount)
            }
        }
        BYTE | INT8 | UINT8 => scalar(1),
        INT16 | UINT16 => scalar(2),
        BOOLEAN_VALUE | INT32 | UINT32 => scalar(4),
        INT64 | UINT64 | HRTIME | DOUBLE => scalar(8),
        STRING => {
            if n_elements != 1 {
                return Err(SizeError::ElementCount);
            }
            let len = value
                .iter()
                .position(|&b| b == 0)
                .ok_or(SizeError::UnterminatedString)?;
            Ok((len as u64 + 1, Embedded::None))
        }
        NVLIST => {
            if n_elements != 1 {
                return Err(SizeError::ElementCount);
            }
            Ok((EMBEDDED_NVLIST_BYTES, Embedded::Lists(1)))
        }
        BYTE_ARRAY | INT8_ARRAY | UINT8_ARRAY => Ok((count()?, Embedded::None)),
        INT16_ARRAY | UINT16_ARRAY => Ok((count()? * 2, Embedded::None)),
        BOOLEAN_ARRAY | INT32_ARRAY | UINT32_ARRAY => Ok((count()? * 4, Embedded::None)),
        INT64_ARRAY | UINT64_ARRAY => Ok((count()? * 8, Embedded::None)),
        STRING_ARRAY => {
            let n = count()?;
            // The pointer slots, then `n` NUL-terminated strings.
            let mut size = n * 8;
            let mut rest = value.get(size as usize..).ok_or(SizeError::ElementCount)?;
            for _ in 0..n {
                let len = rest
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(SizeError::UnterminatedString)?;
                size += len as u64 + 1;
                rest = &rest[len + 1..];
            }
            Ok((size, Embedded::None))
        }
        NVLIST_ARRAY => {
            let n = count()?;
            Ok((
                n * 8 + n * EMBEDDED_NVLIST_BYTES,
                Embedded::Lists(n as usize),
            ))
        }
        _ => Err(SizeError::UnknownType),
    }
}
