//! Resume tokens in the exact text format OpenZFS writes (`dsl_dataset.c`,
//! `get_receive_resume_token`), so that the daemon's decoder is exercised by the simulation:
//!
//! ```text
//! 1-<fletcher-4 first word, hex>-<packed nvlist length, hex>-<zlib(packed nvlist), hex>
//! ```
//!
//! The nvlist is packed in `NV_ENCODE_NATIVE` on a little-endian host, with the pairs in the
//! order OpenZFS adds them: `fromguid` (incremental only), `object`, `offset`, `bytes`,
//! `toguid`, `toname`, then the boolean flags `largeblockok`, `embedok`, `compressok`, `rawok`.
//!
//! The reader here is the simulated `zfs send -t`: it accepts what the writer writes and
//! rejects anything else as corrupt. The daemon must use the core's decoder, not this one.
//!
//! This codec is written independently of `zferry_core::resume_token` on purpose: the two
//! cross-check each other (`tests/token_interop.rs` decodes every simulated token with the core
//! and every real token with both), and this writer compresses as the kernel does, where the
//! core's test encoder writes stored blocks. A shared bug would otherwise go unseen.

use std::io::{Read, Write};

use zferry_core::version::Guid;

/// The only token version OpenZFS writes.
const TOKEN_VERSION: &str = "1";
/// The largest packed nvlist the reader inflates, in bytes (real tokens are a few hundred).
const PACKED_BYTES_MAX: usize = 64 * 1024;
/// The longest token text the reader accepts, in bytes (two hex digits per compressed byte,
/// which never exceeds the packed size, plus the header).
const TEXT_BYTES_MAX: usize = 2 * PACKED_BYTES_MAX + 64;
/// The most pairs the reader accepts.
const PAIRS_MAX: usize = 64;
/// The zlib level OpenZFS's kernel `gzip_compress` uses for tokens.
const ZLIB_LEVEL: u32 = 6;

/// `data_type_t` codes of `sys/nvpair.h` that tokens use.
const DATA_TYPE_BOOLEAN: i32 = 1;
const DATA_TYPE_UINT64: i32 = 8;
const DATA_TYPE_STRING: i32 = 9;
/// `sizeof (nvpair_t)`.
const PAIR_HEADER_BYTES: usize = 16;

/// What a resume token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFields {
    /// The incremental source's GUID; `None` for a full send.
    pub fromguid: Option<Guid>,
    /// The object to resume at.
    pub object: u64,
    /// The byte offset within the object to resume at.
    pub offset: u64,
    /// Stream bytes received so far.
    pub bytes: u64,
    /// The GUID of the snapshot being received.
    pub toguid: Guid,
    /// The sender's full snapshot name.
    pub toname: String,
    /// `-L` was used.
    pub largeblockok: bool,
    /// `-e` was used.
    pub embedok: bool,
    /// `-c` was used.
    pub compressok: bool,
    /// `-w` was used (and the dataset is encrypted).
    pub rawok: bool,
}

/// Writes `fields` as token text.
pub fn encode(fields: &TokenFields) -> String {
    let packed = pack(fields);
    let mut encoder =
        flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(ZLIB_LEVEL));
    // Writing into a Vec cannot fail.
    let compressed: Vec<u8> = encoder
        .write_all(&packed)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    let mut text = format!(
        "{TOKEN_VERSION}-{:x}-{:x}-",
        fletcher4_first_word(&compressed),
        packed.len()
    );
    for byte in &compressed {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resume token is corrupt: {0}")]
pub struct TokenCorrupt(pub &'static str);

/// Reads token text written by [`encode`] (or by OpenZFS).
pub fn decode(text: &str) -> Result<TokenFields, TokenCorrupt> {
    if text.len() > TEXT_BYTES_MAX {
        return Err(TokenCorrupt("token text too long"));
    }
    let mut parts = text.trim().splitn(4, '-');
    let (Some(version), Some(checksum), Some(len), Some(payload)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenCorrupt("expected 4 `-`-separated parts"));
    };
    if version != TOKEN_VERSION {
        return Err(TokenCorrupt("unknown version"));
    }
    let checksum =
        u64::from_str_radix(checksum, 16).map_err(|_| TokenCorrupt("checksum is not hex"))?;
    let len = usize::from_str_radix(len, 16).map_err(|_| TokenCorrupt("length is not hex"))?;
    if len > PACKED_BYTES_MAX {
        return Err(TokenCorrupt("packed length too large"));
    }
    if payload.len() % 2 != 0 || !payload.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenCorrupt("payload is not hex"));
    }
    let compressed: Vec<u8> = payload
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).unwrap_or("00");
            u8::from_str_radix(s, 16).unwrap_or(0)
        })
        .collect();
    if fletcher4_first_word(&compressed) != checksum {
        return Err(TokenCorrupt("checksum mismatch"));
    }
    let mut packed = Vec::with_capacity(len);
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(len as u64 + 1)
        .read_to_end(&mut packed)
        .map_err(|_| TokenCorrupt("payload does not inflate"))?;
    if packed.len() != len {
        return Err(TokenCorrupt(
            "payload inflates to another length than declared",
        ));
    }
    unpack(&packed)
}

/// The first word of OpenZFS's fletcher-4 over little-endian 32-bit words (tail ignored).
pub fn fletcher4_first_word(data: &[u8]) -> u64 {
    data.chunks_exact(4).fold(0u64, |sum, w| {
        sum.wrapping_add(u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
    })
}

enum PairValue<'a> {
    Flag,
    U64(u64),
    Text(&'a str),
}

fn pack(f: &TokenFields) -> Vec<u8> {
    let mut pairs: Vec<(&str, PairValue<'_>)> = Vec::new();
    if let Some(from) = f.fromguid {
        pairs.push(("fromguid", PairValue::U64(from.0)));
    }
    pairs.push(("object", PairValue::U64(f.object)));
    pairs.push(("offset", PairValue::U64(f.offset)));
    pairs.push(("bytes", PairValue::U64(f.bytes)));
    pairs.push(("toguid", PairValue::U64(f.toguid.0)));
    pairs.push(("toname", PairValue::Text(&f.toname)));
    for (name, on) in [
        ("largeblockok", f.largeblockok),
        ("embedok", f.embedok),
        ("compressok", f.compressok),
        ("rawok", f.rawok),
    ] {
        if on {
            pairs.push((name, PairValue::Flag));
        }
    }
    // Header: native encoding (0), little-endian (1), two reserved bytes; then nvl_version 0
    // and nvl_nvflag NV_UNIQUE_NAME (1), as `fnvlist_alloc` sets it.
    let mut out = vec![0u8, 1, 0, 0];
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (name, value) in pairs {
        let (type_code, n_elements, value_bytes) = match value {
            PairValue::Flag => (DATA_TYPE_BOOLEAN, 0i32, Vec::new()),
            PairValue::U64(v) => (DATA_TYPE_UINT64, 1, v.to_le_bytes().to_vec()),
            PairValue::Text(s) => {
                let mut bytes = s.as_bytes().to_vec();
                bytes.push(0);
                (DATA_TYPE_STRING, 1, bytes)
            }
        };
        let name_sz = name.len() + 1;
        let value_at = align8(PAIR_HEADER_BYTES + name_sz);
        let size = value_at + align8(value_bytes.len());
        let start = out.len();
        out.extend_from_slice(&(size as i32).to_le_bytes());
        out.extend_from_slice(&(name_sz as i16).to_le_bytes());
        out.extend_from_slice(&0i16.to_le_bytes());
        out.extend_from_slice(&n_elements.to_le_bytes());
        out.extend_from_slice(&type_code.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(start + value_at, 0);
        out.extend_from_slice(&value_bytes);
        out.resize(start + size, 0);
    }
    out.extend_from_slice(&0i32.to_le_bytes());
    out
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

fn read_i32(buf: &[u8], at: usize) -> Result<i32, TokenCorrupt> {
    buf.get(at..at + 4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(TokenCorrupt("nvlist truncated"))
}

fn unpack(packed: &[u8]) -> Result<TokenFields, TokenCorrupt> {
    if packed.get(..4) != Some(&[0, 1, 0, 0][..]) {
        return Err(TokenCorrupt("nvlist is not native little-endian"));
    }
    if read_i32(packed, 4)? != 0 {
        return Err(TokenCorrupt("nvlist version is not 0"));
    }
    let mut fields = TokenFields {
        fromguid: None,
        object: 0,
        offset: 0,
        bytes: 0,
        toguid: Guid(0),
        toname: String::new(),
        largeblockok: false,
        embedok: false,
        compressok: false,
        rawok: false,
    };
    let (mut have_toguid, mut have_toname) = (false, false);
    let mut at = 12;
    for _ in 0..PAIRS_MAX {
        let size = read_i32(packed, at)?;
        if size == 0 {
            if at + 4 != packed.len() {
                return Err(TokenCorrupt("bytes after the nvlist"));
            }
            if !have_toguid || !have_toname {
                return Err(TokenCorrupt("toguid or toname missing"));
            }
            return Ok(fields);
        }
        let size = usize::try_from(size).map_err(|_| TokenCorrupt("negative pair size"))?;
        let pair = packed
            .get(at..at + size)
            .ok_or(TokenCorrupt("pair exceeds the nvlist"))?;
        if size < PAIR_HEADER_BYTES + 8 {
            return Err(TokenCorrupt("pair too small"));
        }
        let name_sz = usize::try_from(i16::from_le_bytes([pair[4], pair[5]]))
            .map_err(|_| TokenCorrupt("negative name size"))?;
        let type_code = i32::from_le_bytes([pair[12], pair[13], pair[14], pair[15]]);
        let name = pair
            .get(PAIR_HEADER_BYTES..PAIR_HEADER_BYTES + name_sz.saturating_sub(1))
            .ok_or(TokenCorrupt("pair name exceeds the pair"))?;
        let value = pair
            .get(align8(PAIR_HEADER_BYTES + name_sz)..)
            .ok_or(TokenCorrupt("pair value exceeds the pair"))?;
        let u64_value = || -> Result<u64, TokenCorrupt> {
            if type_code != DATA_TYPE_UINT64 || value.len() < 8 {
                return Err(TokenCorrupt("expected a uint64"));
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[..8]);
            Ok(u64::from_le_bytes(b))
        };
        match name {
            b"fromguid" => fields.fromguid = Some(Guid(u64_value()?)),
            b"object" => fields.object = u64_value()?,
            b"offset" => fields.offset = u64_value()?,
            b"bytes" => fields.bytes = u64_value()?,
            b"toguid" => {
                fields.toguid = Guid(u64_value()?);
                have_toguid = true;
            }
            b"toname" => {
                if type_code != DATA_TYPE_STRING {
                    return Err(TokenCorrupt("toname is not a string"));
                }
                let end = value
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or(TokenCorrupt("toname is not terminated"))?;
                fields.toname = String::from_utf8(value[..end].to_vec())
                    .map_err(|_| TokenCorrupt("toname is not UTF-8"))?;
                have_toname = true;
            }
            b"largeblockok" => fields.largeblockok = true,
            b"embedok" => fields.embedok = true,
            b"compressok" => fields.compressok = true,
            b"rawok" => fields.rawok = true,
            _ => {}
        }
        at += size;
    }
    Err(TokenCorrupt("too many pairs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token written by real OpenZFS 2.3.2 (captured by the realzfs helper: an interrupted
    /// incremental receive of `tank/with space@incr 2` from `@full 1`).
    const REAL_INCREMENTAL: &str = "1-dcd6e85f9-e8-789c636064000310a501c49c50360710a715e5e7a69766a630408198b8e7d2961f56cf14806c762475f94959a9c9250c0c0d507518f26969c5a92520191eb83c1b927c5265496a3190bea1c887557f493ec415b344ce7aacb57c67628024cf0996cf4bcc4d05d28979d9fae59925190ac50589c9a90e9979c9450a4610370100aa0621e7";

    #[test]
    fn reads_a_token_written_by_real_openzfs() {
        let f = decode(REAL_INCREMENTAL).unwrap();
        assert_eq!(f.fromguid, Some(Guid(0xe63a_f884_a549_1716)));
        assert_eq!(f.object, 0x80);
        assert_eq!(f.offset, 0xc0000);
        assert_eq!(f.bytes, 0xe21d8);
        assert_eq!(f.toguid, Guid(0x34ee_39ad_48cd_149a));
        assert_eq!(f.toname, "tank/with space@incr 2");
        assert!(!f.rawok && !f.compressok && !f.embedok && !f.largeblockok);
    }

    #[test]
    fn packs_like_openzfs_so_a_real_token_repacks_to_its_length() {
        let f = decode(REAL_INCREMENTAL).unwrap();
        assert_eq!(pack(&f).len(), 0xe8, "the packed length OpenZFS declared");
        let ours = encode(&f);
        assert_eq!(decode(&ours).unwrap(), f);
        assert!(ours.starts_with("1-") && ours.contains("-e8-"));
    }

    #[test]
    fn flags_round_trip_and_corruption_is_caught() {
        let f = TokenFields {
            fromguid: None,
            object: 2,
            offset: 4096,
            bytes: 5000,
            toguid: Guid(7),
            toname: "pool/a b@s 1".to_owned(),
            largeblockok: true,
            embedok: false,
            compressok: true,
            rawok: true,
        };
        let text = encode(&f);
        assert_eq!(decode(&text).unwrap(), f);
        let last = text.len() - 1;
        let flipped_digit = if text.as_bytes()[last] == b'0' {
            "1"
        } else {
            "0"
        };
        let corrupt = format!("{}{flipped_digit}", &text[..last]);
        assert!(decode(&corrupt).is_err());
        assert!(decode(&text[..text.len() - 10]).is_err());
    }
}
