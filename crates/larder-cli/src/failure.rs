//! How a subcommand fails: one line on stderr and an exit code, never a panic or a backtrace.

use std::fmt;
use std::process::ExitCode;

/// A failure to report: what went wrong, in one line, and the exit code.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A failure that exits with 1.
    pub fn new(message: impl fmt::Display) -> Self {
        Failure {
            message: message.to_string(),
            code: 1,
        }
    }

    /// A failure of the command line itself (a bad capacity list, an unknown name): exit 2, as
    /// clap's own usage errors do.
    pub fn usage(message: impl fmt::Display) -> Self {
        Failure {
            message: message.to_string(),
            code: 2,
        }
    }

    /// Prints `larder: <message>` on stderr, on one line, and returns the exit code.
    pub fn report(&self) -> ExitCode {
        let one_line = self.message.replace('\n', " ");
        eprintln!("larder: {one_line}");
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
