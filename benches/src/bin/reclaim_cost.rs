//! What freeing through the epoch costs a write at one and at two threads, and whether two
//! threads that write to caches of their own still slow each other down.
//!
//! Part one times crossbeam-epoch's building blocks, 4M iterations per thread, with one thread
//! and then with two threads each running the same loop on its own (they share nothing but the
//! process): a pin plus a 40-byte box freed at once, and a pin plus a box freed through the
//! epoch with one deferred call per box, as Larder's writers once freed every node they
//! evicted. crossbeam gathers deferred calls in bags on a queue every thread shares and runs
//! them on whichever thread collects next, so at two threads one thread's boxes are freed by
//! the other.
//!
//! Part two does the same with whole caches: inserts of new keys (uniform over ten times the
//! capacity) into a full cache, so that nearly every insert evicts, on one thread, and then on
//! two threads that each write to a cache of their own. Larder frees what a thread evicts on
//! that thread (`larder_core::raw::limbo`); a cache that does so should cost the same per insert
//! either way. quick_cache, which frees nothing through an epoch, is the control. Figures are
//! nanoseconds per insert per thread, the fastest of the rounds.
//!
//! Part three prices the parts of a scheme with *asymmetric* fences, the read-side step left
//! (`docs/ARCHITECTURE.md`, "What the pin costs, and the next step"): a reader that publishes
//! its epoch with a plain store and a compiler fence, against crossbeam-epoch's pin, whose
//! store is a locked read-modify-write; and the fence such a scheme's reclaimer must issue
//! for every thread instead, Linux's `membarrier` (private expedited), timed with the rest of
//! the process idle and with one other thread of it running (the barrier then interrupts
//! that thread's core, here through the hypervisor).
//!
//! Run: `cargo run --release -p larder-benches --bin reclaim_cost [ROUNDS]` (default 3).

use std::hint::black_box;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::time::Instant;

use larder_benches::{
    pin_and_defer_a_free, rounds_from_args, run_threads, thread_seed, uniform_keys, BenchCache,
};

/// Iterations per thread per building block.
const BLOCK_ITERS: u32 = 4_000_000;
/// Timed inserts per thread per round.
const INSERTS: usize = 2_000_000;
const CAPACITIES: [usize; 2] = [10_000, 100_000];

/// Nanoseconds per iteration of `f`, averaged over `threads` threads each running it
/// `BLOCK_ITERS` times.
fn per_iter(threads: usize, f: impl Fn(u32) + Sync) -> f64 {
    let wall = run_threads(threads, |_| {
        for i in 0..BLOCK_ITERS {
            f(i);
        }
    });
    wall.as_nanos() as f64 / f64::from(BLOCK_ITERS)
}

fn free_now(i: u32) {
    let guard = crossbeam_epoch::pin();
    drop(black_box(Box::new([u64::from(i); 5])));
    drop(guard);
}

/// A building block: its name and one iteration of it.
type Block = (&'static str, fn(u32));

/// Nanoseconds per insert per thread, with `threads` threads each writing to a cache of its
/// own, made by `build(capacity)`.
fn inserts<C: BenchCache>(threads: usize, capacity: usize, build: impl Fn(usize) -> C) -> f64 {
    let caches: Vec<C> = (0..threads).map(|_| build(capacity)).collect();
    let streams: Vec<Vec<u64>> = (0..threads)
        .map(|t| {
            uniform_keys(
                10 * capacity as u64,
                3 * capacity + INSERTS,
                thread_seed(0x5EED_0C1A, t),
            )
        })
        .collect();
    for (cache, keys) in caches.iter().zip(&streams) {
        for &k in &keys[..3 * capacity] {
            cache.insert(k, k);
        }
    }
    let wall = run_threads(threads, |t| {
        for &k in &streams[t][3 * capacity..] {
            caches[t].insert(k, k);
        }
    });
    wall.as_nanos() as f64 / INSERTS as f64
}

/// What an asymmetric-fence reader pays around a read: its epoch published with a plain store
/// and a compiler fence (the reclaimer's `membarrier` supplies the hardware fence), then
/// cleared with a `Release` store.
fn light_pin(i: u32) {
    static EPOCH: AtomicU64 = AtomicU64::new(0);
    EPOCH.store(u64::from(i) | 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    black_box(&EPOCH);
    EPOCH.store(0, Ordering::Release);
}

/// crossbeam-epoch's pin and unpin around nothing.
fn crossbeam_pin(_: u32) {
    drop(black_box(crossbeam_epoch::pin()));
}

/// Microseconds per `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` in each of `rounds` rounds
/// of 20,000 calls, with `busy` other threads of the process spinning meanwhile; `None` where
/// the system call is refused. Every round is kept: the cost depends on whether the other
/// thread is on a core when the barrier comes (an interrupt through the hypervisor), which
/// the machine's other work decides.
#[cfg(target_os = "linux")]
fn membarrier_us(rounds: usize, busy: usize) -> Option<Vec<f64>> {
    use std::sync::atomic::AtomicBool;
    // From linux/membarrier.h; the libc crate does not name them.
    const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
    const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CALLS: u32 = 20_000;
    // SAFETY: membarrier takes no pointers; registering twice is allowed.
    if unsafe { libc::syscall(libc::SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0, 0) } != 0 {
        return None;
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..busy {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let each = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..CALLS {
                    // SAFETY: as above.
                    unsafe { libc::syscall(libc::SYS_membarrier, PRIVATE_EXPEDITED, 0, 0) };
                }
                start.elapsed().as_nanos() as f64 / f64::from(CALLS) / 1000.0
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        Some(each)
    })
}

#[cfg(not(target_os = "linux"))]
fn membarrier_us(_: usize, _: usize) -> Option<Vec<f64>> {
    None
}

fn main() {
    let rounds = rounds_from_args(3);
    println!("building blocks, ns per iteration per thread (fastest of {rounds} rounds):");
    println!("  {:<40} {:>9} {:>9}", "", "1 thread", "2 threads");
    let blocks: [Block; 2] = [
        ("pin + 40-byte box, freed at once", free_now),
        (
            "pin + 40-byte box, freed by the epoch",
            pin_and_defer_a_free,
        ),
    ];
    for (name, f) in blocks {
        let [one, two] = [1, 2].map(|threads| {
            (0..rounds)
                .map(|_| per_iter(threads, f))
                .fold(f64::INFINITY, f64::min)
        });
        println!("  {name:<40} {one:>9.1} {two:>9.1}");
    }
    println!(
        "ns per insert of a new key per thread, each thread writing to a cache of its own \
         (fastest of {rounds} rounds of {INSERTS}):"
    );
    println!(
        "  {:>9} {:>14} {:>14} {:>14} {:>14}",
        "capacity", "larder 1T", "larder 2T", "quick_cache 1T", "quick_cache 2T"
    );
    for capacity in CAPACITIES {
        let mut fastest = [f64::INFINITY; 4];
        for _ in 0..rounds {
            let larder = |c: usize| larder::Cache::<u64, u64>::new(c as u64);
            let quick = |c: usize| quick_cache::sync::Cache::<u64, u64>::new(c);
            let round = [
                inserts(1, capacity, larder),
                inserts(2, capacity, larder),
                inserts(1, capacity, quick),
                inserts(2, capacity, quick),
            ];
            for (f, r) in fastest.iter_mut().zip(round) {
                *f = f.min(r);
            }
        }
        let [l1, l2, q1, q2] = fastest;
        println!("  {capacity:>9} {l1:>14.1} {l2:>14.1} {q1:>14.1} {q2:>14.1}");
    }
    println!("asymmetric fences (pins: fastest of {rounds} rounds; membarrier: each round):");
    let pins: [Block; 2] = [
        ("crossbeam-epoch pin + unpin, ns", crossbeam_pin),
        ("plain store + compiler fence + store, ns", light_pin),
    ];
    for (name, f) in pins {
        let one = (0..rounds)
            .map(|_| per_iter(1, f))
            .fold(f64::INFINITY, f64::min);
        println!("  {name:<44} {one:>9.2}");
    }
    for busy in [0, 1] {
        let name = format!("membarrier, {busy} other thread(s) running, µs");
        match membarrier_us(rounds, busy) {
            Some(us) => {
                let us: Vec<String> = us.iter().map(|u| format!("{u:.2}")).collect();
                println!("  {name:<44} {:>9}", us.join(", "));
            }
            None => println!("  {name:<44} {:>9}", "refused"),
        }
    }
}
