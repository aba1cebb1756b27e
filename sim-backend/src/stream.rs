//! The simulated send stream: a header that says what the stream carries, then each snapshot's
//! payload, then a trailer. Payload bytes are derived from the snapshot's content digest, so a
//! receiver can check that every byte arrived intact, and their number is the snapshot's data
//! size divided by the world's payload scale, so that a stream can be cut after any byte.

use zferry_core::version::Guid;

/// The first bytes of every simulated stream.
pub(crate) const MAGIC: &[u8; 8] = b"ZSIMSTRM";
/// The last bytes of every complete stream (OpenZFS's END record).
pub(crate) const TRAILER: &[u8; 8] = b"ZSIMEND!";
/// The stream format version.
const VERSION: u32 = 1;
/// The most snapshots one stream may carry.
pub(crate) const RECORDS_MAX: usize = 100_000;
/// The most user properties one stream may carry.
const PROPS_MAX: usize = 4096;
/// The longest string (name, property) in a header, in bytes.
const STRING_BYTES_MAX: usize = 4096;

/// The send flags that shape a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamFlags {
    /// Raw: the data stays encrypted (only set when the dataset is encrypted).
    pub(crate) raw: bool,
    /// `-p` or `-b`: properties are included.
    pub(crate) properties: bool,
    /// `-L`.
    pub(crate) large_blocks: bool,
    /// `-c`.
    pub(crate) compressed: bool,
    /// `-e`.
    pub(crate) embedded: bool,
    /// Made by `zfs send -t`.
    pub(crate) resuming: bool,
    /// The dataset is a volume (`DMU_OST_ZVOL`).
    pub(crate) volume: bool,
}

impl StreamFlags {
    fn bits(self) -> u8 {
        u8::from(self.raw)
            | u8::from(self.properties) << 1
            | u8::from(self.large_blocks) << 2
            | u8::from(self.compressed) << 3
            | u8::from(self.embedded) << 4
            | u8::from(self.resuming) << 5
            | u8::from(self.volume) << 6
    }

    fn from_bits(b: u8) -> Self {
        Self {
            raw: b & 1 != 0,
            properties: b & 2 != 0,
            large_blocks: b & 4 != 0,
            compressed: b & 8 != 0,
            embedded: b & 16 != 0,
            resuming: b & 32 != 0,
            volume: b & 64 != 0,
        }
    }
}

/// One snapshot in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The snapshot's GUID.
    pub(crate) guid: Guid,
    /// Its short name on the sender.
    pub(crate) name: String,
    /// Its creation time (unix seconds), which the receiver keeps.
    pub(crate) creation: i64,
    /// The content digest after this snapshot.
    pub(crate) digest: u64,
    /// The dataset's logical size at this snapshot, in bytes.
    pub(crate) size_bytes: u64,
    /// The data this snapshot adds over its base, in bytes.
    pub(crate) written_bytes: u64,
    /// The payload bytes of this record in a complete stream.
    pub(crate) payload_len: u64,
}

/// What a stream carries, before the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The shaping flags.
    pub(crate) flags: StreamFlags,
    /// The incremental base; `None` for a full stream.
    pub(crate) from_guid: Option<Guid>,
    /// The encryption key a raw stream carries (0 otherwise).
    pub(crate) key_id: u64,
    /// The sending dataset's full name.
    pub(crate) dataset: String,
    /// Properties sent with `-p`/`-b`, in name order.
    pub(crate) props: Vec<(String, String)>,
    /// Where the first record's payload starts (non-zero only when resuming).
    pub(crate) resume_offset: u64,
    /// The snapshots, oldest first.
    pub(crate) records: Vec<Record>,
}

/// Why a header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// More bytes are needed.
    Incomplete,
    /// The bytes are not a simulated stream header.
    Invalid(&'static str),
}

impl Header {
    /// The header's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.flags.bits());
        out.extend_from_slice(&self.from_guid.map_or(0, |g| g.0).to_le_bytes());
        out.extend_from_slice(&self.key_id.to_le_bytes());
        put_str(&mut out, &self.dataset);
        out.extend_from_slice(&(self.props.len() as u32).to_le_bytes());
        for (k, v) in &self.props {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        out.extend_from_slice(&self.resume_offset.to_le_bytes());
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for r in &self.records {
            out.extend_from_slice(&r.guid.0.to_le_bytes());
            put_str(&mut out, &r.name);
            out.extend_from_slice(&r.creation.to_le_bytes());
            out.extend_from_slice(&r.digest.to_le_bytes());
            out.extend_from_slice(&r.size_bytes.to_le_bytes());
            out.extend_from_slice(&r.written_bytes.to_le_bytes());
            out.extend_from_slice(&r.payload_len.to_le_bytes());
        }
        out
    }

    /// Parses a header from the start of `buf`; returns it and its length in bytes.
    pub(crate) fn decode(buf: &[u8]) -> Result<(Self, usize), HeaderError> {
        let mut r = Cursor { buf, pos: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(HeaderError::Invalid("invalid stream (bad magic number)"));
        }
        if r.u32()? != VERSION {
            return Err(HeaderError::Invalid("unsupported stream version"));
        }
        let flags = StreamFlags::from_bits(r.take(1)?[0]);
        let from = r.u64()?;
        let key_id = r.u64()?;
        let dataset = r.string()?;
        let n_props = r.u32()? as usize;
        if n_props > PROPS_MAX {
            return Err(HeaderError::Invalid("too many properties"));
        }
        let mut props = Vec::new();
        for _ in 0..n_props {
            props.push((r.string()?, r.string()?));
        }
        let resume_offset = r.u64()?;
        let n_records = r.u32()? as usize;
        if n_records == 0 || n_records > RECORDS_MAX {
            return Err(HeaderError::Invalid("invalid number of snapshots"));
        }
        let mut records = Vec::new();
        for _ in 0..n_records {
            let guid = Guid(r.u64()?);
            let name = r.string()?;
            records.push(Record {
                guid,
                name,
                creation: r.u64()? as i64,
                digest: r.u64()?,
                size_bytes: r.u64()?,
                written_bytes: r.u64()?,
                payload_len: r.u64()?,
            });
        }
        let header = Self {
            flags,
            from_guid: (from != 0).then_some(Guid(from)),
            key_id,
            dataset,
            props,
            resume_offset,
            records,
        };
        Ok((header, r.pos))
    }
}

/// The payload byte at `index` of a record with content `digest`: deterministic, so that a
/// receiver can verify every byte.
pub(crate) fn payload_byte(digest: u64, index: u64) -> u8 {
    let shift = (index % 8) * 8;
    ((digest >> shift) as u8) ^ (index.wrapping_mul(31) as u8)
}

/// A complete stream: the header, the payload of every record from `resume_offset` on, the
/// trailer.
pub(crate) fn encode_stream(header: &Header) -> Vec<u8> {
    let mut out = header.encode();
    for (i, r) in header.records.iter().enumerate() {
        let start = if i == 0 { header.resume_offset } else { 0 };
        out.extend((start..r.payload_len).map(|j| payload_byte(r.digest, j)));
    }
    out.extend_from_slice(TRAILER);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let out = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(HeaderError::Incomplete)?;
        self.pos += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let len = self.u32()? as usize;
        if len > STRING_BYTES_MAX {
            return Err(HeaderError::Invalid("string too long"));
        }
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| HeaderError::Invalid("string not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_a_cut_header_is_incomplete() {
        let h = Header {
            flags: StreamFlags {
                raw: true,
                compressed: true,
                ..StreamFlags::default()
            },
            from_guid: Some(Guid(5)),
            key_id: 9,
            dataset: "p/a b".to_owned(),
            props: vec![("x:y".to_owned(), "v".to_owned())],
            resume_offset: 3,
            records: vec![Record {
                guid: Guid(6),
                name: "s 1".to_owned(),
                creation: 100,
                digest: 0xabcdef,
                size_bytes: 2048,
                written_bytes: 1024,
                payload_len: 10,
            }],
        };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok((h.clone(), bytes.len())));
        assert_eq!(
            Header::decode(&bytes[..bytes.len() - 1]),
            Err(HeaderError::Incomplete)
        );
        let stream = encode_stream(&h);
        assert_eq!(stream.len(), bytes.len() + 7 + TRAILER.len());
    }
}
