//! A shard's index: an open-addressing table of node pointers that readers probe without locks.
//!
//! Linear probing over a power-of-two array of `AtomicPtr<Node>`. A slot is empty (null), a
//! tombstone (a removed entry; probes continue past it), or a node. Only the shard's writer,
//! under the shard lock, changes slots; readers only load them. The rules that make lock-free
//! probing sound:
//!
//! 1. **Entries never move inside a table.** Removal writes a tombstone instead of shifting
//!    the probe run back (backward-shift deletion would make a concurrent reader skip an entry
//!    that is present). A replacement swaps the pointer in the same slot.
//! 2. **Every table keeps free slots.** The writer rebuilds before used slots (nodes plus
//!    tombstones) pass 3/4 of the array, so every probe ends at a null slot.
//! 3. **Growth builds a new table.** The writer copies the live pointers into a fresh array,
//!    publishes it with one `Release` store and retires the old array through the epoch; readers
//!    that still hold the old array see a consistent (older) state of the shard.
//! 4. **Publication is a `Release` store of the slot, lookup an `Acquire` load**, so a reader
//!    that finds a node also sees the node's contents.
//!
//! **Slot tags.** A node pointer in a slot carries 3 bits of its key's hash in its low bits,
//! which are always zero in a node's address (nodes are 8-aligned). A probe compares them before
//! dereferencing, so a slot holding some other key costs no access to that key's node (a cache
//! miss, most of the time) in 7 cases out of 8. The bits are the lowest of the node's own meta
//! tag (hash bits 32..), independent of the slot index (low bits) and of the shard (top bits).
//! Tagging is done with `map_addr`, which keeps the pointer's provenance.
//!
//! Tombstones are counted with the nodes against the 3/4 limit; a rebuild at the same size
//! clears them when the shard is mostly tombstones, so a churning shard neither grows without
//! bound nor degrades into long probe runs.

use super::node::Node;
use crate::sync::{AtomicPtr, Ordering};
use std::borrow::Borrow;

/// Address identity of a tombstone. Never dereferenced.
static TOMBSTONE_SITE: u8 = 0;

#[inline(always)]
pub(crate) fn tombstone<K, V>() -> *mut Node<K, V> {
    std::ptr::addr_of!(TOMBSTONE_SITE).cast_mut().cast()
}

/// Where a new node would go: a slot, and whether it was empty (else a tombstone).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vacancy {
    pub(crate) slot: usize,
    pub(crate) was_empty: bool,
}

/// The low pointer bits a slot borrows for its tag: nodes are at least 8-aligned on 64-bit
/// targets (a node holds pointers and an `AtomicU32`), so a node's address has 3 zero bits.
#[cfg(target_pointer_width = "64")]
const SLOT_TAG_MASK: usize = 0b111;
/// See above; 32-bit targets keep 2 bits.
#[cfg(not(target_pointer_width = "64"))]
const SLOT_TAG_MASK: usize = 0b11;

/// The tag a slot holding a node for `hash` carries: the lowest bits of the node's meta tag
/// (hash bits 32..), so a slot whose tag differs cannot hold a matching node.
#[inline(always)]
fn slot_tag<K, V>(hash: u64) -> usize {
    const { assert!(std::mem::align_of::<Node<K, V>>() > SLOT_TAG_MASK) };
    (hash >> 32) as usize & SLOT_TAG_MASK
}

/// `node` with its slot tag in the alignment bits. The address keeps its provenance.
#[inline(always)]
fn tag<K, V>(node: *mut Node<K, V>, hash: u64) -> *mut Node<K, V> {
    node.map_addr(|a| a | slot_tag::<K, V>(hash))
}

/// The node a tagged slot points at.
#[inline(always)]
fn untag<K, V>(p: *mut Node<K, V>) -> *mut Node<K, V> {
    p.map_addr(|a| a & !SLOT_TAG_MASK)
}

/// The smallest table, in slots.
#[cfg(not(any(larder_loom, miri)))]
pub(crate) const MIN_SLOTS: usize = 16;
/// Shrunk under loom and miri so models reach growth and tombstone rebuilds in a few ops.
#[cfg(any(larder_loom, miri))]
pub(crate) const MIN_SLOTS: usize = 4;

/// Slots to allocate so that `entries` fit with the table at most half full.
pub(crate) fn slots_for(entries: usize) -> usize {
    entries
        .saturating_mul(2)
        .max(MIN_SLOTS)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
}

/// Whether a table of `slots` slots may hold `used` non-null slots (nodes plus tombstones).
#[inline]
pub(crate) fn within_load(used: usize, slots: usize) -> bool {
    used <= slots - slots / 4
}

pub(crate) struct Table<K, V> {
    slots: Box<[AtomicPtr<Node<K, V>>]>,
    mask: usize,
}

impl<K, V> Table<K, V> {
    pub(crate) fn new(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two());
        Table {
            slots: (0..slots)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            mask: slots - 1,
        }
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The probe sequence for `hash`: every slot once, starting at the home slot.
    #[inline(always)]
    fn probe(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = hash as usize & self.mask;
        (0..self.slots.len()).map(move |i| (start + i) & self.mask)
    }

    /// Lock-free lookup of a ready node: returns it with the meta word the caller saw.
    ///
    /// The returned reference is valid while the caller's epoch guard (which also protects
    /// `self`) is alive: nodes are retired through the epoch only after they are unlinked.
    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<(&Node<K, V>, u32)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let tag = super::node::tag_of(hash);
        let slot_tag = slot_tag::<K, V>(hash);
        for i in self.probe(hash) {
            // Acquire: pairs with the Release store that published the node (rule 4).
            let p = self.slots[i].load(Ordering::Acquire);
            if p.is_null() {
                return None;
            }
            if p == tombstone() || p.addr() & SLOT_TAG_MASK != slot_tag {
                continue;
            }
            // SAFETY: a non-null, non-tombstone slot holds a tagged pointer to a node that was
            // live when the slot was loaded; it is retired only through the epoch after being
            // unlinked, and the caller is pinned (the table itself was loaded under the same
            // guard). `untag` restores the node's address with its provenance.
            let node = unsafe { &*untag(p) };
            let meta = node.load_meta();
            if Node::<K, V>::ready_with_tag(meta, tag) && node.key().borrow() == key {
                return Some((node, meta));
            }
        }
        None
    }

    /// Writer lookup (under the shard lock): where `key` is, or where it would go.
    ///
    /// `Ok((slot, node))` if a node for `key` (ready or pending) is in the table; otherwise
    /// `Err(vacancy)`, the slot a new node for `key` would take in one pass: the first tombstone
    /// of the probe run, else the empty slot that ended it.
    pub(crate) fn find_slot<Q>(
        &self,
        hash: u64,
        key: &Q,
    ) -> Result<(usize, *mut Node<K, V>), Vacancy>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let slot_tag = slot_tag::<K, V>(hash);
        let mut first_tombstone = None;
        for i in self.probe(hash) {
            // Relaxed: the caller holds the shard lock, and only lock holders write slots; the
            // lock orders those writes before this load.
            let p = self.slots[i].load(Ordering::Relaxed);
            if p.is_null() {
                return Err(match first_tombstone {
                    Some(slot) => Vacancy {
                        slot,
                        was_empty: false,
                    },
                    None => Vacancy {
                        slot: i,
                        was_empty: true,
                    },
                });
            }
            if p == tombstone() {
                first_tombstone.get_or_insert(i);
                continue;
            }
            if p.addr() & SLOT_TAG_MASK != slot_tag {
                continue;
            }
            let node = untag(p);
            // SAFETY: the caller holds the shard lock; a node in the table is owned by the shard
            // and is freed only after being unlinked under that lock.
            if unsafe { (*node).key() }.borrow() == key {
                return Ok((i, node));
            }
        }
        unreachable!("a table below its load limit always has an empty slot")
    }

    /// Writer lookup by identity: the slot holding `node`, whose key hashes to `hash`.
    pub(crate) fn slot_of(&self, hash: u64, node: *mut Node<K, V>) -> Option<usize> {
        let tagged = tag(node, hash);
        for i in self.probe(hash) {
            // Relaxed: see `find_slot`.
            let p = self.slots[i].load(Ordering::Relaxed);
            if p.is_null() {
                return None;
            }
            if p == tagged {
                return Some(i);
            }
        }
        None
    }

    /// Writer: the slot where a new key hashing to `hash` goes (the first tombstone or empty
    /// slot of its probe run). The caller has checked that the key is absent and that the table
    /// has room (`within_load`).
    pub(crate) fn vacant_slot(&self, hash: u64) -> Vacancy {
        for i in self.probe(hash) {
            // Relaxed: see `find_slot`.
            let p = self.slots[i].load(Ordering::Relaxed);
            if p.is_null() {
                return Vacancy {
                    slot: i,
                    was_empty: true,
                };
            }
            if p == tombstone() {
                return Vacancy {
                    slot: i,
                    was_empty: false,
                };
            }
        }
        unreachable!("a table below its load limit always has a free slot")
    }

    /// Writer: points slot `i` at `node`, whose key hashes to `hash`.
    pub(crate) fn store(&self, i: usize, node: *mut Node<K, V>, hash: u64) {
        // Release: publishes the node's contents to readers (rule 4).
        self.slots[i].store(tag(node, hash), Ordering::Release);
    }

    /// Writer: turns slot `i` into a tombstone.
    pub(crate) fn store_tombstone(&self, i: usize) {
        // Release: not needed to publish anything, but harmless; kept alike with `store`.
        self.slots[i].store(tombstone(), Ordering::Release);
    }

    /// Every node pointer in the table (not tombstones), in slot order. Lock-free readers may
    /// call this under a guard (the iterator); writers under the lock.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = *mut Node<K, V>> + '_ {
        self.slots.iter().filter_map(|s| {
            // Acquire: as in `find`, so a reader sees the contents of the nodes it walks.
            let p = s.load(Ordering::Acquire);
            (!p.is_null() && p != tombstone()).then(|| untag(p))
        })
    }
}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}
