//! Eviction policies: S3-FIFO (the default) and CLOCK, over the intrusive queues of
//! `raw::list`.
//!
//! Both keep the read path to one relaxed update of the entry's own `freq` bits
//! (`Node::touch`); every queue move, the sketch and the ghosts live on the write path, under
//! the shard lock.
//!
//! * [`s3fifo`]: S3-FIFO with a TinyLFU-style admission duel and an adaptive small queue.
//! * [`clock`]: CLOCK, the second-chance approximation of LRU.
//! * [`sketch`]: the count-min frequency sketch S3-FIFO's admission consults.
//! * [`ghost`]: the fingerprints of recent victims that steer S3-FIFO's small queue.
//!
//! # The protected node
//! `evict` never returns the node the current operation just inserted (`protect`): an `insert`
//! must not evict its own entry to make room for itself. Because that entry's weight is at most
//! the shard's capacity, something else is always evictable while the shard is over capacity.

mod clock;
mod ghost;
mod s3fifo;
mod sketch;

use crate::builder::Policy;
use crate::raw::list::List;
use crate::raw::node::{Node, OnHit};
use clock::Clock;
use s3fifo::S3Fifo;

/// S3-FIFO: a hit adds one to the counter, saturating at 3, so a hot entry survives at most
/// three extra trips through main.
const S3FIFO_ON_HIT: OnHit = OnHit([1, 2, 3, 3]);
/// CLOCK: a hit sets the reference bit (2), whatever the counter was (see `clock`).
const CLOCK_ON_HIT: OnHit = OnHit([2, 2, 2, 3]);

// One per shard, inside its locked state: boxing the larger variant would only add a pointer
// chase to every write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Eviction<K, V> {
    S3Fifo(S3Fifo<K, V>),
    Clock(Clock<K, V>),
}

/// Whether `list` holds a node other than `protect` (which, when present, is the node the
/// current operation appended).
fn has_other<K, V>(list: &List<K, V>, protect: *mut Node<K, V>) -> bool {
    list.len() > 1 || (list.len() == 1 && list.head() != protect)
}

impl<K, V> Eviction<K, V> {
    /// The state of `policy` for a shard of `capacity`.
    pub(crate) fn new(policy: Policy, capacity: u64) -> Self {
        match policy {
            Policy::S3Fifo => Eviction::S3Fifo(S3Fifo::new(capacity)),
            Policy::Lru => Eviction::Clock(Clock::new()),
        }
    }

    /// What a read does to an entry's `freq` under `policy`.
    pub(crate) fn on_hit(policy: Policy) -> OnHit {
        match policy {
            Policy::S3Fifo => S3FIFO_ON_HIT,
            Policy::Lru => CLOCK_ON_HIT,
        }
    }

    /// The `freq` a newly inserted entry starts with.
    pub(crate) fn initial_freq(&self) -> u32 {
        match self {
            Eviction::S3Fifo(_) => 0,
            // One revolution's grace (see `clock`).
            Eviction::Clock(_) => clock::INITIAL_FREQ,
        }
    }

    /// Queues a newly ready node whose key hashes to `hash`.
    ///
    /// # Safety
    /// `node` is a ready node of this shard, in no queue, whose key hashes to `hash`.
    pub(crate) unsafe fn admit(&mut self, node: *mut Node<K, V>, hash: u64) {
        match self {
            // SAFETY: the caller's contract.
            Eviction::S3Fifo(s) => unsafe { s.admit(node, hash) },
            // SAFETY: the caller's contract.
            Eviction::Clock(c) => unsafe { c.admit(node) },
        }
    }

    /// `new` takes `old`'s place in its queue (an update of an existing key), and its `freq`.
    ///
    /// # Safety
    /// `old` is queued here; `new` is a ready node of this shard in no queue.
    pub(crate) unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        // SAFETY: the caller's contract: both are live nodes of this shard.
        unsafe { (*new).set_freq((*old).freq()) };
        match self {
            // SAFETY: the caller's contract.
            Eviction::S3Fifo(s) => unsafe { s.replace(old, new) },
            // SAFETY: the caller's contract.
            Eviction::Clock(c) => unsafe { c.replace(old, new) },
        }
    }

    /// Takes `node` out of its queue (an explicit removal).
    ///
    /// # Safety
    /// `node` is queued here.
    pub(crate) unsafe fn remove(&mut self, node: *mut Node<K, V>) {
        match self {
            // SAFETY: the caller's contract.
            Eviction::S3Fifo(s) => unsafe { s.remove(node) },
            // SAFETY: the caller's contract.
            Eviction::Clock(c) => unsafe { c.remove(node) },
        }
    }

    /// Chooses and dequeues a victim, never `protect`; `None` if nothing else is queued.
    pub(crate) fn evict(&mut self, protect: *mut Node<K, V>) -> Option<*mut Node<K, V>> {
        match self {
            Eviction::S3Fifo(s) => s.evict(protect),
            Eviction::Clock(c) => c.evict(protect),
        }
    }

    /// Empties every queue, handing each node to `f`. Policy memory (ghosts, sketch) is
    /// forgotten too.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(*mut Node<K, V>)) {
        match self {
            Eviction::S3Fifo(s) => s.drain(&mut f),
            Eviction::Clock(c) => c.drain(&mut f),
        }
    }

    /// Checks every queue; `each` sees every queued node.
    pub(crate) fn validate(&self, each: impl FnMut(*mut Node<K, V>)) -> Result<(), String> {
        match self {
            Eviction::S3Fifo(s) => s.validate(each),
            Eviction::Clock(c) => c.validate(each),
        }
    }
}
