//! Reading a log without opening it ([`LogDir`]): the files come in replay order with their
//! roles, leftovers are listed but kept, the shared lock keeps writers out (and is kept out by
//! them), and a directory with no log is refused untouched. Also what `Log::open` reports of a
//! torn tail it cuts off ([`Log::torn_tail`]).

mod common;

use common::{compact, put_200, TempDir};
use larder_log::format::{scan_as, Kind, Op, Tail};
use larder_log::{Error, FileRole, Log, LogDir, Options};
use std::path::Path;

fn small() -> Options {
    Options::default().with_segment_size(4096)
}

fn open(dir: &Path) -> Result<(Log, Vec<u64>), Error> {
    let mut seqs = Vec::new();
    let log = Log::open(dir, small(), |r| seqs.push(r.seq()))?;
    Ok((log, seqs))
}

/// Every record's sequence number, scanning the files a `LogDir` lists, in its order.
fn scanned_seqs(read: &LogDir) -> Vec<u64> {
    let mut seqs = Vec::new();
    for file in read.files() {
        let bytes = read.read(file).unwrap();
        let scan = scan_as(file.kind, file.id, &bytes).unwrap();
        assert!(matches!(scan.tail, Tail::Clean { .. }), "{file:?}");
        seqs.extend(scan.records.iter().map(|r| r.seq()));
    }
    seqs
}

#[test]
fn files_come_in_replay_order_and_leftovers_are_listed_not_removed() {
    let tmp = TempDir::new("dir-layout");
    let (mut log, _) = open(&tmp.0).unwrap();
    put_200(&mut log);
    compact(&mut log);
    put_200(&mut log);
    drop(log);
    // What a crash can leave: a prepared manifest never installed, and a roll that died
    // before writing its segment's header.
    let tmp_manifest = tmp.0.join("MANIFEST.99.tmp");
    std::fs::write(&tmp_manifest, b"half a manifest").unwrap();
    let read = LogDir::open(&tmp.0).unwrap();
    let next = read.files().iter().map(|f| f.id).max().unwrap() + 1;
    drop(read);
    let unfinished = tmp.0.join(format!("{next:020}.seg"));
    std::fs::write(&unfinished, vec![0u8; 4096]).unwrap();

    let read = LogDir::open(&tmp.0).unwrap();
    assert_eq!(read.generation(), 1);
    let roles: Vec<_> = read.files().iter().map(|f| (f.kind, f.role)).collect();
    let parts = roles.iter().filter(|r| r.1 == FileRole::Snapshot).count();
    assert!(parts >= 1, "{roles:?}");
    assert!(roles[..parts].iter().all(|r| r.0 == Kind::Snapshot));
    assert!(roles[parts..roles.len() - 1]
        .iter()
        .all(|&r| r == (Kind::Log, FileRole::Sealed)));
    assert_eq!(roles.last(), Some(&(Kind::Log, FileRole::Active)));
    assert!(read
        .files()
        .iter()
        .all(|f| f.kind != Kind::Log || f.id > read.base()));
    assert_eq!(read.leftovers(), [tmp_manifest.clone(), unfinished.clone()]);
    let seqs = scanned_seqs(&read);
    drop(read);
    assert!(
        tmp_manifest.exists() && unfinished.exists(),
        "nothing removed"
    );

    // The records read are the ones the log replays, and the open removes the leftovers.
    let (_log, replayed) = open(&tmp.0).unwrap();
    assert_eq!(seqs, replayed);
    assert!(!tmp_manifest.exists() && !unfinished.exists());
}

#[test]
fn the_shared_lock_keeps_writers_out_and_is_kept_out_by_them() {
    let tmp = TempDir::new("dir-lock");
    let (log, _) = open(&tmp.0).unwrap();
    assert!(matches!(LogDir::open(&tmp.0), Err(Error::Locked { .. })));
    drop(log);
    let first = LogDir::open(&tmp.0).unwrap();
    let second = LogDir::open(&tmp.0).unwrap();
    assert!(matches!(open(&tmp.0), Err(Error::Locked { .. })));
    drop((first, second));
    open(&tmp.0).unwrap();
}

#[test]
fn a_directory_without_a_log_is_refused_and_left_alone() {
    let tmp = TempDir::new("dir-not-a-log");
    let err = LogDir::open(&tmp.0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    std::fs::create_dir_all(&tmp.0).unwrap();
    std::fs::write(tmp.0.join("notes.txt"), b"not a segment").unwrap();
    let err = LogDir::open(&tmp.0).unwrap_err();
    assert!(matches!(err, Error::NotALog { .. }), "{err}");
    assert!(err.to_string().contains("is not a Larder log"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().collect();
    assert_eq!(names.len(), 1, "no LOCK created");
}

#[test]
fn a_path_that_is_no_directory_is_an_error_that_names_it() {
    // A regular file, and a path under one: the first read of the directory fails. It said
    // `log I/O failed: Not a directory (os error 20)`, naming no path.
    let tmp = TempDir::new("dir-a-file");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let file = tmp.0.join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    for path in [file.clone(), file.join("log")] {
        let err = LogDir::open(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Path { path: named, .. } if *named == path),
            "{err:?}"
        );
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory, "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        // A writer's open names it too.
        let err = open(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn a_torn_tail_is_reported_by_the_open_that_cuts_it_off() {
    let tmp = TempDir::new("dir-torn");
    let (mut log, _) = open(&tmp.0).unwrap();
    for i in 0..5u8 {
        log.append(Op::Delete { key: &[i] }).unwrap();
    }
    assert!(log.torn_tail().is_none());
    drop(log);
    let read = LogDir::open(&tmp.0).unwrap();
    let active = read.files().last().unwrap().clone();
    let bytes = read.read(&active).unwrap();
    let last = *scan_as(Kind::Log, active.id, &bytes)
        .unwrap()
        .records
        .last()
        .unwrap();
    drop(read);
    // Cut the last record short: its last byte, as a crash mid-write leaves it.
    let mut file = std::fs::read(&active.path).unwrap();
    file[last.offset() + last.len() - 1] ^= 0xff;
    std::fs::write(&active.path, &file).unwrap();

    let (log, seqs) = open(&tmp.0).unwrap();
    assert_eq!(seqs, [0, 1, 2, 3]);
    let torn = log.torn_tail().expect("a torn tail").clone();
    assert_eq!(torn.segment, active.id);
    assert_eq!(torn.offset, last.offset() as u64);
    assert!(torn.bytes >= last.len() as u64, "{torn:?}");
    assert_eq!(torn.reason, "checksum mismatch");
    drop(log);
    let (log, seqs) = open(&tmp.0).unwrap();
    assert_eq!(seqs, [0, 1, 2, 3]);
    assert!(log.torn_tail().is_none(), "cut off once, for good");
}

#[test]
fn a_file_too_large_to_read_is_an_error_not_an_abort() {
    // A segment with data a terabyte in (a sparse file, as damage or another program could
    // leave): reading it whole would need a terabyte of memory.
    let tmp = TempDir::new("dir-huge");
    drop(open(&tmp.0).unwrap());
    let path = tmp.0.join(format!("{:020}.seg", 1));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"x", (1 << 40) - 1).unwrap();
    let read = LogDir::open(&tmp.0).unwrap();
    match read.read(&read.files()[0]) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory),
        other => panic!("{:?}", other.map(|b| b.len())),
    }
}
