//! `larder log`: look after a durable cache's log directory from outside the process that owns
//! it.
//!
//! | subcommand | reads or writes                   | the directory's lock        |
//! |------------|-----------------------------------|-----------------------------|
//! | `inspect`  | reads the files ([`LogDir`])      | shared: beside other readers |
//! | `verify`   | reads the files ([`LogDir`])      | shared: beside other readers |
//! | `compact`  | opens the log ([`Log::open`])     | exclusive                   |
//! | `repair`   | opens the log, may compact it     | exclusive                   |
//!
//! Every lock is the one a live [`Log`] holds for its lifetime, so none of these runs beside a
//! process that has the log open: each fails at once with the log's own `Locked` error, on one
//! line, and a process that tries to open the log while one of them runs is refused the same
//! way. The readers change none of the log's files (they create the empty `LOCK` file, to
//! lock it, in a directory of log files that has none); what a writer's open would clean up
//! (leftovers, a torn tail, the segments after the log's end with the records in them) they
//! report, and the writers say what their open did clean up, from the same read of the files
//! before it (`scan.rs`).
//!
//! Every subcommand first refuses, changing nothing, what it should not take for a log it can
//! look after: a directory that is not one ([`open_dir`]), and a log a newer Larder wrote,
//! which the log's reader refuses itself (`larder_log::Error::NewerFormat`, from
//! [`LogDir::open`] as from [`Log::open`], in either recovery mode).

mod compact;
mod inspect;
mod repair;
mod scan;
mod verify;

use crate::failure::Failure;
use larder_log::format::Kind;
use larder_log::{Error, LogDir};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(doc)]
use larder_log::Log;

/// The subcommands of `larder log`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show a log's files, its records by operation, its live and dead bytes, and its oldest
    /// and newest sequence numbers.
    ///
    /// Each file's role is what recovery makes of it: `snapshot` (a compaction's output),
    /// `sealed` (never written again), `rolled` (full, not yet sealed: the next sync seals
    /// it) or `active` (the last segment, which appends go on in).
    ///
    /// Reads the files without changing them (it creates an empty `LOCK` file if there is
    /// none), under a shared lock on the directory: it
    /// runs beside another `inspect` or `verify`, but not beside a process that has the log
    /// open (that fails as "open elsewhere"), and such a process cannot open the log while it
    /// runs. Damage is shown, not fixed (see `verify` and `repair`); the live bytes count only
    /// the records before it. A segment after where the log ends shows no record: an open
    /// removes it unread; its `cut:` line counts the records it holds.
    Inspect(DirArg),
    /// Check every record's checksum, and every file's header and end.
    ///
    /// Prints `clean: N records in M files` and exits 0, or prints a line per damaged file,
    /// the first damage first, and exits 1: `corrupt: segment 3 at offset 4096: <reason>` for
    /// damage in a sealed file, `torn: ...` for an append the last segment's writer did not
    /// finish (which the next open, or `repair`, cuts off), and where the log ends before a
    /// segment that does not go on from it, a line for each segment after it, which the next
    /// open removes, records and all: `cut: segment 4: after the log's end in segment 3 (the
    /// next open removes it): 42 records (seqs 126..=167)`. Reads the files without changing
    /// them, under the same shared lock as `inspect`.
    Verify(DirArg),
    /// Rewrite the log as its live records alone, offline.
    ///
    /// Opens the log as its owner would, taking the directory's exclusive lock, so it fails
    /// ("open elsewhere") if a process has the log open. Refuses a corrupt log (see `repair`).
    /// Like any open, it cuts off a torn last append, with the segments after it if the log
    /// ends before them (records an OS crash left unsynced), and removes what an earlier
    /// compaction left behind, and says so: `removed, after the log's end in segment 1: segment
    /// 3 with 42 records (seqs 84..=125), segment 4 with 42 records (seqs 126..=167)`, each
    /// segment's count up to any damage in it. It reads the files once before the open, to
    /// count those records.
    Compact(DirArg),
    /// Make a damaged log open cleanly again, and report what that dropped.
    ///
    /// Without `--skip-corrupt`, it cuts off a torn last append (the open does that), with
    /// the segments after it if the log ends before them (records an OS crash left
    /// unsynced: it names them and counts their records), removes what an interrupted
    /// compaction left behind, and fails on damage anywhere else.
    /// With it, it also rewrites the log without every damaged file's records from its first
    /// bad byte on, and past a segment missing from the log's middle, and prints a line for
    /// each: `dropped segment 2 from offset 120 to its end (<reason>): 3.8 KiB, 41 records
    /// (seqs 43..=83)`, `missing before segment 3 (<reason>): 42 records (seqs 42..=83)`.
    /// The records are counted where the files' sequence numbers tell (a snapshot part's do
    /// not); a count that runs past a damaged segment into missing ones names them with it
    /// (`..., with segment 3, missing: 42 records (seqs 84..=125)`). Takes the directory's exclusive lock, and reads the files before its open, as
    /// `compact` does.
    Repair(RepairArgs),
}

/// The log's directory.
#[derive(Debug, clap::Args)]
pub struct DirArg {
    /// The log's directory: the one given to the durable cache's `.durable(dir)`.
    pub dir: PathBuf,
}

/// The arguments of `larder log repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The log's directory: the one given to the durable cache's `.durable(dir)`.
    pub dir: PathBuf,
    /// Rewrite the log without its damaged records: each damaged file's records from the
    /// first bad byte to its end are dropped (a record has no marker to find again after
    /// damage), and a segment missing from the log's middle is gone with its records. An
    /// entry whose delete was among them comes back with its older value.
    #[arg(long)]
    pub skip_corrupt: bool,
}

/// Runs a `larder log` subcommand.
pub fn run(command: &Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Inspect(args) => inspect::run(&args.dir),
        Command::Verify(args) => verify::run(&args.dir),
        Command::Compact(args) => compact::run(&args.dir),
        Command::Repair(args) => repair::run(&args.dir, args.skip_corrupt),
    }
}

/// Reads the log in `dir` (see [`LogDir`]), after checking that `dir` is a directory, so that
/// a mistyped path is reported as such (a writer's [`Log::open`] would create it).
///
/// It refuses, too, a directory with a `LOCK` file and nothing else of a log, which
/// [`LogDir`] reads as an empty one (another program's: LevelDB and RocksDB keep a `LOCK`), and
/// in which a writer's open would create a log. A log with a file a newer Larder wrote,
/// [`LogDir::open`] refuses itself, as a writer's open does.
fn open_dir(dir: &Path) -> Result<LogDir, Failure> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(Failure::new(format!("{}: not a directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::new(format!(
                "{}: no such directory",
                dir.display()
            )))
        }
        Err(e) => return Err(Failure::new(format!("{}: {e}", dir.display()))),
    }
    let read = LogDir::open(dir).map_err(|e| failure(dir, &e))?;
    // No file of the log, nothing an open would remove, and no manifest (which names at least
    // one snapshot part): the `LOCK` file alone made it a log.
    if read.files().is_empty() && read.leftovers().is_empty() && read.generation() == 0 {
        return Err(Failure::new(format!(
            "{} is not a Larder log: it has a LOCK file but no MANIFEST, segment or snapshot \
             file",
            dir.display()
        )));
    }
    Ok(read)
}

/// `e`, which the log in `dir` returned, as a one-line failure that names the directory.
fn failure(dir: &Path, e: &Error) -> Failure {
    match e {
        // These name it already: `Path` the directory or its `LOCK` file, which is in it,
        // `NewerFormat` a file in it.
        Error::Locked { .. }
        | Error::NotALog { .. }
        | Error::Path { .. }
        | Error::NewerFormat { .. } => Failure::new(e),
        _ => Failure::new(format!("{}: {e}", dir.display())),
    }
}

/// A file of the log as a person would name it: `segment 3`, `snapshot part 4`.
fn file_name(kind: Kind, id: u64) -> String {
    match kind {
        Kind::Log => format!("segment {id}"),
        Kind::Snapshot => format!("snapshot part {id}"),
    }
}

/// `n` bytes in the largest binary unit that keeps a number of at least 1: `512 B`,
/// `1.5 KiB`, `64.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `n` bytes as [`bytes`] shows them, then exactly when that rounded: `512 B`,
/// `1.5 KiB (1536 B)`.
fn exact_bytes(n: u64) -> String {
    if n < 1024 {
        bytes(n)
    } else {
        format!("{} ({n} B)", bytes(n))
    }
}

/// `n` and the noun, singular or plural: `1 file`, `3 files`.
fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The wall clock in milliseconds since the Unix epoch: what records' deadlines are in.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(exact_bytes(1023), "1023 B");
        assert_eq!(exact_bytes(1536), "1.5 KiB (1536 B)");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(0, "file", "files"), "0 files");
        assert_eq!(count(2, "record", "records"), "2 records");
    }
}
