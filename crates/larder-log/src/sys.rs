//! The system calls the log's promises rest on, each behind one door, so that a test can make
//! any of them fail (the [`IoHook`]) and the log's response to a full or failing disk is
//! tested rather than assumed.
//!
//! Writes themselves go through the memory map and cannot fail, except for space: a store into
//! a page of a sparse file that the file system cannot allocate raises `SIGBUS`, which would
//! kill the host process. So the log never writes into space it has not reserved: segments are
//! sized with `set_len` (sparse, so a reopen reads only what was written) and reserved a chunk
//! at a time just ahead of the writes, in one of two ways ([`Reserve`]). A full disk is then
//! `ENOSPC` from the reservation, an error the caller sees, instead of a signal: on ext4 that
//! really fills up, in either way (`tests/failing_disk.rs`, which died of `SIGBUS` with the
//! reservation made a no-op).
//!
//! The two ways differ in what a later sync of records costs. `fallocate` allocates blocks
//! marked *unwritten* (they read as zeros without being read from disk). The first sync of
//! records into them must also record that they now hold data: a change to the file's extent
//! map, metadata that `fdatasync` writes along with the records. A log synced once a second
//! pays that once for megabytes of records. A log synced after every few records pays it on
//! nearly every sync, and a sync of eight 1 KiB records then took about twice as long
//! (`docs/BENCHMARKS.md`, "Durability"). Writing zeros and syncing them once, a chunk at a
//! time, makes the blocks ordinary written data, so a later sync of records into them writes
//! the records and nothing else.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use memmap2::MmapRaw;

/// How much space a segment reserves at a time, ahead of its writes.
pub(crate) const RESERVE_CHUNK: usize = 1 << 20;

/// A durability-relevant system call the log is about to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoCall {
    /// `fallocate` of space that appends will write into (where a full disk shows).
    Reserve,
    /// `msync(MS_SYNC)` of written records (a sync, or sealing a segment).
    Flush,
    /// `fsync` of a segment file.
    SyncFile,
    /// The write of a seal after a file's records, once they are durable (`format.rs`).
    Seal,
    /// `fsync` of the log's directory, after a file in it was created or removed.
    SyncDir,
    /// `ftruncate` of a segment: sizing a new one, or cutting a sealed one to its records.
    Truncate,
    /// `rename` of a new manifest over the old one: the switch at the end of a compaction.
    Rename,
    /// `unlink` of a file the log no longer needs: replaced by a compaction, or left behind
    /// by one that did not finish.
    Remove,
    /// `fsync`, then `posix_fadvise(POSIX_FADV_DONTNEED)` until none of its pages is cached, of
    /// a file of the log, by an open that found the mark a failed log leaves: the open then
    /// reads what the disk holds (`log.rs`, "Failure").
    DropPageCache,
    /// `sync_file_range(SYNC_FILE_RANGE_WAIT_AFTER)` of a file of the log, by an open before
    /// it reads any: whether a writeback of the file failed that no one heard of (the pages a
    /// crashed process left dirty, which the kernel could not write), writing nothing itself
    /// (`log.rs`, "Failure").
    CheckWriteback,
}

/// How a log reserves disk space ahead of its appends (see the module doc of `sys.rs`, which
/// `Options::reserve` points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reserve {
    /// `fallocate` a chunk at a time: cheap to reserve, but the first sync of records into
    /// each stretch of it also writes the file's extent map. The default, right for a log
    /// synced rarely (every second, or by hand), where that write covers megabytes of records.
    #[default]
    Allocate,
    /// Write zeros over each chunk and `fdatasync` them, before any record goes there: one
    /// write and one sync of a megabyte per megabyte of log, after which a sync of records
    /// writes only the records. For a log synced after every few appends (the durable cache's
    /// `Durability::Always`). Where the file system has no `fallocate`, this is the only way
    /// that actually reserves anything.
    Zeroed,
}

/// Called before each [`IoCall`] with what the log is about to do; an `Err` is returned in
/// place of the call's result, and the call is not made. For fault-injection tests: the
/// default is no hook.
pub type IoHook = Arc<dyn Fn(IoCall) -> io::Result<()> + Send + Sync>;

/// The doors: each checks the hook, then makes the real call.
#[derive(Clone)]
pub(crate) struct Sys {
    hook: Option<IoHook>,
}

impl Sys {
    pub(crate) fn new(hook: Option<IoHook>) -> Sys {
        Sys { hook }
    }

    fn check(&self, call: IoCall) -> io::Result<()> {
        match &self.hook {
            Some(hook) => hook(call),
            None => Ok(()),
        }
    }

    pub(crate) fn flush(&self, map: &MmapRaw, offset: usize, len: usize) -> io::Result<()> {
        self.check(IoCall::Flush)?;
        map.flush_range(offset, len)
    }

    /// Drops this process's page-table entries for the whole pages of `map` in `from..to`
    /// (rounded inward to page boundaries), keeping the pages in the page cache with their
    /// contents and dirty state. For pages the log will not write again, just before they are
    /// flushed: writeback must write-protect each page still mapped writable, and on a
    /// machine where another thread of the process runs, that is a TLB shootdown (an
    /// interrupt to the other core) per page, where dropping the entries first costs one for
    /// the whole range. An optimisation only: a failure is ignored, and it is no [`IoCall`].
    ///
    /// # Safety
    /// `map` is a shared mapping of a file (so its bytes stay what the file holds), and no
    /// reference into `from..to` is in use while this runs. Later accesses are fine: they map
    /// the same page-cache pages again.
    pub(crate) unsafe fn release(map: &MmapRaw, from: usize, to: usize) {
        #[cfg(target_os = "linux")]
        {
            let page = page_size();
            let (start, end) = (from.next_multiple_of(page), to - to % page);
            if end > start {
                // SAFETY: the caller's contract: MADV_DONTNEED on a shared file mapping drops
                // page-table entries only (dirty bits move to the page cache as they go), so
                // no byte of the mapping changes, and nothing borrows the range meanwhile.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (map, from, to);
    }

    /// `fdatasync` of `file`: its written pages, however they were written (through a map
    /// or not), reach stable storage. A flush, to the hook.
    pub(crate) fn sync_data(&self, file: &File) -> io::Result<()> {
        self.check(IoCall::Flush)?;
        file.sync_data()
    }

    /// Writes `bytes` at `offset` of `file` with `pwrite`, extending it if they run past its
    /// end.
    pub(crate) fn write_seal(&self, file: &File, offset: usize, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.check(IoCall::Seal)?;
        file.write_all_at(bytes, offset as u64)
    }

    pub(crate) fn sync_file(&self, file: &File) -> io::Result<()> {
        self.check(IoCall::SyncFile)?;
        file.sync_all()
    }

    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(IoCall::SyncDir)?;
        File::open(dir)?.sync_all()
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(IoCall::Rename)?;
        std::fs::rename(from, to)
    }

    /// Removes `path`; a file already gone is fine.
    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(IoCall::Remove)?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Empties the page cache of `file`, so that what is read of it next comes from the disk:
    /// `fsync` (its dirty pages, which must not be lost, are written and become clean), then
    /// `posix_fadvise(POSIX_FADV_DONTNEED)`, until `mincore` finds none of its pages cached.
    /// The advice is best effort: a page that something holds for a moment (the kernel's own
    /// batches of pages, a reclaim or migration in progress) is skipped. On a machine busy
    /// with other work, one call left the page of a 4 KiB segment cached about once in thirty
    /// runs of `crates/larder/tests/failing_disk.rs`, and the reopen read a record that had
    /// never reached the disk. So it is asked again, a millisecond apart, up to a second.
    /// Where the page cache is the storage (tmpfs, ramfs), there is nothing to drop.
    ///
    /// # Errors
    /// The `fsync`'s (the disk still fails), and `Other` if pages stayed cached for that
    /// second: the caller then cannot tell what the disk holds.
    pub(crate) fn drop_page_cache(&self, file: &File) -> io::Result<()> {
        self.check(IoCall::DropPageCache)?;
        if !has_page_cache(file)? {
            return Ok(());
        }
        file.sync_all()?;
        for _ in 0..1000 {
            advise_dont_need(file)?;
            if cached_pages(file)? == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(io::Error::other(
            "pages of a log file stayed in the page cache for a second after it was asked to drop them",
        ))
    }

    /// Whether a writeback of `file` failed that no one has heard of: waits for any writeback
    /// of it under way (`sync_file_range` with `SYNC_FILE_RANGE_WAIT_AFTER` alone, which starts
    /// none) and returns the error the kernel keeps for the file if no descriptor has reported
    /// it yet, as the first `fsync` after the failure would. Reported here, it is not reported
    /// again: the caller must act on it.
    pub(crate) fn check_writeback(&self, file: &File) -> io::Result<()> {
        self.check(IoCall::CheckWriteback)?;
        check_writeback(file)
    }

    pub(crate) fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
        self.check(IoCall::Truncate)?;
        file.set_len(len)
    }

    /// Reserves disk space for `offset..offset + len` of `file`, the way `how` says, without
    /// changing its size. The range must lie past every byte the log has written there: with
    /// [`Reserve::Zeroed`] its bytes become zeros. With [`Reserve::Allocate`] where the file
    /// system cannot (no `fallocate`), nothing is reserved and writes rely on the space being
    /// there, as with any sparse file.
    pub(crate) fn reserve(
        &self,
        file: &File,
        offset: usize,
        len: usize,
        how: Reserve,
    ) -> io::Result<()> {
        self.check(IoCall::Reserve)?;
        match how {
            Reserve::Allocate => allocate(file, offset, len),
            Reserve::Zeroed => {
                write_zeros(file, offset, len)?;
                file.sync_data()
            }
        }
    }
}

/// Writes `len` zeros at `offset` of `file` with `pwrite`, 64 KiB at a time.
fn write_zeros(file: &File, offset: usize, len: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len());
        file.write_all_at(&ZEROS[..n], (offset + done) as u64)?;
        done += n;
    }
    Ok(())
}

/// The size of a page of memory, asked of the system once.
#[cfg(target_os = "linux")]
pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: `sysconf` reads no memory of ours.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    })
}

#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: usize, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: `fallocate` reads no memory of ours; the descriptor is open for the call's
    // length. Mode 0 inside the file's size allocates blocks and leaves the size alone.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(()),
        _ => Err(err),
    }
}

/// Whether `file` sits on a file system with a page cache in front of a disk: not tmpfs or
/// ramfs, whose pages are the storage itself.
#[cfg(target_os = "linux")]
fn has_page_cache(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `statfs` is plain integers, for which all zeros is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fstatfs` writes into the struct it is given, which lives across the call; the
    // descriptor is open for the call's length.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    const RAMFS_MAGIC: u64 = 0x8584_58f6; // not in `libc`
    let kind = fs.f_type as u64;
    Ok(kind != libc::TMPFS_MAGIC as u64 && kind != RAMFS_MAGIC)
}

#[cfg(target_os = "linux")]
fn advise_dont_need(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `posix_fadvise` reads no memory of ours; the descriptor is open for the call's
    // length. Offset 0 and length 0 cover the whole file, whatever its size.
    match unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(target_os = "linux")]
fn check_writeback(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is open for the call's
    // length. Offset 0 and length 0 cover the whole file, whatever its size.
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WAIT_AFTER) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How many of `file`'s pages are in the page cache: `mincore` over a read-only map of it,
/// which faults nothing in, 16,384 pages at a time (a segment may be up to 1 TiB long).
#[cfg(target_os = "linux")]
fn cached_pages(file: &File) -> io::Result<usize> {
    const WINDOW: usize = 1 << 14;
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
    if len == 0 {
        return Ok(0); // nothing to map, and nothing cached
    }
    let map = memmap2::MmapOptions::new()
        .len(len)
        .map_raw_read_only(file)?;
    let page = page_size();
    let mut resident = vec![0u8; WINDOW];
    let mut cached = 0;
    for from in (0..len).step_by(WINDOW * page) {
        let span = (len - from).min(WINDOW * page);
        // SAFETY: `mincore` writes one byte per page of the span into `resident`, which has
        // room for a window's pages; the span lies inside the mapping (page-aligned at `from`),
        // which lives across the call, and nothing reads or writes through it.
        let rc = unsafe {
            libc::mincore(
                map.as_mut_ptr().add(from).cast(),
                span,
                resident.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        cached += resident[..span.div_ceil(page)]
            .iter()
            .filter(|&&b| b & 1 == 1)
            .count();
    }
    Ok(cached)
}

#[cfg(not(target_os = "linux"))]
fn has_page_cache(_file: &File) -> io::Result<bool> {
    Ok(false)
}

#[cfg(not(target_os = "linux"))]
fn advise_dont_need(_file: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn check_writeback(file: &File) -> io::Result<()> {
    // Elsewhere the one way to hear of a failed writeback is a sync, which writes.
    file.sync_data()
}

#[cfg(not(target_os = "linux"))]
fn cached_pages(_file: &File) -> io::Result<usize> {
    Ok(0)
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _offset: usize, _len: usize) -> io::Result<()> {
    Ok(())
}

impl fmt::Debug for Sys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sys")
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::path::PathBuf;

    /// A file of `len` bytes (a hole) under the temporary directory, for this test alone.
    fn scratch_file(name: &str, len: usize) -> (PathBuf, File) {
        let path = std::env::temp_dir().join(format!(
            "larder-log-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create the file");
        file.set_len(len as u64).expect("size the file");
        (path, file)
    }

    /// Releasing pages of a shared file mapping drops only page-table entries: the bytes stay
    /// what was written, through the mapping and in the file, including the partial pages at
    /// either end, which are left mapped.
    #[test]
    fn release_keeps_every_byte() {
        const LEN: usize = 64 << 10;
        let (path, file) = scratch_file("release", LEN);
        let map = MmapRaw::map_raw(&file).expect("map the file");
        let pattern: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 4096) as u8).collect();
        // SAFETY: the mapping is `LEN` bytes, writable, and only this test uses the file.
        unsafe { std::ptr::copy_nonoverlapping(pattern.as_ptr(), map.as_mut_ptr(), LEN) };
        // SAFETY: a shared mapping of a file only this test uses; no reference into it is
        // held across the call.
        unsafe { Sys::release(&map, 100, LEN - 100) };
        // SAFETY: as above; the slice is dropped before the mapping.
        let through_map = unsafe { std::slice::from_raw_parts(map.as_ptr(), LEN) }.to_vec();
        assert!(through_map == pattern, "the mapping reads what was written");
        // The pages were never flushed, so this reads them from the page cache: still dirty.
        assert!(std::fs::read(&path).expect("read the file") == pattern);
        drop(map);
        std::fs::remove_file(&path).expect("remove the file");
    }

    /// Dropping a file from the page cache leaves none of its pages there, so that the next
    /// read goes to the disk (on tmpfs, whose page cache is the storage, it leaves them all),
    /// and loses no byte written: dirty pages are written first.
    #[cfg(target_os = "linux")]
    #[test]
    fn dropping_the_page_cache_leaves_no_page_cached_and_loses_no_byte() {
        use std::os::unix::fs::FileExt;
        const LEN: usize = 64 << 10;
        let (path, file) = scratch_file("page-cache", LEN);
        let pages = LEN / page_size();
        let sys = Sys::new(None);
        let left = if has_page_cache(&file).expect("fstatfs") {
            0
        } else {
            pages
        };
        let cached = |file: &File| cached_pages(file).expect("mincore");
        file.write_all_at(&[0xA5; LEN], 0).expect("write");
        file.sync_all().expect("sync");
        assert_eq!(cached(&file), pages, "written pages are cached");
        sys.drop_page_cache(&file).expect("drop the page cache");
        assert_eq!(cached(&file), left, "clean pages");
        assert!(std::fs::read(&path)
            .expect("read")
            .iter()
            .all(|&b| b == 0xA5));

        let pattern: Vec<u8> = (0..LEN).map(|i| (i * 13 + i / 4096) as u8).collect();
        file.write_all_at(&pattern, 0).expect("write, not synced");
        assert_eq!(cached(&file), pages, "dirty pages are cached");
        sys.drop_page_cache(&file).expect("drop the page cache");
        assert_eq!(cached(&file), left, "pages that were dirty");
        assert!(
            std::fs::read(&path).expect("read") == pattern,
            "a written byte was lost"
        );
        std::fs::remove_file(&path).expect("remove the file");

        // Pages far apart in a sparse file, in different windows of the count.
        const SPARSE: usize = 80 << 20;
        let (path, file) = scratch_file("page-cache-sparse", SPARSE);
        for at in [0, 70 << 20] {
            file.write_all_at(&[1; 4096], at as u64).expect("write");
        }
        file.sync_all().expect("sync");
        assert_eq!(cached(&file), 2, "the two pages written");
        sys.drop_page_cache(&file).expect("drop the page cache");
        assert_eq!(cached(&file), if left == 0 { 0 } else { 2 });
        std::fs::remove_file(&path).expect("remove the file");
    }

    /// A `Zeroed` reservation turns its range of a sparse file into written data that reads
    /// as zeros, and leaves the rest of the file a hole: the blocks a later sync of records
    /// writes into are ordinary data, with no extent to convert. It goes through the hook
    /// once, as `Reserve`.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zeroed_reservation_writes_its_range_as_data() {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicUsize, Ordering};
        const MIB: usize = 1 << 20;
        let (path, file) = scratch_file("zeroed", 4 * MIB);
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let sys = Sys::new(Some(Arc::new(move |call| {
            assert_eq!(call, IoCall::Reserve);
            seen.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })));
        sys.reserve(&file, MIB, MIB, Reserve::Zeroed)
            .expect("reserve");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let fd = file.as_raw_fd();
        // SAFETY: `lseek` reads no memory of ours; the descriptor is open for both calls.
        let (data, hole) = unsafe {
            (
                libc::lseek(fd, 0, libc::SEEK_DATA),
                libc::lseek(fd, MIB as libc::off_t, libc::SEEK_HOLE),
            )
        };
        assert_eq!((data, hole), (MIB as libc::off_t, 2 * MIB as libc::off_t));
        let bytes = std::fs::read(&path).expect("read the file");
        assert!(bytes.len() == 4 * MIB && bytes.iter().all(|&b| b == 0));
        std::fs::remove_file(&path).expect("remove the file");
    }
}
