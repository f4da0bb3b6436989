//! A disk that fails on demand, or loses power, to test what the kernel itself does when
//! writeback fails and what a power cut leaves on disk (behind the `failing-disk` feature; it
//! needs root).
//!
//! The log's I/O hook (`larder_log::IoCall`) fails the log's system calls before they are
//! made, which shows how the log handles an error, but not what the kernel leaves behind once
//! it really failed to write pages: which pages it keeps, in which state, and what a later
//! open reads. A process killed by `SIGKILL` (the crash tests) leaves the page cache intact,
//! so it shows nothing about what reached the disk either. Both take a device:
//!
//! ```text
//! test process ─ ext4 ─ page cache ─ /dev/loopN ─ FUSE ─ thread of the test process:
//!                mounted at path()                      an image in memory
//! ```
//!
//! The image is a file in a FUSE file system served by a thread of the test process itself,
//! with no page cache of its own (direct I/O): every write and flush the loop device sends
//! reaches the thread. Two disks are built on it:
//!
//! - [`FailingDisk::new`]: writes go straight to the image, and fail with `EIO` while
//!   [`FailingDisk::fail_writes`] is on, as a disk whose sectors cannot be written does. The
//!   kernel's writeback then fails and is handled as for any device. The ext4 file system has
//!   no journal, so a failed write of its own metadata does not abort it into read-only mode,
//!   and its errors are set to `continue`: once writes work again, it goes on.
//! - [`FailingDisk::with_write_cache`]: the disk holds written blocks in a volatile cache
//!   until a flush (which the loop device sends for every `fsync` and journal commit), as
//!   drives do. [`FailingDisk::power_cut`] loses a random part of that cache, the rest having
//!   reached the platters in any order, and fails every write after it;
//!   [`FailingDisk::restart`] mounts what is left. The ext4 file system has its journal, so it
//!   comes back from a power cut as it would on a machine. [`FailingDisk::write_back_at_random`]
//!   stands in for the kernel's writeback, which would send dirty pages to the disk in its
//!   own order, but only after seconds a test does not wait.
//!
//! [`FailingDisk::remount`] unmounts the file system and mounts it again, which drops its
//! whole page cache: what is read afterwards is what the disk holds, as after a reboot.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request,
};

use crate::TempDir;

/// A file system on a device whose writes fail on demand, or that loses power (see the
/// [module doc](self)). Dropping it unmounts everything and frees the device.
#[derive(Debug)]
pub struct FailingDisk {
    medium: Arc<Mutex<Medium>>,
    loop_device: String,
    /// The FUSE file system serving the image, unmounted when it goes.
    image: Option<fuser::BackgroundSession>,
    /// Holds `image/` (the FUSE mount) and `fs/` (the ext4 mount); removed last.
    scratch: TempDir,
}

/// The thread [`FailingDisk::write_back_at_random`] started; dropping this stops it, and
/// waits for it, so that it holds no file of the disk open after.
#[derive(Debug)]
pub struct WriteBack {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriteBack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What [`FailingDisk::power_cut`] did with the blocks the disk's cache held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    /// Blocks that reached the image before the power went.
    pub kept: usize,
    /// Blocks lost with the cache.
    pub lost: usize,
}

impl FailingDisk {
    /// Makes an image of `mib` MiB whose writes go straight to it, a loop device over it and
    /// an ext4 file system without a journal on that, and mounts it under a scratch directory
    /// named for the test `name`.
    ///
    /// # Errors
    /// What is missing, in words: not root, no `/dev/fuse`, or a command (`losetup`,
    /// `mkfs.ext4`, `mount`) that is missing or failed, with its output.
    pub fn new(name: &str, mib: usize) -> Result<FailingDisk, String> {
        FailingDisk::build(name, mib, None, &["-O", "^has_journal"])
    }

    /// As [`new`](Self::new), but the disk holds written blocks in a volatile cache until a
    /// flush, and the ext4 file system has its journal: for [`power_cut`](Self::power_cut).
    /// `seed` chooses which cached blocks a power cut loses.
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub fn with_write_cache(name: &str, mib: usize, seed: u64) -> Result<FailingDisk, String> {
        FailingDisk::build(name, mib, Some(seed), &[])
    }

    fn build(
        name: &str,
        mib: usize,
        write_cache: Option<u64>,
        mkfs_options: &[&str],
    ) -> Result<FailingDisk, String> {
        // SAFETY: `geteuid` reads no memory of ours and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("a failing disk needs root (mount, losetup)".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("a failing disk needs /dev/fuse".into());
        }
        let scratch = TempDir::new(name);
        let (image_dir, fs_dir) = (scratch.0.join("image"), scratch.0.join("fs"));
        for dir in [&image_dir, &fs_dir] {
            fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let medium = Arc::new(Mutex::new(Medium {
            bytes: vec![0; mib << 20],
            cache: write_cache.map(|_| BTreeMap::new()),
            rng: XorShift::new(write_cache.unwrap_or(0)),
            failing: false,
            failed_writes: 0,
            flushes: 0,
        }));
        let image = Image {
            medium: Arc::clone(&medium),
        };
        let options = [
            MountOption::FSName("larder-failing-disk".into()),
            MountOption::RW,
        ];
        let session = fuser::spawn_mount2(image, &image_dir, &options)
            .map_err(|e| format!("mount the image's FUSE file system: {e}"))?;
        let image_file = image_dir.join(IMAGE_NAME);
        let mut disk = FailingDisk {
            medium,
            loop_device: String::new(),
            image: Some(session),
            scratch,
        };
        disk.loop_device = run("losetup", &["--find", "--show", path_str(&image_file)?])?;
        let mut mkfs = vec!["-q", "-F"];
        mkfs.extend_from_slice(mkfs_options);
        mkfs.push(&disk.loop_device);
        run("mkfs.ext4", &mkfs)?;
        disk.mount()?;
        Ok(disk)
    }

    /// The root of the mounted file system.
    pub fn path(&self) -> PathBuf {
        self.scratch.0.join("fs")
    }

    /// From now on, every write that reaches the disk fails (`on`), or none does.
    pub fn fail_writes(&self, on: bool) {
        self.medium().failing = on;
    }

    /// How many writes have failed so far.
    pub fn failed_writes(&self) -> u64 {
        self.medium().failed_writes
    }

    /// How many flushes of its write cache the disk was asked for (every one, with or without
    /// a cache).
    pub fn flushes(&self) -> u64 {
        self.medium().flushes
    }

    /// The power goes: of the blocks written since the last flush, a random half (by the
    /// seed) reached the image, in no particular order, and the rest are lost; every write
    /// from now on fails. The process and its page cache live on, as they would not: what
    /// matters is only what is on the image, which [`restart`](Self::restart) mounts.
    pub fn power_cut(&self) -> PowerCut {
        let mut medium = self.medium();
        medium.failing = true;
        let cached = std::mem::take(medium.cache.get_or_insert_with(BTreeMap::new));
        let mut cut = PowerCut { kept: 0, lost: 0 };
        for (block, bytes) in cached {
            if medium.rng.next() & 1 == 1 {
                let at = block * BLOCK;
                medium.bytes[at..at + BLOCK].copy_from_slice(&bytes);
                cut.kept += 1;
            } else {
                cut.lost += 1;
            }
        }
        cut
    }

    /// Starts a thread that writes dirty pages of the files in `dir` back to the disk, 64 KiB
    /// of a random file at a random place every millisecond (`sync_file_range`, which sends no
    /// flush), until the returned handle is dropped: the kernel's own writeback, which writes
    /// dirty pages in an order of its choosing, but within the few seconds a test runs rather
    /// than the 30 the kernel waits by default. So that a power cut can find any part of what
    /// was written in the disk's cache, or on the image, not only what a sync sent.
    pub fn write_back_at_random(&self, dir: &Path, seed: u64) -> WriteBack {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, stopping) = (dir.to_path_buf(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut rng = XorShift::new(seed);
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                let files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
                if files.is_empty() {
                    continue;
                }
                let path = &files[rng.next() as usize % files.len()];
                // A file a compaction removed meanwhile is skipped.
                let Ok(file) = fs::File::open(path) else {
                    continue;
                };
                let len = file.metadata().map_or(0, |m| m.len());
                let offset = if len == 0 { 0 } else { rng.next() % len };
                // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is open for
                // the call's length. Its result does not matter: this is writeback, not a sync.
                let _ = unsafe {
                    libc::sync_file_range(
                        std::os::fd::AsRawFd::as_raw_fd(&file),
                        offset as libc::off64_t,
                        64 << 10,
                        libc::SYNC_FILE_RANGE_WRITE,
                    )
                };
            }
        });
        WriteBack {
            stop,
            thread: Some(thread),
        }
    }

    /// After a [`power_cut`](Self::power_cut): unmounts the file system (nothing may have a
    /// file open on it), brings the power back, and mounts what the image holds, which
    /// replays the file system's journal, as a machine's next boot does.
    ///
    /// # Errors
    /// `umount` or `mount` failed, with its output.
    pub fn restart(&self) -> Result<(), String> {
        self.unmount()?;
        self.medium().failing = false;
        self.mount()
    }

    /// Fills the file system but for about `left` bytes, with a file of allocated blocks
    /// (`fallocate`) at `path()/filler`, whose path it returns: remove it to free the space.
    ///
    /// # Errors
    /// `df` or `fallocate` failed, with its output.
    pub fn fill(&self, left: u64) -> Result<PathBuf, String> {
        let fs = self.path();
        let df = run("df", &["--output=avail", "-B1", path_str(&fs)?])?;
        let free: u64 = df
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("df printed no free space: {df}"))?;
        let filler = fs.join("filler");
        let len = free.saturating_sub(left).to_string();
        run("fallocate", &["-l", &len, path_str(&filler)?])?;
        Ok(filler)
    }

    /// Unmounts the file system and mounts it again: its page cache goes, and what is read
    /// next comes from the disk, as after a reboot. Nothing may have a file open on it.
    ///
    /// # Errors
    /// `umount` or `mount` failed, with its output.
    pub fn remount(&self) -> Result<(), String> {
        self.unmount()?;
        self.mount()
    }

    /// Unmounts the file system, waiting up to 5 s while it is busy: a file of it can stay
    /// open a moment after its last user let go, in a child process that another thread of the
    /// test forked (`Command` forks, and the child holds every descriptor until it execs), or
    /// on the janitor's thread finishing a tick. Under `.ci/run` one such unmount failed as
    /// busy.
    fn unmount(&self) -> Result<(), String> {
        let fs = self.path();
        let mut tries = 0;
        loop {
            match run("umount", &[path_str(&fs)?]) {
                Err(e) if e.contains("busy") && tries < 500 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.contains("busy") => {
                    return Err(format!("{e}; this process holds {:?}", open_under(&fs)))
                }
                done => return done.map(drop),
            }
        }
    }

    fn medium(&self) -> MutexGuard<'_, Medium> {
        lock(&self.medium)
    }

    fn mount(&self) -> Result<(), String> {
        let fs = self.path();
        run(
            "mount",
            &["-o", "errors=continue", &self.loop_device, path_str(&fs)?],
        )
        .map(drop)
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        // Lazily: a test that failed may have left a file open. Then the device, then the
        // image's FUSE mount, then the scratch directory (a field).
        self.fail_writes(false);
        if let Ok(fs) = path_str(&self.path()) {
            let _ = run("umount", &["--lazy", fs]);
        }
        if !self.loop_device.is_empty() {
            let _ = run("losetup", &["--detach", &self.loop_device]);
        }
        // The session's own unmount, when it goes, is a plain one, which fails while the loop
        // device still holds the image (its detach completes once nothing has the device open,
        // and a udev probe may): the mount was left behind, dead once this process exited. A
        // lazy unmount detaches it at once, and the kernel ends the session once the image's
        // last user lets go.
        if let Ok(image) = path_str(&self.scratch.0.join("image")) {
            let _ = run("umount", &["--lazy", image]);
        }
        self.image.take();
    }
}

/// The files under `dir` that this process has open, by descriptor.
fn open_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(fds) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.filter_map(|fd| {
        let fd = fd.ok()?;
        let target = fs::read_link(fd.path()).ok()?;
        target
            .starts_with(dir)
            .then(|| (fd.file_name().to_string_lossy().into_owned(), target))
    })
    .collect()
}

/// Runs `program` with `args`, and returns its standard output, trimmed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

const IMAGE_NAME: &str = "image";
const ROOT: u64 = 1;
const IMAGE: u64 = 2;
const TTL: Duration = Duration::from_secs(60);
/// The unit of the write cache: ext4's block.
const BLOCK: usize = 4096;

/// Locks `m`; a test that panicked while holding it left the image as consistent as any
/// power cut does.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// xorshift64: the seeded choices of a power cut and of the emulated writeback.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed | 1) // never 0, which it would never leave
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The disk: its image, its write cache, and whether it has power.
#[derive(Debug)]
struct Medium {
    bytes: Vec<u8>,
    /// Blocks written and not yet flushed, by index, for a disk with a write cache.
    cache: Option<BTreeMap<usize, Box<[u8]>>>,
    failing: bool,
    failed_writes: u64,
    flushes: u64,
    /// Which cached blocks a power cut keeps.
    rng: XorShift,
}

impl Medium {
    /// `offset..offset + len` clamped to the image, or `None` where it starts past the end.
    fn range(&self, offset: i64, len: usize) -> Option<std::ops::Range<usize>> {
        let from = usize::try_from(offset).ok()?;
        (from <= self.bytes.len()).then(|| from..(from + len).min(self.bytes.len()))
    }

    /// The bytes of `range` as the disk's reader sees them: the cache over the image.
    fn read(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        let mut out = self.bytes[range.clone()].to_vec();
        if let Some(cache) = &self.cache {
            let blocks = range.start / BLOCK..range.end.div_ceil(BLOCK);
            for (&block, bytes) in cache.range(blocks) {
                let at = block * BLOCK;
                let (from, to) = (at.max(range.start), (at + BLOCK).min(range.end));
                out[from - range.start..to - range.start]
                    .copy_from_slice(&bytes[from - at..to - at]);
            }
        }
        out
    }

    fn write(&mut self, offset: i64, data: &[u8]) -> Result<(), libc::c_int> {
        if self.failing {
            self.failed_writes += 1;
            return Err(libc::EIO);
        }
        let range = match self.range(offset, data.len()) {
            Some(range) if range.len() == data.len() => range,
            _ => return Err(libc::ENOSPC),
        };
        let Some(cache) = self.cache.as_mut() else {
            self.bytes[range].copy_from_slice(data);
            return Ok(());
        };
        for block in range.start / BLOCK..range.end.div_ceil(BLOCK) {
            let at = block * BLOCK;
            // A block not cached yet starts as the image holds it.
            let cached = cache
                .entry(block)
                .or_insert_with(|| self.bytes[at..at + BLOCK].into());
            let (from, to) = (at.max(range.start), (at + BLOCK).min(range.end));
            cached[from - at..to - at].copy_from_slice(&data[from - range.start..to - range.start]);
        }
        Ok(())
    }

    /// Writes the cache to the image: every block written before is now durable.
    fn flush(&mut self) -> Result<(), libc::c_int> {
        if self.failing {
            return Err(libc::EIO);
        }
        self.flushes += 1;
        if let Some(cache) = self.cache.as_mut() {
            for (block, bytes) in std::mem::take(cache) {
                let at = block * BLOCK;
                self.bytes[at..at + BLOCK].copy_from_slice(&bytes);
            }
        }
        Ok(())
    }
}

/// The FUSE file system: a root directory holding one file, the image.
struct Image {
    medium: Arc<Mutex<Medium>>,
}

impl Image {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, perm) = match ino {
            ROOT => (FileType::Directory, 0, 0o755),
            _ => {
                let len = lock(&self.medium).bytes.len() as u64;
                (FileType::RegularFile, len, 0o600)
            }
        };
        FileAttr {
            ino,
            size,
            blocks: size / 512,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for Image {
    fn lookup(&mut self, _: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == IMAGE_NAME {
            reply.entry(&TTL, &self.attr(IMAGE), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(&mut self, _: &Request<'_>, ino: u64, _: Option<u64>, reply: ReplyAttr) {
        match ino {
            ROOT | IMAGE => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _: &Request<'_>, _: u64, _: i32, reply: ReplyOpen) {
        // No page cache for the image: every read and write the loop device makes reaches
        // this thread, and a failed write leaves no copy of its bytes anywhere.
        reply.opened(0, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn read(
        &mut self,
        _: &Request<'_>,
        _: u64,
        _: u64,
        offset: i64,
        size: u32,
        _: i32,
        _: Option<u64>,
        reply: ReplyData,
    ) {
        let medium = lock(&self.medium);
        match medium.range(offset, size as usize) {
            Some(range) => reply.data(&medium.read(range)),
            None => reply.error(libc::EINVAL),
        }
    }

    fn write(
        &mut self,
        _: &Request<'_>,
        _: u64,
        _: u64,
        offset: i64,
        data: &[u8],
        _: u32,
        _: i32,
        _: Option<u64>,
        reply: ReplyWrite,
    ) {
        match lock(&self.medium).write(offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(&mut self, _: &Request<'_>, _: u64, _: u64, _: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _: &Request<'_>, _: u64, _: u64, _: bool, reply: ReplyEmpty) {
        // The loop device sends one for every flush of its queue: `fsync`, journal commits.
        match lock(&self.medium).flush() {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &mut self,
        _: &Request<'_>,
        ino: u64,
        _: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (IMAGE, FileType::RegularFile, IMAGE_NAME),
        ];
        let skip = usize::try_from(offset).unwrap_or(0);
        for (i, &(ino, kind, name)) in entries.iter().enumerate().skip(skip) {
            if reply.add(ino, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
