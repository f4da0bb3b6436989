// A `&T` argument enters the key as `T::to_owned()`, so `T` must be `Clone`: the attribute's
// message says so, as it does for an argument taken by value (`unhashable_argument.rs`).
#[derive(Hash, PartialEq, Eq)]
struct Id(u64);

#[larder::memoize]
fn by_id(id: &Id) -> u64 {
    id.0
}

// The same when the key is an expression of the arguments, whose type only the compiler knows.
#[larder::memoize(key = (id, 1))]
fn by_id_and_one(id: &Id) -> u64 {
    id.0 + 1
}

fn main() {}
