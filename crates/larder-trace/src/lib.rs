//! Hit-ratio tooling for Larder: trace readers, seeded Zipf key streams, a
//! cache-aside replay loop, and the exact LRU and Bélády OPT references that
//! bracket what a policy should score.
//!
//! | module | concern |
//! |---|---|
//! | [`read`] | ARC, LIRS and plain-text traces and cache2k binary ones, raw or zstd, gzip or xz; detected from content and file name |
//! | [`traces`] | where the shared trace files live, loading them by name, and the hit ratios their README publishes |
//! | [`zipf`] | Zipf(s) key streams over `n` keys, deterministic per seed |
//! | [`goals`] | the 27 points (traces and a Zipf stream) the engine's hit-ratio goals average over |
//! | [`replay`] | the cache-aside loop and the [`ReplayCache`](replay::ReplayCache) trait |
//! | [`reference`](mod@reference) | exact LRU and Bélády's OPT |
//!
//! ```
//! use larder_trace::reference::{lru_hit_ratio, opt_hit_ratio};
//! use larder_trace::zipf::zipf_keys;
//!
//! let keys = zipf_keys(10_000, 1.0, 42, 100_000).unwrap();
//! let (lru, opt) = (lru_hit_ratio(&keys, 500), opt_hit_ratio(&keys, 500));
//! assert!(0.0 < lru && lru < opt && opt < 100.0);
//! ```
//!
//! Loading a shared trace (the files live outside the repository; see
//! [`traces`]):
//!
//! ```no_run
//! use larder_trace::{reference::lru_hit_ratio, traces};
//!
//! let oltp = traces::load("OLTP")?;
//! println!("LRU at 1000: {:.2}%", lru_hit_ratio(&oltp, 1000));
//! # Ok::<(), larder_trace::read::TraceError>(())
//! ```
//!
//! The OLTP trace comes from the ARC paper; cite it with any figure measured
//! on it: N. Megiddo and D. S. Modha, "ARC: A Self-Tuning, Low Overhead
//! Replacement Cache", USENIX FAST 2003.
//!
//! # Consistency
//!
//! Everything here is single-threaded and deterministic: a trace file always
//! reads as the same keys, a Zipf stream is fixed by its seed (for a given
//! `rand` 0.8 release), and the references compute exact figures, so two runs
//! of a hit-ratio measurement differ only if the cache under test does.
//! Concurrent caches that apply their policy in the background (moka, for
//! one) can still vary from run to run; that variation is theirs, not the
//! replay's.

pub mod goals;
mod hash;
pub mod read;
pub mod reference;
pub mod replay;
pub mod traces;
pub mod zipf;
