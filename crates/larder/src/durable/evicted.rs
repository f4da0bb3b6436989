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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::lock;

/// Keys queued by the cache's removal observer, taken by the next write or sync.
pub(super) struct EvictedKeys<K> {
    keys: Mutex<Vec<K>>,
    /// Whether `keys` may hold something. Changed only with `keys` locked: set after a push,
    /// cleared by the take that empties it, so whenever the lock is free, an empty queue
    /// reads `false` and a non-empty one `true`.
    queued: AtomicBool,
}

impl<K> Default for EvictedKeys<K> {
    fn default() -> Self {
        Self {
            keys: Mutex::new(Vec::new()),
            queued: AtomicBool::new(false),
        }
    }
}

impl<K> EvictedKeys<K> {
    /// Queues `key`.
    pub(super) fn push(&self, key: K) {
        let mut keys = lock(&self.keys);
        keys.push(key);
        // Release: pairs with the Acquire in `take`, so a taker that sees the flag sees the
        // push (it locks before reading the keys anyway; this keeps the flag from being seen
        // set before the push it stands for, for a reader that trusts the flag alone).
        self.queued.store(true, Ordering::Release);
    }

    /// Takes every key queued so far. A push that happens before this call (on this thread,
    /// or on one this thread has synchronised with since) is taken by it, unless another
    /// take got it first; a push racing this call is left for the next.
    pub(super) fn take(&self) -> Vec<K> {
        // Acquire: a push that happens before this call stored `true` before it returned, so
        // this load sees `true` or a later value. A later `false` comes from a take that
        // emptied the queue under the lock after that push, so the key is taken either way.
        if !self.queued.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut keys = lock(&self.keys);
        // Relaxed: the lock orders it against every push and take.
        self.queued.store(false, Ordering::Relaxed);
        std::mem::take(&mut *keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn takes_what_was_pushed_once() {
        let q = EvictedKeys::default();
        assert!(q.take().is_empty());
        q.push(1);
        q.push(2);
        assert_eq!(q.take(), vec![1, 2]);
        assert!(q.take().is_empty(), "taken once");
        q.push(3);
        assert_eq!(q.take(), vec![3], "the flag is set again after a take");
    }

    #[test]
    fn every_key_pushed_by_other_threads_is_taken_exactly_once() {
        let q = Arc::new(EvictedKeys::default());
        let takers_done = Arc::new(AtomicBool::new(false));
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
        let taker = {
            let (q, done) = (Arc::clone(&q), Arc::clone(&takers_done));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while !done.load(Ordering::Acquire) {
                    got.extend(q.take());
                }
                got
            })
        };
        for p in pushers {
            p.join().unwrap();
        }
        takers_done.store(true, Ordering::Release);
        let mut got = taker.join().unwrap();
        // Every push happened before this take (the joins), so nothing may be left behind.
        got.extend(q.take());
        got.sort_unstable();
        let mut want: Vec<u64> = (0..2u64)
            .flat_map(|t| (0..20_000).map(move |k| t * 1_000_000 + k))
            .collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
