//! The three throughput workloads, shared by the criterion bench (`benches/throughput.rs`) and
//! the `probe` binary, so both replay exactly the same keys.
//!
//! | workload      | keys                       | capacity | each op                     |
//! |---------------|----------------------------|----------|-----------------------------|
//! | `read_hits`   | Zipf(1.0) over 100,000     | 200,000  | `get`; every key is present |
//! | `cache_aside` | Zipf(0.9) over 100,000     | 10,000   | `get`, `insert` on a miss   |
//! | `insert_only` | uniform over 1,000,000     | 100,000  | `insert(k, k)`              |
//!
//! Every worker has its own pre-generated, seeded key stream of [`STREAM_LEN`] keys, and each
//! timed iteration replays the next [`OPS_PER_THREAD`] of them ([`Workload::next_window`]),
//! wrapping around at the end. The streams are long so that the keys a cache sees over a whole
//! measurement follow the workload's distribution. The first version replayed one window of
//! 65,536 keys over and over, which made `insert_only` a loop of 65,536 keys through a cache of
//! 100,000 (a cache that kept the loop measured in-place updates, one that did not measured
//! inserts that evict) and shrank `cache_aside`'s key space to the distinct keys of one window.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{thread_seed, uniform_keys, zipf_keys, BenchCache, Subject};

/// Thread counts for the scaling ids; the machines this runs on have 2 cores.
pub const THREADS: [usize; 2] = [1, 2];
/// Keys each worker replays per iteration.
pub const OPS_PER_THREAD: usize = 1 << 16;
/// Keys in each worker's stream: 64 windows, 32 MB per worker. A measurement of a few seconds
/// wraps around it a few times at most, long after the cache has turned over.
pub const STREAM_LEN: usize = 64 * OPS_PER_THREAD;

/// What one timed operation does.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// `get`.
    Get,
    /// `get`, then `insert` on a miss.
    GetOrInsert,
    /// `insert`.
    Insert,
}

/// One criterion group: its keys, the cache size, and the operation.
#[derive(Debug)]
pub struct Workload {
    /// The criterion group's name.
    pub name: &'static str,
    /// The capacity every cache is built with.
    pub capacity: usize,
    /// What each timed operation does.
    pub op: Op,
    /// One stream per worker, `STREAM_LEN` keys each.
    pub streams: Vec<Vec<u64>>,
    /// Per worker, the number of windows it has replayed (see [`Workload::next_window`]).
    cursors: Vec<AtomicUsize>,
    /// Keys replayed once, untimed, before the first measurement.
    pub warm_up: Vec<u64>,
    /// Whether every replayed key must be present after warm-up (checked, not assumed).
    pub all_present: bool,
    /// Whether the unbounded maps take part (see the module docs).
    pub include_unbounded: bool,
}

impl Workload {
    /// Zipf(1.0) reads of 100,000 present keys, for up to [`THREADS`]' largest count of workers.
    pub fn read_hits() -> Self {
        Self::read_hits_for(max_threads())
    }

    /// [`read_hits`](Self::read_hits) with key streams for `workers` workers.
    pub fn read_hits_for(workers: usize) -> Self {
        const KEYS: usize = 100_000;
        Self {
            name: "read_hits",
            // Twice the key count, so that no cache drops a key to an unevenly filled shard.
            capacity: 2 * KEYS,
            op: Op::Get,
            streams: streams(
                workers,
                |seed| zipf_keys(KEYS as u64, 1.0, STREAM_LEN, seed),
                0x5EED_0001,
            ),
            cursors: cursors(workers),
            warm_up: (0..KEYS as u64).collect(),
            all_present: true,
            include_unbounded: true,
        }
    }

    /// Zipf(0.9) over 100,000 keys with room for a tenth: `get`, `insert` on a miss.
    pub fn cache_aside() -> Self {
        Self::cache_aside_for(max_threads())
    }

    /// [`cache_aside`](Self::cache_aside) with key streams for `workers` workers.
    pub fn cache_aside_for(workers: usize) -> Self {
        const KEYS: usize = 100_000;
        Self {
            name: "cache_aside",
            capacity: KEYS / 10,
            op: Op::GetOrInsert,
            streams: streams(
                workers,
                |seed| zipf_keys(KEYS as u64, 0.9, STREAM_LEN, seed),
                0x5EED_0002,
            ),
            cursors: cursors(workers),
            warm_up: zipf_keys(KEYS as u64, 0.9, 2 * KEYS, 0x5EED_0012),
            all_present: false,
            include_unbounded: false,
        }
    }

    /// Uniform inserts over 1,000,000 keys into a full cache of 100,000.
    pub fn insert_only() -> Self {
        Self::insert_only_for(max_threads())
    }

    /// [`insert_only`](Self::insert_only) with key streams for `workers` workers.
    pub fn insert_only_for(workers: usize) -> Self {
        const KEYS: u64 = 1_000_000;
        const CAPACITY: usize = 100_000;
        Self {
            name: "insert_only",
            capacity: CAPACITY,
            op: Op::Insert,
            streams: streams(
                workers,
                |seed| uniform_keys(KEYS, STREAM_LEN, seed),
                0x5EED_0003,
            ),
            cursors: cursors(workers),
            warm_up: uniform_keys(KEYS, 2 * CAPACITY, 0x5EED_0013),
            all_present: false,
            include_unbounded: true,
        }
    }

    /// The keys worker `t` replays next: the window after the one it replayed last.
    pub fn next_window(&self, t: usize) -> &[u64] {
        // Relaxed: each worker advances only its own cursor; nothing is published through it.
        let w = self.cursors[t].fetch_add(1, Ordering::Relaxed) % (STREAM_LEN / OPS_PER_THREAD);
        &self.streams[t][w * OPS_PER_THREAD..(w + 1) * OPS_PER_THREAD]
    }

    /// Replays the warm-up keys, lets the cache settle, and checks presence where promised: an
    /// error names the workload, the cache and how many preloaded keys are missing.
    pub fn prepare<C: BenchCache>(&self, cache: &C, subject: Subject) -> Result<(), String> {
        replay(cache, self.op_for_warm_up(), &self.warm_up);
        cache.settle();
        if self.all_present {
            let missing = self
                .warm_up
                .iter()
                .filter(|k| cache.get(k).is_none())
                .count();
            if missing > 0 {
                return Err(format!(
                    "{}/{}: {missing} preloaded keys are missing, so gets would not all hit",
                    self.name, subject.name
                ));
            }
        }
        Ok(())
    }

    fn op_for_warm_up(&self) -> Op {
        match self.op {
            // Reads need the keys put in first.
            Op::Get => Op::Insert,
            op => op,
        }
    }
}

/// The most workers any measurement runs.
fn max_threads() -> usize {
    THREADS.into_iter().max().unwrap_or(1)
}

/// A cursor at the first window for each worker.
fn cursors(workers: usize) -> Vec<AtomicUsize> {
    (0..workers).map(|_| AtomicUsize::new(0)).collect()
}

/// One key stream per worker, each from its own seed.
fn streams(workers: usize, generate: impl Fn(u64) -> Vec<u64>, seed: u64) -> Vec<Vec<u64>> {
    (0..workers)
        .map(|t| generate(thread_seed(seed, t)))
        .collect()
}

/// The timed loop, returning how many `get`s hit (0 for inserts). The `match` sits outside
/// the per-key loops; counting is one register add per key, the same for every cache.
pub fn replay<C: BenchCache>(cache: &C, op: Op, keys: &[u64]) -> u64 {
    let mut hits = 0;
    match op {
        Op::Get => {
            for key in keys {
                let found = cache.get(key);
                hits += u64::from(found.is_some());
                black_box(found);
            }
        }
        Op::GetOrInsert => {
            for &key in keys {
                match cache.get(&key) {
                    Some(value) => {
                        hits += 1;
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
    hits
}
