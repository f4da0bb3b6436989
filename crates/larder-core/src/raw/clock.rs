//! The operating system's coarse monotonic clock, the one call into libc the crate makes.
//!
//! `CLOCK_MONOTONIC_COARSE` returns the time the kernel last stored at a timer tick, without
//! reading the hardware counter: 4–6 ns a call on the project's machine, against 22–32 ns for
//! `std::time::Instant::now()` (`CLOCK_MONOTONIC`), which every read of a cache with expiry
//! would pay (`cargo run --release -p larder-benches --bin clocks`). Its price is resolution: it
//! lags true time by up to one tick (4 ms there, as `clock_getres` reports). `crate::time`
//! turns that lag into a safety margin.

/// `call(CLOCK_MONOTONIC_COARSE, &mut ts)` for `clock_gettime` or `clock_getres`, in
/// nanoseconds; `None` if the call fails.
#[cfg(all(target_os = "linux", not(miri)))]
#[inline(always)]
fn coarse(
    call: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int,
) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `call` is `clock_gettime` or `clock_getres`, which write only the timespec they
    // are given; `ts` is valid and writable for the call, and CLOCK_MONOTONIC_COARSE exists on
    // every Linux since 2.6.32.
    let rc = unsafe { call(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (rc == 0).then(|| {
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    })
}

/// Nanoseconds on the coarse monotonic clock.
#[cfg(all(target_os = "linux", not(miri)))]
#[inline]
pub(crate) fn coarse_now_ns() -> u64 {
    let now = coarse(libc::clock_gettime);
    debug_assert!(
        now.is_some(),
        "clock_gettime(CLOCK_MONOTONIC_COARSE) failed"
    );
    now.unwrap_or(0)
}

/// The coarse clock's resolution in nanoseconds: how far it may lag true time.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn coarse_resolution_ns() -> u64 {
    // Not expected to fail on Linux; 10 ms is the coarsest tick a kernel is configured with.
    coarse(libc::clock_getres).unwrap_or(10_000_000)
}
