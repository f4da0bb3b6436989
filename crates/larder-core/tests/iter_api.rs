//! `Iter`'s type-level API, which a change to its fields can break without any test failing
//! at run time: its auto traits, and how long it borrows its cache.

use larder_core::{Cache, Iter};

fn send<T: Send>() {}
fn sync<T: Sync>() {}
fn unpin<T: Unpin>() {}

#[test]
fn an_iter_is_send_sync_and_unpin() {
    type I = Iter<'static, u64, String, ahash::RandomState>;
    send::<I>();
    sync::<I>();
    unpin::<I>();
}

/// The borrow of the cache ends with the iterator's last use, not at the end of its scope:
/// `Iter` has no `Drop` of its own. (It had one, for the panics it holds, and this stopped
/// compiling: "borrow might be used here, when `it` is dropped and runs the `Drop` code".)
#[test]
fn an_iters_borrow_ends_at_its_last_use() {
    let cache: Cache<u64, u64> = Cache::new(10);
    cache.insert(1, 1);
    let mut it = cache.iter();
    let first = it.next();
    drop(cache);
    assert_eq!(first, Some((1, 1)));
}
