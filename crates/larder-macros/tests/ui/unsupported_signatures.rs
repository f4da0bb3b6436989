#[larder::memoize]
async fn fetch(n: u32) -> u32 {
    n
}

#[larder::memoize]
fn push(list: &mut Vec<u32>, n: u32) -> usize {
    list.push(n);
    list.len()
}

#[larder::memoize]
fn manhattan((x, y): (i64, i64)) -> i64 {
    x.abs() + y.abs()
}

#[larder::memoize]
fn length(items: impl IntoIterator<Item = u8>) -> usize {
    items.into_iter().count()
}

#[larder::memoize]
fn evens() -> impl Iterator<Item = u32> {
    (0..10).filter(|n| n % 2 == 0)
}

fn main() {}
