//! A large initial capacity reserves the index without touching it: the memory is used as the
//! cache fills. (Zeroing the index by hand touched every page at build, so a capacity an
//! overcommitting kernel granted got the process killed for memory it had not used yet.) A
//! test binary of its own, so no other test's allocations move the process's resident size.
#![cfg(all(target_os = "linux", not(miri)))]

use larder_core::Cache;
use larder_testkit::address_space::resident_bytes;

#[test]
fn a_large_initial_capacity_is_not_touched_until_used() {
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
