//! Operations per second of Larder beside its peers, in three workloads, at 1 and 2 threads.
//! The workloads (`read_hits`, `cache_aside`, `insert_only`: keys, capacity, operation) are
//! defined in `larder_benches::workloads`, which the `probe` binary replays too.
//!
//! Every worker replays the next `OPS_PER_THREAD` keys of its own pre-generated, seeded stream
//! per iteration; workers start together at a barrier and an iteration's time is the wall time until
//! the last one finishes, so the reported throughput is the aggregate over all threads.
//!
//! Each cache is built and warmed once, lazily, inside its first benchmark (so a filter skips the
//! set-up too) and shared by its thread counts: `read_hits` preloads every key and checks that it
//! is there, `cache_aside` replays a warm-up stream until the cache is full, `insert_only` fills
//! the cache to capacity so the timed inserts evict.
//!
//! The unbounded maps (`dashmap`, `papaya`, `papaya_ahash`) show what a concurrent hash table
//! costs without any eviction bookkeeping. Each subject hashes with its own default (Larder and
//! quick_cache ahash; dashmap, papaya and moka std's SipHash, which costs a read about 5 ns
//! more); `papaya_ahash` is papaya with ahash, the ceiling with the hashing matched. They are left out of `cache_aside`: unable to bound
//! themselves they would soon hold every key and hit every time, which answers a different
//! question. In `insert_only` they never evict, so once warm they replace values in place.
//!
//! Run: `cargo bench -p larder-benches --bench throughput [-- FILTER]`, e.g. `-- read_hits/moka`.
//! Hit ratios are measured apart from speed, by the `hitratio` binary.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use larder_benches::workloads::{replay, Workload, OPS_PER_THREAD, THREADS};
use larder_benches::{run_threads, visit_caches, BenchCache, Subject, Visitor};

/// Runs `workload` as one criterion group, every cache in turn.
fn bench(workload: &Workload, c: &mut Criterion) {
    let mut group = c.benchmark_group(workload.name);
    visit_caches(&mut Runner {
        group: &mut group,
        workload,
    });
    group.finish();
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
                    workload
                        .prepare(&cache, subject)
                        .unwrap_or_else(|e| panic!("{e}"));
                    cache
                });
                b.iter_custom(|iters| {
                    run_threads(threads, |t| {
                        for _ in 0..iters {
                            replay(cache, workload.op, workload.next_window(t));
                        }
                    })
                });
            });
        }
    }
}

fn read_hits(c: &mut Criterion) {
    bench(&Workload::read_hits(), c);
}

fn cache_aside(c: &mut Criterion) {
    bench(&Workload::cache_aside(), c);
}

fn insert_only(c: &mut Criterion) {
    bench(&Workload::insert_only(), c);
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
