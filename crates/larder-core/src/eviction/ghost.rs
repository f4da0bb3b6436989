//! Ghost queues: the fingerprints of keys recently evicted, without their keys or values.
//!
//! S3-FIFO keeps two, one for entries evicted from its small queue and one for entries evicted
//! from main. A miss on a key one of them remembers says which queue gave it up too early, and
//! the small queue's target size moves accordingly (ARC's use of ghost hits to balance recency
//! against frequency: Megiddo and Modha, USENIX FAST 2003).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Fingerprints oldest first, with a multiset over them for O(1) membership. About 14 bytes
/// per remembered key (4 in the ring, a map slot for the count); no key is kept.
#[derive(Default)]
pub(crate) struct Ghost {
    ring: VecDeque<u32>,
    counts: HashMap<u32, u32, BuildHasherDefault<FingerprintHasher>>,
}

impl Ghost {
    /// Remembers `fingerprint`, forgetting the oldest ones so that at most `max_len` remain.
    pub(crate) fn remember(&mut self, fingerprint: u32, max_len: usize) {
        while self.ring.len() >= max_len.max(1) {
            match self.ring.pop_front() {
                Some(old) => self.forget_one(old),
                None => break,
            }
        }
        self.ring.push_back(fingerprint);
        *self.counts.entry(fingerprint).or_insert(0) += 1;
    }

    fn forget_one(&mut self, fingerprint: u32) {
        if let Some(c) = self.counts.get_mut(&fingerprint) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&fingerprint);
            }
        }
    }

    /// Whether `fingerprint` is remembered. It stays until it ages out of the ring.
    pub(crate) fn contains(&self, fingerprint: u32) -> bool {
        self.counts.contains_key(&fingerprint)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ring.len()
    }

    pub(crate) fn validate(&self, name: &str) -> Result<(), String> {
        let total: u64 = self.counts.values().map(|&c| u64::from(c)).sum();
        if total != self.ring.len() as u64 {
            return Err(format!(
                "{name} ghost: ring holds {} fingerprints, counts say {total}",
                self.ring.len()
            ));
        }
        Ok(())
    }
}

/// The identity hasher for fingerprints, which are already hash bits.
#[derive(Default)]
pub(crate) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        // Spread the fingerprint over 64 bits so the map's control bytes (top bits) vary too.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_its_length() {
        let mut g = Ghost::default();
        for fp in 0..10 {
            g.remember(fp, 4);
        }
        assert_eq!(g.len(), 4);
        assert!(!g.contains(5));
        assert!((6..10).all(|fp| g.contains(fp)));
        g.validate("test").unwrap();
    }

    #[test]
    fn a_repeated_fingerprint_stays_until_its_last_copy_ages_out() {
        let mut g = Ghost::default();
        g.remember(1, 3);
        g.remember(1, 3);
        g.remember(2, 3);
        g.remember(3, 3); // drops the first 1
        assert!(g.contains(1));
        g.remember(4, 3); // drops the second 1
        assert!(!g.contains(1));
        g.validate("test").unwrap();
    }
}
