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
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
}

#[cfg(larder_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
}

pub(crate) use imp::*;

pub(crate) use crossbeam_epoch as epoch;
pub(crate) use crossbeam_utils::CachePadded;

/// A small, thread-stable number used to pick a statistics stripe, so two threads rarely
/// write the same cache line. It is only a hint: any value is correct.
#[cfg(larder_loom)]
pub(crate) fn stripe_hint() -> usize {
    // A process-wide ticket would differ between loom's runs of one model, and loom requires
    // every run to be deterministic.
    0
}

/// See above.
#[cfg(not(larder_loom))]
pub(crate) fn stripe_hint() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
    // Not routed through loom: this counter only spreads threads over stripes, and which
    // stripe a thread picks never affects a result.
    static NEXT: StdAtomicUsize = StdAtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            // Relaxed: a unique-ish ticket is all that is wanted; nothing is published.
            v = NEXT.fetch_add(1, StdOrdering::Relaxed);
            s.set(v);
        }
        v
    })
}
