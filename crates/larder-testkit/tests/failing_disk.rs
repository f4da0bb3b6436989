//! The failing disk itself: its failures and its power cuts do what the tests built on them
//! take them to do. It needs root, so `cargo test` skips it and `.ci/run`'s `disk` step runs
//! it: `cargo test -p larder-testkit --features failing-disk --test failing_disk -- --ignored`.

use larder_testkit::failing_disk::FailingDisk;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

const LEN: usize = 1 << 20;

/// 1 MiB of a pattern that differs in every 4 KiB block, written to `path` with `pwrite`.
fn write_pattern(path: &Path) -> (File, Vec<u8>) {
    let pattern: Vec<u8> = (0..LEN).map(|i| (i / 4096 + i % 251) as u8).collect();
    let file = File::create(path).expect("create");
    file.write_all_at(&pattern, 0).expect("write");
    (file, pattern)
}

/// Written back but never flushed, data sits in the disk's write cache, and a power cut loses
/// some of it; flushed (`fdatasync`), it survives. This is what makes a test on this disk
/// catch a sync that skips the flush: `sync_file_range` writes the pages out and sends none.
#[test]
#[ignore = "needs root, /dev/fuse, losetup and mkfs.ext4: .ci/run's disk step runs it"]
fn a_power_cut_loses_what_was_not_flushed_and_keeps_what_was() {
    let disk = FailingDisk::with_write_cache("testkit-power-cut", 64, 7).expect("a disk");
    let (synced_path, unflushed_path) = (disk.path().join("synced"), disk.path().join("unflushed"));
    let (synced, pattern) = write_pattern(&synced_path);
    synced.sync_all().expect("fsync");
    drop(synced);
    let (unflushed, _) = write_pattern(&unflushed_path);
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is open.
    let rc = unsafe { libc::sync_file_range(unflushed.as_raw_fd(), 0, LEN as i64, flags) };
    assert_eq!(
        rc,
        0,
        "sync_file_range: {}",
        std::io::Error::last_os_error()
    );
    drop(unflushed);

    let cut = disk.power_cut();
    assert!(cut.lost > 0 && cut.kept > 0, "{cut:?}");
    disk.restart().expect("restart");
    assert!(
        std::fs::read(&synced_path).expect("read") == pattern,
        "the flushed file changed"
    );
    let unflushed = std::fs::read(&unflushed_path).unwrap_or_default();
    assert!(
        unflushed != pattern,
        "the unflushed file survived whole ({cut:?})"
    );
}

/// While failing, every write and flush returns `EIO` to the file system, and an `fsync`
/// reports it; once the disk works again, so do they.
#[test]
#[ignore = "needs root, /dev/fuse, losetup and mkfs.ext4: .ci/run's disk step runs it"]
fn a_failing_disk_fails_writes_until_it_works_again() {
    let disk = FailingDisk::new("testkit-failing", 64).expect("a disk");
    let (file, _) = write_pattern(&disk.path().join("file"));
    disk.fail_writes(true);
    let err = file.sync_all().expect_err("fsync on a failing disk");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(disk.failed_writes() > 0);
    disk.fail_writes(false);
    file.write_all_at(b"again", 0).expect("write");
    file.sync_all().expect("fsync on a disk that works again");
}
