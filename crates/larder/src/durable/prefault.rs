//! The durable cache's prefault thread: it faults in the log's next pages
//! ([`larder_log::Prefault`]) so that the writers do not.
//!
//! A page the log's file never had costs whoever touches it first: the kernel allocates a
//! page-cache page and zeroes it, 5 to 9 µs a page on this project's machine, where memory
//! the guest gave back must first come back from the host (`docs/BENCHMARKS.md`,
//! "Durability"). The log hands out the pages ahead of its records in chunks; until this
//! thread existed, the writer that got a chunk faulted it in itself once it had let go of the
//! log's lock. That kept the cost out of the lock, not off the write: at 1 KiB a record, four
//! to a page, it was most of a durable insert's time. This thread runs the chunks instead, on
//! a core that a cache with fewer writers than cores has spare; the log keeps 256 KiB of
//! pages ready ahead of its records, so a writer meets an unfaulted page only when the thread
//! falls behind, and then it faults that page itself, as before.
//!
//! The thread belongs to the log's writer (`Writer` in `mod.rs`) and stops with it: stopping
//! (or dropping) the [`Prefaulter`] waits for the chunk in hand, and the writer stops it
//! before its log closes, so no fault touches the log's files after that. If the thread cannot
//! be started (or has gone), [`Prefaulter::submit`] gives the chunk back for the caller to
//! run, so prefaulting degrades to what it was.

use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use larder_core::unwind;
use larder_log::Prefault;

/// Work the thread runs: a log's prefault, or a test's stand-in.
pub(super) trait Job: Send + 'static {
    fn run(self);
}

impl Job for Prefault {
    fn run(self) {
        Prefault::run(self);
    }
}

/// The thread and the way to it.
pub(super) struct Prefaulter<J: Job = Prefault> {
    /// `None` once stopped, or if the thread could not be started.
    jobs: Option<Sender<J>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Job> Prefaulter<J> {
    /// Starts the thread. If the system refuses it (too many threads, say), this prefaulter
    /// hands every job back to its caller instead.
    pub(super) fn start() -> Self {
        let (jobs, queue) = mpsc::channel::<J>();
        let spawned = std::thread::Builder::new()
            .name("larder-prefault".into())
            .spawn(move || {
                for job in queue {
                    job.run();
                }
            });
        match spawned {
            Ok(thread) => Self {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "larder: no prefault thread; the durable cache's writers fault its log's pages in themselves"
                );
                Self {
                    jobs: None,
                    thread: None,
                }
            }
        }
    }

    /// Queues `job` for the thread, or, without one, gives it back to be run by the caller
    /// (once it holds no lock: a fault can take microseconds a page).
    #[must_use = "a job handed back must be run, or its pages fault in during the appends"]
    pub(super) fn submit(&self, job: J) -> Option<J> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        }
    }

    /// Closes the queue and waits for the thread to finish what it was given. Later jobs
    /// come back to their callers, as without a thread.
    pub(super) fn stop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // A job that panicked has nothing left to clean up; the log is unaffected. A log's
            // prefault runs no user code, but the payload is dropped as every caught one is,
            // inside a catch: this may run in the writer's drop while a panic unwinds.
            unwind::quiet(thread.join().err());
        }
    }
}

impl<J: Job> Drop for Prefaulter<J> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;
    use std::time::Duration;

    /// Records the thread it ran on, after a pause: the drop that follows the submissions
    /// finds jobs still queued.
    struct Probe {
        ran_on: Arc<Mutex<Vec<ThreadId>>>,
        done: Arc<AtomicUsize>,
    }

    impl Job for Probe {
        fn run(self) {
            std::thread::sleep(Duration::from_millis(2));
            self.ran_on
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            self.done.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn jobs_run_on_the_thread_and_all_finish_before_the_drop_returns() {
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let prefaulter = Prefaulter::<Probe>::start();
        for _ in 0..5 {
            let job = Probe {
                ran_on: Arc::clone(&ran_on),
                done: Arc::clone(&done),
            };
            assert!(
                prefaulter.submit(job).is_none(),
                "a running thread takes every job"
            );
        }
        drop(prefaulter);
        assert_eq!(
            done.load(Ordering::SeqCst),
            5,
            "the drop waits for every queued job"
        );
        let ran_on = ran_on.lock().unwrap();
        assert!(
            ran_on.iter().all(|&t| t != std::thread::current().id()),
            "no job ran on the submitting thread"
        );
    }

    /// A panic payload whose own `Drop` panics, unless its thread unwinds already.
    struct PayloadBomb;

    impl Drop for PayloadBomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("a panic payload's drop panicked");
            }
        }
    }

    /// A job that panics with a [`PayloadBomb`].
    struct Explodes;

    impl Job for Explodes {
        fn run(self) {
            std::panic::panic_any(PayloadBomb);
        }
    }

    /// The thread of a job that panicked ends with the job's payload, which the join hands
    /// to `stop`; dropping it there must not unwind out of `stop` (nor, in a `Prefaulter`
    /// dropped while a panic unwinds, abort the process). A log's prefault runs no user code,
    /// so this guards the thread's contract rather than a case the durable cache meets.
    #[test]
    fn a_job_whose_panic_payload_panics_on_drop_does_not_unwind_out_of_stop() {
        let mut prefaulter = Prefaulter::<Explodes>::start();
        assert!(prefaulter.submit(Explodes).is_none());
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prefaulter.stop()));
        assert!(stopped.is_ok(), "the payload's drop unwound out of stop");
    }

    #[test]
    fn once_stopped_the_jobs_come_back() {
        let mut prefaulter = Prefaulter::<Probe>::start();
        prefaulter.stop();
        let job = Probe {
            ran_on: Arc::default(),
            done: Arc::default(),
        };
        assert!(prefaulter.submit(job).is_some());
    }

    #[test]
    fn without_a_thread_the_job_comes_back() {
        let prefaulter = Prefaulter::<Probe> {
            jobs: None,
            thread: None,
        };
        let job = Probe {
            ran_on: Arc::default(),
            done: Arc::default(),
        };
        assert!(prefaulter.submit(job).is_some());
    }
}
