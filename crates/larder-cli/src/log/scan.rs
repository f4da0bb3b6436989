//! One pass over a log's files, read without opening the log: per file, its records by
//! operation and how it ends. `inspect` and `verify` both start here.

use super::{failure, file_name};
use crate::failure::Failure;
use crate::progress::Progress;
use larder_log::format::{rolled_unsealed, scan_as, Kind, Op, Record, Tail};
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
}

impl Ending {
    /// `segment 3 at offset 4096: checksum mismatch`, or `None` for a clean end.
    pub(super) fn describe(&self, file: &LogFile) -> Option<String> {
        let (offset, reason) = match *self {
            Ending::Clean => return None,
            Ending::Torn { offset, reason } | Ending::Corrupt { offset, reason } => {
                (offset, reason)
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
    pub(super) ending: Ending,
    /// A log segment rolled and not yet sealed (format version 2 without a seal): where its
    /// records end, if they end cleanly.
    unsealed_end: Option<u64>,
}

impl FileSummary {
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

/// Scans every file of `read` in replay order, handing each valid record to `visit` (with its
/// file), and sums each file up. Shows progress over the files' bytes.
pub(super) fn scan_files(
    read: &LogDir,
    mut visit: impl FnMut(&LogFile, Record<'_>),
) -> Result<Vec<FileSummary>, Failure> {
    let total = read.files().iter().map(|f| f.len).sum();
    let mut progress = Progress::new(total, "reading the log");
    let mut summaries = Vec::with_capacity(read.files().len());
    for file in read.files() {
        let bytes = read.read(file).map_err(|e| failure(read.dir(), &e))?;
        let mut summary = FileSummary {
            file: file.clone(),
            puts: 0,
            deletes: 0,
            clears: 0,
            bytes: 0,
            seqs: None,
            ending: Ending::Clean,
            unsealed_end: None,
        };
        match scan_as(file.kind, file.id, &bytes) {
            Ok(scan) => {
                // A segment rolled and never sealed ends the log where it stops being whole,
                // as the active one does (`larder_log::log`'s recovery rules).
                let unsealed = rolled_unsealed(file.kind, &scan, &bytes);
                let torn_ends_it = file.role == FileRole::Active || unsealed;
                for record in scan.records {
                    summary.add(record);
                    visit(file, record);
                }
                if let (true, Tail::Clean { end }) = (unsealed, scan.tail) {
                    summary.unsealed_end = Some(end as u64);
                }
                summary.ending = match scan.tail {
                    Tail::Clean { .. } => Ending::Clean,
                    Tail::Invalid { offset, reason } if torn_ends_it => Ending::Torn {
                        offset: offset as u64,
                        reason,
                    },
                    Tail::Invalid { offset, reason } => Ending::Corrupt {
                        offset: offset as u64,
                        reason,
                    },
                };
            }
            // A damaged header: no record of the file can be trusted.
            Err(Error::Corruption { offset, reason, .. }) => {
                summary.ending = Ending::Corrupt { offset, reason };
            }
            Err(e) => return Err(failure(read.dir(), &e)),
        }
        progress.advance(file.len);
        summaries.push(summary);
    }
    mark_broken_sequences(&mut summaries);
    Ok(summaries)
}

/// Marks a rolled, unsealed segment as where the log ends when the next segment with a record
/// does not start where its records stop: the records in between were lost (an OS crash
/// before the sync that would have sealed it), and opening the log cuts it there, as
/// `larder_log::Log::open` does.
fn mark_broken_sequences(summaries: &mut [FileSummary]) {
    for i in 0..summaries.len() {
        let (Some(end), Some((_, last))) = (summaries[i].unsealed_end, summaries[i].seqs) else {
            continue;
        };
        let next_first = summaries[i + 1..]
            .iter()
            .filter(|s| s.file.kind == Kind::Log)
            .find_map(|s| s.seqs.map(|(first, _)| first));
        if next_first.is_some_and(|first| first != last + 1) {
            summaries[i].ending = Ending::Torn {
                offset: end,
                reason: "the next segment does not go on from its last record",
            };
        }
    }
}
