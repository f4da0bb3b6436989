//! The 27 points the engine's hit-ratio goals (issue 2) are measured at: 25 on the shared
//! traces and 2 on a seeded Zipf stream.
//!
//! The goals are averages over all of them and bounds at each one (S3-FIFO's average at least
//! the better peer's, and never more than 2 points below the best peer at a point; CLOCK within
//! 1 point of exact LRU on average and 3 at each point). An average is only the goal's if it is
//! over exactly these points, so the `hitratio` benchmark that publishes the figures and the
//! test that holds Larder to them (`crates/larder/tests/hit_ratio.rs`) both take them from here.
//!
//! ```
//! use larder_trace::goals::{points, ZIPF};
//!
//! let points = points();
//! assert_eq!(points.len(), 27);
//! assert_eq!(points.iter().filter(|p| p.workload == ZIPF.name()).count(), 2);
//! ```

/// The traces the goals are measured on, and each one's capacities (names as
/// [`crate::traces::load`] takes them).
pub const TRACE_POINTS: &[(&str, &[usize])] = &[
    ("OLTP", &[256, 512, 1000, 2000]),
    ("lirs/loop", &[256, 512, 1024]),
    ("lirs/multi1", &[256, 512, 1024]),
    ("lirs/multi2", &[256, 512, 1024]),
    ("lirs/multi3", &[256, 512, 1024]),
    ("lirs/sprite", &[256, 512, 1024]),
    ("lirs/2_pools", &[256, 512, 1024]),
    ("lirs/gli", &[256, 512, 1024]),
];

/// A seeded Zipf key stream (see [`crate::zipf`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZipfWorkload {
    /// The exponent.
    pub exponent: f64,
    /// The number of keys, `0..keys`.
    pub keys: u64,
    /// The length of the stream.
    pub requests: usize,
    /// The seed (any fixed value does; changing it changes the figures).
    pub seed: u64,
    /// The capacities it is measured at.
    pub capacities: &'static [usize],
}

impl ZipfWorkload {
    /// The workload's label, as the tables print it: `zipf-0.9`.
    pub fn name(&self) -> String {
        format!("zipf-{}", self.exponent)
    }

    /// The key stream (deterministic, see [`crate::zipf`]).
    pub fn generate(&self) -> Vec<u64> {
        crate::zipf::zipf_keys(self.keys, self.exponent, self.seed, self.requests)
            .expect("the workload's parameters are valid")
    }
}

/// The goals' Zipf workload: Zipf(0.9) over a million keys, ten million requests (ten times the
/// key count, so the larger cache fills and the cold-start misses weigh little).
pub const ZIPF: ZipfWorkload = ZipfWorkload {
    exponent: 0.9,
    keys: 1_000_000,
    requests: 10_000_000,
    seed: 0x1a2d_e200,
    capacities: &[10_000, 100_000],
};

/// One of the goals' points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoalPoint {
    /// A trace name from [`TRACE_POINTS`], or [`ZIPF`]'s name.
    pub workload: String,
    /// The cache's capacity, in entries.
    pub capacity: usize,
}

/// Every point, the traces' in [`TRACE_POINTS`]' order, then the Zipf stream's.
pub fn points() -> Vec<GoalPoint> {
    let traces = TRACE_POINTS.iter().flat_map(|&(trace, capacities)| {
        capacities.iter().map(move |&capacity| GoalPoint {
            workload: trace.to_owned(),
            capacity,
        })
    });
    let zipf = ZIPF.capacities.iter().map(|&capacity| GoalPoint {
        workload: ZIPF.name(),
        capacity,
    });
    traces.chain(zipf).collect()
}
