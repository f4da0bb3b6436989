//! Python's classic shelve-backed cache, in Larder: `cargo run --release --example durable`.
//!
//! ```python
//! class DurableCache:
//!     def __init__(self, path):
//!         self.db = shelve.open(path, writeback=True)
//!     def put(self, key, value):
//!         self.db[key] = value
//!     def get(self, key):
//!         return self.db.get(key)
//!     def sync(self):
//!         self.db.sync()
//!     def close(self):
//!         self.db.close()
//! ```
//!
//! Larder's `DurableCache` is that class, bounded and concurrent: entries live in memory
//! (reads are lock-free and never touch the disk), reach the log on every write, and reach
//! stable storage on `sync()`, `close()` or a durability policy. The run writes a few entries,
//! removes one, closes, reopens the same directory, and shows what came back.

use larder::{Cache, Durability, DurableCache, IntoDurable};

fn open(dir: &std::path::Path) -> DurableCache<String, Vec<String>> {
    Cache::builder()
        .max_capacity(1000)
        .durable(dir)
        // Like shelve with writeback=True: sync() and close() make writes durable (so do the
        // last handle's drop and a compaction, which the janitor runs when the log is due).
        .durability(Durability::Manual)
        .build()
        .expect("the directory opens")
}

fn main() {
    let dir = std::env::temp_dir().join(format!("larder-example-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("cache = DurableCache({})", dir.display());
    let cache = open(&dir);
    cache
        .insert("fruit".into(), vec!["apple".into(), "pear".into()])
        .unwrap();
    cache.insert("veg".into(), vec!["leek".into()]).unwrap();
    cache.insert("stale".into(), vec!["gone".into()]).unwrap();
    cache.remove(&"stale".to_string()).unwrap();
    println!("cache.put(\"fruit\", [\"apple\", \"pear\"]); cache.put(\"veg\", [\"leek\"])");
    println!("cache.put(\"stale\", [\"gone\"]); del cache[\"stale\"]");
    println!("cache.get(\"fruit\") -> {:?}", cache.get("fruit"));
    cache.sync().unwrap();
    println!("cache.sync()");
    cache
        .insert("veg".into(), vec!["leek".into(), "kale".into()])
        .unwrap();
    println!("cache.put(\"veg\", [\"leek\", \"kale\"])");
    cache.close().unwrap();
    println!("cache.close()\n");

    println!("... the process restarts ...\n");
    let cache = open(&dir);
    println!("cache = DurableCache({})", dir.display());
    let mut entries: Vec<_> = cache.iter().collect();
    entries.sort();
    println!("recovered {} entries:", cache.len());
    for (k, v) in &entries {
        println!("  {k:?} -> {v:?}");
    }
    assert_eq!(
        entries,
        vec![
            (
                "fruit".to_string(),
                vec!["apple".to_string(), "pear".to_string()]
            ),
            (
                "veg".to_string(),
                vec!["leek".to_string(), "kale".to_string()]
            ),
        ]
    );
    println!(
        "cache.get(\"stale\") -> {:?} (removed before the restart)",
        cache.get("stale")
    );
    drop(cache);
    std::fs::remove_dir_all(&dir).unwrap();
}
