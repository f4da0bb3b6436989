//! Random operation sequences with reboots against Larder's durable cache, checked by
//! `larder-model`: against a `BTreeMap` on a cache too big to evict, against invariants on a
//! small one, with every reboot giving back exactly what the cache held, and dealt out to two
//! threads at once on the small one, which must then reopen to exactly what it held.

#![no_main]

use larder_model::DurableInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: DurableInput| {
    if let Err(error) = input.check() {
        panic!("{error}\n\ninput: {input:?}");
    }
});
