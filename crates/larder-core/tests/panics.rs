//! User code that panics inside the cache: `K::hash`, `K::eq`, `V::clone`, the weigher, a
//! listener, a value's `Drop`. The panic reaches the caller (or, from a listener, is dropped),
//! and the cache is left whole: every shard validates, nothing is freed twice or leaked, and
//! no caller waits forever.
//!
//! The keys and values here panic on demand: a key's `Hash` or `Eq`, a value's `Clone`, when
//! the test arms them.

mod common;

use common::{quiet_panics, Chaos, DropBomb, PayloadBomb};
use larder_core::Cache;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// A key whose `Hash` panics while its id is below `poison`'s value, and whose `Hash` and
/// `Eq` panic at random while this thread's chaos is on (see [`Chaos`]).
#[derive(Debug, Clone)]
struct Key {
    id: u64,
    poison: &'static AtomicU64,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.id < self.poison.load(Ordering::SeqCst) {
            panic!("hash of key {} poisoned", self.id);
        }
        Chaos::maybe_panic("Key::hash");
        self.id.hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        Chaos::maybe_panic("Key::eq");
        self.id == other.id
    }
}

impl Eq for Key {}

/// Values alive now, across every test that counts them (one does).
static LIVE: AtomicI64 = AtomicI64::new(0);

/// A value whose `Clone` panics while `CLONE_POISON` is set or at random while this thread's
/// chaos is on, and which counts how many are alive.
#[derive(Debug)]
struct Val {
    id: u64,
    counted: bool,
}

static CLONE_POISON: AtomicBool = AtomicBool::new(false);

impl Val {
    fn new(id: u64, counted: bool) -> Self {
        if counted {
            LIVE.fetch_add(1, Ordering::SeqCst);
        }
        Val { id, counted }
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        if CLONE_POISON.load(Ordering::SeqCst) {
            panic!("clone of value {} poisoned", self.id);
        }
        Chaos::maybe_panic("Val::clone");
        Val::new(self.id, self.counted)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        if self.counted {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn key(id: u64, poison: &'static AtomicU64) -> Key {
    Key { id, poison }
}

/// `K::hash` of an eviction victim panics after the victim has left its queue: the eviction
/// is finished (by finding the victim's slot by address) before the panic goes on, so the
/// shard stays whole. Left half done, the victim would stay in the table in no queue, and
/// `validate` would find more entries in the table than in the queues.
#[test]
fn a_hash_that_panics_during_eviction_leaves_the_shard_whole() {
    quiet_panics();
    static POISON: AtomicU64 = AtomicU64::new(0);
    let evicted = Arc::new(AtomicU64::new(0));
    let cache: Cache<Key, u64> = Cache::builder()
        .max_capacity(4)
        .shards(1)
        .eviction_listener({
            let evicted = Arc::clone(&evicted);
            move |_, _, _| {
                evicted.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    for id in 1..=4 {
        cache.insert(key(id, &POISON), id);
    }
    // Every key present hashes with a panic; the new one does not.
    POISON.store(100, Ordering::SeqCst);
    let inserted = catch_unwind(AssertUnwindSafe(|| cache.insert(key(1000, &POISON), 1000)));
    assert!(inserted.is_err(), "the victim's hash panicked");
    POISON.store(0, Ordering::SeqCst);
    cache.validate().unwrap();
    assert_eq!(cache.len(), 4, "one victim left to make room");
    assert_eq!(cache.get(&key(1000, &POISON)), Some(1000));
    assert_eq!(
        evicted.load(Ordering::SeqCst),
        1,
        "the listener heard of it"
    );
    for id in (1..=4).chain([1000]) {
        cache.remove(&key(id, &POISON));
        cache.validate().unwrap();
    }
    assert!(cache.is_empty());
}

/// `V::clone` for the eviction listener panics while `clear` reports what it removed: the
/// clone is made once the shard is unlocked and the clear is whole, so the clear completes and
/// the panic is dropped with the listener's own. (Cloned under the lock, it unwound out of a
/// clear that had emptied the queues but not the table.)
#[test]
fn a_clone_that_panics_for_the_listener_does_not_break_clear() {
    quiet_panics();
    static POISON: AtomicU64 = AtomicU64::new(0);
    let heard = Arc::new(AtomicU64::new(0));
    let cache: Cache<Key, Val> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .eviction_listener({
            let heard = Arc::clone(&heard);
            move |_, _, _| {
                heard.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    for id in 0..10 {
        cache.insert(key(id, &POISON), Val::new(id, false));
    }
    CLONE_POISON.store(true, Ordering::SeqCst);
    let cleared = catch_unwind(AssertUnwindSafe(|| cache.clear()));
    CLONE_POISON.store(false, Ordering::SeqCst);
    assert!(
        cleared.is_ok(),
        "a listener's clone does not unwind out of clear"
    );
    assert_eq!(heard.load(Ordering::SeqCst), 0, "no clone, no call");
    cache.validate().unwrap();
    assert!(cache.is_empty());
    cache.insert(key(1, &POISON), Val::new(1, false));
    cache.remove(&key(1, &POISON));
    assert_eq!(heard.load(Ordering::SeqCst), 1);
    cache.validate().unwrap();
}

/// An `Iter` whose `next` panicked (a value's `Clone`, while it copied a shard) and is called
/// again goes on with that same shard: it yields every other entry, none twice, and skips only
/// the one whose clone panicked, as `iter().cloned()` over a `HashMap` would. It used to count
/// the shard as walked before copying it, and then skipped the rest of it.
#[test]
fn an_iter_called_again_after_a_panicking_clone_skips_only_that_entry() {
    quiet_panics();
    /// Clones left before one panics; below zero, none does.
    static CLONES_LEFT: AtomicI64 = AtomicI64::new(-1);
    /// The value whose clone panicked.
    static PANICKED: AtomicU64 = AtomicU64::new(u64::MAX);
    #[derive(Debug, PartialEq)]
    struct Fragile(u64);
    impl Clone for Fragile {
        fn clone(&self) -> Self {
            if CLONES_LEFT.fetch_sub(1, Ordering::SeqCst) == 0 {
                PANICKED.store(self.0, Ordering::SeqCst);
                panic!("clone of value {} poisoned", self.0);
            }
            Fragile(self.0)
        }
    }
    let cache: Cache<u64, Fragile> = Cache::builder()
        .max_capacity(1000)
        .shards(1)
        .build()
        .unwrap();
    for k in 0..100 {
        cache.insert(k, Fragile(k));
    }
    CLONES_LEFT.store(10, Ordering::SeqCst);
    let mut iter = cache.iter();
    let first = catch_unwind(AssertUnwindSafe(|| iter.next()));
    assert!(first.is_err(), "the eleventh clone panics");
    let mut rest: Vec<(u64, Fragile)> = iter.collect();
    rest.sort_by_key(|(k, _)| *k);
    let panicked = PANICKED.load(Ordering::SeqCst);
    let want: Vec<(u64, Fragile)> = (0..100)
        .filter(|&k| k != panicked)
        .map(|k| (k, Fragile(k)))
        .collect();
    assert_eq!(rest, want);
    cache.validate().unwrap();
}

thread_local! {
    /// The ids whose `Stubborn::clone` panics on this thread, every time.
    static STUBBORN: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// A key or value whose `Clone` panics every time while its id is in this thread's
/// [`STUBBORN`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct Stubborn(u64);

impl Clone for Stubborn {
    fn clone(&self) -> Self {
        if STUBBORN.with(|ids| ids.borrow().contains(&self.0)) {
            panic!("clone of {} poisoned", self.0);
        }
        Stubborn(self.0)
    }
}

/// Calls `iter.next()` until it returns `None`, catching its panics, at most `calls` times:
/// the keys yielded, sorted, the number of panics, and whether the iterator ended.
fn drain_catching<I, V>(mut iter: I, calls: usize) -> (Vec<u64>, usize, bool)
where
    I: Iterator<Item = (Stubborn, V)>,
{
    let (mut keys, mut panics) = (Vec::new(), 0);
    for _ in 0..calls {
        match catch_unwind(AssertUnwindSafe(|| iter.next())) {
            Ok(Some((k, _))) => keys.push(k.0),
            Ok(None) => {
                keys.sort_unstable();
                return (keys, panics, true);
            }
            Err(_) => panics += 1,
        }
    }
    keys.sort_unstable();
    (keys, panics, false)
}

/// An entry whose key's or value's `Clone` panics every time costs an `Iter` one panic out of
/// `next`, as `iter().cloned()` over a `HashMap` does, and is skipped: a caller that catches
/// the panic and goes on gets every other entry, once each, and then the end. (It used to copy
/// the shard again from the start, meeting the same clone each time: every later `next`
/// panicked, and the iterator never got past the shard.)
#[test]
fn an_iter_skips_only_the_entries_whose_clone_always_panics() {
    quiet_panics();
    for shards in [1, 4] {
        let cache: Cache<Stubborn, Stubborn> = Cache::builder()
            .max_capacity(1000)
            .shards(shards)
            .build()
            .unwrap();
        for k in 0..100 {
            cache.insert(Stubborn(k), Stubborn(1000 + k));
        }
        // A key's clone (37), a value's (1061), and two in one shard, whichever it is.
        STUBBORN.with(|ids| *ids.borrow_mut() = vec![37, 1061]);
        let (keys, panics, ended) = drain_catching(cache.iter(), 1000);
        STUBBORN.with(|ids| ids.borrow_mut().clear());
        assert!(
            ended,
            "{shards} shards: the iterator ended ({panics} panics, {} keys)",
            keys.len()
        );
        assert_eq!(panics, 2, "{shards} shards: one panic per stubborn entry");
        let want: Vec<u64> = (0..100).filter(|k| ![37, 61].contains(k)).collect();
        assert_eq!(keys, want, "{shards} shards: every other entry, once");
        cache.validate().unwrap();
    }
}

/// A value whose `Clone` panics with a [`PayloadBomb`].
#[derive(Debug)]
struct CloneBomb;

impl Clone for CloneBomb {
    fn clone(&self) -> Self {
        std::panic::panic_any(PayloadBomb::ARMED)
    }
}

/// An `Iter` holds the panics of a shard's clones after the first for its later calls; dropped
/// before those, it drops them, each payload's panicking `Drop` caught.
#[test]
fn an_iter_dropped_with_panics_pending_drops_them_quietly() {
    quiet_panics();
    let cache: Cache<u64, CloneBomb> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .build()
        .unwrap();
    for k in 0..3 {
        cache.insert(k, CloneBomb);
    }
    let mut iter = cache.iter();
    /// The panics it holds keep it `Send` and `Sync`.
    fn send_and_sync<T: Send + Sync>(_: &T) {}
    send_and_sync(&iter);
    assert_eq!(
        panic_of(|| {
            let _ = iter.next();
        }),
        Escaped::Bomb
    );
    assert_eq!(
        panic_of(|| {
            let _ = iter.next();
        }),
        Escaped::Bomb
    );
    assert_eq!(panic_of(|| drop(iter)), Escaped::Nothing);
}

/// What unwound out of a call (see [`panic_of`]).
#[derive(Debug, PartialEq)]
enum Escaped {
    Nothing,
    /// A [`PayloadBomb`], disarmed since.
    Bomb,
    /// Another panic (its message is left out: the quiet hook would swallow a failed
    /// assertion's message that quoted it).
    Other,
}

/// What unwound out of `f`.
fn panic_of(f: impl FnOnce()) -> Escaped {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => Escaped::Nothing,
        Err(mut payload) => {
            if PayloadBomb::defuse(&mut payload) {
                Escaped::Bomb
            } else {
                Escaped::Other
            }
        }
    }
}

/// A listener's panic is dropped once the write has released its lock (`Locked::tell`), and
/// dropping a payload runs its `Drop`, user code that may panic too. That panic is caught as
/// well: it used to unwind out of the unlock, into the caller of a `clear` that had not told
/// the listener of the rest of what it removed.
#[test]
fn a_listener_panic_whose_payload_panics_on_drop_is_dropped_too() {
    quiet_panics();
    let heard = Arc::new(AtomicU64::new(0));
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .eviction_listener({
            let heard = Arc::clone(&heard);
            move |_, _, _| {
                heard.fetch_add(1, Ordering::SeqCst);
                std::panic::panic_any(PayloadBomb::ARMED);
            }
        })
        .build()
        .unwrap();
    for k in 0..10 {
        cache.insert(k, k);
    }
    let escaped = panic_of(|| cache.clear());
    assert_eq!(heard.load(Ordering::SeqCst), 10, "every removal told");
    assert_eq!(escaped, Escaped::Nothing, "nothing unwinds out of clear");
    cache.validate().unwrap();
    assert!(cache.is_empty());
}

/// The same for removal observers: the one `tell` calls, and each of those stacked by
/// setting `removal_observer` again, whose panic must not keep the next from being called
/// (dropped outside the catch, the payload's panic skipped the rest of the stack).
#[test]
fn an_observer_panic_whose_payload_panics_on_drop_is_dropped_too() {
    quiet_panics();
    let counter = || Arc::new(AtomicU64::new(0));
    let (first, second, heard) = (counter(), counter(), counter());
    let count_and_panic = |count: &Arc<AtomicU64>| {
        let count = Arc::clone(count);
        move |_: &u64, _| {
            count.fetch_add(1, Ordering::SeqCst);
            std::panic::panic_any(PayloadBomb::ARMED);
        }
    };
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .removal_observer(count_and_panic(&first))
        .removal_observer(count_and_panic(&second))
        .eviction_listener({
            let heard = Arc::clone(&heard);
            move |_, _, _| {
                heard.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    for k in 0..10 {
        cache.insert(k, k);
    }
    let escaped = panic_of(|| cache.clear());
    assert_eq!(escaped, Escaped::Nothing, "nothing unwinds out of clear");
    let counts = [&first, &second, &heard].map(|c| c.load(Ordering::SeqCst));
    assert_eq!(
        counts, [10; 3],
        "each observer, and the listener, told of each removal"
    );
    cache.validate().unwrap();
}

/// Dropping the cache drops every value even when their `Drop`s panic, and passes the first
/// panic on. The later panics are dropped, and a payload whose `Drop` panics must not unwind
/// out of that: it used to, from the shard's destructor, leaving the rest of the values and
/// the table leaked, and the payload's panic reached the caller instead of the value's.
#[test]
fn dropping_a_cache_drops_every_value_when_their_panic_payloads_panic_on_drop() {
    quiet_panics();
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    #[derive(Clone)]
    struct Loud;
    impl Drop for Loud {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
            if !thread::panicking() {
                std::panic::panic_any(PayloadBomb::ARMED);
            }
        }
    }
    let cache: Cache<u64, Loud> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .build()
        .unwrap();
    for k in 0..5 {
        cache.insert(k, Loud);
    }
    let escaped = panic_of(|| drop(cache));
    assert_eq!(DROPPED.load(Ordering::SeqCst), 5, "every value dropped");
    assert_eq!(escaped, Escaped::Bomb, "the first value's panic goes on");
}

/// A key whose `Hash` panics with a [`PayloadBomb`] while `BOMB_HASH` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BombKey(u64);

static BOMB_HASH: AtomicBool = AtomicBool::new(false);

impl Hash for BombKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if BOMB_HASH.load(Ordering::SeqCst) && self.0 < 1000 {
            std::panic::panic_any(PayloadBomb::ARMED);
        }
        self.0.hash(state);
    }
}

/// An eviction goes on after a victim's `K::hash` panics, and passes the first panic on once
/// it has made room. A later victim's panic is dropped there, under the lock, and its
/// payload's panicking `Drop` must be caught too: it used to unwind out of the eviction loop,
/// which stopped with the shard still over its capacity.
#[test]
fn an_eviction_goes_on_when_a_victims_panic_payload_panics_on_drop() {
    quiet_panics();
    let cache: Cache<BombKey, u64> = Cache::builder()
        .max_capacity(4)
        .shards(1)
        .weigher(|_, v| if *v == 1000 { 3 } else { 1 })
        .build()
        .unwrap();
    for id in 1..=4 {
        cache.insert(BombKey(id), id);
    }
    // Every key present hashes with a panic; the new one, which needs three victims, does not.
    BOMB_HASH.store(true, Ordering::SeqCst);
    let escaped = panic_of(|| cache.insert(BombKey(1000), 1000));
    BOMB_HASH.store(false, Ordering::SeqCst);
    cache.validate().unwrap();
    assert_eq!(cache.len(), 2, "three victims left to make room");
    assert_eq!(cache.weighted_size(), 4);
    assert_eq!(escaped, Escaped::Bomb, "the first victim's panic goes on");
    assert_eq!(cache.get(&BombKey(1000)), Some(1000));
}

/// `clear` and `reset_stats` release each shard's lock before they go on to the next, and each
/// release frees what the thread removed earlier, running those values' `Drop`. One that
/// panics at the first shard's release reaches the caller, but only once every shard is done:
/// a `clear` that panics still clears, as `Vec::clear` goes on dropping after a panicking
/// element. (`reset_stats` stopped at the panic, the later shards' counters not reset.)
#[test]
fn a_drop_that_panics_during_clear_or_reset_stats_leaves_no_shard_undone() {
    quiet_panics();
    type Bombs = Cache<u64, DropBomb>;
    /// An operation, and whether it is done on every shard.
    type Op = (&'static str, fn(&Bombs), fn(&Bombs) -> bool);
    let ops: [Op; 2] = [
        ("clear", Bombs::clear, |cache| cache.is_empty()),
        ("reset_stats", Bombs::reset_stats, |cache| {
            let stats = cache.stats();
            (stats.inserts, stats.removals) == (0, 0)
        }),
    ];
    for (name, op, done) in ops {
        let cache: Bombs = Cache::builder()
            .max_capacity(1000)
            .shards(4)
            .build()
            .unwrap();
        // A thread of its own: its removals are freed by it, at its later unlocks.
        let result = thread::scope(|s| {
            s.spawn(|| {
                for k in 0..100 {
                    cache.insert(k, DropBomb { armed: false });
                }
                // Removed here, and its batch sealed; the pins of the reads below move the
                // epoch on until the batch may be freed, which reads never do themselves, so
                // the next write, the operation, frees it.
                cache.insert(1000, DropBomb { armed: true });
                drop(cache.remove(&1000));
                cache.run_pending_tasks();
                for _ in 0..if cfg!(miri) { 2_000 } else { 100_000 } {
                    drop(cache.get(&1000));
                }
                catch_unwind(AssertUnwindSafe(|| op(&cache)))
            })
            .join()
            .unwrap()
        });
        assert!(
            result.is_err(),
            "the removed value's drop ran during {name}"
        );
        assert!(done(&cache), "{name}: every shard done");
        cache.validate().unwrap();
    }
}

/// `stats` reads each shard's counters under its lock, but it is no write: it frees nothing
/// the thread removed earlier, so a value's `Drop` that panics (or uses the cache) does not
/// run inside it. It used to take the lock as writes do, and its unlocks freed what the
/// epoch allowed; the next write frees it now.
#[test]
fn stats_runs_no_values_drop() {
    quiet_panics();
    let cache: Cache<u64, DropBomb> = Cache::builder()
        .max_capacity(1000)
        .shards(4)
        .build()
        .unwrap();
    // A thread of its own: its removals are freed by it, at its later unlocks.
    let (stats, write) = thread::scope(|s| {
        s.spawn(|| {
            cache.insert(1, DropBomb { armed: true });
            drop(cache.remove(&1));
            cache.run_pending_tasks();
            // As in the test above: the reads' pins move the epoch on, so that the batch may
            // be freed by the thread's next unlock.
            for _ in 0..if cfg!(miri) { 2_000 } else { 100_000 } {
                drop(cache.get(&1));
            }
            let stats = catch_unwind(AssertUnwindSafe(|| cache.stats()));
            let write = catch_unwind(AssertUnwindSafe(|| {
                cache.insert(2, DropBomb { armed: false })
            }));
            (stats, write)
        })
        .join()
        .unwrap()
    });
    let stats = stats.expect("stats ran no value's drop");
    assert_eq!((stats.inserts, stats.removals), (1, 1));
    assert!(write.is_err(), "the next write freed the removed value");
    cache.validate().unwrap();
}

/// A loader whose `init` returned but whose storing of the value panics (an eviction victim's
/// `K::hash`) ends its flight as abandoned, so a caller waiting on it takes over instead of
/// waiting forever.
#[test]
fn a_load_that_panics_while_storing_releases_its_waiters() {
    quiet_panics();
    static POISON: AtomicU64 = AtomicU64::new(0);
    let cache: Cache<Key, u64> = Cache::builder().max_capacity(4).shards(1).build().unwrap();
    for id in 1..=4 {
        cache.insert(key(id, &POISON), id);
    }
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let loader = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.get_with(key(1000, &POISON), || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                1
            })
        })
    };
    started_rx.recv().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || {
            let v = cache.get_with(key(1000, &POISON), || 2);
            done_tx.send(v).unwrap();
        })
    };
    // Lets the waiter block on the flight (if it is late, it finds the value stored and the
    // test checks less, but cannot fail wrongly).
    for _ in 0..1000 {
        thread::yield_now();
    }
    // Every key already present hashes with a panic: the loader's eviction victim's will.
    POISON.store(100, Ordering::SeqCst);
    release_tx.send(()).unwrap();
    let loaded = loader.join();
    POISON.store(0, Ordering::SeqCst);
    assert!(loaded.is_err(), "the loader's storing panicked");
    let got = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the waiter was released");
    // The loader's value was stored before its eviction panicked.
    assert_eq!(got, 1);
    waiter.join().unwrap();
    cache.validate().unwrap();
}

/// Random operations with `K::hash`, `K::eq`, `V::clone` and the weigher panicking at random:
/// after every operation, panicked or not, every shard validates; at the end every value made
/// has been dropped exactly once (none leaked, none freed twice: `LIVE` would go negative).
#[test]
fn random_panics_in_user_code_leave_the_cache_whole() {
    quiet_panics();
    static POISON: AtomicU64 = AtomicU64::new(0);
    let rounds = if cfg!(miri) { 300 } else { 20_000 };
    let mut rng = StdRng::seed_from_u64(0x5eed_cafe);
    {
        let cache: Cache<Key, Val> = Cache::builder()
            .max_capacity(24)
            .shards(2)
            .weigher(|_, v: &Val| {
                Chaos::maybe_panic("weigher");
                1 + (v.id % 3) as u32
            })
            .eviction_listener(|_, _, _| Chaos::maybe_panic("listener"))
            .build()
            .unwrap();
        let mut panics = 0;
        for round in 0..rounds {
            let id = rng.gen_range(0..64);
            let op = rng.gen_range(0..100);
            Chaos::on(rng.gen(), 8);
            let outcome = catch_unwind(AssertUnwindSafe(|| match op {
                0..=39 => cache.insert(key(id, &POISON), Val::new(id, true)),
                40..=59 => drop(cache.get(&key(id, &POISON))),
                60..=74 => drop(cache.remove(&key(id, &POISON))),
                75..=89 => drop(cache.get_with(key(id, &POISON), || Val::new(id, true))),
                90..=94 => drop(cache.iter().count()),
                95..=97 => drop(cache.contains_key(&key(id, &POISON))),
                _ => cache.clear(),
            }));
            Chaos::off();
            panics += usize::from(outcome.is_err());
            if let Err(e) = cache.validate() {
                panic!("round {round}, op {op}, key {id}: {e}");
            }
            assert!(cache.weighted_size() <= 24);
            if let Some((k, v)) = cache.iter().next() {
                assert_eq!(k.id, v.id, "a key holds another key's value");
            }
        }
        assert!(panics > rounds / 20, "the chaos fired ({panics} panics)");
    }
    // The cache is gone; what it retired waits in this thread's limbo until the epoch allows.
    // Bounded by time as well as rounds: another test's thread printing a panic's backtrace
    // stays pinned meanwhile, and the epoch cannot advance.
    let other: Cache<u64, u64> = Cache::new(1);
    let start = std::time::Instant::now();
    let mut rounds = 0;
    while LIVE.load(Ordering::SeqCst) != 0
        && (rounds < 100_000 || start.elapsed() < Duration::from_secs(30))
    {
        rounds += 1;
        other.run_pending_tasks();
    }
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        0,
        "values leaked or freed twice"
    );
}

/// Ids whose `Hash` panics (`HeldKey`), or 0 for none.
static HELD_HASH_POISON: AtomicU64 = AtomicU64::new(0);
/// Counts `HeldKey` comparisons down: the one that brings it from 1 to 0 panics.
static HELD_EQ_FUSE: AtomicI64 = AtomicI64::new(0);

/// A key for [`what_a_write_was_about_to_store_is_dropped_after_the_unlock`]: its `Hash` and
/// `Eq` panic on demand, and one made with `reenter` writes to that cache when dropped.
#[derive(Clone)]
struct HeldKey {
    id: u64,
    reenter: Option<Cache<HeldKey, HeldVal>>,
}

impl HeldKey {
    fn plain(id: u64) -> Self {
        HeldKey { id, reenter: None }
    }
}

impl Hash for HeldKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.id == HELD_HASH_POISON.load(Ordering::SeqCst) {
            panic!("hash of key {} poisoned", self.id);
        }
        self.id.hash(state);
    }
}

impl PartialEq for HeldKey {
    fn eq(&self, other: &Self) -> bool {
        if HELD_EQ_FUSE.fetch_sub(1, Ordering::SeqCst) == 1 {
            panic!("eq of key {} poisoned", self.id);
        }
        self.id == other.id
    }
}

impl Eq for HeldKey {}

/// Removes a key from `cache`, which takes the lock of the shard it falls in: called under
/// that lock, it would wait for itself.
fn write_from_drop(cache: Option<Cache<HeldKey, HeldVal>>) {
    if let Some(cache) = cache {
        cache.remove(&HeldKey::plain(u64::MAX));
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        write_from_drop(self.reenter.take());
    }
}

/// A value whose `Drop` writes to its cache when made with one, as `HeldKey`'s does.
#[derive(Clone)]
struct HeldVal {
    weight: u32,
    reenter: Option<Cache<HeldKey, HeldVal>>,
}

impl Drop for HeldVal {
    fn drop(&mut self) {
        write_from_drop(self.reenter.take());
    }
}

/// Runs `f` on a thread of its own and returns what it returned, `None` if it did not finish
/// within a minute: a write that dropped a re-entrant key or value under its shard lock never
/// does.
fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || done_tx.send(f()).unwrap());
    done_rx.recv_timeout(Duration::from_secs(60)).ok()
}

/// A write that user code under the shard lock makes panic (`K::eq` in a probe, `K::hash`
/// in a rebuild) has not yet stored its entry, or its key: the write holds it until the lock
/// is released, and its `Drop`, which writes to the same shard here, runs after. Dropped as
/// the panic unwound out of the locked section, it waited for the lock it was dropped under.
#[test]
fn what_a_write_was_about_to_store_is_dropped_after_the_unlock() {
    quiet_panics();
    let build = || -> Cache<HeldKey, HeldVal> {
        Cache::builder()
            .max_capacity(1_000_000)
            .shards(1)
            .weigher(|_, v: &HeldVal| v.weight)
            .build()
            .unwrap()
    };
    let value = |weight, cache: &Cache<HeldKey, HeldVal>| HeldVal {
        weight,
        reenter: Some(cache.clone()),
    };

    // `K::eq` in the probe of a refused (too heavy) insert, which removes the key's older
    // value under the lock: the first comparison is the probe made before the lock, the
    // second the locked one.
    let cache = build();
    cache.insert(
        HeldKey::plain(1),
        HeldVal {
            weight: 1,
            reenter: None,
        },
    );
    let heavy = value(u32::MAX, &cache);
    let writer = cache.clone();
    let done = finishes(move || {
        HELD_EQ_FUSE.store(2, Ordering::SeqCst);
        catch_unwind(AssertUnwindSafe(|| writer.insert(HeldKey::plain(1), heavy))).is_err()
    });
    HELD_EQ_FUSE.store(0, Ordering::SeqCst);
    assert_eq!(
        done,
        Some(true),
        "the write panicked, and did not wait for itself"
    );
    cache.validate().unwrap();

    // `K::hash` in the rebuild a new key's slot needs: every present key but the first
    // hashes, so keys go in until the table grows and the rebuild reaches key 1.
    let cache = build();
    cache.insert(
        HeldKey::plain(1),
        HeldVal {
            weight: 1,
            reenter: None,
        },
    );
    HELD_HASH_POISON.store(1, Ordering::SeqCst);
    let writer = cache.clone();
    let reentrant = cache.clone();
    let done = finishes(move || {
        for id in 2..10_000 {
            let panicked = catch_unwind(AssertUnwindSafe(|| {
                writer.insert(HeldKey::plain(id), value(1, &reentrant))
            }))
            .is_err();
            if panicked {
                return Some(id);
            }
        }
        None
    });
    HELD_HASH_POISON.store(0, Ordering::SeqCst);
    assert!(
        matches!(done, Some(Some(_))),
        "an insert's rebuild panicked, and it did not wait for itself"
    );
    cache.validate().unwrap();
    // The values stored hold the cache: dropping them ends the cycle.
    cache.clear();

    // The same for `get_with`, whose key waits unstored while the rebuild runs.
    let cache = build();
    cache.insert(
        HeldKey::plain(1),
        HeldVal {
            weight: 1,
            reenter: None,
        },
    );
    HELD_HASH_POISON.store(1, Ordering::SeqCst);
    let loader = cache.clone();
    let done = finishes(move || {
        for id in 2..10_000 {
            let key = HeldKey {
                id,
                reenter: Some(loader.clone()),
            };
            let panicked = catch_unwind(AssertUnwindSafe(|| {
                loader.get_with(key, || HeldVal {
                    weight: 1,
                    reenter: None,
                })
            }))
            .is_err();
            if panicked {
                return Some(id);
            }
        }
        None
    });
    HELD_HASH_POISON.store(0, Ordering::SeqCst);
    assert!(
        matches!(done, Some(Some(_))),
        "a load's rebuild panicked, and it did not wait for itself"
    );
    cache.validate().unwrap();
    // The keys stored hold the cache, as above.
    cache.clear();
}

/// The child of [`dropping_a_cache_while_unwinding_drops_a_values_panic_quietly`].
#[test]
#[ignore = "run by its parent test, as a child process"]
fn cache_dropped_while_unwinding_child() {
    if !larder_testkit::child::is_child("LARDER_CACHE_DROPPED_WHILE_UNWINDING_CHILD") {
        return;
    }
    quiet_panics();
    /// A panic payload whose `Drop` panics even while its thread unwinds.
    struct AlwaysBomb;
    impl Drop for AlwaysBomb {
        fn drop(&mut self) {
            panic!("drop of a panic payload poisoned, while unwinding too");
        }
    }
    #[derive(Clone)]
    struct Loud;
    impl Drop for Loud {
        fn drop(&mut self) {
            std::panic::panic_any(AlwaysBomb);
        }
    }
    let cache: Cache<u64, Loud> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .build()
        .unwrap();
    cache.insert(1, Loud);
    let escaped = catch_unwind(AssertUnwindSafe(move || {
        let _cache = cache;
        panic!("the caller's own panic, poisoned");
    }));
    let payload = escaped.expect_err("the caller's panic goes on");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the caller's own panic, poisoned")
    );
    println!("survived the drop");
}

/// A cache dropped while another panic unwinds drops the panic of a value's `Drop` instead of
/// passing it on, and its payload too, whose own `Drop` panics even then: caught, or it would
/// unwind out of the shard's destructor during the unwinding and abort the process.
/// (`PayloadBomb` stays quiet while its thread unwinds, so the tests above cannot see this.)
#[test]
#[cfg_attr(miri, ignore = "miri cannot start the child process")]
fn dropping_a_cache_while_unwinding_drops_a_values_panic_quietly() {
    let out = larder_testkit::child::run(
        "cache_dropped_while_unwinding_child",
        "LARDER_CACHE_DROPPED_WHILE_UNWINDING_CHILD",
        &[],
    );
    assert!(out.contains("survived the drop"), "{out}");
}
