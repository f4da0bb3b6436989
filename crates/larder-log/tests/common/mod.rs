//! Helpers shared by the log's integration tests.

use std::path::{Path, PathBuf};

use larder_log::format::Op;
use larder_log::Log;

/// A fresh directory under the system's temporary directory, named for the test and this
/// process, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("larder-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Appends 200 puts of 96 bytes each (4-byte keys, 60-byte values): a few 4 KiB segments.
#[allow(dead_code)] // not every test binary uses every helper
pub fn put_200(log: &mut Log) {
    for i in 0..200u32 {
        log.append(Op::Put {
            key: &i.to_le_bytes(),
            value: &[1u8; 60],
            expires_at_ms: 0,
        })
        .unwrap();
    }
}

/// Flips a bit of byte `at` of segment `id` in `dir`: damage a checksum catches.
#[allow(dead_code)]
pub fn damage_segment(dir: &Path, id: u64, at: usize) {
    let path = dir.join(format!("{id:020}.seg"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
}
