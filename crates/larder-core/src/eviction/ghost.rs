//! Ghost queues: the fingerprints of keys recently evicted, without their keys or values.
//!
//! S3-FIFO keeps two, one for entries evicted from its small queue and one for entries evicted
//! from main. A miss on a key one of them remembers says which queue gave it up too early, and
//! the small queue's target size moves accordingly (ARC's use of ghost hits to balance recency
//! against frequency: Megiddo and Modha, USENIX FAST 2003).

/// A direct-mapped table of fingerprints: a fingerprint lives in the one slot its bits pick
/// until a later one lands there. With at least as many slots as the ghost is asked to
/// remember, a fingerprint survives about as many later evictions as there are slots, so the
/// table behaves like a FIFO of that length whose oldest entries fade out gradually instead of
/// all at once.
///
/// Four bytes a slot and no per-key bookkeeping: remembering is one store and checking one
/// load. A FIFO ring with a counting map (the first design) cost about 14 bytes per remembered
/// key and about a tenth of an insert's time, for the same replayed hit ratios to within
/// 0.01 point. A false "yes" needs two keys with the same 24-bit fingerprint; it only nudges
/// the small queue's size.
#[derive(Default)]
pub(crate) struct Ghost {
    /// `fingerprint | PRESENT`, or 0 for an empty slot. A power of two long, or empty.
    slots: Box<[u32]>,
}

/// Marks a used slot: fingerprints have 24 bits, so bit 31 is free and a used slot is never 0.
const PRESENT: u32 = 1 << 31;

impl Ghost {
    /// Remembers `fingerprint` in a table of at least `len` slots (it grows to the next power
    /// of two when asked for more, starting empty; it never shrinks).
    pub(crate) fn remember(&mut self, fingerprint: u32, len: usize) {
        let want = len.max(1).next_power_of_two();
        if self.slots.len() < want {
            self.slots = vec![0; want].into_boxed_slice();
        }
        let i = self.slot(fingerprint);
        self.slots[i] = fingerprint | PRESENT;
    }

    /// Whether `fingerprint` is remembered.
    pub(crate) fn contains(&self, fingerprint: u32) -> bool {
        !self.slots.is_empty() && self.slots[self.slot(fingerprint)] == fingerprint | PRESENT
    }

    /// The slot of `fingerprint`: its bits mixed by a multiply, so neighbouring fingerprints
    /// spread out. Only called with a non-empty table.
    fn slot(&self, fingerprint: u32) -> usize {
        (fingerprint.wrapping_mul(0x9E37_79B9) >> 7) as usize & (self.slots.len() - 1)
    }

    /// Checks that the table is empty or a power of two long, and that every used slot holds a
    /// 24-bit fingerprint that belongs there (`contains` would not find it elsewhere).
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.slots.is_empty() && !self.slots.len().is_power_of_two() {
            return Err(format!(
                "ghost: {} slots, not a power of two",
                self.slots.len()
            ));
        }
        for (i, &slot) in self.slots.iter().enumerate() {
            let fingerprint = slot & !PRESENT;
            if slot != 0
                && (slot & PRESENT == 0 || fingerprint >> 24 != 0 || self.slot(fingerprint) != i)
            {
                return Err(format!(
                    "ghost: slot {i} holds {slot:#x}, which belongs elsewhere"
                ));
            }
        }
        Ok(())
    }

    #[cfg(all(test, not(miri)))]
    fn remembered(&self) -> usize {
        self.slots.iter().filter(|&&s| s != 0).count()
    }
}

// Safe code only, so not run under miri (why: `.ci/run`, the miri step).
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_overwritten() {
        let mut g = Ghost::default();
        assert!(!g.contains(5), "an empty ghost knows nothing");
        g.remember(5, 64);
        assert!(g.contains(5));
        assert!(!g.contains(6));
        // Fill the table many times over: 5 is overwritten sooner or later.
        for fp in 1000..2000 {
            g.remember(fp, 64);
        }
        assert!(!g.contains(5));
        assert_eq!(
            g.remembered(),
            64,
            "every slot in use, none beyond the table"
        );
    }

    #[test]
    fn recent_fingerprints_mostly_survive() {
        let mut g = Ghost::default();
        for fp in 0..10_000u32 {
            g.remember(fp, 1024);
        }
        // The last 256 of 10,000 land in a 1024-slot table: a few collide with each other.
        let kept = (10_000 - 256..10_000).filter(|&fp| g.contains(fp)).count();
        assert!(kept >= 200, "{kept} of the last 256 remembered");
        let old = (0..1_000).filter(|&fp| g.contains(fp)).count();
        assert!(old <= 10, "{old} of the first 1,000 still remembered");
    }

    #[test]
    fn validate_finds_a_fingerprint_out_of_its_slot() {
        let mut g = Ghost::default();
        for fp in 0..100 {
            g.remember(fp, 64);
        }
        assert_eq!(g.validate(), Ok(()));
        let used = g.slots.iter().position(|&s| s != 0).unwrap();
        let elsewhere = (used + 1) % g.slots.len();
        g.slots[elsewhere] = g.slots[used];
        assert!(g.validate().unwrap_err().contains("belongs elsewhere"));
    }

    #[test]
    fn grows_when_asked_for_more() {
        let mut g = Ghost::default();
        g.remember(1, 4);
        assert_eq!(g.slots.len(), 4);
        g.remember(2, 5);
        assert_eq!(g.slots.len(), 8);
        assert!(g.contains(2));
        g.remember(3, 2);
        assert_eq!(g.slots.len(), 8, "never shrinks");
    }
}
