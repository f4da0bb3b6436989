//! The process's address space and resident memory, measured, and its address space limited
//! (Linux: `/proc/self/status` and `RLIMIT_AS`). Only for a process of its own (a child, see
//! [`crate::child`], or a test binary holding one test): the limit holds for every thread of
//! the process, and every thread's allocations move the sizes.

/// The process's current address-space size in bytes (`VmSize`).
pub fn bytes() -> u64 {
    status_bytes("VmSize:")
}

/// The process's current resident set in bytes (`VmRSS`).
pub fn resident_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// The size in `/proc/self/status`'s line `field`, given there in kB.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("a {field} line in kB"));
    kb * 1024
}

/// Runs `f` with the address space limited to what the process has now and `room` bytes
/// more, then puts the limit back (also if `f` panics).
pub fn with_room<T>(room: u64, f: impl FnOnce() -> T) -> T {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid, writable rlimit for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    set(libc::rlimit {
        rlim_cur: (bytes() + room) as libc::rlim_t,
        rlim_max: old.rlim_max,
    });
    /// Puts the old limit back as it drops.
    struct Restore(libc::rlimit);
    impl Drop for Restore {
        fn drop(&mut self) {
            set(self.0);
        }
    }
    let _restore = Restore(old);
    f()
}

fn set(limit: libc::rlimit) {
    // SAFETY: `limit` is a valid rlimit for the call, which reads only it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}
