//! Larder's janitor: a background thread that does maintenance for the caches registered with
//! it, so that expired entries leave (and their removal listeners fire) even when nobody
//! touches a cache.
//!
//! The crate knows nothing about caches: anything that implements [`Maintain`] can register.
//! A janitor holds its registrants *weakly*: it never keeps a cache alive, and a cache whose
//! last handle is dropped unregisters itself.
//!
//! ```
//! use larder_janitor::{Janitor, Maintain};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! struct Counter(AtomicUsize);
//! impl Maintain for Counter {
//!     fn run_pending_tasks(&self) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let janitor = Janitor::dedicated(Duration::from_millis(10));
//! let counter = Arc::new(Counter(AtomicUsize::new(0)));
//! let weak = Arc::downgrade(&counter);
//! let registration = janitor.register(weak);
//! while counter.0.load(Ordering::Relaxed) < 2 {
//!     std::thread::yield_now();
//! }
//! drop(registration); // the janitor's thread is gone when this returns
//! ```
//!
//! # Threads
//! [`Janitor::shared`] is one process-wide janitor, ticking every second, whose thread (named
//! `larder-janitor`) starts when the first registrant arrives and ends when the last one leaves.
//! [`Janitor::dedicated`] makes a janitor of its own with its own tick and thread. Either way:
//!
//! * Each tick the thread calls [`Maintain::run_pending_tasks`] on every live registrant, one
//!   after another, outside the janitor's own lock. A registrant that panics is not called
//!   again; the others go on. So they do when the thread drops a registrant's last handle
//!   (the others were dropped during its tick) and its `Drop` panics.
//! * A registrant that panics, or whose last handle is dropped while its [`Registration`] is
//!   kept, leaves at the end of the tick that finds it so: the janitor keeps no `Weak` to it
//!   (which would keep its allocation), and if it was the last, the thread ends, as when the
//!   last registration is dropped. The next [`Janitor::register`], or the last
//!   registration's drop, waits for that thread to exit.
//! * Dropping a [`Registration`] waits out its registrant's tick if one is running, so when the
//!   drop returns the janitor is not running the registrant, holds no strong reference to it,
//!   and never calls it again. A layer that must hear a cache's last removal before it shuts
//!   down relies on this. (A drop made inside that very tick, on the janitor's thread, cannot
//!   wait for it.)
//! * Dropping the last [`Registration`] wakes the thread and waits for it to exit, so when the
//!   drop returns no janitor thread is left (unless the drop runs on the janitor thread itself,
//!   which then exits as soon as its pass ends). That includes a thread whose last
//!   registration was dropped on it, in a tick, and which is still running that tick when a
//!   later registrant has started the next thread: the next last drop waits for both. So a
//!   tick that detaches its own registrant must not then wait for the thread that drops the
//!   janitor's next last registration. The handle of a thread that ended on its own is kept
//!   until then, or until the next [`Janitor::register`] finds it finished.
//!
//! # Latency
//! One thread serves every registrant, one after another, so a registrant's tick comes late by
//! as long as the ticks run before it in the pass take: "within a tick" holds only while every
//! registrant's tick is short. A cache's tick includes its eviction listener and removal
//! observers for what it expires, and a pass over every due entry of every shard (its size
//! bounds it), so on [`Janitor::shared`] one cache with a slow listener, or many entries due
//! at once, delays every other cache's expiry by as long; one whose tick never returns stops
//! every other cache's expiry, and blocks the drop of its own registration. A cache that
//! cannot wait for the others gets a [`Janitor::dedicated`] of its own. A janitor has one tick
//! for all its registrants: the shared one ticks every [`DEFAULT_TICK`], whatever lifetimes
//! its caches' entries have.

use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

/// Maintenance a janitor does for a registrant each tick.
pub trait Maintain: Send + Sync {
    /// Does the pending work (for a cache: removes what has expired). Should do a bounded
    /// amount of work per lock it takes, and not wait on a disk: it runs on the janitor's
    /// thread, and every other registrant waits with it (a durable cache sends its compactions,
    /// and its syncs on a shared janitor, to threads of their own).
    fn run_pending_tasks(&self);
}

/// The shared janitor's tick.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// The name of every janitor thread.
pub const THREAD_NAME: &str = "larder-janitor";

/// A handle to a janitor. Cheap to clone; clones drive the same thread.
#[derive(Clone)]
pub struct Janitor {
    shared: Arc<Shared>,
}

struct Shared {
    tick: Duration,
    state: Mutex<State>,
    /// Wakes the thread early: when its last registrant leaves.
    wake: Condvar,
    /// Wakes a registration's drop waiting for its registrant's tick to end.
    ticked: Condvar,
}

#[derive(Default)]
struct State {
    registrants: Vec<(u64, Weak<dyn Maintain>)>,
    next_id: u64,
    /// The running thread. A thread whose generation is no longer current exits at its next
    /// look at the state.
    thread: Option<JoinHandle<()>>,
    /// Threads whose generation ended on the thread itself, which may still be finishing their
    /// pass: one whose last registrant left without a registration's drop (dropped, or
    /// panicking: `Shared::end_tick`), or whose last registration was dropped in a tick on it
    /// (a registrant that detached itself, or whose last handle the thread dropped), which
    /// may still be running that registrant's code. The last registration's drop joins them
    /// (`register` joins those already finished, without waiting), so that no janitor thread
    /// is left once that drop returns: kept only while the current thread ran on, a thread
    /// still in a tick of the registrant that had detached itself outlived the drop that ended
    /// the next thread (`tests/lifecycle.rs`,
    /// `the_last_drop_waits_for_a_thread_whose_registrant_dropped_its_registration_in_its_tick`).
    ended: Vec<JoinHandle<()>>,
    generation: u64,
    /// The registrants whose tick is running, each with the thread running it (one at most,
    /// but a thread of an ended generation may be finishing a tick as the next one starts).
    ticking: Vec<(u64, ThreadId)>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is consistent between statements (no user code runs under this lock), so a
    // poisoned lock has nothing to repair.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Janitor {
    /// The process-wide janitor, ticking every [`DEFAULT_TICK`].
    pub fn shared() -> Janitor {
        static SHARED: std::sync::OnceLock<Janitor> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| Janitor::dedicated(DEFAULT_TICK))
            .clone()
    }

    /// A janitor of its own, whose thread wakes every `tick` (at least 1 ms) while it has
    /// registrants. A tick too long to add to the current time (`Duration::MAX`) never comes:
    /// the thread only waits to be ended.
    pub fn dedicated(tick: Duration) -> Janitor {
        Janitor {
            shared: Arc::new(Shared {
                tick: tick.max(Duration::from_millis(1)),
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                ticked: Condvar::new(),
            }),
        }
    }

    /// How often the janitor's thread runs.
    pub fn tick(&self) -> Duration {
        self.shared.tick
    }

    /// Whether the janitor's thread is running (it is while anything is registered).
    pub fn is_running(&self) -> bool {
        lock(&self.shared.state).thread.is_some()
    }

    /// Registers `registrant` for maintenance every tick, starting the thread if it is not
    /// running (and waiting until it has started). The registrant stays registered until the
    /// returned [`Registration`] is dropped or the registrant itself is (the janitor only holds
    /// it weakly).
    ///
    /// # Errors
    /// The operating system's error if it refuses to start the thread; `registrant` is then
    /// not registered.
    pub fn register(&self, registrant: Weak<dyn Maintain>) -> io::Result<Registration> {
        let mut state = lock(&self.shared.state);
        if state.thread.is_none() {
            state.generation += 1;
            let generation = state.generation;
            let shared = Arc::clone(&self.shared);
            let (started, has_started) = std::sync::mpsc::sync_channel(0);
            let handle = thread::Builder::new()
                .name(THREAD_NAME.to_string())
                .spawn(move || {
                    // The thread has its name by now; tell `register`, which waits for it, so
                    // the thread is visible (under its name) once `register` returns.
                    let _ = started.send(());
                    shared.run(generation)
                })?;
            let _ = has_started.recv();
            state.thread = Some(handle);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.registrants.push((id, registrant));
        // Joined once the lock is released: it takes the lock on its way out. One still
        // running may be in a tick (of a registrant that detached itself there), user code that
        // `register` must not wait for: it stays for the last registration's drop.
        let (finished, running) = std::mem::take(&mut state.ended)
            .into_iter()
            .partition(|h| h.is_finished());
        state.ended = running;
        drop(state);
        join_all(finished);
        Ok(Registration {
            shared: Arc::clone(&self.shared),
            id,
        })
    }
}

impl Shared {
    /// The janitor thread's loop, for as long as `generation` is current.
    fn run(&self, generation: u64) {
        // `None`: a tick so long (`Duration::MAX`, say) that its time cannot be represented;
        // the thread then only waits to be ended.
        let mut due = Instant::now().checked_add(self.tick);
        loop {
            let registrants: Vec<(u64, Weak<dyn Maintain>)> = {
                let mut state = lock(&self.state);
                loop {
                    if state.generation != generation {
                        return;
                    }
                    let now = Instant::now();
                    state = match due {
                        Some(due) if now >= due => break,
                        Some(due) => {
                            self.wake
                                .wait_timeout(state, due - now)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                        None => self
                            .wake
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner),
                    };
                }
                state.registrants.clone()
            };
            due = Instant::now().checked_add(self.tick);
            for (id, registrant) in registrants {
                if !self.start_tick(id) {
                    continue;
                }
                // A registrant gone (its last handle dropped while its registration was kept)
                // leaves, as one that panics does: kept listed, its `Weak` would keep its
                // allocation, and this thread, for as long as the registration lives.
                let mut leaves = true;
                if let Some(registrant) = registrant.upgrade() {
                    leaves = false;
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        registrant.run_pending_tasks()
                    }));
                    if let Err(panic) = ran {
                        leaves = true;
                        quiet(panic);
                    }
                    // Dropped here, before the tick ends and the next registrant: if it was
                    // the last handle, the registrant (and its registration) goes now, on this
                    // thread. Its `Drop` is user code too (a cache's drops its values), and a
                    // panic there would end the thread, and with it every other registrant's
                    // maintenance.
                    if let Err(panic) =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(registrant)))
                    {
                        quiet(panic);
                    }
                }
                self.end_tick(id, leaves, generation);
            }
        }
    }

    /// Marks `id`'s tick as running on this thread, unless `id` has left since the pass
    /// copied the registrants: its registration's drop, which saw no tick of it running, has
    /// returned (or is returning), and promised that no tick follows.
    fn start_tick(&self, id: u64) -> bool {
        let mut state = lock(&self.state);
        if !state.registrants.iter().any(|(i, _)| *i == id) {
            return false;
        }
        state.ticking.push((id, thread::current().id()));
        true
    }

    /// Marks `id`'s tick as ended, unregistering it if it `leaves` (it panicked, or is gone),
    /// and wakes a registration's drop waiting for it. The thread of `generation` ends with
    /// its last registrant, as when the last registration is dropped: the janitor runs a thread
    /// only while something is registered.
    fn end_tick(&self, id: u64, leaves: bool, generation: u64) {
        let mut state = lock(&self.state);
        if let Some(at) = state.ticking.iter().position(|&(i, _)| i == id) {
            state.ticking.swap_remove(at);
        }
        if leaves {
            state.registrants.retain(|(i, _)| *i != id);
            if state.registrants.is_empty() && state.generation == generation {
                // The pass goes on over registrants no longer listed, so runs no user code,
                // and the loop then sees the new generation and returns.
                state.generation += 1;
                let ended = state.thread.take();
                state.ended.extend(ended);
            }
        }
        drop(state);
        self.ticked.notify_all();
    }
}

/// Drops a caught panic's payload, whose own `Drop` may panic in turn, on the janitor's
/// thread, where no caller would receive it. (`larder_core::unwind::quiet` states the same
/// rule for the crates above; this crate is below them.) The payload of a panic in that
/// `Drop` is forgotten, not dropped: its own `Drop` may panic too, and so on without end, and
/// one escaping here would end the thread with a tick unfinished.
fn quiet(panic: Box<dyn std::any::Any + Send>) {
    if let Err(inner) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)))
    {
        std::mem::forget(inner);
    }
}

impl fmt::Debug for Janitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("Janitor")
            .field("tick", &self.shared.tick)
            .field("registrants", &state.registrants.len())
            .field("running", &state.thread.is_some())
            .finish()
    }
}

/// A registrant's place with a janitor. Dropping it unregisters, once the registrant's tick in
/// progress (if any) has ended; dropping the janitor's last one stops its thread and waits for
/// it (see the crate docs).
pub struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let ended = {
            let mut state = lock(&self.shared.state);
            state.registrants.retain(|(id, _)| *id != self.id);
            // Out of the list, the registrant gets no tick that has not started yet
            // (`Shared::start_tick`); one that has is waited out, unless it is running on this
            // very thread (it dropped its own registration), which cannot wait for itself.
            let me = thread::current().id();
            while state
                .ticking
                .iter()
                .any(|&(id, on)| id == self.id && on != me)
            {
                state = self
                    .shared
                    .ticked
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if !state.registrants.is_empty() {
                return;
            }
            state.generation += 1;
            let thread = state.thread.take();
            state.ended.extend(thread);
            // On a janitor thread (its tick dropped the registration), that thread cannot
            // wait for itself: it sees the new generation and exits once its pass ends, and
            // stays listed for the next last drop, which joins it, or `register`.
            let me = thread::current().id();
            let (mine, others) = std::mem::take(&mut state.ended)
                .into_iter()
                .partition(|h| h.thread().id() == me);
            state.ended = mine;
            others
        };
        self.shared.wake.notify_all();
        join_all(ended);
    }
}

/// Waits for janitor threads whose generation has ended (none of them the current thread). A
/// thread may be finishing a tick of a registrant whose registration was dropped in it (on
/// that thread, which could not wait for itself); past that, it runs no user code (a panic in
/// a registrant is caught), so joining cannot fail.
fn join_all(ended: Vec<JoinHandle<()>>) {
    for handle in ended {
        let _ = handle.join();
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
