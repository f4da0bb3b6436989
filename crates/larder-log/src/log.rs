//! The log: a locked directory of segment files, appended through a memory map, replayed on
//! open.
//!
//! ```text
//! dir/
//! ├── LOCK                      held with an exclusive lock while a `Log` is open; one
//! │                             byte long (a hole) once a log here failed ("Failure")
//! ├── MANIFEST                  after a compaction: the snapshot's parts, and the base below
//! │                             which log segments are replaced (module `manifest`)
//! ├── 00000000000000000004.snap a snapshot part: the live records of segments 1..=3
//! ├── 00000000000000000005.seg  sealed: truncated to its last record, never written again
//! └── 00000000000000000006.seg  active: preallocated, mapped, records then zeros
//! ```
//!
//! **Durability, step by step.**
//! 1. A new segment file is created, sized with `set_len` (sparse, reading as zeros), its header
//!    written through the map and flushed, the file `fsync`ed, and the directory `fsync`ed, so
//!    the file and its name survive a crash before any record goes in.
//! 2. `append` reserves disk space ahead of the write (`fallocate`, or zeros written and
//!    synced, a chunk at a time: see [`Reserve`] and `sys.rs`; so a full disk is an error,
//!    not a `SIGBUS`), then encodes a record into the map after the last one. The bytes are in
//!    the page cache at once, so they survive a crash of this process; not yet an OS crash.
//!    [`Log::prefault`] then hands the caller the next pages to fault in once it has let go of
//!    the log (the durable cache gives them to a thread of their own), so that no append pays
//!    for a page new to the file while others wait.
//! 3. `sync` flushes the mapped range written since the last completed sync (`msync` with
//!    `MS_SYNC`, which on Linux writes the pages and flushes the device cache like
//!    `fdatasync`). Every record appended before the call is then on stable storage. The same
//!    step can be split for group commit: [`Log::sync_point`] notes the range under the
//!    writer's `&mut Log`, and [`SyncPoint::flush`] does the slow part without it, while
//!    other records are appended behind the range.
//! 4. A record that does not fit the active segment *rolls* the log: step 1 makes the next
//!    segment, appends go on there, and the full one waits, unsynced, to be *sealed* by the
//!    next sync (step 3 seals every waiting segment before it flushes the active one). Sealing
//!    a file makes its records durable (`fdatasync`), then writes a seal after them
//!    (`format.rs`: it names the file and the sequence number that follows), truncates the
//!    file right after the seal and `fsync`s it. So a roll costs a writer no flush, and:
//!    **a segment before the active one without a seal on disk was never covered by a
//!    completed sync, and neither was anything after it.**
//!
//! **Recovery.** `Log::open` reads the manifest, sets aside what a compaction left behind
//! (parts the manifest does not list, segments at or below its base: removed once the rest
//! checks out, since a snapshot's replaced segments are the one copy of their records should
//! one of its parts be damaged), then hands the caller every valid record: the snapshot's
//! parts first, then the segments above the base in id order. A log with a file a newer
//! Larder wrote (the manifest's or a file's header names a format version newer than this
//! build reads) is refused first, in either [`RecoveryMode`], before a record is handed over
//! or anything changed: [`Error::NewerFormat`]. What a newer version wrote is no damage to
//! skip. A
//! sealed file (one with a seal, or any file of format version 1, which sealed at the roll)
//! must end cleanly; damage there is [`Error::Corruption`] with the segment and the offset, or
//! with [`RecoveryMode::SkipCorrupt`], a [`Damage`] report and the records before it. A last
//! segment that is all zeros, without even its header, is a roll that crashed in step 1: it is
//! removed. In the active segment, a record that does not check out is a torn append (the
//! process died while writing it). Its bytes, and everything after them, are zeroed and flushed
//! before the next append, so the zero tail holds again; [`Log::torn_tail`] says where, and how
//! much. (A last segment with its seal, at its end or where its records stop, is no active
//! segment: the one after it is missing, its damage is judged as a sealed file's, bytes after
//! the seal included, and appends go to a new segment.)
//!
//! A segment before the last without a seal was rolled but not yet sealed when the process or
//! the machine stopped (unless a later segment has its seal: seals are written oldest first,
//! each on disk before the next, so its own was damaged, and it is judged as a sealed file).
//! After a process crash its records are whole, and the next segment's first record follows its
//! last one: it is replayed, and the first sync seals it. Its seal may have been begun: a write
//! of it that failed part way, or that the process's death cut between two pages, leaves a
//! prefix of it after the records, which the seal's order (records durable first) says are
//! whole, so it counts as their clean end, not as damage (`format::is_seal_cut_short`). After an OS
//! crash some of its pages, or of later segments', may never have reached the disk (the kernel
//! writes dirty pages back in any order). By step 4 none of that was acknowledged durable, so
//! the log ends where it stops being whole: at its first damage, or at its last record when the
//! next segment does not go on from there. That segment becomes the active one again, its
//! damage is zeroed as a torn append's, and the segments after it are removed.
//!
//! What to make of each file is decided before anything on disk is changed, by the module
//! `recovery.rs` ([`FileVerdict`](crate::FileVerdict)s), which [`LogDir::replay`] runs on the
//! same files for tools that say what an open would do without opening the log: one rule, one
//! copy of it. `open` then acts on the verdicts, after it `fsync`s the newest segment it keeps
//! as sealed: a crash between a seal's write and its `fsync` leaves the seal in the page cache
//! alone, and torn by a power loss after later syncs, it would be damage before a later seal,
//! or the log's end before records synced since. Seals reach the disk oldest first, so no
//! older one can be unsynced.
//!
//! [`LogDir::replay`]: crate::LogDir::replay
//!
//! After a reopen nothing in the active segment is known durable: its records may be pages the
//! last process left dirty, so the first sync flushes the segment from its start.
//!
//! **Failure.** Once a write, sync, truncation or creation fails, the log is *failed*: every
//! later `append` and `sync` returns [`Error::Failed`] with the first error's kind, and nothing
//! is retried silently (a failed `fsync` may have dropped the dirty pages it was asked to
//! write, so a retry that succeeds would prove nothing). Flushes run one at a time, and the
//! failure is recorded before the next may start, so a flush that waited for a failing one
//! fails with it instead of retrying it. A [`Reserve::Zeroed`] reservation's sync of the
//! active segment runs one at a time with them too: a failed writeback is reported to one
//! sync of the file only, so a flush beside a failing sync could succeed without its records.
//! And so does a [`Prefault`], which does nothing once the log has failed: it faults its pages
//! in writable, which makes a page that a failed writeback left clean dirty again, and the
//! next writeback would put on the disk the records whose flush failed.
//!
//! What a failure leaves behind outlives the log, until the machine reboots. Linux keeps the
//! pages whose writeback failed in the page cache, marked clean: a later open, by this process
//! or another, reads them back as if they were on disk, and since they are clean no later sync
//! writes them. An open that replayed them would append after records that are not on the
//! disk, and a power loss would then end the log at the hole, before records that the open's
//! syncs acknowledged (measured, not assumed: `docs/DURABILITY.md`, "A failed sync, then an
//! open before a reboot"). So the first failure marks the directory: `LOCK` is given a length,
//! a change to its inode alone, which a full disk does not refuse. An open that finds the mark
//! empties the page cache of every file of the log before it reads any
//! ([`IoCall::DropPageCache`](crate::IoCall::DropPageCache)): the dirty pages (the last
//! process's unsynced appends, as a process crash leaves them) are written, and then every
//! page goes, to be read again from the disk. A hole then ends the active segment as a torn
//! append does, or is damage in a sealed file. The open clears the mark once it has checked
//! the files. An open has writes of its own (the newest seal's `fsync`, a torn tail zeroed
//! and flushed, files removed and created), and one of them that fails leaves the same pages
//! behind, so an open that ends in an error from its first such write on marks the directory
//! too. And a process that crashes leaves its unsynced appends dirty, for the kernel to write
//! back on its own: when that fails, the same pages stay behind with no sync of the log's to
//! hear it. The kernel reports such an error once, to the first sync-like call on the file, so
//! an open whose directory is not marked asks every file first
//! ([`IoCall::CheckWriteback`](crate::IoCall::CheckWriteback), which writes nothing), and one
//! that answers with an error marks the directory before the open reads from the disk.
//!
//! **Closing.** Dropping a `Log` syncs nothing: it leaves what a process crash leaves (step 2),
//! and the next open replays it. It does wait for a flush in progress on another thread (a
//! [`SyncPoint`]'s) to end, and a flush that starts later returns [`Error::Closed`] without
//! writing, because the directory's lock goes with the log and the files may then be another
//! log's.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use memmap2::{Mmap, MmapRaw};

use crate::compact::{Compacted, Compactor, Retired};
use crate::dir::DirLock;
use crate::error::Error;
use crate::format::{
    encode_into, encode_seal, encoded_len, header, seal_at_end, segment_start, Kind, Op, Record,
    Start, HEADER_LEN, SEAL_LEN,
};
use crate::manifest::{self, Manifest, SwitchError};
use crate::recovery::{self, Files, Then};
use crate::sys::{IoHook, Reserve, Sys, RESERVE_CHUNK};

/// How a [`Log`] sizes its segments, what it does with damage on open, and the
/// fault-injection hook for tests.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Bytes preallocated for each segment. A record larger than this gets a segment of its
    /// own, sized to fit. Default: 64 MiB. At least 4 KiB is used; more than
    /// [`MAX_SEGMENT_SIZE`] (1 TiB) is refused by [`Log::open`].
    pub segment_size: u64,
    /// What `open` does with damage in a sealed file. Default: [`RecoveryMode::Strict`].
    pub recovery: RecoveryMode,
    /// How the log's segments reserve disk space ahead of their appends. Default:
    /// [`Reserve::Allocate`]; [`Reserve::Zeroed`] for a log synced after every few appends.
    pub reserve: Reserve,
    /// Called before each durability-relevant system call (see [`IoHook`]). Default: none.
    pub io_hook: Option<IoHook>,
}

/// What [`Log::open`] does when a sealed file (a snapshot part, or a log segment before the
/// last) does not check out. A torn last append is never damage: it is cut off in any mode.
/// Nor is a file in a format version newer than this build reads: the open refuses it in
/// either mode ([`Error::NewerFormat`]), changing nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Refuse to open: [`Error::Corruption`] says where. Nothing is changed on disk, so the
    /// files can be examined, copied, or opened again with `SkipCorrupt`.
    #[default]
    Strict,
    /// Replay every record before the damage, skip the rest of that file, go on with the next
    /// one, and report each skip as a [`Damage`] ([`Log::damage`]). The records after the
    /// damage in that file are lost: a record has no marker to find again that a value's
    /// bytes could not imitate, so the scan does not guess. Skipping can bring back an entry
    /// whose delete was in the lost part. A compaction skips damage in its inputs the same
    /// way, and its install reports what the open had not ([`Compacted::damage`]).
    SkipCorrupt,
}

/// A part of a sealed file that [`RecoveryMode::SkipCorrupt`] skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file's kind ([`Kind::Log`] for `{segment}.seg`, [`Kind::Snapshot`] for `.snap`).
    pub kind: Kind,
    /// The file's id.
    pub segment: u64,
    /// Where the damage starts; everything from here to the end of the file was skipped.
    pub offset: u64,
    /// How many bytes were skipped: from `offset` to the file's seal, or without a whole seal
    /// at its end, to the last byte that is not zero. The zeros after that byte are not
    /// counted: they are space preallocated and never written (a file whose seal was torn
    /// before it was cut after the seal keeps its whole preallocation), or reserved by
    /// writing zeros, and held no record. So a skipped record's own last bytes, if they are
    /// zeros at the very end of such a file, are not counted either.
    pub bytes_skipped: u64,
    /// What was wrong there.
    pub reason: &'static str,
}

/// The torn append that [`Log::open`] cut off the active segment: the record it found there
/// did not check out, so its bytes and everything after them were zeroed (in either
/// [`RecoveryMode`]) before anything else was appended.
///
/// A torn append is the last record of the active segment, cut short by a crash. The scan
/// cannot tell it from damage to a record that had others after it (a record has no marker to
/// find again), so those others would go with it: `bytes` says how much was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The active segment's id.
    pub segment: u64,
    /// Where the record that did not check out started.
    pub offset: u64,
    /// The bytes cut: from `offset` to the last byte after it that was not zero (the rest of
    /// the segment was zeros already, whether preallocated or reserved by writing zeros),
    /// plus the written part of each segment removed after it, if the log ended before them.
    pub bytes: u64,
    /// What was wrong with the record there.
    pub reason: &'static str,
}

impl Damage {
    /// The damage at `offset` in file `id` of `kind`, whose skipped part ends at `len`:
    /// everything from `offset` on is skipped, and the bytes before `len` are counted.
    pub(crate) fn at(
        kind: Kind,
        id: u64,
        offset: usize,
        len: usize,
        reason: &'static str,
    ) -> Damage {
        Damage {
            kind,
            segment: id,
            offset: offset as u64,
            bytes_skipped: len.saturating_sub(offset) as u64,
            reason,
        }
    }
}

/// The largest segment size a [`Log`] opens with: 1 TiB.
///
/// A segment is preallocated (sparse) to its full size and mapped whole, so its size must fit
/// a file and an address space: a size beyond what the file system or the kernel takes would
/// fail only deep in `ftruncate` or `mmap`, with an error that does not say which option was
/// wrong (and `u64::MAX` fits neither). No log needs segments this large: a record is at most
/// 4 GiB ([`Error::TooLarge`]), and a larger segment only makes compaction coarser.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 40;

impl Options {
    /// These options with segments of `bytes` bytes. Default: 64 MiB. Sizes below 4 KiB are
    /// raised to 4 KiB; sizes above [`MAX_SEGMENT_SIZE`] (1 TiB) make [`Log::open`] fail with
    /// [`Error::SegmentSize`] before it touches the directory.
    #[must_use]
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// These options with `mode` for damage found on open.
    #[must_use]
    pub fn with_recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }

    /// These options with segments that reserve their disk space `how`.
    #[must_use]
    pub fn with_reserve(mut self, how: Reserve) -> Self {
        self.reserve = how;
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
            recovery: RecoveryMode::Strict,
            reserve: Reserve::Allocate,
            io_hook: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("recovery", &self.recovery)
            .field("reserve", &self.reserve)
            .field("io_hook", &self.io_hook.is_some())
            .finish()
    }
}

/// What the records of a log add up to: the figures a caller weighs compaction by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Records in the log's files (snapshot parts and segments above the base).
    pub records: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// How many of them are puts.
    pub puts: u64,
    /// The puts' encoded bytes.
    pub put_bytes: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, op: Op<'_>, len: usize) {
        self.records += 1;
        self.bytes += len as u64;
        if let Op::Put { .. } = op {
            self.puts += 1;
            self.put_bytes += len as u64;
        }
    }

    /// `self` without `part`, which it includes.
    pub(crate) fn minus(self, part: Usage) -> Usage {
        Usage {
            records: self.records - part.records,
            bytes: self.bytes - part.bytes,
            puts: self.puts - part.puts,
            put_bytes: self.put_bytes - part.put_bytes,
        }
    }

    pub(crate) fn plus(self, other: Usage) -> Usage {
        Usage {
            records: self.records + other.records,
            bytes: self.bytes + other.bytes,
            puts: self.puts + other.puts,
            put_bytes: self.put_bytes + other.put_bytes,
        }
    }
}

/// An open log. Single-writer: callers that share one wrap it in a lock.
///
/// `repr(C)`, the fields every append writes first: `next_seq`, `usage`, and the active
/// segment's `map` and `end` fill the 64 bytes after a mutex word (the durable cache's lock
/// puts the log right after its own, on a line of its own), so that an append at two threads
/// pulls one line of the log from the other core instead of several (`docs/BENCHMARKS.md`,
/// "Durability").
#[derive(Debug)]
#[repr(C)]
pub struct Log {
    next_seq: u64,
    usage: Usage,
    active: Segment,
    pub(crate) dir: PathBuf,
    /// Held for the log's lifetime, and by a [`Compactor`] while it runs: the lock on
    /// `dir/LOCK` that makes the maps sound.
    pub(crate) lock: Arc<DirLock>,
    /// The log segments before the active one, above the manifest's base, in id order:
    /// sealed, or in `rolled`, waiting for the next sync to seal them.
    sealed: Vec<u64>,
    /// The rolled segments not sealed yet, shared with the [`SyncPoint`]s, which seal them.
    rolled: Arc<Rolls>,
    manifest: Manifest,
    /// The next file id, for a roll or a snapshot part (shared with a running [`Compactor`]).
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) segment_size: u64,
    pub(crate) recovery: RecoveryMode,
    pub(crate) sys: Sys,
    /// The kind of the first I/O error, once there was one. Shared with the [`SyncPoint`]s,
    /// whose flushes run outside `&mut Log` and can fail too.
    failed: Arc<Failure>,
    damage: Vec<Damage>,
    torn_tail: Option<TornTail>,
}

/// How far past the end an append prefetches the lines later appends will write.
const PREFETCH_AHEAD: usize = 512;
/// How much an append prefetches: as much as it wrote, up to this (longer records are
/// streams the CPU's own prefetcher follows).
const PREFETCH_SPAN: usize = 256;
/// How far ahead of the end of its records the active segment's pages are prefaulted
/// ([`Log::prefault`]).
pub const PREFAULT_AHEAD: usize = 256 << 10;
/// How much one [`Prefault`] covers at most.
pub const PREFAULT_CHUNK: usize = 128 << 10;

/// Asks the CPU to fetch the cache line holding `p` for writing, without waiting for it
/// (`prefetchw`; a no-op where there is none). A hint only: nothing is read or written, and
/// an address with no page behind it is simply ignored, never a fault.
#[inline(always)]
fn prefetch_write(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch reads no memory architecturally and cannot fault, whatever `p` is.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// A segment file being written: the active log segment, or a snapshot part.
///
/// `repr(C)`: what an append reads and writes first (see [`Log`]).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Segment {
    /// Shared with the [`SyncPoint`]s taken in this segment, which flush ranges of it.
    map: Arc<Mapped>,
    /// Where the next record goes.
    end: usize,
    /// Disk space is reserved for every byte before this offset (`sys.rs`).
    reserved: usize,
    /// A [`Prefault`] was handed out for every page before this offset.
    prefaulted: usize,
    pub(crate) id: u64,
    file: File,
    /// How more is reserved.
    reserve: Reserve,
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
            // SAFETY: (1) `map` is `MmapRaw::map_raw` of a segment file, a shared mapping;
            // (2) whole pages below the one holding `to` lie before every later write (appends
            // go at or after `to`: the segment's end when this point was taken), and no
            // reference into them is held: a write's slice lives only inside
            // `Segment::write_with`, at the end; (3) the file is this log's, under the
            // directory's lock, so nothing else changes its bytes.
            unsafe { Sys::release(&self.map, from, to) };
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
    failed: Arc<Failure>,
    /// Sealed before the active segment is flushed (step 3 of the module doc).
    rolled: Arc<Rolls>,
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
    /// already was; [`Error::Closed`] if its log was dropped first (a log that is gone
    /// makes nothing durable: [`Log`]'s drop).
    pub fn flush(self) -> Result<u64, Error> {
        let (map, to) = (&self.map, self.to);
        self.rolled
            .seal_all_then(&self.failed, || map.flush_to(to))?;
        Ok(self.through)
    }
}

/// Pages of the active segment that appends will soon write, to be faulted in by
/// [`run`](Self::run) without the log's lock (see [`Log::prefault`]).
#[derive(Debug)]
#[must_use = "a prefault does nothing until it is run"]
pub struct Prefault {
    map: Arc<Mapped>,
    from: usize,
    len: usize,
    /// Whether the log has failed, and the lock its flushes run under: a prefault runs one at
    /// a time with them, and not at all once the log has failed or closed ([`run`](Self::run)).
    failed: Arc<Failure>,
    rolled: Arc<Rolls>,
}

impl Prefault {
    /// The byte offsets in the active segment it covers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.from..self.from + self.len
    }

    /// Faults the pages in, writable (`madvise(MADV_POPULATE_WRITE)`): the kernel allocates
    /// and zeroes each page-cache page the file did not have yet and maps it, as the first
    /// store to it would. An optimisation only: a failure (an older kernel without the advice,
    /// a full disk, a segment sealed and cut meanwhile) is ignored, and the appends then fault
    /// the pages themselves as they always could.
    ///
    /// A write fault makes its page dirty, and that includes a page whose records a flush tried
    /// to write and could not: the kernel keeps such a page cached and clean, holding records
    /// that never reached the disk, and the next writeback of it (the kernel's own, or the
    /// `fsync` of a reopen, which writes what the last process left dirty) would put them there,
    /// a write of the log's after it failed. So this runs one at a time with the flushes, and
    /// does nothing once the log has failed or closed (the module doc's "Failure"). The durable
    /// cache runs its prefaults on a thread of their own, and one handed out before a failure,
    /// on a thread that fell behind, ran after it: the reopen in the same boot found a record
    /// whose flush had failed, or failed with `EIO` once the page was written back while the
    /// disk still failed (`a_prefault_run_after_a_failed_sync_puts_nothing_on_the_disk` in
    /// `tests/failing_disk.rs`).
    pub fn run(self) {
        let Prefault {
            map,
            from,
            len,
            failed,
            rolled,
        } = self;
        rolled.unless_failed(&failed, || {
            let _ = map
                .map
                .advise_range(memmap2::Advice::PopulateWrite, from, len);
        });
    }
}

impl Drop for Log {
    /// Closes the log to its [`SyncPoint`]s before the fields go, the directory's lock with
    /// them: waits for a flush in progress on another thread (a group commit's leader, say,
    /// whose point was taken before this log was dropped), and makes any later flush return
    /// [`Error::Closed`] without touching the files, which may by then be another log's.
    /// Nothing is synced here (the module doc's "Closing").
    fn drop(&mut self) {
        *lock(&self.rolled.open) = false;
    }
}

/// The rolled segments waiting for a sync to seal them (step 4 of the module doc), oldest
/// first.
#[derive(Debug)]
pub(crate) struct Rolls {
    dir: PathBuf,
    sys: Sys,
    waiting: Mutex<VecDeque<Rolled>>,
    /// Held through each flush ([`seal_all_then`](Self::seal_all_then)) and each other sync
    /// of the log's files ([`exclusive`](Self::exclusive)), so that two flushes
    /// seal one file at a time, in order, and the second sees the first's failure, without
    /// holding `waiting` (which a roll, under the writer's lock, takes) across the I/O.
    ///
    /// What it holds is whether the log is still open. [`Log`]'s drop clears it under this
    /// lock, before the directory's lock goes with the log's fields: a flush running on
    /// another thread finishes first, and one that starts later writes nothing. Seals and
    /// flushes write the log's files, which is sound only while the directory is locked.
    open: Mutex<bool>,
}

/// A rolled segment, by name: a segment's file is opened again to be sealed, so waiting
/// segments hold no descriptor.
#[derive(Debug, Clone, Copy)]
struct Rolled {
    id: u64,
    /// Where its records end: the seal goes here.
    end: usize,
    /// The sequence number of the record after its last.
    next_seq: u64,
}

impl Rolls {
    fn new(dir: &Path, sys: &Sys) -> Rolls {
        Rolls {
            dir: dir.to_path_buf(),
            sys: sys.clone(),
            waiting: Mutex::new(VecDeque::new()),
            open: Mutex::new(true),
        }
    }

    fn push(&self, rolled: Rolled) {
        lock(&self.waiting).push_back(rolled);
    }

    /// Seals every waiting segment, oldest first, then runs `then` (the active segment's
    /// flush): one flush of the log, run one at a time. None runs once the log has `failed`,
    /// and a failure here fails the log before the next flush may start, so no flush retries
    /// what an earlier one found failed (the module doc's "Failure"), whichever thread runs
    /// it. Once this returns `Ok`, every segment rolled before the call is sealed.
    ///
    /// # Errors
    /// [`Error::Failed`] if the log already was; [`Error::Io`], and the log is failed;
    /// [`Error::Closed`] once the log is dropped.
    pub(crate) fn seal_all_then(
        &self,
        failed: &Failure,
        then: impl FnOnce() -> io::Result<()>,
    ) -> Result<(), Error> {
        self.exclusive(failed, || self.seal_waiting().and_then(|()| then()))
    }

    /// Runs `sync` (a flush, or another sync of the log's files: a `Reserve::Zeroed`
    /// reservation's) one at a time with every other: none runs once the log has `failed`,
    /// and a failure here fails the log before the next may start.
    ///
    /// # Errors
    /// [`Error::Failed`] if the log already was; [`Error::Io`], and the log is failed;
    /// [`Error::Closed`] once the log is dropped.
    pub(crate) fn exclusive(
        &self,
        failed: &Failure,
        sync: impl FnOnce() -> io::Result<()>,
    ) -> Result<(), Error> {
        let open = lock(&self.open);
        if !*open {
            return Err(Error::Closed);
        }
        failed.check()?;
        let result = sync().map_err(|e| {
            failed.record(&e);
            Error::Io(e)
        });
        drop(open);
        result
    }

    /// Runs `write`, a write of the log's files whose own failure does not matter (a
    /// [`Prefault`]'s), one at a time with every flush, as [`exclusive`](Self::exclusive) runs a
    /// sync, unless the log has failed or closed: after a failure nothing may make a page dirty
    /// again that a failed writeback left clean.
    fn unless_failed(&self, failed: &Failure, write: impl FnOnce()) {
        let open = lock(&self.open);
        if *open && failed.check().is_ok() {
            write();
        }
        drop(open);
    }

    /// Seals every waiting segment, oldest first; the caller holds `open`.
    fn seal_waiting(&self) -> io::Result<()> {
        loop {
            let Some(next) = lock(&self.waiting).front().copied() else {
                return Ok(());
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(&self.dir, Kind::Log, next.id))?;
            seal_file(&self.sys, &file, next.id, next.end, next.next_seq)?;
            lock(&self.waiting).pop_front();
        }
    }
}

/// Whether the log has failed (the module doc's "Failure"): the kind of its first I/O error,
/// shared by everything that writes the log's files, under `&mut Log` or not (the
/// [`SyncPoint`]s' flushes). The first failure marks the directory for the next open.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: OnceLock<io::ErrorKind>,
    /// The directory's lock, whose `LOCK` file carries the mark. Not kept alive by this: a
    /// failure is recorded only while the log is open (under `&mut Log`, or in
    /// [`Rolls::exclusive`], which a dropped log closes before its lock goes).
    lock: Weak<DirLock>,
}

impl Failure {
    fn new(lock: &Arc<DirLock>) -> Failure {
        Failure {
            kind: OnceLock::new(),
            lock: Arc::downgrade(lock),
        }
    }

    /// `Err(Failed)` once the log has failed.
    fn check(&self) -> Result<(), Error> {
        match self.kind.get() {
            Some(&kind) => Err(Error::Failed { kind }),
            None => Ok(()),
        }
    }

    /// Records `err` as the log's failure, unless an earlier one is already. The first marks
    /// the directory ([`DirLock::mark_failed`]). If even that fails, the caller still gets the
    /// error; only a reopen before a reboot, which the mark was for, is then left unguarded.
    fn record(&self, err: &io::Error) {
        if self.kind.set(err.kind()).is_ok() {
            if let Some(lock) = self.lock.upgrade() {
                let _ = lock.mark_failed();
            }
        }
    }
}

/// Guards `Log::open`'s writes: dropped before [`finished`](Self::finished), as an open that
/// ends in an error once it has begun them drops it, it marks the directory failed
/// ([`DirLock::mark_failed`]), as a failed log does. Any error there marks, one that failed no
/// write included: a mark only costs the next open the time to read the files from the disk.
struct MarkUnlessFinished<'a>(&'a DirLock);

impl MarkUnlessFinished<'_> {
    fn finished(self) {
        std::mem::forget(self);
    }
}

impl Drop for MarkUnlessFinished<'_> {
    fn drop(&mut self) {
        // As in `Failure::record`: if even the mark fails, the open's error still goes back.
        let _ = self.0.mark_failed();
    }
}

/// Drops every file of the log in `dir` from the page cache (see [`Sys::drop_page_cache`]), so
/// that what is read of them next comes from the disk. The `LOCK` file keeps its pages: it
/// holds no data, and its length is the mark that asked for this.
pub(crate) fn drop_page_cache(sys: &Sys, dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "LOCK" {
            sys.drop_page_cache(&File::open(entry.path())?)?;
        }
    }
    Ok(())
}

/// Whether a writeback of a file of the log in `dir` failed unheard ([`Sys::check_writeback`]):
/// pages a crashed process left dirty that the kernel could not write, cached and clean since,
/// as if on disk. Every file is asked, not only until one answers yes: each hears its own
/// error once, and one left unheard would fail the `fsync` that [`drop_page_cache`] begins
/// with, and the open with it.
fn writeback_failed(sys: &Sys, dir: &Path) -> io::Result<bool> {
    let mut failed = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "LOCK" {
            failed |= sys.check_writeback(&File::open(entry.path())?).is_err();
        }
    }
    Ok(failed)
}

/// Locks `m`. The log's mutexes guard plain lists, each changed by one statement, so one
/// poisoned by a panic elsewhere still holds consistent state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seals file `id`, whose records end at `end` and are followed by record `next_seq`: makes
/// the records durable, then writes the seal after them, cuts the file right after the seal,
/// and makes that durable (step 4 of the module doc). The order is the point: a seal on disk
/// proves the records before it are there too.
fn seal_file(sys: &Sys, file: &File, id: u64, end: usize, next_seq: u64) -> io::Result<()> {
    sys.sync_data(file)?;
    sys.write_seal(file, end, &encode_seal(id, next_seq))?;
    sys.truncate(file, (end + SEAL_LEN) as u64)?;
    sys.sync_file(file)
}

pub(crate) fn segment_path(dir: &Path, kind: Kind, id: u64) -> PathBuf {
    dir.join(kind.file_name(id))
}

/// The ids of the files of `kind` in `dir`, ascending. Only names as [`segment_path`] makes
/// them (twenty digits) count: a stray `7.seg` is no file of the log's.
pub(crate) fn file_ids(dir: &Path, kind: Kind) -> io::Result<Vec<u64>> {
    let suffix = format!(".{}", kind.extension());
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let digits = name.strip_suffix(&suffix);
        let digits = digits.filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()));
        if let Some(id) = digits.and_then(|n| n.parse().ok()) {
            // Anything but a regular file under a log file's name is refused before it is
            // opened: opening a FIFO to read it would wait for a writer forever.
            if !fs::metadata(entry.path())?.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} has a log file's name but is not a regular file",
                        entry.path().display()
                    ),
                ));
            }
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Which files of a log directory make up the log under its manifest, and which a compaction
/// left behind. Both [`Log::open`] (which removes the leftovers) and
/// [`LogDir::open`](crate::LogDir::open) (which only lists them) start here.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The log segments above the manifest's base, ascending. The last may be an unfinished
    /// roll ([`unfinished_roll`]).
    pub(crate) segments: Vec<u64>,
    /// Snapshot parts the manifest does not list, and segments at or below its base.
    pub(crate) stale: Vec<(Kind, u64)>,
    /// The id after every id in use, left over or named by the manifest.
    pub(crate) next_id: u64,
}

/// The layout of the log in `dir` under `manifest` (see [`Layout`]).
///
/// # Errors
/// [`Error::BadManifest`] if the manifest names a snapshot part that is missing; [`Error::Io`].
pub(crate) fn layout(dir: &Path, manifest: &Manifest) -> Result<Layout, Error> {
    let mut segments = file_ids(dir, Kind::Log)?;
    let snapshots = file_ids(dir, Kind::Snapshot)?;
    let max_id = segments.iter().chain(&snapshots).chain(&manifest.snapshot);
    let max_id = max_id.copied().max().unwrap_or(0).max(manifest.base);
    for id in &manifest.snapshot {
        if snapshots.binary_search(id).is_err() {
            return Err(Error::BadManifest {
                reason: "it names a snapshot part that is missing",
            });
        }
    }
    // What a compaction left behind: parts of a snapshot that was never installed, or of
    // one since replaced; segments its snapshot replaced.
    let stale_segments = segments.iter().take_while(|&&id| id <= manifest.base);
    let stale_parts = snapshots
        .iter()
        .filter(|id| !manifest.snapshot.contains(id));
    let stale = stale_segments
        .map(|&id| (Kind::Log, id))
        .chain(stale_parts.map(|&id| (Kind::Snapshot, id)))
        .collect();
    segments.retain(|&id| id > manifest.base);
    // Ids grow by one a file from 1, so the largest there is was never made by a log.
    let next_id = max_id.checked_add(1).ok_or(Error::Corruption {
        segment: max_id,
        offset: 0,
        reason: "its id is the largest there is, which no log makes",
    })?;
    Ok(Layout {
        segments,
        stale,
        next_id,
    })
}

/// Whether log segment `id` in `dir` is a roll that crashed before its header was written:
/// no header, and zeros as far as anything was written. Nothing was ever appended to such a
/// file. A segment with its header, or with any other bytes, is not one (a scan reports what
/// is wrong with the latter).
pub(crate) fn unfinished_roll(dir: &Path, id: u64) -> io::Result<bool> {
    let mut file = File::open(segment_path(dir, Kind::Log, id))?;
    let mut head = Vec::new();
    (&file).take(HEADER_LEN as u64).read_to_end(&mut head)?;
    if head[..] == header(Kind::Log, id) || head.iter().any(|&b| b != 0) {
        return Ok(false);
    }
    // A roll's file is one segment long; a longer one is something else, which the scan
    // judges.
    let len = file.metadata()?.len();
    if len > MAX_SEGMENT_SIZE {
        return Ok(false);
    }
    // (`written_len` moves the file's offset, hence the seek.)
    let written = written_len(&file, usize::try_from(len).unwrap_or(usize::MAX)) as u64;
    file.seek(io::SeekFrom::Start(0))?;
    // Read a piece at a time, up to the first byte that is not zero: a damaged or foreign file
    // (sparse, with data at a terabyte) may be far larger than memory.
    let mut rest = file.take(written);
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        match rest.read(&mut piece) {
            Ok(0) => return Ok(true),
            Ok(n) if piece[..n].iter().any(|&b| b != 0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// How much of `file` (`len` bytes) may hold anything but zeros: where its first hole starts,
/// if no data follows that hole, else all of it. Segments are preallocated sparse (`set_len`)
/// and written front to back, so past the last written page they are one hole, and recovery
/// need not fault in (or read from disk) the untouched rest.
///
/// A hole of less than a page at the very end is read all the same: it costs next to nothing,
/// and it may be the end of a seal. A file cut right after its seal, whose last bytes are
/// zeros, ends in a partial block of zeros when those bytes are all of its last block, and a
/// sparse copy (`cp --sparse=always`, `rsync -S`) leaves that block a hole. Cut off there, the
/// seal read as a record cut short, and a sealed file as corrupt
/// (`a_sparse_copy_of_a_log_opens_as_the_log_does` in `tests/log.rs`).
#[cfg(target_os = "linux")]
pub(crate) fn written_len(file: &File, len: usize) -> usize {
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
    // Less than a page of hole at the end: read it (see above).
    let short_tail = len.saturating_sub(hole) < crate::sys::page_size();
    if no_data_after && !short_tail {
        hole.min(len)
    } else {
        len // data past a hole (pages of a torn append written out of order): check it all
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn written_len(_file: &File, len: usize) -> usize {
    len
}

/// How much of file `id` of `kind` in `dir` may hold anything but zeros ([`written_len`]).
pub(crate) fn written_part(dir: &Path, kind: Kind, id: u64) -> io::Result<usize> {
    let file = File::open(segment_path(dir, kind, id))?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    Ok(written_len(&file, len))
}

/// A new file id from `next`, for a log segment or a snapshot part. Relaxed: ids only need
/// to be distinct and to grow in the order they are taken, which one atomic counter gives
/// whatever the ordering; the files themselves are made durable by `fsync`s.
///
/// # Errors
/// Once the ids are used up: `u64::MAX` is no id a log makes (`layout` refuses a log that
/// holds it, as it leaves no next id), and the counter must not wrap around to ids that sort
/// before the log's files.
pub(crate) fn take_id(next: &AtomicU64) -> io::Result<u64> {
    next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
        .map_err(|_| io::Error::other("the log's file ids are used up"))
}

/// Maps file `id` of `kind` read-only: a sealed file, or, while `Log::open` reads the log
/// before anything is written, any segment.
///
/// The caller holds the directory's lock (a [`Log`]'s, or a [`Compactor`]'s clone of it) for
/// as long as the map lives.
pub(crate) fn map_sealed(dir: &Path, kind: Kind, id: u64) -> io::Result<Mmap> {
    Ok(open_sealed(dir, kind, id)?.1)
}

/// [`map_sealed`], with the open file, for a caller that also asks it something (such as
/// [`written_len`]) without opening it again.
fn open_sealed(dir: &Path, kind: Kind, id: u64) -> io::Result<(File, Mmap)> {
    let file = File::open(segment_path(dir, kind, id))?;
    // SAFETY: the file is mapped read-only while the caller holds the exclusive lock on
    // `dir/LOCK`, which every `Log` takes before touching a file, so no cooperating process
    // writes it. In this process a sealed file is never written or truncated again (a `Log`
    // writes only its active segment and seals a rolled one, a `Compactor` only the parts it
    // creates; `begin_compaction` seals every rolled segment before a `Compactor` maps it),
    // and `Log::open` drops its maps of a segment before it writes, seals or removes it.
    // Another program writing to the directory behind the lock is outside the log's contract
    // (as for any database's files).
    let map = unsafe { Mmap::map(&file) }?;
    Ok((file, map))
}

/// The files of the log in `dir`, as `Log::open` hands them to [`recovery::judge`]: mapped
/// read-only ([`open_sealed`]) under the directory's exclusive lock, which `open` holds, and
/// before it writes anything.
struct MappedFiles<'a>(&'a Path);

/// A file mapped read-only, seen up to where only zeros follow ([`written_len`]).
struct Written {
    map: Mmap,
    len: usize,
}

impl std::ops::Deref for Written {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

impl Files for MappedFiles<'_> {
    type Bytes = Written;

    fn read(&self, kind: Kind, id: u64) -> Result<(Written, usize), Error> {
        let (file, map) = open_sealed(self.0, kind, id)?;
        // A rolled or active segment is mostly a hole: only its written part is scanned.
        let written = written_len(&file, map.len());
        let len = map.len();
        Ok((Written { map, len: written }, len))
    }

    fn ends_with_seal(&self, id: u64) -> Result<bool, Error> {
        Ok(seal_at_end(id, &map_sealed(self.0, Kind::Log, id)?).is_some())
    }

    fn start(&self, id: u64) -> Result<Start, Error> {
        Ok(segment_start(id, &map_sealed(self.0, Kind::Log, id)?))
    }

    fn written(&self, id: u64) -> Result<u64, Error> {
        Ok(written_part(self.0, Kind::Log, id)? as u64)
    }

    fn path(&self, kind: Kind, id: u64) -> PathBuf {
        segment_path(self.0, kind, id)
    }
}

/// Finishes log segment `id` in `dir`, of format version 1 and last in the log, as version 1
/// finished a segment at its roll: made durable, then cut after its records, at `end` (a torn
/// tail is cut with the rest), durably before the next segment is created.
fn finish_version_1(sys: &Sys, dir: &Path, id: u64, end: usize) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment_path(dir, Kind::Log, id))?;
    sys.sync_data(&file)?;
    sys.truncate(&file, end as u64)?;
    sys.sync_file(&file)
}

/// `fsync`s sealed log segment `id`, so that its seal, whether or not the process that wrote
/// it synced it, is on disk.
fn sync_sealed(sys: &Sys, dir: &Path, id: u64) -> io::Result<()> {
    sys.sync_file(&File::open(segment_path(dir, Kind::Log, id))?)
}

impl Log {
    /// Opens (or creates) the log in `dir`, handing every record it holds to `replay`, in
    /// order. If it fails, `replay` may already have seen some records (those before the
    /// damage, say): a caller builds nothing it keeps from them until the open succeeds.
    ///
    /// # Errors
    /// [`Error::Locked`] if another `Log`, in this process or another, has `dir` open;
    /// [`Error::Corruption`] for damage outside the active segment's tail (in
    /// [`RecoveryMode::Strict`]); [`Error::NewerFormat`], in either mode, for a file a newer
    /// Larder wrote, before any record is handed to `replay` or anything in the directory
    /// changes (but for its `LOCK` file, as for any refused open); [`Error::BadManifest`];
    /// [`Error::SegmentSize`] for [`Options::segment_size`] over [`MAX_SEGMENT_SIZE`],
    /// [`Error::EmptyPath`] for a `dir` of `""` (nothing is created then); [`Error::Path`] if
    /// `dir` cannot be created or its `LOCK` file opened or locked; [`Error::Io`].
    pub fn open(
        dir: impl AsRef<Path>,
        options: Options,
        mut replay: impl FnMut(Record<'_>),
    ) -> Result<Log, Error> {
        Log::open_checked(dir, options, |record| {
            replay(record);
            Ok::<(), Error>(())
        })
    }

    /// [`open`](Self::open), with a `replay` that may refuse a record: the first refusal ends
    /// the replay, and the open returns it once the files are read, before it changes
    /// anything in the directory (no torn tail is cut, no file created or removed but the
    /// `LOCK` file of a directory that has none), as a strict open that finds damage does.
    /// The durable cache refuses a record its codecs do not decode: a retry with the right
    /// types must find the files as they were.
    ///
    /// The first problem in log order is the one returned: a refusal, also when a strict open
    /// finds damage after the refused record (the replay never reaches a record after
    /// damage, so damage before it is returned as [`Error::Corruption`]).
    ///
    /// # Errors
    /// The refusal, or any error of [`open`](Self::open).
    pub fn open_checked<E: From<Error>>(
        dir: impl AsRef<Path>,
        options: Options,
        replay: impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<Log, E> {
        Log::open_replaying(dir.as_ref(), options, replay)?
    }

    /// [`open_checked`](Self::open_checked): the log's error outside, the refusal inside.
    fn open_replaying<E>(
        dir: &Path,
        options: Options,
        mut replay: impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<Result<Log, E>, Error> {
        let dir = dir.to_path_buf();
        // Checked before the directory is touched: a refused open creates nothing.
        if dir.as_os_str().is_empty() {
            return Err(Error::EmptyPath);
        }
        if options.segment_size > MAX_SEGMENT_SIZE {
            return Err(Error::SegmentSize {
                size: options.segment_size,
            });
        }
        if fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            let message = format!("{} exists and is not a directory", dir.display());
            return Err(io::Error::new(io::ErrorKind::NotADirectory, message).into());
        }
        // The directories about to be created, innermost first: each one's name is durable
        // only once its parent is synced (below, once the lock is held).
        let created: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && fs::metadata(d).is_err())
            .map(Path::to_path_buf)
            .collect();
        fs::create_dir_all(&dir).map_err(|source| Error::Path {
            action: "create the log directory",
            path: dir.clone(),
            source,
        })?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| Error::Path {
                action: "open",
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { dir }),
            Err(fs::TryLockError::Error(source)) => {
                return Err(Error::Path {
                    action: "lock",
                    path: lock_path,
                    source,
                })
            }
        }
        // Unlocked as it goes from here on, an open refused below included: its retry must not
        // find the lock held by a child forked meanwhile (`DirLock`).
        let lock = DirLock::new(lock);
        let segment_size = options.segment_size.max(4096);
        let sys = Sys::new(options.io_hook);
        // Outermost first, so that each synced name leads to a directory already durable.
        for new_dir in created.iter().rev() {
            let parent = new_dir.parent().filter(|p| !p.as_os_str().is_empty());
            sys.sync_dir(parent.unwrap_or(Path::new(".")))?;
        }
        // A log here failed, or the kernel could not write back what a crashed process left
        // dirty (the module doc's "Failure"): the page cache may hold pages that never reached
        // the disk, so every file is read from the disk, before any is read. A failed writeback
        // is heard of once, so the directory is marked before anything else, as a failed log
        // marks it: an open that stopped short would leave the next one nothing to hear.
        let marked = lock.marked_failed()? || {
            let unheard = writeback_failed(&sys, &dir)?;
            if unheard {
                lock.mark_failed()?;
            }
            unheard
        };
        if marked {
            drop_page_cache(&sys, &dir)?;
        }
        let manifest = manifest::load(&dir)?;
        let prepared = manifest::unfinished(&dir)?;
        let Layout {
            segments: mut ids,
            stale,
            next_id,
        } = layout(&dir, &manifest)?;
        // A crash while a roll created the next segment can leave it without even a header:
        // nothing was ever appended to it, so it goes, and its predecessor stays active. Only
        // the last can be one (the next roll needs its header written first, and this open
        // removes it), so a segment of zeros before it is damage, which `scan` reports. It
        // goes once the log has checked out, before a segment is created after it: a strict
        // open that finds damage changes nothing, and a retry finds the same files.
        let unfinished = match ids.last() {
            Some(&last) if unfinished_roll(&dir, last)? => ids.pop(),
            _ => None,
        };
        let next_id = Arc::new(AtomicU64::new(next_id));
        let take_id = || take_id(&next_id);
        let mut usage = Usage::default();
        let mut refused = None;
        // What to make of the files is decided before anything is changed: a strict open that
        // finds damage returns here, and a retry finds the same files.
        let judgment = recovery::judge(
            &MappedFiles(&dir),
            manifest.base,
            &manifest.snapshot,
            &ids,
            options.recovery,
            |_, batch| {
                for &r in batch {
                    usage.add(r.op(), r.len());
                    if refused.is_none() {
                        refused = replay(r).err();
                    }
                }
            },
        );
        // So does a record the caller refused, before any error the files gave: the first
        // problem in log order is the one returned. The judge hands over no record after
        // damage it makes an error (`recovery`), so a refusal comes before that damage, which
        // the judge, reading on to the end, finds later.
        if let Some(refusal) = refused {
            return Ok(Err(refusal));
        }
        let judgment = judgment?;
        let damage: Vec<Damage> = judgment.damage().cloned().collect();
        // From here on the open writes: it syncs, zeroes, removes and creates. One of those
        // that fails leaves what a failed log leaves (a write whose writeback failed stays in
        // the page cache, clean, whoever asked for it), so an open that ends here in an error
        // marks the directory too, and the next open reads from the disk.
        let unfinished_open = MarkUnlessFinished(&lock);
        let rolled = Arc::new(Rolls::new(&dir, &sys));
        let mut sealed = Vec::new();
        let mut append = None;
        let mut cut = Vec::new();
        let segments = &judgment.files[manifest.snapshot.len()..];
        debug_assert_eq!(segments.len(), ids.len(), "a verdict for each segment");
        // The newest seal kept may be one a crash left in the page cache (`seal_file` stopped
        // before its `fsync`; each older one was on disk before the next was begun): it goes
        // on disk before anything later does (the module doc's "Recovery").
        let newest_seal =
            ids.iter().zip(segments).rev().find(|(_, judged)| {
                judged.then == Then::Keep && judged.verdict.seal_next.is_some()
            });
        if let Some((&id, _)) = newest_seal {
            sync_sealed(&sys, &dir, id)?;
        }
        for (&id, judged) in ids.iter().zip(segments) {
            match judged.then {
                Then::Keep => sealed.push(id),
                Then::Seal { end, next_seq } => {
                    rolled.push(Rolled { id, end, next_seq });
                    sealed.push(id);
                }
                Then::Append { end, dirty_end } => append = Some((id, end, dirty_end)),
                Then::Finish { end } => {
                    // The file stays, sealed, and a new one starts.
                    finish_version_1(&sys, &dir, id, end)?;
                    sealed.push(id);
                }
                Then::Remove => cut.push(id),
            }
        }
        if !cut.is_empty() {
            // The log ends before these: they were never synced (module doc), and go.
            for &id in &cut {
                sys.remove(&segment_path(&dir, Kind::Log, id))?;
            }
            sys.sync_dir(&dir)?;
        }
        let reopened = match append {
            Some((id, end, dirty_end)) => Some(Segment::reopen(
                &sys,
                &dir,
                id,
                end,
                dirty_end,
                options.reserve,
            )?),
            // Sealed, a damaged header skipped, or a version 1 file finished (or no segment):
            // a new one starts.
            None => None,
        };
        // Switches that never happened, and a roll's file never begun: removed only once the
        // log has checked out, as everything else an open changes (a strict open that finds
        // damage changes nothing).
        for path in &prepared {
            sys.remove(path)?;
        }
        if let Some(id) = unfinished {
            sys.remove(&segment_path(&dir, Kind::Log, id))?;
        }
        if unfinished.is_some() || !prepared.is_empty() {
            sys.sync_dir(&dir)?;
        }
        let active = match reopened {
            Some(active) => active,
            None => {
                let id = take_id()?;
                Segment::create(&sys, &dir, Kind::Log, id, segment_size, options.reserve)?
            }
        };
        // What a compaction left behind goes only now that the log it left checked out: the
        // segments its snapshot replaced are the one copy of their records should a part of
        // that snapshot be damaged, and a strict open that finds damage changes nothing. An
        // open that skipped damage keeps them too: they may hold what it skipped.
        if !stale.is_empty() && damage.is_empty() {
            for &(kind, id) in &stale {
                sys.remove(&segment_path(&dir, kind, id))?;
            }
            sys.sync_dir(&dir)?;
        }
        unfinished_open.finished();
        // The files checked out as the disk holds them, and what this open changed is on
        // disk. A mark that stays (the truncation failing, on a disk that fails) only makes the
        // next open read from the disk again.
        if marked {
            let _ = lock.clear_mark();
        }
        let lock = Arc::new(lock);
        Ok(Ok(Log {
            dir,
            failed: Arc::new(Failure::new(&lock)),
            lock,
            active,
            sealed,
            rolled,
            manifest,
            next_id,
            next_seq: judgment.next_seq,
            usage,
            segment_size,
            recovery: options.recovery,
            sys,
            damage,
            torn_tail: judgment.torn_tail().cloned(),
        }))
    }

    fn take_id(&self) -> io::Result<u64> {
        take_id(&self.next_id)
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The records in the log's files and their bytes, live or dead.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// What [`RecoveryMode::SkipCorrupt`] skipped when the log was opened, then what the
    /// compactions installed since skipped in their inputs (damage found after the open, in
    /// a file sealed or damaged since), each once; always empty in [`RecoveryMode::Strict`].
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// The torn append that opening the log cut off the active segment, if there was one (in
    /// either [`RecoveryMode`]).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// `Err(Failed)` once a write or sync has failed.
    pub fn check(&self) -> Result<(), Error> {
        self.failed.check()
    }

    /// Records `err` as the log's failure (unless an earlier one is already) and returns it.
    fn fail(&mut self, err: io::Error) -> Error {
        self.failed.record(&err);
        Error::Io(err)
    }

    /// Appends a record doing `op` and returns its sequence number. The record survives a crash
    /// of this process at once, and an OS crash after the next [`sync`](Self::sync).
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a record over 4 GiB, and [`Error::ReservedSeq`] once the
    /// sequence numbers are used up (the next would be `u64::MAX`): nothing is written, and
    /// the log stays usable (its records so far still sync). [`Error::Io`] (the log is failed
    /// from then on); [`Error::Failed`] once it is.
    pub fn append(&mut self, op: Op<'_>) -> Result<u64, Error> {
        self.check()?;
        let seq = self.next_seq;
        if seq == u64::MAX {
            // A number no record may have (`format.rs` refuses it): reached only after a record
            // numbered one short of it, or from a seal that names it, which a file can hold.
            // Refused before anything is done (no roll), as `TooLarge` is, and the log is not
            // failed: nothing went wrong on disk, and a failed log would refuse the sync that
            // makes the records before this one durable.
            return Err(Error::ReservedSeq);
        }
        let len = encoded_len(op).ok_or(Error::TooLarge)?;
        if self.active.end + len > self.active.map.map.len() {
            self.roll(len).map_err(|e| self.fail(e))?;
        }
        if self.active.reserve == Reserve::Zeroed && self.active.needs_reserve(len) {
            // This reservation ends with a sync of the active segment, the file the flushes
            // write: it runs one at a time with them, and fails the log before the next may
            // start (`Rolls::exclusive`). A failed writeback is reported once, to whichever
            // sync of the file asks first, and its pages may be marked clean: a flush running
            // beside a reservation whose sync failed could succeed without its records.
            let active = &mut self.active;
            self.rolled
                .exclusive(&self.failed, || active.reserve_for(len))?;
        }
        // `seq` is below `u64::MAX` and the record's length fits a `u32` (both checked above):
        // `encode_into` refuses nothing else.
        let encode = |out: &mut [u8]| {
            encode_into(seq, op, out).expect("a number below u64::MAX, a length within a u32")
        };
        if let Err(e) = self.active.write_with(len, encode) {
            return Err(self.fail(e));
        }
        self.next_seq += 1;
        self.usage.add(op, len);
        Ok(seq)
    }

    /// The next pages of the active segment that appends will write, once the records come
    /// within [`PREFAULT_AHEAD`] of the pages already handed out: for the caller to
    /// [`run`](Prefault::run) after it lets go of the log.
    ///
    /// The first store to a page the file never had makes the kernel allocate and zero a
    /// page-cache page, microseconds on this project's machine (`docs/BENCHMARKS.md`,
    /// "Durability"). An append that pays it does so under the lock that orders appends, and
    /// every other writer waits meanwhile, or sleeps and must be woken. Faulting the pages in
    /// ahead, without the lock, moves that cost to a thread that is not holding anyone up.
    ///
    /// Each call hands out the next [`PREFAULT_CHUNK`] at most, from where the last one ended
    /// (or the end of the records, if they overtook it), never past the space reserved on
    /// disk, so the faults cannot fail for lack of space. The pages stay zeros: the zero tail
    /// the format relies on (`format.rs`) is unchanged.
    pub fn prefault(&mut self) -> Option<Prefault> {
        let segment = &mut self.active;
        if segment.end + PREFAULT_AHEAD <= segment.prefaulted {
            return None;
        }
        let from = segment.prefaulted.max(segment.end);
        let to = (from + PREFAULT_CHUNK).min(segment.reserved);
        if to <= from {
            return None;
        }
        segment.prefaulted = to;
        Some(Prefault {
            map: Arc::clone(&segment.map),
            from,
            len: to - from,
            failed: Arc::clone(&self.failed),
            rolled: Arc::clone(&self.rolled),
        })
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
            rolled: Arc::clone(&self.rolled),
        })
    }

    /// Starts the next segment, with room for a record of `len` bytes, and leaves the full one
    /// for the next sync to seal (step 4 of the module doc).
    fn roll(&mut self, len: usize) -> io::Result<()> {
        let size = self.segment_size.max((HEADER_LEN + len) as u64);
        // The next segment reserves its space as this one does (`Options::reserve`).
        let (id, reserve) = (self.take_id()?, self.active.reserve);
        let next = Segment::create(&self.sys, &self.dir, Kind::Log, id, size, reserve)?;
        let full = std::mem::replace(&mut self.active, next);
        // The full segment is never written again, but a sync point taken before this roll
        // may keep its mapping alive until the sync that seals it; drop its page-table
        // entries now, so that the seal's `fdatasync` need not write-protect page by page
        // (`Sys::release`).
        // SAFETY: (1) a segment's mapping is `MmapRaw::map_raw` of its file, shared; (2) no
        // reference into it is held: writes borrow it only inside `Segment::write_with`, and
        // this segment takes no more; (3) the file is this log's, under the directory's lock.
        unsafe { Sys::release(&full.map.map, 0, full.end) };
        self.rolled.push(Rolled {
            id: full.id,
            end: full.end,
            next_seq: self.next_seq,
        });
        self.sealed.push(full.id);
        Ok(())
    }

    /// Begins a compaction: seals the active segment (a roll, so appends go on in a new one)
    /// and returns the [`Compactor`] that rewrites everything before it without `&mut self`.
    /// Install its result with [`install`](Self::install).
    ///
    /// # Errors
    /// As for [`append`](Self::append): a failed roll fails the log.
    pub fn begin_compaction(&mut self) -> Result<Compactor, Error> {
        self.check()?;
        // The compactor maps its inputs whole: each must be sealed (cut to its seal) first.
        self.roll(0).map_err(|e| self.fail(e))?;
        self.rolled.seal_all_then(&self.failed, || Ok(()))?;
        let inputs = self
            .manifest
            .snapshot
            .iter()
            .map(|&id| (Kind::Snapshot, id));
        let inputs = inputs.chain(self.sealed.iter().map(|&id| (Kind::Log, id)));
        Ok(Compactor {
            dir: self.dir.clone(),
            lock: Arc::clone(&self.lock),
            sys: self.sys.clone(),
            next_id: Arc::clone(&self.next_id),
            segment_size: self.segment_size,
            recovery: self.recovery,
            inputs: inputs.collect(),
            generation: self.manifest.generation,
            base: *self.sealed.last().expect("a roll just sealed a segment"),
            input_usage: self.usage,
        })
    }

    /// Switches the log over to a compaction's output: renames its prepared manifest into
    /// place and syncs the directory (module `manifest`), and returns the files the log no
    /// longer needs, to be removed without `&mut self`. What the rewrite skipped in them
    /// ([`Compacted::damage`]) joins [`damage`](Self::damage).
    ///
    /// # Errors
    /// [`Error::StaleCompaction`] if another compaction was installed since this one began,
    /// or if it began on another log;
    /// [`Error::Io`] if the rename failed with the old manifest still in force (the log goes
    /// on as before, also when the prepared manifest was removed from outside), or if the
    /// directory sync after it failed, or the rename reported a failure once the manifest on
    /// disk no longer read as the old one (then which manifest a reboot finds is unknown, and
    /// the log is failed). In every case but the last two, the compaction's output is removed.
    pub fn install(&mut self, mut done: Compacted) -> Result<Retired, Error> {
        self.check()?;
        // Another log's output (it holds that log's lock, not this one's) would rename that
        // log's manifest over this one's and retire this log's files under that log's ids.
        let foreign = !Arc::ptr_eq(&done.lock, &self.lock);
        if foreign || done.next.generation != self.manifest.generation + 1 {
            return Err(Error::StaleCompaction);
        }
        let switched = manifest::switch(&self.sys, &self.dir, &done.tmp, &self.manifest);
        if let Err(SwitchError::BeforeRename(e)) = switched {
            return Err(Error::Io(e));
        }
        // The rename is done: the files that held what the rewrite skipped are gone from the
        // log, or will be at the next open should the directory sync have failed. Its damage
        // joins the open's, once (a file damaged at the open is skipped again here).
        done.keep_parts();
        for d in done.damage.drain(..) {
            let known = |k: &Damage| (k.kind, k.segment, k.offset) == (d.kind, d.segment, d.offset);
            if !self.damage.iter().any(known) {
                self.damage.push(d);
            }
        }
        if let Err(SwitchError::AfterRename(e)) = switched {
            return Err(self.fail(e));
        }
        self.manifest = done.next.clone();
        let base = self.manifest.base;
        self.sealed.retain(|&id| id > base);
        self.usage = self.usage.minus(done.input_usage).plus(done.output_usage);
        Ok(Retired::new(
            self.dir.clone(),
            Arc::clone(&self.lock),
            self.sys.clone(),
            done.inputs(),
        ))
    }
}

impl Segment {
    /// Creates file `id` of `kind` and `size` bytes in `dir`, durably (step 1 of the module
    /// doc), to reserve its disk space `reserve`'s way.
    pub(crate) fn create(
        sys: &Sys,
        dir: &Path,
        kind: Kind,
        id: u64,
        size: u64,
        reserve: Reserve,
    ) -> io::Result<Segment> {
        let path = segment_path(dir, kind, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        sys.truncate(&file, size)?;
        let map = MmapRaw::map_raw(&file)?;
        let mut segment = Segment::mapped(sys, id, file, map, 0, reserve);
        segment.write(&header(kind, id))?;
        segment.map.flush_to(HEADER_LEN)?;
        sys.sync_file(&segment.file)?;
        sys.sync_dir(dir)?;
        Ok(segment)
    }

    /// Opens log segment `id` in `dir` again for appending, its records ending at `end`,
    /// once the bytes from there to `dirty_end` (what a torn append left, as recovery judged
    /// it) are zero again, durably, before anything is appended.
    fn reopen(
        sys: &Sys,
        dir: &Path,
        id: u64,
        end: usize,
        dirty_end: usize,
        reserve: Reserve,
    ) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(dir, Kind::Log, id))?;
        let map = MmapRaw::map_raw(&file)?;
        assert!(dirty_end <= map.len(), "the torn bytes lie in the segment");
        if dirty_end > end {
            // Only the pages that hold something are written: after an OS crash the written
            // part can run on past holes (pages that never reached the disk, and space never
            // reserved), and a store into a hole would allocate it, the whole preallocation
            // over, with a `SIGBUS` where the disk is full.
            const PAGE: usize = 4096;
            let mut from = end;
            while from < dirty_end {
                let to = ((from / PAGE + 1) * PAGE).min(dirty_end);
                // SAFETY: `from..to` lies in the mapping (the assertion above), which this
                // `Log` alone writes (the directory's exclusive lock, held by the caller); no
                // other view of the bytes is alive beyond this read (recovery's maps of the
                // file were dropped before it returned).
                let page = unsafe { std::slice::from_raw_parts(map.as_ptr().add(from), to - from) };
                if page.iter().any(|&b| b != 0) {
                    // SAFETY: as above; the read view of the page has ended.
                    unsafe { map.as_mut_ptr().add(from).write_bytes(0, to - from) };
                }
                from = to;
            }
            sys.flush(&map, end, dirty_end - end)?;
        }
        Ok(Segment::mapped(sys, id, file, map, end, reserve))
    }

    /// File `id`, mapped as `map`, its records ending at `end`. Nothing in it is known
    /// durable: a reopened segment's records may be pages the crashed process left dirty in
    /// the page cache, so the first sync flushes them too (a flush of pages already on disk
    /// writes nothing). What is reserved is not known either: reserving again from `end` is
    /// harmless.
    fn mapped(
        sys: &Sys,
        id: u64,
        file: File,
        map: MmapRaw,
        end: usize,
        reserve: Reserve,
    ) -> Segment {
        Segment {
            id,
            file,
            map: Arc::new(Mapped {
                map,
                flushed: AtomicUsize::new(0),
                sys: sys.clone(),
            }),
            end,
            reserved: end,
            prefaulted: end,
            reserve,
        }
    }

    /// Whether `len` more bytes fit.
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.end + len <= self.map.map.len()
    }

    /// Reserves space for `bytes` (and up to a chunk more), copies them into the mapping at
    /// `end`, and moves `end` past them. Nothing is written if the reservation fails.
    ///
    /// # Panics
    /// If they do not fit; callers roll to a new segment first.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_with(bytes.len(), |out| out.copy_from_slice(bytes))
    }

    /// Reserves space for `len` bytes (and up to a chunk more), lets `fill` write them in
    /// place in the mapping at `end`, and moves `end` past them. Nothing is written if the
    /// reservation fails.
    ///
    /// # Panics
    /// If they do not fit; callers roll to a new segment first.
    pub(crate) fn write_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> io::Result<()> {
        let at = self.end;
        let size = self.map.map.len();
        assert!(len <= size - at, "a record overran its segment");
        self.reserve_for(len)?;
        // SAFETY: `out` may be made, and written for as long as it lives, because:
        // 1. `at..at + len` lies inside the mapping (the assertion above), in space reserved
        //    on disk, so the stores cannot fault for lack of space (`sys.rs`).
        // 2. No other reference to those bytes exists while `out` does, and nothing else
        //    writes them: the segment is written only here, through `&mut self`, so by one
        //    thread at a time (a `Reserve::Zeroed` reservation's zeros included, written
        //    above before `out` exists); the bytes lie at or after `end`, which no
        //    `SyncPoint` covers (their flushes are system calls on earlier pages, not
        //    references); and `Log::open`'s view of the file ended before any write.
        // 3. No other process writes the file: it belongs to the directory whose exclusive
        //    `LOCK` the owning `Log` (or `Compactor`) holds for as long as it lives.
        let out = unsafe { std::slice::from_raw_parts_mut(self.map.map.as_mut_ptr().add(at), len) };
        fill(out);
        self.end += len;
        // Ask for the lines the next appends will probably write, a few records ahead. A
        // store to a line not in this core's cache must first fetch it for ownership, and
        // the lock that orders appends is released with an atomic exchange, which waits for
        // every store before it: without this, that wait was most of `append`'s time in a
        // profile (`docs/BENCHMARKS.md`, "Durability").
        let ahead = self.end + PREFETCH_AHEAD;
        for line in (ahead..(ahead + len.min(PREFETCH_SPAN)).min(size)).step_by(64) {
            // SAFETY: `line < size`, inside the mapping, which lives as long as `self`.
            prefetch_write(unsafe { self.map.map.as_ptr().add(line) });
        }
        Ok(())
    }

    /// Disk space a write of `len` bytes at the end wants reserved: up to where the
    /// prefaulting reaches too (`Log::prefault`), which stays in reserved space.
    fn wanted(&self, len: usize) -> usize {
        (self.end + len + PREFAULT_AHEAD).min(self.map.map.len())
    }

    /// Whether a write of `len` bytes at the end must reserve more space first.
    pub(crate) fn needs_reserve(&self, len: usize) -> bool {
        self.wanted(len) > self.reserved
    }

    /// Reserves the space a write of `len` bytes at the end wants (and up to a chunk more),
    /// if it is not reserved yet.
    pub(crate) fn reserve_for(&mut self, len: usize) -> io::Result<()> {
        let wanted = self.wanted(len);
        if wanted > self.reserved {
            let to = wanted
                .next_multiple_of(RESERVE_CHUNK)
                .min(self.map.map.len());
            let (from, how) = (self.reserved, self.reserve);
            self.map.sys.reserve(&self.file, from, to - from, how)?;
            self.reserved = to;
        }
        Ok(())
    }

    /// Unmaps and seals the segment, whose records are followed by record `next_seq` (step 4
    /// of the module doc). A [`SyncPoint`] still holding the mapping flushes only bytes before
    /// `end`, which the sealed file keeps.
    pub(crate) fn seal(self, next_seq: u64) -> io::Result<()> {
        let Segment {
            id, file, map, end, ..
        } = self;
        let sys = map.sys.clone();
        drop(map);
        seal_file(&sys, &file, id, end, next_seq)
    }
}
