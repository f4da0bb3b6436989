//! Fault injection through the log's I/O hook: a full disk (ENOSPC from a reservation) and a
//! failing disk (EIO from a flush) reach the caller as errors, the log refuses every later
//! write and sync (a flush that waited for the failing one included), and what was appended
//! before the fault is still there on reopen.

mod common;

use common::{failing_when_armed, TempDir};
use larder_log::format::Op;
use larder_log::{Error, IoCall, Log, Options};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Options whose hook fails `call` with `kind` once `armed` is set.
fn failing(call: IoCall, kind: ErrorKind, armed: &Arc<AtomicBool>) -> Options {
    let small = Options::default().with_segment_size(4096);
    failing_when_armed(small, call, move || kind.into(), armed)
}

/// A log in `dir` (4 KiB segments) whose `call`s fail with `kind` once the flag it comes with
/// is set.
fn open_failing(dir: &Path, call: IoCall, kind: ErrorKind) -> (Log, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let log = Log::open(dir, failing(call, kind, &armed), |_| {}).unwrap();
    (log, armed)
}

fn put(log: &mut Log, i: u32) -> Result<u64, Error> {
    log.append(Op::Put {
        key: &i.to_le_bytes(),
        value: &[7u8; 100],
        expires_at_ms: 0,
    })
}

fn reopen(dir: &Path) -> Vec<u64> {
    let mut seqs = Vec::new();
    Log::open(dir, Options::default().with_segment_size(4096), |r| {
        seqs.push(r.seq())
    })
    .unwrap();
    seqs
}

fn assert_failed<T: std::fmt::Debug>(result: Result<T, Error>, want: ErrorKind) {
    match result {
        Err(Error::Failed { kind }) => assert_eq!(kind, want),
        other => panic!("expected Failed({want:?}), got {other:?}"),
    }
}

#[test]
fn a_full_disk_is_an_error_and_the_log_refuses_more() {
    let tmp = TempDir::new("faults-enospc");
    let (mut log, armed) = open_failing(&tmp.0, IoCall::Reserve, ErrorKind::StorageFull);
    for i in 0..10 {
        put(&mut log, i).unwrap();
    }
    armed.store(true, Ordering::SeqCst);
    // Appends go on into the space already reserved, then the next reservation (the roll to
    // a second segment) fails.
    let mut appended = 10;
    let err = loop {
        match put(&mut log, appended) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    match err {
        Error::Io(e) => assert_eq!(e.kind(), ErrorKind::StorageFull),
        other => panic!("{other:?}"),
    }
    assert_failed(put(&mut log, 999), ErrorKind::StorageFull);
    assert_failed(log.sync(), ErrorKind::StorageFull);
    armed.store(false, Ordering::SeqCst);
    assert_failed(put(&mut log, 1000), ErrorKind::StorageFull); // no silent recovery
    drop(log);
    assert_eq!(reopen(&tmp.0), (0..u64::from(appended)).collect::<Vec<_>>());
}

#[test]
fn a_failed_flush_is_never_retried() {
    let tmp = TempDir::new("faults-eio");
    let (mut log, armed) = open_failing(&tmp.0, IoCall::Flush, ErrorKind::Other);
    put(&mut log, 0).unwrap();
    log.sync().unwrap();
    put(&mut log, 1).unwrap();
    armed.store(true, Ordering::SeqCst);
    match log.sync() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::Other),
        other => panic!("{other:?}"),
    }
    armed.store(false, Ordering::SeqCst);
    // The disk works again, but the pages the failed flush covered may be lost: the log says
    // so to every later caller instead of retrying and claiming success.
    assert_failed(log.sync(), ErrorKind::Other);
    assert_failed(put(&mut log, 2), ErrorKind::Other);
    assert_failed(log.sync_point().map(drop), ErrorKind::Other);
}

#[test]
fn a_flush_that_waited_for_a_failing_one_does_not_retry_it() {
    // Thread `flusher` flushes a sync point and its first flush call fails, slowly; meanwhile
    // a compaction begins and must seal the same segments. Once the first has failed, the
    // second may not write a seal (which would claim records the failed flush may have
    // dropped): it waits for the first and fails with it.
    let tmp = TempDir::new("faults-racing-flush");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (in_hook, entered) = mpsc::channel();
    let (go, released) = mpsc::channel::<()>();
    let (in_hook, released) = (Mutex::new(in_hook), Mutex::new(released));
    let seen = Arc::clone(&calls);
    let options = Options::default()
        .with_segment_size(4096)
        .with_io_hook(move |call| {
            if std::thread::current().name() == Some("flusher") && call == IoCall::Flush {
                in_hook.lock().unwrap().send(()).unwrap();
                released.lock().unwrap().recv().unwrap();
                seen.lock().unwrap().push("failed");
                return Err(ErrorKind::Other.into());
            }
            seen.lock().unwrap().push(if call == IoCall::Seal {
                "seal"
            } else {
                "other"
            });
            Ok(())
        });
    let mut log = Log::open(&tmp.0, options, |_| {}).unwrap();
    common::put_200(&mut log); // rolls: segments wait for the next flush to seal them
    let point = log.sync_point().unwrap();
    let flusher = std::thread::Builder::new()
        .name("flusher".into())
        .spawn(move || point.flush())
        .unwrap();
    entered.recv().unwrap();
    // Lets the flush fail once `begin_compaction` below has had time to wait for it.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        go.send(()).unwrap();
    });
    let begun = log.begin_compaction().map(drop);
    release.join().unwrap();
    match flusher.join().unwrap() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::Other),
        other => panic!("{other:?}"),
    }
    assert_failed(begun, ErrorKind::Other);
    let calls = calls.lock().unwrap();
    let after = calls
        .iter()
        .skip_while(|&&c| c != "failed")
        .collect::<Vec<_>>();
    assert_eq!(
        after,
        [&"failed"],
        "nothing after the failure, no seal: {calls:?}"
    );
    drop(calls);
    assert_failed(log.sync(), ErrorKind::Other);
}

#[test]
fn every_injectable_call_fails_cleanly_on_open_append_roll_and_sync() {
    // Each call kind, failed from the start or after a few operations, gives an error and
    // never a panic. The process did not crash, so every record appended without an error is
    // in the page cache: a reopen without faults finds all of them, in order, and nothing else.
    for call in [
        IoCall::Reserve,
        IoCall::Flush,
        IoCall::SyncFile,
        IoCall::SyncDir,
        IoCall::Truncate,
        IoCall::Seal,
    ] {
        for after in [0u32, 3, 40] {
            let tmp = TempDir::new(&format!("faults-{call:?}-{after}"));
            let armed = Arc::new(AtomicBool::new(after == 0));
            let opened = Log::open(&tmp.0, failing(call, ErrorKind::Other, &armed), |_| {});
            let Ok(mut log) = opened else {
                assert_eq!(after, 0);
                continue;
            };
            let mut acked = 0u64;
            for i in 0..80u32 {
                if i == after {
                    armed.store(true, Ordering::SeqCst);
                }
                if put(&mut log, i).is_err() || (i % 10 == 9 && log.sync().is_err()) {
                    break;
                }
                acked = u64::from(i) + 1;
            }
            drop(log);
            let seqs = reopen(&tmp.0);
            assert!(
                seqs.len() as u64 >= acked && seqs.iter().copied().eq(0..seqs.len() as u64),
                "{call:?} after {after}: {seqs:?} (acked {acked})"
            );
        }
    }
}

#[test]
fn a_reservation_s_sync_never_runs_beside_a_flush() {
    // With `Reserve::Zeroed`, an append's reservation ends with an `fdatasync` of the active
    // segment: a sync of the very file a flush is writing. On Linux a failed writeback is
    // reported once per open file, to whichever sync asks first, and the pages that failed
    // may be marked clean; a flush running beside a reservation whose sync failed could then
    // succeed without its records on disk, and acknowledge them. So a reservation's sync runs
    // one at a time with flushes, and fails the log before the next flush may start.
    //
    // Thread `flusher` flushes a sync point, held at its flush call until released; this
    // thread then appends until a reservation, whose sync fails. The flush must not return
    // `Ok` once that failure came first.
    let tmp = TempDir::new("faults-reserve-beside-flush");
    let events = Arc::new(Mutex::new(Vec::new()));
    let (in_hook, entered) = mpsc::channel();
    let (go, released) = mpsc::channel::<()>();
    let (in_hook, released) = (Mutex::new(Some(in_hook)), Mutex::new(released));
    let armed = Arc::new(AtomicBool::new(false));
    let (seen, failing) = (Arc::clone(&events), Arc::clone(&armed));
    let options = Options::default()
        .with_segment_size(4 << 20)
        .with_reserve(larder_log::Reserve::Zeroed)
        .with_io_hook(move |call| {
            let flusher = std::thread::current().name() == Some("flusher");
            if flusher && call == IoCall::Flush {
                if let Some(in_hook) = in_hook.lock().unwrap().take() {
                    in_hook.send(()).unwrap();
                    released.lock().unwrap().recv().unwrap();
                    seen.lock().unwrap().push("flush released");
                }
            }
            if call == IoCall::Reserve && failing.load(Ordering::SeqCst) {
                seen.lock().unwrap().push("reservation failed");
                return Err(ErrorKind::Other.into());
            }
            Ok(())
        });
    let mut log = Log::open(&tmp.0, options, |_| {}).unwrap();
    put(&mut log, 0).unwrap();
    let point = log.sync_point().unwrap();
    let flusher = std::thread::Builder::new()
        .name("flusher".into())
        .spawn(move || point.flush())
        .unwrap();
    entered.recv().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        go.send(()).unwrap();
    });
    armed.store(true, Ordering::SeqCst);
    // The first reservation covered the first megabyte; the next comes within 256 KiB of it.
    let mut i = 1;
    let appended = loop {
        match put(&mut log, i) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(appended, Error::Io(_)), "{appended:?}");
    release.join().unwrap();
    let flushed = flusher.join().unwrap();
    let events = events.lock().unwrap().clone();
    assert!(
        !(events.first() == Some(&"reservation failed") && flushed.is_ok()),
        "a flush succeeded after a reservation's sync beside it failed: {events:?}, {flushed:?}"
    );
    assert_failed(log.sync(), ErrorKind::Other);
}

/// A seal proves the records before it durable, so it is written only once their `fdatasync`
/// has succeeded (step 4.2 of `docs/DURABILITY.md`): when that sync fails, the seal is never
/// written, and the rolled segment is left as a roll never sealed. Written first, a seal would
/// vouch for records the failed sync may have dropped.
#[test]
fn a_seal_is_not_written_when_its_records_fail_to_sync() {
    let tmp = TempDir::new("faults-seal-after-sync");
    let armed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let options = {
        let (armed, calls) = (Arc::clone(&armed), Arc::clone(&calls));
        Options::default()
            .with_segment_size(4096)
            .with_io_hook(move |c| {
                if !armed.load(Ordering::SeqCst) {
                    return Ok(());
                }
                calls.lock().unwrap().push(c);
                if c == IoCall::Flush {
                    Err(ErrorKind::Other.into())
                } else {
                    Ok(())
                }
            })
    };
    let mut log = Log::open(&tmp.0, options, |_| {}).unwrap();
    // About 30 of these fill a 4 KiB segment: the log rolls, and the sync below must seal
    // the first segment before it flushes the active one.
    let mut appended = 0;
    while common::segments(&tmp.0).len() < 2 {
        put(&mut log, appended).unwrap();
        appended += 1;
    }
    armed.store(true, Ordering::SeqCst);
    assert!(matches!(log.sync(), Err(Error::Io(_))));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls.first(),
        Some(&IoCall::Flush),
        "the rolled segment's records are synced first"
    );
    assert!(
        !calls.contains(&IoCall::Seal),
        "a seal was written over records whose sync failed: {calls:?}"
    );
    drop(log);
    let first = &common::segments(&tmp.0)[0];
    let bytes = std::fs::read(first).unwrap();
    assert!(
        larder_log::format::seal_at_end(1, &bytes).is_none(),
        "the rolled segment ends with a seal"
    );
    assert_eq!(reopen(&tmp.0), (0..u64::from(appended)).collect::<Vec<_>>());
}

/// The length of the directory's `LOCK` file: one byte once a log there failed.
fn lock_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("LOCK")).unwrap().len()
}

/// Opens the log in `dir` with a hook that records every call and refuses those in `fail`;
/// returns the log (or the open's error) and the calls the open made.
fn open_recording(dir: &Path, fail: &[IoCall]) -> (Result<Log, Error>, Vec<IoCall>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let fail = fail.to_vec();
    let options = Options::default()
        .with_segment_size(4096)
        .with_io_hook(move |c| {
            seen.lock().unwrap().push(c);
            if fail.contains(&c) {
                Err(ErrorKind::Other.into())
            } else {
                Ok(())
            }
        });
    let log = Log::open(dir, options, |_| {});
    let calls = calls.lock().unwrap().clone();
    (log, calls)
}

/// A failed log leaves a mark (`LOCK` one byte long), and the next open, finding it, drops
/// every file of the log from the page cache before it reads them, so that it reads what the
/// disk holds and not pages whose writeback failed (the module doc of `log.rs`, "Failure").
/// An open that cannot drop them fails and leaves the mark; one that can clears it, and the
/// open after that reads as any other.
#[test]
fn a_failed_log_makes_the_next_open_read_its_files_from_the_disk() {
    let tmp = TempDir::new("faults-mark");
    let (mut log, armed) = open_failing(&tmp.0, IoCall::Flush, ErrorKind::Other);
    let mut appended = 0;
    while common::segments(&tmp.0).len() < 3 {
        put(&mut log, appended).unwrap();
        appended += 1;
    }
    log.sync().unwrap();
    assert_eq!(lock_len(&tmp.0), 0, "no mark while the log works");
    put(&mut log, appended).unwrap();
    appended += 1;
    armed.store(true, Ordering::SeqCst);
    assert!(matches!(log.sync(), Err(Error::Io(_))));
    assert_eq!(lock_len(&tmp.0), 1, "the failure marked the directory");
    drop(log);
    assert_eq!(lock_len(&tmp.0), 1, "the mark outlives the log");

    let (refused, calls) = open_recording(&tmp.0, &[IoCall::DropPageCache]);
    assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    assert_eq!(
        calls,
        [IoCall::DropPageCache],
        "nothing else before the drop"
    );
    assert_eq!(
        lock_len(&tmp.0),
        1,
        "an open that could not drop them keeps the mark"
    );

    let files = std::fs::read_dir(&tmp.0).unwrap().count() - 1; // all but LOCK
    let (log, calls) = open_recording(&tmp.0, &[]);
    let log = log.unwrap();
    let dropped = calls
        .iter()
        .filter(|&&c| c == IoCall::DropPageCache)
        .count();
    assert_eq!(
        dropped, files,
        "every file of the log is dropped: {calls:?}"
    );
    assert!(
        calls[..dropped].iter().all(|&c| c == IoCall::DropPageCache),
        "the drops come before anything else the open does: {calls:?}"
    );
    assert_eq!(
        lock_len(&tmp.0),
        0,
        "the open that read from the disk clears the mark"
    );
    drop(log);
    // No writeback failed for real (the hook refused the flush before it was made): the
    // synced pages are read back from the disk, and the last record's page, never flushed, was
    // dirty and kept. Every record appended is there.
    assert_eq!(reopen(&tmp.0), (0..u64::from(appended)).collect::<Vec<_>>());
    let (log, calls) = open_recording(&tmp.0, &[]);
    log.unwrap();
    assert!(!calls.contains(&IoCall::DropPageCache), "{calls:?}");
}

/// A writeback that failed where no one heard (pages a crashed process left dirty, which the
/// kernel could not write: `tests/failing_disk.rs` makes one for real) is heard by the open,
/// which asks each file before it reads any (`IoCall::CheckWriteback`), and then reads every
/// file from the disk as after a failed log. Every file is asked, not only until one answers.
/// The mark comes first: an error is heard once, so an open whose drop then fails must leave
/// the mark for the next one, which will hear nothing.
#[test]
fn an_open_that_hears_of_a_failed_writeback_reads_its_files_from_the_disk() {
    let tmp = TempDir::new("faults-writeback");
    let mut log = Log::open(&tmp.0, Options::default().with_segment_size(4096), |_| {}).unwrap();
    let mut appended = 0;
    while common::segments(&tmp.0).len() < 3 {
        put(&mut log, appended).unwrap();
        appended += 1;
    }
    drop(log);
    let files = std::fs::read_dir(&tmp.0).unwrap().count() - 1; // all but LOCK

    let (log, calls) = open_recording(&tmp.0, &[]);
    drop(log.unwrap());
    assert_eq!(
        calls[..files],
        vec![IoCall::CheckWriteback; files],
        "an open asks every file first: {calls:?}"
    );
    assert!(!calls.contains(&IoCall::DropPageCache), "{calls:?}");

    let (refused, calls) = open_recording(&tmp.0, &[IoCall::CheckWriteback, IoCall::DropPageCache]);
    assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    assert_eq!(
        calls,
        [
            vec![IoCall::CheckWriteback; files],
            vec![IoCall::DropPageCache]
        ]
        .concat(),
        "every file is asked, then the drop"
    );
    assert_eq!(
        lock_len(&tmp.0),
        1,
        "the failed writeback marked the directory"
    );

    let (log, calls) = open_recording(&tmp.0, &[IoCall::CheckWriteback]);
    let log = log.unwrap();
    assert_eq!(
        calls[..files],
        vec![IoCall::DropPageCache; files],
        "the mark sends the next open to the disk before anything else: {calls:?}"
    );
    assert!(!calls.contains(&IoCall::CheckWriteback), "{calls:?}");
    assert_eq!(lock_len(&tmp.0), 0, "and it clears the mark");
    drop(log);

    let (log, calls) = open_recording(&tmp.0, &[IoCall::CheckWriteback]);
    let log = log.unwrap();
    assert_eq!(
        calls[..2 * files],
        [
            vec![IoCall::CheckWriteback; files],
            vec![IoCall::DropPageCache; files]
        ]
        .concat(),
        "a writeback heard to fail sends the open to the disk: {calls:?}"
    );
    assert_eq!(lock_len(&tmp.0), 0, "and the open clears the mark it left");
    drop(log);
    assert_eq!(reopen(&tmp.0), (0..u64::from(appended)).collect::<Vec<_>>());
}

/// A fresh copy of the log in `from`, `LOCK` included.
fn copy_log(from: &Path, name: &str) -> TempDir {
    let to = TempDir::new(name);
    larder_testkit::copy_dir(from, &to.0);
    to
}

/// An open whose own writes fail (the newest seal it syncs, the torn tail it zeroes and
/// flushes, the files it removes or creates) marks the directory as a failed log does: a
/// failed writeback leaves the same clean pages that never reached the disk whoever asked for
/// it, and a retried open that read them would append after a hole (the module doc of
/// `log.rs`, "Failure"). So the open after it reads the files from the disk.
#[test]
fn an_open_whose_writes_fail_marks_the_directory() {
    // What a crash leaves: sealed segments, the newest seal for the open to sync, torn bytes
    // after the active segment's last record for it to zero and flush, and the next segment's
    // file, created by a roll that got no further (all zeros), for it to remove.
    let fixture = TempDir::new("faults-open-mark");
    let mut log = Log::open(
        &fixture.0,
        Options::default().with_segment_size(4096),
        |_| {},
    )
    .unwrap();
    let mut appended = 0;
    while common::segments(&fixture.0).len() < 3 {
        put(&mut log, appended).unwrap();
        appended += 1;
    }
    log.sync().unwrap();
    drop(log);
    let active = common::segments(&fixture.0).pop().unwrap();
    let len = std::fs::metadata(&active).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &[0xff], len - 1).unwrap();
    // A new log numbers its segments from 1.
    let next = active.with_file_name(format!(
        "{:020}.seg",
        common::segments(&fixture.0).len() + 1
    ));
    std::fs::write(next, vec![0u8; 4096]).unwrap();

    let clean = copy_log(&fixture.0, "faults-open-mark-clean");
    let (log, calls) = open_recording(&clean.0, &[]);
    log.unwrap();
    let mut made = Vec::new();
    for call in calls {
        if !made.contains(&call) {
            made.push(call);
        }
    }
    assert!(
        [
            IoCall::SyncFile,
            IoCall::Flush,
            IoCall::Remove,
            IoCall::SyncDir
        ]
        .iter()
        .all(|call| made.contains(call)),
        "the open syncs the newest seal, flushes the zeroed tail and removes the roll's file: \
         {made:?}"
    );
    // The check of each file for a failed writeback writes nothing, and its failure is no
    // error of the open's: it is what sends the open to the disk (the test after this one).
    for call in made.into_iter().filter(|&c| c != IoCall::CheckWriteback) {
        let dir = copy_log(&fixture.0, "faults-open-mark-failing");
        let (refused, _) = open_recording(&dir.0, &[call]);
        assert!(refused.is_err(), "{call:?} failed and the open went on");
        assert_eq!(
            lock_len(&dir.0),
            1,
            "an open whose {call:?} failed marks the directory"
        );
        let (log, calls) = open_recording(&dir.0, &[]);
        log.unwrap();
        assert_eq!(
            calls.first(),
            Some(&IoCall::DropPageCache),
            "the next open reads from the disk: {calls:?}"
        );
        assert_eq!(lock_len(&dir.0), 0, "and clears the mark");
    }
}
