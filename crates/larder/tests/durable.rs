//! The durable cache across restarts: what comes back is exactly what was live — nothing
//! deleted, evicted, cleared or expired — in every durability mode; bad input is an error.

mod common;

use common::{durable_cache, files, TempDir};
use larder::durable::{Compaction, Error, IoCall, LogOptions, RawBytes};
use larder::{Cache, Durability, DurableCache, IntoDurable, Janitor, MockClock, Policy};
use larder_log::format::Op;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn open(dir: &Path, capacity: u64, durability: Durability) -> DurableCache<u64, String> {
    common::durable_cache(dir, capacity, durability).unwrap()
}

/// The entries of a durable cache of `String`s.
fn contents<K>(cache: &DurableCache<K, String>) -> BTreeMap<K, String>
where
    K: Ord + Clone + std::hash::Hash + Eq + Send + Sync + 'static,
{
    cache.iter().collect()
}

#[test]
fn entries_come_back_after_close_in_every_mode() {
    for (i, mode) in [
        Durability::Always,
        Durability::Interval(Duration::from_secs(1)),
        Durability::Manual,
    ]
    .into_iter()
    .enumerate()
    {
        let tmp = TempDir::new(&format!("durable-modes{i}"));
        let cache = open(&tmp.0, 1000, mode);
        for k in 0..300u64 {
            cache.insert(k, format!("value {k}")).unwrap();
        }
        cache.insert(7, "seven again".into()).unwrap();
        let before = contents(&cache);
        assert_eq!(before.len(), 300);
        cache.close().unwrap();
        let cache = open(&tmp.0, 1000, mode);
        assert_eq!(contents(&cache), before, "{mode:?}");
        assert_eq!(cache.get(&7).as_deref(), Some("seven again"));
    }
}

#[test]
fn deleted_evicted_and_cleared_entries_stay_gone() {
    let tmp = TempDir::new("durable-phantoms");
    let cache = open(&tmp.0, 64, Durability::Manual);
    for k in 0..1000u64 {
        cache.insert(k, k.to_string()).unwrap();
        if k % 10 == 3 {
            cache.remove(&(k - 1)).unwrap();
        }
    }
    let live = contents(&cache);
    assert!(live.len() <= 64 && !live.is_empty());
    drop(cache); // the last handle: synced on drop
    let cache = open(&tmp.0, 64, Durability::Manual);
    assert_eq!(contents(&cache), live, "exactly the live set comes back");

    cache.clear().unwrap();
    cache.insert(5000, "after the clear".into()).unwrap();
    drop(cache);
    let cache = open(&tmp.0, 64, Durability::Manual);
    assert_eq!(
        contents(&cache),
        BTreeMap::from([(5000, "after the clear".to_string())])
    );
}

/// A removal observer the user sets on the builder is kept beside the durable cache's own (it
/// used to be replaced without a word), and one that panics does not keep the durable cache
/// from recording its evictions.
#[test]
fn a_users_removal_observer_is_kept_and_its_panics_cost_no_deletes() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let tmp = TempDir::new("durable-user-observer");
    let heard = Arc::new(AtomicU64::new(0));
    let open_observed = |heard: &Arc<AtomicU64>| -> DurableCache<u64, String> {
        let heard = Arc::clone(heard);
        Cache::builder()
            .max_capacity(64)
            .removal_observer(move |_: &u64, _| {
                heard.fetch_add(1, Ordering::SeqCst);
                panic!("an observer that panics");
            })
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .build()
            .unwrap()
    };
    let cache = open_observed(&heard);
    for k in 0..1000u64 {
        cache.insert(k, k.to_string()).unwrap();
    }
    let live = contents(&cache);
    assert!(live.len() <= 64);
    assert!(
        heard.load(Ordering::SeqCst) >= 1000 - 64,
        "the user's observer heard {} evictions",
        heard.load(Ordering::SeqCst)
    );
    drop(cache);
    let cache = open(&tmp.0, 64, Durability::Manual);
    assert_eq!(contents(&cache), live, "every eviction was recorded");
}

#[test]
fn concurrent_writers_of_the_same_keys_leave_a_log_that_agrees_with_the_cache() {
    // Writes of one key are ordered by its stripe, writes of different keys run in parallel,
    // and evictions are recorded under the evicted key's stripe: after many threads insert,
    // replace, remove and evict the same few hundred keys (with a clear now and then), a
    // reopen finds exactly what the cache held.
    //
    // Sixteen threads on a machine of two cores, so that threads are often preempted in the
    // middle of a write. With the eviction's delete appended outside the evicted key's stripe,
    // this test failed 20 runs of 20 (and 3 of 10 with four threads of 3,000 writes each).
    const THREADS: u64 = 16;
    for round in 0..10u64 {
        let tmp = TempDir::new(&format!("durable-concurrent-{round}"));
        let cache = open(&tmp.0, 64, Durability::Manual);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let cache = &cache;
                s.spawn(move || {
                    let mut x = 0x9E37_79B9_7F4A_7C15 ^ (round * THREADS + t);
                    for i in 0..750u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = x % 256;
                        match x % 23 {
                            0 => drop(cache.remove(&key).unwrap()),
                            1 if t == 0 && i % 250 == 249 => cache.clear().unwrap(),
                            _ => cache.insert(key, format!("{t}:{i}")).unwrap(),
                        }
                    }
                });
            }
        });
        let before = contents(&cache);
        cache.close().unwrap();
        let cache = open(&tmp.0, 64, Durability::Manual);
        assert_eq!(contents(&cache), before, "round {round}");
    }
}

#[test]
fn recovery_respects_a_smaller_capacity_and_records_what_it_evicted() {
    let tmp = TempDir::new("durable-shrink");
    let cache = open(&tmp.0, 2000, Durability::Manual);
    for k in 0..1000u64 {
        cache.insert(k, k.to_string()).unwrap();
    }
    drop(cache);
    let cache = open(&tmp.0, 100, Durability::Manual);
    let kept = contents(&cache);
    assert!(kept.len() <= 100 && kept.len() >= 50, "{}", kept.len());
    drop(cache);
    // The evictions made while loading were logged: a roomy reopen finds the same entries.
    let cache = open(&tmp.0, 2000, Durability::Manual);
    assert_eq!(contents(&cache), kept);
}

/// An open's load goes through the cache, and the cache's statistics count it: each entry
/// loaded is an insert, and each a smaller capacity cannot keep an eviction (its delete then
/// logged), so they say what the reopen kept and what it lost for good; the load reads
/// nothing, so no hit or miss. `reset_stats` starts the counters afresh with the entries
/// kept, and from then on writes and reads through the durable cache count as the core
/// cache's do. (The durable cache had no `reset_stats`: the load's counts stayed in every
/// later reading of a cache that exposes its statistics.)
#[test]
fn an_opens_load_is_counted_until_the_stats_are_reset() {
    let tmp = TempDir::new("durable-stats");
    let cache = open(&tmp.0, 2000, Durability::Manual);
    for k in 0..1000u64 {
        cache.insert(k, k.to_string()).unwrap();
    }
    cache.close().unwrap();
    let cache = open(&tmp.0, 100, Durability::Manual);
    let kept = cache.len() as u64;
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (0, 0), "the load reads nothing");
    assert_eq!((s.inserts, s.evictions, s.len), (1000, 1000 - kept, kept));
    assert_eq!(
        (s.updates, s.removals, s.expirations, s.rejections),
        (0, 0, 0, 0)
    );

    cache.reset_stats();
    let s = cache.stats();
    assert_eq!(
        (s.inserts, s.evictions, s.len),
        (0, 0, kept),
        "the counters zeroed, the entries kept"
    );
    let present = cache.iter().next().map(|(k, _)| k).unwrap();
    cache.insert(present, "again".into()).unwrap();
    cache.insert(5000, "new".into()).unwrap();
    assert_eq!(cache.get(&5000).as_deref(), Some("new"));
    assert_eq!(cache.get(&1_000_000), None);
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.inserts, s.updates), (1, 1, 1, 1));
    assert_eq!(
        s.evictions,
        kept + 1 - s.len,
        "what the new key made room for"
    );
    cache.remove(&5000).unwrap();
    let left = cache.len() as u64;
    cache.clear().unwrap();
    assert_eq!(cache.stats().removals, 1 + left);
}

/// A full cache of several shards, closed and reopened with the very same configuration, comes
/// back whole: nothing in the live set needs evicting, since it fit before. Each build seeds its
/// hasher at random, and the hash picks the shard, so the reopened cache spreads the same keys
/// over its shards differently; recovery shares the capacity out to fit them
/// (`Cache::share_capacity`). Before it did, each shard kept to an even share and evicted live
/// entries as they loaded, their deletes logged for good: "37 of the 4096 live entries did not
/// come back" (21 to 55 in eight runs; helper-46).
#[test]
fn a_full_sharded_cache_reopened_alike_comes_back_whole() {
    // Unweighted, and weighed by the value's length (1 to 6 digits); and large enough to load
    // on two threads (`PARALLEL_LOAD` in `live.rs`, 65,536 entries).
    for (weighted, capacity) in [(false, 4096), (true, 4096), (false, 70_000)] {
        let tmp = TempDir::new("durable-reshard");
        let open = || -> DurableCache<u64, String> {
            let builder = Cache::builder().max_capacity(capacity).shards(4);
            let builder = if weighted {
                builder.weigher(|_, v: &String| v.len() as u32)
            } else {
                builder
            };
            builder
                .durable(&tmp.0)
                .durability(Durability::Manual)
                .build()
                .unwrap()
        };
        let cache = open();
        for k in 0..4 * capacity {
            cache.insert(k, k.to_string()).unwrap();
        }
        let before = contents(&cache);
        assert!(cache.weighted_size() > capacity - 4 * 6, "full");
        cache.close().unwrap();
        let after = contents(&open());
        let lost = before.keys().filter(|k| !after.contains_key(k)).count();
        assert_eq!(
            lost,
            0,
            "weighted: {weighted}; {lost} of the {} live entries did not come back",
            before.len()
        );
        assert_eq!(after, before);
    }
}

/// An entry too heavy for a smaller reopen is refused while loading, which the cache reports to
/// nobody; its put must leave the log all the same, or a roomier reopen brings it back. Both
/// with and without a lifetime, as the load inserts those two differently.
#[test]
fn an_entry_refused_while_loading_stays_gone() {
    for ttl in [None, Some(Duration::from_secs(3600))] {
        let tmp = TempDir::new("durable-refused-on-load");
        let open = |capacity: u64| -> DurableCache<u64, Vec<u8>> {
            let builder = Cache::builder()
                .max_capacity(capacity)
                .shards(1)
                .weigher(|_, v: &Vec<u8>| v.len() as u32);
            let builder = match ttl {
                Some(ttl) => builder.time_to_live(ttl),
                None => builder,
            };
            builder
                .durable(&tmp.0)
                .value_codec(RawBytes)
                .durability(Durability::Manual)
                .build()
                .unwrap()
        };
        let cache = open(1000);
        cache.insert(1, vec![1; 100]).unwrap();
        cache.insert(2, vec![2; 10]).unwrap();
        cache.close().unwrap();
        let cache = open(50);
        assert_eq!(
            cache.get(&1),
            None,
            "refused: heavier than the whole capacity"
        );
        assert_eq!(cache.get(&2), Some(vec![2; 10]));
        cache.close().unwrap();
        let cache = open(1000);
        assert_eq!(cache.get(&1), None, "the refused entry came back ({ttl:?})");
        assert_eq!(cache.get(&2), Some(vec![2; 10]));
    }
}

/// The wall time a mock clock reads before it is advanced (`MockClock::WALL_ORIGIN`), in
/// milliseconds since the Unix epoch: for records written ahead of a cache on a mock clock.
fn mock_origin_ms() -> u64 {
    MockClock::new().clock().wall_ms()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes a put of each key, with the value "v" and the deadline beside it (wall-clock ms, 0 for
/// none), to the log in `dir`, as a cache with a time-to-live would.
fn put_with_deadline(dir: &Path, keys_and_deadlines: &[(u64, u64)]) {
    let mut log = larder_log::Log::open(dir, Default::default(), |_| {}).unwrap();
    let value = postcard::to_allocvec("v").unwrap();
    for &(key, at) in keys_and_deadlines {
        let key = postcard::to_allocvec(&key).unwrap();
        log.append(Op::Put {
            key: &key,
            value: &value,
            expires_at_ms: at,
        })
        .unwrap();
    }
    log.sync().unwrap();
}

#[test]
fn expired_records_are_not_recovered_and_live_ones_keep_their_deadline() {
    let tmp = TempDir::new("durable-expired");
    // One long past, one an hour out, one without a deadline.
    put_with_deadline(
        &tmp.0,
        &[(1, wall_ms() - 1000), (2, wall_ms() + 3_600_000), (3, 0)],
    );
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(7200))
        .durable(&tmp.0)
        .build()
        .unwrap();
    assert_eq!(cache.get(&1), None, "expired before the restart");
    assert_eq!(cache.get(&2).as_deref(), Some("v"));
    assert_eq!(cache.len(), 2);
    drop(cache);

    // A cache with a time-to-live stores deadlines, and they hold across a restart.
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .without_janitor()
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    cache.insert(4, "short".into()).unwrap();
    drop(cache);
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(7200))
        .durable(&tmp.0)
        .build()
        .unwrap();
    // Not the reopened cache's two hours: the deadline written a minute out.
    assert!(cache.contains_key(&4));
    let left = logged_deadline(&cache, 4) - wall_ms();
    let left = Duration::from_millis(left);
    assert!(left <= Duration::from_secs(60), "{left:?}");
    assert!(left > Duration::from_secs(50), "{left:?}");
}

/// Opens `dir` as a cache with a time-to-live of a minute on a mock clock, without a janitor.
fn open_with_a_minutes_ttl(dir: &Path) -> (DurableCache<u64, String>, MockClock) {
    let time = MockClock::new();
    let cache = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .clock(time.clock())
        .without_janitor()
        .durable(dir)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    (cache, time)
}

/// A record's deadline an hour out, written by a cache whose time-to-live was a minute when
/// the wall clock read an hour ahead of now (it was stepped back since), or an hour long:
/// reopened with a minute, the entry lives a minute, not the hour its record promises. And the
/// record is written again with the minute's deadline: left, a crash after the entry expired
/// here but before its delete was recorded brought it back for the rest of the hour.
#[test]
fn a_recovered_entry_lives_no_longer_than_the_caches_time_to_live() {
    let tmp = TempDir::new("durable-clock-stepped-back");
    put_with_deadline(&tmp.0, &[(1, mock_origin_ms() + 3_600_000)]);
    let (cache, time) = open_with_a_minutes_ttl(&tmp.0);
    let ahead = logged_deadline(&cache, 1).saturating_sub(time.clock().wall_ms());
    assert_eq!(ahead, 60_000, "the record's deadline is {ahead} ms out");
    time.advance(Duration::from_secs(59));
    assert_eq!(cache.get(&1).as_deref(), Some("v"));
    time.advance(Duration::from_secs(1));
    assert_eq!(cache.get(&1), None, "lived past the cache's time-to-live");
}

/// A recovered entry does not expire before its record's deadline, also when what is left of
/// it is longer than the 131 s the cache keeps lifetimes exact to (it rounds longer ones down,
/// by up to 1/65,536). Here a day's time-to-live, reopened an hour and 12.345 s after the
/// write: the 82,787,655 ms left were kept as 82,787,328, the entry expired 327 ms before its
/// record's deadline, and a crash then, before its delete was recorded, brought it back. (It
/// may be read up to 1/65,536 of its life past the deadline instead.)
#[test]
fn a_recovered_entry_with_a_day_left_does_not_expire_before_its_records_deadline() {
    let tmp = TempDir::new("durable-long-deadline");
    let copy = TempDir::new("durable-long-deadline-copy");
    let time = MockClock::new();
    let open = |dir: &Path| -> DurableCache<u64, String> {
        Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(86_400))
            .clock(time.clock())
            .without_janitor()
            .durable(dir)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .build()
            .unwrap()
    };
    let cache = open(&tmp.0);
    cache.insert(1, "v".into()).unwrap();
    let deadline = logged_deadline(&cache, 1);
    cache.close().unwrap();
    time.advance(Duration::from_millis(3_612_345));
    let cache = open(&tmp.0);
    let left = deadline - time.clock().wall_ms();
    time.advance(Duration::from_millis(left - 1_000));
    while cache.get(&1).is_some() {
        let late = time.clock().wall_ms().saturating_sub(deadline);
        assert!(
            late <= left >> 16,
            "read {late} ms past its record's deadline"
        );
        time.advance(Duration::from_millis(1));
    }
    let early = deadline.saturating_sub(time.clock().wall_ms());
    larder_testkit::copy_dir(&tmp.0, &copy.0);
    let crashed = open(&copy.0);
    assert_eq!(
        crashed.get(&1),
        None,
        "expired {early} ms before its record's deadline, and back after a crash"
    );
    assert_eq!(early, 0, "expired {early} ms before its record's deadline");
}

/// As above, with an entry whose minute passes while the load goes on (a slow weigher on
/// the next key): it expired in the cache before the open wrote its deadline again, and the
/// open records its delete instead. Skipped, its record kept the hour's deadline, and a crash
/// before a janitor's tick recorded the delete brought it back at the next open.
#[test]
fn a_recovered_entry_that_expires_during_the_load_has_its_delete_recorded() {
    let tmp = TempDir::new("durable-expired-in-the-load");
    put_with_deadline(&tmp.0, &[(1, mock_origin_ms() + 3_600_000), (2, 0)]);
    let time = MockClock::new();
    let slow = time.clone();
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .clock(time.clock())
        .weigher(move |k: &u64, _: &String| {
            if *k == 2 {
                slow.advance(Duration::from_secs(61));
            }
            1
        })
        .without_janitor()
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    assert_eq!(cache.get(&1), None, "the minute passed during the load");
    assert_eq!(
        last_logged(&cache, 1, false),
        Some(None),
        "the log still holds key 1's put"
    );
}

/// The shares of the capacity are fitted to the survivors' weights before the load, and the
/// load may then hold less than a shard was fitted for: a survivor whose deadline passes while
/// the load goes on is left out (the load reads the wall clock, which a test cannot move), and
/// here a weigher that weighs key `gone` 85 for the fitting and 5 when it is inserted leaves
/// 80 of shard 0's share of 90 unloaded the same way. That room must not stay with the shard:
/// once the two entries were removed, the empty shard kept a share of 80 (removals give back
/// what they free, 10), and an entry of 20, within an even share of 25, was refused by a
/// cache that held nothing (the shares were 90/4/3/3, and shard 1 could take only the 10).
#[test]
fn room_fitted_for_more_than_the_load_brings_goes_back_once_the_load_ends() {
    type Fixed = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
    let tmp = TempDir::new("durable-fitted-room-unloaded");
    let placed: Cache<u64, String, Fixed> = Cache::builder()
        .max_capacity(100)
        .shards(4)
        .hasher(Fixed::default())
        .build()
        .unwrap();
    let in_shard =
        |shard: usize, from: u64| (from..).find(|k| placed.shard_index(k) == shard).unwrap();
    let gone = in_shard(0, 0);
    let (kept, later) = (in_shard(0, gone + 1), in_shard(1, 0));
    put_with_deadline(&tmp.0, &[(gone, 0), (kept, 0)]);
    let weighed = std::sync::atomic::AtomicBool::new(false);
    let cache: DurableCache<u64, String, Fixed> = Cache::builder()
        .max_capacity(100)
        .shards(4)
        .hasher(Fixed::default())
        .weigher(move |k: &u64, _: &String| {
            if *k == gone && !weighed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                85
            } else if *k == later {
                20
            } else {
                5
            }
        })
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    assert_eq!(cache.weighted_size(), 10, "both loaded, at 5 each");
    cache.remove(&gone).unwrap();
    cache.remove(&kept).unwrap();
    cache.insert(later, "v".to_string()).unwrap();
    assert_eq!(
        cache.get(&later).as_deref(),
        Some("v"),
        "an entry of 20 refused by an empty cache"
    );
}

/// A record without a deadline, written by a cache without expiry, reopened by one with a
/// minute's time-to-live: the entry lives a minute, and its record is written again with that
/// deadline, as a recorded deadline the time-to-live cuts short is. Left without one, a crash
/// after the entry expired here but before its delete was recorded brought it back, for
/// another minute at every open.
#[test]
fn a_recovered_entry_without_a_deadline_is_written_again_with_the_caches_time_to_live() {
    let tmp = TempDir::new("durable-ttl-over-no-deadline");
    put_with_deadline(&tmp.0, &[(1, 0)]);
    let (cache, time) = open_with_a_minutes_ttl(&tmp.0);
    assert_eq!(
        logged_deadline(&cache, 1),
        time.clock().wall_ms() + 60_000,
        "the record's deadline is the minute's"
    );
    time.advance(Duration::from_secs(60));
    assert_eq!(cache.get(&1), None, "lived past the cache's time-to-live");
}

/// A build that fails after the cache registered with its janitor releases the directory
/// before it returns, or before its panic leaves it (`build`'s `# Panics`), even while a tick
/// of that janitor holds the cache: an open retried at once is not refused as `Locked`. Here
/// the recovered entry, written again with the cache's time-to-live, meets a value codec that
/// refuses it (an error, then a panic) on the building thread, once the janitor's first
/// interval sync is inside its flush (held there by the fault hook for a while, as a slow disk
/// would). Both were refused as "open elsewhere" before.
#[test]
fn a_build_that_fails_after_its_janitor_registration_releases_the_directory_before_returning() {
    use larder::durable::{Codec, CodecError, Postcard};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::ThreadId;

    /// Set once the janitor's tick is inside a flush.
    type Flushing = Arc<(Mutex<bool>, Condvar)>;
    struct RefusedOn {
        thread: ThreadId,
        flushing: Flushing,
        panics: bool,
    }
    impl Codec<String> for RefusedOn {
        fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), CodecError> {
            if std::thread::current().id() != self.thread {
                return Postcard.encode(value, out);
            }
            let (flushing, changed) = &*self.flushing;
            let wait = Duration::from_secs(10);
            let held = changed.wait_timeout_while(flushing.lock().unwrap(), wait, |f| !*f);
            assert!(*held.unwrap().0, "no interval sync began");
            if self.panics {
                panic!("the value codec panicked on the building thread");
            }
            Err(CodecError::new("refused on the building thread"))
        }
        fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
            Postcard.decode(bytes)
        }
    }

    for panics in [false, true] {
        let tmp = TempDir::new("durable-build-fails-registered");
        put_with_deadline(&tmp.0, &[(1, 0)]);
        let flushing: Flushing = Arc::default();
        let building = std::thread::current().id();
        let hook = {
            let flushing = Arc::clone(&flushing);
            move |call| {
                if call == IoCall::Flush && std::thread::current().id() != building {
                    let (set, changed) = &*flushing;
                    *set.lock().unwrap() = true;
                    changed.notify_all();
                    std::thread::sleep(Duration::from_millis(300));
                }
                Ok(())
            }
        };
        let builder = Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(60))
            .durable(&tmp.0)
            .durability(Durability::Interval(Duration::from_millis(1)))
            .value_codec(RefusedOn {
                thread: building,
                flushing,
                panics,
            })
            .log_options(LogOptions::default().with_io_hook(hook));
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let built: Result<DurableCache<u64, String>, Error> = builder.build();
            built.err().map(|e| e.to_string())
        }));
        match failed {
            Ok(Some(e)) if !panics => assert!(e.contains("refused"), "{e}"),
            Err(_) if panics => {}
            other => panic!("panics {panics}: the build ended {other:?}"),
        }
        let retried: Result<DurableCache<u64, String>, Error> = Cache::builder()
            .max_capacity(100)
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .build();
        assert_eq!(
            retried
                .map(|cache| cache.get(&1))
                .map_err(|e| e.to_string()),
            Ok(Some("v".to_string())),
            "panics {panics}"
        );
    }
}

/// A cache opened without expiry keeps a recorded entry for good, and writes it again without
/// its deadline, so the next open (or a compaction) does not drop what the cache held.
#[test]
fn an_entry_a_cache_without_expiry_keeps_for_good_stays_after_its_recorded_deadline() {
    let tmp = TempDir::new("durable-kept-for-good");
    put_with_deadline(&tmp.0, &[(1, mock_origin_ms() + 300), (2, 0)]);
    let time = MockClock::new();
    let open = || -> DurableCache<u64, String> {
        Cache::builder()
            .max_capacity(100)
            .clock(time.clock())
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .build()
            .unwrap()
    };
    let cache = open();
    assert_eq!(cache.get(&1).as_deref(), Some("v"));
    assert_eq!(
        logged_deadline(&cache, 1),
        0,
        "written again, without a deadline"
    );
    cache.close().unwrap();
    time.advance(Duration::from_millis(400));
    let cache = open();
    assert_eq!(
        cache.get(&1).as_deref(),
        Some("v"),
        "held when the cache closed, gone after the restart"
    );
    assert_eq!(cache.get(&2).as_deref(), Some("v"));
    assert_eq!(cache.len(), 2);
}

/// Each entry's lifetime is what is left of its deadline when the load reaches it, not when
/// the load began: here a weigher that takes 400 ms (on the mock clock) on the first key makes
/// the second key's 200 ms deadline pass before it is inserted.
#[test]
fn an_entry_whose_deadline_passes_during_the_load_is_not_loaded() {
    let tmp = TempDir::new("durable-slow-load");
    let deadline = mock_origin_ms() + 200;
    put_with_deadline(&tmp.0, &[(0, 0), (1, deadline)]);
    let time = MockClock::new();
    let slow = time.clone();
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(3600))
        .clock(time.clock())
        .weigher(move |k: &u64, _: &String| {
            if *k == 0 {
                slow.advance(Duration::from_millis(400));
            }
            1
        })
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    let read_at = time.clock().wall_ms();
    assert!(read_at > deadline, "the load took under 200 ms");
    assert_eq!(cache.get(&0).as_deref(), Some("v"));
    assert_eq!(
        cache.get(&1),
        None,
        "read {} ms past the deadline in its record",
        read_at - deadline
    );
}

/// A weigher that panics during the load panics `build` (as it panics `insert`), and leaves
/// the directory as the load found it, unlocked: what the smaller cache evicted before the
/// panic is not deleted from the log, so an open without that weigher gets every entry back.
/// The load weighs every survivor twice, first for the shards' shares, then as it inserts it;
/// key 15 panics at the second, so that the ten keys before it in its one shard have filled
/// the cache and the five before those have been evicted. (Panicking at the first, as this
/// test did, it panicked before anything was inserted: it no longer checked evictions.)
#[test]
fn a_weigher_that_panics_during_the_load_leaves_the_log_as_it_was() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tmp = TempDir::new("durable-load-weigher-panics");
    let all = durable_cache(&tmp.0, 100, Durability::Manual).unwrap();
    for k in 0..20 {
        all.insert(k, format!("v{k}")).unwrap();
    }
    all.close().unwrap();
    let evictions = std::sync::Arc::new(AtomicUsize::new(0));
    let opened = std::panic::catch_unwind(|| {
        let weighed_15 = AtomicUsize::new(0);
        let evictions = std::sync::Arc::clone(&evictions);
        Cache::builder()
            .max_capacity(10)
            .shards(1)
            .weigher(move |k: &u64, _: &String| {
                let second = *k == 15 && weighed_15.fetch_add(1, Ordering::Relaxed) == 1;
                assert!(!second, "the weigher's panic");
                1
            })
            .removal_observer(move |_: &u64, cause| {
                if cause.was_evicted() {
                    evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .durable(&tmp.0)
            .durability(Durability::Interval(Duration::from_millis(10)))
            .build()
            .map(|cache: DurableCache<u64, String>| cache.len())
    });
    assert!(opened.is_err(), "build returned instead of panicking");
    assert_eq!(
        evictions.load(Ordering::Relaxed),
        5,
        "the load evicted keys 0 to 4 before key 15's insert panicked"
    );
    let again = durable_cache(&tmp.0, 100, Durability::Manual).unwrap();
    assert_eq!(
        again.len(),
        20,
        "the panicked load's evictions reached the log"
    );
    assert_eq!(again.get(&3).as_deref(), Some("v3"));
}

#[test]
fn idle_entries_that_expired_stay_gone_after_close_and_after_drop() {
    // A time-to-idle entry's record has no deadline (reads do not write the log): only a
    // recorded delete keeps it gone after a restart, however the cache was closed, and
    // whether or not a janitor's tick had removed it yet. On a mock clock, so that which
    // entry idled too long does not depend on how the machine schedules this test.
    let ways = [
        "close",
        "drop",
        "close before any tick",
        "drop before any tick",
    ];
    for (i, how) in ways.into_iter().enumerate() {
        let tmp = TempDir::new(&format!("durable-idle{i}"));
        let time = MockClock::new();
        let build = |janitor: bool| -> DurableCache<u64, String> {
            let builder = Cache::builder()
                .max_capacity(100)
                .time_to_idle(Duration::from_millis(50))
                .clock(time.clock());
            let builder = if janitor {
                builder.janitor(Janitor::dedicated(Duration::from_millis(5)))
            } else {
                builder.without_janitor()
            };
            builder
                .durable(&tmp.0)
                .durability(Durability::Manual)
                .build()
                .unwrap()
        };
        let ticks = !how.ends_with("before any tick");
        let cache = build(ticks);
        cache.insert(1, "idle".into()).unwrap();
        cache.insert(2, "read".into()).unwrap();
        for _ in 0..3 {
            time.advance(Duration::from_millis(30));
            assert!(cache.get(&2).is_some(), "{how}: read often enough to stay");
        }
        assert_eq!(cache.get(&1), None, "{how}: idle too long");
        if ticks {
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while cache.len() > 1 && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(cache.len(), 1, "{how}: the janitor removed it");
        } else {
            assert_eq!(cache.len(), 2, "{how}: nothing removed it yet");
        }
        if how.starts_with("close") {
            cache.close().unwrap();
        } else {
            drop(cache);
        }
        let cache = build(true);
        assert_eq!(cache.get(&1), None, "{how}: came back after the restart");
        assert_eq!(cache.get(&2).as_deref(), Some("read"), "{how}");
    }
}

#[test]
fn an_idle_entry_the_janitor_expires_while_the_last_handle_closes_stays_gone() {
    // The core cache's janitor removes an expired entry under its shard's lock and tells the
    // removal observers once the lock is released. A user's observer, set before `.durable`
    // and so called before the durable cache's own (which queues the key for its delete),
    // holds that tick between the two while another thread closes the last handle. The close
    // must wait the tick out: had its last drain run first, the key would be queued once the
    // log was gone, and the idle entry, whose record has no deadline, would come back.
    //
    // The observer gives the close up to a second before it lets the tick go on. With the
    // close waiting for the tick, that second always runs out and the delete is recorded
    // after it; without the wait, the close ends well within it (and the test fails).
    //
    // Another cache on the same janitor keeps its thread serving: the cache's registration is
    // not the janitor's last, whose drop would wait for the thread to end in any case.
    use larder::RemovalCause;
    use std::sync::mpsc;
    let tmp = TempDir::new("durable-idle-last-tick");
    let time = MockClock::new();
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let _other: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(1))
        .janitor(janitor.clone())
        .build()
        .unwrap();
    let (held_tx, held) = mpsc::channel::<()>();
    let (closed_tx, closed) = mpsc::channel::<()>();
    let hold = std::sync::Mutex::new(Some((held_tx, closed)));
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(Duration::from_millis(50))
        .clock(time.clock())
        .janitor(janitor)
        .removal_observer(move |_: &u64, cause| {
            if cause != RemovalCause::Expired {
                return;
            }
            let Some((held_tx, closed)) = hold.lock().unwrap().take() else {
                return;
            };
            held_tx.send(()).unwrap();
            let _ = closed.recv_timeout(Duration::from_secs(1));
        })
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    cache.insert(1, "idle".into()).unwrap();
    time.advance(Duration::from_millis(100));
    held.recv_timeout(Duration::from_secs(20))
        .expect("the janitor expires the entry");
    assert_eq!(
        cache.len(),
        0,
        "out of the table, its delete not yet queued"
    );
    let closer = std::thread::spawn(move || {
        let closed = cache.close();
        let _ = closed_tx.send(());
        closed
    });
    closer.join().unwrap().unwrap();
    let reopened: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(Duration::from_millis(50))
        .clock(MockClock::new().clock())
        .without_janitor()
        .durable(&tmp.0)
        .build()
        .unwrap();
    assert_eq!(
        reopened.get(&1),
        None,
        "an entry expired during the close came back after it"
    );
}

/// An eviction listener may hold a handle of the durable cache and drop it, and on the
/// janitor's thread that handle can be the last. Its close runs inside the janitor's tick,
/// which it cannot wait out, after the tick's batch of expired entries has left the table:
/// the close's last drain must find every one of them queued. They were told to the removal
/// observers entry by entry, each just before the listener, so the listener that closed the
/// log at the batch's first entry came before the observer heard of the others; their
/// deletes were never written, and the idle entries, whose records have no deadline, came
/// back (9 of 10). Now the observers hear the whole batch before any listener.
#[test]
fn a_listener_that_drops_the_last_handle_on_the_janitors_thread_leaves_nothing_expired_to_come_back(
) {
    let tmp = TempDir::new("durable-listener-drops-last");
    let (left, back) =
        common::last_handle_dropped_on_the_janitors_thread(&tmp.0, common::Hook::EvictionListener);
    assert_eq!(left, 0, "the batch took every entry out of the table");
    assert!(
        back.is_empty(),
        "expired before the close, back after it: {back:?}"
    );
}

/// The deadline of the last put of `key`, read from the log's segment files as recovery reads
/// them.
fn logged_deadline(cache: &DurableCache<u64, String>, key: u64) -> u64 {
    let last_put = last_logged(cache, key, true);
    last_put.expect("a put for the key").expect("a put")
}

/// What the log's segments say last of `key` (puts only, with `puts_only`): `Some(deadline)`
/// for a put, `None` for a delete or a clear; `None` outside when nothing names it.
fn last_logged(
    cache: &DurableCache<u64, String>,
    key: u64,
    puts_only: bool,
) -> Option<Option<u64>> {
    let key = postcard::to_allocvec(&key).unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let mut at = None;
    for path in segments {
        let bytes = std::fs::read(&path).unwrap();
        let id = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        for r in larder_log::format::scan(id, &bytes).unwrap().records {
            match r.op() {
                Op::Put {
                    key: k,
                    expires_at_ms,
                    ..
                } if k == &key[..] => at = Some(Some(expires_at_ms)),
                Op::Delete { key: k } if k == &key[..] && !puts_only => at = Some(None),
                Op::Clear if !puts_only => at = Some(None),
                _ => {}
            }
        }
    }
    at
}

#[test]
fn a_second_open_of_the_directory_is_refused() {
    let tmp = TempDir::new("durable-locked");
    let first = open(&tmp.0, 10, Durability::Manual);
    let second: Result<DurableCache<u64, String>, _> =
        Cache::builder().max_capacity(10).durable(&tmp.0).build();
    match second {
        Err(Error::Log(larder_log::Error::Locked { dir })) => assert_eq!(dir, tmp.0),
        other => panic!("{:?}", other.map(|_| ())),
    }
    drop(first);
    open(&tmp.0, 10, Durability::Manual);
}

/// An eviction listener runs while the write that evicted holds its key's stripe (and a
/// `clear` every stripe). One that syncs the cache, or closes a clone of it, recorded the
/// queued evictions first, each under its key's stripe: sooner or later (one key in 64) the
/// write's own, or any under a `clear`, so the thread waited for itself for good ("inserts
/// whose listener syncs and closes a clone never finished"). Now a sync inside a write of the
/// same cache leaves those deletes to that write, which records them before it returns, and
/// only flushes.
#[test]
fn a_listener_that_syncs_the_cache_or_closes_a_clone_does_not_deadlock_its_write() {
    use larder::RemovalCause;
    use std::sync::{mpsc, Arc, Mutex};
    let tmp = TempDir::new("durable-listener-syncs");
    let time = MockClock::new();
    let slot: Arc<Mutex<Option<DurableCache<u64, String>>>> = Arc::default();
    let in_listener = Arc::clone(&slot);
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(10)
        .time_to_idle(Duration::from_millis(50))
        .clock(time.clock())
        .without_janitor()
        .eviction_listener(move |_, _, cause| {
            // Expiry is left queued, for the clear below to meet.
            let clone = in_listener.lock().unwrap().clone();
            if let (Some(clone), false) = (clone, cause == RemovalCause::Expired) {
                clone.sync().unwrap();
                clone.close().unwrap(); // not the last: the writer holds one
            }
        })
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(cache.clone());
    let (done_tx, done) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        // Evictions for room, heard under the inserting write's stripe (in about 290, the
        // chance that no evicted key shares the inserted one's stripe is 1 in 100).
        for k in 0..300u64 {
            cache.insert(k, k.to_string()).unwrap();
        }
        // Idle entries removed, their deletes queued; then a clear, whose removals are
        // heard under every stripe, with those deletes still to record.
        let resident: Vec<u64> = contents(&cache).into_keys().collect();
        assert!(resident.len() >= 2, "{resident:?}");
        time.advance(Duration::from_millis(30));
        for k in &resident[..resident.len() / 2] {
            assert!(cache.get(k).is_some(), "read, to stay");
        }
        time.advance(Duration::from_millis(30));
        cache.run_pending_tasks();
        assert_eq!(cache.len(), resident.len() / 2, "those not read idled out");
        cache.clear().unwrap();
        cache.insert(7, "after the clear".into()).unwrap();
        let held = contents(&cache);
        drop(slot.lock().unwrap().take());
        cache.close().unwrap();
        done_tx.send(held).unwrap();
    });
    let held = match done.recv_timeout(Duration::from_secs(20)) {
        Ok(held) => held,
        // The writer failed an assertion: its panic, not a timeout.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(writer.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("inserts whose listener syncs and closes a clone never finished")
        }
    };
    assert_eq!(held.len(), 1);
    let reopened = open(&tmp.0, 10, Durability::Manual);
    assert_eq!(contents(&reopened), held, "every removal was recorded");
}

/// Handles closed and dropped on several threads while the others write: `close()` on a clone
/// that is not the last syncs and leaves the log open, so the other clones' writes, syncs,
/// compactions and iterations go on; the directory stays locked while any handle lives;
/// whichever close or drop comes last (the threads race for it) syncs and unlocks, so the
/// directory opens again as soon as every thread has returned; and every write acknowledged
/// (each thread's last word on each of its keys) is there, in every mode.
#[test]
fn clones_closed_and_dropped_on_many_threads_lose_no_acknowledged_write() {
    use std::collections::HashMap;
    use std::sync::{Arc, Barrier};
    const THREADS: u64 = 4;
    for (i, mode) in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(1)),
        Durability::Manual,
    ]
    .into_iter()
    .enumerate()
    {
        let tmp = TempDir::new(&format!("durable-clones-closed-{i}"));
        let open = || -> DurableCache<u64, String> {
            Cache::builder()
                .max_capacity(100_000)
                .durable(&tmp.0)
                .durability(mode)
                .compaction(Compaction::Auto {
                    dead_share: 0.3,
                    min_bytes: 0,
                })
                .log_options(LogOptions::default().with_segment_size(4096))
                .build()
                .unwrap()
        };
        let cache = open();
        let start = Arc::new(Barrier::new(THREADS as usize + 1));
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cache, start) = (cache.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut last = HashMap::new();
                    start.wait();
                    for i in 0..300u64 {
                        let key = t * 1000 + i % 50;
                        if i % 7 == 3 {
                            cache.remove(&key).unwrap();
                            last.insert(key, None);
                        } else {
                            cache.insert(key, format!("{t}:{i}")).unwrap();
                            last.insert(key, Some(format!("{t}:{i}")));
                        }
                        match i % 50 {
                            0 => cache.sync().unwrap(),
                            10 => assert!(cache.iter().count() > 0),
                            20 => drop(cache.compact().unwrap()),
                            30 if t == 0 => cache.clone().close().unwrap(),
                            _ => {}
                        }
                    }
                    if t % 2 == 0 {
                        cache.close().unwrap();
                    } else {
                        drop(cache);
                    }
                    last
                })
            })
            .collect();
        let second: Result<DurableCache<u64, String>, _> =
            Cache::builder().max_capacity(10).durable(&tmp.0).build();
        assert!(
            matches!(second, Err(Error::Log(larder_log::Error::Locked { .. }))),
            "{mode:?}: a second open while the handles live: {:?}",
            second.map(|_| ())
        );
        drop(cache); // the writers race for the last close or drop
        start.wait();
        let mut acknowledged = HashMap::new();
        for writer in writers {
            acknowledged.extend(writer.join().unwrap());
        }
        let reopened = open();
        for (key, value) in acknowledged {
            assert_eq!(reopened.get(&key), value, "{mode:?}: key {key}");
        }
    }
}

#[test]
fn records_of_other_types_are_a_clear_error_not_a_panic() {
    let tmp = TempDir::new("durable-types");
    let cache: DurableCache<String, u64> = Cache::builder()
        .max_capacity(10)
        .durable(&tmp.0)
        .build()
        .unwrap();
    cache.insert("forty-two".into(), 42).unwrap();
    drop(cache);
    let wrong: Result<DurableCache<u64, u64>, _> =
        Cache::builder().max_capacity(10).durable(&tmp.0).build();
    let err = wrong.map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Codec {
                what: "key",
                seq: Some(0),
                ..
            }
        ),
        "{err}"
    );
    // Nothing was lost: the right types still open it.
    let cache: DurableCache<String, u64> = Cache::builder()
        .max_capacity(10)
        .durable(&tmp.0)
        .build()
        .unwrap();
    assert_eq!(cache.get("forty-two"), Some(42));
}

/// Each file of `files`, by name, with its length: what an assertion shows of a directory.
fn lengths(files: &BTreeMap<String, Vec<u8>>) -> Vec<(&str, usize)> {
    files
        .iter()
        .map(|(name, bytes)| (&**name, bytes.len()))
        .collect()
}

#[test]
fn an_open_with_other_types_leaves_a_version_1_log_as_it_was() {
    // A log last written by format version 1, reopened by a program that has since changed
    // its value type: the open is refused, and must leave every file as it was. It finished
    // the version 1 file (cut off its zero tail) and created a version 2 segment before the
    // codec's error came back.
    let tmp = TempDir::new("durable-version-1-other-types");
    let cache = open(&tmp.0, 1000, Durability::Manual);
    for k in 0..200u64 {
        cache.insert(k, format!("value {k}")).unwrap();
    }
    cache.close().unwrap();
    // Rewritten as version 1 made the segments: no seal, and the version byte 1.
    for entry in std::fs::read_dir(&tmp.0).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let id = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(seal) = larder_log::format::seal_at_end(id, &bytes) {
                bytes.truncate(seal.offset);
            }
            bytes[8] = 1;
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    let before = files(&tmp.0);
    let wrong: Result<DurableCache<u64, u64>, _> =
        Cache::builder().max_capacity(1000).durable(&tmp.0).build();
    let err = wrong.map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Codec { what: "value", .. }), "{err}");
    let after = files(&tmp.0);
    assert!(
        after == before,
        "the refused open changed the directory: {:?} became {:?}",
        lengths(&before),
        lengths(&after)
    );
    let cache = open(&tmp.0, 1000, Durability::Manual);
    assert_eq!(cache.len(), 200);
    assert_eq!(cache.get(&199).as_deref(), Some("value 199"));
}

/// A log a newer Larder went on with (a segment in a format version past the one this build
/// reads) is refused by a cache built to skip damage, and left as it was: the newer version's
/// records are no damage to drop. Such a cache took the segment's header for damage, came up
/// without its entries, and wrote on past them.
#[test]
fn a_cache_that_skips_damage_refuses_a_log_in_a_newer_format_and_leaves_it_as_it_was() {
    use larder::durable::{LogError, RecoveryMode};
    let newer = larder_log::format::VERSION + 1;
    for which in ["a sealed segment", "the last segment"] {
        let tmp = TempDir::new(&format!("durable-newer-format-{}", which.replace(' ', "-")));
        let cache = open(&tmp.0, 1000, Durability::Manual);
        for k in 0..200u64 {
            cache.insert(k, format!("value {k}")).unwrap();
        }
        cache.close().unwrap();
        let mut segments: Vec<_> = std::fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segments.sort();
        assert!(segments.len() >= 3, "{segments:?}");
        let path = match which {
            "a sealed segment" => segments[1].clone(),
            _ => segments.pop().unwrap(),
        };
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&newer.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let before = files(&tmp.0);
        let skipping: Result<DurableCache<u64, String>, _> = Cache::builder()
            .max_capacity(1000)
            .durable(&tmp.0)
            .recovery(RecoveryMode::SkipCorrupt)
            .log_options(LogOptions::default().with_segment_size(4096))
            .build();
        let err = match skipping {
            Ok(cache) => {
                let len = cache.len();
                cache.close().unwrap();
                panic!(
                    "{which}: opened with {len} of 200 entries; the directory went from {:?} \
                     to {:?}",
                    lengths(&before),
                    lengths(&files(&tmp.0))
                );
            }
            Err(e) => e,
        };
        let refused = match err.log() {
            Some(LogError::NewerFormat { file, version, .. }) => *file == path && *version == newer,
            _ => false,
        };
        assert!(refused, "{which}: {err}");
        let after = files(&tmp.0);
        assert!(
            after == before,
            "{which}: the refused open changed the directory: {:?} became {:?}",
            lengths(&before),
            lengths(&after)
        );
        // Every entry is still there for the version that wrote them (here, this one again).
        bytes[8..12].copy_from_slice(&larder_log::format::VERSION.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let cache = open(&tmp.0, 1000, Durability::Manual);
        assert_eq!(cache.len(), 200, "{which}");
    }
}

/// A value codec that reads the value 13, refuses it, or panics on it: a new version of a
/// codec may refuse what an old one wrote.
#[derive(Clone, Copy, Debug)]
enum OnThirteen {
    Reads,
    Refuses,
    Panics,
}

impl larder::durable::Codec<u64> for OnThirteen {
    fn encode(&self, value: &u64, out: &mut Vec<u8>) -> Result<(), larder::durable::CodecError> {
        out.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<u64, larder::durable::CodecError> {
        let bytes: [u8; 8] = bytes.try_into().map_err(larder::durable::CodecError::new)?;
        match (u64::from_le_bytes(bytes), self) {
            (13, OnThirteen::Panics) => panic!("the codec panics on 13"),
            (13, OnThirteen::Refuses) => Err(larder::durable::CodecError::new("13 is refused")),
            (value, _) => Ok(value),
        }
    }
}

#[test]
fn a_record_the_codec_refuses_leaves_the_directory_as_it_was_in_either_recovery_mode() {
    use larder::durable::RecoveryMode;
    let tmp = TempDir::new("durable-codec-refuses");
    let build = |codec, mode| -> Result<DurableCache<u64, u64>, Error> {
        Cache::builder()
            .max_capacity(1000)
            .durable(&tmp.0)
            .value_codec(codec)
            .recovery(mode)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .log_options(LogOptions::default().with_segment_size(4096))
            .build()
    };
    let cache = build(OnThirteen::Reads, RecoveryMode::Strict).unwrap();
    for k in 0..500u64 {
        cache.insert(k, k).unwrap();
    }
    cache.compact().unwrap(); // 13 in a snapshot part
    for k in 0..20u64 {
        cache.insert(k, k).unwrap(); // and in a segment
    }
    cache.close().unwrap();
    let before = files(&tmp.0);
    for mode in [RecoveryMode::Strict, RecoveryMode::SkipCorrupt] {
        let err = build(OnThirteen::Refuses, mode).map(|_| ()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Codec {
                    what: "value",
                    seq: Some(_),
                    ..
                }
            ),
            "{mode:?}: {err}"
        );
        assert!(
            files(&tmp.0) == before,
            "{mode:?}: the error changed the directory"
        );
        let panicked = std::panic::catch_unwind(|| build(OnThirteen::Panics, mode).map(|_| ()));
        assert!(
            panicked.is_err(),
            "{mode:?}: the codec's panic reaches the caller"
        );
        assert!(
            files(&tmp.0) == before,
            "{mode:?}: the panic changed the directory"
        );
    }
    // Nothing was skipped or compacted away: a codec that reads 13 gets it back.
    let cache = build(OnThirteen::Reads, RecoveryMode::Strict).unwrap();
    assert_eq!(cache.len(), 500);
    assert_eq!(cache.get(&13), Some(13));
}

/// The file, and the offset in it, of the first record an open replays whose value is 13 (as
/// `OnThirteen` encodes it): where a user must look for the record the codec refuses.
fn where_13_is(dir: &Path) -> String {
    let read = larder_log::LogDir::open(dir).unwrap();
    let mut found = None;
    read.replay(|file, record| match record.op() {
        Op::Put { value, .. } if value == 13u64.to_le_bytes() && found.is_none() => {
            let name = file
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            found = Some(format!("{name} at byte {}", record.offset()));
        }
        _ => {}
    })
    .unwrap();
    found.expect("a record of 13")
}

#[test]
fn a_record_the_codec_refuses_is_named_by_its_file_and_offset() {
    // The sequence number alone did not say where the record is: a user could not find the
    // file to look at, or to remove. First in a segment, then in a snapshot part.
    let tmp = TempDir::new("durable-codec-refuses-where");
    let build = |codec| -> Result<DurableCache<u64, u64>, Error> {
        Cache::builder()
            .max_capacity(1000)
            .durable(&tmp.0)
            .value_codec(codec)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .log_options(LogOptions::default().with_segment_size(4096))
            .build()
    };
    let cache = build(OnThirteen::Reads).unwrap();
    for k in 0..100u64 {
        cache.insert(k, k).unwrap();
    }
    cache.close().unwrap();
    for file in ["seg", "snap"] {
        let place = where_13_is(&tmp.0);
        assert!(place.contains(file), "{place}");
        let err = build(OnThirteen::Refuses).map(|_| ()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "durable cache: the value of log record 13, {place}, does not decode: \
                 13 is refused"
            )
        );
        let Error::Codec {
            location: Some(location),
            ..
        } = &err
        else {
            panic!("no location: {err:?}");
        };
        assert_eq!(location.to_string(), place);
        if file == "seg" {
            let cache = build(OnThirteen::Reads).unwrap();
            cache.compact().unwrap(); // 13 in a snapshot part now
            cache.close().unwrap();
        }
    }
}

#[test]
fn a_type_change_postcard_can_read_opens_with_the_values_read_as_the_new_type() {
    // Postcard records no types: `build` documents that such a change is no error.
    let tmp = TempDir::new("durable-types-that-decode");
    let cache: DurableCache<u64, (i32, Result<u8, u16>)> = Cache::builder()
        .max_capacity(10)
        .durable(&tmp.0)
        .build()
        .unwrap();
    cache.insert(1, (-1, Ok(7))).unwrap();
    cache.close().unwrap();
    // The field now unsigned, the `Result`'s payload types swapped (as an enum's variants
    // reordered would be read).
    let reopened: DurableCache<u64, (u32, Result<u16, u8>)> = Cache::builder()
        .max_capacity(10)
        .durable(&tmp.0)
        .build()
        .unwrap();
    assert_eq!(reopened.get(&1), Some((1, Ok(7))));
}

#[test]
fn intervals_under_a_millisecond_are_refused() {
    let tmp = TempDir::new("durable-short-interval");
    let build = |every| -> Result<DurableCache<u64, u64>, _> {
        Cache::builder()
            .max_capacity(10)
            .durable(&tmp.0)
            .durability(Durability::Interval(every))
            .build()
    };
    for short in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(500),
        Duration::from_nanos(999_999),
    ] {
        match build(short) {
            Err(e @ Error::IntervalTooShort { interval }) => {
                assert_eq!(interval, short);
                let message = e.to_string();
                assert!(
                    message.contains(&format!("{short:?}")) && message.contains("1 ms"),
                    "{message}"
                );
            }
            other => panic!("Durability::Interval({short:?}) was built: {other:?}"),
        }
    }
    // The shortest allowed builds.
    build(Durability::MIN_INTERVAL).unwrap();
}

#[test]
fn an_empty_directory_path_is_refused() {
    // From a directory of the test's own, so that a cache opened by mistake in the current
    // directory shows there (every other test here uses absolute paths).
    let tmp = TempDir::new("durable-empty-path");
    std::fs::create_dir_all(&tmp.0).unwrap();
    std::env::set_current_dir(&tmp.0).unwrap();
    let built: Result<DurableCache<u64, u64>, _> = Cache::builder()
        .max_capacity(10)
        .durable("")
        .durability(Durability::Manual)
        .build();
    match built {
        Err(e @ Error::Log(larder_log::Error::EmptyPath)) => {
            assert!(e.to_string().contains("path is empty"), "{e}");
        }
        other => panic!("a durable cache opened at an empty path: {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().collect();
    assert!(left.is_empty(), "files were made in the current directory");
}

/// Encodes strings as their bytes, but refuses the empty one.
struct NoEmpty;

impl larder::durable::Codec<String> for NoEmpty {
    fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), larder::durable::CodecError> {
        if value.is_empty() {
            return Err(larder::durable::CodecError::new("an empty value"));
        }
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, larder::durable::CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(larder::durable::CodecError::new)
    }
}

#[test]
fn an_insert_the_codec_refuses_hands_its_key_and_value_back() {
    let tmp = TempDir::new("durable-refused-value");
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(10)
        .durable(&tmp.0)
        .value_codec(NoEmpty)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    cache.insert(1, "one".into()).unwrap();
    let refused = cache.insert(1, String::new()).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Codec { what: "value", .. }),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("could not encode a value"),
        "{refused}"
    );
    assert_eq!(refused.entry(), Some((&1, &String::new())));
    assert_eq!(refused.into_inner(), Some((1, String::new())));
    assert_eq!(
        cache.get(&1).as_deref(),
        Some("one"),
        "the cache is unchanged"
    );
    // `?` turns it into the plain error.
    let plain = || -> Result<(), Error> {
        cache.insert(2, String::new())?;
        Ok(())
    };
    assert!(matches!(plain(), Err(Error::Codec { .. })));
}

#[test]
fn raw_bytes_are_stored_untouched() {
    let tmp = TempDir::new("durable-raw");
    let cache: DurableCache<Vec<u8>, Vec<u8>> = Cache::builder()
        .max_capacity(10)
        .durable(&tmp.0)
        .key_codec(RawBytes)
        .value_codec(RawBytes)
        .build()
        .unwrap();
    cache
        .insert(b"key".to_vec(), b"\x00\xffvalue".to_vec())
        .unwrap();
    drop(cache);
    let mut seen = Vec::new();
    larder_log::Log::open(&tmp.0, Default::default(), |r| {
        if let Op::Put { key, value, .. } = r.op() {
            seen.push((key.to_vec(), value.to_vec()));
        }
    })
    .unwrap();
    assert_eq!(seen, vec![(b"key".to_vec(), b"\x00\xffvalue".to_vec())]);
}

#[test]
fn concurrent_always_writers_share_syncs() {
    let tmp = TempDir::new("durable-group");
    let cache = open(&tmp.0, 100_000, Durability::Always);
    let threads = 8u64;
    let per = 100u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let cache = cache.clone();
            s.spawn(move || {
                for i in 0..per {
                    cache.insert(t * 1000 + i, format!("{t}/{i}")).unwrap();
                }
            });
        }
    });
    let flushes = cache.flushes();
    assert!(
        flushes < threads * per,
        "{flushes} flushes for {} writes",
        threads * per
    );
    assert!(flushes > 0);
    let before = contents(&cache);
    assert_eq!(before.len() as u64, threads * per);
    drop(cache);
    assert_eq!(contents(&open(&tmp.0, 100_000, Durability::Always)), before);
}

#[test]
fn the_interval_janitor_syncs_without_being_asked() {
    let tmp = TempDir::new("durable-interval");
    let cache = open(&tmp.0, 100, Durability::Interval(Duration::from_millis(20)));
    cache.insert(1, "one".into()).unwrap();
    let start = std::time::Instant::now();
    while cache.flushes() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no interval sync"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_failing_disk_is_an_error_and_refused_writes_change_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = TempDir::new("durable-eio");
    let broken = Arc::new(AtomicBool::new(false));
    let hook = Arc::clone(&broken);
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .durable(&tmp.0)
        .durability(Durability::Always)
        .log_options(LogOptions::default().with_io_hook(move |call| {
            if call == IoCall::Flush && hook.load(Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(5)) // EIO
            } else {
                Ok(())
            }
        }))
        .build()
        .unwrap();
    cache.insert(1, "durable".into()).unwrap();
    broken.store(true, Ordering::SeqCst);
    // The sync fails: the caller is told, though the entry is in memory (and in the page
    // cache, so it is not lost to a process crash).
    let unsynced = cache.insert(2, "unsynced".into()).unwrap_err();
    match unsynced.error() {
        Error::Log(larder_log::Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(5)),
        other => panic!("{other:?}"),
    }
    assert!(
        unsynced.into_inner().is_none(),
        "the entry is in the cache, not handed back"
    );
    assert_eq!(cache.get(&2).as_deref(), Some("unsynced"));
    broken.store(false, Ordering::SeqCst);
    // From then on every write is refused before it changes the cache, and nothing retries.
    // A refused insert hands its key and value back.
    let refused = cache.insert(3, "refused".into()).unwrap_err();
    assert!(
        matches!(
            refused.error(),
            Error::Log(larder_log::Error::Failed { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(refused.into_inner(), Some((3, "refused".to_string())));
    for result in [
        cache.remove(&1).map(drop),
        // An absent key's delete is refused too.
        cache.remove(&99).map(drop),
        cache.clear(),
        cache.sync(),
    ] {
        assert!(
            matches!(result, Err(Error::Log(larder_log::Error::Failed { .. }))),
            "{result:?}"
        );
    }
    assert_eq!(cache.get(&3), None);
    assert_eq!(cache.get(&1).as_deref(), Some("durable"));
    drop(cache); // its last sync fails too: reported through tracing, no panic
    let cache = open(&tmp.0, 100, Durability::Manual);
    assert_eq!(cache.get(&1).as_deref(), Some("durable"));
    assert_eq!(cache.get(&3), None);
}

/// A cache in `dir` whose entries live a minute on a mock clock, with a [`FailsOnSecond13`]
/// key codec (panicking if `panics`), holding `key`. The first flush from now on (a close's
/// own) ends the minute, as the wall clock moves during a slow `msync`, between the close's
/// sync and the last drain; with `failing`, every flush after that one fails (EIO).
fn closing_as_it_expires(
    dir: &Path,
    key: u64,
    panics: bool,
    failing: bool,
) -> DurableCache<u64, String> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let time = MockClock::new();
    let armed = Arc::new(AtomicBool::new(false));
    let flushes = AtomicUsize::new(0);
    let hook_armed = Arc::clone(&armed);
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .clock(time.clock())
        .without_janitor()
        .durable(dir)
        .key_codec(FailsOnSecond13 {
            panics,
            encoded: AtomicUsize::new(0),
        })
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .log_options(LogOptions::default().with_io_hook(move |call| {
            if call != IoCall::Flush || !hook_armed.load(Ordering::SeqCst) {
                return Ok(());
            }
            if flushes.fetch_add(1, Ordering::SeqCst) == 0 {
                time.advance(Duration::from_secs(61));
                Ok(())
            } else if failing {
                Err(std::io::Error::from_raw_os_error(5))
            } else {
                Ok(())
            }
        }))
        .build()
        .unwrap();
    cache
        .insert(key, "expires while the cache closes".into())
        .unwrap();
    armed.store(true, Ordering::SeqCst);
    cache
}

/// `close()` on the last handle reports the failure of the log's last sync. Its own sync came
/// first; the handle's drop then expired what had come due since, recorded the deletes and
/// synced again, and that sync's error was only logged: `close()` returned `Ok` with the
/// deletes not durable (after an OS crash, an entry with a time-to-idle, whose record has no
/// deadline, comes back). The first flush, close's own, succeeds here: the error is the last.
#[test]
fn close_of_the_last_handle_reports_the_failure_of_the_last_sync() {
    let tmp = TempDir::new("durable-close-last-sync");
    let closed = closing_as_it_expires(&tmp.0, 1, false, true).close();
    match closed {
        Err(Error::Log(larder_log::Error::Io(e))) => assert_eq!(e.raw_os_error(), Some(5)),
        other => panic!("close() returned {other:?} though its last flush failed"),
    }
}

/// As above, with the key codec refusing the last delete: `close()` returned `Ok`, and the
/// error was only logged.
#[test]
fn close_of_the_last_handle_reports_a_codec_error_in_the_last_drain() {
    let tmp = TempDir::new("durable-close-last-drain");
    let closed = closing_as_it_expires(&tmp.0, 13, false, false).close();
    assert!(
        matches!(closed, Err(Error::Codec { what: "key", .. })),
        "close() returned {closed:?} though the last delete was refused"
    );
}

/// A key codec that panics on the last delete panics `close()`, as it would panic a `sync()`,
/// and the log is synced and closed all the same (by the handle's drop, as the panic unwinds):
/// the directory opens again at once.
#[test]
fn close_of_the_last_handle_lets_a_codec_panic_through_and_closes_the_log() {
    let tmp = TempDir::new("durable-close-last-panic");
    let cache = closing_as_it_expires(&tmp.0, 13, true, false);
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.close()));
    assert!(closed.is_err(), "close() returned {closed:?}");
    let reopened = Cache::<u64, String>::builder()
        .max_capacity(100)
        .durable(&tmp.0)
        .key_codec(FailsOnSecond13 {
            panics: true,
            encoded: std::sync::atomic::AtomicUsize::new(0),
        })
        .durability(Durability::Manual)
        .build();
    assert!(reopened.is_ok(), "{:?}", reopened.err());
}

#[test]
fn a_large_live_set_loads_on_two_threads_and_comes_back_whole() {
    // Above the size at which recovery loads on two threads (64 Ki entries).
    let tmp = TempDir::new("durable-large");
    let n = 70_000u64;
    let cache = open(&tmp.0, 2 * n, Durability::Manual);
    for k in 0..n {
        cache.insert(k, format!("v{k}")).unwrap();
    }
    let before = contents(&cache);
    cache.close().unwrap();
    let cache = open(&tmp.0, 2 * n, Durability::Manual);
    assert_eq!(contents(&cache), before);
    drop(cache);
    // Reopened smaller, the policy evicts as it loads; what it evicted stays gone after the
    // next reopen too.
    let small = open(&tmp.0, n / 2, Durability::Manual);
    // Counted by `iter()`: `len()` of an unweighted cache reports at most the capacity.
    let kept = contents(&small);
    assert!(kept.len() as u64 <= n / 2, "{} kept", kept.len());
    drop(small);
    assert_eq!(contents(&open(&tmp.0, 2 * n, Durability::Manual)), kept);
}

/// The claim of `Live::load_into`, exactly: a reopen too small for the live set keeps what a
/// cache of the same hasher, shard count, policy and weigher keeps when the live set is inserted
/// into it in write order, on one thread. So each shard must see its survivors in write order
/// (a shard's survivors loaded reversed fail it, and so do runs of 64 of them each reversed,
/// which a check of the boundary Lru draws alone let pass), and S3-FIFO's queues, ghosts and
/// sketch, whose survivors are not simply the latest writes, must not depend on the order
/// across shards. Keys are
/// written out of key order, some put again and some deleted, so that write order is neither
/// key order nor the order of first puts; and the live sets are above and below the size that
/// loads on two threads (`PARALLEL_LOAD` in `live.rs`, 65,536), with one shard (the second
/// thread idle), an odd shard count, and a weigher (the load then asks the cache about each
/// key, which must not count as a read).
#[test]
fn a_reopen_too_small_keeps_what_one_thread_loading_in_write_order_keeps() {
    type Fixed = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
    // (policy, shards, weighted, keys written: each put once, a tenth put again, a seventh
    // deleted).
    let cases = [
        (Policy::Lru, 1, false, 80_000u64),
        (Policy::S3Fifo, 5, false, 80_000),
        (Policy::S3Fifo, 3, true, 6_000),
        (Policy::Lru, 4, false, 6_000),
    ];
    let mut wrong = Vec::new();
    for (policy, shards, weighted, n) in cases {
        let tmp = TempDir::new("durable-load-as-one-thread");
        let builder = |capacity: u64| {
            let builder = Cache::builder()
                .max_capacity(capacity)
                .shards(shards)
                .policy(policy)
                .hasher(Fixed::default());
            if weighted {
                builder.weigher(|_, v: &String| v.len() as u32)
            } else {
                builder
            }
        };
        // Room for every value, up to 7 bytes each: nothing is evicted while writing.
        let cache: DurableCache<u64, String, Fixed> = builder(8 * n)
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .build()
            .unwrap();
        // Key to the sequence number of its last put and its value.
        let mut model: BTreeMap<u64, (u64, String)> = BTreeMap::new();
        let mut seq = 0;
        let mut put = |key: u64, model: &mut BTreeMap<u64, (u64, String)>| {
            let value = format!("v{}", key * (seq % 7 + 1));
            cache.insert(key, value.clone()).unwrap();
            model.insert(key, (seq, value));
            seq += 1;
        };
        // 48,271 is prime, so `i * 48,271 % n` runs through every key once, out of order.
        for i in 0..n {
            put(i * 48_271 % n, &mut model);
        }
        for i in 0..n {
            let key = i * 48_271 % n;
            if key.is_multiple_of(10) {
                put(key, &mut model);
            }
            if key % 7 == 3 {
                cache.remove(&key).unwrap();
                model.remove(&key);
            }
        }
        assert_eq!(cache.len(), model.len(), "nothing evicted while writing");
        cache.close().unwrap();
        let mut survivors: Vec<(u64, (u64, String))> = model.into_iter().collect();
        survivors.sort_by_key(|(_, (seq, _))| *seq);
        let weight: u64 = survivors
            .iter()
            .map(|(_, (_, v))| if weighted { v.len() as u64 } else { 1 })
            .sum();
        let reference: Cache<u64, String, Fixed> = builder(weight / 2).build().unwrap();
        reference.reserve(survivors.len());
        for (key, (_, value)) in survivors {
            reference.insert(key, value);
        }
        let want: BTreeMap<u64, String> = reference.iter().collect();
        let reopened: DurableCache<u64, String, Fixed> = builder(weight / 2)
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .build()
            .unwrap();
        let got: BTreeMap<u64, String> = reopened.iter().collect();
        let differ = want.keys().filter(|k| !got.contains_key(k)).count()
            + got.keys().filter(|k| !want.contains_key(k)).count();
        if got != want {
            wrong.push(format!(
                "{policy:?}, {shards} shards, weighted: {weighted}: {differ} of the {} and {} \
                 keys kept differ",
                got.len(),
                want.len()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "kept otherwise than by one thread loading in write order: {wrong:?}"
    );
}

/// The threads of this process named `name` (Linux: `/proc/self/task/*/comm`).
#[cfg(target_os = "linux")]
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn each_durable_cache_has_a_prefault_thread_that_stops_when_it_closes() {
    let tmp = TempDir::new("durable-prefault-thread");
    for round in 0..100u64 {
        let cache = open(&tmp.0, 1000, Durability::Manual);
        cache.insert(round, round.to_string()).unwrap();
        if round == 0 {
            // A new thread names itself once it runs, so give it a moment.
            let started = std::time::Instant::now();
            while threads_named("larder-prefault") == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "an open durable cache runs a prefault thread"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if round % 2 == 0 {
            cache.close().unwrap();
        } else {
            drop(cache);
        }
    }
    // Tests run in parallel, so other durable caches may be open now; a thread left behind by
    // each of the hundred caches above would make far more.
    let left = threads_named("larder-prefault");
    assert!(left <= 8, "{left} prefault threads outlived their caches");
}

/// Runs this test binary's ignored test `child` alone, as a child process whose `env` variable
/// names `dir`, and checks that it exited successfully: the child ends with
/// `std::process::exit`, so its cache is never closed or dropped, as in a crash.
fn run_child(child: &str, env: &str, dir: &Path) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            child,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the child {child} failed: {status}");
}

/// Where [`removing_an_idle_entry_that_expired_child`] keeps its cache; set only in that child.
const IDLE_CHILD_DIR: &str = "LARDER_DURABLE_IDLE_CHILD_DIR";

/// A cache whose entries idle out after 50 ms of `time`, with no janitor, in `dir`.
fn idle_cache(dir: &Path, time: &MockClock) -> DurableCache<u64, String> {
    Cache::builder()
        .max_capacity(100)
        .time_to_idle(Duration::from_millis(50))
        .clock(time.clock())
        .without_janitor()
        .durable(dir)
        .durability(Durability::Manual)
        .build()
        .unwrap()
}

/// The child process of the test below: removes an entry that has idled out but that nothing
/// removed from the table yet, and dies at once, as a crash would (no destructor runs, so the
/// last handle's drop records nothing).
#[test]
#[ignore = "the child process of an_idle_entry_that_expired_and_was_removed_stays_gone_after_a_crash"]
fn removing_an_idle_entry_that_expired_child() {
    let Ok(dir) = std::env::var(IDLE_CHILD_DIR) else {
        return; // run with `--ignored`, but not as a child: nothing to do
    };
    let time = MockClock::new();
    let cache = idle_cache(Path::new(&dir), &time);
    cache.insert(1, "idle".into()).unwrap();
    time.advance(Duration::from_millis(100));
    assert_eq!(cache.remove(&1).unwrap(), None, "it had expired");
    std::process::exit(0);
}

#[test]
fn an_idle_entry_that_expired_and_was_removed_stays_gone_after_a_crash() {
    // A time-to-idle entry's record has no deadline, so only a delete keeps it gone after a
    // restart. An entry that has idled out reads as absent before the janitor removes it from
    // the table; a `remove` of it that returned `Ok` must still record its delete, or a crash
    // (before any tick or clean shutdown records the expiry) brings it back.
    let tmp = TempDir::new("durable-idle-remove");
    run_child(
        "removing_an_idle_entry_that_expired_child",
        IDLE_CHILD_DIR,
        &tmp.0,
    );
    let cache = idle_cache(&tmp.0, &MockClock::new());
    assert_eq!(
        cache.get(&1),
        None,
        "a removed entry came back after a crash"
    );
}
#[test]
fn an_always_remove_of_an_absent_key_waits_for_the_delete_that_made_it_absent() {
    // With `Durability::Always`, `remove` returns once the key's absence is on stable storage.
    // When another thread's delete of the key is appended and applied but its flush is still
    // running, a second `remove` finds the key absent; returning at once would acknowledge an
    // absence a power loss can undo. Thread `slow` removes the key and leads a flush that
    // blocks until released; the second remove must return only after that flush.
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    let tmp = TempDir::new("durable-absent-always");
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let (entered_tx, released) = (Mutex::new(Some(entered_tx)), Mutex::new(released));
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .durable(&tmp.0)
        .durability(Durability::Always)
        .log_options(LogOptions::default().with_io_hook(move |call| {
            let slow = std::thread::current().name() == Some("slow");
            if slow && call == IoCall::Flush {
                if let Some(tx) = entered_tx.lock().unwrap().take() {
                    tx.send(()).unwrap();
                    released.lock().unwrap().recv().unwrap();
                }
            }
            Ok(())
        }))
        .build()
        .unwrap();
    cache.insert(1, "one".into()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        let slow = std::thread::Builder::new()
            .name("slow".into())
            .spawn_scoped(s, || cache.remove(&1).unwrap())
            .unwrap();
        entered.recv().unwrap(); // its delete is applied; its flush has begun
        let second = s.spawn(|| {
            let old = cache.remove(&1).unwrap();
            events.lock().unwrap().push("second remove returned");
            old
        });
        // Time for a second remove that does not wait to return.
        std::thread::sleep(Duration::from_millis(200));
        events.lock().unwrap().push("flush released");
        release.send(()).unwrap();
        assert_eq!(slow.join().unwrap().as_deref(), Some("one"));
        assert_eq!(second.join().unwrap(), None);
    });
    assert_eq!(
        *events.lock().unwrap(),
        ["flush released", "second remove returned"],
        "the second remove was acknowledged before the delete was durable"
    );
}

/// A key that can hold a thread up at chosen moments of [`an_insert_returns_only_once_the_deletes_of_its_evictions_are_appended`]:
/// the removal observer's clone of the second key an insert on thread `evictor` evicts, and the
/// stripe's hash of key 1 on thread `drainer`.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Gated(u64);

/// The moments a [`Gated`] key waits at, each once: the thread says it has arrived, then waits
/// to be released.
struct Gates {
    clones_on_evictor: std::sync::atomic::AtomicUsize,
    armed: std::sync::atomic::AtomicBool,
    evictor: Gate,
    drainer: Gate,
}

struct Gate {
    arrived: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Gate {
    /// The gate, the receiver of its arrival and the sender of its release.
    fn new() -> (
        Gate,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (arrived, on_arrival) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let gate = Gate {
            arrived: std::sync::Mutex::new(Some(arrived)),
            release: std::sync::Mutex::new(released),
        };
        (gate, on_arrival, release)
    }

    /// Waits here the first time only.
    fn pass(&self) {
        let arrived = self.arrived.lock().unwrap().take();
        if let Some(arrived) = arrived {
            arrived.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
    }
}

static GATES: std::sync::OnceLock<Gates> = std::sync::OnceLock::new();

impl Clone for Gated {
    fn clone(&self) -> Self {
        if let Some(gates) = GATES.get() {
            let on_evictor = std::thread::current().name() == Some("evictor");
            if on_evictor && gates.armed.load(std::sync::atomic::Ordering::SeqCst) {
                let n = gates
                    .clones_on_evictor
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n == 1 {
                    gates.evictor.pass();
                }
            }
        }
        Gated(self.0)
    }
}

impl std::hash::Hash for Gated {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        if let Some(gates) = GATES.get() {
            let on_drainer = std::thread::current().name() == Some("drainer");
            if on_drainer && self.0 == 1 && gates.armed.load(std::sync::atomic::Ordering::SeqCst) {
                gates.drainer.pass();
            }
        }
        self.0.hash(state);
    }
}

impl serde::Serialize for Gated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Gated {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Gated)
    }
}

#[test]
fn an_insert_returns_only_once_the_deletes_of_its_evictions_are_appended() {
    // An insert that evicts entries appends their deletes before it returns (DURABILITY.md,
    // "Three limits"), or a crash right after it returns brings the evicted entries back. The
    // keys wait in a queue that any write drains: here thread `drainer` takes the first key
    // thread `evictor`'s insert evicted, while `evictor` is still reporting the second, and
    // is held before it appends the first's delete. `evictor`'s insert must not return before
    // that delete is appended: a copy of the directory made as it returns is what a crash then
    // leaves, and must reopen without the evicted entries.
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let tmp = TempDir::new("durable-evicted-drained-elsewhere");
    let copy = TempDir::new("durable-evicted-drained-elsewhere-copy");
    let (evictor, evictor_arrived, release_evictor) = Gate::new();
    let (drainer, drainer_arrived, release_drainer) = Gate::new();
    let gates = GATES.get_or_init(|| Gates {
        clones_on_evictor: AtomicUsize::new(0),
        armed: AtomicBool::new(false),
        evictor,
        drainer,
    });
    let cache: DurableCache<Gated, String> = Cache::builder()
        .max_capacity(2)
        .shards(1)
        .policy(larder::Policy::Lru)
        .weigher(|k: &Gated, _: &String| if k.0 == 100 { 2 } else { 1 })
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .log_options(LogOptions::default().with_segment_size(4096))
        .build()
        .unwrap();
    cache.insert(Gated(1), "one".into()).unwrap();
    cache.insert(Gated(2), "two".into()).unwrap();
    gates.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let returned_at = std::sync::Mutex::new(None);
    let waited = std::thread::scope(|s| {
        let evicting = std::thread::Builder::new()
            .name("evictor".into())
            .spawn_scoped(s, || {
                // Weighs the whole capacity: evicts both 1 and 2.
                cache.insert(Gated(100), "hundred".into()).unwrap();
                // What a crash now would leave: the files as the page cache holds them.
                for entry in std::fs::read_dir(&tmp.0).unwrap() {
                    let path = entry.unwrap().path();
                    std::fs::create_dir_all(&copy.0).unwrap();
                    std::fs::copy(&path, copy.0.join(path.file_name().unwrap())).unwrap();
                }
                *returned_at.lock().unwrap() = Some(std::time::Instant::now());
            })
            .unwrap();
        evictor_arrived.recv().unwrap(); // the first evicted key is queued

        // A `sync`, not a write: a write would first take its key's stripe, which `evictor`
        // holds while it reports its evictions if the two keys share one (1 run in 64, when
        // this was a `remove`; the test then waited for ever).
        let draining = std::thread::Builder::new()
            .name("drainer".into())
            .spawn_scoped(s, || cache.sync().unwrap())
            .unwrap();
        drainer_arrived.recv().unwrap(); // it took the queue and holds the key's delete
        release_evictor.send(()).unwrap();
        // Time for an insert that does not wait to return.
        std::thread::sleep(Duration::from_millis(200));
        let released_at = std::time::Instant::now();
        release_drainer.send(()).unwrap();
        evicting.join().unwrap();
        draining.join().unwrap();
        let returned_at = returned_at.lock().unwrap().unwrap();
        returned_at > released_at
    });
    let keys: Vec<u64> = cache.iter().map(|(k, _)| k.0).collect();
    assert_eq!(keys, [100]);
    drop(cache);
    let crashed: DurableCache<Gated, String> = Cache::builder()
        .max_capacity(100)
        .durable(&copy.0)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    let mut keys: Vec<u64> = crashed.iter().map(|(k, _)| k.0).collect();
    keys.sort_unstable();
    assert_eq!(keys, [100], "an evicted entry came back after a crash");
    assert!(
        waited,
        "the insert returned before the delete of an entry it evicted was appended"
    );
}

/// Where [`a_delete_left_unsynced_by_a_crash_child`] keeps its cache; set only in that child.
const UNSYNCED_CHILD_DIR: &str = "LARDER_DURABLE_UNSYNCED_CHILD_DIR";

/// The child process of the test below: removes a synced entry in `Manual` mode, so that the
/// delete is in the page cache only, and dies at once, as a crash would.
#[test]
#[ignore = "the child process of an_always_remove_after_a_reopen_syncs_the_replayed_delete"]
fn a_delete_left_unsynced_by_a_crash_child() {
    let Ok(dir) = std::env::var(UNSYNCED_CHILD_DIR) else {
        return; // run with `--ignored`, but not as a child: nothing to do
    };
    let cache = open(Path::new(&dir), 100, Durability::Manual);
    cache.insert(1, "one".into()).unwrap();
    cache.sync().unwrap();
    assert_eq!(cache.remove(&1).unwrap().as_deref(), Some("one"));
    std::process::exit(0);
}

#[test]
fn an_always_remove_after_a_reopen_syncs_the_replayed_delete() {
    // After a process crash, the records the next open replays from the active segment may be
    // pages the dead process left dirty in the page cache: nothing says they are on stable
    // storage. A `remove` in `Always` mode that finds its key absent because of such a delete
    // acknowledges the absence, so it must flush it first, or a power loss brings the key
    // back.
    let tmp = TempDir::new("durable-unsynced-replay");
    run_child(
        "a_delete_left_unsynced_by_a_crash_child",
        UNSYNCED_CHILD_DIR,
        &tmp.0,
    );
    let cache = open(&tmp.0, 100, Durability::Always);
    assert_eq!(cache.remove(&1).unwrap(), None);
    assert_eq!(
        cache.flushes(),
        1,
        "the remove acknowledged a replayed delete without flushing it"
    );
}

#[test]
fn a_sync_after_a_failed_append_is_refused_in_every_mode() {
    // A full disk fails an append (ENOSPC from the reservation of the next segment): the log
    // is failed, and every later write and sync says so (DURABILITY.md, "A failed sync is
    // never retried"), even when everything appended before was synced already, so that
    // nothing is left for a flush to do.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    for (i, mode) in [
        Durability::Always,
        Durability::Manual,
        Durability::Interval(Duration::from_secs(3600)),
    ]
    .into_iter()
    .enumerate()
    {
        let tmp = TempDir::new(&format!("durable-enospc-sync-{i}"));
        let full = Arc::new(AtomicBool::new(false));
        let hook = Arc::clone(&full);
        let cache: DurableCache<u64, String> =
            Cache::builder()
                .max_capacity(1000)
                .durable(&tmp.0)
                .durability(mode)
                .log_options(LogOptions::default().with_segment_size(4096).with_io_hook(
                    move |call| {
                        if call == IoCall::Reserve && hook.load(Ordering::SeqCst) {
                            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
                        } else {
                            Ok(())
                        }
                    },
                ))
                .build()
                .unwrap();
        cache.insert(0, "synced".into()).unwrap();
        cache.sync().unwrap();
        full.store(true, Ordering::SeqCst);
        // Appends go on in the space reserved, until the roll to the next segment. Each is
        // synced, so that the sync after the failure has nothing left to flush.
        let mut key = 1;
        let refused = loop {
            match cache.insert(key, "x".repeat(100)) {
                Ok(()) => key += 1,
                Err(e) => break e,
            }
            cache.sync().unwrap();
        };
        assert!(
            refused.into_inner().is_some(),
            "{mode:?}: the refused entry is handed back"
        );
        full.store(false, Ordering::SeqCst);
        let synced = cache.sync();
        assert!(
            matches!(synced, Err(Error::Log(larder_log::Error::Failed { .. }))),
            "{mode:?}: a sync of a failed log returned {synced:?}"
        );
    }
}

/// Encodes `u64` keys as little-endian bytes, and fails the second encoding of key 13 (the
/// first is its insert's put; the second, the delete of its expiry): with a panic if `panics`,
/// else with an error.
struct FailsOnSecond13 {
    panics: bool,
    encoded: std::sync::atomic::AtomicUsize,
}

impl larder::durable::Codec<u64> for FailsOnSecond13 {
    fn encode(&self, key: &u64, out: &mut Vec<u8>) -> Result<(), larder::durable::CodecError> {
        use std::sync::atomic::Ordering;
        if *key == 13 && self.encoded.fetch_add(1, Ordering::SeqCst) == 1 {
            if self.panics {
                panic!("a codec that panics");
            }
            return Err(larder::durable::CodecError::new("key 13 again"));
        }
        out.extend_from_slice(&key.to_le_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<u64, larder::durable::CodecError> {
        let bytes: [u8; 8] = bytes.try_into().map_err(larder::durable::CodecError::new)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

/// Opens a cache in `dir` whose entries live 30 ms, with a janitor ticking every 5 ms and a
/// [`FailsOnSecond13`] key codec; inserts key 13 and returns once the janitor has removed it,
/// which queues its delete (the codec's second encoding of 13, when something records it).
fn with_13_expired(dir: &Path, panics: bool, durability: Durability) -> DurableCache<u64, String> {
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_millis(30))
        .janitor(Janitor::dedicated(Duration::from_millis(5)))
        .durable(dir)
        .key_codec(FailsOnSecond13 {
            panics,
            encoded: std::sync::atomic::AtomicUsize::new(0),
        })
        .durability(durability)
        .build()
        .unwrap();
    cache.insert(13, "thirteen".into()).unwrap();
    let start = std::time::Instant::now();
    while !cache.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "key 13 never expired"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cache
}

/// `sync` records the deletes queued since the last write, then syncs. When recording fails
/// (here the key codec refuses an expired key), the writes before it are synced all the same,
/// and the error is returned; before, `sync` returned the error without syncing anything.
#[test]
fn a_sync_whose_deletes_fail_to_record_still_syncs() {
    let tmp = TempDir::new("durable-sync-after-failed-drain");
    // In `Manual` nothing records key 13's delete before the sync.
    let cache = with_13_expired(&tmp.0, false, Durability::Manual);
    let before = cache.flushes();
    let synced = cache.sync();
    assert!(
        matches!(synced, Err(Error::Codec { what: "key", .. })),
        "the codec's refusal is reported: {synced:?}"
    );
    assert!(cache.flushes() > before, "the writes before it were synced");
}

/// The janitor stops serving a registrant whose tick panics, so a codec's panic in the
/// interval sync (recording an expired key's delete) used to end that cache's interval syncs
/// and compactions for good, silently. The panic is now logged and the next tick goes on.
#[test]
fn a_codec_that_panics_in_the_janitors_sync_does_not_end_the_interval_syncs() {
    let tmp = TempDir::new("durable-codec-panics-in-sync");
    // The janitor's next sync records key 13's delete and the codec panics.
    let cache = with_13_expired(
        &tmp.0,
        true,
        Durability::Interval(Duration::from_millis(10)),
    );
    std::thread::sleep(Duration::from_millis(100));
    let before = cache.flushes();
    cache.insert(1, "one".into()).unwrap();
    let start = std::time::Instant::now();
    while cache.flushes() == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no interval sync after the codec's panic"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `tracing` errors that mention a flush that timed out, from every thread (the
/// janitor's included, which a subscriber set for one thread would miss). No other test fails
/// a flush with `TimedOut`: these are `a_failed_log_is_reported_once_not_at_every_interval_sync`'s.
static TIMED_OUT_ERRORS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A failed log stays failed, so every interval sync after the failure is refused: the
/// failure is logged once, not at every tick. It was logged at every tick, forever: at 1 ms,
/// a thousand error lines a second (about 460 in half a second here), at the default interval
/// one a second for the rest of the process's life. Automatic compaction already kept quiet
/// on a failed log; the interval sync did not.
#[test]
fn a_failed_log_is_reported_once_not_at_every_interval_sync() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    larder_testkit::errors::CountErrorsMentioning {
        needle: "timed out",
        count: &TIMED_OUT_ERRORS,
    }
    .install();
    let tmp = TempDir::new("durable-failed-interval");
    let broken = Arc::new(AtomicBool::new(false));
    let hook = Arc::clone(&broken);
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .durable(&tmp.0)
        .durability(Durability::Interval(Duration::from_millis(1)))
        .compaction(Compaction::Manual)
        .log_options(LogOptions::default().with_io_hook(move |call| {
            if call == IoCall::Flush && hook.load(Ordering::SeqCst) {
                Err(std::io::ErrorKind::TimedOut.into())
            } else {
                Ok(())
            }
        }))
        .build()
        .unwrap();
    broken.store(true, Ordering::SeqCst);
    cache.insert(1, "never synced".into()).unwrap();
    let start = std::time::Instant::now();
    while TIMED_OUT_ERRORS.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the janitor's failed sync was not reported"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Some two hundred ticks, each with a sync the failed log refuses.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        TIMED_OUT_ERRORS.load(Ordering::SeqCst),
        1,
        "the failure was logged again at later ticks"
    );
    assert!(matches!(
        cache
            .insert(2, "refused".into())
            .map_err(|e| e.into_error()),
        Err(Error::Log(larder_log::Error::Failed { .. }))
    ));
}

/// `DurableCache::run_pending_tasks` does the core cache's expiry too: a cache without a
/// janitor otherwise kept its expired entries (and logged no deletes) until a write or a close.
#[test]
fn run_pending_tasks_removes_expired_entries() {
    let tmp = TempDir::new("durable-rpt-expires");
    let time = MockClock::new();
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(1))
        .clock(time.clock())
        .without_janitor()
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    for k in 0..50 {
        cache.insert(k, "x".repeat(1000)).unwrap();
    }
    time.advance(Duration::from_secs(2));
    assert_eq!(cache.get(&0), None, "expired for readers");
    cache.run_pending_tasks();
    assert_eq!(
        cache.len(),
        0,
        "run_pending_tasks left the expired entries in the cache"
    );
}

/// Encodes `u64` keys as little-endian bytes and panics on the second encoding of key 13 (the
/// first is its put; the second, the delete of its expiry).
struct PanicsOnSecond13(std::sync::atomic::AtomicUsize);

impl larder::durable::Codec<u64> for PanicsOnSecond13 {
    fn encode(&self, key: &u64, out: &mut Vec<u8>) -> Result<(), larder::durable::CodecError> {
        if *key == 13 && self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            panic!("a codec that panics");
        }
        out.extend_from_slice(&key.to_le_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<u64, larder::durable::CodecError> {
        let bytes: [u8; 8] = bytes.try_into().map_err(larder::durable::CodecError::new)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

/// A key codec that panics in the last handle's final drain: the drop does not panic (which,
/// during another panic's unwinding, would abort the process), and the directory opens again
/// with the writes before it.
#[test]
fn a_codec_panic_in_the_last_drop_is_logged_not_raised() {
    let tmp = TempDir::new("durable-drop-codec-panic");
    let time = MockClock::new();
    let build = || {
        Cache::<u64, String>::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(1))
            .clock(time.clock())
            .without_janitor()
            .durable(&tmp.0)
            .key_codec(PanicsOnSecond13(Default::default()))
            .durability(Durability::Manual)
            .build()
            .unwrap()
    };
    let cache = build();
    cache.insert(13, "thirteen".into()).unwrap();
    time.advance(Duration::from_secs(2));
    cache.insert(14, "fourteen".into()).unwrap();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(cache)));
    assert!(dropped.is_ok(), "the last handle's drop panicked");
    let reopened = build();
    assert_eq!(reopened.get(&14), Some("fourteen".to_string()));
}

/// A cache of `String`s whose weigher panics on the value `"boom"` while `boom` holds, with a
/// time-to-live of an hour.
fn boom_cache(dir: &Path, boom: bool) -> DurableCache<u64, String> {
    Cache::builder()
        .max_capacity(1000)
        .time_to_live(Duration::from_secs(3600))
        .weigher(move |_: &u64, value: &String| {
            assert!(!(boom && value == "boom"), "a weigher that panics");
            1
        })
        .durable(dir)
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .build()
        .unwrap()
}

#[test]
fn a_write_whose_weigher_panics_leaves_the_log_agreeing_with_the_cache() {
    // The weigher runs inside the cache's change, after the put is appended. The panic leaves
    // the cache as it was, so the log must end up saying so too: key 1 keeps its old value
    // (and a deadline), key 2 stays absent.
    let tmp = TempDir::new("durable-weigher-panics");
    let cache = boom_cache(&tmp.0, true);
    cache.insert(1, "old".to_string()).unwrap();
    for key in [1, 2] {
        let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.insert(key, "boom".to_string())
        }));
        assert!(inserted.is_err(), "the weigher's panic reaches the caller");
    }
    let held = contents(&cache);
    assert_eq!(held, BTreeMap::from([(1, "old".to_string())]));
    let deadline = logged_deadline(&cache, 1);
    let now = wall_ms();
    assert!(
        deadline > now && deadline <= now + 3_600_000,
        "the put written again keeps what is left of the entry's time to live: {deadline} at {now}"
    );
    cache.close().unwrap();
    // Reopened with the same weigher, which would panic on loading a "boom".
    let reopened = boom_cache(&tmp.0, true);
    assert_eq!(
        contents(&reopened),
        held,
        "the log says what the cache held at close"
    );
}

/// Whether [`OnOld`] acts on `"old"`.
static ON_OLD_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A panic payload whose own `Drop` panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("a panic payload's drop that panics");
    }
}

/// Encodes `String`s as their bytes, and while [`ON_OLD_ARMED`] holds, on `"old"` panics with a
/// [`Bomb`] as its payload (`panics`) or fails with a [`PanickyDisplay`] as its error's cause.
struct OnOld {
    panics: bool,
}

impl larder::durable::Codec<String> for OnOld {
    fn encode(&self, v: &String, out: &mut Vec<u8>) -> Result<(), larder::durable::CodecError> {
        if v == "old" && ON_OLD_ARMED.load(std::sync::atomic::Ordering::SeqCst) {
            if self.panics {
                std::panic::panic_any(Bomb);
            }
            return Err(larder::durable::CodecError::new(PanickyDisplay));
        }
        out.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, larder::durable::CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(larder::durable::CodecError::new)
    }
}

/// The child of [`a_restate_whose_codec_panics_with_a_payload_that_panics_on_drop_does_not_abort`].
#[test]
#[ignore = "run by its parent test, as a child process"]
fn restate_bomb_child() {
    if !larder_testkit::child::is_child("LARDER_RESTATE_BOMB_CHILD") {
        return;
    }
    write_whose_change_and_restate_both_fail(OnOld { panics: true });
}

/// What both restate children do: with a weigher that panics on `"boom"`, writes `"old"` to
/// key 1, arms `codec`, writes `"boom"` over it, and checks that the weigher's panic came out
/// and the cache kept `"old"`; then prints that the process survived (the parent checks the
/// line).
fn write_whose_change_and_restate_both_fail(codec: OnOld) {
    let tmp = TempDir::new("durable-restate-fails");
    let cache = Cache::builder()
        .max_capacity(1000)
        .weigher(|_: &u64, value: &String| {
            assert_ne!(value, "boom", "a weigher that panics");
            1
        })
        .durable(&tmp.0)
        .value_codec(codec)
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    cache.insert(1, "old".to_string()).unwrap();
    ON_OLD_ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
    let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.insert(1, "boom".to_string())
    }));
    ON_OLD_ARMED.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(inserted.is_err(), "the weigher's panic reaches the caller");
    assert_eq!(cache.get(&1), Some("old".to_string()));
    println!("survived the restate");
}

/// A write's change panics (the weigher), and the record written again for its key as the
/// panic unwinds panics too, in the value codec, with a payload whose own `Drop` panics: the
/// write's panic reaches its caller, and the process goes on. (That payload was dropped
/// unguarded while the first panic unwound, and the process aborted.)
#[test]
fn a_restate_whose_codec_panics_with_a_payload_that_panics_on_drop_does_not_abort() {
    let out = larder_testkit::child::run("restate_bomb_child", "LARDER_RESTATE_BOMB_CHILD", &[]);
    assert!(out.contains("survived the restate"), "{out}");
}

/// Encodes `u64` keys as their bytes, and panics with a [`Bomb`] as its payload on key 7.
struct BombOnSeven;

impl larder::durable::Codec<u64> for BombOnSeven {
    fn encode(&self, k: &u64, out: &mut Vec<u8>) -> Result<(), larder::durable::CodecError> {
        if *k == 7 {
            std::panic::panic_any(Bomb);
        }
        out.extend_from_slice(&k.to_le_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<u64, larder::durable::CodecError> {
        let bytes = bytes.try_into().map_err(larder::durable::CodecError::new)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

/// A `tracing` subscriber, user code too, that panics on every event.
struct PanicsOnEvents;

impl tracing::Subscriber for PanicsOnEvents {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        panic!("a subscriber that panics");
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The child of [`a_caught_payload_outlives_no_log_line_that_panics`].
#[test]
#[ignore = "run by its parent test, as a child process"]
fn shut_down_log_line_panics_child() {
    if !larder_testkit::child::is_child("LARDER_SHUT_DOWN_LOG_PANICS_CHILD") {
        return;
    }
    let tmp = TempDir::new("durable-shut-down-log-panics");
    let time = MockClock::new();
    // Key 7 put as a raw record: its codec would panic on the write itself.
    let mut log = larder_log::Log::open(&tmp.0, larder_log::Options::default(), |_| {}).unwrap();
    let deadline = time.clock().wall_ms() + 60_000;
    log.append(Op::Put {
        key: &7u64.to_le_bytes(),
        value: b"v",
        expires_at_ms: deadline,
    })
    .unwrap();
    log.sync().unwrap();
    drop(log);
    let cache: DurableCache<u64, Vec<u8>> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .clock(time.clock())
        .without_janitor()
        .durable(&tmp.0)
        .key_codec(BombOnSeven)
        .value_codec(RawBytes)
        .durability(Durability::Manual)
        .build()
        .unwrap();
    assert!(cache.contains_key(&7));
    time.advance(Duration::from_secs(61));
    // The last handle's drop expires key 7 and records its delete: the key codec panics with
    // a `Bomb`, which the drop catches and logs, and the subscriber panics on that log line.
    let dropped = tracing::subscriber::with_default(PanicsOnEvents, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(cache)))
    });
    assert!(
        dropped.is_err(),
        "the subscriber's panic comes out of the drop"
    );
    println!("survived the drop");
}

/// A caught payload is dropped through `unwind::quiet` before anything else that could panic
/// runs: the last handle's drop caught a key codec's panic (its payload's `Drop` panics) and
/// logged it while holding the payload, so a `tracing` subscriber that panicked on that line
/// dropped the payload unguarded as its panic unwound, and the process aborted.
#[test]
fn a_caught_payload_outlives_no_log_line_that_panics() {
    let out = larder_testkit::child::run(
        "shut_down_log_line_panics_child",
        "LARDER_SHUT_DOWN_LOG_PANICS_CHILD",
        &[],
    );
    assert!(out.contains("survived the drop"), "{out}");
}

/// How many more key comparisons of [`Touchy`] keys pass before one panics, once
/// (`usize::MAX`: none does).
static TOUCHY_EQS_LEFT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);

/// A key one of whose comparisons panics when [`TOUCHY_EQS_LEFT`] runs out.
#[derive(Debug, Clone, PartialOrd, Ord)]
struct Touchy(u64);

impl std::hash::Hash for Touchy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let left = TOUCHY_EQS_LEFT.load(SeqCst);
        if left == 0 {
            TOUCHY_EQS_LEFT.store(usize::MAX, SeqCst);
            panic!("a key comparison that panics");
        }
        if left != usize::MAX {
            TOUCHY_EQS_LEFT.store(left - 1, SeqCst);
        }
        self.0 == other.0
    }
}

impl Eq for Touchy {}

impl serde::Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Touchy)
    }
}

#[test]
fn a_remove_whose_key_comparison_panics_leaves_the_log_agreeing_with_the_cache() {
    // `remove` sees the key present (one comparison), appends its delete, then the cache's
    // removal compares again, and panics: the entry stays, so the log must keep it too.
    use std::sync::atomic::Ordering::SeqCst;
    let tmp = TempDir::new("durable-key-comparison-panics");
    let open = || -> DurableCache<Touchy, String> {
        Cache::builder()
            .max_capacity(1000)
            .shards(1)
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .build()
            .unwrap()
    };
    let cache = open();
    cache.insert(Touchy(1), "kept".to_string()).unwrap();
    TOUCHY_EQS_LEFT.store(1, SeqCst);
    let removed =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.remove(&Touchy(1))));
    assert!(
        removed.is_err(),
        "the comparison's panic reaches the caller"
    );
    let held = contents(&cache);
    assert_eq!(held, BTreeMap::from([(Touchy(1), "kept".to_string())]));
    cache.close().unwrap();
    assert_eq!(
        contents(&open()),
        held,
        "the log says what the cache held at close"
    );
}

/// An insert the cache refuses as too heavy leaves its key with no value (the old value goes
/// too: step 1 of the module doc), so a delete follows its put in the log. Without it, a
/// roomier reopen loads the put and brings back a value the cache never held, or the old value
/// the refusal took.
#[test]
fn an_insert_refused_as_too_heavy_stays_gone_after_a_roomier_reopen() {
    let tmp = TempDir::new("durable-refused-insert");
    let open = |capacity: u64| -> DurableCache<u64, Vec<u8>> {
        Cache::builder()
            .max_capacity(capacity)
            .shards(1)
            .weigher(|_, v: &Vec<u8>| v.len() as u32)
            .durable(&tmp.0)
            .value_codec(RawBytes)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .build()
            .unwrap()
    };
    let cache = open(50);
    cache.insert(1, vec![1; 10]).unwrap();
    // Heavier than the whole capacity: refused, and key 1's old value goes with it.
    cache.insert(1, vec![1; 100]).unwrap();
    cache.insert(2, vec![2; 100]).unwrap();
    cache.insert(3, vec![3; 10]).unwrap();
    assert_eq!(
        cache.get(&1),
        None,
        "the old value went with the refused one"
    );
    assert_eq!(cache.get(&2), None);
    cache.close().unwrap();
    let cache = open(1000);
    assert_eq!(cache.get(&1), None, "a value the cache refused came back");
    assert_eq!(cache.get(&2), None, "a value the cache refused came back");
    assert_eq!(cache.get(&3), Some(vec![3; 10]));
    assert_eq!(cache.len(), 1);
}

/// In `Always` mode the deletes of what an insert evicted are appended before the insert's
/// flush, so that one flush makes them durable with it (the module doc's step 2; the drain
/// comes first in `finish_through`): once the insert returns, a `sync` has nothing left to
/// flush. Drained after the flush instead, they stay in the page cache until some later sync,
/// and an OS crash in between brings the evicted entries back.
#[test]
fn an_always_insert_makes_the_deletes_of_its_evictions_durable_with_it() {
    let tmp = TempDir::new("durable-always-evictions");
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(8)
        .shards(1)
        .durable(&tmp.0)
        .durability(Durability::Always)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    for k in 0..64u64 {
        cache.insert(k, k.to_string()).unwrap();
        let flushes = cache.flushes();
        cache.sync().unwrap();
        assert_eq!(
            cache.flushes(),
            flushes,
            "the insert of {k} returned with records not yet durable"
        );
    }
    // Counted by `iter()`: `len()` of an unweighted cache reports at most the capacity.
    let before = contents(&cache);
    assert!(
        before.len() <= 8,
        "the inserts evicted: {} entries",
        before.len()
    );
    drop(cache);
    assert_eq!(contents(&open(&tmp.0, 1000, Durability::Manual)), before);
}

/// An `Always` open that evicts while it loads (the cache is now smaller than the log's live
/// set) appends the deletes of what it evicted, and returns once they are on stable storage,
/// as it does for the deadlines it writes again: a power loss right after the open would
/// otherwise lose them, and a roomier open bring the evicted entries back. With no deadline to
/// write again, the open synced nothing: the sync after it had a flush to run.
#[test]
fn an_always_open_makes_the_deletes_of_what_its_load_evicted_durable() {
    let tmp = TempDir::new("durable-always-load-evictions");
    let build = |capacity: u64| -> DurableCache<u64, String> {
        Cache::builder()
            .max_capacity(capacity)
            .shards(1)
            .durable(&tmp.0)
            .durability(Durability::Always)
            .compaction(Compaction::Manual)
            .build()
            .unwrap()
    };
    let cache = build(1000);
    for k in 0..64u64 {
        cache.insert(k, k.to_string()).unwrap();
    }
    drop(cache);
    let cache = build(8);
    // Counted by `iter()`: `len()` of an unweighted cache reports at most the capacity.
    let loaded = cache.iter().count();
    assert!(loaded <= 8, "the load evicted: {loaded} entries");
    let flushes = cache.flushes();
    cache.sync().unwrap();
    assert_eq!(
        cache.flushes(),
        flushes,
        "the open returned with the deletes of its evictions not yet durable"
    );
    let kept = contents(&cache);
    drop(cache);
    assert_eq!(contents(&open(&tmp.0, 1000, Durability::Manual)), kept);
}

/// `Durability::Manual` syncs when asked, and at each compaction, which syncs every write so
/// far first: with `Compaction::Auto` the janitor's work (here run by hand) syncs a cache whose
/// log is due, and only `Compaction::Manual` keeps the syncs to the user's calls. (The doc said
/// `sync`, `close` and the last drop alone synced; the janitor synced such a cache within its
/// first tick.)
#[test]
fn a_manual_cache_is_synced_by_its_compactions_too() {
    for (compaction, flushes) in [
        (Compaction::Manual, 0),
        (
            Compaction::Auto {
                dead_share: 0.5,
                min_bytes: 1,
            },
            1,
        ),
    ] {
        let tmp = TempDir::new("durable-manual-compacted");
        let cache: DurableCache<u64, String> = Cache::builder()
            .max_capacity(10)
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .compaction(compaction)
            .build()
            .unwrap();
        // Each key written 50 times: the log is mostly dead.
        for i in 0..100 {
            cache.insert(i % 2, i.to_string()).unwrap();
        }
        assert_eq!(cache.flushes(), 0);
        cache.run_pending_tasks();
        assert_eq!(cache.flushes(), flushes, "{compaction:?}");
    }
}

/// An insert whose eviction's delete the key codec refuses to encode fails with
/// `Error::Codec` after the cache took its entry: nothing is given back, as for every error
/// of a step after the cache changed. (Its doc gave `Error::Codec` as an error that leaves the
/// cache unchanged and hands the key and value back.)
#[test]
fn an_insert_whose_evictions_delete_does_not_encode_keeps_its_entry() {
    let tmp = TempDir::new("durable-eviction-does-not-encode");
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(1)
        .durable(&tmp.0)
        .key_codec(FailsOnSecond13 {
            panics: false,
            encoded: std::sync::atomic::AtomicUsize::new(0),
        })
        .durability(Durability::Manual)
        .build()
        .unwrap();
    cache.insert(13, "thirteen".into()).unwrap();
    // Evicts 13, whose delete is its second encoding.
    let failed = cache.insert(14, "fourteen".into()).unwrap_err();
    assert!(
        matches!(failed.error(), Error::Codec { what: "key", .. }),
        "{failed}"
    );
    assert!(failed.entry().is_none(), "the entry was handed back");
    assert_eq!(cache.get(&14).as_deref(), Some("fourteen"));
    assert_eq!(cache.get(&13), None);
}

/// A write whose weigher panics records again what the cache holds for its key (step 6 of
/// the module doc), and that record's deadline is the entry's time-to-live, as an insert's
/// is: a time-to-idle is not recorded. In a cache with only a time-to-idle the entry has no
/// deadline on disk at all; recorded with its idle deadline, it was dropped by the next open
/// although it was read, and live, when the cache closed.
#[test]
fn a_record_written_again_after_a_panic_carries_no_idle_deadline() {
    let tmp = TempDir::new("durable-restate-idle");
    let time = MockClock::new();
    let open = |boom: bool| -> DurableCache<u64, String> {
        Cache::builder()
            .max_capacity(100)
            .time_to_idle(Duration::from_millis(50))
            .clock(time.clock())
            .without_janitor()
            .weigher(move |_: &u64, value: &String| {
                assert!(!(boom && value == "boom"), "a weigher that panics");
                1
            })
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .build()
            .unwrap()
    };
    let cache = open(true);
    cache.insert(1, "kept".to_string()).unwrap();
    let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.insert(1, "boom".to_string())
    }));
    assert!(inserted.is_err(), "the weigher's panic reaches the caller");
    assert_eq!(
        logged_deadline(&cache, 1),
        0,
        "the put written again has no deadline, as the insert's had none"
    );
    // Read often enough to stay, then closed while live.
    for _ in 0..4 {
        time.advance(Duration::from_millis(30));
        assert_eq!(cache.get(&1).as_deref(), Some("kept"));
    }
    // 120 ms on the mock, and on its wall clock, which the records' deadlines are in: an
    // idle deadline recorded at the panic (50 ms) has passed.
    cache.close().unwrap();
    let reopened = open(false);
    assert_eq!(
        reopened.get(&1).as_deref(),
        Some("kept"),
        "live at the close, gone after the restart"
    );
}

/// As above with a time-to-live and a shorter time-to-idle: the record written again keeps
/// what is left of the time-to-live, not the idle deadline that reads push back.
#[test]
fn a_record_written_again_after_a_panic_keeps_the_time_to_live_not_the_idle_deadline() {
    let tmp = TempDir::new("durable-restate-ttl-idle");
    let time = MockClock::new();
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(3600))
        .time_to_idle(Duration::from_millis(50))
        .clock(time.clock())
        .without_janitor()
        .weigher(|_: &u64, value: &String| {
            assert!(value != "boom", "a weigher that panics");
            1
        })
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    cache.insert(1, "kept".to_string()).unwrap();
    let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.insert(1, "boom".to_string())
    }));
    assert!(inserted.is_err(), "the weigher's panic reaches the caller");
    let left = logged_deadline(&cache, 1).saturating_sub(time.clock().wall_ms());
    assert!(
        left > 3_500_000,
        "the put written again is {left} ms from its deadline, not the hour's rest"
    );
}

/// A value whose clone, once armed, moves the mock clock of `MOVED_BY_A_CLONE` on by an hour:
/// the time that passes between two steps of a write, made to pass there.
#[derive(Debug, PartialEq)]
struct SlowClone(String);

static MOVED_BY_A_CLONE: std::sync::Mutex<Option<MockClock>> = std::sync::Mutex::new(None);

impl Clone for SlowClone {
    fn clone(&self) -> Self {
        if let Some(time) = MOVED_BY_A_CLONE.lock().unwrap().take() {
            time.advance(Duration::from_secs(3600));
        }
        SlowClone(self.0.clone())
    }
}

impl serde::Serialize for SlowClone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SlowClone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SlowClone)
    }
}

/// A write whose weigher panics records again what the cache holds for its key, and the
/// entry's time-to-live runs out while it does (between the read of its value and the read
/// of its time-to-live's rest): the cache no longer holds it, and the record says so. It was
/// written again as a put with no deadline at all, the rest of a lifetime that had ended read
/// as one that never ends, and a crash before the janitor's delete brought the expired entry
/// back, for a whole new lifetime.
#[test]
fn an_entry_that_expires_while_its_record_is_written_again_is_recorded_gone() {
    let tmp = TempDir::new("durable-restate-expiring");
    let copy = TempDir::new("durable-restate-expiring-copy");
    let open = |dir: &Path, time: &MockClock| -> DurableCache<u64, SlowClone> {
        Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(3600))
            .clock(time.clock())
            .without_janitor()
            .weigher(|_: &u64, value: &SlowClone| {
                assert!(value.0 != "boom", "a weigher that panics");
                1
            })
            .durable(dir)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .build()
            .unwrap()
    };
    let time = MockClock::new();
    let cache = open(&tmp.0, &time);
    cache.insert(1, SlowClone("kept".to_string())).unwrap();
    *MOVED_BY_A_CLONE.lock().unwrap() = Some(time.clone());
    let inserted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.insert(1, SlowClone("boom".to_string()))
    }));
    assert!(inserted.is_err(), "the weigher's panic reaches the caller");
    assert!(
        MOVED_BY_A_CLONE.lock().unwrap().is_none(),
        "the hour passed"
    );
    assert_eq!(cache.peek(&1), None, "expired");
    larder_testkit::copy_dir(&tmp.0, &copy.0);
    let reopened = open(&copy.0, &MockClock::new());
    assert_eq!(
        reopened.get(&1),
        None,
        "an entry expired before the crash came back"
    );
}

#[test]
fn an_always_remove_of_a_key_whose_expiry_is_not_yet_queued_still_records_its_absence() {
    // A `remove` that finds its key absent acknowledges the absence (in `Always` mode, on
    // stable storage). The key may be absent because another thread just took its entry out
    // of the table, and that thread queues the key's delete only once the shard's lock is
    // released, when it tells the removal observers. Here thread `ticker` runs the cache's
    // pending tasks, which expire key 1 (a time-to-idle: its record has no deadline), and is
    // held in a removal observer of the user's, which runs before the durable cache's. The
    // remove meanwhile must not return with no delete of the key in the log: a crash right
    // after it returns (the copy below) would bring the key back.
    use std::sync::{mpsc, Mutex};
    let tmp = TempDir::new("durable-remove-while-told");
    let copy = TempDir::new("durable-remove-while-told-copy");
    let time = MockClock::new();
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let (arrived_tx, released) = (Mutex::new(Some(arrived_tx)), Mutex::new(released));
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(Duration::from_millis(50))
        .clock(time.clock())
        .without_janitor()
        .removal_observer(move |key: &u64, _| {
            if std::thread::current().name() == Some("ticker") {
                if let Some(tx) = arrived_tx.lock().unwrap().take() {
                    tx.send(*key).unwrap();
                    released.lock().unwrap().recv().unwrap();
                }
            }
        })
        .durable(&tmp.0)
        .durability(Durability::Always)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    cache.insert(1, "one".into()).unwrap();
    time.advance(Duration::from_millis(100));
    std::thread::scope(|s| {
        let ticker = std::thread::Builder::new()
            .name("ticker".into())
            .spawn_scoped(s, || cache.run_pending_tasks())
            .unwrap();
        // Out of the table, its delete not queued yet.
        assert_eq!(arrived.recv().unwrap(), 1);
        assert_eq!(cache.remove(&1).unwrap(), None);
        larder_testkit::copy_dir(&tmp.0, &copy.0);
        release.send(()).unwrap();
        ticker.join().unwrap();
    });
    drop(cache);
    let crashed = idle_cache(&copy.0, &MockClock::new());
    assert_eq!(
        crashed.get(&1),
        None,
        "a key whose remove was acknowledged came back after a crash"
    );
}

/// The child of [`a_parallel_load_whose_halves_both_panic_with_payloads_that_panic_on_drop_does_not_abort`].
#[test]
#[ignore = "run by its parent test, as a child process"]
fn parallel_load_bomb_child() {
    if !larder_testkit::child::is_child("LARDER_PARALLEL_LOAD_BOMB_CHILD") {
        return;
    }
    static WEIGHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = TempDir::new("durable-parallel-load-bomb");
    // Past the parallel load's threshold (`live::PARALLEL_LOAD`, 65,536 entries).
    let n = 70_000u64;
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(n * 2)
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    for k in 0..n {
        cache.insert(k, k.to_string()).unwrap();
    }
    cache.close().unwrap();
    let opened = std::panic::catch_unwind(|| {
        Cache::builder()
            .max_capacity(n * 2)
            .weigher(move |_: &u64, _: &String| -> u32 {
                // Past the first pass, which weighs every entry on this thread for the shards'
                // shares, so that both halves' inserts panic.
                if WEIGHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= n {
                    std::panic::panic_any(Bomb);
                }
                1
            })
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .build()
            .map(|cache: DurableCache<u64, String>| cache.len())
    });
    let payload = opened.expect_err("the weigher's panic reaches the caller");
    assert!(payload.is::<Bomb>(), "a weigher's own payload");
    // The payload's `Drop` panics: not run here.
    std::mem::forget(payload);
    println!("survived the load");
}

/// A reopen large enough to load in two halves, on two threads, whose weigher panics on both
/// with a payload whose own `Drop` panics: the first panic reaches the caller and the process
/// goes on. (The other half's thread was left unjoined when the caller's half panicked, and
/// std dropped its payload at the scope's end, which aborts when that `Drop` panics: "thread
/// result panicked on drop".)
#[test]
fn a_parallel_load_whose_halves_both_panic_with_payloads_that_panic_on_drop_does_not_abort() {
    if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
        return;
    }
    let out = larder_testkit::child::run(
        "parallel_load_bomb_child",
        "LARDER_PARALLEL_LOAD_BOMB_CHILD",
        &[],
    );
    assert!(out.contains("survived the load"), "{out}");
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct PanickyDisplay;

impl std::fmt::Display for PanickyDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("an error's Display that panics");
    }
}

impl std::error::Error for PanickyDisplay {}

/// The child of [`a_restate_whose_codec_fails_with_an_error_whose_display_panics_does_not_abort`].
#[test]
#[ignore = "run by its parent test, as a child process"]
fn restate_display_child() {
    if !larder_testkit::child::is_child("LARDER_RESTATE_DISPLAY_CHILD") {
        return;
    }
    write_whose_change_and_restate_both_fail(OnOld { panics: false });
}

/// A write's change panics (the weigher), and the record written again for its key as the
/// panic unwinds fails in the value codec, with an error whose `Display` panics: the failure
/// is described inside the catch, and the process goes on. (It was described as the write's
/// own panic unwound, outside any catch, and the process aborted.)
#[test]
fn a_restate_whose_codec_fails_with_an_error_whose_display_panics_does_not_abort() {
    let out =
        larder_testkit::child::run("restate_display_child", "LARDER_RESTATE_DISPLAY_CHILD", &[]);
    assert!(out.contains("survived the restate"), "{out}");
}
