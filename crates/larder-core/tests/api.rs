//! The public API, one behaviour per test, single-threaded.

mod common;

use common::hold_a_load;
use larder_core::{Cache, Policy};

/// Loop counts shrink under miri, which runs about a thousand times slower.
const SCALE: u64 = if cfg!(miri) { 20 } else { 1 };

fn both_policies() -> [Policy; 2] {
    [Policy::S3Fifo, Policy::Lru]
}

fn cache(capacity: u64, policy: Policy) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(capacity)
        .policy(policy)
        .build()
        .unwrap()
}

#[test]
fn insert_get_replace_remove() {
    for policy in both_policies() {
        let c = cache(100, policy);
        assert_eq!(c.get(&1), None);
        c.insert(1, 10);
        assert_eq!(c.get(&1), Some(10));
        c.insert(1, 11);
        assert_eq!(c.get(&1), Some(11));
        assert_eq!(c.len(), 1);
        assert_eq!(c.remove(&1), Some(11));
        assert_eq!(c.remove(&1), None);
        assert_eq!(c.get(&1), None);
        assert!(c.is_empty());
        c.validate().unwrap();
    }
}

/// A set of entries that fits the capacity but not the even shares (a full cache's entries,
/// spread over the shards by a hasher seeded otherwise) loads whole once the capacity is
/// shared out to fit it; without that, the shards given more than their share evict some.
#[test]
fn shares_fitted_to_a_load_keep_all_of_it() {
    let keys = 0..if cfg!(miri) { 64 } else { 1024 };
    for policy in both_policies() {
        let build = || {
            Cache::builder()
                .max_capacity(keys.end)
                .policy(policy)
                .shards(4)
                .build()
                .unwrap()
        };
        // Evenly shared, each shard keeps at most its quarter.
        let evenly: Cache<u64, u64> = build();
        let mut counts = [0; 4];
        for k in keys.clone() {
            evenly.insert(k, k);
            counts[evenly.shard_index(&k)] += 1;
        }
        let kept: u64 = counts.iter().map(|&n: &u64| n.min(keys.end / 4)).sum();
        assert_eq!(evenly.len() as u64, kept);

        let fitted: Cache<u64, u64> = build();
        let mut weights = vec![0; fitted.shard_count()];
        for k in keys.clone() {
            weights[fitted.shard_index(&k)] += u64::from(fitted.weight_of(&k, &k));
        }
        let load = fitted.share_capacity(&weights).expect("fitted");
        for k in keys.clone() {
            fitted.insert(k, k);
        }
        drop(load);
        assert_eq!(fitted.len() as u64, keys.end, "{policy:?}");
        assert_eq!(fitted.capacity(), keys.end);
        assert_eq!(fitted.stats().evictions, 0);
        fitted.validate().unwrap();
        // From then on each shard evicts within its own share (which drifts back to even:
        // `fitted_shares_drift_back_to_even_as_the_cache_is_written`), and the whole stays
        // within the capacity.
        for k in keys.end..2 * keys.end {
            fitted.insert(k, k);
        }
        assert_eq!(fitted.len() as u64, keys.end);
        fitted.validate().unwrap();
    }
}

/// Shares fitted to a load drift back to even as the cache is written: a shard given more
/// than its even share gives it up as it evicts, and the shards given less take it, so that
/// after a while of writes each holds its even share again, and a weighted cache takes an
/// entry as heavy as an even share in every shard.
///
/// Not under miri: the shares move in safe code, on the eviction path that the other tests
/// here run there, and thousands of writes took 110 s of its time.
#[test]
#[cfg_attr(miri, ignore = "safe code on paths other tests cover; too slow there")]
fn fitted_shares_drift_back_to_even_as_the_cache_is_written() {
    let scale = 16;
    for policy in both_policies() {
        // Unweighted: a full cache of 4 shards, loaded 20% over an even share in shard 0.
        let capacity = 64 * scale;
        let even = capacity / 4;
        let c: Cache<u64, u64> = Cache::builder()
            .max_capacity(capacity)
            .policy(policy)
            .shards(4)
            .build()
            .unwrap();
        let d = even / 10;
        let wanted = [even + 2 * d, even, even - d, even - d];
        let mut by_shard: [Vec<u64>; 4] = Default::default();
        for k in 0.. {
            let shard = &mut by_shard[c.shard_index(&k)];
            if (shard.len() as u64) < wanted[c.shard_index(&k)] {
                shard.push(k);
            }
            if by_shard
                .iter()
                .zip(wanted)
                .all(|(s, w)| s.len() as u64 == w)
            {
                break;
            }
        }
        let load = c.share_capacity(&wanted).expect("fitted");
        for k in by_shard.iter().flatten() {
            c.insert(*k, *k);
        }
        drop(load);
        assert_eq!(c.len() as u64, capacity);
        let held = |c: &Cache<u64, u64>| {
            let mut held = [0u64; 4];
            for (k, _) in c.iter() {
                held[c.shard_index(&k)] += 1;
            }
            held
        };
        assert_eq!(held(&c), wanted);
        let rounds = 40;
        for k in 1_000_000..1_000_000 + rounds * capacity {
            c.insert(k, k);
            if k % 97 == 0 {
                c.validate().unwrap();
            }
        }
        assert_eq!(held(&c), [even; 4], "{policy:?}: shares back to even");
        assert_eq!(c.weighted_size(), capacity);

        // Weighted: 100 units over 4 shards, reopened full of unit entries, refuses an entry
        // of 25 in a shard left below 25 at first; after unit writes it takes one in each.
        let c = weighted_by_value(100, 4, policy);
        let wanted = [31, 23, 23, 23];
        let mut next = 0..;
        let mut loaded = [0; 4];
        let load = c.share_capacity(&wanted).expect("fitted");
        while loaded != wanted {
            let k = next.next().unwrap();
            let i = c.shard_index(&k);
            if loaded[i] < wanted[i] {
                c.insert(k, 1);
                loaded[i] += 1;
            }
        }
        drop(load);
        assert_eq!(c.weighted_size(), 100);
        let heavy_in = |c: &Cache<u64, u64>, shard: usize| {
            (10_000_000..).find(|k| c.shard_index(k) == shard).unwrap()
        };
        for k in 1_000..1_000 + rounds * 100 {
            c.insert(k, 1);
        }
        for shard in 0..4 {
            let k = heavy_in(&c, shard);
            c.insert(k, 25);
            assert_eq!(c.get(&k), Some(25), "{policy:?}: shard {shard} took 25");
            c.validate().unwrap();
        }
    }
}

/// A cache of `capacity` weight over `shards` shards whose entries weigh their value.
fn weighted_by_value(capacity: u64, shards: usize, policy: Policy) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(capacity)
        .shards(shards)
        .policy(policy)
        .weigher(|_, v: &u64| u32::try_from(*v).unwrap())
        .build()
        .unwrap()
}

/// `n` keys, from `from` on, that `c` puts in `shard`.
fn keys_in<S: std::hash::BuildHasher>(
    c: &Cache<u64, u64, S>,
    shard: usize,
    from: u64,
    n: usize,
) -> Vec<u64> {
    (from..)
        .filter(|k| c.shard_index(k) == shard)
        .take(n)
        .collect()
}

/// A second `share_capacity`, on a cache emptied after its first fitted shares moved some
/// room to the spare, shares the whole capacity out again: the room left in the spare must
/// not come on top of it, or a shard below its even share takes it later, and the cache
/// holds more than its capacity.
#[test]
fn shares_fitted_again_after_a_clear_keep_within_the_capacity() {
    for policy in both_policies() {
        // Even shares 4 and 4.
        let c = weighted_by_value(8, 2, policy);
        let (zero, one) = (keys_in(&c, 0, 0, 4), keys_in(&c, 1, 0, 2));
        let load = c.share_capacity(&[6, 2]).expect("fitted");
        c.insert(zero[0], 3);
        c.insert(zero[1], 3);
        drop(load);
        // Over its share of 6: shard 0 gives 1 to the spare (share 5) and evicts.
        c.insert(zero[2], 1);
        c.validate().unwrap();
        c.clear();
        let load = c.share_capacity(&[6, 2]).expect("empty again");
        for &k in &zero[..3] {
            c.insert(k, 2);
        }
        drop(load);
        // Shard 1, below its even share, takes from the spare for an entry heavier than 2.
        c.insert(one[0], 3);
        let held: u64 = c.iter().map(|(_, v)| v).sum();
        assert!(held <= 8, "{policy:?}: {held} held in a cache of 8");
        c.validate().unwrap();
    }
}

/// Entries that fit the capacity but land far from evenly (two shards of four nearly empty)
/// get shares that hold all of them, and the shares come back to even as the cache is written.
/// (Shares were refused below half an even share, so the load kept to even shares and evicted:
/// 52 of 89 held in a cache of 100.)
#[test]
#[cfg_attr(miri, ignore = "safe code on paths other tests cover; too slow there")]
fn a_load_far_from_even_shares_is_held_whole() {
    for policy in both_policies() {
        let c: Cache<u64, u64> = Cache::builder()
            .max_capacity(100)
            .policy(policy)
            .shards(4)
            .build()
            .unwrap();
        let wanted = [49, 38, 1, 1];
        let mut loaded = [0; 4];
        let fitted = c.share_capacity(&wanted);
        for k in 0.. {
            let i = c.shard_index(&k);
            if loaded[i] < wanted[i] {
                c.insert(k, k);
                loaded[i] += 1;
            }
            if loaded == wanted {
                break;
            }
        }
        assert!(fitted.is_some(), "{policy:?}: shares refused");
        drop(fitted);
        assert_eq!(c.len(), 89, "{policy:?}: the load evicted");
        for k in 1_000_000..1_004_000 {
            c.insert(k, k);
        }
        let mut held = [0; 4];
        for (k, _) in c.iter() {
            held[c.shard_index(&k)] += 1;
        }
        assert_eq!(held, [25; 4], "{policy:?}: shares back to even");
        c.validate().unwrap();
    }
}

/// A load that leaves three shards of four with a share of 1 (a recovery whose entries all
/// land in one shard: shares of 97, 1, 1 and 1), then leaves the cache: the room the full
/// shard no longer holds goes back to the others, and an entry of 10, well within an even
/// share of 25, is held. The shards below even took room only from what a shard above even
/// gave up when it evicted, and the shard that held the load, now empty, never evicts: the
/// weighted cache refused every entry heavier than 1 in three of its shards for good, while
/// it held nothing. (Before shares went below half an even share, this load kept even shares.)
#[test]
fn room_a_fitted_shard_frees_goes_back_to_the_shards_fitted_below_even() {
    // The load leaves by removal, or by expiring and being written over (weighing nothing)
    // before the janitor's work removes it: the write replaces each entry in place, which
    // frees its room as the removal does (helper-70 found that way still kept it).
    for written_over in [false, true] {
        for policy in both_policies() {
            let time = larder_core::MockClock::new();
            let c: Cache<u64, u64> = Cache::builder()
                .max_capacity(100)
                .shards(4)
                .policy(policy)
                .weigher(|_, v: &u64| u32::try_from(*v).unwrap())
                .time_to_live(std::time::Duration::from_millis(10))
                .clock(time.clock())
                .without_janitor()
                .build()
                .unwrap();
            let loaded = keys_in(&c, 0, 0, 4);
            let load = c.share_capacity(&[96, 0, 0, 0]).expect("fitted");
            for &k in &loaded {
                c.insert(k, 24);
            }
            drop(load);
            if written_over {
                time.advance(std::time::Duration::from_millis(20));
                for &k in &loaded {
                    c.insert(k, 0);
                }
            } else {
                for k in &loaded {
                    c.invalidate(k);
                }
            }
            takes_an_entry_once_empty(&c, 10, &format!("{policy:?}, written over {written_over}"));
        }
    }
}

/// Checks that `c`, which holds nothing now, takes an entry of `weight` in shard 1: a shard
/// its fitted shares left small got back the room the emptied shard held.
fn takes_an_entry_once_empty(c: &Cache<u64, u64>, weight: u64, what: &str) {
    assert_eq!(c.weighted_size(), 0, "{what}");
    let k = keys_in(c, 1, 1_000, 1)[0];
    c.insert(k, weight);
    assert_eq!(
        c.get(&k),
        Some(weight),
        "{what}: an entry of {weight} refused by an empty cache"
    );
    c.validate().unwrap();
}

/// As `room_a_fitted_shard_frees_goes_back_to_the_shards_fitted_below_even`, but the fitted
/// shard evicted once before the load left: an entry of 2 over its share of 97 evicted the
/// entry of 90, far more than the write needed. That room stayed with the shard, and each
/// removal after gave back only what it freed, so the shard ended empty with a share of 88
/// while an entry of 20, within an even share of 25, was refused by a cache that held nothing.
#[test]
fn room_an_eviction_frees_beyond_the_write_goes_back_once_the_load_leaves() {
    for policy in both_policies() {
        let c = weighted_by_value(100, 4, policy);
        let loaded = keys_in(&c, 0, 0, 3);
        let load = c.share_capacity(&[96, 0, 0, 0]).expect("fitted");
        c.insert(loaded[0], 90);
        c.insert(loaded[1], 6);
        drop(load);
        // Read, so that neither policy takes it first: S3-FIFO's small queue would give up
        // an unread entry of 6 that main has no room for.
        c.get(&loaded[1]);
        c.insert(loaded[2], 2);
        assert_eq!(
            c.get(&loaded[0]),
            None,
            "{policy:?}: the entry of 90 is the victim"
        );
        for k in &loaded {
            c.invalidate(k);
        }
        takes_an_entry_once_empty(&c, 20, &format!("{policy:?}"));
    }
}

/// A load into fitted shares that a panic ends early (here the weigher's, on the second entry
/// of four), then a clear: the room fitted for what the load never brought goes back as the
/// panic unwinds, and the empty cache takes an entry of 20, within an even share of 25, in
/// each shard fitted below even. The load's end was a call of its own that the panic skipped:
/// shard 0 kept its share of 96, the clear gave back only the 24 it removed, and shard 2
/// refused the entry.
#[test]
fn room_fitted_for_a_load_that_ends_early_goes_back() {
    for policy in both_policies() {
        let c = weighted_by_value(100, 4, policy);
        let loaded = keys_in(&c, 0, 0, 4);
        let load = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _load = c.share_capacity(&[96, 0, 0, 0]).expect("fitted");
            c.insert(loaded[0], 24);
            // Too heavy for a weight: the weigher panics.
            c.insert(loaded[1], u64::MAX);
            c.insert(loaded[2], 24);
            c.insert(loaded[3], 24);
        }));
        assert!(load.is_err(), "{policy:?}: the weigher panicked");
        c.clear();
        for shard in 1..4 {
            let k = keys_in(&c, shard, 1_000, 1)[0];
            c.insert(k, 20);
            assert_eq!(
                c.get(&k),
                Some(20),
                "{policy:?}: shard {shard} refused an entry of 20 in an empty cache of 100"
            );
        }
        c.validate().unwrap();
    }
}

/// A load's end ends its own fitting, not a later one: a load fitted, the cache cleared and
/// fitted again for a second load, the first load's shares dropped while the second goes in.
/// The drop gave the second load's room back: shard 0, fitted for 96 and holding nothing
/// yet, went down to its even share of 25, and the second load evicted three of its four
/// entries of 24 in a cache of 100 fitted for them.
#[test]
fn an_earlier_loads_end_leaves_a_later_fitting_alone() {
    for policy in both_policies() {
        let c = weighted_by_value(100, 4, policy);
        let loaded = keys_in(&c, 0, 0, 4);
        let first = c.share_capacity(&[96, 0, 0, 0]).expect("fitted");
        c.insert(loaded[0], 24);
        c.clear();
        let second = c.share_capacity(&[96, 0, 0, 0]).expect("fitted again");
        drop(first);
        for &k in &loaded {
            c.insert(k, 24);
        }
        drop(second);
        for &k in &loaded {
            assert_eq!(c.get(&k), Some(24), "{policy:?}: the second load lost {k}");
        }
        c.validate().unwrap();
    }
}

/// An entry heavier than its shard's even share, written to a shard whose fitted share is
/// above even and which must evict for it: the share gives up room to the spare, but never
/// below the entry's own weight, or the shard would hold more than its share (the new entry
/// is never evicted for itself) while the room it gave went to another shard.
#[test]
fn a_fitted_share_gives_up_no_room_its_new_entry_needs() {
    for (policy, loaded) in [
        (Policy::S3Fifo, false),
        (Policy::Lru, false),
        (Policy::S3Fifo, true),
    ] {
        let c = weighted_by_value(100, 4, policy);
        // The load stays open throughout: ended after the 10, it would give shard 0's share back
        // down to 25, which refuses the 30.
        let _load = c.share_capacity(&[31, 23, 23, 23]).expect("fitted");
        let zero = keys_in(&c, 0, 0, 2);
        c.insert(zero[0], 10);
        // 40 in a share of 31, heavier than the even share of 25: shard 0 gives 6 (share 25)
        // and evicts the 10, which leaves 30 in 25.
        if loaded {
            assert_eq!(c.get_with(zero[1], || 30), 30);
        } else {
            c.insert(zero[1], 30);
        }
        assert_eq!(c.get(&zero[1]), Some(30));
        // The other shards take the room shard 0 gave up: 25 each.
        for shard in 1..4 {
            let k = keys_in(&c, shard, 1_000, 2);
            c.insert(k[0], 13);
            c.insert(k[1], 12);
        }
        let held: u64 = c.iter().map(|(_, v)| v).sum();
        assert!(
            held <= 100,
            "{policy:?}, loaded: {loaded}: {held} held in a cache of 100"
        );
        c.validate().unwrap();
    }
}

/// `share_capacity` changes nothing for a cache that holds anything, for a weight list of
/// the wrong length, or for weights that do not fit.
#[test]
fn share_capacity_refuses_what_it_cannot_do_whole() {
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .shards(4)
        .build()
        .unwrap();
    assert!(
        c.share_capacity(&[25, 25, 25]).is_none(),
        "one weight per shard"
    );
    assert!(
        c.share_capacity(&[30, 30, 30, 11]).is_none(),
        "more than the capacity"
    );
    assert!(
        c.share_capacity(&[50, 49, 1, 0]).is_none(),
        "no room left for an entry in one shard"
    );
    c.insert(1, 1);
    assert!(c.share_capacity(&[40, 20, 20, 20]).is_none(), "not empty");
    c.remove(&1);
    let (loader, finish) = hold_a_load({
        let c = c.clone();
        move |hold| {
            c.get_with(2, || {
                hold();
                2
            })
        }
    });
    assert!(
        c.share_capacity(&[40, 20, 20, 20]).is_none(),
        "a load in flight"
    );
    finish.send(()).unwrap();
    assert_eq!(loader.join().unwrap(), 2);
    c.remove(&2);
    assert!(c.share_capacity(&[40, 20, 20, 20]).is_some(), "empty again");
    c.validate().unwrap();
}

#[test]
fn reserve_keeps_what_is_there_and_shard_index_is_stable() {
    // Small under miri, which runs this file too.
    let n: u64 = if cfg!(miri) { 200 } else { 5_000 };
    for policy in both_policies() {
        let c = Cache::builder()
            .max_capacity(10_000)
            .policy(policy)
            .shards(4)
            .build()
            .unwrap();
        for k in 0..n / 50 {
            c.insert(k, k);
        }
        c.reserve(n as usize);
        c.validate().unwrap();
        assert_eq!(c.len() as u64, n / 50);
        for k in n / 50..n {
            c.insert(k, k);
        }
        assert!((0..n).all(|k| c.get(&k) == Some(k)));
        c.validate().unwrap();
        let shards: std::collections::HashSet<_> = (0..n).map(|k| c.shard_index(&k)).collect();
        assert_eq!(
            shards.len(),
            c.shard_count(),
            "keys spread over every shard"
        );
        assert!((0..n).all(|k| c.shard_index(&k) == c.shard_index(&k)));
    }
}

/// Counts its `Hash` calls: a table's rebuild hashes every key it moves.
#[derive(Clone, PartialEq, Eq, Debug)]
struct CountsHashes(u64);

static HASHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl std::hash::Hash for CountsHashes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        HASHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.hash(state);
    }
}

/// `reserve` sizes the index so that inserting the reserved entries rebuilds no table, also
/// when the table has room for them but not beside its tombstones. It looked at the live
/// entries only and did nothing, and the inserts then rebuilt the table for the few entries
/// left, then grew it again as the rest came: 300 inserts rehashed 360 keys.
#[test]
fn inserting_what_was_reserved_rebuilds_no_table() {
    let n: u64 = if cfg!(miri) { 60 } else { 300 };
    let hashes_to_insert = |cache: &Cache<CountsHashes, u64>, keys: std::ops::Range<u64>| {
        let before = HASHES.load(std::sync::atomic::Ordering::Relaxed);
        for k in keys {
            cache.insert(CountsHashes(k), k);
        }
        HASHES.load(std::sync::atomic::Ordering::Relaxed) - before
    };
    for churned in [false, true] {
        let cache = Cache::builder()
            .max_capacity(100_000)
            .shards(1)
            .build()
            .unwrap();
        // Churned: filled to the table's load limit, then emptied but for 10 entries, which
        // leaves the rest of the limit in tombstones.
        let filled = if churned { 2 * n + n / 2 } else { 10 };
        hashes_to_insert(&cache, 0..filled);
        for k in 10..filled {
            cache.remove(&CountsHashes(k));
        }
        cache.reserve(n as usize);
        let hashed = hashes_to_insert(&cache, 1_000_000..1_000_000 + n);
        assert_eq!(
            hashed,
            n,
            "churned first: {churned}; the inserts rehashed {} keys",
            hashed - n
        );
        cache.validate().unwrap();
    }
}

#[test]
fn capacity_is_a_hard_bound() {
    for policy in both_policies() {
        let c = cache(50, policy);
        for k in 0..1000 / SCALE * 2 {
            c.insert(k, k);
            assert!(c.len() <= 50, "{policy:?}: len {}", c.len());
            assert!(c.weighted_size() <= c.capacity());
            assert_eq!(
                c.get(&k),
                Some(k),
                "{policy:?}: an insert evicted its own entry"
            );
        }
        c.validate().unwrap();
        let n = 1000 / SCALE * 2;
        let s = c.stats();
        assert_eq!(s.inserts, n);
        assert_eq!(s.evictions, n - 50);
        assert_eq!(s.len, 50);
    }
}

#[test]
fn stats_count_reads_and_writes() {
    let c = cache(10, Policy::S3Fifo);
    c.insert(1, 1);
    c.insert(1, 2);
    c.get(&1);
    c.get(&2);
    c.peek(&1);
    c.contains_key(&1);
    c.remove(&1);
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (1, 1));
    assert_eq!((s.inserts, s.updates, s.removals), (1, 1, 1));
    assert_eq!(s.hit_ratio(), 0.5);
    c.reset_stats();
    assert_eq!(c.stats().hits, 0);
}

#[test]
fn a_loaded_entry_is_evicted_as_an_inserted_one_is() {
    // Three writes fill a one-shard cache of 3, 1 and then 2 are read, and each later write
    // makes room. Whether a key arrives by `insert` or by a `get_with` that loads it, it is a
    // new key, with the same standing: under CLOCK, the grace revolution a new entry has to be
    // read (a loaded one had none, so the hand took 3, loaded just before, over 1).
    enum Op {
        Write(u64),
        Read(u64),
    }
    use Op::{Read, Write};
    let ops = [
        Write(1),
        Write(0),
        Write(2),
        Read(1),
        Write(3),
        Read(2),
        Write(4),
    ];
    for policy in both_policies() {
        // What the reads found, and the keys left at the end.
        let replay = |load: bool| {
            let c = cache(3, policy);
            let mut found = Vec::new();
            for op in &ops {
                match *op {
                    Write(k) if load => assert_eq!(c.get_with(k, || k), k),
                    Write(k) => c.insert(k, k),
                    Read(k) => found.push(c.get(&k)),
                }
            }
            let mut keys: Vec<u64> = c.iter().map(|(k, _)| k).collect();
            keys.sort_unstable();
            (found, keys)
        };
        assert_eq!(replay(true), replay(false), "{policy:?}");
    }
}

/// A portable, seedable hasher: SipHash (std's `DefaultHasher`, zero keys) fed the seed first.
/// ahash's seeded hashers differ between CPUs with and without AES instructions, so a policy
/// test whose outcome depends on the hash uses this one, and never a randomly seeded one.
#[derive(Clone)]
struct Seeded(u64);

impl std::hash::BuildHasher for Seeded {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        let mut h = Self::Hasher::default();
        std::hash::Hasher::write_u64(&mut h, self.0);
        h
    }
}

#[test]
fn s3fifo_keeps_a_hot_key_through_a_scan() {
    // A key read once every 300 requests (three times the cache's size: LRU would lose it)
    // survives a scan of one-time keys a hundred times the cache's size.
    //
    // Whether it does depends on the hash: a one-time key whose sketch counters all collide
    // with others' can out-score the hot key in an admission duel. Over `Seeded` seeds 0..3000
    // it was lost 1, 0, 3 and 58 times at capacities 50, 100, 200 and 1000 (`hot_key_seed_sweep`
    // below; the sketch's module docs give the figures for the designs that lost it more often). This test once
    // used a randomly seeded hasher and failed CI that way. Hence fixed seeds, several.
    for seed in 0..8 / SCALE {
        let c: Cache<u64, u64, Seeded> = Cache::builder()
            .max_capacity(100)
            .hasher(Seeded(seed))
            .build()
            .unwrap();
        c.insert(u64::MAX, 0);
        for k in 0..10_000 / SCALE {
            if k % 300 == 0 {
                assert_eq!(
                    c.get(&u64::MAX),
                    Some(0),
                    "seed {seed}: evicted before key {k}"
                );
            }
            c.insert(k, k);
        }
        assert_eq!(c.get(&u64::MAX), Some(0), "seed {seed}");
    }
}

/// Whether a key read once every three cache-sizes of one-time inserts is still there after a
/// scan of a hundred cache-sizes, under one seed.
fn hot_key_survives(capacity: u64, seed: u64) -> bool {
    let c: Cache<u64, u64, Seeded> = Cache::builder()
        .max_capacity(capacity)
        .hasher(Seeded(seed))
        .build()
        .unwrap();
    c.insert(u64::MAX, 0);
    (0..100 * capacity).all(|k| {
        let alive = k % (3 * capacity) != 0 || c.get(&u64::MAX).is_some();
        c.insert(k, k);
        alive
    })
}

/// The figures `s3fifo_keeps_a_hot_key_through_a_scan` cites: over 3000 seeds, how often the
/// hot key is lost at four capacities. Slow (one to two minutes in release), so run on demand:
/// `cargo test --release -p larder-core --test api -- --ignored --nocapture hot_key_seed_sweep`.
/// The bounds are about twice the counts measured when it was written (1, 0, 3, 58).
#[test]
#[ignore = "a sweep of minutes; run on demand"]
fn hot_key_seed_sweep() {
    for (capacity, bound) in [(50, 5), (100, 5), (200, 8), (1000, 120)] {
        let lost = (0..3000)
            .filter(|&seed| !hot_key_survives(capacity, seed))
            .count();
        println!("capacity {capacity}: hot key lost for {lost} of 3000 seeds");
        assert!(lost <= bound, "capacity {capacity}: lost {lost} > {bound}");
    }
}

/// One-time entries heavier than small's target do not flush main's read entries. Small
/// moved an unread head on to main whenever main was below its share, even when the head
/// then took main past it: main filled the whole shard, small held only the entry being
/// written, and main gave up its read entries to make room for each next one-time entry. In
/// a shard of 100 with 50 entries of weight 1 read between every 20 one-time entries of
/// weight 5, all 50 went (30 with weight 2); with one-time entries of weight 1, none did.
#[test]
fn s3fifo_keeps_read_entries_through_a_scan_of_heavier_one_time_entries() {
    for scan_weight in [1, 2, 5] {
        let c: Cache<u64, u32> = Cache::builder()
            .max_capacity(100)
            .shards(1)
            .policy(Policy::S3Fifo)
            .weigher(|_, weight: &u32| *weight)
            .build()
            .unwrap();
        let hot = 0..50;
        hot.clone().for_each(|k| c.insert(k, 1));
        for k in 1000..1000 + 300 / SCALE {
            if k % 20 == 0 {
                for h in hot.clone() {
                    assert_eq!(c.get(&h), Some(1), "weight {scan_weight}: {h} lost by {k}");
                }
            }
            c.insert(k, scan_weight);
        }
        let kept = hot.clone().filter(|h| c.contains_key(h)).count();
        assert_eq!(kept, 50, "one-time entries of weight {scan_weight}");
        c.validate().unwrap();
    }
}

#[test]
fn weigher_bounds_the_total_weight() {
    let c: Cache<u64, Vec<u8>> = Cache::builder()
        .max_capacity(1000)
        .weigher(|_, v: &Vec<u8>| v.len() as u32)
        .build()
        .unwrap();
    for k in 0..100 {
        c.insert(k, vec![0; 30]);
        assert!(c.weighted_size() <= 1000);
    }
    assert_eq!(c.weighted_size(), 990);
    // Heavier than the whole capacity: refused, and the old value goes too.
    c.insert(99, vec![0; 2000]);
    assert_eq!(c.get(&99), None);
    assert_eq!(c.stats().rejections, 1);
    c.validate().unwrap();
}

/// An entry of weight 0 takes no capacity, so making room never evicts one (the `weigher`'s
/// doc). They were evicted: with five entries of weight 2 filling a shard of 10, and a hundred
/// of weight 0 queued before the heavy ones (CLOCK) or after them (S3-FIFO, whose small queue
/// gave up its whole unread head to make room), one more insert of weight 2 evicted all 100.
#[test]
fn making_room_never_evicts_an_entry_of_weight_0() {
    for policy in both_policies() {
        for zeros_first in [false, true] {
            let c: Cache<u64, u32> = Cache::builder()
                .max_capacity(10)
                .shards(1)
                .policy(policy)
                .weigher(|_, weight: &u32| *weight)
                .build()
                .unwrap();
            let heavy = || (0..5).for_each(|k| c.insert(k, 2));
            let zeros = || (100..200).for_each(|k| c.insert(k, 0));
            if zeros_first {
                zeros();
                heavy();
            } else {
                heavy();
                zeros();
            }
            assert_eq!((c.len(), c.weighted_size()), (105, 10));
            c.insert(999, 2);
            let kept = (100..200).filter(|k| c.contains_key(k)).count();
            assert_eq!(
                (kept, c.stats().evictions),
                (100, 1),
                "{policy:?}, weight-0 entries first: {zeros_first}"
            );
            assert_eq!(c.weighted_size(), 10);
            // Weight 0 on both sides of every queue: heavy entries still go, one per insert.
            for k in 1000..1100 {
                c.insert(k, if k % 2 == 0 { 0 } else { 2 });
                assert!(c.weighted_size() <= 10);
            }
            let kept = (100..200).filter(|k| c.contains_key(k)).count();
            assert_eq!(
                kept, 100,
                "{policy:?}, weight-0 entries first: {zeros_first}"
            );
            c.validate().unwrap();
        }
    }
}

/// A one-shard cache of `capacity` whose values are their weights, and the keys its listener
/// heard evicted to make room.
fn weighed_by_value(
    capacity: u64,
    policy: Policy,
) -> (Cache<u64, u32>, std::sync::Arc<std::sync::Mutex<Vec<u64>>>) {
    let evicted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&evicted);
    let c = Cache::builder()
        .max_capacity(capacity)
        .shards(1)
        .policy(policy)
        .weigher(|_, weight: &u32| *weight)
        .eviction_listener(move |k: std::sync::Arc<u64>, _, cause| {
            if cause == larder_core::RemovalCause::Size {
                sink.lock().unwrap().push(*k);
            }
        })
        .build()
        .unwrap();
    (c, evicted)
}

/// Entries of weight 0 are kept apart from the queues the policy turns (`eviction`'s module
/// doc), so a replacement that changes an entry's weight from 0 to something or back moves
/// it between the two. One that gains weight is evicted as any other entry is once room is
/// needed (left among those of weight 0, it would never be, and the shard would stay over its
/// capacity); one that loses it is never evicted again (left in the policy's queue, the hand
/// would take it, since it looks for nothing else).
#[test]
fn an_entry_is_evicted_only_while_its_replacements_weigh_something() {
    for policy in both_policies() {
        let (c, evicted) = weighed_by_value(10, policy);
        (100..150).for_each(|k| c.insert(k, 0));
        // Key 1 goes 0 → 4; key 2 goes 0 → 3 → 0.
        c.insert(1, 0);
        c.insert(2, 0);
        c.insert(1, 4);
        c.insert(2, 3);
        assert_eq!((c.len(), c.weighted_size()), (52, 7), "{policy:?}");
        c.validate().unwrap();
        c.insert(2, 0);
        assert_eq!((c.len(), c.weighted_size()), (52, 4), "{policy:?}");
        c.validate().unwrap();
        // New keys of weight 2, each read once (so that S3-FIFO moves them on to main, whose
        // hand then chooses), until every weighted entry has been made room for.
        for k in 1000..1000 + 40 {
            c.insert(k, 2);
            assert_eq!(c.get(&k), Some(2));
            assert!(c.weighted_size() <= 10, "{policy:?}");
            c.validate().unwrap();
        }
        let evicted = std::mem::take(&mut *evicted.lock().unwrap());
        assert!(
            evicted.contains(&1),
            "{policy:?}: key 1, of weight 4 since its replacement, was never evicted"
        );
        assert!(
            !evicted.contains(&2) && !evicted.iter().any(|k| (100..150).contains(k)),
            "{policy:?}: an entry of weight 0 evicted: {evicted:?}"
        );
        assert_eq!(c.get(&2), Some(0), "{policy:?}");
        assert_eq!(
            c.len(),
            51 + 5,
            "{policy:?}: the 50 of weight 0, key 2 and 5 of weight 2"
        );
    }
}

/// Entries of weight 0, kept apart from the policy's queues, still leave by every way but
/// eviction: `remove`, `invalidate`, `clear`; and `iter` yields them with the others.
#[test]
fn entries_of_weight_0_are_removed_cleared_and_iterated_as_others_are() {
    for policy in both_policies() {
        let (c, evicted) = weighed_by_value(4, policy);
        (0..20).for_each(|k| c.insert(k, 0));
        (100..104).for_each(|k| c.insert(k, 1));
        let mut all: Vec<(u64, u32)> = c.iter().collect();
        all.sort_unstable();
        let expected: Vec<(u64, u32)> = (0..20)
            .map(|k| (k, 0))
            .chain((100..104).map(|k| (k, 1)))
            .collect();
        assert_eq!(all, expected, "{policy:?}");
        assert_eq!(c.remove(&3), Some(0), "{policy:?}");
        c.invalidate(&4);
        assert_eq!((c.get(&3), c.get(&4)), (None, None), "{policy:?}");
        assert_eq!((c.len(), c.weighted_size()), (22, 4), "{policy:?}");
        assert_eq!(c.stats().removals, 2, "{policy:?}");
        c.validate().unwrap();
        c.clear();
        assert_eq!((c.len(), c.weighted_size()), (0, 0), "{policy:?}");
        assert_eq!(c.iter().count(), 0, "{policy:?}");
        c.validate().unwrap();
        // The shard works on as before: weight 0 kept, weight 1 evicted to make room.
        (0..20).for_each(|k| c.insert(k, 0));
        (100..110).for_each(|k| c.insert(k, 1));
        assert_eq!((c.len(), c.weighted_size()), (24, 4), "{policy:?}");
        assert_eq!(evicted.lock().unwrap().len(), 6, "{policy:?}");
        c.validate().unwrap();
    }
}

/// A value whose `Clone` inserts into its own cache, which the cache's docs allow wherever it
/// holds no lock; it weighs `weight`.
struct WritesOnClone {
    cache: std::sync::Arc<std::sync::Mutex<Option<Cache<u64, WritesOnClone>>>>,
    weight: u32,
}

impl Clone for WritesOnClone {
    fn clone(&self) -> Self {
        let cache = self.cache.lock().unwrap().clone();
        if let Some(cache) = cache {
            cache.insert(
                2,
                WritesOnClone {
                    cache: self.cache.clone(),
                    weight: 1,
                },
            );
        }
        WritesOnClone {
            cache: self.cache.clone(),
            weight: self.weight,
        }
    }
}

/// A write that removes a value nobody asked for does not clone it: the value goes to nobody,
/// and `V::clone` under the shard lock would wait for the lock forever if it used the same
/// shard, as this one does. An insert refused as too heavy removes the key's older value;
/// `invalidate` removes the key's value (it cloned it, as `remove` does for its answer).
#[test]
fn a_write_that_discards_a_value_does_not_clone_it() {
    for invalidate in [false, true] {
        let cache: Cache<u64, WritesOnClone> = Cache::builder()
            .max_capacity(10)
            .shards(1)
            .weigher(|_, v: &WritesOnClone| v.weight)
            .build()
            .unwrap();
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(cache.clone())));
        let value = |weight| WritesOnClone {
            cache: slot.clone(),
            weight,
        };
        cache.insert(1, value(1));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = {
            let (cache, heavy) = (cache.clone(), value(100));
            std::thread::spawn(move || {
                if invalidate {
                    cache.invalidate(&1);
                } else {
                    cache.insert(1, heavy);
                }
                done_tx.send(()).unwrap();
            })
        };
        let write = if invalidate {
            "invalidate"
        } else {
            "the refused insert"
        };
        done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!("{write} cloned the value it removed, under the shard lock")
            });
        writer.join().unwrap();
        assert!(!cache.contains_key(&1), "{write}: the older value went");
        assert!(!cache.contains_key(&2), "{write}: no value was cloned");
        let stats = cache.stats();
        assert_eq!(
            (stats.rejections, stats.removals),
            if invalidate { (0, 1) } else { (1, 0) },
            "{write}"
        );
        cache.validate().unwrap();
        // The values hold the cache: break the cycle.
        *slot.lock().unwrap() = None;
    }
}

/// A value whose `Drop` inserts into its own cache, if `writes` is set; it weighs `weight`.
/// The cache's docs let a value's `Drop` use the cache: it runs with no lock held.
struct WritesOnDrop {
    cache: std::sync::Arc<std::sync::Mutex<Option<Cache<u64, WritesOnDrop>>>>,
    weight: u32,
    writes: bool,
}

impl Clone for WritesOnDrop {
    fn clone(&self) -> Self {
        WritesOnDrop {
            cache: self.cache.clone(),
            weight: self.weight,
            writes: self.writes,
        }
    }
}

impl Drop for WritesOnDrop {
    fn drop(&mut self) {
        if !self.writes {
            return;
        }
        let cache = self.cache.lock().unwrap().clone();
        if let Some(cache) = cache {
            let quiet = WritesOnDrop {
                cache: self.cache.clone(),
                weight: 1,
                writes: false,
            };
            cache.insert(2, quiet);
        }
    }
}

/// The value of an insert or a load refused as too heavy is dropped with no lock held:
/// dropped under the shard lock, its `Drop`, which writes to the same shard here, would wait
/// for the lock forever.
#[test]
fn a_refused_value_is_dropped_outside_the_shard_lock() {
    let cache: Cache<u64, WritesOnDrop> = Cache::builder()
        .max_capacity(10)
        .shards(1)
        .weigher(|_, v: &WritesOnDrop| v.weight)
        .build()
        .unwrap();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(cache.clone())));
    let heavy = || WritesOnDrop {
        cache: slot.clone(),
        weight: 100,
        writes: true,
    };
    // Each write on a thread of its own, so that a write stuck on the lock fails the test.
    let within_a_minute = |what: &str, write: Box<dyn FnOnce() -> bool + Send>| {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || done_tx.send(write()).unwrap());
        let stored = done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the refused {what}'s value was dropped under the lock"));
        writer.join().unwrap();
        assert!(!stored, "the {what} was refused as too heavy");
        assert!(
            cache.remove(&2).is_some(),
            "the refused {what}'s value's drop wrote"
        );
    };
    let (c, inserted) = (cache.clone(), heavy());
    within_a_minute("insert", Box::new(move || c.insert_and_check(1, inserted)));
    // The loader returns its value, and drops the copy it meant to store.
    let (c, loaded) = (cache.clone(), heavy());
    within_a_minute(
        "load",
        Box::new(move || {
            drop(c.get_with(3, || loaded));
            c.contains_key(&3)
        }),
    );
    assert_eq!(cache.stats().rejections, 2);
    cache.validate().unwrap();
    // The values hold the cache: break the cycle.
    *slot.lock().unwrap() = None;
}

/// Why `builder` was refused, as its error reads.
fn refusal(builder: larder_core::CacheBuilder<u64, u64>) -> String {
    builder.build().unwrap_err().to_string()
}

#[test]
fn build_errors_instead_of_panicking() {
    let e = refusal(Cache::builder().max_capacity(0));
    assert!(e.contains("at least 1"), "{e}");
    let e = refusal(Cache::builder());
    assert!(e.contains("max_capacity"), "{e}");
    let e = refusal(Cache::builder().max_capacity(10).shards(0));
    assert!(e.contains("shards"), "{e}");
    let e = refusal(Cache::builder().max_capacity(2).shards(3));
    assert!(e.contains("3 shards"), "{e}");
    // Shard counts and initial capacities no memory could hold are errors too, not an abort
    // of the process when the allocation fails.
    let e = refusal(
        Cache::builder()
            .max_capacity(u64::MAX)
            .shards(larder_core::MAX_SHARDS + 1),
    );
    assert!(e.contains("more than the 65536"), "{e}");
    let e = refusal(
        Cache::builder()
            .max_capacity(u64::MAX)
            .shards(1)
            .initial_capacity(usize::MAX),
    );
    assert!(e.contains("could not be allocated"), "{e}");
}

#[test]
fn an_initial_capacity_or_reserve_beyond_the_capacity_sizes_for_the_capacity() {
    let c = Cache::<u64, u64>::builder()
        .max_capacity(100)
        .initial_capacity(usize::MAX)
        .build()
        .unwrap();
    c.reserve(usize::MAX);
    for k in 0..200 {
        c.insert(k, k);
    }
    assert_eq!(c.len(), 100);
    c.validate().unwrap();
}

#[test]
fn zero_capacity_new_stores_nothing() {
    let c: Cache<u64, u64> = Cache::new(0);
    c.insert(1, 1);
    assert_eq!(c.get(&1), None);
    assert_eq!(c.stats().rejections, 1);
}

#[test]
fn small_caches_get_one_shard() {
    assert_eq!(Cache::<u64, u64>::new(64).shard_count(), 1);
    assert_eq!(Cache::<u64, u64>::new(2047).shard_count(), 1);
    assert!(Cache::<u64, u64>::new(1 << 20).shard_count() >= 1);
}

#[test]
fn borrowed_lookups() {
    let c: Cache<String, u32> = Cache::new(10);
    c.insert("a".to_string(), 1);
    assert_eq!(c.get("a"), Some(1));
    assert!(c.contains_key("a"));
    assert_eq!(c.remove("a"), Some(1));
}

#[test]
fn clear_removes_everything() {
    let c = cache(10_000, Policy::S3Fifo);
    for k in 0..5000 / SCALE {
        c.insert(k, k);
    }
    c.clear();
    assert_eq!(c.len(), 0);
    assert_eq!(c.get(&1), None);
    c.insert(1, 1);
    assert_eq!(c.get(&1), Some(1));
    c.validate().unwrap();
}

#[test]
fn iter_yields_each_entry_once() {
    let c = cache(10_000, Policy::Lru);
    let n = 3000 / SCALE;
    for k in 0..n {
        c.insert(k, k * 2);
    }
    for k in 0..n / 3 {
        c.remove(&k);
    }
    let mut seen: Vec<(u64, u64)> = c.iter().collect();
    seen.sort();
    let want: Vec<(u64, u64)> = (n / 3..n).map(|k| (k, k * 2)).collect();
    assert_eq!(seen, want);
}

#[test]
fn churn_keeps_the_index_healthy() {
    // Inserts and removals of ever-new keys leave tombstones; the index must rebuild, not grow
    // without bound or loop.
    let c = cache(100, Policy::S3Fifo);
    for k in 0..100_000 / SCALE / SCALE {
        c.insert(k, k);
        if k % 3 == 0 {
            c.remove(&k);
        }
    }
    c.validate().unwrap();
    assert!(c.len() <= 100);
}

/// While set, every [`Fickle`] key below 100 hashes differently than it did before.
static FICKLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Held by each test that uses [`Fickle`] keys for its whole run: the switch is global, and a
/// test's `validate` hashes its keys again, so one test's switch must not flip under another.
static FICKLE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`FICKLE_TESTS`] (a test that failed while holding it leaves it poisoned, not taken).
fn fickle_test() -> std::sync::MutexGuard<'static, ()> {
    FICKLE_TESTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A key whose `Hash` can change: a bug in the key's type, which may make the cache lose track
/// of entries (as it may a `HashMap`), but must not make it free an entry it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fickle(u64);

impl std::hash::Hash for Fickle {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let changed = self.0 < 100 && FICKLE.load(std::sync::atomic::Ordering::SeqCst);
        state.write_u64(self.0 ^ if changed { 0xdead_beef } else { 0 });
    }
}

/// An eviction hashes its victim's key again to find the victim's slot. With a `Hash` that
/// answers differently now, that finds no slot: the victim must still leave the table (found
/// by its address), or the table would keep a node that is freed once the epoch allows.
#[test]
fn an_eviction_victim_whose_hash_changed_still_leaves_the_table() {
    let _serial = fickle_test();
    for policy in both_policies() {
        let cache: Cache<Fickle, u64> = Cache::builder()
            .max_capacity(4)
            .shards(1)
            .policy(policy)
            .build()
            .unwrap();
        for k in 0..4 {
            cache.insert(Fickle(k), k);
        }
        // Key 100 hashes as it always does; its insert's victim, one of 0..4, does not.
        FICKLE.store(true, std::sync::atomic::Ordering::SeqCst);
        cache.insert(Fickle(100), 100);
        FICKLE.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(cache.len(), 4);
        cache.validate().unwrap();
        assert_eq!(cache.iter().count(), 4, "the victim is gone from the table");
    }
}

/// A failed load takes its pending node out of the table by the hash its key had when the
/// load began. If a table rebuild meanwhile placed the node by a hash that changed, that hash
/// finds no slot: the node must still leave the table (found by its address), or the table
/// would keep a node that is freed once the epoch allows.
#[test]
fn a_load_whose_key_hash_changed_still_leaves_the_table() {
    let _serial = fickle_test();
    let cache: Cache<Fickle, u64> = Cache::builder()
        .max_capacity(1000)
        .shards(1)
        .build()
        .unwrap();
    let (loader, fail) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            cache.try_get_with(Fickle(50), || {
                hold();
                Err("no")
            })
        }
    });
    // The rebuilds these inserts make place the pending node by its key's changed hash.
    FICKLE.store(true, std::sync::atomic::Ordering::SeqCst);
    for k in 100..200 {
        cache.insert(Fickle(k), k);
    }
    FICKLE.store(false, std::sync::atomic::Ordering::SeqCst);
    fail.send(()).unwrap();
    assert!(loader.join().unwrap().is_err());
    cache.validate().unwrap();
    assert_eq!(cache.len(), 100);
}

/// A load that succeeds after a table rebuild placed its pending node by its key's changed
/// hash is scheduled to expire all the same (its slot found by its address): once its
/// lifetime has passed, the janitor's work removes it.
#[test]
fn a_load_whose_key_hash_changed_still_expires() {
    let _serial = fickle_test();
    let time = larder_core::MockClock::new();
    let cache: Cache<Fickle, u64> = Cache::builder()
        .max_capacity(1000)
        .shards(1)
        .time_to_live(std::time::Duration::from_millis(10))
        .clock(time.clock())
        .without_janitor()
        .build()
        .unwrap();
    let (loader, finish) = hold_a_load({
        let cache = cache.clone();
        move |hold| {
            cache.get_with(Fickle(50), || {
                hold();
                50
            })
        }
    });
    // The rebuilds these inserts make place the pending node by its key's changed hash.
    FICKLE.store(true, std::sync::atomic::Ordering::SeqCst);
    for k in 100..200 {
        cache.insert(Fickle(k), k);
    }
    FICKLE.store(false, std::sync::atomic::Ordering::SeqCst);
    // They expire and leave, so no segment of the wheel is due for them any more: only the
    // load's own scheduling can make the janitor's work look at the loaded entry's slot.
    time.advance(std::time::Duration::from_millis(20));
    cache.run_pending_tasks();
    assert_eq!(cache.len(), 0);
    finish.send(()).unwrap();
    assert_eq!(loader.join().unwrap(), 50);
    assert_eq!(cache.len(), 1);
    time.advance(std::time::Duration::from_millis(20));
    cache.run_pending_tasks();
    assert_eq!(cache.len(), 0, "the loaded entry's lifetime has passed");
    cache.validate().unwrap();
}

/// An identity hasher for integer keys, as `nohash-hasher` is: `finish` is the key itself.
#[derive(Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// FNV-1a, a 32-bit hash, widened to 64 bits: the top half of every hash is 0.
struct Fnv32(u32);

impl std::hash::Hasher for Fnv32 {
    fn finish(&self) -> u64 {
        u64::from(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
}

#[derive(Clone, Default)]
struct BuildFnv32;

impl std::hash::BuildHasher for BuildFnv32 {
    type Hasher = Fnv32;
    fn build_hasher(&self) -> Fnv32 {
        Fnv32(0x811c_9dc5)
    }
}

/// Keys spread over every shard, and a cache holds about its capacity, whatever bits of the
/// user's hash carry its entropy. The shard came from the hash's top 32 bits as they were,
/// so with an identity hasher (small integer keys) or a 32-bit hash every key went to shard 0:
/// a cache of 4,096 over 4 shards evicted 3,072 of 4,096 keys while it held 1,024, and the
/// control bytes, tags and S3-FIFO's fingerprints (bits 32..56 too) were the same for all.
#[test]
fn a_hash_with_an_empty_top_half_still_spreads_keys_over_the_shards() {
    fn check<S: std::hash::BuildHasher + Send + Sync + 'static>(name: &str, hasher: S) {
        let c: Cache<u64, u64, S> = Cache::builder()
            .max_capacity(4096)
            .shards(4)
            .hasher(hasher)
            .build()
            .unwrap();
        let used: std::collections::HashSet<usize> =
            (0..4096u64).map(|k| c.shard_index(&k)).collect();
        for k in 0..4096 / SCALE {
            c.insert(k, k);
        }
        assert_eq!(used.len(), 4, "{name}: keys in {} of 4 shards", used.len());
        if SCALE == 1 {
            assert!(c.len() >= 3 * 1024, "{name}: {} of 4,096 kept", c.len());
        }
        c.validate().unwrap();
    }
    check("fnv-1a 32", BuildFnv32);
    check(
        "identity",
        std::hash::BuildHasherDefault::<IdentityHasher>::default(),
    );
}

/// Random writes to weighted caches whose shares were fitted, some fitted again after a clear:
/// after every write the cache holds at most its capacity and passes `validate` (each shard
/// within its share, the shares and the spare adding up to the capacity). Seeded, so a
/// failure repeats; the two bugs this would have caught were a share given up below the
/// weight of the entry being written, and a refitting that kept the old spare room.
#[test]
#[cfg_attr(miri, ignore = "safe code on paths other tests cover; too slow there")]
fn fitted_shares_keep_the_bound_under_random_writes() {
    random_writes_keep_fitted_shares_within_the_capacity(0x9E37_79B9_7F4A_7C15, false);
}

/// The same with entries that expire (a mock clock, the janitor's work run by hand, lifetimes
/// of their own), so that room also leaves the shards through expiry and through writes over
/// expired entries, and goes back to the spare from there (`Locked::give_back_freed`).
#[test]
#[cfg_attr(miri, ignore = "safe code on paths other tests cover; too slow there")]
fn fitted_shares_keep_the_bound_under_random_writes_that_expire() {
    random_writes_keep_fitted_shares_within_the_capacity(0x2545_F491_4F6C_DD1D, true);
}

/// 300 seeded sequences of 300 random writes each (with `expiring`, also lifetimes, clock
/// moves and the janitor's work), checking the bound and `validate` after each.
fn random_writes_keep_fitted_shares_within_the_capacity(seed: u64, expiring: bool) {
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for sequence in 0..300 {
        let capacity = 8 + next(200);
        let policy = both_policies()[sequence % 2];
        let time = larder_core::MockClock::new();
        let builder = Cache::builder()
            .max_capacity(capacity)
            .shards(4)
            .policy(policy)
            .weigher(|_, v: &u64| u32::try_from(*v).unwrap());
        let c: Cache<u64, u64> = if expiring {
            builder
                .time_to_live(std::time::Duration::from_millis(50))
                .clock(time.clock())
                .without_janitor()
                .build()
                .unwrap()
        } else {
            builder.build().unwrap()
        };
        let even = capacity / 4;
        let weights = |next: &mut dyn FnMut(u64) -> u64| -> Vec<u64> {
            (0..4).map(|_| next(capacity / 3 + 1)).collect()
        };
        // Refused when the weights do not fit; then the shares stay as they were. Fitted, the
        // load stays open through the writes that follow, until the next fitting or the end.
        let mut load = c.share_capacity(&weights(&mut next));
        for _ in 0..300 {
            let key = next(64);
            let weight = next(even + even / 2 + 1);
            let ms = |n: u64| std::time::Duration::from_millis(n);
            match next(100) {
                45..=54 if expiring => c.insert_with_ttl(key, weight, ms(next(40) + 1)).unwrap(),
                55..=69 => drop(c.get_with(key, || weight)),
                70..=84 => drop(c.remove(&key)),
                85..=92 if expiring => time.advance(ms(next(30))),
                93..=95 if expiring => c.run_pending_tasks(),
                96 | 97 => c.clear(),
                98 | 99 => {
                    drop(load.take());
                    c.clear();
                    load = c.share_capacity(&weights(&mut next));
                }
                _ => c.insert(key, weight),
            }
            let held: u64 = c.iter().map(|(_, v)| v).sum();
            assert!(
                held <= capacity,
                "sequence {sequence}: {held} held in a cache of {capacity}"
            );
            if let Err(e) = c.validate() {
                panic!("sequence {sequence}, {policy:?}, capacity {capacity}: {e}");
            }
        }
        drop(load);
        if let Err(e) = c.validate() {
            panic!("sequence {sequence}, {policy:?}, capacity {capacity}, load ended: {e}");
        }
    }
}

/// A full shard above its even share gives up, on a write that must evict, as much of its
/// share as the write brings (here 1), not all it holds above even at once: unweighted, a
/// shard `n` over its even share is back at it after `n` such writes, each evicting 2.
#[test]
fn a_shard_over_its_even_share_gives_it_up_as_the_writes_come() {
    for policy in both_policies() {
        let c: Cache<u64, u64> = Cache::builder()
            .max_capacity(64)
            .policy(policy)
            .shards(4)
            .build()
            .unwrap();
        let wanted = [24, 16, 12, 12];
        let load = c.share_capacity(&wanted).expect("fitted");
        let mut loaded = [0; 4];
        let mut keys = 0..;
        while loaded != wanted {
            let k = keys.next().unwrap();
            let i = c.shard_index(&k);
            if loaded[i] < wanted[i] {
                c.insert(k, k);
                loaded[i] += 1;
            }
        }
        drop(load);
        assert_eq!(c.len(), 64);
        let in_shard_0 =
            |c: &Cache<u64, u64>| c.iter().filter(|(k, _)| c.shard_index(k) == 0).count();
        let mut fresh = (1_000_000..).filter(|k| c.shard_index(k) == 0);
        c.insert(fresh.next().unwrap(), 0);
        assert_eq!(
            in_shard_0(&c),
            23,
            "{policy:?}: shard 0's share went from 24 to 23"
        );
        assert_eq!(c.stats().evictions, 2, "{policy:?}");
        c.insert(fresh.next().unwrap(), 0);
        assert_eq!(in_shard_0(&c), 22, "{policy:?}");
        assert_eq!(c.stats().evictions, 4, "{policy:?}");
        c.validate().unwrap();
    }
}

#[test]
fn reset_stats_zeroes_the_misses_as_well_as_the_hits() {
    let c = cache(10, Policy::S3Fifo);
    c.insert(1, 1);
    c.get(&1);
    c.get(&2);
    c.get(&3);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.inserts), (1, 2, 1));
    c.reset_stats();
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.inserts), (0, 0, 0));
    c.get(&1);
    c.get(&2);
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (1, 1), "counting goes on from zero");
}

/// The shard-count bounds are inclusive: as many shards as units of capacity (each holds
/// one), and `MAX_SHARDS` itself.
#[test]
fn a_shard_per_unit_of_capacity_and_the_most_shards_build() {
    let c: Cache<u64, u64> = Cache::builder().max_capacity(3).shards(3).build().unwrap();
    assert_eq!(c.shard_count(), 3);
    for k in 0..30 {
        c.insert(k, k);
    }
    assert!(c.len() <= 3);
    c.validate().unwrap();
    // 65,536 shards take tens of megabytes and many allocations: not under miri.
    if !cfg!(miri) {
        let c: Cache<u64, u64> = Cache::builder()
            .max_capacity(larder_core::MAX_SHARDS as u64)
            .shards(larder_core::MAX_SHARDS)
            .build()
            .unwrap();
        assert_eq!(c.shard_count(), larder_core::MAX_SHARDS);
        c.insert(1, 1);
        assert_eq!(c.get(&1), Some(1));
    }
}

/// `insert_and_check` is false only for an entry refused as too heavy: a new key and a
/// replacement are both in the cache when it returns.
#[test]
fn insert_and_check_is_true_for_a_replacement() {
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .shards(1)
        .weigher(|_, v: &u64| u32::try_from(*v).unwrap())
        .build()
        .unwrap();
    assert!(c.insert_and_check(1, 1), "a new key");
    assert!(c.insert_and_check(1, 2), "a replacement");
    assert_eq!(c.get(&1), Some(2));
    assert!(!c.insert_and_check(1, 11), "too heavy");
    assert_eq!(c.get(&1), None);
    assert!(c.insert_and_check(1, 10), "as heavy as the shard: taken");
    assert_eq!(c.get(&1), Some(10));
}

/// The keys of a one-shard cache, sorted.
fn keys_of(c: &Cache<u64, u64>) -> Vec<u64> {
    let mut keys: Vec<u64> = c.iter().map(|(k, _)| k).collect();
    keys.sort_unstable();
    keys
}

/// CLOCK gives a new entry one revolution of the hand to be read (the grace bit), and a read
/// sets the reference bit whatever it was, so reads do not add up: 3, new and unread,
/// outlives 1, whose read (one or two of them alike) the hand spent making room for 3.
#[test]
fn clock_gives_a_new_entry_a_revolution_and_reads_set_one_bit() {
    for reads in [1, 2] {
        let c = Cache::builder()
            .max_capacity(2)
            .shards(1)
            .policy(Policy::Lru)
            .build()
            .unwrap();
        c.insert(1, 1);
        c.insert(2, 2);
        for _ in 0..reads {
            assert_eq!(c.get(&1), Some(1));
        }
        c.insert(3, 3);
        assert_eq!(keys_of(&c), [1, 3], "{reads} read(s): 2 was not read");
        c.insert(4, 4);
        assert_eq!(
            keys_of(&c),
            [3, 4],
            "{reads} read(s): 3 still had its grace, 1 had none left"
        );
    }
}

/// An entry read while it waits in S3-FIFO's small queue moves to main when it reaches
/// small's head, even with main full: it is not a one-hit wonder. Unread, it would be
/// evicted, as 9 and 10 are.
#[test]
fn s3fifo_moves_an_entry_read_once_in_small_to_main() {
    let c: Cache<u64, u64, Seeded> = Cache::builder()
        .max_capacity(10)
        .shards(1)
        .hasher(Seeded(0))
        .build()
        .unwrap();
    // 0..9 fill main (moved on unread while it was below its share), 9 and 10 are evicted
    // from small unread.
    for k in 0..12 {
        c.insert(k, k);
    }
    assert!(!c.contains_key(&9) && !c.contains_key(&10));
    assert_eq!(c.get(&11), Some(11));
    c.insert(12, 12);
    assert!(c.contains_key(&11), "11 was read in small");
    assert_eq!(c.len(), 10);
    c.validate().unwrap();
}

#[test]
fn the_hit_ratio_of_no_reads_is_zero() {
    let c = cache(10, Policy::S3Fifo);
    c.insert(1, 1);
    assert_eq!(c.stats().hit_ratio(), 0.0);
}

#[test]
fn only_a_cache_with_a_weigher_is_weighted() {
    assert!(!cache(10, Policy::S3Fifo).is_weighted());
    assert!(!Cache::<u64, u64>::new(10).is_weighted());
    let weighted: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .weigher(|_, _| 1)
        .build()
        .unwrap();
    assert!(weighted.is_weighted());
}
