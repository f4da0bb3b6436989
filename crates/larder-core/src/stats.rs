//! Statistics: per-thread hit and miss counters for the read path, and the public snapshot.
//!
//! A read must not write a cache line that other cores write, and should not pay for an atomic
//! read-modify-write either: on x86 a locked instruction is a full barrier, which stops the CPU
//! from overlapping one lookup's cache misses with the next one's. So hits and misses are
//! counted in stripes, one cache-padded pair of counters per stripe, and a thread that holds a
//! stripe number (`sync::thread_stripe`: unique among live threads, handed over without a lock
//! when a thread exits) is the *only writer* of its stripe. It counts with a plain relaxed load and
//! store, which cannot lose an update because nobody else writes that word. Threads without a
//! stripe of their own (more live threads than stripes, a thread being torn down, every thread
//! under loom) count on one shared stripe with atomic adds.
//!
//! Counters only grow; `reset` raises a baseline to the current sums, which later snapshots
//! subtract, so a reset racing a reader cannot be undone by that reader's next store, nor by
//! another reset that read older sums.
//! Write-side counters (inserts, evictions, ...) live in each shard's locked state, which the
//! writer holds anyway. A snapshot sums both.

use crate::sync::{AtomicU64, CachePadded, Ordering};

#[derive(Debug, Default)]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct ReadCounters {
    /// Stripe `i` is written only by the thread holding stripe number `i`.
    owned: Box<[CachePadded<Stripe>]>,
    /// Written by every thread without an owned stripe, with atomic adds.
    shared: CachePadded<Stripe>,
    /// The sums at the last `reset`.
    baseline: Stripe,
}

/// Adds one to a counter that only the calling thread writes.
#[inline(always)]
fn bump_owned(counter: &AtomicU64) {
    // Relaxed: a statistic, nothing is published through it. The load and the store are not
    // one atomic step, but the calling thread is this counter's only writer (see the module
    // doc), so no other increment can fall between them.
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl ReadCounters {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        // Room for a few threads per core before threads fall back to the shared stripe.
        let n = (cores * 4)
            .next_power_of_two()
            .clamp(8, crate::sync::STRIPE_NUMBERS);
        ReadCounters {
            owned: (0..n)
                .map(|_| CachePadded::new(Stripe::default()))
                .collect(),
            shared: CachePadded::new(Stripe::default()),
            baseline: Stripe::default(),
        }
    }

    #[inline(always)]
    fn count(&self, counter: impl Fn(&Stripe) -> &AtomicU64) {
        match crate::sync::thread_stripe().and_then(|i| self.owned.get(i)) {
            Some(stripe) => bump_owned(counter(stripe)),
            // Relaxed: a statistic; the add is atomic because this stripe has many writers.
            None => {
                counter(&self.shared).fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[inline(always)]
    pub(crate) fn hit(&self) {
        self.count(|s| &s.hits);
    }

    #[inline(always)]
    pub(crate) fn miss(&self) {
        self.count(|s| &s.misses);
    }

    /// The hits and misses since the last reset.
    pub(crate) fn sum(&self) -> (u64, u64) {
        let (hits, misses) = self.totals();
        // Relaxed: as in `totals`. Saturating: a reset racing this snapshot may have raised the
        // baseline past sums read a moment earlier.
        (
            hits.saturating_sub(self.baseline.hits.load(Ordering::Relaxed)),
            misses.saturating_sub(self.baseline.misses.load(Ordering::Relaxed)),
        )
    }

    /// The sums since the cache was built.
    fn totals(&self) -> (u64, u64) {
        self.owned
            .iter()
            .chain(std::iter::once(&self.shared))
            .fold((0, 0), |(h, m), s| {
                // Relaxed: a statistic; a snapshot taken while readers count is approximate.
                (
                    h + s.hits.load(Ordering::Relaxed),
                    m + s.misses.load(Ordering::Relaxed),
                )
            })
    }

    pub(crate) fn reset(&self) {
        let (hits, misses) = self.totals();
        self.raise_baseline(hits, misses);
    }

    fn raise_baseline(&self, hits: u64, misses: u64) {
        // Raised, never stored: the totals only grow, so of two racing resets the one that read
        // the larger totals wins, whichever stores last. A store could put back the older
        // baseline of a reset that began first, undoing one that had already returned.
        // Relaxed: as in `totals`.
        self.baseline.hits.fetch_max(hits, Ordering::Relaxed);
        self.baseline.misses.fetch_max(misses, Ordering::Relaxed);
    }
}

/// A snapshot of a cache's counters, as returned by [`Cache::stats`](crate::Cache::stats).
///
/// Counters run from the cache's creation or the last
/// [`reset_stats`](crate::Cache::reset_stats); `len`, `weighted_size` and `capacity` are the
/// current values. Taken while other threads work, the fields are each accurate but not
/// necessarily from one instant.
///
/// The counterpart of Python's `cache_info()`: `hits`, `misses`, `capacity` (`maxsize`) and
/// `len` (`currsize`). As there, every call of a counting read counts one hit or one miss, so
/// `hits + misses` is the number of such calls: [`get`](crate::Cache::get) and the loading
/// calls, [`get_with`](crate::Cache::get_with), [`try_get_with`](crate::Cache::try_get_with),
/// [`try_get_with_unshared`](crate::Cache::try_get_with_unshared) and
/// [`optionally_get_with`](crate::Cache::optionally_get_with) (a call whose key's `Hash` or
/// `Eq`, or whose value's `Clone`, panics before it has found or loaded a value counts
/// nothing). `peek`, `contains_key`, `iter`, `ttl`, `age` and `time_to_live_left` count
/// nothing, nor does a write.
///
/// Each entry that leaves the cache is counted once, under the cause its eviction listener
/// hears: `evictions` (`Size`), `removals` (`Explicit`) or `expirations` (`Expired`); a value
/// an insert replaces (`Replaced`) is counted by that insert, as an update, or as a rejection
/// when the insert was refused. So, with no write under way and no reset since the cache was
/// built, `len` is `inserts - evictions - removals - expirations`, less the rejections that
/// took a value with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Calls that returned a value: a `get` that found the key live, and a loading call that
    /// found it live or waited for another caller's load of it and got that load's value (as
    /// Caffeine counts such a waiter; Python's `lru_cache` lets both compute, and counts two
    /// misses).
    pub hits: u64,
    /// Calls that found no live value: a `get` (of an entry expired and not yet removed too),
    /// and a loading call that ran its own `init` (whatever came of it: a value, an error,
    /// `None` or a panic), that was handed the error (`try_get_with`) or the `None`
    /// (`optionally_get_with`) of another caller's failed load, or that was made for its own
    /// key from inside that key's `init`, which panics rather than wait for itself.
    pub misses: u64,
    /// Entries added for keys with no live value: by `insert`, `insert_with_ttl` or a load
    /// that stored its value. A write over an entry expired and not yet removed is one (and
    /// counts that entry's expiration), and so is an insert over another caller's load in
    /// flight, which the insert detaches (its value then goes to its callers, unstored and
    /// uncounted).
    pub inserts: u64,
    /// Inserts that replaced the live value of a present key.
    pub updates: u64,
    /// Entries the eviction policy removed to keep the cache within its capacity. A victim
    /// that had expired counts as an expiration instead. (Caffeine's `evictionCount` counts
    /// both: it is `evictions + expirations`.)
    pub evictions: u64,
    /// Entries removed by `remove`, `invalidate` or `clear`. One they find expired counts as
    /// an expiration instead, and a load in flight they detach counts nothing.
    pub removals: u64,
    /// Entries removed because their time-to-live or time-to-idle passed: by the janitor,
    /// `run_pending_tasks` or a write that needs room, or by a write, a load, `remove`,
    /// `invalidate` or `clear` that finds the entry expired. A read that finds one expired
    /// counts a miss and leaves it to them.
    pub expirations: u64,
    /// Entries refused because their weight exceeds their shard's capacity: by an insert,
    /// which also removes the key's older value (heard as `Replaced`, counted nowhere else),
    /// or by a load, whose value goes to its callers but is not stored. An
    /// `insert_with_ttl` refused for want of expiry is an error, and not counted.
    pub rejections: u64,
    /// Entries in the cache, including expired ones not yet removed.
    pub len: u64,
    /// Summed weight of the entries (equal to `len` without a weigher).
    pub weighted_size: u64,
    /// The maximum weighted size.
    pub capacity: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0.0 before the first read (where Caffeine's `hitRate`
    /// says 1.0). Worked out in floating point, so it holds for any counts the public fields
    /// are given.
    pub fn hit_ratio(&self) -> f64 {
        // Not `hits + misses` in u64: past `u64::MAX` that panicked in a debug build and
        // wrapped in a release one (to 0.0 for `u64::MAX` hits and one miss, not 1.0).
        let (hits, misses) = (self.hits as f64, self.misses as f64);
        if hits + misses == 0.0 {
            0.0
        } else {
            hits / (hits + misses)
        }
    }
}

// Safe code only, so not run under miri (why: `.ci/run`, the miri step).
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    /// Two resets race: the first reads the sums, the second reads later sums and returns,
    /// and only then does the first store its baseline. A store put back the older baseline,
    /// so counts the returned reset had zeroed came back.
    #[test]
    fn a_reset_that_read_older_sums_does_not_undo_a_later_one() {
        let counters = ReadCounters::new();
        counters.hit();
        let (older_hits, older_misses) = counters.totals();
        counters.hit();
        counters.miss();
        counters.reset();
        assert_eq!(counters.sum(), (0, 0));
        counters.raise_baseline(older_hits, older_misses);
        assert_eq!(counters.sum(), (0, 0), "the later reset was undone");
    }

    /// Counts whose sum passes `u64::MAX` (the fields are public): the ratio is still theirs,
    /// where the sum taken in `u64` overflowed.
    #[test]
    fn the_hit_ratio_holds_for_counts_whose_sum_passes_u64_max() {
        let mut stats = CacheStats::default();
        assert_eq!(stats.hit_ratio(), 0.0);
        stats.hits = u64::MAX;
        stats.misses = 1;
        assert_eq!(stats.hit_ratio(), 1.0);
        stats.misses = u64::MAX;
        assert_eq!(stats.hit_ratio(), 0.5);
        stats.hits = 0;
        assert_eq!(stats.hit_ratio(), 0.0);
    }
}
