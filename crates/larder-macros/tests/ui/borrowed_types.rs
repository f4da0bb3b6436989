use std::borrow::Cow;

#[larder::memoize]
fn first_word<'a>(text: &'a str) -> &'a str {
    text.split(' ').next().unwrap_or("")
}

#[larder::memoize]
fn trimmed(text: &str) -> Option<&str> {
    Some(text.trim())
}

#[larder::memoize]
fn shout<'a>(word: Cow<'a, str>, times: usize) -> String {
    word.to_uppercase().repeat(times)
}

#[larder::memoize(key: &'a str = text)]
fn length<'a>(text: &'a str) -> usize {
    text.len()
}

// Fine: a `&'static` result, and an error (not cached) that borrows.
#[larder::memoize]
fn name(n: u8) -> &'static str {
    if n == 0 { "zero" } else { "many" }
}

#[larder::memoize]
fn non_empty<'a>(text: &'a str) -> Result<usize, &'a str> {
    if text.is_empty() { Err(text) } else { Ok(text.len()) }
}

fn main() {
    let _ = (first_word("a b"), trimmed(" a "), shout(Cow::Borrowed("a"), 2));
    let _ = (name(1), non_empty("x"), length("x"));
}
