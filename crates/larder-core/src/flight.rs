//! Single-flight loading: one `init` per absent key, however many callers ask at once.
//!
//! The first caller of `get_with` for an absent key (the *loader*) publishes a pending node in
//! the shard's table, registers a [`Flight`] for it, releases the shard lock and runs `init`.
//! Later callers for the same key find the pending node under the lock, take the flight and
//! block on it, without holding any lock. Plain readers (`get`) skip pending nodes: to them the
//! key is still absent. When `init` returns, the loader writes the value into the node, marks
//! it ready, queues it for eviction and finishes the flight with the value, waking the waiters,
//! all before it releases the shard lock: what runs as the lock is released (the eviction
//! listener, told of what the load evicted; the `Drop` of values freed) is user code, which may
//! wait for a load that is waiting for this one.
//!
//! What can go wrong, and what happens:
//!
//! * `init` panics: the loader's drop guard unpublishes the node and finishes the flight as
//!   [`Outcome::Abandoned`]; each waiter retries from the start, and the first becomes the new
//!   loader. The panic continues up the loader's own stack.
//! * `init` of `try_get_with` fails: nothing is cached and every waiter receives the same
//!   `Arc<E>` ([`Outcome::Failed`]). A waiter whose error type differs (a `get_with`, or a
//!   `try_get_with` with another `E`, or a `try_get_with_unshared`) retries instead.
//! * `init` of `try_get_with_unshared` fails: its error goes to the loader alone, and the flight
//!   ends as [`Outcome::Abandoned`], so each waiter retries as after a panic.
//!   `optionally_get_with` is a `try_get_with` whose shared failure is `None`.
//! * `init` calls `get_with` for its own key: the flight records its loader's thread, and a
//!   caller that would wait on its own flight panics with a message instead of deadlocking.
//! * An `insert`, `remove` or `clear` of the key meanwhile detaches the pending node; the load
//!   still completes for its callers, but its value is not stored over the newer state.

use crate::sync::{current_thread_id, Condvar, Mutex, ThreadId};
use std::any::Any;
use std::sync::Arc as StdArc;

/// How a load ended.
pub(crate) enum Outcome<V> {
    Loading,
    Loaded(V),
    Failed(StdArc<dyn Any + Send + Sync>),
    Abandoned,
}

pub(crate) struct Flight<V> {
    outcome: Mutex<Outcome<V>>,
    finished: Condvar,
    loader: ThreadId,
}

impl<V: Clone> Flight<V> {
    /// A flight whose loader is the calling thread.
    pub(crate) fn new() -> Self {
        Flight {
            outcome: Mutex::new(Outcome::Loading),
            finished: Condvar::new(),
            loader: current_thread_id(),
        }
    }

    /// Whether the calling thread is this flight's loader.
    pub(crate) fn is_loader(&self) -> bool {
        self.loader == current_thread_id()
    }

    /// Records the outcome and wakes every waiter.
    pub(crate) fn finish(&self, outcome: Outcome<V>) {
        *self.outcome.lock() = outcome;
        self.finished.notify_all();
    }

    /// Blocks until the load ends and returns its outcome (a clone of it for each waiter).
    pub(crate) fn wait(&self) -> Outcome<V> {
        let mut outcome = self.outcome.lock();
        loop {
            match &*outcome {
                Outcome::Loading => outcome = crate::sync::wait(&self.finished, outcome),
                Outcome::Loaded(v) => return Outcome::Loaded(v.clone()),
                Outcome::Failed(e) => return Outcome::Failed(StdArc::clone(e)),
                Outcome::Abandoned => return Outcome::Abandoned,
            }
        }
    }
}

impl<V> std::fmt::Debug for Flight<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("loader", &self.loader)
            .finish_non_exhaustive()
    }
}
