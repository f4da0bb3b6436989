//! Helpers the core's integration tests share. Each test binary includes this module with
//! `mod common;` and uses some of it, hence `dead_code` allowed: what one binary leaves unused,
//! another uses.
#![allow(dead_code)]

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
