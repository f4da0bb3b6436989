//! A tour of Larder: `cargo run --release --example tour`.
//!
//! Each step builds something, uses it, and prints what happened.

use larder::{Cache, Durability, DurableCache, IntoDurable, Janitor, Policy, RemovalCause};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    println!("Larder tour\n===========\n");
    memoize();
    bounded();
    concurrent();
    expiring();
    durable();
}

/// Rung 1: compute once, then serve the stored value.
fn memoize() {
    println!("1. Memoization: #[larder::memoize] is functools.lru_cache");
    #[larder::memoize(capacity = 256)]
    fn fib(n: u64) -> u64 {
        if n < 2 {
            n
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }
    println!("   fib(31) = {}", fib(31));
    let s = fib_cache().stats();
    println!(
        "   cache_info: hits={} misses={} maxsize={} currsize={} (Python: 29, 32, 256, 32)",
        s.hits, s.misses, s.capacity, s.len
    );

    // Concurrent callers with the same argument compute once.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    #[larder::memoize(ttl = "1m")]
    fn slow_square(n: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(50));
        n * n
    }
    let callers: Vec<_> = (0..4).map(|_| thread::spawn(|| slow_square(12))).collect();
    let answers: Vec<u64> = callers
        .into_iter()
        .map(|h| h.join().expect("caller"))
        .collect();
    println!(
        "   4 threads asked slow_square(12) at once: {answers:?}, computed {} time(s)",
        CALLS.load(Ordering::Relaxed)
    );

    // A memoized property is a OnceLock in the object (see examples/memoized_property.rs).
    struct Thing {
        prime: std::sync::OnceLock<u64>,
    }
    let mut thing = Thing {
        prime: std::sync::OnceLock::new(),
    };
    let computed = AtomicU64::new(0);
    let read = |thing: &Thing| {
        *thing.prime.get_or_init(|| {
            computed.fetch_add(1, Ordering::Relaxed);
            (2u64..)
                .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
                .nth(9_999)
                .expect("primes never run out")
        })
    };
    let (a, b) = (read(&thing), read(&thing));
    thing.prime.take();
    let c = read(&thing);
    println!(
        "   a memoized property read three times, reset once: {a} {b} {c}, computed {} times\n",
        computed.load(Ordering::Relaxed)
    );
}

/// Rung 2: a bounded cache drops its least valuable entries.
fn bounded() {
    println!("2. A bounded cache: 1,000 entries, S3-FIFO vs LRU under a scan");
    for policy in [Policy::S3Fifo, Policy::Lru] {
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(1_000)
            .policy(policy)
            .build()
            .expect("valid configuration");
        // A hot set of 500 keys read once a round, each round followed by 1,000 one-off keys
        // of a scan: between two reads of a hot key come 1,499 other keys, more than the
        // cache holds, so LRU has always just dropped the key that is asked for next.
        let mut scan = 1_000_000u64;
        for round in 0..100u64 {
            for k in 0..500 {
                if cache.get(&k).is_none() {
                    cache.insert(k, k);
                }
            }
            for _ in 0..1_000 {
                scan += 1;
                if cache.get(&scan).is_none() {
                    cache.insert(scan, round);
                }
            }
        }
        let s = cache.stats();
        println!(
            "   {policy:?}: hit ratio {:.1}%, {} inserts, {} evictions, len {} (capacity {})",
            100.0 * s.hit_ratio(),
            s.inserts,
            s.evictions,
            s.len,
            s.capacity
        );
    }
    println!("   (the hot keys survive the scan under S3-FIFO; LRU lets the scan flush them)\n");
}

/// Lock-free reads from two threads while a writer churns.
fn concurrent() {
    println!("3. Concurrency: two readers, one writer, one shared cache");
    let cache: Cache<u64, Arc<str>> = Cache::new(10_000);
    for k in 0..10_000 {
        cache.insert(k, Arc::from(format!("value-{k}")));
    }
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let cache = cache.clone();
            thread::spawn(move || {
                let mut found = 0u64;
                for i in 0..1_000_000u64 {
                    found += u64::from(cache.get(&((i * 7 + t) % 10_000)).is_some());
                }
                found
            })
        })
        .collect();
    for k in 10_000..20_000 {
        cache.insert(k, Arc::from(format!("value-{k}")));
    }
    let found: u64 = readers.into_iter().map(|h| h.join().expect("reader")).sum();
    let s = cache.stats();
    println!(
        "   2 readers made 2,000,000 gets ({found} hits) while 10,000 inserts evicted {} entries",
        s.evictions
    );
    println!(
        "   len {} <= capacity {}: the bound held throughout\n",
        cache.len(),
        cache.capacity()
    );
}

/// Rung 3: entries that expire, and a janitor that removes them without being asked.
fn expiring() {
    println!("4. Expiry: a 300 ms time-to-live, a janitor ticking every 50 ms");
    let heard: Arc<Mutex<Vec<(u64, RemovalCause)>>> = Arc::default();
    let sink = Arc::clone(&heard);
    let cache: Cache<u64, String> = Cache::builder()
        .max_capacity(1_000)
        .time_to_live(Duration::from_millis(300))
        .janitor(Janitor::dedicated(Duration::from_millis(50)))
        .eviction_listener(move |k, _, cause| sink.lock().unwrap().push((*k, cause)))
        .build()
        .expect("valid configuration");
    let start = Instant::now();
    for k in 0..100 {
        cache.insert(k, format!("session-{k}"));
    }
    // Ten of them get a lifetime of their own: an hour.
    for k in 0..10 {
        cache
            .insert_with_ttl(k, format!("pinned-{k}"), Duration::from_secs(3600))
            .expect("the cache has expiry");
    }
    println!(
        "   100 entries written; key 50 lives {:?} more, key 5 {:?}",
        cache.ttl(&50).unwrap_or_default(),
        cache.ttl(&5).unwrap_or_default()
    );
    while cache.len() > 10 && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    let heard = heard.lock().unwrap();
    let expired = heard
        .iter()
        .filter(|(_, c)| *c == RemovalCause::Expired)
        .count();
    let replaced = heard
        .iter()
        .filter(|(_, c)| *c == RemovalCause::Replaced)
        .count();
    println!(
        "   after {:.0?} with no reads: len {}, the listener heard {expired} expired and {replaced} replaced",
        start.elapsed(),
        cache.len()
    );
    println!(
        "   get(50) = {:?}, get(5) = {:?}: reads never see an expired entry\n",
        cache.get(&50),
        cache.get(&5)
    );
}

/// Rung 4: entries that come back after a restart, exactly the live ones; writers share syncs.
fn durable() {
    println!("5. Durability: persist, restart, recover");
    let dir = std::env::temp_dir().join(format!("larder-tour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = |durability| -> DurableCache<u64, String> {
        Cache::builder()
            .max_capacity(1000)
            .durable(&dir)
            .durability(durability)
            .build()
            .expect("the directory opens")
    };

    let cache = open(Durability::Manual);
    for k in 0..2000u64 {
        cache.insert(k, format!("entry {k}")).expect("logged");
    }
    cache.remove(&1999).expect("logged");
    let mut live: Vec<u64> = cache.iter().map(|(k, _)| k).collect();
    live.sort_unstable();
    let started = Instant::now();
    cache.close().expect("synced");
    println!(
        "   2000 inserts into a 1000-entry cache, one remove: {} live; close() synced in {:.1?}",
        live.len(),
        started.elapsed()
    );

    let started = Instant::now();
    let cache = open(Durability::Always);
    let mut recovered: Vec<u64> = cache.iter().map(|(k, _)| k).collect();
    recovered.sort_unstable();
    println!(
        "   reopened in {:.1?}: {} entries, key 1999 {} (removed), exactly the keys live at close \
         (the {} evicted ones absent): {}",
        started.elapsed(),
        recovered.len(),
        if cache.contains_key(&1999) {
            "present"
        } else {
            "absent"
        },
        1999 - live.len(),
        recovered == live,
    );

    let started = Instant::now();
    let report = cache.compact().expect("compacted");
    println!(
        "   compact(): {} records ({} KiB) rewritten as the {} live ones ({} KiB) in {:.1?}",
        report.records_before,
        report.bytes_before / 1024,
        report.records_after,
        report.bytes_after / 1024,
        started.elapsed(),
    );

    let writers = 8u64;
    let started = Instant::now();
    thread::scope(|s| {
        for t in 0..writers {
            let cache = cache.clone();
            s.spawn(move || {
                for i in 0..50 {
                    cache
                        .insert(10_000 + t * 100 + i, "durable".into())
                        .expect("synced");
                }
            });
        }
    });
    println!(
        "   Durability::Always, {writers} threads x 50 inserts in {:.0?}: {} syncs for {} writes (group commit)",
        started.elapsed(),
        cache.flushes(),
        writers * 50
    );
    let mut before: Vec<(u64, String)> = cache.iter().collect();
    before.sort_unstable();
    drop(cache);
    let cache = open(Durability::Manual);
    let mut after: Vec<(u64, String)> = cache.iter().collect();
    after.sort_unstable();
    println!(
        "   reopened again: {} entries, exactly the live set before the restart: {}\n",
        after.len(),
        after == before
    );
    drop(cache);
    let _ = std::fs::remove_dir_all(&dir);
}
