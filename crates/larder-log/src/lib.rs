//! Larder's durable log: checksummed records (module [`format`](mod@format)) in append-only
//! segment files written through memory maps, replayed on open ([`Log`]). A sync can be split
//! into a [`SyncPoint`] taken under the writer's lock and a flush outside it, which is what
//! group commit ([`GroupCommit`]) is built from. Compaction ([`Log::begin_compaction`],
//! [`Compactor::run`], [`Log::install`]) rewrites the sealed segments as a snapshot of their
//! live records while appends go on, and switches over by replacing a manifest. A
//! [`LogDir`] reads a log's files without opening it for writing, for tools that inspect or
//! verify it, and says what an open would make of each ([`LogDir::replay`], [`FileVerdict`]:
//! the verdicts `Log::open` acts on, from the same code).
//!
//! The crate knows nothing about caches: it stores and replays records of opaque key and value
//! bytes. The durable cache in the `larder` facade turns cache operations into records and
//! replays them into a cache on open.
//!
//! ```
//! use larder_log::format::{encode, scan, Op, Tail, HEADER_LEN};
//!
//! let mut segment = larder_log::format::segment_header(7).to_vec();
//! encode(1, Op::Put { key: b"foo", value: b"bar", expires_at_ms: 0 }, &mut segment);
//! encode(2, Op::Delete { key: b"foo" }, &mut segment);
//! segment.resize(segment.len() + 64, 0); // a preallocated, zero-filled tail
//!
//! let scanned = scan(7, &segment).unwrap();
//! assert_eq!(scanned.records.len(), 2);
//! assert_eq!(scanned.records[1].op(), Op::Delete { key: b"foo" });
//! assert_eq!(scanned.tail, Tail::Clean { end: segment.len() - 64 });
//! assert!(segment.len() - 64 > HEADER_LEN);
//! ```
//!
//! # Consistency
//! A record is returned only after its checksum matched ([`format::Record`] has no public
//! constructor), so a reader never acts on a torn or corrupted record. A scan stops at the
//! first record that does not check out and says where ([`format::Tail`]), so what it returns
//! is always a prefix of what was written.

mod compact;
pub mod dir;
pub mod error;
pub mod format;
mod group;
pub mod log;
mod manifest;
mod recovery;
mod sys;

pub use compact::{Compacted, CompactionReport, Compactor, Retired};
pub use dir::{FileRole, LogDir, LogFile};
pub use error::Error;
pub use group::GroupCommit;
pub use log::{
    Damage, Log, Options, Prefault, RecoveryMode, SyncPoint, TornTail, Usage, MAX_SEGMENT_SIZE,
};
pub use recovery::{Ending, FileVerdict};
pub use sys::{IoCall, IoHook, Reserve};
