//! The one test on the real clock with the real janitor thread: an entry that nobody touches
//! after writing it is removed within a tick of its deadline, and its listener hears `Expired`
//! on the janitor's thread. Finishes in about 1.3 s (a 300 ms lifetime and at most one 1 s tick).

use larder::{Cache, RemovalCause};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn the_shared_janitor_removes_an_untouched_entry_within_a_tick_of_its_deadline() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let cache: Cache<String, String> = Cache::builder()
        .max_capacity(256)
        .time_to_live(Duration::from_millis(300))
        .eviction_listener(move |k, v, cause| {
            let thread = std::thread::current().name().map(str::to_string);
            let _ = tx
                .lock()
                .unwrap()
                .send((k, v, cause, thread, Instant::now()));
        })
        .build()
        .unwrap();
    let written = Instant::now();
    cache.insert("foo".into(), "bar".into());
    assert_eq!(cache.get("foo").as_deref(), Some("bar"));
    let (key, value, cause, thread, heard) = rx
        .recv_timeout(Duration::from_millis(2700))
        .expect("the janitor removes the entry within a tick of its deadline");
    assert_eq!(
        (key.as_str(), value.as_str(), cause),
        ("foo", "bar", RemovalCause::Expired)
    );
    assert_eq!(thread.as_deref(), Some("larder-janitor"));
    let after = heard - written;
    assert!(
        after >= Duration::from_millis(290) && after < Duration::from_millis(300 + 1000 + 400),
        "heard {after:?} after the write: the deadline was 300 ms, the tick is 1 s"
    );
    assert_eq!(cache.len(), 0, "removed, not only hidden");
    assert_eq!(cache.stats().expirations, 1);
}
