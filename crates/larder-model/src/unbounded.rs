//! The differential check: with eviction out of reach, the cache must answer
//! every call exactly as a [`HashMap`] does.

use std::cell::Cell;
use std::collections::HashMap;

use crate::common::{check_cache, expiry_op_without_expiry, same, Expected, StatsTracker, Write};
use crate::{Config, Key, ModelCache, Op, PolicyKind, Value, MAX_SHARDS};

/// Room in every shard for all 256 possible keys, so nothing is ever evicted.
const ROOM_PER_SHARD: u64 = 1 << u8::BITS;

/// Runs `ops` on unweighted caches too big to evict, comparing every answer
/// with a [`HashMap`]'s.
///
/// It runs each policy with one shard and with [`MAX_SHARDS`], each shard
/// having room for every `u8` key. After every operation it compares `len()`,
/// `is_empty()`, `weighted_size()` and the whole `iter()` with the map, runs
/// `validate()`, and checks that `stats()` counts exactly the reads, writes
/// and removals the map saw, and no eviction or rejection at all.
pub fn check_unbounded(ops: &[Op]) -> Result<(), String> {
    for policy in [PolicyKind::S3Fifo, PolicyKind::Lru] {
        for shards in [1, MAX_SHARDS] {
            let config = Config {
                capacity: ROOM_PER_SHARD * shards as u64,
                policy,
                shards,
                weighted: false,
            };
            run(config, ops)
                .map_err(|error| format!("check_unbounded with {config:?}: {error}"))?;
        }
    }
    Ok(())
}

fn run(config: Config, ops: &[Op]) -> Result<(), String> {
    let cache = config
        .build()
        .map_err(|error| format!("build() failed: {error}"))?;
    let mut model = HashMap::new();
    let mut stats = StatsTracker::new(&cache);
    for (index, op) in ops.iter().enumerate() {
        let fail = |error: String| format!("op #{index} {op:?}: {error}");
        let expected = apply(&cache, &mut model, *op).map_err(fail)?;
        // Nothing fills a shard here, so nothing may be evicted.
        let expected = Expected {
            may_evict: false,
            ..expected
        };
        let contents = check_cache(&cache, &config).map_err(fail)?;
        if contents != model {
            return Err(fail(format!(
                "iter() yields {contents:?}, the model holds {model:?}"
            )));
        }
        stats.check(&cache, &expected).map_err(fail)?;
    }
    Ok(())
}

/// Applies `op` to both the cache and the model, compares the answers, and
/// says how the statistics must move.
fn apply(cache: &ModelCache, model: &mut HashMap<Key, Value>, op: Op) -> Result<Expected, String> {
    let expected = match op {
        Op::Get(key) => {
            let got = cache.get(&key);
            same("get", got, model.get(&key).copied())?;
            Expected::read(got.is_some())
        }
        Op::Peek(key) => {
            same("peek", cache.peek(&key), model.get(&key).copied())?;
            Expected::QUIET
        }
        Op::ContainsKey(key) => {
            same(
                "contains_key",
                cache.contains_key(&key),
                model.contains_key(&key),
            )?;
            Expected::QUIET
        }
        Op::Insert(key, value) => {
            cache.insert(key, value);
            let replaces = model.insert(key, value).is_some();
            Expected::QUIET.write(Write {
                replaces,
                stored: true,
            })
        }
        Op::Remove(key) => {
            let removed = model.remove(&key);
            same("remove", cache.remove(&key), removed)?;
            Expected {
                removals: removed.is_some().into(),
                ..Expected::QUIET
            }
        }
        Op::Invalidate(key) => {
            cache.invalidate(&key);
            Expected {
                removals: model.remove(&key).is_some().into(),
                ..Expected::QUIET
            }
        }
        Op::Clear => {
            cache.clear();
            let removals = model.len() as u64;
            model.clear();
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
            let present = model.contains_key(&key);
            same("whether get_with called its loader", loaded.get(), !present)?;
            same("get_with", got, *model.entry(key).or_insert(value))?;
            let read = Expected::read(present);
            if present {
                read
            } else {
                read.write(Write {
                    replaces: false,
                    stored: true,
                })
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
            let present = model.get(&key).copied();
            same(
                "whether try_get_with called its loader",
                loaded.get(),
                present.is_none(),
            )?;
            let read = Expected::read(present.is_some());
            let (expected_result, expected) = match (present, result) {
                (Some(value), _) => (Ok(value), read),
                (None, Ok(value)) => {
                    model.insert(key, value);
                    let write = Write {
                        replaces: false,
                        stored: true,
                    };
                    (Ok(value), read.write(write))
                }
                (None, Err(())) => (Err(()), read),
            };
            same("try_get_with", got, expected_result)?;
            expected
        }
        Op::InsertWithTtl(..) | Op::Advance(_) | Op::RunPendingTasks => {
            expiry_op_without_expiry(cache, op)?
        }
    };
    Ok(expected)
}
