//! Time for expiry: one clock abstraction, real or mock.
//!
//! Every deadline in the crate is a count of milliseconds since its clock's origin, read
//! through [`Clock`]. A cache with expiry reads the clock on every lookup, so the usual real
//! clock is the cheap coarse one (`raw::clock`: 4–10 ns, lagging true time by up to one kernel
//! tick). Expiry never errs late: a clock that may lag by `slack` milliseconds treats an entry
//! as expired once its deadline is within `slack` of the clock's reading, so a read after the
//! deadline never returns the value. An entry may disappear up to twice `slack` early (10 ms on
//! a kernel with a 4 ms tick): its write time, read from the same clock, may lag as much.
//!
//! That margin is nothing to a lifetime of seconds, and everything to one of a few
//! milliseconds: a 5 ms lifetime on the coarse clock would expire every entry as it is
//! written. So the builder takes the precise clock ([`Clock::precise`], 22–37 ns a read, a
//! slack of 1 ms for the milliseconds it truncates) when a cache's time-to-live or
//! time-to-idle is under [`PRECISE_BELOW`], and refuses a lifetime shorter than its clock's
//! [`shortest_lifetime`](Clock::shortest_lifetime), twice the slack and a millisecond, so that
//! every entry lives at least a millisecond. [`MockClock`] has no lag and moves only when a test advances it.
//!
//! A clock also tells the wall-clock time ([`Clock::wall_time`]), which a durable cache's
//! records store their deadlines in, so that they mean the same after a restart. A real clock
//! reads the system's; a mock's starts at [`MockClock::WALL_ORIGIN`] and moves with the mock,
//! so a test of what outlives a restart advances one clock, not two.
use crate::sync::{Arc, AtomicU64, Ordering};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time source a cache measures lifetimes with. Cheap to clone.
///
/// `Clock::real()` is the default; tests build caches on [`MockClock::clock`] and advance time
/// by hand.
#[derive(Clone)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Real(Real),
    Mock(Arc<AtomicU64>),
}

/// The coarse monotonic clock (Linux) or `Instant` (elsewhere), from an origin taken when the
/// clock was made.
#[derive(Clone, Copy)]
struct Real {
    #[cfg(all(target_os = "linux", not(miri)))]
    origin_ns: u64,
    #[cfg(not(all(target_os = "linux", not(miri))))]
    origin: std::time::Instant,
    /// Reads `CLOCK_MONOTONIC` rather than `CLOCK_MONOTONIC_COARSE` (Linux).
    #[cfg(all(target_os = "linux", not(miri)))]
    precise: bool,
    slack_ms: u64,
}

/// The builder takes [`Clock::precise`] for a cache whose time-to-live or time-to-idle is
/// shorter than this, and [`Clock::real`] otherwise. The coarse clock's early expiry (up to
/// about 10 ms) is then at most 1% of a lifetime.
pub const PRECISE_BELOW: Duration = Duration::from_secs(1);

impl Clock {
    /// The system's coarse monotonic clock: 4–10 ns a read, and a lag (its
    /// [`slack`](Self::slack)) of up to one kernel tick plus a millisecond (5 ms with a 4 ms
    /// tick), so entries may expire up to twice that early. The default for caches
    /// whose lifetimes are [`PRECISE_BELOW`] or longer.
    pub fn real() -> Clock {
        Clock::system(false)
    }

    /// The system's precise monotonic clock (what `Instant` reads): 22–37 ns a read, and a
    /// slack of 1 ms (the millisecond it truncates), so entries may expire up to 2 ms early. The default for
    /// caches with a lifetime under [`PRECISE_BELOW`].
    pub fn precise() -> Clock {
        Clock::system(true)
    }

    /// [`real`](Self::real) or [`precise`](Self::precise), from an origin taken now. Elsewhere
    /// than on Linux both read `Instant`.
    fn system(precise: bool) -> Clock {
        #[cfg(all(target_os = "linux", not(miri)))]
        let real = Real {
            origin_ns: if precise {
                crate::raw::clock::precise_now_ns()
            } else {
                crate::raw::clock::coarse_now_ns()
            },
            precise,
            // The precise clock truncates to the millisecond; the coarse one lags by up to a
            // tick as well.
            slack_ms: if precise {
                1
            } else {
                crate::raw::clock::coarse_resolution_ns().div_ceil(1_000_000) + 1
            },
        };
        #[cfg(not(all(target_os = "linux", not(miri))))]
        let real = {
            let _ = precise;
            Real {
                origin: std::time::Instant::now(),
                slack_ms: 1,
            }
        };
        Clock {
            kind: Kind::Real(real),
        }
    }

    /// The clock a cache gets when its builder is given none: [`precise`](Self::precise)
    /// if `shortest`, its shortest lifetime, is under [`PRECISE_BELOW`], else
    /// [`real`](Self::real).
    pub(crate) fn for_lifetime(shortest: Option<Duration>) -> Clock {
        if shortest.is_some_and(|d| d < PRECISE_BELOW) {
            Clock::precise()
        } else {
            Clock::real()
        }
    }

    /// Milliseconds since the clock's origin. Never decreases.
    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        match &self.kind {
            #[cfg(all(target_os = "linux", not(miri)))]
            Kind::Real(r) => {
                let now = if r.precise {
                    crate::raw::clock::precise_now_ns()
                } else {
                    crate::raw::clock::coarse_now_ns()
                };
                now.saturating_sub(r.origin_ns) / 1_000_000
            }
            #[cfg(not(all(target_os = "linux", not(miri))))]
            Kind::Real(r) => r.origin.elapsed().as_millis() as u64,
            // Acquire: pairs with the Release in `MockClock::advance`, so a thread that sees the
            // new time also sees what the test did before advancing it.
            Kind::Mock(ms) => ms.load(Ordering::Acquire),
        }
    }

    /// How far the clock's reading may lag true time (zero for a mock). Expiry errs early by
    /// up to twice this (the write time and the reading may each lag), never late.
    #[inline]
    pub fn slack(&self) -> Duration {
        Duration::from_millis(self.slack_ms())
    }

    /// The shortest lifetime a cache on this clock accepts: twice the [`slack`](Self::slack)
    /// and a millisecond, so that an entry lives at least a millisecond however the clock's
    /// lag falls at its write and at the read. 1 ms on a mock clock, 3 ms on the precise one,
    /// 11 ms on the coarse one with a 4 ms kernel tick.
    pub fn shortest_lifetime(&self) -> Duration {
        self.slack() * 2 + Duration::from_millis(1)
    }

    /// The wall-clock time by this clock: the system's for a real clock, and for a mock
    /// [`MockClock::WALL_ORIGIN`] plus the time it has been advanced by. Not monotonic for a
    /// real clock (the system's wall clock may be set back); lifetimes inside a cache are
    /// measured with the monotonic reading instead, and only what must mean the same in
    /// another process (a durable cache's recorded deadlines) uses this.
    pub fn wall_time(&self) -> SystemTime {
        match &self.kind {
            Kind::Real(_) => SystemTime::now(),
            Kind::Mock(ms) => {
                // Acquire: as in `now_ms`. Cannot overflow: 2026 plus at most the mock's
                // limit, about 139 years.
                UNIX_EPOCH
                    + MockClock::WALL_ORIGIN
                    + Duration::from_millis(ms.load(Ordering::Acquire))
            }
        }
    }

    /// [`wall_time`](Self::wall_time) in whole milliseconds since the Unix epoch (0 for a
    /// time before it), as a durable cache's records store deadlines.
    pub fn wall_ms(&self) -> u64 {
        self.wall_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// [`slack`](Self::slack) in milliseconds: how far [`now_ms`](Self::now_ms) may lag.
    #[inline]
    pub(crate) fn slack_ms(&self) -> u64 {
        match &self.kind {
            Kind::Real(r) => r.slack_ms,
            Kind::Mock(_) => 0,
        }
    }

    /// The latest time true time may be: what expiry compares deadlines with.
    #[inline]
    pub(crate) fn horizon_ms(&self) -> u64 {
        self.now_ms() + self.slack_ms()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::real()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            #[cfg(all(target_os = "linux", not(miri)))]
            Kind::Real(r) if r.precise => write!(f, "Clock::precise(slack: {} ms)", r.slack_ms),
            Kind::Real(r) => write!(f, "Clock::real(slack: {} ms)", r.slack_ms),
            Kind::Mock(ms) => write!(f, "Clock::mock(at {} ms)", ms.load(Ordering::Relaxed)),
        }
    }
}

/// [`MockClock::LIMIT`] in milliseconds: what an entry's stamp can hold.
const LIMIT_MS: u64 = crate::expiry::WRITTEN_MASK;

/// A clock that stands still until it is advanced: expiry tests run without sleeping.
///
/// ```
/// use larder_core::{Cache, MockClock};
/// use std::time::Duration;
///
/// let time = MockClock::new();
/// let cache: Cache<&str, &str> = Cache::builder()
///     .max_capacity(256)
///     .time_to_live(Duration::from_secs(2))
///     .clock(time.clock())
///     .build()
///     .unwrap();
/// cache.insert("foo", "bar");
/// time.advance(Duration::from_millis(1999));
/// assert_eq!(cache.get("foo"), Some("bar"));
/// time.advance(Duration::from_millis(1));
/// assert_eq!(cache.get("foo"), None);
/// ```
#[derive(Clone)]
pub struct MockClock {
    ms: Arc<AtomicU64>,
}

impl MockClock {
    /// A mock clock at its origin.
    pub fn new() -> Self {
        MockClock {
            ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the time forward by `by` (whole milliseconds; the rest is dropped), up to
    /// [`MockClock::LIMIT`], where it stops.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // Release: pairs with the Acquire in `Clock::now_ms`. AcqRel on the read-modify-write
        // keeps concurrent advances ordered too.
        let _ = self
            .ms
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                Some(t.saturating_add(ms).min(LIMIT_MS))
            });
    }

    /// How far a mock clock goes: the longest time since its origin an entry's write time can
    /// record (2^42 − 1 ms, about 139 years; see `expiry`). Past it, every entry written would
    /// seem written at the limit and expire at once; the mock stops there instead.
    pub const LIMIT: Duration = Duration::from_millis(LIMIT_MS);

    /// The wall-clock time a mock clock reads at its origin ([`Clock::wall_time`]), as time
    /// since the Unix epoch: midnight UTC at the start of 2026 (56 years of 365 days and 14
    /// leap days after 1970). Fixed, so that a run on a mock clock writes the same deadlines
    /// whenever it runs.
    pub const WALL_ORIGIN: Duration = Duration::from_secs((56 * 365 + 14) * 86_400);

    /// [`Clock::wall_time`] of this mock's clocks.
    pub fn wall_time(&self) -> SystemTime {
        self.clock().wall_time()
    }

    /// Time since the origin, as the caches on this clock see it.
    pub fn elapsed(&self) -> Duration {
        // Acquire: as in `Clock::now_ms`.
        Duration::from_millis(self.ms.load(Ordering::Acquire))
    }

    /// A [`Clock`] that reads this mock: give it to [`CacheBuilder::clock`](crate::CacheBuilder::clock).
    pub fn clock(&self) -> Clock {
        Clock {
            kind: Kind::Mock(Arc::clone(&self.ms)),
        }
    }
}

impl Default for MockClock {
    fn default() -> Self {
        MockClock::new()
    }
}

impl fmt::Debug for MockClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MockClock(at {:?})", self.elapsed())
    }
}
