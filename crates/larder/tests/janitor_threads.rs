//! The janitor's threads come and go with the caches that need them. In a test binary of its
//! own: it counts the process's threads, which other tests running in parallel would change.
#![cfg(target_os = "linux")]

use larder::{Cache, Janitor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The name every janitor thread carries.
const JANITOR: &str = "larder-janitor";

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

fn janitor_threads() -> usize {
    thread_names().iter().filter(|n| *n == JANITOR).count()
}

/// Counts its drops, to show a dropped cache frees its entries.
struct Tracked(Arc<AtomicUsize>);

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked(Arc::clone(&self.0))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits (20 s at most) for `done`, which a drop makes true either at once or, when the
/// janitor's pass held the cache it dropped (it upgrades its weak reference for each tick),
/// as soon as that tick ends on the janitor thread.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !done() && std::time::Instant::now() < until {
        std::thread::yield_now();
    }
    assert!(done(), "{what}");
}

fn ttl_cache<V: Clone + Send + Sync + 'static>(janitor: Option<Janitor>) -> Cache<u64, V> {
    let builder = Cache::builder()
        .max_capacity(1000)
        .time_to_live(Duration::from_secs(60));
    match janitor {
        Some(j) => builder.janitor(j),
        None => builder,
    }
    .build()
    .unwrap()
}

#[test]
fn janitor_threads_start_with_the_first_expiring_cache_and_end_with_the_last() {
    let threads_before = thread_names().len();
    assert_eq!(janitor_threads(), 0);

    let plain: Cache<u64, u64> = Cache::new(100);
    assert_eq!(
        janitor_threads(),
        0,
        "a cache without expiry needs no janitor"
    );

    let a: Cache<u64, u64> = ttl_cache(None);
    let b: Cache<u64, u64> = ttl_cache(None);
    assert_eq!(janitor_threads(), 1, "one shared janitor serves both");
    let dedicated: Cache<u64, u64> = ttl_cache(Some(Janitor::dedicated(Duration::from_millis(50))));
    assert_eq!(
        janitor_threads(),
        2,
        "a dedicated janitor has a thread of its own"
    );
    let manual: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(1))
        .without_janitor()
        .build()
        .unwrap();
    assert_eq!(janitor_threads(), 2);

    let drops = Arc::new(AtomicUsize::new(0));
    let tracked: Cache<u64, Tracked> = ttl_cache(None);
    for k in 0..100 {
        tracked.insert(k, Tracked(Arc::clone(&drops)));
    }
    drops.store(0, Ordering::SeqCst);
    let clone = tracked.clone();
    drop(tracked);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "a handle is still alive");
    drop(clone);
    eventually("the last handle frees every entry", || {
        drops.load(Ordering::SeqCst) == 100
    });

    drop(dedicated);
    eventually("the dedicated janitor's thread is gone", || {
        janitor_threads() == 1
    });
    drop(a);
    assert_eq!(janitor_threads(), 1, "b still needs the shared janitor");
    drop(b);
    eventually("no janitor thread is left behind", || {
        janitor_threads() == 0 && !Janitor::shared().is_running()
    });
    drop((plain, manual));
    assert_eq!(thread_names().len(), threads_before);

    // And a new expiring cache brings the shared janitor back.
    let again: Cache<u64, u64> = ttl_cache(None);
    assert_eq!(janitor_threads(), 1);
    // As above: a tick that holds the cache when its handle drops ends it on the janitor
    // thread, which then finds nothing left to serve (a clean-clone CI run met it here).
    drop(again);
    eventually("the shared janitor ends with the last cache again", || {
        janitor_threads() == 0
    });

    // A listener that drops the cache's last handle on the janitor's thread, as the tick's
    // expiry tells it of an entry: the cache goes there, when the tick lets go of it, and its
    // registration's drop, the janitor's last, on that very thread, ends it. It cannot join
    // itself; it exits once its pass ends, and no thread is left.
    let time = larder::MockClock::new();
    let slot: Arc<std::sync::Mutex<Option<Cache<u64, u64>>>> = Arc::default();
    let heard = Arc::new(AtomicUsize::new(0));
    let cache: Cache<u64, u64> = {
        let (slot, heard) = (Arc::clone(&slot), Arc::clone(&heard));
        Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(1))
            .clock(time.clock())
            .janitor(Janitor::dedicated(Duration::from_millis(1)))
            .eviction_listener(move |_, _, _| {
                drop(slot.lock().unwrap().take());
                heard.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap()
    };
    cache.insert(1, 1);
    *slot.lock().unwrap() = Some(cache);
    assert_eq!(janitor_threads(), 1);
    time.advance(Duration::from_secs(2));
    eventually("the janitor expires the entry", || {
        heard.load(Ordering::SeqCst) == 1
    });
    eventually("the janitor that dropped its last cache is gone", || {
        janitor_threads() == 0
    });
    assert_eq!(thread_names().len(), threads_before);
}
