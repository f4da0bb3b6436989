//! What freeing through the epoch costs a write at one and at two threads, and whether two
//! threads that write to caches of their own still slow each other down.
//!
//! Part one times crossbeam-epoch's building blocks, 4M iterations per thread, with one thread
//! and then with two threads each running the same loop on its own (they share nothing but the
//! process): a pin plus a 40-byte box freed at once, and a pin plus a box freed through the
//! epoch with one deferred call per box, as Larder's writers once freed every node they
//! evicted. crossbeam gathers deferred calls in bags on a queue every thread shares and runs
//! them on whichever thread collects next, so at two threads one thread's boxes are freed by
//! the other.
//!
//! Part two does the same with whole caches: inserts of new keys (uniform over ten times the
//! capacity) into a full cache, so that nearly every insert evicts, on one thread, and then on
//! two threads that each write to a cache of their own. Larder frees what a thread evicts on
//! that thread (`larder_core::raw::limbo`); a cache that does so should cost the same per insert
//! either way. quick_cache, which frees nothing through an epoch, is the control. Figures are
//! nanoseconds per insert per thread, the fastest of the rounds.
//!
//! Run: `cargo run --release -p larder-benches --bin reclaim_cost [ROUNDS]` (default 3).

use std::hint::black_box;

use larder_benches::{
    pin_and_defer_a_free, rounds_from_args, run_threads, thread_seed, uniform_keys, BenchCache,
};

/// Iterations per thread per building block.
const BLOCK_ITERS: u32 = 4_000_000;
/// Timed inserts per thread per round.
const INSERTS: usize = 2_000_000;
const CAPACITIES: [usize; 2] = [10_000, 100_000];

/// Nanoseconds per iteration of `f`, averaged over `threads` threads each running it
/// `BLOCK_ITERS` times.
fn per_iter(threads: usize, f: impl Fn(u32) + Sync) -> f64 {
    let wall = run_threads(threads, |_| {
        for i in 0..BLOCK_ITERS {
            f(i);
        }
    });
    wall.as_nanos() as f64 / f64::from(BLOCK_ITERS)
}

fn free_now(i: u32) {
    let guard = crossbeam_epoch::pin();
    drop(black_box(Box::new([u64::from(i); 5])));
    drop(guard);
}

/// A building block: its name and one iteration of it.
type Block = (&'static str, fn(u32));

/// Nanoseconds per insert per thread, with `threads` threads each writing to a cache of its
/// own, made by `build(capacity)`.
fn inserts<C: BenchCache>(threads: usize, capacity: usize, build: impl Fn(usize) -> C) -> f64 {
    let caches: Vec<C> = (0..threads).map(|_| build(capacity)).collect();
    let streams: Vec<Vec<u64>> = (0..threads)
        .map(|t| {
            uniform_keys(
                10 * capacity as u64,
                3 * capacity + INSERTS,
                thread_seed(0x5EED_0C1A, t),
            )
        })
        .collect();
    for (cache, keys) in caches.iter().zip(&streams) {
        for &k in &keys[..3 * capacity] {
            cache.insert(k, k);
        }
    }
    let wall = run_threads(threads, |t| {
        for &k in &streams[t][3 * capacity..] {
            caches[t].insert(k, k);
        }
    });
    wall.as_nanos() as f64 / INSERTS as f64
}

fn main() {
    let rounds = rounds_from_args(3);
    println!("building blocks, ns per iteration per thread (fastest of {rounds} rounds):");
    println!("  {:<40} {:>9} {:>9}", "", "1 thread", "2 threads");
    let blocks: [Block; 2] = [
        ("pin + 40-byte box, freed at once", free_now),
        (
            "pin + 40-byte box, freed by the epoch",
            pin_and_defer_a_free,
        ),
    ];
    for (name, f) in blocks {
        let [one, two] = [1, 2].map(|threads| {
            (0..rounds)
                .map(|_| per_iter(threads, f))
                .fold(f64::INFINITY, f64::min)
        });
        println!("  {name:<40} {one:>9.1} {two:>9.1}");
    }
    println!(
        "ns per insert of a new key per thread, each thread writing to a cache of its own \
         (fastest of {rounds} rounds of {INSERTS}):"
    );
    println!(
        "  {:>9} {:>14} {:>14} {:>14} {:>14}",
        "capacity", "larder 1T", "larder 2T", "quick_cache 1T", "quick_cache 2T"
    );
    for capacity in CAPACITIES {
        let mut fastest = [f64::INFINITY; 4];
        for _ in 0..rounds {
            let larder = |c: usize| larder::Cache::<u64, u64>::new(c as u64);
            let quick = |c: usize| quick_cache::sync::Cache::<u64, u64>::new(c);
            let round = [
                inserts(1, capacity, larder),
                inserts(2, capacity, larder),
                inserts(1, capacity, quick),
                inserts(2, capacity, quick),
            ];
            for (f, r) in fastest.iter_mut().zip(round) {
                *f = f.min(r);
            }
        }
        let [l1, l2, q1, q2] = fastest;
        println!("  {capacity:>9} {l1:>14.1} {l2:>14.1} {q1:>14.1} {q2:>14.1}");
    }
}
