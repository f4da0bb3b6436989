//! The references against answers found without their algorithms: exact LRU against a `Vec`
//! kept in recency order, and Bélády's OPT against an exhaustive search of every eviction
//! choice, with and without the choice of not caching a missed key.
//!
//! The search proves what the module docs of `reference` claim from Bélády's theorem: evicting
//! the resident used farthest ahead is the best a cache that must insert every miss can do
//! ([`Admission::Always`], the figures the traces README tabulates), and also weighing the
//! newcomer is the best a cache that may decline one can do ([`Admission::MayDecline`]).

use std::collections::HashMap;

use larder_trace::reference::{lru_hit_ratio, opt_hit_ratio, Admission, Belady, Lru, LruCurve};
use larder_trace::replay::{replay, ReplayStats};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// LRU the plain way: the cached keys in a `Vec`, least recently used first.
fn vec_lru(keys: &[u64], capacity: usize) -> u64 {
    let mut cached: Vec<u64> = Vec::new();
    let mut hits = 0;
    for &key in keys {
        if let Some(at) = cached.iter().position(|&k| k == key) {
            hits += 1;
            cached.remove(at);
            cached.push(key);
        } else if capacity > 0 {
            if cached.len() == capacity {
                cached.remove(0);
            }
            cached.push(key);
        }
    }
    hits
}

/// The most hits any cache of `capacity` entries can score on `keys` (at most 32 distinct),
/// trying every choice: which resident to evict on a miss with the cache full, and, if
/// `may_decline`, not to cache the missed key at all. A missed key is otherwise always cached,
/// as cache-aside replay inserts it; a cache never evicts unless it must (evicting earlier
/// can only lose hits).
fn best_possible(keys: &[u64], capacity: usize, may_decline: bool) -> u64 {
    let mut ids = HashMap::new();
    let dense: Vec<u32> = keys
        .iter()
        .map(|&key| {
            let next = ids.len() as u32;
            *ids.entry(key).or_insert(next)
        })
        .collect();
    assert!(ids.len() <= 32, "the search keeps the residents in a u32");
    let mut memo = HashMap::new();
    search(&dense, 0, 0, capacity, may_decline, &mut memo)
}

/// The most hits from request `at` on, with the keys in the bit set `cached` resident.
fn search(
    keys: &[u32],
    at: usize,
    cached: u32,
    capacity: usize,
    may_decline: bool,
    memo: &mut HashMap<(usize, u32), u64>,
) -> u64 {
    let Some(&key) = keys.get(at) else {
        return 0;
    };
    if let Some(&best) = memo.get(&(at, cached)) {
        return best;
    }
    let bit = 1u32 << key;
    let mut go = |cached| search(keys, at + 1, cached, capacity, may_decline, memo);
    let best = if cached & bit != 0 {
        1 + go(cached)
    } else if capacity == 0 {
        go(cached)
    } else if (cached.count_ones() as usize) < capacity {
        go(cached | bit)
    } else {
        let mut best = if may_decline { go(cached) } else { 0 };
        let mut residents = cached;
        while residents != 0 {
            let victim = residents & residents.wrapping_neg();
            residents &= residents - 1;
            best = best.max(go(cached & !victim | bit));
        }
        best
    };
    memo.insert((at, cached), best);
    best
}

/// A seeded trace of `len` requests over `distinct` keys, skewed so that small caches hit too.
fn random_trace(rng: &mut StdRng, len: usize, distinct: u64) -> Vec<u64> {
    (0..len)
        .map(|_| {
            let key = rng.gen_range(0..distinct).min(rng.gen_range(0..distinct));
            // Keys far apart and out of order: nothing may depend on them being small.
            key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
        .collect()
}

/// Traces that sit on the edges: empty, one request, one key repeated, a loop one larger than
/// a cache, a scan of keys never seen again, a key that returns after a long absence.
fn edge_traces() -> Vec<Vec<u64>> {
    vec![
        vec![],
        vec![7],
        vec![7; 10],
        [1, 2, 3].repeat(5),
        (0..12).collect(),
        [vec![5], (100..110).collect(), vec![5, 5]].concat(),
        vec![1, 2, 1, 3, 1, 4, 1, 5, 2, 3, 4, 5],
        vec![u64::MAX, 0, u64::MAX, 0],
    ]
}

fn traces() -> Vec<Vec<u64>> {
    let mut rng = StdRng::seed_from_u64(0x0B7);
    let mut traces = edge_traces();
    for _ in 0..1000 {
        let len = rng.gen_range(0..=28);
        let distinct = rng.gen_range(1..=7);
        traces.push(random_trace(&mut rng, len, distinct));
    }
    traces
}

fn stats(hits: u64, keys: &[u64]) -> ReplayStats {
    ReplayStats {
        hits,
        misses: keys.len() as u64 - hits,
    }
}

#[test]
fn exact_lru_is_a_vec_kept_in_recency_order() {
    let mut rng = StdRng::seed_from_u64(0x12);
    let mut traces = traces();
    for _ in 0..20 {
        traces.push(random_trace(&mut rng, 3000, 80));
    }
    for keys in &traces {
        let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
        let curve = LruCurve::new(keys);
        assert_eq!(
            (curve.requests(), curve.unique_keys()),
            (keys.len(), distinct)
        );
        for capacity in [0, 1, 2, 3, 5, 8, 40, distinct, distinct + 1, usize::MAX] {
            // `Lru` reserves room for up to a million entries; 2^16 is past every trace's
            // keys here just as well.
            let capacity_bounded = capacity.min(1 << 16);
            let expected = stats(vec_lru(keys, capacity), keys);
            let context = format!("capacity {capacity}, trace {keys:?}");
            assert_eq!(
                replay(keys, Lru::new(capacity_bounded)),
                expected,
                "{context}"
            );
            assert_eq!(curve.replay(capacity), expected, "{context}");
            assert_eq!(lru_hit_ratio(keys, capacity_bounded), expected.hit_ratio());
        }
    }
}

#[test]
fn opt_scores_the_most_any_eviction_choices_can() {
    for keys in &traces() {
        let opt = Belady::new(keys);
        for capacity in 0..=7 {
            let context = format!("capacity {capacity}, trace {keys:?}");
            let always = stats(best_possible(keys, capacity, false), keys);
            let may_decline = stats(best_possible(keys, capacity, true), keys);
            assert_eq!(
                opt.replay_with(capacity, Admission::Always),
                always,
                "{context}"
            );
            assert_eq!(opt.replay(capacity), always, "{context}");
            assert_eq!(
                opt_hit_ratio(keys, capacity),
                always.hit_ratio(),
                "{context}"
            );
            assert_eq!(
                opt.replay_with(capacity, Admission::MayDecline),
                may_decline,
                "{context}"
            );
        }
    }
}

/// The variants differ: on a loop of three keys through two entries, a cache that must insert
/// every miss hits every other request once warm (5 of 12), and one that may decline keeps two
/// keys for good and hits two requests in three (6 of 12, the first round all misses).
#[test]
fn admitting_every_miss_and_declining_differ_on_a_loop() {
    let keys = [1, 2, 3].repeat(4);
    assert_eq!(best_possible(&keys, 2, false), 5);
    assert_eq!(best_possible(&keys, 2, true), 6);
    let opt = Belady::new(&keys);
    assert_eq!(opt.replay_with(2, Admission::Always).hits, 5);
    assert_eq!(opt.replay_with(2, Admission::MayDecline).hits, 6);
}

#[test]
fn an_empty_trace_scores_zero_everywhere() {
    for capacity in [0, 1, 100] {
        assert_eq!(lru_hit_ratio(&[], capacity), 0.0);
        assert_eq!(opt_hit_ratio(&[], capacity), 0.0);
        assert_eq!(LruCurve::new(&[]).hit_ratio(capacity), 0.0);
        let opt = Belady::new(&[]);
        assert_eq!(
            opt.replay_with(capacity, Admission::MayDecline),
            ReplayStats::default()
        );
    }
}
