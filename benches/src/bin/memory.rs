//! Heap bytes per entry of Larder and its peers, for `u64 -> u64` at 1,000,000 entries.
//!
//! A counting global allocator tracks live heap bytes. For each cache: note the live bytes, build
//! it with capacity 1,000,000, insert keys `0..1_000_000` (value = key) from one thread, let it
//! settle (moka's `run_pending_tasks`, mini-moka's `sync`, Larder's epoch collection driven by
//! pinning and flushing enough times to free the retired nodes), and measure twice, a moment apart, so
//! deferred work that frees or allocates late shows up as a difference instead of being counted
//! silently. The reported figure is the second measurement, divided by the entries the cache
//! then holds (a bounded cache may hold a few thousand less than it was given, its shards
//! filling unevenly); the peak is the highest live count seen while building. `std::collections::HashMap` (behind a lock) is the floor: no eviction
//! metadata at all.
//!
//! Then it inserts 1,000,000 more distinct keys, so a bounded cache evicts about a million
//! entries and its eviction metadata (Larder's ghosts and sketch, the peers' equivalents)
//! reaches its steady state, and measures again, per entry then resident (the unbounded maps
//! hold two million by then).
//!
//! The counts are *requested* bytes (`Layout::size`), not what the system allocator really hands
//! out: malloc's per-chunk header and size-class rounding are not included.
//!
//! Run: `cargo run --release -p larder-benches --bin memory`.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use larder_benches::counting::{live, peak, reset_peak, Counting};
use larder_benches::{visit_caches, BenchCache, Subject, Visitor};
use parking_lot::Mutex;

const ENTRIES: usize = 1_000_000;
/// A `u64` key and a `u64` value.
const PAYLOAD: f64 = 16.0;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One row of the table.
struct Row {
    name: &'static str,
    len: usize,
    first: isize,
    settled: isize,
    peak: usize,
    leftover: isize,
    churned: isize,
    churned_len: usize,
}

impl Row {
    /// Live bytes per entry the cache holds (a bounded cache may hold a few less than it was
    /// given: its shards fill unevenly).
    fn per_entry(&self) -> f64 {
        self.settled as f64 / self.held()
    }

    fn held(&self) -> f64 {
        self.len.max(1) as f64
    }
}

fn measure<C: BenchCache>(name: &'static str, build: impl FnOnce(usize) -> C) -> Row {
    let before = live();
    reset_peak();
    let cache = build(ENTRIES);
    for key in 0..ENTRIES as u64 {
        cache.insert(key, key);
    }
    cache.settle();
    let first = live() as isize - before as isize;
    // Give anything deferred a chance to run, then measure again.
    thread::sleep(Duration::from_millis(100));
    cache.settle();
    let settled = live() as isize - before as isize;
    let peak = peak() - before;
    let len = cache.len();
    for key in ENTRIES as u64..2 * ENTRIES as u64 {
        cache.insert(key, key);
    }
    cache.settle();
    thread::sleep(Duration::from_millis(100));
    cache.settle();
    let churned = live() as isize - before as isize;
    let churned_len = cache.len();
    drop(cache);
    let leftover = live() as isize - before as isize;
    Row {
        name,
        len,
        first,
        settled,
        peak,
        leftover,
        churned,
        churned_len,
    }
}

struct Measure(Vec<Row>);

impl Visitor for Measure {
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
        self.0.push(measure(subject.name, build));
    }
}

fn main() {
    // Printing first also allocates stdout's buffer before anything is counted.
    println!("# Heap bytes per entry, u64 -> u64, {ENTRIES} entries, capacity {ENTRIES}\n");

    let mut rows = Measure(Vec::new());
    visit_caches(&mut rows);
    let mut rows = rows.0;
    rows.push(measure("std HashMap (floor)", |_| {
        Mutex::new(HashMap::<u64, u64>::new())
    }));

    println!(
        "| cache | len() | bytes/entry | minus 16 B payload | peak bytes/entry | first reading, bytes/entry | after 1M more keys: minus payload, per resident entry |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let len = if row.len == ENTRIES {
            row.len.to_string()
        } else {
            format!(
                "{} (short by {})",
                row.len,
                ENTRIES as isize - row.len as isize
            )
        };
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} ({} entries) |",
            row.name,
            len,
            row.per_entry(),
            row.per_entry() - PAYLOAD,
            row.peak as f64 / row.held(),
            row.first as f64 / row.held(),
            row.churned as f64 / row.churned_len.max(1) as f64 - PAYLOAD,
            row.churned_len,
        );
    }

    println!();
    println!(
        "- Bytes are requested bytes (`Layout::size`) counted by a wrapping global allocator,"
    );
    println!(
        "  not malloc's real footprint: per-chunk headers and size-class rounding are missing."
    );
    println!(
        "- bytes/entry is live heap after inserting and settling, divided by the entries held"
    );
    println!("  (len()); peak is the high-water mark while building (table resizes show here),");
    println!("  divided the same way.");
    println!(
        "- moka and mini-moka were settled (run_pending_tasks / sync) before measuring; their"
    );
    println!("  len() is entry_count(). Larder was settled by pinning and flushing the epoch and");
    println!("  running its pending tasks, so nodes it retired are freed before it is measured");
    println!("  (all but the thread's last unsealed batch, up to 256 nodes).");
    for row in &rows {
        if row.first != row.settled {
            println!(
                "- {}: the two readings differ by {} bytes (deferred work).",
                row.name,
                row.settled - row.first
            );
        }
        if row.leftover != 0 {
            println!(
                "- {}: live bytes moved by {} across build and drop (thread-local or global state \
                 kept by the crate, or deferred frees: epoch-reclaimed memory freed during a later \
                 row shows there as a negative number).",
                row.name, row.leftover
            );
        }
    }
}
