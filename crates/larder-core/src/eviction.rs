//! Eviction policies: S3-FIFO (the default) and CLOCK, over the intrusive queues of `raw::list`.
//!
//! Both policies keep the read path to one relaxed update of the entry's own `freq` bits
//! (`Node::touch`); every queue move happens on the write path, under the shard lock.
//!
//! # S3-FIFO
//! Yang, Zhang, Qiu, Yue, Vinayak: *FIFO queues are all you need for cache eviction*, SOSP 2023.
//! Three FIFO queues:
//!
//! * **small** (about 10% of the capacity) takes new keys. At its head, an entry that was read
//!   while it waited (`freq >= 1`) moves to main; one that was not is evicted and its hash is
//!   remembered in the ghost. Most one-hit wonders leave after a short stay in small.
//! * **main** (the rest) holds entries that proved themselves. At its head, an entry with
//!   `freq > 0` is reinserted at the tail with `freq - 1`; one with `freq == 0` is evicted.
//! * **ghost** holds only the hashes of keys recently evicted from small (as many as there are
//!   resident entries). A new key found there goes straight to main: it was evicted too soon.
//!
//! `freq` saturates at 3, so a hot entry survives at most three extra trips through main.
//!
//! # CLOCK
//! The second-chance approximation of LRU (Corbató, 1968): one ring, a reference bit per entry
//! set by reads and by insertion. At the hand (the head), a set bit is cleared and the entry
//! goes round again; a clear bit means not used for a whole revolution, so the entry is evicted.
//!
//! # The protected node
//! `evict` never returns the node the current operation just inserted (`protect`): an `insert`
//! must not evict its own entry to make room for itself. Because that entry's weight is at most
//! the shard's capacity, something else is always evictable while the shard is over capacity.

use crate::builder::Policy;
use crate::raw::list::List;
use crate::raw::node::Node;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// S3-FIFO's counter maximum.
const S3FIFO_MAX_FREQ: u32 = 3;
/// CLOCK's reference bit.
const CLOCK_MAX_FREQ: u32 = 1;

pub(crate) enum Eviction<K, V> {
    S3Fifo(S3Fifo<K, V>),
    Clock(Clock<K, V>),
}

impl<K, V> Eviction<K, V> {
    /// The state of `policy` for a shard of `capacity`.
    pub(crate) fn new(policy: Policy, capacity: u64) -> Self {
        match policy {
            Policy::S3Fifo => Eviction::S3Fifo(S3Fifo {
                small: List::new(),
                main: List::new(),
                ghost: Ghost::default(),
                small_target: (capacity / 10).max(1),
            }),
            Policy::Lru => Eviction::Clock(Clock { ring: List::new() }),
        }
    }

    /// The largest `freq` a read may set under `policy`.
    pub(crate) fn max_freq(policy: Policy) -> u32 {
        match policy {
            Policy::S3Fifo => S3FIFO_MAX_FREQ,
            Policy::Lru => CLOCK_MAX_FREQ,
        }
    }

    /// The `freq` a newly inserted entry starts with.
    pub(crate) fn initial_freq(&self) -> u32 {
        match self {
            Eviction::S3Fifo(_) => 0,
            // Referenced at insertion: a new entry gets a full revolution, as in LRU, where it
            // would start most recently used.
            Eviction::Clock(_) => 1,
        }
    }

    /// Queues a newly ready node whose key hashes to `hash`.
    ///
    /// # Safety
    /// `node` is a ready node of this shard, in no queue.
    pub(crate) unsafe fn admit(&mut self, node: *mut Node<K, V>, hash: u64) {
        match self {
            Eviction::S3Fifo(s) => {
                // SAFETY: the caller's contract.
                let n = unsafe { &*node };
                if s.ghost.contains(hash) {
                    n.set_in_main(true);
                    // SAFETY: the caller's contract.
                    unsafe { s.main.push_back(node) };
                } else {
                    n.set_in_main(false);
                    // SAFETY: the caller's contract.
                    unsafe { s.small.push_back(node) };
                }
            }
            // SAFETY: the caller's contract.
            Eviction::Clock(c) => unsafe { c.ring.push_back(node) },
        }
    }

    /// `new` takes `old`'s place in its queue (an update of an existing key), and its `freq`.
    ///
    /// # Safety
    /// `old` is queued here; `new` is a ready node of this shard in no queue.
    pub(crate) unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        // SAFETY: the caller's contract: both are live nodes of this shard.
        let (o, n) = unsafe { (&*old, &*new) };
        n.set_freq(o.freq());
        match self {
            Eviction::S3Fifo(s) => {
                n.set_in_main(o.in_main());
                let list = if o.in_main() {
                    &mut s.main
                } else {
                    &mut s.small
                };
                // SAFETY: `old` is in the queue its MAIN bit names.
                unsafe { list.replace(old, new) };
            }
            // SAFETY: the caller's contract.
            Eviction::Clock(c) => unsafe { c.ring.replace(old, new) },
        }
    }

    /// Takes `node` out of its queue (an explicit removal).
    ///
    /// # Safety
    /// `node` is queued here.
    pub(crate) unsafe fn remove(&mut self, node: *mut Node<K, V>) {
        match self {
            Eviction::S3Fifo(s) => {
                // SAFETY: the caller's contract; the MAIN bit names the node's queue.
                unsafe {
                    if (*node).in_main() {
                        s.main.unlink(node);
                    } else {
                        s.small.unlink(node);
                    }
                }
            }
            // SAFETY: the caller's contract.
            Eviction::Clock(c) => unsafe { c.ring.unlink(node) },
        }
    }

    /// Chooses and dequeues a victim, never `protect`; `None` if nothing else is queued.
    /// `hash_of` gives a key's hash (S3-FIFO remembers the victims of its small queue).
    pub(crate) fn evict(
        &mut self,
        protect: *mut Node<K, V>,
        hash_of: &impl Fn(&K) -> u64,
    ) -> Option<*mut Node<K, V>> {
        match self {
            Eviction::S3Fifo(s) => s.evict(protect, hash_of),
            Eviction::Clock(c) => c.evict(protect),
        }
    }

    /// Empties every queue, handing each node to `f`. The ghost is forgotten too.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(*mut Node<K, V>)) {
        match self {
            Eviction::S3Fifo(s) => {
                s.small.drain(&mut f);
                s.main.drain(&mut f);
                s.ghost = Ghost::default();
            }
            Eviction::Clock(c) => c.ring.drain(f),
        }
    }

    /// Checks every queue; `each` sees every queued node.
    pub(crate) fn validate(&self, mut each: impl FnMut(*mut Node<K, V>)) -> Result<(), String> {
        match self {
            Eviction::S3Fifo(s) => {
                let mut misplaced = 0;
                s.small.validate(|n| {
                    // SAFETY: queued nodes are live while the lock is held.
                    misplaced += usize::from(unsafe { (*n).in_main() });
                    each(n);
                })?;
                s.main.validate(|n| {
                    // SAFETY: as above.
                    misplaced += usize::from(!unsafe { (*n).in_main() });
                    each(n);
                })?;
                if misplaced != 0 {
                    return Err(format!("s3fifo: {misplaced} nodes in the wrong queue"));
                }
                s.ghost.validate()
            }
            Eviction::Clock(c) => c.ring.validate(each),
        }
    }
}

pub(crate) struct S3Fifo<K, V> {
    small: List<K, V>,
    main: List<K, V>,
    ghost: Ghost,
    /// Weight above which the small queue gives up its head.
    small_target: u64,
}

/// Whether `list` holds a node other than `protect` (which, when present, is the node the
/// current operation appended).
fn has_other<K, V>(list: &List<K, V>, protect: *mut Node<K, V>) -> bool {
    list.len() > 1 || (list.len() == 1 && list.head() != protect)
}

impl<K, V> S3Fifo<K, V> {
    fn evict(
        &mut self,
        protect: *mut Node<K, V>,
        hash_of: &impl Fn(&K) -> u64,
    ) -> Option<*mut Node<K, V>> {
        loop {
            let main_has_other = has_other(&self.main, protect);
            let from_small = has_other(&self.small, protect)
                && (self.small.weight() > self.small_target || !main_has_other);
            if from_small {
                let node = self.small.pop_front()?;
                // SAFETY: a node just taken from a queue is a live node of this shard.
                let n = unsafe { &*node };
                if node == protect {
                    // SAFETY: `node` just left this queue.
                    unsafe { self.small.push_back(node) };
                } else if n.freq() >= 1 {
                    n.set_freq(0);
                    n.set_in_main(true);
                    // SAFETY: `node` just left small and is in no queue.
                    unsafe { self.main.push_back(node) };
                } else {
                    let ghost_len = self.small.len() + self.main.len() + 1;
                    self.ghost.remember(hash_of(n.key()), ghost_len);
                    return Some(node);
                }
            } else if main_has_other {
                let node = self.main.pop_front()?;
                // SAFETY: as above.
                let n = unsafe { &*node };
                let freq = n.freq();
                if node == protect || freq > 0 {
                    if node != protect {
                        n.set_freq(freq - 1);
                    }
                    // SAFETY: `node` just left main.
                    unsafe { self.main.push_back(node) };
                } else {
                    return Some(node);
                }
            } else {
                return None;
            }
        }
    }
}

pub(crate) struct Clock<K, V> {
    ring: List<K, V>,
}

impl<K, V> Clock<K, V> {
    fn evict(&mut self, protect: *mut Node<K, V>) -> Option<*mut Node<K, V>> {
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
}

/// Fingerprints (32 bits of the hash) of keys recently evicted from small, oldest first, with
/// a multiset over them for O(1) membership. Four bytes in the ring plus a map slot per
/// remembered key; no key is kept.
#[derive(Default)]
struct Ghost {
    ring: VecDeque<u32>,
    counts: HashMap<u32, u32, BuildHasherDefault<Fingerprint>>,
}

impl Ghost {
    fn remember(&mut self, hash: u64, max_len: usize) {
        while self.ring.len() >= max_len {
            match self.ring.pop_front() {
                Some(old) => self.forget_one(old),
                None => break,
            }
        }
        let fp = hash as u32;
        self.ring.push_back(fp);
        *self.counts.entry(fp).or_insert(0) += 1;
    }

    fn forget_one(&mut self, fp: u32) {
        if let Some(c) = self.counts.get_mut(&fp) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&fp);
            }
        }
    }

    /// Whether `hash` was remembered. The fingerprint stays in the ring until it ages out;
    /// a key re-admitted to main and evicted again would be found again anyway.
    fn contains(&self, hash: u64) -> bool {
        self.counts.contains_key(&(hash as u32))
    }

    fn validate(&self) -> Result<(), String> {
        let total: u64 = self.counts.values().map(|&c| u64::from(c)).sum();
        if total != self.ring.len() as u64 {
            return Err(format!(
                "ghost: ring holds {} fingerprints, counts say {total}",
                self.ring.len()
            ));
        }
        Ok(())
    }
}

/// The identity hasher for fingerprints, which are already hash bits.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        // Spread the 32 bits over 64 so the map's control bytes (top bits) vary too.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}
