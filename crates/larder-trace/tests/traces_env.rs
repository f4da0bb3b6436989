//! `LARDER_TRACES` overrides where traces are found.
//!
//! This is its own test binary, with a single test, because it changes the
//! process environment, which other tests running in parallel would see.

use std::io::Write;

use larder_trace::read::TraceError;
use larder_trace::traces::{load, traces_dir, TRACES_ENV};

#[test]
fn the_environment_variable_points_load_elsewhere() {
    let dir = std::env::temp_dir().join(format!("larder-trace-env-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("lirs")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"5\n*\n6\n5\n").unwrap();
    std::fs::write(dir.join("lirs").join("tiny.trace.gz"), gz.finish().unwrap()).unwrap();

    std::env::set_var(TRACES_ENV, &dir);
    assert_eq!(traces_dir(), dir);
    assert_eq!(load("lirs/tiny").unwrap(), [5, 6, 5]);
    match load("OLTP") {
        Err(TraceError::Io { path, .. }) => assert_eq!(path, dir.join("OLTP.lis.zst")),
        other => panic!("expected an I/O error for the missing file, got {other:?}"),
    }

    // An empty value is ignored: the search falls back to the workspace.
    std::env::set_var(TRACES_ENV, "");
    assert_ne!(traces_dir(), dir);
    std::fs::remove_dir_all(&dir).unwrap();
}
