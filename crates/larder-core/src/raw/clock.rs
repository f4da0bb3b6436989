//! The operating system's coarse monotonic clock, the one call into libc the crate makes.
//!
//! `CLOCK_MONOTONIC_COARSE` returns the time the kernel last stored at a timer tick, without
//! reading the hardware counter: about 6 ns a call on the project's machine, against 32 ns for
//! `std::time::Instant::now()` (`CLOCK_MONOTONIC`), which every read of a cache with expiry
//! would pay. Its price is resolution: it lags true time by up to one tick (4 ms there, as
//! `clock_getres` reports). `crate::time` turns that lag into a safety margin.

/// Nanoseconds on the coarse monotonic clock, and the clock's resolution in nanoseconds.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_MONOTONIC_COARSE is supported by every Linux since 2.6.32; the call writes only `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The coarse clock's resolution in nanoseconds: how far it may lag true time.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn coarse_resolution_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as in `coarse_now_ns`: `ts` is valid and writable, and only `ts` is written.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        // Not expected on Linux; a 10 ms tick is the coarsest a kernel is configured with.
        return 10_000_000;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
