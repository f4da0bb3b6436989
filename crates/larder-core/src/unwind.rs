//! Panics the crate catches from user code, and what becomes of them.
//!
//! A cache runs user code in many places: `Hash`, `Eq`, `Clone` and `Drop` of keys and values,
//! weighers, removal listeners and observers. Where that code panics in the middle of work that
//! must be finished whole (every shard of a `clear`, every node of a batch being freed, every
//! removal a write reports), the work goes on past the panic and the *first* panic goes to
//! the caller afterwards (`keep_first`); where there is no caller to go to (a deferred free
//! on whichever thread collects, a listener called from a destructor, the janitor's tick), the
//! panic is dropped ([`quiet`]).
//!
//! Dropping a panic means dropping its payload, and a payload is a user's value too, whose
//! `Drop` may panic (`std::panic::panic_any(value)`). So every payload the crate drops is
//! dropped inside a `catch_unwind`: dropped unguarded, its panic would unwind out of the loop
//! with the rest of the work undone, or out of a destructor while another panic unwinds, which
//! aborts the process.
//!
//! The module is public, hidden from the docs, for the `larder` facade alone: its durable
//! cache catches panics from user code too (codecs, weighers, its maintenance on the janitor's
//! thread) and drops the ones it does not pass on by the same rule, with [`quiet`]. It is no
//! part of the crate's API, and may change in any release.

/// A caught panic's payload.
pub type Panic = Box<dyn std::any::Any + Send + 'static>;

/// Drops `panic`, if any, and catches a panic of its payload's `Drop`: for a panic that has no
/// caller to go to, such as a free run as an epoch's deferred call (on whichever thread
/// collects, perhaps one being torn down, where a panic would abort the process or unwind
/// through crossbeam's collection), a listener's in `tell`, or a free in the janitor's tick
/// (see `raw::limbo::seal_and_collect`).
///
/// The payload of that second panic is forgotten, not dropped: its `Drop` may panic too, with
/// a payload of its own, and so on without end. That leaks it, which only a payload whose
/// `Drop` panics can cause.
pub fn quiet(panic: Option<Panic>) {
    if let Some(panic) = panic {
        if let Err(inner) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)))
        {
            std::mem::forget(inner);
        }
    }
}

/// Keeps `panic` in `first` if none is there yet, and otherwise drops it as [`quiet`] does: for
/// the callers that go on past each panic and pass on the first once done.
/// (`first.get_or_insert(panic)` would drop the later ones unguarded.)
pub(crate) fn keep_first(first: &mut Option<Panic>, panic: Panic) {
    if first.is_none() {
        *first = Some(panic);
    } else {
        quiet(Some(panic));
    }
}

/// Panics kept to be passed on later, one at a time ([`pop`](Self::pop)); those never passed
/// on are dropped as [`quiet`] drops them when this is.
///
/// The `Drop` is this type's, not its holder's: a `Drop` impl on `Iter`, which borrows its
/// cache, would hold that borrow to the end of the iterator's scope instead of its last use.
/// In a `Mutex` only so that its holder stays `Sync` (a payload is only `Send`); every method
/// has `&mut self` and never locks it.
#[derive(Default)]
pub(crate) struct Pending(std::sync::Mutex<std::collections::VecDeque<Panic>>);

impl Pending {
    /// Keeps `panic`, after those already kept.
    pub(crate) fn push(&mut self, panic: Panic) {
        self.queue().push_back(panic);
    }

    /// The panic kept longest, if any.
    pub(crate) fn pop(&mut self) -> Option<Panic> {
        self.queue().pop_front()
    }

    fn queue(&mut self) -> &mut std::collections::VecDeque<Panic> {
        self.0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        for panic in self.queue().drain(..) {
            quiet(Some(panic));
        }
    }
}

/// For tests: a panic payload (`std::panic::panic_any(PayloadBomb(true))`) whose `Drop` panics
/// unless disarmed (`.0 == false`) or while the thread unwinds already.
#[cfg(test)]
pub(crate) struct PayloadBomb(pub(crate) bool);

#[cfg(test)]
impl PayloadBomb {
    /// Disarms `payload` if it is a `PayloadBomb`, and says whether it was one.
    pub(crate) fn defuse(payload: &mut Panic) -> bool {
        payload
            .downcast_mut::<PayloadBomb>()
            .map(|bomb| bomb.0 = false)
            .is_some()
    }
}

#[cfg(test)]
impl Drop for PayloadBomb {
    fn drop(&mut self) {
        if self.0 && !std::thread::panicking() {
            panic!("a panic payload's drop panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload whose `Drop` panics with a `Chain` one shorter, down to `Chain(0)`.
    struct Chain(u32);

    impl Drop for Chain {
        fn drop(&mut self) {
            if self.0 > 0 {
                std::panic::panic_any(Chain(self.0 - 1));
            }
        }
    }

    /// A payload whose `Drop` panics with a payload whose `Drop` panics too: nothing unwinds
    /// out of `quiet`, however long the chain. (It dropped the second payload unguarded, so
    /// a chain of two or more unwound out of it, and out of the janitor's thread, say.)
    #[test]
    fn quiet_catches_a_chain_of_payloads_whose_drops_panic() {
        for depth in [0, 1, 2, 3, 1000] {
            let quieted = std::panic::catch_unwind(|| quiet(Some(Box::new(Chain(depth)))));
            assert!(quieted.is_ok(), "a chain of {depth} unwound out of quiet");
        }
    }
}
