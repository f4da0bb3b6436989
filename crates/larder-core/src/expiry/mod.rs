//! Expiry: entry lifetimes, the deadline arithmetic readers use, and removal notifications.
//!
//! A cache built with a time-to-live, a time-to-idle or per-entry lifetimes gives every entry
//! a *stamp*: an 8-byte word stored just before its node (`raw::node`), written once before
//! the node is published:
//!
//! ```text
//! stamp (u64):  | lifetime code: 22 bits | written: 42 bits |
//!                 bits 42..64              bits 0..42
//! written:   milliseconds since the clock's origin when the value was written (139 years)
//! lifetime:  how long after `written` the entry lives, as a 22-bit float: a 5-bit exponent e
//!            and a 17-bit mantissa m meaning m << e milliseconds. Lifetimes under 131 s are
//!            exact; longer ones are rounded *down* by at most 1/65,536 (55 ms of an hour), so
//!            an entry may expire that much early, never late. All ones means "never".
//! ```
//!
//! A cache with a time-to-idle adds a second word before the stamp, `touched`: the millisecond
//! of the last read or write. Readers raise it with one relaxed compare-and-swap, and only when
//! the clock has moved past it, so a hot entry's word is written at most once per millisecond.
//! A read that finds the entry idle past its deadline sets the word's top bit (`IDLE_OUT` in
//! `raw::node`) in the same way, which no later raise undoes: once one read has missed the
//! entry, none finds it again.
//!
//! The entry's deadline is the earlier of `written + lifetime` and `touched + time_to_idle`.
//! Readers compare it with the clock's horizon (`crate::time`) and report a miss once it has
//! passed, without removing anything or taking a lock. The janitor's work (finding and removing
//! what has expired) is the shard's timer wheel ([`wheel`]).

pub(crate) mod wheel;

use crate::raw::node::Node;
use crate::time::Clock;
use std::time::Duration;

/// Bits of the stamp that hold the write time.
const WRITTEN_BITS: u32 = 42;
pub(crate) const WRITTEN_MASK: u64 = (1 << WRITTEN_BITS) - 1;
const MANTISSA_BITS: u32 = 17;
const MANTISSA_MASK: u64 = (1 << MANTISSA_BITS) - 1;
/// The lifetime code meaning "no time-to-live".
const NEVER_CODE: u64 = (1 << (64 - WRITTEN_BITS)) - 1;

/// A deadline that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

/// The lifetime code for `ms` milliseconds, rounded down; `NEVER_CODE` for `None` or beyond
/// what the code can hold (about 4,400 years).
fn encode_lifetime(ms: Option<u64>) -> u64 {
    let Some(ms) = ms else { return NEVER_CODE };
    let exponent = (u64::BITS - ms.leading_zeros()).saturating_sub(MANTISSA_BITS);
    if exponent >= 31 {
        return NEVER_CODE;
    }
    (u64::from(exponent) << MANTISSA_BITS) | (ms >> exponent)
}

fn decode_lifetime(code: u64) -> Option<u64> {
    (code != NEVER_CODE).then(|| (code & MANTISSA_MASK) << (code >> MANTISSA_BITS))
}

/// The lifetime a stamp keeps for `ms` milliseconds: `ms` rounded down as the code rounds it,
/// `None` (never) beyond what the code can hold.
pub(crate) fn kept_lifetime(ms: u64) -> Option<u64> {
    decode_lifetime(encode_lifetime(Some(ms)))
}

/// The shortest lifetime a stamp keeps that is `ms` milliseconds or longer: `ms` itself under
/// 131 s, else `ms` rounded *up* to the code's next step (by less than 1/65,536 of it); `None`
/// (never) beyond what the code can hold.
pub(crate) fn kept_lifetime_at_least(ms: u64) -> Option<u64> {
    let down = kept_lifetime(ms)?;
    if down == ms {
        return Some(ms);
    }
    // `down` is `ms` with the bits below its exponent's unit cleared: one unit more is the next
    // lifetime the code holds (past the top mantissa, the first of the next exponent). Far
    // below `u64::MAX`: the code holds no lifetime of 2^48 ms.
    let unit = 1u64 << (u64::BITS - ms.leading_zeros()).saturating_sub(MANTISSA_BITS);
    kept_lifetime(down + unit)
}

/// Packs a stamp: written at `written_ms`, living `lifetime_ms` (`None`: no time-to-live).
pub(crate) fn stamp(written_ms: u64, lifetime_ms: Option<u64>) -> u64 {
    (encode_lifetime(lifetime_ms) << WRITTEN_BITS) | written_ms.min(WRITTEN_MASK)
}

/// When the entry of `stamp` was written.
pub(crate) fn written_ms(stamp: u64) -> u64 {
    stamp & WRITTEN_MASK
}

/// When the entry of `stamp` reaches its time-to-live ([`NEVER`] if it has none).
pub(crate) fn ttl_deadline(stamp: u64) -> u64 {
    match decode_lifetime(stamp >> WRITTEN_BITS) {
        Some(lifetime) => written_ms(stamp).saturating_add(lifetime),
        None => NEVER,
    }
}

/// Milliseconds in `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A cache's expiry settings and clock.
#[derive(Clone, Debug)]
pub(crate) struct Expiry {
    pub(crate) clock: Clock,
    /// The cache-wide time-to-live, for entries inserted without one of their own.
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) tti_ms: Option<u64>,
}

impl Expiry {
    /// The prefix of a node written now with `lifetime` (the cache's time-to-live if `None`).
    pub(crate) fn prefix_for(&self, now_ms: u64, lifetime_ms: Option<Option<u64>>) -> Prefix {
        Prefix {
            stamp: stamp(now_ms, lifetime_ms.unwrap_or(self.ttl_ms)),
            touched: self.tti_ms.map(|_| now_ms),
        }
    }

    /// When `node` expires, as of now ([`NEVER`] if it does not).
    ///
    /// # Safety
    /// As for [`Node::stamp`]: `node` is live, and a pointer with its block's provenance.
    pub(crate) unsafe fn deadline<K, V>(&self, node: *const Node<K, V>) -> u64 {
        // SAFETY: the caller's contract.
        let Some(stamp) = (unsafe { Node::stamp(node) }) else {
            return NEVER;
        };
        let ttl = ttl_deadline(stamp);
        let Some(tti) = self.tti_ms else {
            return ttl;
        };
        // SAFETY: the caller's contract.
        match unsafe { Node::touched(node) } {
            Some(touched) => ttl.min(touched.saturating_add(tti)),
            None => ttl,
        }
    }

    /// Whether `node` is live at `horizon`, the latest the true time may be (`crate::time`),
    /// and, with `access` (a read that counts as one, at that millisecond), its access recorded
    /// for the time-to-idle. Every verdict on an entry's life goes through here, the readers'
    /// and the shard's: with a time-to-idle, one that finds the entry idle out is final
    /// ([`Node::settle_idle`]), so no read racing it can bring the entry back.
    ///
    /// # Safety
    /// As for [`deadline`](Self::deadline).
    #[inline(always)]
    pub(crate) unsafe fn is_live<K, V>(
        &self,
        node: *const Node<K, V>,
        horizon: u64,
        access: Option<u64>,
    ) -> bool {
        // SAFETY: the caller's contract.
        let Some(stamp) = (unsafe { Node::stamp(node) }) else {
            return true;
        };
        if ttl_deadline(stamp) <= horizon {
            return false;
        }
        match self.tti_ms {
            // SAFETY: the caller's contract.
            Some(tti) => unsafe { Node::settle_idle(node, tti, horizon, access) },
            None => true,
        }
    }
}

/// The words a node with expiry carries before it (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prefix {
    pub(crate) stamp: u64,
    /// `Some` exactly when the cache has a time-to-idle.
    pub(crate) touched: Option<u64>,
}

/// Why an entry left the cache, as told to an eviction listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Its time-to-live or time-to-idle passed.
    Expired,
    /// The eviction policy chose it to make room.
    Size,
    /// An insert gave its key a new value. (A load never replaces a live value: it loads only
    /// a key that is absent, or whose entry expired, which is reported as `Expired`.)
    ///
    /// Also heard when the insert's new value was refused as too heavy for its shard: the key
    /// then holds nothing, because keeping the older value would let a read return a value
    /// older than the caller's last write. That refusal counts in
    /// [`CacheStats::rejections`](crate::CacheStats::rejections), not as an update, eviction
    /// or removal.
    Replaced,
    /// `remove`, `invalidate` or `clear`.
    Explicit,
}

impl RemovalCause {
    /// Whether the cache chose the removal (expiry or eviction) rather than a caller.
    pub fn was_evicted(self) -> bool {
        matches!(self, RemovalCause::Expired | RemovalCause::Size)
    }
}

/// [`Cache::insert_with_ttl`](crate::Cache::insert_with_ttl) on a cache built without expiry:
/// the entry, handed back unstored.
pub struct ExpiryDisabled<K, V> {
    pub key: K,
    pub value: V,
}

impl<K, V> std::fmt::Debug for ExpiryDisabled<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiryDisabled").finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Display for ExpiryDisabled<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "insert_with_ttl needs a cache built with time_to_live, time_to_idle or \
             per_entry_ttl; the entry was not stored",
        )
    }
}

impl<K, V> std::error::Error for ExpiryDisabled<K, V> {}

/// A cache's eviction listener, with the key cloning it needs bound in (the builder requires
/// `K: Clone` only when a listener is set).
pub(crate) type Listener<K, V> = std::sync::Arc<dyn Fn(&K, V, RemovalCause) + Send + Sync>;

/// A cache's removal observer (see `CacheBuilder::removal_observer`).
pub(crate) type Observer<K> = std::sync::Arc<dyn Fn(&K, RemovalCause) + Send + Sync>;

/// Who hears of the entries that leave a cache: the removal observers (the key and why), newest
/// first, and the eviction listener (the key, a clone of the value, and why), in that order
/// (`shard::Locked::tell`). A value is cloned only for a listener.
pub(crate) struct Notify<K, V> {
    /// In the order they were set (`CacheBuilder::removal_observer`), and told in reverse.
    pub(crate) observers: std::sync::Arc<[Observer<K>]>,
    pub(crate) listener: Option<Listener<K, V>>,
    /// `V::clone`, for the listener's copy: kept here because the notices are told from a
    /// destructor (`shard::Locked`'s), whose type cannot require `V: Clone`.
    pub(crate) clone_value: fn(&V) -> V,
}

impl<K, V: Clone> Notify<K, V> {
    /// `None` when nobody listens, so that writes need not collect notices at all.
    pub(crate) fn new(
        observers: Vec<Observer<K>>,
        listener: Option<Listener<K, V>>,
    ) -> Option<Self> {
        (!observers.is_empty() || listener.is_some()).then(|| Notify {
            observers: observers.into(),
            listener,
            clone_value: V::clone,
        })
    }
}

impl<K, V> Clone for Notify<K, V> {
    fn clone(&self) -> Self {
        Notify {
            observers: std::sync::Arc::clone(&self.observers),
            listener: self.listener.clone(),
            clone_value: self.clone_value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lifetimes_are_exact_and_long_ones_round_down_by_little() {
        for ms in [0u64, 1, 999, 2000, 131_071] {
            assert_eq!(decode_lifetime(encode_lifetime(Some(ms))), Some(ms), "{ms}");
        }
        for ms in [131_072u64, 3_600_000, 86_400_000, 30 * 86_400_000, 1 << 45] {
            let back = decode_lifetime(encode_lifetime(Some(ms))).unwrap();
            assert!(back <= ms && ms - back <= ms >> 16, "{ms} -> {back}");
        }
        assert_eq!(decode_lifetime(encode_lifetime(None)), None);
        assert_eq!(decode_lifetime(encode_lifetime(Some(u64::MAX))), None);
    }

    #[test]
    fn the_shortest_kept_lifetime_at_least_a_length_is_that_length_or_a_step_more() {
        for ms in [0u64, 1, 131_071] {
            assert_eq!(kept_lifetime_at_least(ms), Some(ms), "exact: {ms}");
        }
        let steps = [
            131_072u64,
            131_073,
            262_143,
            262_144,
            3_600_031,
            86_398_327,
            1 << 45,
        ];
        for ms in steps
            .into_iter()
            .chain((0..40).map(|i| (1 << 17) + i * 7_919_777))
        {
            let up = kept_lifetime_at_least(ms).unwrap();
            assert_eq!(
                kept_lifetime(up),
                Some(up),
                "{ms} -> {up}: not a lifetime kept"
            );
            assert!(up >= ms && up - ms < ms >> 16, "{ms} -> {up}");
            // No lifetime the code holds lies between: the one below `up` is under `ms`.
            assert!(kept_lifetime(up - 1).unwrap() < ms, "{ms} -> {up}");
        }
        // A lifetime at the top of a mantissa steps to the next exponent.
        assert_eq!(kept_lifetime_at_least((1 << 18) - 1), Some(1 << 18));
        assert_eq!(kept_lifetime_at_least(u64::MAX), None);
        // The top mantissa at the top exponent: the code's longest lifetime.
        let longest = MANTISSA_MASK << 30;
        assert_eq!(kept_lifetime(longest), Some(longest));
        assert_eq!(kept_lifetime_at_least(longest), Some(longest));
        assert_eq!(
            kept_lifetime_at_least(longest + 1),
            None,
            "beyond the code: never"
        );
    }

    #[test]
    fn a_stamp_keeps_its_write_time_and_deadline() {
        let s = stamp(123_456, Some(2000));
        assert_eq!(written_ms(s), 123_456);
        assert_eq!(ttl_deadline(s), 125_456);
        assert_eq!(ttl_deadline(stamp(5, None)), NEVER);
    }
}
