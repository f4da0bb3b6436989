//! Cache-aside replay of a trace.
//!
//! Every published hit ratio in this project comes from the same loop, the way
//! an application uses a cache in front of a slower store:
//!
//! 1. `get(key)`; if the cache has it, that request is a hit;
//! 2. otherwise it is a miss, the application loads the value and calls
//!    `insert(key)`, and the cache may evict something to make room.
//!
//! The hit ratio is `100 · hits / requests`. A cache under test is wrapped in a
//! [`ReplayCache`] that reports whether `get` found the key; the cache's own
//! statistics are not consulted, so every cache is counted the same way.

/// A cache as the replay sees it: a lookup that says whether it hit, and an
/// insert after a miss.
///
/// ```
/// use larder_trace::replay::{hit_ratio, ReplayCache};
/// use std::collections::HashSet;
///
/// /// A cache without a bound: only first requests miss.
/// struct Unbounded(HashSet<u64>);
///
/// impl ReplayCache for Unbounded {
///     fn get(&mut self, key: u64) -> bool {
///         self.0.contains(&key)
///     }
///     fn insert(&mut self, key: u64) {
///         self.0.insert(key);
///     }
/// }
///
/// let ratio = hit_ratio(&[1, 2, 1, 1], &mut Unbounded(HashSet::new()));
/// assert_eq!(ratio, 50.0);
/// ```
pub trait ReplayCache {
    /// Looks `key` up, counting as a use of it; returns whether it was cached.
    fn get(&mut self, key: u64) -> bool;
    /// Stores `key` after a miss, evicting as the policy decides.
    fn insert(&mut self, key: u64);
}

impl<C: ReplayCache + ?Sized> ReplayCache for &mut C {
    fn get(&mut self, key: u64) -> bool {
        (**self).get(key)
    }
    fn insert(&mut self, key: u64) {
        (**self).insert(key);
    }
}

/// A [`ReplayCache`] made of two closures, for a cache whose calls need no
/// more than a line each: `get(key)` says whether the key was cached, and
/// `insert(key)` stores it.
///
/// ```
/// use larder_trace::replay::{replay, FnCache};
/// use std::cell::RefCell;
/// use std::collections::HashSet;
///
/// // A cache without a bound, behind a `RefCell` so both closures can reach it.
/// let cached = RefCell::new(HashSet::new());
/// let cache = FnCache::new(
///     |key| cached.borrow().contains(&key),
///     |key| {
///         cached.borrow_mut().insert(key);
///     },
/// );
/// assert_eq!(replay(&[1, 2, 1], cache).hits, 1);
/// ```
pub struct FnCache<G, I> {
    get: G,
    insert: I,
}

impl<G: FnMut(u64) -> bool, I: FnMut(u64)> FnCache<G, I> {
    /// A cache that answers `get` with `get` and stores with `insert`.
    pub fn new(get: G, insert: I) -> FnCache<G, I> {
        FnCache { get, insert }
    }
}

impl<G, I> std::fmt::Debug for FnCache<G, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnCache").finish_non_exhaustive()
    }
}

impl<G: FnMut(u64) -> bool, I: FnMut(u64)> ReplayCache for FnCache<G, I> {
    fn get(&mut self, key: u64) -> bool {
        (self.get)(key)
    }
    fn insert(&mut self, key: u64) {
        (self.insert)(key);
    }
}

/// The outcome of a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Requests the cache answered.
    pub hits: u64,
    /// Requests the cache did not answer (each followed by an insert).
    pub misses: u64,
}

impl ReplayStats {
    /// `hits + misses`.
    pub fn requests(&self) -> u64 {
        self.hits + self.misses
    }

    /// The hit ratio in percent; 0 for an empty trace.
    pub fn hit_ratio(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            requests => 100.0 * self.hits as f64 / requests as f64,
        }
    }
}

/// Replays `keys` against `cache`, cache-aside, and counts hits and misses.
pub fn replay(keys: &[u64], mut cache: impl ReplayCache) -> ReplayStats {
    let mut stats = ReplayStats::default();
    for &key in keys {
        if cache.get(key) {
            stats.hits += 1;
        } else {
            stats.misses += 1;
            cache.insert(key);
        }
    }
    stats
}

/// Replays `keys` against `cache`, cache-aside, and returns the hit ratio in
/// percent (0 for an empty trace).
pub fn hit_ratio(keys: &[u64], cache: &mut impl ReplayCache) -> f64 {
    replay(keys, cache).hit_ratio()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls the replay makes; holds only the last inserted key.
    #[derive(Default)]
    struct OneSlot {
        slot: Option<u64>,
        calls: Vec<(&'static str, u64)>,
    }

    impl ReplayCache for OneSlot {
        fn get(&mut self, key: u64) -> bool {
            self.calls.push(("get", key));
            self.slot == Some(key)
        }
        fn insert(&mut self, key: u64) {
            self.calls.push(("insert", key));
            self.slot = Some(key);
        }
    }

    #[test]
    fn inserts_follow_misses_only() {
        let mut cache = OneSlot::default();
        let stats = replay(&[1, 1, 2, 1], &mut cache);
        assert_eq!(stats, ReplayStats { hits: 1, misses: 3 });
        assert_eq!(
            cache.calls,
            [
                ("get", 1),
                ("insert", 1),
                ("get", 1),
                ("get", 2),
                ("insert", 2),
                ("get", 1),
                ("insert", 1),
            ]
        );
        assert_eq!(stats.hit_ratio(), 25.0);
    }

    #[test]
    fn an_empty_trace_has_ratio_zero() {
        assert_eq!(hit_ratio(&[], &mut OneSlot::default()), 0.0);
    }
}
