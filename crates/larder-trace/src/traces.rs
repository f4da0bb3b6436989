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
//! `OLTP.lis.zst`, and `lirs/<name>` is `lirs/<name>.trace.gz`. The README's
//! reference hit ratios are here too, as [`PUBLISHED`].

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

/// The figures the traces README publishes for one trace: its size, and the
/// cache-aside hit ratios of exact LRU and of Bélády's OPT (admitting every
/// miss) at a few capacities, in percent to two decimals.
///
/// Any replay that claims to be exact must print these to the digit; the
/// tests of this crate and of `larder sim` check that it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The trace's name, for [`load`].
    pub trace: &'static str,
    /// The number of requests.
    pub requests: usize,
    /// The number of distinct keys.
    pub unique_keys: usize,
    /// `(capacity, LRU, OPT)`, the ratios as the README prints them.
    pub points: &'static [(usize, &'static str, &'static str)],
}

/// Every trace's published figures, OLTP first (see [`Published`]).
pub const PUBLISHED: &[Published] = &[
    Published {
        trace: "OLTP",
        requests: 914_145,
        unique_keys: 186_880,
        points: &[
            (256, "16.69", "38.72"),
            (512, "23.69", "46.67"),
            (1000, "32.83", "53.61"),
            (2000, "42.47", "60.40"),
        ],
    },
    Published {
        trace: "lirs/loop",
        requests: 505_500,
        unique_keys: 1_011,
        points: &[
            (256, "0.00", "25.22"),
            (512, "0.00", "50.54"),
            (768, "0.00", "75.81"),
            (1024, "99.80", "99.80"),
        ],
    },
    Published {
        trace: "lirs/multi1",
        requests: 15_858,
        unique_keys: 2_606,
        points: &[
            (256, "43.05", "52.63"),
            (512, "46.66", "59.09"),
            (1024, "48.24", "72.00"),
        ],
    },
    Published {
        trace: "lirs/multi2",
        requests: 26_311,
        unique_keys: 5_684,
        points: &[
            (256, "24.54", "46.96"),
            (512, "36.37", "53.83"),
            (1024, "47.87", "62.52"),
        ],
    },
    Published {
        trace: "lirs/multi3",
        requests: 30_241,
        unique_keys: 7_454,
        points: &[
            (256, "18.19", "42.38"),
            (512, "32.78", "49.08"),
            (1024, "38.35", "56.60"),
        ],
    },
    Published {
        trace: "lirs/sprite",
        requests: 133_996,
        unique_keys: 7_075,
        points: &[
            (256, "49.90", "75.06"),
            (512, "78.94", "88.20"),
            (1024, "90.73", "93.31"),
        ],
    },
    Published {
        trace: "lirs/2_pools",
        requests: 100_000,
        unique_keys: 9_939,
        points: &[
            (256, "42.18", "58.07"),
            (512, "51.22", "63.01"),
            (1024, "54.54", "68.73"),
        ],
    },
    Published {
        trace: "lirs/gli",
        requests: 6_015,
        unique_keys: 2_529,
        points: &[
            (256, "0.91", "18.04"),
            (512, "0.98", "35.06"),
            (1024, "11.21", "53.53"),
        ],
    },
    Published {
        trace: "lirs/zigzag",
        requests: 52_001,
        unique_keys: 2_001,
        points: &[
            (256, "12.26", "12.26"),
            (512, "24.57", "24.57"),
            (1024, "49.18", "49.18"),
        ],
    },
    Published {
        trace: "lirs/cs",
        requests: 6_781,
        unique_keys: 1_409,
        points: &[
            (128, "1.83", "9.38"),
            (256, "1.83", "16.93"),
            (512, "1.83", "32.03"),
        ],
    },
    Published {
        trace: "lirs/cpp",
        requests: 9_047,
        unique_keys: 1_223,
        points: &[
            (128, "76.61", "84.39"),
            (256, "83.08", "86.48"),
            (512, "84.81", "86.48"),
        ],
    },
    Published {
        trace: "lirs/ps",
        requests: 10_448,
        unique_keys: 3_083,
        points: &[
            (128, "12.19", "36.50"),
            (256, "13.06", "53.43"),
            (512, "48.55", "58.33"),
        ],
    },
    Published {
        trace: "lirs/scan",
        requests: 50_025,
        unique_keys: 2_001,
        points: &[
            (128, "0.00", "6.14"),
            (256, "0.00", "12.28"),
            (512, "0.00", "24.56"),
        ],
    },
];

/// The published figures for the trace called `name`, if the README has any.
///
/// ```
/// let oltp = larder_trace::traces::published("OLTP").unwrap();
/// assert_eq!((oltp.requests, oltp.points[0]), (914_145, (256, "16.69", "38.72")));
/// ```
pub fn published(name: &str) -> Option<&'static Published> {
    PUBLISHED.iter().find(|row| row.trace == name)
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
