// `impl Trait` anywhere inside an argument's or the return type, not only as all of it, is
// refused by the attribute, as it is there (`unsupported_signatures.rs`): the expansion names
// these types where `impl Trait` is not allowed. So is a key's type written as one.
use std::fmt::Display;

#[larder::memoize]
fn shout(word: &impl AsRef<str>) -> String {
    word.as_ref().to_uppercase()
}

#[larder::memoize]
fn total(items: Vec<impl Into<u64> + Clone + std::hash::Hash + Eq + Send + Sync + 'static>) -> u64 {
    items.into_iter().map(Into::into).sum()
}

#[larder::memoize]
fn label(n: u32) -> Result<impl Display + Clone + Send + Sync + 'static, String> {
    Ok(n)
}

#[larder::memoize]
fn labels(n: u32) -> Vec<(u32, impl Display + Clone + Send + Sync + 'static)> {
    vec![(n, n)]
}

#[larder::memoize(key: impl std::hash::Hash = n)]
fn typed_key(n: u32) -> u32 {
    n
}

fn main() {}
