//! Memoization: the [`memoize`](crate::memoize) attribute's support, and the idioms it does
//! not cover.
//!
//! # Memoizing a function
//!
//! Put `#[larder::memoize]` over a free function, and its results are cached in a
//! `&'static` [`Cache`] that `<name>_cache()` returns (see [`memoize`](crate::memoize) for the
//! options). That cache is an ordinary one: `stats()`, `clear()`, `invalidate(&key)`,
//! `iter()`. Its `clear()` keeps the counters, as any cache's does; the `<name>_cache_clear()`
//! written beside it is Python's `cache_clear()`, which zeroes them too. (With `key = <expr>`
//! and no type written for it, the attribute cannot name the cache's type, and
//! `<name>_cache()` returns a `&'static dyn` [`MemoCache`] instead: `stats()`, `clear()`,
//! `len()`, and the typed cache through [`MemoCache::as_any`].)
//!
//! # Memoized properties
//!
//! Python's "memoized property" (compute once per object, `del` to recompute) needs no cache
//! engine: [`std::sync::OnceLock`] is one slot with single-flight initialisation, and Larder does
//! not reinvent it.
//!
//! ```
//! use std::sync::OnceLock;
//!
//! struct Thing {
//!     n: u64,
//!     prime: OnceLock<u64>,
//! }
//!
//! impl Thing {
//!     /// The `n`-th prime, computed on the first call and stored in the object.
//!     fn prime(&self) -> u64 {
//!         *self.prime.get_or_init(|| nth_prime(self.n))
//!     }
//!
//!     /// Forgets the stored value, so the next `prime()` computes it again (Python's `del`).
//!     fn reset(&mut self) {
//!         self.prime.take();
//!     }
//! }
//!
//! fn nth_prime(n: u64) -> u64 {
//!     (2..).filter(|k| (2..*k).take_while(|d| d * d <= *k).all(|d| k % d != 0)).nth(n as usize - 1).unwrap()
//! }
//!
//! let mut thing = Thing { n: 100, prime: OnceLock::new() };
//! assert_eq!(thing.prime(), 541);
//! assert_eq!(thing.prime(), 541); // stored: not computed again
//! thing.reset();
//! assert_eq!(thing.prime(), 541); // computed again
//! ```
//!
//! `OnceLock` lives in the object, so the value goes when the object goes, and `take()` needs
//! `&mut self`, which proves no other thread is reading it. When the objects are shared across
//! threads and the values should be shared, bounded or dropped independently of the objects,
//! key a [`Cache`] by the object's identity and use [`Cache::get_with`]:
//!
//! ```
//! use larder::Cache;
//! use std::sync::{Arc, LazyLock};
//!
//! struct Document { id: u64, text: String }
//!
//! static WORD_COUNTS: LazyLock<Cache<u64, usize>> = LazyLock::new(|| Cache::new(10_000));
//!
//! impl Document {
//!     fn word_count(&self) -> usize {
//!         WORD_COUNTS.get_with(self.id, || self.text.split_whitespace().count())
//!     }
//!     fn edited(&self) {
//!         WORD_COUNTS.invalidate(&self.id);
//!     }
//! }
//!
//! let doc = Arc::new(Document { id: 1, text: "a memoized property".into() });
//! assert_eq!(doc.word_count(), 3);
//! doc.edited();
//! ```

use crate::{Cache, CacheStats, Policy};
use std::any::Any;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;
use std::time::Duration;

/// What a part of a memoized function's key must be. Implemented for every
/// `Clone + Hash + Eq + Send + Sync + 'static` type; the attribute checks each argument it
/// keys by against it, so that a type that falls short is reported on that argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a memoized function's key",
    label = "this argument is part of the key, which needs `Clone + Hash + Eq + Send + Sync + 'static`",
    note = "derive `Clone, Hash, PartialEq, Eq` for it, or leave it out of the key with \
            `key = (other, args)` or build the key yourself with `key: Type = <expr>`"
)]
pub trait KeyPart: Clone + Hash + Eq + Send + Sync + 'static {}

impl<T: Clone + Hash + Eq + Send + Sync + 'static> KeyPart for T {}

/// What the `T` of a memoized function's `&T` key argument must be: something the key can hold
/// an owned copy of, `T::to_owned()` (a `String` for a `&str`, a `Vec<U>` for a `&[U]`, a clone
/// for any `T: Clone`), and that copy must then be a [`KeyPart`]. Implemented for every
/// `ToOwned` type.
///
/// The attribute builds a `&T` argument's key part through this trait rather than `ToOwned`
/// itself, and checks it before anything else ([`BorrowedKeyPartCheck`]), so that a `T` with no
/// owned copy (one that is not `Clone`) is first reported with this message, which says what to
/// do. The compiler's own, "`T: ToOwned` is not satisfied", pointed at generated code and
/// suggested borrowing the argument's pattern.
#[diagnostic::on_unimplemented(
    message = "`&{Self}` cannot be part of a memoized function's key: the key holds an owned copy, `{Self}::to_owned()`, and `{Self}` is not `Clone`",
    label = "this argument is part of the key, which needs `{Self}: Clone + Hash + Eq + Send + Sync + 'static`",
    note = "derive `Clone, Hash, PartialEq, Eq` for it, or leave it out of the key with \
            `key = (other, args)` or build the key yourself with `key: Type = <expr>`"
)]
pub trait BorrowedKeyPart {
    /// The owned copy the key holds.
    type Owned;
    /// Makes the owned copy: `ToOwned::to_owned`.
    fn to_key_part(&self) -> Self::Owned;
}

impl<T: ?Sized + ToOwned> BorrowedKeyPart for T {
    type Owned = T::Owned;
    fn to_key_part(&self) -> T::Owned {
        self.to_owned()
    }
}

/// The attribute's first check of a `&T` key argument: it implements this trait, for a type of
/// its own, before the function, so that a `T` that is no [`BorrowedKeyPart`] is reported
/// first, and with that trait's message. The compiler checks the items' signatures before the
/// functions' bodies, and a failed `<T as BorrowedKeyPart>::Owned` in a signature (the
/// accessor's) it reports with its own message; a failed bound of an impl's trait, with the
/// bound's.
#[doc(hidden)]
pub trait BorrowedKeyPartCheck<T: ?Sized + BorrowedKeyPart> {}

/// What a memoized function's cached value must be. Implemented for every
/// `Clone + Send + Sync + 'static` type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached by #[memoize]",
    label = "the cached value needs `Clone + Send + Sync + 'static`",
    note = "wrap it in an `Arc` (then a hit clones a pointer), or derive `Clone` for it"
)]
pub trait Value: Clone + Send + Sync + 'static {}

impl<T: Clone + Send + Sync + 'static> Value for T {}

/// The attribute's check that `T` can be part of a key. Naming this function costs nothing at
/// run time; it exists for its bound.
#[doc(hidden)]
pub fn key_part<T: KeyPart>() {}

/// The attribute's check that `T` can be cached.
#[doc(hidden)]
pub fn value<T: Value>() {}

/// The memoized call for a plain value: [`Cache::get_with`], under the attribute's bounds, so
/// that a key or value type that falls short is reported with their messages.
#[doc(hidden)]
#[inline]
pub fn get_with<K: KeyPart, V: Value>(cache: &Cache<K, V>, key: K, init: impl FnOnce() -> V) -> V {
    cache.get_with(key, init)
}

/// The memoized call for a `Result`: [`Cache::try_get_with_unshared`]. `E` has no bounds
/// (`Box<dyn Error>` is neither `Send` nor `Sync`): an error goes back only to the caller whose
/// `init` returned it, so it waits here, on this caller's stack, and the cache is told only
/// that the load failed.
#[doc(hidden)]
#[inline]
pub fn try_get_with<K: KeyPart, V: Value, E>(
    cache: &Cache<K, V>,
    key: K,
    init: impl FnOnce() -> Result<V, E>,
) -> Result<V, E> {
    /// What the cache sees of a failed load.
    struct Failed;
    let mut error = None;
    let loaded = cache.try_get_with_unshared(key, || {
        init().map_err(|e| {
            error = Some(e);
            Failed
        })
    });
    loaded.map_err(|Failed| match error {
        Some(e) => e,
        // An unshared failure is returned only to the caller whose own `init` failed.
        None => unreachable!("try_get_with_unshared failed without this caller's init failing"),
    })
}

/// The memoized call for an `Option` with `cache_none = false`: [`Cache::optionally_get_with`].
#[doc(hidden)]
#[inline]
pub fn optionally_get_with<K: KeyPart, V: Value>(
    cache: &Cache<K, V>,
    key: K,
    init: impl FnOnce() -> Option<V>,
) -> Option<V> {
    cache.optionally_get_with(key, init)
}

/// Builds a memoized function's cache: `capacity` entries (`None`: unbounded), `policy`, and
/// a time-to-live if given. The attribute validated the options at compile time.
///
/// With a time-to-live, the cache registers with the shared janitor, whose thread the system
/// may refuse to start (a process at its thread or memory limit). The function must still
/// work, since it is called like any other: the cache is then built without a janitor, which
/// costs only the background removal of what expired (a read of an expired result still
/// misses and computes it again, and capacity still bounds the cache), and the refusal is
/// logged.
#[doc(hidden)]
pub fn build<K: KeyPart, V: Value>(
    capacity: Option<u64>,
    policy: Policy,
    ttl: Option<Duration>,
) -> Cache<K, V> {
    let builder = || {
        let builder = Cache::builder()
            .max_capacity(capacity.unwrap_or(u64::MAX))
            .policy(policy);
        match ttl {
            Some(ttl) => builder.time_to_live(ttl),
            None => builder,
        }
    };
    let refused = match builder().build() {
        Ok(cache) => return cache,
        Err(e) => e,
    };
    tracing::warn!(
        error = %refused,
        "a memoized function's cache runs without a janitor: expired results are removed \
         only when read or evicted"
    );
    match builder().without_janitor().build() {
        Ok(cache) => cache,
        // The attribute refuses a zero capacity and a ttl under 3 ms, the options build could
        // reject; the other settings are the builder's defaults, and without a janitor no
        // thread is started.
        Err(e) => unreachable!("#[memoize] validated its options: {e}"),
    }
}

/// What a memoized function's accessor returns when the attribute cannot name the key's type
/// (`key = <expr>` with an expression other than arguments): Python's `cache_info()` and
/// `cache_clear()`, and the typed [`Cache`] behind them through [`as_any`](Self::as_any).
///
/// ```
/// #[larder::memoize(key = word.to_lowercase())]
/// fn shout(word: &str) -> String {
///     word.to_uppercase()
/// }
///
/// shout("Hello");
/// shout("hELLO");
/// assert_eq!(shout_cache().stats().hits, 1);
/// let typed = shout_cache().as_any().downcast_ref::<larder::Cache<String, String>>();
/// assert_eq!(typed.and_then(|c| c.get("hello")).as_deref(), Some("HELLO"));
/// ```
pub trait MemoCache: Send + Sync {
    /// Hits, misses, size and capacity (Python's `cache_info()`).
    fn stats(&self) -> CacheStats;
    /// Forgets every result (with [`reset_stats`](Self::reset_stats), Python's `cache_clear()`).
    fn clear(&self);
    /// Zeroes the counters.
    fn reset_stats(&self);
    /// The number of results held.
    fn len(&self) -> usize;
    /// Whether no result is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The most results it holds.
    fn capacity(&self) -> u64;
    /// The [`Cache`] itself, to downcast to `Cache<K, V>` (before the first call, when there
    /// is no cache yet, something that downcasts to no cache).
    fn as_any(&self) -> &dyn Any;
}

impl<K, V, S> MemoCache for Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn stats(&self) -> CacheStats {
        Cache::stats(self)
    }
    fn clear(&self) {
        Cache::clear(self);
    }
    fn reset_stats(&self) {
        Cache::reset_stats(self);
    }
    fn len(&self) -> usize {
        Cache::len(self)
    }
    fn capacity(&self) -> u64 {
        Cache::capacity(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The cache of a memoized function whose key type only the compiler knows: empty until the
/// first call, which builds the cache for the key type it has (see [`MemoCache`]).
#[doc(hidden)]
pub struct Slot {
    cache: OnceLock<Box<dyn MemoCache>>,
    /// The capacity the cache will have (`None`: unbounded), reported before it exists.
    capacity: Option<u64>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("built", &self.cache.get().is_some())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Slot {
    /// An empty slot for a cache of `capacity` entries.
    pub const fn new(capacity: Option<u64>) -> Slot {
        Slot {
            cache: OnceLock::new(),
            capacity,
        }
    }
}

impl MemoCache for Slot {
    fn stats(&self) -> CacheStats {
        match self.cache.get() {
            Some(cache) => cache.stats(),
            None => {
                let mut stats = CacheStats::default();
                stats.capacity = self.capacity();
                stats
            }
        }
    }
    fn clear(&self) {
        if let Some(cache) = self.cache.get() {
            cache.clear();
        }
    }
    fn reset_stats(&self) {
        if let Some(cache) = self.cache.get() {
            cache.reset_stats();
        }
    }
    fn len(&self) -> usize {
        self.cache.get().map_or(0, |cache| cache.len())
    }
    fn capacity(&self) -> u64 {
        self.capacity.unwrap_or(u64::MAX)
    }
    fn as_any(&self) -> &dyn Any {
        match self.cache.get() {
            Some(cache) => cache.as_any(),
            None => self,
        }
    }
}

/// Python's `cache_clear()`, which a memoized function's `<name>_cache_clear()` calls: forgets
/// every result, then zeroes the counters. The two are separate steps, so a call running
/// meanwhile may leave a result or a count behind. Under the attribute's bounds, so that a key
/// or value type that falls short is reported with their messages here too.
#[doc(hidden)]
pub fn cache_clear<K: KeyPart, V: Value>(cache: &Cache<K, V>) {
    cache.clear();
    cache.reset_stats();
}

/// [`cache_clear`] for the cache in `slot`, if the first call has built it.
#[doc(hidden)]
pub fn slot_cache_clear(slot: &Slot) {
    slot.clear();
    slot.reset_stats();
}

/// The cache in `slot`, built on the first call for the key type `K` the function's key
/// expression has.
#[doc(hidden)]
pub fn slot_cache<K: KeyPart, V: Value>(
    slot: &'static Slot,
    policy: Policy,
    ttl: Option<Duration>,
) -> &'static Cache<K, V> {
    let cache = slot
        .cache
        .get_or_init(|| Box::new(build::<K, V>(slot.capacity, policy, ttl)));
    match cache.as_any().downcast_ref::<Cache<K, V>>() {
        Some(cache) => cache,
        // One function's key expression has one type, and only that function fills its slot.
        None => unreachable!("a memoized function's slot holds another function's cache"),
    }
}
