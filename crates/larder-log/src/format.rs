//! The on-disk format: a segment header, then checksummed records, then zeros.
//!
//! A segment file is preallocated and filled front to back. Everything is little-endian.
//!
//! ```text
//! segment:  | header (24 B) | record | record | ... | 0 0 0 0 ... (the unwritten tail)
//!
//! header:   0          8            12          16               24
//!           +----------+------------+-----------+----------------+
//!           | magic    | version    | kind      | segment id     |
//!           | LARDRLOG | u32 = 1    | u32       | u64            |
//!           +----------+------------+-----------+----------------+
//!
//! record:   0      4      8       16   17     20        24           32        32 + key_len
//!           +------+------+-------+----+------+---------+------------+---------+--------+
//!           | len  | crc  | seq   | op | 0 0 0| key_len | expires_at | key     | value  |
//!           | u32  | u32  | u64   | u8 |      | u32     | u64 (ms)   |         |        |
//!           +------+------+-------+----+------+---------+------------+---------+--------+
//!
//! kind        0 a log segment (`.seg`), 1 a snapshot part written by compaction (`.snap`).
//! len         the whole record's length, head included: at least 32. A zero here ends the
//!             records, and every byte from there to the end of the segment must be zero.
//! crc         CRC32C of `len` (4 bytes) followed by bytes 8..len: every byte but itself.
//! seq         the log's sequence number; replay keeps the last write of each key.
//! op          1 put, 2 delete (no value), 3 clear (no key, no value).
//! expires_at  absolute wall-clock milliseconds since the Unix epoch; 0 for "never".
//! ```
//!
//! **Why a torn write cannot pass for a record.** Appends write a record's bytes into the
//! zeroed tail, and a crash can leave any prefix of them. A prefix that stops inside `len` leaves
//! a length whose missing bytes are zero, and one that stops after it leaves zeros where the rest
//! of the record should be. Either way the checksum, which covers the length and every byte after
//! the checksum, no longer matches: CRC32C detects every error burst up to 32 bits long and all
//! but one in 2^32 of the others. A zero length is never a record (records are at least 32 bytes
//! long), so the preallocated tail reads as the end of the log, and only if it is zero all the
//! way down: a record whose length was zeroed by corruption shows up as non-zero bytes after the
//! end marker.

use crate::error::Error;

/// The segment header's length.
pub const HEADER_LEN: usize = 24;
/// The first bytes of every segment.
pub const MAGIC: [u8; 8] = *b"LARDRLOG";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// A record's fixed head: everything before the key.
pub const RECORD_HEAD_LEN: usize = 32;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CLEAR: u8 = 3;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `key` holds `value` from now on, until `expires_at_ms` (wall-clock ms; 0: never).
    Put {
        key: &'a [u8],
        value: &'a [u8],
        expires_at_ms: u64,
    },
    /// `key` holds nothing.
    Delete { key: &'a [u8] },
    /// No key holds anything.
    Clear,
}

/// What a segment file holds. Both kinds share one id space (a directory never has a `.seg`
/// and a `.snap` with the same id), and the kind is in the header as well as in the file's
/// name, so a file renamed to the other kind does not scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A log segment (`{id}.seg`): records as they were appended.
    Log,
    /// A snapshot part (`{id}.snap`): the live records of the segments a compaction replaced.
    Snapshot,
}

impl Kind {
    fn code(self) -> u32 {
        match self {
            Kind::Log => 0,
            Kind::Snapshot => 1,
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Log => "seg",
            Kind::Snapshot => "snap",
        }
    }
}

/// The header of log segment `id`.
pub fn segment_header(id: u64) -> [u8; HEADER_LEN] {
    header(Kind::Log, id)
}

/// The header of segment file `id` of kind `kind`.
pub fn header(kind: Kind, id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&kind.code().to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h
}

/// The encoded length of a record doing `op`, or `None` if it would not fit a `u32` length.
pub fn encoded_len(op: Op<'_>) -> Option<usize> {
    let (key, value) = match op {
        Op::Put { key, value, .. } => (key.len(), value.len()),
        Op::Delete { key } => (key.len(), 0),
        Op::Clear => (0, 0),
    };
    let len = RECORD_HEAD_LEN.checked_add(key)?.checked_add(value)?;
    (u32::try_from(len).is_ok()).then_some(len)
}

/// Appends the record `seq: op` to `out` (see the format above) and returns its length.
///
/// # Errors
/// [`Error::TooLarge`] if the record would be longer than `u32::MAX` bytes; `out` is then
/// unchanged.
pub fn encode(seq: u64, op: Op<'_>, out: &mut Vec<u8>) -> Result<usize, Error> {
    let Some(len) = encoded_len(op) else {
        return Err(Error::TooLarge);
    };
    let (code, key, value, expires_at) = match op {
        Op::Put {
            key,
            value,
            expires_at_ms,
        } => (OP_PUT, key, value, expires_at_ms),
        Op::Delete { key } => (OP_DELETE, key, &[][..], 0),
        Op::Clear => (OP_CLEAR, &[][..], &[][..], 0),
    };
    let start = out.len();
    out.reserve(len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the checksum, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[code, 0, 0, 0]);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = checksum(&out[start..start + len]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

/// CRC32C of a record's bytes, skipping its checksum field.
fn checksum(record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[8..])
}

/// A record whose checksum matched. It can only be made by [`scan`], so holding one proves the
/// check was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    seq: u64,
    op: Op<'a>,
    offset: usize,
    len: usize,
}

impl<'a> Record<'a> {
    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What the record does; its key and value borrow the scanned bytes.
    pub fn op(&self) -> Op<'a> {
        self.op
    }

    /// Where the record starts in its segment.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The record's encoded length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a record is at least its 32-byte head.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// How the records of a segment end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// At `end`, where only zeros follow (or the segment ends): the next append goes there.
    Clean { end: usize },
    /// At `offset`, bytes that are neither a valid record nor the zero tail: a torn append in
    /// the segment being written, corruption anywhere else.
    Invalid { offset: usize, reason: &'static str },
}

/// A segment's valid records, in order, and how they end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    pub segment_id: u64,
    pub records: Vec<Record<'a>>,
    pub tail: Tail,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads log segment `segment`: checks its header, then returns every record up to the first
/// one that does not check out, and how the records end. [`scan_as`] with [`Kind::Log`].
///
/// Never panics, whatever `bytes` hold.
///
/// # Errors
/// [`Error::Corruption`] at offset 0 if the header is missing, is not this format's, or names
/// another segment.
pub fn scan(segment: u64, bytes: &[u8]) -> Result<Scan<'_>, Error> {
    scan_as(Kind::Log, segment, bytes)
}

/// Reads segment file `segment` of kind `kind`, as [`scan`] does; the header must name both.
///
/// # Errors
/// As for [`scan`].
pub fn scan_as(kind: Kind, segment: u64, bytes: &[u8]) -> Result<Scan<'_>, Error> {
    let corrupt = |offset: usize, reason| Error::Corruption {
        segment,
        offset: offset as u64,
        reason,
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(0, "shorter than a segment header"));
    }
    if bytes[0..8] != MAGIC {
        return Err(corrupt(0, "not a Larder log segment (bad magic)"));
    }
    if u32_at(bytes, 8) != VERSION {
        return Err(corrupt(8, "unknown format version"));
    }
    if u32_at(bytes, 12) != kind.code() {
        return Err(corrupt(12, "the header names another kind of segment file"));
    }
    if u64_at(bytes, 16) != segment {
        return Err(corrupt(16, "the header names another segment"));
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    let tail = loop {
        match decode_at(bytes, at) {
            Ok(Some(record)) => {
                at += record.len;
                records.push(record);
            }
            Ok(None) => break Tail::Clean { end: at },
            Err(reason) => break Tail::Invalid { offset: at, reason },
        }
    };
    Ok(Scan {
        segment_id: segment,
        records,
        tail,
    })
}

/// The record at `at`, `None` at a clean end (the end of the bytes, or a zero tail), or why
/// the bytes there are neither.
fn decode_at(bytes: &[u8], at: usize) -> Result<Option<Record<'_>>, &'static str> {
    let rest = &bytes[at..];
    let zeros = || rest.iter().all(|&b| b == 0);
    if rest.len() < 4 {
        return if zeros() {
            Ok(None)
        } else {
            Err("a record length cut short")
        };
    }
    let len = u32_at(rest, 0) as usize;
    if len == 0 {
        // The end marker: checked once per scan, so the zero test costs one pass over the tail.
        return if zeros() {
            Ok(None)
        } else {
            Err("non-zero bytes after the end marker")
        };
    }
    if len < RECORD_HEAD_LEN {
        return Err("a record length shorter than a record head");
    }
    if len > rest.len() {
        return Err("a record that runs past the end of the segment");
    }
    let record = &rest[..len];
    if checksum(record) != u32_at(record, 4) {
        return Err("checksum mismatch");
    }
    let seq = u64_at(record, 8);
    let code = record[16];
    let key_len = u32_at(record, 20) as usize;
    let expires_at_ms = u64_at(record, 24);
    if record[17..20] != [0, 0, 0] || key_len > len - RECORD_HEAD_LEN {
        return Err("a malformed record head");
    }
    let key = &record[RECORD_HEAD_LEN..RECORD_HEAD_LEN + key_len];
    let value = &record[RECORD_HEAD_LEN + key_len..];
    let op = match code {
        OP_PUT => Op::Put {
            key,
            value,
            expires_at_ms,
        },
        OP_DELETE if value.is_empty() && expires_at_ms == 0 => Op::Delete { key },
        OP_CLEAR if key.is_empty() && value.is_empty() && expires_at_ms == 0 => Op::Clear,
        _ => return Err("an unknown or malformed operation"),
    };
    Ok(Some(Record {
        seq,
        op,
        offset: at,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_checked() {
        let ok = segment_header(3);
        assert!(scan(3, &ok).is_ok());
        let err = |bytes: &[u8], id| match scan(id, bytes) {
            Err(Error::Corruption { segment, .. }) => segment,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(&ok, 4), 4, "another segment's header");
        assert_eq!(err(&ok[..10], 3), 3, "cut short");
        let mut bad = ok;
        bad[0] ^= 1;
        assert_eq!(err(&bad, 3), 3, "bad magic");
        let mut v2 = ok;
        v2[8] = 2;
        assert_eq!(err(&v2, 3), 3, "a future version");
        // A snapshot part's header does not pass for a log segment's, nor the other way.
        let snap = header(Kind::Snapshot, 3);
        assert!(scan_as(Kind::Snapshot, 3, &snap).is_ok());
        assert_eq!(err(&snap, 3), 3, "a snapshot part read as a segment");
        assert!(scan_as(Kind::Snapshot, 3, &ok).is_err());
    }

    #[test]
    fn each_op_round_trips_and_zeros_end_the_records() {
        let ops = [
            Op::Put {
                key: b"k",
                value: b"v",
                expires_at_ms: 1_700_000_000_000,
            },
            Op::Put {
                key: b"",
                value: b"",
                expires_at_ms: 0,
            },
            Op::Delete { key: b"k" },
            Op::Clear,
        ];
        let mut seg = segment_header(1).to_vec();
        for (i, op) in ops.iter().enumerate() {
            let len = encode(i as u64 + 10, *op, &mut seg).unwrap();
            assert_eq!(Some(len), encoded_len(*op));
        }
        let end = seg.len();
        seg.resize(end + 100, 0);
        let s = scan(1, &seg).unwrap();
        assert_eq!(s.tail, Tail::Clean { end });
        let got: Vec<_> = s.records.iter().map(|r| (r.seq(), r.op())).collect();
        let want: Vec<_> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| (i as u64 + 10, *op))
            .collect();
        assert_eq!(got, want);
        // The same records with no tail at all end cleanly too.
        assert_eq!(scan(1, &seg[..end]).unwrap().tail, Tail::Clean { end });
    }

    #[test]
    fn a_zeroed_length_with_data_after_it_is_not_a_clean_end() {
        let mut seg = segment_header(1).to_vec();
        encode(1, Op::Delete { key: b"a" }, &mut seg).unwrap();
        let second = seg.len();
        encode(2, Op::Delete { key: b"b" }, &mut seg).unwrap();
        seg[second..second + 4].fill(0);
        let s = scan(1, &seg).unwrap();
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.tail, Tail::Invalid { offset, .. } if offset == second));
    }
}
