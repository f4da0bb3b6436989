//! Compaction: the live set is the same before and after, with appends during the run; a crash
//! at every system call of a compaction recovers to the same live set (and a strict open that
//! finds a damaged part keeps the segments it replaced); a stale compaction is refused;
//! expired puts go; damage is skipped only when asked, and reported.

mod common;

use common::{
    compact, compact_to_nothing, damage_file, damage_segment, failing_when_armed, files, put_200,
    segments, TempDir,
};
use larder_log::format::{Kind, Op, HEADER_LEN};
use larder_log::{Damage, Error, IoCall, Log, Options, RecoveryMode};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Key bytes to value bytes: what a replay leaves live.
type Live = BTreeMap<Vec<u8>, Vec<u8>>;

fn small() -> Options {
    Options::default().with_segment_size(4096)
}

/// Opens `dir` with `options`, returning the log and the live set its records describe.
fn open_with(dir: &Path, options: Options) -> Result<(Log, Live), Error> {
    let mut live = Live::new();
    let log = Log::open(dir, options, |r| match r.op() {
        Op::Put { key, value, .. } => {
            live.insert(key.to_vec(), value.to_vec());
        }
        Op::Delete { key } => {
            live.remove(key);
        }
        Op::Clear => live.clear(),
    })?;
    Ok((log, live))
}

fn open(dir: &Path) -> (Log, Live) {
    open_with(dir, small()).unwrap()
}

/// Appends `n` writes over 40 keys (puts of varying size, a delete in seven, a clear at 300),
/// applying them to `model` too.
fn churn(log: &mut Log, model: &mut Live, from: u32, n: u32) {
    for i in from..from + n {
        let key = format!("key-{}", i % 40).into_bytes();
        if i == 300 {
            log.append(Op::Clear).unwrap();
            model.clear();
        } else if i % 7 == 0 {
            log.append(Op::Delete { key: &key }).unwrap();
            model.remove(&key);
        } else {
            let value = vec![i as u8; (i % 90) as usize];
            log.append(Op::Put {
                key: &key,
                value: &value,
                expires_at_ms: 0,
            })
            .unwrap();
            model.insert(key, value);
        }
    }
}

#[test]
fn compaction_keeps_the_live_set_while_appends_go_on() {
    let tmp = TempDir::new("compact-live");
    let (mut log, _) = open(&tmp.0);
    let mut model = Live::new();
    churn(&mut log, &mut model, 0, 600);
    let before = log.usage();
    let segments_before = files(&tmp.0, "seg");
    assert!(segments_before > 5, "{segments_before} segments");

    let job = log.begin_compaction().unwrap();
    churn(&mut log, &mut model, 600, 100); // appends during the run
    let done = job.run(0).unwrap();
    let report = done.report();
    assert_eq!(report.records_before, 600);
    assert!(report.records_after <= 40, "{report:?}");
    assert!(report.bytes_after < report.bytes_before / 4, "{report:?}");
    log.install(done).unwrap().remove().unwrap();

    churn(&mut log, &mut model, 700, 50); // and after it
    let after = log.usage();
    assert_eq!(after.records, report.records_after + 150);
    assert!(after.bytes < before.bytes, "{before:?} -> {after:?}");
    assert!(files(&tmp.0, "seg") < segments_before);
    assert_eq!(files(&tmp.0, "snap"), report.files_after);
    let next_seq = log.next_seq();
    drop(log);

    let (mut log, live) = open(&tmp.0);
    assert_eq!(live, model);
    assert_eq!(log.next_seq(), next_seq, "sequence numbers go on");
    assert_eq!(log.usage(), after, "usage is what a reopen counts");

    // A second compaction rewrites the first one's snapshot too.
    compact(&mut log);
    drop(log);
    let (_, live) = open(&tmp.0);
    assert_eq!(live, model);
}

#[test]
fn expired_puts_are_dropped_and_a_clear_leaves_nothing() {
    let tmp = TempDir::new("compact-expired");
    let (mut log, _) = open(&tmp.0);
    for (key, at) in [(&b"gone"[..], 1_000), (b"kept", 5_000), (b"forever", 0)] {
        log.append(Op::Put {
            key,
            value: b"v",
            expires_at_ms: at,
        })
        .unwrap();
    }
    let done = log.begin_compaction().unwrap().run(2_000).unwrap();
    assert_eq!(done.report().records_after, 2);
    log.install(done).unwrap().remove().unwrap();
    drop(log);
    let (mut log, live) = open(&tmp.0);
    let keys: Vec<_> = live.keys().map(|k| k.as_slice()).collect();
    assert_eq!(keys, [&b"forever"[..], b"kept"]);

    log.append(Op::Clear).unwrap();
    let done = log.begin_compaction().unwrap().run(0).unwrap();
    // Nothing live: one part all the same, without records, whose seal names the number
    // the segments above the base begin at.
    assert_eq!(done.report().records_after, 0);
    assert_eq!(done.report().files_after, 1);
    log.install(done).unwrap().remove().unwrap();
    drop(log);
    assert_eq!(files(&tmp.0, "snap"), 1);
    assert!(open(&tmp.0).1.is_empty());
}

/// After a compaction that left nothing live, the segments above its base are numbered on from
/// the compacted ones, and recovery knows from where: an OS crash that loses the first of them
/// whole (its records never reached the disk, its header did) while a later one's pages did
/// is a gap, and the log ends before it, not replaying records whose predecessors are lost.
#[test]
fn a_gap_after_a_compaction_that_left_nothing_is_found() {
    let tmp = TempDir::new("compact-to-nothing-gap");
    let (mut log, _) = open(&tmp.0);
    compact_to_nothing(&mut log);
    // Appends go on, unsynced, over several segments, as between two syncs.
    put_200(&mut log);
    drop(log);
    let segments = segments(&tmp.0);
    assert!(segments.len() >= 3, "{segments:?}");
    // The OS crash: the first segment's records are lost, the later segments' are not.
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[HEADER_LEN..].fill(0);
    std::fs::write(&segments[0], &bytes).unwrap();

    let (log, live) = open(&tmp.0);
    assert!(
        live.is_empty(),
        "records after the gap came back: {} keys",
        live.len()
    );
    assert!(
        log.torn_tail().is_some(),
        "the open says where the log ended"
    );
}

/// Keys that differ only in length (runs of zero bytes) or only in their last byte stay apart
/// through a compaction, each with its own last value.
#[test]
fn keys_that_differ_only_in_length_or_last_byte_stay_apart() {
    let tmp = TempDir::new("compact-key-lengths");
    let (mut log, _) = open(&tmp.0);
    let mut model = Live::new();
    let mut keys = Vec::new();
    for len in 0..48u8 {
        keys.push(vec![0; len as usize]);
        let mut counting: Vec<u8> = (1..=len).collect();
        keys.push(counting.clone());
        if let Some(last) = counting.last_mut() {
            *last = 0;
            keys.push(counting);
        }
    }
    for round in 0..3u8 {
        for (i, key) in keys.iter().enumerate() {
            if (i + round as usize).is_multiple_of(5) {
                log.append(Op::Delete { key }).unwrap();
                model.remove(key);
            } else {
                let value = vec![round; i % 7];
                log.append(Op::Put {
                    key,
                    value: &value,
                    expires_at_ms: 0,
                })
                .unwrap();
                model.insert(key.clone(), value);
            }
        }
    }
    assert_eq!(compact(&mut log).records_after, model.len() as u64);
    drop(log);
    assert_eq!(open(&tmp.0).1, model);
}

#[test]
fn a_compaction_overtaken_by_another_is_refused() {
    let tmp = TempDir::new("compact-stale");
    let (mut log, _) = open(&tmp.0);
    let mut model = Live::new();
    churn(&mut log, &mut model, 0, 200);
    let first = log.begin_compaction().unwrap();
    churn(&mut log, &mut model, 200, 50);
    let second = log.begin_compaction().unwrap();
    let (first, second) = (first.run(0).unwrap(), second.run(0).unwrap());
    let first_parts = first.report().files_after;
    log.install(second).unwrap().remove().unwrap();
    assert!(matches!(log.install(first), Err(Error::StaleCompaction)));
    assert!(first_parts > 0);
    assert_eq!(files(&tmp.0, "snap"), 1, "the refused output was removed");
    log.append(Op::Clear).unwrap(); // the log is not failed
    drop(log);
    assert!(open(&tmp.0).1.is_empty());
}

/// A compaction's output installed into another log (two logs in one process, their
/// `Compacted`s mixed up) is refused, and neither log loses anything: it used to be installed,
/// its manifest moved into the other log's directory and that log's files removed as its
/// inputs (the active segment included), so that its records were gone and it no longer
/// opened ("names a snapshot part that is missing").
#[test]
fn a_compaction_installed_into_another_log_is_refused_and_changes_neither() {
    let (a, b) = (
        TempDir::new("compact-foreign-a"),
        TempDir::new("compact-foreign-b"),
    );
    let (mut log_a, _) = open(&a.0);
    let (mut log_b, _) = open(&b.0);
    let (mut model_a, mut model_b) = (Live::new(), Live::new());
    churn(&mut log_a, &mut model_a, 0, 100);
    churn(&mut log_b, &mut model_b, 1000, 100);
    log_a.sync().unwrap();
    log_b.sync().unwrap();
    let done = log_a.begin_compaction().unwrap().run(0).unwrap();
    match log_b.install(done) {
        Err(Error::StaleCompaction) => {}
        Err(e) => panic!("refused with another error: {e}"),
        Ok(retired) => {
            let _ = retired.remove();
            drop(log_b);
            let reopened = open_with(&b.0, small()).map(|(_, live)| live.len());
            panic!("log b took log a's compaction; reopened: {reopened:?}");
        }
    }
    log_b.append(Op::Clear).unwrap(); // the log is not failed
    model_b.clear();
    drop((log_a, log_b));
    assert_eq!(open(&a.0).1, model_a);
    assert_eq!(open(&b.0).1, model_b);
}

/// Every system call of a compaction, in order, made to fail as if the process died there:
/// that call and every later hooked one fail (so nothing is cleaned up), then the log is
/// dropped and reopened. The live set must be the one from before, whichever step it was.
#[test]
fn a_crash_at_every_step_of_a_compaction_recovers_the_same_live_set() {
    let mut step = 0;
    let mut finished = false;
    let mut steps_seen = Vec::new();
    while !finished {
        let tmp = TempDir::new(&format!("compact-crash-{step}"));
        let calls = Arc::new(AtomicUsize::new(0));
        // `usize::MAX` while setting up: nothing fails until the compaction starts.
        let die_at = Arc::new(AtomicUsize::new(usize::MAX));
        let last_call = Arc::new(std::sync::Mutex::new(None));
        let options = {
            let (calls, die_at, last_call) = (calls.clone(), die_at.clone(), last_call.clone());
            small().with_io_hook(move |call: IoCall| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n >= die_at.load(Ordering::SeqCst) {
                    last_call.lock().unwrap().get_or_insert(call);
                    return Err(std::io::ErrorKind::Other.into());
                }
                Ok(())
            })
        };
        let mut model = Live::new();
        {
            let (mut log, _) = open_with(&tmp.0, options).unwrap();
            churn(&mut log, &mut model, 0, 400);
            log.sync().unwrap();
            die_at.store(calls.load(Ordering::SeqCst) + step, Ordering::SeqCst);
            let result = (|| {
                let done = log.begin_compaction()?.run(0)?;
                log.install(done)?.remove()?;
                Ok::<(), Box<dyn std::error::Error>>(())
            })();
            match result {
                Ok(()) => finished = true,
                Err(_) => steps_seen.push(last_call.lock().unwrap().expect("a call failed")),
            }
        }
        let (_, live) = open(&tmp.0);
        assert_eq!(live, model, "a crash at step {step}");
        step += 1;
    }
    // The crashes covered every kind of step: the roll, writing and sealing the parts, the
    // switch, the removal.
    for call in [
        IoCall::Seal,
        IoCall::Truncate,
        IoCall::Reserve,
        IoCall::Flush,
        IoCall::SyncFile,
        IoCall::SyncDir,
        IoCall::Rename,
        IoCall::Remove,
    ] {
        assert!(
            steps_seen.contains(&call),
            "{call:?} never failed: {steps_seen:?}"
        );
    }
    assert!(step > 20, "only {step} steps");
}

#[test]
fn skip_corrupt_salvages_the_other_files_and_says_what_it_skipped() {
    let tmp = TempDir::new("skip-corrupt");
    let (mut log, _) = open(&tmp.0);
    put_200(&mut log);
    // Synced, so every segment but the last is sealed: damage in one is corruption, not an
    // OS crash's unsynced tail (`unsealed_damage_ends_the_log` has that case).
    log.sync().unwrap();
    drop(log);
    damage_segment(&tmp.0, 2, 1000);
    // Strict: refused, and nothing on disk changes.
    assert!(matches!(
        open_with(&tmp.0, small()),
        Err(Error::Corruption { segment: 2, .. })
    ));
    let skip = || small().with_recovery(RecoveryMode::SkipCorrupt);
    let (log, live) = open_with(&tmp.0, skip()).unwrap();
    let [Damage {
        kind: Kind::Log,
        segment: 2,
        offset,
        bytes_skipped,
        ..
    }] = log.damage()
    else {
        panic!("{:?}", log.damage());
    };
    let records_per_segment = (4096 - 24) / 96;
    // The skip starts at the damaged record: it and the rest of its segment are lost.
    assert_eq!(bytes_skipped % 96, 0, "records are 96 bytes");
    let lost = (bytes_skipped / 96) as usize;
    assert!(*offset <= 1000 && *offset > 900, "offset {offset}");
    assert_eq!(
        live.len(),
        200 - lost,
        "only the damaged segment's tail is lost"
    );
    // Segment 1 is whole, and so is everything after segment 2.
    assert!(live.contains_key(&0u32.to_le_bytes()[..]));
    assert!(live.contains_key(&199u32.to_le_bytes()[..]));
    assert!(lost < records_per_segment);
    drop(log);

    // A compaction in SkipCorrupt mode skips the damage too, and leaves a clean log behind.
    let (mut log, _) = open_with(&tmp.0, skip()).unwrap();
    compact(&mut log);
    drop(log);
    let (log, again) = open_with(&tmp.0, small()).unwrap();
    assert_eq!(again, live);
    assert!(log.damage().is_empty());
}

/// The one snapshot part in `dir`.
fn only_part(dir: &Path) -> std::path::PathBuf {
    let parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    parts.into_iter().next().unwrap()
}

#[test]
fn damage_in_a_snapshot_part_is_an_error_unless_skipped() {
    let tmp = TempDir::new("damaged-part");
    let (mut log, _) = open_with(&tmp.0, Options::default()).unwrap();
    put_200(&mut log);
    compact(&mut log);
    drop(log);
    let part = only_part(&tmp.0);
    let id: u64 = part.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    damage_file(&part, 1000);
    let Err(Error::Corruption {
        segment, offset, ..
    }) = open_with(&tmp.0, Options::default())
    else {
        panic!("a damaged part opens in Strict mode");
    };
    assert_eq!(segment, id);
    assert!(offset > 900 && offset <= 1000, "offset {offset}");
    let skip = Options::default().with_recovery(RecoveryMode::SkipCorrupt);
    let (log, live) = open_with(&tmp.0, skip).unwrap();
    assert!(
        matches!(log.damage(), [Damage { kind: Kind::Snapshot, segment, .. }] if *segment == id),
        "{:?}",
        log.damage()
    );
    // The part holds the 200 puts in order, 96 bytes each after a 24-byte header: byte 1000 is
    // in the eleventh. The ten before it are kept; it and the rest of the part are not.
    assert_eq!(live.len(), 10);
    assert!((0..10u32).all(|k| live.contains_key(&k.to_le_bytes()[..])));
}

/// 200 puts in `dir`, compacted by a compaction that stops after its switch, before it removes
/// the segment its snapshot replaced; then byte 1000 of the snapshot's one part is damaged
/// (in its eleventh record). Returns how many segment files there are.
fn crash_before_the_cleanup_then_damage_the_part(dir: &Path) -> usize {
    let (mut log, _) = open_with(dir, Options::default()).unwrap();
    put_200(&mut log);
    let done = log.begin_compaction().unwrap().run(0).unwrap();
    drop(log.install(done).unwrap()); // the replaced segment is left behind
    drop(log);
    damage_file(&only_part(dir), 1000);
    files(dir, "seg")
}

#[test]
fn a_strict_open_that_finds_a_damaged_part_keeps_the_segments_it_replaced() {
    // A crash after a compaction's switch, before it removed the segments its snapshot
    // replaced: they are the one copy of their records if a part of that snapshot is damaged,
    // and an open that refuses the damage must not remove them first.
    let tmp = TempDir::new("damaged-part-keeps");
    let before = crash_before_the_cleanup_then_damage_the_part(&tmp.0);
    let strict = open_with(&tmp.0, Options::default());
    assert!(matches!(strict, Err(Error::Corruption { .. })));
    assert_eq!(files(&tmp.0, "seg"), before, "nothing removed");
    // With the damage undone, the open goes on as after any such crash: the live set is
    // whole, and only then is the replaced segment removed.
    damage_file(&only_part(&tmp.0), 1000);
    let (_, live) = open_with(&tmp.0, Options::default()).unwrap();
    assert_eq!(live.len(), 200);
    assert_eq!(files(&tmp.0, "seg"), before - 1);
}

#[test]
fn an_open_that_skips_a_damaged_part_keeps_the_segments_it_replaced() {
    // The same crash, then an open that skips the damage: it goes on without the damaged
    // part's rest, and must still keep the segments that hold it (helper-39's review: it
    // removed them, and `larder log repair --skip-corrupt` kept 1 key of 50).
    let tmp = TempDir::new("damaged-part-skipped-keeps");
    let before = crash_before_the_cleanup_then_damage_the_part(&tmp.0);
    let skip = Options::default().with_recovery(RecoveryMode::SkipCorrupt);
    let (log, live) = open_with(&tmp.0, skip).unwrap();
    assert_eq!(log.damage().len(), 1);
    assert_eq!(live.len(), 10, "the part's records before the damage");
    drop(log);
    assert_eq!(files(&tmp.0, "seg"), before, "the replaced segment is kept");
}

#[test]
fn a_compaction_that_reads_damage_fails_and_leaves_the_log_as_it_was() {
    let tmp = TempDir::new("damaged-input");
    let (mut log, _) = open(&tmp.0);
    put_200(&mut log);
    log.sync().unwrap(); // every segment but the last sealed
    damage_segment(&tmp.0, 2, 1000);
    let segments = files(&tmp.0, "seg");
    let job = log.begin_compaction().unwrap();
    let usage = log.usage();
    assert!(matches!(
        job.run(0),
        Err(Error::Corruption { segment: 2, .. })
    ));
    assert_eq!(files(&tmp.0, "snap"), 0, "what the run wrote is removed");
    assert_eq!(
        files(&tmp.0, "seg"),
        segments + 1,
        "the inputs stay (and the roll's segment)"
    );
    assert_eq!(log.usage(), usage);
    log.append(Op::Clear).unwrap(); // the log is not failed
}

#[test]
fn a_damaged_manifest_is_an_error() {
    let tmp = TempDir::new("bad-manifest");
    let (mut log, _) = open(&tmp.0);
    log.append(Op::Clear).unwrap();
    compact(&mut log);
    drop(log);
    let path = tmp.0.join("MANIFEST");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        open_with(&tmp.0, small()),
        Err(Error::BadManifest { .. })
    ));
}

#[test]
fn damage_a_skip_corrupt_compaction_finds_after_the_open_is_reported() {
    // A sealed segment damaged after the open (a failing disk), so the open could not report
    // it: the compaction skips the rest of that file, and the segment that held the records
    // is removed once the compaction is installed. The skip must be reported then, as the
    // open reports the damage it skips, or nothing ever says those records were lost.
    let tmp = TempDir::new("compact-skip-report");
    let skip = || small().with_recovery(RecoveryMode::SkipCorrupt);
    let (mut log, _) = open_with(&tmp.0, skip()).unwrap();
    put_200(&mut log);
    log.sync().unwrap(); // every segment but the last sealed
    assert!(log.damage().is_empty());
    damage_segment(&tmp.0, 2, 1000);
    compact(&mut log);
    let [Damage {
        kind: Kind::Log,
        segment: 2,
        offset,
        bytes_skipped,
        ..
    }] = log.damage()
    else {
        panic!("the compaction's skip is not reported: {:?}", log.damage());
    };
    assert!(*offset <= 1000 && *offset > 900, "offset {offset}");
    assert!(
        *bytes_skipped > 0 && bytes_skipped % 96 == 0,
        "{bytes_skipped}"
    );
    // The compaction left a clean log: a strict open finds nothing, and nothing to report.
    drop(log);
    let (log, _) = open_with(&tmp.0, small()).unwrap();
    assert!(log.damage().is_empty());
    drop(log);

    // Damage the open reported already is reported once, not again by the compaction.
    let tmp = TempDir::new("compact-skip-report-once");
    let (mut log, _) = open(&tmp.0);
    put_200(&mut log);
    log.sync().unwrap();
    drop(log);
    damage_segment(&tmp.0, 2, 1000);
    let (mut log, _) = open_with(&tmp.0, skip()).unwrap();
    let at_open = log.damage().to_vec();
    assert_eq!(at_open.len(), 1);
    compact(&mut log);
    assert_eq!(log.damage(), &at_open[..]);
}

#[test]
fn damage_skipped_by_a_switch_whose_directory_sync_failed_is_reported() {
    // The rename happened, and the directory sync after it failed: which manifest a reboot
    // finds is unknown, and if it is the new one, the next open removes the files the
    // compaction replaced, the skipped records with them. So the skip is reported then too.
    let tmp = TempDir::new("compact-skip-report-failed-switch");
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = failing_when_armed(
        small().with_recovery(RecoveryMode::SkipCorrupt),
        IoCall::SyncDir,
        || std::io::ErrorKind::Other.into(),
        &armed,
    );
    let (mut log, _) = open_with(&tmp.0, options).unwrap();
    put_200(&mut log);
    log.sync().unwrap();
    damage_segment(&tmp.0, 2, 1000);
    let done = log.begin_compaction().unwrap().run(0).unwrap();
    armed.store(true, Ordering::SeqCst);
    assert!(matches!(log.install(done), Err(Error::Io(_))));
    assert!(log.check().is_err(), "the log is failed");
    let [Damage {
        kind: Kind::Log,
        segment: 2,
        ..
    }] = log.damage()
    else {
        panic!("the compaction's skip is not reported: {:?}", log.damage());
    };
}

/// The manifest a compaction's run prepared in `dir` (`MANIFEST.{base}.tmp`).
fn prepared_manifest(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tmp"))
        .expect("a prepared manifest")
}

/// The other side of the test above: a switch that did not happen (the rename refused, or
/// the prepared manifest removed from outside before it) installs none of the rewrite's damage
/// report. The damaged segment is still the log's, and the next compaction or open finds the
/// damage again. With the prepared manifest removed, the install took the switch for done and
/// reported the skip.
#[test]
fn damage_skipped_by_a_switch_that_did_not_happen_is_not_reported() {
    for removed in [false, true] {
        let tmp = TempDir::new("compact-skip-no-switch");
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let options = failing_when_armed(
            small().with_recovery(RecoveryMode::SkipCorrupt),
            IoCall::Rename,
            || std::io::Error::from_raw_os_error(libc::EIO),
            &armed,
        );
        let (mut log, _) = open_with(&tmp.0, options).unwrap();
        put_200(&mut log);
        log.sync().unwrap();
        damage_segment(&tmp.0, 2, 1000);
        let done = log.begin_compaction().unwrap().run(0).unwrap();
        assert_eq!(done.damage().len(), 1, "the rewrite skipped the damage");
        if removed {
            std::fs::remove_file(prepared_manifest(&tmp.0)).unwrap();
        } else {
            armed.store(true, Ordering::SeqCst);
        }
        assert!(matches!(log.install(done), Err(Error::Io(_))));
        assert!(
            log.damage().is_empty(),
            "removed {removed}: a switch that did not happen reported {:?}",
            log.damage()
        );
    }
}

/// A rename that reports a failure once the new manifest is in force put it in force while
/// the install, taking the error as the rename's not having happened, removed the snapshot
/// parts it names: the next open failed ("names a snapshot part that is missing"). Two ways:
/// the rename done and then reported failed (a network file system can: a reply lost, the
/// call retried after the first one went through), and the manifest copied into place with
/// the prepared one left under its name too (a file system that renames by copying, then
/// removing the source, failing at the removal: FUSE mounts of object stores). Either way the
/// error counts as after the rename: the parts stay, the log is failed, and a reopen gives the
/// live set.
#[test]
fn a_rename_reported_failed_once_the_new_manifest_is_in_force_keeps_its_parts() {
    for copied in [false, true] {
        let tmp = TempDir::new("compact-rename-done-then-failed");
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let options = {
            let (armed, dir) = (Arc::clone(&armed), tmp.0.clone());
            small().with_io_hook(move |call| match call {
                IoCall::Rename if armed.load(Ordering::SeqCst) => {
                    // The switch the log asked for, done one way or the other, then reported
                    // failed.
                    let prepared = prepared_manifest(&dir);
                    if copied {
                        std::fs::copy(prepared, dir.join("MANIFEST")).unwrap();
                    } else {
                        std::fs::rename(prepared, dir.join("MANIFEST")).unwrap();
                    }
                    Err(std::io::Error::from_raw_os_error(libc::EIO))
                }
                _ => Ok(()),
            })
        };
        let (mut log, _) = open_with(&tmp.0, options).unwrap();
        let mut model = Live::new();
        churn(&mut log, &mut model, 0, 400);
        log.sync().unwrap();
        let done = log.begin_compaction().unwrap().run(0).unwrap();
        armed.store(true, Ordering::SeqCst);
        assert!(matches!(log.install(done), Err(Error::Io(_))));
        let failed = log.check().is_err();
        drop(log);
        let reopened = open_with(&tmp.0, small()).map(|(_, live)| live);
        assert_eq!(
            reopened.as_ref().ok(),
            Some(&model),
            "copied {copied}: {reopened:?}"
        );
        assert!(
            failed,
            "copied {copied}: the log went on as if nothing had moved"
        );
    }
}

/// A prepared manifest removed from outside the process (a clean-up script, say) between its
/// write and the rename: the rename fails with `NotFound`, and `MANIFEST` still reads as the
/// manifest in force (or is still absent, before the first compaction). Nothing was switched,
/// so the compaction fails, its parts go, and the log goes on over its old files. Taking the
/// missing prepared manifest for one the rename had moved, the install failed the log, which
/// then refused every write.
#[test]
fn a_prepared_manifest_removed_before_the_rename_fails_the_compaction_not_the_log() {
    for compacted_before in [false, true] {
        let tmp = TempDir::new("compact-prepared-removed");
        let (mut log, _) = open(&tmp.0);
        let mut model = Live::new();
        churn(&mut log, &mut model, 0, 400);
        if compacted_before {
            compact(&mut log);
        }
        let parts = files(&tmp.0, "snap");
        let done = log.begin_compaction().unwrap().run(0).unwrap();
        std::fs::remove_file(prepared_manifest(&tmp.0)).unwrap();
        let usage = log.usage();
        match log.install(done) {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => panic!("compacted before {compacted_before}: {other:?}"),
        }
        if let Err(e) = log.check() {
            panic!("compacted before {compacted_before}: the log was failed: {e}");
        }
        assert_eq!(log.usage(), usage, "compacted before {compacted_before}");
        assert_eq!(
            files(&tmp.0, "snap"),
            parts,
            "the rewrite's parts are removed"
        );
        churn(&mut log, &mut model, 400, 50);
        compact(&mut log);
        drop(log);
        assert_eq!(open(&tmp.0).1, model, "compacted before {compacted_before}");
    }
}

/// A put whose deadline is the compaction's very `now_ms` has expired ("at or before",
/// `Compactor::run`), as it has for recovery, which keeps only deadlines after the clock: the
/// rewrite drops it. One a millisecond later stays.
#[test]
fn a_put_whose_deadline_is_the_compactions_now_is_dropped() {
    let tmp = TempDir::new("compact-expires-now");
    let (mut log, _) = open(&tmp.0);
    for (key, at) in [(&b"now"[..], 2_000), (b"later", 2_001)] {
        log.append(Op::Put {
            key,
            value: b"v",
            expires_at_ms: at,
        })
        .unwrap();
    }
    let done = log.begin_compaction().unwrap().run(2_000).unwrap();
    assert_eq!(
        done.report().records_after,
        1,
        "the put expiring now was kept"
    );
    log.install(done).unwrap().remove().unwrap();
    drop(log);
    let (_, live) = open(&tmp.0);
    let keys: Vec<_> = live.keys().map(|k| k.as_slice()).collect();
    assert_eq!(keys, [&b"later"[..]]);
}

/// The switch's steps in the order that makes each durable before the next depends on it
/// (`docs/DURABILITY.md`, steps 7.3 to 7.6): the directory synced once the parts are made (so
/// their names are durable), the prepared manifest `fsync`ed, then renamed over the old one,
/// then the directory synced (so the rename is), and only then the inputs removed, followed by
/// a last directory sync. A crash test cannot see a missing sync (a killed process loses
/// nothing the kernel holds); the order of the calls can.
#[test]
fn a_compaction_makes_each_step_durable_before_the_next() {
    let tmp = TempDir::new("compact-step-order");
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = {
        let (calls, recording) = (Arc::clone(&calls), Arc::clone(&recording));
        small().with_io_hook(move |call: IoCall| {
            if recording.load(Ordering::SeqCst) {
                calls.lock().unwrap().push(call);
            }
            Ok(())
        })
    };
    let (mut log, _) = open_with(&tmp.0, options).unwrap();
    let mut model = Live::new();
    churn(&mut log, &mut model, 0, 400);
    log.sync().unwrap();
    recording.store(true, Ordering::SeqCst);
    compact(&mut log);
    recording.store(false, Ordering::SeqCst);
    let calls = calls.lock().unwrap().clone();
    let rename = calls
        .iter()
        .position(|&c| c == IoCall::Rename)
        .expect("a rename");
    assert_eq!(
        calls.iter().filter(|&&c| c == IoCall::Rename).count(),
        1,
        "{calls:?}"
    );
    assert!(rename >= 2, "{calls:?}");
    assert_eq!(
        calls[rename - 2..=rename + 1],
        [
            IoCall::SyncDir,  // the new parts' names
            IoCall::SyncFile, // the prepared manifest
            IoCall::Rename,   // the switch
            IoCall::SyncDir,  // the switch made durable
        ],
        "{calls:?}"
    );
    let first_removal = calls
        .iter()
        .position(|&c| c == IoCall::Remove)
        .expect("the inputs removed");
    assert!(first_removal > rename + 1, "{calls:?}");
    assert_eq!(calls.last(), Some(&IoCall::SyncDir), "{calls:?}");
    drop(log);
    assert_eq!(open(&tmp.0).1, model);
}

/// A compaction whose inputs hold no record at all (a log compacted to nothing, then compacted
/// again before any append) learns from their seals which number comes next, and seals its
/// part with it: the records appended after it follow on, and come back. Sealed with the
/// number its (absent) records give, the part would say the next segment begins at 0, and
/// the open would take the records above the base for a segment that does not follow.
#[test]
fn a_compaction_of_inputs_without_records_keeps_their_numbering() {
    let tmp = TempDir::new("compact-empty-inputs");
    let (mut log, _) = open(&tmp.0);
    compact_to_nothing(&mut log);
    assert_eq!(compact(&mut log).records_before, 0);
    let mut model = Live::new();
    churn(&mut log, &mut model, 1, 20);
    log.sync().unwrap();
    drop(log);
    let (_, live) = open_with(&tmp.0, small()).expect("the log reopens");
    assert_eq!(live, model);
}

/// A prepared manifest left by a switch that never happened goes once the log has checked
/// out, never before: a strict open that finds damage changes nothing (it removed the prepared
/// manifest first, before it read a segment), and an open that skips the damage removes it.
#[test]
fn a_strict_open_that_finds_damage_leaves_a_prepared_manifest_in_place() {
    let tmp = TempDir::new("prepared-manifest-strict");
    let (mut log, _) = open(&tmp.0);
    put_200(&mut log);
    log.sync().unwrap();
    drop(log);
    let prepared = tmp.0.join("MANIFEST.7.tmp");
    std::fs::write(&prepared, b"a switch that never happened").unwrap();
    damage_segment(&tmp.0, 2, 1000);
    let strict = open_with(&tmp.0, small());
    assert!(
        matches!(strict, Err(Error::Corruption { .. })),
        "{:?}",
        strict.map(|(_, live)| live.len())
    );
    assert!(
        prepared.exists(),
        "the refused open removed the prepared manifest"
    );
    let skipping = open_with(&tmp.0, small().with_recovery(RecoveryMode::SkipCorrupt));
    assert!(skipping.is_ok());
    assert!(!prepared.exists(), "the open that checked out left it");
}
