//! The keys the cache evicted or expired on its own, waiting for their deletes to be appended
//! (step 2 of the module doc in `mod.rs`).
//!
//! Every write looks at this queue before it returns, and almost every time it is empty: a
//! write evicts only when the cache is full, and a replacement never does. A look that takes
//! the queue's lock stores to the lock's cache line, so at two threads each write used to pull
//! that line from the other core (in a profile of two threads' inserts, the lock's
//! compare-exchange took more than half of `DurableCache::insert`'s own samples). So beside
//! the keys there is a flag, stored only when it changes, and a look at an empty queue reads
//! the flag alone.
//!
//! **Taken is not recorded.** Any write drains the queue, not only the one whose insert
//! evicted the keys, and a write returns promising that the deletes of what it evicted are
//! appended (and, in `Always` mode, synced). So a drain runs under a lock from the moment it
//! takes the keys until their deletes are appended, the flag stays set until then, and the
//! drain leaves behind the sequence number after the last delete appended: a write that finds
//! the flag clear knows every key queued before its look is recorded below that number, and
//! one that finds it set waits for the drain in progress and drains the rest itself. Without
//! this, a write whose evictions another thread had just taken returned before their deletes
//! were appended, and a crash then brought the evicted entries back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::lock;

/// Keys queued by the cache's removal observer, recorded by the next write or sync.
pub(super) struct EvictedKeys<K> {
    keys: Mutex<Vec<K>>,
    /// Whether `keys` may hold something, or a drain has taken keys whose deletes it has not
    /// yet appended. Changed only with `keys` locked: set after a push, cleared by a drain
    /// (holding `draining`) that finds the queue empty once its deletes are appended.
    queued: AtomicBool,
    /// Held by a drain from its first take to its last append, so that drains run one at a
    /// time and a write that must see the keys recorded can wait for the one in progress.
    draining: Mutex<()>,
    /// One past the sequence number of the last delete a drain appended (0 before any).
    recorded_through: AtomicU64,
}

impl<K> Default for EvictedKeys<K> {
    fn default() -> Self {
        Self {
            keys: Mutex::new(Vec::new()),
            queued: AtomicBool::new(false),
            draining: Mutex::new(()),
            recorded_through: AtomicU64::new(0),
        }
    }
}

impl<K> EvictedKeys<K> {
    /// Queues `key`.
    pub(super) fn push(&self, key: K) {
        let mut keys = lock(&self.keys);
        keys.push(key);
        // Relaxed: every store of the flag is made with `keys` locked, so the lock orders
        // them; a drain that reads `true` locks `keys` before it reads the keys.
        self.queued.store(true, Ordering::Relaxed);
    }

    /// Whether keys may be queued (or taken by a drain that has not appended their deletes
    /// yet). Relaxed: a push that this look misses is recorded by a later write or sync.
    pub(super) fn is_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed)
    }

    /// Records every key queued so far: `record` appends a key's delete and returns its
    /// sequence number (`None` if the key needs none). Waits for a drain in progress on
    /// another thread. Returns one past the last delete any drain appended: once this
    /// returns `Ok`, every key pushed before the call (on this thread, or on one this thread
    /// has synchronised with since) has its delete appended below that number.
    ///
    /// # Errors
    /// `record`'s, and the flag stays set. The key `record` failed on is dropped (its delete
    /// cannot be written: a failed log refuses every later append, and a key codec that
    /// refuses the key once will again); the keys taken after it go back to the queue for the
    /// next drain, also when `record` panics, so one key does not cost the others their
    /// deletes.
    pub(super) fn drain<E>(
        &self,
        mut record: impl FnMut(K) -> Result<Option<u64>, E>,
    ) -> Result<u64, E> {
        // Acquire: pairs with the Release store of `false` below. A push made before this
        // call stored `true` before it returned, so this load sees that or a later value; a
        // later `false` comes from a drain that found the queue empty after that push, once
        // the push's key had been taken and recorded by it or by an earlier drain (both held
        // `draining` while recording, and released it before that drain took it): their
        // stores to `recorded_through` happen before the load after this one.
        if self.queued.load(Ordering::Acquire) {
            let _draining = lock(&self.draining);
            loop {
                let keys = {
                    let mut keys = lock(&self.keys);
                    if keys.is_empty() {
                        // Release: pairs with the Acquire above.
                        self.queued.store(false, Ordering::Release);
                        break;
                    }
                    std::mem::take(&mut *keys)
                };
                let mut taken = Requeue {
                    queue: &self.keys,
                    rest: keys.into_iter(),
                };
                for key in taken.rest.by_ref() {
                    if let Some(seq) = record(key)? {
                        // Relaxed: published by the Release store of `false` and by the
                        // `draining` lock, which every reader goes through first.
                        self.recorded_through.fetch_max(seq + 1, Ordering::Relaxed);
                    }
                }
            }
        }
        // Relaxed: ordered after the recording by the Acquire load or the lock above.
        Ok(self.recorded_through.load(Ordering::Relaxed))
    }
}

/// The keys a drain has taken and not yet recorded; whatever is left of them when it is
/// dropped (an error or a panic in the middle of the batch) goes back to the queue.
struct Requeue<'a, K> {
    queue: &'a Mutex<Vec<K>>,
    rest: std::vec::IntoIter<K>,
}

impl<K> Drop for Requeue<'_, K> {
    fn drop(&mut self) {
        if self.rest.len() > 0 {
            // The queue's flag is still set: the drain that took these has not cleared it.
            lock(self.queue).extend(self.rest.by_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Drains `q`, numbering each key's delete from `next`; returns the keys and what the
    /// drain returned.
    fn drain_all(q: &EvictedKeys<u64>, next: &mut u64) -> (Vec<u64>, u64) {
        let mut got = Vec::new();
        let through = q
            .drain(|key| {
                got.push(key);
                *next += 1;
                Ok::<_, ()>(Some(*next - 1))
            })
            .unwrap();
        (got, through)
    }

    /// A key whose delete fails to record costs only itself: the keys after it in the batch
    /// go to the next drain, after an error and after a panic alike.
    #[test]
    fn a_key_that_fails_to_record_costs_only_itself() {
        let q = EvictedKeys::default();
        for key in 1..=4 {
            q.push(key);
        }
        let mut seen = Vec::new();
        let failed = q.drain(|key| {
            seen.push(key);
            if key == 2 {
                Err("key 2")
            } else {
                Ok(Some(key))
            }
        });
        assert_eq!((failed, &seen[..]), (Err("key 2"), &[1, 2][..]));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.drain(|key| -> Result<Option<u64>, ()> {
                assert_ne!(key, 3, "a codec that panics");
                Ok(Some(key))
            })
        }));
        assert!(panicked.is_err());
        let mut next = 10;
        assert_eq!(drain_all(&q, &mut next), (vec![4], 11));
    }

    #[test]
    fn drains_what_was_pushed_once() {
        let q = EvictedKeys::default();
        let mut next = 10;
        assert_eq!(drain_all(&q, &mut next), (vec![], 0));
        q.push(1);
        q.push(2);
        assert_eq!(drain_all(&q, &mut next), (vec![1, 2], 12));
        assert_eq!(drain_all(&q, &mut next), (vec![], 12), "taken once");
        q.push(3);
        assert_eq!(
            drain_all(&q, &mut next),
            (vec![3], 13),
            "the flag is set again after a drain"
        );
        q.push(4);
        assert_eq!(q.drain(|_| Ok::<_, ()>(None)), Ok(13), "no delete appended");
    }

    #[test]
    fn a_drain_waits_for_the_one_in_progress_and_returns_past_its_deletes() {
        // Thread `slow` takes key 1 and is held before it records it; a drain on this
        // thread meanwhile must not return before key 1 is recorded, nor with a number that
        // does not cover it.
        let q = Arc::new(EvictedKeys::default());
        q.push(1u64);
        let (taken, on_taken) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let recorded = Arc::new(AtomicBool::new(false));
        let slow = {
            let (q, recorded) = (Arc::clone(&q), Arc::clone(&recorded));
            std::thread::spawn(move || {
                q.drain(|key| {
                    taken.send(key).unwrap();
                    released.recv().unwrap();
                    recorded.store(true, Ordering::SeqCst);
                    Ok::<_, ()>(Some(41))
                })
            })
        };
        assert_eq!(on_taken.recv().unwrap(), 1);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            release.send(()).unwrap();
        });
        let mut next = 50;
        assert_eq!(drain_all(&q, &mut next), (vec![], 42));
        assert!(
            recorded.load(Ordering::SeqCst),
            "returned before key 1 was recorded"
        );
        assert_eq!(slow.join().unwrap(), Ok(42));
        releaser.join().unwrap();
    }

    #[test]
    fn every_key_pushed_by_other_threads_is_drained_exactly_once() {
        let q = Arc::new(EvictedKeys::default());
        let drainers_done = Arc::new(AtomicBool::new(false));
        let pushers: Vec<_> = (0..2u64)
            .map(|t| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for k in 0..20_000 {
                        q.push(t * 1_000_000 + k);
                    }
                })
            })
            .collect();
        let drainer = {
            let (q, done) = (Arc::clone(&q), Arc::clone(&drainers_done));
            std::thread::spawn(move || {
                let (mut got, mut next) = (Vec::new(), 0);
                while !done.load(Ordering::Acquire) {
                    got.extend(drain_all(&q, &mut next).0);
                }
                got
            })
        };
        for p in pushers {
            p.join().unwrap();
        }
        drainers_done.store(true, Ordering::Release);
        let mut got = drainer.join().unwrap();
        // Every push happened before this drain (the joins), so nothing may be left behind.
        got.extend(drain_all(&q, &mut 0).0);
        got.sort_unstable();
        let mut want: Vec<u64> = (0..2u64)
            .flat_map(|t| (0..20_000).map(move |k| t * 1_000_000 + k))
            .collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
