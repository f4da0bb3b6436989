//! The expiry check: a cache with a time-to-live on a mock clock, whose eviction listener
//! reports every removal. Because every removal is heard, the model knows exactly which
//! entries are resident, even with eviction on, and checks each notice against it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::{CacheBuilder, CacheStats, MockClock, RemovalCause};

use crate::{Config, Key, ModelCache, Op, Value};

/// The cache-wide time-to-live of the checked cache, in mock milliseconds. `Advance` moves the
/// clock by up to 255 ms, and `InsertWithTtl` gives lifetimes of 0 to 255 ms.
pub const TIME_TO_LIVE_MS: u64 = 20;

type Notices = Arc<Mutex<Vec<(Key, Value, RemovalCause)>>>;

/// Runs `ops` on a cache built from `config` with a time-to-live of [`TIME_TO_LIVE_MS`], a
/// mock clock and no janitor, checking after every operation:
///
/// - no read (`get`, `peek`, `contains_key`, the hit of `get_with` / `try_get_with`, `iter`)
///   returns an entry whose deadline has passed, and every value read is the latest written;
/// - every entry that leaves is heard by the listener exactly once, with its value and the
///   right cause: `Expired` exactly when its deadline had passed, else `Replaced` (a write to
///   its key), `Explicit` (`remove`, `invalidate`, `clear`) or `Size` (a write that overfilled
///   the shard);
/// - `stats()` counts a hit for each read that found a live entry and a miss for each that
///   did not, and for each write one update if its key had a live entry, one insert if not
///   (an expired entry counts as gone), or one rejection;
/// - after `RunPendingTasks` nothing expired is left; `len()` counts the resident entries,
///   expired or not, and `iter()` the live ones;
/// - `stats()` counts one expiration, eviction or removal per notice of that cause, and
///   `validate()` passes.
pub fn check_expiring(config: Config, ops: &[Op]) -> Result<(), String> {
    let fail = |error: String| format!("check_expiring with {config:?}: {error}");
    let time = MockClock::new();
    let notices: Notices = Arc::default();
    let sink = Arc::clone(&notices);
    let expiring = |builder: CacheBuilder<Key, Value>| {
        builder
            .time_to_live(Duration::from_millis(TIME_TO_LIVE_MS))
            .clock(time.clock())
            .without_janitor()
            .eviction_listener(move |k: Arc<Key>, v, cause| {
                sink.lock().unwrap().push((*k, v, cause))
            })
    };
    let Some(cache) = config.build_checked(expiring).map_err(fail)? else {
        return Ok(());
    };
    let mut run = Run {
        config,
        cache: &cache,
        time: &time,
        notices: &notices,
        resident: HashMap::new(),
    };
    for (index, op) in ops.iter().enumerate() {
        run.step(*op)
            .map_err(|error| fail(format!("op #{index} {op:?} at {} ms: {error}", run.now())))?;
    }
    Ok(())
}

struct Run<'a> {
    config: Config,
    cache: &'a ModelCache,
    time: &'a MockClock,
    notices: &'a Notices,
    /// Every entry the cache holds, expired or not, with its deadline: written, and not yet
    /// heard leaving.
    resident: HashMap<Key, (Value, u64)>,
}

impl Run<'_> {
    fn now(&self) -> u64 {
        self.time.elapsed().as_millis() as u64
    }

    /// The live value of `key`, as the model has it.
    fn live(&self, key: Key) -> Option<Value> {
        let now = self.now();
        self.resident
            .get(&key)
            .filter(|(_, deadline)| *deadline > now)
            .map(|(v, _)| *v)
    }

    fn step(&mut self, op: Op) -> Result<(), String> {
        let before = self.cache.stats();
        let now = self.now();
        // The key a write gives a new value: its old entry may leave as `Replaced`.
        let mut written: Option<Key> = None;
        // Whether the op may remove on request, or evict.
        let (mut explicit, mut evicts) = (false, false);
        // Whether the op counts as a read, and if so whether it found a live entry.
        let mut hit: Option<bool> = None;
        let mut new_entry: Option<(Key, Value, u64)> = None;
        match op {
            Op::Get(key) => {
                let live = self.live(key);
                same("get", self.cache.get(&key), live)?;
                hit = Some(live.is_some());
            }
            Op::Peek(key) => same("peek", self.cache.peek(&key), self.live(key))?,
            Op::ContainsKey(key) => same(
                "contains_key",
                self.cache.contains_key(&key),
                self.live(key).is_some(),
            )?,
            Op::Insert(key, value) => {
                self.cache.insert(key, value);
                written = Some(key);
                evicts = true;
                new_entry = Some((key, value, now + TIME_TO_LIVE_MS));
            }
            Op::InsertWithTtl(key, value, ttl) => {
                let ttl = u64::from(ttl);
                self.cache
                    .insert_with_ttl(key, value, Duration::from_millis(ttl))
                    .map_err(|e| format!("insert_with_ttl refused: {e}"))?;
                written = Some(key);
                evicts = true;
                new_entry = Some((key, value, now + ttl));
            }
            Op::Remove(key) => {
                same("remove", self.cache.remove(&key), self.live(key))?;
                explicit = true;
            }
            Op::Invalidate(key) => {
                self.cache.invalidate(&key);
                explicit = true;
            }
            Op::Clear => {
                self.cache.clear();
                explicit = true;
            }
            Op::GetWith(key, value) => {
                let live = self.live(key);
                let loaded = Cell::new(false);
                let got = self.cache.get_with(key, || {
                    loaded.set(true);
                    value
                });
                same("whether get_with loaded", loaded.get(), live.is_none())?;
                hit = Some(live.is_some());
                same("get_with", got, live.unwrap_or(value))?;
                if loaded.get() {
                    written = Some(key);
                    evicts = true;
                    new_entry = Some((key, value, now + TIME_TO_LIVE_MS));
                }
            }
            Op::TryGetWith(key, result) => {
                let live = self.live(key);
                let loaded = Cell::new(false);
                let got = self
                    .cache
                    .try_get_with(key, || {
                        loaded.set(true);
                        result
                    })
                    .map_err(|_| ());
                same("whether try_get_with loaded", loaded.get(), live.is_none())?;
                hit = Some(live.is_some());
                same("try_get_with", got, live.map_or(result, Ok))?;
                if let (true, Ok(value)) = (loaded.get(), result) {
                    written = Some(key);
                    evicts = true;
                    new_entry = Some((key, value, now + TIME_TO_LIVE_MS));
                }
                // An expired entry met by a load leaves, whether the load succeeds or not.
            }
            Op::Advance(ms) => self.time.advance(Duration::from_millis(u64::from(ms))),
            Op::RunPendingTasks => self.cache.run_pending_tasks(),
        }
        let after = self.cache.stats();
        // A write the cache refused (too heavy) stores nothing.
        let rejected = after.rejections > before.rejections;
        // Read before the notices below update `resident`: the key's entry before the write.
        let replaces = written.is_some_and(|key| self.live(key).is_some());
        check_counts(before, after, hit, written.map(|_| (replaces, rejected)))?;
        let heard = std::mem::take(&mut *self.notices.lock().unwrap());
        let mut by_cause = [0u64; 4];
        for (key, value, cause) in heard {
            let Some((resident, deadline)) = self.resident.remove(&key) else {
                return Err(format!(
                    "heard {key} -> {value} leave ({cause:?}), but the key has no entry (a second notice?)"
                ));
            };
            ensure!(
                resident == value,
                "heard {key} -> {value} leave ({cause:?}), but the entry holds {resident}"
            );
            let expired = deadline <= now;
            let allowed = match cause {
                RemovalCause::Expired => expired,
                RemovalCause::Replaced => !expired && written == Some(key),
                RemovalCause::Explicit => !expired && explicit,
                // An entry of weight 0 frees no capacity, so it is never evicted.
                RemovalCause::Size => !expired && evicts && self.config.weight(value) != 0,
                _ => false,
            };
            ensure!(
                allowed,
                "heard {key} -> {value} leave as {cause:?} (deadline {deadline}, now {now})"
            );
            by_cause[cause_index(cause)] += 1;
        }
        if let Some((key, value, deadline)) = new_entry.filter(|_| !rejected) {
            if let Some((old, _)) = self.resident.insert(key, (value, deadline)) {
                return Err(format!(
                    "the write of {key} -> {value} was heard replacing nothing, yet {old} was resident"
                ));
            }
        }
        self.check_state(&op, before, after, by_cause)
    }

    fn check_state(
        &self,
        op: &Op,
        before: CacheStats,
        after: CacheStats,
        by_cause: [u64; 4],
    ) -> Result<(), String> {
        let now = self.now();
        self.cache
            .validate()
            .map_err(|e| format!("validate() failed: {e}"))?;
        let [expired, replaced, explicit, size] = by_cause;
        let _ = replaced;
        ensure!(
            after.expirations - before.expirations == expired,
            "stats() counted {} expirations, {expired} heard",
            after.expirations - before.expirations
        );
        ensure!(
            after.evictions - before.evictions == size,
            "stats() counted {} evictions, {size} heard",
            after.evictions - before.evictions
        );
        ensure!(
            after.removals - before.removals == explicit,
            "stats() counted {} removals, {explicit} heard",
            after.removals - before.removals
        );
        ensure!(
            self.cache.len() == self.resident.len(),
            "len() is {}, the model has {} resident entries: {:?}",
            self.cache.len(),
            self.resident.len(),
            self.resident
        );
        let contents: HashMap<Key, Value> = self.cache.iter().collect();
        let live: HashMap<Key, Value> = self
            .resident
            .iter()
            .filter(|(_, (_, deadline))| *deadline > now)
            .map(|(k, (v, _))| (*k, *v))
            .collect();
        ensure!(
            contents == live,
            "iter() yields {contents:?}, the live entries are {live:?}"
        );
        if matches!(op, Op::RunPendingTasks) {
            ensure!(
                live.len() == self.resident.len(),
                "expired entries are left after run_pending_tasks: {:?}",
                self.resident
            );
        }
        Ok(())
    }
}

/// Checks that `stats()` moved from `before` to `after` by one hit or miss for a read that
/// found (`hit`) or did not find a live entry, and by one update (the key had a live entry),
/// insert or rejection for a write (`write`: whether it replaces, whether it was rejected);
/// by none of them for anything else.
fn check_counts(
    before: CacheStats,
    after: CacheStats,
    hit: Option<bool>,
    write: Option<(bool, bool)>,
) -> Result<(), String> {
    let moved = (
        after.hits - before.hits,
        after.misses - before.misses,
        after.inserts - before.inserts,
        after.updates - before.updates,
        after.rejections - before.rejections,
    );
    let (hits, misses) = match hit {
        None => (0, 0),
        Some(true) => (1, 0),
        Some(false) => (0, 1),
    };
    let (inserts, updates, rejections) = match write {
        None => (0, 0, 0),
        Some((_, true)) => (0, 0, 1),
        Some((true, false)) => (0, 1, 0),
        Some((false, false)) => (1, 0, 0),
    };
    let wanted = (hits, misses, inserts, updates, rejections);
    ensure!(
        moved == wanted,
        "stats() moved (hits, misses, inserts, updates, rejections) by {moved:?}, expected {wanted:?}"
    );
    Ok(())
}

fn cause_index(cause: RemovalCause) -> usize {
    match cause {
        RemovalCause::Expired => 0,
        RemovalCause::Replaced => 1,
        RemovalCause::Explicit => 2,
        _ => 3,
    }
}

fn same<T: PartialEq + std::fmt::Debug>(what: &str, got: T, expected: T) -> Result<(), String> {
    ensure!(
        got == expected,
        "{what}: the cache says {got:?}, the model {expected:?}"
    );
    Ok(())
}
