//! Retired nodes wait here, on the thread that retired them, until no reader can hold them;
//! then that same thread frees them.
//!
//! A node unlinked from its shard may still be in use by a reader that found it before the
//! unlink, so it is freed only once every thread pinned at the time has unpinned. crossbeam-epoch
//! answers that question, but its own way of freeing, one deferred call per node, gathers the
//! calls in bags of 64 on a queue that every thread shares and runs them on whichever thread
//! collects next. At two threads that costs more than the rest of the write: one thread's
//! nodes and bags are freed by the other, so the blocks, the bags and the allocator's state for
//! them move between cores. Timed apart from any cache (`cargo run --release -p larder-benches
//! --bin reclaim_cost`, `BENCHMARKS.md`), a pin plus a box freed through the epoch costs a few
//! times more per thread at two threads than at one.
//!
//! So a thread keeps what it retires in batches of [`BATCH`]. When a batch is full it is
//! *sealed*: it gets the next number of the thread's count, and crossbeam-epoch gets one
//! deferred call for the whole batch, which does nothing but raise the thread's *mark* to that
//! number. After each write that retired something, or while the thread has sealed batches
//! waiting ([`waiting`]), once the write has released its shard's lock, the thread looks at
//! the mark ([`collect`]) and frees, itself, every sealed batch numbered up to it. (A write
//! that retires nothing, such as an insert of a new key into a cache below capacity, must look
//! too: a thread that cleared a cache and then refilled it would otherwise keep every cleared
//! value until it next removed something.) Blocks stay with the thread that allocated most of
//! them (`pool`), and the shared queue sees one call per batch instead of one per node. Freeing never happens under a
//! shard lock: it runs the values' `Drop`, which may write to the same shard, and it would make
//! the other writers wait.
//!
//! **Why it is sound.** A node in batch `n` was unlinked (under its shard's lock) before it was
//! retired, and batch `n` was sealed after that, by the same thread. crossbeam-epoch runs the
//! sealing call only after every thread that was pinned when it was deferred has unpinned, and
//! every reader that could still hold the node was pinned before the unlink, so before the
//! seal. The call raises the mark with a `Release` read-modify-write after those readers
//! unpinned (crossbeam orders their unpinning before its deferred calls), and the owner reads
//! the mark with `Acquire` before freeing, so their reads of the node happen before the free.
//! Calls may run out of order (two threads collect different bags); a mark of `m` frees every
//! batch numbered up to `m`, which is sound because batch `n <= m` was sealed before batch `m`,
//! so its readers were pinned before batch `m`'s seal too, and have unpinned before its call.
//! The loom model at the bottom of this file checks that argument.
//!
//! **Bounds.** A thread holds at most one open batch, plus the sealed batches whose calls have
//! not run yet (usually one or two: each seal flushes the thread's crossbeam bag to the shared
//! queue, so the call waits only for the epoch to advance twice). A thread that stops writing
//! keeps what it holds until it writes again or exits; at exit, everything left goes to
//! crossbeam-epoch as one deferred call that frees it. `Cache::run_pending_tasks` frees what the
//! calling thread may free (the janitor's thread does so every tick). Freeing runs the nodes'
//! `Drop` (user code), so a batch is taken out of the limbo before it is freed: a value whose
//! drop writes to a cache finds the limbo free to use.
//!
//! **Under loom** the cache's models go through the old path, one deferred call per node. A
//! per-thread limbo cannot be modelled whole there: loom drops a thread's locals in no fixed
//! order (so the model is not deterministic once a second one, beside crossbeam's, does loom
//! operations as it drops), and drops the main thread's after crossbeam's collector is gone.
//! The loom model in this file drives a [`Limbo`] by hand instead.

// Loom builds of the library use only `retire`'s fallback; the rest serves the loom model.
#![cfg_attr(all(larder_loom, not(test)), allow(dead_code, unused_imports))]

use crate::sync::epoch::{self, Guard};
use crate::sync::{Arc, AtomicU64, Ordering};
use crate::unwind::{keep_first, quiet, Panic};
use std::collections::VecDeque;

/// Retired nodes per batch: one deferred call and one flush of the thread's crossbeam bag per
/// this many. Smaller batches mean more flushes (each pushes a bag of about 2 KB to the shared
/// queue and collects), larger ones bigger bursts of cold frees. At one thread and 100,000
/// entries (`probe insert_only 1 4`, aligned builds, two alternations), 64 gave 174–175 ns per
/// insert, 256 165–172 and 1024 185–188; 128 was no faster than 256 (`insert_cost`). At most
/// about 12 KB of `u64 → u64` nodes per open batch.
#[cfg(not(any(larder_loom, miri)))]
pub(crate) const BATCH: usize = 256;
/// Shrunk under miri so that tests seal and free batches in a few writes, and under loom so
/// that one retire seals.
#[cfg(all(miri, not(larder_loom)))]
pub(crate) const BATCH: usize = 2;
/// See above.
#[cfg(larder_loom)]
pub(crate) const BATCH: usize = 1;

/// Collections an exiting thread runs after handing its rest to the epoch: two advances, and
/// the one that runs the call, with one to spare.
#[cfg(not(larder_loom))]
const EXIT_COLLECTIONS: usize = 4;

/// Something retired: a pointer and the function that frees it.
struct Retired {
    ptr: *mut (),
    free: unsafe fn(*mut ()),
}

impl Retired {
    /// # Safety
    /// No reader can hold `self.ptr` any more, and this is its one free.
    unsafe fn free(self) {
        // SAFETY: the caller's contract, and `retire`'s: `free` is the pointer's own function.
        unsafe { (self.free)(self.ptr) }
    }
}

/// Frees every pointer of `batches`, all of them even when a value's `Drop` panics, and
/// returns the first such panic. (Freeing runs user code. Stopping at a panic would leak the
/// rest of the batches, which have left the limbo, as `Vec`'s own drop, which goes on dropping
/// the elements after one panics, does not.)
///
/// # Safety
/// No reader can hold any of them, and nothing else frees them.
#[must_use]
unsafe fn free_batches(batches: Vec<Vec<Retired>>) -> Option<Panic> {
    let mut first = None;
    for batch in batches {
        for r in batch {
            let freed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: the caller's contract.
                unsafe { r.free() }
            }));
            if let Err(panic) = freed {
                keep_first(&mut first, panic);
            }
        }
    }
    first
}

/// One thread's retired nodes.
struct Limbo {
    /// Retired since the last seal.
    open: Vec<Retired>,
    /// Sealed batches, oldest first, with their numbers (1, 2, ...).
    sealed: VecDeque<(u64, Vec<Retired>)>,
    /// The number the next sealed batch gets.
    next: u64,
    /// The highest batch number whose deferred call has run (0: none yet). Raised by those
    /// calls, on any thread; read by this one.
    mark: Arc<AtomicU64>,
}

impl Limbo {
    fn new() -> Self {
        Limbo {
            open: Vec::with_capacity(BATCH),
            sealed: VecDeque::new(),
            next: 1,
            mark: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Keeps `retired` in the open batch.
    #[inline]
    fn push(&mut self, retired: Retired) {
        self.open.push(retired);
    }

    /// Seals the open batch if it is full. (Writers seal in [`collect`], after unlocking:
    /// sealing flushes to crossbeam's shared queue, and that runs whatever deferred calls are
    /// due, which may drop other threads' values.)
    fn seal_if_full(&mut self, guard: &Guard) {
        if self.open.len() >= BATCH {
            self.seal(guard);
        }
    }

    /// Seals the open batch: numbers it and defers the call that will raise the mark to it.
    fn seal(&mut self, guard: &Guard) {
        let number = self.next;
        self.next += 1;
        let batch = std::mem::replace(&mut self.open, Vec::with_capacity(BATCH));
        self.sealed.push_back((number, batch));
        set_waiting(true);
        let mark = Arc::clone(&self.mark);
        guard.defer(move || {
            // Release: pairs with the Acquire in `take_freeable`; see the module doc. A
            // read-modify-write, because calls can run out of order and the mark never falls.
            mark.fetch_max(number, Ordering::Release);
        });
        // Sends the call to the shared queue now rather than after 63 more, so the batch
        // waits only for the epoch.
        guard.flush();
    }

    /// Takes out every sealed batch the mark says no reader can reach; `None` when there is
    /// none. With nothing sealed that is one length check, and with the oldest batch not yet
    /// marked one more load: cheap enough for every write that retired something to ask, and
    /// such a write, the usual one, moves no vector and calls no free.
    #[inline]
    fn take_freeable(&mut self) -> Option<Vec<Vec<Retired>>> {
        let &(oldest, _) = self.sealed.front()?;
        // Acquire: pairs with the Release in the sealing call (see `seal`).
        let mark = self.mark.load(Ordering::Acquire);
        if oldest > mark {
            return None;
        }
        let mut freeable = Vec::new();
        while let Some(&(number, _)) = self.sealed.front() {
            if number > mark {
                break;
            }
            if let Some((_, batch)) = self.sealed.pop_front() {
                freeable.push(batch);
            }
        }
        set_waiting(!self.sealed.is_empty());
        Some(freeable)
    }

    /// Everything the limbo holds, sealed or not.
    fn take_all(&mut self) -> Vec<Retired> {
        let mut all = std::mem::take(&mut self.open);
        for (_, batch) in self.sealed.drain(..) {
            all.extend(batch);
        }
        set_waiting(false);
        all
    }
}

#[cfg(not(larder_loom))]
impl Drop for Limbo {
    /// The thread is exiting: what it still holds goes to crossbeam-epoch as one call, run
    /// once no reader pinned now (or before any of these nodes was unlinked) can hold them.
    fn drop(&mut self) {
        let rest = self.take_all();
        if rest.is_empty() {
            return;
        }
        let guard = epoch::pin();
        // SAFETY: every pointer was retired (unlinked, freed by nobody else), and the call runs
        // only after every thread pinned now has unpinned, which covers every reader that found
        // one of them before its unlink. Each is freed once, by its own function.
        unsafe { guard.defer_unchecked(move || quiet(free_batches(vec![rest]))) };
        guard.flush();
        drop(guard);
        // Nothing of this thread's will move the epoch again, and another thread may never
        // pin again (a janitor's thread ends when its last cache goes). Each collection
        // advances the epoch if no other thread is pinned in an older one, so a few of them
        // run the call now, here, when no reader holds it up.
        for _ in 0..EXIT_COLLECTIONS {
            epoch::pin().flush();
        }
    }
}

#[cfg(not(larder_loom))]
std::thread_local! {
    static LIMBO: std::cell::RefCell<Limbo> = std::cell::RefCell::new(Limbo::new());
}

#[cfg(not(larder_loom))]
std::thread_local! {
    /// Whether this thread's limbo holds sealed batches. Kept apart from the limbo so that a
    /// write that retired nothing learns whether to look with one load of a thread-local cell,
    /// without borrowing the limbo.
    static WAITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread has sealed batches waiting to be freed, which a write that retired
/// nothing should then [`collect`] (false on a thread that is exiting).
#[cfg(not(larder_loom))]
#[inline]
pub(crate) fn waiting() -> bool {
    WAITING.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// Under loom nothing waits in a limbo (see the module doc).
#[cfg(larder_loom)]
pub(crate) fn waiting() -> bool {
    false
}

/// Records whether this thread's limbo holds sealed batches (for [`waiting`]).
#[inline]
fn set_waiting(sealed: bool) {
    #[cfg(not(larder_loom))]
    let _ = WAITING.try_with(|waiting| waiting.set(sealed));
    #[cfg(larder_loom)]
    let _ = sealed;
}

/// Runs `f` on this thread's limbo; `None` when there is none to use: the thread is exiting
/// (its limbo is gone), or the limbo is borrowed further up this thread's stack (a value's
/// `Drop` run by a seal's flush, or by a free).
#[cfg(not(larder_loom))]
fn with_limbo<R>(f: impl FnOnce(&mut Limbo) -> R) -> Option<R> {
    LIMBO
        .try_with(|limbo| limbo.try_borrow_mut().ok().map(|mut limbo| f(&mut limbo)))
        .ok()
        .flatten()
}

/// Seals this thread's open batch if it is full, and frees what this thread retired that no
/// reader can hold any more.
///
/// Writers call it after releasing their shard's lock (never under it: freeing runs the values'
/// `Drop`, which may write to the same cache, and so may the deferred calls a seal's flush
/// runs), still pinned by `guard`; `Cache::run_pending_tasks` calls it too.
#[cfg(not(larder_loom))]
pub(crate) fn collect(guard: &Guard) {
    let freeable = with_limbo(|limbo| {
        limbo.seal_if_full(guard);
        limbo.take_freeable()
    })
    .flatten();
    if let Some(batches) = freeable {
        // SAFETY: the mark says no reader can hold them (see the module doc), and they left
        // the limbo, so each is freed once.
        if let Some(panic) = unsafe { free_batches(batches) } {
            // A value's `Drop` panicked: the panic goes to this thread's caller, as it would
            // from a `HashMap`'s removal, once everything else is freed.
            std::panic::resume_unwind(panic);
        }
    }
}

/// [`collect`], after sealing the open batch however little it holds, so that a later call
/// frees it even if this thread retires nothing more: for the janitor's tick and
/// `Cache::run_pending_tasks`, after which a thread may write nothing for a long while. (A
/// writer seals only full batches: a seal is a deferred call and a flush.) Called unlocked,
/// as `collect` is.
///
/// A value's `Drop` that panics here is dropped, not passed on. A thread's limbo holds what
/// it removed from every cache, and the janitor's thread removes the expired entries of every
/// cache it serves: the panic would come out of whichever cache's tick frees the batch, and the
/// janitor stops serving a cache whose tick panics, so one cache's values would end another
/// cache's expiry.
#[cfg(not(larder_loom))]
pub(crate) fn seal_and_collect(guard: &Guard) {
    let _ = with_limbo(|limbo| {
        if !limbo.open.is_empty() {
            limbo.seal(guard);
        }
    });
    // Moves the epoch on (crossbeam advances it when a thread collects): a sealed batch
    // waits for two advances, and a thread that only ticks would otherwise wait for
    // crossbeam's own collection, once every 128 pins of a thread, dozens of ticks.
    guard.flush();
    quiet(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| collect(guard))).err());
}

/// Under loom nothing waits in a limbo (see the module doc).
#[cfg(larder_loom)]
pub(crate) fn collect(_guard: &Guard) {}

/// Under loom nothing waits in a limbo (see the module doc).
#[cfg(larder_loom)]
pub(crate) fn seal_and_collect(_guard: &Guard) {}

/// Retires `ptr`: it is freed with `free(ptr)`, on this thread, by a later [`collect`] once no
/// reader can hold it. Does no more than keep it: safe to call under a shard lock.
///
/// When this thread has no limbo to use (it is exiting, or the call comes from a value's `Drop`
/// that a seal's flush ran while the limbo was borrowed), and under loom, `ptr` goes to
/// crossbeam-epoch on its own.
///
/// # Safety
/// 1. `ptr` is unlinked: no reader that pins after this call can reach it.
/// 2. The calling thread is pinned by `guard`, and it unlinked `ptr` while pinned by it or
///    under a lock taken while pinned (so every reader that could reach `ptr` was pinned
///    before this call).
/// 3. `free(ptr)` frees `ptr` soundly once no reader holds it, and nothing else frees it.
pub(crate) unsafe fn retire(guard: &Guard, ptr: *mut (), free: unsafe fn(*mut ())) {
    #[cfg(not(larder_loom))]
    {
        if with_limbo(|limbo| limbo.push(Retired { ptr, free })).is_some() {
            return;
        }
    }
    // SAFETY: the caller's contract: the epoch runs this after every reader that could hold
    // `ptr` has unpinned, and nothing else frees it.
    unsafe {
        guard.defer_unchecked(move || {
            quiet(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| free(ptr))).err());
        });
    };
}

#[cfg(all(test, not(larder_loom)))]
mod tests {
    use super::*;
    use crate::unwind::PayloadBomb;
    use std::sync::atomic::AtomicUsize;
    use std::thread::ThreadId;

    /// Each pointer's free panics with a payload whose `Drop` panics too: every one is still
    /// freed, and the first panic is the one passed on. (The later payloads were dropped
    /// unguarded, and the first of those drops unwound out of the loop, the rest not freed.)
    #[test]
    fn frees_go_on_when_a_later_panics_payload_panics_on_drop() {
        static FREED: AtomicUsize = AtomicUsize::new(0);
        unsafe fn free_and_panic(_: *mut ()) {
            FREED.fetch_add(1, Ordering::SeqCst);
            std::panic::panic_any(PayloadBomb(true));
        }
        let retired = |n: usize| -> Vec<Retired> {
            (0..n)
                .map(|_| Retired {
                    ptr: std::ptr::null_mut(),
                    free: free_and_panic,
                })
                .collect()
        };
        let first = std::panic::catch_unwind(|| {
            // SAFETY: the pointers are null and `free_and_panic` reads none.
            unsafe { free_batches(vec![retired(2), retired(3)]) }
        });
        assert_eq!(FREED.load(Ordering::SeqCst), 5, "every pointer freed");
        let mut first = first
            .expect("nothing unwinds out of free_batches")
            .expect("the first panic passed on");
        assert!(PayloadBomb::defuse(&mut first), "the free's own payload");
    }

    /// What a test retires: a block that counts its free, and whether the freeing thread was
    /// the one named in it.
    struct Tracked {
        freed: &'static AtomicUsize,
        freed_elsewhere: &'static AtomicUsize,
        owner: ThreadId,
        /// Retired from inside this block's free, as a value's `Drop` writing to a cache would.
        nested: Option<Box<Tracked>>,
    }

    /// Frees a `Tracked` made by `track`.
    unsafe fn free_tracked(ptr: *mut ()) {
        // SAFETY: `ptr` came from `Box::into_raw` in `track`, and the limbo frees it once.
        let tracked = unsafe { Box::from_raw(ptr.cast::<Tracked>()) };
        if std::thread::current().id() != tracked.owner {
            tracked.freed_elsewhere.fetch_add(1, Ordering::Relaxed);
        }
        tracked.freed.fetch_add(1, Ordering::Relaxed);
        if let Some(nested) = tracked.nested {
            let guard = epoch::pin();
            // SAFETY: the nested block was never shared with anyone, and is retired once.
            unsafe { retire(&guard, Box::into_raw(nested).cast(), free_tracked) };
        }
    }

    fn track(freed: &'static AtomicUsize, elsewhere: &'static AtomicUsize) -> Box<Tracked> {
        Box::new(Tracked {
            freed,
            freed_elsewhere: elsewhere,
            owner: std::thread::current().id(),
            nested: None,
        })
    }

    fn retire_tracked(tracked: Box<Tracked>) {
        retire_tracked_with(tracked, free_tracked);
    }

    /// Retires `tracked` to be freed by `free` (`free_tracked`, or a variant of it).
    fn retire_tracked_with(tracked: Box<Tracked>, free: unsafe fn(*mut ())) {
        let guard = epoch::pin();
        // SAFETY: the block was never shared with anyone, and is retired once; `free` frees
        // a `Tracked` made by `track`.
        unsafe { retire(&guard, Box::into_raw(tracked).cast(), free) };
    }

    /// Pins, flushes and collects until `done()`, retiring `filler()` blocks as it goes;
    /// panics if the epoch never gets there. Returns how many collections passed on a panic
    /// (a free that panicked).
    ///
    /// Bounded by time as well as by rounds: another test's thread may stay pinned for a
    /// while (printing a panic's backtrace, which the tests below cause on purpose, takes
    /// tens of milliseconds), and the epoch cannot advance meanwhile.
    fn drive(mut done: impl FnMut() -> bool, mut filler: impl FnMut()) -> usize {
        let start = std::time::Instant::now();
        let (mut rounds, mut panics) = (0, 0);
        while rounds < 100_000 || start.elapsed() < std::time::Duration::from_secs(30) {
            rounds += 1;
            if done() {
                return panics;
            }
            let collected = std::panic::catch_unwind(|| {
                let guard = epoch::pin();
                guard.flush();
                collect(&guard);
            });
            panics += usize::from(collected.is_err());
            filler();
        }
        panic!("the epoch never freed what was retired");
    }

    /// Retired blocks are freed once the epoch allows, and by the thread that retired them,
    /// even while another thread collects the epoch's garbage all the time (with one deferred
    /// call per block, that thread would free most of them).
    #[test]
    fn retired_blocks_are_freed_later_by_the_thread_that_retired_them() {
        static FREED: AtomicUsize = AtomicUsize::new(0);
        static ELSEWHERE: AtomicUsize = AtomicUsize::new(0);
        /// Stops the collecting thread when dropped, so that a failing `drive` does not
        /// leave the scope waiting for it forever.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    epoch::pin().flush();
                }
            });
            let _stop = Stop(&stop);
            let first = 3 * BATCH;
            for _ in 0..first {
                retire_tracked(track(&FREED, &ELSEWHERE));
            }
            // Retiring only keeps: nothing is sealed, let alone freed, before a collect.
            assert_eq!(FREED.load(Ordering::Relaxed), 0);
            drive(
                || FREED.load(Ordering::Relaxed) >= first,
                || retire_tracked(track(&FREED, &ELSEWHERE)),
            );
        });
        assert_eq!(ELSEWHERE.load(Ordering::Relaxed), 0);
    }

    /// A free that retires something (a value whose `Drop` writes to a cache) finds the limbo
    /// free to use, and what it retires is freed in turn.
    #[test]
    fn a_free_may_retire_more() {
        static FREED: AtomicUsize = AtomicUsize::new(0);
        static ELSEWHERE: AtomicUsize = AtomicUsize::new(0);
        for _ in 0..BATCH {
            let mut outer = track(&FREED, &ELSEWHERE);
            outer.nested = Some(track(&FREED, &ELSEWHERE));
            retire_tracked(outer);
        }
        drive(
            || FREED.load(Ordering::Relaxed) >= 2 * BATCH,
            || retire_tracked(track(&FREED, &ELSEWHERE)),
        );
    }

    /// Frees a `Tracked`, then panics, as a value whose `Drop` panics would.
    unsafe fn free_tracked_then_panic(ptr: *mut ()) {
        // SAFETY: as in `free_tracked`.
        unsafe { free_tracked(ptr) };
        panic!("a value's Drop panicked");
    }

    /// A value's `Drop` that panics while a batch is freed: the rest of the batch (and of the
    /// batches freed with it) is still freed, and the panic reaches the collecting caller
    /// afterwards. Stopping at the panic would leak the rest, which has left the limbo.
    #[test]
    fn a_panicking_drop_does_not_leak_the_rest_of_its_batch() {
        static FREED: AtomicUsize = AtomicUsize::new(0);
        static ELSEWHERE: AtomicUsize = AtomicUsize::new(0);
        for i in 0..2 * BATCH {
            let free = if i % BATCH == 1 {
                free_tracked_then_panic
            } else {
                free_tracked
            };
            retire_tracked_with(track(&FREED, &ELSEWHERE), free);
        }
        let panics = drive(|| FREED.load(Ordering::Relaxed) == 2 * BATCH, || {});
        assert_eq!(
            FREED.load(Ordering::Relaxed),
            2 * BATCH,
            "every block freed"
        );
        assert!(panics >= 1, "the panic reached the collector");
        assert_eq!(ELSEWHERE.load(Ordering::Relaxed), 0);
    }

    /// A value's `Drop` that panics when an exiting thread's limbo is freed, perhaps inside
    /// that thread's local destructors, where a panic aborts the process: the panic is dropped,
    /// and the rest is freed.
    #[test]
    fn a_panicking_drop_at_thread_exit_does_not_abort() {
        static FREED: AtomicUsize = AtomicUsize::new(0);
        static ELSEWHERE: AtomicUsize = AtomicUsize::new(0);
        std::thread::spawn(|| {
            for i in 0..3 {
                let free = if i == 1 {
                    free_tracked_then_panic
                } else {
                    free_tracked
                };
                retire_tracked_with(track(&FREED, &ELSEWHERE), free);
            }
        })
        .join()
        .expect("the retiring thread panicked");
        drive(|| FREED.load(Ordering::Relaxed) == 3, || {});
    }

    /// What a thread still holds when it exits goes to the epoch, and is freed by whichever
    /// thread collects it.
    #[test]
    fn an_exiting_thread_hands_its_limbo_to_the_epoch() {
        static FREED: AtomicUsize = AtomicUsize::new(0);
        static ELSEWHERE: AtomicUsize = AtomicUsize::new(0);
        let held = BATCH + 1;
        std::thread::spawn(move || {
            for _ in 0..held {
                retire_tracked(track(&FREED, &ELSEWHERE));
            }
        })
        .join()
        .expect("the retiring thread panicked");
        drive(|| FREED.load(Ordering::Relaxed) == held, || {});
    }
}

#[cfg(all(test, larder_loom))]
mod loom_model {
    use super::*;
    use crate::sync::{AtomicPtr, AtomicU64, UnsafeCell};
    use loom::thread;

    /// What the model retires: a cell a reader reads and the free overwrites, so that loom
    /// reports a free that is not ordered after the read.
    struct Cell(UnsafeCell<u64>);

    /// The model's free: the write a free is, without giving the memory back, so that a read
    /// after a too-early free is still a read of the cell, which loom reports, and not a read
    /// of freed memory. The model drops the box once the reader has joined.
    unsafe fn free_cell(ptr: *mut ()) {
        // SAFETY: `ptr` points to the model's `Cell`, which lives until the end of the run.
        let cell = unsafe { &*ptr.cast::<Cell>() };
        // SAFETY: the limbo's claim under test: no reader holds the cell any more. If one
        // does, loom reports the write as racing with its read.
        cell.0.with_mut(|v| unsafe { *v = 0 });
    }

    /// Frees `batches`, passing on a panic of the free (loom's report of a race) rather than
    /// dropping it as the limbo's own callers do: the model must fail on it.
    ///
    /// # Safety
    /// As [`free_batches`].
    unsafe fn free_loudly(batches: Vec<Vec<Retired>>) {
        // SAFETY: the caller's contract.
        if let Some(panic) = unsafe { free_batches(batches) } {
            std::panic::resume_unwind(panic);
        }
    }

    /// A reader holds a node while its writer unlinks it, retires it into a limbo and frees it
    /// as soon as the mark allows: the free must come after the read.
    ///
    /// The reader holds the node until the writer has tried twice to free it. Left to run
    /// freely, the reader had always unpinned before any free in the orders loom explores, and
    /// the model passed with the mark read `Relaxed`. Holding on is one more order a real
    /// reader can take (it is merely slow), and it is the one the limbo exists for.
    ///
    /// Seen failing on 2026-12-04 at `LOOM_MAX_PREEMPTIONS=2`, as `.ci/run` runs it: with
    /// batches freed one number before the mark, and with the mark read `Relaxed`. With the
    /// sealing call's `fetch_max` made `Relaxed` it passes, and rightly here: the call runs on
    /// the reader's thread, whose pin's `SeqCst` fence already releases its read. The `Release`
    /// is for a call run by a third thread; a third thread in this model did not finish in 10
    /// minutes.
    #[test]
    fn a_batch_is_freed_only_after_its_readers_unpin() {
        loom::model(|| {
            let cell = Box::into_raw(Box::new(Cell(UnsafeCell::new(7))));
            let slot = Arc::new(AtomicPtr::new(cell));
            // 1 once the writer has tried twice to free. Relaxed both ways: it must not order
            // the free before the read, which is the limbo's job.
            let tried = Arc::new(AtomicU64::new(0));
            let reader = {
                let slot = Arc::clone(&slot);
                let tried = Arc::clone(&tried);
                thread::spawn(move || {
                    let guard = epoch::pin();
                    // Acquire: pairs with nothing here (the cell was written before the
                    // thread started); the pin is what the model checks.
                    let p = slot.load(Ordering::Acquire);
                    if !p.is_null() {
                        while tried.load(Ordering::Relaxed) == 0 {
                            thread::yield_now();
                        }
                        // SAFETY: pinned before the unlink, so not freed yet (under test).
                        let seen = unsafe { &*p }.0.with(|v| unsafe { *v });
                        assert_eq!(seen, 7);
                    }
                    drop(guard);
                    // Collects too, so the sealing call may run here and reach the writer
                    // only through the mark.
                    epoch::pin().flush();
                })
            };
            let mut limbo = Limbo::new();
            {
                let guard = epoch::pin();
                let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
                // Unlinked while pinned; freed only by `free_cell`, once.
                limbo.push(Retired {
                    ptr: p.cast(),
                    free: free_cell,
                });
                limbo.seal_if_full(&guard);
            }
            for round in 0..4 {
                if round == 2 {
                    tried.store(1, Ordering::Relaxed);
                }
                epoch::pin().flush();
                if let Some(freeable) = limbo.take_freeable() {
                    // SAFETY: as above.
                    unsafe { free_loudly(freeable) };
                }
            }
            reader.join().unwrap();
            // The reader is gone: whatever is left can be freed now.
            let rest = limbo.take_all();
            // SAFETY: no other thread is left to read it.
            unsafe { free_loudly(vec![rest]) };
            // SAFETY: from `Box::into_raw` above; the reader has joined and the free is done.
            drop(unsafe { Box::from_raw(cell) });
        });
    }
}
