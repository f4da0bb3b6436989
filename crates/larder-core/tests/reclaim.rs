//! Where removed values are freed: by the thread that removed them (replaced, expired or
//! cleared), once no reader can hold them, at one of its later writes or its
//! `run_pending_tasks` (or the janitor's tick), however few it removed, and when the janitor's
//! thread ends.

use larder_core::{Cache, Janitor, MockClock};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// A value that counts its drops.
#[derive(Clone)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Calls `run_pending_tasks` on `cache` until `done()`, at most 10,000 times.
fn run_until<K, V>(cache: &Cache<K, V>, mut done: impl FnMut() -> bool, pause: Duration)
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    for _ in 0..10_000 {
        if done() {
            return;
        }
        cache.run_pending_tasks();
        std::thread::sleep(pause);
    }
}

#[test]
fn run_pending_tasks_frees_what_its_thread_removed_though_it_writes_no_more() {
    // Fewer removals than a thread keeps in its open batch (256): a thread that then only
    // calls `run_pending_tasks`, as the janitor does between expiries, must still free them.
    let drops = Arc::new(AtomicUsize::new(0));
    let time = MockClock::new();
    let cache: Cache<u64, Counted> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(1))
        .clock(time.clock())
        .without_janitor()
        .build()
        .unwrap();
    // A thread of its own: nothing another test retired shares its batch.
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..10 {
                cache.insert(1, Counted(Arc::clone(&drops))); // nine replaced
            }
            time.advance(Duration::from_secs(2));
            cache.run_pending_tasks(); // the tenth expires
            assert_eq!(cache.len(), 0);
            let all = || drops.load(Ordering::SeqCst) == 10;
            run_until(&cache, all, Duration::ZERO);
            assert_eq!(
                drops.load(Ordering::SeqCst),
                10,
                "every removed value freed"
            );
        });
    });
}

/// A value that records the thread its drop ran on; its clones (what reads return) do not.
struct Placed {
    places: Arc<Mutex<Vec<ThreadId>>>,
    original: bool,
}

impl Placed {
    fn new(places: &Arc<Mutex<Vec<ThreadId>>>) -> Self {
        let places = Arc::clone(places);
        Placed {
            places,
            original: true,
        }
    }
}

impl Clone for Placed {
    fn clone(&self) -> Self {
        let places = Arc::clone(&self.places);
        Placed {
            places,
            original: false,
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if self.original {
            self.places
                .lock()
                .unwrap()
                .push(std::thread::current().id());
        }
    }
}

#[test]
fn cleared_values_drop_on_the_thread_that_cleared_them() {
    // Another thread pins all the time (it reads), so anything handed to the epoch's shared
    // queue would most likely be freed there; the clearing thread only looks now and then.
    let places = Arc::new(Mutex::new(Vec::new()));
    let cache: Cache<u64, Placed> = Cache::new(1000);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for k in 0..100 {
                    std::hint::black_box(cache.get(&k));
                }
            }
        });
        let clearer = s.spawn(|| {
            for k in 0..100 {
                cache.insert(k, Placed::new(&places));
            }
            cache.clear();
            let all = || places.lock().unwrap().len() == 100;
            run_until(&cache, all, Duration::from_millis(1));
            std::thread::current().id()
        });
        let clearer = clearer.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let places = places.lock().unwrap();
        assert_eq!(places.len(), 100, "every cleared value freed");
        assert!(places.iter().all(|&t| t == clearer), "freed elsewhere");
    });
}

#[test]
fn values_cleared_before_a_refill_are_freed_by_the_refills_writes() {
    // A cache cleared, then filled again below its capacity: the refill's inserts evict and
    // replace nothing, and each must still free what the clear retired once the epoch allows,
    // not leave it until the thread next removes something. 10,000 values fill 39 batches
    // (the rest, under 256, waits in the open batch).
    const CLEARED: usize = 10_000;
    const SEALED: usize = CLEARED - CLEARED % 256;
    let drops = Arc::new(AtomicUsize::new(0));
    let cache: Cache<u64, Option<Counted>> = Cache::new(1_000_000);
    // A thread of its own: its limbo holds nothing another test retired.
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..CLEARED as u64 {
                cache.insert(k, Some(Counted(Arc::clone(&drops))));
            }
            cache.clear();
            let mut k = CLEARED as u64;
            while drops.load(Ordering::SeqCst) < SEALED && k < 10 * CLEARED as u64 {
                cache.insert(k, None);
                k += 1;
            }
            assert!(
                drops.load(Ordering::SeqCst) >= SEALED,
                "{CLEARED} values cleared, then {} inserts that removed nothing freed {}",
                k - CLEARED as u64,
                drops.load(Ordering::SeqCst)
            );
        });
    });
}

/// A cache of ten values on a mock clock, served by a janitor of its own ticking every
/// `tick`, with its entries expired (the janitor's thread removed them, so it frees them)
/// by the time this returns.
fn expired_by_a_janitor(drops: &Arc<AtomicUsize>, tick: Duration) -> Cache<u64, Counted> {
    let time = MockClock::new();
    let cache: Cache<u64, Counted> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .time_to_live(Duration::from_secs(1))
        .clock(time.clock())
        .janitor(Janitor::dedicated(tick))
        .build()
        .unwrap();
    // A thread of its own inserts, so the values are nobody's but the janitor's to free.
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..10 {
                cache.insert(k, Counted(Arc::clone(drops)));
            }
        });
    });
    time.advance(Duration::from_secs(2));
    let until = Instant::now() + Duration::from_secs(10);
    while !cache.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(cache.len(), 0, "the janitor expired them");
    cache
}

#[test]
fn the_janitor_frees_what_it_expires_within_a_few_ticks() {
    // Two epoch advances and a collection, at one per tick; before the janitor moved the
    // epoch on itself, crossbeam's own collection took about 65 ticks here.
    let tick = Duration::from_millis(20);
    let drops = Arc::new(AtomicUsize::new(0));
    let cache = expired_by_a_janitor(&drops, tick);
    let removed = Instant::now();
    while drops.load(Ordering::SeqCst) < 10 && removed.elapsed() < tick * 200 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = removed.elapsed();
    assert_eq!(drops.load(Ordering::SeqCst), 10);
    assert!(took < tick * 30, "freed {took:?} after they were removed");
    drop(cache);
}

#[test]
fn a_janitor_whose_last_cache_goes_frees_what_it_still_holds() {
    // A long tick: the janitor still holds the values when its cache, and so its thread,
    // goes. The thread's exit hands them to the epoch, and moves the epoch on itself.
    let drops = Arc::new(AtomicUsize::new(0));
    let cache = expired_by_a_janitor(&drops, Duration::from_millis(300));
    drop(cache);
    let until = Instant::now() + Duration::from_secs(10);
    while drops.load(Ordering::SeqCst) < 10 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        10,
        "freed after the janitor's thread ended"
    );
}

/// A value that counts its drops, and whose drop panics once if it is armed.
#[derive(Clone)]
struct Grenade {
    drops: Arc<AtomicUsize>,
    armed: Arc<AtomicBool>,
}

impl Drop for Grenade {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("a value's Drop panicked (on purpose)");
        }
    }
}

/// Two caches on one janitor. The janitor's thread frees what it expired for both from one
/// limbo, in whichever cache's tick comes when the epoch allows; a value of one cache whose
/// `Drop` panics there must not make the janitor stop serving the other (the janitor drops a
/// registrant whose tick panics), nor the first.
#[test]
fn a_panicking_drop_on_the_janitor_does_not_end_any_caches_expiry() {
    let time = MockClock::new();
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let build = || -> Cache<u64, Grenade> {
        Cache::builder()
            .max_capacity(100)
            .shards(1)
            .time_to_live(Duration::from_secs(1))
            .clock(time.clock())
            .janitor(janitor.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let drops = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    for round in 0..3 {
        // In the first round, the first of these values to be freed panics.
        armed.store(round == 0, Ordering::SeqCst);
        for k in 0..10 {
            for cache in [&a, &b] {
                let value = Grenade {
                    drops: Arc::clone(&drops),
                    armed: Arc::clone(&armed),
                };
                cache.insert(k, value);
            }
        }
        time.advance(Duration::from_secs(2));
        let until = Instant::now() + Duration::from_secs(20);
        // Expired by the janitor, and freed by it (so the panic, in the first round, has
        // happened before the next round checks that both caches are still served).
        let freed = 20 * (round + 1);
        while (!a.is_empty() || !b.is_empty() || drops.load(Ordering::SeqCst) < freed)
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            (a.len(), b.len()),
            (0, 0),
            "round {round}: the janitor still expires both caches"
        );
        assert_eq!(
            drops.load(Ordering::SeqCst),
            freed,
            "round {round}: all freed"
        );
    }
}

/// A value whose `Drop` (the original's, once armed; not its clones') writes `key` to the
/// cache in `target`, then says so.
struct WritesOnDrop {
    target: Arc<Mutex<Option<Cache<u64, WritesOnDrop>>>>,
    key: u64,
    dropped: Option<Arc<AtomicBool>>,
}

impl Clone for WritesOnDrop {
    fn clone(&self) -> Self {
        WritesOnDrop {
            target: Arc::clone(&self.target),
            key: self.key,
            dropped: None,
        }
    }
}

impl Drop for WritesOnDrop {
    fn drop(&mut self) {
        if let Some(dropped) = self.dropped.take() {
            let cache = self.target.lock().unwrap().clone();
            if let Some(cache) = cache {
                cache.insert(self.key, self.clone());
            }
            dropped.store(true, Ordering::SeqCst);
        }
    }
}

/// `share_capacity` locks every shard at once, and releasing each lock frees what the thread
/// removed earlier and the epoch now allows (`Locked`'s drop). A freed value's `Drop` may use
/// the cache (no lock is held when it runs, the crate says), but here the later shards are
/// still locked by this very thread: a `Drop` that writes to one of them waited for good.
#[test]
fn share_capacity_frees_nothing_while_it_holds_other_shards_locks() {
    let target = Arc::new(Mutex::new(None));
    let cache: Cache<u64, WritesOnDrop> = Cache::builder()
        .max_capacity(100)
        .shards(4)
        .build()
        .unwrap();
    *target.lock().unwrap() = Some(cache.clone());
    // The key the `Drop` writes lives in the last shard, which is released last.
    let key = (0..).find(|k| cache.shard_index(k) == 3).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let epoch_mover: Cache<u64, u64> = Cache::new(10);
    let dropped = Arc::new(AtomicBool::new(false));
    {
        let (cache, dropped) = (cache.clone(), Arc::clone(&dropped));
        let target = Arc::clone(&target);
        // A thread of its own, so its limbo holds only this test's value. Left behind if it
        // hangs.
        std::thread::spawn(move || {
            cache.insert(
                0,
                WritesOnDrop {
                    target,
                    key,
                    dropped: Some(Arc::clone(&dropped)),
                },
            );
            drop(cache.remove(&0));
            // Seals the removed value's batch: it waits for the epoch now.
            cache.run_pending_tasks();
            // Another thread moves the epoch on, so the batch may be freed at this thread's
            // next look, which is the first shard's unlock inside `share_capacity`.
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..1000 {
                        epoch_mover.run_pending_tasks();
                    }
                });
            });
            let before = dropped.load(Ordering::SeqCst);
            let shared = cache.share_capacity(&[10, 10, 10, 10]).is_some();
            let _ = done_tx.send((before, shared));
        });
    }
    let outcome = done_rx.recv_timeout(Duration::from_secs(20));
    let (before, shared) = outcome.expect("share_capacity waited for good on its own lock");
    assert!(shared);
    assert!(
        !before,
        "the value was freed before share_capacity; the test shows nothing"
    );
    assert!(dropped.load(Ordering::SeqCst));
    assert!(cache.contains_key(&key));
    *target.lock().unwrap() = None;
}
