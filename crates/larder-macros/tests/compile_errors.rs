//! Wrong uses of `#[memoize]` fail to compile with a message that says what to write instead.
//! Each `ui/*.rs` is compiled and its errors compared with the `.stderr` beside it
//! (`TRYBUILD=overwrite cargo test -p larder-macros --test compile_errors` rewrites them).

#[test]
fn wrong_uses_are_compile_errors_that_say_what_to_write() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

/// Right uses compile, without warnings (each `pass/*.rs` denies them), and run.
#[test]
fn right_uses_compile_without_warnings_and_run() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
}
