//! The cache handle: hashing, shard selection, the read path, loading, and the public API.

use crate::builder::{CacheBuilder, Policy};
use crate::expiry::{millis, written_ms, Expiry, ExpiryDisabled, Prefix, RemovalCause, NEVER};
use crate::flight::{Flight, Outcome};
use crate::raw::node::{Node, OnHit, Unpublished};
use crate::shard::{Inserted, Shard, EXPIRY_BATCH};
use crate::stats::{CacheStats, ReadCounters};
use crate::sync::{epoch, Arc, AtomicU64, CachePadded, Ordering};
use crate::time::Clock;
use crate::unwind::Pending;
use larder_janitor::{Maintain, Registration};
use std::any::Any;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

pub(crate) type Weigher<K, V> = std::sync::Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;

/// A bounded concurrent cache with lock-free reads.
///
/// A `Cache` is a handle: cloning it is cheap and every clone sees the same entries. See the
/// [crate documentation](crate) for the design and what concurrent readers may observe.
///
/// **User code inside the cache.** The key's `Hash` and `Eq`, the value's `Clone`, the
/// weigher, the listener, `init` and the values' `Drop` may panic: the panic reaches the caller
/// (a listener's, and one from a `Drop` run by the janitor, is dropped), and the cache stays
/// whole and within its capacity. A write runs `Hash` and `Eq` (and `remove` the `Clone` of
/// its answer) while it holds its shard's lock, so they must not write to the same cache, nor
/// call [`stats`](Self::stats), [`reset_stats`](Self::reset_stats) or
/// [`reserve`](Self::reserve), which lock its shards: that would wait for the lock forever.
/// Its reads ([`get`](Self::get), [`peek`](Self::peek), [`contains_key`](Self::contains_key),
/// [`ttl`](Self::ttl), [`len`](Self::len), [`iter`](Self::iter), ...) take no lock: `Hash` and
/// `Eq` may make them. The weigher, the listener, `init` and `Drop` run with no lock held and
/// may use the cache.
pub struct Cache<K, V, S = ahash::RandomState> {
    /// std's `Arc` even under loom: the janitor holds caches through `Weak`, which loom's `Arc`
    /// lacks, and the models check the shards, not the handle's count.
    inner: std::sync::Arc<Inner<K, V, S>>,
}

struct Inner<K, V, S> {
    shards: Box<[CachePadded<Shard<K, V>>]>,
    hasher: S,
    /// Whether [`Cache::hash`] mixes the hasher's answer: for every hasher but the default,
    /// `ahash::RandomState`, whose answer is spread over all 64 bits already. Mixing it too
    /// would put a multiply on every read's path before the probe can start, for nothing.
    mix_hash: bool,
    weigher: Option<Weigher<K, V>>,
    capacity: u64,
    /// Capacity no shard holds, only after [`Cache::share_capacity`]: see `Locked::refit_share`.
    spare: Arc<AtomicU64>,
    /// How many times [`Cache::share_capacity`] has fitted the shares: the number of the
    /// latest fitting, the one whose [`FittedShares`] alone ends a load. Written with every
    /// shard's lock held and read with one held, so the locks order it.
    fittings: AtomicU64,
    /// What a read does to an entry's access counter (policy-dependent; see `eviction`).
    on_hit: OnHit,
    policy: Policy,
    expiry: Option<Expiry>,
    /// The builder's clock, kept with or without expiry (`expiry` has its own copy, on the
    /// read path): what [`Cache::clock`] tells a durable cache, whose records' deadlines are
    /// wall-clock times by it.
    clock: Clock,
    reads: ReadCounters,
    /// The cache's place with its janitor, if it has one: dropped with the last handle, which
    /// unregisters it, or before by [`Cache::detach_from_janitor`]. std's lock even under loom,
    /// as the models run no janitor.
    registration: std::sync::Mutex<Option<Registration>>,
    #[cfg(test)]
    write_hook: std::sync::Mutex<Option<std::sync::Arc<dyn Fn() + Send + Sync>>>,
    /// Run by a load between its lock-free lookup and taking the shard lock (tests).
    #[cfg(test)]
    load_hook: std::sync::Mutex<Option<std::sync::Arc<dyn Fn() + Send + Sync>>>,
}

impl<K, V, S> Clone for Cache<K, V, S> {
    fn clone(&self) -> Self {
        Cache {
            inner: std::sync::Arc::clone(&self.inner),
        }
    }
}

impl<K, V> Cache<K, V, ahash::RandomState>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `max_capacity` entries, with the defaults of [`Cache::builder`].
    ///
    /// A capacity of 0 builds a cache that stores nothing (every insert is rejected), rather
    /// than failing; use the builder to have a zero capacity reported as an error.
    pub fn new(max_capacity: u64) -> Self {
        let shards = crate::builder::auto_shards(max_capacity);
        // Without expiry there is no janitor to start, so the one way to fail is running out
        // of memory for the shards' first tables, as any allocation's failure is.
        CacheBuilder::new()
            .assemble(max_capacity, shards)
            .unwrap_or_else(|_| {
                std::alloc::handle_alloc_error(std::alloc::Layout::new::<[usize; 4]>())
            })
    }

    /// A builder for a cache with more options than [`Cache::new`].
    pub fn builder() -> CacheBuilder<K, V, ahash::RandomState> {
        CacheBuilder::new()
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    pub(crate) fn from_parts(
        shards: Box<[CachePadded<Shard<K, V>>]>,
        hasher: S,
        weigher: Option<Weigher<K, V>>,
        capacity: u64,
        policy: Policy,
        expiry: Option<Expiry>,
        clock: Clock,
    ) -> Self
    where
        S: 'static,
    {
        let mix_hash = std::any::TypeId::of::<S>() != std::any::TypeId::of::<ahash::RandomState>();
        Cache {
            inner: std::sync::Arc::new(Inner {
                shards,
                hasher,
                mix_hash,
                weigher,
                capacity,
                spare: Arc::new(AtomicU64::new(0)),
                fittings: AtomicU64::new(0),
                on_hit: crate::eviction::Eviction::<K, V>::on_hit(policy),
                policy,
                expiry,
                clock,
                reads: ReadCounters::new(),
                registration: std::sync::Mutex::new(None),
                #[cfg(test)]
                write_hook: std::sync::Mutex::new(None),
                #[cfg(test)]
                load_hook: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The key's hash as the cache uses it: the hasher's answer, mixed unless the hasher is
    /// the default (`Inner::mix_hash`). The shard comes from the top 32 bits, the control
    /// byte, tag and policy fingerprint from bits 32..56, and the home slot from the low bits,
    /// so every bit must carry the key's entropy. A user's hasher need not spread it so (an
    /// identity hasher for integer keys, a 32-bit hash widened to 64): unmixed, all its keys
    /// went to one shard, with one fingerprint. The mix is a bijection (xor-shifts and an odd
    /// multiply), so it adds no collisions.
    #[inline(always)]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        let h = self.inner.hasher.hash_one(key);
        if self.inner.mix_hash {
            let h = (h ^ (h >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^ (h >> 29)
        } else {
            h
        }
    }

    /// The shard for `hash`: the top 32 bits scaled to the shard count.
    #[inline(always)]
    fn shard(&self, hash: u64) -> &Shard<K, V> {
        &self.inner.shards[self.shard_of_hash(hash)]
    }

    #[inline(always)]
    fn shard_of_hash(&self, hash: u64) -> usize {
        let n = self.inner.shards.len() as u64;
        (((hash >> 32) * n) >> 32) as usize
    }

    fn weigh(&self, key: &K, value: &V) -> u32 {
        self.inner.weigher.as_ref().map_or(1, |w| w(key, value))
    }

    /// The lock-free lookup shared by the read methods: `f` of the live entry for `key`, if
    /// there is one, without counting a hit or miss. An expired entry is not live: it is left
    /// for the janitor, untouched. `touch` records an access (eviction bits, time-to-idle).
    ///
    /// `f` gets the node as stored in the table: ready, live for the call (this thread is
    /// pinned), and with its block's provenance (see `Node::stamp`); and, with expiry, the
    /// clock's reading the entry was found live at (0 without). An answer about the entry's
    /// time (`ttl`, `age`) is worked out from that reading: a second one, a moment later, may
    /// be past the deadline, and then `ttl` said `Some(0)` of an entry no read could return,
    /// and `age` gave it its whole lifetime.
    #[inline(always)]
    fn lookup<Q, R>(
        &self,
        key: &Q,
        touch: bool,
        f: impl FnOnce(*const Node<K, V>, u64) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let guard = epoch::pin();
        let (node, meta) = self.shard(hash).find(hash, key, &guard)?;
        let mut now = 0;
        if let Some(expiry) = &self.inner.expiry {
            now = expiry.clock.now_ms();
            let horizon = now + expiry.clock.slack_ms();
            // SAFETY: found under `guard`, as stored in its slot.
            if !unsafe { expiry.is_live(node, horizon, touch.then_some(now)) } {
                return None;
            }
        }
        if touch {
            // SAFETY: as above.
            unsafe { (*node).touch(meta, self.inner.on_hit) };
        }
        Some(f(node, now))
    }

    /// The expiry words for an entry written now, living `lifetime_ms` (`None`: the cache's
    /// time-to-live), if the cache has expiry.
    fn prefix(&self, lifetime_ms: Option<Option<u64>>) -> Option<Prefix> {
        let expiry = self.inner.expiry.as_ref()?;
        Some(expiry.prefix_for(expiry.clock.now_ms(), lifetime_ms))
    }

    /// The value for `key`, counting the read as an access (for eviction) and in the stats.
    ///
    /// Never takes a lock and never waits for another thread.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // SAFETY: `lookup` hands over only ready nodes, found under its pinned guard.
        let value = self.lookup(key, true, |node, _| unsafe { (*node).clone_value() });
        match value {
            Some(_) => self.inner.reads.hit(),
            None => self.inner.reads.miss(),
        }
        value
    }

    /// The value for `key`, without counting an access or a hit or miss: the entry's standing
    /// with the eviction policy, and its time-to-idle deadline, are unchanged. Lock-free, like
    /// [`get`](Self::get).
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // SAFETY: as in `get`.
        self.lookup(key, false, |node, _| unsafe { (*node).clone_value() })
    }

    /// Whether `key` has a value, without counting an access (nor pushing back a time-to-idle
    /// deadline). Lock-free.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lookup(key, false, |_, _| ()).is_some()
    }

    /// Inserts or replaces the value for `key`, evicting other entries if the cache is full.
    ///
    /// When this returns, the entry is visible to every later read, and the cache's weighted
    /// size is within its capacity. An entry heavier than its shard's share of the capacity is
    /// refused (counted in [`CacheStats::rejections`]), and any older value of the key is
    /// removed with it, so no later read returns the value this insert meant to replace.
    pub fn insert(&self, key: K, value: V) {
        self.insert_entry(key, value, self.prefix(None));
    }

    /// Inserts like [`insert`](Self::insert), and says whether the entry is now in the cache:
    /// `false` when it was refused as heavier than its shard's capacity (and the key's older
    /// value, if any, removed). The entry just written is never the one evicted to make room,
    /// so `true` means a read right after finds it (unless another thread changed it). For
    /// layers that must follow what the cache holds, such as the durable cache.
    pub fn insert_and_check(&self, key: K, value: V) -> bool {
        self.insert_entry(key, value, self.prefix(None)) != Inserted::Rejected
    }

    /// Inserts or replaces the value for `key`, living `ttl` from now instead of the cache's
    /// time-to-live (and still subject to its time-to-idle, if it has one).
    ///
    /// Expiry errs early by up to twice the clock's [`slack`](crate::Clock::slack), never
    /// late, so a `ttl` under the clock's
    /// [`shortest_lifetime`](crate::Clock::shortest_lifetime) may replace the key's value with
    /// one already expired (and a zero `ttl` always does): reads miss at once. A cache built for
    /// per-entry lifetimes of a few milliseconds should take
    /// [`Clock::precise`](crate::Clock::precise) (slack 1 ms) through [`CacheBuilder::clock`];
    /// the default coarse clock's is about 5 ms.
    ///
    /// # Errors
    /// A cache built without expiry (no [`time_to_live`](CacheBuilder::time_to_live),
    /// [`time_to_idle`](CacheBuilder::time_to_idle) or
    /// [`per_entry_ttl`](CacheBuilder::per_entry_ttl)) keeps no lifetimes: the entry is handed
    /// back, unstored, in the error.
    pub fn insert_with_ttl(
        &self,
        key: K,
        value: V,
        ttl: Duration,
    ) -> Result<(), ExpiryDisabled<K, V>> {
        if self.inner.expiry.is_none() {
            return Err(ExpiryDisabled { key, value });
        }
        self.insert_entry(key, value, self.prefix(Some(Some(millis(ttl)))));
        Ok(())
    }

    fn insert_entry(&self, key: K, value: V, prefix: Option<Prefix>) -> Inserted {
        let hash = self.hash(&key);
        let weight = self.weigh(&key, &value);
        // Allocated before the lock, so other writers to the shard do not wait on malloc.
        let node = Unpublished::new(key, value, hash, weight, prefix);
        let mut locked = self.shard(hash).lock_for(hash, node.key());
        #[cfg(test)]
        self.run_write_hook();
        locked.insert(hash, node, weight, &|k| self.hash(k))
    }

    /// How long the entry for `key` has left to live: `None` if it is missing or expired,
    /// [`Duration::MAX`] if it never expires. Lock-free; does not count as an access.
    ///
    /// With the real clock this is a few milliseconds less than the lifetime's rest: expiry
    /// errs early by the clock's possible lag ([`Clock`](crate::Clock)), and `ttl` agrees with
    /// what reads see.
    pub fn ttl<Q>(&self, key: &Q) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // SAFETY: `time_left` hands over a live node with its block's provenance.
        self.time_left(key, |expiry, node| unsafe { expiry.deadline(node) })
    }

    /// How long the entry for `key` has until its time-to-live ends (its own, from
    /// [`insert_with_ttl`](Self::insert_with_ttl), or the cache's), leaving its time-to-idle
    /// out: [`ttl`](Self::ttl) is the earlier of the two, and reads push an idle deadline
    /// back, so only this one is fixed at the write. `None` if the entry is missing or
    /// expired, [`Duration::MAX`] if it has no time-to-live. Lock-free; does not count as an
    /// access.
    ///
    /// For a layer that records entries with their deadlines, such as the durable cache,
    /// whose records keep the time-to-live alone.
    pub fn time_to_live_left<Q>(&self, key: &Q) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.time_left(key, |_, node| {
            // SAFETY: `time_left` hands over a live node with its block's provenance.
            unsafe { Node::stamp(node) }.map_or(NEVER, crate::expiry::ttl_deadline)
        })
    }

    /// What [`ttl`](Self::ttl) and [`time_to_live_left`](Self::time_to_live_left) share: the
    /// time from now to the deadline `deadline_of` reads from the live entry for `key`
    /// ([`Duration::MAX`] for none), `None` if it is missing or expired.
    fn time_left<Q>(
        &self,
        key: &Q,
        deadline_of: impl FnOnce(&Expiry, *const Node<K, V>) -> u64,
    ) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lookup(key, false, |node, now| {
            let Some(expiry) = &self.inner.expiry else {
                return Duration::MAX;
            };
            match deadline_of(expiry, node) {
                NEVER => Duration::MAX,
                // Past the horizon the entry was found live at (`lookup`): at least 1 ms.
                deadline => {
                    Duration::from_millis(deadline.saturating_sub(now + expiry.clock.slack_ms()))
                }
            }
        })
    }

    /// The clock the cache was built with ([`CacheBuilder::clock`]; [`Clock::real`] or
    /// [`Clock::precise`] by default), with or without expiry. A durable cache reads the wall
    /// time its records' deadlines are in from it ([`Clock::wall_time`]), so that on a
    /// [`MockClock`](crate::MockClock) those deadlines move with the mock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The cache-wide time-to-live it was built with
    /// ([`CacheBuilder::time_to_live`]), if any, as the cache keeps it: the lifetime an entry
    /// written now is given, which [`ttl`](Self::ttl) reports for it on a mock clock. That is
    /// in whole milliseconds (a time-to-live of 1.5 ms reads back as 1 ms), rounded down beyond
    /// 131 s (a year reads back 76.8 s short), and [`Duration::MAX`] for one longer than an
    /// entry's stamp can hold (about 4,400 years), whose entries never expire.
    pub fn time_to_live(&self) -> Option<Duration> {
        let ms = self.inner.expiry.as_ref()?.ttl_ms?;
        Some(crate::expiry::kept_lifetime(ms).map_or(Duration::MAX, Duration::from_millis))
    }

    /// The shortest lifetime an entry can keep that is `ttl` or longer, to give
    /// [`insert_with_ttl`](Self::insert_with_ttl) for an entry that must not expire before a
    /// deadline `ttl` away. `insert_with_ttl` rounds a lifetime down; this rounds `ttl` *up*:
    /// to whole milliseconds, and beyond 131 s to the next lifetime an entry's stamp holds (by
    /// less than 1/65,536 of it). [`Duration::MAX`] (never expires) beyond about 4,400 years.
    ///
    /// For a layer that keeps deadlines of its own, such as the durable cache, whose records
    /// hold each entry's deadline to the millisecond: an entry the cache expired before its
    /// record's deadline would come back after a crash that came before its removal was
    /// recorded.
    ///
    /// ```
    /// use larder_core::Cache;
    /// use std::time::Duration;
    ///
    /// let cache: Cache<u64, u64> = Cache::builder().max_capacity(10).build().unwrap();
    /// let at_least = |us| cache.lifetime_at_least(Duration::from_micros(us));
    /// assert_eq!(at_least(1_500), Duration::from_millis(2));
    /// assert_eq!(at_least(90_000_000), Duration::from_millis(90_000)); // exact
    /// // 86,398,327 ms is kept in steps of 1,024 ms: the step above it.
    /// assert_eq!(at_least(86_398_327_000), Duration::from_millis(86_398_976));
    /// ```
    pub fn lifetime_at_least(&self, ttl: Duration) -> Duration {
        let part_ms = u64::from(!ttl.subsec_nanos().is_multiple_of(1_000_000));
        crate::expiry::kept_lifetime_at_least(millis(ttl).saturating_add(part_ms))
            .map_or(Duration::MAX, Duration::from_millis)
    }

    /// How long ago the live entry for `key` was written (Python's
    /// `ExpiringDict.get(key, with_age=True)`). `None` if it is missing or expired, or if the
    /// cache was built without expiry, which keeps no write times. Lock-free; does not count as
    /// an access.
    pub fn age<Q>(&self, key: &Q) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // From the reading the entry was found live at (`lookup`), so under its lifetime.
        // Without expiry a node has no stamp.
        let age = self.lookup(key, false, |node, now| {
            // SAFETY: `lookup` hands over a live node with its block's provenance.
            unsafe { Node::stamp(node) }.map(|stamp| now.saturating_sub(written_ms(stamp)))
        })??;
        Some(Duration::from_millis(age))
    }

    /// Does the janitor's work now, on this thread: removes every entry whose lifetime has
    /// passed and tells the eviction listener. Each shard's lock is taken for a bounded batch
    /// at a time and released between batches, and a call does at most a pass over each shard:
    /// what comes due while it runs (a listener's write of an entry already expired) waits for
    /// the next call, unseen by reads meanwhile. Then frees the entries this thread removed
    /// earlier (from any cache) that no reader can still be using: a thread frees what it
    /// removes itself, a little later, the next time it writes or calls this once the readers
    /// of that moment are gone (so a thread that removed entries and then only calls this,
    /// as the janitor does, frees them by its next call or the one after). A value's `Drop` that
    /// panics as this frees it is dropped, not passed on, as on the janitor's thread.
    pub fn run_pending_tasks(&self) {
        self.inner.maintain();
    }

    /// Registers the cache with `janitor`, which then runs its pending tasks every tick for as
    /// long as the cache lives.
    ///
    /// # Errors
    /// If the janitor's thread was not running and could not be started.
    pub(crate) fn register_with(&self, janitor: &larder_janitor::Janitor) -> std::io::Result<()>
    where
        S: Send + Sync + 'static,
    {
        let weak = std::sync::Arc::downgrade(&self.inner);
        let registration = janitor.register(weak)?;
        // A cache is registered once, by its builder, before anyone else holds it.
        *self.registration() = Some(registration);
        Ok(())
    }

    /// Ends the janitor's work on this cache, for every handle: once this returns, no tick of
    /// it is running on the janitor's thread and none will run, so entries expire only as
    /// they do [`without_janitor`](CacheBuilder::without_janitor), through writes and
    /// [`run_pending_tasks`](Self::run_pending_tasks). A tick in progress is waited out,
    /// removal observers and eviction listener included (called inside that tick, on the
    /// janitor's thread, this cannot wait for it; from a listener there, every observer has
    /// heard every removal of the batch being told by then, and from an observer, every one
    /// set after it: [`CacheBuilder::removal_observer`]). Does nothing for a cache with no
    /// janitor.
    ///
    /// For a layer that must hear the cache's last removal before it shuts down: the durable
    /// cache in `larder` calls it when its last handle goes, before it records the last
    /// expiry in its log and closes the log. Without it, a tick could remove an entry there
    /// and tell the observers after the log had closed.
    pub fn detach_from_janitor(&self) {
        let registration = self.registration().take();
        // Dropped with the lock released: the drop waits for a tick, whose listener may use
        // the cache.
        drop(registration);
    }

    fn registration(&self) -> std::sync::MutexGuard<'_, Option<Registration>> {
        // Only ever set or taken whole: a poisoned lock holds nothing half-done.
        self.inner
            .registration
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes `key` and returns its value, if it had one.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let mut locked = self.shard(hash).lock();
        let value = locked.remove_key(hash, key, RemovalCause::Explicit);
        // Unlocked before returning, with `value` a plain local: the unlock frees what this
        // thread removed earlier, and if a `Drop` there panics, `value` is dropped as the
        // panic unwinds. Were the guard a temporary of the returned expression, the panic
        // would leak it (a return value already built is not dropped when a temporary's
        // drop panics: rust-lang/rust#47949).
        drop(locked);
        value
    }

    /// Removes `key`, discarding its value: unlike [`remove`](Self::remove), it does not clone
    /// the value, so no `V::clone` runs under the shard's lock.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shard(hash).lock().discard_key(hash, key);
    }

    /// Removes every entry. Shards are cleared one after another, so a concurrent reader may
    /// see some shards cleared and others not yet.
    pub fn clear(&self) {
        self.each_shard(|mut locked| locked.clear());
    }

    /// Runs `work` on every shard in turn, each under its lock, and does it on every shard even
    /// if it panics on some: then the first panic goes on to the caller once all are done.
    /// Releasing a shard's lock frees what this thread removed earlier, and a value's `Drop`
    /// may panic there, with that shard's work whole; stopping at it would leave the later
    /// shards undone (a `clear` that cleared one shard, a `reset_stats` that reset one).
    fn each_shard(&self, mut work: impl FnMut(crate::shard::Locked<'_, K, V>)) {
        let mut first_panic = None;
        for shard in self.inner.shards.iter() {
            let done =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(shard.lock())));
            if let Err(panic) = done {
                crate::unwind::keep_first(&mut first_panic, panic);
            }
        }
        if let Some(panic) = first_panic {
            std::panic::resume_unwind(panic);
        }
    }

    /// Which shard `key` lives in, below [`shard_count`](Self::shard_count). Keys of different
    /// shards never wait for each other's locks, nor compete for each other's capacity: a
    /// bulk load split by shard over threads loads each shard exactly as one thread would.
    pub fn shard_index<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        self.shard_of_hash(self.hash(key))
    }

    /// Shares the capacity out over the shards so that each has room for `weights[i]`, the
    /// weight of the entries about to be inserted that go to shard `i` (numbered as
    /// [`shard_index`](Self::shard_index) numbers them): for a bulk load into a new cache, such
    /// as a durable cache's recovery. The load goes in while the [`FittedShares`] this returns
    /// lives, and ends when it is dropped.
    ///
    /// A cache splits its capacity evenly over its shards, and each shard keeps to its share.
    /// A set of entries that filled another cache, spread over this one's shards by a hasher
    /// seeded otherwise or by another shard count, gives some shards more than their share,
    /// which would evict some of it although the whole fits. With the shares fitted first, it
    /// loads whole. Each shard gets at least its weight (and at least 1 whenever the even share
    /// is); the rest goes to the smallest shares first, so the shares stay as even as that
    /// allows. A shard the load leaves little of its even share is small for a while (below).
    ///
    /// The load's end gives up the room it did not fill (a recovery leaves out entries whose
    /// deadline passed while it loaded), also when a panic ends it early, or a clear empties
    /// the cache meanwhile. From then on the shares drift back to even as the cache is
    /// written: a shard above its even share that must evict gives up as much again as the
    /// write brings (evicting twice that), and any more its evictions free; one that removes
    /// an entry (or has it expire) gives up the room it held; each down to its even share,
    /// never below what it holds. One below its even share that needs room takes what has
    /// been given up, up to its own. So for a while after the load a shard below its even
    /// share may refuse an entry heavier than its share that an even split would have taken,
    /// or evict sooner than it would have. Capacity moves from shard to shard only through the
    /// spare room, under each shard's own lock, so every shard stays within its share and the
    /// cache within its capacity. [`weighted_size`](Self::weighted_size), which adds the
    /// shards' weights up one shard after another, reports at most the capacity, and so does
    /// [`len`](Self::len) without a weigher.
    ///
    /// Changes nothing and returns `None` when the cache holds anything (an entry, or a load
    /// in flight), when `weights` does not have one weight per shard, or when the weights do
    /// not fit that way (more than the capacity in all, or too little left for an entry in
    /// each shard: the load evicts, shard by shard).
    #[must_use = "dropping the fitted shares ends the load, and gives the room fitted for it back"]
    pub fn share_capacity(&self, weights: &[u64]) -> Option<FittedShares<'_, K, V, S>> {
        let shards = &self.inner.shards;
        if weights.len() != shards.len() {
            return None;
        }
        let shares = crate::builder::shares_for(self.inner.capacity, weights)?;
        // Every shard locked at once, in order (no other section holds two shard locks), so
        // that no write lands between the check that all are empty and the change: the
        // shares must add up to the capacity.
        let mut locked: Vec<_> = shards.iter().map(|shard| shard.lock()).collect();
        // The locks are released in order, and an unlock frees what this thread removed
        // earlier: a value's `Drop` may write to a shard whose lock is still held here. Only
        // the last unlock, with no other lock held, frees.
        if let Some((_, held_meanwhile)) = locked.split_last_mut() {
            for l in held_meanwhile {
                l.free_nothing_at_unlock();
            }
        }
        if !locked.iter().all(|l| l.holds_nothing()) {
            return None;
        }
        // The shares add up to the capacity: the room an earlier fitting left in the spare
        // (a cache emptied since) is shared out with the rest. Every shard's lock is held, and
        // the spare changes only under one.
        self.inner.spare.store(0, Ordering::Relaxed);
        for (l, share) in locked.iter_mut().zip(shares) {
            l.fit_share(share, &self.inner.spare);
        }
        // Relaxed: `fittings` changes only here, with every shard's lock held, and is read
        // only with one held (`FittedShares`'s drop), so the locks order it.
        let fitting = self.inner.fittings.fetch_add(1, Ordering::Relaxed) + 1;
        Some(FittedShares {
            cache: self,
            fitting,
        })
    }

    /// Ends a bulk load into shares fitted by [`share_capacity`](Self::share_capacity) (the
    /// drop of its [`FittedShares`]): the room a shard was fitted for and does not hold goes
    /// back to the shards below their even share, as a removal's does, down to the shard's
    /// even share. Kept, it stayed with the shard for good once the rest of the load left it,
    /// since a removal gives back only the room it frees. Changes nothing with even shares.
    ///
    /// Only the latest fitting's load is ended (`fitting`, its number): a cache emptied and
    /// fitted again while an earlier load's shares live holds a later load, whose room is
    /// not the earlier one's to give back. Checked under each shard's lock, which a new
    /// fitting holds, all at once, while it counts itself: a shard either gives back before
    /// the new fitting sets its share anew, or sees the new number and keeps it.
    fn give_back_unloaded_room(&self, fitting: u64) {
        self.each_shard(|mut locked| {
            // Relaxed: see `Inner::fittings`.
            if self.inner.fittings.load(Ordering::Relaxed) == fitting {
                locked.give_back_unloaded_room();
            }
        });
    }

    /// The weight the cache gives an entry: its weigher's, or 1 without one.
    pub fn weight_of(&self, key: &K, value: &V) -> u32 {
        self.weigh(key, value)
    }

    /// Sizes the index for `additional` more entries now, spread evenly over the shards, so
    /// that inserting them rebuilds no table: for a bulk load, such as a durable cache's
    /// recovery. Writers to a shard wait while it is rebuilt; reads never do. A shard whose
    /// index (its table, and with expiry its timer wheel) cannot be allocated at that size is
    /// left as it is: reserving is only a head start on growth.
    pub fn reserve(&self, additional: usize) {
        let hash_of = |k: &K| self.hash(k);
        let per_shard = additional.div_ceil(self.inner.shards.len());
        self.each_shard(|mut locked| locked.reserve(per_shard, &hash_of));
    }

    /// The value for `key`, computing it with `init` if absent.
    ///
    /// Concurrent calls for the same absent key run `init` once: the first caller computes while
    /// the others wait for its value. `init` runs without any lock held, so it may use the cache,
    /// even recursively for other keys. Calling `get_with` for the *same* key from inside its own
    /// `init` would wait forever, so it panics instead (counting a miss, see
    /// [`CacheStats::misses`]). Loads that wait for each other across threads are not detected: if
    /// one thread's `init` for `a` asks for `b` while another thread's `init` for `b` asks for `a`,
    /// both wait forever, as two threads taking two locks in opposite orders would. A memoized
    /// function whose calls depend only on its arguments cannot do this (its keys depend on each
    /// other the same way on every thread, so such a cycle would be the same-key call above on one
    /// thread); two `init`s written differently for the same keys can.
    ///
    /// If `init` panics, the panic propagates to this caller, nothing is stored, and one of the
    /// waiting callers (if any) runs its own `init` instead.
    ///
    /// A write to the key while `init` runs wins: an `insert`, `remove`, `invalidate` or
    /// `clear` detaches the load, whose value then goes to its caller and its waiters but is
    /// not stored (so a `remove` that returned `None` is not undone by a load that began
    /// before it). Once detached, the load no longer holds the key: a call that comes after
    /// finds the written value, or, if the key is absent, runs an `init` of its own, even while
    /// the detached one is still running.
    pub fn get_with(&self, key: K, init: impl FnOnce() -> V) -> V {
        match self.load::<std::convert::Infallible>(key, Failures::Shared, || Ok(init())) {
            Ok(v) => v,
            Err(Failure::Shared(never)) => match *never {},
            Err(Failure::Own(never)) => match never {},
        }
    }

    /// Like [`get_with`](Self::get_with), for an `init` that can fail. Only `Ok` values are
    /// cached. Every caller that waited on a failed load receives the same `Arc<E>`; nothing is
    /// stored, so the next call tries again.
    pub fn try_get_with<E>(
        &self,
        key: K,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, std::sync::Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        self.load(key, Failures::Shared, init)
            .map_err(Failure::into_shared)
    }

    /// Like [`try_get_with`](Self::try_get_with), but a failure is returned, as a plain `E`, to
    /// the one caller whose `init` produced it. Nothing is cached, and the callers that were
    /// waiting on the failed load try again themselves, one at a time: the first becomes the
    /// next loader and the others wait on it.
    ///
    /// For an error type that cannot be shared or cloned (`std::io::Error`), and for callers
    /// that must see exactly the error their own call would have produced. It is what
    /// `#[memoize]` uses for a function returning `Result`.
    pub fn try_get_with_unshared<E>(
        &self,
        key: K,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E>
    where
        E: Send + Sync + 'static,
    {
        self.load(key, Failures::Unshared, init)
            .map_err(Failure::into_own)
    }

    /// The value for `key`, computing it with `init` if absent and caching it only if `init`
    /// returns `Some`. Concurrent callers for the same absent key run `init` once, and when it
    /// returns `None` every one of them gets `None`; the next call tries again.
    pub fn optionally_get_with(&self, key: K, init: impl FnOnce() -> Option<V>) -> Option<V> {
        /// The failure a `None` from `init` stands for: shared with the waiters, who map it back.
        struct NoValue;
        self.load(key, Failures::Shared, || init().ok_or(NoValue))
            .ok()
    }

    /// The single-flight load behind `get_with` and its variants. `failures` says what the
    /// callers waiting on a failed load get: the loader's error, or a turn to load themselves.
    fn load<E>(
        &self,
        key: K,
        failures: Failures,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, Failure<E>>
    where
        E: Send + Sync + 'static,
    {
        let hash = self.hash(&key);
        let shard = self.shard(hash);
        let hash_of = |k: &K| self.hash(k);
        let reads = &self.inner.reads;
        let (node, flight, locked) = loop {
            // SAFETY: as in `get`.
            if let Some(value) = self.lookup(&key, true, |node, _| unsafe { (*node).clone_value() })
            {
                reads.hit();
                return Ok(value);
            }
            #[cfg(test)]
            self.run_hook(&self.inner.load_hook);
            let mut locked = shard.lock();
            if let Some(node) = locked.find_any(hash, &key) {
                // SAFETY: table nodes are live while the lock is held.
                if unsafe { (*node).is_ready() } && locked.is_expired(node) {
                    // Gone for readers already; removing it (reported as expired) lets a
                    // caller load a fresh value in its place. The listener hears of it as the
                    // lock is released, before this caller publishes a load of its own: a
                    // listener that reloads the key (`get_with`, which may use the cache) then
                    // becomes the loader itself, instead of finding this caller's load and
                    // taking itself for that load's `init`. So: unlock, and start again.
                    let _ = locked.remove_key(hash, &key, RemovalCause::Expired);
                    drop(locked);
                    continue;
                }
            }
            let other = match locked.find_any(hash, &key) {
                // Absent: this caller becomes the loader, without releasing the lock between the
                // check and the publication of its pending node.
                None => {
                    let flight = Arc::new(Flight::new());
                    let node = locked.begin_load(hash, key, Arc::clone(&flight), &hash_of);
                    break (node, flight, locked);
                }
                // A value arrived since the lookup. It is read as any hit is, by the lookup
                // the next turn makes: `V::clone` is user code, which must not run under the
                // shard lock (it may use the cache).
                // SAFETY: table nodes are live while the lock is held.
                Some(node) if unsafe { (*node).is_ready() } => {
                    drop(locked);
                    continue;
                }
                Some(node) => locked.flight_of(node),
            };
            drop(locked);
            let Some(other) = other else { continue };
            if other.is_loader() {
                // Counted first: the key holds no value for this call, which is a miss as the
                // loader's own call was, and a caller that catches the panic has made a call
                // that every other way out of here counts (`CacheStats::misses`).
                reads.miss();
                panic!(
                    "larder: get_with/try_get_with was called for a key from inside the `init` \
                     that is loading that same key; this would wait for itself forever"
                );
            }
            let outcome = other.wait();
            // The last holder of the flight drops the value it kept for the waiters, and that
            // `Drop` may panic: dropped before this caller's value is returned, not after (as
            // in `remove`).
            drop(other);
            match outcome {
                Outcome::Loaded(value) => {
                    reads.hit();
                    return Ok(value);
                }
                // A shared error goes only to callers that take shared errors of its type.
                Outcome::Failed(error) if matches!(failures, Failures::Shared) => {
                    if let Ok(error) = error.downcast::<E>() {
                        reads.miss();
                        return Err(Failure::Shared(error));
                    }
                }
                Outcome::Failed(_) | Outcome::Abandoned | Outcome::Loading => {}
            }
            // The load failed in a way this caller cannot report, or was abandoned: try again.
        };
        // This caller is the loader.
        reads.miss();
        let abandon = AbandonOnUnwind {
            shard,
            hash,
            node,
            flight: &flight,
        };
        // Unlocked only now, so that whatever panics as the lock is released (a listener or a
        // held value's `Drop`) abandons the load, its pending node removed and its waiters
        // woken, rather than left waiting for a loader that is gone. This unlock frees nothing
        // this thread removed earlier (`frees_later`): their `Drop` may load this very key.
        drop(locked);
        let result = init();
        match result {
            Ok(value) => {
                // User code still runs here (the weigher, `V::clone`): a panic in it abandons
                // the load as one in `init` does, so the guard stays until it is done.
                // SAFETY: the loader owns its pending node, whose key is immutable.
                let weight = self.weigh(unsafe { (*node).key() }, &value);
                let prefix = self.prefix(None);
                let (stored, shared) = (value.clone(), value.clone());
                std::mem::forget(abandon);
                let mut locked = shard.lock();
                // Storing can still run user code (`K::hash` of an eviction victim); if it
                // panics, the waiters must not wait forever. Declared after the lock, so that
                // it releases them before the unwinding unlock, as below.
                let end = EndFlightOnUnwind(&flight);
                // SAFETY: `node` came from `begin_load` on this shard; this is its one finish.
                unsafe { locked.finish_load(hash, node, stored, weight, prefix, &hash_of) };
                // The waiters go before the unlock, which tells the listener of what the load
                // evicted and frees what this thread removed earlier: user code that may wait
                // for a load of its own, which may be waiting for this one. Woken after it,
                // the waiters waited for that code, and such a listener for good
                // (`a_listener_may_wait_for_a_load_that_waited_for_the_load_it_heard_from` in
                // `tests/reentrancy.rs`). Finishing runs no user code, and takes the flight's
                // lock, which a waiter holds across user code (its `V::clone`) only once the
                // flight is finished, so never against this.
                flight.finish(Outcome::Loaded(shared));
                std::mem::forget(end);
                drop(locked);
                // As for a waiter, above.
                drop(flight);
                Ok(value)
            }
            Err(error) => {
                std::mem::forget(abandon);
                let (outcome, result) = match failures {
                    Failures::Shared => {
                        let error = std::sync::Arc::new(error);
                        let shared: std::sync::Arc<dyn Any + Send + Sync> = error.clone();
                        (Outcome::Failed(shared), Err(Failure::Shared(error)))
                    }
                    // As after a panic: each waiter tries again.
                    Failures::Unshared => (Outcome::Abandoned, Err(Failure::Own(error))),
                };
                let mut locked = shard.lock();
                // SAFETY: as above.
                unsafe { locked.abandon_load(hash, node) };
                // Before the unlock, as above, which frees what this thread removed earlier
                // (a value's `Drop` may panic there, and the waiters are released all the
                // same). A waiter that tries again waits for the lock, and then finds the
                // key's pending node gone. No user code runs from the lock to here.
                flight.finish(outcome);
                drop(locked);
                result
            }
        }
    }

    /// The number of entries: at most [`capacity`](Self::capacity) without a weigher. With
    /// expiry, entries past their deadline count until the janitor,
    /// [`run_pending_tasks`](Self::run_pending_tasks) or a write removes them, though no read
    /// returns them (moka's `entry_count` may count them too).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the cache holds no entries, expired ones not yet removed included (see
    /// [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The summed weight of the entries (their number, without a weigher), at most
    /// [`capacity`](Self::capacity).
    pub fn weighted_size(&self) -> u64 {
        let sum = (self.inner.shards.iter())
            .map(|s| s.weighted_size())
            .fold(0, u64::saturating_add);
        // Each shard keeps within its share, and the shares add up to the capacity. After
        // `share_capacity`, shares move between shards while they are written, and a sum read
        // one shard after another may then count a shard's weight from before it gave up
        // room and another's from after it took it: a total the cache never held (and, with
        // a capacity near `u64::MAX`, one past it: hence the saturating sum).
        sum.min(self.inner.capacity)
    }

    /// The maximum weighted size.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// Whether the cache weighs its entries ([`CacheBuilder::weigher`]). Of the caches the
    /// builder builds, only such a cache refuses an insert as too heavy: an unweighted entry
    /// weighs 1, and every shard holds at least 1. (`Cache::new(0)`, which stores nothing,
    /// refuses every insert whether it weighs them or not.)
    pub fn is_weighted(&self) -> bool {
        self.inner.weigher.is_some()
    }

    /// The eviction policy.
    pub fn policy(&self) -> Policy {
        self.inner.policy
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// A snapshot of the counters (see [`CacheStats`]).
    pub fn stats(&self) -> CacheStats {
        let (hits, misses) = self.inner.reads.sum();
        let mut stats = CacheStats {
            hits,
            misses,
            len: self.len() as u64,
            weighted_size: self.weighted_size(),
            capacity: self.capacity(),
            ..CacheStats::default()
        };
        for shard in self.inner.shards.iter() {
            let c = shard.counters();
            stats.inserts += c.inserts;
            stats.updates += c.updates;
            stats.evictions += c.evictions;
            stats.removals += c.removals;
            stats.expirations += c.expirations;
            stats.rejections += c.rejections;
        }
        stats
    }

    /// Sets every counter of [`stats`](Self::stats) back to zero.
    pub fn reset_stats(&self) {
        self.inner.reads.reset();
        self.each_shard(|mut locked| locked.reset_counters());
    }

    /// A weakly consistent iterator over clones of the entries.
    ///
    /// It walks the shards one at a time, copying each shard's entries without taking its lock,
    /// so writers are never blocked. It yields each key at most once. An entry inserted or
    /// removed during the walk may or may not be seen. With expiry, it never yields an entry
    /// whose deadline has passed, as no read returns one: an entry copied before its deadline
    /// and reached after it is looked up again and yielded only if it is still live (read
    /// during the walk, with a time-to-idle), with the value it has then.
    ///
    /// # Panics
    ///
    /// A `K::clone` or `V::clone` (or `K::hash`, `K::eq`) that panics while an entry is copied
    /// panics out of `next`, as it would out of `iter().cloned()` over a `HashMap`, and that
    /// entry is skipped. The iterator stays usable: a caller that catches the panic and calls
    /// `next` again gets the other entries, each still at most once. A shard is copied whole
    /// at once, so when several of its entries' clones panic, each panic comes out of its own
    /// call to `next`, before the shard's entries are yielded; an iterator dropped first drops
    /// the panics not yet passed on.
    pub fn iter(&self) -> Iter<'_, K, V, S>
    where
        K: Clone,
    {
        Iter {
            cache: self,
            next_shard: 0,
            batch: Vec::new().into_iter(),
            panics: Pending::default(),
        }
    }

    /// Checks every shard's internal structure (queues, index, counts), and that the shards'
    /// capacities add up to the cache's and their weights stay within it. For tests and
    /// fuzzing; takes every shard lock in turn.
    #[doc(hidden)]
    pub fn validate(&self) -> Result<(), String> {
        let hash_of = |k: &K| self.hash(k);
        let (mut total, mut split) = (0, 0);
        for (i, shard) in self.inner.shards.iter().enumerate() {
            let locked = shard.lock();
            locked
                .validate(&hash_of)
                .map_err(|e| format!("shard {i}: {e}"))?;
            total += locked.weighted();
            split += locked.capacity();
        }
        // Relaxed: see `Locked::refit_share`. Read after every shard's lock was released,
        // so a cache written meanwhile may show a sum torn by a share that moved.
        let spare = self.inner.spare.load(Ordering::Relaxed);
        if split + spare != self.inner.capacity {
            return Err(format!(
                "the shards' capacities add up to {split} and the spare room to {spare}, not \
                 the cache's {}",
                self.inner.capacity
            ));
        }
        if total > self.inner.capacity {
            return Err(format!(
                "weight {total} over capacity {}",
                self.inner.capacity
            ));
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn set_write_hook(&self, hook: Option<std::sync::Arc<dyn Fn() + Send + Sync>>) {
        *self.inner.write_hook.lock().unwrap() = hook;
    }

    #[cfg(test)]
    fn run_write_hook(&self) {
        self.run_hook(&self.inner.write_hook);
    }

    #[cfg(test)]
    pub(crate) fn set_load_hook(&self, hook: Option<std::sync::Arc<dyn Fn() + Send + Sync>>) {
        *self.inner.load_hook.lock().unwrap() = hook;
    }

    #[cfg(test)]
    fn run_hook(&self, slot: &std::sync::Mutex<Option<std::sync::Arc<dyn Fn() + Send + Sync>>>) {
        let hook = slot.lock().unwrap().clone();
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl<K, V, S> Inner<K, V, S> {
    /// [`Cache::len`], which `Debug` prints too.
    fn len(&self) -> usize {
        let sum: usize = self.shards.iter().map(|s| s.len()).sum();
        // Entries of weight 0 take no capacity, so a weighted cache may hold more than it.
        if self.weigher.is_some() {
            return sum;
        }
        // Unweighted, each entry weighs 1: the count is the weighted size, and a sum read one
        // shard after another while fitted shares move may count more than the cache ever
        // held, as in `weighted_size` (a cache of 4 said 5: `tests/loom.rs`,
        // `len_stays_within_the_capacity_while_fitted_shares_move`).
        sum.min(usize::try_from(self.capacity).unwrap_or(usize::MAX))
    }
}

impl<K: Eq, V: Clone, S> Inner<K, V, S> {
    /// The janitor's tick, and [`Cache::run_pending_tasks`]: expiry, then the frees this
    /// thread's limbo allows (`raw::limbo`), its open batch sealed first however few it holds,
    /// so a thread that removes entries and then has nothing to do for a while still frees
    /// them at its next tick or call.
    fn maintain(&self) {
        self.expire_due();
        crate::raw::limbo::seal_and_collect(&epoch::pin());
    }

    /// Expires what is due, shard by shard, a bounded batch per lock hold.
    fn expire_due(&self) {
        if self.expiry.is_none() {
            return;
        }
        for shard in self.shards.iter() {
            // At most a pass over the shard's segments as they are now, and a batch more: a
            // listener that writes something due at once (an entry it puts back with a zero
            // lifetime) keeps a segment due for as long as it does so, and would hold this call,
            // and the janitor's thread that serves every cache, for good. What is due after
            // that waits for the next call (reads never return it meanwhile).
            let mut segments = shard.segment_count();
            let mut batches = segments.div_ceil(EXPIRY_BATCH) + 1;
            while batches > 0 {
                batches -= 1;
                // A section that removed entries frees, once it has unlocked, what this thread
                // retired earlier (`shard::Locked`'s drop), and a value's `Drop` may panic
                // there. The section's work is whole by then. The panic is dropped, as
                // `seal_and_collect` drops those of the frees it runs: out of the janitor's
                // tick, it would end this cache's expiry for good (the janitor stops serving a
                // registrant that panics), and the values were another cache's, perhaps.
                let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    shard.lock().expire_due(EXPIRY_BATCH)
                }));
                match batch {
                    Ok(true) => {}
                    Ok(false) => break,
                    // Each panic came from a batch that has left the limbo: this ends.
                    Err(panic) => crate::unwind::quiet(Some(panic)),
                }
                // A table grown since (by a write between two batches) spread the entries of
                // each segment still due over many of its own, each due then: what was due at
                // the start gets a pass over the grown table. Growth ends (the capacity bounds
                // the table), so this does too.
                let grown = shard.segment_count();
                if grown > segments {
                    segments = grown;
                    batches = batches.max(grown.div_ceil(EXPIRY_BATCH) + 1);
                }
            }
        }
    }
}

impl<K, V, S> Maintain for Inner<K, V, S>
where
    K: Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    fn run_pending_tasks(&self) {
        self.maintain();
    }
}

/// What the callers waiting on a failed load get (see [`Cache::load`]).
#[derive(Clone, Copy)]
enum Failures {
    /// The loader's error, in one `Arc` for all (`try_get_with`).
    Shared,
    /// Nothing: each tries again (`try_get_with_unshared`).
    Unshared,
}

/// A failed load's error as [`Cache::load`] returns it: the loader's own, or one shared.
enum Failure<E> {
    Own(E),
    Shared(std::sync::Arc<E>),
}

impl<E> Failure<E> {
    /// The error for `try_get_with`, whose loads are all [`Failures::Shared`].
    fn into_shared(self) -> std::sync::Arc<E> {
        match self {
            Failure::Shared(e) => e,
            Failure::Own(e) => std::sync::Arc::new(e),
        }
    }

    /// The error for `try_get_with_unshared`, whose loads are all [`Failures::Unshared`]: such
    /// a load returns only its own errors, as a waiter takes no shared one and retries instead.
    fn into_own(self) -> E {
        match self {
            Failure::Own(e) => e,
            Failure::Shared(_) => unreachable!("an unshared load returned a shared error"),
        }
    }
}

/// Unpublishes a loader's pending node if its `init` unwinds, and wakes the waiters so one of
/// them can take over. Forgotten on the normal path.
struct AbandonOnUnwind<'a, K: Eq, V: Clone> {
    shard: &'a Shard<K, V>,
    hash: u64,
    node: *mut Node<K, V>,
    flight: &'a Flight<V>,
}

impl<K: Eq, V: Clone> Drop for AbandonOnUnwind<'_, K, V> {
    fn drop(&mut self) {
        // SAFETY: `node` came from `begin_load`; being unwound past, the loader makes no other
        // finish call.
        unsafe { self.shard.lock().abandon_load(self.hash, self.node) };
        self.flight.finish(Outcome::Abandoned);
    }
}

/// Ends a loader's flight as abandoned if the loader unwinds after its pending node left its
/// hands (while storing the value: `K::hash` of an eviction victim), so that the waiters retry
/// instead of waiting forever. Forgotten on the normal path.
struct EndFlightOnUnwind<'a, V: Clone>(&'a Flight<V>);

impl<V: Clone> Drop for EndFlightOnUnwind<'_, V> {
    fn drop(&mut self) {
        self.0.finish(Outcome::Abandoned);
    }
}

/// Shares of a cache's capacity fitted to a bulk load, from [`Cache::share_capacity`]: the
/// load goes in while this lives, and dropping it ends the load, giving back the room the
/// load did not fill.
///
/// The end is a drop, not a call of its own, so that no way out of the load skips it. As a
/// second call, a load that a panic ended (a weigher's, a key's `Hash`) never made it, and
/// the room fitted for what it did not load stayed with its shards, empty, for good: a shard
/// fitted above its even share gives back only the room its removals free, and a `clear`
/// frees only what it removes. A cache of 100 over 4 shards, fitted for 96 in one and
/// cleared, then refused an entry of 20 (`room_fitted_for_a_load_that_ends_early_goes_back`
/// in `tests/api.rs`). Once every load has ended, no share is above both its shard's even
/// share and what the shard holds, and every write keeps it so: a `clear` then leaves every
/// share at most even, and the shards below take the rest from the spare as they need it.
///
/// Only the latest fitting's shares end a load. A cache emptied and fitted again while
/// these live holds a later load, whose room these do not give back: they did, and the
/// later load, fitted for 96 in one shard of 100, evicted what it had room for
/// (`an_earlier_loads_end_leaves_a_later_fitting_alone`).
pub struct FittedShares<'a, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    cache: &'a Cache<K, V, S>,
    /// The fitting's number (`Inner::fittings`).
    fitting: u64,
}

impl<K, V, S> Drop for FittedShares<'_, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    fn drop(&mut self) {
        // Also while a panic of the load unwinds: the unlocks free nothing then (`Locked`'s
        // drop), and giving room back runs no user code, so nothing here panics in turn.
        self.cache.give_back_unloaded_room(self.fitting);
    }
}

impl<K, V, S> fmt::Debug for FittedShares<'_, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FittedShares")
            .field("cache", &self.cache)
            .field("fitting", &self.fitting)
            .finish()
    }
}

/// The iterator returned by [`Cache::iter`].
pub struct Iter<'a, K, V, S> {
    cache: &'a Cache<K, V, S>,
    next_shard: usize,
    /// The current shard's live entries, each with its deadline when copied ([`NEVER`]
    /// without expiry): the entries are yielded later, one by one, and must still be live then.
    batch: std::vec::IntoIter<(K, V, u64)>,
    /// The panics of the clones made while copying the current shard, each to come out of a
    /// call to `next` before the entries do; those left when the iterator is dropped are
    /// dropped quietly (see [`Pending`]).
    panics: Pending,
}

impl<K, V, S> Iterator for Iter<'_, K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            if let Some(panic) = self.panics.pop() {
                std::panic::resume_unwind(panic);
            }
            if let Some((key, value, deadline)) = self.batch.next() {
                let Some(expiry) = self.cache.inner.expiry.as_ref() else {
                    return Some((key, value));
                };
                if deadline > expiry.clock.horizon_ms() {
                    return Some((key, value));
                }
                // Due since the copy. A read during the walk may have pushed a time-to-idle
                // deadline back, which the copy cannot see: ask the cache, as a read would.
                match self.cache.peek(&key) {
                    Some(value) => return Some((key, value)),
                    None => continue,
                }
            }
            let shard = self.cache.inner.shards.get(self.next_shard)?;
            // One table snapshot per shard. A key removed and re-inserted during the walk can
            // sit in two slots of it (an earlier one, then a later one), so keys are deduplicated.
            let guard = epoch::pin();
            let expiry = self.cache.inner.expiry.as_ref();
            let horizon = expiry.map_or(0, |e| e.clock.horizon_ms());
            let mut seen: HashMap<K, (V, u64), ahash::RandomState> = HashMap::default();
            for ptr in shard.snapshot(&guard).nodes() {
                // SAFETY: nodes reached from the snapshot are protected by `guard`.
                let node = unsafe { &*ptr };
                // Readiness first: a pending node's stamp is written when it is published.
                if !node.is_ready() {
                    continue;
                }
                // SAFETY: as above, and `ptr` is as stored in the table. Settled as a read's
                // (`Expiry::is_live`): an entry this walk leaves out as idle out stays out.
                let live = expiry.is_none_or(|e| unsafe { e.is_live(ptr, horizon, None) });
                if live {
                    // SAFETY: as above.
                    let deadline = expiry.map_or(NEVER, |e| unsafe { e.deadline(ptr) });
                    // User code (the clones, `K::hash` and `K::eq`) may panic: that entry is
                    // left out, and its panic kept for the caller, once the rest of the shard
                    // is copied. Stopping there, the iterator would have to copy the shard
                    // again from the start, and would meet the same panic each time. `seen`
                    // stays usable: each clone is made before it changes, and std's map is
                    // left whole when a key's `Hash` or `Eq` panics.
                    let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        // SAFETY: READY was just observed with Acquire.
                        seen.entry(node.key().clone())
                            .or_insert_with(|| (unsafe { node.clone_value() }, deadline));
                    }));
                    if let Err(panic) = copied {
                        self.panics.push(panic);
                    }
                }
            }
            drop(guard);
            self.next_shard += 1;
            self.batch = seen
                .into_iter()
                .map(|(k, (v, deadline))| (k, v, deadline))
                .collect::<Vec<_>>()
                .into_iter();
        }
    }
}

impl<K, V, S> fmt::Debug for Iter<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("next_shard", &self.next_shard)
            .finish_non_exhaustive()
    }
}

impl<K, V, S> fmt::Debug for Cache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.inner.len())
            .field("capacity", &self.inner.capacity)
            .field("policy", &self.inner.policy)
            .field("shards", &self.inner.shards.len())
            .field("expiry", &self.inner.expiry)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Reads complete while a writer is stalled *holding the lock of the shard they read*.
    ///
    /// A write hook parks the writer inside the critical section until the reads are done. If
    /// any read path took the shard lock (or waited for the writer), the reads could never
    /// finish; the receive timeout turns that hang into a failure.
    #[test]
    fn reads_complete_while_a_writer_holds_the_shard_lock() {
        let plain: Cache<u64, u64> = Cache::builder()
            .max_capacity(1000)
            .shards(1)
            .build()
            .unwrap();
        reads_complete_under(plain);
        // With expiry the read path also checks deadlines and raises `touched`: still no lock.
        let expiring: Cache<u64, u64> = Cache::builder()
            .max_capacity(1000)
            .shards(1)
            .time_to_live(Duration::from_secs(3600))
            .time_to_idle(Duration::from_secs(3600))
            .without_janitor()
            .build()
            .unwrap();
        reads_complete_under(expiring);
    }

    /// `each_shard` does its work on every shard when it panics on each, the later panics'
    /// payloads panicking when dropped, and passes the first panic on. (Those payloads were
    /// dropped unguarded, and the first drop unwound out of the loop, the later shards undone.)
    #[test]
    fn each_shard_goes_on_when_a_later_panics_payload_panics_on_drop() {
        use crate::unwind::PayloadBomb;
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(1000)
            .shards(4)
            .build()
            .unwrap();
        let mut done = 0;
        let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.each_shard(|_| {
                done += 1;
                std::panic::panic_any(PayloadBomb(true));
            });
        }));
        assert_eq!(done, 4, "every shard done");
        let mut first = escaped.expect_err("the first panic passed on");
        assert!(PayloadBomb::defuse(&mut first), "the work's own payload");
    }

    /// A value whose `Clone` writes to its own cache: legal anywhere no shard lock is held.
    #[derive(Default)]
    struct Writes {
        cache: std::sync::Arc<std::sync::Mutex<Option<Cache<u64, Writes>>>>,
    }

    impl Clone for Writes {
        fn clone(&self) -> Self {
            let cache = self.cache.lock().unwrap().clone();
            if let Some(cache) = cache {
                cache.insert(2, Writes::default());
            }
            Writes {
                cache: std::sync::Arc::clone(&self.cache),
            }
        }
    }

    /// A load whose key gets a value between its lock-free lookup and its shard lock reads
    /// that value as a hit, and clones it with no lock held: the `Clone` here writes to the
    /// same shard, which under the lock would wait for the lock forever.
    #[test]
    fn a_load_that_finds_a_value_under_the_lock_clones_it_unlocked() {
        let cache: Cache<u64, Writes> = Cache::builder()
            .max_capacity(100)
            .shards(1)
            .build()
            .unwrap();
        let handle = Writes::default();
        *handle.cache.lock().unwrap() = Some(cache.clone());
        let writer = cache.clone();
        let value = Writes {
            cache: std::sync::Arc::clone(&handle.cache),
        };
        assert!(!cache.contains_key(&2));
        let once = std::sync::Mutex::new(Some(value));
        cache.set_load_hook(Some(std::sync::Arc::new(move || {
            // The key arrives after the lookup missed: the load finds it under the lock.
            if let Some(value) = once.lock().unwrap().take() {
                writer.insert(1, value);
            }
        })));
        let (done_tx, done_rx) = mpsc::channel();
        let loader = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let _ = cache.get_with(1, || unreachable!("1 arrives before the lock"));
                done_tx.send(()).unwrap();
            })
        };
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the load cloned the value under the shard lock");
        loader.join().unwrap();
        cache.set_load_hook(None);
        assert!(cache.contains_key(&2), "the clone's write went through");
        cache.validate().unwrap();
        // The values hold the cache: break the cycle.
        *handle.cache.lock().unwrap() = None;
    }

    fn reads_complete_under(cache: Cache<u64, u64>) {
        for k in 0..100 {
            cache.insert(k, k * 10);
        }
        let (locked_tx, locked_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let locked_tx = std::sync::Mutex::new(locked_tx);
        cache.set_write_hook(Some(std::sync::Arc::new(move || {
            locked_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
        })));
        let writer = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.insert(1000, 1))
        };
        locked_rx.recv().unwrap();
        assert_eq!(cache.shard_index(&5u64), cache.shard_index(&1000u64));

        let (done_tx, done_rx) = mpsc::channel();
        let reader = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for k in [5u64, 99, 12_345] {
                    answers.push((k, cache.get(&k), cache.peek(&k), cache.contains_key(&k)));
                    // `ttl` and `age` read the same way (answers checked elsewhere).
                    let _ = (cache.ttl(&k), cache.age(&k));
                }
                // The hit path of get_with does not lock either.
                let loaded = cache.get_with(7, || unreachable!("7 is present"));
                done_tx.send((answers, loaded)).unwrap();
            })
        };
        let (answers, loaded) = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("reads blocked behind the shard lock");
        assert_eq!(answers[0], (5, Some(50), Some(50), true));
        assert_eq!(answers[1], (99, Some(990), Some(990), true));
        assert_eq!(answers[2], (12_345, None, None, false));
        assert_eq!(loaded, 70);
        cache.set_write_hook(None);
        release_tx.send(()).unwrap();
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(cache.get(&1000), Some(1));
    }
}
