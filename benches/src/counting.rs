//! A global allocator that counts: `System`, plus the live requested bytes and their
//! high-water mark, for the binaries that measure memory (`memory`, `compaction_cost`). A
//! binary installs it with `#[global_allocator] static GLOBAL: Counting = Counting;`; in any
//! other binary the counts stay at zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `System`, plus a count of live requested bytes and its high-water mark.
#[derive(Debug)]
pub struct Counting;

/// Live requested bytes. All counters are `Relaxed`: they publish no data, each update is a
/// single atomic RMW, and a reading taken on the same thread that did the work sees that work.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The highest `LIVE` seen since the last `reset_peak`.
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn grew(by: usize) {
        // Relaxed: see `LIVE`.
        let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(by: usize) {
        // Relaxed: see `LIVE`.
        LIVE.fetch_sub(by, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the bookkeeping around the calls only touches atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract (non-zero size).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller guarantees `ptr` came from this allocator (so from
        // `System`) with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        Self::shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        // On failure the old block stays allocated and nothing changes.
        if !new.is_null() {
            Self::grew(new_size);
            Self::shrank(layout.size());
        }
        new
    }
}

/// Bytes requested and not yet freed.
pub fn live() -> usize {
    // Relaxed: see `LIVE`.
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new high-water mark at what is live now.
pub fn reset_peak() {
    // Relaxed: see `LIVE`.
    PEAK.store(live(), Ordering::Relaxed);
}

/// The most bytes live at once since the last [`reset_peak`].
pub fn peak() -> usize {
    // Relaxed: see `LIVE`.
    PEAK.load(Ordering::Relaxed)
}
