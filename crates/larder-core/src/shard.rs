//! One shard: a lock-free index for readers, and everything writers change under one lock.
//!
//! ```text
//! Shard
//! ├── table: Atomic<Table>        readers: pin, load, probe, clone.  No lock, no wait.
//! ├── len, weighted: atomics      mirrors of the locked counts, for len() without a lock
//! ├── writes: atomic              locked sections ended, for a writer's probe before the lock
//! └── state: Mutex<State>         writers only
//!     ├── eviction: S3-FIFO queues or the CLOCK ring (intrusive lists through the nodes)
//!     ├── capacity, weighted, len, used slots, pending loads
//!     ├── flights: loads in progress (single-flight)
//!     ├── wheel: with expiry, when each segment of the table next has something to expire
//!     └── counters: inserts, updates, evictions, removals, expirations, rejections
//! ```
//!
//! Every write follows the same order: lock; change the table and the queues; retire what was
//! unlinked (`raw::limbo`); evict until the shard is within its capacity; update the mirrors
//! and unlock (both in `Locked`'s drop, so also when user code panics mid-write); tell the
//! eviction listener, if any, what left; drop what the write held and did not store, if
//! anything (`Held`); free what this thread retired before and the epoch now allows. So when
//! a write returns, the shard's weighted size is at most its capacity, and the cache's (the
//! sum over shards) at most the cache's capacity, and neither the listener nor a refused
//! value's `Drop` runs under a shard lock.
//!
//! User code runs under the lock only where it must: `K::hash` (a rebuild, an eviction's
//! victim) and `K::eq` (a probe). Each may panic; the write is ordered so that a panic leaves
//! the shard whole: a probe changes nothing, a rebuild that fails keeps the old table, and an
//! eviction finishes without the hash (see `evict_to_capacity`). The entry or key the write
//! was about to store is held by `Locked` meanwhile, so an unwinding write drops it after
//! the unlock, as it drops a refused one. `V::clone` runs after the
//! unlock for the listener, and last, once the removal is whole, for `remove`'s answer. A
//! re-entrant write to the same shard from that user code would wait on the lock it holds:
//! `Hash`, `Eq` and `Clone` must not write to the cache, nor call what locks its shards (its
//! reads take no lock).

use crate::eviction::Eviction;
use crate::expiry::wheel::{segments_for, Wheel, SEGMENT_BITS, SEGMENT_SLOTS};
use crate::expiry::{Expiry, Notify, Prefix, RemovalCause, NEVER};
use crate::flight::Flight;
use crate::raw::limbo;
use crate::raw::node::{free_node, Node, Unpublished};
use crate::raw::table::{slots_for, within_load, zeroed_slice, Located, Table, Vacancy};
use crate::sync::epoch::{self, Atomic, Guard, Owned};
use crate::sync::{
    lock_awake, unlock_fair, Arc, AtomicU64, AtomicUsize, CachePadded, Mutex, MutexGuard, Ordering,
};
use std::borrow::Borrow;
use std::mem::ManuallyDrop;

use smallvec::SmallVec;

/// Write-side counters of one shard, kept under its lock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriteCounters {
    pub(crate) inserts: u64,
    pub(crate) updates: u64,
    pub(crate) evictions: u64,
    pub(crate) removals: u64,
    pub(crate) expirations: u64,
    pub(crate) rejections: u64,
}

pub(crate) struct Shard<K, V> {
    /// On a cache line of its own: every read loads it, and every write stores to the lock
    /// word, the locked state and the mirrors, which would otherwise share its line and cost
    /// each read after a write to the shard a miss.
    table: CachePadded<Atomic<Table<K, V>>>,
    state: Mutex<State<K, V>>,
    len: AtomicUsize,
    weighted: AtomicU64,
    /// How many locked sections have ended: every `Locked` adds one as it unlocks. A writer
    /// that reads it, probes the table without the lock, then locks and reads the same count
    /// knows no write came between, so its probe is the one it would make under the lock
    /// (`lock_for`). On the mirrors' line, which every write stores to anyway.
    writes: AtomicU64,
    /// The cache's expiry settings (shared by every shard), if it has expiry.
    expiry: Option<Expiry>,
    /// The removal observers and eviction listener, if any.
    notify: Option<Notify<K, V>>,
}

pub(crate) struct State<K, V> {
    eviction: Eviction<K, V>,
    /// The shard's share of the cache's capacity: `even` unless the shares were fitted to a
    /// load (`Cache::share_capacity`), and then drifting back to it (`Locked::refit_share`).
    capacity: u64,
    /// The share the builder gave the shard, its part of the even split.
    even: u64,
    /// With fitted shares, the room no shard holds: what a shard above its even share gave
    /// up and one below it has not yet taken. The shards' shares and this add up to the
    /// cache's capacity.
    spare: Option<Arc<AtomicU64>>,
    weighted: u64,
    /// Ready nodes in the table (each also in one queue).
    len: usize,
    /// Pending nodes in the table (loads in progress, in no queue).
    pending: usize,
    /// Non-null slots of the current table: nodes and tombstones.
    used: usize,
    flights: Vec<InFlight<K, V>>,
    /// With expiry: a lower bound on the deadlines in each segment of the current table.
    wheel: Option<Wheel>,
    counters: WriteCounters,
}

// SAFETY: `State` holds raw pointers to nodes (the queue ends, the flights' keys) that the shard
// owns. Moving the state to another thread moves that ownership with it; the nodes hold `K` and
// `V`, which are dropped on whichever thread retires them, hence `K: Send, V: Send`. Readers on
// other threads also take `&K` and clone `V` through the table, hence `Sync` on both.
unsafe impl<K: Send + Sync, V: Send + Sync> Send for State<K, V> {}

/// A pending node and the flight its waiters block on.
type InFlight<K, V> = (*mut Node<K, V>, Arc<Flight<V>>);

/// What happened to an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    New,
    Replaced,
    Rejected,
}

/// How many segments one batch of [`Locked::expire_due`] scans at most: 8 segments are 512
/// slots, a few hundred microseconds of removals under the lock at worst.
pub(crate) const EXPIRY_BATCH: usize = 8;

impl<K, V> Shard<K, V> {
    /// A shard of `capacity` whose index starts as `table` (empty), with expiry's timer wheel
    /// sized for it. `None` if the wheel cannot be allocated: `table` may be a size the user
    /// asked for (an initial capacity), whose index, the wheel included, is refused rather than
    /// aborting the process.
    pub(crate) fn new(
        capacity: u64,
        eviction: Eviction<K, V>,
        table: Table<K, V>,
        expiry: Option<Expiry>,
        notify: Option<Notify<K, V>>,
    ) -> Option<Self> {
        let slots = table.slot_count();
        let wheel = match &expiry {
            Some(e) => Some(Wheel::try_new(segments_for(slots), e.clock.horizon_ms())?),
            None => None,
        };
        Some(Shard {
            table: CachePadded::new(Atomic::new(table)),
            state: Mutex::new(State {
                eviction,
                capacity,
                even: capacity,
                spare: None,
                weighted: 0,
                len: 0,
                pending: 0,
                used: 0,
                flights: Vec::new(),
                wheel,
                counters: WriteCounters::default(),
            }),
            len: AtomicUsize::new(0),
            weighted: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            expiry,
            notify,
        })
    }

    /// Lock-free lookup of a ready node (the read path): as stored in its slot, valid while
    /// `guard` is pinned, with the meta word seen.
    #[inline]
    pub(crate) fn find<Q>(
        &self,
        hash: u64,
        key: &Q,
        guard: &Guard,
    ) -> Option<(*const Node<K, V>, u32)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // Acquire: pairs with the Release store in `rebuild` that published this table.
        let table = self.table.load(Ordering::Acquire, guard);
        // SAFETY: the table pointer is never null (set at construction, replaced only by another
        // table), and a replaced table is retired through the epoch, which `guard` holds.
        unsafe { table.deref() }.find(hash, key)
    }

    /// The number of expiry segments of the table as of now.
    pub(crate) fn segment_count(&self) -> usize {
        segments_for(self.snapshot(&epoch::pin()).slot_count())
    }

    /// The table as of now, for a lock-free walk under `guard` (the iterator).
    pub(crate) fn snapshot<'g>(&self, guard: &'g Guard) -> &'g Table<K, V> {
        // Acquire and SAFETY: as in `find`.
        unsafe { self.table.load(Ordering::Acquire, guard).deref() }
    }

    pub(crate) fn len(&self) -> usize {
        // Relaxed: a statistic; writers store it under the lock and nothing is read through it.
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        // Relaxed: as in `len`.
        self.weighted.load(Ordering::Relaxed)
    }

    /// The write counters, read under the shard lock but outside any write: no pin, no
    /// change to the write count (which would send concurrent writers' probes round again),
    /// and no freeing of what this thread removed earlier, so reading statistics never runs
    /// a value's `Drop`.
    pub(crate) fn counters(&self) -> WriteCounters {
        lock_awake(&self.state).counters
    }

    /// Takes the shard lock, pinned.
    ///
    /// The pin comes first: pinning now and then runs the epoch's collection (freeing
    /// retired nodes), which should not lengthen the critical section other writers wait on.
    /// `Locked` releases the lock before it unpins (fields drop in order).
    pub(crate) fn lock(&self) -> Locked<'_, K, V> {
        self.lock_pinned(epoch::pin(), None)
    }

    /// Takes the shard lock under `guard`, keeping `probed` for the write.
    fn lock_pinned(&self, guard: Guard, probed: Option<Probed<K, V>>) -> Locked<'_, K, V> {
        Locked {
            shard: self,
            state: ManuallyDrop::new(lock_awake(&self.state)),
            notices: SmallVec::new(),
            fair: false,
            retired: false,
            frees_later: false,
            probed,
            held: None,
            guard,
        }
    }

    /// [`lock`](Self::lock), for a write to `key`: first probes for it as the locked write
    /// will, without the lock, so that the slots and nodes the probe reads are in this core's
    /// cache and their misses are not paid inside the critical section. When no other write to
    /// the shard ended meanwhile, the write uses this probe's answer and does not probe again
    /// ([`Locked::insert`]).
    pub(crate) fn lock_for<Q>(&self, hash: u64, key: &Q) -> Locked<'_, K, V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let guard = epoch::pin();
        // Acquire: pairs with the Release in `Locked::drop`, so the probe below sees every
        // write this count includes.
        let writes = self.writes.load(Ordering::Acquire);
        // Acquire and SAFETY: as in `find`.
        let table = unsafe { self.table.load(Ordering::Acquire, &guard).deref() };
        let probed = table.find_slot_unlocked(hash, key).map(|found| Probed {
            writes,
            hash,
            key: std::ptr::from_ref(key).cast(),
            found,
        });
        self.lock_pinned(guard, probed)
    }
}

impl<K, V> Drop for Shard<K, V> {
    fn drop(&mut self) {
        let mut panic = None;
        // SAFETY: `&mut self`: no reader or writer can reach the shard any more, so nothing is
        // pinned on its behalf; every node in the table (ready, or pending and so not yet
        // detached) is owned by the shard and freed exactly once here. Detached pending nodes
        // are owned by their loaders, which hold the cache alive, so there are none now.
        unsafe {
            let guard = epoch::unprotected();
            let table = self.table.load(Ordering::Relaxed, guard);
            for node in table.deref().nodes() {
                // A key's or value's `Drop` may panic: the other nodes are still freed, and
                // the first panic goes on afterwards.
                let freed =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| free_node(node)));
                if let Err(p) = freed {
                    crate::unwind::keep_first(&mut panic, p);
                }
            }
            drop(table.into_owned());
        }
        if let Some(panic) = panic {
            // Not while another panic unwinds, which a second one would turn into an abort;
            // then it is dropped, its payload's `Drop` caught too.
            if std::thread::panicking() {
                crate::unwind::quiet(Some(panic));
            } else {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Proof that the shard lock is held: every write goes through it.
///
/// Dropping it releases the lock, then tells the eviction listener about the entries the
/// write removed (`notices`), then unpins. The guard is still held while the listener runs,
/// so the removed nodes' keys can be lent to it even though they were retired.
pub(crate) struct Locked<'a, K, V> {
    shard: &'a Shard<K, V>,
    /// Released first, in `drop`.
    state: ManuallyDrop<MutexGuard<'a, State<K, V>>>,
    /// Removed entries to report once the lock is released: collected only with an observer
    /// or a listener. Most writes remove one entry at most (the replaced value, or one victim),
    /// which fits inline: a heap vector here cost every replacement in a cache with an observer
    /// (a durable cache's) a `malloc` and a `free`.
    notices: SmallVec<[Notice<K, V>; 2]>,
    /// Release the lock fairly: set by work done in batches, whose caller locks again at once.
    fair: bool,
    /// Whether this section retired a node: then, once unlocked, it frees what it may.
    retired: bool,
    /// Set by [`begin_load`](Self::begin_load): this unlock frees nothing. Freeing runs
    /// values' `Drop`, which may use the cache, and with the key's pending node published, a
    /// `Drop` that loads the same key would find it and, on the loader's own thread, take
    /// itself for the load's `init` and panic. The frees wait for this thread's next section:
    /// the load's `finish_load` or `abandon_load`, which unlocks with the node ready or gone,
    /// unless `init` writes to the cache first (an insert, a removal, a load of another key).
    /// That write's unlock frees them with the node still pending, and such a `Drop` panics
    /// there as a same-key call from `init` does: it does run inside `init`. Either way this
    /// thread's limbo still says it has batches waiting (`limbo::waiting`), or the next write
    /// retires something, so they are not forgotten.
    frees_later: bool,
    /// `lock_for`'s probe, for the write's key.
    probed: Option<Probed<K, V>>,
    /// What the write leaves to drop once the lock is released (see [`Held`]).
    held: Option<Held<K, V>>,
    guard: Guard,
}

/// What a write holds that the shard does not own: an entry or a value it refused (too heavy,
/// or a load detached meanwhile), or the entry or key it has yet to store while user code
/// runs under the lock (`K::eq` in a probe, `K::hash` in a rebuild). Their `Drop` is user code
/// too, which may use the cache, so it must not run under the lock, also when that user code
/// panics and the write unwinds: kept here, it runs in [`Locked`]'s drop, after the unlock.
enum Held<K, V> {
    Entry(Unpublished<K, V>),
    Key(K),
    Value(V),
}

/// A removed entry to report: the node (retired, still readable under the guard) and why it
/// went.
type Notice<K, V> = (*mut Node<K, V>, RemovalCause);

/// A probe made before the lock was taken, and the shard's write count when it began.
struct Probed<K, V> {
    writes: u64,
    hash: u64,
    /// The address of the key probed for: the answer is reused only for a write to the same
    /// key object (the node `insert` publishes, whose key does not move), never for another
    /// key that happens to share the hash.
    key: *const (),
    found: Located<K, V>,
}

impl<K, V> Drop for Locked<'_, K, V> {
    fn drop(&mut self) {
        // Relaxed load: only lock holders store the count, and the lock orders their stores
        // before this. Release store: pairs with the Acquire in `lock_for`, so a probe that
        // reads this count sees what this section wrote.
        let writes = self.shard.writes.load(Ordering::Relaxed);
        self.shard.writes.store(writes + 1, Ordering::Release);
        // The mirrors of the counts, here once for every section, so that they agree with the
        // locked counts however the section ended (a panic in user code included). Relaxed:
        // statistics only (see `Shard::len`).
        self.shard.len.store(self.state.len, Ordering::Relaxed);
        self.shard
            .weighted
            .store(self.state.weighted, Ordering::Relaxed);
        // SAFETY: `state` is taken exactly once, here; no field is used through it after.
        let state = unsafe { ManuallyDrop::take(&mut self.state) };
        if self.fair {
            unlock_fair(state);
        } else {
            drop(state);
        }
        if let Some(notify) = self.shard.notify.as_ref() {
            self.tell(notify);
        }
        match self.held.take() {
            Some(Held::Entry(entry)) => drop(entry),
            Some(Held::Key(key)) => drop(key),
            Some(Held::Value(value)) => drop(value),
            None => {}
        }
        // Frees, outside the lock, what this thread retired earlier and the epoch now allows:
        // freeing drops values, whose `Drop` may write to this very shard. Only a write that
        // retired something, or one on a thread with batches waiting, looks (`limbo`'s module
        // doc). Not while a panic unwinds, where a panicking `Drop` would abort the process;
        // the next write frees it.
        if (self.retired || limbo::waiting()) && !self.frees_later && !std::thread::panicking() {
            limbo::collect(&self.guard);
        }
    }
}

impl<K, V> Locked<'_, K, V> {
    /// Reports the write's removals to the observers and the listener, lock released: every
    /// removal to each observer in turn, the one set last first, then each to the listener.
    ///
    /// An observer is a layer's (a durable cache's records each removal in its log), and the
    /// listener, like any observer set before the layer's, is the user's, which may act on that
    /// layer: drop its last handle, whose close records what the layer's observer has heard
    /// and then shuts the log. Told entry by entry, a listener that did so on the janitor's
    /// thread, at the first entry of an expiry batch, closed the log before the layer's
    /// observer heard of the rest of the batch, whose deletes were then never recorded
    /// (`larder`'s `tests/durable.rs`,
    /// `a_listener_that_drops_the_last_handle_on_the_janitors_thread_leaves_nothing_expired_to_come_back`);
    /// and a user's observer set before the layer's, told each entry before the layer's
    /// observer, lost them all so (`tests/reentrancy.rs` there,
    /// `a_users_observer_that_drops_the_last_handle_on_the_janitors_thread_leaves_nothing_expired_to_come_back`).
    ///
    /// The listener's clone of each value is made here, not when the entry left: `V::clone`
    /// is user code, and under the lock its panic would unwind out of a write half done. Here
    /// the write is whole, the node (retired under `self.guard`, which is still held) is still
    /// readable, and its value, written once before it became ready, never changes.
    fn tell(&mut self, notify: &Notify<K, V>) {
        // An observer, listener or clone that panics must not unwind through the cache (this
        // runs in a destructor, perhaps while another panic unwinds): its panic is dropped
        // here, its payload's `Drop` caught as well (`quiet`), and the next removals are still
        // reported, to it and to the others.
        for observer in notify.observers.iter().rev() {
            for &(node, cause) in &self.notices {
                // SAFETY: `node` was retired while `self.guard` was pinned, and the guard is
                // still held, so its memory (and its immutable key) is still valid.
                let key = unsafe { (*node).key() };
                let observed =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observer(key, cause)));
                crate::unwind::quiet(observed.err());
            }
        }
        let notices = self.notices.drain(..);
        let Some(listener) = &notify.listener else {
            return;
        };
        for (node, cause) in notices {
            // SAFETY: as above.
            let key = unsafe { (*node).key() };
            let heard = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: the node was ready when this thread unlinked it under the lock (an
                // Acquire load of its meta, earlier on this thread), and the guard keeps it
                // alive.
                let value = unsafe { (*node).clone_value_with(notify.clone_value) };
                listener(key, value, cause)
            }));
            crate::unwind::quiet(heard.err());
        }
    }

    /// Retires `node`: it is freed on this thread once every reader pinned now has unpinned
    /// (`raw::limbo`), at the earliest when this section has released the lock.
    ///
    /// # Safety
    /// `node` is unlinked from the table and every queue, and nothing else will free it.
    unsafe fn retire(&mut self, node: *mut Node<K, V>) {
        /// `free_node` for a type-erased pointer.
        unsafe fn free_erased<K, V>(node: *mut ()) {
            // SAFETY: `retire`'s caller's contract, passed on by `limbo::retire`: the node is
            // unreachable and freed once.
            unsafe { free_node(node.cast::<Node<K, V>>()) }
        }
        self.retired = true;
        // SAFETY: the caller's contract: the node is unlinked under the lock, which this
        // section took while pinned by `self.guard`, so every reader that could reach it
        // pinned before this call; `free_erased` frees it, and only the limbo calls it.
        unsafe { limbo::retire(&self.guard, node.cast(), free_erased::<K, V>) };
    }
}

impl<K: Eq, V: Clone> Locked<'_, K, V> {
    fn table(&self) -> &Table<K, V> {
        // Relaxed: only the lock holder replaces the table, so the lock already orders it.
        let table = self.shard.table.load(Ordering::Relaxed, &self.guard);
        // SAFETY: non-null (see `Shard::find`), and it cannot be retired while we hold the lock.
        unsafe { table.deref() }
    }

    pub(crate) fn reset_counters(&mut self) {
        self.state.counters = WriteCounters::default();
    }

    /// Makes room for one more used slot, rebuilding the table if it would pass its load limit.
    /// Returns whether it rebuilt (which moves every slot).
    fn reserve_slot(&mut self, hash_of: &impl Fn(&K) -> u64) -> bool {
        let slots = self.table().slot_count();
        let rebuild = !within_load(self.state.used + 1, slots);
        if rebuild {
            let slots = slots_for(self.state.len + self.state.pending + 1);
            // Growth cannot be refused: a table or a wheel that cannot be had aborts, as any
            // allocation's failure does.
            if !self.rebuild(Table::new(slots), hash_of) {
                Wheel::out_of_memory(segments_for(slots));
            }
        }
        rebuild
    }

    /// Rebuilds the table, if it must, so that `additional` more entries fit within its load
    /// limit; entries beyond the shard's capacity are not reserved for. The limit counts
    /// tombstones too (`used`), so a table with room enough for the entries but not for them
    /// beside its tombstones is rebuilt at its size, which drops them: left, the inserts would
    /// rebuild it themselves, sized for the entries there at the time, and grow it again as
    /// the rest came. Does nothing if the memory cannot be had: reserving is only a head start
    /// on growth.
    pub(crate) fn reserve(&mut self, additional: usize, hash_of: &impl Fn(&K) -> u64) {
        let room = usize::try_from(self.state.capacity).unwrap_or(usize::MAX);
        let live = self.state.len + self.state.pending;
        let entries = live.saturating_add(additional).min(room);
        let current = self.table().slot_count();
        let slots = slots_for(entries).max(current);
        let new_keys = entries.saturating_sub(live);
        if slots > current || !within_load(self.state.used + new_keys, current) {
            if let Some(fresh) = Table::try_new(slots) {
                // Refused, changing nothing, if the wheel for it cannot be had.
                let _ = self.rebuild(fresh, hash_of);
            }
        }
    }

    /// Copies every node into `fresh`, an empty table (dropping tombstones), and publishes it.
    /// With expiry, each new segment's deadline bound becomes the earliest bound of the old
    /// segments its nodes came from: still a lower bound, found without reading a node (see
    /// `expiry::wheel`).
    ///
    /// Returns false, changing nothing, if the shard has expiry and the new wheel (or the
    /// bounds it is filled from) cannot be allocated: `fresh` may be a size the user asked
    /// for ([`reserve`](Self::reserve)), whose index is refused whole rather than aborting.
    #[must_use = "a rebuild refused for want of memory changed nothing"]
    fn rebuild(&mut self, fresh: Table<K, V>, hash_of: &impl Fn(&K) -> u64) -> bool {
        let segments = segments_for(fresh.slot_count());
        // Allocated before anything moves, so that a refusal leaves the shard as it was.
        let mut next = match &self.state.wheel {
            None => None,
            Some(old) => {
                // Each new segment's bound flipped (`!bound`), as the wheel keeps deadlines:
                // zeros, fresh pages for a large reserve, are segments no entry lands in, so
                // that the bounds, like the wheel, take memory only where entries go.
                let Some(bounds) = zeroed_slice::<u64>(segments) else {
                    return false;
                };
                let Some(wheel) = old.try_emptied(segments) else {
                    return false;
                };
                Some((bounds, wheel))
            }
        };
        // The old wheel stays in place until the copy is done: the copy hashes keys (user
        // code), and if that panics, the shard keeps its old table and must keep its wheel.
        let old_wheel = self.state.wheel.as_ref();
        // SAFETY: a node in the table is live while the lock is held.
        let used = self.table().copy_into(
            &fresh,
            |node| hash_of(unsafe { (*node).key() }),
            |i, j| {
                if let (Some((bounds, _)), Some(old)) = (next.as_mut(), old_wheel) {
                    // The earlier bound is the larger flipped one.
                    let s = j >> SEGMENT_BITS;
                    bounds[s] = bounds[s].max(!old.when(i >> SEGMENT_BITS));
                }
            },
        );
        if let Some((bounds, mut wheel)) = next {
            for (s, &flipped) in bounds.iter().enumerate() {
                // A zero is a bound of `NEVER`: unscheduled, as the fresh wheel has it.
                if flipped != 0 {
                    wheel.schedule(s, !flipped);
                }
            }
            self.state.wheel = Some(wheel);
        }
        // Release: pairs with the Acquire in `Shard::find`, publishing the copied slots.
        let old = self
            .shard
            .table
            .swap(Owned::new(fresh), Ordering::Release, &self.guard);
        // SAFETY: the old table is unreachable for readers that pin from now on; those pinned
        // before may still probe it, and the epoch keeps it until they unpin. Its nodes live on
        // in the new table.
        unsafe { self.guard.defer_destroy(old) };
        self.state.used = used;
        true
    }

    /// Puts `node` (for a key known to be absent) in the table, at `vacancy` if the caller's
    /// probe found it and the table was not rebuilt since. Returns its slot. The caller made
    /// room first ([`reserve_slot`](Self::reserve_slot)): a rebuild hashes keys (user code that
    /// may panic), which must happen before the node is created or leaves its owner, so that
    /// a panic there drops it instead of leaking it.
    fn link(&mut self, hash: u64, node: *mut Node<K, V>, vacancy: Option<Vacancy>) -> usize {
        let table = self.table();
        let vacancy = vacancy.unwrap_or_else(|| table.vacant_slot(hash));
        table.store(vacancy.slot, node, hash);
        self.state.used += usize::from(vacancy.was_empty);
        vacancy.slot
    }

    /// Tombstones `node`'s slot.
    fn unlink(&mut self, hash: u64, node: *mut Node<K, V>) {
        if let Some(i) = self.slot_of_node(hash, node) {
            self.table().store_tombstone(i);
        }
    }

    /// The slot of `node`, a node in the table whose key hashed to `hash`: found by the hash,
    /// or, if the key's `Hash` has changed its answer (user code with a bug: a rebuild may have
    /// placed the node by another hash than `hash`), by a scan for its address. A node that
    /// leaves the cache must leave the table, whatever its key's `Hash` says: it is freed once
    /// the epoch allows.
    fn slot_of_node(&self, hash: u64, node: *mut Node<K, V>) -> Option<usize> {
        let table = self.table();
        table
            .slot_of(hash, node)
            .or_else(|| table.slot_by_address(node))
    }

    // ---- expiry and notices ----

    /// The latest the true time may be (`crate::time`); 0 without expiry.
    fn horizon(&self) -> u64 {
        self.shard
            .expiry
            .as_ref()
            .map_or(0, |e| e.clock.horizon_ms())
    }

    /// Whether `node` (live under the lock) has expired by `horizon`: a verdict as final as a
    /// read's (`Expiry::is_live`), so a read racing the removal that follows cannot find the
    /// entry touched since.
    fn expired_by(&self, node: *mut Node<K, V>, horizon: u64) -> bool {
        self.shard
            .expiry
            .as_ref()
            // SAFETY: the caller passes a node of this shard as stored in its table, live while
            // the lock is held.
            .is_some_and(|e| !unsafe { e.is_live(node, horizon, None) })
    }

    /// Whether `node` (a ready node of this shard) has expired as of now.
    pub(crate) fn is_expired(&self, node: *mut Node<K, V>) -> bool {
        self.shard.expiry.is_some() && self.expired_by(node, self.horizon())
    }

    /// Tells the wheel that `node` now sits in `slot`: its segment's bound drops to the node's
    /// deadline if that is earlier.
    fn schedule(&mut self, slot: usize, node: *mut Node<K, V>) {
        let shard = self.shard;
        if let (Some(expiry), Some(wheel)) = (shard.expiry.as_ref(), self.state.wheel.as_mut()) {
            // SAFETY: the node is in this shard's table (the pointer as stored there), live
            // under the lock.
            wheel.lower(slot >> SEGMENT_BITS, unsafe { expiry.deadline(node) });
        }
    }

    /// Queues a notice that `node` (ready, just unlinked, not yet freed: it is retired under
    /// `self.guard`) left for `cause`. Only with an observer or a listener; a listener's clone
    /// of the value is made once the lock is released ([`tell`](Self::tell)), so no user code
    /// runs here.
    fn notice(&mut self, node: *mut Node<K, V>, cause: RemovalCause) {
        if self.shard.notify.is_some() {
            self.notices.push((node, cause));
        }
    }

    /// Why a ready `node` the cache is dropping left: `Expired` if its deadline has passed,
    /// else `otherwise`; counts an expiration in the first case.
    fn cause_of(&mut self, node: *mut Node<K, V>, otherwise: RemovalCause) -> RemovalCause {
        if self.is_expired(node) {
            self.state.counters.expirations += 1;
            RemovalCause::Expired
        } else {
            otherwise
        }
    }

    /// Does up to `budget` segments of expiry work: advances the wheel to now, then scans due
    /// segments, removing their expired entries and rescheduling each at its next deadline.
    /// Returns whether more segments are due (the caller unlocks, then calls again).
    pub(crate) fn expire_due(&mut self, budget: usize) -> bool {
        let more = self.expire_segments(budget, std::ptr::null_mut(), false);
        // The caller locks again for the next batch: a writer waiting meanwhile goes first.
        self.fair = more;
        more
    }

    /// Advances the wheel to now and expires up to `budget` due segments
    /// ([`expire_segment`](Self::expire_segment), sparing `keep`), stopping early once the
    /// shard is within its capacity if `for_room`. Returns whether more segments are due;
    /// `false` without expiry.
    fn expire_segments(&mut self, budget: usize, keep: *mut Node<K, V>, for_room: bool) -> bool {
        let Some(expiry) = self.shard.expiry.as_ref() else {
            return false;
        };
        let horizon = expiry.clock.horizon_ms();
        let Some(wheel) = self.state.wheel.as_mut() else {
            return false;
        };
        wheel.advance(horizon);
        for _ in 0..budget {
            if for_room && self.state.weighted <= self.state.capacity {
                break;
            }
            let Some(segment) = self.state.wheel.as_mut().and_then(Wheel::pop_due) else {
                break;
            };
            self.expire_segment(segment, horizon, keep);
        }
        self.state.wheel.as_ref().is_some_and(Wheel::has_due)
    }

    /// Removes the expired entries of `segment`, just taken off the wheel's due list, by
    /// `horizon`, and reschedules it at the earliest deadline left. `keep` (a node a write has
    /// just queued, or null) stays whatever its deadline: `evict_to_capacity` must find it
    /// queued. If that deadline has passed, the segment is due again at once, and the next
    /// expiry work removes it.
    fn expire_segment(&mut self, segment: usize, horizon: u64, keep: *mut Node<K, V>) {
        let Some(expiry) = self.shard.expiry.as_ref() else {
            return;
        };
        let start = segment << SEGMENT_BITS;
        let end = (start + SEGMENT_SLOTS).min(self.table().slot_count());
        let mut next = NEVER;
        for i in start..end {
            let Some(node) = self.table().node_at(i) else {
                continue;
            };
            // SAFETY: a node in the table is live while the lock is held.
            let node_ref = unsafe { &*node };
            if !node_ref.is_ready() {
                // A load in flight: `finish_load` schedules it when it has a value.
                continue;
            }
            // SAFETY: as stored in the table, live under the lock.
            if node == keep || unsafe { expiry.is_live(node, horizon, None) } {
                // Read after the verdict: a read may push it back since, never forward,
                // so the segment's bound stays a lower bound.
                // SAFETY: as above.
                next = next.min(unsafe { expiry.deadline(node) });
                continue;
            }
            self.table().store_tombstone(i);
            // SAFETY: live under the lock, which serialises every access to the weight.
            let freed = u64::from(unsafe { (*node).weight() });
            // SAFETY: `node` is ready, hence queued; it is now out of the table and the
            // queue, and retired once.
            unsafe { self.state.eviction.remove(node) };
            self.free_weight(freed);
            self.state.len -= 1;
            self.state.counters.expirations += 1;
            self.notice(node, RemovalCause::Expired);
            // SAFETY: as above.
            unsafe { self.retire(node) };
        }
        if let Some(wheel) = self.state.wheel.as_mut() {
            wheel.schedule(segment, next);
        }
    }

    // ---- writes ----

    /// Inserts or replaces the key of `new` (which hashes to `hash` and weighs `weight`), then
    /// evicts down to capacity.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        new: Unpublished<K, V>,
        weight: u32,
        hash_of: &impl Fn(&K) -> u64,
    ) -> Inserted {
        // `K::eq` (the probes below) and `K::hash` (a rebuild in `reserve_slot`) run under the
        // lock and may panic. Until it is published, `new` waits in `held`, so that if the
        // write unwinds, its `Drop` runs after the unlock (see `Held`).
        let key: *const K = new.key();
        self.held = Some(Held::Entry(new));
        // SAFETY: `key` is the key of `new`'s node, which is on the heap, so it did not move
        // with `new`, and is never written. `held` owns the node until the write takes it back
        // (`take_held_entry`), or until `self` drops, after the last use of `key`: it is only
        // read below, before the node is taken back.
        let key = unsafe { &*key };
        if self.too_heavy(weight) {
            // Too heavy for the shard. Whatever the key held before is stale now: drop it too,
            // so no read returns a value older than the caller's last write. The old value is
            // not cloned: it goes to nobody, and `V::clone` is user code that must not run
            // under the lock. `new` was never published; it stays in `held` and is dropped,
            // which frees it, once the lock is released.
            let _ = self.unlink_key(hash, key, RemovalCause::Replaced);
            self.state.counters.rejections += 1;
            return Inserted::Rejected;
        }
        let existing = self.find_slot_once(hash, key);
        // A new key needs a slot: making room may rebuild the table, which hashes keys.
        let rebuilt = existing.is_err() && self.reserve_slot(hash_of);
        // No user code runs under the lock from here until the node is published.
        let mut new = self.take_held_entry();
        // A new key starts with the policy's initial count; a replacement inherits the old
        // node's (`Eviction::replace`).
        new.set_freq(self.state.eviction.initial_freq());
        let (node, outcome) = match existing {
            // SAFETY: table nodes are live while the lock is held.
            Ok((i, old)) if unsafe { (*old).is_ready() } => {
                let new = new.into_raw();
                // SAFETY: live, and the lock is held, which serialises every access to the weight.
                let before = u64::from(unsafe { (*old).weight() });
                // SAFETY: `old` is ready, so it is queued; `new` is fresh and unqueued. Then
                // `old` is unlinked from the table and the queue, and retired once.
                unsafe {
                    self.state.eviction.replace(old, new);
                    self.table().store(i, new, hash);
                }
                self.state.weighted = self.state.weighted - before + u64::from(weight);
                // A lighter value (or one written over an expired entry) frees room as a
                // removal does.
                self.give_back_freed(before.saturating_sub(u64::from(weight)));
                self.schedule(i, new);
                // An expired entry was already gone for readers: its key counts as new.
                let cause = self.cause_of(old, RemovalCause::Replaced);
                self.notice(old, cause);
                // SAFETY: as above.
                unsafe { self.retire(old) };
                if cause == RemovalCause::Expired {
                    self.state.counters.inserts += 1;
                    (new, Inserted::New)
                } else {
                    self.state.counters.updates += 1;
                    (new, Inserted::Replaced)
                }
            }
            Ok((i, pending)) => {
                // A load is in flight for this key: the insert wins, and the loader keeps its
                // (now detached) node.
                let new = new.into_raw();
                self.table().store(i, new, hash);
                // SAFETY: `pending` is live: only its loader frees it, after detaching.
                unsafe { (*pending).set_detached() };
                self.state.pending -= 1;
                self.admit(new, hash, weight);
                self.schedule(i, new);
                (new, Inserted::New)
            }
            Err(vacancy) => {
                let new = new.into_raw();
                let slot = self.link(hash, new, (!rebuilt).then_some(vacancy));
                self.admit(new, hash, weight);
                self.schedule(slot, new);
                (new, Inserted::New)
            }
        };
        self.evict_to_capacity(node, hash_of);
        outcome
    }

    /// Takes back the entry [`insert`](Self::insert) left in `held` while user code ran.
    fn take_held_entry(&mut self) -> Unpublished<K, V> {
        match self.held.take() {
            Some(Held::Entry(entry)) => entry,
            _ => unreachable!("insert holds its entry until it takes it back"),
        }
    }

    /// [`Table::find_slot`] for the key `lock_for` probed, answered by that probe when no
    /// write to the shard ended between its start and this section: then the table is as the
    /// probe saw it (the count is stored before each unlock), and the answer is the same.
    fn find_slot_once<Q>(&mut self, hash: u64, key: &Q) -> Located<K, V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // Relaxed: see `Locked::drop`.
        let writes = self.shard.writes.load(Ordering::Relaxed);
        match self.probed.take() {
            Some(p)
                if p.writes == writes
                    && p.hash == hash
                    && p.key == std::ptr::from_ref(key).cast::<()>() =>
            {
                p.found
            }
            _ => self.table().find_slot(hash, key),
        }
    }

    /// Queues a newly ready node and counts it.
    fn admit(&mut self, node: *mut Node<K, V>, hash: u64, weight: u32) {
        // SAFETY: `node` is ready, in the table, and in no queue.
        unsafe { self.state.eviction.admit(node, hash) };
        self.state.len += 1;
        self.state.weighted += u64::from(weight);
        self.state.counters.inserts += 1;
    }

    /// Evicts until the shard is within its capacity, never evicting `protect` (which the
    /// caller has just queued) nor an entry of weight 0 (`Eviction::evict`). What has expired
    /// goes first, found through the wheel ([`expire_segments`](Self::expire_segments)); a
    /// policy's victim that had already expired is reported (and counted) as expired too.
    ///
    /// Finding a victim's slot needs its key's hash, and `K::hash` is user code that may
    /// panic, after the victim has left its queue. So a panic there is caught: the slot is
    /// found by the node's address instead (a scan of the table, only on this path), the
    /// eviction goes on to capacity, and then the first panic goes on to the caller with the
    /// shard whole and within its capacity. Left half done, the victim would stay in the table
    /// in no queue, and a later removal of its key would unlink it from a queue it is not in.
    /// A hash that no longer finds the victim (a `Hash` whose answer changed) falls back on the
    /// address too: the victim is retired, and left in the table it would be freed there.
    fn evict_to_capacity(&mut self, protect: *mut Node<K, V>, hash_of: &impl Fn(&K) -> u64) {
        // What has expired goes first: expired entries hold their room until removed, and the
        // policy knows nothing of lifetimes (under S3-FIFO, a main queue of expired entries
        // outlived every new entry written after them until the janitor's next tick). At most
        // a batch of due segments, as a batch of the janitor's work. Without a wheel (no
        // expiry) nothing is called.
        if self.state.weighted > self.state.capacity && self.state.wheel.is_some() {
            self.expire_segments(EXPIRY_BATCH, protect, true);
        }
        if self.state.weighted > self.state.capacity && self.state.capacity != self.state.even {
            // SAFETY: `protect` was just queued by the caller, so it is ready and live.
            let keep = u64::from(unsafe { (*protect).weight() });
            self.refit_share(self.state.weighted, keep);
        }
        let mut first_panic = None;
        let mut evicted = 0;
        while self.state.weighted > self.state.capacity {
            // SAFETY: every caller has just queued `protect` (`admit` or `replace`), and only
            // this loop and `expire_segments` dequeue, neither `protect`.
            let Some(victim) = (unsafe { self.state.eviction.evict(protect) }) else {
                break;
            };
            // SAFETY: an evicted node was queued, so it is ready, in the table and live.
            let key = unsafe { (*victim).key() };
            let hashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hash_of(key)));
            let (slot, panic) = match hashed {
                Ok(hash) => (self.slot_of_node(hash, victim), None),
                Err(panic) => (self.table().slot_by_address(victim), Some(panic)),
            };
            // A queued node is always in the table, so either lookup finds it.
            debug_assert!(slot.is_some(), "an eviction victim was not in the table");
            if let Some(i) = slot {
                self.table().store_tombstone(i);
            }
            // SAFETY: the victim has just left its queue and, above, the table; it is retired
            // once, below.
            let freed = u64::from(unsafe { (*victim).weight() });
            self.state.weighted -= freed;
            evicted += freed;
            self.state.len -= 1;
            let cause = self.cause_of(victim, RemovalCause::Size);
            if cause == RemovalCause::Size {
                self.state.counters.evictions += 1;
            }
            self.notice(victim, cause);
            // SAFETY: as above.
            unsafe { self.retire(victim) };
            if let Some(panic) = panic {
                crate::unwind::keep_first(&mut first_panic, panic);
            }
        }
        // A victim heavier than the write needed frees more than it: that room goes back as
        // a removal's does. Kept, it stayed with the shard once the rest of the load left it,
        // and an empty shard held a share far above even that no shard below could take.
        self.give_back_freed(evicted);
        if let Some(panic) = first_panic {
            std::panic::resume_unwind(panic);
        }
    }

    /// Removes `key`: a ready entry is unlinked and its value returned (`None` if it had
    /// expired: it was already gone for readers); a pending one is detached from its loader.
    /// `cause` is what the listener hears, and `Explicit` counts a removal.
    pub(crate) fn remove_key<Q>(&mut self, hash: u64, key: &Q, cause: RemovalCause) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let (node, cause) = self.unlink_key(hash, key, cause)?;
        // Cloned last, when the removal is whole: `V::clone` may panic.
        (cause != RemovalCause::Expired).then(|| {
            // SAFETY: `unlink_key` saw the node ready (with Acquire, in `is_ready`) and retired
            // it under `self.guard`, which is still held.
            unsafe { (*node).clone_value() }
        })
    }

    /// [`remove_key`](Self::remove_key) without the answer, so without `V::clone`, which is
    /// user code that must not run under the lock when nobody asked for the value.
    pub(crate) fn discard_key<Q>(&mut self, hash: u64, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let _ = self.unlink_key(hash, key, RemovalCause::Explicit);
    }

    /// [`remove_key`](Self::remove_key) without the answer, so without `V::clone`: returns the
    /// removed ready node (retired, readable while `self.guard` is held) and why it left.
    fn unlink_key<Q>(
        &mut self,
        hash: u64,
        key: &Q,
        cause: RemovalCause,
    ) -> Option<(*mut Node<K, V>, RemovalCause)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let (i, node) = self.table().find_slot(hash, key).ok()?;
        self.table().store_tombstone(i);
        // SAFETY: `node` was in the table, so it is live.
        if unsafe { (*node).is_ready() } {
            // SAFETY: live, and the lock is held, which serialises every access to the weight.
            let freed = u64::from(unsafe { (*node).weight() });
            // SAFETY: ready nodes are queued; once out of the table and the queue, `node` is
            // retired once, below.
            unsafe { self.state.eviction.remove(node) };
            self.free_weight(freed);
            self.state.len -= 1;
            let cause = self.cause_of(node, cause);
            if cause == RemovalCause::Explicit {
                self.state.counters.removals += 1;
            }
            self.notice(node, cause);
            // SAFETY: as above.
            unsafe { self.retire(node) };
            Some((node, cause))
        } else {
            // SAFETY: pending nodes are left to their loader, which frees them once detached.
            unsafe { (*node).set_detached() };
            self.state.pending -= 1;
            None
        }
    }

    /// Makes this section's unlock free nothing this thread removed earlier, for a caller that
    /// holds another shard's lock as this one is released (`Cache::share_capacity`): freeing
    /// runs values' `Drop`, which may write to that other shard, and would wait for good on
    /// the lock its own thread holds. The frees wait, as after [`begin_load`](Self::begin_load),
    /// for this thread's next section that looks (`limbo::waiting` still says they are there).
    pub(crate) fn free_nothing_at_unlock(&mut self) {
        self.frees_later = true;
    }

    /// Whether the shard holds nothing: no entry, no load in flight.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.state.len == 0 && self.state.pending == 0
    }

    /// Gives a shard that [holds nothing](Self::holds_nothing) a share of the capacity fitted
    /// to a load (`Cache::share_capacity`), from which it drifts back to its even share
    /// through `spare` (`refit_share`). Nothing is over the new share, since the shard is empty.
    pub(crate) fn fit_share(&mut self, share: u64, spare: &Arc<AtomicU64>) {
        debug_assert!(self.holds_nothing());
        self.state.spare = Some(Arc::clone(spare));
        self.set_share(share);
    }

    fn set_share(&mut self, share: u64) {
        self.state.capacity = share;
        self.state.eviction.resize(share);
    }

    /// Whether an entry of `weight` is too heavy for the shard even alone, after a shard below
    /// its even share has taken what spare room there is toward it (`refit_share`).
    fn too_heavy(&mut self, weight: u32) -> bool {
        let weight = u64::from(weight);
        if weight > self.state.capacity && self.state.capacity < self.state.even {
            self.refit_share(weight, 0);
        }
        weight > self.state.capacity
    }

    /// Moves a fitted share (`fit_share`) toward the even one, when the shard needs more room
    /// than its share: it would hold `demand`. A shard below its even share takes what the
    /// cache's spare room has, up to its even share. A shard above it gives up as much again
    /// as the write brings, down to its even share, and so evicts twice that: the room goes to
    /// the spare, for the shards below. Unweighted, a shard `n` over its even share is back at
    /// it after `n` inserts that evict. A share changes only under its shard's lock, and the
    /// spare only by what a share gives or takes, never below zero, so the shares and the spare
    /// always add up to the cache's capacity, and every shard's weight stays within its own
    /// share: the bound stays hard. Even shares never move (`spare` is `None` until fitted).
    ///
    /// A share above even never gives up room below `keep`, the weight of the entry the write
    /// brings: eviction never takes that entry, so a share below it would leave the shard over
    /// its share while the room it gave went to another shard.
    #[cold]
    fn refit_share(&mut self, demand: u64, keep: u64) {
        let Some(spare) = &self.state.spare else {
            return;
        };
        let (share, even) = (self.state.capacity, self.state.even);
        let refitted = if share < even {
            let wanted = even - share;
            // Relaxed: the spare is a count of capacity units, which orders nothing else; its
            // read-modify-writes alone keep it from being taken twice.
            let taken = spare
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |room| {
                    (room != 0).then(|| room - room.min(wanted))
                })
                .map_or(0, |room| room.min(wanted));
            share + taken
        } else {
            let given = share
                .saturating_sub(even.max(keep))
                .min(demand.saturating_sub(share));
            spare.fetch_add(given, Ordering::Relaxed);
            share - given
        };
        self.set_share(refitted);
    }

    /// Takes `freed`, the weight of entries that left the shard, off its weight, and gives the
    /// room back as [`give_back_freed`](Self::give_back_freed) says.
    fn free_weight(&mut self, freed: u64) {
        self.state.weighted -= freed;
        self.give_back_freed(freed);
    }

    /// Gives the spare the room a removal freed (`freed`, the weight that left) when the
    /// shard's fitted share is above even, down to its even share and never below what the
    /// shard still holds: a removal is a write too, and the shares drift back to even through
    /// it as through an eviction (`refit_share`). Kept, the room of a load that has left the
    /// shard (removed, expired, cleared) stayed with it, since a shard that never fills again
    /// never evicts, and the shards fitted below even, which take only from the spare, stayed
    /// that small for good: as little as 1 (`builder::shares_for`), refusing every entry
    /// heavier than that in a cache that held nothing.
    fn give_back_freed(&mut self, freed: u64) {
        let (share, even) = (self.state.capacity, self.state.even);
        let Some(spare) = self.state.spare.as_ref().filter(|_| share > even) else {
            return;
        };
        let given = freed.min(share.saturating_sub(even.max(self.state.weighted)));
        // Relaxed: as in `refit_share`.
        spare.fetch_add(given, Ordering::Relaxed);
        self.set_share(share - given);
    }

    /// Gives back the room of the shard's share that it does not hold, as
    /// [`give_back_freed`](Self::give_back_freed) would had that room been freed: the end of
    /// a load into fitted shares (`FittedShares`'s drop).
    pub(crate) fn give_back_unloaded_room(&mut self) {
        self.give_back_freed(self.state.capacity.saturating_sub(self.state.weighted));
    }

    /// Removes every entry (and detaches every pending load).
    pub(crate) fn clear(&mut self) {
        let mut doomed = Vec::with_capacity(self.state.len);
        self.state.eviction.drain(|n| doomed.push(n));
        for node in self.table().nodes() {
            // SAFETY: table nodes are live under the lock; pending ones pass to their loaders.
            unsafe {
                if !(*node).is_ready() {
                    (*node).set_detached();
                }
            }
        }
        let mut explicit = 0;
        for &node in &doomed {
            let cause = self.cause_of(node, RemovalCause::Explicit);
            explicit += u64::from(cause == RemovalCause::Explicit);
            self.notice(node, cause);
        }
        let fresh = Owned::new(Table::new(slots_for(0)));
        if let Some(wheel) = self.state.wheel.take() {
            self.state.wheel = Some(wheel.emptied(segments_for(slots_for(0))));
        }
        // Release: as in `rebuild`.
        let old = self.shard.table.swap(fresh, Ordering::Release, &self.guard);
        // SAFETY: the old table and the drained nodes are unreachable from the new table, and
        // were unlinked from every queue; each is freed once, after current readers unpin. The
        // nodes go through this thread's limbo as every removal's do, so their values drop on
        // this thread; the table holds no value.
        unsafe { self.guard.defer_destroy(old) };
        for node in doomed {
            // SAFETY: as above.
            unsafe { self.retire(node) };
        }
        self.state.counters.removals += explicit;
        self.state.len = 0;
        self.state.pending = 0;
        self.state.used = 0;
        self.free_weight(self.state.weighted);
    }

    // ---- single-flight loading (see `crate::flight`) ----

    /// The pending or ready node for `key`, if any.
    pub(crate) fn find_any<Q>(&self, hash: u64, key: &Q) -> Option<*mut Node<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.table().find_slot(hash, key).ok().map(|(_, node)| node)
    }

    /// The flight of a pending node.
    pub(crate) fn flight_of(&self, node: *mut Node<K, V>) -> Option<Arc<Flight<V>>> {
        self.state
            .flights
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, f)| Arc::clone(f))
    }

    /// Publishes a pending node for `key` and registers its flight. The key must be absent.
    pub(crate) fn begin_load(
        &mut self,
        hash: u64,
        key: K,
        flight: Arc<Flight<V>>,
        hash_of: &impl Fn(&K) -> u64,
    ) -> *mut Node<K, V> {
        // Room for the expiry words, written when the value is (`finish_load`).
        let prefix = self.shard.expiry.as_ref().map(|e| Prefix {
            stamp: 0,
            touched: e.tti_ms.map(|_| 0),
        });
        // A rebuild hashes keys, and may panic: `key` is then held for the unlock (`Held`).
        let reserved =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reserve_slot(hash_of)));
        if let Err(panic) = reserved {
            self.held = Some(Held::Key(key));
            std::panic::resume_unwind(panic);
        }
        let node = Node::new_pending(key, hash, prefix);
        self.link(hash, node, None);
        self.state.pending += 1;
        self.state.flights.push((node, flight));
        self.frees_later = true;
        node
    }

    fn end_flight(&mut self, node: *mut Node<K, V>) {
        self.state.flights.retain(|(n, _)| *n != node);
    }

    /// Stores the loaded value in the pending node, unless an insert, remove or clear
    /// detached it meanwhile or it is too heavy. Returns whether it was stored. `prefix` holds
    /// the entry's expiry words (with expiry).
    ///
    /// # Safety
    /// `node` came from `begin_load` on this shard, and this is its loader's one call to
    /// `finish_load` or `abandon_load`.
    pub(crate) unsafe fn finish_load(
        &mut self,
        hash: u64,
        node: *mut Node<K, V>,
        value: V,
        weight: u32,
        prefix: Option<Prefix>,
        hash_of: &impl Fn(&K) -> u64,
    ) -> bool {
        self.end_flight(node);
        // SAFETY: the loader owns a pending node until it is published here or retired.
        let detached = unsafe { (*node).is_detached() };
        if detached || self.too_heavy(weight) {
            if !detached {
                self.unlink(hash, node);
                self.state.pending -= 1;
                self.state.counters.rejections += 1;
            }
            // SAFETY: out of the table (detached, or unlinked just now), never queued, and
            // retired once; readers may still be looking at it, hence the epoch.
            unsafe { self.retire(node) };
            self.held = Some(Held::Value(value));
            return false;
        }
        // A loaded key is a new key, and starts with the policy's initial count as an inserted
        // one does (`insert`): under CLOCK, the grace bit, without which the hand evicts it
        // before its first read. Readers skip a pending node, so none has raised it.
        // SAFETY: the node is pending and live; we are its loader and hold the lock.
        unsafe { (*node).set_freq(self.state.eviction.initial_freq()) };
        // SAFETY: the node is pending, we are its loader and hold the lock.
        unsafe { Node::publish_value(node, value, weight, prefix) };
        self.state.pending -= 1;
        self.admit(node, hash, weight);
        // By address if the key's `Hash` changed its answer since a rebuild placed the node:
        // an entry left off the wheel would never be removed by the janitor's work.
        if let Some(slot) = self.slot_of_node(hash, node) {
            self.schedule(slot, node);
        }
        self.evict_to_capacity(node, hash_of);
        true
    }

    /// Unpublishes a pending node whose `init` panicked.
    ///
    /// # Safety
    /// As for `finish_load`.
    pub(crate) unsafe fn abandon_load(&mut self, hash: u64, node: *mut Node<K, V>) {
        self.end_flight(node);
        // SAFETY: as in `finish_load`.
        unsafe {
            if !(*node).is_detached() {
                self.unlink(hash, node);
                self.state.pending -= 1;
            }
            self.retire(node);
        }
    }

    // ---- checks ----

    /// Checks the shard's structure: queues, table, counts and capacity agree.
    pub(crate) fn validate(&self, hash_of: &impl Fn(&K) -> u64) -> Result<(), String> {
        let table = self.table();
        let (mut queued, mut queued_weight) = (0usize, 0u64);
        let mut err = None;
        self.state.eviction.validate(|node| {
            queued += 1;
            // SAFETY: queued nodes are live under the lock.
            let n = unsafe { &*node };
            // SAFETY: as above; `self` proves the lock is held.
            queued_weight += u64::from(unsafe { n.weight() });
            if !n.is_ready() {
                err.get_or_insert_with(|| "a pending node is queued".to_string());
            } else if table.slot_of(hash_of(n.key()), node).is_none() {
                err.get_or_insert_with(|| "a queued node is not in the table".to_string());
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        let (mut ready, mut pending) = (0usize, 0usize);
        for node in table.nodes() {
            // SAFETY: table nodes are live under the lock.
            if unsafe { (*node).is_ready() } {
                ready += 1;
            } else {
                pending += 1;
            }
        }
        let s = &self.state;
        if ready != s.len || queued != s.len {
            return Err(format!(
                "shard: len {} but {ready} ready nodes in the table and {queued} queued",
                s.len
            ));
        }
        if pending != s.pending || pending > s.flights.len() {
            return Err(format!(
                "shard: {pending} pending nodes, {} counted, {} flights",
                s.pending,
                s.flights.len()
            ));
        }
        if queued_weight != s.weighted {
            return Err(format!(
                "shard: weight {} counted, {queued_weight} queued",
                s.weighted
            ));
        }
        if s.weighted > s.capacity {
            return Err(format!(
                "shard: weight {} over capacity {}",
                s.weighted, s.capacity
            ));
        }
        if !within_load(s.used, table.slot_count()) {
            return Err(format!(
                "shard: {} used of {} slots",
                s.used,
                table.slot_count()
            ));
        }
        // The mirrors are stored as a section unlocks: this checks the previous section's.
        if self.shard.len() != s.len || self.shard.weighted_size() != s.weighted {
            return Err("shard: mirrors disagree with the locked counts".into());
        }
        if let (Some(expiry), Some(wheel)) = (self.shard.expiry.as_ref(), s.wheel.as_ref()) {
            wheel.validate()?;
            if wheel.len() != segments_for(table.slot_count()) {
                return Err(format!(
                    "shard: {} segments in the wheel for {} slots",
                    wheel.len(),
                    table.slot_count()
                ));
            }
            for i in 0..table.slot_count() {
                let Some(node) = table.node_at(i) else {
                    continue;
                };
                // SAFETY: table nodes are live under the lock, and `node_at` returns them as
                // stored.
                let (ready, deadline) = unsafe { ((*node).is_ready(), expiry.deadline(node)) };
                let bound = wheel.when(i >> SEGMENT_BITS);
                if ready && deadline < bound {
                    return Err(format!(
                        "shard: slot {i} expires at {deadline} before its segment's bound {bound}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The weighted size as counted under the lock (for `validate` at the cache level).
    pub(crate) fn weighted(&self) -> u64 {
        self.state.weighted
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.state.capacity
    }
}

#[cfg(all(test, not(larder_loom)))]
mod tests {
    use super::*;
    use crate::builder::Policy;

    fn shard() -> Shard<u64, u64> {
        Shard::new(
            16,
            Eviction::new(Policy::S3Fifo, 16),
            Table::new(slots_for(0)),
            None,
            None,
        )
        .expect("no expiry, so no wheel to allocate")
    }

    /// `lock_for`'s probe answers only the write to the key it probed for. Here it probes for
    /// key 1 and the write is for key 2, with the same hash: reusing the probe's answer (key
    /// 1's node, in its slot) would make key 2's node replace key 1's, and key 1 would be lost.
    #[test]
    fn a_probe_is_not_reused_for_another_key_with_the_same_hash() {
        let shard = shard();
        let hash = 0x1234_5678_9abc_def0;
        let hash_of = |_: &u64| hash;
        shard
            .lock()
            .insert(hash, Unpublished::new(1, 10, hash, 1, None), 1, &hash_of);
        let other = Unpublished::new(2, 20, hash, 1, None);
        // Probes for key 1 (present), then writes key 2.
        let mut locked = shard.lock_for(hash, &1u64);
        assert_eq!(
            locked.insert(hash, other, 1, &hash_of),
            Inserted::New,
            "key 2 is new, not a replacement of key 1"
        );
        drop(locked);
        shard.lock().validate(&hash_of).unwrap();
        let guard = epoch::pin();
        assert!(shard.find(hash, &1u64, &guard).is_some(), "key 1 kept");
        assert!(shard.find(hash, &2u64, &guard).is_some(), "key 2 added");
    }
}
