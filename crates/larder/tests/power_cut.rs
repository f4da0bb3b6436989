//! Power cuts: what is on the disk when the power goes, and what a reboot brings back. The
//! crash tests (`crash.rs`) kill the process, which leaves the page cache to write everything
//! out; here the disk itself stops (`larder_testkit::failing_disk`: ext4 with its journal on a
//! loop device over a FUSE image with a volatile write cache), losing a random half of what it
//! was not asked to flush, while writers, the janitor, a compacting thread and an emulated
//! kernel writeback (dirty pages written out early, in random order) run. Only the syncs the
//! log makes decide what must survive; anything else may or may not have. It needs root, so
//! `cargo test` skips it and `.ci/run`'s `disk` step runs it: `cargo test -p larder --test
//! power_cut -- --ignored`.
//!
//! What a reboot must find, checked without knowing when anything reached the disk: the log
//! that survives is a prefix of the records appended, and each writer appends its own writes
//! in its program order, so each writer's keys must hold what some prefix of its writes left
//! them, a prefix that holds every write a sync made durable.

use larder::durable::{Error, LogOptions};
use larder::{Cache, Durability, DurableCache, IntoDurable};
use larder_testkit::failing_disk::FailingDisk;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A durable cache with 16 KiB segments: the writers' overwrites roll the log every hundred
/// or so records and leave most of it dead, so the compacting thread's compactions
/// install often.
fn try_open(dir: &Path, durability: Durability) -> Result<DurableCache<u64, String>, Error> {
    Cache::builder()
        .max_capacity(1 << 20)
        .durable(dir)
        .durability(durability)
        .log_options(LogOptions::default().with_segment_size(16 << 10))
        .build()
}

fn open(dir: &Path, durability: Durability) -> DurableCache<u64, String> {
    try_open(dir, durability).expect("open the durable cache")
}

/// Each writer writes its own keys.
const KEYS_PER_WRITER: u64 = 200;

fn key(writer: u64, i: u64) -> u64 {
    (writer << 32) | i
}

/// One writer's writes in one life of the cache, in the order it made them (`None` a
/// removal), and how many of the first ones a sync made durable.
#[derive(Debug, Default)]
struct History {
    writes: Vec<(u64, Option<String>)>,
    durable: usize,
}

impl History {
    /// Whether `found` (the reopened cache's contents), on this writer's keys, is what some
    /// prefix of its writes, at least `durable` long, leaves over `before` (what the keys held
    /// when the life began). One pass: the prefix grows a write at a time, and a count of the
    /// keys that differ from `found` follows it.
    fn explains(
        &self,
        writer: u64,
        before: &BTreeMap<u64, String>,
        found: &BTreeMap<u64, String>,
    ) -> bool {
        let mut state: BTreeMap<u64, Option<&String>> = (0..KEYS_PER_WRITER)
            .map(|i| (key(writer, i), before.get(&key(writer, i))))
            .collect();
        let mut differ = state.iter().filter(|&(k, v)| found.get(k) != *v).count();
        for len in 0..=self.writes.len() {
            if len >= self.durable && differ == 0 {
                return true;
            }
            let Some((k, value)) = self.writes.get(len) else {
                break;
            };
            let (now, there) = (value.as_ref(), found.get(k));
            let was = state.insert(*k, now).expect("a key of the writer's own");
            differ -= usize::from(was != there);
            differ += usize::from(now != there);
        }
        false
    }
}

/// One writer: inserts and removes over its own keys until a write or sync fails, making its
/// writes durable after each (`Always`), with a `sync()` every 64 (`Manual`), or not at all
/// (`Interval`: the janitor's syncs, which it cannot see).
fn write_until_it_fails(
    cache: &DurableCache<u64, String>,
    durability: Durability,
    writer: u64,
    written: &AtomicU64,
) -> History {
    let mut history = History::default();
    for n in 0u64.. {
        let k = key(writer, (n * 7919) % KEYS_PER_WRITER);
        let value = (n % 5 != 4).then(|| format!("{writer}:{n}:{}", "v".repeat(100)));
        history.writes.push((k, value.clone()));
        let done = match value {
            Some(v) => cache.insert(k, v).map_err(|e| e.into_error()),
            None => cache.remove(&k).map(drop),
        };
        if done.is_err() {
            break;
        }
        written.fetch_add(1, Ordering::SeqCst);
        let synced = match durability {
            Durability::Always => true,
            Durability::Manual if n % 256 == 255 => match cache.sync() {
                Ok(()) => true,
                Err(_) => break,
            },
            _ => false,
        };
        if synced {
            history.durable = history.writes.len();
        }
    }
    history
}

/// Rounds on a fresh disk each, of two lives of the cache: four writers and a thread
/// compacting until the power goes, then a reboot and a reopen whose contents each writer's
/// history must explain ([`History::explains`]), with no key never written. The first life's
/// cut comes after a number of writes that grows each round; the second's after at most 40,
/// soon after the open has cut its torn tail and sealed what the first cut left rolled. Then
/// a third cut, 0 to 3 ms into an open.
fn survive_power_cuts(durability: Durability, rounds: u64) {
    let (mut kept_and_lost, mut opens_failed) = ((0, 0), 0);
    for round in 0..rounds {
        let seed = 0x5eed ^ round;
        let name = format!("power-cut-{durability:?}-{round}").replace(['(', ')', ' '], "");
        let disk = FailingDisk::with_write_cache(&name, 64, seed).unwrap_or_else(|e| panic!("{e}"));
        let dir = disk.path().join("cache");
        let mut before = BTreeMap::new();
        for (life, cut_after) in [200 + 400 * round, 10 * (round % 5)]
            .into_iter()
            .enumerate()
        {
            let cache = open(&dir, durability);
            let writeback = disk.write_back_at_random(&dir, seed << 1 | life as u64);
            let written = AtomicU64::new(0);
            let stop = AtomicBool::new(false);
            let (histories, cut) = std::thread::scope(|s| {
                let compactor = s.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        let _ = cache.compact();
                    }
                });
                let writers: Vec<_> = (0..4)
                    .map(|w| {
                        let (cache, written) = (&cache, &written);
                        s.spawn(move || write_until_it_fails(cache, durability, w, written))
                    })
                    .collect();
                while written.load(Ordering::SeqCst) < cut_after {
                    std::thread::yield_now();
                }
                let cut = disk.power_cut();
                let histories: Vec<History> =
                    writers.into_iter().map(|w| w.join().unwrap()).collect();
                stop.store(true, Ordering::SeqCst);
                compactor.join().unwrap();
                (histories, cut)
            });
            drop((cache, writeback));
            let at = format!("{durability:?} round {round} life {life} (seed {seed:#x}, {cut:?})");
            disk.restart().unwrap_or_else(|e| panic!("{at}: {e}"));
            let found: BTreeMap<u64, String> = open(&dir, durability).iter().collect();
            for (w, history) in (0..4).zip(&histories) {
                assert!(
                    history.explains(w, &before, &found),
                    "{at}: writer {w}'s keys hold what no prefix of its {} writes (at least {} \
                     durable) leaves",
                    history.writes.len(),
                    history.durable
                );
            }
            let strangers = found
                .keys()
                .filter(|&&k| k >> 32 >= 4 || k & 0xffff_ffff >= KEYS_PER_WRITER);
            assert_eq!(strangers.count(), 0, "{at}: keys never written");
            before = found;
            kept_and_lost = (kept_and_lost.0 + cut.kept, kept_and_lost.1 + cut.lost);
        }
        // Last, the power goes while an open recovers the log (cutting a torn tail, sealing
        // what was left rolled, removing what a compaction left): whatever of that reached the
        // disk, the next open finds the same contents.
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_micros(round * 150));
                disk.power_cut();
            });
            opens_failed += u32::from(try_open(&dir, durability).is_err());
        });
        disk.restart()
            .unwrap_or_else(|e| panic!("round {round}, cut in an open: {e}"));
        let found: BTreeMap<u64, String> = open(&dir, durability).iter().collect();
        assert!(
            found == before,
            "{durability:?} round {round}: an open cut short changed the contents"
        );
        assert!(disk.flushes() > 0);
    }
    eprintln!(
        "{durability:?}: {} power cuts while writing, the disk's cache keeping {} blocks and \
         losing {}; {rounds} during an open, {opens_failed} of which failed it",
        2 * rounds,
        kept_and_lost.0,
        kept_and_lost.1
    );
}

#[test]
#[ignore = "needs root, /dev/fuse, losetup and mkfs.ext4: .ci/run's disk step runs it"]
fn every_write_made_durable_survives_power_cuts_in_always_mode() {
    survive_power_cuts(Durability::Always, 20);
}

#[test]
#[ignore = "needs root, /dev/fuse, losetup and mkfs.ext4: .ci/run's disk step runs it"]
fn every_write_synced_survives_power_cuts_in_manual_mode() {
    survive_power_cuts(Durability::Manual, 20);
}

#[test]
#[ignore = "needs root, /dev/fuse, losetup and mkfs.ext4: .ci/run's disk step runs it"]
fn a_power_cut_leaves_a_prefix_of_the_writes_in_interval_mode() {
    survive_power_cuts(Durability::Interval(Duration::from_millis(100)), 20);
}
