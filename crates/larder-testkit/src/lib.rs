//! Test support for Larder's own tests, shared by the crates' test binaries (a dev-dependency
//! only; it depends on no Larder crate, so any of them can use it).
//!
//! Some refusals can only be shown for real by running out of something the whole process
//! shares: a thread stack, memory for an index. A test that lowers its own address-space limit
//! would make every other test's allocations in the process fail too, so it runs in a process
//! of its own: the test binary runs one of its ignored tests again as a child ([`child`]),
//! which limits its address space around the call it checks ([`address_space`]) and prints
//! what happened for the parent to read. Reports Larder can only log are counted by
//! [`errors`], and every test's scratch directory is a [`TempDir`]. What the kernel does when
//! writeback really fails is tested on a `failing_disk` (feature `failing-disk`, needs root).

pub mod address_space;
pub mod child;
pub mod errors;
#[cfg(feature = "failing-disk")]
pub mod failing_disk;
mod temp_dir;

pub use temp_dir::{copy_dir, TempDir};
