//! What compacting a log costs the thread that runs it, per record read.
//!
//! The janitor compacts a durable cache's log on its own thread, so a compaction's time is
//! taken from the cores the writers use: in a profile of the `durable` bench's
//! `interval_1s_auto_compaction/64B/2`, about a sixth of all samples were the janitor's
//! (`docs/BENCHMARKS.md`, "What a compaction costs its thread"). This
//! binary times [`Compactor::run`](larder_log::Compactor::run) alone, the phase that reads the
//! inputs, indexes their keys and writes the survivors, on a log shaped like that bench's: 2^17
//! keys, each round appending puts in a seeded uniform order (eight per key with 64-byte
//! values, then, on a log of its own, two per key with 1 KiB values), then compacting
//! everything before the active segment (the last round's snapshot and the new segments). It
//! prints the thread's CPU time per input record, which leaves out the time spent waiting for
//! the disk to sync the output, the wall time, and the most heap the run held at once
//! (counted by a global allocator; the inputs and outputs are file maps, not heap).
//!
//! Run: `cargo run --release -p larder-benches --bin compaction_cost [ROUNDS]` (default 3).

use std::time::{Duration, Instant};

use larder_benches::counting::{live, peak, reset_peak, Counting};
use larder_benches::{rounds_from_args, uniform_keys};
use larder_log::format::Op;
use larder_log::{Log, Options};

/// The key space, as in `benches/durable.rs`.
const KEYS: u64 = 1 << 17;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and CLOCK_THREAD_CPUTIME_ID is supported on
    // every Linux this runs on; a failure leaves it zero, which the output would show.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let rounds = rounds_from_args(3);
    for (value_len, writes) in [(64usize, 8u64), (1024, 2)] {
        let dir = std::env::temp_dir().join(format!(
            "larder-compaction-cost-{}-{value_len}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = Log::open(&dir, Options::default(), |_| {}).expect("the log opens");
        let value = vec![0x5A; value_len];
        println!("{value_len} B values, {writes} puts per key a round:");
        for round in 1..=rounds {
            let keys = uniform_keys(KEYS, (KEYS * writes) as usize, round as u64);
            for key in keys {
                log.append(Op::Put {
                    key: &key.to_le_bytes(),
                    value: &value,
                    expires_at_ms: 0,
                })
                .expect("appended");
            }
            log.sync().expect("synced");
            let job = log.begin_compaction().expect("begun");
            let before = live();
            reset_peak();
            let (cpu, wall) = (thread_cpu(), Instant::now());
            let done = job.run(0).expect("compacted");
            let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
            let heap = peak() - before;
            let report = done.report();
            log.install(done)
                .expect("installed")
                .remove()
                .expect("removed");
            println!(
                "  round {round}: {} records read, {} kept: {:.1} ns of CPU per record read, \
                 {wall:.1?} in all, {:.1} MB of heap at most",
                report.records_before,
                report.records_after,
                cpu.as_nanos() as f64 / report.records_before as f64,
                heap as f64 / 1e6,
            );
        }
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
