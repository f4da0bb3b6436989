//! The reference policies against the figures published in
//! `shared/traces/README.md` (exact LRU and Bélády OPT, cache-aside, percent to
//! two decimals).
//!
//! These read the shared traces (see `larder_trace::traces` for where they are
//! looked for; `LARDER_TRACES` overrides). OLTP (914,145 requests) is loaded
//! once and its LRU and OPT checks run as two tests, side by side. LRU is
//! checked through the one-pass stack-distance curve, so the file costs about
//! 10 s of CPU unoptimised and nothing here needs to be `#[ignore]`d.

use std::sync::OnceLock;

use larder_trace::read::TraceError;
use larder_trace::reference::{lru_hit_ratio, Belady, LruCurve};
use larder_trace::traces::load;

/// `(trace, requests, unique keys, [(capacity, LRU, OPT)])`, from the README.
type Row = (
    &'static str,
    usize,
    usize,
    &'static [(usize, &'static str, &'static str)],
);

const OLTP: Row = (
    "OLTP",
    914_145,
    186_880,
    &[
        (256, "16.69", "38.72"),
        (512, "23.69", "46.67"),
        (1000, "32.83", "53.61"),
        (2000, "42.47", "60.40"),
    ],
);

const LIRS: &[Row] = &[
    (
        "lirs/loop",
        505_500,
        1_011,
        &[
            (256, "0.00", "25.22"),
            (512, "0.00", "50.54"),
            (768, "0.00", "75.81"),
            (1024, "99.80", "99.80"),
        ],
    ),
    (
        "lirs/multi1",
        15_858,
        2_606,
        &[
            (256, "43.05", "52.63"),
            (512, "46.66", "59.09"),
            (1024, "48.24", "72.00"),
        ],
    ),
    (
        "lirs/multi2",
        26_311,
        5_684,
        &[
            (256, "24.54", "46.96"),
            (512, "36.37", "53.83"),
            (1024, "47.87", "62.52"),
        ],
    ),
    (
        "lirs/multi3",
        30_241,
        7_454,
        &[
            (256, "18.19", "42.38"),
            (512, "32.78", "49.08"),
            (1024, "38.35", "56.60"),
        ],
    ),
    (
        "lirs/sprite",
        133_996,
        7_075,
        &[
            (256, "49.90", "75.06"),
            (512, "78.94", "88.20"),
            (1024, "90.73", "93.31"),
        ],
    ),
    (
        "lirs/2_pools",
        100_000,
        9_939,
        &[
            (256, "42.18", "58.07"),
            (512, "51.22", "63.01"),
            (1024, "54.54", "68.73"),
        ],
    ),
    (
        "lirs/gli",
        6_015,
        2_529,
        &[
            (256, "0.91", "18.04"),
            (512, "0.98", "35.06"),
            (1024, "11.21", "53.53"),
        ],
    ),
    (
        "lirs/zigzag",
        52_001,
        2_001,
        &[
            (256, "12.26", "12.26"),
            (512, "24.57", "24.57"),
            (1024, "49.18", "49.18"),
        ],
    ),
    (
        "lirs/cs",
        6_781,
        1_409,
        &[
            (128, "1.83", "9.38"),
            (256, "1.83", "16.93"),
            (512, "1.83", "32.03"),
        ],
    ),
    (
        "lirs/cpp",
        9_047,
        1_223,
        &[
            (128, "76.61", "84.39"),
            (256, "83.08", "86.48"),
            (512, "84.81", "86.48"),
        ],
    ),
    (
        "lirs/ps",
        10_448,
        3_083,
        &[
            (128, "12.19", "36.50"),
            (256, "13.06", "53.43"),
            (512, "48.55", "58.33"),
        ],
    ),
    (
        "lirs/scan",
        50_025,
        2_001,
        &[
            (128, "0.00", "6.14"),
            (256, "0.00", "12.28"),
            (512, "0.00", "24.56"),
        ],
    ),
];

fn load_or_explain(name: &str) -> Vec<u64> {
    load(name).unwrap_or_else(|e: TraceError| {
        panic!("cannot load trace {name}: {e} ({e:?}); set LARDER_TRACES to the traces directory")
    })
}

/// OLTP is loaded once and shared by the tests that need it.
fn oltp() -> &'static [u64] {
    static KEYS: OnceLock<Vec<u64>> = OnceLock::new();
    KEYS.get_or_init(|| load_or_explain(OLTP.0))
}

#[derive(Clone, Copy)]
enum Policy {
    Lru,
    Opt,
}

/// Checks one README row for `policy`; returns the mismatches as lines.
///
/// LRU is checked at every capacity through [`LruCurve`] (one pass for all
/// capacities), and the O(1)-per-request [`Lru`](larder_trace::reference::Lru)
/// replay is checked against it at the row's second capacity.
fn check(row: &Row, keys: &[u64], policy: Policy) -> Vec<String> {
    let (name, requests, unique, points) = *row;
    type Model = Box<dyn Fn(usize) -> f64>;
    let (label, counts, model): (_, _, Model) = match policy {
        Policy::Lru => {
            let curve = LruCurve::new(keys);
            let counts = (curve.requests(), curve.unique_keys());
            ("LRU", counts, Box::new(move |c| curve.hit_ratio(c)))
        }
        Policy::Opt => {
            let opt = Belady::new(keys);
            let counts = (opt.requests(), opt.unique_keys());
            ("OPT", counts, Box::new(move |c| opt.hit_ratio(c)))
        }
    };
    let mut wrong = Vec::new();
    if counts != (requests, unique) {
        wrong.push(format!(
            "{name}: {} requests / {} unique, README says {requests} / {unique}",
            counts.0, counts.1
        ));
    }
    for &(capacity, lru, opt) in points {
        let expected = match policy {
            Policy::Lru => lru,
            Policy::Opt => opt,
        };
        let got = format!("{:.2}", model(capacity));
        if got != expected {
            wrong.push(format!(
                "{name} @ {capacity}: {label} {got}, README says {expected}"
            ));
        }
    }
    if let (Policy::Lru, Some(&(capacity, ..))) = (policy, points.get(1)) {
        let (replayed, curve) = (lru_hit_ratio(keys, capacity), model(capacity));
        if replayed != curve {
            wrong.push(format!(
                "{name} @ {capacity}: Lru replay {replayed}, LruCurve {curve}"
            ));
        }
    }
    wrong
}

fn assert_none(wrong: Vec<String>) {
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn oltp_lru_matches_the_readme() {
    assert_none(check(&OLTP, oltp(), Policy::Lru));
}

#[test]
fn oltp_opt_matches_the_readme() {
    assert_none(check(&OLTP, oltp(), Policy::Opt));
}

#[test]
fn lirs_traces_match_the_readme() {
    let wrong = LIRS
        .iter()
        .flat_map(|row| {
            let keys = load_or_explain(row.0);
            let mut wrong = check(row, &keys, Policy::Lru);
            wrong.extend(check(row, &keys, Policy::Opt));
            wrong
        })
        .collect();
    assert_none(wrong);
}

/// The figure the `reference` module docs quote for a cache that may decline
/// an insert.
#[test]
fn declining_opt_on_loop_passes_the_readme_bound() {
    use larder_trace::reference::Admission;
    let opt = Belady::new(&load_or_explain("lirs/loop"));
    let ratio = opt.replay_with(256, Admission::MayDecline).hit_ratio();
    assert_eq!(format!("{ratio:.2}"), "25.27");
}
