//! The cache builder, its validation, and the eviction policy choice.

use crate::cache::{Cache, Weigher};
use crate::eviction::Eviction;
use crate::shard::Shard;
use crate::sync::CachePadded;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

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
    MoreShardsThanCapacity { shards: usize, capacity: u64 },
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
    _types: PhantomData<fn(K, V)>,
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
            _types: PhantomData,
        }
    }
}

impl<K, V, S> CacheBuilder<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
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
    /// The weigher runs once per insert or load, outside every lock. An entry heavier than its
    /// shard's share of the capacity is not stored (see [`shards`](Self::shards)). An entry of
    /// weight 0 takes no capacity, so only entries that weigh something make room for others.
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
    /// hard under concurrent writers. So an entry heavier than one share is refused.
    ///
    /// Default: four per available core rounded up to a power of two, at most 64, but never so
    /// many that a shard holds less than [`MIN_AUTO_SHARD_CAPACITY`]: a cache of up to 2047
    /// entries has one shard, and loses no hit ratio to the split.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// How many entries to size the index for up front, saving rebuilds while the cache fills.
    /// Default: 0 (the index grows as needed).
    pub fn initial_capacity(mut self, entries: usize) -> Self {
        self.initial_capacity = entries;
        self
    }

    /// The hasher for keys. Default: `ahash::RandomState::new()` (randomly seeded per cache,
    /// which resists hash flooding).
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> CacheBuilder<K, V, S2> {
        CacheBuilder {
            max_capacity: self.max_capacity,
            weigher: self.weigher,
            policy: self.policy,
            shards: self.shards,
            initial_capacity: self.initial_capacity,
            hasher,
            _types: PhantomData,
        }
    }

    /// Checks the configuration and builds the cache.
    ///
    /// # Errors
    /// No capacity, a zero capacity, zero shards, or more shards than capacity units.
    pub fn build(self) -> Result<Cache<K, V, S>, BuildError> {
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
            Some(n) => n,
            None => auto_shards(capacity),
        };
        Ok(self.assemble(capacity, shards))
    }

    /// Builds a cache of `capacity` split over `shards` shards, without checks (`Cache::new`
    /// uses it for a capacity of 0, which stores nothing).
    pub(crate) fn assemble(self, capacity: u64, shards: usize) -> Cache<K, V, S> {
        let per_shard = capacity / shards as u64;
        let remainder = capacity % shards as u64;
        let initial = self.initial_capacity.div_ceil(shards);
        let shards = (0..shards)
            .map(|i| {
                let cap = per_shard + u64::from((i as u64) < remainder);
                CachePadded::new(Shard::new(cap, Eviction::new(self.policy, cap), initial))
            })
            .collect();
        Cache::from_parts(
            shards,
            self.hasher,
            self.weigher,
            capacity,
            Eviction::<K, V>::on_hit(self.policy),
            self.policy,
        )
    }
}

/// The automatic shard count (see [`CacheBuilder::shards`]).
pub(crate) fn auto_shards(capacity: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let wanted = (cores * 4).next_power_of_two().min(MAX_AUTO_SHARDS);
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
            .finish_non_exhaustive()
    }
}
