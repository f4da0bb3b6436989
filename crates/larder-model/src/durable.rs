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
//!
//! # Expiry
//!
//! A config may give the cache a time-to-live ([`DurableConfig::time_to_live`]). Every cache of
//! such a run is built on one [`MockClock`], which a reboot leaves where it was and
//! [`DurableOp::Advance`] moves; [`DurableOp::Restart`] reopens after some time closed, with
//! another time-to-live or none. The model then knows each entry's deadline and checks that
//! reads, `iter()` and the contents after a reboot see exactly the live entries: none past its
//! deadline, and every one before it.
//!
//! The mock clock is the cache's only clock: a record's deadline is a wall-clock time, and the
//! cache reads the wall time from its clock, which on a mock starts at a fixed origin and
//! moves with it (`Clock::wall_time`). So the model knows every deadline exactly, in
//! milliseconds on the mock:
//!
//! - an insert at mock time `t` lives until `t + ttl`, and its record holds that deadline;
//! - a reboot at `t` brings back every entry that was live (the model holds only those), each
//!   until the earlier of its deadline and `t` plus the reopened cache's time-to-live, or
//!   until `t` plus that time-to-live if it had none; a cache reopened without expiry keeps
//!   them all for good. (The entries that expired before the reboot were removed and their
//!   deletes recorded by the close, or their records' deadlines have passed: either way they
//!   stay gone, which the model checks.)
//!
//! Without a janitor, an expired entry stays in the table until an operation removes it:
//! `len()` counts it and `iter()` does not. So `len()` must equal what `iter()` yields only
//! when nothing expired can be resident: without expiry, after `run_pending_tasks` and after a
//! reboot.
//!
//! # Weights
//!
//! A config may give the cache a weigher ([`DurableConfig::weighted`]): an entry then weighs
//! [`durable_weight_of`] its bytes, from 0 to more than [`DURABLE_MAX_CAPACITY`], and the
//! capacity bounds the weights' sum. After every operation `weighted_size()` stays within
//! `capacity()`, and the weights of what `iter()` yields add up to it (to no more, while expired
//! entries may be resident). An entry of weight 0 takes no room and is never evicted, so `len()`
//! may exceed the capacity. Each shard keeps to its share of the capacity and refuses an entry
//! heavier than that share, dropping the key's older value with it. The shares are even until a
//! reboot loads entries: recovery then fits them to what each shard loads (`Live::load_into`),
//! and they drift back to even as the cache is written, at a pace the model does not follow.
//! So after an insert of `weight`:
//!
//! - with room for every key, or `weight` at most 1 (every share holds at least 1), the entry
//!   is there;
//! - above the whole capacity, it is refused, and the key is gone;
//! - in between, while the shares are even, it is there if it fits the smallest share and
//!   refused if it fits none ([`Config::fit`](crate::Config::fit)'s rule); after a reboot that
//!   loaded anything, either may be.
//!
//! A refused entry, and every entry evicted to make room by weight, must be deleted in the log:
//! the reboots' reopens, with room for every key and at the run's capacity, give back exactly
//! the model.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use larder::durable::{Compaction, LogOptions, RawBytes};
use larder::{Cache, Durability, DurableCache, IntoDurable, MockClock};

use crate::common::{check_len, same};
use crate::{Case, Fit, PolicyKind};

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

/// The weights [`durable_weight_of`] gives, picked by a value's high byte: 0, which takes no
/// room; some that fit every shard; some heavier than a shard's share at the smaller
/// capacities or with more shards; and one heavier than any capacity [`DurableConfig`]
/// generates, which every cache refuses.
pub const DURABLE_WEIGHTS: [u32; 8] = [0, 1, 1, 2, 3, 5, 8, DURABLE_MAX_CAPACITY as u32 + 1];

/// The heaviest of [`DURABLE_WEIGHTS`].
const HEAVIEST: u64 = DURABLE_WEIGHTS[DURABLE_WEIGHTS.len() - 1] as u64;

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
    /// The time-to-live the cache opens with, in milliseconds (0 counts as 1, the shortest a
    /// mock clock allows), or `None` for a cache without expiry, whose runs are the checks as
    /// they were before expiry: [`DurableOp::Advance`] then moves a clock nothing reads, and
    /// [`DurableOp::Restart`] is a plain reboot, after a wait. The concurrent check
    /// ([`check_durable_concurrent`](crate::check_durable_concurrent)) runs without expiry
    /// whatever this says.
    pub time_to_live: Option<u8>,
    /// Whether entries weigh [`durable_weight_of`] their bytes instead of 1 (module doc,
    /// "Weights"). The concurrent check's bytes begin with a stamp, so there the weight comes
    /// from the stamp instead.
    pub weighted: bool,
}

impl DurableConfig {
    /// A capacity at which no shard can fill up: room in each for every key at the heaviest
    /// weight, whatever share of the capacity a reboot fits it.
    pub(crate) fn roomy_capacity(&self) -> u64 {
        let heaviest = if self.weighted { HEAVIEST } else { 1 };
        DURABLE_KEY_SPACE * heaviest * self.shards as u64
    }

    /// The weight the cache gives an entry holding `bytes`.
    pub(crate) fn weight_of(&self, bytes: &[u8]) -> u64 {
        if self.weighted {
            u64::from(durable_weight_of(bytes))
        } else {
            1
        }
    }

    /// The weight the cache gives an entry holding `value`'s bytes, which begin with the
    /// value's two ([`value_bytes`]).
    pub(crate) fn weight(&self, value: DurableValue) -> u64 {
        self.weight_of(&value.to_le_bytes())
    }
}

/// The weigher of a weighted run: one of [`DURABLE_WEIGHTS`], by the low three bits of the
/// second byte, the high byte of the value a write stored (see [`DurableValue`]). The filler
/// bytes' count comes from the low byte, so weight and size are apart. Bytes too short to hold
/// a value, which no write stores, weigh 1.
pub fn durable_weight_of(bytes: &[u8]) -> u32 {
    bytes
        .get(1)
        .map_or(1, |&high| DURABLE_WEIGHTS[usize::from(high & 7)])
}

/// A generated time-to-live in milliseconds: 0 counts as 1.
fn lifetime_ms(ttl: u8) -> u64 {
    u64::from(ttl).max(1)
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
    /// Moves the run's mock clock forward this many milliseconds (0 included), which may pass
    /// entries' deadlines.
    Advance(u8),
    /// `run_pending_tasks()`: what has expired leaves, and its deletes are queued for the log.
    RunPendingTasks,
    /// `close()`, then `down` milliseconds pass on the clock while the cache is closed, and
    /// the directory is opened again with time-to-live `ttl` (as
    /// [`DurableConfig::time_to_live`]; `None`: without expiry), which later reboots keep.
    /// Records whose deadlines pass while it is closed stay gone. In a run configured without
    /// expiry, `ttl` is ignored.
    Restart {
        /// Milliseconds the cache is closed for.
        down: u8,
        /// The reopened cache's time-to-live in milliseconds (0 counts as 1).
        ttl: Option<u8>,
    },
}

impl<'a> Arbitrary<'a> for DurableOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let key = |u: &mut Unstructured<'a>| u.int_in_range(0..=DURABLE_KEY_SPACE - 1);
        // Out of 37: 11 inserts, 10 reads, 5 removals, 1 clear, 2 syncs, 1 compaction,
        // 2 reboots; and for expiry 3 advances of the clock, 1 `run_pending_tasks` and 1
        // restart after some time closed, with another time-to-live.
        Ok(match u.int_in_range(0..=36u8)? {
            0 => DurableOp::Compact,
            1..=11 => DurableOp::Insert(key(u)?, u.arbitrary()?),
            12..=16 => DurableOp::Get(key(u)?),
            17..=18 => DurableOp::Peek(key(u)?),
            19..=21 => DurableOp::ContainsKey(key(u)?),
            22..=24 => DurableOp::Remove(key(u)?),
            25..=26 => DurableOp::Invalidate(key(u)?),
            27 => DurableOp::Clear,
            28..=29 => DurableOp::Sync,
            30..=31 => DurableOp::Reboot {
                close: u.arbitrary()?,
            },
            32..=34 => DurableOp::Advance(u.arbitrary()?),
            35 => DurableOp::RunPendingTasks,
            _ => DurableOp::Restart {
                down: u.arbitrary()?,
                ttl: u.arbitrary()?,
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
/// exactly the map's live entries, each key once, and `len()` and `is_empty()` agree. A reboot
/// must give back exactly the entries live when it reopens (module doc, "Expiry"); every write,
/// `sync`, `close` and reopen must succeed.
pub fn check_durable_unbounded(config: DurableConfig, ops: &[DurableOp]) -> Result<(), String> {
    run(config, config.roomy_capacity(), ops)
        .map_err(|error| format!("check_durable_unbounded with {config:?}: {error}"))
}

/// Runs `ops` on a durable cache of the config's small capacity, where inserts evict.
///
/// It checks what holds whatever the policy evicts:
///
/// - a value the cache returns (from `get`, `peek`, `remove` or `iter`) is the latest one
///   written for its key, and a key that was removed, invalidated, cleared, evicted or
///   expired, and not written since, is absent from every read;
/// - the entry an `insert` wrote is there right after it, unless the cache weighs entries and
///   refused it as too heavy (module doc, "Weights"), and only an `insert` makes other live
///   entries go;
/// - no read finds an entry past its deadline, and every read before it finds the entry;
/// - `len()` stays within the capacity (unweighted) and agrees with `iter()` when nothing
///   expired can be resident (module doc, "Expiry"); `weighted_size()` stays within the
///   capacity and agrees with the weights of what `iter()` yields likewise;
/// - a reboot gives back exactly the entries the cache held before it that are live when it
///   reopens, and so does opening the same directory with room for every key: the log holds
///   no entry the cache had evicted, removed, cleared or expired.
pub fn check_durable_bounded(config: DurableConfig, ops: &[DurableOp]) -> Result<(), String> {
    run(config, config.capacity, ops)
        .map_err(|error| format!("check_durable_bounded with {config:?}: {error}"))
}

/// The model: what each key holds, and until when.
type Model = BTreeMap<u64, Entry>;

/// What `iter()` yields: each key's value.
type Values = BTreeMap<u64, DurableValue>;

/// What the model knows of a key's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The latest value written.
    value: DurableValue,
    /// When the entry expires, in milliseconds on the mock clock (the deadline its record
    /// holds too); `None` for never.
    deadline: Option<u64>,
}

impl Entry {
    /// The entry an insert of `value` at mock time `now` makes in a cache with time-to-live
    /// `ttl`.
    fn written(value: DurableValue, now: u64, ttl: Option<u64>) -> Entry {
        Entry {
            value,
            deadline: ttl.map(|ttl| now + ttl),
        }
    }

    /// Whether the entry is live at mock time `now`: it expires once the clock reaches its
    /// deadline.
    fn alive(&self, now: u64) -> bool {
        self.deadline.is_none_or(|deadline| now < deadline)
    }
}

/// The one run both checks make, at `capacity`.
fn run(config: DurableConfig, capacity: u64, ops: &[DurableOp]) -> Result<(), String> {
    let mut session = Session::open(config, capacity)?;
    let mut model = Model::new();
    for (index, op) in ops.iter().enumerate() {
        let now = session.now();
        session
            .apply(&mut model, *op)
            .map_err(|error| format!("op #{index} {op:?} at {now} ms: {error}"))?;
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

/// Checks what a read of `key` at mock time `now` returned (`get`, `peek`, `remove`): bytes a
/// write stored, of the value the model holds for the key if its entry is live then, and
/// nothing otherwise.
fn check_read(
    model: &Model,
    key: u64,
    now: u64,
    what: &str,
    got: Option<Vec<u8>>,
) -> Result<(), String> {
    let got = got.map(|bytes| value_of(what, &bytes)).transpose()?;
    same(what, got, live_value(model, key, now))
}

/// The value the model holds for `key` at mock time `now`: `None` for a key without an
/// entry, or whose entry has expired.
fn live_value(model: &Model, key: u64, now: u64) -> Option<DurableValue> {
    model
        .get(&key)
        .filter(|entry| entry.alive(now))
        .map(|entry| entry.value)
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
    /// The clock of every cache the run opens, whose time a reboot keeps.
    time: MockClock,
    /// The time-to-live of the cache open now, in milliseconds: the config's, until a
    /// [`DurableOp::Restart`].
    ttl: Option<u64>,
    /// Whether the shards' shares of the capacity are known to be even: until a reboot loads
    /// entries and fits the shares to them (module doc, "Weights").
    shares_even: bool,
}

impl Session {
    fn open(config: DurableConfig, capacity: u64) -> Result<Session, String> {
        let mut session = Session {
            cache: None,
            dir: ScratchDir::new(),
            config,
            capacity,
            time: MockClock::new(),
            ttl: config.time_to_live.map(lifetime_ms),
            shares_even: true,
        };
        // A new directory: nothing to load.
        session.cache = Some(session.open_cache(capacity)?);
        Ok(session)
    }

    /// Opens the directory at `capacity` with the time-to-live of the moment, on the run's
    /// clock.
    fn open_cache(&self, capacity: u64) -> Result<Store, String> {
        open_with(
            &self.dir.0,
            self.config,
            capacity,
            self.ttl,
            Some(&self.time),
        )
    }

    fn cache(&self) -> &Store {
        self.cache
            .as_ref()
            .expect("the cache is open between operations")
    }

    /// The mock clock's time, in milliseconds.
    fn now(&self) -> u64 {
        self.time.elapsed().as_millis() as u64
    }

    /// Whether inserts may evict here.
    fn tight(&self) -> bool {
        self.capacity < self.config.roomy_capacity()
    }

    /// Whether the cache must take an entry of `value`, must refuse it, or may do either
    /// (module doc, "Weights").
    fn fit(&self, value: DurableValue) -> Fit {
        let weight = self.config.weight(value);
        let shards = self.config.shards as u64;
        if !self.tight() || weight <= 1 {
            Fit::Fits
        } else if weight > self.capacity {
            Fit::Rejected
        } else if !self.shares_even {
            Fit::Unknown
        } else if weight <= self.capacity / shards {
            Fit::Fits
        } else if weight > self.capacity.div_ceil(shards) {
            Fit::Rejected
        } else {
            Fit::Unknown
        }
    }

    /// Applies `op` to the cache and to `model`, compares every answer, and checks the cache's
    /// contents afterwards against the model, which then takes them ([`reconcile`]).
    fn apply(&mut self, model: &mut Model, op: DurableOp) -> Result<(), String> {
        let now = self.now();
        let cache = self.cache();
        // The key an insert wrote, and whether the cache had to take it.
        let mut written = None;
        // Whether nothing expired can be resident afterwards, so `len()` counts live entries.
        let mut settled = self.ttl.is_none();
        match op {
            DurableOp::Insert(key, value) => {
                cache
                    .insert(key, value_bytes(value))
                    .map_err(failed("insert"))?;
                let fit = self.fit(value);
                if fit == Fit::Rejected {
                    // The older value goes with the refused one.
                    model.remove(&key);
                } else {
                    model.insert(key, Entry::written(value, now, self.ttl));
                }
                written = Some((key, fit));
            }
            DurableOp::Get(key) => {
                check_read(model, key, now, &format!("get({key})"), cache.get(&key))?
            }
            DurableOp::Peek(key) => {
                check_read(model, key, now, &format!("peek({key})"), cache.peek(&key))?
            }
            DurableOp::ContainsKey(key) => {
                let found = cache.contains_key(&key);
                same(
                    &format!("contains_key({key})"),
                    found,
                    live_value(model, key, now).is_some(),
                )?;
            }
            DurableOp::Remove(key) => {
                let removed = cache.remove(&key).map_err(failed("remove"))?;
                check_read(model, key, now, &format!("remove({key})"), removed)?;
                model.remove(&key);
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
                // It drops the records whose wall deadline has passed, which no load would
                // take anyway: nothing the model sees.
                cache.compact().map_err(failed("compact"))?;
            }
            DurableOp::Advance(ms) => self.time.advance(Duration::from_millis(u64::from(ms))),
            DurableOp::RunPendingTasks => {
                cache.run_pending_tasks();
                settled = true;
            }
            DurableOp::Reboot { close } => {
                self.reboot(close, 0, self.ttl, model)?;
                settled = true;
            }
            DurableOp::Restart { down, ttl } => {
                let ttl = match self.config.time_to_live {
                    Some(_) => ttl.map(lifetime_ms),
                    None => None,
                };
                self.reboot(true, down, ttl, model)?;
                settled = true;
            }
        }
        let contents = contents(self.cache(), self.config, self.capacity, settled)?;
        // Every entry iter() yields is in the model; what else the model holds is gone. A
        // refused entry is not in the model, so iter() must not yield it.
        if let Some((key, Fit::Fits)) = written {
            ensure!(
                contents.contains_key(&key),
                "the entry just written for key {key}, of weight {}, is gone; iter() yields {contents:?}",
                self.config.weight(model[&key].value)
            );
        }
        let may_evict = written.is_some() && self.tight();
        reconcile(model, &contents, self.now(), |_| may_evict)
    }

    /// Closes or drops the cache, which releases the directory's lock, and opens the directory
    /// again with time-to-live `ttl`, which the session keeps. In a bounded run it is opened
    /// with room for every key in between, which must find exactly the entries the model
    /// expects too: with the run's capacity, recovery could evict what the log wrongly kept,
    /// and hide it.
    ///
    /// Both opens must give back exactly the entries the model holds, each of them live (every
    /// operation ends with the model holding only what `iter()` yields), with the deadlines
    /// [`reopen`] gives them.
    fn reboot(
        &mut self,
        close: bool,
        down: u8,
        ttl: Option<u64>,
        model: &mut Model,
    ) -> Result<(), String> {
        let cache = self.cache.take().expect("the cache is open");
        if close {
            cache.close().map_err(failed("close"))?;
        } else {
            drop(cache);
        }
        self.time.advance(Duration::from_millis(u64::from(down)));
        self.ttl = ttl;
        let now = self.now();
        reopen(model, now, ttl);
        // The load fits the shares to what it loads (all even for nothing).
        self.shares_even = model.is_empty();
        if self.tight() {
            let capacity = self.config.roomy_capacity();
            let roomy = self.open_cache(capacity)?;
            let held = contents(&roomy, self.config, capacity, true)
                .map_err(|error| format!("reopened with room for every key: {error}"))?;
            reconcile(model, &held, now, |_| false)
                .map_err(|error| format!("reopened with room for every key: {error}"))?;
            roomy.close().map_err(failed("close"))?;
        }
        let cache = self.open_cache(self.capacity)?;
        let held = contents(&cache, self.config, self.capacity, true)
            .map_err(|error| format!("reopened: {error}"))?;
        reconcile(model, &held, now, |_| false).map_err(|error| format!("reopened: {error}"))?;
        self.cache = Some(cache);
        Ok(())
    }
}

/// What a reopen with time-to-live `ttl` at mock time `now` makes of the entries of `model`,
/// all of them live when the cache closed (`larder::durable`'s "Expiry on disk", and
/// `Live::load_into`): those whose deadlines passed while it was closed are not loaded; the
/// others live what is left of their records' deadlines, at most `ttl`; the whole `ttl` for a
/// record without one; and for good in a cache without expiry, which writes such records
/// again without their deadlines.
fn reopen(model: &mut Model, now: u64, ttl: Option<u64>) {
    model.retain(|_, entry| entry.alive(now));
    for entry in model.values_mut() {
        entry.deadline = ttl.map(|ttl| entry.deadline.map_or(now + ttl, |d| d.min(now + ttl)));
    }
}

/// Checks `contents`, what `iter()` yields at mock time `now`, against `model`, which then
/// holds exactly those entries:
///
/// - every entry yielded is the model's latest value for its key, and live;
/// - every live entry of the model is yielded, unless `may_lack` its key (evicted by an
///   insert).
fn reconcile(
    model: &mut Model,
    contents: &Values,
    now: u64,
    may_lack: impl Fn(u64) -> bool,
) -> Result<(), String> {
    for (&key, &value) in contents {
        let Some(entry) = model.get(&key) else {
            return Err(format!(
                "iter() yields {value} for key {key}, but the key is known to be absent"
            ));
        };
        ensure!(
            entry.value == value,
            "iter() yields {value} for key {key}, but the latest value written is {}",
            entry.value
        );
        ensure!(
            entry.alive(now),
            "iter() yields {value} for key {key}, whose deadline {:?} has passed",
            entry.deadline
        );
    }
    let gone: Vec<_> = model
        .iter()
        .filter(|&(&key, entry)| !contents.contains_key(&key) && entry.alive(now) && !may_lack(key))
        .collect();
    ensure!(
        gone.is_empty(),
        "iter() lacks {gone:?}, which nothing removed and whose deadlines are ahead; it yields {contents:?}"
    );
    model.retain(|key, _| contents.contains_key(key));
    Ok(())
}

/// `cache`'s contents as `iter()` yields them, checked against `len()` and `weighted_size()`
/// (equal to the count and the weights of what `iter()` yields if `settled`, else no less:
/// both count expired entries not yet removed), `is_empty()` and `capacity`, which
/// `capacity()` must be and which bounds `weighted_size()` and, unweighted, `len()`.
fn contents(
    cache: &Store,
    config: DurableConfig,
    capacity: u64,
    settled: bool,
) -> Result<Values, String> {
    let mut contents = Values::new();
    let mut weight = 0;
    for (key, bytes) in cache.iter() {
        let value = value_of("iter()", &bytes)?;
        if let Some(earlier) = contents.insert(key, value) {
            return Err(format!(
                "iter() yielded key {key} twice, with {earlier} and {value}"
            ));
        }
        weight += config.weight(value);
    }
    let len = cache.len();
    ensure!(
        contents.len() == len || (!settled && contents.len() < len),
        "iter() yielded {} entries but len() is {len}: {contents:?}",
        contents.len()
    );
    // Entries of weight 0 take no room, so any number of them fit.
    let most = if config.weighted { u64::MAX } else { capacity };
    check_len(len, cache.is_empty(), most)?;
    same("capacity()", cache.capacity(), capacity)?;
    let weighted_size = cache.weighted_size();
    ensure!(
        weighted_size <= capacity,
        "weighted_size() {weighted_size} exceeds the capacity {capacity}: {contents:?}"
    );
    ensure!(
        weight == weighted_size || (!settled && weight <= weighted_size),
        "the entries iter() yields weigh {weight} but weighted_size() is {weighted_size}: {contents:?}"
    );
    Ok(contents)
}

/// Opens (or creates) the durable cache in `dir`, without expiry, weighted if `config` is.
pub(crate) fn open_at(dir: &Path, config: DurableConfig, capacity: u64) -> Result<Store, String> {
    open_with(dir, config, capacity, None, None)
}

/// Opens (or creates) the durable cache in `dir`, with `expiry`'s time-to-live in milliseconds
/// on its mock clock, if any, and then without a janitor: expired entries leave when an
/// operation removes them, never between the checks of one.
fn open_with(
    dir: &Path,
    config: DurableConfig,
    capacity: u64,
    ttl: Option<u64>,
    time: Option<&MockClock>,
) -> Result<Store, String> {
    let builder = Cache::builder()
        .max_capacity(capacity)
        .policy(config.policy.into())
        .shards(config.shards)
        .hasher(FixedState::default());
    let builder = if config.weighted {
        builder.weigher(|_: &u64, bytes: &Vec<u8>| durable_weight_of(bytes))
    } else {
        builder
    };
    // The run's clock with or without expiry: a cache reopened without expiry reads the
    // records' deadlines by it too.
    let builder = match time {
        Some(time) => builder.clock(time.clock()),
        None => builder,
    };
    let builder = match ttl {
        Some(ttl) => builder
            .time_to_live(Duration::from_millis(ttl))
            .without_janitor(),
        None => builder,
    };
    let builder = builder
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
    fn weights_run_from_zero_to_more_than_any_capacity() {
        let unweighted = DurableConfig {
            capacity: DURABLE_MAX_CAPACITY,
            policy: PolicyKind::S3Fifo,
            shards: 1,
            durability: DurabilityKind::Manual,
            codec: ValueCodec::Postcard,
            time_to_live: None,
            weighted: false,
        };
        let weighted = DurableConfig {
            weighted: true,
            ..unweighted
        };
        for high in 0..=DurableValue::MAX >> 8 {
            for low in [0, 1, 255] {
                let value = high << 8 | low;
                let weight = durable_weight_of(&value_bytes(value));
                assert_eq!(weight, DURABLE_WEIGHTS[usize::from(high & 7)], "{value}");
                assert_eq!(weighted.weight(value), u64::from(weight), "{value}");
                assert_eq!(unweighted.weight(value), 1, "{value}");
            }
        }
        assert_eq!(weighted.weight(0x0700), DURABLE_MAX_CAPACITY + 1);
        assert_eq!(weighted.weight(0xF0FF), 0, "an oversize value of weight 0");
        assert!(DURABLE_WEIGHTS.contains(&0));
        assert_eq!(durable_weight_of(&[7]), 1);
        // Room in every shard for every key at the heaviest weight.
        let roomy_share = weighted.roomy_capacity() / weighted.shards as u64;
        assert!(roomy_share >= DURABLE_KEY_SPACE * HEAVIEST);
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
                | DurableOp::Reboot { .. }
                | DurableOp::Advance(_)
                | DurableOp::RunPendingTasks
                | DurableOp::Restart { .. } => 0,
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
