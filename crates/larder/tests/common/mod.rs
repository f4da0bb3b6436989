//! Helpers shared by the facade's integration tests.

use larder::durable::{Error, LogOptions};
use larder::{Cache, Durability, DurableCache, IntoDurable};
use std::collections::BTreeMap;
use std::path::Path;

pub use larder_testkit::TempDir;

/// A durable cache of up to `capacity` `u64 → String` entries in `dir`, with small (4 KiB)
/// segments so that a few writes roll them, and no expiry.
#[allow(dead_code)] // not every test binary that shares this module opens one this way
pub fn durable_cache(
    dir: &Path,
    capacity: u64,
    durability: Durability,
) -> Result<DurableCache<u64, String>, Error> {
    Cache::builder()
        .max_capacity(capacity)
        .durable(dir)
        .durability(durability)
        .log_options(LogOptions::default().with_segment_size(4096))
        .build()
}

/// Every file in `dir`, by name, with its bytes.
#[allow(dead_code)] // not every test binary that shares this module compares directories
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// The user code that drops the last handle in [`last_handle_dropped_on_the_janitors_thread`].
#[allow(dead_code)]
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    EvictionListener,
    /// A removal observer set on the builder before `.durable(...)`.
    RemovalObserver,
}

/// A durable cache in `dir` of 10 entries that idle out (one shard, so one batch of expiry; a
/// time-to-idle of 50 ms on a mock clock; a janitor ticking every millisecond), whose `hook`,
/// on the janitor's thread, takes the last handle and drops it when it first hears of an
/// expiry. Returns how many entries that handle saw left as it went, and the keys a reopen
/// brings back (none should: every entry expired before the close).
#[allow(dead_code)]
pub fn last_handle_dropped_on_the_janitors_thread(dir: &Path, hook: Hook) -> (usize, Vec<u64>) {
    use larder::{Janitor, MockClock, RemovalCause};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;
    let time = MockClock::new();
    let slot: Arc<Mutex<Option<DurableCache<u64, String>>>> = Arc::default();
    let (dropped_tx, dropped) = mpsc::channel::<usize>();
    let drop_the_last = {
        let (slot, dropped_tx) = (Arc::clone(&slot), Mutex::new(dropped_tx));
        move |cause: RemovalCause| {
            if cause != RemovalCause::Expired {
                return;
            }
            let last = slot.lock().unwrap().take();
            if let Some(last) = last {
                let left = last.len();
                drop(last); // the log is closed, and the directory unlocked, when this returns
                dropped_tx.lock().unwrap().send(left).unwrap();
            }
        }
    };
    let builder = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .time_to_idle(Duration::from_millis(50))
        .clock(time.clock())
        .janitor(Janitor::dedicated(Duration::from_millis(1)));
    let builder = match hook {
        Hook::EvictionListener => {
            builder.eviction_listener(move |_, _, cause| drop_the_last(cause))
        }
        Hook::RemovalObserver => {
            builder.removal_observer(move |_: &u64, cause| drop_the_last(cause))
        }
    };
    let cache = builder
        .durable(dir)
        .durability(Durability::Manual)
        .compaction(larder::durable::Compaction::Manual)
        .build()
        .unwrap();
    for k in 0..10 {
        cache.insert(k, "idle".into()).unwrap();
    }
    *slot.lock().unwrap() = Some(cache);
    time.advance(Duration::from_millis(100));
    let left = dropped
        .recv_timeout(Duration::from_secs(20))
        .expect("the janitor expires the entries, and the hook drops the last handle");
    let back = keys_back(dir);
    (left, back)
}

/// The keys a reopen of `dir` brings back, sorted: as a cache of 100 with a time-to-idle of
/// 50 ms on a fresh mock clock sees them.
#[allow(dead_code)]
pub fn keys_back<K>(dir: &Path) -> Vec<K>
where
    K: Ord + Clone + std::hash::Hash + Eq + Send + Sync + 'static,
    K: serde::Serialize + serde::de::DeserializeOwned,
{
    let reopened: DurableCache<K, String> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(std::time::Duration::from_millis(50))
        .clock(larder::MockClock::new().clock())
        .without_janitor()
        .durable(dir)
        .build()
        .unwrap();
    let mut back: Vec<K> = reopened.iter().map(|(k, _)| k).collect();
    back.sort();
    back
}
