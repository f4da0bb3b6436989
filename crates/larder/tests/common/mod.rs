//! Helpers shared by the facade's integration tests.

use larder::durable::{Error, LogOptions};
use larder::{Cache, Durability, DurableCache, IntoDurable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, named for the test, this
/// process and a count of the directories it made, removed on drop. The count keeps two tests
/// that pick the same name (they run at once, on threads of one process) out of each other's
/// way: they shared a directory, and each read the other's log.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // Relaxed: only the count's uniqueness matters.
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("larder-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A durable cache of up to `capacity` `u64 → String` entries in `dir`, with small (4 KiB)
/// segments so that a few writes roll them, and no expiry.
#[allow(dead_code)] // not every test binary that shares this module opens one this way
pub fn durable_cache(
    dir: &Path,
    capacity: u64,
    durability: Durability,
) -> Result<DurableCache<u64, String>, Error> {
    Cache::builder()
        .max_capacity(capacity)
        .durable(dir)
        .durability(durability)
        .log_options(LogOptions::default().with_segment_size(4096))
        .build()
}

/// Every file in `dir`, by name, with its bytes.
#[allow(dead_code)] // not every test binary that shares this module compares directories
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}
