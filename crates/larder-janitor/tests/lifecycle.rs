//! A janitor's thread: it runs its registrants every tick, holds them weakly, survives a
//! registrant's panic, never runs a registrant once its registration's drop has returned, and
//! is gone once the last registration is dropped.
//!
//! Each test uses a dedicated janitor, so tests running in parallel do not share a thread.
//! Waiting for a tick is a bounded spin on what the thread did, never a sleep.

use larder_janitor::{Janitor, Maintain, THREAD_NAME};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counter {
    runs: AtomicUsize,
    thread: Mutex<Option<String>>,
}

impl Maintain for Counter {
    fn run_pending_tasks(&self) {
        *self.thread.lock().unwrap() = std::thread::current().name().map(str::to_string);
        self.runs.fetch_add(1, Ordering::SeqCst);
    }
}

/// Spins until `done()` holds, failing after 20 s (a janitor ticking every few ms that has
/// not run by then is broken, however loaded the machine).
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::yield_now();
    }
}

fn counter() -> (Arc<Counter>, std::sync::Weak<dyn Maintain>) {
    let c = Arc::new(Counter::default());
    let weak: std::sync::Weak<dyn Maintain> = Arc::downgrade(&(c.clone() as Arc<dyn Maintain>));
    (c, weak)
}

#[test]
fn runs_registrants_every_tick_on_its_own_named_thread_and_stops_with_the_last() {
    let janitor = Janitor::dedicated(Duration::from_millis(2));
    assert!(
        !janitor.is_running(),
        "no thread before the first registrant"
    );
    let (a, wa) = counter();
    let (b, wb) = counter();
    let ra = janitor.register(wa).unwrap();
    let rb = janitor.register(wb).unwrap();
    assert!(janitor.is_running());
    wait_for("three runs of each", || {
        a.runs.load(Ordering::SeqCst) >= 3 && b.runs.load(Ordering::SeqCst) >= 3
    });
    assert_eq!(a.thread.lock().unwrap().as_deref(), Some(THREAD_NAME));
    drop(ra);
    assert!(janitor.is_running(), "one registrant left");
    let before = a.runs.load(Ordering::SeqCst);
    wait_for("b runs on", || b.runs.load(Ordering::SeqCst) >= 6);
    assert_eq!(
        a.runs.load(Ordering::SeqCst),
        before,
        "unregistered: not run again"
    );
    drop(rb);
    assert!(
        !janitor.is_running(),
        "the last drop waited for the thread to end"
    );
    // A new registrant starts a new thread.
    let (c, wc) = counter();
    let rc = janitor.register(wc).unwrap();
    wait_for("a run on the new thread", || {
        c.runs.load(Ordering::SeqCst) >= 1
    });
    drop(rc);
    assert!(!janitor.is_running());
}

#[test]
fn holds_registrants_weakly() {
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let (a, wa) = counter();
    let registration = janitor.register(wa.clone()).unwrap();
    wait_for("a run", || a.runs.load(Ordering::SeqCst) >= 1);
    drop(a);
    // A run holds a strong reference while it runs (the janitor upgrades the registrant's
    // `Weak` for it), so one may outlive `a` for a moment: what the janitor must not do is
    // keep one. (Asserted at once, this failed now and then under load.)
    wait_for("the janitor to keep no strong reference", || {
        wa.upgrade().is_none()
    });
    drop(registration);
    assert!(!janitor.is_running());
}

/// A registrant dropped while its registration is kept (a `Maintain` that does not own its
/// `Registration`, as a cache does) leaves the janitor at its next tick, as a panicking one
/// does: the janitor keeps no `Weak` to it, and its thread, left with nothing to serve, ends.
/// The dead `Weak` stayed listed until the registration's drop, which might never come,
/// keeping the registrant's allocation and a thread waking every tick for nothing.
#[test]
fn a_registrant_dropped_before_its_registration_leaves_and_the_thread_ends() {
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let (a, wa) = counter();
    let registration = janitor.register(wa).unwrap();
    wait_for("a run", || a.runs.load(Ordering::SeqCst) >= 1);
    drop(a);
    wait_for("the thread to end with its last registrant gone", || {
        !janitor.is_running()
    });
    assert!(
        format!("{janitor:?}").contains("registrants: 0"),
        "{janitor:?}"
    );
    // Its registration's drop, later, finds nothing to undo.
    drop(registration);
    assert!(!janitor.is_running());
    // A panicking registrant, alone, leaves the same way.
    let bad = Arc::new(Panicker(AtomicUsize::new(0)));
    let weak_bad: std::sync::Weak<dyn Maintain> =
        Arc::downgrade(&(bad.clone() as Arc<dyn Maintain>));
    let rb = janitor.register(weak_bad).unwrap();
    wait_for("the thread to end with its panicking registrant", || {
        !janitor.is_running()
    });
    assert_eq!(bad.0.load(Ordering::SeqCst), 1);
    // The janitor still serves whoever registers next, on a new thread.
    let (c, wc) = counter();
    let rc = janitor.register(wc).unwrap();
    wait_for("a run on the new thread", || {
        c.runs.load(Ordering::SeqCst) >= 1
    });
    drop(rb);
    assert!(janitor.is_running(), "c is still registered");
    drop(rc);
    assert!(!janitor.is_running());
}

struct Panicker(AtomicUsize);

impl Maintain for Panicker {
    fn run_pending_tasks(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a registrant's bug");
    }
}

#[test]
fn a_panicking_registrant_is_dropped_and_the_others_go_on() {
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let bad = Arc::new(Panicker(AtomicUsize::new(0)));
    let weak_bad: std::sync::Weak<dyn Maintain> =
        Arc::downgrade(&(bad.clone() as Arc<dyn Maintain>));
    let (good, wg) = counter();
    let rb = janitor.register(weak_bad).unwrap();
    let rg = janitor.register(wg).unwrap();
    wait_for("good runs after the panic", || {
        good.runs.load(Ordering::SeqCst) >= 5
    });
    assert_eq!(bad.0.load(Ordering::SeqCst), 1, "called once, then dropped");
    drop((rb, rg));
    assert!(!janitor.is_running());
}

#[test]
fn the_shared_janitor_ticks_every_second() {
    assert_eq!(Janitor::shared().tick(), Duration::from_secs(1));
    assert_eq!(
        Janitor::dedicated(Duration::ZERO).tick(),
        Duration::from_millis(1),
        "ticks are at least a millisecond"
    );
}

/// A tick too long to add to the current time (`Duration::MAX`) is a janitor that never
/// ticks, not a thread that panics computing its first deadline: the thread waits until the
/// last registration ends it, and the join in that drop finds it ended normally.
#[test]
fn a_tick_of_duration_max_never_ticks_and_does_not_panic() {
    static JANITOR_PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Another test's registrant panics on purpose on a janitor thread; this one's would
        // come from the time arithmetic in std.
        let from_std_time = info
            .location()
            .is_some_and(|l| l.file().ends_with("time.rs"));
        if std::thread::current().name() == Some(THREAD_NAME) && from_std_time {
            JANITOR_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let janitor = Janitor::dedicated(Duration::MAX);
    assert_eq!(janitor.tick(), Duration::MAX);
    let (c, weak) = counter();
    let registration = janitor.register(weak).unwrap();
    assert!(janitor.is_running());
    // Dropping the last registration wakes the thread and joins it: by then, any panic of
    // its first steps has happened.
    drop(registration);
    assert!(!janitor.is_running());
    assert_eq!(c.runs.load(Ordering::SeqCst), 0, "it never ticked");
    assert_eq!(
        JANITOR_PANICS.load(Ordering::SeqCst),
        0,
        "the janitor's thread panicked"
    );
}

/// A registrant whose tick waits until the test has dropped its own handle, so that the
/// janitor's handle, dropped after the tick, is the last one; its `Drop` then panics.
struct DroppedByTheJanitor {
    in_tick: std::sync::mpsc::SyncSender<()>,
    handle_dropped: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Maintain for DroppedByTheJanitor {
    fn run_pending_tasks(&self) {
        let _ = self.in_tick.try_send(());
        let _ = self.handle_dropped.lock().unwrap().recv();
    }
}

impl Drop for DroppedByTheJanitor {
    fn drop(&mut self) {
        panic!("a registrant's Drop panicked (on purpose)");
    }
}

/// A registrant whose last handle goes on the janitor's thread (a cache dropped while its tick
/// runs) is dropped there, and its `Drop` (a cache's runs its values' `Drop`) may panic: the
/// thread goes on serving the others, as after a panicking tick.
#[test]
fn a_registrant_dropped_by_the_janitor_whose_drop_panics_does_not_end_the_thread() {
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let (good, wg) = counter();
    let rg = janitor.register(wg).unwrap();
    let (in_tick, tick_started) = std::sync::mpsc::sync_channel(1);
    let (handle_dropped, wait_for_drop) = std::sync::mpsc::channel();
    let bad = Arc::new(DroppedByTheJanitor {
        in_tick,
        handle_dropped: Mutex::new(wait_for_drop),
    });
    let weak_bad: std::sync::Weak<dyn Maintain> =
        Arc::downgrade(&(bad.clone() as Arc<dyn Maintain>));
    let rb = janitor.register(weak_bad).unwrap();
    tick_started.recv().unwrap();
    // The janitor holds the registrant now; from here its handle is the last.
    drop(bad);
    handle_dropped.send(()).unwrap();
    drop(rb);
    let before = good.runs.load(Ordering::SeqCst);
    wait_for("the other registrant runs on", || {
        good.runs.load(Ordering::SeqCst) >= before + 3
    });
    drop(rg);
    assert!(!janitor.is_running());
}

/// A registrant whose first tick after it is armed tells the test it has begun, then waits up
/// to `hold` for the test's word, and notes whether it came.
struct Held {
    runs: AtomicUsize,
    armed: AtomicBool,
    began: std::sync::mpsc::SyncSender<()>,
    word: Mutex<std::sync::mpsc::Receiver<()>>,
    hold: Duration,
    heard: AtomicBool,
    /// Raised once `heard` says what the armed tick heard.
    told: AtomicBool,
}

impl Maintain for Held {
    fn run_pending_tasks(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.armed.swap(false, Ordering::SeqCst) {
            self.began.send(()).unwrap();
            let heard = self.word.lock().unwrap().recv_timeout(self.hold).is_ok();
            self.heard.store(heard, Ordering::SeqCst);
            self.told.store(true, Ordering::SeqCst);
        }
    }
}

/// A [`Held`], unarmed, with the ends the test keeps: where its tick says it has begun, and
/// where the test gives its word.
fn held(
    hold: Duration,
) -> (
    Arc<Held>,
    std::sync::Weak<dyn Maintain>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (began, on_begun) = std::sync::mpsc::sync_channel(1);
    let (give_word, word) = std::sync::mpsc::channel();
    let h = Arc::new(Held {
        runs: AtomicUsize::new(0),
        armed: AtomicBool::new(false),
        began,
        word: Mutex::new(word),
        hold,
        heard: AtomicBool::new(false),
        told: AtomicBool::new(false),
    });
    let weak: std::sync::Weak<dyn Maintain> = Arc::downgrade(&(h.clone() as Arc<dyn Maintain>));
    (h, weak, on_begun, give_word)
}

/// A registration's drop returns only once its registrant's tick in progress has ended, also
/// when it is not the janitor's last (whose drop joins the thread anyway): a cache shutting
/// down relies on hearing every removal that tick makes. The tick waits 300 ms for word that
/// the drop has returned; with the drop waiting, it never comes.
#[test]
fn a_registrations_drop_waits_out_its_registrants_tick() {
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let (other, wo) = counter();
    let ro = janitor.register(wo).unwrap();
    let (h, wh, on_begun, give_word) = held(Duration::from_millis(300));
    h.armed.store(true, Ordering::SeqCst);
    let rh = janitor.register(wh).unwrap();
    on_begun.recv().unwrap();
    let dropper = std::thread::spawn(move || {
        drop(rh);
        give_word.send(()).unwrap();
    });
    dropper.join().unwrap();
    // Ended by now if the drop waited for it; if not, it ends once it has heard the word,
    // which it then notes (read at once, `heard` could still be unset, and the check pass).
    wait_for("the held tick to end", || h.told.load(Ordering::SeqCst));
    assert!(
        !h.heard.load(Ordering::SeqCst),
        "the drop returned while the tick ran"
    );
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    let before = other.runs.load(Ordering::SeqCst);
    wait_for("the other registrant runs on", || {
        other.runs.load(Ordering::SeqCst) >= before + 3
    });
    assert_eq!(h.runs.load(Ordering::SeqCst), 1, "run after its drop");
    drop(ro);
    assert!(!janitor.is_running());
}

/// A registration dropped while the pass that copied it is busy with another registrant
/// returns at once (its own registrant is not running), and the pass then skips it: its drop
/// promised that no tick follows.
#[test]
fn a_registrant_dropped_during_a_pass_is_not_run_later_in_it() {
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let (h, wh, on_begun, give_word) = held(Duration::from_secs(20));
    let rh = janitor.register(wh).unwrap();
    let (later, wl) = counter();
    let rl = janitor.register(wl).unwrap();
    // Once `later` has run, every pass that starts copies it, after `h`.
    wait_for("a pass with both", || {
        later.runs.load(Ordering::SeqCst) >= 1
    });
    h.armed.store(true, Ordering::SeqCst);
    on_begun.recv().unwrap();
    drop(rl);
    let before = later.runs.load(Ordering::SeqCst);
    give_word.send(()).unwrap();
    let runs = h.runs.load(Ordering::SeqCst);
    wait_for("passes after the held one", || {
        h.runs.load(Ordering::SeqCst) >= runs + 2
    });
    assert_eq!(
        later.runs.load(Ordering::SeqCst),
        before,
        "run after its drop returned"
    );
    drop(rh);
    assert!(!janitor.is_running());
}

/// A panic payload whose `Drop` panics with a `Chain` one shorter, down to `Chain(0)`.
struct Chain(u32);

impl Drop for Chain {
    fn drop(&mut self) {
        if self.0 > 0 {
            std::panic::panic_any(Chain(self.0 - 1));
        }
    }
}

/// A registrant that panics with a [`Chain`] of the given length.
struct PanicsWithAChain(AtomicUsize, u32);

impl Maintain for PanicsWithAChain {
    fn run_pending_tasks(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::panic::panic_any(Chain(self.1));
    }
}

/// A registrant's panic whose payload's `Drop` panics, with a payload whose `Drop` panics
/// too, is dropped inside a catch on the janitor's thread: the thread goes on serving the
/// others, and ends normally, so the join in the last registration's drop has no payload to
/// drop. (With the second payload dropped unguarded, a chain of two ended the thread in the
/// middle of its tick: the others were never run again, and the registrations' drops waited
/// for that tick for ever.)
#[test]
fn a_registrant_panicking_with_payloads_that_panic_on_drop_does_not_end_the_thread() {
    for length in [1, 2, 3] {
        // On a thread of its own, so that a registration's drop that hangs fails the test
        // instead of hanging it (the drop may run as a failed check unwinds, too).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let janitor = Janitor::dedicated(Duration::from_millis(1));
            let bad = Arc::new(PanicsWithAChain(AtomicUsize::new(0), length));
            let weak_bad: std::sync::Weak<dyn Maintain> =
                Arc::downgrade(&(bad.clone() as Arc<dyn Maintain>));
            let (good, wg) = counter();
            let rb = janitor.register(weak_bad).unwrap();
            let rg = janitor.register(wg).unwrap();
            wait_for("the bad registrant's tick", || {
                bad.0.load(Ordering::SeqCst) == 1
            });
            let before = good.runs.load(Ordering::SeqCst);
            wait_for("the other registrant runs on", || {
                good.runs.load(Ordering::SeqCst) >= before + 3
            });
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop((rb, rg))));
            assert!(dropped.is_ok(), "the last registration's drop panicked");
            assert!(!janitor.is_running());
            let _ = tx.send(());
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Ok(()),
            "a chain of {length}: a check failed (see its panic above) or a drop hung"
        );
    }
}

/// A registrant that, at its first tick once armed, drops its own registration (the janitor's
/// last) on the janitor's thread, says so, then waits up to `hold` for the test's word and
/// notes whether it came.
struct DetachesItself {
    registration: Mutex<Option<larder_janitor::Registration>>,
    armed: AtomicBool,
    began: std::sync::mpsc::SyncSender<()>,
    word: Mutex<std::sync::mpsc::Receiver<()>>,
    hold: Duration,
    heard: AtomicBool,
    ended: std::sync::mpsc::SyncSender<()>,
}

impl Maintain for DetachesItself {
    fn run_pending_tasks(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            drop(self.registration.lock().unwrap().take());
            self.began.send(()).unwrap();
            let heard = self.word.lock().unwrap().recv_timeout(self.hold).is_ok();
            self.heard.store(heard, Ordering::SeqCst);
            self.ended.send(()).unwrap();
        }
    }
}

/// A thread whose generation ended by a drop on itself (its registrant detached itself in its
/// tick) may go on running that tick; a later registrant starts a new thread, and the drop of
/// its registration, the janitor's last, made on another thread, returns only once both threads
/// are gone, as the crate docs promise. The old thread's handle was let go, so that drop
/// joined the new thread alone and returned with the old one still in its tick. The tick waits
/// 300 ms for word that the drop has returned; with the drop waiting, it never comes.
#[test]
fn the_last_drop_waits_for_a_thread_whose_registrant_dropped_its_registration_in_its_tick() {
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let (began, on_begun) = std::sync::mpsc::sync_channel(1);
    let (give_word, word) = std::sync::mpsc::channel();
    let (ended, on_ended) = std::sync::mpsc::sync_channel(1);
    let a = Arc::new(DetachesItself {
        ended,
        registration: Mutex::new(None),
        armed: AtomicBool::new(false),
        began,
        word: Mutex::new(word),
        hold: Duration::from_millis(300),
        heard: AtomicBool::new(false),
    });
    let weak_a: std::sync::Weak<dyn Maintain> = Arc::downgrade(&(a.clone() as Arc<dyn Maintain>));
    *a.registration.lock().unwrap() = Some(janitor.register(weak_a).unwrap());
    a.armed.store(true, Ordering::SeqCst);
    on_begun.recv().unwrap();
    assert!(!janitor.is_running(), "its last registration was dropped");
    let (c, wc) = counter();
    let rc = janitor.register(wc).unwrap();
    wait_for("a run on the new thread", || {
        c.runs.load(Ordering::SeqCst) >= 1
    });
    let dropper = std::thread::spawn(move || {
        drop(rc);
        give_word.send(()).unwrap();
    });
    dropper.join().unwrap();
    // Its tick has ended by now if the drop waited for it; if not, it ends once it has heard.
    on_ended.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        !a.heard.load(Ordering::SeqCst),
        "the last drop returned while a janitor thread was still in its tick"
    );
    assert!(!janitor.is_running());
}

/// A registrant that counts its runs and, with the others of its test, how many ticks run at
/// once, keeping the most seen.
struct Overlap {
    runs: AtomicUsize,
    ticking: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Maintain for Overlap {
    fn run_pending_tasks(&self) {
        let now = self.ticking.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::yield_now();
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.ticking.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Thousands of registrants come and go from eight threads on one janitor, each dropped as
/// soon as it has run, so the thread ends and starts again many times, and some drops come
/// while their own tick runs: every registrant is run (no registration is lost to a thread
/// that is ending), never two ticks at once (no two threads of the janitor serve at once),
/// and once the last is dropped no thread is left.
#[test]
fn registrants_coming_and_going_from_many_threads_are_each_run_by_one_thread_at_a_time() {
    const THREADS: usize = 8;
    const EACH: usize = 250;
    let janitor = Janitor::dedicated(Duration::from_millis(1));
    let ticking = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let janitor = janitor.clone();
            let (ticking, most) = (Arc::clone(&ticking), Arc::clone(&most));
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let r = Arc::new(Overlap {
                        runs: AtomicUsize::new(0),
                        ticking: Arc::clone(&ticking),
                        most: Arc::clone(&most),
                    });
                    let weak: std::sync::Weak<dyn Maintain> =
                        Arc::downgrade(&(r.clone() as Arc<dyn Maintain>));
                    let registration = janitor.register(weak).unwrap();
                    wait_for("a registrant's first run", || {
                        r.runs.load(Ordering::SeqCst) >= 1
                    });
                    drop(registration);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(!janitor.is_running(), "{janitor:?}");
    assert_eq!(most.load(Ordering::SeqCst), 1, "two ticks ran at once");
}
