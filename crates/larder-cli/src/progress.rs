//! A progress bar on stderr that appears only once the work has run for a second, and only on
//! a terminal: short runs and piped output stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// How long work runs before its bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A bar over `total` steps, hidden for its first second.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
}

impl Progress {
    /// A bar for `total` steps of `what` (shown beside the bar).
    pub fn new(total: u64, what: impl Into<String>) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed}, {eta} left)")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.into());
        Progress {
            bar,
            started: Instant::now(),
            shown: false,
        }
    }

    /// Counts `steps` more done, and shows the bar once a second has passed.
    pub fn advance(&mut self, steps: u64) {
        if !self.shown && self.started.elapsed() >= SHOW_AFTER {
            // Hidden again by indicatif itself when stderr is not a terminal.
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        self.bar.inc(steps);
    }

    /// Changes the text beside the bar.
    pub fn set_message(&self, what: impl Into<String>) {
        self.bar.set_message(what.into());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
