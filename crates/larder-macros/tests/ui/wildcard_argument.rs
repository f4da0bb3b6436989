// An argument `_` has no name for the key to use: the message says to name it, and how to
// leave it out of the key.
#[larder::memoize]
fn ignores(n: u64, _: u8) -> u64 {
    n
}

#[larder::memoize]
fn ignores_all(_: u8, _: u8) -> u64 {
    7
}

#[larder::memoize(key = n)]
fn ignores_too(n: u64, _: u8) -> u64 {
    n
}

fn main() {}
