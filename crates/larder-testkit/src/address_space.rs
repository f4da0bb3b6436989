//! The process's address space, measured and limited (Linux: `/proc/self/status` and
//! `RLIMIT_AS`). Only for a child process of its own ([`crate::child`]): the limit holds for
//! every thread of the process.

/// The process's current address-space size in bytes (`VmSize`).
pub fn bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmSize line in kB");
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
        rlim_cur: bytes() + room,
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
