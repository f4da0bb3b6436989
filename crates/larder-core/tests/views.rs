//! The read-side views (`iter`, `stats`) while other threads write, read and reset.

use larder_core::{Cache, MockClock, Policy};
use std::collections::HashSet;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Runs `f` on a thread of its own and fails if it has not finished within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            worker.join().unwrap();
            out
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
    }
}

/// Keys below this weigh 0, so no eviction takes them, and the writers never touch them.
const STABLE: u64 = 16;

/// Three writers insert, replace and remove (and at once write back) 200 keys in a cache of
/// 48 over 2 shards, so tables grow, rebuild over tombstones and evict, and write keys from
/// 10,000 on already expired, and with `clears` clear the cache now and then, while the main
/// thread walks it 20,000 times: no walk yields a key twice or an expired entry, and without
/// clears every stable entry is yielded. Checked to fail (5 runs in 5) when a shard's walk
/// keeps every node it meets instead of one per key ("S3Fifo round 901: key 186 yielded
/// twice": a key removed after the walk passed it, and written back into an earlier tombstone
/// of a probe run that wraps round the table's end, is met again).
#[test]
fn iter_yields_each_key_once_and_every_untouched_entry_while_writers_churn() {
    for policy in [Policy::S3Fifo, Policy::Lru] {
        within(Duration::from_secs(120), move || churn(policy, false));
    }
}

#[test]
fn iter_yields_each_key_once_while_writers_churn_and_clear() {
    for policy in [Policy::S3Fifo, Policy::Lru] {
        within(Duration::from_secs(120), move || churn(policy, true));
    }
}

fn churn(policy: Policy, clears: bool) {
    let time = MockClock::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(48)
        .shards(2)
        .policy(policy)
        .weigher(|k: &u64, _: &u64| u32::from(*k >= STABLE))
        .clock(time.clock())
        .per_entry_ttl()
        .without_janitor()
        .build()
        .unwrap();
    for k in 0..STABLE {
        c.insert(k, k);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let (c, stop) = (c.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Live keys from `STABLE` on, and keys from 10,000 on written expired.
                    let k = STABLE + x % 200;
                    match x >> 60 {
                        0..=7 => c.insert(k, x),
                        8..=9 => {
                            c.remove(&k);
                        }
                        // Back at once, often into an earlier slot of its probe run.
                        10..=11 => {
                            c.remove(&k);
                            c.insert(k, x);
                        }
                        12 => c.insert_with_ttl(10_000 + k, 0, Duration::ZERO).unwrap(),
                        13 if clears && n.is_multiple_of(512) => {
                            // Clears remove the stable keys too: put them back at once.
                            c.clear();
                            for s in 0..STABLE {
                                c.insert(s, s);
                            }
                        }
                        _ => c.insert(k, x ^ 1),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for round in 0..20_000 {
        let mut seen = HashSet::new();
        for (k, _) in c.iter() {
            assert!(
                seen.insert(k),
                "{policy:?} round {round}: key {k} yielded twice"
            );
            assert!(
                k < 10_000,
                "{policy:?} round {round}: expired key {k} yielded"
            );
        }
        if !clears {
            for k in 0..STABLE {
                assert!(
                    seen.contains(&k),
                    "{policy:?} round {round}: {k} not yielded"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // The walks raced growth and eviction, not a quiet cache.
    let s = c.stats();
    assert!(s.inserts > 1000 && s.evictions > 0, "{policy:?}: {s:?}");
    c.validate().unwrap();
}

/// Each thread reads keys 0..200 (0..100 present: hits; 100..200 absent: misses), loads
/// its own keys twice with `get_with` (a miss, then a hit), and calls `peek` and
/// `contains_key`, which count nothing. More threads than stripes, in waves, so that some
/// count on the shared stripe and others take over the stripes of threads that exited.
#[test]
fn read_counts_add_up_over_many_threads() {
    within(Duration::from_secs(120), || {
        let c: Cache<u64, u64> = Cache::builder().max_capacity(100_000).build().unwrap();
        for k in 0..100 {
            c.insert(k, k);
        }
        let threads = 40u64;
        for wave in 0..3u64 {
            std::thread::scope(|s| {
                for t in 0..threads {
                    let c = &c;
                    s.spawn(move || {
                        for k in 0..200 {
                            assert_eq!(c.get(&k).is_some(), k < 100);
                            let _ = (c.peek(&k), c.contains_key(&k));
                        }
                        let base = 1_000 + (wave * threads + t) * 100;
                        for k in base..base + 100 {
                            assert_eq!(c.get_with(k, || k), k);
                            assert_eq!(c.get_with(k, || unreachable!()), k);
                        }
                    });
                }
            });
        }
        let s = c.stats();
        let calls = 3 * threads;
        assert_eq!((s.hits, s.misses), (calls * 200, calls * 200), "{s:?}");
        c.reset_stats();
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts), (0, 0, 0));
        assert_eq!(s.hit_ratio(), 0.0);
    });
}

/// `reset_stats` on one thread racing readers on others and snapshots on a third: no
/// snapshot shows more than the reads made, and once the readers stop, a reset zeroes what
/// they counted. Checked to fail when `ReadCounters::sum` takes the baseline off with a
/// wrapping subtraction: a snapshot whose sums are older than the baseline a racing reset
/// raised showed `hits: 18446744073709542030`.
#[test]
fn reset_stats_racing_readers_never_shows_a_wrapped_count() {
    within(Duration::from_secs(120), || {
        let c: Cache<u64, u64> = Cache::builder().max_capacity(1000).build().unwrap();
        c.insert(1, 1);
        let reads = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads: Vec<_> = (0..4)
            .map(|t| {
                let (c, stop, reads) = (c.clone(), Arc::clone(&stop), Arc::clone(&reads));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Counted here first; the fence orders it before the read's count,
                        // for a snapshot that sees that count (the fence below).
                        reads.fetch_add(1, Ordering::Relaxed);
                        fence(Ordering::Release);
                        c.get(&(t % 2));
                    }
                })
            })
            .collect();
        let (resetter, halt) = (c.clone(), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                resetter.reset_stats();
            }
        }));
        for _ in 0..100_000 {
            let s = c.stats();
            fence(Ordering::Acquire);
            // Every read the snapshot counted is counted here.
            let made = reads.load(Ordering::Relaxed);
            assert!(
                s.hits.saturating_add(s.misses) <= made,
                "{s:?} after {made} reads"
            );
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        c.reset_stats();
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (0, 0));
        c.get(&1);
        c.get(&2);
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (1, 1));
    });
}

/// A loop over `iter` that writes to the cache as it goes (inserts, removals, a clear, a
/// reset of the stats): no lock is held between items, so nothing waits or panics, and each
/// key still comes once.
#[test]
fn iter_with_writes_inside_the_loop() {
    within(Duration::from_secs(60), || {
        let c: Cache<u64, u64> = Cache::builder()
            .max_capacity(10_000)
            .shards(4)
            .build()
            .unwrap();
        for k in 0..1000 {
            c.insert(k, k);
        }
        let mut seen = HashSet::new();
        for (k, v) in c.iter() {
            assert!(seen.insert(k), "{k} twice");
            c.insert(k, v + 1);
            c.insert(k + 100_000, 0);
            c.remove(&(k + 1));
            if k == 500 {
                c.clear();
            }
            let _ = (c.len(), c.stats(), c.get(&k));
            c.reset_stats();
        }
        c.validate().unwrap();
    });
}
