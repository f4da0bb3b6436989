//! A durable cache's errors.

use std::fmt;

use super::codec::CodecError;
use larder_core::BuildError;

/// What went wrong building, writing or recovering a durable cache.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The cache's configuration (see [`CacheBuilder::build`](crate::CacheBuilder::build)).
    Build(BuildError),
    /// `Durability::Interval` shorter than
    /// [`Durability::MIN_INTERVAL`](super::Durability::MIN_INTERVAL) (1 ms), zero included: the
    /// janitor that syncs counts milliseconds, and would sync less often than asked. Use
    /// `Durability::Always` to sync every write.
    IntervalTooShort {
        /// The interval given.
        interval: std::time::Duration,
    },
    /// `Compaction::Auto` with a dead share outside `(0, 1]` (or not a number).
    InvalidCompaction {
        /// The share given.
        dead_share: f64,
    },
    /// The cache's last handle was dropped (seen only by work the janitor had begun).
    Closed,
    /// The janitor's thread, which syncs an `Interval` cache and compacts its log, could not
    /// be started (the operating system's error). The log was opened and is closed again.
    Janitor(std::io::Error),
    /// The log refused: an I/O error, corruption found on recovery, a record too large, a
    /// segment size over [`larder_log::MAX_SEGMENT_SIZE`] in the
    /// [`LogOptions`](super::LogOptions), the directory locked by another open cache, or a log
    /// failed by an earlier error. See
    /// [`larder_log::Error`]; [`Error::log`] gives it back.
    Log(larder_log::Error),
    /// A key or value the codec could not encode (nothing was written), or a record it could
    /// not decode on recovery (the cache was not opened).
    Codec {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// On recovery, the sequence number of the record that did not decode.
        seq: Option<u64>,
        /// The codec's error.
        source: CodecError,
    },
}

impl Error {
    /// The log's error, if this is one.
    pub fn log(&self) -> Option<&larder_log::Error> {
        match self {
            Error::Log(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Build(e) => write!(f, "durable cache: {e}"),
            Error::IntervalTooShort { interval } => write!(
                f,
                "durable cache: Durability::Interval({interval:?}) is shorter than 1 ms, the \
                 shortest the janitor keeps (Durability::Always syncs every write)"
            ),
            Error::InvalidCompaction { dead_share } => write!(
                f,
                "durable cache: Compaction::Auto needs a dead share in (0, 1], not {dead_share}"
            ),
            Error::Closed => f.write_str("durable cache: closed (its last handle was dropped)"),
            Error::Janitor(e) => write!(
                f,
                "durable cache: the janitor's thread could not be started: {e}"
            ),
            Error::Log(e) => write!(f, "durable cache: {e}"),
            Error::Codec {
                what,
                seq: None,
                source,
            } => write!(f, "durable cache: could not encode a {what}: {source}"),
            Error::Codec {
                what,
                seq: Some(seq),
                source,
            } => write!(
                f,
                "durable cache: the {what} of log record {seq} does not decode: {source}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Build(e) => Some(e),
            Error::Log(e) => Some(e),
            Error::Codec { source, .. } => Some(source),
            Error::Janitor(e) => Some(e),
            Error::IntervalTooShort { .. } | Error::InvalidCompaction { .. } | Error::Closed => {
                None
            }
        }
    }
}

impl From<larder_log::Error> for Error {
    fn from(e: larder_log::Error) -> Self {
        Error::Log(e)
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        Error::Build(e)
    }
}
