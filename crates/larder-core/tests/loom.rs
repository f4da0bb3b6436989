//! Loom models of the read path racing each kind of write on one shard, and of single-flight
//! loading. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg larder_loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p larder-core --test loom --release
//! ```
//!
//! Each model is two threads and a few operations. Values are [`Probe`]s, which fail the model
//! if a reader clones one after it was dropped: with the writer flushing the epoch after its
//! write, loom explores the interleavings where reclamation could run while the reader is
//! between finding a node and cloning its value.
#![cfg(larder_loom)]

use larder_core::{Cache, Policy};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasherDefault, Hash, Hasher};

#[derive(Debug)]
struct Probe {
    id: u32,
    dropped: Arc<AtomicBool>,
}

impl Probe {
    fn new(id: u32) -> Self {
        Probe {
            id,
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Clone for Probe {
    fn clone(&self) -> Self {
        assert!(
            !self.dropped.load(Ordering::SeqCst),
            "a reader cloned value {} after it was freed",
            self.id
        );
        Probe::new(self.id)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// A fixed hasher: loom needs every run of a model to take the same path.
type Fixed = BuildHasherDefault<DefaultHasher>;

fn cache(capacity: u64) -> Cache<u32, Probe, Fixed> {
    Cache::builder()
        .max_capacity(capacity)
        .shards(1)
        .policy(Policy::S3Fifo)
        .hasher(Fixed::default())
        .build()
        .unwrap()
}

/// What an expiry model's listener heard: key, value id, cause.
type Heard = Arc<loom::sync::Mutex<Vec<(u32, u32, larder_core::RemovalCause)>>>;

/// A one-shard cache of 4 on `time`, with the lifetime `lifetime` sets (a time-to-live or a
/// time-to-idle), entry 1 holding value 10, and a listener whose removals it returns.
fn expiring_with_1(
    time: &larder_core::MockClock,
    lifetime: impl FnOnce(
        larder_core::CacheBuilder<u32, Probe, Fixed>,
    ) -> larder_core::CacheBuilder<u32, Probe, Fixed>,
) -> (Cache<u32, Probe, Fixed>, Heard) {
    let heard: Heard = Arc::default();
    let sink = heard.clone();
    let builder = Cache::builder()
        .max_capacity(4)
        .shards(1)
        .hasher(Fixed::default())
        .clock(time.clock())
        .eviction_listener(move |k, v: Probe, cause| {
            sink.lock().unwrap().push((*k, v.id, cause));
        });
    let c = lifetime(builder).build().unwrap();
    c.insert(1, Probe::new(10));
    (c, heard)
}

/// Pushes this thread's garbage and tries to advance the epoch, so reclamation can happen
/// inside the model.
fn reclaim() {
    for _ in 0..3 {
        crossbeam_epoch::pin().flush();
    }
}

/// Runs `f` on a new model thread, with a handle of its own to `c`.
fn on_another_thread<T: Send + 'static>(
    c: &Cache<u32, Probe, Fixed>,
    f: impl FnOnce(Cache<u32, Probe, Fixed>) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let c = c.clone();
    thread::spawn(move || f(c))
}

fn id(v: Option<Probe>) -> Option<u32> {
    v.map(|p| p.id)
}

#[test]
fn read_races_insert() {
    loom::model(|| {
        let c = cache(4);
        let w = on_another_thread(&c, move |c| c.insert(1, Probe::new(10)));
        let seen = id(c.get(&1));
        assert!(matches!(seen, None | Some(10)), "{seen:?}");
        w.join().unwrap();
        assert_eq!(id(c.get(&1)), Some(10));
    });
}

#[test]
fn read_races_replace_and_reclamation() {
    loom::model(|| {
        let c = cache(4);
        c.insert(1, Probe::new(10));
        let w = on_another_thread(&c, move |c| {
            c.insert(1, Probe::new(11));
            reclaim();
        });
        let seen = id(c.get(&1));
        assert!(matches!(seen, Some(10) | Some(11)), "{seen:?}");
        w.join().unwrap();
        assert_eq!(id(c.get(&1)), Some(11));
    });
}

#[test]
fn read_races_remove_and_reclamation() {
    loom::model(|| {
        let c = cache(4);
        c.insert(1, Probe::new(10));
        let w = on_another_thread(&c, move |c| {
            assert_eq!(id(c.remove(&1)), Some(10));
            reclaim();
        });
        let seen = id(c.get(&1));
        assert!(matches!(seen, None | Some(10)), "{seen:?}");
        w.join().unwrap();
        assert_eq!(id(c.get(&1)), None);
    });
}

#[test]
fn read_races_eviction_and_reclamation() {
    loom::model(|| {
        // Capacity 1: inserting key 2 evicts key 1.
        let c = cache(1);
        c.insert(1, Probe::new(10));
        let w = on_another_thread(&c, move |c| {
            c.insert(2, Probe::new(20));
            reclaim();
        });
        let seen = id(c.peek(&1));
        assert!(matches!(seen, None | Some(10)), "{seen:?}");
        w.join().unwrap();
        assert_eq!(id(c.peek(&1)), None);
        assert_eq!(id(c.peek(&2)), Some(20));
        assert!(c.len() <= 1);
    });
}

/// A loaded value becomes readable when its loader sets `READY` (a `Release`), but the loader
/// then queues the entry, which stores the meta word again (`Node::update_meta`). A reader that
/// reads that later store must still see the value: the store has to be a `Release` too.
#[test]
fn read_races_a_load_that_publishes_and_queues() {
    loom::model(|| {
        let c = cache(4);
        let w = on_another_thread(&c, move |c| c.get_with(1, || Probe::new(10)).id);
        let seen = id(c.peek(&1));
        assert!(matches!(seen, None | Some(10)), "{seen:?}");
        assert_eq!(w.join().unwrap(), 10);
    });
}

/// Two writers to one shard. Each probes for its key before taking the lock and reuses that
/// probe only if no write ended meanwhile (`Shard::lock_for`); a stale probe reused would put
/// a key in a slot the other writer took, or a second node for the same key in the table.
/// Under loom a table starts at 4 slots and holds 3, so whichever insert brings the fourth key
/// rebuilds it, and the other writer's probe may have been made in the old table.
#[test]
fn writers_race_on_one_shard() {
    loom::model(|| {
        let c = cache(4);
        c.insert(1, Probe::new(10));
        let w = on_another_thread(&c, move |c| {
            c.insert(2, Probe::new(20));
            c.insert(4, Probe::new(40));
        });
        c.insert(2, Probe::new(21));
        c.insert(3, Probe::new(30));
        w.join().unwrap();
        assert!(matches!(id(c.get(&2)), Some(20) | Some(21)));
        assert_eq!(id(c.get(&1)), Some(10));
        assert_eq!(id(c.get(&3)), Some(30));
        assert_eq!(id(c.get(&4)), Some(40));
        assert_eq!(c.len(), 4);
        c.validate().unwrap();
    });
}

/// Two writers to two shards whose shares were fitted to a load (`Cache::share_capacity`):
/// shard 0, above its even share, gives room up to the spare as it evicts, while shard 1,
/// below its even share, takes from it, both at once. Whichever way they interleave, each
/// shard stays within its share and the shares and the spare add up to the capacity
/// (`validate`); a give or take that read the spare and wrote it back apart would lose one.
/// Weighted, so that a few entries fill the shares: a probe's id is its weight.
#[test]
fn fitted_shares_move_between_writers_through_the_spare() {
    loom::model(|| {
        let c: Cache<u32, Probe, Fixed> = Cache::builder()
            .max_capacity(8)
            .shards(2)
            .policy(Policy::S3Fifo)
            .hasher(Fixed::default())
            .weigher(|_, p: &Probe| p.id)
            .build()
            .unwrap();
        let (zero, one) = (keys_in_shard(&c, 0, 4), keys_in_shard(&c, 1, 2));
        // Even shares are 4 and 4; fitted, 6 and 2.
        let load = c.share_capacity(&[6, 2]).expect("fitted");
        c.insert(zero[0], Probe::new(3));
        c.insert(zero[1], Probe::new(3));
        c.insert(one[0], Probe::new(2));
        drop(load);
        // Shard 0 evicts for one more, and gives 1 to the spare (share 5).
        c.insert(zero[2], Probe::new(1));
        let over = zero[3];
        let w = on_another_thread(&c, move |c| c.insert(over, Probe::new(2)));
        c.insert(one[1], Probe::new(2));
        w.join().unwrap();
        c.validate().unwrap();
        assert_eq!(id(c.get(&over)), Some(2));
        assert_eq!(id(c.get(&one[1])), Some(2));
    });
}

/// The first `n` keys that `c` puts in shard `shard`.
fn keys_in_shard(c: &Cache<u32, Probe, Fixed>, shard: usize, n: usize) -> Vec<u32> {
    (0..)
        .filter(|k| c.shard_index(k) == shard)
        .take(n)
        .collect()
}

/// `len()` of an unweighted cache whose fitted shares move while it adds the shards up, one
/// after another: shard 0 read before it gave room up, shard 1 after it took that room. The
/// sum, a count the cache never held, said 5 of a cache of 4.
#[test]
fn len_stays_within_the_capacity_while_fitted_shares_move() {
    loom::model(|| {
        let c: Cache<u32, Probe, Fixed> = Cache::builder()
            .max_capacity(4)
            .shards(2)
            .policy(Policy::Lru)
            .hasher(Fixed::default())
            .build()
            .unwrap();
        let (zero, one) = (keys_in_shard(&c, 0, 4), keys_in_shard(&c, 1, 2));
        // Even shares are 2 and 2; fitted, 3 and 1, and full.
        let load = c.share_capacity(&[3, 1]).expect("fitted");
        for &k in &zero[..3] {
            c.insert(k, Probe::new(k));
        }
        c.insert(one[0], Probe::new(one[0]));
        drop(load);
        let r = on_another_thread(&c, |c| c.len());
        // Shard 0 evicts for a new entry and gives 1 to the spare (share 2); shard 1 takes it
        // for one more entry (share 2).
        c.insert(zero[3], Probe::new(zero[3]));
        c.insert(one[1], Probe::new(one[1]));
        let seen = r.join().unwrap();
        assert!(seen <= 4, "len() said {seen} of a cache of 4");
    });
}

#[test]
fn concurrent_get_with_runs_init_once() {
    loom::model(|| {
        let c = cache(4);
        let runs = Arc::new(AtomicUsize::new(0));
        let load = |c: &Cache<u32, Probe, Fixed>, runs: &AtomicUsize| {
            c.get_with(1, || {
                runs.fetch_add(1, Ordering::SeqCst);
                Probe::new(10)
            })
            .id
        };
        let other = {
            let (c, runs) = (c.clone(), runs.clone());
            thread::spawn(move || load(&c, &runs))
        };
        assert_eq!(load(&c, &runs), 10);
        assert_eq!(other.join().unwrap(), 10);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

/// Two `try_get_with_unshared` loads of one key whose first attempt fails: each caller gets
/// its own outcome, the failed load's waiter runs a load of its own (never two at once), and
/// the one success is what the cache keeps.
#[test]
fn an_unshared_failure_hands_the_load_to_the_waiter() {
    loom::model(|| {
        let c = cache(4);
        let attempts = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        // The first attempt fails with its own error, every later one loads the value.
        let load = |c: &Cache<u32, Probe, Fixed>, attempts: &AtomicUsize, running: &AtomicUsize| {
            c.try_get_with_unshared(1, || {
                assert_eq!(
                    running.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two loads at once"
                );
                let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                running.fetch_sub(1, Ordering::SeqCst);
                if attempt == 0 {
                    Err(attempt)
                } else {
                    Ok(Probe::new(20))
                }
            })
            .map(|p| p.id)
        };
        let other = {
            let (c, attempts, running) = (c.clone(), attempts.clone(), running.clone());
            thread::spawn(move || load(&c, &attempts, &running))
        };
        let mine = load(&c, &attempts, &running);
        let theirs = other.join().unwrap();
        // Exactly one caller saw the failure, as its own error; the other got the value.
        let mut outcomes = [mine, theirs];
        outcomes.sort();
        assert_eq!(outcomes, [Ok(20), Err(0)]);
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_eq!(id(c.get(&1)), Some(20));
    });
}

/// The janitor's work racing a read of an expired entry, a write that replaces it, and a read
/// of the new value: the reads see nothing, then the new value (never the expired one); the
/// janitor never removes the new value; the expired value is reported exactly once.
#[test]
fn expiry_races_replace_and_read() {
    loom::model(|| {
        let time = larder_core::MockClock::new();
        let (c, heard) = expiring_with_1(&time, |b| {
            b.time_to_live(std::time::Duration::from_millis(10))
        });
        time.advance(std::time::Duration::from_millis(10));
        let janitor = on_another_thread(&c, move |c| {
            c.run_pending_tasks();
            reclaim();
        });
        assert_eq!(id(c.get(&1)), None, "expired");
        c.insert(1, Probe::new(11));
        assert_eq!(id(c.get(&1)), Some(11));
        janitor.join().unwrap();
        assert_eq!(id(c.get(&1)), Some(11), "the janitor left the new value");
        assert_eq!(c.len(), 1);
        c.validate().unwrap();
        let heard = heard.lock().unwrap();
        assert_eq!(
            *heard,
            vec![(1, 10, larder_core::RemovalCause::Expired)],
            "the expired value is reported once, the new one not at all"
        );
    });
}

/// A reader racing an insert that rebuilds the table (4 slots hold 3 under loom, so the
/// fourth key moves every node into a fresh table, published by `rebuild`'s swap and read by
/// `Shard::find`'s table load). Fails when either is relaxed: the reader then reads the fresh
/// table's bytes and slots, made by the writer, without a happens-before edge. (From a
/// mutation survey: no model had a read racing a rebuild.)
#[test]
fn read_races_a_rebuild() {
    loom::model(|| {
        let c = cache(4);
        for k in 1..=3 {
            c.insert(k, Probe::new(10 * k));
        }
        let w = on_another_thread(&c, |c| {
            c.insert(4, Probe::new(40));
            reclaim();
        });
        assert_eq!(id(c.get(&1)), Some(10));
        w.join().unwrap();
        assert_eq!(id(c.get(&4)), Some(40));
        c.validate().unwrap();
    });
}

/// A reader racing `clear`, which publishes a fresh, empty table with the swap a rebuild uses
/// (`Locked::clear`) and retires every node. Fails when that swap is relaxed: the reader then
/// probes the fresh table's bytes with no happens-before edge to their making. (No other model
/// clears.)
#[test]
fn read_races_clear_and_reclamation() {
    loom::model(|| {
        let c = cache(4);
        c.insert(1, Probe::new(10));
        let w = on_another_thread(&c, |c| {
            c.clear();
            reclaim();
        });
        let seen = id(c.get(&1));
        assert!(matches!(seen, None | Some(10)), "{seen:?}");
        w.join().unwrap();
        assert_eq!(id(c.get(&1)), None);
        assert_eq!(c.len(), 0);
    });
}

/// An iteration racing an insert that rebuilds the table, as in `read_races_a_rebuild`: the
/// walk sees the three keys, or all four. Fails when the walk's table load
/// (`Shard::snapshot`) is relaxed: the walk then reads the fresh table's slots with no
/// happens-before edge to their making. (No other model iterates.)
#[test]
fn iteration_races_an_insert_that_rebuilds() {
    loom::model(|| {
        let c = cache(4);
        for k in 1..=3 {
            c.insert(k, Probe::new(10 * k));
        }
        let w = on_another_thread(&c, |c| c.insert(4, Probe::new(40)));
        let mut seen: Vec<(u32, u32)> = c.iter().map(|(k, v)| (k, v.id)).collect();
        seen.sort_unstable();
        assert!(seen[..3] == [(1, 10), (2, 20), (3, 30)], "{seen:?}");
        assert!(matches!(seen[3..], [] | [(4, 40)]), "{seen:?}");
        w.join().unwrap();
    });
}

/// A writer whose unlocked probe (`Shard::lock_for`) races another writer's rebuild, as above,
/// while the main thread probes for key 2. Fails when `lock_for` loads the table pointer
/// `Relaxed`: the probe may then read the fresh table's bytes and slots with no happens-before
/// edge to their making (the count check discards the answer, but only after the race).
#[test]
fn a_writers_probe_races_a_rebuild() {
    loom::model(|| {
        let c = cache(4);
        for k in 1..=3 {
            c.insert(k, Probe::new(10 * k));
        }
        let w = on_another_thread(&c, |c| c.insert(4, Probe::new(40)));
        c.insert(2, Probe::new(21));
        w.join().unwrap();
        assert_eq!(id(c.get(&2)), Some(21));
        assert_eq!(id(c.get(&4)), Some(40));
        assert_eq!(c.len(), 4);
        c.validate().unwrap();
    });
}

/// A key whose comparison reads a loom cell, so that loom sees a key read that is not ordered
/// after the key's making. Every key hashes alike, so probes compare every key they pass.
#[derive(Debug)]
struct Key(loom::cell::UnsafeCell<u32>);

// SAFETY: the cell is written only at creation; loom checks every read against that write.
unsafe impl Sync for Key {}

impl Key {
    fn new(k: u32) -> Self {
        Key(loom::cell::UnsafeCell::new(k))
    }

    fn get(&self) -> u32 {
        // SAFETY: never written after creation.
        self.0.with(|p| unsafe { *p })
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        0u32.hash(state);
    }
}

/// Two writers, keys of one hash: each one's unlocked probe (`Shard::lock_for`) compares the
/// key of the node the other may be publishing. Fails when that probe loads slots `Relaxed`
/// (`Table::find_slot_unlocked`), which the count check cannot excuse: the race on the key
/// happens before the check discards the answer. (The other models' keys are plain `u32`s,
/// whose reads loom does not see.)
#[test]
fn unlocked_probes_read_keys_in_flight() {
    loom::model(|| {
        let c: Cache<Key, Probe, Fixed> = Cache::builder()
            .max_capacity(4)
            .shards(1)
            .policy(Policy::S3Fifo)
            .hasher(Fixed::default())
            .build()
            .unwrap();
        let w = {
            let c = c.clone();
            thread::spawn(move || c.insert(Key::new(1), Probe::new(10)))
        };
        c.insert(Key::new(2), Probe::new(20));
        w.join().unwrap();
        assert_eq!(id(c.get(&Key::new(1))), Some(10));
        assert_eq!(id(c.get(&Key::new(2))), Some(20));
        c.validate().unwrap();
    });
}

/// A read racing the moment an entry's time-to-idle runs out, while another thread reads the
/// entry twice at that moment: once a read has missed it as idle too long, no later read
/// finds it again. (The racing read checked the deadline just before it passed and raised the
/// entry's last access just after: the first read missed the entry, the second found it,
/// with no write between them and the clock standing still.)
#[test]
fn an_entry_read_as_idle_too_long_stays_gone() {
    loom::model(|| {
        let time = larder_core::MockClock::new();
        let (c, _) = expiring_with_1(&time, |b| {
            b.time_to_idle(std::time::Duration::from_millis(10))
        });
        time.advance(std::time::Duration::from_millis(9));
        let reader = on_another_thread(&c, |c| id(c.get(&1)));
        time.advance(std::time::Duration::from_millis(1));
        let first = id(c.get(&1));
        let second = id(c.get(&1));
        let raced = reader.join().unwrap();
        if first.is_none() {
            assert_eq!(
                second, None,
                "an entry read as expired came back (the racing read got {raced:?})"
            );
        }
    });
}

/// The janitor's work racing a read as an entry's time-to-idle runs out: a read that gets the
/// value touched the entry in time, and the janitor, whose verdict comes after, leaves it; or
/// the janitor's verdict comes first, removes it as expired, and the read misses. Never both:
/// a read that got the value and an `Expired` removal of the entry it had just touched.
#[test]
fn the_janitor_does_not_expire_an_entry_a_racing_read_touched() {
    loom::model(|| {
        let time = larder_core::MockClock::new();
        let (c, heard) = expiring_with_1(&time, |b| {
            b.time_to_idle(std::time::Duration::from_millis(10))
        });
        time.advance(std::time::Duration::from_millis(9));
        let reader = on_another_thread(&c, |c| id(c.get(&1)));
        time.advance(std::time::Duration::from_millis(1));
        c.run_pending_tasks();
        let raced = reader.join().unwrap();
        let expired = !heard.lock().unwrap().is_empty();
        assert!(
            !(raced == Some(10) && expired),
            "a read got the value and touched it, and the janitor expired it"
        );
        assert_eq!(id(c.get(&1)).is_some(), !expired);
    });
}
