//! `larder log verify`: every record's checksum, every file's header and end.

use super::scan::{scan_files, FileSummary, Finding};
use super::{count, open_dir};
use crate::failure::Failure;
use std::path::Path;
use std::process::ExitCode;

/// What a `torn:` line means, said after it.
const TORN_NOTE: &str = "an append the writer did not finish, or records a crash lost before \
     a sync; the next open or `larder log repair` cuts the log there";

/// Runs `larder log verify DIR`: prints the verdict, exits 0 when clean and 1 otherwise.
pub(super) fn run(dir: &Path) -> Result<ExitCode, Failure> {
    let read = open_dir(dir)?;
    let summaries = scan_files(&read, |_, _| {})?;
    let mut damaged = false;
    for finding in summaries.iter().flat_map(FileSummary::findings) {
        damaged = true;
        match finding {
            Finding::Corrupt(place) => outln!("corrupt: {place}"),
            Finding::Torn(place) => outln!("torn: {place} ({TORN_NOTE})"),
            Finding::Cut { place, records } => {
                outln!("cut: {place} (the next open removes it): {records}")
            }
        }
    }
    if damaged {
        return Ok(ExitCode::from(1));
    }
    let records = summaries.iter().map(|s| s.records()).sum();
    outln!(
        "clean: {} in {}",
        count(records, "record", "records"),
        count(summaries.len() as u64, "file", "files")
    );
    Ok(ExitCode::SUCCESS)
}
