//! What reading a clock costs, and what the deadline check costs a hit.
//!
//! Every read of a cache with expiry reads the clock, so its cost is paid per `get`. Part one
//! times 20,000,000 calls of each candidate in a loop (three rounds, so the machine's noise
//! shows): `Instant::now()` (`CLOCK_MONOTONIC`, what std offers), the coarse clock, the call
//! `larder_core::Clock::real` makes on Linux, and on x86_64 the raw time-stamp counter. It also
//! prints the coarse clock's resolution: how far it may lag.
//!
//! Part two prices the whole deadline check inside `get`: two caches of 100,000 `u64 -> u64`
//! entries, one without expiry and one with a one-hour time-to-live (and no janitor), each read
//! on a hot set of 1,000 keys (whose nodes stay in the core's caches, so memory misses do not
//! hide the difference). Each figure is the fastest of 30 passes of 200,000 reads, on one thread.
//!
//! Run: `cargo run --release -p larder-benches --bin clocks`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use larder::Cache;

const CALLS: u64 = 20_000_000;

#[cfg(target_os = "linux")]
fn coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and the call writes only it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The time-stamp counter: the one clock cheaper than a system call that a monotonic reading
/// could be built on, if it were cheaper here than the coarse clock.
#[cfg(target_arch = "x86_64")]
fn tsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions on x86_64; it only reads the counter.
    unsafe { std::arch::x86_64::_rdtsc() }
}

fn per_call(f: impl Fn() -> u64) -> f64 {
    let start = Instant::now();
    let mut acc = 0u64;
    for _ in 0..CALLS {
        acc = acc.wrapping_add(f());
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / CALLS as f64
}

/// Nanoseconds per `get` of `keys`: the fastest of 30 passes.
fn per_get(cache: &Cache<u64, u64>, keys: &[u64]) -> f64 {
    (0..30)
        .map(|_| {
            let start = Instant::now();
            let mut acc = 0u64;
            for k in keys {
                acc = acc.wrapping_add(cache.get(k).unwrap_or(0));
            }
            black_box(acc);
            start.elapsed().as_nanos() as f64 / keys.len() as f64
        })
        .fold(f64::MAX, f64::min)
}

fn filled(cache: Cache<u64, u64>) -> Cache<u64, u64> {
    for k in 0..100_000 {
        cache.insert(k, k);
    }
    cache
}

fn main() {
    let origin = Instant::now();
    for round in 1..=3 {
        let instant = per_call(|| origin.elapsed().as_nanos() as u64);
        print!("round {round}: Instant::now {instant:.1} ns");
        #[cfg(target_os = "linux")]
        print!(", CLOCK_MONOTONIC_COARSE {:.1} ns", per_call(coarse_ns));
        #[cfg(target_arch = "x86_64")]
        print!(", rdtsc {:.1} ns", per_call(tsc));
        println!();
    }
    #[cfg(target_os = "linux")]
    {
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `coarse_ns`.
        unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        println!(
            "CLOCK_MONOTONIC_COARSE resolution: {} ns (how far it may lag true time)",
            res.tv_nsec
        );
    }

    let plain = filled(Cache::new(100_000));
    let ttl = filled(
        Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(3600))
            .without_janitor()
            .build()
            .expect("a valid configuration"),
    );
    let hot = larder_benches::uniform_keys(1_000, 200_000, 7);
    for round in 1..=3 {
        let (p, t) = (per_get(&plain, &hot), per_get(&ttl, &hot));
        println!(
            "round {round}: get on a 1,000-key hot set: {p:.1} ns without expiry, {t:.1} ns with a \
             time-to-live (+{:.1} ns)",
            t - p
        );
    }
}
