//! The durable cache under several threads: two threads run operations of their own on one
//! `DurableCache` at once, compactions included, and then the log must give back exactly what
//! the cache held.
//!
//! The durable cache keeps its log a mirror of the live set while writers race: each insert
//! appends its record, and the deletes of what the cache evicted are appended by whichever
//! write drains them (`larder::durable`'s `evicted`). [`check_durable_bounded`] checks the
//! mirror one operation at a time; this check lets two writers overtake each other inside it,
//! and a compaction rewrite the log beside them. As in [`check_concurrent`], no order of the
//! operations is known, so every value names its writer, the writer's operation index and its
//! key (in its first four bytes, before the bytes [`DurableOp::Insert`]'s value makes), and
//! what is checked is what every interleaving must respect:
//!
//! - every write, `sync` and `compact` succeeds;
//! - every value a read returns (`get`, `peek`, `remove`) was written to its key by the
//!   operation it names, and no thread sees a writer's older value after a newer one;
//! - `weighted_size()` stays within the capacity while the threads run;
//! - once both threads are done, every resident value is its writer's last word on the key,
//!   `len()` and `weighted_size()` agree with `iter()`, and `len()` with the capacity if the
//!   cache is unweighted;
//! - closed and opened again with room for every key, and then at its own capacity, the cache
//!   holds exactly the entries it held before: no value lost, none brought back.
//!
//! A reboot cannot happen while another thread writes, so a `Reboot` in a thread's operations
//! is a `sync` there; the reboots come at the end. The cache has no expiry, whatever the
//! config says: the mock clock's time is one for all threads, so which reads an `Advance`
//! expires would depend on the interleaving (`check_concurrent_expiring` checks expiry under
//! threads, in memory). An `Advance` does nothing here. A weighted config's weigher
//! ([`durable_weight_of`](crate::durable_weight_of)) reads the stamp's second byte, the low byte of the operation's
//! index, so each write's weight comes from where it stands in its thread. Each thread's
//! operations are repeated to [`DURABLE_REPEAT_TO`], so that short inputs still overlap.
//!
//! [`check_durable_bounded`]: crate::check_durable_bounded
//! [`check_concurrent`]: crate::check_concurrent

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::concurrent::on_threads;
use crate::durable::{
    failed, open_at, value_bytes, DurableConfig, DurableOp, ScratchDir, Store, DURABLE_KEY_SPACE,
};

/// Each thread's operations are repeated until there are this many.
pub const DURABLE_REPEAT_TO: usize = 256;

/// The threads the check runs.
const THREADS: usize = 2;

/// What the cache holds: each key's stamp (see [`stamp`]).
type Contents = BTreeMap<u64, u32>;

/// Deals `ops` out to two threads in turn, repeats each thread's share to
/// [`DURABLE_REPEAT_TO`], runs the threads at once on a cache of the config's capacity, and
/// checks what the [module](self) lists.
pub fn check_durable_concurrent(config: DurableConfig, ops: &[DurableOp]) -> Result<(), String> {
    let threads: Vec<Vec<DurableOp>> = (0..THREADS)
        .map(|t| {
            let mine: Vec<DurableOp> = ops.iter().copied().skip(t).step_by(THREADS).collect();
            let len = if mine.is_empty() {
                0
            } else {
                mine.len().max(DURABLE_REPEAT_TO)
            };
            mine.into_iter().cycle().take(len).collect()
        })
        .collect();
    run(config, threads)
        .map_err(|error| format!("check_durable_concurrent with {config:?}: {error}"))
}

fn run(config: DurableConfig, threads: Vec<Vec<DurableOp>>) -> Result<(), String> {
    let dir = ScratchDir::new();
    let cache = open_at(&dir.0, config, config.capacity)?;
    let threads = Arc::new(threads);
    {
        let (cache, threads) = (cache.clone(), Arc::clone(&threads));
        on_threads(THREADS, move |thread| {
            ThreadRun {
                thread,
                cache: &cache,
                threads: &threads,
                floors: HashMap::new(),
            }
            .run()
        })?;
    }
    let held = contents(&cache, &threads, config, config.capacity)
        .map_err(|e| format!("at the end: {e}"))?;
    cache.close().map_err(failed("close"))?;
    for (capacity, what) in [
        (config.roomy_capacity(), "with room for every key"),
        (config.capacity, "at its capacity"),
    ] {
        let reopened = open_at(&dir.0, config, capacity)?;
        let back = contents(&reopened, &threads, config, capacity)
            .map_err(|e| format!("reopened {what}: {e}"))?;
        ensure!(
            back == held,
            "reopened {what}, the cache holds {back:?}, but before it closed it held {held:?}"
        );
        reopened.close().map_err(failed("close"))?;
    }
    Ok(())
}

/// The first four bytes of every value: `thread` in bits 24–31, `index` in 8–23, `key` in 0–7.
fn stamp(thread: usize, index: usize, key: u64) -> u32 {
    debug_assert!(thread < THREADS && index < 1 << 16 && key < DURABLE_KEY_SPACE);
    (thread as u32) << 24 | (index as u32) << 8 | key as u32
}

/// The writer and operation index a [`stamp`] names.
fn writer_and_index(stamp: u32) -> (usize, usize) {
    ((stamp >> 24) as usize, (stamp >> 8 & 0xFFFF) as usize)
}

/// The stamp of `bytes` a read returned for `key`, checked against the operation it names.
fn check_value(threads: &[Vec<DurableOp>], key: u64, bytes: &[u8]) -> Result<u32, String> {
    let Some(&[a, b, c, d]) = bytes.first_chunk::<4>() else {
        return Err(format!(
            "{} bytes for key {key}: no write stored them",
            bytes.len()
        ));
    };
    let stamp = u32::from_le_bytes([a, b, c, d]);
    let ((writer, index), of) = (writer_and_index(stamp), u64::from(stamp & 0xFF));
    let op = threads.get(writer).and_then(|ops| ops.get(index)).copied();
    let written = match op {
        Some(DurableOp::Insert(k, value)) if k == key && of == key => value_bytes(value),
        _ => {
            return Err(format!(
                "key {key} holds a value naming thread {writer}'s op #{index} ({op:?}) for key {of}, which wrote no such value"
            ))
        }
    };
    ensure!(
        bytes[4..] == written[..],
        "key {key} holds thread {writer}'s op #{index} with bytes that write did not store"
    );
    Ok(stamp)
}

/// One thread's run: its operations, and the oldest index of each writer's values for each
/// key that it may still see.
struct ThreadRun<'a> {
    thread: usize,
    cache: &'a Store,
    threads: &'a [Vec<DurableOp>],
    floors: HashMap<(u64, usize), usize>,
}

impl ThreadRun<'_> {
    fn run(&mut self) -> Result<(), String> {
        for (index, &op) in self.threads[self.thread].iter().enumerate() {
            self.apply(index, op)
                .map_err(|error| format!("op #{index} {op:?}: {error}"))?;
        }
        Ok(())
    }

    fn apply(&mut self, index: usize, op: DurableOp) -> Result<(), String> {
        self.change(index, op)?;
        let (weighted_size, capacity) = (self.cache.weighted_size(), self.cache.capacity());
        ensure!(
            weighted_size <= capacity,
            "weighted_size() {weighted_size} exceeds the capacity {capacity}"
        );
        Ok(())
    }

    fn change(&mut self, index: usize, op: DurableOp) -> Result<(), String> {
        let (cache, me) = (self.cache, self.thread);
        match op {
            DurableOp::Insert(key, value) => {
                let mut bytes = stamp(me, index, key).to_le_bytes().to_vec();
                bytes.extend(value_bytes(value));
                cache.insert(key, bytes).map_err(failed("insert"))?;
                self.raise(key, me, index);
            }
            DurableOp::Get(key) => {
                self.seen(key, cache.get(&key))?;
            }
            DurableOp::Peek(key) => {
                self.seen(key, cache.peek(&key))?;
            }
            DurableOp::ContainsKey(key) => {
                cache.contains_key(&key);
            }
            DurableOp::Remove(key) => {
                let got = cache.remove(&key).map_err(failed("remove"))?;
                if let Some(stamp) = self.seen(key, got)? {
                    // The value it removed is gone too.
                    let (writer, at) = writer_and_index(stamp);
                    self.raise(key, writer, at + 1);
                }
                self.raise(key, me, index);
            }
            DurableOp::Invalidate(key) => {
                cache.invalidate(&key).map_err(failed("invalidate"))?;
                self.raise(key, me, index);
            }
            DurableOp::Clear => {
                cache.clear().map_err(failed("clear"))?;
                for key in 0..DURABLE_KEY_SPACE {
                    self.raise(key, me, index);
                }
            }
            DurableOp::Sync | DurableOp::Reboot { .. } | DurableOp::Restart { .. } => {
                cache.sync().map_err(failed("sync"))?
            }
            // No expiry here: no clock to move, nothing to expire.
            DurableOp::Advance(_) => {}
            DurableOp::RunPendingTasks => cache.run_pending_tasks(),
            DurableOp::Compact => {
                cache.compact().map_err(failed("compact"))?;
            }
        }
        Ok(())
    }

    /// Checks a value read for `key` against where it came from and this thread's floor for
    /// its writer, then raises the floor to it. Returns its stamp.
    fn seen(&mut self, key: u64, got: Option<Vec<u8>>) -> Result<Option<u32>, String> {
        let Some(bytes) = got else { return Ok(None) };
        let stamp = check_value(self.threads, key, &bytes)?;
        let (writer, index) = writer_and_index(stamp);
        let floor = self.floors.get(&(key, writer)).copied().unwrap_or(0);
        ensure!(
            index >= floor,
            "read thread {writer}'s value from its op #{index} for key {key}, older than op #{floor}, which this thread had already seen or outdated"
        );
        self.raise(key, writer, index);
        Ok(Some(stamp))
    }

    /// Records that `writer`'s values for `key` older than `index` are gone for this thread.
    fn raise(&mut self, key: u64, writer: usize, index: usize) {
        let floor = self.floors.entry((key, writer)).or_insert(0);
        *floor = (*floor).max(index);
    }
}

/// What `cache` holds, each value checked against the operation it names and found to be its
/// writer's last word on the key, the count checked against `len()` and, unweighted,
/// `capacity`, and the weights against `weighted_size()` and `capacity`.
fn contents(
    cache: &Store,
    threads: &[Vec<DurableOp>],
    config: DurableConfig,
    capacity: u64,
) -> Result<Contents, String> {
    let mut held = Contents::new();
    let mut weight = 0;
    for (key, bytes) in cache.iter() {
        let stamp = check_value(threads, key, &bytes)?;
        weight += config.weight_of(&bytes);
        ensure!(
            held.insert(key, stamp).is_none(),
            "iter() yielded key {key} twice"
        );
        let (writer, index) = writer_and_index(stamp);
        let later = threads[writer][index + 1..]
            .iter()
            .position(|op| match *op {
                DurableOp::Insert(k, _) | DurableOp::Remove(k) | DurableOp::Invalidate(k) => {
                    k == key
                }
                DurableOp::Clear => true,
                _ => false,
            });
        if let Some(offset) = later {
            let at = index + 1 + offset;
            return Err(format!(
                "key {key} holds thread {writer}'s value from op #{index}, but that thread's op #{at} {:?} came after it",
                threads[writer][at]
            ));
        }
    }
    let len = cache.len();
    // Entries of weight 0 take no room, so any number of them fit.
    let most = if config.weighted { u64::MAX } else { capacity };
    ensure!(
        held.len() == len && len as u64 <= most,
        "iter() yielded {} entries, len() is {len}, the capacity {capacity}",
        held.len()
    );
    let weighted_size = cache.weighted_size();
    ensure!(
        weight == weighted_size && weighted_size <= capacity,
        "the entries iter() yields weigh {weight}, weighted_size() is {weighted_size}, the capacity {capacity}"
    );
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::{DurabilityKind, ValueCodec};
    use crate::PolicyKind;

    fn config() -> DurableConfig {
        DurableConfig {
            capacity: 4,
            policy: PolicyKind::S3Fifo,
            shards: 1,
            durability: DurabilityKind::Manual,
            codec: ValueCodec::Postcard,
            time_to_live: None,
            weighted: false,
        }
    }

    #[test]
    fn evicting_and_compacting_threads_leave_a_log_that_gives_back_the_cache() {
        let ops: Vec<DurableOp> = (0..64)
            .map(|i| match i % 8 {
                7 => DurableOp::Compact,
                5 => DurableOp::Remove(i % DURABLE_KEY_SPACE),
                _ => DurableOp::Insert(i % DURABLE_KEY_SPACE, i as u16),
            })
            .collect();
        check_durable_concurrent(config(), &ops).unwrap();
    }

    #[test]
    fn a_value_no_write_stored_and_an_outdated_one_are_caught() {
        let threads = vec![vec![DurableOp::Insert(3, 7), DurableOp::Remove(3)], vec![]];
        let mut bytes = stamp(0, 0, 3).to_le_bytes().to_vec();
        bytes.extend(value_bytes(7));
        assert_eq!(check_value(&threads, 3, &bytes), Ok(stamp(0, 0, 3)));
        let err = check_value(&threads, 4, &bytes).unwrap_err();
        assert!(err.contains("which wrote no such value"), "{err}");
        let err = check_value(&threads, 3, &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("bytes that write did not store"), "{err}");

        let dir = ScratchDir::new();
        let cache = open_at(&dir.0, config(), 4).unwrap();
        cache.insert(3, bytes).unwrap();
        let err = contents(&cache, &threads, config(), 4).unwrap_err();
        assert!(err.contains("op #1 Remove(3) came after it"), "{err}");
    }
}
