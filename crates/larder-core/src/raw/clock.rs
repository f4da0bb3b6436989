//! The operating system's monotonic clocks, coarse and precise: the one call into libc the
//! crate makes.
//!
//! `CLOCK_MONOTONIC_COARSE` returns the time the kernel last stored at a timer tick, without
//! reading the hardware counter: 4–6 ns a call on the project's machine, against 22–32 ns for
//! `std::time::Instant::now()` (`CLOCK_MONOTONIC`), which every read of a cache with expiry
//! would pay (`cargo run --release -p larder-benches --bin clocks`). Its price is resolution: it
//! lags true time by up to one tick (4 ms there, as `clock_getres` reports). `crate::time`
//! turns that lag into a safety margin, and takes the precise clock instead for caches whose
//! lifetimes are short enough for that margin to matter.

/// `call(id, &mut ts)` for `clock_gettime` or `clock_getres`, in nanoseconds; `None` if the
/// call fails.
#[cfg(all(target_os = "linux", not(miri)))]
#[inline(always)]
fn read(
    call: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int,
    id: libc::clockid_t,
) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `call` is `clock_gettime` or `clock_getres`, which write only the timespec they
    // are given; `ts` is valid and writable for the call, and `id` is CLOCK_MONOTONIC or
    // CLOCK_MONOTONIC_COARSE, which exist on every Linux since 2.6.32.
    let rc = unsafe { call(id, &mut ts) };
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
    let now = read(libc::clock_gettime, libc::CLOCK_MONOTONIC_COARSE);
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
    read(libc::clock_getres, libc::CLOCK_MONOTONIC_COARSE).unwrap_or(10_000_000)
}

/// Nanoseconds on the precise monotonic clock (`CLOCK_MONOTONIC`, what `Instant` reads).
#[cfg(all(target_os = "linux", not(miri)))]
#[inline]
pub(crate) fn precise_now_ns() -> u64 {
    let now = read(libc::clock_gettime, libc::CLOCK_MONOTONIC);
    debug_assert!(now.is_some(), "clock_gettime(CLOCK_MONOTONIC) failed");
    now.unwrap_or(0)
}
