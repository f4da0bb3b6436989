//! The read-side cost of each memory-reclamation scheme the engine could use, measured the way a
//! cache read would use it: enter a guard, load a published node pointer, read the node, leave.
//!
//! Group `guarded_read`, ids `SCHEME/THREADS`:
//! - `crossbeam_epoch`: `crossbeam_epoch::pin()` per read, `Atomic::load` under it.
//! - `seize`: `Collector::enter()` (a `LocalGuard`) per read, `Guard::protect` under it.
//! - `rwlock_arc`: baseline; take the read lock of a `RwLock<Arc<Node>>`, clone the `Arc`, drop the
//!   lock, read through the clone. Every read writes two shared counters.
//! - `unprotected`: floor; a plain `Acquire` load and read, no reclamation at all (sound here only
//!   because nobody ever replaces the node while the bench runs).
//!
//! Only readers run: this is the price a hit pays when nobody is writing. Each worker does
//! `READS_PER_THREAD` reads per iteration, all of the same node, and the threads start together
//! at a barrier.
//!
//! Run: `cargo bench -p larder-benches --bench reclamation`.

use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use larder_benches::run_threads;
use seize::Guard as _;

const THREADS: [usize; 2] = [1, 2];
const READS_PER_THREAD: usize = 1 << 16;

/// What a cache would publish: a small entry behind an atomic pointer.
#[derive(Debug)]
struct Node {
    key: u64,
    value: u64,
}

const NODE: Node = Node {
    key: 0x0123_4567_89AB_CDEF,
    value: 0xFEDC_BA98_7654_3210,
};

/// One way to read the published node safely (or, for the floor, not).
trait Scheme: Sync {
    const NAME: &'static str;
    /// Guards, loads, reads both fields, unguards; returns the fields combined.
    fn read(&self) -> u64;
}

struct CrossbeamEpoch {
    node: crossbeam_epoch::Atomic<Node>,
}

impl Scheme for CrossbeamEpoch {
    const NAME: &'static str = "crossbeam_epoch";
    fn read(&self) -> u64 {
        let guard = crossbeam_epoch::pin();
        // Acquire pairs with the Release store that published the node (`Atomic::new` here, a
        // writer's store in a real cache), so its fields are visible.
        let shared = black_box(&self.node).load(Ordering::Acquire, &guard);
        // SAFETY: the pointer is non-null (set in `new`, never changed), and the node is only
        // freed in `drop`, which needs `&mut self`, so it outlives the guard and this borrow.
        let node = unsafe { shared.deref() };
        node.key ^ node.value
    }
}

impl CrossbeamEpoch {
    fn new() -> Self {
        Self {
            node: crossbeam_epoch::Atomic::new(NODE),
        }
    }
}

impl Drop for CrossbeamEpoch {
    fn drop(&mut self) {
        let node = std::mem::take(&mut self.node);
        // SAFETY: `&mut self` means no guard of ours can still hold the pointer, and it was
        // allocated by `Atomic::new` and never freed before.
        drop(unsafe { node.into_owned() });
    }
}

struct Seize {
    collector: seize::Collector,
    node: AtomicPtr<Node>,
}

impl Seize {
    fn new() -> Self {
        Self {
            collector: seize::Collector::new(),
            node: AtomicPtr::new(Box::into_raw(Box::new(NODE))),
        }
    }
}

impl Scheme for Seize {
    const NAME: &'static str = "seize";
    fn read(&self) -> u64 {
        let guard = self.collector.enter();
        // Acquire pairs with the publication of the node (construction here, happening before
        // the threads are spawned; a writer's Release store in a real cache).
        let ptr = guard.protect(black_box(&self.node), Ordering::Acquire);
        // SAFETY: the pointer is a live `Box` set in `new`, never replaced, and only freed in
        // `drop`, which needs `&mut self`.
        let node = unsafe { &*ptr };
        node.key ^ node.value
    }
}

impl Drop for Seize {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no guard still reads the node, and the pointer came from
        // `Box::into_raw` in `new` and was never freed.
        drop(unsafe { Box::from_raw(*self.node.get_mut()) });
    }
}

struct RwLockArc {
    node: RwLock<Arc<Node>>,
}

impl Scheme for RwLockArc {
    const NAME: &'static str = "rwlock_arc";
    fn read(&self) -> u64 {
        let node = Arc::clone(&black_box(&self.node).read().expect("lock poisoned"));
        node.key ^ node.value
    }
}

struct Unprotected {
    node: AtomicPtr<Node>,
}

impl Scheme for Unprotected {
    const NAME: &'static str = "unprotected";
    fn read(&self) -> u64 {
        // Acquire pairs with the node's publication (construction, before the threads spawn).
        let ptr = black_box(&self.node).load(Ordering::Acquire);
        // SAFETY: the node is never replaced or freed while `self` is shared; `drop` frees it.
        let node = unsafe { &*ptr };
        node.key ^ node.value
    }
}

impl Drop for Unprotected {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw` and `&mut self` excludes readers.
        drop(unsafe { Box::from_raw(*self.node.get_mut()) });
    }
}

fn bench_scheme<S: Scheme>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    scheme: S,
) {
    assert_eq!(
        scheme.read(),
        NODE.key ^ NODE.value,
        "{} reads the node",
        S::NAME
    );
    for threads in THREADS {
        group.throughput(Throughput::Elements((threads * READS_PER_THREAD) as u64));
        group.bench_with_input(
            BenchmarkId::new(S::NAME, threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    run_threads(threads, |_| {
                        for _ in 0..iters {
                            for _ in 0..READS_PER_THREAD {
                                black_box(scheme.read());
                            }
                        }
                    })
                });
            },
        );
    }
}

fn guarded_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("guarded_read");
    bench_scheme(&mut group, CrossbeamEpoch::new());
    bench_scheme(&mut group, Seize::new());
    bench_scheme(
        &mut group,
        RwLockArc {
            node: RwLock::new(Arc::new(NODE)),
        },
    );
    bench_scheme(
        &mut group,
        Unprotected {
            node: AtomicPtr::new(Box::into_raw(Box::new(NODE))),
        },
    );
    group.finish();
}

criterion_group! {
    name = reclamation;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = guarded_read
}
criterion_main!(reclamation);
