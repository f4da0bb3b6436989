//! What durability costs: inserts into a `DurableCache` in each `Durability` mode beside the
//! in-memory `larder::Cache`, and how fast a closed cache opens again.
//!
//! Group `durable_insert`, ids `MODE/SIZE/THREADS`: `u64` keys, `Vec<u8>` values of `SIZE`
//! (64 B or 1 KiB) stored by `RawBytes`, keys by the default `Postcard` (a varint, 3 bytes for
//! most keys here), so a log record is 32 + 3 + `SIZE` bytes.
//! - `in_memory`: `larder::Cache::insert`, the ceiling the durable modes are held against.
//! - `manual`, `interval_1s`, `always`: `DurableCache::insert` in `Durability::Manual`,
//!   `Interval(1 s)` and `Always`, with `Compaction::Manual`, so that only appends and syncs
//!   are timed. `always` also runs at 8 threads, to show group commit.
//! - `manual_sync_each`: `Manual`, one thread, `insert` then `sync()` for every write: a sync
//!   per write by hand. `always` at one thread does the same work, except that its log
//!   reserves space by writing zeros (`larder_log::Reserve`), so where a sync reaches blocks
//!   not synced before, `always`'s writes only records and this one the extent map as well.
//! - `interval_1s_auto_compaction`: the builder's defaults, `Interval(1 s)` with
//!   `Compaction::Auto`, so the janitor also compacts while the writers run (every key is
//!   rewritten over and over here, so the log is soon half dead and due).
//! - `manual_auto_compaction`: `Manual` with `Compaction::Auto`, what a cache built with
//!   `.durability(Durability::Manual)` and nothing else does.
//!
//! After each durable measurement one line goes to stderr: the inserts it made (warm-up
//! included) and the log flushes its syncs ran. Their quotient, records per flush, is what
//! group commit buys, and unlike the rate it does not depend on how slow the disk is that day.
//!
//! Every cache, durable or not, is built with room for twice its key space (`KEYS`), and every
//! key is inserted before the timing starts, so no timed insert evicts and none grows the
//! table: each one replaces a present key's value, in memory and, for the durable caches, by
//! appending a record. A durable cache is prefilled in `Manual` mode, closed, and reopened in
//! the mode under test, so even `always` starts full without a sync per prefilled key. Each
//! measurement gets a fresh cache (and directory) and the same keys: every worker replays the
//! next window of its own pre-generated, seeded uniform key stream per iteration, cloning one
//! value per insert (in every subject alike, as a caller handing over an owned value would).
//! Workers start together at a barrier (`run_threads`, as in `throughput.rs`), so the reported
//! rate is the aggregate over all threads.
//!
//! Group `recovery`: a directory holding 1M entries with 64 B values (written once, untimed,
//! in `Manual` mode and closed), opened again with the page cache warm. `durable_build` times
//! `build()` of the `DurableCache` (log replay, then loading the cache), with a capacity of 2M
//! so loading evicts nothing and leaves the directory unchanged; `durable_build_ttl` does the
//! same with a directory a cache with a time-to-live of an hour wrote, and reopens it so, so
//! each entry's lifetime is worked out from its record's deadline; `log_replay` times the bare
//! `larder_log::Log::open` with a closure that only counts records, so the log's own replay
//! rate shows apart from the cache loading.
//!
//! The logs live under `std::env::temp_dir()`, on the disk (`/tmp` is on the root file system
//! here), not on a tmpfs such as `/dev/shm`: a sync there returns at once, and what a sync
//! costs is the point. Each directory is removed when its measurement ends.
//!
//! Run: `cargo bench -p larder-benches --bench durable [-- FILTER]`, e.g.
//! `-- durable_insert/always` or `-- recovery`.

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use larder::durable::{Compaction, LogOptions, RawBytes};
use larder::{Cache, Durability, DurableCache, IntoDurable};
use larder_benches::{run_threads, thread_seed, uniform_keys, DurableInsert};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The key space of `durable_insert`: every key is present before the timing starts.
const KEYS: u64 = 1 << 17;
/// Room for twice the keys, so no shard fills up and evicts (as `read_hits` sizes its caches).
const CAPACITY: u64 = 2 * KEYS;
/// Value sizes, with the names the ids use.
const SIZES: [(&str, usize); 2] = [("64B", 64), ("1KiB", 1024)];
/// Keys in each worker's stream; iterations replay it window by window, wrapping around.
const STREAM_LEN: usize = 1 << 18;
/// The most workers any measurement runs (`always` at 8 threads).
const MAX_THREADS: usize = 8;

/// Entries in the recovery directory.
const RECOVERY_ENTRIES: u64 = 1_000_000;
/// Their value size.
const RECOVERY_VALUE: usize = 64;

/// One subject of `durable_insert`.
#[derive(Debug, Clone, Copy)]
struct Subject {
    name: &'static str,
    /// `None` for the in-memory cache.
    durability: Option<Durability>,
    /// `Compaction::Auto` (the default) rather than `Compaction::Manual`.
    auto_compaction: bool,
    /// `sync()` after every insert.
    sync_each: bool,
    threads: &'static [usize],
    /// Inserts per worker per iteration: few where each waits for the disk, so that an
    /// iteration stays short and criterion can take its samples within its time.
    ops_per_thread: usize,
}

/// Inserts per worker per iteration where nothing waits for the disk: 1.5 to 20 ms.
const BUFFERED_OPS: usize = 1 << 12;
/// The same where every insert waits for a sync.
const SYNCED_OPS: usize = 32;

const SUBJECTS: [Subject; 7] = [
    Subject {
        name: "in_memory",
        durability: None,
        auto_compaction: false,
        sync_each: false,
        threads: &[1, 2],
        ops_per_thread: BUFFERED_OPS,
    },
    Subject {
        name: "manual",
        durability: Some(Durability::Manual),
        auto_compaction: false,
        sync_each: false,
        threads: &[1, 2],
        ops_per_thread: BUFFERED_OPS,
    },
    Subject {
        name: "interval_1s",
        durability: Some(Durability::Interval(Duration::from_secs(1))),
        auto_compaction: false,
        sync_each: false,
        threads: &[1, 2],
        ops_per_thread: BUFFERED_OPS,
    },
    Subject {
        name: "interval_1s_auto_compaction",
        durability: Some(Durability::Interval(Duration::from_secs(1))),
        auto_compaction: true,
        sync_each: false,
        threads: &[1, 2],
        ops_per_thread: BUFFERED_OPS,
    },
    Subject {
        name: "manual_auto_compaction",
        durability: Some(Durability::Manual),
        auto_compaction: true,
        sync_each: false,
        threads: &[1, 2],
        ops_per_thread: BUFFERED_OPS,
    },
    Subject {
        name: "always",
        durability: Some(Durability::Always),
        auto_compaction: false,
        sync_each: false,
        threads: &[1, 2, 8],
        ops_per_thread: SYNCED_OPS,
    },
    Subject {
        name: "manual_sync_each",
        durability: Some(Durability::Manual),
        auto_compaction: false,
        sync_each: true,
        threads: &[1],
        ops_per_thread: SYNCED_OPS,
    },
];

/// A durable cache that syncs after each insert, by hand.
struct SyncEach(DurableCache<u64, Vec<u8>>);

impl DurableInsert for SyncEach {
    fn insert(&self, key: u64, value: Vec<u8>) {
        self.0
            .insert(key, value)
            .expect("the durable insert succeeds");
        self.0.sync().expect("the sync succeeds");
    }
    fn flushes(&self) -> Option<u64> {
        Some(self.0.flushes())
    }
}

/// A directory under the system's temporary directory, removed on drop.
///
/// `std::env::temp_dir()` (`/tmp`, unless `TMPDIR` says otherwise) is on the disk; `/dev/shm`
/// would not do, since a sync on a tmpfs costs nothing and the syncs are what is measured.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "larder-bench-durable-{}-{label}",
            std::process::id()
        ));
        // A leftover from a killed run of the same pid would be replayed: start empty.
        let _ = fs::remove_dir_all(&path);
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A cache under test and, for a durable one, its directory. The cache is declared first so
/// it is dropped (and its log closed) before the directory is removed.
struct Prepared<C> {
    cache: C,
    /// Held only to be removed after the cache is dropped.
    dir: Option<ScratchDir>,
}

fn durable_cache(
    dir: &Path,
    durability: Durability,
    compaction: Compaction,
    capacity: u64,
) -> DurableCache<u64, Vec<u8>> {
    Cache::builder()
        .max_capacity(capacity)
        .durable(dir)
        .durability(durability)
        .compaction(compaction)
        .value_codec(RawBytes)
        .build()
        .expect("the durable cache opens")
}

/// A durable cache in `durability` holding every key of `0..KEYS`: prefilled in `Manual`,
/// closed, reopened.
fn prefilled_durable(
    label: &str,
    durability: Durability,
    compaction: Compaction,
    value: &[u8],
) -> Prepared<DurableCache<u64, Vec<u8>>> {
    let dir = ScratchDir::new(label);
    let cache = durable_cache(&dir.0, Durability::Manual, Compaction::Manual, CAPACITY);
    for key in 0..KEYS {
        cache
            .insert(key, value.to_vec())
            .expect("the prefill succeeds");
    }
    cache.close().expect("the prefilled cache closes");
    let cache = durable_cache(&dir.0, durability, compaction, CAPACITY);
    assert_eq!(
        cache.len() as u64,
        KEYS,
        "{label}: the reopened cache is full"
    );
    Prepared {
        cache,
        dir: Some(dir),
    }
}

fn prefilled_in_memory(value: &[u8]) -> Prepared<Cache<u64, Vec<u8>>> {
    let cache = Cache::builder()
        .max_capacity(CAPACITY)
        .build()
        .expect("a valid Larder configuration");
    for key in 0..KEYS {
        cache.insert(key, value.to_vec());
    }
    assert_eq!(cache.len() as u64, KEYS, "in_memory: the cache is full");
    Prepared { cache, dir: None }
}

/// Every worker's key stream, and a cursor per worker for the measurement under way.
struct Streams {
    keys: Vec<Vec<u64>>,
    cursors: Vec<AtomicUsize>,
}

impl Streams {
    fn new() -> Self {
        Streams {
            keys: (0..MAX_THREADS)
                .map(|t| uniform_keys(KEYS, STREAM_LEN, thread_seed(0x5EED_00D0, t)))
                .collect(),
            cursors: (0..MAX_THREADS).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Back to every stream's first window, so each measurement replays the same keys.
    fn rewind(&self) {
        for cursor in &self.cursors {
            // Relaxed: called between measurements, with no worker running.
            cursor.store(0, Ordering::Relaxed);
        }
    }

    /// The next `len` keys of worker `t`'s stream.
    fn next_window(&self, t: usize, len: usize) -> &[u64] {
        // Relaxed: each worker advances only its own cursor; nothing is published through it.
        let w = self.cursors[t].fetch_add(1, Ordering::Relaxed) % (STREAM_LEN / len);
        &self.keys[t][w * len..(w + 1) * len]
    }
}

/// One value of `len` seeded bytes.
fn value_of(len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(0x5EED_00D1 ^ len as u64);
    (0..len).map(|_| rng.gen()).collect()
}

/// Times `subject` at each of its thread counts, each on a fresh cache that `prepare` makes
/// (lazily, inside the first measurement, so a filter skips it) and drops when it is done.
fn bench_subject<C: DurableInsert>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    streams: &Streams,
    subject: Subject,
    size: &str,
    value: &[u8],
    prepare: impl Fn() -> Prepared<C>,
) {
    let ops = subject.ops_per_thread;
    for &threads in subject.threads {
        let mut prepared = None;
        let inserts = AtomicU64::new(0);
        streams.rewind();
        group.throughput(Throughput::Elements((threads * ops) as u64));
        let id = BenchmarkId::new(format!("{}/{size}", subject.name), threads);
        group.bench_with_input(id, &threads, |b, &threads| {
            let cache = &prepared.get_or_insert_with(&prepare).cache;
            b.iter_custom(|iters| {
                let elapsed = run_threads(threads, |t| {
                    for _ in 0..iters {
                        for &key in streams.next_window(t, ops) {
                            cache.insert(key, value.to_vec());
                        }
                    }
                });
                // Relaxed: read only after the workers are joined.
                inserts.fetch_add(iters * (threads * ops) as u64, Ordering::Relaxed);
                elapsed
            });
        });
        if let Some(flushes) = prepared.as_ref().and_then(|p| p.cache.flushes()) {
            let inserts = inserts.into_inner();
            eprintln!(
                "durable_insert/{}/{size}/{threads}: {inserts} inserts, {flushes} flushes{}",
                subject.name,
                match flushes {
                    0 => String::new(),
                    f => format!(" ({:.1} records per flush)", inserts as f64 / f as f64),
                }
            );
        }
        // A fresh cache per thread count: the log of one does not grow into the next.
        drop(prepared);
    }
}

fn durable_insert(c: &mut Criterion) {
    let streams = Streams::new();
    let mut group = c.benchmark_group("durable_insert");
    for (size, len) in SIZES {
        let value = value_of(len);
        for subject in SUBJECTS {
            let label = format!("{}-{size}", subject.name);
            let compaction = if subject.auto_compaction {
                Compaction::default()
            } else {
                Compaction::Manual
            };
            match subject.durability {
                None => bench_subject(&mut group, &streams, subject, size, &value, || {
                    prefilled_in_memory(&value)
                }),
                Some(durability) if subject.sync_each => {
                    bench_subject(&mut group, &streams, subject, size, &value, || {
                        let p = prefilled_durable(&label, durability, compaction, &value);
                        Prepared {
                            cache: SyncEach(p.cache),
                            dir: p.dir,
                        }
                    })
                }
                Some(durability) => {
                    bench_subject(&mut group, &streams, subject, size, &value, || {
                        prefilled_durable(&label, durability, compaction, &value)
                    })
                }
            }
        }
    }
    group.finish();
}

/// The recovery directory: `RECOVERY_ENTRIES` keys with `RECOVERY_VALUE`-byte values, written
/// in `Manual` mode and closed.
/// The cache `recovery` opens: `Manual`, room for twice the entries, and with `ttl` as its
/// time-to-live if given.
fn recovery_cache(dir: &Path, ttl: Option<Duration>) -> DurableCache<u64, Vec<u8>> {
    let builder = Cache::builder().max_capacity(2 * RECOVERY_ENTRIES);
    match ttl {
        Some(ttl) => builder.time_to_live(ttl),
        None => builder,
    }
    .durable(dir)
    .durability(Durability::Manual)
    .compaction(Compaction::Manual)
    .value_codec(RawBytes)
    .build()
    .expect("the durable cache opens")
}

/// A directory holding [`RECOVERY_ENTRIES`] entries, written by a cache with `ttl`. Each kind
/// has a name of its own: a new one empties any directory of its name.
fn recovery_dir(ttl: Option<Duration>) -> ScratchDir {
    let dir = ScratchDir::new(if ttl.is_some() {
        "recovery-ttl"
    } else {
        "recovery"
    });
    let value = value_of(RECOVERY_VALUE);
    let cache = recovery_cache(&dir.0, ttl);
    for key in 0..RECOVERY_ENTRIES {
        cache.insert(key, value.clone()).expect("the fill succeeds");
    }
    cache.close().expect("the filled cache closes");
    dir
}

/// Times `iters` opens of `dir` with `ttl`, each checked to load every entry.
fn time_builds(dir: &Path, ttl: Option<Duration>, iters: u64) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let cache = recovery_cache(dir, ttl);
        timed += start.elapsed();
        // Untimed: the check, and the drop of a million entries.
        assert_eq!(cache.len() as u64, RECOVERY_ENTRIES, "every entry loads");
        drop(cache);
    }
    timed
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    // An open takes a good fraction of a second: one per iteration, ten samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(RECOVERY_ENTRIES));
    let mut dir = None;
    let entries = format!("{}M_{RECOVERY_VALUE}B", RECOVERY_ENTRIES / 1_000_000);

    group.bench_function(BenchmarkId::new("durable_build", &entries), |b| {
        let dir = &dir.get_or_insert_with(|| recovery_dir(None)).0;
        b.iter_custom(|iters| time_builds(dir, None, iters));
    });

    // Every record has a deadline (an hour out), so each entry's lifetime is worked out as it
    // loads.
    let hour = Some(Duration::from_secs(3600));
    let mut ttl_dir = None;
    group.bench_function(BenchmarkId::new("durable_build_ttl", &entries), |b| {
        let dir = &ttl_dir.get_or_insert_with(|| recovery_dir(hour)).0;
        b.iter_custom(|iters| time_builds(dir, hour, iters));
    });
    drop(ttl_dir);

    group.bench_function(BenchmarkId::new("log_replay", &entries), |b| {
        let dir = &dir.get_or_insert_with(|| recovery_dir(None)).0;
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let mut records = 0u64;
                let start = Instant::now();
                let log = larder_log::Log::open(dir, LogOptions::default(), |record| {
                    black_box(record);
                    records += 1;
                })
                .expect("the log opens");
                timed += start.elapsed();
                assert_eq!(records, RECOVERY_ENTRIES, "every record replays");
                drop(log);
            }
            timed
        });
    });
    group.finish();
}

fn config() -> Criterion {
    // Short windows keep a full run to a few minutes on 2 cores; pass `--measurement-time` or
    // `--sample-size` for a closer look at one id.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
}

criterion_group! {
    name = durable;
    config = config();
    targets = durable_insert, recovery
}
criterion_main!(durable);
