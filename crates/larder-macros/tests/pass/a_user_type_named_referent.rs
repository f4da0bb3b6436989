// The expansion's own items do not hide the user's: a `&T` key argument whose `T` is called
// `Referent` is still checked as the user's `Referent`.
#![deny(warnings)]

#[derive(Clone, Hash, PartialEq, Eq, Debug)]
struct Referent(u32);

#[larder::memoize]
fn weight(r: &Referent) -> u32 {
    r.0 * 2
}

fn main() {
    assert_eq!(weight(&Referent(3)), 6);
    assert_eq!(weight_cache().get(&Referent(3)), Some(6));
}
