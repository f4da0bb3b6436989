//! The hit path of a memoized function: `#[larder::memoize]`, the same function written by hand
//! over `Cache::get_with`, and the `cached` crate's `#[cached]`, in one group, at 1 and 2
//! threads.
//!
//! Each function computes a cheap mix of its argument; every key is computed once, untimed,
//! before the first measurement, so every timed call is a hit and what is measured is the
//! memoization itself: build the key, find the value, clone it out. Every worker replays the next
//! window of its own seeded Zipf(1.0) stream over the function's 1,000 arguments, as the
//! throughput bench does.
//!
//! Run: `cargo bench -p larder-benches --bench memoize`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use larder::Cache;
use larder_benches::workloads::{OPS_PER_THREAD, THREADS};
use larder_benches::{run_threads, thread_seed, zipf_keys};

/// Distinct arguments; all fit in every cache.
const ARGUMENTS: u64 = 1_000;
/// Every cache's capacity.
const CAPACITY: usize = 4_096;
/// Windows per worker stream.
const WINDOWS: usize = 16;

/// The work behind each memoized function (cheap: only hits are timed).
fn compute(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ n
}

#[larder::memoize(capacity = 4096)]
fn with_attribute(n: u64) -> u64 {
    compute(n)
}

static HAND_WRITTEN: LazyLock<Cache<u64, u64>> = LazyLock::new(|| Cache::new(CAPACITY as u64));

fn by_hand(n: u64) -> u64 {
    HAND_WRITTEN.get_with(n, || compute(n))
}

#[cached::proc_macro::cached(size = 4096)]
fn with_cached(n: u64) -> u64 {
    compute(n)
}

/// A memoized function under test, by name.
type Subject = (&'static str, fn(u64) -> u64);

/// Per worker, its stream and the number of windows it has replayed.
struct Streams {
    keys: Vec<Vec<u64>>,
    cursors: Vec<AtomicUsize>,
}

impl Streams {
    fn new() -> Self {
        let threads = THREADS.into_iter().max().unwrap_or(1);
        Streams {
            keys: (0..threads)
                .map(|t| {
                    zipf_keys(
                        ARGUMENTS,
                        1.0,
                        WINDOWS * OPS_PER_THREAD,
                        thread_seed(0x4d45_4d4f, t),
                    )
                })
                .collect(),
            cursors: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn next_window(&self, t: usize) -> &[u64] {
        let w = self.cursors[t].fetch_add(1, Ordering::Relaxed) % WINDOWS;
        &self.keys[t][w * OPS_PER_THREAD..(w + 1) * OPS_PER_THREAD]
    }
}

fn memoize_hits(c: &mut Criterion) {
    let streams = Streams::new();
    let subjects: [Subject; 3] = [
        ("larder_memoize", with_attribute),
        ("larder_get_with", by_hand),
        ("cached", with_cached),
    ];
    for (_, f) in subjects {
        for n in 0..ARGUMENTS {
            f(n);
        }
    }
    assert_eq!(with_attribute_cache().len() as u64, ARGUMENTS);
    assert_eq!(HAND_WRITTEN.len() as u64, ARGUMENTS);
    let mut group = c.benchmark_group("memoize_hits");
    for (name, f) in subjects {
        for threads in THREADS {
            group.throughput(Throughput::Elements((threads * OPS_PER_THREAD) as u64));
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    run_threads(threads, |t| {
                        for _ in 0..iters {
                            for &n in streams.next_window(t) {
                                black_box(f(black_box(n)));
                            }
                        }
                    })
                });
            });
        }
    }
    group.finish();
    // Every timed call was a hit: the misses are the warm-up's alone.
    assert_eq!(with_attribute_cache().stats().misses, ARGUMENTS);
    assert_eq!(HAND_WRITTEN.stats().misses, ARGUMENTS);
}

criterion_group!(benches, memoize_hits);
criterion_main!(benches);
