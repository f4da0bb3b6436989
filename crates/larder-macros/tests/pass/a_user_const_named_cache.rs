// The expansion's own items do not hide the user's: a constant called `CACHE`, in the key's
// type and the result's, is still the user's constant.
#![deny(warnings)]

const CACHE: usize = 4;

#[larder::memoize]
fn widen(bytes: [u8; CACHE]) -> [u32; CACHE] {
    bytes.map(u32::from)
}

fn main() {
    assert_eq!(widen([1, 2, 3, 4]), [1, 2, 3, 4]);
    assert_eq!(widen_cache().get(&[1, 2, 3, 4]), Some([1, 2, 3, 4]));
}
