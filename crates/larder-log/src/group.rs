//! Group commit: many threads that each need their own record durable share one flush.
//!
//! A writer appends its record under the log's lock, releases the lock, and calls
//! [`GroupCommit::wait_durable`] with the number after the record's (its sequence number
//! plus one: every record below it is to be durable). If no flush is running,
//! it becomes the *leader*: it takes a [`SyncPoint`] (briefly re-taking the log's lock), which
//! covers every record appended so far by any thread, and flushes it with no lock held. The
//! writers that arrive meanwhile append behind the point and wait; when the flush ends, the
//! ones it covered return, and one of the rest leads the next flush, which covers all of them.
//! With `n` writers each flush makes up to `n` records durable, where a flush per write would
//! make one.
//!
//! **Gathering.** Left at that, `n` writers split into two cohorts that take turns: the flush
//! that releases one cohort is followed at once by a flush led from the other, which waited
//! through the first, before the released writers have appended again, so each flush covers
//! about `n / 2` records. So a leader first waits for the writers it expects: as many as were
//! waiting when the last flush ended (the ones it released are about to append again), for
//! at most as long as that flush took (and never more than [`MAX_GATHER`]). A lone
//! writer expects only itself and never waits; writers that stop writing cost each later
//! leader that bounded wait once, until a flush ends without them.
//!
//! A failed flush fails the log (see [`SyncPoint::flush`]); every waiter then gets
//! [`Error::Failed`], and nothing is retried.

use std::fmt;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::log::SyncPoint;

/// The longest a leader waits for the writers it expects before it flushes.
pub(crate) const MAX_GATHER: Duration = Duration::from_millis(2);

/// Shares flushes among the threads waiting for their records to be durable.
pub struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when a flush ends.
    flushed: Condvar,
    /// Signalled when a writer starts waiting, for a leader that gathers.
    arrived: Condvar,
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
    /// The records the threads inside `wait_durable` wait for, while not yet durable.
    pending: Vec<u64>,
    /// How many threads were waiting when the last flush ended, the ones it released
    /// included: what the next leader gathers.
    expected: usize,
    /// How long the last flush took.
    last_flush: Duration,
}

impl GroupCommit {
    /// A group commit for a log whose records below `durable` are durable already. After
    /// [`Log::open`](crate::Log::open) that is 0, not the log's
    /// [`next_seq`](crate::Log::next_seq): the records replayed from the active segment may be
    /// pages a crashed process left dirty in the page cache, which only the log's first sync
    /// makes durable.
    pub fn new(durable: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                durable,
                flushing: false,
                failed: None,
                flushes: 0,
                pending: Vec::new(),
                expected: 0,
                last_flush: Duration::ZERO,
            }),
            flushed: Condvar::new(),
            arrived: Condvar::new(),
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
    /// waiter, then and later. [`Error::Io`] of kind `InvalidInput` for a leader whose flush
    /// covered every record the log had without reaching `through`: records not appended yet,
    /// which no flush can make durable (the log and the group go on).
    pub fn wait_durable(
        &self,
        through: u64,
        mut take_point: impl FnMut() -> Result<SyncPoint, Error>,
    ) -> Result<(), Error> {
        {
            let mut state = self.lock();
            if through > state.durable {
                state.pending.push(through);
            }
        }
        self.arrived.notify_one();
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
            // Gathering (module doc): wait, briefly, for the writers the last flush released.
            let deadline = Instant::now() + state.last_flush.min(MAX_GATHER);
            while state.pending.len() < state.expected {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .arrived
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            drop(state);
            // Hands leadership back even if `take_point` panics, so no waiter is stranded.
            let mut lead = Leader {
                group: self,
                outcome: None,
                started: Instant::now(),
            };
            let result = take_point().and_then(SyncPoint::flush);
            lead.outcome = Some(result.as_ref().copied().map_err(Error::kind));
            drop(lead);
            // On success the point covered every record appended before it was taken, which
            // includes the caller's: the next look at the state returns. A point short of
            // `through` covered every record there was, so `through` names records that were
            // not appended: flushing again would only find nothing to write, round after round.
            let flushed = result?;
            if flushed < through {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "waited for the records below {through}, but the log has numbered only \
                         those below {flushed}: a record's own number, plus one, is its `through`"
                    ),
                )));
            }
        }
    }

    /// One past the last record known durable: every record below it is.
    pub fn durable(&self) -> u64 {
        self.lock().durable
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
    started: Instant,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut state = self.group.lock();
        state.flushing = false;
        state.last_flush = self.started.elapsed();
        // Every thread waiting now, the ones this flush releases included, is expected to
        // want the next flush too.
        state.expected = state.pending.len();
        match self.outcome {
            Some(Ok(through)) => {
                let durable = state.durable.max(through);
                state.durable = durable;
                state.flushes += 1;
                state.pending.retain(|&t| t > durable);
            }
            Some(Err(kind)) => {
                state.failed.get_or_insert(kind);
                state.pending.clear();
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
