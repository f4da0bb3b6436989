//! Statistics: striped hit and miss counters for the read path, and the public snapshot.
//!
//! A read must not write a cache line that other cores write, so hits and misses are counted in
//! stripes, one cache-padded pair of counters per stripe, and each thread keeps to its own
//! stripe (`sync::stripe_hint`). There are at least twice as many stripes as cores, so two
//! running threads rarely share one. Write-side counters (inserts, evictions, ...) live in each
//! shard's locked state, which the writer holds anyway. A snapshot sums both.

use crate::sync::{AtomicU64, CachePadded, Ordering};

#[derive(Debug, Default)]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct ReadCounters {
    stripes: Box<[CachePadded<Stripe>]>,
    mask: usize,
}

impl ReadCounters {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cores * 2).next_power_of_two().clamp(4, 256);
        ReadCounters {
            stripes: (0..n)
                .map(|_| CachePadded::new(Stripe::default()))
                .collect(),
            mask: n - 1,
        }
    }

    #[inline(always)]
    fn stripe(&self) -> &Stripe {
        &self.stripes[crate::sync::stripe_hint() & self.mask]
    }

    #[inline(always)]
    pub(crate) fn hit(&self) {
        // Relaxed: a counter; nothing is published through it.
        self.stripe().hits.fetch_add(1, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn miss(&self) {
        // Relaxed: as in `hit`.
        self.stripe().misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> (u64, u64) {
        self.stripes.iter().fold((0, 0), |(h, m), s| {
            // Relaxed: a statistic; a snapshot taken while readers count is approximate.
            (
                h + s.hits.load(Ordering::Relaxed),
                m + s.misses.load(Ordering::Relaxed),
            )
        })
    }

    pub(crate) fn reset(&self) {
        for s in self.stripes.iter() {
            // Relaxed: as in `sum`.
            s.hits.store(0, Ordering::Relaxed);
            s.misses.store(0, Ordering::Relaxed);
        }
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
/// `len` (`currsize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads (`get`, and `get_with` / `try_get_with` that found a value or waited for another
    /// caller's load) that returned a value.
    pub hits: u64,
    /// Reads that found nothing (for `get_with`: calls that ran their own `init`).
    pub misses: u64,
    /// Entries added for keys that were absent.
    pub inserts: u64,
    /// Inserts that replaced the value of a present key.
    pub updates: u64,
    /// Entries removed by the eviction policy to stay within capacity.
    pub evictions: u64,
    /// Entries removed by `remove`, `invalidate` or `clear`.
    pub removals: u64,
    /// Inserts refused because the entry's weight exceeds its shard's capacity.
    pub rejections: u64,
    /// Entries in the cache.
    pub len: u64,
    /// Summed weight of the entries (equal to `len` without a weigher).
    pub weighted_size: u64,
    /// The maximum weighted size.
    pub capacity: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0.0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}
