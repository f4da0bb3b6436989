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
//! 1. A new segment file is created, sized with `set_len` (zero-filled), its header written
//!    through the map and flushed, the file `fsync`ed, and the directory `fsync`ed, so the file
//!    and its name survive a crash before any record goes in.
//! 2. `append` encodes a record into the map after the last one. The bytes are in the page
//!    cache at once, so they survive a crash of this process; not yet an OS crash.
//! 3. `sync` flushes the mapped range written since the last sync (`msync`, synchronous). Every
//!    record appended before the call is then on stable storage.
//! 4. A record that does not fit the active segment seals it: its records are flushed, the map
//!    dropped, the file truncated to its last record and `fsync`ed; then step 1 makes the next.
//!
//! **Recovery.** `Log::open` scans the segments in id order and hands every valid record to
//! the caller. A sealed segment must end cleanly (its records, then nothing or only zeros);
//! damage there is [`Error::Corruption`] with the segment and the offset. A last segment that
//! is all zeros, without even its header, is a roll that crashed in step 1: it is removed. In the active segment, a record that does not check out is a torn
//! append (the process died while writing it). Its bytes, and everything after them, are
//! zeroed and flushed before the next append, so the zero tail holds again.
//!
//! **Failure.** Once a write, sync, truncation or creation fails, the log is *failed*: every
//! later `append` and `sync` returns [`Error::Failed`] with the first error's kind, and nothing
//! is retried silently (a failed `fsync` may have dropped the dirty pages it was asked to
//! write, so a retry that succeeds would prove nothing).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut};

use crate::error::Error;
use crate::format::{encode, encoded_len, scan, segment_header, Op, Record, Tail, HEADER_LEN};

/// How a [`Log`] sizes its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Bytes preallocated for each segment. A record larger than this gets a segment of its
    /// own, sized to fit. Default: 64 MiB. At least 4 KiB is used.
    pub segment_size: u64,
}

impl Options {
    /// These options with segments of `bytes` bytes.
    #[must_use]
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 64 << 20,
        }
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
    options: Options,
    /// The kind of the first I/O error, once there was one.
    failed: Option<io::ErrorKind>,
    scratch: Vec<u8>,
}

/// The active segment.
#[derive(Debug)]
struct Segment {
    id: u64,
    file: File,
    map: MmapMut,
    /// Where the next record goes.
    end: usize,
    /// Everything before this offset has been flushed.
    synced: usize,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// `fsync` of a directory, so that the names created or removed in it are durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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
        let options = Options {
            segment_size: options.segment_size.max(4096),
        };
        let mut ids = segment_ids(&dir)?;
        // A crash while a roll created the next segment can leave it without even a header:
        // nothing was ever appended to it, so it goes, and its predecessor stays active.
        while let Some(&last) = ids.last() {
            let path = segment_path(&dir, last);
            let bytes = fs::read(&path)?;
            if bytes.len() >= HEADER_LEN && bytes[..HEADER_LEN] == segment_header(last) {
                break;
            }
            if bytes.iter().any(|&b| b != 0) {
                break; // not an unfinished creation: `scan` reports what is wrong with it
            }
            fs::remove_file(&path)?;
            sync_dir(&dir)?;
            ids.pop();
        }
        let mut next_seq = 0;
        let Some((&last, sealed)) = ids.split_last() else {
            let active = Segment::create(&dir, 1, options.segment_size)?;
            return Ok(Log::assemble(dir, lock, active, 0, options));
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
        // SAFETY: as above: the exclusive directory lock is held for as long as the `Log`
        // (which owns this map) lives.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        let s = scan(last, &map)?;
        let end = match s.tail {
            Tail::Clean { end } => end,
            Tail::Invalid { offset, .. } => offset,
        };
        for r in &s.records {
            next_seq = next_seq.max(r.seq() + 1);
            replay(*r);
        }
        drop(s);
        if end < map.len() && map[end..].iter().any(|&b| b != 0) {
            // A torn append: make the tail zero again, durably, before anything is appended.
            map[end..].fill(0);
            map.flush_range(end, map.len() - end)?;
        }
        let active = Segment {
            id: last,
            file,
            map,
            end,
            synced: end,
        };
        Ok(Log::assemble(dir, lock, active, next_seq, options))
    }

    fn assemble(dir: PathBuf, lock: File, active: Segment, next_seq: u64, options: Options) -> Log {
        Log {
            dir,
            _lock: lock,
            active,
            next_seq,
            options,
            failed: None,
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

    fn check(&self) -> Result<(), Error> {
        match self.failed {
            Some(kind) => Err(Error::Failed { kind }),
            None => Ok(()),
        }
    }

    /// Records `err` as the log's failure and returns it.
    fn fail(&mut self, err: io::Error) -> Error {
        self.failed.get_or_insert(err.kind());
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
        if self.active.end + len > self.active.map.len() {
            self.roll(len).map_err(|e| self.fail(e))?;
        }
        let seq = self.next_seq;
        self.scratch.clear();
        encode(seq, op, &mut self.scratch)?;
        let at = self.active.end;
        self.active.map[at..at + len].copy_from_slice(&self.scratch);
        self.active.end += len;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Makes every record appended so far durable (`msync` of the range written since the last
    /// sync).
    ///
    /// # Errors
    /// [`Error::Io`] (the log is failed from then on); [`Error::Failed`] once it is.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.check()?;
        self.active.flush().map_err(|e| self.fail(e))
    }

    /// Seals the active segment and starts the next, with room for a record of `len` bytes.
    fn roll(&mut self, len: usize) -> io::Result<()> {
        let size = self.options.segment_size.max((HEADER_LEN + len) as u64);
        let next = Segment::create(&self.dir, self.active.id + 1, size)?;
        let sealed = std::mem::replace(&mut self.active, next);
        sealed.seal()
    }
}

impl Segment {
    /// Creates segment `id` of `size` bytes in `dir`, durably (step 1 of the module doc).
    fn create(dir: &Path, id: u64, size: u64) -> io::Result<Segment> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len(size)?;
        // SAFETY: a fresh file in the directory this process holds the exclusive lock on (see
        // `Log::open`); the map lives no longer than the `Log` that holds the lock.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        map[..HEADER_LEN].copy_from_slice(&segment_header(id));
        map.flush_range(0, HEADER_LEN)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Segment {
            id,
            file,
            map,
            end: HEADER_LEN,
            synced: HEADER_LEN,
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.end > self.synced {
            self.map.flush_range(self.synced, self.end - self.synced)?;
            self.synced = self.end;
        }
        Ok(())
    }

    /// Flushes, unmaps and truncates the segment to its records (step 4 of the module doc).
    fn seal(mut self) -> io::Result<()> {
        self.flush()?;
        let Segment { file, map, end, .. } = self;
        drop(map);
        file.set_len(end as u64)?;
        file.sync_all()
    }
}
