//! A fast hasher for the `u64` keys of the reference simulators.
//!
//! std's SipHash resists hash flooding, which a simulator reading trusted
//! trace files does not need, and it is the slowest part of an unoptimised
//! (test-profile) replay. Keys here go through the SplitMix64 finaliser
//! (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
//! OOPSLA 2014): two xor-shift-multiply rounds that make every input bit flip
//! about half the output bits, so sequential keys, common in traces, spread
//! over the whole table.

use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by trace keys.
pub(crate) type KeyMap<V> = std::collections::HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// The number of distinct keys in `keys`.
pub(crate) fn distinct_keys(keys: &[u64]) -> usize {
    let mut seen = std::collections::HashSet::<u64, BuildHasherDefault<KeyHasher>>::default();
    seen.extend(keys);
    seen.len()
}

/// Hashes one `u64` with the SplitMix64 finaliser (other input is folded in
/// eight bytes at a time, so the hasher is correct for any key type).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyHasher {
    state: u64,
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let mut z = (self.state ^ value).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.state = z ^ (z >> 31);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_keys_spread_over_the_high_and_low_bits() {
        let build = BuildHasherDefault::<KeyHasher>::default();
        let mut low = [0u32; 16];
        let mut high = [0u32; 16];
        for key in 0..16_000u64 {
            let hash = build.hash_one(key);
            low[(hash & 15) as usize] += 1;
            high[(hash >> 60) as usize] += 1;
        }
        for bucket in low.iter().chain(&high) {
            assert!((800..1200).contains(bucket), "{low:?} {high:?}");
        }
    }

    #[test]
    fn a_map_of_keys_works() {
        let mut map = KeyMap::default();
        for key in 0..1000u64 {
            map.insert(key * 7, key);
        }
        assert_eq!(map.get(&693), Some(&99));
        assert_eq!(map.len(), 1000);
    }

    #[test]
    fn distinct_keys_are_counted_once() {
        assert_eq!(distinct_keys(&[]), 0);
        assert_eq!(distinct_keys(&[5, 1, 5, 5, u64::MAX, 1]), 3);
    }
}
