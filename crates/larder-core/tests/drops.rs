//! Every value is dropped exactly once, also when user code panics: a ledger of live values
//! catches a leak or a second drop, and a canary in each value a read of freed memory. User
//! code (`Hash`, `Eq`, `Clone`, `Drop`, the weigher, the listener) panics at random on several
//! threads at once, and, deterministically, a value's `Drop` panics while a call is about to
//! return another value (which Rust then leaks if it is already built: rust-lang/rust#47949).

mod common;

use common::{quiet_panics, Chaos};
use larder_core::{Cache, Policy};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Every value alive, by id: created adds, drop removes (a second drop of one id fails).
struct Ledger {
    live: Mutex<std::collections::HashSet<u64>>,
    errors: AtomicUsize,
}

impl Ledger {
    fn new() -> Arc<Self> {
        Arc::new(Ledger {
            live: Mutex::new(Default::default()),
            errors: AtomicUsize::new(0),
        })
    }
}

struct Val {
    id: u64,
    key: u64,
    check: u64,
    heap: Box<[u64; 4]>,
    ledger: Arc<Ledger>,
}

impl Val {
    fn new(key: u64, ledger: &Arc<Ledger>) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        ledger.live.lock().unwrap().insert(id);
        Val {
            id,
            key,
            check: !id ^ key,
            heap: Box::new([id, key, id ^ key, 7]),
            ledger: Arc::clone(ledger),
        }
    }

    fn verify(&self, key: u64) {
        let ok = self.check == !self.id ^ self.key
            && *self.heap == [self.id, self.key, self.id ^ self.key, 7]
            && self.key == key;
        if !ok {
            self.ledger.errors.fetch_add(1, Ordering::Relaxed);
            panic!(
                "torn or freed value read: id {} key {} (wanted {key}) check {:#x} heap {:?}",
                self.id, self.key, self.check, self.heap
            );
        }
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        // A clone made from freed or recycled memory fails here.
        let ok = self.check == !self.id ^ self.key
            && *self.heap == [self.id, self.key, self.id ^ self.key, 7];
        if !ok {
            self.ledger.errors.fetch_add(1, Ordering::Relaxed);
        }
        Val::new(self.key, &self.ledger)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        if !self.ledger.live.lock().unwrap().remove(&self.id) {
            self.ledger.errors.fetch_add(1, Ordering::Relaxed);
        }
        // Poison, so that a later read of this memory fails `verify`.
        self.check = 0xdead_dead;
        self.heap[3] = 0xdead;
    }
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn flush_epoch() {
    // Lets every thread's limbo and crossbeam's garbage go.
    for _ in 0..64 {
        let c: Cache<u64, u64> = Cache::new(1);
        c.run_pending_tasks();
    }
}

fn settle(ledger: &Arc<Ledger>) {
    let start = std::time::Instant::now();
    loop {
        flush_epoch();
        let live = ledger.live.lock().unwrap().len();
        if live == 0 || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        ledger.errors.load(Ordering::Relaxed),
        0,
        "freed/torn reads or double drops"
    );
    let live = ledger.live.lock().unwrap();
    let mut ids: Vec<_> = live.iter().copied().collect();
    ids.sort();
    assert_eq!(
        live.len(),
        0,
        "values leaked: {:?}",
        &ids[..ids.len().min(20)]
    );
}

// ---- user code panicking at random on several threads at once ----

#[derive(Clone, Debug)]
struct PKey(u64);

impl std::hash::Hash for PKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Chaos::maybe_panic("hash");
        self.0.hash(state);
    }
}

impl PartialEq for PKey {
    fn eq(&self, other: &Self) -> bool {
        Chaos::maybe_panic("eq");
        self.0 == other.0
    }
}
impl Eq for PKey {}

/// A value that also panics at random in `Clone` and `Drop` (after recording its drop).
struct PVal(Val);

impl Clone for PVal {
    fn clone(&self) -> Self {
        Chaos::maybe_panic("clone");
        PVal(self.0.clone())
    }
}

impl Drop for PVal {
    fn drop(&mut self) {
        Chaos::maybe_panic("drop");
    }
}

#[test]
fn user_code_panicking_on_every_thread_leaves_counts_right_and_drops_each_value_once() {
    quiet_panics();
    let ledger = Ledger::new();
    for policy in [Policy::S3Fifo, Policy::Lru] {
        let cache: Cache<PKey, PVal> = Cache::builder()
            .max_capacity(24)
            .shards(2)
            .policy(policy)
            .weigher(|_, v: &PVal| {
                Chaos::maybe_panic("weigher");
                1 + (v.0.key % 3) as u32
            })
            .eviction_listener(|_, _, _| Chaos::maybe_panic("listener"))
            .build()
            .unwrap();
        let rounds = 50_000;
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let cache = cache.clone();
                let ledger = Arc::clone(&ledger);
                s.spawn(move || {
                    let mut seed = 0xdead_beef_u64 ^ ((t + 1) * 0x9E37_79B9);
                    for _ in 0..rounds {
                        let r = rng(&mut seed);
                        let id = (r >> 8) % 48;
                        Chaos::on(rng(&mut seed), 10);
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            match r % 100 {
                                0..=39 => cache.insert(PKey(id), PVal(Val::new(id, &ledger))),
                                // A read of freed memory counts in the ledger's errors.
                                40..=59 => {
                                    if let Some(v) = cache.get(&PKey(id)) {
                                        v.0.verify(id);
                                    }
                                }
                                60..=74 => {
                                    if let Some(v) = cache.remove(&PKey(id)) {
                                        v.0.verify(id);
                                    }
                                }
                                75..=89 => cache
                                    .get_with(PKey(id), || PVal(Val::new(id, &ledger)))
                                    .0
                                    .verify(id),
                                90..=94 => drop(cache.iter().count()),
                                95..=98 => cache.run_pending_tasks(),
                                _ => cache.clear(),
                            }
                        }));
                        Chaos::off();
                    }
                });
            }
        });
        cache.validate().unwrap();
        assert!(cache.weighted_size() <= 24);
        let n = cache.iter().count();
        assert_eq!(n, cache.len(), "len mirror disagrees with contents");
        drop(cache);
    }
    settle(&ledger);
}

// ---- deterministic: a value's `Drop` panics while a call is about to return another ----

/// Values of [`Bomb`] alive now.
static BOMBS_LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
/// Drops (of any `Bomb`) left before the one that panics; negative: none panics.
static BOMB_FUSE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
/// Serialises the tests that use the two statics above.
static BOMB_TESTS: Mutex<()> = Mutex::new(());

/// How many more [`Bomb`]s are alive than `before`, once the cache that held them is gone and
/// the limbo and the epoch have had up to 10 s to free its nodes.
fn bombs_left(before: i64) -> i64 {
    let start = std::time::Instant::now();
    while BOMBS_LIVE.load(Ordering::SeqCst) != before && start.elapsed() < Duration::from_secs(10) {
        flush_epoch();
    }
    BOMBS_LIVE.load(Ordering::SeqCst) - before
}

/// A counted value; the stored original (`armed`) panics when dropped, and so does the drop
/// that burns [`BOMB_FUSE`] down to 0.
#[derive(Debug)]
struct Bomb {
    armed: bool,
}

impl Bomb {
    fn new(armed: bool) -> Self {
        BOMBS_LIVE.fetch_add(1, Ordering::SeqCst);
        Bomb { armed }
    }
}

impl Clone for Bomb {
    fn clone(&self) -> Self {
        Bomb::new(false)
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        BOMBS_LIVE.fetch_sub(1, Ordering::SeqCst);
        let fuse = BOMB_FUSE.fetch_sub(1, Ordering::SeqCst);
        if (self.armed || fuse == 0) && !std::thread::panicking() {
            panic!("chaos: bomb dropped");
        }
    }
}

/// What a test of [`round_a_sealed_bomb_goes_off_in`] starts from: the bomb tests' lock (held
/// while it lives), the count of bombs alive before it, and a one-shard cache for it.
fn a_sealed_bomb_test() -> (std::sync::MutexGuard<'static, ()>, i64, Cache<u64, Bomb>) {
    let serial = BOMB_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    quiet_panics();
    BOMB_FUSE.store(-1, Ordering::SeqCst);
    let before = BOMBS_LIVE.load(Ordering::SeqCst);
    let cache = Cache::builder()
        .max_capacity(20_000)
        .shards(1)
        .build()
        .unwrap();
    (serial, before, cache)
}

/// Puts an armed [`Bomb`] in this thread's limbo and seals its batch, so that the first write
/// of this thread once the epoch allows frees it, and its `Drop` panics out of that write's
/// unlock. Then calls `write(round)` for rounds 1, 2, ... while another thread moves the epoch
/// on, and returns the round whose write panicked (`None`: none did in 1,000). Each round
/// starts after a pause in which the epoch can move on, so the bomb most likely goes off at
/// the round's first unlock.
fn round_a_sealed_bomb_goes_off_in(cache: &Cache<u64, Bomb>, write: impl Fn(u64)) -> Option<u64> {
    cache.insert(0, Bomb::new(true));
    drop(cache.remove(&0));
    cache.run_pending_tasks();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Another thread moves the epoch on and runs the batch's deferred call (the mark).
        s.spawn(|| {
            let other: Cache<u64, u64> = Cache::new(1);
            while !stop.load(Ordering::Relaxed) {
                other.run_pending_tasks();
            }
        });
        let mut hit = None;
        for round in 1..=1_000u64 {
            std::thread::sleep(Duration::from_millis(2));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(round)));
            if r.is_err() {
                hit = Some(round);
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        hit
    })
}

/// `Cache::remove`'s unlock frees this thread's earlier removals once the epoch allows, and a
/// value's `Drop` that panics there is resumed out of the unlock. The value `remove` was to
/// return must be dropped as that panic unwinds: it leaked while the lock guard was a
/// temporary of the returned expression, dropped after the answer was built.
#[test]
fn remove_drops_its_answer_when_a_freed_values_drop_panics_at_the_unlock() {
    let (_serial, before, cache) = a_sealed_bomb_test();
    // Every key the rounds remove is in before the bomb is armed: only removes follow it.
    for round in 1..=10_000u64 {
        cache.insert(round, Bomb::new(false));
    }
    let went_off = round_a_sealed_bomb_goes_off_in(&cache, |round| drop(cache.remove(&round)));
    assert!(
        went_off.is_some(),
        "the armed value was never freed by a remove"
    );
    drop(cache);
    assert_eq!(
        bombs_left(before),
        0,
        "values leaked: the clone `remove` was returning when the guard's drop panicked"
    );
}

/// A load's unlocks free this thread's earlier removals (since `frees_later`, the one that
/// stores its value or abandons it, not the one that publishes its pending entry): a value's
/// `Drop` that panics there must end the load, or the pending entry stays and every later
/// `get_with` of its key waits for a loader that is gone.
#[test]
fn a_load_whose_unlock_panics_is_abandoned_not_left_pending() {
    let (_serial, before, cache) = a_sealed_bomb_test();
    let went_off = round_a_sealed_bomb_goes_off_in(&cache, |round| {
        drop(cache.get_with(round, || Bomb::new(false)));
    });
    let key = went_off.expect("the armed value was never freed by a load");
    // Whether it went off as the load began or as it stored its value, the key loads now.
    let (done, loaded) = std::sync::mpsc::channel();
    let other = cache.clone();
    std::thread::spawn(move || {
        drop(other.get_with(key, || Bomb::new(false)));
        let _ = done.send(());
    });
    assert!(
        loaded.recv_timeout(Duration::from_secs(20)).is_ok(),
        "a get_with of the key whose load panicked as it unlocked still waits after 20 s"
    );
    drop(cache);
    assert_eq!(bombs_left(before), 0, "values leaked");
}

/// `get_with`'s loader drops its `Arc<Flight>`, the last one, which holds the waiters' copy of
/// the value; if that copy's `Drop` panics, the value the loader was returning must be
/// dropped too. It leaked while the flight was dropped after the answer was built.
#[test]
fn get_with_drops_its_answer_when_the_flights_copy_panics_on_drop() {
    let _serial = BOMB_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    quiet_panics();
    let before = BOMBS_LIVE.load(Ordering::SeqCst);
    let cache: Cache<u64, Bomb> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .build()
        .unwrap();
    // Nothing is dropped between `init` and the flight's drop: the first drop panics.
    BOMB_FUSE.store(0, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(cache.get_with(7, || Bomb::new(false)));
    }));
    BOMB_FUSE.store(-1, Ordering::SeqCst);
    assert!(r.is_err(), "the flight's clone was dropped and panicked");
    drop(cache);
    assert_eq!(
        bombs_left(before),
        0,
        "values leaked: the value `get_with` was returning"
    );
}
