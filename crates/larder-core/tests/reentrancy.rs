//! User code the cache calls, calling back into the same cache: the eviction listener, a
//! value's `Drop`, a load's `init`, the weigher, a key's `Hash` and `Eq`. Each case runs on a
//! thread of its own with a bounded wait, so that a cache that waits for itself fails the test
//! instead of hanging it.

use larder_core::{Cache, Janitor, MockClock};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// How long a case may take before it counts as waiting for good.
const BOUND: Duration = Duration::from_secs(20);

/// Runs `case` on a thread of its own and waits for it at most [`BOUND`]: a panic in it is
/// passed on, and a case still running then fails with `what`.
fn bounded(what: String, case: impl FnOnce() + Send + 'static) {
    let (done_tx, done) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        case();
        done_tx.send(()).unwrap();
    });
    match done.recv_timeout(BOUND) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} never returned"),
    }
}

/// A call user code makes on its own cache.
#[derive(Clone, Copy, Debug)]
enum Call {
    Insert,
    Remove,
    Invalidate,
    Clear,
    GetWithAnother,
    GetWithTheSame,
    RunPendingTasks,
    ResetStats,
    Iter,
    Stats,
    DetachFromJanitor,
}

const CALLS: [Call; 11] = [
    Call::Insert,
    Call::Remove,
    Call::Invalidate,
    Call::Clear,
    Call::GetWithAnother,
    Call::GetWithTheSame,
    Call::RunPendingTasks,
    Call::ResetStats,
    Call::Iter,
    Call::Stats,
    Call::DetachFromJanitor,
];

impl Call {
    /// Makes the call on `cache`, about `key` (the key the user code was called for), with
    /// `value` for what it writes. Its writes go to keys of 1000 and more.
    fn make<V: Clone + Send + Sync + 'static>(
        self,
        cache: &Cache<u64, V>,
        key: u64,
        value: impl FnOnce() -> V,
    ) {
        match self {
            Call::Insert => cache.insert(key + 1000, value()),
            Call::Remove => drop(cache.remove(&(key + 1))),
            Call::Invalidate => cache.invalidate(&(key + 1)),
            Call::Clear => cache.clear(),
            Call::GetWithAnother => drop(cache.get_with(key + 1000, value)),
            Call::GetWithTheSame => drop(cache.get_with(key, value)),
            Call::RunPendingTasks => cache.run_pending_tasks(),
            Call::ResetStats => cache.reset_stats(),
            Call::Iter => assert!(cache.iter().count() <= 2000),
            Call::Stats => drop(cache.stats()),
            Call::DetachFromJanitor => cache.detach_from_janitor(),
        }
    }
}

/// Where the cache removes entries, and so runs the listener, and frees values.
#[derive(Clone, Copy, Debug)]
enum Removal {
    /// Expiry, on the janitor's thread.
    Janitor,
    /// Evictions of inserts.
    Insert,
    /// Evictions of loads (`get_with`).
    Load,
    Clear,
    Remove,
}

const REMOVALS: [Removal; 5] = [
    Removal::Janitor,
    Removal::Insert,
    Removal::Load,
    Removal::Clear,
    Removal::Remove,
];

/// A cache of 10 in one shard, with a time-to-live of 50 ms on `time`, and a janitor ticking
/// every millisecond for `Removal::Janitor`.
fn builder<V: Clone + Send + Sync + 'static>(
    removal: Removal,
    time: &MockClock,
) -> larder_core::CacheBuilder<u64, V> {
    let builder = Cache::builder()
        .max_capacity(10)
        .shards(1)
        .time_to_live(Duration::from_millis(50))
        .clock(time.clock());
    match removal {
        Removal::Janitor => builder.janitor(Janitor::dedicated(Duration::from_millis(1))),
        _ => builder.without_janitor(),
    }
}

/// The counts add up: every entry that came in and has not left is there (a call that resets
/// the counters excepted).
fn check_counts<V: Clone + Send + Sync + 'static>(cache: &Cache<u64, V>, what: &str) {
    cache.validate().unwrap();
    let s = cache.stats();
    assert_eq!(
        s.inserts - s.evictions - s.removals - s.expirations,
        s.len,
        "{what}: {s:?}"
    );
}

/// The listener runs after the shard's lock is released, on the thread that removed the entry,
/// and may use the cache: every call, on the janitor's thread and on a writer's, for what an
/// insert, a load, a clear and a remove removed (no bug found: this pins it).
#[test]
fn a_listener_may_make_every_call_on_its_cache_from_every_thread_that_removes() {
    for removal in REMOVALS {
        for call in CALLS {
            let what = format!("a listener's {call:?} on {removal:?}'s removals");
            bounded(what.clone(), move || {
                let time = MockClock::new();
                let slot: Arc<Mutex<Option<Cache<u64, u64>>>> = Arc::default();
                let (heard_tx, heard) = mpsc::channel::<()>();
                let heard_tx = Mutex::new(heard_tx);
                let in_listener = Arc::clone(&slot);
                // A few calls: a listener that puts back what leaves a full cache would go on
                // for as long as it is called.
                let calls = AtomicU64::new(5);
                let cache: Cache<u64, u64> = builder(removal, &time)
                    .eviction_listener(move |k, _, _| {
                        let more = calls
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                        if *k >= 1000 || more.is_err() {
                            return;
                        }
                        let cache = in_listener.lock().unwrap().clone();
                        if let Some(cache) = cache {
                            call.make(&cache, *k, || *k);
                        }
                        let _ = heard_tx.lock().unwrap().send(());
                    })
                    .build()
                    .unwrap();
                *slot.lock().unwrap() = Some(cache.clone());
                for k in 0..10 {
                    cache.insert(k, k);
                }
                match removal {
                    Removal::Janitor => time.advance(Duration::from_millis(60)),
                    Removal::Insert => (10..30).for_each(|k| cache.insert(k, k)),
                    Removal::Load => (10..30).for_each(|k| assert_eq!(cache.get_with(k, || k), k)),
                    Removal::Clear => cache.clear(),
                    // The listener may have removed some already.
                    Removal::Remove => (0..10).for_each(|k| _ = cache.remove(&k)),
                }
                heard.recv_timeout(BOUND).expect("the listener was called");
                *slot.lock().unwrap() = None;
                if !matches!(call, Call::ResetStats) {
                    check_counts(&cache, &what);
                }
            });
        }
    }
}

/// A value whose `Drop` makes `call` on the cache in `slot` (once: its clones, which reads
/// return, make none), counting in `acted`.
struct Calls {
    slot: Arc<Mutex<Option<Cache<u64, Calls>>>>,
    call: Call,
    key: u64,
    armed: bool,
    acted: Arc<AtomicU64>,
}

impl Calls {
    fn like(&self, key: u64, armed: bool) -> Calls {
        Calls {
            slot: Arc::clone(&self.slot),
            call: self.call,
            key,
            armed,
            acted: Arc::clone(&self.acted),
        }
    }
}

impl Clone for Calls {
    fn clone(&self) -> Self {
        self.like(self.key, false)
    }
}

impl Drop for Calls {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cache = self.slot.lock().unwrap().clone();
        if let Some(cache) = cache {
            self.call
                .make(&cache, self.key, || self.like(self.key + 1000, false));
            self.acted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A removed value is freed later, through the thread's limbo, once no reader can hold it: at
/// the end of a later write of the thread that removed it (of any cache), or of the janitor's
/// tick. Its `Drop` may use the cache there, whatever the call (no bug found: this pins it).
#[test]
fn a_values_drop_may_make_every_call_on_its_cache_wherever_it_is_freed() {
    for removal in REMOVALS {
        for call in CALLS {
            let what = format!("a value's drop's {call:?} on {removal:?}'s removals");
            bounded(what, move || {
                let time = MockClock::new();
                let cache: Cache<u64, Calls> = builder(removal, &time).build().unwrap();
                let model = Calls {
                    slot: Arc::new(Mutex::new(Some(cache.clone()))),
                    call,
                    key: 0,
                    armed: false,
                    acted: Arc::default(),
                };
                let value = |k| model.like(k, true);
                for k in 0..10 {
                    cache.insert(k, value(k));
                }
                // Enough removals to fill a few of the limbo's batches, whose frees come later.
                match removal {
                    Removal::Janitor => time.advance(Duration::from_millis(60)),
                    Removal::Insert => (10..600).for_each(|k| cache.insert(k, value(k))),
                    Removal::Load => (10..600).for_each(|k| drop(cache.get_with(k, || value(k)))),
                    Removal::Clear => (0..60).for_each(|_| {
                        cache.clear();
                        (0..10).for_each(|k| cache.insert(k, value(k)));
                    }),
                    Removal::Remove => (0..60).for_each(|r| {
                        (0..10).for_each(|k| {
                            cache.remove(&k);
                            cache.insert(k, value(k + 2000 * r));
                        });
                    }),
                }
                // The janitor frees what it removed at its next ticks; a writer, by its next
                // writes or `run_pending_tasks`.
                while model.acted.load(Ordering::SeqCst) < 10 {
                    cache.run_pending_tasks();
                    std::thread::yield_now();
                }
                *model.slot.lock().unwrap() = None;
                cache.validate().unwrap();
            });
        }
    }
}

/// `init` runs with no lock held and may use the cache, whatever the call: a write of its own
/// key (`insert`, `remove`, `invalidate`, `clear`) wins over the load, whose value goes to its
/// caller unstored (no bug found: this pins it).
#[test]
fn an_init_may_make_every_call_on_its_cache_and_a_write_of_its_key_wins() {
    for call in CALLS {
        let what = format!("an init's {call:?}");
        bounded(what.clone(), move || {
            let cache: Cache<u64, u64> =
                builder(Removal::Insert, &MockClock::new()).build().unwrap();
            for k in 0..10 {
                cache.insert(k, k);
            }
            const KEY: u64 = 5000;
            let inside = cache.clone();
            let loaded = cache.get_with(KEY, move || {
                match call {
                    // Of its own key.
                    Call::Insert => inside.insert(KEY, 1),
                    // Panics (`loading.rs`).
                    Call::GetWithTheSame => {}
                    // A removal of its own key (`key + 1`); a load of another.
                    _ => call.make(&inside, KEY - 1, || 1),
                }
                7
            });
            assert_eq!(loaded, 7, "{what}: the caller's value");
            let stored = match call {
                Call::Insert => Some(1),
                Call::Clear | Call::Remove | Call::Invalidate => None,
                _ => Some(7),
            };
            assert_eq!(cache.peek(&KEY), stored, "{what}");
            if !matches!(call, Call::ResetStats) {
                check_counts(&cache, &what);
            }
        });
    }
}

/// The weigher runs outside every lock, so it may read the cache, and a write from it waits
/// for nothing either (no bug found: this pins it).
#[test]
fn a_weigher_may_read_and_write_its_cache() {
    for writes in [false, true] {
        bounded(format!("a weigher that writes: {writes}"), move || {
            let slot: Arc<Mutex<Option<Cache<u64, u64>>>> = Arc::default();
            let in_weigher = Arc::clone(&slot);
            let cache: Cache<u64, u64> = Cache::builder()
                .max_capacity(10)
                .shards(1)
                .weigher(move |k: &u64, _: &u64| {
                    let cache = in_weigher.lock().unwrap().clone();
                    if let Some(cache) = cache {
                        let _ = (cache.get(k), cache.peek(&(k + 1)), cache.contains_key(k));
                        let _ = (cache.len(), cache.iter().count(), cache.stats());
                        if writes && *k < 1000 {
                            cache.insert(k + 1000, 0);
                            cache.invalidate(&(k + 1));
                        }
                    }
                    1
                })
                .build()
                .unwrap();
            *slot.lock().unwrap() = Some(cache.clone());
            for k in 0..30 {
                cache.insert(k, k);
            }
            for k in 30..60 {
                assert_eq!(cache.get_with(k, || k), k);
            }
            *slot.lock().unwrap() = None;
            check_counts(&cache, "a weigher");
        });
    }
}

thread_local! {
    /// The cache a `Reads` key reads from, while it is set.
    static READ_FROM: std::cell::RefCell<Option<Cache<Reads, u64>>> =
        const { std::cell::RefCell::new(None) };
    /// Whether a `Reads` key is reading already (its reads hash and compare keys too).
    static READING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A key whose `Hash` and `Eq` read the cache in `READ_FROM`.
#[derive(Clone, Debug)]
struct Reads(u64);

impl Reads {
    fn read() {
        let cache = READ_FROM.with(|c| c.borrow().clone());
        if let (Some(cache), false) = (cache, READING.replace(true)) {
            let _ = (cache.get(&Reads(3)), cache.peek(&Reads(4)));
            let _ = (
                cache.contains_key(&Reads(5)),
                cache.ttl(&Reads(3)),
                cache.len(),
            );
            let _ = cache.iter().count();
            READING.set(false);
        }
    }
}

impl std::hash::Hash for Reads {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Reads::read();
        self.0.hash(state);
    }
}

impl PartialEq for Reads {
    fn eq(&self, other: &Self) -> bool {
        Reads::read();
        self.0 == other.0
    }
}

impl Eq for Reads {}

/// A write runs `Hash` and `Eq` under its shard's lock (a probe, a rebuild, an eviction's
/// victim), and reads take no lock: a key whose `Hash` and `Eq` read the cache waits for
/// nothing (no bug found: this pins it).
#[test]
fn a_keys_hash_and_eq_may_read_the_cache() {
    bounded("a key's hash and eq that read".into(), || {
        let cache: Cache<Reads, u64> = Cache::builder()
            .max_capacity(50)
            .shards(1)
            .time_to_idle(Duration::from_secs(60))
            .without_janitor()
            .build()
            .unwrap();
        READ_FROM.with(|c| *c.borrow_mut() = Some(cache.clone()));
        for k in 0..200 {
            cache.insert(Reads(k), k);
            let _ = cache.get(&Reads(k / 2));
        }
        for k in 200..300 {
            assert_eq!(cache.get_with(Reads(k), || k), k);
            let _ = cache.remove(&Reads(k - 50));
        }
        cache.clear();
        READ_FROM.with(|c| *c.borrow_mut() = None);
        cache.validate().unwrap();
    });
}

/// Tells, once, when a thread named `waiter` compares key 1 with key 1: under the shard lock,
/// with key 1's load pending (reads compare only ready entries).
#[derive(Clone, Copy, Debug)]
struct Signals(u64);

impl std::hash::Hash for Signals {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

static COMPARED: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);

impl PartialEq for Signals {
    fn eq(&self, other: &Self) -> bool {
        if (self.0, other.0) == (1, 1) && std::thread::current().name() == Some("waiter") {
            if let Some(compared) = COMPARED.lock().unwrap().take() {
                compared.send(()).unwrap();
            }
        }
        self.0 == other.0
    }
}

impl Eq for Signals {}

/// A load that evicts tells the listener as it releases the shard's lock, and the listener may
/// use the cache: load another key, which another thread is loading, whose `init` waits for
/// the first load. That `init` found the first load pending and waited on it; the first load's
/// waiters were woken only after the unlock, so after the listener, which waited for the second
/// load, and neither ever returned ("a load whose listener waits for a load that waits for it
/// never returned"). Now the waiters are woken before the unlock, and so before any user code
/// it runs.
#[test]
fn a_listener_may_wait_for_a_load_that_waited_for_the_load_it_heard_from() {
    let (compared_tx, compared) = mpsc::channel();
    *COMPARED.lock().unwrap() = Some(compared_tx);
    let slot: Arc<Mutex<Option<Cache<Signals, u64>>>> = Arc::default();
    let in_listener = Arc::clone(&slot);
    let first = AtomicBool::new(true);
    let cache: Cache<Signals, u64> = Cache::builder()
        .max_capacity(1)
        .shards(1)
        .eviction_listener(move |_, _, _| {
            // Key 0, evicted by the load of key 1.
            if first.swap(false, Ordering::SeqCst) {
                let cache = in_listener.lock().unwrap().clone().unwrap();
                assert_eq!(
                    cache.get_with(Signals(2), || unreachable!("2 is loading")),
                    20
                );
            }
        })
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(cache.clone());
    cache.insert(Signals(0), 0);
    let (loading_tx, loading) = mpsc::channel();
    let waiter = {
        let cache = cache.clone();
        std::thread::Builder::new()
            .name("waiter".into())
            .spawn(move || {
                loading.recv().unwrap();
                cache.get_with(Signals(2), || {
                    20 * cache.get_with(Signals(1), || unreachable!("1 is loading"))
                })
            })
            .unwrap()
    };
    let (done_tx, done) = mpsc::channel();
    let loader = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            let loaded = cache.get_with(Signals(1), || {
                loading_tx.send(()).unwrap();
                // Under the shard's lock, which this load's store waits for: once the
                // waiter has let go of it, it holds this load's flight.
                compared.recv().unwrap();
                1
            });
            done_tx.send(loaded).unwrap();
        })
    };
    let loaded = done
        .recv_timeout(BOUND)
        .expect("a load whose listener waits for a load that waits for it never returned");
    assert_eq!(loaded, 1);
    assert_eq!(waiter.join().unwrap(), 20);
    loader.join().unwrap();
    assert_eq!(cache.peek(&Signals(2)), Some(20));
    *slot.lock().unwrap() = None;
}
