//! Compaction: the sealed files of a log rewritten as a snapshot of their live records, while
//! appends go on.
//!
//! A log only grows: a replaced or deleted key leaves its old records behind. Compaction
//! rewrites everything before the active segment as one *snapshot*, the last put of each key
//! that is still live there, and switches the log over to it. It is a merge in the manner of
//! Bitcask's, done in three phases so that the writer waits only for the first and the last:
//!
//! 1. **Begin** ([`Log::begin_compaction`](crate::Log::begin_compaction), under `&mut Log`):
//!    seal the active segment (a roll). Every file before the new active one is now sealed,
//!    and is the compaction's input: the current snapshot's parts, then the sealed segments.
//!    The last of them is the new *base*.
//! 2. **Run** ([`Compactor::run`], without the log): replay the inputs into an index of each
//!    key's last record (deletes and clears remove, exactly as recovery does), drop puts whose
//!    deadline has passed, and copy the survivors' records, byte for byte and in their
//!    original order, into new snapshot parts (`{id}.snap`, written and sealed like segments,
//!    then `fsync`ed, then the directory), and prepare the manifest that names them and the
//!    new base (`MANIFEST.{base}.tmp`, `fsync`ed). Appends meanwhile go to segments above the
//!    base.
//! 3. **Install** ([`Log::install`](crate::Log::install), under `&mut Log`): rename the
//!    prepared manifest over the old one and `fsync` the directory (module `manifest`). That
//!    rename is the switch. Then the inputs can go ([`Retired::remove`], without the log).
//!
//! **Why the switch preserves the live set.** Replaying the snapshot gives, key by key, what
//! replaying the inputs gives (the snapshot *is* that replay's result, in records), and the
//! segments above the base are replayed after it in both cases. So recovery finds the same
//! entries before and after the switch, whatever was appended during the run.
//!
//! **A crash at any step.** Before the rename, the old manifest is in force: it lists none of
//! the new parts, so recovery removes them and replays what it did before. After the rename
//! and the directory sync, the new one is: recovery removes the inputs that were not yet
//! deleted (segments at or below the base, parts it does not list). Between the rename and the
//! directory sync, either manifest may be found, and both describe the same live set, because
//! no input is deleted before the sync.
//!
//! **Costs.** The run reads every input once, through read-only maps, a few hundred records
//! at a time ([`SCAN_BATCH`](crate::format::SCAN_BATCH)), and holds an index entry (the key's
//! bytes, borrowed from the map, and 24 bytes) per distinct key in them: around 50 to 60 bytes
//! a key with the hash table's slack. Its CPU goes mostly to the index, whose lookups miss the
//! caches once the keys outnumber them, and to checking each record's checksum. The output is
//! written through maps like any segment.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use memmap2::Mmap;

use crate::dir::DirLock;
use crate::error::Error;
use crate::format::{Kind, Op, Record, SEAL_LEN};
use crate::log::{map_sealed, segment_path, take_id, RecoveryMode};
use crate::log::{Damage, Segment, Usage};
use crate::manifest::{self, Manifest};
use crate::recovery::scan_sealed_batches;
use crate::sys::{Reserve, Sys};

/// Phase 2 of a compaction, made by [`Log::begin_compaction`](crate::Log::begin_compaction):
/// the rewrite, which needs no access to the log. It holds the directory's lock, so the log's
/// directory cannot be opened again until it is done or dropped.
pub struct Compactor {
    pub(crate) dir: PathBuf,
    pub(crate) lock: Arc<DirLock>,
    pub(crate) sys: Sys,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) segment_size: u64,
    pub(crate) recovery: RecoveryMode,
    /// The files to rewrite, in replay order.
    pub(crate) inputs: Vec<(Kind, u64)>,
    /// The manifest generation it was begun under.
    pub(crate) generation: u64,
    /// The last sealed log segment among the inputs.
    pub(crate) base: u64,
    /// The inputs' records.
    pub(crate) input_usage: Usage,
}

/// Where a surviving record is: which input, where in it, and when it expires.
#[derive(Clone, Copy)]
struct Place {
    input: u32,
    len: u32,
    offset: u64,
    expires_at_ms: u64,
}

/// Indexes `records`, of input `input`, in order, into `last` (each key's last put; deletes
/// and clears remove, as recovery does), raising `next_seq` past them. A batch at a time, so
/// that the lookups run back to back ([`SCAN_BATCH`](crate::format::SCAN_BATCH)).
fn index<'a>(
    last: &mut HashMap<&'a [u8], Place, ahash::RandomState>,
    input: u32,
    next_seq: &mut u64,
    records: &[Record<'a>],
) {
    for r in records {
        *next_seq = (*next_seq).max(r.seq() + 1);
        match r.op() {
            Op::Put {
                key, expires_at_ms, ..
            } => {
                let place = Place {
                    input,
                    len: r.len() as u32,
                    offset: r.offset() as u64,
                    expires_at_ms,
                };
                last.insert(key, place);
            }
            Op::Delete { key } => {
                last.remove(key);
            }
            Op::Clear => last.clear(),
        }
    }
}

impl Compactor {
    /// Rewrites the inputs' live records into new snapshot parts (phase 2 in the module doc),
    /// dropping puts whose deadline is at or before `now_ms` (wall-clock milliseconds).
    ///
    /// # Errors
    /// [`Error::Io`] for a failed read, write or sync, and [`Error::Corruption`] for an input
    /// that does not check out (unless the log was opened with
    /// [`RecoveryMode::SkipCorrupt`], which skips the damage here too). The log is not
    /// affected either way, and whatever the run wrote is removed.
    pub fn run(self, now_ms: u64) -> Result<Compacted, Error> {
        let mut written = Compacted {
            dir: self.dir.clone(),
            tmp: manifest::tmp_path(&self.dir, self.base),
            lock: Arc::clone(&self.lock),
            sys: self.sys.clone(),
            next: Manifest {
                generation: self.generation + 1,
                base: self.base,
                snapshot: Vec::new(),
            },
            keep: false,
            inputs: self.inputs.clone(),
            input_usage: self.input_usage,
            output_usage: Usage::default(),
            damage: Vec::new(),
        };
        // On an error, `written` is dropped and removes the parts made so far.
        self.rewrite(now_ms, &mut written)?;
        manifest::prepare(&self.sys, &written.tmp, &written.next)?;
        Ok(written)
    }

    fn rewrite(&self, now_ms: u64, out: &mut Compacted) -> Result<(), Error> {
        let maps: Vec<Mmap> = self
            .inputs
            .iter()
            .map(|&(kind, id)| map_sealed(&self.dir, kind, id))
            .collect::<Result<_, _>>()?;
        // Each key's last record, as recovery would replay them. Hashed with ahash: keys are
        // short byte strings, which std's SipHash takes several times as long to hash.
        let mut last: HashMap<&[u8], Place, ahash::RandomState> = HashMap::default();
        // The sequence number after the inputs', for the parts' seals (`format.rs`).
        let mut next_seq = 0;
        for (input, (&(kind, id), map)) in self.inputs.iter().zip(&maps).enumerate() {
            // Damage here may be older than the open (which reported it, or in Strict mode
            // refused to open) or newer (a file sealed since, or damaged since): either way it
            // is reported with the output, since the files that held what it skipped go once
            // the output is installed. On an error the index is dropped with whatever was
            // indexed.
            let (seal, damage) =
                scan_sealed_batches(self.recovery, kind, id, map, map.len(), |batch| {
                    index(&mut last, input as u32, &mut next_seq, batch);
                })?;
            out.damage.extend(damage);
            next_seq = seal.map_or(next_seq, |s| next_seq.max(s.next_seq));
        }
        let live = |p: &Place| p.expires_at_ms == 0 || p.expires_at_ms > now_ms;
        let mut survivors: Vec<Place> = last.into_values().filter(live).collect();
        survivors.sort_unstable_by_key(|p| (p.input, p.offset));
        let mut part: Option<Segment> = None;
        let new_part = |size: u64, out: &mut Compacted| {
            let id = take_id(&self.next_id)?;
            // Noted before creation, so that a failed creation is removed as well.
            out.next.snapshot.push(id);
            // A part is synced once, when it is whole: allocating is the cheap way.
            Segment::create(
                &self.sys,
                &self.dir,
                Kind::Snapshot,
                id,
                size,
                Reserve::Allocate,
            )
        };
        for p in survivors {
            let bytes = &maps[p.input as usize][p.offset as usize..][..p.len as usize];
            if !part.as_ref().is_some_and(|s| s.fits(bytes.len())) {
                if let Some(full) = part.take() {
                    full.seal(next_seq)?;
                }
                let size = self
                    .segment_size
                    .max((crate::format::HEADER_LEN + bytes.len()) as u64);
                part = Some(new_part(size, out)?);
            }
            part.as_mut().expect("a part was just made").write(bytes)?;
            // Every survivor is a put.
            out.output_usage.records += 1;
            out.output_usage.bytes += bytes.len() as u64;
            out.output_usage.puts += 1;
            out.output_usage.put_bytes += bytes.len() as u64;
        }
        // With nothing live, one part without records all the same: its seal is what says
        // which number the segments above the new base begin at. Without it, an OS crash that
        // lost the first of them whole while later ones reached the disk left a gap that
        // recovery could not see (`Expected::at_start`).
        let last = match part {
            Some(part) => part,
            None => new_part((crate::format::HEADER_LEN + SEAL_LEN) as u64, out)?,
        };
        last.seal(next_seq)?;
        self.sys.sync_dir(&self.dir)?;
        Ok(())
    }
}

/// A compaction's output, ready for [`Log::install`](crate::Log::install). Dropped without
/// being installed, it removes its files.
pub struct Compacted {
    dir: PathBuf,
    /// Where the manifest is prepared (`MANIFEST.{base}.tmp`), renamed into place by the
    /// install.
    pub(crate) tmp: PathBuf,
    /// The directory's lock, held until the output is installed or removed: the log's own,
    /// which is how [`Log::install`](crate::Log::install) knows the output is that log's.
    pub(crate) lock: Arc<DirLock>,
    sys: Sys,
    /// The manifest that installs this output: the generation after the one the compaction
    /// began under, its base, and the snapshot parts written, in order.
    pub(crate) next: Manifest,
    /// Set once the parts may be named by the manifest on disk: then they stay.
    keep: bool,
    inputs: Vec<(Kind, u64)>,
    pub(crate) input_usage: Usage,
    pub(crate) output_usage: Usage,
    /// What [`RecoveryMode::SkipCorrupt`] skipped in the inputs: their records from there on
    /// are not in the output.
    pub(crate) damage: Vec<Damage>,
}

impl Compacted {
    /// What the compaction did, in figures.
    pub fn report(&self) -> CompactionReport {
        CompactionReport {
            files_before: self.inputs.len(),
            records_before: self.input_usage.records,
            bytes_before: self.input_usage.bytes,
            files_after: self.next.snapshot.len(),
            records_after: self.output_usage.records,
            bytes_after: self.output_usage.bytes,
        }
    }

    /// The damage the rewrite skipped in its inputs ([`RecoveryMode::SkipCorrupt`] only; a
    /// strict rewrite fails on it instead): the records of each damaged file from its offset
    /// on are not in the output. Once installed, the log reports them too
    /// ([`Log::damage`](crate::Log::damage)).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    pub(crate) fn keep_parts(&mut self) {
        self.keep = true;
    }

    pub(crate) fn inputs(&self) -> Vec<(Kind, u64)> {
        self.inputs.clone()
    }
}

impl Drop for Compacted {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Best effort: a part or prepared manifest left behind is not in the manifest, so the
        // next open removes it.
        let _ = self.sys.remove(&self.tmp);
        for &id in &self.next.snapshot {
            let _ = self
                .sys
                .remove(&segment_path(&self.dir, Kind::Snapshot, id));
        }
        let _ = self.sys.sync_dir(&self.dir);
    }
}

/// A compaction in figures: its inputs' records and bytes, and its output's. The records are
/// counted with their encoding (32 bytes of head each, plus key and value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Files rewritten: the previous snapshot's parts and the sealed segments.
    pub files_before: usize,
    /// Records in them.
    pub records_before: u64,
    /// Their bytes.
    pub bytes_before: u64,
    /// Snapshot parts written.
    pub files_after: usize,
    /// Records kept: the live puts.
    pub records_after: u64,
    /// Their bytes.
    pub bytes_after: u64,
}

/// The files an installed compaction replaced, for [`remove`](Self::remove) to delete without
/// the log's lock. If they are never removed, the next open removes them.
#[must_use = "the replaced files stay on disk until removed (or until the next open)"]
pub struct Retired {
    dir: PathBuf,
    /// The directory's lock: no other log opens the directory while files go.
    _lock: Arc<DirLock>,
    sys: Sys,
    files: Vec<(Kind, u64)>,
}

impl Retired {
    pub(crate) fn new(
        dir: PathBuf,
        lock: Arc<DirLock>,
        sys: Sys,
        files: Vec<(Kind, u64)>,
    ) -> Retired {
        Retired {
            dir,
            _lock: lock,
            sys,
            files,
        }
    }

    /// Deletes the replaced files, then syncs the directory.
    ///
    /// # Errors
    /// [`io::Error`] from a deletion or the sync; harmless to the log, whose manifest no
    /// longer names these files (the next open removes what is left).
    pub fn remove(self) -> io::Result<()> {
        for &(kind, id) in &self.files {
            self.sys.remove(&segment_path(&self.dir, kind, id))?;
        }
        self.sys.sync_dir(&self.dir)
    }
}

impl fmt::Debug for Compactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compactor")
            .field("dir", &self.dir)
            .field("inputs", &self.inputs)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Compacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compacted")
            .field("dir", &self.dir)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Retired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retired")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}
