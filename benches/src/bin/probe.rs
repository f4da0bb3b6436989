//! Larder's throughput as a ratio to quick_cache's (or any bench subject's to another's), from
//! interleaved runs in one process.
//!
//! On the shared 2-core machine a criterion cell (`benches/throughput.rs`) moves by 20–40%
//! between runs, so a change worth 10% cannot be seen there. This binary answers the narrower
//! question a change raises, "is Larder faster or slower against quick_cache than before?":
//! each round builds and warms both caches, replays `REPS` windows of the workload's key streams
//! on each (Larder first, then quick_cache), keeps each one's fastest window, and prints their
//! ratio; the median over the rounds resolves differences of about 5%. Run it before and after a
//! change, on an otherwise quiet machine.
//!
//! **The fastest window and all of them.** The fastest window is the least disturbed by the
//! machine, which is what a comparison of two builds wants. It is not what a caller gets: at
//! two threads a cache whose threads sometimes collide (every quick_cache operation takes a
//! shard lock) has fast windows and slow ones, two to three times apart, and the fastest shows
//! only the first kind (`docs/BENCHMARKS.md`, "The fastest window, and all of them"). So each
//! round also prints the ratio of each cache's operations over all its windows to the time
//! they took, closer to criterion's averages, and the last line its median.
//!
//! **Comparing two builds.** The ratio is a fair comparison of two caches *in one binary*. Across
//! two binaries it is not enough: the baseline's own speed moves with the binary too (code and
//! data land at other addresses), so a ratio can rise while the subject did not get faster. On
//! 2026-12-02 two builds that differed only in the field order of Larder's shard gave
//! `insert_only 1` ratios of 0.41 and 0.52, but Larder's own time moved from 175–187 to
//! 162–177 ns per insert while quick_cache's moved from 63–76 to 77–93. So the last line also
//! prints each cache's median time: compare the subject's time between the builds, alternating
//! them, and read the baseline's time as the control that says whether the machine, or the
//! binary, moved under both.
//!
//! The workloads are the criterion bench's (`larder_benches::workloads`).
//!
//! Run: `cargo run --release -p larder-benches --bin probe -- WORKLOAD THREADS [ROUNDS
//! [SUBJECT BASELINE]]`, with WORKLOAD one of `read_hits`, `cache_aside`, `insert_only`;
//! THREADS 1 or 2 as in the bench, or more (up to 64) to see how a cache behaves with more
//! threads than cores; ROUNDS default 6; SUBJECT and BASELINE two of the bench's cache names,
//! default `larder` and `quick_cache` (`read_hits 2 6 larder_ttl larder` prices expiry).

use std::process::ExitCode;
use std::time::Duration;

use larder_benches::workloads::{replay, Workload, OPS_PER_THREAD};
use larder_benches::{median_and_range, run_threads, visit_caches, BenchCache, Subject, Visitor};

/// Replays per cache per round; the fastest counts.
const REPS: usize = 20;
/// The most threads a run may ask for (each has a 32 MB key stream).
const MAX_THREADS: usize = 64;

/// Times the two subjects of one round.
struct Round<'w> {
    workload: &'w Workload,
    threads: usize,
    /// The subject and the baseline it is compared with.
    names: [&'w str; 2],
    /// Nanoseconds per operation per thread, in visiting order: of the fastest window, and
    /// over all the windows.
    ns_per_op: Vec<(&'static str, Timed)>,
}

/// One cache's windows in one round, in nanoseconds per operation per thread.
#[derive(Clone, Copy)]
struct Timed {
    fastest: f64,
    /// Every window's operations over every window's time: what a caller sees on average.
    overall: f64,
}

impl Round<'_> {
    fn ns_of(&self, name: &str) -> Option<Timed> {
        self.ns_per_op.iter().find(|(n, _)| *n == name).map(|e| e.1)
    }
}

impl Visitor for Round<'_> {
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
        if !self.names.contains(&subject.name) {
            return;
        }
        let cache = build(self.workload.capacity);
        self.workload
            .prepare(&cache, subject)
            .unwrap_or_else(|e| panic!("{e}"));
        let windows: Vec<Duration> = (0..REPS)
            .map(|_| {
                run_threads(self.threads, |t| {
                    replay(&cache, self.workload.op, self.workload.next_window(t));
                })
            })
            .collect();
        let fastest = windows.iter().min().copied().unwrap_or(Duration::MAX);
        let total: Duration = windows.iter().sum();
        let timed = Timed {
            fastest: fastest.as_nanos() as f64 / OPS_PER_THREAD as f64,
            overall: total.as_nanos() as f64 / (OPS_PER_THREAD * REPS) as f64,
        };
        self.ns_per_op.push((subject.name, timed));
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("probe: {problem}");
    eprintln!("usage: probe read_hits|cache_aside|insert_only THREADS [ROUNDS [SUBJECT BASELINE]]");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = match args.get(1).map(|s| s.parse::<usize>()) {
        Some(Ok(t)) if (1..=MAX_THREADS).contains(&t) => t,
        _ => return usage(&format!("THREADS must be a number from 1 to {MAX_THREADS}")),
    };
    let workload = match args.first().map(String::as_str) {
        Some("read_hits") => Workload::read_hits_for(threads),
        Some("cache_aside") => Workload::cache_aside_for(threads),
        Some("insert_only") => Workload::insert_only_for(threads),
        Some(other) => return usage(&format!("unknown workload {other:?}")),
        None => return usage("no workload given"),
    };
    let rounds = match args.get(2).map(|s| s.parse::<usize>()) {
        None => 6,
        Some(Ok(r)) if r > 0 => r,
        _ => return usage("ROUNDS must be a positive number"),
    };
    let names = match (args.get(3), args.get(4)) {
        (None, None) => ["larder", "quick_cache"],
        (Some(a), Some(b)) if a != b => [a.as_str(), b.as_str()],
        _ => return usage("give two different cache names, or none"),
    };
    let [subject, baseline] = names;
    println!(
        "{} at {threads} thread(s): fastest of {REPS} windows of {OPS_PER_THREAD} keys per thread",
        workload.name
    );
    let mut ratios = Vec::with_capacity(rounds);
    let mut overall_ratios = Vec::with_capacity(rounds);
    let mut subject_ns = Vec::with_capacity(rounds);
    let mut baseline_ns = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let mut r = Round {
            workload: &workload,
            threads,
            names,
            ns_per_op: Vec::new(),
        };
        visit_caches(&mut r);
        let (Some(ours), Some(theirs)) = (r.ns_of(subject), r.ns_of(baseline)) else {
            return usage(&format!(
                "the benches list no cache named {subject} or {baseline}"
            ));
        };
        // Throughput ratio: the baseline's time per op over the subject's.
        let ratio = theirs.fastest / ours.fastest;
        let overall = theirs.overall / ours.overall;
        println!(
            "round {round}: {subject} {:.1} ns/op, {baseline} {:.1} ns/op \
             (per op per thread), {subject}/{baseline} throughput {ratio:.2}; \
             over all windows {:.1} and {:.1} ns/op, {overall:.2}",
            ours.fastest, theirs.fastest, ours.overall, theirs.overall
        );
        ratios.push(ratio);
        overall_ratios.push(overall);
        subject_ns.push(ours.fastest);
        baseline_ns.push(theirs.fastest);
    }
    let (median, low, high) = median_and_range(&mut ratios);
    let (o_median, o_low, o_high) = median_and_range(&mut overall_ratios);
    let (ours, ours_low, ours_high) = median_and_range(&mut subject_ns);
    let (theirs, theirs_low, theirs_high) = median_and_range(&mut baseline_ns);
    println!(
        "median {subject}/{baseline} throughput over {rounds} rounds: {median:.2} (range {low:.2}-{high:.2}); \
         median ns/op {subject} {ours:.1} ({ours_low:.1}-{ours_high:.1}), \
         {baseline} {theirs:.1} ({theirs_low:.1}-{theirs_high:.1})"
    );
    println!(
        "median {subject}/{baseline} throughput over all windows: {o_median:.2} \
         (range {o_low:.2}-{o_high:.2})"
    );
    ExitCode::SUCCESS
}
