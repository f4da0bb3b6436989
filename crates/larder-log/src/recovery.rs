//! What recovery makes of a log's files: the one rule, applied by [`Log::open`] before it
//! changes anything, and by [`LogDir::replay`] for tools that must say what an open would do
//! without opening the log (`larder log verify` and `inspect`).
//!
//! The rule is the one the [`log`](crate::log) module doc states under "Recovery", and
//! `docs/FORMAT.md` under "Reading it back". [`judge`] first reads every file's header: a file
//! in a format version newer than this build reads (a newer Larder's) is
//! [`Error::NewerFormat`], in either recovery mode, before any record is handed over
//! ([`refuse_newer_formats`]). Such a file is no damage, and no verdict of this build's may
//! fall on it or on the files around it: the newer version's rolls, seals and ends may follow
//! rules this one does not know. Then it reads the files in replay order (the snapshot's
//! parts, then the segments above the manifest's base), hands over every record an open
//! replays, and gives each file a [`FileVerdict`]:
//!
//! 1. A log segment whose first record does not follow the files before it (as
//!    [`Expected`] follows them) has a *gap*: a segment between them is missing.
//! 2. A *sealed* file must check out to its end; where it does not, it is
//!    [`Ending::Damaged`]. Sealed are: a snapshot part; a segment with a seal, at its end or
//!    where its records stop; one of format version 1 before the last; one whose header does
//!    not check out; and one without a seal before a segment that ends with its own (seals are
//!    written oldest first, so its seal was damaged).
//! 3. A segment before the last that is none of these was rolled and never sealed. If its
//!    records end cleanly (or at its own seal cut short) and the first later segment with a
//!    record goes on from them, it is whole: its first sync seals it ([`Then::Seal`]).
//!    Otherwise the log ends in it ([`Ending::Torn`]), and every later segment is
//!    [`Ending::Cut`].
//! 4. The last segment, if not sealed, is the one appends go on in: bytes after its records
//!    that do not check out are a torn append ([`Ending::Torn`]).
//!
//! In [`RecoveryMode::Strict`] the first gap or damage is [`Error::Corruption`], returned
//! before anything is acted on; [`RecoveryMode::SkipCorrupt`] reports it and goes on.
//!
//! [`Log::open`]: crate::Log::open
//! [`LogDir::replay`]: crate::LogDir::replay

use std::fs::File;
use std::io::Read;
use std::ops::{Deref, RangeInclusive};
use std::path::PathBuf;

use crate::error::Error;
use crate::format::{
    header_version, is_seal_cut_short, scan_as, scan_batches, seal_at_end, segment_start, Expected,
    Kind, Record, Seal, Start, Tail, HEADER_LEN, SEAL_LEN, VERSION,
};
use crate::log::{Damage, RecoveryMode, TornTail};

/// What recovery makes of one file of a log: whether a segment is missing before it, how its
/// records end, and what its seal says. [`LogDir::replay`](crate::LogDir::replay) returns one
/// per file; [`Log::open`](crate::Log::open) acts on the same verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileVerdict {
    /// Set when the file is a log segment whose first record does not follow the files
    /// before it: a segment between them is missing (a partial copy or restore, a stray
    /// removal), and replaying on would bring back what its records deleted. Damage at the
    /// end of its header that skips nothing: [`Error::Corruption`] to a strict open, reported
    /// by one that skips damage, which replays on.
    pub gap: Option<Damage>,
    /// With `gap`, when the segment's first record is numbered past the number the files
    /// before it end at: the numbers of the records missing between them. Each segment's
    /// numbers carry on from the file before it, so these are exactly the records of the
    /// missing segments. `None` without a gap, and with one whose first record is numbered
    /// below that (a segment of another log, or of an older copy): nothing is known missing.
    pub missing: Option<RangeInclusive<u64>>,
    /// How its records end.
    pub ending: Ending,
    /// What its seal, if a whole one is there, says the record after its last is numbered,
    /// whether damaged records come before it or not.
    pub seal_next: Option<u64>,
    /// Whether recovery takes the file as sealed, whole and never written again: a snapshot
    /// part, or a segment sealed as the module doc's rule 2 says (with a seal, or without a
    /// whole one where damage took it). `false` for a segment rolled and never sealed (rule
    /// 3), for the last segment when appends go on in it, and for a segment after the log's
    /// end ([`Ending::Cut`]: none of them ends with a seal, or the log would not end before
    /// it). Where a file stands in the log ([`FileRole`](crate::FileRole)) does not say
    /// this: a segment before the last may be either.
    pub sealed: bool,
}

/// How a file's records end, as recovery judges it (see [`FileVerdict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Cleanly: at the end of the file, or where only zeros follow. (A rolled segment's own
    /// seal cut short after its records is a clean end too: its records were durable before
    /// the seal was begun.)
    Clean,
    /// At bytes that do not check out in a sealed file (a snapshot part, a segment with a
    /// seal or before one that has its own, a segment of format version 1 before the last, or
    /// any segment whose header is damaged). [`Error::Corruption`] to a strict open; one that
    /// skips damage reports it ([`Log::damage`](crate::Log::damage)) and skips the rest of
    /// the file.
    Damaged(Damage),
    /// The log ends here: in the last segment at a torn append, or in a segment rolled and
    /// never sealed at bytes that do not check out, or after its last record when the next
    /// segment does not go on from it. An open cuts it there, in either mode
    /// ([`Log::torn_tail`](crate::Log::torn_tail)), and removes the segments after it.
    Torn(TornTail),
    /// A log segment after the one the log ends in (`segment`): not read, and removed by an
    /// open, records and all.
    Cut {
        /// The segment the log ends in.
        segment: u64,
    },
}

/// Why the log ends after a rolled segment's last record.
const NOT_GONE_ON: &str = "the next segment does not go on from its last record";

/// What [`Log::open`](crate::Log::open) does with a file once the log checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Nothing: a snapshot part, or a sealed segment, damaged or not.
    Keep,
    /// A segment rolled and never sealed, whole: the first sync seals it after its records,
    /// which end at `end`, with `next_seq` as the number of the record after them.
    Seal { end: usize, next_seq: u64 },
    /// The segment appends go on in, its records ending at `end`: the bytes from there to
    /// `dirty_end` (the last one that is not zero) are a torn append's, zeroed first.
    Append { end: usize, dirty_end: usize },
    /// A last segment of format version 1: finished as version 1 finished a segment at its
    /// roll (made durable and cut after its records, at `end`), and appends go on in a new one.
    Finish { end: usize },
    /// After the log's end: removed.
    Remove,
}

/// A file's verdict, and what an open does with it.
#[derive(Debug, Clone)]
pub(crate) struct Judged {
    pub(crate) verdict: FileVerdict,
    pub(crate) then: Then,
}

/// What [`judge`] made of a log.
#[derive(Debug)]
pub(crate) struct Judgment {
    /// Per file, in replay order: the snapshot's parts, then the segments.
    pub(crate) files: Vec<Judged>,
    /// The number the next append takes: past every record handed over, and past every seal
    /// read (a seal's number is never used again, even with no record after it left).
    pub(crate) next_seq: u64,
}

impl Judgment {
    /// Every damage an open that skips damage reports, in order: each file's gap, then the
    /// damage in its records.
    pub(crate) fn damage(&self) -> impl Iterator<Item = &Damage> {
        self.files.iter().flat_map(|j| {
            let damaged = match &j.verdict.ending {
                Ending::Damaged(d) => Some(d),
                _ => None,
            };
            j.verdict.gap.iter().chain(damaged)
        })
    }

    /// The torn append an open cuts off, if the log ends early.
    pub(crate) fn torn_tail(&self) -> Option<&TornTail> {
        self.files.iter().find_map(|j| match &j.verdict.ending {
            Ending::Torn(t) => Some(t),
            _ => None,
        })
    }
}

/// Where [`judge`] reads a log's files: mapped by `Log::open`, read by a `LogDir`.
pub(crate) trait Files {
    /// A file's bytes up to where only zeros follow.
    type Bytes: Deref<Target = [u8]>;

    /// File `id` of `kind`: its bytes up to where only zeros follow (`log::written_len`: a
    /// preallocated segment's unwritten rest is a hole, not read), and its whole length.
    fn read(&self, kind: Kind, id: u64) -> Result<(Self::Bytes, usize), Error>;

    /// Whether log segment `id` ends with its seal.
    fn ends_with_seal(&self, id: u64) -> Result<bool, Error>;

    /// How log segment `id` begins ([`segment_start`]).
    fn start(&self, id: u64) -> Result<Start, Error>;

    /// How many bytes of log segment `id` may hold anything but zeros.
    fn written(&self, id: u64) -> Result<u64, Error>;

    /// The path of file `id` of `kind`.
    fn path(&self, kind: Kind, id: u64) -> PathBuf;
}

/// Refuses a log one of whose files, at `paths`, is in a format version newer than this build
/// reads: [`Error::NewerFormat`] for the first, found from its header alone. A file too short
/// for a header, or without the magic, is not refused here: that is damage, which the scan
/// of the file judges.
///
/// [`judge`] asks this first, so [`Log::open`](crate::Log::open) refuses such a log before it
/// hands over a record or changes anything; so does [`LogDir::open`](crate::LogDir::open).
///
/// # Errors
/// [`Error::NewerFormat`]; [`Error::Io`] if a file cannot be read.
pub(crate) fn refuse_newer_formats(paths: impl IntoIterator<Item = PathBuf>) -> Result<(), Error> {
    for path in paths {
        let mut head = Vec::with_capacity(12);
        File::open(&path)?.take(12).read_to_end(&mut head)?;
        if let Some(version) = header_version(&head).filter(|&v| v > VERSION) {
            return Err(Error::NewerFormat {
                file: path,
                version,
                supported: VERSION,
            });
        }
    }
    Ok(())
}

/// Judges the log in `files` whose manifest has `base` and the parts `snapshot`, with the log
/// segments `segments` above its base (ascending, without an unfinished roll), as the module
/// doc says. Every record an open replays is handed to `replay` in order, a batch at a time,
/// with the index of its file in replay order (the parts first). Damage is an error in
/// [`RecoveryMode::Strict`], after the records before it were handed over.
///
/// # Errors
/// [`Error::NewerFormat`] in either mode, before any record is handed over;
/// [`Error::Corruption`] in strict mode; [`Error::Io`] as reading the files gives it.
pub(crate) fn judge<F: Files>(
    files: &F,
    base: u64,
    snapshot: &[u64],
    segments: &[u64],
    mode: RecoveryMode,
    replay: impl FnMut(usize, &[Record<'_>]),
) -> Result<Judgment, Error> {
    let parts = snapshot.iter().map(|&id| files.path(Kind::Snapshot, id));
    refuse_newer_formats(parts.chain(segments.iter().map(|&id| files.path(Kind::Log, id))))?;
    let mut judge = Judge {
        files,
        mode,
        replay,
        expected: Expected::at_start(base, !snapshot.is_empty()),
        next_seq: 0,
        out: Vec::with_capacity(snapshot.len() + segments.len()),
        last_sealed: None,
    };
    for &id in snapshot {
        judge.sealed(Kind::Snapshot, id)?;
    }
    for (i, &id) in segments.iter().enumerate() {
        if i + 1 == segments.len() {
            judge.last(id)?;
        } else if judge.before_last(segments, i)? {
            break; // the log ends in it, and the later segments are cut
        }
    }
    Ok(Judgment {
        files: judge.out,
        next_seq: judge.next_seq,
    })
}

/// The valid records in `bytes` (of sealed file `id`, whose whole length is `len`; past
/// `bytes` it holds only zeros), handed to `each_batch` in order, a batch at a time as they
/// are read ([`scan_batches`]), with damage handled per `mode`: an error, or the file's seal
/// (if it has one) and a [`Damage`]. The records before the damage are handed over before the
/// verdict: a caller that fails on the error drops what it made of them.
pub(crate) fn scan_sealed_batches<'a>(
    mode: RecoveryMode,
    kind: Kind,
    id: u64,
    bytes: &'a [u8],
    len: usize,
    each_batch: impl FnMut(&[Record<'a>]),
) -> Result<(Option<Seal>, Option<Damage>), Error> {
    let ended = scan_batches(kind, id, bytes, each_batch);
    let at_end = seal_at_file_end(id, bytes, len);
    // A scan that damage stopped never reached the seal; the seal itself may still be whole,
    // and what it says the next file begins at still holds.
    let seal = ended.as_ref().ok().and_then(|end| end.seal).or(at_end);
    let damage = damage_in_sealed(kind, id, bytes, at_end, ended.map(|end| end.tail))?;
    Ok((seal, damage.map(|d| strict_or(mode, d)).transpose()?))
}

/// The seal at the very end of file `id`, whose bytes up to where only zeros follow are
/// `bytes` and whose whole length is `len` ([`seal_at_end`] of the whole file: a file with
/// zeros after `bytes` ends with zeros, not a seal).
fn seal_at_file_end(id: u64, bytes: &[u8], len: usize) -> Option<Seal> {
    (bytes.len() == len)
        .then(|| seal_at_end(id, bytes))
        .flatten()
}

/// The damage in sealed file `id` (its `bytes`, of which the seal at its very end is
/// `at_end`) from how its scan `ended`: its tail, or the error its header gave. `None` if it
/// ended cleanly. The damage runs to the seal: the seal is no record, and is not lost.
/// Without a whole seal at the end, it runs to the last byte that is not zero: a file whose
/// seal was torn may never have been cut after it (a crash between the seal's write and the
/// cut), and the zeros of its preallocated rest held nothing to skip, as after a torn append
/// ([`dirty_end`]).
fn damage_in_sealed(
    kind: Kind,
    id: u64,
    bytes: &[u8],
    at_end: Option<Seal>,
    ended: Result<Tail, Error>,
) -> Result<Option<Damage>, Error> {
    let (offset, reason) = match ended {
        Ok(Tail::Clean { .. }) => return Ok(None),
        Ok(Tail::Invalid { offset, reason }) => (offset, reason),
        Err(Error::Corruption { offset, reason, .. }) => {
            (usize::try_from(offset).unwrap_or(bytes.len()), reason)
        }
        Err(e) => return Err(e),
    };
    let skipped_end =
        at_end.map_or_else(|| dirty_end(bytes, offset.min(bytes.len())), |s| s.offset);
    Ok(Some(Damage::at(kind, id, offset, skipped_end, reason)))
}

/// `damage`, or in [`RecoveryMode::Strict`] the error that refuses the log.
fn strict_or(mode: RecoveryMode, damage: Damage) -> Result<Damage, Error> {
    match mode {
        RecoveryMode::Strict => Err(Error::Corruption {
            segment: damage.segment,
            offset: damage.offset,
            reason: damage.reason,
        }),
        RecoveryMode::SkipCorrupt => Ok(damage),
    }
}

/// Where what was written after records that end at `end` ends: one past the last byte of
/// `bytes` that is not zero, or `end` if only zeros follow. Past it the written part is zeros
/// too (space reserved by writing zeros, pages faulted in ahead), which no record lost and
/// nothing needs to zero.
fn dirty_end(bytes: &[u8], end: usize) -> usize {
    bytes[end..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(end, |last| end + last + 1)
}

/// A gap before a log segment ([`FileVerdict::gap`]), and the records missing in it
/// ([`FileVerdict::missing`]).
struct Gap {
    damage: Damage,
    missing: Option<RangeInclusive<u64>>,
}

/// [`judge`]'s state while it reads the files in order.
struct Judge<'f, F, R> {
    files: &'f F,
    mode: RecoveryMode,
    replay: R,
    /// The number the next log segment's first record should have, when known.
    expected: Expected,
    next_seq: u64,
    out: Vec<Judged>,
    /// Once looked for: the index of the last segment that ends with its seal, if one after
    /// the segment it was first looked for from does.
    last_sealed: Option<Option<usize>>,
}

impl<F: Files, R: FnMut(usize, &[Record<'_>])> Judge<'_, F, R> {
    /// Hands `records` of the file about to be judged over, and counts on past them.
    fn feed(&mut self, records: &[Record<'_>]) {
        for r in records {
            // No record holds `u64::MAX` (the decoder refuses it).
            self.next_seq = self.next_seq.max(r.seq() + 1);
        }
        if let Some(last) = records.last() {
            self.expected.after_record(last.seq());
        }
        (self.replay)(self.out.len(), records);
    }

    /// After the records of a file of `kind`, which ended with `seal` if it did. A seal names
    /// the number the file's successor begins at, and numbering never goes back below it,
    /// even when no record after the seal survives (a compaction may have dropped the records
    /// before it): a later recovery compares the next segment's first number with this seal,
    /// and must not find a reused one there.
    ///
    /// A file `damaged` without a seal leaves the next number unknown: the records the damage
    /// skipped had numbers, and only a seal says how many.
    fn after_file(&mut self, kind: Kind, seal: Option<&Seal>, damaged: bool) {
        if let Some(seal) = seal {
            self.next_seq = self.next_seq.max(seal.next_seq);
        }
        self.expected.after_file(kind, seal);
        if damaged && seal.is_none() {
            self.expected = Expected::unknown();
        }
    }

    fn push(&mut self, gap: Option<Gap>, ending: Ending, seal: Option<Seal>, then: Then) {
        let (gap, missing) = gap.map_or((None, None), |g| (Some(g.damage), g.missing));
        let verdict = FileVerdict {
            gap,
            missing,
            ending,
            seal_next: seal.map(|s| s.next_seq),
            // The files kept as they are: the only ones recovery never writes again.
            sealed: then == Then::Keep,
        };
        self.out.push(Judged { verdict, then });
    }

    /// The gap before log segment `id` (its `bytes`), if its first record does not follow the
    /// files before it (an error in strict mode).
    fn gap(&self, id: u64, bytes: &[u8]) -> Result<Option<Gap>, Error> {
        let start = segment_start(id, bytes);
        let Some(reason) = self.expected.missing_before(start) else {
            return Ok(None);
        };
        let damage = Damage::at(Kind::Log, id, HEADER_LEN, HEADER_LEN, reason);
        let missing = match (self.expected.get(), start) {
            (Some(expected), Start::At(first)) if first > expected => Some(expected..=first - 1),
            _ => None,
        };
        let damage = strict_or(self.mode, damage)?;
        Ok(Some(Gap { damage, missing }))
    }

    /// Judges sealed file `id` of `kind`, with no gap before it, handing its records over as
    /// they are read.
    fn sealed(&mut self, kind: Kind, id: u64) -> Result<(), Error> {
        let (bytes, len) = self.files.read(kind, id)?;
        self.sealed_bytes(kind, id, None, &bytes, len)
    }

    /// [`sealed`](Self::sealed) for a file already read: `bytes` of `len`, with `gap`.
    fn sealed_bytes(
        &mut self,
        kind: Kind,
        id: u64,
        gap: Option<Gap>,
        bytes: &[u8],
        len: usize,
    ) -> Result<(), Error> {
        let mode = self.mode;
        let (seal, damage) =
            scan_sealed_batches(mode, kind, id, bytes, len, |batch| self.feed(batch))?;
        self.after_file(kind, seal.as_ref(), damage.is_some());
        let ending = damage.map_or(Ending::Clean, Ending::Damaged);
        self.push(gap, ending, seal, Then::Keep);
        Ok(())
    }

    /// Whether a segment after `segments[i]` ends with its seal. Asked with `i` growing: the
    /// first call looks from the last segment back to `i + 1`, and what it finds answers the
    /// later ones.
    fn sealed_later(&mut self, segments: &[u64], i: usize) -> Result<bool, Error> {
        if self.last_sealed.is_none() {
            let mut found = None;
            for j in (i + 1..segments.len()).rev() {
                if self.files.ends_with_seal(segments[j])? {
                    found = Some(j);
                    break;
                }
            }
            self.last_sealed = Some(found);
        }
        Ok(self.last_sealed.flatten().is_some_and(|j| j > i))
    }

    /// How the first of `later` (log segments) that is not [`Start::Empty`] begins; `Empty`
    /// if all are.
    fn next_start(&self, later: &[u64]) -> Result<Start, Error> {
        for &id in later {
            match self.files.start(id)? {
                Start::Empty => {}
                start => return Ok(start),
            }
        }
        Ok(Start::Empty)
    }

    /// Judges `segments[i]`, which is not the last. Returns whether the log ends in it (the
    /// segments after it are then judged cut).
    fn before_last(&mut self, segments: &[u64], i: usize) -> Result<bool, Error> {
        let (id, later) = (segments[i], &segments[i + 1..]);
        let (bytes, len) = self.files.read(Kind::Log, id)?;
        let gap = self.gap(id, &bytes)?;
        if seal_at_file_end(id, &bytes, len).is_some() {
            // Sealed, as a roll leaves every segment it finishes: no verdict below depends on
            // its records, so they are handed over as they are read, not gathered first.
            self.sealed_bytes(Kind::Log, id, gap, &bytes, len)?;
            return Ok(false);
        }
        let scanned = scan_as(Kind::Log, id, &bytes);
        // Seals go on oldest first, each on disk before the next begins
        // (`Rolls::seal_all_then`), so a later segment with a seal says this one had its seal
        // too: without one now, it is damaged, not a roll never sealed, and the later ones
        // stay. A damaged header is damage as in any sealed file; so is a seal followed by
        // bytes, and any file of version 1 (which sealed at the roll).
        let unsealed = match &scanned {
            Ok(s) => s.version >= 2 && s.seal.is_none() && !self.sealed_later(segments, i)?,
            Err(_) => false,
        };
        let s = match scanned {
            Ok(s) if unsealed => s,
            Ok(s) => {
                self.feed(&s.records);
                let damage = damage_in_sealed(Kind::Log, id, &bytes, None, Ok(s.tail))?;
                let damage = damage.map(|d| strict_or(self.mode, d)).transpose()?;
                self.after_file(Kind::Log, s.seal.as_ref(), damage.is_some());
                let ending = damage.map_or(Ending::Clean, Ending::Damaged);
                self.push(gap, ending, s.seal, Then::Keep);
                return Ok(false);
            }
            Err(e) => {
                let damage = damage_in_sealed(Kind::Log, id, &bytes, None, Err(e))?;
                let damage = damage.map(|d| strict_or(self.mode, d)).transpose()?;
                self.after_file(Kind::Log, None, true);
                self.push(
                    gap,
                    damage.map_or(Ending::Clean, Ending::Damaged),
                    None,
                    Then::Keep,
                );
                return Ok(false);
            }
        };
        let mut after = self.expected;
        if let Some(last) = s.records.last() {
            after.after_record(last.seq());
        }
        let (end, torn, invalid) = match s.tail {
            Tail::Clean { end } => (end, None, None),
            // Its own seal, cut short, or damaged in a file cut right after it (`seal_file`
            // cuts a file there only once its records are durable and its seal written): the
            // records before it are durable, and the segment is sealed again as any rolled
            // one never sealed. (A roll never sealed keeps its preallocated length: a torn
            // record of 40 bytes or fewer at its very end is the one other way to end there,
            // and then the next segment does not go on from before it.)
            Tail::Invalid { offset, reason }
                if len - offset == SEAL_LEN
                    || after
                        .get()
                        .is_some_and(|next| is_seal_cut_short(id, next, &bytes[offset..])) =>
            {
                (offset, None, Some(reason))
            }
            // Damage where a crash may have left it.
            Tail::Invalid { offset, reason } => (offset, Some(reason), Some(reason)),
        };
        let next = match torn {
            Some(_) => Start::Empty,
            None => self.next_start(later)?,
        };
        // Where the log ends after what passed for a seal cut short, those bytes are cut off
        // as any torn append's, and said as the scan found them.
        let ends = torn.or((!after.goes_on(next)).then(|| invalid.unwrap_or(NOT_GONE_ON)));
        self.feed(&s.records);
        if let Some(reason) = ends {
            // What follows was never synced (the `log` module doc): it goes, and this segment
            // is the one appends go on in again.
            let dirty_end = dirty_end(&bytes, end);
            let mut cut = (dirty_end - end) as u64;
            for &later in later {
                cut += self.files.written(later)?;
            }
            let torn = TornTail {
                segment: id,
                offset: end as u64,
                bytes: cut,
                reason,
            };
            self.push(
                gap,
                Ending::Torn(torn),
                None,
                Then::Append { end, dirty_end },
            );
            for _ in later {
                self.push(None, Ending::Cut { segment: id }, None, Then::Remove);
            }
            return Ok(true);
        }
        // Not known from what came before: the next segment's first record says it, or with no
        // later record, the next append does (the segments after this one hold none).
        let next_seq = match (after.get(), next) {
            (Some(n), _) | (None, Start::At(n)) => n,
            (None, _) => self.next_seq,
        };
        self.expected = Expected::at(next_seq);
        self.push(gap, Ending::Clean, None, Then::Seal { end, next_seq });
        Ok(false)
    }

    /// Judges the last segment, `id`: sealed (its damage judged as in any sealed file, and
    /// appends go on in a new segment), or the one appends go on in, after a torn append
    /// there is cut off.
    fn last(&mut self, id: u64) -> Result<(), Error> {
        let (bytes, len) = self.files.read(Kind::Log, id)?;
        let gap = self.gap(id, &bytes)?;
        let at_end = seal_at_file_end(id, &bytes, len);
        // Every valid record is handed over as it is read, whatever follows them.
        let ended = match scan_batches(Kind::Log, id, &bytes, |batch| self.feed(batch)) {
            Ok(ended) if ended.seal.is_none() && at_end.is_none() => ended,
            // Sealed (the segment after it is missing), or with a damaged header: records that
            // were durable before the seal was written, judged as in any sealed file, never a
            // torn append to cut off and write over.
            ended => {
                let seal = ended.as_ref().ok().and_then(|e| e.seal).or(at_end);
                let ended = ended.map(|e| e.tail);
                let damage = damage_in_sealed(Kind::Log, id, &bytes, at_end, ended)?;
                let damage = damage.map(|d| strict_or(self.mode, d)).transpose()?;
                self.after_file(Kind::Log, seal.as_ref(), damage.is_some());
                let ending = damage.map_or(Ending::Clean, Ending::Damaged);
                self.push(gap, ending, seal, Then::Keep);
                return Ok(());
            }
        };
        let (end, reason) = match ended.tail {
            Tail::Clean { end } => (end, None),
            Tail::Invalid { offset, reason } => (offset, Some(reason)),
        };
        let dirty_end = dirty_end(&bytes, end);
        let ending = match reason {
            Some(reason) if dirty_end > end => Ending::Torn(TornTail {
                segment: id,
                offset: end as u64,
                bytes: (dirty_end - end) as u64,
                reason,
            }),
            _ => Ending::Clean,
        };
        // Version 1 has no seal (a scan of such a file takes one for damage), and cut each
        // segment at its roll once it was durable: a version 1 file before the last is sealed
        // by that alone. So appends never go on in one (`Then::Finish`).
        let then = if ended.version < crate::format::VERSION {
            Then::Finish { end }
        } else {
            Then::Append { end, dirty_end }
        };
        self.push(gap, ending, None, then);
        Ok(())
    }
}
