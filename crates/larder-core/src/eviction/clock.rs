//! CLOCK, the second-chance approximation of LRU (Corbató, 1968).
//!
//! One ring and a reference bit per entry (`freq`, 0..=1), set by reads and at insertion. At
//! the hand (the ring's head) a set bit is cleared and the entry goes round again; a clear bit
//! means the entry was not used for a whole revolution, so it is the victim.

use super::has_other;
use crate::raw::list::List;
use crate::raw::node::Node;

pub(crate) struct Clock<K, V> {
    ring: List<K, V>,
}

impl<K, V> Clock<K, V> {
    pub(crate) fn new() -> Self {
        Clock { ring: List::new() }
    }

    /// # Safety
    /// `node` is a ready node of this shard, in no queue.
    pub(crate) unsafe fn admit(&mut self, node: *mut Node<K, V>) {
        // SAFETY: the caller's contract.
        unsafe { self.ring.push_back(node) };
    }

    /// # Safety
    /// `old` is in the ring; `new` is a ready node of this shard in no queue.
    pub(crate) unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        // SAFETY: the caller's contract.
        unsafe {
            (*new).set_freq((*old).freq());
            self.ring.replace(old, new);
        }
    }

    /// # Safety
    /// `node` is in the ring.
    pub(crate) unsafe fn remove(&mut self, node: *mut Node<K, V>) {
        // SAFETY: the caller's contract.
        unsafe { self.ring.unlink(node) };
    }

    pub(crate) fn evict(&mut self, protect: *mut Node<K, V>) -> Option<*mut Node<K, V>> {
        if !has_other(&self.ring, protect) {
            return None;
        }
        loop {
            let node = self.ring.pop_front()?;
            // SAFETY: a node just taken from the ring is a live node of this shard.
            let n = unsafe { &*node };
            if node == protect || n.freq() > 0 {
                if node != protect {
                    n.set_freq(0);
                }
                // SAFETY: `node` just left the ring.
                unsafe { self.ring.push_back(node) };
            } else {
                return Some(node);
            }
        }
    }

    pub(crate) fn drain(&mut self, f: &mut impl FnMut(*mut Node<K, V>)) {
        self.ring.drain(f);
    }

    pub(crate) fn validate(&self, each: impl FnMut(*mut Node<K, V>)) -> Result<(), String> {
        self.ring.validate(each)
    }
}
