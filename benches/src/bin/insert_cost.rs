//! What one insert of a new key costs, by cache size, and what the write path's building blocks
//! cost alone: the figures that say whether a write is bound by cache misses or by fixed work.
//!
//! One thread. For each capacity, in each round, each cache in turn is built, filled with three
//! times its capacity of uniform keys drawn from ten times its capacity (so it is full, and its
//! eviction state has turned over), and timed on 2M more such keys; each one's fastest round
//! counts. Nearly every key is new, so nearly every insert evicts. A cache
//! of 10,000 `u64 → u64` entries fits in this machine's 4 MiB L2 with room to spare, so what it
//! costs there is the write's fixed work; what a larger one costs beyond that is its misses.
//!
//! The building blocks, each timed over 4M iterations before any cache is built: an epoch pin and unpin
//! (`crossbeam_epoch::pin`), a `parking_lot::Mutex` lock and unlock, and a boxed 40-byte block
//! freed through the epoch (`defer`) against one freed at once.
//!
//! Run: `cargo run --release -p larder-benches --bin insert_cost [ROUNDS [SUBJECT...]]`,
//! ROUNDS default 5, subjects default `larder larder_lru quick_cache` (the bench's cache names).
//!
//! `insert_cost count 1 SUBJECT` runs one pass of 200,000 keys at 10,000 entries and nothing
//! else, to count what an insert executes rather than time it (the machine's noise does not
//! reach a count). Under callgrind, collecting only inside the timed loop:
//!
//! ```text
//! valgrind --tool=callgrind --cache-sim=yes --toggle-collect='*insert_pass*' \
//!     --callgrind-out-file=cg.out target/release/insert_cost count 1 larder
//! callgrind_annotate cg.out
//! ```
//!
//! Its totals divided by 200,000 are instructions, data reads and simulated L1 misses per
//! insert.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use larder_benches::{
    pin_and_defer_a_free, uniform_keys, visit_caches, BenchCache, Subject, Visitor,
};

const CAPACITIES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Keys per timed pass.
const PASS: usize = 2_000_000;
/// Keys per pass with `count`: enough that the pass's instructions dwarf a table rebuild's.
const COUNT_PASS: usize = 200_000;
/// Iterations per building block.
const BLOCK_ITERS: u32 = 4_000_000;

/// Builds, warms and times each named subject once, at one capacity.
struct Round<'a> {
    names: &'a [String],
    capacity: usize,
    keys: &'a [u64],
    /// Fastest nanoseconds per insert so far, per subject, in `names` order.
    fastest: &'a mut [f64],
}

impl Visitor for Round<'_> {
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
        let Some(at) = self.names.iter().position(|n| n == subject.name) else {
            return;
        };
        let cache = build(self.capacity);
        let (warm, timed) = self.keys.split_at(self.capacity * 3);
        for &k in warm {
            cache.insert(k, k);
        }
        let t = Instant::now();
        insert_pass(&cache, timed);
        let ns = t.elapsed().as_nanos() as f64 / timed.len() as f64;
        self.fastest[at] = self.fastest[at].min(ns);
        black_box(cache.len());
    }
}

/// The timed loop, a function of its own so that `callgrind --toggle-collect='*insert_pass*'`
/// counts it alone (see `count` in the module docs).
#[inline(never)]
fn insert_pass<C: BenchCache>(cache: &C, keys: &[u64]) {
    for &k in keys {
        cache.insert(k, k);
    }
}

fn per_iter(f: impl Fn(u32)) -> f64 {
    let t = Instant::now();
    for i in 0..BLOCK_ITERS {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / f64::from(BLOCK_ITERS)
}

/// The building blocks, each on its own.
fn building_blocks() {
    let pin = per_iter(|_| drop(black_box(crossbeam_epoch::pin())));
    let lock = parking_lot::Mutex::new(0u64);
    let locked = per_iter(|_| *lock.lock() += 1);
    let free_now = per_iter(|i| drop(black_box(Box::new([u64::from(i); 5]))));
    let deferred = per_iter(pin_and_defer_a_free);
    println!("building blocks, ns per call:");
    println!("  epoch pin + unpin                      {pin:6.1}");
    println!("  parking_lot lock + unlock              {locked:6.1}");
    println!("  40-byte box, freed at once             {free_now:6.1}");
    println!("  pin + 40-byte box, freed by the epoch  {deferred:6.1}");
    println!(
        "  so a deferred free costs {:.1} beyond the pin and the box",
        deferred - pin - free_now
    );
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    // `count`: one short pass at the smallest capacity, to run under callgrind.
    let count = args.next_if(|a| a == "count").is_some();
    let rounds = match args.next().map(|r| r.parse::<usize>()) {
        None => 5,
        Some(Ok(r)) if r > 0 => r,
        Some(_) => {
            eprintln!(
                "usage: insert_cost [count] [ROUNDS [SUBJECT...]] (ROUNDS a positive number)"
            );
            return ExitCode::FAILURE;
        }
    };
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = ["larder", "larder_lru", "quick_cache"]
            .map(String::from)
            .to_vec();
    }
    let (capacities, pass) = if count {
        (&CAPACITIES[..1], COUNT_PASS)
    } else {
        // First, while the heap is fresh: after the caches below, a deferred free measured up
        // to five times slower (glibc's bins hold what the large caches freed).
        building_blocks();
        (&CAPACITIES[..], PASS)
    };
    println!("ns per insert of a new key, one thread, fastest of {rounds} rounds of {pass} keys:");
    print!("{:>10}", "capacity");
    for name in &names {
        print!(" {name:>12}");
    }
    println!();
    for &capacity in capacities {
        let keys = uniform_keys(capacity as u64 * 10, capacity * 3 + pass, 7);
        let mut fastest = vec![f64::INFINITY; names.len()];
        for _ in 0..rounds {
            visit_caches(&mut Round {
                names: &names,
                capacity,
                keys: &keys,
                fastest: &mut fastest,
            });
        }
        print!("{capacity:>10}");
        for (name, ns) in names.iter().zip(&fastest) {
            if ns.is_finite() {
                print!(" {ns:>12.1}");
            } else {
                eprintln!("no bench cache is named {name}");
                return ExitCode::FAILURE;
            }
        }
        println!();
    }
    ExitCode::SUCCESS
}
