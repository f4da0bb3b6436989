//! Single-flight loading: `get_with` and `try_get_with`.
//!
//! Waiting is checked with barriers and channels, never with sleeps: where a test must know
//! that other threads are already blocked on a load, it polls for that state.

mod common;

use common::{hold_a_load, DropBomb};
use larder_core::Cache;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

#[test]
fn concurrent_callers_run_init_once() {
    let cache: Cache<u64, u64> = Cache::new(100);
    let runs = Arc::new(AtomicUsize::new(0));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, runs, barrier, rx) = (
                cache.clone(),
                runs.clone(),
                barrier.clone(),
                release_rx.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                cache.get_with(7, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Hold the load open until the test lets it finish.
                    rx.lock().unwrap().recv().unwrap();
                    42
                })
            })
        })
        .collect();
    // Wait until the load started, then let it finish.
    while runs.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    release_tx.send(()).unwrap();
    for h in handles {
        assert_eq!(h.join().unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get(&7), Some(42));
    let s = cache.stats();
    assert_eq!(s.misses, 1, "only the loader misses");
    assert_eq!(s.hits, threads as u64, "the waiters and the final get hit");
}

fn fib(cache: &Cache<u64, u128>, n: u64) -> u128 {
    if n < 2 {
        return u128::from(n);
    }
    cache.get_with(n, || fib(cache, n - 1) + fib(cache, n - 2))
}

#[test]
fn recursive_memoization_does_not_deadlock() {
    // Every key lands in the one shard of a small cache, and `init` re-enters the cache for
    // other keys of that shard: this only works if `init` runs without the shard lock.
    let cache: Cache<u64, u128> = Cache::new(256);
    assert_eq!(fib(&cache, 90), 2_880_067_194_370_816_120);
    assert_eq!(cache.len(), 89);
}

#[test]
fn a_panicking_init_reaches_its_caller_and_a_waiter_takes_over() {
    let cache: Cache<u64, u64> = Cache::new(100);
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (fail_tx, fail_rx) = mpsc::channel::<()>();
    let loader = {
        let cache = cache.clone();
        thread::spawn(move || {
            catch_unwind(AssertUnwindSafe(|| {
                cache.get_with(1, || {
                    started_tx.send(()).unwrap();
                    fail_rx.recv().unwrap();
                    panic!("init failed on purpose");
                })
            }))
        })
    };
    started_rx.recv().unwrap();
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.get_with(1, || 2))
    };
    // The waiter is either blocked on the flight or has not reached it yet; both are fine.
    fail_tx.send(()).unwrap();
    let err = loader.join().unwrap().unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"init failed on purpose"));
    assert_eq!(waiter.join().unwrap(), 2);
    assert_eq!(cache.get(&1), Some(2));
    cache.validate().unwrap();
    // Nothing stuck: the key loads again after a removal.
    cache.remove(&1);
    assert_eq!(cache.get_with(1, || 3), 3);
}

/// With several callers waiting on a load whose `init` panics, exactly one of them loads
/// again and the others wait on that load, never two `init`s at once; the panic reaches the
/// loader's caller alone, and every waiter is released with the new load's value. Stats: the
/// failed load and the one that replaced it each missed once, and every other waiter hit.
#[test]
fn a_panicking_init_hands_its_waiters_exactly_one_new_load() {
    let cache: Cache<u64, u64> = Cache::new(100);
    let (loader, fail) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            catch_unwind(AssertUnwindSafe(|| {
                cache.get_with(1, || {
                    hold();
                    panic!("init failed on purpose")
                })
            }))
        }
    });
    let waiters = 3;
    let (runs, running) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..waiters {
        let (cache, runs, running, done_tx) = (
            cache.clone(),
            runs.clone(),
            running.clone(),
            done_tx.clone(),
        );
        thread::spawn(move || {
            let got = catch_unwind(AssertUnwindSafe(|| {
                cache.get_with(1, || {
                    assert_eq!(
                        running.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two loads at once"
                    );
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Lets the other waiters find this load and block on it.
                    let_waiters_block();
                    running.fetch_sub(1, Ordering::SeqCst);
                    2
                })
            }));
            done_tx.send(got.ok()).unwrap();
        });
    }
    let_waiters_block();
    fail.send(()).unwrap();
    let err = loader.join().unwrap().unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"init failed on purpose"));
    for _ in 0..waiters {
        let got = done_rx.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(
            got,
            Ok(Some(2)),
            "a waiter was released, with the new load's value"
        );
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "exactly one waiter loaded again"
    );
    let s = cache.stats();
    assert_eq!((s.misses, s.hits, s.inserts), (2, waiters - 1, 1));
    cache.validate().unwrap();
}

#[test]
fn a_weigher_that_panics_on_a_loaded_value_leaves_nothing_stuck() {
    // User code runs after `init` returns too: the weigher (and `V::clone`). A panic there
    // reaches the loader as one in `init` does, and the key loads again, on any thread.
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .weigher(|_: &u64, v: &u64| {
            assert_ne!(*v, 0, "the weigher refuses 0");
            1
        })
        .build()
        .unwrap();
    let err = catch_unwind(AssertUnwindSafe(|| cache.get_with(1, || 0))).unwrap_err();
    let message = err
        .downcast_ref::<String>()
        .expect("assert_ne!'s formatted message");
    assert!(message.contains("the weigher refuses 0"), "{message}");
    cache.validate().unwrap();
    let (tx, rx) = mpsc::channel();
    let other = cache.clone();
    thread::spawn(move || tx.send(other.get_with(1, || 5)).unwrap());
    let loaded = rx.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(loaded, Ok(5), "another thread loads the key");
    cache.remove(&1);
    // Not taken for a call from inside its own `init`.
    assert_eq!(cache.get_with(1, || 6), 6);
}

#[test]
fn try_get_with_caches_only_ok_and_shares_the_error() {
    let cache: Cache<u64, u64> = Cache::new(100);
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let runs = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, barrier, rx, runs) = (
                cache.clone(),
                barrier.clone(),
                release_rx.clone(),
                runs.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                cache.try_get_with(5, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    rx.lock().unwrap().recv().unwrap();
                    Err::<u64, String>("backend down".to_string())
                })
            })
        })
        .collect();
    while runs.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    // Let every load that starts fail (late arrivals may start a second load after the first
    // failure; each gets an error all the same).
    for _ in 0..threads {
        let _ = release_tx.send(());
    }
    let errors: Vec<Arc<String>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap_err())
        .collect();
    assert!(errors.iter().all(|e| e.as_str() == "backend down"));
    // Callers that waited on the same failed load hold the very same Arc.
    let distinct_loads = runs.load(Ordering::SeqCst);
    let distinct_arcs = {
        let mut ptrs: Vec<_> = errors.iter().map(Arc::as_ptr).collect();
        ptrs.sort();
        ptrs.dedup();
        ptrs.len()
    };
    assert_eq!(distinct_arcs, distinct_loads);
    assert_eq!(cache.get(&5), None, "a failure is not cached");
    assert_eq!(cache.try_get_with(5, || Ok::<u64, String>(9)), Ok(9));
    assert_eq!(cache.get(&5), Some(9));
}

#[test]
fn waiters_of_one_failed_load_share_one_arc() {
    // Deterministic version: the waiter is known to be blocked before the load fails.
    let cache: Cache<u64, u64> = Cache::new(100);
    let (loader, fail) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            cache.try_get_with(3, || -> Result<u64, &'static str> {
                hold();
                Err("no")
            })
        }
    });
    let waiter_started = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (cache, flag) = (cache.clone(), waiter_started.clone());
        thread::spawn(move || {
            flag.store(1, Ordering::SeqCst);
            cache.try_get_with(3, || -> Result<u64, &'static str> {
                panic!("the waiter must not load: the key is in flight")
            })
        })
    };
    while waiter_started.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    // Give the waiter every chance to block on the flight (it cannot load: see its init).
    let_waiters_block();
    fail.send(()).unwrap();
    let a = loader.join().unwrap().unwrap_err();
    // If the waiter arrived only after the failure, it ran its own init, which panics by design;
    // otherwise it waited on this very load and must share its error.
    if let Ok(result) = waiter.join() {
        let b = result.unwrap_err();
        assert!(Arc::ptr_eq(&a, &b));
    }
}

#[test]
#[should_panic(expected = "from inside the `init` that is loading that same key")]
fn reentrant_get_with_for_the_same_key_panics() {
    let cache: Cache<u64, u64> = Cache::new(10);
    cache.get_with(1, || cache.get_with(1, || 0));
}

/// The call for its own key from inside `init` (above) asked for a key that holds no value,
/// and counts a miss before it panics, so that every call counts one hit or one miss, as
/// Python's `cache_info()` counts each call (a memoized body that catches the panic makes two
/// calls). It counted nothing: one miss for the two calls.
#[test]
fn a_call_for_its_own_key_from_inside_init_counts_a_miss() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let loaded = cache.get_with(1, || {
        let own = catch_unwind(AssertUnwindSafe(|| cache.get_with(1, || 0)));
        assert!(own.is_err(), "the call for its own key panics");
        5
    });
    assert_eq!(loaded, 5);
    let s = cache.stats();
    assert_eq!(
        (s.hits, s.misses),
        (0, 2),
        "two calls, neither of which found a value"
    );
}

#[test]
fn an_insert_during_a_load_wins() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let v = cache.get_with(1, || {
        cache.insert(1, 100);
        5
    });
    assert_eq!(v, 5, "the loader still gets its value");
    assert_eq!(
        cache.get(&1),
        Some(100),
        "the newer insert is not overwritten"
    );
    cache.validate().unwrap();
}

#[test]
fn a_remove_during_a_load_detaches_it() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let v = cache.get_with(1, || {
        assert_eq!(
            cache.remove(&1),
            None,
            "a load in flight has no value to remove"
        );
        cache.clear();
        5
    });
    assert_eq!(v, 5);
    assert_eq!(
        cache.get(&1),
        None,
        "the removal happened after the load began"
    );
    cache.validate().unwrap();
}

/// A `clear` while a load runs detaches the load, as a `remove` does (the test above detaches
/// it with its `remove` before its `clear`): a call after the clear loads afresh instead of
/// taking itself for the running `init`, and the value loaded before the clear goes to its
/// caller without being stored over what came after.
#[test]
fn a_clear_during_a_load_detaches_it() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let v = cache.get_with(1, || {
        cache.clear();
        assert_eq!(cache.get_with(1, || 6), 6, "the cleared key loads afresh");
        5
    });
    assert_eq!(v, 5, "the loader still gets its value");
    assert_eq!(
        cache.get(&1),
        Some(6),
        "the load that began before the clear stored nothing"
    );
    cache.validate().unwrap();
}

#[test]
fn try_get_with_unshared_returns_each_caller_its_own_error() {
    // io::Error is neither Clone nor shareable by value: the loader gets its own, and a caller
    // that was waiting runs a load of its own, never two at once.
    let cache: Cache<u64, u64> = Cache::new(100);
    let running = Arc::new(AtomicUsize::new(0));
    let (loader, fail) = hold_a_load({
        let (cache, running) = (cache.clone(), running.clone());
        move |hold| {
            cache.try_get_with_unshared(3, || {
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0);
                hold();
                running.fetch_sub(1, Ordering::SeqCst);
                Err(std::io::Error::other("backend down"))
            })
        }
    });
    let waiter = {
        let (cache, running) = (cache.clone(), running.clone());
        thread::spawn(move || {
            cache.try_get_with_unshared(3, || {
                assert_eq!(
                    running.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two loads at once"
                );
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<u64, std::io::Error>(7)
            })
        })
    };
    let_waiters_block();
    fail.send(()).unwrap();
    let own = loader.join().unwrap().unwrap_err();
    assert_eq!(own.to_string(), "backend down");
    assert_eq!(
        waiter.join().unwrap().unwrap(),
        7,
        "the waiter loaded for itself"
    );
    assert_eq!(cache.get(&3), Some(7));
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (1, 2), "two loads, one hit");
}

#[test]
fn try_get_with_unshared_does_not_take_a_shared_error() {
    // A try_get_with load of the same key and error type fails while an unshared caller waits:
    // the unshared caller loads for itself instead of receiving the shared Arc.
    let cache: Cache<u64, u64> = Cache::new(100);
    let (loader, fail) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            cache.try_get_with(4, || -> Result<u64, String> {
                hold();
                Err("shared".into())
            })
        }
    });
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.try_get_with_unshared(4, || Err::<u64, String>("own".into())))
    };
    let_waiters_block();
    fail.send(()).unwrap();
    assert_eq!(*loader.join().unwrap().unwrap_err(), "shared");
    assert_eq!(waiter.join().unwrap().unwrap_err(), "own");
}

#[test]
fn optionally_get_with_caches_some_and_shares_none() {
    let cache: Cache<u64, u64> = Cache::new(100);
    assert_eq!(cache.optionally_get_with(1, || None), None);
    assert_eq!(cache.get(&1), None, "None is not cached");
    assert_eq!(cache.optionally_get_with(1, || Some(5)), Some(5));
    assert_eq!(
        cache.optionally_get_with(1, || None),
        Some(5),
        "Some is cached"
    );

    // A caller waiting on a load that finds nothing gets None without loading itself.
    let (loader, done) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            cache.optionally_get_with(2, || {
                hold();
                None
            })
        }
    });
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.optionally_get_with(2, || -> Option<u64> {
                panic!("the waiter must not load: the key is in flight")
            })
        })
    };
    let_waiters_block();
    done.send(()).unwrap();
    assert_eq!(loader.join().unwrap(), None);
    // If the waiter arrived only after the load ended, its init ran and panicked by design.
    if let Ok(result) = waiter.join() {
        assert_eq!(result, None);
    }
    assert_eq!(cache.get(&2), None);
}

/// Yields for a while, so that threads that ask for a held load's key can block on its flight.
fn let_waiters_block() {
    for _ in 0..if cfg!(miri) { 20 } else { 1000 } {
        thread::yield_now();
    }
}

/// A failed load unpublishes its pending node under the shard lock, and releasing the lock
/// frees what the loader's thread removed earlier, running those values' `Drop`. One that
/// panics there reaches the loader's caller, and the callers waiting on the load must be
/// released all the same, not wait forever: they are, before the unlock, with the load's
/// error.
#[test]
fn a_failed_load_whose_unlock_panics_releases_its_waiters() {
    let cache: Cache<u64, DropBomb> = Cache::new(100);
    let (loader, fail) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            // Removed on this thread, so freed by it, at its first unlock once no reader can
            // hold it: its batch is sealed here, and only the pins of the reads in `init`
            // move the epoch on until the batch may be freed (reads free nothing themselves),
            // so the unlock that publishes the load comes too early, and the one that
            // unpublishes it frees the value.
            cache.insert(100, DropBomb { armed: true });
            drop(cache.remove(&100));
            cache.run_pending_tasks();
            cache.try_get_with(1, || -> Result<DropBomb, &'static str> {
                hold();
                for _ in 0..if cfg!(miri) { 2_000 } else { 100_000 } {
                    drop(cache.get(&100));
                }
                Err("no")
            })
        }
    });
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || {
            let got = cache.try_get_with(1, || Ok::<_, &'static str>(DropBomb { armed: false }));
            done_tx.send(got.is_ok()).unwrap();
        })
    };
    let_waiters_block();
    fail.send(()).unwrap();
    let failed = loader.join();
    let released = done_rx.recv_timeout(std::time::Duration::from_secs(60));
    assert!(
        failed.is_err(),
        "the removed value's drop ran at the failed load's unlock"
    );
    // Woken before the unlock, the waiter has the load's error; had it arrived only after the
    // failure, it loaded for itself. Either way it ends.
    assert!(
        released.is_ok(),
        "the waiter of the failed load was released: {released:?}"
    );
    waiter.join().unwrap();
    cache.validate().unwrap();
}

/// A value whose `Drop` loads its key again (`get_with`, which the cache's docs allow in a
/// `Drop`: it runs with no lock held), when `rewarm` is set.
struct Rewarm {
    cache: Cache<u64, Rewarm>,
    key: u64,
    rewarm: bool,
}

impl Clone for Rewarm {
    fn clone(&self) -> Self {
        Rewarm {
            cache: self.cache.clone(),
            rewarm: false,
            ..*self
        }
    }
}

impl Drop for Rewarm {
    fn drop(&mut self) {
        if self.rewarm && !thread::panicking() {
            let (cache, key) = (self.cache.clone(), self.key);
            cache.get_with(key, || Rewarm {
                cache: cache.clone(),
                key,
                rewarm: false,
            });
        }
    }
}

/// A thread frees what it removed at one of its later unlocks, and the unlock that publishes
/// a load's pending entry was one. A freed value whose `Drop` loaded the same key then found
/// the pending entry, on its own loader's thread, took itself for that load's `init`, and
/// panicked ("called for a key from inside the `init` that is loading that same key"); the
/// panic abandoned the caller's load, whose `init` never ran.
#[test]
fn a_drop_run_by_a_loads_first_unlock_may_load_the_same_key() {
    let cache: Cache<u64, Rewarm> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .build()
        .unwrap();
    let value = |key, rewarm| Rewarm {
        cache: cache.clone(),
        key,
        rewarm,
    };
    cache.insert(1, value(1, true));
    // Removed here, and its batch sealed; the pins of the reads below move the epoch on until
    // the batch may be freed, which reads never do themselves, so the next write, the load,
    // frees it.
    drop(cache.remove(&1));
    cache.run_pending_tasks();
    for _ in 0..if cfg!(miri) { 2_000 } else { 100_000 } {
        drop(cache.get(&2));
    }
    let runs = AtomicUsize::new(0);
    let loaded = cache.get_with(1, || {
        runs.fetch_add(1, Ordering::SeqCst);
        value(1, false)
    });
    assert_eq!(loaded.key, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the caller's own init ran");
    assert!(cache.contains_key(&1));
    cache.validate().unwrap();
    // The values hold the cache: break the cycle.
    cache.clear();
}

/// The failure of a `try_get_with_unshared` load is its caller's alone: a `try_get_with` of
/// the same key and error type that waited on it is not handed an error, but loads for
/// itself (as after a panic).
#[test]
fn a_shared_waiter_takes_no_error_from_an_unshared_load() {
    let cache: Cache<u64, u64> = Cache::new(100);
    let (loader, fail) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            cache.try_get_with_unshared(5, || -> Result<u64, ()> {
                hold();
                Err(())
            })
        }
    });
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.try_get_with(5, || Ok::<u64, ()>(9)))
    };
    let_waiters_block();
    fail.send(()).unwrap();
    assert_eq!(loader.join().unwrap(), Err(()));
    assert_eq!(
        waiter.join().unwrap(),
        Ok(9),
        "the waiter loaded for itself"
    );
    assert_eq!(cache.get(&5), Some(9));
}
