//! A durable cache's insert throughput as a ratio to the in-memory cache's, from interleaved
//! runs in one process: the `probe` of `durable_insert`.
//!
//! A criterion cell of `benches/durable.rs` moves by 20–40% between runs on the shared 2-core
//! machine, and its in-memory and durable cells are measured minutes apart. This binary builds
//! both caches as that bench does (every key of 2^17 present, room for twice as many, `u64`
//! keys, `Vec<u8>` values stored with `RawBytes`, the durable one prefilled, closed and reopened
//! in `Manual` or `Interval(1 s)` mode with `Compaction::Manual`), then each round replays
//! `REPS` windows of the same seeded uniform keys on each, alternating, keeps each one's
//! fastest window, and prints their ratio; the median over the rounds is the figure.
//!
//! **Two regimes at 1 KiB.** The log grows by about 30 MB per thread a round at 64 B, and
//! stays in page-cache memory the machine has handed out before. At 1 KiB it grows by about
//! 340 MB per thread a round, and after a gigabyte or two it reaches memory this VM hands out
//! at several microseconds a page, as criterion's runs do (`docs/BENCHMARKS.md`,
//! "Durability"): on 2026-12-02, `-- 1 1024 8` ran its durable cache at 1,574–1,730 ns per
//! insert in rounds 1 to 4 (ratio 0.59–0.68) and 2,623–3,032 ns from round 6 on (0.36–0.42),
//! in two runs alike, while the in-memory cache stayed at 974–1,166. A median over rounds at
//! 1 KiB therefore says how many rounds ran in each regime; read the rounds, and compare two
//! builds round by round.
//!
//! Run: `cargo run --release -p larder-benches --bin durable_probe -- THREADS VALUE_BYTES
//! [ROUNDS [manual|interval]]`, e.g. `-- 1 1024`; ROUNDS defaults to 5, the mode to `manual`.

use std::process::ExitCode;
use std::time::Duration;

use larder::durable::{Compaction, RawBytes};
use larder::{Cache, Durability, IntoDurable};
use larder_benches::{median_and_range, run_threads, thread_seed, uniform_keys, DurableInsert};

/// The key space; every key is present before the timing starts.
const KEYS: u64 = 1 << 17;
/// Inserts per worker per window.
const WINDOW: usize = 1 << 16;
/// Windows per cache per round; the fastest counts.
const REPS: usize = 5;

/// Nanoseconds per insert per thread of the fastest of `REPS` windows of `keys`.
fn fastest(cache: &impl DurableInsert, keys: &[Vec<u64>], value: &[u8]) -> f64 {
    let best = (0..REPS)
        .map(|_| {
            run_threads(keys.len(), |t| {
                for &key in &keys[t] {
                    cache.insert(key, value.to_vec());
                }
            })
        })
        .min()
        .unwrap_or(Duration::MAX);
    best.as_nanos() as f64 / WINDOW as f64
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("durable_probe: {problem}");
    eprintln!("usage: durable_probe THREADS VALUE_BYTES [ROUNDS [manual|interval]]");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(Ok(threads @ 1..=64)) = args.first().map(|s| s.parse::<usize>()) else {
        return usage("THREADS must be a number from 1 to 64");
    };
    let Some(Ok(size @ 1..=1_048_576)) = args.get(1).map(|s| s.parse::<usize>()) else {
        return usage("VALUE_BYTES must be a number from 1 to 1048576");
    };
    let rounds = match args.get(2).map(|s| s.parse::<usize>()) {
        None => 5,
        Some(Ok(r)) if r > 0 => r,
        _ => return usage("ROUNDS must be a positive number"),
    };
    let durability = match args.get(3).map(String::as_str) {
        None | Some("manual") => Durability::Manual,
        Some("interval") => Durability::Interval(Duration::from_secs(1)),
        Some(other) => return usage(&format!("unknown mode {other:?}")),
    };
    let dir = std::env::temp_dir().join(format!("larder-durable-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let value = vec![0x5Au8; size];
    let durable = |durability| {
        Cache::builder()
            .max_capacity(2 * KEYS)
            .durable(&dir)
            .durability(durability)
            .compaction(Compaction::Manual)
            .value_codec(RawBytes)
            .build()
    };
    let in_memory: Cache<u64, Vec<u8>> = match Cache::builder().max_capacity(2 * KEYS).build() {
        Ok(cache) => cache,
        Err(e) => return usage(&e.to_string()),
    };
    let prefill = match durable(Durability::Manual) {
        Ok(cache) => cache,
        Err(e) => return usage(&format!("{}: {e}", dir.display())),
    };
    for key in 0..KEYS {
        in_memory.insert(key, value.clone());
        if let Err(e) = prefill.insert(key, value.clone()) {
            return usage(&e.to_string());
        }
    }
    if let Err(e) = prefill.close() {
        return usage(&e.to_string());
    }
    let on_disk = match durable(durability) {
        Ok(cache) => cache,
        Err(e) => return usage(&e.to_string()),
    };
    println!(
        "{threads} thread(s), {size}-byte values, {durability:?}: fastest of {REPS} windows of \
         {WINDOW} inserts per thread"
    );
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let keys: Vec<Vec<u64>> = (0..threads)
            .map(|t| uniform_keys(KEYS, WINDOW, thread_seed(0x5EED_00E0 + round as u64, t)))
            .collect();
        let memory_ns = fastest(&in_memory, &keys, &value);
        let durable_ns = fastest(&on_disk, &keys, &value);
        let ratio = memory_ns / durable_ns;
        println!(
            "round {round}: in-memory {memory_ns:.0} ns/insert, durable {durable_ns:.0} ns/insert \
             (per thread), durable/in-memory throughput {ratio:.2}"
        );
        ratios.push(ratio);
    }
    drop(on_disk);
    let _ = std::fs::remove_dir_all(&dir);
    let (median, low, high) = median_and_range(&mut ratios);
    println!(
        "median durable/in-memory throughput over {rounds} rounds: {median:.2} (range {low:.2}-{high:.2})"
    );
    ExitCode::SUCCESS
}
