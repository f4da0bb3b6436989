//! `functools.lru_cache` parity: `cargo run --example lru`.
//!
//! Python:
//!
//! ```text
//! @lru_cache(maxsize=256)
//! def fib(n):
//!     return n if n < 2 else fib(n - 1) + fib(n - 2)
//!
//! fib(31); fib.cache_info()
//! CacheInfo(hits=29, misses=32, maxsize=256, currsize=32)
//! ```
//!
//! The same function under `#[larder::memoize(capacity = 256)]` prints the same numbers: its
//! `fib_cache().stats()` is `cache_info()`, and `fib_cache_clear()` is `cache_clear()`.

#[larder::memoize(capacity = 256)]
fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

fn cache_info() -> String {
    let s = fib_cache().stats();
    format!(
        "CacheInfo(hits={}, misses={}, maxsize={}, currsize={})",
        s.hits, s.misses, s.capacity, s.len
    )
}

fn main() {
    println!("fib(31) = {}", fib(31));
    println!("{}", cache_info());
    println!("fib(31) again = {} (one more hit)", fib(31));
    println!("{}", cache_info());
    // Python's cache_clear() empties the cache and zeroes the counters, as fib_cache_clear() does.
    fib_cache_clear();
    println!("after cache_clear(): {}", cache_info());
}
