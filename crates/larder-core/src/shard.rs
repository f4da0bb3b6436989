//! One shard: a lock-free index for readers, and everything writers change under one lock.
//!
//! ```text
//! Shard
//! ├── table: Atomic<Table>        readers: pin, load, probe, clone.  No lock, no wait.
//! ├── len, weighted: atomics      mirrors of the locked counts, for len() without a lock
//! └── state: Mutex<State>         writers only
//!     ├── eviction: S3-FIFO queues or the CLOCK ring (intrusive lists through the nodes)
//!     ├── capacity, weighted, len, used slots, pending loads
//!     ├── flights: loads in progress (single-flight)
//!     └── counters: inserts, updates, evictions, removals, rejections
//! ```
//!
//! Every write follows the same order: lock; change the table and the queues; retire what was
//! unlinked through the epoch; evict until the shard is within its capacity; update the mirrors;
//! unlock. So when a write returns, the shard's weighted size is at most its capacity, and the
//! cache's (the sum over shards) at most the cache's capacity.

use crate::eviction::Eviction;
use crate::flight::Flight;
use crate::raw::node::{free_node, Node, Unpublished};
use crate::raw::table::{slots_for, within_load, Table, Vacancy};
use crate::sync::epoch::{self, Atomic, Guard, Owned};
use crate::sync::{Arc, AtomicU64, AtomicUsize, CachePadded, Mutex, MutexGuard, Ordering};
use std::borrow::Borrow;

/// Write-side counters of one shard, kept under its lock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriteCounters {
    pub(crate) inserts: u64,
    pub(crate) updates: u64,
    pub(crate) evictions: u64,
    pub(crate) removals: u64,
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
}

pub(crate) struct State<K, V> {
    eviction: Eviction<K, V>,
    capacity: u64,
    weighted: u64,
    /// Ready nodes in the table (each also in one queue).
    len: usize,
    /// Pending nodes in the table (loads in progress, in no queue).
    pending: usize,
    /// Non-null slots of the current table: nodes and tombstones.
    used: usize,
    flights: Vec<InFlight<K, V>>,
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

/// Defers freeing `node` until every reader pinned now has unpinned.
///
/// # Safety
/// `node` is unlinked from the table and every queue, and nothing else will free it.
unsafe fn retire<K, V>(guard: &Guard, node: *mut Node<K, V>) {
    // SAFETY: the caller's contract, and the epoch: readers that could still hold `node` pinned
    // before this call, so the closure runs after they unpin. The closure owns the pointer.
    unsafe { guard.defer_unchecked(move || free_node(node)) };
}

impl<K, V> Shard<K, V> {
    pub(crate) fn new(capacity: u64, eviction: Eviction<K, V>, initial_entries: usize) -> Self {
        Shard {
            table: CachePadded::new(Atomic::new(Table::new(slots_for(initial_entries)))),
            state: Mutex::new(State {
                eviction,
                capacity,
                weighted: 0,
                len: 0,
                pending: 0,
                used: 0,
                flights: Vec::new(),
                counters: WriteCounters::default(),
            }),
            len: AtomicUsize::new(0),
            weighted: AtomicU64::new(0),
        }
    }

    /// Lock-free lookup of a ready node (the read path).
    #[inline]
    pub(crate) fn find<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<(&'g Node<K, V>, u32)>
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

    /// Takes the shard lock, pinned.
    ///
    /// The pin comes first: pinning now and then runs the epoch's collection (freeing
    /// retired nodes), which should not lengthen the critical section other writers wait on.
    /// `Locked` releases the lock before it unpins (fields drop in order).
    pub(crate) fn lock(&self) -> Locked<'_, K, V> {
        let guard = epoch::pin();
        Locked {
            shard: self,
            state: self.state.lock(),
            guard,
        }
    }

    /// [`lock`](Self::lock), for a write to `key`: first probes for it as a reader would,
    /// without the lock, so the slots and nodes the locked probe will read are in this core's
    /// cache and their misses are not paid inside the critical section.
    pub(crate) fn lock_for<Q>(&self, hash: u64, key: &Q) -> Locked<'_, K, V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let guard = epoch::pin();
        let _ = std::hint::black_box(self.find(hash, key, &guard).is_some());
        Locked {
            shard: self,
            state: self.state.lock(),
            guard,
        }
    }
}

impl<K, V> Drop for Shard<K, V> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader or writer can reach the shard any more, so nothing is
        // pinned on its behalf; every node in the table (ready, or pending and so not yet
        // detached) is owned by the shard and freed exactly once here. Detached pending nodes
        // are owned by their loaders, which hold the cache alive, so there are none now.
        unsafe {
            let guard = epoch::unprotected();
            let table = self.table.load(Ordering::Relaxed, guard);
            for node in table.deref().nodes() {
                free_node(node);
            }
            drop(table.into_owned());
        }
    }
}

/// Proof that the shard lock is held: every write goes through it.
pub(crate) struct Locked<'a, K, V> {
    shard: &'a Shard<K, V>,
    /// Declared before `guard`, so the lock is released before the thread unpins.
    state: MutexGuard<'a, State<K, V>>,
    guard: Guard,
}

impl<K: Eq, V: Clone> Locked<'_, K, V> {
    fn table(&self) -> &Table<K, V> {
        // Relaxed: only the lock holder replaces the table, so the lock already orders it.
        let table = self.shard.table.load(Ordering::Relaxed, &self.guard);
        // SAFETY: non-null (see `Shard::find`), and it cannot be retired while we hold the lock.
        unsafe { table.deref() }
    }

    pub(crate) fn counters(&self) -> WriteCounters {
        self.state.counters
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
            self.rebuild(slots_for(self.state.len + self.state.pending + 1), hash_of);
        }
        rebuild
    }

    /// Copies every node into a fresh table of `slots` slots (dropping tombstones) and
    /// publishes it.
    fn rebuild(&mut self, slots: usize, hash_of: &impl Fn(&K) -> u64) {
        let fresh = Table::new(slots);
        // SAFETY: a node in the table is live while the lock is held.
        let used = self
            .table()
            .copy_into(&fresh, |node| hash_of(unsafe { (*node).key() }));
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
    }

    /// Puts `node` (for a key known to be absent) in the table, at `vacancy` if the caller's
    /// probe found it (and the table is not rebuilt meanwhile).
    fn link(
        &mut self,
        hash: u64,
        node: *mut Node<K, V>,
        vacancy: Option<Vacancy>,
        hash_of: &impl Fn(&K) -> u64,
    ) {
        let rebuilt = self.reserve_slot(hash_of);
        let table = self.table();
        let vacancy = match vacancy {
            Some(v) if !rebuilt => v,
            _ => table.vacant_slot(hash),
        };
        table.store(vacancy.slot, node, hash);
        self.state.used += usize::from(vacancy.was_empty);
    }

    /// Tombstones `node`'s slot.
    fn unlink(&mut self, hash: u64, node: *mut Node<K, V>) {
        let table = self.table();
        if let Some(i) = table.slot_of(hash, node) {
            table.store_tombstone(i);
        }
    }

    /// Inserts or replaces the key of `new` (which hashes to `hash` and weighs `weight`), then
    /// evicts down to capacity.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        mut new: Unpublished<K, V>,
        weight: u32,
        hash_of: &impl Fn(&K) -> u64,
    ) -> Inserted {
        if u64::from(weight) > self.state.capacity {
            // Too heavy for the shard. Whatever the key held before is stale now: drop it too,
            // so no read returns a value older than the caller's last write. `new` was never
            // published; dropping it on return frees it.
            self.remove_key(hash, new.key(), false);
            self.state.counters.rejections += 1;
            self.sync_mirrors();
            return Inserted::Rejected;
        }
        let existing = self.table().find_slot(hash, new.key());
        // A new key starts with the policy's initial count; a replacement inherits the old
        // node's (`Eviction::replace`).
        new.set_freq(self.state.eviction.initial_freq());
        let (node, outcome) = match existing {
            // SAFETY: table nodes are live while the lock is held.
            Ok((i, old)) if unsafe { (*old).is_ready() } => {
                let new = new.into_raw();
                // SAFETY: `old` is ready, so it is queued; `new` is fresh and unqueued. Then
                // `old` is unlinked from the table and the queue, and retired once.
                unsafe {
                    self.state.eviction.replace(old, new);
                    self.table().store(i, new, hash);
                    self.state.weighted =
                        self.state.weighted + u64::from(weight) - u64::from((*old).weight());
                    retire(&self.guard, old);
                }
                self.state.counters.updates += 1;
                (new, Inserted::Replaced)
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
                (new, Inserted::New)
            }
            Err(vacancy) => {
                let new = new.into_raw();
                self.link(hash, new, Some(vacancy), hash_of);
                self.admit(new, hash, weight);
                (new, Inserted::New)
            }
        };
        self.evict_to_capacity(node, hash_of);
        self.sync_mirrors();
        outcome
    }

    /// Queues a newly ready node and counts it.
    fn admit(&mut self, node: *mut Node<K, V>, hash: u64, weight: u32) {
        // SAFETY: `node` is ready, in the table, and in no queue.
        unsafe { self.state.eviction.admit(node, hash) };
        self.state.len += 1;
        self.state.weighted += u64::from(weight);
        self.state.counters.inserts += 1;
    }

    /// Evicts until the shard is within its capacity, never evicting `protect`.
    fn evict_to_capacity(&mut self, protect: *mut Node<K, V>, hash_of: &impl Fn(&K) -> u64) {
        while self.state.weighted > self.state.capacity {
            let Some(victim) = self.state.eviction.evict(protect) else {
                break;
            };
            // SAFETY: an evicted node was queued, so it is ready and in the table; it has just
            // left its queue, is unlinked from the table here, and retired once.
            unsafe {
                self.unlink(hash_of((*victim).key()), victim);
                self.state.weighted -= u64::from((*victim).weight());
                retire(&self.guard, victim);
            }
            self.state.len -= 1;
            self.state.counters.evictions += 1;
        }
    }

    /// Removes `key`: a ready entry is unlinked and its value returned; a pending one is
    /// detached from its loader. `count` says whether this is a removal the caller asked for.
    pub(crate) fn remove_key<Q>(&mut self, hash: u64, key: &Q, count: bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        V: Clone,
    {
        let (i, node) = self.table().find_slot(hash, key).ok()?;
        self.table().store_tombstone(i);
        // SAFETY: `node` was in the table, so it is live; ready nodes are queued, and once out
        // of both it is retired once. Pending nodes are left to their loader.
        let value = unsafe {
            if (*node).is_ready() {
                self.state.eviction.remove(node);
                self.state.len -= 1;
                self.state.weighted -= u64::from((*node).weight());
                let value = (*node).clone_value();
                retire(&self.guard, node);
                self.state.counters.removals += u64::from(count);
                Some(value)
            } else {
                (*node).set_detached();
                self.state.pending -= 1;
                None
            }
        };
        self.sync_mirrors();
        value
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
        let fresh = Owned::new(Table::new(slots_for(0)));
        // Release: as in `rebuild`.
        let old = self.shard.table.swap(fresh, Ordering::Release, &self.guard);
        // SAFETY: the old table and the drained nodes are unreachable from the new table, and
        // were unlinked from every queue; each is freed once, after current readers unpin.
        unsafe {
            self.guard.defer_destroy(old);
            self.guard.defer_unchecked(move || {
                for node in doomed {
                    free_node(node);
                }
            });
        }
        self.state.counters.removals += self.state.len as u64;
        self.state.len = 0;
        self.state.pending = 0;
        self.state.used = 0;
        self.state.weighted = 0;
        self.sync_mirrors();
    }

    fn sync_mirrors(&self) {
        // Relaxed: statistics only (see `Shard::len`).
        self.shard.len.store(self.state.len, Ordering::Relaxed);
        self.shard
            .weighted
            .store(self.state.weighted, Ordering::Relaxed);
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
        let node = Node::new_pending(key, hash);
        self.link(hash, node, None, hash_of);
        self.state.pending += 1;
        self.state.flights.push((node, flight));
        node
    }

    fn end_flight(&mut self, node: *mut Node<K, V>) {
        self.state.flights.retain(|(n, _)| *n != node);
    }

    /// Stores the loaded value in the pending node, unless an insert, remove or clear
    /// detached it meanwhile or it is too heavy. Returns whether it was stored.
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
        hash_of: &impl Fn(&K) -> u64,
    ) -> bool {
        self.end_flight(node);
        // SAFETY: the loader owns a pending node until it is published here or retired.
        let detached = unsafe { (*node).is_detached() };
        if detached || u64::from(weight) > self.state.capacity {
            if !detached {
                self.unlink(hash, node);
                self.state.pending -= 1;
                self.state.counters.rejections += 1;
            }
            // SAFETY: out of the table (detached, or unlinked just now), never queued, and
            // retired once; readers may still be looking at it, hence the epoch.
            unsafe { retire(&self.guard, node) };
            self.sync_mirrors();
            return false;
        }
        // SAFETY: the node is pending, we are its loader and hold the lock.
        unsafe { (*node).publish_value(value, weight) };
        self.state.pending -= 1;
        self.admit(node, hash, weight);
        self.evict_to_capacity(node, hash_of);
        self.sync_mirrors();
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
            retire(&self.guard, node);
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
        if self.shard.len() != s.len || self.shard.weighted_size() != s.weighted {
            return Err("shard: mirrors disagree with the locked counts".into());
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
