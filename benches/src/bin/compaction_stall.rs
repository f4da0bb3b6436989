//! How long writers and readers of a durable cache wait while its log is compacted.
//!
//! A durable cache (`Durability::Manual`, so that the disk's sync latency is not in every
//! write) holds 200,000 entries of 64-byte values, each written five times: a log of 1,000,000
//! records, four fifths of them dead. One thread times every call it makes: a writer replacing
//! entries, or in a separate run a reader reading them. Meanwhile a second thread runs:
//!
//! * **compaction**: `compact()`, which syncs, rolls the active segment under the writer lock,
//!   rewrites the live entries without it, and takes the lock again for the switch (a rename
//!   and a directory sync);
//! * **baseline**: nothing, for a window as long as the compaction took.
//!
//! The latencies of the timed calls in the window are printed as percentiles, per round, so
//! the machine's noise shows. The log lives in the system's temporary directory, on disk.
//!
//! Run: `cargo run --release -p larder-benches --bin compaction_stall [ROUNDS]` (default 3).

use std::path::PathBuf;
use std::time::Duration;

use larder_benches::{percentiles, rounds_from_args, time_calls_during};

use larder::durable::{Compaction, RawBytes};
use larder::{Cache, Durability, DurableCache, IntoDurable};

const ENTRIES: u64 = 200_000;
const WRITES_PER_ENTRY: u64 = 5;

/// Whose calls a run times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

fn open(dir: &PathBuf) -> DurableCache<u64, Vec<u8>> {
    Cache::builder()
        .max_capacity(2 * ENTRIES)
        .durable(dir)
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .value_codec(RawBytes)
        .build()
        .expect("the directory opens")
}

/// One run on a fresh directory: fill, then time `role`'s calls while `compact()` runs (or,
/// with `window`, for that long with nothing running). Returns the compaction's time and the
/// latencies.
fn run(role: Role, compact: bool, window: Option<Duration>) -> (Duration, Vec<Duration>) {
    let dir = std::env::temp_dir().join(format!("larder-compaction-stall-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = open(&dir);
    for round in 0..WRITES_PER_ENTRY {
        for k in 0..ENTRIES {
            cache.insert(k, vec![round as u8; 64]).expect("logged");
        }
    }
    cache.sync().expect("synced");
    let call = |k: u64| match role {
        Role::Writer => cache.insert(k % ENTRIES, vec![7; 64]).expect("logged"),
        Role::Reader => {
            std::hint::black_box(cache.get(&(k * 7919 % ENTRIES)));
        }
    };
    let job = || {
        if compact {
            let report = cache.compact().expect("compacted");
            assert_eq!(report.records_after, ENTRIES, "one put per live entry");
        }
    };
    let (took, (), lat) = time_calls_during(call, job, window);
    let result = (took.max(window.unwrap_or_default()), lat);
    drop(cache);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() {
    let rounds = rounds_from_args(3);
    println!(
        "a log of {} records ({ENTRIES} live, 64 B values) compacted; latency of one thread's \
         calls meanwhile",
        ENTRIES * WRITES_PER_ENTRY
    );
    for round in 1..=rounds {
        for (role, name) in [(Role::Writer, "writes"), (Role::Reader, "reads ")] {
            let (took, during) = run(role, true, None);
            let (_, base) = run(role, false, Some(took));
            println!(
                "round {round}, {}: compact() took {took:.1?}",
                name.trim_end()
            );
            println!("  compaction {name}: {}", percentiles(during));
            println!("  baseline   {name}: {}", percentiles(base));
        }
    }
}
