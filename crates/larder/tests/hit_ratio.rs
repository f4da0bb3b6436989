//! The engine's hit-ratio goals (issue 2), held at the 27 points they are measured at
//! ([`larder_trace::goals`]: 25 on the shared traces, 2 on a Zipf stream), in a
//! single-threaded cache-aside replay (get; insert on a miss):
//!
//! * `Policy::S3Fifo` averages at least the better of moka's and quick_cache's averages over
//!   the 27 points, and is never more than 2 points below the better of the two at a point;
//! * `Policy::Lru` (CLOCK) is within 1 point of exact LRU on average, and 3 at each point;
//! * and neither passes Bélády's OPT. Both policies always cache the key an insert brings
//!   (eviction never takes the entry being inserted), so their bound is OPT that admits every
//!   miss, the figure the traces README tabulates.
//!
//! Exact LRU and OPT are computed here by `larder-trace` (they match the reference values in
//! `../shared/traces/README.md`, which `cargo test -p larder-trace` checks). The peers cannot run
//! in this crate's tests (they are the benches' dependencies only), so their figures are
//! constants ([`PEERS`]) from `cargo run --release -p larder-benches --bin hitratio`.
//!
//! The caches use a fixed hasher so every run replays the same way: the S3-FIFO policy files
//! keys in its sketch and ghosts by hash bits, and with a randomly seeded hasher its figures
//! move by up to 0.8 point between runs. The Zipf points' shard counts are fixed too, at what
//! the published run chose (the automatic count depends on the machine's cores); every trace
//! point's capacity is below 2,048, where the automatic count is 1 on any machine.
//!
//! The averages need every point, so one test replays them all, spread over the cores: about
//! 50 s unoptimised on two.

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::sync::Mutex;

use larder::{Cache, Policy};
use larder_trace::goals::{self, GoalPoint, ZIPF};
use larder_trace::reference::{lru_hit_ratio, opt_hit_ratio};
use larder_trace::traces::load;

/// How far below the better peer S3-FIFO may land at any point.
const PEER_SLACK: f64 = 2.0;
/// How far from exact LRU `Policy::Lru` may land at any point.
const LRU_SLACK: f64 = 3.0;
/// How far `Policy::Lru`'s average may be from exact LRU's.
const LRU_AVERAGE_SLACK: f64 = 1.0;

/// `(workload, capacity, moka, quick_cache)` at each of the goals' points, in
/// [`goals::points`]' order: the highest figure each peer (moka 0.12, quick_cache 0.6) has
/// scored there in the `hitratio` runs of 2026-11-25. Those are the five tables
/// `docs/BENCHMARKS.md` has published (its history; the last is the one it shows), and at
/// `lirs/loop` 256 and `lirs/gli` 1024 higher figures from runs of that day that were not
/// published, which this test held before. A peer's figure moves by up to a few tenths
/// between runs (moka drains its policy on a timer, and the peers' hashers are seeded at
/// random), so the highest is the goals' strictest reading: the averages compared with
/// S3-FIFO's are the averages of these, at least either peer's average in any one run.
const PEERS: [(&str, usize, f64, f64); 27] = [
    ("OLTP", 256, 23.13, 19.41),
    ("OLTP", 512, 29.99, 27.54),
    ("OLTP", 1000, 35.80, 35.24),
    ("OLTP", 2000, 41.28, 43.75),
    ("lirs/loop", 256, 24.79, 24.48),
    ("lirs/loop", 512, 50.54, 48.96),
    ("lirs/loop", 1024, 99.80, 96.07),
    ("lirs/multi1", 256, 48.86, 49.28),
    ("lirs/multi1", 512, 55.64, 55.92),
    ("lirs/multi1", 1024, 69.12, 68.20),
    ("lirs/multi2", 256, 39.44, 34.29),
    ("lirs/multi2", 512, 50.97, 46.63),
    ("lirs/multi2", 1024, 58.96, 57.30),
    ("lirs/multi3", 256, 34.63, 28.80),
    ("lirs/multi3", 512, 44.68, 38.20),
    ("lirs/multi3", 1024, 51.01, 51.76),
    ("lirs/sprite", 256, 57.89, 55.04),
    ("lirs/sprite", 512, 76.03, 76.99),
    ("lirs/sprite", 1024, 83.91, 87.96),
    ("lirs/2_pools", 256, 50.73, 50.70),
    ("lirs/2_pools", 512, 52.10, 52.03),
    ("lirs/2_pools", 1024, 54.65, 54.56),
    ("lirs/gli", 256, 15.73, 16.04),
    ("lirs/gli", 512, 27.00, 32.67),
    ("lirs/gli", 1024, 48.94, 49.69),
    ("zipf-0.9", 10_000, 48.32, 50.16),
    ("zipf-0.9", 100_000, 69.54, 69.81),
];

/// The shard count the published run's automatic choice gave at `capacity` on its two cores:
/// sixteen a core, and at least 1,024 entries a shard.
fn published_shards(capacity: usize) -> usize {
    (capacity / 1024).clamp(1, 32)
}

fn replay(keys: &[u64], capacity: usize, policy: Policy) -> f64 {
    let cache: Cache<u64, (), BuildHasherDefault<DefaultHasher>> = Cache::builder()
        .max_capacity(capacity as u64)
        .shards(published_shards(capacity))
        .policy(policy)
        .hasher(BuildHasherDefault::default())
        .build()
        .expect("valid configuration");
    let mut hits = 0u64;
    for &k in keys {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, ());
        }
    }
    100.0 * hits as f64 / keys.len() as f64
}

/// What one point measured.
#[derive(Clone, Copy, Debug)]
struct Measured {
    s3fifo: f64,
    clock: f64,
    exact_lru: f64,
    opt: f64,
}

impl Measured {
    /// A point not measured yet: no figure is a number, so none can pass for one.
    const NONE: Measured = Measured {
        s3fifo: f64::NAN,
        clock: f64::NAN,
        exact_lru: f64::NAN,
        opt: f64::NAN,
    };
}

/// Each of the figures a point measures, one job each.
#[derive(Clone, Copy, Debug)]
enum Figure {
    S3Fifo,
    Clock,
    ExactLru,
    Opt,
}

impl Figure {
    const ALL: [Figure; 4] = [Figure::S3Fifo, Figure::Clock, Figure::ExactLru, Figure::Opt];
}

/// Loads a workload's keys: a shared trace, or the Zipf stream.
fn keys_of(workload: &str) -> Vec<u64> {
    let keys = if workload == ZIPF.name() {
        ZIPF.generate()
    } else {
        load(workload).unwrap_or_else(|e| panic!("loading {workload}: {e}"))
    };
    assert!(!keys.is_empty(), "{workload} holds no key");
    keys
}

/// Measures every point; returns the figures in `points`' order.
fn measure(points: &[GoalPoint]) -> Vec<Measured> {
    let mut workloads: Vec<(&str, Vec<u64>)> = Vec::new();
    for point in points {
        if !workloads.iter().any(|(name, _)| *name == point.workload) {
            workloads.push((&point.workload, keys_of(&point.workload)));
        }
    }
    let keys_at = |point: &GoalPoint| -> &[u64] {
        let (_, keys) = workloads
            .iter()
            .find(|(name, _)| *name == point.workload)
            .unwrap();
        keys
    };
    // One job per figure of a point: the longest replays first, spread over the cores.
    let mut jobs: Vec<(usize, Figure)> = (0..points.len())
        .flat_map(|i| Figure::ALL.map(|figure| (i, figure)))
        .collect();
    jobs.sort_by_key(|&(i, _)| std::cmp::Reverse(keys_at(&points[i]).len()));
    let queue = Mutex::new(jobs.into_iter());
    let measured = Mutex::new(vec![Measured::NONE; points.len()]);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let Some((i, figure)) = queue.lock().unwrap().next() else {
                    return;
                };
                let (keys, capacity) = (keys_at(&points[i]), points[i].capacity);
                let ratio = match figure {
                    Figure::S3Fifo => replay(keys, capacity, Policy::S3Fifo),
                    Figure::Clock => replay(keys, capacity, Policy::Lru),
                    Figure::ExactLru => lru_hit_ratio(keys, capacity),
                    Figure::Opt => opt_hit_ratio(keys, capacity),
                };
                let mut measured = measured.lock().unwrap();
                let m = &mut measured[i];
                *match figure {
                    Figure::S3Fifo => &mut m.s3fifo,
                    Figure::Clock => &mut m.clock,
                    Figure::ExactLru => &mut m.exact_lru,
                    Figure::Opt => &mut m.opt,
                } = ratio;
            });
        }
    });
    measured.into_inner().unwrap()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    assert!(count > 0, "an average over no point");
    sum / count as f64
}

/// The goals, point by point and on average, over `measured` (in [`PEERS`]' order); returns
/// each goal missed as a line.
fn goals_missed(measured: &[Measured]) -> Vec<String> {
    assert_eq!(measured.len(), PEERS.len(), "a figure for every point");
    let mut missed = Vec::new();
    for (&(workload, capacity, moka, quick_cache), m) in PEERS.iter().zip(measured) {
        let at = format!("{workload}@{capacity}");
        let best_peer = moka.max(quick_cache);
        // A figure that is not a number (an empty trace's, 0 / 0) would pass every comparison
        // below; it passes none.
        if ![m.s3fifo, m.clock, m.exact_lru, m.opt]
            .iter()
            .all(|f| f.is_finite())
        {
            missed.push(format!("{at}: a figure is not a number: {m:?}"));
            continue;
        }
        if m.s3fifo > m.opt + 1e-9 || m.clock > m.opt + 1e-9 || m.exact_lru > m.opt + 1e-9 {
            missed.push(format!(
                "{at}: S3-FIFO {:.2}, CLOCK {:.2} or exact LRU {:.2} above OPT {:.2}",
                m.s3fifo, m.clock, m.exact_lru, m.opt
            ));
        }
        if m.s3fifo < best_peer - PEER_SLACK {
            missed.push(format!(
                "{at}: S3-FIFO {:.2} more than {PEER_SLACK} below the best peer's {best_peer:.2}",
                m.s3fifo
            ));
        }
        if (m.clock - m.exact_lru).abs() > LRU_SLACK {
            missed.push(format!(
                "{at}: CLOCK {:.2} more than {LRU_SLACK} from exact LRU {:.2}",
                m.clock, m.exact_lru
            ));
        }
    }
    let s3fifo = mean(measured.iter().map(|m| m.s3fifo));
    let (moka, quick_cache) = (
        mean(PEERS.iter().map(|p| p.2)),
        mean(PEERS.iter().map(|p| p.3)),
    );
    if s3fifo < moka.max(quick_cache) {
        missed.push(format!(
            "average: S3-FIFO {s3fifo:.2} below the better peer's (moka {moka:.2}, quick_cache \
             {quick_cache:.2})"
        ));
    }
    let clock = mean(measured.iter().map(|m| m.clock));
    let exact_lru = mean(measured.iter().map(|m| m.exact_lru));
    if (clock - exact_lru).abs() > LRU_AVERAGE_SLACK {
        missed.push(format!(
            "average: CLOCK {clock:.2} more than {LRU_AVERAGE_SLACK} from exact LRU {exact_lru:.2}"
        ));
    }
    missed
}

/// The figures as a table, with their averages, for a failure's message.
fn table(measured: &[Measured]) -> String {
    let mut table = String::from("point: S3-FIFO CLOCK | moka quick_cache | exact-LRU OPT\n");
    for (&(workload, capacity, moka, quick_cache), m) in PEERS.iter().zip(measured) {
        table += &format!(
            "{workload}@{capacity}: {:.2} {:.2} | {moka:.2} {quick_cache:.2} | {:.2} {:.2}\n",
            m.s3fifo, m.clock, m.exact_lru, m.opt
        );
    }
    let of = |f: fn(&Measured) -> f64| mean(measured.iter().map(f));
    table += &format!(
        "average: {:.2} {:.2} | {:.2} {:.2} | {:.2} {:.2}\n",
        of(|m| m.s3fifo),
        of(|m| m.clock),
        mean(PEERS.iter().map(|p| p.2)),
        mean(PEERS.iter().map(|p| p.3)),
        of(|m| m.exact_lru),
        of(|m| m.opt)
    );
    table
}

/// The check misses no goal it is given: figures that keep every point's bound but miss both
/// averages, one that passes OPT, and one that is not a number. With the bounds checked point
/// by point only, as they once were, S3-FIFO 1.5 points below the better peer everywhere and
/// CLOCK 2 above exact LRU everywhere met every goal.
#[test]
fn averages_that_no_point_shows_are_missed_goals() {
    let close = |&(.., moka, quick_cache): &(&str, usize, f64, f64)| {
        let best_peer = f64::max(moka, quick_cache);
        Measured {
            s3fifo: best_peer - 1.5,
            clock: 20.0 + 2.0,
            exact_lru: 20.0,
            opt: 100.0,
        }
    };
    let mut measured: Vec<Measured> = PEERS.iter().map(close).collect();
    let missed = goals_missed(&measured);
    let averages = ["average: S3-FIFO", "average: CLOCK"];
    assert_eq!(missed.len(), 2, "{missed:?}");
    for (line, start) in missed.iter().zip(averages) {
        assert!(line.starts_with(start), "{missed:?}");
    }
    measured[4].s3fifo = measured[4].opt + 0.01;
    let missed = goals_missed(&measured);
    assert!(
        missed[0].starts_with("lirs/loop@256: S3-FIFO"),
        "{missed:?}"
    );
    assert!(missed[0].contains("above OPT"), "{missed:?}");
    measured[4].s3fifo = f64::NAN;
    let missed = goals_missed(&measured);
    assert!(
        missed[0].starts_with("lirs/loop@256: a figure is not a number"),
        "{missed:?}"
    );
}

/// The goals' points, as `(workload, capacity)`.
fn goal_points() -> Vec<(String, usize)> {
    goals::points()
        .into_iter()
        .map(|point| (point.workload, point.capacity))
        .collect()
}

#[test]
fn the_peer_table_names_the_goals_27_points() {
    let named: Vec<(String, usize)> = PEERS
        .iter()
        .map(|&(workload, capacity, ..)| (workload.to_owned(), capacity))
        .collect();
    assert_eq!(named, goal_points());
}

/// Every peer figure of the table `docs/BENCHMARKS.md` publishes for the goals' points is at
/// most [`PEERS`]' (which holds the highest of the runs on record): a run published without
/// updating [`PEERS`] would hold S3-FIFO to peers weaker than the published ones. The test's
/// figures were once four such points behind the table (`lirs/multi2` at 512: 50.75 against
/// moka's 50.97).
#[test]
fn no_peer_figure_the_benchmarks_publish_is_above_the_tests() {
    let doc = include_str!("../../../docs/BENCHMARKS.md");
    let section = doc
        .find("### The goals' 27 points")
        .map(|start| &doc[start..])
        .expect("BENCHMARKS.md has the goals' table");
    let mut rows = 0;
    let mut above = Vec::new();
    for &(workload, capacity, moka, quick_cache) in &PEERS {
        let start = format!("| {workload} | {capacity} |");
        let Some(row) = section.lines().find(|line| line.starts_with(&start)) else {
            above.push(format!("{workload}@{capacity}: no row in the table"));
            continue;
        };
        rows += 1;
        // | workload | capacity | larder S3Fifo | larder Lru | moka | quick_cache | ...
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let figure = |column: usize| -> f64 {
            cells[column]
                .parse()
                .unwrap_or_else(|_| panic!("{workload}@{capacity}: `{}`", cells[column]))
        };
        for (peer, published, ours) in [
            ("moka", figure(5), moka),
            ("quick_cache", figure(6), quick_cache),
        ] {
            if published > ours {
                above.push(format!(
                    "{workload}@{capacity}: {peer} {published:.2} in the table, {ours:.2} here"
                ));
            }
        }
    }
    assert_eq!(rows, 27, "{}", above.join("\n"));
    assert!(above.is_empty(), "{}", above.join("\n"));
}

#[test]
fn larder_meets_the_hit_ratio_goals_at_the_27_points() {
    let points = goals::points();
    assert_eq!(points.len(), 27);
    // The figures are checked against `PEERS` point by point, in this order.
    for (point, &(workload, capacity, ..)) in points.iter().zip(&PEERS) {
        assert_eq!(
            (point.workload.as_str(), point.capacity),
            (workload, capacity)
        );
    }
    let measured = measure(&points);
    let missed = goals_missed(&measured);
    println!("{}", table(&measured)); // shown with --nocapture
    assert!(
        missed.is_empty(),
        "{}\n\n{}",
        missed.join("\n"),
        table(&measured)
    );
}
