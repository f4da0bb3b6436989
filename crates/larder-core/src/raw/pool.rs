//! Node memory: a per-thread cache of freed node blocks, reused by the next allocation.
//!
//! Every insert of a new key allocates a node, and every eviction frees one a little later
//! (`limbo`, which frees a thread's retired nodes in batches once the epoch allows). glibc's
//! per-thread cache keeps only seven free chunks of a size, while nodes come back many at a
//! time, so most of those frees and the allocations after them went through glibc's slower
//! bins. When nodes were freed through crossbeam's bags of 64, `malloc`, `free` and
//! `malloc_consolidate` took about 17% of a profile of `insert_only` (uniform keys, every
//! insert evicting).
//!
//! Here a thread keeps up to [`KEEP`] freed blocks per node layout and hands them back to its
//! next allocations of that layout: a write that evicts reuses the block of a node retired a
//! few epochs earlier, often still in cache. Blocks beyond `KEEP`, and every block a thread
//! holds when it exits, go back to the global allocator. The pool holds memory only: a node's
//! key and value are dropped before its block arrives here.
//!
//! Under loom every model thread runs on one OS thread, so a thread-local pool would be shared
//! between model threads; loom builds use the global allocator directly.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};

/// Free blocks a thread keeps per layout. A thread that frees a batch of its retired nodes
/// (`limbo::BATCH`, 256) while it allocates as fast as it frees needs about one batch; two
/// leave room for a batch that arrives before the last one is used up, without growing
/// unboundedly: at most 512 blocks, about 24 KB for `u64 → u64` nodes, per thread and node
/// type.
#[cfg(not(larder_loom))]
const KEEP: usize = 512;

/// Allocates a block for `layout` (never zero-sized), reusing one of this thread's freed
/// blocks when it has one.
pub(crate) fn alloc_block(layout: Layout) -> *mut u8 {
    debug_assert!(layout.size() != 0);
    #[cfg(not(larder_loom))]
    if let Some(block) = local::take(layout) {
        return block;
    }
    // SAFETY: `layout` is not zero-sized (the caller's contract, checked above in debug).
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        handle_alloc_error(layout);
    }
    block
}

/// Frees `block`, keeping it for this thread's next allocation of `layout` if there is room.
///
/// # Safety
/// `block` came from [`alloc_block`] with this `layout`, nothing uses it any more (whatever
/// lived in it was dropped), and it is freed once.
pub(crate) unsafe fn free_block(block: *mut u8, layout: Layout) {
    #[cfg(not(larder_loom))]
    if local::put(block, layout) {
        return;
    }
    // SAFETY: the caller's contract: `block` was allocated by the global allocator with
    // `layout` (directly, or kept and handed out by the pool) and is freed once.
    unsafe { dealloc(block, layout) };
}

#[cfg(not(larder_loom))]
mod local {
    use super::KEEP;
    use std::alloc::{dealloc, Layout};
    use std::cell::RefCell;

    /// The free blocks of one layout.
    struct Bin {
        layout: Layout,
        blocks: Vec<*mut u8>,
    }

    /// A thread's bins: one per node layout the thread has freed, usually one or two.
    struct Pool {
        bins: Vec<Bin>,
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            for bin in &mut self.bins {
                for block in bin.blocks.drain(..) {
                    // SAFETY: every kept block was allocated by the global allocator with its
                    // bin's layout, and is owned by the pool alone (`put`'s contract).
                    unsafe { dealloc(block, bin.layout) };
                }
            }
        }
    }

    thread_local! {
        static POOL: RefCell<Pool> = const { RefCell::new(Pool { bins: Vec::new() }) };
    }

    /// A kept block of `layout`, if this thread has one.
    pub(super) fn take(layout: Layout) -> Option<*mut u8> {
        // `try_with`: during thread exit the pool may already be gone; `try_borrow_mut`: a
        // re-entrant call (none is known: nothing runs user code while the pool is borrowed)
        // would find it borrowed. Either way the caller falls back to the global allocator.
        POOL.try_with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            let bin = pool.bins.iter_mut().find(|b| b.layout == layout)?;
            bin.blocks.pop()
        })
        .ok()
        .flatten()
    }

    /// Keeps `block` (of `layout`) for this thread if its bin has room; `false` if the caller
    /// must free it.
    pub(super) fn put(block: *mut u8, layout: Layout) -> bool {
        POOL.try_with(|pool| {
            let Ok(mut pool) = pool.try_borrow_mut() else {
                return false;
            };
            let i = match pool.bins.iter().position(|b| b.layout == layout) {
                Some(i) => i,
                None => {
                    pool.bins.push(Bin {
                        layout,
                        blocks: Vec::new(),
                    });
                    pool.bins.len() - 1
                }
            };
            let bin = &mut pool.bins[i];
            if bin.blocks.len() >= KEEP {
                return false;
            }
            bin.blocks.push(block);
            true
        })
        .unwrap_or(false)
    }
}

#[cfg(all(test, not(larder_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_freed_block_is_reused_by_the_next_allocation_of_its_layout() {
        let a = Layout::new::<[u64; 5]>();
        let b = Layout::new::<[u64; 7]>();
        let x = alloc_block(a);
        // SAFETY: `x` came from `alloc_block(a)` and is freed once.
        unsafe { free_block(x, a) };
        let y = alloc_block(b);
        assert_ne!(x, y, "another layout never gets the block");
        assert_eq!(alloc_block(a), x, "the same layout does");
        // SAFETY: as above, for each block.
        unsafe {
            free_block(x, a);
            free_block(y, b);
        }
    }

    #[test]
    fn a_thread_keeps_at_most_keep_blocks() {
        let layout = Layout::new::<[u64; 6]>();
        let blocks: Vec<_> = (0..KEEP + 10).map(|_| alloc_block(layout)).collect();
        // The test runs on a thread of its own, whose pool starts without blocks of this layout.
        let kept: usize = blocks
            .iter()
            .map(|&b| usize::from(local::put(b, layout)))
            .sum();
        assert_eq!(kept, KEEP);
        // The pool refused the rest, which are freed here; it frees the kept ones when the
        // test's thread exits.
        for &b in &blocks[kept..] {
            // SAFETY: refused by the pool, so still owned here.
            unsafe { dealloc(b, layout) };
        }
    }
}
