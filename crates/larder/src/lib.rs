//! Larder: an in-process cache engine with lock-free reads.
//!
//! This crate is the facade: it re-exports the engine ([`larder_core`]) and, as they land, the
//! background janitor for expiry, the durable log and memoization. Depend on `larder`; the
//! `larder-*` crates are its parts.
//!
//! The README's quickstart, run as a doctest:
#![doc = include_str!("../../../README.md")]
#![deny(unsafe_code)]

pub use larder_core::{
    BuildError, Cache, CacheBuilder, CacheStats, Clock, ExpiryDisabled, Iter, Janitor, MockClock,
    Policy, RemovalCause,
};
