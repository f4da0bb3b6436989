//! A cache whose entries survive a restart: Python's `shelve` with `writeback=True`, for a
//! bounded concurrent cache.
//!
//! ```
//! use larder::{Cache, Durability, IntoDurable};
//!
//! let dir = std::env::temp_dir().join(format!("larder-doc-durable-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let cache = Cache::<String, u64>::builder()
//!     .max_capacity(10_000)
//!     .durable(&dir)
//!     .durability(Durability::Manual)
//!     .build()?;
//! cache.insert("answer".to_string(), 42)?;
//! assert_eq!(cache.get("answer"), Some(42)); // reads are the core's lock-free reads
//! cache.close()?; // synced and closed: the directory can be opened again
//!
//! let reopened = Cache::<String, u64>::builder()
//!     .max_capacity(10_000)
//!     .durable(&dir)
//!     .build()?;
//! assert_eq!(reopened.get("answer"), Some(42));
//! # drop(reopened);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), larder::durable::Error>(())
//! ```
//!
//! # How it works
//! A [`DurableCache`] is a [`Cache`] plus a log ([`larder_log::Log`]) that mirrors the cache's
//! live set. What keeps the two in step is that, for each key, the log's records come in the
//! order of the cache's changes. Every write to a key holds the key's *stripe* (one of
//! 64 mutexes, picked by the key's hash) from before it appends until after it
//! changes the cache; the log's own lock is held only for the append. So two writes of one key
//! never interleave, and writes of keys in different stripes append one at a time but change
//! the cache in parallel.
//!
//! 1. `insert` takes the key's stripe, encodes the key and value into the thread's buffers (a
//!    codec error changes nothing), appends a put, then inserts into the cache. If the cache
//!    refused the entry (too heavy: the key's old value goes too) a delete follows.
//! 2. Entries the cache evicts or expires reach a removal observer
//!    ([`CacheBuilder::removal_observer`]), which queues their keys. The write drains the queue
//!    before it returns, each key under its own stripe: a delete for each key the cache no
//!    longer holds. A key written again since it was evicted is left alone: its newer put is
//!    already in the log, and no write of it can be half done while its stripe is held. Any
//!    write may drain keys another write evicted, so drains run one at a time, and a write
//!    waits for the drain in progress before it returns (`evicted.rs`).
//! 3. Expiry removed by the janitor is drained the same way: by the next write or `sync`, and
//!    in [`Durability::Interval`] by each background sync. Until then a reopen drops such an
//!    entry anyway when its deadline is in its record (a time-to-live), unless the wall clock
//!    was stepped back to before that deadline since (`docs/DURABILITY.md`, "Three limits").
//!    When the last handle goes, the cache is first detached from its janitor
//!    ([`Cache::detach_from_janitor`], which waits out a tick in progress), then what is left
//!    expires and the queue is drained one last time before the log closes: no removal is
//!    told after that drain. (An eviction listener, or a removal observer the user set on the
//!    builder, that drops the last handle on the janitor's thread closes the log inside the
//!    tick, which cannot be waited out there; the cache tells the observer set last, the
//!    durable cache's, of every entry of the tick's batch before an observer set earlier or
//!    the listener hears the first, so their keys are queued for that drain.)
//! 4. `clear` takes every stripe, in order, so it falls between whole writes of every key.
//!    (A value's `Drop` that panics during the clear does not stop it: the cache clears every
//!    shard, then the panic goes on.)
//! 5. Recovery loads through the cache, its capacity first shared out over the shards to fit
//!    the survivors (a reopened cache's hasher, seeded afresh, puts keys in other shards;
//!    `Live::load_into`), and the keys of entries the cache does not keep are
//!    deleted from the log by the first drain: those its policy evicts reach the removal
//!    observer, and those it refuses as too heavy (which it reports to nobody) are queued by
//!    the load itself.
//! 6. User code that panics inside the cache's change (a weigher, `K::eq`, a value's `Drop`)
//!    unwinds out of an `insert` or `remove` whose record is already appended, and the record
//!    may say what the cache never did: a put of a value the weigher refused to weigh. Before
//!    the panic goes on to the caller, the write records what the cache now holds for the key,
//!    a put of its value (with its remaining time to live) or a delete, still under the
//!    stripe, so that record is the key's last (`Inner::change_cache`).
//!
//! **An eviction listener must not write to the same durable cache**, nor may the other user
//! code a write runs: a removal observer the user set on the builder, the codecs, the weigher,
//! `K`'s `Hash` and `Eq`, and the `Drop` of a key or value, this cache's or any other cache's
//! (the core frees what a thread removed earlier, from whichever cache, at the end of a later
//! write of that thread, which for a durable cache is inside its stripe: a value of an
//! in-memory cache whose `Drop` writes to a durable cache waits for itself when its thread,
//! which evicted it, next clears that durable cache). The cache runs a listener after the
//! shard's lock is released, but a durable write still holds its key's stripe (and `clear`
//! every stripe) while the cache's removals are told and old values are freed, so such a write
//! of a key in a stripe its thread holds waits for itself, and two threads each holding the
//! other's stripe wait for each other. Writing to another cache, durable or not, is fine,
//! but from a `Drop`, which may run inside a write of any durable cache its thread writes to.
//! (A known limit: lifting it means telling removals and freeing once the stripes are
//! released.) That code may sync the same
//! cache, though, compact it or run its pending tasks, or close or drop a clone of it: a sync
//! inside a write of its cache takes no stripe, and leaves the deletes of what was evicted to
//! that write, which records them before it returns (`Holding`), and a compaction records
//! them before it takes its lock, under which it waits for no stripe (`Inner::compact`). On a
//! thread that holds no handle, the last handle may go too: in a listener or a user's
//! observer on the janitor's thread (step 3), and in the key codec as the janitor's sync (or a
//! compaction) records the deletes of what expired, whose end then closes the log
//! (`Inner::shut_down`).
//!
//! So the log's last record for each key says what the cache holds (or held when it was
//! stopped), and recovery replays it: segments in order, the last record per key winning,
//! deletes and clears honoured, entries past their deadline dropped, the cache's policy
//! evicting as it loads. A reopened cache holds exactly the live entries, none that were
//! deleted, evicted, cleared or expired.
//!
//! Reads never touch the log: `get`, `peek` and `contains_key` are the core's lock-free reads.
//! Appends are serialised by the log's lock; see `docs/DURABILITY.md` for the costs. Each
//! durable cache also runs a thread that faults in the log's next pages ahead of the appends
//! (`prefault.rs`), which stops before the log closes.
//!
//! # Durability
//! [`Durability`] says when appended records reach stable storage; `docs/DURABILITY.md` has
//! the table of what a process crash and a power loss can lose in each mode, and the sync
//! steps. In every mode a record is in the page cache when `insert` returns, so a crash of the
//! process alone loses nothing that was acknowledged.
//!
//! # Expiry on disk
//! A record stores its entry's absolute deadline in wall-clock milliseconds: the cache's
//! time-to-live counted from the write. After a restart an entry lives until that deadline, read
//! against the wall clock as the load reaches the entry (a large load takes a while), and never
//! longer than the reopened cache's time-to-live: a deadline further out than that was written
//! before the wall clock was stepped back. What is left is rounded up to a lifetime the cache
//! keeps ([`Cache::lifetime_at_least`]), never down: an entry that expired before its
//! record's deadline would come back after a crash that came before its delete was recorded.
//! A cache opened without expiry keeps such entries for good, and writes each again without
//! its deadline as it opens, so that the log agrees. A time-to-idle is not recorded (reads do
//! not write the log): a recovered entry starts a fresh idle period, counted from its load.
//! The wall clock is the cache's clock's ([`Clock::wall_time`](crate::Clock::wall_time)):
//! the system's, or on a [`MockClock`](crate::MockClock) a time that moves with the mock, so
//! that a test advances one clock through a restart and its expired records stay expired.

mod codec;
mod error;
mod evicted;
mod live;
mod prefault;

pub use codec::{Codec, CodecError, Postcard, RawBytes};
pub use error::{Error, InsertError};
/// The log's own error, which [`Error::Log`] carries: re-exported so that a caller can match
/// its variants (`Locked`, `Corruption`, `Failed`, ...) without depending on `larder-log`.
pub use larder_log::Error as LogError;
pub use larder_log::{
    CompactionReport, Damage, IoCall, Options as LogOptions, RecoveryMode, Reserve,
    Usage as LogUsage,
};

use std::borrow::Borrow;
use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use larder_core::{unwind, Cache, CacheBuilder, CacheStats, Janitor};
use larder_janitor::{Maintain, Registration};
use larder_log::format::Op;
use larder_log::{GroupCommit, Log};

use evicted::EvictedKeys;
use live::Live;
use prefault::Prefaulter;

/// When a durable cache's writes reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `insert`, `remove` and `clear` return only once their record is on stable storage.
    /// Concurrent writers share syncs (group commit): one `msync` covers every record appended
    /// before it started.
    Always,
    /// Synced in the background every interval (by the janitor). A process crash loses
    /// nothing; an OS crash or power loss loses at most the last interval's writes, plus those
    /// of the sync still running (a sync longer than the interval holds up the next). The
    /// interval is at least [`MIN_INTERVAL`](Self::MIN_INTERVAL) (1 ms): the janitor ticks in
    /// whole milliseconds, so a shorter one, zero included, is refused by
    /// [`DurableBuilder::build`] ([`Error::IntervalTooShort`]) rather than silently rounded.
    Interval(Duration),
    /// Synced by [`DurableCache::sync`], [`DurableCache::close`] and the drop of the last
    /// handle, like `shelve` with `writeback=True`, and by each compaction, which syncs every
    /// write so far before it rewrites the log. With [`Compaction::Auto`], the default, the
    /// janitor compacts when the log is due: add [`Compaction::Manual`] for a cache that syncs
    /// only when asked.
    Manual,
}

impl Durability {
    /// The shortest [`Durability::Interval`]: 1 ms, the janitor's finest tick.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(1);
}

impl Default for Durability {
    /// `Interval(1 s)`, what [`IntoDurable::durable`] starts with.
    ///
    /// ```
    /// # use larder::Durability;
    /// # use std::time::Duration;
    /// assert_eq!(Durability::default(), Durability::Interval(Duration::from_secs(1)));
    /// ```
    fn default() -> Self {
        Durability::Interval(Duration::from_secs(1))
    }
}

/// When a durable cache's log is compacted: rewritten as the live entries alone, so that
/// replaced, removed, evicted and expired entries stop taking disk space and recovery time.
/// See `docs/DURABILITY.md` for the steps.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Compaction {
    /// The janitor compacts once the log holds at least `min_bytes` of records and an
    /// estimated `dead_share` of them (0 < share ≤ 1) belong to entries no longer live. The
    /// estimate counts the live entries at the log's average put size, so it is exact right
    /// after a compaction and close whenever values are of similar sizes. A log with no dead
    /// byte in the estimate is never due, however small the share; at a share of 1, only a
    /// log with no live entry is.
    Auto {
        /// The share of dead bytes that triggers a compaction. Default: 0.5.
        dead_share: f64,
        /// The least log size worth compacting, in bytes. Default: 4 MiB.
        min_bytes: u64,
    },
    /// Only [`DurableCache::compact`] compacts.
    Manual,
}

impl Default for Compaction {
    /// `Auto { dead_share: 0.5, min_bytes: 4 MiB }`, what [`IntoDurable::durable`] starts with.
    ///
    /// ```
    /// # use larder::durable::Compaction;
    /// let auto = Compaction::Auto { dead_share: 0.5, min_bytes: 4 << 20 };
    /// assert_eq!(Compaction::default(), auto);
    /// ```
    fn default() -> Self {
        Compaction::Auto {
            dead_share: 0.5,
            min_bytes: 4 << 20,
        }
    }
}

impl Compaction {
    /// Whether a log with `usage`, of which `live_entries` puts are live, is due.
    fn due(self, usage: larder_log::Usage, live_entries: u64) -> bool {
        let Compaction::Auto {
            dead_share,
            min_bytes,
        } = self
        else {
            return false;
        };
        if usage.bytes < min_bytes.max(1) {
            return false;
        }
        // The live bytes, `live_entries * put_bytes / puts`, in integers: in floating point,
        // a log of live puts alone (a compacted one) came out a rounding error short of its
        // size, and a share as small as that error had the janitor compact it at every tick,
        // with nothing written. In integers it is exact when every put is live, and a log
        // with no dead byte is never due, whatever the share (the product fits in a `u128`).
        let live =
            u128::from(live_entries) * u128::from(usage.put_bytes) / u128::from(usage.puts.max(1));
        let dead = usage
            .bytes
            .saturating_sub(u64::try_from(live).unwrap_or(u64::MAX));
        // At a share of 1 only a log with nothing live is due (exactly, below 2^53 bytes,
        // where `dead` and `bytes` convert without rounding).
        dead > 0 && dead as f64 >= dead_share * usage.bytes as f64
    }
}

/// Turns a [`CacheBuilder`] into a [`DurableBuilder`]: `Cache::builder().max_capacity(n)
/// .durable(dir)`.
pub trait IntoDurable<K, V, S> {
    /// A durable cache kept in `dir` (created if missing), with the keys and values encoded
    /// by [`Postcard`] unless [`DurableBuilder::key_codec`] or
    /// [`DurableBuilder::value_codec`] say otherwise.
    fn durable(self, dir: impl AsRef<Path>) -> DurableBuilder<K, V, S>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + 'static,
        V: serde::Serialize + serde::de::DeserializeOwned + 'static;

    /// A durable cache kept in `dir` (created if missing), with the keys and values encoded
    /// by the codecs given: for types serde does not describe, which
    /// [`durable`](Self::durable) cannot start from, since its default codecs need serde.
    ///
    /// ```
    /// use larder::durable::{Codec, CodecError};
    /// use larder::{Cache, IntoDurable};
    ///
    /// // A key type with no serde, stored as its eight bytes.
    /// #[derive(Clone, PartialEq, Eq, Hash, Debug)]
    /// struct Id(u64);
    /// struct IdBytes;
    /// impl Codec<Id> for IdBytes {
    ///     fn encode(&self, id: &Id, out: &mut Vec<u8>) -> Result<(), CodecError> {
    ///         out.extend_from_slice(&id.0.to_le_bytes());
    ///         Ok(())
    ///     }
    ///     fn decode(&self, bytes: &[u8]) -> Result<Id, CodecError> {
    ///         let bytes = bytes.try_into().map_err(|_| CodecError::new("not 8 bytes"))?;
    ///         Ok(Id(u64::from_le_bytes(bytes)))
    ///     }
    /// }
    ///
    /// let dir = std::env::temp_dir().join(format!("larder-doc-codecs-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let open = || {
    ///     Cache::<Id, Vec<u8>>::builder()
    ///         .max_capacity(100)
    ///         .durable_with_codecs(&dir, IdBytes, larder::durable::RawBytes)
    ///         .build()
    /// };
    /// let cache = open()?;
    /// cache.insert(Id(7), b"seven".to_vec())?;
    /// cache.close()?;
    /// assert_eq!(open()?.get(&Id(7)), Some(b"seven".to_vec()));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn durable_with_codecs(
        self,
        dir: impl AsRef<Path>,
        key_codec: impl Codec<K> + 'static,
        value_codec: impl Codec<V> + 'static,
    ) -> DurableBuilder<K, V, S>;
}

impl<K, V, S> IntoDurable<K, V, S> for CacheBuilder<K, V, S> {
    fn durable(self, dir: impl AsRef<Path>) -> DurableBuilder<K, V, S>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + 'static,
        V: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        self.durable_with_codecs(dir, Postcard, Postcard)
    }

    fn durable_with_codecs(
        self,
        dir: impl AsRef<Path>,
        key_codec: impl Codec<K> + 'static,
        value_codec: impl Codec<V> + 'static,
    ) -> DurableBuilder<K, V, S> {
        DurableBuilder {
            cache: self,
            dir: dir.as_ref().to_path_buf(),
            durability: Durability::default(),
            compaction: Compaction::default(),
            key_codec: Arc::new(key_codec),
            value_codec: Arc::new(value_codec),
            log: larder_log::Options::default(),
            recovery: None,
        }
    }
}

/// Builds a [`DurableCache`]; made by [`IntoDurable::durable`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct DurableBuilder<K, V, S> {
    cache: CacheBuilder<K, V, S>,
    dir: PathBuf,
    durability: Durability,
    compaction: Compaction,
    key_codec: Arc<dyn Codec<K>>,
    value_codec: Arc<dyn Codec<V>>,
    log: larder_log::Options,
    /// Set by [`recovery`](DurableBuilder::recovery): it wins over `log`'s mode, whichever
    /// was called last.
    recovery: Option<RecoveryMode>,
}

impl<K, V, S> DurableBuilder<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// When writes reach stable storage. Default: [`Durability::Interval`] of one second.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// When the log is compacted. Default: [`Compaction::Auto`] at half the log dead, once it
    /// holds 4 MiB.
    pub fn compaction(mut self, compaction: Compaction) -> Self {
        self.compaction = compaction;
        self
    }

    /// What opening does with damage in the log's sealed files. Default:
    /// [`RecoveryMode::Strict`], which refuses to open; [`RecoveryMode::SkipCorrupt`] opens
    /// with what can be read and reports the rest ([`DurableCache::damage`]). Wins over the
    /// mode in [`log_options`](Self::log_options), whichever is called first. A log a newer
    /// Larder wrote is no damage: either mode refuses it ([`LogError::NewerFormat`]), leaving
    /// it as it was for the version that wrote it.
    pub fn recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = Some(mode);
        self
    }

    /// How keys become bytes. Default: [`Postcard`].
    pub fn key_codec(mut self, codec: impl Codec<K> + 'static) -> Self {
        self.key_codec = Arc::new(codec);
        self
    }

    /// How values become bytes. Default: [`Postcard`]; [`RawBytes`] stores byte and string
    /// values untouched.
    pub fn value_codec(mut self, codec: impl Codec<V> + 'static) -> Self {
        self.value_codec = Arc::new(codec);
        self
    }

    /// The log's options: its segment size (default 64 MiB; `build` refuses more than
    /// [`larder_log::MAX_SEGMENT_SIZE`], 1 TiB), its recovery mode (unless
    /// [`recovery`](Self::recovery) sets it, before or after this) and, for fault-injection
    /// tests, a hook in front of its system calls. Default: [`LogOptions::default`]. How the log reserves disk space is not
    /// taken from here but from the durability mode: [`Reserve::Zeroed`] for
    /// [`Durability::Always`], whose every write waits for a sync, and
    /// [`Reserve::Allocate`] for the others (`larder_log::Reserve` says why).
    pub fn log_options(mut self, options: LogOptions) -> Self {
        self.log = options;
        self
    }

    /// Opens the directory, replays its log into a new cache, and returns the cache.
    ///
    /// # Errors
    /// [`Error::Build`] for the cache's configuration; [`Error::IntervalTooShort`] for a
    /// [`Durability::Interval`] under [`Durability::MIN_INTERVAL`];
    /// [`Error::InvalidCompaction`] for a dead share outside `(0, 1]`; [`Error::Log`] if the
    /// directory is open elsewhere ([`LogError::Locked`]), given as `""`
    /// ([`LogError::EmptyPath`]), damaged ([`LogError::Corruption`]), written by a newer
    /// Larder ([`LogError::NewerFormat`], in either recovery mode) or unreadable;
    /// [`Error::Codec`] for a record the codecs do not decode, named by its sequence number,
    /// its file and its offset there (written with other key or value types: but [`Postcard`]
    /// does not record types, and a change it can read, such as `i32` to `u32` or an enum's
    /// variants reordered, opens without an error, each value read as the new type says);
    /// [`Error::Janitor`] if the thread that syncs a [`Durability::Interval`] cache or compacts
    /// a [`Compaction::Auto`] one cannot be started. When an error is returned, nothing in the
    /// directory has changed but what recovery repairs once it has read the files: a torn last
    /// record cut off, files an unfinished compaction left removed; and after an
    /// [`Error::Janitor`], which comes once the log is open, what the open does to write on: a
    /// log of an older version carried into this one's format, unfinished rolls removed, a new
    /// segment, a new log's first files (nothing a retry reads differently). A record that
    /// does not decode stops the open before even those, and before a log written by an older
    /// version is carried on in this one's format, so that an open with the right types finds
    /// the files as they were. (Last, the open records the deletes of what the load evicted
    /// and the deadlines it cut short; an [`Error::Log`] or [`Error::Codec`] there leaves those
    /// written before it.)
    ///
    /// ```
    /// use larder::durable::{Compaction, Durability, Error, LogError};
    /// use larder::{Cache, IntoDurable};
    /// use std::time::Duration;
    ///
    /// let dir = std::env::temp_dir().join(format!("larder-doc-build-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let builder = || Cache::<u64, u64>::builder().max_capacity(100).durable(&dir);
    /// let zero = builder().durability(Durability::Interval(Duration::ZERO)).build();
    /// assert!(matches!(zero, Err(Error::IntervalTooShort { .. })));
    /// let none_dead = Compaction::Auto { dead_share: 0.0, min_bytes: 4 << 20 };
    /// assert!(matches!(builder().compaction(none_dead).build(), Err(Error::InvalidCompaction { .. })));
    ///
    /// let open = builder().build()?;
    /// let again = builder().build().map(drop).unwrap_err();
    /// assert!(matches!(again.log(), Some(LogError::Locked { .. })));
    /// drop(open); // the last handle's drop releases the directory
    /// builder().build()?.close()?;
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Panics
    /// When user code run by the load panics (the weigher, `K`'s `Hash` or `Eq`, a codec
    /// decoding, a key's or value's `Drop`), the panic reaches the caller. It comes before the
    /// janitor is started and before the deletes and deadlines above are written, so the
    /// directory is left as an error from the load would leave it, and unlocked. A codec that
    /// panics encoding those deletes and deadlines, last, leaves the ones written before it, as
    /// an error there does, and the directory unlocked.
    pub fn build(self) -> Result<DurableCache<K, V, S>, Error> {
        if let Durability::Interval(every) = self.durability {
            if every < Durability::MIN_INTERVAL {
                return Err(Error::IntervalTooShort { interval: every });
            }
        }
        if let Compaction::Auto { dead_share, .. } = self.compaction {
            if !(dead_share > 0.0 && dead_share <= 1.0) {
                return Err(Error::InvalidCompaction { dead_share });
            }
        }
        let evicted: Arc<EvictedKeys<K>> = Arc::default();
        let queue = Arc::clone(&evicted);
        let cache = self
            .cache
            .removal_observer(move |key: &K, cause| {
                if cause.was_evicted() {
                    queue.push(key.clone());
                }
            })
            .build()?;
        let mut live = Live::new(&*self.key_codec, &*self.value_codec);
        let reserve = match self.durability {
            Durability::Always => Reserve::Zeroed,
            Durability::Interval(_) | Durability::Manual => Reserve::Allocate,
        };
        let mut options = self.log.with_reserve(reserve);
        if let Some(mode) = self.recovery {
            options = options.with_recovery(mode);
        }
        let log = Log::open_checked(&self.dir, options, |record| live.apply(record))?;
        for d in log.damage() {
            warn_skipped(&self.dir, d);
        }
        let restated = live.load_into(&cache, &evicted, cache.clock().wall_ms());
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            compaction_thread: AtomicBool::new(false),
            sync_thread: AtomicBool::new(false),
            log_failure_reported: AtomicBool::new(false),
            close_deferred: AtomicBool::new(false),
            // Nothing replayed is known durable: the records of the active segment (and of a
            // segment rolled and never sealed) may be pages a crashed process left dirty in
            // the page cache. The log's first sync flushes them; until then a write that
            // acknowledges them (a remove that finds its key absent) must wait for one.
            group: GroupCommit::new(0),
            writer: CachePadded::new(Mutex::new(Some(Writer {
                prefaulter: Prefaulter::start(),
                log,
            }))),
            stripes: (0..STRIPES).map(|_| CachePadded::default()).collect(),
            stripe_hasher: ahash::RandomState::new(),
            dir: self.dir.clone(),
            cache,
            evicted,
            durability: self.durability,
            compaction: self.compaction,
            compacting: Mutex::new(Backoff::default()),
            key_codec: self.key_codec,
            value_codec: self.value_codec,
            last_sync: Mutex::new(Instant::now()),
            registration: OnceLock::new(),
            #[cfg(test)]
            flush_hook: Mutex::new(None),
            #[cfg(test)]
            threads_started: Default::default(),
        });
        let interval = match inner.durability {
            Durability::Interval(every) => Some(every),
            Durability::Always | Durability::Manual => None,
        };
        let auto_compaction = matches!(inner.compaction, Compaction::Auto { .. });
        if interval.is_some() || auto_compaction {
            let janitor = match interval {
                Some(every) if has_own_janitor(every) => Janitor::dedicated(every),
                _ => Janitor::shared(),
            };
            let weak: Weak<Inner<K, V, S>> = Arc::downgrade(&inner);
            let registration = janitor.register(weak).map_err(Error::Janitor)?;
            let _ = inner.registration.set((registration, janitor));
        }
        // What the policy evicted or the cache refused while loading leaves the log too. Only
        // now that the janitor's thread has started: an open refused for want of it must leave
        // the log as it found it, and these deletes and restated deadlines would otherwise stay
        // (a retry with a larger capacity got back only what the refused open had kept). A
        // tick that comes meanwhile drains and writes as it does beside any write.
        // A codec's panic here closes the log as an error does, before it goes on to the
        // caller (`# Panics` above).
        let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inner
                .drain_evicted()
                .and_then(|_| inner.restate_deadlines(restated))
        }));
        if !matches!(recorded, Ok(Ok(()))) {
            inner.abandon();
        }
        recorded.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok(DurableCache {
            handle: Arc::new(Handle {
                inner,
                shut_down: Inner::shut_down,
            }),
        })
    }
}

/// Reports damage that [`RecoveryMode::SkipCorrupt`] skipped in the log in `dir`, by the open
/// or by a compaction, through `tracing`.
fn warn_skipped(dir: &Path, d: &Damage) {
    tracing::warn!(
        dir = %dir.display(),
        segment = d.segment,
        offset = d.offset,
        bytes_skipped = d.bytes_skipped,
        reason = d.reason,
        "larder: skipped damage in the durable cache's log (RecoveryMode::SkipCorrupt)"
    );
}

/// Encodes `item` with `codec` into `buffer`, replacing what it held; a failure names `what`
/// was being encoded.
fn encode<T>(
    codec: &dyn Codec<T>,
    what: &'static str,
    item: &T,
    buffer: &mut Vec<u8>,
) -> Result<(), Error> {
    buffer.clear();
    codec.encode(item, buffer).map_err(|source| Error::Codec {
        what,
        seq: None,
        location: None,
        source,
    })
}

/// [`lock`], if no other thread holds the lock.
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent between statements; a panic in one
    // (from a codec, say) leaves nothing half-done to repair.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bounded concurrent cache whose entries survive a restart; built by
/// `Cache::builder().max_capacity(n).durable(dir).build()`. A cheap-to-clone handle like
/// [`Cache`]; the log is synced and closed, and its directory's lock released, when the last
/// handle is dropped (after waiting for a compaction that is running, if any).
pub struct DurableCache<K, V, S = ahash::RandomState> {
    handle: Arc<Handle<K, V, S>>,
}

impl<K, V, S> Clone for DurableCache<K, V, S> {
    fn clone(&self) -> Self {
        DurableCache {
            handle: Arc::clone(&self.handle),
        }
    }
}

/// What the users' handles share. The janitor holds the cache's [`Inner`] too (a `Weak`,
/// upgraded for each tick), so the `Inner` can outlive the last handle by a moment; the log
/// must not. Dropping the last `Handle` closes it at once, on the dropping thread, so that the
/// directory can be opened again as soon as the drop returns.
struct Handle<K, V, S> {
    inner: Arc<Inner<K, V, S>>,
    /// [`Inner::shut_down`], taken where its bounds hold (`Drop` may not require them).
    shut_down: fn(&Inner<K, V, S>),
}

impl<K, V, S> Drop for Handle<K, V, S> {
    fn drop(&mut self) {
        (self.shut_down)(&self.inner);
    }
}

struct Inner<K, V, S> {
    cache: Cache<K, V, S>,
    /// The log, held only to append (or sync, or compact). `None` once the last handle is gone.
    /// On lines of its own, and the fields an append writes next to the lock word ([`Log`]'s
    /// doc): at two threads, an append pulls those from the other core, and nothing else
    /// shares them.
    writer: CachePadded<Mutex<Option<Writer>>>,
    /// Each key's write goes through one of these (module doc).
    stripes: Box<[CachePadded<Mutex<()>>]>,
    /// Picks a key's stripe.
    stripe_hasher: ahash::RandomState,
    dir: PathBuf,
    group: GroupCommit,
    /// Keys the cache evicted or expired on its own, to be recorded (step 2 of the module doc).
    evicted: Arc<EvictedKeys<K>>,
    durability: Durability,
    compaction: Compaction,
    /// Held while a compaction runs (one at a time), with what the last failure advises.
    compacting: Mutex<Backoff>,
    key_codec: Arc<dyn Codec<K>>,
    value_codec: Arc<dyn Codec<V>>,
    /// When an `Interval` sync last started.
    last_sync: Mutex<Instant>,
    /// For `Interval`: the janitor that syncs, and this cache's place with it.
    registration: OnceLock<(Registration, Janitor)>,
    /// This cache, for the threads a janitor's compaction and a shared janitor's interval sync
    /// run on ([`RunOn::OwnThread`]).
    me: Weak<Inner<K, V, S>>,
    /// Whether a compaction's thread has been started and has not finished.
    compaction_thread: AtomicBool,
    /// Whether an interval sync's thread has been started and has not finished.
    sync_thread: AtomicBool,
    /// Whether an interval sync has logged a log error: the log is failed from then on, and
    /// the syncs of later ticks, refused for it, say nothing new.
    log_failure_reported: AtomicBool,
    /// Whether the last handle went inside a drain of this cache on its thread, whose end
    /// closes the log ([`Inner::shut_down`]).
    close_deferred: AtomicBool,
    /// Run by the leader of a flush in [`sync_through`](Inner::sync_through), before it takes
    /// the log's sync point (tests).
    #[cfg(test)]
    flush_hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// How many threads [`run_apart`](Inner::run_apart) has started (tests).
    #[cfg(test)]
    threads_started: std::sync::atomic::AtomicUsize,
}

/// Where maintenance that waits on the disk runs: a due compaction, and an interval sync from
/// the shared janitor.
#[derive(Clone, Copy)]
enum RunOn {
    /// The calling thread: the user's [`DurableCache::run_pending_tasks`], which asks for the
    /// work to be done by the time it returns.
    Caller,
    /// A thread of its own, so that the janitor's thread goes on ticking. A compaction reads
    /// and rewrites the whole log, and on the janitor's thread it held up this cache's
    /// `Interval` syncs (stretching what a power loss can take past the interval) and every
    /// other cache's expiry on a shared janitor. A sync waits for the disk, for seconds on a
    /// slow or failing one, and on the shared janitor's thread it held up every other cache's
    /// expiry and syncs (see [`Inner::interval_sync`]).
    OwnThread,
}

/// The name of a compaction's thread.
const COMPACTION_THREAD: &str = "larder-compact";

/// The name of an interval sync's thread.
const SYNC_THREAD: &str = "larder-sync";

/// Whether an `Interval(every)` cache has a janitor of its own: one whose tick is the interval,
/// when the interval is shorter than the shared janitor's tick, which could not keep it.
fn has_own_janitor(every: Duration) -> bool {
    every < larder_janitor::DEFAULT_TICK
}

/// The log and its prefault thread. `repr(C)`, the log first: its first fields share a line
/// with the lock word ([`Inner::writer`]).
#[repr(C)]
struct Writer {
    log: Log,
    /// Faults in the log's next pages for the appenders (`prefault.rs`).
    prefaulter: Prefaulter,
}

impl Drop for Writer {
    /// Stops the prefault thread, which finishes the chunk in hand, before the log closes
    /// (the fields drop after this, `log` first).
    fn drop(&mut self) {
        self.prefaulter.stop();
    }
}

/// Stripes of [`Inner::stripes`]: enough that writers rarely meet on one.
pub(crate) const STRIPES: usize = 64;

/// Encoding buffers, reused by every write on a thread.
///
/// They used to belong to the stripes, so a write encoded into heap lines that the last write
/// through its stripe, often on the other core, had written: at two threads each insert pulled
/// them across. A thread's own stay in its core's cache.
///
/// A buffer that one large write grew past [`KEPT_BUFFER_CAPACITY`] is freed when the write
/// ends ([`Buffers::trim`]): kept, one 64 MiB value would hold 64 MiB on its thread for the
/// thread's life. A write that large spends far longer encoding and appending than the
/// allocation costs it.
#[derive(Default)]
struct Buffers {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// The largest buffer capacity a thread keeps between writes: 1 MiB.
const KEPT_BUFFER_CAPACITY: usize = 1 << 20;

impl Buffers {
    /// Frees each buffer whose capacity is over [`KEPT_BUFFER_CAPACITY`].
    fn trim(&mut self) {
        for buffer in [&mut self.key, &mut self.value] {
            if buffer.capacity() > KEPT_BUFFER_CAPACITY {
                *buffer = Vec::new();
            }
        }
    }
}

thread_local! {
    /// This thread's [`Buffers`], lent to one [`Stripe`] at a time.
    static BUFFERS: Cell<Buffers> = const {
        Cell::new(Buffers {
            key: Vec::new(),
            value: Vec::new(),
        })
    };
}

thread_local! {
    /// The cache (its [`Inner`]'s address, [`Inner::id`]) of the innermost stripe this thread
    /// holds, or 0 (see [`Holding`]).
    static HOLDING: Cell<usize> = const { Cell::new(0) };
}

/// Marks the thread, while this lives, as holding stripes of one cache: a write of it is
/// under way on the thread, and user code it runs there (an eviction listener, a codec) may
/// call [`Inner::sync`] (through `sync` or `close` on a clone), whose drain takes stripes
/// (step 2 of the module doc). Such a drain came to a stripe the write holds (its own, which
/// one evicted key in 64 shares, or any under a `clear`), and the thread waited for itself
/// for good. So that sync leaves the drain to the write, which records what is queued once
/// its stripes are released, before it returns
/// (`a_listener_that_syncs_the_cache_or_closes_a_clone_does_not_deadlock_its_write` in
/// `tests/durable.rs`). Only the innermost cache is known: should a listener of this cache
/// write to another durable cache whose own listener syncs this one, that sync drains, and
/// may wait for the stripe the outer write holds.
struct Holding {
    /// What [`HOLDING`] said before: a write nested in another's user code, of another cache.
    outer: usize,
}

impl Holding {
    fn new(cache: usize) -> Holding {
        // A thread whose locals are gone (a handle dropped in a thread-local's destructor)
        // marks nothing, and is inside no write.
        let outer = HOLDING.try_with(|h| h.replace(cache)).unwrap_or(0);
        Holding { outer }
    }

    /// Whether this thread is inside a write of the cache `cache`.
    fn inside(cache: usize) -> bool {
        HOLDING.try_with(Cell::get) == Ok(cache)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let _ = HOLDING.try_with(|h| h.set(self.outer));
    }
}

/// A key's stripe, locked, with this thread's buffers to encode the write in.
struct Stripe<'a> {
    _locked: MutexGuard<'a, ()>,
    _holding: Holding,
    buffers: Buffers,
}

impl<'a> Stripe<'a> {
    /// `locked`, a stripe of the cache `cache` ([`Inner::id`]), with this thread's buffers
    /// (empty ones if another stripe has them).
    fn new(cache: usize, locked: MutexGuard<'a, ()>) -> Self {
        Stripe {
            _locked: locked,
            _holding: Holding::new(cache),
            buffers: BUFFERS.try_with(Cell::take).unwrap_or_default(),
        }
    }
}

impl std::ops::Deref for Stripe<'_> {
    type Target = Buffers;
    fn deref(&self) -> &Buffers {
        &self.buffers
    }
}

impl std::ops::DerefMut for Stripe<'_> {
    fn deref_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

impl Drop for Stripe<'_> {
    fn drop(&mut self) {
        let mut buffers = std::mem::take(&mut self.buffers);
        buffers.trim();
        // A write nested in another on the same thread (a codec that writes to a durable
        // cache) found the buffers lent out and started with empty ones; whichever returns
        // last keeps its own. A thread that is exiting has no buffers to return to.
        let _ = BUFFERS.try_with(|b| b.set(buffers));
    }
}

/// Dropped only when the cache's change of a key unwinds (`Inner::change_cache` forgets it
/// otherwise): records what the cache now holds for the key encoded in `buffers`.
struct RestateOnUnwind<'a> {
    buffers: &'a mut Buffers,
    restate: &'a dyn Fn(&mut Buffers),
}

impl Drop for RestateOnUnwind<'_> {
    fn drop(&mut self) {
        (self.restate)(self.buffers);
    }
}

/// The writer, locked, and known to be open.
struct WriterGuard<'a>(MutexGuard<'a, Option<Writer>>);

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        // `Inner::writer` made the guard only after seeing `Some`, and only `shut_down`, which
        // needs the lock this guard holds, sets `None`.
        self.0.as_ref().expect("a WriterGuard holds an open writer")
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.0.as_mut().expect("a WriterGuard holds an open writer")
    }
}

/// After a failed automatic compaction, the janitor waits for the log to grow by half before
/// it tries again, rather than fail (and log the failure) at every tick.
#[derive(Default)]
struct Backoff {
    /// Log bytes below which no automatic compaction is tried.
    retry_at_bytes: u64,
}

impl<K, V, S> Inner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The writer, locked; [`Error::Closed`] once the last handle is gone (which only the
    /// janitor can see).
    fn writer(&self) -> Result<WriterGuard<'_>, Error> {
        let guard = lock(&self.writer);
        match *guard {
            Some(_) => Ok(WriterGuard(guard)),
            None => Err(Error::Closed),
        }
    }

    /// The stripe `key`'s writes go through, locked (module doc), with this thread's buffers.
    fn stripe<Q: Hash + ?Sized>(&self, key: &Q) -> Stripe<'_> {
        // A hasher of its own, seeded apart from the cache's, so stripes and shards are
        // picked independently.
        let h = self.stripe_hasher.hash_one(key);
        Stripe::new(self.id(), lock(&self.stripes[h as usize % STRIPES]))
    }

    /// This cache, as [`Holding`] marks it: its address, never 0.
    fn id(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }

    /// Encodes `key` into `b`'s key buffer.
    fn encode_key(&self, b: &mut Buffers, key: &K) -> Result<(), Error> {
        encode(&*self.key_codec, "key", key, &mut b.key)
    }

    /// Encodes `value` into `b`'s value buffer.
    fn encode_value(&self, b: &mut Buffers, value: &V) -> Result<(), Error> {
        encode(&*self.value_codec, "value", value, &mut b.value)
    }

    /// Appends `op`, under the log's lock for just that, and hands the log's next pages, when
    /// it offers them, to the prefault thread (or, without one, faults them in itself once the
    /// lock is released).
    fn append(&self, op: Op<'_>) -> Result<u64, Error> {
        let (seq, unqueued) = {
            let mut w = self.writer()?;
            let seq = w.log.append(op)?;
            let unqueued = w.log.prefault().and_then(|p| w.prefaulter.submit(p));
            (seq, unqueued)
        };
        if let Some(prefault) = unqueued {
            prefault.run();
        }
        Ok(seq)
    }

    /// Runs `change`, the cache's side of a write of the key encoded in `b.key`, whose record
    /// is appended, while the caller holds the key's stripe. If user code panics inside it,
    /// the record may say what the cache never did, so as the panic goes on, this records what
    /// the cache holds for the key now (step 6 of the module doc). A guard, not
    /// `catch_unwind`: that would call `change` through a pointer on every write.
    #[inline]
    fn change_cache<T>(&self, b: &mut Buffers, change: impl FnOnce() -> T) -> T {
        let restate = |b: &mut Buffers| self.restate_or_log(b);
        let on_unwind = RestateOnUnwind {
            buffers: b,
            restate: &restate,
        };
        let changed = change();
        std::mem::forget(on_unwind);
        changed
    }

    /// [`restate`](Self::restate), run as a panic unwinds: the codec and the value's clone
    /// are user code too, so if they panic or fail, the key keeps the record the write
    /// appended, the failure is logged, and the first panic goes on.
    fn restate_or_log(&self, b: &mut Buffers) {
        // The error described (and dropped) inside the catch too: its `Display` and `Drop`
        // may be a codec's error's, user code, run while the write's own panic unwinds.
        let restated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.restate(b).err().map(|error| error.to_string())
        }));
        let error = match restated {
            Ok(None) => return,
            Ok(Some(error)) => error,
            Err(panic) => {
                // Dropped inside a catch: this runs while the write's own panic unwinds, and a
                // payload whose `Drop` panics would abort the process.
                unwind::quiet(Some(panic));
                "it panicked".to_string()
            }
        };
        tracing::error!(
            %error,
            "a write's change of the cache panicked, and what the cache holds for its key \
             could not be recorded: after a restart the key may hold the value that write \
             meant to store, or none"
        );
    }

    /// Appends a record of what the cache holds for the key encoded in `b.key`: a put of its
    /// value, with its remaining time to live, or a delete. The caller holds the key's stripe.
    ///
    /// The deadline is the time-to-live's alone, as an insert records it: a time-to-idle is
    /// not recorded (module doc). [`Cache::ttl`] would give the idle deadline when it is the
    /// earlier, which reads push back and the record would not follow: the next open would
    /// drop an entry that was still live, or, in a cache with only a time-to-idle, give a
    /// deadline to one that has none.
    fn restate(&self, b: &mut Buffers) -> Result<u64, Error> {
        let key = self
            .key_codec
            .decode(&b.key)
            .map_err(|source| Error::Codec {
                what: "key",
                seq: None,
                location: None,
                source,
            })?;
        // Two reads of the entry, and its lifetime may end between them (`V::clone` is user
        // code, and the clock moves): then it is gone, not kept for good, which is what a
        // rest of `None` would say as a deadline.
        let held = self.cache.peek(&key);
        match held.zip(self.cache.time_to_live_left(&key)) {
            Some((value, left)) => {
                self.encode_value(b, &value)?;
                let expires_at_ms = if left == Duration::MAX {
                    0
                } else {
                    deadline_after(self.cache.clock(), left)
                };
                self.append(Op::Put {
                    key: &b.key,
                    value: &b.value,
                    expires_at_ms,
                })
            }
            None => self.append(Op::Delete { key: &b.key }),
        }
    }

    /// Writes the entries of `keys` again, each with the deadline beside it, as recovery found
    /// them (`Live::load_into`). A deadline of 0: the cache, opened without expiry, keeps the
    /// entry for good, and its record's deadline would otherwise drop it at the next open (and
    /// a compaction would drop it while the cache still holds it). An earlier deadline: the
    /// cache's time-to-live cut the entry short, and its record's later deadline would bring
    /// it back after a crash that came before its delete was recorded. An entry no longer
    /// live by then (refused, or its cut-short lifetime ended while the load went on) gets a
    /// delete instead. With [`Durability::Always`], returns once the records are on stable
    /// storage, and so are the deletes of what the load evicted, also when there is no record
    /// to write again.
    fn restate_deadlines(&self, keys: Vec<(K, u64)>) -> Result<(), Error> {
        let mut through = None;
        for (key, expires_at_ms) in keys {
            let mut b = self.stripe(&key);
            self.encode_key(&mut b, &key)?;
            // Not live: refused as too heavy (its delete is queued with the evictions), or
            // its cut-short lifetime ended while the load went on, and then its record still
            // has the later deadline, which a crash before a janitor's tick would bring back.
            // A delete agrees with the cache either way (no write of the key can come between:
            // the stripe is held).
            let Some(value) = self.cache.peek(&key) else {
                through = Some(self.append(Op::Delete { key: &b.key })?);
                continue;
            };
            self.encode_value(&mut b, &value)?;
            through = Some(self.append(Op::Put {
                key: &b.key,
                value: &b.value,
                expires_at_ms,
            })?);
        }
        // Through the deletes of what the load evicted as well, appended just before: with
        // nothing written again here, the open returned with them unsynced, and a power loss
        // then brought the evicted entries back at a roomier open.
        self.finish_through(through.map_or(0, |seq| seq + 1))
    }

    /// Records a delete for each queued key the cache no longer holds (step 2 of the module
    /// doc), each under its stripe, waiting for a drain in progress on another thread
    /// (`evicted.rs`). Returns one past the last delete appended by any drain so far: every
    /// key queued before the call has its delete below it. The caller holds no stripe.
    ///
    /// A close of the last handle that the key codec made meanwhile, which could not be done
    /// inside the drain, is done as it ends ([`shut_down`](Self::shut_down)).
    fn drain_evicted(&self) -> Result<u64, Error> {
        // Also when a codec's panic ends the drain.
        let _then = OnDrop(|| self.close_if_deferred());
        self.evicted.drain(|key| {
            let mut b = self.stripe(&key);
            if self.cache.contains_key(&key) {
                return Ok(None); // written again since: its put is in the log already
            }
            self.encode_key(&mut b, &key)?;
            self.append(Op::Delete { key: &b.key }).map(Some)
        })
    }

    /// Ends a write whose last record is `seq`: records what the cache evicted during it,
    /// then, in [`Durability::Always`], waits until the write's last record (`seq`, or the
    /// last delete after it) is on stable storage. The caller holds no stripe.
    fn finish(&self, seq: u64) -> Result<(), Error> {
        self.finish_through(seq + 1)
    }

    /// Ends a write after which every record below `through` is to be durable: records what
    /// the cache evicted during it, then, in [`Durability::Always`], waits until those records
    /// and the deletes of the evictions are on stable storage. The caller holds no stripe.
    fn finish_through(&self, through: u64) -> Result<(), Error> {
        let through = through.max(self.drain_evicted()?);
        match self.durability {
            Durability::Always => self.sync_through(through),
            Durability::Interval(_) | Durability::Manual => Ok(()),
        }
    }

    /// Makes every record below `through` durable, sharing the flush with other writers.
    ///
    /// # Errors
    /// As for [`sync`](Self::sync), and [`Error::Closed`] when the log closed before this
    /// flush: the janitor's, racing the last handle's drop, whose own sync covers every
    /// record. That is no failure, and `maintain` says nothing of it (as an [`Error::Log`]
    /// it was logged as a failed interval sync).
    fn sync_through(&self, through: u64) -> Result<(), Error> {
        let flushed = self.group.wait_durable(through, || {
            #[cfg(test)]
            self.run_flush_hook();
            match self.writer() {
                Ok(mut w) => w.log.sync_point(),
                // The group may count this as its failure, as nobody waits on it any more.
                Err(_) => Err(larder_log::Error::Closed),
            }
        });
        flushed.map_err(|e| match e {
            // Here, or from the flush of a point taken before the log was dropped.
            larder_log::Error::Closed => Error::Closed,
            e => Error::Log(e),
        })
    }

    #[cfg(test)]
    fn set_flush_hook(&self, hook: Option<Arc<dyn Fn() + Send + Sync>>) {
        *lock(&self.flush_hook) = hook;
    }

    #[cfg(test)]
    fn run_flush_hook(&self) {
        let hook = lock(&self.flush_hook).clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    fn sync(&self) -> Result<(), Error> {
        // A drain that fails (the key codec refusing a key it once encoded) must not keep the
        // writes before it from their sync: the sync runs all the same, and the drain's error
        // is returned first.
        let drained = self.drain_unless_inside();
        let flushed = self.flush();
        drained.and(flushed)
    }

    /// [`drain_evicted`](Self::drain_evicted), unless this thread is inside a write of this
    /// cache, which drains once its stripes are released ([`Holding`]).
    fn drain_unless_inside(&self) -> Result<(), Error> {
        if Holding::inside(self.id()) {
            Ok(())
        } else {
            self.drain_evicted().map(drop)
        }
    }

    /// The flush of [`sync`](Self::sync): makes every record appended so far durable.
    fn flush(&self) -> Result<(), Error> {
        let through = {
            let w = self.writer()?;
            // A failed log refuses a sync even when its group commit has nothing left to
            // flush (the failure was an append's, and every record before it was synced).
            w.log.check()?;
            w.log.next_seq()
        };
        self.sync_through(through)
    }

    /// Compacts the log (see `larder_log`'s `compact` module): syncs, begins under the writer
    /// lock (a roll), rewrites without it, and takes it again only for the switch (a rename
    /// and a directory sync). One at a time: the caller holds `compacting` (`backoff`).
    ///
    /// The sync's drain is the caller's (`drained`, its outcome), made before it took
    /// `compacting`. A drain waits for the stripes of the keys it records, and an eviction
    /// listener or a value's `Drop` that compacts runs inside a write, which holds its key's
    /// stripe (a `clear`, every stripe) while it waits for `compacting`: drained under it,
    /// a compaction and such a write waited for each other for good
    /// (`a_listener_that_compacts_beside_a_compaction_does_not_deadlock_its_write` in
    /// `tests/reentrancy.rs`). So nothing waits for a stripe, nor for a drain, while it holds
    /// `compacting`.
    fn compact(
        &self,
        backoff: &mut Backoff,
        drained: Result<(), Error>,
    ) -> Result<CompactionReport, Error> {
        let result = (|| {
            // The roll that begins a compaction flushes the active segment under the writer
            // lock; a sync first, whose flush runs without the lock, leaves it little to do.
            let flushed = self.flush();
            drained.and(flushed)?;
            // Expiry queued since the sync is recorded by a later write, above the base.
            let job = self.writer()?.log.begin_compaction()?;
            let done = job.run(self.cache.clock().wall_ms())?;
            let report = done.report();
            let retired = {
                let mut w = self.writer()?;
                let reported = w.log.damage().len();
                let installed = w.log.install(done);
                // Damage the rewrite skipped that the open had not reported: the files that
                // held those records are about to go (also after a switch that failed once
                // its rename was done).
                for d in &w.log.damage()[reported..] {
                    warn_skipped(&self.dir, d);
                }
                installed?
            };
            if let Err(e) = retired.remove() {
                // The manifest no longer names them: the next open removes what is left.
                tracing::warn!(error = %e, "larder: could not remove files a compaction replaced");
            }
            Ok(report)
        })();
        backoff.retry_at_bytes = match &result {
            Ok(_) => 0,
            Err(_) => match self.writer() {
                Ok(w) => w.log.usage().bytes.saturating_mul(3) / 2,
                Err(_) => 0,
            },
        };
        result
    }

    /// The janitor's compaction: runs one `on` the thread given if [`Compaction::Auto`] says
    /// it is due. If the system refuses a thread, it runs on this one.
    fn compact_if_due(&self, on: RunOn) {
        // A compaction already running (by `compact` on another thread) is enough.
        match try_lock(&self.compacting) {
            Some(backoff) if self.compaction_due(&backoff) => {}
            _ => return,
        }
        if let (RunOn::OwnThread, Some(me)) = (on, self.me.upgrade()) {
            // The thread checks again, under the lock: another compaction may come first. Ticks
            // that come before it takes the lock start no other (`run_apart`'s flag).
            let compact = |me: &Self| me.compact_if_due(RunOn::Caller);
            if self.run_apart(me, COMPACTION_THREAD, |me| &me.compaction_thread, compact) {
                return;
            }
        }
        // Before `compacting` is taken (`compact`). `run_pending_tasks` may come from inside
        // a write of this cache (its listener's), which drains itself.
        let drained = self.drain_unless_inside();
        let Some(mut backoff) = try_lock(&self.compacting) else {
            // Another compaction came first.
            return log_compaction(drained.map(|()| None));
        };
        if drained.is_ok() && !self.compaction_due(&backoff) {
            return; // one came and went
        }
        log_compaction(self.compact(&mut backoff, drained).map(Some));
    }

    /// Whether [`Compaction::Auto`] says the log is due, and the last failure's `backoff` (the
    /// caller holds `compacting`) lets it be tried.
    fn compaction_due(&self, backoff: &Backoff) -> bool {
        let usage = {
            let Ok(w) = self.writer() else {
                return false; // closed
            };
            if w.log.check().is_err() {
                return false; // a failed log refuses compaction as it refuses writes
            }
            w.log.usage()
        };
        usage.bytes >= backoff.retry_at_bytes && self.compaction.due(usage, self.cache.len() as u64)
    }

    /// The interval sync when it is due, then compaction when it is due, the work that waits on
    /// the disk run `on` the thread given.
    fn maintain(&self, on: RunOn) {
        if let Durability::Interval(every) = self.durability {
            if self.sync_due(every, on) {
                self.interval_sync(every, on);
            }
        }
        self.compact_if_due(on);
    }

    /// Whether the interval sync is due, and if so, noted as begun now. A sync still running
    /// on its thread stands for a tick's: the next tick that finds it done starts the next,
    /// with the gap counted from that sync's start. (The user's `run_pending_tasks` syncs
    /// regardless, as it promises.)
    ///
    /// A sync with nothing to do is not due, and is not noted: an idle cache starts no thread
    /// for it (on the shared janitor that was a thread a second, for as long as the cache
    /// lived, each finding its work done), and its next write is synced at the first tick
    /// after it, sooner than the interval requires.
    fn sync_due(&self, every: Duration, on: RunOn) -> bool {
        // Relaxed: the flag only spares threads; the group commit orders the flushes.
        if matches!(on, RunOn::OwnThread) && self.sync_thread.load(Ordering::Relaxed) {
            return false;
        }
        let tick = self
            .registration
            .get()
            .map_or(larder_janitor::DEFAULT_TICK, |(_, j)| j.tick());
        let mut last = lock(&self.last_sync);
        // Sync at the last tick that keeps the gap within the interval.
        let due = last.elapsed() + tick > every && self.sync_has_work();
        if due {
            *last = Instant::now();
        }
        due
    }

    /// Whether a [`sync`](Self::sync) now would do anything: append the deletes of keys the
    /// cache evicted or expired on its own, flush records not yet durable (after an open,
    /// the replayed ones too: the group starts at 0), or report a failed log that no interval
    /// sync has reported. A write that races this look is synced at a later tick.
    fn sync_has_work(&self) -> bool {
        if self.evicted.is_queued() {
            return true;
        }
        let Ok(w) = self.writer() else {
            return false; // closed: the last handle's drop synced
        };
        match w.log.check() {
            // Relaxed: the flag orders nothing (`sync_and_report`).
            Err(_) => !self.log_failure_reported.load(Ordering::Relaxed),
            Ok(()) => self.group.durable() < w.log.next_seq(),
        }
    }

    /// The interval sync, from the janitor's tick (`on` [`RunOn::OwnThread`]) or the user's
    /// [`DurableCache::run_pending_tasks`]. A shared janitor's tick starts a thread for it: a
    /// sync waits for the disk (for seconds on a slow or failing one, for good on one that
    /// hangs), and on the shared janitor's thread every other cache's expiry and syncs waited
    /// too. A janitor of the cache's own ([`has_own_janitor`]) syncs on its thread: nothing else
    /// waits there, and the syncs run one at a time anyway.
    fn interval_sync(&self, every: Duration, on: RunOn) {
        let apart = matches!(on, RunOn::OwnThread) && !has_own_janitor(every);
        if let (true, Some(me)) = (apart, self.me.upgrade()) {
            if self.run_apart(me, SYNC_THREAD, |me| &me.sync_thread, Self::sync_and_report) {
                return;
            }
        }
        self.sync_and_report();
    }

    /// Runs `work` on a thread of its own called `name`, for this cache (`me`, which the thread
    /// holds), one such thread at a time: the flag `running` picks is raised while one runs,
    /// and a call that finds it raised does nothing. Whether the work is seen to: `false` if
    /// the system refused the thread, and the caller then runs the work itself.
    fn run_apart(
        &self,
        me: Arc<Self>,
        name: &str,
        running: fn(&Self) -> &AtomicBool,
        work: impl FnOnce(&Self) + Send + 'static,
    ) -> bool {
        // Relaxed: the flag only spares threads; the compaction's lock and the group commit
        // order the work itself.
        if running(self).swap(true, Ordering::Relaxed) {
            return true;
        }
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                logging_panics(|| work(&me));
                running(&me).store(false, Ordering::Relaxed);
                // The last handle may be gone: the cache's values then drop here, and a
                // value's `Drop` is user code.
                logging_panics(move || drop(me));
            });
        match spawned {
            Ok(_) => {
                #[cfg(test)]
                self.threads_started.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                running(self).store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "larder: no thread ({name}) for the durable cache's maintenance; it runs on the janitor's");
                false
            }
        }
    }

    /// An interval sync, with its failure logged once.
    fn sync_and_report(&self) {
        match self.sync() {
            Ok(()) | Err(Error::Closed) => {}
            // A log error leaves the log failed (a failed flush or append fails it, and a
            // failed log refuses the rest), so every later tick's sync is refused too: said
            // once, not at every tick, which at 1 ms was a thousand lines a second for the rest
            // of the process's life. Relaxed: the flag orders nothing, and its swap alone keeps
            // two ticks from both logging.
            Err(Error::Log(_)) if self.log_failure_reported.swap(true, Ordering::Relaxed) => {}
            Err(e) => {
                tracing::error!(error = %e, "larder: the durable cache's interval sync failed");
            }
        }
    }
}

impl<K, V, S> Maintain for Inner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The interval sync, on the janitor's thread (on a thread of its own from the shared
    /// janitor), and a due compaction, on a thread of its own ([`RunOn::OwnThread`]). The sync
    /// first records the expiry queued since the last write.
    ///
    /// The user's codecs run here (the deletes of expired keys are encoded), and the janitor
    /// stops serving a registrant whose tick panics: a codec's panic would end this cache's
    /// interval syncs and compactions for good, with nothing said. So the panic is caught
    /// and logged, and the next tick runs as usual.
    fn run_pending_tasks(&self) {
        logging_panics(|| self.maintain(RunOn::OwnThread));
    }
}

/// Runs its closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Logs what the janitor's compaction did (`None`: it left the compaction to another, and
/// only drained).
fn log_compaction(result: Result<Option<CompactionReport>, Error>) {
    match result {
        Ok(None) => {}
        Ok(Some(report)) => tracing::debug!(?report, "larder: compacted the durable cache's log"),
        Err(e) => tracing::error!(
            error = %e,
            "larder: the durable cache's compaction failed; it is retried once the log has \
             grown by half"
        ),
    }
}

/// Runs `maintenance`, catching a panic and logging it: the janitor stops serving a registrant
/// whose tick panics, which would end this cache's interval syncs and compactions for good
/// with nothing said. The next tick runs the work again.
fn logging_panics(maintenance: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(maintenance)) {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message")
            .to_owned();
        // The payload's own `Drop` is user code too, and so is the subscriber that logs the
        // line below: the payload goes first, or that subscriber's panic would drop it
        // unguarded.
        unwind::quiet(Some(panic));
        tracing::error!(panic = message, "larder: the durable cache's maintenance panicked (a codec, most likely); the next tick runs it again");
    }
}

impl<K, V, S> Inner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Closes the log of a cache whose build failed (or panicked) after it registered with its
    /// janitor, so that the directory is unlocked when `build` returns (or its panic leaves
    /// it), as after any refused open. A janitor's tick may hold the cache meanwhile (an
    /// interval sync begun at once, or a compaction it started), and then the log, which holds
    /// the directory's lock, would go only when that tick let go of it: an open retried at once
    /// was refused as `Locked`. Nothing is synced (the build reported failure). Taking the
    /// writer ends the log, after any flush in progress on another thread (`Log`'s drop waits
    /// for it), and leaves every later tick nothing to do; a compaction running holds the lock
    /// through its compactor, and is waited out.
    fn abandon(&self) {
        drop(lock(&self.writer).take());
        drop(lock(&self.compacting));
    }

    /// Closes the log when the last handle goes: ends the core cache's janitor work, records
    /// what expired or was evicted since the last write, waits for a running compaction
    /// (which holds the directory's lock), syncs (as `close()` does; best effort: an error is
    /// logged, never a panic), and drops the log, releasing the lock. This cache's own
    /// janitor, should it still reach this `Inner`, finds the writer gone ([`Error::Closed`])
    /// and does nothing.
    ///
    /// Inside a write or a drain of this cache on this thread ([`Holding`]), the close is left
    /// to that work's end: the drain of the janitor's sync (or of a compaction's), whose key
    /// codec may hold the last handle and drop it, or close it. That drain holds `draining` and
    /// a stripe, which the close's own drain takes, and the thread waited for itself for good;
    /// closed under it, the log would also have refused the deletes of the keys the drain had
    /// yet to record (`a_codec_that_ends_the_last_handle_in_the_janitors_drain_closes_the_log_after_it`
    /// in `tests/reentrancy.rs`). The drain's thread holds the cache until it is done.
    fn shut_down(&self) {
        if Holding::inside(self.id()) {
            // Relaxed: the flag only says that a close is due; the close takes the locks it
            // needs, and the drain that does it is on this thread.
            self.close_deferred.store(true, Ordering::Relaxed);
            return;
        }
        // The drain runs the key codec, user code: its panic is logged, and the sync still
        // runs. Unwinding out of a `Drop` (perhaps during another panic's unwinding, which
        // aborts the process) would skip the sync of every write since the last one.
        let closed = self.close_log(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.drain_evicted()))
                .unwrap_or_else(|panic| {
                    // The payload's own `Drop` is user code too, and so is the subscriber that
                    // logs the line below: the payload goes first, or that subscriber's panic
                    // would drop it unguarded.
                    unwind::quiet(Some(panic));
                    tracing::error!(
                        dir = %self.dir.display(),
                        "larder: a codec panicked recording the last evictions on drop; those entries may come back after a restart"
                    );
                    Ok(0)
                })
        });
        if let Err(e) = closed {
            tracing::error!(
                error = %e,
                dir = %self.dir.display(),
                "larder: the durable cache's last sync failed on drop; recent writes may be lost"
            );
        }
    }

    /// The close [`shut_down`](Self::shut_down) left to the end of a drain, if any.
    fn close_if_deferred(&self) {
        // Relaxed: see `shut_down`; the swap alone makes one drain do it.
        if self.close_deferred.load(Ordering::Relaxed)
            && self.close_deferred.swap(false, Ordering::Relaxed)
        {
            self.shut_down();
        }
    }

    /// The shutdown of [`shut_down`](Self::shut_down) and of `close()` on the last handle,
    /// with `drain` recording the last deletes: returns `drain`'s error, or else the sync's.
    /// Nothing to do once the log is closed (by `close()`, whose handle then drops).
    ///
    /// The drain is the last: whatever the observer queues after it never gets its delete.
    /// With the last handle gone, only the core cache's janitor could still remove an entry
    /// (this cache's own janitor syncs and compacts, which remove nothing), and it tells the
    /// observer after it has released the shard's lock, where `run_pending_tasks` below finds
    /// the entry gone already. So its work ends first: a tick in progress is waited out, its
    /// keys queued, and no other tick follows.
    fn close_log(&self, drain: impl FnOnce() -> Result<u64, Error>) -> Result<(), Error> {
        if lock(&self.writer).is_none() {
            return Ok(());
        }
        self.cache.detach_from_janitor();
        // Entries past their deadline that no tick has removed yet are removed now, so that
        // their deletes are recorded too: a time-to-idle entry's record has no deadline of its
        // own, and would otherwise come back after a restart.
        self.cache.run_pending_tasks();
        let drained = drain();
        // A compaction running holds the directory's lock (through its compactor): waited out
        // here, once the drain, which takes stripes, is done (`compact`).
        let _no_compaction = lock(&self.compacting);
        let Some(mut w) = lock(&self.writer).take() else {
            return Ok(());
        };
        // Synced even when the drain failed, as in `sync`.
        let synced = w.log.sync().map_err(Error::from);
        drained.and(synced)
    }
}

impl<K, V, S> DurableCache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn inner(&self) -> &Inner<K, V, S> {
        &self.handle.inner
    }

    /// The value for `key`, counting an access, and a hit or a miss in [`stats`](Self::stats).
    /// Lock-free; the log is not touched.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner().cache.get(key)
    }

    /// The value for `key`, without counting an access, a hit or a miss. Lock-free.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner().cache.peek(key)
    }

    /// Whether `key` has a value. Lock-free.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner().cache.contains_key(key)
    }

    /// Inserts or replaces the value for `key`, recording it in the log. Returns once the
    /// record is appended (and, with [`Durability::Always`], on stable storage).
    ///
    /// # Errors
    /// An [`InsertError`] around [`Error::Codec`] if the key or value does not encode, or
    /// [`Error::Log`] if the append fails (or the log was failed or closed already): the cache
    /// is then unchanged, and [`InsertError::into_inner`] gives the key and value back. With
    /// [`Durability::Always`], an [`Error::Log`] from the sync means the entry is in the cache
    /// but its durability is unknown (nothing is given back); the log is failed from then on
    /// and refuses every later write. Nor is anything given back for an error after the cache
    /// changed: an [`Error::Log`] or [`Error::Codec`] from recording the deletes of what the
    /// write evicted, or an [`Error::Log`] from the delete of an entry it refused as too heavy.
    ///
    /// # Panics
    /// When the weigher, or `K`'s `Hash` or `Eq`, panics, the panic reaches the caller. The
    /// log then records what the cache holds for the key (step 6 of the module doc).
    pub fn insert(&self, key: K, value: V) -> Result<(), InsertError<K, V>> {
        let inner = self.inner();
        let seq = {
            let mut b = inner.stripe(&key);
            let b = &mut *b;
            let put = inner
                .encode_key(b, &key)
                .and_then(|()| inner.encode_value(b, &value))
                .and_then(|()| {
                    let expires_at_ms = inner
                        .cache
                        .time_to_live()
                        .map_or(0, |ttl| deadline_after(inner.cache.clock(), ttl));
                    inner.append(Op::Put {
                        key: &b.key,
                        value: &b.value,
                        expires_at_ms,
                    })
                });
            let mut seq = match put {
                Ok(seq) => seq,
                Err(error) => return Err(InsertError::unstored(error, key, value)),
            };
            if !inner.change_cache(b, || inner.cache.insert_and_check(key, value)) {
                // Refused as too heavy: the old value went too.
                seq = inner
                    .append(Op::Delete { key: &b.key })
                    .map_err(InsertError::stored)?;
            }
            seq
        };
        inner.finish(seq).map_err(InsertError::stored)
    }

    /// Removes `key`'s entry, recording the removal, and returns its value. With
    /// [`Durability::Always`] it returns once the key's absence is on stable storage. A key
    /// found absent gets its delete too: another thread's eviction or expiry may have taken it
    /// out of the table without its delete queued yet, and its own delete may still be syncing.
    ///
    /// # Errors
    /// As for [`insert`](Self::insert); on an error before the append the entry stays.
    pub fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        let inner = self.inner();
        let (seq, old) = {
            let mut b = inner.stripe(key);
            // Probed before the append: `K`'s `Hash` and `Eq` are user code, and a panic here
            // leaves the log and the cache as they were (one in the removal below is handled
            // as step 6 of the module doc says). The answer is not needed: see below.
            let _ = inner.cache.contains_key(key);
            inner.encode_key(&mut b, key)?;
            // A delete whether or not the key is present. A remove that finds it absent
            // acknowledges the absence, but what made it absent need not be in the log yet:
            // another thread's eviction or expiry takes the entry out of the table under the
            // shard's lock, and queues the key for its delete only once that lock is released,
            // when it tells the removal observers; a drain here may come before that, and the
            // removal was never this write's to wait for. With this delete, the key's last
            // record says it is absent whoever removed it (the stripe is held, so no write of
            // the key comes between), and `finish` below waits for it, and for every record
            // before it (another thread's delete or clear still waiting for its flush). An
            // entry still in the table but expired, which no janitor's tick has removed yet,
            // goes now (the cache's `remove` reports it as expired and returns nothing), so the
            // cache agrees with the delete.
            let seq = inner.append(Op::Delete { key: &b.key })?;
            (seq, inner.change_cache(&mut b, || inner.cache.remove(key)))
        };
        inner.finish(seq)?;
        Ok(old)
    }

    /// Removes `key`'s entry, recording the removal.
    ///
    /// # Errors
    /// As for [`remove`](Self::remove).
    pub fn invalidate(&self, key: &K) -> Result<(), Error> {
        self.remove(key).map(drop)
    }

    /// Removes every entry, recording one clear.
    ///
    /// # Errors
    /// As for [`insert`](Self::insert).
    pub fn clear(&self) -> Result<(), Error> {
        let inner = self.inner();
        let seq = {
            // Every stripe, in order: no write of any key is half done meanwhile.
            let _all: Vec<_> = inner.stripes.iter().map(|s| lock(s)).collect();
            let _holding = Holding::new(inner.id());
            let seq = inner.append(Op::Clear)?;
            inner.cache.clear();
            seq
        };
        // Removals the clear raced with are recorded after it; deletes of absent keys.
        inner.finish(seq)
    }

    /// Makes every write so far durable, whatever the [`Durability`]. Concurrent callers share
    /// one flush. Called inside a write of this cache (by its eviction listener, say), it
    /// leaves the deletes of the entries evicted or expired since the last write to that write,
    /// which records them before it returns.
    ///
    /// # Errors
    /// [`Error::Log`]: the flush failed (the log is failed from then on), or had already.
    /// [`Error::Codec`]: the key codec refused a key whose delete (of an entry the cache
    /// evicted or expired since the last write) the sync records first; the writes are synced
    /// all the same.
    pub fn sync(&self) -> Result<(), Error> {
        self.inner().sync()
    }

    /// Syncs, then drops this handle. The log closes (and its directory's lock is released)
    /// when the last handle goes.
    ///
    /// On a handle that is not the last, that is all: the log stays open for the others, and
    /// the last one's drop or `close` closes it. On the last handle, `close` then does what
    /// that handle's drop would, and reports it, where a drop can only log: what expired
    /// since the sync (or is evicted or expired by then) is recorded, the log is synced again
    /// and closed, and its directory is unlocked when `close` returns. A clone dropped or
    /// closed on another thread at the same time leaves exactly one of the two the last.
    ///
    /// # Errors
    /// As for [`sync`](Self::sync), from either sync (the first error); the handle is dropped,
    /// and on the last handle the log closed, either way.
    ///
    /// Called on the last handle by the key codec while it records a delete (in the drain of
    /// the janitor's sync, say), it leaves the close to that drain's end, which logs what
    /// fails, as a drop does: the drain's own work comes first.
    ///
    /// # Panics
    /// When the key codec panics recording a delete, the panic reaches the caller. On the last
    /// handle, its drop then closes the log as the panic unwinds: it records what it can,
    /// syncs, and logs what fails, as a drop always does.
    pub fn close(self) -> Result<(), Error> {
        // As the last handle's drop does: entries past their deadline go, and are recorded.
        self.inner().cache.run_pending_tasks();
        let synced = self.sync();
        // `into_inner`, not a look at the count: of two handles dropped or closed at once,
        // it tells exactly one that it was the last.
        let Some(last) = Arc::into_inner(self.handle) else {
            return synced;
        };
        if Holding::inside(last.inner.id()) {
            // Called by the key codec inside a drain of this cache: the drain closes the log
            // as it ends, and logs what fails (`Inner::shut_down`).
            return synced;
        }
        // The drop's shutdown, run here to return its errors: the drop can only log them, and
        // `close` said `Ok` with the deletes of what expired since the sync above not durable.
        let closed = last.inner.close_log(|| last.inner.drain_evicted());
        synced.and(closed)
    }

    /// Compacts the log now, whatever [`Compaction`] says: its sealed files are rewritten as
    /// the live entries alone, while writes go on (they wait only for the switch at the end).
    /// Returns what it did, in figures.
    ///
    /// # Errors
    /// [`Error::Log`]: a failed read, write or sync during the rewrite (the log goes on as
    /// before, and the rewrite's files are removed), or a failed switch (see
    /// [`larder_log::Log::install`]); either error of [`sync`](Self::sync), which runs first.
    ///
    /// Called inside a write of this cache (by its eviction listener), it leaves the deletes
    /// of what was evicted to that write, as [`sync`](Self::sync) does, and a compaction
    /// running on another thread is waited out.
    pub fn compact(&self) -> Result<CompactionReport, Error> {
        let inner = self.inner();
        // Before `compacting` is taken (`Inner::compact`).
        let drained = inner.drain_unless_inside();
        let mut backoff = lock(&inner.compacting);
        inner.compact(&mut backoff, drained)
    }

    /// Does the janitors' work now, on this thread: the core cache's (entries past their
    /// deadline leave, and their deletes are queued for the log), then the durable cache's own:
    /// the [`Durability::Interval`] sync if it is due, and a compaction if
    /// [`Compaction::Auto`] says one is. A cache built
    /// [`without_janitor`](CacheBuilder::without_janitor) relies on this call to remove
    /// expired entries nobody writes.
    pub fn run_pending_tasks(&self) {
        self.inner().cache.run_pending_tasks();
        self.inner().maintain(RunOn::Caller);
    }

    /// The records in the log and their bytes, live or dead.
    pub fn log_usage(&self) -> LogUsage {
        self.inner()
            .writer()
            .map_or_else(|_| LogUsage::default(), |w| w.log.usage())
    }

    /// What [`RecoveryMode::SkipCorrupt`] skipped when the cache was opened, then what its
    /// compactions skipped since (damage found after the open); empty when nothing was
    /// damaged (and always in [`RecoveryMode::Strict`], which refuses to open, or to compact,
    /// instead).
    pub fn damage(&self) -> Vec<Damage> {
        self.inner()
            .writer()
            .map_or_else(|_| Vec::new(), |w| w.log.damage().to_vec())
    }

    /// How many log flushes have run for syncs: with concurrent writers in
    /// [`Durability::Always`], fewer than the writes they made durable.
    pub fn flushes(&self) -> u64 {
        self.inner().group.flushes()
    }

    /// The number of entries (see [`Cache::len`]).
    pub fn len(&self) -> usize {
        self.inner().cache.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner().cache.is_empty()
    }

    /// The total weight of the entries.
    pub fn weighted_size(&self) -> u64 {
        self.inner().cache.weighted_size()
    }

    /// The capacity.
    pub fn capacity(&self) -> u64 {
        self.inner().cache.capacity()
    }

    /// The cache's statistics (see [`Cache::stats`]): this cache's reads and writes count as
    /// the core cache's do, and so does the open's load, which goes through the cache. Right
    /// after an open, `inserts` is the number of entries the load put in the cache,
    /// `evictions` those of them a smaller capacity could not keep and `rejections` the
    /// entries too heavy for it (these two leave the log for good: step 5 of the
    /// [module doc](self)), and `expirations` those the cache removed as expired while it
    /// loaded (a record whose deadline passed before the load reached it is left out, and
    /// counted nowhere); the load reads nothing, so no hit or miss is counted. Call
    /// [`reset_stats`](Self::reset_stats) after the open to count later traffic alone.
    pub fn stats(&self) -> CacheStats {
        self.inner().cache.stats()
    }

    /// Sets every counter of [`stats`](Self::stats) back to zero (see [`Cache::reset_stats`]).
    /// Touches neither the entries nor the log.
    pub fn reset_stats(&self) {
        self.inner().cache.reset_stats();
    }

    /// A weakly consistent iterator over clones of the entries (see [`Cache::iter`]).
    pub fn iter(&self) -> larder_core::Iter<'_, K, V, S>
    where
        K: Clone,
    {
        self.inner().cache.iter()
    }

    /// The log's directory.
    pub fn dir(&self) -> PathBuf {
        self.inner().dir.clone()
    }
}

/// The deadline a record written now gives an entry that lives `life` more: wall-clock
/// milliseconds by the cache's clock (module doc, "Expiry on disk"), the last there is for a
/// life too long to count.
fn deadline_after(clock: &larder_core::Clock, life: Duration) -> u64 {
    let life_ms = u64::try_from(life.as_millis()).unwrap_or(u64::MAX);
    clock.wall_ms().saturating_add(life_ms)
}

impl<K, V, S> fmt::Debug for DurableCache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableCache")
            .field("durability", &self.handle.inner.durability)
            .finish_non_exhaustive()
    }
}

impl<K, V, S> fmt::Debug for DurableBuilder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableBuilder")
            .field("cache", &self.cache)
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("compaction", &self.compaction)
            .field("log", &self.log)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A log of `bytes`, `puts` of them puts of `put_bytes`.
    fn usage(puts: u64, put_bytes: u64, bytes: u64) -> larder_log::Usage {
        let mut usage = larder_log::Usage::default();
        (usage.records, usage.puts, usage.put_bytes, usage.bytes) = (puts, puts, put_bytes, bytes);
        usage
    }

    fn auto(dead_share: f64) -> Compaction {
        Compaction::Auto {
            dead_share,
            min_bytes: 0,
        }
    }

    #[test]
    fn a_compaction_is_due_only_with_dead_bytes_and_at_a_share_of_one_with_nothing_live() {
        // 49 live puts of 988 bytes: `49.0 * (988.0 / 49.0)` is a rounding error short of 988,
        // which the smallest share counted as dead.
        let compacted = usage(49, 988, 988);
        for share in [f64::MIN_POSITIVE, 1e-300, 5e-324, 1e-9, 1.0] {
            assert!(!auto(share).due(compacted, 49), "{share:e}");
        }
        assert!(
            auto(f64::MIN_POSITIVE).due(usage(49, 988, 989), 49),
            "a delete is dead"
        );
        assert!(auto(f64::MIN_POSITIVE).due(compacted, 48), "a put is dead");
        // An empty log is never due, and divides nothing.
        assert!(!auto(1.0).due(usage(0, 0, 0), 0));
        // At a share of 1: one live entry keeps it, none makes it due.
        let dead = usage(49, 988, 10_000);
        assert!(!auto(1.0).due(dead, 1));
        assert!(auto(1.0).due(dead, 0));
        assert!(auto(1.0).due(usage(0, 0, 300), 0), "deletes alone");
    }

    /// A durable cache of `u64`s in a fresh directory, `Interval(every)`, holding one entry,
    /// whose janitor's first sync is held in its flush until `go` sends or is dropped.
    struct HeldFlush {
        cache: DurableCache<u64, u64>,
        dir: std::path::PathBuf,
        go: mpsc::Sender<()>,
    }

    /// A durable cache of `u64`s in a fresh directory named after `name`, `Interval(every)`,
    /// compacted only by hand, and its directory.
    fn fresh_interval_cache(
        name: &str,
        every: Duration,
    ) -> (DurableCache<u64, u64>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = Cache::builder()
            .max_capacity(10)
            .durable(&dir)
            .durability(Durability::Interval(every))
            .compaction(Compaction::Manual)
            .build()
            .unwrap();
        (cache, dir)
    }

    fn with_its_first_flush_held(name: &str, every: Duration) -> HeldFlush {
        let (cache, dir) = fresh_interval_cache(name, every);
        let (holding, held) = mpsc::channel();
        let (go, waiting) = mpsc::channel::<()>();
        let once = Mutex::new(Some((holding, waiting)));
        cache.inner().set_flush_hook(Some(Arc::new(move || {
            let first = lock(&once).take();
            if let Some((holding, waiting)) = first {
                holding.send(()).unwrap();
                let _ = waiting.recv();
            }
        })));
        cache.insert(1, 1).unwrap();
        held.recv_timeout(Duration::from_secs(10))
            .expect("the janitor's interval sync leads a flush");
        HeldFlush { cache, dir, go }
    }

    /// An interval sync from the shared janitor (an interval of a second or more) runs on a
    /// thread of its own: a sync that waits on the disk holds up no other cache's work there.
    /// The hook holds the sync's flush as a disk that hangs would, while an in-memory cache on
    /// the same janitor has its entries expire with nobody reading them. Before, the sync ran
    /// on the shared janitor's thread, and those entries stayed until the sync let go.
    #[test]
    fn a_slow_interval_sync_holds_up_no_other_cache_on_the_shared_janitor() {
        /// Lets the held sync go, however the test ends.
        struct Release(mpsc::Sender<()>);
        impl Drop for Release {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let HeldFlush { cache, dir, go } =
            with_its_first_flush_held("larder-slow-sync", Duration::from_secs(1));
        let release = Release(go);
        let expiring: Cache<u64, u64> = Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_millis(10))
            .build()
            .unwrap();
        for k in 0..100 {
            expiring.insert(k, k);
        }
        let start = Instant::now();
        while !expiring.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the shared janitor waited for the held sync: {} entries left",
                expiring.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(release);
        drop(cache);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The janitor's tick for `cache`, with the last interval sync moved back past its
    /// interval, so that a sync is due if it has work; returns once a thread the tick started
    /// has ended. (The shared janitor's own ticks may come first: they find the same.)
    fn tick_past_the_interval(cache: &DurableCache<u64, u64>, every: Duration) {
        let inner = cache.inner();
        *lock(&inner.last_sync) = Instant::now().checked_sub(2 * every).unwrap();
        inner.maintain(RunOn::OwnThread);
        let start = Instant::now();
        while inner.sync_thread.load(Ordering::Relaxed) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the sync's thread did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// An interval sync from the shared janitor runs on a thread started for it, and a cache
    /// with nothing to sync starts none: before, every tick past the interval started one, so
    /// an idle durable cache on the default `Interval(1 s)` started a thread a second for as
    /// long as it lived. Work is a record not yet durable, or a key the cache evicted or
    /// expired on its own whose delete the log has yet to take.
    #[test]
    fn an_interval_sync_starts_a_thread_only_when_there_is_something_to_sync() {
        let every = Duration::from_secs(10);
        let (cache, dir) = fresh_interval_cache("larder-idle-sync", every);
        let started = || cache.inner().threads_started.load(Ordering::Relaxed);
        tick_past_the_interval(&cache, every);
        assert_eq!(started(), 0, "an empty cache's tick started a thread");

        cache.insert(1, 1).unwrap();
        tick_past_the_interval(&cache, every);
        assert_eq!(
            (started(), cache.flushes()),
            (1, 1),
            "a write's sync (threads, flushes)"
        );
        tick_past_the_interval(&cache, every);
        tick_past_the_interval(&cache, every);
        assert_eq!(started(), 1, "a synced cache's ticks started a thread");

        let records = cache.log_usage().records;
        cache.inner().evicted.push(2); // as the cache's removal observer does
        tick_past_the_interval(&cache, every);
        assert_eq!(
            (started(), cache.flushes(), cache.log_usage().records),
            (2, 2, records + 1),
            "an eviction's delete: appended and synced on a thread of its own"
        );
        tick_past_the_interval(&cache, every);
        assert_eq!(started(), 2, "the delete's sync left work behind");
        drop(cache);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The error lines of interval syncs that failed, from every thread (the janitor's
    /// included, which a subscriber set for one thread would miss). Only
    /// `an_interval_sync_that_finds_the_log_closed_reports_no_failure` sets the subscriber,
    /// and no other test here fails an interval sync.
    static INTERVAL_SYNC_FAILURES: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    /// An interval sync on the janitor's thread that leads a flush as the last handle's drop
    /// closes the log finds the log gone. The drop's own sync covered its records, so that is
    /// no failure; but the flush's `larder_log::Error::Closed` reached `maintain` as an
    /// `Error::Log`, which it logged as "interval sync failed" (and which set the flag that
    /// keeps it quiet about a failed log from then on). The hook holds the janitor's flush
    /// until the drop has returned.
    #[test]
    fn an_interval_sync_that_finds_the_log_closed_reports_no_failure() {
        larder_testkit::errors::CountErrorsMentioning {
            needle: "interval sync failed",
            count: &INTERVAL_SYNC_FAILURES,
        }
        .install();
        let HeldFlush { cache, dir, go } =
            with_its_first_flush_held("larder-closed-flush", Duration::from_millis(1));
        let inner = Arc::downgrade(&cache.handle.inner);
        drop(cache); // the last handle: the log is synced and closed
        go.send(()).unwrap();
        // The janitor's tick, which holds the cache, ends after its sync (and its log line).
        let start = Instant::now();
        while inner.strong_count() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the janitor's tick did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            INTERVAL_SYNC_FAILURES.load(Ordering::SeqCst),
            0,
            "the janitor's sync that found the log closed was logged as a failure"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stripe_lends_the_thread_its_buffers_and_takes_them_back() {
        let (one, two) = (Mutex::new(()), Mutex::new(()));
        {
            let mut s = Stripe::new(0, lock(&one));
            s.key.extend_from_slice(&[7; 100]);
            s.value.extend_from_slice(&[7; 1000]);
        }
        let s = Stripe::new(0, lock(&one));
        assert!(
            s.key.capacity() >= 100 && s.value.capacity() >= 1000,
            "the next write on the thread reuses the buffers"
        );
        // A write nested in that one (a codec writing to a durable cache) gets buffers of its
        // own, and whichever returns last leaves its buffers for the thread.
        let nested = Stripe::new(0, lock(&two));
        assert_eq!((nested.key.capacity(), nested.value.capacity()), (0, 0));
        drop(nested);
        drop(s);
        let again = Stripe::new(0, lock(&one));
        assert!(again.value.capacity() >= 1000);
        // Another thread has buffers of its own.
        std::thread::spawn(|| {
            let m = Mutex::new(());
            assert_eq!(Stripe::new(0, lock(&m)).value.capacity(), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_buffer_grown_past_the_limit_is_freed_when_its_write_ends() {
        let m = Mutex::new(());
        {
            let mut s = Stripe::new(0, lock(&m));
            s.key.resize(100, 7);
            s.value.resize(64 << 20, 7); // a 64 MiB value
        }
        let s = Stripe::new(0, lock(&m));
        assert_eq!(s.value.capacity(), 0, "the 64 MiB buffer was freed");
        assert!(
            s.key.capacity() >= 100,
            "the small one is kept for the next write"
        );
        drop(s);
        // At the limit, a buffer is kept.
        Stripe::new(0, lock(&m))
            .value
            .reserve_exact(KEPT_BUFFER_CAPACITY);
        let kept = Stripe::new(0, lock(&m)).value.capacity();
        assert!(kept >= KEPT_BUFFER_CAPACITY, "{kept}");
        // Through a durable cache's insert too: the value buffer holds the encoded value.
        let dir = std::env::temp_dir().join(format!("larder-trim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache: DurableCache<u64, Vec<u8>> = Cache::builder()
            .max_capacity(10)
            .durable(&dir)
            .value_codec(RawBytes)
            .durability(Durability::Manual)
            .compaction(Compaction::Manual)
            .build()
            .unwrap();
        cache.insert(1, vec![7; 2 << 20]).unwrap();
        assert_eq!(Stripe::new(0, lock(&m)).value.capacity(), 0);
        drop(cache);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
