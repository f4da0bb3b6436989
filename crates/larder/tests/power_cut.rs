//! Power cuts: what is on the disk when the power goes, and what a reboot brings back. The
//! crash tests (`crash.rs`) kill the process, which leaves the page cache to write everything
//! out; here the disk itself stops (`larder_testkit::failing_disk`: ext4 with its journal on a
//! loop device over a FUSE image with a volatile write cache), losing a random half of what it
//! was not asked to flush, while writers, the janitor and a compacting thread run. Only the
//! syncs the log makes decide what survives. It needs root, so `cargo test` skips it and
//! `.ci/run`'s `disk` step runs it: `cargo test -p larder --test power_cut -- --ignored`.

use larder::durable::LogOptions;
use larder::{Cache, Durability, DurableCache, IntoDurable};
use larder_testkit::failing_disk::FailingDisk;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A durable cache with 64 KiB segments: the writers' overwrites roll the log every few
/// hundred records and leave most of it dead, so the compacting thread's compactions
/// install often.
fn open(dir: &Path, durability: Durability) -> DurableCache<u64, String> {
    Cache::builder()
        .max_capacity(1 << 20)
        .durable(dir)
        .durability(durability)
        .log_options(LogOptions::default().with_segment_size(64 << 10))
        .build()
        .expect("open the durable cache")
}

/// A key's writes, as one writer saw them: the value of the last one made durable (`None`
/// for a removal, or for no write yet), then the writes made after it, not known durable.
#[derive(Debug, Default)]
struct KeyLog {
    durable: Option<String>,
    pending: Vec<Option<String>>,
}

impl KeyLog {
    /// What a reopen may find: a log that survives a power cut is a prefix of the records
    /// written, which holds every durable one. So the key holds its last durable value, or
    /// one written after it.
    fn allows(&self, found: Option<&String>) -> bool {
        self.durable.as_ref() == found || self.pending.iter().any(|p| p.as_ref() == found)
    }
}

/// One writer: inserts and removes over its own 200 keys until a write or sync fails, making
/// its writes durable after each (`Always`) or with a `sync()` every 64 (`Manual`). `keys`
/// holds what an earlier life of the cache left of them.
fn write_until_it_fails(
    cache: &DurableCache<u64, String>,
    durability: Durability,
    writer: u64,
    mut keys: HashMap<u64, KeyLog>,
    made_durable: &AtomicU64,
) -> HashMap<u64, KeyLog> {
    let mut unsynced = Vec::new();
    for n in 0u64.. {
        let key = (writer << 32) | ((n * 7919) % 200);
        let value = (n % 5 != 4).then(|| format!("{writer}:{n}:{}", "v".repeat(100)));
        keys.entry(key).or_default().pending.push(value.clone());
        let written = match &value {
            Some(v) => cache.insert(key, v.clone()).map_err(|e| e.into_error()),
            None => cache.remove(&key).map(drop),
        };
        if written.is_err() {
            break;
        }
        unsynced.push(key);
        let synced = match durability {
            Durability::Always => true,
            _ if n % 64 == 63 => match cache.sync() {
                Ok(()) => true,
                Err(_) => break,
            },
            _ => false,
        };
        if synced {
            for key in unsynced.drain(..) {
                let log = keys.get_mut(&key).expect("a key written");
                log.durable = log.pending.drain(..).next_back().flatten();
            }
            made_durable.fetch_add(1, Ordering::SeqCst);
        }
    }
    keys
}

/// Rounds on a fresh disk each, of two lives of the cache: four writers and a thread
/// compacting, until the power goes, then a reboot and a reopen that must find, for every key,
/// its last durable value or one written after it, and no key never written. The first life's
/// cut comes after a number of syncs that grows each round; the second's, after at most four,
/// soon after the open has cut its torn tail and sealed what the cut left rolled.
fn survive_power_cuts(durability: Durability, rounds: u64) {
    let mut kept_and_lost = (0, 0);
    for round in 0..rounds {
        let seed = 0x5eed ^ round;
        let name = format!("power-cut-{durability:?}-{round}").replace(['(', ')'], "");
        let disk = FailingDisk::with_write_cache(&name, 64, seed).unwrap_or_else(|e| panic!("{e}"));
        let dir = disk.path().join("cache");
        let mut keys: Vec<HashMap<u64, KeyLog>> = (0..4).map(|_| HashMap::new()).collect();
        for (life, cut_after) in [20 + 40 * round, round % 5].into_iter().enumerate() {
            let cache = open(&dir, durability);
            let made_durable = AtomicU64::new(0);
            let stop = AtomicBool::new(false);
            let cut = std::thread::scope(|s| {
                let compactor = s.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        let _ = cache.compact();
                    }
                });
                let writers: Vec<_> = (0..4)
                    .zip(keys.drain(..))
                    .map(|(w, keys)| {
                        let (cache, made_durable) = (&cache, &made_durable);
                        s.spawn(move || {
                            write_until_it_fails(cache, durability, w, keys, made_durable)
                        })
                    })
                    .collect();
                while made_durable.load(Ordering::SeqCst) < cut_after {
                    std::thread::yield_now();
                }
                let cut = disk.power_cut();
                keys = writers.into_iter().map(|w| w.join().unwrap()).collect();
                stop.store(true, Ordering::SeqCst);
                compactor.join().unwrap();
                cut
            });
            drop(cache);
            let at = format!("{durability:?} round {round} life {life} (seed {seed:#x}, {cut:?})");
            disk.restart().unwrap_or_else(|e| panic!("{at}: {e}"));
            let found: BTreeMap<u64, String> = open(&dir, durability).iter().collect();
            for (key, log) in keys.iter_mut().flatten() {
                assert!(
                    log.allows(found.get(key)),
                    "{at}: key {key:#x} holds {:?}; durable {:?}, written after it {:?}",
                    found.get(key),
                    log.durable,
                    log.pending
                );
                // What the reopen found is on the disk: the next life starts from it.
                *log = KeyLog {
                    durable: found.get(key).cloned(),
                    pending: Vec::new(),
                };
            }
            let strangers = found
                .keys()
                .filter(|k| !keys.iter().any(|w| w.contains_key(k)));
            assert_eq!(strangers.count(), 0, "{at}: keys never written");
            kept_and_lost = (kept_and_lost.0 + cut.kept, kept_and_lost.1 + cut.lost);
        }
        assert!(disk.flushes() > 0);
    }
    eprintln!(
        "{durability:?}: {} power cuts; the disk's cache kept {} blocks and lost {}",
        2 * rounds,
        kept_and_lost.0,
        kept_and_lost.1
    );
}

#[test]
#[ignore = "needs root, /dev/fuse, losetup and mkfs.ext4: .ci/run's disk step runs it"]
fn every_write_made_durable_survives_power_cuts_in_always_mode() {
    survive_power_cuts(Durability::Always, 10);
}

#[test]
#[ignore = "needs root, /dev/fuse, losetup and mkfs.ext4: .ci/run's disk step runs it"]
fn every_write_synced_survives_power_cuts_in_manual_mode() {
    survive_power_cuts(Durability::Manual, 10);
}
