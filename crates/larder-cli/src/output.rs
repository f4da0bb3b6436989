//! Results on stdout, written so that a failed write is no panic.
//!
//! `print!` and `println!` panic when stdout refuses a write: a pipe whose reader has gone
//! (`larder sim ... | head -1`: Rust ignores `SIGPIPE`, so the write fails with `EPIPE`), or a
//! full disk. Every result goes through [`out!`] and [`outln!`] instead, which write through
//! [`write`]; after a failed write, nothing more is written:
//!
//! - a closed pipe: nobody reads the rest. The run goes on and ends as it would have, with the
//!   same exit code (`verify`'s verdict; a `repair` that has begun finishes);
//! - any other error: [`failure`] makes it the run's failure once the subcommand has ended,
//!   one line and exit 1, unless the subcommand failed of its own accord.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};

use crate::failure::Failure;

/// `print!`, through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// `println!`, through [`write`].
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// The first write to stdout that failed, if one did.
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes `args` to stdout and flushes it, unless a write has failed before; a failure is kept
/// for [`failure`].
pub fn write(args: fmt::Arguments<'_>) {
    let mut failed = FAILED.lock().unwrap_or_else(PoisonError::into_inner);
    if failed.is_some() {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        *failed = Some(e);
    }
}

/// The failure a failed write makes of the run: none for a closed pipe (see the module docs).
pub fn failure() -> Option<Failure> {
    let failed = FAILED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()?;
    (failed.kind() != io::ErrorKind::BrokenPipe)
        .then(|| Failure::new(format!("cannot write the results: {failed}")))
}
