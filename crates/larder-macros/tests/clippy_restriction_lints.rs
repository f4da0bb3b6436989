//! A memoized function written to a restriction lint's rule passes it: `cargo clippy
//! --all-targets` checks this file (CI's clippy step), and the lints denied here fire on what
//! the attribute writes only if that breaks the rule where the user cannot follow it.
//!
//! `clippy::implicit_return`: the generated body ended in an expression; since the body keeps
//! the user's brace span, clippy reported that tail at the attribute, suggesting
//! `return #[larder::memoize]`, which `cargo clippy --fix` would have written.
#![deny(clippy::implicit_return)]

#[larder::memoize]
fn plus_one(n: u32) -> u32 {
    return n + 1;
}

#[larder::memoize(key = n.to_string())]
fn plus_two(n: u32) -> u32 {
    return n + 2;
}

#[test]
fn a_memoized_function_with_explicit_returns_passes_implicit_return() {
    assert_eq!((plus_one(1), plus_two(1)), (2, 3));
    assert_eq!((plus_one_cache().len(), plus_two_cache().len()), (1, 1));
}
