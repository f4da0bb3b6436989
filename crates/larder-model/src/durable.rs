//! The durable check: operations and reboots on a [`DurableCache`], against a [`BTreeMap`]
//! that stands for what the cache holds, in the spirit of sled's `fuzz_model`.
//!
//! A reboot drops or closes the cache and opens its directory again, so the log's recovery
//! runs in the middle of the sequence, as often as the input asks. The log gets segments of
//! [`DURABLE_SEGMENT_SIZE`] bytes and values up to a few hundred bytes, so segments roll
//! every few dozen writes, and one value in sixteen is larger than a segment, so it gets a
//! segment of its own.
//!
//! Every run uses one fixed hasher, so a reopened cache puts each key in the shard it was in
//! before: recovery then never has to evict, and must give back exactly what was there. (With
//! a hasher seeded afresh, recovery shares the capacity out to fit the keys where they land,
//! but only while every shard keeps room for an entry, which at this check's capacities of a
//! few entries a shard is not always the case; `crates/larder/tests/durable.rs` checks the
//! fitted shares at a realistic size.)
//!
//! Both runs keep the model exact after every operation. Reads, removals, `clear`, `sync` and
//! reboots change the cache predictably; only an `insert` into a cache that can fill up may
//! also evict other entries, which the policy picks. So after an `insert` the model takes the
//! cache's contents as they are, having checked that they include the entry just written and
//! hold no value but the latest one written for its key.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use larder::durable::{Compaction, LogOptions, RawBytes};
use larder::{Cache, Durability, DurableCache, IntoDurable};

use crate::common::{check_len, same};
use crate::{Case, PolicyKind};

/// Keys are `u64`, and generated ones lie below this, so operations collide.
pub const DURABLE_KEY_SPACE: u64 = 32;

/// The smallest capacity [`DurableConfig`] generates for the bounded run.
pub const DURABLE_MIN_CAPACITY: u64 = 4;

/// The largest capacity [`DurableConfig`] generates for the bounded run: well below
/// [`DURABLE_KEY_SPACE`], so it evicts.
pub const DURABLE_MAX_CAPACITY: u64 = 16;

/// The most shards [`DurableConfig`] generates; never more than [`DURABLE_MIN_CAPACITY`], as a
/// shard needs room for one entry at least.
pub const DURABLE_MAX_SHARDS: usize = 4;

/// The log's segment size in every run: the smallest the log allows.
pub const DURABLE_SEGMENT_SIZE: u64 = 4096;

/// The bounded run's capacities.
const CAPACITIES: std::ops::RangeInclusive<u64> = DURABLE_MIN_CAPACITY..=DURABLE_MAX_CAPACITY;

/// A value as the model keeps it. The cache holds bytes made from it: the value itself in
/// little-endian, then up to 255 filler bytes or, from `0xF000` up, more than a segment holds.
pub type DurableValue = u16;

/// Values from here up are larger than a segment.
const OVERSIZE: DurableValue = 0xF000;

/// The hasher of every run: std's SipHash with fixed keys, the same for every cache in every
/// process, so keys land in the same shards after a reboot.
type FixedState = BuildHasherDefault<DefaultHasher>;

/// The cache under test.
pub(crate) type Store = DurableCache<u64, Vec<u8>, FixedState>;

/// How a durable cache syncs, mirrored from [`Durability`] so it can be generated.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityKind {
    /// [`Durability::Manual`]: synced by `sync`, `close` and drop only.
    Manual,
    /// [`Durability::Always`]: every write synced before it returns.
    Always,
}

impl From<DurabilityKind> for Durability {
    fn from(kind: DurabilityKind) -> Self {
        match kind {
            DurabilityKind::Manual => Durability::Manual,
            DurabilityKind::Always => Durability::Always,
        }
    }
}

/// How values become bytes in the log.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueCodec {
    /// The default, [`larder::durable::Postcard`]: a length, then the bytes.
    Postcard,
    /// [`RawBytes`]: the bytes as they are.
    RawBytes,
}

/// How the durable checks open their caches.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableConfig {
    /// The bounded run's `max_capacity`, in
    /// `DURABLE_MIN_CAPACITY..=DURABLE_MAX_CAPACITY`.
    #[arbitrary(with = |u: &mut Unstructured<'_>| u.int_in_range(CAPACITIES))]
    pub capacity: u64,
    /// The eviction policy.
    pub policy: PolicyKind,
    /// `shards`, in `1..=DURABLE_MAX_SHARDS`, for both runs.
    #[arbitrary(with = |u: &mut Unstructured<'_>| u.int_in_range(1..=DURABLE_MAX_SHARDS))]
    pub shards: usize,
    /// When writes are synced.
    pub durability: DurabilityKind,
    /// The value codec.
    pub codec: ValueCodec,
}

impl DurableConfig {
    /// A capacity at which no shard can fill up: room in each for every key.
    pub(crate) fn roomy_capacity(&self) -> u64 {
        DURABLE_KEY_SPACE * self.shards as u64
    }
}

/// One call on the durable cache.
///
/// Its [`Arbitrary`] impl is written out to weigh the operations: mostly writes and reads,
/// with clears and reboots rare enough that the cache fills up between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableOp {
    /// `insert(key, bytes)`, with the bytes made from the value (see [`DurableValue`]).
    Insert(u64, DurableValue),
    /// `get(&key)`.
    Get(u64),
    /// `peek(&key)`.
    Peek(u64),
    /// `contains_key(&key)`.
    ContainsKey(u64),
    /// `remove(&key)`, which returns the removed value.
    Remove(u64),
    /// `invalidate(&key)`.
    Invalidate(u64),
    /// `clear()`.
    Clear,
    /// `sync()`.
    Sync,
    /// `compact()`: the log rewritten as its live entries.
    Compact,
    /// Ends the cache, by `close()` or by dropping it, and opens its directory again.
    Reboot {
        /// `close()` rather than a drop.
        close: bool,
    },
}

impl<'a> Arbitrary<'a> for DurableOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let key = |u: &mut Unstructured<'a>| u.int_in_range(0..=DURABLE_KEY_SPACE - 1);
        // Out of 32: 11 inserts, 10 reads, 5 removals, 1 clear, 2 syncs, 1 compaction,
        // 2 reboots.
        Ok(match u.int_in_range(0..=31u8)? {
            0 => DurableOp::Compact,
            1..=11 => DurableOp::Insert(key(u)?, u.arbitrary()?),
            12..=16 => DurableOp::Get(key(u)?),
            17..=18 => DurableOp::Peek(key(u)?),
            19..=21 => DurableOp::ContainsKey(key(u)?),
            22..=24 => DurableOp::Remove(key(u)?),
            25..=26 => DurableOp::Invalidate(key(u)?),
            27 => DurableOp::Clear,
            28..=29 => DurableOp::Sync,
            _ => DurableOp::Reboot {
                close: u.arbitrary()?,
            },
        })
    }
}

/// A whole durable test case, decoded like [`Input`](crate::Input).
pub type DurableInput = Case<DurableConfig, DurableOp>;

impl DurableInput {
    /// Runs [`check_durable_unbounded`], then [`check_durable_bounded`], then the operations
    /// dealt out to two threads at once ([`check_durable_concurrent`]).
    ///
    /// [`check_durable_concurrent`]: crate::check_durable_concurrent
    pub fn check(&self) -> Result<(), String> {
        check_durable_unbounded(self.config, &self.ops)?;
        check_durable_bounded(self.config, &self.ops)?;
        crate::check_durable_concurrent(self.config, &self.ops)
    }
}

/// Runs `ops` on a durable cache with room in every shard for every key, so nothing is ever
/// evicted, comparing every answer with a [`BTreeMap`]'s.
///
/// After every operation, and after a last reboot once they are done, `iter()` must yield
/// exactly the map's contents, each key once, and `len()` and `is_empty()` agree. A reboot
/// must give back exactly what the cache held before it; every write, `sync`, `close` and
/// reopen must succeed.
pub fn check_durable_unbounded(config: DurableConfig, ops: &[DurableOp]) -> Result<(), String> {
    run(config, config.roomy_capacity(), ops)
        .map_err(|error| format!("check_durable_unbounded with {config:?}: {error}"))
}

/// Runs `ops` on a durable cache of the config's small capacity, where inserts evict.
///
/// It checks what holds whatever the policy evicts:
///
/// - a value the cache returns (from `get`, `peek`, `remove` or `iter`) is the latest one
///   written for its key, and a key that was removed, invalidated, cleared or evicted, and
///   not written since, is absent from every read;
/// - the entry an `insert` wrote is there right after it, and only an `insert` makes other
///   entries go;
/// - `len()` stays within the capacity and agrees with `iter()`;
/// - a reboot gives back exactly the entries the cache held before it, and so does opening
///   the same directory with room for every key: the log holds no entry the cache had
///   evicted, removed or cleared.
pub fn check_durable_bounded(config: DurableConfig, ops: &[DurableOp]) -> Result<(), String> {
    run(config, config.capacity, ops)
        .map_err(|error| format!("check_durable_bounded with {config:?}: {error}"))
}

/// The model: what each key holds.
type Model = BTreeMap<u64, DurableValue>;

/// The one run both checks make, at `capacity`.
fn run(config: DurableConfig, capacity: u64, ops: &[DurableOp]) -> Result<(), String> {
    let mut session = Session::open(config, capacity)?;
    let mut model = Model::new();
    for (index, op) in ops.iter().enumerate() {
        session
            .apply(&mut model, *op)
            .map_err(|error| format!("op #{index} {op:?}: {error}"))?;
    }
    session
        .apply(&mut model, DurableOp::Reboot { close: true })
        .map_err(|error| format!("the reboot after the last op: {error}"))
}

/// The bytes a write of `value` stores: `value` in little-endian, then filler bytes, up to
/// 257 in all or, from [`OVERSIZE`] up, more than a segment holds.
pub(crate) fn value_bytes(value: DurableValue) -> Vec<u8> {
    let [low, high] = value.to_le_bytes();
    let filler = if value >= OVERSIZE {
        DURABLE_SEGMENT_SIZE as usize + usize::from(low)
    } else {
        usize::from(low)
    };
    let mut bytes = Vec::with_capacity(2 + filler);
    bytes.extend_from_slice(&[low, high]);
    bytes.extend((0..filler).map(|i| low.wrapping_add(i as u8)));
    bytes
}

/// The value whose bytes `bytes` are, or an error saying `what` returned bytes no write stored.
fn value_of(what: &str, bytes: &[u8]) -> Result<DurableValue, String> {
    let value = match *bytes {
        [low, high, ..] => Some(DurableValue::from_le_bytes([low, high])),
        _ => None,
    };
    value
        .filter(|&value| value_bytes(value) == bytes)
        .ok_or_else(|| {
            format!(
                "{what} returned {} bytes that no write stored: {bytes:?}",
                bytes.len()
            )
        })
}

/// Checks what a read returned: bytes a write stored, of the value the model expects.
fn check_read(
    what: &str,
    got: Option<Vec<u8>>,
    expected: Option<DurableValue>,
) -> Result<(), String> {
    let got = got.map(|bytes| value_of(what, &bytes)).transpose()?;
    same(what, got, expected)
}

pub(crate) fn failed<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |error| format!("{what} failed: {error}")
}

/// A cache on a directory of its own, reopened at every reboot.
struct Session {
    /// `None` only halfway through a reboot. Declared before `dir`, so it is dropped first.
    cache: Option<Store>,
    dir: ScratchDir,
    config: DurableConfig,
    capacity: u64,
}

impl Session {
    fn open(config: DurableConfig, capacity: u64) -> Result<Session, String> {
        let dir = ScratchDir::new();
        let cache = open_at(&dir.0, config, capacity)?;
        Ok(Session {
            cache: Some(cache),
            dir,
            config,
            capacity,
        })
    }

    fn cache(&self) -> &Store {
        self.cache
            .as_ref()
            .expect("the cache is open between operations")
    }

    /// Whether inserts may evict here.
    fn tight(&self) -> bool {
        self.capacity < self.config.roomy_capacity()
    }

    /// Applies `op` to the cache and to `model`, compares every answer, and checks the cache's
    /// contents afterwards against the model, which then takes them.
    fn apply(&mut self, model: &mut Model, op: DurableOp) -> Result<(), String> {
        let cache = self.cache();
        let mut written = None;
        match op {
            DurableOp::Insert(key, value) => {
                cache
                    .insert(key, value_bytes(value))
                    .map_err(failed("insert"))?;
                model.insert(key, value);
                written = Some(key);
            }
            DurableOp::Get(key) => check_read(
                &format!("get({key})"),
                cache.get(&key),
                model.get(&key).copied(),
            )?,
            DurableOp::Peek(key) => check_read(
                &format!("peek({key})"),
                cache.peek(&key),
                model.get(&key).copied(),
            )?,
            DurableOp::ContainsKey(key) => same(
                &format!("contains_key({key})"),
                cache.contains_key(&key),
                model.contains_key(&key),
            )?,
            DurableOp::Remove(key) => {
                let removed = cache.remove(&key).map_err(failed("remove"))?;
                check_read(&format!("remove({key})"), removed, model.remove(&key))?;
            }
            DurableOp::Invalidate(key) => {
                cache.invalidate(&key).map_err(failed("invalidate"))?;
                model.remove(&key);
            }
            DurableOp::Clear => {
                cache.clear().map_err(failed("clear"))?;
                model.clear();
            }
            DurableOp::Sync => cache.sync().map_err(failed("sync"))?,
            DurableOp::Compact => {
                cache.compact().map_err(failed("compact"))?;
            }
            DurableOp::Reboot { close } => self.reboot(close, model)?,
        }
        let contents = contents(self.cache(), self.capacity)?;
        for (key, value) in &contents {
            let latest = model.get(key);
            ensure!(
                latest == Some(value),
                "iter() yields {value} for key {key}, but {}",
                latest.map_or(
                    "the key is known to be absent".to_owned(),
                    |latest| format!("the latest value written is {latest}")
                )
            );
        }
        // Every entry iter() yields is in the model; what else the model holds is gone.
        if let Some(key) = written {
            ensure!(
                contents.contains_key(&key),
                "the entry just written for key {key} is gone; iter() yields {contents:?}"
            );
        }
        let may_evict = written.is_some() && self.tight();
        let gone: Vec<_> = model
            .iter()
            .filter(|(key, _)| !contents.contains_key(key))
            .collect();
        ensure!(
            may_evict || gone.is_empty(),
            "iter() lacks {gone:?}, which nothing removed; it yields {contents:?}"
        );
        *model = contents;
        Ok(())
    }

    /// Closes or drops the cache, which releases the directory's lock, and opens the directory
    /// again. In a bounded run it is opened with room for every key in between, which must find
    /// exactly `model`'s entries too: with the run's capacity, recovery could evict what the
    /// log wrongly kept, and hide it.
    fn reboot(&mut self, close: bool, model: &Model) -> Result<(), String> {
        let cache = self.cache.take().expect("the cache is open");
        if close {
            cache.close().map_err(failed("close"))?;
        } else {
            drop(cache);
        }
        if self.tight() {
            let capacity = self.config.roomy_capacity();
            let roomy = open_at(&self.dir.0, self.config, capacity)?;
            let held = contents(&roomy, capacity)
                .map_err(|error| format!("reopened with room for every key: {error}"))?;
            ensure!(
                &held == model,
                "reopened with room for every key, the cache holds {held:?}, but before the reboot it held {model:?}"
            );
            roomy.close().map_err(failed("close"))?;
        }
        self.cache = Some(open_at(&self.dir.0, self.config, self.capacity)?);
        Ok(())
    }
}

/// `cache`'s contents as `iter()` yields them, checked to agree with `len()`, `is_empty()`
/// and `capacity`.
fn contents(cache: &Store, capacity: u64) -> Result<Model, String> {
    let mut contents = Model::new();
    for (key, bytes) in cache.iter() {
        let value = value_of("iter()", &bytes)?;
        if let Some(earlier) = contents.insert(key, value) {
            return Err(format!(
                "iter() yielded key {key} twice, with {earlier} and {value}"
            ));
        }
    }
    let len = cache.len();
    ensure!(
        contents.len() == len,
        "iter() yielded {} entries but len() is {len}: {contents:?}",
        contents.len()
    );
    check_len(len, cache.is_empty(), capacity)?;
    Ok(contents)
}

/// Opens (or creates) the durable cache in `dir`.
pub(crate) fn open_at(dir: &Path, config: DurableConfig, capacity: u64) -> Result<Store, String> {
    let builder = Cache::builder()
        .max_capacity(capacity)
        .policy(config.policy.into())
        .shards(config.shards)
        .hasher(FixedState::default())
        .durable(dir)
        .durability(config.durability.into())
        // Compactions come from the operations only, never from the janitor mid-check.
        .compaction(Compaction::Manual)
        .log_options(LogOptions::default().with_segment_size(DURABLE_SEGMENT_SIZE));
    let builder = match config.codec {
        ValueCodec::Postcard => builder,
        ValueCodec::RawBytes => builder.value_codec(RawBytes),
    };
    builder
        .build()
        .map_err(|error| format!("opening the cache (capacity {capacity}) failed: {error}"))
}

/// A directory of its own for one run, under `/dev/shm` where there is one (the log's syncs
/// cost nothing there), else the system's temporary directory. Removed when dropped, on every
/// way out of a check.
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl ScratchDir {
    pub(crate) fn new() -> ScratchDir {
        // Tells apart the runs of one process, which proptest makes on several threads.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Relaxed: only the number matters, no other memory is published with it.
        let run = NEXT.fetch_add(1, Ordering::Relaxed);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("larder-model-{}-{run}", std::process::id()));
        // Left behind by an earlier process that had the same id and crashed.
        let _ = std::fs::remove_dir_all(&dir);
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_some_outgrow_a_segment() {
        for value in [0, 1, 255, 256, OVERSIZE - 1, OVERSIZE, DurableValue::MAX] {
            let bytes = value_bytes(value);
            assert_eq!(value_of("test", &bytes), Ok(value));
            let oversize = bytes.len() as u64 > DURABLE_SEGMENT_SIZE;
            assert_eq!(oversize, value >= OVERSIZE, "{value}");
        }
        assert!(value_of("test", &[]).is_err());
        assert!(value_of("test", &[7]).is_err());
        let mut bytes = value_bytes(300);
        bytes.push(0);
        assert!(value_of("test", &bytes).is_err());
    }

    #[test]
    fn decoding_stays_in_range() {
        let bytes: Vec<u8> = (0..=255).cycle().take(4096).collect();
        let input = DurableInput::decode(&bytes).unwrap();
        let config = input.config;
        assert!((DURABLE_MIN_CAPACITY..=DURABLE_MAX_CAPACITY).contains(&config.capacity));
        assert!((1..=DURABLE_MAX_SHARDS).contains(&config.shards));
        assert!(input.ops.len() > 1000, "{} ops", input.ops.len());
        for op in &input.ops {
            let key = match *op {
                DurableOp::Insert(key, _)
                | DurableOp::Get(key)
                | DurableOp::Peek(key)
                | DurableOp::ContainsKey(key)
                | DurableOp::Remove(key)
                | DurableOp::Invalidate(key) => key,
                DurableOp::Clear
                | DurableOp::Sync
                | DurableOp::Compact
                | DurableOp::Reboot { .. } => 0,
            };
            assert!(key < DURABLE_KEY_SPACE, "{op:?}");
        }
    }

    #[test]
    fn scratch_dirs_are_removed() {
        let dir = ScratchDir::new();
        let path = dir.0.clone();
        std::fs::create_dir_all(&path).unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
