//! An index the memory cannot be had for is refused, with expiry as without: `build` returns
//! an error for an initial capacity, and `reserve` does nothing. With expiry the index is the
//! table and the timer wheel sized from it (`expiry::wheel`), and the wheel's allocation
//! aborted the process when the table's had succeeded. The refusal is real: a child process
//! (this test binary run again) lowers its address-space limit to leave room for the table
//! and not for the wheel. A process of its own, because the limit would make every other
//! test's allocations in the process fail too.
#![cfg(all(target_os = "linux", not(miri)))]

use larder_core::Cache;
use larder_testkit::{address_space, child};
use std::time::Duration;

/// Set in the child's environment; the child tests do nothing without it.
const CHILD_VAR: &str = "LARDER_EXPIRY_INDEX_REFUSED_CHILD";

/// Entries the index is sized for: a table of 2^29 slots, 4.5 GiB of address space that is
/// never touched, whose wheel of 2^23 segments needs two more arrays of 64 MiB each. (Not
/// smaller: a thread's malloc arena holds up to 64 MiB the address space already counts, and
/// smaller arrays may come from it whatever the limit.)
const ENTRIES: usize = 1 << 28;
/// The table's bytes: a control byte and a pointer per slot.
const TABLE_BYTES: u64 = 9 * 2 * ENTRIES as u64;
/// Room beyond the table: for the small allocations of a build, not for a wheel's 64 MiB.
const SPARE_BYTES: u64 = 4 << 20;

fn builder(expiry: bool) -> larder_core::CacheBuilder<u64, u64> {
    let builder = Cache::builder()
        .max_capacity(ENTRIES as u64)
        .shards(1)
        .without_janitor();
    if expiry {
        builder.time_to_live(Duration::from_secs(60))
    } else {
        builder
    }
}

/// Runs the ignored test `name` of this binary as a child process (see `larder_testkit`).
fn run_child(name: &str) -> String {
    child::run(name, CHILD_VAR, &[])
}

/// The child's half of the build test below.
#[test]
#[ignore = "the child process of the test below"]
fn build_child() {
    if !child::is_child(CHILD_VAR) {
        return;
    }
    for expiry in [true, false] {
        // Forgotten, not dropped: a shard's drop walks its table, 2^29 slots. The child ends
        // soon after, and the table was never touched.
        let built = address_space::with_room(TABLE_BYTES + SPARE_BYTES, || {
            builder(expiry)
                .initial_capacity(ENTRIES)
                .build()
                .map(std::mem::forget)
        });
        match built {
            Ok(()) => println!("expiry {expiry}: built"),
            Err(e) => println!("expiry {expiry}: refused: {e}"),
        }
    }
    let cache = builder(true).build().unwrap();
    cache.insert(1, 1);
    println!("with the limit back: {:?}", cache.get(&1));
}

/// The table fits in the room and its wheel does not: without expiry the cache is built, and
/// with expiry the build is refused, as `initial_capacity` promises, instead of aborting.
#[test]
fn an_initial_capacity_whose_timer_wheel_cannot_be_allocated_is_a_build_error() {
    let stdout = run_child("build_child");
    assert!(stdout.contains("expiry false: built"), "{stdout}");
    assert!(
        stdout.contains("expiry true: refused: an index for an initial capacity of"),
        "{stdout}"
    );
    assert!(stdout.contains("with the limit back: Some(1)"), "{stdout}");
}

/// The child's half of the reserve test below.
#[test]
#[ignore = "the child process of the test below"]
fn reserve_child() {
    if !child::is_child(CHILD_VAR) {
        return;
    }
    for expiry in [true, false] {
        let cache = builder(expiry).build().unwrap();
        for k in 0..100 {
            cache.insert(k, k);
        }
        address_space::with_room(TABLE_BYTES + SPARE_BYTES, || cache.reserve(ENTRIES));
        if expiry {
            // Refused, so still small enough to walk.
            cache.validate().unwrap();
        }
        cache.insert(100, 100);
        println!(
            "expiry {expiry}: reserved, {} entries, {:?}",
            cache.len(),
            cache.get(&7)
        );
        // Not dropped: as in `build_child`.
        std::mem::forget(cache);
    }
}

/// `reserve` is a head start on growth and does nothing if the memory cannot be had: with
/// expiry too, where the table fitted and the wheel's allocation aborted the process.
#[test]
fn a_reserve_whose_timer_wheel_cannot_be_allocated_does_nothing() {
    let stdout = run_child("reserve_child");
    assert!(
        stdout.contains("expiry false: reserved, 101 entries, Some(7)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expiry true: reserved, 101 entries, Some(7)"),
        "{stdout}"
    );
}
