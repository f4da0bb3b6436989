//! A disk that fails on demand, to test what the kernel itself does when writeback fails
//! (behind the `failing-disk` feature; it needs root).
//!
//! The log's I/O hook (`larder_log::IoCall`) fails the log's system calls before they are
//! made, which shows how the log handles an error, but not what the kernel leaves behind once
//! it really failed to write pages: which pages it keeps, in which state, and what a later
//! open reads. That takes a device whose writes fail, under a real file system:
//!
//! ```text
//! test process ─ ext4 (no journal) ─ page cache ─ /dev/loopN ─ FUSE ─ thread of the test
//!                mounted at path()                             process: an image in memory
//! ```
//!
//! The image is a file in a FUSE file system served by a thread of the test process itself,
//! with no page cache of its own (direct I/O): every write the loop device sends reaches the
//! thread, which returns `EIO` while [`FailingDisk::fail_writes`] is on, as a disk whose
//! sectors cannot be written does. The kernel's writeback of the ext4 file system's pages then
//! fails and is handled as for any device. The file system has no journal, so a failed write
//! of its own metadata does not abort it into read-only mode, and its errors are set to
//! `continue`: once writes work again, it goes on.
//!
//! [`FailingDisk::remount`] unmounts the file system and mounts it again, which drops its
//! whole page cache: what is read afterwards is what the disk holds, as after a reboot.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request,
};

use crate::TempDir;

/// A file system on a device whose writes fail on demand (see the [module doc](self)).
/// Dropping it unmounts everything and frees the device.
#[derive(Debug)]
pub struct FailingDisk {
    state: Arc<State>,
    loop_device: String,
    /// The FUSE file system serving the image, unmounted when it goes.
    image: Option<fuser::BackgroundSession>,
    /// Holds `image/` (the FUSE mount) and `fs/` (the ext4 mount); removed last.
    scratch: TempDir,
}

/// What the test and the FUSE thread share.
#[derive(Debug, Default)]
struct State {
    failing: AtomicBool,
    failed_writes: AtomicU64,
}

impl FailingDisk {
    /// Makes an image of `mib` MiB, a loop device over it and an ext4 file system on that, and
    /// mounts it under a scratch directory named for the test `name`.
    ///
    /// # Errors
    /// What is missing, in words: not root, no `/dev/fuse`, or a command (`losetup`,
    /// `mkfs.ext4`, `mount`) that is missing or failed, with its output.
    pub fn new(name: &str, mib: usize) -> Result<FailingDisk, String> {
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
        let state = Arc::new(State::default());
        let image = Image {
            bytes: vec![0; mib << 20],
            state: Arc::clone(&state),
        };
        let options = [
            MountOption::FSName("larder-failing-disk".into()),
            MountOption::RW,
        ];
        let session = fuser::spawn_mount2(image, &image_dir, &options)
            .map_err(|e| format!("mount the image's FUSE file system: {e}"))?;
        let image_file = image_dir.join(IMAGE_NAME);
        let mut disk = FailingDisk {
            state,
            loop_device: String::new(),
            image: Some(session),
            scratch,
        };
        disk.loop_device = run("losetup", &["--find", "--show", path_str(&image_file)?])?;
        run(
            "mkfs.ext4",
            &["-q", "-F", "-O", "^has_journal", &disk.loop_device],
        )?;
        disk.mount()?;
        Ok(disk)
    }

    /// The root of the mounted file system.
    pub fn path(&self) -> PathBuf {
        self.scratch.0.join("fs")
    }

    /// From now on, every write that reaches the disk fails (`on`), or none does.
    pub fn fail_writes(&self, on: bool) {
        self.state.failing.store(on, Ordering::SeqCst);
    }

    /// How many writes have failed so far.
    pub fn failed_writes(&self) -> u64 {
        self.state.failed_writes.load(Ordering::SeqCst)
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
        run("umount", &[path_str(&self.path())?])?;
        self.mount()
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

/// The FUSE file system: a root directory holding one file, the image, in memory.
struct Image {
    bytes: Vec<u8>,
    state: Arc<State>,
}

impl Image {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, perm) = match ino {
            ROOT => (FileType::Directory, 0, 0o755),
            _ => (FileType::RegularFile, self.bytes.len() as u64, 0o600),
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

    /// `offset..offset + len` clamped to the image, or `None` where it starts past the end.
    fn range(&self, offset: i64, len: usize) -> Option<std::ops::Range<usize>> {
        let from = usize::try_from(offset).ok()?;
        (from <= self.bytes.len()).then(|| from..(from + len).min(self.bytes.len()))
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
        match self.range(offset, size as usize) {
            Some(range) => reply.data(&self.bytes[range]),
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
        if self.state.failing.load(Ordering::SeqCst) {
            self.state.failed_writes.fetch_add(1, Ordering::SeqCst);
            return reply.error(libc::EIO);
        }
        match self.range(offset, data.len()) {
            Some(range) if range.len() == data.len() => {
                self.bytes[range].copy_from_slice(data);
                reply.written(data.len() as u32);
            }
            _ => reply.error(libc::ENOSPC),
        }
    }

    fn flush(&mut self, _: &Request<'_>, _: u64, _: u64, _: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _: &Request<'_>, _: u64, _: u64, _: bool, reply: ReplyEmpty) {
        // Writes reach the image in memory as they are made: nothing is left to make durable.
        reply.ok();
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
