//! The durable cache's compaction and recovery modes: compaction shrinks the log and keeps the
//! live set; the janitor compacts when half the log is dead and not before, never a log with
//! nothing dead however small the share, and at a share of 1 only one with nothing live; a
//! damaged log is refused, or salvaged and reported; a compaction that fails leaves the cache
//! writable, and the janitor tries again only once the log has grown by half; the last
//! handle's drop releases the directory at once; the janitor's compaction runs on a thread of
//! its own, so interval syncs go on meanwhile.

mod common;

use common::TempDir;
use larder::durable::{Compaction, Error, IoCall, LogOptions, RecoveryMode};
use larder::{Cache, Durability, DurableCache, IntoDurable};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn builder(dir: &Path) -> larder::durable::DurableBuilder<u64, String, ahash::RandomState> {
    Cache::builder()
        .max_capacity(10_000)
        .durable(dir)
        .durability(Durability::Manual)
        .log_options(LogOptions::default().with_segment_size(16 << 10))
}

fn contents(cache: &DurableCache<u64, String>) -> BTreeMap<u64, String> {
    cache.iter().collect()
}

/// Writes `n` times over 50 keys: mostly replacements, a removal in nine.
fn churn(cache: &DurableCache<u64, String>, from: u64, n: u64) {
    for i in from..from + n {
        if i % 9 == 0 {
            cache.remove(&(i % 50)).unwrap();
        } else {
            cache
                .insert(
                    i % 50,
                    format!("value {i} {}", "x".repeat((i % 40) as usize)),
                )
                .unwrap();
        }
    }
}

/// How many files in `dir` have `extension`: `snap` for snapshot parts, `seg` for segments.
fn files(dir: &Path, extension: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let p = e.as_ref().unwrap().path();
            p.extension().is_some_and(|e| e == extension)
        })
        .count()
}

#[test]
fn compaction_shrinks_the_log_and_the_entries_come_back() {
    let tmp = TempDir::new("compact-facade");
    let cache = builder(&tmp.0)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    churn(&cache, 0, 3000);
    let before = cache.log_usage();
    let report = cache.compact().unwrap();
    let after = cache.log_usage();
    assert_eq!(
        report.records_after,
        cache.len() as u64,
        "one put per live entry"
    );
    assert!(after.bytes * 10 < before.bytes, "{before:?} -> {after:?}");
    churn(&cache, 3000, 500);
    let want = contents(&cache);
    cache.close().unwrap();

    let cache = builder(&tmp.0).build().unwrap();
    assert_eq!(contents(&cache), want);
}

#[test]
fn the_janitor_compacts_once_half_the_log_is_dead_and_not_before() {
    let tmp = TempDir::new("compact-auto");
    let auto = Compaction::Auto {
        dead_share: 0.5,
        min_bytes: 0,
    };
    let cache = builder(&tmp.0).compaction(auto).build().unwrap();
    // Distinct keys: nothing in the log is dead, so nothing is due.
    for k in 100..400 {
        cache.insert(k, format!("live {k}")).unwrap();
    }
    let usage = cache.log_usage();
    cache.run_pending_tasks();
    assert_eq!(cache.log_usage(), usage, "compacted with nothing dead");
    assert_eq!(files(&tmp.0, "snap"), 0);
    // Rewrite the same keys three times over: three quarters of the log is dead.
    for round in 0..3 {
        for k in 100..400 {
            cache.insert(k, format!("round {round} {k}")).unwrap();
        }
    }
    let usage = cache.log_usage();
    cache.run_pending_tasks();
    let compacted = cache.log_usage();
    assert!(
        compacted.bytes * 3 < usage.bytes,
        "{usage:?} -> {compacted:?}"
    );
    assert!(files(&tmp.0, "snap") > 0);
    let want = contents(&cache);
    drop(cache);
    assert_eq!(contents(&builder(&tmp.0).build().unwrap()), want);
}

#[test]
fn the_janitor_thread_compacts_without_being_asked() {
    let tmp = TempDir::new("compact-janitor");
    let cache = builder(&tmp.0)
        .durability(Durability::Interval(Duration::from_millis(10)))
        .compaction(Compaction::Auto {
            dead_share: 0.5,
            min_bytes: 0,
        })
        .build()
        .unwrap();
    churn(&cache, 0, 2000);
    let start = Instant::now();
    while files(&tmp.0, "snap") == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no compaction");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn interval_syncs_go_on_while_the_janitor_compacts() {
    use std::sync::{Arc, Condvar, Mutex};
    // The janitor's compaction is held at its last step, removing the files it replaced
    // (outside every lock of the cache's), until an interval sync flushes the log, or for 10 s.
    // Run on the janitor's own thread, a compaction kept that thread from the syncs: nothing
    // was flushed until it ended.
    #[derive(Default)]
    struct Gate {
        held: bool,
        flushes_while_held: u32,
        released: bool,
    }
    let gate = Arc::new((Mutex::new(Gate::default()), Condvar::new()));
    let hook_gate = Arc::clone(&gate);
    let hook = move |call| {
        let (gate, changed) = &*hook_gate;
        let mut g = gate.lock().unwrap();
        match call {
            IoCall::Remove if !g.released => {
                g.held = true;
                changed.notify_all();
                let wait = Duration::from_secs(10);
                g = changed
                    .wait_timeout_while(g, wait, |g| g.flushes_while_held == 0)
                    .unwrap()
                    .0;
                g.released = true;
                changed.notify_all();
            }
            IoCall::Flush if g.held && !g.released => {
                g.flushes_while_held += 1;
                changed.notify_all();
            }
            _ => {}
        }
        Ok(())
    };
    let tmp = TempDir::new("compact-own-thread");
    let cache = Cache::builder()
        .max_capacity(10_000)
        .durable(&tmp.0)
        .durability(Durability::Interval(Duration::from_millis(20)))
        .compaction(Compaction::Auto {
            dead_share: 0.5,
            min_bytes: 0,
        })
        .log_options(LogOptions::default().with_io_hook(hook))
        .build()
        .unwrap();
    churn(&cache, 0, 2000);
    let (state, changed) = &*gate;
    let wait = Duration::from_secs(10);
    let g = changed
        .wait_timeout_while(state.lock().unwrap(), wait, |g| !g.held)
        .unwrap()
        .0;
    assert!(g.held, "no compaction reached its last step");
    drop(g);
    // A write for the next interval sync to flush.
    cache
        .insert(7, "written during the compaction".into())
        .unwrap();
    let flushes = changed
        .wait_timeout_while(state.lock().unwrap(), 2 * wait, |g| !g.released)
        .unwrap()
        .0
        .flushes_while_held;
    assert!(flushes > 0, "no interval sync while the compaction ran");
}

#[test]
fn a_dead_share_outside_zero_to_one_is_refused() {
    let tmp = TempDir::new("compact-share");
    for share in [0.0, -1.0, 1.5, f64::NAN] {
        let result = builder(&tmp.0)
            .compaction(Compaction::Auto {
                dead_share: share,
                min_bytes: 0,
            })
            .build();
        assert!(
            matches!(result, Err(Error::InvalidCompaction { .. })),
            "{share}"
        );
    }
}

#[test]
fn a_damaged_log_is_refused_or_salvaged_and_reported() {
    let tmp = TempDir::new("compact-salvage");
    let cache = builder(&tmp.0)
        .compaction(Compaction::Manual)
        .build()
        .unwrap();
    for k in 0..2000 {
        cache.insert(k, format!("value {k}")).unwrap();
    }
    cache.close().unwrap();
    flip_byte(&tmp.0, 1, 5000);

    match builder(&tmp.0).build() {
        Err(Error::Log(larder_log::Error::Corruption { segment: 1, .. })) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    // `recovery` holds whether `log_options` (which has a mode of its own) comes before it or
    // after. After it, it used to put the mode back to `Strict`, and the open was refused.
    let salvaged = builder(&tmp.0)
        .recovery(RecoveryMode::SkipCorrupt)
        .log_options(LogOptions::default().with_segment_size(16 << 10))
        .build();
    assert_eq!(salvaged.map(|c| c.damage().len()).ok(), Some(1));
    let cache = builder(&tmp.0)
        .recovery(RecoveryMode::SkipCorrupt)
        .build()
        .unwrap();
    let damage = cache.damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].segment, 1);
    let lost = 2000 - cache.len();
    assert!(lost > 0 && lost < 500, "{lost} entries lost");
    assert_eq!(
        cache.get(&0).as_deref(),
        Some("value 0"),
        "before the damage"
    );
    assert_eq!(cache.get(&1999).as_deref(), Some("value 1999"), "after it");
}

#[test]
fn dropping_the_last_handle_releases_the_directory_at_once() {
    // A janitor ticking every millisecond, compacting whenever half the log is dead, holds the
    // cache (and the directory's lock) for most of each compaction. The drop of the last
    // handle must still release the directory before it returns.
    let tmp = TempDir::new("compact-release");
    let open = || {
        builder(&tmp.0)
            .durability(Durability::Interval(Duration::from_millis(1)))
            .compaction(Compaction::Auto {
                dead_share: 0.5,
                min_bytes: 0,
            })
            .build()
            .unwrap()
    };
    for round in 0..100u64 {
        let cache = open();
        let clone = cache.clone();
        churn(&cache, round * 300, 300);
        let want = contents(&cache);
        drop(cache);
        assert_eq!(contents(&clone), want, "a clone keeps it open");
        drop(clone);
    }
}

/// Flips a bit of the byte at `offset` in segment `id` of the log in `dir`, as a failing disk
/// might, whether or not a log has the directory open.
fn flip_byte(dir: &Path, id: u64, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(format!("{id:020}.seg")))
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], offset).unwrap();
}

#[test]
fn damage_a_compaction_skips_after_the_open_is_reported() {
    // A segment sealed during this run and damaged since (a failing disk): the open never saw
    // it. A SkipCorrupt compaction skips the rest of that file, and removes the file; the
    // cache must say what was skipped, as it does for damage found on open.
    let tmp = TempDir::new("compact-skip-report");
    let cache = builder(&tmp.0)
        .compaction(Compaction::Manual)
        .recovery(RecoveryMode::SkipCorrupt)
        .build()
        .unwrap();
    for k in 0..2000 {
        cache.insert(k, format!("value {k}")).unwrap();
    }
    cache.sync().unwrap(); // every segment but the last sealed
    assert!(cache.damage().is_empty());
    flip_byte(&tmp.0, 1, 5000);
    cache.compact().unwrap();
    let damage = cache.damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].segment, 1);
    assert!(damage[0].offset <= 5000, "{damage:?}");
}

/// The names of the snapshot parts: each compaction writes new ones, so a change of names
/// between two ticks is a compaction.
fn snapshot_names(dir: &Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .map(|p| p.file_name().unwrap().to_owned())
        .collect()
}

/// Runs the janitor's work `ticks` times and counts the compactions it made.
fn compactions_over(cache: &DurableCache<u64, String>, dir: &Path, ticks: usize) -> usize {
    let mut names = snapshot_names(dir);
    let mut compactions = 0;
    for _ in 0..ticks {
        cache.run_pending_tasks();
        let now = snapshot_names(dir);
        if now != names {
            compactions += 1;
            names = now;
        }
    }
    compactions
}

#[test]
fn a_log_with_nothing_dead_is_never_due_however_small_the_share() {
    // Distinct keys of uneven sizes: every record is a live entry's put. The estimate of the
    // live bytes, the live entries at the average put size, came out a rounding error short
    // of the log (`puts * (put_bytes / puts) < put_bytes` in floating point), and a share as
    // small as that error made the log due: the janitor compacted it on every tick, for good,
    // with nothing written.
    for share in [f64::MIN_POSITIVE, 1e-300, 1e-9] {
        let tmp = TempDir::new("compact-nothing-dead");
        let cache = builder(&tmp.0)
            .compaction(Compaction::Auto {
                dead_share: share,
                min_bytes: 0,
            })
            .build()
            .unwrap();
        let mut k = 0;
        loop {
            cache.insert(k, "v".repeat(k as usize % 7)).unwrap();
            k += 1;
            let u = cache.log_usage();
            let (puts, put_bytes) = (u.puts as f64, u.put_bytes as f64);
            if k >= 20 && put_bytes / puts * puts < put_bytes {
                break; // the shape that rounds short
            }
            assert!(k < 10_000, "no shape rounds short");
        }
        assert_eq!(
            compactions_over(&cache, &tmp.0, 10),
            0,
            "compacted with nothing dead at a share of {share:e}"
        );
        // A compacted log holds one put per live entry, and is not due again either.
        cache.compact().unwrap();
        assert_eq!(
            compactions_over(&cache, &tmp.0, 10),
            0,
            "compacted a compacted log again at a share of {share:e}"
        );
        // One dead record is enough at such a share, and once compacted, it is over.
        cache.remove(&0).unwrap();
        assert_eq!(
            compactions_over(&cache, &tmp.0, 10),
            1,
            "one removal at a share of {share:e}"
        );
    }
}

#[test]
fn a_dead_share_of_one_compacts_only_an_entirely_dead_log() {
    let tmp = TempDir::new("compact-all-dead");
    let cache = builder(&tmp.0)
        .compaction(Compaction::Auto {
            dead_share: 1.0,
            min_bytes: 0,
        })
        .build()
        .unwrap();
    // An empty log: nothing to compact, and no share of nothing to divide by.
    assert_eq!(compactions_over(&cache, &tmp.0, 3), 0, "an empty log");
    // One entry live among many dead records: not due.
    for i in 0..500u64 {
        cache.insert(i % 50, format!("value {i}")).unwrap();
    }
    for k in 1..50 {
        cache.remove(&k).unwrap();
    }
    assert_eq!(compactions_over(&cache, &tmp.0, 3), 0, "one entry live");
    // Nothing live: due once, and the compacted log, empty, is not due again.
    cache.remove(&0).unwrap();
    assert_eq!(compactions_over(&cache, &tmp.0, 5), 1, "nothing live");
    assert_eq!(cache.log_usage().bytes, 0);
    assert!(cache.is_empty());
}

/// A compaction that fails (here on damage a failing disk made to a record after it was
/// written) leaves the cache writable and its log as it was, and the janitor does not try
/// again at every tick, each try rolling a segment and reading the whole log: it waits for
/// the log to grow by half from its size after the failure. Nothing tested the failure at
/// the cache's level, nor the wait.
#[test]
fn a_failed_automatic_compaction_is_tried_again_once_the_log_has_grown_by_half() {
    let tmp = TempDir::new("compact-backoff");
    let cache: DurableCache<u64, String> = Cache::builder()
        .max_capacity(10_000)
        .without_janitor()
        .durable(&tmp.0)
        .durability(Durability::Manual)
        .compaction(Compaction::Auto {
            dead_share: 0.5,
            min_bytes: 0,
        })
        // Larger than everything this test writes: only a compaction rolls a segment.
        .log_options(LogOptions::default().with_segment_size(4 << 20))
        .build()
        .unwrap();
    let mut model = BTreeMap::new();
    let write = |model: &mut BTreeMap<u64, String>, i: u64| {
        let (key, value) = (i % 50, format!("value {i}"));
        cache.insert(key, value.clone()).unwrap();
        model.insert(key, value);
    };
    for i in 0..2000 {
        write(&mut model, i);
    }
    assert_eq!(files(&tmp.0, "seg"), 1);
    // A record's byte flipped on disk: the next compaction seals this segment and fails to
    // read it back.
    flip_byte(&tmp.0, 1, 5000);

    // Each compaction, failed or not, begins by rolling the active segment: with segments too
    // large to fill here, a new segment file is a compaction tried.
    cache.run_pending_tasks();
    assert_eq!(files(&tmp.0, "seg"), 2, "the first compaction was tried");
    assert_eq!(
        files(&tmp.0, "snap"),
        0,
        "a failed rewrite's parts are removed"
    );
    let failed_at = cache.log_usage().bytes;
    let retry_at = failed_at + failed_at / 2;
    let mut i = 2000;
    loop {
        write(&mut model, i);
        i += 1;
        let bytes = cache.log_usage().bytes;
        cache.run_pending_tasks();
        if bytes >= retry_at {
            assert_eq!(files(&tmp.0, "seg"), 3, "not tried again at {bytes} bytes");
            break;
        }
        assert_eq!(
            files(&tmp.0, "seg"),
            2,
            "tried again at {bytes} bytes, before {retry_at} ({failed_at} at the failure)"
        );
    }
    assert!(i > 2100, "only {} writes to grow the log by half", i - 2000);
    assert_eq!(files(&tmp.0, "snap"), 0);
    assert_eq!(contents(&cache), model, "the cache lost entries");
    // Asked for, a compaction runs whatever the wait, and says why it failed.
    match cache.compact() {
        Err(Error::Log(larder_log::Error::Corruption { segment: 1, .. })) => {}
        other => panic!("{other:?}"),
    }
    for j in i..i + 100 {
        write(&mut model, j);
    }
    cache.sync().unwrap();
    assert_eq!(contents(&cache), model);
}
