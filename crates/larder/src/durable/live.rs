//! Recovery (step 5 of the module doc in `mod.rs`): the live set a log describes, worked out
//! while the log replays, then loaded into the cache.
//!
//! The live set is worked out before anything reaches the cache: the last record per key wins,
//! deletes and clears remove. Loading only the survivors means the cache's policy never sees an
//! entry the log says is gone, so it cannot evict a live entry to make room for one that is
//! deleted a few records later.
//!
//! **Puts in write order, and a table of positions.** Replay pushes each decoded put onto a
//! vector, and a hash table maps each key to the position of its live put. A later put of the
//! same key empties the earlier one's place, a delete empties its key's place, and a clear
//! empties everything. So the survivors come out of the vector in write order, the order the
//! cache must see them in, with no sort; and the table's entries are a hash and a position, 16
//! bytes that a growing table moves without touching the keys. The map this replaced, from each
//! decoded key to its put, moved 48-byte entries (a `u64` key and a `Vec<u8>` value) at every
//! doubling, and its growth was a quarter of the time an open of 1M entries took
//! (`docs/BENCHMARKS.md`, "Recovery"). Emptied places are swept out once they outnumber the
//! filled ones, so a log of many overwrites of a few keys holds the vector to about twice the
//! live set.

use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use hashbrown::hash_table::{Entry, HashTable};
use larder_core::{unwind, Cache};
use larder_log::format::{Op, Record};

use super::codec::Codec;
use super::deadline_after;
use super::error::Error;
use super::evicted::EvictedKeys;

/// Emptied places the vector may hold before a sweep is considered at all, so that small logs
/// never sweep.
const SWEEP_AFTER: usize = 1 << 12;

/// Below this many live entries, one thread loads them.
const PARALLEL_LOAD: usize = 1 << 16;

/// The live set of a log being replayed (module doc).
pub(super) struct Live<'c, K, V> {
    /// Every put in write order; `None` where a later record superseded it.
    puts: Vec<Option<Put<K, V>>>,
    /// The position in `puts` of each key's live put: exactly the `Some` places.
    index: HashTable<Slot>,
    hasher: ahash::RandomState,
    /// The `None` places in `puts`.
    emptied: usize,
    key_codec: &'c dyn Codec<K>,
    value_codec: &'c dyn Codec<V>,
}

/// A key's put, decoded (no copy of its bytes between the log and the cache).
struct Put<K, V> {
    key: K,
    value: V,
    /// Wall-clock ms; 0 for never.
    expires_at_ms: u64,
}

/// An entry of [`Live::index`]: the key's hash, kept so the table grows without rehashing
/// keys, and its put's position.
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    at: usize,
}

impl<'c, K: Hash + Eq, V> Live<'c, K, V> {
    pub(super) fn new(key_codec: &'c dyn Codec<K>, value_codec: &'c dyn Codec<V>) -> Self {
        Live {
            puts: Vec::new(),
            index: HashTable::new(),
            hasher: ahash::RandomState::new(),
            emptied: 0,
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
                self.put(Put {
                    key,
                    value,
                    expires_at_ms,
                });
            }
            Op::Delete { key } => {
                let key = self.key_codec.decode(key).map_err(undecodable("key"))?;
                self.delete(&key);
            }
            Op::Clear => self.apply_clear(),
        }
        Ok(())
    }

    /// Empties every place.
    fn apply_clear(&mut self) {
        self.puts.clear();
        self.index.clear();
        self.emptied = 0;
    }

    /// Makes `put` its key's live put, emptying the place of the one it supersedes.
    fn put(&mut self, put: Put<K, V>) {
        let hash = self.hasher.hash_one(&put.key);
        let at = self.puts.len();
        let puts = &self.puts;
        let same_key = |slot: &Slot| slot.hash == hash && holds(puts, slot.at, &put.key);
        match self.index.entry(hash, same_key, |slot| slot.hash) {
            Entry::Occupied(mut slot) => {
                let superseded = std::mem::replace(&mut slot.get_mut().at, at);
                self.puts[superseded] = None;
                self.emptied += 1;
            }
            Entry::Vacant(slot) => {
                slot.insert(Slot { hash, at });
            }
        }
        self.puts.push(Some(put));
        self.sweep_if_sparse();
    }

    /// Empties the place of `key`'s live put, if it has one.
    fn delete(&mut self, key: &K) {
        let hash = self.hasher.hash_one(key);
        let puts = &self.puts;
        let same_key = |slot: &Slot| slot.hash == hash && holds(puts, slot.at, key);
        if let Ok(slot) = self.index.find_entry(hash, same_key) {
            let (Slot { at, .. }, _) = slot.remove();
            self.puts[at] = None;
            self.emptied += 1;
            self.sweep_if_sparse();
        }
    }

    /// Drops the emptied places once they outnumber the filled ones, and points the table at
    /// the puts' new positions. Each sweep follows at least as many new emptied places as it
    /// keeps puts, so sweeping costs a bounded amount per record.
    fn sweep_if_sparse(&mut self) {
        if self.emptied < SWEEP_AFTER || self.emptied <= self.puts.len() / 2 {
            return;
        }
        self.puts.retain(Option::is_some);
        self.emptied = 0;
        self.index.clear();
        for (at, put) in self.puts.iter().enumerate() {
            if let Some(put) = put {
                let hash = self.hasher.hash_one(&put.key);
                self.index
                    .insert_unique(hash, Slot { hash, at }, |slot| slot.hash);
            }
        }
    }

    /// The live puts in the order they were written, without those whose deadline has passed
    /// by `now_ms`.
    fn into_survivors(self, now_ms: u64) -> impl Iterator<Item = Put<K, V>> {
        self.puts
            .into_iter()
            .flatten()
            .filter(move |put| put.expires_at_ms == 0 || put.expires_at_ms > now_ms)
    }

    /// Inserts the survivors in the order they were written, dropping those whose deadline
    /// has passed by `now_ms` or passes before the load reaches them. An entry with a deadline
    /// lives what is left of it by the wall clock at its insert, capped at the cache's
    /// time-to-live. Returns the keys whose records are to be
    /// written again with another deadline: 0 for entries the cache keeps for good, having no
    /// expiry, and the capped deadline for those the cache's time-to-live cut short (entries
    /// recorded without a deadline included).
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
    /// A large live set loads on two threads, one taking the keys of the even shards and one
    /// those of the odd, each in write order. Shards share neither locks nor capacity, so
    /// every shard sees exactly the inserts, in exactly the order, that one thread would give
    /// it: the same entries survive, in the same queue order.
    pub(super) fn load_into<S>(
        self,
        cache: &Cache<K, V, S>,
        evicted: &EvictedKeys<K>,
        now_ms: u64,
    ) -> Vec<(K, u64)>
    where
        K: Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Send + Sync,
    {
        let live = self.index.len();
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
                    match cache.insert_with_ttl(put.key, put.value, left) {
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
        // One pass finds each survivor's shard, for the two halves and for the shares of the
        // capacity. The shares are fitted to what each shard gets (`Cache::share_capacity`):
        // the log's entries filled a cache whose hasher was seeded otherwise, or that had
        // another shard count, so some shards now get more than an even share, and would evict
        // live entries that the whole capacity has room for, their deletes logged for good.
        // Each half sized for its share of the live set and some more, so that neither grows
        // unless the shards are far from even (one grows once, then).
        let room = if parallel { live / 2 + live / 8 } else { live };
        let mut even = Vec::with_capacity(room);
        let mut odd = Vec::with_capacity(if parallel { room } else { 0 });
        let mut weights = vec![0u64; cache.shard_count()];
        for put in alive {
            let shard = cache.shard_index(&put.key);
            weights[shard] += u64::from(cache.weight_of(&put.key, &put.value));
            if !parallel || shard.is_multiple_of(2) {
                even.push(put);
            } else {
                odd.push(put);
            }
        }
        // Refused (the weights do not fit), the load keeps to even shares and evicts.
        let fitted = cache.share_capacity(&weights);
        cache.reserve(live);
        let restated = if parallel {
            std::thread::scope(|s| {
                let odd = s.spawn(|| load(&mut odd.into_iter()));
                let even = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    load(&mut even.into_iter())
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
            load(&mut even.into_iter())
        };
        // The load's end (also a panic's, above): survivors whose deadline passed while the
        // load went on were left out, and the room their shards were fitted for goes back, or
        // a shard the rest of the load later left kept it, empty, for good.
        drop(fitted);
        restated
    }
}

/// Whether the put at `at` in `puts` is there and of `key`.
fn holds<K: Eq, V>(puts: &[Option<Put<K, V>>], at: usize, key: &K) -> bool {
    puts.get(at)
        .and_then(Option::as_ref)
        .is_some_and(|put| put.key == *key)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::durable::Postcard;

    /// Puts, deletes and clears of a few keys, many times over, so that sweeps run: the
    /// survivors are the model's, in the model's write order, and the vector stays near the
    /// live set's size.
    #[test]
    fn survivors_match_a_model_through_sweeps() {
        let codec = Postcard;
        let mut live: Live<'_, u64, u64> = Live::new(&codec, &codec);
        // Key to (sequence number of its last put, value).
        let mut model: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut longest = 0;
        for seq in 0..40_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = rng % 64;
            // One clear, halfway: sweeps run before it and after it.
            match if seq == 20_000 { 0 } else { 1 + rng % 1000 } {
                0 => {
                    live.apply_clear();
                    model.clear();
                }
                1..=200 => {
                    live.delete(&key);
                    model.remove(&key);
                }
                _ => {
                    let expires_at_ms = if key.is_multiple_of(8) { 1_000 } else { 0 };
                    live.put(Put {
                        key,
                        value: seq,
                        expires_at_ms,
                    });
                    model.insert(key, (seq, seq));
                }
            }
            let filled = live.puts.iter().filter(|p| p.is_some()).count();
            assert_eq!(
                live.index.len(),
                filled,
                "the table indexes the filled places"
            );
            assert_eq!(live.puts.len() - filled, live.emptied);
            longest = longest.max(live.puts.len());
        }
        assert!(
            longest <= 2 * SWEEP_AFTER + 64,
            "emptied places are swept: the vector reached {longest}"
        );
        // Keys divisible by 8 expired at 1,000 ms.
        let got: Vec<(u64, u64)> = live
            .into_survivors(1_000)
            .map(|put| (put.key, put.value))
            .collect();
        let mut want: Vec<(u64, (u64, u64))> = model
            .into_iter()
            .filter(|(key, _)| !key.is_multiple_of(8))
            .collect();
        want.sort_by_key(|(_, (seq, _))| *seq);
        let want: Vec<(u64, u64)> = want.into_iter().map(|(k, (_, v))| (k, v)).collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "the live puts, in write order");
    }
}
