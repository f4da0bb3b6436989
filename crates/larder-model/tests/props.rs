//! Property tests: both checkers over generated operation sequences.
//!
//! `PROPTEST_CASES=10000 cargo test -p larder-model --release --test props`
//! runs longer. A failure found here or by the fuzzer becomes a plain test in
//! `regressions` below (proptest's own failure files are turned off for that
//! reason): paste the config and operations from the failure message.

use larder_model::{
    check_bounded, check_expiring, check_unbounded, Config, Input, Op, PolicyKind, KEY_SPACE,
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
