//! Operations per second of Larder beside its peers, in three workloads, at 1 and 2 threads.
//!
//! | group         | keys                       | capacity | each op                     |
//! |---------------|----------------------------|----------|-----------------------------|
//! | `read_hits`   | Zipf(1.0) over 100,000     | 200,000  | `get`; every key is present |
//! | `cache_aside` | Zipf(0.9) over 100,000     | 10,000   | `get`, `insert` on a miss   |
//! | `insert_only` | uniform over 1,000,000     | 100,000  | `insert(k, k)`              |
//!
//! Every worker replays its own pre-generated, seeded key stream of `OPS_PER_THREAD` keys per
//! iteration; workers start together at a barrier and an iteration's time is the wall time until
//! the last one finishes, so the reported throughput is the aggregate over all threads.
//!
//! Each cache is built and warmed once, lazily, inside its first benchmark (so a filter skips the
//! set-up too) and shared by its thread counts: `read_hits` preloads every key and checks that it
//! is there, `cache_aside` replays a warm-up stream until the cache is full, `insert_only` fills
//! the cache to capacity so the timed inserts evict.
//!
//! The unbounded maps (`dashmap`, `papaya`) are the ceiling of what a concurrent hash table costs
//! without any eviction bookkeeping. They are left out of `cache_aside`: unable to bound
//! themselves they would soon hold every key and hit every time, which answers a different
//! question. In `insert_only` they never evict, so once warm they replace values in place.
//!
//! Run: `cargo bench -p larder-benches --bench throughput [-- FILTER]`, e.g. `-- read_hits/moka`.
//! Hit ratios are measured apart from speed, by the `hitratio` binary.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use larder_benches::{
    run_threads, thread_seed, uniform_keys, visit_caches, zipf_keys, BenchCache, Subject, Visitor,
};

/// Thread counts for the scaling ids; the machines this runs on have 2 cores.
const THREADS: [usize; 2] = [1, 2];
/// Keys each worker replays per iteration.
const OPS_PER_THREAD: usize = 1 << 16;

/// What one timed operation does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    GetOrInsert,
    Insert,
}

/// One criterion group: its keys, the cache size, and the operation.
#[derive(Debug)]
struct Workload {
    name: &'static str,
    capacity: usize,
    op: Op,
    /// One stream per worker, `OPS_PER_THREAD` keys each.
    streams: Vec<Vec<u64>>,
    /// Keys replayed once, untimed, before the first measurement.
    warm_up: Vec<u64>,
    /// Whether every replayed key must be present after warm-up (checked, not assumed).
    all_present: bool,
    include_unbounded: bool,
}

impl Workload {
    fn read_hits() -> Self {
        const KEYS: usize = 100_000;
        Self {
            name: "read_hits",
            // Twice the key count, so that no cache drops a key to an unevenly filled shard.
            capacity: 2 * KEYS,
            op: Op::Get,
            streams: streams(
                |seed| zipf_keys(KEYS as u64, 1.0, OPS_PER_THREAD, seed),
                0x5EED_0001,
            ),
            warm_up: (0..KEYS as u64).collect(),
            all_present: true,
            include_unbounded: true,
        }
    }

    fn cache_aside() -> Self {
        const KEYS: usize = 100_000;
        Self {
            name: "cache_aside",
            capacity: KEYS / 10,
            op: Op::GetOrInsert,
            streams: streams(
                |seed| zipf_keys(KEYS as u64, 0.9, OPS_PER_THREAD, seed),
                0x5EED_0002,
            ),
            warm_up: zipf_keys(KEYS as u64, 0.9, 2 * KEYS, 0x5EED_0012),
            all_present: false,
            include_unbounded: false,
        }
    }

    fn insert_only() -> Self {
        const KEYS: u64 = 1_000_000;
        const CAPACITY: usize = 100_000;
        Self {
            name: "insert_only",
            capacity: CAPACITY,
            op: Op::Insert,
            streams: streams(|seed| uniform_keys(KEYS, OPS_PER_THREAD, seed), 0x5EED_0003),
            warm_up: uniform_keys(KEYS, 2 * CAPACITY, 0x5EED_0013),
            all_present: false,
            include_unbounded: true,
        }
    }

    /// Replays the warm-up keys, lets the cache settle, and checks presence where promised.
    fn prepare<C: BenchCache>(&self, cache: &C, subject: Subject) {
        replay(cache, self.op_for_warm_up(), &self.warm_up);
        cache.settle();
        if self.all_present {
            let missing = self
                .warm_up
                .iter()
                .filter(|k| cache.get(k).is_none())
                .count();
            assert_eq!(
                missing, 0,
                "{}/{}: {missing} preloaded keys are missing, so gets would not all hit",
                self.name, subject.name
            );
        }
    }

    fn op_for_warm_up(&self) -> Op {
        match self.op {
            // Reads need the keys put in first.
            Op::Get => Op::Insert,
            op => op,
        }
    }

    fn bench(&self, c: &mut Criterion) {
        let mut group = c.benchmark_group(self.name);
        visit_caches(&mut Runner {
            group: &mut group,
            workload: self,
        });
        group.finish();
    }
}

fn streams(generate: impl Fn(u64) -> Vec<u64>, seed: u64) -> Vec<Vec<u64>> {
    let max_threads = THREADS.into_iter().max().unwrap_or(1);
    (0..max_threads)
        .map(|t| generate(thread_seed(seed, t)))
        .collect()
}

/// The untimed-setup, timed-replay loop for one workload, run for each cache.
struct Runner<'g, 'c, 'w> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    workload: &'w Workload,
}

impl Visitor for Runner<'_, '_, '_> {
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
        let workload = self.workload;
        if !subject.bounded && !workload.include_unbounded {
            return;
        }
        let mut cache = None;
        for threads in THREADS {
            let ops = (threads * OPS_PER_THREAD) as u64;
            self.group.throughput(Throughput::Elements(ops));
            let id = BenchmarkId::new(subject.name, threads);
            self.group.bench_with_input(id, &threads, |b, &threads| {
                let cache = &*cache.get_or_insert_with(|| {
                    let cache = build(workload.capacity);
                    workload.prepare(&cache, subject);
                    cache
                });
                b.iter_custom(|iters| {
                    run_threads(threads, |t| {
                        for _ in 0..iters {
                            replay(cache, workload.op, &workload.streams[t]);
                        }
                    })
                });
            });
        }
    }
}

/// The timed loop. The `match` sits outside the per-key loops.
fn replay<C: BenchCache>(cache: &C, op: Op, keys: &[u64]) {
    match op {
        Op::Get => {
            for key in keys {
                black_box(cache.get(key));
            }
        }
        Op::GetOrInsert => {
            for &key in keys {
                match cache.get(&key) {
                    Some(value) => {
                        black_box(value);
                    }
                    None => cache.insert(key, key),
                }
            }
        }
        Op::Insert => {
            for &key in keys {
                cache.insert(key, key);
            }
        }
    }
}

fn read_hits(c: &mut Criterion) {
    Workload::read_hits().bench(c);
}

fn cache_aside(c: &mut Criterion) {
    Workload::cache_aside().bench(c);
}

fn insert_only(c: &mut Criterion) {
    Workload::insert_only().bench(c);
}

fn config() -> Criterion {
    // Short windows keep a full run near five minutes on 2 cores; pass `--measurement-time` or
    // `--sample-size` for a closer look at one id.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = throughput;
    config = config();
    targets = read_hits, cache_aside, insert_only
}
criterion_main!(throughput);
