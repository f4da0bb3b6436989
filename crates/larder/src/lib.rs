//! Larder: an in-process cache engine with lock-free reads.
//!
//! This crate is the facade: it re-exports the engine ([`larder_core`]) with its expiry and the
//! background janitor ([`Janitor`], from `larder-janitor`), and, as they land, the durable log
//! and memoization. Depend on `larder`; the
//! `larder-*` crates are its parts.
//!
//! The README's quickstart, run as a doctest:
#![doc = include_str!("../../../README.md")]
#![deny(unsafe_code)]

pub use larder_core::{
    BuildError, Cache, CacheBuilder, CacheStats, Clock, ExpiryDisabled, Iter, Janitor, MockClock,
    Policy, RemovalCause,
};
