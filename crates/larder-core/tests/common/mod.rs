//! Helpers the core's integration tests share. Each test binary includes this module with
//! `mod common;` and uses some of it, hence `dead_code` allowed: what one binary leaves unused,
//! another uses.
#![allow(dead_code)]

use std::cell::Cell;
use std::sync::mpsc;
use std::thread;

/// Runs `load` on a thread of its own and returns once its `init` is running, with the sender
/// that lets that `init` finish: `load` gets a `hold` to call inside its `init`, which says the
/// load has started and then blocks until released.
pub fn hold_a_load<T: Send + 'static>(
    load: impl FnOnce(&dyn Fn()) -> T + Send + 'static,
) -> (thread::JoinHandle<T>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let loader = thread::spawn(move || {
        load(&|| {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
    });
    started_rx.recv().unwrap();
    (loader, release_tx)
}

/// A value whose `Drop` panics if it is the one that was stored (its clones, which reads
/// return, are harmless). The message says "poisoned", which the panic tests' hook keeps quiet.
#[derive(Debug)]
pub struct DropBomb {
    pub armed: bool,
}

impl Clone for DropBomb {
    fn clone(&self) -> Self {
        DropBomb { armed: false }
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        if self.armed && !thread::panicking() {
            panic!("drop of a removed value poisoned");
        }
    }
}

/// A panic payload (`std::panic::panic_any(PayloadBomb::ARMED)`) whose own `Drop` panics,
/// unless disarmed or while the thread unwinds already: whoever drops a caught payload runs user
/// code, and must catch that panic too. A test that catches one disarms it before dropping it.
#[derive(Debug)]
pub struct PayloadBomb {
    pub armed: bool,
}

impl PayloadBomb {
    pub const ARMED: PayloadBomb = PayloadBomb { armed: true };

    /// Disarms `payload` if it is a `PayloadBomb`, and says whether it was one.
    pub fn defuse(payload: &mut Box<dyn std::any::Any + Send>) -> bool {
        match payload.downcast_mut::<PayloadBomb>() {
            Some(bomb) => {
                bomb.armed = false;
                true
            }
            None => false,
        }
    }
}

impl Drop for PayloadBomb {
    fn drop(&mut self) {
        if self.armed && !thread::panicking() {
            panic!("drop of a panic payload poisoned");
        }
    }
}

/// Random panics in user code (keys' `Hash` and `Eq`, values' `Clone` and `Drop`, weighers,
/// listeners), on this thread only, while switched on. Never while the thread is unwinding
/// already: a second panic there, from a `Drop`, would abort the test binary.
pub struct Chaos;

thread_local! {
    /// The state of a xorshift generator, and the odds (one in this many) of a panic; 0: off.
    static CHAOS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

impl Chaos {
    pub fn on(seed: u64, one_in: u64) {
        CHAOS.with(|c| c.set((seed | 1, one_in)));
    }

    pub fn off() {
        CHAOS.with(|c| c.set((c.get().0, 0)));
    }

    pub fn maybe_panic(what: &str) {
        let fire = CHAOS.with(|c| {
            let (mut x, one_in) = c.get();
            if one_in == 0 {
                return false;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.set((x, one_in));
            x % one_in == 0
        });
        if fire && !thread::panicking() {
            panic!("chaos in {what}");
        }
    }
}

/// Silences the default panic message of the many panics these tests cause on purpose (their
/// messages say "poisoned" or "chaos", or their payload is a [`PayloadBomb`]); any other panic
/// is reported as usual.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            let quiet = msg.contains("poisoned")
                || msg.contains("chaos")
                || info.payload().is::<PayloadBomb>();
            if !quiet {
                default(info);
            }
        }));
    });
}
