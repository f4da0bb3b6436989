//! `larder sim`: replay traces against Larder's policies and its peers, and report hit ratios
//! per capacity.
//!
//! ```text
//! larder sim OLTP.lis.zst lirs/loop --capacity 256,512,1000 --compare moka,lru --opt
//! ```
//!
//! # Method
//!
//! Every figure is a single-threaded cache-aside replay ([`larder_trace::replay`]), the same
//! loop `benches/src/bin/hitratio.rs` measures with: for each key, `get`; on a miss,
//! `insert(key, key)`. Hits are counted from what `get` returned, never from a cache's own
//! statistics, so every column is counted the same way. Each (trace, capacity, cache) starts
//! from a fresh, empty cache, and every request counts (no warm-up is discarded).
//!
//! The caches are built as [`larder_benches::visit_caches`] builds them for the benchmarks, that
//! is, as their users get them out of the box; `sim` replays the ones named on its command line.
//! moka and mini-moka apply their policy lazily, in batches drained on the caller's thread; by
//! default the replay does not force a drain after each call, as an application would not, so
//! their figures include that delay (entries can briefly overfill the cache). `--settle` drains
//! them after every insert ([`BenchCache::settle`]: moka's `run_pending_tasks`), so that they
//! never hold more than their capacity, at the cost of speed; Larder, which applies its policy
//! inline, is not settled. Either way their figures, like quick_cache's and Larder's, can differ
//! in the second decimal from run to run: their hashers are seeded at random, and the frequency
//! sketches that decide admission collide differently.
//!
//! The references are exact and deterministic ([`larder_trace::reference`]): `--compare lru` is
//! exact LRU, computed for every capacity in one pass from stack distances ([`LruCurve`]), and
//! `--opt` is Bélády's optimum for a cache that admits every missed key ([`Belady`]), the bound
//! the traces README tabulates. A cache with an admission filter (moka's TinyLFU) may decline a
//! newcomer and so can pass that bound by a little.
//!
//! # Output
//!
//! A table on stdout, one row per trace and capacity, one column per policy or peer, hit ratios
//! in percent with two decimals; each trace's request and distinct-key counts above it. With
//! `--json`, one JSON document instead ([`json`] shows its shape). With `--plot`, a chart of
//! hit ratio against capacity as well ([`plot`]).

mod plot;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use larder_benches::{visit_caches, BenchCache, Subject, Visitor};
use larder_trace::read::{read_trace_with, Trace, TraceError, TraceFormat};
use larder_trace::reference::{Belady, LruCurve};
use larder_trace::replay::{replay, FnCache, ReplayStats};
use larder_trace::traces;

use crate::failure::Failure;
use crate::progress::Progress;
use crate::table::{Align, Table};

/// The arguments of `larder sim`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Replay traces against cache policies and peers, and report hit ratios per capacity",
    after_help = "Traces are ARC (`start count x y` lines), LIRS or plain text (one key a line, \
                  `*` lines skipped) or cache2k binary (little-endian 4-byte keys), raw or \
                  compressed with zstd, gzip or xz. A TRACE that is not a file but a shared \
                  trace name (`OLTP`, `lirs/loop`) reads that trace from $LARDER_TRACES or \
                  <workspace>/../shared/traces."
)]
pub struct Args {
    /// Trace files to replay, each in turn.
    #[arg(required = true, value_name = "TRACE")]
    traces: Vec<PathBuf>,

    /// Cache capacities in entries, comma-separated: each trace is replayed at each one.
    #[arg(long, value_name = "N,...")]
    capacity: String,

    /// Larder policies to replay, comma-separated: s3fifo, lru (Larder's CLOCK), or none.
    #[arg(long, value_name = "NAME,...", default_value = "s3fifo")]
    policy: String,

    /// Peers to replay in this process on the same keys, comma-separated: moka, quick_cache,
    /// mini_moka, and lru (the exact-LRU reference).
    #[arg(long, value_name = "NAME,...")]
    compare: Option<String>,

    /// Add Bélády's optimum (OPT), the upper bound no policy that admits every miss can pass.
    #[arg(long)]
    opt: bool,

    /// The traces' format instead of detecting it: arc, lirs (the same as plain), plain or
    /// cache2k.
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,

    /// Also write a chart of hit ratio against capacity, one curve per policy or peer and one
    /// panel per trace: SVG or PNG, by the file's extension.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,

    /// After every insert, make caches that apply their policy lazily (moka, mini_moka) apply
    /// it at once, so they never hold more than their capacity (slower).
    #[arg(long)]
    settle: bool,

    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One column of the results: something replayed at every capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    /// A Larder cache with this policy.
    Larder(larder::Policy),
    /// A peer, by its [`Subject`] name in [`visit_caches`].
    Peer(&'static str),
    /// Exact LRU.
    ExactLru,
    /// Bélády's optimum, admitting every miss.
    Opt,
}

/// `--policy` names and what they stand for.
const POLICIES: &[(&str, larder::Policy)] = &[
    ("s3fifo", larder::Policy::S3Fifo),
    ("lru", larder::Policy::Lru),
];

/// `--compare` names and what they stand for.
const PEERS: &[(&str, Column)] = &[
    ("moka", Column::Peer("moka")),
    ("quick_cache", Column::Peer("quick_cache")),
    ("mini_moka", Column::Peer("mini_moka")),
    ("lru", Column::ExactLru),
];

impl Column {
    /// The column's heading, also its name in JSON and in the plot's legend.
    fn label(self) -> String {
        match self {
            Column::Larder(policy) => {
                let name = POLICIES
                    .iter()
                    .find(|(_, p)| *p == policy)
                    .map_or("?", |(name, _)| name);
                format!("larder {name}")
            }
            Column::Peer(name) => name.to_owned(),
            Column::ExactLru => "exact LRU".to_owned(),
            Column::Opt => "OPT".to_owned(),
        }
    }

    /// The [`visit_caches`] subject that builds this column's cache, for the columns that are
    /// caches rather than references.
    fn subject(self) -> Option<&'static str> {
        match self {
            Column::Larder(larder::Policy::Lru) => Some("larder_lru"),
            Column::Larder(_) => Some("larder"),
            Column::Peer(name) => Some(name),
            Column::ExactLru | Column::Opt => None,
        }
    }
}

/// What the command line asks for, checked.
#[derive(Debug)]
struct Plan {
    /// Each TRACE argument as given, and the file it names.
    traces: Vec<(String, PathBuf)>,
    format: Option<TraceFormat>,
    capacities: Vec<usize>,
    columns: Vec<Column>,
    plot: Option<crate::plot::Target>,
}

/// One trace's results.
#[derive(Debug)]
struct TraceResults {
    /// The trace as named on the command line.
    label: String,
    trace: Trace,
    unique_keys: usize,
    /// `stats[capacity][column]`, in the plan's orders.
    stats: Vec<Vec<ReplayStats>>,
}

/// Everything `sim` measured, in the plan's orders.
#[derive(Debug)]
struct Report {
    capacities: Vec<usize>,
    columns: Vec<Column>,
    traces: Vec<TraceResults>,
}

/// Runs `larder sim`.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    let plan = plan(args)?;
    let mut traces = Vec::with_capacity(plan.traces.len());
    for (label, path) in plan.traces {
        let trace = load(&path, plan.format)?;
        traces.push(TraceResults {
            label,
            unique_keys: trace.unique_keys(),
            stats: Vec::new(),
            trace,
        });
    }
    let mut report = Report {
        capacities: plan.capacities,
        columns: plan.columns,
        traces,
    };
    measure(&mut report, args.settle);
    if args.json {
        outln!("{:#}", json(&report));
    } else {
        out!("{}", table(&report));
    }
    if let Some(target) = &plan.plot {
        crate::plot::write(target, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks the command line, before any trace is read.
fn plan(args: &Args) -> Result<Plan, Failure> {
    let capacities = parse_list("--capacity", &args.capacity, |item| {
        match item.parse::<usize>() {
            Ok(0) => Err("a capacity must be at least 1".to_owned()),
            Ok(capacity) => Ok(capacity),
            Err(_) => Err(format!(
                "`{item}` is not a whole number of entries, from 1 to {}",
                usize::MAX
            )),
        }
    })?;
    let mut columns = if args.policy.trim() == "none" {
        Vec::new()
    } else {
        parse_list("--policy", &args.policy, |item| {
            lookup(POLICIES, item)
                .map(Column::Larder)
                .ok_or_else(|| unknown("policy", item, POLICIES))
        })?
    };
    if let Some(compare) = &args.compare {
        columns.extend(parse_list("--compare", compare, |item| {
            lookup(PEERS, item).ok_or_else(|| unknown("peer", item, PEERS))
        })?);
    }
    if args.opt {
        columns.push(Column::Opt);
    }
    if columns.is_empty() {
        return Err(Failure::usage(
            "nothing to replay: --policy none needs --compare or --opt",
        ));
    }
    let format = args
        .format
        .as_deref()
        .map(str::parse::<TraceFormat>)
        .transpose()
        .map_err(Failure::usage)?;
    let plot = args
        .plot
        .as_deref()
        .map(crate::plot::Target::new)
        .transpose()?;
    let traces: Vec<(String, PathBuf)> = args
        .traces
        .iter()
        .map(|t| (t.display().to_string(), resolve(t)))
        .collect();
    if let Some(target) = &plot {
        target.check_size(plot::size(args.traces.len()))?;
        for (label, path) in &traces {
            target.check_not_over(path, &format!("the trace {label}"))?;
        }
    }
    Ok(Plan {
        traces,
        format,
        capacities,
        columns,
        plot,
    })
}

/// Splits a comma-separated option value and parses each item, refusing an empty list and
/// repeated items (a repeated column or capacity would only print the same figures twice).
fn parse_list<T: PartialEq>(
    option: &str,
    value: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, Failure> {
    let mut items = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(Failure::usage(format!(
                "{option} `{value}`: expected a comma-separated list with no empty item"
            )));
        }
        let parsed = parse(item).map_err(|e| Failure::usage(format!("{option}: {e}")))?;
        if items.contains(&parsed) {
            return Err(Failure::usage(format!("{option}: `{item}` is given twice")));
        }
        items.push(parsed);
    }
    Ok(items)
}

fn lookup<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}

fn unknown<T>(what: &str, name: &str, table: &[(&str, T)]) -> String {
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    format!(
        "unknown {what} `{name}` (expected one of: {})",
        names.join(", ")
    )
}

/// A TRACE argument as a path: itself if it exists, else the shared trace it names, if it names
/// one, else itself (so that reading it reports the missing file).
fn resolve(argument: &Path) -> PathBuf {
    if argument.exists() {
        return argument.to_owned();
    }
    argument
        .to_str()
        .and_then(|name| traces::trace_path(name).ok())
        .filter(|shared| shared.exists())
        .unwrap_or_else(|| argument.to_owned())
}

/// Reads one trace, reporting a failure in one line that names the file.
fn load(path: &Path, format: Option<TraceFormat>) -> Result<Trace, Failure> {
    read_trace_with(path, format).map_err(|error| {
        let mut message = match error {
            // It names the file already.
            TraceError::Io { .. } => error.to_string(),
            _ => format!("{}: {error}", path.display()),
        };
        let mut source = error.source();
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        Failure::new(message)
    })
}

/// Fills every trace's `stats`: the caches through [`visit_caches`], then the references.
fn measure(report: &mut Report, settle: bool) {
    let replays_per_trace = report.capacities.len() * report.columns.len();
    let total: usize = report
        .traces
        .iter()
        .map(|t| t.trace.keys.len() * replays_per_trace)
        .sum();
    let mut progress = Progress::new(total as u64, "replaying");
    for results in &mut report.traces {
        results.stats =
            vec![vec![ReplayStats::default(); report.columns.len()]; report.capacities.len()];
    }
    let mut replayer = Replayer {
        report,
        progress: &mut progress,
        settle,
    };
    visit_caches(&mut replayer);
    measure_references(report, &mut progress);
}

/// Replays every trace at every capacity against the caches the report's columns name.
struct Replayer<'a> {
    report: &'a mut Report,
    progress: &'a mut Progress,
    /// Whether to [`BenchCache::settle`] after every insert (`--settle`).
    settle: bool,
}

impl Visitor for Replayer<'_> {
    fn visit<C: BenchCache + 'static>(&mut self, subject: Subject, build: fn(usize) -> C) {
        let Some(column) = self
            .report
            .columns
            .iter()
            .position(|c| c.subject() == Some(subject.name))
        else {
            return;
        };
        let label = self.report.columns[column].label();
        self.progress.set_message(format!("replaying {label}"));
        // Only the peers apply their policy lazily. Larder applies it inline: its `settle` is
        // for the memory bench (2^15 epoch flushes a call) and would change no figure here.
        let settle = self.settle && matches!(self.report.columns[column], Column::Peer(_));
        for results in &mut self.report.traces {
            let keys = &results.trace.keys;
            let capacities = &self.report.capacities;
            fill(
                &mut results.stats,
                column,
                capacities,
                keys,
                self.progress,
                |capacity| {
                    // A hit is a `get` that returns a value; the value stored is the key itself.
                    let cache = build(capacity);
                    let cache_aside = FnCache::new(
                        |key| cache.get(&key).is_some(),
                        |key| {
                            cache.insert(key, key);
                            if settle {
                                cache.settle();
                            }
                        },
                    );
                    replay(keys, cache_aside)
                },
            );
        }
    }
}

/// Fills the exact-LRU and OPT columns. Each reference's set-up is its costly part and is done
/// once per trace: a stack-distance pass gives LRU at every capacity, and OPT's next-use table
/// serves a replay per capacity.
fn measure_references(report: &mut Report, progress: &mut Progress) {
    for results in &mut report.traces {
        for (column, &kind) in report.columns.iter().enumerate() {
            let keys = &results.trace.keys;
            let model: Box<dyn Fn(usize) -> ReplayStats> = match kind {
                Column::ExactLru => {
                    let curve = LruCurve::new(keys);
                    Box::new(move |capacity| curve.replay(capacity))
                }
                Column::Opt => {
                    let belady = Belady::new(keys);
                    Box::new(move |capacity| belady.replay(capacity))
                }
                Column::Larder(_) | Column::Peer(_) => continue,
            };
            progress.set_message(kind.label());
            fill(
                &mut results.stats,
                column,
                &report.capacities,
                keys,
                progress,
                model,
            );
        }
    }
}

/// Fills `column` of one trace's `stats` with `replay_at(capacity)` at every capacity, each a
/// replay of `keys`.
fn fill(
    stats: &mut [Vec<ReplayStats>],
    column: usize,
    capacities: &[usize],
    keys: &[u64],
    progress: &mut Progress,
    replay_at: impl Fn(usize) -> ReplayStats,
) {
    for (at, &capacity) in capacities.iter().enumerate() {
        stats[at][column] = replay_at(capacity);
        progress.advance(keys.len() as u64);
    }
}

/// The results as a table: each trace's size, then one row per trace and capacity.
fn table(report: &Report) -> String {
    let mut out = String::new();
    for results in &report.traces {
        out += &format!(
            "{}: {} requests, {} distinct keys ({}, {})\n",
            results.label,
            results.trace.keys.len(),
            results.unique_keys,
            results.trace.format,
            results.trace.compression,
        );
    }
    out.push('\n');
    // The trace name reads left to right; numbers line up on the right.
    let labels: Vec<String> = report.columns.iter().map(|c| c.label()).collect();
    let mut columns = vec![("trace", Align::Left), ("capacity", Align::Right)];
    columns.extend(labels.iter().map(|l| (l.as_str(), Align::Right)));
    let mut rows = Table::new(&columns);
    for results in &report.traces {
        for (at, capacity) in report.capacities.iter().enumerate() {
            let ratios = results.stats[at]
                .iter()
                .map(|stats| format!("{:.2}", stats.hit_ratio()));
            rows.row(
                [results.label.clone(), capacity.to_string()]
                    .into_iter()
                    .chain(ratios),
            );
        }
    }
    out += &rows.render();
    out += "\nHit ratios in percent, single-threaded cache-aside replay.\n";
    out
}

/// The results as JSON:
///
/// ```json
/// {
///   "columns": ["larder s3fifo", "exact LRU", "OPT"],
///   "traces": [{
///     "trace": "OLTP.lis.zst", "format": "arc", "compression": "zstd",
///     "requests": 914145, "unique_keys": 186880,
///     "results": [{"capacity": 256, "cache": "exact LRU", "hits": 152599, "hit_ratio": 16.693…}]
///   }]
/// }
/// ```
///
/// `results` holds one object per capacity and column; `hit_ratio` is in percent, unrounded.
fn json(report: &Report) -> serde_json::Value {
    let labels: Vec<String> = report.columns.iter().map(|c| c.label()).collect();
    let traces: Vec<serde_json::Value> = report
        .traces
        .iter()
        .map(|results| {
            let mut points = Vec::new();
            for (at, capacity) in report.capacities.iter().enumerate() {
                for (label, stats) in labels.iter().zip(&results.stats[at]) {
                    points.push(serde_json::json!({
                        "capacity": capacity,
                        "cache": label,
                        "hits": stats.hits,
                        "hit_ratio": stats.hit_ratio(),
                    }));
                }
            }
            serde_json::json!({
                "trace": results.label,
                "format": results.trace.format.name(),
                "compression": results.trace.compression.to_string(),
                "requests": results.trace.keys.len(),
                "unique_keys": results.unique_keys,
                "results": points,
            })
        })
        .collect();
    serde_json::json!({ "columns": labels, "traces": traces })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacities(value: &str) -> Result<Vec<usize>, String> {
        parse_list("--capacity", value, |item| {
            item.parse::<usize>().map_err(|e| e.to_string())
        })
        .map_err(|failure| failure.to_string())
    }

    #[test]
    fn lists_are_trimmed_and_refuse_empty_and_repeated_items() {
        assert_eq!(capacities(" 1, 2 ,3"), Ok(vec![1, 2, 3]));
        assert!(capacities("").unwrap_err().contains("no empty item"));
        assert!(capacities("1,").unwrap_err().contains("no empty item"));
        assert!(capacities("2,1,2")
            .unwrap_err()
            .contains("`2` is given twice"));
        assert!(capacities("x").unwrap_err().starts_with("--capacity: "));
    }

    #[test]
    fn every_name_maps_to_its_column_and_back_to_a_distinct_label() {
        let mut labels: Vec<String> = POLICIES
            .iter()
            .map(|&(_, policy)| Column::Larder(policy))
            .chain(PEERS.iter().map(|&(_, column)| column))
            .chain([Column::Opt])
            .map(Column::label)
            .collect();
        assert_eq!(labels[..2], ["larder s3fifo", "larder lru"]);
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), POLICIES.len() + PEERS.len() + 1);
        // Only caches have a subject, and each names one `visit_caches` builds.
        assert_eq!(Column::ExactLru.subject(), None);
        assert_eq!(
            Column::Larder(larder::Policy::Lru).subject(),
            Some("larder_lru")
        );
    }

    #[test]
    fn the_table_aligns_numbers_right_and_names_left() {
        let report = Report {
            capacities: vec![5, 1000],
            columns: vec![Column::ExactLru],
            traces: vec![TraceResults {
                label: "t".to_owned(),
                trace: Trace {
                    keys: vec![1, 1, 1, 2],
                    format: TraceFormat::Plain,
                    compression: larder_trace::read::Compression::None,
                },
                unique_keys: 2,
                stats: vec![
                    vec![ReplayStats { hits: 2, misses: 2 }],
                    vec![ReplayStats { hits: 1, misses: 3 }],
                ],
            }],
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "t: 4 requests, 2 distinct keys (plain, uncompressed)"
        );
        assert_eq!(lines[2], "trace  capacity  exact LRU");
        assert_eq!(lines[3], "t             5      50.00");
        assert_eq!(lines[4], "t          1000      25.00");
    }
}
