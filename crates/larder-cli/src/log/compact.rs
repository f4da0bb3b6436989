//! `larder log compact`: the log rewritten as its live records, offline; and the writer's open
//! that it and `repair` share.
//!
//! The writer's open reads the files once before it ([`scan_files`]), as the readers do: an
//! open that ends the log early removes the segments after its end unread, and only a read
//! before it can say what they held ([`Cut`]). It costs a second pass over the log.

use super::scan::{scan_files, Cut, FileSummary};
use super::{bytes, count, failure, file_name, now_ms, open_dir};
use crate::failure::Failure;
use crate::progress::Progress;
use crate::table::{Align, Table};
use larder_log::format::Kind;
use larder_log::{CompactionReport, Error, Log, LogDir, Options, RecoveryMode};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs `larder log compact DIR`.
pub(super) fn run(dir: &Path) -> Result<ExitCode, Failure> {
    let hint = "`larder log repair --skip-corrupt` rewrites the log without the damage";
    let read = open_dir(dir)?;
    let summaries = scan_files(&read, |_, _| {})?;
    let mut opened = open_log(read, &summaries, RecoveryMode::Strict, hint)?;
    opened.report_cleanup();
    let report = compact(dir, &mut opened.log)?;
    out!("{}", compaction_table(&report));
    Ok(ExitCode::SUCCESS)
}

/// A log opened as its owner would, and what the open cleaned up.
pub(super) struct Opened {
    pub(super) log: Log,
    /// The files the open removed: what a compaction or a roll left behind.
    pub(super) removed: Vec<PathBuf>,
    /// How many files (snapshot parts and segments) the log had before the open.
    pub(super) files: usize,
    /// The segments the open removed after the log's end, with what they held.
    pub(super) cut: Option<Cut>,
}

/// Opens the log that `read` (from [`open_dir`], which checked that it is a log directory: a
/// writer's open would create one anywhere) reads for writing, with `mode` for damage.
/// `summaries` are [`scan_files`] of `read`: what the segments after the log's end held, if
/// the open removes them. Corruption that stops the open is reported with `corruption_hint`
/// after it, in parentheses. Shows progress over the replay.
pub(super) fn open_log(
    read: LogDir,
    summaries: &[FileSummary],
    mode: RecoveryMode,
    corruption_hint: &str,
) -> Result<Opened, Failure> {
    let dir = read.dir().to_path_buf();
    let dir = dir.as_path();
    let removed = read.leftovers().to_vec();
    let files = read.files().len();
    let total = read.files().iter().map(|f| f.len).sum();
    // The log's error names a damaged file by its id alone; ids are unique across kinds.
    let kinds: Vec<(u64, Kind)> = read.files().iter().map(|f| (f.id, f.kind)).collect();
    // The shared lock goes before the exclusive one is taken. A process that opens the log in
    // between makes the open below fail as locked.
    drop(read);
    let mut progress = Progress::new(total, "replaying the log");
    let options = Options::default().with_recovery(mode);
    let log =
        Log::open(dir, options, |r| progress.advance(r.len() as u64)).map_err(|e| match e {
            Error::Corruption {
                segment,
                offset,
                reason,
            } => {
                let kind = kinds
                    .iter()
                    .find(|&&(id, _)| id == segment)
                    .map_or(Kind::Log, |&(_, kind)| kind);
                Failure::new(format!(
                    "{}: {} is corrupt at byte {offset}: {reason} ({corruption_hint})",
                    dir.display(),
                    file_name(kind, segment)
                ))
            }
            e => failure(dir, &e),
        })?;
    // An open that skipped damage keeps what a compaction left behind (it may hold what was
    // skipped): only what is gone was removed.
    let removed = removed
        .into_iter()
        .filter(|path| std::fs::symlink_metadata(path).is_err())
        .collect();
    let cut = Cut::of(summaries).filter(|cut| cut.removed_by(&log));
    Ok(Opened {
        log,
        removed,
        files,
        cut,
    })
}

impl Opened {
    /// Prints what the open cleaned up: leftovers removed, a torn append cut off, and the
    /// segments after it.
    pub(super) fn report_cleanup(&self) {
        for path in &self.removed {
            let name = path.file_name().unwrap_or(path.as_os_str());
            outln!(
                "removed {}, left over from an interrupted compaction or roll",
                name.to_string_lossy()
            );
        }
        if let Some(torn) = self.log.torn_tail() {
            outln!(
                "cut off a torn append: {} at offset {}, {} cut ({})",
                file_name(larder_log::format::Kind::Log, torn.segment),
                torn.offset,
                bytes(torn.bytes),
                torn.reason
            );
        }
        if let Some(cut) = &self.cut {
            cut.report();
        }
    }
}

/// Compacts `log` (in `dir`) to its live records as of now, and removes the files it replaces.
pub(super) fn compact(dir: &Path, log: &mut Log) -> Result<CompactionReport, Failure> {
    let fail = |e: Error| failure(dir, &e);
    let done = log.begin_compaction().map_err(fail)?.run(now_ms());
    let done = done.map_err(fail)?;
    let report = done.report();
    let retired = log.install(done).map_err(|e| {
        // The log is failed after a failed install exactly when the switch may have happened
        // (the manifest on disk no longer reads as the old one): say which, since the error
        // alone reads the same either way.
        let outcome = match log.check() {
            Ok(()) => "the log is as it was: the compaction did not take effect",
            Err(_) => {
                "the compaction may have taken effect; either way the next open finds the same \
                 records"
            }
        };
        Failure::new(format!("{}: {e} ({outcome})", dir.display()))
    })?;
    retired.remove().map_err(|e| fail(e.into()))?;
    Ok(report)
}

/// The compaction's figures, before and after.
pub(super) fn compaction_table(report: &CompactionReport) -> String {
    let mut table = Table::new(&[
        ("compacted", Align::Left),
        ("files", Align::Right),
        ("records", Align::Right),
        ("bytes", Align::Right),
    ]);
    table.row([
        "before".to_string(),
        report.files_before.to_string(),
        report.records_before.to_string(),
        bytes(report.bytes_before),
    ]);
    table.row([
        "after".to_string(),
        report.files_after.to_string(),
        report.records_after.to_string(),
        bytes(report.bytes_after),
    ]);
    let saved = report.bytes_before.saturating_sub(report.bytes_after);
    let mut out = table.render();
    out.push_str(&format!(
        "dropped {} of dead records; the live ones are in {}\n",
        bytes(saved),
        count(report.files_after as u64, "snapshot part", "snapshot parts")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_log::format::Op;
    use larder_log::IoCall;
    use larder_testkit::TempDir;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// What `compact` says when the manifest's rename fails: that nothing changed when the
    /// rename was refused, and that the switch may have happened when it was done and then
    /// reported failed (the log's error reads the same in both).
    #[test]
    fn a_failed_switch_says_whether_the_compaction_may_have_taken_effect() {
        for done_anyway in [false, true] {
            let tmp = TempDir::new(&format!("compact-switch-{done_anyway}"));
            let armed = Arc::new(AtomicBool::new(false));
            let options = {
                let (armed, dir) = (Arc::clone(&armed), tmp.0.clone());
                Options::default().with_io_hook(move |call| match call {
                    IoCall::Rename if armed.load(Ordering::SeqCst) => {
                        if done_anyway {
                            let prepared = std::fs::read_dir(&dir)
                                .unwrap()
                                .map(|e| e.unwrap().path())
                                .find(|p| p.extension().is_some_and(|e| e == "tmp"))
                                .expect("a prepared manifest");
                            std::fs::rename(prepared, dir.join("MANIFEST")).unwrap();
                        }
                        Err(std::io::Error::from_raw_os_error(5))
                    }
                    _ => Ok(()),
                })
            };
            let mut log = Log::open(&tmp.0, options, |_| {}).unwrap();
            for k in 0..100u64 {
                let key = (k % 10).to_le_bytes();
                let put = Op::Put {
                    key: &key,
                    value: b"value",
                    expires_at_ms: 0,
                };
                log.append(put).unwrap();
            }
            log.sync().unwrap();
            armed.store(true, Ordering::SeqCst);
            let message = match compact(&tmp.0, &mut log) {
                Ok(_) => panic!("done anyway {done_anyway}: the compaction succeeded"),
                Err(failure) => failure.to_string(),
            };
            let expected = if done_anyway {
                "the compaction may have taken effect"
            } else {
                "the log is as it was"
            };
            assert!(
                message.contains(expected),
                "done anyway {done_anyway}: {message}"
            );
        }
    }
}
