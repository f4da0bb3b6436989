//! Shared pieces of Larder's benchmarks: seeded key streams, one small trait that puts Larder and
//! its peers behind the same four calls, and a thread runner that starts workers together.
//!
//! Everything here is set up outside the timed region: key streams are generated up front from a
//! fixed seed, so two runs (and two caches in the same run) replay exactly the same keys.
//!
//! Each peer is used as its users get it out of the box: with its own default hasher and its own
//! default shard count. Keys are `u64` Zipf ranks (rank 0 is the hottest key) or uniform draws;
//! values are `u64`.

pub mod counting;
pub mod workloads;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use mini_moka::sync::ConcurrentCacheExt as _;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `len` keys drawn from Zipf(`exponent`) over `0..n` (key 0 is the hottest), from `seed`.
///
/// A thin wrapper over [`larder_trace::zipf::zipf_keys`] that panics on bad arguments, which in
/// a benchmark are a bug in the benchmark.
pub fn zipf_keys(n: u64, exponent: f64, len: usize, seed: u64) -> Vec<u64> {
    larder_trace::zipf::zipf_keys(n, exponent, seed, len)
        .unwrap_or_else(|e| panic!("Zipf({exponent}) over {n} keys: {e}"))
}

/// `len` keys drawn uniformly from `0..n`, from `seed`.
pub fn uniform_keys(n: u64, len: usize, seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(0..n)).collect()
}

/// The median of `values` (sorting them), and their range: what the probes print.
///
/// # Panics
/// If `values` is empty.
pub fn median_and_range(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// An insert of an owned value into the in-memory cache or a durable one, as the durable
/// bench and `durable_probe` time it.
pub trait DurableInsert: Sync {
    fn insert(&self, key: u64, value: Vec<u8>);
    /// The log flushes run so far, for a durable cache.
    fn flushes(&self) -> Option<u64> {
        None
    }
}

impl DurableInsert for larder::Cache<u64, Vec<u8>> {
    fn insert(&self, key: u64, value: Vec<u8>) {
        larder::Cache::insert(self, key, value);
    }
}

impl DurableInsert for larder::DurableCache<u64, Vec<u8>> {
    fn insert(&self, key: u64, value: Vec<u8>) {
        larder::DurableCache::insert(self, key, value).expect("the durable insert succeeds");
    }
    fn flushes(&self) -> Option<u64> {
        Some(larder::DurableCache::flushes(self))
    }
}

/// The seed of worker `thread`'s key stream in a workload seeded with `base`, so every worker
/// replays a different (but fixed) stream.
pub fn thread_seed(base: u64, thread: usize) -> u64 {
    // A large odd multiplier spreads neighbouring thread numbers far apart in seed space.
    base ^ (thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Runs `work(t)` on `threads` fresh threads, `t` in `0..threads`, and returns the wall time from
/// just before a barrier releases them all until the last one has finished.
///
/// Spawning happens before the barrier, so thread start-up is not timed. Use it inside
/// criterion's `iter_custom`, with `work` looping `iters` times over its pre-generated slice.
///
/// # Panics
/// If the system refuses a thread, or a worker panics. [`try_run_threads`] returns the refusal.
pub fn run_threads<F>(threads: usize, work: F) -> Duration
where
    F: Fn(usize) + Sync,
{
    try_run_threads(threads, work)
        .unwrap_or_else(|e| panic!("could not start {threads} benchmark threads: {e}"))
}

/// [`run_threads`], returning the error of a thread the system refuses (a thread limit, a
/// container's pids limit) instead of panicking. The workers started before it return without
/// running `work`, and nothing is timed.
///
/// # Panics
/// If a worker panics.
pub fn try_run_threads<F>(threads: usize, work: F) -> std::io::Result<Duration>
where
    F: Fn(usize) + Sync,
{
    let gate = StartGate::default();
    thread::scope(|s| {
        let mut workers = Vec::with_capacity(threads);
        for t in 0..threads {
            let (gate, work) = (&gate, &work);
            let spawned = thread::Builder::new().spawn_scoped(s, move || {
                if gate.wait() {
                    work(t);
                }
            });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    // The scope joins the workers started so far once they have left the gate.
                    gate.call_off();
                    return Err(e);
                }
            }
        }
        // The clock starts before the gate releases the workers. Started after it, it lost
        // whatever the workers did while this thread waited to be scheduled again: with one
        // worker on a busy 2-core machine, sometimes a whole replay (a probe once timed one at
        // 0.0 ns per key).
        let start = Instant::now();
        gate.open_once(threads);
        for worker in workers {
            worker.join().expect("a benchmark worker panicked");
        }
        Ok(start.elapsed())
    })
}

/// Where [`try_run_threads`]' workers wait to start together: a barrier that the thread starting
/// them can also call off. A `std` barrier waits for every party, so when the system refused a
/// worker, the ones started before it waited for it for good (`larder bench` hung).
#[derive(Default)]
struct StartGate {
    state: Mutex<Gate>,
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct Gate {
    /// The workers waiting.
    arrived: usize,
    /// Whether they go, once decided.
    go: Option<bool>,
}

impl StartGate {
    /// A worker's wait: `true` once the gate opens, `false` if the run was called off.
    fn wait(&self) -> bool {
        let mut gate = self.state.lock();
        gate.arrived += 1;
        self.changed.notify_all();
        while gate.go.is_none() {
            self.changed.wait(&mut gate);
        }
        gate.go == Some(true)
    }

    /// Opens the gate once `workers` workers wait at it.
    fn open_once(&self, workers: usize) {
        let mut gate = self.state.lock();
        while gate.arrived < workers {
            self.changed.wait(&mut gate);
        }
        gate.go = Some(true);
        self.changed.notify_all();
    }

    /// Sends every worker that waits, or comes to wait, away.
    fn call_off(&self) {
        self.state.lock().go = Some(false);
        self.changed.notify_all();
    }
}

/// The four calls the benchmarks make, with `u64` keys and values, implemented for Larder and
/// every peer. Implementations forward to the peer's own calls and add nothing.
pub trait BenchCache: Send + Sync {
    /// Looks `key` up and returns a copy of its value.
    fn get(&self, key: &u64) -> Option<u64>;
    /// Inserts or replaces `key`.
    fn insert(&self, key: u64, value: u64);
    /// The number of entries the cache reports.
    fn len(&self) -> usize;
    /// Whether the cache reports no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Finishes deferred maintenance (moka's pending tasks, mini-moka's sync) so that `len` and
    /// memory use are settled. A no-op for caches that do their work inline.
    fn settle(&self) {}
}

/// Something done once per cache under test (see [`visit_caches`]). Generic over the cache type,
/// so the timed loops call each cache directly, with no dynamic dispatch in the way.
pub trait Visitor {
    /// Called once per subject, in report order. `build(capacity)` makes an empty instance;
    /// unbounded maps ignore the capacity.
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C);
}

/// A cache (or map) under test: its name and whether it bounds itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    /// A short name, used as the criterion function id and in tables.
    pub name: &'static str,
    /// False for plain concurrent maps, which never evict and so only show a ceiling.
    pub bounded: bool,
}

/// Visits Larder (both policies, and S3-FIFO with a time-to-live) and every peer, bounded caches first, then the unbounded maps.
pub fn visit_caches(visitor: &mut impl Visitor) {
    let bounded = |name| Subject {
        name,
        bounded: true,
    };
    let unbounded = |name| Subject {
        name,
        bounded: false,
    };
    visitor.visit(bounded("larder"), |capacity| {
        build_larder(capacity, larder::Policy::S3Fifo)
    });
    visitor.visit(bounded("larder_lru"), |capacity| {
        build_larder(capacity, larder::Policy::Lru)
    });
    // Expiry's costs: the same S3-FIFO cache with a time-to-live (an hour, so nothing expires
    // during a run: every read pays the deadline check, none misses because of it).
    visitor.visit(bounded("larder_ttl"), |capacity| {
        larder::Cache::builder()
            .max_capacity(capacity as u64)
            .time_to_live(Duration::from_secs(3600))
            .build()
            .expect("a valid Larder configuration")
    });
    visitor.visit(bounded("moka"), |capacity| {
        moka::sync::Cache::<u64, u64>::new(capacity as u64)
    });
    visitor.visit(
        bounded("quick_cache"),
        quick_cache::sync::Cache::<u64, u64>::new,
    );
    visitor.visit(bounded("mini_moka"), |capacity| {
        mini_moka::sync::Cache::<u64, u64>::new(capacity as u64)
    });
    visitor.visit(bounded("lru_mutex"), |capacity| {
        let capacity = NonZeroUsize::new(capacity).expect("capacity must be non-zero");
        Mutex::new(lru::LruCache::<u64, u64>::new(capacity))
    });
    visitor.visit(unbounded("dashmap"), |_| {
        dashmap::DashMap::<u64, u64>::new()
    });
    visitor.visit(unbounded("papaya"), |_| papaya::HashMap::<u64, u64>::new());
    // papaya hashes with std's SipHash unless told otherwise, Larder and quick_cache with
    // ahash, which costs about half as much a key: the same map with ahash is the ceiling
    // with the hashing matched.
    visitor.visit(unbounded("papaya_ahash"), |_| {
        papaya::HashMap::<u64, u64, _>::with_hasher(ahash::RandomState::new())
    });
}

fn build_larder(capacity: usize, policy: larder::Policy) -> larder::Cache<u64, u64> {
    larder::Cache::builder()
        .max_capacity(capacity as u64)
        .policy(policy)
        .build()
        .expect("a valid Larder configuration")
}

impl BenchCache for larder::Cache<u64, u64> {
    fn get(&self, key: &u64) -> Option<u64> {
        larder::Cache::get(self, key)
    }
    fn insert(&self, key: u64, value: u64) {
        larder::Cache::insert(self, key, value);
    }
    fn len(&self) -> usize {
        larder::Cache::len(self)
    }
    /// Larder frees replaced tables through crossbeam-epoch, whose garbage waits until some
    /// thread pins and collects, and evicted nodes once the epoch allows, on the thread that
    /// evicted them, after its next writes or in `run_pending_tasks`. Pinning, flushing and
    /// running the pending tasks here drives both, so memory counted after a churn is what the
    /// cache keeps, not how much garbage the last collection happened to leave (up to 2.4
    /// bytes per entry of a 1M-entry cache in one run without it). moka's settle runs its
    /// pending tasks the same way.
    fn settle(&self) {
        for _ in 0..SETTLE_FLUSHES {
            crossbeam_epoch::pin().flush();
        }
        larder::Cache::run_pending_tasks(self);
    }
}

/// Pin-and-flush rounds in larder's [`BenchCache::settle`]: each collection runs a few bags of
/// deferred calls, so this covers what the memory bench's churn of a million evictions defers.
const SETTLE_FLUSHES: usize = 1 << 15;

impl BenchCache for moka::sync::Cache<u64, u64> {
    fn get(&self, key: &u64) -> Option<u64> {
        moka::sync::Cache::get(self, key)
    }
    fn insert(&self, key: u64, value: u64) {
        moka::sync::Cache::insert(self, key, value);
    }
    fn len(&self) -> usize {
        self.entry_count() as usize
    }
    fn settle(&self) {
        self.run_pending_tasks();
    }
}

impl BenchCache for quick_cache::sync::Cache<u64, u64> {
    fn get(&self, key: &u64) -> Option<u64> {
        quick_cache::sync::Cache::get(self, key)
    }
    fn insert(&self, key: u64, value: u64) {
        quick_cache::sync::Cache::insert(self, key, value);
    }
    fn len(&self) -> usize {
        quick_cache::sync::Cache::len(self)
    }
}

impl BenchCache for mini_moka::sync::Cache<u64, u64> {
    fn get(&self, key: &u64) -> Option<u64> {
        mini_moka::sync::Cache::get(self, key)
    }
    fn insert(&self, key: u64, value: u64) {
        mini_moka::sync::Cache::insert(self, key, value);
    }
    fn len(&self) -> usize {
        self.entry_count() as usize
    }
    fn settle(&self) {
        self.sync();
    }
}

/// The classic baseline: a single-threaded LRU behind one lock. `get` takes the lock because a
/// hit moves the entry to the front.
impl BenchCache for Mutex<lru::LruCache<u64, u64>> {
    fn get(&self, key: &u64) -> Option<u64> {
        self.lock().get(key).copied()
    }
    fn insert(&self, key: u64, value: u64) {
        self.lock().put(key, value);
    }
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl BenchCache for dashmap::DashMap<u64, u64> {
    fn get(&self, key: &u64) -> Option<u64> {
        dashmap::DashMap::get(self, key).map(|entry| *entry)
    }
    fn insert(&self, key: u64, value: u64) {
        dashmap::DashMap::insert(self, key, value);
    }
    fn len(&self) -> usize {
        dashmap::DashMap::len(self)
    }
}

/// papaya pins its reclamation guard once per call, as a caller doing one lookup at a time would.
impl<S: std::hash::BuildHasher + Send + Sync + 'static> BenchCache
    for papaya::HashMap<u64, u64, S>
{
    fn get(&self, key: &u64) -> Option<u64> {
        self.pin().get(key).copied()
    }
    fn insert(&self, key: u64, value: u64) {
        self.pin().insert(key, value);
    }
    fn len(&self) -> usize {
        papaya::HashMap::len(self)
    }
}

/// `std::collections::HashMap` behind a lock: the memory floor (no eviction metadata, no
/// concurrency structure beyond one lock). Not part of [`visit_caches`].
impl BenchCache for Mutex<HashMap<u64, u64>> {
    fn get(&self, key: &u64) -> Option<u64> {
        self.lock().get(key).copied()
    }
    fn insert(&self, key: u64, value: u64) {
        self.lock().insert(key, value);
    }
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Times every call a second thread makes (`call(1)`, `call(2)`, ...) while `job` runs on this
/// one, and after it until `window` has passed, if one is given (for a baseline as long as the
/// job's run). Returns how long `job` took, what it returned, and the latencies. The two
/// threads start together.
pub fn time_calls_during<R>(
    call: impl Fn(u64) + Sync,
    job: impl FnOnce() -> R,
    window: Option<Duration>,
) -> (Duration, R, Vec<Duration>) {
    let start = Barrier::new(2);
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        let timed = s.spawn(|| {
            let mut lat = Vec::with_capacity(8_000_000);
            let mut i = 0u64;
            start.wait();
            // Relaxed: a flag to stop; the join below orders everything else.
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                call(i);
                lat.push(t.elapsed());
            }
            lat
        });
        start.wait();
        let t = Instant::now();
        let out = job();
        let took = t.elapsed();
        while window.is_some_and(|w| t.elapsed() < w) {
            thread::yield_now();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (took, out, timed.join().expect("the timed thread"))
    })
}

/// One line of percentiles of `lat` (p50, p99, p99.9, max), for the stall binaries, which time
/// every call one thread makes while something else runs.
pub fn percentiles(mut lat: Vec<Duration>) -> String {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    format!(
        "{:>9} calls, p50 {:>7.2?}, p99 {:>8.2?}, p99.9 {:>8.2?}, max {:>8.2?}",
        lat.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        lat[lat.len() - 1]
    )
}

/// A building block of a write, for `insert_cost` and `reclaim_cost`: pins, boxes a 40-byte
/// block (a `u64 → u64` node's size) and hands it to crossbeam-epoch to free later, as a cache
/// that retires each node through the epoch does.
pub fn pin_and_defer_a_free(i: u32) {
    let guard = crossbeam_epoch::pin();
    let block = Box::into_raw(Box::new([u64::from(i); 5])) as usize;
    // SAFETY: the block is owned here and reachable from nowhere else, so freeing it later,
    // once, from the deferred call is sound.
    unsafe {
        guard.defer_unchecked(move || drop(Box::from_raw(block as *mut [u64; 5])));
    }
}

/// The number of rounds the first command-line argument asks for, else `default`.
pub fn rounds_from_args(default: usize) -> usize {
    std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROUNDS must be a number"))
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cache_round_trips() {
        struct Check;
        impl Visitor for Check {
            fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
                let cache = build(1000);
                for k in 0..100 {
                    cache.insert(k, k * 2);
                }
                cache.settle();
                for k in 0..100 {
                    assert_eq!(cache.get(&k), Some(k * 2), "{}", subject.name);
                }
                assert_eq!(cache.get(&1000), None, "{}", subject.name);
                assert_eq!(cache.len(), 100, "{}", subject.name);
            }
        }
        visit_caches(&mut Check);
    }

    #[test]
    fn threads_all_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ran = AtomicUsize::new(0);
        run_threads(3, |t| {
            ran.fetch_add(t + 1, Ordering::Relaxed);
        });
        assert_eq!(ran.into_inner(), 1 + 2 + 3);
    }
}
