struct Counter {
    base: u64,
}

impl Counter {
    #[larder::memoize]
    fn plus(&self, n: u64) -> u64 {
        self.base + n
    }
}

fn main() {}
