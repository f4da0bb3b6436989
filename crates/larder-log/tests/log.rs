//! The log on disk: appends across segments come back on reopen, the directory lock keeps a
//! second opener out, a torn append is cut off, damage in a sealed segment is reported with its
//! place, and an interrupted roll recovers.

mod common;

use common::{damage_segment, put_200, TempDir};
use larder_log::format::Op;
use larder_log::{Error, Log, Options};
use std::path::{Path, PathBuf};

fn small() -> Options {
    Options::default().with_segment_size(4096)
}

/// A replayed record as `(seq, key, value)`; a delete has no value, a clear the key `*clear*`.
type Replayed = (u64, Vec<u8>, Option<Vec<u8>>);

/// Opens `dir`, returning the log and what it replayed.
fn open(dir: &Path) -> Result<(Log, Vec<Replayed>), Error> {
    let mut seen = Vec::new();
    let log = Log::open(dir, small(), |r| {
        let (k, v) = match r.op() {
            Op::Put { key, value, .. } => (key.to_vec(), Some(value.to_vec())),
            Op::Delete { key } => (key.to_vec(), None),
            Op::Clear => (b"*clear*".to_vec(), None),
        };
        seen.push((r.seq(), k, v));
    })?;
    Ok((log, seen))
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_across_segments_come_back_in_order() {
    let tmp = TempDir::new("roundtrip");
    let (mut log, seen) = open(&tmp.0).unwrap();
    assert!(seen.is_empty());
    let mut want = Vec::new();
    for i in 0..500u64 {
        let key = format!("key-{}", i % 50).into_bytes();
        let value = vec![i as u8; (i % 97) as usize];
        let seq = if i % 7 == 0 {
            log.append(Op::Delete { key: &key }).unwrap()
        } else {
            log.append(Op::Put {
                key: &key,
                value: &value,
                expires_at_ms: 0,
            })
            .unwrap()
        };
        assert_eq!(seq, i);
        want.push((i, key, (i % 7 != 0).then_some(value)));
    }
    // One record larger than a whole segment gets a segment of its own.
    let big = vec![7u8; 10_000];
    log.append(Op::Put {
        key: b"big",
        value: &big,
        expires_at_ms: 5,
    })
    .unwrap();
    want.push((500, b"big".to_vec(), Some(big)));
    log.sync().unwrap();
    drop(log);
    assert!(segments(&tmp.0).len() > 5, "{:?}", segments(&tmp.0));
    let (log, seen) = open(&tmp.0).unwrap();
    assert_eq!(seen, want);
    assert_eq!(log.next_seq(), 501);
}

#[test]
fn a_second_open_is_refused_until_the_first_closes() {
    let tmp = TempDir::new("lock");
    let (log, _) = open(&tmp.0).unwrap();
    match open(&tmp.0) {
        Err(Error::Locked { dir }) => assert_eq!(dir, tmp.0),
        other => panic!("{:?}", other.map(|_| ())),
    }
    drop(log);
    open(&tmp.0).unwrap();
}

#[test]
fn a_torn_append_is_cut_off_and_the_log_goes_on() {
    let tmp = TempDir::new("torn");
    let (mut log, _) = open(&tmp.0).unwrap();
    for i in 0..3u8 {
        log.append(Op::Put {
            key: &[i],
            value: b"v",
            expires_at_ms: 0,
        })
        .unwrap();
    }
    drop(log);
    // A crash in the middle of the fourth append: its first bytes reached the file.
    let path = segments(&tmp.0).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let end = 24 + 3 * 34;
    assert!(bytes[end..].iter().all(|&b| b == 0));
    bytes[end..end + 12].copy_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 3, 0, 0, 0]);
    std::fs::write(&path, &bytes).unwrap();

    let (mut log, seen) = open(&tmp.0).unwrap();
    assert_eq!(seen.len(), 3);
    let after = std::fs::read(&path).unwrap();
    assert!(
        after[end..].iter().all(|&b| b == 0),
        "the torn bytes are zeroed"
    );
    log.append(Op::Delete { key: &[9] }).unwrap();
    drop(log);
    let (_, seen) = open(&tmp.0).unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3], (3, vec![9], None));
}

#[test]
fn damage_in_a_sealed_segment_is_reported_where_it_is() {
    let tmp = TempDir::new("sealed");
    let (mut log, _) = open(&tmp.0).unwrap();
    put_200(&mut log);
    drop(log);
    assert!(segments(&tmp.0).len() >= 3);
    damage_segment(&tmp.0, 1, 1000);
    match open(&tmp.0) {
        Err(Error::Corruption {
            segment, offset, ..
        }) => {
            assert_eq!(segment, 1);
            assert!(offset <= 1000 && offset > 900, "offset {offset}");
        }
        other => panic!("{:?}", other.map(|(_, seen)| seen.len())),
    }
}

#[test]
fn a_roll_interrupted_before_the_next_header_recovers() {
    let tmp = TempDir::new("roll");
    let (mut log, _) = open(&tmp.0).unwrap();
    log.append(Op::Clear).unwrap();
    drop(log);
    // The crash came after the next segment's file was created and sized, before its header.
    std::fs::write(tmp.0.join(format!("{:020}.seg", 2)), vec![0u8; 4096]).unwrap();
    let (mut log, seen) = open(&tmp.0).unwrap();
    assert_eq!(seen, vec![(0, b"*clear*".to_vec(), None)]);
    assert_eq!(segments(&tmp.0).len(), 1, "the empty segment was removed");
    log.append(Op::Clear).unwrap();
}

#[test]
fn group_commit_makes_every_waiter_durable_with_shared_flushes() {
    use larder_log::GroupCommit;
    use std::sync::Mutex;
    let tmp = TempDir::new("group");
    let (log, _) = open(&tmp.0).unwrap();
    let group = GroupCommit::new(log.next_seq());
    let log = Mutex::new(log);
    let (threads, per) = (8u32, 50u32);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (log, group) = (&log, &group);
            s.spawn(move || {
                for i in 0..per {
                    let key = (t * per + i).to_le_bytes();
                    let seq = log
                        .lock()
                        .unwrap()
                        .append(Op::Put {
                            key: &key,
                            value: b"v",
                            expires_at_ms: 0,
                        })
                        .unwrap();
                    group
                        .wait_durable(seq + 1, || log.lock().unwrap().sync_point())
                        .unwrap();
                }
            });
        }
    });
    let writes = u64::from(threads * per);
    assert!(
        group.flushes() > 0 && group.flushes() < writes,
        "{}",
        group.flushes()
    );
    drop(log);
    let (_, seen) = open(&tmp.0).unwrap();
    assert_eq!(seen.len() as u64, writes);
}

#[test]
fn a_failed_flush_fails_every_waiter_and_every_later_write() {
    use larder_log::GroupCommit;
    let tmp = TempDir::new("failed");
    let (mut log, _) = open(&tmp.0).unwrap();
    let group = GroupCommit::new(0);
    let seq = log.append(Op::Clear).unwrap();
    let refused = || {
        Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected",
        )))
    };
    match group.wait_durable(seq + 1, refused) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::StorageFull),
        other => panic!("{other:?}"),
    }
    // The failure sticks: no waiter is told its record is durable, and nothing retries.
    match group.wait_durable(seq + 1, || log.sync_point()) {
        Err(Error::Failed { kind }) => assert_eq!(kind, std::io::ErrorKind::StorageFull),
        other => panic!("{other:?}"),
    }
}
