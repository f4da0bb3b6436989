pub use larder_core::*;
