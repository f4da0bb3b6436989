#[larder::memoize]
fn largest<T: Ord + Clone>(items: Vec<T>) -> Option<T> {
    items.into_iter().max()
}

fn main() {}
