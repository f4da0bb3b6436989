//! A hierarchical timer wheel over the segments of a shard's table: how the janitor finds
//! what has expired without scanning the table.
//!
//! **What is scheduled.** Not entries but *segments*: runs of [`SEGMENT_SLOTS`] consecutive
//! slots of the shard's table. Each segment has one deadline in the wheel, a lower bound on the
//! deadlines of the entries in its slots. Giving every entry its own place in a timer list
//! costs two links and a deadline per entry (Caffeine and moka pay that); a segment's place
//! costs 16 bytes shared by its 64 slots, about half a byte per entry, which is what keeps a
//! cache with a time-to-live within 56 bytes of overhead per entry (`docs/BENCHMARKS.md`).
//!
//! **Keeping the bound.** An insert into slot `i` lowers segment `i / 64`'s deadline to the new
//! entry's if it is earlier ([`Wheel::lower`]). Nothing else moves a deadline: removals and
//! time-to-idle extensions only make the bound loose, never wrong. When a segment comes due,
//! the shard scans its 64 slots, removes the entries whose deadlines have passed and
//! reschedules the segment at the earliest deadline left. A loose bound costs one scan that
//! removes nothing; each such scan follows a removal or an extension, so the work stays O(1)
//! amortized per entry. A table rebuild moves entries between segments; the shard carries each
//! old segment's bound over to the new segments its entries land in, without reading them.
//!
//! **The wheel.** Twelve levels of 8 buckets (after Varghese and Lauck, "Hashed and
//! Hierarchical Timing Wheels", SOSP 1987, as Kafka's and Caffeine's timers use them): level
//! `k`'s buckets are `8^k` ms wide, so the wheel spans 8^12 ms, about 2.2 years, with deadlines
//! beyond it in an overflow list re-examined when the top level turns. An item sits at the
//! level of the highest 3-bit digit in which its deadline differs from the wheel's time.
//! Advancing the time empties the buckets it passes at each level and re-files their items,
//! which land one level lower or in the *due* list. Scheduling, rescheduling and unscheduling
//! are O(1) (intrusive doubly linked lists of `u32` indices); advancing visits at most 8
//! buckets per level.
//!
//! **Why 8 buckets a level.** Every shard of a cache with expiry has a wheel, and its list
//! heads are a fixed cost per shard, paid however few entries the shard holds. Six levels of 64
//! buckets spanned the same 2.2 years with 386 heads (3 KB) per shard, which kept the automatic
//! shard count low enough for a cache with a time-to-live to stay within its memory budget
//! (`docs/ARCHITECTURE.md`, "Capacity and shards"). Twelve levels of 8 need 98 heads (784
//! bytes). The price is re-filing: an entry living an hour passes through eight levels on its
//! way down instead of four, one O(1) move each, for a segment of 64 slots, not per entry.

use super::NEVER;
use crate::raw::table::zeroed_slice;

/// log2 of [`SEGMENT_SLOTS`].
#[cfg(not(any(larder_loom, miri)))]
pub(crate) const SEGMENT_BITS: u32 = 6;
/// Shrunk under loom and miri, where tables are tiny, so that a table has several segments.
#[cfg(any(larder_loom, miri))]
pub(crate) const SEGMENT_BITS: u32 = 1;
/// Table slots per scheduled segment.
pub(crate) const SEGMENT_SLOTS: usize = 1 << SEGMENT_BITS;

const DIGIT_BITS: u32 = 3;
const BUCKETS: usize = 1 << DIGIT_BITS;
const LEVELS: usize = 12;
/// Index meaning "not in any list".
const UNLINKED: u32 = u32::MAX;

/// The segments of a table of `slots` slots.
pub(crate) fn segments_for(slots: usize) -> usize {
    slots.div_ceil(SEGMENT_SLOTS)
}

/// The arrays hold every value with its bits flipped, so that an unscheduled item, a deadline
/// of [`NEVER`] and links of [`UNLINKED`], is all zeros: a new wheel's arrays come zeroed from
/// the allocator, fresh pages for a large one, and take memory as segments are scheduled,
/// not when the wheel is made. (Filled by hand, a wheel sized for a large initial capacity
/// made a thirty-sixth of the table's size resident at once, which the table itself is not.)
pub(crate) struct Wheel {
    /// Each item's deadline in ms, flipped; [`NEVER`] when unscheduled. Read through
    /// [`when`](Self::when).
    when: Box<[u64]>,
    /// `(prev, next)` for every item, then for the sentinels of the lists: `LEVELS * BUCKETS`
    /// buckets, the overflow list and the due list. Flipped; read through
    /// [`link`](Self::link).
    links: Box<[(u32, u32)]>,
    items: u32,
    /// The time the wheel has advanced to.
    now: u64,
}

impl Wheel {
    /// A wheel of `items` unscheduled items at time `now`. Failing to allocate it aborts, as
    /// any allocation's failure does; [`try_new`](Self::try_new) is for a size a user asked
    /// for.
    pub(crate) fn new(items: usize, now: u64) -> Self {
        Self::try_new(items, now).unwrap_or_else(|| Self::out_of_memory(items))
    }

    /// Aborts as a failed allocation of a wheel of `items` items does, for a caller that
    /// cannot do without one (a table's growth).
    pub(crate) fn out_of_memory(items: usize) -> ! {
        let layout = std::alloc::Layout::array::<(u32, u32)>(items)
            .unwrap_or(std::alloc::Layout::new::<(u32, u32)>());
        std::alloc::handle_alloc_error(layout)
    }

    /// [`new`](Self::new) for a table of a size the user asked for (an initial capacity, a
    /// reserve): `None` instead of aborting the process if the memory cannot be had, or if the
    /// items and the lists' sentinels would not all have a `u32` index other than
    /// [`UNLINKED`]. Only the sentinels are written: the items start unscheduled as zeros
    /// (see [`Wheel`]).
    pub(crate) fn try_new(items: usize, now: u64) -> Option<Self> {
        let sentinels = LEVELS * BUCKETS + 2;
        let len = items
            .checked_add(sentinels)
            .filter(|&len| len <= UNLINKED as usize)?;
        let mut wheel = Wheel {
            when: zeroed_slice(items)?,
            links: zeroed_slice(len)?,
            // Below `len`.
            items: items as u32,
            now,
        };
        // Each list starts empty, linked to itself. Below `len`, so below `UNLINKED`.
        for list in items as u32..len as u32 {
            wheel.set_link(list, (list, list));
        }
        Some(wheel)
    }

    /// A wheel of `items` unscheduled items at this wheel's time (for a rebuilt table).
    pub(crate) fn emptied(&self, items: usize) -> Wheel {
        Wheel::new(items, self.now)
    }

    /// [`emptied`](Self::emptied), or `None` as [`try_new`](Self::try_new) returns it.
    pub(crate) fn try_emptied(&self, items: usize) -> Option<Wheel> {
        Wheel::try_new(items, self.now)
    }

    pub(crate) fn len(&self) -> usize {
        self.items as usize
    }

    fn bucket(&self, level: usize, slot: usize) -> u32 {
        self.items + (level * BUCKETS + slot) as u32
    }

    fn overflow(&self) -> u32 {
        self.items + (LEVELS * BUCKETS) as u32
    }

    fn due(&self) -> u32 {
        self.overflow() + 1
    }

    /// The item's deadline ([`NEVER`] if unscheduled).
    pub(crate) fn when(&self, item: usize) -> u64 {
        !self.when[item]
    }

    fn set_when(&mut self, item: usize, deadline: u64) {
        self.when[item] = !deadline;
    }

    /// `(prev, next)` of an item or a list's sentinel.
    fn link(&self, at: u32) -> (u32, u32) {
        let (prev, next) = self.links[at as usize];
        (!prev, !next)
    }

    fn set_link(&mut self, at: u32, (prev, next): (u32, u32)) {
        self.links[at as usize] = (!prev, !next);
    }

    fn set_prev(&mut self, at: u32, prev: u32) {
        self.links[at as usize].0 = !prev;
    }

    fn set_next(&mut self, at: u32, next: u32) {
        self.links[at as usize].1 = !next;
    }

    fn unlink(&mut self, item: u32) {
        let (prev, next) = self.link(item);
        if prev == UNLINKED {
            return;
        }
        self.set_next(prev, next);
        self.set_prev(next, prev);
        self.set_link(item, (UNLINKED, UNLINKED));
    }

    fn push(&mut self, list: u32, item: u32) {
        let last = self.link(list).0;
        self.set_link(item, (last, list));
        self.set_next(last, item);
        self.set_prev(list, item);
    }

    /// The list an item due at `deadline` belongs in, at the wheel's current time.
    fn list_for(&self, deadline: u64) -> u32 {
        if deadline <= self.now {
            return self.due();
        }
        let highest = u64::BITS - 1 - (deadline ^ self.now).leading_zeros();
        let level = (highest / DIGIT_BITS) as usize;
        if level >= LEVELS {
            return self.overflow();
        }
        let slot = (deadline >> (level as u32 * DIGIT_BITS)) as usize & (BUCKETS - 1);
        self.bucket(level, slot)
    }

    /// Schedules `item` at `deadline` (unscheduling it for [`NEVER`]), wherever it was.
    pub(crate) fn schedule(&mut self, item: usize, deadline: u64) {
        let item32 = item as u32;
        self.unlink(item32);
        self.set_when(item, deadline);
        if deadline != NEVER {
            let list = self.list_for(deadline);
            self.push(list, item32);
        }
    }

    /// Moves `item`'s deadline to `deadline` if that is earlier.
    #[inline]
    pub(crate) fn lower(&mut self, item: usize, deadline: u64) {
        if deadline < self.when(item) {
            self.schedule(item, deadline);
        }
    }

    /// Moves every item of `list` onto `out`, emptying it.
    fn take_list(&mut self, list: u32, out: &mut Vec<u32>) {
        let mut cur = self.link(list).1;
        while cur != list {
            let next = self.link(cur).1;
            self.set_link(cur, (UNLINKED, UNLINKED));
            out.push(cur);
            cur = next;
        }
        self.set_link(list, (list, list));
    }

    /// Advances the wheel's time to `to`, moving every item whose deadline is at or before it
    /// to the due list. Visits at most [`BUCKETS`] buckets per level.
    pub(crate) fn advance(&mut self, to: u64) {
        if to <= self.now {
            return;
        }
        let mut passed = Vec::new();
        for level in 0..LEVELS {
            let shift = level as u32 * DIGIT_BITS;
            let (from, until) = (self.now >> shift, to >> shift);
            if from == until {
                break;
            }
            let steps = (until - from).min(BUCKETS as u64);
            for step in 1..=steps {
                let slot = (from + step) as usize & (BUCKETS - 1);
                self.take_list(self.bucket(level, slot), &mut passed);
            }
        }
        let top = LEVELS as u32 * DIGIT_BITS;
        if self.now >> top != to >> top {
            self.take_list(self.overflow(), &mut passed);
        }
        self.now = to;
        for item in passed {
            let list = self.list_for(self.when(item as usize));
            self.push(list, item);
        }
    }

    /// Takes one item off the due list, unscheduling it; `None` when nothing is due.
    pub(crate) fn pop_due(&mut self) -> Option<usize> {
        let due = self.due();
        let first = self.link(due).1;
        if first == due {
            return None;
        }
        self.unlink(first);
        self.set_when(first as usize, NEVER);
        Some(first as usize)
    }

    /// Whether any item is due.
    pub(crate) fn has_due(&self) -> bool {
        let due = self.due();
        self.link(due).1 != due
    }

    /// Checks that every scheduled item is in exactly the list its deadline says, and every
    /// unscheduled item in none.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut seen = vec![false; self.items as usize];
        let lists = LEVELS * BUCKETS + 2;
        for l in 0..lists {
            let list = self.items + l as u32;
            let mut cur = self.link(list).1;
            let mut prev = list;
            while cur != list {
                if cur >= self.items {
                    return Err(format!("wheel: list {l} links to sentinel {cur}"));
                }
                if self.link(cur).0 != prev {
                    return Err(format!("wheel: item {cur} has a broken back link"));
                }
                if std::mem::replace(&mut seen[cur as usize], true) {
                    return Err(format!("wheel: item {cur} is listed twice"));
                }
                let when = self.when(cur as usize);
                let home = self.list_for(when);
                // An item parked in a bucket that time has not yet reached is where it
                // belongs; the due list may also hold items scheduled at or before `now`.
                if when == NEVER || (home != list && list != self.due()) {
                    return Err(format!(
                        "wheel: item {cur} due at {when} is in list {l}, not {}",
                        home - self.items
                    ));
                }
                prev = cur;
                cur = self.link(cur).1;
            }
        }
        for (item, &listed) in seen.iter().enumerate() {
            if !listed && self.when(item) != NEVER {
                return Err(format!("wheel: item {item} is scheduled but in no list"));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("items", &self.items)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

// Safe code only, so not run under miri (why: `.ci/run`, the miri step).
#[cfg(all(test, not(larder_loom), not(miri)))]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn drain(w: &mut Wheel) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(i) = w.pop_due() {
            out.push(i);
        }
        out.sort_unstable();
        out
    }

    /// Random schedules and advances against a model: after every advance, exactly the items
    /// whose deadlines have passed are due, across every level and the overflow list.
    #[test]
    fn due_items_are_exactly_those_whose_deadline_passed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Smaller under miri, which runs this about a thousand times slower.
        let (rounds, n, ops) = if cfg!(miri) {
            (1, 40, 100)
        } else {
            (40, 200, 300)
        };
        for round in 0..rounds {
            let start = rng.gen_range(0..1u64 << 40);
            let mut w = Wheel::new(n, start);
            let mut model = vec![NEVER; n];
            let mut now = start;
            for _ in 0..ops {
                match rng.gen_range(0..4) {
                    0 | 1 => {
                        let item = rng.gen_range(0..n);
                        let span = [10u64, 5_000, 400_000, 1 << 30, 1 << 40][rng.gen_range(0..5)];
                        let d = now + rng.gen_range(0..span);
                        w.schedule(item, d);
                        model[item] = d;
                    }
                    2 => {
                        let item = rng.gen_range(0..n);
                        let d = now + rng.gen_range(0..100_000);
                        w.lower(item, d);
                        model[item] = model[item].min(d);
                    }
                    _ => {
                        let step = [1u64, 63, 64, 4095, 300_000, 1 << 37][rng.gen_range(0..6)];
                        now += rng.gen_range(0..=step);
                        w.advance(now);
                        let due = drain(&mut w);
                        let expected: Vec<usize> = (0..n).filter(|&i| model[i] <= now).collect();
                        assert_eq!(due, expected, "round {round} at {now}");
                        for i in expected {
                            model[i] = NEVER;
                        }
                    }
                }
                w.validate().unwrap();
            }
        }
    }

    #[test]
    fn the_list_heads_a_shard_pays_for_fit_in_a_kibibyte() {
        // Every shard of a cache with expiry has a wheel, however few entries it holds, so the
        // automatic shard count (`builder::SHARDS_PER_CORE`) is priced by this.
        let w = Wheel::new(0, 0);
        let bytes = w.links.len() * std::mem::size_of::<(u32, u32)>();
        assert_eq!(w.links.len(), LEVELS * BUCKETS + 2);
        assert!(bytes <= 1024, "{bytes} bytes of list heads");
    }

    #[test]
    fn an_item_scheduled_in_the_past_is_due_at_once() {
        let mut w = Wheel::new(4, 1000);
        w.schedule(2, 999);
        w.schedule(3, 1001);
        assert!(w.has_due());
        assert_eq!(drain(&mut w), vec![2]);
        w.advance(1001);
        assert_eq!(drain(&mut w), vec![3]);
        assert_eq!(w.when(3), NEVER);
    }
}
