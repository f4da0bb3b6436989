//! User code the durable cache calls, calling back into the same cache: a removal observer
//! the user set, an eviction listener, a codec. Each case that could wait for itself has a
//! bounded wait, so that it fails the test instead of hanging it.

mod common;

use common::{keys_back, TempDir};
use larder::durable::{Codec, CodecError, Compaction, Postcard};
use larder::{Cache, Durability, DurableCache, IntoDurable, Janitor, MockClock, RemovalCause};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// How long a case may take before it counts as waiting for good.
const BOUND: Duration = Duration::from_secs(20);

/// A removal observer the user sets on the builder, before `.durable(...)`, is user code as the
/// listener is, and may drop the durable cache's last handle on the janitor's thread. The
/// observers were told each entry of the tick's batch in the order they were set, the user's
/// first, so the close ran before the durable cache's own observer had queued a single key of
/// the batch, and every idle entry came back ("expired before the close, back after it:
/// [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"). Now the observer set last, the durable cache's, hears the
/// whole batch before the user's hears its first entry.
#[test]
fn a_users_observer_that_drops_the_last_handle_on_the_janitors_thread_leaves_nothing_expired_to_come_back(
) {
    let tmp = TempDir::new("reentrant-observer-drops-last");
    let (left, back) =
        common::last_handle_dropped_on_the_janitors_thread(&tmp.0, common::Hook::RemovalObserver);
    assert_eq!(left, 0, "the batch took every entry out of the table");
    assert!(
        back.is_empty(),
        "expired before the close, back after it: {back:?}"
    );
}

/// A key that tells, once, when it is hashed on a thread named `compactor`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Key(u64);

static HASHED_ON_COMPACTOR: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        if std::thread::current().name() == Some("compactor") {
            if let Some(hashed) = HASHED_ON_COMPACTOR.lock().unwrap().take() {
                hashed.send(()).unwrap();
            }
        }
        self.0.hash(state);
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Key)
    }
}

/// An eviction listener runs inside the write that removed the entry, which holds its key's
/// stripe (and a `clear` every stripe), and may compact the cache. A compaction running on
/// another thread (the user's `compact`, or the janitor's, by way of `run_pending_tasks` here)
/// drained the queued deletes under the compaction's lock, waiting for their keys' stripes:
/// the listener waited for that lock, the compaction for the stripe the listener's write
/// held, and neither returned ("a clear whose listener compacts, beside a compaction that
/// drains, never returned"). The compaction on the other thread is caught where it waits: its
/// drain hashes a queued key to find its stripe (`Key`'s `Hash` tells), then waits for that
/// stripe. Now a compaction drains before it takes its lock, and holds it waiting for no
/// stripe. The listener also runs the cache's pending tasks first, whose compaction, due, must
/// not drain inside the listener's write either.
#[test]
fn a_listener_that_compacts_beside_a_compaction_does_not_deadlock_its_write() {
    for janitors in [false, true] {
        let tmp = TempDir::new(&format!("reentrant-listener-compacts-{janitors}"));
        let time = MockClock::new();
        let slot: Arc<Mutex<Option<DurableCache<Key, String>>>> = Arc::default();
        let (hashed_tx, hashed) = mpsc::channel::<()>();
        let hashed = Mutex::new(hashed);
        let (start_tx, start) = mpsc::channel::<DurableCache<Key, String>>();
        let start_tx = Mutex::new(Some(start_tx));
        let in_listener = Arc::clone(&slot);
        let cache: DurableCache<Key, String> = Cache::builder()
            .max_capacity(100)
            .shards(1)
            .time_to_idle(Duration::from_millis(50))
            .clock(time.clock())
            .without_janitor()
            .eviction_listener(move |_, _, cause| {
                // The clear's first live entry; the idle ones, queued, are for the compactor.
                let start_tx = start_tx.lock().unwrap().take();
                let (Some(start_tx), RemovalCause::Explicit) = (start_tx, cause) else {
                    return;
                };
                let clone = in_listener.lock().unwrap().clone().unwrap();
                *HASHED_ON_COMPACTOR.lock().unwrap() = Some(hashed_tx.clone());
                start_tx.send(clone.clone()).unwrap();
                hashed
                    .lock()
                    .unwrap()
                    .recv_timeout(BOUND)
                    .expect("the compactor drains a queued key");
                if janitors {
                    // Due: the clear left nothing live.
                    clone.run_pending_tasks();
                }
                clone.compact().unwrap();
            })
            .durable(&tmp.0)
            .durability(Durability::Manual)
            .compaction(if janitors {
                // Due whenever anything is dead.
                Compaction::Auto {
                    dead_share: 1e-9,
                    min_bytes: 0,
                }
            } else {
                Compaction::Manual
            })
            .build()
            .unwrap();
        *slot.lock().unwrap() = Some(cache.clone());
        let compactor = std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                let cache = start.recv().unwrap();
                if janitors {
                    cache.run_pending_tasks();
                } else {
                    cache.compact().unwrap();
                }
            })
            .unwrap();
        for k in 0..10 {
            cache.insert(Key(k), "idle".into()).unwrap();
        }
        time.advance(Duration::from_millis(30));
        for k in 0..5 {
            assert!(cache.get(&Key(k)).is_some(), "read, to stay");
        }
        time.advance(Duration::from_millis(30));
        let (done_tx, done) = mpsc::channel();
        let clearer = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache.clear().unwrap();
                cache.insert(Key(7), "after the clear".into()).unwrap();
                done_tx.send(()).unwrap();
            })
        };
        match done.recv_timeout(BOUND) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(clearer.join().unwrap_err())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "a clear whose listener compacts, beside a compaction that drains, never \
                 returned (the janitor's compaction: {janitors})"
            ),
        }
        clearer.join().unwrap();
        compactor.join().unwrap();
        drop(slot.lock().unwrap().take());
        cache.close().unwrap();
        assert_eq!(keys_back::<Key>(&tmp.0), [Key(7)], "{janitors}");
    }
}

/// What the key codec does with the last handle when it finds it in its slot.
#[derive(Clone, Copy, Debug)]
enum Ends {
    Drop,
    Close,
}

/// A key codec that, the first time it encodes on a thread of the durable cache's maintenance
/// (the janitor's sync, or a shared janitor's `larder-sync`), syncs the handle in its slot and
/// closes a clone of it, moves the clock on so that every entry left idles out, and then ends
/// the handle, the last. It says so on `told`, and that it is dropped itself, with the cache.
struct EndsTheLastHandle {
    slot: Arc<Mutex<Option<DurableCache<u64, String>>>>,
    time: MockClock,
    ends: Ends,
    told: Mutex<mpsc::Sender<&'static str>>,
}

impl Codec<u64> for EndsTheLastHandle {
    fn encode(&self, value: &u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let thread = std::thread::current();
        if matches!(thread.name(), Some("larder-janitor" | "larder-sync")) {
            let last = self.slot.lock().unwrap().take();
            if let Some(last) = last {
                last.sync().unwrap();
                last.clone().close().unwrap();
                self.time.advance(Duration::from_millis(100));
                match self.ends {
                    Ends::Drop => drop(last),
                    Ends::Close => last.close().unwrap(),
                }
                let _ = self.told.lock().unwrap().send("ended");
            }
        }
        Postcard.encode(value, out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<u64, CodecError> {
        Postcard.decode(bytes)
    }
}

impl Drop for EndsTheLastHandle {
    fn drop(&mut self) {
        let _ = self.told.lock().unwrap().send("dropped");
    }
}

/// A key codec may hold a handle of its durable cache, and on a thread of the cache's
/// maintenance that handle can be the last: the janitor's interval sync drains the deletes of
/// what expired, encoding each key, with no handle of its own. The last handle's close there
/// drained in turn, and waited for the drain that the thread was running (its lock, and the
/// stripe of the key being encoded), for good ("the last handle's end inside the key codec
/// never returned"). Now the close is left to the drain's end: the drain records the rest of
/// its keys, then the close removes what has expired since (every entry left, here), records
/// that too, syncs and closes, and nothing expired comes back. A sync and a clone's close
/// inside the codec take no stripe and leave the drain alone.
#[test]
fn a_codec_that_ends_the_last_handle_in_the_janitors_drain_closes_the_log_after_it() {
    // A sync on the janitor's thread, and on the shared janitor's `larder-sync`.
    for every in [Duration::from_millis(1), Duration::from_secs(1)] {
        for ends in [Ends::Drop, Ends::Close] {
            let what = format!("{ends:?} in the sync every {every:?}");
            let tmp = TempDir::new(&format!("reentrant-codec-{ends:?}-{}", every.as_millis()));
            let time = MockClock::new();
            let slot: Arc<Mutex<Option<DurableCache<u64, String>>>> = Arc::default();
            let (told_tx, told) = mpsc::channel();
            let cache: DurableCache<u64, String> = Cache::builder()
                .max_capacity(100)
                .shards(1)
                .time_to_idle(Duration::from_millis(50))
                .clock(time.clock())
                // Slow, so that only the close removes what the codec's clock idles out.
                .janitor(Janitor::dedicated(Duration::from_millis(100)))
                .durable(&tmp.0)
                .key_codec(EndsTheLastHandle {
                    slot: Arc::clone(&slot),
                    time: time.clone(),
                    ends,
                    told: Mutex::new(told_tx),
                })
                .durability(Durability::Interval(every))
                .compaction(Compaction::Manual)
                .build()
                .unwrap();
            for k in 0..10 {
                cache.insert(k, "idle".into()).unwrap();
            }
            time.advance(Duration::from_millis(30));
            for k in 0..5 {
                assert!(cache.get(&k).is_some(), "read, to stay");
            }
            // The other five idle out, for the janitor to remove and the sync to drain.
            *slot.lock().unwrap() = Some(cache);
            time.advance(Duration::from_millis(30));
            let told = |what_for: &str| {
                told.recv_timeout(BOUND)
                    .unwrap_or_else(|_| panic!("{what}: {what_for}"))
            };
            assert_eq!(
                told("the last handle's end inside the key codec never returned"),
                "ended"
            );
            assert_eq!(told("the cache was never dropped"), "dropped");
            let back: Vec<u64> = keys_back(&tmp.0);
            assert!(back.is_empty(), "{what}: back after the close: {back:?}");
        }
    }
}
