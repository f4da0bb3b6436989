//! Random operation sequences against Larder's cache, checked by `larder-model`:
//! against a `HashMap` on caches too big to evict, and against invariants and
//! `validate()` on a small cache built from the input's config.

#![no_main]

use larder_model::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: Input| {
    if let Err(error) = input.check() {
        panic!("{error}\n\ninput: {input:?}");
    }
});
