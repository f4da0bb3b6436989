//! Hit ratios of Larder and its peers on real traces and a Zipf stream, as a markdown table.
//!
//! ```text
//! cargo run --release -p larder-benches --bin hitratio               # every point
//! cargo run --release -p larder-benches --bin hitratio -- OLTP zipf  # points whose label matches
//! ```
//!
//! Points are labelled `OLTP@256`, `lirs/loop@1024`, `zipf-0.9@10000`. An argument with an
//! `@` keeps the point it names; any other argument keeps the points whose label contains it.
//! Case is ignored, and with no argument every point runs.
//!
//! # Method
//!
//! Every figure is a single-threaded cache-aside replay ([`larder_trace::replay`]): for each
//! key, `get`; on a miss, `insert(key, key)`. Hits are counted from what `get` returned, never
//! from a cache's own statistics, so every column is counted the same way. Each point starts
//! from a fresh, empty cache, and every request counts (no warm-up is discarded).
//!
//! | workload | requests | keys |
//! |---|---|---|
//! | OLTP (ARC traces) | 914,145 | 186,880 |
//! | LIRS `loop`, `multi1`–`multi3`, `sprite`, `2_pools`, `gli` | 6,015 to 505,500 | 1,011 to 9,939 |
//! | Zipf(0.9) over 1,000,000 keys, seed `0x1a2d_e200` | 10,000,000 | up to 1,000,000 |
//!
//! These are the 27 points of the engine's goals, [`larder_trace::goals`], which the test
//! holding Larder to the goals (`crates/larder/tests/hit_ratio.rs`) replays too.
//!
//! Caches are built as their users get them out of the box, by [`larder_benches::visit_caches`]:
//! Larder with its automatic shard count, `moka::sync::Cache::new(cap)`,
//! `quick_cache::sync::Cache::new(cap)`, `mini_moka::sync::Cache::new(cap)`.
//!
//! moka and mini-moka apply their policy (admission, eviction) lazily: reads and writes are
//! logged in buffers that are drained into the policy, on the caller's thread, once 64 are
//! pending or a deadline has passed. The replay does not call `run_pending_tasks`/`sync` per operation,
//! because an application would not; so their figures include the effect of that delay
//! (entries can briefly overfill the cache, recent hits reach the policy late). The timer
//! makes the draining points depend on speed, so their figures can vary slightly between runs.
//!
//! `exact LRU` and `OPT` are the references of [`larder_trace::reference`]. `OPT` is
//! Bélády's bound for cache-aside replay into a cache that admits every missed key (the
//! figure the traces README tabulates). A cache with an admission filter (moka's and
//! mini-moka's TinyLFU) may decline a newcomer, and its true bound is Bélády's choice among
//! the residents and the newcomer ([`Admission::MayDecline`]), a little higher: on
//! `lirs/loop` at 256, 25.27% against 25.22%. A cell above *that* bound is flagged `(>OPT!)`:
//! the cache held more than its capacity (moka's lazy eviction can), or there is a bug in a
//! cache or in this replay.
//!
//! Figures on OLTP come from the ARC traces; cite N. Megiddo and D. S. Modha, "ARC: A
//! Self-Tuning, Low Overhead Replacement Cache", USENIX FAST 2003, when reporting them.

use std::time::Instant;

use larder_benches::{visit_caches, BenchCache, Subject, Visitor};
use larder_trace::goals::{TRACE_POINTS, ZIPF};
use larder_trace::reference::{lru_hit_ratio, Admission, Belady};
use larder_trace::replay::{replay, ReplayCache};
use larder_trace::traces;

/// The peers the gap table compares Larder's S3-FIFO against (by subject name).
const GAP_PEERS: &[&str] = &["moka", "quick_cache"];

/// One key stream and the capacities it is measured at.
struct Workload {
    name: String,
    keys: Vec<u64>,
    capacities: Vec<usize>,
    /// True for real traces, false for the synthetic Zipf stream.
    is_trace: bool,
}

/// One measured point: a workload at a capacity.
struct Point {
    workload: usize,
    capacity: usize,
}

/// A column of the table: one hit ratio (percent) per point.
struct Column {
    name: String,
    ratios: Vec<f64>,
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).map(|a| a.to_lowercase()).collect();
    if filters.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: hitratio [FILTER]...\n\nPoints are labelled like OLTP@256, lirs/loop@1024, \
             zipf-0.9@10000. A FILTER with an @ keeps the point it names, any other FILTER the \
             points whose label contains it (case is ignored); no FILTER runs every point.\n\
             Traces are read from $LARDER_TRACES or <workspace>/../shared/traces."
        );
        return;
    }
    let started = Instant::now();
    let (workloads, points) = load_workloads(&filters);
    if points.is_empty() {
        eprintln!("no point matches {filters:?}; try --help");
        std::process::exit(2);
    }

    let mut replayer = Replayer {
        workloads: &workloads,
        points: &points,
        columns: Vec::new(),
    };
    visit_caches(&mut replayer);
    let mut columns = replayer.columns;
    let (references, bound) = reference_columns(&workloads, &points);
    columns.extend(references);

    print_ratios(&workloads, &points, &columns, &bound);
    print_gaps(&workloads, &points, &columns);
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Loads every workload that has at least one point the filters keep.
fn load_workloads(filters: &[String]) -> (Vec<Workload>, Vec<Point>) {
    let zipf_name = ZIPF.name();
    let wanted = |name: &str, capacity: usize| {
        let label = format!("{name}@{capacity}").to_lowercase();
        // `name@capacity` names one point exactly; anything else is a substring.
        let matches = |f: &String| {
            if f.contains('@') {
                label == *f
            } else {
                label.contains(f.as_str())
            }
        };
        filters.is_empty() || filters.iter().any(matches)
    };
    let mut workloads = Vec::new();
    let mut points = Vec::new();
    let sources = TRACE_POINTS
        .iter()
        .map(|&(name, capacities)| (name.to_owned(), capacities, true))
        .chain(std::iter::once((zipf_name, ZIPF.capacities, false)));
    for (name, capacities, is_trace) in sources {
        let capacities: Vec<usize> = capacities
            .iter()
            .copied()
            .filter(|&c| wanted(&name, c))
            .collect();
        if capacities.is_empty() {
            continue;
        }
        eprintln!("loading {name}");
        let keys = if is_trace {
            traces::load(&name).unwrap_or_else(|e| {
                eprintln!("cannot load {name}: {e}; set LARDER_TRACES to the traces directory");
                std::process::exit(1);
            })
        } else {
            ZIPF.generate()
        };
        let workload = workloads.len();
        points.extend(
            capacities
                .iter()
                .map(|&capacity| Point { workload, capacity }),
        );
        workloads.push(Workload {
            name,
            keys,
            capacities,
            is_trace,
        });
    }
    (workloads, points)
}

/// Replays every point against each bounded cache `visit_caches` offers.
struct Replayer<'a> {
    workloads: &'a [Workload],
    points: &'a [Point],
    columns: Vec<Column>,
}

impl Visitor for Replayer<'_> {
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
        // Unbounded maps never evict; `lru_mutex` is the `lru` crate, which is exact LRU and
        // so would repeat the reference column.
        if !subject.bounded || subject.name == "lru_mutex" {
            return;
        }
        let name = match subject.name {
            "larder" => "larder S3Fifo".to_owned(),
            "larder_lru" => "larder Lru".to_owned(),
            other => other.to_owned(),
        };
        let started = Instant::now();
        let ratios = self
            .points
            .iter()
            .map(|point| {
                let cache = build(point.capacity);
                let keys = &self.workloads[point.workload].keys;
                replay(keys, CacheAside(&cache)).hit_ratio()
            })
            .collect();
        eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
        self.columns.push(Column { name, ratios });
    }
}

/// A bench cache seen by the replay: a hit is a `get` that returns a value; the value stored
/// is the key itself.
struct CacheAside<'a, C>(&'a C);

impl<C: BenchCache> ReplayCache for CacheAside<'_, C> {
    fn get(&mut self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&mut self, key: u64) {
        self.0.insert(key, key);
    }
}

/// The exact LRU and OPT columns, and per point the bound no cache of that capacity can
/// pass (OPT when it may decline an insert). OPT's next-use table is built once per workload.
/// LRU is replayed per point: with two to four capacities per workload that is faster than
/// `LruCurve`, whose tree (80 MB for the Zipf stream) is read at random.
fn reference_columns(workloads: &[Workload], points: &[Point]) -> ([Column; 2], Vec<f64>) {
    let started = Instant::now();
    let lru = points
        .iter()
        .map(|p| lru_hit_ratio(&workloads[p.workload].keys, p.capacity))
        .collect();
    let opt_by_workload: Vec<Belady> = workloads.iter().map(|w| Belady::new(&w.keys)).collect();
    let opt_with = |admission| -> Vec<f64> {
        points
            .iter()
            .map(|p| {
                opt_by_workload[p.workload]
                    .replay_with(p.capacity, admission)
                    .hit_ratio()
            })
            .collect()
    };
    let (opt, bound) = (opt_with(Admission::Always), opt_with(Admission::MayDecline));
    eprintln!("references: {:.1} s", started.elapsed().as_secs_f64());
    let columns = [
        Column {
            name: "exact LRU".to_owned(),
            ratios: lru,
        },
        Column {
            name: "OPT".to_owned(),
            ratios: opt,
        },
    ];
    (columns, bound)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    (count > 0).then(|| sum / count as f64)
}

/// The groups of points that get an average row: all, traces only, Zipf only (the last two
/// only when both kinds are present).
fn average_groups(workloads: &[Workload], points: &[Point]) -> Vec<(String, Vec<usize>)> {
    let all: Vec<usize> = (0..points.len()).collect();
    let of_kind = |trace: bool| -> Vec<usize> {
        all.iter()
            .copied()
            .filter(|&i| workloads[points[i].workload].is_trace == trace)
            .collect()
    };
    let (traces, zipf) = (of_kind(true), of_kind(false));
    let mut groups = vec![(format!("**average, all {} points**", all.len()), all)];
    if !traces.is_empty() && !zipf.is_empty() {
        groups.push((
            format!("**average, {} trace points**", traces.len()),
            traces,
        ));
        groups.push((format!("**average, {} Zipf points**", zipf.len()), zipf));
    }
    groups
}

/// The hit-ratio table; a cell above `bound` (the may-decline OPT) is flagged.
fn print_ratios(workloads: &[Workload], points: &[Point], columns: &[Column], bound: &[f64]) {
    println!("## Hit ratio (%), single-threaded cache-aside replay\n");
    print!("| workload | capacity |");
    for column in columns {
        print!(" {} |", column.name);
    }
    print!("\n|---|---:|");
    for _ in columns {
        print!("---:|");
    }
    println!();
    for (i, point) in points.iter().enumerate() {
        print!(
            "| {} | {} |",
            workloads[point.workload].name, point.capacity
        );
        for column in columns {
            let ratio = column.ratios[i];
            let flag = if ratio > bound[i] + 1e-9 {
                " (>OPT!)"
            } else {
                ""
            };
            print!(" {ratio:.2}{flag} |");
        }
        println!();
    }
    for (label, members) in average_groups(workloads, points) {
        print!("| {label} | |");
        for column in columns {
            let average = mean(members.iter().map(|&i| column.ratios[i]));
            print!(" {:.2} |", average.unwrap_or(f64::NAN));
        }
        println!();
    }
    println!();
    println!(
        "OPT is Bélády's bound when every miss is inserted; a cache with an admission filter \
         can pass it slightly. A cell flagged (>OPT!) passes even the bound for a cache that \
         may decline inserts."
    );
    let zipf = workloads.iter().find(|w| !w.is_trace);
    if let Some(zipf) = zipf {
        println!(
            "{}: Zipf({}) over {} keys, {} requests, seed {:#x}, capacities {:?}.",
            zipf.name,
            ZIPF.exponent,
            ZIPF.keys,
            zipf.keys.len(),
            ZIPF.seed,
            zipf.capacities
        );
    }
    if workloads.iter().any(|w| w.name == "OLTP") {
        println!(
            "OLTP is from the ARC traces: N. Megiddo and D. S. Modha, \"ARC: A Self-Tuning, \
             Low Overhead Replacement Cache\", USENIX FAST 2003."
        );
    }
    println!();
}

/// Larder's S3-FIFO against the better of moka and quick_cache at each point, in percentage
/// points (positive: Larder is ahead).
fn print_gaps(workloads: &[Workload], points: &[Point], columns: &[Column]) {
    let find = |name: &str| columns.iter().find(|c| c.name == name);
    let Some(larder) = find("larder S3Fifo") else {
        return;
    };
    let peers: Vec<&Column> = GAP_PEERS.iter().filter_map(|name| find(name)).collect();
    if peers.is_empty() {
        return;
    }
    println!(
        "## larder S3Fifo against the best of {}\n",
        GAP_PEERS.join(" and ")
    );
    println!("| workload | capacity | larder S3Fifo | best peer | peer's ratio | gap (pp) |");
    println!("|---|---:|---:|---|---:|---:|");
    let mut gaps = Vec::with_capacity(points.len());
    for (i, point) in points.iter().enumerate() {
        let best = peers
            .iter()
            .max_by(|a, b| a.ratios[i].total_cmp(&b.ratios[i]))
            .expect("at least one peer");
        let gap = larder.ratios[i] - best.ratios[i];
        gaps.push(gap);
        println!(
            "| {} | {} | {:.2} | {} | {:.2} | {:+.2} |",
            workloads[point.workload].name,
            point.capacity,
            larder.ratios[i],
            best.name,
            best.ratios[i],
            gap
        );
    }
    for (label, members) in average_groups(workloads, points) {
        let average = mean(members.iter().map(|&i| gaps[i])).unwrap_or(f64::NAN);
        println!("| {label} | | | | | {average:+.2} |");
    }
    let behind = gaps.iter().filter(|&&gap| gap < 0.0).count();
    println!(
        "\nlarder S3Fifo is behind the best peer at {behind} of {} points.",
        gaps.len()
    );
}
