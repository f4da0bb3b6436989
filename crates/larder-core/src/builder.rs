//! The cache builder, its validation, and the eviction policy choice.

use crate::cache::{Cache, Weigher};
use crate::eviction::Eviction;
use crate::expiry::{millis, Expiry, Listener, Notify, Observer, RemovalCause};
use crate::raw::table::{slots_for, Table};
use crate::shard::Shard;
use crate::sync::CachePadded;
use crate::time::Clock;
use larder_janitor::Janitor;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::time::Duration;

/// Which entries leave first when the cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Policy {
    /// S3-FIFO (SOSP 2023) with a frequency-sketch admission check: new entries wait in a small
    /// FIFO and move to the main FIFO if read while there, or if a sketch of recent accesses
    /// says they are wanted more than main's next victim; the small FIFO's size adapts to the
    /// workload. Resists scans, one-hit wonders and loops larger than the cache, and is the
    /// better choice for most workloads.
    #[default]
    S3Fifo,
    /// CLOCK (second chance), an approximation of least-recently-used that lands within a few
    /// points of exact LRU. For workloads where recency is everything; a hit only sets a bit.
    Lru,
}

/// Each shard holds at least this much capacity when the shard count is chosen automatically,
/// so that sharding never costs a small cache hit ratio (see [`CacheBuilder::shards`]).
pub const MIN_AUTO_SHARD_CAPACITY: u64 = 1024;

/// The largest shard count chosen automatically.
const MAX_AUTO_SHARDS: usize = 64;

/// Shards per core when the count is chosen automatically. A write holds its shard's lock for
/// about 100 ns, and two writers that meet on a shard park; on two cores, inserting threads
/// ran at 0.31–0.34 of quick_cache's throughput with 8 shards, 0.40 with 16 and 0.39–0.45
/// with 32 (`docs/ARCHITECTURE.md`, "Capacity and shards"). A shard also has a fixed memory
/// cost (its structures at their least, and with expiry its timer wheel): a million-entry cache
/// with a time-to-live measured 55.90 bytes of overhead per entry with 8 shards, 55.94 with 32
/// and 55.99 with 64, against issue 3's budget of 56.
const SHARDS_PER_CORE: usize = 16;

/// The largest shard count [`CacheBuilder::shards`] accepts: far more than any machine has
/// cores to contend for them, and small enough that the shards' own memory stays under a
/// hundred megabytes. Before any entry, a cache of this many shards made 59 MiB resident
/// (946 bytes a shard), and 93 MiB with a time-to-live, whose timer wheels add about 540
/// bytes a shard (measured on 2026-12-06, `u64` keys and values).
pub const MAX_SHARDS: usize = 1 << 16;

/// Why [`CacheBuilder::build`] refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    kind: BuildErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BuildErrorKind {
    NoCapacity,
    ZeroCapacity,
    ZeroShards,
    MoreShardsThanCapacity {
        shards: usize,
        capacity: u64,
    },
    TooManyShards {
        shards: usize,
    },
    /// The index for `initial_capacity` entries could not be allocated.
    InitialCapacity {
        entries: usize,
    },
    /// The janitor's thread could not be started.
    Janitor {
        kind: std::io::ErrorKind,
        message: String,
    },
    /// A time-to-live or time-to-idle shorter than the clock's shortest lifetime, which could
    /// expire entries as they are written.
    ShortLifetime {
        setting: &'static str,
        lifetime: Duration,
        slack: Duration,
        shortest: Duration,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BuildErrorKind::NoCapacity => {
                f.write_str("no max_capacity was set: a Larder cache is always bounded")
            }
            BuildErrorKind::ZeroCapacity => f.write_str("max_capacity must be at least 1"),
            BuildErrorKind::ZeroShards => f.write_str("shards must be at least 1"),
            BuildErrorKind::MoreShardsThanCapacity { shards, capacity } => write!(
                f,
                "{shards} shards cannot split a capacity of {capacity}: each shard needs at \
                 least 1"
            ),
            BuildErrorKind::TooManyShards { shards } => write!(
                f,
                "{shards} shards is more than the {MAX_SHARDS} a cache may have"
            ),
            BuildErrorKind::InitialCapacity { entries } => write!(
                f,
                "an index for an initial capacity of {entries} entries could not be allocated"
            ),
            BuildErrorKind::Janitor { ref message, .. } => {
                write!(f, "the janitor's thread could not be started: {message}")
            }
            BuildErrorKind::ShortLifetime {
                setting,
                lifetime,
                slack,
                shortest,
            } => write!(
                f,
                "{setting} of {lifetime:?} is too short for the cache's clock, which may lag \
                 true time by {slack:?} at a write and at a read, and so could expire entries \
                 as they are written: use at least {shortest:?} (or, with Clock::real, a finer \
                 clock: Clock::precise)"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Configures and builds a [`Cache`].
///
/// ```
/// use larder_core::{Cache, Policy};
///
/// let cache: Cache<String, Vec<u8>> = Cache::builder()
///     .max_capacity(64 * 1024 * 1024)
///     .weigher(|k: &String, v: &Vec<u8>| (k.len() + v.len()) as u32)
///     .policy(Policy::S3Fifo)
///     .build()
///     .expect("a valid configuration");
/// cache.insert("greeting".to_string(), b"hello".to_vec());
/// assert_eq!(cache.weighted_size(), 13);
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct CacheBuilder<K, V, S = ahash::RandomState> {
    max_capacity: Option<u64>,
    weigher: Option<Weigher<K, V>>,
    policy: Policy,
    shards: Option<usize>,
    initial_capacity: usize,
    hasher: S,
    time_to_live: Option<Duration>,
    time_to_idle: Option<Duration>,
    per_entry_ttl: bool,
    clock: Option<Clock>,
    listener: Option<Listener<K, V>>,
    /// In the order they were set.
    observers: Vec<Observer<K>>,
    janitor: JanitorChoice,
    _types: PhantomData<fn(K, V)>,
}

/// Who runs a cache's expiry (see [`CacheBuilder::janitor`]).
#[derive(Clone, Debug)]
enum JanitorChoice {
    Shared,
    Given(Janitor),
    Manual,
}

impl<K, V> CacheBuilder<K, V, ahash::RandomState> {
    pub(crate) fn new() -> Self {
        CacheBuilder {
            max_capacity: None,
            weigher: None,
            policy: Policy::default(),
            shards: None,
            initial_capacity: 0,
            hasher: ahash::RandomState::new(),
            time_to_live: None,
            time_to_idle: None,
            per_entry_ttl: false,
            clock: None,
            listener: None,
            observers: Vec::new(),
            janitor: JanitorChoice::Shared,
            _types: PhantomData,
        }
    }
}

impl<K, V, S> CacheBuilder<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The most the cache holds: a number of entries, or with a [`weigher`](Self::weigher) a
    /// total weight. Required; no default.
    pub fn max_capacity(mut self, capacity: u64) -> Self {
        self.max_capacity = Some(capacity);
        self
    }

    /// Weighs each entry; capacity then bounds the sum of weights instead of the count.
    /// Default: every entry weighs 1.
    ///
    /// An entry heavier than its shard's share of the capacity is not stored (see
    /// [`shards`](Self::shards)); the default shard count does not look at weights, so for a
    /// cache whose entries may weigh a large part of it (in bytes, say), choose fewer shards:
    /// with 32, a cache of 64 MiB refuses an entry of 3 MiB. An entry of weight 0 takes no
    /// capacity, so the policy never evicts one to make room (as with quick_cache and
    /// Caffeine): it leaves by removal, expiry or `clear`, and `len()` may then exceed the
    /// capacity. Only entries that weigh something make room for others.
    ///
    /// The weigher runs once per insert or load, outside every lock, so it may read the cache.
    /// A write from it works too (Caffeine forbids one), but a durable cache (`larder`) weighs
    /// inside its write of the key, holding a stripe that such a write may need: there it must
    /// not write to the same cache.
    ///
    /// ```
    /// use larder_core::Cache;
    ///
    /// let weighs = |_: &u64, w: &u32| *w; // each value is its own weight
    /// let cache: Cache<u64, u32> = Cache::builder()
    ///     .max_capacity(64 << 20)
    ///     .shards(32) // shares of 2 MiB
    ///     .weigher(weighs)
    ///     .build()
    ///     .unwrap();
    /// cache.insert(1, 3 << 20);
    /// assert!(!cache.contains_key(&1));
    /// assert_eq!(cache.stats().rejections, 1);
    ///
    /// let cache: Cache<u64, u32> = Cache::builder().max_capacity(2).weigher(weighs).build().unwrap();
    /// for k in 0..10 {
    ///     cache.insert(k, 0);
    /// }
    /// for k in 10..13 {
    ///     cache.insert(k, 1); // the third evicts a weighed entry, never one of weight 0
    /// }
    /// assert!((0..10).all(|k| cache.contains_key(&k)));
    /// assert_eq!((cache.len(), cache.weighted_size(), cache.capacity()), (12, 2, 2));
    /// ```
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(std::sync::Arc::new(weigher));
        self
    }

    /// The eviction policy. Default: [`Policy::S3Fifo`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How many independently locked shards the cache has. Writers to different shards never
    /// contend; readers never lock at all.
    ///
    /// The capacity is split evenly over the shards (the remainder goes one unit each to the
    /// first shards), and each shard enforces its own share, which is what makes the bound
    /// hard under concurrent writers. So an entry heavier than one share is refused. (A bulk
    /// load into a new cache may share it out unevenly first: [`Cache::share_capacity`].)
    ///
    /// Default: sixteen per available core rounded up to a power of two, at most 64, but never so
    /// many that a shard holds less than [`MIN_AUTO_SHARD_CAPACITY`]: a cache of up to 2047
    /// entries has one shard, and loses no hit ratio to the split. At most [`MAX_SHARDS`].
    ///
    /// ```
    /// use larder_core::Cache;
    ///
    /// assert_eq!(Cache::<u64, u64>::new(2_047).shard_count(), 1);
    /// assert_eq!(Cache::<u64, u64>::new(2_048).shard_count(), 2); // on any number of cores
    /// let many: Cache<u64, u64> = Cache::builder().max_capacity(2_047).shards(8).build().unwrap();
    /// assert_eq!(many.shard_count(), 8);
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// How many entries to size the index for up front, saving rebuilds while the cache fills.
    /// Default: 0 (the index grows as needed). Each shard sizes for at most its share of the
    /// capacity; if even that cannot be allocated (the table, and with expiry the timer wheel
    /// sized from it), [`build`](Self::build) returns an error rather than aborting the
    /// process. What is allocated takes memory as entries fill it, not at the build.
    pub fn initial_capacity(mut self, entries: usize) -> Self {
        self.initial_capacity = entries;
        self
    }

    /// The hasher for keys. Default: `ahash::RandomState::new()` (randomly seeded per cache,
    /// which resists hash flooding). Any other hasher's answer is mixed before use (a multiply
    /// and two shifts per operation), since the cache takes the shard, the slot and the tags
    /// from different bits of it: so a hasher that leaves some bits empty (an identity hasher
    /// for integer keys, a 32-bit hash) still spreads keys over the shards. A hasher that
    /// gives many keys one answer still makes them collide.
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> CacheBuilder<K, V, S2> {
        CacheBuilder {
            max_capacity: self.max_capacity,
            weigher: self.weigher,
            policy: self.policy,
            shards: self.shards,
            initial_capacity: self.initial_capacity,
            hasher,
            time_to_live: self.time_to_live,
            time_to_idle: self.time_to_idle,
            per_entry_ttl: self.per_entry_ttl,
            clock: self.clock,
            listener: self.listener,
            observers: self.observers,
            janitor: self.janitor,
            _types: PhantomData,
        }
    }

    /// Entries expire this long after they were last written (inserted or replaced), like
    /// Python's `ExpiringDict(max_age_seconds=...)`. Reads of an expired entry miss at once;
    /// the janitor removes it within a tick. With [`time_to_idle`](Self::time_to_idle) too, the
    /// earlier deadline wins. Default: none.
    ///
    /// A cache with expiry carries an 8-byte stamp per entry (see `docs/ARCHITECTURE.md`).
    /// Lifetimes are kept to the millisecond (rounded down beyond 131 s, by at most 1/65,536),
    /// and with the real clock an entry may expire a few milliseconds early, never late
    /// ([`Clock`]).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Entries expire this long after they were last read or written. Reads that find an
    /// entry and count as an access (`get`, and the hits of `get_with` and its kin) push its
    /// deadline back, at most one write to the entry per millisecond; `peek`, `contains_key`
    /// and `iter`, which count no access, leave it where it was, as moka's do. Costs 8
    /// bytes per entry beyond [`time_to_live`](Self::time_to_live)'s stamp. Default: none.
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.time_to_idle = Some(tti);
        self
    }

    /// Lets [`Cache::insert_with_ttl`] give entries lifetimes of their own in a cache without a
    /// cache-wide [`time_to_live`](Self::time_to_live) (with one, or with a time-to-idle, it
    /// works already). Entries inserted without a lifetime never expire. Default: off.
    pub fn per_entry_ttl(mut self) -> Self {
        self.per_entry_ttl = true;
        self
    }

    /// The clock lifetimes are measured with. Default: [`Clock::precise`] if the
    /// time-to-live or time-to-idle is under [`PRECISE_BELOW`](crate::PRECISE_BELOW), else
    /// [`Clock::real`], the cheaper coarse one; tests pass a [`MockClock`](crate::MockClock)'s.
    /// A lifetime must be at least the clock's
    /// [`shortest_lifetime`](Clock::shortest_lifetime).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The janitor whose thread removes this cache's expired entries every tick, so memory is
    /// freed and listeners hear of expiry even if nothing touches the cache. Default:
    /// [`Janitor::shared`], one process-wide thread ticking every second; pass
    /// [`Janitor::dedicated`] for a thread (and tick) of the cache's own. Only a cache with
    /// expiry registers; it unregisters when its last handle is dropped. A tick holds the cache
    /// while it runs, so a last handle dropped during this cache's tick leaves the entries
    /// (and their drops) to the janitor thread, which frees them as the tick ends.
    pub fn janitor(mut self, janitor: Janitor) -> Self {
        self.janitor = JanitorChoice::Given(janitor);
        self
    }

    /// No janitor: expired entries stay (invisible) until a write meets them or
    /// [`Cache::run_pending_tasks`] is called. For tests on a [`MockClock`](crate::MockClock),
    /// and services that drive maintenance themselves.
    pub fn without_janitor(mut self) -> Self {
        self.janitor = JanitorChoice::Manual;
        self
    }

    /// Called once for every entry that leaves the cache, with its key, its value and why
    /// ([`RemovalCause`]). It runs on the thread that removed the entry (the janitor for
    /// expiry), after the shard's lock is released, so it may use the cache, even wait for a
    /// load ([`Cache::get_with`]): a load that evicts has woken the callers waiting for it by
    /// the time its listener is called. A panic in it is caught and dropped. Default: none.
    /// The entries still there when the last handle is dropped go with the cache unheard, as
    /// in moka.
    ///
    /// Each removal clones the key into the `Arc` and the value for the listener, both after
    /// the shard's lock is released.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(std::sync::Arc<K>, V, RemovalCause) + Send + Sync + 'static,
    ) -> Self
    where
        K: Clone,
    {
        self.listener = Some(std::sync::Arc::new(move |k: &K, v, cause| {
            listener(std::sync::Arc::new(k.clone()), v, cause)
        }));
        self
    }

    /// Called for every entry that leaves the cache with its key and why, before the
    /// [`eviction_listener`](Self::eviction_listener) (if there is one), on the same thread and
    /// under the same rules: after the shard's lock is released, panics caught. It is for
    /// layers built on the cache that must follow its contents (the durable cache in `larder`
    /// records evictions and expiry in its log through it). Default: none.
    ///
    /// Setting it again adds one, so that layers stack, and the one set last hears first: it
    /// hears every entry a write (or a batch of the janitor's expiry) removed before an
    /// observer set earlier, or the listener, hears the first. A layer sets its observer after
    /// those the user set on the builder it was given, so the user's code, an earlier observer
    /// as much as the listener, may act on the layer: drop a durable cache's last handle, whose
    /// close then finds every removal of the batch heard. A panic in one observer does not
    /// keep the others from being called.
    pub fn removal_observer(
        mut self,
        observer: impl Fn(&K, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.observers.push(std::sync::Arc::new(observer));
        self
    }

    /// Checks the configuration and builds the cache.
    ///
    /// # Errors
    /// No capacity, a zero capacity, zero shards, more shards than capacity units or than
    /// [`MAX_SHARDS`], a time-to-live or time-to-idle shorter than the clock's
    /// [`shortest_lifetime`](Clock::shortest_lifetime) (1 ms with a mock clock, 3 ms with the
    /// precise one, 11 ms with the coarse one on a kernel that ticks every 4 ms), an initial
    /// capacity whose index cannot be allocated, or, for a cache with expiry, a janitor thread
    /// that cannot be started.
    ///
    /// ```
    /// use larder_core::{Cache, MockClock, MAX_SHARDS};
    /// use std::time::Duration;
    ///
    /// let builder = || Cache::<u64, u64>::builder().without_janitor();
    /// assert!(builder().build().is_err()); // no capacity
    /// assert!(builder().max_capacity(0).build().is_err());
    /// assert!(builder().max_capacity(8).shards(0).build().is_err());
    /// assert!(builder().max_capacity(8).shards(9).build().is_err());
    /// assert!(builder().max_capacity(u64::MAX).shards(MAX_SHARDS + 1).build().is_err());
    /// // A lifetime under a second takes the precise clock, whose shortest is 3 ms.
    /// let ttl = |d| builder().max_capacity(8).time_to_live(d).build();
    /// assert!(ttl(Duration::from_micros(2_999)).is_err());
    /// assert!(ttl(Duration::from_millis(3)).is_ok());
    /// let mock = MockClock::new();
    /// let on_mock = builder().max_capacity(8).clock(mock.clock());
    /// assert!(on_mock.time_to_idle(Duration::from_millis(1)).build().is_ok());
    /// ```
    pub fn build(mut self) -> Result<Cache<K, V, S>, BuildError> {
        let err = |kind| Err(BuildError { kind });
        let capacity = match self.max_capacity {
            None => return err(BuildErrorKind::NoCapacity),
            Some(0) => return err(BuildErrorKind::ZeroCapacity),
            Some(c) => c,
        };
        let shards = match self.shards {
            Some(0) => return err(BuildErrorKind::ZeroShards),
            Some(n) if n as u64 > capacity => {
                return err(BuildErrorKind::MoreShardsThanCapacity {
                    shards: n,
                    capacity,
                })
            }
            Some(n) if n > MAX_SHARDS => return err(BuildErrorKind::TooManyShards { shards: n }),
            Some(n) => n,
            None => auto_shards(capacity),
        };
        let lifetimes = [
            ("time_to_live", self.time_to_live),
            ("time_to_idle", self.time_to_idle),
        ];
        let clock = self
            .clock
            .take()
            .unwrap_or_else(|| Clock::for_lifetime(lifetimes.iter().filter_map(|&(_, d)| d).min()));
        // A lifetime must outlast the clock's possible lag at the write and at the read
        // (`crate::time`), and leave the entry a millisecond.
        let shortest = clock.shortest_lifetime();
        for (setting, lifetime) in lifetimes {
            if let Some(lifetime) = lifetime.filter(|&d| d < shortest) {
                return err(BuildErrorKind::ShortLifetime {
                    setting,
                    lifetime,
                    slack: clock.slack(),
                    shortest,
                });
            }
        }
        self.clock = Some(clock);
        self.assemble(capacity, shards)
    }

    /// Builds a cache of `capacity` split over `shards` shards, without checks (`Cache::new`
    /// uses it for a capacity of 0, which stores nothing). Fails only if the initial
    /// capacity's index cannot be allocated or the janitor's thread cannot be started.
    pub(crate) fn assemble(
        self,
        capacity: u64,
        shards: usize,
    ) -> Result<Cache<K, V, S>, BuildError> {
        let err = |kind| BuildError { kind };
        // Even: no shard expects anything yet (with no weights the floors always fit: `n`
        // halves of an even share are at most the capacity).
        let shares = shares_for(capacity, &vec![0; shards]).expect("the even split fits");
        let initial = self.initial_capacity.div_ceil(shards);
        let clock = self.clock.unwrap_or_default();
        let expiry =
            (self.time_to_live.is_some() || self.time_to_idle.is_some() || self.per_entry_ttl)
                .then(|| Expiry {
                    clock: clock.clone(),
                    ttl_ms: self.time_to_live.map(millis),
                    tti_ms: self.time_to_idle.map(millis),
                });
        let notify = Notify::new(self.observers.clone(), self.listener.clone());
        let shards = shares
            .into_iter()
            .map(|cap| {
                let entries = initial.min(usize::try_from(cap).unwrap_or(usize::MAX));
                Some(CachePadded::new(Shard::new(
                    cap,
                    Eviction::new(self.policy, cap),
                    Table::try_new(slots_for(entries))?,
                    expiry.clone(),
                    notify.clone(),
                )?))
            })
            .collect::<Option<_>>()
            .ok_or(err(BuildErrorKind::InitialCapacity {
                entries: self.initial_capacity,
            }))?;
        let has_expiry = expiry.is_some();
        let cache = Cache::from_parts(
            shards,
            self.hasher,
            self.weigher,
            capacity,
            self.policy,
            expiry,
            clock,
        );
        // Loom models drive expiry by hand: a janitor's real thread has no place in them.
        if has_expiry && cfg!(not(larder_loom)) {
            let registered = match &self.janitor {
                JanitorChoice::Shared => cache.register_with(&Janitor::shared()),
                JanitorChoice::Given(janitor) => cache.register_with(janitor),
                JanitorChoice::Manual => Ok(()),
            };
            registered.map_err(|e| {
                err(BuildErrorKind::Janitor {
                    kind: e.kind(),
                    message: e.to_string(),
                })
            })?;
        }
        Ok(cache)
    }
}

/// How a capacity is shared out over shards that expect `weights` (one per shard): each shard
/// gets at least its weight (and at least 1 whenever the even share is), and the rest goes to
/// the smallest shares first, so the smallest share is as large as those bounds allow; `None`
/// if the bounds add up to more than the capacity.
///
/// With no weight anywhere that is the even split (the first `capacity % n` shards one
/// more), which every cache starts with. A known set of entries about to be loaded, spread
/// over the shards by a hasher seeded otherwise than the one of the cache they came from (a
/// durable cache's recovery), gets shares that hold all of it whenever the whole does, so the
/// load evicts nothing (`Cache::share_capacity`). A shard left smaller than its even share
/// takes room back as the cache is written (`Locked::refit_share`). At least 1 whenever the
/// even share is (a shard per unit of capacity at most), so a shard of a cache that does not
/// weigh always holds an entry.
pub(crate) fn shares_for(capacity: u64, weights: &[u64]) -> Option<Vec<u64>> {
    let n = weights.len() as u128;
    if n == 0 {
        return None;
    }
    let floor = u64::from(u128::from(capacity) >= n);
    let least: Vec<u64> = weights.iter().map(|&w| w.max(floor)).collect();
    let total = |level: u64| -> u128 { least.iter().map(|&m| u128::from(m.max(level))).sum() };
    if total(0) > u128::from(capacity) {
        return None;
    }
    // The highest level such that raising every share below it to it still fits: a binary
    // search, as `total` only grows with the level.
    let (mut fits, mut over) = (0u64, capacity.saturating_add(1));
    while over - fits > 1 {
        let mid = fits + (over - fits) / 2;
        if total(mid) <= u128::from(capacity) {
            fits = mid;
        } else {
            over = mid;
        }
    }
    let mut shares: Vec<u64> = least.iter().map(|&m| m.max(fits)).collect();
    // What is left is less than the number of shares at the level (one more each would not
    // fit): one more to each of the first of them.
    let mut left = u128::from(capacity) - total(fits);
    for share in shares.iter_mut().filter(|s| **s <= fits) {
        if left == 0 {
            break;
        }
        *share += 1;
        left -= 1;
    }
    debug_assert_eq!(left, 0);
    Some(shares)
}

/// The automatic shard count (see [`CacheBuilder::shards`]).
pub(crate) fn auto_shards(capacity: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let wanted = (cores * SHARDS_PER_CORE)
        .next_power_of_two()
        .min(MAX_AUTO_SHARDS);
    let affordable = (capacity / MIN_AUTO_SHARD_CAPACITY).max(1);
    wanted.min(usize::try_from(affordable).unwrap_or(usize::MAX))
}

impl<K, V, S> fmt::Debug for CacheBuilder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_capacity", &self.max_capacity)
            .field("weigher", &self.weigher.is_some())
            .field("policy", &self.policy)
            .field("shards", &self.shards)
            .field("initial_capacity", &self.initial_capacity)
            .field("time_to_live", &self.time_to_live)
            .field("time_to_idle", &self.time_to_idle)
            .field("per_entry_ttl", &self.per_entry_ttl)
            .field("eviction_listener", &self.listener.is_some())
            .field("removal_observers", &self.observers.len())
            .field("janitor", &self.janitor)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::shares_for;

    /// Every share at least its weight and at least 1 (the even share is), the shares adding
    /// up to the capacity, and the smallest as large as it can be: raising it would take the
    /// room from a share that is at its weight or no larger than it plus one.
    fn check(capacity: u64, weights: &[u64], shares: &[u64]) {
        assert_eq!(
            shares.iter().map(|&s| u128::from(s)).sum::<u128>(),
            u128::from(capacity)
        );
        for (&share, &weight) in shares.iter().zip(weights) {
            assert!(share >= weight.max(1), "{shares:?} for {weights:?}");
        }
        let least = *shares.iter().min().unwrap();
        for (&share, &weight) in shares.iter().zip(weights) {
            assert!(
                share <= weight.max(1) || share <= least + 1,
                "{shares:?} for {weights:?}: {share} is room the smallest could have"
            );
        }
    }

    #[test]
    fn no_weights_give_the_even_split() {
        assert_eq!(shares_for(10, &[0; 4]), Some(vec![3, 3, 2, 2]));
        assert_eq!(shares_for(8, &[0; 4]), Some(vec![2; 4]));
        assert_eq!(shares_for(1, &[0]), Some(vec![1]));
        assert_eq!(
            shares_for(u64::MAX, &[0; 2]),
            Some(vec![1 << 63, (1 << 63) - 1])
        );
        assert_eq!(shares_for(5, &[]), None);
    }

    #[test]
    fn uneven_weights_that_fit_get_room_and_the_rest_stays_even() {
        // A full cache: each share is its weight.
        assert_eq!(
            shares_for(100, &[30, 24, 26, 20]),
            Some(vec![30, 24, 26, 20])
        );
        // Room to spare goes to the smallest shares first.
        assert_eq!(
            shares_for(100, &[30, 10, 10, 10]),
            Some(vec![30, 24, 23, 23])
        );
        assert_eq!(shares_for(100, &[0, 0, 0, 40]), Some(vec![20, 20, 20, 40]));
        // Weights that leave no shard short keep the even split.
        assert_eq!(shares_for(100, &[25, 1, 25, 3]), Some(vec![25, 25, 25, 25]));
        // Far from even, and still all of it held: the smallest shares as large as the rest
        // of the room makes them.
        assert_eq!(shares_for(100, &[49, 38, 0, 0]), Some(vec![49, 38, 7, 6]));
        assert_eq!(shares_for(5, &[2, 1, 0, 0]), Some(vec![2, 1, 1, 1]));
    }

    #[test]
    fn weights_beyond_the_bounds_get_no_shares() {
        // More than the capacity.
        assert_eq!(shares_for(100, &[30, 30, 30, 11]), None);
        // Within it, but with no room left for an entry in each shard.
        assert_eq!(shares_for(4, &[2, 2, 0, 0]), None);
        assert_eq!(shares_for(100, &[u64::MAX, 0]), None);
    }

    #[test]
    fn shares_hold_their_bounds_for_many_weights() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let n = 1 + (next() % 9) as usize;
            let capacity = n as u64 + next() % 1000;
            let weights: Vec<u64> = (0..n)
                .map(|_| next() % (2 * capacity / n as u64 + 1))
                .collect();
            if let Some(shares) = shares_for(capacity, &weights) {
                check(capacity, &weights, &shares);
            } else {
                let least: u64 = weights.iter().map(|&w| w.max(1)).sum();
                assert!(least > capacity, "{weights:?} fit in {capacity}");
            }
        }
    }
}
