// The expansion's own bindings do not meet the user's items: a constant called `key` in scope
// (a lowercase name is allowed) leaves the binding of the call's key an irrefutable pattern.
#![deny(warnings)]

#[allow(non_upper_case_globals)]
const key: u32 = 7;

#[larder::memoize]
fn shifted(n: u32) -> u32 {
    n * 2 + key
}

#[larder::memoize(key = n % 10)]
fn last_digit_shifted(n: u32) -> u32 {
    n % 10 + key
}

fn main() {
    assert_eq!(shifted(3), 13);
    assert_eq!(shifted_cache().get(&3), Some(13));
    assert_eq!(last_digit_shifted(23), 10);
    assert_eq!(last_digit_shifted(33), 10);
    assert_eq!(last_digit_shifted_cache().len(), 1);
}
