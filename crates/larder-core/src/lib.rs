//! Larder's engine: a sharded concurrent cache with lock-free reads.
//!
//! Most users depend on the `larder` facade, which re-exports this crate.
//!
//! ```
//! use larder_core::Cache;
//!
//! let cache: Cache<u64, String> = Cache::new(10_000);
//! cache.insert(1, "one".to_string());
//! assert_eq!(cache.get(&1).as_deref(), Some("one"));
//! let two = cache.get_with(2, || "two".to_string()); // computed once, then cached
//! assert_eq!(two, "two");
//! assert_eq!(cache.stats().hits, 1);
//! ```
//!
//! # Consistency
//! Every operation on one key is linearizable: a read that starts after an `insert` returns
//! returns that value or a newer one, never an older one. Reads never block, so a read that
//! overlaps a write may see the state before or after it. Across keys there is no snapshot:
//! `len`, `weighted_size`, `stats`, `clear` and `iter` work shard by shard, and a concurrent
//! reader may see some shards changed and others not yet. Eviction happens inside the `insert`
//! that overfills a shard, so once `insert` returns the weighted size is within the capacity.
//! A value being cloned by a reader is never freed under it: unlinked entries are reclaimed
//! through epochs (`crossbeam-epoch`) after every reader that could see them has moved on, by
//! the thread that removed them, a little later (after one of its next writes, or in
//! [`Cache::run_pending_tasks`]); so a removed value's `Drop` runs on the thread that wrote,
//! never under a shard lock. (What a thread still holds when it exits goes to `crossbeam-epoch`
//! as one deferred call: run by the exiting thread when no reader holds the epoch back, else by
//! whichever thread's pin next collects, a reader's included.) Besides what the epoch has not
//! cleared yet (as with any epoch-based scheme, a reader that stays pinned holds that up), a
//! thread keeps up to 256 removed entries in its current batch, until it fills the batch or
//! calls [`Cache::run_pending_tasks`] (as the janitor does every tick).
//!
//! With expiry, an entry is invisible to every read from its deadline on (up to a few
//! milliseconds early with the real clock, never late: see [`Clock`]), but stays counted in
//! `len` until the janitor, [`Cache::run_pending_tasks`] or a write that meets it removes it.
//! A write that overfills a shard first removes what has expired there (up to 512 table slots
//! scanned), and only then evicts live entries. A write that replaces an expired entry is
//! never undone by the janitor. The eviction listener hears each removed entry exactly once,
//! after the shard's lock is released, on the thread that removed it.
//!
//! # Costs
//! | what | cost |
//! |---|---|
//! | `get`, `peek`, `contains_key` | no lock, no wait; one epoch pin, a hash, a probe of the shard's index, a clone of the value; writes only to the entry's own words (its access bits, and with a time-to-idle its last-read time) and, for `get`, to the calling thread's statistics stripe (its own while at most four live threads a core, rounded up to a power of two and at least eight, have counted reads in the process; the threads beyond share one, with atomic adds); and, one pin in 128 on a thread, `crossbeam-epoch` collects, which may advance its global epoch and run deferred frees |
//! | `insert`, `remove` | the shard's lock; one allocation for a new entry |
//! | expiry | 8 bytes per entry (16 with a time-to-idle) and about half a byte of timer wheel; one clock read per lookup: the coarse one (4–10 ns measured on Linux, `docs/BENCHMARKS.md`, "Expiry"), or the precise one (22–37 ns) when the time-to-live or time-to-idle is under [`PRECISE_BELOW`] (see [`Clock`]) |
//! | the janitor | one process-wide thread while any cache with expiry lives; at most 512 table slots scanned per shard lock hold |
//! | memory per entry | the node (key, value, two queue links, 8 bytes of metadata: 24 bytes beyond `K` and `V`), 12 to 24 bytes of index (a 9-byte slot, pointer and control byte, at a load between 3/8 and 3/4), and with S3-FIFO about 4 bytes of frequency sketch: 47 beyond `K` and `V` measured for `u64 → u64`, see `docs/BENCHMARKS.md` |
//!
//! The design, with the measurements behind each choice, is in `docs/ARCHITECTURE.md`.

#![deny(unsafe_op_in_unsafe_fn)]

mod builder;
mod cache;
mod eviction;
mod expiry;
mod flight;
mod raw;
mod shard;
mod stats;
mod sync;
mod time;
// Public for the `larder` facade only (see its module doc), so hidden from the docs.
#[doc(hidden)]
pub mod unwind;

pub use builder::{BuildError, CacheBuilder, Policy, MAX_SHARDS, MIN_AUTO_SHARD_CAPACITY};
pub use cache::{Cache, FittedShares, Iter};
pub use expiry::{ExpiryDisabled, RemovalCause};
pub use larder_janitor::Janitor;
pub use stats::CacheStats;
pub use time::{Clock, MockClock, PRECISE_BELOW};
