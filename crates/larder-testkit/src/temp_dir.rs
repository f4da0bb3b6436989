//! A scratch directory for a test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh path under the system's temporary directory, named for the test, this process and a
/// count of the paths it made, removed (with whatever the test put there) on drop; the
/// directory itself is not created. The count keeps two tests that pick the same name (they
/// run at once, on threads of one process) out of each other's way: they shared a directory,
/// and each read the other's log.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A path for the test `name`, with nothing at it.
    pub fn new(name: &str) -> TempDir {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        // Relaxed: only the count's uniqueness matters.
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("larder-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the files of `from` into `to`, made if need be: what a crash at this moment leaves
/// of a log's directory, as the page cache holds it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("make the copy's directory");
    for entry in std::fs::read_dir(from).expect("list the directory to copy") {
        let path = entry.expect("list the directory to copy").path();
        std::fs::copy(&path, to.join(path.file_name().expect("a file name")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
    }
}
