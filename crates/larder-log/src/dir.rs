//! A log directory read without being opened: what tools such as `larder log inspect` and
//! `larder log verify` look at.
//!
//! [`Log::open`](crate::Log::open) is a writer's open: it takes the directory's exclusive lock,
//! removes what a compaction left behind, zeroes a torn tail and creates a segment. A
//! [`LogDir`] changes nothing. It takes the same `LOCK` file's lock *shared*, so:
//!
//! | beside                      | what happens                                              |
//! |-----------------------------|-----------------------------------------------------------|
//! | another `LogDir`            | both read                                                 |
//! | an open [`Log`](crate::Log) | `LogDir::open` fails with [`Error::Locked`]                |
//! | a `Log::open` while it lives| that open fails with [`Error::Locked`]                     |
//!
//! A running compaction holds the log's lock too, so no file a `LogDir` lists is written,
//! truncated or removed while it lives, and reading one gives the bytes a `Log::open` would
//! find. The files are read with `read`, not mapped: no `unsafe` is needed for a one-pass scan.
//! Where a log failed and left its mark (`log.rs`, "Failure"), they are first dropped from the
//! page cache, as `Log::open` drops them, so both read what the disk holds.
//!
//! It finds the files exactly as `Log::open` does (the same `layout` function): the manifest's
//! snapshot parts, then the segments above its base, the last of them active. What `Log::open`
//! would remove is listed apart, as [`LogDir::leftovers`]. And it judges them as `Log::open`
//! does, with the same code: [`LogDir::replay`] hands over the records that open would replay
//! and returns its [`FileVerdict`]s (a missing segment, damage, where the log ends).
//!
//! ```
//! use larder_log::format::{scan_as, Op};
//! use larder_log::{Log, LogDir, Options};
//!
//! let dir = std::env::temp_dir().join(format!("larder-logdir-doc-{}", std::process::id()));
//! let mut log = Log::open(&dir, Options::default(), |_| {})?;
//! log.append(Op::Delete { key: b"k" })?;
//! drop(log);
//!
//! let read = LogDir::open(&dir)?;
//! let [active] = read.files() else { panic!("one segment") };
//! let bytes = read.read(active)?;
//! let scan = scan_as(active.kind, active.id, &bytes)?;
//! assert_eq!(scan.records.len(), 1);
//! drop(read);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::format::{is_seal, segment_start, Kind, Record, Start, HEADER_LEN, SEAL_LEN};
use crate::log::{
    drop_page_cache, file_ids, layout, segment_path, unfinished_roll, written_len, written_part,
    Layout, RecoveryMode,
};
use crate::manifest;
use crate::recovery::{self, FileVerdict, Files};
use crate::sys::Sys;

/// A lock held on a log directory's `LOCK` file (exclusive for a [`Log`](crate::Log), shared
/// for a [`LogDir`]), released when this goes.
///
/// Released by unlocking, not only by closing the file. The lock belongs to the open file,
/// which every copy of the descriptor shares, and a child process forked meanwhile holds a copy
/// until it execs: the host may spawn one from any thread at any time (`Command::spawn` forks).
/// A lock that went with the last descriptor stayed held that long, and a reopen right after a
/// drop was refused as open elsewhere (`tests/log.rs`,
/// `a_drop_unlocks_the_directory_while_a_forked_child_holds_its_descriptor`).
#[derive(Debug)]
pub(crate) struct DirLock(File);

impl DirLock {
    /// Takes over `file`, whose lock the caller has just taken.
    pub(crate) fn new(file: File) -> Self {
        DirLock(file)
    }

    /// Whether a log that had the directory open failed and left its mark
    /// ([`mark_failed`](Self::mark_failed)).
    pub(crate) fn marked_failed(&self) -> io::Result<bool> {
        Ok(self.0.metadata()?.len() > 0)
    }

    /// Leaves the mark of a failed log: the `LOCK` file, otherwise empty, is given a length of
    /// one byte. Its reader is the next open *in the same boot*, which then reads the log's
    /// files from the disk instead of from the page cache, where pages whose writeback failed
    /// may still sit, clean, holding what never reached the disk (`log.rs`, "Failure"). So the
    /// mark itself needs only to reach the page cache, never the disk: after a reboot there is
    /// no page cache to distrust. And a length is a change to the inode alone (the byte is a
    /// hole), which needs no block, so a full disk does not refuse it.
    pub(crate) fn mark_failed(&self) -> io::Result<()> {
        self.0.set_len(1)
    }

    /// Takes the mark away, once an open has read the files from the disk and checked them.
    pub(crate) fn clear_mark(&self) -> io::Result<()> {
        self.0.set_len(0)
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Nothing to do if it fails: closing the file, next, releases the lock too, once the
        // last copy of the descriptor goes.
        let _ = self.0.unlock();
    }
}

/// A log directory, read-only, under a shared lock (see the [module doc](self)).
#[derive(Debug)]
pub struct LogDir {
    dir: PathBuf,
    /// The shared lock on `dir/LOCK`, held for as long as this lives.
    _lock: DirLock,
    generation: u64,
    base: u64,
    files: Vec<LogFile>,
    leftovers: Vec<PathBuf>,
    failed: bool,
}

/// One file of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogFile {
    /// A snapshot part or a log segment.
    pub kind: Kind,
    /// Its id (its file name's number).
    pub id: u64,
    /// What it is to the log.
    pub role: FileRole,
    /// Its length on disk, preallocated zeros included.
    pub len: u64,
    /// Its path.
    pub path: PathBuf,
}

/// What a file is to the log, which decides what a scan that stops early means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRole {
    /// A part of the snapshot the last compaction wrote. Sealed: it must check out to its end.
    Snapshot,
    /// A log segment before the last: rolled, and never appended to again. The name says
    /// where it stands, not whether it is sealed yet: [`FileVerdict::sealed`] says that.
    /// Sealed (it ends with its seal, or is of format version 1), it must check out to its
    /// end. Rolled and not yet sealed, its damage ends the log as a torn append's does (see
    /// [`Log::open`](crate::Log::open)).
    Sealed,
    /// The last log segment, the one appended to. Records that stop at bytes which do not
    /// check out end in a torn append: opening the log cuts it off ([`TornTail`](crate::TornTail)).
    Active,
}

impl LogDir {
    /// Reads the layout of the log in `dir`, under a shared lock on `dir/LOCK`, changing
    /// nothing (creating `LOCK` only if a log's files are there without it).
    ///
    /// # Errors
    /// [`Error::EmptyPath`] for a `dir` of `""`; [`Error::Path`], naming `dir`, if it is
    /// missing, not a directory or unreadable, and naming its `LOCK` file if that cannot be
    /// opened or locked;
    /// [`Error::NotALog`] if it holds no log; [`Error::Locked`] if a [`Log`](crate::Log) has
    /// it open (or a compaction runs);
    /// [`Error::NewerFormat`] and [`Error::BadManifest`] as [`Log::open`](crate::Log::open)
    /// would report them.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogDir, Error> {
        let dir = dir.as_ref().to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(Error::EmptyPath);
        }
        // The first read of `dir`, where a wrong path shows (missing, a regular file, not
        // readable): the error names it, as `Log::open`'s does.
        match holds_a_log(&dir) {
            Ok(true) => {}
            Ok(false) => return Err(Error::NotALog { dir }),
            Err(Error::Io(source)) => {
                return Err(Error::Path {
                    action: "read the log directory",
                    path: dir,
                    source,
                })
            }
            Err(e) => return Err(e),
        }
        let lock_path = dir.join("LOCK");
        let failed = |action| {
            let path = lock_path.clone();
            move |source| Error::Path {
                action,
                path,
                source,
            }
        };
        let lock = match File::open(&lock_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(failed("open"))?,
            Err(e) => return Err(failed("open")(e)),
        };
        match lock.try_lock_shared() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { dir }),
            Err(fs::TryLockError::Error(e)) => return Err(failed("lock")(e)),
        }
        // Unlocked as it goes from here on, an open refused below included.
        let lock = DirLock::new(lock);
        // As `Log::open` reads them after a failed log: from the disk, not the page cache.
        let failed = lock.marked_failed()?;
        if failed {
            drop_page_cache(&Sys::new(None), &dir)?;
        }
        let manifest = manifest::load(&dir)?;
        let Layout {
            mut segments,
            stale,
            ..
        } = layout(&dir, &manifest)?;
        let mut leftovers = manifest::unfinished(&dir)?;
        leftovers.extend(stale.iter().map(|&(kind, id)| segment_path(&dir, kind, id)));
        // As `Log::open` finds it: only the last segment can be an unfinished roll.
        if let Some(&last) = segments.last() {
            if unfinished_roll(&dir, last)? {
                leftovers.push(segment_path(&dir, Kind::Log, last));
                segments.pop();
            }
        }
        let file = |kind, id, role| -> io::Result<LogFile> {
            let path = segment_path(&dir, kind, id);
            Ok(LogFile {
                kind,
                id,
                role,
                len: fs::metadata(&path)?.len(),
                path,
            })
        };
        let mut files = Vec::with_capacity(manifest.snapshot.len() + segments.len());
        for &id in &manifest.snapshot {
            files.push(file(Kind::Snapshot, id, FileRole::Snapshot)?);
        }
        let last = segments.last().copied();
        for id in segments {
            let role = if Some(id) == last {
                FileRole::Active
            } else {
                FileRole::Sealed
            };
            files.push(file(Kind::Log, id, role)?);
        }
        // As `Log::open` refuses it: a newer Larder's log is not this build's to read.
        recovery::refuse_newer_formats(files.iter().map(|f| f.path.clone()))?;
        Ok(LogDir {
            dir,
            _lock: lock,
            generation: manifest.generation,
            base: manifest.base,
            files,
            leftovers,
            failed,
        })
    }

    /// Whether the last log to have the directory open failed (a write or sync of it
    /// returned an I/O error), or an open of it failed from its first write on, and no open
    /// has recovered it since: its `LOCK` file carries the mark. The files were then read from
    /// the disk, not the page cache, as the next [`Log::open`](crate::Log::open) reads them
    /// (`log.rs`, "Failure").
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's files in replay order: the snapshot's parts, then the segments, the last of
    /// them [`FileRole::Active`].
    pub fn files(&self) -> &[LogFile] {
        &self.files
    }

    /// Files that are not part of the log and that the next [`Log::open`](crate::Log::open)
    /// removes: what a compaction left behind (a prepared manifest, unlisted snapshot parts,
    /// replaced segments), and a segment whose creation crashed before its header was written.
    /// (An open that finds damage keeps what a compaction left behind: a strict one changes
    /// nothing, the unfinished segment included, and one that skips damage keeps the files
    /// that may hold what it skipped, but removes the unfinished segment, which holds no
    /// record.)
    pub fn leftovers(&self) -> &[PathBuf] {
        &self.leftovers
    }

    /// How many compactions were installed (the manifest's generation; 0 without one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The last log segment the snapshot replaced (0 without a manifest).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Reads the log's files as [`Log::open`](crate::Log::open) would, changing nothing:
    /// hands `visit` every record that open would replay, in order, with the file it is in,
    /// and returns what recovery makes of each file (one [`FileVerdict`] per file of
    /// [`files`](Self::files), in that order). The verdicts are the open's own: the same code
    /// decides them. They are those of an open with [`RecoveryMode::SkipCorrupt`], which
    /// replays each damaged file up to its damage and goes on with the next; a strict open
    /// fails at the first verdict with a gap or damage.
    ///
    /// ```
    /// use larder_log::format::Op;
    /// use larder_log::{Ending, Log, LogDir, Options};
    ///
    /// let dir = std::env::temp_dir().join(format!("larder-replay-doc-{}", std::process::id()));
    /// let mut log = Log::open(&dir, Options::default(), |_| {})?;
    /// log.append(Op::Delete { key: b"a" })?;
    /// log.append(Op::Delete { key: b"b" })?;
    /// drop(log);
    /// // The second record's last byte is lost: a torn append.
    /// let path = dir.join(format!("{:020}.seg", 1));
    /// let mut bytes = std::fs::read(&path)?;
    /// bytes[24 + 33 + 32] ^= 1;
    /// std::fs::write(&path, &bytes)?;
    ///
    /// let mut records = 0;
    /// let verdicts = LogDir::open(&dir)?.replay(|_, _| records += 1)?;
    /// let Ending::Torn(torn) = &verdicts[0].ending else { panic!("{verdicts:?}") };
    /// assert_eq!(records, 1);
    /// let log = Log::open(&dir, Options::default(), |_| {})?;
    /// assert_eq!(log.torn_tail(), Some(torn), "what the open cut off");
    /// # drop(log);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if a file cannot be read. ([`Error::NewerFormat`], which the open refuses
    /// in either mode, was refused by [`LogDir::open`] already.)
    ///
    /// [`RecoveryMode::SkipCorrupt`]: crate::RecoveryMode::SkipCorrupt
    pub fn replay(
        &self,
        mut visit: impl FnMut(&LogFile, Record<'_>),
    ) -> Result<Vec<FileVerdict>, Error> {
        let ids = |kind| -> Vec<u64> {
            let files = self.files.iter().filter(|f| f.kind == kind);
            files.map(|f| f.id).collect()
        };
        let judgment = recovery::judge(
            self,
            self.base,
            &ids(Kind::Snapshot),
            &ids(Kind::Log),
            RecoveryMode::SkipCorrupt,
            |file, batch| {
                for &record in batch {
                    visit(&self.files[file], record);
                }
            },
        )?;
        Ok(judgment.files.into_iter().map(|j| j.verdict).collect())
    }

    /// The bytes of `file` that may hold records: all of a sealed file; of the active
    /// segment, what was written of its preallocation (the rest is a hole that reads as
    /// zeros, and is not read). Scan them with
    /// [`format::scan_as`](crate::format::scan_as)`(file.kind, file.id, ..)`.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn read(&self, file: &LogFile) -> Result<Vec<u8>, Error> {
        Ok(read_written(&file.path)?.0)
    }
}

/// The bytes of the file at `path` up to where only zeros follow ([`written_len`]), and the
/// file's whole length.
fn read_written(path: &Path) -> io::Result<(Vec<u8>, usize)> {
    let handle = File::open(path)?;
    let len = usize::try_from(handle.metadata()?.len()).unwrap_or(usize::MAX);
    let written = written_len(&handle, len);
    // A damaged or foreign file may claim more than memory holds (a sparse file with data at
    // a terabyte): an error, not an abort.
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(written).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("{} is too large to read ({written} bytes)", path.display()),
        )
    })?;
    // `written_len` may have moved the offset: read from the start through a fresh handle.
    File::open(path)?
        .take(written as u64)
        .read_to_end(&mut bytes)?;
    Ok((bytes, len))
}

/// A `LogDir` reads its files with `read`, under its shared lock: no file it lists is written
/// while it lives.
impl Files for LogDir {
    type Bytes = Vec<u8>;

    fn read(&self, kind: Kind, id: u64) -> Result<(Vec<u8>, usize), Error> {
        Ok(read_written(&segment_path(&self.dir, kind, id))?)
    }

    fn ends_with_seal(&self, id: u64) -> Result<bool, Error> {
        let file = File::open(segment_path(&self.dir, Kind::Log, id))?;
        let Some(at) = file.metadata()?.len().checked_sub(SEAL_LEN as u64) else {
            return Ok(false);
        };
        if at < HEADER_LEN as u64 {
            return Ok(false);
        }
        let mut last = [0u8; SEAL_LEN];
        file.read_exact_at(&mut last, at)?;
        Ok(is_seal(id, &last))
    }

    fn start(&self, id: u64) -> Result<Start, Error> {
        // The header, then the first record, as long as its length says. A length that runs
        // past the file is no record, which the header and the length alone show.
        let file = File::open(segment_path(&self.dir, Kind::Log, id))?;
        let len = file.metadata()?.len();
        let mut first = vec![0u8; (HEADER_LEN as u64 + 4).min(len) as usize];
        file.read_exact_at(&mut first, 0)?;
        if let Some(length) = first.get(HEADER_LEN..HEADER_LEN + 4) {
            let record_end = HEADER_LEN as u64
                + u64::from(u32::from_le_bytes(length.try_into().expect("4 bytes")));
            let record_end = usize::try_from(record_end)
                .ok()
                .filter(|_| record_end <= len);
            if let Some(record_end) = record_end.filter(|&end| end > first.len()) {
                first = vec![0u8; record_end];
                file.read_exact_at(&mut first, 0)?;
            }
        }
        Ok(segment_start(id, &first))
    }

    fn written(&self, id: u64) -> Result<u64, Error> {
        Ok(written_part(&self.dir, Kind::Log, id)? as u64)
    }

    fn path(&self, kind: Kind, id: u64) -> PathBuf {
        segment_path(&self.dir, kind, id)
    }
}

/// Whether `dir` holds any of a log's files.
fn holds_a_log(dir: &Path) -> Result<bool, Error> {
    if !file_ids(dir, Kind::Log)?.is_empty() || !file_ids(dir, Kind::Snapshot)?.is_empty() {
        return Ok(true);
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "LOCK" || manifest::is_manifest(name) {
            return Ok(true);
        }
    }
    Ok(false)
}
