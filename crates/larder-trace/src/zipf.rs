//! Seeded Zipf key streams.
//!
//! Zipf(s) over `n` keys gives the key of popularity rank `r` (1-based) the
//! probability
//!
//! ```text
//! P(r) = r^-s / H(n, s),    H(n, s) = Σ_{i=1..n} i^-s
//! ```
//!
//! so rank 1 is requested `2^s` times as often as rank 2. Web and key-value
//! workloads are commonly modelled with `s` between 0.6 and 1.2.
//!
//! # Method: inversion over a precomputed table, with a guide table
//!
//! [`Zipf::new`] computes the cumulative distribution once,
//! `cdf[k] = P(rank ≤ k + 1)`, summing the terms in rank order in `f64` and
//! dividing by the total; the last entry is set to exactly 1. A sample draws a
//! uniform `u` in `[0, 1)` and returns the first `k` with `cdf[k] > u`
//! (inverse transform sampling), exact up to `f64` rounding.
//!
//! A plain binary search over a million entries takes 20 probes, most of them
//! cache misses. A guide table (Chen & Asau, "On generating random variates
//! from an empirical distribution", AIIE Transactions, 1974) narrows it first:
//! the unit interval is cut into `n` equal buckets, and `guide[j]` is the first
//! `k` with `cdf[k] > j / n`. A draw `u` in bucket `j = ⌊u·n⌋` has its answer
//! between `guide[j]` and `guide[j + 1]`, a range that holds about one entry
//! on average, so a sample costs O(1) expected time and two or three cache
//! misses. Should rounding put `u` just outside its bucket's range, the sample
//! notices and falls back to a search of the whole table, so the answer is
//! always the same as the plain search's.
//!
//! The tables cost 12 bytes per key and O(n) set-up: 12 MB and a few
//! milliseconds for a million keys. A rejection-inversion sampler (Hörmann &
//! Derflinger 1996) would need no table, but the table is simpler to check,
//! and its cost is paid once per benchmark.
//!
//! Keys are ranks minus one: key `0` is the most popular, key `n - 1` the
//! least. Caches hash their keys, so the order carries no hidden advantage.
//!
//! # Determinism
//!
//! [`zipf_keys`] draws from `rand`'s `StdRng` seeded with `seed`, so a given
//! `(n, s, seed, len)` yields the same stream on every platform for a given
//! `rand` 0.8 release. [`Zipf`] also implements `rand`'s [`Distribution`], for
//! callers who bring their own generator.

use std::fmt;

use rand::distributions::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest key count [`Zipf::new`] accepts, 2^32 (tables of 48 GiB).
pub const MAX_KEYS: u64 = 1 << 32;

/// Why [`Zipf::new`] refused its arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ZipfError {
    /// `n` was 0 or above [`MAX_KEYS`].
    KeyCount {
        /// The refused key count.
        n: u64,
    },
    /// The exponent was negative, infinite or NaN.
    Exponent {
        /// The refused exponent.
        s: f64,
    },
}

impl fmt::Display for ZipfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZipfError::KeyCount { n } => {
                write!(f, "Zipf needs between 1 and {MAX_KEYS} keys, got {n}")
            }
            ZipfError::Exponent { s } => {
                write!(f, "Zipf needs a finite exponent s >= 0, got {s}")
            }
        }
    }
}

impl std::error::Error for ZipfError {}

/// The Zipf(s) distribution over the keys `0..n`, ready to sample.
///
/// ```
/// use larder_trace::zipf::Zipf;
/// use rand::{distributions::Distribution, rngs::StdRng, SeedableRng};
///
/// let zipf = Zipf::new(1_000, 1.0).unwrap();
/// let mut rng = StdRng::seed_from_u64(7);
/// let key = zipf.sample(&mut rng);
/// assert!(key < 1_000);
/// ```
#[derive(Clone)]
pub struct Zipf {
    /// `cdf[k]` is the probability of drawing a key `<= k`; the last entry is 1.
    cdf: Vec<f64>,
    /// `guide[j]`, for `j < n`, is the first `k` with `cdf[k] > j / n`;
    /// `guide[n]` is `n - 1`. Indices fit in `u32` because `n <= 2^32`.
    guide: Vec<u32>,
    s: f64,
}

impl fmt::Debug for Zipf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zipf")
            .field("n", &self.cdf.len())
            .field("s", &self.s)
            .finish()
    }
}

impl Zipf {
    /// Builds the distribution over `n` keys with exponent `s` (`s = 0` is
    /// uniform).
    ///
    /// # Errors
    ///
    /// [`ZipfError`] if `n` is 0 or above [`MAX_KEYS`], or `s` is negative or not
    /// finite.
    pub fn new(n: u64, s: f64) -> Result<Zipf, ZipfError> {
        if !s.is_finite() || s < 0.0 {
            return Err(ZipfError::Exponent { s });
        }
        let len = usize::try_from(n)
            .ok()
            .filter(|&len| len > 0 && n <= MAX_KEYS)
            .ok_or(ZipfError::KeyCount { n })?;
        let mut cdf = Vec::with_capacity(len);
        let mut total = 0.0_f64;
        for rank in 1..=len {
            total += (rank as f64).powf(-s);
            cdf.push(total);
        }
        for cumulative in &mut cdf {
            *cumulative /= total;
        }
        // Rounding may leave the last entry a hair below 1; a draw of u in
        // [0, 1) must always find an entry above it.
        cdf[len - 1] = 1.0;

        let buckets = len as f64;
        let mut guide = Vec::with_capacity(len + 1);
        let mut k = 0;
        for j in 0..len {
            let bucket_start = j as f64 / buckets;
            // Stops before the end: cdf[len - 1] = 1 > bucket_start.
            while cdf[k] <= bucket_start {
                k += 1;
            }
            guide.push(k as u32);
        }
        guide.push((len - 1) as u32);
        Ok(Zipf { cdf, guide, s })
    }

    /// The first `k` with `cdf[k] > u`, for `u` in `[0, 1)`.
    fn index_of(&self, u: f64) -> usize {
        let n = self.cdf.len();
        let bucket = ((u * n as f64) as usize).min(n - 1);
        let (low, high) = (self.guide[bucket] as usize, self.guide[bucket + 1] as usize);
        // The answer lies in low..=high if cdf[low - 1] <= u < cdf[high], which
        // holds unless rounding put u on the wrong side of a bucket boundary.
        let in_range = (low == 0 || self.cdf[low - 1] <= u) && u < self.cdf[high];
        if in_range {
            low + self.cdf[low..high].partition_point(|&cumulative| cumulative <= u)
        } else {
            self.cdf.partition_point(|&cumulative| cumulative <= u)
        }
    }

    /// The number of keys, `n`.
    pub fn key_count(&self) -> u64 {
        self.cdf.len() as u64
    }

    /// The exponent, `s`.
    pub fn exponent(&self) -> f64 {
        self.s
    }

    /// The probability of drawing `key` (0 if `key >= n`).
    pub fn probability(&self, key: u64) -> f64 {
        let Ok(index) = usize::try_from(key) else {
            return 0.0;
        };
        match index {
            0 => self.cdf[0],
            _ if index < self.cdf.len() => self.cdf[index] - self.cdf[index - 1],
            _ => 0.0,
        }
    }
}

impl Distribution<u64> for Zipf {
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.gen(); // uniform in [0, 1)
        self.index_of(u) as u64
    }
}

/// A stream of `len` keys drawn from Zipf(`s`) over `0..n`, seeded by `seed`.
///
/// ```
/// use larder_trace::zipf::zipf_keys;
/// let a = zipf_keys(1_000_000, 0.9, 42, 1_000).unwrap();
/// assert_eq!(a, zipf_keys(1_000_000, 0.9, 42, 1_000).unwrap());
/// assert_ne!(a, zipf_keys(1_000_000, 0.9, 43, 1_000).unwrap());
/// ```
///
/// # Errors
///
/// As [`Zipf::new`].
pub fn zipf_keys(n: u64, s: f64, seed: u64, len: usize) -> Result<Vec<u64>, ZipfError> {
    let zipf = Zipf::new(n, s)?;
    let rng = StdRng::seed_from_u64(seed);
    Ok(zipf.sample_iter(rng).take(len).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: u64, s: f64, samples: usize) -> Vec<u64> {
        let mut counts = vec![0; n as usize];
        for key in zipf_keys(n, s, 0x5EED, samples).unwrap() {
            counts[key as usize] += 1;
        }
        counts
    }

    #[test]
    fn rank_one_is_drawn_two_to_the_s_times_as_often_as_rank_two() {
        for s in [0.9, 1.0] {
            let counts = counts(1_000, s, 400_000);
            let ratio = counts[0] as f64 / counts[1] as f64;
            let expected = 2f64.powf(s);
            assert!(
                (ratio / expected - 1.0).abs() < 0.03,
                "s = {s}: ratio {ratio:.3}, expected {expected:.3}"
            );
        }
    }

    #[test]
    fn empirical_frequencies_follow_the_probabilities() {
        let n = 100;
        let samples = 200_000;
        let zipf = Zipf::new(n, 0.9).unwrap();
        let counts = counts(n, 0.9, samples);
        for key in [0, 1, 9, 99] {
            let expected = zipf.probability(key) * samples as f64;
            let sigma = expected.sqrt();
            let observed = counts[key as usize] as f64;
            assert!(
                (observed - expected).abs() < 5.0 * sigma,
                "key {key}: observed {observed}, expected {expected:.0}"
            );
        }
        let total: f64 = (0..n).map(|key| zipf.probability(key)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(zipf.probability(n), 0.0);
    }

    #[test]
    fn exponent_zero_is_uniform_and_one_key_always_wins() {
        let uniform = Zipf::new(4, 0.0).unwrap();
        for key in 0..4 {
            assert!((uniform.probability(key) - 0.25).abs() < 1e-15);
        }
        assert!(zipf_keys(1, 1.0, 1, 100).unwrap().iter().all(|&k| k == 0));
    }

    #[test]
    fn the_guide_table_finds_what_a_full_search_finds() {
        let mut rng = StdRng::seed_from_u64(3);
        for (n, s) in [
            (1, 1.0),
            (2, 0.0),
            (7, 0.5),
            (1000, 0.9),
            (1000, 1.0),
            (5000, 2.5),
        ] {
            let zipf = Zipf::new(n, s).unwrap();
            let full = |u: f64| zipf.cdf.partition_point(|&c| c <= u);
            // Random draws, every table entry, and every bucket boundary, each
            // also nudged one ulp down.
            let draws = (0..2000).map(|_| rng.gen::<f64>());
            let entries = zipf.cdf.iter().copied();
            let boundaries = (0..n).map(|j| j as f64 / n as f64);
            for u in draws.chain(entries).chain(boundaries) {
                for u in [u, f64::from_bits(u.to_bits().saturating_sub(1))] {
                    if (0.0..1.0).contains(&u) {
                        assert_eq!(zipf.index_of(u), full(u), "n {n}, s {s}, u {u}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_million_keys_build_and_stay_in_range() {
        let keys = zipf_keys(1_000_000, 1.0, 9, 10_000).unwrap();
        assert!(keys.iter().all(|&k| k < 1_000_000));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(Zipf::new(0, 1.0).unwrap_err(), ZipfError::KeyCount { n: 0 });
        assert_eq!(
            Zipf::new(MAX_KEYS + 1, 1.0).unwrap_err(),
            ZipfError::KeyCount { n: MAX_KEYS + 1 }
        );
        assert!(matches!(
            Zipf::new(10, -0.5),
            Err(ZipfError::Exponent { .. })
        ));
        assert!(matches!(
            Zipf::new(10, f64::NAN),
            Err(ZipfError::Exponent { .. })
        ));
        assert!(matches!(
            Zipf::new(10, f64::INFINITY),
            Err(ZipfError::Exponent { .. })
        ));
    }
}
