//! The invariant check: with eviction on, which entries survive is the policy's
//! choice, so the model tracks what each key may hold rather than what it holds.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};

use crate::common::{check_cache, expiry_op_without_expiry, Expected, StatsTracker, Write};
use crate::{Config, Fit, Key, ModelCache, Op, Value};

/// Runs `ops` on a cache built from `config`, checking after every operation:
///
/// - a value the cache returns (from `get`, `peek`, `remove`, `get_with`,
///   `try_get_with` or `iter`) is the latest one written for its key, and a key
///   known to be absent (removed, invalidated, cleared, or seen absent, and not
///   written since) returns nothing;
/// - `len()` and `weighted_size()` stay within the capacity, `iter()` agrees
///   with both, and `validate()` passes;
/// - after `Clear` the cache is empty; after `Remove` or `Invalidate` the key is
///   gone;
/// - an entry written by `insert` or a loader is there right after, if its
///   weight fits every shard (neither policy evicts an entry to make room for
///   itself); if it fits no shard it is rejected, counted in `rejections`, and
///   its value is never returned;
/// - `stats()` accounts for every operation: a hit or miss per `get` or load,
///   one insert, update or rejection per write, a removal per entry removed on
///   request, and `len` moving by inserts less evictions less removals.
///
/// A config with more shards than capacity units must be refused by the
/// builder, as it documents; for such a config that is all this checks.
pub fn check_bounded(config: Config, ops: &[Op]) -> Result<(), String> {
    let fail = |error: String| format!("check_bounded with {config:?}: {error}");
    let Some(cache) = config.build_checked(|builder| builder).map_err(fail)? else {
        return Ok(());
    };
    let mut run = Run {
        config,
        cache: &cache,
        model: Model::default(),
    };
    let mut stats = StatsTracker::new(&cache);
    for (index, op) in ops.iter().enumerate() {
        let fail = |error: String| fail(format!("op #{index} {op:?}: {error}"));
        let expected = run.apply(*op).map_err(fail)?;
        let contents = check_cache(&cache, &config).map_err(fail)?;
        run.model.reconcile(contents).map_err(fail)?;
        stats.check(&cache, &expected).map_err(fail)?;
    }
    Ok(())
}

/// What the model knows of each key: it is absent, or it holds one of a set of
/// values. A key with no set, or an empty one, is known to be absent.
///
/// Most of the time the set has one value, the latest written. It has more only
/// when a write may or may not have been rejected (see [`Fit::Unknown`]), and
/// `iter()` narrows it down again after every operation.
#[derive(Debug, Default)]
struct Model {
    possible: HashMap<Key, BTreeSet<Value>>,
}

impl Model {
    /// Checks a value the cache returned for `key`, then narrows the model to it.
    fn read(&mut self, what: &str, key: Key, got: Option<Value>) -> Result<(), String> {
        let possible = self.possible.entry(key).or_default();
        if let Some(value) = got {
            ensure!(
                possible.contains(&value),
                "{what} returned {value} for key {key}, but {}",
                describe(possible)
            );
            *possible = BTreeSet::from([value]);
        } else {
            possible.clear();
        }
        Ok(())
    }

    /// Whether `key` has a value. Exact at the start of an operation, as
    /// [`reconcile`](Self::reconcile) has just read the whole cache.
    fn present(&self, key: Key) -> bool {
        self.possible
            .get(&key)
            .is_some_and(|values| !values.is_empty())
    }

    /// How many keys have a value; exact like [`present`](Self::present).
    fn len(&self) -> u64 {
        self.possible
            .values()
            .filter(|values| !values.is_empty())
            .count() as u64
    }

    /// Records that `key` is absent.
    fn forget(&mut self, key: Key) {
        self.possible.remove(&key);
    }

    /// Records a write of `value` to `key`.
    fn write(&mut self, key: Key, value: Value, fit: Fit) {
        let possible = self.possible.entry(key).or_default();
        match fit {
            Fit::Fits => *possible = BTreeSet::from([value]),
            Fit::Unknown => {
                possible.insert(value);
            }
            // The core documents that a refused insert also removes the
            // key's old value, so no read returns a value older than the
            // caller's last write; a refused load had no old value.
            Fit::Rejected => possible.clear(),
        }
    }

    /// Checks the cache's contents against the model, then takes them as the
    /// model's new state.
    fn reconcile(&mut self, contents: HashMap<Key, Value>) -> Result<(), String> {
        for (&key, &value) in &contents {
            let possible = self.possible.get(&key).cloned().unwrap_or_default();
            ensure!(
                possible.contains(&value),
                "iter() yields {value} for key {key}, but {}",
                describe(&possible)
            );
        }
        self.possible = contents
            .into_iter()
            .map(|(key, value)| (key, BTreeSet::from([value])))
            .collect();
        Ok(())
    }
}

fn describe(possible: &BTreeSet<Value>) -> String {
    match possible.len() {
        0 => "the key is known to be absent".to_owned(),
        1 => format!(
            "the latest value written is {:?}",
            possible.first().unwrap()
        ),
        _ => format!("the value written last is one of {possible:?}"),
    }
}

struct Run<'a> {
    config: Config,
    cache: &'a ModelCache,
    model: Model,
}

impl Run<'_> {
    /// Applies `op`, checks its answer, and says how the statistics must move.
    fn apply(&mut self, op: Op) -> Result<Expected, String> {
        let cache = self.cache;
        let expected = match op {
            Op::Get(key) => {
                let got = cache.get(&key);
                self.model.read("get", key, got)?;
                Expected::read(got.is_some())
            }
            Op::Peek(key) => {
                self.model.read("peek", key, cache.peek(&key))?;
                Expected::QUIET
            }
            Op::ContainsKey(key) => {
                if cache.contains_key(&key) {
                    ensure!(
                        self.model.present(key),
                        "contains_key({key}) is true, but the key is known to be absent"
                    );
                } else {
                    self.model.forget(key);
                }
                Expected::QUIET
            }
            Op::Insert(key, value) => {
                let fit = self.fit(value);
                let replaces = self.model.present(key);
                cache.insert(key, value);
                self.model.write(key, value, fit);
                let stored = self.check_written("insert", key, value, fit)?;
                Expected::QUIET.write(Write { replaces, stored })
            }
            Op::Remove(key) => {
                let got = cache.remove(&key);
                self.model.read("remove", key, got)?;
                self.model.forget(key);
                self.check_absent("remove", key)?;
                Expected {
                    removals: got.is_some().into(),
                    ..Expected::QUIET
                }
            }
            Op::Invalidate(key) => {
                let removals = self.model.present(key).into();
                cache.invalidate(&key);
                self.model.forget(key);
                self.check_absent("invalidate", key)?;
                Expected {
                    removals,
                    ..Expected::QUIET
                }
            }
            Op::Clear => {
                let removals = self.model.len();
                cache.clear();
                self.model.possible.clear();
                let (len, weighted_size) = (cache.len(), cache.weighted_size());
                ensure!(
                    len == 0 && weighted_size == 0,
                    "after clear, len() is {len} and weighted_size() {weighted_size}"
                );
                Expected {
                    removals,
                    ..Expected::QUIET
                }
            }
            Op::GetWith(key, value) => {
                let loaded = Cell::new(false);
                let got = cache.get_with(key, || {
                    loaded.set(true);
                    value
                });
                if loaded.get() {
                    ensure!(got == value, "get_with loaded {value} but returned {got}");
                    self.loaded(key, value)?
                } else {
                    self.model
                        .read("get_with without loading", key, Some(got))?;
                    Expected::read(true)
                }
            }
            Op::TryGetWith(key, result) => {
                let loaded = Cell::new(false);
                let got = cache
                    .try_get_with(key, || {
                        loaded.set(true);
                        result
                    })
                    .map_err(|_| ());
                if !loaded.get() {
                    let Ok(got) = got else {
                        return Err("try_get_with returned Err without calling its loader".into());
                    };
                    self.model
                        .read("try_get_with without loading", key, Some(got))?;
                    Expected::read(true)
                } else {
                    ensure!(
                        got == result,
                        "try_get_with loaded {result:?} but returned {got:?}"
                    );
                    if let Ok(value) = result {
                        self.loaded(key, value)?
                    } else {
                        self.model.forget(key);
                        self.check_absent("try_get_with failing to load", key)?;
                        Expected::read(false)
                    }
                }
            }
            Op::InsertWithTtl(..) | Op::Advance(_) | Op::RunPendingTasks => {
                expiry_op_without_expiry(cache, op)?
            }
        };
        Ok(expected)
    }

    fn fit(&self, value: Value) -> Fit {
        self.config.fit(self.config.weight(value))
    }

    /// Records a loader's `value` for `key`, which was therefore absent, and
    /// checks it was cached if it fits.
    fn loaded(&mut self, key: Key, value: Value) -> Result<Expected, String> {
        let fit = self.fit(value);
        self.model.forget(key);
        self.model.write(key, value, fit);
        let stored = self.check_written("a loader", key, value, fit)?;
        let write = Write {
            replaces: false,
            stored,
        };
        Ok(Expected::read(false).write(write))
    }

    /// Checks, with a `peek` that counts no access, what `key` holds right
    /// after `what` wrote `value` to it, and returns whether the cache stored it.
    ///
    /// Neither policy evicts an entry to make room for itself, so a value that
    /// was stored is still there.
    fn check_written(
        &mut self,
        what: &str,
        key: Key,
        value: Value,
        fit: Fit,
    ) -> Result<bool, String> {
        let got = self.cache.peek(&key);
        let weight = self.config.weight(value);
        match fit {
            Fit::Fits => ensure!(
                got == Some(value),
                "peek({key}) right after {what} wrote {value} (weight {weight}, fits every shard) returned {got:?}"
            ),
            Fit::Rejected => ensure!(
                got != Some(value),
                "peek({key}) right after {what} wrote {value} (weight {weight}, too heavy for every shard) returned it"
            ),
            Fit::Unknown => {}
        }
        self.model
            .read(&format!("peek right after {what}"), key, got)?;
        Ok(got == Some(value))
    }

    /// Checks that `key` is gone right after `what`.
    fn check_absent(&self, what: &str, key: Key) -> Result<(), String> {
        let got = self.cache.peek(&key);
        ensure!(
            got.is_none(),
            "peek({key}) right after {what} returned {got:?}"
        );
        ensure!(
            !self.cache.contains_key(&key),
            "contains_key({key}) right after {what} is true"
        );
        Ok(())
    }
}
