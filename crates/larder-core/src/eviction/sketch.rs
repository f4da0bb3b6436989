//! The frequency sketch S3-FIFO's admission consults: how often a key was seen recently,
//! including keys that are no longer (or never were) resident.
//!
//! A count-min sketch (Cormode and Muthukrishnan, 2005) of 4-bit counters, as TinyLFU uses it
//! (Einziger, Friedman and Manes, *TinyLFU: A Highly Efficient Cache Admission Policy*, ACM
//! TOS 2017):
//!
//! * a key maps to [`ROWS`] counters by double hashing of its 24-bit fingerprint; its estimate
//!   is the smallest of them, which over-counts only when all of them collide with hotter keys;
//! * [`record`](Sketch::record) raises only the counters that equal the estimate (the
//!   "conservative update"), which keeps collisions from inflating cold keys;
//! * after `10 ×` the sized-for entry count of additions, every counter is halved ("aging"), so
//!   the sketch tracks recent popularity rather than all-time popularity.
//!
//! Sixteen counters share a `u64`. The sketch has eight counters per entry it is sized for, so
//! it costs about 4 bytes per entry. Four per entry saved 2 bytes but cost 0.27 points of the
//! 27-point replay average and was noisy enough that a burst of one-time keys sometimes
//! out-scored an entry read once (see below). It is sized lazily from the shard's resident
//! count, so a cache that never fills never pays for it.
//!
//! Growing keeps every estimate. A key's counter indexes are taken modulo the (power-of-two)
//! counter count, so in a sketch `2^j` times larger, index `i` of the smaller sketch becomes one
//! of `i`, `i + n`, `i + 2n`, … (`n` the old count). Filling the larger sketch with copies of
//! the smaller one gives each of those the old counter's value, and every key its old
//! estimate (and its noise: the collisions of the small sketch are copied too). One that
//! started over instead forgot the entries that filled the shard first, and a one-time key
//! whose counters collided could then out-score a resident entry that had been read. Over 3000
//! ahash seeds of the scenario in `tests/api.rs` (`hot_key_seed_sweep`, run with ahash's
//! seeded hasher and each variant patched in; capacities 50, 100, 200, 1000),
//! starting over lost the hot key 7, 5, 5 and 64 times, keeping the counts 0, 0, 0 and 48.
//! With four counters per entry either way lost it in about one seed in six at capacity 100.
//!
//! Only the shard's writer touches the sketch, under the shard lock: reads never record into
//! it. Hits reach it later, when the eviction policy retires an entry's access counter (see
//! `s3fifo`).

/// Counters per key.
const ROWS: usize = 4;
/// Counters per sized-for entry.
const COUNTERS_PER_ENTRY: usize = 8;
/// Additions per sized-for entry before every counter is halved.
const SAMPLE_PER_ENTRY: u64 = 10;
/// The smallest entry count a sketch is sized for.
const MIN_ENTRIES: usize = 16;
/// A counter's maximum.
const MAX_COUNT: u64 = 15;

pub(crate) struct Sketch {
    /// `words.len() * 16` four-bit counters.
    words: Box<[u64]>,
    /// The number of counters, minus one (a power of two, minus one).
    mask: u64,
    /// Entries the sketch is sized for.
    entries: usize,
    /// Additions since the last halving (halved with the counters).
    additions: u64,
}

impl Sketch {
    /// An empty sketch sized for a few entries; it grows with [`ensure`](Self::ensure).
    pub(crate) fn new() -> Self {
        Self::sized_for(MIN_ENTRIES)
    }

    fn sized_for(entries: usize) -> Self {
        let entries = entries.max(MIN_ENTRIES).next_power_of_two();
        let counters = entries * COUNTERS_PER_ENTRY;
        Sketch {
            words: vec![0; counters / 16].into_boxed_slice(),
            mask: counters as u64 - 1,
            entries,
            additions: 0,
        }
    }

    /// Makes room for `entries` resident entries: a sketch too small for them grows to twice
    /// the size or more, keeping every key's estimate (see the module docs).
    #[inline]
    pub(crate) fn ensure(&mut self, entries: usize) {
        if entries > self.entries {
            self.grow(entries);
        }
    }

    /// [`ensure`](Self::ensure)'s growth: rare (a doubling at most), so kept out of every
    /// admission's path.
    #[cold]
    fn grow(&mut self, entries: usize) {
        let mut grown = Self::sized_for(entries);
        for (i, w) in grown.words.iter_mut().enumerate() {
            *w = self.words[i % self.words.len()];
        }
        grown.additions = self.additions;
        *self = grown;
    }

    /// The counter indexes of `fingerprint`: `h1 + i·h2` over a 64-bit mix of it
    /// (Kirsch and Mitzenmacher's double hashing), `h2` odd so the rows differ.
    #[inline(always)]
    fn indexes(&self, fingerprint: u32) -> [usize; ROWS] {
        // A multiply-xorshift mix spreads the 24 fingerprint bits over all 64.
        let mut h = u64::from(fingerprint).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        let (h1, h2) = (h & 0xFFFF_FFFF, (h >> 32) | 1);
        std::array::from_fn(|i| (h1.wrapping_add((i as u64).wrapping_mul(h2)) & self.mask) as usize)
    }

    /// The counters at `indexes`, and the smallest of them (the estimate).
    #[inline(always)]
    fn counts(&self, indexes: [usize; ROWS]) -> ([u64; ROWS], u64) {
        let words = &self.words[..];
        // `words.len()` is a power of two; masking lets the compiler drop the bounds checks
        // (the indexes are below the counter count already, so the mask changes nothing).
        let last = words.len() - 1;
        // A plain loop, not `array::map`: that one compiled to a call of its own, with the
        // counts passed back through memory, on every estimate (`insert_cost count`).
        let mut counts = [0; ROWS];
        let mut least = MAX_COUNT;
        for (count, i) in counts.iter_mut().zip(indexes) {
            *count = (words[(i / 16) & last] >> ((i % 16) * 4)) & MAX_COUNT;
            least = least.min(*count);
        }
        (counts, least)
    }

    /// How often `fingerprint` was recorded recently (0..=15).
    pub(crate) fn estimate(&self, fingerprint: u32) -> u32 {
        self.counts(self.indexes(fingerprint)).1 as u32
    }

    /// Records one occurrence of `fingerprint`, halving every counter once enough additions
    /// have accumulated.
    pub(crate) fn record(&mut self, fingerprint: u32) {
        self.record_n(fingerprint, 1);
    }

    /// Records `n` occurrences of `fingerprint` at once: the same counters as `n` calls of
    /// [`record`](Self::record), which raise each counter to at least the estimate plus `n`
    /// (the conservative update, repeated), for one computation of the indexes. The halving,
    /// if due, comes after all `n`.
    pub(crate) fn record_n(&mut self, fingerprint: u32, n: u32) {
        if n == 0 {
            return;
        }
        let indexes = self.indexes(fingerprint);
        let (counts, least) = self.counts(indexes);
        let target = (least + u64::from(n)).min(MAX_COUNT);
        let words = &mut self.words[..];
        let last = words.len() - 1;
        for (i, count) in indexes.into_iter().zip(counts) {
            // Raises the counter to `target` (the conservative update); adds 0 to one already
            // there or above.
            words[(i / 16) & last] += target.saturating_sub(count) << ((i % 16) * 4);
        }
        self.additions += u64::from(n);
        if self.additions >= SAMPLE_PER_ENTRY * self.entries as u64 {
            self.halve();
        }
    }

    /// Ages the sketch: every counter is halved (rounding down), and so is the addition count.
    fn halve(&mut self) {
        for w in self.words.iter_mut() {
            // Shifting the whole word moves each counter's low bit into its neighbour's high
            // bit; the mask clears those bits.
            *w = (*w >> 1) & 0x7777_7777_7777_7777;
        }
        self.additions /= 2;
    }

    /// Heap bytes of the counters.
    #[cfg(all(test, not(miri)))]
    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

// Safe code only, so not run under miri (why: `.ci/run`, the miri step).
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_age() {
        let mut s = Sketch::sized_for(1024);
        for _ in 0..20 {
            s.record(7);
        }
        assert_eq!(s.estimate(7), 15, "a counter saturates at 15");
        assert_eq!(s.estimate(8), 0);
        // 10 × 1024 additions trigger one halving.
        let before = s.additions;
        for k in 0..(10 * 1024 - before) {
            s.record(1_000 + (k % 4096) as u32);
        }
        assert!(s.estimate(7) <= 7, "halved: {}", s.estimate(7));
        assert!(s.estimate(7) >= 6, "halved, not cleared: {}", s.estimate(7));
    }

    #[test]
    fn recording_n_at_once_equals_n_single_records() {
        let (mut once, mut each) = (Sketch::sized_for(64), Sketch::sized_for(64));
        for k in 0..200u32 {
            // Collisions among 200 keys in 512 counters make uneven counters for `n` to meet.
            let n = k % 5;
            once.record_n(k, n);
            for _ in 0..n {
                each.record(k);
            }
        }
        assert_eq!(once.words, each.words);
        assert_eq!(once.additions, each.additions);
    }

    #[test]
    fn estimates_rank_keys_by_frequency() {
        let mut s = Sketch::sized_for(256);
        for k in 0..200u32 {
            for _ in 0..(k % 5) {
                s.record(k);
            }
        }
        // Collisions may only over-count; with 2048 counters for 200 keys few do.
        let exact = (0..200u32).filter(|&k| s.estimate(k) == k % 5).count();
        assert!(exact >= 180, "{exact} of 200 exact");
        assert!((0..200u32).all(|k| s.estimate(k) >= k % 5));
    }

    #[test]
    fn grows_only_when_needed_keeps_estimates_and_costs_four_bytes_per_entry() {
        let mut s = Sketch::new();
        s.record(1);
        s.ensure(10);
        assert_eq!(s.estimate(1), 1, "no growth below the sized-for count");
        for k in 0..64 {
            for _ in 0..(k % 4) {
                s.record(k);
            }
        }
        let before: Vec<u32> = (0..1000).map(|k| s.estimate(k)).collect();
        s.ensure(1000);
        let after: Vec<u32> = (0..1000).map(|k| s.estimate(k)).collect();
        assert_eq!(before, after, "growth keeps every estimate");
        assert_eq!(s.estimate(1), 2);
        assert_eq!(s.entries, 1024);
        assert_eq!(s.bytes(), 1024 * 4);
    }

    /// Growing keeps the count of additions toward the next halving: the sketch ages after
    /// ten additions per entry it is sized for, counted from the last halving, not from the
    /// last growth (which would let a growing shard's counts pile up unaged).
    #[test]
    fn growth_keeps_the_count_toward_the_next_halving() {
        let mut s = Sketch::new();
        for _ in 0..10 {
            s.record(7);
        }
        s.ensure(32);
        assert_eq!(s.entries, 32);
        assert_eq!(s.estimate(7), 10);
        // 320 additions in all halve the counters of a sketch sized for 32 entries.
        for k in 0..310 {
            s.record(1_000 + k);
        }
        assert_eq!(s.estimate(7), 5, "halved once, at the 320th addition");
    }
}
