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
//! # What may be evicted
//! `evict` never returns the node the current operation just inserted (`protect`): an `insert`
//! must not evict its own entry to make room for itself. Nor does it return an entry of weight
//! 0: it takes no capacity, so evicting it would free none (the builder's `weigher` promises
//! as much). Because `protect`'s weight is at most the shard's capacity, an entry other than
//! `protect` that weighs something is always there while the shard is over capacity. A queue
//! holds one exactly when it weighs more than `protect` does in it (`has_evictable`), since a
//! queue's weight is the sum of its entries'.

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

/// Whether `list` holds an entry the policy may evict, given `spared`: the weight of `protect`
/// if it is queued in `list`, else 0 (see the module doc).
fn has_evictable<K, V>(list: &List<K, V>, spared: u64) -> bool {
    list.weight() > spared
}

/// Whether the policy may evict `node`: it is not `protect`, and it weighs something.
///
/// # Safety
/// `node` is a live node of this shard, whose lock the caller holds.
#[inline(always)]
unsafe fn evictable<K, V>(node: *mut Node<K, V>, protect: *mut Node<K, V>) -> bool {
    // SAFETY: the caller's contract.
    node != protect && unsafe { (*node).weight() } != 0
}

/// Turns `list`'s hand until its head is an evictable entry (`evictable`) with `freq == 0`, and
/// returns that head, still queued. Each turn moves the head to the tail; one that lowers an
/// entry's `freq` (every turn but those of `protect` and of entries of weight 0, which are
/// passed over as they are) tells `lowered` of that entry first.
///
/// # The bound
/// Alone, the hand needs at most `4 × len` turns: a revolution lowers every evictable entry, so
/// after three (`freq` is at most 3) every one of them is at 0 and the fourth stops at the
/// first. But readers raise `freq` without the lock, between the hand's turns, so readers that
/// keep every entry of a small queue hot could keep the hand turning for as long as they read,
/// with the writer holding the shard lock. After `4 × len` turns the hand therefore stops at
/// the next evictable head, whatever its `freq`: a writer's eviction is bounded, and on a queue
/// nobody reads while it turns the bound is never reached, so the choice is the same as without
/// it.
///
/// The caller holds the shard's lock and has checked that `list` holds an evictable entry
/// (`has_evictable`), so the turns end within a revolution of the bound.
#[inline(always)]
fn turn_hand<K, V>(
    list: &mut List<K, V>,
    protect: *mut Node<K, V>,
    mut lowered: impl FnMut(&Node<K, V>),
) -> *mut Node<K, V> {
    let mut budget = list.len().saturating_mul(4);
    loop {
        let head = list.head();
        // SAFETY: the list holds an evictable entry (the caller's check), so it is not empty
        // and its head is a live node of this shard, whose lock the caller holds.
        let n = unsafe { &*head };
        // SAFETY: as above.
        if unsafe { evictable(head, protect) } {
            let freq = n.freq();
            if freq == 0 || budget == 0 {
                return head;
            }
            n.set_freq(freq - 1);
            lowered(n);
        }
        budget = budget.saturating_sub(1);
        #[cfg(test)]
        tests::turned();
        // SAFETY: `head` is the list's head; it leaves and rejoins at the tail.
        unsafe {
            let _ = list.pop_front();
            list.push_back(head);
        }
    }
}

impl<K, V> Eviction<K, V> {
    /// The state of `policy` for a shard of `capacity`.
    pub(crate) fn new(policy: Policy, capacity: u64) -> Self {
        match policy {
            Policy::S3Fifo => Eviction::S3Fifo(S3Fifo::new(capacity)),
            Policy::Lru => Eviction::Clock(Clock::new()),
        }
    }

    /// Tells the policy its shard's capacity changed (`Locked::set_share`). CLOCK does not
    /// look at the capacity; S3-FIFO sizes its small queue by it.
    pub(crate) fn resize(&mut self, capacity: u64) {
        match self {
            Eviction::S3Fifo(s) => s.resize(capacity),
            Eviction::Clock(_) => {}
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

    /// Chooses and dequeues a victim, never `protect` nor an entry of weight 0; `None` if
    /// nothing evictable is queued.
    ///
    /// # Safety
    /// `protect` is queued here.
    pub(crate) unsafe fn evict(&mut self, protect: *mut Node<K, V>) -> Option<*mut Node<K, V>> {
        match self {
            // SAFETY: the caller's contract.
            Eviction::S3Fifo(s) => unsafe { s.evict(protect) },
            // SAFETY: the caller's contract.
            Eviction::Clock(c) => unsafe { c.evict(protect) },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::node::free_node;
    use std::cell::RefCell;

    thread_local! {
        /// What runs between two turns of a hand on this thread: the tests' stand-in for the
        /// readers that raise `freq` while a writer evicts.
        static BETWEEN_TURNS: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    }

    /// Called by `turn_hand` after each turn.
    pub(super) fn turned() {
        BETWEEN_TURNS.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook();
            }
        });
    }

    /// `n` nodes with `freq` 3 queued in a list, keys `0..n`.
    fn hot_list(n: u64) -> (List<u64, u64>, Vec<*mut Node<u64, u64>>) {
        let mut list = List::new();
        let nodes: Vec<_> = (0..n)
            .map(|k| Node::new_ready(k, k, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1, 3, None))
            .collect();
        for &node in &nodes {
            // SAFETY: a new node, in no list.
            unsafe { list.push_back(node) };
        }
        (list, nodes)
    }

    fn free(mut list: List<u64, u64>) {
        // SAFETY: every node was made by `hot_list`, no other thread has seen it, and draining
        // takes each out of the list once.
        list.drain(|node| unsafe { free_node(node) });
    }

    /// Readers that read every entry between two turns of the hand kept it turning for ever
    /// with the shard locked; now it stops after `4 × len` turns.
    #[test]
    fn a_hand_stops_even_while_readers_keep_every_entry_hot() {
        let (mut list, nodes) = hot_list(8);
        let turns = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let counted = turns.clone();
        BETWEEN_TURNS.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                counted.set(counted.get() + 1);
                assert!(
                    counted.get() < 10_000,
                    "the hand never stops while every entry is read"
                );
                for &node in &nodes {
                    // SAFETY: the nodes stay live until `free` below.
                    unsafe { (*node).set_freq(3) };
                }
            }));
        });
        let protect = list.head();
        let victim = turn_hand(&mut list, protect, |_| {});
        BETWEEN_TURNS.with(|hook| *hook.borrow_mut() = None);
        assert_ne!(
            victim, protect,
            "the hand never stops at the protected node"
        );
        assert_eq!(victim, list.head(), "the victim is left at the head");
        assert!(turns.get() <= 4 * 8 + 1, "{} turns", turns.get());
        free(list);
    }

    /// Without readers the bound is never reached: the hand stops at the first entry whose
    /// counter it has lowered to 0, as it did before there was a bound.
    #[test]
    fn without_readers_a_hand_stops_at_the_first_cold_entry() {
        let (mut list, nodes) = hot_list(8);
        // SAFETY: the nodes are live until `free`.
        unsafe {
            (*nodes[5]).set_freq(1);
            (*nodes[2]).set_freq(2);
        }
        let mut lowered = 0;
        let victim = turn_hand(&mut list, nodes[0], |_| lowered += 1);
        // Revolution 1 takes 5 to 0 and 2 to 1, revolution 2 finds 5 at 0.
        assert_eq!(victim, nodes[5]);
        assert_eq!(lowered, 7 + 4);
        free(list);
    }
}
