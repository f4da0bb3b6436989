//! Python's classic `ExpiringDict` example, in Larder: `cargo run --release --example expiring`.
//!
//! ```python
//! cache = ExpiringDict(max_len=256, max_age_seconds=2)
//! cache["foo"] = "bar"
//! cache.get("foo")   # "bar"
//! time.sleep(2)
//! cache.get("foo")   # None
//! cache.ttl("foo")   # None
//! ```
//!
//! What `ExpiringDict` leaves to its user, Larder does too: a janitor thread removes the expired
//! entry without anyone touching the cache, and the eviction listener hears it leave. A
//! dedicated janitor ticking every 100 ms (instead of the shared one's second) keeps the run
//! short. The run takes a little over two seconds of real time.

use larder::{Cache, Janitor, RemovalCause};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() {
    let (heard, hear) = mpsc::channel::<(String, String, RemovalCause, Duration)>();
    let started = Instant::now();
    let heard = std::sync::Mutex::new(heard);
    let cache: Cache<String, String> = Cache::builder()
        .max_capacity(256)
        .time_to_live(Duration::from_secs(2))
        .janitor(Janitor::dedicated(Duration::from_millis(100)))
        .eviction_listener(move |key: std::sync::Arc<String>, value, cause| {
            let thread = std::thread::current();
            println!(
                "  [listener on thread {:?}] {key:?} -> {value:?} left: {cause:?}",
                thread.name().unwrap_or("?")
            );
            let _ = heard
                .lock()
                .unwrap()
                .send(((*key).clone(), value, cause, started.elapsed()));
        })
        .build()
        .expect("a valid configuration");

    cache.insert("foo".to_string(), "bar".to_string());
    println!("cache[\"foo\"] = \"bar\"");
    println!("cache.get(\"foo\")  -> {:?}", cache.get("foo"));
    println!("cache.ttl(\"foo\")  -> {:?}", cache.ttl("foo"));
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "cache.age(\"foo\")  -> {:?} (half a second later)",
        cache.age("foo")
    );

    println!("... waiting out the max age (nobody touches the cache) ...");
    let (key, value, cause, at) = hear
        .recv_timeout(Duration::from_secs(5))
        .expect("the janitor removes the entry within a tick of its max age");
    assert_eq!(
        (key.as_str(), value.as_str(), cause),
        ("foo", "bar", RemovalCause::Expired)
    );
    println!("the janitor removed it {at:.2?} after the write");
    println!("cache.get(\"foo\")  -> {:?}", cache.get("foo"));
    println!("cache.ttl(\"foo\")  -> {:?}", cache.ttl("foo"));
    let s = cache.stats();
    println!(
        "len {}, expirations {}, hits {}, misses {}",
        s.len, s.expirations, s.hits, s.misses
    );
    assert_eq!((s.len, s.expirations), (0, 1));
}
