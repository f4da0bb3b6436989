//! Finding the shared trace files.
//!
//! The traces live outside the repository, in `shared/traces` next to the
//! workspace root (`<workspace>/../shared/traces`), and are read in place; they
//! are never copied into the project. [`traces_dir`] finds that directory:
//!
//! 1. If the environment variable [`TRACES_ENV`] (`LARDER_TRACES`) is set and
//!    not empty, it is the directory.
//! 2. Otherwise the workspace root is searched for, starting from this crate's
//!    source directory (fixed at compile time, so it works for any binary or
//!    test built from this workspace), then from the current directory: the
//!    nearest ancestor whose `Cargo.toml` declares `[workspace]` is the root,
//!    and the answer is `<root>/../shared/traces`.
//! 3. Failing both, `../shared/traces` relative to the current directory.
//!
//! The result is not checked for existence: [`load`] reports a missing file as
//! a [`TraceError::Io`] that names the path it tried.
//!
//! Trace names are the ones the traces README uses: `OLTP` is
//! `OLTP.lis.zst`, and `lirs/<name>` is `lirs/<name>.trace.gz`.

use std::path::{Path, PathBuf};

use crate::read::{read_trace, TraceError};

/// The environment variable that overrides where the traces are found.
pub const TRACES_ENV: &str = "LARDER_TRACES";

/// The LIRS traces that ship in `lirs/`, as names for [`load`] without the
/// `lirs/` prefix.
pub const LIRS_TRACES: &[&str] = &[
    "2_pools", "cpp", "cs", "gli", "loop", "multi1", "multi2", "multi3", "ps", "scan", "sprite",
    "zigzag",
];

/// The directory holding the shared traces (see the module docs for the search
/// order).
pub fn traces_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TRACES_ENV).filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let starts = [
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        std::env::current_dir().ok(),
    ];
    starts
        .iter()
        .flatten()
        .find_map(|start| workspace_root(start))
        .map(|root| root.join("..").join("shared").join("traces"))
        .unwrap_or_else(|| Path::new("..").join("shared").join("traces"))
}

/// The nearest ancestor of `start` (itself included) whose `Cargo.toml`
/// declares a `[workspace]` table.
fn workspace_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        manifest
            .lines()
            .any(|line| line.trim() == "[workspace]")
            .then(|| dir.to_owned())
    })
}

/// The file that holds the trace called `name`, inside [`traces_dir`].
///
/// ```
/// use larder_trace::traces::{trace_path, traces_dir};
/// assert_eq!(trace_path("OLTP").unwrap(), traces_dir().join("OLTP.lis.zst"));
/// assert_eq!(
///     trace_path("lirs/sprite").unwrap(),
///     traces_dir().join("lirs").join("sprite.trace.gz"),
/// );
/// assert!(trace_path("lirs/../secret").is_err());
/// ```
///
/// # Errors
///
/// [`TraceError::UnknownTrace`] unless `name` is `OLTP` or `lirs/<name>`, where
/// `<name>` is a plain file-name stem (letters, digits, `_` and `-`).
pub fn trace_path(name: &str) -> Result<PathBuf, TraceError> {
    let unknown = || TraceError::UnknownTrace {
        name: name.to_owned(),
    };
    if name == "OLTP" {
        return Ok(traces_dir().join("OLTP.lis.zst"));
    }
    let stem = name.strip_prefix("lirs/").ok_or_else(unknown)?;
    let plain_stem = !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain_stem {
        return Err(unknown());
    }
    Ok(traces_dir().join("lirs").join(format!("{stem}.trace.gz")))
}

/// Loads the trace called `name` (`OLTP` or `lirs/<name>`) as its key sequence.
///
/// ```no_run
/// let keys = larder_trace::traces::load("lirs/loop")?;
/// assert_eq!(keys.len(), 505_500);
/// # Ok::<(), larder_trace::read::TraceError>(())
/// ```
///
/// # Errors
///
/// As [`trace_path`] and [`read_trace`].
pub fn load(name: &str) -> Result<Vec<u64>, TraceError> {
    read_trace(trace_path(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_is_found_from_this_crate() {
        let root = workspace_root(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("crates/larder-trace"));
    }

    #[test]
    fn unknown_names_are_refused() {
        for name in [
            "",
            "oltp",
            "lirs/",
            "lirs/a/b",
            "lirs/..",
            "ARC/OLTP",
            "lirs/x.gz",
        ] {
            assert!(
                matches!(trace_path(name), Err(TraceError::UnknownTrace { .. })),
                "{name:?} must be refused"
            );
        }
    }

    #[test]
    fn every_lirs_trace_in_the_list_is_a_valid_name() {
        for name in LIRS_TRACES {
            trace_path(&format!("lirs/{name}")).unwrap();
        }
    }
}
