//! One pass over a log's files, read without opening the log: per file, its records by
//! operation and what recovery makes of it. Every `larder log` subcommand starts here: the
//! readers to say what an open would do, the writers (whose open removes the segments after
//! the log's end unread) to say what it did.
//!
//! What recovery makes of each file (a gap before it, damage, where the log ends, the
//! segments after that end) is not decided here: [`LogDir::replay`] returns the verdicts
//! `larder_log::Log::open` acts on, decided by the same code.
//!
//! **What goes after the log's end.** Where the log ends in a segment rolled and never sealed
//! (records an OS crash lost before a sync, or a segment after it missing), an open removes
//! every later segment, records and all: nothing in them was ever synced, and the replay does
//! not read them. The pass reads them too, to count what they hold ([`FileSummary::cut`]),
//! so that a reader can say what the next open drops and a writer what its open dropped
//! ([`Cut`]). Once the open has run, the files are gone and nothing can count them.

use super::{count, failure, file_name};
use crate::failure::Failure;
use crate::progress::Progress;
use larder_log::format::{scan_as, Kind, Op, Record};
use larder_log::{Damage, Ending, FileVerdict, Log, LogDir, LogFile};

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
    /// A segment after the log's end, which an open removes, and the records in it:
    /// `segment 4: after the log's end in segment 3` and `42 records (seqs 126..=167)`.
    Cut { place: String, records: String },
}

/// What one file holds.
#[derive(Debug, Clone)]
pub(super) struct FileSummary {
    pub(super) file: LogFile,
    /// Its records, by operation.
    pub(super) counts: Counts,
    /// What recovery makes of the file.
    pub(super) verdict: FileVerdict,
    /// For a segment after the log's end ([`Ending::Cut`]), which the replay does not read:
    /// its records as a scan of it finds them, up to any damage (its pages may not all have
    /// reached the disk), or why it could not be read. An open removes them unread (it needs
    /// no read of the file for that), so a file that does not read is no reason to fail.
    pub(super) cut: Option<Result<Counts, String>>,
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
    /// The records, as the subcommands name what an open removes: `42 records (seqs
    /// 84..=125)`, `no record`.
    pub(super) fn described(&self) -> String {
        let records = self.puts + self.deletes + self.clears;
        match self.seqs {
            Some((low, high)) => format!(
                "{} (seqs {low}..={high})",
                count(records, "record", "records")
            ),
            None => "no record".to_string(),
        }
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
            Ending::Cut { segment } => findings.push(Finding::Cut {
                place: format!(
                    "{}: after the log's end in {}",
                    file_name(file.kind, file.id),
                    file_name(Kind::Log, *segment)
                ),
                records: self.cut_records(),
            }),
        }
        findings
    }

    /// The records of a segment after the log's end, as the subcommands name them: `42
    /// records (seqs 126..=167)`, up to any damage (within a segment the numbers go one by one,
    /// so the count and the range agree), or `its records not counted (<error>)`.
    fn cut_records(&self) -> String {
        match &self.cut {
            Some(Err(e)) => format!("its records not counted ({e})"),
            Some(Ok(counts)) => counts.described(),
            None => Counts::default().described(),
        }
    }
}

/// Replays every file of `read` as `larder_log::Log::open` would ([`LogDir::replay`]),
/// handing each record that open replays to `visit` (with its file), and sums each file up
/// with its verdict; then counts the records of the segments after the log's end, which that
/// open removes unread. Shows progress over the files' bytes.
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
    let mut summaries = Vec::with_capacity(files.len());
    for ((file, counts), verdict) in files.iter().zip(counts).zip(verdicts) {
        let cut = match verdict.ending {
            Ending::Cut { .. } => Some(count_unread(read, file)),
            _ => None,
        };
        summaries.push(FileSummary {
            file: file.clone(),
            counts,
            verdict,
            cut,
        });
    }
    Ok(summaries)
}

/// The records of `file`, a segment the replay did not read, up to the first that does not
/// check out; or why it could not be read.
fn count_unread(read: &LogDir, file: &LogFile) -> Result<Counts, String> {
    let bytes = read.read(file).map_err(|e| e.to_string())?;
    let mut counts = Counts::default();
    // A header that does not check out holds no record to count.
    if let Ok(scan) = scan_as(file.kind, file.id, &bytes) {
        for &record in &scan.records {
            counts.add(record);
        }
    }
    Ok(counts)
}

/// The log segments an open removes after the log's end ([`Ending::Cut`]), as the files said
/// before it, with the records they held. One mechanism for every writer (`compact`,
/// `repair`): whatever else it does, its open may end the log early.
///
/// The records are said segment by segment: a count stops at damage in its segment and a
/// segment may not read at all, so one count with one range over them all would cover numbers
/// that no count did.
#[derive(Debug)]
pub(super) struct Cut {
    /// The segment the log ends in.
    ends_in: u64,
    /// The segments, each with its records as [`FileSummary::cut_records`] says them.
    files: Vec<(LogFile, String)>,
}

impl Cut {
    /// The segments that `summaries` say an open removes after the log's end, if any.
    pub(super) fn of(summaries: &[FileSummary]) -> Option<Cut> {
        let mut cut: Option<Cut> = None;
        for s in summaries {
            let Ending::Cut { segment } = s.verdict.ending else {
                continue;
            };
            let cut = cut.get_or_insert_with(|| Cut {
                ends_in: segment,
                files: Vec::new(),
            });
            cut.files.push((s.file.clone(), s.cut_records()));
        }
        cut
    }

    /// Whether the open of `log` ended it where the files said, and removed these segments.
    /// (A process that changed the directory between the read and the open could make it
    /// otherwise; then nothing is claimed.)
    pub(super) fn removed_by(&self, log: &Log) -> bool {
        log.torn_tail().is_some_and(|t| t.segment == self.ends_in)
            && self
                .files
                .iter()
                .all(|(f, _)| std::fs::symlink_metadata(&f.path).is_err())
    }

    /// `removed, after the log's end in segment 1: segment 3 with 42 records (seqs 84..=125),
    /// segment 4 with its records not counted (<error>)`.
    pub(super) fn report(&self) {
        let segments: Vec<String> = self
            .files
            .iter()
            .map(|(f, records)| format!("{} with {records}", file_name(f.kind, f.id)))
            .collect();
        outln!(
            "removed, after the log's end in {}: {}",
            file_name(Kind::Log, self.ends_in),
            segments.join(", ")
        );
    }
}
