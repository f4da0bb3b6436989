//! Larder: an in-process cache engine with lock-free reads.
//!
//! This crate is the facade: it re-exports the engine ([`larder_core`]) with its expiry and the
//! background janitor ([`Janitor`], from `larder-janitor`), the durable cache ([`durable`], over
//! `larder-log`), and memoization ([`memoize`], from `larder-macros`, with [`memo`] for its
//! support and the idioms it leaves to the standard library). Depend on `larder`; the
//! `larder-*` crates are its parts.
//!
//! The README's quickstart, run as a doctest:
#![doc = include_str!("../../../README.md")]
#![deny(unsafe_code)]

pub mod durable;
pub mod memo;

pub use durable::{Durability, DurableCache, IntoDurable};
pub use larder_core::{
    BuildError, Cache, CacheBuilder, CacheStats, Clock, ExpiryDisabled, FittedShares, Iter,
    Janitor, MockClock, Policy, RemovalCause, MAX_SHARDS, MIN_AUTO_SHARD_CAPACITY, PRECISE_BELOW,
};
pub use larder_macros::memoize;
