// A name the function's own `#[allow(..)]` accepts is accepted in the names written beside it
// (`<name>_cache`, `<name>_cache_clear`): the user cannot put an attribute on those.
#![deny(warnings)]

#[larder::memoize]
#[allow(non_snake_case)]
fn userId(n: u32) -> u32 {
    n + 1
}

#[larder::memoize(key = n.to_string())]
#[allow(non_snake_case)]
fn userName(n: u32) -> String {
    format!("user {n}")
}

fn main() {
    assert_eq!(userId(1), 2);
    assert_eq!(userId_cache().get(&1), Some(2));
    userId_cache_clear();
    assert_eq!(userId_cache().len(), 0);

    assert_eq!(userName(7), "user 7");
    assert_eq!(userName_cache().len(), 1);
    userName_cache_clear();
    assert_eq!(userName_cache().len(), 0);
}
