//! The Zipf streams follow Zipf(s) over exactly `n` keys, and a seed fixes them.
//!
//! A large sample's rank frequencies are held to the distribution by a chi-square test whose
//! expected counts come from the formula, `P(r) = r^-s / H(n, s)`, summed here term by term,
//! not from the generator's table. So that the test cannot pass whatever the generator does,
//! the same sample must fail it against an exponent 0.01 off, and against a key count a tenth
//! smaller or larger.

use larder_trace::goals::ZIPF;
use larder_trace::zipf::zipf_keys;

/// Ranks `1..=SINGLE_RANKS` are a bin each; after them, bins double in width.
const SINGLE_RANKS: u64 = 64;

/// The ranks `first..=last` of each bin over `n` keys: single ranks, then ranks `2^k + 1` to
/// `2^(k+1)`, the last bin ending at `n`.
fn bins(n: u64) -> Vec<(u64, u64)> {
    let mut bins: Vec<(u64, u64)> = (1..=SINGLE_RANKS.min(n)).map(|r| (r, r)).collect();
    let mut first = SINGLE_RANKS + 1;
    while first <= n {
        let last = (2 * (first - 1)).min(n);
        bins.push((first, last));
        first = last + 1;
    }
    bins
}

/// The chi-square statistic of `sample` (keys, rank minus one) against Zipf(`s`) over `n` keys,
/// and its degrees of freedom; infinite if a key lies outside `0..n`, which Zipf over `n` keys
/// never draws.
fn chi_square(sample: &[u64], n: u64, s: f64) -> (f64, usize) {
    let bins = bins(n);
    let mass: Vec<f64> = bins
        .iter()
        .map(|&(first, last)| (first..=last).map(|r| (r as f64).powf(-s)).sum())
        .collect();
    let total: f64 = mass.iter().sum();
    let mut observed = vec![0u64; bins.len()];
    for &key in sample {
        let rank = key + 1;
        if rank > n {
            return (f64::INFINITY, bins.len() - 1);
        }
        let bin = bins.partition_point(|&(_, last)| last < rank);
        observed[bin] += 1;
    }
    let draws = sample.len() as f64;
    let statistic = observed
        .iter()
        .zip(&mass)
        .map(|(&seen, &mass)| {
            let expected = draws * mass / total;
            (seen as f64 - expected).powi(2) / expected
        })
        .sum();
    (statistic, bins.len() - 1)
}

/// The chi-square value that `df` degrees of freedom pass with probability about 3 in 10
/// million (five standard deviations, by Wilson and Hilferty's cube-root approximation).
fn critical(df: usize) -> f64 {
    let df = df as f64;
    let spread = 2.0 / (9.0 * df);
    df * (1.0 - spread + 5.0 * spread.sqrt()).powi(3)
}

/// Checks a sample of Zipf(`s`) over `n` keys: it passes against (`n`, `s`), and fails against
/// the exponent 0.01 either side and the key count a tenth either side.
fn check(n: u64, s: f64, draws: usize, seed: u64) {
    let sample = zipf_keys(n, s, seed, draws).unwrap();
    let (statistic, df) = chi_square(&sample, n, s);
    println!(
        "Zipf({s}) over {n}: chi-square {statistic:.1}, {df} df, bound {:.1}",
        critical(df)
    );
    assert!(
        statistic < critical(df),
        "Zipf({s}) over {n} keys: chi-square {statistic:.1} with {df} degrees of freedom, \
         at most {:.1} expected",
        critical(df)
    );
    let wrong = [
        (n, s - 0.01),
        (n, s + 0.01),
        (n - n / 10, s),
        (n + n / 10, s),
    ];
    for (wrong_n, wrong_s) in wrong {
        let (statistic, df) = chi_square(&sample, wrong_n, wrong_s);
        println!("  against Zipf({wrong_s}) over {wrong_n}: {statistic:.1}");
        assert!(
            statistic > critical(df),
            "a sample of Zipf({s}) over {n} keys passes for Zipf({wrong_s}) over {wrong_n}: \
             chi-square {statistic:.1} with {df} degrees of freedom, the test cannot tell them \
             apart"
        );
    }
}

#[test]
fn the_goals_stream_is_zipf_of_its_exponent_over_its_key_count() {
    check(ZIPF.keys, ZIPF.exponent, 2_000_000, ZIPF.seed);
}

#[test]
fn zipf_one_over_a_million_keys_is_zipf_one() {
    check(1_000_000, 1.0, 2_000_000, 7);
}

#[test]
fn small_key_counts_are_zipf_too() {
    for (n, s) in [(10, 0.9), (1000, 1.0), (1000, 0.5)] {
        check(n, s, 2_000_000, n);
    }
}

/// The goals' stream starts with these keys. It is fixed by its seed and `rand`'s `StdRng`
/// (ChaCha12 in `rand` 0.8, which the lock file pins); should either change, this fails first,
/// and every published Zipf figure (docs/BENCHMARKS.md, the hit-ratio test's peers) must be
/// measured again.
#[test]
fn the_goals_stream_is_fixed_by_its_seed() {
    let start = zipf_keys(ZIPF.keys, ZIPF.exponent, ZIPF.seed, 12).unwrap();
    assert_eq!(
        start,
        zipf_keys(ZIPF.keys, ZIPF.exponent, ZIPF.seed, 12).unwrap()
    );
    assert_eq!(start, PINNED);
    assert_ne!(
        start,
        zipf_keys(ZIPF.keys, ZIPF.exponent, ZIPF.seed + 1, 12).unwrap()
    );
}

const PINNED: [u64; 12] = [
    3995, 0, 206301, 537088, 145314, 2, 64, 12923, 39254, 11, 740840, 414659,
];

#[test]
fn the_bins_cover_every_rank_once() {
    for n in [1, 10, 64, 65, 128, 129, 1000, 1_000_000] {
        let bins = bins(n);
        assert_eq!(bins[0].0, 1);
        assert_eq!(bins.last().unwrap().1, n);
        for pair in bins.windows(2) {
            assert_eq!(pair[1].0, pair[0].1 + 1, "n {n}");
            assert!(pair[1].0 <= pair[1].1, "n {n}");
        }
    }
}
