//! Group commit: many threads that each need their own record durable share one flush.
//!
//! A writer appends its record under the log's lock, releases the lock, and calls
//! [`GroupCommit::wait_durable`] with the record's sequence number. If no flush is running,
//! it becomes the *leader*: it takes a [`SyncPoint`] (briefly re-taking the log's lock), which
//! covers every record appended so far by any thread, and flushes it with no lock held. The
//! writers that arrive meanwhile append behind the point and wait; when the flush ends, the
//! ones it covered return, and one of the rest leads the next flush, which covers all of them.
//! With `n` writers each flush makes up to `n` records durable, where a flush per write would
//! make one.
//!
//! A failed flush fails the log (see [`SyncPoint::flush`]); every waiter then gets
//! [`Error::Failed`], and nothing is retried.

use std::fmt;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::Error;
use crate::log::SyncPoint;

/// Shares flushes among the threads waiting for their records to be durable.
pub struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when a flush ends.
    flushed: Condvar,
}

struct State {
    /// Every record with a sequence number below this is durable.
    durable: u64,
    /// A leader's flush is running.
    flushing: bool,
    /// The first failure's kind.
    failed: Option<io::ErrorKind>,
    /// How many flushes ran: for tests and benchmarks.
    flushes: u64,
}

impl GroupCommit {
    /// A group commit for a log whose records below `durable` are durable already (after
    /// recovery: the log's [`next_seq`](crate::Log::next_seq)).
    pub fn new(durable: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                durable,
                flushing: false,
                failed: None,
                flushes: 0,
            }),
            flushed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock and each update is one statement, so a poisoned
        // lock holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once every record with a sequence number below `through` is durable, leading
    /// a flush if none is running: `take_point` is then called (it should lock the log and
    /// return [`Log::sync_point`](crate::Log::sync_point)).
    ///
    /// # Errors
    /// The flush's error for the thread that led it; [`Error::Failed`] for every other
    /// waiter, then and later.
    pub fn wait_durable(
        &self,
        through: u64,
        mut take_point: impl FnMut() -> Result<SyncPoint, Error>,
    ) -> Result<(), Error> {
        loop {
            let mut state = self.lock();
            loop {
                if state.durable >= through {
                    return Ok(());
                }
                if let Some(kind) = state.failed {
                    return Err(Error::Failed { kind });
                }
                if !state.flushing {
                    break;
                }
                state = self
                    .flushed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.flushing = true;
            drop(state);
            // Hands leadership back even if `take_point` panics, so no waiter is stranded.
            let mut lead = Leader {
                group: self,
                outcome: None,
            };
            let result = take_point().and_then(SyncPoint::flush);
            lead.outcome = Some(result.as_ref().copied().map_err(Error::kind));
            drop(lead);
            // On success the point covered every record appended before it was taken, which
            // includes the caller's: the next look at the state returns.
            result?;
        }
    }

    /// How many flushes have run: with many writers, far fewer than the records they made
    /// durable.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }
}

/// The leader's duty to publish its flush's outcome and wake the waiters.
struct Leader<'a> {
    group: &'a GroupCommit,
    /// `Ok(through)` or the failure's kind; `None` if the leader unwound before flushing.
    outcome: Option<Result<u64, io::ErrorKind>>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut state = self.group.lock();
        state.flushing = false;
        match self.outcome {
            Some(Ok(through)) => {
                state.durable = state.durable.max(through);
                state.flushes += 1;
            }
            Some(Err(kind)) => {
                state.failed.get_or_insert(kind);
            }
            None => {}
        }
        drop(state);
        self.group.flushed.notify_all();
    }
}

impl fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("GroupCommit")
            .field("durable", &state.durable)
            .field("flushing", &state.flushing)
            .field("failed", &state.failed)
            .finish()
    }
}
