// A key type written as a reference holds the argument itself, so only a `&'static` argument
// can be one. The compiler's own error here was the argument's owned copy (`String`) where the
// reference was expected, with a hint to borrow the argument's type (`name: &&str`), which
// does not compile either.
#[larder::memoize(key: &'static str = name)]
fn greet(name: &str) -> String {
    format!("hello, {name}")
}

#[larder::memoize(key: &'static [u8] = bytes)]
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().map(|&b| u32::from(b)).sum()
}

#[larder::memoize(key: (&'static str, u32) = (name, n))]
fn greet_times(name: &str, n: u32) -> String {
    format!("hello, {name}").repeat(n as usize)
}

#[larder::memoize(key: &'static u32 = n)]
fn double(n: u32) -> u32 {
    n * 2
}

// Fine: the arguments are `&'static`, and the key holds them as they are.
#[larder::memoize(key: &'static str = name)]
fn greet_static(name: &'static str) -> String {
    format!("hello, {name}")
}

#[larder::memoize(key: (&'static str, u32) = (name, n))]
fn greet_static_times(name: &'static str, n: u32) -> String {
    format!("hello, {name}").repeat(n as usize)
}

fn main() {
    let _ = (greet("a"), checksum(b"a"), greet_times("a", 2), double(1));
    let _ = (greet_static("a"), greet_static_times("a", 2));
}
