#[larder::memoize(size = 10)]
fn unknown_option(n: u32) -> u32 {
    n
}

#[larder::memoize(capacity = 0)]
fn zero_capacity(n: u32) -> u32 {
    n
}

#[larder::memoize(ttl = "2 parsecs")]
fn bad_ttl(n: u32) -> u32 {
    n
}

#[larder::memoize(ttl = "500us")]
fn ttl_under_a_millisecond(n: u32) -> u32 {
    n
}

#[larder::memoize(ttl = 2)]
fn ttl_not_a_string(n: u32) -> u32 {
    n
}

#[larder::memoize(policy = fifo)]
fn unknown_policy(n: u32) -> u32 {
    n
}

#[larder::memoize(cache_none = false)]
fn cache_none_without_option(n: u32) -> u32 {
    n
}

#[larder::memoize(capacity = 10, capacity = 20)]
fn given_twice(n: u32) -> u32 {
    n
}

#[larder::memoize(policy = "lru")]
fn quoted_policy(n: u32) -> u32 {
    n
}

#[larder::memoize(capacity)]
fn capacity_without_a_value(n: u32) -> u32 {
    n
}

#[larder::memoize(ttl, capacity = 10)]
fn ttl_without_a_value(n: u32) -> u32 {
    n
}

#[larder::memoize(key)]
fn key_without_a_value(n: u32) -> u32 {
    n
}

#[larder::memoize(capacity = 10 ttl = "1s")]
fn options_without_a_comma(n: u32) -> u32 {
    n
}

fn main() {}
