//! Helpers shared by the log's integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use larder_log::format::Op;
use larder_log::{CompactionReport, IoCall, Log, Options};
pub use larder_testkit::TempDir;

/// `options` with a fault hook: every `call` fails with `error()` once `armed` is set.
#[allow(dead_code)] // not every test binary uses every helper
pub fn failing_when_armed(
    options: Options,
    call: IoCall,
    error: impl Fn() -> std::io::Error + Send + Sync + 'static,
    armed: &Arc<AtomicBool>,
) -> Options {
    let armed = Arc::clone(armed);
    options.with_io_hook(move |c| {
        if c == call && armed.load(Ordering::SeqCst) {
            Err(error())
        } else {
            Ok(())
        }
    })
}

/// How many files in `dir` have the extension `ext` (`seg`, `snap`).
#[allow(dead_code)] // not every test binary uses every helper
pub fn files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let p = e.as_ref().unwrap().path();
            p.extension().is_some_and(|e| e == ext)
        })
        .count()
}

/// The log segment files in `dir`, in id order.
#[allow(dead_code)] // not every test binary uses every helper
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Appends 200 puts of 96 bytes each (4-byte keys, 60-byte values): a few 4 KiB segments.
#[allow(dead_code)] // not every test binary uses every helper
pub fn put_200(log: &mut Log) {
    put_keys(log, 0..200, 1);
}

/// Appends a put of 96 bytes for each key of `keys` (the key's 4 little-endian bytes, and 60
/// bytes of `fill` as the value).
#[allow(dead_code)]
pub fn put_keys(log: &mut Log, keys: std::ops::Range<u32>, fill: u8) {
    for i in keys {
        log.append(Op::Put {
            key: &i.to_le_bytes(),
            value: &[fill; 60],
            expires_at_ms: 0,
        })
        .unwrap();
    }
}

/// Appends a put and a clear, and compacts the log to nothing, the compaction installed and
/// the files it replaced removed.
#[allow(dead_code)]
pub fn compact_to_nothing(log: &mut Log) {
    log.append(Op::Put {
        key: b"k",
        value: b"v",
        expires_at_ms: 0,
    })
    .unwrap();
    log.append(Op::Clear).unwrap();
    compact(log);
}

/// Compacts `log` whole (no expiry), installs the output and removes the files it replaced;
/// returns the compaction's report.
#[allow(dead_code)]
pub fn compact(log: &mut Log) -> CompactionReport {
    let done = log.begin_compaction().unwrap().run(0).unwrap();
    let report = done.report();
    log.install(done).unwrap().remove().unwrap();
    report
}

/// Flips a bit of byte `at` of segment `id` in `dir`: damage a checksum catches.
#[allow(dead_code)]
pub fn damage_segment(dir: &Path, id: u64, at: usize) {
    damage_file(&dir.join(format!("{id:020}.seg")), at as u64);
}

/// Flips a bit of byte `at` of the file at `path` in place, its length unchanged: damage a
/// checksum catches, which can be made behind an open log's back as a failing disk would.
#[allow(dead_code)]
pub fn damage_file(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[byte[0] ^ 0x10]).unwrap();
}
