//! Operation sequences and reference models for testing Larder's cache engine.
//!
//! The fuzz target (`fuzz/fuzz_targets/cache_ops.rs`) and the property tests
//! (`tests/props.rs`) share this crate: both turn raw bytes into a [`Config`]
//! and a list of [`Op`]s with [`arbitrary`], then hand them to the three checkers.
//!
//! - [`check_unbounded`] runs the operations on caches whose capacity is above
//!   every possible key count, so eviction cannot trigger, and compares every
//!   answer with a [`std::collections::HashMap`] doing the same operations.
//! - [`check_bounded`] runs them on a small cache built from the [`Config`],
//!   where eviction and rejection happen all the time. There the answers cannot
//!   be predicted exactly, so it checks invariants that hold whatever the policy
//!   evicts, and calls the cache's own `validate()` after every operation.
//! - [`check_expiring`] runs them on the same small cache with a time-to-live,
//!   a mock clock that `Advance` moves, and an eviction listener. Every removal
//!   is heard, so the model knows exactly what is resident: it checks that no
//!   expired entry is ever read and that each removal is heard once, with the
//!   right cause.
//!
//! [`check_concurrent`] runs two or three threads' operations at once on one small cache, the
//! `concurrent_ops` fuzz target's input ([`ConcurrentInput`]). No order of them is known, so it
//! checks what every interleaving must respect: each value read was written to its key by the
//! operation it names, a thread never sees a writer's older value after a newer one, the bound
//! holds while writers run, loads hand back their own value or another write's, nothing is
//! stuck, and the quiet cache at the end holds only each writer's last word on a key.
//!
//! The durable cache has checks of its own, over a [`DurableInput`]: operations with reboots
//! (close or drop the cache, open its directory again) on a `larder::DurableCache`, run by
//! the `durable_model` fuzz target and the property tests alike.
//!
//! - [`check_durable_unbounded`] runs them with room for every key, and compares every answer
//!   and the whole contents, before and after every reboot, with a
//!   [`std::collections::BTreeMap`].
//! - [`check_durable_bounded`] runs them on a small cache that evicts, and checks that every
//!   value read is the latest written for its key, that removed and cleared keys stay gone,
//!   and that a reboot gives back exactly what the cache held before it.
//! - Both give the cache a time-to-live when the [`DurableConfig`] has one, on a mock clock
//!   the operations move and reboots keep, and track each entry's deadline: no read finds an
//!   entry past it, every read before it does, and a reboot gives back exactly the entries
//!   live when it reopens, also after time passed while the cache was closed.
//! - Both give the cache a weigher when the [`DurableConfig`] is weighted ([`durable_weight_of`]:
//!   weights from 0 to more than the capacity), and check that `weighted_size()` stays within
//!   the capacity, that an entry heavier than the whole capacity is refused and stays gone
//!   after a reboot, and that a reboot gives back exactly what the cache held, so the log
//!   recorded what the weights evicted.
//! - [`check_durable_concurrent`] deals them out to two threads that run at once on that small
//!   cache, compactions included, and checks that each value read was written by the operation
//!   it names and that, closed and opened again, the cache holds exactly what it held.
//!
//! ```
//! use larder_model::{check_bounded, check_unbounded, Config, Op, PolicyKind};
//!
//! let ops = [Op::Insert(1, 10), Op::Get(1), Op::Remove(1), Op::Get(1)];
//! check_unbounded(&ops).unwrap();
//! let config = Config { capacity: 2, policy: PolicyKind::Lru, shards: 1, weighted: false };
//! check_bounded(config, &ops).unwrap();
//! ```
//!
//! A failure is an `Err` naming the operation and what was wrong. Every failure
//! the fuzzer or proptest finds becomes a plain `#[test]` in `tests/props.rs`:
//! the [`Debug`] form of the config and the operations is valid Rust.

/// Returns `Err(format!(...))` from the enclosing function unless `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

mod bounded;
mod common;
pub mod concurrent;
mod durable;
pub mod durable_concurrent;
mod expiring;
mod unbounded;

use arbitrary::{Arbitrary, Unstructured};
use larder_core::{BuildError, Cache, CacheBuilder, Policy};

pub use bounded::check_bounded;
pub use concurrent::{check_concurrent, check_concurrent_expiring, ConcurrentInput, ThreadOp};
pub use durable::{
    check_durable_bounded, check_durable_unbounded, durable_weight_of, DurabilityKind,
    DurableConfig, DurableInput, DurableOp, DurableValue, ValueCodec, DURABLE_KEY_SPACE,
    DURABLE_MAX_CAPACITY, DURABLE_MAX_SHARDS, DURABLE_MIN_CAPACITY, DURABLE_SEGMENT_SIZE,
    DURABLE_WEIGHTS,
};
pub use durable_concurrent::{check_durable_concurrent, DURABLE_REPEAT_TO};
pub use expiring::{check_expiring, TIME_TO_LIVE_MS};
pub use unbounded::check_unbounded;

/// Keys are `u8`, and generated ones lie below this, so operations collide.
///
/// Hand-written operations may use any `u8`: both checkers accept the whole range.
pub const KEY_SPACE: u8 = 64;

/// The largest capacity [`Config`] generates.
pub const MAX_CAPACITY: u64 = 64;

/// The most shards [`Config`] generates.
pub const MAX_SHARDS: usize = 4;

/// A cache key.
pub type Key = u8;

/// A cached value. In a weighted cache it also sets the entry's weight, see [`weight_of`].
pub type Value = u32;

/// The cache type every checker runs.
pub type ModelCache = Cache<Key, Value>;

/// One call on the cache.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `get(&key)`: counts a hit or a miss.
    Get(#[arbitrary(with = arbitrary_key)] Key),
    /// `peek(&key)`: like `get`, but counts no access.
    Peek(#[arbitrary(with = arbitrary_key)] Key),
    /// `contains_key(&key)`.
    ContainsKey(#[arbitrary(with = arbitrary_key)] Key),
    /// `insert(key, value)`.
    Insert(#[arbitrary(with = arbitrary_key)] Key, Value),
    /// `remove(&key)`, which returns the removed value.
    Remove(#[arbitrary(with = arbitrary_key)] Key),
    /// `invalidate(&key)`, which returns nothing.
    Invalidate(#[arbitrary(with = arbitrary_key)] Key),
    /// `clear()`.
    Clear,
    /// `get_with(key, || value)`: loads `value` if the key is absent.
    GetWith(#[arbitrary(with = arbitrary_key)] Key, Value),
    /// `try_get_with(key, || result)`: loads and caches `value` if the key is
    /// absent and the result is `Ok(value)`; an `Err` is returned, not cached.
    TryGetWith(#[arbitrary(with = arbitrary_key)] Key, Result<Value, ()>),
    /// `insert_with_ttl(key, value, ttl)`, `ttl` in milliseconds. Caches without expiry hand
    /// the entry back.
    InsertWithTtl(#[arbitrary(with = arbitrary_key)] Key, Value, u8),
    /// Moves [`check_expiring`]'s mock clock forward this many milliseconds; nothing else
    /// has a clock to move.
    Advance(u8),
    /// `run_pending_tasks()`: removes what has expired (nothing, without expiry).
    RunPendingTasks,
}

impl Op {
    /// The key the operation touches, if any.
    pub fn key(&self) -> Option<Key> {
        match *self {
            Op::Get(key)
            | Op::Peek(key)
            | Op::ContainsKey(key)
            | Op::Insert(key, _)
            | Op::Remove(key)
            | Op::Invalidate(key)
            | Op::GetWith(key, _)
            | Op::TryGetWith(key, _)
            | Op::InsertWithTtl(key, _, _) => Some(key),
            Op::Clear | Op::Advance(_) | Op::RunPendingTasks => None,
        }
    }
}

fn arbitrary_key(u: &mut Unstructured<'_>) -> arbitrary::Result<Key> {
    u.int_in_range(0..=KEY_SPACE - 1)
}

/// The eviction policy, mirrored from [`larder_core::Policy`] so it can be generated.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// [`Policy::S3Fifo`].
    S3Fifo,
    /// [`Policy::Lru`].
    Lru,
}

impl From<PolicyKind> for Policy {
    fn from(kind: PolicyKind) -> Self {
        match kind {
            PolicyKind::S3Fifo => Policy::S3Fifo,
            PolicyKind::Lru => Policy::Lru,
        }
    }
}

/// How [`check_bounded`] builds its cache.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `max_capacity`: in `1..=MAX_CAPACITY`, so eviction is frequent.
    #[arbitrary(with = |u: &mut Unstructured<'_>| u.int_in_range(1..=MAX_CAPACITY))]
    pub capacity: u64,
    /// The eviction policy.
    pub policy: PolicyKind,
    /// `shards`: in `1..=MAX_SHARDS`. May exceed `capacity`, which the builder
    /// must refuse.
    #[arbitrary(with = |u: &mut Unstructured<'_>| u.int_in_range(1..=MAX_SHARDS))]
    pub shards: usize,
    /// Whether entries weigh [`weight_of`] their value instead of 1.
    pub weighted: bool,
}

impl Config {
    /// Builds the cache this config describes.
    pub fn build(&self) -> Result<ModelCache, BuildError> {
        self.build_with(|builder| builder)
    }

    /// Builds the cache this config describes with the settings `more` adds (an expiry, a
    /// clock, a listener).
    pub fn build_with(
        &self,
        more: impl FnOnce(CacheBuilder<Key, Value>) -> CacheBuilder<Key, Value>,
    ) -> Result<ModelCache, BuildError> {
        let builder = more(
            Cache::builder()
                .max_capacity(self.capacity)
                .policy(self.policy.into())
                .shards(self.shards),
        );
        if self.weighted {
            builder
                .weigher(|_: &Key, value: &Value| weight_of(*value))
                .build()
        } else {
            builder.build()
        }
    }

    /// [`build_with`](Self::build_with), checked against the builder's documented rule that
    /// a config with more shards than capacity units is refused: `Ok(None)` when it was,
    /// rightly, and an error when it was wrongly accepted or wrongly refused.
    pub(crate) fn build_checked(
        &self,
        more: impl FnOnce(CacheBuilder<Key, Value>) -> CacheBuilder<Key, Value>,
    ) -> Result<Option<ModelCache>, String> {
        let too_many_shards = self.capacity < self.shards as u64;
        match self.build_with(more) {
            Ok(_) if too_many_shards => Err("build() accepted more shards than capacity".into()),
            Ok(cache) => Ok(Some(cache)),
            Err(_) if too_many_shards => Ok(None),
            Err(error) => Err(format!("build() failed: {error}")),
        }
    }

    /// The weight the cache gives an entry holding `value`.
    pub fn weight(&self, value: Value) -> u64 {
        if self.weighted {
            u64::from(weight_of(value))
        } else {
            1
        }
    }

    /// The most entries the cache may hold: its capacity, unless it weighs them (entries of
    /// weight 0 take no capacity, so then the bound is on the weight alone).
    pub fn most_entries(&self) -> u64 {
        if self.weighted {
            u64::MAX
        } else {
            self.capacity
        }
    }

    /// Whether an entry of `weight` fits the shard it lands in.
    ///
    /// The capacity is split evenly over the shards, the remainder spread over
    /// some of them, and which shard a key lands in is the cache's business. So
    /// a weight between the smallest and the largest shard's capacity may go
    /// either way.
    pub fn fit(&self, weight: u64) -> Fit {
        let shards = self.shards as u64;
        let smallest = self.capacity / shards;
        let largest = self.capacity.div_ceil(shards);
        if weight <= smallest {
            Fit::Fits
        } else if weight > largest {
            Fit::Rejected
        } else {
            Fit::Unknown
        }
    }
}

/// The weigher of a weighted cache: 0, 1, 2 or 4, by the value's two low bits. An entry of
/// weight 0 takes no capacity, and the policy never evicts it to make room.
pub fn weight_of(value: Value) -> u32 {
    [0, 1, 2, 4][(value & 3) as usize]
}

/// Whether an entry fits its shard, as far as the model can tell; see [`Config::fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It fits every shard: the cache must accept it.
    Fits,
    /// It fits some shards but not others.
    Unknown,
    /// It fits no shard: the cache must reject it.
    Rejected,
}

/// A whole test case: the cache to build (`C`) and the operations to run on it (`O`).
///
/// Its [`Arbitrary::arbitrary_take_rest`], which is what `fuzz_target!` calls,
/// decodes operations until the bytes run out, so no byte is spent on saying
/// whether another operation follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case<C, O> {
    /// The configuration.
    pub config: C,
    /// The operations, in order.
    pub ops: Vec<O>,
}

/// A test case of the in-memory cache: the `cache_ops` fuzz target's input.
pub type Input = Case<Config, Op>;

impl<'a, C: Arbitrary<'a>, O: Arbitrary<'a>> Arbitrary<'a> for Case<C, O> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Case {
            config: u.arbitrary()?,
            ops: u.arbitrary()?,
        })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        let config = u.arbitrary()?;
        let mut ops = Vec::new();
        // Each operation takes at least one byte, so this ends.
        while !u.is_empty() {
            ops.push(u.arbitrary()?);
        }
        Ok(Case { config, ops })
    }
}

impl<C, O> Case<C, O>
where
    Self: for<'a> Arbitrary<'a>,
{
    /// Decodes an input the way the fuzz target does, for replaying a fuzzer
    /// artifact in a test.
    pub fn decode(bytes: &[u8]) -> arbitrary::Result<Self> {
        Self::arbitrary_take_rest(Unstructured::new(bytes))
    }
}

impl Input {
    /// Runs the three checkers: [`check_unbounded`] on the operations alone, then
    /// [`check_bounded`] and [`check_expiring`] with the config.
    pub fn check(&self) -> Result<(), String> {
        check_unbounded(&self.ops)?;
        check_bounded(self.config, &self.ops)?;
        check_expiring(self.config, &self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3fifo(capacity: u64, shards: usize, weighted: bool) -> Config {
        Config {
            capacity,
            policy: PolicyKind::S3Fifo,
            shards,
            weighted,
        }
    }

    #[test]
    fn weights_include_zero() {
        let weights: Vec<u32> = [0, 1, 2, 3, 4, Value::MAX - 1, Value::MAX]
            .into_iter()
            .map(weight_of)
            .collect();
        assert_eq!(weights, [0, 1, 2, 4, 0, 2, 4]);
        assert_eq!(s3fifo(8, 1, false).weight(3), 1);
        assert_eq!(s3fifo(8, 1, true).weight(3), 4);
        assert_eq!(s3fifo(8, 1, true).weight(4), 0);
    }

    #[test]
    fn fit_compares_with_the_smallest_and_largest_shard() {
        // Shards of 3, 3 and 2.
        let uneven = s3fifo(8, 3, true);
        assert_eq!(uneven.fit(2), Fit::Fits);
        assert_eq!(uneven.fit(3), Fit::Unknown);
        assert_eq!(uneven.fit(4), Fit::Rejected);
        // Even shards leave no doubt.
        let even = s3fifo(8, 4, true);
        assert_eq!(even.fit(2), Fit::Fits);
        assert_eq!(even.fit(3), Fit::Rejected);
    }

    #[test]
    fn decoding_stays_in_range_and_uses_every_byte() {
        let input = Input::decode(&[]).unwrap();
        assert!(input.ops.is_empty());
        assert!((1..=MAX_CAPACITY).contains(&input.config.capacity));
        assert!((1..=MAX_SHARDS).contains(&input.config.shards));

        let bytes: Vec<u8> = (0..=255).cycle().take(4096).collect();
        let input = Input::decode(&bytes).unwrap();
        assert!(input.ops.len() > 4096 / 16, "{} ops", input.ops.len());
        for op in &input.ops {
            assert!(op.key().is_none_or(|key| key < KEY_SPACE), "{op:?}");
        }
    }

    #[test]
    fn an_empty_run_passes() {
        check_unbounded(&[]).unwrap();
        check_bounded(s3fifo(1, 1, false), &[]).unwrap();
        check_expiring(s3fifo(1, 1, false), &[]).unwrap();
    }
}
