//! S3-FIFO with a frequency-sketch admission filter and an adaptive small queue.
//!
//! The base is S3-FIFO (Yang, Zhang, Qiu, Yue, Vinayak: *FIFO queues are all you need for
//! cache eviction*, SOSP 2023): two FIFO queues and a small saturating access counter (`freq`,
//! 0..=3) per entry, which is all a read ever changes.
//!
//! * **small** takes every new entry. At its head, an entry that was read while it waited
//!   (`freq >= 1`) moves to main. One that was not is a one-hit wonder so far: S3-FIFO drops
//!   it, and most keys seen once leave after a short stay without disturbing main.
//! * **main** holds the entries that proved themselves. At its head, an entry with `freq > 0`
//!   goes round again with `freq - 1`; the first with `freq == 0` is main's victim.
//!
//! Plain S3-FIFO loses to LRU-with-admission caches on two kinds of workload, which the LIRS
//! traces show (`docs/BENCHMARKS.md` has the figures):
//!
//! * **Loops and scans longer than the cache** (`loop`, `gli`): no key is read twice while in
//!   small, so nothing reaches main and almost every request misses. Two changes fix this.
//!   While main's share of the capacity (all but small's target) has room for it, small's
//!   head moves to main even unread (a cache that is not full has no reason to throw
//!   anything away); with weights, a head that would take main past its share does not, or
//!   main would give up its read entries for it. Once main is full, an unread head still
//!   gets a chance: it **duels** main's victim, and takes its place if a frequency sketch
//!   ([`Sketch`], TinyLFU's count-min sketch) says the candidate was seen more often than the
//!   victim. Ties keep the victim, which is what holds a loop's working set in place instead
//!   of cycling it.
//! * **Mixed workloads whose best small-queue size differs** (`multi*`, `sprite`, OLTP):
//!   a fixed 10% small queue is too big for some and too small for others. The small queue
//!   starts at 1% and adapts between 1% and 20% of the capacity: two [`Ghost`] queues remember
//!   the fingerprints of recent victims of small and of main, and a miss on a key that small
//!   gave up grows small by that entry's weight, one that main gave up shrinks it (ARC's
//!   balancing rule, from Megiddo and Modha, FAST 2003).
//!
//! The sketch counts every insertion (each is a miss) of an entry that weighs something (the
//! policy never sees one of weight 0, see `eviction`), and an entry's hits reach it when main
//! spends them: each time main's hand lowers an entry's `freq`, the sketch records one
//! occurrence. Reads therefore still write nothing but the entry's own `freq` bits. The
//! candidate's estimate includes the insertion that just brought it in, so it wins only if it
//! exceeds the victim's by more than one: it must have been seen more often than the victim
//! *before* this miss.
//!
//! Every measurement that chose these rules and constants was a replay of the traces in
//! `../shared/traces` plus two Zipf streams (`cargo run --release -p larder-benches --bin
//! hitratio`); ARCHITECTURE.md lists the alternatives that lost.

use super::ghost::Ghost;
use super::sketch::Sketch;
use super::{has_evictable, turn_hand};
use crate::raw::list::List;
use crate::raw::node::{fingerprint_of, Node};

/// Small's target, as a fraction of the capacity: its least, where it starts.
const SMALL_MIN_DIVISOR: u64 = 100;
/// Small's target: its most.
const SMALL_MAX_DIVISOR: u64 = 5;
/// Each ghost remembers `1 / GHOST_DIVISOR` of the resident entry count. While choosing it,
/// divisors from 4 to 32 moved the replays' 27-point average by less than 0.1 point.
const GHOST_DIVISOR: usize = 32;
/// How much more often than the victim a candidate must have been seen, counting the
/// candidate's own insertion, to take the victim's place.
const ADMISSION_MARGIN: u32 = 1;

pub(crate) struct S3Fifo<K, V> {
    small: List<K, V>,
    main: List<K, V>,
    /// The shard's capacity (weight).
    capacity: u64,
    /// Weight above which the small queue gives up its head; adapts within the bounds below.
    small_target: u64,
    small_min: u64,
    small_max: u64,
    sketch: Sketch,
    /// Fingerprints of entries small evicted.
    small_ghost: Ghost,
    /// Fingerprints of entries main evicted.
    main_ghost: Ghost,
}

impl<K, V> S3Fifo<K, V> {
    pub(crate) fn new(capacity: u64) -> Self {
        let mut s = S3Fifo {
            small: List::new(),
            main: List::new(),
            capacity: 0,
            // Raised to small's least by `resize`: where the target starts.
            small_target: 0,
            small_min: 0,
            small_max: 0,
            sketch: Sketch::new(),
            small_ghost: Ghost::default(),
            main_ghost: Ghost::default(),
        };
        s.resize(capacity);
        s
    }

    /// Gives the shard's policy another capacity: small's bounds follow it, and its target
    /// stays what it was learned to be, within them. The queues, ghosts and sketch are kept,
    /// so a shard whose share moves (`Locked::refit_share`) keeps what it knows.
    pub(crate) fn resize(&mut self, capacity: u64) {
        self.capacity = capacity;
        self.small_min = (capacity / SMALL_MIN_DIVISOR).max(1);
        self.small_max = (capacity / SMALL_MAX_DIVISOR).max(self.small_min);
        self.small_target = self.small_target.clamp(self.small_min, self.small_max);
    }

    fn resident(&self) -> usize {
        self.small.len() + self.main.len()
    }

    /// Queues a new entry in small, records it in the sketch, and lets a ghost hit move small's
    /// target.
    ///
    /// # Safety
    /// `node` is a ready node of this shard, in no queue, that weighs something and whose key
    /// hashes to `hash`.
    pub(crate) unsafe fn admit(&mut self, node: *mut Node<K, V>, hash: u64) {
        // SAFETY: the caller's contract.
        let n = unsafe { &*node };
        let fingerprint = fingerprint_of(hash);
        self.sketch.ensure(self.resident() + 1);
        self.sketch.record(fingerprint);
        // SAFETY: the caller's contract: this shard's lock is held (only writers admit).
        let weight = u64::from(unsafe { n.weight() });
        if self.small_ghost.contains(fingerprint) {
            self.small_target = (self.small_target + weight).min(self.small_max);
        } else if self.main_ghost.contains(fingerprint) {
            self.small_target = self.small_target.saturating_sub(weight).max(self.small_min);
        }
        // SAFETY: the caller's contract.
        unsafe { self.enter(node) };
    }

    /// Queues `node` at small's tail, where a new entry waits: `admit`'s last step, and the
    /// whole of what an entry that gains weight by a replacement does (`Eviction::replace`),
    /// keeping the reads its counter holds.
    ///
    /// # Safety
    /// `node` is a ready node of this shard, in no queue, that weighs something.
    pub(crate) unsafe fn enter(&mut self, node: *mut Node<K, V>) {
        // SAFETY: the caller's contract.
        unsafe {
            (*node).set_in_main(false);
            self.small.push_back(node);
        }
    }

    /// `new` takes `old`'s place in whichever queue holds `old` (`Eviction::replace` has
    /// already copied `freq`).
    ///
    /// # Safety
    /// `old` is queued here; `new` is a ready node of this shard in no queue that weighs
    /// something.
    pub(crate) unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        // SAFETY: the caller's contract: both are live nodes of this shard.
        let (o, n) = unsafe { (&*old, &*new) };
        n.set_in_main(o.in_main());
        let list = if o.in_main() {
            &mut self.main
        } else {
            &mut self.small
        };
        // SAFETY: `old` is in the queue its MAIN bit names.
        unsafe { list.replace(old, new) };
    }

    /// Takes `node` out of its queue.
    ///
    /// # Safety
    /// `node` is queued here.
    pub(crate) unsafe fn remove(&mut self, node: *mut Node<K, V>) {
        // SAFETY: the caller's contract; the MAIN bit names the node's queue.
        unsafe {
            if (*node).in_main() {
                self.main.unlink(node);
            } else {
                self.small.unlink(node);
            }
        }
    }

    /// Moves `node`, just taken from small, to main's tail with a fresh counter; the hits the
    /// old counter held go to the sketch.
    fn promote(&mut self, node: *mut Node<K, V>) {
        // SAFETY: `node` was just popped from small: a live node of this shard in no queue.
        let n = unsafe { &*node };
        self.sketch.record_n(n.fingerprint(), n.freq());
        n.set_freq(0);
        n.set_in_main(true);
        // SAFETY: as above.
        unsafe { self.main.push_back(node) };
    }

    /// Turns main's hand until its head is an evictable entry with `freq == 0` (or until its
    /// bound, see `turn_hand`), and returns that head (still queued). Each lowered `freq` is a
    /// hit the sketch now records. The caller has checked that main holds an evictable entry.
    fn main_victim(&mut self, protect: *mut Node<K, V>) -> *mut Node<K, V> {
        let sketch = &mut self.sketch;
        turn_hand(&mut self.main, protect, |n| sketch.record(n.fingerprint()))
    }

    /// Chooses and dequeues a victim, never `protect` (the queues hold no entry of weight 0);
    /// `None` if nothing evictable is queued.
    ///
    /// # Safety
    /// `protect` is queued here, or weighs nothing (it is then among `Eviction`'s entries of
    /// weight 0, in neither queue, and spares nothing in either).
    pub(crate) unsafe fn evict(&mut self, protect: *mut Node<K, V>) -> Option<*mut Node<K, V>> {
        // What `protect` weighs in each queue. It never moves between them here: small's loop
        // below puts it back where it was.
        // SAFETY: the caller's contract: a live node of this shard, whose lock is held.
        let (weight, in_main) = unsafe { (u64::from((*protect).weight()), (*protect).in_main()) };
        let (small_spared, main_spared) = if in_main { (0, weight) } else { (weight, 0) };
        loop {
            let main_has_evictable = has_evictable(&self.main, main_spared);
            let from_small = has_evictable(&self.small, small_spared)
                && (self.small.weight() > self.small_target || !main_has_evictable);
            if from_small {
                let node = self.small.pop_front()?;
                // SAFETY: a node just taken from a queue is a live node of this shard.
                let n = unsafe { &*node };
                if node == protect {
                    // SAFETY: `node` just left this queue.
                    unsafe { self.small.push_back(node) };
                    continue;
                }
                // SAFETY: `node` is a live node of this shard, whose lock is held.
                let weight = u64::from(unsafe { n.weight() });
                // Read while in small, or with room in main's share (all but small's target)
                // for it: on to main. An unread head that does not fit stays out: let in
                // past main's share, it left small no room, and main gave up its read entries
                // for each next one-time entry heavier than small's target. (At weight 1 this
                // is `main + target < capacity`, so unweighted caches, and the replays that
                // measured them, choose as they did.)
                let in_share = (self.main.weight())
                    .saturating_add(weight)
                    .saturating_add(self.small_target)
                    <= self.capacity;
                if n.freq() >= 1 || in_share {
                    self.promote(node);
                    continue;
                }
                // A candidate seen no more than the margin cannot beat any victim (estimates
                // are never negative), so main's hand need not turn to find one.
                let candidate = self.sketch.estimate(n.fingerprint());
                if main_has_evictable && candidate > ADMISSION_MARGIN {
                    let victim = self.main_victim(protect);
                    // SAFETY: `victim` is a live node of this shard, queued in main.
                    let v = unsafe { &*victim };
                    if candidate > self.sketch.estimate(v.fingerprint()) + ADMISSION_MARGIN {
                        let _ = self.main.pop_front();
                        self.main_ghost.remember(v.fingerprint(), self.ghost_len());
                        self.promote(node);
                        return Some(victim);
                    }
                }
                self.small_ghost.remember(n.fingerprint(), self.ghost_len());
                return Some(node);
            } else if main_has_evictable {
                let victim = self.main_victim(protect);
                let _ = self.main.pop_front();
                // SAFETY: `victim` was main's head, a live node of this shard.
                let fingerprint = unsafe { (*victim).fingerprint() };
                self.main_ghost.remember(fingerprint, self.ghost_len());
                return Some(victim);
            } else {
                return None;
            }
        }
    }

    fn ghost_len(&self) -> usize {
        (self.resident() + 1) / GHOST_DIVISOR
    }

    /// Empties both queues, handing each node to `f`. The ghosts and the sketch start over.
    pub(crate) fn drain(&mut self, f: &mut impl FnMut(*mut Node<K, V>)) {
        self.small.drain(&mut *f);
        self.main.drain(&mut *f);
        *self = Self::new(self.capacity);
    }

    /// Checks both queues and the ghosts; `each` sees every queued node.
    pub(crate) fn validate(&self, mut each: impl FnMut(*mut Node<K, V>)) -> Result<(), String> {
        let mut misplaced = 0;
        self.small.validate(|n| {
            // SAFETY: queued nodes are live while the lock is held.
            misplaced += usize::from(unsafe { (*n).in_main() });
            each(n);
        })?;
        self.main.validate(|n| {
            // SAFETY: as above.
            misplaced += usize::from(!unsafe { (*n).in_main() });
            each(n);
        })?;
        if misplaced != 0 {
            return Err(format!("s3fifo: {misplaced} nodes in the wrong queue"));
        }
        self.small_ghost.validate()?;
        self.main_ghost.validate()?;
        if !(self.small_min..=self.small_max).contains(&self.small_target) {
            return Err(format!(
                "s3fifo: small target {} outside {}..={}",
                self.small_target, self.small_min, self.small_max
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::node::free_node;

    fn empty(mut s: S3Fifo<u64, u64>) {
        // SAFETY: every node was made by the test, no other thread has seen it, and draining
        // takes each out of its queue once.
        s.drain(&mut |node| unsafe { free_node(node) });
    }

    /// A miss on a key that small gave up (a hit in small's ghost) grows small's target by
    /// the entry's weight, up to its most; one on a key main gave up shrinks it.
    #[test]
    fn a_ghost_hit_moves_the_small_target_its_way() {
        let mut s = S3Fifo::<u64, u64>::new(1000);
        assert_eq!((s.small_min, s.small_target, s.small_max), (10, 10, 200));
        let (small_hash, main_hash) = (0x1234_5678_9abc_def0u64, 0x0fed_cba9_8765_4321u64);
        s.small_ghost.remember(fingerprint_of(small_hash), 8);
        s.main_ghost.remember(fingerprint_of(main_hash), 8);
        assert!(!s.main_ghost.contains(fingerprint_of(small_hash)));
        assert!(!s.small_ghost.contains(fingerprint_of(main_hash)));
        let back_from_small = Node::new_ready(1, 1, small_hash, 5, 0, None);
        // SAFETY: a new ready node, in no queue, whose key hashes to `small_hash`.
        unsafe { s.admit(back_from_small, small_hash) };
        assert_eq!(
            s.small_target, 15,
            "small gave it up too early: small grows"
        );
        let back_from_main = Node::new_ready(2, 2, main_hash, 3, 0, None);
        // SAFETY: as above.
        unsafe { s.admit(back_from_main, main_hash) };
        assert_eq!(
            s.small_target, 12,
            "main gave it up too early: small shrinks"
        );
        s.validate(|_| {}).unwrap();
        empty(s);
    }

    /// A new capacity moves small's bounds, and its target stays within them: a shard whose
    /// share grows (`Locked::refit_share`) raises a target left below its new least.
    #[test]
    fn a_resize_keeps_the_small_target_within_its_bounds() {
        let mut s = S3Fifo::<u64, u64>::new(150);
        assert_eq!(s.small_target, 1);
        s.resize(1000);
        assert_eq!((s.small_min, s.small_target), (10, 10));
        s.validate(|_| {}).unwrap();
        s.small_target = s.small_max;
        s.resize(100);
        assert_eq!((s.small_target, s.small_max), (20, 20));
        s.validate(|_| {}).unwrap();
    }

    /// An entry main evicts leaves its fingerprint in main's ghost, so that a miss on its key
    /// soon after shrinks small (see `a_ghost_hit_moves_the_small_target_its_way`).
    #[test]
    fn main_remembers_what_it_evicts() {
        let mut s = S3Fifo::<u64, u64>::new(4);
        let hash = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let nodes: Vec<_> = (0..5)
            .map(|k| Node::new_ready(k, k, hash(k), 1, 0, None))
            .collect();
        for (k, &node) in nodes.iter().enumerate() {
            // SAFETY: a new ready node, in no queue, whose key hashes to `hash(k)`.
            unsafe { s.admit(node, hash(k as u64)) };
        }
        let protect = nodes[4];
        // Small moves 0, 1 and 2 on to main, unread, while main is below its share, then drops
        // 3 unread; small then holds only `protect`, so main gives up 0.
        let mut evicted = Vec::new();
        for _ in 0..2 {
            // SAFETY: `protect` is queued.
            evicted.push(unsafe { s.evict(protect) }.unwrap());
        }
        assert_eq!(evicted, [nodes[3], nodes[0]]);
        assert!(s.small_ghost.contains(fingerprint_of(hash(3))));
        assert!(
            s.main_ghost.contains(fingerprint_of(hash(0))),
            "main forgot its victim"
        );
        s.validate(|_| {}).unwrap();
        for node in evicted {
            // SAFETY: evicted, so in no queue, and freed once.
            unsafe { free_node(node) };
        }
        empty(s);
    }

    /// Draining (`Cache::clear`) forgets what the policy learned: the ghosts, the sketch and
    /// small's target start over.
    #[test]
    fn a_drain_forgets_the_ghosts_the_sketch_and_the_target() {
        let mut s = S3Fifo::<u64, u64>::new(1000);
        let fingerprint = fingerprint_of(0x1234_5678_9abc_def0);
        s.small_ghost.remember(fingerprint, 8);
        s.main_ghost.remember(fingerprint, 8);
        s.sketch.record(fingerprint);
        s.small_target = s.small_max;
        s.drain(&mut |_| unreachable!("nothing is queued"));
        assert!(!s.small_ghost.contains(fingerprint));
        assert!(!s.main_ghost.contains(fingerprint));
        assert_eq!(s.sketch.estimate(fingerprint), 0);
        assert_eq!(s.small_target, s.small_min);
    }
}
