//! The on-disk format: a segment header, then checksummed records, then zeros.
//!
//! A segment file is preallocated and filled front to back. Everything is little-endian.
//!
//! ```text
//! segment:  | header (24 B) | record | record | ... | 0 0 0 0 ... (the unwritten tail)
//! sealed:   | header (24 B) | record | record | ... | seal (40 B) |   (the file ends here)
//!
//! header:   0          8            12          16               24
//!           +----------+------------+-----------+----------------+
//!           | magic    | version    | kind      | segment id     |
//!           | LARDRLOG | u32 = 2    | u32       | u64            |
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
//! op          1 put, 2 delete (no value), 3 clear (no key, no value), 4 seal (below).
//! expires_at  absolute wall-clock milliseconds since the Unix epoch; 0 for "never".
//!
//! seal:       a record with op 4, its key the segment id (u64, 8 bytes), no value, expires_at
//!             0, and as `seq` the sequence number the next record after this segment takes.
//!             It ends the records, and nothing follows it: a sealed file is truncated right
//!             after it. It is written only once every record before it is on stable storage,
//!             so a seal says "this file is complete and durable" (see `log.rs`).
//! ```
//!
//! **Versions.** Version 2 added the seal. In version 1 every log segment before the last was
//! made durable and truncated before the next one received a record, so a version 1 file
//! before the last counts as sealed. This crate writes version 2 and reads both, and appends
//! to no version 1 file: `Log::open` finishes one it finds last as version 1 did at a roll.
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
/// The format version this crate writes.
pub const VERSION: u32 = 2;
/// The oldest format version this crate reads.
pub const OLDEST_VERSION: u32 = 1;
/// A record's fixed head: everything before the key.
pub const RECORD_HEAD_LEN: usize = 32;
/// A seal's length: a record head and the segment id as its key.
pub const SEAL_LEN: usize = RECORD_HEAD_LEN + 8;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CLEAR: u8 = 3;
const OP_SEAL: u8 = 4;

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

    /// The name of file `id` of this kind in a log's directory: `00000000000000000003.seg`.
    /// Twenty digits, so the names sort as the ids do.
    pub fn file_name(self, id: u64) -> String {
        format!("{id:020}.{}", self.extension())
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
/// [`Error::TooLarge`] if the record would be longer than `u32::MAX` bytes, and
/// [`Error::ReservedSeq`] for a `seq` of `u64::MAX`; `out` is then unchanged.
pub fn encode(seq: u64, op: Op<'_>, out: &mut Vec<u8>) -> Result<usize, Error> {
    let Some(len) = encoded_len(op) else {
        return Err(Error::TooLarge);
    };
    check_seq(seq)?;
    let start = out.len();
    out.resize(start + len, 0);
    encode_into(seq, op, &mut out[start..])?;
    Ok(len)
}

/// Writes the record `seq: op` over `out`, which is exactly [`encoded_len`]`(op)` bytes long:
/// how the log encodes straight into its mapping.
///
/// # Errors
/// [`Error::TooLarge`] if the record would be longer than `u32::MAX` bytes (`encoded_len` is
/// `None`), whatever `out`'s length: its length field could not say how long it is, and a
/// record written with the length cut to 32 bits stops every scan of its segment. And
/// [`Error::ReservedSeq`] for a `seq` of `u64::MAX`. Either way `out` is unchanged.
///
/// # Panics
/// If `out` has another length than `encoded_len(op)`.
pub fn encode_into(seq: u64, op: Op<'_>, out: &mut [u8]) -> Result<(), Error> {
    let len = encoded_len(op).ok_or(Error::TooLarge)?;
    check_seq(seq)?;
    let (code, key, value, expires_at) = match op {
        Op::Put {
            key,
            value,
            expires_at_ms,
        } => (OP_PUT, key, value, expires_at_ms),
        Op::Delete { key } => (OP_DELETE, key, &[][..], 0),
        Op::Clear => (OP_CLEAR, &[][..], &[][..], 0),
    };
    assert_eq!(
        out.len(),
        len,
        "encode_into needs the record's exact length"
    );
    let mut head = [0u8; RECORD_HEAD_LEN];
    // Neither cast cuts: `encoded_len` kept the whole record, key included, within a `u32`.
    head[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..20].copy_from_slice(&[code, 0, 0, 0]);
    head[20..24].copy_from_slice(&(key.len() as u32).to_le_bytes());
    head[24..32].copy_from_slice(&expires_at.to_le_bytes());
    // The checksum of the pieces, taken before any byte is stored, so the record goes into
    // `out` (the log's mapping) in one pass of copies, head first, as `encode` always wrote it.
    let crc = [&head[8..], key, value]
        .into_iter()
        .fold(crc32c::crc32c(&head[0..4]), crc32c::crc32c_append);
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    let (head_out, body) = out.split_at_mut(RECORD_HEAD_LEN);
    head_out.copy_from_slice(&head);
    let (key_out, value_out) = body.split_at_mut(key.len());
    key_out.copy_from_slice(key);
    value_out.copy_from_slice(value);
    Ok(())
}

/// Refuses `u64::MAX` as a record's number, as the decoder does (`decode`): the encoder
/// writes no record a scan would stop at. A seal may name it ([`encode_seal`]), as the
/// number after a last record of `u64::MAX - 1`.
fn check_seq(seq: u64) -> Result<(), Error> {
    if seq == u64::MAX {
        return Err(Error::ReservedSeq);
    }
    Ok(())
}

/// The seal of segment file `segment` (see the format above), whose records are followed by
/// the record numbered `next_seq`.
pub fn encode_seal(segment: u64, next_seq: u64) -> [u8; SEAL_LEN] {
    let mut seal = [0u8; SEAL_LEN];
    seal[0..4].copy_from_slice(&(SEAL_LEN as u32).to_le_bytes());
    seal[8..16].copy_from_slice(&next_seq.to_le_bytes());
    seal[16] = OP_SEAL;
    seal[20..24].copy_from_slice(&8u32.to_le_bytes());
    seal[RECORD_HEAD_LEN..].copy_from_slice(&segment.to_le_bytes());
    let crc = checksum(&seal);
    seal[4..8].copy_from_slice(&crc.to_le_bytes());
    seal
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
    kind: Kind,
    segment: u64,
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

    /// The file the record is in, and where in it: what a person needs to find it, say
    /// when a record that checked out here does not decode in the caller's types.
    pub fn location(&self) -> Location {
        Location {
            kind: self.kind,
            segment: self.segment,
            offset: self.offset as u64,
        }
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

/// Where a record is: the file that holds it, named as [`Kind::file_name`] names it in the
/// log's directory, and the byte offset it starts at there. Shown as
/// `00000000000000000003.seg at byte 4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The file's kind: a log segment or a snapshot part.
    pub kind: Kind,
    /// The file's id (its name's number).
    pub segment: u64,
    /// Where the record starts in the file.
    pub offset: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.kind.file_name(self.segment);
        write!(f, "{file} at byte {}", self.offset)
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
    /// The header's format version.
    pub version: u32,
    pub records: Vec<Record<'a>>,
    /// The seal that ended the records, if one did; the tail starts after it.
    pub seal: Option<Seal>,
    pub tail: Tail,
}

/// A checked seal (see the format above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// Where the seal starts: right after the file's last record.
    pub offset: usize,
    /// The sequence number of the record after the file's last.
    pub next_seq: u64,
}

/// The seal at the very end of `bytes`, the whole of segment file `segment` (version 2 or
/// later, header checked by the caller): how a sealed file is recognised even when damage
/// stops a scan before it.
pub fn seal_at_end(segment: u64, bytes: &[u8]) -> Option<Seal> {
    let offset = bytes.len().checked_sub(SEAL_LEN)?;
    if offset < HEADER_LEN {
        return None;
    }
    match decode_at(bytes, offset, segment) {
        Ok(Some(Decoded::Seal(seal))) => Some(seal),
        _ => None,
    }
}

/// Whether `tail`, the bytes of log segment file `segment` from where its records end, is the
/// start of the seal that would end them, `next_seq` naming the record after them, cut short,
/// with nothing but zeros after it: a seal whose write failed part way (a full disk, a file
/// size limit) or was cut by the process's death between two pages. The log writes a seal only
/// once the records before it are durable (`seal_file` in `log.rs`), so such a segment is whole,
/// to be sealed again; a torn record there would say otherwise. An empty or all-zero `tail` is
/// not one: that is a clean end.
pub(crate) fn is_seal_cut_short(segment: u64, next_seq: u64, tail: &[u8]) -> bool {
    let seal = encode_seal(segment, next_seq);
    let written = tail.iter().zip(&seal).take_while(|(a, b)| a == b).count();
    written > 0 && written < SEAL_LEN && tail[written..].iter().all(|&b| b == 0)
}

/// Whether `last`, the final [`SEAL_LEN`] bytes of log segment file `segment` (one at least
/// [`HEADER_LEN`]` + SEAL_LEN` long), is its seal: [`seal_at_end`] for a caller that read only
/// the end of the file.
pub(crate) fn is_seal(segment: u64, last: &[u8]) -> bool {
    last.len() == SEAL_LEN && matches!(decode_at(last, 0, segment), Ok(Some(Decoded::Seal(_))))
}

/// The format version the header at the start of `bytes` names, if they begin with the
/// header's magic and are long enough to name one.
pub(crate) fn header_version(bytes: &[u8]) -> Option<u32> {
    let version = bytes.get(8..12)?;
    (bytes[..8] == MAGIC).then(|| u32_at(version, 0))
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
    let mut records = Vec::new();
    let end = scan_batches(kind, segment, bytes, |batch| {
        records.extend_from_slice(batch)
    })?;
    Ok(Scan {
        segment_id: segment,
        version: end.version,
        records,
        seal: end.seal,
        tail: end.tail,
    })
}

/// How a [`scan_batches`] ended: a [`Scan`] without its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// The header's format version.
    pub version: u32,
    /// The seal that ended the records, if one did; the tail starts after it.
    pub seal: Option<Seal>,
    /// How the records end.
    pub tail: Tail,
}

/// Records [`scan_batches`] decodes before it hands them over.
///
/// A reader of a whole file (recovery, compaction) typically looks each record's key up in a
/// table larger than the caches, a miss per record. Decoding a record (a pass over its bytes
/// for the checksum) between two lookups leaves the processor too much work to overlap their
/// misses; handed over in batches, the lookups run back to back. Gathering the whole file
/// instead costs 88 bytes of heap a record (72 when measured, before a record named its
/// file), most of it memory the process has not touched before. Measured on compaction
/// (`compaction_cost`; `docs/BENCHMARKS.md`, "What a compaction costs its thread"): about
/// 200 ns of CPU per record read gathering whole files, 220–260 handing records over one at
/// a time, 140 in batches; batches of 32 and of 2,048 measured the same as 256. Recovery's
/// replay of a million records went from 73 to 28 ms.
pub const SCAN_BATCH: usize = 256;

/// [`scan_as`], handing the valid records over in order as they are decoded, in batches of
/// [`SCAN_BATCH`] (the last one shorter), instead of gathering them all: a reader that needs
/// every record once then holds a batch at most.
///
/// The reader loops over each batch itself: handing a batch's records one by one to a
/// per-record closure made compaction 10–20% slower than its own loop over the slice.
///
/// # Errors
/// As for [`scan`]; the header is checked before any record is handed over. Every valid
/// record has been handed over when it returns.
pub fn scan_batches<'a>(
    kind: Kind,
    segment: u64,
    bytes: &'a [u8],
    mut each_batch: impl FnMut(&[Record<'a>]),
) -> Result<ScanEnd, Error> {
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
    let version = u32_at(bytes, 8);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(corrupt(8, "unknown format version"));
    }
    if u32_at(bytes, 12) != kind.code() {
        return Err(corrupt(12, "the header names another kind of segment file"));
    }
    if u64_at(bytes, 16) != segment {
        return Err(corrupt(16, "the header names another segment"));
    }
    let mut seal = None;
    let mut at = HEADER_LEN;
    let mut batch = Vec::with_capacity(SCAN_BATCH);
    let tail = loop {
        match decode_at(bytes, at, segment) {
            Ok(Some(Decoded::Record { seq, op, len })) => {
                batch.push(Record {
                    seq,
                    op,
                    offset: at,
                    len,
                    kind,
                    segment,
                });
                at += len;
                if batch.len() == SCAN_BATCH {
                    each_batch(&batch);
                    batch.clear();
                }
            }
            Ok(Some(Decoded::Seal(s))) if version >= 2 => {
                seal = Some(s);
                at += SEAL_LEN;
                break match bytes[at..].iter().all(|&b| b == 0) {
                    true => Tail::Clean { end: at },
                    false => Tail::Invalid {
                        offset: at,
                        reason: "bytes after the seal",
                    },
                };
            }
            Ok(Some(Decoded::Seal(_))) => {
                break Tail::Invalid {
                    offset: at,
                    reason: "a seal in a version 1 file",
                }
            }
            Ok(None) => break Tail::Clean { end: at },
            Err(reason) => break Tail::Invalid { offset: at, reason },
        }
    };
    if !batch.is_empty() {
        each_batch(&batch);
    }
    Ok(ScanEnd {
        version,
        seal,
        tail,
    })
}

/// How a log segment file begins, as far as telling whether it goes on from the segment
/// before it needs ([`Expected::goes_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Its first record (or its seal, with the number the seal names) has this sequence number.
    At(u64),
    /// Its header does not check out: nothing in it, or after it, can be trusted to follow on.
    Unreadable,
    /// A valid header and no valid record after it: it says nothing either way.
    Empty,
}

/// How log segment file `segment` begins (its `bytes`, or any prefix of them long enough to
/// hold the first record), without scanning it whole.
pub(crate) fn segment_start(segment: u64, bytes: &[u8]) -> Start {
    let header_ok = bytes
        .get(..HEADER_LEN)
        .is_some_and(|h| scan_as(Kind::Log, segment, h).is_ok());
    if !header_ok {
        return Start::Unreadable;
    }
    match decode_at(bytes, HEADER_LEN, segment) {
        Ok(Some(Decoded::Record { seq, .. })) => Start::At(seq),
        Ok(Some(Decoded::Seal(s))) => Start::At(s.next_seq),
        _ => Start::Empty,
    }
}

/// The sequence number the next log segment's first record should have, followed through a
/// log's files in replay order: one past the last record read, or what the last seal named.
///
/// This, with [`Expected::goes_on`], is the rule that decides where a log ends after a crash
/// (`log.rs`'s module doc, "Recovery"), applied by `recovery.rs` for `Log::open` and
/// `LogDir::replay` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected(Option<u64>);

impl Expected {
    /// Before the first file of a log whose manifest has `base` (0 if it has none) and which
    /// has a snapshot or not. A log never compacted starts at 0; after a compaction the number
    /// is not known until a file says it (a snapshot's records are not in sequence order; its
    /// last part's seal names the next number).
    pub fn at_start(base: u64, has_snapshot: bool) -> Self {
        Self((base == 0 && !has_snapshot).then_some(0))
    }

    /// Known to be `seq`.
    pub(crate) fn at(seq: u64) -> Self {
        Self(Some(seq))
    }

    /// Not known: after damage skipped records of a file with no seal to say how many.
    pub fn unknown() -> Self {
        Self(None)
    }

    /// After a record with sequence number `seq`. No record holds `u64::MAX` (the decoder
    /// refuses it): after one, what comes next is not known.
    pub fn after_record(&mut self, seq: u64) {
        self.0 = seq.checked_add(1);
    }

    /// After the records of a file of `kind` that ended with `seal`, if it did.
    pub fn after_file(&mut self, kind: Kind, seal: Option<&Seal>) {
        match seal {
            Some(seal) => self.0 = Some(seal.next_seq),
            // Snapshot records are not in sequence order; only a part's seal says what follows.
            None if kind == Kind::Snapshot => self.0 = None,
            None => {}
        }
    }

    /// The number, if known.
    pub fn get(self) -> Option<u64> {
        self.0
    }

    /// Why a log segment that begins as `start` cannot follow the files read so far, after
    /// which this is expected: a first record numbered otherwise says a segment between them
    /// is missing. `None` if it follows, if nothing is expected, or if its header is damaged
    /// (which is judged with the rest of the file's damage).
    pub fn missing_before(self, start: Start) -> Option<&'static str> {
        (start != Start::Unreadable && !self.goes_on(start))
            .then_some("its first record does not follow the file before it: a segment is missing")
    }

    /// Whether the log goes on past a log segment that was rolled and never sealed, whose
    /// records end cleanly, and after which this is expected, when `next` is how the first
    /// later segment that is not [`Start::Empty`] begins (`Empty` if none is).
    ///
    /// It does when the two agree, and when there is nothing to compare: a number not known,
    /// or no later record. A later segment that starts elsewhere, or whose header is unreadable,
    /// means records in between never reached the disk (an OS crash before the sync that would
    /// have sealed this segment), so the log ends in this segment and the later ones go.
    pub fn goes_on(self, next: Start) -> bool {
        match (self.0, next) {
            (Some(expected), Start::At(first)) => expected == first,
            (Some(_), Start::Unreadable) => false,
            (None, _) | (Some(_), Start::Empty) => true,
        }
    }
}

/// What a checked record at some offset is: a record (its number, what it does, its length;
/// the scan that hands it over says where it is), or a seal.
enum Decoded<'a> {
    Record { seq: u64, op: Op<'a>, len: usize },
    Seal(Seal),
}

/// The record at `at`, `None` at a clean end (the end of the bytes, or a zero tail), or why
/// the bytes there are neither.
fn decode_at(bytes: &[u8], at: usize, segment: u64) -> Result<Option<Decoded<'_>>, &'static str> {
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
    if seq == u64::MAX && code != OP_SEAL {
        // No record gets there (the record after it could have no number), and replay, which
        // counts on from each number, must not be asked to. A seal may name it: its `seq` is
        // the number after the file's last record, and `u64::MAX - 1` is a record's last.
        return Err("a sequence number no log reaches");
    }
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
        OP_SEAL if len == SEAL_LEN && key == segment.to_le_bytes() && expires_at_ms == 0 => {
            return Ok(Some(Decoded::Seal(Seal {
                offset: at,
                next_seq: seq,
            })));
        }
        OP_SEAL => return Err("a seal that names another segment or is malformed"),
        _ => return Err("an unknown or malformed operation"),
    };
    Ok(Some(Decoded::Record { seq, op, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_cut_short_is_any_proper_prefix_of_its_own_seal_then_zeros() {
        let seal = encode_seal(7, 42);
        for cut in 1..SEAL_LEN {
            if seal[cut..].iter().all(|&b| b == 0) {
                break; // the seal's last bytes are zeros: the rest of it is the whole seal
            }
            let mut tail = seal[..cut].to_vec();
            assert!(is_seal_cut_short(7, 42, &tail), "cut at {cut}");
            tail.extend_from_slice(&[0; 100]);
            assert!(is_seal_cut_short(7, 42, &tail), "cut at {cut}, zeros after");
            tail[cut + 50] = 1;
            assert!(
                !is_seal_cut_short(7, 42, &tail),
                "cut at {cut}, a byte after"
            );
            assert!(
                !is_seal_cut_short(8, 42, &seal[..cut.max(SEAL_LEN - 8)]),
                "another file's"
            );
            assert!(
                !is_seal_cut_short(7, 43, &seal[..cut.max(9)]),
                "another number"
            );
        }
        assert!(!is_seal_cut_short(7, 42, &seal), "a whole seal is a seal");
        assert!(!is_seal_cut_short(7, 42, &[]));
        assert!(!is_seal_cut_short(7, 42, &[0; 64]), "zeros are a clean end");
        let mut torn = Vec::new();
        encode(3, Op::Clear, &mut torn).unwrap();
        torn.truncate(10);
        assert!(!is_seal_cut_short(7, 42, &torn), "a torn record");
    }

    /// The bytes sit where the drawing above (and `docs/FORMAT.md`'s) puts them: round trips
    /// alone would pass an encoder and decoder that agreed on another layout.
    #[test]
    fn the_header_a_record_and_a_seal_are_laid_out_as_drawn() {
        let header = header(Kind::Snapshot, 9);
        assert_eq!(&header[0..8], b"LARDRLOG");
        assert_eq!(header[8..12], 2u32.to_le_bytes());
        assert_eq!(header[12..16], 1u32.to_le_bytes());
        assert_eq!(header[16..24], 9u64.to_le_bytes());

        let mut record = Vec::new();
        let put = Op::Put {
            key: b"key",
            value: b"value",
            expires_at_ms: 1_234,
        };
        assert_eq!(encode(42, put, &mut record).unwrap(), 40);
        assert_eq!(record[0..4], 40u32.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[8..]);
        assert_eq!(record[4..8], crc.to_le_bytes());
        assert_eq!(record[8..16], 42u64.to_le_bytes());
        assert_eq!(record[16..20], [1, 0, 0, 0]);
        assert_eq!(record[20..24], 3u32.to_le_bytes());
        assert_eq!(record[24..32], 1_234u64.to_le_bytes());
        assert_eq!(&record[32..35], b"key");
        assert_eq!(&record[35..40], b"value");

        let mut delete = Vec::new();
        encode(43, Op::Delete { key: b"key" }, &mut delete).unwrap();
        assert_eq!((delete[16], &delete[24..32]), (2, &[0u8; 8][..]));
        let mut clear = Vec::new();
        encode(44, Op::Clear, &mut clear).unwrap();
        assert_eq!(
            (clear.len(), clear[16], &clear[20..32]),
            (32, 3, &[0u8; 12][..])
        );

        let seal = encode_seal(5, 45);
        assert_eq!(seal.len(), 40);
        assert_eq!(seal[0..4], 40u32.to_le_bytes());
        assert_eq!(seal[8..16], 45u64.to_le_bytes());
        assert_eq!(seal[16..20], [4, 0, 0, 0]);
        assert_eq!(seal[20..32], [8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(seal[32..40], 5u64.to_le_bytes());
    }

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
        let mut v3 = ok;
        v3[8] = 3;
        assert_eq!(err(&v3, 3), 3, "a future version");
        let mut v1 = ok;
        v1[8] = 1;
        assert_eq!(
            scan(3, &v1).unwrap().version,
            1,
            "the previous version reads"
        );
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

    #[test]
    fn a_seal_ends_the_records_and_is_found_from_the_end() {
        let mut seg = segment_header(5).to_vec();
        encode(7, Op::Delete { key: b"a" }, &mut seg).unwrap();
        let records_end = seg.len();
        seg.extend_from_slice(&encode_seal(5, 8));
        let s = scan(5, &seg).unwrap();
        assert_eq!(s.records.len(), 1);
        let seal = Seal {
            offset: records_end,
            next_seq: 8,
        };
        assert_eq!(s.seal, Some(seal));
        assert_eq!(s.tail, Tail::Clean { end: seg.len() });
        assert_eq!(seal_at_end(5, &seg), Some(seal));
        // Damage before the seal stops the scan there, but the seal is still found.
        let mut damaged = seg.clone();
        damaged[HEADER_LEN + 9] ^= 1;
        assert!(matches!(
            scan(5, &damaged).unwrap().tail,
            Tail::Invalid { .. }
        ));
        assert_eq!(seal_at_end(5, &damaged), Some(seal));
        // Another segment's seal is not this one's, and zeros after the records are no seal.
        assert!(matches!(
            scan(6, &{
                let mut b = segment_header(6).to_vec();
                b.extend_from_slice(&encode_seal(5, 8));
                b
            })
            .unwrap()
            .tail,
            Tail::Invalid { .. }
        ));
        assert_eq!(seal_at_end(5, &seg[..records_end]), None);
        // Anything after a seal is damage.
        let mut after = seg.clone();
        after.push(1);
        assert!(
            matches!(scan(5, &after).unwrap().tail, Tail::Invalid { offset, .. } if offset == seg.len())
        );
        // A version 1 file has no seals.
        let mut v1 = seg.clone();
        v1[8] = 1;
        assert!(
            matches!(scan(5, &v1).unwrap().tail, Tail::Invalid { offset, .. } if offset == records_end)
        );
    }

    #[test]
    fn a_segment_start_is_its_first_record_or_seal_or_says_why_not() {
        let mut seg = segment_header(4).to_vec();
        assert_eq!(segment_start(4, &seg), Start::Empty, "a header alone");
        seg.resize(4096, 0);
        assert_eq!(segment_start(4, &seg), Start::Empty, "a header and zeros");
        let mut with_record = segment_header(4).to_vec();
        encode(11, Op::Clear, &mut with_record).unwrap();
        assert_eq!(segment_start(4, &with_record), Start::At(11));
        let mut sealed_only = segment_header(4).to_vec();
        sealed_only.extend_from_slice(&encode_seal(4, 12));
        assert_eq!(segment_start(4, &sealed_only), Start::At(12));
        assert_eq!(
            segment_start(5, &with_record),
            Start::Unreadable,
            "another id"
        );
        assert_eq!(
            segment_start(4, &with_record[..10]),
            Start::Unreadable,
            "cut short"
        );
        let mut damaged = with_record.clone();
        damaged[HEADER_LEN + 9] ^= 1;
        assert_eq!(
            segment_start(4, &damaged),
            Start::Empty,
            "a bad first record"
        );
    }

    /// A public method: a number no record holds gives an unknown next number, not an
    /// overflow (a panic in a debug build).
    #[test]
    fn after_the_last_number_what_comes_next_is_unknown() {
        let mut e = Expected::at_start(0, false);
        e.after_record(u64::MAX - 1);
        assert_eq!(e.get(), Some(u64::MAX));
        e.after_record(u64::MAX);
        assert_eq!(e.get(), None);
    }

    #[test]
    fn a_log_goes_on_past_an_unsealed_segment_unless_what_follows_disagrees() {
        let mut e = Expected::at_start(0, false);
        assert_eq!(e.get(), Some(0), "a log never compacted starts at 0");
        assert_eq!(Expected::at_start(7, false).get(), None);
        assert_eq!(Expected::at_start(0, true).get(), None);
        e.after_record(41);
        assert!(e.goes_on(Start::At(42)));
        assert!(!e.goes_on(Start::At(43)), "records in between were lost");
        assert!(!e.goes_on(Start::At(41)));
        assert!(!e.goes_on(Start::Unreadable));
        assert!(e.goes_on(Start::Empty), "nothing after it disagrees");
        let seal = Seal {
            offset: 0,
            next_seq: 50,
        };
        e.after_file(Kind::Log, None);
        assert_eq!(e.get(), Some(42), "an unsealed segment leaves it");
        e.after_file(Kind::Log, Some(&seal));
        assert_eq!(e.get(), Some(50), "a seal names it");
        e.after_file(Kind::Snapshot, None);
        assert_eq!(
            e.get(),
            None,
            "a snapshot part without a seal leaves it unknown"
        );
        for next in [Start::At(0), Start::At(99), Start::Unreadable, Start::Empty] {
            assert!(e.goes_on(next), "nothing known to compare: {next:?}");
        }
    }
}
