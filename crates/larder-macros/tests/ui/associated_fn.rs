// `#[memoize]` on an associated function: refused by the compiler, not by the attribute,
// which cannot see that it is inside an `impl` block (the attribute's doc, "What it does not take").
struct Tables;

impl Tables {
    #[larder::memoize]
    fn square(n: u64) -> u64 {
        n * n
    }
}

fn main() {
    let _ = Tables::square(3);
}
