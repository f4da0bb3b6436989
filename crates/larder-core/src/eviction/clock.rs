//! CLOCK, the second-chance approximation of LRU (Corbató, 1968), with one extra revolution
//! for entries that were read.
//!
//! One ring, and per entry the 2-bit `freq`: a reference bit (2) that a read sets, and a
//! grace bit (1) that insertion sets. At the hand (the ring's head) an entry with `freq > 0`
//! goes round again with `freq - 1`; one with `freq == 0` is the victim. So a new entry gets
//! one revolution to be read, and a read entry gets two after its last read.
//!
//! Why not the textbook single bit set at insertion: replayed on the traces against exact LRU
//! (`docs/BENCHMARKS.md`), that CLOCK lands 1.2 points below LRU on average and 3.5 to 4.5
//! below it at `multi2` and `2_pools`; with the bit clear at insertion it lands above LRU by up
//! to 3.5. A read entry outranking a new one by a revolution keeps CLOCK within 2.1 points of
//! LRU at every point measured, 0.5 above it on average. A read still only sets a bit.

use super::{has_evictable, turn_hand};
use crate::raw::list::List;
use crate::raw::node::Node;

/// The `freq` a new entry starts with: the grace bit.
pub(crate) const INITIAL_FREQ: u32 = 1;

pub(crate) struct Clock<K, V> {
    ring: List<K, V>,
}

impl<K, V> Clock<K, V> {
    pub(crate) fn new() -> Self {
        Clock { ring: List::new() }
    }

    /// Queues `node` at the ring's tail: a new entry, or one that has just gained weight by a
    /// replacement (`Eviction::replace`), with the `freq` it has.
    ///
    /// # Safety
    /// `node` is a ready node of this shard, in no queue, that weighs something.
    pub(crate) unsafe fn admit(&mut self, node: *mut Node<K, V>) {
        // SAFETY: the caller's contract.
        unsafe { self.ring.push_back(node) };
    }

    /// # Safety
    /// `old` is in the ring; `new` is a ready node of this shard in no queue that weighs
    /// something.
    pub(crate) unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        // SAFETY: the caller's contract (`Eviction::replace` has already copied `freq`).
        unsafe { self.ring.replace(old, new) };
    }

    /// # Safety
    /// `node` is in the ring.
    pub(crate) unsafe fn remove(&mut self, node: *mut Node<K, V>) {
        // SAFETY: the caller's contract.
        unsafe { self.ring.unlink(node) };
    }

    /// # Safety
    /// `protect` is in the ring, or weighs nothing (it is then among `Eviction`'s entries of
    /// weight 0, outside the ring, and spares nothing in it).
    pub(crate) unsafe fn evict(&mut self, protect: *mut Node<K, V>) -> Option<*mut Node<K, V>> {
        // SAFETY: the caller's contract: a live node of this shard, whose lock is held.
        let spared = u64::from(unsafe { (*protect).weight() });
        if !has_evictable(&self.ring, spared) {
            return None;
        }
        let victim = turn_hand(&mut self.ring, protect, |_| {});
        // The victim is the ring's head.
        let _ = self.ring.pop_front();
        Some(victim)
    }

    pub(crate) fn drain(&mut self, f: &mut impl FnMut(*mut Node<K, V>)) {
        self.ring.drain(f);
    }

    pub(crate) fn validate(&self, each: impl FnMut(*mut Node<K, V>)) -> Result<(), String> {
        self.ring.validate(each)
    }
}
