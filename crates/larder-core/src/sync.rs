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

/// See above. Numbers are the smallest free ones, taken on a thread's first count and given
/// back when it exits, so a process whose threads come and go keeps them small, and a number
/// passes from one thread to the next only through the registry's lock: the next holder's
/// writes to the stripe happen after the last one's.
#[cfg(not(larder_loom))]
#[inline]
pub(crate) fn thread_stripe() -> Option<usize> {
    // Not routed through loom (loom builds use the function above); the registry is touched
    // only when a thread takes or gives back its number.
    struct Ticket(usize);

    /// The next never-used number, and the numbers given back.
    static REGISTRY: std::sync::Mutex<(usize, Vec<usize>)> = std::sync::Mutex::new((0, Vec::new()));

    fn registry() -> std::sync::MutexGuard<'static, (usize, Vec<usize>)> {
        // The registry's state is valid between any two statements, so a panic while it was
        // held (an allocation failure) leaves nothing to repair.
        REGISTRY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    impl Ticket {
        fn take() -> Ticket {
            let mut reg = registry();
            let smallest = (0..reg.1.len()).min_by_key(|&i| reg.1[i]);
            match smallest {
                Some(i) => Ticket(reg.1.swap_remove(i)),
                None => {
                    reg.0 += 1;
                    Ticket(reg.0 - 1)
                }
            }
        }
    }

    impl Drop for Ticket {
        fn drop(&mut self) {
            registry().1.push(self.0);
        }
    }

    thread_local! {
        static TICKET: Ticket = Ticket::take();
    }
    // `try_with` fails only while this thread's thread-locals are being torn down.
    TICKET.try_with(|t| t.0).ok()
}
