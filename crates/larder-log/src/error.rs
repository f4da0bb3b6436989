//! The log's errors: I/O kept apart from corruption, which says where it is.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::log::MAX_SEGMENT_SIZE;

/// What went wrong with the log.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a read, write, sync or map.
    Io(io::Error),
    /// The operating system refused to create or read the log's directory, or to open or
    /// lock its `LOCK` file: what [`Log::open`](crate::Log::open) and
    /// [`LogDir::open`](crate::LogDir::open) do first, where a wrong path shows, and so where
    /// the error names it.
    Path {
        /// What was being done: `"create the log directory"`, `"read the log directory"`,
        /// `"open"` or `"lock"`.
        action: &'static str,
        /// The directory or file it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The log's directory was given as an empty path (`""`). Nothing was created. Taken as
    /// written, the files would go to the current directory, which an empty path (an unset
    /// setting, say) seldom means: pass `"."` to mean it.
    EmptyPath,
    /// Bytes that should hold a valid record or header do not: a checksum mismatch, a length
    /// that runs past the segment, an unknown operation, or a header from another format
    /// (a header of a newer version of this one is [`Error::NewerFormat`] to an open).
    Corruption {
        /// The segment's id (its file name's number).
        segment: u64,
        /// The byte offset, in that segment, of the first bad byte found.
        offset: u64,
        /// What was wrong there.
        reason: &'static str,
    },
    /// A file of the log (a segment, a snapshot part or the `MANIFEST`) names in its header
    /// a format version newer than this build reads: a newer Larder wrote it. That is no
    /// damage, and no [`RecoveryMode`](crate::RecoveryMode) skips it:
    /// [`Log::open`](crate::Log::open) refuses the log in either mode (and
    /// [`LogDir::open`](crate::LogDir::open) refuses to read it) before it hands over a record
    /// or changes anything on disk. Skipping it as damage would drop what the newer version
    /// wrote, and a compaction would then delete it; the newer Larder that wrote the log
    /// opens it.
    ///
    /// A segment's or a snapshot part's header has no checksum, so a version field that
    /// damage raised reads as a newer version too. (The `MANIFEST`'s checksum covers its
    /// version: one that checks out with the version read as this build's is damaged there,
    /// and is [`Error::BadManifest`]. Any other naming a newer version is this error, whatever
    /// its checksum: a newer layout may keep the checksum elsewhere.) The message says how to
    /// go on when the file is damaged instead: move a segment out of the directory, then open
    /// with [`RecoveryMode::SkipCorrupt`](crate::RecoveryMode::SkipCorrupt), which goes on
    /// past it as past a missing segment; write the version this build reads back into a
    /// snapshot part or the `MANIFEST`, without which the log does not open, and their
    /// checksums then say whether the rest is whole.
    NewerFormat {
        /// The file's path.
        file: PathBuf,
        /// The format version its header names.
        version: u32,
        /// The newest version of that file's format this build reads:
        /// [`format::VERSION`](crate::format::VERSION) for a segment or a snapshot part, 1
        /// for the `MANIFEST`.
        supported: u32,
    },
    /// A record longer than a `u32` length can describe (4 GiB).
    TooLarge,
    /// A record numbered `u64::MAX`, which no record may hold (the decoder refuses it: the
    /// record after it could have no number). [`format::encode`](crate::format::encode) and
    /// [`format::encode_into`](crate::format::encode_into) refuse it, writing nothing, so
    /// that no record they write is one a scan stops at. [`Log::append`](crate::Log::append)
    /// returns it once the log's numbers are used up (the next would be `u64::MAX`), writing
    /// nothing and failing nothing: the log still syncs the records before.
    ReservedSeq,
    /// [`Options::segment_size`](crate::Options::segment_size) is over [`MAX_SEGMENT_SIZE`]
    /// (1 TiB). The log was not opened, and nothing was created.
    SegmentSize {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// Another open log holds the directory's lock, in this process or another.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A [`LogDir`](crate::LogDir) was asked to read a directory that holds no log: no `LOCK`,
    /// no `MANIFEST`, no segment file or snapshot part. ([`Log::open`](crate::Log::open)
    /// creates a log in such a directory instead.)
    NotALog {
        /// The directory.
        dir: PathBuf,
    },
    /// The `MANIFEST` file, which says which segment files make up the log, is damaged or
    /// names a file that is missing.
    BadManifest {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A compaction was installed over a log that another compaction had changed since it
    /// began, or over another log than the one it began on; nothing was changed, and its
    /// output was removed.
    StaleCompaction,
    /// An earlier write or sync failed with this kind of error; the log refuses durable work
    /// from then on rather than retry silently.
    Failed {
        /// The first error's kind.
        kind: io::ErrorKind,
    },
    /// A [`SyncPoint`](crate::SyncPoint) was flushed after its [`Log`](crate::Log) was
    /// dropped. It made nothing durable: with the log gone, so is the directory's lock, and
    /// the files may already belong to the next process that opened them.
    Closed,
}

impl Error {
    /// The I/O error kind this error stands for: the error's own for [`Error::Io`] and
    /// [`Error::Path`], the first failure's for [`Error::Failed`], `InvalidData` for
    /// corruption, a bad manifest and oversize, `Unsupported` for a file in a newer format
    /// version, `WouldBlock` for a held lock, `InvalidInput` for a directory that is not a
    /// log, an empty path, a segment size over the limit and a record numbered `u64::MAX`,
    /// `Other` for a stale compaction, `NotConnected` for a flush after the log's drop.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io(e) | Error::Path { source: e, .. } => e.kind(),
            Error::Failed { kind } => *kind,
            Error::Corruption { .. } | Error::TooLarge | Error::BadManifest { .. } => {
                io::ErrorKind::InvalidData
            }
            Error::NewerFormat { .. } => io::ErrorKind::Unsupported,
            Error::StaleCompaction => io::ErrorKind::Other,
            Error::Locked { .. } => io::ErrorKind::WouldBlock,
            Error::NotALog { .. }
            | Error::SegmentSize { .. }
            | Error::EmptyPath
            | Error::ReservedSeq => io::ErrorKind::InvalidInput,
            Error::Closed => io::ErrorKind::NotConnected,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "log I/O failed: {e}"),
            Error::Path {
                action,
                path,
                source,
            } => write!(f, "could not {action} {}: {source}", path.display()),
            Error::EmptyPath => f.write_str(
                "the log's directory path is empty (write \".\" for the current directory)",
            ),
            Error::Corruption {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "log segment {segment} is corrupt at byte {offset}: {reason}"
            ),
            Error::NewerFormat {
                file,
                version,
                supported,
            } => {
                write!(
                    f,
                    "{} is in format version {version}, which a newer Larder writes; this build \
                     reads versions up to {supported}: open the log with a newer Larder",
                    file.display()
                )?;
                if file.extension().is_some_and(|e| e == "seg") {
                    f.write_str(
                        " (the header has no checksum: if the file is damaged instead, version \
                         field included, move it out of the log's directory, then open the log \
                         with RecoveryMode::SkipCorrupt or `larder log repair --skip-corrupt`, \
                         which go on without it)",
                    )
                } else {
                    write!(
                        f,
                        " (if the file is damaged instead, version field included, write \
                         {supported} back into its bytes 8 to 11, little-endian: the log does \
                         not open without this file, and its checksums then say whether the \
                         rest is whole)"
                    )
                }
            }
            Error::TooLarge => f.write_str("a log record cannot be longer than 4 GiB"),
            Error::ReservedSeq => f.write_str(
                "no log record may be numbered u64::MAX (18446744073709551615): \
                 the decoder refuses it",
            ),
            Error::SegmentSize { size } => write!(
                f,
                "a log segment size of {size} bytes is over the largest allowed, \
                 {MAX_SEGMENT_SIZE} bytes (1 TiB): pass a smaller size to \
                 Options::with_segment_size"
            ),
            Error::Locked { dir } => write!(
                f,
                "the log in {} is open elsewhere (its LOCK file is held)",
                dir.display()
            ),
            Error::NotALog { dir } => write!(
                f,
                "{} is not a Larder log (it has no LOCK, MANIFEST, segment or snapshot file)",
                dir.display()
            ),
            Error::BadManifest { reason } => write!(f, "the log's MANIFEST is unusable: {reason}"),
            Error::StaleCompaction => f.write_str(
                "the compaction began before another one changed the log, and was dropped",
            ),
            Error::Failed { kind } => write!(
                f,
                "the log failed earlier ({kind}) and accepts no more durable writes"
            ),
            Error::Closed => f.write_str("the log was dropped before this sync point's flush"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Path { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
