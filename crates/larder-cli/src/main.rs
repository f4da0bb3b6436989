//! `larder`: replay cache traces against Larder's policies and its peers (`sim`), benchmark
//! throughput side by side (`bench`), and look after a durable cache's log (`log`).
//!
//! Every subcommand reports a failure as one line on stderr, `larder: <what went wrong>`, and
//! exits non-zero (see [`failure`]); nothing it is given makes it panic, a stdout that refuses
//! its results included (see [`output`]).

// First, so that its macros are in scope in every module after it.
#[macro_use]
mod output;

mod bench;
mod failure;
mod log;
mod plot;
mod progress;
mod sim;
mod table;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Larder's command-line tools.
#[derive(Debug, Parser)]
#[command(name = "larder", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay traces against cache policies and peers, and report hit ratios per capacity.
    Sim(sim::Args),
    /// Measure throughput of Larder and its peers side by side, in this process.
    Bench(bench::Args),
    /// Inspect, verify, compact or repair a durable cache's log directory.
    #[command(subcommand)]
    Log(log::Command),
}

fn main() -> ExitCode {
    // Nothing a user gives `larder` should panic it. Should a bug do so anyway, the report
    // keeps the one-line form (and the exit code 101 of a panic) instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "larder: internal error{place}: {}; please report it",
            what.replace('\n', " ")
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let outcome = match cli.command {
        Command::Sim(args) => sim::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Log(command) => log::run(&command),
    };
    match (outcome, output::failure()) {
        (Ok(_), Some(failure)) | (Err(failure), _) => failure.report(),
        (Ok(code), None) => code,
    }
}

/// Prints `--help` and `--version` as clap does; turns a usage error into one line, `larder:
/// <clap's message>`, exit 2, like every other failure.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Printing help can only fail on a closed stdout, which leaves nothing to tell.
            let _ = e.print();
            ExitCode::SUCCESS
        }
        // `larder` alone, or `larder log` without its subcommand: the help, on stderr, as a
        // usage error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            // clap's message is its first paragraph: "error: ..." and any indented lines that
            // name what it refers to (the missing arguments); usage and tips follow.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            failure::Failure::usage(format!("{message} (see larder --help)")).report()
        }
    }
}
