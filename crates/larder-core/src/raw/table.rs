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
//! **Control bytes.** Beside the slots, a byte array says what each slot holds, as hashbrown's
//! control bytes do: empty, deleted (a tombstone), or 7 bits of the key's hash (bits 32..39, the
//! lowest of the node's own meta tag, independent of the slot index, which uses the low bits,
//! and of the shard, which uses the top bits). Probes walk the bytes and load a slot only when
//! its byte matches, so a lookup of an absent key usually reads one line of bytes and no slot at
//! all, and a slot holding another key is skipped without dereferencing its node in 127 cases
//! of 128. The bytes are 1/8 the size of the slots, so they stay in cache where the slots do
//! not. Measured on lookups of absent keys in a cache of 150,000 entries (one thread, ratio to
//! quick_cache in the same process, which reads 1-byte control groups too): 0.21 with untagged
//! slots, 0.24 with 3-bit tags in the pointers' alignment bits (which the bytes replaced), 0.51
//! with the bytes; insert_only 0.40 -> 0.58. The bytes cost 1 byte per slot, about 2 bytes per
//! entry.
//!
//! A writer stores the slot, then its byte, both with `Release`; a reader loads the byte with
//! `Acquire`, then the slot. A reader that sees a node's byte therefore sees that node (or a
//! later change to the slot, which it checks as usual). A byte is never set back to empty inside
//! a table, so rule 2's argument (every probe ends) and rule 1's (a present entry's probe run has
//! no empty slot) hold for the bytes as for the slots.
//!
//! **Probe distances.** A slot's pointer carries, in the low bits the node's alignment leaves
//! clear (three on 64-bit targets), how far the node sits from its home slot (0 to 6; 7 for
//! "7 or more"). Every load masks them off before using the pointer. They let a rebuild place a
//! node without reading it: its home slot is its slot minus its distance, and in a table of the
//! same size or smaller, the home is that number's low bits, since a home is the hash's low
//! bits. A churning shard rebuilds at the same size every few tens of thousands of evictions,
//! and rehashing every key meant a cache miss per node: about 10% of an `insert_only` profile,
//! 4% with the distances (only growth, and the rare distance of 7 or more, still rehash).
//!
//! Tombstones are counted with the nodes against the 3/4 limit; a rebuild at the same size
//! clears them when the shard is mostly tombstones, so a churning shard neither grows without
//! bound nor degrades into long probe runs.

use super::node::Node;
use crate::sync::{AtomicPtr, AtomicU8, Ordering};
use std::borrow::Borrow;

/// Aligned like a node (or more), so a tombstone's address has clear distance bits.
#[repr(C, align(8))]
struct Site {
    _byte: u8,
}

/// Address identity of a tombstone. Never dereferenced.
static TOMBSTONE_SITE: Site = Site { _byte: 0 };

#[inline(always)]
fn tombstone<K, V>() -> *mut Node<K, V> {
    std::ptr::addr_of!(TOMBSTONE_SITE).cast_mut().cast()
}

/// The low bits of a slot's pointer that hold the node's probe distance: those a node's
/// alignment leaves clear (three on 64-bit targets, where links make a node 8-aligned). The
/// largest value means "this far or farther".
#[inline(always)]
fn distance_mask<K, V>() -> usize {
    std::mem::align_of::<Node<K, V>>().min(8) - 1
}

/// The node a slot's pointer names, without its distance bits.
#[inline(always)]
fn untagged<K, V>(p: *mut Node<K, V>) -> *mut Node<K, V> {
    p.map_addr(|a| a & !distance_mask::<K, V>())
}

/// Where a new node would go: a slot, and whether it was empty (else a tombstone).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vacancy {
    pub(crate) slot: usize,
    pub(crate) was_empty: bool,
}

/// What a writer's probe for a key finds: `Ok((slot, node))` where a node for it is, or
/// `Err(vacancy)` where a new one would go.
pub(crate) type Located<K, V> = Result<(usize, *mut Node<K, V>), Vacancy>;

/// Control byte of a slot that never held a node (in this table).
const EMPTY: u8 = 0;
/// Control byte of a tombstone.
const DELETED: u8 = 1;

/// The control byte of a slot holding a node for `hash`: the high bit set, then hash bits
/// 32..39, so it is never `EMPTY` or `DELETED`.
#[inline(always)]
fn ctrl_of(hash: u64) -> u8 {
    0x80 | ((hash >> 32) as u8 & 0x7f)
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

/// The element types [`zeroed_slice`] hands out: all-zero bits are a valid value of each, the
/// one [`zero`](Zeroed::zero) makes. Loom's atomics are not plain memory, so under loom the
/// slice is filled with `zero()` instead.
///
/// # Safety
/// Outside loom, all-zero bits are a valid `Self`, equal to `Self::zero()`.
pub(crate) unsafe trait Zeroed: Sized {
    // Called only under loom: elsewhere the allocator's zeros are the values.
    #[cfg_attr(not(larder_loom), allow(dead_code))]
    fn zero() -> Self;
}

// SAFETY: std's `AtomicU8` has `u8`'s representation, in which zero bits are 0.
unsafe impl Zeroed for AtomicU8 {
    fn zero() -> Self {
        AtomicU8::new(0)
    }
}

// SAFETY: std's `AtomicPtr<T>` has `*mut T`'s representation, in which zero bits are null.
unsafe impl<T> Zeroed for AtomicPtr<T> {
    fn zero() -> Self {
        AtomicPtr::new(std::ptr::null_mut())
    }
}

// SAFETY: every bit pattern is a `u64`; zero bits are 0.
unsafe impl Zeroed for u64 {
    fn zero() -> Self {
        0
    }
}

// SAFETY: a pair of `u32`s, each 0 in zero bits (padding, were there any, may hold anything).
unsafe impl Zeroed for (u32, u32) {
    fn zero() -> Self {
        (0, 0)
    }
}

/// `len` elements of all-zero bits from the allocator, or `None` if it has no memory for them.
/// For a large array that means fresh pages the kernel zeroes on first touch: the memory is
/// used as the array is written, not when it is made (see [`Table::try_new`]).
pub(crate) fn zeroed_slice<T: Zeroed>(len: usize) -> Option<Box<[T]>> {
    #[cfg(not(larder_loom))]
    {
        let layout = std::alloc::Layout::array::<T>(len).ok()?;
        if layout.size() == 0 {
            return Some(Box::default());
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` is a fresh allocation of `len` elements of `T` with `Box`'s layout for
        // `[T]` (the global allocator, `Layout::array`), and all-zero bits are a valid `T`
        // (`T: Zeroed`), so the slice is initialised and owned.
        Some(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) })
    }
    #[cfg(larder_loom)]
    {
        let mut v = Vec::new();
        v.try_reserve_exact(len).ok()?;
        v.extend((0..len).map(|_| T::zero()));
        Some(v.into_boxed_slice())
    }
}

pub(crate) struct Table<K, V> {
    /// One byte per slot: `EMPTY`, `DELETED`, or `ctrl_of` the node's hash.
    ctrl: Box<[AtomicU8]>,
    slots: Box<[AtomicPtr<Node<K, V>>]>,
    mask: usize,
}

impl<K, V> Table<K, V> {
    /// An empty table of `slots` slots (a power of two). Failing to allocate it aborts, as
    /// any allocation's failure does; [`try_new`](Self::try_new) is for sizes a user asked for.
    pub(crate) fn new(slots: usize) -> Self {
        Self::try_new(slots).unwrap_or_else(|| {
            let layout = std::alloc::Layout::array::<AtomicPtr<Node<K, V>>>(slots)
                .unwrap_or(std::alloc::Layout::new::<AtomicPtr<Node<K, V>>>());
            std::alloc::handle_alloc_error(layout)
        })
    }

    /// [`new`](Self::new) for a size the user asked for (an initial capacity, a reserve):
    /// `None` instead of aborting the process if the memory cannot be had.
    ///
    /// The arrays come zeroed from the allocator (`EMPTY` bytes and null slots are all
    /// zeros), which for a large table means fresh pages the kernel zeroes on first touch:
    /// memory is used as the table fills, not when it is made. Writing the zeros here instead
    /// touched every page at once, so a large initial capacity that an overcommitting kernel
    /// granted got the process killed for memory it had not used yet.
    pub(crate) fn try_new(slots: usize) -> Option<Self> {
        debug_assert!(slots.is_power_of_two());
        const { assert!(EMPTY == 0) };
        Some(Table {
            ctrl: zeroed_slice(slots)?,
            slots: zeroed_slice(slots)?,
            mask: slots - 1,
        })
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The probe sequence for `hash`: every slot once, starting at the home slot.
    #[inline(always)]
    fn probe(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        self.probe_from(hash as usize & self.mask)
    }

    /// The probe sequence from slot `home`.
    #[inline(always)]
    fn probe_from(&self, home: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).map(move |i| (home + i) & self.mask)
    }

    /// Lock-free lookup of a ready node: returns it, as stored in its slot (with its block's
    /// provenance, for the expiry words before it), with the meta word the caller saw.
    ///
    /// The node stays valid while the caller's epoch guard (which also protects `self`) is
    /// alive: nodes are retired through the epoch only after they are unlinked.
    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<(*const Node<K, V>, u32)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let tag = super::node::tag_of(hash);
        let ctrl = ctrl_of(hash);
        for i in self.probe(hash) {
            // Acquire: pairs with the Release store of the byte, which follows the store of the
            // slot (see the module doc), so the slot load below sees that node or later.
            let c = self.ctrl[i].load(Ordering::Acquire);
            if c == EMPTY {
                return None;
            }
            if c != ctrl {
                continue;
            }
            // Acquire: pairs with the Release store that published the node (rule 4).
            let p = untagged(self.slots[i].load(Ordering::Acquire));
            if p.is_null() || p == tombstone() {
                continue;
            }
            // SAFETY: a non-null, non-tombstone slot holds a node that was live when the slot
            // was loaded; it is retired only through the epoch after being unlinked, and the
            // caller is pinned (the table itself was loaded under the same guard).
            let node = unsafe { &*p };
            let meta = node.load_meta();
            if Node::<K, V>::ready_with_tag(meta, tag) && node.key().borrow() == key {
                return Some((p, meta));
            }
        }
        None
    }

    /// Writer lookup (under the shard lock): where `key` is, or where it would go.
    ///
    /// `Ok((slot, node))` if a node for `key` (ready or pending) is in the table; otherwise
    /// `Err(vacancy)`, the slot a new node for `key` would take, found in the same pass: the
    /// first tombstone of the probe run, else the empty slot that ended it.
    pub(crate) fn find_slot<Q>(&self, hash: u64, key: &Q) -> Located<K, V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // Relaxed: the caller holds the shard lock, and only lock holders write slots and
        // bytes; the lock orders those writes before these loads.
        self.locate(hash, key, Ordering::Relaxed)
            .expect("a table below its load limit always has an empty slot")
    }

    /// [`find_slot`](Self::find_slot) without the lock, for a writer about to take it: the
    /// answer is the locked one only if no write to the shard ended between the start of
    /// this call and the lock (`Shard::lock_for` checks the shard's write count). Otherwise it
    /// may be anything, or `None`. The caller is pinned, as for [`find`](Self::find).
    pub(crate) fn find_slot_unlocked<Q>(&self, hash: u64, key: &Q) -> Option<Located<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // Acquire: as in `find`, so a node this probe compares is seen whole.
        self.locate(hash, key, Ordering::Acquire)
    }

    /// The probe of [`find_slot`](Self::find_slot), loading bytes and slots with `order`.
    /// `None` if it went round the whole table, which only a probe racing writers can do.
    #[inline(always)]
    fn locate<Q>(&self, hash: u64, key: &Q, order: Ordering) -> Option<Located<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let ctrl = ctrl_of(hash);
        let mut first_tombstone = None;
        for i in self.probe(hash) {
            let c = self.ctrl[i].load(order);
            if c == EMPTY {
                return Some(Err(match first_tombstone {
                    Some(slot) => Vacancy {
                        slot,
                        was_empty: false,
                    },
                    None => Vacancy {
                        slot: i,
                        was_empty: true,
                    },
                }));
            }
            if c == DELETED {
                first_tombstone.get_or_insert(i);
                continue;
            }
            if c != ctrl {
                continue;
            }
            let p = untagged(self.slots[i].load(order));
            // Under the lock a node's byte always comes with its node; without it, a writer
            // may have changed the slot since the byte was loaded.
            if p.is_null() || p == tombstone() {
                continue;
            }
            // SAFETY: a non-null, non-tombstone slot holds a node of the shard, freed only
            // through the epoch after being unlinked under the lock; the caller holds the lock
            // or is pinned (`find_slot_unlocked`), so it is live.
            if unsafe { (*p).key() }.borrow() == key {
                return Some(Ok((i, p)));
            }
        }
        None
    }

    /// Writer lookup by identity: the slot holding `node`, whose key hashes to `hash`.
    pub(crate) fn slot_of(&self, hash: u64, node: *mut Node<K, V>) -> Option<usize> {
        let ctrl = ctrl_of(hash);
        for i in self.probe(hash) {
            // Relaxed: see `find_slot`.
            let c = self.ctrl[i].load(Ordering::Relaxed);
            if c == EMPTY {
                return None;
            }
            // Relaxed: see `find_slot`.
            if c == ctrl && untagged(self.slots[i].load(Ordering::Relaxed)) == node {
                return Some(i);
            }
        }
        None
    }

    /// Writer lookup by identity alone, for when the node's hash cannot be had (hashing its
    /// key panicked): a scan of every slot, so only for that rare path.
    pub(crate) fn slot_by_address(&self, node: *mut Node<K, V>) -> Option<usize> {
        // Relaxed: see `find_slot`.
        (0..self.slots.len()).find(|&i| untagged(self.slots[i].load(Ordering::Relaxed)) == node)
    }

    /// Writer: the slot where a new key hashing to `hash` goes (the first tombstone or empty
    /// slot of its probe run). The caller has checked that the key is absent and that the table
    /// has room (`within_load`).
    pub(crate) fn vacant_slot(&self, hash: u64) -> Vacancy {
        self.vacant_from(hash as usize & self.mask)
    }

    /// [`vacant_slot`](Self::vacant_slot) for a probe run starting at slot `home`.
    fn vacant_from(&self, home: usize) -> Vacancy {
        for i in self.probe_from(home) {
            // Relaxed: see `find_slot`.
            match self.ctrl[i].load(Ordering::Relaxed) {
                EMPTY => {
                    return Vacancy {
                        slot: i,
                        was_empty: true,
                    }
                }
                DELETED => {
                    return Vacancy {
                        slot: i,
                        was_empty: false,
                    }
                }
                _ => {}
            }
        }
        unreachable!("a table below its load limit always has a free slot")
    }

    /// Writer: points slot `i` at `node`, whose key hashes to `hash`.
    pub(crate) fn store(&self, i: usize, node: *mut Node<K, V>, hash: u64) {
        self.store_at(i, node, hash as usize & self.mask, ctrl_of(hash));
    }

    /// [`store`](Self::store) given the node's home slot and control byte.
    fn store_at(&self, i: usize, node: *mut Node<K, V>, home: usize, ctrl: u8) {
        let distance = (i.wrapping_sub(home) & self.mask).min(distance_mask::<K, V>());
        // Release: publishes the node's contents to readers (rule 4). The slot first, then the
        // byte: a reader that sees the byte sees the slot (see the module doc).
        self.slots[i].store(node.map_addr(|a| a | distance), Ordering::Release);
        self.ctrl[i].store(ctrl, Ordering::Release);
    }

    /// Writer: copies every node (ready or pending) into `fresh`, an empty table nobody else
    /// can see yet, and returns how many.
    ///
    /// A node's home slot in `fresh` comes from the probe distance stored with it when `fresh`
    /// is no larger than this table (a home's low bits are the same in both: see the module
    /// doc), and from `hash_of(node)` when `fresh` is larger or the distance was too long to
    /// store.
    ///
    /// `moved(i, j)` hears that the node in slot `i` went to slot `j` of `fresh`.
    pub(crate) fn copy_into(
        &self,
        fresh: &Table<K, V>,
        hash_of: impl Fn(*mut Node<K, V>) -> u64,
        mut moved: impl FnMut(usize, usize),
    ) -> usize {
        let known = fresh.mask <= self.mask;
        let mut copied = 0;
        for i in 0..self.slots.len() {
            // Relaxed: see `find_slot`.
            let ctrl = self.ctrl[i].load(Ordering::Relaxed);
            if ctrl == EMPTY || ctrl == DELETED {
                continue;
            }
            // Relaxed: see `find_slot`.
            let p = self.slots[i].load(Ordering::Relaxed);
            let node = untagged(p);
            let distance = p.addr() & distance_mask::<K, V>();
            let home = if known && distance < distance_mask::<K, V>() {
                i.wrapping_sub(distance) & self.mask & fresh.mask
            } else {
                hash_of(node) as usize & fresh.mask
            };
            let j = fresh.vacant_from(home).slot;
            fresh.store_at(j, node, home, ctrl);
            moved(i, j);
            copied += 1;
        }
        copied
    }

    /// Writer: turns slot `i` into a tombstone.
    pub(crate) fn store_tombstone(&self, i: usize) {
        // Release: publishes nothing, but keeps the slot-then-byte order of `store`.
        self.slots[i].store(tombstone(), Ordering::Release);
        self.ctrl[i].store(DELETED, Ordering::Release);
    }

    /// Writer: the node in slot `i`, if it holds one.
    pub(crate) fn node_at(&self, i: usize) -> Option<*mut Node<K, V>> {
        // Relaxed: see `find_slot`.
        let p = untagged(self.slots[i].load(Ordering::Relaxed));
        (!p.is_null() && p != tombstone()).then_some(p)
    }

    /// Every node pointer in the table (not tombstones), in slot order. Lock-free readers may
    /// call this under a guard (the iterator); writers under the lock.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = *mut Node<K, V>> + '_ {
        self.slots.iter().filter_map(|s| {
            // Acquire: as in `find`, so a reader sees the contents of the nodes it walks.
            let p = untagged(s.load(Ordering::Acquire));
            (!p.is_null() && p != tombstone()).then_some(p)
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

#[cfg(all(test, not(larder_loom)))]
mod tests {
    use super::*;
    use crate::raw::node::free_node;

    /// Copies a table whose probe runs reach past the longest storable distance into a smaller
    /// table, one of the same size and a larger one, and finds every key in each.
    #[test]
    fn copies_keep_every_node_findable() {
        let old: Table<u64, u64> = Table::new(64);
        // Keys 0..12 all hash home to slot 3 (distances 0..11); keys 12..20 spread out.
        let hash = |k: u64| {
            if k < 12 {
                3 + (k << 32)
            } else {
                k * 0x9E37_79B9 + (k << 32)
            }
        };
        let mut nodes = Vec::new();
        for k in 0..20u64 {
            let node = Node::new_ready(k, k, hash(k), 1, 0, None);
            old.store(old.vacant_slot(hash(k)).slot, node, hash(k));
            nodes.push(node);
        }
        old.store_tombstone(old.slot_of(hash(15), nodes[15]).unwrap());
        let max = distance_mask::<u64, u64>();
        let far = (old.slots.iter())
            .filter(|s| s.load(Ordering::Relaxed).addr() & max == max)
            .count();
        // At least keys 7 to 11 sit at or past the longest storable distance: 7 on 64-bit
        // targets, where a node's alignment leaves three bits for it; 3 on 32-bit ones, where
        // more keys do (two bits).
        assert!(far >= 5, "{far} keys sit {max} or more slots from home");
        for slots in [32, 64, 128] {
            let fresh = Table::new(slots);
            let rehashed = std::cell::Cell::new(0);
            let mut moves = 0;
            let copied = old.copy_into(
                &fresh,
                |n| {
                    rehashed.set(rehashed.get() + 1);
                    // SAFETY: the nodes are live until the end of the test.
                    hash(unsafe { *(*n).key() })
                },
                |i, j| {
                    moves += 1;
                    assert_eq!(old.node_at(i), fresh.node_at(j));
                },
            );
            assert_eq!(moves, copied);
            assert_eq!(copied, 19, "{slots} slots");
            // Only growth, or a distance too long to store, needs the key's hash.
            let expected = if slots > 64 { 19 } else { far };
            assert_eq!(rehashed.get(), expected, "{slots} slots");
            for k in (0..20u64).filter(|&k| k != 15) {
                let found = fresh.find_slot(hash(k), &k).ok().map(|(_, n)| n);
                assert_eq!(found, Some(nodes[k as usize]), "key {k} in {slots} slots");
            }
            assert!(fresh.find_slot(hash(15), &15).is_err());
            // Every slot's distance bits match the node's true distance from its home: a copy
            // that got a home wrong still finds the key along the run, but not this.
            for (j, slot) in fresh.slots.iter().enumerate() {
                let p = slot.load(Ordering::Relaxed);
                if p.is_null() {
                    continue;
                }
                // SAFETY: as above.
                let home = hash(unsafe { *(*untagged(p)).key() }) as usize & fresh.mask;
                let distance = j.wrapping_sub(home) & fresh.mask;
                assert_eq!(p.addr() & max, distance.min(max), "slot {j} of {slots}");
            }
        }
        for node in nodes {
            // SAFETY: each node was made above, is in no table that outlives this, and is freed
            // once.
            unsafe { free_node(node) };
        }
    }
}
