//! `larder log repair`: a torn tail cut off, leftovers removed, and with `--skip-corrupt`, the
//! log rewritten without its damaged records, and past the segments missing from it.
//!
//! Both are what the log's own open does ([`RecoveryMode`]): a strict open cuts off a torn
//! last append and removes what a compaction left behind; an open that skips corruption also
//! replays each damaged file up to its damage. A compaction then writes what that open
//! replayed as a fresh snapshot and removes the damaged files, so the log opens cleanly in
//! strict mode from then on.
//!
//! **What was dropped.** The bytes after damage cannot be parsed, so their records cannot be
//! counted directly. But a log segment's records are numbered one by one, and the next
//! segment's numbers carry on from them: the gap between the last good record before the
//! damage and the first record after it is exactly what was lost. The file's own seal, when
//! whole, names that first record after it; without a seal, the next segment's first record
//! does. If segments are missing between the two, that count holds their records too, and
//! nothing in the files says which were whose: the line names them with it (`dropped segment
//! 2 ... : 38 B, with segment 3, missing: 42 records (seqs 84..=125)`). The open reports no
//! gap there: past damage with no seal, the number to follow on is not known. (A snapshot
//! part's numbers have gaps of their own, where compaction dropped records, so no such count
//! is given for one.) The repair reads the files once before opening the log to find these
//! gaps.
//!
//! **What was missing.** A segment gone from the middle of the log (a partial copy or
//! restore, a stray removal) shows as the next segment's first record numbered past where the
//! file before it ended. Nothing of that next segment is dropped: the open replays on, and the
//! records lost are the ones numbered in between, which the log's own verdict names
//! ([`FileVerdict::missing`](larder_log::FileVerdict::missing)). The open reports such a gap
//! as damage at the end of the segment's header that skips no byte; it is said as what it is.
//!
//! **What went after the log's end.** Where an open ends the log in a segment rolled and
//! never sealed (records an OS crash lost before a sync, or a segment after it missing), it
//! removes the segments after that one unread, records and all: nothing in them was ever
//! synced. The read before the open names them and counts their records, as for every writer
//! ([`Cut`](super::scan::Cut)).
//!
//! **What it refuses.** A damaged snapshot part while the segments it replaced are still in
//! the directory (a compaction stopped between its switch and its clean-up): those segments
//! may be the one copy of the part's records, and the repair's own compaction would leave
//! them for the next open to remove. Nothing is changed then.

use super::compact::{compact, compaction_table, open_log};
use super::scan::{scan_files, FileSummary};
use super::{bytes, count, file_name, open_dir};
use crate::failure::Failure;
use larder_log::format::Kind;
use larder_log::{Damage, RecoveryMode};
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::ExitCode;

/// Runs `larder log repair DIR [--skip-corrupt]`.
pub(super) fn run(dir: &Path, skip_corrupt: bool) -> Result<ExitCode, Failure> {
    let read = open_dir(dir)?;
    let summaries = scan_files(&read, |_, _| {})?;
    let (mode, lost, gaps) = if skip_corrupt {
        refuse_to_drop_the_backing_of_a_damaged_snapshot(
            dir,
            &summaries,
            read.leftovers(),
            read.base(),
        )?;
        // Each gap, with the records it lost where the files tell.
        let gaps: Vec<(Damage, Option<RangeInclusive<u64>>)> = summaries
            .iter()
            .filter_map(|s| Some((s.verdict.gap.clone()?, s.verdict.missing.clone())))
            .collect();
        (RecoveryMode::SkipCorrupt, lost_seqs(&summaries), gaps)
    } else {
        (RecoveryMode::Strict, HashMap::new(), Vec::new())
    };
    let hint = "rerun with --skip-corrupt to rewrite the log without the damaged records";
    let mut opened = open_log(read, &summaries, mode, hint)?;
    opened.report_cleanup();
    let damage = opened.log.damage().to_vec();
    for d in &damage {
        // A gap the files showed before the open, reported by it the same way.
        if let Some((_, missing)) = gaps.iter().find(|(gap, _)| gap == d) {
            let records = missing
                .as_ref()
                .map_or(String::new(), |m| format!(": {}", seqs(m)));
            outln!(
                "missing before {} ({}){records}",
                file_name(d.kind, d.segment),
                d.reason
            );
            continue;
        }
        let records = match lost.get(&(d.kind, d.segment)) {
            Some(lost) if lost.with_missing.is_empty() => format!(", {}", seqs(&lost.seqs)),
            Some(lost) => {
                let missing: Vec<String> = lost.with_missing.iter().map(segments).collect();
                format!(
                    ", with {}, missing: {}",
                    missing.join(" and "),
                    seqs(&lost.seqs)
                )
            }
            None => String::new(),
        };
        outln!(
            "dropped {} from offset {} to its end ({}): {}{records}",
            file_name(d.kind, d.segment),
            d.offset,
            d.reason,
            bytes(d.bytes_skipped),
        );
    }
    if !damage.is_empty() {
        let report = compact(dir, &mut opened.log)?;
        outln!("rewrote the log from the records kept:");
        out!("{}", compaction_table(&report));
        return Ok(ExitCode::SUCCESS);
    }
    if opened.removed.is_empty() && opened.log.torn_tail().is_none() {
        outln!(
            "nothing to repair: {} in {}",
            count(opened.log.usage().records, "record", "records"),
            count(opened.files as u64, "file", "files")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The records numbered `range`, as a repair reports them lost: `42 records (seqs 42..=83)`.
fn seqs(range: &RangeInclusive<u64>) -> String {
    let n = range.end() - range.start() + 1;
    let (low, high) = (range.start(), range.end());
    format!("{} (seqs {low}..={high})", count(n, "record", "records"))
}

/// The log segments numbered `ids`, as a repair names them missing: `segment 3`, `segments 3
/// to 5`.
fn segments(ids: &RangeInclusive<u64>) -> String {
    if ids.start() == ids.end() {
        file_name(Kind::Log, *ids.start())
    } else {
        format!("segments {} to {}", ids.start(), ids.end())
    }
}

/// Refuses, before anything changes, a repair that would drop a damaged snapshot part's
/// records while files a compaction left behind are still there: the segments that snapshot
/// replaced may be the one copy of those records, and the compaction that ends a repair makes
/// them leftovers of the next one, which the next open removes.
fn refuse_to_drop_the_backing_of_a_damaged_snapshot(
    dir: &Path,
    summaries: &[FileSummary],
    leftovers: &[std::path::PathBuf],
    base: u64,
) -> Result<(), Failure> {
    let damaged_part = summaries
        .iter()
        .find(|s| s.file.kind == Kind::Snapshot && s.damage().is_some());
    let left_behind: Vec<String> = leftovers
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "seg" || e == "snap"))
        // A segment after the base is no compaction's: a roll that crashed before its header,
        // zeros that hold no record (and that the repair's open removes, damage or not).
        .filter(|path| {
            let id = path
                .file_stem()
                .and_then(|s| s.to_str()?.parse::<u64>().ok());
            path.extension().is_some_and(|e| e == "snap") || id.is_some_and(|id| id <= base)
        })
        .filter_map(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    match damaged_part {
        Some(part) if !left_behind.is_empty() => Err(Failure::new(format!(
            "{}: {} is damaged, and {} left behind by a compaction may hold the records it \
             lost; a repair would drop them, so nothing was changed (keep a copy of the \
             directory before anything else)",
            dir.display(),
            file_name(part.file.kind, part.file.id),
            left_behind.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// What a damaged log segment lost, where the files tell: the records' numbers, and the
/// segments missing beside it whose records are among them (a count up to a neighbour past
/// one cannot say which were whose).
struct Lost {
    seqs: RangeInclusive<u64>,
    /// The ids of the segments missing on either side, the one before first.
    with_missing: Vec<RangeInclusive<u64>>,
}

/// The sequence numbers each damaged log segment lost, where the files tell (see the module
/// doc): from after its last good record (or, with none, after where the segment before it
/// ended) to before what its own seal names next (or, without one, before the next segment's
/// first record). A neighbour past segments missing between the two bounds the count too,
/// and the missing segments' records are among it: they are named with it
/// ([`Lost::with_missing`]), as the open's verdict names no gap there (past damage with no
/// seal, the number to follow on is not known). A neighbour past a file that is there (ids
/// are taken in order by log segments and a compaction's snapshot parts alike, so a part may
/// sit between two segments that follow) bounds nothing if an id is missing too.
fn lost_seqs(summaries: &[FileSummary]) -> HashMap<(Kind, u64), Lost> {
    let segments: Vec<&FileSummary> = summaries
        .iter()
        .filter(|s| s.file.kind == Kind::Log) // a snapshot part's seqs have gaps: no bound
        .collect();
    // The ids missing between two segments (none: an empty range), if each id between is
    // either missing or a file's. Counted, not looked up id by id: a file's id is its name's
    // number, and two names far apart would take that long.
    let missing_between = |before: &FileSummary, after: &FileSummary| {
        let (low, high) = (before.file.id, after.file.id);
        let between = summaries
            .iter()
            .filter(|f| low < f.file.id && f.file.id < high)
            .count() as u64;
        match high.checked_sub(low + 1) {
            Some(ids) if ids == between => Some(low + 1..=low),
            Some(_) if between == 0 => Some(low + 1..=high - 1),
            _ => None,
        }
    };
    // The seq after everything segment `s` held, damaged records included, where known.
    let end_of = |s: &FileSummary| match s.damage() {
        Some(_) => s.verdict.seal_next,
        None => s
            .verdict
            .seal_next
            .or(s.counts.seqs.map(|(_, high)| high + 1)),
    };
    let mut lost = HashMap::new();
    for (i, s) in segments.iter().enumerate() {
        if s.damage().is_none() {
            continue;
        }
        let mut with_missing = Vec::new();
        let mut missing = |ids: RangeInclusive<u64>| {
            if !ids.is_empty() {
                with_missing.push(ids);
            }
        };
        // A gap the open reports (before this segment, or the next) is said as its own; no
        // count crosses it.
        let low = match s.counts.seqs {
            Some((_, high)) => Some(high + 1),
            None => i
                .checked_sub(1)
                .map(|before| segments[before])
                .filter(|_| s.verdict.gap.is_none())
                .and_then(|before| Some((before, missing_between(before, s)?)))
                .and_then(|(before, ids)| Some((end_of(before)?, ids)))
                .map(|(low, ids)| {
                    missing(ids);
                    low
                }),
        };
        let high = match s.verdict.seal_next {
            Some(next) => Some(next),
            None => segments
                .get(i + 1)
                .filter(|after| after.verdict.gap.is_none())
                .and_then(|after| Some((after, missing_between(s, after)?)))
                .and_then(|(after, ids)| Some((after.counts.seqs?.0, ids)))
                .map(|(next, ids)| {
                    missing(ids);
                    next
                }),
        };
        if let (Some(low), Some(next)) = (low, high) {
            if next > low {
                let seqs = low..=next - 1;
                lost.insert((s.file.kind, s.file.id), Lost { seqs, with_missing });
            }
        }
    }
    lost
}
