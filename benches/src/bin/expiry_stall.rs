//! How long writers and readers wait while a million entries expire at once.
//!
//! A cache of capacity 2,000,000 holds 1,000,000 entries written with a 60 s time-to-live on a
//! mock clock. One thread times every call it makes: a writer inserting fresh keys (with no
//! lifetime of their own, so they never expire), or in a separate run a reader reading the
//! old keys. Meanwhile the janitor's work, `run_pending_tasks`, runs on a second thread (two
//! threads on the machine's two cores, so a stall measured is the cache's, not the scheduler's):
//!
//! * **mass expiry**: the clock is moved past the 60 s first, so the janitor removes all
//!   1,000,000 entries, in batches of 8 table segments per shard lock;
//! * **baseline**: the clock stays, and the same janitor pass finds nothing to do.
//!
//! Both runs time the same window: from the janitor's start to its end (for the baseline, a
//! window as long as the mass expiry's). The latencies of the timed calls in that window are
//! printed as percentiles. Each round runs all four (writer and reader, with and without the
//! mass expiry) on fresh caches, and the per-round figures are printed, so the machine's noise
//! shows.
//!
//! Run: `cargo run --release -p larder-benches --bin expiry_stall [ROUNDS]` (default 3).

use std::time::Duration;

use larder_benches::{percentiles, rounds_from_args, time_calls_during};

use larder::{Cache, MockClock};

const ENTRIES: u64 = 1_000_000;
const TTL: Duration = Duration::from_secs(60);

/// Whose calls a run times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// One run: fill, then time `role`'s calls while the janitor runs (after moving the clock past
/// every deadline if `expire`). `window` fixes the timed window for a baseline. Returns how
/// long the janitor took and the latencies.
fn run(role: Role, expire: bool, window: Option<Duration>) -> (Duration, Vec<Duration>) {
    let time = MockClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(2 * ENTRIES)
        .per_entry_ttl()
        .clock(time.clock())
        .without_janitor()
        .build()
        .expect("a valid configuration");
    for k in 0..ENTRIES {
        cache
            .insert_with_ttl(k, k, TTL)
            .expect("the cache has expiry");
    }
    if expire {
        time.advance(TTL);
    }
    let call = |k: u64| match role {
        Role::Writer => cache.insert(ENTRIES + k, k),
        Role::Reader => {
            std::hint::black_box(cache.get(&(k * 7919 % ENTRIES)));
        }
    };
    let (janitor, (), lat) = time_calls_during(call, || cache.run_pending_tasks(), window);
    if expire && role == Role::Writer {
        assert_eq!(cache.len(), lat.len(), "every old entry expired");
    }
    (janitor, lat)
}

fn main() {
    let rounds = rounds_from_args(3);
    println!(
        "{ENTRIES} entries expiring at once; latency of one thread's calls while the janitor runs"
    );
    for round in 1..=rounds {
        for (role, name) in [(Role::Writer, "writes"), (Role::Reader, "reads ")] {
            let (janitor, mass) = run(role, true, None);
            let (_, base) = run(role, false, Some(janitor));
            println!(
                "round {round}, {}: the janitor removed {ENTRIES} entries in {janitor:.1?}",
                name.trim_end()
            );
            println!("  mass expiry {name}: {}", percentiles(mass));
            println!("  baseline    {name}: {}", percentiles(base));
        }
    }
}
