//! Expiry through the public API, on a mock clock: time-to-live, time-to-idle, per-entry
//! lifetimes, `ttl`, `age`, `run_pending_tasks` and the eviction listener's causes. The caches
//! run without a janitor, so that removals happen exactly when a test asks for them, but for
//! the one that shows a cache detached from its janitor left alone by it.

use larder_core::{Cache, Clock, Janitor, MockClock, Policy, RemovalCause};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Heard<K, V> = Arc<Mutex<Vec<(K, V, RemovalCause)>>>;

/// A cache on a mock clock whose listener records what it hears.
fn recorded(
    capacity: u64,
    ttl: Option<u64>,
    tti: Option<u64>,
) -> (Cache<u64, u64>, MockClock, Heard<u64, u64>) {
    let time = MockClock::new();
    let heard: Heard<u64, u64> = Arc::default();
    let sink = Arc::clone(&heard);
    let mut builder = Cache::builder()
        .max_capacity(capacity)
        .clock(time.clock())
        .without_janitor()
        .per_entry_ttl()
        .eviction_listener(move |k: Arc<u64>, v, cause| sink.lock().unwrap().push((*k, v, cause)));
    if let Some(ttl) = ttl {
        builder = builder.time_to_live(ms(ttl));
    }
    if let Some(tti) = tti {
        builder = builder.time_to_idle(ms(tti));
    }
    (builder.build().unwrap(), time, heard)
}

fn take<K: Clone, V: Clone>(heard: &Heard<K, V>) -> Vec<(K, V, RemovalCause)> {
    std::mem::take(&mut *heard.lock().unwrap())
}

/// A mock clock's wall time starts at its fixed origin and moves with it, and a cache reports
/// the clock it was built with, with or without expiry: a durable cache on a mock reads its
/// records' deadlines from it, so that a test advances one clock through a restart.
#[test]
fn a_mock_clocks_wall_time_moves_with_it_and_a_cache_keeps_its_clock() {
    let time = MockClock::new();
    let origin = std::time::UNIX_EPOCH + MockClock::WALL_ORIGIN;
    assert_eq!(time.wall_time(), origin);
    time.advance(Duration::from_millis(1500));
    assert_eq!(time.wall_time(), origin + Duration::from_millis(1500));
    let without_expiry: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .clock(time.clock())
        .build()
        .unwrap();
    assert_eq!(
        without_expiry.clock().wall_ms(),
        MockClock::WALL_ORIGIN.as_millis() as u64 + 1500
    );
}

#[test]
fn an_entry_is_invisible_from_its_deadline_and_removed_by_the_janitors_work() {
    let (cache, time, heard) = recorded(256, Some(2000), None);
    cache.insert(1, 10);
    time.advance(ms(1999));
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.ttl(&1), Some(ms(1)));
    assert_eq!(cache.age(&1), Some(ms(1999)));
    time.advance(ms(1));
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.peek(&1), None);
    assert!(!cache.contains_key(&1));
    assert_eq!(cache.ttl(&1), None);
    assert_eq!(cache.age(&1), None);
    assert_eq!(cache.iter().count(), 0);
    // Reads never remove: the entry waits for the janitor.
    assert_eq!(cache.len(), 1);
    assert!(take(&heard).is_empty());
    cache.run_pending_tasks();
    assert_eq!(cache.len(), 0);
    assert_eq!(take(&heard), vec![(1, 10, RemovalCause::Expired)]);
    let stats = cache.stats();
    assert_eq!(
        (stats.expirations, stats.evictions, stats.removals),
        (1, 0, 0)
    );
    assert_eq!((stats.hits, stats.misses), (1, 1));
    cache.validate().unwrap();
}

#[test]
fn a_read_pushes_back_the_idle_deadline_but_not_the_write_deadline() {
    let (cache, time, _) = recorded(256, Some(3000), Some(1000));
    cache.insert(1, 10);
    for _ in 0..2 {
        time.advance(ms(900));
        assert_eq!(cache.get(&1), Some(10), "read within the idle time");
    }
    // peek and contains_key are not accesses: they do not refresh the idle time.
    time.advance(ms(900));
    assert_eq!(cache.peek(&1), Some(10));
    assert!(cache.contains_key(&1));
    time.advance(ms(100));
    assert_eq!(cache.get(&1), None, "1000 ms since the last access");

    cache.insert(2, 20);
    for _ in 0..3 {
        time.advance(ms(999));
        assert_eq!(cache.get(&2), Some(20));
    }
    assert_eq!(
        cache.ttl(&2),
        Some(ms(3)),
        "the time-to-live is the earlier deadline now"
    );
    time.advance(ms(3));
    assert_eq!(
        cache.get(&2),
        None,
        "3000 ms since the write, however often read"
    );
    cache.run_pending_tasks();
    assert!(cache.is_empty());
    cache.validate().unwrap();
}

#[test]
fn a_per_entry_lifetime_overrides_the_caches() {
    let (cache, time, heard) = recorded(256, Some(10_000), None);
    cache.insert_with_ttl(1, 10, ms(500)).unwrap();
    cache.insert(2, 20);
    cache.insert_with_ttl(3, 30, ms(60_000)).unwrap();
    assert_eq!(cache.ttl(&1), Some(ms(500)));
    assert_eq!(cache.ttl(&2), Some(ms(10_000)));
    time.advance(ms(500));
    assert_eq!(cache.get(&1), None);
    time.advance(ms(9_500));
    assert_eq!(cache.get(&2), None);
    assert_eq!(cache.get(&3), Some(30));
    cache.run_pending_tasks();
    let mut expired = take(&heard);
    expired.sort_unstable_by_key(|e| e.0);
    assert_eq!(
        expired,
        vec![
            (1, 10, RemovalCause::Expired),
            (2, 20, RemovalCause::Expired)
        ]
    );
    assert_eq!(cache.len(), 1);
}

#[test]
fn entries_without_a_lifetime_never_expire_in_a_per_entry_cache() {
    let (cache, time, _) = recorded(256, None, None);
    cache.insert(1, 10);
    cache.insert_with_ttl(2, 20, ms(5)).unwrap();
    assert_eq!(cache.ttl(&1), Some(Duration::MAX));
    time.advance(Duration::from_secs(400 * 86_400));
    cache.run_pending_tasks();
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.get(&2), None);
    assert_eq!(cache.age(&1), Some(Duration::from_secs(400 * 86_400)));
    assert_eq!(cache.len(), 1);
}

#[test]
fn insert_with_ttl_without_expiry_hands_the_entry_back() {
    let cache: Cache<String, Vec<u8>> = Cache::new(10);
    let err = cache
        .insert_with_ttl("k".into(), vec![1, 2], ms(5))
        .unwrap_err();
    assert_eq!(
        (err.key.as_str(), err.value.as_slice()),
        ("k", &[1u8, 2][..])
    );
    assert!(err.to_string().contains("time_to_live"));
    assert!(cache.is_empty());
    assert_eq!(cache.age("k"), None);
}

#[test]
fn lifetimes_under_a_millisecond_are_refused() {
    let err = Cache::<u64, u64>::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_micros(10))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("time_to_live"), "{err}");
    let err = Cache::<u64, u64>::builder()
        .max_capacity(10)
        .time_to_idle(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("time_to_idle"), "{err}");
}

/// `time_to_live` reads back the lifetime an entry written now is given, as `ttl` then
/// reports it: a long one rounded down, as the stamp keeps it (by 76.8 s in a year), and one
/// too long for the stamp, which never ends, as `Duration::MAX`. (It read back what the
/// builder was given, a year when entries lived 76.8 s less, and 584 million years for
/// `Duration::MAX`, when they never expire.)
#[test]
fn time_to_live_reads_back_the_lifetime_an_entry_written_now_is_given() {
    let year = Duration::from_secs(365 * 86_400);
    for ttl in [ms(131_071), ms(131_073), year, year * 5_000, Duration::MAX] {
        let time = MockClock::new();
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(10)
            .clock(time.clock())
            .time_to_live(ttl)
            .without_janitor()
            .build()
            .unwrap();
        cache.insert(1, 1);
        assert_eq!(cache.time_to_live(), cache.ttl(&1), "built with {ttl:?}");
    }
}

/// A lifetime within twice the clock's slack could expire entries as they are written
/// (expiry errs early by the lag at the write and at the read, never late): the builder
/// refuses it, naming the shortest it accepts, and accepts that.
#[test]
fn lifetimes_within_the_clocks_slack_are_refused() {
    let coarse = Clock::real();
    let shortest = coarse.shortest_lifetime();
    assert!(coarse.slack() >= ms(1));
    assert_eq!(shortest, coarse.slack() * 2 + ms(1));
    let err = Cache::<u64, u64>::builder()
        .max_capacity(10)
        .clock(coarse.clone())
        .time_to_live(shortest - ms(1))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("time_to_live") && err.to_string().contains("too short"),
        "{err}"
    );
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .clock(coarse)
        .time_to_idle(shortest)
        .without_janitor()
        .build()
        .unwrap();
    assert_eq!(cache.time_to_live(), None);
    let err = Cache::<u64, u64>::builder()
        .max_capacity(10)
        .clock(Clock::precise())
        .time_to_idle(ms(2))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("time_to_idle"), "{err}");
}

/// With no clock given, a cache whose lifetime is a few milliseconds gets the precise clock,
/// so its entries are readable when written. (On the coarse clock, whose slack is about 5 ms,
/// a 5 ms lifetime expired every entry at once.) Each try inserts and reads at once; the read
/// misses only if the thread stalls for 3 ms between the two (5 ms, less the clock's 1 ms lag at
/// the write and at the read), so one of a hundred tries reading its value is certain unless
/// every entry is dead on arrival.
#[test]
#[cfg_attr(miri, ignore = "reads the real clock across a sleep")]
fn a_lifetime_of_a_few_milliseconds_keeps_entries_until_it_ends() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .time_to_live(ms(5))
        .without_janitor()
        .build()
        .unwrap();
    let read = (0..100).any(|k| {
        cache.insert(k, k);
        cache.get(&k) == Some(k)
    });
    assert!(read, "every entry expired as it was written");
    // And it does end: 5 ms of lifetime, and the 1 ms the clock may lag, have passed.
    cache.insert(1000, 1000);
    std::thread::sleep(ms(7));
    assert_eq!(cache.get(&1000), None);
}

/// A mock clock advanced beyond what an entry's write time can record stops at its limit, so
/// entries written then still live their lifetime. (Beyond it, each write time was cut to
/// the limit while the clock went on, and every entry expired as it was written.)
#[test]
fn a_mock_clock_stops_at_its_limit() {
    let time = MockClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .clock(time.clock())
        .time_to_live(Duration::from_secs(1))
        .without_janitor()
        .build()
        .unwrap();
    time.advance(Duration::MAX);
    assert_eq!(time.elapsed(), MockClock::LIMIT);
    cache.insert(1, 1);
    assert_eq!(cache.get(&1), Some(1));
    assert_eq!(cache.ttl(&1), Some(Duration::from_secs(1)));
}

#[test]
fn every_removal_is_heard_once_with_its_cause() {
    let (cache, time, heard) = recorded(4, Some(1000), None);
    for k in 0..4 {
        cache.insert(k, k);
    }
    cache.insert(1, 100);
    assert_eq!(take(&heard), vec![(1, 1, RemovalCause::Replaced)]);
    assert_eq!(cache.remove(&2), Some(2));
    cache.invalidate(&3);
    assert_eq!(
        take(&heard),
        vec![
            (2, 2, RemovalCause::Explicit),
            (3, 3, RemovalCause::Explicit)
        ]
    );
    for k in 10..14 {
        cache.insert(k, k);
    }
    let evicted = take(&heard);
    assert_eq!(evicted.len(), 2, "{evicted:?}");
    assert!(evicted.iter().all(|e| e.2 == RemovalCause::Size));
    assert_eq!(cache.len(), 4);
    let mut live: Vec<(u64, u64)> = cache.iter().collect();
    live.sort_unstable();
    time.advance(ms(1000));
    assert_eq!(cache.iter().next(), None);
    // Expired but not yet removed: a remove finds nothing, and the entry is heard as expired.
    assert_eq!(cache.remove(&live[0].0), None);
    assert_eq!(
        take(&heard),
        vec![(live[0].0, live[0].1, RemovalCause::Expired)]
    );
    // A write over an expired entry: the old one expired; the key counts as new.
    cache.insert(live[1].0, 1300);
    assert_eq!(
        take(&heard),
        vec![(live[1].0, live[1].1, RemovalCause::Expired)]
    );
    cache.clear();
    let cleared = take(&heard);
    assert_eq!(cleared.len(), 3, "{cleared:?}");
    for (k, _, cause) in cleared {
        let expected = if k == live[1].0 {
            RemovalCause::Explicit
        } else {
            RemovalCause::Expired
        };
        assert_eq!(cause, expected, "key {k}");
    }
    cache.run_pending_tasks();
    assert!(take(&heard).is_empty(), "nothing is heard twice");
    let s = cache.stats();
    assert_eq!(
        (s.updates, s.removals, s.evictions, s.expirations),
        (1, 3, 2, 4)
    );
}

/// A write that overfills a shard removes what has expired before it evicts anything live:
/// expired entries hold room until they are removed, and the policy, which knows nothing of
/// lifetimes, chose live ones. Under S3-FIFO a shard full of entries read often enough to
/// reach its main queue, then expired, evicted 49 of 50 entries written after, each by the
/// next write, while 99 expired entries kept their room until the janitor's next tick. (A
/// moka user expects the expired to go first; an `ExpiringDict` evicts its oldest, which
/// is what expired.)
#[test]
fn a_full_shard_gives_up_its_expired_entries_before_its_live_ones() {
    for policy in [Policy::S3Fifo, Policy::Lru] {
        let time = MockClock::new();
        let heard: Heard<u64, u64> = Arc::default();
        let sink = Arc::clone(&heard);
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(100)
            .shards(1)
            .policy(policy)
            .time_to_live(ms(10_000))
            .clock(time.clock())
            .without_janitor()
            .eviction_listener(move |k: Arc<u64>, v, c| sink.lock().unwrap().push((*k, v, c)))
            .build()
            .unwrap();
        for k in 0..100 {
            cache.insert(k, k);
        }
        for _ in 0..3 {
            for k in 0..100 {
                assert_eq!(cache.get(&k), Some(k));
            }
        }
        time.advance(ms(10_000));
        for k in 1000..1050 {
            cache.insert(k, k);
        }
        let live = (1000..1050).filter(|k| cache.get(k) == Some(*k)).count();
        assert_eq!(
            live, 50,
            "{policy:?}: live entries evicted beside expired ones"
        );
        // At least the 50 the writes needed room for; a segment of the table scanned for them
        // gives up all it holds that has expired.
        let heard = take(&heard);
        assert!(heard.len() >= 50, "{policy:?}: {heard:?}");
        assert!(
            heard
                .iter()
                .all(|e| e.0 < 100 && e.2 == RemovalCause::Expired),
            "{policy:?}: {heard:?}"
        );
        let stats = cache.stats();
        assert_eq!(
            (stats.expirations, stats.evictions),
            (heard.len() as u64, 0),
            "{policy:?}"
        );
        // Once nothing has expired, the policy chooses as before.
        cache.run_pending_tasks();
        assert_eq!(cache.len(), 50, "{policy:?}");
        for k in 2000..2060 {
            cache.insert(k, k);
        }
        assert_eq!(cache.len(), 100, "{policy:?}");
        assert_eq!(cache.stats().evictions, 10, "{policy:?}");
        cache.validate().unwrap();
    }
}

/// Entries of weight 0 are kept apart from the policy's queues (`eviction`'s module doc), and
/// expire as others do: those a write that needs room finds expired in the segments it scans,
/// and then the rest, by the janitor's work.
#[test]
fn entries_of_weight_0_expire_by_a_write_that_needs_room_and_by_the_janitors_work() {
    for policy in [Policy::S3Fifo, Policy::Lru] {
        let time = MockClock::new();
        let heard: Heard<u64, u64> = Arc::default();
        let sink = Arc::clone(&heard);
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(4)
            .shards(1)
            .policy(policy)
            .weigher(|_, v: &u64| u32::try_from(*v).unwrap())
            .time_to_live(ms(1000))
            .clock(time.clock())
            .without_janitor()
            .eviction_listener(move |k: Arc<u64>, v, c| sink.lock().unwrap().push((*k, v, c)))
            .build()
            .unwrap();
        (0..40).for_each(|k| cache.insert(k, 0));
        (100..104).for_each(|k| cache.insert(k, 1));
        time.advance(ms(1000));
        cache.insert(200, 1);
        cache.validate().unwrap();
        let mut expired = take(&heard);
        assert!(
            expired.iter().all(|e| e.2 == RemovalCause::Expired),
            "{policy:?}: {expired:?}"
        );
        assert!(
            expired.iter().any(|e| e.1 == 0),
            "{policy:?}: the write's scan removed none of weight 0: {expired:?}"
        );
        cache.run_pending_tasks();
        expired.extend(take(&heard));
        expired.sort_unstable_by_key(|e| e.0);
        let expected: Vec<_> = (0..40)
            .map(|k| (k, 0))
            .chain((100..104).map(|k| (k, 1)))
            .map(|(k, v)| (k, v, RemovalCause::Expired))
            .collect();
        assert_eq!(expired, expected, "{policy:?}");
        assert_eq!((cache.len(), cache.weighted_size()), (1, 1), "{policy:?}");
        assert_eq!(cache.stats().evictions, 0, "{policy:?}");
        cache.validate().unwrap();
    }
}

#[test]
fn a_value_written_after_the_deadline_survives_the_janitor() {
    let (cache, time, heard) = recorded(256, Some(1000), None);
    cache.insert(7, 1);
    time.advance(ms(1000));
    // The janitor has not run yet; a new write replaces the expired value.
    cache.insert(7, 2);
    cache.run_pending_tasks();
    assert_eq!(cache.get(&7), Some(2));
    assert_eq!(take(&heard), vec![(7, 1, RemovalCause::Expired)]);
    time.advance(ms(999));
    cache.run_pending_tasks();
    assert_eq!(cache.get(&7), Some(2));
}

#[test]
fn get_with_reloads_an_expired_entry() {
    let (cache, time, heard) = recorded(256, Some(1000), None);
    assert_eq!(cache.get_with(5, || 50), 50);
    assert_eq!(cache.get_with(5, || unreachable!("cached")), 50);
    assert_eq!(cache.ttl(&5), Some(ms(1000)));
    time.advance(ms(1000));
    assert_eq!(cache.get_with(5, || 51), 51);
    assert_eq!(take(&heard), vec![(5, 50, RemovalCause::Expired)]);
    assert_eq!(
        cache.ttl(&5),
        Some(ms(1000)),
        "the reload starts a new lifetime"
    );
    cache.validate().unwrap();
}

#[test]
fn a_panicking_listener_does_not_break_the_cache() {
    let time = MockClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(2)
        .shards(1)
        .time_to_live(ms(10))
        .clock(time.clock())
        .without_janitor()
        .eviction_listener(|_, _, _| panic!("listener bug"))
        .build()
        .unwrap();
    for k in 0..10 {
        cache.insert(k, k);
    }
    time.advance(ms(10));
    cache.run_pending_tasks();
    cache.insert(1, 1);
    assert_eq!(cache.get(&1), Some(1));
    cache.validate().unwrap();
}

#[test]
fn the_listener_may_use_the_cache() {
    let time = MockClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let cache: Arc<Mutex<Option<Cache<u64, u64>>>> = Arc::default();
    let (c2, s2) = (Arc::clone(&cache), Arc::clone(&seen));
    let built: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .time_to_live(ms(10))
        .clock(time.clock())
        .without_janitor()
        .eviction_listener(move |k, _, _| {
            let c = c2.lock().unwrap().clone().unwrap();
            // Reads and writes of the same shard: the listener runs after the lock is released.
            s2.lock().unwrap().push(c.get(&(*k + 1000)));
            c.insert(*k + 1000, 0);
        })
        .build()
        .unwrap();
    *cache.lock().unwrap() = Some(built.clone());
    built.insert(1, 1);
    time.advance(ms(10));
    built.run_pending_tasks();
    assert_eq!(*seen.lock().unwrap(), vec![None]);
    assert_eq!(built.get(&1001), Some(0));
    *cache.lock().unwrap() = None;
}

/// A listener that puts back what expired with a zero lifetime writes something due at once
/// each time it hears of an expiry. The janitor's work still returns: one call does at most a
/// pass over each shard's segments, and leaves what came due during it for the next call. It
/// used to go on for as long as the listener did, holding the janitor's thread, which serves
/// every cache, for good.
#[test]
fn a_listener_that_puts_back_what_expired_does_not_hold_the_janitors_work() {
    let time = MockClock::new();
    let handle: Arc<Mutex<Option<Cache<u64, u64>>>> = Arc::default();
    let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let built: Cache<u64, u64> = Cache::builder()
        .max_capacity(10_000)
        .shards(1)
        .per_entry_ttl()
        .clock(time.clock())
        .without_janitor()
        .eviction_listener({
            let (handle, heard, time) = (Arc::clone(&handle), Arc::clone(&heard), time.clone());
            move |k, v, _| {
                heard.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(c) = handle.lock().unwrap().clone() {
                    // Time passes between one batch and the next, as it does on a real clock.
                    time.advance(ms(1));
                    c.insert_with_ttl(*k, v, Duration::ZERO).unwrap();
                }
            }
        })
        .build()
        .unwrap();
    *handle.lock().unwrap() = Some(built.clone());
    // Spread over many segments, so that more are due after each batch than it takes (miri
    // builds segments of two slots).
    let keys = if cfg!(miri) { 100 } else { 2000 };
    for k in 0..keys {
        built.insert_with_ttl(k, k, ms(10)).unwrap();
    }
    time.advance(ms(10));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let built = built.clone();
        std::thread::spawn(move || {
            built.run_pending_tasks();
            done_tx.send(()).unwrap();
        })
    };
    let done = done_rx.recv_timeout(Duration::from_secs(20));
    // Stops the listener's writes, so that a call still running ends and the thread joins.
    *handle.lock().unwrap() = None;
    done.expect("run_pending_tasks returned");
    worker.join().unwrap();
    assert!(heard.load(std::sync::atomic::Ordering::Relaxed) >= keys);
    // What the listener put back is due: invisible to reads, removed by a later call.
    assert_eq!(built.get(&1), None);
    built.run_pending_tasks();
    assert!(built.is_empty());
    built.validate().unwrap();
}

/// What has expired when `run_pending_tasks` is called is gone when it returns, even when the
/// shard's table is rebuilt meanwhile: here a listener's inserts of live entries grow it after
/// the first batch (any writer on another thread does the same). A rebuild spreads the entries
/// of each due segment over many segments of the new table, each then due, so a pass counted
/// on the segments as they were at the start left most of the expired entries in place.
#[test]
fn what_expired_before_the_janitors_work_is_gone_after_it_though_the_table_grows_meanwhile() {
    let time = MockClock::new();
    let handle: Arc<Mutex<Option<Cache<u64, u64>>>> = Arc::default();
    let expired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Smaller under miri, whose segments are two slots.
    let (keys, fresh) = if cfg!(miri) {
        (40, 400)
    } else {
        (2000, 20_000)
    };
    let built: Cache<u64, u64> = Cache::builder()
        .max_capacity(1 << 20)
        .shards(1)
        .per_entry_ttl()
        .clock(time.clock())
        .without_janitor()
        .eviction_listener({
            let (handle, expired) = (Arc::clone(&handle), Arc::clone(&expired));
            move |_, _, cause| {
                assert_eq!(cause, RemovalCause::Expired);
                expired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Once: live entries, due in an hour, enough to grow the table several times.
                if let Some(c) = handle.lock().unwrap().take() {
                    for k in 0..fresh {
                        c.insert_with_ttl(1_000_000 + k, k, ms(3_600_000)).unwrap();
                    }
                }
            }
        })
        .build()
        .unwrap();
    for k in 0..keys {
        built.insert_with_ttl(k, k, ms(10)).unwrap();
    }
    time.advance(ms(10));
    *handle.lock().unwrap() = Some(built.clone());
    built.run_pending_tasks();
    assert_eq!(
        expired.load(std::sync::atomic::Ordering::Relaxed),
        keys as usize,
        "every entry expired before the call was removed by it"
    );
    assert_eq!(built.len(), fresh as usize);
    built.validate().unwrap();
}

/// Thousands of entries with scattered lifetimes, through table growth and tombstone
/// rebuilds: after each step of the clock, exactly the entries whose deadlines passed are gone
/// once the janitor's work has run, each heard once.
#[test]
fn mass_expiry_matches_a_model_through_table_rebuilds() {
    for policy in [Policy::S3Fifo, Policy::Lru] {
        let time = MockClock::new();
        let heard: Heard<u64, u64> = Arc::default();
        let sink = Arc::clone(&heard);
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(1_000_000)
            .shards(4)
            .policy(policy)
            .time_to_live(ms(50_000))
            .clock(time.clock())
            .without_janitor()
            .without_janitor()
            .eviction_listener(move |k: Arc<u64>, v, c| sink.lock().unwrap().push((*k, v, c)))
            .build()
            .unwrap();
        let mut deadline: HashMap<u64, u64> = HashMap::new();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut now = 0u64;
        // Smaller under miri, which checks the same code paths a thousand times slower.
        let (steps, writes) = if cfg!(miri) { (6, 60) } else { (60, 500) };
        for step in 0..steps {
            for _ in 0..writes {
                let k = next() % 8000;
                let life = [1u64, 30, 700, 5_000, 120_000][(next() % 5) as usize];
                cache.insert_with_ttl(k, step, ms(life)).unwrap();
                deadline.insert(k, now + life);
            }
            let advance = [0u64, 1, 17, 250, 4_000][(next() % 5) as usize];
            time.advance(ms(advance));
            now += advance;
            cache.run_pending_tasks();
            let mut gone: Vec<u64> = deadline
                .iter()
                .filter(|&(_, &d)| d <= now)
                .map(|(&k, _)| k)
                .collect();
            gone.sort_unstable();
            let mut heard_now: Vec<u64> = take(&heard)
                .into_iter()
                .filter(|e| e.2 == RemovalCause::Expired)
                .map(|e| e.0)
                .collect();
            heard_now.sort_unstable();
            assert_eq!(heard_now, gone, "{policy:?} step {step}");
            deadline.retain(|_, d| *d > now);
            assert_eq!(cache.len(), deadline.len(), "{policy:?} step {step}");
            cache.validate().unwrap();
        }
        assert_eq!(cache.stats().evictions, 0);
    }
}

/// `iter` copies a shard's entries at once and yields them one by one: an entry whose deadline
/// passes between the copy and its turn is not yielded (a read never returns an expired entry,
/// and `iter` is a read). With a time-to-idle, an entry read during the walk is still live at
/// its turn, and is yielded.
#[test]
fn iter_does_not_yield_an_entry_that_expired_during_the_walk() {
    let (cache, time, _) = recorded(256, Some(1000), None);
    for k in 0..4 {
        cache.insert(k, k * 10);
    }
    cache.insert_with_ttl(9, 90, ms(5000)).unwrap();
    let mut iter = cache.iter();
    let first = iter.next().expect("five live entries");
    time.advance(ms(1000));
    let rest: Vec<(u64, u64)> = iter.collect();
    let mut want = vec![(9, 90)];
    want.retain(|e| *e != first);
    assert_eq!(
        rest, want,
        "only the entry still live at its turn follows {first:?}"
    );

    let (cache, time, _) = recorded(256, Some(10_000), Some(1000));
    for k in 0..4 {
        cache.insert(k, k * 10);
    }
    let mut iter = cache.iter();
    let first = iter.next().expect("four live entries");
    time.advance(ms(600));
    for k in 0..4 {
        assert_eq!(cache.get(&k), Some(k * 10), "read within the idle time");
    }
    time.advance(ms(600));
    let mut rest: Vec<(u64, u64)> = iter.collect();
    rest.push(first);
    rest.sort_unstable();
    assert_eq!(
        rest,
        vec![(0, 0), (1, 10), (2, 20), (3, 30)],
        "read during the walk: live"
    );
}

/// A listener that reloads what expired (`get_with` of the same key) works however the expiry
/// was found: by the janitor's work, or by a `get_with` of that key, which must not have made
/// itself the key's loader before the listener runs (the listener's `get_with` would then be
/// taken for a call from inside that load's own `init`, and panic).
#[test]
fn a_listener_may_reload_the_key_that_expired() {
    let time = MockClock::new();
    let reloaded = Arc::new(Mutex::new(Vec::new()));
    let cache: Arc<Mutex<Option<Cache<u64, u64>>>> = Arc::default();
    let (c2, r2) = (Arc::clone(&cache), Arc::clone(&reloaded));
    let built: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .time_to_live(ms(10))
        .clock(time.clock())
        .without_janitor()
        .eviction_listener(move |k, v, cause| {
            if cause == RemovalCause::Expired {
                let c = c2.lock().unwrap().clone().unwrap();
                r2.lock().unwrap().push(c.get_with(*k, || v + 1));
            }
        })
        .build()
        .unwrap();
    *cache.lock().unwrap() = Some(built.clone());

    // Found by the janitor's work.
    built.insert(1, 10);
    time.advance(ms(10));
    built.run_pending_tasks();
    assert_eq!(*reloaded.lock().unwrap(), vec![11]);
    assert_eq!(built.get(&1), Some(11));

    // Found by a load of the same key: the listener's reload is the value that load returns.
    built.insert(2, 20);
    time.advance(ms(10));
    assert_eq!(built.get_with(2, || 99), 21);
    assert_eq!(*reloaded.lock().unwrap(), vec![11, 21]);
    assert_eq!(built.get(&2), Some(21));
    built.validate().unwrap();
    *cache.lock().unwrap() = None;
}

/// A value whose `Drop` panics, counting its drops.
#[derive(Clone)]
struct PanicsOnDrop(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("a value's Drop panicked (on purpose)");
    }
}

/// The janitor's work frees what it removed, and a value's `Drop` that panics there is
/// dropped, not passed on: the janitor stops serving a cache whose tick panics, and then that
/// cache's expired entries would stay in memory for good. The frees run in two places, the
/// end of the work and the end of each batch's lock section (once a batch of removals is
/// full); both must keep the panic in.
#[test]
fn a_value_whose_drop_panics_does_not_escape_the_janitors_work() {
    // Tens of thousands of panics on purpose: their messages are left out, others' kept.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .payload()
            .downcast_ref::<&str>()
            .map(|m| m.contains("on purpose"))
            != Some(true)
        {
            default(info);
        }
    }));
    let time = MockClock::new();
    let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cache: Cache<u64, PanicsOnDrop> = Cache::builder()
        .max_capacity(100_000)
        .shards(1)
        .time_to_live(ms(10))
        .clock(time.clock())
        .without_janitor()
        .build()
        .unwrap();
    // Each round removes thousands of entries, a few hundred per lock section: each section's
    // end seals a limbo batch (256 nodes) and frees the earlier sections' ones as soon as the
    // epoch allows, inside the work rather than at its end.
    // Under miri, fewer: it interprets every step (each panic's unwinding is slow there), and
    // its shrunk wheel segments and limbo batches still give each round many sections.
    let (rounds, per_round) = if cfg!(miri) { (2, 200) } else { (20, 3_000) };
    // Another test's thread, pinned for long, may hold the epoch back and delay the frees: past
    // the rounds, more run until one frees a value, for at most a minute (once, in a run of the
    // whole suite on a loaded machine, the 20 rounds freed none: 2026-12-08).
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let freed = || drops.load(std::sync::atomic::Ordering::SeqCst) > 0;
    let mut next = 0;
    let mut round = 0;
    while round < rounds || (!freed() && std::time::Instant::now() < give_up) {
        for _ in 0..per_round {
            // What the work left sealed in this thread's limbo is freed by this thread's next
            // writes, and a panic there goes to the writer, as a `HashMap` insert's would: not
            // what this test is about, so it is kept in here.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cache.insert(next, PanicsOnDrop(Arc::clone(&drops)));
            }));
            next += 1;
        }
        time.advance(ms(10));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.run_pending_tasks();
        }));
        assert!(
            outcome.is_ok(),
            "round {round}: a value's panic came out of run_pending_tasks"
        );
        assert_eq!(cache.len(), 0, "round {round}");
        round += 1;
    }
    assert!(freed(), "no value was freed in {next} removals");
}

#[test]
fn a_cache_detached_from_its_janitor_expires_only_when_asked() {
    let time = MockClock::new();
    let janitor = Janitor::dedicated(ms(1));
    let heard: Heard<u64, u64> = Arc::default();
    let sink = Arc::clone(&heard);
    let detached: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(ms(1000))
        .clock(time.clock())
        .janitor(janitor.clone())
        .eviction_listener(move |k: Arc<u64>, v, cause| sink.lock().unwrap().push((*k, v, cause)))
        .build()
        .unwrap();
    // Registered after it, so each pass of the janitor comes to `served` after `detached`.
    // One shard: the tick that empties it removes nothing after that.
    let served: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .shards(1)
        .time_to_live(ms(1000))
        .clock(time.clock())
        .janitor(janitor.clone())
        .build()
        .unwrap();
    detached.detach_from_janitor();
    detached.detach_from_janitor(); // a second time: nothing left to do
    detached.insert(1, 10);
    // Two rounds: the second one's removal comes in a later pass than the first one's, so in
    // a pass that began after the deadline, where `detached`, were it still served, would
    // have been expired first.
    for round in 0..2 {
        served.insert(round, round);
        time.advance(ms(2000));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !served.is_empty() && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        assert!(served.is_empty(), "the janitor serves the other cache");
    }
    assert_eq!(detached.len(), 1, "the janitor expired a detached cache");
    assert!(take(&heard).is_empty());
    detached.run_pending_tasks();
    assert_eq!(detached.len(), 0);
    assert_eq!(take(&heard), vec![(1, 10, RemovalCause::Expired)]);
    assert!(janitor.is_running(), "the other cache is still registered");
    drop(served);
    // A pass in progress may hold `served` (the janitor upgrades its weak reference for the
    // tick), so the registration can end on the janitor thread just after this drop returns.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while janitor.is_running() && std::time::Instant::now() < until {
        std::thread::yield_now();
    }
    assert!(
        !janitor.is_running(),
        "the last registration ended the thread"
    );
}

/// A read treats an entry as expired once its deadline is within the clock's slack of the
/// clock's reading: the clock may lag true time by that much, and expiry never errs late.
/// So an entry given a lifetime of the slack itself is dead on arrival, whenever it is read.
#[test]
#[cfg_attr(miri, ignore = "reads the real clock")]
fn a_read_misses_an_entry_whose_deadline_is_within_the_clocks_slack() {
    let clock = Clock::real();
    let slack = clock.slack();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .clock(clock)
        .per_entry_ttl()
        .without_janitor()
        .build()
        .unwrap();
    cache.insert_with_ttl(1, 1, slack).unwrap();
    assert_eq!(cache.get(&1), None);
    assert!(!cache.contains_key(&1));
    assert_eq!(cache.ttl(&1), None);
    cache.insert(2, 2);
    assert_eq!(cache.get(&2), Some(2), "no lifetime: never expires");
}

/// `ttl` counts down to what reads see: the deadline less the clock's possible lag, so at
/// least the slack less than the lifetime, however soon it is asked.
#[test]
#[cfg_attr(miri, ignore = "reads the real clock")]
fn ttl_leaves_out_the_clocks_slack() {
    let clock = Clock::real();
    let slack = clock.slack();
    let hour = Duration::from_secs(3600);
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .clock(clock)
        .time_to_live(hour)
        .without_janitor()
        .build()
        .unwrap();
    cache.insert(1, 1);
    let left = cache.ttl(&1).unwrap();
    assert!(
        left <= hour - slack,
        "{left:?} left of {hour:?}, slack {slack:?}"
    );
    assert!(left > hour / 2, "{left:?}");
}

/// Given no clock, a cache gets the one its *shortest* lifetime needs: a time-to-live of a
/// few milliseconds beside a time-to-idle of an hour (or the other way round) gets the
/// precise clock, and builds, rather than the coarse one the hour would do with, on which
/// the few milliseconds would be refused as too short.
#[test]
fn the_clock_is_chosen_for_the_shortest_lifetime() {
    let hour = Duration::from_secs(3600);
    for (ttl, tti) in [(ms(5), hour), (hour, ms(5))] {
        let built = Cache::<u64, u64>::builder()
            .max_capacity(10)
            .time_to_live(ttl)
            .time_to_idle(tti)
            .without_janitor()
            .build();
        assert!(built.is_ok(), "{ttl:?} and {tti:?}: {:?}", built.err());
    }
}

/// `time_to_live_left` is the time-to-live's rest alone (the entry's own, or the cache's),
/// which reads do not push back: what a layer that records deadlines must record. `ttl` is
/// the earlier of it and the idle deadline.
#[test]
fn time_to_live_left_leaves_the_idle_deadline_out() {
    let (cache, time, _) = recorded(256, Some(10_000), Some(500));
    cache.insert(1, 10);
    cache.insert_with_ttl(2, 20, ms(2000)).unwrap();
    time.advance(ms(300));
    assert_eq!(cache.ttl(&1), Some(ms(200)));
    assert_eq!(cache.time_to_live_left(&1), Some(ms(9_700)));
    assert_eq!(cache.time_to_live_left(&2), Some(ms(1_700)));
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.ttl(&1), Some(ms(500)));
    assert_eq!(cache.time_to_live_left(&1), Some(ms(9_700)));
    time.advance(ms(500));
    assert_eq!(cache.time_to_live_left(&2), None, "idle out");
    assert_eq!(cache.time_to_live_left(&3), None, "missing");

    let (idle_only, _, _) = recorded(256, None, Some(500));
    idle_only.insert(1, 10);
    assert_eq!(idle_only.time_to_live_left(&1), Some(Duration::MAX));
}

/// `ttl` and `age` agree with reads at the deadline, while the clock moves: an entry found live
/// has at least a millisecond left and is younger than its lifetime. Each used to read the
/// clock again after the lookup had found the entry live, and when the deadline passed between
/// the two readings, `ttl` said `Some(0)` of an entry no read could return, and `age` gave it
/// its whole lifetime (with another thread advancing the mock clock, both within a few
/// thousand tries).
#[test]
#[cfg_attr(
    miri,
    ignore = "a race with a thread advancing the clock, many times over"
)]
fn ttl_and_age_agree_with_reads_while_the_clock_moves() {
    let (cache, time, _) = recorded(256, Some(1), None);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut ttls, mut ages) = (Vec::new(), Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            // Relaxed: a flag that only ends the loop.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                time.advance(ms(1));
            }
        });
        for v in 0..100_000 {
            cache.insert(1, v);
            ttls.extend(cache.ttl(&1).filter(|left| left.is_zero()));
            cache.insert(1, v);
            ages.extend(cache.age(&1).filter(|&age| age >= ms(1)));
            if !ttls.is_empty() && !ages.is_empty() {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(
        (ttls.len(), ages.len()),
        (0, 0),
        "ttl() said Some(0) and age() the whole lifetime of live entries"
    );
}

/// What the removal observers named `observers` (in the order they are set, each telling its
/// name and the key) and the listener (`l` and the key) hear of one batch of expiry: five
/// entries in one shard, expired by one call of the janitor's work.
fn told_of_a_batch(observers: &[&'static str]) -> Vec<String> {
    let time = MockClock::new();
    let told: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut builder = Cache::builder()
        .max_capacity(100)
        .shards(1) // one batch
        .clock(time.clock())
        .without_janitor()
        .time_to_live(ms(50));
    for &name in observers {
        let told = Arc::clone(&told);
        builder = builder
            .removal_observer(move |k: &u64, _| told.lock().unwrap().push(format!("{name}{k}")));
    }
    let heard = Arc::clone(&told);
    let cache: Cache<u64, u64> = builder
        .eviction_listener(move |k: Arc<u64>, _, _| heard.lock().unwrap().push(format!("l{k}")))
        .build()
        .unwrap();
    for k in 0..5 {
        cache.insert(k, k);
    }
    time.advance(ms(100));
    cache.run_pending_tasks();
    let told = std::mem::take(&mut *told.lock().unwrap());
    told
}

/// The removal observers hear every entry a batch of expiry removed before the listener
/// hears the first: a listener may act on the layer an observer feeds (drop a durable cache's
/// last handle, which records what its observer heard and closes its log). Told entry by
/// entry (`["o3", "l3", "o1", "l1", ...]`), the observer had heard only the first of the
/// batch when the listener closed the log, and `larder`'s
/// `a_listener_that_drops_the_last_handle_on_the_janitors_thread_leaves_nothing_expired_to_come_back`
/// brought back the rest after a restart.
#[test]
fn the_observers_hear_a_whole_batch_before_the_listener_hears_its_first_entry() {
    let told = told_of_a_batch(&["o"]);
    assert_eq!(told.len(), 10, "{told:?}");
    let first_heard = told.iter().position(|t| t.starts_with('l')).unwrap();
    assert_eq!(first_heard, 5, "observers first, all five: {told:?}");
}

/// Observers stack, and the one set last hears the whole batch before one set earlier hears its
/// first entry: a layer sets its observer after those the user set on the builder it was given,
/// and the user's may act on the layer (a durable cache's: drop its last handle, whose close
/// records what its observer heard). Told in the order they were set, each entry to one and
/// then the next (`["a4", "b4", "a0", "b0", ...]`), the user's observer heard of each entry
/// before the layer's, and `larder`'s
/// `a_users_observer_that_drops_the_last_handle_on_the_janitors_thread_leaves_nothing_expired_to_come_back`
/// brought the whole batch back after a restart.
#[test]
fn observers_set_later_hear_a_whole_batch_before_one_set_earlier_hears_its_first_entry() {
    let told = told_of_a_batch(&["a", "b"]);
    let firsts: Vec<char> = told.iter().map(|t| t.chars().next().unwrap()).collect();
    assert_eq!(
        firsts,
        [['b'; 5], ['a'; 5], ['l'; 5]].concat(),
        "the last set first, each the whole batch: {told:?}"
    );
}

/// `run_pending_tasks` from four threads while the janitor's ticks run on the same cache: each
/// expired entry is removed, and heard, exactly once, whoever's batch meets it, and the cache
/// ends empty. Four rounds, each expiring 2,000 entries at once on the mock clock.
#[test]
fn run_pending_tasks_racing_the_janitors_tick_removes_each_expired_entry_once() {
    // Fewer under miri, which interprets the janitor's every tick too: at 2,000 entries and
    // four rounds the test ran for over an hour there (CI of 2026-12-08).
    let (entries, rounds) = if cfg!(miri) { (64, 2) } else { (2_000, 4) };
    let time = MockClock::new();
    let heard: Heard<u64, u64> = Arc::default();
    let sink = Arc::clone(&heard);
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(entries)
        .time_to_live(ms(1000))
        .clock(time.clock())
        .janitor(Janitor::dedicated(ms(1)))
        .eviction_listener(move |k: Arc<u64>, v, cause| sink.lock().unwrap().push((*k, v, cause)))
        .build()
        .unwrap();
    for round in 0..rounds {
        for k in 0..entries {
            cache.insert(k, round);
        }
        time.advance(ms(2000));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cache.run_pending_tasks());
            }
        });
        // Each caller's pass ended after the deadline, so nothing expired is left; a batch of
        // the janitor's may still be telling the listener what it removed.
        assert_eq!(cache.len(), 0, "round {round}");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while heard.lock().unwrap().len() < entries as usize && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        let mut keys: Vec<u64> = take(&heard)
            .into_iter()
            .map(|(k, v, cause)| {
                assert_eq!((v, cause), (round, RemovalCause::Expired));
                k
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..entries).collect::<Vec<_>>(), "round {round}");
    }
    // A removal heard twice would come at most a batch late: the detach waits out the tick.
    cache.detach_from_janitor();
    assert!(take(&heard).is_empty());
}
