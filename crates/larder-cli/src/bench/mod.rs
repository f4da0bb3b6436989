//! `larder bench`: the criterion benches' workloads, run side by side in this process.
//!
//! The workloads are `larder_benches::workloads` (the same keys, capacities and operations as
//! `cargo bench --bench throughput`). For each workload and thread count, every cache under
//! test is built and warmed, then timed in turns: `ROUNDS` rounds, each giving every cache a
//! slice of `--seconds` in the same order, and the fastest round of each counts. Interleaving
//! and keeping the fastest is what makes the ratios between caches hold up on a shared, noisy
//! machine (the `probe` binary does the same); one long run per cache would let a burst of
//! other work land on one cache only.

mod bars;

use crate::failure::Failure;
use crate::progress::Progress;
use crate::table::{Align, Table};
use clap::ValueEnum;
use larder_benches::workloads::{replay, Workload, OPS_PER_THREAD};
use larder_benches::{try_run_threads, visit_caches, BenchCache, Subject, Visitor};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Timed rounds per cache; the fastest counts.
const ROUNDS: u32 = 3;

/// The caches `--compare` can name (besides `larder`, always measured): the throughput bench's
/// subjects.
const PEERS: [&str; 9] = [
    "larder_lru",
    "larder_ttl",
    "moka",
    "quick_cache",
    "mini_moka",
    "lru_mutex",
    "dashmap",
    "papaya",
    "papaya_ahash",
];

/// The arguments of `larder bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which workload: `read` (Zipf 1.0 gets of 100,000 present keys), `cache-aside` (Zipf 0.9
    /// over 100,000 keys, capacity 10,000, insert on a miss), `insert` (uniform inserts over
    /// 1,000,000 keys into a full cache of 100,000), or `all`.
    #[arg(long, value_enum, default_value = "all")]
    workload: WorkloadChoice,

    /// Thread counts to run each workload at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,

    /// Seconds of timed work per cache, per workload and thread count (split over 3 rounds).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,

    /// Caches to run beside larder (always measured), comma-separated, each once: larder_lru,
    /// larder_ttl, moka, quick_cache, mini_moka, lru_mutex, and the unbounded maps dashmap,
    /// papaya and papaya_ahash, papaya with the hasher larder uses (a ceiling: they never
    /// evict, so they sit out cache-aside).
    #[arg(long, value_delimiter = ',', default_value = "quick_cache,moka")]
    compare: Vec<String>,

    /// Also draw the results as bars, one panel per workload, into this file (.svg or .png;
    /// a PNG needs a font: see `larder sim --help`).
    #[arg(long, value_name = "FILE")]
    plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadChoice {
    Read,
    CacheAside,
    Insert,
    All,
}

/// One cache's best round at one workload and thread count.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    name: &'static str,
    threads: usize,
    ops_per_sec: f64,
    /// Hits over gets, for workloads that read.
    hit_ratio: Option<f64>,
}

/// Runs `larder bench`.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    let plan = Plan::from_args(args)?;
    // Checked before the runs, so that a chart that cannot be drawn costs no measurement.
    let target = args
        .plot
        .as_deref()
        .map(crate::plot::Target::new)
        .transpose()?;
    let workloads: Vec<fn(usize) -> Workload> = match args.workload {
        WorkloadChoice::Read => vec![Workload::read_hits_for],
        WorkloadChoice::CacheAside => vec![Workload::cache_aside_for],
        WorkloadChoice::Insert => vec![Workload::insert_only_for],
        WorkloadChoice::All => vec![
            Workload::read_hits_for,
            Workload::cache_aside_for,
            Workload::insert_only_for,
        ],
    };
    let max_threads = plan.threads.iter().copied().max().unwrap_or(1);
    outln!(
        "larder bench: {} s per cache and thread count, best of {ROUNDS} interleaved rounds; \
         {} cores available",
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut panels = Vec::new();
    for make in workloads {
        let workload = make(max_threads);
        let mut results = Vec::new();
        for &threads in &plan.threads {
            results.extend(measure(&workload, threads, &plan)?);
        }
        print_table(&workload, &plan, &results);
        panels.push(bars::Panel {
            title: format!("{} (capacity {})", workload.name, workload.capacity),
            results,
        });
    }
    if let Some(target) = &target {
        let chart = bars::Bars {
            panels,
            names: plan.names.clone(),
            threads: plan.threads.clone(),
        };
        crate::plot::write(target, &chart)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What to run, validated.
struct Plan {
    threads: Vec<usize>,
    /// Time per cache per round.
    slice: Duration,
    /// `larder` first, then the peers in the order given.
    names: Vec<&'static str>,
}

impl Plan {
    fn from_args(args: &Args) -> Result<Self, Failure> {
        if args.threads.is_empty() || args.threads.contains(&0) {
            return Err(Failure::usage(
                "--threads needs thread counts of at least 1, such as --threads 1,2",
            ));
        }
        if args.threads.iter().any(|&t| t > 256) {
            return Err(Failure::usage("--threads is capped at 256 per run"));
        }
        if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
            return Err(Failure::usage(format!(
                "--seconds {}: the time per cache must be more than 0 and at most 3600 seconds",
                args.seconds
            )));
        }
        let mut names = vec!["larder"];
        for wanted in &args.compare {
            let wanted = wanted.trim();
            if wanted.is_empty() {
                continue;
            }
            if wanted == "larder" {
                return Err(Failure::usage(
                    "--compare: `larder` is always measured; name only the caches to set beside it",
                ));
            }
            let Some(&name) = PEERS.iter().find(|&&p| p == wanted) else {
                return Err(Failure::usage(format!(
                    "unknown cache `{wanted}` in --compare; choose from {}",
                    PEERS.join(", ")
                )));
            };
            // Refused rather than dropped, as a repeated thread count is below: the command
            // line would otherwise ask for something the run does not do.
            if names.contains(&name) {
                return Err(Failure::usage(format!(
                    "--compare: `{name}` is given twice"
                )));
            }
            names.push(name);
        }
        // A count given twice would be measured twice and drawn as two columns of one label,
        // so it is refused, as `sim` refuses a repeated capacity.
        for (i, t) in args.threads.iter().enumerate() {
            if args.threads[..i].contains(t) {
                return Err(Failure::usage(format!("--threads: `{t}` is given twice")));
            }
        }
        Ok(Plan {
            threads: args.threads.clone(),
            slice: Duration::from_secs_f64(args.seconds / f64::from(ROUNDS)),
            names,
        })
    }
}

/// Builds and warms each chosen cache for `workload`, times them in interleaved rounds at
/// `threads` threads, and returns each one's best round.
fn measure(workload: &Workload, threads: usize, plan: &Plan) -> Result<Vec<Measured>, Failure> {
    // Caches of different types cannot share a Vec, so each round visits them all again; the
    // caches built in the first visit are kept in `Bench`'s slots across rounds.
    let mut bench = Bench {
        workload,
        threads,
        plan,
        round: 0,
        best: Vec::new(),
        caches: Vec::new(),
        failure: None,
        progress: Progress::new(
            u64::from(ROUNDS) * plan.names.len() as u64,
            format!("{} at {threads} thread(s)", workload.name),
        ),
    };
    for round in 0..ROUNDS {
        bench.round = round;
        visit_caches(&mut bench);
        if let Some(failure) = bench.failure.take() {
            return Err(failure);
        }
    }
    // Report in the order asked for.
    let mut best = bench.best;
    best.sort_by_key(|m| plan.names.iter().position(|n| *n == m.name));
    Ok(best)
}

/// The visitor that builds, warms and times the chosen caches.
struct Bench<'a> {
    workload: &'a Workload,
    threads: usize,
    plan: &'a Plan,
    round: u32,
    best: Vec<Measured>,
    /// Each chosen cache, built on the first round, as `Box<dyn Any>` (one type per subject).
    caches: Vec<(&'static str, Box<dyn std::any::Any>)>,
    failure: Option<Failure>,
    progress: Progress,
}

impl Visitor for Bench<'_> {
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
        if self.failure.is_some() || !self.plan.names.contains(&subject.name) {
            return;
        }
        if !subject.bounded && !self.workload.include_unbounded {
            if self.round == 0 {
                self.progress.advance(u64::from(ROUNDS));
            }
            return;
        }
        if self.round == 0 {
            self.progress
                .set_message(format!("{}: warming {}", self.workload.name, subject.name));
            let cache = build(self.workload.capacity);
            if let Err(why) = self.workload.prepare(&cache, subject) {
                self.failure = Some(Failure::new(why));
                return;
            }
            self.caches.push((subject.name, Box::new(cache)));
        }
        let Some(cache) = self
            .caches
            .iter()
            .find(|(name, _)| *name == subject.name)
            .and_then(|(_, cache)| cache.downcast_ref::<C>())
        else {
            return;
        };
        self.progress.set_message(format!(
            "{}: {} at {} thread(s)",
            self.workload.name, subject.name, self.threads
        ));
        let (ops_per_sec, hit_ratio) =
            match time_slice(cache, self.workload, self.threads, self.plan.slice) {
                Ok(measured) => measured,
                Err(e) => {
                    self.failure = Some(Failure::new(format!(
                        "could not start the workers for {} at {} thread(s): {e}",
                        self.workload.name, self.threads
                    )));
                    return;
                }
            };
        self.progress.advance(1);
        match self
            .best
            .iter_mut()
            .find(|m| m.name == subject.name && m.threads == self.threads)
        {
            Some(m) if m.ops_per_sec >= ops_per_sec => {}
            Some(m) => {
                m.ops_per_sec = ops_per_sec;
                m.hit_ratio = hit_ratio;
            }
            None => self.best.push(Measured {
                name: subject.name,
                threads: self.threads,
                ops_per_sec,
                hit_ratio,
            }),
        }
    }
}

/// Replays windows of the workload on `threads` workers until `slice` has passed, and returns
/// operations per second (all workers together) and the hit ratio of the gets, if any; or the
/// error of a worker the system refused to start.
fn time_slice<C: BenchCache>(
    cache: &C,
    workload: &Workload,
    threads: usize,
    slice: Duration,
) -> std::io::Result<(f64, Option<f64>)> {
    let windows = AtomicU64::new(0);
    let hits = AtomicU64::new(0);
    let deadline = Instant::now() + slice;
    let elapsed = try_run_threads(threads, |t| {
        let (mut mine, mut my_hits) = (0u64, 0u64);
        // At least one window each, so that a tiny slice still measures something.
        loop {
            my_hits += replay(cache, workload.op, workload.next_window(t));
            mine += 1;
            if Instant::now() >= deadline {
                break;
            }
        }
        // Relaxed: read after the workers are joined, which orders them.
        windows.fetch_add(mine, Ordering::Relaxed);
        hits.fetch_add(my_hits, Ordering::Relaxed);
    })?;
    let ops = windows.load(Ordering::Relaxed) as f64 * OPS_PER_THREAD as f64;
    let reads = matches!(
        workload.op,
        larder_benches::workloads::Op::Get | larder_benches::workloads::Op::GetOrInsert
    );
    let hit_ratio = reads.then(|| hits.load(Ordering::Relaxed) as f64 / ops);
    Ok((ops / elapsed.as_secs_f64().max(1e-9), hit_ratio))
}

/// One table per workload: a row per cache, Mops/s per thread count, larder's ratio to each
/// peer, and the hit ratio where the workload reads.
fn print_table(workload: &Workload, plan: &Plan, results: &[Measured]) {
    outln!();
    outln!(
        "{} (capacity {}): million operations per second, all threads together",
        workload.name,
        workload.capacity
    );
    out!("{}", table(plan, results));
}

/// [`print_table`]'s table, below its title.
fn table(plan: &Plan, results: &[Measured]) -> String {
    let find = |name: &str, threads: usize| {
        results
            .iter()
            .find(|m| m.name == name && m.threads == threads)
    };
    let reads = results.iter().any(|m| m.hit_ratio.is_some());
    let thread_headers: Vec<String> = plan.threads.iter().map(|t| format!("{t} thr")).collect();
    let mut columns = vec![("cache", Align::Left)];
    for header in &thread_headers {
        columns.extend([
            (header.as_str(), Align::Right),
            ("larder/this", Align::Right),
        ]);
    }
    if reads {
        columns.push(("hit ratio", Align::Right));
    }
    let mut table = Table::new(&columns);
    for &name in &plan.names {
        if plan.threads.iter().all(|&t| find(name, t).is_none()) {
            continue; // an unbounded map in a workload it sits out
        }
        let mut row = vec![name.to_owned()];
        for &t in &plan.threads {
            let (mops, ratio) = match (find(name, t), find("larder", t)) {
                (Some(m), Some(l)) => (
                    format!("{:.2}", m.ops_per_sec / 1e6),
                    format!("{:.2}x", l.ops_per_sec / m.ops_per_sec),
                ),
                (Some(m), None) => (format!("{:.2}", m.ops_per_sec / 1e6), "-".to_owned()),
                _ => ("-".to_owned(), "-".to_owned()),
            };
            row.extend([mops, ratio]);
        }
        if reads {
            // The hit ratio at the largest thread count measured, wherever --threads names it.
            let ratio = plan
                .threads
                .iter()
                .filter_map(|&t| Some((t, find(name, t)?.hit_ratio?)))
                .max_by_key(|&(t, _)| t)
                .map(|(_, ratio)| ratio);
            row.push(ratio.map_or("-".to_owned(), |r| format!("{:.2}%", 100.0 * r)));
        }
        table.row(row);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hit ratio column shows the largest thread count's, as the thread columns go in the
    /// order `--threads` gives them: `--threads 2,1` showed the one at 1 thread.
    #[test]
    fn the_hit_ratio_is_the_largest_thread_counts_in_any_order() {
        let measured = |threads, hit_ratio| Measured {
            name: "larder",
            threads,
            ops_per_sec: 1e6,
            hit_ratio: Some(hit_ratio),
        };
        let results = [measured(2, 0.5), measured(1, 0.25)];
        for threads in [vec![1, 2], vec![2, 1]] {
            let plan = Plan {
                threads,
                slice: Duration::from_millis(1),
                names: vec!["larder"],
            };
            let text = table(&plan, &results);
            let row = text.lines().nth(1).unwrap_or_default();
            assert!(row.ends_with("50.00%"), "{:?}: {text}", plan.threads);
        }
    }
}
