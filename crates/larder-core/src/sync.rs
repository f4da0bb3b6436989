//! The one door for every atomic, lock, cell, thread and reclamation primitive in the crate.
//!
//! Normal builds get `std`, `parking_lot` and `crossbeam-epoch`. Builds with
//! `RUSTFLAGS="--cfg larder_loom --cfg crossbeam_loom"` get [loom]'s model-checked
//! replacements instead (and `crossbeam-epoch` switches to loom through its own
//! `crossbeam_loom` cfg), so the loom models in `tests/loom.rs` exercise exactly the code that
//! ships. Nothing else in the crate names `std::sync::atomic`, `parking_lot` or `loom`.
//!
//! The cfg is `larder_loom`, not bare `loom`: a dependency that reacts to `cfg(loom)` would
//! otherwise change under our feet.
//!
//! [loom]: https://docs.rs/loom

// Half a loom build: crossbeam-epoch would keep std's atomics and its own thread-locals, which
// loom's model cannot see, and the models would fail inside crossbeam with no word of why.
#[cfg(all(larder_loom, not(crossbeam_loom)))]
compile_error!(
    "`--cfg larder_loom` needs `--cfg crossbeam_loom` too: \
     RUSTFLAGS=\"--cfg larder_loom --cfg crossbeam_loom\" (see crates/larder-core/tests/loom.rs)"
);

#[cfg(not(larder_loom))]
mod imp {
    pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
    pub(crate) use std::sync::atomic::{
        AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };
    pub(crate) use std::sync::Arc;

    /// `UnsafeCell` with loom's closure-based API, so the same call sites compile under loom,
    /// where every access is checked for data races.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    pub(crate) use std::thread::ThreadId;

    /// Blocks on `cond` until notified (spurious wake-ups included), holding `guard` again on
    /// return.
    pub(crate) fn wait<'a, T>(cond: &Condvar, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        cond.wait(&mut guard);
        guard
    }

    pub(crate) fn current_thread_id() -> ThreadId {
        std::thread::current().id()
    }

    /// How long a thread that finds a shard lock taken keeps waiting for it awake before
    /// `parking_lot` takes over. See [`lock_awake`].
    const WAIT_AWAKE: std::time::Duration = std::time::Duration::from_micros(10);

    /// Takes `mutex`; when it is held, waits for it awake for up to [`WAIT_AWAKE`] before
    /// `parking_lot` takes over (which spins a little, yields a few times, and then parks the
    /// thread in the kernel, where the holder's unlock must wake it).
    ///
    /// Shard locks are held for a few hundred nanoseconds, longer at two threads on two
    /// cores, where a locked write also waits for the lines the other core holds; there
    /// `parking_lot`'s waiter stopped spinning long before the holder was done, and waiting
    /// awake instead made the two-thread cache-aside replay about a fifth faster. Waiting
    /// awake means turns of a short spin and a look at the lock word, each followed by a
    /// `yield`: with a core per thread the yield returns at once (about 150 ns here), and with
    /// more threads than cores it runs another thread instead of spinning on the core a
    /// preempted holder needs (a spin without the yields lost 10–15% there). Measured in
    /// `docs/ARCHITECTURE.md`, "Waiting for a shard lock". The budget is in time, not in turns,
    /// because a `pause` costs 10 cycles on some x86 cores and 140 on others.
    ///
    /// [`unlock_fair`] hands the lock only to a sleeping waiter, so behind work done in
    /// batches (the janitor's) a waiter gets its turn once it sleeps: at most [`WAIT_AWAKE`]
    /// later than with a plain lock.
    #[inline]
    pub(crate) fn lock_awake<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        match mutex.try_lock() {
            Some(guard) => guard,
            None => lock_contended(mutex),
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        /// Spins between looks at the lock word: a look that finds it free tries to take it,
        /// and each try takes the line from the holder's core, so looking on every turn
        /// would slow the holder down.
        const SPINS_PER_LOOK: u32 = 16;
        let start = std::time::Instant::now();
        loop {
            for _ in 0..SPINS_PER_LOOK {
                std::hint::spin_loop();
            }
            if !mutex.is_locked() {
                if let Some(guard) = mutex.try_lock() {
                    return guard;
                }
            }
            if start.elapsed() >= WAIT_AWAKE {
                return mutex.lock();
            }
            std::thread::yield_now();
        }
    }

    /// Releases `guard`, handing the lock straight to a thread waiting for it, if any, rather
    /// than letting this thread take it back at once (parking_lot's locks are otherwise only
    /// eventually fair, after half a millisecond).
    pub(crate) fn unlock_fair<T>(guard: MutexGuard<'_, T>) {
        MutexGuard::unlock_fair(guard);
    }
}

#[cfg(larder_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{
        AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };
    pub(crate) use loom::sync::{Arc, Condvar, MutexGuard};

    /// loom's `Mutex` returns `LockResult`; this wrapper gives it `parking_lot`'s shape (no
    /// poisoning: a panic under a shard lock must not brick the cache).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    pub(crate) use loom::thread::ThreadId;

    pub(crate) fn wait<'a, T>(cond: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        cond.wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// loom runs every model thread on one OS thread, so std's id cannot tell them apart.
    pub(crate) fn current_thread_id() -> ThreadId {
        loom::thread::current().id()
    }

    /// Under loom a plain lock: loom explores every order a spin could observe anyway, and a
    /// spin would only multiply the states it explores.
    pub(crate) fn lock_awake<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock()
    }

    /// loom's locks have no fairness to ask for: a plain unlock.
    pub(crate) fn unlock_fair<T>(guard: MutexGuard<'_, T>) {
        drop(guard);
    }
}

pub(crate) use imp::*;

pub(crate) use crossbeam_epoch as epoch;
pub(crate) use crossbeam_utils::CachePadded;

/// This thread's statistics stripe: a number that no other live thread holds, or `None` if the
/// thread has none (see `stats`).
///
/// Under loom every model thread answers `None`: the numbers are handed out by a process-wide
/// registry, which would differ between loom's runs of one model, and loom requires every run to
/// be deterministic. Counting then goes through the shared, atomic path, which loom checks.
#[cfg(larder_loom)]
#[inline(always)]
pub(crate) fn thread_stripe() -> Option<usize> {
    None
}

/// How many stripe numbers there are: no cache keeps more stripes (`stats`), so a thread beyond
/// them would gain nothing by holding one.
pub(crate) const STRIPE_NUMBERS: usize = 256;

/// See above. Numbers are the smallest free ones, taken on a thread's first count and given
/// back when it exits, so a process whose threads come and go keeps them small. They are bits
/// of a few words, taken with a compare-exchange and given back with an atomic clear: no lock,
/// so that a thread's first read waits for no other thread (a lock here, however briefly
/// held, was one a read could meet). A number passes from one thread to the next through its
/// word: the clear is a `Release` and the take an `Acquire`, so the next holder's writes to the
/// stripe happen after the last one's.
#[cfg(not(larder_loom))]
#[inline]
pub(crate) fn thread_stripe() -> Option<usize> {
    // Not routed through loom (loom builds use the function above).
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A set bit is a number a live thread holds.
    static TAKEN: [AtomicU64; STRIPE_NUMBERS / 64] =
        [const { AtomicU64::new(0) }; STRIPE_NUMBERS / 64];

    /// This thread's number, if it got one.
    struct Ticket(Option<usize>);

    impl Ticket {
        fn take() -> Ticket {
            for (w, word) in TAKEN.iter().enumerate() {
                let mut bits = word.load(Ordering::Relaxed);
                while bits != u64::MAX {
                    let free = (!bits).trailing_zeros();
                    // Acquire: pairs with the Release of the clear that gave the number back.
                    match word.compare_exchange_weak(
                        bits,
                        bits | 1 << free,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Ticket(Some(w * 64 + free as usize)),
                        Err(now) => bits = now,
                    }
                }
            }
            Ticket(None)
        }
    }

    impl Drop for Ticket {
        fn drop(&mut self) {
            if let Some(n) = self.0 {
                // Release: the next holder's writes to the stripe come after this thread's.
                TAKEN[n / 64].fetch_and(!(1 << (n % 64)), Ordering::Release);
            }
        }
    }

    thread_local! {
        static TICKET: Ticket = Ticket::take();
    }
    // `try_with` fails only while this thread's thread-locals are being torn down.
    TICKET.try_with(|t| t.0).ok().flatten()
}

#[cfg(all(test, not(larder_loom)))]
mod tests {
    use super::{lock_awake, Mutex};
    #[cfg(all(target_os = "linux", not(miri)))]
    use std::{
        sync::Barrier,
        time::{Duration, Instant},
    };

    /// Threads alive at once hold different stripe numbers, each below `STRIPE_NUMBERS`, and
    /// the numbers of threads that exited are there to take again.
    #[test]
    fn live_threads_hold_different_stripe_numbers() {
        let threads = if cfg!(miri) { 4 } else { 64 };
        let barrier = std::sync::Barrier::new(threads);
        let held: Vec<Option<usize>> = std::thread::scope(|s| {
            let spawned: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let number = super::thread_stripe();
                        // Every thread holds its number until all have taken theirs.
                        barrier.wait();
                        number
                    })
                })
                .collect();
            spawned.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut numbers: Vec<usize> = held.into_iter().flatten().collect();
        assert_eq!(numbers.len(), threads, "every thread got a number");
        assert!(numbers.iter().all(|&n| n < super::STRIPE_NUMBERS));
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), threads, "no number held twice at once");
        let again = std::thread::spawn(super::thread_stripe).join().unwrap();
        assert!(again.is_some(), "the numbers came back");
    }

    #[test]
    fn a_lock_taken_awake_still_excludes() {
        const THREADS: usize = 4;
        // Fewer under miri, which runs this about a thousand times slower.
        let rounds: u64 = if cfg!(miri) { 200 } else { 20_000 };
        // A counter the lock alone protects: a read, a yield in between, then the write, so
        // that two holders at once would lose increments.
        let counter = Mutex::new(0u64);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let mut held = lock_awake(&counter);
                        let seen = *held;
                        if seen % 64 == 0 {
                            std::thread::yield_now();
                        }
                        *held = seen + 1;
                    }
                });
            }
        });
        assert_eq!(*counter.lock(), THREADS as u64 * rounds);
    }

    /// A thread's CPU time, from the kernel (which miri does not model).
    #[cfg(all(target_os = "linux", not(miri)))]
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// A waiter whose holder keeps the lock far longer than the awake budget gets it once it
    /// is released, and spends the wait asleep: a few microseconds of CPU, not the whole
    /// wait (a waiter that kept spinning and yielding would use a large share of it).
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn a_long_wait_sleeps_after_the_budget() {
        const HOLD: Duration = Duration::from_millis(200);
        let lock = Mutex::new(false);
        let taken = Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut held = lock.lock();
                taken.wait();
                std::thread::sleep(HOLD);
                *held = true;
            });
            taken.wait();
            let (cpu, wall) = (thread_cpu_time(), Instant::now());
            let held = lock_awake(&lock);
            let (cpu, wall) = (thread_cpu_time() - cpu, wall.elapsed());
            assert!(
                *held,
                "the waiter got the lock before the holder released it"
            );
            assert!(wall >= HOLD / 2, "waited only {wall:?}");
            assert!(
                cpu < HOLD / 10,
                "the waiter used {cpu:?} of CPU in a wait of {wall:?}: it did not sleep"
            );
        });
    }
}
