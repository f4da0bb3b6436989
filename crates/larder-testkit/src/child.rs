//! A test binary running one of its own tests again, as a child process.
//!
//! The parent test calls [`run`] with the name of an `#[ignore]`d test; the child test starts
//! with `if !child::is_child(VAR) { return; }`, so that it does nothing when the ignored tests
//! are run on purpose (`cargo test -- --ignored`), and prints what the parent checks.

use std::ffi::OsStr;
use std::process::Command;

/// Whether this process is a child started by [`run`] with `var`.
pub fn is_child(var: &str) -> bool {
    std::env::var_os(var).is_some()
}

/// Runs the ignored test `name` of this test binary alone in a child process, with `var` (the
/// test's own marker, see [`is_child`]) and `env` set in its environment; panics unless it
/// passed, and returns what it printed.
pub fn run(name: &str, var: &str, env: &[(&str, &OsStr)]) -> String {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"));
    child
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var, "1");
    for (key, value) in env {
        child.env(key, value);
    }
    let out = child.output().expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {name} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
