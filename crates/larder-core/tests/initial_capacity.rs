//! A large initial capacity reserves the index without touching it: the memory is used as the
//! cache fills. (Zeroing the index by hand touched every page at build, so a capacity an
//! overcommitting kernel granted got the process killed for memory it had not used yet.) A
//! test binary of its own, its tests one at a time, so no other test's allocations move the
//! process's resident size.
#![cfg(all(target_os = "linux", not(miri)))]

use larder_core::Cache;
use larder_testkit::address_space::resident_bytes;
use std::time::Duration;

/// Keeps the tests of this binary from running at once: each measures the process's resident
/// size, which the other's allocations would move.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_large_initial_capacity_is_not_touched_until_used() {
    let _alone = alone();
    let entries: u64 = 1 << 24;
    let before = resident_bytes();
    // 2^25 slots: a 256 MiB array of pointers and 32 MiB of control bytes.
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(entries)
        .shards(1)
        .initial_capacity(entries as usize)
        .build()
        .unwrap();
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "building the cache made {} MiB resident",
        grown >> 20
    );
    for k in 0..1000 {
        cache.insert(k, k);
    }
    assert_eq!(cache.get(&999), Some(999));
    cache.validate().unwrap();
}

/// With expiry the index is the table and the timer wheel sized from it, a sixteen-byte place
/// per 64 slots: the wheel too is used as it is scheduled, not when it is made (filled by
/// hand, it made 8 MiB resident here at build, a thirty-sixth of the table's size: an initial
/// capacity whose table an overcommitting kernel granted, over many shards, could get the
/// process killed at build). Nor does a reserve touch the larger wheel it builds.
#[test]
fn a_large_initial_capacity_with_expiry_is_not_touched_until_used() {
    let _alone = alone();
    let entries: u64 = 1 << 24;
    let build = || {
        Cache::<u64, u64>::builder()
            .max_capacity(entries << 1)
            .shards(1)
            .time_to_live(Duration::from_secs(60))
            .without_janitor()
    };
    // Under half the wheel's 8 MiB; the build without expiry above made 224 KiB resident.
    let most = 4 << 20;
    let before = resident_bytes();
    let cache = build().initial_capacity(entries as usize).build().unwrap();
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < most, "building made {} KiB resident", grown >> 10);
    for k in 0..1000 {
        cache.insert(k, k);
    }
    assert_eq!(cache.get(&999), Some(999));
    cache.validate().unwrap();
    drop(cache);

    // A few entries: each is copied to a page of its own in each array.
    let cache = build().build().unwrap();
    for k in 0..16 {
        cache.insert(k, k);
    }
    let before = resident_bytes();
    cache.reserve(entries as usize);
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < most, "reserving made {} KiB resident", grown >> 10);
    assert_eq!(cache.get(&15), Some(15));
    cache.validate().unwrap();
}
