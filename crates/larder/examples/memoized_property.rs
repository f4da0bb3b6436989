//! A memoized property, as Python's `@memoized_property` gives one:
//! `cargo run --example memoized_property`.
//!
//! `Thing::prime()` is a long computation. It runs once, however often the property is read,
//! and again after `reset()`. The idiom is `std::sync::OnceLock`, one slot in the object with
//! single-flight initialisation; Larder does not reinvent it (see `larder::memo`).

use std::sync::OnceLock;

struct Thing {
    n: usize,
    prime: OnceLock<u64>,
}

impl Thing {
    fn new(n: usize) -> Self {
        Thing {
            n,
            prime: OnceLock::new(),
        }
    }

    /// The `n`-th prime, computed on the first read and kept in the object.
    fn prime(&self) -> u64 {
        *self.prime.get_or_init(|| {
            println!("long running computation!");
            nth_prime(self.n)
        })
    }

    /// Forgets the kept value (Python's `del thing.prime`); `&mut self` proves nobody is
    /// reading it meanwhile.
    fn reset(&mut self) {
        self.prime.take();
    }
}

/// The `n`-th prime (1-based), by trial division: slow on purpose.
fn nth_prime(n: usize) -> u64 {
    (2u64..)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .nth(n - 1)
        .expect("there are infinitely many primes")
}

fn main() {
    let mut thing = Thing::new(100_000);
    println!("reading thing.prime() three times:");
    for _ in 0..3 {
        println!("  thing.prime() = {}", thing.prime());
    }
    println!("thing.reset(), then reading it twice more:");
    thing.reset();
    for _ in 0..2 {
        println!("  thing.prime() = {}", thing.prime());
    }
}
