// A memoized function is linted as the function it is: one that nothing calls is dead code,
// and a `pub` one that nothing outside its private module can reach is an unreachable `pub`.
// The items written beside it are not reported: the user cannot change them.
#![deny(dead_code, unreachable_pub)]

#[larder::memoize]
fn never_called(n: u32) -> u32 {
    n + 1
}

#[larder::memoize(key = n.to_string())]
fn never_called_either(n: u32) -> u32 {
    n + 2
}

mod private {
    #[larder::memoize]
    pub fn reachable_only_here(n: u32) -> u32 {
        n + 3
    }
}

fn main() {
    assert_eq!(private::reachable_only_here(1), 4);
}
