//! The concurrent check: several threads run operations of their own on one shared cache at
//! the same time.
//!
//! No single order of the operations is known, so no answer can be predicted. What can be
//! checked is what every interleaving must respect, if each call takes effect at one instant
//! between its start and its return (linearizability), and each thread sees its calls in
//! program order:
//!
//! - **Provenance.** Every value a thread writes names its writer, the writer's operation
//!   index, and its key ([`encode`]). A value any call returns must be one that a write of
//!   that key made, by the thread and at the index it names.
//! - **No going back.** A thread that has seen writer `w`'s value `j` for a key, or wrote `j`
//!   itself, or found the key absent after `w`'s `j` (a remove that returned it, or its own
//!   remove, clear or load that came after its own writes), never sees a value of `w` older
//!   than `j` for that key again: `w` wrote them in order, and an eviction or a removal cannot
//!   bring an older one back. Each thread keeps a floor per key and writer.
//! - **The bound.** `len()` and `weighted_size()` are within the capacity whenever a thread
//!   looks, not only when the writers are quiet.
//! - **Loads.** A `get_with` whose loader ran returns the loader's value; one that did not run
//!   its loader returns another write of the key; a `try_get_with` that did not run its loader
//!   and failed shares some other thread's failing load of the key.
//! - **At the end**, writers quiet: `validate()` passes, `iter()` agrees with `len()` and
//!   `weighted_size()` (as after every operation in [`check_bounded`](crate::check_bounded)),
//!   every resident value is its writer's last word on the key (no later insert, remove,
//!   invalidate or clear by the same thread), and the read counters add up to every `get` and
//!   load made.
//! - **Every value leaves once.** The eviction listener hears each value at most once, never
//!   one still resident, never one whose insert was refused, and every value an insert stored
//!   is either still resident or heard (the durable cache logs its deletes from these notices,
//!   so one lost is an entry back after a restart, and one heard twice a delete of a newer
//!   value). A loaded value may be neither: a load another write overtook hands its value to
//!   its callers unstored. `stats()` counts one eviction, removal or expiration per notice of
//!   that cause, and a rejection for every refused insert (and refused load).
//!
//! [`check_concurrent_expiring`] runs the same on a cache with a time-to-live of
//! [`TIME_TO_LIVE_MS`] on a mock clock that any thread may move
//! (`Advance`), and adds the rule that counts most for expiry: a call that starts once a value's
//! lifetime is over, counted from the moment its write returned, never returns it. (Each write
//! records the mock time as it returns; a value seen before its writer recorded that is not
//! judged.) At the end every entry `iter()` yields must still be alive; then the clock moves
//! past every lifetime and `run_pending_tasks` must leave the cache empty, every value that
//! was stored heard.
//!
//! A thread that does not finish within [`STUCK_AFTER`] is reported as stuck (a lost wake-up
//! in a load, a lock never released) instead of hanging the test.
//!
//! The interleaving differs from run to run, so a failure may not repeat; its message carries
//! the whole input, to run again many times.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use larder_core::{CacheBuilder, MockClock, RemovalCause};

use crate::common::{check_cache, check_len};
use crate::{Config, Key, ModelCache, Value, KEY_SPACE, TIME_TO_LIVE_MS};

/// The most threads a [`ConcurrentInput`] runs.
pub const MAX_THREADS: usize = 3;

/// Operations each thread runs at most; more are dropped when decoding, as [`encode`] has 16
/// bits for an operation's index.
pub const MAX_THREAD_OPS: usize = 1 << 12;

/// How many operations [`ConcurrentInput::check`] gives each thread at least, repeating its
/// sequence.
pub const REPEAT_TO: usize = 1 << 10;

/// How long the threads may take before the check calls them stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(20);

/// One call a thread makes. Writes carry no value: the value is made from the writer, the
/// operation's index and the key ([`encode`]), and the low two bits the operation gives, which
/// set its weight in a weighted cache ([`weight_of`](crate::weight_of)).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadOp {
    /// `get(&key)`.
    Get(#[arbitrary(with = arbitrary_key)] Key),
    /// `peek(&key)`.
    Peek(#[arbitrary(with = arbitrary_key)] Key),
    /// `contains_key(&key)`.
    ContainsKey(#[arbitrary(with = arbitrary_key)] Key),
    /// `insert(key, value)`, the value's weight bits given.
    Insert(#[arbitrary(with = arbitrary_key)] Key, u8),
    /// `remove(&key)`.
    Remove(#[arbitrary(with = arbitrary_key)] Key),
    /// `invalidate(&key)`.
    Invalidate(#[arbitrary(with = arbitrary_key)] Key),
    /// `clear()`.
    Clear,
    /// `get_with(key, loader)`, the loaded value's weight bits given.
    GetWith(#[arbitrary(with = arbitrary_key)] Key, u8),
    /// `try_get_with(key, loader)`: the loader succeeds with a value of these weight bits, or
    /// fails.
    TryGetWith(#[arbitrary(with = arbitrary_key)] Key, Result<u8, ()>),
    /// Walks `iter()`, checking each entry like a read.
    Iter,
    /// Reads `len()` and `weighted_size()`.
    Sizes,
    /// Moves the mock clock `n % 32` milliseconds on (nothing without expiry).
    Advance(u8),
    /// `run_pending_tasks()`: removes what has expired, as the janitor would.
    RunPendingTasks,
}

impl ThreadOp {
    /// The weight bits of the value this operation writes to `key`, if it is a write of `key`
    /// that makes a value.
    fn writes_value(self, key: Key) -> Option<u8> {
        match self {
            ThreadOp::Insert(k, bits) | ThreadOp::GetWith(k, bits) if k == key => Some(bits),
            ThreadOp::TryGetWith(k, Ok(bits)) if k == key => Some(bits),
            _ => None,
        }
    }

    /// Whether, once this operation has returned, no earlier value of its thread for `key`
    /// can be resident.
    fn supersedes(self, key: Key) -> bool {
        match self {
            ThreadOp::Insert(k, _) | ThreadOp::Remove(k) | ThreadOp::Invalidate(k) => k == key,
            ThreadOp::Clear => true,
            _ => false,
        }
    }
}

fn arbitrary_key(u: &mut Unstructured<'_>) -> arbitrary::Result<Key> {
    u.int_in_range(0..=KEY_SPACE - 1)
}

/// The value thread `thread` writes to `key` at its operation `index`: weight bits in bits 0–1,
/// the key in 2–9, the index in 10–25 and the thread in 26–31.
pub fn encode(thread: usize, index: usize, key: Key, bits: u8) -> Value {
    debug_assert!(thread < MAX_THREADS && index < MAX_THREAD_OPS);
    Value::from(bits & 3) | Value::from(key) << 2 | (index as Value) << 10 | (thread as Value) << 26
}

/// The writer, index, key and weight bits of a value made by [`encode`].
pub fn decode(value: Value) -> (usize, usize, Key, u8) {
    let bits = (value & 3) as u8;
    let key = (value >> 2) as Key;
    let index = ((value >> 10) & 0xffff) as usize;
    let thread = (value >> 26) as usize;
    (thread, index, key, bits)
}

/// A test case of the concurrent check: the `concurrent_ops` fuzz target's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrentInput {
    /// The cache to build.
    pub config: Config,
    /// Each thread's operations, in its order; 2 to [`MAX_THREADS`] threads.
    pub threads: Vec<Vec<ThreadOp>>,
}

impl<'a> Arbitrary<'a> for ConcurrentInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary_take_rest(Unstructured::new(u.bytes(u.len())?))
    }

    /// The config, the thread count, then a thread and an operation for it until the bytes run
    /// out: the threads' operations come interleaved, so a short input gives every thread
    /// something to do.
    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        let config = u.arbitrary()?;
        let count = u.int_in_range(2..=MAX_THREADS)?;
        let mut threads = vec![Vec::new(); count];
        while !u.is_empty() {
            let thread = u.int_in_range(0..=count - 1)?;
            let op = u.arbitrary()?;
            if threads[thread].len() < MAX_THREAD_OPS {
                threads[thread].push(op);
            }
        }
        Ok(ConcurrentInput { config, threads })
    }
}

impl ConcurrentInput {
    /// Decodes an input the way the fuzz target does, for replaying a fuzzer artifact.
    pub fn decode(bytes: &[u8]) -> arbitrary::Result<Self> {
        Self::arbitrary_take_rest(Unstructured::new(bytes))
    }

    /// Runs [`check_concurrent`], then [`check_concurrent_expiring`], on this input, each
    /// thread's operations repeated until there are [`REPEAT_TO`] of them: starting a thread
    /// takes about as long as a few hundred operations, so the short sequences a fuzzer
    /// favours would otherwise seldom overlap.
    pub fn check(&self) -> Result<(), String> {
        let threads: Vec<Vec<ThreadOp>> = self
            .threads
            .iter()
            .map(|ops| {
                ops.iter()
                    .copied()
                    .cycle()
                    .take(ops.len().max(REPEAT_TO))
                    .collect()
            })
            .collect();
        check_concurrent(self.config, &threads)?;
        check_concurrent_expiring(self.config, &threads)
    }
}

/// Runs each of `threads` on a thread of its own, all at once on one cache built from
/// `config`, and checks what the [module](self) lists.
///
/// # Panics
/// If more than [`MAX_THREADS`] threads, or a thread with more than [`MAX_THREAD_OPS`]
/// operations, is given: their values could not say who wrote them.
pub fn check_concurrent(config: Config, threads: &[Vec<ThreadOp>]) -> Result<(), String> {
    let fail = |error: String| format!("check_concurrent with {config:?}: {error}");
    let heard = Heard::default();
    let Some(cache) = config.build_checked(listener(&heard)).map_err(fail)? else {
        return Ok(());
    };
    run(&cache, config, threads, None, &heard).map_err(fail)
}

/// [`check_concurrent`] on a cache whose entries live [`TIME_TO_LIVE_MS`] on a mock clock the
/// threads move (`Advance`), with the expiry rule of the [module](self) besides. A config the
/// builder must refuse is left to `check_concurrent`.
///
/// # Panics
/// As [`check_concurrent`].
pub fn check_concurrent_expiring(config: Config, threads: &[Vec<ThreadOp>]) -> Result<(), String> {
    let fail = |error: String| format!("check_concurrent_expiring with {config:?}: {error}");
    let time = MockClock::new();
    let heard = Heard::default();
    let listen = listener(&heard);
    let expiring = |builder: CacheBuilder<Key, Value>| {
        listen(builder)
            .time_to_live(Duration::from_millis(TIME_TO_LIVE_MS))
            .clock(time.clock())
            .without_janitor()
    };
    let Some(cache) = config.build_checked(expiring).map_err(fail)? else {
        return Ok(());
    };
    run(&cache, config, threads, Some(time), &heard).map_err(fail)
}

/// What the eviction listener heard, in the order it heard it.
type Heard = Arc<Mutex<Vec<(Key, Value, RemovalCause)>>>;

/// The setting that makes a cache tell `heard` of every entry that leaves it.
fn listener(heard: &Heard) -> impl FnOnce(CacheBuilder<Key, Value>) -> CacheBuilder<Key, Value> {
    let heard = Arc::clone(heard);
    move |builder| {
        builder.eviction_listener(move |key: Arc<Key>, value, cause| {
            heard.lock().unwrap().push((*key, value, cause));
        })
    }
}

/// What the threads share besides the cache: the operations, the mock clock if there is one,
/// and, per thread and operation, the mock time at which the operation's write returned.
struct Shared {
    threads: Vec<Vec<ThreadOp>>,
    time: Option<MockClock>,
    /// [`NOT_YET`] until the write has returned; only its own thread stores it.
    ends: Vec<Vec<AtomicU64>>,
}

/// An `ends` entry whose write has not returned (or that is no write).
const NOT_YET: u64 = u64::MAX;

impl Shared {
    fn new(threads: &[Vec<ThreadOp>], time: Option<MockClock>) -> Self {
        Shared {
            threads: threads.to_vec(),
            time,
            ends: threads
                .iter()
                .map(|ops| ops.iter().map(|_| AtomicU64::new(NOT_YET)).collect())
                .collect(),
        }
    }

    /// The mock time in milliseconds (0 without a clock).
    fn now(&self) -> u64 {
        self.time
            .as_ref()
            .map_or(0, |t| t.elapsed().as_millis() as u64)
    }

    /// When the write that made `value` returned, if it has.
    fn ended(&self, value: Value) -> Option<u64> {
        let (writer, index, ..) = decode(value);
        // Acquire: pairs with the Release in `wrote`, though only the value's own visibility
        // matters here: a reader that sees the value may see NOT_YET, and then does not judge.
        let end = self.ends[writer][index].load(Ordering::Acquire);
        (end != NOT_YET).then_some(end)
    }

    /// Whether a value whose write ended at `end` has expired by `now`: its deadline is its
    /// write time, at most `end`, plus the time-to-live.
    fn expired(&self, end: u64, now: u64) -> bool {
        self.time.is_some() && now >= end + TIME_TO_LIVE_MS
    }
}

/// Starts the threads, waits for them (or calls them stuck), then checks the quiet cache.
fn run(
    cache: &ModelCache,
    config: Config,
    threads: &[Vec<ThreadOp>],
    time: Option<MockClock>,
    heard: &Heard,
) -> Result<(), String> {
    assert!(
        threads.len() <= MAX_THREADS,
        "at most {MAX_THREADS} threads"
    );
    assert!(
        threads.iter().all(|ops| ops.len() <= MAX_THREAD_OPS),
        "at most {MAX_THREAD_OPS} operations a thread"
    );
    let shared = Arc::new(Shared::new(threads, time));
    let outcomes = {
        let (cache, shared) = (cache.clone(), Arc::clone(&shared));
        on_threads(threads.len(), move |thread| {
            let mut run = ThreadRun::new(thread, &cache, config, &shared);
            run.run().map(|()| run.outcome)
        })?
    };
    let mut outcome = Outcome::default();
    for theirs in outcomes {
        outcome.add(theirs);
    }
    check_quiet(cache, config, &shared, outcome.reads).map_err(|e| format!("at the end: {e}"))?;
    check_heard(cache, config, &shared, &outcome, heard).map_err(|e| format!("at the end: {e}"))
}

/// Runs `work(thread)` on `count` threads of their own, started together, and returns what
/// each returned, in thread order. The first error, a thread that panicked, or threads not
/// done within [`STUCK_AFTER`] (a lost wake-up in a load, a lock never released) is the error.
pub(crate) fn on_threads<T: Send + 'static>(
    count: usize,
    work: impl Fn(usize) -> Result<T, String> + Send + Sync + 'static,
) -> Result<Vec<T>, String> {
    let work = Arc::new(work);
    let start = Arc::new(Barrier::new(count));
    let (done, results) = mpsc::channel();
    let mut handles = Vec::new();
    for thread in 0..count {
        let (work, start, done) = (Arc::clone(&work), Arc::clone(&start), done.clone());
        // Not scoped: a thread that never returns must not keep the check from reporting it.
        handles.push(std::thread::spawn(move || {
            start.wait();
            let _ = done.send((thread, work(thread)));
        }));
    }
    drop(done);
    let mut returned: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for _ in 0..count {
        match results.recv_timeout(STUCK_AFTER) {
            Ok((thread, Ok(result))) => returned[thread] = Some(result),
            Ok((thread, Err(error))) => return Err(format!("thread {thread}: {error}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let stuck: Vec<usize> = (0..count).filter(|&t| returned[t].is_none()).collect();
                return Err(format!(
                    "threads {stuck:?} did not finish within {STUCK_AFTER:?}"
                ));
            }
            // A thread that panicked dropped its sender without sending.
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("a thread panicked".into()),
        }
    }
    // Every thread has sent its result, so each ends at once. Joined, so that what each frees
    // as it exits (its share of retired nodes, its pools) is freed before the check returns:
    // a leak checker run right after (the fuzzer's) would otherwise count it as lost.
    for handle in handles {
        let _ = handle.join();
    }
    Ok(returned.into_iter().flatten().collect())
}

/// What the threads did that the end needs: reads made, and insert values stored or refused.
#[derive(Default)]
struct Outcome {
    /// The `get`s and loads made, each a hit or a miss in `stats()`.
    reads: u64,
    /// Values an insert stored (`insert_and_check` returned `true`).
    stored: Vec<Value>,
    /// Values an insert was refused.
    refused: Vec<Value>,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.reads += other.reads;
        self.stored.extend(other.stored);
        self.refused.extend(other.refused);
    }
}

/// Checks the listener's notices against what stayed (the [module](self)'s "every value
/// leaves once"). With a clock, first moves it past every lifetime and runs the pending
/// tasks, so that everything stored has left.
fn check_heard(
    cache: &ModelCache,
    config: Config,
    shared: &Shared,
    outcome: &Outcome,
    heard: &Heard,
) -> Result<(), String> {
    if let Some(time) = &shared.time {
        time.advance(Duration::from_millis(TIME_TO_LIVE_MS + 1));
        cache.run_pending_tasks();
        ensure!(
            cache.is_empty(),
            "{} entries are left once every lifetime is over and run_pending_tasks has run",
            cache.len()
        );
    }
    let resident: HashSet<Value> = cache.iter().map(|(_, value)| value).collect();
    let refused: HashSet<Value> = outcome.refused.iter().copied().collect();
    let heard = heard.lock().unwrap();
    let mut once = HashSet::new();
    let (mut size, mut explicit, mut expired, mut replaced) = (0, 0, 0, 0);
    for &(key, value, cause) in heard.iter() {
        check_provenance(&shared.threads, key, value).map_err(|e| format!("the listener: {e}"))?;
        let (writer, index, ..) = decode(value);
        let whose = format!("key {key}'s value from thread {writer}'s op #{index}");
        ensure!(once.insert(value), "the listener heard {whose} twice");
        ensure!(
            !resident.contains(&value),
            "the listener heard {whose} leave ({cause:?}), but it is still resident"
        );
        ensure!(
            !refused.contains(&value),
            "the listener heard {whose} leave ({cause:?}), but its insert was refused"
        );
        match cause {
            RemovalCause::Size => {
                // An entry of weight 0 frees no capacity, so it is never evicted.
                ensure!(
                    config.weight(value) != 0,
                    "the listener heard {whose}, of weight 0, evicted"
                );
                size += 1;
            }
            RemovalCause::Explicit => explicit += 1,
            RemovalCause::Expired => expired += 1,
            // No counter of its own: the old value of an update, or of an insert refused as
            // too heavy (which takes the key's value with it), checked below.
            RemovalCause::Replaced => replaced += 1,
            _ => {}
        }
    }
    for &value in &outcome.stored {
        let (writer, index, key, _) = decode(value);
        ensure!(
            resident.contains(&value) || once.contains(&value),
            "key {key}'s value from thread {writer}'s op #{index} was stored, is no longer resident, and the listener never heard it leave"
        );
    }
    let stats = cache.stats();
    for (what, counted, notices) in [
        ("evictions", stats.evictions, size),
        ("removals", stats.removals, explicit),
        ("expirations", stats.expirations, expired),
    ] {
        ensure!(
            counted == notices,
            "stats() counts {counted} {what}, but {notices} were heard"
        );
    }
    // Every value stored is counted once as it comes, as an insert (for a key with no live
    // value, a load's included) or an update, and once as it goes, by the notice it is heard
    // with; so what came, less what went, is what is resident. A count a race lost or made
    // twice breaks it: `inserts` and `updates` have no other check beside writers.
    let (came, went) = (
        stats.inserts + stats.updates,
        size + explicit + expired + replaced,
    );
    ensure!(
        came == stats.len + went,
        "stats() counts {} inserts and {} updates, {came} values stored, but {} are resident \
         and {went} were heard leave",
        stats.inserts,
        stats.updates,
        stats.len
    );
    // A load too heavy for its shard is refused too, unseen by its caller.
    let refused = outcome.refused.len() as u64;
    ensure!(
        stats.rejections >= refused,
        "stats() counts {} rejections, but {refused} inserts were refused",
        stats.rejections
    );
    Ok(())
}

/// The end-of-run checks, every thread done.
fn check_quiet(
    cache: &ModelCache,
    config: Config,
    shared: &Shared,
    reads: u64,
) -> Result<(), String> {
    let threads = &shared.threads;
    let contents = if shared.time.is_some() {
        // Expired entries may still be resident, counted by `len()` but skipped by `iter()`,
        // so only the structure and the bound are checked before the walk.
        cache
            .validate()
            .map_err(|error| format!("validate() failed: {error}"))?;
        check_len(cache.len(), cache.is_empty(), config.most_entries())?;
        let mut contents = HashMap::new();
        for (key, value) in cache.iter() {
            ensure!(
                contents.insert(key, value).is_none(),
                "iter() yielded key {key} twice"
            );
        }
        contents
    } else {
        check_cache(cache, &config)?
    };
    let now = shared.now();
    for (&key, &value) in &contents {
        check_provenance(threads, key, value)?;
        let (writer, index, ..) = decode(value);
        if let Some(end) = shared.ended(value).filter(|&end| shared.expired(end, now)) {
            return Err(format!(
                "iter() yields key {key}'s value from thread {writer}'s op #{index}, written by {end} ms, at {now} ms"
            ));
        }
        let later = threads[writer][index + 1..]
            .iter()
            .position(|op| op.supersedes(key));
        if let Some(offset) = later {
            let at = index + 1 + offset;
            return Err(format!(
                "key {key} holds thread {writer}'s value from op #{index}, but that thread's op #{at} {:?} came after it",
                threads[writer][at]
            ));
        }
    }
    let stats = cache.stats();
    ensure!(
        stats.hits + stats.misses == reads,
        "stats() counts {} hits and {} misses, but the threads made {reads} gets and loads",
        stats.hits,
        stats.misses
    );
    if shared.time.is_none() {
        ensure!(
            stats.len == contents.len() as u64,
            "stats().len is {} but iter() yields {} entries",
            stats.len,
            contents.len()
        );
    }
    Ok(())
}

/// Checks that `value`, returned for `key`, was written to `key` by the operation it names.
fn check_provenance(threads: &[Vec<ThreadOp>], key: Key, value: Value) -> Result<(), String> {
    let (writer, index, of, bits) = decode(value);
    ensure!(
        of == key,
        "value {value:#x} for key {key} was written for key {of}"
    );
    let op = threads.get(writer).and_then(|ops| ops.get(index));
    ensure!(
        op.and_then(|op| op.writes_value(key)).map(|b| b & 3) == Some(bits),
        "value {value:#x} for key {key} names thread {writer}'s op #{index} ({op:?}), which wrote no such value"
    );
    Ok(())
}

/// One thread's run: its operations, and what it has seen.
struct ThreadRun<'a> {
    thread: usize,
    cache: &'a ModelCache,
    config: Config,
    shared: &'a Shared,
    /// The oldest index of each writer's values for each key this thread may still see.
    floors: HashMap<(Key, usize), usize>,
    outcome: Outcome,
}

impl<'a> ThreadRun<'a> {
    fn new(thread: usize, cache: &'a ModelCache, config: Config, shared: &'a Shared) -> Self {
        ThreadRun {
            thread,
            cache,
            config,
            shared,
            floors: HashMap::new(),
            outcome: Outcome::default(),
        }
    }

    fn run(&mut self) -> Result<(), String> {
        for (index, &op) in self.shared.threads[self.thread].iter().enumerate() {
            self.apply(index, op)
                .map_err(|error| format!("op #{index} {op:?}: {error}"))?;
        }
        Ok(())
    }

    fn apply(&mut self, index: usize, op: ThreadOp) -> Result<(), String> {
        let cache = self.cache;
        let me = self.thread;
        // When the call starts: what it returns must have been alive then.
        let start = self.shared.now();
        match op {
            ThreadOp::Get(key) => {
                self.outcome.reads += 1;
                self.seen("get", key, cache.get(&key), start)?;
            }
            ThreadOp::Peek(key) => self.seen("peek", key, cache.peek(&key), start)?,
            ThreadOp::ContainsKey(key) => {
                cache.contains_key(&key);
            }
            ThreadOp::Insert(key, bits) => {
                let value = encode(me, index, key, bits);
                if cache.insert_and_check(key, value) {
                    self.outcome.stored.push(value);
                } else {
                    self.outcome.refused.push(value);
                }
                self.wrote(index);
                self.raise(key, me, index);
                self.check_sizes()?;
            }
            ThreadOp::Remove(key) => {
                let got = cache.remove(&key);
                self.seen("remove", key, got, start)?;
                if let Some((writer, at, ..)) = got.map(decode) {
                    self.raise(key, writer, at + 1);
                }
                self.raise(key, me, index);
            }
            ThreadOp::Invalidate(key) => {
                cache.invalidate(&key);
                self.raise(key, me, index);
            }
            ThreadOp::Clear => {
                cache.clear();
                for key in 0..KEY_SPACE {
                    self.raise(key, me, index);
                }
            }
            ThreadOp::GetWith(key, bits) => {
                self.outcome.reads += 1;
                let mine = encode(me, index, key, bits);
                let mut loaded = false;
                let got = cache.get_with(key, || {
                    loaded = true;
                    mine
                });
                if loaded {
                    ensure!(
                        got == mine,
                        "get_with loaded {mine:#x} but returned {got:#x}"
                    );
                    self.wrote(index);
                    // The key was absent when the load began, after this thread's earlier
                    // values.
                    self.raise(key, me, index);
                    self.check_sizes()?;
                } else {
                    self.seen("get_with without loading", key, Some(got), start)?;
                }
            }
            ThreadOp::TryGetWith(key, result) => {
                self.outcome.reads += 1;
                let mine = result.map(|bits| encode(me, index, key, bits));
                let mut loaded = false;
                let got = cache
                    .try_get_with(key, || {
                        loaded = true;
                        mine
                    })
                    .map_err(|_| ());
                if loaded {
                    ensure!(
                        got == mine,
                        "try_get_with loaded {mine:?} but returned {got:?}"
                    );
                    self.wrote(index);
                    self.raise(key, me, index);
                    self.check_sizes()?;
                } else if let Ok(got) = got {
                    self.seen("try_get_with without loading", key, Some(got), start)?;
                } else {
                    let failing = self.shared.threads.iter().enumerate().any(|(t, ops)| {
                        t != me && ops.contains(&ThreadOp::TryGetWith(key, Err(())))
                    });
                    ensure!(
                        failing,
                        "try_get_with failed without running its loader, and no other thread's loader for key {key} fails"
                    );
                }
            }
            ThreadOp::Iter => {
                let mut keys = HashSet::new();
                for (key, value) in cache.iter() {
                    ensure!(keys.insert(key), "iter() yielded key {key} twice");
                    self.seen("iter", key, Some(value), start)?;
                }
                // No count to check: an entry removed after the walk copied it and another
                // inserted where the walk has yet to reach are both seen, so a walk beside
                // writers may yield more entries than the capacity holds.
            }
            ThreadOp::Sizes => self.check_sizes()?,
            ThreadOp::Advance(ms) => {
                if let Some(time) = &self.shared.time {
                    time.advance(Duration::from_millis(u64::from(ms % 32)));
                }
            }
            ThreadOp::RunPendingTasks => cache.run_pending_tasks(),
        }
        Ok(())
    }

    /// Records that this thread's write at `index` has returned, and when.
    fn wrote(&self, index: usize) {
        // Release: pairs with the Acquire in `Shared::ended`.
        self.shared.ends[self.thread][index].store(self.shared.now(), Ordering::Release);
    }

    /// Checks a value `what` returned for `key`, in a call that started at mock time `start`,
    /// against where it came from, this thread's floor for its writer and its lifetime, then
    /// raises the floor to it.
    fn seen(&mut self, what: &str, key: Key, got: Option<Value>, start: u64) -> Result<(), String> {
        let Some(value) = got else { return Ok(()) };
        check_provenance(&self.shared.threads, key, value).map_err(|e| format!("{what}: {e}"))?;
        let (writer, index, ..) = decode(value);
        let floor = self.floors.get(&(key, writer)).copied().unwrap_or(0);
        ensure!(
            index >= floor,
            "{what} returned thread {writer}'s value from its op #{index} for key {key}, older than op #{floor}, which this thread had already seen or outdated"
        );
        if let Some(end) = self.shared.ended(value) {
            ensure!(
                !self.shared.expired(end, start),
                "{what} started at {start} ms and returned key {key}'s value from thread {writer}'s op #{index}, written by {end} ms: its {TIME_TO_LIVE_MS} ms were over"
            );
        }
        self.raise(key, writer, index);
        Ok(())
    }

    /// Records that `writer`'s values for `key` older than `index` are gone for this thread.
    fn raise(&mut self, key: Key, writer: usize, index: usize) {
        let floor = self.floors.entry((key, writer)).or_insert(0);
        *floor = (*floor).max(index);
    }

    /// The bound holds whenever anyone looks, writers busy or not.
    fn check_sizes(&self) -> Result<(), String> {
        let (capacity, most) = (self.config.capacity, self.config.most_entries());
        let (len, weighted_size) = (self.cache.len(), self.cache.weighted_size());
        ensure!(
            len as u64 <= most && weighted_size <= capacity,
            "len() {len} exceeds {most} entries, or weighted_size() {weighted_size} exceeds \
             capacity {capacity}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicyKind;

    fn config(capacity: u64, shards: usize, weighted: bool) -> Config {
        Config {
            capacity,
            policy: PolicyKind::S3Fifo,
            shards,
            weighted,
        }
    }

    #[test]
    fn values_say_who_wrote_them() {
        for (thread, index, key, bits) in [(0, 0, 0, 0), (2, MAX_THREAD_OPS - 1, KEY_SPACE - 1, 3)]
        {
            assert_eq!(
                decode(encode(thread, index, key, bits)),
                (thread, index, key, bits)
            );
        }
        // The weight bits are the value's low bits, which the weigher reads.
        assert_eq!(crate::weight_of(encode(1, 7, 9, 3)), 4);
    }

    #[test]
    fn decoding_gives_every_thread_its_share() {
        let bytes: Vec<u8> = (0..=255).cycle().take(4096).collect();
        let input = ConcurrentInput::decode(&bytes).unwrap();
        assert!((2..=MAX_THREADS).contains(&input.threads.len()));
        assert!(input.threads.iter().all(|ops| !ops.is_empty()));
    }

    #[test]
    fn a_quiet_run_passes() {
        let ops = vec![
            ThreadOp::Insert(1, 0),
            ThreadOp::Get(1),
            ThreadOp::GetWith(2, 1),
            ThreadOp::Iter,
        ];
        check_concurrent(config(8, 2, true), &[ops.clone(), ops]).unwrap();
    }

    // The checks must be able to fail: each of these feeds one a value no run could give.

    #[test]
    fn a_quiet_expiring_run_passes() {
        let ops = vec![
            ThreadOp::Insert(1, 0),
            ThreadOp::Advance(7),
            ThreadOp::Get(1),
            ThreadOp::RunPendingTasks,
            ThreadOp::Iter,
        ];
        check_concurrent_expiring(config(8, 2, false), &[ops.clone(), ops]).unwrap();
    }

    #[test]
    fn a_value_with_no_writer_is_caught() {
        let shared = Shared::new(
            &[vec![ThreadOp::Get(1)], vec![ThreadOp::Insert(1, 0)]],
            None,
        );
        let cache = config(8, 1, false).build().unwrap();
        let mut run = ThreadRun::new(0, &cache, config(8, 1, false), &shared);
        let err = run.seen("get", 1, Some(encode(1, 0, 2, 0)), 0).unwrap_err();
        assert!(err.contains("written for key 2"), "{err}");
        let err = run.seen("get", 1, Some(encode(0, 0, 1, 0)), 0).unwrap_err();
        assert!(err.contains("wrote no such value"), "{err}");
        let err = run.seen("get", 1, Some(encode(1, 0, 1, 3)), 0).unwrap_err();
        assert!(err.contains("wrote no such value"), "{err}");
        run.seen("get", 1, Some(encode(1, 0, 1, 0)), 0).unwrap();
    }

    #[test]
    fn an_older_value_after_a_newer_one_is_caught() {
        let threads = [
            vec![ThreadOp::Get(1)],
            vec![ThreadOp::Insert(1, 0), ThreadOp::Insert(1, 0)],
        ];
        let shared = Shared::new(&threads, None);
        let cache = config(8, 1, false).build().unwrap();
        let mut run = ThreadRun::new(0, &cache, config(8, 1, false), &shared);
        run.seen("get", 1, Some(encode(1, 1, 1, 0)), 0).unwrap();
        let err = run.seen("get", 1, Some(encode(1, 0, 1, 0)), 0).unwrap_err();
        assert!(err.contains("older than op #1"), "{err}");
    }

    #[test]
    fn a_value_read_after_its_lifetime_is_caught() {
        let threads = [vec![ThreadOp::Get(1)], vec![ThreadOp::Insert(1, 0)]];
        let shared = Shared::new(&threads, Some(MockClock::new()));
        let cache = config(8, 1, false).build().unwrap();
        let run = ThreadRun::new(1, &cache, config(8, 1, false), &shared);
        run.wrote(0);
        let mut run = ThreadRun::new(0, &cache, config(8, 1, false), &shared);
        let value = Some(encode(1, 0, 1, 0));
        run.seen("get", 1, value, TIME_TO_LIVE_MS - 1).unwrap();
        let err = run.seen("get", 1, value, TIME_TO_LIVE_MS).unwrap_err();
        assert!(err.contains("were over"), "{err}");
    }

    #[test]
    fn a_value_its_writer_outdated_is_caught_at_the_end() {
        let shared = Shared::new(&[vec![ThreadOp::Insert(1, 0), ThreadOp::Remove(1)]], None);
        let cache = config(8, 1, false).build().unwrap();
        cache.insert(1, encode(0, 0, 1, 0));
        let err = check_quiet(&cache, config(8, 1, false), &shared, 0).unwrap_err();
        assert!(err.contains("op #1 Remove(1) came after it"), "{err}");
    }

    #[test]
    fn a_value_that_left_unheard_or_was_heard_twice_is_caught() {
        let shared = Shared::new(
            &[vec![ThreadOp::Insert(1, 0), ThreadOp::Insert(2, 0)]],
            None,
        );
        let heard = Heard::default();
        let cache = config(8, 1, false).build_with(listener(&heard)).unwrap();
        let (first, second) = (encode(0, 0, 1, 0), encode(0, 1, 2, 0));
        let outcome = Outcome {
            stored: vec![first, second],
            ..Outcome::default()
        };
        cache.insert(1, first);
        cache.insert(2, second);
        assert_eq!(
            check_heard(&cache, config(8, 1, false), &shared, &outcome, &heard),
            Ok(())
        );
        cache.remove(&1);
        assert_eq!(
            check_heard(&cache, config(8, 1, false), &shared, &outcome, &heard),
            Ok(())
        );

        let cache = config(8, 1, false).build().unwrap();
        cache.insert(2, second);
        let err = check_heard(
            &cache,
            config(8, 1, false),
            &shared,
            &outcome,
            &Heard::default(),
        )
        .unwrap_err();
        assert!(err.contains("key 1's value from thread 0's op #0 was stored, is no longer resident, and the listener never heard"), "{err}");

        heard.lock().unwrap().push((1, first, RemovalCause::Size));
        let err = check_heard(&cache, config(8, 1, false), &shared, &outcome, &heard).unwrap_err();
        assert!(
            err.contains("heard key 1's value from thread 0's op #0 twice"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_of_weight_0_heard_evicted_is_caught() {
        let shared = Shared::new(&[vec![ThreadOp::Insert(1, 0)]], None);
        let value = encode(0, 0, 1, 0);
        let outcome = Outcome {
            stored: vec![value],
            ..Outcome::default()
        };
        let heard = Heard::default();
        heard.lock().unwrap().push((1, value, RemovalCause::Size));
        let cache = config(8, 1, true).build().unwrap();
        let check =
            |weighted| check_heard(&cache, config(8, 1, weighted), &shared, &outcome, &heard);
        // Unweighted, the value weighs 1 (the stats, which count no eviction, are wrong then).
        let err = check(false).unwrap_err();
        assert!(!err.contains("weight 0"), "{err}");
        let err = check(true).unwrap_err();
        assert!(err.contains("of weight 0, evicted"), "{err}");
    }
}
