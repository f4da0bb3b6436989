//! The log: a locked directory of segment files, appended through a memory map, replayed on
//! open.
//!
//! ```text
//! dir/
//! ├── LOCK                      held with an exclusive lock while a `Log` is open
//! ├── 00000000000000000001.seg  sealed: truncated to its last record, never written again
//! └── 00000000000000000002.seg  active: preallocated, mapped, records then zeros
//! ```
//!
//! **Durability, step by step.**
//! 1. A new segment file is created, sized with `set_len` (sparse, reading as zeros), its header
//!    written through the map and flushed, the file `fsync`ed, and the directory `fsync`ed, so
//!    the file and its name survive a crash before any record goes in.
//! 2. `append` reserves disk space ahead of the write (`fallocate`, a chunk at a time: see
//!    `sys.rs`, so a full disk is an error, not a `SIGBUS`), then encodes a record into the map
//!    after the last one. The bytes are in the page cache at once, so they survive a crash of
//!    this process; not yet an OS crash.
//! 3. `sync` flushes the mapped range written since the last completed sync (`msync` with
//!    `MS_SYNC`, which on Linux writes the pages and flushes the device cache like
//!    `fdatasync`). Every record appended before the call is then on stable storage. The same
//!    step can be split for group commit: [`Log::sync_point`] notes the range under the
//!    writer's `&mut Log`, and [`SyncPoint::flush`] does the slow part without it, while
//!    other records are appended behind the range.
//! 4. A record that does not fit the active segment seals it: its records are flushed, the map
//!    dropped, the file truncated to its last record and `fsync`ed; then step 1 makes the next.
//!
//! **Recovery.** `Log::open` scans the segments in id order and hands every valid record to
//! the caller. A sealed segment must end cleanly (its records, then nothing or only zeros);
//! damage there is [`Error::Corruption`] with the segment and the offset. A last segment that
//! is all zeros, without even its header, is a roll that crashed in step 1: it is removed. In
//! the active segment, a record that does not check out is a torn append (the process died
//! while writing it). Its bytes, and everything after them, are zeroed and flushed before the
//! next append, so the zero tail holds again.
//!
//! **Failure.** Once a write, sync, truncation or creation fails, the log is *failed*: every
//! later `append` and `sync` returns [`Error::Failed`] with the first error's kind, and nothing
//! is retried silently (a failed `fsync` may have dropped the dirty pages it was asked to
//! write, so a retry that succeeds would prove nothing).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use memmap2::{Mmap, MmapRaw};

use crate::error::Error;
use crate::format::{encode, encoded_len, scan, segment_header, Op, Record, Tail, HEADER_LEN};
use crate::sys::{IoHook, Sys, RESERVE_CHUNK};

/// How a [`Log`] sizes its segments, and the fault-injection hook for tests.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Bytes preallocated for each segment. A record larger than this gets a segment of its
    /// own, sized to fit. Default: 64 MiB. At least 4 KiB is used.
    pub segment_size: u64,
    /// Called before each durability-relevant system call (see [`IoHook`]). Default: none.
    pub io_hook: Option<IoHook>,
}

impl Options {
    /// These options with segments of `bytes` bytes.
    #[must_use]
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// These options with `hook` called before each durability-relevant system call: return
    /// an error from it to make that call fail (ENOSPC from a reservation, EIO from a flush).
    #[must_use]
    pub fn with_io_hook(
        mut self,
        hook: impl Fn(crate::IoCall) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.io_hook = Some(Arc::new(hook));
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 64 << 20,
            io_hook: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("io_hook", &self.io_hook.is_some())
            .finish()
    }
}

/// An open log. Single-writer: callers that share one wrap it in a lock.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// Held for the log's lifetime: the lock on `dir/LOCK` that makes the maps sound.
    _lock: File,
    active: Segment,
    next_seq: u64,
    segment_size: u64,
    sys: Sys,
    /// The kind of the first I/O error, once there was one. Shared with the [`SyncPoint`]s,
    /// whose flushes run outside `&mut Log` and can fail too.
    failed: Arc<OnceLock<io::ErrorKind>>,
    scratch: Vec<u8>,
}

/// The active segment.
#[derive(Debug)]
struct Segment {
    id: u64,
    file: File,
    /// Shared with the [`SyncPoint`]s taken in this segment, which flush ranges of it.
    map: Arc<Mapped>,
    /// Where the next record goes.
    end: usize,
    /// Disk space is reserved for every byte before this offset (`sys.rs`).
    reserved: usize,
}

/// A segment's mapping and how much of it is known durable.
#[derive(Debug)]
struct Mapped {
    map: MmapRaw,
    /// Every byte before this offset is on stable storage. Only grows (`fetch_max`).
    flushed: AtomicUsize,
    sys: Sys,
}

impl Mapped {
    /// Flushes `..to` (from what is known durable), synchronously.
    fn flush_to(&self, to: usize) -> io::Result<()> {
        // Relaxed: the value only narrows the range to flush; a stale, smaller one flushes
        // more than needed, never less. The flush itself is a system call on the pages.
        let from = self.flushed.load(Ordering::Relaxed).min(to);
        if to > from {
            self.sys.flush(&self.map, from, to - from)?;
            self.flushed.fetch_max(to, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The records appended before it, still to be made durable: taken by [`Log::sync_point`]
/// under the writer's `&mut Log`, flushed by [`SyncPoint::flush`] on any thread without it.
/// This is what group commit is built from: one thread's flush covers every record appended
/// before its point was taken, whoever appended them.
#[derive(Debug)]
#[must_use = "a sync point makes nothing durable until it is flushed"]
pub struct SyncPoint {
    map: Arc<Mapped>,
    to: usize,
    through: u64,
    failed: Arc<OnceLock<io::ErrorKind>>,
}

impl SyncPoint {
    /// Every record whose sequence number is below this one is durable once
    /// [`flush`](Self::flush) returns `Ok`.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Makes the records before the point durable (the slow part of a sync).
    ///
    /// # Errors
    /// [`Error::Io`] (the log is failed from then on: the pages that failed may have been
    /// dropped by the kernel, so no later sync may claim them); [`Error::Failed`] if it
    /// already was.
    pub fn flush(self) -> Result<u64, Error> {
        if let Some(&kind) = self.failed.get() {
            return Err(Error::Failed { kind });
        }
        match self.map.flush_to(self.to) {
            Ok(()) => Ok(self.through),
            Err(e) => {
                let _ = self.failed.set(e.kind());
                Err(Error::Io(e))
            }
        }
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The ids of the segment files in `dir`, ascending.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// How much of `file` (`len` bytes) may hold anything but zeros: where its first hole starts,
/// if no data follows that hole, else all of it. Segments are preallocated sparse (`set_len`)
/// and written front to back, so past the last written page they are one hole, and recovery
/// need not fault in (or read from disk) the untouched rest.
#[cfg(target_os = "linux")]
fn written_len(file: &File, len: usize) -> usize {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `lseek` reads no memory of ours; the descriptor is open for the call's length.
    // Moving the file offset is harmless: the log reads and writes through the map only.
    let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
    let Ok(hole) = usize::try_from(hole) else {
        return len; // no hole information (an old file system): check everything
    };
    // SAFETY: as above.
    let data_after = unsafe { libc::lseek(fd, hole as libc::off_t, libc::SEEK_DATA) };
    let no_data_after =
        data_after < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    if no_data_after {
        hole.min(len)
    } else {
        len // data past a hole (pages of a torn append written out of order): check it all
    }
}

#[cfg(not(target_os = "linux"))]
fn written_len(_file: &File, len: usize) -> usize {
    len
}

impl Log {
    /// Opens (or creates) the log in `dir`, handing every record it holds to `replay`, in
    /// order.
    ///
    /// # Errors
    /// [`Error::Locked`] if another `Log`, in this process or another, has `dir` open;
    /// [`Error::Corruption`] for damage outside the active segment's tail; [`Error::Io`].
    pub fn open(
        dir: impl AsRef<Path>,
        options: Options,
        mut replay: impl FnMut(Record<'_>),
    ) -> Result<Log, Error> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { dir }),
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let segment_size = options.segment_size.max(4096);
        let sys = Sys::new(options.io_hook);
        let mut ids = segment_ids(&dir)?;
        // A crash while a roll created the next segment can leave it without even a header:
        // nothing was ever appended to it, so it goes, and its predecessor stays active.
        while let Some(&last) = ids.last() {
            let path = segment_path(&dir, last);
            let mut file = File::open(&path)?;
            let mut bytes = Vec::new();
            (&file).take(HEADER_LEN as u64).read_to_end(&mut bytes)?;
            if bytes[..] == segment_header(last) {
                break;
            }
            // No header: an unfinished creation is zeros as far as anything was written.
            // (`written_len` moves the file's offset, hence the seek.)
            let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
            let written = written_len(&file, len) as u64;
            bytes.clear();
            file.seek(io::SeekFrom::Start(0))?;
            file.take(written).read_to_end(&mut bytes)?;
            if bytes.iter().any(|&b| b != 0) {
                break; // not an unfinished creation: `scan` reports what is wrong with it
            }
            fs::remove_file(&path)?;
            sys.sync_dir(&dir)?;
            ids.pop();
        }
        let mut next_seq = 0;
        let Some((&last, sealed)) = ids.split_last() else {
            let active = Segment::create(&sys, &dir, 1, segment_size)?;
            return Ok(Log::assemble(dir, lock, active, 0, segment_size, sys));
        };
        for &id in sealed {
            let file = File::open(segment_path(&dir, id))?;
            // SAFETY: the file is mapped read-only while this process holds the exclusive
            // lock on `dir/LOCK`, which every `Log` takes before touching a segment, so no
            // cooperating writer changes it; a sealed segment is never written again anyway.
            // Another program writing to the directory behind the lock is outside the log's
            // contract (as for any database's files).
            let map = unsafe { Mmap::map(&file)? };
            let s = scan(id, &map)?;
            match s.tail {
                // Zeros after the records: a crash came between creating the next segment and
                // truncating this one (`roll`). The zeros are unambiguous, so that is fine.
                Tail::Clean { .. } => {}
                Tail::Invalid { offset, reason } => {
                    return Err(Error::Corruption {
                        segment: id,
                        offset: offset as u64,
                        reason,
                    })
                }
            }
            for r in s.records {
                next_seq = next_seq.max(r.seq() + 1);
                replay(r);
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(&dir, last))?;
        let map = MmapRaw::map_raw(&file)?;
        let len = map.len();
        // Past what was written, a preallocated segment is a hole that reads as zeros: only
        // the written part is scanned and checked, not the whole preallocation.
        let written = written_len(&file, len);
        let (end, torn) = {
            // SAFETY: the mapping is `len` bytes long and lives to the end of this block. The
            // exclusive directory lock (held for as long as the `Log` that will own the map
            // lives) means no other process writes the file, and nothing in this one writes
            // the map while this shared view of it exists: the zeroing below comes after.
            let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), written) };
            let s = scan(last, bytes)?;
            for r in &s.records {
                next_seq = next_seq.max(r.seq() + 1);
                replay(*r);
            }
            let end = match s.tail {
                Tail::Clean { end } => end,
                Tail::Invalid { offset, .. } => offset,
            };
            (end, bytes[end..].iter().any(|&b| b != 0))
        };
        if torn {
            // A torn append: make the tail zero again, durably, before anything is appended.
            // SAFETY: `end..written` lies in the mapping, which this `Log` alone writes (the
            // directory lock); no view of the bytes is alive.
            unsafe { map.as_mut_ptr().add(end).write_bytes(0, written - end) };
            sys.flush(&map, end, written - end)?;
        }
        let active = Segment {
            id: last,
            file,
            map: Arc::new(Mapped {
                map,
                flushed: AtomicUsize::new(end),
                sys: sys.clone(),
            }),
            end,
            // Unknown: reserving again from `end` is harmless.
            reserved: end,
        };
        Ok(Log::assemble(
            dir,
            lock,
            active,
            next_seq,
            segment_size,
            sys,
        ))
    }

    fn assemble(
        dir: PathBuf,
        lock: File,
        active: Segment,
        next_seq: u64,
        segment_size: u64,
        sys: Sys,
    ) -> Log {
        Log {
            dir,
            _lock: lock,
            active,
            next_seq,
            segment_size,
            sys,
            failed: Arc::new(OnceLock::new()),
            scratch: Vec::new(),
        }
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `Err(Failed)` once a write or sync has failed.
    pub fn check(&self) -> Result<(), Error> {
        match self.failed.get() {
            Some(&kind) => Err(Error::Failed { kind }),
            None => Ok(()),
        }
    }

    /// Records `err` as the log's failure (unless an earlier one is already) and returns it.
    fn fail(&mut self, err: io::Error) -> Error {
        let _ = self.failed.set(err.kind());
        Error::Io(err)
    }

    /// Appends a record doing `op` and returns its sequence number. The record survives a crash
    /// of this process at once, and an OS crash after the next [`sync`](Self::sync).
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a record over 4 GiB (the log stays usable); [`Error::Io`] (the
    /// log is failed from then on); [`Error::Failed`] once it is.
    pub fn append(&mut self, op: Op<'_>) -> Result<u64, Error> {
        self.check()?;
        let len = encoded_len(op).ok_or(Error::TooLarge)?;
        if self.active.end + len > self.active.map.map.len() {
            self.roll(len).map_err(|e| self.fail(e))?;
        }
        let seq = self.next_seq;
        self.scratch.clear();
        encode(seq, op, &mut self.scratch)?;
        if let Err(e) = self.active.write(&self.scratch) {
            return Err(self.fail(e));
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// Makes every record appended so far durable: [`sync_point`](Self::sync_point) then
    /// [`SyncPoint::flush`] on this thread.
    ///
    /// # Errors
    /// [`Error::Io`] (the log is failed from then on); [`Error::Failed`] once it is.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.sync_point()?.flush().map(drop)
    }

    /// Notes the records appended so far for a [`SyncPoint::flush`] that may run without
    /// `&mut self`, on another thread, while more records are appended.
    ///
    /// # Errors
    /// [`Error::Failed`] once the log is failed.
    pub fn sync_point(&mut self) -> Result<SyncPoint, Error> {
        self.check()?;
        Ok(SyncPoint {
            map: Arc::clone(&self.active.map),
            to: self.active.end,
            through: self.next_seq,
            failed: Arc::clone(&self.failed),
        })
    }

    /// Seals the active segment and starts the next, with room for a record of `len` bytes.
    fn roll(&mut self, len: usize) -> io::Result<()> {
        let size = self.segment_size.max((HEADER_LEN + len) as u64);
        let next = Segment::create(&self.sys, &self.dir, self.active.id + 1, size)?;
        let sealed = std::mem::replace(&mut self.active, next);
        sealed.seal()
    }
}

impl Segment {
    /// Creates segment `id` of `size` bytes in `dir`, durably (step 1 of the module doc).
    fn create(sys: &Sys, dir: &Path, id: u64, size: u64) -> io::Result<Segment> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        sys.truncate(&file, size)?;
        let map = MmapRaw::map_raw(&file)?;
        let mut segment = Segment {
            id,
            file,
            map: Arc::new(Mapped {
                map,
                flushed: AtomicUsize::new(0),
                sys: sys.clone(),
            }),
            end: 0,
            reserved: 0,
        };
        segment.write(&segment_header(id))?;
        segment.map.flush_to(HEADER_LEN)?;
        sys.sync_file(&segment.file)?;
        sys.sync_dir(dir)?;
        Ok(segment)
    }

    /// Reserves space for `bytes` (and up to a chunk more), copies them into the mapping at
    /// `end`, and moves `end` past them. Nothing is written if the reservation fails.
    ///
    /// # Panics
    /// If they do not fit; callers roll to a new segment first.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let at = self.end;
        let size = self.map.map.len();
        assert!(bytes.len() <= size - at, "a record overran its segment");
        if at + bytes.len() > self.reserved {
            let to = (at + bytes.len()).next_multiple_of(RESERVE_CHUNK).min(size);
            self.map
                .sys
                .reserve(&self.file, self.reserved, to - self.reserved)?;
            self.reserved = to;
        }
        // SAFETY:
        // 1. `at..at + bytes.len()` lies inside the mapping (the assertion above), in space
        //    reserved on disk, so the stores cannot fault for lack of space (`sys.rs`).
        // 2. Nothing else writes or reads those bytes through this process's memory: the
        //    segment is written only here, through `&mut self`, so by one thread at a time;
        //    the bytes lie at or after `end`, which no `SyncPoint` covers (their flushes are
        //    system calls on earlier pages, not reads through a reference); and `Log::open`'s
        //    view of the file ended before any write.
        // 3. No other process writes the file: it belongs to the directory whose exclusive
        //    `LOCK` the owning `Log` holds for as long as it lives.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.map.as_mut_ptr().add(at),
                bytes.len(),
            );
        }
        self.end += bytes.len();
        Ok(())
    }

    /// Flushes, unmaps and truncates the segment to its records (step 4 of the module doc).
    /// A [`SyncPoint`] still holding the mapping flushes only bytes before `end`, which the
    /// truncation keeps.
    fn seal(self) -> io::Result<()> {
        self.map.flush_to(self.end)?;
        let Segment { file, map, end, .. } = self;
        let sys = map.sys.clone();
        drop(map);
        sys.truncate(&file, end as u64)?;
        sys.sync_file(&file)
    }
}
