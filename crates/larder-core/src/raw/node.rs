//! The entry: one heap block per key (recycled through `raw::pool`), read by lock-free readers
//! and owned by its shard.
//!
//! ```text
//! Node<u64, u64>: 40 bytes, in this order (`repr(C)`)
//! +--------+--------+---------+---------+---------+---------+
//! | meta   | weight | key     | value   | prev    | next    |
//! | u32 at | u32    | K       | V       | *Node   | *Node   |
//! +--------+--------+---------+---------+---------+---------+
//!   atomic   lock-     immutable once      lock-protected
//!   (below)  protected published           (raw/list.rs)
//!
//! meta: | tag: 24 bits of the hash | . | PREFIX: 2 bits | DETACHED | MAIN | READY | freq: 2 bits |
//!         bits 8..32                      bits 5..7        bit 4      bit 3  bit 2   bits 0..2
//! ```
//!
//! **The expiry prefix.** In a cache with expiry, the block holding a node starts with one or
//! two 8-byte words *before* the node (`PREFIX` says how many): the stamp, right before `meta`,
//! and `touched` before it (`crate::expiry` describes both). Placing them before the node
//! keeps the node's own layout, and with it every cache without expiry, unchanged, while a
//! reader's bytes (stamp, meta, key, value) stay contiguous. The words are atomics because
//! readers load them (and raise `touched`); the stamp is written before publication.
//!
//! The order puts what a reader touches (meta, key, value) in the first 24 bytes, so that a hit
//! usually costs one cache line. In the compiler's own order (largest alignment first) the meta
//! word came after the links, 32 bytes from the key, and half of the 48-byte heap chunks split a
//! reader's bytes over two lines. Keys and values aligned to 8 or less add no padding: the two
//! 4-byte words pair up. (`weight` is set before publication and then only under the lock.)
//!
//! * `tag` lets a reader reject a probed node without touching its key.
//! * `READY` says `value` is initialised. Nodes made by `insert` are born ready; a node made by
//!   single-flight loading is published *pending* (a placeholder that readers skip) and becomes
//!   ready when its loader writes the value and sets `READY` with `Release`.
//! * `freq` is the only thing a reader ever writes: S3-FIFO's saturating access counter (0..=3)
//!   or CLOCK's reference bit (0..=1). Readers bump it with a single relaxed compare-exchange and
//!   only when it is below the maximum, so a hot entry's line stops being written once saturated.
//! * `MAIN` (S3-FIFO: the entry lives in the main queue) and `DETACHED` (a pending node that was
//!   unlinked from the table, so its loader now owns it) change only under the shard lock.

use super::pool;
use crate::expiry::Prefix;
use crate::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell};
use std::alloc::Layout;
use std::mem::MaybeUninit;

pub(crate) const FREQ_MASK: u32 = 0b11;
const READY: u32 = 1 << 2;
const MAIN: u32 = 1 << 3;
const DETACHED: u32 = 1 << 4;
const PREFIX_SHIFT: u32 = 5;
const PREFIX_MASK: u32 = 0b11 << PREFIX_SHIFT;
const TAG_SHIFT: u32 = 8;
const TAG_MASK: u32 = !0 << TAG_SHIFT;
/// Set in a node's `touched` word once a read has found it idle past its time-to-idle
/// ([`Node::settle_idle`]); the rest of the word keeps the time of its last access. Far above
/// any time a clock gives (a stamp holds 42 bits of milliseconds).
const IDLE_OUT: u64 = 1 << 63;

/// The 24-bit tag kept in a node's meta word: bits 32..56 of the hash. (The shard is picked by
/// the top bits and the table slot by the low bits, so the tag adds information to both.)
#[inline(always)]
pub(crate) fn tag_of(hash: u64) -> u32 {
    ((hash >> 32) as u32) << TAG_SHIFT
}

/// The 24-bit fingerprint the eviction policy files a key under (its sketch counters and
/// ghost entries): the tag's bits, so it is known from a node without rehashing the key.
#[inline]
pub(crate) fn fingerprint_of(hash: u64) -> u32 {
    tag_of(hash) >> TAG_SHIFT
}

/// What a read does to `freq`: entry `f` is the counter after a hit on an entry whose counter
/// was `f`. Each policy supplies its own (see `eviction`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OnHit(pub(crate) [u8; 4]);

/// The intrusive queue links. Only `raw::list` reads or writes them, under the shard lock.
#[derive(Debug)]
pub(crate) struct Links<K, V> {
    pub(crate) prev: *mut Node<K, V>,
    pub(crate) next: *mut Node<K, V>,
}

/// See the module doc for the layout; `repr(C)` keeps the field order.
#[repr(C)]
pub(crate) struct Node<K, V> {
    meta: AtomicU32,
    weight: UnsafeCell<u32>,
    key: K,
    value: UnsafeCell<MaybeUninit<V>>,
    links: UnsafeCell<Links<K, V>>,
}

impl<K, V> Node<K, V> {
    /// The layout of a node's block with `words` prefix words, and the node's offset in it.
    fn block_layout(words: u32) -> (Layout, usize) {
        let node = Layout::new::<Self>();
        if words == 0 {
            return (node, 0);
        }
        // The words are `AtomicU64`s, aligned to 8, and a node may be aligned to less (to 4 on
        // 32-bit targets, whose pointers are): the block takes the larger alignment, and the
        // node starts at a multiple of it, so the words right before it are aligned too.
        let align = node.align().max(std::mem::align_of::<AtomicU64>());
        let offset = (words as usize * std::mem::size_of::<AtomicU64>()).next_multiple_of(align);
        let block = Layout::from_size_align(offset + node.size(), align)
            .expect("a node's layout with a few words more is valid");
        (block, offset)
    }

    /// The prefix words of the node at `node` (its meta word says how many), as pointers.
    ///
    /// # Safety
    /// `node` is a node made by `alloc` and not yet freed.
    unsafe fn prefix_words(node: *const Self) -> (Option<*mut AtomicU64>, Option<*mut AtomicU64>) {
        // SAFETY: the caller's contract: `node` is live. Relaxed: the PREFIX bits are set at
        // allocation and never change.
        let words = (unsafe { (*node).meta.load(Ordering::Relaxed) } & PREFIX_MASK) >> PREFIX_SHIFT;
        let base = node.cast::<AtomicU64>().cast_mut();
        // SAFETY: a node with `words` prefix words sits `block_layout(words).1`, at least
        // `words` times the size of an `AtomicU64`, bytes into its block, so the words before
        // it are in the same allocation (and aligned, as that offset is a multiple of theirs).
        unsafe {
            (
                (words >= 1).then(|| base.sub(1)),
                (words >= 2).then(|| base.sub(2)),
            )
        }
    }

    /// Allocates a node, in a block recycled by this thread (`raw::pool`) when one is free,
    /// with the expiry words of `prefix` before it.
    fn alloc(
        key: K,
        value: MaybeUninit<V>,
        meta: u32,
        weight: u32,
        prefix: Option<Prefix>,
    ) -> *mut Self {
        let words = prefix.map_or(0, |p| 1 + u32::from(p.touched.is_some()));
        let (layout, offset) = Self::block_layout(words);
        let block = pool::alloc_block(layout);
        // SAFETY: `alloc_block` returned a live, unused block of `layout` (never null), and
        // the node starts `offset < layout.size()` bytes in.
        let node = unsafe { block.add(offset) }.cast::<Self>();
        // SAFETY: the block is `layout`, so the node at `offset` is in bounds and aligned, and
        // so are the prefix words before it (see `prefix_words`, which reads the meta word
        // written first here).
        unsafe {
            node.write(Node {
                key,
                value: UnsafeCell::new(value),
                links: UnsafeCell::new(Links {
                    prev: std::ptr::null_mut(),
                    next: std::ptr::null_mut(),
                }),
                meta: AtomicU32::new(meta | (words << PREFIX_SHIFT)),
                weight: UnsafeCell::new(weight),
            });
            if let Some(prefix) = prefix {
                let (stamp, touched) = Self::prefix_words(node);
                if let Some(stamp) = stamp {
                    stamp.write(AtomicU64::new(prefix.stamp));
                }
                if let (Some(touched), Some(t)) = (touched, prefix.touched) {
                    touched.write(AtomicU64::new(t));
                }
            }
        }
        node
    }

    /// A node that is ready from birth (`insert`). `freq` is the starting access count.
    pub(crate) fn new_ready(
        key: K,
        value: V,
        hash: u64,
        weight: u32,
        freq: u32,
        prefix: Option<Prefix>,
    ) -> *mut Self {
        Self::alloc(
            key,
            MaybeUninit::new(value),
            tag_of(hash) | READY | (freq & FREQ_MASK),
            weight,
            prefix,
        )
    }

    /// A placeholder for a load in flight (`get_with`): readers skip it until it is ready.
    /// `prefix` only sizes the expiry words; [`Node::publish_value`] writes them.
    pub(crate) fn new_pending(key: K, hash: u64, prefix: Option<Prefix>) -> *mut Self {
        Self::alloc(key, MaybeUninit::uninit(), tag_of(hash), 0, prefix)
    }

    /// The expiry stamp (`crate::expiry`), if the node has one.
    ///
    /// The expiry words lie outside the node, so they are reached from a raw pointer to it,
    /// never from a `&Node`: a reference only grants access to the node's own bytes.
    ///
    /// # Safety
    /// `node` is live (the caller is pinned, or holds the shard lock) and is a pointer as stored
    /// in a table slot or returned by the allocation: with its whole block's provenance.
    #[inline(always)]
    pub(crate) unsafe fn stamp(node: *const Self) -> Option<u64> {
        // SAFETY: the caller's contract; the prefix words live as long as the node.
        let (stamp, _) = unsafe { Self::prefix_words(node) };
        // Relaxed: written before the node was published (or made ready) with Release, which
        // the caller's Acquire of the slot or meta word already synchronised with.
        // SAFETY: the word lives as long as the node.
        stamp.map(|s| unsafe { (*s).load(Ordering::Relaxed) })
    }

    /// The time of the last access, if the node's cache has a time-to-idle.
    ///
    /// # Safety
    /// As for [`Node::stamp`].
    #[inline(always)]
    pub(crate) unsafe fn touched(node: *const Self) -> Option<u64> {
        // SAFETY: as in `stamp`.
        let (_, touched) = unsafe { Self::prefix_words(node) };
        // Relaxed: a time only ever raised; any recent value is a valid (earlier) deadline
        // base, so it orders nothing. A node found idle out keeps the time it was last
        // touched (`IDLE_OUT` aside), so its deadline stays the one that passed.
        // SAFETY: the word lives as long as the node.
        touched.map(|t| unsafe { (*t).load(Ordering::Relaxed) } & !IDLE_OUT)
    }

    /// Settles the time-to-idle of `tti_ms` for a read at `horizon` (the latest the true time
    /// may be, `crate::time`): `false` if the node was last touched `tti_ms` or more before
    /// it, and then marks it [`IDLE_OUT`] for good; else `true`, having raised `touched` to
    /// `access`, if given, when it is behind. Also `true` for a node without a `touched` word.
    ///
    /// Both in one atomic step on `touched`, so a finding is final. With a plain check and a
    /// later raise, a read that checked just before the deadline and raised just after it
    /// brought back an entry another read had missed meanwhile: that read missed it, the next
    /// one found it, with no write between them (`tests/loom.rs`,
    /// `an_entry_read_as_idle_too_long_stays_gone`). Now the raise fails on the mark, and the
    /// late read misses too; or it lands first, and the other read, whose mark then fails,
    /// finds the entry touched since. Writes only to raise (at most once a millisecond, as
    /// before) or to mark (once).
    ///
    /// # Safety
    /// As for [`Node::stamp`].
    #[inline(always)]
    pub(crate) unsafe fn settle_idle(
        node: *const Self,
        tti_ms: u64,
        horizon: u64,
        access: Option<u64>,
    ) -> bool {
        // SAFETY: as in `stamp`.
        let (_, Some(touched)) = (unsafe { Self::prefix_words(node) }) else {
            return true;
        };
        // SAFETY: the word lives as long as the node.
        let touched = unsafe { &*touched };
        let mut live = true;
        // Relaxed: see `touched`. The word is the one place every reader of the entry's
        // time-to-idle meets, and its read-modify-writes are ordered among themselves. The
        // load comes first, so an entry read many times within one millisecond is written once.
        let _ = touched.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
            if t & IDLE_OUT != 0 {
                live = false;
                None
            } else if t.saturating_add(tti_ms) <= horizon {
                live = false;
                Some(t | IDLE_OUT)
            } else {
                live = true;
                access.filter(|&now| t < now)
            }
        });
        live
    }

    #[inline(always)]
    pub(crate) fn key(&self) -> &K {
        &self.key
    }

    /// The meta word as a reader sees it. `Acquire` pairs with the `Release` store that
    /// published the node (the slot store in `raw::table`) or made it ready
    /// ([`Node::publish_value`]), so a reader that sees `READY` also sees the value.
    #[inline(always)]
    pub(crate) fn load_meta(&self) -> u32 {
        self.meta.load(Ordering::Acquire)
    }

    /// Whether `meta` (from [`Node::load_meta`]) belongs to a ready node with this tag.
    #[inline(always)]
    pub(crate) fn ready_with_tag(meta: u32, tag: u32) -> bool {
        meta & (TAG_MASK | READY) == tag | READY
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.load_meta() & READY != 0
    }

    /// Clones the value.
    ///
    /// # Safety
    /// The caller observed `READY` in this node's meta with `Acquire` ([`Node::load_meta`]),
    /// and keeps the node alive (an epoch guard, or the shard lock) for the call.
    #[inline(always)]
    pub(crate) unsafe fn clone_value(&self) -> V
    where
        V: Clone,
    {
        // SAFETY: the caller's contract.
        unsafe { self.clone_value_with(V::clone) }
    }

    /// [`clone_value`](Self::clone_value) through `clone`, for callers whose `V` is not known
    /// to be `Clone` (see `expiry::Notify`).
    ///
    /// # Safety
    /// As for `clone_value`.
    #[inline(always)]
    pub(crate) unsafe fn clone_value_with(&self, clone: fn(&V) -> V) -> V {
        // SAFETY: READY was observed with Acquire, which pairs with the Release that followed
        // the value's only write, and the value is never written again; so it is initialised
        // and no write races this read.
        self.value
            .with(|v| clone(unsafe { (*v).assume_init_ref() }))
    }

    /// Records an access: moves `freq` to what `on_hit` says a hit makes of it, unless it is
    /// already there.
    ///
    /// `meta` is the value the caller just loaded; if another thread changed the word since,
    /// the compare-exchange fails and this access is simply not counted (an approximate counter
    /// is all S3-FIFO and CLOCK need, and a retry loop would put contention on the read path).
    /// A hot entry's counter reaches a fixed point, after which reads stop writing its line.
    #[inline(always)]
    pub(crate) fn touch(&self, meta: u32, on_hit: OnHit) {
        let freq = meta & FREQ_MASK;
        let next = u32::from(on_hit.0[freq as usize]);
        if next != freq {
            // Relaxed: the counter orders nothing; writers read it under the shard lock and
            // tolerate any recent value.
            let _ = self.meta.compare_exchange(
                meta,
                (meta & !FREQ_MASK) | next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The key's fingerprint ([`fingerprint_of`] its hash).
    pub(crate) fn fingerprint(&self) -> u32 {
        // Relaxed: the tag bits are set at allocation and never change.
        self.meta.load(Ordering::Relaxed) >> TAG_SHIFT
    }

    pub(crate) fn freq(&self) -> u32 {
        // Relaxed: a heuristic read by the eviction policy; see `touch`.
        self.meta.load(Ordering::Relaxed) & FREQ_MASK
    }

    /// Rewrites the bits writers own (`freq`, `MAIN`, `DETACHED`) with `f`, keeping the rest.
    /// Writers only, under the shard lock.
    ///
    /// A load and a store, not a read-modify-write: a locked instruction on every turn of an
    /// eviction hand cost more than the rest of the turn (see `ARCHITECTURE.md`, "Writes").
    /// Readers race this only through [`touch`](Self::touch), whose compare-exchange changes
    /// nothing but `freq`. If a reader's bump lands between the load and the store, the store
    /// overwrites it and that access goes uncounted, which `touch` already allows. Every other
    /// bit is changed only under the lock (`READY` too, in [`publish_value`](Self::publish_value)),
    /// so the load sees its latest value and the store writes it back unchanged.
    ///
    /// `Release`: a reader's `Acquire` load in [`load_meta`](Self::load_meta) may read this
    /// store instead of the `Release` that set `READY`. A plain store would end that release
    /// sequence; this one continues the chain, because the lock holder's store comes after the
    /// loader's value write (the shard lock orders the two writers).
    #[inline(always)]
    fn update_meta(&self, f: impl FnOnce(u32) -> u32) {
        // Relaxed: the lock orders this load after every writer's last store of the word; a
        // reader's bump it may miss is the lost access described above.
        let meta = self.meta.load(Ordering::Relaxed);
        self.meta.store(f(meta), Ordering::Release);
    }

    /// Sets `freq` (writers only, under the shard lock; see [`update_meta`](Self::update_meta)).
    pub(crate) fn set_freq(&self, freq: u32) {
        self.update_meta(|m| (m & !FREQ_MASK) | (freq & FREQ_MASK));
    }

    pub(crate) fn in_main(&self) -> bool {
        // Relaxed: MAIN is written and read only under the shard lock, which orders it.
        self.meta.load(Ordering::Relaxed) & MAIN != 0
    }

    /// Writers only, under the shard lock (see [`update_meta`](Self::update_meta)).
    pub(crate) fn set_in_main(&self, main: bool) {
        self.update_meta(|m| if main { m | MAIN } else { m & !MAIN });
    }

    pub(crate) fn is_detached(&self) -> bool {
        // Relaxed: DETACHED is written and read only under the shard lock.
        self.meta.load(Ordering::Relaxed) & DETACHED != 0
    }

    /// Writers only, under the shard lock (see [`update_meta`](Self::update_meta)).
    pub(crate) fn set_detached(&self) {
        self.update_meta(|m| m | DETACHED);
    }

    /// Writes the value of a pending node and makes it visible to readers.
    ///
    /// # Safety
    /// The node is pending (never made ready), and the caller is its loader holding the shard
    /// lock, so no other thread writes the value and no reader reads it before `READY`; `node`
    /// has its block's provenance, as for [`Node::stamp`].
    pub(crate) unsafe fn publish_value(
        node: *const Self,
        value: V,
        weight: u32,
        prefix: Option<Prefix>,
    ) {
        // SAFETY: the caller's contract: `node` is live.
        let this = unsafe { &*node };
        // SAFETY: no reader touches `value` before it sees READY (`clone_value`'s contract),
        // and the caller is the only writer.
        this.value.with_mut(|v| unsafe { (*v).write(value) });
        // SAFETY: `node` is live, with its block's provenance. Relaxed: the Release below
        // publishes these stores too.
        let (stamp, touched) = unsafe { Self::prefix_words(node) };
        if let (Some(word), Some(p)) = (stamp, prefix) {
            // SAFETY: the words live as long as the node.
            unsafe { (*word).store(p.stamp, Ordering::Relaxed) };
        }
        if let (
            Some(word),
            Some(Prefix {
                touched: Some(t), ..
            }),
        ) = (touched, prefix)
        {
            // SAFETY: as above.
            unsafe { (*word).store(t, Ordering::Relaxed) };
        }
        // SAFETY: weight is only accessed under the shard lock, which the caller holds.
        this.weight.with_mut(|w| unsafe { *w = weight });
        // Release: pairs with the Acquire in `load_meta`, publishing the value written above.
        this.meta.fetch_or(READY, Ordering::Release);
    }

    /// # Safety
    /// The caller holds the lock of the shard that owns this node.
    pub(crate) unsafe fn weight(&self) -> u32 {
        // SAFETY: the caller holds the shard lock, which serialises every access to `weight`.
        self.weight.with(|w| unsafe { *w })
    }

    /// # Safety
    /// The caller holds the lock of the shard that owns this node, and is `raw::list`.
    pub(crate) unsafe fn links(&self) -> *mut Links<K, V> {
        self.links.with_mut(|l| l)
    }
}

impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` means no other thread can reach the node any more; the epoch
        // (or the last handle's drop) that led here already ordered every earlier write.
        if self.meta.load(Ordering::Relaxed) & READY != 0 {
            // SAFETY: READY means the value was written, and it is dropped exactly once here.
            self.value.with_mut(|v| unsafe { (*v).assume_init_drop() });
        }
    }
}

impl<K: std::fmt::Debug, V> std::fmt::Debug for Node<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("key", &self.key)
            .field(
                "meta",
                &format_args!("{:#x}", self.meta.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

/// A ready node that no other thread can see yet.
///
/// `insert` builds it before taking the shard lock, so that the allocation (and, on a refused
/// insert, the free) stays out of the critical section that other writers to the shard wait
/// on. Dropping it frees the node; [`Unpublished::into_raw`] hands it over for publication.
pub(crate) struct Unpublished<K, V>(std::ptr::NonNull<Node<K, V>>);

impl<K, V> Unpublished<K, V> {
    /// A ready node with `freq` 0 (see [`Unpublished::set_freq`]).
    pub(crate) fn new(key: K, value: V, hash: u64, weight: u32, prefix: Option<Prefix>) -> Self {
        let node = Node::new_ready(key, value, hash, weight, 0, prefix);
        // SAFETY: `Node::alloc` never returns null.
        Unpublished(unsafe { std::ptr::NonNull::new_unchecked(node) })
    }

    pub(crate) fn key(&self) -> &K {
        // SAFETY: the node is live (owned by `self`) and its key is never written.
        unsafe { self.0.as_ref() }.key()
    }

    /// Sets the starting access count. A plain store is enough: no other thread can see the
    /// node, and `&mut self` rules out a concurrent call.
    pub(crate) fn set_freq(&mut self, freq: u32) {
        // SAFETY: as in `key`.
        let meta = &unsafe { self.0.as_ref() }.meta;
        // Relaxed: the node is unpublished; the Release store that publishes it orders this.
        meta.store(
            (meta.load(Ordering::Relaxed) & !FREQ_MASK) | (freq & FREQ_MASK),
            Ordering::Relaxed,
        );
    }

    /// The node, for publication: from now on the shard owns it.
    pub(crate) fn into_raw(self) -> *mut Node<K, V> {
        let node = self.0.as_ptr();
        std::mem::forget(self);
        node
    }
}

impl<K, V> Drop for Unpublished<K, V> {
    fn drop(&mut self) {
        // SAFETY: the node was never published, so no other thread can hold it, and `self`
        // owns it until here (`into_raw` forgets `self`).
        unsafe { free_node(self.0.as_ptr()) };
    }
}

/// Frees a node that no thread can reach any more.
///
/// # Safety
/// `node` came from [`Node::new_ready`] or [`Node::new_pending`], is unreachable from every
/// table and list, no reader can still hold it (its epoch has passed, or no reader ever saw it),
/// and it is freed once.
pub(crate) unsafe fn free_node<K, V>(node: *mut Node<K, V>) {
    // SAFETY: the caller's contract: the node and its prefix words are initialised and owned
    // here alone, so each is dropped once; the block came from `pool::alloc_block` with the
    // layout `block_layout` gives for the node's prefix (`Node::alloc`), starting `offset`
    // bytes before the node, and after the drops nothing uses it.
    unsafe {
        let (stamp, touched) = Node::prefix_words(node);
        let words = u32::from(stamp.is_some()) + u32::from(touched.is_some());
        for word in [stamp, touched].into_iter().flatten() {
            std::ptr::drop_in_place(word);
        }
        let (layout, offset) = Node::<K, V>::block_layout(words);
        // The block is returned even if the key's or the value's `Drop` panics (the drop glue
        // still drops the other fields), so a panicking `Drop` leaks nothing.
        let _block = FreeBlockOnDrop(node.cast::<u8>().sub(offset), layout);
        std::ptr::drop_in_place(node);
    }
}

/// Returns a node's block to the pool when dropped (see [`free_node`]).
struct FreeBlockOnDrop(*mut u8, std::alloc::Layout);

impl Drop for FreeBlockOnDrop {
    fn drop(&mut self) {
        // SAFETY: made only by `free_node`, for the block `pool::alloc_block` gave for this
        // layout, and dropped once, after the node in it was dropped: on the normal path after
        // `drop_in_place`, and when a field's `Drop` panics, once the drop glue has dropped the
        // other fields and the panic leaves `drop_in_place`.
        unsafe { pool::free_block(self.0, self.1) };
    }
}

#[cfg(all(test, not(larder_loom)))]
mod tests {
    use super::*;

    /// The expiry words before a node are `AtomicU64`s, aligned to 8, also where the node
    /// itself is aligned to less: on 32-bit targets, whose pointers (and `u32` keys and values)
    /// are 4-aligned, a block aligned only as the node is put the words at odd multiples of 4.
    #[test]
    fn the_expiry_words_are_aligned_for_their_atomics() {
        let words_align = std::mem::align_of::<AtomicU64>();
        for words in 1..=2 {
            let (block, offset) = Node::<u32, u32>::block_layout(words);
            assert!(block.align() >= words_align, "a block of {words} words");
            assert_eq!(offset % words_align, 0, "the node's offset, {words} words");
        }
        let prefix = Prefix {
            stamp: 5,
            touched: Some(6),
        };
        let node = Node::new_ready(1u32, 2u32, 0, 1, 0, Some(prefix));
        // SAFETY: `node` was made just above, with its block's provenance, and is freed once,
        // below.
        unsafe {
            let (stamp, touched) = Node::prefix_words(node);
            for word in [stamp, touched].into_iter().flatten() {
                assert!(word.is_aligned(), "an expiry word at {word:p}");
            }
            assert_eq!(Node::stamp(node), Some(5));
            assert_eq!(Node::touched(node), Some(6));
            free_node(node);
        }
    }
}
