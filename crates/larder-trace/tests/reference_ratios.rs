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
use larder_trace::traces::{load, published, Published, PUBLISHED};

fn load_or_explain(name: &str) -> Vec<u64> {
    load(name).unwrap_or_else(|e: TraceError| {
        panic!("cannot load trace {name}: {e} ({e:?}); set LARDER_TRACES to the traces directory")
    })
}

/// OLTP's published figures.
fn oltp_row() -> &'static Published {
    published("OLTP").expect("the README publishes OLTP's figures")
}

/// OLTP is loaded once and shared by the tests that need it.
fn oltp() -> &'static [u64] {
    static KEYS: OnceLock<Vec<u64>> = OnceLock::new();
    KEYS.get_or_init(|| load_or_explain(oltp_row().trace))
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
fn check(row: &Published, keys: &[u64], policy: Policy) -> Vec<String> {
    let &Published {
        trace: name,
        requests,
        unique_keys: unique,
        points,
    } = row;
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
    assert_none(check(oltp_row(), oltp(), Policy::Lru));
}

#[test]
fn oltp_opt_matches_the_readme() {
    assert_none(check(oltp_row(), oltp(), Policy::Opt));
}

#[test]
fn lirs_traces_match_the_readme() {
    let wrong = PUBLISHED
        .iter()
        .filter(|row| row.trace != "OLTP")
        .flat_map(|row| {
            let keys = load_or_explain(row.trace);
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
