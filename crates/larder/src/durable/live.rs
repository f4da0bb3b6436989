//! Recovery (step 5 of the module doc in `mod.rs`): the live set a log describes, worked out
//! while the log replays, then loaded into the cache.
//!
//! The live set is worked out before anything reaches the cache: the last record per key wins,
//! deletes and clears remove. Loading only the survivors means the cache's policy never sees an
//! entry the log says is gone, so it cannot evict a live entry to make room for one that is
//! deleted a few records later.
//!
//! **Steps in write order, swept in buckets.** Replay pushes each decoded put and delete onto a
//! vector, with its key's hash beside it, and does nothing else per record: no lookup. Which
//! step of a key is its last is found later, by a sweep, for all keys at once: the steps'
//! positions are spread into buckets by the top bits of their hashes, keeping write order, and
//! each bucket, small enough to stay in cache, is walked back from its end through a small
//! table of the keys met so far. The first step of a key met that way is its last; it stays if
//! it is a put, and every other step goes. A clear empties the vector. So the survivors come out
//! in write order, the order the cache must see them in, with no sort. A sweep runs once the
//! replay ends, and whenever the vector has doubled since the last one, so it never holds more
//! than about twice the largest live set the replay has seen (superseded values included, until
//! the sweep), however many records a log of a few keys has; and each sweep's work is paid for
//! by the steps pushed since the one before.
//!
//! The hash table this replaced, from each key to the position of its live put, was looked up
//! as each record replayed, and a lookup in a table of a million keys is a cache and TLB miss:
//! on this VM about 200 ns a record, a third of an open of 1M entries. The sweep reads and
//! writes the same amount of memory in a few passes, each in order or within a bucket
//! (`docs/BENCHMARKS.md`, "Recovery"). Where a log holds many records of a few keys, the table
//! missed less and each sweep finds more to drop; a log of ten records a key (compaction off)
//! opened in about the same time either way.

use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use larder_core::{unwind, Cache};
use larder_log::format::{Op, Record};

use super::codec::Codec;
use super::deadline_after;
use super::error::Error;
use super::evicted::EvictedKeys;

/// Steps the vector may hold before a sweep is due at all, so that a small log sweeps once, at
/// the end of its replay.
const SWEEP_AFTER: usize = 1 << 12;

/// About how many steps one of a sweep's buckets holds: 16 KiB of hashes and positions, and a
/// table of 16 to 32 KiB to find each key's last step among them.
const BUCKET: usize = 1 << 10;

/// Below this many live entries, one thread loads them.
const PARALLEL_LOAD: usize = 1 << 16;

/// The live set of a log being replayed (module doc).
pub(super) struct Live<'c, K, V> {
    /// Every put and delete since the last clear, in write order, less those a sweep dropped.
    steps: Vec<Step<K, V>>,
    /// The hash of `steps[i]`'s key, so that no sweep hashes a key again.
    hashes: Vec<u64>,
    /// How many steps the last sweep kept: the next one is due when there are twice as many.
    swept: usize,
    hasher: ahash::RandomState,
    key_codec: &'c dyn Codec<K>,
    value_codec: &'c dyn Codec<V>,
}

/// A replayed record of one key.
enum Step<K, V> {
    Put(Put<K, V>),
    Delete(K),
}

impl<K, V> Step<K, V> {
    fn key(&self) -> &K {
        match self {
            Step::Put(put) => &put.key,
            Step::Delete(key) => key,
        }
    }
}

/// A key's put, decoded (no copy of its bytes between the log and the cache).
struct Put<K, V> {
    key: K,
    value: V,
    /// Wall-clock ms; 0 for never.
    expires_at_ms: u64,
}

impl<'c, K: Hash + Eq, V> Live<'c, K, V> {
    pub(super) fn new(key_codec: &'c dyn Codec<K>, value_codec: &'c dyn Codec<V>) -> Self {
        Live {
            steps: Vec::new(),
            hashes: Vec::new(),
            swept: 0,
            hasher: ahash::RandomState::new(),
            key_codec,
            value_codec,
        }
    }

    /// Applies one replayed record; one that does not decode is refused, and the log's open
    /// (`Log::open_checked`) returns the error before it changes anything on disk.
    pub(super) fn apply(&mut self, record: Record<'_>) -> Result<(), Error> {
        let (seq, location) = (record.seq(), record.location());
        let undecodable = |what| {
            move |source| Error::Codec {
                what,
                seq: Some(seq),
                location: Some(location),
                source,
            }
        };
        match record.op() {
            Op::Put {
                key,
                value,
                expires_at_ms,
            } => {
                let key = self.key_codec.decode(key).map_err(undecodable("key"))?;
                let value = self
                    .value_codec
                    .decode(value)
                    .map_err(undecodable("value"))?;
                self.push(Step::Put(Put {
                    key,
                    value,
                    expires_at_ms,
                }));
            }
            Op::Delete { key } => {
                let key = self.key_codec.decode(key).map_err(undecodable("key"))?;
                self.push(Step::Delete(key));
            }
            Op::Clear => self.apply_clear(),
        }
        Ok(())
    }

    /// Forgets every step.
    fn apply_clear(&mut self) {
        self.steps.clear();
        self.hashes.clear();
        self.swept = 0;
    }

    /// Records `step` as its key's latest, sweeping if the vector has doubled since the last
    /// sweep (and holds more than a small log's worth).
    fn push(&mut self, step: Step<K, V>) {
        self.hashes.push(self.hasher.hash_one(step.key()));
        self.steps.push(step);
        if self.steps.len() >= SWEEP_AFTER.max(2 * self.swept) {
            self.sweep();
        }
    }

    /// Drops every step but each key's last, and a last step that is a delete: what is left
    /// is the live set, one put per key, in write order.
    fn sweep(&mut self) {
        let steps = &self.steps;
        let dropped = superseded(
            &self.hashes,
            |a, b| steps[a].key() == steps[b].key(),
            |at| matches!(steps[at], Step::Delete(_)),
        );
        keep(&mut self.steps, &dropped);
        keep(&mut self.hashes, &dropped);
        self.swept = self.steps.len();
    }

    /// The live puts in the order they were written, without those whose deadline has passed
    /// by `now_ms`. Call [`Live::sweep`] first: every step left is then a put.
    fn into_survivors(self, now_ms: u64) -> impl Iterator<Item = Put<K, V>> {
        self.steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Put(put) => Some(put),
                Step::Delete(_) => None,
            })
            .filter(move |put| put.expires_at_ms == 0 || put.expires_at_ms > now_ms)
    }

    /// Inserts the survivors, each shard's in the order they were written, dropping those
    /// whose deadline has passed by `now_ms` or passes before the load reaches them. An entry
    /// with a deadline lives what is left of it by the wall clock at its insert, capped at the
    /// cache's time-to-live. Returns the keys whose records are to be written again with
    /// another deadline: 0 for entries the cache keeps for good, having no expiry, and the
    /// capped deadline for those the cache's time-to-live cut short (entries recorded without
    /// a deadline included).
    ///
    /// First the cache's capacity is shared out over its shards to fit the survivors where
    /// this cache's hasher puts them, so that a cache reopened as it was (or larger) keeps
    /// them all. Only survivors that do not fit that way are evicted by the policy as they
    /// load.
    ///
    /// The keys of entries the cache does not keep must leave the log too, or a later open
    /// with room for them would bring them back: what the policy evicts reaches `evicted`
    /// through the cache's removal observer, and this queues there the keys of entries the
    /// cache refused as too heavy (which it reports to nobody). Only a weighted cache refuses
    /// (`Cache::is_weighted`), so only its keys are cloned to be checked.
    ///
    /// The survivors load shard after shard, each shard's in write order, and a large live set
    /// on two threads, one taking the even shards and one the odd. Shards share neither locks,
    /// capacity nor policy state (each has its own queues, ghosts and sketch), so every shard
    /// sees exactly the inserts, in exactly the order, that one thread loading in write order
    /// would give it: the same entries survive, in the same queue order.
    pub(super) fn load_into<S>(
        mut self,
        cache: &Cache<K, V, S>,
        evicted: &EvictedKeys<K>,
        now_ms: u64,
    ) -> Vec<(K, u64)>
    where
        K: Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Send + Sync,
    {
        self.sweep();
        let live = self.steps.len();
        let alive = self.into_survivors(now_ms);
        let weighted = cache.is_weighted();
        let ttl = cache.time_to_live();
        let load = |part: &mut dyn Iterator<Item = Put<K, V>>| {
            let mut restated = Vec::new();
            for put in part {
                let kept_out = weighted.then(|| put.key.clone());
                let at = put.expires_at_ms;
                if at == 0 {
                    // Kept for good by the cache that wrote it, here for the cache's
                    // time-to-live, if it has one: the record is to be written again with that
                    // deadline, as one cut short below is, or a crash after the entry expired
                    // here, before its delete was recorded, would bring it back at every open.
                    let cut_short =
                        ttl.map(|ttl| (put.key.clone(), deadline_after(cache.clock(), ttl)));
                    cache.insert(put.key, put.value);
                    restated.extend(cut_short);
                } else {
                    // What is left of the recorded deadline, by the clock now: a load of
                    // millions of entries (or one with a slow weigher) takes long enough that
                    // the time at its start would keep the last ones past their deadline.
                    // Never more than the cache's own time-to-live: a deadline further out
                    // than that was written by a wall clock since stepped back.
                    let now = cache.clock().wall_ms();
                    let recorded = Duration::from_millis(at.saturating_sub(now));
                    let left = ttl.map_or(recorded, |ttl| recorded.min(ttl));
                    if left.is_zero() {
                        // Expired during the load: left out, as `into_survivors` leaves out
                        // those expired before it (a compaction drops the record).
                        continue;
                    }
                    // Cut short by a time-to-live shorter than that of the cache that wrote it:
                    // the record, whose deadline is later, is to be written again with this
                    // one, or once the entry expires here, a crash before its delete is
                    // recorded would bring it back for another lifetime.
                    let cut_short = (left < recorded).then(|| {
                        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                        (put.key.clone(), now.saturating_add(ms))
                    });
                    // What is left, rounded up to a lifetime the cache keeps: past 131 s
                    // `insert_with_ttl` rounds down (by up to 1/65,536), and an entry that
                    // expired here before its record's deadline came back after a crash that
                    // came before its delete was recorded (a day's entry, 327 ms early). Up,
                    // it may be read as long past that deadline instead, when its record, and
                    // so a restart, has it gone already. `left` stays exact: a deadline the
                    // cache's time-to-live cut short is one it keeps to the millisecond.
                    let life = cache.lifetime_at_least(left);
                    match cache.insert_with_ttl(put.key, put.value, life) {
                        Ok(()) => restated.extend(cut_short),
                        // A cache reopened without expiry keeps the entry for good; its
                        // record, which has the deadline, is to be written again without.
                        Err(refused) => {
                            restated.push((refused.key.clone(), 0));
                            cache.insert(refused.key, refused.value);
                        }
                    }
                }
                // Absent right after its insert: refused as too heavy (an insert never evicts
                // the entry it writes), or expired already; its delete is due either way.
                if let Some(key) = kept_out.filter(|key| !cache.contains_key(key)) {
                    evicted.push(key);
                }
            }
            restated
        };
        let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
        let parallel = two_cores && live >= PARALLEL_LOAD;
        // One pass finds each survivor's shard, for the load's order and for the shares of the
        // capacity. The shares are fitted to what each shard gets (`Cache::share_capacity`):
        // the log's entries filled a cache whose hasher was seeded otherwise, or that had
        // another shard count, so some shards now get more than an even share, and would evict
        // live entries that the whole capacity has room for, their deletes logged for good.
        // Each shard's survivors are gathered apart and loaded one shard after another, so
        // that the load's probes and stores stay within one shard's table, queues and sketch,
        // which fit in cache, where the survivors in write order would go to a random shard
        // each: a miss or two apiece (`docs/BENCHMARKS.md`, "Recovery"). Each sized for its
        // share of the live set and a quarter more, so that none grows unless the shards are
        // far from even.
        let shards = cache.shard_count();
        let room = live / shards + live / (4 * shards);
        let mut by_shard: Vec<Vec<Put<K, V>>> =
            (0..shards).map(|_| Vec::with_capacity(room)).collect();
        let mut weights = vec![0u64; shards];
        for put in alive {
            let shard = cache.shard_index(&put.key);
            weights[shard] += u64::from(cache.weight_of(&put.key, &put.value));
            by_shard[shard].push(put);
        }
        let (mut even, mut odd) = (Vec::new(), Vec::new());
        for (shard, puts) in by_shard.into_iter().enumerate() {
            if !parallel || shard.is_multiple_of(2) {
                even.push(puts);
            } else {
                odd.push(puts);
            }
        }
        // Refused (the weights do not fit), the load keeps to even shares and evicts.
        let fitted = cache.share_capacity(&weights);
        cache.reserve(live);
        let restated = if parallel {
            std::thread::scope(|s| {
                let odd = s.spawn(|| load(&mut odd.into_iter().flatten()));
                let even = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    load(&mut even.into_iter().flatten())
                }));
                // Joined even when this half panicked: left unjoined, the odd half's panic
                // would be dropped by `scope`, which aborts the process when the payload's
                // `Drop` panics. A panic on either thread (a weigher's, a key's hash) is the
                // load's, as it would be on one thread; this half's goes first, the other's
                // payload is dropped inside a catch.
                let odd = odd.join();
                let mut restated = match even {
                    Ok(restated) => restated,
                    Err(panic) => {
                        if let Err(other) = odd {
                            unwind::quiet(Some(other));
                        }
                        std::panic::resume_unwind(panic)
                    }
                };
                restated.extend(odd.unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                restated
            })
        } else {
            load(&mut even.into_iter().flatten())
        };
        // The load's end (also a panic's, above): survivors whose deadline passed while the
        // load went on were left out, and the room their shards were fitted for goes back, or
        // a shard the rest of the load later left kept it, empty, for good.
        drop(fitted);
        restated
    }
}

/// Drops the items of `items` that `dropped` marks, by position, keeping the order of the rest.
fn keep<T>(items: &mut Vec<T>, dropped: &[bool]) {
    let mut at = 0;
    items.retain(|_| {
        at += 1;
        !dropped[at - 1]
    });
}

/// Which steps a sweep drops, by position: every step but the last of its key, and a last
/// step that `is_delete`. `hashes[i]` is the hash of step `i`'s key, and `same_key(a, b)` says
/// whether steps `a` and `b` are of one key (asked only of steps with equal hashes).
///
/// The positions are spread into buckets by the top bits of their hashes (about a thousand to
/// a bucket), in one counting and one scattering pass over `hashes`, so each bucket holds its
/// steps in write order. Each bucket is then walked from its end with an open-addressing table
/// of its own, a few KiB, so that its probes stay in cache: the first step met of a key is the
/// key's last.
fn superseded(
    hashes: &[u64],
    same_key: impl Fn(usize, usize) -> bool,
    is_delete: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let n = hashes.len();
    let bits = (n / BUCKET).max(1).ilog2().min(16);
    let bucket_of = |hash: u64| {
        if bits == 0 {
            0
        } else {
            (hash >> (64 - bits)) as usize
        }
    };
    // `starts[b]..starts[b + 1]` is bucket `b`'s range in `order`.
    let mut starts = vec![0usize; (1 << bits) + 1];
    for &hash in hashes {
        starts[bucket_of(hash) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    // Each step as its hash, and its position shifted left with its delete bit below: the bit
    // is at hand without a look at the step, which, taken in bucket order, would be a cache
    // miss per step. (A position has a bit to spare: a step is at least 8 bytes, as a put holds
    // its deadline, so a vector of them holds fewer than `isize::MAX / 8`.)
    let mut fill = starts.clone();
    let mut order = vec![(0u64, 0usize); n];
    for (at, &hash) in hashes.iter().enumerate() {
        let slot = &mut fill[bucket_of(hash)];
        order[*slot] = (hash, at << 1 | usize::from(is_delete(at)));
        *slot += 1;
    }
    let mut dropped = vec![false; n];
    // Per bucket, an open-addressing table of the keys met so far, walking back from the
    // bucket's last step: each slot holds 1 + the index in the bucket of a key's last step, 0
    // for empty. A bucket's table is a few KiB, so its probes stay in cache.
    let mut table: Vec<usize> = Vec::new();
    for bucket in starts.windows(2) {
        let bucket = &order[bucket[0]..bucket[1]];
        let size = (2 * bucket.len()).next_power_of_two();
        table.clear();
        table.resize(size, 0);
        for (i, &(hash, step)) in bucket.iter().enumerate().rev() {
            let at = step >> 1;
            let mut slot = hash as usize & (size - 1);
            loop {
                match table[slot] {
                    0 => {
                        // The first of its key met: the key's last step, kept if a put.
                        table[slot] = i + 1;
                        dropped[at] = step & 1 == 1;
                        break;
                    }
                    later => {
                        let (later_hash, later_step) = bucket[later - 1];
                        if later_hash == hash && same_key(later_step >> 1, at) {
                            dropped[at] = true;
                            break;
                        }
                        slot = (slot + 1) & (size - 1);
                    }
                }
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::durable::Postcard;

    /// One xorshift step: the tests' seeded randomness.
    fn next(rng: &mut u64) -> u64 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    }

    /// Phases of replay whose live sets are far larger than `SWEEP_AFTER`, so that sweeps
    /// come when the vector has doubled, not at `SWEEP_AFTER`; then a clear and churn of a few
    /// keys; then deletes of keys never put, before and after a large live set: the survivors
    /// are the model's, in write order. The module doc's bounds hold at every step: the vector
    /// never holds more than twice the largest live set since the last clear (or
    /// `SWEEP_AFTER`), each sweep leaves one step per live key, and it sweeps no more than
    /// twice the steps pushed since the sweep (or clear) before it.
    #[test]
    fn survivors_and_the_vectors_length_follow_a_model_when_the_live_set_is_large() {
        let codec = Postcard;
        let mut live: Live<'_, u64, u64> = Live::new(&codec, &codec);
        // Key to (sequence number of its last put, whether that put expired by 1,000 ms).
        let mut model: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
        let mut rng = 0x5DEE_CE66_D1CE_4E5Bu64;
        let mut seq = 0u64;
        // The largest live set (expired puts included: a sweep keeps them) since the clear.
        let mut peak = 0usize;
        // Steps pushed since the last sweep or clear.
        let mut pushed = 0usize;
        // (keys drawn from, how many steps, one in how many a delete, clear first).
        let phases: [(u64, u64, u64, bool); 7] = [
            (u64::MAX, 300, 1_000, false), // fewer steps than one sweep: the end's sweep only
            (30_000, 60_000, 5, false),    // grows past SWEEP_AFTER, many keys deleted
            (30_000, 40_000, 1, false),    // deletes only, of most keys put above
            (1 << 40, 20_000, 1, false),   // deletes of keys never put, beside a live set
            (16, 30_000, 3, true),         // a clear, then churn of a few keys
            (1 << 40, 20_000, 1, true),    // a clear, then deletes of keys never put
            (20_000, 50_000, 4, false),    // a live set again
        ];
        for (keys, count, delete_one_in, clear) in phases {
            if clear {
                live.apply_clear();
                model.clear();
                peak = 0;
                pushed = 0;
            }
            for _ in 0..count {
                let (len, swept) = (live.steps.len(), live.swept);
                let draw = next(&mut rng);
                // Keys never put in phase 4 and 6: above every key the others draw.
                let key = if keys == 1 << 40 {
                    keys + draw % keys
                } else {
                    draw % keys
                };
                if (draw >> 40).is_multiple_of(delete_one_in) {
                    live.push(Step::Delete(key));
                    model.remove(&key);
                } else {
                    let expires = (draw >> 20).is_multiple_of(5);
                    let expires_at_ms = if expires { 1_000 } else { 0 };
                    live.push(Step::Put(Put {
                        key,
                        value: seq,
                        expires_at_ms,
                    }));
                    model.insert(key, (seq, expires));
                }
                seq += 1;
                pushed += 1;
                peak = peak.max(model.len());
                assert_eq!(live.steps.len(), live.hashes.len());
                // Without a sweep, the push added one step and `swept` stayed; a sweep sets
                // `swept` to what it kept, which is not what it was (at most `len`) when it
                // dropped nothing.
                if (live.steps.len(), live.swept) != (len + 1, swept) {
                    assert_eq!(live.steps.len(), model.len(), "a sweep keeps the live set");
                    assert!(
                        len < 2 * pushed,
                        "a sweep of {} steps came {pushed} pushes after the one before",
                        len + 1
                    );
                    pushed = 0;
                }
                assert!(
                    live.steps.len() <= SWEEP_AFTER.max(2 * peak),
                    "{} steps with at most {peak} live since the clear",
                    live.steps.len()
                );
            }
        }
        live.sweep();
        assert_eq!(live.steps.len(), model.len(), "one step per live key");
        assert!(live.steps.iter().all(|step| matches!(step, Step::Put(_))));
        let got: Vec<(u64, u64)> = live
            .into_survivors(1_000)
            .map(|put| (put.key, put.value))
            .collect();
        let mut want: Vec<(u64, u64)> = model
            .into_iter()
            .filter(|(_, (_, expired))| !expired)
            .map(|(key, (seq, _))| (key, seq))
            .collect();
        want.sort_by_key(|&(_, seq)| seq);
        assert!(want.len() > SWEEP_AFTER);
        assert_eq!(got, want, "the live puts, in write order");
    }

    /// `superseded` at the sizes where its bucket count changes and at the smallest ones, and
    /// with hashes alike in their top bits (one bucket) or in their low bits (every probe of a
    /// bucket starting at its table's last slot).
    #[test]
    fn superseded_at_the_edges_of_its_sizes_and_hashes() {
        type Hashing = (&'static str, fn(u64) -> u64);
        let hashings: [Hashing; 3] = [
            ("spread", |key| key.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ("top bits alike", |key| key),
            // Every probe starts at its bucket table's last slot, and goes on at the first.
            ("low bits alike", |key| {
                key.wrapping_mul(0x9E37_79B9_7F4A_7C15) << 24 | 0xFF_FFFF
            }),
        ];
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let sizes = [
            0,
            1,
            2,
            3,
            BUCKET - 1,
            2 * BUCKET - 1,
            2 * BUCKET,
            SWEEP_AFTER,
            9_001,
        ];
        for n in sizes {
            for keys in [1, 2, 50, n as u64 + 1] {
                let steps: Vec<(u64, bool)> = (0..n)
                    .map(|_| {
                        let draw = next(&mut rng);
                        (draw % keys, (draw >> 32).is_multiple_of(3))
                    })
                    .collect();
                for (name, hash) in hashings {
                    let hashes: Vec<u64> = steps.iter().map(|&(key, _)| hash(key)).collect();
                    let got =
                        superseded(&hashes, |a, b| steps[a].0 == steps[b].0, |at| steps[at].1);
                    assert_eq!(got.len(), n);
                    let mut later = std::collections::HashSet::new();
                    for (at, &(key, delete)) in steps.iter().enumerate().rev() {
                        let superseded = !later.insert(key);
                        assert_eq!(
                            got[at],
                            superseded || delete,
                            "{name}, {n} steps of {keys} keys: step {at} of key {key}"
                        );
                    }
                }
            }
        }
    }

    /// `superseded` against its definition, step by step: with hashes that spread over many
    /// buckets, with few distinct hashes (so that runs hold the steps of several keys), and
    /// with one hash for every key.
    #[test]
    fn superseded_keeps_each_keys_last_put_whatever_the_hashes_collide() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        // (key, is a delete), in write order.
        let steps: Vec<(u64, bool)> = (0..20_000)
            .map(|_| {
                let draw = next(&mut rng);
                (draw % 5_000, draw.is_multiple_of(7))
            })
            .collect();
        type Hashing = (&'static str, fn(u64) -> u64);
        let hashings: [Hashing; 3] = [
            ("spread", |key| key.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ("colliding", |key| (key % 3) << 62),
            ("one hash", |_| 42),
        ];
        for (name, hash) in hashings {
            let steps = if name == "one hash" {
                &steps[..600]
            } else {
                &steps[..]
            };
            let hashes: Vec<u64> = steps.iter().map(|&(key, _)| hash(key)).collect();
            let got = superseded(&hashes, |a, b| steps[a].0 == steps[b].0, |at| steps[at].1);
            for (at, &(key, delete)) in steps.iter().enumerate() {
                let later = steps[at + 1..].iter().any(|&(other, _)| other == key);
                assert_eq!(got[at], later || delete, "{name}: step {at} of key {key}");
            }
        }
    }
}
