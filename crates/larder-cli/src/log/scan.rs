//! One pass over a log's files, read without opening the log: per file, its records by
//! operation and what recovery makes of it. `inspect`, `verify` and `repair` start here.
//!
//! What recovery makes of each file (a gap before it, damage, where the log ends, the
//! segments after that end) is not decided here: [`LogDir::replay`] returns the verdicts
//! `larder_log::Log::open` acts on, decided by the same code.

use super::{failure, file_name};
use crate::failure::Failure;
use crate::progress::Progress;
use larder_log::format::{Kind, Op, Record};
use larder_log::{Damage, Ending, FileVerdict, LogDir, LogFile};

/// What a `corrupt:` or `torn:` line says of `file`: `segment 3 at offset 4096: <reason>`.
fn place(file: &LogFile, offset: u64, reason: &str) -> String {
    format!(
        "{} at offset {offset}: {reason}",
        file_name(file.kind, file.id)
    )
}

/// How a verdict reads, one line per finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Finding {
    /// Damage an open refuses in strict mode (a gap before the file, or damage in a sealed
    /// file): `segment 3 at offset 4096: <reason>`.
    Corrupt(String),
    /// Where the log ends: `segment 3 at offset 4096: <reason>`.
    Torn(String),
    /// A segment after the log's end, which an open removes:
    /// `segment 4: after the log's end in segment 3`.
    Cut(String),
}

/// What one file holds.
#[derive(Debug, Clone)]
pub(super) struct FileSummary {
    pub(super) file: LogFile,
    /// Its records, by operation.
    pub(super) counts: Counts,
    /// What recovery makes of the file.
    pub(super) verdict: FileVerdict,
}

/// A file's records, counted as they are replayed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) puts: u64,
    pub(super) deletes: u64,
    pub(super) clears: u64,
    /// The records' encoded bytes.
    pub(super) bytes: u64,
    /// The lowest and highest sequence numbers, if there is a record.
    pub(super) seqs: Option<(u64, u64)>,
}

impl Counts {
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

impl FileSummary {
    pub(super) fn records(&self) -> u64 {
        self.counts.puts + self.counts.deletes + self.counts.clears
    }

    /// The damage in the file's records (a gap before it is not in them).
    pub(super) fn damage(&self) -> Option<&Damage> {
        match &self.verdict.ending {
            Ending::Damaged(damage) => Some(damage),
            _ => None,
        }
    }

    /// What its verdict says, in order: a gap before it, then how its records end (nothing
    /// for a clean end).
    pub(super) fn findings(&self) -> Vec<Finding> {
        let file = &self.file;
        let mut findings = Vec::new();
        if let Some(gap) = &self.verdict.gap {
            findings.push(Finding::Corrupt(place(file, gap.offset, gap.reason)));
        }
        match &self.verdict.ending {
            Ending::Clean => {}
            Ending::Damaged(d) => findings.push(Finding::Corrupt(place(file, d.offset, d.reason))),
            Ending::Torn(torn) => {
                findings.push(Finding::Torn(place(file, torn.offset, torn.reason)))
            }
            Ending::Cut { segment } => findings.push(Finding::Cut(format!(
                "{}: after the log's end in {}",
                file_name(file.kind, file.id),
                file_name(Kind::Log, *segment)
            ))),
        }
        findings
    }
}

/// Replays every file of `read` as `larder_log::Log::open` would ([`LogDir::replay`]),
/// handing each record that open replays to `visit` (with its file), and sums each file up
/// with its verdict. Shows progress over the files' bytes.
pub(super) fn scan_files(
    read: &LogDir,
    mut visit: impl FnMut(&LogFile, Record<'_>),
) -> Result<Vec<FileSummary>, Failure> {
    let files = read.files();
    let total = files.iter().map(|f| f.len).sum();
    let mut progress = Progress::new(total, "reading the log");
    let mut counts = vec![Counts::default(); files.len()];
    // The file the last record came from: records come file by file, in order.
    let mut at = 0;
    let verdicts = read
        .replay(|file, record| {
            while (files[at].kind, files[at].id) != (file.kind, file.id) {
                progress.advance(files[at].len);
                at += 1;
            }
            counts[at].add(record);
            visit(file, record);
        })
        .map_err(|e| failure(read.dir(), &e))?;
    let summaries = files.iter().zip(counts).zip(verdicts);
    let summaries = summaries.map(|((file, counts), verdict)| FileSummary {
        file: file.clone(),
        counts,
        verdict,
    });
    Ok(summaries.collect())
}
