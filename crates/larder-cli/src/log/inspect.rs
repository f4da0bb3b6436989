//! `larder log inspect`: the files, the records by operation, live and dead bytes, the
//! sequence range.
//!
//! **Live bytes** are those of the records a replay keeps: each key's last put, unless a later
//! delete or clear removed it or its deadline has passed. The rest of the records' bytes are
//! dead: what a compaction would drop. Finding the live ones replays the log into a map of
//! each key to its last put, which holds every distinct key once (as a compaction does).

use super::scan::{scan_files, FileSummary, Finding};
use super::{bytes, count, exact_bytes, file_name, now_ms, open_dir};
use crate::failure::Failure;
use crate::table::{Align, Table};
use larder_log::format::Op;
use larder_log::{Ending, FileRole, LogDir};
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

/// Runs `larder log inspect DIR`.
pub(super) fn run(dir: &Path) -> Result<ExitCode, Failure> {
    let read = open_dir(dir)?;
    // Each key's last put: its encoded length and deadline.
    let mut last_put: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    let summaries = scan_files(&read, |_, record| match record.op() {
        Op::Put {
            key, expires_at_ms, ..
        } => {
            last_put.insert(key.to_vec(), (record.len() as u64, expires_at_ms));
        }
        Op::Delete { key } => {
            last_put.remove(key);
        }
        Op::Clear => last_put.clear(),
    })?;
    let now = now_ms();
    let live = last_put
        .values()
        .filter(|&&(_, deadline)| deadline == 0 || deadline > now);
    let (live_keys, live_bytes) = live.fold((0u64, 0u64), |(n, b), &(len, _)| (n + 1, b + len));
    out!("{}", files_table(&summaries));
    outln!();
    out!("{}", totals(&read, &summaries, live_keys, live_bytes));
    Ok(ExitCode::SUCCESS)
}

/// One row per file, in replay order.
fn files_table(summaries: &[FileSummary]) -> String {
    let mut table = Table::new(&[
        ("file", Align::Left),
        ("role", Align::Left),
        ("records", Align::Right),
        ("puts", Align::Right),
        ("deletes", Align::Right),
        ("clears", Align::Right),
        ("bytes", Align::Right),
        ("seqs", Align::Left),
        ("state", Align::Left),
    ]);
    for s in summaries {
        let name = s.file.path.file_name().map_or_else(
            || file_name(s.file.kind, s.file.id),
            |n| n.to_string_lossy().into_owned(),
        );
        // What the file is, as recovery judged it: a segment before the last may be rolled
        // and not yet sealed, and the last may be sealed (the one after it missing).
        let role = match (s.file.role, s.verdict.sealed) {
            (FileRole::Snapshot, _) => "snapshot",
            (FileRole::Sealed | FileRole::Active, true) => "sealed",
            (FileRole::Sealed, false) => "rolled",
            (FileRole::Active, false) => "active",
        };
        let seqs = s
            .counts
            .seqs
            .map_or_else(|| "-".to_string(), |(low, high)| format!("{low}..={high}"));
        // The first finding: a gap before the file, else how its records end.
        let state = match (&s.verdict.gap, &s.verdict.ending) {
            (Some(gap), _) => format!("corrupt at {}", gap.offset),
            (None, Ending::Clean) => "clean".to_string(),
            (None, Ending::Torn(torn)) => format!("torn at {}", torn.offset),
            (None, Ending::Damaged(damage)) => format!("corrupt at {}", damage.offset),
            (None, Ending::Cut { segment }) => format!("cut: the log ends in {segment}"),
        };
        table.row([
            name,
            role.to_string(),
            s.records().to_string(),
            s.counts.puts.to_string(),
            s.counts.deletes.to_string(),
            s.counts.clears.to_string(),
            bytes(s.counts.bytes),
            seqs,
            state,
        ]);
    }
    table.render()
}

/// The log's totals, as `label  value` lines.
fn totals(read: &LogDir, summaries: &[FileSummary], live_keys: u64, live_bytes: u64) -> String {
    let sum = |f: fn(&FileSummary) -> u64| summaries.iter().map(f).sum::<u64>();
    let (records, puts, deletes, clears) = (
        sum(FileSummary::records),
        sum(|s| s.counts.puts),
        sum(|s| s.counts.deletes),
        sum(|s| s.counts.clears),
    );
    let record_bytes = sum(|s| s.counts.bytes);
    let mut table = Table::pairs();
    table.row(["log".to_string(), read.dir().display().to_string()]);
    let compactions = match read.generation() {
        0 => "none".to_string(),
        n => format!("{n} (the snapshot replaces segments up to {})", read.base()),
    };
    table.row(["compactions".to_string(), compactions]);
    table.row([
        "files".to_string(),
        count(summaries.len() as u64, "file", "files"),
    ]);
    table.row([
        "records".to_string(),
        format!("{records}: {puts} puts, {deletes} deletes, {clears} clears"),
    ]);
    table.row([
        "live".to_string(),
        format!(
            "{} in {}",
            exact_bytes(live_bytes),
            count(live_keys, "key", "keys")
        ),
    ]);
    let dead = record_bytes - live_bytes;
    let share = if record_bytes == 0 {
        0.0
    } else {
        100.0 * dead as f64 / record_bytes as f64
    };
    table.row([
        "dead".to_string(),
        format!(
            "{}, {share:.0}% of the records' {}",
            exact_bytes(dead),
            bytes(record_bytes)
        ),
    ]);
    let low = summaries
        .iter()
        .filter_map(|s| s.counts.seqs)
        .map(|s| s.0)
        .min();
    let high = summaries
        .iter()
        .filter_map(|s| s.counts.seqs)
        .map(|s| s.1)
        .max();
    let seqs = match low.zip(high) {
        Some((low, high)) => format!("oldest {low}, newest {high}"),
        None => "none (no records)".to_string(),
    };
    table.row(["sequence".to_string(), seqs]);
    let leftovers = if read.leftovers().is_empty() {
        "none".to_string()
    } else {
        let names: Vec<_> = read
            .leftovers()
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        format!(
            "{} (an open removes them; one that finds damage may keep them)",
            names.join(", ")
        )
    };
    table.row(["leftovers".to_string(), leftovers]);
    if read.failed() {
        table.row([
            "failed".to_string(),
            "the last log here failed to write or sync (or an open of it did); its files were read from the disk, as the next open reads them".to_string(),
        ]);
    }
    for finding in summaries.iter().flat_map(FileSummary::findings) {
        let (what, place) = match finding {
            Finding::Corrupt(place) => ("corrupt", place),
            Finding::Torn(place) => ("torn", place),
            Finding::Cut { place, records } => ("cut", format!("{place}: {records}")),
        };
        table.row([
            "damage".to_string(),
            format!("{what}: {place} (see `larder log repair --help`)"),
        ]);
    }
    table.render()
}
