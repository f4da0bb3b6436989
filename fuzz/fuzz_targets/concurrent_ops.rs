//! Two or three threads' operation sequences run at once on one small cache, checked by
//! `larder-model`'s concurrent check: every value read was written to its key by the operation
//! it names, no thread sees a writer's older value after a newer one, the bound holds while
//! writers run, loads hand back their own value or another write's, no thread is stuck, and
//! the quiet cache at the end validates and holds only each writer's last word on a key; then
//! the same on a cache with a time-to-live on a mock clock the threads move, where no call that
//! starts once a value's lifetime is over returns it.
//!
//! The threads' interleaving is not part of the input, so a failure may need several runs of
//! its artifact to repeat.

#![no_main]

use larder_model::ConcurrentInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: ConcurrentInput| {
    if let Err(error) = input.check() {
        panic!("{error}\n\ninput: {input:?}");
    }
});
