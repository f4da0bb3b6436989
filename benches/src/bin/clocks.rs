//! What reading a clock costs: why a cache with expiry reads `CLOCK_MONOTONIC_COARSE`.
//!
//! Every read of a cache with expiry reads the clock, so its cost is paid per `get`. This times
//! 20,000,000 calls of each candidate in a loop (three rounds, so the machine's noise shows):
//! `Instant::now()` (`CLOCK_MONOTONIC`, what std offers) and the coarse clock, the call
//! `larder_core::Clock::real` makes on Linux. It also prints the coarse clock's resolution: how
//! far it may lag.
//!
//! Run: `cargo run --release -p larder-benches --bin clocks`.

use std::hint::black_box;
use std::time::Instant;

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

fn per_call(f: impl Fn() -> u64) -> f64 {
    let start = Instant::now();
    let mut acc = 0u64;
    for _ in 0..CALLS {
        acc = acc.wrapping_add(f());
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / CALLS as f64
}

fn main() {
    let origin = Instant::now();
    for round in 1..=3 {
        let instant = per_call(|| origin.elapsed().as_nanos() as u64);
        print!("round {round}: Instant::now {instant:.1} ns");
        #[cfg(target_os = "linux")]
        print!(", CLOCK_MONOTONIC_COARSE {:.1} ns", per_call(coarse_ns));
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
}
