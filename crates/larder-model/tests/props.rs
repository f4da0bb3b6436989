//! Property tests: the checkers over generated operation sequences, and the
//! durable checks over generated sequences with reboots.
//!
//! `PROPTEST_CASES=10000 cargo test -p larder-model --release --test props`
//! runs longer. A failure found here or by the fuzzer becomes a plain test in
//! `regressions` below (proptest's own failure files are turned off for that
//! reason): paste the config and operations from the failure message.

use larder_model::concurrent::{ThreadOp, MAX_THREADS};
use larder_model::{
    check_bounded, check_concurrent, check_concurrent_expiring, check_durable_bounded,
    check_durable_unbounded, check_expiring, check_unbounded, ConcurrentInput, Config,
    DurabilityKind, DurableConfig, DurableInput, DurableOp, Input, Op, PolicyKind, ValueCodec,
    DURABLE_KEY_SPACE, DURABLE_MAX_CAPACITY, DURABLE_MAX_SHARDS, DURABLE_MIN_CAPACITY, KEY_SPACE,
    MAX_CAPACITY, MAX_SHARDS,
};
use proptest::prelude::*;

/// Sequences long enough to fill, evict and clear a cache several times over.
const MAX_OPS: usize = 300;

fn op() -> impl Strategy<Value = Op> {
    let key = || 0..KEY_SPACE;
    // Small values read well in a failure, and still give every weight.
    let value = || 0..1000u32;
    prop_oneof![
        4 => (key(), value()).prop_map(|(key, value)| Op::Insert(key, value)),
        3 => key().prop_map(Op::Get),
        1 => key().prop_map(Op::Peek),
        1 => key().prop_map(Op::ContainsKey),
        1 => key().prop_map(Op::Remove),
        1 => key().prop_map(Op::Invalidate),
        2 => (key(), value()).prop_map(|(key, value)| Op::GetWith(key, value)),
        2 => (key(), prop::result::maybe_ok(value(), Just(())))
            .prop_map(|(key, result)| Op::TryGetWith(key, result)),
        // Rare, or nothing would live long enough to be evicted.
        1 => Just(Op::Clear),
        2 => (key(), value(), 0..60u8).prop_map(|(key, value, ttl)| Op::InsertWithTtl(key, value, ttl)),
        2 => (0..12u8).prop_map(Op::Advance),
        1 => Just(Op::RunPendingTasks),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..MAX_OPS)
}

fn config() -> impl Strategy<Value = Config> {
    let policy = prop_oneof![Just(PolicyKind::S3Fifo), Just(PolicyKind::Lru)];
    (1..=MAX_CAPACITY, policy, 1..=MAX_SHARDS, any::<bool>()).prop_map(
        |(capacity, policy, shards, weighted)| Config {
            capacity,
            policy,
            shards,
            weighted,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn unbounded_cache_matches_hash_map(ops in ops()) {
        check_unbounded(&ops).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bounded_cache_keeps_invariants(config in config(), ops in ops()) {
        check_bounded(config, &ops).map_err(TestCaseError::fail)?;
    }

    /// The fuzz target's decoding, so its path is covered without nightly.
    #[test]
    fn expiring_cache_hears_every_removal_once(config in config(), ops in ops()) {
        check_expiring(config, &ops).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn fuzz_input_passes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let input = Input::decode(&bytes).expect("decoding never fails");
        input.check().map_err(TestCaseError::fail)?;
    }
}

/// Per thread: long enough for the threads to overlap (spawning one takes tens of
/// microseconds), few enough keys that they collide.
const MAX_THREAD_OPS: usize = 2000;

/// Keys the threads share: half the space, so that they meet on the same keys often, and
/// half the generated capacities are too small to hold them all.
const THREAD_KEYS: u8 = KEY_SPACE / 2;

fn thread_op() -> impl Strategy<Value = ThreadOp> {
    let key = || 0..THREAD_KEYS;
    let bits = || 0..4u8;
    prop_oneof![
        20 => (key(), bits()).prop_map(|(key, bits)| ThreadOp::Insert(key, bits)),
        16 => key().prop_map(ThreadOp::Get),
        2 => key().prop_map(ThreadOp::Peek),
        2 => key().prop_map(ThreadOp::ContainsKey),
        3 => key().prop_map(ThreadOp::Remove),
        2 => key().prop_map(ThreadOp::Invalidate),
        8 => (key(), bits()).prop_map(|(key, bits)| ThreadOp::GetWith(key, bits)),
        4 => (key(), prop::result::maybe_ok(bits(), Just(())))
            .prop_map(|(key, result)| ThreadOp::TryGetWith(key, result)),
        2 => Just(ThreadOp::Iter),
        2 => Just(ThreadOp::Sizes),
        // Nothing without expiry; with it, a few such steps outlive an entry.
        2 => (0..8u8).prop_map(ThreadOp::Advance),
        1 => Just(ThreadOp::RunPendingTasks),
        // Rare, or nothing would live long enough to be evicted.
        1 => Just(ThreadOp::Clear),
    ]
}

proptest! {
    // Each case starts threads and runs thousands of operations: fewer cases keep the time
    // down, unless `PROPTEST_CASES` asks for a number.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").map_or(64, |_| ProptestConfig::default().cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Two or three threads at once on one small cache; the fuzz target `concurrent_ops`
    /// runs the same check for longer.
    #[test]
    fn concurrent_threads_see_a_linearizable_cache(
        config in config(),
        threads in prop::collection::vec(
            prop::collection::vec(thread_op(), 0..MAX_THREAD_OPS),
            2..=MAX_THREADS,
        ),
    ) {
        check_concurrent(config, &threads).map_err(TestCaseError::fail)?;
    }

    /// The same on a cache with a time-to-live on a mock clock the threads move.
    #[test]
    fn concurrent_threads_never_read_past_a_lifetime(
        config in config(),
        threads in prop::collection::vec(
            prop::collection::vec(thread_op(), 0..MAX_THREAD_OPS),
            2..=MAX_THREADS,
        ),
    ) {
        check_concurrent_expiring(config, &threads).map_err(TestCaseError::fail)?;
    }

    /// The concurrent fuzz target's decoding, so its path is covered without nightly.
    #[test]
    fn concurrent_fuzz_input_passes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let input = ConcurrentInput::decode(&bytes).expect("decoding never fails");
        input.check().map_err(TestCaseError::fail)?;
    }
}

/// Long enough to fill the small cache several times over and reboot it a few times; short
/// enough that a case, with its reboots, takes a few milliseconds.
const MAX_DURABLE_OPS: usize = 120;

fn durable_op() -> impl Strategy<Value = DurableOp> {
    let key = || 0..DURABLE_KEY_SPACE;
    prop_oneof![
        6 => (key(), any::<u16>()).prop_map(|(key, value)| DurableOp::Insert(key, value)),
        3 => key().prop_map(DurableOp::Get),
        1 => key().prop_map(DurableOp::Peek),
        1 => key().prop_map(DurableOp::ContainsKey),
        2 => key().prop_map(DurableOp::Remove),
        1 => key().prop_map(DurableOp::Invalidate),
        // Rare, or the cache would seldom fill up.
        1 => Just(DurableOp::Clear),
        1 => Just(DurableOp::Sync),
        1 => Just(DurableOp::Compact),
        1 => any::<bool>().prop_map(|close| DurableOp::Reboot { close }),
        // The clock moves by amounts as long as the lifetimes `durable_config` gives.
        2 => (0..=40u8).prop_map(DurableOp::Advance),
        1 => Just(DurableOp::RunPendingTasks),
        1 => (0..=40u8, prop::option::of(1..=40u8))
            .prop_map(|(down, ttl)| DurableOp::Restart { down, ttl }),
    ]
}

fn durable_config() -> impl Strategy<Value = DurableConfig> {
    let policy = prop_oneof![Just(PolicyKind::S3Fifo), Just(PolicyKind::Lru)];
    let durability = prop_oneof![
        3 => Just(DurabilityKind::Manual),
        1 => Just(DurabilityKind::Always),
    ];
    let codec = prop_oneof![Just(ValueCodec::Postcard), Just(ValueCodec::RawBytes)];
    // Lifetimes as long as the clock's moves (`durable_op`): some run out within a few
    // operations, or while the cache is closed, and some outlive a case.
    let time_to_live = prop::option::of(1..=40u8);
    (
        DURABLE_MIN_CAPACITY..=DURABLE_MAX_CAPACITY,
        policy,
        1..=DURABLE_MAX_SHARDS,
        durability,
        codec,
        time_to_live,
        any::<bool>(),
    )
        .prop_map(
            |(capacity, policy, shards, durability, codec, time_to_live, weighted)| DurableConfig {
                capacity,
                policy,
                shards,
                durability,
                codec,
                time_to_live,
                weighted,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Each case opens caches on disk (under /dev/shm where there is one) and reopens them at
    /// every reboot; the fuzz target `durable_model` runs the same checks for longer.
    #[test]
    fn durable_cache_matches_a_model_across_reboots(
        config in durable_config(),
        ops in prop::collection::vec(durable_op(), 0..MAX_DURABLE_OPS),
    ) {
        DurableInput { config, ops }.check().map_err(TestCaseError::fail)?;
    }
}

proptest! {
    // Longer sequences than the strategy above makes: fewer cases keep the time down.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The durable fuzz target's decoding, so its path is covered without nightly.
    #[test]
    fn durable_fuzz_input_passes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let input = DurableInput::decode(&bytes).expect("decoding never fails");
        input.check().map_err(TestCaseError::fail)?;
    }
}

/// Failures found by proptest or the fuzzer, and edge cases worth pinning.
mod regressions {
    use super::*;
    use Op::*;
    use PolicyKind::*;

    fn both(config: Config, ops: &[Op]) {
        if let Err(error) = check_unbounded(ops) {
            panic!("{error}");
        }
        if let Err(error) = check_bounded(config, ops) {
            panic!("{error}");
        }
    }

    #[test]
    fn fill_past_capacity_then_read_back() {
        for policy in [S3Fifo, Lru] {
            let config = Config {
                capacity: 3,
                policy,
                shards: 1,
                weighted: false,
            };
            let ops: Vec<Op> = (0..10)
                .flat_map(|key| [Insert(key, key.into()), Get(key)])
                .collect();
            both(config, &ops);
        }
    }

    #[test]
    fn weighted_entries_too_heavy_for_a_shard_are_rejected() {
        for policy in [S3Fifo, Lru] {
            // Shards of 1: every value of weight 2 or more is rejected.
            let config = Config {
                capacity: 4,
                policy,
                shards: 4,
                weighted: true,
            };
            both(
                config,
                &[
                    Insert(1, 0),
                    Insert(1, 3),
                    Get(1),
                    GetWith(2, 3),
                    Get(2),
                    Insert(3, 1),
                    Peek(3),
                ],
            );
        }
    }

    #[test]
    fn more_shards_than_capacity_is_refused() {
        for policy in [S3Fifo, Lru] {
            let config = Config {
                capacity: 3,
                policy,
                shards: 4,
                weighted: false,
            };
            assert!(config.build().is_err());
            both(config, &[Insert(1, 1), Get(1)]);
        }
    }

    #[test]
    fn failed_loads_are_not_cached() {
        for policy in [S3Fifo, Lru] {
            let config = Config {
                capacity: 2,
                policy,
                shards: 1,
                weighted: false,
            };
            both(
                config,
                &[
                    TryGetWith(1, Err(())),
                    Get(1),
                    TryGetWith(1, Ok(5)),
                    TryGetWith(1, Err(())),
                    Get(1),
                ],
            );
        }
    }
}

/// Durable runs found failing by proptest or the fuzzer, and edge cases worth pinning. The
/// `Debug` form of a failing config and its operations pastes in as it is.
mod durable_regressions {
    use super::*;
    use DurabilityKind::*;
    use DurableOp::*;
    use PolicyKind::*;
    use ValueCodec::*;

    fn both(config: DurableConfig, ops: &[DurableOp]) {
        if let Err(error) = check_durable_unbounded(config, ops) {
            panic!("{error}");
        }
        if let Err(error) = check_durable_bounded(config, ops) {
            panic!("{error}");
        }
    }

    #[test]
    fn evicted_entries_stay_gone_across_reboots() {
        for policy in [S3Fifo, Lru] {
            let config = DurableConfig {
                capacity: 4,
                policy,
                shards: 1,
                durability: Manual,
                codec: Postcard,
                time_to_live: None,
                weighted: false,
            };
            let mut ops: Vec<DurableOp> = (0..12).map(|key| Insert(key, key as u16)).collect();
            ops.extend([
                Reboot { close: false },
                Insert(0, 7),
                Remove(11),
                Reboot { close: true },
                Get(0),
                Get(11),
            ]);
            both(config, &ops);
        }
    }

    #[test]
    fn values_larger_than_a_segment_come_back() {
        for (durability, codec) in [(Manual, Postcard), (Always, RawBytes)] {
            let config = DurableConfig {
                capacity: 8,
                policy: S3Fifo,
                shards: 2,
                durability,
                codec,
                time_to_live: None,
                weighted: false,
            };
            both(
                config,
                &[
                    Insert(1, 3),
                    Insert(2, 0xF0FF),
                    Insert(3, 0xFFFF),
                    Insert(2, 5),
                    Reboot { close: false },
                    Get(2),
                    Get(3),
                    Remove(3),
                    Clear,
                    Insert(4, 0xF000),
                    Sync,
                    Reboot { close: true },
                    Get(4),
                ],
            );
        }
    }

    /// A weighted cache of capacity 4, in one shard or in two of 2 each (values `0x0000` weigh
    /// 0, `0x01xx` and `0x02xx` 1, `0x03xx` 2, `0x04xx` 3, `0x05xx` 5, `0x07xx` 17): entries of
    /// weight 0 pile up past the capacity and are never evicted; an entry heavier than the whole
    /// capacity, or than its shard's share, is refused and takes the key's older value with it;
    /// entries evicted to make room by weight stay gone across reboots, which fit the shares
    /// to what they load; and what the refused and evicted entries' deletes leave comes back
    /// whole, with room for every key and at the capacity.
    #[test]
    fn weights_refuse_and_evict_and_the_log_records_it() {
        for (policy, shards, durability) in [(S3Fifo, 1, Manual), (Lru, 2, Always)] {
            let config = DurableConfig {
                capacity: 4,
                policy,
                shards,
                durability,
                codec: Postcard,
                time_to_live: None,
                weighted: true,
            };
            let mut ops: Vec<DurableOp> = (0..6).map(|key| Insert(key, key as u16)).collect();
            ops.extend([
                Insert(10, 0x0101),
                Insert(11, 0x0302),
                Insert(10, 0x0700),
                Get(10),
                Insert(12, 0x0403),
                Insert(13, 0x0504),
                Get(13),
                Reboot { close: false },
                Get(10),
                Get(13),
                Insert(14, 0x0305),
                Insert(15, 0x0206),
                Insert(16, 0x0307),
                Insert(17, 0xF308),
                Reboot { close: true },
                Insert(14, 0x0700),
                Insert(18, 0x0409),
                Remove(3),
                Reboot { close: false },
                Clear,
                Insert(19, 0x030A),
                Reboot { close: true },
            ]);
            both(config, &ops);
        }
    }

    /// Expiry across reboots: a deadline the mock clock passed before a reboot stays passed
    /// (the close records the delete), a survivor lives what its record's deadline leaves,
    /// capped by the reopened cache's time-to-live, and a cache without expiry keeps it for
    /// good until one with expiry gives it a lifetime again.
    #[test]
    fn deadlines_hold_across_reboots_and_changes_of_the_time_to_live() {
        for (policy, durability) in [(S3Fifo, Manual), (Lru, Always)] {
            let config = DurableConfig {
                capacity: 4,
                policy,
                shards: 2,
                durability,
                codec: Postcard,
                time_to_live: Some(200),
                weighted: false,
            };
            both(
                config,
                &[
                    Insert(1, 1),
                    Advance(100),
                    Insert(2, 2),
                    Advance(99),
                    Get(1),
                    Advance(1),
                    Get(1),
                    Peek(2),
                    Reboot { close: false },
                    Get(1),
                    ContainsKey(2),
                    Advance(150),
                    Get(2),
                    Restart {
                        down: 0,
                        ttl: Some(255),
                    },
                    Get(2),
                    Restart { down: 0, ttl: None },
                    Advance(255),
                    Get(2),
                    Restart {
                        down: 0,
                        ttl: Some(10),
                    },
                    Advance(9),
                    Get(2),
                    Advance(1),
                    Get(2),
                    RunPendingTasks,
                    Reboot { close: true },
                    Get(2),
                ],
            );
        }
    }

    /// A compaction keeps a record a millisecond before its deadline (helper-74: one that also
    /// dropped what was due within the next millisecond passed the default property run).
    #[test]
    fn a_compaction_keeps_a_record_a_millisecond_from_its_deadline() {
        let config = DurableConfig {
            capacity: 4,
            policy: S3Fifo,
            shards: 1,
            durability: Manual,
            codec: Postcard,
            time_to_live: Some(2),
            weighted: false,
        };
        both(
            config,
            &[
                Insert(1, 1),
                Advance(1),
                Compact,
                Reboot { close: false },
                Get(1),
            ],
        );
    }

    /// Records whose deadlines pass while the cache is closed stay gone, whether the close
    /// or nothing recorded their deletes, and those still live come back with what is left.
    #[test]
    fn records_that_expire_while_the_cache_is_closed_stay_gone() {
        for codec in [Postcard, RawBytes] {
            let config = DurableConfig {
                capacity: 8,
                policy: S3Fifo,
                shards: 1,
                durability: Manual,
                codec,
                time_to_live: Some(50),
                weighted: false,
            };
            both(
                config,
                &[
                    Insert(1, 1),
                    Advance(30),
                    Insert(2, 2),
                    Restart {
                        down: 30,
                        ttl: Some(50),
                    },
                    Get(1),
                    Get(2),
                    Reboot { close: false },
                    Advance(19),
                    Get(2),
                    Restart {
                        down: 1,
                        ttl: Some(50),
                    },
                    Get(2),
                    Compact,
                    Reboot { close: true },
                ],
            );
        }
    }
}
