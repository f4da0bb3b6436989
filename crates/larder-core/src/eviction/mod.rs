//! Eviction policies: S3-FIFO (the default) and CLOCK, over the intrusive queues of
//! `raw::list`.
//!
//! Both keep the read path to one relaxed update of the entry's own `freq` bits
//! (`Node::touch`); every queue move, the sketch and the ghosts live on the write path, under
//! the shard lock.
//!
//! * [`s3fifo`]: S3-FIFO with a TinyLFU-style admission duel and an adaptive small queue.
//! * [`clock`]: CLOCK, the second-chance approximation of LRU.
//! * [`sketch`]: the count-min frequency sketch S3-FIFO's admission consults.
//! * [`ghost`]: the fingerprints of recent victims that steer S3-FIFO's small queue.
//!
//! # What may be evicted
//! `evict` never returns the node the current operation just inserted (`protect`): an `insert`
//! must not evict its own entry to make room for itself. Nor does it return an entry of weight
//! 0: it takes no capacity, so evicting it would free none (the builder's `weigher` promises
//! as much). Because `protect`'s weight is at most the shard's capacity, an entry other than
//! `protect` that weighs something is always there while the shard is over capacity. A queue
//! holds one exactly when it weighs more than `protect` does in it (`has_evictable`), since a
//! queue's weight is the sum of its entries'.
//!
//! # Entries of weight 0
//! An entry of weight 0 is in none of the policy's queues: [`Eviction`] keeps it in a list of
//! its own, `weightless`, that no hand turns, and the policy never sees it (its insertion is
//! not counted in S3-FIFO's sketch, it is no ghost's, and it does not size either). Queued
//! with the others, as it was, it was passed over by every turn of a hand that met it and moved
//! to the tail, so a shard holding `Z` of them paid `Z` turns for each revolution of a hand,
//! under the shard lock. A cache whose weigher gives most entries 0 (`|_, v| v.len() as u32`
//! over mostly empty values) turned every insert that evicted into a walk over them: beside
//! 10,000 such entries and 2 of weight 1 in one shard, S3-FIFO's hand turned 5,000 times per
//! eviction and CLOCK's 13,353 (`entries_of_weight_0_cost_an_eviction_no_turns_of_the_hand`
//! counts them). Now the hands turn as often as they do with none: 0 and 3 per eviction there.
//!
//! A node's weight never changes once it is queued (a new value is a new node, which `replace`
//! puts in the old one's place), so a node's weight says which list holds it: 0, `weightless`;
//! anything else, the policy's queues. `remove` and `replace` go by it, and `validate` checks
//! it. A replacement that changes the weight from 0 to something, or back, moves the entry
//! between the two: one that gains weight joins the policy as a new entry does (at the tail of
//! small, or of the ring), with the reads it had (`freq`); one that loses it leaves its queue
//! for `weightless`. Every other way out of a queue (a removal, an expiry, `clear`'s `drain`)
//! goes through `remove` or `drain`, which know both, and the read path is untouched: a read
//! still only raises `freq`, which the entry keeps while it weighs nothing.
//!
//! Unweighted caches, and weighted ones without weights of 0, choose exactly as before: no node
//! is ever `weightless`, and the checks for weight 0 that the hands and small's head made
//! (now gone) never held.

mod clock;
mod ghost;
mod s3fifo;
mod sketch;

use crate::builder::Policy;
use crate::raw::list::List;
use crate::raw::node::{Node, OnHit};
use clock::Clock;
use s3fifo::S3Fifo;

/// S3-FIFO: a hit adds one to the counter, saturating at 3, so a hot entry survives at most
/// three extra trips through main.
const S3FIFO_ON_HIT: OnHit = OnHit([1, 2, 3, 3]);
/// CLOCK: a hit sets the reference bit (2), whatever the counter was (see `clock`).
const CLOCK_ON_HIT: OnHit = OnHit([2, 2, 2, 3]);

/// One per shard, inside its locked state: the policy's queues, which hold every entry that
/// weighs something, and beside them the entries of weight 0 (see the module doc).
pub(crate) struct Eviction<K, V> {
    queues: Queues<K, V>,
    /// The entries of weight 0, in no order that matters: only `remove`, `replace` and `drain`
    /// take a node from it.
    weightless: List<K, V>,
}

/// The policy's own state.
// Boxing the larger variant would only add a pointer chase to every write.
#[allow(clippy::large_enum_variant)]
enum Queues<K, V> {
    S3Fifo(S3Fifo<K, V>),
    Clock(Clock<K, V>),
}

/// Whether `list` holds an entry the policy may evict, given `spared`: the weight of `protect`
/// if it is queued in `list`, else 0 (see the module doc).
fn has_evictable<K, V>(list: &List<K, V>, spared: u64) -> bool {
    list.weight() > spared
}

/// Whether `node` has weight 0, and so belongs in `weightless` rather than the policy's queues.
///
/// # Safety
/// `node` is a live node of this shard, whose lock the caller holds.
#[inline(always)]
unsafe fn weightless<K, V>(node: *mut Node<K, V>) -> bool {
    // SAFETY: the caller's contract.
    unsafe { (*node).weight() == 0 }
}

/// Turns `list`'s hand until its head is an entry other than `protect` with `freq == 0`, and
/// returns that head, still queued. Each turn moves the head to the tail; one that lowers an
/// entry's `freq` (every turn but those of `protect`, which is passed over as it is) tells
/// `lowered` of that entry first. Every entry in the list weighs something (the module doc),
/// so every one but `protect` may be evicted.
///
/// # The bound
/// Alone, the hand needs at most `4 × len` turns: a revolution lowers every evictable entry, so
/// after three (`freq` is at most 3) every one of them is at 0 and the fourth stops at the
/// first. But readers raise `freq` without the lock, between the hand's turns, so readers that
/// keep every entry of a small queue hot could keep the hand turning for as long as they read,
/// with the writer holding the shard lock. After `4 × len` turns the hand therefore stops at
/// the next evictable head, whatever its `freq`: a writer's eviction is bounded, and on a queue
/// nobody reads while it turns the bound is never reached, so the choice is the same as without
/// it.
///
/// The caller holds the shard's lock and has checked that `list` holds an evictable entry
/// (`has_evictable`), so the turns end within a revolution of the bound.
#[inline(always)]
fn turn_hand<K, V>(
    list: &mut List<K, V>,
    protect: *mut Node<K, V>,
    mut lowered: impl FnMut(&Node<K, V>),
) -> *mut Node<K, V> {
    let mut budget = list.len().saturating_mul(4);
    loop {
        let head = list.head();
        if head != protect {
            // SAFETY: the list holds an evictable entry (the caller's check), so it is not
            // empty and its head is a live node of this shard, whose lock the caller holds.
            let n = unsafe { &*head };
            let freq = n.freq();
            if freq == 0 || budget == 0 {
                return head;
            }
            n.set_freq(freq - 1);
            lowered(n);
        }
        budget = budget.saturating_sub(1);
        #[cfg(test)]
        tests::turned();
        // SAFETY: `head` is the list's head; it leaves and rejoins at the tail.
        unsafe {
            let _ = list.pop_front();
            list.push_back(head);
        }
    }
}

impl<K, V> Eviction<K, V> {
    /// The state of `policy` for a shard of `capacity`.
    pub(crate) fn new(policy: Policy, capacity: u64) -> Self {
        let queues = match policy {
            Policy::S3Fifo => Queues::S3Fifo(S3Fifo::new(capacity)),
            Policy::Lru => Queues::Clock(Clock::new()),
        };
        Eviction {
            queues,
            weightless: List::new(),
        }
    }

    /// Tells the policy its shard's capacity changed (`Locked::set_share`). CLOCK does not
    /// look at the capacity; S3-FIFO sizes its small queue by it.
    pub(crate) fn resize(&mut self, capacity: u64) {
        match &mut self.queues {
            Queues::S3Fifo(s) => s.resize(capacity),
            Queues::Clock(_) => {}
        }
    }

    /// What a read does to an entry's `freq` under `policy`.
    pub(crate) fn on_hit(policy: Policy) -> OnHit {
        match policy {
            Policy::S3Fifo => S3FIFO_ON_HIT,
            Policy::Lru => CLOCK_ON_HIT,
        }
    }

    /// The `freq` a newly inserted entry starts with.
    pub(crate) fn initial_freq(&self) -> u32 {
        match self.queues {
            Queues::S3Fifo(_) => 0,
            // One revolution's grace (see `clock`).
            Queues::Clock(_) => clock::INITIAL_FREQ,
        }
    }

    /// Queues a newly ready node whose key hashes to `hash`: in the policy's queues if it weighs
    /// something, else in `weightless`.
    ///
    /// # Safety
    /// `node` is a ready node of this shard, in no queue, whose key hashes to `hash`.
    pub(crate) unsafe fn admit(&mut self, node: *mut Node<K, V>, hash: u64) {
        // SAFETY: the caller's contract: a live node of this shard, whose lock is held.
        if unsafe { weightless(node) } {
            // SAFETY: the caller's contract.
            unsafe { self.weightless.push_back(node) };
            return;
        }
        match &mut self.queues {
            // SAFETY: the caller's contract.
            Queues::S3Fifo(s) => unsafe { s.admit(node, hash) },
            // SAFETY: the caller's contract.
            Queues::Clock(c) => unsafe { c.admit(node) },
        }
    }

    /// `new` takes `old`'s place (an update of an existing key), and its `freq`: its position
    /// in its queue if both weigh something, or both nothing. One that gains weight joins the
    /// policy as a new entry does; one that loses it leaves the policy for `weightless` (the
    /// module doc).
    ///
    /// # Safety
    /// `old` is queued here; `new` is a ready node of this shard in no queue.
    pub(crate) unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        // SAFETY: the caller's contract: both are live nodes of this shard, whose lock is held.
        let (was, is) = unsafe {
            (*new).set_freq((*old).freq());
            (weightless(old), weightless(new))
        };
        match (was, is) {
            // SAFETY: the caller's contract, and `old` is in the list its weight names.
            (false, false) => unsafe { self.queues.replace(old, new) },
            // SAFETY: as above.
            (true, true) => unsafe { self.weightless.replace(old, new) },
            // SAFETY: as above; `new` is in no queue until it joins one here.
            (true, false) => unsafe {
                self.weightless.unlink(old);
                self.queues.enter(new);
            },
            // SAFETY: as above.
            (false, true) => unsafe {
                self.queues.remove(old);
                self.weightless.push_back(new);
            },
        }
    }

    /// Takes `node` out of its queue (an explicit removal).
    ///
    /// # Safety
    /// `node` is queued here.
    pub(crate) unsafe fn remove(&mut self, node: *mut Node<K, V>) {
        // SAFETY: the caller's contract: a live node of this shard, whose lock is held.
        if unsafe { weightless(node) } {
            // SAFETY: the caller's contract, and a node of weight 0 is in `weightless`.
            unsafe { self.weightless.unlink(node) };
        } else {
            // SAFETY: the caller's contract, and a node that weighs something is in the
            // policy's queues.
            unsafe { self.queues.remove(node) };
        }
    }

    /// Chooses and dequeues a victim, never `protect` nor an entry of weight 0 (none is in the
    /// policy's queues); `None` if nothing evictable is queued.
    ///
    /// # Safety
    /// `protect` is queued here.
    pub(crate) unsafe fn evict(&mut self, protect: *mut Node<K, V>) -> Option<*mut Node<K, V>> {
        // A `protect` of weight 0 is in `weightless`, where the policy never meets it: each
        // policy spares what `protect` weighs, here nothing.
        match &mut self.queues {
            // SAFETY: the caller's contract.
            Queues::S3Fifo(s) => unsafe { s.evict(protect) },
            // SAFETY: the caller's contract.
            Queues::Clock(c) => unsafe { c.evict(protect) },
        }
    }

    /// Empties every queue, `weightless` too, handing each node to `f`. Policy memory (ghosts,
    /// sketch) is forgotten too.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(*mut Node<K, V>)) {
        match &mut self.queues {
            Queues::S3Fifo(s) => s.drain(&mut f),
            Queues::Clock(c) => c.drain(&mut f),
        }
        self.weightless.drain(f);
    }

    /// Checks every queue, and that each node is in the list its weight names (the module
    /// doc); `each` sees every queued node.
    pub(crate) fn validate(&self, mut each: impl FnMut(*mut Node<K, V>)) -> Result<(), String> {
        let (mut weightless_queued, mut weighted_apart) = (0usize, 0usize);
        let mut in_queues = |n| {
            // SAFETY: queued nodes are live while the lock is held (`&self` was reached
            // through the locked state).
            weightless_queued += usize::from(unsafe { weightless(n) });
            each(n);
        };
        match &self.queues {
            Queues::S3Fifo(s) => s.validate(&mut in_queues)?,
            Queues::Clock(c) => c.validate(&mut in_queues)?,
        }
        self.weightless.validate(|n| {
            // SAFETY: as above.
            weighted_apart += usize::from(!unsafe { weightless(n) });
            each(n);
        })?;
        if weightless_queued != 0 || weighted_apart != 0 {
            return Err(format!(
                "eviction: {weightless_queued} nodes of weight 0 in the policy's queues, \
                 {weighted_apart} that weigh something among those of weight 0"
            ));
        }
        Ok(())
    }
}

impl<K, V> Queues<K, V> {
    /// # Safety
    /// `old` is in the policy's queues; `new` is a ready node of this shard in no queue that
    /// weighs something.
    unsafe fn replace(&mut self, old: *mut Node<K, V>, new: *mut Node<K, V>) {
        match self {
            // SAFETY: the caller's contract.
            Queues::S3Fifo(s) => unsafe { s.replace(old, new) },
            // SAFETY: the caller's contract.
            Queues::Clock(c) => unsafe { c.replace(old, new) },
        }
    }

    /// Queues a node that has just gained weight by a replacement, as a new entry is queued
    /// but with none of an admission's bookkeeping: a replacement is no miss.
    ///
    /// # Safety
    /// `node` is a ready node of this shard in no queue that weighs something.
    unsafe fn enter(&mut self, node: *mut Node<K, V>) {
        match self {
            // SAFETY: the caller's contract.
            Queues::S3Fifo(s) => unsafe { s.enter(node) },
            // SAFETY: the caller's contract.
            Queues::Clock(c) => unsafe { c.admit(node) },
        }
    }

    /// # Safety
    /// `node` is in the policy's queues.
    unsafe fn remove(&mut self, node: *mut Node<K, V>) {
        match self {
            // SAFETY: the caller's contract.
            Queues::S3Fifo(s) => unsafe { s.remove(node) },
            // SAFETY: the caller's contract.
            Queues::Clock(c) => unsafe { c.remove(node) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::node::free_node;
    use std::cell::RefCell;

    thread_local! {
        /// What runs between two turns of a hand on this thread: the tests' stand-in for the
        /// readers that raise `freq` while a writer evicts.
        static BETWEEN_TURNS: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    }

    /// Called by `turn_hand` after each turn.
    pub(super) fn turned() {
        BETWEEN_TURNS.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook();
            }
        });
    }

    /// `n` nodes with `freq` 3 queued in a list, keys `0..n`.
    fn hot_list(n: u64) -> (List<u64, u64>, Vec<*mut Node<u64, u64>>) {
        let mut list = List::new();
        let nodes: Vec<_> = (0..n)
            .map(|k| Node::new_ready(k, k, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1, 3, None))
            .collect();
        for &node in &nodes {
            // SAFETY: a new node, in no list.
            unsafe { list.push_back(node) };
        }
        (list, nodes)
    }

    fn free(mut list: List<u64, u64>) {
        // SAFETY: every node was made by `hot_list`, no other thread has seen it, and draining
        // takes each out of the list once.
        list.drain(|node| unsafe { free_node(node) });
    }

    /// Readers that read every entry between two turns of the hand kept it turning for ever
    /// with the shard locked; now it stops after `4 × len` turns.
    #[test]
    fn a_hand_stops_even_while_readers_keep_every_entry_hot() {
        let (mut list, nodes) = hot_list(8);
        let turns = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let counted = turns.clone();
        BETWEEN_TURNS.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                counted.set(counted.get() + 1);
                assert!(
                    counted.get() < 10_000,
                    "the hand never stops while every entry is read"
                );
                for &node in &nodes {
                    // SAFETY: the nodes stay live until `free` below.
                    unsafe { (*node).set_freq(3) };
                }
            }));
        });
        let protect = list.head();
        let victim = turn_hand(&mut list, protect, |_| {});
        BETWEEN_TURNS.with(|hook| *hook.borrow_mut() = None);
        assert_ne!(
            victim, protect,
            "the hand never stops at the protected node"
        );
        assert_eq!(victim, list.head(), "the victim is left at the head");
        assert!(turns.get() <= 4 * 8 + 1, "{} turns", turns.get());
        free(list);
    }

    /// How many turns the hands take for 200 evictions in a one-shard cache of `policy` that
    /// holds `weightless` entries of weight 0 beside at most `capacity` of weight 1, while new
    /// keys of weight 1 keep coming, each read once after its insert (so that S3-FIFO moves it
    /// on to main, whose hand then chooses the victims).
    fn turns_beside_weightless(policy: crate::Policy, weightless: u64, capacity: u64) -> u64 {
        let cache: crate::Cache<u64, u32> = crate::Cache::builder()
            .max_capacity(capacity)
            .shards(1)
            .policy(policy)
            .weigher(|_, v| *v)
            .build()
            .unwrap();
        for k in 0..weightless {
            cache.insert(k, 0);
        }
        let weighted = |i: u64| {
            cache.insert(weightless + i, 1);
            let _ = cache.get(&(weightless + i));
        };
        // Fill the weighted room and let the queues settle (when the entries of weight 0 were
        // queued, S3-FIFO's first evictions moved them all from small to main).
        for i in 0..4 * capacity {
            weighted(i);
        }
        let turns = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let counted = turns.clone();
        BETWEEN_TURNS.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || counted.set(counted.get() + 1)));
        });
        let before = cache.stats().evictions;
        for i in 4 * capacity..4 * capacity + 200 {
            weighted(i);
        }
        BETWEEN_TURNS.with(|hook| *hook.borrow_mut() = None);
        assert_eq!(
            cache.stats().evictions - before,
            200,
            "one eviction per insert"
        );
        cache.validate().unwrap();
        assert_eq!(cache.len() as u64, weightless + capacity);
        turns.get()
    }

    /// Entries of weight 0 are never evicted, and the hands passed over them on every turn: in
    /// a shard holding 10,000 of them beside 2 of weight 1, S3-FIFO's hand turned 5,000 times
    /// per eviction and CLOCK's 13,353, under the shard lock. Kept out of the queues the hands
    /// turn, they cost an eviction nothing: it turns the hands as often as with none.
    #[test]
    fn entries_of_weight_0_cost_an_eviction_no_turns_of_the_hand() {
        // Fewer under miri, which runs about a thousand times slower: the turns are equal
        // whatever the count.
        let weightless = if cfg!(miri) { 200 } else { 10_000 };
        let capacity = 2;
        let runs = [crate::Policy::S3Fifo, crate::Policy::Lru].map(|policy| {
            let alone = turns_beside_weightless(policy, 0, capacity);
            (
                policy,
                alone,
                turns_beside_weightless(policy, weightless, capacity),
            )
        });
        assert!(
            runs.iter().all(|(_, alone, beside)| alone == beside),
            "the hands' turns for 200 evictions, without and beside {weightless} entries of \
             weight 0: {}",
            runs.map(|(policy, alone, beside)| format!(
                "{policy:?} {alone} and {beside} ({} per eviction)",
                beside / 200
            ))
            .join("; ")
        );
    }

    /// `validate` finds a node in the list its weight does not name: one that weighs
    /// something among those of weight 0 (where no hand would ever evict it), or one of weight
    /// 0 in the policy's queues (where the hand, which no longer looks at weights, would).
    #[test]
    fn validate_finds_a_node_in_the_wrong_list() {
        for policy in [Policy::S3Fifo, Policy::Lru] {
            let mut e = Eviction::<u64, u64>::new(policy, 100);
            let hash = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let weighted = Node::new_ready(1, 1, hash(1), 1, 0, None);
            let weightless = Node::new_ready(2, 2, hash(2), 0, 0, None);
            // SAFETY: new ready nodes, in no queue, whose keys hash as given; each leaves one
            // list before it joins another, and `drain` below takes each out once to be freed.
            unsafe {
                e.admit(weighted, hash(1));
                e.admit(weightless, hash(2));
                assert_eq!(e.validate(|_| {}), Ok(()));
                e.queues.remove(weighted);
                e.weightless.push_back(weighted);
                let err = e.validate(|_| {}).unwrap_err();
                assert!(err.contains("1 that weigh something"), "{policy:?}: {err}");
                e.weightless.unlink(weighted);
                e.queues.enter(weighted);
                e.weightless.unlink(weightless);
                e.queues.enter(weightless);
                let err = e.validate(|_| {}).unwrap_err();
                assert!(err.contains("1 nodes of weight 0 in"), "{policy:?}: {err}");
            }
            let mut seen = 0;
            e.drain(|node| {
                seen += 1;
                // SAFETY: as above.
                unsafe { free_node(node) }
            });
            assert_eq!(seen, 2);
        }
    }

    /// Without readers the bound is never reached: the hand stops at the first entry whose
    /// counter it has lowered to 0, as it did before there was a bound.
    #[test]
    fn without_readers_a_hand_stops_at_the_first_cold_entry() {
        let (mut list, nodes) = hot_list(8);
        // SAFETY: the nodes are live until `free`.
        unsafe {
            (*nodes[5]).set_freq(1);
            (*nodes[2]).set_freq(2);
        }
        let mut lowered = 0;
        let victim = turn_hand(&mut list, nodes[0], |_| lowered += 1);
        // Revolution 1 takes 5 to 0 and 2 to 1, revolution 2 finds 5 at 0.
        assert_eq!(victim, nodes[5]);
        assert_eq!(lowered, 7 + 4);
        free(list);
    }
}
