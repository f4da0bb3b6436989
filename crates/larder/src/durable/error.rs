//! A durable cache's errors.

use std::fmt;

use super::codec::CodecError;
use larder_core::BuildError;
use larder_log::format::Location;

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
    /// The log refused: an I/O error, corruption found on recovery, a log a newer Larder
    /// wrote (in either recovery mode), a record too large, a segment size over
    /// [`larder_log::MAX_SEGMENT_SIZE`] in the [`LogOptions`](super::LogOptions), the
    /// directory locked by another open cache, or a log failed by an earlier error. See
    /// [`LogError`](super::LogError) (`larder_log::Error`, re-exported); [`Error::log`] gives
    /// it back.
    Log(larder_log::Error),
    /// A key or value the codec could not encode (nothing was written), or a record it could
    /// not decode on recovery (the cache was not opened, and the log's files were left as
    /// they were).
    Codec {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// On recovery, the sequence number of the record that did not decode.
        seq: Option<u64>,
        /// On recovery, where that record is: the file in the log's directory that holds it
        /// and the byte offset it starts at there, shown as
        /// `00000000000000000003.seg at byte 4096` (a `.snap` file is a snapshot part).
        location: Option<Location>,
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
                ..
            } => write!(f, "durable cache: could not encode a {what}: {source}"),
            Error::Codec {
                what,
                seq: Some(seq),
                location: Some(location),
                source,
            } => write!(
                f,
                "durable cache: the {what} of log record {seq}, {location}, does not decode: \
                 {source}"
            ),
            Error::Codec {
                what,
                seq: Some(seq),
                location: None,
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

/// Why [`DurableCache::insert`](super::DurableCache::insert) failed, with the key and value
/// given back when the cache never took them (as [`std::sync::mpsc::TrySendError`] gives back
/// what it could not send).
///
/// [`into_inner`](Self::into_inner) is:
/// - `Some((key, value))` when the cache is unchanged: the key or value did not encode
///   ([`Error::Codec`]), or the append failed, or the log had failed or closed before it
///   ([`Error::Log`]). The caller can keep the value elsewhere, or try again.
/// - `None` when the entry went into the cache and a later step failed: the sync of
///   [`Durability::Always`](super::Durability::Always) (the entry is in the cache, its
///   durability unknown), recording what the write evicted, or the delete that follows an
///   entry the cache refused as too heavy (the cache dropped it, as it would without a log).
///
/// It converts into the plain [`Error`] (so `?` works in a function returning one), dropping
/// the key and value. Its `Debug` shows neither, and so asks no `Debug` of them.
pub struct InsertError<K, V> {
    error: Error,
    entry: Option<(K, V)>,
}

impl<K, V> InsertError<K, V> {
    /// The cache is unchanged: `key` and `value` go back to the caller.
    pub(crate) fn unstored(error: Error, key: K, value: V) -> Self {
        InsertError {
            error,
            entry: Some((key, value)),
        }
    }

    /// The entry reached the cache before the failure.
    pub(crate) fn stored(error: Error) -> Self {
        InsertError { error, entry: None }
    }

    /// What went wrong.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The key and value the insert was given, if the cache never took them.
    pub fn entry(&self) -> Option<(&K, &V)> {
        self.entry.as_ref().map(|(k, v)| (k, v))
    }

    /// The key and value back, if the cache never took them (see the type's doc).
    pub fn into_inner(self) -> Option<(K, V)> {
        self.entry
    }

    /// What went wrong, and the key and value if the cache never took them.
    pub fn into_parts(self) -> (Error, Option<(K, V)>) {
        (self.error, self.entry)
    }

    /// What went wrong, dropping the key and value.
    pub fn into_error(self) -> Error {
        self.error
    }
}

impl<K, V> fmt::Debug for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("error", &self.error)
            .field("entry_returned", &self.entry.is_some())
            .finish()
    }
}

impl<K, V> fmt::Display for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<K, V> std::error::Error for InsertError<K, V> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl<K, V> From<InsertError<K, V>> for Error {
    fn from(e: InsertError<K, V>) -> Self {
        e.error
    }
}
