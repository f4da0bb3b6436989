//! When the operating system will not start the janitor's thread, `build` says so and nothing
//! is left half-registered. The refusal is real, not simulated: a child process (this test
//! binary run again) lowers its own address-space limit so that no new thread stack fits,
//! builds an expiring cache, then restores the limit and builds again. A process of its own,
//! because the limit would make every other test's allocations in the process fail too.
#![cfg(target_os = "linux")]

mod common;

use common::{durable_cache, files, TempDir};
use larder::durable::Error;
use larder::{Cache, Durability, Janitor};
use larder_testkit::{address_space, child};
use std::path::Path;
use std::time::Duration;

/// Set in the child's environment; the child test does nothing without it.
const CHILD_VAR: &str = "LARDER_JANITOR_REFUSED_CHILD";

/// The directory the durable child opens, set in its environment.
const DIR_VAR: &str = "LARDER_JANITOR_REFUSED_DIR";

fn build(janitor: &Janitor) -> Result<Cache<u64, u64>, larder::BuildError> {
    Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .janitor(janitor.clone())
        .build()
}

/// Runs the ignored test `name` of this binary as a child process (see `larder_testkit`).
fn run_child(name: &str) -> String {
    child::run(name, CHILD_VAR, &[])
}

/// [`run_child`], with `dir` in the child's environment.
fn run_child_in(name: &str, dir: &Path) -> String {
    child::run(name, CHILD_VAR, &[(DIR_VAR, dir.as_os_str())])
}

/// Room for small allocations from the heap the process already has, not for the 2 MiB stack
/// of a new thread.
const NO_ROOM_FOR_A_THREAD: u64 = 512 << 10;

/// The child's half: run only as a child of the test below, which passes `--ignored`.
#[test]
#[ignore = "the child process of the test below"]
fn refused_child() {
    if !child::is_child(CHILD_VAR) {
        return;
    }
    let janitor = Janitor::dedicated(Duration::from_millis(10));
    let refused = address_space::with_room(NO_ROOM_FOR_A_THREAD, || build(&janitor));
    match refused {
        Ok(_) => println!("built anyway"),
        Err(e) => println!("refused: {e}"),
    }
    println!("running after the refusal: {}", janitor.is_running());
    let cache = build(&janitor).expect("the limit is back, so the thread starts");
    cache.insert(1, 1);
    println!("running after the retry: {}", janitor.is_running());
}

#[test]
fn a_janitor_thread_the_system_refuses_is_a_build_error_and_a_later_build_starts_it() {
    let stdout = run_child("refused_child");
    assert!(
        stdout.contains("refused: the janitor's thread could not be started:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("running after the refusal: false"),
        "{stdout}"
    );
    assert!(stdout.contains("running after the retry: true"), "{stdout}");
}

/// The child's half of the memoization test below.
#[test]
#[ignore = "the child process of the test below"]
fn memoized_child() {
    if !child::is_child(CHILD_VAR) {
        return;
    }
    #[larder::memoize(ttl = "1h")]
    fn square(n: u64) -> u64 {
        n * n
    }
    // The first call builds the cache, which starts the shared janitor's thread: refused.
    let first = address_space::with_room(NO_ROOM_FOR_A_THREAD, || {
        std::panic::catch_unwind(|| square(12))
    });
    println!("first call: {:?}", first.as_ref().ok());
    println!("second call: {}", square(12));
    println!("hits: {}", square_cache().stats().hits);
}

/// A memoized function with a `ttl` is called like any function, so a janitor thread the
/// system refuses must not make its first call panic: its cache is built without a janitor,
/// and it memoizes still.
#[test]
fn a_memoized_function_works_when_the_janitor_thread_is_refused() {
    let stdout = run_child("memoized_child");
    assert!(stdout.contains("first call: Some(144)"), "{stdout}");
    assert!(stdout.contains("second call: 144"), "{stdout}");
    assert!(stdout.contains("hits: 1"), "{stdout}");
}

/// The child's half of the durable test below: opens the directory with a smaller capacity, so
/// that the load evicts, while no thread can start for the `Interval` janitor.
#[test]
#[ignore = "the child process of the test below"]
fn durable_child() {
    let (true, Some(dir)) = (child::is_child(CHILD_VAR), std::env::var_os(DIR_VAR)) else {
        return;
    };
    let refused = address_space::with_room(NO_ROOM_FOR_A_THREAD, || {
        durable_cache(
            Path::new(&dir),
            2,
            Durability::Interval(Duration::from_millis(10)),
        )
    });
    match refused {
        Ok(_) => println!("built anyway"),
        Err(e @ Error::Janitor(_)) => println!("refused for its janitor: {e}"),
        Err(e) => println!("refused otherwise: {e}"),
    }
}

/// A durable open refused because its janitor's thread cannot start changes nothing in the
/// directory, as `DurableBuilder::build` promises. It recorded the deletes of what its load
/// evicted first, so a retry with the capacity the entries were written with got back 2 of 10.
#[test]
fn a_durable_open_whose_janitor_is_refused_leaves_the_log_as_it_was() {
    let tmp = TempDir::new("janitor-refused-durable");
    let cache = durable_cache(&tmp.0, 10, Durability::Manual).unwrap();
    for k in 0..10 {
        cache.insert(k, k.to_string()).unwrap();
    }
    cache.close().unwrap();
    let before = files(&tmp.0);
    let stdout = run_child_in("durable_child", &tmp.0);
    assert!(
        stdout.contains("refused for its janitor: durable cache: the janitor's thread"),
        "{stdout}"
    );
    assert!(files(&tmp.0) == before, "the refused open changed the log");
    let reopened = durable_cache(&tmp.0, 10, Durability::Manual).unwrap();
    assert_eq!(reopened.len(), 10);
}
