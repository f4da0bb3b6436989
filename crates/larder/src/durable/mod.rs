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
//! live set. Every write takes the log's lock, appends a record, changes the cache, and
//! records what the cache did on its own meanwhile, all before it lets go:
//!
//! 1. `insert` encodes the key and value (a codec error changes nothing), appends a put, then
//!    inserts into the cache. If the cache did not keep the entry (it was too heavy, or the
//!    policy dropped it at once) a delete follows.
//! 2. Entries the cache evicts or expires reach a removal observer
//!    ([`CacheBuilder::removal_observer`]), which queues their keys. The write drains the queue
//!    before it returns: a delete for each key the cache no longer holds. A key written again
//!    since it was evicted is left alone: its newer put is already in the log.
//! 3. Expiry removed by the janitor is drained the same way: by the next write or `sync`, and
//!    in [`Durability::Interval`] by each background sync. Until then a reopen drops such an
//!    entry anyway when its deadline is in its record (a time-to-live).
//!
//! So the log's last record for each key says what the cache holds (or held when it was
//! stopped), and recovery replays it: segments in order, the last record per key winning,
//! deletes and clears honoured, entries past their deadline dropped, the cache's policy
//! evicting as it loads. A reopened cache holds exactly the live entries, none that were
//! deleted, evicted, cleared or expired.
//!
//! Reads never touch the log: `get`, `peek` and `contains_key` are the core's lock-free reads.
//! Writes are serialised by the log's lock (the in-memory part of each is short; see
//! `docs/DURABILITY.md` for the costs).
//!
//! # Durability
//! [`Durability`] says when appended records reach stable storage; `docs/DURABILITY.md` has
//! the table of what a process crash and a power loss can lose in each mode, and the sync
//! steps. In every mode a record is in the page cache when `insert` returns, so a crash of the
//! process alone loses nothing that was acknowledged.
//!
//! # Expiry on disk
//! A record stores its entry's absolute deadline in wall-clock milliseconds: the cache's
//! time-to-live counted from the write. After a restart an entry lives until that deadline. A
//! time-to-idle is not recorded (reads do not write the log): a recovered entry starts a fresh
//! idle period.

mod codec;
mod error;

pub use codec::{Codec, CodecError, Postcard, RawBytes};
pub use error::Error;
pub use larder_log::{IoCall, Options as LogOptions};

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use larder_core::{Cache, CacheBuilder, CacheStats, Janitor};
use larder_janitor::{Maintain, Registration};
use larder_log::format::Op;
use larder_log::{GroupCommit, Log};

/// When a durable cache's writes reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `insert`, `remove` and `clear` return only once their record is on stable storage.
    /// Concurrent writers share syncs (group commit): one `msync` covers every record appended
    /// before it started.
    Always,
    /// Synced in the background every interval (by the janitor). A process crash loses
    /// nothing; an OS crash or power loss loses at most the last interval's writes.
    Interval(Duration),
    /// Synced only by [`DurableCache::sync`], [`DurableCache::close`] and the drop of the last
    /// handle, like `shelve` with `writeback=True`.
    Manual,
}

impl Default for Durability {
    /// `Interval(1 s)`.
    fn default() -> Self {
        Durability::Interval(Duration::from_secs(1))
    }
}

/// Turns a [`CacheBuilder`] into a [`DurableBuilder`]: `Cache::builder().max_capacity(n)
/// .durable(dir)`.
pub trait IntoDurable<K, V, S> {
    /// A durable cache kept in `dir` (created if missing), with the keys and values encoded
    /// by [`Postcard`] unless [`DurableBuilder::key_codec`] or
    /// [`DurableBuilder::value_codec`] say otherwise.
    fn durable(self, dir: impl AsRef<Path>) -> DurableBuilder<K, V, S>;
}

impl<K, V, S> IntoDurable<K, V, S> for CacheBuilder<K, V, S>
where
    K: serde::Serialize + serde::de::DeserializeOwned + 'static,
    V: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn durable(self, dir: impl AsRef<Path>) -> DurableBuilder<K, V, S> {
        DurableBuilder {
            cache: self,
            dir: dir.as_ref().to_path_buf(),
            durability: Durability::default(),
            key_codec: Arc::new(Postcard),
            value_codec: Arc::new(Postcard),
            log: larder_log::Options::default(),
        }
    }
}

/// Builds a [`DurableCache`]; made by [`IntoDurable::durable`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct DurableBuilder<K, V, S> {
    cache: CacheBuilder<K, V, S>,
    dir: PathBuf,
    durability: Durability,
    key_codec: Arc<dyn Codec<K>>,
    value_codec: Arc<dyn Codec<V>>,
    log: larder_log::Options,
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

    /// The log's options: its segment size (default 64 MiB) and, for fault-injection tests,
    /// a hook in front of its system calls. Default: [`LogOptions::default`].
    pub fn log_options(mut self, options: LogOptions) -> Self {
        self.log = options;
        self
    }

    /// Opens the directory, replays its log into a new cache, and returns the cache.
    ///
    /// # Errors
    /// [`Error::Build`] for the cache's configuration; [`Error::Log`] if the directory is
    /// open elsewhere ([`larder_log::Error::Locked`]), damaged
    /// ([`larder_log::Error::Corruption`]) or unreadable; [`Error::Codec`] for a record the
    /// codecs do not decode (written with other key or value types). Nothing in the
    /// directory is changed when an error is returned, except a torn last record, which is
    /// cut off.
    pub fn build(self) -> Result<DurableCache<K, V, S>, Error> {
        if let Durability::Interval(every) = self.durability {
            if every.is_zero() {
                return Err(Error::ZeroInterval);
            }
        }
        let evicted: Arc<Mutex<Vec<K>>> = Arc::default();
        let queue = Arc::clone(&evicted);
        let cache = self
            .cache
            .removal_observer(move |key: &K, cause| {
                if cause.was_evicted() {
                    lock(&queue).push(key.clone());
                }
            })
            .build()?;
        let mut live = Live::default();
        let log = Log::open(&self.dir, self.log, |record| live.apply(record))?;
        live.load_into(&cache, &*self.key_codec, &*self.value_codec, wall_ms())?;
        let inner = Arc::new(Inner {
            group: GroupCommit::new(log.next_seq()),
            writer: Mutex::new(Writer {
                log,
                key: Vec::new(),
                value: Vec::new(),
            }),
            cache,
            evicted,
            durability: self.durability,
            key_codec: self.key_codec,
            value_codec: self.value_codec,
            last_sync: Mutex::new(Instant::now()),
            registration: OnceLock::new(),
        });
        // What the policy evicted while loading leaves the log too.
        inner.drain_evicted(&mut inner.writer())?;
        if let Durability::Interval(every) = inner.durability {
            let janitor = if every < larder_janitor::DEFAULT_TICK {
                Janitor::dedicated(every)
            } else {
                Janitor::shared()
            };
            let weak: Weak<Inner<K, V, S>> = Arc::downgrade(&inner);
            let _ = inner.registration.set((janitor.register(weak), janitor));
        }
        Ok(DurableCache { inner })
    }
}

/// The live set a log describes, worked out before anything reaches the cache: the last
/// record per key wins, deletes and clears remove. Loading only the survivors means the
/// cache's policy never sees an entry the log says is gone, so it cannot evict a live entry to
/// make room for one that is deleted a few records later.
#[derive(Default)]
struct Live {
    /// Key bytes to the key's last put.
    entries: std::collections::HashMap<Box<[u8]>, LastPut>,
}

/// A key's last put, as the log holds it.
struct LastPut {
    seq: u64,
    value: Box<[u8]>,
    /// Wall-clock ms; 0 for never.
    expires_at_ms: u64,
}

impl Live {
    fn apply(&mut self, record: larder_log::format::Record<'_>) {
        match record.op() {
            Op::Put {
                key,
                value,
                expires_at_ms,
            } => {
                let put = LastPut {
                    seq: record.seq(),
                    value: value.into(),
                    expires_at_ms,
                };
                self.entries.insert(key.into(), put);
            }
            Op::Delete { key } => {
                self.entries.remove(key);
            }
            Op::Clear => self.entries.clear(),
        }
    }

    /// Decodes the survivors and inserts them in the order they were written, dropping those
    /// whose deadline has passed by `now_ms`.
    fn load_into<K, V, S>(
        self,
        cache: &Cache<K, V, S>,
        key_codec: &dyn Codec<K>,
        value_codec: &dyn Codec<V>,
        now_ms: u64,
    ) -> Result<(), Error>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher,
    {
        let mut entries: Vec<_> = self
            .entries
            .into_iter()
            .filter(|(_, put)| put.expires_at_ms == 0 || put.expires_at_ms > now_ms)
            .collect();
        entries.sort_unstable_by_key(|(_, put)| put.seq);
        for (key, put) in entries {
            let LastPut {
                seq,
                value,
                expires_at_ms: at,
            } = put;
            let undecodable = |what| {
                move |source| Error::Codec {
                    what,
                    seq: Some(seq),
                    source,
                }
            };
            let key = key_codec.decode(&key).map_err(undecodable("key"))?;
            let value = value_codec.decode(&value).map_err(undecodable("value"))?;
            if at == 0 {
                cache.insert(key, value);
            } else if let Err(refused) =
                cache.insert_with_ttl(key, value, Duration::from_millis(at - now_ms))
            {
                // A cache reopened without expiry keeps the entry for good.
                cache.insert(refused.key, refused.value);
            }
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, by the wall clock (what records store deadlines in).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent between statements; a panic in one
    // (from a codec, say) leaves nothing half-done to repair.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bounded concurrent cache whose entries survive a restart; built by
/// `Cache::builder().max_capacity(n).durable(dir).build()`. A cheap-to-clone handle like
/// [`Cache`]; the log is synced and closed when the last handle is dropped.
pub struct DurableCache<K, V, S = ahash::RandomState> {
    inner: Arc<Inner<K, V, S>>,
}

impl<K, V, S> Clone for DurableCache<K, V, S> {
    fn clone(&self) -> Self {
        DurableCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K, V, S> {
    cache: Cache<K, V, S>,
    /// The log, and buffers for encoding: every write to the cache happens under this lock,
    /// so the log's order of records for a key is the cache's order of changes to it.
    writer: Mutex<Writer>,
    group: GroupCommit,
    /// Keys the cache evicted or expired on its own, to be recorded (step 2 of the module doc).
    evicted: Arc<Mutex<Vec<K>>>,
    durability: Durability,
    key_codec: Arc<dyn Codec<K>>,
    value_codec: Arc<dyn Codec<V>>,
    /// When an `Interval` sync last started.
    last_sync: Mutex<Instant>,
    /// For `Interval`: the janitor that syncs, and this cache's place with it.
    registration: OnceLock<(Registration, Janitor)>,
}

struct Writer {
    log: Log,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl<K, V, S> Inner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn writer(&self) -> MutexGuard<'_, Writer> {
        lock(&self.writer)
    }

    /// Encodes `key` into the writer's key buffer.
    fn encode_key(&self, w: &mut Writer, key: &K) -> Result<(), Error> {
        w.key.clear();
        self.key_codec
            .encode(key, &mut w.key)
            .map_err(|source| Error::Codec {
                what: "key",
                seq: None,
                source,
            })
    }

    /// Records a delete for each queued key the cache no longer holds (step 2 of the module
    /// doc). Returns the last record's sequence number, if it appended any.
    fn drain_evicted(&self, w: &mut Writer) -> Result<Option<u64>, Error> {
        let keys = std::mem::take(&mut *lock(&self.evicted));
        let mut last = None;
        for key in keys {
            if self.cache.contains_key(&key) {
                continue; // written again since: its put is in the log already
            }
            self.encode_key(w, &key)?;
            last = Some(w.log.append(Op::Delete { key: &w.key })?);
        }
        Ok(last)
    }

    /// Waits, in [`Durability::Always`], until record `seq` is on stable storage.
    fn commit(&self, seq: u64) -> Result<(), Error> {
        match self.durability {
            Durability::Always => self.sync_through(seq + 1),
            Durability::Interval(_) | Durability::Manual => Ok(()),
        }
    }

    /// Makes every record below `through` durable, sharing the flush with other writers.
    fn sync_through(&self, through: u64) -> Result<(), Error> {
        Ok(self
            .group
            .wait_durable(through, || self.writer().log.sync_point())?)
    }

    fn sync(&self) -> Result<(), Error> {
        let through = {
            let mut w = self.writer();
            self.drain_evicted(&mut w)?;
            w.log.next_seq()
        };
        self.sync_through(through)
    }
}

impl<K, V, S> Maintain for Inner<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The `Interval` sync, on the janitor's thread; it first records the expiry queued since
    /// the last write (other modes register with no janitor).
    fn run_pending_tasks(&self) {
        let Durability::Interval(every) = self.durability else {
            return;
        };
        let tick = self
            .registration
            .get()
            .map_or(larder_janitor::DEFAULT_TICK, |(_, j)| j.tick());
        {
            let mut last = lock(&self.last_sync);
            // Sync at the last tick that keeps the gap within the interval.
            if last.elapsed() + tick <= every {
                return;
            }
            *last = Instant::now();
        }
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "larder: the durable cache's interval sync failed");
        }
    }
}

impl<K, V, S> Drop for Inner<K, V, S> {
    fn drop(&mut self) {
        let w = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = w.log.sync() {
            tracing::error!(
                error = %e,
                dir = %w.log.dir().display(),
                "larder: the durable cache's last sync failed on drop; recent writes may be lost"
            );
        }
    }
}

impl<K, V, S> DurableCache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// The value for `key`, counting an access. Lock-free; the log is not touched.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.cache.get(key)
    }

    /// The value for `key`, without counting an access. Lock-free.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.cache.peek(key)
    }

    /// Whether `key` has a value. Lock-free.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.cache.contains_key(key)
    }

    /// Inserts or replaces the value for `key`, recording it in the log. Returns once the
    /// record is appended (and, with [`Durability::Always`], on stable storage).
    ///
    /// # Errors
    /// [`Error::Codec`] if the key or value does not encode, or [`Error::Log`] if the append
    /// fails: the cache is then unchanged. With [`Durability::Always`], an [`Error::Log`]
    /// from the sync means the entry is in the cache but its durability is unknown; the log is
    /// failed from then on and refuses every later write.
    pub fn insert(&self, key: K, value: V) -> Result<(), Error> {
        let inner = &*self.inner;
        let seq = {
            let mut w = inner.writer();
            let w = &mut *w;
            w.log.check()?;
            inner.encode_key(w, &key)?;
            w.value.clear();
            inner
                .value_codec
                .encode(&value, &mut w.value)
                .map_err(|source| Error::Codec {
                    what: "value",
                    seq: None,
                    source,
                })?;
            let expires_at_ms = inner
                .cache
                .time_to_live()
                .map_or(0, |ttl| wall_ms().saturating_add(millis(ttl)));
            let mut seq = w.log.append(Op::Put {
                key: &w.key,
                value: &w.value,
                expires_at_ms,
            })?;
            let probe = key.clone();
            inner.cache.insert(key, value);
            if !inner.cache.contains_key(&probe) {
                // Refused as too heavy (the old value went too) or evicted at once.
                seq = w.log.append(Op::Delete { key: &w.key })?;
            }
            inner.drain_evicted(w)?.map_or(seq, |s| s.max(seq))
        };
        inner.commit(seq)
    }

    /// Removes `key`'s entry, recording the removal, and returns its value.
    ///
    /// # Errors
    /// As for [`insert`](Self::insert); on an error before the append the entry stays.
    pub fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        let inner = &*self.inner;
        let (seq, old) = {
            let mut w = inner.writer();
            let w = &mut *w;
            w.log.check()?;
            if !inner.cache.contains_key(key) {
                return Ok(None);
            }
            inner.encode_key(w, key)?;
            let seq = w.log.append(Op::Delete { key: &w.key })?;
            let old = inner.cache.remove(key);
            (inner.drain_evicted(w)?.map_or(seq, |s| s.max(seq)), old)
        };
        inner.commit(seq)?;
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
        let inner = &*self.inner;
        let seq = {
            let mut w = inner.writer();
            let seq = w.log.append(Op::Clear)?;
            inner.cache.clear();
            // Removals the clear raced with are recorded after it; deletes of absent keys.
            inner.drain_evicted(&mut w)?.map_or(seq, |s| s.max(seq))
        };
        inner.commit(seq)
    }

    /// Makes every write so far durable, whatever the [`Durability`]. Concurrent callers share
    /// one flush.
    ///
    /// # Errors
    /// [`Error::Log`]: the flush failed (the log is failed from then on), or had already.
    pub fn sync(&self) -> Result<(), Error> {
        self.inner.sync()
    }

    /// Syncs, then drops this handle. The log closes (and its directory's lock is released)
    /// when the last handle goes.
    ///
    /// # Errors
    /// As for [`sync`](Self::sync); the handle is dropped either way.
    pub fn close(self) -> Result<(), Error> {
        self.sync()
    }

    /// How many log flushes have run for syncs: with concurrent writers in
    /// [`Durability::Always`], fewer than the writes they made durable.
    pub fn flushes(&self) -> u64 {
        self.inner.group.flushes()
    }

    /// The number of entries (see [`Cache::len`]).
    pub fn len(&self) -> usize {
        self.inner.cache.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner.cache.is_empty()
    }

    /// The total weight of the entries.
    pub fn weighted_size(&self) -> u64 {
        self.inner.cache.weighted_size()
    }

    /// The capacity.
    pub fn capacity(&self) -> u64 {
        self.inner.cache.capacity()
    }

    /// The cache's statistics (see [`Cache::stats`]).
    pub fn stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// A weakly consistent iterator over clones of the entries (see [`Cache::iter`]).
    pub fn iter(&self) -> larder_core::Iter<'_, K, V, S>
    where
        K: Clone,
    {
        self.inner.cache.iter()
    }

    /// The log's directory.
    pub fn dir(&self) -> PathBuf {
        self.inner.writer().log.dir().to_path_buf()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<K, V, S> fmt::Debug for DurableCache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableCache")
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

impl<K, V, S> fmt::Debug for DurableBuilder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableBuilder")
            .field("cache", &self.cache)
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}
