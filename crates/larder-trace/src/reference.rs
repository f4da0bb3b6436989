//! Reference policies: exact LRU, and Bélády's optimal policy (OPT).
//!
//! They bracket what a cache should score on a trace: a policy sold as an LRU
//! approximation should land near [`Lru`], and nothing that decides online can
//! pass [`opt_replay`], which knows the future.
//!
//! # Exact LRU
//!
//! [`Lru`] keeps its entries in a slab (`Vec`) threaded by a doubly linked
//! recency list of slab indices, most recent at the head, plus a map from key
//! to slab index. A hit unlinks the entry and relinks it at the head; a miss
//! with the cache full reuses the tail's slot for the new key. Every operation
//! is O(1) and nothing is allocated once the slab is full.
//!
//! # Exact LRU at every capacity in one pass
//!
//! LRU is a stack algorithm (Mattson, Gecsei, Slutz & Traiger, "Evaluation
//! techniques for storage hierarchies", IBM Systems Journal, 1970): the
//! content of an LRU cache of `c` entries is always the `c` most recently used
//! keys, so a cache of `c` entries holds everything a smaller one holds. A
//! request therefore hits exactly when its *stack distance*, the number of
//! distinct keys used since its key's previous request plus one, is at most
//! `c`. [`LruCurve`] measures every request's stack distance once and answers
//! for any capacity from the histogram:
//!
//! 1. A Fenwick tree (a binary indexed tree, for prefix sums in O(log r)) over
//!    request positions holds a 1 at the latest request of each key seen so far.
//! 2. For request `i` whose key was last requested at `p`, the 1s after `p`
//!    are the distinct keys used since; their count is the number of keys seen
//!    minus the prefix sum up to `p`. Then the 1 moves from `p` to `i`.
//!
//! That is O(r log r) for r requests, against O(r) per capacity for [`Lru`]. It
//! wins with many capacities, or in an unoptimised build where hashing is slow;
//! with a few capacities over a long trace, [`Lru`] replays are faster in an
//! optimised build, as the tree takes 8 bytes per request and is read at random.
//!
//! # Bélády's OPT, cache-aside
//!
//! Bélády (1966) showed that evicting the entry whose next use lies farthest
//! in the future maximises hits. Under cache-aside replay the missed key is
//! always inserted (the application cannot tell the cache to bypass it), so
//! on a miss with the cache full the victim is the *resident* entry used
//! farthest ahead, even when the incoming key's own next use is farther still.
//! This is the bound the traces README tabulates, [`Admission::Always`]. A
//! cache with an admission filter may refuse the insert, and then the bound is
//! Bélády's choice among the residents *and* the newcomer,
//! [`Admission::MayDecline`]: slightly higher (on `lirs/loop` at 256 entries,
//! 25.27% rather than 25.22%).
//!
//! [`opt_replay`] runs in O(r log c) for r requests and capacity c:
//!
//! 1. Keys are renamed to dense ids `0..u` so that the rest uses plain vectors.
//! 2. A backward pass records, for each request `i`, the position of the next
//!    request for the same key, or `r` ("never") if there is none.
//! 3. A forward pass keeps, per id, the next use of the resident entry, and a
//!    max-heap of `(next use, id)` whose top is the entry used farthest ahead:
//!    on a miss with the cache full, that is the victim (or, under
//!    [`Admission::MayDecline`], the newcomer is not cached if its own next use
//!    is no sooner). A hit pushes the key's new next use and leaves the old
//!    heap entry behind, stale. Stale entries hold positions already passed
//!    and current ones positions still to come, so stale entries never reach
//!    the top; they are dropped in bulk whenever the heap reaches twice the
//!    capacity, which keeps it small at O(1) amortised cost per request.

use std::collections::hash_map::Entry;
use std::collections::BinaryHeap;

use crate::hash::KeyMap;
use crate::replay::{replay, ReplayCache, ReplayStats};

/// The end of the recency list, in place of a slab index.
const NIL: usize = usize::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    key: u64,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// An exact least-recently-used cache of keys, for replay.
///
/// ```
/// use larder_trace::reference::Lru;
/// use larder_trace::replay::ReplayCache;
///
/// let mut lru = Lru::new(2);
/// lru.insert(1);
/// lru.insert(2);
/// assert!(lru.get(1)); // 2 is now the least recent
/// lru.insert(3); // evicts 2
/// assert!(!lru.get(2));
/// assert!(lru.get(1) && lru.get(3));
/// ```
#[derive(Clone, Debug)]
pub struct Lru {
    capacity: usize,
    slots: KeyMap<usize>,
    nodes: Vec<Node>,
    /// Most recently used slab index.
    head: usize,
    /// Least recently used slab index.
    tail: usize,
}

impl Lru {
    /// An empty cache that holds at most `capacity` keys (0 holds none).
    pub fn new(capacity: usize) -> Lru {
        // Reserve up front only what a replay is likely to fill, so a huge
        // capacity over a short trace does not allocate for nothing.
        let reserve = capacity.min(1 << 20);
        Lru {
            capacity,
            slots: KeyMap::with_capacity_and_hasher(reserve, Default::default()),
            nodes: Vec::with_capacity(reserve),
            head: NIL,
            tail: NIL,
        }
    }

    /// How many keys the cache holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cache holds no key.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `key` is cached, without counting it as a use.
    pub fn contains(&self, key: u64) -> bool {
        self.slots.contains_key(&key)
    }

    /// The cached keys, most recently used first.
    pub fn keys_by_recency(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::successors(Some(self.head).filter(|&i| i != NIL), |&i| {
            Some(self.nodes[i].older).filter(|&i| i != NIL)
        })
        .map(|i| self.nodes[i].key)
    }

    fn unlink(&mut self, index: usize) {
        let Node { newer, older, .. } = self.nodes[index];
        match newer {
            NIL => self.head = older,
            newer => self.nodes[newer].older = older,
        }
        match older {
            NIL => self.tail = newer,
            older => self.nodes[older].newer = newer,
        }
    }

    fn push_front(&mut self, index: usize) {
        self.nodes[index].newer = NIL;
        self.nodes[index].older = self.head;
        match self.head {
            NIL => self.tail = index,
            head => self.nodes[head].newer = index,
        }
        self.head = index;
    }
}

impl ReplayCache for Lru {
    fn get(&mut self, key: u64) -> bool {
        let Some(&index) = self.slots.get(&key) else {
            return false;
        };
        if index != self.head {
            self.unlink(index);
            self.push_front(index);
        }
        true
    }

    fn insert(&mut self, key: u64) {
        if self.capacity == 0 {
            return;
        }
        // One lookup finds the key or the place for it; only an eviction costs
        // a second one, to forget the victim's key.
        let (index, linked) = match self.slots.entry(key) {
            Entry::Occupied(cached) => (*cached.get(), true),
            Entry::Vacant(place) if self.nodes.len() < self.capacity => {
                self.nodes.push(Node {
                    key,
                    newer: NIL,
                    older: NIL,
                });
                (*place.insert(self.nodes.len() - 1), false)
            }
            Entry::Vacant(place) => {
                // Full: the least recently used slot takes the new key.
                let victim = self.tail;
                let evicted = std::mem::replace(&mut self.nodes[victim].key, key);
                place.insert(victim);
                self.slots.remove(&evicted);
                (victim, true)
            }
        };
        if linked {
            self.unlink(index);
        }
        self.push_front(index);
    }
}

/// The cache-aside hit ratio of exact LRU with `capacity` entries, in percent.
pub fn lru_hit_ratio(keys: &[u64], capacity: usize) -> f64 {
    replay(keys, Lru::new(capacity)).hit_ratio()
}

/// Exact LRU hit ratios for every capacity, from one pass over a trace (see
/// the module docs for the stack-distance method).
///
/// ```
/// use larder_trace::reference::{lru_hit_ratio, LruCurve};
/// let keys = [1, 2, 3, 1, 2, 3, 3, 2, 1];
/// let curve = LruCurve::new(&keys);
/// for capacity in 0..5 {
///     assert_eq!(curve.hit_ratio(capacity), lru_hit_ratio(&keys, capacity));
/// }
/// ```
#[derive(Clone)]
pub struct LruCurve {
    /// `hits_within[d]` counts the requests whose stack distance is at most
    /// `d`, that is, the hits of an LRU cache of `d` entries.
    hits_within: Vec<u64>,
    requests: u64,
}

impl std::fmt::Debug for LruCurve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LruCurve")
            .field("requests", &self.requests)
            .field("unique", &(self.hits_within.len() - 1))
            .finish()
    }
}

impl LruCurve {
    /// Measures the stack distance of every request in `keys`: O(r log r).
    pub fn new(keys: &[u64]) -> LruCurve {
        let mut latest = Fenwick::new(keys.len());
        let mut last_seen = KeyMap::<usize>::default();
        // by_distance[d]: requests at stack distance d (index 0 stays unused).
        let mut by_distance = vec![0u64; 1];
        for (i, &key) in keys.iter().enumerate() {
            if let Some(previous) = last_seen.insert(key, i) {
                let seen = last_seen.len() as u64;
                let distance = (seen - latest.prefix_sum(previous) + 1) as usize;
                by_distance[distance] += 1;
                latest.remove(previous);
            } else {
                by_distance.push(0); // one more key: distances reach one further
            }
            latest.add(i);
        }
        let mut hits_within = by_distance;
        for d in 1..hits_within.len() {
            hits_within[d] += hits_within[d - 1];
        }
        LruCurve {
            hits_within,
            requests: keys.len() as u64,
        }
    }

    /// The number of requests in the trace.
    pub fn requests(&self) -> usize {
        self.requests as usize
    }

    /// The number of distinct keys in the trace (from this capacity on, LRU
    /// misses only first requests).
    pub fn unique_keys(&self) -> usize {
        self.hits_within.len() - 1
    }

    /// The hits and misses of an LRU cache of `capacity` entries.
    pub fn replay(&self, capacity: usize) -> ReplayStats {
        let largest = self.hits_within.len() - 1;
        let hits = self.hits_within[capacity.min(largest)];
        ReplayStats {
            hits,
            misses: self.requests - hits,
        }
    }

    /// The hit ratio of an LRU cache of `capacity` entries, in percent.
    pub fn hit_ratio(&self, capacity: usize) -> f64 {
        self.replay(capacity).hit_ratio()
    }
}

/// A Fenwick tree of 0/1 marks over positions `0..len`, answering prefix
/// counts in O(log len). `tree[k]` (1-based) holds the marks in positions
/// `k - lowbit(k) .. k`.
struct Fenwick {
    tree: Vec<u64>,
}

impl Fenwick {
    fn new(len: usize) -> Fenwick {
        Fenwick {
            tree: vec![0; len + 1],
        }
    }

    fn add(&mut self, position: usize) {
        self.update(position, 1);
    }

    fn remove(&mut self, position: usize) {
        self.update(position, -1);
    }

    fn update(&mut self, position: usize, delta: i64) {
        let mut k = position + 1;
        while k < self.tree.len() {
            // Never below zero: a mark is only removed where one was added,
            // and every cell updated here counts that position.
            self.tree[k] = self.tree[k].wrapping_add_signed(delta);
            k += k & k.wrapping_neg();
        }
    }

    /// The number of marks in positions `0..=position`.
    fn prefix_sum(&self, position: usize) -> u64 {
        let mut k = position + 1;
        let mut sum = 0u64;
        while k > 0 {
            sum += self.tree[k];
            k &= k - 1;
        }
        sum
    }
}

/// Replays `keys` against Bélády's OPT with `capacity` entries, cache-aside
/// (see the module docs for the algorithm and why the missed key is always
/// inserted). To try several capacities on one trace, build a [`Belady`] once.
///
/// ```
/// use larder_trace::reference::opt_replay;
/// // With room for two, OPT keeps 1 and 2 when 3 arrives (3 is never reused).
/// let stats = opt_replay(&[1, 2, 3, 1, 2], 2);
/// assert_eq!((stats.hits, stats.misses), (1, 4));
/// ```
pub fn opt_replay(keys: &[u64], capacity: usize) -> ReplayStats {
    Belady::new(keys).replay(capacity)
}

/// The cache-aside hit ratio of Bélády's OPT with `capacity` entries, in
/// percent.
pub fn opt_hit_ratio(keys: &[u64], capacity: usize) -> f64 {
    opt_replay(keys, capacity).hit_ratio()
}

/// A trace prepared for OPT replays at any capacity: steps 1 and 2 of the
/// algorithm (dense ids and next uses) are done once, in [`Belady::new`].
///
/// ```
/// use larder_trace::reference::Belady;
/// let opt = Belady::new(&[1, 2, 3, 1, 2, 3]);
/// assert_eq!(opt.unique_keys(), 3);
/// assert_eq!(opt.replay(1).hits, 0);
/// assert_eq!(opt.replay(2).hits, 2);
/// assert_eq!(opt.hit_ratio(3), 50.0);
/// ```
#[derive(Clone)]
pub struct Belady {
    /// `ids[i]` is the dense id of request `i`'s key; ids are numbered by
    /// first appearance.
    ids: Vec<u32>,
    /// `next_use[i]` is the position of the next request for the same key as
    /// request `i`, or `ids.len()` if there is none.
    next_use: Vec<usize>,
    /// How many distinct keys there are (ids run `0..unique`).
    unique: usize,
}

impl std::fmt::Debug for Belady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Belady")
            .field("requests", &self.ids.len())
            .field("unique", &self.unique)
            .finish()
    }
}

impl Belady {
    /// Prepares `keys`: O(r) time and 12 bytes per request.
    ///
    /// # Panics
    ///
    /// If the trace has more than 2^32 distinct keys (a trace of at least
    /// 32 GiB, far beyond what these tools replay).
    pub fn new(keys: &[u64]) -> Belady {
        let mut by_key = KeyMap::<u32>::default();
        let ids: Vec<u32> = keys
            .iter()
            .map(|&key| {
                let next = u32::try_from(by_key.len()).expect("more than 2^32 distinct keys");
                *by_key.entry(key).or_insert(next)
            })
            .collect();
        let unique = by_key.len();

        let never = keys.len();
        let mut next_use = vec![never; keys.len()];
        let mut seen_at = vec![never; unique];
        for (i, &id) in ids.iter().enumerate().rev() {
            next_use[i] = seen_at[id as usize];
            seen_at[id as usize] = i;
        }
        Belady {
            ids,
            next_use,
            unique,
        }
    }

    /// The number of requests in the trace.
    pub fn requests(&self) -> usize {
        self.ids.len()
    }

    /// The number of distinct keys in the trace.
    pub fn unique_keys(&self) -> usize {
        self.unique
    }

    /// Replays the trace against OPT with `capacity` entries, cache-aside: every
    /// missed key is inserted (step 3 of the algorithm). O(r log capacity).
    pub fn replay(&self, capacity: usize) -> ReplayStats {
        self.replay_with(capacity, Admission::Always)
    }

    /// Replays the trace against OPT with `capacity` entries, choosing whether a
    /// missed key must be cached. O(r log capacity).
    ///
    /// ```
    /// use larder_trace::reference::{Admission, Belady};
    /// // A loop of three keys through a cache of two.
    /// let opt = Belady::new(&[1, 2, 3, 1, 2, 3, 1, 2, 3]);
    /// assert_eq!(opt.replay_with(2, Admission::Always).hits, 3);
    /// // Declining 3 keeps 1 and 2 resident for good.
    /// assert_eq!(opt.replay_with(2, Admission::MayDecline).hits, 4);
    /// ```
    pub fn replay_with(&self, capacity: usize, admission: Admission) -> ReplayStats {
        // resident[id]: the next use of the cached entry for id, or ABSENT.
        const ABSENT: usize = usize::MAX;
        let mut resident = vec![ABSENT; self.unique];
        // Purged of stale entries whenever it reaches this size.
        let purge_at = 2 * capacity.min(self.unique) + 64;
        let mut heap = BinaryHeap::with_capacity(purge_at + 1);
        let mut len = 0;
        let mut stats = ReplayStats::default();
        for (&id, &next) in self.ids.iter().zip(&self.next_use) {
            let id = id as usize;
            if resident[id] != ABSENT {
                stats.hits += 1;
            } else {
                stats.misses += 1;
                if capacity == 0 {
                    continue;
                }
                if len < capacity {
                    len += 1;
                } else {
                    // Stale entries hold positions already passed and current
                    // ones positions to come, so the top is current.
                    let &(farthest, victim) = heap.peek().expect("a full cache has residents");
                    debug_assert_eq!(resident[victim], farthest, "the top entry is stale");
                    if admission == Admission::MayDecline && next >= farthest {
                        continue; // the missed key is the one used farthest ahead
                    }
                    heap.pop();
                    resident[victim] = ABSENT;
                }
            }
            resident[id] = next;
            heap.push((next, id));
            if heap.len() >= purge_at {
                heap.retain(|&(next, id)| resident[id] == next);
            }
        }
        stats
    }

    /// The cache-aside OPT hit ratio with `capacity` entries, in percent.
    pub fn hit_ratio(&self, capacity: usize) -> f64 {
        self.replay(capacity).hit_ratio()
    }
}

/// Whether [`Belady::replay_with`] must cache the key it just missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Every missed key is inserted, as in cache-aside replay against a cache
    /// that always admits. This is the bound the traces README tabulates.
    Always,
    /// A missed key whose next use is no sooner than every resident's is not
    /// cached. This is the true bound for a cache with an admission filter
    /// (moka's and mini-moka's TinyLFU may reject a newcomer), which can pass
    /// the [`Admission::Always`] figure by a little.
    MayDecline,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// LRU written the obvious O(capacity) way: a vector, most recent last.
    fn naive_lru(keys: &[u64], capacity: usize) -> ReplayStats {
        let mut cache: Vec<u64> = Vec::new();
        let mut stats = ReplayStats::default();
        for &key in keys {
            if let Some(pos) = cache.iter().position(|&k| k == key) {
                stats.hits += 1;
                cache.remove(pos);
            } else {
                stats.misses += 1;
                if capacity == 0 {
                    continue;
                }
                if cache.len() == capacity {
                    cache.remove(0);
                }
            }
            cache.push(key);
        }
        stats
    }

    /// OPT written the obvious O(r · capacity · r) way: scan ahead for each
    /// resident (and, if it may decline, the newcomer) at every eviction.
    fn naive_opt(keys: &[u64], capacity: usize, admission: Admission) -> ReplayStats {
        let mut cache: Vec<u64> = Vec::new();
        let mut stats = ReplayStats::default();
        for (i, &key) in keys.iter().enumerate() {
            if cache.contains(&key) {
                stats.hits += 1;
                continue;
            }
            stats.misses += 1;
            if capacity == 0 {
                continue;
            }
            if cache.len() == capacity {
                let next_use = |k: u64| {
                    keys[i + 1..]
                        .iter()
                        .position(|&later| later == k)
                        .unwrap_or(usize::MAX)
                };
                let victim = (0..cache.len())
                    .max_by_key(|&slot| next_use(cache[slot]))
                    .unwrap();
                if admission == Admission::MayDecline && next_use(key) >= next_use(cache[victim]) {
                    continue;
                }
                cache.swap_remove(victim);
            }
            cache.push(key);
        }
        stats
    }

    fn random_trace(seed: u64, len: usize, keys: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        // Skew towards small keys so that there are hits at small capacities.
        (0..len)
            .map(|_| rng.gen_range(0..keys).min(rng.gen_range(0..keys)))
            .collect()
    }

    #[test]
    fn lru_and_its_curve_match_a_naive_lru_on_random_traces() {
        for seed in 0..20 {
            let keys = random_trace(seed, 2_000, 60);
            let curve = LruCurve::new(&keys);
            for capacity in [0, 1, 2, 5, 17, 59, 60, 100] {
                assert_eq!(curve.replay(capacity), naive_lru(&keys, capacity));
                let fast = replay(&keys, Lru::new(capacity));
                assert_eq!(
                    fast,
                    naive_lru(&keys, capacity),
                    "seed {seed}, cap {capacity}"
                );
            }
        }
    }

    #[test]
    fn opt_matches_a_naive_opt_on_random_traces() {
        for seed in 0..20 {
            let keys = random_trace(seed, 600, 40);
            let opt = Belady::new(&keys);
            for capacity in [0, 1, 2, 5, 17, 39, 40, 100] {
                for admission in [Admission::Always, Admission::MayDecline] {
                    assert_eq!(
                        opt.replay_with(capacity, admission),
                        naive_opt(&keys, capacity, admission),
                        "seed {seed}, cap {capacity}, {admission:?}"
                    );
                }
                assert_eq!(opt.replay(capacity), opt_replay(&keys, capacity));
            }
        }
    }

    #[test]
    fn opt_is_never_below_lru_and_declining_never_hurts() {
        for seed in 100..110 {
            let keys = random_trace(seed, 5_000, 500);
            let opt = Belady::new(&keys);
            for capacity in [1, 10, 50, 200] {
                let always = opt.hit_ratio(capacity);
                let may_decline = opt.replay_with(capacity, Admission::MayDecline).hit_ratio();
                assert!(always >= lru_hit_ratio(&keys, capacity));
                assert!(may_decline >= always);
            }
        }
    }

    #[test]
    fn lru_keeps_recency_order_and_its_bound() {
        let mut lru = Lru::new(3);
        for key in [1, 2, 3, 1, 4] {
            if !lru.get(key) {
                lru.insert(key);
            }
        }
        assert_eq!(lru.keys_by_recency().collect::<Vec<_>>(), [4, 1, 3]);
        assert_eq!(lru.len(), 3);
        lru.insert(3); // an insert of a cached key refreshes it
        assert_eq!(lru.keys_by_recency().collect::<Vec<_>>(), [3, 4, 1]);
        assert!(!lru.contains(2));
    }

    #[test]
    fn capacity_zero_never_hits() {
        let keys = [1, 1, 1];
        assert_eq!(lru_hit_ratio(&keys, 0), 0.0);
        assert_eq!(opt_hit_ratio(&keys, 0), 0.0);
        let mut lru = Lru::new(0);
        lru.insert(1);
        assert!(lru.is_empty());
    }

    #[test]
    fn a_loop_larger_than_the_cache_defeats_lru_but_not_opt() {
        let keys: Vec<u64> = (0..10).cycle().take(1_000).collect();
        assert_eq!(lru_hit_ratio(&keys, 9), 0.0);
        assert!(opt_hit_ratio(&keys, 9) > 80.0);
    }
}
