//! Checks both checkers run after every operation: the cache's structure, its
//! sizes, its contents as `iter()` sees them, and its statistics.

use std::collections::HashMap;
use std::fmt;

use larder_core::CacheStats;

use crate::{Config, Key, ModelCache, Op, Value};

/// Checks that `is_empty()` agrees with `len()`, and `len()` is within `most` entries
/// ([`Config::most_entries`]): for any cache, durable or not.
pub(crate) fn check_len(len: usize, is_empty: bool, most: u64) -> Result<(), String> {
    ensure!(
        is_empty == (len == 0),
        "is_empty() is {is_empty} but len() is {len}"
    );
    ensure!(
        len as u64 <= most,
        "len() {len} exceeds the most entries the cache may hold, {most}"
    );
    Ok(())
}

/// Checks everything about the cache that must hold after any operation, and
/// returns its contents as `iter()` yields them.
///
/// - `validate()` passes;
/// - `capacity()` is the configured capacity, `weighted_size()` does not exceed
///   it, and `len()` does not exceed [`Config::most_entries`];
/// - `is_empty()` agrees with `len()`;
/// - `iter()` yields each key once, `len()` entries in all, whose weights add
///   up to `weighted_size()`.
pub(crate) fn check_cache(
    cache: &ModelCache,
    config: &Config,
) -> Result<HashMap<Key, Value>, String> {
    cache
        .validate()
        .map_err(|error| format!("validate() failed: {error}"))?;

    let capacity = cache.capacity();
    let len = cache.len();
    let weighted_size = cache.weighted_size();
    ensure!(
        capacity == config.capacity,
        "capacity() is {capacity}, configured {}",
        config.capacity
    );
    check_len(len, cache.is_empty(), config.most_entries())?;
    ensure!(
        weighted_size <= capacity,
        "weighted_size() {weighted_size} exceeds capacity {capacity}"
    );

    let mut contents = HashMap::new();
    let mut total_weight = 0;
    for (key, value) in cache.iter() {
        if let Some(earlier) = contents.insert(key, value) {
            return Err(format!(
                "iter() yielded key {key} twice, with {earlier} and {value}"
            ));
        }
        total_weight += config.weight(value);
    }
    ensure!(
        contents.len() == len,
        "iter() yielded {} entries but len() is {len}: {contents:?}",
        contents.len()
    );
    ensure!(
        total_weight == weighted_size,
        "the entries iter() yields weigh {total_weight} but weighted_size() is {weighted_size}: {contents:?}"
    );
    Ok(contents)
}

/// How an operation must move the statistics, as `CacheStats` documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Whether it counted as a read, and what it found.
    pub(crate) access: Access,
    /// The value it offered the cache, if any.
    pub(crate) write: Option<Write>,
    /// How many entries it removed on request (`remove`, `invalidate`, `clear`).
    pub(crate) removals: u64,
    /// Whether the eviction policy may have removed entries to make room.
    pub(crate) may_evict: bool,
}

impl Expected {
    /// An operation that changes no counter.
    pub(crate) const QUIET: Expected = Expected {
        access: Access::None,
        write: None,
        removals: 0,
        may_evict: false,
    };

    /// A `get`, or a `get_with` / `try_get_with`, which count like one: a hit if the key had
    /// a value, a miss if the loader ran.
    pub(crate) fn read(hit: bool) -> Self {
        Expected {
            access: Access::Read { hit },
            ..Self::QUIET
        }
    }

    /// An `insert`, or a load that produced a value.
    pub(crate) fn write(self, write: Write) -> Self {
        Expected {
            write: Some(write),
            may_evict: write.stored,
            ..self
        }
    }
}

/// Whether an operation counted as a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `peek`, `contains_key` and the writes: neither a hit nor a miss.
    None,
    /// Exactly one hit or one miss.
    Read { hit: bool },
}

/// A value offered to the cache by `insert` or a loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Write {
    /// The key had a value before.
    pub(crate) replaces: bool,
    /// The cache took the value; if not, it was rejected as too heavy.
    pub(crate) stored: bool,
}

/// Follows `stats()` from one operation to the next.
#[derive(Debug)]
pub(crate) struct StatsTracker {
    last: CacheStats,
}

impl StatsTracker {
    pub(crate) fn new(cache: &ModelCache) -> Self {
        StatsTracker {
            last: cache.stats(),
        }
    }

    /// Checks the statistics after an operation:
    ///
    /// - `len`, `weighted_size` and `capacity` agree with the cache's own;
    /// - no counter goes down (the checkers never call `reset_stats`);
    /// - hits and misses count exactly the reads the checker saw hit and miss;
    /// - a write counts exactly one insert (new key), update (present key) or
    ///   rejection, and nothing else does;
    /// - removals count exactly the entries removed on request;
    /// - only a stored write evicts, and the counters account for `len`:
    ///   it moves by inserts − evictions − removals, less one if a rejected
    ///   write dropped the key's old value (which the API leaves open).
    pub(crate) fn check(&mut self, cache: &ModelCache, expected: &Expected) -> Result<(), String> {
        let stats = cache.stats();
        let last = std::mem::replace(&mut self.last, stats);

        ensure!(
            stats.len == cache.len() as u64,
            "stats().len is {} but len() is {}",
            stats.len,
            cache.len()
        );
        ensure!(
            stats.weighted_size == cache.weighted_size(),
            "stats().weighted_size is {} but weighted_size() is {}",
            stats.weighted_size,
            cache.weighted_size()
        );
        ensure!(
            stats.capacity == cache.capacity(),
            "stats().capacity is {} but capacity() is {}",
            stats.capacity,
            cache.capacity()
        );

        let before = Counters::of(&last);
        let after = Counters::of(&stats);
        let Some(delta) = after.minus(&before) else {
            return Err(format!(
                "a counter of stats() went down from {before} to {after}"
            ));
        };

        let (hits, misses) = match expected.access {
            Access::None => (0, 0),
            Access::Read { hit: true } => (1, 0),
            Access::Read { hit: false } => (0, 1),
        };
        let (inserts, updates, rejections) = match expected.write {
            None => (0, 0, 0),
            Some(Write { stored: false, .. }) => (0, 0, 1),
            Some(Write {
                replaces: false, ..
            }) => (1, 0, 0),
            Some(Write { replaces: true, .. }) => (0, 1, 0),
        };
        let wanted = Counters {
            hits,
            misses,
            inserts,
            updates,
            // Checked below, through `len`.
            evictions: delta.evictions,
            removals: expected.removals,
            rejections,
        };
        ensure!(
            delta == wanted,
            "stats() moved by {delta}, expected {wanted} for {expected:?}"
        );
        ensure!(
            expected.may_evict || delta.evictions == 0,
            "stats() moved by {delta} for {expected:?}, which cannot evict"
        );

        let accounted = i128::from(last.len) + i128::from(delta.inserts)
            - i128::from(delta.evictions)
            - i128::from(delta.removals);
        let may_drop = matches!(
            expected.write,
            Some(Write {
                replaces: true,
                stored: false
            })
        );
        let len = i128::from(stats.len);
        ensure!(
            len == accounted || (may_drop && len + 1 == accounted),
            "len went from {} to {}, but stats() moved by {delta}",
            last.len,
            stats.len
        );
        Ok(())
    }
}

/// The counters of a [`CacheStats`], which being `#[non_exhaustive]` cannot be built here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    hits: u64,
    misses: u64,
    inserts: u64,
    updates: u64,
    evictions: u64,
    removals: u64,
    rejections: u64,
}

impl Counters {
    fn of(stats: &CacheStats) -> Self {
        Counters {
            hits: stats.hits,
            misses: stats.misses,
            inserts: stats.inserts,
            updates: stats.updates,
            evictions: stats.evictions,
            removals: stats.removals,
            rejections: stats.rejections,
        }
    }

    /// `self - earlier`, or `None` if any counter went down.
    fn minus(&self, earlier: &Counters) -> Option<Counters> {
        Some(Counters {
            hits: self.hits.checked_sub(earlier.hits)?,
            misses: self.misses.checked_sub(earlier.misses)?,
            inserts: self.inserts.checked_sub(earlier.inserts)?,
            updates: self.updates.checked_sub(earlier.updates)?,
            evictions: self.evictions.checked_sub(earlier.evictions)?,
            removals: self.removals.checked_sub(earlier.removals)?,
            rejections: self.rejections.checked_sub(earlier.rejections)?,
        })
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{hits {}, misses {}, inserts {}, updates {}, evictions {}, removals {}, rejections {}}}",
            self.hits,
            self.misses,
            self.inserts,
            self.updates,
            self.evictions,
            self.removals,
            self.rejections
        )
    }
}

/// The expiry operations, on a cache built without expiry: `insert_with_ttl` hands the entry
/// back and stores nothing, `run_pending_tasks` does nothing, and `Advance` has no clock to move.
/// Every counter stays put. An error for any other operation.
pub(crate) fn expiry_op_without_expiry(cache: &ModelCache, op: Op) -> Result<Expected, String> {
    match op {
        Op::InsertWithTtl(key, value, ttl) => {
            let ttl = std::time::Duration::from_millis(u64::from(ttl));
            match cache.insert_with_ttl(key, value, ttl) {
                Ok(()) => {
                    return Err("insert_with_ttl stored an entry in a cache without expiry".into())
                }
                Err(back) => ensure!(
                    (back.key, back.value) == (key, value),
                    "insert_with_ttl handed back {:?}, not the entry {:?}",
                    (back.key, back.value),
                    (key, value)
                ),
            }
        }
        Op::RunPendingTasks => cache.run_pending_tasks(),
        Op::Advance(_) => {}
        other => return Err(format!("{other:?} is not an expiry operation")),
    }
    Ok(Expected::QUIET)
}

/// An error naming `what` unless the cache's answer `got` is the model's `expected`.
pub(crate) fn same<T: PartialEq + fmt::Debug>(
    what: &str,
    got: T,
    expected: T,
) -> Result<(), String> {
    ensure!(
        got == expected,
        "{what}: the cache says {got:?}, the model {expected:?}"
    );
    Ok(())
}
