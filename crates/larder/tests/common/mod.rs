//! Helpers shared by the facade's integration tests.

use larder::durable::{Error, LogOptions};
use larder::{Cache, Durability, DurableCache, IntoDurable};
use std::collections::BTreeMap;
use std::path::Path;

pub use larder_testkit::TempDir;

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
