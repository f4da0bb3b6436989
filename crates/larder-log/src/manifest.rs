//! The manifest: which files make up the log, replaced whole by a rename when a compaction
//! switches over.
//!
//! ```text
//! MANIFEST:  0          8          12           20       28        32                32 + 8n
//!            +----------+----------+------------+--------+---------+-----------------+---------+
//!            | magic    | version  | generation | base   | n       | snapshot ids    | crc     |
//!            | LARDRMAN | u32 = 1  | u64        | u64    | u32     | n × u64         | u32     |
//!            +----------+----------+------------+--------+---------+-----------------+---------+
//! ```
//! (Little-endian; the CRC32C covers every byte before it, so the file is `36 + 8n` bytes.)
//!
//! The log is the snapshot parts, in the order listed, then every log segment whose id is
//! above `base`, in id order. Segments at or below `base` and snapshot parts not listed are
//! left over from a compaction (finished or not) and are removed on open. A directory without
//! a manifest is a log that was never compacted: base 0, no snapshot.
//!
//! **Replacing it, step by step.** 1. Write `MANIFEST.{base}.tmp` and `fsync` it (a
//! compaction does this at the end of its rewrite, without the log's lock). 2. Rename it over
//! `MANIFEST` (atomic: a crash leaves the old manifest or the new one, never a mix). 3. `fsync`
//! the directory, so the rename survives an OS crash. Only then may the files the new manifest
//! drops be deleted: until step 3, the old manifest may still be the one a reboot finds, and it
//! needs them. A `.tmp` found on open is a switch that never happened, and is removed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::sys::Sys;

const MAGIC: [u8; 8] = *b"LARDRMAN";
const VERSION: u32 = 1;
const NAME: &str = "MANIFEST";

/// Which files make up the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Counts the switches; a compaction begun under one generation installs only over it.
    pub(crate) generation: u64,
    /// Log segments at or below this id are replaced by the snapshot.
    pub(crate) base: u64,
    /// The snapshot's parts, in replay order.
    pub(crate) snapshot: Vec<u64>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 8 * self.snapshot.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.base.to_le_bytes());
        let n = u32::try_from(self.snapshot.len()).expect("fewer than 2^32 snapshot parts");
        out.extend_from_slice(&n.to_le_bytes());
        for id in &self.snapshot {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Manifest, &'static str> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if bytes.len() < 36 {
            return Err("shorter than a manifest");
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("manifest checksum mismatch");
        }
        if body[0..8] != MAGIC || u32_at(8) != VERSION {
            return Err("not a Larder manifest, or an unknown version");
        }
        let n = u32_at(28) as usize;
        if body.len() != 32 + 8 * n {
            return Err("manifest length does not match its count of snapshot parts");
        }
        if u64_at(12) == u64::MAX {
            // The next switch could not count on from it.
            return Err("a manifest generation no log reaches");
        }
        Ok(Manifest {
            generation: u64_at(12),
            base: u64_at(20),
            snapshot: (0..n).map(|i| u64_at(32 + 8 * i)).collect(),
        })
    }
}

/// The manifest in `dir`, or the empty one if there is none, changing nothing on disk.
///
/// # Errors
/// [`Error::NewerFormat`] for a manifest a newer Larder wrote, [`Error::BadManifest`] for a
/// damaged one, [`Error::Io`].
pub(crate) fn load(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(NAME);
    match fs::read(&path) {
        Ok(bytes) => match newer_version(&bytes) {
            Some(version) => Err(Error::NewerFormat {
                file: path,
                version,
                supported: VERSION,
            }),
            None => Manifest::decode(&bytes).map_err(|reason| Error::BadManifest { reason }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(e.into()),
    }
}

/// The version a manifest's `bytes` name, if they begin with its magic and name one newer
/// than [`VERSION`], and are not a manifest of this version damaged in its version field.
///
/// Asked before the checksum, whose place a newer layout may have moved: such a manifest is
/// no damage. The checksum covers the version, though, so damage to that field alone is told
/// apart: the manifest then decodes whole with the field read as [`VERSION`] (a newer one
/// does so once in 2^32), and is left to [`Manifest::decode`] to refuse as damaged.
fn newer_version(bytes: &[u8]) -> Option<u32> {
    let version = u32::from_le_bytes(bytes.get(8..12)?.try_into().expect("4 bytes"));
    if bytes[..8] != MAGIC || version <= VERSION {
        return None;
    }
    let mut as_this_version = bytes.to_vec();
    as_this_version[8..12].copy_from_slice(&VERSION.to_le_bytes());
    Manifest::decode(&as_this_version)
        .is_err()
        .then_some(version)
}

/// The prepared manifests in `dir` (`MANIFEST.*.tmp`): switches that never happened (step 2
/// was not reached), which `Log::open` removes once the log has checked out.
pub(crate) fn unfinished(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("MANIFEST.") && name.ends_with(".tmp") {
            found.push(dir.join(name));
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `name` is the manifest's file name.
pub(crate) fn is_manifest(name: &str) -> bool {
    name == NAME
}

/// The file a compaction based on segment `base` writes its manifest to (step 1).
pub(crate) fn tmp_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("MANIFEST.{base}.tmp"))
}

/// Step 1: writes `manifest` to `tmp` and `fsync`s it.
pub(crate) fn prepare(sys: &Sys, tmp: &Path, manifest: &Manifest) -> io::Result<()> {
    let mut file = File::create(tmp)?;
    file.write_all(&manifest.encode())?;
    sys.sync_file(&file)
}

/// Where a [`switch`] failed: before the rename, the old manifest is still the one on disk;
/// after it, either may be, and nothing is certain until a later directory sync succeeds.
pub(crate) enum SwitchError {
    BeforeRename(io::Error),
    AfterRename(io::Error),
}

/// Steps 2 and 3: renames the prepared `tmp` over the manifest, which reads as `current`
/// until then, and syncs the directory.
///
/// A rename that reports an error has not happened only if the manifest on disk still reads
/// as `current`: that is the manifest recovery would find. Whether `tmp` is still there
/// does not tell: `rename` is atomic, but a network file system can report a failure for a
/// rename it did (or one retried after it was done), a file system that renames by copying
/// and then removing the source (FUSE mounts of object stores) can fail at the removal with
/// the new manifest in place and `tmp` still there, and a `tmp` removed from outside before
/// the rename is gone with the old manifest still in force. Where the manifest cannot be
/// read, the error counts as after the rename: the caller then keeps the parts the new
/// manifest may name.
pub(crate) fn switch(
    sys: &Sys,
    dir: &Path,
    tmp: &Path,
    current: &Manifest,
) -> Result<(), SwitchError> {
    if let Err(e) = sys.rename(tmp, &dir.join(NAME)) {
        let not_renamed = matches!(load(dir), Ok(m) if m == *current);
        return Err(if not_renamed {
            SwitchError::BeforeRename(e)
        } else {
            SwitchError::AfterRename(e)
        });
    }
    sys.sync_dir(dir).map_err(SwitchError::AfterRename)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let m = Manifest {
            generation: 3,
            base: 17,
            snapshot: vec![18, 21],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(m));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Manifest::decode(&bad).is_err(), "byte {i}");
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    /// The bytes sit where the drawing above (and `docs/FORMAT.md`'s) puts them.
    #[test]
    fn the_encoding_is_laid_out_as_drawn() {
        let m = Manifest {
            generation: 3,
            base: 17,
            snapshot: vec![18, 21],
        };
        let bytes = m.encode();
        assert_eq!(bytes.len(), 36 + 8 * 2);
        assert_eq!(&bytes[0..8], b"LARDRMAN");
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        assert_eq!(bytes[12..20], 3u64.to_le_bytes());
        assert_eq!(bytes[20..28], 17u64.to_le_bytes());
        assert_eq!(bytes[28..32], 2u32.to_le_bytes());
        assert_eq!(bytes[32..40], 18u64.to_le_bytes());
        assert_eq!(bytes[40..48], 21u64.to_le_bytes());
        assert_eq!(bytes[48..52], crc32c::crc32c(&bytes[..48]).to_le_bytes());
    }

    /// A version past this one is a newer manifest, whatever follows it; damage to the version
    /// field alone of this version's manifest is damage, which its checksum shows.
    #[test]
    fn a_newer_version_is_told_from_a_damaged_version_field() {
        let bytes = Manifest {
            generation: 3,
            base: 17,
            snapshot: vec![18, 21],
        }
        .encode();
        assert_eq!(newer_version(&bytes), None, "this version");
        for flip in 0..32 {
            let mut damaged = bytes.clone();
            damaged[8 + flip / 8] ^= 1 << (flip % 8);
            assert_eq!(newer_version(&damaged), None, "bit {flip} of the version");
        }
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        let body = newer.len() - 4;
        let crc = crc32c::crc32c(&newer[..body]);
        newer[body..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(newer_version(&newer), Some(2), "checksummed as this layout");
        newer.extend_from_slice(b"a field this version does not know");
        assert_eq!(newer_version(&newer), Some(2), "another layout");
        newer[0] ^= 1;
        assert_eq!(newer_version(&newer), None, "not a manifest");
        assert_eq!(newer_version(&bytes[..11]), None, "too short to say");
    }

    #[test]
    fn a_generation_no_switch_can_follow_is_refused() {
        let last = Manifest {
            generation: u64::MAX,
            base: 17,
            snapshot: vec![18],
        };
        assert!(Manifest::decode(&last.encode()).is_err());
        let before = Manifest {
            generation: u64::MAX - 1,
            ..last
        };
        assert_eq!(Manifest::decode(&before.encode()), Ok(before));
    }
}
