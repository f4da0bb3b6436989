//! One pass over a log's files, read without opening the log: per file, its records by
//! operation and how it ends. `inspect` and `verify` both start here.

use super::{failure, file_name};
use crate::failure::Failure;
use crate::progress::Progress;
use larder_log::format::{
    is_seal_cut_short, rolled_unsealed, scan_as, seal_at_end, segment_start, Expected, Kind, Op,
    Record, Start, Tail, HEADER_LEN, SEAL_LEN,
};
use larder_log::{Error, FileRole, LogDir, LogFile};

/// How a file's records end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// At a clean end: the end of the file, or zeros to its end.
    Clean,
    /// Where the log ends before the file does, in the active segment or in one rolled and
    /// not yet sealed: at bytes that do not check out (an append the writer did not finish, or
    /// pages an OS crash lost), or after a rolled segment's last record when the next segment
    /// does not go on from it. The next open cuts the log there.
    Torn { offset: u64, reason: &'static str },
    /// At bytes that do not check out in a sealed file (a snapshot part, or a segment before
    /// the last), or at a damaged header in any file: the log does not open in strict mode.
    Corrupt { offset: u64, reason: &'static str },
    /// Not read: a log segment after the one the log ends in (`segment`), which the next open
    /// removes, records and all.
    Cut { segment: u64 },
}

impl Ending {
    /// `segment 3 at offset 4096: checksum mismatch`, or `None` for a clean end.
    pub(super) fn describe(&self, file: &LogFile) -> Option<String> {
        let (offset, reason) = match *self {
            Ending::Clean => return None,
            Ending::Torn { offset, reason } | Ending::Corrupt { offset, reason } => {
                (offset, reason)
            }
            Ending::Cut { segment } => {
                return Some(format!(
                    "{}: after the log's end in {}",
                    file_name(file.kind, file.id),
                    file_name(Kind::Log, segment)
                ))
            }
        };
        Some(format!(
            "{} at offset {offset}: {reason}",
            file_name(file.kind, file.id)
        ))
    }
}

/// What one file holds.
#[derive(Debug, Clone)]
pub(super) struct FileSummary {
    pub(super) file: LogFile,
    pub(super) puts: u64,
    pub(super) deletes: u64,
    pub(super) clears: u64,
    /// The records' encoded bytes.
    pub(super) bytes: u64,
    /// The lowest and highest sequence numbers, if there is a record.
    pub(super) seqs: Option<(u64, u64)>,
    /// What the log segment's seal, if whole, says comes after its records (damaged records
    /// in between or not).
    pub(super) seal_next: Option<u64>,
    pub(super) ending: Ending,
}

impl FileSummary {
    fn new(file: &LogFile) -> Self {
        FileSummary {
            file: file.clone(),
            puts: 0,
            deletes: 0,
            clears: 0,
            bytes: 0,
            seqs: None,
            seal_next: None,
            ending: Ending::Clean,
        }
    }

    pub(super) fn records(&self) -> u64 {
        self.puts + self.deletes + self.clears
    }

    fn add(&mut self, record: Record<'_>) {
        match record.op() {
            Op::Put { .. } => self.puts += 1,
            Op::Delete { .. } => self.deletes += 1,
            Op::Clear => self.clears += 1,
        }
        self.bytes += record.len() as u64;
        let seq = record.seq();
        self.seqs = Some(match self.seqs {
            None => (seq, seq),
            Some((low, high)) => (low.min(seq), high.max(seq)),
        });
    }
}

/// Scans every file of `read` in replay order, handing each record an open would replay to
/// `visit` (with its file), and sums each file up. Shows progress over the files' bytes.
///
/// Where the log ends is decided as `larder_log::Log::open` decides it, with the same rule
/// ([`Expected`]): at a torn append in the active segment or in a segment rolled and never
/// sealed, or after such a segment's last record when the next segment with a record does not
/// go on from it. The log segments after that end are [`Ending::Cut`]: an open removes them, so
/// their records are neither visited nor counted.
pub(super) fn scan_files(
    read: &LogDir,
    mut visit: impl FnMut(&LogFile, Record<'_>),
) -> Result<Vec<FileSummary>, Failure> {
    let total = read.files().iter().map(|f| f.len).sum();
    let mut progress = Progress::new(total, "reading the log");
    let has_snapshot = read.files().iter().any(|f| f.kind == Kind::Snapshot);
    let mut expected = Expected::at_start(read.base(), has_snapshot);
    // The first of the rolled, unsealed segments whose records end cleanly and that wait for
    // the next segment's start to say whether the log goes on past them: (summary index,
    // where its records end, what should follow). Those after it hold no record (a record
    // would have been a start), so they expect the same and share its verdict.
    let mut waiting: Option<(usize, u64, Expected)> = None;
    // The segment the log ends in, once known.
    let mut ended_in: Option<u64> = None;
    // Per file, whether a log segment after it ends with its seal: seals are written oldest
    // first, so then a segment without one had its seal damaged and was not a roll never
    // sealed (as `Log::open` judges it).
    let mut sealed_later = vec![false; read.files().len()];
    let mut any = false;
    for (i, file) in read.files().iter().enumerate().rev() {
        sealed_later[i] = any;
        if file.kind == Kind::Log && !any {
            any = read
                .ends_with_seal(file)
                .map_err(|e| failure(read.dir(), &e))?;
        }
    }
    let mut summaries: Vec<FileSummary> = Vec::with_capacity(read.files().len());
    for (index, file) in read.files().iter().enumerate() {
        let mut summary = FileSummary::new(file);
        if let (Some(segment), Kind::Log) = (ended_in, file.kind) {
            summary.ending = Ending::Cut { segment };
            progress.advance(file.len);
            summaries.push(summary);
            continue;
        }
        let bytes = read.read(file).map_err(|e| failure(read.dir(), &e))?;
        if let (Kind::Log, Some((i, end, after))) = (file.kind, waiting) {
            let start = segment_start(file.id, &bytes);
            if start != Start::Empty {
                waiting = None;
                if !after.goes_on(start) {
                    summaries[i].ending = Ending::Torn {
                        offset: end,
                        reason: "the next segment does not go on from its last record",
                    };
                    ended_in = Some(summaries[i].file.id);
                }
                if let Some(segment) = ended_in {
                    summary.ending = Ending::Cut { segment };
                    progress.advance(file.len);
                    summaries.push(summary);
                    continue;
                }
            }
        }
        // A log segment must begin where the files before it ended: otherwise one between them
        // is missing, and an open refuses the log there (or reports it, skipping damage).
        let gap = match file.kind {
            Kind::Log => expected.missing_before(segment_start(file.id, &bytes)),
            Kind::Snapshot => None,
        };
        match scan_as(file.kind, file.id, &bytes) {
            Ok(scan) => {
                // A segment rolled and never sealed ends the log where it stops being whole,
                // as the active one does.
                let unsealed = rolled_unsealed(file.kind, &scan, &bytes) && !sealed_later[index];
                // A last segment that ends with its seal is a sealed file (the one after it is
                // missing): its damage is corruption, as `Log::open` judges it.
                let active =
                    file.role == FileRole::Active && seal_at_end(file.id, &bytes).is_none();
                let torn_ends_it = active || unsealed;
                for record in scan.records {
                    summary.add(record);
                    expected.after_record(record.seq());
                    visit(file, record);
                }
                // The seal a scan stopped by damage did not reach still says what comes next.
                let seal = scan.seal.or_else(|| seal_at_end(file.id, &bytes));
                summary.seal_next = seal.as_ref().map(|seal| seal.next_seq);
                expected.after_file(file.kind, seal.as_ref());
                // A rolled segment's own seal, cut short, or damaged in a file cut right
                // after it, ends its records cleanly, as `Log::open` judges it.
                let tail = match scan.tail {
                    Tail::Invalid { offset, .. }
                        if unsealed
                            && (file.len == (offset + SEAL_LEN) as u64
                                || expected.get().is_some_and(|next| {
                                    is_seal_cut_short(file.id, next, &bytes[offset..])
                                })) =>
                    {
                        Tail::Clean { end: offset }
                    }
                    tail => tail,
                };
                summary.ending = match tail {
                    Tail::Clean { end } => {
                        if unsealed && waiting.is_none() {
                            waiting = Some((summaries.len(), end as u64, expected));
                        }
                        Ending::Clean
                    }
                    Tail::Invalid { offset, reason } if torn_ends_it => {
                        ended_in = Some(file.id);
                        Ending::Torn {
                            offset: offset as u64,
                            reason,
                        }
                    }
                    Tail::Invalid { offset, reason } => {
                        // The records the damage skipped had numbers; without a seal, how
                        // many is not known (as `Log::open` judges it).
                        if seal.is_none() {
                            expected = Expected::unknown();
                        }
                        Ending::Corrupt {
                            offset: offset as u64,
                            reason,
                        }
                    }
                };
            }
            // A damaged header: no record of the file can be trusted.
            Err(Error::Corruption { offset, reason, .. }) => {
                // Its seal, if whole, still says what comes next; without one, that is not
                // known (as `Log::open` judges it).
                match seal_at_end(file.id, &bytes) {
                    Some(seal) => {
                        summary.seal_next = Some(seal.next_seq);
                        expected.after_file(file.kind, Some(&seal));
                    }
                    None => expected = Expected::unknown(),
                }
                summary.ending = Ending::Corrupt { offset, reason };
            }
            Err(e) => return Err(failure(read.dir(), &e)),
        }
        if let Some(reason) = gap {
            summary.ending = Ending::Corrupt {
                offset: HEADER_LEN as u64,
                reason,
            };
        }
        progress.advance(file.len);
        summaries.push(summary);
    }
    Ok(summaries)
}
